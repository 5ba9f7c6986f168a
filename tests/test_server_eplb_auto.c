/* serve --enable-eplb: the server rebalances its expert placement by itself every N forward passes,
 * end to end over HTTP with the qwen3_moe test checkpoint (4 layers, MoE layers 0, 2, 3; 8 experts,
 * top-2) under a placement of 12 slots on 4 virtual GPUs, checked against a server without it:
 *  - the answers (tokens and routing) are those without rebalancing; the dumps written at the
 *    switches plus the last window count exactly the same requests' experts; each rebalance wrote
 *    the placement `moetrace eplb` plans from the dump of its window, and the next window ran it;
 *    the written placement is one /update_expert_location takes; /metrics counts the rebalances;
 *  - with --eplb-min-rebalancing-utilization-threshold 0 every rebalance is skipped: nothing is
 *    switched or dumped, and the recorder's window keeps every request;
 *  - with --domain-field the domains' usage is written beside each switch's dump, under the
 *    placement that dump ran, and the domains add up to the recorder's dumps;
 *  - recorder dumps over HTTP while labelled requests decode: each dump's domain usage counts the
 *    dump's own tokens;
 *  - --enable-eplb without a placement, and its settings without it, are refused at start-up. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "routing/stat_dump.h"
#include "server_setup.h"
#include "support/bg_request.h"
#include "test_cli.h"

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"
#define L_HIDDEN 4
#define E 8
#define R 12
#define M 4
#define EVERY 5 /* the last rebalance comes before the last pass, so before the last answer */
#define N_REQ 3
#define NEW 24

static const int32_t MAP_A[R] = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3};

static int setup(void **state) {
    (void)state;
    if (server_setup("eplb_auto_")) return -1;
    if (!g_bin) return 0;
    char body[1024];
    size_t at = (size_t)snprintf(body, sizeof body, "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": %d, "
                                                    "\"physical_to_logical_map\": [", M);
    for (int r = 0; r < 3; r++) {
        at += (size_t)snprintf(body + at, sizeof body - at, "%s[", r ? ", " : "");
        for (int s = 0; s < R; s++) at += (size_t)snprintf(body + at, sizeof body - at, "%s%d", s ? ", " : "", MAP_A[s]);
        at += (size_t)snprintf(body + at, sizeof body - at, "]");
    }
    snprintf(body + at, sizeof body - at, "]}");
    write_text("a.json", body);
    return 0;
}

static int teardown(void **state) { return server_teardown(state); }

/* A server over the fixture under placement A, its dumps into g_dir/<dir> (made here); extra: its
 * own flags. */
static void start(mt_test_server *srv, mt_http_client **c, const char *dir, const char *extra) {
    char args[2048], log[600];
    mkdir(path_of(dir), 0755);
    snprintf(args, sizeof args,
             "--model %s --threads 2 --enable-return-routed-experts --disable-radix-cache --max-running-requests 1 "
             "--max-batch-tokens 64 --init-expert-location %s --expert-dump-dir %s %s",
             FIXTURE, path_of("a.json"), path_of(dir), extra);
    snprintf(log, sizeof log, "%s.log", path_of(dir));
    assert_int_equal(mt_test_server_start(srv, g_bin, args, log, 120), 0);
    *c = mt_http_client_new(srv->url, NULL);
}

static void stop(mt_test_server *srv, mt_http_client *c) {
    mt_http_client_free(c);
    assert_int_equal(mt_test_server_stop(srv, SIGTERM, 60), 0);
}

/* Request k: a greedy generation of NEW tokens with its routing; domain: its label, or NULL. */
static cJSON *generate(mt_http_client *c, int k, const char *domain) {
    char ids[512], body[2048], label[64] = "";
    size_t at = 0;
    for (int i = 0; i < 20; i++) at += (size_t)snprintf(ids + at, sizeof ids - at, "%s%d", i ? "," : "", 3 + (k * 37 + i * 13) % 400);
    if (domain) snprintf(label, sizeof label, "\"domain\": \"%s\", ", domain);
    snprintf(body, sizeof body,
             "{%s\"input_ids\": [%s], \"return_routed_experts\": true, \"sampling_params\": "
             "{\"max_new_tokens\": %d, \"ignore_eos\": true, \"temperature\": 0}}",
             label, ids, NEW);
    return server_call(c, "/generate", body, 200);
}

static void same_answer(const cJSON *a, const cJSON *want, int k) {
    if (!mt_api_same_json(cJSON_GetObjectItem(a, "output_ids"), cJSON_GetObjectItem(want, "output_ids")))
        fail_msg("request %d: tokens differ", k);
    const cJSON *ra = cJSON_GetObjectItem(cJSON_GetObjectItem(a, "meta_info"), "routed_experts");
    const cJSON *rw = cJSON_GetObjectItem(cJSON_GetObjectItem(want, "meta_info"), "routed_experts");
    if (!cJSON_IsString(ra) || !cJSON_IsString(rw) || strcmp(ra->valuestring, rw->valuestring))
        fail_msg("request %d: routed_experts differ", k);
}

/* A JSON file the server wrote. */
static cJSON *read_json(const char *path) {
    cJSON *j = mt_api_read_json(path);
    if (!j) fail_msg("cannot read %s as JSON", path);
    return j;
}

static void add_logical(int64_t *sum, const cJSON *dump) {
    for (int l = 0; l < L_HIDDEN; l++)
        for (int e = 0; e < E; e++) sum[l * E + e] += mt_api_cell(dump, "logical_count", l, e);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The names in folder dir starting with prefix and ending with suffix, sorted (the millisecond
 * stamps sort in time order); returns how many (up to cap, strdup'd into names). */
static int list(const char *dir, const char *prefix, const char *suffix, char **names, int cap) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *ent; (ent = readdir(d)) && n < cap;) {
        size_t len = strlen(ent->d_name), sl = strlen(suffix);
        if (!strncmp(ent->d_name, prefix, strlen(prefix)) && len > sl && !strcmp(ent->d_name + len - sl, suffix))
            names[n++] = strdup(ent->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, by_name);
    return n;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
}

static double metric(mt_http_client *c, const char *result) {
    mt_http_response r;
    assert_int_equal(mt_http_call(c, "GET", "/metrics", NULL, &r), 0);
    char name[200];
    snprintf(name, sizeof name, "moetrace_expert_placement_switches_total{trigger=\"periodic\",result=\"%s\"}", result);
    double v = mt_prom_value(r.body, name);
    mt_http_response_free(&r);
    return v;
}

/* The requests on a server without --enable-eplb: their answers and the window's logical counts. */
static void reference(cJSON **answers, int64_t *logical) {
    mt_test_server srv;
    mt_http_client *c;
    start(&srv, &c, "ref", "--enable-expert-distribution-metrics");
    for (int k = 0; k < N_REQ; k++) answers[k] = generate(c, k, NULL);
    cJSON *d = server_call(c, "/dump_expert_distribution_record?inline=1", "", 200);
    memset(logical, 0, sizeof(int64_t) * L_HIDDEN * E);
    add_logical(logical, d);
    cJSON_Delete(d);
    stop(&srv, c);
}

/* Starts a server with --enable-eplb, rebalancing every EVERY passes, and extra flags, and serves
 * the requests, which must answer as on a server without it; want_logical gets the reference's
 * window. */
static void serve_requests(mt_test_server *srv, mt_http_client **c, const char *dir, const char *extra,
                           int64_t *want_logical) {
    cJSON *want[N_REQ];
    reference(want, want_logical);
    char flags[256];
    snprintf(flags, sizeof flags, "--enable-eplb --eplb-rebalance-num-iterations %d %s", EVERY, extra);
    start(srv, c, dir, flags);
    for (int k = 0; k < N_REQ; k++) {
        cJSON *a = generate(*c, k, NULL);
        same_answer(a, want[k], k);
        cJSON_Delete(a);
        cJSON_Delete(want[k]);
    }
}

static void test_rebalances_every_n_passes(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    int64_t want_logical[L_HIDDEN * E], got_logical[L_HIDDEN * E] = {0};
    mt_test_server srv;
    mt_http_client *c;
    serve_requests(&srv, &c, "auto", "", want_logical);
    /* each request is 1 prefill pass and NEW - 1 decode passes */
    int passes = N_REQ * NEW, expected = passes / EVERY;
    assert_int_equal((int)metric(c, "applied"), expected);
    assert_int_equal((int)metric(c, "skipped"), 0);
    cJSON *last = server_call(c, "/dump_expert_distribution_record?inline=1", "", 200); /* also a file */

    char *dumps[64], *plans[64];
    int n_dumps = list(path_of("auto"), "expert_distribution_", ".json", dumps, 64);
    int n_plans = list(path_of("auto"), "expert_placement_", ".json", plans, 64);
    assert_int_equal(n_plans, expected);
    assert_int_equal(n_dumps, expected + 1); /* one per switch, and the last window's */
    for (int i = 0; i < n_dumps; i++) {
        char path[2300];
        snprintf(path, sizeof path, "%s/%s", path_of("auto"), dumps[i]);
        cJSON *d = read_json(path);
        add_logical(got_logical, d);
        assert_int_equal((int)cJSON_GetObjectItem(d, "num_forward_passes")->valuedouble,
                         i < expected ? EVERY : passes - expected * EVERY);
        if (i < expected) {
            /* the placement written is what `moetrace eplb` plans from this window's dump ... */
            assert_string_equal(plans[i] + strlen("expert_placement_"), dumps[i] + strlen("expert_distribution_"));
            char cmd[4096], planned[1024], plan_path[2048];
            snprintf(planned, sizeof planned, "%s/planned_%d.json", g_dir, i);
            snprintf(cmd, sizeof cmd, "%s eplb --counts %s --num-replicas %d --num-gpus %d --out %s 2>/dev/null", g_bin,
                     path, R, M, planned);
            assert_int_equal(system(cmd), 0);
            snprintf(plan_path, sizeof plan_path, "%s/%s", path_of("auto"), plans[i]);
            cJSON *plan = read_json(plan_path), *eplb = read_json(planned);
            assert_true(mt_api_same_json(cJSON_GetObjectItem(plan, "physical_to_logical_map"),
                                         cJSON_GetObjectItem(eplb, "physical_to_logical_map")));
            /* ... and the next window ran it */
            snprintf(path, sizeof path, "%s/%s", path_of("auto"), dumps[i + 1]);
            cJSON *next = read_json(path);
            assert_true(mt_api_same_json(cJSON_GetObjectItem(cJSON_GetObjectItem(next, "placement"), "physical_to_logical_map"),
                                         cJSON_GetObjectItem(plan, "physical_to_logical_map")));
            cJSON_Delete(next);
            cJSON_Delete(eplb);
            if (i == expected - 1) { /* the file is a placement the server takes */
                char *text = cJSON_PrintUnformatted(plan);
                cJSON_Delete(server_call(c, "/update_expert_location", text, 200));
                free(text);
            }
            cJSON_Delete(plan);
        }
        cJSON_Delete(d);
    }
    assert_memory_equal(got_logical, want_logical, sizeof got_logical);
    cJSON *info = server_call(c, "/get_model_info", NULL, 200);
    assert_string_equal(cJSON_GetObjectItem(info, "placement")->valuestring, "eplb"); /* the file says so */
    cJSON_Delete(info);
    info = server_call(c, "/get_server_info", NULL, 200); /* SGLang's names of the settings */
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(info, "enable_eplb")));
    assert_int_equal(cJSON_GetObjectItem(info, "eplb_rebalance_num_iterations")->valueint, EVERY);
    assert_true(cJSON_GetObjectItem(info, "eplb_min_rebalancing_utilization_threshold")->valuedouble == 1.0);
    cJSON_Delete(info);
    free_names(dumps, n_dumps);
    free_names(plans, n_plans);
    cJSON_Delete(last);
    stop(&srv, c);
}

static void test_threshold_skips(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    int64_t want_logical[L_HIDDEN * E], got_logical[L_HIDDEN * E] = {0};
    mt_test_server srv;
    mt_http_client *c;
    serve_requests(&srv, &c, "skip", "--eplb-min-rebalancing-utilization-threshold 0", want_logical);
    assert_int_equal((int)metric(c, "applied"), 0);
    assert_int_equal((int)metric(c, "skipped"), N_REQ * NEW / EVERY);
    char *names[8];
    assert_int_equal(list(path_of("skip"), "expert_", ".json", names, 8), 0);
    cJSON *d = server_call(c, "/dump_expert_distribution_record?inline=1", "", 200);
    add_logical(got_logical, d);
    assert_memory_equal(got_logical, want_logical, sizeof got_logical);
    cJSON_Delete(d);
    cJSON *info = server_call(c, "/get_model_info", NULL, 200);
    assert_string_equal(cJSON_GetObjectItem(info, "placement")->valuestring, "file");
    cJSON_Delete(info);
    stop(&srv, c);
}

static void test_domains_follow_switches(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    mt_test_server srv;
    mt_http_client *c;
    char extra[160];
    snprintf(extra, sizeof extra, "--enable-eplb --eplb-rebalance-num-iterations %d --domain-field domain", EVERY);
    start(&srv, &c, "dom", extra);
    static const char *LABELS[2] = {"alpha", "beta"};
    for (int k = 0; k < 4; k++) cJSON_Delete(generate(c, k, LABELS[k % 2])); /* alpha first */
    cJSON_Delete(server_call(c, "/dump_expert_distribution_record?inline=1", "", 200));
    assert_true(metric(c, "applied") >= 1);
    char *dumps[64];
    int n = list(path_of("dom"), "expert_distribution_", ".json", dumps, 64);
    assert_true(n >= 2);
    int64_t all[L_HIDDEN * E] = {0}, domains[L_HIDDEN * E] = {0};
    for (int i = 0; i < n; i++) {
        char path[2300];
        snprintf(path, sizeof path, "%s/%s", path_of("dom"), dumps[i]);
        cJSON *d = read_json(path);
        add_logical(all, d);
        const char *stamp = dumps[i] + strlen("expert_distribution_");
        char usage[1024];
        snprintf(usage, sizeof usage, "%s/domain_usage_%.*s", path_of("dom"), (int)strlen(stamp) - 5, stamp);
        struct stat st;
        if (stat(usage, &st)) fail_msg("no domain usage beside %s", dumps[i]);
        for (int g = 0; g < 2; g++) {
            /* domain_usage_<ms>/domains/<label>/expert_distribution_<ms2>.json, once the label was seen */
            char dir[1100], *inner[4];
            snprintf(dir, sizeof dir, "%s/domains/%s", usage, LABELS[g]);
            if (g == 1 && stat(dir, &st)) continue;
            int m = list(dir, "expert_distribution_", ".json", inner, 4);
            assert_int_equal(m, 1);
            snprintf(path, sizeof path, "%s/%s", dir, inner[0]);
            cJSON *dd = read_json(path);
            add_logical(domains, dd);
            assert_true(mt_api_same_json(cJSON_GetObjectItem(cJSON_GetObjectItem(dd, "placement"), "physical_to_logical_map"),
                                         cJSON_GetObjectItem(cJSON_GetObjectItem(d, "placement"), "physical_to_logical_map")));
            cJSON_Delete(dd);
            free_names(inner, m);
        }
        cJSON_Delete(d);
    }
    assert_memory_equal(domains, all, sizeof all);
    free_names(dumps, n);
    stop(&srv, c);
}

/* Recorder dumps over HTTP while labelled requests decode: every dump's domain usage counts the
 * dump's own tokens (both are taken between the same two passes). */
static void test_dumps_under_traffic(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    mt_test_server srv;
    mt_http_client *c;
    start(&srv, &c, "busy", "--domain-field domain --enable-expert-distribution-metrics --max-running-requests 4");
    enum { N = 4 };
    mt_bg_request b[N];
    for (int k = 0; k < N; k++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"domain\": \"%s\", \"input_ids\": [%d, %d, %d, %d, %d], \"sampling_params\": "
                 "{\"max_new_tokens\": 200, \"ignore_eos\": true, \"temperature\": 0}}",
                 k % 2 ? "odd" : "even", 5 + k, 40 + k, 77, 91 + k, 120);
        mt_bg_start(&b[k], srv.url, body, true);
    }
    for (int i = 0; i < 40 && !atomic_load(&b[0].done); i++) {
        mt_http_response r;
        assert_int_equal(mt_http_call(c, "POST", "/dump_expert_distribution_record", "", &r), 0);
        assert_int_equal(r.status, 200);
        mt_http_response_free(&r);
        struct timespec t = {0, 15 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    for (int k = 0; k < N; k++) {
        mt_bg_join(&b[k]);
        assert_int_equal(b[k].status, 200);
        mt_bg_free(&b[k]);
    }
    cJSON_Delete(server_call(c, "/dump_expert_distribution_record?inline=1", "", 200));
    char *dumps[256];
    int n = list(path_of("busy"), "expert_distribution_", ".json", dumps, 256), paired = 0;
    for (int i = 0; i < n; i++) {
        char path[2300], usage[2300];
        snprintf(path, sizeof path, "%s/%s", path_of("busy"), dumps[i]);
        assert_int_equal(mt_stat_dump_sibling(path, "domain_usage_", "/domains.json", usage, sizeof usage), 0);
        if (access(usage, F_OK)) continue; /* no labelled request counted yet */
        cJSON *d = read_json(path), *u = read_json(usage);
        if (cJSON_GetObjectItem(d, "num_tokens")->valuedouble != cJSON_GetObjectItem(u, "tokens")->valuedouble)
            fail_msg("%s: %g tokens, its domain usage %g", dumps[i], cJSON_GetObjectItem(d, "num_tokens")->valuedouble,
                     cJSON_GetObjectItem(u, "tokens")->valuedouble);
        paired++;
        cJSON_Delete(d);
        cJSON_Delete(u);
    }
    assert_true(paired >= 2);
    free_names(dumps, n);
    stop(&srv, c);
}

static void test_flags_refused(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char out[4096];
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "serve --model %s --enable-eplb", FIXTURE);
    assert_int_equal(run_moetrace(cmd, out, sizeof out), 2);
    assert_non_null(strstr(out, "--enable-eplb needs an expert placement"));
    snprintf(cmd, sizeof cmd, "serve --model %s --ep-size 4 --eplb-rebalance-num-iterations 10", FIXTURE);
    assert_int_equal(run_moetrace(cmd, out, sizeof out), 2);
    assert_non_null(strstr(out, "without --enable-eplb"));
    snprintf(cmd, sizeof cmd, "serve --model %s --ep-size 4 --enable-eplb --eplb-min-rebalancing-utilization-threshold 2",
             FIXTURE);
    assert_int_equal(run_moetrace(cmd, out, sizeof out), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rebalances_every_n_passes),
        cmocka_unit_test(test_threshold_skips),
        cmocka_unit_test(test_domains_follow_switches),
        cmocka_unit_test(test_dumps_under_traffic),
        cmocka_unit_test(test_flags_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
