import Foundation
import Logging

/// Opening a data directory: lock, segments, index, and bringing the index up
/// to the end of the log.
///
/// 1. Take the lock; settle an interrupted compaction (`COMPACTION`); open
///    every segment and check they belong to one store. A segment whose
///    header never became durable (crash while creating it) holds nothing
///    and is removed.
/// 2. Open the index (running migrations). Rebuild it from all segments
///    (highest seq per key wins) if it is missing, unreadable, from another
///    directory, its checkpoint is not a position in a log segment, or it
///    counts live keys in a segment that does not exist.
/// 3. Otherwise replay the log after the checkpoint: the log segments from
///    the checkpoint's on, in id order, applying every record (a record the
///    index already holds changes nothing: newest seq wins). Compaction
///    outputs are never replayed: their records are copies of records the
///    index had already seen (rule 4).
/// 4. The unsynced tail (rule 9): the active log segment's log ends at its
///    first hole after its last proven sync point (see `RecordFormat` and
///    `SegmentScanner.unsyncedTail`); the intact records after that hole
///    are cut with it, counted and logged, so what survives is a prefix.
/// 5. Damage (rule 7): a bad record in the active log segment with nothing
///    intact after it is a torn tail, cut and logged. Intact records after a
///    bad one before the sync point are never dropped: in sealed segments
///    they stay where they are and are indexed; in the active segment they
///    are copied into a new log segment (durably) before the damaged tail is
///    cut. Both are logged as errors and counted in `damagedSpans`.
/// 6. The recovered active segment ends with a commit record, synced: what
///    recovery kept is durable, and later damage in it reads as damage.
///
/// Seq never goes backwards (rule 5): the result's `maxSeq` is the highest of
/// the checkpoint's, every replayed record's and every segment header's
/// high-water mark.
enum Recovery {
    /// What an open hands the store: the directory and its lock, the index,
    /// and the starting state of each owner — the log (`Log`), the KeyDir's
    /// and the flusher's replayed tail — with a report of what it found.
    struct Result {
        var dir: DataDirectory
        var lock: AnyObject
        var storeID: [UInt8]
        var index: IndexWriter
        var log: LogStart
        var tail: RecoveredTail
        var report: RecoveryReport
    }

    /// Where the log starts: every segment (ascending id, `active` among
    /// them) and the highest seq ever issued (rule 5).
    struct LogStart {
        var segments: [SegmentFile]
        var active: SegmentFile
        var maxSeq: UInt64
    }

    /// The replayed tail not yet in the index (newest per key, all durable),
    /// for the KeyDir's `pending`; the index checkpoint still sits before
    /// it, so a crash before the flusher takes it replays it again.
    struct RecoveredTail {
        var changes: [KeyBytes: KeyDirChange] = [:]
        /// The segment sizes the flusher records with it.
        var sizes: [UInt64: Int64] = [:]
        /// Where the tail starts (the checkpoint): no later checkpoint may
        /// pass it while a tail change is not in the index.
        var start: LogPosition?
    }

    /// What the open found and did, for logs and metrics.
    struct RecoveryReport {
        var replayedRecords: Int
        var truncatedBytes: Int
        /// Intact records cut with the unsynced tail, after a hole.
        var droppedTailRecords: Int
        /// Stretches of unreadable bytes with intact records after them.
        var damagedSpans: Int
        var rebuilt: Bool
    }

    /// Records applied per index transaction while replaying.
    static let replayBatch = 20_000
    /// How far seq jumps after an open that did not follow a clean close:
    /// more writes than any run can acknowledge between two fsyncs.
    static let seqGapAfterCrash: UInt64 = 1 << 32

