import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One segment file: append at the end, positioned reads anywhere.
///
/// Thread-safety: `read(at:count:)` is a positioned read and safe from any
/// thread. `append`, `truncate` and `sync` are called by the single writer
/// (or the background syncer for `sync`), which the store serialises. A
/// descriptor is closed when the last reference to it goes, so a reader
/// holding one never reads a closed or reused descriptor.
///
/// Descriptors: attached to a `SegmentHandleCache`, a sealed segment's
/// descriptor may be closed when too many are open and reopened on the next
/// read (LevelDB's table cache). Only sealed, fsynced segments are evicted:
/// a descriptor with unsynced writes stays open, since a write-back error
/// is reported only to descriptors open when it happened (fsyncgate).
final class SegmentFile: @unchecked Sendable {
    let id: UInt64
    let path: String
    private let fs: any FileSystem
    private let writable: Bool
    private let handleLock = NSLock()
    /// Guarded by `handleLock`.
    private var openFile: (any StorageFile)?
    private var sealed = false
    private var lastUse: UInt64 = 0
    private weak var handles: SegmentHandleCache?
    /// Set by `create`, or by `loadHeader()` after `open`.
    private(set) var header: SegmentHeader?
    /// Bytes in the file; written only by the store's writer.
    private(set) var size: Int64

    private init(id: UInt64, path: String, fs: any FileSystem, writable: Bool, file: any StorageFile,
                 size: Int64, header: SegmentHeader?) {
        self.id = id
        self.path = path
        self.fs = fs
        self.writable = writable
        self.openFile = file
        self.size = size
        self.header = header
    }

    /// The open descriptor, reopened if the cache closed it.
    private var file: any StorageFile {
        get throws {
            handleLock.lock()
            if let openFile {
                lastUse = SegmentHandleCache.tick()
                handleLock.unlock()
                return openFile
            }
            handleLock.unlock()
            let reopened = try fs.open(path, writable ? .readWrite : .readOnly)
            handleLock.lock()
            let file = openFile ?? reopened
            openFile = file
            lastUse = SegmentHandleCache.tick()
            handleLock.unlock()
            handles?.opened(self)
            return file
        }
    }

    /// Lets `cache` close this segment's descriptor once it is sealed.
    func attach(to cache: SegmentHandleCache) {
        handleLock.withLock { handles = cache }
        cache.opened(self)
    }

    /// Called once the segment will never be written again and an fsync
    /// covered all of it: its descriptor may now be closed and reopened.
    func markSealed() {
        handleLock.withLock { sealed = true }
    }

    /// For the cache: when this segment's descriptor was last used, or nil if
    /// it may not be closed (not sealed) or is closed already.
    var evictionCandidate: UInt64? {
        handleLock.withLock { sealed && openFile != nil ? lastUse : nil }
    }

    /// For the cache: drops the descriptor (it closes when the last reader
    /// holding it is done). False if it may not be closed.
    func closeDescriptor() -> Bool {
        handleLock.withLock {
            guard sealed, openFile != nil else { return false }
            openFile = nil
            return true
        }
    }

    var hasOpenDescriptor: Bool { handleLock.withLock { openFile != nil } }

    var kind: SegmentKind { header?.kind ?? .log }
    /// Offset of the first record.
    var dataStart: Int64 { Int64(header?.size ?? RecordFormat.segmentHeaderSize) }
    /// True when the file holds no record.
    var isEmpty: Bool { size <= dataStart }

    /// Creates a new segment holding only its header, made durable (the
    /// file; the caller syncs the directory). A half-created file is removed.
    static func create(fs: any FileSystem, id: UInt64, path: String, header: SegmentHeader) throws -> SegmentFile {
        let file = try fs.open(path, .createNew)
        let segment = SegmentFile(id: id, path: path, fs: fs, writable: true, file: file, size: 0, header: header)
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
        return SegmentFile(id: id, path: path, fs: fs, writable: writable, file: file, size: try file.size(), header: nil)
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
        // A closed descriptor means an open(2): not for an event loop.
        guard let file = handleLock.withLock({ openFile }) else { return nil }
        var out = [UInt8](repeating: 0, count: count)
        let ok = out.withUnsafeMutableBytes { file.readIfCached(into: $0, at: offset) }
        return ok ? out : nil
    }

    func sync() throws {
        try file.sync()
    }

    /// Cuts the file and, when `durably`, makes the cut durable.
    func truncate(to length: Int64, durably: Bool = true) throws {
        try file.truncate(to: length)
        size = length
        if durably { try sync() }
    }
}
