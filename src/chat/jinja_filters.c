/* Filters, tests and global functions of the chat-template interpreter, with Jinja2's builtin
 * semantics (jinja2/filters.py, jinja2/tests.py) and transformers' tojson / raise_exception /
 * strftime_now globals. An unknown filter or test is an error naming the template line. */
#include <inttypes.h>
#include <math.h>
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "chat/jinja.h"

#define NAMEQ(s, n, lit) ((n) == sizeof(lit) - 1 && !memcmp((s), (lit), (n)))

static jv as_str(jctx *c, jv v) { return v.k == JV_UNDEF ? jv_strn("", 0) : jv_stringify(c, v); }

static int is_word_cp(int32_t cp) {
    if (cp == '_') return 1;
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
    utf8proc_category_t k = utf8proc_category(cp);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO) ||
           k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC;
}

static int64_t to_len(jctx *c, int line, jv v) {
    switch (v.k) {
    case JV_STR: return (int64_t)ju_len(v.u.s, v.n);
    case JV_LIST:
        if (v.gen == JG_GENERATOR || v.gen == JG_REVITER) jx_fail(c, line, "object of type '%s' has no len()", jv_kind_name(v));
        return (int64_t)v.u.l->n;
    case JV_DICT: case JV_NS: return (int64_t)v.u.d->n;
    case JV_UNDEF: return 0;
    default: jx_fail(c, line, "object of type '%s' has no len()", jv_kind_name(v));
    }
}

/* attribute path "a.b" lookup as Jinja's make_attrgetter (item lookup, then attribute) */
static jv attr_path(jctx *c, int line, jv obj, jv attr) {
    if (attr.k == JV_INT) return jx_getitem(c, line, obj, attr);
    if (attr.k != JV_STR) jx_fail(c, line, "attribute name must be a string");
    const char *s = attr.u.s;
    size_t n = attr.n, st = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (obj.k == JV_UNDEF) return obj;
            int digits = i > st;
            for (size_t k = st; k < i; k++) digits &= s[k] >= '0' && s[k] <= '9';
            if (digits) obj = jx_getitem(c, line, obj, jv_int(strtoll(s + st, NULL, 10)));
            else obj = jx_getattr(c, line, obj, s + st, i - st);
            st = i + 1;
        }
    }
    return obj;
}

/* stable merge sort by key with jx_compare */
typedef struct sortctx {
    jctx *c;
    int line, reverse;
} sortctx;
static int key_cmp(sortctx *sc, jv a, jv b) {
    int r = jx_compare(sc->c, sc->line, a, b);
    return sc->reverse ? -r : r;
}
static void msort(sortctx *sc, jv *keys, jv *vals, jv *tk, jv *tv, size_t n) {
    if (n < 2) return;
    size_t h = n / 2;
    msort(sc, keys, vals, tk, tv, h);
    msort(sc, keys + h, vals + h, tk, tv, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        if (key_cmp(sc, keys[j], keys[i]) < 0) {
            tk[k] = keys[j];
            tv[k++] = vals[j++];
        } else {
            tk[k] = keys[i];
            tv[k++] = vals[i++];
        }
    }
    while (i < h) {
        tk[k] = keys[i];
        tv[k++] = vals[i++];
    }
    while (j < n) {
        tk[k] = keys[j];
        tv[k++] = vals[j++];
    }
    memcpy(keys, tk, n * sizeof(jv));
    memcpy(vals, tv, n * sizeof(jv));
}
static jv sort_list(jctx *c, int line, jv items, jv *keys, int reverse) {
    size_t n = items.u.l->n;
    jv out = jv_list_new(c, n);
    jv *vals = jx_alloc(c, (n + 1) * sizeof(jv)), *tk = jx_alloc(c, (n + 1) * sizeof(jv)), *tv = jx_alloc(c, (n + 1) * sizeof(jv));
    if (n) memcpy(vals, items.u.l->v, n * sizeof(jv)); /* an empty list may have no array */
    sortctx sc = {c, line, reverse};
    msort(&sc, keys, vals, tk, tv, n);
    for (size_t i = 0; i < n; i++) jv_list_push(c, out, vals[i]);
    return out;
}
static jv sort_key(jctx *c, jv v, int case_sensitive) {
    if (!case_sensitive && v.k == JV_STR) return ju_case_map(c, v, JU_LOWER);
    return v;
}

static jv pair(jctx *c, jv a, jv b) {
    jv t = jv_list_new(c, 2);
    jv_list_push(c, t, a);
    jv_list_push(c, t, b);
    t.tuple = 1;
    return t;
}

static jv select_common(jctx *c, int line, jv v, jv *args, int nargs, int use_attr, int want) {
    jv out = jv_list_new(c, 0);
    out.gen = JG_GENERATOR;
    if (!jv_truthy(v)) return out; /* Jinja iterates only a truthy sequence */
    jv items = jx_iter_list(c, line, v);
    int off = use_attr ? 1 : 0;
    if (use_attr && nargs < 1) jx_fail(c, line, "selectattr/rejectattr need an attribute name");
    for (size_t i = 0; i < items.u.l->n; i++) {
        jv it = items.u.l->v[i];
        jv x = use_attr ? attr_path(c, line, it, args[0]) : it;
        int r;
        if (nargs > off) {
            if (args[off].k != JV_STR) jx_fail(c, line, "test name must be a string");
            r = jx_test(c, line, args[off].u.s, args[off].n, x, args + off + 1, nargs - off - 1);
        } else {
            r = jv_truthy(x);
        }
        if (r == want) jv_list_push(c, out, it);
    }
    out.gen = JG_GENERATOR;
    return out;
}

