import Foundation
import Testing
@testable import LogKV

@Suite struct RecoveryTests {
    /// Writes keys k0..k(n-1) with value "v<i>" and closes the store.
    func populate(_ dir: TempDir, count: Int = 100, options: LogKVOptions = .testing()) throws {
        let store = try LogKV(path: dir.path, options: options)
        for i in 0..<count { try store.put("k\(i)", "v\(i)") }
        try store.close()
    }

    func expectAll(_ store: LogKV, count: Int) throws {
        for i in 0..<count {
            #expect(try store.get("k\(i)")?.value == bytes("v\(i)"), "k\(i)")
        }
    }

    @Test func reopenAfterCleanCloseReplaysNothing() throws {
        let dir = TempDir()
        try populate(dir)
        let result = try Recovery.open(path: dir.path, options: .testing())
        #expect(result.report.replayedRecords == 0)
        #expect(result.report.rebuilt == false)
    }

    @Test func reopenAfterTornWriteKeepsAckedKeys() throws {
        let dir = TempDir()
        try populate(dir)
        let segment = dir.segmentFiles().last!
        let size = dir.size(segment)
        // Cut the last record in half: what a crash mid-append leaves (the
        // close ended the segment with two commit records after it).
        truncate(segment, off_t(size - 2 * Int64(RecordFormat.commitRecordSize) - 5))
        let store = try LogKV(path: dir.path, options: .testing())
        defer { try? store.close() }
        try expectAll(store, count: 99)
        #expect(try store.get("k99") == nil)
        // The store goes on working after the cut.
        try store.put("k99", "again")
        #expect(try store.get("k99")?.value == bytes("again"))
    }

