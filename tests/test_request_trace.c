/* `moetrace report INDEX.json --request RID` (report/request_trace.h): per_token dumps written by the
 * recorder from known rows, traced back exactly (positions, token ids, experts, missing positions,
 * one row for a recomputed token, domains), --model labels equal to detokenize's, pictures of a tiny
 * and of a Qwen3-30B-A3B-shaped dump, and every error case of the command. */
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
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "report/request_trace.h"
#include "routing/recorder.h"
#include "test_cli.h"
#include "test_files.h"
#include "tokenizer/tokenizer.h"
#include "util/json_util.h"

#define DEMO_MODEL MT_SOURCE_DIR "/assets/demo-model"

static char g_dir[256];

static const char *path_of(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

/* A PNG file's width and height (IHDR). */
static void png_size(const char *path, int *w, int *h) {
    size_t n = 0;
    unsigned char *b = (unsigned char *)slurp(path, &n);
    if (!b) fail_msg("%s: missing", path);
    assert_true(n > 33);
    assert_memory_equal(b, "\x89PNG\r\n\x1a\n", 8);
    *w = (int)((uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19]);
    *h = (int)((uint32_t)b[20] << 24 | (uint32_t)b[21] << 16 | (uint32_t)b[22] << 8 | b[23]);
    free(b);
}

/* No temporary file of an atomic write is left in dir. */
static bool no_temp_files(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q '\\.tmp\\.'", dir);
    return system(cmd) != 0;
}

/* ---- dumps from known rows ---- */

typedef struct shape {
    int L, E, K;
    bool dense[256]; /* layers without experts */
} shape;

/* One token forwarded: its request (index into the test's names), position, token id, and whether
 * it is a recomputed one (no row of its own). */
typedef struct tok {
    int req;
    int32_t pos, token;
    bool recomputed;
} tok;

/* The routing of a token: top_k distinct ids from its request, position and layer; -1 when dense. */
static int32_t route(const shape *s, int req, int32_t pos, int l, int j) {
    if (s->dense[l]) return -1;
    uint32_t h = (uint32_t)req * 2654435761u ^ (uint32_t)pos * 40503u ^ (uint32_t)l * 9973u;
    h ^= h >> 13;
    return (int32_t)((h % (uint32_t)s->E + (uint32_t)j) % (uint32_t)s->E);
}

static const char *const *g_names; /* request names by index (NULL: unnamed) */
static const int32_t *g_groups;    /* request groups by index, or NULL */

static bool label_of(void *ctx, int32_t g, char *out, size_t size) {
    (void)ctx;
    static const char *const LABELS[] = {"", "code", "math"};
    if (g < 1 || g > 2) return false;
    snprintf(out, size, "%s", LABELS[g]);
    return true;
}

/* Feeds one forward pass of the n tokens to the recorder's sink. */
static void feed(mt_routing_sink sink, const shape *s, const tok *t, int n) {
    int32_t *seq = calloc((size_t)n, 4), *pos = calloc((size_t)n, 4), *tokens = calloc((size_t)n, 4);
    int32_t *groups = calloc((size_t)n, 4), *ids = calloc((size_t)n * s->K, 4);
    int64_t *req = calloc((size_t)n, 8);
    uint8_t *recomputed = calloc((size_t)n, 1);
    const char **names = calloc((size_t)n, sizeof *names);
    assert_true(seq && pos && tokens && groups && ids && req && recomputed && names);
    for (int i = 0; i < n; i++) {
        seq[i] = t[i].req;
        req[i] = 100 + t[i].req;
        pos[i] = t[i].pos;
        tokens[i] = t[i].token;
        groups[i] = g_groups ? g_groups[t[i].req] : 0;
        recomputed[i] = t[i].recomputed;
        names[i] = g_names[t[i].req];
    }
    for (int l = 0; l < s->L; l++) {
        if (s->dense[l]) continue; /* dense layers send no events */
        for (int i = 0; i < n; i++)
            for (int j = 0; j < s->K; j++) ids[i * s->K + j] = route(s, t[i].req, t[i].pos, l, j);
        mt_routing_event ev = {.layer = l, .n_tokens = n, .top_k = s->K, .seq_ids = seq, .positions = pos,
                               .tokens = tokens, .request_ids = req, .request_names = names,
                               .request_groups = g_groups ? groups : NULL, .topk_ids = ids, .recomputed = recomputed};
        sink.on_layer(sink.ctx, &ev);
    }
    mt_pass_event pe = {.n_tokens = n, .num_seqs_in_pass = 1};
    sink.on_pass(sink.ctx, &pe);
    free(seq);
    free(pos);
    free(tokens);
    free(groups);
    free(ids);
    free(req);
    free(recomputed);
    free(names);
}

static mt_recorder *recorder(const shape *s, mt_recorder_mode mode, const char *dir) {
    mt_config c;
    memset(&c, 0, sizeof c);
    c.num_hidden_layers = s->L;
    c.num_experts = s->E;
    c.top_k = s->K;
    for (int l = 0; l < s->L; l++) {
        c.layer_is_moe[l] = !s->dense[l];
        c.num_moe_layers += !s->dense[l];
    }
    mt_recorder_opts o;
    mt_recorder_opts_default(&o);
    o.mode = mode;
    o.max_tokens = 1 << 20;
    o.dump_dir = dir;
    mt_err err = {{0}};
    mt_recorder *r = mt_recorder_new(&c, "trace-moe", &o, &err);
    if (!r) fail_msg("%s", err.msg);
    if (g_groups) mt_recorder_set_group_label(r, label_of, NULL);
    mt_recorder_start(r);
    return r;
}

/* Dumps r into path (the index's path, malloc'd: the caller frees it) and frees r. */
static char *dump(mt_recorder *r) {
    char path[1024];
    mt_err err = {{0}};
    if (mt_recorder_dump(r, path, sizeof path, &err)) fail_msg("%s", err.msg);
    mt_recorder_free(r);
    return strdup(path);
}

/* The tiny shape: 4 layers, layer 1 dense, 8 experts, top-2. */
static shape tiny(void) {
    shape s = {.L = 4, .E = 8, .K = 2};
    s.dense[1] = true;
    return s;
}

static const char *const TINY_NAMES[] = {"req-A", "b", "req-A", "cmpl-1"};
static const int32_t TINY_GROUPS[] = {1, 0, 2, 1};

/* Request 0 ("req-A"): positions 16..27 (0..15 came from the prefix cache), in three passes;
 * request 1 ("b"): 0..9, its 5..6 forwarded again (recomputed) after a preemption; request 2 has
 * the name "req-A" too; request 3: positions 0..2 and 6..7 (3..5 missing). */
static char *write_tiny(const shape *s) {
    g_names = TINY_NAMES;
    g_groups = TINY_GROUPS;
    mt_recorder *r = recorder(s, MT_REC_PER_TOKEN, g_dir);
    tok p1[16], p2[16], p3[16];
    int n1 = 0, n2 = 0, n3 = 0;
    for (int p = 0; p < 7; p++) p1[n1++] = (tok){1, p, 500 + p, false};
    for (int p = 16; p < 21; p++) p1[n1++] = (tok){0, p, 1000 + p, false};
    for (int p = 21; p < 25; p++) p2[n2++] = (tok){0, p, 1000 + p, false};
    for (int p = 5; p < 10; p++) p2[n2++] = (tok){1, p, 500 + p, p < 7};
    for (int p = 0; p < 3; p++) p2[n2++] = (tok){3, p, 300 + p, false};
    for (int p = 25; p < 28; p++) p3[n3++] = (tok){0, p, 1000 + p, false};
    for (int p = 0; p < 4; p++) p3[n3++] = (tok){2, p, 700 + p, false};
    for (int p = 6; p < 8; p++) p3[n3++] = (tok){3, p, 300 + p, false};
    feed(mt_recorder_sink(r), s, p1, n1);
    feed(mt_recorder_sink(r), s, p2, n2);
    feed(mt_recorder_sink(r), s, p3, n3);
    g_groups = NULL;
    return dump(r);
}

/* What request req's trace must hold: positions from..to without those in [gap_from, gap_to]
 * (none when gap_from > gap_to), token ids base + position. */
typedef struct expected {
    int req;
    int32_t from, to, gap_from, gap_to, base;
} expected;

static bool expected_has(const expected *x, int32_t p) { return p >= x->from && p <= x->to && !(p >= x->gap_from && p <= x->gap_to); }

/* The trace t equals x exactly. */
static void check_trace(const mt_request_trace *t, const shape *s, const expected *x, int32_t missing_from) {
    int64_t i = 0;
    for (int32_t p = x->from; p <= x->to; p++) {
        if (!expected_has(x, p)) continue;
        assert_true(i < t->n);
        assert_int_equal(t->position[i], p);
        assert_int_equal(t->token_id[i], x->base + p);
        for (int l = 0; l < s->L; l++)
            for (int j = 0; j < s->K; j++)
                assert_int_equal(t->experts[((size_t)i * s->L + l) * s->K + j], route(s, x->req, p, l, j));
        i++;
    }
    assert_int_equal(t->n, i);
    /* missing: [missing_from, from) and the gap */
    int64_t missing = (x->from - missing_from) + (x->gap_from <= x->gap_to ? x->gap_to - x->gap_from + 1 : 0);
    assert_int_equal(mt_request_trace_missing_count(t), missing);
}

/* The JSON trace at path equals x (and the shape s): every token, its experts per hidden layer (-1s
 * for dense layers), the missing positions listed one by one. */
static void check_json(const char *path, const shape *s, const expected *x, const char *rid, const char *domain) {
    mt_err err = {{0}};
    cJSON *j = mt_json_load_file(path, &err);
    if (!j) fail_msg("%s", err.msg);
    assert_string_equal(cJSON_GetObjectItem(j, "format")->valuestring, MT_REQUEST_TRACE_FORMAT);
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, "trace-moe");
    assert_string_equal(cJSON_GetObjectItem(j, "request_id")->valuestring, rid);
    const cJSON *d = cJSON_GetObjectItem(j, "domain");
    if (domain) assert_string_equal(d->valuestring, domain);
    else assert_true(cJSON_IsNull(d));
    assert_int_equal(cJSON_GetObjectItem(j, "num_hidden_layers")->valueint, s->L);
    assert_int_equal(cJSON_GetObjectItem(j, "num_experts")->valueint, s->E);
    assert_int_equal(cJSON_GetObjectItem(j, "top_k")->valueint, s->K);
    const cJSON *moe = cJSON_GetObjectItem(j, "moe_layers");
    int m = 0;
    for (int l = 0; l < s->L; l++)
        if (!s->dense[l]) assert_int_equal(cJSON_GetArrayItem(moe, m++)->valueint, l);
    assert_int_equal(cJSON_GetArraySize(moe), m);
    const cJSON *missing = cJSON_GetObjectItem(j, "missing_positions"), *v;
    int32_t want = 0;
    int k = 0;
    cJSON_ArrayForEach(v, missing) {
        while (expected_has(x, want)) want++;
        assert_int_equal(v->valueint, want++);
        k++;
    }
    while (want <= x->to && expected_has(x, want)) want++;
    assert_true(want > x->to); /* nothing missing was left out */
    const cJSON *tokens = cJSON_GetObjectItem(j, "tokens");
    int i = 0;
    for (int32_t p = x->from; p <= x->to; p++) {
        if (!expected_has(x, p)) continue;
        const cJSON *t = cJSON_GetArrayItem(tokens, i++);
        assert_non_null(t);
        assert_int_equal(cJSON_GetObjectItem(t, "position")->valueint, p);
        assert_int_equal(cJSON_GetObjectItem(t, "token_id")->valueint, x->base + p);
        assert_null(cJSON_GetObjectItem(t, "text"));
        const cJSON *ex = cJSON_GetObjectItem(t, "experts");
        assert_int_equal(cJSON_GetArraySize(ex), s->L);
        for (int l = 0; l < s->L; l++) {
            const cJSON *row = cJSON_GetArrayItem(ex, l);
            assert_int_equal(cJSON_GetArraySize(row), s->K);
            for (int jj = 0; jj < s->K; jj++)
                assert_int_equal(cJSON_GetArrayItem(row, jj)->valueint, route(s, x->req, p, l, jj));
        }
    }
    assert_int_equal(cJSON_GetArraySize(tokens), i);
    assert_int_equal(cJSON_GetObjectItem(j, "num_tokens")->valueint, i);
    cJSON_Delete(j);
}

