import Foundation
import LogKVTestSupport
import Testing
@testable import LogKV

/// TTL refresh (lease renewal): a small record naming the value's version
/// gives the key a new expiry; the value and its version stay. It must hold
/// through restarts, crashes, compaction and full rebuilds, and never bring
/// back a value its expiry ended.
@Suite struct TTLRefreshTests {
    static func options(_ clock: ManualClock) -> LogKVOptions {
        var options = LogKVOptions.testing(clock: clock)
        options.segmentSize = 16 * 1024
        options.autoCompaction = false
        options.compactionBytesPerSecond = 0
        options.expirySweepPerSecond = 0
        options.logger.logLevel = .critical
        return options
    }

    /// A copy of the directory as a process crash leaves it (no close).
    @Test func refreshKeepsTheValueAndItsVersionAndMovesOnlyTheExpiry() throws {
        let clock = ManualClock()
        let dir = TempDir("ttl")
        let store = try LogKV(path: dir.path, options: Self.options(clock))
        defer { try? store.close() }
        let version = try store.put(bytes("lease"), bytes("holder-1"), expiresAt: clock.now + 1_000)
        #expect(try store.refreshTTL(bytes("lease"), expiresAt: clock.now + 60_000) == version)
        clock.advance(5_000)  // past the value's own expiry
        let read = try #require(try store.get(bytes("lease")))
        #expect(read.value == bytes("holder-1"))
        #expect(read.seq == version)
        #expect(read.expiresAt == clock.now - 5_000 + 60_000)
        clock.advance(60_000)
        #expect(try store.get(bytes("lease")) == nil)
    }

    @Test func refreshWithoutAnExpiryMakesTheKeyPermanent() throws {
        let clock = ManualClock()
        let dir = TempDir("ttl")
        let store = try LogKV(path: dir.path, options: Self.options(clock))
        defer { try? store.close() }
        try store.put(bytes("k"), bytes("v"), expiresAt: clock.now + 1_000)
        #expect(try store.refreshTTL(bytes("k"), expiresAt: nil) != nil)
        clock.advance(1_000_000)
        #expect(try store.get(bytes("k"))?.expiresAt == nil)
        #expect(try store.get(bytes("k"))?.value == bytes("v"))
    }

    @Test func refreshOfAMissingDeletedOrExpiredKeyWritesNothing() throws {
        let clock = ManualClock()
        let dir = TempDir("ttl")
        let store = try LogKV(path: dir.path, options: Self.options(clock))
        defer { try? store.close() }
        try store.put(bytes("gone"), bytes("v"))
        try store.delete(bytes("gone"))
        try store.put(bytes("old"), bytes("v"), expiresAt: clock.now + 10)
        clock.advance(20)
        let before = try store.stats().lastSeq
        for key in ["never", "gone", "old"] {
            #expect(try store.refreshTTL(bytes(key), expiresAt: clock.now + 60_000) == nil, "\(key)")
            #expect(try store.get(bytes(key)) == nil, "\(key)")
        }
        #expect(try store.stats().lastSeq == before)
    }

