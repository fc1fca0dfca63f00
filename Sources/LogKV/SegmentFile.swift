#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One segment file: append at the end, positioned reads anywhere.
///
/// Thread-safety: `read(at:count:)` is a positioned read and safe from any
/// thread. `append`, `truncate` and `sync` are called by the single writer
/// (or the background syncer for `sync`), which the store serialises. The
/// file is closed when the last reference goes, so a reader holding one never
/// reads a closed or reused descriptor.
final class SegmentFile: @unchecked Sendable {
    let id: UInt64
    let path: String
    private let file: any StorageFile
    /// Set by `create`, or by `loadHeader()` after `open`.
    private(set) var header: SegmentHeader?
    /// Bytes in the file; written only by the store's writer.
    private(set) var size: Int64

    private init(id: UInt64, path: String, file: any StorageFile, size: Int64, header: SegmentHeader?) {
        self.id = id
        self.path = path
        self.file = file
        self.size = size
        self.header = header
    }

    var kind: SegmentKind { header?.kind ?? .log }
    /// Offset of the first record.
    var dataStart: Int64 { Int64(header?.size ?? RecordFormat.segmentHeaderSize) }
    /// True when the file holds no record.
    var isEmpty: Bool { size <= dataStart }

    /// Creates a new segment holding only its header, made durable (the
    /// file; the caller syncs the directory). A half-created file is removed.
    static func create(fs: any FileSystem, id: UInt64, path: String, header: SegmentHeader) throws -> SegmentFile {
        let file = try fs.open(path, .createNew)
        let segment = SegmentFile(id: id, path: path, file: file, size: 0, header: header)
        do {
            try segment.append(RecordCodec.segmentHeader(header))
            try segment.sync()
        } catch {
            try? fs.remove(path)
            throw error
        }
        return segment
    }

    static func open(fs: any FileSystem, id: UInt64, path: String, writable: Bool) throws -> SegmentFile {
        let file = try fs.open(path, writable ? .readWrite : .readOnly)
        return SegmentFile(id: id, path: path, file: file, size: try file.size(), header: nil)
    }

    /// Reads and validates the segment header.
    @discardableResult
    func loadHeader() throws -> SegmentHeader {
        if let header { return header }
        guard size >= Int64(RecordFormat.segmentHeaderSizeV1) else {
            throw LogKVError.corruption(segment: id, offset: 0, reason: "segment header is truncated")
        }
        var bytes = [UInt8](repeating: 0, count: Int(min(size, Int64(RecordFormat.segmentHeaderSize))))
        _ = try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        guard let parsed = RecordCodec.parseSegmentHeader(bytes) else {
            throw LogKVError.corruption(segment: id, offset: 0, reason: "not a logkv segment (bad magic or header checksum)")
        }
        guard parsed.version <= RecordFormat.formatVersion else {
            throw LogKVError.corruption(segment: id, offset: 0,
                                        reason: "segment format version \(parsed.version) is newer than this build")
        }
        header = parsed
        return parsed
    }

    /// Appends bytes at the end. On failure the file is cut back to its old
    /// size, so a failed append never leaves half a record behind.
    func append(_ bytes: [UInt8]) throws {
        try append(bytes, [])
    }

    /// Appends `head` then `tail` with one system call where possible.
    func append(_ head: [UInt8], _ tail: [UInt8]) throws {
        let start = size
        do {
            try head.withUnsafeBytes { h in
                try tail.withUnsafeBytes { t in try file.write(h, t, at: start) }
            }
        } catch let LogKVError.io(_, _, err) {
            do { try file.truncate(to: start) } catch {
                throw LogKVError.readOnly(reason: "append to \(path) failed (\(String(cString: strerror(err)))) and the partial record could not be removed")
            }
            if err == ENOSPC || err == EDQUOT || err == EFBIG { throw LogKVError.diskFull }
            throw LogKVError.io(operation: "write", path: path, errno: err)
        }
        size = start + Int64(head.count + tail.count)
    }

    /// Positioned read of exactly `count` bytes.
    func read(at offset: Int64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let got = try out.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
        if got < count {
            throw LogKVError.corruption(segment: id, offset: offset, reason: "record extends past the end of the segment")
        }
        return out
    }

    /// Reads up to `buf.count` bytes at `offset`; returns how many (short at EOF).
    func readInto(_ buf: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        try file.read(into: buf, at: offset)
    }

    /// Reads `count` bytes at `offset` only if they are in the page cache;
    /// nil when getting them would wait on the disk (or the kernel cannot say).
    func readIfCached(at offset: Int64, count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        let ok = out.withUnsafeMutableBytes { file.readIfCached(into: $0, at: offset) }
        return ok ? out : nil
    }

    func sync() throws {
        try file.sync()
    }

    /// Cuts the file and makes the cut durable.
    func truncate(to length: Int64) throws {
        try file.truncate(to: length)
        size = length
        try sync()
    }
}