static const expected REQ_A = {0, 16, 27, 1, 0, 1000}, REQ_B = {1, 0, 9, 1, 0, 500}, REQ_C = {3, 0, 7, 3, 5, 300};

/* ---- tests ---- */

/* The library: each request's rows exactly, in position order, one for a recomputed token; the
 * first of two requests with one id; domains; gaps. */
static void test_load_rows(void **state) {
    (void)state;
    shape s = tiny();
    char *index = write_tiny(&s);
    mt_err err = {{0}};
    mt_request_trace t;
    if (mt_request_trace_load(index, "req-A", &t, &err)) fail_msg("%s", err.msg);
    check_trace(&t, &s, &REQ_A, 0);
    assert_int_equal(t.same_id, 2);
    assert_int_equal(t.request_index, 1); /* first-seen order: "b" came first */
    assert_string_equal(t.domain, "code");
    assert_string_equal(t.model, "trace-moe");
    assert_int_equal(t.n_gaps, 1);
    assert_int_equal(t.gap_first[0], 0);
    assert_int_equal(t.gap_last[0], 15);
    mt_request_trace_free(&t);

    if (mt_request_trace_load(index, "b", &t, &err)) fail_msg("%s", err.msg);
    check_trace(&t, &s, &REQ_B, 0);
    assert_null(t.domain);
    assert_int_equal(t.n_gaps, 0);
    mt_request_trace_free(&t);

    if (mt_request_trace_load(index, "cmpl-1", &t, &err)) fail_msg("%s", err.msg);
    check_trace(&t, &s, &REQ_C, 0);
    assert_int_equal(t.n_gaps, 1);
    assert_int_equal(t.gap_first[0], 3);
    assert_int_equal(t.gap_last[0], 5);
    mt_request_trace_free(&t);
    free(index);
}

