/* Python's str character classes and case mappings for the chat-template interpreter: utf8proc's
 * categories, simple case mappings and case folding (which equal Python's wherever Python maps a
 * character to one character), plus the generated tables of jinja_unicode_tables.h for what
 * utf8proc lacks (Numeric_Type, Other_Lowercase/Other_Uppercase, SpecialCasing's mappings to
 * several characters) and the final-sigma rule of str.lower. */
#include <string.h>
#include <utf8proc.h>

#include "chat/jinja.h"
#include "chat/jinja_unicode_tables.h"

static int in_ranges(const int32_t (*r)[2], size_t n, int32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}
#define IN_TABLE(t, cp) in_ranges((t), sizeof(t) / sizeof((t)[0]), (cp))

static utf8proc_category_t cat(int32_t cp) { return utf8proc_category(cp); }

int ju_isdecimal(int32_t cp) { return cat(cp) == UTF8PROC_CATEGORY_ND; }

/* Nd characters come in contiguous runs of ten, 0 to 9, in every script: the value is the distance
 * from the start of the run. */
int ju_decimal_value(int32_t cp) {
    if (cp >= '0' && cp <= '9') return cp - '0';
    if (cp < 0x80 || !ju_isdecimal(cp)) return -1;
    int32_t zero = cp;
    while (zero > 0 && ju_isdecimal(zero - 1)) zero--;
    return (int)((cp - zero) % 10);
}
int ju_isdigit(int32_t cp) { return ju_isdecimal(cp) || IN_TABLE(digit_extra, cp); }
int ju_isnumeric(int32_t cp) {
    utf8proc_category_t k = cat(cp);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO || IN_TABLE(numeric_extra, cp);
}
int ju_isalpha(int32_t cp) {
    utf8proc_category_t k = cat(cp);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}
int ju_islower(int32_t cp) { return cat(cp) == UTF8PROC_CATEGORY_LL || IN_TABLE(lowercase_extra, cp); }
int ju_isupper(int32_t cp) { return cat(cp) == UTF8PROC_CATEGORY_LU || IN_TABLE(uppercase_extra, cp); }
int ju_istitle(int32_t cp) { return cat(cp) == UTF8PROC_CATEGORY_LT; }
static int is_cased(int32_t cp) { return ju_islower(cp) || ju_isupper(cp) || ju_istitle(cp); }
int ju_isprintable(int32_t cp) {
    if (cp == ' ') return 1;
    switch (cat(cp)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS: case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS: return 0;
    default: return 1;
    }
}

/* Case_Ignorable: categories Mn Me Cf Lm Sk, and the apostrophes, periods and colons of Word_Break
 * MidLetter/MidNumLet/Single_Quote. */
static int case_ignorable(int32_t cp) {
    static const int32_t mid[] = {0x27, 0x2E, 0x3A, 0xB7, 0x387, 0x55F, 0x5F4, 0x2018, 0x2019,
                                  0x2024, 0x2027, 0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
    switch (cat(cp)) {
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK: return 1;
    default: break;
    }
    for (size_t i = 0; i < sizeof mid / sizeof mid[0]; i++)
        if (mid[i] == cp) return 1;
    return 0;
}

static const struct special_case *special_of(int32_t cp) {
    size_t lo = 0, hi = sizeof special_cases / sizeof special_cases[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < special_cases[mid].cp) hi = mid;
        else if (cp > special_cases[mid].cp) lo = mid + 1;
        else return &special_cases[mid];
    }
    return NULL;
}

/* One code point's full mapping (JU_UPPER, JU_LOWER or JU_TITLE) into out; returns its length. */
static int map_full(int32_t cp, int how, int32_t out[3]) {
    const struct special_case *sc = special_of(cp);
    if (sc) {
        const int32_t *m = how == JU_UPPER ? sc->upper : how == JU_TITLE ? sc->title : sc->lower;
        int n = 0;
        while (n < 3 && m[n]) out[n] = m[n], n++;
        return n;
    }
    out[0] = how == JU_UPPER ? utf8proc_toupper(cp) : how == JU_TITLE ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
    return 1;
}

/* The code points of a string, decoded once. */
typedef struct cps {
    int32_t *v;
    size_t n;
} cps;

static cps decode_all(jctx *c, jv s) {
    cps r = {jx_alloc(c, (s.n + 1) * sizeof(int32_t)), 0};
    for (size_t i = 0, adv; i < s.n; i += adv) r.v[r.n++] = ju_decode(s.u.s + i, s.n - i, &adv);
    return r;
}

/* Capital sigma at i lowers to final sigma after a cased letter (case-ignorable ones skipped) when
 * no cased letter follows (again skipping case-ignorable ones). */
static int final_sigma(cps s, size_t i) {
    size_t j = i;
    while (j > 0 && case_ignorable(s.v[j - 1])) j--;
    if (j == 0 || !is_cased(s.v[j - 1])) return 0;
    for (j = i + 1; j < s.n && case_ignorable(s.v[j]); j++) {}
    return j == s.n || !is_cased(s.v[j]);
}

static int lower_at(cps s, size_t i, int32_t out[3]) {
    if (s.v[i] == 0x3A3) {
        out[0] = final_sigma(s, i) ? 0x3C2 : 0x3C3;
        return 1;
    }
    return map_full(s.v[i], JU_LOWER, out);
}

static void put_cps(jctx *c, jbuf *b, const int32_t *v, int n) {
    char tmp[4];
    for (int i = 0; i < n; i++) jb_put(c, b, tmp, ju_encode(v[i], tmp));
}

jv ju_case_map(jctx *c, jv s, int how) {
    cps in = decode_all(c, s);
    jbuf b = {0};
    jb_put(c, &b, "", 0);
    int prev_cased = 0;
    for (size_t i = 0; i < in.n; i++) {
        int32_t cp = in.v[i], m[3] = {cp};
        int n = 1;
        switch (how) {
        case JU_UPPER: n = map_full(cp, JU_UPPER, m); break;
        case JU_LOWER: n = lower_at(in, i, m); break;
        case JU_CAPITALIZE: n = i == 0 ? map_full(cp, JU_TITLE, m) : lower_at(in, i, m); break;
        case JU_TITLE: /* str.title: a cased letter after an uncased one starts a word */
            n = prev_cased ? lower_at(in, i, m) : map_full(cp, JU_TITLE, m);
            prev_cased = is_cased(cp);
            break;
        case JU_SWAPCASE:
            if (ju_isupper(cp)) n = lower_at(in, i, m);
            else if (ju_islower(cp)) n = map_full(cp, JU_UPPER, m);
            break;
        case JU_CASEFOLD: {
            utf8proc_int32_t f[4];
            int last = 0;
            utf8proc_ssize_t k = utf8proc_decompose_char(cp, f, 4, UTF8PROC_CASEFOLD, &last);
            if (k >= 1 && k <= 3) {
                n = (int)k;
                memcpy(m, f, (size_t)k * sizeof(int32_t));
            }
            break;
        }
        default: break;
        }
        put_cps(c, &b, m, n);
    }
    return jv_strn(b.p, b.n);
}
