#if canImport(Glibc)
import Glibc
#endif
import CSQLite
import CSQLiteNoWait

/// A thin wrapper over one sqlite3 connection.
///
/// Thread-safety: a connection and its statements must be used by one thread
/// at a time; the owner (flusher, read pool) guarantees that.
final class SQLiteConnection: @unchecked Sendable {
    let handle: OpaquePointer
    let path: String

    init(path: String, readOnly: Bool = false) throws {
        _ = IndexReaderPool.canLookUpWithoutWaiting  // before the first connection opens
        var db: OpaquePointer?
        let flags = (readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE))
            | SQLITE_OPEN_NOMUTEX
        if !readOnly {
            // SQLite would create the file 0644 (less the umask), and its
            // journal and WAL files take the database file's mode: made
            // here first, owner only, like the segments.
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            if fd >= 0 { close(fd) }
        }
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            if let db { sqlite3_close_v2(db) }
            throw LogKVError.index(code: rc, message: "\(path): \(message)")
        }
        self.handle = db
        self.path = path
        logkv_sqlite_set_busy_handler(db)
    }

    deinit { sqlite3_close_v2(handle) }

    func exec(_ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            let message = err.map { String(cString: $0) } ?? "error"
            sqlite3_free(err)
            throw LogKVError.index(code: rc, message: message)
        }
    }

    func prepare(_ sql: String) throws -> SQLiteStatement {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc) }
        return SQLiteStatement(stmt, connection: self)
    }

    /// Runs a query returning one integer (e.g. a PRAGMA).
    func scalarInt(_ sql: String) throws -> Int64? {
        let stmt = try prepare(sql)
        return try stmt.step() ? stmt.int64(0) : nil
    }

    /// Rows changed by the last statement.
    var changes: Int { Int(sqlite3_changes(handle)) }

    func error(_ rc: Int32) -> LogKVError {
        .index(code: rc, message: String(cString: sqlite3_errmsg(handle)))
    }
}

/// A prepared statement, reused across calls; finalized in `deinit`.
final class SQLiteStatement: @unchecked Sendable {
    let handle: OpaquePointer
    unowned let connection: SQLiteConnection

    init(_ handle: OpaquePointer, connection: SQLiteConnection) {
        self.handle = handle
        self.connection = connection
    }

    deinit { sqlite3_finalize(handle) }

    func bind(_ index: Int32, _ value: Int64) {
        sqlite3_bind_int64(handle, index, value)
    }

    func bind(_ index: Int32, _ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { buf in
            // A zero-length blob must still bind as a blob, not NULL.
            sqlite3_bind_blob(handle, index, buf.baseAddress ?? UnsafeRawPointer(bitPattern: 1),
                              Int32(buf.count), logkv_sqlite_transient())
        }
    }

    /// Steps once: true if a row is available, false when done.
    func step() throws -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        let err = connection.error(rc)
        sqlite3_reset(handle)
        throw err
    }

    /// Steps to completion, ignoring rows.
    func run() throws {
        while try step() {}
        reset()
    }

    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

    func text(_ column: Int32) -> String {
        sqlite3_column_text(handle, column).map { String(cString: $0) } ?? ""
    }

    func blob(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(handle, column))
        guard count > 0, let ptr = sqlite3_column_blob(handle, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: ptr, count: count))
    }
}
