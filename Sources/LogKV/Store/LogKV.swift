import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Metrics
import Synchronization

/// A Bitcask-style key-value store: values in append-only segment files, the
/// KeyDir mirrored into SQLite.
///
/// Contracts:
/// - Thread-safe. Any number of threads may call any method at once. Writes
///   append one at a time (concurrent writers share fsyncs); reads run in
///   parallel with positioned reads.
/// - A write returns once it is acknowledged under `LogKVOptions.fsync`; from
///   then on every read sees it (or a newer write), and after a crash it is
///   recovered (for `.always` even after a power loss).
/// - Methods block on disk I/O; call them off event loops.
/// - `close()` flushes the index so that its checkpoint covers the whole log,
///   and releases the directory lock. Further calls throw `.closed`. Always
///   call it: the background threads (flusher, syncer, committer,
///   maintenance) keep the store alive until then.
///
/// Locks, in the order they may be taken (never the other way):
///
///     compactionLock → the index writer's lock → log.lock → syncState → state → leaves
///
/// - `compactionLock`: one compaction at a time; held for a whole run.
/// - The index writer's lock (`IndexFlusher.withWriter`): the one SQLite
///   writer (flusher, compaction's commit, close); taken with no other
///   engine lock held but `compactionLock`.
/// - `log.lock`, the writer lock: the log's writer state (`Log`); held
///   across one append, and — flagged in `log.diskWork` — across fsyncs,
///   file creation and index reads by rotation, the flusher's catch-up, close, the cut after
///   a failure and conditional writes. An event loop (`putWithoutWaiting`)
///   waits for it only while no such work is flagged.
/// - `syncState`: the durability watermarks and group commit; never held
///   across an fsync.
/// - `state`: the KeyDir and everything readers share; never held across
///   I/O.
/// - Leaves (nothing is taken while one is held): the log's failure latch, the change
///   outbox's lock, each segment's handle lock, the reserve's lock.
///
/// The change observer is called with none of them held (`ChangeOutbox`).
public final class LogKV: @unchecked Sendable {
    public let options: LogKVOptions
    public let path: String
    /// Stretches of damaged records the open found (and kept the intact
    /// records around); see `logkv_recovery_damaged_records_total`.
    public private(set) var damagedSpansAtOpen = 0
    let dir: DataDirectory
    let metrics: EngineMetrics
    var logger: Logger { options.logger }
    let storeID: [UInt8]
    let readers: IndexReaderPool
    /// The one SQLite writer and the flusher thread (`IndexFlusher`).
    let indexFlusher: IndexFlusher
    /// Bounds the open segment descriptors.
    let segmentHandles: SegmentHandleCache
    /// Room kept for deletes and compaction on a full disk.
    let reserve: DiskReserve
    /// The last append found the disk full (and none succeeded since):
    /// writes are refused until space is freed (`writeRefusal`).
    let diskFullHint = Atomic<Bool>(false)
    private var directoryLock: AnyObject?
    /// Changes on their way to the observer, in the order they became
    /// visible (`KeyChange`); delivered with no engine lock held.
    let changes = ChangeOutbox()

    /// The log's writer state and the writer lock (`Log`).
    let log: Log
    /// One compaction at a time.
    let compactionLock = NSLock()

    /// Set once a write failed in a way that leaves durability unknown
    /// (fsync error); from then on writes are refused (`Log.failure`).
    var writeFailure: LogKVError? { log.failure }

    // MARK: Shared state, guarded by `state` (never held across I/O).
    let state = NSCondition()
    /// The highest seq, and the log position just past it, that an fsync
    /// covers (under `.never`: that the kernel has). The flusher moves only
    /// changes up to here into SQLite, so the index never points at bytes a
    /// power loss may take.
    var durableSeq: UInt64
    var durableEnd: LogPosition
    /// The in-memory KeyDir: staged and unflushed changes, refreshes in
    /// flight, and the row cache.
    var keyDir: KeyDir
    /// Just past the last record whose change is in `pending` or earlier.
    var logEnd: LogPosition
    var lastSeq: UInt64
    /// The index's checkpoint and the flusher's bookkeeping (`IndexProgress`).
    var indexProgress: IndexProgress
    /// `writeWouldWait`: the index backlog was last seen full.
    let backlogFullHint = Atomic<Bool>(false)
    /// Every segment file, readable by id; retired and damaged ones
    /// (`SegmentSet`).
    var segments: SegmentSet
    /// Set when `close()` starts: a running compaction abandons its work.
    var closeRequested = false
    /// Runs `maintenanceLoop`; its flags are guarded by `state`.
    let maintenance: BackgroundThread

