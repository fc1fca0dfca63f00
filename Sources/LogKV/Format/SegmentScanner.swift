/// Reads the records of one segment in order, through a large buffer.
///
/// `next()` returns records until the end of the segment, or throws `Stop` at
/// the first record that cannot be decoded; `validEnd` is then the offset just
/// past the last good record. `skipDamage()` looks past a bad record for the
/// next intact one, which tells a torn tail (nothing intact follows: what a
/// crash mid-append leaves) from damage (intact records follow: something
/// changed bytes an acknowledged record may have lived in). Callers report
/// what they skip, as LevelDB's log reader does through its `Reporter`.
///
/// Commit records (see `RecordFormat`) are consumed here, never returned:
/// the scanner follows them to know the segment's sync point, and
/// `unsyncedTailHole` turns that into the one rule every reader of a log
/// segment applies to its end (replay, rebuild, `check`, `dump`).
struct SegmentScanner {
    /// A record as scanned, with its place in the segment.
    struct Entry {
        var offset: Int64
        var header: RecordHeader
        var key: [UInt8]
        /// Empty unless the scanner was asked for values.
        var value: [UInt8]
    }

    /// A record that cannot be decoded at `offset`.
    struct Stop: Error {
        var offset: Int64
        var reason: String
    }

    let file: SegmentFile
    let withValues: Bool
    private(set) var validEnd: Int64
    /// The seq of the last good record, for the resync plausibility check.
    private(set) var lastSeq: UInt64?
    private let end: Int64
    /// Everything before this offset is durable, as the commit records read
    /// so far prove (see `RecordFormat`); the scan's start until then.
    private(set) var syncPoint: Int64
    /// Just past the last commit record read, and whether damage was
    /// skipped since it (or since the start).
    private(set) var lastCommitEnd: Int64?
    private var damagedSinceCommit = false
    /// Commit records read so far (never returned by `next()`).
    private(set) var commitRecords = 0
    private var buffer: [UInt8] = []
    private var bufferStart: Int64 = 0

    /// Sanity bound on a declared key or value length: anything beyond it is
    /// garbage, not a record, whatever the configured limits are.
    static let maxDeclaredLength: UInt32 = 1 << 30

    /// - Parameters:
    ///   - offset: where to start: a record boundary the caller knows to be
    ///     durable (the data start, or the index checkpoint).
    ///   - endingAt: where to stop instead of the file's end.
    init(file: SegmentFile, from offset: Int64? = nil, withValues: Bool = false, endingAt limit: Int64? = nil) {
        self.file = file
        self.withValues = withValues
        self.validEnd = offset ?? file.dataStart
        self.end = min(limit ?? file.size, file.size)
        self.syncPoint = validEnd
    }

    mutating func next() throws -> Entry? {
        while true {
            let offset = validEnd
            if offset >= end { return nil }
            guard let entry = try decode(at: offset, requireLaterSeq: false) else {
                throw Stop(offset: offset, reason: try diagnose(at: offset))
            }
            validEnd = offset + Int64(entry.header.recordLength)
            lastSeq = entry.header.seq
            if entry.header.isCommit {
                commitRecords += 1
                passCommit(entry)
                continue
            }
            return entry
        }
    }

    /// Moves the sync point on a commit record (see `RecordFormat`): its
    /// existence proves the one before it synced; it proves itself when no
    /// damage lies between them.
    private mutating func passCommit(_ entry: Entry) {
        let named: UInt64 = entry.value.withUnsafeBytes { RecordCodec.readLE($0, 0) }
        guard named == UInt64(entry.offset) else { return }  // a stray copy, not this segment's
        let commitEnd = entry.offset + Int64(entry.header.recordLength)
        if let lastCommitEnd { syncPoint = max(syncPoint, lastCommitEnd) }
        if !damagedSinceCommit { syncPoint = commitEnd }
        lastCommitEnd = commitEnd
        damagedSinceCommit = false
    }

    /// After `next()` threw at `validEnd`, finds the next intact record.
    ///
    /// - Returns: its offset, and `next()` continues there; nil when nothing
    ///   intact follows (a torn tail), and `validEnd` stays at the bad record.
    mutating func skipDamage() throws -> Int64? {
        damagedSinceCommit = true
        var candidate = validEnd + 1
        let last = end - Int64(RecordFormat.recordHeaderSize)
        while candidate <= last {
            if try decode(at: candidate, requireLaterSeq: true) != nil {
                validEnd = candidate
                return candidate
            }
            candidate += 1
        }
        return nil
    }

