import Foundation
import LogKVTestSupport
import Testing
@testable import LogKV

/// Power-loss exploration: random workloads (puts, overwrites, deletes, TTLs,
/// TTL refreshes, rotations with tiny segments, compactions, expiry sweeps, index flushes,
/// syncs, close/reopen) over a `SimulatedDisk`. Before every fsync, directory
/// fsync and index commit, and at random writes, the test takes states a
/// power loss there may leave, then opens each one and checks it against the
/// model of acknowledged operations:
///
/// - opening always succeeds and nothing reads as corrupt;
/// - `always`: every key reads its last acknowledged value (or the value of
///   the one operation in flight); no deleted or expired key returns;
/// - `interval`: every key reads a value it held at or after the last sync;
/// - a new write gets a seq above every durable acknowledged one (rule 5);
/// - after a clean close, `check` finds nothing wrong.
///
/// `LOGKV_POWERLOSS_SEEDS=N` runs N seeds per policy (a long exploration);
/// `LOGKV_POWERLOSS_SEED=N` replays one.
@Suite struct PowerLossTests {
    static let keys = (0..<10).map { "k\($0)" }
    static let seedCount = Int(ProcessInfo.processInfo.environment["LOGKV_POWERLOSS_SEEDS"] ?? "") ?? 12
    /// `LOGKV_POWERLOSS_SEED=N` replays one seed (with either policy).
    static let seeds: [Int] = Int(ProcessInfo.processInfo.environment["LOGKV_POWERLOSS_SEED"] ?? "").map { [$0] }
        ?? Array(0..<seedCount)

    /// What the workload did, for the checker.
    final class Model: @unchecked Sendable {
        struct Version { var op: Int; var value: [UInt8]?; var expiresAt: Int64; var seq: UInt64 }
        struct Snapshot {
            var history: [String: [Version]]
            var started: Int
            var durable: Int
            var durableSeq: UInt64
            /// The highest seq any acknowledged write returned (rule 5: never issued again).
            var issuedSeq: UInt64
        }

        let lock = NSLock()
        let policy: FsyncPolicy
        var history: [String: [Version]] = [:]
        /// Ops started; ops before `acked` returned.
        var started = 0
        var acked = 0
        /// Under `interval`: ops before this were covered by an explicit sync.
        var synced = 0
        var maxAckedSeq: UInt64 = 0
        var maxSyncedSeq: UInt64 = 0

        init(policy: FsyncPolicy) { self.policy = policy }

        func begin(_ key: String, _ value: [UInt8]?, expiresAt: Int64) -> Int {
            lock.withLock {
                let op = started
                started += 1
                history[key, default: []].append(Version(op: op, value: value, expiresAt: expiresAt, seq: 0))
                return op
            }
        }

        func ack(_ key: String, op: Int, seq: UInt64) {
            lock.withLock {
                if let i = history[key]?.lastIndex(where: { $0.op == op }) { history[key]![i].seq = seq }
                acked = op + 1
                maxAckedSeq = max(maxAckedSeq, seq)
            }
        }

        /// An operation that writes nothing (a delete of a missing key).
        func nothingWritten(_ key: String, op: Int) {
            lock.withLock {
                history[key]?.removeAll { $0.op == op }
                acked = op + 1
            }
        }

        func markSynced() {
            lock.withLock {
                synced = acked
                maxSyncedSeq = maxAckedSeq
            }
        }

        func snapshot() -> Snapshot {
            lock.withLock {
                let durable = policy == .always ? acked : synced
                let seq = policy == .always ? maxAckedSeq : maxSyncedSeq
                return Snapshot(history: history, started: started, durable: durable, durableSeq: seq,
                                issuedSeq: maxAckedSeq)
            }
        }
    }

    struct Capture {
        var image: SimulatedDisk.CrashImage
        var model: Model.Snapshot
        var at: String
    }

    static func options(disk: SimulatedDisk, clock: ManualClock, policy: FsyncPolicy) -> LogKVOptions {
        var options = LogKVOptions.testing(clock: clock, fsync: policy)
        options.fileSystem = disk
        options.segmentSize = 1200
        options.fsyncIntervalMillis = 1_000_000  // only explicit syncs, so the model knows what is durable
        options.flushIntervalMillis = 1
        options.autoCompaction = false
        options.expirySweepPerSecond = 0
        options.compactionBytesPerSecond = 0
        options.readConnections = 1
        options.logger.logLevel = .critical
        return options
    }

