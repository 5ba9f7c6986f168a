/* Reports: mt_report_render on small (4 layers x 8 experts) and large (58 x 256) synthetic stat dumps,
 * PNG and SVG, with --ep-size and a placement; the placement reader; `moetrace report` end to end. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "report/report.h"
#include "routing/stat_dump.h"
#include "routing/usage_compare.h"
#include "util/json_util.h"
#include "test_files.h"

static char g_dir[1024];

static const char *path_of(const char *name) {
    static char buf[4][1200];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Writes a stat dump: L layers (the first `dense` dense), E experts, skewed deterministic counts. */
static void write_dump(const char *path, int L, int E, int dense, const char *model) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fprintf(f, "{\"format\": \"moetrace.expert_distribution.v1\", \"mode\": \"stat\", \"model\": \"%s\",\n"
               " \"num_hidden_layers\": %d, \"moe_layers\": [", model, L);
    for (int l = dense; l < L; l++) fprintf(f, "%s%d", l > dense ? ", " : "", l);
    fprintf(f, "], \"num_experts\": %d, \"top_k\": 8, \"num_forward_passes\": 10, \"num_tokens\": 4096,\n"
               " \"logical_count\": [", E);
    uint32_t x = 12345;
    for (int l = 0; l < L; l++) {
        fprintf(f, "%s[", l ? ",\n  " : "");
        for (int e = 0; e < E; e++) {
            x = x * 1664525u + 1013904223u;
            int v = l < dense ? 0 : (int)((x >> 16) % 200) + ((e * 7 + l) % 11 == 0 ? 900 : 0);
            fprintf(f, "%s%d", e ? "," : "", v);
        }
        fprintf(f, "]");
    }
    fprintf(f, "],\n \"balancedness\": {\"per_layer\": [], \"mean\": 0}}\n");
    fclose(f);
}

/* PNG signature and IHDR width/height (big-endian at bytes 16..23). */
static void check_png(const char *path, int *w, int *h) {
    size_t n = 0;
    unsigned char *b = (unsigned char *)slurp(path, &n);
    assert_non_null(b);
    assert_true(n > 33);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    assert_memory_equal(b, sig, 8);
    assert_memory_equal(b + 12, "IHDR", 4);
    *w = (int)((uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19]);
    *h = (int)((uint32_t)b[20] << 24 | (uint32_t)b[21] << 16 | (uint32_t)b[22] << 8 | b[23]);
    free(b);
}

static void check_svg(const char *path) {
    char *t = slurp(path, NULL);
    assert_non_null(t);
    assert_non_null(strstr(t, "<?xml"));
    assert_non_null(strstr(t, "<svg"));
    assert_non_null(strstr(t, "</svg>"));
    free(t);
}

static int no_temp_files(void) {
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q '\\.tmp\\.'", g_dir);
    return system(cmd) != 0;
}

