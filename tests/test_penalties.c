/* Penalties, logit bias, min_new_tokens and min-p through the engine:
 *  - mt_logit_adjusted's rule on positive, negative, zero, NaN and infinite logits;
 *  - a sequence's changes (engine/penalties.h): which tokens, sorted, what scale and addition, the
 *    bars lifted at min_new_tokens;
 *  - greedy generation with every penalty and a bias, through the batched engine, against a dense
 *    reference written from the rules alone (each step's logits from a fresh forward pass of the
 *    whole sequence, counted and changed over the full vocabulary): the same tokens;
 *  - a +100 bias forces its token; min_new_tokens keeps a stop token out of the first tokens;
 *    submit refuses out-of-range values. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "engine/generate.h"
#include "engine/penalties.h"
#include "kernels/sample.h"

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"

static void test_adjusted_rule(void **state) {
    (void)state;
    mt_logit_adjust a = {0, 0, 2.0f, 0.5f};
    assert_true(mt_logit_adjusted(3.0f, &a) == 2.0f);     /* 3 / 2 + 0.5 */
    assert_true(mt_logit_adjusted(-3.0f, &a) == -5.5f);   /* -3 * 2 + 0.5 */
    assert_true(mt_logit_adjusted(0.0f, &a) == 0.5f);
    assert_true(isnan(mt_logit_adjusted(NAN, &a)));
    assert_true(mt_logit_adjusted(INFINITY, &a) == INFINITY);
    mt_logit_adjust bar = {0, 0, 2.0f, -INFINITY};
    assert_true(mt_logit_adjusted(INFINITY, &bar) == -INFINITY);   /* barred, whatever it was */
    assert_true(mt_logit_adjusted(NAN, &bar) == -INFINITY);
    mt_logit_adjust plain = {0, 0, 1.0f, -1.25f};
    assert_true(mt_logit_adjusted(7.0f, &plain) == 5.75f);
    assert_true(mt_logit_adjusted(-7.0f, &plain) == -8.25f);
}

static void test_changes_of_a_sequence(void **state) {
    (void)state;
    mt_err err;
    mt_penalties p;
    mt_sampling_params sp = {.repetition_penalty = 1.5f, .frequency_penalty = 0.5f, .presence_penalty = 0.25f,
                             .min_new_tokens = 2};
    const int32_t prompt[] = {9, 4, 9, 7};
    const int32_t bias_ids[] = {20, 4};
    const float bias[] = {3.0f, -1.0f};
    const int32_t barred[] = {2, 30, 2};
    assert_int_equal(mt_penalties_init(&p, &sp, prompt, 4, 8, bias_ids, bias, 2, barred, 3, &err), 0);
    assert_true(mt_penalties_on(&p));
    mt_logit_adjust out[32];
    /* before any output: the prompt's tokens scaled, the biases, the bars */
    int n = mt_penalties_row(&p, 5, 0, out);
    assert_int_equal(n, 6);
    const int32_t tokens0[] = {2, 4, 7, 9, 20, 30};
    for (int i = 0; i < n; i++) {
        assert_int_equal(out[i].row, 5);
        assert_int_equal(out[i].token, tokens0[i]);
    }
    assert_true(out[0].add == -INFINITY);
    assert_true(out[1].scale == 1.5f && out[1].add == -1.0f);   /* token 4: prompt + bias */
    assert_true(out[2].scale == 1.5f && out[2].add == 0.0f);
    assert_true(out[4].scale == 1.0f && out[4].add == 3.0f);    /* token 20: bias alone */
    /* outputs 9, 12, 12: counts 1 and 2, each minus f * count and p once */
    mt_penalties_add_output(&p, 9);
    mt_penalties_add_output(&p, 12);
    mt_penalties_add_output(&p, 12);
    n = mt_penalties_row(&p, 0, 3, out);   /* 3 out: the bars are lifted */
    assert_int_equal(n, 5);
    const int32_t tokens1[] = {4, 7, 9, 12, 20};
    for (int i = 0; i < n; i++) assert_int_equal(out[i].token, tokens1[i]);
    assert_true(out[2].scale == 1.5f && out[2].add == -0.75f);   /* 9: -0.5 - 0.25 */
    assert_true(out[3].scale == 1.5f && out[3].add == -1.25f);   /* 12: -1.0 - 0.25 */
    assert_true(out[4].add == 3.0f);
    assert_true(mt_penalties_max_changes(&p) >= n);
    mt_penalties_free(&p);

    /* nothing asked: no change at all */
    mt_sampling_params none = {.temperature = 1.0f};
    assert_int_equal(mt_penalties_init(&p, &none, prompt, 4, 8, NULL, NULL, 0, barred, 3, &err), 0);
    assert_false(mt_penalties_on(&p));
    mt_penalties_add_output(&p, 9);
    assert_int_equal(mt_penalties_row(&p, 0, 1, out), 0);
    mt_penalties_free(&p);
    /* presence alone: the prompt does not count */
    mt_sampling_params pres = {.presence_penalty = -0.5f};
    assert_int_equal(mt_penalties_init(&p, &pres, prompt, 4, 8, NULL, NULL, 0, NULL, 0, &err), 0);
    assert_int_equal(mt_penalties_row(&p, 0, 0, out), 0);
    mt_penalties_add_output(&p, 7);
    assert_int_equal(mt_penalties_row(&p, 0, 1, out), 1);
    assert_true(out[0].token == 7 && out[0].scale == 1.0f && out[0].add == 0.5f);
    mt_penalties_free(&p);
    /* a token biased twice is refused */
    const int32_t twice[] = {5, 5};
    assert_int_equal(mt_penalties_init(&p, &none, prompt, 4, 8, twice, bias, 2, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "named twice"));
}

