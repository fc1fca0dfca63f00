import CZlib

/// The on-disk format of segment files, described in one place.
///
/// A segment file is a fixed header followed by records, back to back:
///
///     segment header, versions 2 and 3 (64 bytes), all little-endian
///       magic       8  "LOGKVSEG"
///       version     4  format version: 4 (may hold commit records); 3
///                      (the same without them), 2 (without TTL refresh
///                      records either) and 1 are still read
///       kind        4  1 = log segment (written by the writer, records in
///                      seq order), 2 = compaction output (copies of older
///                      records, any order; never replayed)
///       store_id   16  random id of the data directory; an index built for
///                      another directory is recognised and rebuilt
///       high_water  8  the store's highest seq issued when the file was
///                      created: seq never goes backwards past it, whatever
///                      compaction or a restore removed (rule 5)
///       min_seq     8  every record in the file has seq >= this; decides
///                      when a tombstone may be dropped (rule 4)
///       reserved   12  zero
///       crc         4  CRC-32 (zlib) of the 60 bytes before it
///
///     segment header, version 1 (32 bytes): magic 8, version 4 (1),
///       reserved 4, store_id 16. Read as a log segment with high_water and
///       min_seq 0 (nothing known, so nothing is assumed).
///
///     record (37-byte header, then key, then value), all little-endian
///       crc         4  CRC-32 (zlib) over every byte after this field
///       seq         8  store-wide sequence number, strictly increasing per write
///       written_at  8  unix time, milliseconds
///       expires_at  8  unix time, milliseconds; 0 = never
///       flags       1  bit 0 = tombstone, bit 1 = TTL refresh (version 3),
///                      bit 2 = commit record (version 4); one bit at most
///       key_len     4  bytes (0 for a commit record, > 0 otherwise)
///       value_len   4  bytes (0 for a tombstone, 8 for a TTL refresh or
///                      a commit record)
///       key         key_len bytes
///       value       value_len bytes
///
/// A TTL refresh record (a lease renewal, `PATCH ?ttl=`) carries no value:
/// its 8-byte "value" is the seq (little-endian) of the value record it
/// renews, and its `expires_at` replaces that record's. It keeps the
/// value's version (ETag) unchanged and costs a few dozen bytes however
/// large the value.
///
/// A commit record marks a sync point of a log segment: the writer appends
/// one just before each fsync of the active segment (`LogKV.runSync`), and
/// recovery appends one after it made a recovered tail durable. Its `seq`
/// is the last record's before it (it is not a write and issues no seq);
/// its 8-byte value is its own offset in the segment (a copy found
/// elsewhere is not one). The next fsync starts only after the previous
/// one succeeded, and none runs after a failed one, so an intact commit
/// record proves that every byte before the commit record preceding it is
/// durable; it proves it for its own bytes as well when no damage lies
/// between the two. Recovery reads everything before that sync point as
/// durable (damage there is damage, rule 7) and cuts the log at the first
/// damage after it, dropping whatever intact records follow: that is the
/// unsynced tail a power loss wrote back out of order (rule 9). See
/// `SegmentScanner.unsyncedTail`. The last fsync before a clean close, and
/// the one that makes a recovered tail durable, are proven the same way: by
/// one more commit record, synced. Readers of records never see commit
/// records: the scanner consumes them.
///
/// The highest `seq` for a key wins, wherever its record lies; a tombstone or
/// an expired record wins like any other and hides older values. A winning
/// TTL refresh stands for the value record it names, with its own expiry;
/// if that record is gone the key has no value (the refresh hides older
/// ones). Within a log segment consecutive records have consecutive seqs.
enum RecordFormat {
    static let segmentMagic: [UInt8] = Array("LOGKVSEG".utf8)
    /// The version new segments are written in.
    static let formatVersion: UInt32 = 4
    static let segmentHeaderSize = 64
    static let segmentHeaderSizeV1 = 32
    static let recordHeaderSize = 4 + 8 + 8 + 8 + 1 + 4 + 4  // 37

    static let tombstoneFlag: UInt8 = 1 << 0
    static let ttlRefreshFlag: UInt8 = 1 << 1
    static let commitFlag: UInt8 = 1 << 2
    /// A TTL refresh record's value: the renewed record's seq.
    static let ttlRefreshValueSize = 8
    /// A commit record's value: its own offset.
    static let commitValueSize = 8
    static let commitRecordSize = recordHeaderSize + commitValueSize
    /// The first version whose log segments hold commit records.
    static let commitRecordsSince: UInt32 = 4
}

