/* Expert placements without a model: loading and validating (trivial, placement JSON in both row
 * layouts, stat dumps planned with EPLB), every bad input naming its problem, the JSON round trip,
 * the dispatch rule (deterministic, balanced, token-local), and the recorder's physical counts from
 * synthetic events (windows, per_pass, dumps read back and cross-checked). */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "tmp_dir.h"

#include "routing/eplb.h"
#include "routing/placement.h"
#include "routing/recorder.h"
#include "routing/stat_dump.h"
#include "util/json_util.h"

enum { L = 4, E = 8, K = 2 };


/* 4 hidden layers, layer 0 dense, 8 experts, top-2 (the shape of the recorder tests). */
static mt_config make_cfg(void) {
    mt_config c;
    memset(&c, 0, sizeof c);
    c.num_hidden_layers = L;
    c.num_experts = E;
    c.top_k = K;
    for (int l = 1; l < L; l++) c.layer_is_moe[l] = true;
    c.num_moe_layers = L - 1;
    return c;
}

static mt_moe_shape make_shape(void) {
    mt_config c = make_cfg();
    mt_moe_shape s;
    mt_moe_shape_from_config(&c, &s);
    return s;
}

/* 3 MoE rows of 12 slots on 4 GPUs: experts 0, 1, 2, 3 have 2 replicas in row 0 (0 and 1 in rows 1, 2
 * have 3). */
#define GOOD_ROWS "[[0,1,2,3,4,5,6,7,0,1,2,3],[0,1,2,3,4,5,6,7,0,1,0,1],[7,6,5,4,3,2,1,0,0,1,1,0]]"

static void expect_load_error(const char *name, const char *text, const mt_placement_opts *o, const char *needle) {
    write_text(name, text);
    mt_moe_shape s = make_shape();
    mt_placement p;
    mt_err err = {{0}};
    assert_int_equal(mt_placement_load(path_of(name), &s, o, &p, &err), -1);
    if (!strstr(err.msg, needle)) fail_msg("%s: expected '%s' in: %s", name, needle, err.msg);
    assert_non_null(strstr(err.msg, name)); /* the message names the file */
}

/* ---- loading ---- */

static void test_trivial(void **state) {
    (void)state;
    mt_moe_shape s = make_shape();
    mt_placement p;
    mt_err err = {{0}};
    mt_placement_opts o = {.ep_size = 4, .num_redundant = -1};
    assert_int_equal(mt_placement_load("trivial", &s, &o, &p, &err), 0);
    assert_int_equal(p.num_physical, E);
    assert_int_equal(p.slots_per_gpu, 2);
    assert_int_equal(p.max_replicas, 1);
    assert_string_equal(p.source, "trivial");
    assert_int_equal(p.row_of[0], -1);
    assert_int_equal(p.row_of[3], 2);
    for (int e = 0; e < E; e++) {
        assert_int_equal(mt_placement_slot(&p, 2, e, 17, 5), e); /* one replica: its own slot */
        assert_int_equal(mt_placement_gpu_of(&p, e), e / 2);
    }
    assert_int_equal(mt_placement_slot(&p, 0, 1, 17, 5), -1); /* dense layer */
    mt_placement_free(&p);
    o.ep_size = 3;
    assert_int_equal(mt_placement_load("trivial", &s, &o, &p, &err), -1);
    assert_non_null(strstr(err.msg, "does not divide num_experts 8"));
    o.ep_size = 0;
    assert_int_equal(mt_placement_load("trivial", &s, &o, &p, &err), -1);
    assert_non_null(strstr(err.msg, "--ep-size"));
}

