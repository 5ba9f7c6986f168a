/* Patterns ({"String"} / {"Regex"} run with PCRE2 in UTF + Unicode-property mode) and the
 * normalizers NFC/NFKC/NFD/NFKD (utf8proc), Lowercase, Replace, Prepend, Strip, Sequence, as the
 * tokenizers library defines them (tokenizers/src/normalizers, tokenizer/pattern.rs). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/regex_unicode.h"
#include "tokenizer/tok_internal.h"
#include "util/json_util.h"

int tk_pattern_parse(tk_pattern *p, const void *cj, const char *where, mt_err *err) {
    const cJSON *o = cj;
    memset(p, 0, sizeof *p);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "Regex");
    if (cJSON_IsString(s)) { /* its bytes: the file's \u0000 arrives as C0 80 (mt_json_parse_keep_nul) */
        if (!(p->lit = mt_json_bytes(s->valuestring, &p->lit_len))) abort();
        return 0;
    }
    if (!cJSON_IsString(r)) return mt_errf(err, "%s: pattern must be {\"String\": ...} or {\"Regex\": ...}", where);
    if (mt_json_holds_nul(r->valuestring)) /* a regex meaning NUL writes the escape \\x00 */
        return mt_errf(err, "%s: a regex holding U+0000 is not supported (write it as \\x00)", where);
    int ec;
    PCRE2_SIZE eo;
    char *translated;
    int as_written_elsewhere;
    mt_err why = {{0}};
    if (tk_regex_translate(r->valuestring, &translated, &as_written_elsewhere, &why))
        return mt_errf(err, "%s: regex '%s': %s", where, r->valuestring, why.msg);
    p->re = pcre2_compile((PCRE2_SPTR)translated, PCRE2_ZERO_TERMINATED, TK_PCRE2_OPTIONS, &ec, &eo, NULL);
    if (p->re && as_written_elsewhere && strcmp(translated, r->valuestring)) {
        p->re_written = pcre2_compile((PCRE2_SPTR)r->valuestring, PCRE2_ZERO_TERMINATED, TK_PCRE2_OPTIONS, &ec,
                                      &eo, NULL);
        if (p->re_written) pcre2_jit_compile(p->re_written, PCRE2_JIT_COMPLETE);
    }
    free(translated);
    if (!p->re) { /* the error as the pattern was written (offsets in it) */
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        pcre2_code *as_written =
            pcre2_compile((PCRE2_SPTR)r->valuestring, PCRE2_ZERO_TERMINATED, TK_PCRE2_OPTIONS, &ec, &eo, NULL);
        if (as_written) { /* e.g. too large once every class holds the code points added to it */
            pcre2_code_free(as_written);
            return mt_errf(err, "%s: regex '%.200s' does not compile once its Unicode classes are translated: %s",
                           where, r->valuestring, (char *)msg);
        }
        pcre2_get_error_message(ec, msg, sizeof msg);
        return mt_errf(err, "%s: regex '%s' does not compile at offset %zu: %s", where, r->valuestring, (size_t)eo,
                       (char *)msg);
    }
    pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter when JIT is absent */
    return 0;
}

void tk_pattern_free(tk_pattern *p) {
    free(p->lit);
    if (p->re) pcre2_code_free(p->re);
    if (p->re_written) pcre2_code_free(p->re_written);
    memset(p, 0, sizeof *p);
}

typedef struct segv {
    tk_seg *v;
    size_t n, cap;
} segv;
static void seg_add(segv *s, size_t a, size_t b, int m) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) abort();
    }
    s->v[s->n++] = (tk_seg){a, b, m};
}

size_t tk_pattern_find(tk_pattern *p, const char *s, size_t n, tk_seg **out, mt_err *err) {
    segv sv = {0};
    if (n == 0) {
        seg_add(&sv, 0, 0, 0);
        *out = sv.v;
        return sv.n;
    }
    size_t prev = 0, pos = 0;
    /* the pattern as written where it matches the same (see tk_regex_translate): faster */
    pcre2_code *re = p->re_written && !tk_regex_has_changed(s, n) ? p->re_written : p->re;
    pcre2_match_data *md = re ? pcre2_match_data_create_from_pattern(re, NULL) : NULL;
    if (re && !md) abort();
    while (pos <= n) {
        size_t a, b;
        if (re) {
            int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc < 0 && rc != PCRE2_ERROR_NOMATCH && err) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                pcre2_match_data_free(md);
                free(sv.v);
                *out = NULL;
                mt_errf(err, "regex matching failed at byte %zu of a %zu-byte text: %s", pos, n, (char *)msg);
                return SIZE_MAX;
            }
            if (rc < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            a = ov[0], b = ov[1];
        } else {
            if (!p->lit_len) break;
            const char *f = memmem(s + pos, n - pos, p->lit, p->lit_len);
            if (!f) break;
            a = (size_t)(f - s), b = a + p->lit_len;
        }
        if (prev != a) seg_add(&sv, prev, a, 0);
        seg_add(&sv, a, b, 1);
        prev = b;
        if (b == a) { /* empty match: resume one character later */
            if (b >= n) break;
            uint32_t cp;
            pos = b + (size_t)tk_utf8_dec(s + b, n - b, &cp);
        } else {
            pos = b;
        }
    }
    if (md) pcre2_match_data_free(md);
    if (prev != n) seg_add(&sv, prev, n, 0);
    *out = sv.v;
    return sv.n;
}

