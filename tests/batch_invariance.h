/* The batch-invariance check shared by the CPU and GPU tests: NREQ requests of varied lengths
 * (1 to 300 tokens, half sharing long prefixes; a third of them sampled with their own seeds, under
 * temperature, top-p and sometimes top-k) run through the batched engine and alone; tokens,
 * routing and (for the half that ask for them) the tokens' log-probabilities must be identical. Header-only; include after cmocka.h. */
#ifndef MT_TESTS_BATCH_INVARIANCE_H
#define MT_TESTS_BATCH_INVARIANCE_H

#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/generate.h"

#define NREQ 120
#define MAXNEW 6

typedef struct result {
    int32_t tokens[MAXNEW];
    float logprobs[MAXNEW];
    int n_tokens;
    int32_t *routing;
    int rows;
    int n_cached;
    int finished;
    mt_finish_reason reason;
    int streamed;
} result;

static result g_res[NREQ];
static int32_t *g_prompt[NREQ];
static int g_len[NREQ];
static size_t g_row; /* layers * top_k */

static void on_event(void *ctx, const mt_engine_event *ev) {
    (void)ctx;
    result *r = &g_res[ev->id];
    if (ev->kind == MT_EVENT_TOKEN) {
        r->streamed++;
        return;
    }
    r->finished++;
    r->reason = ev->reason;
    r->n_tokens = ev->n_generated;
    memcpy(r->tokens, ev->output, (size_t)ev->n_generated * sizeof(int32_t));
    if (ev->logprobs) memcpy(r->logprobs, ev->logprobs, (size_t)ev->n_generated * sizeof(float));
    else assert_true(ev->id % 2 == 1);
    r->rows = ev->routing_rows;
    r->n_cached = ev->n_cached;
    r->routing = malloc((size_t)ev->routing_rows * g_row * sizeof(int32_t));
    memcpy(r->routing, ev->routing, (size_t)ev->routing_rows * g_row * sizeof(int32_t));
}

static uint32_t rng = 12345;
static uint32_t next_rand(void) {
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

static void make_prompts(void) {
    int32_t shared[2][200];
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < 200; i++) shared[p][i] = (int32_t)(3 + next_rand() % 500);
    for (int r = 0; r < NREQ; r++) {
        int len = r % 7 == 0 ? 1 + (int)(next_rand() % 4) : 1 + (int)(next_rand() % 300);
        g_len[r] = len;
        g_prompt[r] = malloc((size_t)len * sizeof(int32_t));
        int share = r % 2 == 0 ? (int)(next_rand() % 200) : 0; /* half share a long prefix */
        for (int i = 0; i < len; i++)
            g_prompt[r][i] = i < share ? shared[r % 4 == 0][i] : (int32_t)(3 + next_rand() % 500);
    }
}

/* Request r's sampling: greedy, or (every third) sampled with seed r. */
static mt_sampling_params sampling_of(int r) {
    mt_sampling_params p = {.temperature = 0.0f, .top_p = 1.0f};
    if (r % 3 == 1) p = (mt_sampling_params){.temperature = 0.9f, .top_k = r % 2 ? 40 : 0, .top_p = 0.9f, .seed = (uint64_t)r};
    return p;
}

/* Runs NREQ requests batched (engine options o) and each alone (mt_generate), on model m; every
 * request's tokens and routing must be identical. Returns nothing; fails the test otherwise. */
static void check_batched_equals_solo(const mt_model *mp, const mt_engine_opts *o_in) {
    const mt_model m = *mp;
    mt_err err;
    g_row = (size_t)m.cfg.num_hidden_layers * m.cfg.top_k;
    make_prompts();
    memset(g_res, 0, sizeof g_res);

    mt_engine *e = mt_engine_new(&m, o_in, on_event, NULL, NULL, &err);
    assert_non_null(e);
    for (int r = 0; r < NREQ; r++) {
        mt_request req = {.id = r, .prompt = g_prompt[r], .n_prompt = g_len[r], .max_new_tokens = 1 + r % MAXNEW,
                          .ignore_eos = true, .sampling = sampling_of(r), .return_logprob = r % 2 == 0};
        if (mt_engine_submit(e, &req, &err)) fail_msg("%s", err.msg);
    }
    int steps = 0;
    while (!mt_engine_idle(e)) {
        assert_true(mt_engine_step(e, &err) >= 0);
        steps++;
    }
    mt_engine_stats st;
    mt_engine_get_stats(e, &st);
    print_message("  %d requests in %d steps, %ld tokens forwarded; prefix cache hit %ld of %ld blocks\n", NREQ, steps,
                  st.tokens_forwarded, st.prefix_hit_blocks, st.prefix_lookup_blocks);
    assert_true(st.prefix_hit_blocks > 0);
    assert_int_equal(st.kv_blocks_free, st.kv_blocks_total);

    int cached_requests = 0;
    for (int r = 0; r < NREQ; r++) {
        result *res = &g_res[r];
        assert_int_equal(res->finished, 1);
        int want = 1 + r % MAXNEW;
        assert_int_equal(res->n_tokens, want);
        assert_int_equal(res->streamed, want);
        assert_int_equal(res->reason, MT_FINISH_LENGTH);
        assert_int_equal(res->rows, g_len[r] + want - 1);
        cached_requests += res->n_cached > 0;

        mt_routing_table t;
        assert_int_equal(mt_routing_table_init(&t, m.cfg.num_hidden_layers, m.cfg.top_k, 8), 0);
        mt_routing_sink sink = mt_routing_table_sink(&t);
        int32_t solo[MAXNEW];
        float solo_lp[MAXNEW];
        int n_solo;
        mt_generate_opts go = {.max_new_tokens = want, .ignore_eos = true, .sampling = sampling_of(r), .sink = &sink,
                               .out_logprobs = r % 2 == 0 ? solo_lp : NULL};
        if (mt_generate(&m, g_prompt[r], g_len[r], &go, solo, &n_solo, &err)) fail_msg("%s", err.msg);
        assert_int_equal(n_solo, want);
        if (memcmp(solo, res->tokens, (size_t)want * sizeof(int32_t)))
            fail_msg("request %d (len %d, %d cached): tokens differ from the solo run", r, g_len[r], res->n_cached);
        for (int i = 0; r % 2 == 0 && i < want; i++) {
            if (!(res->logprobs[i] <= 0.0f) || memcmp(&solo_lp[i], &res->logprobs[i], sizeof(float)))
                fail_msg("request %d token %d: log-probability %.9g batched, %.9g solo", r, i, res->logprobs[i], solo_lp[i]);
        }
        assert_int_equal(t.rows, res->rows);
        if (memcmp(t.ids, res->routing, (size_t)t.rows * g_row * sizeof(int32_t)))
            fail_msg("request %d (len %d, %d cached): routing differs from the solo run", r, g_len[r], res->n_cached);
        mt_routing_table_free(&t);
        free(res->routing);
        free(g_prompt[r]);
    }
    print_message("  %d requests were served partly from the prefix cache; all equal their solo runs\n",
                  cached_requests);
    assert_true(cached_requests > 10);
    mt_engine_free(e);
}

#endif
