import Foundation
import Synchronization

/// The background flusher: moves the in-memory KeyDir's durable changes into
/// SQLite in large sorted transactions, each advancing the checkpoint (the
/// ordering rules are `KeyDir`'s: it picks the batch and the checkpoint).
/// Writers never wait on SQLite. Because only durable changes are indexed,
/// the checkpoint and every row point at bytes a power loss cannot take.
///
/// Failures: the batch goes back under anything newer and is retried with a
/// backoff; after `flushFailuresBeforeRefusingWrites` in a row, writes are
/// refused until a flush succeeds. Closing stops retrying after that many
/// failures: the log holds every record, and the next open replays them.
extension LogKV {
    /// How long the checkpoint may stay held back (flush after flush) before
    /// the flusher makes writers wait for one fsync so it can catch up.
    static let pinnedCheckpointCatchUpNanos: UInt64 = 2_000_000_000

    func startFlusher() {
        indexFlusher.thread.start { [weak self] in self?.flusherLoop() }
    }

    /// Asks the flusher to index what is left (giving up after repeated
    /// failures) and waits until it has.
    func stopFlusher() { indexFlusher.thread.stop() }

    private func flusherLoop() {
        let interval = TimeInterval(options.flushIntervalMillis) / 1000
        let batchTarget = max(1, options.maxPendingEntries / 4)
        // Under `.interval`, a backlog this big gets an early fsync (see
        // below): small, frequent fsyncs measured faster than large ones here
        // (the writer's appends stall less behind them).
        let syncTarget = max(1, options.maxPendingEntries / 64)
        // Since when every flush's checkpoint was held back (see below).
        var pinnedSince: UInt64?
        state.lock()
        // `closing`: asked to stop; the loop indexes what is left first.
        var closing: Bool { indexFlusher.thread.stopRequested }
        while true {
            let giveUp = closing && indexProgress.failures >= options.flushFailuresBeforeRefusingWrites
            if !keyDir.hasPending || giveUp {
                if closing { break }
                _ = state.wait(until: Date(timeIntervalSinceNow: interval))
                continue
            }
            gatherBatch(upTo: batchTarget, for: interval)
            if lastSeq > durableSeq && keyDir.pending.count >= syncTarget && writeFailure == nil {
                // Under `.interval` only durable changes may be indexed: a
                // big backlog waiting for the periodic fsync would stall
                // writers on backpressure. fsync now instead (group commit:
                // one fsync covers the whole backlog).
                state.unlock()
                try? sync()
                state.lock()
            }
            // A key rewritten faster than each fsync is never durable when a
            // batch is taken, so its older synced record keeps the checkpoint
            // where it was: replay after a crash grows, and compaction may not
            // take the segments after it. Now and then, stop writers for one
            // fsync so that everything is durable and the checkpoint catches up.
            var holdingWriters = false
            if let since = pinnedSince, writeFailure == nil, !closing,
               DispatchTime.now().uptimeNanoseconds - since >= Self.pinnedCheckpointCatchUpNanos {
                pinnedSince = nil
                state.unlock()
                log.lockForDiskWork()
                holdingWriters = true
                try? sync(writerLockHeld: true)
                state.lock()
            }
            // Finding the durable part of the backlog scans it: only worth it
            // when something became durable since the last look.
            let worthLooking = indexProgress.takeLook(durableSeq: durableSeq, lastSeq: lastSeq)
            let taken = !worthLooking ? nil
                : keyDir.takeDurableBatch(durableSeq: durableSeq, lastSeq: lastSeq, durableEnd: durableEnd, logEnd: logEnd)
            if holdingWriters {
                log.unlockAfterDiskWork()
            }
            guard let batch = taken else {
                if holdingWriters {
                    state.unlock()
                    changes.deliver()  // what the catch-up fsync published
                    state.lock()
                }
                // Nothing durable yet (`.interval` between fsyncs).
                if closing { break }
                _ = state.wait(until: Date(timeIntervalSinceNow: interval))
                continue
            }
            flush(batch, publishedByCatchUp: holdingWriters, pinnedSince: &pinnedSince)
        }
        backlogFullHint.store(false, ordering: .relaxed)
        state.unlock()
    }

