/* Matrix products against a double-precision reference, for every weight dtype and every SIMD
 * level this CPU supports, on odd shapes that exercise every tail path; plus the thread pool's
 * coverage of parallel loops and the ISA settings.
 *
 * Error measure: |y - ref| / sum_c |x_c * w_c|, i.e. relative to the magnitude of the terms
 * (a plain |y - ref| / |ref| is unbounded when random signs cancel); must be <= 1e-5. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "util/dtype.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

/* Uniform in +-[0.05, 1): never zero. */
static float rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    double u = (double)(g_rng >> 11) / 9007199254740992.0;
    float v = (float)(0.05 + 0.95 * u);
    return (g_rng & 1) ? -v : v;
}

static void *make_weights(mt_dtype dt, int rows, int cols) {
    size_t count = (size_t)rows * cols;
    void *data = malloc(count * mt_dtype_size(dt) + 1);
    assert_non_null(data);
    for (size_t i = 0; i < count; i++) {
        float v = rnd();
        if (dt == MT_F32) ((float *)data)[i] = v;
        else if (dt == MT_BF16) ((uint16_t *)data)[i] = mt_f32_to_bf16(v);
        else ((uint16_t *)data)[i] = mt_f32_to_f16(v);
    }
    return data;
}

#define GUARD 16

/* Runs one product and returns the worst error (see the file comment). */
static double check_one(mt_dtype dt, int n, int rows, int cols) {
    void *wdata = make_weights(dt, rows, cols);
    mt_mat w = {.dtype = dt, .data = wdata, .rows = rows, .cols = cols};
    float *x = malloc(sizeof(float) * (size_t)n * cols);
    float *y = malloc(sizeof(float) * ((size_t)n * rows + GUARD));
    assert_non_null(x);
    assert_non_null(y);
    for (size_t i = 0; i < (size_t)n * cols; i++) x[i] = rnd();
    for (size_t i = 0; i < (size_t)n * rows + GUARD; i++) y[i] = NAN;
    mt_matmul(y, x, n, &w);
    double worst = 0.0;
    for (int t = 0; t < n; t++) {
        for (int r = 0; r < rows; r++) {
            double ref = 0.0, mag = 0.0;
            for (int c = 0; c < cols; c++) {
                double p = (double)x[(size_t)t * cols + c] * mt_load_f32(dt, wdata, (size_t)r * cols + c);
                ref += p;
                mag += fabs(p);
            }
            double got = y[(size_t)t * rows + r];
            double err = isfinite(got) ? fabs(got - ref) / mag : INFINITY;
            if (err > worst) worst = err;
            if (!(err <= 1e-5))
                fail_msg("%s %s n=%d rows=%d cols=%d: y[%d,%d] = %.9g, reference %.9g (error %.3g)",
                         mt_isa_name(mt_kernels_isa()), mt_dtype_name(dt), n, rows, cols, t, r, got, ref, err);
        }
    }
    for (int i = 0; i < GUARD; i++) assert_true(isnan(y[(size_t)n * rows + i])); /* nothing written past y */
    free(wdata);
    free(x);
    free(y);
    return worst;
}

static const int NS[] = {1, 3, 5, 6, 8, 17, 64};
static const int ROWS[] = {1, 7, 33, 130};
static const int COLS[] = {1, 5, 64, 100, 257};

static void check_all_shapes(void) {
    static const mt_isa isas[] = {MT_ISA_SCALAR, MT_ISA_AVX2, MT_ISA_AVX512, MT_ISA_AVX512BF16};
    const mt_isa saved = mt_kernels_isa();
    for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
        mt_kernels_set_isa(isas[ii]);
        if (mt_kernels_isa() != isas[ii]) continue; /* not supported here */
        for (int dt = 0; dt < MT_DTYPE_COUNT; dt++) {
            double worst = 0.0;
            for (size_t a = 0; a < sizeof NS / sizeof NS[0]; a++)
                for (size_t b = 0; b < sizeof ROWS / sizeof ROWS[0]; b++)
                    for (size_t c = 0; c < sizeof COLS / sizeof COLS[0]; c++) {
                        double e = check_one((mt_dtype)dt, NS[a], ROWS[b], COLS[c]);
                        if (e > worst) worst = e;
                    }
            printf("  %-10s %-4s threads=%d worst error %.3g\n", mt_isa_name(isas[ii]), mt_dtype_name((mt_dtype)dt),
                   mt_kernels_threads(), worst);
        }
    }
    mt_kernels_set_isa(saved);
}

