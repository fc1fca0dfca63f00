#ifndef LOGKV_CLINUX_SHIM_H
#define LOGKV_CLINUX_SHIM_H
// Linux calls that glibc declares only under _GNU_SOURCE, which Swift's
// Glibc module is not built with.
#include <sys/types.h>
#include <sys/uio.h>

ssize_t preadv2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags);

// Fail with EAGAIN instead of waiting for the disk (Linux 4.14+).
#define LOGKV_RWF_NOWAIT 0x00000008

/// A positioned read that never waits on the disk: -1 with errno EAGAIN when
/// the bytes are not in the page cache.
static inline ssize_t logkv_pread_nowait(int fd, void *buf, size_t count, off_t offset) {
    struct iovec iov = { buf, count };
    return preadv2(fd, &iov, 1, offset, LOGKV_RWF_NOWAIT);
}
#endif
