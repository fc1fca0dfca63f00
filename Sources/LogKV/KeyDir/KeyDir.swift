/// The in-memory half of the KeyDir, every place a change waits before
/// SQLite: under `.always`, appended but not yet covered by an fsync
/// (`staged`: writers see it, readers do not); visible but not yet in
/// SQLite (`pending`); in the batch the flusher is committing (`flushing`);
/// and a bounded cache of rows read from SQLite. The SQLite half is
/// `IndexWriter` / `IndexReader`; `LogKV` moves changes from here to there
/// (publishing what an fsync covers, and the flusher).
///
/// Ordering rules it owns:
/// - Newest wins per key, by seq: a change never replaces a newer one.
/// - Reads see their own writes: a change is in `pending` or `flushing` until
///   the transaction holding it has committed, so at every moment it is in
///   memory or in SQLite (`lookup` checks `pending`, then `flushing`; the
///   caller then SQLite).
/// - Only durable changes go to SQLite, and the checkpoint never passes a
///   record the index has not taken: under `.interval` a newer unsynced
///   write may replace a synced one in `pending`; the synced record is then
///   in no batch, so `unindexedSince` keeps the checkpoint before it.
/// - `epoch` changes with every commit that may change SQLite rows; a row
///   read from SQLite is cached only if no commit happened meanwhile.
/// - A staged change is published once an fsync covers it, each once, in
///   seq order (`UnsyncedChanges`, rule 11); while a key has one staged, or
///   a TTL refresh of it is between its expiry check and its publish
///   (`writeInFlight`), an expiry noticed by a reader is not published: the
///   write on its way decides.
///
/// Thread-safety: none of its own; `LogKV` keeps it under its `state` lock.
struct KeyDir {
    /// Under `.always`: changes appended but not yet covered by an fsync.
    private var staged = UnsyncedChanges()
    /// Keys with a TTL refresh between its expiry check and its publish.
    private var refreshesInFlight: Set<KeyBytes> = []
    /// Changes not yet handed to the flusher; newest per key.
    private(set) var pending: [KeyBytes: KeyDirChange] = [:]
    /// Changes the flusher is committing now; still visible to readers.
    private(set) var flushing: [KeyBytes: KeyDirChange] = [:]
    /// For each key with records not yet in SQLite, where the oldest starts
    /// (tracked when `tracksUnindexed`: only `.interval` can hold a synced
    /// record back behind an unsynced one).
    private var unindexedSince: [KeyBytes: LogPosition] = [:]
    private let tracksUnindexed: Bool
    /// Where the log tail recovered at open starts, and its newest seq: a
    /// recovered change replaced in memory by a newer one before any batch
    /// took it is a record no batch will take, so that key's
    /// `unindexedSince` goes back to the tail's start.
    private var tailFloor: LogPosition?
    private var tailMaxSeq: UInt64 = 0
    /// Approximate memory of `pending` and `flushing`, for backpressure.
    private(set) var backlogBytes = 0
    private(set) var cache: KeyDirCache
    /// Bumped after every commit that may change SQLite rows.
    private(set) var epoch: UInt64 = 0

    /// Bookkeeping bytes per entry beyond its key (dictionary slot, the
    /// change, the key's array header), for the backlog budget.
    static let entryOverhead = 96

    init(cacheBudgetBytes: Int, tracksUnindexed: Bool) {
        cache = KeyDirCache(budgetBytes: cacheBudgetBytes)
        self.tracksUnindexed = tracksUnindexed
    }

    // MARK: Writers and readers

    /// Stages a change just appended under `.always`, until an fsync covers it.
    mutating func stage(_ key: KeyBytes, _ change: KeyDirChange) { staged.append(key, change) }

    /// The key's newest staged change, joined with those before it: what
    /// writers judge conditions against first.
    func newestStaged(_ key: KeyBytes) -> KeyDirChange? { staged.newest(key) }