/* Rewrites the index at path with key set to value (a JSON text). */
static void patch_index(const char *path, const char *key, const char *value) {
    mt_err err = {{0}};
    cJSON *j = mt_json_load_file(path, &err);
    assert_non_null(j);
    cJSON *v = cJSON_Parse(value);
    assert_non_null(v);
    cJSON_ReplaceItemInObject(j, key, v);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
}

/* The index is untrusted: top_k must be 1 .. num_experts (read as given, not cut to an int) and
 * dropped_tokens a non-negative integer; a bad one is an error naming the field. */
static void test_bad_index_counts(void **state) {
    (void)state;
    shape s = tiny();
    static const struct {
        const char *key;
        double value;
    } BAD[] = {{"top_k", 4294967298.0}, {"top_k", 9.0}, {"top_k", 0.0}, {"top_k", 1.5},
               {"dropped_tokens", 1e300}, {"dropped_tokens", -1.0}, {"dropped_tokens", 2.5}};
    for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) {
        char *index = write_tiny(&s), value[64];
        mt_err err = {{0}};
        snprintf(value, sizeof value, "%.17g", BAD[i].value);
        patch_index(index, BAD[i].key, value);
        mt_request_trace t;
        if (!mt_request_trace_load(index, "req-A", &t, &err))
            fail_msg("%s %g: accepted (top_k %d, dropped_tokens %lld)", BAD[i].key, BAD[i].value, t.top_k,
                     (long long)t.dropped_tokens);
        if (!strstr(err.msg, BAD[i].key)) fail_msg("%s %g: the error does not name it: %s", BAD[i].key, BAD[i].value, err.msg);
        free(index);
    }
}

