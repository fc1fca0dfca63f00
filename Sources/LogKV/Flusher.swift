import Foundation

/// The background flusher: moves pending KeyDir changes into SQLite in large
/// sorted transactions, each advancing the checkpoint.
///
/// It moves the durable part of `pending` (seq ≤ `durableSeq`) into
/// `flushing` (so writers never wait on SQLite), commits it with the
/// checkpoint at `durableEnd`, then drops it. Readers consult `pending`, then
/// `flushing`, then SQLite, so a change is visible in exactly one of them at
/// every moment: reads always see their own writes. Because only durable
/// changes are indexed, the checkpoint and every row point at bytes a power
/// loss cannot take.
///
/// Failures: the batch goes back under anything newer and is retried with a
/// backoff; after `flushFailuresBeforeRefusingWrites` in a row, writes are
/// refused until a flush succeeds. Closing stops retrying after that many
/// failures: the log holds every record, and the next open replays them.
extension LogKV {
    func startFlusher() {
        state.withLock { flusherRunning = true }
        let thread = Thread { [weak self] in self?.flusherLoop() }
        thread.name = "logkv-flusher"
        thread.start()
    }

    func stopFlusher() {
        state.lock()
        closing = true
        state.broadcast()
        while !flusherExited { state.wait() }
        state.unlock()
    }

    /// Moves the durable part of `pending` into `flushing`. Called with
    /// `state` locked.
    private func takeDurableBatch() {
        if lastSeq <= durableSeq {
            swap(&pending, &flushing)
            return
        }
        for (key, change) in pending where change.seq <= durableSeq {
            flushing[key] = change
        }
        for key in flushing.keys { pending[key] = nil }
    }

    private func flusherLoop() {
        let interval = TimeInterval(options.flushIntervalMillis) / 1000
        let batchTarget = max(1, options.maxPendingEntries / 4)
        state.lock()
        while true {
            let giveUp = closing && flusherFailures >= options.flushFailuresBeforeRefusingWrites
            if pending.isEmpty || giveUp {
                if closing { break }
                _ = state.wait(until: Date(timeIntervalSinceNow: interval))
                continue
            }
            if !closing && pending.count < batchTarget && flusherFailures == 0 {
                // Gather a bigger batch, unless someone is waiting (backpressure
                // or flushIndex broadcasts) — then go at once.
                _ = state.wait(until: Date(timeIntervalSinceNow: interval))
            }
            takeDurableBatch()
            if flushing.isEmpty {
                // Nothing durable yet (`.interval` between fsyncs).
                if closing { break }
                _ = state.wait(until: Date(timeIntervalSinceNow: interval))
                continue
            }
            flushesStarted += 1
            let flushNumber = flushesStarted
            // Not past the first unindexed record of a key held back.
            var checkpoint = durableEnd
            for (key, since) in unindexedSince where flushing[key] == nil && since < checkpoint {
                checkpoint = since
            }
            let logEndAtTake = logEnd
            let maxSeq = durableSeq
            let sizes = sealedSizes.merging([durableEnd.segment: durableEnd.offset]) { $1 }
            sealedSizes.removeAll()
            let batch = flushing
            state.unlock()

            let started = DispatchTime.now()
            let sorted = batch.sortedForIndex()
            var failure: Error?
            do {
                try indexWriterLock.withLock {
                    try indexWriter.apply(sorted, checkpoint: checkpoint, maxSeq: maxSeq, segmentSizes: sizes)
                }
            } catch {
                failure = error
            }
            let nanos = DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds

            state.lock()
            if let failure {
                flusherFailures += 1
                logger.error("index flush failed; will retry", metadata: ["error": "\(failure)", "attempt": "\(flusherFailures)"])
                for (key, change) in flushing {
                    if let newer = pending[key] {
                        pendingBytes -= key.bytes.count + Self.pendingEntryOverhead
                        if newer.seq > change.seq { continue }
                    }
                    pending[key] = change
                }
                flushing = [:]
                sealedSizes.merge(sizes) { old, _ in old }
                flusherError = (failure as? LogKVError) ?? .index(code: 0, message: "\(failure)")
                state.broadcast()
                state.unlock()
                Thread.sleep(forTimeInterval: min(1.0, 0.02 * Double(flusherFailures)))
                state.lock()
                continue
            }
            flusherFailures = 0
            flusherError = nil
            lastCompletedFlushStart = flushNumber
            if !unindexedSince.isEmpty {
                for key in flushing.keys {
                    // A newer write that arrived during the flush starts at
                    // or after the log end at the take.
                    unindexedSince[key] = pending[key] == nil ? nil : logEndAtTake
                }
            }
            for (key, change) in flushing {
                pendingBytes -= key.bytes.count + Self.pendingEntryOverhead
                switch change {
                case let .put(location): cache.updateIfPresent(key, location)
                case .delete, .expire: cache.remove(key)
                }
            }
            flushing = [:]
            flushEpoch &+= 1
            metrics.flushDuration.recordNanoseconds(Int64(nanos))
            metrics.flushBatchSize.record(batch.count)
            metrics.pendingEntries.record(pending.count)
            state.broadcast()
        }
        flusherRunning = false
        flusherExited = true
        state.broadcast()
        state.unlock()
    }
}
