/* Requests of several outputs, end to end over HTTP (a small text model with dummy weights, the
 * trained test tokenizer and the Qwen3 chat template):
 *  - /generate with a list of prompts ("input_ids" lists, "rid" lists or a string, a list of
 *    sampling_params): a JSON list in prompt order, each output equal to the prompt sent alone;
 *  - "n" samples of one prompt: output 0 equals the prompt sent alone with the same seed, the others
 *    draw from seeds of their own (reproducible), every sample carries the prompt's routing, and
 *    samples 1.. adopt the prompt's KV blocks from sample 0 (cached_tokens) instead of forwarding it;
 *  - streamed, each output's events carry its "index", [DONE] ends the whole stream once;
 *  - /v1/completions with a list of prompts and n, /v1/chat/completions with n: choices in order,
 *    usage summed (each prompt counted once), one usage chunk at the end of a stream;
 *  - a client that leaves a streamed request of 8 outputs cancels them all: the engine ends up idle
 *    with every KV block free, the outputs counted as aborted;
 *  - /abort_request by the rid of a request of several outputs, or all, ends each as aborted with the
 *    routing of what it forwarded when that covers its tokens (P + G - 1 rows, what SGLang's clients
 *    reshape it to), and without routed_experts when it was aborted before (queued, or in its
 *    prefill); bad bodies are 400s, an unknown rid aborts nothing;
 *  - meta_info.routed_experts_start_len states the start of the rows returned (slime reads it);
 *  - /health_generate generates a token and answers 200 with an empty body;
 *  - a rid still running is refused to another request (400, as SGLang's "Duplicate request ID"),
 *    alone or in a list, and accepted again once its request has answered;
 *  - the sampling controls, greedy: logit_bias +100 makes every token the biased one, -100 on the
 *    greedy first token changes it; min_p 1 keeps only the top token (the greedy output, whatever
 *    the seed); min_new_tokens bars the stop tokens and eos (forced by a bias: taken right after)
 *    and stop strings until that many tokens are out; presence, frequency and repetition penalties
 *    make the repeating output of the dummy model repeat less (the first two change nothing before
 *    its first repeat). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "support/api_util.h"
#include "support/http_client.h"
#include "support/server_proc.h"
#include "server_setup.h"

static const char CONFIG[] =
    "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 1004, \"hidden_size\": 64, \"num_hidden_layers\": 3,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16, \"max_position_embeddings\": 512,"
    " \"num_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32, \"intermediate_size\": 64,"
    " \"mlp_only_layers\": [0], \"eos_token_id\": 2}";

static mt_test_server g_srv;
static mt_http_client *g_c;

static int setup(void **state) {
    (void)state;
    if (server_setup("samples_")) return -1;
    if (!g_bin) return 0;
    char args[1024];
    if (server_text_model(CONFIG)) return -1;
    snprintf(args, sizeof args,
             "--model %s/model --load-format dummy --threads 2 --enable-return-routed-experts --max-batch-tokens 64"
             " --max-running-requests 4",
             g_dir);
    if (mt_test_server_start(&g_srv, g_bin, args, path_of("server.log"), 120)) return -1;
    g_c = mt_http_client_new(g_srv.url, NULL);
    return 0;
}

static int teardown(void **state) { return server_stop_and_teardown(state, &g_srv, g_c); }

static cJSON *call(const char *path, const char *body, long want) { return server_call(g_c, path, body, want); }

static const cJSON *meta(const cJSON *out) { return cJSON_GetObjectItem(out, "meta_info"); }
static const char *meta_str(const cJSON *out, const char *k) { return cJSON_GetObjectItem(meta(out), k)->valuestring; }
static int meta_int(const cJSON *out, const char *k) { return cJSON_GetObjectItem(meta(out), k)->valueint; }

/* A prompt of n ids from seed, as a JSON list. */
static void ids_json(char *out, size_t size, int n, int seed) {
    size_t at = (size_t)snprintf(out, size, "[");
    for (int i = 0; i < n; i++) at += (size_t)snprintf(out + at, size - at, "%s%d", i ? ", " : "", 5 + (seed * 37 + i * 11) % 900);
    snprintf(out + at, size - at, "]");
}

/* The routing of an output, decoded: ids [rows * 3 layers * 2]. */
static int32_t *routing_of(const cJSON *out, size_t *count) {
    return mt_api_routing_ids(meta_str(out, "routed_experts"), meta_str(out, "routed_experts_dtype"), count);
}

/* ---- /generate: a list of prompts ---------------------------------------------------------- */

