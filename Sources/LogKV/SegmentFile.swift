import CLinux

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One segment file: append at the end, positioned reads anywhere.
///
/// Thread-safety: `read(at:count:)` uses `pread` and is safe from any thread.
/// `append`, `truncate` and `sync` are called by the single writer (or the
/// background syncer for `sync`), which the store serialises. The descriptor
/// is closed in `deinit`, so a reader holding a reference never reads a
/// closed or reused descriptor.
final class SegmentFile: @unchecked Sendable {
    let id: UInt64
    let path: String
    private let fd: Int32
    /// Bytes in the file; written only by the store's writer.
    private(set) var size: Int64

    private init(id: UInt64, path: String, fd: Int32, size: Int64) {
        self.id = id
        self.path = path
        self.fd = fd
        self.size = size
    }

    deinit { close(fd) }

    /// Creates a new, empty segment holding only its header, made durable.
    static func create(id: UInt64, path: String, storeID: [UInt8]) throws -> SegmentFile {
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LogKVError.io(operation: "create", path: path, errno: errno) }
        let file = SegmentFile(id: id, path: path, fd: fd, size: 0)
        try file.append(RecordCodec.segmentHeader(storeID: storeID))
        try file.sync()
        return file
    }

    static func open(id: UInt64, path: String, writable: Bool) throws -> SegmentFile {
        let fd = Glibc.open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
        guard fd >= 0 else { throw LogKVError.io(operation: "open", path: path, errno: errno) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let err = errno
            close(fd)
            throw LogKVError.io(operation: "fstat", path: path, errno: err)
        }
        return SegmentFile(id: id, path: path, fd: fd, size: Int64(st.st_size))
    }

    /// Reads and validates the segment header; returns the store id.
    func readHeader() throws -> [UInt8] {
        guard size >= Int64(RecordFormat.segmentHeaderSize) else {
            throw LogKVError.corruption(segment: id, offset: 0, reason: "segment header is truncated")
        }
        let bytes = try read(at: 0, count: RecordFormat.segmentHeaderSize)
        guard let header = RecordCodec.parseSegmentHeader(bytes) else {
            throw LogKVError.corruption(segment: id, offset: 0, reason: "not a logkv segment (bad magic)")
        }
        guard header.version == RecordFormat.formatVersion else {
            throw LogKVError.corruption(segment: id, offset: 0,
                                        reason: "segment format version \(header.version) is not supported")
        }
        return header.storeID
    }

    /// Appends bytes at the end. On failure the file is cut back to its old
    /// size, so a failed append never leaves half a record behind.
    func append(_ bytes: [UInt8]) throws {
        try append(bytes, [])
    }

    /// Appends `head` then `tail` with one system call where possible.
    func append(_ head: [UInt8], _ tail: [UInt8]) throws {
        let start = size
        let total = head.count + tail.count
        var written = 0
        try head.withUnsafeBytes { h in
            try tail.withUnsafeBytes { t in
                while written < total {
                    let n: Int
                    if written < h.count {
                        n = withUnsafeTemporaryAllocation(of: iovec.self, capacity: 2) { iov in
                            iov[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: h.baseAddress! + written), iov_len: h.count - written)
                            iov[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: t.baseAddress), iov_len: t.count)
                            return pwritev(fd, iov.baseAddress, t.count > 0 ? 2 : 1, off_t(start) + off_t(written))
                        }
                    } else {
                        let done = written - h.count
                        n = pwrite(fd, t.baseAddress! + done, t.count - done, off_t(start) + off_t(written))
                    }
                    if n < 0 {
                        if errno == EINTR { continue }
                        let err = errno
                        if ftruncate(fd, off_t(start)) != 0 {
                            throw LogKVError.readOnly(reason: "append to \(path) failed (\(String(cString: strerror(err)))) and the partial record could not be removed")
                        }
                        if err == ENOSPC || err == EDQUOT || err == EFBIG { throw LogKVError.diskFull }
                        throw LogKVError.io(operation: "write", path: path, errno: err)
                    }
                    written += n
                }
            }
        }
        size = start + Int64(total)
    }

    /// Positioned read of exactly `count` bytes.
    func read(at offset: Int64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let got = try out.withUnsafeMutableBytes { try readInto($0, at: offset) }
        if got < count {
            throw LogKVError.corruption(segment: id, offset: offset, reason: "record extends past the end of the segment")
        }
        return out
    }

    /// Reads up to `buf.count` bytes at `offset`; returns how many (short at EOF).
    func readInto(_ buf: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        var got = 0
        while got < buf.count {
            let n = pread(fd, buf.baseAddress! + got, buf.count - got, off_t(offset) + off_t(got))
            if n < 0 {
                if errno == EINTR { continue }
                throw LogKVError.io(operation: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            got += n
        }
        return got
    }

    /// Reads `count` bytes at `offset` only if they are in the page cache;
    /// nil when getting them would wait on the disk (or the kernel cannot say).
    func readIfCached(at offset: Int64, count: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        let n = out.withUnsafeMutableBytes { logkv_pread_nowait(fd, $0.baseAddress, count, off_t(offset)) }
        return n == count ? out : nil
    }

    func sync() throws {
        if fdatasync(fd) != 0 {
            throw LogKVError.io(operation: "fsync", path: path, errno: errno)
        }
    }

    func truncate(to length: Int64) throws {
        if ftruncate(fd, off_t(length)) != 0 {
            throw LogKVError.io(operation: "truncate", path: path, errno: errno)
        }
        size = length
        try sync()
    }
}
