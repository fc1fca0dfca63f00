import Foundation
import CSQLiteNoWait

/// The SQLite mirror of the KeyDir.
///
/// `IndexWriter` owns the single writer connection: recovery uses it before
/// the store starts; then the flusher, compaction's commit and `close` do,
/// one at a time through `IndexFlusher.withWriter`.
/// `IndexReader`s are read-only connections handed out by `IndexReaderPool`,
/// each used by one thread at a time. WAL mode keeps readers and the writer
/// out of each other's way.
///
/// Durability: ordinary commits run with `synchronous=NORMAL` (a power loss
/// may take the last few back; the log still holds their records, and the
/// checkpoint never points past durable log bytes, so replay redoes them).
/// Commits that a later step relies on surviving (a compaction's, before its
/// inputs are unlinked; the end of recovery) pass `durable: true` and run with
/// `synchronous=FULL` (rule 3). Every commit is reported to the file system
/// seam so a simulated disk knows which index states a power loss may leave.
final class IndexWriter: @unchecked Sendable {
    let db: SQLiteConnection
    private let fs: any FileSystem
    private let selectRow: SQLiteStatement
    private let upsertRow: SQLiteStatement
    private let renewRow: SQLiteStatement
    private let deleteRow: SQLiteStatement
    private let addSegmentLive: SQLiteStatement
    private let setSegmentSize: SQLiteStatement
    private let writeCheckpoint: SQLiteStatement
    private let addKeyCount: SQLiteStatement
    private let addValueBytes: SQLiteStatement

    /// Opens (creating if needed) the index and applies pending migrations.
    init(path: String, fs: any FileSystem = PosixFileSystem()) throws {
        self.fs = fs
        db = try SQLiteConnection(path: path)
        try db.exec("PRAGMA journal_mode=WAL")
        try db.exec("PRAGMA synchronous=NORMAL")
        // Reads the header: fails here on a file that is not a database.
        try db.exec("PRAGMA schema_version")
        try Self.migrate(db)
        selectRow = try db.prepare(
            "SELECT segment, length, max(seq, ttl_seq), seq, ttl_segment, ttl_length FROM keydir WHERE key = ?1")
        upsertRow = try db.prepare("""
            INSERT INTO keydir(key, segment, offset, length, seq, expires_at, ttl_seq, ttl_segment, ttl_offset, ttl_length)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
            ON CONFLICT(key) DO UPDATE SET segment = excluded.segment, offset = excluded.offset,
              length = excluded.length, seq = excluded.seq, expires_at = excluded.expires_at, ttl_seq = excluded.ttl_seq,
              ttl_segment = excluded.ttl_segment, ttl_offset = excluded.ttl_offset, ttl_length = excluded.ttl_length
            """)
        renewRow = try db.prepare("""
            UPDATE keydir SET expires_at = ?2, ttl_seq = ?3, ttl_segment = ?4, ttl_offset = ?5, ttl_length = ?6
            WHERE key = ?1
            """)
        deleteRow = try db.prepare("DELETE FROM keydir WHERE key = ?1")
        addSegmentLive = try db.prepare("""
            INSERT INTO segments(id, live_bytes, live_keys) VALUES (?1, ?2, ?3)
            ON CONFLICT(id) DO UPDATE SET live_bytes = live_bytes + excluded.live_bytes,
              live_keys = live_keys + excluded.live_keys
            """)
        setSegmentSize = try db.prepare("""
            INSERT INTO segments(id, size_bytes) VALUES (?1, ?2)
            ON CONFLICT(id) DO UPDATE SET size_bytes = excluded.size_bytes
            """)
        writeCheckpoint = try db.prepare("""
            INSERT INTO checkpoint(id, segment, offset, max_seq) VALUES (1, ?1, ?2, ?3)
            ON CONFLICT(id) DO UPDATE SET segment = excluded.segment, offset = excluded.offset,
              max_seq = max(max_seq, excluded.max_seq)
            """)
        addKeyCount = try db.prepare("""
            INSERT INTO meta(name, value) VALUES ('key_count', ?1)
            ON CONFLICT(name) DO UPDATE SET value = value + excluded.value
            """)
        addValueBytes = try db.prepare("""
            INSERT INTO meta(name, value) VALUES ('value_bytes', ?1)
            ON CONFLICT(name) DO UPDATE SET value = value + excluded.value
            """)
        // Indexes written before value_bytes was counted get it once.
        if try db.scalarInt("SELECT count(*) FROM meta WHERE name = 'value_bytes'") == 0 {
            try db.exec("""
                INSERT INTO meta(name, value) SELECT 'value_bytes',
                  coalesce(sum(length - \(RecordFormat.recordHeaderSize) - length(key)), 0) FROM keydir
                """)
        }
    }

