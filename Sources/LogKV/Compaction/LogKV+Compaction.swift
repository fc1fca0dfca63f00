import Foundation

/// Compaction (merge): copies the live records of sealed segments into new
/// segments and removes the old ones, while reads and writes go on.
///
/// Steps, each crash-safe:
/// 1. Seal the active segment (on demand) and flush the index. Only segments
///    the durable checkpoint wholly covers are candidates: compaction outputs,
///    and sealed log segments that started (by seq) before the checkpoint's
///    (so no input holds a change still pending in memory, and a replay from
///    the checkpoint finds every record after it).
/// 2. Write `COMPACTION` (old ids; new ids as they are created), durably.
/// 3. Copy what `CompactionPlan` keeps, with its original seq, into new
///    segments (kind "compacted", never replayed): each record its index
///    row points at, and each record that may hide an older one in a
///    segment that stays.
/// 4. fsync the new segments and the directory.
/// 5. One durable index transaction (synchronous=FULL) moves rows
///    conditionally (a racing write wins) and swaps the segments' rows.
/// 6. Unlink the old segments, fsync the directory, remove `COMPACTION`
///    (rule 3: the only copies go only after the commit that stops referring
///    to them is durable).
///
/// A failure before step 5 removes the new files; on open, a leftover
/// `COMPACTION` is settled by `Recovery`: before step 5 committed, the new
/// files go; after, the old ones do.
extension LogKV {
    /// Compacts now. With `everything`, every sealed segment with any garbage
    /// is compacted (after sealing the active one); otherwise only those over
    /// the configured thresholds.
    ///
    /// - Returns: what was done (all zero if nothing qualified).
    /// - Throws: `.io`, `.index`, `.corruption`, `.closed`, `.readOnly`; on a
    ///   throw the store is consistent and nothing is left behind.
    @discardableResult
    public func compact(everything: Bool = true) throws -> CompactionReport {
        compactionLock.lock()
        defer {
            compactionLock.unlock()
            changes.deliver()  // expiries it noticed, and what its rotation's fsync covered
        }
        let started = DispatchTime.now()
        // On a full disk compaction is what frees space: it may use the reserve.
        if diskFullHint.load(ordering: .relaxed), reserve.release() {
            logger.warning("disk full: gave up the reserve for a compaction", metadata: ["reserve_bytes": "\(reserve.size)"])
        }
        // Expiry is judged at a time read under the writer lock, before the
        // flush: a TTL refresh that read its clock earlier was appended (and,
        // under `always`, is synced by the flush) and is in the index once
        // the flush returns; one that reads it later finds the key already
        // expired. So compaction never drops a value a refresh renewed.
        var now: Int64 = 0
        let sealed: Set<UInt64> = try log.flaggingDiskWork {
            try log.lock.withLock {
                if log.isClosed { throw LogKVError.closed }
                if let writeFailure { throw writeFailure }
                if everything && !log.active.isEmpty { try rotate() }
                now = options.clock()
                return sealedLogSegments()
            }
        }
        // Every change in a log segment sealed now was appended before this
        // flush, so none is still pending once it returns.
        try indexAcknowledgedChanges()
        let candidates = try compactionCandidates(sealedLogSegments: sealed)
        let chosen = candidates.filter { candidate in
            let dead = candidate.dead
            if everything { return dead > 0 }
            let ratio = candidate.size > 0 ? Double(dead) / Double(candidate.size) : 0
            return ratio >= options.compactionThresholdRatio || dead >= options.compactionThresholdDeadBytes
        }.map(\.id).sorted()
        guard !chosen.isEmpty else { return CompactionReport() }
        var report: CompactionReport
        var inputs = chosen
        var retried = false
        while true {
            do {
                report = try compactSegments(inputs, now: now)
                break
            } catch DamagedInput.segment(let id) {
                inputs.removeAll { $0 == id }  // its outputs are gone; go on without it
                if inputs.isEmpty { return CompactionReport() }
            } catch CompactionRaced.keyRenewed where !retried {
                // Only a wall clock stepping back lets a refresh land after
                // `now`: once more, with a fresh time and flush.
                retried = true
                logger.warning("compaction met a key renewed after its expiry was judged; starting over")
                now = log.lock.withLock { options.clock() }
                try indexAcknowledgedChanges()
            }
        }
        report.seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        metrics.compactionRuns.increment()
        metrics.compactionDuration.recordNanoseconds(Int64(report.seconds * 1e9))
        metrics.compactionReadBytes.increment(by: Int(report.bytesRead))
        metrics.compactionWrittenBytes.increment(by: Int(report.bytesWritten))
        metrics.compactionReclaimedBytes.increment(by: Int(max(0, report.bytesReclaimed)))
        metrics.compactionSegmentsRemoved.increment(by: report.segmentsCompacted)
        logger.info("compaction finished", metadata: [
            "segments": "\(report.segmentsCompacted)", "written_segments": "\(report.segmentsWritten)",
            "reclaimed_bytes": "\(report.bytesReclaimed)", "keys_moved": "\(report.keysMoved)",
            "seconds": "\(report.seconds)"])
        return report
    }

