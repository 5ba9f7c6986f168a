/* The preemption check shared by the CPU and GPU tests: PRE_N requests whose contexts do not fit the
 * KV cache together run through an engine that takes blocks as tokens need them, so it must preempt
 * some of them and have them forward their tokens again (half of them with penalties, which count the
 * tokens a sequence holds). Each request's tokens, their
 * log-probabilities, its prompt scores and its routing must equal, bit for bit, those of the request
 * alone (mt_generate; scores: an engine of its own with room to spare), with or without the prefix
 * cache; a per_token recorder keeps one row for each position forwarded, recomputed ones not twice.
 * With reserve_whole the same load runs without preemption, fewer requests at once.
 * Header-only; include after cmocka.h. */
#ifndef MT_TESTS_PREEMPTION_CHECK_H
#define MT_TESTS_PREEMPTION_CHECK_H

#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/generate.h"
#include "routing/capture.h"
#include "routing/recorder.h"

#define PRE_N 8
#define PRE_NEW 48
#define PRE_BLOCKS 16 /* the longest context takes 6 blocks; all eight at once would need 40 */

typedef struct pre_result {
    int finished, n_tokens, rows, streamed;
    mt_finish_reason reason;
    int32_t tokens[PRE_NEW];
    float logprobs[PRE_NEW];
    int32_t *routing;
    float *prompt_lp;  /* scored requests: [len] */
    int32_t *prompt_top; /* [len, 2] */
} pre_result;

static pre_result pre_res[PRE_N];
static int32_t pre_prompt[PRE_N][64];
static size_t pre_row;

static int pre_len(int r) { return 17 + 5 * r; }
static int pre_new(int r) { return PRE_NEW - r; }
static int pre_score_from(int r) { return r == 3 ? 1 : r == 6 ? pre_len(r) / 2 + 1 : 0; }
static mt_sampling_params pre_sampling(int r) {
    mt_sampling_params p = {.temperature = 0.0f, .top_p = 1.0f};
    if (r % 3 == 1) p = (mt_sampling_params){.temperature = 0.8f, .top_p = 0.9f, .seed = 77u + (uint64_t)r};
    if (r % 2 == 1) {   /* penalties: what a preempted sequence counted must survive its return */
        p.repetition_penalty = 1.4f;
        p.frequency_penalty = 0.3f;
        p.presence_penalty = 0.2f;
    }
    return p;
}

static mt_request pre_request(int r) {
    int sf = pre_score_from(r);
    return (mt_request){.id = r, .prompt = pre_prompt[r], .n_prompt = pre_len(r), .max_new_tokens = pre_new(r),
                        .ignore_eos = true, .sampling = pre_sampling(r), .return_logprob = r % 2 == 0,
                        .score_from = sf, .top_logprobs = sf ? 2 : 0};
}

static void pre_on_event(void *ctx, const mt_engine_event *ev) {
    (void)ctx;
    pre_result *r = &pre_res[ev->id];
    if (ev->kind == MT_EVENT_TOKEN) {
        r->streamed++;
        return;
    }
    r->finished++;
    r->reason = ev->reason;
    r->n_tokens = ev->n_generated;
    memcpy(r->tokens, ev->output, (size_t)ev->n_generated * sizeof(int32_t));
    if (ev->logprobs) memcpy(r->logprobs, ev->logprobs, (size_t)ev->n_generated * sizeof(float));
    r->rows = ev->routing_rows;
    r->routing = malloc((size_t)ev->routing_rows * pre_row * sizeof(int32_t));
    memcpy(r->routing, ev->routing, (size_t)ev->routing_rows * pre_row * sizeof(int32_t));
    if (ev->prompt_logprobs) {
        size_t n = (size_t)ev->n_prompt;
        r->prompt_lp = malloc(n * sizeof(float));
        r->prompt_top = malloc(n * 2 * sizeof(int32_t));
        memcpy(r->prompt_lp, ev->prompt_logprobs, n * sizeof(float));
        memcpy(r->prompt_top, ev->prompt_top_ids, n * 2 * sizeof(int32_t));
    }
}

static void pre_clear(void) {
    for (int r = 0; r < PRE_N; r++) {
        free(pre_res[r].routing);
        free(pre_res[r].prompt_lp);
        free(pre_res[r].prompt_top);
    }
    memset(pre_res, 0, sizeof pre_res);
}

/* Runs the PRE_N requests through one engine of options o, a per_token recorder as its sink; fills
 * pre_res and *st. */
