import Foundation

/// The one SQLite writer, and the flusher thread that feeds it batches from
/// the KeyDir (`LogKV+Flusher.swift` runs the loop: it moves changes out of
/// the KeyDir under the store's `state`, then commits them here with no
/// engine lock held).
///
/// Rules it keeps:
/// - One writer at a time: `IndexWriter` is reachable only through
///   `withWriter`, under `lock` — the flusher's batches, compaction's
///   commit, the idle and close-time checkpoints. `lock` is taken with no
///   engine lock held but `compactionLock` (see the lock order at `LogKV`).
/// - A batch commits with its checkpoint in one transaction (`commit`), so
///   the checkpoint never names a record whose change is not in SQLite.
///
/// Thread-safety: `lock` guards the writer; the thread's flags are guarded
/// by the condition it was made with (the store's `state`).
final class IndexFlusher: @unchecked Sendable {
    /// Guarded by `lock`.
    private let writer: IndexWriter
    private let lock = NSLock()
    /// Runs the flusher loop.
    let thread: BackgroundThread

    init(writer: IndexWriter, condition: NSCondition) {
        self.writer = writer
        thread = BackgroundThread(name: "logkv-flusher", condition: condition)
    }

    /// Runs `body` with the writer, as its only user meanwhile.
    func withWriter<T>(_ body: (IndexWriter) throws -> T) rethrows -> T {
        try lock.withLock { try body(writer) }
    }

    /// Commits one batch and its checkpoint; returns how long it took.
    func commit(_ batch: KeyDir.Batch, maxSeq: UInt64, segmentSizes: [UInt64: Int64]) throws -> UInt64 {
        let started = DispatchTime.now().uptimeNanoseconds
        let sorted = batch.changes.sortedForIndex()
        try withWriter { try $0.apply(sorted, checkpoint: batch.checkpoint, maxSeq: maxSeq, segmentSizes: segmentSizes) }
        return DispatchTime.now().uptimeNanoseconds - started
    }
}
