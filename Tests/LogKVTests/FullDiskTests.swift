import Foundation
import LogKVTestSupport
import Testing
@testable import LogKV

/// A full disk refuses writes with a clear error and loses nothing; a
/// delete and a compaction can still free space (through the reserve);
/// once space is back, writes work again without a restart (only a failed
/// fsync is final, rule 6).
@Suite struct FullDiskTests {
    /// A simulated disk that is full while `full` is set: every write or
    /// create under `segments/` fails with ENOSPC. Giving up the reserve
    /// frees enough room for the rest of the test.
    final class Space: @unchecked Sendable {
        private let lock = NSLock()
        private var _full = false
        var full: Bool {
            get { lock.withLock { _full } }
            set { lock.withLock { _full = newValue } }
        }
    }

    func makeStore(policy: FsyncPolicy = .always, segmentSize: Int64 = 1 << 20)
        throws -> (LogKV, Space, SimulatedDisk, TempDir, LogKVOptions) {
        let root = TempDir("full-disk")
        let disk = SimulatedDisk(root: root.path + "/data")
        let space = Space()
        disk.fault = { op, path in
            if op == .remove && path.hasSuffix("/RESERVE") { space.full = false; return nil }
            guard space.full, op == .write || op == .create, path.contains("/segments/") else { return nil }
            return ENOSPC
        }
        var options = LogKVOptions.testing(fsync: policy)
        options.fileSystem = disk
        options.segmentSize = segmentSize
        options.diskReserveBytes = 64 * 1024
        options.autoCompaction = false
        options.expirySweepPerSecond = 0
        options.logger.logLevel = .critical
        return (try LogKV(path: disk.root, options: options), space, disk, root, options)
    }

    @Test func aFullDiskRefusesWritesClearlyAndTheyWorkAgainOnceSpaceIsBack() throws {
        let (store, space, _, root, _) = try makeStore()
        defer { withExtendedLifetime(root) {}; try? store.close() }
        try store.put(bytes("a"), bytes("1"))
        space.full = true
        #expect(throws: LogKVError.diskFull) { try store.put(bytes("b"), bytes("2")) }
        #expect(store.writeRefusal == .diskFull)
        #expect(try store.get(bytes("a"))?.value == bytes("1"))
        #expect(try store.get(bytes("b")) == nil)
        space.full = false
        try store.put(bytes("b"), bytes("2"))
        #expect(store.writeRefusal == nil)
        #expect(try store.get(bytes("b"))?.value == bytes("2"))
    }

    @Test func aDeleteOnAFullDiskUsesTheReserveAndTheDeletedKeyStaysDeletedAfterRestart() throws {
        let (store, space, disk, root, options) = try makeStore()
        defer { withExtendedLifetime(root) {} }
        try store.put(bytes("a"), bytes("1"))
        try store.put(bytes("b"), bytes("2"))
        #expect(disk.exists(disk.root + "/RESERVE"))
        space.full = true
        #expect(throws: LogKVError.diskFull) { try store.put(bytes("c"), bytes("3")) }
        #expect(try store.delete(bytes("a")))
        #expect(try store.get(bytes("a")) == nil)
        // Puts do not take the room the reserve left; once the disk has room
        // for the reserve again, it is back and so are puts.
        try #require(eventually { store.writeRefusal == nil })
        #expect(disk.exists(disk.root + "/RESERVE"))
        try store.put(bytes("c"), bytes("3"))
        try store.close()
        let reopened = try LogKV(path: disk.root, options: options)
        defer { try? reopened.close() }
        #expect(try reopened.get(bytes("a")) == nil)
        #expect(try reopened.get(bytes("b"))?.value == bytes("2"))
    }

    /// A compaction on a full disk gives up the reserve, and if its output
    /// still finds no room it fails without making the store read-only.
    @Test func aCompactionOnAFullDiskNeverLeavesTheStoreReadOnly() throws {
        let (store, space, _, root, _) = try makeStore(segmentSize: 4096)
        defer { withExtendedLifetime(root) {}; try? store.close() }
        for i in 0..<200 { try store.put(bytes("k\(i % 20)"), [UInt8](repeating: UInt8(i & 0xFF), count: 100)) }
        try store.flushIndex()
        space.full = true
        #expect(throws: LogKVError.diskFull) { try store.put(bytes("x"), bytes("1")) }
        _ = try? store.compact(everything: true)  // frees space through the reserve, or fails cleanly
        space.full = false
        try #require(eventually { store.writeRefusal == nil })  // the reserve is back
        try store.put(bytes("y"), bytes("1"))
        // A disk still full (no reserve left): the compaction fails, and
        // nothing is final.
        space.full = true
        #expect(throws: (any Error).self) { try store.compact(everything: true) }
        #expect(store.writeRefusal == nil || store.writeRefusal == .diskFull, "\(String(describing: store.writeRefusal))")
        space.full = false
        try store.put(bytes("x"), bytes("1"))
        #expect(store.writeRefusal == nil)
        _ = try store.compact(everything: true)
        for i in 180..<200 { #expect(try store.get(bytes("k\(i % 20)"))?.value == [UInt8](repeating: UInt8(i & 0xFF), count: 100)) }
        #expect(try store.get(bytes("x"))?.value == bytes("1"))
    }
}
