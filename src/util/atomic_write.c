#define _POSIX_C_SOURCE 200809L
#include "util/atomic_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct mt_atomic_file {
    int fd;
    char *path; /* destination */
    char *tmp;  /* temporary beside it */
};

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

mt_atomic_file *mt_atomic_open(const char *path, mt_err *err) {
    if (!path || !*path) {
        mt_errf(err, "atomic write: empty path");
        return NULL;
    }
    size_t plen = strlen(path);
    mt_atomic_file *f = calloc(1, sizeof *f);
    if (f) {
        f->path = strdup(path);
        f->tmp = malloc(plen + 16);
    }
    if (!f || !f->path || !f->tmp) {
        if (f) {
            free(f->path);
            free(f->tmp);
        }
        free(f);
        mt_errf(err, "%s: out of memory", path);
        return NULL;
    }
    snprintf(f->tmp, plen + 16, "%s.tmp.XXXXXX", path);
    f->fd = mkstemp(f->tmp);
    if (f->fd < 0 || fchmod(f->fd, 0644) != 0) {
        int e = errno;
        if (f->fd >= 0) {
            close(f->fd);
            unlink(f->tmp);
        }
        free(f->path);
        free(f->tmp);
        free(f);
        mt_errf(err, "%s: cannot create a temporary file beside it: %s", path, strerror(e));
        return NULL;
    }
    return f;
}

int mt_atomic_append(mt_atomic_file *f, const void *data, size_t len, mt_err *err) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(f->fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return mt_errf(err, "%s: write failed: %s", f->path, strerror(errno));
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void free_file(mt_atomic_file *f) {
    free(f->path);
    free(f->tmp);
    free(f);
}

void mt_atomic_abort(mt_atomic_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    free_file(f);
}

/* fsync + close of the temporary; "fsync" or "close" on failure (errno in *e), else NULL. */
static const char *finish_tmp(mt_atomic_file *f, int *e) {
    const char *what = NULL;
    if (fsync(f->fd) != 0) {
        what = "fsync";
        *e = errno;
    }
    if (close(f->fd) != 0 && !what) {
        what = "close";
        *e = errno;
    }
    f->fd = -1;
    return what;
}

/* Makes the new name durable (failure is not fatal: the file is complete), then frees f. */
static void sync_dir_and_free(mt_atomic_file *f) {
    char dir[4096];
    dir_of(f->path, dir, sizeof dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free_file(f);
}

int mt_atomic_commit(mt_atomic_file *f, mt_err *err) {
    int e = 0;
    const char *what = finish_tmp(f, &e);
    if (!what && rename(f->tmp, f->path) != 0) {
        what = "rename";
        e = errno;
    }
    if (what) {
        mt_errf(err, "%s: %s failed: %s", f->path, what, strerror(e));
        mt_atomic_abort(f);
        return -1;
    }
    sync_dir_and_free(f);
    return 0;
}

int mt_atomic_commit_new(mt_atomic_file *f, mt_err *err) {
    int e = 0;
    const char *what = finish_tmp(f, &e);
    if (!what && link(f->tmp, f->path) != 0) {
        e = errno;
        if (e == EEXIST) {
            mt_errf(err, "%s: already exists", f->path);
            mt_atomic_abort(f);
            return 1;
        }
        struct stat st;
        if (e == EPERM || e == EOPNOTSUPP || e == ENOSYS || e == EMLINK) { /* no hard links here */
            if (lstat(f->path, &st) == 0) {
                mt_errf(err, "%s: already exists", f->path);
                mt_atomic_abort(f);
                return 1;
            }
            if (rename(f->tmp, f->path) == 0) {
                sync_dir_and_free(f);
                return 0;
            }
            e = errno;
            what = "rename";
        } else {
            what = "link";
        }
    }
    if (what) {
        mt_errf(err, "%s: %s failed: %s", f->path, what, strerror(e));
        mt_atomic_abort(f);
        return -1;
    }
    unlink(f->tmp); /* the file lives on under its name */
    sync_dir_and_free(f);
    return 0;
}

int mt_atomic_write_chunks(const char *path, const mt_write_chunk *chunks, int n, mt_err *err) {
    mt_atomic_file *f = mt_atomic_open(path, err);
    if (!f) return -1;
    for (int i = 0; i < n; i++) {
        if (chunks[i].len && mt_atomic_append(f, chunks[i].data, chunks[i].len, err) != 0) {
            mt_atomic_abort(f);
            return -1;
        }
    }
    return mt_atomic_commit(f, err);
}

int mt_atomic_write(const char *path, const void *data, size_t len, mt_err *err) {
    mt_write_chunk c = {data, len};
    return mt_atomic_write_chunks(path, &c, 1, err);
}

int mt_atomic_write_new(const char *path, const void *data, size_t len, mt_err *err) {
    mt_atomic_file *f = mt_atomic_open(path, err);
    if (!f) return -1;
    if (len && mt_atomic_append(f, data, len, err) != 0) {
        mt_atomic_abort(f);
        return -1;
    }
    return mt_atomic_commit_new(f, err);
}