static void test_file_layouts(void **state) {
    (void)state;
    mt_moe_shape s = make_shape();
    mt_placement p;
    mt_err err = {{0}};
    /* one row per MoE layer (SPEC §6) */
    write_text("moe_rows.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"num_replicas\": 12,"
                                " \"num_experts\": 8, \"moe_layers\": [1, 2, 3], \"physical_to_logical_map\": " GOOD_ROWS "}");
    assert_int_equal(mt_placement_load(path_of("moe_rows.json"), &s, NULL, &p, &err), 0);
    assert_int_equal(p.num_gpus, 4);
    assert_int_equal(p.num_physical, 12);
    assert_int_equal(p.slots_per_gpu, 3);
    assert_int_equal(p.max_replicas, 3);
    assert_string_equal(p.source, "file");
    /* log2phy: ascending slots, -1 padded; logcnt counted from the rows */
    const int32_t *l2p = p.log2phy + ((size_t)1 * E + 0) * 3; /* row 1, expert 0 */
    assert_int_equal(l2p[0], 0);
    assert_int_equal(l2p[1], 8);
    assert_int_equal(l2p[2], 10);
    assert_int_equal(p.logcnt[1 * E + 0], 3);
    assert_int_equal(p.logcnt[1 * E + 4], 1);
    assert_int_equal(p.log2phy[((size_t)1 * E + 4) * 3 + 1], -1);
    mt_placement q;
    /* one row per hidden layer (SGLang's layout): the dense row's content is ignored */
    write_text("hidden_rows.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\":"
                                   " [[9,9,9,9,9,9,9,9,9,9,9,9],[0,1,2,3,4,5,6,7,0,1,2,3],[0,1,2,3,4,5,6,7,0,1,0,1],"
                                   "[7,6,5,4,3,2,1,0,0,1,1,0]]}");
    assert_int_equal(mt_placement_load(path_of("hidden_rows.json"), &s, NULL, &q, &err), 0);
    assert_memory_equal(p.phy2log, q.phy2log, 3 * 12 * sizeof(int32_t));
    mt_placement_free(&q);

    /* to_json -> from_json gives the same placement */
    cJSON *j = mt_placement_to_json(&p);
    assert_non_null(j);
    assert_int_equal(mt_placement_from_json(j, "roundtrip", &s, 4, &q, &err), 0);
    assert_memory_equal(p.phy2log, q.phy2log, 3 * 12 * sizeof(int32_t));
    assert_memory_equal(p.log2phy, q.log2phy, 3 * 8 * 3 * sizeof(int32_t));
    cJSON_Delete(j);
    mt_placement_free(&q);

    /* matching --ep-size and --ep-num-redundant-experts are accepted */
    mt_placement_opts o = {.ep_size = 4, .num_redundant = 4};
    assert_int_equal(mt_placement_load(path_of("moe_rows.json"), &s, &o, &q, &err), 0);
    mt_placement_free(&q);
    mt_placement_free(&p);

    /* the model config must match what the engine checks */
    mt_config c = make_cfg();
    assert_int_equal(mt_placement_load(path_of("moe_rows.json"), &s, NULL, &p, &err), 0);
    assert_int_equal(mt_placement_fits(&p, &c, &err), 0);
    c.num_experts = 16;
    assert_int_equal(mt_placement_fits(&p, &c, &err), -1);
    c = make_cfg();
    c.layer_is_moe[0] = true;
    assert_int_equal(mt_placement_fits(&p, &c, &err), -1);
    assert_non_null(strstr(err.msg, "layer 0"));
    mt_placement_free(&p);
}

