/* AVX-512F matrix-product kernels (see matmul_impl.h). Compiled with function-level target
 * attributes, so the rest of the build needs no -m flags; only called after cpu_features.c
 * has confirmed AVX-512F and OS support for the zmm state.
 *
 * Weights are widened to float32 exactly (BF16: shift left 16; F16: VCVTPH2PS) and multiplied
 * with float32 FMAs, so activations keep their full float32 precision. The AVX512_BF16 level
 * runs these same kernels (VDPBF16PS would need the activations split into bf16 halves).
 *
 * Batch invariance: every output y[t][r], in every kernel and tile shape, is computed by the
 * same operation sequence (dot16 below): one 16-lane accumulator, one FMA per 16 columns in
 * column order (the last block zero-padded), then the fixed reduction tree of hsum16. Tiles
 * only interleave independent sequences, so the result does not depend on the batch size,
 * the row's position in it, or the thread split. */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/simd_avx512.h"

#define TGT MT_AVX512_TGT
#define INL static inline __attribute__((always_inline)) TGT

/* 16 consecutive weights of type dt at p, as float32. */
INL __m512 load16(const int dt, const void *p) {
    if (dt == MT_F32) return _mm512_loadu_ps(p);
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    if (dt == MT_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* The first n (< 16) weights at p, zero-padded to 16. */
INL __m512 load16_tail(const int dt, const unsigned char *p, int n) {
    unsigned char tmp[64] __attribute__((aligned(64))) = {0};
    memcpy(tmp, p, (size_t)n * (dt == MT_F32 ? 4 : 2));
    return load16(dt, tmp);
}

#define MAX_T 4
#define MAX_R 8

/* The T x R tile out[t][r] = dot(x row t, w row r): x rows at stride ldx floats, weight row r
 * of dtype dt at w[r]. */
INL void dot_tile(const int dt, const int T, const int R, float out[MAX_T][MAX_R], const float *x, int ldx,
                  const unsigned char *const w[MAX_R], int cols) {
    const size_t es = dt == MT_F32 ? 4 : 2;
    __m512 acc[MAX_T][MAX_R];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc[t][r] = _mm512_setzero_ps();
    int c = 0;
    for (; c + 16 <= cols; c += 16) {
        __m512 xv[MAX_T];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) xv[t] = _mm512_loadu_ps(x + (size_t)t * ldx + c);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m512 wv = load16(dt, w[r] + (size_t)c * es);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) acc[t][r] = _mm512_fmadd_ps(xv[t], wv, acc[t][r]);
        }
    }
    if (c < cols) {
        const int rem = cols - c;
        const __mmask16 m = (__mmask16)((1u << rem) - 1);
        __m512 xv[MAX_T];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) xv[t] = _mm512_maskz_loadu_ps(m, x + (size_t)t * ldx + c);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m512 wv = load16_tail(dt, w[r] + (size_t)c * es, rem);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) acc[t][r] = _mm512_fmadd_ps(xv[t], wv, acc[t][r]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) out[t][r] = mt_hsum16(acc[t][r]);
}

/* Tokens [t0, t1) against the R weight rows w[] (output columns yc[]): tiles of T tokens, then
 * the leftover tokens one at a time. */
INL void token_tiles(const int dt, const int T, const int R, float *y, int ldy, const int yc[MAX_R],
                     const float *x, int ldx, const unsigned char *const w[MAX_R], int cols, int t0, int t1) {
    float out[MAX_T][MAX_R];
    int t = t0;
    for (; t + T <= t1; t += T) {
        dot_tile(dt, T, R, out, x + (size_t)t * ldx, ldx, w, cols);
#pragma GCC unroll 4
        for (int i = 0; i < T; i++)
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) y[(size_t)(t + i) * ldy + yc[r]] = out[i][r];
    }
    for (; t < t1; t++) {
        dot_tile(dt, 1, R, out, x + (size_t)t * ldx, ldx, w, cols);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) y[(size_t)t * ldy + yc[r]] = out[0][r];
    }
}

/* Rows [r0, r1) against tokens [t0, t1) in tiles of T tokens x R consecutive rows (leftover
 * rows one at a time). */
INL void tiles(const int dt, const int T, const int R, float *y, int ldy, const float *x, int ldx,
               const unsigned char *wbase, size_t wld, int cols, int t0, int t1, int r0, int r1) {
    int r = r0;
    for (; r + R <= r1; r += R) {
        const unsigned char *w[MAX_R];
        int yc[MAX_R];
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            w[i] = wbase + (size_t)(r + i) * wld;
            yc[i] = r + i;
        }
        token_tiles(dt, T, R, y, ldy, yc, x, ldx, w, cols, t0, t1);
    }
    for (; r < r1; r++) {
        const unsigned char *w[MAX_R] = {wbase + (size_t)r * wld};
        const int yc[MAX_R] = {r};
        token_tiles(dt, T, 1, y, ldy, yc, x, ldx, w, cols, t0, t1);
    }
}

/* ---- gemv: few tokens; weights streamed straight from memory ---------------------------- */

