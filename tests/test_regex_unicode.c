/* The translation of tokenizer.json regexes for PCRE2 (src/tokenizer/regex_unicode.c) against the
 * `tokenizers` library: every class item of tests/tokenizer/classes_lib.json (written by
 * probe_classes.js with the library: each \p{X} of a general category, \s \d \w \h and their
 * negations, the classes of real tokenizers) must match exactly the library's code points, all
 * 1,112,064 of them, with the PCRE2 this build links. Also: what is copied unchanged, what is refused,
 * and errors naming offsets in the pattern as written. */
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
#include "tokenizer/regex_unicode.h"
#include "tokenizer/tok_internal.h"

/* Every code point but the surrogates, in order, as UTF-8; start[i] is where the i-th begins. */
typedef struct all_points {
    char *text;
    size_t len, count;
    uint32_t *cp;
    size_t *start;
} all_points;

static all_points make_all_points(int unchanged_only) {
    all_points a = {0};
    a.text = malloc(0x110000 * 4);
    a.cp = malloc(0x110000 * sizeof *a.cp);
    a.start = malloc(0x110000 * sizeof *a.start);
    assert_true(a.text && a.cp && a.start);
    for (uint32_t c = 0; c < 0x110000; c++) {
        if (c >= 0xD800 && c <= 0xDFFF) continue;
        int len = tk_utf8_enc(c, a.text + a.len);
        if (unchanged_only && tk_regex_has_changed(a.text + a.len, (size_t)len)) continue;
        a.cp[a.count] = c;
        a.start[a.count++] = a.len;
        a.len += (size_t)len;
    }
    return a;
}

/* Compiles pattern as a tokenizer.json {"Regex": ...}; returns 0 or -1 with err set. */
static int compile(tk_pattern *p, const char *pattern, mt_err *err) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "Regex", pattern);
    int rc = tk_pattern_parse(p, o, "test", err);
    cJSON_Delete(o);
    return rc;
}

/* The items of classes_lib.json over the text of all code points (unchanged_only: of those without
 * classes changed since PCRE2's tables, where patterns run as written when they can). */
static void check_classes(const cJSON *items_obj, int unchanged_only) {
    all_points all = make_all_points(unchanged_only);
    uint8_t *want = calloc(0x110000, 1), *got = malloc(all.count);
    assert_true(want && got);
    int items = 0, bad_items = 0, as_written = 0;
    for (const cJSON *item = items_obj->child; item; item = item->next, items++) {
        /* the library's members, by code point */
        memset(want, 0, 0x110000);
        for (const cJSON *r = item->child; r; r = r->next) {
            uint32_t lo = (uint32_t)cJSON_GetArrayItem(r, 0)->valuedouble, hi = (uint32_t)cJSON_GetArrayItem(r, 1)->valuedouble;
            for (uint32_t c = lo; c <= hi && c < 0x110000; c++) want[c] = 1;
        }
        tk_pattern p;
        mt_err err = {{0}};
        if (compile(&p, item->string, &err)) fail_msg("%s: %s", item->string, err.msg);
        as_written += p.re_written != NULL;
        tk_seg *segs;
        size_t ns = tk_pattern_find(&p, all.text, all.len, &segs, &err);
        assert_true(ns != SIZE_MAX);
        memset(got, 0, all.count);
        size_t k = 0; /* index of the code point at a segment's start */
        for (size_t i = 0; i < ns; i++) {
            while (k < all.count && all.start[k] < segs[i].a) k++;
            if (!segs[i].match) continue;
            assert_true(k < all.count && all.start[k] == segs[i].a);
            size_t end = k + 1 < all.count ? all.start[k + 1] : all.len;
            if (segs[i].b != end) fail_msg("%s matched more than one character at U+%04X", item->string, (unsigned)all.cp[k]);
            got[k] = 1;
        }
        free(segs);
        tk_pattern_free(&p);
        size_t wrong = 0;
        for (size_t i = 0; i < all.count; i++) {
            if (want[all.cp[i]] == got[i]) continue;
            if (wrong++ < 5)
                printf("%s: U+%04X library %s, moetrace %s\n", item->string, (unsigned)all.cp[i],
                       want[all.cp[i]] ? "in" : "out", got[i] ? "in" : "out");
        }
        if (wrong) {
            printf("%s: %zu code points differ\n", item->string, wrong);
            bad_items++;
        }
    }
    printf("%d class items against the library on %zu code points%s: %d differ (%d can run as written)\n", items,
           all.count, unchanged_only ? " (those unchanged since Unicode 14)" : "", bad_items, as_written);
    assert_true(items >= 70);
    assert_true(as_written >= 40);
    assert_int_equal(bad_items, 0);
    free(want);
    free(got);
    free(all.text);
    free(all.cp);
    free(all.start);
}