static void test_bad_files(void **state) {
    (void)state;
    mt_placement_opts none = {0, -1};
    expect_load_error("fmt.json", "{\"format\": \"x\", \"num_gpus\": 4, \"physical_to_logical_map\": " GOOD_ROWS "}",
                      &none, "\"format\" must be");
    expect_load_error("json.json", "{\"format\": ", &none, "json.json");
    expect_load_error("gpus.json", "{\"format\": \"moetrace.placement.v1\", \"physical_to_logical_map\": " GOOD_ROWS "}",
                      &none, "num_gpus");
    expect_load_error("layers.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4,"
                      " \"physical_to_logical_map\": [[0,1,2,3,4,5,6,7],[0,1,2,3,4,5,6,7]]}",
                      &none, "has 2 rows; the model has 3 MoE layers (of 4 hidden layers)");
    expect_load_error("experts.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"num_experts\": 16,"
                      " \"physical_to_logical_map\": " GOOD_ROWS "}", &none, "\"num_experts\" is 16 but the model has num_experts 8");
    expect_load_error("range.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\":"
                      " [[0,1,2,3,4,5,6,7,8,1,2,3],[0,1,2,3,4,5,6,7,0,1,0,1],[7,6,5,4,3,2,1,0,0,1,1,0]]}",
                      &none, "physical_to_logical_map[0][8] = 8 is not a logical expert of the model (num_experts 8)");
    expect_load_error("norep.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\":"
                      " [[0,1,2,3,4,5,6,7,0,1,2,3],[0,1,2,3,4,5,6,6,0,1,0,1],[7,6,5,4,3,2,1,0,0,1,1,0]]}",
                      &none, "physical_to_logical_map[1] has no replica of logical expert 7");
    expect_load_error("norep_hidden.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\":"
                      " [[],[0,1,2,3,4,5,6,7,0,1,2,3],[0,1,2,3,4,5,6,6,0,1,0,1],[7,6,5,4,3,2,1,0,0,1,1,0]]}",
                      &none, "physical_to_logical_map[2] has no replica of logical expert 7"); /* the file's row */
    expect_load_error("div.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 5, \"physical_to_logical_map\": "
                      GOOD_ROWS "}", &none, "12 physical slots per layer are not divisible by num_gpus (ep size) 5");
    expect_load_error("ragged.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\":"
                      " [[0,1,2,3,4,5,6,7,0,1,2,3],[0,1,2,3,4,5,6,7],[7,6,5,4,3,2,1,0,0,1,1,0]]}",
                      &none, "physical_to_logical_map[1] must be an array of 12 slots");
    expect_load_error("nonint.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\":"
                      " [[0,1,2,3,4,5,6,7,0,1,2,\"3\"],[0,1,2,3,4,5,6,7,0,1,0,1],[7,6,5,4,3,2,1,0,0,1,1,0]]}",
                      &none, "physical_to_logical_map[0][11] must be an integer");
    expect_load_error("moel.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"moe_layers\": [0, 1, 2],"
                      " \"physical_to_logical_map\": " GOOD_ROWS "}", &none, "\"moe_layers\" differ");
    expect_load_error("nrep.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"num_replicas\": 16,"
                      " \"physical_to_logical_map\": " GOOD_ROWS "}", &none, "\"num_replicas\" is 16");
    /* found by fuzz/fuzz_placement.c: the value was cast to int first (undefined beyond int's range) */
    expect_load_error("bigexp.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"num_experts\": 1e78,"
                      " \"physical_to_logical_map\": " GOOD_ROWS "}", &none, "\"num_experts\" is 1e+78 but");
    expect_load_error("bigrep.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"num_replicas\": 4294967308,"
                      " \"physical_to_logical_map\": " GOOD_ROWS "}", &none, "\"num_replicas\" is 4294967308 but");
    mt_placement_opts ep2 = {.ep_size = 2, .num_redundant = -1};
    expect_load_error("ep.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\": "
                      GOOD_ROWS "}", &ep2, "--ep-size 2 differs from the placement's num_gpus 4");
    mt_placement_opts red = {.ep_size = 0, .num_redundant = 8};
    expect_load_error("red.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\": "
                      GOOD_ROWS "}", &red, "has 4 redundant experts, not --ep-num-redundant-experts 8");
    mt_moe_shape s = make_shape();
    mt_placement p;
    mt_err err = {{0}};
    assert_int_equal(mt_placement_load(path_of("missing.json"), &s, NULL, &p, &err), -1);
    assert_non_null(strstr(err.msg, "missing.json"));
}

/* A stat dump of the test shape with skewed counts. */
static void write_dump(const char *name, int E_dump) {
    char buf[4096];
    int at = snprintf(buf, sizeof buf, "{\"format\": \"moetrace.expert_distribution.v1\", \"mode\": \"stat\","
                                       " \"num_hidden_layers\": 4, \"moe_layers\": [1, 2, 3], \"num_experts\": %d,"
                                       " \"logical_count\": [", E_dump);
    for (int l = 0; l < L; l++) {
        at += snprintf(buf + at, sizeof buf - at, "%s[", l ? "," : "");
        for (int e = 0; e < E_dump; e++)
            at += snprintf(buf + at, sizeof buf - at, "%s%d", e ? "," : "", l ? 10 + (e * 37 + l * 11) % 53 + (e == l ? 400 : 0) : 0);
        at += snprintf(buf + at, sizeof buf - at, "]");
    }
    snprintf(buf + at, sizeof buf - at, "]}");
    write_text(name, buf);
}