static void pre_run(const mt_model *m, const mt_engine_opts *o, mt_engine_stats *st, mt_recorder_counts *rc) {
    mt_err err;
    pre_clear();
    mt_recorder_opts ro;
    mt_recorder_opts_default(&ro);
    ro.mode = MT_REC_PER_TOKEN;
    mt_recorder *rec = mt_recorder_new(&m->cfg, "preemption", &ro, &err);
    if (!rec) fail_msg("%s", err.msg);
    mt_recorder_start(rec);
    mt_routing_sink sink = mt_recorder_sink(rec);
    mt_engine *e = mt_engine_new(m, o, pre_on_event, NULL, &sink, &err);
    if (!e) fail_msg("%s", err.msg);
    for (int r = 0; r < PRE_N; r++) {
        mt_request req = pre_request(r);
        if (mt_engine_submit(e, &req, &err)) fail_msg("%s", err.msg);
    }
    while (!mt_engine_idle(e))
        if (mt_engine_step(e, &err) < 0) fail_msg("%s", err.msg);
    mt_engine_get_stats(e, st);
    assert_int_equal(st->kv_blocks_free, st->kv_blocks_total);
    mt_engine_free(e);
    mt_recorder_get_counts(rec, rc);
    mt_recorder_free(rec);
}

/* The check; st_out (may be NULL) receives the stats of the run with the prefix cache. */
static void check_preemption(const mt_model *m, mt_engine_stats *st_out) {
    mt_err err;
    pre_row = (size_t)m->cfg.num_hidden_layers * m->cfg.top_k;
    uint32_t seed = 99;
    for (int r = 0; r < PRE_N; r++)
        for (int i = 0; i < pre_len(r); i++) {
            seed = seed * 1664525u + 1013904223u;
            /* requests 0, 1, 4 and 5 share their first 32 tokens */
            pre_prompt[r][i] = i < 32 && r % 4 < 2 ? (int32_t)(5 + 3 * i) : (int32_t)(3 + (seed >> 8) % 500);
        }
    /* each request alone: tokens, log-probabilities and routing from mt_generate, prompt scores from an
     * engine with room for it whole */
    static int32_t solo_tokens[PRE_N][PRE_NEW];
    static float solo_lp[PRE_N][PRE_NEW];
    int32_t *solo_routing[PRE_N];
    float *solo_prompt_lp[PRE_N] = {0};
    int32_t *solo_prompt_top[PRE_N] = {0};
    for (int r = 0; r < PRE_N; r++) {
        mt_routing_table t;
        assert_int_equal(mt_routing_table_init(&t, m->cfg.num_hidden_layers, m->cfg.top_k, 8), 0);
        mt_routing_sink sink = mt_routing_table_sink(&t);
        mt_generate_opts go = {.max_new_tokens = pre_new(r), .ignore_eos = true, .sampling = pre_sampling(r),
                               .sink = &sink, .out_logprobs = solo_lp[r]};
        int n_out;
        if (mt_generate(m, pre_prompt[r], pre_len(r), &go, solo_tokens[r], &n_out, &err)) fail_msg("%s", err.msg);
        assert_int_equal(n_out, pre_new(r));
        assert_int_equal(t.rows, pre_len(r) + pre_new(r) - 1);
        solo_routing[r] = malloc((size_t)t.rows * pre_row * sizeof(int32_t));
        memcpy(solo_routing[r], t.ids, (size_t)t.rows * pre_row * sizeof(int32_t));
        mt_routing_table_free(&t);
        if (!pre_score_from(r)) continue;
        mt_engine_opts alone = {.num_kv_blocks = 64, .max_batch_tokens = 256, .max_running = 1};
        mt_engine *e = mt_engine_new(m, &alone, pre_on_event, NULL, NULL, &err);
        mt_request req = pre_request(r);
        if (!e || mt_engine_submit(e, &req, &err)) fail_msg("%s", err.msg);
        while (!mt_engine_idle(e))
            if (mt_engine_step(e, &err) < 0) fail_msg("%s", err.msg);
        mt_engine_free(e);
        solo_prompt_lp[r] = pre_res[r].prompt_lp;
        solo_prompt_top[r] = pre_res[r].prompt_top;
        pre_res[r].prompt_lp = NULL;
        pre_res[r].prompt_top = NULL;
    }

    int peak_whole = 0, peak_lazy = 0;
    for (int mode = 0; mode < 3; mode++) {
        /* 0: lazy blocks with the prefix cache; 1: without it; 2: each request's whole context reserved */
        mt_engine_opts o = {.num_kv_blocks = PRE_BLOCKS, .max_batch_tokens = 24, .max_running = PRE_N,
                            .prefix_cache = mode != 1, .reserve_whole = mode == 2};
        mt_engine_stats st;
        mt_recorder_counts rc;
        pre_run(m, &o, &st, &rc);
        print_message("  %s: %ld passes, %ld tokens forwarded, %ld of them again after %ld preemptions; at most %d "
                      "requests at once\n", mode == 0 ? "lazy blocks, prefix cache" : mode == 1 ? "lazy blocks, no cache" :
                      "whole contexts reserved", st.forward_passes, st.tokens_forwarded, st.tokens_recomputed,
                      st.preemptions, st.peak_running);
        if (mode < 2) {
            assert_true(st.preemptions > 0);
            assert_true(st.tokens_recomputed > 0);
            peak_lazy = st.peak_running > peak_lazy ? st.peak_running : peak_lazy;
        } else {
            assert_int_equal(st.preemptions, 0);
            assert_int_equal(st.tokens_recomputed, 0);
            peak_whole = st.peak_running;
        }
        if (mode == 0 && st_out) *st_out = st;
        /* the recorder saw every pass's tokens and kept one row for each position forwarded */
        assert_int_equal(rc.num_tokens, st.tokens_forwarded);
        assert_int_equal(rc.dropped_tokens, 0);
        assert_int_equal(rc.tokens_recorded, st.tokens_forwarded - st.tokens_recomputed);
        for (int r = 0; r < PRE_N; r++) {
            pre_result *res = &pre_res[r];
            int want = pre_new(r);
            assert_int_equal(res->finished, 1);
            assert_int_equal(res->reason, MT_FINISH_LENGTH);
            assert_int_equal(res->n_tokens, want);
            assert_int_equal(res->streamed, want); /* a recomputed token is not streamed again */
            if (memcmp(res->tokens, solo_tokens[r], (size_t)want * sizeof(int32_t)))
                fail_msg("mode %d request %d: tokens differ from the solo run", mode, r);
            if (r % 2 == 0 && memcmp(res->logprobs, solo_lp[r], (size_t)want * sizeof(float)))
                fail_msg("mode %d request %d: log-probabilities differ from the solo run", mode, r);
            assert_int_equal(res->rows, pre_len(r) + want - 1);
            if (memcmp(res->routing, solo_routing[r], (size_t)res->rows * pre_row * sizeof(int32_t)))
                fail_msg("mode %d request %d: routing differs from the solo run", mode, r);
            if (!pre_score_from(r)) continue;
            assert_non_null(res->prompt_lp);
            if (memcmp(res->prompt_lp, solo_prompt_lp[r], (size_t)pre_len(r) * sizeof(float)) ||
                memcmp(res->prompt_top, solo_prompt_top[r], (size_t)pre_len(r) * 2 * sizeof(int32_t)))
                fail_msg("mode %d request %d: prompt scores differ from the request's alone", mode, r);
        }
    }
    assert_true(peak_lazy > peak_whole);
    pre_clear();
    for (int r = 0; r < PRE_N; r++) {
        free(solo_routing[r]);
        free(solo_prompt_lp[r]);
        free(solo_prompt_top[r]);
    }
}