typedef struct outputs {
    int32_t tokens[4][16];
    int n[4];
} outputs;

static void on_event(void *ctx, const mt_engine_event *ev) {
    outputs *o = ctx;
    if (ev->kind != MT_EVENT_FINISHED) return;
    memcpy(o->tokens[ev->id], ev->output, (size_t)ev->n_generated * sizeof(int32_t));
    o->n[ev->id] = ev->n_generated;
}

/* The next token after seq[0..n) under the rules, densely: a fresh pass over the whole sequence
 * (its last logits), each vocabulary token counted in the output (seq[n_prompt..n)) and looked for
 * in the prompt, changed by the rules of engine/penalties.h, then the argmax. */
static int32_t reference_next(const mt_model *m, const int32_t *seq, int n, int n_prompt, const mt_sampling_params *sp,
                              const int32_t *bias_ids, const float *bias, int n_bias) {
    int V = m->cfg.vocab_size;
    float *logits = malloc((size_t)n * V * sizeof *logits);
    int32_t one;
    int got;
    mt_err err;
    mt_generate_opts o = {.max_new_tokens = 1, .ignore_eos = true, .prompt_logits = logits};
    if (mt_generate(m, seq, n, &o, &one, &got, &err)) fail_msg("%s", err.msg);
    float *x = logits + (size_t)(n - 1) * V;
    for (int t = 0; t < V; t++) {
        int count = 0, in_prompt = 0;
        for (int i = 0; i < n; i++) {
            if (seq[i] != t) continue;
            if (i < n_prompt) in_prompt = 1;
            else count++;
        }
        float b = 0.0f;
        for (int j = 0; j < n_bias; j++)
            if (bias_ids[j] == t) b = bias[j];
        float v = x[t], r = sp->repetition_penalty > 0.0f ? sp->repetition_penalty : 1.0f;
        if (count > 0 || in_prompt) v = v > 0.0f ? v / r : v * r;
        float add = b;
        if (count > 0) {
            float by_count = sp->frequency_penalty * (float)count;
            add = add - by_count;
            add = add - sp->presence_penalty;
        }
        v = v + add;
        if (n - n_prompt < sp->min_new_tokens && mt_config_is_eos(&m->cfg, t)) v = -INFINITY;
        x[t] = v;
    }
    int32_t best = (int32_t)mt_argmax(x, V);
    free(logits);
    return best;
}