static void test_generate_prompt_list(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char p[3][512], body[4096];
    int len[3] = {7, 23, 40};
    for (int i = 0; i < 3; i++) ids_json(p[i], sizeof p[i], len[i], 100 + i);
    const char *sp = "{\"max_new_tokens\": 4, \"temperature\": 0, \"ignore_eos\": true}";
    snprintf(body, sizeof body,
             "{\"input_ids\": [%s, %s, %s], \"rid\": [\"a\", \"b\", \"c\"], \"sampling_params\": %s,"
             " \"return_routed_experts\": true}", p[0], p[1], p[2], sp);
    cJSON *list = call("/generate", body, 200);
    assert_true(cJSON_IsArray(list));
    assert_int_equal(cJSON_GetArraySize(list), 3);
    for (int i = 0; i < 3; i++) {
        const cJSON *out = cJSON_GetArrayItem(list, i);
        static const char *const RIDS[3] = {"a", "b", "c"};
        assert_string_equal(meta_str(out, "id"), RIDS[i]);
        assert_int_equal(meta_int(out, "prompt_tokens"), len[i]);
        snprintf(body, sizeof body, "{\"input_ids\": %s, \"sampling_params\": %s, \"return_routed_experts\": true}", p[i], sp);
        cJSON *solo = call("/generate", body, 200);
        assert_true(mt_api_same_json(cJSON_GetObjectItem(out, "output_ids"), cJSON_GetObjectItem(solo, "output_ids")));
        assert_string_equal(meta_str(out, "routed_experts"), meta_str(solo, "routed_experts"));
        assert_true(mt_api_same_json(cJSON_GetObjectItem(meta(out), "routed_experts_shape"),
                              cJSON_GetObjectItem(meta(solo), "routed_experts_shape")));
        cJSON_Delete(solo);
    }
    cJSON_Delete(list);

    /* sampled with a seed: every prompt of a list draws as it does alone, wherever it stands (its
     * samples 1.. drew from seeds derived from their place in the whole list before) */
    const char *sampled = "{\"n\": 2, \"temperature\": 1.0, \"seed\": 21, \"max_new_tokens\": 6, \"ignore_eos\": true}";
    snprintf(body, sizeof body, "{\"input_ids\": [%s, %s], \"sampling_params\": %s}", p[0], p[1], sampled);
    list = call("/generate", body, 200);
    assert_int_equal(cJSON_GetArraySize(list), 4);
    for (int i = 0; i < 2; i++) {
        snprintf(body, sizeof body, "{\"input_ids\": %s, \"sampling_params\": %s}", p[i], sampled);
        cJSON *solo = call("/generate", body, 200);
        assert_int_equal(cJSON_GetArraySize(solo), 2);
        for (int k = 0; k < 2; k++)
            if (!mt_api_same_json(cJSON_GetObjectItem(cJSON_GetArrayItem(list, 2 * i + k), "output_ids"),
                           cJSON_GetObjectItem(cJSON_GetArrayItem(solo, k), "output_ids")))
                fail_msg("prompt %d sample %d differs from the prompt sent alone", i, k);
        cJSON_Delete(solo);
    }
    cJSON_Delete(list);

    /* a string rid names the outputs rid_k; sampling_params per prompt */
    snprintf(body, sizeof body,
             "{\"input_ids\": [%s, %s], \"rid\": \"x\", \"sampling_params\": [{\"max_new_tokens\": 2, \"ignore_eos\": true},"
             " {\"max_new_tokens\": 5, \"ignore_eos\": true}]}", p[0], p[1]);
    list = call("/generate", body, 200);
    assert_int_equal(cJSON_GetArraySize(list), 2);
    assert_string_equal(meta_str(cJSON_GetArrayItem(list, 0), "id"), "x_0");
    assert_string_equal(meta_str(cJSON_GetArrayItem(list, 1), "id"), "x_1");
    assert_int_equal(meta_int(cJSON_GetArrayItem(list, 0), "completion_tokens"), 2);
    assert_int_equal(meta_int(cJSON_GetArrayItem(list, 1), "completion_tokens"), 5);
    cJSON_Delete(list);

    /* a list of one text prompt is still answered with a list */
    list = call("/generate", "{\"text\": [\"hello there\"], \"sampling_params\": {\"max_new_tokens\": 1}}", 200);
    assert_true(cJSON_IsArray(list));
    assert_int_equal(cJSON_GetArraySize(list), 1);
    assert_non_null(cJSON_GetObjectItem(cJSON_GetArrayItem(list, 0), "text"));
    cJSON_Delete(list);
}

/* ---- /generate: n samples of one prompt ---------------------------------------------------- */

