import Foundation

/// What `LogKV.check` found.
public struct CheckReport: Sendable {
    public var segments = 0
    public var records = 0
    public var keys = 0
    /// One line per problem, naming the segment and offset where there is one.
    public var problems: [String] = []
    public var isHealthy: Bool { problems.isEmpty }
}

extension LogKV {
    /// Verifies a stopped data directory without changing it: every record's
    /// CRC, every segment header, and that the index holds exactly what the
    /// segments say (rebuilt into a scratch index and compared row by row).
    ///
    /// - Parameter progress: (segments done, segment count).
    /// - Throws: `.locked` if the directory is in use; `.io`/`.index` if it
    ///   cannot be read at all. Damage is reported, not thrown.
    public static func check(path: String, fileSystem: any FileSystem = PosixFileSystem(),
                             progress: ((Int, Int) -> Void)? = nil) throws -> CheckReport {
        let dir = DataDirectory(path: path, fs: fileSystem)
        guard dir.exists(dir.segmentsPath) else {
            throw LogKVError.invalidArgument("\(path) is not a logkv data directory (no segments/)")
        }
        let lock = try dir.lock(clock: { LogKVOptions.systemMillis() })
        defer { withExtendedLifetime(lock) {} }
        var report = CheckReport()
        let scratchPath = NSTemporaryDirectory() + "logkv-check-\(UUID().uuidString).sqlite"
        defer { for f in [scratchPath] + DataDirectory.sqliteSidecars(of: scratchPath) { try? dir.remove(f) } }
        let scratch = try IndexWriter(path: scratchPath)
        // The same bulk rebuild an open uses: each key's newest record wins,
        // whatever order the segments come in.
        let bulk = try IndexBulkLoad(index: scratch, scratchPath: scratchPath + ".rebuild")
        var bulkFinished = false
        defer { if !bulkFinished { bulk.abandon() } }
        let ids = try dir.segmentIDs()
        var end = LogPosition(segment: 0, offset: 0)
        if dir.exists(dir.compactionManifestPath) {
            report.problems.append("an interrupted compaction is pending (COMPACTION); the next open settles it")
        }
        var files: [SegmentFile] = []
        for id in ids {
            let file = try SegmentFile.open(fs: dir.fs, id: id, path: dir.segmentPath(id), writable: false)
            report.segments += 1
            do { try file.loadHeader() } catch {
                report.problems.append("segment \(id): \(error)")
                continue
            }
            files.append(file)
        }
        let activeID = files.last { $0.kind == .log }?.id
        for (n, file) in files.enumerated() {
            let id = file.id
            // The log ends where an open would end it (the same rule).
            var logEnd: Int64?
            if id == activeID, let tail = try SegmentScanner.unsyncedTail(of: file, from: file.dataStart),
               let hole = tail.hole, tail.recordsAfterHole > 0 {
                logEnd = hole
                report.problems.append("segment \(id) offset \(hole): unsynced tail cut by a power loss, \(file.size - hole) bytes with \(tail.recordsAfterHole) intact records after the hole, written after a write that was lost; the next open drops them")
            }
            var scanner = SegmentScanner(file: file, endingAt: logEnd)
            while true {
                do {
                    guard let entry = try scanner.next() else { break }
                    report.records += 1
                    try bulk.add(entry, segment: id)
                } catch let stop as SegmentScanner.Stop {
                    if let resumed = try scanner.skipDamage() {
                        report.problems.append("segment \(id) offset \(stop.offset): \(stop.reason); \(resumed - stop.offset) bytes unreadable, intact records follow (damage: the intact records are kept; `logkv compact` rewrites the segment without the damaged bytes unless a live key points into them)")
                        continue
                    }
                    if id == activeID && logEnd != nil {
                        break  // reported above
                    } else if id == activeID {
                        report.problems.append("segment \(id) offset \(stop.offset): torn tail (\(stop.reason)), \(file.size - stop.offset) bytes; the next open truncates it")
                    } else {
                        report.problems.append("segment \(id) offset \(stop.offset): \(stop.reason); the rest of this sealed segment (\(file.size - stop.offset) bytes) is unreadable")
                    }
                    break
                }
            }
            if id == activeID { end = LogPosition(segment: id, offset: scanner.validEnd) }
            progress?(n + 1, files.count)
        }
        _ = try bulk.finish()
        bulkFinished = true
        try compareIndexes(dir: dir, scratch: scratch, logEnd: end, report: &report)
        return report
    }