static void test_engine_against_dense_reference(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    enum { G = 10, P = 12 };
    int32_t prompt[P];
    for (int i = 0; i < P; i++) prompt[i] = 3 + (i * 37) % 50;
    const int32_t bias_ids[] = {5, 41, 17};
    const float bias[] = {1.5f, -2.0f, 0.75f};
    mt_sampling_params kinds[4] = {
        {.top_p = 1.0f},   /* none: the plain greedy output */
        {.top_p = 1.0f, .repetition_penalty = 1.8f},
        {.top_p = 1.0f, .frequency_penalty = 1.5f, .presence_penalty = 0.5f, .min_new_tokens = 4},
        {.top_p = 1.0f, .repetition_penalty = 0.7f, .frequency_penalty = -0.5f, .presence_penalty = 1.0f},
    };
    outputs out = {0};
    mt_engine_opts eo = {.num_kv_blocks = 64, .max_batch_tokens = 64, .max_running = 4, .prefix_cache = true};
    mt_engine *e = mt_engine_new(&m, &eo, on_event, &out, NULL, &err);
    assert_non_null(e);
    for (int k = 0; k < 4; k++) {
        mt_request r = {.id = k, .prompt = prompt, .n_prompt = P, .max_new_tokens = G, .ignore_eos = true,
                        .sampling = kinds[k], .bias_ids = k == 3 ? bias_ids : NULL, .bias_values = k == 3 ? bias : NULL,
                        .n_bias = k == 3 ? 3 : 0};
        if (mt_engine_submit(e, &r, &err)) fail_msg("%s", err.msg);
    }
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    mt_engine_free(e);
    int differ_from_plain = 0;
    for (int k = 0; k < 4; k++) {
        assert_int_equal(out.n[k], G);
        int32_t seq[P + G];
        memcpy(seq, prompt, sizeof prompt);
        for (int g = 0; g < G; g++) {
            int32_t want = reference_next(&m, seq, P + g, P, &kinds[k], k == 3 ? bias_ids : NULL,
                                          k == 3 ? bias : NULL, k == 3 ? 3 : 0);
            if (out.tokens[k][g] != want) fail_msg("request %d token %d: engine %d, reference %d", k, g, out.tokens[k][g], want);
            seq[P + g] = want;
        }
        if (k > 0) differ_from_plain += memcmp(out.tokens[k], out.tokens[0], G * sizeof(int32_t)) != 0;
    }
    assert_true(differ_from_plain >= 2);   /* the penalties change what the model says */
    mt_model_free(&m);
}

static void test_bias_and_min_new_tokens(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    int32_t prompt[8] = {3, 14, 15, 9, 26, 5, 35, 8};
    outputs out = {0};
    mt_engine_opts eo = {.num_kv_blocks = 32, .max_batch_tokens = 64, .max_running = 4, .prefix_cache = true};
    mt_engine *e = mt_engine_new(&m, &eo, on_event, &out, NULL, &err);
    /* the plain greedy output, to name its first token as a stop token */
    mt_request plain = {.id = 0, .prompt = prompt, .n_prompt = 8, .max_new_tokens = 6, .ignore_eos = true,
                        .sampling = {.top_p = 1.0f}};
    if (mt_engine_submit(e, &plain, &err)) fail_msg("%s", err.msg);
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    int32_t first = out.tokens[0][0];
    /* +100 on one token: every token is it */
    const int32_t forced[] = {42};
    const float plus[] = {100.0f};
    mt_request biased = plain;
    biased.id = 1;
    biased.bias_ids = forced;
    biased.bias_values = plus;
    biased.n_bias = 1;
    /* the first token as a stop token, barred for 3 tokens */
    mt_request held = plain;
    held.id = 2;
    held.stop_ids = &first;
    held.n_stop = 1;
    held.sampling.min_new_tokens = 3;
    mt_request stopped = held;   /* without min_new_tokens it stops at once */
    stopped.id = 3;
    stopped.sampling.min_new_tokens = 0;
    if (mt_engine_submit(e, &biased, &err) || mt_engine_submit(e, &held, &err) || mt_engine_submit(e, &stopped, &err))
        fail_msg("%s", err.msg);
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    for (int g = 0; g < 6; g++) assert_int_equal(out.tokens[1][g], 42);
    assert_int_equal(out.n[3], 1);
    assert_int_equal(out.tokens[3][0], first);
    assert_true(out.n[2] >= 3);
    for (int g = 0; g < 3; g++) assert_int_not_equal(out.tokens[2][g], first);

    /* refused at submit */
    mt_request bad = plain;
    bad.id = 9;
    bad.sampling.min_p = 1.5f;
    assert_int_equal(mt_engine_submit(e, &bad, &err), -1);
    bad.sampling.min_p = 0.0f;
    bad.sampling.frequency_penalty = NAN;
    assert_int_equal(mt_engine_submit(e, &bad, &err), -1);
    bad.sampling.frequency_penalty = 0.0f;
    const int32_t outside[] = {m.cfg.vocab_size};
    bad.bias_ids = outside;
    bad.bias_values = plus;
    bad.n_bias = 1;
    assert_int_equal(mt_engine_submit(e, &bad, &err), -1);
    assert_non_null(strstr(err.msg, "logit bias"));
    const float inf[] = {INFINITY};
    bad.bias_ids = forced;
    bad.bias_values = inf;
    assert_int_equal(mt_engine_submit(e, &bad, &err), -1);
    bad.n_bias = 0;
    bad.stop_ids = outside;
    bad.n_stop = 1;
    assert_int_equal(mt_engine_submit(e, &bad, &err), -1);
    assert_non_null(strstr(err.msg, "stop token"));
    mt_engine_free(e);
    mt_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adjusted_rule),
        cmocka_unit_test(test_changes_of_a_sequence),
        cmocka_unit_test(test_engine_against_dense_reference),
        cmocka_unit_test(test_bias_and_min_new_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
