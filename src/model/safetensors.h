/* safetensors checkpoints, read in place through mmap.
 *
 * mt_checkpoint_open() accepts a folder holding `model.safetensors`, or sharded files listed by
 * `model.safetensors.index.json` (its "weight_map"), or a path to one .safetensors file. Every
 * header is validated before anything is returned: 8-byte length within the file, JSON that
 * parses, known dtype, data_offsets inside the data section, not overlapping, and
 * dtype size x product(shape) == byte length. Errors name the file and the tensor.
 * Tensor data pointers point into the mapping and stay valid until mt_checkpoint_close(). */
#ifndef MT_MODEL_SAFETENSORS_H
#define MT_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "util/dtype.h"
#include "util/err.h"

#define MT_MAX_DIMS 4

typedef struct mt_tensor_info {
    const char *name;     /* owned by the checkpoint */
    mt_dtype dtype;
    int ndim;
    int64_t shape[MT_MAX_DIMS];
    const void *data;     /* inside the mmap of its file */
    size_t nbytes;
    const char *file;     /* path of the file holding it */
} mt_tensor_info;

typedef struct mt_checkpoint mt_checkpoint; /* opaque */

int mt_checkpoint_open(mt_checkpoint **out, const char *path, mt_err *err);
void mt_checkpoint_close(mt_checkpoint *ck);

/* NULL when absent. Lookup is O(log n) or better. */
const mt_tensor_info *mt_checkpoint_find(const mt_checkpoint *ck, const char *name);
int mt_checkpoint_count(const mt_checkpoint *ck);
const mt_tensor_info *mt_checkpoint_at(const mt_checkpoint *ck, int i);

#endif
