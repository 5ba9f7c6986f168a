/* Expert distribution recorder: synthetic routing events (no model), every mode, windows, reset on
 * dump, per_token safetensors read back, channel consistency, dropped tokens, env options. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdatomic.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "model/safetensors.h"
#include "routing/recorder.h"
#include "routing/recorder_internal.h" /* mt_rec_put_back: what a failed dump does */
#include "routing/stat_dump.h"
#include "util/atomic_write.h"
#include "util/json_util.h"

enum { L = 4, E = 8, K = 2 };

static mt_config make_cfg(void) {
    mt_config c;
    memset(&c, 0, sizeof c);
    c.num_hidden_layers = L;
    c.num_experts = E;
    c.top_k = K;
    c.layer_is_moe[0] = false; /* one dense layer at the front */
    for (int l = 1; l < L; l++) c.layer_is_moe[l] = true;
    c.num_moe_layers = L - 1;
    return c;
}

/* Deterministic routing of token t of pass p at layer l, choice j (distinct per token). */
static int32_t route(int p, int t, int l, int j) { return (int32_t)((p * 7 + t * 3 + l * 5 + j * 3) % E); }

/* The names of requests 100, 101 and 102 in feed_pass's events (102 has none). */
static const char *const REQ_NAMES[3] = {"req-A", "cmpl-0123456789abcdef", NULL};

/* The groups of requests 100, 101 and 102 in feed_pass's events (101 has none). */
static const int32_t REQ_GROUPS[3] = {1, 0, 2};

/* Feeds one pass of n tokens (request id = 100 + t % 3, named REQ_NAMES[t % 3], in group
 * REQ_GROUPS[t % 3], position = p * 10 + t, token = 1000 + t). If expect is not NULL, adds the
 * pass's counts to it ([L, E]). */
static void feed_pass(mt_routing_sink s, int p, int n, int64_t *expect) {
    int32_t seq[64], pos[64], tok[64], ids[64 * K], group[64];
    int64_t req[64];
    const char *names[64];
    for (int t = 0; t < n; t++) {
        seq[t] = t % 3;
        req[t] = 100 + t % 3;
        group[t] = REQ_GROUPS[t % 3];
        /* copies: the recorder may keep no pointer past the pass */
        names[t] = REQ_NAMES[t % 3] ? strdup(REQ_NAMES[t % 3]) : NULL;
        pos[t] = p * 10 + t;
        tok[t] = 1000 + t;
    }
    for (int l = 1; l < L; l++) {
        for (int t = 0; t < n; t++)
            for (int j = 0; j < K; j++) {
                ids[t * K + j] = route(p, t, l, j);
                if (expect) expect[l * E + ids[t * K + j]]++;
            }
        mt_routing_event ev = {.layer = l, .n_tokens = n, .top_k = K, .seq_ids = seq, .positions = pos,
                               .tokens = tok, .request_ids = req, .request_names = names, .request_groups = group,
                               .topk_ids = ids, .topk_weights = NULL};
        s.on_layer(s.ctx, &ev);
    }
    mt_pass_event pe = {.n_tokens = n, .num_seqs_in_pass = n < 3 ? n : 3};
    s.on_pass(s.ctx, &pe);
    for (int t = 0; t < n; t++) free((char *)names[t]);
}

static mt_recorder *make(mt_recorder_mode mode, int buffer, long max_tokens, const char *dir) {
    mt_config c = make_cfg();
    mt_recorder_opts o;
    mt_recorder_opts_default(&o);
    o.mode = mode;
    o.buffer_size = buffer;
    o.max_tokens = max_tokens;
    o.dump_dir = dir;
    mt_err err = {{0}};
    mt_recorder *r = mt_recorder_new(&c, "tiny", &o, &err);
    if (!r) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(r);
    return r;
}

static void check_counts(mt_recorder *r, const int64_t *expect) {
    int64_t got[L * E];
    mt_recorder_logical_count(r, got);
    for (int i = 0; i < L * E; i++) assert_int_equal(got[i], expect[i]);
    for (int e = 0; e < E; e++) assert_int_equal(got[e], 0); /* dense layer */
}

static char tmpdir[256];

