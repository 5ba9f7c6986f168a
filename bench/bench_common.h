/* Shared pieces of the benchmark programs: a monotonic clock and this machine's memory read
 * bandwidth (a parallel sum over a buffer far larger than the caches, on the kernels' pool). */
#ifndef MT_BENCH_COMMON_H
#define MT_BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"

/* The value after `name` on the command line as an integer clamped to [lo, hi], else dflt. */
static inline int bench_arg_int(int argc, char **argv, const char *name, int dflt, int lo, int hi) {
    int v = dflt;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) v = atoi(argv[i + 1]);
    return v < lo ? lo : v > hi ? hi : v;
}

/* The string after `name` on the command line, else dflt. */
static inline const char *bench_arg_str(int argc, char **argv, const char *name, const char *dflt) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return dflt;
}

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- memory bandwidth: a parallel sum over a large buffer ------------------------------- */

#define BW_CHUNK (1 << 20) /* bytes per task */

typedef struct bw_ctx {
    const uint64_t *buf;
    uint64_t partial[4096];
} bw_ctx;

static inline void bw_task_scalar(void *ctx, int i) {
    bw_ctx *c = ctx;
    const uint64_t *p = c->buf + (size_t)i * (BW_CHUNK / 8);
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (size_t k = 0; k < BW_CHUNK / 8; k += 4) {
        a0 += p[k];
        a1 += p[k + 1];
        a2 += p[k + 2];
        a3 += p[k + 3];
    }
    c->partial[i % 4096] += a0 + a1 + a2 + a3;
}

#if defined(__x86_64__)
#include <immintrin.h>
/* 256-bit loads, four independent sums: far more than memory can feed. */
__attribute__((target("avx2"))) static void bw_task_avx2(void *ctx, int i) {
    bw_ctx *c = ctx;
    const __m256i *p = (const __m256i *)(c->buf + (size_t)i * (BW_CHUNK / 8));
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t k = 0; k < BW_CHUNK / 32; k += 4) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256(p + k));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256(p + k + 1));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256(p + k + 2));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256(p + k + 3));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t v[4];
    _mm256_storeu_si256((__m256i *)v, s);
    c->partial[i % 4096] += v[0] + v[1] + v[2] + v[3];
}
#endif

typedef struct fill_ctx {
    unsigned char *buf;
    size_t chunk;
} fill_ctx;

static inline void fill_task(void *ctx, int i) {
    fill_ctx *c = ctx;
    uint16_t *p = (uint16_t *)(c->buf + (size_t)i * c->chunk);
    uint32_t s = 0x12345u + (uint32_t)i * 7919u;
    for (size_t k = 0; k < c->chunk / 2; k++) {
        s = s * 1664525u + 1013904223u;
        /* bf16 in +-[0.0039, 1): exponent 119..126, random mantissa and sign */
        p[k] = (uint16_t)(((s >> 16) & 0x807f) | ((119u + ((s >> 8) & 7u)) << 7));
    }
}

/* Allocates and first-touches (on the pool) bytes of random bf16 values. */
static inline unsigned char *alloc_filled(size_t bytes) {
    const size_t chunk = 1 << 20;
    bytes = (bytes + chunk - 1) / chunk * chunk;
    unsigned char *buf = aligned_alloc(64, bytes);
    if (!buf) return NULL;
    fill_ctx c = {buf, chunk};
    mt_parallel_for((int)(bytes / chunk), fill_task, &c);
    return buf;
}

/* A read-bandwidth probe: a buffer far larger than the caches, allocated and first-touched
 * once, then summed in parallel (1 MiB per task, every participant of the kernels' pool
 * streaming its own chunks in address order) as many times as asked. */
typedef struct bw_probe {
    unsigned char *buf;
    size_t bytes;
    bw_ctx *ctx;
    void (*task)(void *, int);
} bw_probe;

static inline int bw_probe_init(bw_probe *p, size_t bytes) {
    p->bytes = (bytes + BW_CHUNK - 1) / BW_CHUNK * BW_CHUNK;
    p->buf = alloc_filled(p->bytes);
    p->ctx = calloc(1, sizeof *p->ctx);
    if (!p->buf || !p->ctx) {
        free(p->buf);
        free(p->ctx);
        return -1;
    }
    p->ctx->buf = (const uint64_t *)p->buf;
    p->task = bw_task_scalar;
#if defined(__x86_64__)
    if (mt_kernels_isa() >= MT_ISA_AVX2) p->task = bw_task_avx2;
#endif
    return 0;
}

/* GB/s of one pass over the whole buffer. */
static inline double bw_probe_run(bw_probe *p) {
    double t = now_s();
    mt_parallel_for((int)(p->bytes / BW_CHUNK), p->task, p->ctx);
    t = now_s() - t;
    return (double)p->bytes / t / 1e9;
}

static inline void bw_probe_free(bw_probe *p) {
    uint64_t sink = 0;
    for (int i = 0; i < 4096; i++) sink += p->ctx->partial[i];
    if (sink == 42) printf(" ");
    free(p->ctx);
    free(p->buf);
}

/* Best of reps passes over a fresh buffer of the given size. */
static inline double measure_bandwidth(size_t bytes, int reps) {
    bw_probe p;
    if (bw_probe_init(&p, bytes)) return 0.0;
    double best = 0.0;
    for (int r = 0; r < reps; r++) {
        double g = bw_probe_run(&p);
        if (g > best) best = g;
    }
    bw_probe_free(&p);
    return best;
}

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of n values (sorts them). */
static inline double median(double *v, int n) {
    if (n <= 0) return 0.0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif
