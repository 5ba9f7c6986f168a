/* Helpers for tests against the transformers fixtures (tests/fixtures/make_fixtures.py): reading
 * the reference arrays, logits relative error, routing-set agreement. Header-only; include after
 * cmocka.h. */
#ifndef MT_TESTS_REFERENCE_COMMON_H
#define MT_TESTS_REFERENCE_COMMON_H

#include <math.h>
#include <stdio.h>

#include "engine/engine.h"
#include "engine/generate.h"
#include "model/config.h"
#include "model/model.h"
#include "routing/capture.h"
#include "util/npy.h"

#define FIXTURES MT_SOURCE_DIR "/tests/fixtures/models"

static const char *ARCHS[] = {"qwen3_moe", "qwen2_moe", "mixtral", "olmoe"};
/* Fixtures with rotary scaling (tests/fixtures/make_rope_fixtures.py): yarn, linear. */
static const char *ROPE_VARIANTS[] = {"qwen3_moe_yarn", "qwen2_moe_linear", "olmoe_yarn"};

/* Whether a rotary fixture has been made (on a machine with transformers, then committed); says so
 * when it has not. */
static int rope_fixture_made(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/ref_logits_long.npy", dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        return 1;
    }
    print_message("  %s not made yet: run tests/fixtures/make_rope_fixtures.py where transformers is\n", dir);
    return 0;
}
static const char *PROMPTS[] = {"short", "long"};

static void load_npy(const char *dir, const char *what, const char *prompt, mt_npy *out) {
    char path[512];
    mt_err err;
    snprintf(path, sizeof path, "%s/ref_%s_%s.npy", dir, what, prompt);
    if (mt_npy_read(path, out, &err)) fail_msg("%s", err.msg);
}

static double rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

/* Fraction of (token, layer) pairs of MoE layers whose expert sets agree; also requires -1
 * exactly on dense layers. */
static double routing_agreement(const int32_t *ours, const int32_t *ref, int rows, int layers, int k,
                                const mt_config *c) {
    long same = 0, total = 0;
    for (int t = 0; t < rows; t++) {
        for (int l = 0; l < layers; l++) {
            const int32_t *a = ours + ((size_t)t * layers + l) * k, *b = ref + ((size_t)t * layers + l) * k;
            if (!c->layer_is_moe[l]) {
                for (int j = 0; j < k; j++) assert_int_equal(a[j], -1);
                assert_int_equal(b[0], -1);
                continue;
            }
            int match = 0;
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++) match += a[i] == b[j];
            same += match == k;
            total++;
        }
    }
    return (double)same / (double)total;
}

/* One fixture prompt run on m (greedy, the reference's number of new tokens) and compared. */
typedef struct fixture_result {
    int P, G;
    double logits_rel_err;
    int greedy_equal;          /* leading generated tokens equal to the reference's */
    double routing_agreement;  /* over the tokens both runs forwarded: the prompt, then the
                                * generated tokens before the first difference */
    double last_margin;        /* reference top-1 minus top-2 logit at the last prompt position */
    double last_max_err;       /* our largest absolute logit error there */
} fixture_result;

static fixture_result run_fixture(const mt_model *m, const char *dir, const char *prompt_name) {
    const mt_config *c = &m->cfg;
    mt_npy prompt, logits, routing, tokens;
    load_npy(dir, "prompt", prompt_name, &prompt);
    load_npy(dir, "logits", prompt_name, &logits);
    load_npy(dir, "routing", prompt_name, &routing);
    load_npy(dir, "tokens", prompt_name, &tokens);
    fixture_result r = {(int)prompt.count, (int)tokens.count, 0, 0, 0, 0, 0};
    int P = r.P, G = r.G, V = c->vocab_size;
    float *ours = malloc((size_t)P * V * sizeof *ours);
    int32_t out[64];
    int n_out = 0;
    mt_err err;
    mt_routing_table table;
    assert_int_equal(mt_routing_table_init(&table, c->num_hidden_layers, c->top_k, 4), 0);
    mt_routing_sink sink = mt_routing_table_sink(&table);
    mt_generate_opts o = {.max_new_tokens = G, .ignore_eos = true, .prompt_logits = ours, .sink = &sink};
    if (mt_generate(m, prompt.data, P, &o, out, &n_out, &err)) fail_msg("%s: %s", dir, err.msg);
    assert_int_equal(n_out, G);
    assert_int_equal(table.rows, routing.shape[0]);
    r.logits_rel_err = rel_err(ours, logits.data, (size_t)P * V);
    while (r.greedy_equal < G && out[r.greedy_equal] == ((int32_t *)tokens.data)[r.greedy_equal]) r.greedy_equal++;
    int shared_rows = P + (r.greedy_equal < G ? r.greedy_equal : G - 1);
    r.routing_agreement = routing_agreement(table.ids, routing.data, shared_rows, c->num_hidden_layers, c->top_k, c);
    const float *ref_last = (const float *)logits.data + (size_t)(P - 1) * V, *our_last = ours + (size_t)(P - 1) * V;
    float a = -INFINITY, b = -INFINITY;
    for (int i = 0; i < V; i++) {
        if (ref_last[i] > a) { b = a; a = ref_last[i]; }
        else if (ref_last[i] > b) b = ref_last[i];
        double d = fabs((double)our_last[i] - ref_last[i]);
        if (d > r.last_max_err) r.last_max_err = d;
    }
    r.last_margin = (double)a - b;
    mt_routing_table_free(&table);
    free(ours);
    mt_npy_free(&prompt);
    mt_npy_free(&logits);
    mt_npy_free(&routing);
    mt_npy_free(&tokens);
    return r;
}

