/* The batch-invariance check shared by the CPU and GPU tests: NREQ requests of varied lengths
 * (1 to 300 tokens, half sharing long prefixes; a third of them sampled with their own seeds, under
 * temperature, top-p and sometimes top-k or min-p; a quarter with penalties) run through the batched
 * engine and alone; tokens,
 * routing and (for the half that ask for them) the tokens' log-probabilities must be identical. A
 * fifth of them also score their prompts (from the start or from the middle, 2 alternatives each),
 * which must equal, bit for bit, those of the same request run alone through an engine.
 * Header-only; include after cmocka.h. */
#ifndef MT_TESTS_BATCH_INVARIANCE_H
#define MT_TESTS_BATCH_INVARIANCE_H

#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/generate.h"

#ifndef NREQ
#define NREQ 120
#endif
#ifndef MAXNEW
#define MAXNEW 6 /* the most tokens a request generates */
#endif

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
    float *prompt_lp;          /* scored requests: [len] */
    int32_t *prompt_top;       /* [len, 2] */
    float *prompt_top_lp;
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
    if (ev->prompt_logprobs) {
        size_t n = (size_t)ev->n_prompt;
        r->prompt_lp = malloc(n * sizeof(float));
        r->prompt_top = malloc(n * 2 * sizeof(int32_t));
        r->prompt_top_lp = malloc(n * 2 * sizeof(float));
        memcpy(r->prompt_lp, ev->prompt_logprobs, n * sizeof(float));
        memcpy(r->prompt_top, ev->prompt_top_ids, n * 2 * sizeof(int32_t));
        memcpy(r->prompt_top_lp, ev->prompt_top_logprobs, n * 2 * sizeof(float));
    }
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

/* Request r's sampling: greedy, or (every third) sampled with seed r; every fourth with penalties
 * (repetition, frequency and presence, and eos barred for its first tokens), every fifth sampled
 * one with min-p. */
static mt_sampling_params sampling_of(int r) {
    mt_sampling_params p = {.temperature = 0.0f, .top_p = 1.0f};
    if (r % 3 == 1) p = (mt_sampling_params){.temperature = 0.9f, .top_k = r % 2 ? 40 : 0, .top_p = 0.9f, .seed = (uint64_t)r};
    if (r % 4 == 3) {
        p.repetition_penalty = 1.3f;
        p.frequency_penalty = 0.5f;
        p.presence_penalty = r % 8 == 3 ? 0.4f : -0.25f;
        p.min_new_tokens = 2;
    }
    if (r % 3 == 1 && r % 5 == 0) p.min_p = 0.05f;
    return p;
}

/* Request r's prompt scoring: every fifth scores from its first token or its middle, else none. */
static int score_from_of(int r) { return r % 5 != 2 ? 0 : r % 3 == 0 ? 1 : g_len[r] / 2 + 1; }

/* Request r as submitted (the batched run and the scored requests' lone runs). */
static mt_request request_of(int r) {
    int score_from = score_from_of(r);
    return (mt_request){.id = r, .prompt = g_prompt[r], .n_prompt = g_len[r], .max_new_tokens = 1 + r % MAXNEW,
                        .ignore_eos = true, .sampling = sampling_of(r), .return_logprob = r % 2 == 0,
                        .score_from = score_from, .top_logprobs = score_from ? 2 : 0};
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
        mt_request req = request_of(r);
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

    int cached_requests = 0, scored_requests = 0;
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
        if (score_from_of(r)) {   /* the scores of the request alone, through an engine of its own */
            assert_non_null(res->prompt_lp);
            result batched = *res;
            memset(res, 0, sizeof *res);
            mt_engine *alone = mt_engine_new(&m, o_in, on_event, NULL, NULL, &err);
            mt_request req = request_of(r);
            if (!alone || mt_engine_submit(alone, &req, &err)) fail_msg("%s", err.msg);
            while (!mt_engine_idle(alone)) assert_true(mt_engine_step(alone, &err) >= 0);
            mt_engine_free(alone);
            size_t n = (size_t)g_len[r];
            if (memcmp(res->prompt_lp, batched.prompt_lp, n * sizeof(float)) ||
                memcmp(res->prompt_top, batched.prompt_top, n * 2 * sizeof(int32_t)) ||
                memcmp(res->prompt_top_lp, batched.prompt_top_lp, n * 2 * sizeof(float)))
                fail_msg("request %d (len %d, scored from %d): prompt scores differ batched and alone", r, g_len[r],
                         score_from_of(r));
            scored_requests++;
            free(res->routing);
            free(res->prompt_lp);
            free(res->prompt_top);
            free(res->prompt_top_lp);
            free(batched.prompt_lp);
            free(batched.prompt_top);
            free(batched.prompt_top_lp);
        }
        free(g_prompt[r]);
    }
    print_message("  %d requests were served partly from the prefix cache; all equal their solo runs; %d scored "
                  "their prompts as they do alone\n", cached_requests, scored_requests);
    assert_true(cached_requests > 10);
    mt_engine_free(e);
}

#endif