    /// Starts a full compaction on a background thread.
    ///
    /// - Returns: false if a compaction is already running.
    public func startCompaction() -> Bool {
        guard compactionLock.try() else { return false }
        compactionLock.unlock()
        let thread = Thread { [self] in
            do { try compact() } catch { logger.error("compaction failed", metadata: ["error": "\(error)"]) }
        }
        thread.name = "logkv-compaction"
        thread.start()
        return true
    }

    /// A segment compaction may take, with its garbage.
    struct CompactionCandidate { var id: UInt64; var size: Int64; var dead: Int64 }

    /// The log segments sealed now: every one but the active. A recorded
    /// fact, not an id comparison (rule 4). Called under the writer lock.
    func sealedLogSegments() -> Set<UInt64> {
        let activeID = log.active.id
        return state.withLock { segments.logSegments(excluding: activeID) }
    }

    /// Segments wholly in the index — compaction outputs, and the log
    /// segments in `sealedLogSegments` that the index checkpoint has passed
    /// — with their dead bytes (the segment header is not garbage).
    ///
    /// "Passed" is decided by seq (rule 4): a log segment is wholly before
    /// the checkpoint's segment when it started at a lower seq (`minSeq`,
    /// recorded in each header). A flush may index a sealed segment's
    /// records while the checkpoint is held back before it (a key whose
    /// synced record waits behind an unsynced rewrite); compacting that
    /// segment would take records a replay from the checkpoint needs to
    /// find (older versions of keys it holds could then win).
    /// `checkpoint`: judge against this one instead of the index's (tests).
    func compactionCandidates(sealedLogSegments sealed: Set<UInt64>,
                              checkpoint override: LogPosition? = nil) throws -> [CompactionCandidate] {
        let (files, current) = state.withLock { (segments, indexProgress.checkpoint) }
        let checkpoint = override ?? current
        let checkpointMinSeq = files[checkpoint.segment]?.header?.minSeq
        return try readers.withReader { try $0.segments() }.compactMap { row in
            guard let file = files[row.id], !files.damaged.contains(row.id) else { return nil }
            let covered: Bool
            if file.kind == .compacted {
                covered = true
            } else if sealed.contains(row.id), let checkpointMinSeq, let minSeq = file.header?.minSeq {
                covered = minSeq < checkpointMinSeq
            } else {
                covered = false
            }
            guard covered else { return nil }
            let dead = max(0, file.size - file.dataStart - row.liveBytes)
            return CompactionCandidate(id: row.id, size: file.size, dead: dead)
        }
    }