static void classes_match_library(void **state) {
    (void)state;
    cJSON *doc = slurp_json(MT_SOURCE_DIR "/tests/tokenizer/classes_lib.json");
    assert_non_null(doc);
    const cJSON *items = cJSON_GetObjectItem(doc, "items");
    assert_non_null(items);
    check_classes(items, 0); /* the translated patterns */
    check_classes(items, 1); /* the patterns as written, where they may run */
    cJSON_Delete(doc);
}

static void expect_translation(const char *pattern, const char *want) {
    char *out = NULL;
    mt_err err = {{0}};
    if (tk_regex_translate(pattern, &out, NULL, &err)) fail_msg("%s: %s", pattern, err.msg);
    if (strcmp(out, want)) fail_msg("%s became %s, want %s", pattern, out, want);
    free(out);
}

static void expect_refusal(const char *pattern, const char *needle) {
    char *out = NULL;
    mt_err err = {{0}};
    if (!tk_regex_translate(pattern, &out, NULL, &err)) fail_msg("%s was translated to %s, want an error", pattern, out);
    if (!strstr(err.msg, needle)) fail_msg("%s: error '%s' lacks '%s'", pattern, err.msg, needle);
}

/* What is not a Unicode class of the library's engine is copied as written. */
static void copied_unchanged(void **state) {
    (void)state;
    static const char *const same[] = {
        "abc", "(?i:'s|'t)|x+", "\\p{Han}+", "\\p{Greek}", "(?#\\p{L} [a[b]])x", "[[:alpha:]]+", "[x[:^digit:]]",
        "[\\[\\]]", "[]a]", "[^]a]", "\\x{41}\\n\\t", "[\\x{4E00}-\\x{9FA5}]", "\\é", "\\cA", "[一-龥぀-ゟ]+",
        "[\\P{Lt}]", "\\p{Lt", "[abc",
    };
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) expect_translation(same[i], same[i]);
    /* outside brackets an item becomes a class of its own; inside, its additions join the class */
    expect_translation("\\p{Lt}", "[\\p{Lt}]");
    expect_translation("\\h+", "[0-9A-Fa-f]+");
    expect_translation("[^\\h_]", "[^0-9A-Fa-f_]");
    expect_translation("\\p{Pd}", "[\\p{Pd}\\x{10D6E}]");
    /* escapes Oniguruma reads as the letter (\pL is "pL") or as one character (\v) */
    expect_translation("\\pL+|[\\PN]\\V\\E", "pL+|[PN]VE");
    expect_translation("\\Q.\\E+|[\\Q]", "Q.E+|[Q]"); /* no \\Q...\\E quoting in Oniguruma's syntax */
    expect_translation("\\v|[\\v]", "\\x{B}|[\\x{B}]");
}

/* Every spelling in forms translates as the first does. */
static void expect_same_translation(const char *const *forms, size_t n) {
    char *first, *other;
    mt_err err = {{0}};
    assert_int_equal(tk_regex_translate(forms[0], &first, NULL, &err), 0);
    for (size_t i = 1; i < n; i++) {
        assert_int_equal(tk_regex_translate(forms[i], &other, NULL, &err), 0);
        if (strcmp(first, other)) fail_msg("%s became %s, unlike %s", forms[i], other, forms[0]);
        free(other);
    }
    free(first);
}

/* Codes and long names, in any case, with or without spaces, '_' and '-', and the negations. */
static void names_and_forms(void **state) {
    (void)state;
    static const char *const letter[] = {"\\p{L}", "\\p{l}", "\\p{Letter}", "\\p{ letter }", "\\P{^L}"};
    static const char *const not_digit[] = {"\\D", "\\P{Nd}", "\\p{^Nd}", "\\P{Decimal_Number}", "\\P{decimal-number}"};
    expect_same_translation(letter, sizeof letter / sizeof *letter);
    expect_same_translation(not_digit, sizeof not_digit / sizeof *not_digit);
}