    static func open(path: String, options: LogKVOptions) throws -> Result {
        let logger = options.logger
        let (dir, lock) = try openDirectory(path, options: options)
        try settleCompaction(dir, logger: logger)
        var segments = try openSegments(dir, logger: logger)
        let freshStore = segments.isEmpty
        let storeID = try establishStoreID(dir, &segments)
        let headerHighWater = segments.map { $0.header!.highWater }.max() ?? 0
        let (index, start, reason) = try openIndex(dir, segments: segments, storeID: storeID)
        let rebuildReason = reason ?? (options.forceIndexRebuild ? "requested" : nil)

        var replay = Replay(dir: dir, index: index, logger: logger, progress: options.recoveryProgress)
        replay.maxSeq = max(headerHighWater, start?.seq ?? 0)
        // Rule 5 after a crash: writes acknowledged but lost with the
        // unsynced tail had seqs that clients saw (as ETags). Skip far past
        // them, durably, so no seq is ever issued twice.
        let clean = rebuildReason == nil && ((try? index.wasClosedCleanly()) ?? false)
        if !clean && !freshStore { replay.seqLease = Recovery.seqGapAfterCrash }
        if let rebuildReason {
            logger.warning("rebuilding index from segments", metadata: [
                "reason": "\(rebuildReason)", "segments": "\(segments.count)"])
            replay.index = try freshIndex(dir, storeID: storeID)
            replay.bulk = try IndexBulkLoad(index: replay.index, scratchPath: dir.indexPath + ".rebuild")
            do {
                try replay.run(&segments, from: nil)
            } catch {
                replay.bulk?.abandon()
                throw error
            }
        } else {
            // Every record from the checkpoint on is applied, whatever its
            // seq: the checkpoint may sit before records already indexed
            // (see `LogKV.unindexedSince`), and the index keeps the newest
            // version of each key (older records never overwrite a row).
            // The tail goes to memory, not SQLite: the store answers as soon
            // as it is read, whatever the key count, and the flusher indexes
            // it in the background (up to two backlogs; beyond that,
            // replay commits as it goes).
            replay.tailInMemoryLimit = 2 * options.maxPendingEntries
            try replay.run(&segments, from: start!.position)
        }
        try replay.index.setClosedCleanly(false)
        let maxSeq = replay.maxSeq
        let active = segments.last { $0.kind == .log }!
        return Result(
            dir: dir, lock: lock, storeID: storeID, index: replay.index,
            log: LogStart(segments: segments, active: active, maxSeq: maxSeq),
            tail: RecoveredTail(changes: replay.unindexedTail, sizes: replay.unindexedSizes,
                                start: rebuildReason == nil ? start?.position : nil),
            report: RecoveryReport(replayedRecords: replay.records, truncatedBytes: replay.truncatedBytes,
                                   droppedTailRecords: replay.droppedTailRecords, damagedSpans: replay.damagedSpans,
                                   rebuilt: rebuildReason != nil))
    }

    /// Step 1's start: the directory, created if need be, and its lock.
    /// Refuses a directory with other things in it: opening creates and
    /// rewrites files (LOCK, index.sqlite).
    private static func openDirectory(_ path: String, options: LogKVOptions) throws -> (DataDirectory, AnyObject) {
        let fs = options.fileSystem
        let dir = DataDirectory(path: path, fs: fs)
        if fs.exists(path) && !fs.exists(dir.segmentsPath), let entries = try? fs.list(path), !entries.isEmpty {
            throw LogKVError.invalidArgument("\(path) is not empty and is not a logkv data directory (no segments/): refusing to create a store in it")
        }
        try dir.create()
        if let mode = dir.permissionsLooserThanOwnerOnly {
            // As etcd: said, not changed (the operator may mean it).
            options.logger.warning("data directory is open to other users: every value is readable through it; run chmod 700 on it",
                                   metadata: ["path": "\(path)", "mode": "\(String(mode, radix: 8))"])
        }
        return (dir, try dir.lock(clock: options.clock))
    }

    /// The store's id: that of its segments, which must all agree; a new
    /// one, with the first log segment, for a fresh store.
    private static func establishStoreID(_ dir: DataDirectory, _ segments: inout [SegmentFile]) throws -> [UInt8] {
        guard segments.isEmpty else { return try checkStoreIDs(segments) }
        var id = [UInt8](repeating: 0, count: 16)
        var rng = SystemRandomNumberGenerator()
        for i in id.indices { id[i] = rng.next() }
        let header = SegmentHeader(kind: .log, storeID: id, highWater: 0, minSeq: 1)
        segments.append(try SegmentFile.create(fs: dir.fs, id: 1, path: dir.segmentPath(1), header: header))
        try dir.syncDirectory(dir.segmentsPath)
        return id
    }

