/* `moetrace report DUMP.json... --over-time`: a series of stat dumps' balancedness, window by window.
 *  - end to end: serve --ep-size 4 --enable-eplb rebalancing every 5 passes over the qwen3_moe
 *    fixture writes its dumps and planned placements; the report's JSON has the windows in stamp
 *    order, each one's measured mean as its dump says, a switch exactly where consecutive dumps'
 *    maps differ, and the planned balancedness of each placement file worked out here by hand from
 *    its dump's logical counts; the PNG and SVG are written;
 *  - hand-written dumps: the order of stamps (_k names, several folders), the balancedness over
 *    --ep-size contiguous blocks, placements and planned files with hand-worked figures, the order
 *    given when a name has no stamp, mixed models and shapes refused naming the file, --ep-size
 *    required for dumps without a placement (exit 2), the other usage errors, more than 32 dumps;
 *  - the stamp of a file name, on odd and random names. */
#include <math.h>
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

#include "report/over_time.h"
#include "server_setup.h"
#include "test_cli.h"
#include "test_files.h"

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"

static int setup(void **state) {
    (void)state;
    g_bin = getenv("MOETRACE_BIN");
    if (g_bin) mt_http_global_init();
    return tmp_dir_make("report_over_time_");
}

static int teardown(void **state) {
    (void)state;
    return tmp_dir_remove();
}

/* ---- helpers ---- */

/* A stat dump g_dir/name: num_hidden_layers L, moe_layers (JSON), E experts, logical_count rows
 * (JSON), num_tokens (-1: absent), and placement and physical_count (JSON) or NULL. */
static void write_dump(const char *name, const char *model, int L, const char *moe_layers, int E, const char *logical,
                       int tokens, const char *placement, const char *physical) {
    char text[4096], tok[64] = "", plc[2048] = "";
    if (tokens >= 0) snprintf(tok, sizeof tok, "\"num_tokens\": %d, \"num_forward_passes\": 3, ", tokens);
    if (placement) snprintf(plc, sizeof plc, ", \"placement\": %s, \"physical_count\": %s", placement, physical);
    snprintf(text, sizeof text,
             "{\"format\": \"moetrace.expert_distribution.v1\", \"mode\": \"stat\", \"model\": \"%s\", "
             "\"num_hidden_layers\": %d, \"moe_layers\": %s, \"num_experts\": %d, \"top_k\": 2, %s"
             "\"logical_count\": %s%s}",
             model, L, moe_layers, E, tok, logical, plc);
    write_text(name, text);
}

/* A placement of 1 MoE layer (hidden layer 0 of 1), 4 experts, 4 slots on 2 GPUs. */
static const char *placement_json(const char *source, const char *map, char *buf, size_t n) {
    snprintf(buf, n, "{\"format\": \"moetrace.placement.v1\", \"source\": \"%s\", \"num_gpus\": 2, \"num_replicas\": 4, "
             "\"num_experts\": 4, \"num_hidden_layers\": 1, \"moe_layers\": [0], \"physical_to_logical_map\": [%s]}",
             source, map);
    return buf;
}

/* Runs `moetrace report ARGS`, stdout and stderr into out; its exit status. */
static int report(const char *args, char *out, size_t n) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "report %s", args);
    return run_moetrace(cmd, out, n);
}

/* g_dir/name into buf (600 bytes), kept beyond path_of's rotating buffers. */
static char *keep(char *buf, const char *name) {
    snprintf(buf, 600, "%s", path_of(name));
    return buf;
}

static cJSON *load_json(const char *path) {
    cJSON *j = mt_api_read_json(path);
    if (!j) fail_msg("cannot read %s as JSON", path);
    return j;
}

static const cJSON *window_of(const cJSON *j, int i) { return cJSON_GetArrayItem(cJSON_GetObjectItem(j, "windows"), i); }

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    if (!cJSON_IsNumber(v)) fail_msg("\"%s\" is not a number", key);
    return v->valuedouble;
}

static void check_png(const char *path) {
    size_t n = 0;
    char *b = slurp(path, &n);
    assert_non_null(b);
    assert_true(n > 100);
    assert_memory_equal(b, "\x89PNG\r\n\x1a\n", 8);
    free(b);
}

