/* Expert usage per group of requests: the split sink (each group's recorder sees exactly its
 * requests' tokens, in batch order, and the groups with the ungrouped tokens add up to the whole
 * pass), the Jensen-Shannon divergence against values worked by hand, the comparison's shares,
 * lifts and distinctive experts, and the lift picture. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cairo.h>
#include <cjson/cJSON.h>
#include <cmocka.h>

#include "report/domain_usage.h"
#include "report/report_draw.h"
#include "report/usage_report.h"
#include "routing/recorder.h"
#include "routing/routing_split.h"
#include "routing/usage_compare.h"
#include "util/json_util.h"

enum { L = 3, E = 6, K = 2, MAX_T = 16 };

/* ---- the split sink ------------------------------------------------------------------------ */

/* A sink that keeps what it was given: per pass, the tokens' request ids, positions and ids. */
typedef struct seen {
    int passes, layer_events, tokens;
    int64_t req[64];
    int32_t pos[64], ids[64 * K];
    uint8_t again[64];  /* mt_routing_event.recomputed (255: the event had none) */
    int pass_tokens[8];
    int pass_seqs[8];
} seen;

static void seen_layer(void *ctx, const mt_routing_event *ev) {
    seen *s = ctx;
    s->layer_events++;
    if (ev->layer != 0) return; /* the tokens of a pass, once */
    for (int t = 0; t < ev->n_tokens; t++) {
        s->req[s->tokens] = ev->request_ids[t];
        s->pos[s->tokens] = ev->positions[t];
        s->again[s->tokens] = ev->recomputed ? ev->recomputed[t] : 255;
        memcpy(s->ids + (size_t)s->tokens * K, ev->topk_ids + (size_t)t * K, K * sizeof(int32_t));
        s->tokens++;
    }
}

static void seen_pass(void *ctx, const mt_pass_event *ev) {
    seen *s = ctx;
    s->pass_tokens[s->passes] = ev->n_tokens;
    s->pass_seqs[s->passes] = ev->num_seqs_in_pass;
    s->passes++;
}

/* One pass: tokens of requests req[0..n), sequence slot = request id, position = 10 * pass + t,
 * group group_of[request id] (0 past n_groups' ids); routing of token t at layer l: (t + l + j) % E;
 * tokens t = 1, 4, 7 ... flagged as forwarded again (mt_routing_event.recomputed). */
static void feed(mt_routing_sink s, int pass, const int64_t *req, int n, const int32_t *group_of, int n_ids) {
    int32_t seq[MAX_T], pos[MAX_T], tok[MAX_T], grp[MAX_T], ids[MAX_T * K];
    uint8_t again[MAX_T];
    for (int t = 0; t < n; t++) {
        again[t] = t % 3 == 1;
        grp[t] = req[t] >= 0 && req[t] < n_ids ? group_of[req[t]] : 0;
        seq[t] = (int32_t)req[t];
        pos[t] = 10 * pass + t;
        tok[t] = 100 + t;
    }
    for (int l = 0; l < L; l++) {
        for (int t = 0; t < n; t++)
            for (int j = 0; j < K; j++) ids[t * K + j] = (t + l + j) % E;
        mt_routing_event ev = {.layer = l, .n_tokens = n, .top_k = K, .seq_ids = seq, .positions = pos,
                               .tokens = tok, .request_ids = req, .topk_ids = ids, .request_groups = grp,
                               .recomputed = again};
        s.on_layer(s.ctx, &ev);
    }
    mt_pass_event pe = {.n_tokens = n, .num_seqs_in_pass = 0};
    s.on_pass(s.ctx, &pe);
}

