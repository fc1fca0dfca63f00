/// Reads the records of one segment in order, through a large buffer.
///
/// `next()` returns records until the end of the segment, or throws at the
/// first record that cannot be decoded; `validEnd` is then the offset just past
/// the last good record, which recovery uses to cut a torn tail.
struct SegmentScanner {
    /// A record as scanned, with its place in the segment.
    struct Entry {
        var offset: Int64
        var header: RecordHeader
        var key: [UInt8]
        /// Empty unless the scanner was asked for values.
        var value: [UInt8]
    }

    /// Why scanning stopped before the end of the file.
    enum Stop: Error {
        /// The bad record reaches the end of the file (or only zeros follow
        /// it): what a crash mid-append leaves.
        case tornTail(offset: Int64, reason: String)
        /// A bad record with data after it: real corruption.
        case corrupt(offset: Int64, reason: String)
    }

    let file: SegmentFile
    let withValues: Bool
    private(set) var validEnd: Int64
    private let end: Int64
    private var buffer: [UInt8] = []
    private var bufferStart: Int64 = 0

    /// Sanity bound on a declared key or value length: anything beyond it is
    /// garbage, not a record, whatever the configured limits are.
    static let maxDeclaredLength: UInt32 = 1 << 30

    init(file: SegmentFile, from offset: Int64 = Int64(RecordFormat.segmentHeaderSize), withValues: Bool = false) {
        self.file = file
        self.withValues = withValues
        self.validEnd = offset
        self.end = file.size
    }

    mutating func next() throws -> Entry? {
        let offset = validEnd
        if offset >= end { return nil }
        let headerSize = RecordFormat.recordHeaderSize
        guard end - offset >= Int64(headerSize) else {
            throw try stop(at: offset, recordEnd: end, "record header is cut short")
        }
        let headerBytes = try bytes(at: offset, count: headerSize)
        let header = headerBytes.withUnsafeBytes { RecordCodec.decodeHeader($0) }
        if header.keyLength > Self.maxDeclaredLength || header.valueLength > Self.maxDeclaredLength
            || header.flags & ~RecordFormat.tombstoneFlag != 0 {
            throw try stop(at: offset, recordEnd: offset + Int64(headerSize), "record header is garbage")
        }
        let length = header.recordLength
        guard offset + Int64(length) <= end else {
            throw try stop(at: offset, recordEnd: end, "record is cut short")
        }
        let whole = try bytes(at: offset, count: length)
        let ok = whole.withUnsafeBytes { RecordCodec.crcMatches($0, expected: header.crc) }
        guard ok else {
            throw try stop(at: offset, recordEnd: offset + Int64(length), "checksum mismatch")
        }
        let keyStart = whole.startIndex + headerSize
        let keyEnd = keyStart + Int(header.keyLength)
        let entry = Entry(
            offset: offset, header: header,
            key: Array(whole[keyStart..<keyEnd]),
            value: withValues ? Array(whole[keyEnd...]) : []
        )
        validEnd = offset + Int64(length)
        return entry
    }

    /// Decides whether a bad record is a torn tail or corruption.
    private mutating func stop(at offset: Int64, recordEnd: Int64, _ reason: String) throws -> Stop {
        if recordEnd >= end { return .tornTail(offset: offset, reason: reason) }
        // Only zeros after the bad record: pages the crash never filled.
        var position = recordEnd
        while position < end {
            let chunk = try bytes(at: position, count: Int(min(Int64(1 << 20), end - position)))
            if chunk.contains(where: { $0 != 0 }) { return .corrupt(offset: offset, reason: reason) }
            position += Int64(chunk.count)
        }
        return .tornTail(offset: offset, reason: reason)
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