static void check_svg(const char *path) {
    char *t = slurp(path, NULL);
    assert_non_null(t);
    assert_non_null(strstr(t, "<svg"));
    assert_non_null(strstr(t, "</svg>"));
    free(t);
}

/* ---- end to end: serve --enable-eplb ---- */

#define NEW 24

static void generate(mt_http_client *c, int k) {
    char ids[512], body[1024];
    size_t at = 0;
    for (int i = 0; i < 20; i++) at += (size_t)snprintf(ids + at, sizeof ids - at, "%s%d", i ? "," : "", 3 + (k * 37 + i * 13) % 400);
    snprintf(body, sizeof body, "{\"input_ids\": [%s], \"sampling_params\": {\"max_new_tokens\": %d, \"ignore_eos\": true, "
             "\"temperature\": 0}}", ids, NEW);
    cJSON_Delete(server_call(c, "/generate", body, 200));
}

/* The balancedness a placement plans for logical counts, worked out here: each expert's count split
 * evenly over its replicas, each GPU's load the sum over its slots, mean / max (1 without load). */
static double planned_by_hand(const cJSON *dump, const cJSON *plan) {
    const cJSON *moe = cJSON_GetObjectItem(dump, "moe_layers"), *map = cJSON_GetObjectItem(plan, "physical_to_logical_map");
    int E = (int)num(dump, "num_experts"), M = (int)num(plan, "num_gpus"), n_moe = cJSON_GetArraySize(moe);
    assert_int_equal(cJSON_GetArraySize(map), n_moe); /* rows per MoE layer, as serve writes them */
    double sum = 0;
    for (int m = 0; m < n_moe; m++) {
        const cJSON *row = cJSON_GetArrayItem(map, m);
        int R = cJSON_GetArraySize(row), layer = cJSON_GetArrayItem(moe, m)->valueint, replicas[256] = {0};
        double load[64] = {0};
        for (int s = 0; s < R; s++) replicas[cJSON_GetArrayItem(row, s)->valueint]++;
        for (int s = 0; s < R; s++) {
            int e = cJSON_GetArrayItem(row, s)->valueint;
            assert_true(e >= 0 && e < E);
            load[s / (R / M)] += (double)mt_api_cell(dump, "logical_count", layer, e) / replicas[e];
        }
        double mean = 0, max = 0;
        for (int g = 0; g < M; g++) {
            mean += load[g] / M;
            max = fmax(max, load[g]);
        }
        sum += max > 0 ? mean / max : 1.0;
    }
    return sum / n_moe;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_serve_series(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char dir[600], args[2048], log[700];
    keep(dir, "serve");
    mkdir(dir, 0755);
    snprintf(args, sizeof args,
             "--model %s --threads 2 --disable-radix-cache --max-running-requests 1 --max-batch-tokens 64 --ep-size 4 "
             "--enable-eplb --eplb-rebalance-num-iterations 5 --expert-dump-dir %s", FIXTURE, dir);
    snprintf(log, sizeof log, "%s.log", dir);
    mt_test_server srv;
    assert_int_equal(mt_test_server_start(&srv, g_bin, args, log, 120), 0);
    mt_http_client *c = mt_http_client_new(srv.url, NULL);
    for (int k = 0; k < 3; k++) generate(c, k);
    cJSON_Delete(server_call(c, "/dump_expert_distribution_record?inline=1", "", 200)); /* the last window */
    mt_http_client_free(c);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);

    /* the dumps, by name (the stamps sort as names) and given in the reverse order */
    char list[1400], *names[64];
    snprintf(list, sizeof list, "ls %s/expert_distribution_*.json", dir);
    FILE *p = popen(list, "r");
    assert_non_null(p);
    int n = 0;
    char line[1024];
    while (n < 64 && fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = '\0';
        names[n++] = strdup(line);
    }
    pclose(p);
    assert_true(n >= 10); /* 72 passes, every 5 passes a rebalance, and the last window */
    qsort(names, (size_t)n, sizeof *names, by_name);
    char *given = calloc(1, 64 * 1100), out[8192];
    for (int i = n - 1; i >= 0; i--) strcat(strcat(given, names[i]), " ");
    char *cmd = malloc(64 * 1100 + 2000);
    snprintf(cmd, 64 * 1100 + 2000, "%s --over-time --out %s", given, path_of("serve.json"));
    assert_int_equal(report(cmd, out, sizeof out), 0);
    cJSON *j = load_json(path_of("serve.json"));
    assert_string_equal(cJSON_GetObjectItem(j, "format")->valuestring, "moetrace.balancedness_over_time.v1");
    assert_string_equal(cJSON_GetObjectItem(j, "ordered_by")->valuestring, "stamp");
    assert_int_equal((int)num(j, "ep_size"), 4);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "windows")), n);
    int switches = 0, plans = 0;
    cJSON *before = NULL;
    for (int i = 0; i < n; i++) {
        const cJSON *w = window_of(j, i);
        assert_string_equal(cJSON_GetObjectItem(w, "file")->valuestring, names[i]);
        cJSON *d = load_json(names[i]);
        const char *stamp = strrchr(names[i], '/') + 1 + strlen("expert_distribution_"); /* <ms>[_k].json */
        assert_true(num(w, "stamp_ms") == strtod(stamp, NULL));
        assert_true(num(w, "num_tokens") == num(d, "num_tokens"));
        assert_true(num(w, "num_forward_passes") == num(d, "num_forward_passes"));
        /* measured: the dump's own figures */
        const cJSON *bal = cJSON_GetObjectItem(d, "balancedness"), *per = cJSON_GetObjectItem(bal, "per_layer");
        assert_true(fabs(num(w, "balancedness_mean") - num(bal, "mean")) < 1e-12);
        double lo = 1, hi = 0;
        for (int m = 0; m < cJSON_GetArraySize(per); m++) {
            lo = fmin(lo, cJSON_GetArrayItem(per, m)->valuedouble);
            hi = fmax(hi, cJSON_GetArrayItem(per, m)->valuedouble);
        }
        assert_true(fabs(num(w, "balancedness_min_layer") - lo) < 1e-12);
        assert_true(fabs(num(w, "balancedness_max_layer") - hi) < 1e-12);
        /* the placement it ran, and whether it is another than the window before's */
        const cJSON *plc = cJSON_GetObjectItem(d, "placement");
        assert_string_equal(cJSON_GetObjectItem(w, "placement_source")->valuestring,
                            cJSON_GetObjectItem(plc, "source")->valuestring);
        bool differs = before && !mt_api_same_json(cJSON_GetObjectItem(plc, "physical_to_logical_map"),
                                                   cJSON_GetObjectItem(cJSON_GetObjectItem(before, "placement"),
                                                                       "physical_to_logical_map"));
        assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItem(w, "placement_changed")), differs);
        switches += differs;
        /* planned: from the placement file of the same stamp */
        char plan_path[1100];
        snprintf(plan_path, sizeof plan_path, "%.*sexpert_placement_%s", (int)(strrchr(names[i], '/') + 1 - names[i]),
                 names[i], strrchr(names[i], '/') + 1 + strlen("expert_distribution_"));
        struct stat st;
        if (stat(plan_path, &st) == 0) {
            cJSON *plan = load_json(plan_path);
            assert_true(fabs(num(w, "planned_next") - planned_by_hand(d, plan)) < 1e-12);
            cJSON_Delete(plan);
            plans++;
        } else {
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(w, "planned_next")));
        }
        cJSON_Delete(before);
        before = d;
    }
    assert_true(switches >= 1);
    /* every placement file was one of a window (the last windows, of the dump asked for and of the
     * one serve writes when it stops, were not planned on) */
    snprintf(list, sizeof list, "ls %s/expert_placement_*.json | wc -l", dir);
    p = popen(list, "r");
    assert_non_null(p);
    assert_non_null(fgets(line, sizeof line, p));
    pclose(p);
    assert_int_equal(plans, atoi(line));
    assert_true(plans >= 10 && plans < n);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(window_of(j, n - 1), "planned_next")));
    assert_string_equal(cJSON_GetObjectItem(window_of(j, 0), "placement_source")->valuestring, "trivial");
    cJSON_Delete(before);
    cJSON_Delete(j);

    snprintf(cmd, 64 * 1100 + 2000, "%s --over-time --out %s", given, path_of("serve.png"));
    assert_int_equal(report(cmd, out, sizeof out), 0);
    check_png(path_of("serve.png"));
    snprintf(cmd, 64 * 1100 + 2000, "%s/expert_distribution_*.json --over-time --out %s", dir, path_of("serve.svg"));
    assert_int_equal(report(cmd, out, sizeof out), 0);
    check_svg(path_of("serve.svg"));
    for (int i = 0; i < n; i++) free(names[i]);
    free(given);
    free(cmd);
}

