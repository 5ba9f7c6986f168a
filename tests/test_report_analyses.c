/* `moetrace report INDEX.json --coactivation | --token-specialisation` (report/coactivation.h,
 * report/token_specialisation.h): per_token dumps written by hand from known routing and counted
 * back exactly (pair counts, row-normalised shares, top pairs, token shares, scores), by hand
 * on a tiny dump and against a brute-force count of a random one; the command's JSON and pictures;
 * --model texts; the layers chosen; every error case; and a real dump of `moetrace profile
 * --per-token` on the test fixture, whose co-activation diagonal is the expert counts of its rows. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cairo.h>
#include <cjson/cJSON.h>
#include <cmocka.h>

#include "model/safetensors.h"
#include "report/coactivation.h"
#include "report/token_specialisation.h"
#include "test_cli.h"
#include "test_files.h"
#include "tmp_dir.h"
#include "tokenizer/tokenizer.h"
#include "util/json_util.h"
#include "util/strbuf.h"

#define DEMO_MODEL MT_SOURCE_DIR "/assets/demo-model"
#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"

enum { MAX_L = 48, MAX_K = 8 };

typedef struct shape {
    int L, E, K;
    bool dense[MAX_L];
} shape;

/* A token forwarded: its request, position and id, and its experts at every MoE layer. */
typedef struct row {
    int req;
    int32_t pos, token;
    int32_t ids[MAX_L][MAX_K];
} row;

/* A dump's index written by hand as g_dir/NAME.json: mode, the shape, zero counts and, for a
 * per_token dump, its tensors' file and request ids r0 .. r<n_requests - 1>. Returns its path
 * (malloc'd). */
static char *write_index(const char *name, const shape *s, const char *mode, int n_requests) {
    mt_strbuf b = {0};
    mt_strbuf_printf(&b, "{\"format\": \"moetrace.expert_distribution.v1\", \"mode\": \"%s\", \"model\": \"analyses-moe\", "
                     "\"num_hidden_layers\": %d, \"num_experts\": %d, \"top_k\": %d, \"moe_layers\": [", mode, s->L, s->E, s->K);
    for (int l = 0, m = 0; l < s->L; l++)
        if (!s->dense[l]) mt_strbuf_printf(&b, "%s%d", m++ ? ", " : "", l);
    mt_strbuf_puts(&b, "], \"logical_count\": [");
    for (int l = 0; l < s->L; l++) {
        mt_strbuf_puts(&b, l ? ", [" : "[");
        for (int e = 0; e < s->E; e++) mt_strbuf_puts(&b, e ? ", 0" : "0");
        mt_strbuf_puts(&b, "]");
    }
    mt_strbuf_puts(&b, "]");
    if (!strcmp(mode, "per_token")) {
        mt_strbuf_printf(&b, ", \"tensors\": \"%s.safetensors\", \"request_ids\": [", name);
        for (int r = 0; r < n_requests; r++) mt_strbuf_printf(&b, "%s\"r%d\"", r ? ", " : "", r);
        mt_strbuf_puts(&b, "]");
    }
    mt_strbuf_puts(&b, "}\n");
    char file[128];
    snprintf(file, sizeof file, "%s.json", name);
    write_text(file, b.data);
    mt_strbuf_free(&b);
    return strdup(path_of(file));
}

/* rows written by hand as the per_token dump g_dir/NAME.json + NAME.safetensors (little-endian):
 * request_index I64 [T], topk_ids I32 [T, L, K] (their ids as given, -1s at dense layers),
 * position I32 [T], token_id I32 [T], back to back in that order. Returns the index's path. */
static char *write_dump(const char *name, const shape *s, const row *rows, int n) {
    size_t T = (size_t)n, LK = (size_t)s->L * (size_t)s->K;
    int64_t *req = malloc(8 * T + 8);
    int32_t *ids = malloc(4 * T * LK + 4), *pos = malloc(4 * T + 4), *tok = malloc(4 * T + 4);
    assert_true(req && ids && pos && tok);
    int n_requests = 0;
    for (size_t t = 0; t < T; t++) {
        req[t] = rows[t].req;
        pos[t] = rows[t].pos;
        tok[t] = rows[t].token;
        if (rows[t].req >= n_requests) n_requests = rows[t].req + 1;
        for (int l = 0; l < s->L; l++)
            for (int k = 0; k < s->K; k++) ids[t * LK + (size_t)l * s->K + k] = s->dense[l] ? -1 : rows[t].ids[l][k];
    }
    const void *data[4] = {req, ids, pos, tok};
    size_t bytes[4] = {8 * T, 4 * T * LK, 4 * T, 4 * T}, off = 0;
    static const char *const NAMES[4] = {"request_index", "topk_ids", "position", "token_id"};
    mt_strbuf h = {0};
    for (int k = 0; k < 4; k++) {
        mt_strbuf_printf(&h, "%s\"%s\": {\"dtype\": \"%s\", \"shape\": [%zu", k ? ", " : "{", NAMES[k], k ? "I32" : "I64", T);
        if (k == 1) mt_strbuf_printf(&h, ", %d, %d", s->L, s->K);
        mt_strbuf_printf(&h, "], \"data_offsets\": [%zu, %zu]}", off, off + bytes[k]);
        off += bytes[k];
    }
    mt_strbuf_puts(&h, "}");
    while (h.len % 8) mt_strbuf_puts(&h, " ");
    char file[128];
    snprintf(file, sizeof file, "%s.safetensors", name);
    FILE *f = fopen(path_of(file), "wb");
    assert_non_null(f);
    uint64_t header_len = h.len; /* little-endian, as the hosts the tests run on */
    assert_int_equal(fwrite(&header_len, 8, 1, f), 1);
    assert_int_equal(fwrite(h.data, 1, h.len, f), h.len);
    for (int k = 0; k < 4; k++) assert_int_equal(fwrite(data[k], 1, bytes[k], f), bytes[k]);
    assert_int_equal(fclose(f), 0);
    mt_strbuf_free(&h);
    free(req);
    free(ids);
    free(pos);
    free(tok);
    return write_index(name, s, "per_token", n_requests);
}

