/* moetrace serve end to end, over real HTTP on loopback, with the qwen3_moe test checkpoint:
 *  - the routing of 64 concurrent /generate requests of varied lengths (batched together by the
 *    engine, chunked prefill) equals `moetrace run --routing-out` for the same prompts (greedy),
 *    decoded as SGLang's helper does (np.frombuffer(b64decode(s), int32).reshape(-1, L, k));
 *  - the sum of all returned routings equals the recorder's stat dump over the same window;
 *  - server-sent events: cumulative output, routing in the last event, then [DONE]; a repeated
 *    prompt served from the prefix cache returns the same routing;
 *  - int16 / uint8 encodings and routed_experts_start_len;
 *  - return_logprob: each output token's log-probability, as the in-process engine gives it;
 *  - SIGTERM while a request streams: it finishes, the active recording is dumped, exit 0. */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "support/api_util.h"
#include "support/http_client.h"
#include "support/server_proc.h"
#include "engine/generate.h"
#include "model/model.h"
#include "tmp_dir.h"
#include "util/base64.h"
#include "util/npy.h"

#define MODEL MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"
#define LAYERS 4
#define TOP_K 2
#define EXPERTS 8
#define DENSE_LAYER 1
#define N_CONCURRENT 64
#define MAX_PROMPT 160

static const char *g_bin;
static mt_test_server g_srv;

static int setup(void **state) {
    (void)state;
    g_bin = getenv("MOETRACE_BIN");
    if (!g_bin) return 0;
    mt_http_global_init();
    if (tmp_dir_make("srv_")) return -1;
    char args[1024], log[512];
    snprintf(args, sizeof args,
             "--model %s --threads 2 --enable-return-routed-experts --expert-distribution-recorder-buffer-size -1 "
             "--expert-dump-dir %s --max-running-requests 16 --max-batch-tokens 64 --drain-timeout 60",
             MODEL, g_dir);
    snprintf(log, sizeof log, "%s/server.log", g_dir);
    return mt_test_server_start(&g_srv, g_bin, args, log, 120);
}

static int teardown(void **state) {
    (void)state;
    if (!g_bin) return 0;
    if (g_srv.pid > 0) mt_test_server_stop(&g_srv, SIGKILL, 10);
    return g_bin ? tmp_dir_remove() : 0;
}

static unsigned lcg(unsigned *s) { return (*s = *s * 1103515245u + 12345u) >> 16; }

/* ---- 64 concurrent requests against `moetrace run` and the recorder ----------------------- */

typedef struct gen_case {
    int32_t prompt[MAX_PROMPT];
    int n_prompt, max_new;
    pthread_barrier_t *start;
    /* results */
    long status;
    int32_t *routing;        /* decoded as SGLang does */
    size_t routing_count;
    int shape[3];
    int32_t output[64];
    int n_output;
    char error[256];
} gen_case;

static char *ids_json(const int32_t *ids, int n) {
    char *s = malloc((size_t)n * 12 + 4), *p = s;
    *p++ = '[';
    for (int i = 0; i < n; i++) p += sprintf(p, "%s%d", i ? "," : "", ids[i]);
    strcpy(p, "]");
    return s;
}