    /// Step 2: the index, with where replay starts (its checkpoint), or why
    /// it must be rebuilt from the segments.
    private static func openIndex(_ dir: DataDirectory, segments: [SegmentFile], storeID: [UInt8]) throws
        -> (index: IndexWriter, start: (position: LogPosition, seq: UInt64)?, rebuildReason: String?) {
        let present = Set(segments.map(\.id))
        let index: IndexWriter
        do {
            index = try IndexWriter(path: dir.indexPath, fs: dir.fs)
        } catch {
            return (try freshIndex(dir, storeID: storeID), nil, "index cannot be opened (\(error))")
        }
        do {
            let checkpoint = try index.checkpoint()
            let indexStore = try index.storeID()
            if let checkpoint, indexStore == storeID {
                let segment = segments.first { $0.id == checkpoint.position.segment }
                guard let segment, segment.kind == .log,
                      checkpoint.position.offset >= segment.dataStart, checkpoint.position.offset <= segment.size else {
                    return (index, nil, "index checkpoint (segment \(checkpoint.position.segment), offset \(checkpoint.position.offset)) is not a position in the log")
                }
                if let missing = try index.segmentsWithLiveKeys().first(where: { !present.contains($0) }) {
                    return (index, nil, "index points into segment \(missing), which does not exist")
                }
                return (index, (checkpoint.position, checkpoint.maxSeq), nil)
            }
            if indexStore != nil && indexStore != storeID { return (index, nil, "index belongs to another data directory") }
            if checkpoint == nil && segments.allSatisfy(\.isEmpty) {
                let first = segments.first { $0.kind == .log }!
                try index.setStoreID(storeID)
                return (index, (LogPosition(segment: first.id, offset: first.dataStart), 0), nil)
            }
            return (index, nil, "index is missing or empty")
        } catch {
            return (try freshIndex(dir, storeID: storeID), nil, "index cannot be opened (\(error))")
        }
    }

    /// Finishes or undoes a compaction a crash interrupted. Its durable index
    /// commit is the decision point: if the index knows the new segments (or,
    /// without a usable index, if an old segment is already gone), the
    /// compaction happened and the old files go; otherwise the new ones do.
    static func settleCompaction(_ dir: DataDirectory, logger: Logger) throws {
        guard let bytes = try dir.readSmallFile(dir.compactionManifestPath) else { return }
        let manifest = CompactionManifest(decoding: bytes)
        let (old, new, compactionID) = (manifest.inputs, manifest.outputs, manifest.compactionID)
        var committed = false
        if dir.exists(dir.indexPath), let db = try? SQLiteConnection(path: dir.indexPath, readOnly: true) {
            if let compactionID {
                // The commit records the compaction's id in the same transaction.
                let marker = (try? db.scalarInt("SELECT value FROM meta WHERE name = 'compaction_committed'")) ?? nil
                committed = marker.map { UInt64(bitPattern: $0) } == compactionID
            } else if !new.isEmpty,
                      let known = try? db.scalarInt("SELECT count(*) FROM segments WHERE id IN (\(new.map(String.init).joined(separator: ",")))") {
                committed = known > 0  // a manifest from before compactions had ids
            }
        }
        if !committed && old.contains(where: { !dir.exists(dir.segmentPath($0)) }) { committed = true }
        let doomed = committed ? old : new
        for id in doomed { try dir.remove(dir.segmentPath(id)) }
        try dir.syncDirectory(dir.segmentsPath)
        try dir.remove(dir.compactionManifestPath)
        try dir.syncDirectory(dir.path)
        logger.warning("settled an interrupted compaction", metadata: [
            "committed": "\(committed)", "removed_segments": "\(doomed)"])
    }

    /// Opens every segment with its header; the log segments writable. A
    /// segment whose header never became durable holds no record (a crash
    /// while creating it) and is removed.
    private static func openSegments(_ dir: DataDirectory, logger: Logger) throws -> [SegmentFile] {
        var files: [SegmentFile] = []
        var removed = false
        for id in try dir.segmentIDs() {
            let file = try SegmentFile.open(fs: dir.fs, id: id, path: dir.segmentPath(id), writable: true)
            do {
                try file.loadHeader()
            } catch {
                // A header is made durable before any record is appended, so a
                // file no longer than a header, or all zeros, holds nothing a
                // write was acknowledged for: a crash interrupted its creation.
                let headerOnly = file.size <= Int64(RecordFormat.segmentHeaderSize)
                guard try headerOnly || holdsOnlyZeros(file) else { throw error }
                logger.warning("removing a segment whose header never reached the disk", metadata: ["segment": "\(id)"])
                try dir.remove(file.path)
                removed = true
                continue
            }
            files.append(file)
        }
        if removed { try dir.syncDirectory(dir.segmentsPath) }
        if !files.isEmpty && !files.contains(where: { $0.kind == .log }) {
            throw LogKVError.corruption(segment: files[0].id, offset: 0, reason: "no log segment (only compaction outputs)")
        }
        return files
    }