static int make_tmpdir(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "%s/rec_test_XXXXXX", MT_BINARY_DIR);
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int rm_tmpdir(void **state) {
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- tests ---- */

static void test_stat_unbounded(void **state) {
    (void)state;
    mt_recorder *r = make(MT_REC_STAT, -1, 100, NULL);
    mt_recorder_start(r);
    int64_t expect[L * E] = {0};
    int total = 0;
    for (int p = 0; p < 6; p++) {
        feed_pass(mt_recorder_sink(r), p, 5 + p, expect);
        total += 5 + p;
    }
    check_counts(r, expect);
    mt_recorder_counts c;
    mt_recorder_get_counts(r, &c);
    assert_int_equal(c.num_forward_passes, 6);
    assert_int_equal(c.num_tokens, total);
    /* every MoE row sums to tokens * top_k */
    int64_t got[L * E];
    mt_recorder_logical_count(r, got);
    for (int l = 1; l < L; l++) {
        int64_t s = 0;
        for (int e = 0; e < E; e++) s += got[l * E + e];
        assert_int_equal(s, (int64_t)total * K);
    }
    mt_recorder_free(r);
}

static void test_stat_window(void **state) {
    (void)state;
    mt_recorder *r = make(MT_REC_STAT, 3, 100, NULL);
    mt_recorder_start(r);
    int64_t expect[L * E] = {0};
    for (int p = 0; p < 7; p++) feed_pass(mt_recorder_sink(r), p, 4 + p, p >= 4 ? expect : NULL);
    check_counts(r, expect);
    mt_recorder_counts c;
    mt_recorder_get_counts(r, &c);
    assert_int_equal(c.num_forward_passes, 3);
    assert_int_equal(c.num_tokens, 8 + 9 + 10);
    mt_recorder_free(r);
}

static void test_inactive_records_nothing(void **state) {
    (void)state;
    mt_recorder *r = make(MT_REC_PER_TOKEN, -1, 100, NULL);
    int64_t zero[L * E] = {0};
    feed_pass(mt_recorder_sink(r), 0, 5, NULL);
    check_counts(r, zero);
    /* Started after the first layer of a pass: that pass is not recorded (whole passes only). */
    mt_routing_sink s = mt_recorder_sink(r);
    int32_t ids[2 * K] = {0, 1, 2, 3}, z[2] = {0, 0};
    mt_routing_event ev = {.layer = 1, .n_tokens = 2, .top_k = K, .seq_ids = z, .positions = z, .tokens = z,
                           .topk_ids = ids};
    s.on_layer(s.ctx, &ev);
    mt_recorder_start(r);
    ev.layer = 2;
    s.on_layer(s.ctx, &ev);
    mt_pass_event pe = {2, 1};
    s.on_pass(s.ctx, &pe);
    check_counts(r, zero);
    /* Stopped in the middle of a pass: dropped too. */
    ev.layer = 1;
    s.on_layer(s.ctx, &ev);
    mt_recorder_stop(r);
    s.on_pass(s.ctx, &pe);
    check_counts(r, zero);
    mt_recorder_counts c;
    mt_recorder_get_counts(r, &c);
    assert_int_equal(c.num_forward_passes, 0);
    assert_int_equal(c.tokens_recorded, 0);
    assert_false(mt_recorder_active(r));
    mt_recorder_free(r);
}

/* An inactive sink must not look at the event's data: garbage pointers and sizes are harmless. */
static void test_inactive_sink_touches_nothing(void **state) {
    (void)state;
    mt_recorder *r = make(MT_REC_PER_TOKEN, -1, 100, NULL);
    mt_routing_sink s = mt_recorder_sink(r);
    mt_routing_event ev = {.layer = 1, .n_tokens = 1 << 30, .top_k = K,
                           .topk_ids = (const int32_t *)(uintptr_t)16, .tokens = (const int32_t *)(uintptr_t)16};
    mt_pass_event pe = {1 << 30, 1};
    for (int i = 0; i < 1000000; i++) {
        ev.layer = 1 + i % (L - 1);
        s.on_layer(s.ctx, &ev);
        if (ev.layer == L - 1) s.on_pass(s.ctx, &pe);
    }
    mt_recorder_counts c;
    mt_recorder_get_counts(r, &c);
    assert_int_equal(c.num_forward_passes, 0);
    mt_recorder_free(r);
}

static void check_dump_shape(const cJSON *o, const char *mode, int64_t passes, int64_t tokens) {
    assert_string_equal(cJSON_GetObjectItem(o, "format")->valuestring, "moetrace.expert_distribution.v1");
    assert_string_equal(cJSON_GetObjectItem(o, "mode")->valuestring, mode);
    assert_string_equal(cJSON_GetObjectItem(o, "model")->valuestring, "tiny");
    assert_int_equal(cJSON_GetObjectItem(o, "num_hidden_layers")->valueint, L);
    assert_int_equal(cJSON_GetObjectItem(o, "num_experts")->valueint, E);
    assert_int_equal(cJSON_GetObjectItem(o, "top_k")->valueint, K);
    assert_int_equal(cJSON_GetObjectItem(o, "ep_size")->valueint, 8);
    assert_int_equal((int64_t)cJSON_GetObjectItem(o, "num_forward_passes")->valuedouble, passes);
    assert_int_equal((int64_t)cJSON_GetObjectItem(o, "num_tokens")->valuedouble, tokens);
    const cJSON *moe = cJSON_GetObjectItem(o, "moe_layers");
    assert_int_equal(cJSON_GetArraySize(moe), L - 1);
    for (int i = 0; i < L - 1; i++) assert_int_equal(cJSON_GetArrayItem(moe, i)->valueint, i + 1);
    const cJSON *lc = cJSON_GetObjectItem(o, "logical_count");
    assert_int_equal(cJSON_GetArraySize(lc), L);
    for (int l = 0; l < L; l++) assert_int_equal(cJSON_GetArraySize(cJSON_GetArrayItem(lc, l)), E);
    const cJSON *bal = cJSON_GetObjectItem(o, "balancedness");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(bal, "per_layer")), L - 1);
    double mean = cJSON_GetObjectItem(bal, "mean")->valuedouble;
    assert_true(mean > 0 && mean <= 1.0);
}

/* An event for a dense layer (no engine sends one) is not counted: its row of logical_count stays
 * zeros, as SPEC §4 has it and the dump reader requires, and the dump reads back. */
static void test_dense_layer_event_ignored(void **state) {
    (void)state;
    mt_recorder *r = make(MT_REC_STAT, 1000, 100, tmpdir);
    mt_recorder_start(r);
    int32_t seq[4] = {0}, pos[4] = {0, 1, 2, 3}, tok[4] = {5, 6, 7, 8}, ids[4 * K] = {1, 2, 3, 4, 5, 6, 7, 0};
    mt_routing_event dense = {.layer = 0, .n_tokens = 4, .top_k = K, .seq_ids = seq, .positions = pos, .tokens = tok,
                              .topk_ids = ids};
    mt_routing_sink s = mt_recorder_sink(r);
    s.on_layer(s.ctx, &dense); /* the pass's first event, before feed_pass's MoE layers */
    int64_t expect[L * E] = {0};
    feed_pass(s, 0, 4, expect);
    check_counts(r, expect);
    char path[4096];
    mt_err err = {{0}};
    assert_int_equal(mt_recorder_dump(r, path, sizeof path, &err), 0);
    mt_stat_dump d;
    if (mt_stat_dump_load(path, &d, &err)) fail_msg("%s", err.msg);
    mt_stat_dump_free(&d);
    mt_recorder_free(r);
}

static void test_stat_dump_file_and_reset(void **state) {
    (void)state;
    mt_recorder *r = make(MT_REC_STAT, 1000, 100, tmpdir);
    mt_recorder_start(r);
    int64_t expect[L * E] = {0};
    for (int p = 0; p < 4; p++) feed_pass(mt_recorder_sink(r), p, 6, expect);
    char path[4096];
    mt_err err = {{0}};
    assert_int_equal(mt_recorder_dump(r, path, sizeof path, &err), 0);
    assert_non_null(strstr(path, "/expert_distribution_"));
    assert_non_null(strstr(path, ".json"));
    cJSON *o = mt_json_load_file(path, &err);
    assert_non_null(o);
    check_dump_shape(o, "stat", 4, 24);
    const cJSON *lc = cJSON_GetObjectItem(o, "logical_count");
    for (int l = 0; l < L; l++)
        for (int e = 0; e < E; e++)
            assert_int_equal((int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(lc, l), e)->valuedouble, expect[l * E + e]);
    cJSON_Delete(o);
    /* The project's stat dump reader accepts it. */
    mt_stat_dump d;
    assert_int_equal(mt_stat_dump_load(path, &d, &err), 0);
    assert_int_equal(d.num_moe_layers, L - 1);
    assert_int_equal(d.moe_count[0 * E + 3], expect[1 * E + 3]);
    assert_int_equal(d.num_tokens, 24);
    mt_stat_dump_free(&d);
    /* Reset on dump; still recording afterwards. */
    int64_t zero[L * E] = {0};
    check_counts(r, zero);
    assert_true(mt_recorder_active(r));
    int64_t expect2[L * E] = {0};
    feed_pass(mt_recorder_sink(r), 9, 3, expect2);
    check_counts(r, expect2);
    /* A second dump in the same millisecond gets another name. */
    char path2[4096];
    assert_int_equal(mt_recorder_dump(r, path2, sizeof path2, &err), 0);
    assert_string_not_equal(path, path2);
    mt_recorder_free(r);
}