/* The command's JSON equals the rows; pictures are written; nothing on stdout. */
static void test_cli_json_and_pictures(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    shape s = tiny();
    char *index = write_tiny(&s);
    char args[2048], out[8192];
    snprintf(args, sizeof args, "report %s --request req-A --out %s", index, path_of("a.json"));
    assert_int_equal(run_moetrace_stdout(args, out, sizeof out), 0);
    assert_string_equal(out, "");
    check_json(path_of("a.json"), &s, &REQ_A, "req-A", "code");
    snprintf(args, sizeof args, "report %s --request b --out %s", index, path_of("b.json"));
    assert_int_equal(run_moetrace_stdout(args, out, sizeof out), 0);
    check_json(path_of("b.json"), &s, &REQ_B, "b", NULL);
    snprintf(args, sizeof args, "report %s --request cmpl-1 --out %s", index, path_of("c.json"));
    assert_int_equal(run_moetrace_stdout(args, out, sizeof out), 0);
    check_json(path_of("c.json"), &s, &REQ_C, "cmpl-1", "code");
    /* two requests have the id req-A: the first is traced, and stderr says so */
    snprintf(args, sizeof args, "report %s --request req-A --out %s", index, path_of("a.png"));
    assert_int_equal(run_moetrace(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "2 requests"));
    int w, h;
    png_size(path_of("a.png"), &w, &h);
    assert_true(w >= 600 && w <= 1200 && h >= 300 && h <= 1200);
    snprintf(args, sizeof args, "report %s --request cmpl-1 --out %s", index, path_of("c.SVG"));
    assert_int_equal(run_moetrace_stdout(args, out, sizeof out), 0);
    assert_string_equal(out, "");
    char *svg = slurp(path_of("c.SVG"), NULL);
    assert_non_null(svg);
    assert_non_null(strstr(svg, "<svg"));
    assert_non_null(strstr(svg, "</svg>"));
    free(svg);
    assert_true(no_temp_files(g_dir));
    free(index);
}

