import Foundation
import Synchronization

/// The write path: append under the writer lock, then publish and
/// acknowledge per the fsync policy.
///
/// Ordering rules kept here:
/// - `.always`: a change is published to readers (moved from `unsynced`
///   to `pending`) only after an fsync covers its record, by the thread that
///   ran that fsync, before any writer it covers returns (rule 1).
/// - `.interval`/`.never`: published at once; the syncer makes it durable.
/// - `durableSeq`/`durableEnd` advance only after an fsync (or at append
///   under `.never`); the flusher never indexes past them.
/// - Any fsync, create or directory-sync failure makes the store read-only
///   (`writeFailure`) until restart (rule 6); a failed create skips its id.
///
/// Locks: see the order at `LogKV`'s declaration.
extension LogKV {
    /// A write that may not wait would have had to (see `putWithoutWaiting`).
    struct WouldBlock: Error {}

    /// What a write appends.
    enum AppendedRecord {
        case value, tombstone
        /// A new expiry for the key's current value (see `RecordFormat`).
        case ttlRefresh

        var flags: UInt8 {
            switch self {
            case .value: return 0
            case .tombstone: return RecordFormat.tombstoneFlag
            case .ttlRefresh: return RecordFormat.ttlRefreshFlag
            }
        }
    }

    /// Appends one record. With `.waitHere` it returns the seq once the write
    /// is acknowledged; with `.notify` it returns nil once appended and the
    /// callback acknowledges (see `GroupCommit.swift`).
    ///
    /// A `.ttlRefresh` renews the key's current value (missing or expired:
    /// `.preconditionFailed(nil)`); `renewedVersion` then gets that value's
    /// seq, which the refresh leaves as the key's version.
    ///
    /// `mayWait: false` (an unconditional `.value` only): throws `WouldBlock`,
    /// having written nothing, where the append would wait — for the writer
    /// lock, a rotation or the index backlog.
    @discardableResult
    func append(key: [UInt8], value: [UInt8], expiresAt: Int64, kind: AppendedRecord,
                condition: WriteCondition, acknowledge: Acknowledgement,
                renewedVersion: UnsafeMutablePointer<UInt64>? = nil, mayWait: Bool = true) throws -> UInt64? {
        precondition(mayWait || (kind == .value && condition == .none), "only unconditional puts may refuse to wait")
        // The value's checksum is the costly part of encoding: compute it
        // before taking the writer lock, so concurrent writers overlap it.
        let valueCRC = kind == .ttlRefresh ? nil : value.withUnsafeBytes { CRC32.checksum($0) }
        // Whatever this write (or an fsync or rotation it ran) made visible
        // reaches the observer once no lock is held.
        defer { changes.deliver() }
        try waitForBacklogRoom(mayWait: mayWait)
        if mayWait {
            // A writer that may wait may also rotate, read the index or
            // take the reserve under the lock: flagged from before it queues
            // for the lock, so no event loop queues behind it.
            log.lockForDiskWork()
        } else if !log.tryLockBriefly() {
            metrics.handedOffContended.increment()
            throw WouldBlock()
        }
        // A refresh is marked in flight before its clock is read, until it
        // is published: no expiry of the key is published meanwhile.
        let refreshing = kind == .ttlRefresh ? KeyBytes(key) : nil
        if let refreshing { state.withLock { keyDir.refreshStarted(refreshing) } }
        // Read under the lock: conditions and expiry are judged at the time
        // of the append (compaction relies on it for TTL refreshes).
        let now = options.clock()
        var acknowledgedAt: UInt64 = 0
        // A write that changes nothing (a failed condition, a delete or
        // refresh of a missing key) judged against a change not yet synced
        // answers only once that change is durable: otherwise a power loss
        // could take the change its answer was based on (rule 1).
        var refusedOnUnsynced: (error: LogKVError, syncTarget: UInt64)?
        let seq: UInt64
        do {
            defer {
                if let refreshing { state.withLock { keyDir.refreshEnded(refreshing) } }
                if mayWait { log.unlockAfterDiskWork() } else { log.lock.unlock() }
            }
            if log.isClosed { throw LogKVError.closed }
            if let writeFailure { throw writeFailure }
            // The reserve was given up for a delete or a compaction: until
            // it is back (`Maintenance`), only deletes may take the room.
            if kind != .tombstone && reserve.isReleased { throw LogKVError.diskFull }
            var renewed: RecordLocation?
            if kind != .value || condition != .none {
                let current = try judge(condition, of: kind, key: key, now: now, refusedOnUnsynced: &refusedOnUnsynced)
                if kind == .ttlRefresh { renewed = current }
            }
            seq = log.nextSeq
            let recordValue = renewed.map { RecordCodec.ttlRefreshValue(renewing: $0.seq) } ?? value
            let head = RecordCodec.encodeHead(seq: seq, writtenAt: now, expiresAt: expiresAt, flags: kind.flags,
                                              key: key, value: recordValue, valueCRC: valueCRC)
            let recordLength = head.count + recordValue.count
            let offset = try placeRecord(head, recordValue, seq: seq, deleting: kind == .tombstone, mayRotate: mayWait)
            let change = Self.change(kind, seq: seq, at: RecordLocation(segment: log.active.id, offset: offset, length: recordLength,
                                                                           seq: seq, expiresAt: expiresAt),
                                     renewing: renewed)
            if let renewed { renewedVersion?.pointee = renewed.seq }
            acknowledgedAt = noteAppended(KeyBytes(key), change, recordAt: offset, length: recordLength)
            metrics.writtenBytes.increment(by: recordLength)
        } catch let error as LogKVError {
            guard let (refusal, target) = refusedOnUnsynced else { throw error }
            switch acknowledge {
            case .waitHere:
                try waitForSync(upTo: target)
                throw refusal
            case let .notify(done):
                awaitDurable(upTo: target) { result in done(result.flatMap { .failure(refusal) }) }
                return nil
            }
        }
        return try acknowledgeAppended(seq, upTo: acknowledgedAt, acknowledge)
    }