/* ---- hand-written dumps ---- */

/* 2 hidden layers, both MoE, 4 experts; no placement. Over 2 GPUs (contiguous blocks {0,1}, {2,3}):
 * [6,2,2,0] -> loads 8, 2: 5/8 = 0.625; [1,1,1,1] -> 1.0; [3,1,0,0] -> loads 4, 0: 0.5. */
static void write_plain(const char *name, const char *model, int tokens) {
    write_dump(name, model, 2, "[0, 1]", 4, "[[6, 2, 2, 0], [1, 1, 1, 1]]", tokens, NULL, NULL);
}

static void test_order_by_stamp(void **state) {
    (void)state;
    mkdir(path_of("ord"), 0755);
    mkdir(path_of("ord/other"), 0755);
    static const char *const NAMES[] = {"ord/expert_distribution_3000.json", "ord/expert_distribution_2000_1.json",
                                        "ord/other/expert_distribution_1500.json", "ord/expert_distribution_2000.json",
                                        "ord/expert_distribution_1000.json"};
    static const int TOKENS[] = {5, 4, 2, 3, 1}; /* the place each should take */
    char paths[5][600], *given[5];
    for (int i = 0; i < 5; i++) {
        write_plain(NAMES[i], "m", TOKENS[i]);
        snprintf(paths[i], sizeof paths[i], "%s", path_of(NAMES[i]));
        given[i] = paths[i];
    }
    mt_over_time t;
    mt_err err = {{0}};
    assert_int_equal(mt_over_time_load(given, 5, 2, &t, &err), 0);
    assert_true(t.by_stamp);
    assert_int_equal(t.n, 5);
    assert_int_equal(t.ep_size, 2);
    assert_string_equal(t.model, "m");
    static const int64_t MS[] = {1000, 1500, 2000, 2000, 3000};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(t.w[i].num_tokens, i + 1);
        assert_int_equal(t.w[i].stamp_ms, MS[i]);
        assert_int_equal(t.w[i].stamp_k, i == 3);
        assert_true(fabs(t.w[i].bal_mean - (0.625 + 1.0) / 2) < 1e-15);
        assert_true(t.w[i].bal_min == 0.625 && t.w[i].bal_max == 1.0);
        assert_false(t.w[i].placement_changed);
        assert_string_equal(t.w[i].source, "");
        assert_true(isnan(t.w[i].planned_next));
    }
    mt_over_time_free(&t);
    /* one dump is a series of one */
    assert_int_equal(mt_over_time_load(given, 1, 2, &t, &err), 0);
    assert_int_equal(t.n, 1);
    mt_over_time_free(&t);
}