    /// Switches the index's journal (`wal`, `delete`). The switch is a small
    /// write of the file header, committed when the statement ends; SQLite
    /// then answers with the mode in force, which is not the one asked for
    /// while another connection has the index open.
    func setJournalMode(_ mode: String) throws {
        try db.prepare("PRAGMA main.journal_mode=\(mode)").run()
        let check = try db.prepare("PRAGMA main.journal_mode")
        let now = try check.step() ? check.text(0) : ""
        check.reset()
        guard now == mode else {
            throw LogKVError.index(code: 1, message: "journal mode is \(now), not \(mode)")
        }
    }

    static func migrate(_ db: SQLiteConnection) throws {
        let version = Int(try db.scalarInt("PRAGMA user_version") ?? 0)
        guard version <= Migrations.all.count else {
            throw LogKVError.index(code: 0, message: "index schema version \(version) is newer than this build (\(Migrations.all.count))")
        }
        for (number, migration) in Migrations.all.enumerated() where number >= version {
            try db.exec("BEGIN IMMEDIATE")
            do {
                try db.exec(migration.sql)
                try db.exec("PRAGMA user_version = \(number + 1)")
                try db.exec("COMMIT")
            } catch {
                try? db.exec("ROLLBACK")
                throw error
            }
        }
    }

    func checkpoint() throws -> (position: LogPosition, maxSeq: UInt64)? {
        try Self.checkpoint(of: db)
    }

    /// The checkpoint as stored, read through any connection to an index.
    static func checkpoint(of db: SQLiteConnection) throws -> (position: LogPosition, maxSeq: UInt64)? {
        let stmt = try db.prepare("SELECT segment, offset, max_seq FROM checkpoint WHERE id = 1")
        guard try stmt.step() else { return nil }
        return (LogPosition(segment: UInt64(stmt.int64(0)), offset: stmt.int64(1)), UInt64(stmt.int64(2)))
    }

    func storeID() throws -> [UInt8]? {
        let stmt = try db.prepare("SELECT value FROM meta WHERE name = 'store_id'")
        return try stmt.step() ? stmt.blob(0) : nil
    }

    func setStoreID(_ id: [UInt8]) throws {
        let stmt = try db.prepare("INSERT OR REPLACE INTO meta(name, value) VALUES ('store_id', ?1)")
        stmt.bind(1, id)
        try stmt.run()
    }

    /// Whether the last run ended with `close()` (rule 5: seqs it issued are
    /// all durable, so none can be issued again).
    func wasClosedCleanly() throws -> Bool {
        let stmt = try db.prepare("SELECT value FROM meta WHERE name = 'clean_close'")
        return try stmt.step() ? stmt.int64(0) == 1 : false
    }

    /// Records, durably, whether the store is closed cleanly: true at the
    /// end of `close()`, false once an open has finished recovering.
    func setClosedCleanly(_ clean: Bool) throws {
        try begin(durable: true)
        do {
            let stmt = try db.prepare("INSERT OR REPLACE INTO meta(name, value) VALUES ('clean_close', ?1)")
            stmt.bind(1, Int64(clean ? 1 : 0))
            try stmt.run()
            try commit(durable: true)
        } catch {
            rollback(durable: true)
            throw error
        }
    }

