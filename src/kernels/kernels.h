/* Compute kernels: the operations the forward pass is made of, over host float32 activations
 * and weights read in place in their checkpoint dtype (F32, F16, BF16) with float32
 * accumulation. The CPU implementation picks its SIMD level once at start-up (AVX-512 with
 * BF16, AVX2+FMA, or portable scalar) and spreads work over a persistent thread pool.
 * A GPU backend implements the same operations (see ARCHITECTURE.md). */
#ifndef MT_KERNELS_KERNELS_H
#define MT_KERNELS_KERNELS_H

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

/* y[n, w->rows] = x[n, w->cols] . w^T, float32 accumulation. x and y must not overlap. */
void mt_matmul(float *y, const float *x, int n, const mt_mat *w);

/* y[i] = x[i] / rms(x[i]) * weight, rows of length dim; y may equal x. */
void mt_rmsnorm(float *y, const float *x, const float *weight, int n, int dim, float eps);

/* In-place rotary embedding (the rotate-half convention of Hugging Face Llama-style models) on
 * n rows of n_heads x head_dim values, row r at position pos[r]. */
void mt_rope(float *x, int n, int n_heads, int head_dim, const int32_t *pos, float theta);

/* gate[i] = silu(gate[i]) * up[i] for n values. */
void mt_silu_mul(float *gate, const float *up, int64_t n);

/* In-place softmax over n values. */
void mt_softmax(float *x, int n);

#endif