static jv do_tojson(jctx *c, int line, jv v, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    jv ea = jx_arg(args, nargs, kwn, kwv, nkw, 0, "ensure_ascii", jv_bool(0));
    jv ind = jx_arg(args, nargs, kwn, kwv, nkw, 1, "indent", jv_none());
    jv sep = jx_arg(args, nargs, kwn, kwv, nkw, 2, "separators", jv_none());
    jv sk = jx_arg(args, nargs, kwn, kwv, nkw, 3, "sort_keys", jv_bool(0));
    int indent = -1;
    const char *indent_str = NULL;
    if (ind.k == JV_INT) indent = ind.u.i < 0 ? 0 : (int)ind.u.i;
    else if (ind.k == JV_STR) indent_str = jv_str_copy(c, ind.u.s, ind.n).u.s;
    else if (ind.k != JV_NONE) jx_fail(c, line, "tojson: indent must be an int, a string or None");
    if (ind.k == JV_INT && ind.u.i < 0) indent_str = "";
    const char *isep = NULL, *ksep = NULL;
    if (sep.k == JV_LIST && sep.u.l->n == 2 && sep.u.l->v[0].k == JV_STR && sep.u.l->v[1].k == JV_STR) {
        isep = jv_str_copy(c, sep.u.l->v[0].u.s, sep.u.l->v[0].n).u.s;
        ksep = jv_str_copy(c, sep.u.l->v[1].u.s, sep.u.l->v[1].n).u.s;
    } else if (sep.k != JV_NONE) jx_fail(c, line, "tojson: separators must be a pair of strings");
    jbuf b = {0};
    jb_put(c, &b, "", 0);
    jv_tojson(c, line, &b, v, indent, indent_str, isep, ksep, jv_truthy(sk), jv_truthy(ea));
    return jv_strn(b.p, b.n);
}

static jv do_indent(jctx *c, int line, jv s, jv width, int first, int blank) {
    jbuf ind = {0};
    jb_put(c, &ind, "", 0);
    if (width.k == JV_STR) jb_put(c, &ind, width.u.s, width.n);
    else if (width.k == JV_INT && width.u.i > (int64_t)JX_MAX_RENDER_BYTES) jx_fail(c, line, "indent: width too large");
    else if (width.k == JV_INT) for (int64_t i = 0; i < width.u.i; i++) jb_putc(c, &ind, ' ');
    else jx_fail(c, line, "indent: width must be an int or a string");
    /* s += "\n"; split into lines (\n, \r\n, \r) */
    jbuf src = {0};
    jb_put(c, &src, s.u.s, s.n);
    jb_putc(c, &src, '\n');
    jv lines = jv_list_new(c, 0);
    size_t st = 0;
    for (size_t i = 0; i < src.n; i++) {
        if (src.p[i] == '\n' || src.p[i] == '\r') {
            jv_list_push(c, lines, jv_strn(src.p + st, i - st));
            if (src.p[i] == '\r' && i + 1 < src.n && src.p[i + 1] == '\n') i++;
            st = i + 1;
        }
    }
    if (st < src.n) jv_list_push(c, lines, jv_strn(src.p + st, src.n - st));
    jbuf out = {0};
    jb_put(c, &out, "", 0);
    if (first) jb_put(c, &out, ind.p, ind.n);
    for (size_t i = 0; i < lines.u.l->n; i++) {
        jv ln = lines.u.l->v[i];
        if (i) {
            jb_putc(c, &out, '\n');
            if (blank || ln.n) jb_put(c, &out, ind.p, ind.n);
        }
        jb_put(c, &out, ln.u.s, ln.n);
    }
    return jv_strn(out.p, out.n);
}

/* int() of a float: truncated; infinity fails as Python's OverflowError does, NaN (a ValueError,
 * which Jinja's int filter catches) gives dflt; beyond 64 bits is an error (Python's would grow). */
static jv float_to_int(jctx *c, int line, double f, jv dflt) {
    if (isnan(f)) return dflt;
    if (isinf(f)) jx_fail(c, line, "cannot convert float infinity to integer");
    if (!(f > -9223372036854775808.0 && f < 9223372036854775808.0))
        jx_fail(c, line, "integer overflow: %g does not fit in 64 bits", f);
    return jv_int((int64_t)f);
}

/* Jinja's int filter: int(v, base) for strings, else int(v); on failure int(float(v)), else dflt.
 * A base Python refuses (not 0 or 2..36) fails the first step, as there. */