    /// Acknowledges an appended write as the fsync policy says: under
    /// `.always` once an fsync covers `appendedUpTo` bytes (here, or by the
    /// committer for `.notify`), otherwise at once. Returns `seq` for
    /// `.waitHere`, nil for `.notify`.
    private func acknowledgeAppended(_ seq: UInt64, upTo target: UInt64, _ acknowledge: Acknowledgement) throws -> UInt64? {
        switch acknowledge {
        case .waitHere:
            if options.fsync == .always { try waitForSync(upTo: target) }
            return seq
        case let .notify(done):
            if options.fsync == .always {
                awaitDurable(upTo: target) { result in done(result.map { seq }) }
            } else {
                changes.deliver()
                done(.success(seq))
            }
            return nil
        }
    }

    /// `place`, and what its failure means: a delete may take the reserve
    /// on a full disk; a full disk refuses writes until space is freed (an
    /// append that succeeds clears it); any other failure makes the store
    /// read-only (rule 6). Called under the writer lock.
    private func placeRecord(_ head: [UInt8], _ value: [UInt8], seq: UInt64, deleting: Bool, mayRotate: Bool) throws -> Int64 {
        let offset: Int64
        do {
            do {
                offset = try place(head, value, seq: seq, mayRotate: mayRotate)
            } catch LogKVError.diskFull where deleting && reserve.release() {
                // A delete frees space: it may use the reserve.
                logger.warning("disk full: gave up the reserve for a delete", metadata: ["reserve_bytes": "\(reserve.size)"])
                offset = try place(head, value, seq: seq)
            }
        } catch let error as LogKVError {
            switch error {
            case .readOnly(let reason): if writeFailure == nil { _ = failWritesCuttingUnsynced(reason) }
            case .diskFull:
                // Nothing written; writes work again once space is freed.
                diskFullHint.store(true, ordering: .relaxed)
                metrics.writeRefusals.increment()
            default:
                if writeFailure == nil { throw failWritesCuttingUnsynced("append to segment \(log.active.id) failed: \(error)") }  // EIO: rule 6
            }
            throw error
        }
        if diskFullHint.load(ordering: .relaxed) { diskFullHint.store(false, ordering: .relaxed) }
        return offset
    }

    /// The KeyDir change an appended record makes. A TTL refresh carries no
    /// value location: compaction may move the value before it reaches the
    /// index (`KeyDir` joins it to a value still in memory).
    private static func change(_ kind: AppendedRecord, seq: UInt64, at location: RecordLocation,
                               renewing renewed: RecordLocation?) -> KeyDirChange {
        switch kind {
        case .value: return .put(location)
        case .tombstone: return .delete(seq: seq)
        case .ttlRefresh:
            let record = RefreshRecord(seq: seq, segment: location.segment, offset: location.offset, length: location.length)
            return .renew(Renewal(valueSeq: renewed!.seq, expiresAt: location.expiresAt, record: record))
        }
    }

