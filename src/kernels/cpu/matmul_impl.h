/* Private interface between the matrix-product dispatcher (matmul.c) and the per-ISA kernels
 * (matmul_scalar.c, matmul_avx2.c, matmul_avx512.c).
 *
 * Both kernel kinds compute the block y[t, r] for tokens t in [t0, t1) and rows r in [r0, r1)
 * of y[n, w->rows] = x[n, w->cols] . W^T, where x has row stride w->cols and y row stride
 * w->rows; every y element of the block is written (never read before being written).
 * Contract (batch invariance): within one ISA, both kinds compute each y[t, r] with the same
 * float operation sequence, which depends only on x row t, W row r and cols, never on the
 * block bounds; so a token's output row is bitwise the same whatever the batch and split.
 *  - gemv: register tiles of dot products that stream weight rows straight from memory; meant
 *    for few tokens (decode), memory-bound.
 *  - gemm: widens a panel of a few weight rows to float32 once into a stack buffer and runs
 *    the same dot-product tiles over every token of the block from it. */
#ifndef MT_KERNELS_CPU_MATMUL_IMPL_H
#define MT_KERNELS_CPU_MATMUL_IMPL_H

#include "kernels/kernels.h"

typedef void (*mt_mm_kernel)(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);

/* Rows per gemm task: a multiple of every kernel's row tile (AVX-512 6, AVX2 6). */
#define MT_GEMM_RB 48

void mt_gemv_scalar(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);
void mt_gemm_scalar(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);
void mt_gemv_avx2(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);
void mt_gemm_avx2(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);
void mt_gemv_avx512(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);
void mt_gemm_avx512(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1);

#endif