    // MARK: Durability, guarded by `syncState`.
    let syncState = NSCondition()
    /// Appended and synced watermarks, the fsync in flight (`SyncLedger`).
    var ledger: SyncLedger
    /// Runs `syncerLoop` (`.interval`); its flags are guarded by `syncState`.
    let syncer: BackgroundThread
    /// Writers acknowledged by callback once an fsync covers them (`.always`,
    /// see `GroupCommit.swift`), and the committer thread that runs it.
    var durableWaiters: [DurableWaiter] = []
    /// Runs `committerLoop` (`.always`); its flags are guarded by `syncState`.
    let committer: BackgroundThread

    /// Opens (creating if needed) the store in `path`, recovering from a crash
    /// if the last run did not close cleanly.
    ///
    /// - Throws: `.locked` if another process or store holds the directory;
    ///   `.corruption` for damage recovery must not paper over; `.io`, `.index`.
    public convenience init(path: String, options: LogKVOptions = LogKVOptions()) throws {
        let started = DispatchTime.now()
        let recovered = try Recovery.open(path: path, options: options)
        try self.init(recovered: recovered, options: options)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        metrics.recoveryDuration.record(seconds)
        let report = recovered.report
        metrics.recoveryReplayed.record(report.replayedRecords)
        metrics.recoveryTruncatedBytes.record(report.truncatedBytes)
        metrics.recoveryDamaged.increment(by: report.damagedSpans)
        damagedSpansAtOpen = report.damagedSpans
        if report.rebuilt { metrics.indexRebuilds.increment() }
        logger.info("opened store", metadata: [
            "path": "\(path)", "segments": "\(recovered.log.segments.count)",
            "replayed_records": "\(report.replayedRecords)", "rebuilt_index": "\(report.rebuilt)",
            "damaged_spans": "\(report.damagedSpans)",
            "seconds": "\(seconds)",
        ])
    }

    private init(recovered: Recovery.Result, options: LogKVOptions) throws {
        guard options.maxKeySize > 0, options.maxValueSize >= 0, options.segmentSize > 0, options.diskReserveBytes >= 0 else {
            throw LogKVError.invalidArgument("key, value and segment size limits must be positive, the disk reserve 0 or more")
        }
        self.options = options
        self.maintenance = BackgroundThread(name: "logkv-maintenance", condition: state)
        self.syncer = BackgroundThread(name: "logkv-syncer", condition: syncState)
        self.committer = BackgroundThread(name: "logkv-committer", condition: syncState)
        self.path = recovered.dir.path
        self.dir = recovered.dir
        self.metrics = EngineMetrics(factory: options.metricsFactory)
        self.storeID = recovered.storeID
        self.directoryLock = recovered.lock
        self.indexFlusher = IndexFlusher(writer: recovered.index, condition: state)
        self.readers = IndexReaderPool(path: recovered.dir.indexPath, maxIdle: options.readConnections)
        let start = recovered.log
        self.segments = SegmentSet(start.segments)
        self.log = Log(start)
        self.segmentHandles = SegmentHandleCache(limit: options.maxOpenSegments)
        self.reserve = DiskReserve(dir: recovered.dir, size: options.diskReserveBytes)
        reserve.ensure()
        for segment in start.segments {
            // Recovery left every segment but the active one complete and synced.
            if segment !== start.active { segment.markSealed() }
            segment.attach(to: segmentHandles)
        }
        self.lastSeq = start.maxSeq
        self.logEnd = log.end
        self.durableSeq = start.maxSeq
        self.durableEnd = logEnd
        self.ledger = SyncLedger(seq: start.maxSeq, end: logEnd, file: start.active)
        self.keyDir = KeyDir(cacheBudgetBytes: options.cacheBudgetBytes, tracksUnindexed: options.fsync == .interval)
        // The replayed tail is durable (recovery synced it): readers see it
        // at once, the flusher indexes it and then moves the checkpoint.
        keyDir.adoptRecoveredTail(recovered.tail)
        self.indexProgress = IndexProgress(recovered.tail, logEnd: logEnd)
        startFlusher()
        startSyncer()
        startCommitter()
        startMaintenance()
    }