static jv to_int(jctx *c, int line, jv v, jv dflt, int64_t base) {
    switch (v.k) {
    case JV_INT: case JV_BOOL: return jv_int(v.u.i);
    case JV_FLOAT: return float_to_int(c, line, v.u.f, dflt);
    case JV_STR: {
        int64_t x;
        int r = jx_py_int(v.u.s, v.n, base >= 0 && base <= 36 ? (int)base : -1, &x);
        if (r == JX_NUM_OVERFLOW) jx_fail(c, line, "integer overflow: '%.*s' does not fit in 64 bits", (int)(v.n < 40 ? v.n : 40), v.u.s);
        if (r == 0) return jv_int(x);
        double f;
        return jx_py_float(v.u.s, v.n, &f) ? dflt : float_to_int(c, line, f, dflt);
    }
    default: return dflt;
    }
}

/* Jinja's round filter: Python's round(value, precision) for "common" (an int stays an int),
 * else math.floor/ceil(value * 10**precision) / 10**precision, a float. */
static jv do_round(jctx *c, int line, jv v, jv prec, jv method) {
    int common = jv_is_str(method, "common"), floor_m = jv_is_str(method, "floor");
    if (!common && !floor_m && !jv_is_str(method, "ceil")) jx_fail(c, line, "method must be common, ceil or floor");
    int is_int = v.k == JV_INT || v.k == JV_BOOL;
    if (!is_int && v.k != JV_FLOAT) jx_fail(c, line, "type %s doesn't define __round__ method", jv_kind_name(v));
    int prec_int = prec.k == JV_INT || prec.k == JV_BOOL;
    if (common) {
        if (!prec_int) jx_fail(c, line, "'%s' object cannot be interpreted as an integer", jv_kind_name(prec));
        if (is_int) {
            int64_t r;
            if (jx_py_round_int(v.u.i, prec.u.i, &r)) jx_fail(c, line, "integer overflow: the result does not fit in 64 bits");
            return jv_int(r);
        }
        double r = jx_py_round_float(v.u.f, prec.u.i);
        if (isinf(r) && !isinf(v.u.f)) jx_fail(c, line, "rounded value too large to represent");
        return jv_float(r);
    }
    if (!prec_int && prec.k != JV_FLOAT) jx_fail(c, line, "unsupported operand type(s) for ** or pow(): 'int' and '%s'", jv_kind_name(prec));
    if (is_int && prec_int && prec.u.i >= 0) return jv_float((double)v.u.i); /* exact: v * 10**p / 10**p */
    double m = pow(10.0, prec_int ? (double)prec.u.i : prec.u.f);
    double y = (is_int ? (double)v.u.i : v.u.f) * m;
    if (isnan(y)) jx_fail(c, line, "cannot convert float NaN to integer");
    if (isinf(y)) jx_fail(c, line, "cannot convert float infinity to integer");
    return jv_float((floor_m ? floor(y) : ceil(y)) / m);
}

/* Jinja's truncate filter (truncate.leeway policy 5): s cut to length code points, ending in end;
 * unless killwords, the cut goes back to the last space. */
static jv do_truncate(jctx *c, int line, jv s, jv length, jv killwords, jv end, jv leeway) {
    if (s.k == JV_UNDEF) return s;
    if (s.k != JV_STR) jx_fail(c, line, "truncate: a string is required, not %s", jv_kind_name(s));
    if (length.k != JV_INT || end.k != JV_STR || (leeway.k != JV_INT && leeway.k != JV_NONE))
        jx_fail(c, line, "truncate: length and leeway must be integers, end a string");
    int64_t lee = leeway.k == JV_INT ? leeway.u.i : 5, end_len = (int64_t)ju_len(end.u.s, end.n);
    if (length.u.i < end_len) jx_fail(c, line, "expected length >= %lld, got %lld", (long long)end_len, (long long)length.u.i);
    if (lee < 0) jx_fail(c, line, "expected leeway >= 0, got %lld", (long long)lee);
    int64_t len = (int64_t)ju_len(s.u.s, s.n);
    if (len <= length.u.i || len - length.u.i <= lee) return s;
    size_t cut = ju_offset(s.u.s, s.n, (size_t)(length.u.i - end_len));
    if (!jv_truthy(killwords)) {
        size_t sp = cut;
        while (sp > 0 && s.u.s[sp - 1] != ' ') sp--;
        if (sp > 0) cut = sp - 1;
    }
    jbuf b = {0};
    jb_put(c, &b, s.u.s, cut);
    jb_put(c, &b, end.u.s, end.n);
    return jv_strn(b.p, b.n);
}

/* value|format(*args) = str(value) % args (a tuple); value|format(**kwargs) = str(value) % kwargs
 * (a dict); both at once is refused, as Jinja's do_format refuses it. A markup value stays markup. */
static jv do_format(jctx *c, int line, jv v, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    if (nargs && nkw) jx_fail(c, line, "format: can't handle positional and keyword arguments at the same time");
    jv vals;
    if (nkw) {
        vals = jv_dict_new(c, (size_t)nkw);
        for (int i = 0; i < nkw; i++) jv_dict_set(c, vals.u.d, jv_cstr(kwn[i]), kwv[i]);
    } else {
        vals = jv_list_new(c, (size_t)nargs);
        for (int i = 0; i < nargs; i++) jv_list_push(c, vals, args[i]);
        vals.tuple = 1;
    }
    return jx_percent_format(c, line, as_str(c, v), vals);
}

