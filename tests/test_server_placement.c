/* Switching the expert placement of a running server (POST /update_expert_location and POST
 * /eplb_rebalance), end to end over HTTP with the qwen3_moe test checkpoint (4 layers, MoE layers
 * 0, 2, 3; 8 experts, top-2) served under a placement of 12 slots on 4 virtual GPUs:
 *  - apply a placement between two requests: the window dumped at the switch plus the next window
 *    have the logical counts of the same requests recorded without a switch, the tokens and routing
 *    are those without the switch, the next window's physical_count is that of the new placement
 *    (each expert's replicas there add up to its logical count) and /metrics' balancedness is
 *    measured from it; SGLang's body ({"physical_to_logical_map"} alone) is accepted;
 *  - /eplb_rebalance plans what `moetrace eplb` plans from the dump of the same window (the dump
 *    the switch wrote: same physical_to_logical_map, same predicted balancedness), and the server
 *    runs it; refused (400) while the recorder is stopped or has recorded nothing;
 *  - bad bodies (not JSON, wrong layers, an expert outside the model, other GPUs, other slots, a
 *    stat dump) are 400s naming the problem, and the old placement keeps serving;
 *  - switches while two requests stream: their tokens and routing equal those of each run alone;
 *  - a server started without --ep-size answers both endpoints 400. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "routing/balancedness.h"
#include "server_setup.h"
#include "support/bg_request.h"

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"
#define L_HIDDEN 4
#define E 8
#define R 12
#define M 4
#define N_MOE 3
static const int MOE_LAYERS[N_MOE] = {0, 2, 3};

/* The placement the server starts with (A) and the one the first test switches to (B). */
static const int32_t MAP_A[R] = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3};
static const int32_t MAP_B[R] = {4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7};

static mt_test_server g_srv;
static mt_http_client *g_c;

/* A placement body with every MoE layer's row = map (n slots). format: moetrace's (with num_gpus
 * gpus), else SGLang's bare {"physical_to_logical_map"}. */
static void placement_body(char *out, size_t size, const int32_t *map, int n, int rows, bool format, int gpus) {
    size_t at = (size_t)snprintf(out, size, "{");
    if (format) at += (size_t)snprintf(out + at, size - at, "\"format\": \"moetrace.placement.v1\", \"num_gpus\": %d, ", gpus);
    at += (size_t)snprintf(out + at, size - at, "\"physical_to_logical_map\": [");
    for (int r = 0; r < rows; r++) {
        at += (size_t)snprintf(out + at, size - at, "%s[", r ? ", " : "");
        for (int s = 0; s < n; s++) at += (size_t)snprintf(out + at, size - at, "%s%d", s ? ", " : "", map[s]);
        at += (size_t)snprintf(out + at, size - at, "]");
    }
    snprintf(out + at, size - at, "]}");
}

static int setup(void **state) {
    (void)state;
    if (server_setup("placement_")) return -1;
    if (!g_bin) return 0;
    char body[1024], args[2048];
    placement_body(body, sizeof body, MAP_A, R, N_MOE, true, M);
    write_text("a.json", body);
    snprintf(args, sizeof args,
             "--model %s --threads 2 --enable-return-routed-experts --disable-radix-cache --max-running-requests 2 "
             "--max-batch-tokens 64 --init-expert-location %s --expert-dump-dir %s --expert-dump-visualize",
             FIXTURE, path_of("a.json"), g_dir);
    if (mt_test_server_start(&g_srv, g_bin, args, path_of("server.log"), 120)) return -1;
    g_c = mt_http_client_new(g_srv.url, NULL);
    return 0;
}

static int teardown(void **state) { return server_stop_and_teardown(state, &g_srv, g_c); }

static cJSON *call(const char *path, const char *body, long want) { return server_call(g_c, path, body, want); }

/* A text answer's status (the recorder endpoints answer text). */
static void call_text(const char *path) {
    mt_http_response r;
    assert_int_equal(mt_http_call(g_c, "POST", path, "", &r), 0);
    assert_int_equal(r.status, 200);
    mt_http_response_free(&r);
}

