/* Interruptible generation (SGLang's /pause_generation and /continue_generation, what RL loops call
 * around a weight update), end to end over HTTP with the qwen3_moe test checkpoint, two requests
 * running at once and a third queued:
 *  - "in_place" and "retract": no token comes while paused, the gauge says paused, retracted requests
 *    hold no running slot; a request sent meanwhile waits; /health answers 200, /health_generate 503;
 *    after /continue_generation every answer's tokens and routed_experts equal those of the same
 *    request run alone without a pause (one of them sampled with a seed);
 *  - "retract" then /abort_request all: each output that had a token answers with its P + G - 1
 *    rows of routing (kept when its blocks went back), the start of its routing without a pause;
 *  - "abort" (the default; AReaL posts no body): the running and queued requests end as aborted before
 *    the pause answers; one sent meanwhile waits and runs after the continue;
 *  - pause, /update_weights_from_disk (answers at once, counting the paused and waiting requests),
 *    continue: with the same weights the same outputs; requests accepted afterwards carry the new
 *    weight version;
 *  - a second pause, a continue without a pause: 200; bad bodies: 400; GET: 405;
 *  - a stream paused for 16 s gets SSE comments (": keep-alive") and goes on after the continue;
 *  - SIGTERM while paused: the server exits at once rather than after --drain-timeout; the paused
 *    stream ends as aborted, the waiting request is refused (503). */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "support/api_util.h"
#include "support/bg_request.h"
#include "support/http_client.h"
#include "support/server_proc.h"
#include "server_setup.h"
#include "util/base64.h"

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"
#define PROMPT_LEN 30
#define NEW 400     /* long enough to be caught running (the context is 512) */
#define N_REQ 4     /* 0: streamed, 1 and 2: running and queued before the pause, 3: sent while paused */

static mt_test_server g_srv;
static mt_http_client *g_c;
static char g_model[512];
static char g_args[1024];

static int setup(void **state) {
    (void)state;
    if (server_setup("pause_")) return -1;
    if (!g_bin) return 0;
    snprintf(g_model, sizeof g_model, "%s/a", g_dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/config.json %s/generation_config.json %s/model.safetensors %s/",
             g_model, FIXTURE, FIXTURE, FIXTURE, g_model);
    if (system(cmd)) return -1;
    snprintf(g_args, sizeof g_args,
             "--model %s --threads 2 --enable-return-routed-experts --max-running-requests 2 --max-batch-tokens 64",
             g_model);
    if (mt_test_server_start(&g_srv, g_bin, g_args, path_of("server.log"), 120)) return -1;
    g_c = mt_http_client_new(g_srv.url, NULL);
    return 0;
}

static int teardown(void **state) { return server_stop_and_teardown(state, &g_srv, g_c); }