const char *const jx_filter_names[] = {
    "tojson", "safe", "string", "format", "length", "count", "trim", "upper", "lower", "capitalize", "title", "replace",
    "default", "d", "join", "list", "first", "last", "reverse", "items", "dictsort", "sort", "unique", "selectattr",
    "rejectattr", "select", "reject", "map", "indent", "wordcount", "int", "float", "abs", "round", "truncate", "center",
    "sum", "min", "max", "attr", "e", "escape", "forceescape", NULL};

const char *const jx_test_names[] = {
    "defined", "undefined", "none", "boolean", "true", "false", "integer", "float", "number", "string", "mapping",
    "iterable", "sequence", "callable", "sameas", "escaped", "lower", "upper", "even", "odd", "divisibleby", "in",
    "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", NULL};

jv jx_filter(jctx *c, int line, const char *name, size_t n, jv v, jv *args, int nargs, const char **kwn, jv *kwv,
             int nkw) {
#define ARG(i, nm, d) jx_arg(args, nargs, kwn, kwv, nkw, (i), (nm), (d))
    if (NAMEQ(name, n, "tojson")) return do_tojson(c, line, v, args, nargs, kwn, kwv, nkw);
    if (NAMEQ(name, n, "safe")) {
        jv s = as_str(c, v);
        s.gen = JG_MARKUP;
        return s;
    }
    if (NAMEQ(name, n, "string")) return as_str(c, v);
    if (NAMEQ(name, n, "format")) return do_format(c, line, v, args, nargs, kwn, kwv, nkw);
    if (NAMEQ(name, n, "length") || NAMEQ(name, n, "count")) return jv_int(to_len(c, line, v));
    if (NAMEQ(name, n, "trim")) {
        jv s = as_str(c, v);
        int found;
        jv chars = ARG(0, "chars", jv_none());
        return jx_method(c, line, s, "strip", 5, &chars, 1, NULL, NULL, 0, &found);
    }
    if (NAMEQ(name, n, "upper")) return ju_case_map(c, as_str(c, v), JU_UPPER);
    if (NAMEQ(name, n, "lower")) return ju_case_map(c, as_str(c, v), JU_LOWER);
    if (NAMEQ(name, n, "capitalize")) return ju_case_map(c, as_str(c, v), JU_CAPITALIZE);
    if (NAMEQ(name, n, "title")) return jx_jinja_title(c, as_str(c, v));
    if (NAMEQ(name, n, "replace")) {
        int found;
        jv s = as_str(c, v);
        jv a3[3] = {ARG(0, "old", jv_undef(NULL)), ARG(1, "new", jv_undef(NULL)), ARG(2, "count", jv_none())};
        if (a3[0].k == JV_UNDEF || a3[1].k == JV_UNDEF) jx_fail(c, line, "replace needs old and new strings");
        return jx_method(c, line, s, "replace", 7, a3, a3[2].k == JV_NONE ? 2 : 3, NULL, NULL, 0, &found);
    }
    if (NAMEQ(name, n, "default") || NAMEQ(name, n, "d")) {
        jv d = ARG(0, "default_value", jv_strn("", 0));
        int boolean = jv_truthy(ARG(1, "boolean", jv_bool(0)));
        if (v.k == JV_UNDEF || (boolean && !jv_truthy(v))) return d;
        return v;
    }
    if (NAMEQ(name, n, "join")) {
        jv sep = ARG(0, "d", jv_strn("", 0));
        jv attr = ARG(1, "attribute", jv_none());
        jv items = jx_iter_list(c, line, v);
        jbuf b = {0};
        jb_put(c, &b, "", 0);
        for (size_t i = 0; i < items.u.l->n; i++) {
            if (i) jv_to_str(c, &b, sep);
            jv it = items.u.l->v[i];
            if (attr.k != JV_NONE) it = attr_path(c, line, it, attr);
            jv_to_str(c, &b, it);
        }
        return jv_strn(b.p, b.n);
    }
    if (NAMEQ(name, n, "list")) {
        jv items = jx_iter_list(c, line, v);
        jv out = jv_list_new(c, items.u.l->n);
        for (size_t i = 0; i < items.u.l->n; i++) jv_list_push(c, out, items.u.l->v[i]);
        return out;
    }
    if (NAMEQ(name, n, "first") || NAMEQ(name, n, "last")) {
        if (NAMEQ(name, n, "last") && v.k == JV_LIST && (v.gen == JG_GENERATOR || v.gen == JG_REVITER))
            jx_fail(c, line, "'%s' object is not reversible", jv_kind_name(v));
        jv items = jx_iter_list(c, line, v);
        if (!items.u.l->n) return jv_undef("No first item, sequence was empty.");
        return items.u.l->v[NAMEQ(name, n, "first") ? 0 : items.u.l->n - 1];
    }
    if (NAMEQ(name, n, "reverse")) {
        if (v.k == JV_STR) {
            jv chars = jx_iter_list(c, line, v);
            jbuf b = {0};
            jb_put(c, &b, "", 0);
            for (size_t i = chars.u.l->n; i-- > 0;) jb_put(c, &b, chars.u.l->v[i].u.s, chars.u.l->v[i].n);
            return jv_strn(b.p, b.n);
        }
        jv items = jx_iter_list(c, line, v);
        jv out = jv_list_new(c, items.u.l->n);
        for (size_t i = items.u.l->n; i-- > 0;) jv_list_push(c, out, items.u.l->v[i]);
        /* reversed(list) is an iterator; a generator is first turned into a list */
        out.gen = (v.k == JV_LIST && !v.gen) ? JG_REVITER : JG_NONE;
        return out;
    }
    if (NAMEQ(name, n, "items")) {
        if (v.k == JV_UNDEF) return jv_list_new(c, 0);
        if (v.k != JV_DICT && v.k != JV_NS) jx_fail(c, line, "items: can only get item pairs from a mapping");
        jv out = jv_list_new(c, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) jv_list_push(c, out, pair(c, v.u.d->keys[i], v.u.d->vals[i]));
        out.gen = JG_GENERATOR;
        return out;
    }
    if (NAMEQ(name, n, "dictsort")) {
        if (v.k != JV_DICT) jx_fail(c, line, "dictsort: a mapping is required");
        int cs = jv_truthy(ARG(0, "case_sensitive", jv_bool(0)));
        jv by = ARG(1, "by", jv_cstr("key"));
        int rev = jv_truthy(ARG(2, "reverse", jv_bool(0)));
        int pos = jv_is_str(by, "value") ? 1 : 0;
        if (!pos && !jv_is_str(by, "key")) jx_fail(c, line, "dictsort: by must be 'key' or 'value'");
        jv items = jv_list_new(c, v.u.d->n);
        jv *keys = jx_alloc(c, (v.u.d->n + 1) * sizeof(jv));
        for (size_t i = 0; i < v.u.d->n; i++) {
            jv_list_push(c, items, pair(c, v.u.d->keys[i], v.u.d->vals[i]));
            keys[i] = sort_key(c, pos ? v.u.d->vals[i] : v.u.d->keys[i], cs);
        }
        return sort_list(c, line, items, keys, rev);
    }
    if (NAMEQ(name, n, "sort")) {
        int rev = jv_truthy(ARG(0, "reverse", jv_bool(0)));
        int cs = jv_truthy(ARG(1, "case_sensitive", jv_bool(0)));
        jv attr = ARG(2, "attribute", jv_none());
        jv items = jx_iter_list(c, line, v);
        jv *keys = jx_alloc(c, (items.u.l->n + 1) * sizeof(jv));
        for (size_t i = 0; i < items.u.l->n; i++) {
            jv it = items.u.l->v[i];
            if (attr.k != JV_NONE) it = attr_path(c, line, it, attr);
            keys[i] = sort_key(c, it, cs);
        }
        return sort_list(c, line, items, keys, rev);
    }
    if (NAMEQ(name, n, "unique")) {
        int cs = jv_truthy(ARG(0, "case_sensitive", jv_bool(0)));
        jv attr = ARG(1, "attribute", jv_none());
        jv items = jx_iter_list(c, line, v);
        jv out = jv_list_new(c, 0), seen = jv_list_new(c, 0);
        for (size_t i = 0; i < items.u.l->n; i++) {
            jv it = items.u.l->v[i], k = it;
            if (attr.k != JV_NONE) k = attr_path(c, line, it, attr);
            k = sort_key(c, k, cs);
            int dup = 0;
            for (size_t j = 0; j < seen.u.l->n && !dup; j++) dup = jv_equal(seen.u.l->v[j], k);
            if (!dup) {
                jv_list_push(c, seen, k);
                jv_list_push(c, out, it);
            }
        }
        out.gen = JG_GENERATOR;
        return out;
    }
    if (NAMEQ(name, n, "selectattr")) return select_common(c, line, v, args, nargs, 1, 1);
    if (NAMEQ(name, n, "rejectattr")) return select_common(c, line, v, args, nargs, 1, 0);
    if (NAMEQ(name, n, "select")) return select_common(c, line, v, args, nargs, 0, 1);
    if (NAMEQ(name, n, "reject")) return select_common(c, line, v, args, nargs, 0, 0);
    if (NAMEQ(name, n, "map")) {
        jv out = jv_list_new(c, 0);
        out.gen = JG_GENERATOR;
        if (!jv_truthy(v)) return out; /* Jinja iterates only a truthy sequence */
        jv items = jx_iter_list(c, line, v);
        jv attr = ARG(-1, "attribute", jv_undef(NULL));
        if (attr.k != JV_UNDEF) {
            jv dflt = ARG(-1, "default", jv_undef(NULL));
            for (size_t i = 0; i < items.u.l->n; i++) {
                jv x = attr_path(c, line, items.u.l->v[i], attr);
                if (x.k == JV_UNDEF && dflt.k != JV_UNDEF) x = dflt;
                jv_list_push(c, out, x);
            }
            out.gen = JG_GENERATOR;
            return out;
        }
        if (nargs < 1 || args[0].k != JV_STR) jx_fail(c, line, "map needs a filter name or attribute=");
        for (size_t i = 0; i < items.u.l->n; i++)
            jv_list_push(c, out, jx_filter(c, line, args[0].u.s, args[0].n, items.u.l->v[i], args + 1, nargs - 1, kwn, kwv, nkw));
        out.gen = JG_GENERATOR;
        return out;
    }
    if (NAMEQ(name, n, "indent")) {
        return do_indent(c, line, as_str(c, v), ARG(0, "width", jv_int(4)), jv_truthy(ARG(1, "first", jv_bool(0))),
                         jv_truthy(ARG(2, "blank", jv_bool(0))));
    }
    if (NAMEQ(name, n, "wordcount")) {
        jv s = as_str(c, v);
        int64_t k = 0;
        int in = 0;
        for (size_t i = 0; i < s.n;) {
            size_t adv;
            int32_t cp = ju_decode(s.u.s + i, s.n - i, &adv);
            int w = is_word_cp(cp);
            if (w && !in) k++;
            in = w;
            i += adv;
        }
        return jv_int(k);
    }
    if (NAMEQ(name, n, "int")) {
        jv d = ARG(0, "default", jv_int(0));
        jv base = ARG(1, "base", jv_int(10));
        return to_int(c, line, v, d, base.k == JV_INT || base.k == JV_BOOL ? base.u.i : -1);
    }
    if (NAMEQ(name, n, "float")) {
        jv d = ARG(0, "default", jv_float(0.0));
        double f;
        if (v.k == JV_FLOAT) return v;
        if (v.k == JV_INT || v.k == JV_BOOL) return jv_float((double)v.u.i);
        if (v.k == JV_STR) return jx_py_float(v.u.s, v.n, &f) ? d : jv_float(f);
        return d;
    }
    if (NAMEQ(name, n, "abs")) {
        if (v.k == JV_INT || v.k == JV_BOOL) return jv_int(v.u.i < 0 ? -v.u.i : v.u.i);
        if (v.k == JV_FLOAT) return jv_float(fabs(v.u.f));
        jx_fail(c, line, "bad operand type for abs(): '%s'", jv_kind_name(v));
    }
    if (NAMEQ(name, n, "round")) return do_round(c, line, v, ARG(0, "precision", jv_int(0)), ARG(1, "method", jv_cstr("common")));
    if (NAMEQ(name, n, "truncate"))
        return do_truncate(c, line, v, ARG(0, "length", jv_int(255)), ARG(1, "killwords", jv_bool(0)), ARG(2, "end", jv_cstr("...")),
                           ARG(3, "leeway", jv_none()));
    if (NAMEQ(name, n, "center")) {
        int found;
        jv width = ARG(0, "width", jv_int(80));
        return jx_method(c, line, as_str(c, v), "center", 6, &width, 1, NULL, NULL, 0, &found);
    }
    if (NAMEQ(name, n, "sum")) {
        jv attr = ARG(0, "attribute", jv_none());
        jv acc = ARG(1, "start", jv_int(0));
        jv items = jx_iter_list(c, line, v);
        for (size_t i = 0; i < items.u.l->n; i++) {
            jv x = items.u.l->v[i];
            if (attr.k != JV_NONE) x = attr_path(c, line, x, attr);
            if (acc.k == JV_FLOAT || x.k == JV_FLOAT) {
                double a = acc.k == JV_FLOAT ? acc.u.f : (double)acc.u.i, b;
                if (x.k == JV_FLOAT) b = x.u.f;
                else if (x.k == JV_INT || x.k == JV_BOOL) b = (double)x.u.i;
                else jx_fail(c, line, "sum: unsupported operand '%s'", jv_kind_name(x));
                acc = jv_float(a + b);
            } else if (x.k == JV_INT || x.k == JV_BOOL) {
                acc = jv_int(acc.u.i + x.u.i);
            } else jx_fail(c, line, "sum: unsupported operand '%s'", jv_kind_name(x));
        }
        return acc;
    }
    if (NAMEQ(name, n, "min") || NAMEQ(name, n, "max")) {
        int want_max = NAMEQ(name, n, "max");
        int cs = jv_truthy(ARG(0, "case_sensitive", jv_bool(0)));
        jv attr = ARG(1, "attribute", jv_none());
        jv items = jx_iter_list(c, line, v);
        if (!items.u.l->n) return jv_undef("No aggregated item, sequence was empty.");
        jv best = items.u.l->v[0];
        jv bk = sort_key(c, attr.k != JV_NONE ? attr_path(c, line, best, attr) : best, cs);
        for (size_t i = 1; i < items.u.l->n; i++) {
            jv it = items.u.l->v[i];
            jv k = sort_key(c, attr.k != JV_NONE ? attr_path(c, line, it, attr) : it, cs);
            int r = jx_compare(c, line, k, bk);
            if (want_max ? r > 0 : r < 0) {
                best = it;
                bk = k;
            }
        }
        return best;
    }
    if (NAMEQ(name, n, "attr")) {
        jv a = ARG(0, "name", jv_undef(NULL));
        if (a.k != JV_STR) jx_fail(c, line, "attr needs a name");
        if (v.k == JV_UNDEF) return v;
        if (v.k == JV_NS) return jx_getattr(c, line, v, a.u.s, a.n);
        return jv_undef("attr: no such attribute"); /* getattr only: dict keys are not attributes */
    }
    if (NAMEQ(name, n, "e") || NAMEQ(name, n, "escape") || NAMEQ(name, n, "forceescape")) {
        if (v.k == JV_STR && v.gen == JG_MARKUP && !NAMEQ(name, n, "forceescape")) return v;
        return jx_html_escape(c, as_str(c, v));
    }
    jx_fail(c, line, "unsupported filter '%.*s'", (int)n, name);
#undef ARG
}

