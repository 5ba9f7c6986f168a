/* GET /dashboard/data under an expert placement, end to end over HTTP with the qwen3_moe test
 * checkpoint (4 layers, MoE layers 0, 2, 3; 8 experts, top-2) served with --ep-size 4 (the trivial
 * placement: 8 slots, 2 per GPU):
 *  - "placement" names the placement running (source, GPUs, slots) and the switches applied, by
 *    trigger; its gpu_load holds the window's tokens per GPU: they add up to the window's routed
 *    choices (the MoE layers' logical counts, top_k per token and layer) and are the window's
 *    physical counts summed over each GPU's slots (checked against the dump of the same window);
 *  - after POST /eplb_rebalance the placement is "eplb", switches.eplb_rebalance is 1 and gpu_load
 *    follows the new placement's slots; after POST /update_expert_location it is "file";
 *  - the page has the rebalance button;
 *  - with --enable-eplb, eplb_every is its period and the periodic rebalances are counted.
 * Without a placement "placement" is null (test_server_openai.c); the page's script is run under
 * node in test_server_domains.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "server_setup.h"

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"
#define E 8
#define M 4
#define TOP_K 2
#define N_MOE 3
#define EVERY 5
static const int MOE_LAYERS[N_MOE] = {0, 2, 3};

static mt_test_server g_srv;
static mt_http_client *g_c;

/* A server over the fixture with --ep-size 4 and extra flags, its dumps into g_dir/<name>, its log
 * g_dir/<name>.log. 0 once it answers. */
static int start(mt_test_server *srv, const char *name, const char *extra) {
    char args[2048], log[600];
    mkdir(path_of(name), 0755);
    snprintf(args, sizeof args, "--model %s --threads 2 --ep-size %d --max-running-requests 2 --expert-dump-dir %s %s",
             FIXTURE, M, path_of(name), extra);
    snprintf(log, sizeof log, "%s.log", path_of(name));
    return mt_test_server_start(srv, g_bin, args, log, 120);
}

static int setup(void **state) {
    (void)state;
    if (server_setup("dashboard_")) return -1;
    if (!g_bin) return 0;
    if (start(&g_srv, "ep", "")) return -1;
    g_c = mt_http_client_new(g_srv.url, NULL);
    return 0;
}

static int teardown(void **state) { return server_stop_and_teardown(state, &g_srv, g_c); }

static int num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    if (!cJSON_IsNumber(v)) fail_msg("'%s' is not a number", k);
    return v->valueint;
}

/* A greedy generation of n tokens from prompt k. */
static void generate(mt_http_client *c, int k, int n) {
    char ids[512], body[1024];
    size_t at = 0;
    for (int i = 0; i < 16; i++) at += (size_t)snprintf(ids + at, sizeof ids - at, "%s%d", i ? "," : "", 3 + (k * 37 + i * 13) % 400);
    snprintf(body, sizeof body,
             "{\"input_ids\": [%s], \"sampling_params\": {\"max_new_tokens\": %d, \"ignore_eos\": true, \"temperature\": 0}}",
             ids, n);
    cJSON_Delete(server_call(c, "/generate", body, 200));
}

static void post_text(const char *path) {
    mt_http_response r;
    assert_int_equal(mt_http_call(g_c, "POST", path, "", &r), 0);
    assert_int_equal(r.status, 200);
    mt_http_response_free(&r);
}

/* d's placement: its source, and the applied switches by trigger (update, rebalance, periodic). */
static const cJSON *check_placement(const cJSON *d, const char *source, int update, int rebalance, int periodic) {
    const cJSON *p = cJSON_GetObjectItem(d, "placement"), *sw = cJSON_GetObjectItem(p, "switches");
    assert_true(cJSON_IsObject(p));
    assert_string_equal(cJSON_GetObjectItem(p, "source")->valuestring, source);
    assert_int_equal(num(p, "num_gpus"), M);
    assert_int_equal(num(p, "num_replicas"), E);
    assert_int_equal(num(sw, "update_expert_location"), update);
    assert_int_equal(num(sw, "eplb_rebalance"), rebalance);
    if (periodic >= 0) assert_int_equal(num(sw, "periodic"), periodic);
    return p;
}

/* d's gpu_load: M entries adding up to the window's routed choices (the MoE layers' logical counts of
 * the same answer, top_k per token and layer); with dump (a dump of the same window), each is the
 * physical counts of the GPU's slots over the MoE layers. Returns their sum. */
