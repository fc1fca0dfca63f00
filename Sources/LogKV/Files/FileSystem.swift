import CLinux

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The one interface through which the engine touches durable storage:
/// segment files, the compaction manifest, the lock file and directories.
///
/// Production uses `PosixFileSystem`; tests substitute a simulated disk that
/// applies the power-loss model of DESIGN.md ("Durability and ordering rules"):
/// after a power loss a file keeps only what an fsync of it covered and a
/// directory only the entries an fsync of it covered.
///
/// SQLite does its own I/O on the index files; it reports each commit through
/// `indexCommitted(path:durable:)` so a simulator can tell which index state a
/// power loss may leave.
///
/// Errors are `LogKVError.io` carrying the operation, path and errno.
/// Implementations are thread-safe.
public protocol FileSystem: Sendable {
    /// Opens a file. `.createNew` fails with EEXIST if the name exists.
    func open(_ path: String, _ mode: FileOpenMode) throws -> any StorageFile
    /// Names (not paths) of the entries of a directory.
    func list(_ directory: String) throws -> [String]
    /// Creates one directory; an existing directory is not an error.
    func makeDirectory(_ path: String) throws
    /// Makes creations, renames and removals in `directory` durable.
    func syncDirectory(_ directory: String) throws
    func rename(_ from: String, to: String) throws
    /// Removes a file; a missing file is not an error.
    func remove(_ path: String) throws
    func exists(_ path: String) -> Bool
    /// Takes the exclusive lock of a data directory, or throws `.locked`
    /// naming the holder. The lock is released when the result is released.
    func lockDirectory(lockPath: String, holder: String) throws -> AnyObject
    /// Told before every index transaction; throwing fails it, as a full
    /// disk under the index would (production never throws).
    func indexWillCommit(path: String) throws
    /// Told after every index commit; `durable` when the commit is known to
    /// have reached stable storage (synchronous=FULL, or a WAL checkpoint).
    func indexCommitted(path: String, durable: Bool)
}

public enum FileOpenMode: Sendable {
    case readOnly
    case readWrite
    /// Create; fail if it exists.
    case createNew
    /// Create or truncate to zero.
    case createOrTruncate
}

/// An open file. Positioned I/O only, so any number of threads may read at
/// once; the engine serialises writers.
public protocol StorageFile: AnyObject, Sendable {
    var path: String { get }
    /// Current size in bytes.
    func size() throws -> Int64
    /// Writes `head` then `tail` at `offset`, all of it or throws.
    func write(_ head: UnsafeRawBufferPointer, _ tail: UnsafeRawBufferPointer, at offset: Int64) throws
    /// Reads up to `buffer.count` bytes; returns how many (short only at EOF).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int
    /// Reads exactly `buffer.count` bytes only if that needs no disk wait;
    /// false otherwise.
    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Bool
    /// fdatasync.
    func sync() throws
    func truncate(to length: Int64) throws
}

/// Plain POSIX calls.
public struct PosixFileSystem: FileSystem {
    public init() {}

    public func open(_ path: String, _ mode: FileOpenMode) throws -> any StorageFile {
        let flags: Int32
        switch mode {
        case .readOnly: flags = O_RDONLY
        case .readWrite: flags = O_RDWR
        case .createNew: flags = O_RDWR | O_CREAT | O_EXCL
        case .createOrTruncate: flags = O_RDWR | O_CREAT | O_TRUNC
        }
        // Owner only: every value is in these files (as etcd, 0600).
        let fd = Glibc.open(path, flags | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LogKVError.io(operation: "open", path: path, errno: errno) }
        return PosixFile(path: path, fd: fd)
    }

    public func list(_ directory: String) throws -> [String] {
        guard let dir = opendir(directory) else {
            throw LogKVError.io(operation: "opendir", path: directory, errno: errno)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func makeDirectory(_ path: String) throws {
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw LogKVError.io(operation: "mkdir", path: path, errno: errno)
        }
    }

    public func syncDirectory(_ directory: String) throws {
        let fd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw LogKVError.io(operation: "open", path: directory, errno: errno) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw LogKVError.io(operation: "fsync", path: directory, errno: errno) }
    }