static void load(const char *path, mt_stat_dump *d) {
    mt_err err = {{0}};
    int rc = mt_stat_dump_load(path, d, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
}

static void test_small_png_svg(void **state) {
    (void)state;
    write_dump(path_of("small.json"), 4, 8, 1, "tiny-moe");
    mt_stat_dump d;
    load(path_of("small.json"), &d);
    mt_err err = {{0}};
    int w, h, w2, h2;
    assert_int_equal(mt_report_render(&d, path_of("small.png"), NULL, &err), 0);
    check_png(path_of("small.png"), &w, &h);
    assert_true(w >= 400 && w <= 2000 && h >= 150 && h <= 1500);
    mt_report_opts o = {.ep_size = 4};
    assert_int_equal(mt_report_render(&d, path_of("small_ep.png"), &o, &err), 0);
    check_png(path_of("small_ep.png"), &w2, &h2);
    assert_true(h2 > h + 150); /* the GPU panel below */
    assert_int_equal(mt_report_render(&d, path_of("small.svg"), &o, &err), 0);
    check_svg(path_of("small.svg"));
    assert_true(no_temp_files());
    mt_stat_dump_free(&d);
}

static void test_large_png_svg(void **state) {
    (void)state;
    write_dump(path_of("large.json"), 58, 256, 3, "big-moe");
    mt_stat_dump d;
    load(path_of("large.json"), &d);
    mt_err err = {{0}};
    mt_report_opts o = {.ep_size = 32};
    assert_int_equal(mt_report_render(&d, path_of("large.png"), &o, &err), 0);
    int w, h;
    check_png(path_of("large.png"), &w, &h);
    assert_true(w >= 256 * 3 && w <= 2400); /* at least 3 px per expert, not absurdly wide */
    assert_true(h >= 58 * 8 && h <= 2400);
    assert_int_equal(mt_report_render(&d, path_of("large.SVG"), &o, &err), 0);
    check_svg(path_of("large.SVG"));
    struct stat st;
    assert_int_equal(stat(path_of("large.png"), &st), 0);
    assert_true(st.st_size < 2 * 1024 * 1024);
    mt_stat_dump_free(&d);
}

static void test_placement(void **state) {
    (void)state;
    write_dump(path_of("plc_dump.json"), 3, 8, 1, "tiny-moe");
    /* 2 MoE layers, 10 slots on 2 GPUs; experts 0 and 1 (layer 0), 3 and 5 (layer 1) replicated */
    write_text(path_of("plc.json"),
               "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 2, \"num_nodes\": 1,"
               " \"num_groups\": 1, \"num_replicas\": 10, \"physical_to_logical_map\":"
               " [[0,2,4,6,1,1,3,5,7,0],[3,0,2,4,6,5,1,7,3,5]]}");
    mt_stat_dump d;
    load(path_of("plc_dump.json"), &d);
    mt_err err = {{0}};
    mt_placement p;
    mt_moe_shape shape;
    assert_int_equal(mt_moe_shape_from_dump(&d, &shape, &err), 0);
    assert_int_equal(mt_placement_load(path_of("plc.json"), &shape, NULL, &p, &err), 0);
    assert_int_equal(p.num_moe_layers, 2);
    assert_int_equal(p.num_physical, 10);
    assert_int_equal(p.num_gpus, 2);
    assert_int_equal(p.logcnt[0], 2);
    assert_int_equal(p.logcnt[8 + 5], 2);
    mt_report_opts o = {.ep_size = 0, .placement = &p};
    assert_int_equal(mt_report_render(&d, path_of("plc.png"), &o, &err), 0);
    int w, h;
    check_png(path_of("plc.png"), &w, &h);
    o.ep_size = 4; /* differs from the placement's num_gpus */
    assert_int_equal(mt_report_render(&d, path_of("plc_bad.png"), &o, &err), -1);
    assert_non_null(strstr(err.msg, "num_gpus"));
    assert_int_equal(access(path_of("plc_bad.png"), F_OK), -1);
    mt_placement_free(&p);

    /* a placement for a different number of layers */
    write_dump(path_of("plc_dump3.json"), 3, 8, 0, "tiny-moe");
    mt_stat_dump d3;
    load(path_of("plc_dump3.json"), &d3);
    mt_moe_shape shape3;
    assert_int_equal(mt_moe_shape_from_dump(&d3, &shape3, &err), 0);
    assert_int_equal(mt_placement_load(path_of("plc.json"), &shape3, NULL, &p, &err), -1);
    assert_non_null(strstr(err.msg, "MoE layers"));
    /* a placement built for another shape, handed to the renderer directly */
    assert_int_equal(mt_placement_load(path_of("plc.json"), &shape, NULL, &p, &err), 0);
    o.ep_size = 0;
    assert_int_equal(mt_report_render(&d3, path_of("plc_bad.png"), &o, &err), -1);
    assert_non_null(strstr(err.msg, "MoE layers"));
    mt_placement_free(&p);
    mt_stat_dump_free(&d3);
    mt_stat_dump_free(&d);

    /* bad placements */
    write_text(path_of("plc_fmt.json"), "{\"format\": \"other\", \"num_gpus\": 2, \"physical_to_logical_map\": [[0]]}");
    assert_int_equal(mt_placement_load(path_of("plc_fmt.json"), &shape, NULL, &p, &err), -1);
    assert_non_null(strstr(err.msg, "format"));
    write_text(path_of("plc_miss.json"), "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 2,"
                                         " \"physical_to_logical_map\": [[0,1,2,3,4,5,6,6],[0,1,2,3,4,5,6,7]]}");
    assert_int_equal(mt_placement_load(path_of("plc_miss.json"), &shape, NULL, &p, &err), -1);
    assert_non_null(strstr(err.msg, "expert 7"));
    write_text(path_of("plc_range.json"), "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 2,"
                                          " \"physical_to_logical_map\": [[0,1,2,3,4,5,6,8],[0,1,2,3,4,5,6,7]]}");
    assert_int_equal(mt_placement_load(path_of("plc_range.json"), &shape, NULL, &p, &err), -1);
    assert_non_null(strstr(err.msg, "[0][7]"));
    write_text(path_of("plc_div.json"), "{\"format\": \"moetrace.placement.v1\", \"num_gpus\": 3,"
                                        " \"physical_to_logical_map\": [[0,1,2,3,4,5,6,7],[0,1,2,3,4,5,6,7]]}");
    assert_int_equal(mt_placement_load(path_of("plc_div.json"), &shape, NULL, &p, &err), -1);
    assert_non_null(strstr(err.msg, "num_gpus"));
}

static void test_render_errors(void **state) {
    (void)state;
    write_dump(path_of("err.json"), 2, 8, 0, "m");
    mt_stat_dump d;
    load(path_of("err.json"), &d);
    mt_err err = {{0}};
    assert_int_equal(mt_report_render(&d, path_of("out.jpg"), NULL, &err), -1);
    assert_non_null(strstr(err.msg, ".png or .svg"));
    assert_int_equal(access(path_of("out.jpg"), F_OK), -1);
    mt_report_opts o = {.ep_size = 9};
    assert_int_equal(mt_report_render(&d, path_of("out.png"), &o, &err), -1);
    assert_non_null(strstr(err.msg, "--ep-size 9"));
    o.ep_size = 3;
    assert_int_equal(mt_report_render(&d, path_of("out.png"), &o, &err), -1);
    assert_non_null(strstr(err.msg, "--ep-size 3 does not divide the dump's 8 experts"));
    assert_int_equal(mt_report_render(&d, "/nonexistent-dir/x.png", NULL, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.png"));
    assert_true(no_temp_files());
    mt_stat_dump_free(&d);
}

/* Runs `moetrace report ARGS`; returns the exit status, stderr into err_out. */
static int run_cli(const char *args, char *err_out, size_t n) {
    const char *bin = getenv("MOETRACE_BIN");
    if (!bin) bin = MT_BINARY_DIR "/moetrace";
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' report %s >'%s' 2>'%s'", bin, args, path_of("cli.out"),
             path_of("cli.err"));
    int st = system(cmd);
    char *e = slurp(path_of("cli.err"), NULL);
    snprintf(err_out, n, "%s", e ? e : "");
    free(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void **state) {
    (void)state;
    char e[4096], args[4096];
    write_dump(path_of("cli.json"), 6, 16, 2, "cli-moe");
    snprintf(args, sizeof args, "'%s' --out '%s' --ep-size 4", path_of("cli.json"), path_of("cli.png"));
    assert_int_equal(run_cli(args, e, sizeof e), 0);
    int w, h;
    check_png(path_of("cli.png"), &w, &h);
    char *out = slurp(path_of("cli.out"), NULL);
    assert_string_equal(out, ""); /* nothing on stdout */
    free(out);

    assert_int_equal(run_cli("--help", e, sizeof e), 0);

    snprintf(args, sizeof args, "'%s'", path_of("cli.json"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "--out"));

    snprintf(args, sizeof args, "'%s' --out '%s'", path_of("missing.json"), path_of("x.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "missing.json"));

    write_text(path_of("broken.json"), "{\"format\": \"moetrace.expert_distribution.v1\", ");
    snprintf(args, sizeof args, "'%s' --out '%s'", path_of("broken.json"), path_of("x.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "broken.json"));

    write_text(path_of("wrongfmt.json"), "{\"format\": \"something.else\", \"num_hidden_layers\": 1}");
    snprintf(args, sizeof args, "'%s' --out '%s'", path_of("wrongfmt.json"), path_of("x.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "format"));

    snprintf(args, sizeof args, "'%s' --out '%s'", path_of("cli.json"), path_of("x.gif"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, ".png or .svg"));

    snprintf(args, sizeof args, "'%s' --out '%s' --ep-size 0", path_of("cli.json"), path_of("x.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "--ep-size"));

    snprintf(args, sizeof args, "'%s' --out '%s' --ep-size 32", path_of("cli.json"), path_of("x.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "num_experts"));

    /* SPEC §4: without a placement, M equal blocks; 16 experts on 3 GPUs drew 3 unequal ones */
    snprintf(args, sizeof args, "'%s' --out '%s' --ep-size 3", path_of("cli.json"), path_of("x.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "--ep-size 3 does not divide the dump's 16 experts"));
    assert_int_equal(access(path_of("x.png"), F_OK), -1);

    snprintf(args, sizeof args, "'%s' --out '%s' --bogus", path_of("cli.json"), path_of("x.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "--bogus"));

    snprintf(args, sizeof args, "'%s' --out '%s' --placement '%s'", path_of("cli.json"),
             path_of("x.png"), path_of("missing_plc.json"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "missing_plc.json"));
    assert_int_equal(access(path_of("x.png"), F_OK), -1);
}

/* Several dumps: their expert use compared (lift heatmaps, or the numbers as JSON); shapes must match. */
static void test_compare_cli(void **state) {
    (void)state;
    char e[4096], args[8192];
    static const char *const fmt =
        "{\"format\": \"moetrace.expert_distribution.v1\", \"mode\": \"stat\", \"model\": \"m\", "
        "\"num_hidden_layers\": 2, \"moe_layers\": [1], \"num_experts\": 4, \"top_k\": 1, \"num_tokens\": 10, "
        "\"logical_count\": [[0, 0, 0, 0], [%s]]}";
    char text[1024];
    snprintf(text, sizeof text, fmt, "6, 2, 2, 0");
    write_text(path_of("cmp_a.json"), text);
    snprintf(text, sizeof text, fmt, "0, 2, 2, 6");
    write_text(path_of("cmp_b.json"), text);
    char a[1200], b[1200]; /* path_of's buffers are reused */
    snprintf(a, sizeof a, "%s", path_of("cmp_a.json"));
    snprintf(b, sizeof b, "%s", path_of("cmp_b.json"));
    snprintf(args, sizeof args, "'%s' '%s' --out '%s'", a, b, path_of("cmp.png"));
    assert_int_equal(run_cli(args, e, sizeof e), 0);
    int w, h;
    check_png(path_of("cmp.png"), &w, &h);
    snprintf(args, sizeof args, "'%s' '%s' --out '%s'", a, b, path_of("cmp.svg"));
    assert_int_equal(run_cli(args, e, sizeof e), 0);
    check_svg(path_of("cmp.svg"));
    snprintf(args, sizeof args, "'%s' '%s' --out '%s'", a, b, path_of("cmp.json"));
    assert_int_equal(run_cli(args, e, sizeof e), 0);
    mt_err err = {{0}};
    cJSON *j = mt_json_load_file(path_of("cmp.json"), &err);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "format")->valuestring, "moetrace.usage_comparison.v1");
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "dumps"), 0);
    assert_string_equal(cJSON_GetObjectItem(first, "name")->valuestring, a);
    assert_int_equal(cJSON_GetObjectItem(first, "tokens")->valueint, 10);
    const int64_t ca[4] = {6, 2, 2, 0}, cb[4] = {0, 2, 2, 6};
    const cJSON *div = cJSON_GetObjectItem(first, "divergence_per_layer");
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(div, 0)));
    assert_true(fabs(cJSON_GetArrayItem(div, 1)->valuedouble - mt_usage_js_divergence(ca, cb, 4)) < 1e-12);
    const cJSON *d1 = cJSON_GetArrayItem(cJSON_GetObjectItem(first, "distinctive_experts_per_layer"), 1);
    assert_int_equal(cJSON_GetArraySize(d1), 1); /* expert 0: 0.6 against 0 */
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(d1, 0), "expert")->valueint, 0);
    assert_true(fabs(cJSON_GetObjectItem(cJSON_GetArrayItem(d1, 0), "lift")->valuedouble - 2.0) < 1e-12);
    cJSON_Delete(j);

    write_dump(path_of("cmp_c.json"), 3, 4, 1, "m"); /* three layers: not the same model */
    snprintf(args, sizeof args, "'%s' '%s' --out '%s'", a, path_of("cmp_c.json"), path_of("y.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "not the shape of"));
    snprintf(text, sizeof text, "{\"format\": \"moetrace.expert_distribution.v1\", \"model\": \"m\", \"num_hidden_layers\": 2, "
             "\"moe_layers\": [1], \"num_experts\": 4, \"top_k\": 2, \"logical_count\": [[0, 0, 0, 0], [1, 1, 1, 1]]}");
    write_text(path_of("cmp_k2.json"), text); /* top-2: its shares mean other things */
    snprintf(args, sizeof args, "'%s' '%s' --out '%s'", a, path_of("cmp_k2.json"), path_of("y.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "top_k differs"));
    /* another model of the same shape: its expert i is not expert i of the first (as --over-time) */
    snprintf(text, sizeof text, "{\"format\": \"moetrace.expert_distribution.v1\", \"model\": \"other\", "
             "\"num_hidden_layers\": 2, \"moe_layers\": [1], \"num_experts\": 4, \"top_k\": 1, \"num_tokens\": 10, "
             "\"logical_count\": [[0, 0, 0, 0], [1, 2, 3, 4]]}");
    write_text(path_of("cmp_other.json"), text);
    char other[1200];
    snprintf(other, sizeof other, "%s", path_of("cmp_other.json"));
    static const char *const outs[] = {"y.json", "y.png"};
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args, "'%s' '%s' --out '%s'", a, other, path_of(outs[k]));
        assert_int_equal(run_cli(args, e, sizeof e), 1);
        char says[4096];
        snprintf(says, sizeof says, "%s: a dump of model \"other\", not \"m\" as %s", other, a);
        if (!strstr(e, says)) fail_msg("'%s' not said: %s", says, e);
        assert_int_equal(access(path_of(outs[k]), F_OK), -1);
    }
    snprintf(args, sizeof args, "'%s' '%s' --out '%s' --ep-size 2", a, b, path_of("y.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "draw one dump"));
    snprintf(args, sizeof args, "'%s' '%s' --out '%s'", a, path_of("missing.json"), path_of("y.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "missing.json"));
    char many[4096] = "";
    for (int i = 0; i < 33; i++) {
        strcat(many, "'");
        strcat(many, a);
        strcat(many, "' ");
    }
    snprintf(args, sizeof args, "%s --out '%s'", many, path_of("y.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "more than 32"));
    assert_int_equal(access(path_of("y.png"), F_OK), -1);
}

/* The output is checked before any work, and the error names what is wrong with it: a folder that
 * does not exist (was: Cairo's "error while writing to output stream" about a temporary file, after
 * drawing), .json given one dump (was: "must end in .png or .svg", though .json is accepted). */
static void test_cli_output_checked(void **state) {
    (void)state;
    char e[4096], args[4096], a[1200];
    write_dump(path_of("out_a.json"), 4, 8, 1, "m");
    snprintf(a, sizeof a, "%s", path_of("out_a.json"));
    snprintf(args, sizeof args, "'%s' --out '%s'", a, path_of("no_such_folder/x.png"));
    assert_int_equal(run_cli(args, e, sizeof e), 2);
    assert_non_null(strstr(e, "--out"));
    assert_non_null(strstr(e, "no_such_folder' does not exist"));
    assert_null(strstr(e, ".tmp."));
    snprintf(args, sizeof args, "'%s' --out '%s'", a, path_of("no_such_folder/x.svg"));
    assert_int_equal(run_cli(args, e, sizeof e), 2);
    assert_non_null(strstr(e, "no_such_folder' does not exist"));
    snprintf(args, sizeof args, "'%s' '%s' --out '%s'", a, a, path_of("no_such_folder/x.json"));
    assert_int_equal(run_cli(args, e, sizeof e), 2);
    assert_non_null(strstr(e, "no_such_folder' does not exist"));
    snprintf(args, sizeof args, "'%s' --out '%s'", a, path_of("one.json"));
    assert_int_equal(run_cli(args, e, sizeof e), 2);
    assert_non_null(strstr(e, "a .json comparison needs two or more dumps"));
    assert_int_equal(access(path_of("one.json"), F_OK), -1);
    snprintf(args, sizeof args, "'%s' '%s' --out '%s'", a, a, path_of("two.txt"));
    assert_int_equal(run_cli(args, e, sizeof e), 2);
    assert_non_null(strstr(e, ".png, .svg or .json"));
    snprintf(args, sizeof args, "'%s' --out '%s'", a, g_dir); /* a folder */
    assert_int_equal(run_cli(args, e, sizeof e), 2);
    snprintf(args, sizeof args, "'%s' --out '%s'", path_of("missing.json"), path_of("no_such_folder/x.png"));
    assert_int_equal(run_cli(args, e, sizeof e), 2); /* the output first: nothing was read */
    assert_non_null(strstr(e, "no_such_folder"));
}

/* Dumps without num_tokens (not written by this recorder): tokens from the counts where top_k is
 * known, else unknown (null), never a made-up number. */
static void test_compare_dumps_without_tokens(void **state) {
    (void)state;
    char e[4096], args[4096];
    write_text(path_of("old_a.json"), "{\"format\": \"moetrace.expert_distribution.v1\", \"num_hidden_layers\": 1, "
                                      "\"moe_layers\": [0], \"num_experts\": 2, \"top_k\": 2, \"logical_count\": [[3, 5]]}");
    write_text(path_of("old_b.json"), "{\"format\": \"moetrace.expert_distribution.v1\", \"num_hidden_layers\": 1, "
                                      "\"moe_layers\": [0], \"num_experts\": 2, \"logical_count\": [[5, 3]]}");
    char a[1200], b[1200];
    snprintf(a, sizeof a, "%s", path_of("old_a.json"));
    snprintf(b, sizeof b, "%s", path_of("old_b.json"));
    snprintf(args, sizeof args, "'%s' '%s' --out '%s'", a, b, path_of("old.json"));
    assert_int_equal(run_cli(args, e, sizeof e), 0);
    mt_err err = {{0}};
    cJSON *j = mt_json_load_file(path_of("old.json"), &err);
    assert_non_null(j);
    const cJSON *dumps = cJSON_GetObjectItem(j, "dumps");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(dumps, 0), "tokens")->valueint, 4); /* 8 pairs / top_k 2 */
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(dumps, 1), "tokens")));
    cJSON_Delete(j);
    snprintf(args, sizeof args, "'%s' '%s' --out '%s'", a, b, path_of("old.png"));
    assert_int_equal(run_cli(args, e, sizeof e), 0);
    int w, h;
    check_png(path_of("old.png"), &w, &h);
}

/* path's text with its first `from` replaced by `to`. */
static void replace_in_file(const char *path, const char *from, const char *to) {
    char *t = slurp(path, NULL);
    assert_non_null(t);
    char *at = strstr(t, from);
    assert_non_null(at);
    size_t n = strlen(t) + strlen(to) + 1;
    char *u = malloc(n);
    assert_non_null(u);
    snprintf(u, n, "%.*s%s%s", (int)(at - t), t, to, at + strlen(from));
    write_text(path, u);
    free(u);
    free(t);
}

/* Without --ep-size, the dump's own ep_size (what profile's heatmap.png draws): the same picture as
 * --ep-size given; an ep_size the experts cannot be split by is passed over (balancedness per expert). */
static void test_cli_dump_ep_size(void **state) {
    (void)state;
    char e[4096], args[4096];
    write_dump(path_of("ep_none.json"), 6, 16, 2, "m");
    write_dump(path_of("ep4.json"), 6, 16, 2, "m");
    replace_in_file(path_of("ep4.json"), "\"mode\": \"stat\", ", "\"mode\": \"stat\", \"ep_size\": 4, ");
    write_dump(path_of("ep3.json"), 6, 16, 2, "m");
    replace_in_file(path_of("ep3.json"), "\"mode\": \"stat\", ", "\"mode\": \"stat\", \"ep_size\": 3, ");
    snprintf(args, sizeof args, "'%s' --out '%s' --ep-size 4", path_of("ep_none.json"), path_of("ep_flag.png"));
    assert_int_equal(run_cli(args, e, sizeof e), 0);
    snprintf(args, sizeof args, "'%s' --out '%s'", path_of("ep_none.json"), path_of("ep_none.png"));
    assert_int_equal(run_cli(args, e, sizeof e), 0);
    snprintf(args, sizeof args, "'%s' --out '%s'", path_of("ep4.json"), path_of("ep4.png"));
    assert_int_equal(run_cli(args, e, sizeof e), 0);
    snprintf(args, sizeof args, "'%s' --out '%s'", path_of("ep3.json"), path_of("ep3.png"));
    assert_int_equal(run_cli(args, e, sizeof e), 0);
    size_t n_flag, n_dump, n_none, n_bad;
    char *flag = slurp(path_of("ep_flag.png"), &n_flag), *dump = slurp(path_of("ep4.png"), &n_dump);
    char *none = slurp(path_of("ep_none.png"), &n_none), *bad = slurp(path_of("ep3.png"), &n_bad);
    assert_true(flag && dump && none && bad);
    assert_true(n_flag == n_dump && !memcmp(flag, dump, n_flag)); /* the GPU panel of EP 4 */
    assert_true(n_none == n_bad && !memcmp(none, bad, n_none));   /* per expert */
    int w, h_dump, h_none;
    check_png(path_of("ep4.png"), &w, &h_dump);
    check_png(path_of("ep_none.png"), &w, &h_none);
    assert_true(h_dump > h_none);
    free(flag);
    free(dump);
    free(none);
    free(bad);
    /* --ep-size still wins */
    snprintf(args, sizeof args, "'%s' --out '%s' --ep-size 3", path_of("ep4.json"), path_of("ep_x.png"));
    assert_int_not_equal(run_cli(args, e, sizeof e), 0);
    assert_non_null(strstr(e, "--ep-size 3 does not divide"));
    assert_int_equal(run_cli("--help", e, sizeof e), 0);
    char *help = slurp(path_of("cli.out"), NULL);
    assert_non_null(help);
    assert_non_null(strstr(help, "default: the dump's ep_size"));
    free(help);
}

/* A per_token index and a stat dump (profile --per-token writes both for one window), or one file
 * twice, compared or drawn over time together, are refused, naming both; two indexes are taken. */
static void test_cli_same_window_refused(void **state) {
    (void)state;
    char e[4096], args[8192], stat[1200], index[1200], other[1200];
    write_dump(path_of("win_stat.json"), 4, 8, 1, "m");
    write_dump(path_of("win_index.json"), 4, 8, 1, "m");
    replace_in_file(path_of("win_index.json"), "\"stat\"", "\"per_token\"");
    snprintf(stat, sizeof stat, "%s", path_of("win_stat.json"));
    snprintf(index, sizeof index, "%s", path_of("win_index.json"));
    write_text(path_of("win_other.json"), "{\"format\": \"moetrace.expert_distribution.v1\", \"mode\": \"per_token\", "
               "\"model\": \"m\", \"num_hidden_layers\": 4, \"moe_layers\": [1, 2, 3], \"num_experts\": 8, "
               "\"top_k\": 8, \"logical_count\": [[0,0,0,0,0,0,0,0], [1,1,1,1,1,1,1,1], [1,1,1,1,1,1,1,1], "
               "[1,1,1,1,1,1,1,1]]}");
    snprintf(other, sizeof other, "%s", path_of("win_other.json"));
    const char *forms[] = {"'%s' '%s' --out '%s'", "'%s' '%s' --over-time --ep-size 4 --out '%s'"};
    for (int f = 0; f < 2; f++) {
        snprintf(args, sizeof args, forms[f], stat, index, path_of("win.png"));
        assert_int_equal(run_cli(args, e, sizeof e), 1);
        assert_non_null(strstr(e, "win_index.json is a per_token index and"));
        assert_non_null(strstr(e, "win_stat.json a stat dump"));
        assert_int_equal(access(path_of("win.png"), F_OK), -1);
        snprintf(args, sizeof args, forms[f], stat, stat, path_of("win.png"));
        assert_int_equal(run_cli(args, e, sizeof e), 1);
        assert_non_null(strstr(e, "are the same file"));
        snprintf(args, sizeof args, forms[f], index, other, path_of("win.png"));
        if (run_cli(args, e, sizeof e)) fail_msg("%s: %s", args, e);
        unlink(path_of("win.png"));
    }
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/test_report_tmp", MT_BINARY_DIR);
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", g_dir, g_dir);
    if (system(cmd) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_png_svg), cmocka_unit_test(test_large_png_svg),
        cmocka_unit_test(test_placement),     cmocka_unit_test(test_render_errors),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_compare_cli),
        cmocka_unit_test(test_compare_dumps_without_tokens),
        cmocka_unit_test(test_cli_output_checked),
        cmocka_unit_test(test_cli_dump_ep_size),
        cmocka_unit_test(test_cli_same_window_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