static void *run_case(void *arg) {
    gen_case *g = arg;
    char *ids = ids_json(g->prompt, g->n_prompt), *body = malloc(strlen(ids) + 512);
    sprintf(body, "{\"input_ids\": %s, \"sampling_params\": {\"max_new_tokens\": %d, \"temperature\": 0, "
                  "\"ignore_eos\": true}, \"return_routed_experts\": true}", ids, g->max_new);
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    pthread_barrier_wait(g->start);
    cJSON *j = mt_api_json(c, "/generate", body, &g->status);
    const cJSON *meta = cJSON_GetObjectItem(j, "meta_info");
    const cJSON *b64 = cJSON_GetObjectItem(meta, "routed_experts"), *shape = cJSON_GetObjectItem(meta, "routed_experts_shape");
    if (g->status == 200 && cJSON_IsString(b64) && cJSON_GetArraySize(shape) == 3) {
        /* np.frombuffer(base64.b64decode(s), dtype=np.int32): the raw bytes as native int32 (this
         * machine is little-endian, as the wire format) */
        uint8_t *bytes;
        size_t len;
        if (mt_base64_decode(b64->valuestring, strlen(b64->valuestring), &bytes, &len) == 0) {
            g->routing_count = len / sizeof(int32_t);
            g->routing = malloc(len + 1);
            memcpy(g->routing, bytes, len);
            free(bytes);
        }
        for (int d = 0; d < 3; d++) g->shape[d] = cJSON_GetArrayItem(shape, d)->valueint;
        g->n_output = mt_api_int_array(cJSON_GetObjectItem(j, "output_ids"), g->output, 64);
        if (strcmp(cJSON_GetObjectItem(meta, "routed_experts_dtype")->valuestring, "int32"))
            snprintf(g->error, sizeof g->error, "dtype is not int32");
        if (cJSON_GetObjectItem(meta, "prompt_tokens")->valueint != g->n_prompt)
            snprintf(g->error, sizeof g->error, "prompt_tokens differs");
    } else {
        snprintf(g->error, sizeof g->error, "status %ld", g->status);
    }
    cJSON_Delete(j);
    mt_http_client_free(c);
    free(ids);
    free(body);
    return NULL;
}

/* `moetrace run` on the same prompt: routing and tokens. */
static void run_reference(const gen_case *g, mt_npy *routing, mt_npy *tokens) {
    char *ids = ids_json(g->prompt, g->n_prompt), cmd[8192];
    ids[strlen(ids) - 1] = '\0';
    snprintf(cmd, sizeof cmd,
             "%s run --model %s --input-ids %s --max-new-tokens %d --ignore-eos --threads 1 --routing-out %s/r.npy "
             "--tokens-out %s/t.npy > /dev/null 2>&1",
             g_bin, MODEL, ids + 1, g->max_new, g_dir, g_dir);
    free(ids);
    assert_int_equal(system(cmd), 0);
    char path[512];
    mt_err err;
    snprintf(path, sizeof path, "%s/r.npy", g_dir);
    if (mt_npy_read(path, routing, &err)) fail_msg("%s", err.msg);
    snprintf(path, sizeof path, "%s/t.npy", g_dir);
    if (mt_npy_read(path, tokens, &err)) fail_msg("%s", err.msg);
}

