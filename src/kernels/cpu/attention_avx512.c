/* AVX-512F attention kernel (see attention_impl.h), for head_dim a multiple of 16. Scores are
 * 16-lane dot products reduced in a fixed tree; the softmax weights of a chunk are computed
 * 16 at a time with a vector exp; values are accumulated one 16-float slice of the head at a
 * time over the chunk's rows. Compiled with function-level target attributes; only called
 * when cpu_features.c has confirmed AVX-512F. */
#include <immintrin.h>
#include <math.h>

#include "kernels/cpu/attention_impl.h"
#include "kernels/cpu/simd_avx512.h"

#define TGT MT_AVX512_TGT
#define INL static inline __attribute__((always_inline)) TGT

/* e^x for x <= 0 (about 1 ulp; inputs below -87.3 give about 1e-38): x = n ln2 + r with
 * |r| <= ln2 / 2, a degree-6 polynomial for e^r, then scaling by 2^n. */
INL __m512 exp16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

#define NV (MT_ATTN_CHUNK / 16) /* score vectors per chunk */

TGT void mt_attend_avx512(float *out, const float *q, int g, int hd, float scale, const mt_kv_pages *kv, int first,
                          int last) {
    float acc[MT_ATTN_GROUP * MT_ATTN_MAX_HEAD_DIM] __attribute__((aligned(64)));
    float mx[MT_ATTN_GROUP], sum[MT_ATTN_GROUP];
    float w[MT_ATTN_CHUNK] __attribute__((aligned(64)));
    const int ld = kv->row_stride;
    for (int h = 0; h < g; h++) {
        mx[h] = -INFINITY;
        sum[h] = 0.0f;
        for (int d = 0; d < hd; d += 16) _mm512_store_ps(acc + h * hd + d, _mm512_setzero_ps());
    }
    for (int p = first; p <= last;) {
        const int rows = mt_attn_chunk_rows(kv, p, last);
        const size_t base = mt_attn_row(kv, p);
        const float *k = kv->k + base, *v = kv->v + base;
        for (int h = 0; h < g; h++) {
            const float *qh = q + (size_t)h * hd;
            for (int j = 0; j < rows; j++) {
                const float *kj = k + (size_t)j * ld;
                __m512 a = _mm512_mul_ps(_mm512_loadu_ps(qh), _mm512_loadu_ps(kj));
                for (int d = 16; d < hd; d += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(qh + d), _mm512_loadu_ps(kj + d), a);
                w[j] = mt_hsum16(a) * scale;
            }
            /* the chunk's maximum; lanes past `rows` read as -inf */
            __m512 s[NV];
            __m512 vmax = _mm512_set1_ps(-INFINITY);
            for (int i = 0; i < NV; i++) {
                const int left = rows - 16 * i;
                const __mmask16 mk = left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
                s[i] = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), mk, w + 16 * i);
                vmax = _mm512_max_ps(vmax, s[i]);
            }
            const float cm = _mm512_reduce_max_ps(vmax), m = cm > mx[h] ? cm : mx[h];
            float *ah = acc + (size_t)h * hd;
            if (m > mx[h]) { /* rescale the running sums to the new maximum */
                const float r = expf(mx[h] - m);
                sum[h] *= r;
                const __m512 rv = _mm512_set1_ps(r);
                for (int d = 0; d < hd; d += 16) _mm512_store_ps(ah + d, _mm512_mul_ps(_mm512_load_ps(ah + d), rv));
                mx[h] = m;
            }
            const __m512 mv = _mm512_set1_ps(m);
            __m512 vsum = _mm512_setzero_ps();
            for (int i = 0; i < NV && 16 * i < rows; i++) {
                const int left = rows - 16 * i;
                const __mmask16 mk = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
                const __m512 e = _mm512_maskz_mov_ps(mk, exp16(_mm512_sub_ps(s[i], mv)));
                _mm512_store_ps(w + 16 * i, e);
                vsum = _mm512_add_ps(vsum, e);
            }
            sum[h] += mt_hsum16(vsum);
            for (int d = 0; d < hd; d += 16) {
                __m512 a = _mm512_load_ps(ah + d);
                for (int j = 0; j < rows; j++)
                    a = _mm512_fmadd_ps(_mm512_set1_ps(w[j]), _mm512_loadu_ps(v + (size_t)j * ld + d), a);
                _mm512_store_ps(ah + d, a);
            }
        }
        p += rows;
    }
    for (int h = 0; h < g; h++) {
        const __m512 inv = _mm512_set1_ps(1.0f / sum[h]);
        for (int d = 0; d < hd; d += 16)
            _mm512_storeu_ps(out + (size_t)h * hd + d, _mm512_mul_ps(_mm512_load_ps(acc + h * hd + d), inv));
    }
}
