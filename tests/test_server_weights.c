/* Weight updates in place (what an RL loop does between rollouts), end to end over HTTP with the
 * qwen3_moe test checkpoint (A) and a copy whose routers have their signs flipped (B: every routing
 * differs):
 *  - /update_weights_from_disk to B: the next answer equals `moetrace run --model B` (tokens and
 *    routing), nothing of A's prefix cache is used (cached_tokens 0 for a prompt cached before), and
 *    meta_info, /get_weight_version and /get_model_info carry the new weight_version; back to A: the
 *    first answer again;
 *  - /flush_cache empties the prefix cache;
 *  - bad updates (no path, a missing folder, a checkpoint of another shape, bad fields) are refused
 *    with the reason and the server serves on with the weights it had; /metrics counts the updates
 *    and shows the version serving;
 *  - abort_all_requests cancels a request streaming meanwhile (it ends as aborted) and the update
 *    goes through;
 *  - a request held back while an update waits, aborted by its rid, answers as aborted. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "support/api_util.h"
#include "support/http_client.h"
#include "support/server_proc.h"
#include "server_setup.h"
#include "util/json_util.h"
#include "util/npy.h"

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"
#define PROMPT_LEN 40
#define NEW 4

static mt_test_server g_srv;
static mt_http_client *g_c;
static char g_a[512], g_b[512];

/* B: the fixture with the sign bit of every router weight flipped (bf16 little-endian: the high
 * byte of each value). */
