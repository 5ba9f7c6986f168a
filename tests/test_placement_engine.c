/* The engine running an expert placement (virtual GPUs on the CPU), on the qwen3_moe fixture (8
 * experts, top-2, layer 1 dense):
 *  - outputs (prompt logits bit for bit, tokens, logical routing) are those of the run without one;
 *  - every routed choice is dispatched to a replica of its own logical expert, token for token, so
 *    per-GPU counts add up to the logical counts (and the recorder's physical_count to its
 *    logical_count);
 *  - the dispatch of a request does not depend on what it was batched with;
 *  - placements that do not fit the model are refused by the engine and the forward pass;
 *  - `moetrace run` / `profile` with --ep-size / --init-expert-location end to end, bad flags. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "test_cli.h"
#include "test_files.h"
#include "tmp_dir.h"

#include "engine/engine.h"
#include "engine/generate.h"
#include "kernels/kernels.h"
#include "routing/placement.h"
#include "routing/recorder.h"
#include "routing/stat_dump.h"
#include "util/npy.h"

static mt_model g_model;

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"


/* 3 MoE layers (hidden 0, 2, 3), 12 slots on 4 GPUs: redundant replicas of experts 0..3, 0 and 1 (x3),
 * and 0 and 1. */
#define PLACEMENT_JSON                                                                                          \
    "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"num_replicas\": 12, \"physical_to_logical_map\":" \
    " [[0,1,2,3,4,5,6,7,0,1,2,3],[0,1,2,3,4,5,6,7,0,1,0,1],[7,6,5,4,3,2,1,0,0,1,1,0]]}"

static void load_placement(mt_placement *p) {
    write_text("plc.json", PLACEMENT_JSON);
    mt_moe_shape s;
    mt_moe_shape_from_config(&g_model.cfg, &s);
    mt_err err = {{0}};
    if (mt_placement_load(path_of("plc.json"), &s, NULL, p, &err)) fail_msg("%s", err.msg);
}

/* ---- one sequence through mt_generate ---- */

typedef struct gen_out {
    float *logits;
    int32_t tokens[32];
    int n;
    mt_routing_table routing, phys;
} gen_out;

static void generate(const int32_t *prompt, int n_prompt, const mt_placement *p, gen_out *o) {
    const mt_config *c = &g_model.cfg;
    memset(o, 0, sizeof *o);
    o->logits = malloc((size_t)n_prompt * c->vocab_size * sizeof(float));
    assert_int_equal(mt_routing_table_init(&o->routing, c->num_hidden_layers, c->top_k, 64), 0);
    assert_int_equal(mt_routing_table_init(&o->phys, c->num_hidden_layers, c->top_k, 64), 0);
    mt_routing_fanout fan = {0};
    mt_routing_fanout_add(&fan, mt_routing_table_sink(&o->routing));
    mt_routing_fanout_add(&fan, mt_routing_table_physical_sink(&o->phys));
    mt_routing_sink sink = mt_routing_fanout_sink(&fan);
    mt_generate_opts go = {.max_new_tokens = 12, .ignore_eos = true, .prompt_logits = o->logits, .sink = &sink,
                           .placement = p};
    mt_err err = {{0}};
    if (mt_generate(&g_model, prompt, n_prompt, &go, o->tokens, &o->n, &err)) fail_msg("%s", err.msg);
}

static void gen_free(gen_out *o) {
    free(o->logits);
    mt_routing_table_free(&o->routing);
    mt_routing_table_free(&o->phys);
}

