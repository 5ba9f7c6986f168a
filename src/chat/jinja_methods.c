/* Methods callable on values in chat templates: Python str methods (strip, split, startswith, ...),
 * dict methods (items, keys, values, get). The sandbox transformers uses forbids mutating methods
 * (list.append, dict.update, ...), so they are errors here too. */
#include <stdio.h>
#include <string.h>
#include <utf8proc.h>

#include "chat/jinja.h"

#define NAMEQ(s, n, lit) ((n) == sizeof(lit) - 1 && !memcmp((s), (lit), (n)))

/* does code point cp appear in chars (UTF-8)? */
static int in_chars(int32_t cp, jv chars) {
    for (size_t i = 0; i < chars.n;) {
        size_t adv;
        if (ju_decode(chars.u.s + i, chars.n - i, &adv) == cp) return 1;
        i += adv;
    }
    return 0;
}

static jv do_strip(jctx *c, int line, jv s, jv chars, int left, int right) {
    if (chars.k != JV_NONE && chars.k != JV_UNDEF && chars.k != JV_STR)
        jx_fail(c, line, "strip arg must be None or str");
    int ws = chars.k != JV_STR;
    size_t a = 0, b = s.n;
    if (left)
        while (a < b) {
            size_t adv;
            int32_t cp = ju_decode(s.u.s + a, b - a, &adv);
            if (ws ? !ju_isspace(cp) : !in_chars(cp, chars)) break;
            a += adv;
        }
    if (right)
        while (b > a) {
            size_t st;
            int32_t cp = ju_decode_before(s.u.s, a, b, &st);
            if (ws ? !ju_isspace(cp) : !in_chars(cp, chars)) break;
            b = st;
        }
    return jv_strn(s.u.s + a, b - a);
}

static const char *find_sub(const char *h, size_t hn, const char *nd, size_t nn) {
    if (!nn) return h;
    if (nn > hn) return NULL;
    for (size_t i = 0; i + nn <= hn; i++)
        if (h[i] == nd[0] && !memcmp(h + i, nd, nn)) return h + i;
    return NULL;
}
static const char *rfind_sub(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn > hn) return NULL;
    for (size_t i = hn - nn + 1; i-- > 0;)
        if (!memcmp(h + i, nd, nn)) return h + i;
    return NULL;
}

/* str.split() on whitespace as CPython: words, at most maxsplit splits (< 0: no limit); the rest,
 * its leading whitespace skipped, is the last item as it stands. */
static jv split_ws(jctx *c, jv s, int64_t maxsplit) {
    jv out = jv_list_new(c, 0);
    size_t i = 0, n = s.n, adv;
    for (int64_t k = 0; maxsplit < 0 || k < maxsplit; k++) {
        while (i < n && ju_isspace(ju_decode(s.u.s + i, n - i, &adv))) i += adv;
        if (i == n) return out;
        size_t st = i;
        while (i < n && !ju_isspace(ju_decode(s.u.s + i, n - i, &adv))) i += adv;
        jv_list_push(c, out, jv_strn(s.u.s + st, i - st));
    }
    while (i < n && ju_isspace(ju_decode(s.u.s + i, n - i, &adv))) i += adv;
    if (i < n) jv_list_push(c, out, jv_strn(s.u.s + i, n - i));
    return out;
}

/* The start of the run of whitespace (want_space) or of other characters ending at byte end of s. */
static size_t run_start(jv s, size_t end, int want_space) {
    size_t st;
    while (end > 0 && ju_isspace(ju_decode_before(s.u.s, 0, end, &st)) == want_space) end = st;
    return end;
}

/* str.rsplit() on whitespace: split_ws from the right; the rest keeps its leading whitespace. */
static jv rsplit_ws(jctx *c, jv s, int64_t maxsplit) {
    jv rev = jv_list_new(c, 0);
    size_t end = s.n;
    for (int64_t k = 0; maxsplit < 0 || k < maxsplit; k++) {
        end = run_start(s, end, 1);
        if (end == 0) break;
        size_t st = run_start(s, end, 0);
        jv_list_push(c, rev, jv_strn(s.u.s + st, end - st));
        end = st;
    }
    end = run_start(s, end, 1);
    if (end > 0) jv_list_push(c, rev, jv_strn(s.u.s, end));
    jv out = jv_list_new(c, rev.u.l->n);
    for (size_t k = rev.u.l->n; k-- > 0;) jv_list_push(c, out, rev.u.l->v[k]);
    return out;
}