    private static func holdsOnlyZeros(_ file: SegmentFile) throws -> Bool {
        guard file.size <= 1 << 20 else { return false }
        return try file.read(at: 0, count: Int(file.size)).allSatisfy { $0 == 0 }
    }

    private static func checkStoreIDs(_ segments: [SegmentFile]) throws -> [UInt8] {
        let storeID = segments[0].header!.storeID
        if let other = segments.first(where: { $0.header!.storeID != storeID }) {
            throw LogKVError.corruption(segment: other.id, offset: 0, reason: "segment belongs to another data directory")
        }
        return storeID
    }

    static func freshIndex(_ dir: DataDirectory, storeID: [UInt8]) throws -> IndexWriter {
        for file in [dir.indexPath] + dir.indexSidecars { try dir.remove(file) }
        let index = try IndexWriter(path: dir.indexPath, fs: dir.fs)
        try index.setStoreID(storeID)
        return index
    }
}

/// Applies segments' records to the index, reporting what it cannot read.
private struct Replay {
    let dir: DataDirectory
    var index: IndexWriter
    let logger: Logger
    let progress: (@Sendable (Int, Int, Int) -> Void)?
    /// Rebuild: every segment, any order, into a bulk load of an empty index.
    var bulk: IndexBulkLoad?
    var outOfOrder: Bool { bulk != nil }
    var maxSeq: UInt64 = 0
    /// Added to `maxSeq` in the final, durable commit (see `seqGapAfterCrash`).
    var seqLease: UInt64 = 0
    /// When set, the last changes (at most this many keys) stay in memory
    /// (`unindexedTail`) instead of going to SQLite, and the checkpoint is
    /// left where it was.
    var tailInMemoryLimit: Int?
    /// The checkpoint replay started from (nil for a rebuild).
    private var startCheckpoint: LogPosition?
    private(set) var unindexedTail: [KeyBytes: KeyDirChange] = [:]
    private(set) var unindexedSizes: [UInt64: Int64] = [:]
    var records = 0
    var truncatedBytes = 0
    var droppedTailRecords = 0
    var damagedSpans = 0
    private var batch: [KeyBytes: KeyDirChange] = [:]
    private var sizes: [UInt64: Int64] = [:]

    init(dir: DataDirectory, index: IndexWriter, logger: Logger, progress: (@Sendable (Int, Int, Int) -> Void)?) {
        self.dir = dir
        self.index = index
        self.logger = logger
        self.progress = progress
    }

    /// Replays `segments` (all of them when `from` is nil, else the log
    /// segments from `from` on).
    mutating func run(_ segments: inout [SegmentFile], from: LogPosition?) throws {
        let activeID = segments.last { $0.kind == .log }!.id
        let activeSegment = segments.first { $0.id == activeID }!
        try cutUnsyncedTail(activeSegment, from: activeID == from?.segment ? from!.offset : activeSegment.dataStart)
        // A process crash leaves the active segment's tail in the page cache
        // only: make it durable before any index row or served read points
        // at it (sealed segments were synced when sealed).
        try activeSegment.sync()
        startCheckpoint = from
        let todo = segments.filter { segment in
            guard let from else { return true }
            return segment.kind == .log && segment.id >= from.segment
        }
        for (n, segment) in todo.enumerated() {
            let start = segment.id == from?.segment ? from!.offset : segment.dataStart
            if let moved = try replaySegment(segment, from: start, isActive: segment.id == activeID) {
                segments.append(moved)
            }
            progress?(n + 1, todo.count, records)
            if outOfOrder {
                logger.info("rebuild progress", metadata: [
                    "segment": "\(segment.id)", "done": "\(n + 1)", "of": "\(todo.count)", "records": "\(records)"])
            }
        }
        segments.sort { $0.id < $1.id }
        let active = segments.last { $0.kind == .log }!
        try sealRecoveredTail(active)
        maxSeq += seqLease
        if tailInMemoryLimit != nil {
            // The tail is served from memory from now on (synced above). The
            // seq high-water mark is durable before anything new is written
            // (written with the unchanged checkpoint, which stays before the
            // tail until the flusher indexes it).
            unindexedTail = batch
            unindexedSizes = sizes
            unindexedSizes[active.id] = active.size
            batch.removeAll()
            sizes.removeAll()
            try commit(upTo: startCheckpoint, durable: true)
            if records > 0 { logger.info("replayed log tail into memory", metadata: ["records": "\(records)", "keys": "\(unindexedTail.count)"]) }
            return
        }
        if let bulk {
            let phases = try bulk.finish()
            logger.info("rebuilt keydir from the scanned records", metadata: [
                "keys_and_order_seconds": "\(phases.build)", "accounting_seconds": "\(phases.accounting)"])
        }
        // Durable: the checkpoint covers the whole log and carries the seq
        // high-water mark before anything new is written.
        try commit(upTo: LogPosition(segment: active.id, offset: active.size), durable: true)

        if records > 0 { logger.info("replayed log into index", metadata: ["records": "\(records)"]) }
    }

