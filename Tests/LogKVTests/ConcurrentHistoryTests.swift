import Foundation
import Testing
import LogKVTestSupport
@testable import LogKV

/// Concurrent power-loss exploration: several writer and reader threads on
/// overlapping (hot) keys — puts in both forms, deletes, conditional puts
/// and deletes, lease renewals, reads — with the syncer, the flusher,
/// compactions, sweeps and index flushes running, over a simulated disk
/// whose fsyncs take time (writes land while one runs) and that fails now
/// and then (ENOSPC on appends, at most one EIO on an fsync). Every
/// operation is recorded with its call and return times; the history
/// checker then decides:
///
/// - the live history is linearizable per key (a read never misses an
///   acknowledged write, never sees one from the future, never garbage);
/// - every state a power loss could leave at the sampled moments opens,
///   and what it holds extends the acknowledged history: under `always`
///   every acknowledged write is there or superseded; under `interval` each
///   key holds a state of a prefix of its history, and every write
///   acknowledged before a completed `sync()` began is there or superseded.
///
/// The workload is chosen by seed; thread interleavings are the machine's.
/// `LOGKV_HISTORY_SEEDS=N` runs N seeds per policy (default 8); each seed
/// checks up to `capturesPerRun` crash states.
@Suite struct ConcurrentHistoryTests {
    static let keys = (0..<6).map { "k\($0)" }
    static let seedCount = Int(ProcessInfo.processInfo.environment["LOGKV_HISTORY_SEEDS"] ?? "") ?? 8
    static let seeds: [Int] = Int(ProcessInfo.processInfo.environment["LOGKV_HISTORY_SEED"] ?? "").map { [$0] }
        ?? Array(0..<seedCount)
    static let capturesPerRun = 330
    static let writers = 4
    static let readers = 2
    static let opsPerWriter = 100

    /// A generator shared by the disk's hooks (any thread).
    final class SharedRandom: @unchecked Sendable {
        private let lock = NSLock()
        private var rng: SplitMix
        init(seed: UInt64) { rng = SplitMix(seed: seed) }
        func next(_ range: Range<Int>) -> Int { lock.withLock { Int.random(in: range, using: &rng) } }
        func chance(_ p: Double) -> Bool { lock.withLock { Double.random(in: 0..<1, using: &rng) < p } }
    }

    /// Writes acknowledged before the start of the last `sync()` that
    /// returned: durable whatever the policy.
    final class SyncedWrites: @unchecked Sendable {
        private let lock = NSLock()
        private var ids: Set<UInt64> = []
        func set(_ new: Set<UInt64>) { lock.withLock { ids = new } }
        var current: Set<UInt64> { lock.withLock { ids } }
    }

    struct Capture {
        var image: SimulatedDisk.CrashImage
        var history: [HistoryOperation]
        var synced: Set<UInt64>
        var at: String
    }

    static func options(disk: SimulatedDisk, policy: FsyncPolicy) -> LogKVOptions {
        var options = LogKVOptions.testing(fsync: policy)
        options.fileSystem = disk
        options.segmentSize = 6 * 1024
        options.fsyncIntervalMillis = 2
        options.flushIntervalMillis = 1
        options.autoCompaction = false
        options.expirySweepPerSecond = 0
        options.compactionBytesPerSecond = 0
        options.readConnections = 2
        options.logger.logLevel = .critical
        return options
    }

    /// A value naming its write, padded to vary record sizes across pages.
    static func value(_ writeID: UInt64, padding: Int) -> [UInt8] {
        var out: [UInt8] = []
        RecordCodec.appendLE(&out, writeID)
        return out + [UInt8](repeating: UInt8(truncatingIfNeeded: writeID), count: padding)
    }

    static func writeID(_ value: [UInt8]) -> UInt64? {
        guard value.count >= 8 else { return nil }
        return value.withUnsafeBytes { RecordCodec.readLE($0, 0) as UInt64 }
    }

    /// What a failed write may have done.
    static func outcome(of error: Error) -> KVOutput {
        switch error as? LogKVError {
        case .preconditionFailed?: return .preconditionFailed
        case .diskFull?: return .failed  // nothing appended
        default: return .unknown  // appended, then refused: a power loss may keep it
        }
    }