    /// Applies a batch of changes and advances the checkpoint, in one
    /// transaction.
    ///
    /// - Parameters:
    ///   - changes: newest change per key, sorted by key for B-tree locality.
    ///   - checkpoint: the log position every change up to which is included.
    ///   - segmentSizes: current sizes of segments touched since the last batch.
    ///
    /// A row changes only for a change newer (by seq, TTL refreshes
    /// included) than the key's newest record it reflects.
    func apply(
        _ changes: [([UInt8], KeyDirChange)], checkpoint: LogPosition?, maxSeq: UInt64,
        segmentSizes: [UInt64: Int64], durable: Bool = false
    ) throws {
        try begin(durable: durable)
        do {
            var liveDelta: [UInt64: (bytes: Int64, keys: Int64)] = [:]
            var keyDelta: Int64 = 0
            var valueDelta: Int64 = 0
            func account(_ segment: UInt64, _ bytes: Int64, _ keys: Int64) {
                let old = liveDelta[segment] ?? (0, 0)
                liveDelta[segment] = (old.bytes + bytes, old.keys + keys)
            }
            /// The bytes a row stops or starts counting as live: its value
            /// record and its TTL refresh record.
            func account(_ row: Row, _ sign: Int64) {
                account(row.segment, sign * row.length, sign)
                if row.ttlLength > 0 { account(row.ttlSegment, sign * row.ttlLength, 0) }
            }
            for (key, change) in changes {
                let old = try currentRow(key)
                switch change {
                case let .put(loc):
                    if let old, old.latestSeq >= loc.latestSeq { continue }
                    upsertRow.bind(1, key)
                    upsertRow.bind(2, Int64(loc.segment))
                    upsertRow.bind(3, loc.offset)
                    upsertRow.bind(4, Int64(loc.length))
                    upsertRow.bind(5, Int64(bitPattern: loc.seq))
                    upsertRow.bind(6, loc.expiresAt)
                    bindRefresh(upsertRow, from: 7, loc.ttl)
                    try upsertRow.run()
                    account(Row(loc), 1)
                    valueDelta += Supersession.valueSize(recordLength: Int64(loc.length), keyCount: key.count)
                    if let old {
                        account(old, -1)
                        valueDelta -= Supersession.valueSize(recordLength: old.length, keyCount: key.count)
                    } else {
                        keyDelta += 1
                    }
                case let .renew(renewal):
                    // Only the value it renews, and only forward; the row's
                    // location stays (compaction may have moved it).
                    guard let old, old.valueSeq == renewal.valueSeq, old.latestSeq < renewal.record.seq else { continue }
                    renewRow.bind(1, key)
                    renewRow.bind(2, renewal.expiresAt)
                    bindRefresh(renewRow, from: 3, renewal.record)
                    try renewRow.run()
                    if old.ttlLength > 0 { account(old.ttlSegment, -old.ttlLength, 0) }
                    account(renewal.record.segment, Int64(renewal.record.length), 0)
                case let .delete(seq):
                    guard let old, old.latestSeq < seq else { continue }
                    try removeRow(key)
                    account(old, -1)
                    valueDelta -= Supersession.valueSize(recordLength: old.length, keyCount: key.count)
                    keyDelta -= 1
                case let .expire(seq):
                    // The expired record hides every older one, flushed or not.
                    guard let old, old.latestSeq <= seq else { continue }
                    try removeRow(key)
                    account(old, -1)
                    valueDelta -= Supersession.valueSize(recordLength: old.length, keyCount: key.count)
                    keyDelta -= 1
                }
            }
            for (segment, delta) in liveDelta where delta != (0, 0) {
                addSegmentLive.bind(1, Int64(segment))
                addSegmentLive.bind(2, delta.bytes)
                addSegmentLive.bind(3, delta.keys)
                try addSegmentLive.run()
            }
            for (segment, size) in segmentSizes {
                setSegmentSize.bind(1, Int64(segment))
                setSegmentSize.bind(2, size)
                try setSegmentSize.run()
            }
            if keyDelta != 0 {
                addKeyCount.bind(1, keyDelta)
                try addKeyCount.run()
            }
            if valueDelta != 0 {
                addValueBytes.bind(1, valueDelta)
                try addValueBytes.run()
            }
            if let checkpoint {
                writeCheckpoint.bind(1, Int64(checkpoint.segment))
                writeCheckpoint.bind(2, checkpoint.offset)
                writeCheckpoint.bind(3, Int64(bitPattern: maxSeq))
                try writeCheckpoint.run()
            }
            try commit(durable: durable)
        } catch {
            rollback(durable: durable)
            throw error
        }
    }

    /// Runs `body` in one index transaction (not durable on its own).
    func inTransaction(_ body: () throws -> Void) throws {
        try begin(durable: false)
        do {
            try body()
            try commit(durable: false)
        } catch {
            rollback(durable: false)
            throw error
        }
    }

    private func begin(durable: Bool) throws {
        try fs.indexWillCommit(path: db.path)
        if durable { try db.exec("PRAGMA synchronous=FULL") }
        try db.exec("BEGIN IMMEDIATE")
    }