static void test_stat_dump_planned(void **state) {
    (void)state;
    write_dump("dump.json", E);
    mt_moe_shape s = make_shape();
    mt_placement p;
    mt_err err = {{0}};
    mt_placement_opts o = {.ep_size = 4, .num_redundant = 4};
    assert_int_equal(mt_placement_load(path_of("dump.json"), &s, &o, &p, &err), 0);
    assert_string_equal(p.source, "eplb");
    assert_int_equal(p.num_physical, 12);
    /* the same plan as the planner on the dump's MoE rows */
    mt_stat_dump d;
    assert_int_equal(mt_stat_dump_load(path_of("dump.json"), &d, &err), 0);
    double w[3 * E];
    for (int i = 0; i < 3 * E; i++) w[i] = (double)d.moe_count[i];
    mt_eplb_params ep = {.num_replicas = 12, .num_groups = 1, .num_nodes = 1, .num_gpus = 4};
    mt_eplb_plan plan;
    assert_int_equal(mt_eplb_plan_compute(w, 3, E, &ep, &plan, &err), 0);
    assert_memory_equal(plan.phy2log, p.phy2log, 3 * 12 * sizeof(int32_t));
    /* the hot expert of each layer got the redundant slots */
    assert_true(p.logcnt[0 * E + 1] > 1 && p.logcnt[1 * E + 2] > 1 && p.logcnt[2 * E + 3] > 1);
    mt_eplb_plan_free(&plan);
    mt_stat_dump_free(&d);
    mt_placement_free(&p);
    /* default: no redundant experts */
    o.num_redundant = -1;
    assert_int_equal(mt_placement_load(path_of("dump.json"), &s, &o, &p, &err), 0);
    assert_int_equal(p.num_physical, E);
    mt_placement_free(&p);

    mt_placement_opts noep = {.ep_size = 0, .num_redundant = -1};
    assert_int_equal(mt_placement_load(path_of("dump.json"), &s, &noep, &p, &err), -1);
    assert_non_null(strstr(err.msg, "needs --ep-size"));
    mt_placement_opts bad = {.ep_size = 3, .num_redundant = 0};
    assert_int_equal(mt_placement_load(path_of("dump.json"), &s, &bad, &p, &err), -1);
    assert_non_null(strstr(err.msg, "cannot plan 8 experts + 0 redundant on 3 GPUs"));
    write_dump("dump16.json", 16);
    assert_int_equal(mt_placement_load(path_of("dump16.json"), &s, &o, &p, &err), -1);
    assert_non_null(strstr(err.msg, "is not the model's"));
}

/* ---- dispatch ---- */

static void test_dispatch_balanced(void **state) {
    (void)state;
    mt_moe_shape s = make_shape();
    mt_placement p;
    mt_err err = {{0}};
    write_text("bal.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\": " GOOD_ROWS "}");
    assert_int_equal(mt_placement_load(path_of("bal.json"), &s, NULL, &p, &err), 0);
    /* row 0 (layer 1): expert 0 in slots 0 and 8; row 1 (layer 2): expert 0 in slots 0, 8, 10 */
    int hit2[12] = {0}, hit3[12] = {0}, n = 0;
    for (int32_t pos = 0; pos < 100; pos++)
        for (int32_t tok = 0; tok < 60; tok++, n++) {
            int32_t a = mt_placement_slot(&p, 1, 0, tok, pos), b = mt_placement_slot(&p, 2, 0, tok, pos);
            assert_int_equal(a, mt_placement_slot(&p, 1, 0, tok, pos)); /* deterministic */
            assert_true(a == 0 || a == 8);
            assert_true(b == 0 || b == 8 || b == 10);
            hit2[a]++;
            hit3[b]++;
            assert_int_equal(mt_placement_slot(&p, 1, 4, tok, pos), 4); /* one replica */
        }
    /* 6000 draws: each replica within 3% of its share */
    assert_true(abs(hit2[0] - n / 2) < n * 3 / 100 && abs(hit2[8] - n / 2) < n * 3 / 100);
    for (int k = 0; k < 3; k++) {
        int slot = k == 0 ? 0 : k == 1 ? 8 : 10;
        assert_true(abs(hit3[slot] - n / 3) < n * 3 / 100);
    }
    /* one sequence (token ids varying, positions 0..599): still about half each */
    int a0 = 0;
    for (int32_t pos = 0; pos < 600; pos++) a0 += mt_placement_slot(&p, 1, 0, (pos * 131 + 7) % 500, pos) == 0;
    assert_true(a0 > 240 && a0 < 360);
    /* the batch form gives each token's own slot, whatever its neighbours */
    int32_t ids[6] = {0, 4, 1, 0, 0, 5}, tok[3] = {11, 12, 13}, pos[3] = {3, 4, 5}, phys[6], one[2];
    mt_placement_dispatch(&p, 1, 3, 2, ids, tok, pos, phys);
    for (int t = 0; t < 3; t++) {
        mt_placement_dispatch(&p, 1, 1, 2, ids + 2 * t, tok + t, pos + t, one);
        assert_int_equal(one[0], phys[2 * t]);
        assert_int_equal(one[1], phys[2 * t + 1]);
        for (int j = 0; j < 2; j++) assert_int_equal(p.phy2log[phys[2 * t + j]], ids[2 * t + j]);
    }
    int32_t bad[2] = {-1, 8};
    mt_placement_dispatch(&p, 1, 1, 2, bad, tok, pos, one);
    assert_int_equal(one[0], -1);
    assert_int_equal(one[1], -1);
    mt_placement_dispatch(&p, 0, 1, 2, ids, tok, pos, one); /* dense layer */
    assert_int_equal(one[0], -1);
    mt_placement_free(&p);
}

/* ---- recorder: physical counts from synthetic events ---- */