/* The hand-made dump: 3 layers (1 dense), 4 experts, top-2; token 10 three times, 11 once. */
static shape hand_shape(void) {
    shape s = {.L = 3, .E = 4, .K = 2};
    s.dense[1] = true;
    return s;
}

static char *write_hand(void) {
    shape s = hand_shape();
    static const row ROWS[] = {
        {0, 0, 10, {{0, 1}, {0}, {2, 3}}},
        {0, 1, 10, {{0, 1}, {0}, {2, 0}}},
        {0, 2, 11, {{0, 2}, {0}, {3, 2}}},
        {1, 0, 10, {{1, 0}, {0}, {1, 2}}},
    };
    return write_dump("hand", &s, ROWS, 4);
}

static void open_dump(const char *index, mt_per_token_dump *d) {
    mt_err err = {{0}};
    if (mt_per_token_open(index, "--coactivation", d, &err)) fail_msg("%s", err.msg);
}

static void check_pair(const mt_coact_pair *p, int i, int j, int64_t count, double share) {
    assert_int_equal(p->i, i);
    assert_int_equal(p->j, j);
    assert_int_equal(p->count, count);
    assert_true(p->share == share);
}

static void check_token(const mt_tspec_token *t, int32_t id, int64_t count, int64_t occurrences, double share) {
    assert_int_equal(t->id, id);
    assert_int_equal(t->count, count);
    assert_int_equal(t->occurrences, occurrences);
    assert_true(t->share == share);
}

/* ---- tests ---- */

/* The tiny dump's co-activation, worked by hand. */
static void test_coactivation_by_hand(void **state) {
    (void)state;
    char *index = write_hand();
    mt_per_token_dump d;
    open_dump(index, &d);
    assert_int_equal(d.rows, 4);
    int *layers, n;
    mt_err err = {{0}};
    if (mt_analysis_layers(&d, NULL, 0, 0, &layers, &n, &err)) fail_msg("%s", err.msg);
    assert_int_equal(n, 2);
    assert_int_equal(layers[0], 0);
    assert_int_equal(layers[1], 2);
    mt_coactivation c;
    if (mt_coactivation_compute(&d, layers, n, &c, &err)) fail_msg("%s", err.msg);
    /* layer 0: experts {0,1} {0,1} {0,2} {1,0} */
    static const int64_t L0[16] = {4, 3, 1, 0, 3, 3, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0};
    const mt_coact_layer *l = &c.layers[0];
    assert_int_equal(l->layer, 0);
    assert_int_equal(l->tokens, 4);
    assert_memory_equal(l->counts, L0, sizeof L0);
    assert_true(mt_coactivation_share(l, 4, 0, 1) == 0.75);
    assert_true(mt_coactivation_share(l, 4, 1, 0) == 1.0);
    assert_true(mt_coactivation_share(l, 4, 0, 3) == 0.0);
    assert_true(isnan(mt_coactivation_share(l, 4, 0, 0)));
    assert_true(isnan(mt_coactivation_share(l, 4, 3, 0))); /* expert 3 has no token */
    assert_int_equal(l->n_top, 4);
    check_pair(&l->top[0], 1, 0, 3, 1.0); /* ties on share: the higher count first */
    check_pair(&l->top[1], 2, 0, 1, 1.0);
    check_pair(&l->top[2], 0, 1, 3, 0.75);
    check_pair(&l->top[3], 0, 2, 1, 0.25);
    assert_true(fabs(l->mean_share - 1.0 / 3) < 1e-15); /* (k-1)/(E-1) */
    assert_true(fabs(l->mean_max_share - 2.75 / 3) < 1e-15);
    /* layer 2: experts {2,3} {2,0} {3,2} {1,2} */
    static const int64_t L2[16] = {1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 4, 2, 0, 0, 2, 2};
    l = &c.layers[1];
    assert_int_equal(l->layer, 2);
    assert_memory_equal(l->counts, L2, sizeof L2);
    assert_int_equal(l->n_top, 6);
    check_pair(&l->top[0], 3, 2, 2, 1.0);
    check_pair(&l->top[1], 0, 2, 1, 1.0); /* same share and count: the lower i first */
    check_pair(&l->top[2], 1, 2, 1, 1.0);
    check_pair(&l->top[3], 2, 3, 2, 0.5);
    check_pair(&l->top[4], 2, 0, 1, 0.25); /* then the lower j */
    check_pair(&l->top[5], 2, 1, 1, 0.25);
    assert_true(fabs(l->mean_share - 1.0 / 3) < 1e-15);
    assert_true(l->mean_max_share == 0.875);
    mt_coactivation_free(&c);
    free(layers);
    mt_per_token_close(&d);
    free(index);
}

