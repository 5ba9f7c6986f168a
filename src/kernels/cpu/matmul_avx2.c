/* AVX2 + FMA + F16C matrix-product kernels (see matmul_impl.h): the same structure as
 * matmul_avx512.c with 8-wide vectors and the smaller 16-register file. Weights are widened
 * to float32 exactly; all products use float32 FMAs. */
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

/* The first n (< 8) elements of type dt at p, zero-padded to 8. */
INL __m256 load8_tail(const int dt, const void *p, int n) {
    unsigned char tmp[32] __attribute__((aligned(32))) = {0};
    memcpy(tmp, p, (size_t)n * (dt == MT_F32 ? 4 : 2));
    return load8(dt, tmp);
}

INL float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- gemv: one weight row at a time, streamed once for all tokens of the block ------------ */

#define GV_T 2 /* tokens per pass over a row */

INL void gemv_row(const int dt, const int T, const int U, float *y, int ldy, const float *x, int ldx,
                  const unsigned char *w, int cols) {
    const size_t es = dt == MT_F32 ? 4 : 2;
    __m256 acc[GV_T][4];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
#pragma GCC unroll 4
        for (int u = 0; u < U; u++) acc[t][u] = _mm256_setzero_ps();
    int c = 0;
    for (; c + 8 * U <= cols; c += 8 * U) {
#pragma GCC unroll 4
        for (int u = 0; u < U; u++) {
            const __m256 wv = load8(dt, w + (size_t)(c + 8 * u) * es);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                acc[t][u] = _mm256_fmadd_ps(_mm256_loadu_ps(x + (size_t)t * ldx + c + 8 * u), wv, acc[t][u]);
        }
    }
    for (; c + 8 <= cols; c += 8) {
        const __m256 wv = load8(dt, w + (size_t)c * es);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[t][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + (size_t)t * ldx + c), wv, acc[t][0]);
    }
    if (c < cols) {
        const int rem = cols - c;
        const __m256 wv = load8_tail(dt, w + (size_t)c * es, rem);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            acc[t][0] = _mm256_fmadd_ps(load8_tail(MT_F32, x + (size_t)t * ldx + c, rem), wv, acc[t][0]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        __m256 a = acc[t][0];
#pragma GCC unroll 4
        for (int u = 1; u < U; u++) a = _mm256_add_ps(a, acc[t][u]);
        y[(size_t)t * ldy] = hsum8(a);
    }
}

#define GEMV_ROW(DT, T, U) \
    gemv_row(DT, T, U, y + (size_t)t * ldy + r, ldy, x + (size_t)t * cols, cols, wb + (size_t)r * wld, cols)

#define GEMV_FOR_DTYPE(NAME, DT)                                                                \
    static TGT void NAME(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) { \
        const int cols = w->cols, ldy = w->rows;                                                \
        const size_t wld = (size_t)cols * (DT == MT_F32 ? 4 : 2);                               \
        const unsigned char *wb = w->data;                                                      \
        for (int r = r0; r < r1; r++) {                                                         \
            for (int t = t0; t < t1;) {                                                         \
                if (t1 - t == 1) {                                                              \
                    GEMV_ROW(DT, 1, 4);                                                         \
                    t += 1;                                                                     \
                } else {                                                                        \
                    GEMV_ROW(DT, 2, 4);                                                         \
                    t += 2;                                                                     \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
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

/* ---- gemm: packed panels and a 6-token x 16-row register tile -------------------------- */

#define GM_T 6
#define GM_S 16

/* In-register transpose of an 8 x 8 float32 block: r[i] lane j <-> r[j] lane i (2x2 pairs by
 * unpack ps, 4x4 by unpack pd, then 128-bit halves by permute2f128). */
INL void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4g + j], half h: column 4h + j of rows 4g..4g+3 */
#pragma GCC unroll 2
    for (int g = 0; g < 2; g++) {
        const __m256d a0 = _mm256_castps_pd(t[4 * g]), a1 = _mm256_castps_pd(t[4 * g + 1]);
        const __m256d a2 = _mm256_castps_pd(t[4 * g + 2]), a3 = _mm256_castps_pd(t[4 * g + 3]);
        u[4 * g + 0] = _mm256_castpd_ps(_mm256_unpacklo_pd(a0, a2));
        u[4 * g + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a0, a2));
        u[4 * g + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(a1, a3));
        u[4 * g + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(a1, a3));
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);     /* column j: low halves */
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31); /* column 4 + j: high halves */
    }
}

/* Packs W[rb + s*GM_S + i][k0 + k] (i < GM_S, k < kc) as float32 into wp[s][k][i], for the
 * strips covering nr rows; rows past nr are zero. Works on 8 x 8 blocks transposed in
 * registers. */
