/* Fuzz target: the translation of tokenizer.json regexes for PCRE2 (tokenizer/regex_unicode.c). A
 * pattern is translated or refused with a message; a pattern PCRE2 compiles as written still
 * compiles once translated (unless it holds an escape only PCRE2 gives a meaning, such as \Q, or grows
 * past PCRE2's size limit); translating twice gives the same text; where the pattern may run as
 * written on texts without changed code points, it finds the same matches there as the translation. */
#include <cjson/cJSON.h>

#include "fuzz_util.h"
#include "tokenizer/regex_unicode.h"
#include "tokenizer/tok_internal.h"

/* Letters, digits, marks, punctuation, symbols and spaces of many scripts, none changed since Unicode 14. */
static const char SAMPLE[] = "Hello, World! it's 42 \t\r\n  x_y-z  \xc3\xa9\xc3\x9f\xc2\xb2\xc2\xbd \xce\xa9\xce\xbc "
                             "\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xd9\xa3 \xe0\xa5\xa9 a\xcc\x81 \xe2\x80\x94"
                             "\xe2\x80\xa8\xe3\x80\x80 \xe1\x9a\x80 \xef\xbc\x91 \xe2\x85\xa0 ABCdef [x] {y}";

/* Whether pattern holds an escape Oniguruma reads as a plain letter where PCRE2 gives it a meaning
 * (\Q \E \V \v, \p or \P without braces): translated, it may then not compile where PCRE2 compiles it
 * as written ([\d-\E] becomes a range d..E), as the library refuses it. */
static int reads_differently(const char *p) {
    for (; *p; p++) {
        if (*p != '\\' || !p[1]) continue;
        char c = *++p;
        if (c == 'c' && p[1]) { /* \cX: PCRE2 takes X whatever it is, a backslash too, so \c\\Q is \c\ then \Q */
            p++;
            continue;
        }
        if (c == 'Q' || c == 'E' || c == 'V' || c == 'v' || ((c == 'p' || c == 'P') && p[1] != '{')) return 1;
    }
    return 0;
}

/* 0 when PCRE2 compiles pattern, else its error code. */
static int compile_error(const char *pattern) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, TK_PCRE2_OPTIONS, &ec, &eo, NULL);
    if (!re) return ec;
    pcre2_code_free(re);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *pattern = fuzz_cstr(data, size);
    char *out = NULL, *again = NULL;
    int as_written = 0;
    mt_err err = {{0}};
    if (tk_regex_translate(pattern, &out, &as_written, &err) == 0) {
        FUZZ_CHECK(out != NULL);
        /* (a translation may also outgrow PCRE2's pattern size) */
        int ec = compile_error(out);
        if (!compile_error(pattern) && !reads_differently(pattern)) FUZZ_CHECK(ec == 0 || ec == PCRE2_ERROR_PATTERN_TOO_LARGE);
        FUZZ_CHECK(tk_regex_translate(pattern, &again, NULL, &err) == 0 && !strcmp(out, again));
        free(again);
        free(out);
        /* the two compiled forms on a text without changed code points */
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "Regex", pattern);
        tk_pattern p;
        if (strlen(pattern) == size && tk_pattern_parse(&p, o, "fuzz", &err) == 0) {
            FUZZ_CHECK(!tk_regex_has_changed(SAMPLE, sizeof SAMPLE - 1));
            if (p.re_written) {
                tk_seg *a, *b;
                size_t na = tk_pattern_find(&p, SAMPLE, sizeof SAMPLE - 1, &a, NULL);
                pcre2_code *written = p.re_written;
                p.re_written = NULL;
                size_t nb = tk_pattern_find(&p, SAMPLE, sizeof SAMPLE - 1, &b, NULL);
                p.re_written = written;
                FUZZ_CHECK(na == nb && !memcmp(a, b, na * sizeof *a));
                free(a);
                free(b);
            }
            tk_pattern_free(&p);
        }
        cJSON_Delete(o);
    } else {
        FUZZ_CHECK(err.msg[0] != '\0');
    }
    free(pattern);
    return 0;
}
