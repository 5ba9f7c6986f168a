/* AVX2 + FMA + F16C matrix-product kernels (see matmul_impl.h): the same structure as
 * matmul_avx512.c with 8-wide vectors and the smaller 16-register file. Weights are widened
 * to float32 exactly; all products use float32 FMAs.
 *
 * Batch invariance: every output y[t][r], in every kernel and tile shape, is computed by the
 * same operation sequence: one 8-lane accumulator, one FMA per 8 columns in column order (the
 * last block zero-padded), then the fixed reduction tree of hsum8. Tiles only interleave
 * independent sequences, so the result does not depend on the batch size, the row's position
 * in it, or the thread split. */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/matmul_impl.h"

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

/* 8 consecutive weights of type dt at p, as float32. */
INL __m256 load8(const int dt, const void *p) {
    if (dt == MT_F32) return _mm256_loadu_ps(p);
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (dt == MT_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

/* The first n (< 8) weights at p, zero-padded to 8. */
INL __m256 load8_tail(const int dt, const unsigned char *p, int n) {
    unsigned char tmp[32] __attribute__((aligned(32))) = {0};
    memcpy(tmp, p, (size_t)n * (dt == MT_F32 ? 4 : 2));
    return load8(dt, tmp);
}

/* Fixed reduction tree: halves 128 + 128, 64 + 64, 32 + 32. */
INL float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define MAX_T 2
#define MAX_R 6

/* The T x R tile y[t * ldy + r] = dot(x row t, w row r): x rows at stride ldx floats, w rows
 * of dtype dt at stride wld bytes. */
INL void dot_tile(const int dt, const int T, const int R, float *y, int ldy, const float *x, int ldx,
                  const unsigned char *w, size_t wld, int cols) {
    const size_t es = dt == MT_F32 ? 4 : 2;
    __m256 acc[MAX_T][MAX_R];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) acc[t][r] = _mm256_setzero_ps();
    int c = 0;
    for (; c + 8 <= cols; c += 8) {
        __m256 xv[MAX_T];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) xv[t] = _mm256_loadu_ps(x + (size_t)t * ldx + c);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m256 wv = load8(dt, w + (size_t)r * wld + (size_t)c * es);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) acc[t][r] = _mm256_fmadd_ps(xv[t], wv, acc[t][r]);
        }
    }
    if (c < cols) {
        const int rem = cols - c;
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 xv[MAX_T];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) xv[t] = _mm256_maskload_ps(x + (size_t)t * ldx + c, m);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m256 wv = load8_tail(dt, w + (size_t)r * wld + (size_t)c * es, rem);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) acc[t][r] = _mm256_fmadd_ps(xv[t], wv, acc[t][r]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) y[(size_t)t * ldy + r] = hsum8(acc[t][r]);
}

/* Rows [r0, r1) against tokens [t0, t1) in tiles of T tokens x R rows (leftover rows one at a
 * time); w rows start at wb (row r0) with stride wld bytes. */
INL void tiles(const int dt, const int T, const int R, float *y, int ldy, const float *x, int ldx,
               const unsigned char *wb, size_t wld, int cols, int t0, int t1, int nr) {
    int r = 0;
    for (; r + R <= nr; r += R) {
        int t = t0;
        for (; t + T <= t1; t += T)
            dot_tile(dt, T, R, y + (size_t)t * ldy + r, ldy, x + (size_t)t * ldx, ldx, wb + (size_t)r * wld, wld, cols);
        for (; t < t1; t++)
            dot_tile(dt, 1, R, y + (size_t)t * ldy + r, ldy, x + (size_t)t * ldx, ldx, wb + (size_t)r * wld, wld, cols);
    }
    for (; r < nr; r++) {
        int t = t0;
        for (; t + T <= t1; t += T)
            dot_tile(dt, T, 1, y + (size_t)t * ldy + r, ldy, x + (size_t)t * ldx, ldx, wb + (size_t)r * wld, wld, cols);
        for (; t < t1; t++)
            dot_tile(dt, 1, 1, y + (size_t)t * ldy + r, ldy, x + (size_t)t * ldx, ldx, wb + (size_t)r * wld, wld, cols);
    }
}