    deinit {
        if !log.isClosed { try? close() }
    }

    // MARK: Public API

    /// Stores `value` under `key`.
    ///
    /// - Parameters:
    ///   - expiresAt: unix ms after which the key reads as missing; nil = never.
    ///   - condition: checked atomically with the write.
    /// - Returns: the new version (seq) of the key.
    /// - Throws: `.keyTooLarge`, `.valueTooLarge`, `.invalidKey`,
    ///   `.preconditionFailed`, `.diskFull`, `.readOnly`, `.closed`, `.io`.
    @discardableResult
    public func put(_ key: [UInt8], _ value: [UInt8], expiresAt: Int64? = nil,
                    condition: WriteCondition = .none) throws -> UInt64 {
        try validatePut(key: key, value: value, expiresAt: expiresAt)
        let seq = try append(key: key, value: value, expiresAt: expiresAt ?? 0, kind: .value, condition: condition,
                             acknowledge: .waitHere)!
        metrics.writesPut.increment()
        return seq
    }

    /// Deletes `key`.
    ///
    /// - Returns: false (and writes nothing) if the key did not exist.
    /// - Throws: as `put`.
    @discardableResult
    public func delete(_ key: [UInt8], condition: WriteCondition = .none) throws -> Bool {
        try validate(key: key)
        do {
            _ = try append(key: key, value: [], expiresAt: 0, kind: .tombstone, condition: condition, acknowledge: .waitHere)
        } catch LogKVError.preconditionFailed(nil) where condition == .none {
            return false
        }
        metrics.writesDelete.increment()
        return true
    }

    /// `put` for callers that must not block a thread on the fsync (event
    /// loops): returns once the record is appended; `whenDurable` is called
    /// once, with the new version, when the write is acknowledged under the
    /// fsync policy — under `.always` from the committer thread after an
    /// fsync that covers it (one fsync for every writer waiting), otherwise
    /// before this returns. Errors before the append are thrown, except a
    /// failed condition judged against a write not yet synced, which
    /// reaches `whenDurable` once that write is durable; a failed fsync
    /// reaches `whenDurable`.
    public func put(_ key: [UInt8], _ value: [UInt8], expiresAt: Int64? = nil, condition: WriteCondition = .none,
                    whenDurable: @escaping @Sendable (Result<UInt64, Error>) -> Void) throws {
        try validatePut(key: key, value: value, expiresAt: expiresAt)
        let counter = metrics.writesPut
        try append(key: key, value: value, expiresAt: expiresAt ?? 0, kind: .value, condition: condition,
                   acknowledge: .notify({ result in
                       if case .success = result { counter.increment() }
                       whenDurable(result)
                   }))
    }

    /// The outcome of `putWithoutWaiting`.
    public enum ImmediateWrite: Sendable {
        /// Appended: `whenDurable` acknowledges it (as for `put`).
        case appended
        /// Nothing was written: the append would have had to wait on the
        /// disk (a rotation, another writer's fsync or index read, or the
        /// index backlog).
        /// Call `put` from a thread that may block.
        case wouldBlock
    }

    /// `put(_:_:expiresAt:condition:whenDurable:)` for event loops: appends
    /// only if that needs no disk wait — no thread that may do disk work
    /// under the writer lock holds it or queues for it, no rotation is due
    /// and the index backlog has room — and otherwise writes nothing and
    /// returns `.wouldBlock`. It does wait for another such append.
    ///
    /// - Throws: as `put`, before the append.
    public func putWithoutWaiting(_ key: [UInt8], _ value: [UInt8], expiresAt: Int64? = nil,
                                  whenDurable: @escaping @Sendable (Result<UInt64, Error>) -> Void) throws -> ImmediateWrite {
        try validatePut(key: key, value: value, expiresAt: expiresAt)
        let counter = metrics.writesPut
        do {
            try append(key: key, value: value, expiresAt: expiresAt ?? 0, kind: .value, condition: .none,
                       acknowledge: .notify({ result in
                           if case .success = result { counter.increment() }
                           whenDurable(result)
                       }), mayWait: false)
        } catch is WouldBlock {
            return .wouldBlock
        }
        return .appended
    }

