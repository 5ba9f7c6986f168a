/* The batched engine: >= 100 sequences of varied lengths, run concurrently with chunked prefill,
 * a small token budget and shared prompt prefixes, give every sequence exactly the tokens and
 * routing of its solo run (mt_generate, one sequence, whole prompt in one pass). Also: cancel,
 * bad requests, block accounting, request names reaching the sink. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "engine/engine.h"
#include "engine/generate.h"
#include "engine/kv_cache.h"
#include "kernels/kernels.h"

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"
#include "batch_invariance.h"
#include "preemption_check.h"

static void test_batched_equals_solo(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    mt_engine_opts o = {.num_kv_blocks = 400, .max_batch_tokens = 96, .max_running = 24, .prefix_cache = true};
    check_batched_equals_solo(&m, &o);
    mt_model_free(&m);
}

static int g_cancel_finished;
static mt_finish_reason g_cancel_reason;
static void on_cancel_event(void *ctx, const mt_engine_event *ev) {
    (void)ctx;
    if (ev->kind == MT_EVENT_FINISHED) {
        g_cancel_finished++;
        g_cancel_reason = ev->reason;
    }
}

static void test_cancel_and_bad_requests(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    mt_engine_opts o = {.num_kv_blocks = 8, .max_batch_tokens = 32, .max_running = 4, .prefix_cache = true,
                        .overlap = -1};   /* the step counts below are those of steps without overlap */
    mt_engine *e = mt_engine_new(&m, &o, on_cancel_event, NULL, NULL, &err);
    int32_t prompt[40];
    for (int i = 0; i < 40; i++) prompt[i] = 5 + i;
    mt_request r = {.id = 7, .prompt = prompt, .n_prompt = 40, .max_new_tokens = 50, .ignore_eos = true};
    assert_int_equal(mt_engine_submit(e, &r, &err), 0);
    assert_int_equal(mt_engine_submit(e, &r, &err), -1); /* duplicate id */
    assert_non_null(strstr(err.msg, "already live"));
    for (int i = 0; i < 4; i++) assert_true(mt_engine_step(e, &err) > 0);
    assert_true(mt_engine_cancel(e, 7));
    assert_false(mt_engine_cancel(e, 8));
    assert_int_equal(mt_engine_step(e, &err), 0);
    assert_int_equal(g_cancel_finished, 1);
    assert_int_equal(g_cancel_reason, MT_FINISH_CANCELLED);
    assert_true(mt_engine_idle(e));
    mt_engine_stats st;
    mt_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_free, st.kv_blocks_total);

    prompt[3] = 512;
    r.id = 9;
    assert_int_equal(mt_engine_submit(e, &r, &err), -1);
    assert_non_null(strstr(err.msg, "512"));
    prompt[3] = 5;
    r.max_new_tokens = 500;
    assert_int_equal(mt_engine_submit(e, &r, &err), -1);
    assert_non_null(strstr(err.msg, "context"));
    r.max_new_tokens = 200; /* fits the context but not the 8-block cache */
    assert_int_equal(mt_engine_submit(e, &r, &err), -1);
    assert_non_null(strstr(err.msg, "KV blocks"));
    r.n_prompt = 0;
    assert_int_equal(mt_engine_submit(e, &r, &err), -1);
    mt_engine_free(e);
    mt_model_free(&m);
}

/* no_routing: the same tokens, FINISHED events without routing, the sink still fed. */
typedef struct plain_result {
    int32_t tokens[2][8];
    int n[2], rows[2];
    const int32_t *routing[2];
} plain_result;

static void on_plain_event(void *ctx, const mt_engine_event *ev) {
    plain_result *r = ctx;
    if (ev->kind != MT_EVENT_FINISHED) return;
    r->n[ev->id] = ev->n_generated;
    r->rows[ev->id] = ev->routing_rows;
    r->routing[ev->id] = ev->routing;
    memcpy(r->tokens[ev->id], ev->output, (size_t)ev->n_generated * sizeof(int32_t));
}

static int g_layer_events;
static void count_layers(void *ctx, const mt_routing_event *ev) {
    (void)ctx;
    (void)ev;
    g_layer_events++;
}

static void test_no_routing(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    int32_t prompt[30];
    for (int i = 0; i < 30; i++) prompt[i] = 7 + 3 * i;
    plain_result res[2];
    memset(res, 0, sizeof res);
    for (int plain = 0; plain < 2; plain++) {
        mt_engine_opts o = {.num_kv_blocks = 16, .max_batch_tokens = 16, .max_running = 2, .no_routing = plain};
        mt_routing_sink sink = {count_layers, NULL, NULL};
        g_layer_events = 0;
        mt_engine *e = mt_engine_new(&m, &o, on_plain_event, &res[plain], &sink, &err);
        assert_non_null(e);
        for (int id = 0; id < 2; id++) {
            mt_request r = {.id = id, .prompt = prompt + id, .n_prompt = 20 + 5 * id, .max_new_tokens = 8, .ignore_eos = true};
            assert_int_equal(mt_engine_submit(e, &r, &err), 0);
        }
        while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
        assert_true(g_layer_events > 0);
        mt_engine_free(e);
    }
    for (int id = 0; id < 2; id++) {
        assert_int_equal(res[0].n[id], 8);
        assert_int_equal(res[1].n[id], 8);
        assert_memory_equal(res[0].tokens[id], res[1].tokens[id], sizeof res[0].tokens[id]);
        assert_int_equal(res[0].rows[id], 20 + 5 * id + 7);
        assert_int_equal(res[1].rows[id], 0);
        assert_null(res[1].routing[id]);
    }
    mt_model_free(&m);
}