/* A prompt preempted while it is being scored: request 0 (15 tokens, 40 new) and request 1 (a
 * 100-token prompt scored from its first token, 3 new) share a 9-block cache in passes of 2 tokens,
 * so request 1's prompt goes one token a pass beside request 0's decoding; when request 0 needs its
 * third block, request 1 (the newest) gives its blocks back partway through its prompt, waits for
 * request 0 to finish, adopts its published first block and forwards the rest. Its scores, tokens
 * and routing, and request 0's, equal those of each alone. */
static void check_preempted_while_scoring(const mt_model *m) {
    mt_err err;
    pre_row = (size_t)m->cfg.num_hidden_layers * m->cfg.top_k;
    static int32_t prompt[2][100];
    const int len[2] = {15, 100}, news[2] = {40, 3};   /* news <= PRE_NEW */
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < len[r]; i++) prompt[r][i] = (int32_t)(3 + (i * 37 + r * 101) % 450);
    mt_request reqs[2];
    for (int r = 0; r < 2; r++)
        reqs[r] = (mt_request){.id = r, .prompt = prompt[r], .n_prompt = len[r], .max_new_tokens = news[r],
                               .ignore_eos = true, .sampling = {.temperature = 0.0f, .top_p = 1.0f},
                               .score_from = r == 1 ? 1 : 0, .top_logprobs = r == 1 ? 2 : 0};
    /* request 1 alone: its scores */
    pre_clear();
    mt_engine_opts alone = {.num_kv_blocks = 64, .max_batch_tokens = 256, .max_running = 1};
    mt_engine *e = mt_engine_new(m, &alone, pre_on_event, NULL, NULL, &err);
    if (!e || mt_engine_submit(e, &reqs[1], &err)) fail_msg("%s", err.msg);
    while (!mt_engine_idle(e))
        if (mt_engine_step(e, &err) < 0) fail_msg("%s", err.msg);
    mt_engine_free(e);
    float *lp = pre_res[1].prompt_lp;
    int32_t *top = pre_res[1].prompt_top;
    pre_res[1].prompt_lp = NULL;
    pre_res[1].prompt_top = NULL;
    /* both together */
    pre_clear();
    mt_engine_opts o = {.num_kv_blocks = 9, .max_batch_tokens = 2, .max_running = 2, .prefix_cache = true};
    e = mt_engine_new(m, &o, pre_on_event, NULL, NULL, &err);
    for (int r = 0; r < 2 && e; r++)
        if (mt_engine_submit(e, &reqs[r], &err)) fail_msg("%s", err.msg);
    if (!e) fail_msg("%s", err.msg);
    while (!mt_engine_idle(e))
        if (mt_engine_step(e, &err) < 0) fail_msg("%s", err.msg);
    mt_engine_stats st;
    mt_engine_get_stats(e, &st);
    mt_engine_free(e);
    print_message("  a 100-token prompt preempted while scored: %ld preemption, %ld tokens forwarded again\n",
                  st.preemptions, st.tokens_recomputed);
    assert_int_equal(st.preemptions, 1);
    /* preempted partway: it forwarded again less than its prompt, more than nothing */
    assert_true(st.tokens_recomputed > 0 && st.tokens_recomputed < 100 - MT_KV_BLOCK);
    if (memcmp(pre_res[1].prompt_lp, lp, sizeof(float) * 100) || memcmp(pre_res[1].prompt_top, top, sizeof(int32_t) * 200))
        fail_msg("the preempted prompt's scores differ from its scores alone");
    for (int r = 0; r < 2; r++) {
        mt_routing_table t;
        assert_int_equal(mt_routing_table_init(&t, m->cfg.num_hidden_layers, m->cfg.top_k, 8), 0);
        mt_routing_sink sink = mt_routing_table_sink(&t);
        int32_t out[PRE_NEW];
        int n_out;
        mt_generate_opts go = {.max_new_tokens = news[r], .ignore_eos = true, .sink = &sink};
        if (mt_generate(m, prompt[r], len[r], &go, out, &n_out, &err)) fail_msg("%s", err.msg);
        assert_int_equal(pre_res[r].n_tokens, news[r]);
        assert_memory_equal(pre_res[r].tokens, out, (size_t)news[r] * sizeof(int32_t));
        assert_int_equal(pre_res[r].rows, t.rows);
        if (memcmp(pre_res[r].routing, t.ids, (size_t)t.rows * pre_row * sizeof(int32_t)))
            fail_msg("request %d: routing differs from the solo run", r);
        mt_routing_table_free(&t);
    }
    free(lp);
    free(top);
    pre_clear();
}

