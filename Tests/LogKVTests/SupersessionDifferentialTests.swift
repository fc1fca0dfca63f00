import Foundation
import LogKVTestSupport
import Testing
@testable import LogKV

/// The one rule — the newest seq wins; a TTL refresh renews the value it
/// names; a tombstone or an expired record hides older values — is decided
/// in several places: memory (`KeyDirChange.superseding`), the index's
/// apply, replay, the bulk rebuild, `dump`, compaction's keep/drop and
/// `check`. Random histories of puts, overwrites, deletes, TTLs, lease
/// renewals and expiries, spread over many small segments and compacted
/// now and then, must read the same through every one of them, and the same
/// as a plain model.
///
/// `LOGKV_SUPERSESSION_HISTORIES=N` runs N histories (default 2,000; each
/// store lives in `/dev/shm` where there is one). They run one after the
/// other in one test: run as parallel slices they held every thread of the
/// test run's cooperative pool for minutes, and async tests beside them
/// (a client waiting for a blocking query's answer) starved past their
/// deadlines in a fresh-clone CI run.
@Suite struct SupersessionDifferentialTests {
    static let histories = Int(ProcessInfo.processInfo.environment["LOGKV_SUPERSESSION_HISTORIES"] ?? "") ?? 2000
    static let keys: [[UInt8]] = (0..<8).map { bytes("k\($0)") }

    struct Live: Equatable, CustomStringConvertible {
        var value: [UInt8]; var expiresAt: Int64?
        var description: String { "\(value.count) bytes, expires \(expiresAt.map(String.init) ?? "never")" }
    }

    static func options(_ clock: ManualClock) -> LogKVOptions {
        var options = LogKVOptions.testing(clock: clock)
        options.segmentSize = 1500
        options.autoCompaction = false
        options.expirySweepPerSecond = 0
        options.compactionBytesPerSecond = 0
        options.flushIntervalMillis = 60_000  // indexed only when the history says so
        options.logger.logLevel = .critical
        return options
    }

    static func read(_ store: LogKV) throws -> [[UInt8]: Live] {
        var out: [[UInt8]: Live] = [:]
        for key in keys {
            if let got = try store.get(key) { out[key] = Live(value: got.value, expiresAt: got.expiresAt) }
        }
        return out
    }

    @Test func everyPlaceThatDecidesWhichRecordIsLiveAgrees() throws {
        var checked = 0
        for seed in 0..<Self.histories {
            try runHistory(seed: UInt64(seed))
            checked += 1
        }
        print("supersession: \(checked) histories read through memory, replay, rebuild, dump and check")
    }

    func runHistory(seed: UInt64) throws {
        var rng = SplitMix(seed: seed &* 6151 &+ 3)
        let clock = ManualClock()
        let dir = TempDir("supersession", inMemory: true)
        let options = Self.options(clock)
        var store = try LogKV(path: dir.path, options: options)
        var model: [[UInt8]: Live] = [:]
        func live() -> [[UInt8]: Live] { model.filter { $0.value.expiresAt.map { $0 > clock.now } ?? true } }
        var crash: (copy: TempDir, expected: [[UInt8]: Live])?
        let crashAt = Int.random(in: 20..<70, using: &rng)
        let label = "history \(seed)"

        for step in 0..<90 {
            let key = Self.keys[Int.random(in: 0..<Self.keys.count, using: &rng)]
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<40:
                let value = (0..<Int.random(in: 0..<120, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let expiresAt: Int64? = Bool.random(using: &rng) ? clock.now + Int64.random(in: 1...60, using: &rng) : nil
                try store.put(key, value, expiresAt: expiresAt)
                model[key] = Live(value: value, expiresAt: expiresAt)
            case 40..<52:
                let existed = try store.delete(key)
                #expect(existed == (live()[key] != nil), "\(label) step \(step): delete")
                model[key] = nil
            case 52..<66:
                let expiresAt: Int64? = Int.random(in: 0..<4, using: &rng) == 0 ? nil : clock.now + Int64.random(in: 1...60, using: &rng)
                let renewed = try store.refreshTTL(key, expiresAt: expiresAt)
                #expect((renewed != nil) == (live()[key] != nil), "\(label) step \(step): refresh")
                if renewed != nil { model[key]!.expiresAt = expiresAt }
            case 66..<78:
                clock.advance(Int64.random(in: 1...25, using: &rng))
            case 78..<86:
                _ = try store.compact(everything: Bool.random(using: &rng))
            case 86..<90:
                _ = try store.sweepExpired(limit: 100)
            case 90..<95:
                try store.flushIndex()
            default:
                try store.close()
                store = try LogKV(path: dir.path, options: options)
            }
            if step == crashAt {
                try store.sync()
                crash = (try dir.crashCopy(), model)  // judged at the time it is read
            }
        }
        let expected = live()
        #expect(try Self.read(store) == expected, "\(label): memory and index")
        try store.close()

        // Replay after a clean close (nothing to replay) and after a crash
        // (the tail after the checkpoint).
        var reopened = try LogKV(path: dir.path, options: options)
        #expect(try Self.read(reopened) == expected, "\(label): reopened")
        try reopened.close()
        if let crash {
            let recovered = try LogKV(path: crash.copy.path, options: options)
            let stillLive = crash.expected.filter { $0.value.expiresAt.map { $0 > clock.now } ?? true }
            #expect(try Self.read(recovered) == stillLive, "\(label): replayed after a crash at step \(crashAt)")
            try recovered.close()
        }
        // dump reads the segments alone.
        var dumped: [[UInt8]: Live] = [:]
        try LogKV.forEachLiveRecord(readOnlyPath: dir.path, now: clock.now) { key, value in
            dumped[key] = Live(value: value.value, expiresAt: value.expiresAt)
        }
        #expect(dumped == expected, "\(label): dump")
        // check rebuilds into a scratch index and compares it row by row.
        let report = try LogKV.check(path: dir.path)
        #expect(report.isHealthy, "\(label): check: \(report.problems)")
        // A bulk rebuild from the segments alone.
        for file in [dir.indexPath, dir.indexPath + "-wal", dir.indexPath + "-shm"] {
            try? FileManager.default.removeItem(atPath: file)
        }
        reopened = try LogKV(path: dir.path, options: options)
        #expect(try Self.read(reopened) == expected, "\(label): rebuilt")
        try reopened.close()
    }
}
