/* AVX-512F matrix-product kernels (see matmul_impl.h). Compiled with function-level target
 * attributes, so the rest of the build needs no -m flags; only called after cpu_features.c
 * has confirmed AVX-512F and OS support for the zmm state.
 *
 * Weights are widened to float32 exactly (BF16: shift left 16; F16: VCVTPH2PS) and multiplied
 * with float32 FMAs, so activations keep their full float32 precision. The AVX512_BF16 level
 * therefore runs these same kernels: VDPBF16PS would need the activations split into two
 * bf16 halves (x = hi + lo) to stay accurate, i.e. two instructions per 32 products, the same
 * count as the widened FMAs of the packed gemm kernel, and on the development machine (AMD
 * Zen 5) VDPBF16PS issues at ~0.92x the FMA rate, so the split is slower and less exact. */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/matmul_impl.h"

#define TGT __attribute__((target("avx512f,avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

/* ---- loads ---------------------------------------------------------------------------- */

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

/* ---- gemv: few tokens, dot products streaming each weight row once --------------------- */

#define GV_T 4 /* tokens per tile */
/* One weight row against T tokens, U independent accumulators per token over the columns.
 * Rows are visited in memory order, so a task's weights are read as one sequential stream
 * (the friendliest pattern for the hardware prefetchers). */
INL void gemv_row(const int dt, const int T, const int U, float *y, int ldy, const float *x, int ldx,
                  const unsigned char *w, int cols) {
    const size_t es = dt == MT_F32 ? 4 : 2;
    __m512 acc[GV_T][4];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
#pragma GCC unroll 4
        for (int u = 0; u < U; u++) acc[t][u] = _mm512_setzero_ps();
    int c = 0;
    for (; c + 16 * U <= cols; c += 16 * U) {
#pragma GCC unroll 4
        for (int u = 0; u < U; u++) {
            const __m512 wv = load16(dt, w + (size_t)(c + 16 * u) * es);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                acc[t][u] = _mm512_fmadd_ps(_mm512_loadu_ps(x + (size_t)t * ldx + c + 16 * u), wv, acc[t][u]);
        }
    }
    for (; c + 16 <= cols; c += 16) {
        const __m512 wv = load16(dt, w + (size_t)c * es);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) acc[t][0] = _mm512_fmadd_ps(_mm512_loadu_ps(x + (size_t)t * ldx + c), wv, acc[t][0]);
    }
    if (c < cols) {
        const int rem = cols - c;
        const __mmask16 m = (__mmask16)((1u << rem) - 1);
        const __m512 wv = load16_tail(dt, w + (size_t)c * es, rem);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            acc[t][0] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + (size_t)t * ldx + c), wv, acc[t][0]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++) {
        __m512 a = acc[t][0];
#pragma GCC unroll 4
        for (int u = 1; u < U; u++) a = _mm512_add_ps(a, acc[t][u]);
        y[(size_t)t * ldy] = _mm512_reduce_add_ps(a);
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
                int T = t1 - t < GV_T ? t1 - t : GV_T;                                          \
                switch (T) {                                                                    \
                case 1: GEMV_ROW(DT, 1, 4); break;                                              \
                case 2: GEMV_ROW(DT, 2, 4); break;                                              \
                case 3: GEMV_ROW(DT, 3, 2); break;                                              \
                default: GEMV_ROW(DT, 4, 2); break;                                             \
                }                                                                               \
                t += T;                                                                         \
            }                                                                                   \
        }                                                                                       \
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

/* ---- gemm: packed weight panels and a 12-token x 32-row register tile ------------------ */

#ifndef GM_T
#define GM_T 12 /* tokens per register tile */
#define GM_V 2  /* zmm vectors of rows per strip */
#endif
#define GM_S (16 * GM_V) /* rows per strip */

/* In-register transpose of a 16 x 16 float32 block: r[i] lane j <-> r[j] lane i. Stages:
 * 2x2 within 64-bit pairs (unpack ps), 4x4 within 128-bit lanes (unpack pd), then 128-bit
 * lane exchanges across the four rows groups (shuffle_f32x4). */
INL void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4g + j], lane L: column 4L + j of rows 4g..4g+3 */
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        const __m512d a0 = _mm512_castps_pd(t[4 * g]), a1 = _mm512_castps_pd(t[4 * g + 1]);
        const __m512d a2 = _mm512_castps_pd(t[4 * g + 2]), a3 = _mm512_castps_pd(t[4 * g + 3]);
        u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        const __m512 v_lo = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);      /* g0 L0 L1, g1 L0 L1 */
        const __m512 v_hi = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xee);      /* g0 L2 L3, g1 L2 L3 */
        const __m512 w_lo = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44); /* g2, g3 */
        const __m512 w_hi = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xee);
        r[0 + j] = _mm512_shuffle_f32x4(v_lo, w_lo, 0x88);  /* column j      (L0) */
        r[4 + j] = _mm512_shuffle_f32x4(v_lo, w_lo, 0xdd);  /* column 4 + j  (L1) */
        r[8 + j] = _mm512_shuffle_f32x4(v_hi, w_hi, 0x88);  /* column 8 + j  (L2) */
        r[12 + j] = _mm512_shuffle_f32x4(v_hi, w_hi, 0xdd); /* column 12 + j (L3) */
    }
}