    /// Makes an appended change visible as the fsync policy says — at once
    /// (`.interval`, `.never`), or staged until an fsync covers it
    /// (`.always`) — and moves the log's end; returns the appended bytes an
    /// fsync must cover to acknowledge it. Called under the writer lock,
    /// just after the append.
    private func noteAppended(_ key: KeyBytes, _ change: KeyDirChange, recordAt offset: Int64, length: Int) -> UInt64 {
        let end = log.end
        let seq = change.seq
        state.withLock {
            if options.fsync == .always {
                keyDir.stage(key, change)
            } else {
                publish(key, change, recordAt: LogPosition(segment: end.segment, offset: offset))
                if options.fsync == .never {
                    durableSeq = seq
                    durableEnd = end
                }
            }
            logEnd = end
            lastSeq = seq
        }
        return syncState.withLock { ledger.noteAppended(length, seq: seq, end: end) }
    }

    /// Judges `condition` — and, for a delete or a TTL refresh, that the key
    /// exists — against the key's live version; returns where that version
    /// is (nil: absent). A refusal judged against a change not yet synced
    /// also sets `refusedOnUnsynced`, with the sync its answer must wait for.
    /// Called under the writer lock by a writer that may wait (only those
    /// judge conditions): its index read is flagged for event loops already.
    private func judge(_ condition: WriteCondition, of kind: AppendedRecord, key: [UInt8], now: Int64,
                       refusedOnUnsynced: inout (error: LogKVError, syncTarget: UInt64)?) throws -> RecordLocation? {
        let (currentLocation, judgedOnUnsynced) = try self.currentLocation(key, now: now)
        do {
            let current = currentLocation?.seq
            switch condition {
            case .none: break
            case .ifAbsent: if current != nil { throw LogKVError.preconditionFailed(currentSeq: current) }
            case .ifPresent: if current == nil { throw LogKVError.preconditionFailed(currentSeq: nil) }
            case let .ifVersion(wanted): if current != wanted { throw LogKVError.preconditionFailed(currentSeq: current) }
            case let .ifAnyVersion(wanted):
                guard let current, wanted.contains(current) else { throw LogKVError.preconditionFailed(currentSeq: current) }
            }
            if kind != .value && current == nil { throw LogKVError.preconditionFailed(currentSeq: nil) }
        } catch let error as LogKVError where judgedOnUnsynced {
            refusedOnUnsynced = (error, syncState.withLock { ledger.appended.bytes })
            throw error
        }
        return currentLocation
    }

    /// Rotates when due, then appends one record; returns its offset.
    /// Called under the writer lock. Without `mayRotate`, a rotation due
    /// throws `WouldBlock` instead (it fsyncs and creates a file).
    private func place(_ head: [UInt8], _ value: [UInt8], seq: UInt64, mayRotate: Bool = true) throws -> Int64 {
        if log.rotationDue(appending: Int64(head.count + value.count), segmentSize: options.segmentSize) {
            guard mayRotate else {
                metrics.handedOffRotation.increment()
                throw WouldBlock()
            }
            try rotate()
        }
        return try log.append(head, value, seq: seq)
    }

    /// Where the key's live version is, or nil, and whether that answer
    /// rests on a change not yet synced (`.always`). Called under the
    /// writer lock, so no other write can change it meanwhile.
    private func currentLocation(_ key: [UInt8], now: Int64) throws -> (RecordLocation?, unsynced: Bool) {
        let newestUnsynced = state.withLock { keyDir.newestStaged(KeyBytes(key)) }
        let location: RecordLocation?
        switch newestUnsynced {
        case let .put(l)?: location = l
        case .delete?, .expire?: return (nil, true)
        case let .renew(renewal)?:
            // A refresh not yet synced, of a value readers already see.
            location = try locate(key).map { Supersession.join($0, renewal) }
        case nil: location = try locate(key)
        }
        guard let location, !location.isExpired(now: now) else { return (nil, newestUnsynced != nil) }
        return (location, newestUnsynced != nil)
    }

    /// Makes a change visible to readers (see `KeyDir.publish`) and queues
    /// it for the observer. Called with `state` locked; the caller delivers
    /// (`changes.deliver()`) once it holds no lock.
    func publish(_ key: KeyBytes, _ change: KeyDirChange, recordAt position: LogPosition? = nil) {
        keyDir.publish(key, change, recordAt: position)
        noteBacklogFill()
        changes.enqueue(KeyChange(key.bytes, change))
        if change.seq <= durableSeq { indexProgress.noteDurableChange() }
    }