static void test_routing_matches_run_and_recorder(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    mt_http_response r;
    assert_int_equal(mt_http_call(c, "POST", "/start_expert_distribution_record", "", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "Start recording the expert distribution.\n");
    mt_http_response_free(&r);

    static gen_case cases[N_CONCURRENT];
    pthread_t threads[N_CONCURRENT];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_CONCURRENT);
    unsigned seed = 2024;
    for (int i = 0; i < N_CONCURRENT; i++) {
        gen_case *g = &cases[i];
        memset(g, 0, sizeof *g);
        g->n_prompt = 1 + (int)(lcg(&seed) % (i < 8 ? 8 : MAX_PROMPT)); /* short and long, chunked prefill */
        g->max_new = 1 + (int)(lcg(&seed) % 24);
        for (int t = 0; t < g->n_prompt; t++) g->prompt[t] = 3 + (int32_t)(lcg(&seed) % 500);
        g->start = &start;
        pthread_create(&threads[i], NULL, run_case, g);
    }
    for (int i = 0; i < N_CONCURRENT; i++) pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);

    /* The recorder's window is exactly these requests: its counts are the sum of their routing. */
    long status;
    cJSON *dump = mt_api_json(c, "/dump_expert_distribution_record?inline=1", "", &status);
    assert_int_equal(status, 200);
    assert_non_null(dump);
    int64_t summed[LAYERS][EXPERTS] = {{0}}, rows = 0;
    for (int i = 0; i < N_CONCURRENT; i++) {
        gen_case *g = &cases[i];
        if (g->error[0]) fail_msg("request %d: %s", i, g->error);
        assert_int_equal(g->n_output, g->max_new);
        assert_int_equal(g->shape[0], g->n_prompt + g->max_new - 1);
        assert_int_equal(g->shape[1], LAYERS);
        assert_int_equal(g->shape[2], TOP_K);
        assert_int_equal(g->routing_count, (size_t)g->shape[0] * LAYERS * TOP_K);
        rows += g->shape[0];
        for (int t = 0; t < g->shape[0]; t++)
            for (int l = 0; l < LAYERS; l++)
                for (int k = 0; k < TOP_K; k++) {
                    int32_t e = g->routing[((size_t)t * LAYERS + l) * TOP_K + k];
                    if (l == DENSE_LAYER) assert_int_equal(e, -1);
                    else summed[l][e]++;
                }
    }
    assert_int_equal((int64_t)cJSON_GetObjectItem(dump, "num_tokens")->valuedouble, rows);
    const cJSON *lc = cJSON_GetObjectItem(dump, "logical_count");
    for (int l = 0; l < LAYERS; l++)
        for (int e = 0; e < EXPERTS; e++)
            assert_int_equal((int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(lc, l), e)->valuedouble, summed[l][e]);
    cJSON_Delete(dump);

    /* Every request's routing and tokens equal `moetrace run` on its own. */
    for (int i = 0; i < N_CONCURRENT; i++) {
        gen_case *g = &cases[i];
        mt_npy ref, tok;
        run_reference(g, &ref, &tok);
        assert_int_equal(ref.shape[0], g->shape[0]);
        if (memcmp(ref.data, g->routing, g->routing_count * sizeof(int32_t)))
            fail_msg("request %d (%d prompt tokens): routing differs from moetrace run", i, g->n_prompt);
        assert_int_equal(tok.shape[0], g->n_output);
        assert_memory_equal(tok.data, g->output, (size_t)g->n_output * sizeof(int32_t));
        mt_npy_free(&ref);
        mt_npy_free(&tok);
        free(g->routing);
    }
    mt_http_client_free(c);
}

/* ---- server-sent events, prefix cache -------------------------------------------------------- */

typedef struct sse_log {
    int events, done_seen, after_done, bad;
    int last_len;
    cJSON *last;
    char why[128];
} sse_log;

static int on_sse(const char *data, size_t len, void *ctx) {
    (void)len;
    sse_log *s = ctx;
    if (!strcmp(data, "[DONE]")) {
        s->done_seen++;
        return 0;
    }
    if (s->done_seen) s->after_done++;
    cJSON *ev = cJSON_Parse(data);
    const cJSON *meta = cJSON_GetObjectItem(ev, "meta_info");
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(ev, "output_ids"));
    if (!ev || !meta || n < s->last_len) snprintf(s->why, sizeof s->why, "event %d: not cumulative", s->events);
    if (s->last) { /* earlier events: unfinished, no routing, a prefix of this one */
        const cJSON *pm = cJSON_GetObjectItem(s->last, "meta_info");
        if (!cJSON_IsNull(cJSON_GetObjectItem(pm, "finish_reason")) || cJSON_GetObjectItem(pm, "routed_experts"))
            snprintf(s->why, sizeof s->why, "event %d: finish_reason or routing before the last event", s->events);
        const cJSON *a = cJSON_GetObjectItem(s->last, "output_ids"), *b = cJSON_GetObjectItem(ev, "output_ids");
        for (int i = 0; i < s->last_len; i++)
            if (cJSON_GetArrayItem(a, i)->valueint != cJSON_GetArrayItem(b, i)->valueint)
                snprintf(s->why, sizeof s->why, "event %d: output_ids changed", s->events);
    }
    cJSON_Delete(s->last);
    s->last = ev;
    s->last_len = n;
    s->events++;
    return 0;
}