static cJSON *call(const char *path, const char *body, long want) { return server_call(g_c, path, body, want); }

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void sleep_ms(int ms) {
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Request k's body; request 1 samples with a seed, the others are greedy. */
static void request_body(char *out, size_t size, int k, bool stream) {
    char ids[512];
    size_t at = 0;
    for (int i = 0; i < PROMPT_LEN; i++) at += (size_t)snprintf(ids + at, sizeof ids - at, "%s%d", i ? "," : "", 3 + (k * 53 + i * 11) % 400);
    snprintf(out, size,
             "{\"input_ids\": [%s], \"stream\": %s, \"return_routed_experts\": true, \"sampling_params\": "
             "{\"max_new_tokens\": %d, \"ignore_eos\": true, \"temperature\": %s}}",
             ids, stream ? "true" : "false", NEW, k == 1 ? "0.8, \"seed\": 7" : "0");
}

/* ---- requests in threads of their own (support/bg_request.h) ---------------------------------- */

typedef mt_bg_request bg_request;

static void bg_start(bg_request *b, int k, bool stream) {
    char body[2048];
    request_body(body, sizeof body, k, stream);
    mt_bg_start(b, g_srv.url, body, stream);
}

static void bg_join(bg_request *b) { mt_bg_join(b); }
static void bg_free(bg_request *b) { mt_bg_free(b); }

/* ---- reading the server ------------------------------------------------------------------------ */

static double metric(const char *name) {
    mt_http_response r;
    assert_int_equal(mt_http_call(g_c, "GET", "/metrics", NULL, &r), 0);
    double v = mt_prom_value(r.body, name);
    mt_http_response_free(&r);
    return v;
}

/* Waits up to 10 s until metric name reaches at least (or, with exact, exactly) want. */
static void wait_metric(const char *name, double want, bool exact) {
    double v = 0, t0 = now_s();
    while (now_s() - t0 < 10) {
        v = metric(name);
        if (exact ? v == want : v >= want) return;
        sleep_ms(2);
    }
    fail_msg("%s stayed %g (want %s%g)", name, v, exact ? "" : ">= ", want);
}

static const cJSON *meta(const cJSON *a) { return cJSON_GetObjectItem(a, "meta_info"); }

static const char *finish_type(const cJSON *a) {
    const cJSON *f = cJSON_GetObjectItem(meta(a), "finish_reason");
    return cJSON_GetObjectItem(f, "type")->valuestring;
}

static const char *meta_str(const cJSON *a, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(meta(a), k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* /flush_cache answers text: a plain call. */
static void flush_cache(void) {
    mt_http_response r;
    assert_int_equal(mt_http_call(g_c, "POST", "/flush_cache", "", &r), 0);
    assert_int_equal(r.status, 200);
    mt_http_response_free(&r);
}

/* Each request alone, without a pause: the answers to compare with. */
static cJSON *g_want[N_REQ];

static void reference_answers(void) {
    for (int k = 0; k < N_REQ; k++) {
        if (g_want[k]) continue;
        char body[2048];
        request_body(body, sizeof body, k, false);
        flush_cache();
        g_want[k] = call("/generate", body, 200);
        assert_string_equal(finish_type(g_want[k]), "length");
    }
}

/* Answer a equals request k's answer without a pause: tokens and routing. */
static void check_unchanged(const cJSON *a, int k, const char *mode) {
    assert_non_null(a);
    if (strcmp(finish_type(a), "length")) fail_msg("%s: request %d finished as %s", mode, k, finish_type(a));
    if (!mt_api_same_json(cJSON_GetObjectItem(a, "output_ids"), cJSON_GetObjectItem(g_want[k], "output_ids")))
        fail_msg("%s: request %d's tokens differ from those without a pause", mode, k);
    const char *got = meta_str(a, "routed_experts"), *want = meta_str(g_want[k], "routed_experts");
    if (!got || strcmp(got, want)) fail_msg("%s: request %d's routed_experts differ from those without a pause", mode, k);
}

/* Starts requests 0 (streamed) and 1 running, then 2 queued behind them (two run at once). */
static void start_three(bg_request *r) {
    bg_start(&r[0], 0, true);
    bg_start(&r[1], 1, false);
    wait_metric("moetrace_num_requests_running", 2, true);
    bg_start(&r[2], 2, false);
    wait_metric("moetrace_num_requests_waiting", 1, true);
    assert_true(atomic_load(&r[0].events) < NEW);
}

static void pause_with(const char *body) {
    cJSON *a = call("/pause_generation", body, 200);
    assert_string_equal(cJSON_GetObjectItem(a, "status")->valuestring, "ok");
    assert_string_equal(cJSON_GetObjectItem(a, "message")->valuestring, "Generation paused successfully.");
    cJSON_Delete(a);
}

static void continue_generation(void) {
    cJSON *a = call("/continue_generation", "{}", 200);
    assert_string_equal(cJSON_GetObjectItem(a, "status")->valuestring, "ok");
    assert_string_equal(cJSON_GetObjectItem(a, "message")->valuestring, "Generation continued successfully.");
    cJSON_Delete(a);
}

/* While paused: nothing moves for 300 ms, request 3 sent meanwhile waits, /health says healthy and
 * /health_generate that it cannot generate. in_engine: the requests paused in the engine (0 after an
 * abort), running of them. */
static void check_paused(bg_request *r, int in_engine, int running) {
    wait_metric("moetrace_generation_paused", 1, true);
    wait_metric("moetrace_num_requests_running", running, true);
    bg_start(&r[3], 3, false);
    sleep_ms(50);
    int events = atomic_load(&r[0].events);
    sleep_ms(300);
    assert_int_equal(atomic_load(&r[0].events), events);
    for (int k = in_engine ? 0 : 3; k < N_REQ; k++)
        if (atomic_load(&r[k].done)) fail_msg("request %d answered while paused", k);
    assert_int_equal(metric("moetrace_num_requests_waiting"), in_engine + 1 - running);
    mt_http_response h;
    assert_int_equal(mt_http_call(g_c, "GET", "/health", NULL, &h), 0);
    assert_int_equal(h.status, 200);
    mt_http_response_free(&h);
    assert_int_equal(mt_http_call(g_c, "GET", "/health_generate", NULL, &h), 0);
    assert_int_equal(h.status, 503);
    assert_non_null(strstr(h.body, "paused"));
    mt_http_response_free(&h);
}

/* ---- the tests ---------------------------------------------------------------------------------- */

static void test_pause_in_place_and_retract(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    reference_answers();
    static const char *const MODES[2] = {"in_place", "retract"};
    for (int m = 0; m < 2; m++) {
        flush_cache();
        bg_request r[N_REQ];
        start_three(r);
        char body[64];
        snprintf(body, sizeof body, "{\"mode\": \"%s\"}", MODES[m]);
        pause_with(body);
        check_paused(r, 3, m == 0 ? 2 : 0); /* retracted: their blocks given back, first in the queue */
        continue_generation();
        wait_metric("moetrace_generation_paused", 0, true);
        for (int k = 0; k < N_REQ; k++) {
            bg_join(&r[k]);
            assert_int_equal(r[k].status, 200);
            check_unchanged(r[k].answer, k, MODES[m]);
            bg_free(&r[k]);
        }
    }
}

/* The routing rows (int32) of answer a, decoded; *rows gets their count (-1 without routed_experts). */
static int32_t *routing_of(const cJSON *a, int *rows) {
    const char *b64 = meta_str(a, "routed_experts");
    *rows = -1;
    if (!b64) return NULL;
    *rows = cJSON_GetArrayItem(cJSON_GetObjectItem(meta(a), "routed_experts_shape"), 0)->valueint;
    uint8_t *raw = NULL;
    size_t len = 0;
    assert_int_equal(mt_base64_decode(b64, strlen(b64), &raw, &len), 0);
    return (int32_t *)raw;
}

/* Retracted, then aborted before generation continues: each answer that has tokens still has the
 * routing of its P + G - 1 rows (kept when its blocks went back), equal to the start of the same
 * request's routing without a pause. */
static void test_retract_then_abort(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    reference_answers();
    flush_cache();
    bg_request r[N_REQ];
    start_three(r);
    while (atomic_load(&r[0].events) < 3) sleep_ms(2);
    pause_with("{\"mode\": \"retract\"}");
    check_paused(r, 3, 0);
    cJSON_Delete(call("/abort_request", "{\"abort_all\": true}", 200));
    int with_tokens = 0;
    for (int k = 0; k < N_REQ; k++) {
        bg_join(&r[k]);
        assert_int_equal(r[k].status, 200);
        assert_string_equal(finish_type(r[k].answer), "abort");
        int g = (int)cJSON_GetObjectItem(meta(r[k].answer), "completion_tokens")->valuedouble, rows, want_rows;
        int32_t *got = routing_of(r[k].answer, &rows), *want = routing_of(g_want[k], &want_rows);
        if (g == 0) {
            assert_int_equal(rows, -1); /* aborted before its first token */
        } else {
            with_tokens++;
            if (rows != PROMPT_LEN + g - 1) fail_msg("request %d: %d routing rows for %d tokens", k, rows, g);
            const cJSON *shape = cJSON_GetObjectItem(meta(g_want[k]), "routed_experts_shape");
            size_t row = (size_t)cJSON_GetArrayItem(shape, 1)->valueint * (size_t)cJSON_GetArrayItem(shape, 2)->valueint;
            if (memcmp(got, want, (size_t)rows * row * sizeof(int32_t)))
                fail_msg("request %d: routing differs from the same request's without a pause", k);
        }
        free(got);
        free(want);
        bg_free(&r[k]);
    }
    assert_int_equal(with_tokens, 2); /* the two that ran before the pause */
    continue_generation();
}

static void test_pause_abort(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    reference_answers();
    for (int round = 0; round < 2; round++) {
        bg_request r[N_REQ];
        start_three(r);
        if (round == 0) {
            pause_with("{\"mode\": \"abort\"}");
        } else { /* AReaL's call: no body at all */
            mt_http_response p;
            assert_int_equal(mt_http_call(g_c, "POST", "/pause_generation", "", &p), 0);
            assert_int_equal(p.status, 200);
            mt_http_response_free(&p);
        }
        /* the requests in the engine ended before the pause answered: their answers come now */
        for (int k = 0; k < 3; k++) {
            bg_join(&r[k]);
            assert_int_equal(r[k].status, 200);
            assert_string_equal(finish_type(r[k].answer), "abort");
            bg_free(&r[k]);
        }
        check_paused(r, 0, 0);
        continue_generation();
        bg_join(&r[3]);
        check_unchanged(r[3].answer, 3, "abort");
        bg_free(&r[3]);
    }
}

static void test_pause_update_continue(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    reference_answers();
    static const char *const MODES[2] = {"retract", "in_place"};
    for (int m = 0; m < 2; m++) {
        bg_request r[N_REQ];
        start_three(r);
        char body[1024];
        snprintf(body, sizeof body, "{\"mode\": \"%s\"}", MODES[m]);
        pause_with(body);
        bg_start(&r[3], 3, false);
        wait_metric("moetrace_num_requests_waiting", m == 0 ? 4 : 2, true);
        /* the update does not wait for the paused requests: they stay paused around it */
        snprintf(body, sizeof body, "{\"model_path\": \"%s\", \"weight_version\": \"step-%d\"}", g_model, m + 1);
        double t0 = now_s();
        cJSON *u = call("/update_weights_from_disk", body, 200);
        assert_true(now_s() - t0 < 10);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItem(u, "success")));
        assert_int_equal(cJSON_GetObjectItem(u, "num_paused_requests")->valueint, 4);
        cJSON_Delete(u);
        assert_int_equal(metric("moetrace_generation_paused"), 1);
        for (int k = 0; k < N_REQ; k++) assert_false(atomic_load(&r[k].done));
        continue_generation();
        char version[32];
        snprintf(version, sizeof version, "step-%d", m + 1);
        for (int k = 0; k < N_REQ; k++) {
            bg_join(&r[k]);
            assert_int_equal(r[k].status, 200);
            check_unchanged(r[k].answer, k, MODES[m]); /* the same weights: the same outputs */
            if (k == 3) assert_string_equal(meta_str(r[k].answer, "weight_version"), version);
            bg_free(&r[k]);
        }
    }
}

static void test_double_pause_and_bad_bodies(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    continue_generation(); /* not paused: nothing to do */
    pause_with("{\"mode\": \"in_place\"}");
    pause_with("{\"mode\": \"retract\"}");
    wait_metric("moetrace_generation_paused", 1, true);
    continue_generation();
    continue_generation();
    wait_metric("moetrace_generation_paused", 0, true);
    cJSON *g = call("/generate", "{\"input_ids\": [5, 6, 7], \"sampling_params\": {\"max_new_tokens\": 2}}", 200);
    cJSON_Delete(g);

    static const char *const BAD_PAUSE[] = {"{\"mode\": \"stop\"}", "{\"mode\": 1}", "{\"mode\": \"\"}", "[]", "x",
                                            "\"abort\"", "{\"mode\": \"abort\"} x"};
    long status;
    for (size_t i = 0; i < sizeof BAD_PAUSE / sizeof *BAD_PAUSE; i++) {
        cJSON *e = mt_api_json(g_c, "/pause_generation", BAD_PAUSE[i], &status);
        if (status != 400) fail_msg("pause %s: status %ld", BAD_PAUSE[i], status);
        const char *msg = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "error"), "message")->valuestring;
        if (i == 0 && !strstr(msg, "'mode' is \"stop\"")) fail_msg("the error does not name the mode: %s", msg);
        cJSON_Delete(e);
    }
    static const char *const BAD_CONTINUE[] = {"{\"torch_empty_cache\": \"yes\"}", "[]", "x"};
    for (size_t i = 0; i < sizeof BAD_CONTINUE / sizeof *BAD_CONTINUE; i++) {
        cJSON *e = mt_api_json(g_c, "/continue_generation", BAD_CONTINUE[i], &status);
        if (status != 400) fail_msg("continue %s: status %ld", BAD_CONTINUE[i], status);
        cJSON_Delete(e);
    }
    cJSON_Delete(call("/continue_generation", "{\"torch_empty_cache\": false}", 200));
    assert_int_equal(metric("moetrace_generation_paused"), 0);
    mt_http_response r;
    assert_int_equal(mt_http_call(g_c, "GET", "/pause_generation", NULL, &r), 0);
    assert_int_equal(r.status, 405);
    mt_http_response_free(&r);
}

