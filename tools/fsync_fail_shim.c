/*
 * fsync_fail_shim.c - an LD_PRELOAD library that makes fsync and fdatasync
 * fail on demand, for the durability tests (tests/test_wal.c fsync-fail,
 * tests/test_crash.sh).
 *
 * While the file named by $ATP_FSYNC_FAIL_FILE exists:
 *   - fsync() and fdatasync() fail with EIO;
 *   - every IORING_OP_FSYNC queued on an io_uring is pointed at descriptor
 *     -1 just before io_uring_submit*() hands it to the kernel, so it
 *     completes with -EBADF (io_uring requests never pass through libc;
 *     liburing's submit calls are the last place user space sees them).
 * Create the file to start failing, remove it to stop: a test can arm it at
 * the moment it chooses.
 *
 * It knows the public layout of liburing's struct io_uring (2.x) and
 * nothing about atpd.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <liburing.h>

/* dlsym returns an object pointer; copy it into a function pointer. */
#define LOAD(var, name)                                                                            \
    do {                                                                                           \
        void *p_ = dlsym(RTLD_NEXT, name);                                                         \
        memcpy(&(var), &p_, sizeof(var));                                                          \
    } while (0)

static int armed(void)
{
    const char *f = getenv("ATP_FSYNC_FAIL_FILE");
    return f && *f && access(f, F_OK) == 0;
}

int fsync(int fd)
{
    static int (*real)(int);
    if (armed()) {
        errno = EIO;
        return -1;
    }
    if (!real)
        LOAD(real, "fsync");
    return real(fd);
}

int fdatasync(int fd)
{
    static int (*real)(int);
    if (armed()) {
        errno = EIO;
        return -1;
    }
    if (!real)
        LOAD(real, "fdatasync");
    return real(fd);
}

/* Unsubmitted entries are [sqe_head, sqe_tail) until liburing flushes them. */
static void poison(struct io_uring *ring)
{
    if (!armed())
        return;
    for (unsigned i = ring->sq.sqe_head; i != ring->sq.sqe_tail; i++) {
        struct io_uring_sqe *sqe = &ring->sq.sqes[i & ring->sq.ring_mask];
        if (sqe->opcode == IORING_OP_FSYNC)
            sqe->fd = -1;
    }
}

int io_uring_submit(struct io_uring *ring)
{
    static int (*real)(struct io_uring *);
    if (!real)
        LOAD(real, "io_uring_submit");
    poison(ring);
    return real(ring);
}

int io_uring_submit_and_wait(struct io_uring *ring, unsigned wait_nr)
{
    static int (*real)(struct io_uring *, unsigned);
    if (!real)
        LOAD(real, "io_uring_submit_and_wait");
    poison(ring);
    return real(ring, wait_nr);
}
