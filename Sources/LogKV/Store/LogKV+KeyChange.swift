/// A change to a key as readers see it, reported to the store's change
/// observer (blocking queries are built on it).
///
/// Contract: the observer is called for every change once it is visible to
/// readers (a read may see it a moment before the observer hears of it),
/// in the order changes became visible, one call at a time, with no lock of
/// the store held: it may read the store, but must not write to it or wait
/// for it. It should be quick: it runs on a writer's, an fsync's, the
/// flusher's or a reader's thread (an event loop's among them), and the
/// changes behind it wait (writers do not). Changes may be reported more than once or out of
/// version order (an expiry observed twice, a compaction dropping a key that
/// had expired); an observer that compares versions handles both.
public struct KeyChange: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A new value; `seq` is its version.
        case put
        /// A delete; `seq` is its tombstone's.
        case delete
        /// The key expired (read, sweep or compaction noticed it); `seq` is
        /// the newest record whose expiry ended it (the value's or its last
        /// TTL refresh's). An expiry writes no record.
        case expire
        /// The value got a new expiry; `seq` is the value's version, which
        /// does not change.
        case ttlRefresh
    }

    public var key: [UInt8]
    public var kind: Kind
    public var seq: UInt64

    init(key: [UInt8], kind: Kind, seq: UInt64) {
        self.key = key
        self.kind = kind
        self.seq = seq
    }

    init(_ key: [UInt8], _ change: KeyDirChange) {
        switch change {
        case let .renew(renewal):
            self.init(key: key, kind: .ttlRefresh, seq: renewal.valueSeq)
        case let .put(location):
            self.init(key: key, kind: .put, seq: location.seq)
        case let .delete(seq):
            self.init(key: key, kind: .delete, seq: seq)
        case let .expire(seq):
            self.init(key: key, kind: .expire, seq: seq)
        }
    }
}

extension LogKV {
    /// Sets (or with nil removes) the one observer of changes; see
    /// `KeyChange` for when it is called and what it may do.
    public func setChangeObserver(_ observer: (@Sendable (KeyChange) -> Void)?) {
        changes.setObserver(observer)
    }

    /// Reports `key`'s expiry if it is due, as a read would, without reading
    /// its value (so observers hear of it).
    ///
    /// - Returns: whether the key is expired now.
    @discardableResult
    public func noticeExpiry(_ key: [UInt8]) throws -> Bool {
        try validate(key: key)
        let observed = try locateObserving(key)
        guard let location = observed.location, location.isExpired(now: options.clock()) else { return false }
        expireLazily(key, location, observedEpoch: observed.epoch)
        return true
    }

    /// Whether a write to `key` is on its way to readers (a TTL refresh
    /// being appended, or under `.always` any write waiting for its fsync):
    /// a read that finds the key expired now may soon find it renewed.
    public func hasWriteInFlight(_ key: [UInt8]) -> Bool {
        let k = KeyBytes(key)
        return state.withLock { writeInFlight(k) }
    }

    /// `hasWriteInFlight`, called with `state` locked.
    func writeInFlight(_ key: KeyBytes) -> Bool {
        keyDir.writeInFlight(key)
    }

    /// The highest seq issued so far (a write's version, a tombstone's, a
    /// TTL refresh's).
    public var lastIssuedSeq: UInt64 { state.withLock { lastSeq } }
}