/* Whole patterns on texts against the library (tests/tokenizer/patterns_lib.json, probe_patterns.js):
 * the spans between matches, in code points, or a refusal where the library refuses the pattern. */
static void patterns_match_library(void **state) {
    (void)state;
    cJSON *doc = slurp_json(MT_SOURCE_DIR "/tests/tokenizer/patterns_lib.json");
    assert_non_null(doc);
    int cases = 0, bad = 0;
    for (const cJSON *c = cJSON_GetObjectItem(doc, "cases")->child; c; c = c->next, cases++) {
        const char *pattern = cJSON_GetObjectItem(c, "pattern")->valuestring;
        tk_pattern p;
        mt_err err = {{0}};
        int refused = compile(&p, pattern, &err) != 0;
        if (cJSON_IsTrue(cJSON_GetObjectItem(c, "refused")) || refused) {
            if (!refused || !cJSON_IsTrue(cJSON_GetObjectItem(c, "refused"))) {
                printf("%s: the library %s it, moetrace %s\n", pattern, refused ? "loads" : "refuses",
                       refused ? err.msg : "loads it");
                bad++;
            }
            if (!refused) tk_pattern_free(&p);
            continue;
        }
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        tk_seg *segs;
        size_t ns = tk_pattern_find(&p, text, strlen(text), &segs, &err);
        if (ns == SIZE_MAX) fail_msg("%s: %s", pattern, err.msg);
        /* the non-empty spans without a match, as code point offsets */
        char got[4096] = "", want[4096] = "";
        size_t used = 0;
        for (size_t i = 0; i < ns; i++) {
            if (segs[i].match || segs[i].a == segs[i].b) continue;
            size_t a = 0, b = 0;
            for (size_t k = 0; k < segs[i].b; k++)
                if (((unsigned char)text[k] & 0xC0) != 0x80) (k < segs[i].a ? a++ : 0), b++;
            used += (size_t)snprintf(got + used, sizeof got - used, "[%zu,%zu]", a, b);
            if (used >= sizeof got) break;
        }
        used = 0;
        for (const cJSON *r = cJSON_GetObjectItem(c, "kept")->child; r && used < sizeof want; r = r->next)
            used += (size_t)snprintf(want + used, sizeof want - used, "[%d,%d]", (int)cJSON_GetArrayItem(r, 0)->valuedouble,
                                     (int)cJSON_GetArrayItem(r, 1)->valuedouble);
        if (strcmp(got, want)) {
            printf("%s on '%s':\n  library  %s\n  moetrace %s\n", pattern, text, want, got);
            bad++;
        }
        free(segs);
        tk_pattern_free(&p);
    }
    printf("%d pattern cases against the library: %d differ\n", cases, bad);
    assert_true(cases > 100);
    assert_int_equal(bad, 0);
    cJSON_Delete(doc);
}

/* Whether the translated pattern matches the one character cp, whole. */
static int matches_one(const char *pattern, uint32_t cp) {
    tk_pattern p;
    mt_err err = {{0}};
    if (compile(&p, pattern, &err)) fail_msg("%s: %s", pattern, err.msg);
    char s[4];
    int n = tk_utf8_enc(cp, s);
    tk_seg *segs;
    size_t ns = tk_pattern_find(&p, s, (size_t)n, &segs, &err);
    assert_true(ns != SIZE_MAX);
    int yes = ns == 1 && segs[0].match && segs[0].b == (size_t)n;
    free(segs);
    tk_pattern_free(&p);
    return yes;
}