/* Request k's body: a greedy generation of n tokens with its routing. */
static void request_body(char *out, size_t size, int k, int n, bool stream) {
    char ids[512];
    size_t at = 0;
    for (int i = 0; i < 20; i++) at += (size_t)snprintf(ids + at, sizeof ids - at, "%s%d", i ? "," : "", 3 + (k * 37 + i * 13) % 400);
    snprintf(out, size,
             "{\"input_ids\": [%s], \"stream\": %s, \"return_routed_experts\": true, \"sampling_params\": "
             "{\"max_new_tokens\": %d, \"ignore_eos\": true, \"temperature\": 0}}",
             ids, stream ? "true" : "false", n);
}

static cJSON *generate(int k, int n) {
    char body[2048];
    request_body(body, sizeof body, k, n, false);
    return call("/generate", body, 200);
}

/* Tokens and routing of answer a equal those of want. */
static void check_same_answer(const cJSON *a, const cJSON *want, const char *what) {
    if (!mt_api_same_json(cJSON_GetObjectItem(a, "output_ids"), cJSON_GetObjectItem(want, "output_ids")))
        fail_msg("%s: tokens differ", what);
    const cJSON *ra = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "meta_info"), "routed_experts");
    const cJSON *rw = cJSON_GetObjectItem(cJSON_GetObjectItem(want, "meta_info"), "routed_experts");
    if (!cJSON_IsString(ra) || !cJSON_IsString(rw) || strcmp(ra->valuestring, rw->valuestring))
        fail_msg("%s: routed_experts differ", what);
}

static cJSON *dump_inline(void) { return call("/dump_expert_distribution_record?inline=1", "", 200); }

/* A JSON file the server wrote. */
static cJSON *read_json(const char *path) {
    cJSON *j = mt_api_read_json(path);
    if (!j) fail_msg("cannot read %s as JSON", path);
    return j;
}

/* The dump runs (and counted under) the placement whose MoE rows are map: its own placement says so
 * and each expert's replicas add up to its logical count. */
static void check_physical(const cJSON *dump, const int32_t *map) {
    const cJSON *rows = cJSON_GetObjectItem(cJSON_GetObjectItem(dump, "placement"), "physical_to_logical_map");
    for (int i = 0; i < N_MOE; i++) {
        int32_t got[R];
        assert_int_equal(mt_api_int_array(cJSON_GetArrayItem(rows, i), got, R), R);
        assert_memory_equal(got, map, sizeof got);
        int l = MOE_LAYERS[i];
        for (int e = 0; e < E; e++) {
            int64_t sum = 0;
            for (int s = 0; s < R; s++)
                if (map[s] == e) sum += mt_api_cell(dump, "physical_count", l, s);
            assert_int_equal(sum, mt_api_cell(dump, "logical_count", l, e));
        }
    }
}

/* Mean over MoE layers of the per-GPU balancedness measured from the dump's physical counts. */
static double measured_balancedness(const cJSON *dump) {
    double sum = 0;
    for (int i = 0; i < N_MOE; i++) {
        int64_t row[R];
        for (int s = 0; s < R; s++) row[s] = mt_api_cell(dump, "physical_count", MOE_LAYERS[i], s);
        sum += mt_balancedness_contiguous(row, R, M);
    }
    return sum / N_MOE;
}

static double metric(const char *name) {
    mt_http_response r;
    assert_int_equal(mt_http_call(g_c, "GET", "/metrics", NULL, &r), 0);
    double v = mt_prom_value(r.body, name);
    mt_http_response_free(&r);
    return v;
}

static void switch_to(const int32_t *map, bool sglang_body, cJSON **answer) {
    char body[1024];
    placement_body(body, sizeof body, map, R, N_MOE, !sglang_body, M);
    cJSON *a = call("/update_expert_location", body, 200);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(a, "success")));
    assert_int_equal(cJSON_GetObjectItem(a, "num_replicas")->valueint, R);
    if (answer) *answer = a;
    else cJSON_Delete(a);
}

