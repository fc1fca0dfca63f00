import Foundation
import Testing
import LogKVTestSupport
@testable import LogKV

/// Two writers on one key whose fsyncs overlap, under `fsync=always`: the
/// write an fsync covered is acknowledged, visible and durable even when a
/// newer write to its key was appended while that fsync ran (rules 1, 11).
/// Each step is forced by holding the simulated disk's fsyncs at a gate.
@Suite struct OverlappingWritersTests {
    /// Holds each segment fsync twice, until the test opens it: before it
    /// makes anything durable (`.before`), and after, before it returns
    /// (`.after`). The n-th fsync (from 1) waits at both.
    final class SyncGates: @unchecked Sendable {
        enum Phase: Hashable { case before, after }
        private let condition = NSCondition()
        private var started = 0
        private var reached: Set<[Int]> = []
        private var opened: Set<[Int]> = []
        private var failing: Set<Int> = []
        private var allOpen = false
        private func key(_ n: Int, _ phase: Phase) -> [Int] { [n, phase == .before ? 0 : 1] }

        /// Called by the disk at each phase of every segment fsync.
        func pass(_ phase: Phase) -> Int {
            condition.withLock {
                if phase == .before { started += 1 }
                let n = started
                reached.insert(key(n, phase))
                condition.broadcast()
                while !allOpen && !opened.contains(key(n, phase)) { condition.wait() }
                return n
            }
        }
        func open(_ n: Int, _ phase: Phase, failing fail: Bool = false) {
            condition.withLock {
                opened.insert(key(n, phase))
                if fail { failing.insert(n) }
                condition.broadcast()
            }
        }
        func openBoth(_ n: Int) { open(n, .before); open(n, .after) }
        /// Lets every fsync from now on through (before a close, which syncs).
        func openAll() { condition.withLock { allOpen = true; condition.broadcast() } }
        func shouldFail(_ n: Int) -> Bool { condition.withLock { failing.contains(n) } }
        func waitUntilReached(_ n: Int, _ phase: Phase) {
            condition.withLock {
                let deadline = Date(timeIntervalSinceNow: 60)
                while !reached.contains(key(n, phase)) && condition.wait(until: deadline) {}
            }
        }
    }

    struct Setup {
        var store: LogKV
        var disk: SimulatedDisk
        var gates: SyncGates
        var root: TempDir
        var options: LogKVOptions
    }

    func makeStore() throws -> Setup {
        let root = TempDir("overlap")
        let disk = SimulatedDisk(root: root.path + "/data")
        var options = LogKVOptions.testing(fsync: .always)
        options.fileSystem = disk
        options.segmentSize = 1 << 20
        options.autoCompaction = false
        options.expirySweepPerSecond = 0
        options.flushIntervalMillis = 1
        options.logger.logLevel = .critical
        let store = try LogKV(path: disk.root, options: options)
        try store.put(bytes("k"), bytes("v0"))  // durable before the gates go up
        try store.flushIndex()
        let gates = SyncGates()
        let failed = LockedBox<Int32?>(nil)
        disk.beforeSync = { path in
            guard path.hasSuffix(".seg") else { return }
            let n = gates.pass(.before)
            if gates.shouldFail(n) { failed.set(EIO) }
        }
        disk.afterSync = { path in
            guard path.hasSuffix(".seg") else { return }
            _ = gates.pass(.after)
        }
        disk.fault = { op, path in
            guard op == .sync, path.hasSuffix(".seg"), let err = failed.get() else { return nil }
            failed.set(nil)
            return err
        }
        return Setup(store: store, disk: disk, gates: gates, root: root, options: options)
    }

    /// Runs `body` on a thread of its own; `wait()` returns its result.
    final class Background<T>: @unchecked Sendable {
        private let done = DispatchSemaphore(value: 0)
        private var result: Result<T, Error>?
        init(_ body: @escaping @Sendable () throws -> T) {
            let thread = Thread { [self] in
                result = Result { try body() }
                done.signal()
            }
            thread.start()
        }
        func wait() throws -> T {
            guard done.wait(timeout: .now() + 60) == .success else { throw CancellationError() }
            return try result!.get()
        }
    }

    /// v1's fsync makes it durable; v2 (same key) is appended before that
    /// fsync returns; v2's fsync is held before it starts. Returns once
    /// v1's put has returned.
    func overlap(_ s: Setup) throws -> (v1: UInt64, second: Background<UInt64>) {
        let first = Background { try s.store.put(bytes("k"), bytes("v1")) }
        s.gates.open(1, .before)
        s.gates.waitUntilReached(1, .after)
        let second = Background { try s.store.put(bytes("k"), bytes("v2")) }
        // v2 is appended (its writer then waits for the fsync in progress).
        try #require(eventually(timeout: 60) { s.store.lastIssuedSeq >= 3 })
        s.gates.open(1, .after)
        let v1 = try first.wait()
        s.gates.waitUntilReached(2, .before)
        return (v1, second)
    }

