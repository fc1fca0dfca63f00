import Foundation
import LogKVTestSupport
import Testing

/// The history checker over HTTP: a real `logkvd` (as an unprivileged
/// user when the tests run as root), 16 clients on overlapping keys with
/// PUT, DELETE, If-Match, PATCH (lease renewal) and GET, and a SIGKILL at a
/// random moment. The live history must be linearizable per key, and after
/// the restart every acknowledged write must be there or superseded (a
/// process crash keeps what the kernel accepted, whatever the fsync
/// policy). Operations cut by the kill may or may not have happened.
///
/// `LOGKV_HTTP_HISTORY_ROUNDS=N` runs N rounds per policy (default 1;
/// `scripts/history-check.sh` runs a long series).
@Suite(.serialized) struct LiveHistoryTests {
    static let rounds = Int(ProcessInfo.processInfo.environment["LOGKV_HTTP_HISTORY_ROUNDS"] ?? "") ?? 1
    static let clients = 16
    static let keys = (0..<6).map { "k\($0)" }

    /// The version an ETag names.
    static func version(_ headers: [String: String]) -> UInt64? {
        guard let tag = headers["etag"] else { return nil }
        return UInt64(tag.trimmingCharacters(in: CharacterSet(charactersIn: "\"")))
    }

    /// "w<id>": the write a value names.
    static func writeID(_ body: [UInt8]) -> UInt64? {
        let text = String(decoding: body, as: UTF8.self)
        guard text.hasPrefix("w") else { return nil }
        return UInt64(text.dropFirst())
    }

    /// One client's run: random operations until the connection dies.
    static func runClient(_ n: Int, port: Int, seed: UInt64, recorder: HistoryRecorder, nextWrite: LockedBox<UInt64>,
                          stop: LockedBox<Bool>) {
        var rng = SplitMix(seed: seed)
        guard let client = try? HTTPTestClient(port: port) else { return }
        var seen: [String: UInt64] = [:]
        while !stop.get() {
            let key = Bool.random(using: &rng) ? keys[Int.random(in: 0..<2, using: &rng)]
                : keys[Int.random(in: 0..<keys.count, using: &rng)]
            let k = Array(key.utf8)
            let id = nextWrite.next()
            let body = Array("w\(id)".utf8)
            let roll = Int.random(in: 0..<100, using: &rng)
            let op: Int
            do {
                switch roll {
                case 0..<35:
                    op = recorder.call(key: k, op: .put(writeID: id))
                    let r = try client.request("PUT", "/v1/kv/\(key)", body: body)
                    if r.status == 204 {
                        seen[key] = version(r.headers)
                        recorder.finish(op, .ok(version: version(r.headers)))
                    } else {
                        recorder.finish(op, .unknown)
                    }
                case 35..<47:
                    op = recorder.call(key: k, op: .delete)
                    let r = try client.request("DELETE", "/v1/kv/\(key)")
                    recorder.finish(op, r.status == 204 ? .deleted(true) : r.status == 404 ? .deleted(false) : .unknown)
                case 47..<62:
                    if let expected = seen[key] {
                        op = recorder.call(key: k, op: .putIfVersion(writeID: id, expected: expected))
                        let r = try client.request("PUT", "/v1/kv/\(key)", headers: ["If-Match": "\"\(expected)\""], body: body)
                        switch r.status {
                        case 204: seen[key] = version(r.headers); recorder.finish(op, .ok(version: version(r.headers)))
                        case 412: recorder.finish(op, .preconditionFailed)
                        default: recorder.finish(op, .unknown)
                        }
                    } else {
                        op = recorder.call(key: k, op: .putIfAbsent(writeID: id))
                        let r = try client.request("PUT", "/v1/kv/\(key)", headers: ["If-None-Match": "*"], body: body)
                        switch r.status {
                        case 204: seen[key] = version(r.headers); recorder.finish(op, .ok(version: version(r.headers)))
                        case 412: recorder.finish(op, .preconditionFailed)
                        default: recorder.finish(op, .unknown)
                        }
                    }
                case 62..<72:
                    op = recorder.call(key: k, op: .refreshTTL)
                    let r = try client.request("PATCH", "/v1/kv/\(key)?ttl=3600")
                    switch r.status {
                    case 200: recorder.finish(op, .ok(version: version(r.headers)))
                    case 404: recorder.finish(op, .notFound)
                    default: recorder.finish(op, .unknown)
                    }
                default:
                    op = recorder.call(key: k, op: .get)
                    let r = try client.request("GET", "/v1/kv/\(key)?raw")
                    switch r.status {
                    case 200:
                        seen[key] = version(r.headers)
                        recorder.finish(op, .value(writeID: writeID(r.body), version: version(r.headers)))
                    case 404: recorder.finish(op, .value(writeID: nil, version: nil))
                    default: recorder.finish(op, .unknown)
                    }
                }
            } catch {
                return  // the server was killed: what is in flight stays unknown
            }
        }
    }

    @Test(arguments: ["always", "interval"])
    func concurrentClientsSeeALinearizableHistoryAndASigkillLosesNoAcknowledgedWrite(fsync: String) throws {
        for round in 0..<Self.rounds {
            let dir = NSTemporaryDirectory() + "logkvd-history-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let server = try LiveServerTests.Logkvd(dataDir: dir, args: ["--fsync", fsync])
            var port = server.port
            try #require(server.waitUntilReady())
            let recorder = HistoryRecorder()
            let nextWrite = LockedBox<UInt64>(1)
            let stop = LockedBox(false)
            let group = DispatchGroup()
            let seedBase = UInt64(round * 100 + (fsync == "always" ? 0 : 50))
            for n in 0..<Self.clients {
                group.enter()
                Thread.detachNewThread { [port] in
                    defer { group.leave() }
                    Self.runClient(n, port: port, seed: seedBase * 1000 + UInt64(n), recorder: recorder,
                                   nextWrite: nextWrite, stop: stop)
                }
            }
            var rng = SplitMix(seed: seedBase &+ 7)
            Thread.sleep(forTimeInterval: Double.random(in: 0.4...1.5, using: &rng))
            kill(server.process.processIdentifier, SIGKILL)
            _ = waitForExit(server.process)
            stop.set(true)
            group.wait()
            recorder.crashAll()

            let restarted = try LiveServerTests.Logkvd(dataDir: dir, args: ["--fsync", fsync])
            port = restarted.port
            try #require(restarted.waitUntilReady())
            var recovered: [[UInt8]: UInt64?] = [:]
            let c = try HTTPTestClient(port: port)
            for key in Self.keys {
                let r = try c.request("GET", "/v1/kv/\(key)?raw")
                #expect(r.status == 200 || r.status == 404, "\(key): \(r.status) \(r.text)")
                recovered[Array(key.utf8)] = r.status == 200 ? Self.writeID(r.body) : nil
            }
            #expect(restarted.terminate() == 0)

            let operations = recorder.operations
            let acknowledged = operations.filter { if case .ok = $0.output { return true }; return false }.count
            #expect(acknowledged > 20, "only \(acknowledged) writes were acknowledged before the kill")
            let live = checkLinearizable(operations)
            #expect(live.isOk, "fsync=\(fsync) round \(round): live history: \(live)")
            let durable = checkRecovered(history: operations, recovered: recovered, policy: .always)
            #expect(durable.isOk, "fsync=\(fsync) round \(round): after SIGKILL: \(durable)")
            print("http history: fsync=\(fsync) round \(round): \(operations.count) operations, \(acknowledged) acknowledged writes, checked")
        }
    }
}