static void test_split_divides_tokens(void **state) {
    (void)state;
    seen a = {0}, b = {0}, rest = {0};
    mt_routing_sink ga = {seen_layer, seen_pass, &a}, gb = {seen_layer, seen_pass, &b};
    /* requests 0 and 3 in group 1, request 1 in group 2, request 2 in none, request 4 in group 3,
       which is never added: 2 and 4 (and 7, in no table) go to the rest */
    const int32_t group_of[5] = {1, 2, 0, 1, 3};
    mt_routing_split *sp = mt_routing_split_new(3);
    assert_non_null(sp);
    assert_int_equal(mt_routing_split_add(sp, ga), 1);
    assert_int_equal(mt_routing_split_add(sp, gb), 2);
    mt_routing_split_set_rest(sp, (mt_routing_sink){seen_layer, seen_pass, &rest});
    mt_routing_sink s = mt_routing_split_sink(sp);
    const int64_t pass0[] = {0, 1, 2, 3, 1, 0, 7, 4}; /* 7: group 0; 4: a group not added */
    const int64_t pass1[] = {2, 2};                  /* no group's token */
    const int64_t pass2[] = {1};
    feed(s, 0, pass0, 8, group_of, 5);
    feed(s, 1, pass1, 2, group_of, 5);
    feed(s, 2, pass2, 1, group_of, 5);
    /* group 0: tokens 0, 3, 5 of pass 0 (requests 0, 3, 0), in batch order */
    assert_int_equal(a.passes, 1);
    assert_int_equal(a.layer_events, L);
    assert_int_equal(a.tokens, 3);
    assert_int_equal(a.pass_tokens[0], 3);
    assert_int_equal(a.pass_seqs[0], 2);
    const int64_t a_req[] = {0, 3, 0};
    const int32_t a_pos[] = {0, 3, 5};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(a.req[i], a_req[i]);
        assert_int_equal(a.pos[i], a_pos[i]);
        for (int j = 0; j < K; j++) assert_int_equal(a.ids[i * K + j], (a_pos[i] + j) % E);
        assert_int_equal(a.again[i], a_pos[i] % 3 == 1); /* each token keeps its flag */
    }
    /* group 1: tokens 1 and 4 of pass 0, then the token of pass 2; never pass 1 */
    assert_int_equal(b.passes, 2);
    assert_int_equal(b.layer_events, 2 * L);
    assert_int_equal(b.pass_tokens[0], 2);
    assert_int_equal(b.pass_seqs[0], 1);
    assert_int_equal(b.pass_tokens[1], 1);
    const int32_t b_pos[] = {1, 4, 20};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(b.req[i], 1);
        assert_int_equal(b.pos[i], b_pos[i]);
    }
    /* the rest: tokens 2, 6, 7 of pass 0 (requests 2, 7, 4), both of pass 1 */
    assert_int_equal(rest.passes, 2);
    assert_int_equal(rest.pass_tokens[0], 3);
    assert_int_equal(rest.pass_tokens[1], 2);
    const int64_t rest_req[] = {2, 7, 4, 2, 2};
    const int32_t rest_pos[] = {2, 6, 7, 10, 11};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(rest.req[i], rest_req[i]);
        assert_int_equal(rest.pos[i], rest_pos[i]);
        assert_int_equal(rest.again[i], rest_pos[i] % 10 % 3 == 1);
    }
    assert_false(mt_routing_split_failed(sp));
    mt_routing_split_free(sp);
}

/* A group added between passes sees the passes after it, whole; events without request_groups go
 * to no group. */
static void test_split_group_added_later(void **state) {
    (void)state;
    seen a = {0}, b = {0};
    mt_routing_sink ga = {seen_layer, seen_pass, &a}, gb = {seen_layer, seen_pass, &b};
    const int32_t group_of[2] = {1, 2};
    mt_routing_split *sp = mt_routing_split_new(2);
    assert_non_null(sp);
    assert_int_equal(mt_routing_split_add(sp, ga), 1);
    mt_routing_sink s = mt_routing_split_sink(sp);
    const int64_t both[] = {0, 1, 1};
    feed(s, 0, both, 3, group_of, 2); /* request 1's group is not there yet */
    assert_int_equal(mt_routing_split_add(sp, gb), 2);
    feed(s, 1, both, 3, group_of, 2);
    assert_int_equal(a.passes, 2);
    assert_int_equal(a.tokens, 2);
    assert_int_equal(b.passes, 1);
    assert_int_equal(b.tokens, 2);
    assert_int_equal(b.pass_tokens[0], 2);
    assert_int_equal(b.pos[0], 11);
    int32_t ids[K] = {0};
    int32_t pos = 0;
    mt_routing_event ev = {.layer = 0, .n_tokens = 1, .top_k = K, .positions = &pos, .topk_ids = ids};
    s.on_layer(s.ctx, &ev);
    mt_pass_event pe = {.n_tokens = 1};
    s.on_pass(s.ctx, &pe);
    assert_int_equal(a.passes, 2);
    assert_int_equal(b.passes, 1);
    mt_routing_split_free(sp);
}

static void test_split_rejects_bad_arguments(void **state) {
    (void)state;
    seen a = {0};
    mt_routing_sink ok = {seen_layer, seen_pass, &a}, none = {NULL, NULL, NULL};
    assert_null(mt_routing_split_new(0));
    mt_routing_split *sp = mt_routing_split_new(1);
    assert_non_null(sp);
    assert_int_equal(mt_routing_split_add(sp, none), -1); /* no on_layer */
    assert_int_equal(mt_routing_split_add(sp, ok), 1);
    assert_int_equal(mt_routing_split_add(sp, ok), -1);   /* full */
    mt_routing_split_free(sp);
}

/* L layers, all MoE, of E experts, top-K. */
static mt_config moe_config(void) {
    mt_config c;
    memset(&c, 0, sizeof c);
    c.num_hidden_layers = L;
    c.num_experts = E;
    c.top_k = K;
    for (int l = 0; l < L; l++) c.layer_is_moe[l] = true;
    c.num_moe_layers = L;
    return c;
}

/* Recorders behind the split: the groups' counts and the ungrouped tokens' add up to a recorder
 * that saw every pass whole, and each group's token count is its tokens'. */
static void test_split_recorders_add_up(void **state) {
    (void)state;
    mt_config c = moe_config();
    mt_recorder_opts o;
    mt_recorder_opts_default(&o);
    o.buffer_size = -1;
    mt_err err = {{0}};
    mt_recorder *whole = mt_recorder_new(&c, "m", &o, &err), *g0 = mt_recorder_new(&c, "m", &o, &err),
                *g1 = mt_recorder_new(&c, "m", &o, &err), *rest = mt_recorder_new(&c, "m", &o, &err);
    assert_true(whole && g0 && g1 && rest);
    mt_recorder *all[4] = {whole, g0, g1, rest};
    for (int i = 0; i < 4; i++) mt_recorder_start(all[i]);
    const int32_t group_of[3] = {1, 2, 3};
    mt_routing_split *sp = mt_routing_split_new(3);
    assert_non_null(sp);
    assert_int_equal(mt_routing_split_add(sp, mt_recorder_sink(g0)), 1);
    assert_int_equal(mt_routing_split_add(sp, mt_recorder_sink(g1)), 2);
    assert_int_equal(mt_routing_split_add(sp, mt_recorder_sink(rest)), 3);
    mt_routing_fanout fan = {0};
    mt_routing_fanout_add(&fan, mt_recorder_sink(whole));
    mt_routing_fanout_add(&fan, mt_routing_split_sink(sp));
    mt_routing_sink s = mt_routing_fanout_sink(&fan);
    for (int p = 0; p < 5; p++) {
        int64_t req[MAX_T];
        int n = 3 + p * 2;
        for (int t = 0; t < n; t++) req[t] = (t * 7 + p) % 3;
        feed(s, p, req, n, group_of, 3);
    }
    int64_t cw[L * E], cg[L * E], sum[L * E] = {0};
    mt_recorder_logical_count(whole, cw);
    int64_t tokens = 0;
    for (int i = 1; i < 4; i++) {
        mt_recorder_logical_count(all[i], cg);
        for (int x = 0; x < L * E; x++) sum[x] += cg[x];
        mt_recorder_counts rc;
        mt_recorder_get_counts(all[i], &rc);
        tokens += rc.num_tokens;
    }
    assert_memory_equal(cw, sum, sizeof cw);
    mt_recorder_counts wc;
    mt_recorder_get_counts(whole, &wc);
    assert_int_equal(tokens, wc.num_tokens);
    mt_routing_split_free(sp);
    for (int i = 0; i < 4; i++) mt_recorder_free(all[i]);
}

/* ---- the domain usage report, written while passes arrive -------------------------------- */

typedef struct feeder {
    mt_routing_sink sink;
    atomic_bool stop;
    int passes;
    int64_t tokens, labelled; /* fed */
} feeder;

