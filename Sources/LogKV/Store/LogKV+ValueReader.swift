import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A value handed out in pieces, for answers too large to hold whole (a
/// server streaming a 64 MiB value to a slow client).
///
/// Rules it keeps:
/// - No byte is handed out from a record that fails its checksum:
///   `openValue` reads the whole record once, in chunks, and checks it
///   before returning a reader. Read again in order from start to end (as
///   a stream does), the value is checked once more as it goes: the read
///   that would hand out its last bytes throws instead if they differ from
///   what was checked (a page that changed on the disk since), so a
///   client sees a cut answer, never a whole wrong one.
/// - The reader reads through a descriptor of its own, opened before the
///   check: a compaction that removes the segment meanwhile cannot cut the
///   value short (segments are append-only, so the checked bytes stay
///   what they were). The descriptor closes when the reader goes.
/// - One thread at a time (the caller's stream).
public final class ValueReader: @unchecked Sendable {
    public let seq: UInt64
    public let writtenAt: Int64
    /// The key's expiry (a TTL refresh may have moved it since the write).
    public let expiresAt: Int64?
    /// The value's length in bytes.
    public let length: Int
    private let file: any StorageFile
    private let valueStart: Int64
    private let expectedCRC: UInt32
    /// The record's CRC over everything before `nextInOrder`, while reads
    /// come in order from the start; nil once one does not.
    private var runningCRC: UInt32?
    private var nextInOrder = 0

    /// Where the record is, and what to do when it turns out damaged (the
    /// engine's log line and `logkv_read_corrupt_total`).
    private let location: RecordLocation
    private let reportCorruption: @Sendable (String) -> LogKVError

    init(file: any StorageFile, header: RecordHeader, valueStart: Int64, location: RecordLocation, crcBeforeValue: UInt32,
         reportCorruption: @escaping @Sendable (String) -> LogKVError) {
        self.file = file
        self.location = location
        self.reportCorruption = reportCorruption
        self.seq = header.seq
        self.writtenAt = header.writtenAt
        self.expiresAt = location.expiresAt == 0 ? nil : location.expiresAt
        self.length = Int(header.valueLength)
        self.valueStart = valueStart
        self.expectedCRC = header.crc
        self.runningCRC = crcBeforeValue
    }

    /// The value's bytes `offset..<offset+count` (clamped to its end).
    ///
    /// - Throws: `.corruption` when, read in order, the value's last bytes
    ///   would complete a checksum that no longer matches; `.io`.
    public func read(at offset: Int, count: Int) throws -> [UInt8] {
        let n = max(0, min(count, length - offset))
        var out = [UInt8](repeating: 0, count: n)
        let got = try out.withUnsafeMutableBytes { try file.read(into: $0, at: valueStart + Int64(offset)) }
        guard got == n else {
            throw LogKVError.io(operation: "read", path: file.path, errno: EIO)
        }
        if let crc = runningCRC, offset == nextInOrder {
            let next = out.withUnsafeBytes { CRC32.update(crc, $0) }
            nextInOrder += n
            runningCRC = next
            if nextInOrder == length && next != expectedCRC {
                throw reportCorruption("checksum mismatch: the value changed on disk while it was being read")
            }
        } else {
            runningCRC = nil
        }
        return out
    }
}

/// What `read(_:wholeUpTo:)` found.
public enum ValueRead: Sendable {
    case missing
    /// A value no larger than the limit, read whole.
    case whole(StoredValue)
    /// A larger value, checked and open for reading in pieces.
    case large(ValueReader)
}

extension LogKV {
    /// Opens `key`'s live value for reading in pieces (`ValueReader`), or
    /// nil if the key is missing or expired. See `read(_:wholeUpTo:)`.
    public func openValue(_ key: [UInt8], chunkSize: Int = 1 << 20,
                          inspect: (UnsafeRawBufferPointer) -> Void = { _ in }) throws -> ValueReader? {
        switch try read(key, wholeUpTo: -1, chunkSize: chunkSize, inspect: inspect) {
        case .missing: return nil
        case let .large(reader): return reader
        case .whole: preconditionFailure("no value is at most -1 bytes")
        }
    }

    /// Reads `key`'s live value whole if it is at most `limit` bytes (as
    /// `get`), else opens it for reading in pieces. The whole record of a
    /// larger value is read once here to check its checksum; `inspect` sees
    /// the value's bytes in order on the way (a caller that needs a property
    /// of the whole value — its encoded length, say — gets it without
    /// another read; it learns nothing if the check then fails).
    ///
    /// - Throws: as `get`.
    public func read(_ key: [UInt8], wholeUpTo limit: Int, chunkSize: Int = 1 << 20,
                     inspect: (UnsafeRawBufferPointer) -> Void = { _ in }) throws -> ValueRead {
        try validate(key: key)
        let now = options.clock()
        for attempt in 0..<3 {
            let observed = try locateObserving(key)
            guard let location = observed.location else {
                metrics.readMiss.increment()
                return .missing
            }
            if location.isExpired(now: now) {
                expireLazily(key, location, observedEpoch: observed.epoch)
                metrics.readExpired.increment()
                return .missing
            }
            do {
                let read: ValueRead
                if Supersession.valueSize(recordLength: location.length, keyCount: key.count) <= limit {
                    read = .whole(try readValue(key: key, at: location))
                } else {
                    read = .large(try checkedReader(key: key, at: location, chunkSize: max(4096, chunkSize), inspect: inspect))
                }
                metrics.readHit.increment()
                return read
            } catch SegmentGone.gone where attempt < 2 {
                continue  // compaction moved the key between locating and reading it
            }
        }
        throw LogKVError.corruption(segment: 0, offset: 0, reason: "key kept moving while being read")
    }

    private func checkedReader(key: [UInt8], at location: RecordLocation, chunkSize: Int,
                               inspect: (UnsafeRawBufferPointer) -> Void) throws -> ValueReader {
        guard let segment = state.withLock({ segments[location.segment] }) else {
            if state.withLock({ segments.isRetired(location.segment) }) { throw SegmentGone.gone }
            throw LogKVError.corruption(segment: location.segment, offset: location.offset,
                                        reason: "index points at a segment that does not exist")
        }
        let file: any StorageFile
        do {
            file = try options.fileSystem.open(segment.path, .readOnly)
        } catch LogKVError.io(_, _, let err) where err == ENOENT && state.withLock({ segments.isRetired(location.segment) }) {
            throw SegmentGone.gone
        }
        let metrics = self.metrics, logger = self.logger
        let corrupt: @Sendable (String) -> LogKVError = { reason in
            metrics.readCorrupt.increment()
            logger.error("\(reason) on read", metadata: ["segment": "\(location.segment)", "offset": "\(location.offset)"])
            return LogKVError.corruption(segment: location.segment, offset: location.offset, reason: reason)
        }
        let headerSize = RecordFormat.recordHeaderSize
        guard location.length >= headerSize + key.count else { throw corrupt("index points at a different record") }
        var head = [UInt8](repeating: 0, count: headerSize + key.count)
        guard try head.withUnsafeMutableBytes({ try file.read(into: $0, at: location.offset) }) == head.count else {
            throw corrupt("record cut short")
        }
        let header = head.withUnsafeBytes { RecordCodec.decodeHeader($0) }
        guard header.recordLength == location.length, header.seq == location.seq,
              Int(header.keyLength) == key.count, head[headerSize...].elementsEqual(key) else {
            throw corrupt("index points at a different record")
        }
        // The checksum covers everything after its own four bytes.
        let crcBeforeValue = head.withUnsafeBytes { CRC32.checksum(UnsafeRawBufferPointer(rebasing: $0[4...])) }
        var crc = crcBeforeValue
        let valueStart = location.offset + Int64(head.count)
        var chunk = [UInt8](repeating: 0, count: min(chunkSize, max(1, Int(header.valueLength))))
        var offset: Int64 = 0
        while offset < Int64(header.valueLength) {
            let n = Int(min(Int64(chunk.count), Int64(header.valueLength) - offset))
            let got = try chunk.withUnsafeMutableBytes { try file.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[..<n]), at: valueStart + offset) }
            guard got == n else { throw corrupt("record cut short") }
            chunk.withUnsafeBytes { bytes in
                let piece = UnsafeRawBufferPointer(rebasing: bytes[..<n])
                crc = CRC32.update(crc, piece)
                inspect(piece)
            }
            offset += Int64(n)
        }
        guard crc == header.crc else { throw corrupt("checksum mismatch") }
        return ValueReader(file: file, header: header, valueStart: valueStart, location: location,
                           crcBeforeValue: crcBeforeValue, reportCorruption: corrupt)
    }
}