    /// Gives `key`'s current value a new expiry without rewriting the value
    /// (a lease renewal): appends a small TTL refresh record naming the
    /// value's version, which stays the key's version (ETag). Durable as a
    /// put is under the fsync policy.
    ///
    /// - Parameters:
    ///   - expiresAt: unix ms after which the key reads as missing; nil
    ///     removes the expiry.
    ///   - condition: checked atomically against the value's version.
    /// - Returns: the value's version, or nil (and nothing written) if the
    ///   key is missing or expired.
    /// - Throws: `.invalidKey`, `.keyTooLarge`, `.invalidArgument`,
    ///   `.preconditionFailed`, `.diskFull`, `.readOnly`, `.closed`, `.io`.
    @discardableResult
    public func refreshTTL(_ key: [UInt8], expiresAt: Int64?, condition: WriteCondition = .none) throws -> UInt64? {
        try validatePut(key: key, value: [], expiresAt: expiresAt)
        var version: UInt64 = 0
        do {
            try withUnsafeMutablePointer(to: &version) { out in
                _ = try append(key: key, value: [], expiresAt: expiresAt ?? 0, kind: .ttlRefresh, condition: condition,
                               acknowledge: .waitHere, renewedVersion: out)
            }
        } catch LogKVError.preconditionFailed(nil) where condition == .none || condition == .ifPresent {
            return nil
        }
        metrics.ttlRefreshes.increment()
        return version
    }

    /// Reads the latest value of `key`, or nil if it is missing or expired.
    ///
    /// - Throws: `.corruption` if the record fails its checksum (never returns
    ///   garbage), `.io`, `.index`, `.closed`.
    public func get(_ key: [UInt8]) throws -> StoredValue? {
        switch try read(key, wholeUpTo: .max) {
        case .missing: return nil
        case let .whole(value): return value
        case .large: preconditionFailure("every value is at most Int.max bytes")
        }
    }

    /// The outcome of `getWithoutWaiting`.
    public enum ImmediateRead: Sendable {
        /// The read completed: the value, or nil if missing or expired.
        case done(StoredValue?)
        /// Answering needs the disk (an index lookup or a cold segment page);
        /// call `get` from a thread that may block.
        case wouldBlock
    }

    /// Reads `key` only if that needs no disk I/O: its location is in memory
    /// and its record in the page cache. Safe to call on an event loop.
    ///
    /// - Throws: as `get`.
    /// A value larger than `limit` bytes is `.wouldBlock` before any of it
    /// is read (see `read(_:wholeUpTo:)` for those).
    public func getWithoutWaiting(_ key: [UInt8], valueUpTo limit: Int = .max) throws -> ImmediateRead {
        try validate(key: key)
        guard let observed = try locateWithoutWaiting(key) else { return .wouldBlock }
        guard let location = observed.location else {
            metrics.readMiss.increment()
            return .done(nil)
        }
        if location.isExpired(now: options.clock()) {
            expireLazily(key, location, observedEpoch: observed.epoch)
            metrics.readExpired.increment()
            return .done(nil)
        }
        guard Supersession.valueSize(recordLength: location.length, keyCount: key.count) <= limit,
              let segment = state.withLock({ segments[location.segment] }),
              let bytes = segment.readIfCached(at: location.offset, count: location.length) else {
            return .wouldBlock
        }
        let value = try decodeRecord(bytes, key: key, at: location)
        metrics.readHit.increment()
        return .done(value)
    }