    @Test func refreshIsConditionalOnTheValuesVersion() throws {
        let clock = ManualClock()
        let dir = TempDir("ttl")
        let store = try LogKV(path: dir.path, options: Self.options(clock))
        defer { try? store.close() }
        let version = try store.put(bytes("k"), bytes("v"))
        #expect(throws: LogKVError.preconditionFailed(currentSeq: version)) {
            try store.refreshTTL(bytes("k"), expiresAt: clock.now + 1_000, condition: .ifVersion(version + 1))
        }
        #expect(try store.get(bytes("k"))?.expiresAt == nil)
        #expect(try store.refreshTTL(bytes("k"), expiresAt: clock.now + 1_000, condition: .ifVersion(version)) == version)
        // The version did not change: the same condition holds again.
        #expect(try store.refreshTTL(bytes("k"), expiresAt: nil, condition: .ifVersion(version)) == version)
    }

    @Test func aRefreshCostsAFewDozenBytesWhateverTheValueSize() throws {
        let clock = ManualClock()
        let dir = TempDir("ttl")
        var options = Self.options(clock)
        options.segmentSize = 1 << 20
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        try store.put(bytes("big"), [UInt8](repeating: 7, count: 200_000))
        let before = try store.stats().totalBytes
        try store.refreshTTL(bytes("big"), expiresAt: clock.now + 1_000)
        let grown = try store.stats().totalBytes - before
        #expect(grown == Int64(RecordFormat.recordHeaderSize + 3 + RecordFormat.ttlRefreshValueSize))
    }

    @Test func aRefreshedValueOutlivesItsOwnExpiryThroughCompactionRestartAndRebuild() throws {
        let clock = ManualClock()
        let dir = TempDir("ttl")
        var store = try LogKV(path: dir.path, options: Self.options(clock))
        for i in 0..<200 { try store.put(bytes("k\(i)"), bytes("v\(i)"), expiresAt: clock.now + 1_000) }
        for i in 0..<100 { try store.refreshTTL(bytes("k\(i)"), expiresAt: i % 2 == 0 ? nil : clock.now + 3_600_000) }
        clock.advance(2_000)  // every value's own expiry has passed
        try store.compact(everything: true)
        func expectRefreshedAlive(_ store: LogKV, _ label: String) throws {
            for i in 0..<200 {
                let got = try store.get(bytes("k\(i)"))?.value
                #expect(got == (i < 100 ? bytes("v\(i)") : nil), "\(label): k\(i)")
            }
        }
        try expectRefreshedAlive(store, "after compaction")
        try store.close()
        store = try LogKV(path: dir.path, options: Self.options(clock))
        try expectRefreshedAlive(store, "after restart")
        try store.close()
        #expect(try LogKV.check(path: dir.path).isHealthy)
        try FileManager.default.removeItem(atPath: dir.indexPath)
        store = try LogKV(path: dir.path, options: Self.options(clock))
        try expectRefreshedAlive(store, "after rebuild")
        try store.close()
    }

    @Test func anExpiredRefreshNeverBringsBackTheValueItRenewed() throws {
        // The value itself never expires; the refresh gave it one that has
        // passed. Dropping the refresh anywhere would resurrect the value.
        let clock = ManualClock()
        let dir = TempDir("ttl")
        var store = try LogKV(path: dir.path, options: Self.options(clock))
        try store.put(bytes("lease"), bytes("forever"))
        try store.put(bytes("other"), [UInt8](repeating: 1, count: 5_000))
        try store.refreshTTL(bytes("lease"), expiresAt: clock.now + 100)
        for round in 0..<6 { try store.put(bytes("other"), [UInt8](repeating: UInt8(round), count: 5_000)) }
        clock.advance(200)
        #expect(try store.get(bytes("lease")) == nil)
        try store.compact(everything: true)
        try store.sweepExpired(limit: 100)
        try store.compact(everything: true)
        #expect(try store.get(bytes("lease")) == nil)
        try store.close()
        try FileManager.default.removeItem(atPath: dir.indexPath)
        store = try LogKV(path: dir.path, options: Self.options(clock))
        #expect(try store.get(bytes("lease")) == nil)
        #expect(try store.get(bytes("other"))?.value.first == 5)
        try store.close()
        var dumped: [String] = []
        try LogKV.forEachLiveRecord(readOnlyPath: dir.path, now: clock.now) { key, _ in
            dumped.append(String(decoding: key, as: UTF8.self))
        }
        #expect(dumped == ["other"])
    }

    @Test func refreshesInTheLogTailAreReplayedAfterACrash() throws {
        let clock = ManualClock()
        let dir = TempDir("ttl")
        var options = Self.options(clock)
        options.flushIntervalMillis = 60_000  // the refreshes stay unindexed
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        try store.put(bytes("indexed"), bytes("a"), expiresAt: clock.now + 1_000)
        try store.flushIndex()
        try store.refreshTTL(bytes("indexed"), expiresAt: clock.now + 100_000)
        try store.put(bytes("tail"), bytes("b"), expiresAt: clock.now + 1_000)
        try store.refreshTTL(bytes("tail"), expiresAt: nil)
        try store.refreshTTL(bytes("tail"), expiresAt: clock.now + 50_000)
        let copy = try dir.crashCopy()
        clock.advance(10_000)
        for tailInMemory in [true, false] {
            let image = try copy.crashCopy()
            if !tailInMemory { try FileManager.default.removeItem(atPath: image.indexPath) }
            let reopened = try LogKV(path: image.path, options: Self.options(clock))
            #expect(try reopened.get(bytes("indexed"))?.expiresAt == clock.now - 10_000 + 100_000)
            #expect(try reopened.get(bytes("tail"))?.expiresAt == clock.now - 10_000 + 50_000)
            try reopened.flushIndex()
            try reopened.close()
            #expect(try LogKV.check(path: image.path).isHealthy)
        }
    }

    @Test func aDirectoryWrittenBeforeRefreshesExistedOpensAndTakesThem() throws {
        let clock = ManualClock()
        let dir = TempDir("ttl-v2")
        var store = try LogKV(path: dir.path, options: Self.options(clock))
        try store.put(bytes("k"), bytes("v"), expiresAt: clock.now + 1_000)
        try store.close()
        // Make it what the previous release wrote: version 2 segment headers
        // and an index at schema version 1 (no ttl_seq).
        for path in dir.segmentFiles() {
            var file = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            var header = try #require(RecordCodec.parseSegmentHeader(file))
            header.version = 2
            var encoded = RecordCodec.segmentHeader(header)
            encoded.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(2).littleEndian, toByteOffset: 8, as: UInt32.self) }
            let crc = encoded.withUnsafeBytes { CRC32.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<60])) }
            encoded.withUnsafeMutableBytes { $0.storeBytes(of: crc.littleEndian, toByteOffset: 60, as: UInt32.self) }
            file.replaceSubrange(0..<encoded.count, with: encoded)
            try Data(file).write(to: URL(fileURLWithPath: path))
            #expect(RecordCodec.parseSegmentHeader(file)?.version == 2)
        }
        do {
            let db = try SQLiteConnection(path: dir.indexPath)
            try db.exec("ALTER TABLE keydir DROP COLUMN ttl_seq; PRAGMA user_version = 1")
        }
        store = try LogKV(path: dir.path, options: Self.options(clock))
        #expect(try store.get(bytes("k"))?.value == bytes("v"))
        #expect(try store.refreshTTL(bytes("k"), expiresAt: nil) != nil)
        clock.advance(5_000)
        #expect(try store.get(bytes("k"))?.value == bytes("v"))
        try store.close()
        let report = try LogKV.check(path: dir.path)
        #expect(report.isHealthy, "\(report.problems)")
    }

    @Test func aRefreshMadeWhileCompactionMovesItsValueKeepsBothTheValueAndTheExpiry() throws {
        // The refresh reaches memory after compaction copied the value and
        // before its index commit: it must not point readers, or the index,
        // at the segment compaction then removes.
        let clock = ManualClock()
        let dir = TempDir("ttl-race")
        var options = Self.options(clock)
        options.flushIntervalMillis = 60_000  // the refresh stays in memory
        let store = LockedBox<LogKV?>(nil)
        options.compactionFailpoint = { step in
            if step == "outputs-synced", let s = store.get() {
                _ = try s.refreshTTL(bytes("k"), expiresAt: clock.now + 3_600_000)
            }
        }
        let opened = try LogKV(path: dir.path, options: options)
        store.set(opened)
        try opened.put(bytes("k"), bytes("value"), expiresAt: clock.now + 1_000)
        for i in 0..<50 { try opened.put(bytes("filler"), bytes("f\(i)")) }
        try opened.compact(everything: true)
        store.set(nil)
        clock.advance(5_000)  // past the value's own expiry
        #expect(try opened.get(bytes("k"))?.value == bytes("value"))
        try opened.flushIndex()
        #expect(try opened.get(bytes("k"))?.value == bytes("value"))
        try opened.compact(everything: true)
        #expect(try opened.get(bytes("k"))?.value == bytes("value"))
        try opened.close()
        let report = try LogKV.check(path: dir.path)
        #expect(report.isHealthy, "\(report.problems)")
        try FileManager.default.removeItem(atPath: dir.indexPath)
        let rebuilt = try LogKV(path: dir.path, options: Self.options(clock))
        #expect(try rebuilt.get(bytes("k"))?.value == bytes("value"))
        try rebuilt.close()
    }

    @Test func liveRefreshRecordsAreLiveBytesSoCompactedSegmentsAreNotCompactedAgain() throws {
        let clock = ManualClock()
        let dir = TempDir("ttl-live")
        let store = try LogKV(path: dir.path, options: Self.options(clock))
        defer { try? store.close() }
        for i in 0..<100 { try store.put(bytes("k\(i)"), bytes("v\(i)"), expiresAt: clock.now + 60_000) }
        for round in 0..<5 {
            for i in 0..<100 { try store.refreshTTL(bytes("k\(i)"), expiresAt: clock.now + 60_000 + Int64(round)) }
        }
        let first = try store.compact(everything: true)
        #expect(first.segmentsCompacted > 0)
        let stats = try store.stats()
        // Only segment headers are not live now.
        #expect(stats.deadBytes <= Int64(stats.segments * RecordFormat.segmentHeaderSize), "\(stats)")
        let again = try store.compact(everything: true)
        #expect(again.segmentsCompacted == 0, "compacted again: \(again)")
        for i in 0..<100 { #expect(try store.get(bytes("k\(i)"))?.expiresAt == clock.now + 60_004) }
    }

    /// Rules 9 and 10: a power loss may keep a refresh and lose the value it
    /// names (they sit on different pages). Both were written after the last
    /// sync, so both belong to the unsynced tail: the refresh is dropped with
    /// the value it names (and so is everything written after them), and the
    /// older, synced value stays. Replay, a rebuild and `check` agree.
    @Test func aRefreshWhoseValueAPowerLossTookIsDroppedWithItAndNeverHidesTheSyncedValue() throws {
        let clock = ManualClock()
        let dir = TempDir("ttl-lost")
        var options = Self.options(clock)
        options.segmentSize = 1 << 20
        options.flushIntervalMillis = 60_000
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        try store.put(bytes("k"), bytes("old"))
        try store.flushIndex()  // synced and indexed
        try store.put(bytes("k"), [UInt8](repeating: 0x41, count: 300))
        try store.refreshTTL(bytes("k"), expiresAt: clock.now + 60_000)
        try store.put(bytes("after"), bytes("x"))
        let image = try dir.crashCopy()
        // The page under the middle of the newer value's record is lost.
        let segment = image.segmentFiles().last!
        var data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: segment)))
        let at = data.count - 43 - 46 - 150  // after: 43 bytes, the refresh: 46, the value: 338
        for i in at..<(at + 20) { data[i] = 0 }
        try Data(data).write(to: URL(fileURLWithPath: segment))
        let checked = try LogKV.check(path: image.path)
        #expect(checked.problems.contains { $0.contains("unsynced tail") && $0.contains("2 intact records") },
                "\(checked.problems)")
        let reopened = try LogKV(path: image.path, options: Self.options(clock))
        #expect(try reopened.get(bytes("k"))?.value == bytes("old"))
        #expect(try reopened.get(bytes("after")) == nil, "written after the lost value: not part of the surviving prefix")
        try reopened.close()
        let report = try LogKV.check(path: image.path)
        #expect(report.isHealthy, "\(report.problems)")
        try FileManager.default.removeItem(atPath: image.indexPath)
        let rebuilt = try LogKV(path: image.path, options: Self.options(clock))
        #expect(try rebuilt.get(bytes("k"))?.value == bytes("old"))
        #expect(try rebuilt.get(bytes("after")) == nil)
        try rebuilt.close()
    }

    @Test func anExpiryNoticedWhileARefreshJudgedBeforeItIsInFlightIsNotPublished() throws {
        // The refresh reads its clock before the value expires; a read after
        // the expiry, while the refresh is still on its way, must not make
        // the index drop the key (the refresh would then renew nothing).
        let clock = ManualClock()
        let inside = DispatchSemaphore(value: 0), proceed = DispatchSemaphore(value: 0)
        let refresherClock = LockedBox<Int64?>(nil)
        let refresherThread = LockedBox<pthread_t?>(nil)
        var options = Self.options(clock)
        options.clock = {
            if let id = refresherThread.get(), pthread_equal(id, pthread_self()) != 0, let t = refresherClock.get() {
                refresherClock.set(nil)
                inside.signal()
                proceed.wait()
                return t
            }
            return clock.now
        }
        let dir = TempDir("ttl-inflight")
        let store = try LogKV(path: dir.path, options: options)
        defer { try? store.close() }
        try store.put(bytes("lease"), bytes("held"), expiresAt: clock.now + 100)
        try store.flushIndex()
        refresherClock.set(clock.now + 50)  // judged before the expiry
        let result = LockedBox<UInt64??>(nil)
        let refresher = Thread {
            refresherThread.set(pthread_self())
            result.set(.some(try? store.refreshTTL(bytes("lease"), expiresAt: clock.now + 3_600_000)))
        }
        refresher.start()
        inside.wait()
        clock.advance(200)
        #expect(try store.get(bytes("lease")) == nil)  // expired as of now...
        #expect(store.hasWriteInFlight(bytes("lease")))  // ...but a refresh is on its way
        // Give the flusher time to index anything published meanwhile
        // (`flushIndex` would wait for the writer lock the refresh holds).
        let deadline = Date().addingTimeInterval(2)
        while (try store.stats().pendingIndexEntries) > 0 && Date() < deadline { usleep(5_000) }
        usleep(50_000)
        proceed.signal()
        while result.get() == nil { usleep(1_000) }
        #expect(result.get()! != nil, "the refresh was judged before the expiry")
        try store.flushIndex()
        #expect(try store.get(bytes("lease"))?.value == bytes("held"))
        try store.close()
        let report = try LogKV.check(path: dir.path)
        #expect(report.isHealthy, "\(report.problems)")
    }
}
