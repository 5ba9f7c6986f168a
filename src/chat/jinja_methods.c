/* Methods callable on values in chat templates: Python str methods (strip, split, startswith, ...),
 * dict methods (items, keys, values, get). The sandbox transformers uses forbids mutating methods
 * (list.append, dict.update, ...), so they are errors here too. */
#include <stdio.h>
#include <string.h>
#include <utf8proc.h>

#include "chat/jinja.h"

#define NAMEQ(s, n, lit) ((n) == sizeof(lit) - 1 && !memcmp((s), (lit), (n)))

jv jx_str_lower(jctx *c, jv s);
jv jx_str_upper(jctx *c, jv s);

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
            size_t st = b - 1;
            while (st > a && ((unsigned char)s.u.s[st] & 0xC0) == 0x80) st--;
            size_t adv;
            int32_t cp = ju_decode(s.u.s + st, b - st, &adv);
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

static jv do_split(jctx *c, int line, jv s, jv sep, int64_t maxsplit, int from_right) {
    jv out = jv_list_new(c, 0);
    if (sep.k == JV_NONE || sep.k == JV_UNDEF) {
        /* whitespace split, empties dropped */
        size_t i = 0, n = s.n;
        jv parts = jv_list_new(c, 0);
        if (!from_right) {
            int64_t splits = 0;
            while (i < n) {
                size_t adv;
                while (i < n && ju_isspace(ju_decode(s.u.s + i, n - i, &adv))) i += adv;
                if (i >= n) break;
                if (maxsplit >= 0 && splits >= maxsplit) {
                    jv rest = do_strip(c, line, jv_strn(s.u.s + i, n - i), jv_none(), 0, 1);
                    jv_list_push(c, out, rest);
                    return out;
                }
                size_t st = i;
                while (i < n && !ju_isspace(ju_decode(s.u.s + i, n - i, &adv))) i += adv;
                jv_list_push(c, out, jv_strn(s.u.s + st, i - st));
                splits++;
            }
            return out;
        }
        /* rsplit(None): split fully then merge from the left when limited */
        jv all = do_split(c, line, s, sep, -1, 0);
        if (maxsplit < 0 || (int64_t)all.u.l->n <= maxsplit + 1) return all;
        size_t keep = all.u.l->n - (size_t)maxsplit;
        /* first part: from the string's start (leading whitespace kept) to the end of word keep-1 */
        const char *st = s.u.s, *en = all.u.l->v[keep - 1].u.s + all.u.l->v[keep - 1].n;
        jv_list_push(c, parts, jv_strn(st, (size_t)(en - st)));
        for (size_t k = keep; k < all.u.l->n; k++) jv_list_push(c, parts, all.u.l->v[k]);
        return parts;
    }
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

static int affix(jctx *c, int line, jv s, jv p, int end) {
    if (p.k == JV_LIST) {
        for (size_t i = 0; i < p.u.l->n; i++)
            if (affix(c, line, s, p.u.l->v[i], end)) return 1;
        return 0;
    }
    if (p.k != JV_STR) jx_fail(c, line, "%s arg must be str or a tuple of str, not %s", end ? "endswith" : "startswith", jv_kind_name(p));
    if (p.n > s.n) return 0;
    return !memcmp(end ? s.u.s + s.n - p.n : s.u.s, p.u.s, p.n);
}

static jv case_words(jctx *c, jv s, int jinja_title) {
    /* capitalize: first upper, rest lower. title: word starts upper, rest lower. */
    jbuf b = {0};
    jb_put(c, &b, "", 0);
    int prev_cased = 0, first = 1;
    for (size_t i = 0; i < s.n;) {
        size_t adv;
        int32_t cp = ju_decode(s.u.s + i, s.n - i, &adv);
        int32_t m;
        if (jinja_title < 0) m = first ? utf8proc_toupper(cp) : utf8proc_tolower(cp);
        else if (jinja_title) {
            /* Jinja's title: words separated by whitespace or -({[< start upper */
            m = (first || prev_cased == 0) ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
            prev_cased = !(ju_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<');
        } else {
            utf8proc_category_t k = utf8proc_category(cp);
            int cased = k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
            m = prev_cased ? utf8proc_tolower(cp) : utf8proc_totitle(cp);
            prev_cased = cased;
        }
        first = 0;
        char tmp[4];
        jb_put(c, &b, tmp, ju_encode(m, tmp));
        i += adv;
    }
    return jv_strn(b.p, b.n);
}

static jv str_method(jctx *c, int line, jv s, const char *name, size_t n, jv *args, int nargs, const char **kwn, jv *kwv,
                     int nkw, int *found) {
#define ARG(i, nm, d) jx_arg(args, nargs, kwn, kwv, nkw, (i), (nm), (d))
    *found = 1;
    if (NAMEQ(name, n, "strip")) return do_strip(c, line, s, ARG(0, "chars", jv_none()), 1, 1);
    if (NAMEQ(name, n, "lstrip")) return do_strip(c, line, s, ARG(0, "chars", jv_none()), 1, 0);
    if (NAMEQ(name, n, "rstrip")) return do_strip(c, line, s, ARG(0, "chars", jv_none()), 0, 1);
    if (NAMEQ(name, n, "split") || NAMEQ(name, n, "rsplit")) {
        jv mx = ARG(1, "maxsplit", jv_int(-1));
        return do_split(c, line, s, ARG(0, "sep", jv_none()), mx.u.i, NAMEQ(name, n, "rsplit"));
    }
    if (NAMEQ(name, n, "startswith") || NAMEQ(name, n, "endswith")) {
        if (nargs < 1) jx_fail(c, line, "%.*s needs an argument", (int)n, name);
        return jv_bool(affix(c, line, s, args[0], NAMEQ(name, n, "endswith")));
    }
    if (NAMEQ(name, n, "upper")) return jx_str_upper(c, s);
    if (NAMEQ(name, n, "lower")) return jx_str_lower(c, s);
    if (NAMEQ(name, n, "title")) return case_words(c, s, 0);
    if (NAMEQ(name, n, "__jinja_title")) return case_words(c, s, 1);
    if (NAMEQ(name, n, "capitalize")) return case_words(c, s, -1);
    if (NAMEQ(name, n, "replace")) {
        jv old = ARG(0, "old", jv_undef(NULL)), nw = ARG(1, "new", jv_undef(NULL)), cnt = ARG(2, "count", jv_int(-1));
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
    if (NAMEQ(name, n, "find") || NAMEQ(name, n, "rfind") || NAMEQ(name, n, "index") || NAMEQ(name, n, "rindex")) {
        jv sub = ARG(0, "sub", jv_undef(NULL));
        if (sub.k != JV_STR) jx_fail(c, line, "%.*s needs a string", (int)n, name);
        if (nargs > 1) jx_fail(c, line, "unsupported: %.*s with start/end", (int)n, name);
        int rev = name[0] == 'r';
        const char *f = rev ? rfind_sub(s.u.s, s.n, sub.u.s, sub.n) : find_sub(s.u.s, s.n, sub.u.s, sub.n);
        if (!f) {
            if (NAMEQ(name, n, "index") || NAMEQ(name, n, "rindex")) jx_fail(c, line, "substring not found");
            return jv_int(-1);
        }
        return jv_int((int64_t)ju_len(s.u.s, (size_t)(f - s.u.s)));
    }
    if (NAMEQ(name, n, "count")) {
        jv sub = ARG(0, "x", jv_undef(NULL));
        if (sub.k != JV_STR) jx_fail(c, line, "count needs a string");
        if (!sub.n) return jv_int((int64_t)ju_len(s.u.s, s.n) + 1);
        int64_t k = 0;
        for (size_t i = 0; i + sub.n <= s.n;) {
            if (!memcmp(s.u.s + i, sub.u.s, sub.n)) {
                k++;
                i += sub.n;
            } else i++;
        }
        return jv_int(k);
    }
    if (NAMEQ(name, n, "join")) {
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
    if (NAMEQ(name, n, "isdigit") || NAMEQ(name, n, "isalpha") || NAMEQ(name, n, "isspace") || NAMEQ(name, n, "isalnum")) {
        if (!s.n) return jv_bool(0);
        for (size_t i = 0; i < s.n;) {
            size_t adv;
            int32_t cp = ju_decode(s.u.s + i, s.n - i, &adv);
            utf8proc_category_t k = utf8proc_category(cp);
            int alpha = k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
            int digit = k == UTF8PROC_CATEGORY_ND;
            int ok = name[2] == 'd' ? digit : name[2] == 's' && name[3] == 'p' ? ju_isspace(cp) : name[4] == 'p' ? alpha : (alpha || digit);
            if (!ok) return jv_bool(0);
            i += adv;
        }
        return jv_bool(1);
    }
    if (NAMEQ(name, n, "splitlines")) {
        jv out = jv_list_new(c, 0);
        size_t st = 0;
        for (size_t i = 0; i < s.n; i++) {
            if (s.u.s[i] == '\n' || s.u.s[i] == '\r') {
                jv_list_push(c, out, jv_strn(s.u.s + st, i - st));
                if (s.u.s[i] == '\r' && i + 1 < s.n && s.u.s[i + 1] == '\n') i++;
                st = i + 1;
            }
        }
        if (st < s.n) jv_list_push(c, out, jv_strn(s.u.s + st, s.n - st));
        return out;
    }
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
