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

/* ---- gemv ------------------------------------------------------------------------------ */

#define GV_T 2
#define GV_R 4

INL void gemv_tile(const int dt, const int T, const int R, float *y, int ldy, const float *x, int ldx,
                   const unsigned char *w, size_t wld, int cols) {
    const size_t es = dt == MT_F32 ? 4 : 2;
    __m256 acc[GV_T][GV_R];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) acc[t][r] = _mm256_setzero_ps();
    int c = 0;
    for (; c + 8 <= cols; c += 8) {
        __m256 wv[GV_R];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = load8(dt, w + r * wld + (size_t)c * es);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256 xv = _mm256_loadu_ps(x + (size_t)t * ldx + c);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[t][r] = _mm256_fmadd_ps(xv, wv[r], acc[t][r]);
        }
    }
    if (c < cols) {
        const int rem = cols - c;
        __m256 wv[GV_R];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) wv[r] = load8_tail(dt, w + r * wld + (size_t)c * es, rem);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            __m256 xv = load8_tail(MT_F32, x + (size_t)t * ldx + c, rem);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[t][r] = _mm256_fmadd_ps(xv, wv[r], acc[t][r]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) y[(size_t)t * ldy + r] = hsum8(acc[t][r]);
}

#define GEMV_TILE(DT, T, R)                                                                     \
    gemv_tile(DT, T, R, y + (size_t)t * ldy + r, ldy, x + (size_t)t * cols, cols, wb + (size_t)r * wld, \
              wld, cols)

#define GEMV_FOR_DTYPE(NAME, DT)                                                                \
    static TGT void NAME(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) { \
        const int cols = w->cols, ldy = w->rows;                                                \
        const size_t wld = (size_t)cols * (DT == MT_F32 ? 4 : 2);                               \
        const unsigned char *wb = w->data;                                                      \
        for (int r = r0; r < r1;) {                                                             \
            const int full = r1 - r >= GV_R;                                                    \
            for (int t = t0; t < t1;) {                                                         \
                int T = t1 - t < GV_T ? t1 - t : GV_T;                                          \
                if (full) {                                                                     \
                    if (T == 1) GEMV_TILE(DT, 1, 4);                                            \
                    else GEMV_TILE(DT, 2, 4);                                                   \
                } else {                                                                        \
                    if (T == 1) GEMV_TILE(DT, 1, 1);                                            \
                    else GEMV_TILE(DT, 2, 1);                                                   \
                }                                                                               \
                t += T;                                                                         \
            }                                                                                   \
            r += full ? GV_R : 1;                                                               \
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

INL void pack_w_dt(const int dt, float *wp, const mt_mat *w, int rb, int nr, int k0, int kc) {
    const int nstrips = (nr + GM_S - 1) / GM_S;
    const size_t es = dt == MT_F32 ? 4 : 2;
    const unsigned char *base = w->data;
    for (int s = 0; s < nstrips; s++) {
        float *dst = wp + (size_t)s * kc * GM_S;
        for (int i = 0; i < GM_S; i++) {
            int rr = s * GM_S + i;
            if (rr >= nr) {
                for (int k = 0; k < kc; k++) dst[(size_t)k * GM_S + i] = 0.0f;
                continue;
            }
            const unsigned char *src = base + ((size_t)(rb + rr) * w->cols + k0) * es;
            int k = 0;
            for (; k + 8 <= kc; k += 8) {
                float v[8] __attribute__((aligned(32)));
                _mm256_store_ps(v, load8(dt, src + (size_t)k * es));
                for (int j = 0; j < 8; j++) dst[(size_t)(k + j) * GM_S + i] = v[j];
            }
            if (k < kc) {
                float v[8] __attribute__((aligned(32)));
                _mm256_store_ps(v, load8_tail(dt, src + (size_t)k * es, kc - k));
                for (int j = 0; j < kc - k; j++) dst[(size_t)(k + j) * GM_S + i] = v[j];
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

static void pack_x(float *xp, const float *x, int cols, int tt, int nt, int k0, int kc) {
    for (int t = 0; t < GM_T; t++) {
        if (t < nt) {
            const float *src = x + (size_t)(tt + t) * cols + k0;
            for (int k = 0; k < kc; k++) xp[(size_t)k * GM_T + t] = src[k];
        } else {
            for (int k = 0; k < kc; k++) xp[(size_t)k * GM_T + t] = 0.0f;
        }
    }
}

static TGT void gemm_kernel(const float *wp, const float *xp, int kc, float *y, int ldy, int nt, int nrv,
                            int first) {
    __m256 a0[GM_T], a1[GM_T];
#pragma GCC unroll 6
    for (int t = 0; t < GM_T; t++) a0[t] = a1[t] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const __m256 w0 = _mm256_load_ps(wp + (size_t)k * GM_S);
        const __m256 w1 = _mm256_load_ps(wp + (size_t)k * GM_S + 8);
        const float *xk = xp + (size_t)k * GM_T;
#pragma GCC unroll 6
        for (int t = 0; t < GM_T; t++) {
            const __m256 xb = _mm256_broadcast_ss(xk + t);
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

TGT void mt_gemm_avx2(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) {
    float wp[MT_GEMM_RB * MT_GEMM_KC] __attribute__((aligned(32)));
    float xp[MT_GEMM_KC * GM_T] __attribute__((aligned(32)));
    const int cols = w->cols, ldy = w->rows;
    for (int rb = r0; rb < r1; rb += MT_GEMM_RB) {
        const int nr = r1 - rb < MT_GEMM_RB ? r1 - rb : MT_GEMM_RB;
        const int nstrips = (nr + GM_S - 1) / GM_S;
        for (int k0 = 0; k0 < cols; k0 += MT_GEMM_KC) {
            const int kc = cols - k0 < MT_GEMM_KC ? cols - k0 : MT_GEMM_KC;
            pack_w(wp, w, rb, nr, k0, kc);
            for (int tt = t0; tt < t1; tt += GM_T) {
                const int nt = t1 - tt < GM_T ? t1 - tt : GM_T;
                pack_x(xp, x, cols, tt, nt, k0, kc);
                for (int s = 0; s < nstrips; s++) {
                    const int nrv = nr - s * GM_S < GM_S ? nr - s * GM_S : GM_S;
                    gemm_kernel(wp + (size_t)s * kc * GM_S, xp, kc, y + (size_t)tt * ldy + rb + s * GM_S, ldy,
                                nt, nrv, k0 == 0);
                }
            }
        }
    }
}