static jv do_split(jctx *c, int line, jv s, jv sep, int64_t maxsplit, int from_right) {
    jv out = jv_list_new(c, 0);
    if (sep.k == JV_NONE || sep.k == JV_UNDEF) return from_right ? rsplit_ws(c, s, maxsplit) : split_ws(c, s, maxsplit);
    if (sep.k != JV_STR) jx_fail(c, line, "split: separator must be a string");
    if (!sep.n) jx_fail(c, line, "split: empty separator");
    if (!from_right) {
        size_t i = 0;
        int64_t splits = 0;
        for (;;) {
            const char *f = (maxsplit >= 0 && splits >= maxsplit) ? NULL : find_sub(s.u.s + i, s.n - i, sep.u.s, sep.n);
            if (!f) {
                jv_list_push(c, out, jv_strn(s.u.s + i, s.n - i));
                return out;
            }
            jv_list_push(c, out, jv_strn(s.u.s + i, (size_t)(f - (s.u.s + i))));
            i = (size_t)(f - s.u.s) + sep.n;
            splits++;
        }
    }
    jv rev = jv_list_new(c, 0);
    size_t end = s.n;
    int64_t splits = 0;
    for (;;) {
        const char *f = (maxsplit >= 0 && splits >= maxsplit) ? NULL : rfind_sub(s.u.s, end, sep.u.s, sep.n);
        if (!f) {
            jv_list_push(c, rev, jv_strn(s.u.s, end));
            break;
        }
        size_t pos = (size_t)(f - s.u.s);
        jv_list_push(c, rev, jv_strn(f + sep.n, end - pos - sep.n));
        end = pos;
        splits++;
    }
    for (size_t k = rev.u.l->n; k-- > 0;) jv_list_push(c, out, rev.u.l->v[k]);
    return out;
}

/* Python's slice bounds of s[start:end] in code points (ADJUST_INDICES): end clamped to the
 * length, negatives counted from the end; start may stay past the end. */
typedef struct span {
    int64_t st, en;     /* code points */
    size_t bst, ben;    /* the bytes of [st, en), when st <= en */
} span;

static int64_t index_arg(jctx *c, int line, jv v, int64_t dflt, const char *what) {
    if (v.k == JV_NONE || v.k == JV_UNDEF) return dflt;
    if (v.k != JV_INT && v.k != JV_BOOL) jx_fail(c, line, "slice indices must be integers or None or have an __index__ method (%s)", what);
    return v.u.i;
}

static span span_of(jctx *c, int line, jv s, jv start, jv end) {
    int64_t len = (int64_t)ju_len(s.u.s, s.n);
    span r = {index_arg(c, line, start, 0, "start"), index_arg(c, line, end, len, "end"), 0, 0};
    if (r.en > len) r.en = len;
    else if (r.en < 0 && (r.en += len) < 0) r.en = 0;
    if (r.st < 0 && (r.st += len) < 0) r.st = 0;
    if (r.st <= r.en) {
        r.bst = ju_offset(s.u.s, s.n, (size_t)r.st);
        r.ben = ju_offset(s.u.s, s.n, (size_t)r.en);
    }
    return r;
}

/* startswith/endswith(prefix, start, end): prefix a str or a tuple of them. */
static int affix(jctx *c, int line, jv s, jv p, span sp, int end) {
    if (p.k == JV_LIST && p.tuple && !p.gen) {
        for (size_t i = 0; i < p.u.l->n; i++)
            if (affix(c, line, s, p.u.l->v[i], sp, end)) return 1;
        return 0;
    }
    if (p.k != JV_STR)
        jx_fail(c, line, "%s first arg must be str or a tuple of str, not %s", end ? "endswith" : "startswith", jv_kind_name(p));
    int64_t plen = (int64_t)ju_len(p.u.s, p.n);
    if (sp.en - plen < sp.st) return 0;
    if (p.n > sp.ben - sp.bst) return 0;
    return !memcmp(end ? s.u.s + sp.ben - p.n : s.u.s + sp.bst, p.u.s, p.n);
}

