import CSQLite

/// The baseline: the same keys and values stored directly in one SQLite
/// table, tuned the way a careful user would (WAL, synchronous=NORMAL,
/// prepared statements, batched transactions).
/// Thread-safety: callers serialise access (one connection).
final class SQLiteBaseline: @unchecked Sendable {
    private var db: OpaquePointer?
    private var insert: OpaquePointer?
    private var select: OpaquePointer?
    private var inBatch = 0
    let batchSize: Int

    init(path: String, cacheBytes: Int, batchSize: Int = 10_000) {
        self.batchSize = batchSize
        precondition(sqlite3_open(path, &db) == SQLITE_OK)
        exec("PRAGMA journal_mode=WAL")
        exec("PRAGMA synchronous=NORMAL")
        exec("PRAGMA cache_size=-\(max(1, cacheBytes / 1024))")
        exec("CREATE TABLE IF NOT EXISTS kv(key BLOB PRIMARY KEY, value BLOB NOT NULL, expires_at INTEGER NOT NULL DEFAULT 0)")
        sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO kv(key, value) VALUES (?1, ?2)", -1, &insert, nil)
        sqlite3_prepare_v2(db, "SELECT value, expires_at FROM kv WHERE key = ?1", -1, &select, nil)
    }

    func exec(_ sql: String) {
        precondition(sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK, sql)
    }

    func put(_ key: [UInt8], _ value: [UInt8]) {
        if inBatch == 0 { exec("BEGIN") }
        key.withUnsafeBytes { sqlite3_bind_blob(insert, 1, $0.baseAddress, Int32($0.count), nil) }
        value.withUnsafeBytes { sqlite3_bind_blob(insert, 2, $0.baseAddress, Int32($0.count), nil) }
        precondition(sqlite3_step(insert) == SQLITE_DONE)
        sqlite3_reset(insert)
        inBatch += 1
        if inBatch >= batchSize { commit() }
    }

    func commit() {
        if inBatch > 0 { exec("COMMIT") }
        inBatch = 0
    }

    func get(_ key: [UInt8]) -> [UInt8]? {
        key.withUnsafeBytes { sqlite3_bind_blob(select, 1, $0.baseAddress, Int32($0.count), nil) }
        defer { sqlite3_reset(select) }
        guard sqlite3_step(select) == SQLITE_ROW else { return nil }
        let n = Int(sqlite3_column_bytes(select, 0))
        guard n > 0, let p = sqlite3_column_blob(select, 0) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }

    func close() {
        commit()
        sqlite3_finalize(insert)
        sqlite3_finalize(select)
        exec("PRAGMA wal_checkpoint(TRUNCATE)")
        sqlite3_close(db)
        db = nil
    }
}
