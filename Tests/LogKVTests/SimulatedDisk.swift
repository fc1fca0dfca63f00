import Foundation
@testable import LogKV

/// A file system that applies the power-loss model of DESIGN.md, in the
/// spirit of SQLite's crash VFS and LevelDB's fault-injection Env.
///
/// Every file under `root` (segments, the manifest, the lock) lives in memory
/// as an inode with two contents: what the program sees now, and what the
/// last fsync of that file made durable. Every directory keeps two name maps
/// the same way (changed by create, rename and unlink; made durable by an
/// fsync of the directory).
///
/// SQLite's files (`index.sqlite*`) stay real files under `root`; SQLite
/// reports each commit, and the disk snapshots the index files then. The last
/// commit reported durable (synchronous=FULL, or a WAL checkpoint) is the
/// index a power loss must keep at least; any later commit may survive too.
///
/// `crashImage` computes one state a power loss at this moment may leave:
/// each unsynced page of each file kept, lost, zeroed or torn at sector
/// granularity; each unsynced directory change kept or lost; the index at a
/// commit between the last durable one and the latest. `crashPoint` is
/// called before every fsync, directory fsync, index commit and write, so a
/// test can take images there.
///
/// `fault` makes a chosen operation fail with an errno (EIO, ENOSPC, …).
final class SimulatedDisk: FileSystem, @unchecked Sendable {
    final class Inode {
        var current: [UInt8]
        var durable: [UInt8]
        init(_ bytes: [UInt8] = [], durable: Bool = false) {
            current = bytes
            self.durable = durable ? bytes : []
        }
    }

    struct Directory {
        var current: [String: Inode] = [:]
        var durable: [String: Inode] = [:]
    }

    /// One state a power loss may leave, with paths relative to the root.
    struct CrashImage {
        var directories: [String: [String: [UInt8]]]
        var index: [String: [UInt8]]?
    }

    enum Operation: String { case write, truncate, sync, syncDirectory, create, rename, remove, indexCommit }

    let root: String
    private let lock = NSRecursiveLock()
    private var directories: [String: Directory] = [:]
    private var heldLocks: Set<String> = []
    /// Index snapshots: [0] is the last durable commit (or none yet).
    private var indexSnapshots: [[String: [UInt8]]?] = [nil]
    static let indexSnapshotsKept = 6

    /// Called (with the disk locked) before each operation that a power
    /// loss could interrupt: the operation and the path.
    var crashPoint: ((Operation, String) -> Void)?
    /// An errno to fail the operation with, or nil to let it run.
    var fault: ((Operation, String) -> Int32?)?
    /// Runs at the start of every file fsync, outside the disk's lock: a
    /// slow disk, during which other threads go on writing.
    var beforeSync: ((String) -> Void)?
    /// Runs at the end of every file fsync, after it made the file's bytes
    /// durable and before it returns, outside the disk's lock: writes that
    /// land now are not covered by it.
    var afterSync: ((String) -> Void)?

    init(root: String) {
        self.root = root
        try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        directories[root] = Directory()
    }

    /// A disk holding exactly `image`, all of it durable, under a new root.
    convenience init(root: String, image: CrashImage) {
        self.init(root: root)
        for (relative, files) in image.directories {
            var directory = Directory()
            for (name, bytes) in files {
                let inode = Inode(bytes, durable: true)
                directory.current[name] = inode
                directory.durable[name] = inode
            }
            directories[relative.isEmpty ? root : root + "/" + relative] = directory
        }
        if let index = image.index {
            for (name, bytes) in index {
                FileManager.default.createFile(atPath: root + "/" + name, contents: Data(bytes))
            }
            indexSnapshots = [index]
        }
    }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    // MARK: Paths

    private func isIndexFile(_ path: String) -> Bool {
        (path as NSString).lastPathComponent.hasPrefix("index.sqlite")
    }

    private func isSimulated(_ path: String) -> Bool {
        !isIndexFile(path) && (path == root || path.hasPrefix(root + "/"))
    }

    private func split(_ path: String) -> (parent: String, name: String) {
        let slash = path.lastIndex(of: "/")!
        return (String(path[..<slash]), String(path[path.index(after: slash)...]))
    }

    private func relative(_ path: String) -> String {
        path == root ? "" : String(path.dropFirst(root.count + 1))
    }

    private func check(_ op: Operation, _ path: String) throws {
        crashPoint?(op, path)
        if let err = fault?(op, path) { throw LogKVError.io(operation: op.rawValue, path: path, errno: err) }
    }

    // MARK: FileSystem