static void test_generate_samples(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char p[512], body[2048];
    ids_json(p, sizeof p, 40, 7); /* a prompt no other test sends: nothing of it is cached yet */
    const char *sp = "\"temperature\": 1.0, \"seed\": 11, \"max_new_tokens\": 6, \"ignore_eos\": true";
    snprintf(body, sizeof body,
             "{\"input_ids\": %s, \"rid\": \"s\", \"sampling_params\": {\"n\": 4, %s}, \"return_routed_experts\": true}", p, sp);
    cJSON *list = call("/generate", body, 200);
    assert_int_equal(cJSON_GetArraySize(list), 4);
    size_t n0;
    int32_t *r0 = routing_of(cJSON_GetArrayItem(list, 0), &n0);
    assert_non_null(r0);
    assert_int_equal(n0, (40 + 6 - 1) * 3 * 2);
    int distinct = 0;
    for (int k = 0; k < 4; k++) {
        const cJSON *out = cJSON_GetArrayItem(list, k);
        char want[8];
        snprintf(want, sizeof want, "s_%d", k);
        assert_string_equal(meta_str(out, "id"), want);
        /* sample 0 forwarded the prompt; the others waited for its two full blocks and adopted them */
        assert_int_equal(meta_int(out, "cached_tokens"), k == 0 ? 0 : 32);
        size_t n;
        int32_t *r = routing_of(out, &n);
        assert_int_equal(n, n0);
        assert_memory_equal(r, r0, 40 * 3 * 2 * sizeof(int32_t)); /* the prompt's routing */
        free(r);
        distinct += k > 0 && !mt_api_same_json(cJSON_GetObjectItem(out, "output_ids"),
                                        cJSON_GetObjectItem(cJSON_GetArrayItem(list, 0), "output_ids"));
    }
    assert_true(distinct > 0);
    free(r0);

    /* output 0 is the prompt sent alone with the seed; the whole request is reproducible */
    snprintf(body, sizeof body, "{\"input_ids\": %s, \"sampling_params\": {%s}}", p, sp);
    cJSON *solo = call("/generate", body, 200);
    assert_true(mt_api_same_json(cJSON_GetObjectItem(solo, "output_ids"), cJSON_GetObjectItem(cJSON_GetArrayItem(list, 0), "output_ids")));
    cJSON_Delete(solo);
    snprintf(body, sizeof body, "{\"input_ids\": %s, \"sampling_params\": {\"n\": 4, %s}}", p, sp);
    cJSON *again = call("/generate", body, 200);
    for (int k = 0; k < 4; k++)
        assert_true(mt_api_same_json(cJSON_GetObjectItem(cJSON_GetArrayItem(again, k), "output_ids"),
                              cJSON_GetObjectItem(cJSON_GetArrayItem(list, k), "output_ids")));
    cJSON_Delete(again);
    cJSON_Delete(list);
}

/* ---- /generate streamed -------------------------------------------------------------------- */

static void test_generate_stream_list(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char p[2][512], body[2048];
    ids_json(p[0], sizeof p[0], 12, 201);
    ids_json(p[1], sizeof p[1], 30, 202);
    snprintf(body, sizeof body,
             "{\"input_ids\": [%s, %s], \"sampling_params\": {\"n\": 2, \"max_new_tokens\": 5, \"temperature\": 0,"
             " \"ignore_eos\": true}, \"return_routed_experts\": true%%s}", p[0], p[1]);
    char whole_body[2048], stream_body[2048];
    snprintf(whole_body, sizeof whole_body, body, "");
    snprintf(stream_body, sizeof stream_body, body, ", \"stream\": true");
    cJSON *whole = call("/generate", whole_body, 200);
    assert_int_equal(cJSON_GetArraySize(whole), 4);

    mt_sse_events ev;
    long status;
    assert_int_equal(mt_api_stream(g_c, "/generate", stream_body, &ev, &status), 0);
    assert_int_equal(status, 200);
    assert_int_equal(ev.done, 1);
    assert_int_equal(ev.after_done, 0);
    const cJSON *last[4] = {0};
    int finals[4] = {0};
    for (int i = 0; i < ev.n; i++) {
        const cJSON *e = cJSON_GetArrayItem(ev.list, i), *index = cJSON_GetObjectItem(e, "index");
        assert_true(cJSON_IsNumber(index) && index->valueint >= 0 && index->valueint < 4);
        int k = index->valueint;
        assert_int_equal(finals[k], 0); /* nothing after an output's final event */
        last[k] = e;
        finals[k] += !cJSON_IsNull(cJSON_GetObjectItem(meta(e), "finish_reason"));
    }
    for (int k = 0; k < 4; k++) {
        const cJSON *w = cJSON_GetArrayItem(whole, k);
        assert_int_equal(finals[k], 1);
        /* greedy: the two samples of a prompt agree, and the stream ends where the whole answer does */
        assert_true(mt_api_same_json(cJSON_GetObjectItem(last[k], "output_ids"), cJSON_GetObjectItem(w, "output_ids")));
        assert_string_equal(meta_str(last[k], "routed_experts"), meta_str(w, "routed_experts"));
        assert_int_equal(meta_int(w, "prompt_tokens"), k < 2 ? 12 : 30);
    }
    mt_sse_events_free(&ev);
    cJSON_Delete(whole);
}

/* ---- the OpenAI endpoints ------------------------------------------------------------------ */

static const cJSON *choice(const cJSON *resp, int k) { return cJSON_GetArrayItem(cJSON_GetObjectItem(resp, "choices"), k); }
static int usage(const cJSON *resp, const char *k) { return cJSON_GetObjectItem(cJSON_GetObjectItem(resp, "usage"), k)->valueint; }

