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
///     <dir>/RESERVE               zeros kept for a full disk (`DiskReserve`)
///     <dir>/index.sqlite.rebuild  only during a full index rebuild (scratch)
///
/// All file operations go through `fs` (see `FileSystem`), except the
/// rebuild scratch, which SQLite writes (see `IndexBulkLoad`).
struct DataDirectory: Sendable {
    let path: String
    let fs: any FileSystem

    init(path: String, fs: any FileSystem = PosixFileSystem()) {
        self.path = path
        self.fs = fs
    }

    var lockPath: String { path + "/LOCK" }
    var segmentsPath: String { path + "/segments" }
    var indexPath: String { path + "/index.sqlite" }
    /// Present while a compaction swaps segments (`CompactionManifest`).
    var compactionManifestPath: String { path + "/COMPACTION" }
    var reservePath: String { path + "/RESERVE" }
    /// In a backup directory only: written last by `backup(to:)`.
    static let backupCompleteMarker = "BACKUP_COMPLETE"
    var backupCompleteMarkerPath: String { path + "/" + Self.backupCompleteMarker }
    var indexSidecars: [String] { Self.sqliteSidecars(of: indexPath) }

    /// The files SQLite keeps beside a database at `path`.
    static func sqliteSidecars(of path: String) -> [String] { [path + "-wal", path + "-shm", path + "-journal"] }

    func segmentPath(_ id: UInt64) -> String {
        segmentsPath + "/" + Self.segmentName(id)
    }

    /// `NNNNNNNNNNNN.seg`: the id, zero-padded to 12 digits.
    static func segmentName(_ id: UInt64) -> String {
        var digits = String(id)
        if digits.count < 12 { digits = String(repeating: "0", count: 12 - digits.count) + digits }
        return digits + ".seg"
    }

    /// Ids of the segment files present, ascending.
    func segmentIDs() throws -> [UInt64] {
        try fs.list(segmentsPath).compactMap { name in
            name.hasSuffix(".seg") ? UInt64(name.dropLast(4)) : nil
        }.sorted()
    }

    /// True when `segments/` exists and holds at least one segment.
    var holdsSegments: Bool {
        fs.exists(segmentsPath) && !((try? segmentIDs()) ?? []).isEmpty
    }

    /// Creates the directory (and its parents) and `segments/`, each new
    /// directory made durable in its parent.
    func create() throws {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in (path + "/segments").split(separator: "/") {
            let parent = prefix.isEmpty ? "/" : prefix
            prefix += "/" + component
            if fs.exists(prefix) { continue }
            try fs.makeDirectory(prefix)
            try fs.syncDirectory(parent)
        }
    }

    /// The directory's permission bits when group or others have any
    /// (logkv makes it 0700), else nil.
    var permissionsLooserThanOwnerOnly: UInt32? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        let mode = UInt32(info.st_mode) & 0o777
        return mode & 0o077 != 0 ? mode : nil
    }

    func exists(_ path: String) -> Bool { fs.exists(path) }

    func remove(_ path: String) throws { try fs.remove(path) }

    func syncDirectory(_ path: String) throws { try fs.syncDirectory(path) }

    /// Writes a small file atomically and durably: temp file, fsync, rename,
    /// fsync of the directory (rule 2: the new name is durable before anyone
    /// relies on it).
    func writeDurably(_ bytes: [UInt8], to path: String) throws {
        let temp = path + ".tmp"
        let file = try fs.open(temp, .createOrTruncate)
        try bytes.withUnsafeBytes { try file.write($0, UnsafeRawBufferPointer(start: nil, count: 0), at: 0) }
        try file.sync()
        try fs.rename(temp, to: path)
        try fs.syncDirectory(String(path[..<path.lastIndex(of: "/")!]))
    }

    /// The whole content of a small file, or nil if it does not exist.
    func readSmallFile(_ path: String) throws -> [UInt8]? {
        guard fs.exists(path) else { return nil }
        let file = try fs.open(path, .readOnly)
        var out = [UInt8](repeating: 0, count: Int(try file.size()))
        let n = try out.withUnsafeMutableBytes { try file.read(into: $0, at: 0) }
        return Array(out.prefix(n))
    }

    /// Takes the directory's exclusive lock, naming this process as holder.
    func lock(clock: () -> Int64) throws -> AnyObject {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let hostName = String(decoding: host.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var seconds = time_t(clock() / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let since = "\(Int(parts.tm_year) + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T"
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
        return try fs.lockDirectory(lockPath: lockPath, holder: "pid \(getpid()) on \(hostName), since \(since)")
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
