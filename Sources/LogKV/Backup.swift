import Foundation

extension LogKV {
    /// Copies a consistent snapshot of the store into `destination` (a new
    /// or empty directory) while reads and writes go on.
    ///
    /// The active segment is sealed first, so every segment copied is
    /// immutable; compaction waits until the copy is done. Only segments are
    /// copied: they are the truth, and `restore` rebuilds the index from them.
    ///
    /// - Returns: the number of segments and bytes copied.
    @discardableResult
    public func backup(to destination: String) throws -> (segments: Int, bytes: Int64) {
        compactionLock.lock()
        defer { compactionLock.unlock() }
        let target = DataDirectory(path: destination, fs: dir.fs)
        if target.holdsSegments {
            throw LogKVError.invalidArgument("backup destination \(destination) already holds segments")
        }
        try target.create()
        let sealed: [SegmentFile] = try writerLock.withLock {
            if writerClosed { throw LogKVError.closed }
            if !active.isEmpty { try rotate() }
            let activeID = active.id
            return state.withLock { segments.values.filter { $0.id < activeID }.sorted { $0.id < $1.id } }
        }
        var bytes: Int64 = 0
        for file in sealed {
            bytes += try Self.copyDurably(file, to: target.segmentPath(file.id), fs: dir.fs)
        }
        try target.syncDirectory(target.segmentsPath)
        logger.info("backup written", metadata: ["destination": "\(destination)", "segments": "\(sealed.count)", "bytes": "\(bytes)"])
        return (sealed.count, bytes)
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
            _ = try copyDurably(file, to: target.segmentPath(id), fs: target.fs)
        }
        try target.syncDirectory(target.segmentsPath)
        var opts = options
        opts.forceIndexRebuild = true
        let store = try LogKV(path: destination, options: opts)
        let stats = try store.stats()
        try store.close()
        return stats
    }

    /// Copies a segment under a temporary name, fsyncs it, and renames it
    /// into place (the caller syncs the directory). Returns the bytes copied.
    static func copyDurably(_ file: SegmentFile, to destination: String, fs: any FileSystem) throws -> Int64 {
        let temp = destination + ".tmp"
        let out = try fs.open(temp, .createOrTruncate)
        var offset: Int64 = 0
        while offset < file.size {
            let chunk = try file.read(at: offset, count: Int(min(Int64(4 << 20), file.size - offset)))
            try chunk.withUnsafeBytes { try out.write($0, UnsafeRawBufferPointer(start: nil, count: 0), at: offset) }
            offset += Int64(chunk.count)
        }
        try out.sync()
        try fs.rename(temp, to: destination)
        return offset
    }
}