/* Request names: every token of a routing event carries its request's name (copied at submit), or
 * NULL for a request without one. */
typedef struct name_probe {
    int tokens[2];   /* tokens seen per request id (first MoE layer events only) */
    int bad;
} name_probe;

static void check_names(void *ctx, const mt_routing_event *ev) {
    name_probe *p = ctx;
    if (!ev->request_names || !ev->request_ids) {
        p->bad++;
        return;
    }
    for (int i = 0; i < ev->n_tokens; i++) {
        int64_t id = ev->request_ids[i];
        const char *name = ev->request_names[i];
        bool ok = id == 0 ? name && !strcmp(name, "req-A") : id == 1 && !name;
        p->bad += !ok;
        if (ev->layer == 0) p->tokens[id & 1]++;
    }
}

static void test_request_names(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    mt_engine_opts o = {.num_kv_blocks = 16, .max_batch_tokens = 16, .max_running = 2};
    name_probe probe = {{0}, 0};
    mt_routing_sink sink = {check_names, NULL, &probe};
    mt_engine *e = mt_engine_new(&m, &o, NULL, NULL, &sink, &err);
    assert_non_null(e);
    int32_t prompt[20];
    for (int i = 0; i < 20; i++) prompt[i] = 9 + 2 * i;
    char name[16] = "req-A";
    mt_request named = {.id = 0, .name = name, .prompt = prompt, .n_prompt = 20, .max_new_tokens = 4, .ignore_eos = true};
    mt_request plain = {.id = 1, .prompt = prompt + 1, .n_prompt = 12, .max_new_tokens = 3, .ignore_eos = true};
    assert_int_equal(mt_engine_submit(e, &named, &err), 0);
    assert_int_equal(mt_engine_submit(e, &plain, &err), 0);
    strcpy(name, "changed"); /* the engine kept its own copy */
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    mt_engine_free(e);
    mt_model_free(&m);
    assert_int_equal(probe.bad, 0);
    /* layer 0 is MoE in the fixture: each request's forwarded tokens were seen */
    assert_int_equal(probe.tokens[0], 20 + 4 - 1);
    assert_int_equal(probe.tokens[1], 12 + 3 - 1);
}

/* Requests sharing a prompt prefix, submitted together: the prefix is forwarded once (the others
 * wait for its blocks and adopt them), and each gets the routing of every prompt token. */
#define SHARED_N 5
typedef struct shared_result {
    int n_cached[SHARED_N], n_generated[SHARED_N], rows[SHARED_N], finished;
    int32_t tokens[SHARED_N][8];
    int32_t *routing[SHARED_N];
    size_t row;
} shared_result;

static void on_shared_event(void *ctx, const mt_engine_event *ev) {
    shared_result *r = ctx;
    if (ev->kind != MT_EVENT_FINISHED) return;
    r->finished++;
    r->n_cached[ev->id] = ev->n_cached;
    r->n_generated[ev->id] = ev->n_generated;
    r->rows[ev->id] = ev->routing_rows;
    memcpy(r->tokens[ev->id], ev->output, (size_t)ev->n_generated * sizeof(int32_t));
    r->routing[ev->id] = malloc((size_t)ev->routing_rows * r->row * sizeof(int32_t));
    memcpy(r->routing[ev->id], ev->routing, (size_t)ev->routing_rows * r->row * sizeof(int32_t));
}

static void test_shared_prefix_in_flight(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    int32_t prompt[50], other[50];
    for (int i = 0; i < 50; i++) prompt[i] = other[i] = 11 + 7 * i % 300;
    other[20] = 400; /* shares block 0 only */
    for (int mode = 0; mode < 3; mode++) {
        /* 0: no prefix cache; 1: the cache (shared prefixes waited for); 2: the cache without the
         * wait (all five start together, none finds a published block). A budget of 16 tokens a
         * pass: the 50-token prompt takes four passes to prefill. */
        bool cache = mode == 1;
        mt_engine_opts o = {.num_kv_blocks = 64, .max_batch_tokens = 16, .max_running = 8, .prefix_cache = mode > 0,
                            .no_shared_wait = mode == 2};
        shared_result res = {.row = (size_t)m.cfg.num_hidden_layers * m.cfg.top_k};
        mt_engine *e = mt_engine_new(&m, &o, on_shared_event, &res, NULL, &err);
        assert_non_null(e);
        for (int id = 0; id < SHARED_N; id++) {
            /* four samples of one prompt (two greedy, two with seeds) and a prompt diverging in block 1 */
            mt_sampling_params sp = {.temperature = id < 2 ? 0.0f : 1.0f, .top_p = 1.0f, .seed = (uint64_t)id};
            mt_request r = {.id = id, .prompt = id == 4 ? other : prompt, .n_prompt = 50, .max_new_tokens = 5,
                            .ignore_eos = true, .sampling = sp};
            assert_int_equal(mt_engine_submit(e, &r, &err), 0);
        }
        while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
        mt_engine_stats st;
        mt_engine_get_stats(e, &st);
        assert_int_equal(res.finished, SHARED_N);
        int want_cached[SHARED_N] = {0, 48, 48, 48, 16};
        long forwarded = 0;
        for (int id = 0; id < SHARED_N; id++) {
            int cached = cache ? want_cached[id] : 0;
            assert_int_equal(res.n_cached[id], cached);
            assert_int_equal(res.n_generated[id], 5);
            assert_int_equal(res.rows[id], 50 + 5 - 1);
            forwarded += 50 - cached + 5 - 1;
        }
        /* 50 + 3 x 2 + 34 prompt tokens and 4 decode tokens each, with the cache */
        assert_int_equal(st.tokens_forwarded, forwarded);
        if (cache) { /* three blocks before each prompt's last token, looked up once however long a
                      * request waited for them (review h19: every deferred step counted them) */
            assert_int_equal(st.prefix_lookup_blocks, SHARED_N * 3);
            assert_int_equal(st.prefix_hit_blocks, 3 * 3 + 1);
        }
        assert_memory_equal(res.tokens[0], res.tokens[1], 5 * sizeof(int32_t));
        for (int id = 1; id < SHARED_N; id++) {
            /* the prompt's routing is the same for every sample, and for the first 20 tokens of the other prompt */
            int same_rows = id == 4 ? 20 : id == 1 ? 50 + 5 - 1 : 50;
            assert_memory_equal(res.routing[0], res.routing[id], (size_t)same_rows * res.row * sizeof(int32_t));
        }
        for (int id = 0; id < SHARED_N; id++) free(res.routing[id]);
        assert_int_equal(st.kv_blocks_free, st.kv_blocks_total);
        mt_engine_free(e);
    }
    mt_model_free(&m);
}