/// What a segment file is (see the header layout above).
enum SegmentKind: UInt32, Sendable {
    case log = 1
    case compacted = 2
}

/// A decoded segment header.
struct SegmentHeader: Equatable, Sendable {
    var version: UInt32 = RecordFormat.formatVersion
    var kind: SegmentKind
    var storeID: [UInt8]
    var highWater: UInt64
    var minSeq: UInt64
    /// Where the first record starts.
    var size: Int { version == 1 ? RecordFormat.segmentHeaderSizeV1 : RecordFormat.segmentHeaderSize }
}

/// A decoded record header.
struct RecordHeader: Equatable, Sendable {
    var crc: UInt32
    var seq: UInt64
    var writtenAt: Int64
    var expiresAt: Int64
    var flags: UInt8
    var keyLength: UInt32
    var valueLength: UInt32

    var isTombstone: Bool { flags & RecordFormat.tombstoneFlag != 0 }
    var isTTLRefresh: Bool { flags & RecordFormat.ttlRefreshFlag != 0 }
    var isCommit: Bool { flags & RecordFormat.commitFlag != 0 }

    /// Whether the flags and the lengths they imply are a combination a
    /// segment of this format version can hold.
    func hasValidFlags(segmentVersion: UInt32) -> Bool {
        switch flags {
        case 0, RecordFormat.tombstoneFlag: return keyLength > 0
        case RecordFormat.ttlRefreshFlag:
            return segmentVersion >= 3 && keyLength > 0 && valueLength == UInt32(RecordFormat.ttlRefreshValueSize)
        case RecordFormat.commitFlag:
            return segmentVersion >= RecordFormat.commitRecordsSince && keyLength == 0
                && valueLength == UInt32(RecordFormat.commitValueSize)
        default: return false
        }
    }
    var recordLength: Int { RecordFormat.recordHeaderSize + Int(keyLength) + Int(valueLength) }
}

enum RecordCodec {
    /// Encodes one record; the CRC covers everything after the crc field.
    static func encode(
        seq: UInt64, writtenAt: Int64, expiresAt: Int64, flags: UInt8,
        key: [UInt8], value: [UInt8]
    ) -> [UInt8] {
        encodeHead(seq: seq, writtenAt: writtenAt, expiresAt: expiresAt, flags: flags,
                   key: key, value: value) + value
    }

    /// The value of a TTL refresh record renewing the record with `seq`.
    static func ttlRefreshValue(renewing seq: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        appendLE(&out, seq)
        return out
    }

    /// A commit record at `offset` following the record with `lastSeq`.
    static func commitRecord(at offset: Int64, lastSeq: UInt64, writtenAt: Int64) -> [UInt8] {
        var value: [UInt8] = []
        appendLE(&value, UInt64(offset))
        return encode(seq: lastSeq, writtenAt: writtenAt, expiresAt: 0, flags: RecordFormat.commitFlag,
                      key: [], value: value)
    }

    /// The seq a TTL refresh record's value names, or nil if it is not one.
    static func renewedSeq(_ value: [UInt8]) -> UInt64? {
        guard value.count == RecordFormat.ttlRefreshValueSize else { return nil }
        return value.withUnsafeBytes { readLE($0, 0) }
    }

