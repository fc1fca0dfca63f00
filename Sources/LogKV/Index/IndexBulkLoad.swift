import Foundation

/// A full index rebuild in bulk (a missing or damaged index, `logkv
/// rebuild-index`, every `logkv restore`).
///
/// Inserting each record's row into `keydir` as the segments are read puts
/// rows into the B-tree at random places: once the tree outgrows the page
/// cache every insert is a random read and write, and a rebuild took 38x the
/// time for 10x the keys. Instead every record goes first into an unindexed
/// scratch table (appends only), then one statement keeps each key's newest
/// record — dropping keys whose newest record is a delete — and fills the
/// empty `keydir` in key order, so SQLite's sorter does the ordering and the
/// B-tree is built by appending. Time is then linear in the records plus one
/// external sort.
///
/// The scratch database is a file beside the index (`index.rebuild`),
/// written with no journal and no fsync: it is thrown away at the end, and a
/// crash during a rebuild leaves an index with no checkpoint, which the next
/// open rebuilds again (starting a new scratch file).
///
/// TTL refresh records go to a second scratch table; once `keydir` holds
/// each key's newest value, a key whose newest record of all is a refresh
/// takes that refresh's expiry if it renews the very value in the row, and
/// is dropped otherwise (the refresh hides older values; see `RecordFormat`).
///
/// Ordering rules kept: `keydir` is filled and accounted in one transaction;
/// the checkpoint is written after it by the caller (`Replay`), durably.
///
/// Thread-safety: used by one thread, during recovery, on the index's writer.
final class IndexBulkLoad {
    private let index: IndexWriter
    private let scratchPath: String
    private let insertRecord: SQLiteStatement
    private let insertRefresh: SQLiteStatement
    private var rowsInTransaction = 0
    private static let rowsPerTransaction = 200_000