/* Scored prompts (score_from, top_logprobs): the values equal, bitwise, those computed from the
 * logits of one pass over the whole prompt (mt_generate's prompt logits), whatever the chunking,
 * the batch and the prefix cache; prompts scoring more than a pass's rows are forwarded in several
 * passes; scoring changes neither the sampled tokens nor the routing; scored positions are never
 * adopted from the prefix cache. */
#define SC_LEN 300
#define SC_TOP 4
#define SC_IDS 6
typedef struct scored_result {
    int V, n_cached[SC_IDS], n_out[SC_IDS], n_top[SC_IDS], rows[SC_IDS];
    float lp[SC_IDS][SC_LEN], top_lp[SC_IDS][SC_LEN * SC_TOP], out_lp[SC_IDS][4], out_top_lp[SC_IDS][4 * SC_TOP];
    int32_t top[SC_IDS][SC_LEN * SC_TOP], out[SC_IDS][4], out_top[SC_IDS][4 * SC_TOP], tok_top0[SC_IDS];
    int32_t *routing[SC_IDS];
    size_t row;
    int n_ids[SC_IDS];
    float ids_lp[SC_IDS][SC_LEN * 3], out_ids_lp[SC_IDS][4 * 3];
} scored_result;

static void on_scored_event(void *ctx, const mt_engine_event *ev) {
    scored_result *r = ctx;
    int id = (int)ev->id;
    if (ev->kind == MT_EVENT_TOKEN) {
        if (ev->n_generated == 1) r->tok_top0[id] = ev->top_ids ? ev->top_ids[0] : -2;
        return;
    }
    r->n_cached[id] = ev->n_cached;
    r->n_out[id] = ev->n_generated;
    r->n_top[id] = ev->n_top;
    r->rows[id] = ev->routing_rows;
    memcpy(r->out[id], ev->output, (size_t)ev->n_generated * sizeof(int32_t));
    if (ev->logprobs) memcpy(r->out_lp[id], ev->logprobs, (size_t)ev->n_generated * sizeof(float));
    if (ev->top_ids) {
        memcpy(r->out_top[id], ev->top_ids, (size_t)ev->n_generated * ev->n_top * sizeof(int32_t));
        memcpy(r->out_top_lp[id], ev->top_logprobs, (size_t)ev->n_generated * ev->n_top * sizeof(float));
    }
    if (ev->prompt_logprobs) memcpy(r->lp[id], ev->prompt_logprobs, (size_t)ev->n_prompt * sizeof(float));
    if (ev->prompt_top_ids) {
        memcpy(r->top[id], ev->prompt_top_ids, (size_t)ev->n_prompt * ev->n_top * sizeof(int32_t));
        memcpy(r->top_lp[id], ev->prompt_top_logprobs, (size_t)ev->n_prompt * ev->n_top * sizeof(float));
    }
    r->routing[id] = malloc((size_t)ev->routing_rows * r->row * sizeof(int32_t));
    memcpy(r->routing[id], ev->routing, (size_t)ev->routing_rows * r->row * sizeof(int32_t));
    r->n_ids[id] = ev->n_ids;
    if (ev->prompt_ids_logprobs)
        memcpy(r->ids_lp[id], ev->prompt_ids_logprobs, (size_t)ev->n_prompt * ev->n_ids * sizeof(float));
    if (ev->ids_logprobs) memcpy(r->out_ids_lp[id], ev->ids_logprobs, (size_t)ev->n_generated * ev->n_ids * sizeof(float));
}

static void run_scored(const mt_model *m, const mt_engine_opts *o, const mt_request *reqs, int n, scored_result *res,
                       long *passes) {
    mt_err err;
    mt_engine *e = mt_engine_new(m, o, on_scored_event, res, NULL, &err);
    assert_non_null(e);
    for (int i = 0; i < n; i++)
        if (mt_engine_submit(e, &reqs[i], &err)) fail_msg("%s", err.msg);
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    mt_engine_stats st;
    mt_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_free, st.kv_blocks_total);
    if (passes) *passes = st.forward_passes;
    mt_engine_free(e);
}