/* Scored prompts: an engine request scoring every prompt token after the first (score_from 1) with
 * SCORE_TOP alternatives, run in chunks. Against the model's own logits of one pass over the prompt
 * (mt_generate's prompt logits, which run_fixture checks against the reference): the listed ids
 * exactly those of mt_top_logprobs, every value within self_tol of the host's log_softmax of them.
 * Against the reference's logits: every value within 2 max|ours - ref| of the position's logits (what
 * log_softmax can move by) + self_tol, and every token whose reference log-probability exceeds the
 * last listed one's by more than twice that listed. The request's tokens equal an unscored run's,
 * and scoring prompt + generated tokens gives the generated tokens the log-probabilities they were
 * generated with, bit for bit (a position scored in a prefill, or decoded, computes the same).
 * Returns the largest difference from the reference. */
#define SCORE_TOP 5
typedef struct score_capture {
    int n_top, n_out;
    float *lp, out_lp[64];
    int32_t *top_ids, out[64];
    float *top_lps;
} score_capture;

static void on_score_event(void *ctx, const mt_engine_event *ev) {
    score_capture *sc = ctx;
    if (ev->kind != MT_EVENT_FINISHED) return;
    sc->n_out = ev->n_generated;
    memcpy(sc->out, ev->output, (size_t)ev->n_generated * sizeof *ev->output);
    if (ev->logprobs) memcpy(sc->out_lp, ev->logprobs, (size_t)ev->n_generated * sizeof *ev->logprobs);
    if (!ev->prompt_logprobs) return;
    sc->n_top = ev->n_top;
    memcpy(sc->lp, ev->prompt_logprobs, (size_t)ev->n_prompt * sizeof *sc->lp);
    memcpy(sc->top_ids, ev->prompt_top_ids, (size_t)ev->n_prompt * ev->n_top * sizeof *sc->top_ids);
    memcpy(sc->top_lps, ev->prompt_top_logprobs, (size_t)ev->n_prompt * ev->n_top * sizeof *sc->top_lps);
}

static void log_softmax_row(const float *row, int V, double *out) {
    double mx = -INFINITY, sum = 0.0;
    for (int i = 0; i < V; i++) mx = row[i] > mx ? row[i] : mx;
    for (int i = 0; i < V; i++) sum += exp((double)row[i] - mx);
    for (int i = 0; i < V; i++) out[i] = (double)row[i] - mx - log(sum);
}