/* Packs W[rb + s*GM_S + i][k0 + k] (i < GM_S, k < kc) as float32 into wp[s][k][i], for the
 * strips covering nr rows; rows past nr are zero. Works on 16 x 16 blocks transposed in
 * registers. */
INL void pack_w_dt(const int dt, float *wp, const mt_mat *w, int rb, int nr, int k0, int kc) {
    const int nstrips = (nr + GM_S - 1) / GM_S;
    const size_t es = dt == MT_F32 ? 4 : 2;
    const size_t wld = (size_t)w->cols * es;
    const unsigned char *base = (const unsigned char *)w->data + (size_t)rb * wld + (size_t)k0 * es;
    for (int s = 0; s < nstrips; s++) {
        float *dst = wp + (size_t)s * kc * GM_S;
        for (int v = 0; v < GM_V; v++) {
            const int i0 = s * GM_S + 16 * v; /* first row of this 16-row block, panel-relative */
            const int nvalid = nr - i0 < 0 ? 0 : nr - i0 > 16 ? 16 : nr - i0;
            for (int k = 0; k < kc; k += 16) {
                const int ncol = kc - k < 16 ? kc - k : 16;
                __m512 r[16];
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++) {
                    const unsigned char *src = base + (size_t)(i0 + i) * wld + (size_t)k * es;
                    r[i] = i >= nvalid ? _mm512_setzero_ps() : ncol == 16 ? load16(dt, src) : load16_tail(dt, src, ncol);
                }
                transpose16(r);
                for (int j = 0; j < ncol; j++) _mm512_store_ps(dst + (size_t)(k + j) * GM_S + 16 * v, r[j]);
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

/* y[t][0..nrv) (+)= sum_k x[t * ldx + k] * wp[k][0..GM_S) for t < nt. The activations are
 * broadcast straight from their rows (T short sequential streams that stay in L1); tile
 * slots past nt re-read row 0 and their sums are dropped. */
INL void gemm_tile(const int T, const float *wp, const float *x, int ldx, int kc, float *y, int ldy, int nt,
                   int nrv, int first) {
    __m512 a[GM_T][GM_V];
#pragma GCC unroll 16
    for (int t = 0; t < T; t++)
#pragma GCC unroll 4
        for (int v = 0; v < GM_V; v++) a[t][v] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 wv[GM_V];
#pragma GCC unroll 4
        for (int v = 0; v < GM_V; v++) wv[v] = _mm512_load_ps(wp + (size_t)k * GM_S + 16 * v);
        const float *xk = x + k;
#pragma GCC unroll 16
        for (int t = 0; t < T; t++) {
            const __m512 xb = _mm512_set1_ps(xk[(size_t)(t < nt ? t : 0) * ldx]);
#pragma GCC unroll 4
            for (int v = 0; v < GM_V; v++) a[t][v] = _mm512_fmadd_ps(xb, wv[v], a[t][v]);
        }
    }
    __mmask16 m[GM_V];
    for (int v = 0; v < GM_V; v++) {
        int left = nrv - 16 * v;
        m[v] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
    }
    for (int t = 0; t < nt; t++) {
        float *yt = y + (size_t)t * ldy;
#pragma GCC unroll 4
        for (int v = 0; v < GM_V; v++) {
            __m512 r = a[t][v];
            if (!first) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(m[v], yt + 16 * v));
            _mm512_mask_storeu_ps(yt + 16 * v, m[v], r);
        }
    }
}

#define GM_T_SMALL 4 /* register tile for the last few tokens of a block */

static TGT void gemm_kernel(const float *wp, const float *x, int ldx, int kc, float *y, int ldy, int nt, int nrv,
                            int first) {
    if (nt <= GM_T_SMALL) gemm_tile(GM_T_SMALL, wp, x, ldx, kc, y, ldy, nt, nrv, first);
    else gemm_tile(GM_T, wp, x, ldx, kc, y, ldy, nt, nrv, first);
}

TGT void mt_gemm_avx512(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) {
    float wp[(MT_GEMM_RB + GM_S - 1) / GM_S * GM_S * MT_GEMM_KC] __attribute__((aligned(64)));
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