/* --model: each token's "text" is what `moetrace detokenize --ids ID` prints (special tokens
 * kept); the picture is drawn with the texts. */
static void test_model_labels(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    mt_tokenizer *tk;
    mt_err err = {{0}};
    if (mt_tokenizer_load(&tk, DEMO_MODEL, &err)) fail_msg("%s", err.msg);
    static const char TEXT[] = "The engine\n\tbatches  requests: naïve 日本 ok";
    int32_t *ids;
    size_t n;
    if (mt_tokenizer_encode(tk, TEXT, strlen(TEXT), 0, &ids, &n, &err)) fail_msg("%s", err.msg);
    int32_t special = mt_tokenizer_token_to_id(tk, "<|im_end|>");
    assert_true(special >= 0 && n > 4 && n < 60);
    mt_tokenizer_free(tk);
    /* one request: the special token, then the text's tokens; another before it */
    static const char *const NAMES[] = {"other", "text", "big"};
    g_names = NAMES;
    shape s = tiny();
    mt_recorder *r = recorder(&s, MT_REC_PER_TOKEN, g_dir);
    tok rows[64];
    int k = 0;
    rows[k++] = (tok){0, 0, 5, false};
    rows[k++] = (tok){2, 0, 5000, false}; /* outside the demo model's vocabulary */
    rows[k++] = (tok){1, 0, special, false};
    for (size_t i = 0; i < n; i++) rows[k++] = (tok){1, (int32_t)i + 1, ids[i], false};
    feed(mt_recorder_sink(r), &s, rows, k);
    char *index = dump(r);
    char args[2048], out[4096];
    snprintf(args, sizeof args, "report %s --request text --model %s --out %s", index, DEMO_MODEL, path_of("text.json"));
    if (run_moetrace(args, out, sizeof out)) fail_msg("%s", out);
    cJSON *j = mt_json_load_file(path_of("text.json"), &err);
    if (!j) fail_msg("%s", err.msg);
    const cJSON *tokens = cJSON_GetObjectItem(j, "tokens");
    assert_int_equal(cJSON_GetArraySize(tokens), (int)n + 1);
    for (int i = 0; i <= (int)n; i++) {
        const cJSON *t = cJSON_GetArrayItem(tokens, i);
        int id = cJSON_GetObjectItem(t, "token_id")->valueint;
        assert_int_equal(id, i ? ids[i - 1] : special);
        snprintf(args, sizeof args, "detokenize --model %s --ids %d", DEMO_MODEL, id);
        char want[256];
        assert_int_equal(run_moetrace_stdout(args, want, sizeof want), 0);
        const cJSON *text = cJSON_GetObjectItem(t, "text");
        assert_true(cJSON_IsString(text));
        assert_string_equal(text->valuestring, want);
    }
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(tokens, 0), "text")->valuestring, "<|im_end|>");
    cJSON_Delete(j);
    snprintf(args, sizeof args, "report %s --request text --model %s --out %s", index, DEMO_MODEL, path_of("text.png"));
    if (run_moetrace(args, out, sizeof out)) fail_msg("%s", out);
    int w, h;
    png_size(path_of("text.png"), &w, &h);
    /* an id the tokenizer does not have: an error naming it (the folder is not the dump's model) */
    snprintf(args, sizeof args, "report %s --request big --model %s --out %s", index, DEMO_MODEL, path_of("big.json"));
    assert_int_not_equal(run_moetrace(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "token id 5000"));
    assert_int_equal(access(path_of("big.json"), F_OK), -1);
    free(ids);
    free(index);
}

/* Qwen3-30B-A3B's shape (48 layers, 128 experts, top-8): a request longer than the grid's cap is
 * drawn within bounds (PNG and SVG), and its JSON has every token. */