    /// Cuts the active segment's unsynced tail at its first hole when
    /// intact records follow it (a hole with nothing after it is the plain
    /// torn tail `replaySegment` cuts).
    private mutating func cutUnsyncedTail(_ segment: SegmentFile, from start: Int64) throws {
        guard let tail = try SegmentScanner.unsyncedTail(of: segment, from: start),
              let hole = tail.hole, tail.recordsAfterHole > 0 else { return }
        let cut = Int(segment.size - hole)
        logger.warning("dropping the unsynced tail of the active segment from a hole on: the intact records after it were written after a write the power loss took", metadata: [
            "segment": "\(segment.id)", "offset": "\(hole)", "bytes_cut": "\(cut)", "records_dropped": "\(tail.recordsAfterHole)"])
        truncatedBytes += cut
        droppedTailRecords += tail.recordsAfterHole
        try segment.truncate(to: hole)
    }

    /// Ends the recovered active segment with a commit record, durably:
    /// everything before it is now known durable, so damage found there
    /// later is reported as damage, not cut as an unsynced tail.
    private func sealRecoveredTail(_ active: SegmentFile) throws {
        guard (active.header?.version ?? 0) >= RecordFormat.commitRecordsSince, !active.isEmpty,
              try !SegmentScanner.endsWithCommitRecord(active) else { return }
        // The second proves the first's fsync completed.
        for _ in 0..<2 {
            try active.append(RecordCodec.commitRecord(at: active.size, lastSeq: maxSeq, writtenAt: LogKVOptions.systemMillis()))
            try active.sync()
        }
    }

    /// Replays one segment. For the active segment with intact records after
    /// damage, returns the new log segment they were copied into.
    private mutating func replaySegment(_ segment: SegmentFile, from start: Int64, isActive: Bool) throws -> SegmentFile? {
        var scanner = SegmentScanner(file: segment, from: start)
        var firstBad: Int64?
        var salvaged: [SegmentScanner.Entry] = []
        while true {
            do {
                guard let entry = try scanner.next() else { break }
                if firstBad != nil && isActive {
                    salvaged.append(entry)
                    continue
                }
                try apply(entry, segment: segment.id)
                if batch.count >= (tailInMemoryLimit ?? Recovery.replayBatch) {
                    sizes[segment.id] = scanner.validEnd
                    // Keeping the tail in memory, the checkpoint stays where
                    // it was (rewritten, it carries `maxSeq` so far).
                    let position = tailInMemoryLimit != nil ? startCheckpoint
                        : outOfOrder || firstBad != nil ? nil : LogPosition(segment: segment.id, offset: scanner.validEnd)
                    try commit(upTo: position)
                }
            } catch let stop as SegmentScanner.Stop {
                if let resumed = try scanner.skipDamage() {
                    damagedSpans += 1
                    logger.error("damaged records in a segment; the intact records after them are kept", metadata: [
                        "segment": "\(segment.id)", "offset": "\(stop.offset)", "unreadable_bytes": "\(resumed - stop.offset)",
                        "reason": "\(stop.reason)"])
                    if firstBad == nil { firstBad = stop.offset }
                    continue
                }
                if !isActive {
                    damagedSpans += 1
                    logger.error("a sealed segment ends in unreadable bytes; records there are lost", metadata: [
                        "segment": "\(segment.id)", "offset": "\(stop.offset)", "bytes": "\(segment.size - stop.offset)",
                        "reason": "\(stop.reason)"])
                } else if firstBad == nil {
                    let cut = Int(segment.size - stop.offset)
                    logger.warning("truncating torn tail of the active segment", metadata: [
                        "segment": "\(segment.id)", "offset": "\(stop.offset)", "bytes_cut": "\(cut)", "reason": "\(stop.reason)"])
                    truncatedBytes += cut
                    try segment.truncate(to: stop.offset)
                }
                break
            }
        }
        sizes[segment.id] = isActive && firstBad == nil ? segment.size : scanner.validEnd
        guard isActive, let firstBad else { return nil }
        return try moveSalvaged(salvaged, from: segment, cutAt: firstBad)
    }