    private func commit(durable: Bool) throws {
        try db.exec("COMMIT")
        if durable { try db.exec("PRAGMA synchronous=NORMAL") }
        fs.indexCommitted(path: db.path, durable: durable)
    }

    private func rollback(durable: Bool) {
        try? db.exec("ROLLBACK")
        if durable { try? db.exec("PRAGMA synchronous=NORMAL") }
    }

    /// Ids of segments the index says hold live records (values or TTL
    /// refreshes).
    func segmentsWithLiveKeys() throws -> [UInt64] {
        let stmt = try db.prepare("SELECT id FROM segments WHERE live_keys > 0 OR live_bytes > 0")
        var ids: [UInt64] = []
        while try stmt.step() { ids.append(UInt64(stmt.int64(0))) }
        return ids
    }

    /// A compaction's index change, in one transaction: rows still pointing
    /// at a copied record move to its copy (a row a newer write changed
    /// meanwhile is left alone, so the write wins); rows of expired records
    /// being dropped go; the old segments' rows go and the new ones' come.
    ///
    /// - Returns: how many rows moved and how many expired rows were removed.
    func commitCompaction(
        id: UInt64, moves: [CompactionMove], drops: [CompactionMove], newSegments: [(id: UInt64, size: Int64)],
        oldSegments: [UInt64]
    ) throws -> (moved: Int, dropped: Int) {
        let move = try db.prepare("UPDATE keydir SET segment = ?1, offset = ?2 WHERE key = ?3 AND segment = ?4 AND offset = ?5")
        let moveRefresh = try db.prepare("""
            UPDATE keydir SET ttl_segment = ?1, ttl_offset = ?2
            WHERE key = ?3 AND ttl_segment = ?4 AND ttl_offset = ?5 AND ttl_length > 0
            """)
        // A drop is of the row as compaction saw it expired: a TTL refresh
        // (or any newer record) since keeps it.
        let drop = try db.prepare(
            "DELETE FROM keydir WHERE key = ?1 AND segment = ?2 AND offset = ?3 AND max(seq, ttl_seq) = ?4")
        let stillThere = try db.prepare("SELECT 1 FROM keydir WHERE key = ?1 AND segment = ?2 AND offset = ?3")
        let deleteSegment = try db.prepare("DELETE FROM segments WHERE id = ?1")
        let insertSegment = try db.prepare("INSERT OR REPLACE INTO segments(id, size_bytes, live_bytes, live_keys) VALUES (?1, ?2, ?3, ?4)")
        // Durable before the inputs are unlinked (rule 3).
        try begin(durable: true)
        do {
            var live: [UInt64: (bytes: Int64, keys: Int64)] = [:]
            var moved = 0, dropped = 0
            var droppedValueBytes: Int64 = 0
            // Drops first: a refresh record copied for a key whose row goes
            // is then not counted live.
            for d in drops {
                drop.bind(1, d.key)
                drop.bind(2, Int64(d.oldSegment))
                drop.bind(3, d.oldOffset)
                drop.bind(4, Int64(bitPattern: d.new.latestSeq))
                try drop.run()
                if db.changes == 0 {
                    // Kept by a newer record: fine if the row moved on; if it
                    // still points at the input, that input must not go.
                    stillThere.bind(1, d.key)
                    stillThere.bind(2, Int64(d.oldSegment))
                    stillThere.bind(3, d.oldOffset)
                    defer { stillThere.reset() }
                    if try stillThere.step() {
                        throw CompactionRaced.keyRenewed
                    }
                }
                if db.changes == 1 {
                    dropped += 1
                    droppedValueBytes += Supersession.valueSize(recordLength: Int64(d.new.length), keyCount: d.key.count)
                    // Its TTL refresh record, in a segment that stays, is dead now.
                    let refresh = d.new.ttl
                    if refresh.length > 0 && !oldSegments.contains(refresh.segment) {
                        addSegmentLive.bind(1, Int64(refresh.segment))
                        addSegmentLive.bind(2, -Int64(refresh.length))
                        addSegmentLive.bind(3, 0)
                        try addSegmentLive.run()
                    }
                }
            }
            for m in moves {
                let stmt = m.isRefresh ? moveRefresh : move
                stmt.bind(1, Int64(m.new.segment))
                stmt.bind(2, m.new.offset)
                stmt.bind(3, m.key)
                stmt.bind(4, Int64(m.oldSegment))
                stmt.bind(5, m.oldOffset)
                try stmt.run()
                if db.changes == 1 {
                    if !m.isRefresh { moved += 1 }
                    let old = live[m.new.segment] ?? (0, 0)
                    live[m.new.segment] = (old.bytes + Int64(m.new.length), old.keys + (m.isRefresh ? 0 : 1))
                }
            }
            for id in oldSegments {
                deleteSegment.bind(1, Int64(id))
                try deleteSegment.run()
            }
            for segment in newSegments {
                let l = live[segment.id] ?? (0, 0)
                insertSegment.bind(1, Int64(segment.id))
                insertSegment.bind(2, segment.size)
                insertSegment.bind(3, l.bytes)
                insertSegment.bind(4, l.keys)
                try insertSegment.run()
            }
            let marker = try db.prepare("INSERT OR REPLACE INTO meta(name, value) VALUES ('compaction_committed', ?1)")
            marker.bind(1, Int64(bitPattern: id))
            try marker.run()
            if dropped > 0 {
                addKeyCount.bind(1, Int64(-dropped))
                try addKeyCount.run()
                addValueBytes.bind(1, -droppedValueBytes)
                try addValueBytes.run()
            }
            try commit(durable: true)
            return (moved, dropped)
        } catch {
            rollback(durable: true)
            throw error
        }
    }