static void test_openai_choices(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    const char *prompts[2] = {"the quick brown fox", "hello world, hello"};
    const char *opts = "\"max_tokens\": 5, \"temperature\": 0, \"ignore_eos\": true";
    char body[1024];
    snprintf(body, sizeof body, "{\"prompt\": [\"%s\", \"%s\"], \"n\": 2, %s}", prompts[0], prompts[1], opts);
    cJSON *resp = call("/v1/completions", body, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(resp, "choices")), 4);
    assert_int_equal(strncmp(cJSON_GetObjectItem(resp, "id")->valuestring, "cmpl-", 5), 0);
    int prompt_tokens = 0;
    for (int k = 0; k < 4; k++) {
        assert_int_equal(cJSON_GetObjectItem(choice(resp, k), "index")->valueint, k);
        if (k % 2) continue;
        snprintf(body, sizeof body, "{\"prompt\": \"%s\", %s}", prompts[k / 2], opts);
        cJSON *solo = call("/v1/completions", body, 200);
        for (int j = k; j < k + 2; j++)
            assert_string_equal(cJSON_GetObjectItem(choice(resp, j), "text")->valuestring,
                                cJSON_GetObjectItem(choice(solo, 0), "text")->valuestring);
        prompt_tokens += usage(solo, "prompt_tokens");
        cJSON_Delete(solo);
    }
    assert_int_equal(usage(resp, "prompt_tokens"), prompt_tokens); /* each prompt once */
    assert_int_equal(usage(resp, "completion_tokens"), 4 * 5);
    assert_int_equal(usage(resp, "total_tokens"), prompt_tokens + 20);

    /* streamed: chunks of every choice, each choice's text whole, one usage chunk at the end */
    snprintf(body, sizeof body, "{\"prompt\": [\"%s\", \"%s\"], \"n\": 2, %s, \"stream\": true,"
             " \"stream_options\": {\"include_usage\": true}}", prompts[0], prompts[1], opts);
    mt_sse_events ev;
    long status;
    assert_int_equal(mt_api_stream(g_c, "/v1/completions", body, &ev, &status), 0);
    assert_int_equal(status, 200);
    char text[4][512] = {{0}};
    int usage_chunks = 0;
    for (int i = 0; i < ev.n; i++) {
        const cJSON *e = cJSON_GetArrayItem(ev.list, i), *choices = cJSON_GetObjectItem(e, "choices");
        if (cJSON_GetArraySize(choices) == 0) {
            usage_chunks++;
            assert_int_equal(i, ev.n - 1);
            assert_int_equal(usage(e, "prompt_tokens"), prompt_tokens);
            assert_int_equal(usage(e, "completion_tokens"), 20);
            continue;
        }
        const cJSON *c = cJSON_GetArrayItem(choices, 0);
        int k = cJSON_GetObjectItem(c, "index")->valueint;
        assert_true(k >= 0 && k < 4);
        strncat(text[k], cJSON_GetObjectItem(c, "text")->valuestring, sizeof text[k] - strlen(text[k]) - 1);
    }
    assert_int_equal(usage_chunks, 1);
    for (int k = 0; k < 4; k++) assert_string_equal(text[k], cJSON_GetObjectItem(choice(resp, k), "text")->valuestring);
    mt_sse_events_free(&ev);
    cJSON_Delete(resp);

    /* chat: n choices of one conversation; choice 0 is the conversation sent alone with the seed */
    const char *chat = "\"messages\": [{\"role\": \"user\", \"content\": \"tell me\"}], \"max_tokens\": 6,"
                       " \"temperature\": 1.0, \"seed\": 3, \"ignore_eos\": true";
    snprintf(body, sizeof body, "{%s, \"n\": 3}", chat);
    resp = call("/v1/chat/completions", body, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(resp, "choices")), 3);
    assert_int_equal(usage(resp, "completion_tokens"), 18);
    snprintf(body, sizeof body, "{%s}", chat);
    cJSON *solo = call("/v1/chat/completions", body, 200);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(choice(resp, 0), "message"), "content")->valuestring,
                        cJSON_GetObjectItem(cJSON_GetObjectItem(choice(solo, 0), "message"), "content")->valuestring);
    assert_int_equal(usage(resp, "prompt_tokens"), usage(solo, "prompt_tokens"));
    cJSON_Delete(solo);
    cJSON_Delete(resp);
}

/* ---- a client leaving a request of several outputs ------------------------------------------ */

static int leave_after_events(const char *data, size_t len, void *ctx) {
    (void)data, (void)len;
    return ++*(int *)ctx >= 3;
}

/* moetrace_requests_finished_total{finish_reason="abort"} now. */
static double aborted_requests(void) {
    mt_http_response m;
    assert_int_equal(mt_http_call(g_c, "GET", "/metrics", NULL, &m), 0);
    const char *key = "moetrace_requests_finished_total{finish_reason=\"abort\"} ", *at = strstr(m.body, key);
    double v = at ? atof(at + strlen(key)) : -1;
    mt_http_response_free(&m);
    return v;
}

static void test_disconnect_cancels_every_output(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    double aborted_before = aborted_requests();
    char p[512], body[1024];
    ids_json(p, sizeof p, 20, 300);
    snprintf(body, sizeof body,
             "{\"input_ids\": %s, \"sampling_params\": {\"n\": 8, \"max_new_tokens\": 480, \"ignore_eos\": true},"
             " \"stream\": true}", p);
    int seen = 0;
    mt_http_response r;
    assert_int_equal(mt_http_stream(g_c, "/generate", body, leave_after_events, &seen, &r), 1);
    mt_http_response_free(&r);
    double running = -1, waiting = -1, free_blocks = -1, total = -2;
    for (int tries = 0; tries < 200; tries++) {
        mt_http_response m;
        assert_int_equal(mt_http_call(g_c, "GET", "/metrics", NULL, &m), 0);
        running = mt_prom_value(m.body, "moetrace_num_requests_running");
        waiting = mt_prom_value(m.body, "moetrace_num_requests_waiting");
        free_blocks = mt_prom_value(m.body, "moetrace_kv_cache_blocks_free");
        total = mt_prom_value(m.body, "moetrace_kv_cache_blocks_total");
        mt_http_response_free(&m);
        if (running == 0 && waiting == 0 && free_blocks == total) break;
        usleep(50 * 1000);
    }
    assert_true(running == 0 && waiting == 0);
    assert_true(free_blocks == total);
    /* four run at a time: at least the four that had not started were cancelled */
    assert_true(aborted_requests() - aborted_before >= 4);
    /* and the server serves on */
    cJSON_Delete(call("/generate", "{\"input_ids\": [5, 6, 7], \"sampling_params\": {\"max_new_tokens\": 2}}", 200));
}

