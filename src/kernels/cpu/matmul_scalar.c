/* Portable matrix-product kernels (see matmul_impl.h): the reference path and the fallback
 * for CPUs without AVX2. Weight rows are converted to float32 a chunk at a time and each
 * converted chunk serves every token of the block. */
#include "kernels/cpu/matmul_impl.h"

#define CHUNK 512

static void load_chunk(float *dst, const mt_mat *w, int r, int k0, int kc) {
    size_t base = (size_t)r * (size_t)w->cols + (size_t)k0;
    switch (w->dtype) {
    case MT_F32: {
        const float *s = (const float *)w->data + base;
        for (int k = 0; k < kc; k++) dst[k] = s[k];
        break;
    }
    case MT_BF16: {
        const uint16_t *s = (const uint16_t *)w->data + base;
        for (int k = 0; k < kc; k++) dst[k] = mt_bf16_to_f32(s[k]);
        break;
    }
    default: {
        const uint16_t *s = (const uint16_t *)w->data + base;
        for (int k = 0; k < kc; k++) dst[k] = mt_f16_to_f32(s[k]);
        break;
    }
    }
}

void mt_gemv_scalar(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) {
    const int cols = w->cols, rows = w->rows;
    float buf[CHUNK];
    for (int r = r0; r < r1; r++) {
        for (int t = t0; t < t1; t++) y[(size_t)t * rows + r] = 0.0f;
        for (int k0 = 0; k0 < cols; k0 += CHUNK) {
            int kc = cols - k0 < CHUNK ? cols - k0 : CHUNK;
            load_chunk(buf, w, r, k0, kc);
            for (int t = t0; t < t1; t++) {
                const float *xt = x + (size_t)t * cols + k0;
                float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
                int k = 0;
                for (; k + 4 <= kc; k += 4) {
                    a0 += xt[k] * buf[k];
                    a1 += xt[k + 1] * buf[k + 1];
                    a2 += xt[k + 2] * buf[k + 2];
                    a3 += xt[k + 3] * buf[k + 3];
                }
                for (; k < kc; k++) a0 += xt[k] * buf[k];
                y[(size_t)t * rows + r] += (a0 + a1) + (a2 + a3);
            }
        }
    }
}

void mt_gemm_scalar(float *y, const float *x, const mt_mat *w, int t0, int t1, int r0, int r1) {
    mt_gemv_scalar(y, x, w, t0, t1, r0, r1);
}