    /// Moves the WAL into the database file and syncs it.
    func walCheckpoint() {
        if (try? db.exec("PRAGMA wal_checkpoint(TRUNCATE)")) != nil {
            fs.indexCommitted(path: db.path, durable: true)
        }
    }

    /// The key's row as a location, through the writer connection (replay
    /// resolves TTL refresh records against it).
    func location(of key: [UInt8]) throws -> RecordLocation? {
        let stmt = try lookupLocation ?? db.prepare("SELECT \(Self.locationColumns) FROM keydir WHERE key = ?1")
        lookupLocation = stmt
        stmt.bind(1, key)
        defer { stmt.reset() }
        guard try stmt.step() else { return nil }
        return Self.location(stmt, from: 0)
    }
    private var lookupLocation: SQLiteStatement?

    /// What `apply` needs of a row: where its live bytes are, and its seqs.
    struct Row {
        var segment: UInt64
        var length: Int64
        /// The newest record's seq (value or TTL refresh).
        var latestSeq: UInt64
        var valueSeq: UInt64
        var ttlSegment: UInt64
        var ttlLength: Int64

        init(segment: UInt64, length: Int64, latestSeq: UInt64, valueSeq: UInt64, ttlSegment: UInt64, ttlLength: Int64) {
            self.segment = segment
            self.length = length
            self.latestSeq = latestSeq
            self.valueSeq = valueSeq
            self.ttlSegment = ttlSegment
            self.ttlLength = ttlLength
        }

        init(_ loc: RecordLocation) {
            self.init(segment: loc.segment, length: Int64(loc.length), latestSeq: loc.latestSeq, valueSeq: loc.seq,
                      ttlSegment: loc.ttl.segment, ttlLength: Int64(loc.ttl.length))
        }
    }

    private func currentRow(_ key: [UInt8]) throws -> Row? {
        selectRow.bind(1, key)
        defer { selectRow.reset() }
        guard try selectRow.step() else { return nil }
        return Row(segment: UInt64(selectRow.int64(0)), length: selectRow.int64(1),
                   latestSeq: UInt64(bitPattern: selectRow.int64(2)), valueSeq: UInt64(bitPattern: selectRow.int64(3)),
                   ttlSegment: UInt64(selectRow.int64(4)), ttlLength: selectRow.int64(5))
    }

    private func bindRefresh(_ stmt: SQLiteStatement, from column: Int32, _ record: RefreshRecord) {
        stmt.bind(column, Int64(bitPattern: record.seq))
        stmt.bind(column + 1, Int64(record.segment))
        stmt.bind(column + 2, record.offset)
        stmt.bind(column + 3, Int64(record.length))
    }

    /// The columns every full row read selects, in `RecordLocation` order.
    static let locationColumns = "segment, offset, length, seq, expires_at, ttl_seq, ttl_segment, ttl_offset, ttl_length"

