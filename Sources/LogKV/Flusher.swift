import Foundation

/// The background flusher: moves pending KeyDir changes into SQLite in large
/// sorted transactions, each advancing the checkpoint.
///
/// It swaps `pending` for an empty map (so writers never wait on SQLite),
/// commits the swapped-out map as `flushing`, then drops it. Readers consult
/// `pending`, then `flushing`, then SQLite, so a change is visible in exactly
/// one of them at every moment: reads always see their own writes.
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

    private func flusherLoop() {
        let interval = TimeInterval(options.flushIntervalMillis) / 1000
        let batchTarget = max(1, options.maxPendingEntries / 4)
        var failures = 0
        state.lock()
        while true {
            if pending.isEmpty {
                if closing { break }
                _ = state.wait(until: Date(timeIntervalSinceNow: interval))
                continue
            }
            if !closing && pending.count < batchTarget && failures == 0 {
                // Gather a bigger batch, unless someone is waiting (backpressure
                // or flushIndex broadcasts) — then go at once.
                _ = state.wait(until: Date(timeIntervalSinceNow: interval))
            }
            swap(&pending, &flushing)
            let checkpoint = logEnd
            let maxSeq = lastSeq
            let sizes = sealedSizes.merging([logEnd.segment: logEnd.offset]) { $1 }
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
                // Put the batch back under anything newer and try again later;
                // the log still holds every record, so nothing is lost.
                failures += 1
                logger.error("index flush failed; will retry", metadata: ["error": "\(failure)", "attempt": "\(failures)"])
                pending = flushing.merging(pending) { _, newer in newer }
                flushing = [:]
                sealedSizes.merge(sizes) { old, _ in old }
                if failures >= 50 {
                    flusherError = (failure as? LogKVError) ?? .index(code: 0, message: "\(failure)")
                }
                state.broadcast()
                state.unlock()
                Thread.sleep(forTimeInterval: min(1.0, 0.01 * Double(failures)))
                state.lock()
                continue
            }
            failures = 0
            flusherError = nil
            for (key, change) in flushing {
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
