/* The dump writer (server/dump_writer.h) on its own, with recorders fed synthetic passes: windows
 * taken one after another and queued are written in the order given (their names increase with
 * it), each with exactly its own passes, a plan beside each dump; drain returns once all are down and
 * free writes what is still queued; a window that cannot be written (its folder removed) is
 * counted in the metrics and the next ones are written. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "routing/placement.h"
#include "routing/recorder.h"
#include "server/dump_writer.h"
#include "server/metrics.h"
#include "util/json_util.h"
#include "tmp_dir.h"

enum { L = 4, E = 8, K = 2, WINDOWS = 12 };

static mt_config make_cfg(void) {
    mt_config c;
    memset(&c, 0, sizeof c);
    c.num_hidden_layers = L;
    c.num_experts = E;
    c.top_k = K;
    for (int l = 1; l < L; l++) c.layer_is_moe[l] = true; /* layer 0 dense */
    c.num_moe_layers = L - 1;
    return c;
}

/* One pass of n tokens. */
static void feed(mt_routing_sink s, int p, int n) {
    int32_t ids[64 * K], seq[64] = {0}, pos[64], tok[64];
    for (int t = 0; t < n; t++) {
        pos[t] = p * 64 + t;
        tok[t] = t;
    }
    for (int l = 1; l < L; l++) {
        for (int i = 0; i < n * K; i++) ids[i] = (p + i * 3 + l) % E;
        mt_routing_event ev = {.layer = l, .n_tokens = n, .top_k = K, .seq_ids = seq, .positions = pos,
                               .tokens = tok, .topk_ids = ids};
        s.on_layer(s.ctx, &ev);
    }
    mt_pass_event pe = {.n_tokens = n, .num_seqs_in_pass = 1};
    s.on_pass(s.ctx, &pe);
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The names in dir starting with prefix and ending with suffix, sorted; returns how many. */
static int list(const char *dir, const char *prefix, const char *suffix, char **out, int max) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < max;) {
        size_t len = strlen(e->d_name), sl = strlen(suffix);
        if (!strncmp(e->d_name, prefix, strlen(prefix)) && len > sl && !strcmp(e->d_name + len - sl, suffix))
            out[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(out, (size_t)n, sizeof *out, by_name);
    return n;
}

static void test_order_and_content(void **state) {
    (void)state;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/order", g_dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    mt_config c = make_cfg();
    mt_moe_shape shape;
    mt_moe_shape_from_config(&c, &shape);
    mt_err err = {{0}};
    mt_placement plc;
    assert_int_equal(mt_placement_trivial(&shape, 4, &plc, &err), 0);
    mt_recorder_opts o;
    mt_recorder_opts_default(&o);
    o.dump_dir = dir;
    o.placement = &plc;
    mt_recorder *r = mt_recorder_new(&c, "tiny", &o, &err);
    assert_non_null(r);
    mt_recorder_start(r);
    mt_server_metrics metrics;
    mt_metrics_init(&metrics);
    mt_dump_writer *w = mt_dump_writer_new(&err);
    assert_non_null(w);
    for (int k = 0; k < WINDOWS; k++) {
        for (int p = 0; p <= k; p++) feed(mt_recorder_sink(r), p, 1 + k); /* window k: k + 1 passes of k + 1 tokens */
        mt_window_files f = {.window = mt_recorder_take(r, &err), .metrics = &metrics};
        assert_non_null(f.window);
        mt_placement *plan = malloc(sizeof *plan);
        assert_int_equal(mt_placement_copy(&plc, plan), 0);
        assert_int_equal(mt_dump_writer_submit(w, &f, plan), 0);
        if (k == WINDOWS / 2) mt_dump_writer_drain(w);
    }
    mt_dump_writer_drain(w);
    assert_int_equal(mt_dump_writer_pending(w), 0);
    mt_dump_writer_free(w);
    char *dumps[64], *plans[64];
    assert_int_equal(list(dir, "expert_distribution_", ".json", dumps, 64), WINDOWS);
    assert_int_equal(list(dir, "expert_placement_", ".json", plans, 64), WINDOWS);
    for (int k = 0; k < WINDOWS; k++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, dumps[k]);
        cJSON *d = mt_json_load_file(path, &err);
        assert_non_null(d);
        /* in the order given: window k has k + 1 passes of k + 1 tokens */
        assert_int_equal(cJSON_GetObjectItem(d, "num_forward_passes")->valueint, k + 1);
        assert_int_equal(cJSON_GetObjectItem(d, "num_tokens")->valueint, (k + 1) * (k + 1));
        cJSON_Delete(d);
        assert_string_equal(plans[k] + strlen("expert_placement_"), dumps[k] + strlen("expert_distribution_"));
        free(dumps[k]);
        free(plans[k]);
    }
    assert_int_equal(metrics.dumps_failed, 0);
    mt_metrics_destroy(&metrics);
    mt_recorder_free(r);
    mt_placement_free(&plc);
}

/* Freed with jobs queued: they are written first. A window whose folder is gone: counted, logged,
 * and the writer goes on. */
static void test_free_writes_all_and_failures(void **state) {
    (void)state;
    char dir[600], gone[600];
    snprintf(dir, sizeof dir, "%s/free", g_dir);
    snprintf(gone, sizeof gone, "%s/gone", g_dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(mkdir(gone, 0755), 0);
    mt_config c = make_cfg();
    mt_err err = {{0}};
    mt_recorder_opts o;
    mt_recorder_opts_default(&o);
    o.mode = MT_REC_PER_TOKEN;
    o.dump_dir = gone;
    mt_recorder *lost = mt_recorder_new(&c, "tiny", &o, &err);
    o.dump_dir = dir;
    mt_recorder *r = mt_recorder_new(&c, "tiny", &o, &err);
    assert_non_null(lost);
    assert_non_null(r);
    mt_recorder_start(lost);
    mt_recorder_start(r);
    mt_server_metrics metrics;
    mt_metrics_init(&metrics);
    mt_dump_writer *w = mt_dump_writer_new(&err);
    assert_non_null(w);
    feed(mt_recorder_sink(lost), 0, 3);
    mt_window_files f = {.window = mt_recorder_take(lost, &err), .metrics = &metrics};
    assert_int_equal(rmdir(gone), 0);
    assert_int_equal(mt_dump_writer_submit(w, &f, NULL), 0);
    for (int k = 0; k < 5; k++) {
        feed(mt_recorder_sink(r), k, 2);
        mt_window_files g = {.window = mt_recorder_take(r, &err), .metrics = &metrics};
        assert_int_equal(mt_dump_writer_submit(w, &g, NULL), 0);
    }
    mt_dump_writer_free(w); /* no drain before: free writes what is queued */
    char *dumps[16];
    int n = list(dir, "expert_distribution_", ".json", dumps, 16);
    assert_int_equal(n, 5);
    for (int k = 0; k < n; k++) free(dumps[k]);
    assert_int_equal(list(dir, "expert_distribution_", ".safetensors", dumps, 16), 5);
    for (int k = 0; k < 5; k++) free(dumps[k]);
    assert_int_equal(metrics.dumps_failed, 1);
    mt_metrics_destroy(&metrics);
    mt_recorder_free(lost);
    mt_recorder_free(r);
}

static int setup(void **state) {
    (void)state;
    return tmp_dir_make("dump_writer_");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_content),
        cmocka_unit_test(test_free_writes_all_and_failures),
    };
    return cmocka_run_group_tests(tests, setup, tmp_dir_teardown);
}