static void test_matmul_before_init(void **state) {
    (void)state;
    assert_int_equal(mt_kernels_threads(), 1);
    check_all_shapes();
}

static void test_matmul_pool(void **state) {
    (void)state;
    mt_kernels_init(2);
    assert_int_equal(mt_kernels_threads(), 2);
    check_all_shapes();
    /* larger than one gemm panel in both directions, and many tasks */
    for (int dt = 0; dt < MT_DTYPE_COUNT; dt++) {
        check_one((mt_dtype)dt, 1, 1000, 700);
        check_one((mt_dtype)dt, 300, 200, 600);
    }
    mt_kernels_shutdown();
    assert_int_equal(mt_kernels_threads(), 1);
}

typedef struct cover_ctx {
    _Atomic int *hits;
    int nested;
} cover_ctx;

static void cover_fn(void *ctx, int i) {
    cover_ctx *c = ctx;
    atomic_fetch_add(&c->hits[i], 1);
}

static void nested_fn(void *ctx, int i) {
    cover_ctx *c = ctx;
    cover_ctx inner = {.hits = c->hits + (size_t)i * 4};
    mt_parallel_for(4, cover_fn, &inner); /* runs serially inside a loop body */
}

static void test_parallel_for_coverage(void **state) {
    (void)state;
    static const int counts[] = {0, 1, 2, 3, 7, 64, 1000, 12345};
    for (int threads = 1; threads <= 3; threads++) {
        mt_kernels_init(threads); /* also re-initialises a running pool */
        assert_int_equal(mt_kernels_threads(), threads);
        for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
            int n = counts[k];
            for (int rep = 0; rep < 20; rep++) {
                _Atomic int *hits = calloc((size_t)n * 4 + 1, sizeof *hits);
                assert_non_null(hits);
                cover_ctx c = {.hits = hits};
                if (rep % 2 == 0) {
                    mt_parallel_for(n, cover_fn, &c);
                    for (int i = 0; i < n; i++) assert_int_equal(atomic_load(&hits[i]), 1);
                } else {
                    mt_parallel_for(n, nested_fn, &c);
                    for (int i = 0; i < n * 4; i++) assert_int_equal(atomic_load(&hits[i]), 1);
                }
                assert_int_equal(atomic_load(&hits[(size_t)n * 4]), 0);
                free(hits);
            }
        }
    }
    mt_kernels_init(0); /* one per online CPU */
    assert_int_equal(mt_kernels_threads(), (int)sysconf(_SC_NPROCESSORS_ONLN));
    mt_kernels_shutdown();
    mt_kernels_shutdown(); /* harmless twice */
}

/* Back-to-back loops, some issued while the workers sleep, must each cover every index once. */
static void test_parallel_for_stress(void **state) {
    (void)state;
    mt_kernels_init(3);
    _Atomic int hits[97];
    for (int it = 0; it < 3000; it++) {
        int n = 1 + it % 97;
        for (int i = 0; i < n; i++) atomic_store(&hits[i], 0);
        cover_ctx c = {.hits = hits};
        if (it % 500 == 0) {
            struct timespec pause = {0, 2000000}; /* let the workers fall asleep */
            nanosleep(&pause, NULL);
        }
        mt_parallel_for(n, cover_fn, &c);
        for (int i = 0; i < n; i++) assert_int_equal(atomic_load(&hits[i]), 1);
    }
    mt_kernels_shutdown();
}

/* Items that take longer than the caller's spin (so it sleeps until the last worker wakes it),
 * mixed with quick loops: every loop still covers every index once and returns only when done. */
static void slow_fn(void *ctx, int i) {
    cover_ctx *c = ctx;
    if (i % 3 == 1) {
        struct timespec pause = {0, 400000}; /* 0.4 ms */
        nanosleep(&pause, NULL);
    }
    atomic_fetch_add(&c->hits[i], 1);
}

