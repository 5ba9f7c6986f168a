/* Kernel figures for this machine: memory read bandwidth, decode GEMV (n = 1) on BF16
 * [4096 x 4096] matrices cycled through a working set far larger than the caches, prefill
 * GEMM (n = 256) throughput, and the thread pool's dispatch latency.
 * Usage: bench_kernels [--threads N] [--quick]   (MOETRACE_ISA caps the SIMD level) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "util/dtype.h"

#include "bench_common.h"

/* ---- matrix products ------------------------------------------------------------------ */

static void fill_x(float *x, size_t count) {
    uint32_t s = 777u;
    for (size_t i = 0; i < count; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = ((float)(s >> 8) / 16777216.0f) - 0.5f;
    }
}

/* Decode: one token through each of nmat matrices in turn (cold in cache); best pass.
 * Returns GB/s of weights read. */
static double bench_gemv(mt_dtype dt, int rows, int cols, int nmat, int passes) {
    size_t mbytes = (size_t)rows * cols * mt_dtype_size(dt);
    unsigned char *all = alloc_filled(mbytes * nmat);
    float *x = malloc(sizeof(float) * cols), *y = malloc(sizeof(float) * rows);
    if (!all || !x || !y) return 0.0;
    fill_x(x, cols);
    if (dt == MT_F32) { /* reinterpret the random bf16 pairs as small floats */
        float *f = (float *)all;
        for (size_t i = 0; i < mbytes * nmat / 4; i++) f[i] = mt_bf16_to_f32((uint16_t)(i * 2654435761u >> 16)) * 0.0f + 0.01f * (float)(i % 7);
    } else if (dt == MT_F16) {
        uint16_t *h = (uint16_t *)all;
        for (size_t i = 0; i < mbytes * nmat / 2; i++) h[i] = (uint16_t)(0x2000 + (i * 2654435761u >> 20) % 0x1800);
    }
    double best = 1e30;
    for (int p = 0; p < passes; p++) {
        double t = now_s();
        for (int m = 0; m < nmat; m++) {
            mt_mat w = {.dtype = dt, .data = all + mbytes * m, .rows = rows, .cols = cols};
            mt_matmul(y, x, 1, &w);
        }
        t = now_s() - t;
        if (t < best) best = t;
    }
    free(all);
    free(x);
    free(y);
    return (double)mbytes * nmat / best / 1e9;
}

/* Prefill: n tokens through one matrix; best of reps. Returns GFLOP/s. */
static double bench_gemm(mt_dtype dt, int n, int rows, int cols, int reps) {
    size_t mbytes = (size_t)rows * cols * mt_dtype_size(dt);
    unsigned char *wd = alloc_filled(mbytes);
    float *x = malloc(sizeof(float) * (size_t)n * cols), *y = malloc(sizeof(float) * (size_t)n * rows);
    if (!wd || !x || !y) return 0.0;
    fill_x(x, (size_t)n * cols);
    mt_mat w = {.dtype = dt, .data = wd, .rows = rows, .cols = cols};
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = now_s();
        mt_matmul(y, x, n, &w);
        t = now_s() - t;
        if (t < best) best = t;
    }
    free(wd);
    free(x);
    free(y);
    return 2.0 * n * rows * cols / best / 1e9;
}

static void nop_task(void *ctx, int i) {
    (void)ctx;
    (void)i;
}

/* Microseconds per mt_parallel_for of trivial work, back to back. */
static double bench_dispatch(int iters) {
    double t = now_s();
    for (int i = 0; i < iters; i++) mt_parallel_for(64, nop_task, NULL);
    return (now_s() - t) / iters * 1e6;
}

/* Microseconds per mt_parallel_for issued after the workers have gone to sleep. */
static double bench_dispatch_cold(int iters) {
    double total = 0.0;
    for (int i = 0; i < iters; i++) {
        struct timespec pause = {0, 5000000}; /* 5 ms: longer than the workers spin */
        nanosleep(&pause, NULL);
        double t = now_s();
        mt_parallel_for(64, nop_task, NULL);
        total += now_s() - t;
    }
    return total / iters * 1e6;
}

int main(int argc, char **argv) {
    int threads = 0, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--quick") == 0) quick = 1;
        else {
            fprintf(stderr, "usage: %s [--threads N] [--quick]\n", argv[0]);
            return 2;
        }
    }
    mt_kernels_init(threads);
    const int nmat = quick ? 8 : 16; /* 16 x 32 MiB = 512 MiB of BF16 weights per decode pass */
    printf("bench_kernels: threads=%d isa=%s\n", mt_kernels_threads(), mt_isa_name(mt_kernels_isa()));

    /* The first passes over fresh memory run slow on some VMs: warm up, and take the better
     * of two measurements (before and after the decode runs). */
    const size_t bw_bytes = quick ? (256u << 20) : (1u << 30);
    measure_bandwidth(bw_bytes, 2);
    double bw = measure_bandwidth(bw_bytes, quick ? 3 : 5);
    double gemv_gbs[3];

    static const struct { mt_dtype dt; const char *name; } dts[] = {{MT_BF16, "BF16"}, {MT_F16, "F16"}, {MT_F32, "F32"}};
    for (int d = 0; d < 3; d++) {
        int nm = dts[d].dt == MT_F32 ? nmat / 2 : nmat;
        gemv_gbs[d] = bench_gemv(dts[d].dt, 4096, 4096, nm, quick ? 3 : 5);
    }
    double bw2 = measure_bandwidth(bw_bytes, quick ? 3 : 5);
    if (bw2 > bw) bw = bw2;
    printf("%-44s %10.2f GB/s\n", "memory read bandwidth (parallel sum)", bw);
    for (int d = 0; d < 3; d++) {
        char label[96];
        snprintf(label, sizeof label, "decode GEMV n=1 [4096x4096] %s", dts[d].name);
        printf("%-44s %10.2f GB/s  %5.1f%% of bandwidth\n", label, gemv_gbs[d], 100.0 * gemv_gbs[d] / bw);
    }
    for (int d = 0; d < 3; d++) {
        double gf = bench_gemm(dts[d].dt, 256, 4096, 4096, quick ? 2 : 3);
        char label[96];
        snprintf(label, sizeof label, "prefill GEMM n=256 [4096x4096] %s", dts[d].name);
        printf("%-44s %10.2f GFLOP/s\n", label, gf);
    }
    static const int ns[] = {4, 16, 64};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        double gf = bench_gemm(MT_BF16, ns[k], 4096, 4096, quick ? 2 : 4);
        char label[96];
        snprintf(label, sizeof label, "matmul n=%d [4096x4096] BF16", ns[k]);
        printf("%-44s %10.2f GFLOP/s\n", label, gf);
    }
    bench_dispatch(1000);
    printf("%-44s %10.2f us\n", "mt_parallel_for dispatch (64 empty items)", bench_dispatch(20000));
    printf("%-44s %10.2f us\n", "same, workers asleep (after 5 ms idle)", bench_dispatch_cold(quick ? 20 : 100));
    mt_kernels_shutdown();
    return 0;
}