static char *generate_body(const int32_t *ids, int n, int max_new, const char *extra) {
    char *list = ids_json(ids, n), *body = malloc(strlen(list) + 512);
    sprintf(body, "{\"input_ids\": %s, \"sampling_params\": {\"max_new_tokens\": %d, \"temperature\": 0, "
                  "\"ignore_eos\": true}, \"return_routed_experts\": true%s}", list, max_new, extra);
    free(list);
    return body;
}

static void test_stream_and_prefix_cache(void **state) {
    (void)state;
    if (!g_bin) skip();
    int32_t prompt[40];
    unsigned seed = 99;
    for (int i = 0; i < 40; i++) prompt[i] = 5 + (int32_t)(lcg(&seed) % 400);
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    char *body = generate_body(prompt, 40, 48, ", \"stream\": true");
    sse_log s = {0};
    mt_http_response r;
    assert_int_equal(mt_http_stream(c, "/generate", body, on_sse, &s, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "text/event-stream");
    mt_http_response_free(&r);
    free(body);
    if (s.why[0]) fail_msg("%s", s.why);
    assert_true(s.events >= 1);
    assert_int_equal(s.done_seen, 1);
    assert_int_equal(s.after_done, 0);
    const cJSON *meta = cJSON_GetObjectItem(s.last, "meta_info");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(meta, "finish_reason"), "type")->valuestring, "length");
    assert_int_equal(s.last_len, 48);

    /* The same prompt again, not streamed: two full blocks come from the prefix cache, with the
     * routing computed when they were first forwarded. */
    body = generate_body(prompt, 40, 48, "");
    long status;
    cJSON *again = mt_api_json(c, "/generate", body, &status);
    free(body);
    assert_int_equal(status, 200);
    const cJSON *meta2 = cJSON_GetObjectItem(again, "meta_info");
    assert_int_equal(cJSON_GetObjectItem(meta2, "cached_tokens")->valueint, 32);
    assert_string_equal(cJSON_GetObjectItem(meta2, "routed_experts")->valuestring,
                        cJSON_GetObjectItem(meta, "routed_experts")->valuestring);
    char *a = cJSON_PrintUnformatted(cJSON_GetObjectItem(again, "output_ids"));
    char *b = cJSON_PrintUnformatted(cJSON_GetObjectItem(s.last, "output_ids"));
    assert_string_equal(a, b);
    free(a);
    free(b);
    cJSON_Delete(again);
    cJSON_Delete(s.last);
    mt_http_client_free(c);
}

/* ---- log-probabilities -------------------------------------------------------------------- */

/* return_logprob: meta_info.output_token_logprobs holds [logprob, id, null] for every output token,
 * each equal to the in-process mt_generate's (same model, same sampling and seed: the same float),
 * greedy and sampled, whole and streamed (cumulative, as output_ids). */
static void check_logprobs(const cJSON *root, const int32_t *want_ids, const float *want_lp, int n) {
    const cJSON *ids = cJSON_GetObjectItem(root, "output_ids");
    const cJSON *lps = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "meta_info"), "output_token_logprobs");
    assert_int_equal(cJSON_GetArraySize(ids), n);
    assert_int_equal(cJSON_GetArraySize(lps), n);
    for (int i = 0; i < n; i++) {
        const cJSON *t = cJSON_GetArrayItem(lps, i);
        assert_int_equal(cJSON_GetArraySize(t), 3);
        assert_int_equal(cJSON_GetArrayItem(ids, i)->valueint, want_ids[i]);
        assert_int_equal(cJSON_GetArrayItem(t, 1)->valueint, want_ids[i]);
        assert_true(cJSON_IsNull(cJSON_GetArrayItem(t, 2)));
        float got = (float)cJSON_GetArrayItem(t, 0)->valuedouble;
        if (got != want_lp[i] || !(got <= 0.0f))
            fail_msg("token %d: log-probability %.9g, in-process %.9g", i, got, want_lp[i]);
    }
}