/* ---- gemv: few tokens; weights streamed straight from memory ---------------------------- */

#define GEMV_FOR_DTYPE(NAME, DT)                                                                        \
    static TGT void NAME(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) {   \
        const int cols = w->cols, ldy = w->rows, nt = t1 - t0, nr = r1 - r0;                            \
        const size_t wld = (size_t)cols * (DT == MT_F32 ? 4 : 2);                                       \
        const unsigned char *wb = (const unsigned char *)w->data + (size_t)r0 * wld;                   \
        float *yb = y + r0;                                                                             \
        if (nt == 1) tiles(DT, 1, 4, yb, ldy, x, cols, wb, wld, cols, t0, t1, nr);                      \
        else tiles(DT, 2, 4, yb, ldy, x, cols, wb, wld, cols, t0, t1, nr);                              \
    }

GEMV_FOR_DTYPE(gemv_f32, MT_F32)
GEMV_FOR_DTYPE(gemv_f16, MT_F16)
GEMV_FOR_DTYPE(gemv_bf16, MT_BF16)

TGT void mt_gemv_avx2(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) {
    switch (w->dtype) {
    case MT_F32: gemv_f32(y, x, w, t0, t1, r0, r1); break;
    case MT_BF16: gemv_bf16(y, x, w, t0, t1, r0, r1); break;
    default: gemv_f16(y, x, w, t0, t1, r0, r1); break;
    }
}

/* ---- gemm: many tokens; a panel of GM_R rows widened to float32 once, reused by all tokens */

#define GM_T 2
#define GM_R 6
#define PACK_COLS 4096 /* widest row packed (a 96 KiB stack panel); wider rows are read in place */

TGT void mt_gemm_avx2(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) {
    const int cols = w->cols, ldy = w->rows;
    const int dt = w->dtype;
    const size_t es = dt == MT_F32 ? 4 : 2, wld = (size_t)cols * es;
    if (dt == MT_F32 || cols > PACK_COLS) {
        const unsigned char *wb = (const unsigned char *)w->data + (size_t)r0 * wld;
        switch (dt) {
        case MT_F32: tiles(MT_F32, GM_T, GM_R, y + r0, ldy, x, cols, wb, wld, cols, t0, t1, r1 - r0); break;
        case MT_BF16: tiles(MT_BF16, GM_T, GM_R, y + r0, ldy, x, cols, wb, wld, cols, t0, t1, r1 - r0); break;
        default: tiles(MT_F16, GM_T, GM_R, y + r0, ldy, x, cols, wb, wld, cols, t0, t1, r1 - r0); break;
        }
        return;
    }
    float wp[GM_R * PACK_COLS] __attribute__((aligned(32)));
    for (int rb = r0; rb < r1; rb += GM_R) {
        const int nr = r1 - rb < GM_R ? r1 - rb : GM_R;
        for (int i = 0; i < nr; i++) {
            const unsigned char *src = (const unsigned char *)w->data + (size_t)(rb + i) * wld;
            float *dst = wp + (size_t)i * cols;
            int c = 0;
            if (dt == MT_BF16)
                for (; c + 8 <= cols; c += 8) _mm256_storeu_ps(dst + c, load8(MT_BF16, src + (size_t)c * 2));
            else
                for (; c + 8 <= cols; c += 8) _mm256_storeu_ps(dst + c, load8(MT_F16, src + (size_t)c * 2));
            if (c < cols) {
                float tmp[8];
                _mm256_storeu_ps(tmp, load8_tail(dt, src + (size_t)c * 2, cols - c));
                memcpy(dst + c, tmp, (size_t)(cols - c) * sizeof(float));
            }
        }
        /* the widened values are exact, so the panel gives the same products as the weights */
        tiles(MT_F32, GM_T, GM_R, y + rb, ldy, x, cols, (const unsigned char *)wp, (size_t)cols * 4, cols, t0, t1, nr);
    }
}