static void test_per_pass(void **state) {
    (void)state;
    /* unbounded: more passes than the initial ring capacity */
    mt_recorder *r = make(MT_REC_PER_PASS, -1, 100, NULL);
    mt_routing_sink s = mt_recorder_sink(r);
    feed_pass(s, 0, 3, NULL); /* pass 0 not recorded (inactive) */
    mt_recorder_start(r);
    int64_t expect[L * E] = {0};
    for (int p = 1; p <= 40; p++) feed_pass(s, p, 1 + p % 7, expect);
    mt_err err = {{0}};
    cJSON *o = mt_recorder_dump_json(r, true, &err);
    assert_non_null(o);
    int64_t ntok = 0;
    for (int p = 1; p <= 40; p++) ntok += 1 + p % 7;
    check_dump_shape(o, "per_pass", 40, ntok);
    const cJSON *passes = cJSON_GetObjectItem(o, "passes");
    assert_int_equal(cJSON_GetArraySize(passes), 40);
    int64_t sum[L * E] = {0};
    for (int i = 0; i < 40; i++) {
        const cJSON *po = cJSON_GetArrayItem(passes, i);
        assert_int_equal(cJSON_GetObjectItem(po, "forward_pass_id")->valueint, i + 1);
        assert_int_equal(cJSON_GetObjectItem(po, "num_tokens")->valueint, 1 + (i + 1) % 7);
        const cJSON *lc = cJSON_GetObjectItem(po, "logical_count");
        assert_int_equal(cJSON_GetArraySize(lc), L);
        for (int l = 0; l < L; l++)
            for (int e = 0; e < E; e++) sum[l * E + e] += cJSON_GetArrayItem(cJSON_GetArrayItem(lc, l), e)->valueint;
    }
    for (int i = 0; i < L * E; i++) assert_int_equal(sum[i], expect[i]);
    cJSON_Delete(o);
    mt_recorder_counts c;
    mt_recorder_get_counts(r, &c);
    assert_int_equal(c.num_forward_passes, 0); /* reset */
    mt_recorder_free(r);

    /* bounded: the last 4 passes */
    r = make(MT_REC_PER_PASS, 4, 100, NULL);
    mt_recorder_start(r);
    for (int p = 0; p < 10; p++) feed_pass(mt_recorder_sink(r), p, 2, NULL);
    o = mt_recorder_dump_json(r, false, &err);
    passes = cJSON_GetObjectItem(o, "passes");
    assert_int_equal(cJSON_GetArraySize(passes), 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(passes, i), "forward_pass_id")->valueint, 6 + i);
    assert_int_equal(cJSON_GetObjectItem(o, "num_forward_passes")->valueint, 4);
    cJSON_Delete(o);
    mt_recorder_free(r);
}

/* Swapping what two recorders hold: the dump of the one that took the data is what the other's
 * would have been, the other goes on from empty, and recorders of other options refuse. */
static void test_swap(void **state) {
    (void)state;
    mt_recorder_mode modes[3] = {MT_REC_STAT, MT_REC_PER_PASS, MT_REC_PER_TOKEN};
    for (int m = 0; m < 3; m++) {
        mt_recorder *a = make(modes[m], 3, 100, NULL), *b = make(modes[m], 3, 100, NULL),
                    *ref = make(modes[m], 3, 100, NULL);
        mt_recorder_start(a);
        mt_recorder_start(ref);
        for (int p = 0; p < 5; p++) {
            feed_pass(mt_recorder_sink(a), p, 3 + p, NULL);
            feed_pass(mt_recorder_sink(ref), p, 3 + p, NULL);
        }
        assert_int_equal(mt_recorder_swap(a, b), 0);
        mt_err err = {{0}};
        cJSON *want = mt_recorder_dump_json(ref, true, &err), *got = mt_recorder_dump_json(b, true, &err);
        char *w = cJSON_PrintUnformatted(want), *g = cJSON_PrintUnformatted(got);
        assert_string_equal(g, w);
        free(w);
        free(g);
        cJSON_Delete(want);
        cJSON_Delete(got);
        mt_recorder_counts c;
        mt_recorder_get_counts(a, &c);
        assert_int_equal(c.num_forward_passes, 0);
        assert_int_equal(c.tokens_recorded, 0);
        /* a records on from empty, as a fresh recorder would */
        feed_pass(mt_recorder_sink(a), 9, 4, NULL);
        feed_pass(mt_recorder_sink(ref), 9, 4, NULL);
        want = mt_recorder_dump_json(ref, false, &err);
        got = mt_recorder_dump_json(a, false, &err);
        w = cJSON_PrintUnformatted(want);
        g = cJSON_PrintUnformatted(got);
        assert_string_equal(g, w);
        free(w);
        free(g);
        cJSON_Delete(want);
        cJSON_Delete(got);
        mt_recorder_free(a);
        mt_recorder_free(b);
        mt_recorder_free(ref);
    }
    mt_recorder *s = make(MT_REC_STAT, 3, 100, NULL), *t = make(MT_REC_STAT, -1, 100, NULL),
                *u = make(MT_REC_PER_PASS, 3, 100, NULL);
    assert_int_equal(mt_recorder_swap(s, t), -1);
    assert_int_equal(mt_recorder_swap(s, u), -1);
    assert_int_equal(mt_recorder_swap(s, s), 0);
    mt_recorder_free(s);
    mt_recorder_free(t);
    mt_recorder_free(u);
}