/* The tiny dump's vocabulary specialisation, worked by hand, with and without the rare id. */
static void test_specialisation_by_hand(void **state) {
    (void)state;
    char *index = write_hand();
    mt_per_token_dump d;
    open_dump(index, &d);
    static const int LAYERS[] = {0, 2};
    mt_err err = {{0}};
    mt_token_spec s;
    /* min_count 2: only id 10 (3 occurrences) is ranked */
    if (mt_token_spec_compute(&d, LAYERS, 2, 2, &s, &err)) fail_msg("%s", err.msg);
    assert_int_equal(s.distinct_ids, 2);
    assert_int_equal(s.ranked_ids, 1);
    const mt_tspec_expert *x = s.layers[0].experts;
    assert_int_equal(x[0].n_top, 1);
    check_token(&x[0].top[0], 10, 3, 3, 1.0);
    assert_true(x[0].score == 1.0);
    check_token(&x[1].top[0], 10, 3, 3, 1.0);
    assert_int_equal(x[2].n_top, 0);
    assert_true(isnan(x[2].score));
    assert_true(isnan(x[3].score));
    assert_int_equal(x[0].tokens, 4);
    assert_int_equal(x[1].tokens, 3);
    assert_int_equal(x[2].tokens, 1);
    assert_int_equal(x[3].tokens, 0);
    assert_true(s.layers[0].mean_score == 1.0);
    x = s.layers[1].experts; /* layer 2: id 10 at {2,3} {2,0} {1,2} */
    check_token(&x[2].top[0], 10, 3, 3, 1.0);
    check_token(&x[0].top[0], 10, 1, 3, 1.0 / 3);
    check_token(&x[3].top[0], 10, 1, 3, 1.0 / 3);
    assert_true(x[1].score == 1.0 / 3);
    assert_true(s.layers[1].mean_score == (1.0 / 3 + 1.0 / 3 + 1.0 + 1.0 / 3) / 4);
    mt_token_spec_free(&s);
    /* min_count 1: id 11 too */
    if (mt_token_spec_compute(&d, LAYERS, 2, 1, &s, &err)) fail_msg("%s", err.msg);
    assert_int_equal(s.ranked_ids, 2);
    x = s.layers[0].experts;
    assert_int_equal(x[0].n_top, 2);
    check_token(&x[0].top[0], 10, 3, 3, 1.0); /* equal shares: the higher count first */
    check_token(&x[0].top[1], 11, 1, 1, 1.0);
    check_token(&x[2].top[0], 11, 1, 1, 1.0);
    x = s.layers[1].experts;
    check_token(&x[3].top[0], 11, 1, 1, 1.0);
    check_token(&x[3].top[1], 10, 1, 3, 1.0 / 3);
    assert_true(x[3].score == (1.0 + 1.0 / 3) / 2);
    mt_token_spec_free(&s);
    mt_per_token_close(&d);
    free(index);
}

/* -1s (the recorder's ids out of range; other ids out of range are refused when the dump is opened)
 * and repeats within a row are passed over; a row without an expert at a layer is not one of its
 * tokens. */
