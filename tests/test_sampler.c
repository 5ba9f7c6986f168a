/* Sampling: greedy is argmax; top-k / top-p restrict the support; a seed reproduces a run;
 * frequencies follow the softmax of logits / temperature; min-p keeps what it should;
 * mt_sample_pick follows its definition
 * (kernels/sample.h) against a sort-based reference, ties and edge draws included; a token's
 * log-probability against a long-double reference. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/sampler.h"

static const float LOGITS[6] = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f};

static void test_greedy(void **state) {
    (void)state;
    mt_sampler s;
    mt_sampling_params p = {.temperature = 0.0f, .top_p = 1.0f};
    assert_int_equal(mt_sampler_init(&s, &p, 6), 0);
    for (int i = 0; i < 10; i++) assert_int_equal(mt_sample(&s, LOGITS), 1);
    mt_sampler_free(&s);
    float tie[3] = {2.0f, 5.0f, 5.0f};
    assert_int_equal(mt_argmax(tie, 3), 1);
}

static void test_top_k_and_top_p_support(void **state) {
    (void)state;
    mt_sampler s;
    mt_sampling_params p = {.temperature = 1.0f, .top_k = 2, .top_p = 1.0f, .seed = 3};
    assert_int_equal(mt_sampler_init(&s, &p, 6), 0);
    for (int i = 0; i < 500; i++) {
        int t = mt_sample(&s, LOGITS);
        assert_true(t == 1 || t == 5);
    }
    mt_sampler_free(&s);
    /* top_p 0.3: the most likely token alone already carries more than 30% */
    mt_sampling_params q = {.temperature = 1.0f, .top_p = 0.3f, .seed = 3};
    assert_int_equal(mt_sampler_init(&s, &q, 6), 0);
    for (int i = 0; i < 200; i++) assert_int_equal(mt_sample(&s, LOGITS), 1);
    mt_sampler_free(&s);
}

static void test_seed_reproduces(void **state) {
    (void)state;
    mt_sampler a, b, c;
    mt_sampling_params p = {.temperature = 0.8f, .top_p = 0.95f, .top_k = 5, .seed = 42};
    mt_sampling_params q = p;
    q.seed = 43;
    assert_int_equal(mt_sampler_init(&a, &p, 6), 0);
    assert_int_equal(mt_sampler_init(&b, &p, 6), 0);
    assert_int_equal(mt_sampler_init(&c, &q, 6), 0);
    int differ = 0;
    for (int i = 0; i < 100; i++) {
        int x = mt_sample(&a, LOGITS);
        assert_int_equal(x, mt_sample(&b, LOGITS));
        differ += x != mt_sample(&c, LOGITS);
    }
    assert_true(differ > 0);
    mt_sampler_free(&a);
    mt_sampler_free(&b);
    mt_sampler_free(&c);
}

static void test_frequencies(void **state) {
    (void)state;
    const float T = 0.7f;
    mt_sampler s;
    mt_sampling_params p = {.temperature = T, .top_p = 1.0f, .seed = 7};
    assert_int_equal(mt_sampler_init(&s, &p, 6), 0);
    int counts[6] = {0};
    const int N = 200000;
    for (int i = 0; i < N; i++) counts[mt_sample(&s, LOGITS)]++;
    double z = 0, prob[6];
    for (int i = 0; i < 6; i++) z += exp(LOGITS[i] / T);
    for (int i = 0; i < 6; i++) {
        prob[i] = exp(LOGITS[i] / T) / z;
        double f = (double)counts[i] / N, sd = sqrt(prob[i] * (1 - prob[i]) / N);
        assert_true(fabs(f - prob[i]) < 5 * sd + 1e-4);
    }
    mt_sampler_free(&s);
}

