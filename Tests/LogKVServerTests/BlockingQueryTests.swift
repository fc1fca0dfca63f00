import Foundation
import LogKVTestSupport
import LogKV
@testable import LogKVServer
import Testing

/// Blocking queries (`?index=N&wait=D`): a read held until what it reads
/// changes past N, answered at once when it already has, woken only by its
/// own key or prefix.
@Suite struct BlockingQueryTests {
    /// Sends a blocking read on its own connection; the answer is read later.
    func hold(_ s: TestServer, _ path: String) throws -> HTTPTestClient {
        let c = try s.client()
        try c.sendRaw(HTTPTestClient.encode("GET", path))
        return c
    }

    /// True while no answer has arrived (waits a little to be sure).
    func stillHeld(_ c: HTTPTestClient) throws -> Bool {
        for _ in 0..<3 where !(try c.readAvailable()).isEmpty { return false }
        return true
    }

    func index(_ r: HTTPTestClient.Response) -> UInt64? { r.headers["x-logkv-index"].flatMap { UInt64($0) } }

    @Test func everyReadCarriesAnIndexThatMovesOnlyWhenItsKeyChanges() async throws {
        try await withServer { s in
            let c = try s.client()
            #expect(try c.request("PUT", "/v1/kv/a", body: utf8("1")).status == 204)
            let first = try #require(index(try c.request("GET", "/v1/kv/a")))
            #expect(index(try c.request("GET", "/v1/kv/a?raw")) == first)
            #expect(try c.request("PUT", "/v1/kv/b", body: utf8("x")).status == 204)
            #expect(index(try c.request("GET", "/v1/kv/a")) == first)
            let missing = try #require(index(try c.request("GET", "/v1/kv/nobody")))
            #expect(try c.request("PUT", "/v1/kv/c", body: utf8("x")).status == 204)
            #expect(index(try c.request("GET", "/v1/kv/nobody")) == missing, "a missing key's index is stable")
            #expect(try c.request("PUT", "/v1/kv/a", body: utf8("2")).status == 204)
            #expect(try #require(index(try c.request("GET", "/v1/kv/a"))) > first)
            #expect(index(try c.request("GET", "/v1/keys?prefix=a")) != nil)
        }
    }