static void test_logprobs(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, MODEL, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    int32_t prompt[9] = {21, 4, 77, 300, 12, 9, 9, 150, 3};
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    const char *modes[2] = {"\"temperature\": 0", "\"temperature\": 0.8, \"seed\": 5"};
    for (int mode = 0; mode < 2; mode++) {
        enum { N = 10 };
        int32_t want[N];
        float want_lp[N];
        int n_want;
        mt_generate_opts go = {.max_new_tokens = N, .ignore_eos = true, .out_logprobs = want_lp,
                               .sampling = {.temperature = mode ? 0.8f : 0.0f, .top_p = 1.0f, .seed = 5}};
        if (mt_generate(&m, prompt, 9, &go, want, &n_want, &err)) fail_msg("%s", err.msg);
        assert_int_equal(n_want, N);
        char *list = ids_json(prompt, 9), body[1024];
        for (int stream = 0; stream < 2; stream++) {
            snprintf(body, sizeof body,
                     "{\"input_ids\": %s, \"sampling_params\": {\"max_new_tokens\": %d, \"ignore_eos\": true, %s}, "
                     "\"return_logprob\": true, \"logprob_start_len\": -1, \"top_logprobs_num\": 0%s}",
                     list, N, modes[mode], stream ? ", \"stream\": true" : "");
            if (!stream) {
                long status;
                cJSON *j = mt_api_json(c, "/generate", body, &status);
                assert_int_equal(status, 200);
                check_logprobs(j, want, want_lp, N);
                cJSON_Delete(j);
                continue;
            }
            sse_log s = {0};
            mt_http_response r;
            assert_int_equal(mt_http_stream(c, "/generate", body, on_sse, &s, &r), 0);
            assert_int_equal(r.status, 200);
            mt_http_response_free(&r);
            if (s.why[0]) fail_msg("%s", s.why);
            check_logprobs(s.last, want, want_lp, N);
            cJSON_Delete(s.last);
        }
        free(list);
    }
    /* without return_logprob: no such field */
    char *body = generate_body(prompt, 9, 3, "");
    long status;
    cJSON *j = mt_api_json(c, "/generate", body, &status);
    assert_int_equal(status, 200);
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "meta_info"), "output_token_logprobs"));
    cJSON_Delete(j);
    free(body);
    mt_http_client_free(c);
    mt_model_free(&m);
}

/* ---- encodings ----------------------------------------------------------------------------- */

static int32_t *routing_of(mt_http_client *c, int max_new, const char *extra, int shape[3], size_t *count) {
    int32_t prompt[12] = {7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18};
    char *body = generate_body(prompt, 12, max_new, extra);
    long status;
    cJSON *j = mt_api_json(c, "/generate", body, &status);
    free(body);
    assert_int_equal(status, 200);
    const cJSON *meta = cJSON_GetObjectItem(j, "meta_info");
    for (int d = 0; d < 3; d++) shape[d] = cJSON_GetArrayItem(cJSON_GetObjectItem(meta, "routed_experts_shape"), d)->valueint;
    int32_t *ids = mt_api_routing_ids(cJSON_GetObjectItem(meta, "routed_experts")->valuestring,
                                      cJSON_GetObjectItem(meta, "routed_experts_dtype")->valuestring, count);
    cJSON_Delete(j);
    return ids;
}

