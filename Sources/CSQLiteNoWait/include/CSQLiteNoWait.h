#ifndef LOGKV_CSQLITE_NOWAIT_H
#define LOGKV_CSQLITE_NOWAIT_H

/// Index lookups that never wait on the disk, for event loops.
///
/// SQLite's unix VFS lets a program replace the system calls it makes
/// (`xSetSystemCall`). We replace its positioned reads with ones that, while
/// the calling thread is inside `logkv_sqlite_nowait_begin/end`, read with
/// `preadv2(RWF_NOWAIT)`: a page not in the page cache fails the read with
/// EAGAIN, so the statement fails with SQLITE_IOERR_READ instead of blocking,
/// and the caller retries the lookup on a thread that may block. Outside
/// those calls (every other thread, every other statement) reads are the
/// plain calls SQLite would have made.

/// Installs the replacement once per process. Returns how many read calls
/// were replaced; 0 means this SQLite reads some other way and no lookup may
/// be attempted without waiting.
int logkv_sqlite_install_nowait_reads(void);

/// Installs on `db` a busy handler that waits up to about 10 s for a lock
/// (like `sqlite3_busy_timeout`), except on a never-waiting thread, where
/// it gives up at once.
void logkv_sqlite_set_busy_handler(struct sqlite3 *db);

/// Marks the calling thread's SQLite reads as never-waiting until `end`.
void logkv_sqlite_nowait_begin(void);
void logkv_sqlite_nowait_end(void);

#endif