    /// Takes, in seq order, every staged change an fsync up to `seq`
    /// covers; the caller publishes each.
    mutating func takeCovered(upTo seq: UInt64) -> [(key: KeyBytes, change: KeyDirChange)] {
        var covered: [(key: KeyBytes, change: KeyDirChange)] = []
        staged.takeCovered(upTo: seq) { covered.append(($0, $1)) }
        return covered
    }

    /// A TTL refresh of `key` read its clock (its expiry check); until
    /// `refreshEnded`, no expiry of the key is published.
    mutating func refreshStarted(_ key: KeyBytes) { refreshesInFlight.insert(key) }
    mutating func refreshEnded(_ key: KeyBytes) { refreshesInFlight.remove(key) }

    /// Whether a write to `key` is on its way to readers: a TTL refresh
    /// being appended, or a staged change waiting for its fsync.
    func writeInFlight(_ key: KeyBytes) -> Bool {
        refreshesInFlight.contains(key) || staged.contains(key)
    }

    /// Makes a change visible to readers, unless a newer one already is.
    /// `recordAt` is where the change's record starts (nil for an expiry,
    /// which writes no record).
    mutating func publish(_ key: KeyBytes, _ change: KeyDirChange, recordAt position: LogPosition? = nil) {
        if let position, tracksUnindexed, unindexedSince[key] == nil {
            unindexedSince[key] = position
        }
        if let old = pending.updateValue(change, forKey: key) {
            let kept = change.superseding(old)
            if kept != change { pending[key] = kept }
            if kept.seq > old.seq { recoveredChangeHidden(key, old) }
        } else {
            backlogBytes += key.bytes.count + Self.entryOverhead
        }
        cache.remove(key)
    }

    /// Takes the log tail recovery read (every change durable, newest per
    /// key) as `pending`, at open, before any write: one move instead of a
    /// publish per key.
    mutating func adoptRecoveredTail(_ tail: Recovery.RecoveredTail) {
        precondition(pending.isEmpty && flushing.isEmpty, "the recovered tail is adopted before any write")
        pending = tail.changes
        backlogBytes = tail.changes.keys.reduce(0) { $0 + $1.bytes.count + Self.entryOverhead }
        tailFloor = tail.changes.isEmpty ? nil : tail.start
        tailMaxSeq = tail.changes.values.reduce(0) { max($0, $1.seq) }
    }

    /// A recovered change (`old`) is being hidden by a newer one before the
    /// index took it: its record, from the tail, is now in no batch.
    private mutating func recoveredChangeHidden(_ key: KeyBytes, _ old: KeyDirChange) {
        guard tracksUnindexed, let tailFloor, old.seq <= tailMaxSeq else { return }
        if let since = unindexedSince[key], since <= tailFloor { return }
        unindexedSince[key] = tailFloor
    }

    /// What memory says about `key`: its unflushed change, else a cached
    /// row (with `fromCache`), else nil (only SQLite can tell). A renewal
    /// comes back joined to its value when that is in memory (the batch
    /// being committed, or the cache); otherwise as `.renew`, for the caller
    /// to join to the SQLite row.
    mutating func lookup(_ key: KeyBytes) -> (change: KeyDirChange, fromCache: Bool)? {
        if let change = pending[key] ?? flushing[key] {
            if case let .renew(renewal) = change {
                if case let .put(value)? = flushing[key], value.seq == renewal.valueSeq {
                    return (.put(Supersession.join(value, renewal)), false)
                }
                if let cached = cache.get(key), cached.seq == renewal.valueSeq {
                    return (.put(Supersession.join(cached, renewal)), false)
                }
            }
            return (change, false)
        }
        if let location = cache.get(key) { return (.put(location), true) }
        return nil
    }

    /// The unflushed change of `key`, if any.
    func unflushed(_ key: KeyBytes) -> KeyDirChange? { pending[key] ?? flushing[key] }

    /// Caches a row read from SQLite at `epochRead`, unless a commit or a
    /// newer change came since.
    mutating func cacheRow(_ key: KeyBytes, _ location: RecordLocation, epochRead: UInt64) {
        if epoch == epochRead && pending[key] == nil && flushing[key] == nil {
            cache.insert(key, location)
        }
    }