/* ---- /abort_request ------------------------------------------------------------------------ */

typedef struct abort_probe {
    const char *abort_body;  /* sent at the first event */
    int events, aborted;
    long status;
    char finish[6][16];      /* each output's finish reason type */
    int rows[6];             /* each output's routing rows, -1 without routed_experts */
    int tokens[6];           /* each output's completion_tokens */
} abort_probe;

static int abort_at_first_event(const char *data, size_t len, void *ctx) {
    abort_probe *p = ctx;
    cJSON *e = cJSON_ParseWithLength(data, len);
    const cJSON *index = cJSON_GetObjectItem(e, "index"), *m = cJSON_GetObjectItem(e, "meta_info");
    const cJSON *type = cJSON_GetObjectItem(cJSON_GetObjectItem(m, "finish_reason"), "type");
    int k = cJSON_IsNumber(index) ? index->valueint : 0;
    if (k >= 0 && k < 6 && cJSON_IsString(type)) {
        snprintf(p->finish[k], sizeof p->finish[k], "%s", type->valuestring);
        const cJSON *shape = cJSON_GetObjectItem(m, "routed_experts_shape");
        p->rows[k] = shape ? cJSON_GetArrayItem(shape, 0)->valueint : -1;
        assert_true(!shape == !cJSON_GetObjectItem(m, "routed_experts"));
        p->tokens[k] = cJSON_GetObjectItem(m, "completion_tokens")->valueint;
    }
    cJSON_Delete(e);
    if (p->events++ == 0) {
        mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
        cJSON *a = mt_api_json(c, "/abort_request", p->abort_body, &p->status);
        p->aborted = a ? cJSON_GetObjectItem(a, "aborted")->valueint : -1;
        cJSON_Delete(a);
        mt_http_client_free(c);
    }
    return 0;
}

static void test_abort_request(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char p[512], body[1024];
    ids_json(p, sizeof p, 20, 400);
    const char *bodies[2] = {"{\"rid\": \"ab\"}", "{\"abort_all\": true}"};
    for (int round = 0; round < 2; round++) {
        /* the six outputs of a request named "ab" (ab_0 ... ab_5; four run at once, so ab_4 and
         * ab_5 are still queued at the first event), then every request */
        snprintf(body, sizeof body,
                 "{\"input_ids\": %s, \"rid\": \"ab\", \"stream\": true, \"return_routed_experts\": true,"
                 " \"sampling_params\": {\"n\": 6, \"max_new_tokens\": 480, \"ignore_eos\": true}}", p);
        abort_probe probe = {.abort_body = bodies[round]};
        mt_http_response r;
        assert_int_equal(mt_http_stream(g_c, "/generate", body, abort_at_first_event, &probe, &r), 0);
        mt_http_response_free(&r);
        assert_int_equal(probe.status, 200);
        assert_int_equal(probe.aborted, 6);
        int most = 0;
        for (int k = 0; k < 6; k++) {
            assert_string_equal(probe.finish[k], "abort");
            /* the routing of what each forwarded before the abort, when that covers the prompt and
             * the tokens it answers with (P + G - 1 rows, as slime and AReaL reshape it); outputs
             * cancelled before (queued, or with only the 16 adopted rows) answer without it */
            if (probe.rows[k] >= 0) assert_int_equal(probe.rows[k], 20 + probe.tokens[k] - 1);
            else assert_int_equal(probe.tokens[k], 0);
            most = probe.rows[k] > most ? probe.rows[k] : most;
        }
        assert_true(most >= 20);
        assert_int_equal(probe.rows[4], -1);
        assert_int_equal(probe.rows[5], -1);
    }
    long status;
    static const char *const BAD[] = {"{}", "{\"rid\": 5}", "{\"rid\": \"\"}", "{\"abort_all\": \"yes\"}", "[]", "x"};
    for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) {
        cJSON *e = mt_api_json(g_c, "/abort_request", BAD[i], &status);
        assert_int_equal(status, 400);
        cJSON_Delete(e);
    }
    cJSON *none = call("/abort_request", "{\"rid\": \"no-such-request\"}", 200);
    assert_int_equal(cJSON_GetObjectItem(none, "aborted")->valueint, 0);
    cJSON_Delete(none);
}

/* ---- routed_experts_start_len read back, /health_generate -------------------------------------- */

