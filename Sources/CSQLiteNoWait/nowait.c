#define _GNU_SOURCE
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>
#include <sqlite3.h>
#include "CSQLiteNoWait.h"

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);

static _Thread_local int nowait;
static pread_fn real_pread;
static pread_fn real_pread64;

static ssize_t read_nowait(int fd, void *buf, size_t count, off_t offset) {
    struct iovec iov = { buf, count };
    return preadv2(fd, &iov, 1, offset, RWF_NOWAIT);
}

static ssize_t nowait_pread(int fd, void *buf, size_t count, off_t offset) {
    return nowait ? read_nowait(fd, buf, count, offset) : real_pread(fd, buf, count, offset);
}

static ssize_t nowait_pread64(int fd, void *buf, size_t count, off_t offset) {
    return nowait ? read_nowait(fd, buf, count, offset) : real_pread64(fd, buf, count, offset);
}

int logkv_sqlite_install_nowait_reads(void) {
    sqlite3_vfs *vfs = sqlite3_vfs_find("unix");
    if (vfs == 0 || vfs->iVersion < 3 || vfs->xGetSystemCall == 0 || vfs->xSetSystemCall == 0) return 0;
    int replaced = 0;
    sqlite3_syscall_ptr current = vfs->xGetSystemCall(vfs, "pread");
    if (current != 0 && current != (sqlite3_syscall_ptr)nowait_pread) {
        real_pread = (pread_fn)current;
        if (vfs->xSetSystemCall(vfs, "pread", (sqlite3_syscall_ptr)nowait_pread) == SQLITE_OK) replaced++;
    }
    current = vfs->xGetSystemCall(vfs, "pread64");
    if (current != 0 && current != (sqlite3_syscall_ptr)nowait_pread64) {
        real_pread64 = (pread_fn)current;
        if (vfs->xSetSystemCall(vfs, "pread64", (sqlite3_syscall_ptr)nowait_pread64) == SQLITE_OK) replaced++;
    }
    return replaced;
}

static int busy(void *unused, int count) {
    (void)unused;
    if (nowait || count >= 1000) return 0;
    usleep(count < 10 ? 1000 : 10000);
    return 1;
}

void logkv_sqlite_set_busy_handler(sqlite3 *db) { sqlite3_busy_handler(db, busy, 0); }

void logkv_sqlite_nowait_begin(void) { nowait = 1; }
void logkv_sqlite_nowait_end(void) { nowait = 0; }