    func open(_ path: String, _ mode: FileOpenMode) throws -> any StorageFile {
        guard isSimulated(path) else { return try PosixFileSystem().open(path, mode) }
        return try withLock {
            let (parent, name) = split(path)
            guard directories[parent] != nil else { throw LogKVError.io(operation: "open", path: path, errno: ENOENT) }
            let existing = directories[parent]!.current[name]
            switch mode {
            case .readOnly, .readWrite:
                guard let existing else { throw LogKVError.io(operation: "open", path: path, errno: ENOENT) }
                return SimulatedFile(disk: self, inode: existing, path: path)
            case .createNew:
                if existing != nil { throw LogKVError.io(operation: "open", path: path, errno: EEXIST) }
                try check(.create, path)
                let inode = Inode()
                directories[parent]!.current[name] = inode
                return SimulatedFile(disk: self, inode: inode, path: path)
            case .createOrTruncate:
                try check(.create, path)
                if let existing {
                    existing.current = []
                    return SimulatedFile(disk: self, inode: existing, path: path)
                }
                let inode = Inode()
                directories[parent]!.current[name] = inode
                return SimulatedFile(disk: self, inode: inode, path: path)
            }
        }
    }

    func list(_ directory: String) throws -> [String] {
        guard isSimulated(directory) else { return try PosixFileSystem().list(directory) }
        return try withLock {
            guard let d = directories[directory] else { throw LogKVError.io(operation: "opendir", path: directory, errno: ENOENT) }
            return Array(d.current.keys)
        }
    }

    func makeDirectory(_ path: String) throws {
        guard isSimulated(path) else { return try PosixFileSystem().makeDirectory(path) }
        withLock { if directories[path] == nil { directories[path] = Directory() } }
    }

    func syncDirectory(_ directory: String) throws {
        guard isSimulated(directory) else { return }
        try withLock {
            try check(.syncDirectory, directory)
            if let current = directories[directory]?.current { directories[directory]!.durable = current }
        }
    }

    func rename(_ from: String, to: String) throws {
        guard isSimulated(from) else { return try PosixFileSystem().rename(from, to: to) }
        try withLock {
            try check(.rename, to)
            let (p1, n1) = split(from), (p2, n2) = split(to)
            guard let inode = directories[p1]?.current[n1] else { throw LogKVError.io(operation: "rename", path: from, errno: ENOENT) }
            directories[p1]!.current[n1] = nil
            directories[p2]!.current[n2] = inode
        }
    }

    func remove(_ path: String) throws {
        guard isSimulated(path) else { return try PosixFileSystem().remove(path) }
        try withLock {
            let (parent, name) = split(path)
            guard directories[parent]?.current[name] != nil else { return }
            try check(.remove, path)
            directories[parent]!.current[name] = nil
        }
    }

    func exists(_ path: String) -> Bool {
        guard isSimulated(path) else { return PosixFileSystem().exists(path) }
        return withLock {
            if directories[path] != nil { return true }
            let (parent, name) = split(path)
            return directories[parent]?.current[name] != nil
        }
    }

    final class HeldLock {
        let release: () -> Void
        init(_ release: @escaping () -> Void) { self.release = release }
        deinit { release() }
    }

    func lockDirectory(lockPath: String, holder: String) throws -> AnyObject {
        try withLock {
            if heldLocks.contains(lockPath) { throw LogKVError.locked(path: lockPath, holder: "simulated holder") }
            heldLocks.insert(lockPath)
            return HeldLock { [weak self] in self?.withLock { _ = self?.heldLocks.remove(lockPath) } }
        }
    }

    func indexWillCommit(path: String) throws {
        if let err = fault?(.indexCommit, path) {
            throw LogKVError.index(code: 13, message: "database or disk is full (simulated, errno \(err))")
        }
    }

    func indexCommitted(path: String, durable: Bool) {
        withLock {
            crashPoint?(.sync, path)
            var files: [String: [UInt8]] = [:]
            for suffix in ["", "-wal"] {
                if let data = FileManager.default.contents(atPath: path + suffix) {
                    files["index.sqlite" + suffix] = [UInt8](data)
                }
            }
            if durable {
                indexSnapshots = [files]
            } else {
                indexSnapshots.append(files)
                if indexSnapshots.count > Self.indexSnapshotsKept {
                    indexSnapshots.remove(at: 1)
                }
            }
        }
    }

    // MARK: Power loss

    /// One state a power loss now may leave.
    func crashImage<R: RandomNumberGenerator>(using rng: inout R) -> CrashImage {
        withLock {
            var result: [String: [String: [UInt8]]] = [:]
            for (path, directory) in directories {
                var files: [String: [UInt8]] = [:]
                let names = Set(directory.current.keys).union(directory.durable.keys)
                for name in names {
                    let now = directory.current[name], before = directory.durable[name]
                    let inode: Inode?
                    if now === before {
                        inode = now
                    } else {
                        inode = Bool.random(using: &rng) ? now : before
                    }
                    if let inode { files[name] = Self.afterPowerLoss(inode, using: &rng) }
                }
                result[relative(path)] = files
            }
            let index = indexSnapshots[Int.random(in: 0..<indexSnapshots.count, using: &rng)]
            return CrashImage(directories: result, index: index)
        }
    }