static int64_t check_gpu_load(const cJSON *d, const cJSON *dump) {
    const cJSON *p = cJSON_GetObjectItem(d, "placement"), *load = cJSON_GetObjectItem(p, "gpu_load");
    assert_int_equal(cJSON_GetArraySize(load), M);
    int slots = num(p, "num_replicas") / M;
    int64_t total = 0, routed = 0;
    for (int g = 0; g < M; g++) {
        int64_t v = (int64_t)cJSON_GetArrayItem(load, g)->valuedouble, want = 0;
        total += v;
        for (int i = 0; dump && i < N_MOE; i++)
            for (int s = g * slots; s < (g + 1) * slots; s++) want += mt_api_cell(dump, "physical_count", MOE_LAYERS[i], s);
        if (dump && v != want) fail_msg("GPU %d: gpu_load %lld, the dump's physical counts %lld", g, (long long)v, (long long)want);
    }
    for (int i = 0; i < N_MOE; i++)
        for (int e = 0; e < E; e++) routed += mt_api_cell(d, "logical_count", MOE_LAYERS[i], e);
    assert_int_equal(total, routed);
    assert_int_equal(routed, (int64_t)num(d, "num_tokens") * TOP_K * N_MOE);
    return total;
}

static void test_page_has_rebalance(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    mt_http_response r;
    assert_int_equal(mt_http_call(g_c, "GET", "/dashboard", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "call('/eplb_rebalance')"));
    assert_non_null(strstr(r.body, "rebalance now"));
    mt_http_response_free(&r);
}

static void test_placement_load_and_switches(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    cJSON *d0 = server_call(g_c, "/dashboard/data", NULL, 200);
    check_placement(d0, "trivial", 0, 0, 0);
    assert_int_equal(num(d0, "eplb_every"), 0);
    assert_int_equal(check_gpu_load(d0, NULL), 0); /* nothing recorded yet */

    post_text("/start_expert_distribution_record");
    for (int k = 0; k < 3; k++) generate(g_c, k, 12);
    cJSON *d1 = server_call(g_c, "/dashboard/data", NULL, 200);
    assert_true(check_gpu_load(d1, NULL) > 0);
    /* the switch dumps the window d1 showed (nothing ran since) */
    cJSON *a = server_call(g_c, "/eplb_rebalance", "", 200);
    cJSON *dump = mt_api_read_json(cJSON_GetObjectItem(a, "dump")->valuestring);
    assert_non_null(dump);
    assert_int_equal(num(dump, "num_tokens"), num(d1, "num_tokens"));
    check_gpu_load(d1, dump);
    cJSON_Delete(dump);
    cJSON_Delete(a);

    cJSON *d2 = server_call(g_c, "/dashboard/data", NULL, 200);
    check_placement(d2, "eplb", 0, 1, 0);
    assert_int_equal(check_gpu_load(d2, NULL), 0); /* the window restarted at the switch */
    for (int k = 3; k < 5; k++) generate(g_c, k, 12);
    cJSON *d3 = server_call(g_c, "/dashboard/data", NULL, 200);
    cJSON *inline_dump = server_call(g_c, "/dump_expert_distribution_record?inline=1", "", 200);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(inline_dump, "placement"), "source")->valuestring,
                        "eplb");
    assert_true(check_gpu_load(d3, inline_dump) > 0); /* counted under the new placement's slots */
    cJSON_Delete(inline_dump);

    cJSON_Delete(server_call(g_c, "/update_expert_location",
                             "{\"physical_to_logical_map\": [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7], "
                             "[0, 1, 2, 3, 4, 5, 6, 7]]}",
                             200));
    cJSON *d4 = server_call(g_c, "/dashboard/data", NULL, 200);
    check_placement(d4, "file", 1, 1, 0);
    post_text("/stop_expert_distribution_record");
    cJSON *pieces[] = {d0, d1, d2, d3, d4};
    for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++) cJSON_Delete(pieces[i]);
}

static void test_enable_eplb(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    mt_test_server srv;
    char flags[128];
    snprintf(flags, sizeof flags, "--enable-eplb --eplb-rebalance-num-iterations %d", EVERY);
    assert_int_equal(start(&srv, "auto", flags), 0);
    mt_http_client *c = mt_http_client_new(srv.url, NULL);
    generate(c, 7, 24); /* about 25 passes: the rebalances at 5, 10, 15 and 20 came before the answer */
    cJSON *d = server_call(c, "/dashboard/data", NULL, 200);
    assert_int_equal(num(d, "eplb_every"), EVERY);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(d, "recording")));
    const cJSON *p = check_placement(d, "eplb", 0, 0, -1);
    assert_true(num(cJSON_GetObjectItem(p, "switches"), "periodic") >= 3);
    check_gpu_load(d, NULL);
    cJSON_Delete(d);
    mt_http_client_free(c);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_has_rebalance),
        cmocka_unit_test(test_placement_load_and_switches),
        cmocka_unit_test(test_enable_eplb),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
