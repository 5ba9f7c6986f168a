/* Private interface between the attention dispatcher (attention.c) and its per-ISA kernels
 * (attention.c's portable one, attention_avx512.c).
 *
 * A kernel runs mt_attend for at most MT_ATTN_GROUP heads; the dispatcher cuts bigger groups.
 * Contract: positions [first, last] are taken in chunks that end at the cache's block
 * boundaries; for each chunk, every head's scores, their maximum, the rescale of the running
 * state, the weights and the weighted sum of values are computed in one fixed order. */
#ifndef MT_KERNELS_CPU_ATTENTION_IMPL_H
#define MT_KERNELS_CPU_ATTENTION_IMPL_H

#include "kernels/kernels.h"

#define MT_ATTN_GROUP 8
#define MT_ATTN_CHUNK 64 /* most positions per chunk (blocks larger than this are cut) */

typedef void (*mt_attn_kernel)(float *out, const float *q, int g, int head_dim, float scale, const mt_kv_pages *kv,
                               int first, int last);

void mt_attend_scalar(float *out, const float *q, int g, int head_dim, float scale, const mt_kv_pages *kv, int first,
                      int last);
/* head_dim must be a multiple of 16. */
void mt_attend_avx512(float *out, const float *q, int g, int head_dim, float scale, const mt_kv_pages *kv, int first,
                      int last);

/* Rows of the chunk starting at position p: at most up to the end of p's block, to last and to
 * MT_ATTN_CHUNK. */
static inline int mt_attn_chunk_rows(const mt_kv_pages *kv, int p, int last) {
    int end = (p / kv->block_rows + 1) * kv->block_rows;
    if (end > last + 1) end = last + 1;
    if (end - p > MT_ATTN_CHUNK) end = p + MT_ATTN_CHUNK;
    return end - p;
}

static inline size_t mt_attn_row(const mt_kv_pages *kv, int p) {
    return (size_t)kv->blocks[p / kv->block_rows] * kv->block_stride + kv->offset +
           (size_t)(p % kv->block_rows) * (size_t)kv->row_stride;
}

#endif