static void test_odd_rows(void **state) {
    (void)state;
    shape s = hand_shape();
    static const row ROWS[] = {
        {0, 0, 20, {{3, -1}, {0}, {1, 1}}},
        {0, 1, 20, {{-1, -1}, {0}, {0, 1}}},
        {1, 0, 21, {{2, 2}, {0}, {1, 0}}},
    };
    char *index = write_dump("odd", &s, ROWS, 3);
    mt_per_token_dump d;
    open_dump(index, &d);
    static const int LAYERS[] = {0, 2};
    mt_err err = {{0}};
    mt_coactivation c;
    if (mt_coactivation_compute(&d, LAYERS, 2, &c, &err)) fail_msg("%s", err.msg);
    static const int64_t L0[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    assert_int_equal(c.layers[0].tokens, 2);
    assert_memory_equal(c.layers[0].counts, L0, sizeof L0);
    assert_int_equal(c.layers[0].n_top, 0);
    assert_true(c.layers[0].mean_share == 0 && c.layers[0].mean_max_share == 0);
    static const int64_t L2[16] = {2, 2, 0, 0, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(c.layers[1].tokens, 3);
    assert_memory_equal(c.layers[1].counts, L2, sizeof L2);
    assert_int_equal(c.layers[1].n_top, 2);
    check_pair(&c.layers[1].top[0], 0, 1, 2, 1.0);
    check_pair(&c.layers[1].top[1], 1, 0, 2, 2.0 / 3);
    mt_coactivation_free(&c);
    mt_token_spec t;
    if (mt_token_spec_compute(&d, LAYERS, 2, 1, &t, &err)) fail_msg("%s", err.msg);
    const mt_tspec_expert *x = t.layers[1].experts;
    check_token(&x[1].top[0], 20, 2, 2, 1.0);
    check_token(&x[1].top[1], 21, 1, 1, 1.0);
    check_token(&x[0].top[0], 21, 1, 1, 1.0);
    check_token(&x[0].top[1], 20, 1, 2, 0.5);
    assert_true(x[0].score == 0.75);
    check_token(&t.layers[0].experts[3].top[0], 20, 1, 2, 0.5);
    mt_token_spec_free(&t);
    mt_per_token_close(&d);
    free(index);
}

/* ---- a random dump against brute force ---- */

enum { R_ROWS = 700, R_IDS = 40, R_E = 16, R_K = 4, R_L = 6 };

static uint32_t g_rand = 12345;
static uint32_t next_rand(void) {
    g_rand = g_rand * 1103515245u + 12345u;
    return g_rand >> 8;
}

static shape random_shape(void) {
    shape s = {.L = R_L, .E = R_E, .K = R_K};
    s.dense[1] = s.dense[4] = true;
    return s;
}

/* Rows whose first expert mostly follows the token id (specialisation to find), the rest random. */
static row *random_rows(const shape *s) {
    row *rows = calloc(R_ROWS, sizeof *rows);
    assert_non_null(rows);
    g_rand = 12345;
    for (int t = 0; t < R_ROWS; t++) {
        row *x = &rows[t];
        x->req = t / 50;
        x->pos = t % 50;
        x->token = (int32_t)(next_rand() % R_IDS);
        if (next_rand() % 3 == 0) x->token = x->token % 5; /* a few frequent ids */
        for (int l = 0; l < s->L; l++)
            for (int k = 0; k < s->K; k++) {
                int32_t e;
                bool again;
                do {
                    e = k == 0 && next_rand() % 10 < 7 ? (x->token * 5 + l) % s->E : (int32_t)(next_rand() % s->E);
                    again = false;
                    for (int j = 0; j < k; j++) again |= x->ids[l][j] == e;
                } while (again);
                x->ids[l][k] = e;
            }
    }
    return rows;
}

static int cmp_pair(const void *a, const void *b) {
    const mt_coact_pair *x = a, *y = b;
    if (x->share != y->share) return x->share > y->share ? -1 : 1;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return x->i != y->i ? x->i - y->i : x->j - y->j;
}

static int cmp_token(const void *a, const void *b) {
    const mt_tspec_token *x = a, *y = b;
    if (x->share != y->share) return x->share > y->share ? -1 : 1;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return x->id - y->id;
}

/* What the analyses must give for layer l of the rows, counted directly. */
typedef struct brute {
    int64_t counts[R_E][R_E];
    mt_coact_pair top[R_E * R_E];
    int n_top;
    int64_t occ[R_IDS], cnt[R_IDS][R_E];
    mt_tspec_token tok[R_E][R_IDS];
    int n_tok[R_E];
    double score[R_E];
} brute;

static void brute_force(const row *rows, int l, int min_count, brute *b) {
    memset(b, 0, sizeof *b);
    for (int t = 0; t < R_ROWS; t++) {
        const int32_t *e = rows[t].ids[l];
        b->occ[rows[t].token]++;
        for (int a = 0; a < R_K; a++) {
            b->cnt[rows[t].token][e[a]]++;
            for (int c = 0; c < R_K; c++) b->counts[e[a]][e[c]]++;
        }
    }
    for (int i = 0; i < R_E; i++)
        for (int j = 0; j < R_E; j++)
            if (i != j && b->counts[i][j])
                b->top[b->n_top++] = (mt_coact_pair){i, j, b->counts[i][j], (double)b->counts[i][j] / (double)b->counts[i][i]};
    qsort(b->top, (size_t)b->n_top, sizeof *b->top, cmp_pair);
    for (int e = 0; e < R_E; e++) {
        for (int x = 0; x < R_IDS; x++)
            if (b->occ[x] >= min_count && b->cnt[x][e])
                b->tok[e][b->n_tok[e]++] = (mt_tspec_token){x, b->cnt[x][e], b->occ[x], (double)b->cnt[x][e] / (double)b->occ[x]};
        qsort(b->tok[e], (size_t)b->n_tok[e], sizeof b->tok[e][0], cmp_token);
        if (b->n_tok[e] > MT_TOKEN_SPEC_TOP) b->n_tok[e] = MT_TOKEN_SPEC_TOP;
        double sum = 0;
        for (int k = 0; k < b->n_tok[e]; k++) sum += b->tok[e][k].share;
        b->score[e] = b->n_tok[e] ? sum / b->n_tok[e] : NAN;
    }
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    if (!cJSON_IsNumber(v)) fail_msg("no number \"%s\"", key);
    return v->valuedouble;
}

/* The command's co-activation JSON of the random dump equals brute force. */
static void check_coactivation_json(const char *path, const row *rows) {
    mt_err err = {{0}};
    cJSON *j = mt_json_load_file(path, &err);
    if (!j) fail_msg("%s", err.msg);
    assert_string_equal(cJSON_GetObjectItem(j, "format")->valuestring, MT_COACTIVATION_FORMAT);
    assert_int_equal((int)num(j, "num_tokens"), R_ROWS);
    assert_true(num(j, "uniform_share") == (double)(R_K - 1) / (R_E - 1));
    const cJSON *layers = cJSON_GetObjectItem(j, "layers");
    assert_int_equal(cJSON_GetArraySize(layers), 4); /* every MoE layer */
    brute *b = malloc(sizeof *b);
    assert_non_null(b);
    static const int MOE[] = {0, 2, 3, 5};
    for (int k = 0; k < 4; k++) {
        const cJSON *l = cJSON_GetArrayItem(layers, k);
        int layer = (int)num(l, "layer");
        assert_int_equal(layer, MOE[k]);
        brute_force(rows, layer, 8, b);
        assert_int_equal((int)num(l, "num_tokens"), R_ROWS);
        const cJSON *counts = cJSON_GetObjectItem(l, "counts");
        assert_int_equal(cJSON_GetArraySize(counts), R_E);
        for (int i = 0; i < R_E; i++)
            for (int jj = 0; jj < R_E; jj++)
                assert_int_equal((int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(counts, i), jj)->valuedouble, b->counts[i][jj]);
        const cJSON *top = cJSON_GetObjectItem(l, "top_pairs");
        assert_int_equal(cJSON_GetArraySize(top), MT_COACT_TOP_PAIRS);
        for (int p = 0; p < MT_COACT_TOP_PAIRS; p++) {
            const cJSON *x = cJSON_GetArrayItem(top, p);
            assert_int_equal((int)num(x, "i"), b->top[p].i);
            assert_int_equal((int)num(x, "j"), b->top[p].j);
            assert_int_equal((int64_t)num(x, "count"), b->top[p].count);
            assert_true(num(x, "share") == b->top[p].share);
        }
        assert_true(fabs(num(l, "mean_share") - (double)(R_K - 1) / (R_E - 1)) < 1e-12);
    }
    free(b);
    cJSON_Delete(j);
}

/* The command's specialisation JSON of the random dump at layer 3 equals brute force. */
static void check_specialisation_json(const char *path, const row *rows, int min_count) {
    mt_err err = {{0}};
    cJSON *j = mt_json_load_file(path, &err);
    if (!j) fail_msg("%s", err.msg);
    assert_string_equal(cJSON_GetObjectItem(j, "format")->valuestring, MT_TOKEN_SPEC_FORMAT);
    assert_int_equal((int)num(j, "min_count"), min_count);
    assert_int_equal((int)num(j, "token_ids"), R_IDS);
    assert_true(num(j, "uniform_share") == (double)R_K / R_E);
    const cJSON *layers = cJSON_GetObjectItem(j, "layers");
    assert_int_equal(cJSON_GetArraySize(layers), 1); /* --layers 3 */
    const cJSON *l = cJSON_GetArrayItem(layers, 0);
    assert_int_equal((int)num(l, "layer"), 3);
    brute *b = malloc(sizeof *b);
    assert_non_null(b);
    brute_force(rows, 3, min_count, b);
    int ranked = 0;
    for (int x = 0; x < R_IDS; x++) ranked += b->occ[x] >= min_count;
    assert_int_equal((int)num(j, "ranked_token_ids"), ranked);
    const cJSON *experts = cJSON_GetObjectItem(l, "experts");
    assert_int_equal(cJSON_GetArraySize(experts), R_E);
    double sum = 0;
    int scored = 0;
    for (int e = 0; e < R_E; e++) {
        const cJSON *x = cJSON_GetArrayItem(experts, e);
        assert_int_equal((int)num(x, "expert"), e);
        assert_int_equal((int64_t)num(x, "tokens"), b->counts[e][e]);
        const cJSON *top = cJSON_GetObjectItem(x, "top_tokens");
        assert_int_equal(cJSON_GetArraySize(top), b->n_tok[e]);
        for (int k = 0; k < b->n_tok[e]; k++) {
            const cJSON *t = cJSON_GetArrayItem(top, k);
            assert_int_equal((int)num(t, "id"), b->tok[e][k].id);
            assert_int_equal((int64_t)num(t, "count"), b->tok[e][k].count);
            assert_int_equal((int64_t)num(t, "occurrences"), b->tok[e][k].occurrences);
            assert_true(num(t, "share") == b->tok[e][k].share);
            assert_null(cJSON_GetObjectItem(t, "text"));
        }
        if (b->n_tok[e]) {
            assert_true(num(x, "score") == b->score[e]);
            sum += b->score[e];
            scored++;
        } else {
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(x, "score")));
        }
    }
    assert_true(scored > 0 && fabs(num(l, "mean_score") - sum / scored) < 1e-12);
    free(b);
    cJSON_Delete(j);
}

