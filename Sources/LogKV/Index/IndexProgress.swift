/// How far the SQLite index has caught up with the log, and the flusher's
/// bookkeeping around it.
///
/// Rules kept here:
/// - `checkpoint` moves only once a flush (or an idle checkpoint) has
///   committed: every record before it is in SQLite. Compaction takes only
///   log segments wholly before it; replay after a crash starts there.
/// - The final sizes of segments sealed since the last flush go into the
///   next flush's commit (`takeSizes`), and come back if it fails
///   (`restoreSizes`, which keeps anything noted since).
/// - A `flushIndex` caller waits for a flush that started after it asked
///   (`started`, `lastCompletedStart`).
/// - `failures` counts flushes that failed in a row: past the store's
///   limit, writes are refused until one succeeds (`refusal`).
///
/// A value type; its owner (`LogKV`) guards it with `state`.
struct IndexProgress {
    private(set) var checkpoint: LogPosition
    private var sealedSizes: [UInt64: Int64]
    /// Entries of the log tail recovered into `pending` at open, until the
    /// flush that takes them commits: writers are not held back for them
    /// (the backlog may reach twice its budget once, after a crash).
    private(set) var recoveredBacklog: Int
    /// The last flush error, and how many flushes in a row failed.
    private(set) var lastError: LogKVError?
    private(set) var failures = 0
    /// Flushes that took a batch, and the number of the last one committed.
    private(set) var started = 0
    private(set) var lastCompletedStart = 0
    /// Callers of `flushIndex` waiting now: the flusher does not linger to
    /// gather a bigger batch while any does (a broadcast alone can come
    /// while it is busy and be missed).
    var waiters = 0
    /// `durableSeq` when the flusher last looked for durable changes, and
    /// whether a durable change (an expiry, a failed batch) came since:
    /// lets it skip scanning a backlog nothing in which became durable.
    private var durableSeqAtLastTake: UInt64 = 0
    private var durableChangeSinceTake = false

    init(checkpoint: LogPosition, sealedSizes: [UInt64: Int64], recoveredBacklog: Int) {
        self.checkpoint = checkpoint
        self.sealedSizes = sealedSizes
        self.recoveredBacklog = recoveredBacklog
    }

    /// As recovery left the index: checkpointed at the start of the tail it
    /// replayed into memory, or at the log's end when there was none.
    init(_ tail: Recovery.RecoveredTail, logEnd: LogPosition) {
        self.init(checkpoint: tail.start ?? logEnd, sealedSizes: tail.sizes, recoveredBacklog: tail.changes.count)
    }

    /// A log segment was sealed at `size` bytes.
    mutating func sealed(_ id: UInt64, size: Int64) { sealedSizes[id] = size }

    /// The sizes the next index commit records: every segment sealed since
    /// the last, and the durable end of the active one.
    mutating func takeSizes(durableEnd: LogPosition) -> [UInt64: Int64] {
        defer { sealedSizes.removeAll() }
        return sealedSizes.merging([durableEnd.segment: durableEnd.offset]) { $1 }
    }

    /// A commit that would have recorded `sizes` failed.
    mutating func restoreSizes(_ sizes: [UInt64: Int64]) {
        sealedSizes.merge(sizes) { notedSince, _ in notedSince }
    }

    /// Whether a durable change may have appeared since the flusher last
    /// looked (worth scanning the backlog for); records this look.
    mutating func takeLook(durableSeq: UInt64, lastSeq: UInt64) -> Bool {
        let nothingNew = lastSeq > durableSeq && durableSeq == durableSeqAtLastTake && !durableChangeSinceTake
        durableSeqAtLastTake = durableSeq
        durableChangeSinceTake = false
        return !nothingNew
    }

    /// A change that is already durable was published (an expiry).
    mutating func noteDurableChange() { durableChangeSinceTake = true }

    /// A flush took a batch; returns its number.
    mutating func beginFlush() -> Int {
        started += 1
        return started
    }

    mutating func flushFailed(_ error: LogKVError) {
        failures += 1
        lastError = error
        durableChangeSinceTake = true  // the batch is durable: retry without waiting for an fsync
    }

    /// Flush `number` committed, moving the checkpoint to `checkpoint`.
    mutating func flushCommitted(_ number: Int, checkpoint: LogPosition) {
        failures = 0
        lastError = nil
        recoveredBacklog = 0  // the first batch took all of pending
        self.checkpoint = checkpoint
        lastCompletedStart = number
    }

    /// An idle checkpoint (no batch) committed.
    mutating func idleCheckpointCommitted(_ checkpoint: LogPosition) { self.checkpoint = checkpoint }

    /// Why writes are refused, after `limit` failed flushes in a row.
    func refusal(after limit: Int) -> LogKVError? {
        guard let lastError, failures >= limit else { return nil }
        return .readOnly(reason: "index cannot be written: \(lastError)")
    }
}