    /// Whether a background compaction should run now (Bitcask-style triggers).
    func compactionTriggered() throws -> Bool {
        let sealed = log.lock.withLock { sealedLogSegments() }
        return try compactionCandidates(sealedLogSegments: sealed).contains { candidate in
            guard candidate.size > 0 else { return false }
            return Double(candidate.dead) / Double(candidate.size) >= options.compactionTriggerRatio
                || candidate.dead >= options.compactionTriggerDeadBytes
        }
    }

    private func failpoint(_ step: String) throws {
        try options.compactionFailpoint?(step)
    }

    /// Steps 2 to 6 (see above) for the segments `chosen`.
    private func compactSegments(_ chosen: [UInt64], now: Int64) throws -> CompactionReport {
        if let writeFailure { throw writeFailure }
        let chosenSet = Set(chosen)
        let (inputs, staying) = state.withLock {
            (chosen.compactMap { segments[$0] }, segments.all.filter { !chosenSet.contains($0.id) })
        }
        let run = CompactionRun(chosen: chosen, inputs: inputs, staying: staying, now: now,
                                bytesPerSecond: options.compactionBytesPerSecond)
        defer {
            if !run.committed { abandon(run.outputs) }
        }
        try dir.writeDurably(run.manifest.encoded, to: dir.compactionManifestPath)
        var output: SegmentFile?
        for (done, input) in inputs.enumerated() {
            defer { options.compactionProgress?(done + 1, inputs.count) }
            try copyLiveRecords(of: input, in: run, into: &output)
        }
        try failpoint("outputs-written")
        do {
            for file in run.outputs { try file.sync() }
            try dir.syncDirectory(dir.segmentsPath)
            for file in run.outputs { file.markSealed() }
        } catch {
            throw failWrites("fsync of compaction output failed: \(error)")
        }
        try failpoint("outputs-synced")
        let result = try commit(run)
        try failpoint("index-committed")
        try removeInputs(of: run)
        try failpoint("finished")

        var report = run.report
        report.segmentsCompacted = inputs.count
        report.segmentsWritten = run.outputs.count
        report.keysMoved = result.moved
        report.expiredDropped = result.dropped
        report.bytesReclaimed = inputs.reduce(0) { $0 + $1.size } - run.outputs.reduce(0) { $0 + $1.size }
        return report
    }

    /// Step 3 for one input: copies what `CompactionPlan` keeps into
    /// `output` (a new one when it is full), and notes the rows to move or
    /// drop.
    private func copyLiveRecords(of input: SegmentFile, in run: CompactionRun, into output: inout SegmentFile?) throws {
        var scanner = SegmentScanner(file: input, withValues: true)
        var scanned = 0
        while true {
            let entry: SegmentScanner.Entry
            do {
                guard let next = try scanner.next() else { return }
                entry = next
            } catch let stop as SegmentScanner.Stop {
                guard try skipDamage(stop, in: input, scanner: &scanner, run: run) else { return }
                continue
            }
            scanned += 1
            if scanned % 1024 == 0 || entry.header.recordLength > 1 << 20, state.withLock({ closeRequested }) {
                throw LogKVError.closed  // close() is waiting: abandon, the outputs go
            }
            let h = entry.header
            run.report.bytesRead += Int64(h.recordLength)
            run.limiter.spend(h.recordLength)
            let row = try readers.withReader { try $0.lookup(entry.key) }
            let fate = CompactionPlan.fate(of: h, segment: input.id, offset: entry.offset, row: row,
                                           minStayingSeq: run.minStayingSeq, now: run.now)
            switch fate {
            case .drop: continue
            case .dropWithRow:
                run.drops.append(CompactionMove(key: entry.key, oldSegment: input.id, oldOffset: entry.offset, new: row!))
                continue
            case .copyOwned, .copyHiding: break
            }
            if output == nil || output!.size + Int64(h.recordLength) > options.segmentSize {
                if let full = output { try full.sync() }
                output = try newOutput(for: run)
            }
            let record = RecordCodec.encode(seq: h.seq, writtenAt: h.writtenAt, expiresAt: h.expiresAt,
                                            flags: h.flags, key: entry.key, value: entry.value)
            let offset = output!.size
            try output!.append(record)
            run.report.bytesWritten += Int64(record.count)
            run.limiter.spend(record.count)
            if fate == .copyOwned {
                run.moves.append(CompactionMove(key: entry.key, oldSegment: input.id, oldOffset: entry.offset,
                                                new: RecordLocation(segment: output!.id, offset: offset, length: record.count,
                                                                    seq: h.seq, expiresAt: h.expiresAt),
                                                isRefresh: h.isTTLRefresh))
            }
        }
    }

