/* AVX-512F helpers shared by the AVX-512 kernels (matmul_avx512.c, attention_avx512.c).
 * Only for files compiled into code that runs after cpu_features.c has confirmed AVX-512F. */
#ifndef MT_KERNELS_CPU_SIMD_AVX512_H
#define MT_KERNELS_CPU_SIMD_AVX512_H

#include <immintrin.h>

/* The target of every AVX-512 kernel function (helpers inline only into the same target). */
#define MT_AVX512_TGT __attribute__((target("avx512f,avx2,fma,f16c")))
#define MT_AVX512_INL static inline __attribute__((always_inline)) MT_AVX512_TGT

/* Fixed reduction tree: halves 256 + 256, 128 + 128, 64 + 64, 32 + 32. */
MT_AVX512_INL float mt_hsum16(__m512 a) {
    const __m256 lo = _mm512_castps512_ps256(a);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1));
    const __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

#endif