INL void pack_w_dt(const int dt, float *wp, const mt_mat *w, int rb, int nr, int k0, int kc) {
    const int nstrips = (nr + GM_S - 1) / GM_S;
    const size_t es = dt == MT_F32 ? 4 : 2;
    const size_t wld = (size_t)w->cols * es;
    const unsigned char *base = (const unsigned char *)w->data + (size_t)rb * wld + (size_t)k0 * es;
    for (int s = 0; s < nstrips; s++) {
        float *dst = wp + (size_t)s * kc * GM_S;
        for (int v = 0; v < GM_S / 8; v++) {
            const int i0 = s * GM_S + 8 * v;
            const int nvalid = nr - i0 < 0 ? 0 : nr - i0 > 8 ? 8 : nr - i0;
            for (int k = 0; k < kc; k += 8) {
                const int ncol = kc - k < 8 ? kc - k : 8;
                __m256 r[8];
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) {
                    const unsigned char *src = base + (size_t)(i0 + i) * wld + (size_t)k * es;
                    r[i] = i >= nvalid ? _mm256_setzero_ps() : ncol == 8 ? load8(dt, src) : load8_tail(dt, src, ncol);
                }
                transpose8(r);
                for (int j = 0; j < ncol; j++) _mm256_store_ps(dst + (size_t)(k + j) * GM_S + 8 * v, r[j]);
            }
        }
    }
}

static TGT void pack_w(float *wp, const mt_mat *w, int rb, int nr, int k0, int kc) {
    switch (w->dtype) {
    case MT_F32: pack_w_dt(MT_F32, wp, w, rb, nr, k0, kc); break;
    case MT_BF16: pack_w_dt(MT_BF16, wp, w, rb, nr, k0, kc); break;
    default: pack_w_dt(MT_F16, wp, w, rb, nr, k0, kc); break;
    }
}

/* y[t][0..nrv) (+)= sum_k x[t * ldx + k] * wp[k][0..16) for t < nt; activations are broadcast
 * straight from their rows, tile slots past nt re-read row 0 and their sums are dropped. */
INL void gemm_tile(const int T, const float *wp, const float *x, int ldx, int kc, float *y, int ldy, int nt,
                   int nrv, int first) {
    __m256 a0[GM_T], a1[GM_T];
#pragma GCC unroll 6
    for (int t = 0; t < T; t++) a0[t] = a1[t] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const __m256 w0 = _mm256_load_ps(wp + (size_t)k * GM_S);
        const __m256 w1 = _mm256_load_ps(wp + (size_t)k * GM_S + 8);
        const float *xk = x + k;
#pragma GCC unroll 6
        for (int t = 0; t < T; t++) {
            const __m256 xb = _mm256_broadcast_ss(xk + (size_t)(t < nt ? t : 0) * ldx);
            a0[t] = _mm256_fmadd_ps(xb, w0, a0[t]);
            a1[t] = _mm256_fmadd_ps(xb, w1, a1[t]);
        }
    }
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nrv), idx);
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nrv - 8), idx);
    for (int t = 0; t < nt; t++) {
        float *yt = y + (size_t)t * ldy;
        __m256 v0 = a0[t], v1 = a1[t];
        if (!first) {
            v0 = _mm256_add_ps(v0, _mm256_maskload_ps(yt, m0));
            v1 = _mm256_add_ps(v1, _mm256_maskload_ps(yt + 8, m1));
        }
        _mm256_maskstore_ps(yt, m0, v0);
        _mm256_maskstore_ps(yt + 8, m1, v1);
    }
}

#define GM_T_SMALL 2 /* register tile for the last few tokens of a block */

static TGT void gemm_kernel(const float *wp, const float *x, int ldx, int kc, float *y, int ldy, int nt, int nrv,
                            int first) {
    if (nt <= GM_T_SMALL) gemm_tile(GM_T_SMALL, wp, x, ldx, kc, y, ldy, nt, nrv, first);
    else gemm_tile(GM_T, wp, x, ldx, kc, y, ldy, nt, nrv, first);
}

TGT void mt_gemm_avx2(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) {
    float wp[MT_GEMM_RB * MT_GEMM_KC] __attribute__((aligned(32)));
    const int cols = w->cols, ldy = w->rows;
    for (int rb = r0; rb < r1; rb += MT_GEMM_RB) {
        const int nr = r1 - rb < MT_GEMM_RB ? r1 - rb : MT_GEMM_RB;
        const int nstrips = (nr + GM_S - 1) / GM_S;
        for (int k0 = 0; k0 < cols; k0 += MT_GEMM_KC) {
            const int kc = cols - k0 < MT_GEMM_KC ? cols - k0 : MT_GEMM_KC;
            pack_w(wp, w, rb, nr, k0, kc);
            for (int tt = t0, nt; tt < t1; tt += nt) {
                /* full tiles; a short remainder goes in tiles of GM_T_SMALL */
                const int left = t1 - tt;
                nt = left > 2 * GM_T_SMALL ? (left < GM_T ? left : GM_T) : (left < GM_T_SMALL ? left : GM_T_SMALL);
                for (int s = 0; s < nstrips; s++) {
                    const int nrv = nr - s * GM_S < GM_S ? nr - s * GM_S : GM_S;
                    gemm_kernel(wp + (size_t)s * kc * GM_S, x + (size_t)tt * cols + k0, cols, kc, y + (size_t)tt * ldy + rb + s * GM_S, ldy,
                                nt, nrv, k0 == 0);
                }
            }
        }
    }
}
