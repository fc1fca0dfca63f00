import Foundation
import LogKVTestSupport
import Testing
@testable import LogKV

@Suite struct CompactionTests {
    static func options(clock: ManualClock? = nil) -> LogKVOptions {
        var options = LogKVOptions.testing(clock: clock)
        options.segmentSize = 32 * 1024
        options.autoCompaction = false
        options.compactionBytesPerSecond = 0
        options.expirySweepPerSecond = 0  // tests sweep by hand
        return options
    }

    func directorySize(_ dir: TempDir) -> Int64 {
        dir.segmentFiles().reduce(0) { $0 + dir.size($1) }
    }

    @Test func logSegmentsPastAHeldBackCheckpointAreNeverCompacted() throws {
        // A replay after a crash starts at the index checkpoint and must find
        // every record after it: a flush may have indexed a sealed segment's
        // records while the checkpoint was held back before it (a key whose
        // synced record waited behind an unsynced rewrite), and compacting
        // that segment would leave replay with older versions only.
        let dir = TempDir("compact-held")
        let store = try LogKV(path: dir.path, options: Self.options())
        defer { try? store.close() }
        for round in 0..<4 {
            for i in 0..<300 { try store.put("k\(i)", "r\(round)-" + String(repeating: "x", count: 100)) }
        }
        try store.flushIndex()
        let logSegments = store.logSegmentIDs
        #expect(logSegments.count >= 4)
        let sealed = store.sealedLogSegmentsNow
        let everything = try store.compactionCandidates(sealedLogSegments: sealed).map(\.id)
        #expect(Set(everything) == sealed)
        // Hold the checkpoint back in the second log segment.
        let held = LogPosition(segment: logSegments[1], offset: 100)
        let candidates = try store.compactionCandidates(sealedLogSegments: sealed, checkpoint: held).map(\.id)
        #expect(candidates == [logSegments[0]])
    }

    @Test func aKeyRewrittenFasterThanTheDiskSyncsDoesNotPinTheCheckpointForever() throws {
        // Under fsync=interval such a key is never durable when a batch is
        // taken, so its older synced record holds the checkpoint back; the
        // flusher must catch up now and then, or replay grows and compaction
        // may not take the segments after it.
        let dir = TempDir("pinned")
        var options = Self.options()
        options.fsync = .interval
        options.fsyncIntervalMillis = 100
        options.segmentSize = 1 << 30  // no rotation (which syncs everything)
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        try store.put("hot", "0")
        try store.sync()
        final class Stop: @unchecked Sendable { let lock = NSLock(); var stop = false }
        let stop = Stop()
        let writer = Thread {
            var i = 0
            while !stop.lock.withLock({ stop.stop }) {
                i += 1
                _ = try? store.put("hot", "\(i)")
                if i % 50 == 0 { _ = try? store.put("other-\(i)", String(repeating: "x", count: 200)) }
            }
        }
        writer.start()
        defer { stop.lock.withLock { stop.stop = true } }
        let pinnedAt = store.indexCheckpoint
        let caughtUp = eventually(pollingEvery: 100_000) {
            store.indexCheckpoint.offset > pinnedAt.offset + 1 << 20
        }
        #expect(caughtUp, "the index checkpoint stayed at \(pinnedAt) while the log grew")
    }