jv jx_html_escape(jctx *c, jv s) {
    {
        jbuf b = {0};
        jb_put(c, &b, "", 0);
        for (size_t i = 0; i < s.n; i++) {
            switch (s.u.s[i]) {
            case '&': jb_puts(c, &b, "&amp;"); break;
            case '<': jb_puts(c, &b, "&lt;"); break;
            case '>': jb_puts(c, &b, "&gt;"); break;
            case '"': jb_puts(c, &b, "&#34;"); break;
            case '\'': jb_puts(c, &b, "&#39;"); break;
            default: jb_putc(c, &b, s.u.s[i]);
            }
        }
        jv r = jv_strn(b.p, b.n);
        r.gen = JG_MARKUP;
        return r;
    }
}

static int is_int_like(jv v) { return v.k == JV_INT || v.k == JV_BOOL; }

int jx_test(jctx *c, int line, const char *name, size_t n, jv v, jv *args, int nargs) {
    jv a0 = nargs > 0 ? args[0] : jv_undef(NULL);
    if (NAMEQ(name, n, "defined")) return v.k != JV_UNDEF;
    if (NAMEQ(name, n, "undefined")) return v.k == JV_UNDEF;
    if (NAMEQ(name, n, "none")) return v.k == JV_NONE;
    if (NAMEQ(name, n, "boolean")) return v.k == JV_BOOL;
    if (NAMEQ(name, n, "true")) return v.k == JV_BOOL && v.u.i;
    if (NAMEQ(name, n, "false")) return v.k == JV_BOOL && !v.u.i;
    if (NAMEQ(name, n, "integer")) return v.k == JV_INT;
    if (NAMEQ(name, n, "float")) return v.k == JV_FLOAT;
    if (NAMEQ(name, n, "number")) return v.k == JV_INT || v.k == JV_FLOAT || v.k == JV_BOOL;
    if (NAMEQ(name, n, "string")) return v.k == JV_STR;
    if (NAMEQ(name, n, "mapping")) return v.k == JV_DICT;
    if (NAMEQ(name, n, "iterable")) return v.k == JV_STR || v.k == JV_LIST || v.k == JV_DICT || v.k == JV_UNDEF;
    if (NAMEQ(name, n, "sequence")) return v.k == JV_STR || (v.k == JV_LIST && !v.gen) || v.k == JV_DICT;
    if (NAMEQ(name, n, "callable")) return v.k == JV_FUNC || v.k == JV_UNDEF; /* Undefined has __call__ */
    if (NAMEQ(name, n, "sameas")) {
        if (v.k != a0.k) return 0;
        if (v.k == JV_NONE || v.k == JV_UNDEF) return 1;
        if (v.k == JV_BOOL) return v.u.i == a0.u.i;
        if (v.k == JV_LIST) return v.u.l == a0.u.l;
        if (v.k == JV_DICT || v.k == JV_NS) return v.u.d == a0.u.d;
        return jv_equal(v, a0) && v.k != JV_STR ? 1 : (v.k == JV_STR && v.u.s == a0.u.s && v.n == a0.n);
    }
    if (NAMEQ(name, n, "escaped")) return v.k == JV_STR && v.gen == JG_MARKUP;
    if (NAMEQ(name, n, "lower") || NAMEQ(name, n, "upper")) {
        if (v.k != JV_STR) return 0;
        jv m = ju_case_map(c, v, NAMEQ(name, n, "upper") ? JU_UPPER : JU_LOWER);
        return jv_equal(m, v);
    }
    if (NAMEQ(name, n, "even") || NAMEQ(name, n, "odd")) {
        if (!is_int_like(v)) jx_fail(c, line, "test '%.*s' needs an integer", (int)n, name);
        int even = (v.u.i % 2) == 0;
        return NAMEQ(name, n, "even") ? even : !even;
    }
    if (NAMEQ(name, n, "divisibleby")) {
        if (!is_int_like(v) || !is_int_like(a0) || !a0.u.i) jx_fail(c, line, "divisibleby needs integers");
        return v.u.i % a0.u.i == 0;
    }
    if (nargs < 1 && (NAMEQ(name, n, "in") || NAMEQ(name, n, "eq") || NAMEQ(name, n, "equalto") || NAMEQ(name, n, "==") ||
                      NAMEQ(name, n, "ne") || NAMEQ(name, n, "!=") || NAMEQ(name, n, "lt") || NAMEQ(name, n, "lessthan") ||
                      NAMEQ(name, n, "<") || NAMEQ(name, n, "gt") || NAMEQ(name, n, "greaterthan") || NAMEQ(name, n, ">") ||
                      NAMEQ(name, n, "le") || NAMEQ(name, n, "<=") || NAMEQ(name, n, "ge") || NAMEQ(name, n, ">=")))
        jx_fail(c, line, "test '%.*s' needs an argument", (int)n, name);
    if (NAMEQ(name, n, "in")) {
        if (a0.k == JV_STR && v.k == JV_STR) {
            if (!v.n) return 1;
            for (size_t i = 0; i + v.n <= a0.n; i++)
                if (!memcmp(a0.u.s + i, v.u.s, v.n)) return 1;
            return 0;
        }
        jv items = jx_iter_list(c, line, a0);
        if (a0.k == JV_DICT) {
            jv o;
            return jv_dict_get(a0.u.d, v, &o);
        }
        for (size_t i = 0; i < items.u.l->n; i++)
            if (jv_equal(items.u.l->v[i], v)) return 1;
        return 0;
    }
    if (NAMEQ(name, n, "eq") || NAMEQ(name, n, "equalto") || NAMEQ(name, n, "==")) return jv_equal(v, a0);
    if (NAMEQ(name, n, "ne") || NAMEQ(name, n, "!=")) return !jv_equal(v, a0);
    if (NAMEQ(name, n, "lt") || NAMEQ(name, n, "lessthan") || NAMEQ(name, n, "<")) return jx_compare(c, line, v, a0) < 0;
    if (NAMEQ(name, n, "le") || NAMEQ(name, n, "<=")) return jx_compare(c, line, v, a0) <= 0;
    if (NAMEQ(name, n, "gt") || NAMEQ(name, n, "greaterthan") || NAMEQ(name, n, ">")) return jx_compare(c, line, v, a0) > 0;
    if (NAMEQ(name, n, "ge") || NAMEQ(name, n, ">=")) return jx_compare(c, line, v, a0) >= 0;
    jx_fail(c, line, "unsupported test '%.*s'", (int)n, name);
}