static void test_apply_placement(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    switch_to(MAP_A, false, NULL);
    /* without a switch */
    call_text("/start_expert_distribution_record");
    cJSON *x0 = generate(0, 24), *y0 = generate(1, 24);
    cJSON *d0 = dump_inline();
    check_physical(d0, MAP_A);
    /* the same requests with a switch between them (SGLang's body) */
    cJSON *x1 = generate(0, 24), *sw;
    switch_to(MAP_B, true, &sw);
    const cJSON *path = cJSON_GetObjectItem(sw, "dump");
    assert_true(cJSON_IsString(path));
    cJSON *d1 = read_json(path->valuestring);
    char png[1024]; /* --expert-dump-visualize: the heatmap beside the dump written at the switch */
    snprintf(png, sizeof png, "%.*s.png", (int)strlen(path->valuestring) - 5, path->valuestring);
    if (access(png, F_OK)) fail_msg("no heatmap %s beside the switch's dump", png);
    check_physical(d1, MAP_A);
    cJSON *y1 = generate(1, 24);
    double bal = metric("moetrace_expert_balancedness_mean");
    cJSON *d2 = dump_inline();
    check_physical(d2, MAP_B);
    assert_true(fabs(bal - measured_balancedness(d2)) < 1e-6);
    check_same_answer(x1, x0, "request 0 before the switch");
    check_same_answer(y1, y0, "request 1 after the switch");
    for (int l = 0; l < L_HIDDEN; l++)
        for (int e = 0; e < E; e++)
            assert_int_equal(mt_api_cell(d1, "logical_count", l, e) + mt_api_cell(d2, "logical_count", l, e),
                             mt_api_cell(d0, "logical_count", l, e));
    assert_true(cJSON_GetObjectItem(d1, "num_tokens")->valuedouble > 0);
    /* a switch with an empty window writes nothing */
    cJSON *again;
    switch_to(MAP_A, false, &again);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(again, "dump")));
    cJSON *pieces[] = {x0, y0, d0, x1, sw, d1, y1, d2, again};
    for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++) cJSON_Delete(pieces[i]);
    call_text("/stop_expert_distribution_record");
}

static void expect_400(const char *path, const char *body, const char *needle) {
    long status;
    cJSON *a = mt_api_json(g_c, path, body, &status);
    assert_int_equal(status, 400);
    const cJSON *msg = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "error"), "message");
    assert_true(cJSON_IsString(msg));
    if (!strstr(msg->valuestring, needle)) fail_msg("%s: '%s' does not say '%s'", path, msg->valuestring, needle);
    cJSON_Delete(a);
}

static void test_rebalance_matches_eplb(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    switch_to(MAP_A, false, NULL);
    call_text("/stop_expert_distribution_record");
    expect_400("/eplb_rebalance", "", "not running");
    call_text("/start_expert_distribution_record");
    expect_400("/eplb_rebalance", "{}", "recorded nothing");
    for (int k = 0; k < 4; k++) cJSON_Delete(generate(10 + k, 30));
    cJSON *a = call("/eplb_rebalance", "", 200);
    const cJSON *dump = cJSON_GetObjectItem(a, "dump");
    assert_true(cJSON_IsString(dump));
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s eplb --counts %s --num-replicas %d --num-gpus %d --out %s 2>/dev/null", g_bin,
             dump->valuestring, R, M, path_of("planned.json"));
    assert_int_equal(system(cmd), 0);
    cJSON *want = read_json(path_of("planned.json"));
    const cJSON *placement = cJSON_GetObjectItem(a, "placement");
    assert_true(mt_api_same_json(cJSON_GetObjectItem(placement, "physical_to_logical_map"),
                          cJSON_GetObjectItem(want, "physical_to_logical_map")));
    assert_string_equal(cJSON_GetObjectItem(placement, "source")->valuestring, "eplb");
    /* the placement planned is also written beside the window's dump */
    const cJSON *file = cJSON_GetObjectItem(a, "placement_file");
    assert_true(cJSON_IsString(file));
    assert_non_null(strstr(file->valuestring, "expert_placement_"));
    cJSON *written = read_json(file->valuestring);
    assert_true(mt_api_same_json(cJSON_GetObjectItem(written, "physical_to_logical_map"),
                                 cJSON_GetObjectItem(placement, "physical_to_logical_map")));
    cJSON_Delete(written);
    assert_true(fabs(cJSON_GetObjectItem(a, "balancedness_after_mean")->valuedouble -
                     cJSON_GetObjectItem(want, "balancedness_after_mean")->valuedouble) < 1e-4);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(a, "balancedness_before")), N_MOE);
    /* the server runs it: the next window counts its slots */
    cJSON_Delete(generate(20, 30));
    cJSON *d = dump_inline();
    int32_t map[R];
    assert_int_equal(mt_api_int_array(cJSON_GetArrayItem(cJSON_GetObjectItem(want, "physical_to_logical_map"), 0), map, R), R);
    const cJSON *rows = cJSON_GetObjectItem(cJSON_GetObjectItem(d, "placement"), "physical_to_logical_map");
    assert_true(mt_api_same_json(rows, cJSON_GetObjectItem(want, "physical_to_logical_map")));
    for (int i = 0; i < N_MOE; i++) {
        assert_int_equal(mt_api_int_array(cJSON_GetArrayItem(rows, i), map, R), R);
        for (int e = 0; e < E; e++) {
            int64_t sum = 0;
            for (int s = 0; s < R; s++)
                if (map[s] == e) sum += mt_api_cell(d, "physical_count", MOE_LAYERS[i], s);
            assert_int_equal(sum, mt_api_cell(d, "logical_count", MOE_LAYERS[i], e));
        }
    }
    cJSON_Delete(d);
    cJSON_Delete(want);
    cJSON_Delete(a);
    call_text("/stop_expert_distribution_record");
    /* /get_model_info names the placement running now */
    cJSON *info = call("/get_model_info", NULL, 200);
    assert_string_equal(cJSON_GetObjectItem(info, "placement")->valuestring, "eplb");
    cJSON_Delete(info);
}