static int32_t route_of(int p, int t, int l, int j) { return (int32_t)((p * 7 + t * 3 + l * 5 + j * 3) % E); }

/* One pass of n tokens with logical ids and their dispatch under plc. */
static void feed(mt_routing_sink s, const mt_placement *plc, int p, int n, int64_t *logical) {
    int32_t seq[64], pos[64], tok[64], ids[64 * K], phys[64 * K];
    for (int t = 0; t < n; t++) {
        seq[t] = 0;
        pos[t] = p * 64 + t;
        tok[t] = 1000 + t;
    }
    for (int l = 1; l < L; l++) {
        for (int t = 0; t < n; t++)
            for (int j = 0; j < K; j++) {
                ids[t * K + j] = route_of(p, t, l, j);
                if (logical) logical[l * E + ids[t * K + j]]++;
            }
        mt_placement_dispatch(plc, l, n, K, ids, tok, pos, phys);
        mt_routing_event ev = {.layer = l, .n_tokens = n, .top_k = K, .seq_ids = seq, .positions = pos,
                               .tokens = tok, .topk_ids = ids, .phys_ids = phys};
        s.on_layer(s.ctx, &ev);
    }
    mt_pass_event pe = {.n_tokens = n, .num_seqs_in_pass = 1};
    s.on_pass(s.ctx, &pe);
}

/* physical [L, R] adds up, per expert, to logical [L, E]; dense rows are zero. */
static void check_adds_up(const mt_placement *p, const int64_t *phys, const int64_t *logical) {
    int R = p->num_physical;
    for (int l = 0; l < L; l++) {
        int64_t sum[E] = {0};
        for (int s = 0; s < R; s++) {
            if (p->row_of[l] < 0) {
                assert_int_equal(phys[l * R + s], 0);
                continue;
            }
            sum[p->phy2log[p->row_of[l] * R + s]] += phys[l * R + s];
        }
        for (int e = 0; e < E; e++) assert_int_equal(sum[e], logical[l * E + e]);
    }
}

static void test_recorder_physical(void **state) {
    (void)state;
    mt_moe_shape s = make_shape();
    mt_placement plc;
    mt_err err = {{0}};
    write_text("rec.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\": " GOOD_ROWS "}");
    assert_int_equal(mt_placement_load(path_of("rec.json"), &s, NULL, &plc, &err), 0);
    mt_config c = make_cfg();
    mt_recorder_opts o;
    mt_recorder_opts_default(&o);
    o.placement = &plc;
    o.buffer_size = 2; /* a window of 2 passes: evictions must keep both channels in step */
    o.dump_dir = g_dir;
    mt_recorder *r = mt_recorder_new(&c, "tiny", &o, &err);
    assert_non_null(r);
    mt_recorder_start(r);
    int64_t logical[L * E], phys[L * 12], want[L * E];
    memset(want, 0, sizeof want);
    feed(mt_recorder_sink(r), &plc, 0, 5, NULL);
    feed(mt_recorder_sink(r), &plc, 1, 9, want);
    feed(mt_recorder_sink(r), &plc, 2, 40, want);
    mt_recorder_logical_count(r, logical);
    assert_memory_equal(logical, want, sizeof want);
    assert_int_equal(mt_recorder_physical_count(r, phys), 0);
    check_adds_up(&plc, phys, logical);
    mt_recorder_counts rc;
    mt_recorder_get_counts(r, &rc);
    assert_true(rc.pass_balancedness > 0 && rc.pass_balancedness <= 1.0);

    /* the dump: fields present, read back (the reader cross-checks physical against logical) */
    char path[1024];
    assert_int_equal(mt_recorder_dump(r, path, sizeof path, &err), 0);
    cJSON *j = mt_json_load_file(path, &err);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "ep_size")->valueint, 4);
    cJSON *gl = cJSON_GetObjectItem(j, "gpu_load");
    assert_int_equal(cJSON_GetArraySize(gl), L);
    int64_t row_sum = 0;
    for (int g = 0; g < 4; g++) row_sum += (int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(gl, 2), g)->valuedouble;
    assert_int_equal(row_sum, (9 + 40) * K);
    assert_non_null(cJSON_GetObjectItem(j, "balancedness_contiguous"));
    assert_non_null(cJSON_GetObjectItem(j, "pass_balancedness"));
    cJSON_Delete(j);
    mt_stat_dump d;
    assert_int_equal(mt_stat_dump_load(path, &d, &err), 0);
    assert_non_null(d.placement);
    assert_non_null(d.phys_count);
    assert_int_equal(d.placement->num_gpus, 4);
    assert_memory_equal(d.placement->phy2log, plc.phy2log, 3 * 12 * sizeof(int32_t));
    for (int m = 0; m < 3; m++)
        for (int k = 0; k < 12; k++) assert_int_equal(d.phys_count[m * 12 + k], phys[(m + 1) * 12 + k]);
    mt_stat_dump_free(&d);
    mt_recorder_get_counts(r, &rc);
    assert_int_equal(rc.num_forward_passes, 0); /* the dump reset the window */
    assert_int_equal(mt_recorder_physical_count(r, phys), 0);
    for (int i = 0; i < L * 12; i++) assert_int_equal(phys[i], 0);
    mt_recorder_free(r);

    /* per_pass: each pass carries its physical counts and balancedness */
    o.mode = MT_REC_PER_PASS;
    o.buffer_size = -1;
    r = mt_recorder_new(&c, "tiny", &o, &err);
    assert_non_null(r);
    mt_recorder_start(r);
    feed(mt_recorder_sink(r), &plc, 0, 3, NULL);
    feed(mt_recorder_sink(r), &plc, 1, 4, NULL);
    j = mt_recorder_dump_json(r, false, &err);
    assert_non_null(j);
    cJSON *passes = cJSON_GetObjectItem(j, "passes");
    assert_int_equal(cJSON_GetArraySize(passes), 2);
    cJSON *p1 = cJSON_GetArrayItem(passes, 1);
    cJSON *pc = cJSON_GetObjectItem(p1, "physical_count");
    int64_t tot = 0;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 12; k++) tot += (int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(pc, l), k)->valuedouble;
    assert_int_equal(tot, 4 * K * 3);
    assert_non_null(cJSON_GetObjectItem(p1, "balancedness"));
    cJSON_Delete(j);
    mt_recorder_free(r);

    /* ep_size must agree with the placement; the placement must fit the model */
    o.ep_size = 2;
    assert_null(mt_recorder_new(&c, "tiny", &o, &err));
    assert_non_null(strstr(err.msg, "num_gpus 4"));
    o.ep_size = 0;
    c.num_experts = 16;
    assert_null(mt_recorder_new(&c, "tiny", &o, &err));
    mt_placement_free(&plc);
}