static double check_scores(const mt_model *m, const char *dir, const char *prompt_name, double self_tol) {
    const mt_config *c = &m->cfg;
    mt_npy prompt, logits, tokens;
    load_npy(dir, "prompt", prompt_name, &prompt);
    load_npy(dir, "logits", prompt_name, &logits);
    load_npy(dir, "tokens", prompt_name, &tokens);
    int P = (int)prompt.count, G = (int)tokens.count, V = c->vocab_size;
    const int32_t *ids = prompt.data;
    mt_err err;
    float *ours = malloc((size_t)P * V * sizeof *ours);
    int32_t first;
    int n_first = 0;
    mt_generate_opts go = {.max_new_tokens = 1, .ignore_eos = true, .prompt_logits = ours};
    if (mt_generate(m, ids, P, &go, &first, &n_first, &err)) fail_msg("%s", err.msg);
    score_capture runs[3];
    int32_t *whole = malloc((size_t)(P + G) * sizeof *whole);
    for (int scored = 0; scored < 3; scored++) {   /* generate; score the prompt; score prompt + output */
        score_capture *sc = &runs[scored];
        *sc = (score_capture){.lp = malloc((size_t)P * sizeof(float)), .top_ids = malloc((size_t)P * SCORE_TOP * sizeof(int32_t)),
                              .top_lps = malloc((size_t)P * SCORE_TOP * sizeof(float))};
        mt_engine_opts o = {.num_kv_blocks = 64, .max_batch_tokens = 24, .max_running = 2, .prefix_cache = true};
        mt_engine *e = mt_engine_new(m, &o, on_score_event, sc, NULL, &err);
        if (!e) fail_msg("%s", err.msg);
        mt_request r = {.id = 1, .prompt = ids, .n_prompt = P, .max_new_tokens = G, .ignore_eos = true,
                        .return_logprob = scored == 0, .score_from = scored, .top_logprobs = scored ? SCORE_TOP : 0};
        if (scored == 2) {
            memcpy(whole, ids, (size_t)P * sizeof *whole);
            memcpy(whole + P, runs[0].out, (size_t)runs[0].n_out * sizeof *whole);
            r = (mt_request){.id = 1, .prompt = whole, .n_prompt = P + runs[0].n_out, .max_new_tokens = 0,
                             .score_from = P, .top_logprobs = 1};
            free(sc->lp);
            free(sc->top_ids);
            free(sc->top_lps);
            sc->lp = malloc((size_t)(P + G) * sizeof(float));
            sc->top_ids = malloc((size_t)(P + G) * sizeof(int32_t));
            sc->top_lps = malloc((size_t)(P + G) * sizeof(float));
        }
        if (mt_engine_submit(e, &r, &err)) fail_msg("%s", err.msg);
        while (!mt_engine_idle(e))
            if (mt_engine_step(e, &err) < 0) fail_msg("%s", err.msg);
        mt_engine_free(e);
    }
    assert_int_equal(runs[0].n_out, runs[1].n_out);   /* scoring leaves the generated tokens alone */
    assert_memory_equal(runs[0].out, runs[1].out, (size_t)runs[0].n_out * sizeof(int32_t));
    for (int i = 0; i < runs[0].n_out; i++)   /* the generated tokens scored as a prompt */
        if (memcmp(&runs[2].lp[P + i], &runs[0].out_lp[i], sizeof(float)))
            fail_msg("%s %s output %d: scored %.9g, generated with %.9g", dir, prompt_name, i, runs[2].lp[P + i],
                     runs[0].out_lp[i]);
    free(whole);
    const score_capture *sc = &runs[1];
    assert_int_equal(sc->n_top, SCORE_TOP);
    assert_true(isnan(sc->lp[0]) && sc->top_ids[0] == -1);
    double worst = 0.0;
    double *ref = malloc((size_t)V * sizeof *ref), *own = malloc((size_t)V * sizeof *own);
    for (int p = 1; p < P; p++) {
        const float *ref_row = (const float *)logits.data + (size_t)(p - 1) * V, *our_row = ours + (size_t)(p - 1) * V;
        double moved = 0.0;   /* max |ours - ref| over the row */
        for (int i = 0; i < V; i++) moved = fmax(moved, fabs((double)our_row[i] - ref_row[i]));
        double bound = 2 * moved + self_tol;
        log_softmax_row(ref_row, V, ref);
        log_softmax_row(our_row, V, own);
        int32_t want_ids[SCORE_TOP];
        float want_lps[SCORE_TOP];
        mt_top_logprobs(NULL, our_row, V, SCORE_TOP, want_ids, want_lps);
        const int32_t *top = sc->top_ids + (size_t)p * SCORE_TOP;
        const float *top_lp = sc->top_lps + (size_t)p * SCORE_TOP;
        if (memcmp(top, want_ids, sizeof want_ids))
            fail_msg("%s %s position %d: listed ids differ from the top of the model's own logits", dir, prompt_name, p);
        if (fabs(sc->lp[p] - own[ids[p]]) > self_tol)
            fail_msg("%s %s position %d: %.6f against %.6f from the model's own logits", dir, prompt_name, p, sc->lp[p], own[ids[p]]);
        double d = fabs(sc->lp[p] - ref[ids[p]]);
        if (d > bound) fail_msg("%s %s position %d: %.5f off the reference, bound %.5f", dir, prompt_name, p, d, bound);
        worst = d > worst ? d : worst;
        for (int j = 0; j < SCORE_TOP; j++) {
            if (j > 0) assert_true(top_lp[j] <= top_lp[j - 1]);
            assert_true(fabs(top_lp[j] - own[top[j]]) <= self_tol);
            if (top[j] == ids[p]) assert_true(top_lp[j] == sc->lp[p]);   /* the same value, bitwise */
            d = fabs(top_lp[j] - ref[top[j]]);
            if (d > bound) fail_msg("%s %s position %d: alternative %d off the reference by %.5f", dir, prompt_name, p, j, d);
            worst = d > worst ? d : worst;
        }
        double kth = ref[top[SCORE_TOP - 1]];
        for (int i = 0; i < V; i++) {
            if (!(ref[i] > kth + 2 * bound)) continue;
            bool listed = false;   /* a token clearly above the last listed one must be listed */
            for (int j = 0; j < SCORE_TOP; j++) listed |= top[j] == i;
            if (!listed) fail_msg("%s %s position %d: token %d (ref %.4f) missing from the top list", dir, prompt_name, p, i, ref[i]);
        }
    }
    free(ref);
    free(own);
    free(ours);
    for (int k = 0; k < 3; k++) {
        free(runs[k].lp);
        free(runs[k].top_ids);
        free(runs[k].top_lps);
    }
    mt_npy_free(&prompt);
    mt_npy_free(&logits);
    mt_npy_free(&tokens);
    return worst;
}

#endif