/* A request sent while paused waits in the queue; its client leaving meanwhile drops it from the queue
 * at once (it is not run once generation continues, for nobody). */
static void test_held_request_left_by_its_client(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    pause_with("{\"mode\": \"in_place\"}");
    bg_request b;
    char body[2048];
    request_body(body, sizeof body, 2, false);
    mt_bg_start_timeout(&b, g_srv.url, body, false, 600); /* the client gives up while the request waits */
    wait_metric("moetrace_num_requests_waiting", 1, true);
    bg_join(&b);
    assert_int_not_equal(b.status, 200);
    bg_free(&b);
    wait_metric("moetrace_num_requests_waiting", 0, true); /* still paused */
    assert_int_equal(metric("moetrace_generation_paused"), 1);
    continue_generation();
    assert_int_equal(metric("moetrace_num_requests_running"), 0);
}

typedef struct raw_call {
    mt_http_client *c;
    char body[2048];
    mt_http_response r;
} raw_call;

static void *raw_call_main(void *arg) {
    raw_call *x = arg;
    mt_http_call(x->c, "POST", "/generate", x->body, &x->r);
    return NULL;
}

/* A stream held longer than 15 s sends SSE comments, so neither libmicrohttpd's idle timeout (60 s of
 * nothing sent) nor a client's read timeout ends it; the events go on after them. */