    @Test func compactionShrinksToNearLiveSizeAndKeepsLatestValues() throws {
        let dir = TempDir("compact")
        let options = Self.options()
        var expected: [String: String] = [:]
        do {
            let store = try LogKV(path: dir.path, options: options)
            for round in 0..<10 {
                for i in 0..<200 {
                    let value = "r\(round)-" + String(repeating: "x", count: 100)
                    try store.put("k\(i)", value)
                    expected["k\(i)"] = value
                }
            }
            for i in stride(from: 0, to: 200, by: 2) {
                try store.delete("k\(i)")
                expected["k\(i)"] = nil
            }
            let before = directorySize(dir)
            let report = try store.compact()
            let after = directorySize(dir)
            let stats = try store.stats()
            #expect(report.segmentsCompacted > 5)
            #expect(report.keysMoved == 100)
            #expect(after < before / 8, "before \(before), after \(after)")
            #expect(stats.deadBytes < stats.liveBytes / 2 + 1024, "\(stats)")
            #expect(stats.keys == 100)
            for (key, value) in expected { #expect(try store.get(key)?.value == bytes(value)) }
            for i in stride(from: 0, to: 200, by: 2) { #expect(try store.get("k\(i)") == nil) }
            // Writes go on after compaction.
            try store.put("k0", "back")
            expected["k0"] = "back"
            try store.close()
        }
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        for (key, value) in expected { #expect(try store.get(key)?.value == bytes(value)) }
        #expect(try store.scan(limit: 1000).count == expected.count)
        // A rebuild from the compacted segments agrees too.
        try store.close()
        try FileManager.default.removeItem(atPath: dir.indexPath)
        let rebuilt = try LogKV(path: dir.path, options: options)
        defer { try? rebuilt.close() }
        for (key, value) in expected { #expect(try rebuilt.get(key)?.value == bytes(value)) }
        #expect(try rebuilt.scan(limit: 1000).count == expected.count)
    }

    @Test func tombstonesSurviveWhileAnOlderSegmentMayHoldWhatTheyHide() throws {
        let dir = TempDir("compact-tomb")
        let options = Self.options()
        let store = try LogKV(path: dir.path, options: options)
        // Segment 1 holds the value; a later segment its tombstone.
        try store.put("victim", String(repeating: "v", count: 100))
        for i in 0..<300 { try store.put("fill\(i)", String(repeating: "f", count: 200)) }
        try store.delete("victim")
        for i in 0..<300 { try store.put("fill\(i)", String(repeating: "g", count: 200)) }
        try store.flushIndex()
        // Compact only the newer segments: the tombstone must stay.
        try store.close()
        let reopened = try LogKV(path: dir.path, options: options)
        try reopened.compact()
        try reopened.close()
        try FileManager.default.removeItem(atPath: dir.indexPath)
        let rebuilt = try LogKV(path: dir.path, options: options)
        defer { try? rebuilt.close() }
        #expect(try rebuilt.get("victim") == nil)
    }

    /// Few keys and a tiny cache; then more keys than compaction forgets
    /// cached rows for at a time (it releases the lock between slices),
    /// most of them cached.
    @Test(arguments: [(64, 8 * 1024), (10_000, 4 << 20)])
    func concurrentReadersNeverSeeStaleOrMissingValuesDuringCompaction(keys: Int, cacheBytes: Int) throws {
        let dir = TempDir("compact-race")
        var options = Self.options()
        options.cacheBudgetBytes = cacheBytes
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        // Every key written, then every other key again: sealed segments
        // half garbage, half live keys for compaction to move.
        for i in 0..<keys { try store.put("key\(i)", "0" + String(repeating: "i", count: 60)) }
        for i in stride(from: 0, to: keys, by: 2) { try store.put("key\(i)", "0") }
        final class Shared: @unchecked Sendable {
            let lock = NSLock()
            var versions: [Int]
            var stop = false
            var bad = 0
            var errors: [String] = []
            init(_ n: Int) { versions = Array(repeating: 0, count: n) }
        }
        let shared = Shared(keys)
        let group = DispatchGroup()
        /// Each loop on a plain thread of its own: the loops block, and must
        /// starve neither the cooperative pool nor each other (Dispatch's
        /// pool, sized to the cores, ran only the first two loops started:
        /// readers spinning forever kept the writers from ever starting).
        func onOwnThread(_ group: DispatchGroup, _ body: @escaping @Sendable () -> Void) {
            group.enter()
            Thread { body(); group.leave() }.start()
        }
        for _ in 0..<2 {
            onOwnThread(group) {
                while !shared.lock.withLock({ shared.stop }) {
                    let k = Int.random(in: 0..<keys)
                    let floor = shared.lock.withLock { shared.versions[k] }
                    do {
                        let got = try store.get("key\(k)")
                        let version = got.map { Int(String(decoding: $0.value, as: UTF8.self).prefix { $0.isNumber }) ?? -1 } ?? -1
                        if version < floor { shared.lock.withLock { shared.bad += 1 } }
                    } catch {
                        shared.lock.withLock { shared.errors.append("\(error)") }
                    }
                }
            }
        }
        // A first compaction with the readers only: it moves the live half
        // of every segment written so far (more keys than one slice).
        var compactions = 0
        var mostMoved = 0
        let first = try store.compact()
        compactions += first.segmentsCompacted > 0 ? 1 : 0
        mostMoved = first.keysMoved
        for w in 0..<2 {
            onOwnThread(group) {
                var n = 0
                while !shared.lock.withLock({ shared.stop }) {
                    n += 1
                    let k = w * (keys / 2) + n % (keys / 2)
                    do {
                        try store.put("key\(k)", "\(n)" + String(repeating: "p", count: 150))
                        shared.lock.withLock { shared.versions[k] = n }
                    } catch {
                        shared.lock.withLock { shared.errors.append("\(error)") }
                    }
                }
            }
        }
        // Compactions that found garbage, while the writers keep making more;
        // a deadline rather than a fixed count, for slow or loaded machines.
        let deadline = Date().addingTimeInterval(20)
        while compactions < 4 && Date() < deadline {
            usleep(50_000)
            let report = try store.compact()
            compactions += report.segmentsCompacted > 0 ? 1 : 0
            mostMoved = max(mostMoved, report.keysMoved)
        }
        if keys > 4096 { #expect(mostMoved > 4096, "no compaction moved more keys than one slice") }
        shared.lock.withLock { shared.stop = true }
        group.wait()
        #expect(compactions >= 2)
        #expect(shared.bad == 0)
        #expect(shared.errors.isEmpty, "\(shared.errors.prefix(3))")
        for k in 0..<keys {
            let got = try #require(try store.get("key\(k)"))
            #expect(Int(String(decoding: got.value, as: UTF8.self).prefix { $0.isNumber }) == shared.versions[k])
        }
    }

    @Test func expiredKeysVanishFromListingsAndDiskWithoutBeingRead() throws {
        let dir = TempDir("sweep")
        let clock = ManualClock()
        let options = Self.options(clock: clock)
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        for i in 0..<500 {
            try store.put(bytes("ttl\(i)"), Array(repeating: 7, count: 200), expiresAt: clock.now + 1000)
        }
        try store.put("keeper", "v")
        try store.flushIndex()
        clock.advance(1001)
        #expect(try store.scan(limit: 1000).map(\.key) == [bytes("keeper")])
        var swept = 0
        while true {
            let n = try store.sweepExpired(limit: 100)
            if n == 0 { break }
            swept += n
            try store.flushIndex()
        }
        #expect(swept == 500)
        #expect(try store.stats().keys == 1)
        let before = directorySize(dir)
        try store.compact()
        #expect(directorySize(dir) < before / 10)
        #expect(try store.get("keeper")?.value == bytes("v"))
    }

    @Test(arguments: ["outputs-written", "outputs-synced", "index-committed", "old-segment-deleted", "finished"])
    func crashAtEveryCompactionStepLosesNothingAndLeaksNothing(step: String) throws {
        let dir = TempDir("compact-crash")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: builtProduct("LogKVCrashWriter"))
        process.arguments = [dir.path + "/data", "7", "compact-crash", step]
        try spawnSerialized(process)
        #expect(waitForExit(process) == .signaled(SIGKILL), "writer should have been killed at \(step)")
        let expectedText = try String(contentsOfFile: dir.path + "/data.expected", encoding: .utf8)
        var expected: [String: String] = [:]
        for line in expectedText.split(separator: "\n") {
            let parts = line.split(separator: "\t", maxSplits: 1)
            expected[String(parts[0])] = String(parts[1])
        }
        var options = Self.options()
        options.segmentSize = 16 * 1024
        let store = try LogKV(path: dir.path + "/data", options: options)
        defer { try? store.close() }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/data/COMPACTION"))
        for (key, value) in expected { #expect(try store.get(key)?.value == bytes(value), "\(key) after crash at \(step)") }
        let listed = try store.scan(limit: 10_000).map { String(decoding: $0.key, as: UTF8.self) }
        #expect(Set(listed) == Set(expected.keys))
        // No space leaked for good: one more compaction gets near the live size.
        try store.compact()
        let stats = try store.stats()
        #expect(stats.deadBytes <= stats.liveBytes / 2 + 4096, "\(stats)")
    }
}
