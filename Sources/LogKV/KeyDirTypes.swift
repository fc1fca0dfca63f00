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

    func isExpired(now: Int64) -> Bool { expiresAt != 0 && expiresAt <= now }

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
            return .put(value.renewed(by: renewal))
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

/// A record compaction copied (or drops): where it was, where it went.
/// For a drop, `new` is the row as compaction saw it (its seqs decide).
struct CompactionMove {
    var key: [UInt8]
    var oldSegment: UInt64
    var oldOffset: Int64
    var new: RecordLocation
    /// A TTL refresh record (the row's `ttl_*` columns move), not a value.
    var isRefresh = false
}

/// What a compaction did.
public struct CompactionReport: Equatable, Sendable {
    public var segmentsCompacted = 0
    public var segmentsWritten = 0
    public var bytesRead: Int64 = 0
    public var bytesWritten: Int64 = 0
    /// Disk bytes freed: input sizes minus output sizes.
    public var bytesReclaimed: Int64 = 0
    public var keysMoved = 0
    public var expiredDropped = 0
    public var seconds = 0.0

    public init() {}
}

/// A key in a listing.
public struct KeyInfo: Equatable, Sendable {
    public var key: [UInt8]
    /// The version of the key's value (its record's seq).
    public var seq: UInt64
    /// Unix ms, or nil when the key never expires.
    public var expiresAt: Int64?
    public var valueSize: Int
}

/// A value read from the store.
public struct StoredValue: Equatable, Sendable {
    public var value: [UInt8]
    /// The version of this value: its record's seq, strictly increasing per
    /// write across the store. Usable as an ETag.
    public var seq: UInt64
    /// Unix ms when written.
    public var writtenAt: Int64
    /// Unix ms, or nil when the key never expires.
    public var expiresAt: Int64?
}

/// A condition on a write, checked atomically with it.
public enum WriteCondition: Equatable, Sendable {
    case none
    /// Only if the key's current version has this seq (0, never issued,
    /// never matches).
    case ifVersion(UInt64)
    /// Only if the key's current version is one of these.
    case ifAnyVersion([UInt64])
    /// Only if the key does not exist (or has expired).
    case ifAbsent
    /// Only if the key exists, whatever its version.
    case ifPresent
}

/// A snapshot of the store's size and health.
public struct LogKVStats: Equatable, Sendable {
    /// Keys in the index (expired keys not yet swept included); the pending
    /// backlog may add to or take from it.
    public var keys: Int64
    /// Bytes of the live keys' values (what logkv-store calls `total_size`).
    public var valueBytes: Int64
    public var liveBytes: Int64
    public var deadBytes: Int64
    public var totalBytes: Int64
    public var segments: Int
    /// Index changes not yet in SQLite.
    public var pendingIndexEntries: Int
    public var lastSeq: UInt64
}

/// A key as a dictionary key: hashes its bytes in one call and orders them
/// with memcmp (the order SQLite uses for BLOBs), where `[UInt8]` would hash
/// and compare byte by byte.
struct KeyBytes: Hashable, Comparable, Sendable {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    static func == (a: KeyBytes, b: KeyBytes) -> Bool { a.bytes == b.bytes }

    static func < (a: KeyBytes, b: KeyBytes) -> Bool { compare(a.bytes, b.bytes) < 0 }

    static func compare(_ a: [UInt8], _ b: [UInt8]) -> Int {
        let n = min(a.count, b.count)
        let c = a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in n == 0 ? 0 : memcmp(pa.baseAddress!, pb.baseAddress!, n) } }
        if c != 0 { return Int(c) }
        return a.count - b.count
    }
}