static void test_parallel_for_slow_items(void **state) {
    (void)state;
    mt_kernels_init(3);
    _Atomic int hits[16];
    for (int it = 0; it < 200; it++) {
        const int n = 1 + it % 16;
        for (int i = 0; i < n; i++) atomic_store(&hits[i], 0);
        cover_ctx c = {.hits = hits};
        mt_parallel_for(n, it % 2 ? slow_fn : cover_fn, &c);
        for (int i = 0; i < n; i++) assert_int_equal(atomic_load(&hits[i]), 1);
    }
    mt_kernels_shutdown();
}

static void test_isa_settings(void **state) {
    (void)state;
    const mt_isa best = mt_kernels_isa();
    assert_string_equal(mt_isa_name(MT_ISA_SCALAR), "scalar");
    assert_string_equal(mt_isa_name(MT_ISA_AVX512BF16), "avx512bf16");
    assert_int_equal(mt_kernels_set_isa(MT_ISA_SCALAR), best);
    assert_int_equal(mt_kernels_isa(), MT_ISA_SCALAR);
    assert_int_equal(mt_kernels_set_isa(best), MT_ISA_SCALAR);
    setenv("MOETRACE_ISA", "scalar", 1);
    mt_kernels_init(1);
    assert_int_equal(mt_kernels_isa(), MT_ISA_SCALAR);
    setenv("MOETRACE_ISA", "avx512bf16", 1); /* a cap above the CPU's level changes nothing */
    mt_kernels_init(1);
    assert_int_equal(mt_kernels_isa(), best);
    unsetenv("MOETRACE_ISA");
    mt_kernels_init(1);
    assert_int_equal(mt_kernels_isa(), best);
    printf("  best ISA here: %s\n", mt_isa_name(best));
    mt_kernels_shutdown();
}

/* Batch invariance: a token's output row must be bitwise the same whatever the batch around it
 * (size, its position in it) and the thread count, for each ISA separately. The reference is
 * the full 64-row product with 2 threads; every row is recomputed alone, inside windows of
 * several sizes at several offsets (covering the gemv and gemm kernels and their tile
 * remainders), and the full product again with 1 thread. */
#define INV_N 64

static void check_window(const mt_mat *w, const float *x, const float *yref, int start, int len, const char *what) {
    const int rows = w->rows, cols = w->cols;
    float *y = malloc(sizeof(float) * (size_t)len * rows);
    assert_non_null(y);
    mt_matmul(y, x + (size_t)start * cols, len, w);
    for (int t = 0; t < len; t++)
        if (memcmp(y + (size_t)t * rows, yref + (size_t)(start + t) * rows, sizeof(float) * (size_t)rows) != 0)
            fail_msg("%s %s %dx%d threads=%d %s: row %d differs in a window of %d rows at %d", mt_isa_name(mt_kernels_isa()),
                     mt_dtype_name(w->dtype), rows, cols, mt_kernels_threads(), what, start + t, len, start);
    free(y);
}

static void check_invariance(mt_dtype dt, int rows, int cols) {
    static const mt_isa isas[] = {MT_ISA_SCALAR, MT_ISA_AVX2, MT_ISA_AVX512, MT_ISA_AVX512BF16};
    static const int lens[] = {2, 3, 4, 5, 6, 7, 9, 13, 25, 63};
    void *wdata = make_weights(dt, rows, cols);
    mt_mat w = {.dtype = dt, .data = wdata, .rows = rows, .cols = cols};
    float *x = malloc(sizeof(float) * (size_t)INV_N * cols);
    float *yref = malloc(sizeof(float) * (size_t)INV_N * rows);
    assert_non_null(x);
    assert_non_null(yref);
    for (size_t i = 0; i < (size_t)INV_N * cols; i++) x[i] = rnd();
    for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
        mt_kernels_init(2);
        mt_kernels_set_isa(isas[ii]);
        if (mt_kernels_isa() != isas[ii]) continue; /* not supported here */
        mt_matmul(yref, x, INV_N, &w);
        for (int threads = 2; threads >= 1; threads--) {
            mt_kernels_init(threads);
            mt_kernels_set_isa(isas[ii]);
            check_window(&w, x, yref, 0, INV_N, "full batch");
            for (int i = 0; i < INV_N; i++) check_window(&w, x, yref, i, 1, "alone");
            for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
                const int len = lens[l];
                for (int start = 0; start + len <= INV_N; start += (len + 1) / 2 + 1)
                    check_window(&w, x, yref, start, len, "window");
                check_window(&w, x, yref, INV_N - len, len, "last window");
            }
        }
    }
    mt_kernels_shutdown();
    free(wdata);
    free(x);
    free(yref);
}