static void test_stream_kept_alive_while_paused(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    raw_call x = {.c = mt_http_client_new(g_srv.url, NULL)};
    request_body(x.body, sizeof x.body, 0, true);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, raw_call_main, &x), 0);
    wait_metric("moetrace_num_requests_running", 1, true);
    pause_with("{\"mode\": \"in_place\"}");
    sleep_ms(16000);
    continue_generation();
    pthread_join(t, NULL);
    assert_int_equal(x.r.status, 200);
    const char *comment = strstr(x.r.body, "\n\n: keep-alive\n\n");
    assert_non_null(comment);
    assert_non_null(strstr(comment, "\ndata: {"));
    assert_non_null(strstr(comment, "\"finish_reason\":{\"type\":\"length\""));
    assert_non_null(strstr(x.r.body, "data: [DONE]\n\n"));
    mt_http_response_free(&x.r);
    mt_http_client_free(x.c);
}

/* A server of its own: SIGTERM while paused, with --drain-timeout 60. */
static void test_sigterm_while_paused(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    mt_test_server srv;
    char args[1200];
    snprintf(args, sizeof args, "%s --drain-timeout 60", g_args);
    assert_int_equal(mt_test_server_start(&srv, g_bin, args, path_of("sigterm.log"), 120), 0);
    mt_test_server main_srv = g_srv;
    mt_http_client *main_c = g_c;
    g_srv = srv;
    g_c = mt_http_client_new(srv.url, NULL);
    bg_request r[2];
    bg_start(&r[0], 0, true);
    wait_metric("moetrace_num_requests_running", 1, true);
    pause_with("{\"mode\": \"in_place\"}");
    bg_start(&r[1], 1, false);
    wait_metric("moetrace_num_requests_waiting", 1, true);
    double t0 = now_s();
    int st = mt_test_server_stop(&srv, SIGTERM, 30);
    double took = now_s() - t0;
    assert_int_equal(st, 0);
    if (took > 10) fail_msg("the paused server took %.1f s to exit", took);
    bg_join(&r[0]);
    assert_int_equal(r[0].status, 200);
    assert_non_null(r[0].answer);
    assert_string_equal(finish_type(r[0].answer), "abort");
    bg_join(&r[1]);
    assert_int_equal(r[1].status, 503);
    bg_free(&r[0]);
    bg_free(&r[1]);
    char *log = mt_test_server_log(&srv);
    assert_non_null(log);
    assert_non_null(strstr(log, "generation paused: cancelling"));
    free(log);
    mt_http_client_free(g_c);
    g_srv = main_srv;
    g_c = main_c;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pause_in_place_and_retract),
        cmocka_unit_test(test_retract_then_abort),
        cmocka_unit_test(test_pause_abort),
        cmocka_unit_test(test_pause_update_continue),
        cmocka_unit_test(test_double_pause_and_bad_bodies),
        cmocka_unit_test(test_held_request_left_by_its_client),
        cmocka_unit_test(test_stream_kept_alive_while_paused),
        cmocka_unit_test(test_sigterm_while_paused),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    for (int k = 0; k < N_REQ; k++) cJSON_Delete(g_want[k]);
    return rc;
}
