import Foundation
import Logging

/// Opening a data directory: lock, segments, index, and bringing the index up
/// to the end of the log.
///
/// 1. Take the lock; list segments; check their headers belong to one store.
/// 2. Open the index (running migrations). If it is missing, unreadable,
///    from another directory, or ahead of the log, rebuild it from all
///    segments (highest seq per key wins).
/// 3. Otherwise replay the records after the checkpoint: cost follows the
///    unflushed tail, not the key count.
/// 4. A torn or corrupt tail of the last segment is cut at the last good
///    record and logged; damage anywhere else is an error.
enum Recovery {
    struct Result {
        var dir: DataDirectory
        var lock: DirectoryLock
        var storeID: [UInt8]
        var segments: [SegmentFile]
        var index: IndexWriter
        var maxSeq: UInt64
        var replayedRecords: Int
        var truncatedBytes: Int
        var rebuilt: Bool
    }

    /// Records applied per index transaction while replaying.
    static let replayBatch = 20_000

    static func open(path: String, options: LogKVOptions) throws -> Result {
        let logger = options.logger
        let dir = DataDirectory(path: path)
        try dir.create()
        let lock = try DirectoryLock(path: dir.lockPath, clock: options.clock)
        try settleCompaction(dir, logger: logger)
        var segments = try openSegments(dir, logger: logger)
        let storeID: [UInt8]
        if segments.isEmpty {
            var id = [UInt8](repeating: 0, count: 16)
            var rng = SystemRandomNumberGenerator()
            for i in id.indices { id[i] = rng.next() }
            storeID = id
            segments.append(try SegmentFile.create(id: 1, path: dir.segmentPath(1), storeID: id))
            DataDirectory.syncDirectory(dir.segmentsPath)
        } else {
            storeID = try checkHeaders(segments)
        }

        var index: IndexWriter
        var startAt: LogPosition?
        var maxSeq: UInt64 = 0
        var rebuildReason: String?
        do {
            index = try IndexWriter(path: dir.indexPath)
            let checkpoint = try index.checkpoint()
            let indexStore = try index.storeID()
            if let checkpoint, indexStore == storeID {
                if let segment = segments.first(where: { $0.id == checkpoint.position.segment }),
                   checkpoint.position.offset >= Int64(RecordFormat.segmentHeaderSize),
                   checkpoint.position.offset <= segment.size {
                    startAt = checkpoint.position
                    maxSeq = checkpoint.maxSeq
                } else {
                    rebuildReason = "index checkpoint is past the end of the log"
                }
            } else if indexStore != nil && indexStore != storeID {
                rebuildReason = "index belongs to another data directory"
            } else if checkpoint == nil && segments.count == 1 && segments[0].size == Int64(RecordFormat.segmentHeaderSize) {
                startAt = LogPosition(segment: segments[0].id, offset: Int64(RecordFormat.segmentHeaderSize))
                try index.setStoreID(storeID)
            } else {
                rebuildReason = "index is missing or empty"
            }
        } catch {
            rebuildReason = "index cannot be opened (\(error))"
            index = try freshIndex(dir, storeID: storeID)
        }

        if options.forceIndexRebuild && rebuildReason == nil { rebuildReason = "requested" }
        let rebuilt = rebuildReason != nil
        if let rebuildReason {
            logger.warning("rebuilding index from segments", metadata: [
                "reason": "\(rebuildReason)", "segments": "\(segments.count)"])
            index = try freshIndex(dir, storeID: storeID)
            startAt = LogPosition(segment: segments[0].id, offset: Int64(RecordFormat.segmentHeaderSize))
            maxSeq = 0
        }

        let replay = try replayLog(segments: &segments, from: startAt!, into: index, outOfOrder: rebuilt,
                                   maxSeq: maxSeq, logger: logger, progress: options.recoveryProgress)
        return Result(dir: dir, lock: lock, storeID: storeID, segments: segments, index: index,
                      maxSeq: replay.maxSeq, replayedRecords: replay.records,
                      truncatedBytes: replay.truncatedBytes, rebuilt: rebuilt)
    }

    /// Finishes or undoes a compaction a crash interrupted. Its index commit
    /// is the decision point: if the index has rows for the new segments (or,
    /// without a usable index, if an old segment is already gone), the
    /// compaction happened and the old files go; otherwise the new ones do.
    static func settleCompaction(_ dir: DataDirectory, logger: Logger) throws {
        guard DataDirectory.exists(dir.compactionManifestPath) else { return }
        let text = (try? String(contentsOfFile: dir.compactionManifestPath, encoding: .utf8)) ?? ""
        func ids(_ tag: String) -> [UInt64] {
            text.split(separator: "\n").first { $0.hasPrefix(tag + " ") || $0 == Substring(tag) }?
                .split(separator: " ").dropFirst().compactMap { UInt64($0) } ?? []
        }
        let old = ids("old"), new = ids("new")
        var committed: Bool
        if let db = try? SQLiteConnection(path: dir.indexPath, readOnly: true),
           let known = try? db.scalarInt("SELECT count(*) FROM segments WHERE id IN (\(new.map(String.init).joined(separator: ",")))"),
           !new.isEmpty {
            committed = known > 0
        } else {
            committed = false
        }
        if !committed && old.contains(where: { !DataDirectory.exists(dir.segmentPath($0)) }) { committed = true }
        let doomed = committed ? old : new
        for id in doomed { DataDirectory.remove(dir.segmentPath(id)) }
        DataDirectory.syncDirectory(dir.segmentsPath)
        DataDirectory.remove(dir.compactionManifestPath)
        DataDirectory.syncDirectory(dir.path)
        logger.warning("settled an interrupted compaction", metadata: [
            "committed": "\(committed)", "removed_segments": "\(doomed)"])
    }

