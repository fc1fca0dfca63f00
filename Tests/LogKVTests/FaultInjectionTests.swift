import Foundation
import Testing
@testable import LogKV

/// Errors injected at the file-system seam (`SimulatedDisk.fault`): a failed
/// fsync, directory fsync, create or index commit is final (rule 6). The
/// store turns read-only with a clear reason, acknowledges nothing it cannot
/// vouch for, keeps serving reads, and reopens with every acknowledged write.
@Suite struct FaultInjectionTests {
    /// A disk whose faults a test switches on and off.
    final class Faults: @unchecked Sendable {
        let lock = NSLock()
        var rule: ((SimulatedDisk.Operation, String) -> Int32?)?
        func set(_ rule: ((SimulatedDisk.Operation, String) -> Int32?)?) { lock.withLock { self.rule = rule } }
        func check(_ op: SimulatedDisk.Operation, _ path: String) -> Int32? { lock.withLock { rule?(op, path) } }
    }

    func makeStore(fsync: FsyncPolicy = .never, segmentSize: Int64 = 600)
        throws -> (LogKV, SimulatedDisk, Faults, TempDir, LogKVOptions) {
        let root = TempDir("faults")
        let disk = SimulatedDisk(root: root.path + "/data")
        let faults = Faults()
        disk.fault = { op, path in faults.check(op, path) }
        var options = LogKVOptions.testing(fsync: fsync)
        options.fileSystem = disk
        options.segmentSize = segmentSize
        options.autoCompaction = false
        options.expirySweepPerSecond = 0
        options.flushIntervalMillis = 1
        options.flushFailuresBeforeRefusingWrites = 3
        options.logger.logLevel = .critical
        return (try LogKV(path: disk.root, options: options), disk, faults, root, options)
    }

    func value(_ i: Int) -> [UInt8] { Array("value-\(i)-".utf8) + [UInt8](repeating: UInt8(i % 251), count: 100) }

    /// Writes until one fails; returns how many were acknowledged.
    func writeUntilRefused(_ store: LogKV, limit: Int = 100) -> (acked: Int, error: Error?) {
        for i in 0..<limit {
            do { try store.put(Array("k\(i)".utf8), value(i)) } catch { return (i, error) }
        }
        return (limit, nil)
    }

    func isReadOnly(_ error: Error?) -> Bool {
        if case .readOnly? = error as? LogKVError { return true }
        return false
    }

