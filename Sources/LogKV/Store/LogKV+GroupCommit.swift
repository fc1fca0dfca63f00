import Foundation

/// How a write is acknowledged to its caller.
enum Acknowledgement {
    /// The calling thread waits for the fsync policy (blocking callers).
    case waitHere
    /// The caller is told by callback (event loops, which must not wait).
    /// The callback gets the new seq.
    case notify(@Sendable (Result<UInt64, Error>) -> Void)
}

/// A writer waiting, without a thread of its own, for an fsync that covers
/// its record.
struct DurableWaiter {
    /// `ledger.appended.bytes` once its record was appended.
    let target: UInt64
    let done: @Sendable (Result<Void, Error>) -> Void
}

/// Group commit for callback writers under `.always`: one committer thread
/// runs an fsync whenever writers wait, and every writer whose record that
/// fsync covers is acknowledged by it — whichever connection or thread
/// appended it. While one fsync runs, the writes that arrive meanwhile queue
/// up for the next one, so the fsync rate stays at the disk's and the batch
/// grows with the load.
///
/// Ordering rules kept here (with `runSync`, which it shares with blocking
/// writers):
/// - A waiter is acknowledged only after the ledger covers its target,
///   i.e. after the fsync covering it returned and `runSync` published its
///   change to readers (rule 1).
/// - Once the store is read-only (a failed fsync), every waiter not yet
///   covered gets that error; none is acknowledged by a later fsync (rule 6).
/// - `close()` stops appends first, syncs, then stops the committer, which
///   answers every waiter left before it exits.
///
/// Thread-safety: everything here is guarded by `syncState`; callbacks run
/// on the committer thread with no lock held.
extension LogKV {
    func awaitDurable(upTo target: UInt64, _ done: @escaping @Sendable (Result<Void, Error>) -> Void) {
        let now: Result<Void, Error>? = syncState.withLock {
            if committer.isRunning {
                durableWaiters.append(DurableWaiter(target: target, done: done))
                syncState.broadcast()
                return nil
            }
            // Appended just before `close()` stopped the committer: its
            // final sync covered this record, or failed.
            if ledger.covers(target) { return .success(()) }
            return .failure(writeFailure ?? LogKVError.closed)
        }
        if let now { done(now) }
    }

    func startCommitter() {
        guard options.fsync == .always else { return }
        committer.start { [weak self] in self?.committerLoop() }
    }

    private func committerLoop() {
        syncState.lock()
        while true {
            // Acknowledge everything the last fsync (ours, a blocking
            // writer's, or a rotation's) covers.
            var covered: [DurableWaiter] = []
            if !durableWaiters.isEmpty {
                let synced = ledger
                covered = durableWaiters.filter { synced.covers($0.target) }
                if !covered.isEmpty { durableWaiters.removeAll { synced.covers($0.target) } }
            }
            var failed: [DurableWaiter] = []
            let failure = writeFailure
            if failure != nil {
                failed = durableWaiters
                durableWaiters.removeAll()
            }
            if !covered.isEmpty || !failed.isEmpty {
                syncState.unlock()
                // What the covering fsync published (whoever ran it: a
                // compaction may not deliver for a long while) is delivered
                // before the writers are acknowledged, unless another thread
                // is delivering right now (it will; see `ChangeOutbox`).
                changes.deliver()
                for waiter in covered { waiter.done(.success(())) }
                if let failure { for waiter in failed { waiter.done(.failure(failure)) } }
                syncState.lock()
                continue
            }
            if durableWaiters.isEmpty {
                if committer.stopRequested { break }
                syncState.wait()
                continue
            }
            if ledger.syncInProgress {
                syncState.wait()  // its end broadcasts
                continue
            }
            // Failures make the store read-only; the next turn answers the
            // waiters with that error.
            try? runSync()
        }
        syncState.unlock()
    }

    func stopCommitter() { committer.stop() }
}