static void test_no_placement_needs_ep_size(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    write_plain("expert_distribution_10.json", "m", 8);
    write_dump("expert_distribution_20.json", "m", 2, "[0, 1]", 4, "[[3, 1, 0, 0], [0, 0, 0, 0]]", 0, NULL, NULL);
    char a[600], b[600], args[2000], out[8192];
    keep(a, "expert_distribution_10.json");
    keep(b, "expert_distribution_20.json");
    snprintf(args, sizeof args, "%s %s --over-time --out %s", b, a, path_of("plain.json"));
    assert_int_equal(report(args, out, sizeof out), 2);
    assert_non_null(strstr(out, "expert_distribution_10.json: recorded without an expert placement: give --ep-size"));
    snprintf(args, sizeof args, "%s %s --over-time --ep-size 3 --out %s", b, a, path_of("plain.json"));
    assert_int_equal(report(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "--ep-size 3 does not divide the dump's 4 experts"));
    struct stat st;
    assert_int_not_equal(stat(path_of("plain.json"), &st), 0);
    snprintf(args, sizeof args, "%s %s --over-time --ep-size 2 --out %s", b, a, path_of("plain.json"));
    assert_int_equal(report(args, out, sizeof out), 0);
    cJSON *j = load_json(path_of("plain.json"));
    assert_int_equal((int)num(j, "ep_size"), 2);
    const cJSON *w0 = window_of(j, 0), *w1 = window_of(j, 1);
    assert_true(num(w0, "stamp_ms") == 10);
    assert_true(num(w0, "balancedness_mean") == (0.625 + 1.0) / 2);
    assert_true(num(w1, "balancedness_mean") == (0.5 + 1.0) / 2); /* a layer without load counts as 1 */
    assert_true(num(w1, "balancedness_min_layer") == 0.5);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(w0, "placement_source")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(w0, "planned_next")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(w1, "placement_changed")));
    assert_true(num(w1, "num_tokens") == 0);
    cJSON_Delete(j);
    snprintf(args, sizeof args, "%s %s --over-time --ep-size 2 --out %s", b, a, path_of("plain.png"));
    assert_int_equal(report(args, out, sizeof out), 0);
    check_png(path_of("plain.png"));
}