    @Test func failedFsyncWhileRotatingMakesTheStoreReadOnlyAndLosesNothingAcknowledged() throws {
        let (store, disk, faults, tmp, options) = try makeStore()
        defer { withExtendedLifetime(tmp) {} }
        faults.set { op, path in op == .sync && path.hasSuffix(".seg") ? EIO : nil }
        let (acked, error) = writeUntilRefused(store)
        #expect(isReadOnly(error), "\(String(describing: error))")
        #expect(acked > 0)
        // Final: the next write is refused too, even with the disk healthy again.
        faults.set(nil)
        #expect(throws: LogKVError.self) { try store.put(Array("after".utf8), [1]) }
        #expect(store.writeRefusal != nil)
        for i in 0..<acked { #expect(try store.get(Array("k\(i)".utf8))?.value == value(i)) }
        try? store.close()
        let reopened = try LogKV(path: disk.root, options: options)
        defer { try? reopened.close() }
        for i in 0..<acked { #expect(try reopened.get(Array("k\(i)".utf8))?.value == value(i), "k\(i)") }
        try reopened.put(Array("after".utf8), [1])  // writable again after a restart
    }

    @Test func segmentCreateFailingForSpaceLeavesNoFileAndWritesResumeOnceSpaceIsBack() throws {
        let (store, disk, faults, tmp, options) = try makeStore()
        defer { withExtendedLifetime(tmp) {} }
        faults.set { op, _ in op == .create ? ENOSPC : nil }
        let (acked, error) = writeUntilRefused(store)
        // No room is not a failed fsync: refused for now, not for good.
        #expect(error as? LogKVError == .diskFull, "\(String(describing: error))")
        #expect(store.writeRefusal == .diskFull)
        let ids = try DataDirectory(path: disk.root, fs: disk).segmentIDs()
        #expect(ids == [1], "a half-created segment was left behind: \(ids)")
        faults.set(nil)  // space freed
        try store.put(Array("k\(acked)".utf8), value(acked))
        #expect(store.writeRefusal == nil)
        try store.close()
        let reopened = try LogKV(path: disk.root, options: options)
        defer { try? reopened.close() }
        // Rotation works again: no "File exists" from a leftover.
        for i in (acked + 1)..<(acked + 20) { try reopened.put(Array("k\(i)".utf8), value(i)) }
        for i in 0..<(acked + 20) { #expect(try reopened.get(Array("k\(i)".utf8))?.value == value(i)) }
        #expect(try DataDirectory(path: disk.root, fs: disk).segmentIDs().count > 1)
    }

    @Test func failedAppendMakesTheStoreReadOnly() throws {
        let (store, _, faults, tmp, _) = try makeStore(segmentSize: 1 << 20)
        defer { withExtendedLifetime(tmp) {} }
        try store.put(Array("a".utf8), [1])
        faults.set { op, path in op == .write && path.hasSuffix(".seg") ? EIO : nil }
        #expect(throws: LogKVError.self) { try store.put(Array("b".utf8), [2]) }
        faults.set(nil)
        #expect(store.writeRefusal != nil)
        #expect(throws: LogKVError.self) { try store.put(Array("c".utf8), [3]) }
        #expect(try store.get(Array("a".utf8))?.value == [1])
        try? store.close()
    }

    @Test func failedDirectoryFsyncMakesTheStoreReadOnly() throws {
        let (store, _, faults, tmp, _) = try makeStore()
        defer { withExtendedLifetime(tmp) {} }
        faults.set { op, _ in op == .syncDirectory ? EIO : nil }
        let (_, error) = writeUntilRefused(store)
        #expect(isReadOnly(error), "\(String(describing: error))")
        faults.set(nil)
        #expect(throws: LogKVError.self) { try store.put(Array("after".utf8), [1]) }
        try? store.close()
    }

    @Test func failedFsyncUnderAlwaysIsNeitherAcknowledgedNorVisible() throws {
        let (store, _, faults, tmp, _) = try makeStore(fsync: .always, segmentSize: 1 << 20)
        defer { withExtendedLifetime(tmp) {} }
        try store.put(Array("before".utf8), [1])
        faults.set { op, path in op == .sync && path.hasSuffix(".seg") ? EIO : nil }
        #expect(throws: LogKVError.self) { try store.put(Array("doomed".utf8), [2]) }
        // Rule 1: readers never see a write no fsync covered.
        #expect(try store.get(Array("doomed".utf8)) == nil)
        #expect(try store.get(Array("before".utf8))?.value == [1])
        #expect(try store.scan().map(\.key) == [Array("before".utf8)])
        try? store.close()
    }

    @Test func failingIndexRefusesWritesWithTheIndexErrorAndRecoversWhenItHeals() throws {
        let (store, _, faults, tmp, _) = try makeStore(segmentSize: 1 << 20)
        defer { withExtendedLifetime(tmp) {} }
        try store.put(Array("before".utf8), [1])
        try store.flushIndex()
        faults.set { op, _ in op == .indexCommit ? ENOSPC : nil }
        var refusal: Error?
        let deadline = Date().addingTimeInterval(10)
        var i = 0
        while refusal == nil && Date() < deadline {
            do { try store.put(Array("k\(i)".utf8), value(i)); i += 1 } catch { refusal = error }
            usleep(2000)
        }
        // The backlog does not grow without bound while the index is down.
        guard case let .readOnly(reason)? = refusal as? LogKVError else {
            Issue.record("writes were never refused: \(String(describing: refusal))")
            return
        }
        #expect(reason.contains("index"), "\(reason)")
        #expect(store.writeRefusal != nil)
        // Everything acknowledged is still readable from memory.
        for j in 0..<i { #expect(try store.get(Array("k\(j)".utf8))?.value == value(j)) }
        // The index heals: writes are taken again once a flush succeeds.
        faults.set(nil)
        let healed = Date().addingTimeInterval(10)
        while store.writeRefusal != nil && Date() < healed { usleep(10_000) }
        #expect(store.writeRefusal == nil)
        try store.put(Array("after".utf8), [3])
        try store.close()
    }

    @Test func closeWithAFailingIndexFinishesAndTheNextOpenReplaysTheLog() throws {
        let (store, disk, faults, tmp, options) = try makeStore(segmentSize: 1 << 20)
        defer { withExtendedLifetime(tmp) {} }
        for i in 0..<20 { try store.put(Array("k\(i)".utf8), value(i)) }
        try store.sync()
        faults.set { op, _ in op == .indexCommit ? ENOSPC : nil }
        let started = Date()
        #expect(throws: (any Error).self) { try store.close() }
        #expect(Date().timeIntervalSince(started) < 10, "close() must not hang on a dead index")
        faults.set(nil)
        let reopened = try LogKV(path: disk.root, options: options)
        defer { try? reopened.close() }
        for i in 0..<20 { #expect(try reopened.get(Array("k\(i)".utf8))?.value == value(i)) }
    }

    @Test func failedCompactionLeavesNoOutputsBehindAndRetriesDoNotGrowTheDisk() throws {
        let (store, disk, faults, tmp, _) = try makeStore(segmentSize: 800)
        defer { withExtendedLifetime(tmp) {} }
        for round in 0..<3 { for i in 0..<20 { try store.put(Array("k\(i)".utf8), value(i + round)) } }
        let dir = DataDirectory(path: disk.root, fs: disk)
        let before = Set(try dir.segmentIDs())
        // Fail the compaction's index commit: its outputs must go.
        faults.set { op, _ in op == .indexCommit ? ENOSPC : nil }
        for _ in 0..<3 {
            #expect(throws: (any Error).self) { try store.compact() }
        }
        faults.set(nil)
        let after = Set(try dir.segmentIDs())
        // Only the segment the first compaction sealed may be new.
        #expect(after.subtracting(before).count <= 1, "leftover outputs: \(after.subtracting(before).sorted())")
        #expect(!dir.exists(dir.compactionManifestPath))
        for i in 0..<20 { #expect(try store.get(Array("k\(i)".utf8))?.value == value(i + 2)) }
        try store.close()
    }

    @Test func fullCompactionOfACompactStoreRewritesNothing() throws {
        let (store, _, _, tmp, _) = try makeStore(segmentSize: 800)
        defer { withExtendedLifetime(tmp) {} }
        for i in 0..<30 { try store.put(Array("k\(i)".utf8), value(i)) }
        for i in 0..<30 { try store.put(Array("k\(i)".utf8), value(i + 1)) }
        let first = try store.compact()
        #expect(first.segmentsCompacted > 0)
        #expect(first.bytesReclaimed > 0)
        let second = try store.compact()
        #expect(second.segmentsCompacted == 0, "the segment header counted as garbage: \(second)")
        try store.close()
    }
}

/// What compaction and backup do with damage, interruptions and leftovers.
@Suite struct DamageAndInterruptionTests {
    func options(_ clock: ManualClock? = nil) -> LogKVOptions {
        var options = LogKVOptions.testing(clock: clock)
        options.segmentSize = 2048
        options.autoCompaction = false
        options.compactionBytesPerSecond = 0
        options.expirySweepPerSecond = 0
        options.logger.logLevel = .critical
        return options
    }

    /// Rule 7: compaction never deletes bytes an index row points at, even
    /// damaged ones; the key keeps answering "corrupt", never "missing".
    @Test func compactionKeepsASegmentWithDamagedBytesUnderALiveKey() throws {
        let dir = TempDir()
        var store = try LogKV(path: dir.path, options: options())
        for i in 0..<60 { try store.put("k\(i)", String(repeating: "v", count: 40) + "\(i)") }
        for i in 30..<60 { try store.put("k\(i)", "new\(i)") }  // garbage to compact
        try store.close()
        // Damage the first record (k0, live) of the first segment.
        let first = dir.segmentFiles().first!
        var bytes = try Data(contentsOf: URL(fileURLWithPath: first))
        bytes[RecordFormat.segmentHeaderSize + RecordFormat.recordHeaderSize + 4] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: first))

        store = try LogKV(path: dir.path, options: options())
        defer { try? store.close() }
        try store.compact()
        #expect(FileManager.default.fileExists(atPath: first), "the only copy of a live key's bytes was deleted")
        #expect(throws: LogKVError.self) { try store.get("k0") }
        for i in 1..<30 { #expect(try store.get("k\(i)")?.value == Array((String(repeating: "v", count: 40) + "\(i)").utf8)) }
        for i in 30..<60 { #expect(try store.get("k\(i)")?.value == Array("new\(i)".utf8)) }
    }

    /// A compaction that dropped every record (all expired) writes no output;
    /// if it dies after its commit, the next open still removes its inputs.
    @Test func compactionWithoutOutputsInterruptedAfterItsCommitIsFinishedOnOpen() throws {
        let dir = TempDir()
        let clock = ManualClock()
        var opts = options(clock)
        let store = try LogKV(path: dir.path, options: opts)
        for i in 0..<40 { try store.put(Array("k\(i)".utf8), [UInt8](repeating: 1, count: 60), expiresAt: clock.now + 1000) }
        clock.advance(5000)
        try store.flushIndex()  // the sweep walks the index
        try store.sweepExpired(limit: 1000)  // every record is now garbage
        try store.close()
        opts.compactionFailpoint = { step in if step == "index-committed" { throw LogKVError.io(operation: "crash", path: "", errno: EIO) } }
        let crashing = try LogKV(path: dir.path, options: opts)
        let before = Set(dir.segmentFiles())
        _ = try? crashing.compact()
        try? crashing.close()
        opts.compactionFailpoint = nil
        let reopened = try LogKV(path: dir.path, options: opts)
        defer { try? reopened.close() }
        let left = Set(dir.segmentFiles())
        if left.count >= before.count {
            let db = try SQLiteConnection(path: dir.indexPath, readOnly: true)
            let rows = try db.prepare("SELECT id, size_bytes, live_bytes, live_keys FROM segments")
            var dump: [String] = []
            while try rows.step() { dump.append((0..<4).map { String(rows.int64(Int32($0))) }.joined(separator: " ")) }
            Issue.record("inputs of a committed compaction were left behind: \(left.sorted()); index segments: \(dump)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/COMPACTION"))
        for i in 0..<40 { #expect(try reopened.get(Array("k\(i)".utf8)) == nil) }
    }

    @Test func anInterruptedBackupDirectoryIsNeverRestored() throws {
        let dir = TempDir()
        let store = try LogKV(path: dir.path, options: options())
        for i in 0..<50 { try store.put("k\(i)", "v\(i)") }
        let backup = dir.path + "-backup"
        defer { try? FileManager.default.removeItem(atPath: backup) }
        try store.backup(to: backup)
        try store.close()
        try FileManager.default.removeItem(atPath: backup + "/BACKUP_COMPLETE")
        let target = dir.path + "-restored"
        defer { try? FileManager.default.removeItem(atPath: target) }
        #expect(throws: LogKVError.self) { try LogKV.restore(from: backup, to: target, options: options()) }
        #expect(!FileManager.default.fileExists(atPath: target), "a failed restore left files behind")
    }

    /// A store of many segments keeps a bounded number of descriptors open
    /// and still reads every key (closed ones reopen on demand).
    @Test func openSegmentDescriptorsStayBounded() throws {
        let dir = TempDir()
        var opts = options()
        opts.maxOpenSegments = 4
        var store = try LogKV(path: dir.path, options: opts)
        for i in 0..<400 { try store.put("k\(i)", String(repeating: "x", count: 100) + "\(i)") }
        try store.close()
        store = try LogKV(path: dir.path, options: opts)
        defer { try? store.close() }
        #expect(dir.segmentFiles().count > 20)
        for round in 0..<2 {
            for i in (0..<400).shuffled() {
                #expect(try store.get("k\(i)")?.value == Array((String(repeating: "x", count: 100) + "\(i)").utf8), "round \(round) k\(i)")
            }
            #expect(store.segmentHandles.openCount <= 5)
        }
        try store.put("after", "reopen")  // the active segment is never closed under the writer
        #expect(try store.get("after")?.value == Array("reopen".utf8))
    }
}