static void test_routing_start_echoed(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char p[256], body[512];
    ids_json(p, sizeof p, 9, 77);
    const int starts[3] = {-1, 0, 4};   /* -1: not given */
    for (int i = 0; i < 3; i++) {
        char start[64] = "";
        if (starts[i] >= 0) snprintf(start, sizeof start, "\"routed_experts_start_len\": %d, ", starts[i]);
        snprintf(body, sizeof body,
                 "{\"input_ids\": %s, %s\"return_routed_experts\": true,"
                 " \"sampling_params\": {\"max_new_tokens\": 3, \"ignore_eos\": true}}", p, start);
        cJSON *out = call("/generate", body, 200);
        int want = starts[i] > 0 ? starts[i] : 0;
        const cJSON *echoed = cJSON_GetObjectItem(meta(out), "routed_experts_start_len");
        assert_true(cJSON_IsNumber(echoed));
        assert_int_equal(echoed->valueint, want);
        const cJSON *shape = cJSON_GetObjectItem(meta(out), "routed_experts_shape");
        assert_int_equal(cJSON_GetArrayItem(shape, 0)->valueint, 9 + 3 - 1 - want);
        cJSON_Delete(out);
    }
    snprintf(body, sizeof body, "{\"input_ids\": %s, \"sampling_params\": {\"max_new_tokens\": 1}}", p);
    cJSON *plain = call("/generate", body, 200);
    assert_null(cJSON_GetObjectItem(meta(plain), "routed_experts_start_len"));
    cJSON_Delete(plain);
}

static void test_health_generate(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    for (int post = 0; post < 2; post++) {
        mt_http_response r;
        assert_int_equal(mt_http_call(g_c, post ? "POST" : "GET", "/health_generate", post ? "{}" : NULL, &r), 0);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.len, 0);
        mt_http_response_free(&r);
    }
}

/* ---- a rid in use ----------------------------------------------------------------------------- */

typedef struct dup_probe {
    const char *posts[3][2]; /* path and body of the requests made at the stream's first event */
    int events;
    long status[3];
    char message[3][256];
} dup_probe;

static void post_noting(const char *path, const char *body, long *status, char *message, size_t len) {
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    cJSON *a = mt_api_json(c, path, body, status);
    const cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "error"), "message");
    snprintf(message, len, "%s", cJSON_IsString(m) ? m->valuestring : "");
    cJSON_Delete(a);
    mt_http_client_free(c);
}

static int post_at_first_event(const char *data, size_t len, void *ctx) {
    (void)data, (void)len;
    dup_probe *p = ctx;
    if (p->events++ == 0)
        for (int i = 0; i < 3; i++) post_noting(p->posts[i][0], p->posts[i][1], &p->status[i], p->message[i], sizeof p->message[i]);
    return 0;
}

static void test_rid_in_use(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char p[512], body[1024];
    ids_json(p, sizeof p, 20, 400);
    snprintf(body, sizeof body,
             "{\"input_ids\": %s, \"rid\": \"dup\", \"stream\": true, \"sampling_params\": {\"max_new_tokens\": 480,"
             " \"ignore_eos\": true}}", p);
    /* the same rid alone, in a list, and the abort */
    dup_probe probe = {.posts = {
        {"/generate", "{\"input_ids\": [5, 6], \"rid\": \"dup\", \"sampling_params\": {\"max_new_tokens\": 2}}"},
        {"/generate", "{\"input_ids\": [[5, 6], [7]], \"rid\": [\"other\", \"dup\"], \"sampling_params\": {\"max_new_tokens\": 2}}"},
        {"/abort_request", "{\"rid\": \"dup\"}"}}};
    mt_http_response r;
    assert_int_equal(mt_http_stream(g_c, "/generate", body, post_at_first_event, &probe, &r), 0);
    mt_http_response_free(&r);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(probe.status[i], 400);
        assert_non_null(strstr(probe.message[i], "duplicate request id 'dup'"));
    }
    assert_non_null(strstr(probe.message[1], "prompt 1: "));
    assert_int_equal(probe.status[2], 200); /* the running one is aborted: the refused ones never ran */
    /* answered, so the rid is free again, and the rid of a refused list is not held either */
    cJSON *again = call("/generate", "{\"input_ids\": [5, 6], \"rid\": \"dup\", \"sampling_params\": {\"max_new_tokens\": 2}}", 200);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(again, "meta_info"), "id")->valuestring, "dup");
    cJSON_Delete(again);
    cJSON_Delete(call("/generate", "{\"input_ids\": [5], \"rid\": \"other\", \"sampling_params\": {\"max_new_tokens\": 1}}", 200));
}

/* While outputs fam_0 and fam_1 of rid "fam" run, rid "fam" alone clashes with them (the abort of
 * either would reach both); "fam_x" is a different name. */
static void test_rid_clash(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char p[512], body[1024];
    ids_json(p, sizeof p, 20, 400);
    snprintf(body, sizeof body,
             "{\"input_ids\": %s, \"rid\": \"fam\", \"stream\": true, \"sampling_params\": {\"n\": 2,"
             " \"max_new_tokens\": 480, \"ignore_eos\": true}}", p);
    dup_probe probe = {.posts = {
        {"/generate", "{\"input_ids\": [5, 6], \"rid\": \"fam\", \"sampling_params\": {\"max_new_tokens\": 2}}"},
        {"/generate", "{\"input_ids\": [5, 6], \"rid\": \"fam_x\", \"sampling_params\": {\"max_new_tokens\": 1}}"},
        {"/abort_request", "{\"rid\": \"fam\"}"}}};
    mt_http_response r;
    assert_int_equal(mt_http_stream(g_c, "/generate", body, post_at_first_event, &probe, &r), 0);
    mt_http_response_free(&r);
    assert_int_equal(probe.status[0], 400);
    assert_non_null(strstr(probe.message[0], "request id 'fam' clashes with the running request 'fam_"));
    assert_int_equal(probe.status[1], 200);
    assert_int_equal(probe.status[2], 200);
    cJSON_Delete(call("/generate", "{\"input_ids\": [5], \"rid\": \"fam\", \"sampling_params\": {\"max_new_tokens\": 1}}", 200));
}

