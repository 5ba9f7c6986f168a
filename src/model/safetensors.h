/* safetensors checkpoints: read into private memory (what the CPU computes with), or mapped (what a
 * device uploads from).
 *
 * mt_checkpoint_open() accepts a folder holding `model.safetensors`, or sharded files listed by
 * `model.safetensors.index.json` (its "weight_map"), or a path to one .safetensors file. Every
 * header is validated before anything is returned: 8-byte length within the file, JSON that
 * parses, known dtype, data_offsets inside the data section, not overlapping, and
 * dtype size x product(shape) == byte length, unique names across shards. Errors name the file
 * and the tensor. Tensors of a valid safetensors dtype the kernels cannot read (I64, F8_E4M3, ...)
 * are kept, flagged `supported = false` with `dtype = MT_DTYPE_COUNT`; mt_checkpoint_get() refuses
 * them. Header names must be UTF-8, as the format says. Tensor data pointers point into the file's
 * memory (below), except for supported tensors whose data is not aligned to their element size (the
 * format allows it), which are copied into aligned memory at open; both stay valid until
 * mt_checkpoint_close().
 *
 * A file's memory is either a read-only mapping of it (MT_CHECKPOINT_MAPPED: shared page cache,
 * nothing read until used, but a process writing the file in place changes the tensors or, when it
 * truncates it, makes reading them fault), or anonymous memory the file was read into at open
 * (MT_CHECKPOINT_PRIVATE: what a model computes with; later writes to the files change nothing).
 * A private open refuses files that do not fit the host's available memory, and logs a warning
 * naming each float tensor (the first few) holding NaN or infinite values, counted as it is read.
 * Format reference: https://github.com/huggingface/safetensors (README, "Format"). */
#ifndef MT_MODEL_SAFETENSORS_H
#define MT_MODEL_SAFETENSORS_H

#include <stdbool.h>
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
    const void *data;     /* inside its file's memory (or an aligned copy) */
    size_t nbytes;
    const char *file;     /* path of the file holding it */
    const char *dtype_name; /* safetensors spelling: "BF16", "I64", "F8_E4M3", ... */
    bool supported;       /* dtype is F32, F16 or BF16 */
} mt_tensor_info;

typedef struct mt_checkpoint mt_checkpoint; /* opaque */

typedef enum mt_checkpoint_mode { MT_CHECKPOINT_MAPPED, MT_CHECKPOINT_PRIVATE } mt_checkpoint_mode;

/* Mapped. */
int mt_checkpoint_open(mt_checkpoint **out, const char *path, mt_err *err);
int mt_checkpoint_open_mode(mt_checkpoint **out, const char *path, mt_checkpoint_mode mode, mt_err *err);
/* Mapped: 0 when every file still has the size and modification time it had at open (its tensors are
 * what was validated), else an error naming the file. Private (or NULL): 0. */
int mt_checkpoint_unchanged(const mt_checkpoint *ck, mt_err *err);
void mt_checkpoint_close(mt_checkpoint *ck);

/* NULL when absent. Lookup is O(log n) or better. */
const mt_tensor_info *mt_checkpoint_find(const mt_checkpoint *ck, const char *name);
int mt_checkpoint_count(const mt_checkpoint *ck);
const mt_tensor_info *mt_checkpoint_at(const mt_checkpoint *ck, int i); /* name order */

/* Like find, but a missing tensor or an unsupported dtype is an error naming it. */
int mt_checkpoint_get(const mt_checkpoint *ck, const char *name, const mt_tensor_info **out,
                      mt_err *err);
const char *mt_tensor_dtype_string(const mt_tensor_info *t);
bool mt_tensor_dtype_supported(const mt_tensor_info *t);

#endif
