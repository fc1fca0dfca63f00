import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every file name in a data directory, in one place:
///
///     <dir>/LOCK                  exclusive flock of the owning process
///     <dir>/segments/NNNNNNNNNNNN.seg
///     <dir>/index.sqlite          (+ -wal, -shm)
///     <dir>/COMPACTION            only while a compaction swaps segments
struct DataDirectory: Sendable {
    let path: String

    var lockPath: String { path + "/LOCK" }
    var segmentsPath: String { path + "/segments" }
    var indexPath: String { path + "/index.sqlite" }
    /// Present while a compaction is between writing its outputs and removing
    /// its inputs: "old ID..." and "new ID..." lines.
    var compactionManifestPath: String { path + "/COMPACTION" }
    var indexSidecars: [String] { [indexPath + "-wal", indexPath + "-shm", indexPath + "-journal"] }

    func segmentPath(_ id: UInt64) -> String {
        var digits = String(id)
        if digits.count < 12 { digits = String(repeating: "0", count: 12 - digits.count) + digits }
        return segmentsPath + "/" + digits + ".seg"
    }

    /// Ids of the segment files present, ascending.
    func segmentIDs() throws -> [UInt64] {
        guard let dir = opendir(segmentsPath) else {
            throw LogKVError.io(operation: "opendir", path: segmentsPath, errno: errno)
        }
        defer { closedir(dir) }
        var ids: [UInt64] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            guard name.hasSuffix(".seg"), let id = UInt64(name.dropLast(4)) else { continue }
            ids.append(id)
        }
        return ids.sorted()
    }

    /// True when `segments/` exists and holds at least one segment.
    var holdsSegments: Bool {
        DataDirectory.exists(segmentsPath) && !((try? segmentIDs()) ?? []).isEmpty
    }

    /// Creates the directory (and its parents) and `segments/`.
    func create() throws {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in (path + "/segments").split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw LogKVError.io(operation: "mkdir", path: prefix, errno: errno)
            }
        }
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    static func remove(_ path: String) {
        unlink(path)
    }

    /// fsyncs a directory so that file creations and removals in it are durable.
    static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }
}

/// The exclusive lock on a data directory: `flock` on `LOCK`, whose content
/// names the holder (pid, host, start time) for the error a second opener gets.
///
/// flock locks belong to the open file description, so a second open of the
/// same directory inside one process is refused too.
final class DirectoryLock: Sendable {
    private let fd: Int32

    init(path: String, clock: () -> Int64) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LogKVError.io(operation: "open", path: path, errno: errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let err = errno
            var buf = [UInt8](repeating: 0, count: 512)
            let n = pread(fd, &buf, buf.count, 0)
            close(fd)
            if err == EWOULDBLOCK {
                let holder = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self)
                    .trimmingCharacters(in: "\n ") : "unknown holder"
                throw LogKVError.locked(path: path, holder: holder)
            }
            throw LogKVError.io(operation: "flock", path: path, errno: err)
        }
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let hostName = String(decoding: host.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var seconds = time_t(clock() / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let since = String(format: "%04d-%02d-%02dT%02d:%02d:%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                           Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
        let text = "pid \(getpid()) on \(hostName), since \(since)\n"
        ftruncate(fd, 0)
        _ = text.utf8CString.withUnsafeBufferPointer { pwrite(fd, $0.baseAddress, $0.count - 1, 0) }
        self.fd = fd
    }

    deinit {
        ftruncate(fd, 0)
        flock(fd, LOCK_UN)
        close(fd)
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s = s.dropFirst() }
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }
}