/* Under placements (1 MoE layer, 4 experts, 4 slots on 2 GPUs), with the plan written beside the
 * first dump: measured per GPU from the physical counts, planned from the logical ones. */
static void test_placements_and_plans(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    mkdir(path_of("plc"), 0755);
    char p1[512], p2[512];
    placement_json("trivial", "[0, 1, 2, 3]", p1, sizeof p1);
    placement_json("eplb", "[0, 3, 1, 2]", p2, sizeof p2);
    /* trivial: GPU loads 6+2, 2+0 -> 5/8 */
    write_dump("plc/expert_distribution_100.json", "m", 1, "[0]", 4, "[[6, 2, 2, 0]]", 5, p1, "[[6, 2, 2, 0]]");
    /* planned on it: GPU 0 holds experts 0 and 3 (6 + 0), GPU 1 experts 1 and 2 (2 + 2) -> 5/6 */
    write_text("plc/expert_placement_100.json", p2);
    /* the plan ran: slots [0, 3, 1, 2] counted 4, 1, 2, 1 -> GPU loads 5, 3 -> 4/5 */
    write_dump("plc/expert_distribution_200.json", "m", 1, "[0]", 4, "[[4, 2, 1, 1]]", 4, p2, "[[4, 1, 2, 1]]");
    /* the same placement again: no switch */
    write_dump("plc/expert_distribution_300.json", "m", 1, "[0]", 4, "[[1, 1, 1, 1]]", 2, p2, "[[1, 1, 1, 1]]");
    char args[2000], out[8192];
    snprintf(args, sizeof args, "%s/plc/expert_distribution_*.json --over-time --out %s", g_dir, path_of("plc.json"));
    assert_int_equal(report(args, out, sizeof out), 0);
    cJSON *j = load_json(path_of("plc.json"));
    assert_int_equal((int)num(j, "ep_size"), 2);
    static const double MEASURED[3] = {5.0 / 8, 4.0 / 5, 1.0};
    static const char *const SOURCE[3] = {"trivial", "eplb", "eplb"};
    for (int i = 0; i < 3; i++) {
        const cJSON *w = window_of(j, i);
        assert_true(fabs(num(w, "balancedness_mean") - MEASURED[i]) < 1e-15);
        assert_string_equal(cJSON_GetObjectItem(w, "placement_source")->valuestring, SOURCE[i]);
        assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItem(w, "placement_changed")), i == 1);
        if (i == 0) assert_true(fabs(num(w, "planned_next") - 5.0 / 6) < 1e-15);
        else assert_true(cJSON_IsNull(cJSON_GetObjectItem(w, "planned_next")));
    }
    cJSON_Delete(j);
    snprintf(args, sizeof args, "%s/plc/expert_distribution_*.json --over-time --out %s", g_dir, path_of("plc.svg"));
    assert_int_equal(report(args, out, sizeof out), 0);
    check_svg(path_of("plc.svg"));
    /* --ep-size other than the placements' GPUs */
    snprintf(args, sizeof args, "%s/plc/expert_distribution_*.json --over-time --ep-size 4 --out %s", g_dir,
             path_of("plc.json"));
    assert_int_equal(report(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "expert_distribution_100.json: its placement runs on 2 GPUs, not --ep-size 4"));
    /* a plan beside a dump that does not fit it names the plan */
    write_text("plc/expert_placement_200.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 2, "
                                                "\"physical_to_logical_map\": [[0, 1, 2, 7]]}");
    snprintf(args, sizeof args, "%s/plc/expert_distribution_*.json --over-time --out %s", g_dir, path_of("plc.json"));
    assert_int_equal(report(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "expert_placement_200.json"));
}