    /// Lets `pending` grow towards `target` changes for one `interval`,
    /// unless the store is closing, someone waits (`flushIndex`), a flush
    /// failed or the backlog nears its budget — then it returns at once.
    /// Other wake-ups do not end the gathering: under `always` every fsync
    /// publishes and broadcasts, and flushing at each one made many small
    /// SQLite transactions (their fixed cost took CPU from the event loops).
    /// The deadline is monotonic: a wall clock stepping back must not
    /// stretch it. Called with `state` locked.
    private func gatherBatch(upTo target: Int, for interval: TimeInterval) {
        let gatherUntil = DispatchTime.now().uptimeNanoseconds + UInt64(max(0, interval) * 1e9)
        while !indexFlusher.thread.stopRequested && keyDir.pending.count < target && indexProgress.failures == 0
                && indexProgress.waiters == 0 && backlogFill < 0.5 {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < gatherUntil else { return }
            _ = state.wait(until: Date(timeIntervalSinceNow: Double(gatherUntil - now) / 1e9))
        }
    }

    /// Commits a batch the KeyDir handed over, with its checkpoint, then
    /// settles it: committed, it leaves memory; failed, it goes back under
    /// anything newer, and the flusher backs off before the retry. Called
    /// with `state` locked (released while SQLite commits); returns with it
    /// locked. `pinnedSince` notes since when every commit left the
    /// checkpoint held back before the durable end.
    private func flush(_ batch: KeyDir.Batch, publishedByCatchUp: Bool, pinnedSince: inout UInt64?) {
        let endAtTake = durableEnd
        let flushNumber = indexProgress.beginFlush()
        let maxSeq = durableSeq
        let sizes = indexProgress.takeSizes(durableEnd: durableEnd)
        state.unlock()
        if publishedByCatchUp { changes.deliver() }  // what the catch-up fsync published

        var failure: Error?
        var nanos: UInt64 = 0
        do {
            nanos = try indexFlusher.commit(batch, maxSeq: maxSeq, segmentSizes: sizes)
        } catch {
            failure = error
        }

        state.lock()
        if let failure {
            indexProgress.flushFailed((failure as? LogKVError) ?? .index(code: 0, message: "\(failure)"))
            logger.error("index flush failed; will retry", metadata: ["error": "\(failure)", "attempt": "\(indexProgress.failures)"])
            keyDir.batchFailed()
            indexProgress.restoreSizes(sizes)
            state.broadcast()
            state.unlock()
            Thread.sleep(forTimeInterval: min(1.0, 0.02 * Double(indexProgress.failures)))
            state.lock()
            return
        }
        indexProgress.flushCommitted(flushNumber, checkpoint: batch.checkpoint)
        if batch.checkpoint < endAtTake {
            pinnedSince = pinnedSince ?? DispatchTime.now().uptimeNanoseconds
        } else {
            pinnedSince = nil
        }
        keyDir.batchCommitted(batch)
        if backlogFill < 0.5 { backlogFullHint.store(false, ordering: .relaxed) }
        metrics.flushDuration.recordNanoseconds(Int64(nanos))
        metrics.flushBatchSize.record(batch.changes.count)
        metrics.pendingEntries.record(keyDir.pending.count)
        state.broadcast()
    }

    /// Moves the index checkpoint to the durable end of the log when nothing
    /// waits to be indexed (`flushIndex`): a flush moves it only with a
    /// batch, so after a rotation with no write since, it would stay in the
    /// sealed segment (which compaction may then not take). With `pending`
    /// and `flushing` empty no key holds it back (see `KeyDir`).
    func advanceIdleCheckpoint() throws {
        try indexFlusher.withWriter { writer in
            let target: (end: LogPosition, seq: UInt64, sizes: [UInt64: Int64])? = state.withLock {
                guard keyDir.isEmpty, lastSeq <= durableSeq, indexProgress.checkpoint != durableEnd else { return nil }
                return (durableEnd, durableSeq, indexProgress.takeSizes(durableEnd: durableEnd))
            }
            guard let target else { return }
            do {
                try writer.apply([], checkpoint: target.end, maxSeq: target.seq, segmentSizes: target.sizes)
            } catch {
                state.withLock { indexProgress.restoreSizes(target.sizes) }
                throw error
            }
            state.withLock { indexProgress.idleCheckpointCommitted(target.end) }
        }
    }
}