static void test_scored_prompts(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    const int V = m.cfg.vocab_size;
    static int32_t prompt[SC_LEN];
    for (int i = 0; i < SC_LEN; i++) prompt[i] = (13 + 29 * i + i * i / 7) % V;
    /* the reference: the logits of every prompt position in one pass */
    float *logits = malloc((size_t)SC_LEN * V * sizeof *logits);
    int32_t first;
    int n_first = 0;
    mt_generate_opts go = {.max_new_tokens = 1, .ignore_eos = true, .prompt_logits = logits};
    if (mt_generate(&m, prompt, SC_LEN, &go, &first, &n_first, &err)) fail_msg("%s", err.msg);

    mt_sampling_params seeded = {.temperature = 0.8f, .top_p = 1.0f, .seed = 5};
    static const int32_t LISTED[3] = {5, 100, 511};   /* token_ids_logprob */
    mt_request reqs[SC_IDS] = {
        /* 0: every token after the first scored, greedy; 299 scored rows: two prefill passes at least */
        {.id = 0, .prompt = prompt, .n_prompt = SC_LEN, .max_new_tokens = 3, .ignore_eos = true, .return_logprob = true,
         .score_from = 1, .top_logprobs = SC_TOP, .logprob_ids = LISTED, .n_logprob_ids = 3},
        /* 1: sampled at T 0.8, scored from 201 without alternatives */
        {.id = 1, .prompt = prompt, .n_prompt = 250, .max_new_tokens = 3, .ignore_eos = true, .sampling = seeded,
         .return_logprob = true, .score_from = 201},
        /* 2: the same unscored: the same tokens and routing */
        {.id = 2, .prompt = prompt, .n_prompt = 250, .max_new_tokens = 3, .ignore_eos = true, .sampling = seeded,
         .return_logprob = true},
        /* 3: score_from = n_prompt: nothing to score */
        {.id = 3, .prompt = prompt, .n_prompt = 40, .max_new_tokens = 2, .ignore_eos = true, .score_from = 40,
         .top_logprobs = 2},
        /* 4, 5: submitted after the others finished, with the prefix cache warm */
        {.id = 4, .prompt = prompt, .n_prompt = SC_LEN, .max_new_tokens = 3, .ignore_eos = true, .return_logprob = true,
         .score_from = 1, .top_logprobs = SC_TOP},
        {.id = 5, .prompt = prompt, .n_prompt = SC_LEN, .max_new_tokens = 3, .ignore_eos = true, .score_from = 100},
    };
    scored_result *solo = calloc(1, sizeof *solo), *batched = calloc(1, sizeof *batched);
    solo->row = batched->row = (size_t)m.cfg.num_hidden_layers * m.cfg.top_k;
    long passes = 0;
    mt_engine_opts big = {.num_kv_blocks = 200, .max_batch_tokens = 1024, .max_running = 8, .prefix_cache = false};
    run_scored(&m, &big, &reqs[0], 1, solo, &passes);
    assert_int_equal(passes, 2 + 2);   /* 256 scored rows, then the other 43 and the sampling row; 2 decode steps */
    for (int i = 1; i < 4; i++) run_scored(&m, &big, &reqs[i], 1, solo, NULL);
    /* batched: small budget, all together, prefix cache on; then 4 and 5 on the warm cache */
    mt_engine_opts small = {.num_kv_blocks = 200, .max_batch_tokens = 40, .max_running = 8, .prefix_cache = true};
    mt_engine *e = mt_engine_new(&m, &small, on_scored_event, batched, NULL, &err);
    assert_non_null(e);
    for (int i = 0; i < 4; i++) assert_int_equal(mt_engine_submit(e, &reqs[i], &err), 0);
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    for (int i = 4; i < 6; i++) assert_int_equal(mt_engine_submit(e, &reqs[i], &err), 0);
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    mt_engine_free(e);

    /* request 0 against the one-pass logits, bitwise */
    assert_true(isnan(solo->lp[0][0]));
    for (int p = 1; p < SC_LEN; p++) {
        const float *row = logits + (size_t)(p - 1) * V;
        int32_t ids[SC_TOP];
        float lps[SC_TOP];
        assert_int_equal(mt_top_logprobs(NULL, row, V, SC_TOP, ids, lps), SC_TOP);
        assert_true(solo->lp[0][p] == mt_token_logprob(NULL, row, V, prompt[p]));
        assert_memory_equal(solo->top[0] + (size_t)p * SC_TOP, ids, sizeof ids);
        assert_memory_equal(solo->top_lp[0] + (size_t)p * SC_TOP, lps, sizeof lps);
    }
    /* the listed tokens at every scored position and at the first generated token */
    assert_int_equal(solo->n_ids[0], 3);
    for (int p = 1; p <= SC_LEN; p++) {
        const float *row = logits + (size_t)(p - 1) * V;
        const float *got = p < SC_LEN ? solo->ids_lp[0] + (size_t)p * 3 : solo->out_ids_lp[0];
        for (int j = 0; j < 3; j++) {
            float want = mt_token_logprob(NULL, row, V, LISTED[j]);
            assert_memory_equal(&got[j], &want, sizeof want);
        }
    }
    assert_memory_equal(batched->ids_lp[0], solo->ids_lp[0], sizeof solo->ids_lp[0]);
    assert_memory_equal(batched->out_ids_lp[0], solo->out_ids_lp[0], sizeof solo->out_ids_lp[0]);
    assert_int_equal(solo->out[0][0], first);
    assert_int_equal(solo->tok_top0[0], solo->out_top[0][0]);   /* the TOKEN event's list is the FINISHED one's */
    assert_int_equal(solo->out_top[0][0], first);   /* greedy: the first alternative is the token */
    assert_true(solo->out_top_lp[0][0] == solo->out_lp[0][0]);
    /* 1 and 2: same tokens and routing; 1's scores where asked, and at T 0.8 */
    assert_memory_equal(solo->out[1], solo->out[2], 3 * sizeof(int32_t));
    assert_memory_equal(solo->routing[1], solo->routing[2], (size_t)solo->rows[1] * solo->row * sizeof(int32_t));
    mt_sample_row t08 = {0.8f, 0, 1.0f, 0, 0.0f};
    for (int p = 0; p < 250; p++) {
        if (p < 201) assert_true(isnan(solo->lp[1][p]));
        else assert_true(solo->lp[1][p] == mt_token_logprob(&t08, logits + (size_t)(p - 1) * V, V, prompt[p]));
    }
    assert_int_equal(solo->n_top[1], 0);
    for (int p = 0; p < 40; p++) assert_true(isnan(solo->lp[3][p]));
    assert_int_equal(solo->n_top[3], 2);
    /* batched runs equal the solo ones bitwise */
    /* submitted together, 1-3 wait for 0's prompt blocks and adopt what they may: 1 the blocks
     * before its first scored position (200), 2 and 3 all but their last token */
    const int want_cached[4] = {0, 192, 240, 32};
    for (int id = 0; id < 4; id++) {
        assert_int_equal(batched->n_cached[id], want_cached[id]);
        assert_memory_equal(batched->out[id], solo->out[id], 3 * sizeof(int32_t));
        assert_memory_equal(batched->lp[id], solo->lp[id], (size_t)(id == 3 ? 40 : id == 0 ? SC_LEN : 250) * sizeof(float));
        assert_memory_equal(batched->routing[id], solo->routing[id], (size_t)solo->rows[id] * solo->row * sizeof(int32_t));
    }
    assert_memory_equal(batched->top[0], solo->top[0], sizeof solo->top[0]);
    assert_memory_equal(batched->top_lp[0], solo->top_lp[0], sizeof solo->top_lp[0]);
    /* the warm cache: 4 scores from position 0 so adopts nothing; 5 adopts the blocks before position 99 */
    assert_int_equal(batched->n_cached[4], 0);
    assert_int_equal(batched->n_cached[5], 96);
    assert_memory_equal(batched->lp[4], solo->lp[0], sizeof solo->lp[0]);
    assert_memory_equal(batched->top[4], solo->top[0], sizeof solo->top[0]);
    for (int p = 100; p < SC_LEN; p++) assert_true(batched->lp[5][p] == solo->lp[0][p]);

    /* bad requests */
    e = mt_engine_new(&m, &small, NULL, NULL, NULL, &err);
    mt_request bad = reqs[3];
    bad.score_from = 41;
    assert_int_equal(mt_engine_submit(e, &bad, &err), -1);
    assert_non_null(strstr(err.msg, "score_from"));
    bad.score_from = -1;
    assert_int_equal(mt_engine_submit(e, &bad, &err), -1);
    bad.score_from = 1;
    bad.top_logprobs = MT_TOP_LOGPROBS_MAX + 1;
    assert_int_equal(mt_engine_submit(e, &bad, &err), -1);
    assert_non_null(strstr(err.msg, "top_logprobs"));
    bad.top_logprobs = 0;
    static const int32_t OUTSIDE[1] = {512};
    bad.logprob_ids = OUTSIDE;
    bad.n_logprob_ids = 1;
    assert_int_equal(mt_engine_submit(e, &bad, &err), -1);
    assert_non_null(strstr(err.msg, "outside the vocabulary"));
    mt_engine_free(e);
    for (int id = 0; id < SC_IDS; id++) {
        free(solo->routing[id]);
        free(batched->routing[id]);
    }
    free(solo);
    free(batched);
    free(logits);
    mt_model_free(&m);
}

