/* CPU feature detection for the kernel dispatch (see cpu_features.h). Bits per the Intel SDM,
 * vol. 2A, CPUID: leaf 1 ECX (FMA 12, OSXSAVE 27, AVX 28, F16C 29), leaf 7.0 EBX (AVX2 5,
 * AVX512F 16), leaf 7.1 EAX (AVX512_BF16 5); XCR0 bits 1-2 (SSE/AVX) and 5-7 (AVX-512). */
#include "kernels/cpu/cpu_features.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long xgetbv0(void) {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

typedef struct features {
    int avx2, avx512, avx512bf16;
} features;

static features detect(void) {
    features f = {0, 0, 0};
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return f;
    unsigned long long xcr0 = xgetbv0();
    int os_avx = (xcr0 & 0x6) == 0x6;
    int os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
    if (!os_avx) return f;
    unsigned int max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 7) return f;
    __cpuid_count(7, 0, a, b, c, d);
    unsigned int max_sub = a;
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1;
    f.avx2 = avx2 && fma && f16c;
    f.avx512 = f.avx2 && avx512f && os_avx512;
    if (f.avx512 && max_sub >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        f.avx512bf16 = (a >> 5) & 1;
    }
    return f;
}

static features g_features;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void detect_once(void) { g_features = detect(); }

int mt_cpu_supports(mt_isa isa) {
    pthread_once(&g_once, detect_once);
    const features f = g_features;
    switch (isa) {
    case MT_ISA_SCALAR: return 1;
    case MT_ISA_AVX2: return f.avx2;
    case MT_ISA_AVX512: return f.avx512;
    case MT_ISA_AVX512BF16: return f.avx512bf16;
    }
    return 0;
}
#else
int mt_cpu_supports(mt_isa isa) { return isa == MT_ISA_SCALAR; }
#endif

mt_isa mt_cpu_best_isa(void) {
    if (mt_cpu_supports(MT_ISA_AVX512BF16)) return MT_ISA_AVX512BF16;
    if (mt_cpu_supports(MT_ISA_AVX512)) return MT_ISA_AVX512;
    if (mt_cpu_supports(MT_ISA_AVX2)) return MT_ISA_AVX2;
    return MT_ISA_SCALAR;
}

int mt_isa_parse(const char *name, mt_isa *out) {
    static const struct { const char *name; mt_isa isa; } names[] = {
        {"scalar", MT_ISA_SCALAR}, {"avx2", MT_ISA_AVX2},
        {"avx512", MT_ISA_AVX512}, {"avx512bf16", MT_ISA_AVX512BF16},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].isa;
            return 0;
        }
    }
    return -1;
}