/* ---- the sampling controls ---------------------------------------------------------------- */

#define CTRL_PROMPT "hello world"

/* /generate of CTRL_PROMPT with the sampling params fields (JSON object members, no braces): its
 * output_ids into ids (at most cap) and their count; *out: the answer (NULL: freed). */
static int generate_ids(const char *fields, int32_t *ids, int cap, cJSON **out) {
    char body[1024];
    snprintf(body, sizeof body, "{\"text\": \"" CTRL_PROMPT "\", \"sampling_params\": {%s}}", fields);
    cJSON *resp = call("/generate", body, 200);
    const cJSON *list = cJSON_GetObjectItem(resp, "output_ids");
    int n = cJSON_GetArraySize(list);
    assert_true(n <= cap);
    for (int i = 0; i < n; i++) ids[i] = cJSON_GetArrayItem(list, i)->valueint;
    if (out) *out = resp;
    else cJSON_Delete(resp);
    return n;
}

static int distinct(const int32_t *ids, int n) {
    int d = 0;
    for (int i = 0; i < n; i++) {
        int j = 0;
        while (j < i && ids[j] != ids[i]) j++;
        d += j == i;
    }
    return d;
}

/* The finish reason of a /generate answer: its type, and "matched" (a token id, or -1). */
static const char *finish_type(const cJSON *out, int *matched) {
    const cJSON *f = cJSON_GetObjectItem(meta(out), "finish_reason"), *m = cJSON_GetObjectItem(f, "matched");
    if (matched) *matched = cJSON_IsNumber(m) ? m->valueint : -1;
    return cJSON_GetObjectItem(f, "type")->valuestring;
}

#define GREEDY "\"temperature\": 0, \"ignore_eos\": true, "

static void test_logit_bias_min_p(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    int32_t base[8], ids[8];
    char fields[256];
    assert_int_equal(generate_ids(GREEDY "\"max_new_tokens\": 8", base, 8, NULL), 8);
    /* +100 on a token the greedy output does not start with: every token is that one */
    int32_t chosen = base[0] == 77 ? 78 : 77;
    snprintf(fields, sizeof fields, GREEDY "\"max_new_tokens\": 8, \"logit_bias\": {\"%d\": 100}", chosen);
    assert_int_equal(generate_ids(fields, ids, 8, NULL), 8);
    for (int i = 0; i < 8; i++) assert_int_equal(ids[i], chosen);
    /* -100 on the greedy first token: another one comes first */
    snprintf(fields, sizeof fields, GREEDY "\"max_new_tokens\": 8, \"logit_bias\": {\"%d\": -100}", base[0]);
    assert_int_equal(generate_ids(fields, ids, 8, NULL), 8);
    assert_int_not_equal(ids[0], base[0]);
    /* min_p 1 at temperature 1 keeps only the most likely token: the greedy output whatever the seed,
     * which the same seeds without it do not all give */
    int sampled_differ = 0;
    for (int seed = 1; seed <= 3; seed++) {
        snprintf(fields, sizeof fields, "\"temperature\": 1, \"ignore_eos\": true, \"max_new_tokens\": 8, \"seed\": %d, "
                 "\"min_p\": 1", seed);
        assert_int_equal(generate_ids(fields, ids, 8, NULL), 8);
        assert_memory_equal(ids, base, sizeof base);
        snprintf(fields, sizeof fields, "\"temperature\": 1, \"ignore_eos\": true, \"max_new_tokens\": 8, \"seed\": %d", seed);
        assert_int_equal(generate_ids(fields, ids, 8, NULL), 8);
        sampled_differ += memcmp(ids, base, sizeof base) != 0;
    }
    assert_true(sampled_differ > 0);
}