static void test_generate_identical(void **state) {
    (void)state;
    const mt_config *c = &g_model.cfg;
    int L = c->num_hidden_layers, k = c->top_k, E = c->num_experts;
    int32_t prompt[40];
    for (int i = 0; i < 40; i++) prompt[i] = (int32_t)(3 + (i * 97 + 11) % 500);
    gen_out base, trivial, placed;
    generate(prompt, 40, NULL, &base);
    mt_placement triv, plc;
    mt_moe_shape s;
    mt_moe_shape_from_config(c, &s);
    mt_err err = {{0}};
    assert_int_equal(mt_placement_trivial(&s, 4, &triv, &err), 0);
    load_placement(&plc);
    generate(prompt, 40, &triv, &trivial);
    generate(prompt, 40, &plc, &placed);
    int rows = base.routing.rows;
    assert_int_equal(rows, 40 + 12 - 1);
    size_t cells = (size_t)rows * L * k;
    for (int v = 0; v < 2; v++) {
        gen_out *g = v ? &placed : &trivial;
        assert_memory_equal(g->logits, base.logits, (size_t)40 * c->vocab_size * sizeof(float));
        assert_int_equal(g->n, base.n);
        assert_memory_equal(g->tokens, base.tokens, (size_t)base.n * sizeof(int32_t));
        assert_int_equal(g->routing.rows, rows);
        assert_memory_equal(g->routing.ids, base.routing.ids, cells * sizeof(int32_t));
        assert_int_equal(g->phys.rows, rows);
    }
    /* without a placement, no physical slots reach the sink */
    for (size_t i = 0; i < cells; i++) assert_int_equal(base.phys.ids[i], -1);
    /* trivial: slot = expert */
    assert_memory_equal(trivial.phys.ids, base.routing.ids, cells * sizeof(int32_t));
    /* replicated: every choice went to a replica of its own expert; per-GPU counts add up */
    int64_t gpu[4] = {0}, logical_total = 0, per_expert[64 * 8] = {0}, per_slot[64 * 12] = {0};
    int split0 = 0, split0_total = 0;
    for (int t = 0; t < rows; t++)
        for (int l = 0; l < L; l++)
            for (int j = 0; j < k; j++) {
                size_t i = ((size_t)t * L + l) * k + j;
                int32_t e = base.routing.ids[i], slot = placed.phys.ids[i];
                if (!c->layer_is_moe[l]) {
                    assert_int_equal(slot, -1);
                    continue;
                }
                int row = plc.row_of[l];
                assert_true(slot >= 0 && slot < 12);
                assert_int_equal(plc.phy2log[row * 12 + slot], e);
                gpu[mt_placement_gpu_of(&plc, slot)]++;
                logical_total++;
                per_expert[l * E + e]++;
                per_slot[l * 12 + slot]++;
                if (l == 2 && e == 0) { /* expert 0 of layer 2 has 3 replicas: slots 0, 8, 10 */
                    split0_total++;
                    split0 += slot == 0;
                }
            }
    assert_int_equal(gpu[0] + gpu[1] + gpu[2] + gpu[3], logical_total);
    for (int l = 0; l < L; l++) {
        if (!c->layer_is_moe[l]) continue;
        for (int e = 0; e < E; e++) {
            int64_t sum = 0;
            for (int r = 0; r < plc.logcnt[plc.row_of[l] * E + e]; r++)
                sum += per_slot[l * 12 + plc.log2phy[(plc.row_of[l] * E + e) * plc.max_replicas + r]];
            assert_int_equal(sum, per_expert[l * E + e]);
        }
    }
    if (split0_total >= 6) assert_true(split0 < split0_total); /* not everything on one replica */
    /* deterministic: the same run again gives the same slots */
    gen_out again;
    generate(prompt, 40, &plc, &again);
    assert_memory_equal(again.phys.ids, placed.phys.ids, cells * sizeof(int32_t));
    gen_free(&again);
    gen_free(&base);
    gen_free(&trivial);
    gen_free(&placed);
    mt_placement_free(&triv);
    mt_placement_free(&plc);
}

/* ---- the batched engine ---- */

#define NREQ 10
#define MAXNEW 5
#define MAXPOS 128

typedef struct engine_run {
    int32_t phys[NREQ][MAXPOS][4][2]; /* [request, position, layer, j], -2 = not seen */
    int32_t tokens[NREQ][MAXNEW];
    int32_t *routing[NREQ];
    int rows[NREQ];
    int64_t logical[4 * 8], physical[4 * 12];
    double pass_bal;
} engine_run;

static void on_layer(void *ctx, const mt_routing_event *ev) {
    engine_run *r = ctx;
    assert_int_equal(ev->top_k, 2);
    for (int i = 0; i < ev->n_tokens; i++)
        for (int j = 0; j < 2; j++)
            r->phys[ev->request_ids[i]][ev->positions[i]][ev->layer][j] = ev->phys_ids ? ev->phys_ids[i * 2 + j] : -1;
}