static void run_ok(const char *args) {
    char out[8192];
    if (run_moetrace(args, out, sizeof out)) fail_msg("moetrace %s: %s", args, out);
    assert_string_equal(out, ""); /* nothing on stdout, nothing on stderr */
}

/* `report INDEX FLAGS --out g_dir/NAME` draws a PNG cairo reads back, of a size within
 * [w0, w1] x [h0, h1], or (NAME ending in .svg) a whole SVG document. */
static void draw_ok(const char *index, const char *flags, const char *name, int w0, int w1, int h0, int h1) {
    char args[2048];
    snprintf(args, sizeof args, "report %s %s --out %s", index, flags, path_of(name));
    run_ok(args);
    if (strstr(name, ".svg")) {
        char *svg = slurp(path_of(name), NULL);
        if (!svg || !strstr(svg, "<svg") || !strstr(svg, "</svg>")) fail_msg("%s: not a whole SVG document", name);
        free(svg);
        return;
    }
    cairo_surface_t *png = cairo_image_surface_create_from_png(path_of(name));
    if (cairo_surface_status(png) != CAIRO_STATUS_SUCCESS) fail_msg("%s: not a PNG cairo reads", name);
    int w = cairo_image_surface_get_width(png), h = cairo_image_surface_get_height(png);
    cairo_surface_destroy(png);
    if (w < w0 || w > w1 || h < h0 || h > h1) fail_msg("%s: %d x %d, not within [%d, %d] x [%d, %d]", name, w, h, w0, w1, h0, h1);
}

/* The command on the random dump: JSON equal to brute force (every MoE layer by default, or those of
 * --layers), pictures of both. */
static void test_random_against_brute_force(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    shape s = random_shape();
    row *rows = random_rows(&s);
    char *index = write_dump("random", &s, rows, R_ROWS);
    char args[2048];
    snprintf(args, sizeof args, "report %s --coactivation --out %s", index, path_of("co.json"));
    run_ok(args);
    check_coactivation_json(path_of("co.json"), rows);
    snprintf(args, sizeof args, "report %s --token-specialisation --layers 3 --out %s", index, path_of("ts.json"));
    run_ok(args);
    check_specialisation_json(path_of("ts.json"), rows, 8);
    snprintf(args, sizeof args, "report %s --token-specialization --layers=3 --min-count 30 --out %s", index,
             path_of("ts30.json"));
    run_ok(args);
    check_specialisation_json(path_of("ts30.json"), rows, 30);
    draw_ok(index, "--coactivation", "co.png", 700, 1400, 600, 1400);
    draw_ok(index, "--token-specialisation", "ts.svg", 0, 0, 0, 0);
    free(rows);
    free(index);
}

/* The command's JSON of the tiny dump, field by field; --layers; pictures (PNG, SVG); the picture of
 * a layer without ranked ids. */
static void test_cli_hand(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    char *index = write_hand();
    char args[2048];
    mt_err err = {{0}};
    snprintf(args, sizeof args, "report %s --coactivation --layers 2 --out %s", index, path_of("h.json"));
    run_ok(args);
    cJSON *j = mt_json_load_file(path_of("h.json"), &err);
    if (!j) fail_msg("%s", err.msg);
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "analyses-moe");
    assert_int_equal((int)num(j, "num_hidden_layers"), 3);
    assert_int_equal((int)num(j, "num_experts"), 4);
    assert_int_equal((int)num(j, "top_k"), 2);
    assert_int_equal((int)num(j, "num_tokens"), 4);
    assert_int_equal((int)num(j, "dropped_tokens"), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "moe_layers")), 2);
    const cJSON *layers = cJSON_GetObjectItem(j, "layers");
    assert_int_equal(cJSON_GetArraySize(layers), 1);
    const cJSON *l = cJSON_GetArrayItem(layers, 0);
    assert_int_equal((int)num(l, "layer"), 2);
    assert_true(num(l, "mean_max_share") == 0.875);
    const cJSON *p = cJSON_GetArrayItem(cJSON_GetObjectItem(l, "top_pairs"), 3);
    assert_true(num(p, "i") == 2 && num(p, "j") == 3 && num(p, "count") == 2 && num(p, "share") == 0.5);
    assert_int_equal((int)cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "counts"), 2), 2)->valuedouble, 4);
    cJSON_Delete(j);

    snprintf(args, sizeof args, "report %s --token-specialisation --min-count 1 --out %s", index, path_of("t.json"));
    run_ok(args);
    if (!(j = mt_json_load_file(path_of("t.json"), &err))) fail_msg("%s", err.msg);
    assert_int_equal((int)num(j, "ranked_token_ids"), 2);
    l = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "layers"), 1);
    const cJSON *e3 = cJSON_GetArrayItem(cJSON_GetObjectItem(l, "experts"), 3);
    assert_true(num(e3, "score") == (1.0 + 1.0 / 3) / 2);
    const cJSON *t1 = cJSON_GetArrayItem(cJSON_GetObjectItem(e3, "top_tokens"), 1);
    assert_true(num(t1, "id") == 10 && num(t1, "count") == 1 && num(t1, "occurrences") == 3 && num(t1, "share") == 1.0 / 3);
    cJSON_Delete(j);
    /* the default min_count (8): no id is ranked; scores are null */
    snprintf(args, sizeof args, "report %s --token-specialisation --out %s", index, path_of("t8.json"));
    run_ok(args);
    if (!(j = mt_json_load_file(path_of("t8.json"), &err))) fail_msg("%s", err.msg);
    assert_int_equal((int)num(j, "min_count"), MT_TOKEN_SPEC_MIN_COUNT);
    l = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "layers"), 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(l, "mean_score")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "experts"), 0), "score")));
    cJSON_Delete(j);

    draw_ok(index, "--coactivation", "h.png", 600, 1200, 300, 1200);
    draw_ok(index, "--token-specialisation", "t.PNG", 600, 1600, 150, 400);
    draw_ok(index, "--token-specialisation --min-count 1", "t1.png", 600, 1600, 150, 400);
    draw_ok(index, "--coactivation", "h.svg", 0, 0, 0, 0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q '\\.tmp\\.'", g_dir);
    assert_int_not_equal(system(cmd), 0); /* no temporary file left */
    free(index);
}