/* ---- decode against prefill ---------------------------------------------------------------- */

#define DP_PROMPT 70 /* the longest of the prompts */
#define DP_NEW 40

typedef struct dp_result {
    int32_t tokens[DP_NEW];
    float lp[DP_NEW];             /* decode: each token's log-probability */
    float prompt_lp[DP_PROMPT + DP_NEW]; /* prefill: the scored prompt's */
    int32_t *routing;
    int rows;
} dp_result;

static void dp_on_event(void *ctx, const mt_engine_event *ev) {
    dp_result *r = ctx;
    if (ev->kind != MT_EVENT_FINISHED) return;
    memcpy(r->tokens, ev->output, (size_t)ev->n_generated * sizeof(int32_t));
    if (ev->logprobs) memcpy(r->lp, ev->logprobs, (size_t)ev->n_generated * sizeof(float));
    if (ev->prompt_logprobs) memcpy(r->prompt_lp, ev->prompt_logprobs, (size_t)ev->n_prompt * sizeof(float));
    r->rows = ev->routing_rows;
    r->routing = malloc((size_t)ev->routing_rows * pre_row * sizeof(int32_t));
    memcpy(r->routing, ev->routing, (size_t)ev->routing_rows * pre_row * sizeof(int32_t));
}

static void dp_run(const mt_model *m, int batch_tokens, const mt_request *req, dp_result *res) {
    mt_err err;
    mt_engine_opts o = {.num_kv_blocks = 64, .max_batch_tokens = batch_tokens, .max_running = 2};
    mt_engine *e = mt_engine_new(m, &o, dp_on_event, res, NULL, &err);
    if (!e || mt_engine_submit(e, req, &err)) fail_msg("%s", err.msg);
    while (!mt_engine_idle(e))
        if (mt_engine_step(e, &err) < 0) fail_msg("%s", err.msg);
    mt_engine_free(e);
}