/* Feeds passes until told to stop. */
static void *feed_passes(void *arg) {
    feeder *f = arg;
    const int32_t group_of[3] = {1, 2, 0}; /* request 2 unlabelled */
    for (int p = 0; !atomic_load(&f->stop); p++, f->passes++) {
        int64_t req[MAX_T];
        int n = 1 + p % MAX_T;
        for (int t = 0; t < n; t++) req[t] = (t + p) % 3;
        feed(f->sink, p, req, n, group_of, 3);
        f->tokens += n;
        for (int t = 0; t < n; t++) f->labelled += req[t] != 2;
    }
    return NULL;
}

/* A domain usage of c recording, with the labels "a" (group 1) and "b" (group 2). */
static mt_domain_usage *usage_of_a_and_b(const mt_config *c) {
    mt_recorder_opts o;
    mt_recorder_opts_default(&o);
    mt_err err = {{0}};
    mt_domain_usage *u = mt_domain_usage_new(c, "m", &o, "topic", NULL, &err);
    assert_non_null(u);
    assert_int_equal(mt_domain_usage_group(u, "a", &err), 1);
    assert_int_equal(mt_domain_usage_group(u, "b", &err), 2);
    mt_domain_usage_start(u);
    return u;
}

/* Writes taken while another thread feeds passes, some of whose tokens have no label: each one
 * succeeds, and the writes together count every token once, in its domain or the rest; windows
 * taken and put back in between are counted by the next write. */
static void test_domain_usage_writes_while_recording(void **state) {
    (void)state;
    mt_config c = moe_config();
    mt_err err = {{0}};
    mt_domain_usage *u = usage_of_a_and_b(&c);
    assert_int_equal(mt_domain_usage_group(u, "a", &err), 1);
    assert_int_equal(mt_domain_usage_group(u, "", &err), -1);
    char dir[] = "/tmp/moetrace_domains_XXXXXX", sub[128], json[256];
    assert_non_null(mkdtemp(dir));
    feeder f = {.sink = mt_domain_usage_sink(u)};
    atomic_init(&f.stop, false);
    pthread_t th;
    pthread_create(&th, NULL, feed_passes, &f);
    int64_t counted = 0, counted_labelled = 0;
    for (int w = 0; w < 21; w++) {
        if (w == 20) { /* the last write after every pass */
            atomic_store(&f.stop, true);
            pthread_join(th, NULL);
        }
        if (w % 3 == 1) { /* taken and not written: back, to be counted by the next write */
            mt_domain_window *t = mt_domain_usage_take(u, &err);
            if (!t) fail_msg("take %d: %s", w, err.msg);
            mt_domain_usage_put_back(t);
            continue;
        }
        snprintf(sub, sizeof sub, "%s/w%d", dir, w);
        if (mt_domain_usage_write(u, sub, false, json, sizeof json, &err)) fail_msg("write %d: %s", w, err.msg);
        cJSON *dj = mt_json_load_file(json, &err);
        assert_non_null(dj);
        const cJSON *d;
        int64_t in_domains = 0;
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(dj, "domains")) in_domains += cJSON_GetObjectItem(d, "tokens")->valueint;
        int64_t all = cJSON_GetObjectItem(dj, "tokens")->valueint;
        assert_true(in_domains <= all);
        counted += all;
        counted_labelled += in_domains;
        cJSON_Delete(dj);
    }
    assert_int_equal(counted, f.tokens);
    assert_int_equal(counted_labelled, f.labelled);
    assert_true(f.passes > 20);
    mt_domain_usage_free(u);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* A window whose files cannot all be written leaves none of them (the dump written before the
 * failure removed, the folders it left empty too) and goes back, so the next write counts it. */