    /// A `RecordLocation` from `locationColumns` starting at `first`.
    static func location(_ stmt: SQLiteStatement, from first: Int32) -> RecordLocation {
        RecordLocation(
            segment: UInt64(stmt.int64(first)), offset: stmt.int64(first + 1), length: Int(stmt.int64(first + 2)),
            seq: UInt64(bitPattern: stmt.int64(first + 3)), expiresAt: stmt.int64(first + 4),
            ttl: RefreshRecord(seq: UInt64(bitPattern: stmt.int64(first + 5)), segment: UInt64(stmt.int64(first + 6)),
                               offset: stmt.int64(first + 7), length: Int(stmt.int64(first + 8))))
    }

    private func removeRow(_ key: [UInt8]) throws {
        deleteRow.bind(1, key)
        try deleteRow.run()
    }

}

/// A read-only connection with its prepared statements.
final class IndexReader: @unchecked Sendable {
    private let db: SQLiteConnection
    private let lookupRow: SQLiteStatement
    private let scanBounded: SQLiteStatement
    private let scanOpen: SQLiteStatement
    private let segmentsStmt: SQLiteStatement
    private let keyCountStmt: SQLiteStatement
    private let valueBytesStmt: SQLiteStatement

    init(path: String) throws {
        db = try SQLiteConnection(path: path, readOnly: true)
        lookupRow = try db.prepare("SELECT \(IndexWriter.locationColumns) FROM keydir WHERE key = ?1")
        let scan = """
            SELECT key, seq, expires_at, length FROM keydir
            WHERE key > ?1 AND key >= ?2 %@ AND (expires_at = 0 OR expires_at > ?4)
            ORDER BY key LIMIT ?5
            """
        scanBounded = try db.prepare(scan.replacingFirst("%@", with: "AND key < ?3"))
        scanOpen = try db.prepare(scan.replacingFirst("%@", with: "AND ?3 IS NULL"))
        segmentsStmt = try db.prepare("SELECT id, size_bytes, live_bytes, live_keys FROM segments ORDER BY id")
        keyCountStmt = try db.prepare("SELECT value FROM meta WHERE name = 'key_count'")
        valueBytesStmt = try db.prepare("SELECT value FROM meta WHERE name = 'value_bytes'")
    }

    /// Runs `body`'s reads against one snapshot of the index: without it,
    /// each statement sees the latest commit, so a flush landing between two
    /// of them (say, a key count and a lookup) mixes two states.
    func inSnapshot<T>(_ body: () throws -> T) throws -> T {
        try db.exec("BEGIN DEFERRED")
        defer { try? db.exec("COMMIT") }
        return try body()
    }

    func lookup(_ key: [UInt8]) throws -> RecordLocation? {
        lookupRow.bind(1, key)
        defer { lookupRow.reset() }
        guard try lookupRow.step() else { return nil }
        return IndexWriter.location(lookupRow, from: 0)
    }

    /// Keys in key order with `prefix`, strictly after `after`, unexpired at `now`.
    func scan(prefix: [UInt8], after: [UInt8], limit: Int, now: Int64) throws -> [KeyInfo] {
        let upper = Self.prefixUpperBound(prefix)
        let stmt = upper == nil ? scanOpen : scanBounded
        stmt.bind(1, after)
        stmt.bind(2, prefix)
        if let upper { stmt.bind(3, upper) }
        stmt.bind(4, now)
        stmt.bind(5, Int64(limit))
        defer { stmt.reset() }
        var out: [KeyInfo] = []
        while try stmt.step() {
            let key = stmt.blob(0)
            let expires = stmt.int64(2)
            out.append(KeyInfo(
                key: key, seq: UInt64(bitPattern: stmt.int64(1)), expiresAt: expires == 0 ? nil : expires,
                valueSize: Supersession.valueSize(recordLength: Int(stmt.int64(3)), keyCount: key.count)))
        }
        return out
    }

    struct SegmentRow: Sendable { var id: UInt64; var size: Int64; var liveBytes: Int64; var liveKeys: Int64 }

    func segments() throws -> [SegmentRow] {
        defer { segmentsStmt.reset() }
        var rows: [SegmentRow] = []
        while try segmentsStmt.step() {
            rows.append(SegmentRow(id: UInt64(segmentsStmt.int64(0)), size: segmentsStmt.int64(1),
                                   liveBytes: segmentsStmt.int64(2), liveKeys: segmentsStmt.int64(3)))
        }
        return rows
    }

