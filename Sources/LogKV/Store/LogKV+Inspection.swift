import Foundation

/// What tests (and tools in this module) may look at, each read under the
/// lock that guards it: they use these instead of the engine's fields and
/// locks.
extension LogKV {
    /// Ids of the log segments (not compaction outputs), ascending.
    var logSegmentIDs: [UInt64] {
        state.withLock { segments.logSegments(excluding: nil).sorted() }
    }

    /// The log segments sealed now (every one but the active).
    var sealedLogSegmentsNow: Set<UInt64> {
        log.lock.withLock { sealedLogSegments() }
    }

    /// The index's durable checkpoint: every record before it is in SQLite.
    var indexCheckpoint: LogPosition {
        state.withLock { indexProgress.checkpoint }
    }

    /// Changes in memory not yet in SQLite (unflushed and being flushed).
    var unindexedChangeCount: Int {
        state.withLock { keyDir.count }
    }
}

extension LogKV {
    /// Holds the index writer — no flush, compaction commit or checkpoint
    /// can commit — until the returned function is called (once).
    func holdIndexWriter() -> @Sendable () -> Void {
        let held = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let flusher = indexFlusher
        Thread.detachNewThread {
            flusher.withWriter { _ in
                held.signal()
                release.wait()
            }
        }
        held.wait()
        return { release.signal() }
    }
}