/* A window taken from a recorder (mt_recorder_take) dumps as the recorder would have, under the
 * placement it was recorded with even once the recorder runs another and the first is freed (as
 * the server frees a placement it switched away from); the recorder goes on from empty. */
static void test_recorder_take(void **state) {
    (void)state;
    mt_moe_shape s = make_shape();
    mt_placement plc, *first = malloc(sizeof *first), next;
    mt_err err = {{0}};
    write_text("take.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\": " GOOD_ROWS "}");
    assert_int_equal(mt_placement_load(path_of("take.json"), &s, NULL, &plc, &err), 0);
    assert_int_equal(mt_placement_load(path_of("take.json"), &s, NULL, &next, &err), 0);
    mt_recorder_mode modes[3] = {MT_REC_STAT, MT_REC_PER_PASS, MT_REC_PER_TOKEN};
    for (int m = 0; m < 3; m++) {
        assert_int_equal(mt_placement_copy(&plc, first), 0);
        mt_config c = make_cfg();
        mt_recorder_opts o;
        mt_recorder_opts_default(&o);
        o.mode = modes[m];
        o.buffer_size = 3;
        o.dump_dir = g_dir;
        o.placement = first;
        mt_recorder *r = mt_recorder_new(&c, "tiny", &o, &err);
        o.placement = &plc;
        mt_recorder *ref = mt_recorder_new(&c, "tiny", &o, &err);
        assert_non_null(r);
        assert_non_null(ref);
        mt_recorder_start(r);
        mt_recorder_start(ref);
        for (int p = 0; p < 5; p++) {
            feed(mt_recorder_sink(r), first, p, 3 + p, NULL);
            feed(mt_recorder_sink(ref), &plc, p, 3 + p, NULL);
        }
        mt_recorder *t = mt_recorder_take(r, &err);
        assert_non_null(t);
        assert_false(mt_recorder_active(t));
        assert_true(mt_recorder_active(r));
        assert_int_equal(mt_recorder_set_placement(r, &next, &err), 0);
        mt_placement_free(first); /* what t dumps must not need it */
        cJSON *want = mt_recorder_dump_json(ref, true, &err), *got = mt_recorder_dump_json(t, true, &err);
        assert_non_null(want);
        assert_non_null(got);
        char *w = cJSON_PrintUnformatted(want), *g = cJSON_PrintUnformatted(got);
        assert_string_equal(g, w);
        free(w);
        free(g);
        cJSON_Delete(want);
        cJSON_Delete(got);
        char path[1024];
        assert_int_equal(mt_recorder_dump(t, path, sizeof path, &err), 0); /* into the recorder's dir */
        assert_non_null(strstr(path, g_dir));
        mt_recorder_free(t);
        mt_recorder_counts rc;
        mt_recorder_get_counts(r, &rc);
        assert_int_equal(rc.num_forward_passes, 0);
        assert_int_equal(rc.tokens_recorded, 0);
        int64_t logical[L * E], phys[L * 12], want_logical[L * E] = {0};
        feed(mt_recorder_sink(r), &next, 9, 4, want_logical); /* r records on, under next */
        mt_recorder_logical_count(r, logical);
        assert_memory_equal(logical, want_logical, sizeof logical);
        assert_int_equal(mt_recorder_physical_count(r, phys), 0);
        check_adds_up(&next, phys, logical);
        mt_recorder_free(r);
        mt_recorder_free(ref);
    }
    free(first);
    mt_placement_free(&plc);
    mt_placement_free(&next);
}