static void test_large_shape(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    static const char *const NAMES[] = {"long", "short"};
    g_names = NAMES;
    shape s = {.L = 48, .E = 128, .K = 8};
    mt_recorder *r = recorder(&s, MT_REC_PER_TOKEN, g_dir);
    enum { LONG = MT_REQUEST_TRACE_MAX_ROWS + 100, CHUNK = 256 };
    tok rows[CHUNK + 8];
    for (int from = 0; from < LONG; from += CHUNK) {
        int k = 0;
        for (int p = from; p < from + CHUNK && p < LONG; p++) rows[k++] = (tok){0, p, p % 4000, false};
        if (from == 0)
            for (int p = 32; p < 40; p++) rows[k++] = (tok){1, p, 7, false}; /* 0..31 from the cache */
        feed(mt_recorder_sink(r), &s, rows, k);
    }
    char *index = dump(r);
    char args[2048], out[4096];
    int w, h;
    snprintf(args, sizeof args, "report %s --request long --out %s", index, path_of("long.png"));
    if (run_moetrace(args, out, sizeof out)) fail_msg("%s", out);
    png_size(path_of("long.png"), &w, &h);
    assert_true(w >= 48 * 12 && w <= 1600);
    assert_true(h >= MT_REQUEST_TRACE_MAX_ROWS * 12 && h <= MT_REQUEST_TRACE_MAX_ROWS * 16 + 1400);
    snprintf(args, sizeof args, "report %s --request long --out %s", index, path_of("long.svg"));
    if (run_moetrace(args, out, sizeof out)) fail_msg("%s", out);
    snprintf(args, sizeof args, "report %s --request long --out %s", index, path_of("long.json"));
    if (run_moetrace(args, out, sizeof out)) fail_msg("%s", out);
    mt_err err = {{0}};
    mt_request_trace t;
    if (mt_request_trace_load(index, "long", &t, &err)) fail_msg("%s", err.msg);
    assert_int_equal(t.n, LONG);
    for (int64_t i = 0; i < t.n; i++) assert_int_equal(t.token_id[i], (int32_t)(i % 4000));
    mt_request_trace_free(&t);
    cJSON *j = mt_json_load_file(path_of("long.json"), &err);
    if (!j) fail_msg("%s", err.msg);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "tokens")), LONG);
    const cJSON *last = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "tokens"), LONG - 1);
    const cJSON *ex = cJSON_GetObjectItem(last, "experts");
    for (int l = 0; l < 48; l++)
        for (int k = 0; k < 8; k++)
            assert_int_equal(cJSON_GetArrayItem(cJSON_GetArrayItem(ex, l), k)->valueint, route(&s, 0, LONG - 1, l, k));
    cJSON_Delete(j);
    snprintf(args, sizeof args, "report %s --request short --out %s", index, path_of("short.png"));
    if (run_moetrace(args, out, sizeof out)) fail_msg("%s", out);
    png_size(path_of("short.png"), &w, &h);
    assert_true(h < 1600);
    free(index);
}

/* Every error: exit non-zero, the bad input named, no output file. */
static void expect_error(const char *args, int status, const char *needle, const char *needle2) {
    char out[8192];
    int st = run_moetrace(args, out, sizeof out);
    if (st != status) fail_msg("moetrace %s: exit %d, expected %d: %s", args, st, status, out);
    if (!strstr(out, needle)) fail_msg("moetrace %s: no \"%s\" in: %s", args, needle, out);
    if (needle2 && !strstr(out, needle2)) fail_msg("moetrace %s: no \"%s\" in: %s", args, needle2, out);
    assert_int_equal(access(path_of("err.json"), F_OK), -1);
}

/* The tensors' file of the index at path into out. */
static void tensors_of(const char *path, char *out, size_t size) {
    mt_err err = {{0}};
    cJSON *j = mt_json_load_file(path, &err);
    assert_non_null(j);
    snprintf(out, size, "%s/%s", g_dir, cJSON_GetObjectItem(j, "tensors")->valuestring);
    cJSON_Delete(j);
}

