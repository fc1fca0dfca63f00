import Foundation
import Testing
@testable import LogKV

/// Rule 9: what survives a power loss is a prefix of the log. Records
/// written after the last proven sync point are the unsynced tail; a page
/// of it lost (written back out of order) cuts the log there, and the
/// intact records after the hole go with it. Damage before the sync point
/// is damage to durable data: reported, and the intact records after it
/// kept (rule 7). Replay, rebuild, `check` and `dump` decide alike.
@Suite struct UnsyncedTailTests {
    static func options(_ fsync: FsyncPolicy) -> LogKVOptions {
        var options = LogKVOptions.testing(fsync: fsync)
        options.segmentSize = 1 << 20
        options.fsyncIntervalMillis = 1_000_000  // only explicit syncs
        options.flushIntervalMillis = 60_000     // nothing indexed behind the test's back
        options.autoCompaction = false
        options.expirySweepPerSecond = 0
        options.logger.logLevel = .critical
        return options
    }

    /// Zeroes `count` bytes at `offset` of the last segment: a page the
    /// power loss did not write back.
    func losePage(in dir: TempDir, at offset: Int, count: Int) throws {
        let segment = dir.segmentFiles().last!
        var data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: segment)))
        for i in offset..<min(data.count, offset + count) { data[i] = 0 }
        try Data(data).write(to: URL(fileURLWithPath: segment))
    }

    func keys(_ store: LogKV) throws -> [String: String] {
        var out: [String: String] = [:]
        for key in ["a", "b", "c", "d"] {
            if let v = try store.get(bytes(key)) { out[key] = String(decoding: v.value.prefix(8), as: UTF8.self) }
        }
        return out
    }

    @Test(arguments: [FsyncPolicy.interval, .never])
    func writesAfterALostUnsyncedWriteDoNotSurviveIt(policy: FsyncPolicy) throws {
        let dir = TempDir("unsynced")
        let store = try LogKV(path: dir.path, options: Self.options(policy))
        defer { try? store.close() }
        try store.put(bytes("a"), bytes("synced"))
        try store.sync()
        let syncedEnd = Int(try #require(dir.segmentFiles().last.map { dir.size($0) }))
        try store.put(bytes("b"), [UInt8](repeating: 0x62, count: 6000))  // spans pages
        try store.put(bytes("c"), bytes("later"))
        try store.put(bytes("a"), bytes("rewritten"))
        let image = try dir.crashCopy()
        try losePage(in: image, at: syncedEnd + 100, count: 4096)

        let checked = try LogKV.check(path: image.path)
        #expect(checked.problems.contains { $0.contains("unsynced tail") && $0.contains("2 intact records") }, "\(checked.problems)")
        var dumped: [String] = []
        try LogKV.forEachLiveRecord(readOnlyPath: image.path) { key, _ in dumped.append(String(decoding: key, as: UTF8.self)) }
        #expect(dumped == ["a"])

        let reopened = try LogKV(path: image.path, options: Self.options(policy))
        #expect(try keys(reopened) == ["a": "synced"], "c and the rewrite of a came after the lost b")
        try reopened.put(bytes("d"), bytes("new"))
        try reopened.close()
        #expect(try LogKV.check(path: image.path).isHealthy)
        try FileManager.default.removeItem(atPath: image.indexPath)
        let rebuilt = try LogKV(path: image.path, options: Self.options(policy))
        defer { try? rebuilt.close() }
        #expect(try keys(rebuilt) == ["a": "synced", "d": "new"])
    }

    /// The sync before a close is proven by one more commit record, so a
    /// flipped byte in the last batch is damage: everything intact stays.
    @Test func damageBeforeTheLastProvenSyncIsReportedAndTheIntactRecordsAfterItStay() throws {
        let dir = TempDir("unsynced-damage")
        let store = try LogKV(path: dir.path, options: Self.options(.interval))
        try store.put(bytes("a"), bytes("first"))
        try store.sync()
        let syncedEnd = Int(try #require(dir.segmentFiles().last.map { dir.size($0) }))
        try store.put(bytes("b"), [UInt8](repeating: 0x62, count: 6000))
        try store.put(bytes("c"), bytes("later"))
        try store.close()
        try losePage(in: dir, at: syncedEnd + 100, count: 16)
        try FileManager.default.removeItem(atPath: dir.indexPath)  // read the whole log
        let checked = try LogKV.check(path: dir.path)
        #expect(checked.problems.contains { $0.contains("intact records follow") }, "\(checked.problems)")
        let result = try Recovery.open(path: dir.path, options: Self.options(.interval))
        #expect(result.report.damagedSpans == 1)
        #expect(result.report.droppedTailRecords == 0)
        withExtendedLifetime(result.lock) {}
    }

    /// An unacknowledged refresh whose value a power loss took never hides
    /// the older synced value (rule 10), whatever the policy.
    @Test(arguments: [FsyncPolicy.interval, .never])
    func aRefreshOfALostValueGoesWithItAndTheSyncedValueStays(policy: FsyncPolicy) throws {
        let dir = TempDir("unsynced-refresh")
        let store = try LogKV(path: dir.path, options: Self.options(policy))
        defer { try? store.close() }
        try store.put(bytes("a"), bytes("synced"))
        try store.sync()
        let syncedEnd = Int(try #require(dir.segmentFiles().last.map { dir.size($0) }))
        try store.put(bytes("a"), [UInt8](repeating: 0x61, count: 6000))
        try #require(try store.refreshTTL(bytes("a"), expiresAt: LogKVOptions.systemMillis() + 3_600_000) != nil)
        let image = try dir.crashCopy()
        try losePage(in: image, at: syncedEnd + 100, count: 4096)
        for rebuild in [false, true] {
            if rebuild { try FileManager.default.removeItem(atPath: image.indexPath) }
            let reopened = try LogKV(path: image.path, options: Self.options(policy))
            let got = try reopened.get(bytes("a"))
            #expect(got?.value == bytes("synced"), "rebuild \(rebuild)")
            #expect(got?.expiresAt == nil, "rebuild \(rebuild)")
            try reopened.close()
        }
    }
}