    /// Publishes every change an fsync now covers, each once, in seq order
    /// (rule 11; see `UnsyncedChanges`). Called with `state` locked.
    func publishDurable(upTo seq: UInt64) {
        for (key, change) in keyDir.takeCovered(upTo: seq) { publish(key, change) }
    }

    /// How full the index backlog is against its budget, 0...1 and beyond
    /// (writers wait at 1 for the flusher). Called with `state` locked.
    var backlogFill: Double {
        let recovered = indexProgress.recoveredBacklog
        let entries = Double(keyDir.count - recovered) / Double(max(1, options.maxPendingEntries))
        let bytes = Double(keyDir.backlogBytes) / Double(max(1, options.maxPendingBytes * (recovered > 0 ? 2 : 1)))
        return max(entries, bytes)
    }

    var backlogIsFull: Bool { backlogFill >= 1 }

    /// Whether a write started now may wait for the index backlog to drain:
    /// callers that must not block (event loops) hand such a write to a
    /// thread that may. A hint, read without a lock, with hysteresis: raised
    /// when the backlog passes 3/4 of its budget (on publish, or by a writer
    /// that found it full), lowered by a flush that leaves it under 1/2.
    public var writeWouldWait: Bool { backlogFullHint.load(ordering: .relaxed) }

    /// Raises `writeWouldWait` once the backlog nears its budget. Called
    /// with `state` locked, on every publish.
    func noteBacklogFill() {
        if backlogFill >= 0.75 && !backlogFullHint.load(ordering: .relaxed) {
            backlogFullHint.store(true, ordering: .relaxed)
        }
    }

    /// Holds writers back while the index backlog is full; refuses them while
    /// the index cannot be written (rather than growing the backlog forever).
    /// Without `mayWait`, a full backlog throws `WouldBlock`.
    private func waitForBacklogRoom(mayWait: Bool = true) throws {
        state.lock()
        defer { state.unlock() }
        while true {
            if let refusal = indexProgress.refusal(after: options.flushFailuresBeforeRefusingWrites) {
                metrics.writeRefusals.increment()
                throw refusal
            }
            guard backlogIsFull && indexFlusher.thread.isAlive else { return }
            backlogFullHint.store(true, ordering: .relaxed)
            guard mayWait else {
                metrics.handedOffBacklog.increment()
                throw WouldBlock()
            }
            state.broadcast()
            _ = state.wait(until: Date(timeIntervalSinceNow: 0.05))
        }
    }

    /// Records a failure that leaves durability unknown: from now on the store
    /// refuses writes (rule 6).
    func failWrites(_ reason: String) -> LogKVError {
        let error = LogKVError.readOnly(reason: reason)
        if log.latchFailure(error) {
            metrics.writeRefusals.increment()
            logger.critical("store is now read-only", metadata: ["reason": "\(reason)"])
        }
        return error
    }

    /// Creates a segment for the writer or compaction, durably (file and
    /// directory). The id is used up even if the create fails; a failure
    /// other than a full disk makes the store read-only. Without `reserved`
    /// (an id and the seq high-water mark, taken earlier under the writer
    /// lock) it is called under the writer lock and takes both itself.
    func createSegment(kind: SegmentKind, minSeq: UInt64,
                       reserved: (id: UInt64, highWater: UInt64)? = nil) throws -> SegmentFile {
        let (id, highWater): (UInt64, UInt64)
        if let reserved {
            (id, highWater) = reserved
        } else {
            (id, highWater) = log.reserveSegment()
        }
        let header = SegmentHeader(kind: kind, storeID: storeID, highWater: highWater, minSeq: minSeq)
        do {
            let file = try SegmentFile.create(fs: dir.fs, id: id, path: dir.segmentPath(id), header: header)
            try dir.syncDirectory(dir.segmentsPath)
            file.attach(to: segmentHandles)
            return file
        } catch let error as LogKVError where error.isOutOfSpace && !error.isFromSync {
            // No room for the file or its header: nothing depends on the file yet, and
            // writes work again once space is freed (only a failed fsync is
            // final, rule 6).
            try? dir.remove(dir.segmentPath(id))
            if kind == .log { diskFullHint.store(true, ordering: .relaxed) }
            throw LogKVError.diskFull
        } catch {
            try? dir.remove(dir.segmentPath(id))
            throw failWrites("creating segment \(id) failed: \(error)")
        }
    }