static void on_event(void *ctx, const mt_engine_event *ev) {
    engine_run *r = ctx;
    if (ev->kind != MT_EVENT_FINISHED) return;
    memcpy(r->tokens[ev->id], ev->output, (size_t)ev->n_generated * sizeof(int32_t));
    r->rows[ev->id] = ev->routing_rows;
    size_t n = (size_t)ev->routing_rows * 4 * 2;
    r->routing[ev->id] = malloc(n * sizeof(int32_t));
    memcpy(r->routing[ev->id], ev->routing, n * sizeof(int32_t));
}

static void run_engine(const mt_placement *p, int max_running, int budget, engine_run *r) {
    memset(r, 0, sizeof *r);
    for (size_t i = 0; i < sizeof r->phys / sizeof(int32_t); i++) (&r->phys[0][0][0][0])[i] = -2;
    mt_err err = {{0}};
    mt_recorder_opts ro;
    mt_recorder_opts_default(&ro);
    ro.buffer_size = -1;
    ro.placement = p;
    mt_recorder *rec = mt_recorder_new(&g_model.cfg, "fixture", &ro, &err);
    assert_non_null(rec);
    mt_recorder_start(rec);
    mt_routing_fanout fan = {0};
    mt_routing_fanout_add(&fan, (mt_routing_sink){on_layer, NULL, r});
    mt_routing_fanout_add(&fan, mt_recorder_sink(rec));
    mt_routing_sink sink = mt_routing_fanout_sink(&fan);
    mt_engine_opts eo = {.num_kv_blocks = 64, .max_batch_tokens = budget, .max_running = max_running,
                         .prefix_cache = false, .placement = p};
    mt_engine *e = mt_engine_new(&g_model, &eo, on_event, r, &sink, &err);
    if (!e) fail_msg("%s", err.msg);
    for (int i = 0; i < NREQ; i++) {
        int32_t prompt[80];
        int n = 5 + (i * 17) % 70;
        for (int t = 0; t < n; t++) prompt[t] = (int32_t)(3 + (i * 131 + t * 29) % 500);
        mt_request rq = {.id = i, .prompt = prompt, .n_prompt = n, .max_new_tokens = MAXNEW, .ignore_eos = true};
        if (mt_engine_submit(e, &rq, &err)) fail_msg("%s", err.msg);
    }
    while (!mt_engine_idle(e))
        if (mt_engine_step(e, &err) < 0) fail_msg("%s", err.msg);
    mt_engine_free(e);
    mt_recorder_logical_count(rec, r->logical);
    if (p) assert_int_equal(mt_recorder_physical_count(rec, r->physical), 0);
    else assert_int_equal(mt_recorder_physical_count(rec, r->physical), -1);
    mt_recorder_counts rc;
    mt_recorder_get_counts(rec, &rc);
    r->pass_bal = rc.pass_balancedness;
    mt_recorder_free(rec);
}

static void run_free(engine_run *r) {
    for (int i = 0; i < NREQ; i++) free(r->routing[i]);
}

