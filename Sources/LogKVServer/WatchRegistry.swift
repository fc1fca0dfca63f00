import LogKV
import NIOConcurrencyHelpers
import NIOCore

/// The index blocking queries compare (`X-Logkv-Index`), one definition.
///
/// A put or a delete with seq `s` has index `2s`; an expiry of a key whose
/// newest record has seq `s` has index `2s + 1`. An expiry writes no record
/// and takes no seq, yet must be a change a watcher can tell from the write
/// it ended and from any later write: between `2s` and `2(s + 1)` there is
/// exactly room for it. A TTL refresh keeps its key's index (it changes no
/// value). Every index a key takes is above every earlier one.
enum WatchIndex {
    static func write(_ seq: UInt64) -> UInt64 { seq &* 2 }
    static func expiry(_ seq: UInt64) -> UInt64 { seq &* 2 &+ 1 }

    /// The index of a change, or nil for one that does not change a key's
    /// index (a TTL refresh).
    static func of(_ change: KeyChange) -> UInt64? {
        switch change.kind {
        case .put, .delete: return write(change.seq)
        case .expire: return expiry(change.seq)
        case .ttlRefresh: return nil
        }
    }
}

/// Who waits for which keys and prefixes, and the indexes reads report.
///
/// - A present key's index is its value's (`WatchIndex.write(version)`).
/// - A missing key's index is that of its last delete or expiry while it is
///   remembered (the last `removalMemory` of them), else `removalFloor`: at
///   least every removal index forgotten or made before the server started.
///   The floor moves only when a removal is forgotten, so watchers of
///   missing keys are not woken by writes to other keys.
/// - A prefix's index is that of the last change under it since a blocking
///   listing first asked for it; for listings every change takes an index
///   above all earlier ones (its key index, or one more than the last when
///   that is higher, as for the expiry of an old key) (tracked for the last
///   `prefixMemory` such prefixes; every write checks one slice of its key
///   per distinct tracked length); an untracked prefix, and a tracked one at
///   first, reports the index of the last change the server has seen, so no earlier
///   change is missed (one early answer at worst).
///
/// A change wakes only the watchers of its key and of the watched prefixes
/// it falls under; a woken watcher re-reads and answers only if the index
/// moved past the one it was given.
///
/// Thread-safety: all state behind one lock, a leaf (nothing else is taken
/// while it is held). `record` runs on the store's delivering thread (see
/// `KeyChange`), just after the change became visible: it does nothing but
/// bookkeeping; wake-ups are scheduled on the watchers' loops. A read in
/// between may report the index from before the change; a watcher given it
/// is woken by `record` and answers then.
final class WatchRegistry: Sendable {
    /// Something waiting: `wake` schedules its re-evaluation (on its loop).
    struct Waiter: Sendable {
        let wake: @Sendable () -> Void
    }

    private struct State {
        var keyWaiters: [[UInt8]: [UInt64: Waiter]] = [:]
        var prefixWaiters: [[UInt8]: [UInt64: Waiter]] = [:]
        var held = 0
        var nextID: UInt64 = 1
        var closed = false
        var removals: [[UInt8]: UInt64] = [:]
        var removalOrder = CircularBuffer<[UInt8]>()
        var removalFloor: UInt64
        var removalBytes = 0
        var prefixBytes = 0
        var prefixIndexes: [[UInt8]: UInt64] = [:]
        var prefixOrder = CircularBuffer<[UInt8]>()
        /// How many tracked prefixes have each length (a change checks one
        /// slice of its key per length).
        var prefixLengths: [Int: Int] = [:]
        /// The index of the last change seen, in the order changes were
        /// seen (what listings report; see `record`).
        var seen: UInt64
    }

    let limit: Int
    /// Key bytes the remembered removals and tracked prefixes may hold (keys
    /// may be 64 KiB each). Prefix bytes also bound the work of every write,
    /// which checks one slice of its key per distinct tracked length.
    static let removalMemoryBytes = 16 << 20
    static let prefixMemoryBytes = 64 << 10
    private let removalMemory: Int
    private let prefixMemory: Int
    private let state: NIOLockedValueBox<State>

    /// - Parameters:
    ///   - startSeq: the store's last seq when serving starts; every change
    ///     before it has an index at most `WatchIndex.expiry(startSeq)`.
    ///   - limit: most requests held at once.
    init(startSeq: UInt64, limit: Int, removalMemory: Int = 100_000, prefixMemory: Int = 10_000) {
        self.limit = limit
        self.removalMemory = max(1, removalMemory)
        self.prefixMemory = max(1, prefixMemory)
        let start = WatchIndex.expiry(startSeq)
        state = NIOLockedValueBox(State(removalFloor: start, seen: start))
    }

    // MARK: Changes (called by the store's change observer)