    /// Damaged bytes in an input: skipped when only dead records were there
    /// (returns whether intact records follow); otherwise the segment stays,
    /// out of compaction, and the run goes on without it (`DamagedInput`).
    private func skipDamage(_ stop: SegmentScanner.Stop, in input: SegmentFile, scanner: inout SegmentScanner,
                            run: CompactionRun) throws -> Bool {
        metrics.recoveryDamaged.increment()
        let resumed = try scanner.skipDamage()
        let spanEnd = resumed ?? input.size
        let rowsInside = try readers.withReader {
            try $0.countRows(segment: input.id, from: stop.offset, to: spanEnd)
        }
        // Dead bytes may still hide older values (a tombstone, an expired
        // record) in segments that stay: only when none could is the damage
        // safe to rewrite away.
        let mayHideOlder = run.minStayingSeq <= (input.header?.highWater ?? UInt64.max)
        if rowsInside > 0 || mayHideOlder {
            // Never delete bytes the index points at (rule 7): the segment
            // stays, out of compaction, for `logkv check`.
            logger.error("damaged bytes that live keys or older values depend on; the segment is kept out of compaction", metadata: [
                "segment": "\(input.id)", "offset": "\(stop.offset)", "bytes": "\(spanEnd - stop.offset)",
                "live_keys": "\(rowsInside)", "reason": "\(stop.reason)"])
            state.withLock { segments.markDamaged(input.id) }
            throw DamagedInput.segment(input.id)
        }
        // Only dead records were there: salvage the rest (rule 7); the damage
        // is reported and goes with the rewrite.
        logger.error("compaction skipped damaged bytes holding no live key", metadata: [
            "segment": "\(input.id)", "offset": "\(stop.offset)", "bytes": "\(spanEnd - stop.offset)",
            "reason": "\(stop.reason)"])
        return resumed != nil
    }

    /// A new output segment. The manifest names it before it exists, so a
    /// crash while creating it leaves no file nobody knows about. The id and
    /// high-water mark are taken under the writer lock; the file is created
    /// (and synced) outside it, which writers and event loops take.
    private func newOutput(for run: CompactionRun) throws -> SegmentFile {
        let (id, highWater) = log.lock.withLock { log.reserveSegment() }
        run.outputIDs.append(id)
        try dir.writeDurably(run.manifest.encoded, to: dir.compactionManifestPath)
        let file = try createSegment(kind: .compacted, minSeq: run.outputMinSeq, reserved: (id, highWater))
        run.outputs.append(file)
        return file
    }