    /// Keys in key order that start with `prefix` and sort after `after`,
    /// at most `limit` of them, expired keys left out.
    public func scan(prefix: [UInt8] = [], after: [UInt8] = [], limit: Int = 1000) throws -> [KeyInfo] {
        guard limit > 0 else { return [] }
        let now = options.clock()
        // Unflushed changes in range override what SQLite says; each may hide
        // one SQLite row, so SQLite is asked for that many more.
        let overlay = state.withLock { keyDir.overlay(prefix: prefix, after: after) }
        var rows = try readers.withReader { reader in try reader.inSnapshot { () -> [KeyInfo] in
            var rows = try reader.scan(prefix: prefix, after: after, limit: limit + overlay.count, now: now)
            rows.removeAll { overlay[$0.key] != nil }
            for (key, change) in overlay {
                var location: RecordLocation?
                switch change {
                case let .put(loc): location = loc
                case let .renew(renewal):
                    // The row's own expiry no longer counts: read it by key.
                    location = try reader.lookup(key).map { Supersession.join($0, renewal) }
                case .delete, .expire: break
                }
                if let loc = location, !loc.isExpired(now: now) {
                    rows.append(KeyInfo(key: key, seq: loc.seq, expiresAt: loc.expiresAt == 0 ? nil : loc.expiresAt,
                                        valueSize: Supersession.valueSize(recordLength: loc.length, keyCount: key.count)))
                }
            }
            return rows
        } }
        rows.sort { KeyBytes.compare($0.key, $1.key) < 0 }
        return Array(rows.prefix(limit))
    }

    /// Sizes and counts, read from the index and the in-memory state. `keys`
    /// counts every acknowledged write at once, not only flushed ones.
    public func stats() throws -> LogKVStats {
        let (overlay, seq, segmentCount) = state.withLock { () -> ([KeyBytes: KeyDirChange], UInt64, Int) in
            (keyDir.allUnflushed, lastSeq, segments.count)
        }
        let now = options.clock()
        let (rows, keys, valueBytes, liveDelta) = try readers.withReader { reader in try reader.inSnapshot { () -> ([IndexReader.SegmentRow], Int64, Int64, Int64) in
            var keys = try reader.keyCount()
            var valueBytes = try reader.valueBytes()
            var liveDelta: Int64 = 0
            for (key, change) in overlay {
                if case .renew = change { continue }  // the same value: nothing changes
                if let indexed = try reader.lookup(key.bytes) {
                    keys -= 1
                    valueBytes -= Supersession.valueSize(recordLength: Int64(indexed.length), keyCount: key.bytes.count)
                    liveDelta -= Int64(indexed.length)
                }
                if case let .put(location) = change, !location.isExpired(now: now) {
                    keys += 1
                    valueBytes += Supersession.valueSize(recordLength: Int64(location.length), keyCount: key.bytes.count)
                    liveDelta += Int64(location.length)
                }
            }
            return (try reader.segments(), keys, valueBytes, liveDelta)
        } }
        // Unflushed writes count as live at once, as they do for `keys`.
        let live = max(0, rows.reduce(Int64(0)) { $0 + $1.liveBytes } + liveDelta)
        let total = state.withLock { segments.totalBytes }
        return LogKVStats(keys: max(0, keys), valueBytes: max(0, valueBytes), liveBytes: live, deadBytes: Swift.max(0, total - live), totalBytes: total,
                          segments: segmentCount, pendingIndexEntries: overlay.count, lastSeq: seq)
    }

    /// Waits until every change acknowledged so far is in the SQLite index
    /// (making them durable first: the index only takes durable changes).
    /// Later writes do not hold it up.
    public func flushIndex() throws {
        defer { changes.deliver() }
        try indexAcknowledgedChanges()
    }

    /// `flushIndex` for callers that hold an engine lock (compaction): it
    /// leaves what its fsync published queued for the observer.
    func indexAcknowledgedChanges() throws {
        try sync(writerLockHeld: false)
        try state.withLock {
            // A flush that starts after this point takes every change present
            // now (all durable after the sync above).
            let mark = indexProgress.started
            indexProgress.waiters += 1
            defer { indexProgress.waiters -= 1 }
            state.broadcast()
            while indexProgress.lastCompletedStart <= mark && !keyDir.isEmpty {
                if let error = indexProgress.lastError { throw error }
                if !indexFlusher.thread.isAlive { throw LogKVError.closed }
                state.wait()
            }
        }
        // With nothing left to index (say, no write since a rotation), no
        // flush moves the checkpoint to the log end: move it here.
        try advanceIdleCheckpoint()
    }