    init(index: IndexWriter, scratchPath: String) throws {
        self.index = index
        self.scratchPath = scratchPath
        Self.removeScratch(scratchPath)
        let quoted = scratchPath.replacingOccurrences(of: "'", with: "''")
        try index.db.exec("ATTACH DATABASE '\(quoted)' AS rebuild")
        // Appends only, read back once in order: large pages mean fewer
        // B-tree pages to fill and write (at 10M keys 9.8 s to scan, not 11.3).
        try index.db.exec("PRAGMA rebuild.page_size=65536")
        try index.db.exec("PRAGMA rebuild.journal_mode=OFF")
        try index.db.exec("PRAGMA rebuild.synchronous=OFF")
        try index.db.exec("""
            CREATE TABLE rebuild.records(key BLOB NOT NULL, seq INTEGER NOT NULL, segment INTEGER NOT NULL,
              offset INTEGER NOT NULL, length INTEGER NOT NULL, expires_at INTEGER NOT NULL, tombstone INTEGER NOT NULL)
            """)
        try index.db.exec("""
            CREATE TABLE rebuild.refreshes(key BLOB NOT NULL, seq INTEGER NOT NULL, renews INTEGER NOT NULL,
              expires_at INTEGER NOT NULL, segment INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL)
            """)
        insertRecord = try index.db.prepare("INSERT INTO rebuild.records VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
        insertRefresh = try index.db.prepare("INSERT INTO rebuild.refreshes VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
        try index.db.exec("BEGIN")
    }

    /// Adds one scanned record of `segment`, in any order: a value or a
    /// tombstone to the records, a TTL refresh to the refreshes.
    func add(_ entry: SegmentScanner.Entry, segment: UInt64) throws {
        let h = entry.header
        if h.isTTLRefresh {
            guard let renewedSeq = RecordCodec.renewedSeq(entry.value) else { return }  // the scanner checked its length
            try addTTLRefresh(entry.key, renewing: renewedSeq, expiresAt: h.expiresAt, at: RefreshRecord(entry, segment: segment))
        } else {
            try add(entry.key, KeyDirChange(h, segment: segment, offset: entry.offset))
        }
    }

    private func add(_ key: [UInt8], _ change: KeyDirChange) throws {
        insertRecord.bind(1, key)
        insertRecord.bind(2, Int64(bitPattern: change.seq))
        switch change {
        case let .put(location):
            insertRecord.bind(3, Int64(location.segment))
            insertRecord.bind(4, location.offset)
            insertRecord.bind(5, Int64(location.length))
            insertRecord.bind(6, location.expiresAt)
            insertRecord.bind(7, 0)
        case .delete, .expire, .renew:
            for column: Int32 in 3...6 { insertRecord.bind(column, 0) }
            insertRecord.bind(7, 1)
        }
        try insertRecord.run()
        try counted()
    }

    private func addTTLRefresh(_ key: [UInt8], renewing renewedSeq: UInt64, expiresAt: Int64, at record: RefreshRecord) throws {
        insertRefresh.bind(1, key)
        insertRefresh.bind(2, Int64(bitPattern: record.seq))
        insertRefresh.bind(3, Int64(bitPattern: renewedSeq))
        insertRefresh.bind(4, expiresAt)
        insertRefresh.bind(5, Int64(record.segment))
        insertRefresh.bind(6, record.offset)
        insertRefresh.bind(7, Int64(record.length))
        try insertRefresh.run()
        try counted()
    }

    private func counted() throws {
        rowsInTransaction += 1
        if rowsInTransaction >= Self.rowsPerTransaction {
            try index.db.exec("COMMIT")
            try index.db.exec("BEGIN")
            rowsInTransaction = 0
        }
    }

    /// Fills the (empty) `keydir` with each key's newest live record, with
    /// the per-segment and store-wide accounting, then drops the scratch.
    /// Returns how long the two phases took, for the rebuild's log.
    func finish() throws -> (build: Double, accounting: Double) {
        try index.db.exec("COMMIT")
        // The sorter may use both cores. It sorts runs of `cache_size` pages
        // and merges them: the default 2 MiB runs sort in the CPU's cache
        // (at 10M keys the sort took 7.6 s, against 16 s with 128 MiB runs
        // and 24 s with 512 MiB).
        try index.db.exec("PRAGMA threads = 2")
        defer { try? index.db.exec("PRAGMA threads = 0") }
        // `keydir` is empty and, during recovery, only this connection has
        // the index open: under a rollback journal its new pages are written
        // once, where WAL writes each twice (into the WAL, then at the
        // checkpoint). Should another connection hold it (someone reading it
        // with the sqlite3 tool), the build stays in WAL. A crash before the
        // checkpoint that follows (in WAL again, durably) leaves an index
        // with no checkpoint, which the next open rebuilds; EXTRA also syncs
        // the directory after the journal's deletion, so a power loss cannot
        // bring the journal back and undo a build the checkpoint claims.
        try? index.setJournalMode("delete")
        try index.db.exec("PRAGMA main.synchronous=EXTRA")
        var phases = (build: 0.0, accounting: 0.0)
        try index.inTransaction {
            var started = DispatchTime.now()
            // `max(seq)` makes SQLite take the other columns from the row
            // with the highest seq (documented for bare columns with max()).
            // The grouping sorts by key and yields rows in that order: no
            // ORDER BY, which would sort everything a second time.
            try index.db.exec("""
                INSERT INTO keydir(key, segment, offset, length, seq, expires_at)
                SELECT key, segment, offset, length, seq, expires_at FROM (
                  SELECT key, segment, offset, length, max(seq) AS seq, expires_at, tombstone
                  FROM rebuild.records GROUP BY key)
                WHERE tombstone = 0
                """)
            // Each key's newest refresh, where it is newer than the row's
            // value: it renews that value, or (naming another) hides it.
            try index.db.exec("""
                CREATE TEMP TABLE newest_refreshes AS
                SELECT r.key, r.seq, r.renews, r.expires_at, r.segment, r.offset, r.length FROM
                  (SELECT key, max(seq) AS seq, renews, expires_at, segment, offset, length FROM rebuild.refreshes GROUP BY key) AS r
                  JOIN keydir AS k ON k.key = r.key WHERE r.seq > k.seq;
                DELETE FROM keydir WHERE key IN (SELECT n.key FROM temp.newest_refreshes AS n
                  JOIN keydir AS k ON k.key = n.key WHERE n.renews != k.seq);
                UPDATE keydir SET expires_at = n.expires_at, ttl_seq = n.seq, ttl_segment = n.segment,
                  ttl_offset = n.offset, ttl_length = n.length
                  FROM temp.newest_refreshes AS n WHERE keydir.key = n.key AND keydir.seq = n.renews;
                DROP TABLE temp.newest_refreshes;
                """)
            phases.build = Self.seconds(since: started)
            started = DispatchTime.now()
            // One pass over keydir for every total, summed here: a GROUP BY
            // segment would sort every row again.
            var perSegment: [Int64: (bytes: Int64, keys: Int64)] = [:]
            var keyBytes: Int64 = 0
            var valueRecordBytes: Int64 = 0
            var keys: Int64 = 0
            let rows = try index.db.prepare("SELECT segment, length, length(key), ttl_segment, ttl_length FROM keydir")
            while try rows.step() {
                let old = perSegment[rows.int64(0)] ?? (0, 0)
                perSegment[rows.int64(0)] = (old.bytes + rows.int64(1), old.keys + 1)
                keyBytes += rows.int64(2)
                valueRecordBytes += rows.int64(1)
                keys += 1
                if rows.int64(4) > 0 {  // a live TTL refresh record
                    let refresh = perSegment[rows.int64(3)] ?? (0, 0)
                    perSegment[rows.int64(3)] = (refresh.bytes + rows.int64(4), refresh.keys)
                }
            }
            let setSegment = try index.db.prepare("""
                INSERT INTO segments(id, live_bytes, live_keys) VALUES (?1, ?2, ?3)
                ON CONFLICT(id) DO UPDATE SET live_bytes = excluded.live_bytes, live_keys = excluded.live_keys
                """)
            for (segment, totals) in perSegment {
                setSegment.bind(1, segment)
                setSegment.bind(2, totals.bytes)
                setSegment.bind(3, totals.keys)
                try setSegment.run()
            }
            for (name, value) in [("key_count", keys), ("value_bytes", valueRecordBytes - Int64(RecordFormat.recordHeaderSize) * keys - keyBytes)] {
                let setMeta = try index.db.prepare("""
                    INSERT INTO meta(name, value) VALUES ('\(name)', ?1) ON CONFLICT(name) DO UPDATE SET value = excluded.value
                    """)
                setMeta.bind(1, value)
                try setMeta.run()
            }
            phases.accounting = Self.seconds(since: started)
        }
        try backToWAL()
        try index.db.exec("DETACH DATABASE rebuild")
        Self.removeScratch(scratchPath)
        return phases
    }

    /// The index's ordinary journal and sync level (see `IndexWriter`).
    private func backToWAL() throws {
        try index.db.exec("PRAGMA main.synchronous=NORMAL")
        try index.setJournalMode("wal")
    }

    private static func seconds(since start: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    }

    /// Gives up (the caller is failing): the scratch goes.
    func abandon() {
        try? index.db.exec("ROLLBACK")
        try? backToWAL()
        try? index.db.exec("DETACH DATABASE rebuild")
        Self.removeScratch(scratchPath)
    }

    /// SQLite owns this file (not the file-system seam): it holds nothing a
    /// crash must keep.
    static func removeScratch(_ path: String) {
        for file in [path, path + "-journal"] { unlink(file) }
    }
}