/* A cache sized from memory: the arithmetic (mt_kv_blocks_for_memory, mt_kv_block_bytes), and an
 * engine asked for one (num_kv_blocks 0) on the host; its time counters. */
static void test_kv_sized_from_memory(void **state) {
    (void)state;
    bool capped = true;
    /* 100 positions -> 7 blocks a sequence; 4 sequences want 28, memory holds more */
    assert_int_equal(mt_kv_blocks_for_memory(1e9, 0.5, 1e6, 100, 4, &capped), 28);
    assert_false(capped);
    assert_int_equal(mt_kv_blocks_for_memory(0, 0.5, 1e6, 100, 4, &capped), 28); /* memory unknown */
    assert_false(capped);
    assert_int_equal(mt_kv_blocks_for_memory(25e6, 0.8, 1e6, 4096, 8, &capped), 20); /* 0.8 x 25 MB */
    assert_true(capped);
    assert_int_equal(mt_kv_blocks_for_memory(1e6, 0.5, 1e6, 4096, 8, &capped), 16); /* never fewer than 16 */
    assert_int_equal(mt_kv_blocks_for_memory(1e6, 0.5, 1e6, 8, 1, NULL), 16);
    /* Qwen3-30B-A3B's shape: 48 layers, 4 KV heads of 128, top-8 of 128 experts */
    assert_true(mt_kv_block_bytes(48, 512, 8, 128, true) == 48.0 * 16 * 512 * 2 * 2);
    assert_true(mt_kv_block_bytes(48, 512, 8, 128, false) == 48.0 * 16 * (512 * 2 * 4 + 8));
    assert_true(mt_kv_block_bytes(2, 64, 4, 300, false) == 2.0 * 16 * (64 * 2 * 4 + 4 * 2));

    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    mt_engine_opts o = {.kv_memory_fraction = 0.5, .max_batch_tokens = 32, .max_running = 3};
    mt_engine *e = mt_engine_new(&m, &o, NULL, NULL, NULL, &err);
    if (!e) fail_msg("%s", err.msg);
    mt_engine_stats st;
    mt_engine_get_stats(e, &st);
    int full = mt_kv_blocks_for_memory(0, 1, 1, m.cfg.max_position_embeddings, 3, NULL);
    assert_true(st.kv_memory_free > 0); /* Linux's MemAvailable */
    assert_true(st.kv_blocks_total >= 16 && st.kv_blocks_total <= full);
    double per = mt_kv_block_bytes(m.cfg.num_hidden_layers, m.cfg.num_key_value_heads * m.cfg.head_dim, m.cfg.top_k,
                                   m.cfg.num_experts, false);
    assert_true(st.kv_bytes == st.kv_blocks_total * per);
    int32_t prompt[20];
    for (int i = 0; i < 20; i++) prompt[i] = 3 + i;
    mt_request r = {.id = 1, .prompt = prompt, .n_prompt = 20, .max_new_tokens = 4, .ignore_eos = true};
    assert_int_equal(mt_engine_submit(e, &r, &err), 0);
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    mt_engine_get_stats(e, &st);
    assert_true(st.forward_passes >= 4 && st.forward_seconds > 0 && st.step_seconds >= st.forward_seconds);
    mt_engine_free(e);
    /* a size from memory needs a share of it */
    o.kv_memory_fraction = 0;
    assert_null(mt_engine_new(&m, &o, NULL, NULL, NULL, &err));
    assert_non_null(strstr(err.msg, "kv memory fraction"));
    o.kv_memory_fraction = 1.5;
    assert_null(mt_engine_new(&m, &o, NULL, NULL, NULL, &err));
    o = (mt_engine_opts){.num_kv_blocks = -1, .max_batch_tokens = 32, .max_running = 3};
    assert_null(mt_engine_new(&m, &o, NULL, NULL, NULL, &err));
    mt_model_free(&m);
}

