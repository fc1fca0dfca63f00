import Foundation
import LogKVTestSupport
import LogKV
@testable import LogKVServer
import Testing

@Suite struct KVRoutesTests {
    @Test func healthAnswersOk() async throws {
        try await withServer { s in
            let r = try s.client().request("GET", "/health")
            #expect(r.status == 200)
            #expect(r.text == "ok")
        }
    }

    @Test func seedJSONWriteThenReadRoundTrips() async throws {
        try await withServer { s in
            let c = try s.client()
            for method in ["PUT", "POST"] {
                let put = try c.request(method, "/v1/kv", json: #"{"key": "greeting", "value": "hello \"world\" ✓"}"#)
                #expect(put.status == 204)
                let get = try c.request("GET", "/v1/kv/greeting")
                #expect(get.status == 200)
                #expect(get.headers["content-type"] == "application/json")
                let json = get.json
                #expect(json["success"] as? Bool == true)
                #expect(json["key"] as? String == "greeting")
                #expect(json["value"] as? String == "hello \"world\" ✓")
                #expect(json["message"] is String)
                #expect(json["timestamp"] is Int)
                #expect(get.headers["etag"] == put.headers["etag"])
            }
        }
    }

    /// The Go client of logkv-store decodes strictly: every field it knows
    /// keeps its JSON type, and the stats mean what the seed means.
    @Test func seedClientDecodesEveryRouteWithTheSeedsFieldTypes() async throws {
        struct GetResponse: Decodable { var success: Bool; var message: String; var key: String; var value: String; var timestamp: Int64 }
        struct ErrorResponse: Decodable { var success: Bool; var message: String }
        struct KeysResponse: Decodable { var success: Bool; var message: String; var keys: [String] }
        struct StatsResponse: Decodable { var success: Bool; var message: String; var total_keys: Int64; var total_size: Int64; var segments: Int64 }
        try await withServer { s in
            let c = try s.client()
            let before = Int64(Date().timeIntervalSince1970)
            #expect(try c.request("PUT", "/v1/kv", json: #"{"key":"a","value":"1"}"#).status == 204)
            #expect(try c.request("POST", "/v1/kv", json: #"{"key":"b","value":"2"}"#).status == 204)
            // Stats right after the writes count them (no wait for the index flush).
            let stats = try JSONDecoder().decode(StatsResponse.self, from: Data(c.request("GET", "/v1/stats").body))
            #expect(stats.success && stats.total_keys == 2)
            #expect(stats.total_size == 2, "total_size is the bytes of the live values")
            let get = try JSONDecoder().decode(GetResponse.self, from: Data(c.request("GET", "/v1/kv/a").body))
            #expect(get.success && get.key == "a" && get.value == "1")
            #expect(get.timestamp >= before && get.timestamp <= Int64(Date().timeIntervalSince1970) + 1)
            let keys = try JSONDecoder().decode(KeysResponse.self, from: Data(c.request("GET", "/v1/keys").body))
            #expect(keys.success && keys.keys == ["a", "b"])
            let missing = try c.request("GET", "/v1/kv/zzz")
            #expect(missing.status == 404)
            let error = try JSONDecoder().decode(ErrorResponse.self, from: Data(missing.body))
            #expect(!error.success && !error.message.isEmpty)
            #expect(try c.request("DELETE", "/v1/kv/a").status == 204)
            let after = try JSONDecoder().decode(StatsResponse.self, from: Data(c.request("GET", "/v1/stats").body))
            #expect(after.total_keys == 1 && after.total_size == 1)
        }
    }

    /// RFC 9110 preconditions: a well-formed tag this server never issued
    /// (or a weak one) does not match, so 412; a malformed header is 400.
    @Test func ifMatchWithATagNeverIssuedIs412AndAMalformedOneIs400() async throws {
        try await withServer { s in
            let c = try s.client()
            let put = try c.request("PUT", "/v1/kv/k", body: utf8("1"))
            let etag = try #require(put.headers["etag"])
            #expect(try c.request("PUT", "/v1/kv/k", headers: ["If-Match": #""abc""#], body: utf8("2")).status == 412)
            #expect(try c.request("PUT", "/v1/kv/k", headers: ["If-Match": "W/\(etag)"], body: utf8("2")).status == 412)
            #expect(try c.request("DELETE", "/v1/kv/k", headers: ["If-Match": #""999999""#]).status == 412)
            #expect(try c.request("PUT", "/v1/kv/k", headers: ["If-Match": "not-a-tag"], body: utf8("2")).status == 400)
            #expect(try c.request("PUT", "/v1/kv/k", headers: ["If-Match": #""x", \#(etag)"#], body: utf8("3")).status == 204)
            #expect(try c.request("GET", "/v1/kv/k?raw").text == "3")
        }
    }

    @Test func missingKeyIs404WithJSONError() async throws {
        try await withServer { s in
            let r = try s.client().request("GET", "/v1/kv/nope")
            #expect(r.status == 404)
            #expect(r.json["success"] as? Bool == false)
            #expect(r.json["message"] as? String == "key not found")
        }
    }

    @Test func deleteIs204ThenMissingIs404() async throws {
        try await withServer { s in
            let c = try s.client()
            _ = try c.request("PUT", "/v1/kv/d", body: utf8("x"))
            #expect(try c.request("DELETE", "/v1/kv/d").status == 204)
            #expect(try c.request("GET", "/v1/kv/d").status == 404)
            #expect(try c.request("DELETE", "/v1/kv/d").status == 404)
        }
    }

    @Test func rawValuesAreBinarySafe() async throws {
        try await withServer { s in
            let c = try s.client()
            let value = (0..<1024).map { UInt8(truncatingIfNeeded: $0 * 7) }
            #expect(try c.request("PUT", "/v1/kv/bin", body: value).status == 204)
            let raw = try c.request("GET", "/v1/kv/bin?raw")
            #expect(raw.status == 200)
            #expect(raw.headers["content-type"] == "application/octet-stream")
            #expect(raw.body == value)
            // As JSON, non-UTF-8 values travel as base64 and say so.
            let json = try c.request("GET", "/v1/kv/bin").json
            #expect(json["encoding"] as? String == "base64")
            #expect(Data(base64Encoded: json["value"] as! String).map(Array.init) == value)
            // And base64 works on the way in too.
            let b64 = Data([0, 255, 1]).base64EncodedString()
            #expect(try c.request("PUT", "/v1/kv", json: #"{"key":"b","value":"\#(b64)","encoding":"base64"}"#).status == 204)
            #expect(try c.request("GET", "/v1/kv/b?raw").body == [0, 255, 1])
        }
    }

    @Test func keysMayContainSlashesAndUTF8() async throws {
        try await withServer { s in
            let c = try s.client()
            #expect(try c.request("PUT", "/v1/kv/a/b/c", body: utf8("1")).status == 204)
            #expect(try c.request("GET", "/v1/kv/a%2Fb%2Fc?raw").text == "1")
            #expect(try c.request("PUT", "/v1/kv", json: #"{"key":"ключ/ü","value":"2"}"#).status == 204)
            let encoded = percentEncode(utf8("ключ/ü"))
            #expect(try c.request("GET", "/v1/kv/\(encoded)?raw").text == "2")
            #expect(try c.request("GET", "/v1/kv/%ZZ").status == 400)
        }
    }

    @Test func expiryTimesAreRFC3339InUTCWithMilliseconds() {
        // As Go's encoding/json writes time.Time, which logkv-store's clients parse.
        #expect(rfc3339(millis: 0) == "1970-01-01T00:00:00.000Z")
        #expect(rfc3339(millis: 1_795_869_296_007) == "2026-11-28T12:34:56.007Z")
        #expect(rfc3339(millis: 951_782_400_999) == "2000-02-29T00:00:00.999Z")
        #expect(rfc3339(millis: 253_402_300_800_000) == "10000-01-01T00:00:00.000Z")
    }

    @Test func ttlOnEveryWritePathWithRemainingTTLOnRead() async throws {
        try await withServer { s in
            let c = try s.client()
            #expect(try c.request("PUT", "/v1/kv", json: #"{"key":"t1","value":"v","ttl":3600}"#).status == 204)
            #expect(try c.request("PUT", "/v1/kv/t2?ttl=1800", body: utf8("v")).status == 204)
            let t1 = try c.request("GET", "/v1/kv/t1")
            // Seconds left, rounded up; a starved test run may take a minute
            // between the write and the read.
            #expect((t1.json["ttl"] as? Int).map { (2...3600).contains($0) } == true)
            #expect(t1.json["expires_at"] is String)
            let t2 = try c.request("GET", "/v1/kv/t2?raw")
            #expect(t2.headers["x-logkv-ttl"].flatMap(Int.init).map { (2...1800).contains($0) } == true)
            #expect(try c.request("PUT", "/v1/kv/short?ttl=1", body: utf8("v")).status == 204)
            try await Task.sleep(for: .milliseconds(1100))
            #expect(try c.request("GET", "/v1/kv/short").status == 404)
        }
    }

    @Test func patchRefreshesTheTTLWithoutRewritingTheValueOrItsVersion() async throws {
        try await withServer { s in
            let c = try s.client()
            // Renewed within its 1-second lease (a starved test run may miss
            // it: then, as a lease holder would, write it again and renew).
            var etag = ""
            var renewed = HTTPTestClient.Response(status: 0, headers: [:], body: [])
            for _ in 0..<5 where renewed.status != 200 {
                let put = try c.request("PUT", "/v1/kv/lease?ttl=1", body: utf8("holder"))
                etag = try #require(put.headers["etag"])
                renewed = try c.request("PATCH", "/v1/kv/lease?ttl=3600", headers: ["If-Match": etag])
            }
            #expect(renewed.status == 200)
            #expect(renewed.headers["etag"] == etag)
            #expect(renewed.json["success"] as? Bool == true)
            #expect(renewed.json["ttl"] as? Int == 3600)
            #expect(renewed.json["expires_at"] is String)
            try await Task.sleep(for: .milliseconds(1100))  // past the value's own TTL
            let read = try c.request("GET", "/v1/kv/lease?raw")
            #expect(read.status == 200)
            #expect(read.text == "holder")
            #expect(read.headers["etag"] == etag)
            // Renewed to an hour, not the value's own 1 s. An hour, not a
            // minute: a fresh-clone CI run resumed this test's 1.1 s sleep
            // more than 60 s late (the suites beside it held the cooperative
            // threads), and the GET then rightly found the renewal expired
            // (`X-Logkv-Index` 5: the expiry of the renewal, seq 2).
            #expect(read.headers["x-logkv-ttl"].flatMap(Int.init).map { (2...3600).contains($0) } == true, "\(read.headers)")
            // ttl=0 removes the TTL.
            #expect(try c.request("PATCH", "/v1/kv/lease?ttl=0").status == 200)
            #expect(try c.request("GET", "/v1/kv/lease?raw").headers["x-logkv-ttl"] == nil)
            // A stale version, a missing key, bad input.
            #expect(try c.request("PATCH", "/v1/kv/lease?ttl=5", headers: ["If-Match": "\"999999\""]).status == 412)
            let missing = try c.request("PATCH", "/v1/kv/nobody?ttl=5")
            #expect(missing.status == 404)
            #expect(missing.json["success"] as? Bool == false)
            // The seed's suite: a bare PATCH is 405 with Allow.
            let bare = try c.request("PATCH", "/v1/kv/foo")
            #expect(bare.status == 405)
            #expect(bare.headers["allow"]?.contains("GET") == true)
            for query in ["?ttl=-1", "?ttl=abc", "?ttl=1.5"] {
                let bad = try c.request("PATCH", "/v1/kv/lease\(query)")
                #expect(bad.status == 400, "PATCH \(query)")
                #expect(bad.json["message"] is String)
            }
            #expect(try c.request("GET", "/v1/kv/lease?raw").headers["x-logkv-ttl"] == nil)
        }
    }

    @Test(arguments: [
        (#"{"key":"k","value":"v","ttl":0}"#, "ttl must be positive"),
        (#"{"key":"k","value":"v","ttl":-5}"#, "ttl must be positive"),
        (#"{"key":"k","value":"v","ttl":1.5}"#, "must be an integer"),
        (#"{"key":"k","value":"v","ttl":1.0}"#, "must be an integer"),
        (#"{"key":"k","value":"v","ttl":"10"}"#, "must be an integer"),
        (#"{"key":"k","value":"v","ttl":null}"#, "must not be null"),
        (#"{"key":"k","value":"v","encoding":null}"#, "must not be null"),
        (#"{"key":"k"}"#, "\"value\" is required"),
        (#"{"value":"v"}"#, "\"key\" is required"),
        (#"{"key":"","value":"v"}"#, "must not be empty"),
        (#"{"key":1,"value":"v"}"#, "wrong type"),
        (#"[1,2]"#, "wrong type"),
        (#"{"key":"k","value":"v""#, "malformed JSON body"),
        (#"{"key":"k","value":"%%%","encoding":"base64"}"#, "not valid base64"),
    ])
    func badJSONWritesAre400AndWriteNothing(body: String, message: String) async throws {
        try await withServer { s in
            let c = try s.client()
            let r = try c.request("PUT", "/v1/kv", json: body)
            #expect(r.status == 400, "\(body)")
            #expect(r.json["success"] as? Bool == false)
            #expect((r.json["message"] as? String)?.contains(message) == true, "\(r.text)")
            #expect(try s.store.stats().lastSeq == 0)
        }
    }

    @Test func badTTLInQueryIs400() async throws {
        try await withServer { s in
            let c = try s.client()
            #expect(try c.request("PUT", "/v1/kv/k?ttl=abc", body: utf8("v")).status == 400)
            #expect(try c.request("PUT", "/v1/kv/k?ttl=0", body: utf8("v")).status == 400)
            #expect(try c.request("PUT", "/v1/kv/k?ttl=999999999999", body: utf8("v")).status == 400)
        }
    }

    @Test func oversizeKeyOrValueIs413WithJSON() async throws {
        var options = LogKVOptions()
        options.fsync = .never
        options.maxKeySize = 16
        options.maxValueSize = 1024
        try await withServer(options: options) { s in
            let c = try s.client()
            let bigKey = String(repeating: "k", count: 17)
            let r1 = try c.request("PUT", "/v1/kv/\(bigKey)", body: utf8("v"))
            #expect(r1.status == 413)
            #expect(r1.json["success"] as? Bool == false)
            let r2 = try c.request("PUT", "/v1/kv/k", body: Array(repeating: 1, count: 1025))
            #expect(r2.status == 413)
            #expect((r2.json["message"] as? String)?.contains("1025") == true)
            // A body far over any limit is refused before it is read.
            let r3 = try s.client().request("PUT", "/v1/kv/k", body: Array(repeating: 1, count: 200_000))
            #expect(r3.status == 413)
            #expect(r3.json["success"] as? Bool == false)
            #expect(try s.client().request("GET", "/v1/kv/k").status == 404)
        }
    }

    @Test func wrongMethodIs405WithAllow() async throws {
        try await withServer { s in
            let r = try s.client().request("POST", "/v1/kv/x")
            #expect(r.status == 405)
            #expect(r.headers["allow"]?.contains("GET") == true)
            #expect(r.json["success"] as? Bool == false)
            #expect(try s.client().request("DELETE", "/v1/keys").status == 405)
            #expect(try s.client().request("GET", "/nowhere").status == 404)
        }
    }

    @Test func conditionalWritesUseETags() async throws {
        try await withServer { s in
            let c = try s.client()
            let created = try c.request("PUT", "/v1/kv/cas", headers: ["If-None-Match": "*"], body: utf8("1"))
            #expect(created.status == 204)
            let etag = try #require(created.headers["etag"])
            #expect(try c.request("PUT", "/v1/kv/cas", headers: ["If-None-Match": "*"], body: utf8("x")).status == 412)
            let swapped = try c.request("PUT", "/v1/kv/cas", headers: ["If-Match": etag], body: utf8("2"))
            #expect(swapped.status == 204)
            let stale = try c.request("PUT", "/v1/kv/cas", headers: ["If-Match": etag], body: utf8("3"))
            #expect(stale.status == 412)
            #expect(stale.json["success"] as? Bool == false)
            #expect(try c.request("GET", "/v1/kv/cas?raw").text == "2")
            #expect(try c.request("GET", "/v1/kv/cas", headers: ["If-None-Match": swapped.headers["etag"]!]).status == 304)
            #expect(try c.request("DELETE", "/v1/kv/cas", headers: ["If-Match": etag]).status == 412)
            #expect(try c.request("DELETE", "/v1/kv/cas", headers: ["If-Match": swapped.headers["etag"]!]).status == 204)
            #expect(try c.request("PUT", "/v1/kv/none", headers: ["If-Match": "*"], body: utf8("x")).status == 412)
        }
    }

    @Test func listingPagesInKeyOrderWithPrefixAndCursor() async throws {
        try await withServer(configure: { $0.defaultPageSize = 4 }) { s in
            let c = try s.client()
            for i in 0..<10 { _ = try c.request("PUT", "/v1/kv/p/\(i)", body: utf8("v")) }
            _ = try c.request("PUT", "/v1/kv/q", body: utf8("v"))
            var keys: [String] = []
            var after = ""
            while true {
                let page = try c.request("GET", "/v1/keys?prefix=p/&after=\(percentEncode(utf8(after)))").json
                #expect(page["success"] as? Bool == true)
                let batch = page["keys"] as? [String] ?? []
                #expect(batch.count <= 4)
                keys += batch
                guard let next = page["next_after"] as? String else { break }
                after = next
            }
            #expect(keys == (0..<10).map { "p/\($0)" })
            let all = try c.request("GET", "/v1/keys?limit=100").json["keys"] as? [String]
            #expect(all?.count == 11)
            #expect(try c.request("GET", "/v1/keys?limit=0").status == 400)
        }
    }

    @Test func statsHasSeedFields() async throws {
        try await withServer { s in
            let c = try s.client()
            _ = try c.request("PUT", "/v1/kv/a", body: utf8("v"))
            try s.store.flushIndex()
            let stats = try c.request("GET", "/v1/stats").json
            #expect(stats["total_keys"] as? Int == 1)
            #expect((stats["total_size"] as? Int ?? 0) > 0)
            #expect(stats["segments"] as? Int == 1)
        }
    }

    @Test func batchRunsEveryOperationAndReportsEach() async throws {
        try await withServer { s in
            let c = try s.client()
            let body = #"{"ops":[{"op":"put","key":"a","value":"1"},{"op":"put","key":"b","value":"2","ttl":60},{"op":"get","key":"a"},{"op":"delete","key":"a"},{"op":"delete","key":"zz"},{"op":"get","key":"a"}]}"#
            let r = try c.request("POST", "/v1/batch", json: body)
            #expect(r.status == 200)
            let results = r.json["results"] as? [[String: Any]] ?? []
            #expect(results.map { $0["status"] as? Int } == [204, 204, 200, 204, 404, 404])
            #expect(results[2]["value"] as? String == "1")
            #expect(try c.request("GET", "/v1/kv/b?raw").text == "2")
            // One bad operation refuses the whole batch before anything runs.
            let bad = try c.request("POST", "/v1/batch", json: #"{"ops":[{"op":"put","key":"c","value":"1"},{"op":"explode","key":"d"}]}"#)
            #expect(bad.status == 400)
            #expect((bad.json["message"] as? String)?.contains("operation 1") == true)
            #expect(try c.request("GET", "/v1/kv/c").status == 404)
        }
    }

    @Test func authGuardsEverythingButHealthAndMetrics() async throws {
        try await withServer(token: "s3cret") { s in
            let c = try s.client()
            #expect(try c.request("GET", "/health").status == 200)
            #expect(try c.request("GET", "/metrics").status == 200)
            let denied = try c.request("PUT", "/v1/kv/a", body: utf8("v"))
            #expect(denied.status == 401)
            #expect(denied.json["success"] as? Bool == false)
            #expect(denied.headers["www-authenticate"] != nil)
            // Refused on the head: the body is never read, so the connection closes.
            #expect(denied.headers["connection"] == "close")
            let c2 = try s.client()
            #expect(try c2.request("GET", "/v1/kv/a", headers: ["Authorization": "Bearer wrong"]).status == 401)
            // Without a body the connection stays usable; the scheme is case-insensitive.
            #expect(try c2.request("GET", "/v1/kv/a", headers: ["Authorization": "bearer s3cret"]).status == 404)
            #expect(try c2.request("GET", "/v1/kv/a", headers: ["Authorization": "BEARER s3cret"]).status == 404)
            let ok = try c2.request("PUT", "/v1/kv/a", headers: ["Authorization": "Bearer s3cret"], body: utf8("v"))
            #expect(ok.status == 204)
            #expect(try c2.request("GET", "/v1/kv/a?raw", headers: ["Authorization": "Bearer s3cret"]).text == "v")
        }
    }

    @Test func adminCompactStartsACompactionBehindTheToken() async throws {
        try await withServer(token: "t") { s in
            let c = try s.client()
            let auth = ["Authorization": "Bearer t"]
            for round in 0..<3 {
                for i in 0..<50 { _ = try c.request("PUT", "/v1/kv/k\(i)", headers: auth, body: utf8("round \(round)")) }
            }
            #expect(try c.request("POST", "/v1/admin/compact").status == 401)
            let before = try s.store.stats()
            let r = try c.request("POST", "/v1/admin/compact", headers: auth)
            #expect(r.status == 202)
            #expect(r.json["success"] as? Bool == true)
            #expect(try eventually { try s.store.stats().deadBytes < before.deadBytes })
            #expect(try c.request("GET", "/v1/kv/k7?raw", headers: auth).text == "round 2")
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await withServer { s in
            let c = try s.client()
            var bytes: [UInt8] = []
            for i in 0..<20 { bytes += HTTPTestClient.encode("PUT", "/v1/kv/pipe\(i)", body: utf8("v\(i)")) }
            for i in 0..<20 { bytes += HTTPTestClient.encode("GET", "/v1/kv/pipe\(i)?raw") }
            try c.sendRaw(bytes)
            for _ in 0..<20 { #expect(try c.readResponse().status == 204) }
            for i in 0..<20 { #expect(try c.readResponse().text == "v\(i)") }
        }
    }

    @Test func pipelinedRequestsAnsweredFromThePoolStayInOrderAndAMalformedOneEndsTheConnectionAfterThem() async throws {
        try await withServer { s in
            let c = try s.client()
            var bytes: [UInt8] = []
            for i in 0..<10 {
                bytes += HTTPTestClient.encode("PUT", "/v1/kv/p\(i)", body: utf8("v\(i)"))  // on the event loop
                bytes += HTTPTestClient.encode("DELETE", "/v1/kv/gone\(i)")  // on the blocking pool: 404
                bytes += HTTPTestClient.encode("GET", "/metrics")  // on the blocking pool
                bytes += HTTPTestClient.encode("GET", "/v1/kv/p\(i)?raw")
            }
            bytes += Array("NOT HTTP\r\n\r\n".utf8)
            try c.sendRaw(bytes)
            for i in 0..<10 {
                #expect(try c.readResponse().status == 204)
                #expect(try c.readResponse().status == 404)
                #expect(try c.readResponse().headers["content-type"]?.hasPrefix("text/plain") == true)
                #expect(try c.readResponse().text == "v\(i)")
            }
            let malformed = try c.readResponse()
            #expect(malformed.status == 400)
            #expect(malformed.headers["connection"] == "close")
            #expect(malformed.json["success"] as? Bool == false)
        }
    }

    @Test func answersAreFramedByTheirStatusMethodAndVersion() async throws {
        try await withServer { s in
            let c = try s.client()
            // 204: neither a length nor a body.
            let put = try c.request("PUT", "/v1/kv/framed", body: utf8("value"))
            #expect(put.status == 204 && put.headers["content-length"] == nil)
            // HEAD: the length of the body a GET would carry, and no body.
            try c.sendRaw(HTTPTestClient.encode("HEAD", "/v1/kv/missing"))
            let head = try c.readResponse(method: "HEAD")
            let get = try c.request("GET", "/v1/kv/missing")
            #expect(head.status == 404 && get.status == 404)
            #expect(head.headers["content-length"] == String(get.body.count))
            #expect(try c.request("GET", "/v1/kv/framed?raw").text == "value")  // nothing left over from HEAD
            // HTTP/1.0 asking for keep-alive is told so and kept open; without it, closed.
            let old = try s.client()
            try old.sendRaw(Array("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".utf8))
            #expect(try old.readResponse().headers["connection"] == "keep-alive")
            try old.sendRaw(Array("GET /health HTTP/1.0\r\n\r\n".utf8))
            let last = try old.readResponse()
            #expect(last.text == "ok" && last.headers["connection"] == "close")
        }
    }

    @Test func fullDiskAnswers503() {
        #expect(APIError.from(LogKVError.diskFull).status == .serviceUnavailable)
        #expect(APIError.from(LogKVError.readOnly(reason: "x")).status == .serviceUnavailable)
        #expect(APIError.from(LogKVError.corruption(segment: 1, offset: 2, reason: "x")).status == .internalServerError)
    }

    @Test func manyConcurrentClientsEachGetTheirOwnKeysValue() async throws {
        try await withServer { s in
            let c = try s.client()
            for i in 0..<200 {
                let value = String(repeating: Character(UnicodeScalar(UInt8(65 + i % 26))), count: 100 + i)
                _ = try c.request("PUT", "/v1/kv/key\(i)", body: utf8("key\(i)=" + value))
            }
            try await withThrowingTaskGroup(of: Int.self) { group in
                for worker in 0..<16 {
                    group.addTask {
                        let client = try s.client()
                        var wrong = 0
                        for j in 0..<150 {
                            let i = (worker * 37 + j * 11) % 200
                            let r = try client.request("GET", "/v1/kv/key\(i)?raw")
                            if !r.text.hasPrefix("key\(i)=") || r.body.count != "key\(i)=".utf8.count + 100 + i { wrong += 1 }
                        }
                        return wrong
                    }
                }
                var wrong = 0
                for try await w in group { wrong += w }
                #expect(wrong == 0)
            }
        }
    }
}