static void test_domain_window_failed_write(void **state) {
    (void)state;
    mt_config c = moe_config();
    mt_err err = {{0}};
    mt_domain_usage *u = usage_of_a_and_b(&c);
    mt_routing_sink sink = mt_domain_usage_sink(u);
    const int32_t group_of[3] = {1, 2, 0};
    int64_t req[4] = {0, 1, 2, 0};
    feed(sink, 0, req, 4, group_of, 3);
    char dir[] = "/tmp/moetrace_domains_XXXXXX", bad[160], good[160], path[256], json[256];
    assert_non_null(mkdtemp(dir));
    snprintf(bad, sizeof bad, "%s/bad", dir);
    snprintf(path, sizeof path, "%s/domains", bad);
    assert_int_equal(mkdir(bad, 0755), 0);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/domains/b", bad); /* b's folder is a file: a's dump is written first */
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);
    mt_domain_window *w = mt_domain_usage_take(u, &err);
    assert_non_null(w);
    assert_int_equal(mt_domain_window_write(w, bad, false, json, sizeof json, &err), -1);
    snprintf(path, sizeof path, "%s/domains/a", bad);
    assert_int_equal(access(path, F_OK), -1); /* a's dump and its folder gone */
    assert_true(mt_domain_usage_put_back(w));
    feed(sink, 1, req, 4, group_of, 3);
    snprintf(good, sizeof good, "%s/good", dir);
    assert_int_equal(mt_domain_usage_write(u, good, false, json, sizeof json, &err), 0);
    cJSON *dj = mt_json_load_file(json, &err);
    assert_non_null(dj);
    assert_int_equal(cJSON_GetObjectItem(dj, "tokens")->valueint, 8); /* both passes */
    const cJSON *d;
    int64_t in_domains = 0;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(dj, "domains")) in_domains += cJSON_GetObjectItem(d, "tokens")->valueint;
    assert_int_equal(in_domains, 6);
    cJSON_Delete(dj);
    mt_domain_usage_free(u);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- divergence and comparison ------------------------------------------------------------- */

static void test_js_divergence(void **state) {
    (void)state;
    const int64_t p[4] = {3, 1, 0, 0}, same[4] = {6, 2, 0, 0}, disjoint[4] = {0, 0, 5, 1}, zero[4] = {0};
    assert_true(fabs(mt_usage_js_divergence(p, same, 4)) < 1e-12);
    assert_true(fabs(mt_usage_js_divergence(p, disjoint, 4) - 1.0) < 1e-12);
    assert_true(mt_usage_js_divergence(p, zero, 4) < 0);
    /* (1, 0) against (1/2, 1/2): M = (3/4, 1/4),
     * JS = 1/2 log2(4/3) + 1/2 (1/2 log2(2/3) + 1/2 log2 2) = 3/2 - 3/4 log2 3 */
    const int64_t a[2] = {1, 0}, b[2] = {1, 1};
    double want = 0.5 * log2(4.0 / 3.0) + 0.5 * (0.5 * log2(2.0 / 3.0) + 0.5 * 1.0);
    assert_true(fabs(want - (1.5 - 0.75 * log2(3.0))) < 1e-12);
    assert_true(fabs(mt_usage_js_divergence(a, b, 2) - want) < 1e-12);
    assert_true(fabs(mt_usage_js_divergence(b, a, 2) - want) < 1e-12); /* symmetric */
}

/* Two groups over 2 layers (layer 1 dense) of 4 experts, top-1, and 10 ungrouped tokens. */
static const int64_t G_COUNT[2][2][4] = {{{6, 2, 2, 0}, {0, 0, 0, 0}}, {{0, 2, 2, 6}, {0, 0, 0, 0}}};
static const int64_t ALL_COUNT[2][4] = {{8, 6, 6, 10}, {0, 0, 0, 0}};
static const char *const NAMES[2] = {"code", "prose / chat"};
static const int64_t REQUESTS[2] = {2, 3}, TOKENS[2] = {10, 10};
static const bool IS_MOE[2] = {true, false};