static int title_delim(int32_t cp) { return ju_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<'; }

/* Jinja's title filter: the text split at runs of whitespace and -({[<, each piece's first
 * character upper-cased and the rest of the piece lower-cased. */
jv jx_jinja_title(jctx *c, jv s) {
    jbuf b = {0};
    jb_put(c, &b, "", 0);
    size_t i = 0, adv;
    while (i < s.n) {
        int32_t cp = ju_decode(s.u.s + i, s.n - i, &adv);
        int delim = title_delim(cp);
        size_t st = i, j = i + adv, a2;
        while (j < s.n && title_delim(ju_decode(s.u.s + j, s.n - j, &a2)) == delim) j += a2;
        jv first = ju_case_map(c, jv_strn(s.u.s + st, adv), JU_UPPER);
        jv rest = ju_case_map(c, jv_strn(s.u.s + st + adv, j - st - adv), JU_LOWER);
        jb_put(c, &b, first.u.s, first.n);
        jb_put(c, &b, rest.u.s, rest.n);
        i = j;
    }
    return jv_strn(b.p, b.n);
}

/* str.splitlines(keepends): Python's line boundaries \n \r \r\n \v \f \x1c \x1d \x1e \x85 U+2028 U+2029. */
static jv do_splitlines(jctx *c, jv s, int keepends) {
    jv out = jv_list_new(c, 0);
    size_t st = 0, i = 0, adv;
    while (i < s.n) {
        int32_t cp = ju_decode(s.u.s + i, s.n - i, &adv);
        int brk = cp == '\n' || cp == '\r' || cp == 0x0b || cp == 0x0c || (cp >= 0x1c && cp <= 0x1e) || cp == 0x85 ||
                  cp == 0x2028 || cp == 0x2029;
        if (!brk) {
            i += adv;
            continue;
        }
        size_t eol = i + adv;
        if (cp == '\r' && eol < s.n && s.u.s[eol] == '\n') eol++;
        jv_list_push(c, out, jv_strn(s.u.s + st, (keepends ? eol : i) - st));
        st = i = eol;
    }
    if (st < s.n) jv_list_push(c, out, jv_strn(s.u.s + st, s.n - st));
    return out;
}

/* str.isdigit, isalpha, ...: every character passes (and there is one, except isascii/isprintable). */
static jv char_class(jv s, const char *name, size_t n) {
    int empty_true = NAMEQ(name, n, "isascii") || NAMEQ(name, n, "isprintable");
    if (!s.n) return jv_bool(empty_true);
    for (size_t i = 0, adv; i < s.n; i += adv) {
        int32_t cp = ju_decode(s.u.s + i, s.n - i, &adv);
        int ok;
        if (NAMEQ(name, n, "isdigit")) ok = ju_isdigit(cp);
        else if (NAMEQ(name, n, "isdecimal")) ok = ju_isdecimal(cp);
        else if (NAMEQ(name, n, "isnumeric")) ok = ju_isnumeric(cp);
        else if (NAMEQ(name, n, "isalpha")) ok = ju_isalpha(cp);
        else if (NAMEQ(name, n, "isalnum")) ok = ju_isalpha(cp) || ju_isnumeric(cp);
        else if (NAMEQ(name, n, "isspace")) ok = ju_isspace(cp);
        else if (NAMEQ(name, n, "isascii")) ok = cp < 0x80;
        else ok = ju_isprintable(cp);
        if (!ok) return jv_bool(0);
    }
    return jv_bool(1);
}

/* str.islower / isupper / istitle as CPython decides them. */
static jv case_class(jv s, const char *name, size_t n) {
    int cased = 0, prev_cased = 0;
    for (size_t i = 0, adv; i < s.n; i += adv) {
        int32_t cp = ju_decode(s.u.s + i, s.n - i, &adv);
        int up = ju_isupper(cp), lo = ju_islower(cp), ti = ju_istitle(cp);
        if (NAMEQ(name, n, "islower")) {
            if (up || ti) return jv_bool(0);
            cased |= lo;
        } else if (NAMEQ(name, n, "isupper")) {
            if (lo || ti) return jv_bool(0);
            cased |= up;
        } else if (up || ti) {
            if (prev_cased) return jv_bool(0);
            prev_cased = cased = 1;
        } else if (lo) {
            if (!prev_cased) return jv_bool(0);
            prev_cased = cased = 1;
        } else {
            prev_cased = 0;
        }
    }
    return jv_bool(cased);
}

static int64_t width_arg(jctx *c, int line, jv w) {
    if (w.k != JV_INT && w.k != JV_BOOL) jx_fail(c, line, "'%s' object cannot be interpreted as an integer", jv_kind_name(w));
    if (w.u.i > (int64_t)JX_MAX_RENDER_BYTES) jx_fail(c, line, "width too large");
    return w.u.i;
}

/* center/ljust/rjust(width, fillchar) and zfill(width), padding as Python. */
static jv do_pad(jctx *c, int line, jv s, const char *name, size_t n, jv width, jv fill) {
    int64_t w = width_arg(c, line, width), len = (int64_t)ju_len(s.u.s, s.n);
    if (fill.k != JV_STR || ju_len(fill.u.s, fill.n) != 1) {
        if (fill.k == JV_STR) jx_fail(c, line, "The fill character must be exactly one character long");
        jx_fail(c, line, "The fill character must be a unicode character, not %s", jv_kind_name(fill));
    }
    int64_t marg = w - len, left;
    if (marg <= 0) return s;
    if (NAMEQ(name, n, "center")) left = marg / 2 + (marg & w & 1);
    else left = NAMEQ(name, n, "ljust") ? 0 : marg;
    size_t sign = NAMEQ(name, n, "zfill") && s.n && (s.u.s[0] == '+' || s.u.s[0] == '-');
    jbuf b = {0};
    jb_put(c, &b, s.u.s, sign);
    for (int64_t i = 0; i < left; i++) jb_put(c, &b, fill.u.s, fill.n);
    jb_put(c, &b, s.u.s + sign, s.n - sign);
    for (int64_t i = left; i < marg; i++) jb_put(c, &b, fill.u.s, fill.n);
    return jv_strn(b.p, b.n);
}

static jv triple(jctx *c, jv a, jv b, jv d) {
    jv t = jv_list_new(c, 3);
    jv_list_push(c, t, a);
    jv_list_push(c, t, b);
    jv_list_push(c, t, d);
    t.tuple = 1;
    return t;
}

static jv do_partition(jctx *c, int line, jv s, jv sep, int from_right) {
    if (sep.k != JV_STR) jx_fail(c, line, "must be str, not %s", jv_kind_name(sep));
    if (!sep.n) jx_fail(c, line, "empty separator");
    const char *f = from_right ? rfind_sub(s.u.s, s.n, sep.u.s, sep.n) : find_sub(s.u.s, s.n, sep.u.s, sep.n);
    jv empty = jv_strn("", 0);
    if (!f) return from_right ? triple(c, empty, empty, s) : triple(c, s, empty, empty);
    size_t at = (size_t)(f - s.u.s);
    return triple(c, jv_strn(s.u.s, at), sep, jv_strn(s.u.s + at + sep.n, s.n - at - sep.n));
}

static jv do_expandtabs(jctx *c, int line, jv s, jv tabsize) {
    int64_t ts = width_arg(c, line, tabsize), col = 0;
    jbuf b = {0};
    jb_put(c, &b, "", 0);
    for (size_t i = 0, adv; i < s.n; i += adv) {
        int32_t cp = ju_decode(s.u.s + i, s.n - i, &adv);
        if (cp == '\t') {
            if (ts <= 0) continue;
            int64_t incr = ts - col % ts;
            col += incr;
            for (int64_t k = 0; k < incr; k++) jb_putc(c, &b, ' ');
            continue;
        }
        jb_put(c, &b, s.u.s + i, adv);
        col = cp == '\n' || cp == '\r' ? 0 : col + 1;
    }
    return jv_strn(b.p, b.n);
}

/* find/rfind/index/rindex/count(sub, start, end) */
static jv do_find(jctx *c, int line, jv s, const char *name, size_t n, jv sub, jv start, jv end) {
    if (sub.k != JV_STR) jx_fail(c, line, "must be str, not %s", jv_kind_name(sub));
    span sp = span_of(c, line, s, start, end);
    int64_t sublen = (int64_t)ju_len(sub.u.s, sub.n);
    int counting = NAMEQ(name, n, "count"), rev = name[0] == 'r';
    if (sp.en - sp.st < sublen) {
        if (counting) return jv_int(0);
        if (NAMEQ(name, n, "index") || NAMEQ(name, n, "rindex")) jx_fail(c, line, "substring not found");
        return jv_int(-1);
    }
    const char *h = s.u.s + sp.bst;
    size_t hn = sp.ben - sp.bst;
    if (counting) {
        if (!sub.n) return jv_int(sp.en - sp.st + 1);
        int64_t k = 0;
        for (const char *f = find_sub(h, hn, sub.u.s, sub.n); f; f = find_sub(f + sub.n, hn - (size_t)(f + sub.n - h), sub.u.s, sub.n)) k++;
        return jv_int(k);
    }
    const char *f = rev ? rfind_sub(h, hn, sub.u.s, sub.n) : find_sub(h, hn, sub.u.s, sub.n);
    if (!f) {
        if (NAMEQ(name, n, "index") || NAMEQ(name, n, "rindex")) jx_fail(c, line, "substring not found");
        return jv_int(-1);
    }
    return jv_int(sp.st + (int64_t)ju_len(h, (size_t)(f - h)));
}

static jv do_replace(jctx *c, int line, jv s, jv old, jv nw, jv cnt) {
    if (old.k != JV_STR || nw.k != JV_STR) jx_fail(c, line, "replace arguments must be strings");
    int64_t limit = cnt.k == JV_INT ? cnt.u.i : -1;
    jbuf b = {0};
    jb_put(c, &b, "", 0);
    if (!old.n) { /* insert between every character */
        int64_t done = 0;
        for (size_t i = 0; i <= s.n;) {
            if (limit < 0 || done < limit) {
                jb_put(c, &b, nw.u.s, nw.n);
                done++;
            }
            if (i == s.n) break;
            size_t adv;
            ju_decode(s.u.s + i, s.n - i, &adv);
            jb_put(c, &b, s.u.s + i, adv);
            i += adv;
        }
        return jv_strn(b.p, b.n);
    }
    size_t i = 0;
    int64_t done = 0;
    while (i < s.n) {
        const char *f = (limit >= 0 && done >= limit) ? NULL : find_sub(s.u.s + i, s.n - i, old.u.s, old.n);
        if (!f) break;
        jb_put(c, &b, s.u.s + i, (size_t)(f - (s.u.s + i)));
        jb_put(c, &b, nw.u.s, nw.n);
        i = (size_t)(f - s.u.s) + old.n;
        done++;
    }
    jb_put(c, &b, s.u.s + i, s.n - i);
    return jv_strn(b.p, b.n);
}

static jv do_join(jctx *c, int line, jv s, int nargs, jv *args) {
    if (nargs < 1) jx_fail(c, line, "join needs an iterable");
    jv items = jx_iter_list(c, line, args[0]);
    jbuf b = {0};
    jb_put(c, &b, "", 0);
    for (size_t i = 0; i < items.u.l->n; i++) {
        if (items.u.l->v[i].k != JV_STR) jx_fail(c, line, "sequence item %zu: expected str instance, %s found", i, jv_kind_name(items.u.l->v[i]));
        if (i) jb_put(c, &b, s.u.s, s.n);
        jb_put(c, &b, items.u.l->v[i].u.s, items.u.l->v[i].n);
    }
    return jv_strn(b.p, b.n);
}

/* Python methods of str, dict, list, int, float and Markup that jx_method lacks: a template
 * calling one is refused at load (jinja_check.c). */
const char *const jx_unsupported_methods[] = {
    "encode", "isidentifier", "maketrans", "translate", "striptags", "unescape", "fromkeys", "bit_length",
    "bit_count", "to_bytes", "from_bytes", "as_integer_ratio", "conjugate", "is_integer", "hex", "fromhex", NULL};

static jv str_method(jctx *c, int line, jv s, const char *name, size_t n, jv *args, int nargs, const char **kwn, jv *kwv,
                     int nkw, int *found) {
#define ARG(i, nm, d) jx_arg(args, nargs, kwn, kwv, nkw, (i), (nm), (d))
    *found = 1;
    if (NAMEQ(name, n, "strip")) return do_strip(c, line, s, ARG(0, "chars", jv_none()), 1, 1);
    if (NAMEQ(name, n, "lstrip")) return do_strip(c, line, s, ARG(0, "chars", jv_none()), 1, 0);
    if (NAMEQ(name, n, "rstrip")) return do_strip(c, line, s, ARG(0, "chars", jv_none()), 0, 1);
    if (NAMEQ(name, n, "split") || NAMEQ(name, n, "rsplit")) {
        jv mx = ARG(1, "maxsplit", jv_int(-1));
        if (mx.k != JV_INT && mx.k != JV_BOOL) jx_fail(c, line, "'%s' object cannot be interpreted as an integer", jv_kind_name(mx));
        return do_split(c, line, s, ARG(0, "sep", jv_none()), mx.u.i, NAMEQ(name, n, "rsplit"));
    }
    if (NAMEQ(name, n, "startswith") || NAMEQ(name, n, "endswith")) {
        if (nargs < 1) jx_fail(c, line, "%.*s needs an argument", (int)n, name);
        span sp = span_of(c, line, s, ARG(1, NULL, jv_none()), ARG(2, NULL, jv_none()));
        return jv_bool(affix(c, line, s, args[0], sp, NAMEQ(name, n, "endswith")));
    }
    if (NAMEQ(name, n, "upper")) return ju_case_map(c, s, JU_UPPER);
    if (NAMEQ(name, n, "lower")) return ju_case_map(c, s, JU_LOWER);
    if (NAMEQ(name, n, "title")) return ju_case_map(c, s, JU_TITLE);
    if (NAMEQ(name, n, "capitalize")) return ju_case_map(c, s, JU_CAPITALIZE);
    if (NAMEQ(name, n, "swapcase")) return ju_case_map(c, s, JU_SWAPCASE);
    if (NAMEQ(name, n, "casefold")) return ju_case_map(c, s, JU_CASEFOLD);
    if (NAMEQ(name, n, "replace"))
        return do_replace(c, line, s, ARG(0, "old", jv_undef(NULL)), ARG(1, "new", jv_undef(NULL)), ARG(2, "count", jv_int(-1)));
    if (NAMEQ(name, n, "find") || NAMEQ(name, n, "rfind") || NAMEQ(name, n, "index") || NAMEQ(name, n, "rindex") ||
        NAMEQ(name, n, "count"))
        return do_find(c, line, s, name, n, ARG(0, NULL, jv_undef(NULL)), ARG(1, NULL, jv_none()), ARG(2, NULL, jv_none()));
    if (NAMEQ(name, n, "join")) return do_join(c, line, s, nargs, args);
    if (NAMEQ(name, n, "isdigit") || NAMEQ(name, n, "isdecimal") || NAMEQ(name, n, "isnumeric") || NAMEQ(name, n, "isalpha") ||
        NAMEQ(name, n, "isalnum") || NAMEQ(name, n, "isspace") || NAMEQ(name, n, "isascii") || NAMEQ(name, n, "isprintable"))
        return char_class(s, name, n);
    if (NAMEQ(name, n, "islower") || NAMEQ(name, n, "isupper") || NAMEQ(name, n, "istitle")) return case_class(s, name, n);
    if (NAMEQ(name, n, "splitlines")) return do_splitlines(c, s, jv_truthy(ARG(0, "keepends", jv_bool(0))));
    if (NAMEQ(name, n, "center") || NAMEQ(name, n, "ljust") || NAMEQ(name, n, "rjust"))
        return do_pad(c, line, s, name, n, ARG(0, NULL, jv_undef(NULL)), ARG(1, NULL, jv_cstr(" ")));
    if (NAMEQ(name, n, "zfill")) return do_pad(c, line, s, name, n, ARG(0, NULL, jv_undef(NULL)), jv_cstr("0"));
    if (NAMEQ(name, n, "partition") || NAMEQ(name, n, "rpartition"))
        return do_partition(c, line, s, ARG(0, NULL, jv_undef(NULL)), name[0] == 'r');
    if (NAMEQ(name, n, "removeprefix") || NAMEQ(name, n, "removesuffix")) {
        jv a = ARG(0, NULL, jv_undef(NULL));
        if (a.k != JV_STR) jx_fail(c, line, "%.*s() argument must be str, not %s", (int)n, name, jv_kind_name(a));
        int suffix = name[6] == 's';
        if (a.n > s.n || memcmp(suffix ? s.u.s + s.n - a.n : s.u.s, a.u.s, a.n)) return s;
        return jv_strn(suffix ? s.u.s : s.u.s + a.n, s.n - a.n);
    }
    if (NAMEQ(name, n, "expandtabs")) return do_expandtabs(c, line, s, ARG(0, "tabsize", jv_int(8)));
    if (NAMEQ(name, n, "format") || NAMEQ(name, n, "format_map"))
        return jx_str_format(c, line, s, args, nargs, kwn, kwv, nkw, NAMEQ(name, n, "format_map"));
    *found = 0;
    return jv_none();
#undef ARG
}

jv jx_method(jctx *c, int line, jv obj, const char *name, size_t n, jv *args, int nargs, const char **kwn, jv *kwv,
             int nkw, int *found) {
    *found = 0;
    if (obj.k == JV_STR) return str_method(c, line, obj, name, n, args, nargs, kwn, kwv, nkw, found);
    if (obj.k == JV_DICT) {
        if (NAMEQ(name, n, "items") || NAMEQ(name, n, "keys") || NAMEQ(name, n, "values")) {
            *found = 1;
            jv out = jv_list_new(c, obj.u.d->n);
            for (size_t i = 0; i < obj.u.d->n; i++) {
                if (name[0] == 'k') jv_list_push(c, out, obj.u.d->keys[i]);
                else if (name[0] == 'v') jv_list_push(c, out, obj.u.d->vals[i]);
                else {
                    jv t = jv_list_new(c, 2);
                    jv_list_push(c, t, obj.u.d->keys[i]);
                    jv_list_push(c, t, obj.u.d->vals[i]);
                    t.tuple = 1;
                    jv_list_push(c, out, t);
                }
            }
            out.gen = name[0] == 'k' ? JG_KEYS : name[0] == 'v' ? JG_VALUES : JG_ITEMS;
            return out;
        }
        if (NAMEQ(name, n, "copy")) {
            *found = 1;
            jv out = jv_dict_new(c, obj.u.d->n);
            for (size_t i = 0; i < obj.u.d->n; i++) jv_dict_set(c, out.u.d, obj.u.d->keys[i], obj.u.d->vals[i]);
            return out;
        }
        if (NAMEQ(name, n, "get")) {
            *found = 1;
            jv key = jx_arg(args, nargs, kwn, kwv, nkw, 0, "key", jv_none());
            jv d = jx_arg(args, nargs, kwn, kwv, nkw, 1, "default", jv_none());
            jv out;
            return jv_dict_get(obj.u.d, key, &out) ? out : d;
        }
        if (NAMEQ(name, n, "update") || NAMEQ(name, n, "pop") || NAMEQ(name, n, "setdefault") ||
            NAMEQ(name, n, "clear") || NAMEQ(name, n, "popitem"))
            jx_fail(c, line, "access to attribute '%.*s' of 'dict' object is unsafe.", (int)n, name);
    }
    if (obj.k == JV_LIST) {
        if (NAMEQ(name, n, "append") || NAMEQ(name, n, "extend") || NAMEQ(name, n, "pop") || NAMEQ(name, n, "insert") ||
            NAMEQ(name, n, "remove") || NAMEQ(name, n, "sort") || NAMEQ(name, n, "reverse") || NAMEQ(name, n, "clear"))
            jx_fail(c, line, "access to attribute '%.*s' of 'list' object is unsafe.", (int)n, name);
        if (NAMEQ(name, n, "copy") && !obj.tuple && !obj.gen) {
            *found = 1;
            jv out = jv_list_new(c, obj.u.l->n);
            for (size_t i = 0; i < obj.u.l->n; i++) jv_list_push(c, out, obj.u.l->v[i]);
            return out;
        }
        if (NAMEQ(name, n, "index") || NAMEQ(name, n, "count")) {
            *found = 1;
            if (nargs < 1) jx_fail(c, line, "%.*s needs an argument", (int)n, name);
            int64_t k = 0;
            for (size_t i = 0; i < obj.u.l->n; i++)
                if (jv_equal(obj.u.l->v[i], args[0])) {
                    if (name[0] == 'i') return jv_int((int64_t)i);
                    k++;
                }
            if (name[0] == 'i') jx_fail(c, line, "value is not in list");
            return jv_int(k);
        }
    }
    return jv_none();
}