    @Test(arguments: [FsyncPolicy.always, .interval], seeds)
    func everyPowerLossStateOpensWithEveryAcknowledgedWrite(policy: FsyncPolicy, seed: Int) throws {
        var rng = SplitMix(seed: UInt64(seed) &* 7919 &+ (policy == .always ? 1 : 2))
        let root = TempDir("powerloss")
        let disk = SimulatedDisk(root: root.path + "/data")
        let clock = ManualClock()
        let model = Model(policy: policy)
        let captures = NSLock()
        var taken: [Capture] = []
        var captureRNG = SplitMix(seed: UInt64(seed) &+ 99)
        let maxCaptures = 500
        disk.crashPoint = { op, path in
            captures.withLock {
                guard taken.count < maxCaptures else { return }
                let wanted = op != .write || Double.random(in: 0..<1, using: &captureRNG) < 0.2
                guard wanted else { return }
                for _ in 0..<2 {
                    let image = disk.crashImage(using: &captureRNG)
                    taken.append(Capture(image: image, model: model.snapshot(), at: "\(op) \(path)"))
                }
            }
        }

        let options = Self.options(disk: disk, clock: clock, policy: policy)
        var store = try LogKV(path: disk.root, options: options)
        for _ in 0..<220 {
            let key = Self.keys[Int.random(in: 0..<Self.keys.count, using: &rng)]
            switch Int.random(in: 0..<110, using: &rng) {
            case 0..<50:
                var value = Array("\(key)=".utf8)
                value += (0..<Int.random(in: 0..<300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let ttl: Int64 = Int.random(in: 0..<8, using: &rng) == 0 ? Int64.random(in: 1...40, using: &rng) : 0
                let expiresAt = ttl == 0 ? 0 : clock.now + ttl
                let op = model.begin(key, value, expiresAt: expiresAt)
                let seq: UInt64
                if policy == .always && Bool.random(using: &rng) {
                    // The server's form: acknowledged by the committer's fsync.
                    let answered = DispatchSemaphore(value: 0)
                    let result = LockedBox<Result<UInt64, Error>?>(nil)
                    try store.put(Array(key.utf8), value, expiresAt: ttl == 0 ? nil : expiresAt) {
                        result.set($0)
                        answered.signal()
                    }
                    answered.wait()
                    seq = try result.get()!.get()
                } else {
                    seq = try store.put(Array(key.utf8), value, expiresAt: ttl == 0 ? nil : expiresAt)
                }
                model.ack(key, op: op, seq: seq)
            case 50..<65:
                let op = model.begin(key, nil, expiresAt: 0)
                if try store.delete(Array(key.utf8)) {
                    model.ack(key, op: op, seq: store.lastIssuedSeq)
                } else {
                    model.nothingWritten(key, op: op)
                }
            case 65..<73:
                clock.advance(Int64.random(in: 1...25, using: &rng))
            case 73..<79:
                try store.compact(everything: Bool.random(using: &rng))
            case 79..<82:
                try store.sweepExpired(limit: 100)
            case 82..<86:
                try store.flushIndex()
            case 86..<92:
                try store.sync()
                model.markSynced()
            case 92..<94:
                try store.close()
                model.markSynced()
                store = try LogKV(path: disk.root, options: options)
            case 94:
                // A backup taken now restores to exactly the acknowledged state.
                let backup = TempDir("powerloss-backup")
                try store.backup(to: backup.path + "/copy")
                var restoreOptions = LogKVOptions.testing(clock: clock)
                restoreOptions.logger.logLevel = .critical
                _ = try LogKV.restore(from: backup.path + "/copy", to: backup.path + "/restored", options: restoreOptions)
                let restored = try LogKV(path: backup.path + "/restored", options: restoreOptions)
                let snapshot = model.snapshot()
                for key in Self.keys {
                    let expected = snapshot.history[key]?.last.flatMap { visible($0, now: clock.now) }
                    #expect(try restored.get(Array(key.utf8))?.value == expected, "backup: \(key)")
                }
                try restored.close()
            case 100..<110:
                // A lease renewal: a new expiry (or none) for the current
                // value, the value itself untouched.
                let ttl: Int64 = Int.random(in: 0..<4, using: &rng) == 0 ? 0 : Int64.random(in: 1...40, using: &rng)
                let expiresAt = ttl == 0 ? 0 : clock.now + ttl
                let current = model.snapshot().history[key]?.last.flatMap { visible($0, now: clock.now) }
                if let current {
                    let op = model.begin(key, current, expiresAt: expiresAt)
                    let version = try store.refreshTTL(Array(key.utf8), expiresAt: ttl == 0 ? nil : expiresAt)
                    #expect(version != nil, "refresh of live \(key)")
                    model.ack(key, op: op, seq: store.lastIssuedSeq)
                } else {
                    #expect(try store.refreshTTL(Array(key.utf8), expiresAt: ttl == 0 ? nil : expiresAt) == nil,
                            "refresh of missing \(key)")
                }
            default:
                let got = try store.get(Array(key.utf8))
                let expected = model.snapshot().history[key]?.last.flatMap { v -> [UInt8]? in
                    v.expiresAt != 0 && v.expiresAt <= clock.now ? nil : v.value
                }
                #expect(got?.value == expected, "live read of \(key)")
            }
        }
        try store.close()

        var checked = 0
        for (n, capture) in taken.enumerated() {
            try verify(capture, clock: clock, runCheck: n % 5 == 0, label: "\(policy) seed \(seed) capture \(n) at \(capture.at)")
            checked += 1
        }
        #expect(checked >= 200, "only \(checked) crash points were taken")
        let total = PowerLossTally.shared.add(checked)
        print("power-loss: \(policy) seed \(seed): \(checked) crash states checked (\(total) so far in this run)")
    }

    /// Under `.interval` the flusher indexes only durable changes. When a
    /// newer, unsynced write to a key replaced a synced one in memory, the
    /// synced one is in no index batch: the checkpoint must not move past
    /// it, or a power loss takes the new write and replay skips the old.
    @Test func syncedWriteSurvivesPowerLossWhileANewerUnsyncedOneHeldItBackFromTheIndex() throws {
        let root = TempDir("powerloss-heldback")
        let disk = SimulatedDisk(root: root.path + "/data")
        let clock = ManualClock()
        var options = Self.options(disk: disk, clock: clock, policy: .interval)
        options.flushIntervalMillis = 300  // the flusher gathers; the test acts between its batches
        let store = try LogKV(path: disk.root, options: options)
        try store.put(Array("k".utf8), Array("v1".utf8))
        try store.put(Array("other".utf8), Array("x".utf8))
        try store.sync()  // both durable, neither indexed yet
        try store.put(Array("k".utf8), Array("v2".utf8))  // replaces v1 in memory; not durable
        // Let the flusher commit: "other" goes in, "k" is held back.
        let deadline = Date().addingTimeInterval(5)
        while (try store.stats().pendingIndexEntries) > 1 && Date() < deadline { usleep(20_000) }
        usleep(50_000)
        let image = disk.durableImage()  // v2 gone with the power
        try? store.close()

        let after = SimulatedDisk(root: TempDir("crashimage").path + "/data", image: image)
        var reopenOptions = Self.options(disk: after, clock: clock, policy: .interval)
        reopenOptions.fileSystem = after
        let reopened = try LogKV(path: after.root, options: reopenOptions)
        defer { try? reopened.close() }
        let got = try reopened.get(Array("k".utf8))?.value
        #expect(got == Array("v1".utf8), "k reads \(got.map { String(decoding: $0, as: UTF8.self) } ?? "nothing")")
        #expect(try reopened.get(Array("other".utf8))?.value == Array("x".utf8))
    }

    /// Opens one power-loss state and checks it against the model.
    func verify(_ capture: Capture, clock: ManualClock, runCheck: Bool, label: String) throws {
        let root = TempDir("crashimage")
        let disk = SimulatedDisk(root: root.path + "/data", image: capture.image)
        let options = Self.options(disk: disk, clock: clock, policy: .always)
        let store: LogKV
        do {
            store = try LogKV(path: disk.root, options: options)
        } catch {
            Issue.record("\(label): open failed: \(error)")
            return
        }
        let now = clock.now
        let model = capture.model
        for key in Self.keys {
            let versions = model.history[key] ?? []
            let base = versions.last { $0.op < model.durable }
            var allowed: [[UInt8]?] = [base.map { visible($0, now: now) } ?? nil]
            allowed += versions.filter { $0.op >= model.durable }.map { visible($0, now: now) }
            do {
                let got = try store.get(Array(key.utf8))?.value
                if !allowed.contains(where: { $0 == got }) {
                    Issue.record("\(label): \(key) reads \(got.map { "\($0.count) bytes" } ?? "nothing"); allowed: \(allowed.map { $0.map { "\($0.count) bytes" } ?? "nothing" })")
                }
            } catch {
                Issue.record("\(label): reading \(key) failed: \(error)")
            }
        }
        do {
            let seq = try store.put(Array("probe".utf8), [1])
            #expect(seq > model.issuedSeq, "\(label): seq \(seq) was issued again (\(model.issuedSeq) was acknowledged before)")
            try store.close()
        } catch {
            Issue.record("\(label): write or close after reopen failed: \(error)")
            return
        }
        if runCheck {
            let report = try LogKV.check(path: disk.root, fileSystem: disk)
            #expect(report.isHealthy, "\(label): check after reopen: \(report.problems)")
        }
    }

    private func visible(_ version: Model.Version, now: Int64) -> [UInt8]? {
        if version.expiresAt != 0 && version.expiresAt <= now { return nil }
        return version.value
    }
}

/// Counts crash points across the suite's parallel cases.
final class PowerLossTally: @unchecked Sendable {
    static let shared = PowerLossTally()
    private let lock = NSLock()
    private(set) var total = 0
    @discardableResult
    func add(_ n: Int) -> Int { lock.withLock { total += n; return total } }
}
