import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A file of `size` zero bytes kept in the data directory (`RESERVE`) so
/// that a full disk never locks the store in: when an append that frees
/// space later (a delete's tombstone, a compaction) finds the disk full, the
/// reserve is given up to make room for it, as etcd's NOSPACE alarm leaves
/// room for a defragmentation. While it is given up, puts are refused (they
/// must not take the room); the maintenance thread makes it again once the
/// disk has room for it twice over.
///
/// Caveat: on a filesystem that compresses or deduplicates (ZFS with lz4,
/// btrfs), zeros take no space and the reserve reserves nothing.
///
/// Thread-safety: `lock` serialises the file operations; `released` is
/// read without it on every append.
final class DiskReserve: @unchecked Sendable {
    let path: String
    let size: Int
    private let fs: any FileSystem
    private let directory: String
    private let lock = NSLock()
    /// Given up and not made again yet.
    private let released = Atomic<Bool>(false)

    init(dir: DataDirectory, size: Int) {
        self.path = dir.reservePath
        self.directory = dir.path
        self.size = size
        self.fs = dir.fs
    }

    /// The reserve was given up and is not back yet.
    var isReleased: Bool { released.load(ordering: .relaxed) }

    /// Whether the reserve file is there now, whole.
    var isHeld: Bool {
        guard size > 0 else { return false }
        return lock.withLock { holdsWholeFile() }
    }

    private func holdsWholeFile() -> Bool {
        guard fs.exists(path), let file = try? fs.open(path, .readOnly) else { return false }
        return (try? file.size()) == Int64(size)
    }

    /// Bytes free for this process on the directory's filesystem, if the
    /// system can tell.
    private func freeBytes() -> Int64? {
        var st = statvfs()
        guard statvfs(directory, &st) == 0 else { return nil }
        return Int64(st.f_bavail) * Int64(st.f_frsize)
    }

    /// Makes the reserve if it is missing (or a crash left it short), when
    /// the disk has room for it twice over; never leaves a partial file.
    /// Returns whether it is held.
    @discardableResult
    func ensure() -> Bool {
        guard size > 0 else { return false }
        return lock.withLock {
            if holdsWholeFile() {
                released.store(false, ordering: .relaxed)
                return true
            }
            if let free = freeBytes(), free < 2 * Int64(size) { return false }
            try? fs.remove(path)
            do {
                let file = try fs.open(path, .createNew)
                let chunk = [UInt8](repeating: 0, count: min(size, 1 << 20))
                var written = 0
                while written < size {
                    let n = min(chunk.count, size - written)
                    try chunk.withUnsafeBytes { c in
                        try file.write(UnsafeRawBufferPointer(rebasing: c[0..<n]), UnsafeRawBufferPointer(start: nil, count: 0),
                                       at: Int64(written))
                    }
                    written += n
                }
                try file.sync()
                try fs.syncDirectory(directory)
                released.store(false, ordering: .relaxed)
                return true
            } catch {
                try? fs.remove(path)
                return false
            }
        }
    }

    /// Gives the reserve up; returns whether there was one to give.
    func release() -> Bool {
        guard size > 0 else { return false }
        return lock.withLock {
            guard fs.exists(path) else { return false }
            do {
                try fs.remove(path)
                try? fs.syncDirectory(directory)
                released.store(true, ordering: .relaxed)
                return true
            } catch {
                return false
            }
        }
    }
}
