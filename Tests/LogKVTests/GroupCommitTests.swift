import Foundation
import Testing
@testable import LogKV

/// Callback writes under `fsync=always` (what the HTTP server uses): one
/// fsync acknowledges every writer waiting, whichever thread appended it;
/// nothing is acknowledged or visible before an fsync covers it; a failed
/// fsync answers every waiter with the error; `close()` answers them all.
@Suite struct GroupCommitTests {
    /// Counts segment fsyncs and can act inside one (under the disk's lock).
    final class SyncProbe: @unchecked Sendable {
        let lock = NSLock()
        var segmentSyncs = 0
        var duringSync: (() -> Int32?)?
        func onSync() -> Int32? {
            let action = lock.withLock { () -> (() -> Int32?)? in
                segmentSyncs += 1
                return duringSync
            }
            return action?()
        }
    }

    func makeStore() throws -> (LogKV, SyncProbe, TempDir) {
        let (store, probe, root, _) = try makeStoreOnDisk()
        return (store, probe, root)
    }

    func makeStoreOnDisk() throws -> (LogKV, SyncProbe, TempDir, SimulatedDisk) {
        let root = TempDir("group-commit")
        let disk = SimulatedDisk(root: root.path + "/data")
        let probe = SyncProbe()
        disk.fault = { op, path in op == .sync && path.hasSuffix(".seg") ? probe.onSync() : nil }
        var options = LogKVOptions.testing(fsync: .always)
        options.fileSystem = disk
        options.segmentSize = 1 << 20
        options.autoCompaction = false
        options.expirySweepPerSecond = 0
        options.logger.logLevel = .critical
        return (try LogKV(path: disk.root, options: options), probe, root, disk)
    }

    /// Collects callback results and lets a test wait for a number of them.
    final class Answers: @unchecked Sendable {
        let condition = NSCondition()
        var results: [Result<UInt64, Error>] = []
        func add(_ result: Result<UInt64, Error>) { condition.withLock { results.append(result); condition.broadcast() } }
        func wait(for count: Int) -> [Result<UInt64, Error>] {
            condition.withLock {
                let deadline = Date(timeIntervalSinceNow: 30)
                while results.count < count && condition.wait(until: deadline) {}
                return results
            }
        }
    }

    @Test func oneFsyncAcknowledgesWritersFromEveryThread() throws {
        let (store, probe, tmp, disk) = try makeStoreOnDisk()
        defer { withExtendedLifetime(tmp) {} }
        // A slow disk: writes arriving during an fsync wait for the next one.
        disk.beforeSync = { path in if path.hasSuffix(".seg") { usleep(10_000) } }
        let threads = 8, perThread = 40
        // Which writer each acknowledgement answered, and how many fsyncs
        // had begun by then: acknowledgements that saw the same count came
        // from one fsync.
        final class Acks: @unchecked Sendable {
            let lock = NSLock()
            var byFsync: [Int: Set<Int>] = [:]
            var failures = 0
        }
        let acks = Acks()
        let answers = Answers()
        // Each writer on a thread of its own: on Dispatch's pool (two
        // threads, shared with the tests running beside this one) the
        // writers ran one or two at a time.
        let group = DispatchGroup()
        for t in 0..<threads {
            group.enter()
            Thread {
                for i in 0..<perThread {
                    try? store.put(Array("t\(t)-\(i)".utf8), Array("v\(t)-\(i)".utf8)) { result in
                        let fsyncs = probe.lock.withLock { probe.segmentSyncs }
                        acks.lock.withLock {
                            if case .failure = result { acks.failures += 1 }
                            acks.byFsync[fsyncs, default: []].insert(t)
                        }
                        answers.add(result)
                    }
                }
                group.leave()
            }.start()
        }
        group.wait()
        let results = answers.wait(for: threads * perThread)
        #expect(results.count == threads * perThread)
        #expect(acks.lock.withLock { acks.failures } == 0)
        let syncs = probe.lock.withLock { probe.segmentSyncs }
        #expect(syncs < threads * perThread / 4, "\(syncs) fsyncs for \(threads * perThread) writes")
        let mostWriters = acks.lock.withLock { acks.byFsync.values.map(\.count).max() ?? 0 }
        #expect(mostWriters >= 2, "no fsync acknowledged writers of two threads")
        for t in 0..<threads {
            for i in 0..<perThread {
                #expect(try store.get(Array("t\(t)-\(i)".utf8))?.value == Array("v\(t)-\(i)".utf8))
            }
        }
        try store.close()
    }

    @Test func aCallbackWriteIsNeitherVisibleNorAcknowledgedBeforeItsFsync() throws {
        let (store, probe, tmp) = try makeStore()
        defer { withExtendedLifetime(tmp) {} }
        let answers = Answers()
        let seenDuringSync = NSLock()
        nonisolated(unsafe) var visibleDuringSync: Bool?
        nonisolated(unsafe) var answeredDuringSync: Int?
        probe.lock.withLock {
            probe.duringSync = {
                let visible = (try? store.get(Array("pending".utf8))) != nil
                seenDuringSync.withLock {
                    if visibleDuringSync == nil {
                        visibleDuringSync = visible
                        answeredDuringSync = answers.condition.withLock { answers.results.count }
                    }
                }
                return nil
            }
        }
        try store.put(Array("pending".utf8), [7]) { answers.add($0) }
        let results = answers.wait(for: 1)
        #expect(results.count == 1)
        #expect((try? results[0].get()) != nil)
        seenDuringSync.withLock {
            #expect(visibleDuringSync == false)
            #expect(answeredDuringSync == 0)
        }
        #expect(try store.get(Array("pending".utf8))?.value == [7])
        try store.close()
    }

    @Test func aFailedFsyncAnswersEveryWaiterWithTheErrorAndPublishesNothing() throws {
        let (store, probe, tmp) = try makeStore()
        defer { withExtendedLifetime(tmp) {} }
        try store.put(Array("before".utf8), [1])
        probe.lock.withLock { probe.duringSync = { EIO } }
        let answers = Answers()
        var accepted = 0
        for i in 0..<20 {
            do {
                try store.put(Array("doomed-\(i)".utf8), [2]) { answers.add($0) }
                accepted += 1
            } catch {}  // refused outright once the store is read-only
        }
        let results = answers.wait(for: accepted)
        #expect(accepted >= 1)
        #expect(results.count == accepted)
        #expect(results.allSatisfy { if case .failure(LogKVError.readOnly) = $0 { true } else { false } })
        for i in 0..<20 { #expect(try store.get(Array("doomed-\(i)".utf8)) == nil) }
        #expect(try store.get(Array("before".utf8))?.value == [1])
        try? store.close()
    }

    @Test func closeAnswersEveryWaiterAndTheirWritesSurviveReopening() throws {
        let root = TempDir("group-commit-close")
        var options = LogKVOptions.testing(fsync: .always)
        options.autoCompaction = false
        options.logger.logLevel = .critical
        let store = try LogKV(path: root.path, options: options)
        let answers = Answers()
        for i in 0..<200 { try store.put(Array("k\(i)".utf8), Array("v\(i)".utf8)) { answers.add($0) } }
        try store.close()
        let results = answers.wait(for: 200)
        #expect(results.count == 200)
        #expect(results.allSatisfy { (try? $0.get()) != nil })
        let reopened = try LogKV(path: root.path, options: options)
        for i in 0..<200 { #expect(try reopened.get(Array("k\(i)".utf8))?.value == Array("v\(i)".utf8)) }
        try reopened.close()
    }
}