    @Test func aHeldGetAnswersWhenItsKeyChangesAndNotBefore() async throws {
        try await withServer { s in
            let c = try s.client()
            #expect(try c.request("PUT", "/v1/kv/watched", body: utf8("v1")).status == 204)
            let seen = try #require(index(try c.request("GET", "/v1/kv/watched")))
            let watcher = try hold(s, "/v1/kv/watched?raw&index=\(seen)&wait=10m")
            #expect(try stillHeld(watcher))
            // Other keys, a TTL refresh of this one and a failed conditional
            // write wake nobody.
            for i in 0..<20 { #expect(try c.request("PUT", "/v1/kv/other\(i)", body: utf8("x")).status == 204) }
            #expect(try c.request("PATCH", "/v1/kv/watched?ttl=600").status == 200)
            #expect(try c.request("PUT", "/v1/kv/watched", headers: ["If-Match": "\"999999\""], body: utf8("no")).status == 412)
            #expect(try stillHeld(watcher))
            let started = Date()
            #expect(try c.request("PUT", "/v1/kv/watched", body: utf8("v2")).status == 204)
            let answer = try watcher.readResponse()
            #expect(Date().timeIntervalSince(started) < 60, "woken by the write, not by its 10-minute wait")
            #expect(answer.status == 200)
            #expect(answer.text == "v2")
            let moved = try #require(index(answer))
            #expect(moved > seen)
            // Watching again from the new index holds again; a delete answers 404.
            let again = try hold(s, "/v1/kv/watched?index=\(moved)&wait=10m")
            #expect(try stillHeld(again))
            #expect(try c.request("DELETE", "/v1/kv/watched").status == 204)
            let deleted = try again.readResponse()
            #expect(deleted.status == 404)
            #expect(try #require(index(deleted)) > moved)
            // A missing key watched from its 404's index waits for its creation.
            let created = try hold(s, "/v1/kv/watched?index=\(index(deleted)!)&wait=10m")
            #expect(try stillHeld(created))
            #expect(try c.request("PUT", "/v1/kv/watched", body: utf8("v3")).status == 204)
            #expect(try created.readResponse().json["value"] as? String == "v3")
        }
    }

    @Test func anExpiryAnswersAHeldGetWithoutAnyOtherRead() async throws {
        try await withServer { s in
            let c = try s.client()
            // The index is read while the key lives (a starved run may take
            // longer than its second between the two requests: write again).
            var read = HTTPTestClient.Response(status: 0, headers: [:], body: [])
            for _ in 0..<5 {
                #expect(try c.request("PUT", "/v1/kv/lease?ttl=1", body: utf8("me")).status == 204)
                read = try c.request("GET", "/v1/kv/lease")
                if read.status == 200 { break }
            }
            try #require(read.status == 200)
            let seen = try #require(index(read))
            let watcher = try hold(s, "/v1/kv/lease?index=\(seen)&wait=10m")
            let started = Date()
            let answer = try watcher.readResponse()
            #expect(answer.status == 404)
            #expect(try #require(index(answer)) > seen)
            #expect(Date().timeIntervalSince(started) < 60, "woken by the expiry, not by its 10-minute wait")
            // From the expiry's index it waits again.
            let next = try hold(s, "/v1/kv/lease?index=\(index(answer)!)&wait=10m")
            #expect(try stillHeld(next))
        }
    }

    @Test func aRefreshThatShortensTheTTLIsHonouredByAHeldRead() async throws {
        try await withServer { s in
            let c = try s.client()
            #expect(try c.request("PUT", "/v1/kv/lease?ttl=600", body: utf8("me")).status == 204)
            let seen = try #require(index(try c.request("GET", "/v1/kv/lease")))
            let watcher = try hold(s, "/v1/kv/lease?index=\(seen)&wait=10m")
            #expect(try stillHeld(watcher))
            // A refresh moves no index: the watcher stays, timed to the new
            // expiry (had the refresh woken it, the answer would be the
            // value, 200; had it kept the old expiry, it would wait 10 min).
            let started = Date()
            #expect(try c.request("PATCH", "/v1/kv/lease?ttl=1").status == 200)
            let answer = try watcher.readResponse()
            #expect(answer.status == 404)
            #expect(Date().timeIntervalSince(started) < 60)
        }
    }

    @Test func aReadBehindTheCurrentIndexIsAnsweredAtOnceAndWaitEndsWithTheSameIndex() async throws {
        try await withServer { s in
            let c = try s.client()
            #expect(try c.request("PUT", "/v1/kv/k", body: utf8("v")).status == 204)
            let current = try #require(index(try c.request("GET", "/v1/kv/k")))
            let behind = try c.request("GET", "/v1/kv/k?index=\(current - 1)&wait=90s")
            #expect(behind.status == 200)
            #expect(index(behind) == current)
            #expect(try c.request("GET", "/v1/kv/k?index=0").status == 200)
            let started = Date()
            let waited = try c.request("GET", "/v1/kv/k?index=\(current)&wait=1s")
            let elapsed = Date().timeIntervalSince(started)
            #expect(waited.status == 200)
            #expect(index(waited) == current)
            #expect(elapsed >= 0.95 && elapsed < 60, "waited \(elapsed) s")
        }
    }

    @Test func aHeldListingWakesOnlyForKeysUnderItsPrefix() async throws {
        try await withServer { s in
            let c = try s.client()
            #expect(try c.request("PUT", "/v1/kv/app/a", body: utf8("1")).status == 204)
            let listing = try c.request("GET", "/v1/keys?prefix=app/")
            let seen = try #require(index(listing))
            let watcher = try hold(s, "/v1/keys?prefix=app/&index=\(seen)&wait=10m")
            #expect(try stillHeld(watcher))
            for i in 0..<10 { #expect(try c.request("PUT", "/v1/kv/apple\(i)", body: utf8("x")).status == 204) }
            #expect(try stillHeld(watcher))
            #expect(try c.request("PUT", "/v1/kv/app/b", body: utf8("2")).status == 204)
            let answer = try watcher.readResponse()
            #expect(answer.status == 200)
            #expect(answer.json["keys"] as? [String] == ["app/a", "app/b"])
            #expect(try #require(index(answer)) > seen)
        }
    }

    @Test func aHeldListingAnswersWhenAKeyUnderItsPrefixExpires() async throws {
        var options = LogKVOptions()
        options.fsync = .never
        options.expirySweepPerSecond = 0  // no background sweep: the listing notices on its own
        try await withServer(options: options) { s in
            let c = try s.client()
            #expect(try c.request("PUT", "/v1/kv/jobs/b", body: utf8("2")).status == 204)
            // jobs/a must live from the listing until the hold is read: had it
            // expired unnoticed before then, the hold would find nothing left
            // to wait for. A starved run may miss that second: start again
            // (the hold, 30 s, then ends with the index it was given).
            var seen: UInt64 = 0
            var answer = HTTPTestClient.Response(status: 0, headers: [:], body: [])
            for _ in 0..<5 {
                #expect(try c.request("PUT", "/v1/kv/jobs/a?ttl=1", body: utf8("1")).status == 204)
                let listing = try c.request("GET", "/v1/keys?prefix=jobs/")
                guard listing.json["keys"] as? [String] == ["jobs/a", "jobs/b"] else { continue }
                seen = try #require(index(listing))
                answer = try hold(s, "/v1/keys?prefix=jobs/&index=\(seen)&wait=30s").readResponse()
                if index(answer) != seen { break }
            }
            #expect(answer.json["keys"] as? [String] == ["jobs/b"])
            #expect(try #require(index(answer)) > seen)
        }
    }

    @Test func aListingIndexFromBeforeARestartIsAnsweredAtOnce() async throws {
        // Listing indexes restart lower: expiries give listings indexes above
        // any write's, and a restart starts again from the last write.
        let dir = NSTemporaryDirectory() + "logkv-restart-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = LogKVOptions()
        options.fsync = .never
        options.expirySweepPerSecond = 0
        var before: UInt64 = 0
        let first = try await TestServer(options: options, dir: dir)
        do {
            let c = try first.client()
            for key in ["a", "b"] { #expect(try c.request("PUT", "/v1/kv/app/\(key)?ttl=1", body: utf8("x")).status == 204) }
            #expect(try c.request("PUT", "/v1/kv/app/c", body: utf8("x")).status == 204)
            let seen = try #require(index(try c.request("GET", "/v1/keys?prefix=app/")))
            // Answered by the expiries. The listing wakes at the first one; on a
            // loaded machine the two writes may be far enough apart that the
            // second has not come yet, so hold again from the index it gave,
            // as a client would.
            var held = try c.request("GET", "/v1/keys?prefix=app/&index=\(seen)&wait=10s")
            for _ in 0..<3 where held.json["keys"] as? [String] == ["app/b", "app/c"] {
                let next = try #require(index(held))
                held = try c.request("GET", "/v1/keys?prefix=app/&index=\(next)&wait=10s")
            }
            #expect(held.json["keys"] as? [String] == ["app/c"])
            // Both expiries are reported (the held listing may have needed one).
            for key in ["a", "b"] { #expect(try c.request("GET", "/v1/kv/app/\(key)").status == 404) }
            before = try #require(index(try c.request("GET", "/v1/keys?prefix=app/&index=0")))
        }
        try await first.stop()
        let second = try await TestServer(options: options, dir: dir)
        do {
            let c = try second.client()
            let started = Date()
            let answer = try c.request("GET", "/v1/keys?prefix=app/&index=\(before)&wait=90s")
            #expect(Date().timeIntervalSince(started) < 60, "waited \(Date().timeIntervalSince(started)) s")
            #expect(answer.json["keys"] as? [String] == ["app/c"])
            let now = try #require(index(answer))
            // From the index it was given now, it waits again.
            let waited = try c.request("GET", "/v1/keys?prefix=app/&index=\(now)&wait=1s")
            #expect(index(waited) == now)
        }
        try await second.stop()
    }

    @Test func heldQueriesAreBoundedAndEndWithTheirConnection() async throws {
        try await withServer(configure: { $0.maxHeldQueries = 2 }) { s in
            let c = try s.client()
            #expect(try c.request("PUT", "/v1/kv/k", body: utf8("v")).status == 204)
            let current = try #require(index(try c.request("GET", "/v1/kv/k")))
            var first: HTTPTestClient? = try hold(s, "/v1/kv/k?index=\(current)&wait=10m")
            let second = try hold(s, "/v1/kv/k?index=\(current)&wait=10m")
            #expect(try stillHeld(first!) && stillHeld(second))
            // Both are held before the third asks (a starved server may not
            // have read them yet).
            #expect(eventually { s.server.api.watches.held == 2 })
            let refused = try c.request("GET", "/v1/kv/k?index=\(current)&wait=90s")
            #expect(refused.status == 429)
            #expect(refused.headers["retry-after"] != nil)
            // A read that need not wait is answered even at the limit.
            #expect(try c.request("GET", "/v1/kv/k?index=0").status == 200)
            first = nil  // the client goes: its slot frees
            #expect(eventually { s.server.api.watches.held == 1 })
            _ = first
            #expect(try stillHeld(second))
        }
    }

    @Test(arguments: ["index=abc", "index=-1", "index=1&wait=5x", "index=1&wait=", "wait=5x"])
    func malformedBlockingParametersAre400(query: String) async throws {
        try await withServer { s in
            let r = try s.client().request("GET", "/v1/kv/k?\(query)")
            #expect(r.status == 400, "\(query)")
            #expect(r.json["success"] as? Bool == false)
        }
    }

    @Test func durationsAreReadAsConsulWritesThem() {
        #expect(BlockingQuery.duration("30s") == .seconds(30))
        #expect(BlockingQuery.duration("5m") == .minutes(5))
        #expect(BlockingQuery.duration("1m30s") == .seconds(90))
        #expect(BlockingQuery.duration("250ms") == .milliseconds(250))
        #expect(BlockingQuery.duration("12") == .seconds(12))
        for bad in ["", "5x", "s", "1.5s", "-1s", "5 s"] { #expect(BlockingQuery.duration(bad) == nil, "\(bad)") }
        // Huge values are cut to a day, never overflow.
        #expect(BlockingQuery.duration("999999h999999h999999h") == .hours(24))
        #expect(BlockingQuery.duration("999999ms") == .milliseconds(999_999))
    }
}