    func record(_ change: KeyChange) {
        guard let index = WatchIndex.of(change) else {
            // A TTL refresh moves no index, but a key's watchers re-read to
            // time their wait to its new expiry.
            let woken = state.withLockedValue { $0.keyWaiters[change.key].map { Array($0.values) } ?? [] }
            for waiter in woken { waiter.wake() }
            return
        }
        var woken: [Waiter] = []
        state.withLockedValue { s in
            // Listings compare indexes across keys: every change takes one
            // above all earlier ones (the expiry of an old key has a key
            // index below writes made since, yet changes the listing now).
            let event = max(index, s.seen &+ 1)
            s.seen = event
            if change.kind != .put {
                if s.removals.updateValue(max(index, s.removals[change.key] ?? 0), forKey: change.key) == nil {
                    s.removalOrder.append(change.key)
                    s.removalBytes += change.key.count
                    while s.removals.count > removalMemory || s.removalBytes > Self.removalMemoryBytes,
                          let oldest = s.removalOrder.popFirst() {
                        s.removalBytes -= oldest.count
                        if let forgotten = s.removals.removeValue(forKey: oldest) {
                            s.removalFloor = max(s.removalFloor, forgotten)
                        }
                    }
                }
            }
            for (length, _) in s.prefixLengths where length <= change.key.count {
                let prefix = Array(change.key[..<length])
                if let old = s.prefixIndexes[prefix] {
                    s.prefixIndexes[prefix] = max(old, event)
                    if let waiters = s.prefixWaiters[prefix] { woken += waiters.values }
                }
            }
            if let waiters = s.keyWaiters[change.key] { woken += waiters.values }
        }
        for waiter in woken { waiter.wake() }
    }

    // MARK: Indexes reads report

    /// The index of a key read as missing.
    func missingKeyIndex(_ key: [UInt8]) -> UInt64 {
        state.withLockedValue { $0.removals[key] ?? $0.removalFloor }
    }

    /// The index of the listing of `prefix`. With `track` (a blocking
    /// listing) the prefix is tracked from now on; an untracked one reports
    /// the index of the last change seen, which no change under it can have passed.
    func prefixIndex(_ prefix: [UInt8], track: Bool) -> UInt64 {
        state.withLockedValue { s in
            if let index = s.prefixIndexes[prefix] { return index }
            guard track else { return s.seen }
            s.prefixIndexes[prefix] = s.seen
            s.prefixLengths[prefix.count, default: 0] += 1
            s.prefixOrder.append(prefix)
            s.prefixBytes += prefix.count
            // Forget the oldest unwatched prefixes beyond the bounds (a
            // watched one goes back in line).
            var looked = 0
            let inLine = s.prefixOrder.count  // each is looked at once at most
            while s.prefixIndexes.count > prefixMemory || s.prefixBytes > Self.prefixMemoryBytes,
                  looked < inLine, let oldest = s.prefixOrder.popFirst() {
                looked += 1
                if s.prefixWaiters[oldest] != nil {
                    s.prefixOrder.append(oldest)
                    continue
                }
                s.prefixIndexes[oldest] = nil
                s.prefixBytes -= oldest.count
                s.prefixLengths[oldest.count]! -= 1
                if s.prefixLengths[oldest.count] == 0 { s.prefixLengths[oldest.count] = nil }
            }
            return s.seen
        }
    }

    // MARK: Waiters

    enum Subject { case key([UInt8]), prefix([UInt8]) }

    /// Registers a waiter; nil when `limit` requests are already held or the
    /// server is shutting down.
    func add(_ subject: Subject, _ waiter: Waiter) -> UInt64? {
        state.withLockedValue { s in
            guard !s.closed, s.held < limit else { return nil }
            let id = s.nextID
            s.nextID += 1
            s.held += 1
            switch subject {
            case let .key(key): s.keyWaiters[key, default: [:]][id] = waiter
            case let .prefix(prefix): s.prefixWaiters[prefix, default: [:]][id] = waiter
            }
            return id
        }
    }

    func remove(_ subject: Subject, id: UInt64) {
        state.withLockedValue { s in
            switch subject {
            case let .key(key):
                guard s.keyWaiters[key]?.removeValue(forKey: id) != nil else { return }
                if s.keyWaiters[key]!.isEmpty { s.keyWaiters[key] = nil }
            case let .prefix(prefix):
                guard s.prefixWaiters[prefix]?.removeValue(forKey: id) != nil else { return }
                if s.prefixWaiters[prefix]!.isEmpty { s.prefixWaiters[prefix] = nil }
            }
            s.held -= 1
        }
    }

    var held: Int { state.withLockedValue { $0.held } }

    /// Shutdown: refuses new waiters and wakes every held one (each sees
    /// `isClosed` and answers with what it has).
    func close() {
        let all: [Waiter] = state.withLockedValue { s in
            s.closed = true
            return s.keyWaiters.values.flatMap(\.values) + s.prefixWaiters.values.flatMap(\.values)
        }
        for waiter in all { waiter.wake() }
    }

    var isClosed: Bool { state.withLockedValue { $0.closed } }
}