/* ---- global functions ---- */
static jv g_raise_exception(jctx *c, int line, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    jv msg = jx_arg(args, nargs, kwn, kwv, nkw, 0, "message", jv_cstr(""));
    jv s = jv_stringify(c, msg);
    jx_fail(c, line, "raise_exception: %.*s", (int)s.n, s.u.s);
}

static jv g_strftime_now(jctx *c, int line, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    jv fmt = jx_arg(args, nargs, kwn, kwv, nkw, 0, "format", jv_undef(NULL));
    if (fmt.k != JV_STR) jx_fail(c, line, "strftime_now needs a format string");
    char f[256], out[512];
    if (fmt.n >= sizeof f) jx_fail(c, line, "strftime_now: format too long");
    memcpy(f, fmt.u.s, fmt.n);
    f[fmt.n] = 0;
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    size_t k = strftime(out, sizeof out, f, &tmv);
    return jv_str_copy(c, out, k);
}

static jv g_namespace(jctx *c, int line, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    jv ns = jv_dict_new(c, (size_t)nkw + 4);
    ns.k = JV_NS;
    for (int i = 0; i < nargs; i++) {
        if (args[i].k != JV_DICT) jx_fail(c, line, "namespace() positional arguments must be mappings");
        for (size_t k = 0; k < args[i].u.d->n; k++) jv_dict_set(c, ns.u.d, args[i].u.d->keys[k], args[i].u.d->vals[k]);
    }
    for (int i = 0; i < nkw; i++) jv_dict_set(c, ns.u.d, jv_cstr(kwn[i]), kwv[i]);
    return ns;
}

