#define _POSIX_C_SOURCE 200809L
#include "util/atomic_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Folder part of path ("." when it has none) into buf. */
static void dir_of(const char *path, char *buf, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(buf, n, ".");
    } else if (slash == path) {
        snprintf(buf, n, "/");
    } else {
        snprintf(buf, n, "%.*s", (int)(slash - path), path);
    }
}

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int mt_atomic_write_chunks(const char *path, const mt_write_chunk *chunks, int n, mt_err *err) {
    if (!path || !*path) return mt_errf(err, "atomic write: empty path");
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) return mt_errf(err, "%s: out of memory", path);
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return mt_errf(err, "%s: cannot create a temporary file beside it: %s", path, strerror(e));
    }
    const char *what = NULL;
    if (fchmod(fd, 0644) != 0) what = "fchmod";
    for (int i = 0; !what && i < n; i++)
        if (chunks[i].len && write_all(fd, chunks[i].data, chunks[i].len) != 0) what = "write";
    if (!what && fsync(fd) != 0) what = "fsync";
    int e = errno;
    if (close(fd) != 0 && !what) {
        what = "close";
        e = errno;
    }
    if (!what && rename(tmp, path) != 0) {
        what = "rename";
        e = errno;
    }
    if (what) {
        unlink(tmp);
        free(tmp);
        return mt_errf(err, "%s: %s failed: %s", path, what, strerror(e));
    }
    free(tmp);
    /* Make the rename itself durable. Failure here is not fatal: the file is complete. */
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    return 0;
}

int mt_atomic_write(const char *path, const void *data, size_t len, mt_err *err) {
    mt_write_chunk c = {data, len};
    return mt_atomic_write_chunks(path, &c, 1, err);
}
