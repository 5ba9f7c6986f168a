/* The tokenizer's Unicode normalizers (NFC, NFKC, NFD, NFKD: utf8proc around the code points the
 * library's older tables leave alone), its Lowercase normalizer, the numeric class of its Digits
 * pre-tokenizer and the word characters of single_word against the `tokenizers` library on every code point: the FNV-1a hashes of each
 * form of each run of 4096 consecutive code points, and of each left-alone code point between
 * combining marks, in tests/tokenizer/normalize_lib.json (probe_normalize.js, with the library). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_files.h"
#include "tokenizer/tok_internal.h"

static const struct {
    const char *name;
    int type;
} FORMS[] = {{"nfc", TK_N_NFC}, {"nfkc", TK_N_NFKC}, {"nfd", TK_N_NFD}, {"nfkd", TK_N_NFKD}, {"lower", TK_N_LOWER}};
enum { N_FORMS = sizeof FORMS / sizeof FORMS[0] };

static cJSON *fixture(void) {
    cJSON *doc = slurp_json(MT_SOURCE_DIR "/tests/tokenizer/normalize_lib.json");
    assert_non_null(doc);
    return doc;
}

static uint32_t fnv1a(const char *s, size_t n) {
    uint32_t h = 0x811c9dc5u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x01000193u;
    return h;
}

/* Normalizes text in every form and compares the hashes with the library's in want; returns the
 * number that differ. */
static int check_forms(const char *what, const char *text, size_t len, const cJSON *want) {
    int bad = 0;
    for (int f = 0; f < N_FORMS; f++) {
        tk_norm norm;
        memset(&norm, 0, sizeof norm);
        norm.type = FORMS[f].type;
        tk_buf out = {0};
        mt_err err = {{0}};
        if (tk_normalize(&norm, text, len, &out, &err)) fail_msg("%s %s: %s", what, FORMS[f].name, err.msg);
        uint32_t h = fnv1a(out.p, out.n);
        const cJSON *w = cJSON_GetObjectItem(want, FORMS[f].name);
        assert_non_null(w);
        if (h != (uint32_t)w->valuedouble) {
            printf("%s: %s differs from the library's\n", what, FORMS[f].name);
            bad++;
        }
        tk_buf_free(&out);
    }
    return bad;
}

static void normalizers_match_library(void **state) {
    (void)state;
    cJSON *doc = fixture();
    int bad = 0, runs = 0;
    char *text = malloc(4 * 4096 * 4 + 64);
    assert_non_null(text);
    for (const cJSON *c = cJSON_GetObjectItem(doc, "chunks")->child; c; c = c->next, runs++) {
        uint32_t cp = (uint32_t)cJSON_GetObjectItem(c, "first")->valuedouble;
        int count = (int)cJSON_GetObjectItem(c, "count")->valuedouble;
        size_t len = 0;
        for (int k = 0; k < count; cp++) {
            if (cp >= 0xD800 && cp <= 0xDFFF) continue;
            len += (size_t)tk_utf8_enc(cp, text + len);
            k++;
        }
        char what[64];
        snprintf(what, sizeof what, "code points from U+%04X", (unsigned)cJSON_GetObjectItem(c, "first")->valuedouble);
        bad += check_forms(what, text, len, c);
    }
    int contexts = 0;
    for (const cJSON *c = cJSON_GetObjectItem(doc, "contexts")->child; c; c = c->next, contexts++) {
        const char *t = cJSON_GetObjectItem(c, "text")->valuestring;
        bad += check_forms(t, t, strlen(t), c);
    }
    printf("%d runs of 4096 code points and %d left-alone code points in context, 5 forms each: %d differ\n", runs,
           contexts, bad);
    assert_true(runs == 272 && contexts > 300);
    assert_int_equal(bad, 0);
    free(text);
    cJSON_Delete(doc);
}

/* A class (ranges of the library's members) against is_member on every code point. */
static void check_class(const cJSON *ranges, const char *what, int (*is_member)(uint32_t)) {
    uint8_t *want = calloc(0x110000, 1);
    assert_true(want && ranges);
    for (const cJSON *r = ranges->child; r; r = r->next)
        for (uint32_t c = (uint32_t)cJSON_GetArrayItem(r, 0)->valuedouble; c <= (uint32_t)cJSON_GetArrayItem(r, 1)->valuedouble; c++)
            want[c] = 1;
    int wrong = 0;
    for (uint32_t c = 0; c < 0x110000; c++)
        if ((c < 0xD800 || c > 0xDFFF) && is_member(c) != want[c] && wrong++ < 5)
            printf("U+%04X: %s %d, the library %d\n", (unsigned)c, what, is_member(c), want[c]);
    assert_int_equal(wrong, 0);
    free(want);
}

/* The library's lowercase of each character it changes, one by one, its numeric class and its word
 * characters. */
static void lowercase_and_numeric(void **state) {
    (void)state;
    cJSON *doc = fixture();
    int n_lower = 0;
    for (const cJSON *e = cJSON_GetObjectItem(doc, "lower")->child; e; e = e->next, n_lower++) {
        uint32_t cp = (uint32_t)cJSON_GetArrayItem(e, 0)->valuedouble;
        const char *want = cJSON_GetArrayItem(e, 1)->valuestring;
        tk_norm norm;
        memset(&norm, 0, sizeof norm);
        norm.type = TK_N_LOWER;
        char s[4];
        int len = tk_utf8_enc(cp, s);
        tk_buf out = {0};
        mt_err err = {{0}};
        assert_int_equal(tk_normalize(&norm, s, (size_t)len, &out, &err), 0);
        if (out.n != strlen(want) || memcmp(out.p, want, out.n)) fail_msg("lowercase of U+%04X differs", (unsigned)cp);
        tk_buf_free(&out);
    }
    assert_true(n_lower > 1400);
    check_class(cJSON_GetObjectItem(doc, "numeric"), "numeric (Digits)", tk_is_numeric);
    check_class(cJSON_GetObjectItem(doc, "word"), "word (single_word)", tk_is_word);
    cJSON_Delete(doc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(normalizers_match_library),
        cmocka_unit_test(lowercase_and_numeric),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
