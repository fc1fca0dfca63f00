import Foundation

extension LogKV {
    /// One segment of a backup snapshot: the file and how many of its bytes
    /// belong to the snapshot.
    public struct SnapshotSegment: @unchecked Sendable {
        public let id: UInt64
        let file: SegmentFile
        /// Bytes of the segment in the snapshot; segments only grow at the
        /// end, so this prefix stays valid while writes go on.
        public let length: Int64
        /// The file name the segment has in a data directory.
        public var name: String { DataDirectory.segmentName(id) }

        /// Reads `count` bytes of the snapshot at `offset`.
        public func read(at offset: Int64, count: Int) throws -> [UInt8] {
            try file.read(at: offset, count: count)
        }
    }

    /// Runs `body` with a consistent snapshot of the store: every segment
    /// (log segments and compaction outputs alike: age is never inferred from
    /// an id) with the length that holds every acknowledged write so far —
    /// under `.always` every fsynced one, so a write whose fsync then fails
    /// is never in a backup. Nothing is sealed; compaction waits until
    /// `body` returns, so no segment of the snapshot disappears meanwhile.
    /// Restoring the segments (with `restore`) rebuilds the index from them.
    public func withBackupSnapshot<T>(_ body: ([SnapshotSegment]) throws -> T) throws -> T {
        compactionLock.lock()
        defer { compactionLock.unlock() }
        let snapshot: [SnapshotSegment] = try writerLock.withLock {
            if writerClosed { throw LogKVError.closed }
            return state.withLock {
                let activeEnd = options.fsync == .always ? durableEnd : logEnd
                return segments.values.sorted { $0.id < $1.id }.map { file in
                    let length = file.id == active.id && activeEnd.segment == file.id ? activeEnd.offset : file.size
                    return SnapshotSegment(id: file.id, file: file, length: length)
                }
            }
        }
        return try body(snapshot)
    }

    /// Writes a consistent snapshot of the store into `destination` (a new
    /// or empty directory, created if needed) while reads and writes go on.
    /// Only segments are copied: they are the truth, and `restore` rebuilds
    /// the index from them.
    ///
    /// - Returns: the number of segments and bytes copied.
    @discardableResult
    public func backup(to destination: String) throws -> (segments: Int, bytes: Int64) {
        let target = DataDirectory(path: destination, fs: dir.fs)
        if target.holdsSegments {
            throw LogKVError.invalidArgument("backup destination \(destination) already holds segments")
        }
        try target.create()
        let (count, bytes) = try withBackupSnapshot { snapshot -> (Int, Int64) in
            var bytes: Int64 = 0
            for segment in snapshot {
                bytes += try Self.copyDurably(segment.file, length: segment.length,
                                              to: target.segmentPath(segment.id), fs: dir.fs)
            }
            return (snapshot.count, bytes)
        }
        try target.syncDirectory(target.segmentsPath)
        logger.info("backup written", metadata: ["destination": "\(destination)", "segments": "\(count)", "bytes": "\(bytes)"])
        return (count, bytes)
    }

    /// Makes `destination` a data directory from a backup: copies its
    /// segments, then opens it once, which rebuilds the index.
    public static func restore(from backup: String, to destination: String, options: LogKVOptions = LogKVOptions()) throws -> LogKVStats {
        let source = DataDirectory(path: backup, fs: options.fileSystem)
        let ids = try source.segmentIDs()
        guard !ids.isEmpty else { throw LogKVError.invalidArgument("\(backup) holds no segments") }
        let target = DataDirectory(path: destination, fs: options.fileSystem)
        if target.holdsSegments {
            throw LogKVError.invalidArgument("restore destination \(destination) already holds segments")
        }
        try target.create()
        for id in ids {
            let file = try SegmentFile.open(fs: source.fs, id: id, path: source.segmentPath(id), writable: false)
            _ = try copyDurably(file, length: file.size, to: target.segmentPath(id), fs: target.fs)
        }
        try target.syncDirectory(target.segmentsPath)
        var opts = options
        opts.forceIndexRebuild = true
        let store = try LogKV(path: destination, options: opts)
        let stats = try store.stats()
        try store.close()
        return stats
    }

    /// Copies the first `length` bytes of a segment under a temporary name,
    /// fsyncs it, and renames it into place (the caller syncs the directory).
    /// Returns the bytes copied.
    static func copyDurably(_ file: SegmentFile, length: Int64, to destination: String, fs: any FileSystem) throws -> Int64 {
        let temp = destination + ".tmp"
        let out = try fs.open(temp, .createOrTruncate)
        var offset: Int64 = 0
        while offset < length {
            let chunk = try file.read(at: offset, count: Int(min(Int64(4 << 20), length - offset)))
            try chunk.withUnsafeBytes { try out.write($0, UnsafeRawBufferPointer(start: nil, count: 0), at: offset) }
            offset += Int64(chunk.count)
        }
        try out.sync()
        try fs.rename(temp, to: destination)
        return offset
    }
}