    /// Seals the active segment (durably) and starts the next one.
    /// Called under the writer lock.
    ///
    /// No other fsync of the active segment runs meanwhile: after one that
    /// failed, this one's success would vouch for nothing (Linux reports a
    /// write-back error once; rule 6). What the sync covers is published
    /// before the next segment is created, so a failed create never leaves
    /// a synced write unacknowledged.
    /// Its callers (a blocking writer's append, compaction) flag the disk
    /// work for event loops before they take the writer lock.
    func rotate() throws {
        try syncState.withLock {
            while ledger.syncInProgress { syncState.wait() }
            if let writeFailure { throw writeFailure }
        }
        do { try log.active.sync() } catch { throw failWritesCuttingUnsynced("fsync of segment \(log.active.id) failed: \(error)") }
        syncState.withLock {
            markDurable(ledger.appended)
            syncState.broadcast()
        }
        let sealed = log.active
        let next = try createSegment(kind: .log, minSeq: log.nextSeq)
        sealed.markSealed()
        // The checkpoint may now move to the start of the new segment.
        let start = LogPosition(segment: next.id, offset: next.size)
        syncState.withLock {
            ledger.rotated(to: next, start: start)
            state.withLock {
                durableEnd = start
                logEnd = start
                segments.add(next)
                indexProgress.sealed(sealed.id, size: sealed.size)
            }
        }
        log.rotated(to: next)
        logger.debug("rotated segment", metadata: ["sealed": "\(sealed.id)", "size": "\(sealed.size)"])
    }

    /// Group commit: returns once an fsync covering `target` appended bytes has
    /// completed. One caller runs the fsync; the others wait for it.
    /// `writerLockHeld`: the caller holds the writer lock (and so may not
    /// wait for it).
    func waitForSync(upTo target: UInt64, writerLockHeld: Bool = false) throws {
        syncState.lock()
        defer { syncState.unlock() }
        while !ledger.covers(target) {
            if let writeFailure { throw writeFailure }
            if ledger.syncInProgress {
                syncState.wait()
                continue
            }
            try runSync(writerLockHeld: writerLockHeld)
        }
    }