/* A twin made ahead (mt_recorder_prepare_twin, as serve makes them off the engine thread) is the one
 * the next take hands out, and takes the same window; one made before a placement switch is not handed
 * out (it copied the old placement): the take after the switch dumps under the new one. */
static void test_recorder_twin_ahead(void **state) {
    (void)state;
    mt_moe_shape s = make_shape();
    mt_placement a, b;
    mt_err err = {{0}};
    write_text("ahead_a.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\": " GOOD_ROWS "}");
    write_text("ahead_b.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\": "
                               "[[7,6,5,4,3,2,1,0,7,6,5,4],[0,1,2,3,4,5,6,7,0,1,0,1],[0,1,2,3,4,5,6,7,0,1,2,3]]}");
    assert_int_equal(mt_placement_load(path_of("ahead_a.json"), &s, NULL, &a, &err), 0);
    assert_int_equal(mt_placement_load(path_of("ahead_b.json"), &s, NULL, &b, &err), 0);
    mt_recorder_mode modes[3] = {MT_REC_STAT, MT_REC_PER_PASS, MT_REC_PER_TOKEN};
    for (int m = 0; m < 3; m++) {
        mt_config c = make_cfg();
        mt_recorder_opts o;
        mt_recorder_opts_default(&o);
        o.mode = modes[m];
        o.buffer_size = 3;
        o.dump_dir = g_dir;
        o.placement = &a;
        mt_recorder *r = mt_recorder_new(&c, "tiny", &o, &err), *ref_a = mt_recorder_new(&c, "tiny", &o, &err);
        o.placement = &b;
        mt_recorder *ref_b = mt_recorder_new(&c, "tiny", &o, &err);
        assert_non_null(r);
        assert_non_null(ref_a);
        assert_non_null(ref_b);
        mt_recorder_start(r);
        mt_recorder_start(ref_a);
        mt_recorder_start(ref_b);
        assert_int_equal(mt_recorder_prepare_twin(r, &err), 0);
        assert_int_equal(mt_recorder_prepare_twin(r, &err), 0); /* one is ready: nothing made */
        for (int p = 0; p < 4; p++) {
            feed(mt_recorder_sink(r), &a, p, 2 + p, NULL);
            feed(mt_recorder_sink(ref_a), &a, p, 2 + p, NULL);
            feed(mt_recorder_sink(ref_b), &b, p, 2 + p, NULL); /* its passes counted, as r's are */
        }
        mt_recorder_reset(ref_b); /* what the switch drops */
        mt_recorder *t = mt_recorder_take(r, &err);
        assert_non_null(t);
        assert_false(mt_recorder_active(t));
        mt_recorder *pair[2][2] = {{t, ref_a}, {NULL, ref_b}};
        /* made ahead again, then the switch: the next take must not hand it out */
        assert_int_equal(mt_recorder_prepare_twin(r, &err), 0);
        assert_int_equal(mt_recorder_set_placement(r, &b, &err), 0);
        for (int p = 4; p < 7; p++) {
            feed(mt_recorder_sink(r), &b, p, 1 + p, NULL);
            feed(mt_recorder_sink(ref_b), &b, p, 1 + p, NULL);
        }
        assert_non_null(pair[1][0] = mt_recorder_take(r, &err));
        for (int k = 0; k < 2; k++) {
            cJSON *want = mt_recorder_dump_json(pair[k][1], true, &err), *got = mt_recorder_dump_json(pair[k][0], true, &err);
            assert_non_null(want);
            assert_non_null(got);
            char *w = cJSON_PrintUnformatted(want), *g = cJSON_PrintUnformatted(got);
            if (strcmp(g, w)) fail_msg("mode %d, window %d:\n%s\nwant\n%s", m, k, g, w);
            free(w);
            free(g);
            cJSON_Delete(want);
            cJSON_Delete(got);
            mt_recorder_free(pair[k][0]);
        }
        mt_recorder_free(r); /* with the twin made ahead after the second take, if any: freed with it */
        mt_recorder_free(ref_a);
        mt_recorder_free(ref_b);
    }
    mt_placement_free(&a);
    mt_placement_free(&b);
}