static int make_flipped_copy(const char *dst) {
    char cmd[2048], src_file[600], dst_file[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/config.json %s/generation_config.json %s/", dst, FIXTURE, FIXTURE, dst);
    if (system(cmd)) return -1;
    snprintf(src_file, sizeof src_file, "%s/model.safetensors", FIXTURE);
    snprintf(dst_file, sizeof dst_file, "%s/model.safetensors", dst);
    mt_err err;
    size_t size;
    char *bytes = mt_read_file(src_file, &size, &err);
    if (!bytes) return -1;
    uint64_t header_len;
    memcpy(&header_len, bytes, 8);
    cJSON *header = cJSON_ParseWithLength(bytes + 8, (size_t)header_len);
    int flipped = 0;
    for (const cJSON *t = header ? header->child : NULL; t; t = t->next) {
        if (!strstr(t->string, ".mlp.gate.weight")) continue;
        const cJSON *off = cJSON_GetObjectItem(t, "data_offsets");
        size_t from = 8 + (size_t)header_len + (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
        size_t to = 8 + (size_t)header_len + (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        for (size_t i = from + 1; i < to; i += 2) bytes[i] ^= (char)0x80;
        flipped++;
    }
    cJSON_Delete(header);
    FILE *f = fopen(dst_file, "wb");
    int rc = f && fwrite(bytes, 1, size, f) == size ? 0 : -1;
    if (f) fclose(f);
    free(bytes);
    return rc || flipped == 0 ? -1 : 0;
}

static int setup(void **state) {
    (void)state;
    if (server_setup("weights_")) return -1;
    if (!g_bin) return 0;
    snprintf(g_a, sizeof g_a, "%s/a", g_dir);
    snprintf(g_b, sizeof g_b, "%s/b", g_dir);
    char cmd[2048], args[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/config.json %s/generation_config.json %s/model.safetensors %s/", g_a,
             FIXTURE, FIXTURE, FIXTURE, g_a);
    if (system(cmd) || make_flipped_copy(g_b)) return -1;
    snprintf(args, sizeof args, "--model %s --threads 2 --enable-return-routed-experts", g_a);
    if (mt_test_server_start(&g_srv, g_bin, args, path_of("server.log"), 120)) return -1;
    g_c = mt_http_client_new(g_srv.url, NULL);
    return 0;
}

static int teardown(void **state) { return server_stop_and_teardown(state, &g_srv, g_c); }

static cJSON *call(const char *path, const char *body, long want) { return server_call(g_c, path, body, want); }

static char g_ids[1024];

static const char *prompt_ids(void) {
    if (!g_ids[0]) {
        size_t at = 0;
        for (int i = 0; i < PROMPT_LEN; i++) at += (size_t)snprintf(g_ids + at, sizeof g_ids - at, "%s%d", i ? "," : "", 3 + i * 7 % 400);
    }
    return g_ids;
}

/* The prompt's greedy answer with its routing. */
static cJSON *generate(void) {
    char body[2048];
    snprintf(body, sizeof body,
             "{\"input_ids\": [%s], \"sampling_params\": {\"max_new_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true},"
             " \"return_routed_experts\": true}", prompt_ids(), NEW);
    return call("/generate", body, 200);
}

static const cJSON *meta(const cJSON *a) { return cJSON_GetObjectItem(a, "meta_info"); }
static const char *meta_str(const cJSON *a, const char *k) { return cJSON_GetObjectItem(meta(a), k)->valuestring; }

/* Whether answer a is what `moetrace run --model dir` gives for the prompt. */
static bool equals_run(const cJSON *a, const char *dir) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "%s run --model %s --threads 2 --input-ids %s --max-new-tokens %d --ignore-eos --routing-out %s/r.npy "
             "--tokens-out %s/t.npy > /dev/null", g_bin, dir, prompt_ids(), NEW, g_dir, g_dir);
    assert_int_equal(system(cmd), 0);
    mt_npy r, t;
    mt_err err;
    char path[600];
    snprintf(path, sizeof path, "%s/r.npy", g_dir);
    if (mt_npy_read(path, &r, &err)) fail_msg("%s", err.msg);
    snprintf(path, sizeof path, "%s/t.npy", g_dir);
    if (mt_npy_read(path, &t, &err)) fail_msg("%s", err.msg);
    size_t n;
    int32_t *got = mt_api_routing_ids(meta_str(a, "routed_experts"), meta_str(a, "routed_experts_dtype"), &n);
    int32_t tokens[NEW];
    int nt = mt_api_int_array(cJSON_GetObjectItem(a, "output_ids"), tokens, NEW);
    bool same = got && (int64_t)n == r.count && !memcmp(got, r.data, n * sizeof *got) && nt == t.count &&
                !memcmp(tokens, t.data, (size_t)nt * sizeof *tokens);
    free(got);
    mt_npy_free(&r);
    mt_npy_free(&t);
    return same;
}

static cJSON *update(const char *dir, const char *extra, long want) {
    char body[1024];
    snprintf(body, sizeof body, "{\"model_path\": \"%s\"%s}", dir, extra);
    return call("/update_weights_from_disk", body, want);
}

static void test_update_and_back(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    cJSON *a1 = generate(), *a2 = generate();
    assert_string_equal(meta_str(a1, "weight_version"), "default");
    assert_int_equal(cJSON_GetObjectItem(meta(a2), "cached_tokens")->valueint, 32); /* the prompt is cached */
    assert_true(equals_run(a1, g_a));

    cJSON *u = update(g_b, ", \"weight_version\": \"step-1\"", 200);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(u, "success")));
    assert_int_equal(cJSON_GetObjectItem(u, "num_paused_requests")->valueint, 0);
    cJSON_Delete(u);
    cJSON *v = call("/get_weight_version", NULL, 200);
    assert_string_equal(cJSON_GetObjectItem(v, "weight_version")->valuestring, "step-1");
    cJSON_Delete(v);
    v = call("/get_model_info", NULL, 200);
    assert_string_equal(cJSON_GetObjectItem(v, "weight_version")->valuestring, "step-1");
    cJSON_Delete(v);

    cJSON *b = generate();
    assert_int_equal(cJSON_GetObjectItem(meta(b), "cached_tokens")->valueint, 0); /* A's blocks are gone */
    assert_string_equal(meta_str(b, "weight_version"), "step-1");
    assert_true(equals_run(b, g_b));
    assert_false(equals_run(b, g_a));
    assert_string_not_equal(meta_str(b, "routed_experts"), meta_str(a1, "routed_experts"));

    u = update(g_a, ", \"weight_version\": \"step-2\"", 200);
    cJSON_Delete(u);
    cJSON *a3 = generate();
    assert_int_equal(cJSON_GetObjectItem(meta(a3), "cached_tokens")->valueint, 0);
    assert_string_equal(meta_str(a3, "routed_experts"), meta_str(a1, "routed_experts"));
    assert_string_equal(meta_str(a3, "weight_version"), "step-2");

    /* /flush_cache: the prompt cached again by a3 is forgotten */
    mt_http_response r;
    assert_int_equal(mt_http_call(g_c, "POST", "/flush_cache", "", &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "Cache flushed."));
    mt_http_response_free(&r);
    cJSON *a4 = generate();
    assert_int_equal(cJSON_GetObjectItem(meta(a4), "cached_tokens")->valueint, 0);
    assert_string_equal(meta_str(a4, "routed_experts"), meta_str(a1, "routed_experts"));
    cJSON_Delete(a1);
    cJSON_Delete(a2);
    cJSON_Delete(a3);
    cJSON_Delete(a4);
    cJSON_Delete(b);
}