/* The definition of kernels/sample.h computed the slow way: sort the weights, walk them. */
static int desc_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int reference_pick(const mt_sample_row *r, const float *logits, int V) {
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) mx = fmaxf(mx, logits[i]);
    uint64_t *q = malloc((size_t)V * sizeof *q), *sorted = malloc((size_t)V * sizeof *sorted);
    for (int i = 0; i < V; i++) {
        float p = expf((logits[i] - mx) / r->temperature);
        q[i] = p >= 0.0f ? (uint64_t)ldexpf(p, MT_SAMPLE_FIXED_BITS) : 0;
        sorted[i] = q[i];
    }
    qsort(sorted, (size_t)V, sizeof *sorted, desc_u64);
    uint64_t t = 0;
    if (r->top_k > 0 && r->top_k < V) t = sorted[r->top_k - 1];
    if (r->top_p < 1.0f) {   /* top-p over the whole row, then the tokens both filters keep */
        uint64_t mass = 0;
        for (int i = 0; i < V; i++) mass += sorted[i];
        uint64_t need = (uint64_t)ceil((double)r->top_p * (double)mass), run = 0;
        if (need < 1) need = 1;
        for (int i = 0; i < V; i++) {   /* the value at which the mass of all q >= it reaches need */
            run += sorted[i];
            if (run >= need && (i + 1 == V || sorted[i + 1] != sorted[i])) {
                if (sorted[i] > t) t = sorted[i];
                break;
            }
        }
    }
    if (r->min_p > 0.0f) {   /* at least min_p times the top weight, in exact integers */
        uint64_t t_min = (uint64_t)ceil((double)r->min_p * (double)sorted[0]);
        if (t_min > t) t = t_min;
    }
    uint64_t kept = 0, run = 0;
    for (int i = 0; i < V; i++) kept += q[i] >= t ? q[i] : 0;
    unsigned __int128 at = ((unsigned __int128)kept * r->u24) >> 24;
    int tok = -1;
    for (int i = 0; i < V && tok < 0; i++)
        if (q[i] >= t && (run += q[i]) > at) tok = i;
    free(q);
    free(sorted);
    return tok < 0 ? mt_argmax(logits, V) : tok;
}

static void test_pick_matches_reference(void **state) {
    (void)state;
    enum { V = 3000 };
    static float logits[V];
    static uint64_t work[V];
    srand(11);
    const float temps[] = {0.3f, 1.0f, 2.5f};
    const int ks[] = {0, 1, 7, 50, V - 1};
    const float ps[] = {1.0f, 0.9f, 0.5f, 0.01f};
    const float min_ps[] = {0.0f, 0.05f, 0.3f, 1.0f};
    int checked = 0;
    for (int trial = 0; trial < 6; trial++) {
        /* coarse logits (many exact ties) in half of the trials */
        for (int i = 0; i < V; i++) {
            float x = (float)rand() / RAND_MAX * 12.0f - 6.0f;
            logits[i] = trial % 2 ? roundf(x * 2.0f) / 2.0f : x;
        }
        for (size_t a = 0; a < sizeof temps / sizeof *temps; a++)
            for (size_t b = 0; b < sizeof ks / sizeof *ks; b++)
                for (size_t c = 0; c < sizeof ps / sizeof *ps; c++) {
                    const uint32_t draws[] = {0u, 1u, 0xffffffu, (uint32_t)rand() & 0xffffffu, (uint32_t)rand() & 0xffffffu};
                    for (size_t d = 0; d < sizeof draws / sizeof *draws; d++) {
                        mt_sample_row r = {temps[a], ks[b], ps[c], draws[d], min_ps[(a + b + c + d) % 4]};
                        assert_int_equal(mt_sample_pick(&r, logits, V, work), reference_pick(&r, logits, V));
                        checked++;
                    }
                }
    }
    assert_int_equal(checked, 6 * 3 * 5 * 4 * 5);
}

