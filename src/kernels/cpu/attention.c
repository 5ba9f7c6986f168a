/* mt_attend: picks the kernel for the current ISA and cuts large head groups; the portable
 * kernel (see attention_impl.h for the contract). */
#include <math.h>

#include "kernels/cpu/attention_impl.h"
#include "kernels/kernels.h"

void mt_attend(float *out, const float *q, int g, int head_dim, float scale, const mt_kv_pages *kv, int first,
               int last) {
    mt_attn_kernel fn = mt_attend_scalar;
    if (mt_kernels_isa() >= MT_ISA_AVX512 && head_dim % 16 == 0) fn = mt_attend_avx512;
    for (int h = 0; h < g; h += MT_ATTN_GROUP) {
        const int gs = g - h < MT_ATTN_GROUP ? g - h : MT_ATTN_GROUP;
        fn(out + (size_t)h * head_dim, q + (size_t)h * head_dim, gs, head_dim, scale, kv, first, last);
    }
}

/* Dot product in 8 interleaved partial sums, added in a fixed tree. */
static float dot8(const float *a, const float *b, int n) {
    float s[8] = {0};
    int d = 0;
    for (; d + 8 <= n; d += 8)
        for (int l = 0; l < 8; l++) s[l] += a[d + l] * b[d + l];
    for (int l = 0; d < n; d++, l++) s[l] += a[d] * b[d];
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

void mt_attend_scalar(float *out, const float *q, int g, int hd, float scale, const mt_kv_pages *kv, int first,
                      int last) {
    float acc[MT_ATTN_GROUP * MT_ATTN_MAX_HEAD_DIM];
    float mx[MT_ATTN_GROUP], sum[MT_ATTN_GROUP], w[MT_ATTN_GROUP][MT_ATTN_CHUNK];
    for (int h = 0; h < g; h++) {
        mx[h] = -INFINITY;
        sum[h] = 0.0f;
        for (int d = 0; d < hd; d++) acc[h * hd + d] = 0.0f;
    }
    for (int p = first; p <= last;) {
        const int rows = mt_attn_chunk_rows(kv, p, last);
        const size_t base = mt_attn_row(kv, p);
        const float *k = kv->k + base, *v = kv->v + base;
        for (int h = 0; h < g; h++) {
            float m = mx[h];
            for (int j = 0; j < rows; j++) {
                w[h][j] = dot8(q + (size_t)h * hd, k + (size_t)j * kv->row_stride, hd) * scale;
                if (w[h][j] > m) m = w[h][j];
            }
            if (m > mx[h]) { /* rescale the running sums to the new maximum */
                const float r = expf(mx[h] - m);
                sum[h] *= r;
                for (int d = 0; d < hd; d++) acc[h * hd + d] *= r;
                mx[h] = m;
            }
            for (int j = 0; j < rows; j++) {
                w[h][j] = expf(w[h][j] - m);
                sum[h] += w[h][j];
            }
            float *a = acc + (size_t)h * hd;
            for (int j = 0; j < rows; j++) {
                const float *vj = v + (size_t)j * kv->row_stride, wj = w[h][j];
                for (int d = 0; d < hd; d++) a[d] += wj * vj[d];
            }
        }
        p += rows;
    }
    for (int h = 0; h < g; h++)
        for (int d = 0; d < hd; d++) out[(size_t)h * hd + d] = acc[h * hd + d] / sum[h];
}