static void test_engine_batch_invariant(void **state) {
    (void)state;
    mt_placement plc;
    load_placement(&plc);
    static engine_run base, solo, mixed;
    run_engine(NULL, 8, 48, &base);
    run_engine(&plc, 1, 512, &solo);   /* one request at a time, whole prompts */
    run_engine(&plc, 8, 48, &mixed);   /* eight at once, chunked prefill */
    for (int i = 0; i < NREQ; i++) {
        /* outputs and logical routing do not see the placement */
        assert_memory_equal(solo.tokens[i], base.tokens[i], sizeof base.tokens[i]);
        assert_memory_equal(mixed.tokens[i], base.tokens[i], sizeof base.tokens[i]);
        assert_int_equal(mixed.rows[i], base.rows[i]);
        assert_memory_equal(mixed.routing[i], base.routing[i], (size_t)base.rows[i] * 8 * sizeof(int32_t));
        assert_memory_equal(solo.routing[i], base.routing[i], (size_t)base.rows[i] * 8 * sizeof(int32_t));
        /* the slot of every (position, layer, choice) is the same however the request was batched,
         * and it holds the choice's logical expert */
        for (int t = 0; t < base.rows[i]; t++)
            for (int l = 0; l < 4; l++)
                for (int j = 0; j < 2; j++) {
                    int32_t a = solo.phys[i][t][l][j], b = mixed.phys[i][t][l][j];
                    assert_int_equal(a, b);
                    int32_t e = base.routing[i][(t * 4 + l) * 2 + j];
                    if (l == 1) assert_int_equal(a, -2); /* dense: no event */
                    else assert_int_equal(plc.phy2log[plc.row_of[l] * 12 + a], e);
                }
    }
    /* the recorder's two channels: logical counts as without a placement; physical counts add up */
    assert_memory_equal(mixed.logical, base.logical, sizeof base.logical);
    assert_memory_equal(solo.physical, mixed.physical, sizeof mixed.physical);
    for (int l = 0; l < 4; l++) {
        int64_t sum[8] = {0};
        for (int s = 0; s < 12; s++) {
            if (l == 1) {
                assert_int_equal(mixed.physical[l * 12 + s], 0);
                continue;
            }
            sum[plc.phy2log[plc.row_of[l] * 12 + s]] += mixed.physical[l * 12 + s];
        }
        if (l != 1)
            for (int e = 0; e < 8; e++) assert_int_equal(sum[e], mixed.logical[l * 8 + e]);
    }
    /* bigger passes balance better than one request at a time */
    assert_true(mixed.pass_bal > 0 && mixed.pass_bal <= 1 && solo.pass_bal > 0);
    run_free(&base);
    run_free(&solo);
    run_free(&mixed);
    mt_placement_free(&plc);
}

static void test_misfit_refused(void **state) {
    (void)state;
    mt_config other = g_model.cfg;
    other.num_experts = 16;
    mt_moe_shape s;
    mt_moe_shape_from_config(&other, &s);
    mt_placement p;
    mt_err err = {{0}};
    assert_int_equal(mt_placement_trivial(&s, 4, &p, &err), 0);
    mt_engine_opts eo = {.num_kv_blocks = 8, .max_batch_tokens = 16, .max_running = 2, .placement = &p};
    assert_null(mt_engine_new(&g_model, &eo, NULL, NULL, NULL, &err));
    assert_non_null(strstr(err.msg, "16 experts"));
    int32_t prompt[3] = {5, 6, 7}, out[2];
    int n = 0;
    mt_generate_opts go = {.max_new_tokens = 2, .placement = &p};
    assert_int_equal(mt_generate(&g_model, prompt, 3, &go, out, &n, &err), -1);
    assert_non_null(strstr(err.msg, "placement"));
    mt_placement_free(&p);
}

/* ---- the CLI ---- */

static void assert_same_file(const char *a, const char *b) {
    size_t la, lb;
    char *x = slurp(a, &la), *y = slurp(b, &lb);
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal(la, lb);
    assert_memory_equal(x, y, la);
    free(x);
    free(y);
}