    /// Keys whose record expired at or before `now`, oldest expiry first.
    func expired(now: Int64, limit: Int) throws -> [([UInt8], RecordLocation)] {
        let stmt = try cachedExpiredStatement()
        stmt.bind(1, now)
        stmt.bind(2, Int64(limit))
        defer { stmt.reset() }
        var out: [([UInt8], RecordLocation)] = []
        while try stmt.step() {
            out.append((stmt.blob(0), IndexWriter.location(stmt, from: 1)))
        }
        return out
    }

    private var expiredStmt: SQLiteStatement?
    private func cachedExpiredStatement() throws -> SQLiteStatement {
        if let expiredStmt { return expiredStmt }
        let stmt = try db.prepare("""
            SELECT key, \(IndexWriter.locationColumns) FROM keydir
            WHERE expires_at > 0 AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2
            """)
        expiredStmt = stmt
        return stmt
    }

    func keyCount() throws -> Int64 {
        defer { keyCountStmt.reset() }
        return try keyCountStmt.step() ? keyCountStmt.int64(0) : 0
    }

    /// Rows whose value or TTL refresh record starts in `[from, to)` of a
    /// segment. A full scan (keydir has no index on segment): used only when
    /// compaction meets damaged bytes.
    func countRows(segment: UInt64, from: Int64, to: Int64) throws -> Int {
        let stmt = try db.prepare("""
            SELECT count(*) FROM keydir WHERE (segment = ?1 AND offset >= ?2 AND offset < ?3)
              OR (ttl_segment = ?1 AND ttl_length > 0 AND ttl_offset >= ?2 AND ttl_offset < ?3)
            """)
        stmt.bind(1, Int64(segment))
        stmt.bind(2, from)
        stmt.bind(3, to)
        return try stmt.step() ? Int(stmt.int64(0)) : 0
    }

    /// Bytes of the values of the keys in the index.
    func valueBytes() throws -> Int64 {
        defer { valueBytesStmt.reset() }
        return try valueBytesStmt.step() ? valueBytesStmt.int64(0) : 0
    }

    /// The smallest key greater than every key starting with `prefix`, or nil
    /// when there is none (empty prefix, or all 0xFF).
    static func prefixUpperBound(_ prefix: [UInt8]) -> [UInt8]? {
        var bound = prefix
        while let last = bound.last {
            if last < 0xFF {
                bound[bound.count - 1] = last + 1
                return bound
            }
            bound.removeLast()
        }
        return nil
    }
}

/// A small pool of read connections; each is used by one thread at a time.
final class IndexReaderPool: @unchecked Sendable {
    private let path: String
    private let lock = PlainLock()
    private var idle: [IndexReader] = []
    private let maxIdle: Int

    init(path: String, maxIdle: Int) {
        self.path = path
        self.maxIdle = max(1, maxIdle)
    }

    func withReader<T>(_ body: (IndexReader) throws -> T) throws -> T {
        let reader = try lock.withLock { idle.popLast() } ?? IndexReader(path: path)
        defer {
            lock.withLock { if idle.count < maxIdle { idle.append(reader) } }
        }
        return try body(reader)
    }

    func drain() {
        lock.withLock { idle.removeAll() }
    }

    /// Whether SQLite's reads could be made never-waiting in this process
    /// (see `CSQLiteNoWait.h`); installed before the first connection opens.
    static let canLookUpWithoutWaiting: Bool = logkv_sqlite_install_nowait_reads() > 0

    /// `lookup` for event loops: `.some(answer)` when every page it needed
    /// was in memory; nil when it would have waited on the disk, no idle
    /// connection was at hand (opening one is file I/O), or the lookup failed
    /// (the blocking path then reports the real error).
    func lookupWithoutWaiting(_ key: [UInt8]) -> RecordLocation?? {
        guard Self.canLookUpWithoutWaiting, let reader = lock.withLock({ idle.popLast() }) else { return nil }
        defer { lock.withLock { idle.append(reader) } }
        logkv_sqlite_nowait_begin()
        defer { logkv_sqlite_nowait_end() }
        do {
            return .some(try reader.lookup(key))
        } catch {
            return nil
        }
    }
}

extension String {
    func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let range = range(of: target) else { return self }
        return replacingCharacters(in: range, with: replacement)
    }
}