static void test_min_new_tokens(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    int32_t base[8], ids[8];
    char fields[512];
    cJSON *out;
    assert_int_equal(generate_ids(GREEDY "\"max_new_tokens\": 8", base, 8, NULL), 8);
    int matched;
    /* the greedy first token as a stop token: alone it ends the output at once; min_new_tokens 3 bars
     * it from the first three tokens */
    snprintf(fields, sizeof fields, "\"temperature\": 0, \"max_new_tokens\": 8, \"stop_token_ids\": [%d]", base[0]);
    assert_int_equal(generate_ids(fields, ids, 8, &out), 1);
    assert_string_equal(finish_type(out, &matched), "stop");
    assert_int_equal(matched, base[0]);
    cJSON_Delete(out);
    snprintf(fields, sizeof fields, "\"temperature\": 0, \"max_new_tokens\": 8, \"stop_token_ids\": [%d], "
             "\"min_new_tokens\": 3", base[0]);
    int n = generate_ids(fields, ids, 8, &out);
    assert_true(n >= 3);
    for (int i = 0; i < 3; i++) assert_int_not_equal(ids[i], base[0]);
    if (!strcmp(finish_type(out, &matched), "stop")) assert_int_equal(ids[n - 1], base[0]);
    cJSON_Delete(out);
    /* eos (2), and a stop token, made the likeliest by a bias: barred until min_new_tokens are out,
     * then taken at once */
    static const struct { const char *fields; int32_t stop; } forced[] = {
        {"\"logit_bias\": {\"2\": 100}", 2},
        {"\"logit_bias\": {\"77\": 100}, \"stop_token_ids\": [77], \"ignore_eos\": true", 77},
    };
    for (int f = 0; f < 2; f++) {
        for (int min_new = 0; min_new <= 5; min_new += 5) {
            snprintf(fields, sizeof fields, "\"temperature\": 0, \"max_new_tokens\": 8, \"min_new_tokens\": %d, %s",
                     min_new, forced[f].fields);
            n = generate_ids(fields, ids, 8, &out);
            assert_int_equal(n, min_new + 1);
            for (int i = 0; i < min_new; i++) assert_int_not_equal(ids[i], forced[f].stop);
            assert_int_equal(ids[min_new], forced[f].stop);
            assert_string_equal(finish_type(out, &matched), "stop");
            assert_int_equal(matched, forced[f].stop);
            cJSON_Delete(out);
        }
    }
    /* a stop string in the first token's text: alone it ends the output at once; with min_new_tokens
     * 4 the output goes on (greedy, as without the stop string) and keeps that text */
    cJSON *first = call("/generate", "{\"text\": \"" CTRL_PROMPT "\", \"sampling_params\": {" GREEDY
                                     "\"max_new_tokens\": 1}}", 200);
    const char *text = cJSON_GetObjectItem(first, "text")->valuestring;
    assert_true(strlen(text) > 0 && !strpbrk(text, "\"\\"));
    snprintf(fields, sizeof fields, GREEDY "\"max_new_tokens\": 8, \"stop\": \"%s\"", text);
    assert_int_equal(generate_ids(fields, ids, 8, &out), 1);
    assert_string_equal(finish_type(out, NULL), "stop");
    assert_string_equal(cJSON_GetObjectItem(out, "text")->valuestring, "");
    cJSON_Delete(out);
    snprintf(fields, sizeof fields, GREEDY "\"max_new_tokens\": 8, \"stop\": \"%s\", \"min_new_tokens\": 4", text);
    n = generate_ids(fields, ids, 8, &out);
    assert_true(n >= 4);
    assert_memory_equal(ids, base, (size_t)n * sizeof *ids);
    assert_int_equal(strncmp(cJSON_GetObjectItem(out, "text")->valuestring, text, strlen(text)), 0);
    cJSON_Delete(out);
    cJSON_Delete(first);
}

static void test_penalties(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    int32_t base[16], ids[16];
    assert_int_equal(generate_ids(GREEDY "\"max_new_tokens\": 16", base, 16, NULL), 16);
    /* the dummy model repeats itself */
    int first_repeat = 0;
    while (first_repeat < 16 && distinct(base, first_repeat + 1) == first_repeat + 1) first_repeat++;
    if (first_repeat == 16) fail_msg("the greedy output repeats no token: nothing to penalise");
    static const char *const PENALTIES[] = {"\"presence_penalty\": 2", "\"frequency_penalty\": 2",
                                            "\"repetition_penalty\": 2"};
    for (int k = 0; k < 3; k++) {
        char fields[256];
        snprintf(fields, sizeof fields, GREEDY "\"max_new_tokens\": 16, %s", PENALTIES[k]);
        assert_int_equal(generate_ids(fields, ids, 16, NULL), 16);
        if (distinct(ids, 16) <= distinct(base, 16))
            fail_msg("%s: %d distinct tokens of 16, unpenalised %d", PENALTIES[k], distinct(ids, 16), distinct(base, 16));
        /* presence and frequency count the output only: until a token repeats they change nothing */
        if (k < 2) assert_memory_equal(ids, base, (size_t)first_repeat * sizeof *ids);
    }
    /* a negative frequency penalty favours repeats: fewer distinct tokens than without */
    assert_int_equal(generate_ids(GREEDY "\"max_new_tokens\": 16, \"frequency_penalty\": -2", ids, 16, NULL), 16);
    assert_true(distinct(ids, 16) < distinct(base, 16));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_prompt_list),
        cmocka_unit_test(test_generate_samples),
        cmocka_unit_test(test_generate_stream_list),
        cmocka_unit_test(test_openai_choices),
        cmocka_unit_test(test_disconnect_cancels_every_output),
        cmocka_unit_test(test_abort_request),
        cmocka_unit_test(test_routing_start_echoed),
        cmocka_unit_test(test_health_generate),
        cmocka_unit_test(test_rid_in_use),
        cmocka_unit_test(test_rid_clash),
        cmocka_unit_test(test_logit_bias_min_p),
        cmocka_unit_test(test_min_new_tokens),
        cmocka_unit_test(test_penalties),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
