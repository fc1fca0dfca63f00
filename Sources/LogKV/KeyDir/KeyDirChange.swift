import Foundation

/// Where a key's latest value record lives, and when it expires.
struct RecordLocation: Equatable, Sendable {
    var segment: UInt64
    var offset: Int64
    /// Whole record length, header included.
    var length: Int
    /// The value record's seq: the key's version (ETag).
    var seq: UInt64
    /// Unix ms; 0 = never. The value record's own, or the latest TTL
    /// refresh's (`ttl`).
    var expiresAt: Int64
    /// The TTL refresh record that set `expiresAt`, if any: its seq and
    /// where it lies (it is live data, accounted and moved by compaction
    /// like the value). `ttl.seq` is 0 when the expiry is the value's own.
    var ttl = RefreshRecord()

    init(segment: UInt64, offset: Int64, length: Int, seq: UInt64, expiresAt: Int64, ttl: RefreshRecord = RefreshRecord()) {
        self.segment = segment
        self.offset = offset
        self.length = length
        self.seq = seq
        self.expiresAt = expiresAt
        self.ttl = ttl
    }

    /// The seq of the key's newest record (value or TTL refresh): what
    /// "newest wins" compares.
    var latestSeq: UInt64 { Swift.max(seq, ttl.seq) }

    func isExpired(now: Int64) -> Bool { Supersession.isExpired(expiresAt: expiresAt, now: now) }

    /// The same value with the expiry a TTL refresh record set.
    func renewed(by renewal: Renewal) -> RecordLocation {
        var copy = self
        copy.expiresAt = renewal.expiresAt
        copy.ttl = renewal.record
        return copy
    }
}

/// Where a TTL refresh record lies (all zero: none).
struct RefreshRecord: Equatable, Sendable {
    var seq: UInt64 = 0
    var segment: UInt64 = 0
    var offset: Int64 = 0
    var length: Int = 0
}

extension RefreshRecord {
    /// The refresh record a scanner found in `segment`.
    init(_ entry: SegmentScanner.Entry, segment: UInt64) {
        self.init(seq: entry.header.seq, segment: segment, offset: entry.offset, length: entry.header.recordLength)
    }
}

/// A TTL refresh of a value that is already in the index: the new expiry,
/// the value version it applies to, and the refresh record. Carries no
/// value location, so compaction moving the value never leaves it stale.
struct Renewal: Equatable, Sendable {
    var valueSeq: UInt64
    var expiresAt: Int64
    var record: RefreshRecord
}

/// A position in the log: just past some record.
struct LogPosition: Comparable, Sendable {
    var segment: UInt64
    var offset: Int64

    static func < (a: LogPosition, b: LogPosition) -> Bool {
        (a.segment, a.offset) < (b.segment, b.offset)
    }
}

/// A change to the KeyDir not yet in SQLite. Newest wins per key.
enum KeyDirChange: Equatable, Sendable {
    /// The key's latest record is a value at this location (or a TTL
    /// refresh of it: `ttl`).
    case put(RecordLocation)
    /// The key was deleted by a tombstone with this seq.
    case delete(seq: UInt64)
    /// The key's record with this seq has expired; remove the key's row
    /// unless it holds a newer record (a newer write wins). Older rows go too:
    /// the expired record hides them.
    case expire(seq: UInt64)
    /// A TTL refresh of the indexed value with `valueSeq`: the row keeps
    /// its location and takes the new expiry (a row holding another value
    /// is left alone).
    case renew(Renewal)

    /// The change a scanned value record or tombstone makes to the KeyDir. A
    /// TTL refresh record changes a value found elsewhere: its reader
    /// resolves it (see `RecordFormat`).
    init(_ header: RecordHeader, segment: UInt64, offset: Int64) {
        precondition(!header.isTTLRefresh, "a TTL refresh is resolved against the value it renews")
        self = header.isTombstone
            ? .delete(seq: header.seq)
            : .put(RecordLocation(segment: segment, offset: offset, length: header.recordLength,
                                  seq: header.seq, expiresAt: header.expiresAt))
    }

    /// The seq of the record that made this change: newest wins by it.
    var seq: UInt64 {
        switch self {
        case let .put(loc): return loc.latestSeq
        case let .delete(seq), let .expire(seq): return seq
        case let .renew(renewal): return renewal.record.seq
        }
    }
}

extension KeyDirChange {
    /// What a key's unflushed change becomes when `self` comes after `old`:
    /// the newer by seq, except that a TTL refresh of the very value `old`
    /// puts joins it (the value is not in the index yet, so a bare renewal
    /// would renew nothing).
    func superseding(_ old: KeyDirChange?) -> KeyDirChange {
        guard let old else { return self }
        if old.seq > seq { return old }
        if case let .renew(renewal) = self, case let .put(value) = old, value.seq == renewal.valueSeq {
            return .put(Supersession.join(value, renewal))
        }
        return self
    }
}

extension Dictionary where Key == KeyBytes, Value == KeyDirChange {
    /// Records a change unless the batch already holds a newer one for the
    /// key (see `KeyDirChange.superseding`).
    mutating func keepNewest(_ key: [UInt8], _ change: KeyDirChange) {
        let k = KeyBytes(key)
        self[k] = change.superseding(self[k])
    }

    /// The batch in key order, as `IndexWriter.apply` takes it.
    func sortedForIndex() -> [([UInt8], KeyDirChange)] {
        sorted { $0.key < $1.key }.map { ($0.key.bytes, $0.value) }
    }
}