    /// Opens every segment; the last one writable. A last segment whose
    /// header never made it to disk (crash while rotating) is removed.
    private static func openSegments(_ dir: DataDirectory, logger: Logger) throws -> [SegmentFile] {
        let ids = try dir.segmentIDs()
        var files: [SegmentFile] = []
        for (n, id) in ids.enumerated() {
            let isLast = n == ids.count - 1
            let file = try SegmentFile.open(id: id, path: dir.segmentPath(id), writable: isLast)
            if isLast && n > 0 && file.size < Int64(RecordFormat.segmentHeaderSize) {
                logger.warning("removing a segment whose header was never written", metadata: ["segment": "\(id)"])
                DataDirectory.remove(file.path)
                DataDirectory.syncDirectory(dir.segmentsPath)
                // The previous segment becomes the active one again.
                files[n - 1] = try SegmentFile.open(id: files[n - 1].id, path: files[n - 1].path, writable: true)
                continue
            }
            files.append(file)
        }
        return files
    }

    private static func checkHeaders(_ segments: [SegmentFile]) throws -> [UInt8] {
        var storeID: [UInt8]?
        for segment in segments {
            let id = try segment.readHeader()
            if let storeID, storeID != id {
                throw LogKVError.corruption(segment: segment.id, offset: 0,
                                            reason: "segment belongs to another data directory")
            }
            storeID = id
        }
        return storeID!
    }

    private static func freshIndex(_ dir: DataDirectory, storeID: [UInt8]) throws -> IndexWriter {
        for file in [dir.indexPath] + dir.indexSidecars { DataDirectory.remove(file) }
        let index = try IndexWriter(path: dir.indexPath)
        try index.setStoreID(storeID)
        return index
    }

    /// Applies every record from `start` to the end of the log to the index.
    private static func replayLog(
        segments: inout [SegmentFile], from start: LogPosition, into index: IndexWriter,
        outOfOrder: Bool, maxSeq: UInt64, logger: Logger, progress: (@Sendable (Int, Int, Int) -> Void)?
    ) throws -> (records: Int, maxSeq: UInt64, truncatedBytes: Int) {
        let toReplay = segments.filter { $0.id >= start.segment }.count
        var replayed = 0
        var maxSeq = maxSeq
        var records = 0
        var truncated = 0
        var batch: [KeyBytes: KeyDirChange] = [:]
        var sizes: [UInt64: Int64] = [:]
        func commit(upTo position: LogPosition) throws {
            try index.apply(batch.sortedForIndex(), checkpoint: position, maxSeq: maxSeq, segmentSizes: sizes, outOfOrder: outOfOrder)
            batch.removeAll(keepingCapacity: true)
            sizes.removeAll()
        }
        for (n, segment) in segments.enumerated() where segment.id >= start.segment {
            let isLast = n == segments.count - 1
            let from = segment.id == start.segment ? start.offset : Int64(RecordFormat.segmentHeaderSize)
            var scanner = SegmentScanner(file: segment, from: from)
            do {
                while let entry = try scanner.next() {
                    let h = entry.header
                    batch.keepNewest(entry.key, KeyDirChange(h, segment: segment.id, offset: entry.offset))
                    maxSeq = max(maxSeq, h.seq)
                    records += 1
                    if batch.count >= replayBatch {
                        sizes[segment.id] = scanner.validEnd
                        try commit(upTo: LogPosition(segment: segment.id, offset: scanner.validEnd))
                    }
                }
            } catch let stop as SegmentScanner.Stop {
                switch stop {
                case let .tornTail(offset, reason) where isLast:
                    let cut = Int(segment.size - offset)
                    logger.warning("truncating torn tail of the last segment", metadata: [
                        "segment": "\(segment.id)", "offset": "\(offset)", "bytes_cut": "\(cut)", "reason": "\(reason)"])
                    try segment.truncate(to: offset)
                    truncated += cut
                case let .tornTail(offset, reason), let .corrupt(offset, reason):
                    throw LogKVError.corruption(segment: segment.id, offset: offset, reason: reason)
                }
            }
            sizes[segment.id] = scanner.validEnd
            replayed += 1
            progress?(replayed, toReplay, records)
            if outOfOrder {
                logger.info("rebuild progress", metadata: [
                    "segment": "\(segment.id)", "of": "\(segments.last!.id)", "records": "\(records)"])
            }
        }
        let end = LogPosition(segment: segments.last!.id, offset: segments.last!.size)
        try commit(upTo: end)
        if outOfOrder { try index.finishOutOfOrderReplay() }
        if records > 0 {
            logger.info("replayed log tail into index", metadata: ["records": "\(records)"])
        }
        return (records, maxSeq, truncated)
    }
}