static void test_bad_updates(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    cJSON *before = generate();
    long status;
    static const char *const BAD_BODIES[] = {
        "{}", "nope", "[1]", "{\"model_path\": 5}", "{\"model_path\": \"\"}",
        "{\"model_path\": \"/x\", \"load_format\": \"dummy\"}", "{\"model_path\": \"/x\", \"abort_all_requests\": \"yes\"}",
        "{\"model_path\": \"/x\", \"weight_version\": 3}",
    };
    for (size_t i = 0; i < sizeof BAD_BODIES / sizeof *BAD_BODIES; i++) {
        cJSON *e = mt_api_json(g_c, "/update_weights_from_disk", BAD_BODIES[i], &status);
        assert_int_equal(status, 400);
        assert_non_null(cJSON_GetObjectItem(e, "error"));
        cJSON_Delete(e);
    }
    char other[600];
    snprintf(other, sizeof other, "%s/tests/fixtures/models/olmoe", MT_SOURCE_DIR);
    const char *dirs[2] = {"/nonexistent/checkpoint", other};
    const char *why[2] = {"/nonexistent/checkpoint", "config differs"};
    for (int i = 0; i < 2; i++) {
        cJSON *u = update(dirs[i], "", 400);
        assert_false(cJSON_IsTrue(cJSON_GetObjectItem(u, "success")));
        const char *message = cJSON_GetObjectItem(u, "message")->valuestring;
        if (!strstr(message, why[i])) fail_msg("'%s' lacks '%s'", message, why[i]);
        cJSON_Delete(u);
    }
    cJSON *after = generate(); /* the same weights serve on */
    assert_string_equal(meta_str(after, "routed_experts"), meta_str(before, "routed_experts"));
    cJSON_Delete(before);
    cJSON_Delete(after);
    mt_http_response r;
    assert_int_equal(mt_http_call(g_c, "GET", "/update_weights_from_disk", NULL, &r), 0);
    assert_int_equal(r.status, 405);
    mt_http_response_free(&r);
    /* /metrics: the two updates of the test before, the two refused here, the version serving */
    assert_int_equal(mt_http_call(g_c, "GET", "/metrics", NULL, &r), 0);
    assert_non_null(strstr(r.body, "moetrace_weight_updates_total{result=\"ok\"} 2\n"));
    assert_non_null(strstr(r.body, "moetrace_weight_updates_total{result=\"failed\"} 2\n"));
    assert_non_null(strstr(r.body, "moetrace_weight_version_info{weight_version=\"step-2\"} 1\n"));
    mt_http_response_free(&r);
}

/* A stream that asks for an update with abort_all_requests at its first event. */
typedef struct abort_probe {
    int events;
    long update_status;
    bool update_ok;
    char finish[32];      /* the finish reason type of the last event that has one */
} abort_probe;

static int on_stream_event(const char *data, size_t len, void *ctx) {
    abort_probe *p = ctx;
    cJSON *e = cJSON_ParseWithLength(data, len);
    const cJSON *type = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "meta_info"), "finish_reason"), "type");
    if (cJSON_IsString(type)) snprintf(p->finish, sizeof p->finish, "%s", type->valuestring);
    cJSON_Delete(e);
    if (p->events++ == 0) {
        mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
        char body[1024];
        snprintf(body, sizeof body, "{\"model_path\": \"%s\", \"abort_all_requests\": true}", g_a);
        cJSON *u = mt_api_json(c, "/update_weights_from_disk", body, &p->update_status);
        p->update_ok = u && cJSON_IsTrue(cJSON_GetObjectItem(u, "success"));
        cJSON_Delete(u);
        mt_http_client_free(c);
    }
    return 0;
}

