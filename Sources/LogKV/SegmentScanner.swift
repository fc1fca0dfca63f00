/// Reads the records of one segment in order, through a large buffer.
///
/// `next()` returns records until the end of the segment, or throws `Stop` at
/// the first record that cannot be decoded; `validEnd` is then the offset just
/// past the last good record. `skipDamage()` looks past a bad record for the
/// next intact one, which tells a torn tail (nothing intact follows: what a
/// crash mid-append leaves) from damage (intact records follow: something
/// changed bytes an acknowledged record may have lived in). Callers report
/// what they skip, as LevelDB's log reader does through its `Reporter`.
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
    private var buffer: [UInt8] = []
    private var bufferStart: Int64 = 0

    /// Sanity bound on a declared key or value length: anything beyond it is
    /// garbage, not a record, whatever the configured limits are.
    static let maxDeclaredLength: UInt32 = 1 << 30

    init(file: SegmentFile, from offset: Int64? = nil, withValues: Bool = false) {
        self.file = file
        self.withValues = withValues
        self.validEnd = offset ?? file.dataStart
        self.end = file.size
    }

    mutating func next() throws -> Entry? {
        let offset = validEnd
        if offset >= end { return nil }
        guard let entry = try decode(at: offset, requireLaterSeq: false) else {
            throw Stop(offset: offset, reason: try diagnose(at: offset))
        }
        validEnd = offset + Int64(entry.header.recordLength)
        lastSeq = entry.header.seq
        return entry
    }

    /// After `next()` threw at `validEnd`, finds the next intact record.
    ///
    /// - Returns: its offset, and `next()` continues there; nil when nothing
    ///   intact follows (a torn tail), and `validEnd` stays at the bad record.
    mutating func skipDamage() throws -> Int64? {
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
        guard header.keyLength > 0, header.keyLength <= Self.maxDeclaredLength,
              header.valueLength <= Self.maxDeclaredLength,
              header.hasValidFlags(segmentVersion: file.header?.version ?? RecordFormat.formatVersion),
              offset + Int64(header.recordLength) <= end else { return nil }
        if requireLaterSeq, file.kind == .log, let lastSeq, header.seq <= lastSeq { return nil }
        let whole = try bytes(at: offset, count: header.recordLength)
        guard whole.withUnsafeBytes({ RecordCodec.crcMatches($0, expected: header.crc) }) else { return nil }
        let keyStart = whole.startIndex + headerSize
        let keyEnd = keyStart + Int(header.keyLength)
        // A TTL refresh's value (the seq it renews) is what every reader of
        // the record needs.
        return Entry(offset: offset, header: header, key: Array(whole[keyStart..<keyEnd]),
                     value: withValues || header.isTTLRefresh ? Array(whole[keyEnd...]) : [])
    }

    /// Why the record at `offset` is bad, in words for logs and `check`.
    private mutating func diagnose(at offset: Int64) throws -> String {
        let headerSize = RecordFormat.recordHeaderSize
        guard end - offset >= Int64(headerSize) else { return "record header is cut short" }
        let header = try bytes(at: offset, count: headerSize).withUnsafeBytes { RecordCodec.decodeHeader($0) }
        if header.keyLength == 0 || header.keyLength > Self.maxDeclaredLength || header.valueLength > Self.maxDeclaredLength
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