static void test_bad_bodies(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    switch_to(MAP_B, false, NULL);
    char body[1024];
    expect_400("/update_expert_location", "not json", "invalid JSON");
    expect_400("/update_expert_location", "[1, 2]", "not a JSON object");
    expect_400("/update_expert_location", "{}", "must be a placement");
    placement_body(body, sizeof body, MAP_A, R, 2, true, M);
    expect_400("/update_expert_location", body, "has 2 rows; the model has 3 MoE layers");
    int32_t outside[R];
    memcpy(outside, MAP_A, sizeof outside);
    outside[11] = 8;
    placement_body(body, sizeof body, outside, R, N_MOE, true, M);
    expect_400("/update_expert_location", body, "is not a logical expert of the model");
    placement_body(body, sizeof body, MAP_A, R, N_MOE, true, 2);
    expect_400("/update_expert_location", body, "differs from the placement's num_gpus 2");
    placement_body(body, sizeof body, MAP_A, 8, N_MOE, true, M);
    expect_400("/update_expert_location", body, "this server runs 12");
    expect_400("/update_expert_location", "{\"format\": \"moetrace.expert_distribution.v1\"}", "stat dump");
    int32_t missing[R] = {0, 1, 2, 3, 4, 5, 6, 6, 0, 1, 2, 3};
    placement_body(body, sizeof body, missing, R, N_MOE, true, M);
    expect_400("/update_expert_location", body, "no replica of logical expert 7");
    /* B still serves */
    call_text("/start_expert_distribution_record");
    cJSON_Delete(generate(3, 16));
    cJSON *d = dump_inline();
    check_physical(d, MAP_B);
    cJSON_Delete(d);
    call_text("/stop_expert_distribution_record");
}

/* ---- switches while requests stream ------------------------------------------------------------ */