static void test_matmul_batch_invariance(void **state) {
    (void)state;
    for (int dt = 0; dt < MT_DTYPE_COUNT; dt++) {
        check_invariance((mt_dtype)dt, 97, 300);  /* tails: 97 rows, 300 = 18 * 16 + 12 columns */
        check_invariance((mt_dtype)dt, 203, 520); /* threaded even for a single token */
        check_invariance((mt_dtype)dt, 50, 4100); /* wider than the packed gemm panel */
    }
}

/* mt_matmul_group: every product of a group is bitwise what mt_matmul gives alone, for every
 * ISA and thread count, whatever the mix of token counts (gemv and gemm kernels in one loop),
 * with empty products in the group and more products than one dispatch takes. */
#define GROUP_OPS 70

static void test_matmul_group(void **state) {
    (void)state;
    static const mt_isa isas[] = {MT_ISA_SCALAR, MT_ISA_AVX2, MT_ISA_AVX512, MT_ISA_AVX512BF16};
    static const int ns[] = {1, 0, 3, 6, 17, 2, 64};
    mt_mat w[GROUP_OPS];
    mt_matmul_op ops[GROUP_OPS];
    float *x[GROUP_OPS], *y[GROUP_OPS], *ref[GROUP_OPS];
    for (int i = 0; i < GROUP_OPS; i++) {
        const mt_dtype dt = (mt_dtype)(i % MT_DTYPE_COUNT);
        const int rows = 16 + (i * 37) % 200, cols = 8 + (i * 53) % 300, n = ns[i % 7];
        w[i] = (mt_mat){.dtype = dt, .data = make_weights(dt, rows, cols), .rows = rows, .cols = cols};
        x[i] = malloc(sizeof(float) * ((size_t)n * cols + 1));
        y[i] = malloc(sizeof(float) * ((size_t)n * rows + 1));
        ref[i] = malloc(sizeof(float) * ((size_t)n * rows + 1));
        assert_true(x[i] && y[i] && ref[i]);
        for (size_t k = 0; k < (size_t)n * cols; k++) x[i][k] = rnd();
        ops[i] = (mt_matmul_op){y[i], x[i], n, &w[i]};
    }
    for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
        for (int threads = 2; threads >= 1; threads--) {
            mt_kernels_init(threads);
            mt_kernels_set_isa(isas[ii]);
            if (mt_kernels_isa() != isas[ii]) continue;
            for (int i = 0; i < GROUP_OPS; i++) {
                mt_matmul(ref[i], x[i], ops[i].n, &w[i]);
                memset(y[i], 0xff, sizeof(float) * (size_t)ops[i].n * w[i].rows);
            }
            mt_matmul_group(ops, GROUP_OPS);
            for (int i = 0; i < GROUP_OPS; i++)
                if (memcmp(y[i], ref[i], sizeof(float) * (size_t)ops[i].n * w[i].rows) != 0)
                    fail_msg("%s threads=%d: product %d of the group (n=%d, %dx%d %s) differs from mt_matmul",
                             mt_isa_name(isas[ii]), threads, i, ops[i].n, w[i].rows, w[i].cols, mt_dtype_name(w[i].dtype));
        }
    }
    mt_kernels_shutdown();
    for (int i = 0; i < GROUP_OPS; i++) {
        free((void *)w[i].data);
        free(x[i]);
        free(y[i]);
        free(ref[i]);
    }
}

int main(void) {
    unsetenv("MOETRACE_ISA");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_before_init),
        cmocka_unit_test(test_isa_settings),
        cmocka_unit_test(test_parallel_for_coverage),
        cmocka_unit_test(test_parallel_for_stress),
        cmocka_unit_test(test_parallel_for_slow_items),
        cmocka_unit_test(test_matmul_pool),
        cmocka_unit_test(test_matmul_batch_invariance),
        cmocka_unit_test(test_matmul_group),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