/* A request cancelled while it waits preempted finishes at the next step, cancelled, with its tokens
 * so far and the routing they had (kept when its blocks went): P + G - 1 rows, equal to an undisturbed
 * run's; the others go on and every block comes back. */
static int g_pc_rows[3], g_pc_generated[3];
static int32_t *g_pc_routing[3];
static mt_finish_reason g_pc_reason[3];
static void on_preempted_cancel_event(void *ctx, const mt_engine_event *ev) {
    (void)ctx;
    if (ev->kind != MT_EVENT_FINISHED) return;
    g_pc_rows[ev->id] = ev->routing_rows;
    size_t bytes = (size_t)ev->routing_rows * (size_t)(*(const size_t *)ctx) * sizeof(int32_t);
    free(g_pc_routing[ev->id]);
    g_pc_routing[ev->id] = malloc(bytes ? bytes : 1);
    if (bytes) memcpy(g_pc_routing[ev->id], ev->routing, bytes);
    g_pc_generated[ev->id] = ev->n_generated;
    g_pc_reason[ev->id] = ev->reason;
}

static void test_cancel_preempted(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    /* three 20-token prompts (2 blocks each) fit 8 blocks; growing to 80 tokens (5 blocks) they do not */
    size_t row = (size_t)m.cfg.num_hidden_layers * m.cfg.top_k;
    mt_engine_opts o = {.num_kv_blocks = 8, .max_batch_tokens = 64, .max_running = 3};
    mt_engine *e = mt_engine_new(&m, &o, on_preempted_cancel_event, &row, NULL, &err);
    if (!e) fail_msg("%s", err.msg);
    int32_t prompt[20];
    for (int i = 0; i < 20; i++) prompt[i] = 9 + 3 * i;
    for (int id = 0; id < 3; id++) {
        mt_request r = {.id = id, .prompt = prompt, .n_prompt = 20, .max_new_tokens = 60, .ignore_eos = true};
        prompt[0] = 100 + id;
        if (mt_engine_submit(e, &r, &err)) fail_msg("%s", err.msg);
    }
    mt_engine_stats st = {0};
    for (int steps = 0; st.preemptions == 0 && steps < 200; steps++) {
        assert_true(mt_engine_step(e, &err) >= 0);   /* 0: a step that only ended an overlapped pass */
        mt_engine_get_stats(e, &st);
    }
    assert_int_equal(st.preemptions, 1);
    assert_int_equal(st.waiting, 1);
    assert_true(mt_engine_cancel(e, 2)); /* the newest is the one preempted */
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    assert_int_equal(g_pc_reason[2], MT_FINISH_CANCELLED);
    assert_true(g_pc_generated[2] > 0);
    int cancelled_rows = g_pc_rows[2];
    assert_int_equal(cancelled_rows, 20 + g_pc_generated[2] - 1);
    int32_t *cancelled = g_pc_routing[2];
    g_pc_routing[2] = NULL;
    for (int id = 0; id < 2; id++) {
        assert_int_equal(g_pc_reason[id], MT_FINISH_LENGTH);
        assert_int_equal(g_pc_rows[id], 20 + 60 - 1);
    }
    mt_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_free, st.kv_blocks_total);
    mt_engine_free(e);
    /* the same request alone, with room: its first rows are the cancelled one's */
    o.num_kv_blocks = 64;
    if (!(e = mt_engine_new(&m, &o, on_preempted_cancel_event, &row, NULL, &err))) fail_msg("%s", err.msg);
    prompt[0] = 102;
    mt_request alone = {.id = 2, .prompt = prompt, .n_prompt = 20, .max_new_tokens = 60, .ignore_eos = true};
    if (mt_engine_submit(e, &alone, &err)) fail_msg("%s", err.msg);
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    assert_int_equal(g_pc_rows[2], 20 + 60 - 1);
    assert_memory_equal(cancelled, g_pc_routing[2], (size_t)cancelled_rows * row * sizeof(int32_t));
    free(cancelled);
    for (int id = 0; id < 3; id++) {
        free(g_pc_routing[id]);
        g_pc_routing[id] = NULL;
    }
    mt_engine_free(e);
    mt_model_free(&m);
}

