/* mt_attend against a double-precision softmax attention, for every SIMD level this CPU
 * supports: head groups of 1 to 12 heads (more than one kernel pass), head sizes on and off the
 * vector width, ranges inside one block, across blocks and with a sliding-window start, keys
 * and values scattered over shuffled cache blocks. Error: max |out - ref| / max |v| <= 1e-5.
 * Also: the result for a position range does not depend on where the blocks lie. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define BR 16     /* positions per block */
#define NBLK 40   /* blocks in the cache */
#define LAYERS 2  /* the kernel reads layer 1 of 2 */
#define KVH 2     /* key/value heads; the kernel reads head 1 */

static uint64_t g_rng = 0x2545f4914f6cdd1dull;

static float rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

typedef struct cache {
    int hd;
    float *k, *v;          /* [NBLK, LAYERS, BR, KVH * hd] */
    int32_t blocks[NBLK];  /* block table: logical block i lives in blocks[i] */
} cache;

static void cache_init(cache *c, int hd, float key_scale) {
    size_t n = (size_t)NBLK * LAYERS * BR * KVH * hd;
    c->hd = hd;
    c->k = malloc(n * sizeof(float));
    c->v = malloc(n * sizeof(float));
    assert_true(c->k && c->v);
    for (size_t i = 0; i < n; i++) {
        c->k[i] = rnd() * key_scale;
        c->v[i] = rnd();
    }
    for (int i = 0; i < NBLK; i++) c->blocks[i] = i;
    for (int i = NBLK - 1; i > 0; i--) { /* shuffle */
        int j = (int)((g_rng = g_rng * 6364136223846793005ull + 1) >> 33) % (i + 1);
        int32_t t = c->blocks[i];
        c->blocks[i] = c->blocks[j];
        c->blocks[j] = t;
    }
}

static mt_kv_pages pages_of(const cache *c, const int32_t *blocks) {
    const int ld = KVH * c->hd;
    return (mt_kv_pages){.k = c->k, .v = c->v, .blocks = blocks, .block_rows = BR, .row_stride = ld,
                         .block_stride = (size_t)LAYERS * BR * ld, .offset = (size_t)1 * BR * ld + (size_t)1 * c->hd};
}

static const float *row(const cache *c, const float *base, int p) {
    const mt_kv_pages pg = pages_of(c, c->blocks);
    return base + (size_t)c->blocks[p / BR] * pg.block_stride + pg.offset + (size_t)(p % BR) * pg.row_stride;
}

static void check(const cache *c, int g, int first, int last) {
    const int hd = c->hd;
    const float scale = 1.0f / sqrtf((float)hd);
    float *q = malloc(sizeof(float) * g * hd), *out = malloc(sizeof(float) * (g * hd + 1));
    double *s = malloc(sizeof(double) * (last + 1));
    assert_true(q && out && s);
    for (int i = 0; i < g * hd; i++) q[i] = rnd();
    out[g * hd] = 12345.0f;
    const mt_kv_pages pg = pages_of(c, c->blocks);
    mt_attend(out, q, g, hd, scale, &pg, first, last);
    assert_true(out[g * hd] == 12345.0f); /* nothing written past out */
    for (int h = 0; h < g; h++) {
        double mx = -INFINITY, sum = 0.0;
        for (int p = first; p <= last; p++) {
            const float *k = row(c, c->k, p);
            double d = 0.0;
            for (int i = 0; i < hd; i++) d += (double)q[h * hd + i] * k[i];
            s[p] = d * scale;
            if (s[p] > mx) mx = s[p];
        }
        for (int p = first; p <= last; p++) sum += exp(s[p] - mx);
        for (int i = 0; i < hd; i++) {
            double ref = 0.0;
            for (int p = first; p <= last; p++) ref += exp(s[p] - mx) / sum * row(c, c->v, p)[i];
            double err = fabs(out[h * hd + i] - ref);
            if (!(err <= 1e-5))
                fail_msg("%s g=%d hd=%d [%d, %d]: head %d dim %d = %.9g, reference %.9g", mt_isa_name(mt_kernels_isa()),
                         g, hd, first, last, h, i, out[h * hd + i], ref);
        }
    }
    free(q);
    free(out);
    free(s);
}

static void test_attend_reference(void **state) {
    (void)state;
    static const mt_isa isas[] = {MT_ISA_SCALAR, MT_ISA_AVX2, MT_ISA_AVX512, MT_ISA_AVX512BF16};
    static const int hds[] = {16, 24, 64, 128};
    static const int gs[] = {1, 3, 4, 8, 12};
    static const int ranges[][2] = {{0, 0}, {0, 15}, {0, 16}, {3, 9}, {5, 200}, {37, 300}, {0, NBLK * BR - 1}};
    for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
        mt_kernels_set_isa(isas[ii]);
        if (mt_kernels_isa() != isas[ii]) continue;
        for (size_t a = 0; a < sizeof hds / sizeof hds[0]; a++) {
            for (int sharp = 0; sharp < 2; sharp++) { /* sharp: large scores, the maximum moves a lot */
                cache c;
                cache_init(&c, hds[a], sharp ? 8.0f : 1.0f);
                for (size_t b = 0; b < sizeof gs / sizeof gs[0]; b++)
                    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) check(&c, gs[b], ranges[r][0], ranges[r][1]);
                free(c.k);
                free(c.v);
            }
        }
    }
}

/* The same positions stored in other blocks give the same bits. */
static void test_attend_placement(void **state) {
    (void)state;
    const int hd = 64, g = 4, last = 150;
    cache c;
    cache_init(&c, hd, 2.0f);
    float q[4 * 64], a[4 * 64], b[4 * 64];
    for (int i = 0; i < g * hd; i++) q[i] = rnd();
    mt_kv_pages pg = pages_of(&c, c.blocks);
    mt_attend(a, q, g, hd, 0.125f, &pg, 0, last);
    /* move every used block to an unused one */
    int32_t moved[NBLK];
    const int used = last / BR + 1;
    for (int i = 0; i < used; i++) {
        moved[i] = c.blocks[NBLK - 1 - i];
        size_t from = (size_t)c.blocks[i] * pg.block_stride, to = (size_t)moved[i] * pg.block_stride;
        memcpy(c.k + to, c.k + from, pg.block_stride * sizeof(float));
        memcpy(c.v + to, c.v + from, pg.block_stride * sizeof(float));
    }
    pg = pages_of(&c, moved);
    mt_attend(b, q, g, hd, 0.125f, &pg, 0, last);
    assert_memory_equal(a, b, sizeof a);
    free(c.k);
    free(c.v);
}

int main(void) {
    unsetenv("MOETRACE_ISA");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attend_reference),
        cmocka_unit_test(test_attend_placement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
