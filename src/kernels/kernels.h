/* Compute kernels: the operations the forward pass is made of, over host float32 activations
 * and weights read in place in their checkpoint dtype (F32, F16, BF16) with float32
 * accumulation. The CPU implementation picks its SIMD level once at start-up (AVX-512 with
 * BF16, AVX2+FMA, or portable scalar) and spreads work over a persistent thread pool.
 * A GPU backend implements the same operations (see ARCHITECTURE.md). */
#ifndef MT_KERNELS_KERNELS_H
#define MT_KERNELS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "util/dtype.h"

/* A weight matrix in row-major [rows, cols] layout: rows are output features. */
typedef struct mt_mat {
    mt_dtype dtype;
    const void *data;
    int rows;
    int cols;
} mt_mat;

typedef enum mt_isa { MT_ISA_SCALAR, MT_ISA_AVX2, MT_ISA_AVX512, MT_ISA_AVX512BF16 } mt_isa;

/* Starts the pool with n_threads workers (<= 0: one per online CPU) and picks the best ISA the CPU
 * has, unless the environment variable MOETRACE_ISA (scalar|avx2|avx512|avx512bf16) caps it. */
void mt_kernels_init(int n_threads);
void mt_kernels_shutdown(void);
int mt_kernels_threads(void);
mt_isa mt_kernels_isa(void);
const char *mt_isa_name(mt_isa isa);
/* Forces an ISA (tests use this to compare every path); returns the previous one. Only ISAs the
 * CPU supports are accepted; others leave the setting unchanged. */
mt_isa mt_kernels_set_isa(mt_isa isa);

/* Runs fn(ctx, i) for every i in [0, n) on the pool and returns when all are done. */
void mt_parallel_for(int n, void (*fn)(void *ctx, int i), void *ctx);

/* y[n, w->rows] = x[n, w->cols] . w^T, float32 accumulation. x and y must not overlap.
 * Batch invariant: each output element is computed by one fixed operation sequence that
 * depends only on its x row and w row, never on n, the row's place in the batch or the
 * thread count. */
void mt_matmul(float *y, const float *x, int n, const mt_mat *w);

/* One product of a group (see mt_matmul_group). */
typedef struct mt_matmul_op {
    float *y;
    const float *x;
    int n;
    const mt_mat *w;
} mt_matmul_op;

/* Runs count independent products as one parallel loop: one dispatch for all of them, their
 * tasks balanced together (e.g. q/k/v of a layer, or gate/up of every active expert). Each
 * result is bitwise what mt_matmul gives for the same operands. No op's y may overlap another
 * op's x or y. */
void mt_matmul_group(const mt_matmul_op *ops, int count);

/* Where the keys and values of one sequence, one layer and one key/value head live in a paged
 * cache: position p is row p % block_rows of block blocks[p / block_rows]; that row starts
 * block * block_stride + offset + (p % block_rows) * row_stride floats into k (and into v). */
typedef struct mt_kv_pages {
    const float *k, *v;
    const int32_t *blocks;
    int block_rows;
    int row_stride;
    size_t block_stride;
    size_t offset;
} mt_kv_pages;

#define MT_ATTN_MAX_HEAD_DIM 512

/* Attention of one token for the g query heads that share one key/value head:
 * out[h] = softmax(scale * q[h] . K^T) V over the positions [first, last] of kv, q and out
 * [g, head_dim] (head_dim <= MT_ATTN_MAX_HEAD_DIM). The positions are visited in the cache's
 * blocks in order with an online softmax; the operation order depends only on q, head_dim and
 * [first, last], never on the batch or the thread split. */
void mt_attend(float *out, const float *q, int g, int head_dim, float scale, const mt_kv_pages *kv, int first,
               int last);

/* y[i] = x[i] / rms(x[i]) * weight, rows of length dim; y may equal x. */
void mt_rmsnorm(float *y, const float *x, const float *weight, int n, int dim, float eps);

/* In-place rotary embedding (the rotate-half convention of Hugging Face Llama-style models) on
 * n rows of n_heads x head_dim values, row r at position pos[r]: pair i turns by pos[r] * inv_freq[i]
 * ([head_dim / 2], model/rope_config.h), its cos and sin scaled by scale (yarn's attention factor). */
void mt_rope(float *x, int n, int n_heads, int head_dim, const int32_t *pos, const float *inv_freq, float scale);

/* gate[i] = silu(gate[i]) * up[i] for n values. */
void mt_silu_mul(float *gate, const float *up, int64_t n);

/* In-place softmax over n values. */
void mt_softmax(float *x, int n);

#endif
