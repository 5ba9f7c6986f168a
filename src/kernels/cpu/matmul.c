/* Matrix products (mt_matmul) and the kernel-wide settings: SIMD level selection and the
 * thread pool's life cycle. The per-ISA kernels live in matmul_{scalar,avx2,avx512}.c; this
 * file picks one and splits the output into tasks for mt_parallel_for:
 *  - few tokens (decode): chunks of output rows, each streamed once by a gemv kernel;
 *  - many tokens (prefill): panels of MT_GEMM_RB rows x blocks of up to GEMM_TB tokens, run
 *    by the packed gemm kernels, so each weight element is reused for every token of a block.
 * Every kernel computes each output element with the same operation sequence (matmul_impl.h),
 * so the choice of kernel and split never changes a token's results (batch invariance). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul_impl.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/kernels.h"
#include "util/err.h"

#ifndef GEMM_MIN_N
#define GEMM_MIN_N 6 /* from this many tokens on, use the packed gemm kernels */
#endif
#define GEMM_TB 128           /* most tokens per gemm task (keeps the x block in L2) */
#define SERIAL_WORK (1 << 16) /* below this many multiply-adds, do not wake the pool */

static _Atomic int g_isa = MT_ISA_SCALAR;
static pthread_once_t g_isa_once = PTHREAD_ONCE_INIT;

/* The best ISA, capped by MOETRACE_ISA when set. */
static mt_isa default_isa(void) {
    mt_isa best = mt_cpu_best_isa();
    const char *env = getenv("MOETRACE_ISA");
    if (env && *env) {
        mt_isa cap;
        if (mt_isa_parse(env, &cap) != 0)
            mt_log("kernels: ignoring MOETRACE_ISA=%s (expected scalar, avx2, avx512 or avx512bf16)", env);
        else if (cap < best)
            best = cap;
    }
    return best;
}

static void isa_once(void) { atomic_store(&g_isa, (int)default_isa()); }

void mt_kernels_init(int n_threads) {
    pthread_once(&g_isa_once, isa_once);
    atomic_store(&g_isa, (int)default_isa());
    mt_pool_start(n_threads);
}

void mt_kernels_shutdown(void) { mt_pool_stop(); }

int mt_kernels_threads(void) { return mt_pool_threads(); }

mt_isa mt_kernels_isa(void) {
    pthread_once(&g_isa_once, isa_once);
    return (mt_isa)atomic_load(&g_isa);
}

mt_isa mt_kernels_set_isa(mt_isa isa) {
    mt_isa old = mt_kernels_isa();
    if (isa >= MT_ISA_SCALAR && isa <= MT_ISA_AVX512BF16 && mt_cpu_supports(isa)) atomic_store(&g_isa, (int)isa);
    return old;
}

const char *mt_isa_name(mt_isa isa) {
    switch (isa) {
    case MT_ISA_AVX2: return "avx2";
    case MT_ISA_AVX512: return "avx512";
    case MT_ISA_AVX512BF16: return "avx512bf16";
    default: return "scalar";
    }
}

typedef struct mm_job {
    float *y;
    const float *x;
    const mt_mat *w;
    mt_mm_kernel fn;
    int n;
    int rchunk, tchunk; /* rows and tokens per task */
    int nrb;            /* row chunks */
} mm_job;

static void mm_task(void *ctx, int i) {
    const mm_job *j = ctx;
    int rb = i % j->nrb, tb = i / j->nrb;
    int r0 = rb * j->rchunk, t0 = tb * j->tchunk;
    int r1 = r0 + j->rchunk < j->w->rows ? r0 + j->rchunk : j->w->rows;
    int t1 = t0 + j->tchunk < j->n ? t0 + j->tchunk : j->n;
    j->fn(j->y, j->x, j->w, t0, t1, r0, r1);
}

static int ceil_div(int a, int b) { return (a + b - 1) / b; }
static int round_up(int a, int b) { return ceil_div(a, b) * b; }

void mt_matmul(float *y, const float *x, int n, const mt_mat *w) {
    const int rows = w->rows, cols = w->cols;
    if (n <= 0 || rows <= 0) return;
    if (cols <= 0) {
        memset(y, 0, (size_t)n * (size_t)rows * sizeof *y);
        return;
    }
    const int gemm = n >= GEMM_MIN_N;
    mt_mm_kernel fn;
    switch (mt_kernels_isa()) {
    case MT_ISA_AVX512BF16:
    case MT_ISA_AVX512: fn = gemm ? mt_gemm_avx512 : mt_gemv_avx512; break;
    case MT_ISA_AVX2: fn = gemm ? mt_gemm_avx2 : mt_gemv_avx2; break;
    default: fn = gemm ? mt_gemm_scalar : mt_gemv_scalar; break;
    }
    const int threads = mt_pool_in_loop() ? 1 : mt_pool_threads();
    if (threads <= 1 || (double)n * rows * cols < SERIAL_WORK) {
        fn(y, x, w, 0, n, 0, rows);
        return;
    }
    mm_job j = {.y = y, .x = x, .w = w, .fn = fn, .n = n};
    int ntb;
    if (!gemm) {
        /* ~4 chunks per thread, whole groups of 4 rows, at least 16 rows each */
        j.rchunk = round_up(ceil_div(rows, threads * 4), 4);
        if (j.rchunk < 16) j.rchunk = 16;
        j.tchunk = n;
        ntb = 1;
    } else {
        j.rchunk = MT_GEMM_RB;
        j.nrb = ceil_div(rows, MT_GEMM_RB);
        ntb = ceil_div(n, GEMM_TB);
        if (j.nrb * ntb < 4 * threads) { /* few row panels: split the tokens further */
            int want = ceil_div(4 * threads, j.nrb);
            int most = ceil_div(n, 4);
            ntb = want < most ? want : most;
        }
        j.tchunk = round_up(ceil_div(n, ntb), 4);
        ntb = ceil_div(n, j.tchunk);
    }
    j.nrb = ceil_div(rows, j.rchunk);
    mt_parallel_for(j.nrb * ntb, mm_task, &j);
}