static mt_usage_groups two_groups(void) {
    mt_usage_groups u = {.num_groups = 2, .num_layers = 2, .num_experts = 4, .names = NAMES,
                         .requests = REQUESTS, .tokens = TOKENS, .count = &G_COUNT[0][0][0],
                         .all = &ALL_COUNT[0][0], .layer_is_moe = IS_MOE};
    return u;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static void test_compare(void **state) {
    (void)state;
    mt_usage_groups u = two_groups();
    /* lift of "code" at expert 0: (6/10) / (8/30) = 2.25; expert 3: 0 / (10/30) = 0 */
    assert_true(fabs(mt_usage_lift(&u, 0, 0, 0) - 2.25) < 1e-12);
    assert_true(fabs(mt_usage_lift(&u, 0, 0, 3)) < 1e-12);
    assert_true(mt_usage_lift(&u, 0, 1, 0) < 0); /* dense layer: no counts */
    cJSON *j = mt_usage_compare_json(&u, 3);
    assert_non_null(j);
    const cJSON *groups = cJSON_GetObjectItem(j, "groups");
    assert_int_equal(cJSON_GetArraySize(groups), 2);
    const cJSON *code = cJSON_GetArrayItem(groups, 0);
    assert_string_equal(cJSON_GetObjectItem(code, "name")->valuestring, "code");
    assert_int_equal((int)num(code, "requests"), 2);
    assert_int_equal((int)num(code, "tokens"), 10);
    /* rest of "code": (2, 4, 4, 10) of 20: divergence of (.6, .2, .2, 0) and (.1, .2, .2, .5) */
    const int64_t code_row[4] = {6, 2, 2, 0}, rest_row[4] = {2, 4, 4, 10};
    double js = mt_usage_js_divergence(code_row, rest_row, 4);
    const cJSON *per = cJSON_GetObjectItem(code, "divergence_per_layer");
    assert_true(fabs(cJSON_GetArrayItem(per, 0)->valuedouble - js) < 1e-12);
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(per, 1)));
    assert_true(fabs(num(code, "divergence_mean") - js) < 1e-12);
    /* distinctive: only expert 0 is above the rest (.6 against .1); 1 and 2 are equal (.2, .2) */
    const cJSON *dist = cJSON_GetArrayItem(cJSON_GetObjectItem(code, "distinctive_experts_per_layer"), 0);
    assert_int_equal(cJSON_GetArraySize(dist), 1);
    const cJSON *d0 = cJSON_GetArrayItem(dist, 0);
    assert_int_equal((int)num(d0, "expert"), 0);
    assert_true(fabs(num(d0, "share") - 0.6) < 1e-12);
    assert_true(fabs(num(d0, "share_rest") - 0.1) < 1e-12);
    assert_true(fabs(num(d0, "lift") - 2.25) < 1e-12);
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(cJSON_GetObjectItem(code, "distinctive_experts_per_layer"), 1)));
    const cJSON *mean = cJSON_GetObjectItem(j, "mean_divergence_per_layer");
    assert_int_equal(cJSON_GetArraySize(mean), 2);
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(mean, 1)));
    cJSON_Delete(j);
}

/* A group that counted more than all traffic is refused; a group that is all the traffic has no
 * rest to diverge from or to stand out against. */
static void test_compare_edges(void **state) {
    (void)state;
    mt_usage_groups u = two_groups();
    const int64_t small_all[2][4] = {{1, 1, 1, 1}, {0}};
    u.all = &small_all[0][0];
    assert_null(mt_usage_compare_json(&u, 3));
    const int64_t only[1][2][4] = {{{6, 2, 2, 0}, {0}}};
    const int64_t only_all[2][4] = {{6, 2, 2, 0}, {0}};
    mt_usage_groups one = {.num_groups = 1, .num_layers = 2, .num_experts = 4, .names = NAMES,
                           .requests = REQUESTS, .tokens = TOKENS, .count = &only[0][0][0],
                           .all = &only_all[0][0], .layer_is_moe = IS_MOE};
    cJSON *j = mt_usage_compare_json(&one, 3);
    assert_non_null(j);
    const cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "groups"), 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(g, "divergence_mean")));
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(cJSON_GetObjectItem(g, "divergence_per_layer"), 0)));
    /* nor experts that stand out from it (an empty list, not every expert used "against 0") */
    const cJSON *dist = cJSON_GetArrayItem(cJSON_GetObjectItem(g, "distinctive_experts_per_layer"), 0);
    assert_true(cJSON_IsArray(dist));
    assert_int_equal(cJSON_GetArraySize(dist), 0);
    cJSON_Delete(j);
}

