/* Atomic file writes: the data goes to a temporary file in the destination's folder, which is
 * fsync'ed, then renamed over the destination (and the folder fsync'ed), so a reader sees either
 * the old file or the complete new one, never a torn write, even if the process dies midway.
 * The temporary file is removed on any failure. Errors name the path and the system call. */
#ifndef MT_UTIL_ATOMIC_WRITE_H
#define MT_UTIL_ATOMIC_WRITE_H

#include <stddef.h>

#include "util/err.h"

typedef struct mt_write_chunk {
    const void *data;
    size_t len;
} mt_write_chunk;

/* Writes the n chunks, in order, as the whole content of path (mode 0644). */
int mt_atomic_write_chunks(const char *path, const mt_write_chunk *chunks, int n, mt_err *err);
/* One buffer. */
int mt_atomic_write(const char *path, const void *data, size_t len, mt_err *err);

#endif
