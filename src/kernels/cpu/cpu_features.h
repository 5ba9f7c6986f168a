/* Run-time detection of the SIMD levels the CPU and the OS support (cpuid + xgetbv).
 * MT_ISA_AVX2 means AVX2 + FMA + F16C; MT_ISA_AVX512 means AVX-512F (with the OS saving
 * the zmm/opmask state); MT_ISA_AVX512BF16 adds AVX512_BF16 (cpuid leaf 7, subleaf 1, EAX bit 5). */
#ifndef MT_KERNELS_CPU_FEATURES_H
#define MT_KERNELS_CPU_FEATURES_H

#include "kernels/kernels.h"

/* 1 when this CPU (and OS) can run code of the given level. */
int mt_cpu_supports(mt_isa isa);

/* The best level this CPU supports. */
mt_isa mt_cpu_best_isa(void);

/* Parses "scalar", "avx2", "avx512", "avx512bf16"; returns -1 for anything else. */
int mt_isa_parse(const char *name, mt_isa *out);

#endif
