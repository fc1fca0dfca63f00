import Foundation
import Testing
@testable import LogKV

/// `getWithoutWaiting` is what event loops call: it answers from memory, or
/// from SQLite and the segment when their pages are in the page cache, and
/// says `wouldBlock` (never waits) when a page must come from the disk.
@Suite struct ReadWithoutWaitingTests {
    func options() -> LogKVOptions {
        var options = LogKVOptions.testing()
        options.cacheBudgetBytes = 0  // no KeyDir cache: every lookup is SQLite's
        options.autoCompaction = false
        options.logger.logLevel = .critical
        return options
    }

    func value(_ i: Int) -> [UInt8] { Array("value-\(i)".utf8) }

    @Test func anIndexedKeyWhosePagesAreCachedIsAnsweredWithoutWaiting() throws {
        #expect(IndexReaderPool.canLookUpWithoutWaiting, "SQLite's reads could not be made never-waiting")
        let root = TempDir("nowait")
        let store = try LogKV(path: root.path, options: options())
        for i in 0..<2_000 { try store.put(Array("k\(i)".utf8), value(i)) }
        try store.flushIndex()
        _ = try store.get(Array("k0".utf8))  // a reader connection exists
        var answered = 0
        for i in stride(from: 0, to: 2_000, by: 97) {
            guard case let .done(stored) = try store.getWithoutWaiting(Array("k\(i)".utf8)) else { continue }
            #expect(stored?.value == value(i))
            answered += 1
        }
        #expect(answered > 0)
        guard case let .done(missing) = try store.getWithoutWaiting(Array("absent".utf8)) else {
            Issue.record("a missing key needed the disk")
            return
        }
        #expect(missing == nil)
        try store.close()
    }

    @Test func aLookupWhoseIndexPagesAreNotInThePageCacheSaysWouldBlock() throws {
        let root = TempDir("nowait-cold")
        var store = try LogKV(path: root.path, options: options())
        for i in 0..<20_000 { try store.put(Array("key-\(i)".utf8), value(i)) }
        try store.close()
        store = try LogKV(path: root.path, options: options())
        defer { try? store.close() }
        _ = try store.get(Array("key-0".utf8))  // a reader connection exists
        // Drop the index's clean pages from the page cache (what memory
        // pressure does to a large index).
        let index = root.path + "/index.sqlite"
        for path in [index, index + "-wal"] {
            let fd = open(path, O_RDONLY)
            guard fd >= 0 else { continue }
            _ = fdatasync(fd)
            #expect(posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED)) == 0)
            close(fd)
        }
        var wouldBlock = 0
        for i in stride(from: 1, to: 20_000, by: 1_013) {
            if case .wouldBlock = try store.getWithoutWaiting(Array("key-\(i)".utf8)) { wouldBlock += 1 }
            // The blocking path still answers, and reads it in.
            #expect(try store.get(Array("key-\(i)".utf8))?.value == value(i))
        }
        #expect(wouldBlock > 0, "every lookup was answered although the index pages were dropped")
    }
}