static void test_dtypes_and_start_len(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    int s32[3], s16[3], s8[3], sk[3], s0[3], s0k[3];
    size_t n32, n16, n8, nk, n0, n0k;
    int32_t *r32 = routing_of(c, 6, "", s32, &n32);
    int32_t *r16 = routing_of(c, 6, ", \"routed_experts_dtype\": \"int16\"", s16, &n16);
    int32_t *r8 = routing_of(c, 6, ", \"routed_experts_dtype\": \"uint8\"", s8, &n8);
    int32_t *rk = routing_of(c, 6, ", \"routed_experts_start_len\": 5", sk, &nk);
    /* max_new_tokens 0: the P prompt rows (every forwarded token), not P + G - 1 = P - 1 */
    int32_t *r0 = routing_of(c, 0, ", \"stream\": false", s0, &n0);
    int32_t *r0k = routing_of(c, 0, ", \"routed_experts_start_len\": 12", s0k, &n0k);
    assert_int_equal(s32[0], 12 + 6 - 1);
    assert_int_equal(n32, (size_t)17 * LAYERS * TOP_K);
    assert_memory_equal(s16, s32, sizeof s32);
    assert_memory_equal(s8, s32, sizeof s32);
    assert_int_equal(n16, n32);
    assert_int_equal(n8, n32);
    assert_memory_equal(r16, r32, n32 * sizeof *r32);
    assert_memory_equal(r8, r32, n32 * sizeof *r32); /* uint8 255 read back as -1 */
    assert_int_equal(r8[DENSE_LAYER * TOP_K], -1);
    assert_int_equal(sk[0], 17 - 5);
    assert_int_equal(nk, n32 - (size_t)5 * LAYERS * TOP_K);
    assert_memory_equal(rk, r32 + (size_t)5 * LAYERS * TOP_K, nk * sizeof *rk);
    assert_int_equal(s0[0], 12);
    assert_int_equal(n0, (size_t)12 * LAYERS * TOP_K);
    assert_memory_equal(r0, r32, n0 * sizeof *r0);
    assert_int_equal(s0k[0], 0);
    assert_int_equal(n0k, 0);
    free(r0);
    free(r0k);
    free(r32);
    free(r16);
    free(r8);
    free(rk);
    mt_http_client_free(c);
}

/* ---- a placement ------------------------------------------------------------------------------ */

/* With --ep-size 2 (the trivial placement over 2 GPUs) the routing is unchanged (logical ids), and
 * /metrics reports the per-GPU balancedness the recorder's dump computes from its physical counts. */
static void test_placement_metrics(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_test_server srv;
    char args[512], log[512];
    snprintf(args, sizeof args, "--model %s --threads 1 --ep-size 2 --enable-return-routed-experts "
             "--enable-expert-distribution-metrics --expert-dump-dir %s", MODEL, g_dir);
    snprintf(log, sizeof log, "%s/placement.log", g_dir);
    assert_int_equal(mt_test_server_start(&srv, g_bin, args, log, 120), 0);
    mt_http_client *c = mt_http_client_new(srv.url, NULL), *plain = mt_http_client_new(g_srv.url, NULL);
    int32_t prompt[20];
    for (int i = 0; i < 20; i++) prompt[i] = 11 + 7 * i;
    char *body = generate_body(prompt, 20, 5, "");
    long status, status_plain;
    cJSON *a = mt_api_json(c, "/generate", body, &status), *b = mt_api_json(plain, "/generate", body, &status_plain);
    free(body);
    assert_int_equal(status, 200);
    assert_int_equal(status_plain, 200);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(a, "meta_info"), "routed_experts")->valuestring,
                        cJSON_GetObjectItem(cJSON_GetObjectItem(b, "meta_info"), "routed_experts")->valuestring);
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON *info = mt_api_json(c, "/get_model_info", NULL, &status);
    assert_string_equal(cJSON_GetObjectItem(info, "placement")->valuestring, "trivial");
    cJSON_Delete(info);
    /* SGLang's /get_server_info: the settings and one rank's internal state */
    info = mt_api_json(c, "/get_server_info", NULL, &status);
    assert_int_equal(status, 200);
    assert_int_equal(cJSON_GetObjectItem(info, "ep_size")->valueint, 2);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(info, "enable_eplb")));
    assert_true(cJSON_IsString(cJSON_GetObjectItem(info, "model_path")));
    assert_true(cJSON_GetObjectItem(info, "port")->valueint > 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(info, "reasoning_parser"))); /* no --reasoning-parser */
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(info, "tool_call_parser")));
    const cJSON *rank = cJSON_GetArrayItem(cJSON_GetObjectItem(info, "internal_states"), 0);
    assert_true(cJSON_GetObjectItem(rank, "max_total_num_tokens")->valuedouble > 0);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(rank, "generation_paused")));
    cJSON_Delete(info);

    mt_http_response r;
    assert_int_equal(mt_http_call(c, "GET", "/metrics", NULL, &r), 0);
    assert_true(mt_prom_value(r.body, "moetrace_expert_balancedness_ep_size") == 2);
    cJSON *dump = mt_api_json(c, "/dump_expert_distribution_record?inline=1", "", &status);
    assert_int_equal(status, 200);
    assert_non_null(cJSON_GetObjectItem(dump, "physical_count"));
    const cJSON *per_layer = cJSON_GetObjectItem(cJSON_GetObjectItem(dump, "balancedness"), "per_layer");
    int row = 0;
    for (int l = 0; l < LAYERS; l++) {
        if (l == DENSE_LAYER) continue;
        char name[96];
        snprintf(name, sizeof name, "moetrace_expert_balancedness{layer=\"%d\"} ", l);
        const char *at = strstr(r.body, name);
        assert_non_null(at);
        double want = cJSON_GetArrayItem(per_layer, row++)->valuedouble, got = strtod(at + strlen(name), NULL);
        if (got < want - 1e-6 || got > want + 1e-6) fail_msg("layer %d: /metrics %g, dump %g", l, got, want);
    }
    cJSON_Delete(dump);
    mt_http_response_free(&r);
    mt_http_client_free(c);
    mt_http_client_free(plain);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);
}