    @Test(arguments: [FsyncPolicy.always, .interval], seeds)
    func concurrentHistoriesStayLinearizableAndEveryPowerLossStateExtendsThem(policy: FsyncPolicy, seed: Int) throws {
        let random = SharedRandom(seed: UInt64(seed) &* 104_729 &+ (policy == .always ? 11 : 12))
        let root = TempDir("history")
        let disk = SimulatedDisk(root: root.path + "/data")
        let recorder = HistoryRecorder()
        let synced = SyncedWrites()
        let capturesLock = NSLock()
        var captures: [Capture] = []
        var captureRNG = SplitMix(seed: UInt64(seed) &+ 77)
        var eioInjected = false
        let eioAfter = random.next(0..<10) < 3 ? random.next(200..<400) : Int.max  // a third of the runs
        var fsyncs = 0
        disk.crashPoint = { op, path in
            capturesLock.withLock {
                guard captures.count < Self.capturesPerRun else { return }
                // Under `interval` fsyncs are few: most states come from writes.
                let writeShare = policy == .always ? 0.15 : 0.6
                guard op != .write || Double.random(in: 0..<1, using: &captureRNG) < writeShare else { return }
                let image = disk.crashImage(using: &captureRNG)
                var history = recorder.operations
                history = history.map { var o = $0; if o.returned == nil { o.output = .unknown }; return o }
                captures.append(Capture(image: image, history: history, synced: synced.current, at: "\(op) \(path)"))
            }
        }
        // A slow disk: an fsync takes up to 2 ms, and writes land meanwhile.
        disk.beforeSync = { path in
            if path.hasSuffix(".seg") { usleep(useconds_t(random.next(0..<2000))) }
        }
        let options = Self.options(disk: disk, policy: policy)
        let store = try LogKV(path: disk.root, options: options)
        // Faults from here on (an open on a full disk fails, and is not the point).
        disk.fault = { op, path in
            guard path.hasSuffix(".seg") else { return nil }
            if op == .write && random.chance(0.01) { return ENOSPC }
            if op == .sync {
                return capturesLock.withLock {
                    fsyncs += 1
                    guard !eioInjected && fsyncs >= eioAfter else { return nil }
                    eioInjected = true
                    return EIO
                }
            }
            return nil
        }
        let runStarted = DispatchTime.now().uptimeNanoseconds
        let nextWrite = LockedBox<UInt64>(1)
        let group = DispatchGroup()
        let writersGroup = DispatchGroup()
        let stop = LockedBox(false)

        for writer in 0..<Self.writers {
            writersGroup.enter()
            Thread.detachNewThread {
                defer { writersGroup.leave() }
                var rng = SplitMix(seed: UInt64(seed * 1000 + writer))
                var seen: [String: UInt64] = [:]  // the last version this client observed per key
                for _ in 0..<Self.opsPerWriter {
                    // Hot keys: k0 and k1 take half of the operations.
                    let key = Bool.random(using: &rng) ? Self.keys[Int.random(in: 0..<2, using: &rng)]
                        : Self.keys[Int.random(in: 0..<Self.keys.count, using: &rng)]
                    let k = Array(key.utf8)
                    let roll = Int.random(in: 0..<100, using: &rng)
                    let id = nextWrite.next()
                    let padding = Int.random(in: 0..<600, using: &rng)
                    switch roll {
                    case 0..<35:
                        let op = recorder.call(key: k, op: .put(writeID: id))
                        do {
                            let version = try store.put(k, Self.value(id, padding: padding))
                            seen[key] = version
                            recorder.finish(op, .ok(version: version))
                        } catch { recorder.finish(op, Self.outcome(of: error)) }
                    case 35..<45:
                        // The server's form: acknowledged by callback.
                        let op = recorder.call(key: k, op: .put(writeID: id))
                        let answered = DispatchSemaphore(value: 0)
                        let result = LockedBox<Result<UInt64, Error>?>(nil)
                        do {
                            try store.put(k, Self.value(id, padding: padding)) { result.set($0); answered.signal() }
                            answered.wait()
                            let version = try result.get()!.get()
                            seen[key] = version
                            recorder.finish(op, .ok(version: version))
                        } catch { recorder.finish(op, Self.outcome(of: error)) }
                    case 45..<55:
                        let op = recorder.call(key: k, op: .delete)
                        do { recorder.finish(op, .deleted(try store.delete(k))) } catch { recorder.finish(op, Self.outcome(of: error)) }
                    case 55..<67:
                        if let expected = seen[key] {
                            let op = recorder.call(key: k, op: .putIfVersion(writeID: id, expected: expected))
                            do {
                                let version = try store.put(k, Self.value(id, padding: padding), condition: .ifVersion(expected))
                                seen[key] = version
                                recorder.finish(op, .ok(version: version))
                            } catch { recorder.finish(op, Self.outcome(of: error)) }
                        } else {
                            let op = recorder.call(key: k, op: .putIfAbsent(writeID: id))
                            do {
                                let version = try store.put(k, Self.value(id, padding: padding), condition: .ifAbsent)
                                seen[key] = version
                                recorder.finish(op, .ok(version: version))
                            } catch { recorder.finish(op, Self.outcome(of: error)) }
                        }
                    case 67..<72:
                        guard let expected = seen[key] else { continue }
                        let op = recorder.call(key: k, op: .deleteIfVersion(expected: expected))
                        do {
                            recorder.finish(op, try store.delete(k, condition: .ifVersion(expected)) ? .deleted(true) : .preconditionFailed)
                        } catch { recorder.finish(op, Self.outcome(of: error)) }
                    case 72..<82:
                        let op = recorder.call(key: k, op: .refreshTTL)
                        do {
                            // An hour: nothing expires during the run.
                            if let version = try store.refreshTTL(k, expiresAt: LogKVOptions.systemMillis() + 3_600_000) {
                                recorder.finish(op, .ok(version: version))
                            } else {
                                recorder.finish(op, .notFound)
                            }
                        } catch { recorder.finish(op, Self.outcome(of: error)) }
                    default:
                        let op = recorder.call(key: k, op: .get)
                        do {
                            let got = try store.get(k)
                            if let got { seen[key] = got.seq }
                            recorder.finish(op, .value(writeID: got.flatMap { Self.writeID($0.value) }, version: got?.seq))
                        } catch { recorder.finish(op, .unknown) }
                    }
                }
            }
        }
        for reader in 0..<Self.readers {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                var rng = SplitMix(seed: UInt64(seed * 1000 + 500 + reader))
                while !stop.get() {
                    usleep(useconds_t(Int.random(in: 50..<400, using: &rng)))
                    let k = Array(Self.keys[Int.random(in: 0..<Self.keys.count, using: &rng)].utf8)
                    let op = recorder.call(key: k, op: .get)
                    do {
                        let got = try store.get(k)
                        recorder.finish(op, .value(writeID: got.flatMap { Self.writeID($0.value) }, version: got?.seq))
                    } catch { recorder.finish(op, .unknown) }
                }
            }
        }
        // Background work the test drives: compactions, sweeps, index
        // flushes and explicit syncs (a durability point for `interval`).
        group.enter()
        Thread.detachNewThread {
            defer { group.leave() }
            var rng = SplitMix(seed: UInt64(seed * 1000 + 900))
            while !stop.get() {
                usleep(useconds_t(Int.random(in: 500..<3000, using: &rng)))
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: _ = try? store.compact(everything: Bool.random(using: &rng))
                case 1: _ = try? store.sweepExpired(limit: 100)
                case 2: try? store.flushIndex()
                default:
                    let before = Set(recorder.operations.compactMap { op -> UInt64? in
                        guard op.returned != nil, case .ok = op.output, let id = op.input.writeID else { return nil }
                        return id
                    })
                    if (try? store.sync()) != nil { synced.set(synced.current.union(before)) }
                }
            }
        }
        // Writers finish their operations; then the readers and the
        // background thread stop.
        writersGroup.wait()
        stop.set(true)
        group.wait()
        try? store.close()
        disk.crashPoint = nil
        disk.fault = nil
        disk.beforeSync = nil

        let live = checkLinearizable(recorder.operations)
        #expect(live.isOk, "\(policy) seed \(seed) live history: \(live)")
        if case let .illegal(key, _) = live, let dump = ProcessInfo.processInfo.environment["LOGKV_HISTORY_DUMP"] {
            let start = recorder.operations.map(\.call).min() ?? 0
            let lines = recorder.operations.filter { $0.key == key }.sorted { $0.call < $1.call }.map { op in
                "[\((op.call - start) / 1000), \(op.returned.map { String(($0 - start) / 1000) } ?? "-")] \(op.input) -> \(op.output)"
            }
            try? lines.joined(separator: "\n").write(toFile: "\(dump)-\(policy)-\(seed).txt", atomically: true, encoding: .utf8)
        }

        let runEnded = DispatchTime.now().uptimeNanoseconds
        var openNanos: UInt64 = 0, checkNanos: UInt64 = 0
        var checked = 0
        for (n, capture) in captures.enumerated() {
            let label = "\(policy) seed \(seed) capture \(n) at \(capture.at)"
            let recovered: [[UInt8]: UInt64?]
            let t0 = DispatchTime.now().uptimeNanoseconds
            defer { openNanos += DispatchTime.now().uptimeNanoseconds - t0 }
            do {
                recovered = try Self.recoveredState(capture.image, policy: policy)
            } catch {
                Issue.record("\(label): open failed: \(error)")
                continue
            }
            let t1 = DispatchTime.now().uptimeNanoseconds
            let result = checkRecovered(history: capture.history, recovered: recovered,
                                        policy: policy == .always ? .always
                                            : .prefix(mustInclude: capture.synced.union(Self.writtenBefore(recovered, in: capture.history))))
            checkNanos += DispatchTime.now().uptimeNanoseconds - t1
            #expect(result.isOk, "\(label): \(result)")
            checked += 1
        }
        #expect(checked >= 50, "only \(checked) crash states were taken")
        let total = HistoryTally.shared.add(checked)
        print("concurrent history: \(policy) seed \(seed): \(recorder.operations.count) operations, \(checked) crash states checked (\(total) so far in this run); run \((runEnded - runStarted) / 1_000_000) ms, opening states \(openNanos / 1_000_000) ms, checking \(checkNanos / 1_000_000) ms")
    }

    /// What survives is a prefix of the log, across keys: a write that
    /// returned before a surviving write (on any key) was called was
    /// appended before it, so it survives too (or is superseded).
    static func writtenBefore(_ recovered: [[UInt8]: UInt64?], in history: [HistoryOperation]) -> Set<UInt64> {
        let survivors = Set(recovered.values.compactMap { $0 })
        let latestCall = history.filter { $0.input.writeID.map(survivors.contains) ?? false }.map(\.call).max()
        guard let latestCall else { return [] }
        return Set(history.compactMap { op -> UInt64? in
            guard case .ok = op.output, let returned = op.returned, returned < latestCall else { return nil }
            return op.input.writeID
        })
    }

    /// Opens one power-loss state and reads every key: the write each holds.
    static func recoveredState(_ image: SimulatedDisk.CrashImage, policy: FsyncPolicy) throws -> [[UInt8]: UInt64?] {
        let root = TempDir("history-image")
        let disk = SimulatedDisk(root: root.path + "/data", image: image)
        var options = Self.options(disk: disk, policy: policy)
        options.fsyncIntervalMillis = 1_000_000
        options.readConnections = 1
        let store = try LogKV(path: disk.root, options: options)
        defer { try? store.close() }
        var out: [[UInt8]: UInt64?] = [:]
        for key in keys {
            let k = Array(key.utf8)
            out[k] = try store.get(k).flatMap { writeID($0.value) }
        }
        return out
    }
}

/// Counts crash states across the suite's parallel cases.
final class HistoryTally: @unchecked Sendable {
    static let shared = HistoryTally()
    private let lock = NSLock()
    private(set) var total = 0
    @discardableResult
    func add(_ n: Int) -> Int { lock.withLock { total += n; return total } }
}