    public func rename(_ from: String, to: String) throws {
        if Glibc.rename(from, to) != 0 { throw LogKVError.io(operation: "rename", path: to, errno: errno) }
    }

    public func remove(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT {
            throw LogKVError.io(operation: "unlink", path: path, errno: errno)
        }
    }

    public func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    public func lockDirectory(lockPath: String, holder: String) throws -> AnyObject {
        try PosixDirectoryLock(path: lockPath, holder: holder)
    }

    public func indexWillCommit(path: String) throws {}

    public func indexCommitted(path: String, durable: Bool) {}
}

final class PosixFile: StorageFile, @unchecked Sendable {
    let path: String
    private let fd: Int32

    init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    deinit { close(fd) }

    func size() throws -> Int64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw LogKVError.io(operation: "fstat", path: path, errno: errno) }
        return Int64(st.st_size)
    }

    func write(_ head: UnsafeRawBufferPointer, _ tail: UnsafeRawBufferPointer, at offset: Int64) throws {
        let total = head.count + tail.count
        var written = 0
        while written < total {
            let n: Int
            if written < head.count {
                n = withUnsafeTemporaryAllocation(of: iovec.self, capacity: 2) { iov in
                    iov[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: head.baseAddress! + written),
                                   iov_len: head.count - written)
                    iov[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: tail.baseAddress), iov_len: tail.count)
                    return pwritev(fd, iov.baseAddress, tail.count > 0 ? 2 : 1, off_t(offset) + off_t(written))
                }
            } else {
                let done = written - head.count
                n = pwrite(fd, tail.baseAddress! + done, tail.count - done, off_t(offset) + off_t(written))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw LogKVError.io(operation: "write", path: path, errno: errno)
            }
            written += n
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        var got = 0
        while got < buffer.count {
            let n = pread(fd, buffer.baseAddress! + got, buffer.count - got, off_t(offset) + off_t(got))
            if n < 0 {
                if errno == EINTR { continue }
                throw LogKVError.io(operation: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            got += n
        }
        return got
    }

    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Bool {
        logkv_pread_nowait(fd, buffer.baseAddress, buffer.count, off_t(offset)) == buffer.count
    }

    func sync() throws {
        if fdatasync(fd) != 0 { throw LogKVError.io(operation: "fsync", path: path, errno: errno) }
    }

    func truncate(to length: Int64) throws {
        if ftruncate(fd, off_t(length)) != 0 {
            throw LogKVError.io(operation: "truncate", path: path, errno: errno)
        }
    }
}

/// `flock` on `LOCK`, whose content names the holder for the error a second
/// opener gets. flock locks belong to the open file description, so a second
/// open of the same directory inside one process is refused too.
final class PosixDirectoryLock: @unchecked Sendable {
    private let fd: Int32

    init(path: String, holder: String) throws {
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LogKVError.io(operation: "open", path: path, errno: errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let err = errno
            var buf = [UInt8](repeating: 0, count: 512)
            let n = pread(fd, &buf, buf.count, 0)
            close(fd)
            if err == EWOULDBLOCK {
                let text = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: "\n ") : ""
                throw LogKVError.locked(path: path, holder: text.isEmpty ? "unknown holder" : text)
            }
            throw LogKVError.io(operation: "flock", path: path, errno: err)
        }
        ftruncate(fd, 0)
        let line = holder + "\n"
        _ = line.utf8CString.withUnsafeBufferPointer { pwrite(fd, $0.baseAddress, $0.count - 1, 0) }
        self.fd = fd
    }

    deinit {
        ftruncate(fd, 0)
        flock(fd, LOCK_UN)
        close(fd)
    }
}
