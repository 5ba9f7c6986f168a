/* NumPy .npy files (format version 1.0, little-endian, C order) for float32 and int32 arrays. */
#ifndef MT_UTIL_NPY_H
#define MT_UTIL_NPY_H

#include <stdint.h>

#include "util/err.h"

typedef enum mt_npy_type { MT_NPY_F32, MT_NPY_I32 } mt_npy_type;

/* Writes atomically (temp file + rename). */
int mt_npy_write(const char *path, mt_npy_type type, const void *data, int ndim, const int64_t *shape, mt_err *err);

typedef struct mt_npy {
    mt_npy_type type;
    int ndim;
    int64_t shape[8];
    int64_t count;   /* elements */
    void *data;      /* malloc'd */
} mt_npy;

int mt_npy_read(const char *path, mt_npy *out, mt_err *err);
void mt_npy_free(mt_npy *a);

#endif
