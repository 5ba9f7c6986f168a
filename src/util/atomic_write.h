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

/* Streaming form, for content produced piece by piece: open, append any number of times, then
 * commit (fsync + rename) or abort (the temporary is removed). Both commit and abort free f;
 * after a failed append, call abort. */
typedef struct mt_atomic_file mt_atomic_file;
mt_atomic_file *mt_atomic_open(const char *path, mt_err *err);
int mt_atomic_append(mt_atomic_file *f, const void *data, size_t len, mt_err *err);
int mt_atomic_commit(mt_atomic_file *f, mt_err *err);
void mt_atomic_abort(mt_atomic_file *f);

/* Commit that never replaces: the file is linked to its name only if the name is free, atomically
 * (link(2)), so writers of separate processes picking the same new name cannot overwrite each
 * other. 1 when the name was taken (the temporary is removed; nothing written), else as
 * mt_atomic_commit. On a filesystem without hard links it falls back to rename after checking
 * the name is free (not atomic there). Frees f. */
int mt_atomic_commit_new(mt_atomic_file *f, mt_err *err);
/* One buffer, committed with mt_atomic_commit_new: 0, 1 (name taken) or -1. */
int mt_atomic_write_new(const char *path, const void *data, size_t len, mt_err *err);

#endif