/* Classes split into an alternation keep what else they hold, whatever comes first. */
static void split_classes(void **state) {
    (void)state;
    static const struct {
        const char *pattern;
        uint32_t in[4], out[4]; /* 0 ends a list (U+0000 is not used) */
    } cases[] = {
        /* U+1171E left Mn in Unicode 15 (now Mc); U+11F00 (Kawi) joined Mn */
        {"[\\p{Mn}^a]", {'^', 'a', 0x300, 0x11F00}, {0x1171E, 'b', 0x41}},
        {"[^\\p{Mn}^a]", {'b', 0x1171E, 0x41}, {'^', 'a', 0x300, 0x11F00}},
        {"[=\\H]", {'=', 'x', 0x11F00}, {'a', '0', 'F'}},
        {"[:.\\W]", {':', '.', ' ', 0xB2}, {'a', 0x11F04}},
        {"[\\P{L}]", {'1', ' '}, {'a', 0x11F04, 0x2EBF0}},
        {"[^\\S]", {' ', '\t', 0x3000}, {'a', 0x180E}},
        {"\\w", {'a', 0xB2, 0x24B6, 0x11F04}, {' ', '-'}},
        {"[\\w]", {'a', 0x24B6, 0x11F04}, {0xB2, '-'}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (size_t k = 0; k < 4 && cases[i].in[k]; k++)
            if (!matches_one(cases[i].pattern, cases[i].in[k]))
                fail_msg("%s does not match U+%04X", cases[i].pattern, (unsigned)cases[i].in[k]);
        for (size_t k = 0; k < 4 && cases[i].out[k]; k++)
            if (matches_one(cases[i].pattern, cases[i].out[k]))
                fail_msg("%s matches U+%04X", cases[i].pattern, (unsigned)cases[i].out[k]);
    }
}

/* Oniguruma's nested classes and intersections read differently in PCRE2: refused, not guessed. */
static void refusals(void **state) {
    (void)state;
    expect_refusal("[a[bc]]", "inside a class at offset 2");
    /* only the POSIX classes both engines know: PCRE2 reads [:]x[:] as '[' ':' and the class's end */
    expect_refusal("[\\[:\\S:[:]w[:]w-]", "'[:' at offset 7");
    expect_refusal("[[:]x[:]]", "'[:' at offset 1");
    expect_refusal("[[:Alpha:]]", "does not start a POSIX class");
    expect_refusal("[[.a.]]", "inside a class at offset 1");
    expect_refusal("x[\\p{L}&&[^a]]", "intersection '&&' at offset 7");
    expect_refusal("[a&&b]", "PCRE2 does not support");
    expect_refusal("a(?x) b # c", "extended mode (?x) at offset 1");
    expect_refusal("(?ix:a b)", "extended mode");
    expect_refusal("[+-\\s]", "a range ending in a class escape at offset 3");
    expect_translation("(?-x:a)(?i)b", "(?-x:a)(?i)b");
    /* through the loader: the pattern as written, and PCRE2's own errors at offsets in it */
    tk_pattern p;
    mt_err err = {{0}};
    assert_int_equal(compile(&p, "[\\p{L}[x]]", &err), -1);
    assert_non_null(strstr(err.msg, "regex '[\\p{L}[x]]'"));
    assert_int_equal(compile(&p, "\\p{L}(", &err), -1);
    assert_non_null(strstr(err.msg, "does not compile at offset 6"));
    assert_int_equal(compile(&p, "\\p{Nope}", &err), -1);
    assert_non_null(strstr(err.msg, "regex '\\p{Nope}' does not compile"));
    assert_int_equal(compile(&p, "a\\Cb", &err), -1); /* one byte inside a character: the library refuses it too */
    assert_non_null(strstr(err.msg, "\\C is disabled"));
    /* a match PCRE2 gives up on is an error, not the end of the matches */
    assert_int_equal(compile(&p, "(a+)+b|x", &err), 0);
    char text[64];
    memset(text, 'a', 40);
    strcpy(text + 40, "cx");
    tk_seg *segs = NULL;
    assert_true(tk_pattern_find(&p, text, strlen(text), &segs, &err) == SIZE_MAX);
    assert_non_null(strstr(err.msg, "regex matching failed at byte 0 of a 42-byte text"));
    assert_null(segs);
    tk_pattern_free(&p);
    assert_int_equal(compile(&p, "[\\w", &err), -1);
    assert_non_null(strstr(err.msg, "missing terminating ]"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classes_match_library),
        cmocka_unit_test(patterns_match_library),
        cmocka_unit_test(copied_unchanged),
        cmocka_unit_test(names_and_forms),
        cmocka_unit_test(split_classes),
        cmocka_unit_test(refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