/* ---- SIGTERM -------------------------------------------------------------------------------- */

static int count_dumps(void) {
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "expert_distribution_", 20) && strstr(e->d_name, ".json")) n++;
    if (d) closedir(d);
    return n;
}

typedef struct drain_probe {
    sse_log log;
    bool signalled;
    long status_during_drain;
} drain_probe;

static int on_drain_event(const char *data, size_t len, void *ctx) {
    drain_probe *p = ctx;
    int rc = on_sse(data, len, &p->log);
    if (!p->signalled) {
        p->signalled = true;
        kill(g_srv.pid, SIGTERM);
        /* A new request while draining: refused (503), or the server is already gone. */
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
        mt_http_response r;
        mt_http_call(c, "POST", "/generate", "{\"input_ids\": [1, 2, 3]}", &r);
        p->status_during_drain = r.status;
        mt_http_response_free(&r);
        mt_http_client_free(c);
    }
    return rc;
}

static void test_sigterm_drains(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    mt_http_response r;
    assert_int_equal(mt_http_call(c, "GET", "/start_expert_distribution_record", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    mt_http_response_free(&r);
    int before = count_dumps();
    int32_t prompt[8] = {3, 4, 5, 6, 7, 8, 9, 10};
    char *body = generate_body(prompt, 8, 400, ", \"stream\": true");
    drain_probe p = {0};
    assert_int_equal(mt_http_stream(c, "/generate", body, on_drain_event, &p, &r), 0);
    free(body);
    mt_http_response_free(&r);
    assert_true(p.signalled);
    if (p.log.why[0]) fail_msg("%s", p.log.why);
    assert_int_equal(p.log.done_seen, 1);
    assert_int_equal(p.log.last_len, 400); /* the request in flight was allowed to finish */
    assert_true(p.status_during_drain == 503 || p.status_during_drain == 0);
    cJSON_Delete(p.log.last);
    mt_http_client_free(c);
    assert_int_equal(mt_test_server_wait(&g_srv, 60), 0);
    assert_int_equal(count_dumps(), before + 1); /* the active recording was dumped */
    char *log = mt_test_server_log(&g_srv);
    assert_non_null(strstr(log, "draining"));
    free(log);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routing_matches_run_and_recorder),
        cmocka_unit_test(test_stream_and_prefix_cache),
        cmocka_unit_test(test_dtypes_and_start_len),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_placement_metrics),
        cmocka_unit_test(test_sigterm_drains),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