static void sleep_ms(int ms) {
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static void test_switch_while_streaming(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    enum { N = 2, NEW = 400 };
    cJSON *solo[N];
    for (int k = 0; k < N; k++) solo[k] = generate(30 + k, NEW);
    call_text("/start_expert_distribution_record");
    mt_bg_request b[N];
    for (int k = 0; k < N; k++) {
        char body[2048];
        request_body(body, sizeof body, 30 + k, NEW, true);
        mt_bg_start(&b[k], g_srv.url, body, true);
    }
    /* switch back and forth (explicit placements, then a rebalance) while both decode: each switch
     * inside a pause in place, so both are surely mid-stream, after a few more events each time */
    int switches = 0, seen = 0;
    for (int round = 0; round < 6; round++) {
        for (int waited = 0; waited < 10000 && atomic_load(&b[0].events) < seen + 3; waited += 1) sleep_ms(1);
        cJSON_Delete(call("/pause_generation", "{\"mode\": \"in_place\"}", 200));
        seen = atomic_load(&b[0].events);
        if (!atomic_load(&b[0].done) && !atomic_load(&b[1].done)) switches++;
        if (round == 5) cJSON_Delete(call("/eplb_rebalance", "", 200));
        else switch_to(round % 2 ? MAP_A : MAP_B, round % 2 == 0, NULL);
        cJSON_Delete(call("/continue_generation", "{}", 200));
    }
    for (int k = 0; k < N; k++) {
        mt_bg_join(&b[k]);
        assert_int_equal(b[k].status, 200);
        check_same_answer(b[k].answer, solo[k], k ? "stream 1" : "stream 0");
        mt_bg_free(&b[k]);
        cJSON_Delete(solo[k]);
    }
    assert_int_equal(switches, 6); /* every switch came while both streamed */
    call_text("/stop_expert_distribution_record");
}

static void test_without_ep_size(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    mt_test_server srv;
    char args[1024];
    snprintf(args, sizeof args, "--model %s --threads 1", FIXTURE);
    assert_int_equal(mt_test_server_start(&srv, g_bin, args, path_of("plain.log"), 120), 0);
    mt_http_client *c = mt_http_client_new(srv.url, NULL);
    const char *paths[] = {"/update_expert_location", "/eplb_rebalance"};
    char body[1024];
    placement_body(body, sizeof body, MAP_A, R, N_MOE, true, M);
    for (int i = 0; i < 2; i++) {
        long status;
        cJSON *a = mt_api_json(c, paths[i], body, &status);
        assert_int_equal(status, 400);
        const cJSON *msg = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "error"), "message");
        assert_non_null(strstr(msg->valuestring, "serve was started without --ep-size"));
        cJSON_Delete(a);
    }
    mt_http_client_free(c);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);
}

/* A rebalance whose window cannot be written (the dump dir was removed) still switches: the answer
 * says the window was lost and why, and the server goes on serving and dumping. */
static void test_rebalance_when_dump_fails(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    mt_test_server srv;
    char args[2048], dir[1024], cmd[2100];
    snprintf(dir, sizeof dir, "%s", path_of("gone"));
    snprintf(args, sizeof args,
             "--model %s --threads 1 --ep-size %d --enable-expert-distribution-metrics --enable-return-routed-experts "
             "--expert-dump-dir %s", FIXTURE,
             M, dir);
    assert_int_equal(mt_test_server_start(&srv, g_bin, args, path_of("gone.log"), 120), 0);
    mt_http_client *c = mt_http_client_new(srv.url, NULL);
    char body[2048];
    request_body(body, sizeof body, 3, 12, false);
    cJSON_Delete(server_call(c, "/generate", body, 200));
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    cJSON *a = server_call(c, "/eplb_rebalance", "", 200);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(a, "dump")));
    const cJSON *why = cJSON_GetObjectItem(a, "dump_error");
    assert_true(cJSON_IsString(why));
    assert_non_null(strstr(why->valuestring, "gone"));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(a, "placement_file")));
    cJSON_Delete(a);
    mt_http_response m;
    assert_int_equal(mt_http_call(c, "GET", "/metrics", NULL, &m), 0);
    assert_true(mt_prom_value(m.body, "moetrace_expert_dumps_failed_total") == 1);
    mt_http_response_free(&m);
    cJSON *info = server_call(c, "/get_model_info", NULL, 200);
    assert_string_equal(cJSON_GetObjectItem(info, "placement")->valuestring, "eplb");
    cJSON_Delete(info);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    cJSON_Delete(server_call(c, "/generate", body, 200));
    cJSON *d = server_call(c, "/dump_expert_distribution_record?inline=1", "", 200);
    int tokens = cJSON_GetObjectItem(d, "num_tokens")->valueint; /* the request after the switch (its prefix cached) */
    assert_true(tokens > 0 && tokens <= 20 + 12 - 1);
    cJSON_Delete(d);
    mt_http_client_free(c);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_placement),
        cmocka_unit_test(test_rebalance_matches_eplb),
        cmocka_unit_test(test_bad_bodies),
        cmocka_unit_test(test_switch_while_streaming),
        cmocka_unit_test(test_without_ep_size),
        cmocka_unit_test(test_rebalance_when_dump_fails),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