static void test_abort_all_requests(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    abort_probe p = {0};
    mt_http_response r;
    char body[2048];
    snprintf(body, sizeof body, "{\"input_ids\": [%s], \"stream\": true, \"sampling_params\": {\"max_new_tokens\": 200,"
             " \"ignore_eos\": true}}", prompt_ids());
    assert_int_equal(mt_http_stream(g_c, "/generate", body, on_stream_event, &p, &r), 0);
    mt_http_response_free(&r);
    assert_int_equal(p.update_status, 200);
    assert_true(p.update_ok);
    assert_string_equal(p.finish, "abort"); /* the stream's request was cancelled by the update */
    cJSON *after = generate();
    assert_true(equals_run(after, g_a));
    cJSON_Delete(after);
}

/* A request that arrives while an update waits for running ones is held; aborted by its rid
 * meanwhile, it answers as an aborted request (200, finish_reason abort, no tokens), and the abort
 * does not wait for the update. */
typedef struct held_probe {
    long long_status, update_status, held_status;
    cJSON *held;
} held_probe;

static void *post_long(void *arg) {   /* 32 samples of 400 tokens: keeps the engine busy a while */
    held_probe *p = arg;
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    char body[2048];
    snprintf(body, sizeof body, "{\"input_ids\": [%s], \"sampling_params\": {\"max_new_tokens\": 400, \"n\": 32, "
             "\"ignore_eos\": true}}", prompt_ids());
    cJSON_Delete(mt_api_json(c, "/generate", body, &p->long_status));
    mt_http_client_free(c);
    return NULL;
}

static void *post_update(void *arg) {
    held_probe *p = arg;
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    char body[1024];
    snprintf(body, sizeof body, "{\"model_path\": \"%s\"}", g_a);
    cJSON_Delete(mt_api_json(c, "/update_weights_from_disk", body, &p->update_status));
    mt_http_client_free(c);
    return NULL;
}

static void *post_held(void *arg) {
    held_probe *p = arg;
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    p->held = mt_api_json(c, "/generate", "{\"input_ids\": [5, 6, 7], \"rid\": \"held-b\", "
                                          "\"sampling_params\": {\"max_new_tokens\": 4}}", &p->held_status);
    mt_http_client_free(c);
    return NULL;
}

static void pause_ms(long ms) {
    struct timespec t = {0, ms * 1000 * 1000};
    nanosleep(&t, NULL);
}

static void test_abort_held_request(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    held_probe p = {0};
    pthread_t busy, update, held;
    assert_int_equal(pthread_create(&busy, NULL, post_long, &p), 0);
    pause_ms(30);
    assert_int_equal(pthread_create(&update, NULL, post_update, &p), 0);
    pause_ms(30);
    assert_int_equal(pthread_create(&held, NULL, post_held, &p), 0);
    pause_ms(30);
    long status;
    cJSON *aborted = mt_api_json(g_c, "/abort_request", "{\"rid\": \"held-b\"}", &status);
    pthread_join(held, NULL);
    pthread_join(busy, NULL);
    pthread_join(update, NULL);
    assert_int_equal(status, 200);
    assert_int_equal(cJSON_GetObjectItem(aborted, "aborted")->valueint, 1);
    assert_int_equal(p.long_status, 200);
    assert_int_equal(p.update_status, 200);
    assert_int_equal(p.held_status, 200);
    const cJSON *meta = cJSON_GetObjectItem(p.held, "meta_info");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(meta, "finish_reason"), "type")), "abort");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(meta, "id")), "held-b");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(p.held, "output_ids")), 0);
    cJSON_Delete(p.held);
    cJSON_Delete(aborted);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_update_and_back),
        cmocka_unit_test(test_bad_updates),
        cmocka_unit_test(test_abort_all_requests),
        cmocka_unit_test(test_abort_held_request),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