/* The layers of a picture by default: 4 MoE layers evenly spaced, the first and the last among them;
 * of a .json: all; --layers sorted. */
static void test_layers(void **state) {
    (void)state;
    shape s = {.L = 10, .E = 4, .K = 2};
    s.dense[4] = true; /* MoE layers 0 1 2 3 5 6 7 8 9 */
    row *rows = calloc(2, sizeof *rows);
    assert_non_null(rows);
    for (int t = 0; t < 2; t++)
        for (int l = 0; l < s.L; l++) {
            rows[t].pos = t;
            rows[t].ids[l][0] = 0;
            rows[t].ids[l][1] = 1 + t;
        }
    char *index = write_dump("layers", &s, rows, 2);
    mt_per_token_dump d;
    open_dump(index, &d);
    mt_err err = {{0}};
    int *layers, n;
    if (mt_analysis_layers(&d, NULL, 0, MT_ANALYSIS_DRAWN, &layers, &n, &err)) fail_msg("%s", err.msg);
    assert_int_equal(n, 4);
    assert_memory_equal(layers, ((int[]){0, 3, 6, 9}), 4 * sizeof(int));
    free(layers);
    if (mt_analysis_layers(&d, NULL, 0, 0, &layers, &n, &err)) fail_msg("%s", err.msg);
    assert_int_equal(n, 9);
    free(layers);
    if (mt_analysis_layers(&d, (int[]){9, 0, 5}, 3, MT_ANALYSIS_DRAWN, &layers, &n, &err)) fail_msg("%s", err.msg);
    assert_int_equal(n, 3);
    assert_memory_equal(layers, ((int[]){0, 5, 9}), 3 * sizeof(int));
    free(layers);
    assert_int_equal(mt_analysis_layers(&d, (int[]){4}, 1, 4, &layers, &n, &err), -1);
    assert_non_null(strstr(err.msg, "layer 4 is dense"));
    assert_non_null(strstr(err.msg, "0, 1, 2, 3, 5, 6, 7, 8, 9"));
    mt_per_token_close(&d);
    free(rows);
    free(index);
}

/* --model: each top token's text is the id decoded alone by the tokenizer; an id outside its
 * vocabulary is an error. */
static void test_model_texts(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    shape s = hand_shape();
    row rows[12];
    memset(rows, 0, sizeof rows);
    static const int32_t IDS[] = {260, 300, 1, 42}; /* three times each */
    for (int t = 0; t < 12; t++) {
        rows[t] = (row){0, t, IDS[t % 4], {{t % 4, 3 - t % 4}, {0}, {0, 1}}};
    }
    char *index = write_dump("texts", &s, rows, 12);
    char args[2048], out[8192];
    snprintf(args, sizeof args, "report %s --token-specialisation --min-count 3 --model %s --out %s", index, DEMO_MODEL,
             path_of("m.json"));
    run_ok(args);
    mt_err err = {{0}};
    cJSON *j = mt_json_load_file(path_of("m.json"), &err);
    if (!j) fail_msg("%s", err.msg);
    mt_tokenizer *tk;
    if (mt_tokenizer_load(&tk, DEMO_MODEL, &err)) fail_msg("%s", err.msg);
    int texts = 0;
    const cJSON *layer, *expert, *tok;
    cJSON_ArrayForEach(layer, cJSON_GetObjectItem(j, "layers")) cJSON_ArrayForEach(expert, cJSON_GetObjectItem(layer, "experts"))
        cJSON_ArrayForEach(tok, cJSON_GetObjectItem(expert, "top_tokens")) {
        int32_t id = (int32_t)num(tok, "id");
        char *want;
        size_t len;
        if (mt_tokenizer_decode(tk, &id, 1, 0, &want, &len, &err)) fail_msg("%s", err.msg);
        assert_string_equal(cJSON_GetObjectItem(tok, "text")->valuestring, want);
        free(want);
        texts++;
    }
    assert_true(texts >= 8);
    mt_tokenizer_free(tk);
    cJSON_Delete(j);
    draw_ok(index, "--token-specialisation --min-count 3 --model " DEMO_MODEL, "m.png", 600, 1600, 150, 400);
    /* an id beyond the vocabulary: the folder is not the dump's model */
    rows[0].token = rows[4].token = rows[8].token = 900000;
    char *big = write_dump("big-ids", &s, rows, 12);
    snprintf(args, sizeof args, "report %s --token-specialisation --min-count 3 --model %s --out %s", big, DEMO_MODEL,
             path_of("big.json"));
    assert_int_equal(run_moetrace(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "token id 900000"));
    assert_int_equal(access(path_of("big.json"), F_OK), -1);
    free(big);
    free(index);
}

