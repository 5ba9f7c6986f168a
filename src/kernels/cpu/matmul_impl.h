/* Private interface between the matrix-product dispatcher (matmul.c) and the per-ISA kernels
 * (matmul_scalar.c, matmul_avx2.c, matmul_avx512.c).
 *
 * Both kernel kinds compute the block y[t, r] for tokens t in [t0, t1) and rows r in [r0, r1)
 * of y[n, w->rows] = x[n, w->cols] . W^T, where x has row stride w->cols and y row stride
 * w->rows; every y element of the block is written (never read before being written).
 *  - gemv: dot products that stream each weight row once for all tokens of the block; meant
 *    for few tokens (decode), memory-bound.
 *  - gemm: packs panels of W (converted to float32, MT_GEMM_RB rows x MT_GEMM_KC columns,
 *    transposed so that consecutive rows are adjacent) into a cache-resident stack buffer
 *    (~64 KiB), then runs a register-blocked outer-product kernel (tokens x rows) that
 *    broadcasts activations straight from x, so each weight element fetched from memory
 *    serves every token of the block. */
#ifndef MT_KERNELS_CPU_MATMUL_IMPL_H
#define MT_KERNELS_CPU_MATMUL_IMPL_H

#include "kernels/kernels.h"

typedef void (*mt_mm_kernel)(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);

/* Rows per gemm panel: task row ranges should be multiples of it (except at the end). */
#define MT_GEMM_RB 64
/* Columns per packed panel. */
#ifndef MT_GEMM_KC
#define MT_GEMM_KC 256
#endif

void mt_gemv_scalar(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);
void mt_gemm_scalar(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);
void mt_gemv_avx2(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);
void mt_gemm_avx2(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);
void mt_gemv_avx512(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);
void mt_gemm_avx512(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);

#endif
