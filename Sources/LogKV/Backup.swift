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
        let target = DataDirectory(path: destination)
        if target.holdsSegments {
            throw LogKVError.invalidArgument("backup destination \(destination) already holds segments")
        }
        try target.create()
        let sealed: [SegmentFile] = try writerLock.withLock {
            if writerClosed { throw LogKVError.closed }
            if active.size > Int64(RecordFormat.segmentHeaderSize) { try rotate() }
            let activeID = active.id
            return state.withLock { segments.values.filter { $0.id < activeID }.sorted { $0.id < $1.id } }
        }
        var bytes: Int64 = 0
        for file in sealed {
            let destinationPath = target.segmentPath(file.id)
            let tempPath = destinationPath + ".tmp"
            guard let out = FileHandle(forWritingAtPath: tempPath) ?? {
                FileManager.default.createFile(atPath: tempPath, contents: nil)
                return FileHandle(forWritingAtPath: tempPath)
            }() else {
                throw LogKVError.io(operation: "create", path: tempPath, errno: errno)
            }
            var offset: Int64 = 0
            while offset < file.size {
                let chunk = try file.read(at: offset, count: Int(min(Int64(4 << 20), file.size - offset)))
                try out.write(contentsOf: chunk)
                offset += Int64(chunk.count)
            }
            try out.synchronize()
            try out.close()
            guard rename(tempPath, destinationPath) == 0 else {
                throw LogKVError.io(operation: "rename", path: destinationPath, errno: errno)
            }
            bytes += offset
        }
        DataDirectory.syncDirectory(target.segmentsPath)
        logger.info("backup written", metadata: ["destination": "\(destination)", "segments": "\(sealed.count)", "bytes": "\(bytes)"])
        return (sealed.count, bytes)
    }

    /// Makes `destination` a data directory from a backup: copies its
    /// segments, then opens it once, which rebuilds the index.
    public static func restore(from backup: String, to destination: String, options: LogKVOptions = LogKVOptions()) throws -> LogKVStats {
        let source = DataDirectory(path: backup)
        let ids = try source.segmentIDs()
        guard !ids.isEmpty else { throw LogKVError.invalidArgument("\(backup) holds no segments") }
        let target = DataDirectory(path: destination)
        if target.holdsSegments {
            throw LogKVError.invalidArgument("restore destination \(destination) already holds segments")
        }
        try target.create()
        for id in ids {
            try FileManager.default.copyItem(atPath: source.segmentPath(id), toPath: target.segmentPath(id))
        }
        DataDirectory.syncDirectory(target.segmentsPath)
        var opts = options
        opts.forceIndexRebuild = true
        let store = try LogKV(path: destination, options: opts)
        let stats = try store.stats()
        try store.close()
        return stats
    }
}