static void test_unstamped_in_given_order(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    write_plain("expert_distribution_900.json", "m", 1);
    write_plain("yesterday.json", "m", 2);
    write_plain("expert_distribution_100.json", "m", 3);
    char a[600], b[600], c[600], *given[3] = {a, b, c};
    keep(a, "expert_distribution_900.json");
    keep(b, "yesterday.json");
    keep(c, "expert_distribution_100.json");
    mt_over_time t;
    mt_err err = {{0}};
    assert_int_equal(mt_over_time_load(given, 3, 2, &t, &err), 0);
    assert_false(t.by_stamp);
    assert_ptr_equal(t.unstamped, b);
    for (int i = 0; i < 3; i++) assert_int_equal(t.w[i].num_tokens, i + 1);
    assert_int_equal(t.w[1].stamp_ms, -1);
    assert_int_equal(t.w[2].stamp_ms, 100);
    mt_over_time_free(&t);
    char args[2000], out[8192];
    snprintf(args, sizeof args, "%s %s %s --over-time --ep-size 2 --out %s", a, b, c, path_of("given.json"));
    assert_int_equal(report(args, out, sizeof out), 0);
    cJSON *j = load_json(path_of("given.json"));
    assert_string_equal(cJSON_GetObjectItem(j, "ordered_by")->valuestring, "arguments");
    assert_string_equal(cJSON_GetObjectItem(window_of(j, 1), "file")->valuestring, b);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(window_of(j, 1), "stamp_ms")));
    assert_true(num(window_of(j, 2), "stamp_ms") == 100);
    cJSON_Delete(j);
    snprintf(args, sizeof args, "%s %s %s --over-time --ep-size 2 --out %s", a, b, c, path_of("given.png"));
    assert_int_equal(report(args, out, sizeof out), 0);
    check_png(path_of("given.png"));
}

static void test_mixed_refused(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    write_plain("expert_distribution_1.json", "model-a", 1);
    write_plain("expert_distribution_2.json", "model-b", 1);
    write_dump("expert_distribution_3.json", "model-a", 2, "[0, 1]", 2, "[[1, 1], [1, 1]]", 1, NULL, NULL);
    char a[600], b[600], c[600], args[2000], out[8192];
    keep(a, "expert_distribution_1.json");
    keep(b, "expert_distribution_2.json");
    keep(c, "expert_distribution_3.json");
    snprintf(args, sizeof args, "%s %s --over-time --ep-size 2 --out %s", b, a, path_of("mixed.png"));
    assert_int_equal(report(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "expert_distribution_2.json: a dump of model \"model-b\", not \"model-a\""));
    snprintf(args, sizeof args, "%s %s --over-time --ep-size 2 --out %s", a, c, path_of("mixed.png"));
    assert_int_equal(report(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "expert_distribution_3.json: 2 hidden layers, 2 MoE layers, 2 experts"));
    assert_non_null(strstr(out, "not the shape of"));
    snprintf(args, sizeof args, "%s %s --over-time --ep-size 2 --out %s", a, path_of("missing.json"), path_of("mixed.png"));
    assert_int_equal(report(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "missing.json"));
    struct stat st;
    assert_int_not_equal(stat(path_of("mixed.png"), &st), 0);
}