// Labels cut to the picture's width: whole when they fit, else a prefix on a character boundary
// and an ellipsis, within the width.
static void test_fit_text(void **state) {
    (void)state;
    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 10, 10);
    cairo_t *cr = cairo_create(surf);
    mt_rd_font(cr, 13, 1);
    char out[64], longer[256];
    assert_string_equal(mt_rd_fit(cr, "prose", 400, out, sizeof out), "prose");
    // 60 two-byte characters: too long for 120 pixels and for the buffer
    longer[0] = 0;
    for (int i = 0; i < 60; i++) strcat(longer, "\xc3\xa9");
    mt_rd_fit(cr, longer, 120, out, sizeof out);
    assert_true(mt_rd_text_width(cr, out) <= 120);
    size_t n = strlen(out);
    assert_true(n > 3 && n < strlen(longer));
    assert_string_equal(out + n - 3, "\xe2\x80\xa6");
    assert_true((n - 3) % 2 == 0);   // the cut falls between characters
    assert_memory_equal(out, longer, n - 3);
    // nothing fits but the ellipsis
    assert_string_equal(mt_rd_fit(cr, "abcdef", 0, out, sizeof out), "\xe2\x80\xa6");
    // fits the width but not the buffer: cut to the buffer
    char small[8];
    mt_rd_fit(cr, "abcdefghijkl", 1e6, small, sizeof small);
    assert_string_equal(small, "abcd\xe2\x80\xa6");
    cairo_destroy(cr);
    cairo_surface_destroy(surf);
}

// Labels in the scripts researchers label domains with find a font (setup.sh installs them):
// Pango falls back per character where DejaVu has none.
static void test_label_scripts(void **state) {
    (void)state;
    cairo_surface_t *surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 10, 10);
    cairo_t *cr = cairo_create(surf);
    static const char *LABELS[] = {"english", "русский", "中文", "日本語のテキスト", "한국어", "العربية",
                                   "עברית", "हिन्दी", "ελληνικά"};
    for (int bold = 0; bold < 2; bold++) {
        mt_rd_font(cr, 13, bold);
        for (size_t i = 0; i < sizeof LABELS / sizeof LABELS[0]; i++) {
            if (mt_rd_missing_glyphs(cr, LABELS[i])) fail_msg("no font for \"%s\"", LABELS[i]);
            assert_true(mt_rd_text_width(cr, LABELS[i]) > 10);
        }
    }
    assert_int_equal(mt_rd_missing_glyphs(cr, "\xf3\xb0\x80\x80"), 1); // U+F0000, private use: no font
    cairo_destroy(cr);
    cairo_surface_destroy(surf);
}

static void test_picture(void **state) {
    (void)state;
    mt_usage_groups u = two_groups();
    char dir[] = "/tmp/moetrace_usage_XXXXXX", png[64], svg[64], bad[64];
    assert_non_null(mkdtemp(dir));
    snprintf(png, sizeof png, "%s/u.png", dir);
    snprintf(svg, sizeof svg, "%s/u.svg", dir);
    snprintf(bad, sizeof bad, "%s/u.gif", dir);
    mt_err err = {{0}};
    assert_int_equal(mt_usage_report_render(&u, "test", png, &err), 0);
    assert_int_equal(mt_usage_report_render(&u, "test", svg, &err), 0);
    FILE *f = fopen(png, "rb");
    assert_non_null(f);
    unsigned char sig[8];
    assert_int_equal(fread(sig, 1, 8, f), 8);
    fclose(f);
    assert_memory_equal(sig, "\x89PNG\r\n\x1a\n", 8);
    assert_int_not_equal(mt_usage_report_render(&u, "test", bad, &err), 0);
    assert_non_null(strstr(err.msg, ".png or .svg"));
    unlink(png);
    unlink(svg);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_divides_tokens),
        cmocka_unit_test(test_split_group_added_later),
        cmocka_unit_test(test_split_rejects_bad_arguments),
        cmocka_unit_test(test_split_recorders_add_up),
        cmocka_unit_test(test_domain_usage_writes_while_recording),
        cmocka_unit_test(test_domain_window_failed_write),
        cmocka_unit_test(test_js_divergence),
        cmocka_unit_test(test_compare),
        cmocka_unit_test(test_compare_edges),
        cmocka_unit_test(test_fit_text), cmocka_unit_test(test_label_scripts),
        cmocka_unit_test(test_picture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
