/* Shared by the CPU and device tests: the engine with overlapped decode (mt_engine_opts.overlap 1)
 * hands out exactly what it hands out without (-1), for requests that stop early (stop ids picked
 * from a first run, so sequences end while the pass after their last token is in flight), sampled
 * and greedy, with log-probabilities, alternatives and listed tokens, and requests arriving while
 * others decode: the same tokens, scores, finish reasons and FINISHED routing; the sink sees every
 * (request, position, layer) exactly once, and the same expert counts and pass tokens. */
#ifndef MT_TEST_OVERLAP_CHECK_H
#define MT_TEST_OVERLAP_CHECK_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

enum { OV_REQS = 7, OV_MAX_NEW = 40, OV_MAX_POS = 128, OV_LAYERS = 8, OV_EXPERTS = 256, OV_TOPK = 8 };

typedef struct ov_request_out {
    int32_t tokens[OV_MAX_NEW];
    float logprobs[OV_MAX_NEW];
    int n, reason, routing_rows, token_events;
    int32_t routing[OV_MAX_POS * OV_LAYERS * OV_TOPK];
} ov_request_out;

typedef struct ov_run {
    ov_request_out req[OV_REQS];
    long expert_counts[OV_LAYERS][OV_EXPERTS];
    unsigned char seen[OV_REQS][OV_MAX_POS][OV_LAYERS];   /* sink events per (request, position, layer) */
    long pass_tokens, layer_tokens;
    int layers, k, stepped_zero;
    long overlapped, dropped;   /* the engine's passes_overlapped and tokens_dropped */
} ov_run;

static void ov_on_event(void *ctx, const mt_engine_event *ev) {
    ov_run *r = ctx;
    ov_request_out *o = &r->req[ev->id];
    if (ev->kind == MT_EVENT_TOKEN) {
        o->token_events++;
        return;
    }
    o->n = ev->n_generated;
    o->reason = (int)ev->reason;
    memcpy(o->tokens, ev->output, (size_t)ev->n_generated * sizeof *o->tokens);
    for (int i = 0; i < ev->n_generated; i++) o->logprobs[i] = ev->logprobs ? ev->logprobs[i] : NAN;
    o->routing_rows = ev->routing_rows;
    memcpy(o->routing, ev->routing, (size_t)ev->routing_rows * r->layers * r->k * sizeof *o->routing);
}

static void ov_on_layer(void *ctx, const mt_routing_event *ev) {
    ov_run *r = ctx;
    for (int i = 0; i < ev->n_tokens; i++) {
        r->seen[ev->request_ids[i]][ev->positions[i]][ev->layer]++;
        for (int j = 0; j < ev->top_k; j++) r->expert_counts[ev->layer][ev->topk_ids[(size_t)i * ev->top_k + j]]++;
    }
    r->layer_tokens += ev->n_tokens;
}

static void ov_on_pass(void *ctx, const mt_pass_event *ev) {
    ((ov_run *)ctx)->pass_tokens += ev->n_tokens;
}

/* One run of the requests; stops[i] >= 0 is request i's stop id. Requests 5 and 6 arrive after
 * `late_after` steps, while the others decode. */