static int g_cached_of[2];
static void on_cached_event(void *ctx, const mt_engine_event *ev) {
    (void)ctx;
    if (ev->kind == MT_EVENT_FINISHED && ev->id >= 10) g_cached_of[ev->id - 10] = ev->n_cached;
}

/* A request given back before it forwarded anything (here retracted; a preemption takes the same path)
 * whose cached prefix is evicted meanwhile forwards that prefix itself when admitted again: it reports
 * no cached tokens, and the prefix cache's statistics count the lookups of the admission that
 * forwarded, hits and misses alike (audit h14: it reported the 48 tokens of its first admission, and
 * lookups counted only hits). */
static void test_cached_tokens_after_give_back(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    mt_engine_opts o = {.num_kv_blocks = 64, .max_batch_tokens = 1, .max_running = 4, .prefix_cache = true};
    mt_engine *e = mt_engine_new(&m, &o, on_cached_event, NULL, NULL, &err);
    if (!e) fail_msg("%s", err.msg);
    int32_t prompt[60];
    for (int i = 0; i < 60; i++) prompt[i] = 5 + 7 * i % 400;
    mt_request a = {.id = 1, .prompt = prompt, .n_prompt = 48, .max_new_tokens = 1, .ignore_eos = true};
    if (mt_engine_submit(e, &a, &err)) fail_msg("%s", err.msg);
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    mt_engine_stats st;
    mt_engine_get_stats(e, &st);
    assert_int_equal(st.prefix_lookup_blocks, 2); /* positions 0-31 before its first to forward, 47 */
    assert_int_equal(st.prefix_hit_blocks, 0);
    /* L takes every pass's one-token budget; X adopts A's three blocks and forwards nothing */
    int32_t other[4] = {401, 402, 403, 404};
    mt_request l = {.id = 10, .prompt = other, .n_prompt = 4, .max_new_tokens = 8, .ignore_eos = true};
    mt_request x = {.id = 11, .prompt = prompt, .n_prompt = 60, .max_new_tokens = 1, .ignore_eos = true};
    if (mt_engine_submit(e, &l, &err) || mt_engine_submit(e, &x, &err)) fail_msg("%s", err.msg);
    assert_true(mt_engine_step(e, &err) > 0);
    mt_engine_get_stats(e, &st);
    assert_int_equal(st.running, 2);
    assert_int_equal(st.prefix_hit_blocks, 3);
    assert_int_equal(mt_engine_retract(e), 2);
    assert_int_equal(mt_engine_flush_prefix_cache(e), 3);
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    assert_int_equal(g_cached_of[1], 0);
    assert_int_equal(g_cached_of[0], 0);
    mt_engine_get_stats(e, &st);
    assert_int_equal(st.prefix_hit_blocks, 0);
    assert_int_equal(st.prefix_lookup_blocks, 2 + 3); /* A's, X's second admission's (all missed) */
    mt_engine_free(e);
    mt_model_free(&m);
}

/* Blocks taken as tokens need them: preempted requests come back with the same tokens, scores and
 * routing (tests/preemption_check.h). */
static void test_preemption(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    check_decode_equals_prefill(&m);
    check_preemption(&m, NULL);
    check_preempted_while_scoring(&m);
    mt_model_free(&m);
}

/* serve's /pause_generation "retract" runs the engine through one of these: every running request
 * back at the head of the queue, in its order. The PRE_N requests of tests/preemption_check.h run
 * retracted every `every` steps (0: never) on an engine with blocks to spare; fills pre_res. */
static void run_retracting(const mt_model *m, bool prefix_cache, int every, mt_engine_stats *st) {
    mt_err err;
    pre_clear();
    /* a pass's budget forwards every running context again, so retracted requests still progress */
    mt_engine_opts o = {.num_kv_blocks = 64, .max_batch_tokens = 512, .max_running = 4, .prefix_cache = prefix_cache};
    mt_engine *e = mt_engine_new(m, &o, pre_on_event, NULL, NULL, &err);
    if (!e) fail_msg("%s", err.msg);
    for (int r = 0; r < PRE_N; r++) {
        mt_request req = pre_request(r);
        if (mt_engine_submit(e, &req, &err)) fail_msg("%s", err.msg);
    }
    for (int step = 1; !mt_engine_idle(e); step++) {
        if (step > 2000) fail_msg("no progress after %d steps", step);
        if (mt_engine_step(e, &err) < 0) fail_msg("%s", err.msg);
        if (every && step % every == 0) {
            mt_engine_stats before;
            mt_engine_get_stats(e, &before);
            assert_int_equal(mt_engine_retract(e), before.running);
            mt_engine_stats after;
            mt_engine_get_stats(e, &after);
            assert_int_equal(after.running, 0);
            assert_int_equal(after.waiting, before.waiting + before.running);
        }
    }
    mt_engine_get_stats(e, st);
    assert_int_equal(st->kv_blocks_free, st->kv_blocks_total);
    mt_engine_free(e);
}