    /// Makes every acknowledged write durable now, whatever the fsync policy.
    public func sync() throws {
        defer { changes.deliver() }
        try sync(writerLockHeld: false)
    }

    func sync(writerLockHeld: Bool) throws {
        let target = syncState.withLock { ledger.appended.bytes }
        try waitForSync(upTo: target, writerLockHeld: writerLockHeld)
    }

    /// Flushes the index, syncs the log and releases the directory.
    public func close() throws {
        let alreadyClosed = log.lock.withLock { log.close() }
        if alreadyClosed { return }
        var firstError: Error?
        state.withLock { closeRequested = true }
        stopMaintenance()
        compactionLock.withLock {}  // a running compaction abandons its work and returns
        do {
            try sync()
            try proveLastSync()
        } catch { firstError = firstError ?? error }
        stopSyncer()
        stopCommitter()
        stopFlusher()
        // Rule 8: the checkpoint covers the whole log, durably.
        // After a failed fsync nothing past the last good one may be
        // checkpointed (rule 6): the next open replays and checks the tail.
        let flusherError = state.withLock { indexProgress.lastError }
        if firstError == nil && flusherError == nil && writeFailure == nil {
            do {
                try indexFlusher.withWriter { writer in
                    let end = state.withLock { logEnd }
                    try writer.apply([], checkpoint: end, maxSeq: lastSeq, segmentSizes: [end.segment: end.offset],
                                     durable: true)
                    try writer.setClosedCleanly(true)
                }
            } catch { firstError = error }
        }
        if let flusherError { firstError = firstError ?? flusherError }
        indexFlusher.withWriter { $0.walCheckpoint() }
        readers.drain()
        directoryLock = nil
        if let firstError { throw firstError }
    }

    /// After the last fsync of a run: one more commit record, synced,
    /// proves that fsync completed (see `RecordFormat`), so damage found
    /// later before it reads as damage, not as an unsynced tail.
    private func proveLastSync() throws {
        try log.flaggingDiskWork {
            try log.lock.withLock {
                guard writeFailure == nil, syncState.withLock({ ledger.appended.bytes > 0 }) else { return }
                try appendCommitRecord(evenIfNothingNew: true)
                do { try log.active.sync() } catch { throw failWrites("fsync of segment \(log.active.id) failed: \(error)") }
            }
        }
    }

    /// Why writes are refused now, or nil when they are accepted: a failed
    /// fsync (until restart), a full disk (until an append succeeds: a
    /// delete or a compaction frees space) or an index that cannot be
    /// written (until a flush succeeds). For health checks.
    public var writeRefusal: LogKVError? {
        if let writeFailure { return writeFailure }
        if let flusherError = state.withLock({ indexProgress.lastError }) {
            return .readOnly(reason: "index cannot be written: \(flusherError)")
        }
        if diskFullHint.load(ordering: .relaxed) || reserve.isReleased { return .diskFull }
        return nil
    }

    // MARK: Internals shared by the read and write paths

    /// What both forms of `put` check before appending.
    func validatePut(key: [UInt8], value: [UInt8], expiresAt: Int64?) throws {
        try validate(key: key)
        guard value.count <= options.maxValueSize else {
            throw LogKVError.valueTooLarge(size: value.count, limit: options.maxValueSize)
        }
        if let expiresAt, expiresAt <= 0 {
            throw LogKVError.invalidArgument("expiresAt must be a positive unix time in ms")
        }
    }

    func validate(key: [UInt8]) throws {
        if key.isEmpty { throw LogKVError.invalidKey("key is empty") }
        if key.count > options.maxKeySize {
            throw LogKVError.keyTooLarge(size: key.count, limit: options.maxKeySize)
        }
    }
}

extension LogKV {
    /// Convenience for UTF-8 string keys and values.
    @discardableResult
    public func put(_ key: String, _ value: String, expiresAt: Int64? = nil) throws -> UInt64 {
        try put(Array(key.utf8), Array(value.utf8), expiresAt: expiresAt)
    }

    public func get(_ key: String) throws -> StoredValue? {
        try get(Array(key.utf8))
    }

    @discardableResult
    public func delete(_ key: String) throws -> Bool {
        try delete(Array(key.utf8))
    }
}