static jv g_dict(jctx *c, int line, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    jv ns = g_namespace(c, line, args, nargs, kwn, kwv, nkw);
    ns.k = JV_DICT;
    return ns;
}

static jv g_range(jctx *c, int line, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    (void)kwn;
    (void)kwv;
    if (nkw || nargs < 1 || nargs > 3) jx_fail(c, line, "range() takes 1 to 3 integer arguments");
    for (int i = 0; i < nargs; i++)
        if (!is_int_like(args[i])) jx_fail(c, line, "range() arguments must be integers");
    int64_t start = 0, stop, step = 1;
    if (nargs == 1) stop = args[0].u.i;
    else {
        start = args[0].u.i;
        stop = args[1].u.i;
        if (nargs == 3) step = args[2].u.i;
    }
    if (!step) jx_fail(c, line, "range() arg 3 must not be zero");
    jv out = jv_list_new(c, 0);
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (out.u.l->n >= 100000) jx_fail(c, line, "range too big");
        jv_list_push(c, out, jv_int(i));
        if (jx_add_overflows(i, step)) break;
    }
    return out;
}

jbuiltin_fn jx_global_fn(const char *name) {
    if (!strcmp(name, "raise_exception")) return g_raise_exception;
    if (!strcmp(name, "strftime_now")) return g_strftime_now;
    if (!strcmp(name, "namespace")) return g_namespace;
    if (!strcmp(name, "dict")) return g_dict;
    if (!strcmp(name, "range")) return g_range;
    return NULL;
}