static void test_pick_edges(void **state) {
    (void)state;
    uint64_t work[8];
    /* top-k keeps every logit tied with the k-th: ids 1, 2, 3 tie for second place */
    const float tie[6] = {5.0f, 4.0f, 4.0f, 4.0f, 0.0f, -3.0f};
    int seen[6] = {0};
    for (uint32_t u = 0; u < (1u << 24); u += 4099) {
        mt_sample_row r = {1.0f, 2, 1.0f, u, 0.0f};
        seen[mt_sample_pick(&r, tie, 6, work)]++;
    }
    assert_true(seen[0] && seen[1] && seen[2] && seen[3]);
    assert_true(!seen[4] && !seen[5]);
    /* draw 0 takes the first kept id, the largest draw the last one, in id order */
    mt_sample_row lo = {1.0f, 2, 1.0f, 0u, 0.0f}, hi = {1.0f, 2, 1.0f, 0xffffffu, 0.0f};
    assert_int_equal(mt_sample_pick(&lo, tie, 6, work), 0);
    assert_int_equal(mt_sample_pick(&hi, tie, 6, work), 3);
    /* top-k with top-p: each judges the whole row (SGLang's rule). Of p = .30 .15 .12 .11 .11 .11 .10,
     * top_k 3 keeps three and top_p 0.4 over the row keeps two (.30 + .15 reach .4 of .99), so two
     * are kept; top-p over the top three renormalised (vLLM's order) would keep .30 alone */
    const float joint[7] = {logf(.30f), logf(.15f), logf(.12f), logf(.11f), logf(.11f), logf(.11f), logf(.10f)};
    int kept[7] = {0};
    for (uint32_t u = 0; u < (1u << 24); u += 4099) {
        mt_sample_row r = {1.0f, 3, 0.4f, u, 0.0f};
        kept[mt_sample_pick(&r, joint, 7, work)]++;
    }
    assert_true(kept[0] && kept[1]);
    for (int i = 2; i < 7; i++) assert_int_equal(kept[i], 0);
    /* min-p keeps the tokens at least min_p times as likely as the top one: of p = .5 .3 .15 .05,
     * min_p 0.5 keeps .5 and .3 (.3 >= .25), min_p 0.1 also .15, and min_p 1 the top one alone; with
     * top_k 1 it changes nothing */
    const float mp_row[4] = {logf(.5f), logf(.3f), logf(.15f), logf(.05f)};
    const float mps[3] = {0.5f, 0.1f, 1.0f};
    const int kept_n[3] = {2, 3, 1};
    for (int m = 0; m < 3; m++) {
        int hit[4] = {0};
        for (uint32_t u = 0; u < (1u << 24); u += 4099) {
            mt_sample_row r = {.temperature = 1.0f, .top_p = 1.0f, .u24 = u, .min_p = mps[m]};
            hit[mt_sample_pick(&r, mp_row, 4, work)]++;
        }
        for (int i = 0; i < 4; i++) assert_true((hit[i] > 0) == (i < kept_n[m]));
    }
    /* the sampler hands its min_p to each row */
    mt_sampler ms;
    mt_sampling_params mpp = {.temperature = 1.0f, .top_p = 1.0f, .min_p = 0.25f, .seed = 1};
    assert_int_equal(mt_sampler_init(&ms, &mpp, 4), 0);
    assert_true(mt_sampler_next(&ms).min_p == 0.25f);
    mt_sampler_free(&ms);
    /* top_k 1 and a tiny top_p both leave the argmax alone */
    mt_sample_row k1 = {1.0f, 1, 1.0f, 0xffffffu, 0.0f}, p0 = {1.0f, 0, 1e-6f, 0xffffffu, 0.0f};
    assert_int_equal(mt_sample_pick(&k1, LOGITS, 6, work), 1);
    assert_int_equal(mt_sample_pick(&p0, LOGITS, 6, work), 1);
    /* NaN weighs nothing; all -inf (or NaN) falls back to the argmax */
    const float nan_row[4] = {NAN, 1.0f, NAN, 1.0f};
    for (uint32_t u = 0; u < (1u << 24); u += 65537) {
        mt_sample_row r = {1.0f, 0, 1.0f, u, 0.0f};
        int t = mt_sample_pick(&r, nan_row, 4, work);
        assert_true(t == 1 || t == 3);
    }
    const float dead[3] = {-INFINITY, NAN, -INFINITY};
    mt_sample_row r = {1.0f, 0, 0.9f, 12345u, 0.0f};
    assert_int_equal(mt_sample_pick(&r, dead, 3, work), 0);
    assert_int_equal(mt_argmax(dead, 3), 0);
    const float nan_first[3] = {NAN, -1.0f, 2.0f};
    assert_int_equal(mt_argmax(nan_first, 3), 2);
    /* a greedy row never consumes its generator's draws */
    mt_sampler s;
    mt_sampling_params g = {.temperature = 0.0f, .top_p = 1.0f, .seed = 5};
    assert_int_equal(mt_sampler_init(&s, &g, 6), 0);
    uint64_t before = s.state;
    assert_int_equal(mt_sampler_next(&s).temperature, 0.0f);
    assert_true(s.state == before);
    mt_sampler_free(&s);
}

/* mt_token_logprob against log(exp(x_t / T) / sum exp(x_i / T)) in long double, on random rows at
 * several temperatures (argmax rows at T = 1); the probabilities of a row sum to 1; NaN logits
 * weigh nothing and a -inf logit has probability 0. */
