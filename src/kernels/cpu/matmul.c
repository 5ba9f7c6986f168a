/* Matrix products and the thread pool. PLACEHOLDER: scalar and single-threaded until the SIMD
 * kernels land; the interface in kernels.h is final. */
#include <stdlib.h>

#include "kernels/kernels.h"

static mt_isa g_isa = MT_ISA_SCALAR;

void mt_kernels_init(int n_threads) { (void)n_threads; }
void mt_kernels_shutdown(void) {}
int mt_kernels_threads(void) { return 1; }
mt_isa mt_kernels_isa(void) { return g_isa; }
mt_isa mt_kernels_set_isa(mt_isa isa) { mt_isa old = g_isa; (void)isa; return old; }

const char *mt_isa_name(mt_isa isa) {
    switch (isa) {
    case MT_ISA_AVX2: return "avx2";
    case MT_ISA_AVX512: return "avx512";
    case MT_ISA_AVX512BF16: return "avx512bf16";
    default: return "scalar";
    }
}

void mt_parallel_for(int n, void (*fn)(void *ctx, int i), void *ctx) {
    for (int i = 0; i < n; i++) fn(ctx, i);
}

void mt_matmul(float *y, const float *x, int n, const mt_mat *w) {
    for (int t = 0; t < n; t++) {
        const float *xt = x + (int64_t)t * w->cols;
        for (int r = 0; r < w->rows; r++) {
            float acc = 0.0f;
            size_t base = (size_t)r * (size_t)w->cols;
            for (int c = 0; c < w->cols; c++) acc += xt[c] * mt_load_f32(w->dtype, w->data, base + c);
            y[(int64_t)t * w->rows + r] = acc;
        }
    }
}