static void test_cli_run(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    write_text("plc.json", PLACEMENT_JSON);
    char args[2048], out[8192];
    const char *common = "run --model " FIXTURE " --input-ids 3,14,15,92,65,35 --max-new-tokens 6 --ignore-eos";
    snprintf(args, sizeof args, "%s --logits-out %s --routing-out %s --tokens-out %s", common, path_of("l0.npy"),
             path_of("r0.npy"), path_of("t0.npy"));
    assert_int_equal(run_moetrace(args, out, sizeof out), 0);
    snprintf(args, sizeof args, "%s --init-expert-location %s --logits-out %s --routing-out %s --tokens-out %s"
             " --physical-routing-out %s", common, path_of("plc.json"), path_of("l1.npy"), path_of("r1.npy"),
             path_of("t1.npy"), path_of("p1.npy"));
    if (run_moetrace(args, out, sizeof out) != 0) fail_msg("%s", out);
    assert_non_null(strstr(out, "per-GPU routed tokens"));
    assert_same_file(path_of("l0.npy"), path_of("l1.npy"));
    assert_same_file(path_of("r0.npy"), path_of("r1.npy"));
    assert_same_file(path_of("t0.npy"), path_of("t1.npy"));
    /* physical routing: same shape as the routing, each slot holding the routed expert */
    mt_npy r, p;
    mt_err err = {{0}};
    if (mt_npy_read(path_of("r1.npy"), &r, &err)) fail_msg("%s", err.msg);
    if (mt_npy_read(path_of("p1.npy"), &p, &err)) fail_msg("%s", err.msg);
    assert_int_equal(p.ndim, 3);
    assert_memory_equal(p.shape, r.shape, sizeof r.shape);
    mt_placement plc;
    load_placement(&plc);
    const int32_t *ri = r.data, *pi = p.data;
    for (int64_t i = 0; i < r.shape[0] * r.shape[1] * r.shape[2]; i++) {
        int l = (int)(i / r.shape[2] % r.shape[1]);
        if (plc.row_of[l] < 0) assert_int_equal(pi[i], -1);
        else assert_int_equal(plc.phy2log[plc.row_of[l] * 12 + pi[i]], ri[i]);
    }
    mt_placement_free(&plc);
    mt_npy_free(&r);
    mt_npy_free(&p);

    /* bad flags and files: non-zero exit, a message naming the flag and the problem */
    static const struct { const char *extra, *needle; } bad[] = {
        {"--ep-size 3", "--ep-size: trivial placement: ep size 3 does not divide num_experts 8"},
        {"--ep-size 0", "--ep-size: '0' is not an integer"},
        {"--init-expert-location /nonexistent.json", "/nonexistent.json"},
        {"--ep-num-redundant-experts 2", "--ep-num-redundant-experts needs --init-expert-location"},
        {"--physical-routing-out x.npy", "--physical-routing-out needs a placement"},
        {"--init-expert-location @plc.json --ep-size 2", "--ep-size 2 differs from the placement's num_gpus 4"},
        {"--init-expert-location @rows.json", "physical_to_logical_map has 2 rows; the model has 3 MoE layers"},
        {"--init-expert-location @norep.json", "has no replica of logical expert 7"},
        {"--init-expert-location @div.json", "not divisible by num_gpus (ep size) 5"},
        {"--init-expert-location @experts.json", "\"num_experts\" is 16 but the model has num_experts 8"},
    };
    write_text("rows.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\":"
                            " [[0,1,2,3,4,5,6,7],[0,1,2,3,4,5,6,7]]}");
    write_text("norep.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"physical_to_logical_map\":"
                             " [[0,1,2,3,4,5,6,6],[0,1,2,3,4,5,6,7],[0,1,2,3,4,5,6,7]]}");
    write_text("div.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 5, \"physical_to_logical_map\":"
                           " [[0,1,2,3,4,5,6,7],[0,1,2,3,4,5,6,7],[0,1,2,3,4,5,6,7]]}");
    write_text("experts.json", "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 4, \"num_experts\": 16,"
                               " \"physical_to_logical_map\": [[0,1,2,3,4,5,6,7],[0,1,2,3,4,5,6,7],[0,1,2,3,4,5,6,7]]}");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char extra[600];
        const char *at = strchr(bad[i].extra, '@');
        if (at) snprintf(extra, sizeof extra, "%.*s%s", (int)(at - bad[i].extra), bad[i].extra, path_of(at + 1));
        else snprintf(extra, sizeof extra, "%s", bad[i].extra);
        snprintf(args, sizeof args, "%s %s", common, extra);
        int rc = run_moetrace(args, out, sizeof out);
        if (rc == 0 || !strstr(out, bad[i].needle)) fail_msg("'%s': rc %d, output: %s", extra, rc, out);
    }
    /* profile takes --ep-size the same way (SPEC §4: M equal blocks) */
    write_text("one.jsonl", "{\"input_ids\": [3, 14, 15]}\n");
    snprintf(args, sizeof args, "profile --model " FIXTURE " --data %s --out %s --ep-size 3", path_of("one.jsonl"),
             path_of("p3"));
    int rc = run_moetrace(args, out, sizeof out);
    if (rc == 0 || !strstr(out, "ep size 3 does not divide num_experts 8")) fail_msg("profile --ep-size 3: rc %d, %s", rc, out);
}

