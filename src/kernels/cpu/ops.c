/* Element-wise and row-wise CPU kernels (the matrix products live in matmul*.c). */
#include <math.h>

#include "kernels/kernels.h"

void mt_rmsnorm(float *y, const float *x, const float *weight, int n, int dim, float eps) {
    for (int r = 0; r < n; r++) {
        const float *xr = x + (int64_t)r * dim;
        float *yr = y + (int64_t)r * dim;
        float ss = 0.0f;
        for (int i = 0; i < dim; i++) ss += xr[i] * xr[i];
        float scale = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int i = 0; i < dim; i++) yr[i] = xr[i] * scale * weight[i];
    }
}

void mt_rope(float *x, int n, int n_heads, int head_dim, const int32_t *pos, const float *inv_freq, float scale) {
    int half = head_dim / 2;
    for (int r = 0; r < n; r++) {
        for (int i = 0; i < half; i++) {
            float angle = (float)pos[r] * inv_freq[i];
            float c = cosf(angle) * scale, s = sinf(angle) * scale;
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((int64_t)r * n_heads + h) * head_dim;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

void mt_silu_mul(float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void mt_softmax(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}
