/* Helpers for tests against the transformers fixtures (tests/fixtures/make_fixtures.py): reading
 * the reference arrays, logits relative error, routing-set agreement. Header-only; include after
 * cmocka.h. */
#ifndef MT_TESTS_REFERENCE_COMMON_H
#define MT_TESTS_REFERENCE_COMMON_H

#include <math.h>
#include <stdio.h>

#include "engine/generate.h"
#include "model/config.h"
#include "model/model.h"
#include "routing/capture.h"
#include "util/npy.h"

#define FIXTURES MT_SOURCE_DIR "/tests/fixtures/models"

static const char *ARCHS[] = {"qwen3_moe", "qwen2_moe", "mixtral", "olmoe"};
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

#endif