static void test_token_logprob(void **state) {
    (void)state;
    enum { V = 3000 };
    static float x[V];
    uint32_t seed = 7;
    const float temps[4] = {0.0f, 1.0f, 0.7f, 1.9f};
    for (int t = 0; t < 4; t++) {
        for (int i = 0; i < V; i++) {
            seed = seed * 1664525u + 1013904223u;
            x[i] = (float)((seed >> 8) % 20000) / 1000.0f - 10.0f;
        }
        mt_sample_row r = {.temperature = temps[t], .top_k = 5, .top_p = 0.5f};   /* filters are ignored */
        const long double T = temps[t] > 0.0f ? temps[t] : 1.0L;
        long double sum = 0.0L, total = 0.0L;
        for (int i = 0; i < V; i++) sum += expl((long double)x[i] / T);
        for (int i = 0; i < V; i++) {
            float lp = mt_token_logprob(&r, x, V, i);
            long double ref = (long double)x[i] / T - logl(sum);
            if (fabsl(lp - ref) > 1e-5L * fmaxl(1.0L, fabsl(ref))) fail_msg("T %g token %d: %.9g vs %.12Lg", temps[t], i, lp, ref);
            total += expl((long double)lp);
        }
        assert_true(fabsl(total - 1.0L) < 1e-4L);
        if (temps[t] <= 0.0f) assert_true(mt_token_logprob(NULL, x, V, 5) == mt_token_logprob(&r, x, V, 5));
    }
    float edge[4] = {NAN, 0.0f, -INFINITY, 0.0f};
    assert_true(fabsf(mt_token_logprob(NULL, edge, 4, 1) - logf(0.5f)) < 1e-7f);
    assert_true(isinf(mt_token_logprob(NULL, edge, 4, 2)) && mt_token_logprob(NULL, edge, 4, 2) < 0.0f);
    float none[2] = {-INFINITY, NAN};
    assert_true(isnan(mt_token_logprob(NULL, none, 2, 0)));
}

/* A listed place's order: larger logit first, ties to the lower id. */
static int by_logit(const void *a, const void *b) {
    const float *xa = *(const float *const *)a, *xb = *(const float *const *)b;
    if (*xa != *xb) return *xa > *xb ? -1 : 1;
    return xa < xb ? -1 : 1;
}

/* mt_top_logprobs against a full sort of the row's non-NaN logits (ties to the lower id), on rows of
 * rounded values (many ties), with NaN and -inf entries, for n up to MT_TOP_LOGPROBS_MAX and past the
 * listable count; each value equals mt_token_logprob's bitwise, and mt_score_row gives both. */
static void test_top_logprobs(void **state) {
    (void)state;
    enum { V = 700 };
    static float x[V];
    static const float *order[V];
    uint32_t seed = 11;
    for (int t = 0; t < 6; t++) {
        int listable = 0;
        for (int i = 0; i < V; i++) {
            seed = seed * 1664525u + 1013904223u;
            x[i] = (float)((seed >> 8) % 40) / 4.0f - 5.0f;   /* 40 distinct values: ties everywhere */
            if (t >= 2 && (seed >> 3) % 7 == 0) x[i] = NAN;
            if (t >= 3 && (seed >> 5) % 11 == 0) x[i] = -INFINITY;
            if (t == 5 && i >= 3) x[i] = NAN;   /* only 3 listable */
            if (x[i] == x[i]) order[listable++] = &x[i];
        }
        qsort(order, (size_t)listable, sizeof *order, by_logit);
        mt_sample_row r = {.temperature = t % 2 ? 0.7f : 0.0f};
        for (int n = 1; n <= MT_TOP_LOGPROBS_MAX; n += 4) {
            int32_t ids[MT_TOP_LOGPROBS_MAX];
            float lps[MT_TOP_LOGPROBS_MAX];
            int got = mt_top_logprobs(&r, x, V, n, ids, lps);
            assert_int_equal(got, n < listable ? n : listable);
            for (int j = 0; j < n; j++) {
                if (j >= got) {
                    assert_int_equal(ids[j], -1);
                    assert_true(isnan(lps[j]));
                    continue;
                }
                assert_int_equal(ids[j], (int)(order[j] - x));
                float want = mt_token_logprob(&r, x, V, ids[j]);
                assert_memory_equal(&lps[j], &want, sizeof want);
            }
            int32_t ids2[MT_TOP_LOGPROBS_MAX];
            float lps2[MT_TOP_LOGPROBS_MAX];
            float lp = mt_score_row(&r, x, V, 17, n, ids2, lps2, NULL, 0, NULL);
            float want = mt_token_logprob(&r, x, V, 17);
            assert_memory_equal(&lp, &want, sizeof lp);
            assert_memory_equal(ids2, ids, (size_t)n * sizeof *ids);
            assert_memory_equal(lps2, lps, (size_t)n * sizeof *lps);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_top_k_and_top_p_support),
        cmocka_unit_test(test_seed_reproduces),
        cmocka_unit_test(test_frequencies),
        cmocka_unit_test(test_pick_matches_reference),
        cmocka_unit_test(test_pick_edges),
        cmocka_unit_test(test_token_logprob),
        cmocka_unit_test(test_top_logprobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