    /// Copies the intact records found after damage in the active segment
    /// into a new log segment, durably, then cuts the damaged tail: the copy
    /// exists before the original goes (rule 3).
    private mutating func moveSalvaged(_ entries: [SegmentScanner.Entry], from segment: SegmentFile,
                                       cutAt: Int64) throws -> SegmentFile {
        let id = (try dir.segmentIDs().max() ?? segment.id) + 1
        let firstSeq = entries.first?.header.seq ?? maxSeq + 1
        let header = SegmentHeader(kind: .log, storeID: segment.header!.storeID, highWater: firstSeq - 1, minSeq: firstSeq)
        let next = try SegmentFile.create(fs: dir.fs, id: id, path: dir.segmentPath(id), header: header)
        for entry in entries {
            let offset = next.size
            try next.append(try segment.read(at: entry.offset, count: entry.header.recordLength))
            try apply(SegmentScanner.Entry(offset: offset, header: entry.header, key: entry.key, value: entry.value),
                      segment: id)
        }
        try next.sync()
        try dir.syncDirectory(dir.segmentsPath)
        try segment.truncate(to: cutAt)
        sizes[segment.id] = cutAt
        sizes[id] = next.size
        logger.error("moved intact records found after damage in the active segment into a new segment", metadata: [
            "segment": "\(segment.id)", "cut_at": "\(cutAt)", "records": "\(entries.count)", "new_segment": "\(id)"])
        return next
    }

    private mutating func apply(_ entry: SegmentScanner.Entry, segment: UInt64) throws {
        let h = entry.header
        maxSeq = max(maxSeq, h.seq)
        records += 1
        if let bulk {
            try bulk.add(entry, segment: segment)
        } else if !h.isTTLRefresh {
            batch.keepNewest(entry.key, KeyDirChange(h, segment: segment, offset: entry.offset))
        } else if let renewedSeq = RecordCodec.renewedSeq(entry.value),  // the scanner checked its length
                  let change = try refreshChange(entry.key, refresh: h, renewing: renewedSeq, at: RefreshRecord(entry, segment: segment)) {
            batch.keepNewest(entry.key, change)
        }
    }

    /// The change a TTL refresh met in log order makes, judged against the
    /// key's newest known state (this batch, else the index, which may be
    /// ahead of the checkpoint): nil when something newer is known; a
    /// renewal when it names the key's current value; otherwise the value it
    /// names is gone and, as a rebuild decides, the refresh hides the key.
    private func refreshChange(_ key: [UInt8], refresh h: RecordHeader, renewing renewedSeq: UInt64,
                               at record: RefreshRecord) throws -> KeyDirChange? {
        let newest: (valueSeq: UInt64?, latestSeq: UInt64)?
        if let change = batch[KeyBytes(key)] {
            switch change {
            case let .put(location): newest = (location.seq, location.latestSeq)
            case let .renew(renewal): newest = (renewal.valueSeq, renewal.record.seq)
            case let .delete(seq), let .expire(seq): newest = (nil, seq)
            }
        } else if let row = try index.location(of: key) {
            newest = (row.seq, row.latestSeq)
        } else {
            newest = nil
        }
        if let newest, newest.latestSeq >= h.seq { return nil }
        guard newest?.valueSeq == renewedSeq else { return .expire(seq: h.seq) }
        return .renew(Renewal(valueSeq: renewedSeq, expiresAt: h.expiresAt, record: record))
    }

    /// Commits the batch; `upTo` advances the checkpoint (nil leaves it for
    /// the final commit).
    private mutating func commit(upTo position: LogPosition?, durable: Bool = false) throws {
        try index.apply(batch.sortedForIndex(), checkpoint: position, maxSeq: maxSeq, segmentSizes: sizes,
                        durable: durable)
        batch.removeAll(keepingCapacity: true)
        sizes.removeAll()
    }
}