    /// Unflushed changes of keys that start with `prefix` and sort after
    /// `after`: they override what SQLite says.
    func overlay(prefix: [UInt8], after: [UInt8]) -> [[UInt8]: KeyDirChange] {
        var out: [[UInt8]: KeyDirChange] = [:]
        for source in [flushing, pending] {
            for (key, change) in source where key.bytes.starts(with: prefix) && KeyBytes.compare(after, key.bytes) < 0 {
                out[key.bytes] = change.superseding(out[key.bytes])
            }
        }
        return out
    }

    /// Every unflushed change, newest per key.
    var allUnflushed: [KeyBytes: KeyDirChange] {
        flushing.merging(pending) { old, new in new.superseding(old) }
    }

    var count: Int { pending.count + flushing.count }
    var hasPending: Bool { !pending.isEmpty }
    var isEmpty: Bool { pending.isEmpty && flushing.isEmpty }

    // MARK: The flusher

    /// A batch to commit to SQLite, and the checkpoint to commit with it.
    struct Batch {
        var changes: [KeyBytes: KeyDirChange]
        var checkpoint: LogPosition
        /// The log end when the batch was taken: a change published later
        /// starts at or after it.
        var logEndAtTake: LogPosition
    }

    /// Moves the durable part of `pending` (seq ≤ `durableSeq`) into
    /// `flushing`, and picks the checkpoint: `durableEnd`, but not past the
    /// first unindexed record of a key held back. Nil when nothing is durable.
    mutating func takeDurableBatch(durableSeq: UInt64, lastSeq: UInt64, durableEnd: LogPosition,
                                   logEnd: LogPosition) -> Batch? {
        var checkpoint = durableEnd
        if lastSeq <= durableSeq {
            // Everything is durable: all of it goes, nothing is held back.
            swap(&pending, &flushing)
        } else {
            // One pass: take the durable changes; the checkpoint stays before
            // the first unindexed record of every key held back (every key
            // in `unindexedSince` is in `pending` or `flushing`).
            for (key, change) in pending {
                if change.seq <= durableSeq {
                    flushing[key] = change
                    continue
                }
                if let since = unindexedSince[key], since < checkpoint {
                    checkpoint = since
                }
            }
            for key in flushing.keys { pending[key] = nil }
        }
        guard !flushing.isEmpty else { return nil }
        return Batch(changes: flushing, checkpoint: checkpoint, logEndAtTake: logEnd)
    }

    /// The batch is in SQLite: it leaves memory (rows go to the cache only
    /// where already cached).
    mutating func batchCommitted(_ batch: Batch) {
        if !unindexedSince.isEmpty {
            for key in flushing.keys {
                unindexedSince[key] = pending[key] == nil ? nil : batch.logEndAtTake
            }
        }
        for (key, change) in flushing {
            backlogBytes -= key.bytes.count + Self.entryOverhead
            switch change {
            case let .put(location): cache.updateIfPresent(key, location)
            case .delete, .expire, .renew: cache.remove(key)
            }
        }
        flushing = [:]
        epoch &+= 1
    }

    /// The batch failed: it goes back under anything newer, to be retried.
    /// (`unindexedSince` is untouched, so the checkpoint stays covered.)
    mutating func batchFailed() {
        for (key, change) in flushing {
            if let newer = pending[key] {
                backlogBytes -= key.bytes.count + Self.entryOverhead
                if newer.seq > change.seq {
                    // A renewal of this very value joins it (see `superseding`).
                    pending[key] = newer.superseding(change)
                    recoveredChangeHidden(key, change)
                    continue
                }
            }
            pending[key] = change
        }
        flushing = [:]
    }

    // MARK: Compaction

    /// Rows moved or dropped by a committed compaction: forget cached rows.
    mutating func rowsRewritten(_ keys: [[UInt8]]) {
        for key in keys { cache.remove(KeyBytes(key)) }
        epoch &+= 1
    }
}
