/* A slow disk for tests, preloaded into a node (LD_PRELOAD): while the file named by
 * SLOWFSYNC_FILE exists, fsync() and fdatasync() first sleep the milliseconds it
 * holds, then do the real call. The node's own code path is the real one: the same
 * os.fsync on the same fd, in the commit loop or in raft/pool.Lane's thread.
 * Built by tests/integration/faults.py (slow_fsync_lib) with the machine's cc. The
 * control file is read with plain syscalls (no malloc) on every call: ~3 syscalls,
 * nothing against an fsync. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long delay_ms(void) {
    const char *path = getenv("SLOWFSYNC_FILE");
    char buf[32];
    ssize_t n;
    int fd;
    if (path == NULL || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return strtol(buf, NULL, 10);
}

static void slow(void) {
    int saved = errno;
    long ms = delay_ms();
    if (ms > 0) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
            ;
    }
    errno = saved;
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    slow();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    slow();
    return real(fd);
}