static int utf8proc_norm(const char *s, size_t len, int opts, tk_buf *out, mt_err *err) {
    if (!len) return 0;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst,
                                      (utf8proc_option_t)(UTF8PROC_STABLE | opts));
    if (r < 0) return mt_errf(err, "unicode normalization failed: %s", utf8proc_errmsg(r));
    tk_buf_put(out, dst, (size_t)r);
    free(dst);
    return 0;
}

/* utf8proc's normalization between the code points the library's older tables do not know, which
 * stay as they are: to the library they are starters that compose with nothing, so nothing moves
 * or composes across them. */
static int unicode_norm(const char *s, size_t len, int opts, tk_buf *out, mt_err *err) {
    size_t run = 0;
    for (size_t i = 0; i < len;) {
        if ((unsigned char)s[i] < 0xDF) { /* below U+07C0, or inside a character: none of them */
            i++;
            continue;
        }
        uint32_t cp;
        int l = tk_utf8_dec(s + i, len - i, &cp);
        if (tk_norm_excluded_cp(cp)) {
            if (utf8proc_norm(s + run, i - run, opts, out, err)) return -1;
            tk_buf_put(out, s + i, (size_t)l);
            run = i + (size_t)l;
        }
        i += (size_t)l;
    }
    return utf8proc_norm(s + run, len - run, opts, out, err);
}

static void lowercase(const char *s, size_t len, tk_buf *out) {
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int l = tk_utf8_dec(s + i, len - i, &cp);
        i += (size_t)l;
        const char *lower = cp < 0x80 ? NULL : tk_lower_of(cp);
        if (cp >= 'A' && cp <= 'Z') tk_buf_putc(out, (char)(cp + 32));
        else if (lower) tk_buf_put(out, lower, strlen(lower));
        else tk_buf_put(out, s + i - (size_t)l, (size_t)l);
    }
}

static int replace(tk_pattern *p, const char *s, size_t len, const char *content, size_t clen, tk_buf *out,
                   mt_err *err) {
    tk_seg *segs;
    size_t ns = tk_pattern_find(p, s, len, &segs, err);
    if (ns == SIZE_MAX) return -1;
    for (size_t i = 0; i < ns; i++) {
        if (segs[i].match) tk_buf_put(out, content, clen);
        else tk_buf_put(out, s + segs[i].a, segs[i].b - segs[i].a);
    }
    free(segs);
    return 0;
}

static void strip(const char *s, size_t len, int left, int right, tk_buf *out) {
    size_t a = 0, b = len;
    if (left) {
        while (a < b) {
            uint32_t cp;
            int l = tk_utf8_dec(s + a, b - a, &cp);
            if (!tk_is_whitespace(cp)) break;
            a += (size_t)l;
        }
    }
    if (right) {
        while (b > a) {
            size_t k = b - 1;
            while (k > a && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
            uint32_t cp;
            tk_utf8_dec(s + k, b - k, &cp);
            if (!tk_is_whitespace(cp)) break;
            b = k;
        }
    }
    tk_buf_put(out, s + a, b - a);
}

int tk_normalize(const tk_norm *n, const char *s, size_t len, tk_buf *out, mt_err *err) {
    switch (n->type) {
    case TK_N_NFC: return unicode_norm(s, len, UTF8PROC_COMPOSE, out, err);
    case TK_N_NFKC: return unicode_norm(s, len, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, out, err);
    case TK_N_NFD: return unicode_norm(s, len, UTF8PROC_DECOMPOSE, out, err);
    case TK_N_NFKD: return unicode_norm(s, len, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, out, err);
    case TK_N_LOWER: lowercase(s, len, out); return 0;
    case TK_N_REPLACE: return replace((tk_pattern *)&n->pat, s, len, n->content, n->content_len, out, err);
    case TK_N_PREPEND:
        if (len) tk_buf_put(out, n->content, n->content_len);
        tk_buf_put(out, s, len);
        return 0;
    case TK_N_STRIP: strip(s, len, n->left, n->right, out); return 0;
    case TK_N_SEQ: {
        tk_buf cur = {0};
        tk_buf_put(&cur, s, len);
        for (int i = 0; i < n->nsub; i++) {
            tk_buf nxt = {0};
            tk_buf_put(&nxt, "", 0);
            if (tk_normalize(&n->sub[i], cur.p, cur.n, &nxt, err)) {
                tk_buf_free(&cur), tk_buf_free(&nxt);
                return -1;
            }
            tk_buf_free(&cur);
            cur = nxt;
        }
        tk_buf_put(out, cur.p, cur.n);
        tk_buf_free(&cur);
        return 0;
    }
    }
    return mt_errf(err, "internal: unknown normalizer %d", n->type);
}

void tk_norm_free(tk_norm *n) {
    if (!n) return;
    tk_pattern_free(&n->pat);
    free(n->content);
    for (int i = 0; i < n->nsub; i++) tk_norm_free(&n->sub[i]);
    free(n->sub);
}
