import Foundation

/// Compaction (merge): copies the live records of sealed segments into new
/// segments and removes the old ones, while reads and writes go on.
///
/// Steps, each crash-safe:
/// 1. Seal the active segment (on demand) and flush the index, so the
///    accounting is current and all garbage present now is reclaimable.
/// 2. Write `COMPACTION` (old ids; new ids as they are created).
/// 3. Copy each record whose index row points at exactly it, with its
///    original seq, into new segments. Tombstones and expired records are
///    kept while an older segment that stays may hold a value they hide.
/// 4. fsync the new segments and the directory.
/// 5. One index transaction moves rows conditionally (a racing write wins)
///    and swaps the segments' accounting rows.
/// 6. Unlink the old segments, fsync the directory, remove `COMPACTION`.
///
/// On open, a leftover `COMPACTION` is settled by `Recovery`: before step 5
/// committed, the new files go; after, the old ones do.
extension LogKV {
    /// Compacts now. With `everything`, every sealed segment with any garbage
    /// is compacted (after sealing the active one); otherwise only those over
    /// the configured thresholds.
    ///
    /// - Returns: what was done (all zero if nothing qualified).
    /// - Throws: `.io`, `.index`, `.corruption`, `.closed`; on a throw the
    ///   store is consistent and the next open finishes the cleanup.
    @discardableResult
    public func compact(everything: Bool = true) throws -> CompactionReport {
        compactionLock.lock()
        defer { compactionLock.unlock() }
        let started = DispatchTime.now()
        if everything {
            try writerLock.withLock {
                if writerClosed { throw LogKVError.closed }
                if active.size > Int64(RecordFormat.segmentHeaderSize) { try rotate() }
            }
        }
        try flushIndex()
        let activeID = writerLock.withLock { active.id }
        let rows = try readers.withReader { try $0.segments() }
        let present = state.withLock { Set(segments.keys) }
        let sealed = rows.filter { row in row.id < activeID && present.contains(row.id) }
        let chosen = sealed.filter { row in
            let dead = row.size - row.liveBytes
            if everything { return dead > 0 }
            let ratio = row.size > 0 ? Double(dead) / Double(row.size) : 0
            return ratio >= options.compactionThresholdRatio || dead >= options.compactionThresholdDeadBytes
        }.map(\.id).sorted()
        guard !chosen.isEmpty else { return CompactionReport() }
        var report = try compactSegments(chosen, allSegments: present.union(rows.map(\.id)))
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

    /// Whether a background compaction should run now (Bitcask-style triggers).
    func compactionTriggered() throws -> Bool {
        let activeID = writerLock.withLock { active.id }
        return try readers.withReader { try $0.segments() }.contains { row in
            guard row.id < activeID, row.size > 0 else { return false }
            let dead = row.size - row.liveBytes
            return Double(dead) / Double(row.size) >= options.compactionTriggerRatio
                || dead >= options.compactionTriggerDeadBytes
        }
    }

    private func failpoint(_ step: String) throws {
        try options.compactionFailpoint?(step)
    }

    private func compactSegments(_ chosen: [UInt64], allSegments: Set<UInt64>) throws -> CompactionReport {
        var report = CompactionReport()
        let chosenSet = Set(chosen)
        let inputs = state.withLock { chosen.compactMap { segments[$0] } }
        let now = options.clock()
        var outputs: [SegmentFile] = []
        var moves: [CompactionMove] = []
        var drops: [CompactionMove] = []
        var limiter = RateLimiter(bytesPerSecond: options.compactionBytesPerSecond)

        func writeManifest() throws {
            let text = "old " + chosen.map(String.init).joined(separator: " ") + "\nnew "
                + outputs.map { String($0.id) }.joined(separator: " ") + "\n"
            try Self.writeDurably(text, to: dir.compactionManifestPath, directory: dir.path)
        }
        func newOutput() throws -> SegmentFile {
            let id = writerLock.withLock { () -> UInt64 in
                defer { nextSegmentID += 1 }
                return nextSegmentID
            }
            let file = try SegmentFile.create(id: id, path: dir.segmentPath(id), storeID: storeID)
            outputs.append(file)
            try writeManifest()
            return file
        }

        try writeManifest()
        var output: SegmentFile?
        for (done, input) in inputs.enumerated() {
            defer { options.compactionProgress?(done + 1, inputs.count) }
            // A hiding record (tombstone, expired value) may go only if no
            // segment older than its own stays behind.
            let olderStays = allSegments.contains { $0 < input.id && !chosenSet.contains($0) }
            var scanner = SegmentScanner(file: input, withValues: true)
            do {
                while let entry = try scanner.next() {
                    let h = entry.header
                    report.bytesRead += Int64(h.recordLength)
                    limiter.spend(h.recordLength)
                    var keep: Bool
                    var isRowOwner = false
                    if h.isTombstone {
                        keep = olderStays
                    } else {
                        let row = try readers.withReader { try $0.lookup(entry.key) }
                        isRowOwner = row?.segment == input.id && row?.offset == entry.offset
                        if !isRowOwner {
                            keep = false
                        } else if h.expiresAt != 0 && h.expiresAt <= now {
                            keep = olderStays
                            if !keep {
                                drops.append(CompactionMove(key: entry.key, oldSegment: input.id, oldOffset: entry.offset,
                                                            new: RecordLocation(segment: 0, offset: 0, length: 0, seq: h.seq, expiresAt: h.expiresAt)))
                            }
                        } else {
                            keep = true
                        }
                    }
                    guard keep else { continue }
                    if output == nil || output!.size + Int64(h.recordLength) > options.segmentSize {
                        if let full = output { try full.sync() }
                        output = try newOutput()
                    }
                    let record = RecordCodec.encode(seq: h.seq, writtenAt: h.writtenAt, expiresAt: h.expiresAt,
                                                    tombstone: h.isTombstone, key: entry.key, value: entry.value)
                    let offset = output!.size
                    try output!.append(record)
                    report.bytesWritten += Int64(record.count)
                    limiter.spend(record.count)
                    if isRowOwner {
                        moves.append(CompactionMove(key: entry.key, oldSegment: input.id, oldOffset: entry.offset,
                                                    new: RecordLocation(segment: output!.id, offset: offset, length: record.count,
                                                                        seq: h.seq, expiresAt: h.expiresAt)))
                    }
                }
            } catch let stop as SegmentScanner.Stop {
                switch stop {
                case let .tornTail(offset, reason), let .corrupt(offset, reason):
                    throw LogKVError.corruption(segment: input.id, offset: offset, reason: reason)
                }
            }
        }
        try failpoint("outputs-written")
        for file in outputs { try file.sync() }
        DataDirectory.syncDirectory(dir.segmentsPath)
        try failpoint("outputs-synced")

        // Readers may see the new locations as soon as the commit lands.
        state.withLock { for file in outputs { segments[file.id] = file } }
        let outputIDs = Set(outputs.map(\.id))
        let logSegments = state.withLock { segments.keys.filter { !chosenSet.contains($0) && !outputIDs.contains($0) } }
        let committed = try indexWriterLock.withLock {
            try indexWriter.commitCompaction(moves: moves, drops: drops,
                                             newSegments: outputs.map { ($0.id, $0.size) }, oldSegments: chosen,
                                             logSegments: logSegments)
        }
        state.withLock {
            for m in moves { cache.remove(KeyBytes(m.key)) }
            for d in drops { cache.remove(KeyBytes(d.key)) }
            for id in chosen {
                segments[id] = nil
                retiredSegments.insert(id)
            }
            flushEpoch &+= 1
        }
        if committed.dropped > 0 { metrics.expiredCompaction.increment(by: committed.dropped) }
        try failpoint("index-committed")

        for (n, input) in inputs.enumerated() {
            DataDirectory.remove(input.path)
            if n == 0 { try failpoint("old-segment-deleted") }
        }
        DataDirectory.syncDirectory(dir.segmentsPath)
        DataDirectory.remove(dir.compactionManifestPath)
        DataDirectory.syncDirectory(dir.path)
        try failpoint("finished")

        // Keep the active segment the newest, as recovery expects.
        try writerLock.withLock {
            if let newest = outputs.map(\.id).max(), newest > active.id, !writerClosed { try rotate() }
        }
        report.segmentsCompacted = inputs.count
        report.segmentsWritten = outputs.count
        report.keysMoved = committed.moved
        report.expiredDropped = committed.dropped
        report.bytesReclaimed = inputs.reduce(0) { $0 + $1.size } - outputs.reduce(0) { $0 + $1.size }
        return report
    }

    /// Writes a small file atomically and durably (temp file, fsync, rename,
    /// fsync of the directory).
    static func writeDurably(_ text: String, to path: String, directory: String) throws {
        let temp = path + ".tmp"
        let fd = Glibc.open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LogKVError.io(operation: "create", path: temp, errno: errno) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        Glibc.close(fd)
        guard written == bytes.count, synced == 0 else { throw LogKVError.io(operation: "write", path: temp, errno: errno) }
        guard rename(temp, path) == 0 else { throw LogKVError.io(operation: "rename", path: path, errno: errno) }
        DataDirectory.syncDirectory(directory)
    }
}

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