    /// Encodes the header and key of a record whose value follows them; the
    /// CRC already covers the value. Lets the writer hand the value to the
    /// kernel without copying it into one buffer first.
    static func encodeHead(
        seq: UInt64, writtenAt: Int64, expiresAt: Int64, flags: UInt8,
        key: [UInt8], value: [UInt8], valueCRC: UInt32? = nil
    ) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(RecordFormat.recordHeaderSize + key.count)
        out.append(contentsOf: [0, 0, 0, 0])
        appendLE(&out, seq)
        appendLE(&out, UInt64(bitPattern: writtenAt))
        appendLE(&out, UInt64(bitPattern: expiresAt))
        out.append(flags)
        appendLE(&out, UInt32(key.count))
        appendLE(&out, UInt32(value.count))
        out.append(contentsOf: key)
        var crc = out.withUnsafeBytes { CRC32.checksum(UnsafeRawBufferPointer(rebasing: $0[4...])) }
        if let valueCRC {
            crc = CRC32.combine(crc, valueCRC, valueLength: value.count)
        } else {
            crc = value.withUnsafeBytes { CRC32.update(crc, $0) }
        }
        out[0] = UInt8(truncatingIfNeeded: crc)
        out[1] = UInt8(truncatingIfNeeded: crc >> 8)
        out[2] = UInt8(truncatingIfNeeded: crc >> 16)
        out[3] = UInt8(truncatingIfNeeded: crc >> 24)
        return out
    }

    /// Decodes a record header from the first 37 bytes of `bytes`.
    static func decodeHeader(_ bytes: UnsafeRawBufferPointer) -> RecordHeader {
        precondition(bytes.count >= RecordFormat.recordHeaderSize)
        return RecordHeader(
            crc: readLE(bytes, 0),
            seq: readLE(bytes, 4),
            writtenAt: Int64(bitPattern: readLE(bytes, 12)),
            expiresAt: Int64(bitPattern: readLE(bytes, 20)),
            flags: bytes[28],
            keyLength: readLE(bytes, 29),
            valueLength: readLE(bytes, 33)
        )
    }

    /// Verifies the CRC of a whole encoded record (header + key + value).
    static func crcMatches(_ record: UnsafeRawBufferPointer, expected: UInt32) -> Bool {
        CRC32.checksum(UnsafeRawBufferPointer(rebasing: record[4...])) == expected
    }

    static func segmentHeader(_ header: SegmentHeader) -> [UInt8] {
        precondition(header.storeID.count == 16)
        var out = RecordFormat.segmentMagic
        appendLE(&out, RecordFormat.formatVersion)
        appendLE(&out, header.kind.rawValue)
        out.append(contentsOf: header.storeID)
        appendLE(&out, header.highWater)
        appendLE(&out, header.minSeq)
        out.append(contentsOf: [UInt8](repeating: 0, count: 12))
        let crc = out.withUnsafeBytes { CRC32.checksum($0) }
        appendLE(&out, crc)
        return out
    }

    /// Parses a segment header of any version this build reads; nil if the
    /// bytes are not one. `bytes` may be longer than the header.
    static func parseSegmentHeader(_ bytes: [UInt8]) -> SegmentHeader? {
        guard bytes.count >= RecordFormat.segmentHeaderSizeV1,
              Array(bytes[0..<8]) == RecordFormat.segmentMagic else { return nil }
        let version: UInt32 = bytes.withUnsafeBytes { readLE($0, 8) }
        switch version {
        case 1:
            return SegmentHeader(version: 1, kind: .log, storeID: Array(bytes[16..<32]), highWater: 0, minSeq: 0)
        case 2, 3, 4:
            guard bytes.count >= RecordFormat.segmentHeaderSize else { return nil }
            return bytes.withUnsafeBytes { raw -> SegmentHeader? in
                let crc: UInt32 = readLE(raw, 60)
                guard CRC32.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<60])) == crc,
                      let kind = SegmentKind(rawValue: readLE(raw, 12)) else { return nil }
                return SegmentHeader(version: version, kind: kind, storeID: Array(bytes[16..<32]),
                                     highWater: readLE(raw, 32), minSeq: readLE(raw, 40))
            }
        default:
            return SegmentHeader(version: version, kind: .log, storeID: Array(bytes[16..<32]), highWater: 0, minSeq: 0)
        }
    }

    static func appendLE<T: FixedWidthInteger>(_ out: inout [UInt8], _ v: T) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }

    static func readLE<T: FixedWidthInteger>(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> T {
        var v: T = 0
        withUnsafeMutableBytes(of: &v) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + MemoryLayout<T>.size]))
        }
        return T(littleEndian: v)
    }
}

/// CRC-32 (IEEE) from zlib.
enum CRC32 {
    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        update(0, bytes)
    }

    /// The CRC of a + b from checksum(a), checksum(b) and b's length, so a
    /// value's CRC can be computed before the writer lock is taken.
    static func combine(_ crcA: UInt32, _ crcB: UInt32, valueLength: Int) -> UInt32 {
        UInt32(crc32_combine(uLong(crcA), uLong(crcB), off_t(valueLength)))
    }

    /// Continues a CRC over more bytes: update(checksum(a), b) == checksum(a + b).
    static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return UInt32(crc32_z(uLong(crc), base.assumingMemoryBound(to: Bytef.self), bytes.count))
    }
}