/* A sequence's generated tokens, forwarded one a pass as they are decoded, give the same bits as
 * when the whole sequence is forwarded again in prefill chunks (what a preempted request does, and
 * a trainer replaying the rollout): the generated tokens scored as prompt tokens get the
 * log-probabilities they were returned with, and every position's routing is the same. One prompt
 * of P tokens (random from seed), forwarded again in chunks of `chunk`. */
static void check_decode_equals_prefill_one(const mt_model *m, int P, uint32_t seed, int chunk) {
    int32_t seqn[DP_PROMPT + DP_NEW];
    for (int i = 0; i < P; i++) {
        seed = seed * 1664525u + 1013904223u;
        seqn[i] = (int32_t)(3 + (seed >> 8) % 500);
    }
    dp_result dec = {0}, pre = {0};
    mt_request r = {.id = 1, .prompt = seqn, .n_prompt = P, .max_new_tokens = DP_NEW, .ignore_eos = true,
                    .sampling = {.temperature = 1.0f, .top_p = 1.0f, .seed = seed}, .return_logprob = true};
    dp_run(m, 256, &r, &dec);
    assert_int_equal(dec.rows, P + DP_NEW - 1);
    memcpy(seqn + P, dec.tokens, sizeof dec.tokens);
    mt_request q = {.id = 2, .prompt = seqn, .n_prompt = P + DP_NEW, .max_new_tokens = 0, .ignore_eos = true,
                    .sampling = {.temperature = 1.0f, .top_p = 1.0f}, .score_from = P};
    dp_run(m, chunk, &q, &pre);
    assert_int_equal(pre.rows, P + DP_NEW);
    int lp_diff = -1, row_diff = -1, layer_diff = -1, L = m->cfg.num_hidden_layers, K = m->cfg.top_k;
    for (int j = 0; j < DP_NEW && lp_diff < 0; j++)
        if (memcmp(&dec.lp[j], &pre.prompt_lp[P + j], sizeof(float))) lp_diff = j;
    for (int p = 0; p < dec.rows && row_diff < 0; p++)
        for (int l = 0; l < L && row_diff < 0; l++)
            if (memcmp(dec.routing + ((size_t)p * L + l) * K, pre.routing + ((size_t)p * L + l) * K,
                       (size_t)K * sizeof(int32_t))) {
                row_diff = p;
                layer_diff = l;
            }
    if (lp_diff >= 0 || row_diff >= 0)
        fail_msg("%d-token prompt, %d tokens decoded, forwarded again in chunks of %d: log-probabilities first differ at "
                 "token %d (%.9g decoded, %.9g in prefill), routing at position %d layer %d", P, DP_NEW, chunk, lp_diff,
                 lp_diff < 0 ? 0.0 : dec.lp[lp_diff], lp_diff < 0 ? 0.0 : pre.prompt_lp[P + lp_diff], row_diff,
                 layer_diff);
    free(pre.routing);
    free(dec.routing);
}

static void check_decode_equals_prefill(const mt_model *m) {
    pre_row = (size_t)m->cfg.num_hidden_layers * m->cfg.top_k;
    const int lens[3] = {37, 20, DP_PROMPT}, chunks[3] = {256, 16, 5};
    for (int v = 0; v < 6; v++) check_decode_equals_prefill_one(m, lens[v % 3], 7u + (uint32_t)v, chunks[v % 3]);
    print_message("  6 sequences of %d decoded tokens each: forwarded again in prefill chunks of 256, 16 and 5 tokens, "
                  "the same log-probabilities and routing, bit for bit\n", DP_NEW);
}

#endif