/* Rows [r0, r1) are cut into S runs of consecutive rows and a tile takes the i-th row of every
 * run, so each of the S weight streams advances through memory in address order. (Tiles of
 * adjacent rows interleave several streams inside one page, which the hardware prefetchers
 * follow poorly: about half the bandwidth on rows of 1-2 KiB, see docs/PERF_NOTES.md.) */
INL void run_tiles(const int dt, const int T, const int S, float *y, int ldy, const float *x, int ldx,
                   const unsigned char *wbase, size_t wld, int cols, int t0, int t1, int r0, int r1) {
    const int len = (r1 - r0) / S;
    for (int i = 0; i < len; i++) {
        const unsigned char *w[MAX_R];
        int yc[MAX_R];
#pragma GCC unroll 8
        for (int k = 0; k < S; k++) {
            yc[k] = r0 + k * len + i;
            w[k] = wbase + (size_t)yc[k] * wld;
        }
        token_tiles(dt, T, S, y, ldy, yc, x, ldx, w, cols, t0, t1);
    }
    tiles(dt, T, 1, y, ldy, x, ldx, wbase, wld, cols, t0, t1, r0 + S * len, r1);
}

#ifndef GEMV_RUNS
#define GEMV_RUNS 4
#endif

#define GEMV_FOR_DTYPE(NAME, DT)                                                                        \
    static TGT void NAME(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) {   \
        const int cols = w->cols, ldy = w->rows, nt = t1 - t0;                                          \
        const size_t wld = (size_t)cols * (DT == MT_F32 ? 4 : 2);                                       \
        const unsigned char *wb = w->data;                                                              \
        if (nt == 1) run_tiles(DT, 1, GEMV_RUNS, y, ldy, x, cols, wb, wld, cols, t0, t1, r0, r1);       \
        else if (nt == 2) run_tiles(DT, 2, 4, y, ldy, x, cols, wb, wld, cols, t0, t1, r0, r1);          \
        else if (nt == 3) run_tiles(DT, 3, 4, y, ldy, x, cols, wb, wld, cols, t0, t1, r0, r1);          \
        else run_tiles(DT, 4, 4, y, ldy, x, cols, wb, wld, cols, t0, t1, r0, r1);                       \
    }

GEMV_FOR_DTYPE(gemv_f32, MT_F32)
GEMV_FOR_DTYPE(gemv_f16, MT_F16)
GEMV_FOR_DTYPE(gemv_bf16, MT_BF16)

TGT void mt_gemv_avx512(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) {
    switch (w->dtype) {
    case MT_F32: gemv_f32(y, x, w, t0, t1, r0, r1); break;
    case MT_BF16: gemv_bf16(y, x, w, t0, t1, r0, r1); break;
    default: gemv_f16(y, x, w, t0, t1, r0, r1); break;
    }
}

/* ---- gemm: many tokens; a panel of GM_R rows widened to float32 once, reused by all tokens */

#define GM_T 4
#define GM_R 6
#define PACK_COLS 4096 /* widest row packed (a 96 KiB stack panel); wider rows are read in place */

TGT void mt_gemm_avx512(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) {
    const int cols = w->cols, ldy = w->rows;
    const int dt = w->dtype;
    const size_t es = dt == MT_F32 ? 4 : 2, wld = (size_t)cols * es;
    if (dt == MT_F32 || cols > PACK_COLS) {
        const unsigned char *wb = w->data;
        switch (dt) {
        case MT_F32: tiles(MT_F32, GM_T, GM_R, y, ldy, x, cols, wb, wld, cols, t0, t1, r0, r1); break;
        case MT_BF16: tiles(MT_BF16, GM_T, GM_R, y, ldy, x, cols, wb, wld, cols, t0, t1, r0, r1); break;
        default: tiles(MT_F16, GM_T, GM_R, y, ldy, x, cols, wb, wld, cols, t0, t1, r0, r1); break;
        }
        return;
    }
    float wp[GM_R * PACK_COLS] __attribute__((aligned(64)));
    for (int rb = r0; rb < r1; rb += GM_R) {
        const int nr = r1 - rb < GM_R ? r1 - rb : GM_R;
        for (int i = 0; i < nr; i++) {
            const unsigned char *src = (const unsigned char *)w->data + (size_t)(rb + i) * wld;
            float *dst = wp + (size_t)i * cols;
            int c = 0;
            if (dt == MT_BF16)
                for (; c + 16 <= cols; c += 16) _mm512_storeu_ps(dst + c, load16(MT_BF16, src + (size_t)c * 2));
            else
                for (; c + 16 <= cols; c += 16) _mm512_storeu_ps(dst + c, load16(MT_F16, src + (size_t)c * 2));
            if (c < cols) {
                float tmp[16];
                _mm512_storeu_ps(tmp, load16_tail(dt, src + (size_t)c * 2, cols - c));
                memcpy(dst + c, tmp, (size_t)(cols - c) * sizeof(float));
            }
        }
        /* the widened values are exact, so the panel gives the same products as the weights */
        tiles(MT_F32, GM_T, GM_R, y + rb, ldy, x, cols, (const unsigned char *)wp, (size_t)cols * 4, cols, t0, t1, 0, nr);
    }
}