    /// The record at `offset` if it is whole and its checksum matches.
    private mutating func decode(at offset: Int64, requireLaterSeq: Bool) throws -> Entry? {
        let headerSize = RecordFormat.recordHeaderSize
        guard end - offset >= Int64(headerSize) else { return nil }
        let header = try bytes(at: offset, count: headerSize).withUnsafeBytes { RecordCodec.decodeHeader($0) }
        guard header.keyLength <= Self.maxDeclaredLength,
              header.valueLength <= Self.maxDeclaredLength,
              header.hasValidFlags(segmentVersion: file.header?.version ?? RecordFormat.formatVersion),
              offset + Int64(header.recordLength) <= end else { return nil }
        // A commit record repeats the seq of the record before it.
        if requireLaterSeq, file.kind == .log, let lastSeq,
           header.isCommit ? header.seq < lastSeq : header.seq <= lastSeq { return nil }
        let whole = try bytes(at: offset, count: header.recordLength)
        guard whole.withUnsafeBytes({ RecordCodec.crcMatches($0, expected: header.crc) }) else { return nil }
        let keyStart = whole.startIndex + headerSize
        let keyEnd = keyStart + Int(header.keyLength)
        // A TTL refresh's value (the seq it renews) is what every reader of
        // the record needs.
        return Entry(offset: offset, header: header, key: Array(whole[keyStart..<keyEnd]),
                     value: withValues || header.isTTLRefresh || header.isCommit ? Array(whole[keyEnd...]) : [])
    }

    /// Why the record at `offset` is bad, in words for logs and `check`.
    private mutating func diagnose(at offset: Int64) throws -> String {
        let headerSize = RecordFormat.recordHeaderSize
        guard end - offset >= Int64(headerSize) else { return "record header is cut short" }
        let header = try bytes(at: offset, count: headerSize).withUnsafeBytes { RecordCodec.decodeHeader($0) }
        if header.keyLength > Self.maxDeclaredLength || header.valueLength > Self.maxDeclaredLength
            || !header.hasValidFlags(segmentVersion: file.header?.version ?? RecordFormat.formatVersion) {
            return "record header is garbage"
        }
        if offset + Int64(header.recordLength) > end { return "record is cut short" }
        return "checksum mismatch"
    }

    private mutating func bytes(at offset: Int64, count: Int) throws -> ArraySlice<UInt8> {
        let bufferEnd = bufferStart + Int64(buffer.count)
        if offset < bufferStart || offset + Int64(count) > bufferEnd {
            let want = max(count, 4 << 20)
            let available = Int(min(Int64(want), end - offset))
            buffer = [UInt8](repeating: 0, count: available)
            let got = try buffer.withUnsafeMutableBytes { try file.readInto($0, at: offset) }
            buffer.removeLast(available - got)
            bufferStart = offset
            guard got >= count else {
                throw LogKVError.corruption(segment: file.id, offset: offset, reason: "segment shrank while being read")
            }
        }
        let start = Int(offset - bufferStart)
        return buffer[start..<start + count]
    }
}

/// Where the log of one segment ends for every reader of it: the unsynced
/// tail after the segment's last proven sync point is cut at its first hole.
extension SegmentScanner {
    /// What lies after a log segment's last sync point.
    struct UnsyncedTail: Equatable {
        /// The first damage at or after the sync point: the log ends here.
        /// Nil when nothing after the sync point is damaged.
        var hole: Int64?
        /// Intact records (commit records too) after `hole`: written after
        /// a write the power loss took, they are dropped with it (rule 9).
        var recordsAfterHole = 0
    }

    /// Reads a log segment from `start` (a durable record boundary) to its
    /// end and finds where its log ends (see `RecordFormat`): damage before
    /// the sync point is damage to durable data, which the caller salvages
    /// and reports; the first damage after it is where a power loss cut
    /// the unsynced tail, and nothing after it belongs to the log, however
    /// intact. Segments older than commit records (and compaction outputs)
    /// have no sync point to tell by: nil.
    static func unsyncedTail(of file: SegmentFile, from start: Int64) throws -> UnsyncedTail? {
        guard file.kind == .log, (file.header?.version ?? 0) >= RecordFormat.commitRecordsSince else { return nil }
        var scanner = SegmentScanner(file: file, from: start)
        var holes: [(offset: Int64, recordsBefore: Int)] = []
        var records = 0
        while true {
            do {
                guard try scanner.next() != nil else { break }
                records += 1
            } catch is Stop {
                holes.append((scanner.validEnd, records + scanner.commitRecords))
                if try scanner.skipDamage() == nil { break }
            }
        }
        var tail = UnsyncedTail()
        if let hole = holes.first(where: { $0.offset >= scanner.syncPoint }) {
            tail.hole = hole.offset
            tail.recordsAfterHole = records + scanner.commitRecords - hole.recordsBefore
        }
        return tail
    }

    /// Whether a log segment's last bytes are one of its commit records:
    /// nothing after its last sync point (read from the end, in O(1)).
    static func endsWithCommitRecord(_ file: SegmentFile) throws -> Bool {
        let size = Int64(RecordFormat.commitRecordSize)
        let offset = file.size - size
        guard offset >= file.dataStart, (file.header?.version ?? 0) >= RecordFormat.commitRecordsSince else { return false }
        let bytes = try file.read(at: offset, count: Int(size))
        let header = bytes.withUnsafeBytes { RecordCodec.decodeHeader($0) }
        guard header.isCommit, header.hasValidFlags(segmentVersion: file.header?.version ?? 0),
              bytes.withUnsafeBytes({ RecordCodec.crcMatches($0, expected: header.crc) }) else { return false }
        let named: UInt64 = bytes.withUnsafeBytes { RecordCodec.readLE($0, RecordFormat.recordHeaderSize) }
        return named == UInt64(offset)
    }
}
