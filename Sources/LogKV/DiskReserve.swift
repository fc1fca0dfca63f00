import Foundation

/// A file of `size` zero bytes kept in the data directory (`RESERVE`) so
/// that a full disk never locks the store in: when an append that frees
/// space later (a delete's tombstone, a compaction) finds the disk full, the
/// reserve is given up to make room for it, as etcd's NOSPACE alarm leaves
/// room for a defragmentation. Puts never use it. It is made again, best
/// effort, once writes succeed.
///
/// Thread-safety: its own lock; never held across anything but its file.
final class DiskReserve: @unchecked Sendable {
    let path: String
    let size: Int
    private let fs: any FileSystem
    private let directory: String
    private let lock = NSLock()

    init(dir: DataDirectory, size: Int) {
        self.path = dir.reservePath
        self.directory = dir.path
        self.size = size
        self.fs = dir.fs
    }

    /// Whether the reserve file is there now.
    var isHeld: Bool { size > 0 && lock.withLock { fs.exists(path) } }

    /// Makes the reserve if it is missing. A disk too full for it leaves
    /// none (and no partial file); returns whether it is held.
    @discardableResult
    func ensure() -> Bool {
        guard size > 0 else { return false }
        return lock.withLock {
            if fs.exists(path) { return true }
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
                return true
            } catch {
                return false
            }
        }
    }
}