    /// Runs one fsync of the active segment, after sealing what it covers
    /// with a commit record (see `RecordFormat`). Called with `syncState`
    /// locked and no fsync in progress; returns with it locked, and may
    /// return without syncing when another thread started an fsync while
    /// this one waited for the writer lock (callers loop).
    ///
    /// Ordering rules kept here:
    /// - The commit record is appended under the writer lock, after every
    ///   record it follows, and only once the previous fsync succeeded
    ///   (`SyncLedger` allows one fsync at a time; none runs after a failure):
    ///   so an intact commit record proves the one before it synced.
    /// - Nothing the fsync should have covered is published if it fails;
    ///   under `.always` the records after the last good fsync, none of them
    ///   acknowledged, are cut from the file (rule 1: a write the client was
    ///   told failed never comes back).
    func runSync(writerLockHeld: Bool = false) throws {
        if !writerLockHeld {
            // Lock order: log.lock → syncState.
            syncState.unlock()
            log.lock.lock()
            syncState.lock()
            if ledger.syncInProgress {
                log.lock.unlock()
                return
            }
        }
        if let writeFailure {
            if !writerLockHeld { log.lock.unlock() }
            throw writeFailure
        }
        ledger.beginSync()
        syncState.unlock()
        var commitFailure: Error?
        do { try appendCommitRecord() } catch { commitFailure = error }
        if !writerLockHeld { log.lock.unlock() }
        syncState.lock()
        if let commitFailure {
            ledger.endSync()
            syncState.broadcast()
            throw commitFailure
        }
        // The goal is read after the commit record: the fsync covers it too.
        let (goal, file) = (ledger.appended, ledger.file)
        syncState.unlock()
        let started = DispatchTime.now()
        var failure: Error?
        do { try file.sync() } catch { failure = error }
        metrics.fsyncDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds))
        if let failure {
            // After a failed fsync the page cache may have dropped the data:
            // the only honest answer is to stop taking writes.
            let error = failWrites("fsync failed: \(failure)")
            // Waiters (a rotation among them) learn it before the cut,
            // which needs the writer lock one of them may hold.
            syncState.withLock {
                ledger.endSync()
                syncState.broadcast()
            }
            if !writerLockHeld { log.lock.lock() }
            cutUnsynced()
            if !writerLockHeld { log.lock.unlock() }
            syncState.lock()
            throw error
        }
        syncState.lock()
        ledger.endSync()
        syncState.broadcast()
        // Linux reports a write-back error once: a later fsync that
        // "succeeds" vouches for nothing after an earlier failure (rule 6).
        if let writeFailure { throw writeFailure }
        markDurable(goal)
    }

    /// An fsync covered everything appended up to `bytes` (the record with
    /// `seq`, the log position `end`): the durable watermarks move there and
    /// every change it covers is published (rule 1). Called with `syncState`
    /// locked, by the fsync's own thread (`runSync`, `rotate`).
    private func markDurable(_ covered: SyncLedger.Mark) {
        state.withLock {
            durableSeq = max(durableSeq, covered.seq)
            if covered.end > durableEnd { durableEnd = covered.end }
            publishDurable(upTo: covered.seq)
            state.broadcast()
        }
        ledger.noteSynced(upTo: covered.bytes)
    }

    /// Seals the records appended to the active segment since the last
    /// commit record with a new one. Called under the writer lock, just
    /// before an fsync. Without room for it the fsync goes on: the records
    /// it would seal stay unproven (read as the unsynced tail), never wrong.
    /// `evenIfNothingNew`: one more, after a commit record whose fsync
    /// completed, only to prove that it did (at close).
    func appendCommitRecord(evenIfNothingNew: Bool = false) throws {
        guard log.recordsSinceCommit > 0 || evenIfNothingNew,
              (log.active.header?.version ?? 0) >= RecordFormat.commitRecordsSince else { return }
        let offset = log.active.size
        let record = RecordCodec.commitRecord(at: offset, lastSeq: log.lastSeq, writtenAt: options.clock())
        do {
            try log.appendCommitRecord(record)
        } catch LogKVError.diskFull {
            return
        } catch {
            throw failWritesCuttingUnsynced("append of a commit record to segment \(log.active.id) failed: \(error)")
        }
        let end = log.end
        state.withLock { logEnd = end }
        syncState.withLock {
            ledger.noteAppended(record.count, seq: nil, end: end)
        }
    }

    /// `failWrites`, then `cutUnsynced`. Called under the writer lock.
    func failWritesCuttingUnsynced(_ reason: String) -> LogKVError {
        let error = failWrites(reason)
        cutUnsynced()
        return error
    }

    /// Once the store is read-only under `.always`: cuts the records
    /// appended since the last good fsync from the active segment, then
    /// tries to make the cut durable. None was acknowledged or published;
    /// left in the file, a restart would bring back writes their clients
    /// were told failed. (If power fails before the cut reaches the disk,
    /// they may still come back: nothing written after a failed fsync can
    /// be relied on either way.) Called under the writer lock.
    func cutUnsynced() {
        guard options.fsync == .always else { return }
        log.flaggingDiskWork { cutUnsyncedFlagged() }
    }

    private func cutUnsyncedFlagged() {
        // Read under `syncState`: an fsync that succeeded publishes (and
        // moves `durableEnd`) in one `syncState` section after checking
        // `writeFailure`, which is set by now; so this is either the end it
        // published or one it will refuse to publish past.
        let end = syncState.withLock { state.withLock { durableEnd } }
        guard end.segment == log.active.id, end.offset < log.active.size else { return }
        do {
            try log.active.truncate(to: end.offset, durably: false)
            try? log.active.sync()
            logger.warning("cut the records a failed write or fsync left unacknowledged", metadata: [
                "segment": "\(log.active.id)", "offset": "\(end.offset)"])
        } catch {
            logger.error("could not cut the records a failed write or fsync left unacknowledged; the next open may read them",
                         metadata: ["segment": "\(log.active.id)", "error": "\(error)"])
        }
    }

    // MARK: Background fsync for `.interval`

    func startSyncer() {
        guard options.fsync == .interval else { return }
        syncer.start { [weak self] in self?.syncerLoop() }
    }

    private func syncerLoop() {
        let interval = TimeInterval(options.fsyncIntervalMillis) / 1000
        syncState.lock()
        var deadline = Date(timeIntervalSinceNow: interval)
        while !syncer.stopRequested {
            _ = syncState.wait(until: deadline)
            guard !syncer.stopRequested else { break }
            // Woken early by a broadcast (another fsync finished): keep to
            // the period.
            if Date() < deadline { continue }
            deadline = Date(timeIntervalSinceNow: interval)
            if ledger.hasUnsynced && !ledger.syncInProgress && writeFailure == nil {
                try? runSync()
                syncState.unlock()
                changes.deliver()
                syncState.lock()
            }
        }
        syncState.unlock()
    }

    func stopSyncer() { syncer.stop() }
}