    @Test func anAcknowledgedWriteIsVisibleWhenANewerWriteToItsKeyWasAppendedDuringItsFsync() throws {
        let s = try makeStore()
        let (v1, second) = try overlap(s)
        let read = try s.store.get(bytes("k"))
        #expect(read?.value == bytes("v1"), "read after v1's ack: \(read.map { String(decoding: $0.value, as: UTF8.self) } ?? "nothing")")
        #expect(read?.seq == v1)
        s.gates.openBoth(2)
        _ = try second.wait()
        #expect(try s.store.get(bytes("k"))?.value == bytes("v2"))
        s.gates.openAll()
        try s.store.close()
    }

    /// Fails fsync `n` (the fsync of the cut that follows may pass), waits
    /// for `writer` to be refused, and checks what readers see meanwhile.
    func failFsync(_ n: Int, of writer: Background<UInt64>, _ s: Setup, stillReads expected: String) throws {
        s.gates.open(n, .before, failing: true)
        s.gates.open(n, .after)
        s.gates.openBoth(n + 1)
        #expect(throws: LogKVError.self) { _ = try writer.wait() }
        #expect(try s.store.get(bytes("k"))?.value == bytes(expected))
    }

    /// Closes the store (after a failure) and opens it again as a process
    /// restart finds it: the kernel kept every byte written.
    func restart(_ s: Setup) throws -> LogKV {
        s.gates.openAll()
        try? s.store.close()
        s.disk.beforeSync = nil
        s.disk.afterSync = nil
        s.disk.fault = nil
        return try LogKV(path: s.disk.root, options: s.options)
    }

    @Test func anAcknowledgedWriteSurvivesRestartWhenTheNewerWriteAppendedDuringItsFsyncFails() throws {
        let s = try makeStore()
        let (v1, second) = try overlap(s)
        try failFsync(2, of: second, s, stillReads: "v1")
        let reopened = try restart(s)
        defer { try? reopened.close() }
        let read = try reopened.get(bytes("k"))
        #expect(read?.value == bytes("v1"), "after restart: \(read.map { String(decoding: $0.value, as: UTF8.self) } ?? "nothing")")
        #expect(read?.seq == v1)
    }

    @Test func aWriteRefusedAfterAFailedFsyncDoesNotComeBackAfterARestart() throws {
        let s = try makeStore()
        let first = Background { try s.store.put(bytes("k"), bytes("refused")) }
        try failFsync(1, of: first, s, stillReads: "v0")
        let reopened = try restart(s)
        defer { try? reopened.close() }
        #expect(try reopened.get(bytes("k"))?.value == bytes("v0"))
    }

    /// The flusher indexes another key covered by the same fsync as v1 (so
    /// the checkpoint moves past v1's record); a power loss then takes v2.
    @Test func anAcknowledgedWriteSurvivesAPowerLossWhenTheNewerWriteAppendedDuringItsFsyncIsLost() throws {
        let s = try makeStore()
        // fsync 1 (of "x") is held before it starts while "o" and v1 are
        // appended, so that fsync 2 covers both.
        let x = Background { try s.store.put(bytes("x"), bytes("x")) }
        s.gates.waitUntilReached(1, .before)
        let o = Background { try s.store.put(bytes("o"), bytes("o")) }
        let first = Background { try s.store.put(bytes("k"), bytes("v1")) }
        try #require(eventually(timeout: 60) { s.store.lastIssuedSeq >= 4 })
        s.gates.openBoth(1)
        _ = try x.wait()
        s.gates.open(2, .before)
        s.gates.waitUntilReached(2, .after)
        let second = Background { try s.store.put(bytes("k"), bytes("v2")) }
        try #require(eventually(timeout: 60) { s.store.lastIssuedSeq >= 5 })
        s.gates.open(2, .after)
        let v1 = try first.wait()
        _ = try o.wait()
        s.gates.waitUntilReached(3, .before)
        // The flusher commits what fsync 2 published, with its checkpoint.
        try #require(eventually(timeout: 60) { (try? s.store.stats().pendingIndexEntries) == 0 })
        let image = s.disk.durableImage()  // v2 never reached the disk
        s.gates.openAll()
        _ = try second.wait()
        try s.store.close()
        let after = SimulatedDisk(root: TempDir("overlap-image").path + "/data", image: image)
        var options = s.options
        options.fileSystem = after
        let reopened = try LogKV(path: after.root, options: options)
        defer { try? reopened.close() }
        let read = try reopened.get(bytes("k"))
        #expect(read?.value == bytes("v1"), "after power loss: \(read.map { String(decoding: $0.value, as: UTF8.self) } ?? "nothing")")
        #expect(read?.seq == v1)
    }
}