    private static func compareIndexes(dir: DataDirectory, scratch: IndexWriter, logEnd: LogPosition,
                                       report: inout CheckReport) throws {
        guard dir.exists(dir.indexPath) else {
            report.problems.append("index.sqlite is missing; the next open rebuilds it")
            return
        }
        let real: SQLiteConnection
        do {
            real = try SQLiteConnection(path: dir.indexPath, readOnly: true)
            try real.exec("SELECT count(*) FROM keydir")
        } catch {
            report.problems.append("index.sqlite is unreadable (\(error)); the next open rebuilds it")
            return
        }
        if let cp = try? IndexWriter.checkpoint(of: real)?.position, cp != logEnd {
            report.problems.append("index checkpoint (segment \(cp.segment), offset \(cp.offset)) is not at the end of the log (segment \(logEnd.segment), offset \(logEnd.offset)); the next open replays the difference")
        }
        let sql = "SELECT key, segment, offset, length, seq, expires_at, ttl_seq, ttl_segment, ttl_offset, ttl_length FROM keydir ORDER BY key"
        // An index not yet migrated by this build has no TTL refreshes.
        let realHasRefreshes = (try real.scalarInt("PRAGMA user_version") ?? 0) >= 2
        let a = try scratch.db.prepare(sql)
        let b = try real.prepare(realHasRefreshes ? sql
            : sql.replacingFirst("ttl_seq, ttl_segment, ttl_offset, ttl_length", with: "0, 0, 0, 0"))
        // Expired keys may or may not have been swept from the live index:
        // neither side's expired rows count.
        let now = LogKVOptions.systemMillis()
        func next(_ s: SQLiteStatement) throws -> Bool {
            while try s.step() {
                let expires = s.int64(5)
                if expires == 0 || expires > now { return true }
            }
            return false
        }
        var rowA = try next(a), rowB = try next(b)
        var mismatches = 0
        func describe(_ s: SQLiteStatement) -> String {
            "segment \(s.int64(1)) offset \(s.int64(2)) seq \(s.int64(4))" + (s.int64(6) != 0 ? " ttl refreshed by seq \(s.int64(6))" : "")
        }
        while rowA || rowB {
            let keyA = rowA ? a.blob(0) : nil, keyB = rowB ? b.blob(0) : nil
            let order = keyA == nil ? 1 : keyB == nil ? -1 : KeyBytes.compare(keyA!, keyB!)
            let keyText = { (k: [UInt8]) in String(decoding: k, as: UTF8.self) }
            if order < 0 {
                mismatches += 1
                if mismatches <= 20 { report.problems.append("key \"\(keyText(keyA!))\" is in the segments (\(describe(a))) but not in the index") }
                rowA = try next(a)
            } else if order > 0 {
                mismatches += 1
                if mismatches <= 20 { report.problems.append("key \"\(keyText(keyB!))\" is in the index (\(describe(b))) but not in the segments") }
                rowB = try next(b)
            } else {
                if (1...9).contains(where: { a.int64(Int32($0)) != b.int64(Int32($0)) }) {
                    mismatches += 1
                    if mismatches <= 20 { report.problems.append("key \"\(keyText(keyA!))\": index says \(describe(b)), segments say \(describe(a))") }
                }
                report.keys += 1
                rowA = try next(a)
                rowB = try next(b)
            }
        }
        if mismatches > 20 { report.problems.append("… and \(mismatches - 20) more index mismatches") }
    }
}
