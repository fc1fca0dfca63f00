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
        let snapshot: [SnapshotSegment] = try log.lock.withLock {
            if log.isClosed { throw LogKVError.closed }
            return state.withLock {
                let activeEnd = options.fsync == .always ? durableEnd : logEnd
                return segments.all.map { file in
                    let length = file.id == log.active.id && activeEnd.segment == file.id ? activeEnd.offset : file.size
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
        // A marker left from an earlier backup must not vouch for this one.
        if target.exists(target.backupCompleteMarkerPath) {
            try target.remove(target.backupCompleteMarkerPath)
            try target.syncDirectory(target.path)
        }
        let manifest = try withBackupSnapshot { snapshot -> BackupManifest in
            var manifest = BackupManifest(segments: [])
            for segment in snapshot {
                let (length, crc) = try Self.copyDurably(segment.file, length: segment.length,
                                                         to: target.segmentPath(segment.id), fs: dir.fs)
                manifest.segments.append(.init(id: segment.id, length: length, crc: crc))
            }
            return manifest
        }
        try target.syncDirectory(target.segmentsPath)
        // Written last: a backup without it was interrupted, and restoring
        // part of the segments could bring deleted keys back.
        try target.writeDurably(manifest.encoded(), to: target.backupCompleteMarkerPath)
        let (count, bytes) = (manifest.count, manifest.totalBytes)
        logger.info("backup written", metadata: ["destination": "\(destination)", "segments": "\(count)", "bytes": "\(bytes)"])
        return (count, bytes)
    }

    /// Makes `destination` a data directory from a backup — a directory
    /// holding `segments/` (what `backup(to:)` writes) or a backup archive
    /// file (what `GET /v1/admin/backup` streams) — then opens it once,
    /// which rebuilds the index.
    ///
    /// `destination` must not exist or be an empty directory: restore never
    /// touches files it did not create. If anything fails, what it created is
    /// removed again.
    public static func restore(from backup: String, to destination: String, options: LogKVOptions = LogKVOptions()) throws -> LogKVStats {
        let fs = options.fileSystem
        let target = DataDirectory(path: destination, fs: fs)
        let existed = fs.exists(destination)
        if existed {
            let entries = (try? fs.list(destination)) ?? ["?"]
            guard entries.isEmpty else {
                throw LogKVError.invalidArgument("restore destination \(destination) is not empty")
            }
        }
        try target.create()
        do {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: backup, isDirectory: &isDirectory), !isDirectory.boolValue {
                try restoreArchive(backup, into: target)
            } else {
                try restoreDirectory(backup, into: target)
            }
            try target.syncDirectory(target.segmentsPath)
            var opts = options
            opts.forceIndexRebuild = true
            let store = try LogKV(path: destination, options: opts)
            let damaged = store.damagedSpansAtOpen
            let stats = try store.stats()
            try store.close()
            // A backup is a copy of acknowledged data: damage in it is
            // refused loudly, never restored as a smaller store.
            guard damaged == 0 else {
                throw LogKVError.corruption(segment: 0, offset: 0,
                                            reason: "the backup holds \(damaged) damaged stretch(es) of records; nothing was restored (run `logkv check` on a copy to see where)")
            }
            return stats
        } catch {
            // Leave nothing behind: only files this restore created are here.
            if existed {
                for name in (try? fs.list(destination)) ?? [] {
                    try? FileManager.default.removeItem(atPath: destination + "/" + name)
                }
            } else {
                try? FileManager.default.removeItem(atPath: destination)
            }
            throw error
        }
    }

    private static func restoreDirectory(_ backup: String, into target: DataDirectory) throws {
        let source = DataDirectory(path: backup, fs: target.fs)
        let ids = (try? source.segmentIDs()) ?? []
        guard !ids.isEmpty else { throw LogKVError.invalidArgument("\(backup) holds no segments") }
        guard let marker = try source.readSmallFile(source.backupCompleteMarkerPath) else {
            throw LogKVError.invalidArgument("\(backup) is not a complete backup (no \(DataDirectory.backupCompleteMarker)): the backup was interrupted, or this is a data directory (back it up with `logkv backup` first)")
        }
        let manifest = try BackupManifest.decode(marker)
        var restored: [BackupManifest.Segment] = []
        for id in ids {
            let file = try SegmentFile.open(fs: source.fs, id: id, path: source.segmentPath(id), writable: false)
            let (length, crc) = try copyDurably(file, length: file.size, to: target.segmentPath(id), fs: target.fs)
            restored.append(.init(id: id, length: length, crc: crc))
        }
        try manifest.verify(restored, backup: backup)
    }

    /// Unpacks a backup archive (see `BackupArchive`), strictly: segment
    /// files only, each written under a temporary name and fsynced.
    private static func restoreArchive(_ archive: String, into target: DataDirectory) throws {
        let fs = target.fs
        let input = try PosixFileSystem().open(archive, .readOnly)
        let total = try input.size()
        var offset: Int64 = 0
        func read(_ count: Int) throws -> [UInt8] {
            var out = [UInt8](repeating: 0, count: count)
            let n = try out.withUnsafeMutableBytes { try input.read(into: $0, at: offset) }
            guard n == count else { throw LogKVError.invalidArgument("backup archive \(archive) is truncated") }
            offset += Int64(count)
            return out
        }
        var restored: [BackupManifest.Segment] = []
        var manifest: BackupManifest?
        while offset < total {
            guard let entry = try BackupArchive.parseHeader(read(BackupArchive.block)) else { break }
            guard let segmentID = entry.segmentID else {
                // BACKUP_COMPLETE, written after every segment.
                guard manifest == nil else { throw LogKVError.invalidArgument("backup archive holds two completion markers") }
                let padded = try read(Int(BackupArchive.padded(entry.size)))
                manifest = try BackupManifest.decode(Array(padded.prefix(Int(entry.size))))
                continue
            }
            guard manifest == nil else { throw LogKVError.invalidArgument("backup archive holds segments after its completion marker") }
            let path = target.segmentPath(segmentID)
            if fs.exists(path) { throw LogKVError.invalidArgument("backup archive holds segment \(segmentID) twice") }
            let (length, crc) = try writeDurably(length: entry.size, to: path, fs: fs) { _, count in try read(count) }
            _ = try read(Int(BackupArchive.padded(entry.size) - entry.size))
            restored.append(.init(id: segmentID, length: length, crc: crc))
        }
        guard let manifest else {
            throw LogKVError.invalidArgument("backup archive \(archive) is incomplete (no \(DataDirectory.backupCompleteMarker)): the stream was cut short")
        }
        guard !restored.isEmpty else { throw LogKVError.invalidArgument("backup archive \(archive) holds no segments") }
        try manifest.verify(restored, backup: archive)
    }

    /// Copies the first `length` bytes of a segment under a temporary name,
    /// fsyncs it, and renames it into place (the caller syncs the directory).
    /// Returns the bytes copied and their CRC-32.
    static func copyDurably(_ file: SegmentFile, length: Int64, to destination: String, fs: any FileSystem) throws -> (Int64, UInt32) {
        try writeDurably(length: length, to: destination, fs: fs) { offset, count in try file.read(at: offset, count: count) }
    }

    /// Writes `length` bytes that `read(offset, count)` supplies, in 4 MiB
    /// chunks, under a temporary name; fsyncs; renames into place (the caller
    /// syncs the directory). Returns the bytes written and their CRC-32.
    static func writeDurably(length: Int64, to destination: String, fs: any FileSystem,
                             read: (_ offset: Int64, _ count: Int) throws -> [UInt8]) throws -> (Int64, UInt32) {
        let temp = destination + ".tmp"
        let out = try fs.open(temp, .createOrTruncate)
        var offset: Int64 = 0
        var crc: UInt32 = 0
        while offset < length {
            let chunk = try read(offset, Int(min(Int64(4 << 20), length - offset)))
            try chunk.withUnsafeBytes {
                crc = CRC32.update(crc, $0)
                try out.write($0, UnsafeRawBufferPointer(start: nil, count: 0), at: offset)
            }
            offset += Int64(chunk.count)
        }
        try out.sync()
        try fs.rename(temp, to: destination)
        return (offset, crc)
    }
}