/* A dump whose physical counts do not add up to its logical counts is refused. */
static void test_dump_inconsistent(void **state) {
    (void)state;
    const char *head = "{\"format\": \"moetrace.expert_distribution.v1\", \"num_hidden_layers\": 4, \"moe_layers\": [1, 2, 3],"
                       " \"num_experts\": 8, \"logical_count\": [[0,0,0,0,0,0,0,0],[1,0,0,0,0,0,0,0],[0,0,0,0,0,0,0,0],"
                       "[0,0,0,0,0,0,0,0]], \"placement\": {\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4,"
                       " \"physical_to_logical_map\": [[0,1,2,3,4,5,6,7],[0,1,2,3,4,5,6,7],[0,1,2,3,4,5,6,7]]},";
    char buf[2048];
    snprintf(buf, sizeof buf, "%s \"physical_count\": [[0,0,0,0,0,0,0,0],[1,0,0,0,0,0,0,0],[0,0,0,0,0,0,0,0],"
                              "[0,0,0,0,0,0,0,0]]}", head);
    write_text("ok_dump.json", buf);
    mt_stat_dump d;
    mt_err err = {{0}};
    assert_int_equal(mt_stat_dump_load(path_of("ok_dump.json"), &d, &err), 0);
    mt_stat_dump_free(&d);
    snprintf(buf, sizeof buf, "%s \"physical_count\": [[0,0,0,0,0,0,0,0],[0,1,0,0,0,0,0,0],[0,0,0,0,0,0,0,0],"
                              "[0,0,0,0,0,0,0,0]]}", head);
    write_text("bad_dump.json", buf);
    assert_int_equal(mt_stat_dump_load(path_of("bad_dump.json"), &d, &err), -1);
    assert_non_null(strstr(err.msg, "physical_count[1] gives expert 0 0 tokens, logical_count[1] 1"));
    snprintf(buf, sizeof buf, "%s \"x\": 0}", head);
    write_text("half_dump.json", buf);
    assert_int_equal(mt_stat_dump_load(path_of("half_dump.json"), &d, &err), -1);
    assert_non_null(strstr(err.msg, "\"placement\" without \"physical_count\""));
}

/* A dump claiming 100000 MoE layers x 1000000 experts but holding no counts is refused before
 * anything of that size is allocated (it was: 800 GB, then "out of memory", or an abort). */
static void test_dump_claims_more_than_it_holds(void **state) {
    (void)state;
    enum { LAYERS = 100000 };
    char *buf = malloc((size_t)LAYERS * 12 + 512), *p = buf;
    assert_non_null(buf);
    p += sprintf(p, "{\"format\": \"moetrace.expert_distribution.v1\", \"num_hidden_layers\": %d,"
                    " \"num_experts\": 1000000, \"moe_layers\": [", LAYERS);
    for (int l = 0; l < LAYERS; l++) p += sprintf(p, "%s%d", l ? "," : "", l);
    p += sprintf(p, "], \"logical_count\": [");
    for (int l = 0; l < LAYERS; l++) p += sprintf(p, "%s[]", l ? "," : "");
    sprintf(p, "]}");
    mt_stat_dump d;
    mt_err err = {{0}};
    assert_int_equal(mt_stat_dump_parse(buf, strlen(buf), "claims.json", &d, &err), -1);
    if (!strstr(err.msg, "logical_count[0] must be an array of num_experts = 1000000 counts")) fail_msg("%s", err.msg);
    free(buf);
}

static int setup(void **state) {
    (void)state;
    return tmp_dir_make("placement_test_");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trivial),
        cmocka_unit_test(test_file_layouts),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_stat_dump_planned),
        cmocka_unit_test(test_dispatch_balanced),
        cmocka_unit_test(test_recorder_physical),
        cmocka_unit_test(test_recorder_take),
        cmocka_unit_test(test_recorder_twin_ahead),
        cmocka_unit_test(test_dump_inconsistent),
        cmocka_unit_test(test_dump_claims_more_than_it_holds),
    };
    return cmocka_run_group_tests(tests, setup, tmp_dir_teardown);
}