    @Test func reopenAfterTornTailWithUnflushedIndexKeepsAckedKeys() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: .testing())
        for i in 0..<100 { try store.put("k\(i)", "v\(i)") }
        try store.sync()
        let copy = try dir.crashCopy()
        try store.close()
        let segment = copy.segmentFiles().last!
        let garbage: [UInt8] = [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE]
        let handle = try #require(FileHandle(forWritingAtPath: segment))
        handle.seekToEndOfFile()
        handle.write(Data(garbage))
        try handle.close()
        let reopened = try LogKV(path: copy.path, options: .testing())
        defer { try? reopened.close() }
        try expectAll(reopened, count: 100)
    }

    @Test func flippedByteSurfacesAsCorruptionOnRead() throws {
        let dir = TempDir()
        try populate(dir, count: 10)
        let segment = dir.segmentFiles().last!
        var data = try Data(contentsOf: URL(fileURLWithPath: segment))
        // Flip one value byte of the first record ("k0" -> "v0").
        let recordStart = RecordFormat.segmentHeaderSize
        data[recordStart + RecordFormat.recordHeaderSize + 2] ^= 0xFF
        try data.write(to: URL(fileURLWithPath: segment))
        let store = try LogKV(path: dir.path, options: .testing())
        defer { try? store.close() }
        #expect(throws: LogKVError.corruption(segment: 1, offset: Int64(recordStart), reason: "checksum mismatch")) {
            try store.get("k0")
        }
        #expect(try store.get("k1")?.value == bytes("v1"))
    }

    /// Rule 7: damage before intact records is never read as a torn tail.
    /// The damaged record is lost (reported), every intact record after it
    /// is kept, and the store keeps working.
    @Test func flippedByteMidSegmentKeepsEveryIntactRecordAfterIt() throws {
        let dir = TempDir()
        try populate(dir, count: 10)
        try FileManager.default.removeItem(atPath: dir.indexPath)  // force a full replay
        let segment = dir.segmentFiles().last!
        var data = try Data(contentsOf: URL(fileURLWithPath: segment))
        // A flipped bit in the first record's value_len: it now claims to
        // run past the end, as a torn tail would.
        data[RecordFormat.segmentHeaderSize + RecordFormat.recordHeaderSize - 1] ^= 0x40
        try data.write(to: URL(fileURLWithPath: segment))
        let before = try LogKV.check(path: dir.path)
        #expect(before.problems.contains { $0.contains("offset \(RecordFormat.segmentHeaderSize)") && $0.contains("intact records follow") },
                "\(before.problems)")
        let result = try Recovery.open(path: dir.path, options: .testing())
        #expect(result.report.damagedSpans == 1)
        #expect(result.report.truncatedBytes == 0)
    }

    @Test func intactRecordsAfterDamageStayReadableAcrossRestarts() throws {
        let dir = TempDir()
        try populate(dir, count: 10)
        let segment = dir.segmentFiles().last!
        var data = try Data(contentsOf: URL(fileURLWithPath: segment))
        data[RecordFormat.segmentHeaderSize + RecordFormat.recordHeaderSize - 1] ^= 0x40
        try data.write(to: URL(fileURLWithPath: segment))
        try FileManager.default.removeItem(atPath: dir.indexPath)
        for _ in 0..<2 {
            let store = try LogKV(path: dir.path, options: .testing())
            #expect(try store.get("k0") == nil)  // the damaged record
            for i in 1..<10 { #expect(try store.get("k\(i)")?.value == bytes("v\(i)"), "k\(i)") }
            try store.put("k10", "v10")
            try store.close()
        }
        #expect(try LogKV.check(path: dir.path).isHealthy)
    }

    @Test func deletedIndexIsRebuiltWithIdenticalContents() throws {
        let dir = TempDir()
        var options = LogKVOptions.testing()
        options.segmentSize = 4096
        let clock = ManualClock()
        options.clock = { clock.now }
        let store = try LogKV(path: dir.path, options: options)
        for i in 0..<300 { try store.put("k\(i % 120)", "v\(i)", expiresAt: i % 7 == 0 ? clock.now + 100_000 : nil) }
        for i in stride(from: 0, to: 120, by: 5) { try store.delete("k\(i)") }
        try store.close()
        let before = try indexDump(dir)
        for file in [dir.indexPath, dir.indexPath + "-wal", dir.indexPath + "-shm"] {
            try? FileManager.default.removeItem(atPath: file)
        }
        let result = try Recovery.open(path: dir.path, options: options)
        #expect(result.report.rebuilt)
        #expect(result.report.replayedRecords == 324)
        _ = consume result
        // Identical but for the seq high-water mark: without the old index
        // the last close cannot be known clean, so seq jumps ahead (rule 5).
        let after = try indexDump(dir)
        func checkpointFree(_ dump: [String]) -> [String] { dump.filter { !$0.hasPrefix("cp ") } }
        #expect(checkpointFree(after) == checkpointFree(before))
        let cpBefore = before.first { $0.hasPrefix("cp ") }!.split(separator: " ")
        let cpAfter = after.first { $0.hasPrefix("cp ") }!.split(separator: " ")
        #expect(cpAfter[1...2] == cpBefore[1...2])
        #expect(UInt64(cpAfter[3])! >= UInt64(cpBefore[3])! + Recovery.seqGapAfterCrash)
        #expect(dir.segmentFiles().count > 3)
    }

    /// What a process killed while a rebuild fills `keydir` leaves: the
    /// index file part-written — here down to a checkpoint row claiming the
    /// whole log — beside its hot rollback journal. The next open rolls the
    /// journal back, finds no checkpoint and rebuilds: every key, nothing
    /// from the unfinished build.
    @Test func indexKilledMidBuildIsRolledBackByItsJournalAndRebuilt() throws {
        let dir = TempDir()
        try populate(dir, count: 200)
        let (storeID, checkpoint) = try {
            let index = try IndexWriter(path: dir.indexPath)
            return (try index.storeID()!, try index.checkpoint()!)
        }()
        _ = try Recovery.freshIndex(DataDirectory(path: dir.path), storeID: storeID)
        let files = [dir.indexPath, dir.indexPath + "-journal"]
        var killed: [Data] = []
        do {
            let db = try SQLiteConnection(path: dir.indexPath)
            try db.exec("PRAGMA journal_mode=DELETE; PRAGMA cache_size=2; BEGIN IMMEDIATE")
            try db.exec("""
                INSERT INTO checkpoint(id, segment, offset, max_seq)
                VALUES (1, \(checkpoint.position.segment), \(checkpoint.position.offset), \(checkpoint.maxSeq))
                """)
            for i in 0..<5_000 {
                try db.exec("INSERT INTO keydir(key, segment, offset, length, seq) VALUES (x'\(String(format: "%08x", i))', 1, 0, 40, 1)")
            }
            // The files as a SIGKILL now would leave them (the page cache).
            killed = try files.map { try Data(contentsOf: URL(fileURLWithPath: $0)) }
            try db.exec("ROLLBACK")
        }
        // Without its journal the file would be trusted: it claims the log.
        let alone = TempDir()
        try killed[0].write(to: URL(fileURLWithPath: alone.path + "/index.sqlite"))
        #expect(try IndexWriter(path: alone.path + "/index.sqlite").checkpoint()?.maxSeq == checkpoint.maxSeq)

        for (file, data) in zip(files, killed) { try data.write(to: URL(fileURLWithPath: file)) }
        let result = try Recovery.open(path: dir.path, options: .testing())
        #expect(result.report.rebuilt)
        _ = consume result
        #expect(!FileManager.default.fileExists(atPath: dir.indexPath + "-journal"))
        let store = try LogKV(path: dir.path, options: .testing())
        defer { try? store.close() }
        #expect(try store.stats().keys == 200)
        for i in 0..<200 { #expect(try store.get("k\(i)")?.value == bytes("v\(i)")) }
    }

    @Test func indexBehindTheLogIsCaughtUpByReplay() throws {
        let dir = TempDir()
        try populate(dir, count: 50)
        let savedIndex = try Data(contentsOf: URL(fileURLWithPath: dir.indexPath))
        let store = try LogKV(path: dir.path, options: .testing())
        for i in 50..<80 { try store.put("k\(i)", "v\(i)") }
        try store.put("k0", "changed")
        try store.close()
        // Put back the older index: its checkpoint is 31 records behind.
        try savedIndex.write(to: URL(fileURLWithPath: dir.indexPath))
        let result = try Recovery.open(path: dir.path, options: .testing())
        #expect(result.report.replayedRecords == 31)
        #expect(result.report.rebuilt == false)
        _ = consume result
        let reopened = try LogKV(path: dir.path, options: .testing())
        defer { try? reopened.close() }
        #expect(try reopened.get("k0")?.value == bytes("changed"))
        for i in 1..<80 { #expect(try reopened.get("k\(i)")?.value == bytes("v\(i)")) }
        #expect(try reopened.stats().keys == 80)
    }

    @Test func logTailIsServedFromMemoryAtOnceAndReplayedAgainIfTheStoreStopsBeforeIndexingIt() throws {
        let dir = TempDir()
        try populate(dir, count: 50)
        let savedIndex = try Data(contentsOf: URL(fileURLWithPath: dir.indexPath))
        let writer = try LogKV(path: dir.path, options: .testing())
        for i in 50..<80 { try writer.put("k\(i)", "v\(i)") }
        try writer.put("k0", "changed")
        #expect(try writer.delete("k1"))
        try writer.close()
        try savedIndex.write(to: URL(fileURLWithPath: dir.indexPath))

        var slowFlusher = LogKVOptions.testing()
        slowFlusher.flushIntervalMillis = 600_000  // the tail stays unindexed
        let store = try LogKV(path: dir.path, options: slowFlusher)
        #expect(store.unindexedChangeCount == 32)
        #expect(try store.get("k0")?.value == bytes("changed"))
        #expect(try store.get("k1") == nil)
        for i in 2..<80 { #expect(try store.get("k\(i)")?.value == bytes("v\(i)")) }
        #expect(try store.stats().keys == 79)
        // Stop before the flusher indexed the tail (a copy of the files, as
        // a crash leaves them): the checkpoint did not move past it.
        let copy = try dir.crashCopy()
        try store.close()
        let again = try Recovery.open(path: copy.path, options: .testing())
        #expect(again.report.replayedRecords == 32)
        _ = consume again
        let reopened = try LogKV(path: copy.path, options: .testing())
        #expect(try reopened.get("k0")?.value == bytes("changed"))
        #expect(try reopened.get("k1") == nil)
        for i in 2..<80 { #expect(try reopened.get("k\(i)")?.value == bytes("v\(i)")) }
        try reopened.close()
        // The store that ran to its close indexed the tail: nothing to replay.
        let clean = try Recovery.open(path: dir.path, options: .testing())
        #expect(clean.report.replayedRecords == 0)
    }

    @Test func seqsHandedOutAfterACrashAreNeverHandedOutAgainAfterASecondCrash() throws {
        // Rule 5 across two crashes: the seq lease taken at the first
        // reopen is durable before that store hands out a seq.
        let dir = TempDir()
        let first = try LogKV(path: dir.path, options: .testing())
        for i in 0..<50 { try first.put("k\(i)", "v\(i)") }
        try first.sync()
        let afterFirstCrash = try dir.crashCopy()
        try first.close()

        var slowFlusher = LogKVOptions.testing()
        slowFlusher.flushIntervalMillis = 600_000
        let second = try LogKV(path: afterFirstCrash.path, options: slowFlusher)
        let segment = afterFirstCrash.segmentFiles().last!
        let sizeBefore = afterFirstCrash.size(segment)
        let handedOut = try second.put(bytes("new"), bytes("lost"))
        let afterSecondCrash = try afterFirstCrash.crashCopy()
        try second.close()
        // The second crash loses that write (it was never synced).
        truncate(afterSecondCrash.segmentFiles().last!, off_t(sizeBefore))

        let third = try LogKV(path: afterSecondCrash.path, options: .testing())
        defer { try? third.close() }
        #expect(try third.get("new") == nil)
        let next = try third.put(bytes("probe"), bytes("x"))
        #expect(next > handedOut, "seq \(next) issued again after \(handedOut)")
        for i in 0..<50 { #expect(try third.get("k\(i)")?.value == bytes("v\(i)")) }
    }

    @Test func garbageIndexFileIsRebuilt() throws {
        let dir = TempDir()
        try populate(dir, count: 20)
        for file in [dir.indexPath + "-wal", dir.indexPath + "-shm"] { try? FileManager.default.removeItem(atPath: file) }
        try Data(repeating: 0x42, count: 8192).write(to: URL(fileURLWithPath: dir.indexPath))
        let store = try LogKV(path: dir.path, options: .testing())
        defer { try? store.close() }
        try expectAll(store, count: 20)
    }

    @Test func indexFromAnotherDirectoryIsRebuilt() throws {
        let a = TempDir(), b = TempDir()
        try populate(a, count: 10)
        let store = try LogKV(path: b.path, options: .testing())
        try store.put("only-in-b", "x")
        try store.close()
        try FileManager.default.removeItem(atPath: a.indexPath)
        try FileManager.default.copyItem(atPath: b.indexPath, toPath: a.indexPath)
        let reopened = try LogKV(path: a.path, options: .testing())
        defer { try? reopened.close() }
        try expectAll(reopened, count: 10)
        #expect(try reopened.get("only-in-b") == nil)
    }

    @Test func secondOpenerIsRefusedWithTheHolderNamed() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: .testing())
        defer { try? store.close() }
        do {
            _ = try LogKV(path: dir.path, options: .testing())
            Issue.record("second open succeeded")
        } catch let LogKVError.locked(path, holder) {
            #expect(path.hasSuffix("/LOCK"))
            #expect(holder.contains("pid \(getpid())"))
        }
    }

    @Test func lockIsReleasedByClose() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: .testing())
        try store.close()
        let again = try LogKV(path: dir.path, options: .testing())
        try again.close()
    }

    @Test func segmentFromAnotherStoreIsReported() throws {
        let a = TempDir(), b = TempDir()
        var options = LogKVOptions.testing()
        options.segmentSize = 1024
        let store = try LogKV(path: a.path, options: options)
        for i in 0..<40 { try store.put("k\(i)", String(repeating: "x", count: 100)) }
        try store.close()
        try populate(b, count: 1)
        let foreign = a.segmentFiles()[0]
        try FileManager.default.removeItem(atPath: foreign)
        try FileManager.default.copyItem(atPath: b.segmentFiles()[0], toPath: foreign)
        #expect(throws: LogKVError.self) { _ = try LogKV(path: a.path, options: options) }
    }

    /// The index rows, the checkpoint and the per-segment accounting, as text.
    func indexDump(_ dir: TempDir) throws -> [String] {
        let db = try SQLiteConnection(path: dir.indexPath, readOnly: true)
        var out: [String] = []
        let rows = try db.prepare("SELECT hex(key), segment, offset, length, seq, expires_at FROM keydir ORDER BY key")
        while try rows.step() {
            out.append((0..<6).map { $0 == 0 ? String(decoding: rows.blob(0), as: UTF8.self) : String(rows.int64(Int32($0))) }.joined(separator: " "))
        }
        let segs = try db.prepare("SELECT id, size_bytes, live_bytes, live_keys FROM segments ORDER BY id")
        while try segs.step() { out.append("seg " + (0..<4).map { String(segs.int64(Int32($0))) }.joined(separator: " ")) }
        let cp = try db.prepare("SELECT segment, offset, max_seq FROM checkpoint")
        while try cp.step() { out.append("cp " + (0..<3).map { String(cp.int64(Int32($0))) }.joined(separator: " ")) }
        out.append("keys \(try db.scalarInt("SELECT value FROM meta WHERE name = 'key_count'") ?? -1)")
        return out
    }
}
