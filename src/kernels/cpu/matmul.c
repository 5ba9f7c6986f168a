/* Matrix products (mt_matmul) and the kernel-wide settings: SIMD level selection and the
 * thread pool's life cycle. The per-ISA kernels live in matmul_{scalar,avx2,avx512}.c; this
 * file picks one and splits the output into tasks for mt_parallel_for:
 *  - few tokens (decode, up to 32): chunks of output rows, each streamed once by a gemv kernel;
 *  - many tokens (prefill): panels of MT_GEMM_RB rows x blocks of up to GEMM_TB tokens, run
 *    by the packed gemm kernels, so each weight element is reused for every token of a block.
 * mt_matmul_group plans each product of a group the same way and runs all their tasks in one
 * parallel loop (one dispatch instead of one per product).
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

/* From this many tokens on, use the packed gemm kernels. Below, the gemv kernels (weights
 * streamed once, tiles of up to 4 tokens) are faster on every shape measured: 1.2-1.8x at 8-32
 * tokens, so a decode step of up to 32 sequences stays on them (docs/PERF_NOTES.md). */
#ifndef GEMM_MIN_N
#define GEMM_MIN_N 33
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

/* How one product is cut into tasks. */
typedef struct mm_plan {
    float *y;
    const float *x;
    const mt_mat *w;
    mt_mm_kernel fn;
    int n;
    int rchunk, tchunk; /* rows and tokens per task */
    int nrb;            /* row chunks */
    int tasks;
} mm_plan;

static int ceil_div(int a, int b) { return (a + b - 1) / b; }
static int round_up(int a, int b) { return ceil_div(a, b) * b; }

static mt_mm_kernel pick_kernel(int gemm) {
    switch (mt_kernels_isa()) {
    case MT_ISA_AVX512BF16:
    case MT_ISA_AVX512: return gemm ? mt_gemm_avx512 : mt_gemv_avx512;
    case MT_ISA_AVX2: return gemm ? mt_gemm_avx2 : mt_gemv_avx2;
    default: return gemm ? mt_gemm_scalar : mt_gemv_scalar;
    }
}

/* The split of one product over `threads` participants. The kernel depends only on n (gemv
 * below GEMM_MIN_N tokens), never on the split, so every split gives the same bits. */
static void plan_product(mm_plan *j, float *y, const float *x, int n, const mt_mat *w, int threads) {
    const int rows = w->rows;
    const int gemm = n >= GEMM_MIN_N;
    *j = (mm_plan){.y = y, .x = x, .w = w, .fn = pick_kernel(gemm), .n = n};
    int ntb;
    if (threads <= 1) {
        j->rchunk = rows;
        j->tchunk = n;
        ntb = 1;
    } else if (!gemm) {
        /* ~4 chunks per thread, whole groups of 4 rows, at least 16 rows each */
        j->rchunk = round_up(ceil_div(rows, threads * 4), 4);
        if (j->rchunk < 16) j->rchunk = 16;
        j->tchunk = n;
        ntb = 1;
    } else {
        j->rchunk = MT_GEMM_RB;
        j->nrb = ceil_div(rows, MT_GEMM_RB);
        ntb = ceil_div(n, GEMM_TB);
        if (j->nrb * ntb < 4 * threads) { /* few row panels: split the tokens further */
            int want = ceil_div(4 * threads, j->nrb);
            int most = ceil_div(n, 4);
            ntb = want < most ? want : most;
        }
        j->tchunk = round_up(ceil_div(n, ntb), 4);
        ntb = ceil_div(n, j->tchunk);
    }
    j->nrb = ceil_div(rows, j->rchunk);
    j->tasks = j->nrb * ntb;
}

static void run_task(const mm_plan *j, int i) {
    int rb = i % j->nrb, tb = i / j->nrb;
    int r0 = rb * j->rchunk, t0 = tb * j->tchunk;
    int r1 = r0 + j->rchunk < j->w->rows ? r0 + j->rchunk : j->w->rows;
    int t1 = t0 + j->tchunk < j->n ? t0 + j->tchunk : j->n;
    j->fn(j->y, j->x, j->w, t0, t1, r0, r1);
}

static void one_task(void *ctx, int i) { run_task(ctx, i); }

/* A group: plans[] with first[k] the index of plan k's first task (first[count] = all tasks). */
typedef struct mm_group {
    const mm_plan *plans;
    const int *first;
    int count;
} mm_group;

static void group_task(void *ctx, int i) {
    const mm_group *g = ctx;
    int lo = 0, hi = g->count - 1; /* the last plan whose first task is <= i */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (g->first[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    run_task(&g->plans[lo], i - g->first[lo]);
}

static int empty_product(float *y, int n, const mt_mat *w) {
    if (n <= 0 || w->rows <= 0) return 1;
    if (w->cols <= 0) {
        memset(y, 0, (size_t)n * (size_t)w->rows * sizeof *y);
        return 1;
    }
    return 0;
}

static int pool_threads(void) { return mt_pool_in_loop() ? 1 : mt_pool_threads(); }

void mt_matmul(float *y, const float *x, int n, const mt_mat *w) {
    if (empty_product(y, n, w)) return;
    const int threads = pool_threads();
    mm_plan j;
    if (threads <= 1 || (double)n * w->rows * w->cols < SERIAL_WORK) {
        plan_product(&j, y, x, n, w, 1);
        run_task(&j, 0);
        return;
    }
    plan_product(&j, y, x, n, w, threads);
    mt_parallel_for(j.tasks, one_task, &j);
}

#define GROUP_MAX 64 /* products per dispatch; larger groups are run in slices */

void mt_matmul_group(const mt_matmul_op *ops, int count) {
    const int threads = pool_threads();
    while (count > 0) {
        mm_plan plans[GROUP_MAX];
        int first[GROUP_MAX + 1], np = 0, tasks = 0, k = 0;
        double work = 0.0;
        for (; k < count && np < GROUP_MAX; k++) {
            const mt_matmul_op *o = &ops[k];
            if (empty_product(o->y, o->n, o->w)) continue;
            plan_product(&plans[np], o->y, o->x, o->n, o->w, threads);
            first[np++] = tasks;
            tasks += plans[np - 1].tasks;
            work += (double)o->n * o->w->rows * o->w->cols;
        }
        first[np] = tasks;
        mm_group g = {plans, first, np};
        if (threads <= 1 || work < SERIAL_WORK)
            for (int i = 0; i < tasks; i++) group_task(&g, i);
        else
            mt_parallel_for(tasks, group_task, &g);
        ops += k;
        count -= k;
    }
}
