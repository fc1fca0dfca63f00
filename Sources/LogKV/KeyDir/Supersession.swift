/// The rule of which record of a key is live, as pure functions.
///
/// - The newest record wins, by seq; a key's seq is its newest record's,
///   value or TTL refresh (`RecordLocation.latestSeq`).
/// - A TTL refresh renews the value it names (`Renewal.valueSeq`) and
///   leaves that value's seq as the key's version.
/// - A tombstone, and a value whose expiry has passed, hide every older
///   record of the key.
///
/// Who decides it: memory (`KeyDirChange.superseding`, `KeyDir.lookup`,
/// reads joining a renewal to a SQLite row) through `join`; the index
/// (`IndexWriter.apply`, its SQL guards), replay (`Recovery.refreshChange`),
/// the bulk rebuild (`IndexBulkLoad`'s SQL), `dump`, `check` and
/// compaction's keep/drop each apply it to what they see, and
/// `SupersessionDifferentialTests` holds all of them to one model over
/// random histories. Expiry and value sizes are decided here for all.
enum Supersession {
    /// Whether a record with `expiresAt` (unix ms, 0 = never) has expired
    /// at `now`: at its expiry instant it is already gone.
    static func isExpired(expiresAt: Int64, now: Int64) -> Bool {
        expiresAt != 0 && expiresAt <= now
    }

    /// Bytes of the value in a value record `recordLength` long under a key
    /// of `keyCount` bytes.
    static func valueSize(recordLength: Int, keyCount: Int) -> Int {
        recordLength - RecordFormat.recordHeaderSize - keyCount
    }

    static func valueSize(recordLength: Int64, keyCount: Int) -> Int64 {
        Int64(valueSize(recordLength: Int(recordLength), keyCount: keyCount))
    }

    /// What a reader sees of `value` once `renewal` is known: the value with
    /// the renewal's expiry when the renewal names it; otherwise the value
    /// as it is (a newer value superseded the renewal's, or the renewal is
    /// of a value this location no longer holds).
    static func join(_ value: RecordLocation, _ renewal: Renewal) -> RecordLocation {
        value.seq == renewal.valueSeq ? value.renewed(by: renewal) : value
    }
}