/* Qwen3-30B-A3B's shape (48 layers, 128 experts, top-8): both pictures within bounds, the table cut
 * at 64 experts (said), the JSON with them all. */
static void test_large_shape(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    shape s = {.L = 48, .E = 128, .K = 8};
    enum { N = 600 };
    row *rows = calloc(N, sizeof *rows);
    assert_non_null(rows);
    g_rand = 7;
    for (int t = 0; t < N; t++) {
        rows[t].req = t / 100;
        rows[t].pos = t % 100;
        rows[t].token = (int32_t)(next_rand() % 50);
        for (int l = 0; l < s.L; l++)
            for (int k = 0; k < s.K; k++) rows[t].ids[l][k] = (rows[t].token * 7 + l + k * 16) % s.E;
    }
    char *index = write_dump("large", &s, rows, N);
    char args[2048];
    draw_ok(index, "--coactivation", "big-co.png", 900, 1400, 900, 1400);
    draw_ok(index, "--token-specialisation", "big-ts.png", 1200, 1600, 2 * 64 * 18, 2 * 64 * 18 + 400);
    snprintf(args, sizeof args, "report %s --token-specialisation --layers 47 --out %s", index, path_of("big-ts.json"));
    run_ok(args);
    mt_err err = {{0}};
    cJSON *j = mt_json_load_file(path_of("big-ts.json"), &err);
    if (!j) fail_msg("%s", err.msg);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "layers"), 0), "experts")), 128);
    cJSON_Delete(j);
    draw_ok(index, "--coactivation --layers 0,47", "big-co.svg", 0, 0, 0, 0);
    free(rows);
    free(index);
}

/* An error case: the arguments after "report" (%I the per_token index, %S a stat dump, %P a per_pass
 * dump, %O the output err.json, %D the scratch folder), the exit status, what stderr must say. */
typedef struct bad_case {
    const char *args;
    int status;
    const char *says, *also;
} bad_case;

static const bad_case BAD[] = {
    {"%S --coactivation --out %O", 1, "--coactivation needs a per_token dump, and this is a \"stat\" dump", "--per-token"},
    {"%P --token-specialisation --out %O", 1, "--token-specialisation needs a per_token dump, and this is a \"per_pass\"", NULL},
    {"%I --coactivation --layers 0,1 --out %O", 2, "layer 1 is dense (no experts); its MoE layers are 0, 2", NULL},
    {"%I --token-specialisation --layers 7 --out %O", 2, "layer 7 is not a layer of the dump", "0 .. 2"},
    {"%I --coactivation --layers 2,2 --out %O", 2, "layer 2 is named twice", NULL},
    {"%I --coactivation --layers 0,x --out %O", 2, "--layers: 'x' is not an integer", NULL},
    {"%I --coactivation --layers 0,,2 --out %O", 2, "--layers: '' is not an integer", NULL},
    {"%I --coactivation", 2, "--out is required", NULL},
    {"%I --token-specialisation --out %D/co.txt", 2, "co.txt", ".png, .svg or .json"},
    {"%I --token-specialisation --min-count 0 --out %O", 2, "--min-count", "'0'"},
    {"%I --coactivation --min-count 3 --out %O", 2, "--min-count go with --token-specialisation", NULL},
    {"%I --coactivation --model " DEMO_MODEL " --out %O", 2, "--model and --min-count go with", NULL},
    {"%I --coactivation --token-specialisation --out %O", 2, "give one of --coactivation and --token-specialisation", NULL},
    {"%I %I --coactivation --out %O", 2, "--coactivation reads one per_token dump, INDEX.json; 2 were given", NULL},
    {"%I --coactivation --over-time --out %O", 2, "--over-time, --request, --ep-size and --placement do not apply", NULL},
    {"%I --layers 0 --out %O", 2, "--layers goes with --coactivation or --token-specialisation", NULL},
    {"%I --coactivation --layers", 2, "--layers needs a value", NULL},
    {"%D/none.json --coactivation --out %O", 1, "none.json", NULL},
};

/* fmt with its placeholders filled (paths: %I %S %P %O; %D the scratch folder) into out. */
static void fill(const char *fmt, const char *const paths[4], char *out, size_t size) {
    static const char KEYS[] = "ISPO";
    mt_strbuf b = {0};
    for (const char *p = fmt; *p; p++) {
        const char *key = p[0] == '%' && p[1] ? strchr(KEYS, p[1]) : NULL;
        if (key) mt_strbuf_puts(&b, paths[key - KEYS]);
        else if (p[0] == '%' && p[1] == 'D') mt_strbuf_puts(&b, g_dir);
        else mt_strbuf_append(&b, p, 1);
        p += key || (p[0] == '%' && p[1] == 'D');
    }
    snprintf(out, size, "%s", b.data);
    mt_strbuf_free(&b);
}

/* Every error: its exit status, the bad input named, no output file; --help names both analyses. */
static void test_errors(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    shape s = hand_shape();
    static const row ROWS[] = {{0, 0, 10, {{0, 1}, {0}, {2, 3}}}, {0, 1, 11, {{1, 2}, {0}, {3, 0}}}};
    char *paths[4] = {write_dump("errors", &s, ROWS, 2), write_index("stat", &s, "stat", 0),
                      write_index("per_pass", &s, "per_pass", 0), strdup(path_of("err.json"))};
    char args[4096], cmd[4200], out[16384];
    for (size_t k = 0; k < sizeof BAD / sizeof *BAD; k++) {
        fill(BAD[k].args, (const char *const *)paths, args, sizeof args);
        snprintf(cmd, sizeof cmd, "report %s", args);
        int st = run_moetrace(cmd, out, sizeof out);
        if (st != BAD[k].status) fail_msg("moetrace %s: exit %d, expected %d: %s", cmd, st, BAD[k].status, out);
        if (!strstr(out, BAD[k].says) || (BAD[k].also && !strstr(out, BAD[k].also)))
            fail_msg("moetrace %s: \"%s\" not said: %s", cmd, BAD[k].says, out);
        assert_int_equal(access(paths[3], F_OK), -1);
    }
    assert_int_equal(run_moetrace_stdout("report --help", out, sizeof out), 0);
    static const char *const HELP[] = {"--coactivation", "--token-specialisation", "moetrace.coactivation.v1",
                                       "moetrace.token_specialisation.v1", "--min-count N", "--layers L,L"};
    for (size_t k = 0; k < sizeof HELP / sizeof *HELP; k++)
        if (!strstr(out, HELP[k])) fail_msg("report --help does not name %s", HELP[k]);
    for (int k = 0; k < 4; k++) free(paths[k]);
}