static void test_cli_profile_planned(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    char ds[4096] = "", line[256], args[2048], out[8192];
    for (int i = 0; i < 12; i++) {
        snprintf(line, sizeof line, "{\"input_ids\": [%d, %d, %d, %d, %d, %d, %d]}\n", 3 + i, 40 + i * 7, 200 - i, 17,
                 90 + i * 3, 5 * i + 1, 300 - i * 11);
        strcat(ds, line);
    }
    write_text("ds.jsonl", ds);
    /* first a profile without a placement, whose stat dump is then planned from at start-up */
    snprintf(args, sizeof args, "profile --model " FIXTURE " --data %s --out %s --max-new-tokens 4 --ignore-eos",
             path_of("ds.jsonl"), path_of("p0"));
    if (run_moetrace(args, out, sizeof out) != 0) fail_msg("%s", out);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls %s/expert_distribution_*.json > %s", path_of("p0"), path_of("dump_name"));
    assert_int_equal(system(cmd), 0);
    size_t n;
    char *dump = slurp(path_of("dump_name"), &n);
    assert_non_null(dump);
    dump[strcspn(dump, "\n")] = 0;
    snprintf(args, sizeof args, "profile --model " FIXTURE " --data %s --out %s --max-new-tokens 4 --ignore-eos "
             "--init-expert-location %s --ep-size 4 --ep-num-redundant-experts 4", path_of("ds.jsonl"), path_of("p1"),
             dump);
    if (run_moetrace(args, out, sizeof out) != 0) fail_msg("%s", out);
    assert_non_null(strstr(out, "placement (eplb): 8 experts -> 12 physical slots on 4 GPUs"));
    snprintf(cmd, sizeof cmd, "ls %s/expert_distribution_*.json > %s", path_of("p1"), path_of("dump_name"));
    assert_int_equal(system(cmd), 0);
    free(dump);
    dump = slurp(path_of("dump_name"), &n);
    dump[strcspn(dump, "\n")] = 0;
    /* the reader checks that physical_count adds up to logical_count */
    mt_stat_dump d0, d1;
    mt_err err = {{0}};
    assert_int_equal(mt_stat_dump_load(dump, &d1, &err), 0);
    assert_non_null(d1.placement);
    assert_string_equal(d1.placement->source, "eplb");
    assert_int_equal(d1.placement->num_physical, 12);
    free(dump);
    snprintf(cmd, sizeof cmd, "ls %s/expert_distribution_*.json > %s", path_of("p0"), path_of("dump_name"));
    assert_int_equal(system(cmd), 0);
    dump = slurp(path_of("dump_name"), &n);
    dump[strcspn(dump, "\n")] = 0;
    assert_int_equal(mt_stat_dump_load(dump, &d0, &err), 0);
    assert_null(d0.placement);
    /* same logical counts with and without the placement */
    assert_memory_equal(d0.moe_count, d1.moe_count, (size_t)d0.num_moe_layers * d0.num_experts * sizeof(int64_t));
    mt_stat_dump_free(&d0);
    mt_stat_dump_free(&d1);
    free(dump);
    size_t sl;
    char *sum = slurp(path_of("p1/summary.json"), &sl);
    assert_non_null(sum);
    assert_non_null(strstr(sum, "\"placement\""));
    assert_non_null(strstr(sum, "\"pass_balancedness\""));
    free(sum);
}

static int setup(void **state) {
    (void)state;
    if (tmp_dir_make("placement_engine_")) return -1;
    mt_err err;
    if (mt_model_load(&g_model, FIXTURE, MT_LOAD_AUTO, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    mt_kernels_init(2);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    mt_kernels_shutdown();
    mt_model_free(&g_model);
    return tmp_dir_remove();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_identical),
        cmocka_unit_test(test_engine_batch_invariant),
        cmocka_unit_test(test_misfit_refused),
        cmocka_unit_test(test_cli_run),
        cmocka_unit_test(test_cli_profile_planned),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