static void ov_run_requests(const mt_model *m, int overlap, const int32_t *stops, ov_run *r) {
    memset(r, 0, sizeof *r);
    r->layers = m->cfg.num_hidden_layers;
    r->k = m->cfg.top_k;
    assert_true(r->layers <= OV_LAYERS && m->cfg.num_experts <= OV_EXPERTS && r->k <= OV_TOPK);
    mt_routing_sink sink = {ov_on_layer, ov_on_pass, r};
    mt_engine_opts o = {.num_kv_blocks = 256, .max_batch_tokens = 64, .max_running = 8, .prefix_cache = true,
                        .overlap = overlap};
    mt_err err;
    mt_engine *e = mt_engine_new(m, &o, ov_on_event, r, &sink, &err);
    if (!e) fail_msg("%s", err.msg);
    static const int n_prompt[OV_REQS] = {5, 17, 33, 9, 40, 12, 21};
    static const int max_new[OV_REQS] = {1, 2, 7, 20, 33, 25, 18};
    static const int32_t listed[3] = {3, 77, 150};
    int32_t prompt[64];
    const int late_after = 6;
    for (int step = 0, submitted = 0; submitted < OV_REQS || !mt_engine_idle(e); step++) {
        while (submitted < OV_REQS && (submitted < 5 || step >= late_after)) {
            int i = submitted++;
            for (int t = 0; t < n_prompt[i]; t++) prompt[t] = (int32_t)((7 + 13 * i + 5 * t) % m->cfg.vocab_size);
            mt_request q = {.id = i, .prompt = prompt, .n_prompt = n_prompt[i], .max_new_tokens = max_new[i],
                            .ignore_eos = i % 2 == 0, .return_logprob = i != 3, .top_logprobs = i == 4 ? 3 : 0,
                            .stop_ids = stops && stops[i] >= 0 ? &stops[i] : NULL, .n_stop = stops && stops[i] >= 0,
                            .logprob_ids = i == 2 ? listed : NULL, .n_logprob_ids = i == 2 ? 3 : 0,
                            .probe = i == 6};
            if (i % 3 == 1) q.sampling = (mt_sampling_params){.temperature = 0.9f, .top_p = 0.95f, .seed = 40u + i};
            if (mt_engine_submit(e, &q, &err)) fail_msg("%s", err.msg);
        }
        bool busy = !mt_engine_idle(e);
        int n = mt_engine_step(e, &err);
        if (n < 0) fail_msg("%s", err.msg);
        r->stepped_zero += busy && n == 0;
    }
    mt_engine_stats st;
    mt_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_free, st.kv_blocks_total);
    r->overlapped = st.passes_overlapped;
    r->dropped = st.tokens_dropped;
    assert_int_equal(st.tokens_dropped > 0, overlap > 0 && r->stepped_zero > 0);
    mt_engine_free(e);
}

static void ov_assert_same(const ov_run *a, const ov_run *b) {
    for (int i = 0; i < OV_REQS; i++) {
        const ov_request_out *x = &a->req[i], *y = &b->req[i];
        assert_int_equal(x->n, y->n);
        assert_int_equal(x->reason, y->reason);
        assert_int_equal(x->token_events, y->token_events);
        assert_memory_equal(x->tokens, y->tokens, (size_t)x->n * sizeof *x->tokens);
        for (int t = 0; t < x->n; t++)
            if (!(isnan(x->logprobs[t]) && isnan(y->logprobs[t]))) assert_true(x->logprobs[t] == y->logprobs[t]);
        assert_int_equal(x->routing_rows, y->routing_rows);
        assert_memory_equal(x->routing, y->routing, (size_t)x->routing_rows * a->layers * a->k * sizeof *x->routing);
    }
    assert_memory_equal(a->seen, b->seen, sizeof a->seen);
    assert_memory_equal(a->expert_counts, b->expert_counts, sizeof a->expert_counts);
    assert_int_equal(a->pass_tokens, b->pass_tokens);
    assert_int_equal(a->layer_tokens, b->layer_tokens);
}

/* Returns the overlapped run's passes begun while another was in flight. */
static long check_overlap_equals_plain(const mt_model *m) {
    ov_run *plain = calloc(1, sizeof *plain), *over = calloc(1, sizeof *over);
    /* stops: request i's token at generated place 4 + 2i, where it has one (not its last) */
    ov_run_requests(m, -1, NULL, plain);
    int32_t stops[OV_REQS];
    int stopped = 0;
    for (int i = 0; i < OV_REQS; i++) {
        int at = 4 + 2 * i;
        stops[i] = at < plain->req[i].n - 1 ? plain->req[i].tokens[at] : -1;
        stopped += stops[i] >= 0;
    }
    assert_true(stopped >= 3);
    ov_run_requests(m, -1, stops, plain);
    ov_run_requests(m, 1, stops, over);
    int early = 0;
    for (int i = 0; i < OV_REQS; i++) early += plain->req[i].reason == MT_FINISH_STOP;
    assert_true(early >= 3);
    ov_assert_same(plain, over);
    /* every position forwarded reaches the sink once per MoE layer, never a dropped one */
    for (int i = 0; i < OV_REQS; i++)
        for (int p = 0; p < OV_MAX_POS; p++)
            for (int l = 0; l < OV_LAYERS; l++) assert_true(over->seen[i][p][l] <= 1);
    assert_int_equal(plain->stepped_zero, 0);
    assert_int_equal(plain->overlapped + plain->dropped, 0);
    assert_true(over->dropped > 0 && over->stepped_zero > 0);   /* sequences stopped with a pass in flight */
    long overlapped = over->overlapped;
    free(plain);
    free(over);
    return overlapped;
}

#endif
