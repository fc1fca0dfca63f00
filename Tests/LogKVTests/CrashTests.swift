import Foundation
import LogKVTestSupport
import Testing
@testable import LogKV

/// Kills a real writer process with SIGKILL at random moments and checks that
/// every acknowledged write is there after reopening.
@Suite struct CrashTests {
    /// The last acknowledged operation per key, from the writer's output.
    struct Acked {
        var puts: [String: Int] = [:]  // key -> counter of its last acked put
        var deleted: Set<String> = []
        var lastCounter = 0
        /// The key of the write under way when the writer died.
        var inFlightKey: String?

        mutating func apply(line: Substring) {
            var parts = line.split(separator: " ")
            if parts.first == "try" {
                if parts.count == 4 { inFlightKey = String(parts[2]) }
                return
            }
            parts = Array(parts)
            guard parts.count == 3, let n = Int(parts[2]) else { return }
            let key = String(parts[1])
            lastCounter = max(lastCounter, n)
            if parts[0] == "put" { puts[key] = n; deleted.remove(key) } else { puts[key] = nil; deleted.insert(key) }
        }
    }

    func runWriterAndKill(dir: String, seed: UInt64, after delay: TimeInterval) throws -> Acked {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: builtProduct("LogKVCrashWriter"))
        process.arguments = [dir, String(seed)]
        let out = Pipe()
        process.standardOutput = out
        try spawnSerialized(process)
        var buffer = Data()
        // Wait for "ready" before starting the clock.
        while !buffer.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            buffer.append(chunk)
        }
        Thread.sleep(forTimeInterval: delay)
        kill(process.processIdentifier, SIGKILL)
        _ = waitForExit(process)
        buffer.append(out.fileHandleForReading.readDataToEndOfFile())
        var acked = Acked()
        // A line cut by the kill has no newline: it was never fully printed,
        // so it does not count as acknowledged.
        let text = String(decoding: buffer, as: UTF8.self)
        let complete = text.hasSuffix("\n") ? Substring(text) : text[..<(text.lastIndex(of: "\n") ?? text.startIndex)]
        for line in complete.split(separator: "\n") { acked.apply(line: line) }
        return acked
    }

    @Test func sigkilledWriterLosesNoAcknowledgedWrite() throws {
        let dir = TempDir("crash")
        var model = Acked()
        var rng = SystemRandomNumberGenerator()
        for round in 0..<25 {
            let delay = Double.random(in: 0.05...0.4, using: &rng)
            let acked = try runWriterAndKill(dir: dir.path, seed: UInt64(round) &+ rng.next() % 1000, after: delay)
            // The writer only ever writes newer counters, so merge into the model.
            for (key, n) in acked.puts { model.puts[key] = n; model.deleted.remove(key) }
            for key in acked.deleted where acked.puts[key] == nil { model.puts[key] = nil; model.deleted.insert(key) }
            try verify(dir: dir.path, model: model, inFlightAbove: acked.lastCounter, inFlightKey: acked.inFlightKey)
            // The write in flight may or may not have landed; the store decides.
            if let key = acked.inFlightKey {
                let store = try LogKV(path: dir.path, options: .testing())
                if let got = try store.get(Array(key.utf8)) {
                    let text = String(decoding: got.value, as: UTF8.self)
                    model.puts[key] = Int(text.split(separator: "=")[1].prefix(while: { $0.isNumber }))
                    model.deleted.remove(key)
                } else {
                    model.puts[key] = nil
                    model.deleted.insert(key)
                }
                try store.close()
            }
        }
        #expect(!model.puts.isEmpty)
    }

    /// Every acked put reads back with its counter or a newer one (one write
    /// may have been in flight); every acked delete is still deleted unless a
    /// newer unacked write followed.
    func verify(dir: String, model: Acked, inFlightAbove lastAcked: Int, inFlightKey: String?) throws {
        let store = try LogKV(path: dir, options: .testing())
        defer { try? store.close() }
        for (key, n) in model.puts {
            let got = try store.get(Array(key.utf8))
            guard let got else {
                // Only acceptable if the write in flight was a delete of it.
                #expect(key == inFlightKey, "acked key \(key)=\(n) is missing")
                continue
            }
            let text = String(decoding: got.value, as: UTF8.self)
            let counter = Int(text.split(separator: "=")[1].prefix(while: { $0.isNumber })) ?? -1
            #expect(text.hasPrefix("\(key)="))
            #expect(counter == n || counter > lastAcked, "\(key): got \(counter), acked \(n)")
        }
        for key in model.deleted {
            if let got = try store.get(Array(key.utf8)) {
                let text = String(decoding: got.value, as: UTF8.self)
                let counter = Int(text.split(separator: "=")[1].prefix(while: { $0.isNumber })) ?? -1
                #expect(counter > lastAcked, "deleted key \(key) came back with \(counter)")
            }
        }
    }
}