/* Overwrites bytes [at, at + n) of tensor name's data in the safetensors file at path. */
static void patch_tensor(const char *path, const char *name, size_t at, const void *bytes, size_t n) {
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    uint64_t header_len;
    assert_int_equal(fread(&header_len, 8, 1, f), 1);
    char *header = calloc(header_len + 1, 1);
    assert_non_null(header);
    assert_int_equal(fread(header, 1, header_len, f), header_len);
    cJSON *h = cJSON_Parse(header);
    assert_non_null(h);
    long start = (long)cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(h, name), "data_offsets"), 0)->valuedouble;
    assert_int_equal(fseek(f, 8 + (long)header_len + start + (long)at, SEEK_SET), 0);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    fclose(f);
    cJSON_Delete(h);
    free(header);
}

/* Rows that disagree with their index are refused when the dump is opened, whatever reads it
 * (--request, --coactivation, --token-specialisation), naming the file and the field: a
 * request_index beyond request_ids, request_ids cut short, num_tokens_recorded other than the rows,
 * an expert id out of range (the recorder writes -1 for those). */
static void test_corrupt_rows(void **state) {
    (void)state;
    shape s = tiny();
    enum { REQIDX, FEWREQ, ROWS, EXPID, LOWID, CASES };
    static const char *const SAYS[CASES] = {"request_index[0] = 999 is not an index of the 4 request_ids",
                                            "request_index[", "num_tokens_recorded is 5, but the tensors",
                                            "topk_ids[0][0][0] = 77 is not an expert id", "topk_ids[0][2][1] = -2"};
    static const char *const MODES[] = {"--request req-A", "--coactivation", "--token-specialisation --min-count 1"};
    for (int c = 0; c < CASES; c++) {
        char *index = write_tiny(&s), tensors[1024];
        tensors_of(index, tensors, sizeof tensors);
        int64_t big = 999;
        int32_t id = c == EXPID ? 77 : -2;
        if (c == REQIDX) patch_tensor(tensors, "request_index", 0, &big, 8);
        if (c == FEWREQ) patch_index(index, "request_ids", "[\"req-A\", \"b\"]");
        if (c == ROWS) patch_index(index, "num_tokens_recorded", "5");
        if (c == EXPID) patch_tensor(tensors, "topk_ids", 0, &id, 4);
        if (c == LOWID) patch_tensor(tensors, "topk_ids", 4 * (2 * 2 + 1), &id, 4); /* row 0, layer 2, choice 1 */
        mt_err err = {{0}};
        mt_per_token_dump d;
        if (mt_per_token_open(index, "--coactivation", &d, &err) == 0) fail_msg("case %d: opened", c);
        if (!strstr(err.msg, SAYS[c])) fail_msg("case %d: \"%s\" not said: %s", c, SAYS[c], err.msg);
        const char *file = c == ROWS ? index : tensors; /* the file holding the bad field */
        if (strncmp(err.msg, file, strlen(file))) fail_msg("case %d: the error does not begin with %s: %s", c, file, err.msg);
        if (getenv("MOETRACE_BIN"))
            for (size_t m = 0; m < sizeof MODES / sizeof *MODES; m++) {
                char args[2048];
                snprintf(args, sizeof args, "report %s %s --out %s", index, MODES[m], path_of("err.json"));
                expect_error(args, 1, SAYS[c], file);
            }
        free(index);
    }
}

