/// What compaction does with one record of an input segment: the keep/drop
/// side of the one rule (`Supersession`), as a pure function of the record,
/// the key's index row and the oldest seq that stays. The compactor
/// (`LogKV+Compaction.swift`) only carries out what it says.
///
/// - The row owns a record when it points at it: as its value, or (for a
///   TTL refresh) as the refresh that set its expiry. An owned record is
///   copied unless it has expired (by the row's expiry, which a refresh may
///   have moved) and hides nothing that stays.
/// - A record whose key's row holds a newer one (or its own copy) is dead.
/// - Otherwise the key was deleted or expired: a record that may hide an
///   older value — a tombstone, an expired value, a TTL refresh (which
///   hides the values before the one it names), or any record while a row
///   exists — is copied while a segment that stays may hold an older
///   record (`minStayingSeq` at most its seq: decided by seq, never by
///   segment id, rule 4).
enum CompactionPlan {
    /// The fate of one record.
    enum Fate: Equatable {
        /// Dead: dropped.
        case drop
        /// Copied, and the row moves to the copy (as its value or its refresh).
        case copyOwned
        /// Copied for what it hides in segments that stay; no row points at it.
        case copyHiding
        /// The row's own value, expired and hiding nothing that stays:
        /// dropped, and the row removed with it.
        case dropWithRow
    }

    static func fate(of header: RecordHeader, segment: UInt64, offset: Int64, row: RecordLocation?,
                     minStayingSeq: UInt64, now: Int64) -> Fate {
        let mayHideOlder = minStayingSeq <= header.seq
        let owned = header.isTTLRefresh
            ? row.map { $0.ttl.segment == segment && $0.ttl.offset == offset && $0.ttl.seq == header.seq } ?? false
            : row.map { $0.segment == segment && $0.offset == offset } ?? false
        if owned, let row {
            if !row.isExpired(now: now) || mayHideOlder { return .copyOwned }
            return header.isTTLRefresh ? .drop : .dropWithRow
        }
        if let row, row.latestSeq >= header.seq { return .drop }
        let expired = !header.isTombstone && !header.isTTLRefresh
            && Supersession.isExpired(expiresAt: header.expiresAt, now: now)
        let hides = header.isTombstone || header.isTTLRefresh || expired || row != nil
        return hides && mayHideOlder ? .copyHiding : .drop
    }
}
