import Foundation
import Testing
import LogKVTestSupport
@testable import LogKV

/// `putWithoutWaiting`, the write event loops make: it never waits on the
/// disk. Where an append would wait it writes nothing and says so.
@Suite struct WriteWithoutWaitingTests {
    func openStore(_ disk: SimulatedDisk, fsync: FsyncPolicy, segmentSize: Int64 = 1 << 20) throws -> LogKV {
        var options = LogKVOptions.testing(fsync: fsync)
        options.fileSystem = disk
        options.segmentSize = segmentSize
        options.autoCompaction = false
        options.expirySweepPerSecond = 0
        options.logger.logLevel = .critical
        return try LogKV(path: disk.root, options: options)
    }

    /// Appends with `putWithoutWaiting`, returning the outcome and, when
    /// appended, the acknowledgement.
    func putWithoutWaiting(_ store: LogKV, _ key: String, _ value: String) throws -> (LogKV.ImmediateWrite, Result<UInt64, Error>?) {
        let done = DispatchSemaphore(value: 0)
        let result = LockedBox<Result<UInt64, Error>?>(nil)
        let outcome = try store.putWithoutWaiting(bytes(key), bytes(value)) { r in
            result.set(r)
            done.signal()
        }
        if case .appended = outcome { done.wait() }
        return (outcome, result.get())
    }

    @Test(arguments: [FsyncPolicy.always, .interval, .never])
    func anAppendThatNeedsNoWaitingIsAcknowledgedLikeAPut(fsync: FsyncPolicy) throws {
        let root = TempDir("nowait")
        let disk = SimulatedDisk(root: root.path + "/data")
        let store = try openStore(disk, fsync: fsync)
        defer { try? store.close() }
        let (outcome, result) = try putWithoutWaiting(store, "k", "v")
        guard case .appended = outcome, case let .success(seq)? = result else {
            Issue.record("expected an appended, acknowledged write, got \(outcome) \(String(describing: result))")
            return
        }
        #expect(try store.get(bytes("k"))?.value == bytes("v"))
        #expect(try store.get(bytes("k"))?.seq == seq)
    }

    @Test(.timeLimit(.minutes(1)))
    func aWriteArrivingWhileARotationFsyncsIsRefusedAtOnceAndWritesNothing() throws {
        let root = TempDir("nowait-rotation")
        let disk = SimulatedDisk(root: root.path + "/data")
        // `.never`: the only segment fsyncs are rotations' (and close's).
        let store = try openStore(disk, fsync: .never, segmentSize: 4096)
        defer { try? store.close() }
        try store.put(bytes("k"), bytes("before"))
        // Hold the next segment fsync (the rotation's) at a gate.
        let gate = DispatchSemaphore(value: 0)
        let reached = DispatchSemaphore(value: 0)
        let holding = LockedBox(true)
        disk.beforeSync = { path in
            guard path.hasSuffix(".seg"), holding.get() else { return }
            holding.set(false)
            reached.signal()
            gate.wait()
        }
        let rotating = Thread {
            // Fills the segment: the last of these rotates.
            for n in 0..<8 { _ = try? store.put(bytes("fill-\(n)"), [UInt8](repeating: 1, count: 1000)) }
        }
        rotating.start()
        reached.wait()
        let seqBefore = store.lastIssuedSeq
        let started = DispatchTime.now()
        let (outcome, _) = try putWithoutWaiting(store, "k", "during the rotation")
        let waited = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        let seqWhileHeld = store.lastIssuedSeq
        gate.signal()
        guard case .wouldBlock = outcome else {
            Issue.record("a write during a rotation's fsync was appended instead of refused: \(outcome)")
            return
        }
        #expect(waited < 5)  // it did not wait for the gate
        #expect(seqWhileHeld == seqBefore)
        // Once the rotation is done the same write goes through.
        try #require(eventually(timeout: 30) { (try? store.get(bytes("fill-7"))) != nil })
        #expect(try store.get(bytes("k"))?.value == bytes("before"))
        let (after, result) = try putWithoutWaiting(store, "k", "after")
        if case .appended = after, case .success? = result {} else {
            Issue.record("expected the write to go through after the rotation: \(after)")
        }
        #expect(try store.get(bytes("k"))?.value == bytes("after"))
    }

    @Test func aWriteThatWouldRotateTheSegmentIsLeftToAThreadThatMayWait() throws {
        let root = TempDir("nowait-full")
        let disk = SimulatedDisk(root: root.path + "/data")
        let store = try openStore(disk, fsync: .never, segmentSize: 4096)
        defer { try? store.close() }
        var refused = 0
        for n in 0..<16 {
            let (outcome, _) = try putWithoutWaiting(store, "k\(n)", String(repeating: "x", count: 1000))
            if case .wouldBlock = outcome {
                refused += 1
                try store.put(bytes("k\(n)"), bytes(String(repeating: "x", count: 1000)))  // rotates
            }
        }
        #expect(refused >= 2)
        for n in 0..<16 { #expect(try store.get(bytes("k\(n)"))?.value.count == 1000) }
    }
}