/* A window taken out (as a dump does before writing it) and put back after a failed write, while
 * passes went on meanwhile, leaves exactly what a recorder never dumped holds: the window's passes
 * in order, evictions (buffer 3) and the per_token row limit (max_tokens 20) applied again. */
static void test_put_back(void **state) {
    (void)state;
    mt_recorder_mode modes[3] = {MT_REC_STAT, MT_REC_PER_PASS, MT_REC_PER_TOKEN};
    for (int m = 0; m < 3; m++)
        for (int bounded = 0; bounded < 2; bounded++) {
            int buffer = bounded ? 3 : -1;
            long max_tokens = bounded ? 20 : 1000;
            char dir_r[400], dir_ref[400];
            snprintf(dir_r, sizeof dir_r, "%s/put_back_%d_%d", tmpdir, m, bounded);
            snprintf(dir_ref, sizeof dir_ref, "%s/put_back_ref_%d_%d", tmpdir, m, bounded);
            assert_int_equal(mkdir(dir_r, 0755), 0);
            assert_int_equal(mkdir(dir_ref, 0755), 0);
            mt_recorder *r = make(modes[m], buffer, max_tokens, dir_r), *ref = make(modes[m], buffer, max_tokens, dir_ref);
            mt_recorder_start(r);
            mt_recorder_start(ref);
            for (int p = 0; p < 4; p++) {
                feed_pass(mt_recorder_sink(r), p, 2 + p, NULL);
                feed_pass(mt_recorder_sink(ref), p, 2 + p, NULL);
            }
            mt_err err = {{0}};
            mt_recorder *t = mt_recorder_take(r, &err);
            assert_non_null(t);
            for (int p = 4; p < 7; p++) { /* passes committed while the dump was being written */
                feed_pass(mt_recorder_sink(r), p, 1 + p, NULL);
                feed_pass(mt_recorder_sink(ref), p, 1 + p, NULL);
            }
            mt_rec_put_back(r, t);
            mt_recorder_free(t);
            cJSON *want = mt_recorder_dump_json(ref, false, &err), *got = mt_recorder_dump_json(r, false, &err);
            assert_non_null(want);
            assert_non_null(got);
            char *w = cJSON_PrintUnformatted(want), *g = cJSON_PrintUnformatted(got);
            if (strcmp(g, w)) fail_msg("mode %d buffer %d: put back\n%s\nwant\n%s", m, buffer, g, w);
            free(w);
            free(g);
            cJSON_Delete(want);
            cJSON_Delete(got);
            mt_recorder_counts a, b;
            mt_recorder_get_counts(r, &a);
            mt_recorder_get_counts(ref, &b);
            assert_int_equal(a.tokens_recorded, b.tokens_recorded);
            assert_int_equal(a.dropped_tokens, b.dropped_tokens);
            if (modes[m] == MT_REC_PER_TOKEN) { /* the rows and the requests too: the dumps' files */
                char path_r[4096], path_ref[4096];
                assert_int_equal(mt_recorder_dump(r, path_r, sizeof path_r, &err), 0);
                assert_int_equal(mt_recorder_dump(ref, path_ref, sizeof path_ref, &err), 0);
                cJSON *ir = mt_json_load_file(path_r, &err), *iref = mt_json_load_file(path_ref, &err);
                assert_non_null(ir);
                assert_non_null(iref);
                char st_r[4200], st_ref[4200];
                snprintf(st_r, sizeof st_r, "%s/%s", dir_r, cJSON_GetObjectItem(ir, "tensors")->valuestring);
                snprintf(st_ref, sizeof st_ref, "%s/%s", dir_ref, cJSON_GetObjectItem(iref, "tensors")->valuestring);
                cJSON_DeleteItemFromObject(ir, "tensors");
                cJSON_DeleteItemFromObject(iref, "tensors");
                w = cJSON_PrintUnformatted(iref);
                g = cJSON_PrintUnformatted(ir);
                assert_string_equal(g, w);
                free(w);
                free(g);
                cJSON_Delete(ir);
                cJSON_Delete(iref);
                mt_checkpoint *cr = NULL, *cref = NULL;
                assert_int_equal(mt_checkpoint_open(&cr, st_r, &err), 0);
                assert_int_equal(mt_checkpoint_open(&cref, st_ref, &err), 0);
                const char *names[4] = {"topk_ids", "request_index", "position", "token_id"};
                for (int k = 0; k < 4; k++) {
                    const mt_tensor_info *x = mt_checkpoint_find(cr, names[k]), *y = mt_checkpoint_find(cref, names[k]);
                    assert_non_null(x);
                    assert_non_null(y);
                    assert_int_equal(x->nbytes, y->nbytes);
                    assert_memory_equal(x->data, y->data, x->nbytes);
                }
                mt_checkpoint_close(cr);
                mt_checkpoint_close(cref);
            }
            /* a window taken before a reset is not put back: the reset dropped it */
            mt_recorder *again = mt_recorder_take(r, &err), *after = make(modes[m], buffer, max_tokens, NULL);
            assert_non_null(again);
            mt_recorder_reset(r);
            mt_recorder_start(after);
            feed_pass(mt_recorder_sink(r), 9, 3, NULL);
            feed_pass(mt_recorder_sink(after), 9, 3, NULL);
            mt_rec_put_back(r, again);
            mt_recorder_free(again);
            int64_t kept[L * E], want_kept[L * E];
            mt_recorder_logical_count(r, kept);
            mt_recorder_logical_count(after, want_kept);
            assert_memory_equal(kept, want_kept, sizeof kept);
            mt_recorder_get_counts(r, &a);
            mt_recorder_get_counts(after, &b);
            assert_int_equal(a.num_forward_passes, b.num_forward_passes);
            assert_int_equal(a.num_tokens, b.num_tokens);
            assert_int_equal(a.tokens_recorded, b.tokens_recorded);
            mt_recorder_free(after);
            mt_recorder_free(r);
            mt_recorder_free(ref);
        }
}