/* A real dump: `moetrace profile --per-token` on the fixture; the co-activation diagonal is each
 * layer's expert counts recomputed from topk_ids, and every top token's count and occurrences are
 * those of its rows. */
static void test_profile_dump(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    mt_strbuf ds = {0};
    g_rand = 99;
    for (int r = 0; r < 24; r++) {
        int len = 4 + (int)(next_rand() % 40);
        mt_strbuf_puts(&ds, "{\"input_ids\": [");
        for (int i = 0; i < len; i++) mt_strbuf_printf(&ds, "%s%u", i ? ", " : "", 3 + next_rand() % 40);
        mt_strbuf_puts(&ds, "]}\n");
    }
    write_text("ds.jsonl", ds.data);
    mt_strbuf_free(&ds);
    char args[2048], out[16384];
    snprintf(args, sizeof args, "profile --model %s --data %s --out %s --max-new-tokens 4 --ignore-eos --per-token",
             FIXTURE, path_of("ds.jsonl"), path_of("prof"));
    if (run_moetrace(args, out, sizeof out)) fail_msg("profile: %s", out);
    mt_err err = {{0}};
    cJSON *sum = mt_json_load_file(path_of("prof/summary.json"), &err);
    if (!sum) fail_msg("%s", err.msg);
    char *index = strdup(cJSON_GetObjectItem(sum, "per_token_dump")->valuestring);
    cJSON_Delete(sum);
    snprintf(args, sizeof args, "report %s --coactivation --out %s", index, path_of("p-co.json"));
    run_ok(args);
    snprintf(args, sizeof args, "report %s --token-specialisation --layers 3 --out %s", index, path_of("p-ts.json"));
    run_ok(args);
    /* the rows, read as any safetensors file */
    char st[1024];
    snprintf(st, sizeof st, "%.*s.safetensors", (int)strlen(index) - 5, index);
    mt_checkpoint *ck;
    if (mt_checkpoint_open(&ck, st, &err)) fail_msg("%s", err.msg);
    const mt_tensor_info *ids = mt_checkpoint_find(ck, "topk_ids"), *tok = mt_checkpoint_find(ck, "token_id");
    int64_t T = ids->shape[0], L = ids->shape[1], K = ids->shape[2];
    assert_true(T > 100 && L == 4 && K == 2);
    const int32_t *v = ids->data, *tv = tok->data;
    int64_t count[4][8] = {{0}};
    for (int64_t t = 0; t < T; t++)
        for (int l = 0; l < L; l++)
            for (int k = 0; k < K; k++)
                if (l != 1) count[l][v[(t * L + l) * K + k]]++;
    cJSON *co = mt_json_load_file(path_of("p-co.json"), &err);
    if (!co) fail_msg("%s", err.msg);
    assert_int_equal((int64_t)num(co, "num_tokens"), T);
    const cJSON *layers = cJSON_GetObjectItem(co, "layers");
    assert_int_equal(cJSON_GetArraySize(layers), 3); /* layer 1 is dense */
    const cJSON *l;
    cJSON_ArrayForEach(l, layers) {
        int layer = (int)num(l, "layer");
        const cJSON *counts = cJSON_GetObjectItem(l, "counts");
        for (int e = 0; e < 8; e++)
            assert_int_equal((int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(counts, e), e)->valuedouble, count[layer][e]);
        assert_int_equal((int64_t)num(l, "num_tokens"), T);
    }
    cJSON_Delete(co);
    cJSON *ts = mt_json_load_file(path_of("p-ts.json"), &err);
    if (!ts) fail_msg("%s", err.msg);
    const cJSON *expert, *t;
    int e = 0, checked = 0;
    cJSON_ArrayForEach(expert, cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ts, "layers"), 0), "experts")) {
        assert_int_equal((int64_t)num(expert, "tokens"), count[3][e]);
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(expert, "top_tokens")) {
            int32_t id = (int32_t)num(t, "id");
            int64_t occ = 0, routed = 0;
            for (int64_t r = 0; r < T; r++) {
                if (tv[r] != id) continue;
                occ++;
                routed += v[(r * L + 3) * K] == e || v[(r * L + 3) * K + 1] == e;
            }
            assert_true(occ >= MT_TOKEN_SPEC_MIN_COUNT);
            assert_int_equal((int64_t)num(t, "occurrences"), occ);
            assert_int_equal((int64_t)num(t, "count"), routed);
            checked++;
        }
        e++;
    }
    assert_int_equal(e, 8);
    assert_true(checked > 8);
    cJSON_Delete(ts);
    mt_checkpoint_close(ck);
    free(index);
}

static int setup(void **state) {
    (void)state;
    return tmp_dir_make("report_analyses_");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coactivation_by_hand),
        cmocka_unit_test(test_specialisation_by_hand),
        cmocka_unit_test(test_odd_rows),
        cmocka_unit_test(test_layers),
        cmocka_unit_test(test_random_against_brute_force),
        cmocka_unit_test(test_cli_hand),
        cmocka_unit_test(test_model_texts),
        cmocka_unit_test(test_large_shape),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_profile_dump),
    };
    return cmocka_run_group_tests(tests, setup, tmp_dir_teardown);
}