static void test_errors(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    /* twelve requests: the error lists ten of them and says how many there are */
    static const char *const NAMES[] = {"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11"};
    g_names = NAMES;
    shape s = tiny();
    mt_recorder *r = recorder(&s, MT_REC_PER_TOKEN, g_dir);
    tok rows[12];
    for (int i = 0; i < 12; i++) rows[i] = (tok){i, 0, 10 + i, false};
    feed(mt_recorder_sink(r), &s, rows, 12);
    char *index = dump(r);
    r = recorder(&s, MT_REC_STAT, g_dir);
    feed(mt_recorder_sink(r), &s, rows, 12);
    char *stat = dump(r);
    char args[2048];
    const char *err_json = path_of("err.json");

    snprintf(args, sizeof args, "report %s --request r1 --out %s", stat, err_json);
    expect_error(args, 1, "--request needs a per_token dump", stat);
    snprintf(args, sizeof args, "report %s --request nobody --out %s", index, err_json);
    expect_error(args, 1, "no request \"nobody\" among its 12 requests", "\"r0\", \"r1\", \"r2\", \"r3\", \"r4\", \"r5\", \"r6\", "
                                                                         "\"r7\", \"r8\", \"r9\", ...");
    /* ids match exactly */
    snprintf(args, sizeof args, "report %s --request R1 --out %s", index, err_json);
    expect_error(args, 1, "no request \"R1\"", NULL);
    /* the index without its safetensors beside it */
    char copy[1200];
    snprintf(copy, sizeof copy, "mkdir -p %s/alone && cp %s %s/alone/index.json", g_dir, index, g_dir);
    assert_int_equal(system(copy), 0);
    snprintf(copy, sizeof copy, "%s/alone/index.json", g_dir);
    snprintf(args, sizeof args, "report %s --request r1 --out %s", copy, err_json);
    expect_error(args, 1, "alone/expert_distribution_", ".safetensors");
    /* a safetensors file without the per_token tensors */
    mt_err err = {{0}};
    cJSON *j = mt_json_load_file(index, &err);
    assert_non_null(j);
    const char *tensors = cJSON_GetObjectItem(j, "tensors")->valuestring;
    snprintf(copy, sizeof copy, "cp %s/tests/fixtures/models/qwen3_moe/model.safetensors %s/alone/%s", MT_SOURCE_DIR, g_dir,
             tensors);
    assert_int_equal(system(copy), 0);
    cJSON_Delete(j);
    expect_error(args, 1, "no tensor \"request_index\"", NULL);
    /* the command line */
    snprintf(args, sizeof args, "report %s %s --request r1 --out %s", index, index, err_json);
    expect_error(args, 2, "--request traces one per_token dump; 2 were given", NULL);
    snprintf(args, sizeof args, "report %s --model %s --out %s", index, DEMO_MODEL, err_json);
    expect_error(args, 2, "--model labels the tokens of a --request trace", NULL);
    snprintf(args, sizeof args, "report %s --request r1 --ep-size 2 --out %s", index, err_json);
    expect_error(args, 2, "--ep-size and --placement", NULL);
    snprintf(args, sizeof args, "report %s --request r1 --out %s/trace.txt", index, g_dir);
    expect_error(args, 2, "trace.txt", ".png, .svg or .json");
    snprintf(args, sizeof args, "report %s --request r1", index);
    expect_error(args, 2, "--out is required", NULL);
    snprintf(args, sizeof args, "report %s --request", index);
    expect_error(args, 2, "--request needs a value", NULL);
    snprintf(args, sizeof args, "report %s/none.json --request r1 --out %s", g_dir, err_json);
    expect_error(args, 1, "none.json", NULL);
    /* --help documents it */
    char out[16384];
    assert_int_equal(run_moetrace_stdout("report --help", out, sizeof out), 0);
    assert_non_null(strstr(out, "--request RID"));
    assert_non_null(strstr(out, "moetrace.request_trace.v1"));
    free(index);
    free(stat);
}

/* Whitespace and control characters made visible; cut on a character boundary. */
static void test_visible(void **state) {
    (void)state;
    char out[64];
    assert_string_equal(mt_request_trace_visible(" a\n\tb\x01\x7f", out, sizeof out), "␣a↵⇥b␁␡");
    assert_string_equal(mt_request_trace_visible("", out, sizeof out), "∅");
    assert_string_equal(mt_request_trace_visible("日本", out, sizeof out), "日本");
    assert_string_equal(mt_request_trace_visible("ab日本", out, 6), "ab日");
    assert_string_equal(mt_request_trace_visible("ab日本", out, 5), "ab"); /* 日 needs 3 bytes + NUL */
    assert_string_equal(mt_request_trace_visible("  ", out, 5), "␣");
    /* one colour per expert id, the same every time, neighbours apart */
    double a[3], b[3];
    for (int e = 0; e < 128; e++) {
        mt_request_trace_expert_rgb(e, a);
        mt_request_trace_expert_rgb(e, b);
        assert_memory_equal(a, b, sizeof a);
        mt_request_trace_expert_rgb(e + 1, b);
        assert_true(fabs(a[0] - b[0]) + fabs(a[1] - b[1]) + fabs(a[2] - b[2]) > 0.1);
        for (int c = 0; c < 3; c++) assert_true(a[c] >= 0 && a[c] <= 1);
    }
}

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s/request_trace_XXXXXX", MT_BINARY_DIR);
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_rows),
        cmocka_unit_test(test_bad_index_counts),
        cmocka_unit_test(test_cli_json_and_pictures),
        cmocka_unit_test(test_model_labels),
        cmocka_unit_test(test_large_shape),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_corrupt_rows),
        cmocka_unit_test(test_visible),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
