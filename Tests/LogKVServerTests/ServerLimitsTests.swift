import Foundation
import LogKVTestSupport
import LogKV
@testable import LogKVServer
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// No client, however slow, pipelined or large, can exhaust the server:
/// every limit answers with a clear JSON error, over real sockets.
@Suite struct ServerLimitsTests {
    /// Reads whatever arrives until the peer closes or `seconds` pass.
    func readUntilClosed(_ fd: HTTPTestClient, seconds: Double) -> (closed: Bool, text: String) {
        var text = ""
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            guard let chunk = try? fd.readAvailable() else { return (true, text) }
            text += String(decoding: chunk, as: UTF8.self)
        }
        return (false, text)
    }

    @Test func missingOrDuplicateHostIs400WithJSON() async throws {
        try await withServer { s in
            let c = try s.client()
            try c.sendRaw(Array("GET /health HTTP/1.1\r\n\r\n".utf8))
            let missing = try c.readResponse()
            #expect(missing.status == 400)
            #expect((missing.json["message"] as? String)?.contains("Host") == true)
            let c2 = try s.client()
            try c2.sendRaw(Array("GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".utf8))
            #expect(try c2.readResponse().status == 400)
        }
    }

    @Test func malformedRequestGetsAJSONError() async throws {
        try await withServer { s in
            let c = try s.client()
            try c.sendRaw(Array("GARBAGE\0\0 NOT HTTP\r\n\r\n".utf8))
            let r = try c.readResponse()
            #expect(r.status == 400)
            #expect(r.json["success"] as? Bool == false)
        }
    }

    @Test func transferCodingsOtherThanChunkedAre501() async throws {
        try await withServer { s in
            let c = try s.client()
            try c.sendRaw(Array("PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".utf8))
            let r = try c.readResponse()
            #expect(r.status == 501)
            #expect(r.json["success"] as? Bool == false)
            #expect(try s.client().request("GET", "/v1/kv/k").status == 404)
        }
    }

    @Test func headHealthIs200WithoutABody() async throws {
        try await withServer { s in
            let r = try s.client().request("HEAD", "/health")
            #expect(r.status == 200)
            #expect(r.headers["content-length"] == "2")
            #expect(r.body.isEmpty)
        }
    }

    @Test func expect100ContinueIsAnsweredBeforeTheBodyAndOtherExpectationsAre417() async throws {
        try await withServer { s in
            let c = try s.client()
            try c.sendRaw(Array("PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n".utf8))
            let interim = try c.readResponse()
            #expect(interim.status == 100)
            try c.sendRaw(Array("hello".utf8))
            #expect(try c.readResponse().status == 204)
            #expect(try c.request("GET", "/v1/kv/k?raw").text == "hello")
            let c2 = try s.client()
            try c2.sendRaw(Array("PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: teapot\r\n\r\n".utf8))
            let refused = try c2.readResponse()
            #expect(refused.status == 417)
            #expect(refused.json["success"] as? Bool == false)
        }
    }

    @Test func unauthenticatedUploadIsRefusedBeforeItsBodyIsSent() async throws {
        try await withServer(token: "t") { s in
            let c = try s.client()
            // 80 MB declared; not one byte of it is sent.
            try c.sendRaw(Array("PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 80000000\r\n\r\n".utf8))
            let r = try c.readResponse()
            #expect(r.status == 401)
            #expect(r.headers["connection"] == "close")
        }
    }

    @Test func bodiesBeyondTheServerWideBudgetAre503BeforeBeingRead() async throws {
        try await withServer(configure: {
            $0.maxBodyBytesInFlight = 10_000
            $0.requestTimeout = .seconds(600)  // the slow upload waits on this test
        }) { s in
            // One slow upload holds 8000 bytes of the budget...
            let slow = try s.client()
            try slow.sendRaw(Array("PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 8000\r\n\r\nabc".utf8))
            #expect(eventually { s.server.bodyBudget.inUse == 8000 })
            // ...so a second one that would go over is refused at once.
            let c = try s.client()
            try c.sendRaw(Array("PUT /v1/kv/b HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".utf8))
            let r = try c.readResponse()
            #expect(r.status == 503)
            #expect(r.headers["retry-after"] == "1")
            // Small requests still go through, and the budget comes back.
            #expect(try s.client().request("PUT", "/v1/kv/c", body: utf8("v")).status == 204)
            try slow.sendRaw([UInt8](repeating: 0x61, count: 7997))
            #expect(try slow.readResponse().status == 204)
            #expect(try s.client().request("PUT", "/v1/kv/b", body: [UInt8](repeating: 0x62, count: 5000)).status == 204)
        }
    }

    @Test func aChunkedBodyArrivingInPiecesIsStoredWhole() async throws {
        try await withServer { s in
            let c = try s.client()
            try c.sendRaw(Array("PUT /v1/kv/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".utf8))
            for piece in ["hello", ", ", "chunked ", "world"] {
                usleep(20_000)
                try c.sendRaw(Array((String(piece.utf8.count, radix: 16) + "\r\n" + piece + "\r\n").utf8))
            }
            try c.sendRaw(Array("0\r\n\r\n".utf8))
            #expect(try c.readResponse().status == 204)
            #expect(try c.request("GET", "/v1/kv/chunked?raw").text == "hello, chunked world")
        }
    }

    @Test func aRequestWithBothContentLengthAndChunkedIsRefusedAndWritesNothing() async throws {
        try await withServer { s in
            let c = try s.client()
            // The framing a smuggling attack relies on: refused, not guessed.
            try c.sendRaw(Array(("PUT /v1/kv/smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").utf8))
            let r = try c.readResponse()
            #expect(r.status == 400)
            #expect(r.json["success"] as? Bool == false)
            #expect(try s.client().request("GET", "/v1/kv/smuggled").status == 404)
        }
    }

    @Test func chunkedBodyOverTheLimitIs413WithJSON() async throws {
        var options = LogKVOptions()
        options.fsync = .never
        options.maxValueSize = 1000
        options.maxKeySize = 100
        try await withServer(options: options) { s in
            let c = try s.client()
            let limit = s.server.bodyLimit
            var raw = Array("PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
            let chunk = [UInt8](repeating: 0x61, count: 4096)
            for _ in 0...(limit / chunk.count + 1) {
                raw += Array((String(chunk.count, radix: 16) + "\r\n").utf8) + chunk + Array("\r\n".utf8)
            }
            raw += Array("0\r\n\r\n".utf8)
            try? c.sendRaw(raw)
            let r = try c.readResponse()
            #expect(r.status == 413)
            #expect(r.json["success"] as? Bool == false)
        }
    }

    @Test func idleAndSlowConnectionsAreClosed() async throws {
        try await withServer(configure: {
            $0.idleTimeout = .milliseconds(400)
            $0.requestTimeout = .milliseconds(400)
        }) { s in
            // Idle after a response. (The idle clock runs from the accept: a
            // test thread starved before its first send finds the connection
            // closed, and connects again, as clients do.)
            var answered: (HTTPTestClient, Int)?
            for _ in 0..<5 where answered == nil {
                let idle = try s.client()
                if let status = try? idle.request("GET", "/health").status { answered = (idle, status) }
            }
            let (idle, status) = try #require(answered)
            #expect(status == 200)
            #expect(readUntilClosed(idle, seconds: 60).closed)
            // A head sent byte by byte (slowloris) is cut off by the clock
            // that started at the accept, whatever bytes keep arriving: a
            // send fails long before the whole head (30 s at this pace, 75
            // times the timeout) is out; were the clock reset by every byte,
            // the head would complete and be answered.
            let slow = try s.client()
            let head = Array("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: \(String(repeating: "s", count: 260))\r\n\r\n".utf8)
            var closed = false
            for byte in head {
                if (try? slow.sendRaw([byte])) == nil { closed = true; break }
                usleep(100_000)
            }
            #expect(closed, "a head sent over 30 s was read to its end")
            // A body that stops arriving: 408 (connecting again, as above,
            // if the connection was closed before the head was sent).
            var stalledAnswer: HTTPTestClient.Response?
            for _ in 0..<5 where stalledAnswer == nil {
                let stalled = try s.client()
                try? stalled.sendRaw(Array("PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc".utf8))
                stalledAnswer = try? stalled.readResponse()
            }
            #expect(stalledAnswer?.status == 408)
        }
    }

    @Test func aClientSlowlyTakingALargeAnswerIsNotIdle() async throws {
        try await withServer(configure: { $0.idleTimeout = .seconds(2) }) { s in
            let value = [UInt8](repeating: 0x62, count: 8 << 20)
            try s.store.put(Array("large".utf8), value)
            let c = try s.client()
            // The last answer of the connection, taken 64 KiB at a time over
            // several idle timeouts (at most 64 KiB every 50 ms: 8 MiB take
            // over 6 s, three idle timeouts; the socket buffers hold part).
            try c.sendRaw(HTTPTestClient.encode("GET", "/v1/kv/large?raw", headers: ["Connection": "close"]))
            var received = 0
            let started = Date()
            while Date().timeIntervalSince(started) < 120 {
                guard let bytes = try? c.readAvailable() else { break }  // closed
                received += bytes.count
                usleep(50_000)
            }
            #expect(received > value.count, "the answer was cut off after \(received) bytes")
            #expect(Date().timeIntervalSince(started) > 4, "the client read faster than the test means")
        }
    }

    /// Past the cap, a few connections may still ask for `/health` and
    /// `/metrics` (an orchestrator must not kill a server that is only
    /// busy); anything else there is 503, and past those few every
    /// connection gets 503 at once.
    @Test func connectionsBeyondTheCapGet503ButHealthAndMetricsStillAnswer() async throws {
        try await withServer(configure: { $0.maxConnections = 4 }) { s in
            var held: [HTTPTestClient] = []
            for _ in 0..<4 {
                let c = try s.client()
                #expect(try c.request("GET", "/health").status == 200)
                held.append(c)
            }
            let health = try s.client().request("GET", "/health")
            #expect(health.status == 200 && health.headers["connection"] == "close")
            #expect(try s.client().request("GET", "/metrics").status == 200)
            let other = try s.client().request("GET", "/v1/keys")
            #expect(other.status == 503)
            #expect((other.json["message"] as? String)?.contains("too many connections") == true)
            // Probe connections held open use up the reserve (each for at
            // most 5 s idle); past it, a connection gets 503 before it asks.
            var probes: [HTTPTestClient] = []
            for _ in 0..<ServerConfiguration.probeConnectionReserve { probes.append(try s.client()) }
            usleep(300_000)
            let past = try s.client()
            var refusedAtOnce: [UInt8] = []
            for _ in 0..<30 where refusedAtOnce.isEmpty { refusedAtOnce = (try? past.readAvailable()) ?? [] }
            #expect(String(decoding: refusedAtOnce, as: UTF8.self).hasPrefix("HTTP/1.1 503"))
            // An idle probe connection is closed soon, freeing its slot.
            #expect(eventually(timeout: 30) { (try? probes[0].readAvailable()) == nil })
            held.removeAll()
            probes.removeAll()
            // The server notices the closes soon (a starved one, later).
            #expect(eventually { (try? s.client().request("GET", "/v1/keys").status) == 200 })
        }
    }

    /// Sends `batch` over and over without reading, until a send times out
    /// (the server stopped reading) or `limit` sends went through; returns
    /// how many did.
    static func sends(of batch: [UInt8], by client: HTTPTestClient, upTo limit: Int) -> Int {
        var sent = 0
        while sent < limit, (try? client.sendRaw(batch)) != nil { sent += 1 }
        return sent
    }

    @Test func pipelinedRequestsFromAClientThatDoesNotReadAreNotBuffered() async throws {
        try await withServer(configure: { $0.writeBufferHighWater = 64 * 1024 }) { s in
            try s.store.put(Array("big".utf8), [UInt8](repeating: 0x61, count: 256 * 1024))
            let c = try s.client()
            c.setSendTimeout(seconds: 2)
            let thousand = [UInt8]((0..<1000).map { _ in HTTPTestClient.encode("GET", "/v1/kv/big?raw") }.joined())
            // 500k pipelined requests (20 MB) would ask for 128 GB of
            // answers. Without reading, the server stops reading too: the
            // kernel's buffers fill and a send times out long before.
            let sent = Self.sends(of: thousand, by: c, upTo: 500)
            #expect(sent < 500, "the server read every pipelined request without the client reading")
            // Other clients are served meanwhile.
            #expect(try s.client().request("GET", "/health").status == 200)
        }
    }

    @Test func refusalsToAClientThatDoesNotReadAreNotBufferedEither() async throws {
        try await withServer(configure: { $0.writeBufferHighWater = 64 * 1024 }) { s in
            let c = try s.client()
            c.setSendTimeout(seconds: 2)
            // Each 31-byte request (no Host) earns a 400 of about 140 bytes
            // and leaves the connection open: 3.1 GB of them would ask for
            // 14 GB of answers.
            let thousand = [UInt8]((0..<1000).map { _ in Array("GET /health HTTP/1.1\r\nX: y\r\n\r\n".utf8) }.joined())
            let sent = Self.sends(of: thousand, by: c, upTo: 100_000)
            #expect(sent < 100_000, "the server read every refused request without the client reading")
            #expect(try s.client().request("GET", "/health").status == 200)
        }
    }

    @Test func aRefusedHEADCarriesNoBodyAndTheConnectionStaysUsable() async throws {
        try await withServer(configure: { $0.token = "secret" }) { s in
            let c = try s.client()
            try c.sendRaw(HTTPTestClient.encode("HEAD", "/v1/kv/x"))  // no token: 401
            let refused = try c.readResponse(method: "HEAD")
            #expect(refused.status == 401)
            #expect(Int(refused.headers["content-length"] ?? "") ?? 0 > 0)
            let next = try c.request("GET", "/health")
            #expect(next.status == 200 && next.text == "ok")
        }
    }

    @Test func thousandsOfPipelinedAnswersReadyAtOnceDoNotNestTheirCallbacks() async throws {
        try await withServer { s in
            try s.store.put(Array("a".utf8), Array("v".utf8))
            let c = try s.client()
            // The DELETE is answered from the blocking pool; the blocking
            // reads behind it (an index already passed) are answered as
            // soon as they are looked at, each from a fulfilled future.
            var bytes = HTTPTestClient.encode("DELETE", "/v1/kv/missing")
            for _ in 0..<3000 { bytes += HTTPTestClient.encode("GET", "/v1/kv/a?raw&index=1&wait=1s") }
            try c.sendRaw(bytes)
            #expect(try c.readResponse().status == 404)
            for _ in 0..<3000 {
                let r = try c.readResponse()
                #expect(r.status == 200 && r.text == "v")
            }
        }
    }

    @Test func batchResponsesStayWithinTheirByteBudget() async throws {
        try await withServer(configure: { $0.maxBatchResponseBytes = 100_000 }) { s in
            try s.store.put(Array("v".utf8), [UInt8](repeating: 0x61, count: 40_000))
            let ops = (0..<10).map { _ in #"{"op":"get","key":"v"}"# }.joined(separator: ",")
            let r = try s.client().request("POST", "/v1/batch", json: #"{"ops":[\#(ops)]}"#)
            #expect(r.status == 200)
            #expect(r.body.count < 100_000 + 4096)
            let results = r.json["results"] as? [[String: Any]] ?? []
            #expect(results.count == 10)
            #expect(results.filter { $0["status"] as? Int == 200 }.count == 2)
            #expect(results.filter { $0["status"] as? Int == 413 }.count == 8)
        }
    }

    /// Control bytes escape to six bytes each in JSON: the budget counts
    /// what is written, not the value's length.
    @Test func batchResponsesCountEscapedBytesAgainstTheirBudget() async throws {
        try await withServer(configure: { $0.maxBatchResponseBytes = 100_000 }) { s in
            try s.store.put(Array("c".utf8), [UInt8](repeating: 0x01, count: 10_000))  // 60,000 bytes escaped
            let ops = (0..<10).map { _ in #"{"op":"get","key":"c"}"# }.joined(separator: ",")
            let r = try s.client().request("POST", "/v1/batch", json: #"{"ops":[\#(ops)]}"#)
            #expect(r.status == 200)
            #expect(r.body.count < 100_000 + 4096, "\(r.body.count) bytes")
            let results = r.json["results"] as? [[String: Any]] ?? []
            #expect(results.filter { $0["status"] as? Int == 200 }.count == 1)
            #expect(eventually { s.server.api.answerBudget.inUse == 0 }, "the batch answer's bytes went back to the answer budget")
        }
    }

    /// A batch answer is held whole until written: it is reserved from the
    /// server-wide answer budget before any operation runs, so a batch the
    /// budget cannot hold is a 503 with nothing applied (never after its
    /// writes), and what it reserved goes back.
    @Test func aBatchTheAnswerBudgetCannotHoldIs503WithNothingApplied() async throws {
        try await withServer(configure: { $0.maxAnswerBytesInFlight = AnswerBudget.pieceSize }) { s in
            let budget = s.server.api.answerBudget
            #expect(budget.tryReserve(budget.limit - 100))  // the budget spent elsewhere
            let r = try s.client().request("POST", "/v1/batch", json: #"{"ops":[{"op":"put","key":"b","value":"1"}]}"#)
            #expect(r.status == 503 && r.headers["retry-after"] == "1")
            #expect(try s.store.get(Array("b".utf8)) == nil, "a refused batch applied its put")
            budget.release(budget.limit - 100)
            // With room: the gets share what the budget holds, the rest are 413.
            try s.store.put(Array("v".utf8), [UInt8](repeating: 0x61, count: 60_000))
            let ops = (0..<4).map { _ in #"{"op":"get","key":"v"}"# }.joined(separator: ",")
            let gets = try s.client().request("POST", "/v1/batch", json: #"{"ops":[\#(ops)]}"#)
            #expect(gets.status == 200)
            let results = gets.json["results"] as? [[String: Any]] ?? []
            #expect(results.filter { $0["status"] as? Int == 200 }.count == 2)
            #expect(eventually { budget.inUse == 0 })
        }
    }

    @Test func adminRoutesAnswerOnlyLoopbackWithoutAToken() throws {
        // The guard on its own, with a client address the test chooses.
        func status(remote: String, token: String?) throws -> HTTPResponseStatus? {
            let requestGuard = RequestGuard(routes: KVAPI.routes, token: token, bodyLimit: 1 << 20,
                                            budget: BodyBudget(limit: 1 << 20))
            var headers = HTTPHeaders([("host", "127.0.0.1:8080")])
            if let token { headers.add(name: "authorization", value: "Bearer \(token)") }
            let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/admin/compact", headers: headers)
            var request = Request(head: head, body: nil, eventLoop: EmbeddedEventLoop())
            var reserved = 0
            return requestGuard.check(head, route: KVAPI.match(&request), remote: try SocketAddress(ipAddress: remote, port: 5000),
                                      reserved: &reserved)?.status  // nil: passed on
        }
        #expect(try status(remote: "203.0.113.7", token: nil) == .forbidden)
        #expect(try status(remote: "::ffff:198.51.100.1", token: nil) == .forbidden)
        #expect(try status(remote: "127.0.0.1", token: nil) == nil)
        #expect(try status(remote: "::1", token: nil) == nil)
        #expect(try status(remote: "203.0.113.7", token: "t") == nil)
    }

    @Test func backupStreamsATarOfEverySegmentAndNamesNoServerPath() async throws {
        var options = LogKVOptions()
        options.fsync = .never
        options.segmentSize = 4096
        try await withServer(options: options) { s in
            for i in 0..<200 { try s.store.put(Array("k\(i)".utf8), Array("value \(i)".utf8)) }
            try s.store.compact()
            for i in 0..<50 { try s.store.put(Array("k\(i)".utf8), Array("new \(i)".utf8)) }
            let r = try s.client().request("GET", "/v1/admin/backup")
            #expect(r.status == 200)
            #expect(r.headers["content-type"] == "application/x-tar")
            #expect(Int(r.headers["content-length"] ?? "") == r.body.count)
            let archive = NSTemporaryDirectory() + "logkv-backup-\(UUID().uuidString).tar"
            let restored = NSTemporaryDirectory() + "logkv-restored-\(UUID().uuidString)"
            defer {
                try? FileManager.default.removeItem(atPath: archive)
                try? FileManager.default.removeItem(atPath: restored)
            }
            try Data(r.body).write(to: URL(fileURLWithPath: archive))
            var restoreOptions = LogKVOptions()
            restoreOptions.logger.logLevel = .critical
            let stats = try LogKV.restore(from: archive, to: restored, options: restoreOptions)
            #expect(stats.keys == 200)
            let copy = try LogKV(path: restored, options: restoreOptions)
            defer { try? copy.close() }
            #expect(try copy.get("k1")?.value == Array("new 1".utf8))
            #expect(try copy.get("k150")?.value == Array("value 150".utf8))
            // The old POST form that took a server path is gone.
            #expect(try s.client().request("POST", "/v1/admin/backup", json: #"{"dir":"/tmp/x"}"#).status == 405)
        }
    }

    /// A body sent to a route that does not exist is never read, buffered or
    /// counted against the body budget, with or without a token.
    @Test func bodiesForUnknownRoutesAreRefusedUnread() async throws {
        try await withServer(token: "t", configure: { $0.maxBodyBytesInFlight = 10_000 }) { s in
            for (method, path, status) in [("POST", "/v1/kv/x", 405), ("POST", "/nope", 404)] {
                let c = try s.client()
                try c.sendRaw(Array("\(method) \(path) HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\n\r\nabc".utf8))
                let r = try c.readResponse()
                #expect(r.status == status)
                #expect(r.json["success"] as? Bool == false)
                #expect(r.headers["connection"] == "close")
            }
            let ok = try s.client().request("PUT", "/v1/kv/k", headers: ["Authorization": "Bearer t"], body: [UInt8](repeating: 1, count: 9000))
            #expect(ok.status == 204)
        }
    }

    @Test func aSecondBackupWhileOneStreamsIs429() async throws {
        var options = LogKVOptions()
        options.fsync = .never
        try await withServer(options: options, configure: { $0.streamStallTimeout = .seconds(600) }) { s in
            for i in 0..<64 { try s.store.put(Array("k\(i)".utf8), [UInt8](repeating: UInt8(i), count: 64 * 1024)) }
            let slow = try s.client()
            try slow.sendRaw(HTTPTestClient.encode("GET", "/v1/admin/backup"))
            // The first stream has begun (it fills the socket buffers and waits).
            #expect(eventually { s.server.api.streams.count == 1 })
            let second = try s.client().request("GET", "/v1/admin/backup")
            #expect(second.status == 429)
            #expect(second.headers["retry-after"] != nil)
            // Other work goes on meanwhile.
            #expect(try s.client().request("GET", "/v1/stats").status == 200)
            withExtendedLifetime(slow) {}
        }
    }

    @Test func corsIsOffByDefaultAndAnswersAllowedOriginsWhenOn() async throws {
        let preflight = ["Origin": "https://dash.example", "Access-Control-Request-Method": "PUT"]
        try await withServer { s in
            let c = try s.client()
            #expect(try c.request("OPTIONS", "/v1/kv/k", headers: preflight).status == 405)
            #expect(try c.request("GET", "/health", headers: ["Origin": "https://dash.example"]).headers["access-control-allow-origin"] == nil)
        }
        try await withServer(configure: { $0.corsOrigins = ["https://dash.example"] }) { s in
            let c = try s.client()
            let ok = try c.request("OPTIONS", "/v1/kv/k", headers: preflight)
            #expect(ok.status == 204)
            #expect(ok.headers["access-control-allow-origin"] == "https://dash.example")
            #expect(ok.headers["access-control-allow-methods"]?.contains("PUT") == true)
            #expect(ok.headers["access-control-allow-headers"]?.contains("If-Match") == true)
            let other = try c.request("OPTIONS", "/v1/kv/k", headers: ["Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"])
            #expect(other.status == 403)
            let put = try c.request("PUT", "/v1/kv/k", headers: ["Origin": "https://dash.example"], body: utf8("v"))
            #expect(put.status == 204)
            #expect(put.headers["access-control-allow-origin"] == "https://dash.example")
            #expect(put.headers["access-control-expose-headers"]?.contains("ETag") == true)
            let get = try c.request("GET", "/v1/kv/k", headers: ["Origin": "https://evil.example"])
            #expect(get.status == 200)
            #expect(get.headers["access-control-allow-origin"] == nil)
        }
    }

    @Test func largeJSONIsGzippedWhenAcceptedAndRawValuesNever() async throws {
        try await withServer { s in
            for i in 0..<100 { try s.store.put(Array("some-longer-key-name-\(i)".utf8), Array("v".utf8)) }
            try s.store.put(Array("big".utf8), [UInt8](repeating: 0x61, count: 4000))
            let c = try s.client()
            let gz = try c.request("GET", "/v1/keys", headers: ["Accept-Encoding": "gzip"])
            #expect(gz.status == 200)
            #expect(gz.headers["content-encoding"] == "gzip")
            #expect(gz.body.starts(with: [0x1F, 0x8B]))  // gzip magic
            let plain = try c.request("GET", "/v1/keys")
            #expect(plain.headers["content-encoding"] == nil)
            #expect(gz.body.count < plain.body.count / 3)
            let raw = try c.request("GET", "/v1/kv/big?raw", headers: ["Accept-Encoding": "gzip"])
            #expect(raw.headers["content-encoding"] == nil && raw.body.count == 4000)
            let head = try c.request("HEAD", "/v1/kv/big", headers: ["Accept-Encoding": "gzip"])
            #expect(head.status == 200 && head.headers["content-encoding"] == nil)
            let small = try c.request("GET", "/v1/stats", headers: ["Accept-Encoding": "gzip"])
            #expect(small.headers["content-encoding"] == nil)  // under the threshold
            #expect(try c.request("GET", "/health").text == "ok")  // the connection is still in step
        }
    }
}