/* Retracted requests come back with the tokens, log-probabilities, prompt scores and routing of an
 * undisturbed run (with and without the prefix cache), and retractions are not counted as
 * preemptions; mt_engine_finish_cancelled ends cancelled requests, queued or running, without a
 * forward pass. */
static void test_retract_and_finish_cancelled(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    pre_row = (size_t)m.cfg.num_hidden_layers * m.cfg.top_k;
    for (int r = 0; r < PRE_N; r++)
        for (int i = 0; i < pre_len(r); i++) pre_prompt[r][i] = (int32_t)(3 + (r * 131 + i * 17) % 500);
    static pre_result want[PRE_N];
    mt_engine_stats st;
    run_retracting(&m, true, 0, &st);
    memcpy(want, pre_res, sizeof want);
    memset(pre_res, 0, sizeof pre_res); /* want owns the buffers now */
    for (int cache = 0; cache < 2; cache++) {
        run_retracting(&m, cache, 5, &st);
        assert_int_equal(st.preemptions, 0);
        assert_true(st.tokens_recomputed > 0);
        for (int r = 0; r < PRE_N; r++) {
            const pre_result *got = &pre_res[r], *w = &want[r];
            assert_int_equal(got->finished, 1);
            assert_int_equal(got->reason, MT_FINISH_LENGTH);
            assert_int_equal(got->n_tokens, w->n_tokens);
            assert_int_equal(got->streamed, w->n_tokens); /* no token streamed twice */
            if (memcmp(got->tokens, w->tokens, (size_t)w->n_tokens * sizeof(int32_t)))
                fail_msg("cache %d request %d: tokens differ from the undisturbed run", cache, r);
            if (r % 2 == 0 && memcmp(got->logprobs, w->logprobs, (size_t)w->n_tokens * sizeof(float)))
                fail_msg("cache %d request %d: log-probabilities differ", cache, r);
            assert_int_equal(got->rows, w->rows);
            if (memcmp(got->routing, w->routing, (size_t)w->rows * pre_row * sizeof(int32_t)))
                fail_msg("cache %d request %d: routing differs from the undisturbed run", cache, r);
            if (pre_score_from(r) && memcmp(got->prompt_lp, w->prompt_lp, (size_t)pre_len(r) * sizeof(float)))
                fail_msg("cache %d request %d: prompt scores differ", cache, r);
        }
    }
    pre_clear();
    memcpy(pre_res, want, sizeof want);
    pre_clear();

    /* cancelled while paused: one running, one queued, both end at once without a pass */
    mt_engine_opts o = {.num_kv_blocks = 64, .max_batch_tokens = 24, .max_running = 4, .prefix_cache = true};
    mt_engine *e = mt_engine_new(&m, &o, pre_on_event, NULL, NULL, &err);
    if (!e) fail_msg("%s", err.msg);
    for (int r = 0; r < 6; r++) {
        mt_request req = pre_request(r);
        if (mt_engine_submit(e, &req, &err)) fail_msg("%s", err.msg);
    }
    for (int i = 0; i < 3; i++)
        if (mt_engine_step(e, &err) < 0) fail_msg("%s", err.msg);
    assert_int_equal(mt_engine_finish_cancelled(e), 0);
    assert_true(mt_engine_cancel(e, 0));
    assert_true(mt_engine_cancel(e, 5));
    mt_engine_stats before, after;
    mt_engine_get_stats(e, &before);
    assert_int_equal(before.running, 4);
    assert_int_equal(mt_engine_finish_cancelled(e), 2);
    mt_engine_get_stats(e, &after);
    assert_int_equal(after.forward_passes, before.forward_passes);
    assert_int_equal(after.running, 3);
    assert_int_equal(after.waiting, 1);
    for (int r = 0; r < 6; r += 5) {
        assert_int_equal(pre_res[r].finished, 1);
        assert_int_equal(pre_res[r].reason, MT_FINISH_CANCELLED);
    }
    assert_int_equal(pre_res[5].rows, 0);
    assert_true(pre_res[0].rows > 0);
    while (!mt_engine_idle(e))
        if (mt_engine_step(e, &err) < 0) fail_msg("%s", err.msg);
    for (int r = 1; r < 5; r++) assert_int_equal(pre_res[r].reason, MT_FINISH_LENGTH);
    mt_engine_free(e);
    pre_clear();
    mt_model_free(&m);
}

int main(void) {
    mt_kernels_init(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_equals_solo),
        cmocka_unit_test(test_cancel_and_bad_requests),
        cmocka_unit_test(test_no_routing),
        cmocka_unit_test(test_request_names),
        cmocka_unit_test(test_shared_prefix_in_flight),
        cmocka_unit_test(test_scored_prompts),
        cmocka_unit_test(test_kv_sized_from_memory),
        cmocka_unit_test(test_preemption),
        cmocka_unit_test(test_cached_tokens_after_give_back),
        cmocka_unit_test(test_cancel_preempted),
        cmocka_unit_test(test_retract_and_finish_cancelled),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mt_kernels_shutdown();
    return rc;
}
