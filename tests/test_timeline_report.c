/* The kernel timeline's report (bench/timeline_report.h, bench_cuda --figures timeline) on a
 * synthetic recording with a known schedule: two decode steps of a 4-layer model at batch 1, the
 * blocks shuffled as they come back from the device. Checks that the blocks regroup into their
 * launches in order, that each launch gets its name from its place in the layer, and the figures
 * of the middle layers. Needs no GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../bench/timeline_report.h"

enum { LAYERS = 4, STEPS = 2, MAX_BLOCKS = 20000 };

/* One layer's launches at batch 1, as the forward pass issues them. */
static const struct {
    int kind, grid;
} LAYER[] = {
    {MT_TL_LINEAR_SMALL, 320}, {MT_TL_QK_PREP, 5},       {MT_TL_ATTN_SPLIT, 32},      {MT_TL_ATTN_MERGE, 64},
    {MT_TL_LINEAR_SMALL, 128}, {MT_TL_RMSNORM, 1},       {MT_TL_LINEAR_SMALL, 8},     {MT_TL_ROUTE_SORT, 1},
    {MT_TL_LINEAR_SMALL, 264}, {MT_TL_LINEAR_SMALL, 264}, {MT_TL_COMBINE, 1},
};
enum { PER_LAYER = sizeof LAYER / sizeof LAYER[0] };

static const char *const LABELS[PER_LAYER] = {"q/k/v", "qk_prep", "attn_split", "attn_merge", "o", "rmsnorm",
                                               "router", "route_sort", "gate/up", "down", "combine"};

typedef struct recording {
    mt_tl_block rec[MAX_BLOCKS];
    size_t n;
    uint64_t now;   /* ns: when the last launch ended */
} recording;

/* A launch of grid blocks: resident 2 us before the launch before ends, wait returning 400 ns after
 * it (block b 8 ns later per block), each block busy 1000 + 4 b ns, then out. */
static void launch(recording *r, int kind, int grid) {
    uint64_t end = r->now;
    for (int b = 0; b < grid; b++) {
        mt_tl_block *x = &r->rec[r->n++];
        memset(x, 0, sizeof *x);
        x->kind = (uint32_t)kind;
        x->grid = (uint32_t)grid;
        x->block = (uint32_t)b;
        x->sm = (uint32_t)(b % 132);
        x->t_enter = r->now - 2000;
        x->t_wait = r->now + 400 + 8 * (uint64_t)b;
        x->t_exit = x->t_wait + 1000 + 4 * (uint64_t)b;
        if (x->t_exit > end) end = x->t_exit;
    }
    r->now = end;
}

/* folded: every layer but the last leaves its combine to the next layer's q/k/v product. */
static void record_steps(recording *r, bool folded) {
    r->n = 0;
    r->now = 1000000;
    for (int s = 0; s < STEPS; s++) {
        launch(r, MT_TL_EMBED, 1);
        launch(r, MT_TL_RMSNORM, 1);   /* the first layer's input norm (later ones come with the combine) */
        for (int l = 0; l < LAYERS; l++)
            for (int i = 0; i < PER_LAYER; i++) {
                if (folded && LAYER[i].kind == MT_TL_COMBINE && l + 1 < LAYERS) continue;
                launch(r, folded && i == 0 && l > 0 ? MT_TL_LINEAR_COMBINED : LAYER[i].kind, LAYER[i].grid);
            }
        launch(r, MT_TL_RMSNORM, 1);
        launch(r, MT_TL_LINEAR_SMALL, 264);   /* lm_head */
        launch(r, MT_TL_ARGMAX, 38);
        launch(r, MT_TL_ARGMAX, 1);
        r->now += 50000;   /* the host between steps */
    }
    /* the order the device's per-multiprocessor regions give back: anything */
    uint64_t seed = 12345;
    for (size_t i = r->n; i > 1; i--) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        size_t j = (size_t)(seed >> 33) % i;
        mt_tl_block t = r->rec[i - 1];
        r->rec[i - 1] = r->rec[j];
        r->rec[j] = t;
    }
}

static void test_launches_regroup_in_order(void **state) {
    (void)state;
    recording *r = malloc(sizeof *r);
    record_steps(r, false);
    tl_launch *ls = malloc(r->n * sizeof *ls);
    size_t nl = tl_launches(r->rec, r->n, ls);
    assert_int_equal(nl, (size_t)STEPS * (2 + LAYERS * PER_LAYER + 4));
    size_t at = 0;
    for (int s = 0; s < STEPS; s++) {
        assert_int_equal(ls[at].kind, MT_TL_EMBED);
        at += 2;
        for (int l = 0; l < LAYERS; l++)
            for (int i = 0; i < PER_LAYER; i++, at++) {
                assert_int_equal(ls[at].kind, LAYER[i].kind);
                assert_int_equal(ls[at].n, LAYER[i].grid);   /* every block of the launch, none of the next */
                assert_true(ls[at].wait0 > ls[at - 1].exit1);
            }
        at += 4;
    }
    free(ls);
    free(r);
}

/* The report of a recording of STEPS steps (caller frees). */
static tl_summary *summarize_steps(bool folded) {
    recording *r = malloc(sizeof *r);
    record_steps(r, folded);
    tl_summary *s = malloc(sizeof *s);
    tl_summarize(r->rec, r->n, LAYERS, s);
    free(r);
    return s;
}

static void test_names_and_figures(void **state) {
    (void)state;
    tl_summary *s = summarize_steps(false);
    assert_int_equal(s->steps, STEPS);
    assert_int_equal(s->tick, 12);   /* the smallest step between two blocks' exits */
    assert_int_equal(s->n_rows, PER_LAYER);
    for (int i = 0; i < PER_LAYER; i++) {
        const tl_row *w = &s->rows[i];
        assert_string_equal(w->label, LABELS[i]);
        assert_int_equal(w->count, STEPS * (LAYERS - 2));   /* layers 1 .. LAYERS-2 of each step */
        double c = w->count, g = LAYER[i].grid;
        assert_true(w->blocks / c == g);
        assert_true(w->start / c == -2000.0);
        assert_true(w->mean_start / c == -2000.0);   /* every block resident 2 us early */
        assert_true(w->release / c == 400.0);
        assert_true(w->wait_spread / c == 8.0 * (g - 1));
        assert_true(w->first_out / c == 1000.0);
        assert_true(w->last_out / c == 1000.0 + 12.0 * (g - 1));
        assert_true(w->share / c == 400.0 + 1000.0 + 12.0 * (g - 1));
    }
    double layer = 0;
    for (int i = 0; i < PER_LAYER; i++) layer += 1400.0 + 12.0 * (LAYER[i].grid - 1);
    assert_true(s->layer_ns == layer);
    free(s);
}

/* With the combine folded into the next q/k/v product, a layer ends at its down product. */
static void test_folded_combine(void **state) {
    (void)state;
    tl_summary *s = summarize_steps(true);
    assert_int_equal(s->steps, STEPS);
    assert_int_equal(s->n_rows, PER_LAYER - 1);
    assert_string_equal(s->rows[0].label, "q/k/v+combine");
    double layer = 0;
    for (int i = 0; i < PER_LAYER - 1; i++) {
        if (i > 0) assert_string_equal(s->rows[i].label, LABELS[i]);
        assert_int_equal(s->rows[i].count, STEPS * (LAYERS - 2));
        layer += 1400.0 + 12.0 * (LAYER[i].grid - 1);
    }
    assert_true(s->layer_ns == layer);
    free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_launches_regroup_in_order),
        cmocka_unit_test(test_names_and_figures),
        cmocka_unit_test(test_folded_combine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