static void test_usage(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    write_plain("expert_distribution_7.json", "m", 1);
    char a[600], args[8192], out[8192];
    keep(a, "expert_distribution_7.json");
    snprintf(args, sizeof args, "%s --over-time --ep-size 2", a);
    assert_int_equal(report(args, out, sizeof out), 2);
    assert_non_null(strstr(out, "--out is required"));
    snprintf(args, sizeof args, "--over-time --out %s", path_of("u.png"));
    assert_int_equal(report(args, out, sizeof out), 2);
    snprintf(args, sizeof args, "%s --over-time --ep-size 2 --out %s", a, path_of("u.txt"));
    assert_int_equal(report(args, out, sizeof out), 2);
    assert_non_null(strstr(out, ".png, .svg or .json"));
    snprintf(args, sizeof args, "%s --over-time --placement %s --out %s", a, a, path_of("u.png"));
    assert_int_equal(report(args, out, sizeof out), 2);
    snprintf(args, sizeof args, "%s --over-time --ep-size 2 --out %s", a, path_of("no_such_folder/u.png"));
    assert_int_equal(report(args, out, sizeof out), 2);
    assert_int_equal(report("--help", out, sizeof out), 0);
    assert_non_null(strstr(out, "--over-time"));
    /* no cap on the windows (comparing dumps stops at 32); 40 copies (one file twice is refused) */
    size_t at = 0;
    for (int i = 0; i < 40; i++) {
        char copy[64], cmd[2400];
        snprintf(copy, sizeof copy, "copy_%d.json", i);
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", a, path_of(copy));
        assert_int_equal(system(cmd), 0);
        at += (size_t)snprintf(args + at, sizeof args - at, "%s ", path_of(copy));
    }
    snprintf(args + at, sizeof args - at, "--over-time --ep-size 2 --out %s", path_of("many.json"));
    assert_int_equal(report(args, out, sizeof out), 0);
    cJSON *j = load_json(path_of("many.json"));
    assert_int_equal((int)num(j, "num_windows"), 40);
    cJSON_Delete(j);
    args[at] = '\0';
    snprintf(args + at, sizeof args - at, "--out %s", path_of("many.png"));
    assert_int_equal(report(args, out, sizeof out), 2);
    assert_non_null(strstr(out, "more than 32"));
}

/* ---- file names ---- */

static void test_stamp_of_names(void **state) {
    (void)state;
    int64_t ms;
    int k;
    assert_int_equal(mt_over_time_stamp("expert_distribution_1796408174183.json", &ms, &k), 0);
    assert_true(ms == 1796408174183LL && k == 0);
    assert_int_equal(mt_over_time_stamp("/a/b_c/expert_distribution_12_3.json", &ms, &k), 0);
    assert_true(ms == 12 && k == 3);
    assert_int_equal(mt_over_time_stamp("expert_distribution_999999999999999999.json", &ms, &k), 0);
    static const char *const BAD[] = {
        "", "/", "expert_distribution_.json", "expert_distribution_12a.json", "expert_distribution_12.json.bak",
        "expert_distribution_12_.json", "expert_distribution_12_3_4.json", "x_expert_distribution_12.json",
        "expert_distribution_1234567890123456789.json", "expert_distribution_1_1234567890.json",
        "expert_distribution_-5.json", "expert_distribution_+5.json", "expert_distribution_ 5.json",
        "expert_distribution_5.JSON", "expert_distribution_5", "expert_placement_5.json", "expert_distribution_5/",
        "expert_distribution_5.json/x.json",
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++)
        if (mt_over_time_stamp(BAD[i], &ms, &k) == 0) fail_msg("\"%s\" has a stamp %lld", BAD[i], (long long)ms);
    /* random names around the pattern: never a crash, and a stamp only of the form */
    static const char ALPHA[] = "0123456789_./-json";
    uint32_t x = 7;
    char name[96];
    for (int round = 0; round < 20000; round++) {
        int len = snprintf(name, sizeof name, "%s", round % 2 ? "expert_distribution_" : "");
        int extra = (int)((x = x * 1664525u + 1013904223u) >> 27);
        for (int i = 0; i < extra && len < (int)sizeof name - 1; i++)
            name[len++] = ALPHA[(x = x * 1664525u + 1013904223u) % (sizeof ALPHA - 1)];
        name[len] = '\0';
        if (mt_over_time_stamp(name, &ms, &k) == 0) {
            char again[96];
            if (k) snprintf(again, sizeof again, "%lld_%d.json", (long long)ms, k);
            else snprintf(again, sizeof again, "%lld.json", (long long)ms);
            const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
            assert_true(ms >= 0 && k >= 0);
            assert_true(strlen(base) >= strlen(again)); /* leading zeros may make it longer */
            assert_string_equal(base + strlen(base) - 5, ".json");
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serve_series),
        cmocka_unit_test(test_order_by_stamp),
        cmocka_unit_test(test_no_placement_needs_ep_size),
        cmocka_unit_test(test_placements_and_plans),
        cmocka_unit_test(test_unstamped_in_given_order),
        cmocka_unit_test(test_mixed_refused),
        cmocka_unit_test(test_usage),
        cmocka_unit_test(test_stamp_of_names),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