/* Reads the per_token dump back with the project's safetensors reader. */
static void test_per_token_safetensors(void **state) {
    (void)state;
    mt_recorder *r = make(MT_REC_PER_TOKEN, -1, 1000, tmpdir);
    mt_routing_sink s = mt_recorder_sink(r);
    mt_recorder_start(r);
    int64_t expect[L * E] = {0};
    int ns[5] = {5, 1, 3, 7, 2}, T = 0;
    for (int p = 0; p < 5; p++) {
        feed_pass(s, p, ns[p], expect);
        T += ns[p];
    }
    int64_t stat[L * E];
    mt_recorder_logical_count(r, stat);
    char path[4096];
    mt_err err = {{0}};
    assert_int_equal(mt_recorder_dump(r, path, sizeof path, &err), 0);
    cJSON *o = mt_json_load_file(path, &err);
    assert_non_null(o);
    check_dump_shape(o, "per_token", 5, T);
    assert_int_equal(cJSON_GetObjectItem(o, "dropped_tokens")->valueint, 0);
    assert_int_equal(cJSON_GetObjectItem(o, "num_tokens_recorded")->valueint, T);
    /* the requests' names as strings, first-seen order; one without a name: its id's digits */
    const cJSON *rid = cJSON_GetObjectItem(o, "request_ids");
    assert_int_equal(cJSON_GetArraySize(rid), 3);
    assert_true(cJSON_IsString(cJSON_GetArrayItem(rid, 0)));
    assert_string_equal(cJSON_GetArrayItem(rid, 0)->valuestring, REQ_NAMES[0]);
    assert_string_equal(cJSON_GetArrayItem(rid, 1)->valuestring, REQ_NAMES[1]);
    assert_string_equal(cJSON_GetArrayItem(rid, 2)->valuestring, "102");
    assert_null(cJSON_GetObjectItem(o, "request_domains")); /* groups, but nothing names them */
    const char *tname = cJSON_GetObjectItem(o, "tensors")->valuestring;
    char stp[4200];
    snprintf(stp, sizeof stp, "%s/%s", tmpdir, tname);
    cJSON_Delete(o);

    mt_checkpoint *ck = NULL;
    int rc = mt_checkpoint_open(&ck, stp, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(mt_checkpoint_count(ck), 4);
    const mt_tensor_info *ids = mt_checkpoint_find(ck, "topk_ids");
    const mt_tensor_info *req = mt_checkpoint_find(ck, "request_index");
    const mt_tensor_info *pos = mt_checkpoint_find(ck, "position");
    const mt_tensor_info *tok = mt_checkpoint_find(ck, "token_id");
    assert_non_null(ids);
    assert_non_null(req);
    assert_non_null(pos);
    assert_non_null(tok);
    assert_string_equal(ids->dtype_name, "I32");
    assert_string_equal(req->dtype_name, "I64");
    assert_int_equal(ids->ndim, 3);
    assert_int_equal(ids->shape[0], T);
    assert_int_equal(ids->shape[1], L);
    assert_int_equal(ids->shape[2], K);
    assert_int_equal(ids->nbytes, (size_t)T * L * K * 4);
    assert_int_equal(req->nbytes, (size_t)T * 8);
    assert_int_equal(pos->shape[0], T);
    assert_int_equal(tok->nbytes, (size_t)T * 4);
    assert_int_equal((uintptr_t)req->data % 8, 0);
    assert_int_equal((uintptr_t)ids->data % 4, 0);
    /* rows: dense layer -1, MoE layers the routing fed; metadata per token */
    int64_t derived[L * E] = {0};
    int t = 0;
    for (int p = 0; p < 5; p++)
        for (int i = 0; i < ns[p]; i++, t++) {
            int32_t row[L * K], pp, tt;
            int64_t ri;
            memcpy(row, (const char *)ids->data + (size_t)t * L * K * 4, sizeof row);
            memcpy(&ri, (const char *)req->data + (size_t)t * 8, 8);
            memcpy(&pp, (const char *)pos->data + (size_t)t * 4, 4);
            memcpy(&tt, (const char *)tok->data + (size_t)t * 4, 4);
            assert_int_equal(ri, i % 3); /* first-seen order: 100, 101, 102 */
            assert_int_equal(pp, p * 10 + i);
            assert_int_equal(tt, 1000 + i);
            for (int j = 0; j < K; j++) assert_int_equal(row[j], -1);
            for (int l = 1; l < L; l++)
                for (int j = 0; j < K; j++) {
                    assert_int_equal(row[l * K + j], route(p, i, l, j));
                    derived[l * E + row[l * K + j]]++;
                }
        }
    mt_checkpoint_close(ck);
    /* channel consistency: stat == derived from per_token == derived from the events */
    for (int i = 0; i < L * E; i++) {
        assert_int_equal(stat[i], expect[i]);
        assert_int_equal(derived[i], expect[i]);
    }
    mt_recorder_free(r);
}

/* Names group 1 only. */
static bool label_of(void *ctx, int32_t g, char *out, size_t size) {
    ++*(int *)ctx;
    if (g != 1) return false;
    snprintf(out, size, "code");
    return true;
}

/* With a label function the index lists each request's domain: its group's name, else null. */
static void test_per_token_domains(void **state) {
    (void)state;
    mt_recorder *r = make(MT_REC_PER_TOKEN, -1, 1000, tmpdir);
    int calls = 0;
    mt_recorder_set_group_label(r, label_of, &calls);
    mt_routing_sink s = mt_recorder_sink(r);
    mt_recorder_start(r);
    for (int p = 0; p < 3; p++) feed_pass(s, p, 4, NULL);
    char path[4096];
    mt_err err = {{0}};
    assert_int_equal(mt_recorder_dump(r, path, sizeof path, &err), 0);
    cJSON *o = mt_json_load_file(path, &err);
    assert_non_null(o);
    const cJSON *d = cJSON_GetObjectItem(o, "request_domains");
    assert_int_equal(cJSON_GetArraySize(d), 3);
    assert_string_equal(cJSON_GetArrayItem(d, 0)->valuestring, "code");
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(d, 1))); /* no group */
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(d, 2))); /* a group without a name */
    assert_int_equal(calls, 2);                          /* asked for the grouped requests only */
    cJSON_Delete(o);
    /* requests without groups: no list */
    mt_recorder_set_group_label(r, NULL, NULL);
    feed_pass(s, 3, 2, NULL);
    assert_int_equal(mt_recorder_dump(r, path, sizeof path, &err), 0);
    o = mt_json_load_file(path, &err);
    assert_null(cJSON_GetObjectItem(o, "request_domains"));
    cJSON_Delete(o);
    mt_recorder_free(r);
}

