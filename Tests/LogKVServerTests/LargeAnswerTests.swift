import Foundation
import LogKV
import LogKVTestSupport
import NIOCore
import Testing
@testable import LogKVServer

/// Values over 64 KiB are answered in pieces straight from their segment:
/// byte for byte what a whole answer would be, checked before the first
/// byte goes out, and held in memory one piece at a time whatever the
/// number of clients and however slowly they read.
@Suite struct LargeAnswerTests {
    static let text = (0..<(3 << 20)).map { i -> UInt8 in
        // Text with every kind of escape, and multi-byte characters cut by
        // the piece boundaries.
        switch i % 97 {
        case 0: return 0x0A
        case 1: return UInt8(ascii: "\"")
        case 2: return 0x01
        case 3: return UInt8(ascii: "\\")
        default: return UInt8(ascii: "a") + UInt8(i % 26)
        }
    } + Array("é✓😀".utf8)
    static let binary = (0..<((2 << 20) + 1)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) } + [0xFF]

    /// What the whole-answer encoder writes for `value` (the reference).
    static func wholeJSONValue(_ value: [UInt8]) -> [String: Any] {
        var w = JSONWriter()
        w.beginObject()
        w.valueField(value)
        w.endObject()
        return (try? JSONSerialization.jsonObject(with: Data(w.bytes))) as? [String: Any] ?? [:]
    }

    @Test func largeValuesAreAnsweredByteForByteRawAndAsJSON() async throws {
        try await withServer { s in
            let c = try s.client()
            for (key, value) in [("text", Self.text), ("binary", Self.binary)] {
                #expect(try c.request("PUT", "/v1/kv/\(key)", body: value).status == 204)
                let raw = try c.request("GET", "/v1/kv/\(key)?raw")
                #expect(raw.status == 200 && raw.body == value, "\(key) raw: \(raw.body.count) bytes")
                #expect(Int(raw.headers["content-length"] ?? "") == value.count)
                let json = try c.request("GET", "/v1/kv/\(key)")
                #expect(json.status == 200)
                #expect(Int(json.headers["content-length"] ?? "") == json.body.count)
                let object = json.json
                let expected = Self.wholeJSONValue(value)
                #expect(object["value"] as? String == expected["value"] as? String, "\(key) JSON value")
                #expect(object["encoding"] as? String == expected["encoding"] as? String)
                #expect(object["key"] as? String == key && object["success"] as? Bool == true)
                #expect(object["version"] as? Int != nil && object["timestamp"] as? Int != nil)
                // HEAD gives the length its GET would have, and no body.
                let head = try c.request("HEAD", "/v1/kv/\(key)")
                #expect(head.status == 200 && head.body.isEmpty)
                #expect(head.headers["content-length"] == json.headers["content-length"])
                let etag = try #require(raw.headers["etag"])
                #expect(try c.request("GET", "/v1/kv/\(key)?raw", headers: ["If-None-Match": etag]).status == 304)
                // The connection goes on after a streamed answer.
                #expect(try c.request("GET", "/health").status == 200)
            }
            // A blocking query answers a large value the same way.
            let index = try #require(try c.request("GET", "/v1/kv/text?raw").headers["x-logkv-index"])
            let held = try c.request("GET", "/v1/kv/text?raw&index=\(index)&wait=50ms")
            #expect(held.status == 200 && held.body == Self.text)
        }
    }

    @Test func aLargeValueWithAFlippedByteIsA500BeforeAnyOfItIsSent() async throws {
        var options = LogKVOptions()
        options.fsync = .always
        try await withServer(options: options) { s in
            let c = try s.client()
            #expect(try c.request("PUT", "/v1/kv/big", body: Self.binary).status == 204)
            try s.store.sync()
            let segment = try #require(try FileManager.default.contentsOfDirectory(atPath: s.dir + "/segments")
                .filter { $0.hasSuffix(".seg") }.sorted().last)
            let handle = try #require(FileHandle(forUpdatingAtPath: s.dir + "/segments/" + segment))
            let end = try handle.seekToEnd()
            try handle.seek(toOffset: end - 1000)
            let byte = try #require(try handle.read(upToCount: 1))
            try handle.seek(toOffset: end - 1000)
            try handle.write(contentsOf: Data([byte[0] ^ 0x40]))
            try handle.close()
            for path in ["/v1/kv/big?raw", "/v1/kv/big"] {
                let r = try s.client().request("GET", path)
                #expect(r.status == 500, "\(path)")
                #expect(r.body.count < 1000 && r.json["success"] as? Bool == false, "\(path): no value bytes")
            }
        }
    }

    @Test func theAnswerBudgetLetsStreamsWaitTheirTurnAndServesThemAll() async throws {
        // A budget of one piece: eight readers share it, one piece at a time.
        try await withServer(configure: { $0.maxAnswerBytesInFlight = AnswerBudget.pieceSize }) { s in
            #expect(try s.client().request("PUT", "/v1/kv/big", body: Self.binary).status == 204)
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for _ in 0..<8 {
                    group.addTask { try s.client().request("GET", "/v1/kv/big?raw").body == Self.binary }
                }
                for try await same in group { #expect(same) }
            }
            #expect(eventually { s.server.api.answerBudget.inUse == 0 })
        }
    }
}