    /// The harshest state a power loss now may leave for the log: every
    /// file holds exactly its durable bytes and every directory its durable
    /// entries; the index is at its latest commit (a commit SQLite did not
    /// make durable may survive all the same).
    func durableImage() -> CrashImage {
        withLock {
            var result: [String: [String: [UInt8]]] = [:]
            for (path, directory) in directories {
                result[relative(path)] = directory.durable.mapValues { $0.durable }
            }
            return CrashImage(directories: result, index: indexSnapshots.last ?? nil)
        }
    }

    /// What a file holds after a power loss: its durable bytes where nothing
    /// changed since; elsewhere, per 4 KiB page, the new bytes, the old, zeros
    /// (except where durable bytes are unchanged), or a mix of old and new
    /// 512-byte sectors.
    static func afterPowerLoss<R: RandomNumberGenerator>(_ inode: Inode, using rng: inout R) -> [UInt8] {
        let old = inode.durable, new = inode.current
        if old == new { return old }
        let page = 4096, sector = 512
        let lengths = [old.count, new.count, (min(old.count, new.count) + Int.random(in: 0...abs(new.count - old.count), using: &rng))]
        let length = lengths[Int.random(in: 0..<lengths.count, using: &rng)]
        var out = [UInt8](repeating: 0, count: length)
        func byte(_ bytes: [UInt8], _ i: Int) -> UInt8 { i < bytes.count ? bytes[i] : 0 }
        var start = 0
        while start < length {
            let end = min(start + page, length)
            let same = (start..<end).allSatisfy { byte(old, $0) == byte(new, $0) }
            let choice = same ? 4 : Int.random(in: 0..<10, using: &rng)
            // Torn pages: each sector from one side.
            let sectorsNew = (0..<(page / sector)).map { _ in Bool.random(using: &rng) }
            for i in start..<end {
                switch choice {
                case 0...2: out[i] = byte(old, i)
                case 3...6: out[i] = byte(new, i)
                // A lost page reads as zeros, but bytes an fsync covered stay
                // (the model: only unsynced bytes may go).
                case 7: out[i] = i < old.count && byte(old, i) == byte(new, i) ? old[i] : 0
                default: out[i] = sectorsNew[(i - start) / sector] ? byte(new, i) : byte(old, i)
                }
            }
            start = end
        }
        return out
    }

    // MARK: File operations, called by SimulatedFile

    fileprivate func write(_ inode: Inode, path: String, _ bytes: [UInt8], at offset: Int) throws {
        try withLock {
            try check(.write, path)
            if inode.current.count < offset + bytes.count {
                inode.current.append(contentsOf: [UInt8](repeating: 0, count: offset + bytes.count - inode.current.count))
            }
            inode.current.replaceSubrange(offset..<offset + bytes.count, with: bytes)
        }
    }

    fileprivate func sync(_ inode: Inode, path: String) throws {
        beforeSync?(path)
        try withLock {
            try check(.sync, path)
            inode.durable = inode.current
        }
        afterSync?(path)
    }

    fileprivate func truncate(_ inode: Inode, path: String, to length: Int) throws {
        try withLock {
            try check(.truncate, path)
            if length < inode.current.count {
                inode.current.removeLast(inode.current.count - length)
            } else {
                inode.current.append(contentsOf: [UInt8](repeating: 0, count: length - inode.current.count))
            }
        }
    }
}

final class SimulatedFile: StorageFile, @unchecked Sendable {
    let disk: SimulatedDisk
    let inode: SimulatedDisk.Inode
    let path: String

    init(disk: SimulatedDisk, inode: SimulatedDisk.Inode, path: String) {
        self.disk = disk
        self.inode = inode
        self.path = path
    }

    func size() throws -> Int64 { disk.withLock { Int64(inode.current.count) } }

    func write(_ head: UnsafeRawBufferPointer, _ tail: UnsafeRawBufferPointer, at offset: Int64) throws {
        try disk.write(inode, path: path, Array(head) + Array(tail), at: Int(offset))
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        disk.withLock {
            let bytes = inode.current
            guard offset < bytes.count, buffer.count > 0 else { return 0 }
            let n = min(buffer.count, bytes.count - Int(offset))
            bytes.withUnsafeBytes { src in
                buffer.baseAddress!.copyMemory(from: src.baseAddress! + Int(offset), byteCount: n)
            }
            return n
        }
    }

    func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Bool {
        ((try? read(into: buffer, at: offset)) ?? 0) == buffer.count
    }

    func sync() throws { try disk.sync(inode, path: path) }

    func truncate(to length: Int64) throws { try disk.truncate(inode, path: path, to: Int(length)) }
}