static void test_per_token_dropped(void **state) {
    (void)state;
    mt_recorder *r = make(MT_REC_PER_TOKEN, -1, 10, tmpdir);
    mt_recorder_start(r);
    for (int p = 0; p < 4; p++) feed_pass(mt_recorder_sink(r), p, 4, NULL);
    mt_recorder_counts c;
    mt_recorder_get_counts(r, &c);
    assert_int_equal(c.tokens_recorded, 10);
    assert_int_equal(c.dropped_tokens, 6);
    assert_int_equal(c.num_tokens, 16);
    char path[4096];
    mt_err err = {{0}};
    assert_int_equal(mt_recorder_dump(r, path, sizeof path, &err), 0);
    cJSON *o = mt_json_load_file(path, &err);
    assert_int_equal(cJSON_GetObjectItem(o, "dropped_tokens")->valueint, 6);
    assert_int_equal(cJSON_GetObjectItem(o, "num_tokens_recorded")->valueint, 10);
    assert_int_equal(cJSON_GetObjectItem(o, "max_tokens")->valueint, 10);
    cJSON_Delete(o);
    mt_recorder_get_counts(r, &c);
    assert_int_equal(c.dropped_tokens, 0);
    /* an empty per_token dump is still a valid safetensors file */
    assert_int_equal(mt_recorder_dump(r, path, sizeof path, &err), 0);
    o = mt_json_load_file(path, &err);
    char stp[4200];
    snprintf(stp, sizeof stp, "%s/%s", tmpdir, cJSON_GetObjectItem(o, "tensors")->valuestring);
    cJSON_Delete(o);
    mt_checkpoint *ck = NULL;
    int rc = mt_checkpoint_open(&ck, stp, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(mt_checkpoint_find(ck, "topk_ids")->shape[0], 0);
    mt_checkpoint_close(ck);
    mt_recorder_free(r);
}

/* Wider expert ids (int16 and int32 storage) and out-of-range ids (stored as -1, not counted). */
static void test_per_token_wide_ids(void **state) {
    (void)state;
    int Es[3] = {255, 300, 40000};
    for (int c = 0; c < 3; c++) {
        int NE = Es[c];
        mt_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.num_hidden_layers = 2;
        cfg.num_experts = NE;
        cfg.top_k = 2;
        cfg.layer_is_moe[1] = true;
        cfg.num_moe_layers = 1;
        mt_recorder_opts o;
        mt_recorder_opts_default(&o);
        o.mode = MT_REC_PER_TOKEN;
        o.dump_dir = tmpdir;
        mt_err err = {{0}};
        mt_recorder *r = mt_recorder_new(&cfg, "wide", &o, &err);
        assert_non_null(r);
        mt_recorder_start(r);
        mt_routing_sink s = mt_recorder_sink(r);
        int32_t ids[6] = {NE - 1, 0, NE, 7, -3, NE - 2}, z[3] = {0, 1, 2};
        mt_routing_event ev = {.layer = 1, .n_tokens = 3, .top_k = 2, .seq_ids = z, .positions = z, .tokens = z,
                               .topk_ids = ids};
        s.on_layer(s.ctx, &ev);
        mt_pass_event pe = {3, 1};
        s.on_pass(s.ctx, &pe);
        int64_t *cnt = calloc((size_t)2 * NE, sizeof *cnt);
        mt_recorder_logical_count(r, cnt);
        assert_int_equal(cnt[NE + NE - 1], 1);
        assert_int_equal(cnt[NE + NE - 2], 1);
        assert_int_equal(cnt[NE + 0], 1);
        assert_int_equal(cnt[NE + 7], 1);
        free(cnt);
        char path[4096];
        assert_int_equal(mt_recorder_dump(r, path, sizeof path, &err), 0);
        cJSON *j = mt_json_load_file(path, &err);
        char stp[4200];
        snprintf(stp, sizeof stp, "%s/%s", tmpdir, cJSON_GetObjectItem(j, "tensors")->valuestring);
        /* request ids default to the sequence slots, as strings */
        const cJSON *rid = cJSON_GetObjectItem(j, "request_ids");
        assert_int_equal(cJSON_GetArraySize(rid), 3);
        for (int i = 0; i < 3; i++) {
            char want[4];
            snprintf(want, sizeof want, "%d", i);
            assert_true(cJSON_IsString(cJSON_GetArrayItem(rid, i)));
            assert_string_equal(cJSON_GetArrayItem(rid, i)->valuestring, want);
        }
        cJSON_Delete(j);
        mt_checkpoint *ck = NULL;
        assert_int_equal(mt_checkpoint_open(&ck, stp, &err), 0);
        const mt_tensor_info *t = mt_checkpoint_find(ck, "topk_ids");
        int32_t got[12];
        assert_int_equal(t->nbytes, sizeof got);
        memcpy(got, t->data, sizeof got);
        int32_t want[12] = {-1, -1, NE - 1, 0, -1, -1, -1, 7, -1, -1, -1, NE - 2};
        for (int i = 0; i < 12; i++) assert_int_equal(got[i], want[i]);
        mt_checkpoint_close(ck);
        mt_recorder_free(r);
    }
}

static void test_env_options(void **state) {
    (void)state;
    mt_recorder_opts o;
    mt_err err = {{0}};
    mt_recorder_opts_default(&o);
    unsetenv("MOETRACE_EXPERT_RECORDER_MODE");
    unsetenv("MOETRACE_EXPERT_DUMP_DIR");
    assert_int_equal(mt_recorder_opts_from_env(&o, &err), 0);
    assert_int_equal(o.mode, MT_REC_STAT);
    assert_null(o.dump_dir);

    setenv("MOETRACE_EXPERT_RECORDER_MODE", "per_token", 1);
    setenv("MOETRACE_EXPERT_DUMP_DIR", tmpdir, 1);
    assert_int_equal(mt_recorder_opts_from_env(&o, &err), 0);
    assert_int_equal(o.mode, MT_REC_PER_TOKEN);
    assert_string_equal(o.dump_dir, tmpdir);

    mt_recorder_opts_default(&o);
    setenv("MOETRACE_EXPERT_RECORDER_MODE", "histogram", 1);
    assert_int_equal(mt_recorder_opts_from_env(&o, &err), -1);
    assert_non_null(strstr(err.msg, "MOETRACE_EXPERT_RECORDER_MODE"));
    assert_non_null(strstr(err.msg, "histogram"));
    assert_int_equal(o.mode, MT_REC_STAT); /* untouched */
    setenv("MOETRACE_EXPERT_RECORDER_MODE", "", 1);
    assert_int_equal(mt_recorder_opts_from_env(&o, &err), -1);
    setenv("MOETRACE_EXPERT_RECORDER_MODE", "per_pass", 1);
    setenv("MOETRACE_EXPERT_DUMP_DIR", "/nonexistent/rec", 1);
    assert_int_equal(mt_recorder_opts_from_env(&o, &err), -1);
    assert_non_null(strstr(err.msg, "MOETRACE_EXPERT_DUMP_DIR"));
    assert_null(o.dump_dir);
    setenv("MOETRACE_EXPERT_DUMP_DIR", "", 1);
    assert_int_equal(mt_recorder_opts_from_env(&o, &err), -1);
    assert_non_null(strstr(err.msg, "MOETRACE_EXPERT_DUMP_DIR"));
    unsetenv("MOETRACE_EXPERT_RECORDER_MODE");
    unsetenv("MOETRACE_EXPERT_DUMP_DIR");

    mt_recorder_mode m;
    assert_int_equal(mt_recorder_parse_mode("per_pass", &m, &err), 0);
    assert_int_equal(m, MT_REC_PER_PASS);
    assert_int_equal(mt_recorder_parse_mode("STAT", &m, &err), -1);
    assert_non_null(strstr(err.msg, "STAT"));

    /* bad options at creation */
    mt_config c = make_cfg();
    mt_recorder_opts_default(&o);
    o.buffer_size = 0;
    assert_null(mt_recorder_new(&c, "x", &o, &err));
    assert_non_null(strstr(err.msg, "buffer size"));
    mt_recorder_opts_default(&o);
    o.ep_size = 9;
    assert_null(mt_recorder_new(&c, "x", &o, &err));
    assert_non_null(strstr(err.msg, "ep_size"));
    o.ep_size = 3; /* not M equal blocks of the 8 experts (SPEC §4) */
    assert_null(mt_recorder_new(&c, "x", &o, &err));
    assert_non_null(strstr(err.msg, "ep_size 3 does not divide num_experts 8"));
    /* ep_size default: 1 when 8 does not divide num_experts */
    c.num_experts = 6;
    mt_recorder_opts_default(&o);
    mt_recorder *r = mt_recorder_new(&c, NULL, &o, &err);
    assert_non_null(r);
    cJSON *j = mt_recorder_dump_json(r, false, &err);
    assert_int_equal(cJSON_GetObjectItem(j, "ep_size")->valueint, 1);
    cJSON_Delete(j);
    mt_recorder_free(r);
    /* dumping into a missing folder is an error naming it */
    mt_recorder_opts_default(&o);
    o.dump_dir = "/nonexistent/rec";
    c = make_cfg();
    r = mt_recorder_new(&c, NULL, &o, &err);
    assert_int_equal(mt_recorder_dump(r, NULL, 0, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/rec"));
    mt_recorder_free(r);
}

static void test_atomic_write(void **state) {
    (void)state;
    char path[400];
    snprintf(path, sizeof path, "%s/aw.txt", tmpdir);
    mt_err err = {{0}};
    assert_int_equal(mt_atomic_write(path, "old", 3, &err), 0);
    mt_write_chunk ch[2] = {{"hello ", 6}, {"world", 5}};
    assert_int_equal(mt_atomic_write_chunks(path, ch, 2, &err), 0);
    size_t n;
    char *s = mt_read_file(path, &n, &err);
    assert_string_equal(s, "hello world");
    free(s);
    assert_int_equal(mt_atomic_write("/nonexistent/dir/f", "x", 1, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/f"));
    /* no temporary left behind */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q '\\.tmp\\.'", tmpdir);
    assert_int_not_equal(system(cmd), 0);
}

/* An engine thread feeds passes while another starts, stops and dumps: every dump is whole-pass
 * consistent (each MoE row sums to num_tokens * top_k). */
typedef struct feeder {
    mt_recorder *r;
    atomic_int done;
} feeder;

static void *feed_thread(void *arg) {
    feeder *f = arg;
    for (int p = 0; p < 3000; p++) feed_pass(mt_recorder_sink(f->r), p, 1 + p % 9, NULL);
    atomic_store(&f->done, 1);
    return NULL;
}

static void check_consistent(const cJSON *o) {
    int64_t nt = (int64_t)cJSON_GetObjectItem(o, "num_tokens")->valuedouble;
    const cJSON *lc = cJSON_GetObjectItem(o, "logical_count");
    for (int l = 0; l < L; l++) {
        int64_t s = 0;
        for (int e = 0; e < E; e++) s += (int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(lc, l), e)->valuedouble;
        assert_int_equal(s, l == 0 ? 0 : nt * K);
    }
}

static void test_threads(void **state) {
    (void)state;
    for (int mode = 0; mode < 3; mode++) {
        feeder f = {.r = make((mt_recorder_mode)mode, 50, 500, NULL)};
        atomic_init(&f.done, 0);
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, feed_thread, &f), 0);
        mt_err err = {{0}};
        int i = 0;
        while (!atomic_load(&f.done)) {
            if (i % 3 == 0) mt_recorder_start(f.r);
            if (i % 7 == 6) mt_recorder_stop(f.r);
            cJSON *o = mt_recorder_dump_json(f.r, i % 2 == 0, &err);
            assert_non_null(o);
            check_consistent(o);
            cJSON_Delete(o);
            /* the window as /metrics reads it agrees with itself while passes commit */
            mt_recorder_counts c;
            int64_t logical[L * E];
            assert_int_equal(mt_recorder_window(f.r, &c, logical, NULL), 0);
            for (int l = 1; l < L; l++) {
                int64_t sum = 0;
                for (int e = 0; e < E; e++) sum += logical[l * E + e];
                assert_int_equal(sum, c.num_tokens * K);
            }
            int64_t physical[L * E];
            assert_int_equal(mt_recorder_window(f.r, &c, logical, physical), -1); /* no placement */
            i++;
        }
        pthread_join(th, NULL);
        mt_recorder_free(f.r);
    }
}


/* A pass that began before a start is not in the new window, even when the recorder was active
 * then: a stop and a start (or a start while recording) between its first layer and its end drop it. */
static void test_restart_mid_pass(void **state) {
    (void)state;
    for (int stop_first = 0; stop_first < 2; stop_first++) {
        mt_recorder *r = make(MT_REC_PER_TOKEN, -1, 100, NULL);
        mt_routing_sink s = mt_recorder_sink(r);
        mt_recorder_start(r);
        int32_t ids[2 * K] = {0, 1, 2, 3}, z[2] = {0, 0};
        mt_routing_event ev = {.layer = 1, .n_tokens = 2, .top_k = K, .seq_ids = z, .positions = z, .tokens = z,
                               .topk_ids = ids};
        s.on_layer(s.ctx, &ev);
        if (stop_first) mt_recorder_stop(r);
        mt_recorder_reset(r); /* what /start_expert_distribution_record does */
        mt_recorder_start(r);
        ev.layer = 2;
        s.on_layer(s.ctx, &ev);
        mt_pass_event pe = {2, 1};
        s.on_pass(s.ctx, &pe);
        mt_recorder_counts c;
        mt_recorder_get_counts(r, &c);
        assert_int_equal(c.num_forward_passes, 0);
        assert_int_equal(c.num_tokens, 0);
        assert_int_equal(c.tokens_recorded, 0);
        /* the next pass is recorded */
        int64_t expect[L * E] = {0};
        feed_pass(s, 1, 3, expect);
        check_counts(r, expect);
        mt_recorder_get_counts(r, &c);
        assert_int_equal(c.num_forward_passes, 1);
        mt_recorder_free(r);
    }
}

/* Recorders of separate servers (here two in one process, each with its own lock) dumping into one
 * folder at the same moment never overwrite each other's files. */
typedef struct dumper {
    mt_recorder *r;
    atomic_int *go;
    char paths[40][4096];
    int failed;
} dumper;

static void *dump_thread(void *arg) {
    dumper *d = arg;
    while (!atomic_load(d->go)) {
    }
    for (int i = 0; i < 40; i++) {
        mt_err err = {{0}};
        if (mt_recorder_dump(d->r, d->paths[i], sizeof d->paths[i], &err)) d->failed++;
    }
    return NULL;
}

static void test_concurrent_dumps_one_dir(void **state) {
    (void)state;
    for (int mode = 0; mode < 3; mode += 2) {
        char dir[400];
        snprintf(dir, sizeof dir, "%s/race%d", tmpdir, mode);
        assert_int_equal(mkdir(dir, 0755), 0);
        static dumper d[2];
        atomic_int go;
        atomic_init(&go, 0);
        pthread_t th[2];
        for (int i = 0; i < 2; i++) {
            memset(&d[i], 0, sizeof d[i]);
            d[i].r = make((mt_recorder_mode)mode, -1, 100, dir);
            d[i].go = &go;
            assert_int_equal(pthread_create(&th[i], NULL, dump_thread, &d[i]), 0);
        }
        atomic_store(&go, 1);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < 2; i++) assert_int_equal(d[i].failed, 0);
        for (int a = 0; a < 80; a++)
            for (int b = a + 1; b < 80; b++)
                if (!strcmp(d[a / 40].paths[a % 40], d[b / 40].paths[b % 40]))
                    fail_msg("two dumps were given the name %s", d[a / 40].paths[a % 40]);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "test $(ls '%s' | grep -c '^expert_distribution_.*\\.json$') -eq 80", dir);
        assert_int_equal(system(cmd), 0);
        if (mode == MT_REC_PER_TOKEN) {
            snprintf(cmd, sizeof cmd, "test $(ls '%s' | grep -c '\\.safetensors$') -eq 80", dir);
            assert_int_equal(system(cmd), 0);
        }
        for (int i = 0; i < 2; i++) mt_recorder_free(d[i].r);
    }
}

/* A per_token dump whose index cannot be written leaves no .safetensors behind, keeps the data
 * and answers an error; the next dump writes both. (The index is made not to fit with a file size
 * limit between the two files' sizes.) */
static void test_per_token_failed_index(void **state) {
    (void)state;
    char dir[400];
    snprintf(dir, sizeof dir, "%s/fsize", tmpdir);
    assert_int_equal(mkdir(dir, 0755), 0);
    mt_recorder *r = make(MT_REC_PER_TOKEN, -1, 100, dir);
    mt_recorder_start(r);
    feed_pass(mt_recorder_sink(r), 0, 1, NULL);
    /* the sizes of the two files, from a first dump */
    char path[4096], stp[4200];
    mt_err err = {{0}};
    assert_int_equal(mt_recorder_dump(r, path, sizeof path, &err), 0);
    struct stat js, ss;
    assert_int_equal(stat(path, &js), 0);
    snprintf(stp, sizeof stp, "%.*s.safetensors", (int)strlen(path) - 5, path);
    assert_int_equal(stat(stp, &ss), 0);
    assert_true(js.st_size > ss.st_size + 16);
    unlink(path);
    unlink(stp);

    feed_pass(mt_recorder_sink(r), 0, 1, NULL);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)(ss.st_size + 8);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = mt_recorder_dump(r, path, sizeof path, &err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(rc, -1);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", dir);
    if (system(cmd)) {
        snprintf(cmd, sizeof cmd, "ls -l '%s' >&2", dir);
        (void)system(cmd);
        fail_msg("a failed dump left files behind (%s)", err.msg);
    }
    mt_recorder_counts c;
    mt_recorder_get_counts(r, &c);
    assert_int_equal(c.tokens_recorded, 1); /* kept for the next dump */
    assert_int_equal(mt_recorder_dump(r, path, sizeof path, &err), 0);
    assert_int_equal(stat(path, &js), 0);
    mt_recorder_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stat_unbounded),
        cmocka_unit_test(test_stat_window),
        cmocka_unit_test(test_inactive_records_nothing),
        cmocka_unit_test(test_inactive_sink_touches_nothing),
        cmocka_unit_test(test_stat_dump_file_and_reset),
        cmocka_unit_test(test_dense_layer_event_ignored),
        cmocka_unit_test(test_per_pass),
        cmocka_unit_test(test_swap),
        cmocka_unit_test(test_put_back),
        cmocka_unit_test(test_per_token_safetensors),
        cmocka_unit_test(test_per_token_domains),
        cmocka_unit_test(test_per_token_dropped),
        cmocka_unit_test(test_per_token_wide_ids),
        cmocka_unit_test(test_env_options),
        cmocka_unit_test(test_atomic_write),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_restart_mid_pass),
        cmocka_unit_test(test_concurrent_dumps_one_dir),
        cmocka_unit_test(test_per_token_failed_index),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, rm_tmpdir);
}