    /// Step 5: the durable index commit that moves and drops rows, then the
    /// KeyDir's cached rows and the segment set follow it.
    private func commit(_ run: CompactionRun) throws -> (moved: Int, dropped: Int) {
        // Readers may see the new locations as soon as the commit lands.
        state.withLock { for file in run.outputs { segments.add(file) } }
        let result: (moved: Int, dropped: Int)
        do {
            result = try indexFlusher.withWriter {
                try $0.commitCompaction(id: run.id, moves: run.moves, drops: run.drops,
                                        newSegments: run.outputs.map { ($0.id, $0.size) }, oldSegments: run.inputIDs)
            }
        } catch {
            state.withLock { for file in run.outputs { segments.withdraw(file.id) } }
            throw error
        }
        run.committed = true
        // Cached rows of the moved and dropped keys are forgotten a slice at a
        // time, the lock released between slices: every read and write takes
        // it, and one pass over a large compaction's keys stalled them all
        // (about 80 ms for 500k keys). Until the last slice, a row still
        // cached points into an input, which is retired only after it; each
        // slice bumps the cache epoch, so no lookup begun before the commit
        // caches an old row afterwards.
        let rewritten = run.moves.map(\.key) + run.drops.map(\.key)
        var sliceStart = 0
        repeat {
            let sliceEnd = min(sliceStart + 4096, rewritten.count)
            state.withLock { keyDir.rowsRewritten(Array(rewritten[sliceStart..<sliceEnd])) }
            sliceStart = sliceEnd
        } while sliceStart < rewritten.count
        state.withLock { segments.retire(run.inputIDs) }
        if result.dropped > 0 { metrics.expiredCompaction.increment(by: result.dropped) }
        state.withLock {
            // Keys whose expiry nobody had noticed are gone now (a racing
            // write that kept its row is reported too; observers compare).
            for drop in run.drops { changes.enqueue(KeyChange(key: drop.key, kind: .expire, seq: drop.new.latestSeq)) }
        }
        return result
    }

    /// Step 6: the inputs go, then the manifest (rule 3).
    private func removeInputs(of run: CompactionRun) throws {
        do {
            for (n, input) in run.inputs.enumerated() {
                try dir.remove(input.path)
                if n == 0 { try failpoint("old-segment-deleted") }
            }
            try dir.syncDirectory(dir.segmentsPath)
            try dir.remove(dir.compactionManifestPath)
            try dir.syncDirectory(dir.path)
        } catch let error as LogKVError where error.isIO {
            // The commit stands; the next open finishes the cleanup.
            throw failWrites("removing compacted segments failed: \(error)")
        }
    }

    /// Removes the outputs of a compaction that did not commit, and its
    /// manifest. If that fails, the next open does it (the manifest says which).
    private func abandon(_ outputs: [SegmentFile]) {
        do {
            for file in outputs { try dir.remove(file.path) }
            try dir.syncDirectory(dir.segmentsPath)
            try dir.remove(dir.compactionManifestPath)
            try dir.syncDirectory(dir.path)
        } catch {
            // Outputs nobody names any more would never be compacted (rule 6):
            // stop here; the next open removes them (the manifest says which).
            _ = failWrites("could not remove the outputs of a failed compaction: \(error)")
        }
        try? dir.remove(dir.compactionManifestPath + ".tmp")  // a manifest write that found no room
        if reserve.isReleased { reserve.ensure() }  // the room the compaction took is free again
    }
}

/// An input segment with damaged bytes under live keys: compaction goes on
/// without it.
enum DamagedInput: Error { case segment(UInt64) }

/// A record compaction judged expired (and did not copy) was renewed before
/// the commit: the commit is refused, nothing changes.
enum CompactionRaced: Error { case keyRenewed }

/// Keeps compaction I/O under a byte rate so request latency holds.
struct RateLimiter {
    let bytesPerSecond: Int64
    private var windowStart = DispatchTime.now().uptimeNanoseconds
    private var spentInWindow: Int64 = 0

    init(bytesPerSecond: Int64) { self.bytesPerSecond = bytesPerSecond }

    mutating func spend(_ bytes: Int) {
        guard bytesPerSecond > 0 else { return }
        spentInWindow += Int64(bytes)
        let budgetNanos = UInt64(Double(spentInWindow) / Double(bytesPerSecond) * 1e9)
        let elapsed = DispatchTime.now().uptimeNanoseconds - windowStart
        if budgetNanos > elapsed + 1_000_000 {
            usleep(useconds_t((budgetNanos - elapsed) / 1000))
        }
        if elapsed > 1_000_000_000 {
            windowStart = DispatchTime.now().uptimeNanoseconds
            spentInWindow = 0
        }
    }
}
