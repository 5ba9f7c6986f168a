/* Python's printf-style string formatting for the chat-template interpreter: `fmt % args` and the
 * format filter, with Python's semantics and error messages (the reference for them: CPython's
 * PyUnicode_Format in Objects/unicodeobject.c): %(key) lookups in a mapping, flags - + space # 0, width and precision (or * taken from the arguments), conversions
 * s r a d i u o x X e E f F g G c and %%. A markup format string
 * (|safe, |e) HTML-escapes its arguments as markupsafe's Markup.__mod__ does. Numbers are 64-bit ints
 * and doubles; the digits of %e/%f/%g come from the C library's printf, which rounds as Python does.
 * Widths and precisions count code points. The helpers that str.format shares (jinja_fmt.h) live
 * here too. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "chat/jinja_fmt.h"

enum { F_LJUST = 1, F_SIGN = 2, F_BLANK = 4, F_ALT = 8, F_ZERO = 16 };

#define MAX_NUM JF_MAX_NUM

typedef struct fstate {
    jctx *c;
    int line;
    const char *s;          /* format string */
    size_t n, pos;          /* its length, the next byte to read */
    jv args;                /* the right operand */
    jv cur;                 /* the operand, or the value of the last %(key) */
    int64_t argidx, arglen; /* a tuple: next index and length; one value: -2 and -1 */
    int mapping;            /* operand is a mapping (dict, list, Undefined): %(key) allowed, surplus no error */
    int markup;             /* format string is markup: arguments go through markupsafe's escape */
    jbuf out;
} fstate;

typedef struct fspec {
    int flags;
    int64_t width, prec; /* -1: not given */
    int32_t conv;
} fspec;

/* Fails as the evaluator does on an Undefined operand (its hint names the missing variable). */
static _Noreturn void fail_undefined(fstate *st, jv u) {
    if (u.n) jx_fail(st->c, st->line, "%.*s", (int)u.n, u.u.s);
    jx_fail(st->c, st->line, "value is undefined");
}

/* Python's type name of an argument for messages; under markup every argument is wrapped in
 * markupsafe's helper, which is the name Python then reports. */
static const char *type_name(const fstate *st, jv v) {
    if (st->markup) return "_MarkupEscapeHelper";
    if (v.k == JV_STR && v.gen == JG_MARKUP) return "Markup";
    if (v.k == JV_FUNC && !v.u.fn->builtin) return "Macro";
    return jv_kind_name(v);
}

/* The next argument. */
static jv next_arg(fstate *st) {
    if (st->argidx < st->arglen) {
        int64_t i = st->argidx++;
        return st->arglen < 0 ? st->cur : st->cur.u.l->v[i];
    }
    jx_fail(st->c, st->line, "not enough arguments for format string");
}

/* The operand's value under the key of %(key): dict lookup; a list refuses string indexes. */
static jv map_get(fstate *st, const char *key, size_t n) {
    jv v;
    if (st->args.k == JV_UNDEF) fail_undefined(st, st->args);
    if (st->args.k != JV_DICT)
        jx_fail(st->c, st->line, "%s indices must be integers or slices, not str", jv_kind_name(st->args));
    if (jv_dict_gets(st->args.u.d, key, n, &v)) return v;
    jbuf b = {0};
    jv_repr(st->c, &b, jv_strn(key, n));
    jx_fail(st->c, st->line, "KeyError: %s: the format's mapping has no such key", b.p);
}

void jf_put_repeat(jctx *c, jbuf *b, const char *unit, size_t n, int64_t count) {
    char blk[256];
    if (count <= 0 || !n) return;
    if ((uint64_t)count > JX_MAX_RENDER_BYTES / n) /* fail at once rather than fill up to the limit */
        jx_fail(c, 0, "rendering needs more than %zu MiB", JX_MAX_RENDER_BYTES >> 20);
    size_t per = sizeof blk / n; /* whole units in one block */
    for (size_t i = 0; i < per; i++) memcpy(blk + i * n, unit, n);
    while (count > 0) {
        size_t k = count > (int64_t)per ? per : (size_t)count;
        jb_put(c, b, blk, k * n);
        count -= (int64_t)k;
    }
}

/* Appends count copies of ch. */
static void put_fill(jctx *c, jbuf *b, char ch, int64_t count) { jf_put_repeat(c, b, &ch, 1, count); }

int jf_clip(const char *s, size_t n, size_t max) {
    size_t k = ju_offset(s, n, max);
    if (k > 400) { /* messages hold 900 bytes: cut before a character */
        k = 400;
        while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    }
    return (int)k;
}

/* The next byte of the format string, -1 at its end. */
static int get_ch(fstate *st) { return st->pos < st->n ? (unsigned char)st->s[st->pos++] : -1; }

/* Reads the decimal number whose first digit is ch into *out; returns the character after it. */
static int read_number(fstate *st, int ch, int64_t *out, const char *what) {
    int64_t v = ch - '0';
    while ((ch = get_ch(st)) >= '0' && ch <= '9') {
        if (v > (MAX_NUM - (ch - '0')) / 10) jx_fail(st->c, st->line, "%s too big", what);
        v = v * 10 + (ch - '0');
    }
    *out = v;
    return ch;
}

/* A width or precision given as *: the next argument, an int (a markup helper is none). */
static int64_t star_arg(fstate *st) {
    jv v = next_arg(st);
    if (st->markup || (v.k != JV_INT && v.k != JV_BOOL)) jx_fail(st->c, st->line, "* wants int");
    return v.u.i;
}

/* Parses one conversion spec after its '%': (key), flags, width, precision, length modifier and
 * the conversion character. */
static void parse_spec(fstate *st, fspec *sp) {
    sp->flags = 0;
    sp->width = sp->prec = -1;
    int ch = get_ch(st);
    if (ch == '(') {
        if (!st->mapping) jx_fail(st->c, st->line, "format requires a mapping");
        size_t start = st->pos;
        int depth = 1;
        while (depth > 0) {
            ch = get_ch(st);
            if (ch < 0) jx_fail(st->c, st->line, "incomplete format key");
            depth += ch == '(' ? 1 : ch == ')' ? -1 : 0;
        }
        st->cur = map_get(st, st->s + start, st->pos - 1 - start);
        st->arglen = -1;
        st->argidx = -2;
        ch = get_ch(st);
    }
    for (;; ch = get_ch(st)) {
        int f = ch == '-' ? F_LJUST : ch == '+' ? F_SIGN : ch == ' ' ? F_BLANK : ch == '#' ? F_ALT : ch == '0' ? F_ZERO : 0;
        if (!f) break;
        sp->flags |= f;
    }
    if (ch == '*') {
        int64_t w = star_arg(st);
        if (w > MAX_NUM || w < -MAX_NUM) jx_fail(st->c, st->line, "width too big");
        if (w < 0) sp->flags |= F_LJUST;
        sp->width = w < 0 ? -w : w;
        ch = get_ch(st);
    } else if (ch >= '0' && ch <= '9') {
        ch = read_number(st, ch, &sp->width, "width");
    }
    if (ch == '.') {
        sp->prec = 0;
        ch = get_ch(st);
        if (ch == '*') {
            int64_t p = star_arg(st);
            if (p > MAX_NUM || p < -MAX_NUM - 1) jx_fail(st->c, st->line, "Python int too large to convert to C int");
            sp->prec = p < 0 ? 0 : p;
            ch = get_ch(st);
        } else if (ch >= '0' && ch <= '9') {
            ch = read_number(st, ch, &sp->prec, "precision");
        }
    }
    if (ch == 'h' || ch == 'l' || ch == 'L') ch = get_ch(st);
    if (ch < 0) jx_fail(st->c, st->line, "incomplete format");
    if (ch >= 0x80) { /* a non-ASCII conversion character: the whole code point, for the message */
        size_t adv;
        ch = ju_decode(st->s + st->pos - 1, st->n - st->pos + 1, &adv);
        st->pos += adv - 1;
    }
    sp->conv = ch;
}

void jf_put_ascii(jctx *c, jbuf *b, const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        if (!((unsigned char)s[i] & 0x80)) {
            jb_putc(c, b, s[i++]);
            continue;
        }
        size_t adv;
        uint32_t cp = (uint32_t)ju_decode(s + i, n - i, &adv);
        char tmp[16];
        if (cp < 0x100) snprintf(tmp, sizeof tmp, "\\x%02" PRIx32, cp);
        else if (cp < 0x10000) snprintf(tmp, sizeof tmp, "\\u%04" PRIx32, cp);
        else snprintf(tmp, sizeof tmp, "\\U%08" PRIx32, cp);
        jb_puts(c, b, tmp);
        i += adv;
    }
}

void jf_repr(jctx *c, jbuf *b, jv v) {
    if (v.k == JV_UNDEF) {
        jb_puts(c, b, "Undefined");
    } else if (v.k == JV_STR && v.gen == JG_MARKUP) {
        jb_puts(c, b, "Markup(");
        v.gen = JG_NONE;
        jv_repr(c, b, v);
        jb_putc(c, b, ')');
    } else {
        jv_repr(c, b, v);
    }
}

/* %s, %r, %a: str(), repr() or ascii() of the argument; under markup, escaped (a markup argument
 * stays as it is for %s). */
static void conv_text(fstate *st, const fspec *sp, jv v, jbuf *b) {
    jctx *c = st->c;
    jbuf t = {0};
    jb_put(c, &t, "", 0);
    if (sp->conv == 's') {
        jv_to_str(c, &t, v); /* Undefined: "" */
        if (st->markup && !(v.k == JV_STR && v.gen == JG_MARKUP)) {
            jv e = jx_html_escape(c, jv_strn(t.p, t.n));
            jb_put(c, b, e.u.s, e.n);
        } else {
            jb_put(c, b, t.p, t.n);
        }
        return;
    }
    jf_repr(c, &t, v);
    jv r = st->markup ? jx_html_escape(c, jv_strn(t.p, t.n)) : jv_strn(t.p, t.n);
    if (sp->conv == 'a') jf_put_ascii(c, b, r.u.s, r.n);
    else jb_put(c, b, r.u.s, r.n);
}

/* s without Python's surrounding whitespace (the template's own str.strip()). */
static jv py_strip(fstate *st, jv s) {
    int found;
    return jx_method(st->c, st->line, s, "strip", 5, NULL, 0, NULL, NULL, 0, &found);
}

/* Copies s into out without the underscores Python allows between two digits; 0 when an
 * underscore stands anywhere else. */
static int drop_underscores(jctx *c, jv s, jbuf *out) {
    jb_put(c, out, "", 0);
    for (size_t i = 0; i < s.n; i++) {
        const char *p = s.u.s;
        if (p[i] != '_') {
            jb_putc(c, out, p[i]);
            continue;
        }
        if (i == 0 || i + 1 == s.n || p[i - 1] < '0' || p[i - 1] > '9' || p[i + 1] < '0' || p[i + 1] > '9') return 0;
    }
    return 1;
}

/* int(s) of a string in base 10 (markupsafe's helper converts so): the digits without leading
 * zeros into digits, the sign into *neg; fails as Python on anything else. */
static void str_to_int_digits(fstate *st, jv s, jbuf *digits, int *neg) {
    jbuf t = {0};
    int ok = drop_underscores(st->c, py_strip(st, s), &t);
    const char *p = t.p;
    *neg = 0;
    if (ok && (*p == '+' || *p == '-')) *neg = *p++ == '-';
    ok = ok && *p;
    for (const char *q = p; ok && *q; q++) ok = *q >= '0' && *q <= '9';
    if (!ok) {
        jbuf r = {0};
        jv_repr(st->c, &r, s);
        jx_fail(st->c, st->line, "invalid literal for int() with base 10: %s", r.p);
    }
    while (p[0] == '0' && p[1]) p++;
    if (p[0] == '0') *neg = 0;
    jb_puts(st->c, digits, p);
}

/* float(s) of a string (markupsafe's helper converts so); fails as Python on a non-number. */
static double str_to_double(fstate *st, jv s) {
    jbuf t = {0};
    int ok = drop_underscores(st->c, py_strip(st, s), &t) && t.n > 0 && !strpbrk(t.p, "xX(");
    char *end = NULL;
    double x = ok ? strtod(t.p, &end) : 0;
    if (!ok || *end) {
        jbuf r = {0};
        jv_repr(st->c, &r, s);
        jx_fail(st->c, st->line, "could not convert string to float: %s", r.p);
    }
    return x;
}

/* The decimal digits of int(v) for %d/%i/%u (a float truncates as Python's int()). */
static void int_digits(fstate *st, const fspec *sp, jv v, jbuf *digits, int *neg) {
    char tmp[400];
    *neg = 0;
    if (v.k == JV_INT || v.k == JV_BOOL) {
        *neg = v.u.i < 0;
        snprintf(tmp, sizeof tmp, "%" PRIu64, *neg ? (uint64_t)0 - (uint64_t)v.u.i : (uint64_t)v.u.i);
    } else if (v.k == JV_FLOAT) {
        if (isnan(v.u.f)) jx_fail(st->c, st->line, "cannot convert float NaN to integer");
        if (isinf(v.u.f)) jx_fail(st->c, st->line, "cannot convert float infinity to integer");
        double t = trunc(v.u.f);
        *neg = t < 0;
        snprintf(tmp, sizeof tmp, "%.0f", fabs(t)); /* every integral double, digit for digit */
    } else if (v.k == JV_UNDEF) {
        fail_undefined(st, v);
    } else if (st->markup && v.k == JV_STR) {
        str_to_int_digits(st, v, digits, neg);
        return;
    } else {
        jx_fail(st->c, st->line, "%%%c format: a real number is required, not %s", (char)sp->conv, type_name(st, v));
    }
    jb_puts(st->c, digits, tmp);
}

/* %d %i %u %o %x %X: sign, 0o/0x/0X prefix with '#', zeros up to the precision, digits. o/x/X
 * take ints only. */
static void conv_int(fstate *st, const fspec *sp, jv v, jbuf *b) {
    jctx *c = st->c;
    int conv = sp->conv, neg = 0;
    jbuf digits = {0};
    jb_put(c, &digits, "", 0);
    if (conv == 'o' || conv == 'x' || conv == 'X') {
        if (st->markup || (v.k != JV_INT && v.k != JV_BOOL))
            jx_fail(c, st->line, "%%%c format: an integer is required, not %s", (char)conv, type_name(st, v));
        char tmp[32];
        neg = v.u.i < 0;
        uint64_t m = neg ? (uint64_t)0 - (uint64_t)v.u.i : (uint64_t)v.u.i;
        if (conv == 'o') snprintf(tmp, sizeof tmp, "%" PRIo64, m);
        else if (conv == 'x') snprintf(tmp, sizeof tmp, "%" PRIx64, m);
        else snprintf(tmp, sizeof tmp, "%" PRIX64, m);
        jb_puts(c, &digits, tmp);
    } else {
        int_digits(st, sp, v, &digits, &neg);
    }
    if (neg) jb_putc(c, b, '-');
    if ((sp->flags & F_ALT) && conv != 'd' && conv != 'i' && conv != 'u')
        jb_puts(c, b, conv == 'o' ? "0o" : conv == 'x' ? "0x" : "0X");
    if (sp->prec > (int64_t)digits.n) put_fill(c, b, '0', sp->prec - (int64_t)digits.n);
    jb_put(c, b, digits.p, digits.n);
}

/* printf of a finite double for conversion conv (e E f F g G), '#' for alt; returns snprintf's count. */
static int fmt_double(char *p, size_t n, int conv, int alt, int prec, double x) {
    switch (conv) {
    case 'e': return alt ? snprintf(p, n, "%#.*e", prec, x) : snprintf(p, n, "%.*e", prec, x);
    case 'E': return alt ? snprintf(p, n, "%#.*E", prec, x) : snprintf(p, n, "%.*E", prec, x);
    case 'f': case 'F': return alt ? snprintf(p, n, "%#.*f", prec, x) : snprintf(p, n, "%.*f", prec, x);
    case 'g': return alt ? snprintf(p, n, "%#.*g", prec, x) : snprintf(p, n, "%.*g", prec, x);
    default: return alt ? snprintf(p, n, "%#.*G", prec, x) : snprintf(p, n, "%.*G", prec, x);
    }
}

char *jf_printf_double(jctx *c, int line, int conv, int alt, int64_t prec, double x, size_t *len) {
    if (prec > JF_MAX_FLOAT_PREC) jx_fail(c, line, "precision too big (at most %d here)", JF_MAX_FLOAT_PREC);
    int n = fmt_double(NULL, 0, conv, alt, (int)prec, x);
    if (n < 0) jx_fail(c, line, "cannot format the float");
    char *p = jx_alloc(c, (size_t)n + 1);
    fmt_double(p, (size_t)n + 1, conv, alt, (int)prec, x);
    *len = (size_t)n;
    return p;
}

/* %e %E %f %F %g %G of float(v): precision 6 by default; nan and inf as Python spells them (nan
 * without a sign, upper case for E F G). */
static void conv_float(fstate *st, const fspec *sp, jv v, jbuf *b) {
    jctx *c = st->c;
    double x;
    if (v.k == JV_FLOAT) x = v.u.f;
    else if (v.k == JV_INT || v.k == JV_BOOL) x = (double)v.u.i;
    else if (v.k == JV_UNDEF) fail_undefined(st, v);
    else if (st->markup && v.k == JV_STR) x = str_to_double(st, v);
    else if (st->markup)
        jx_fail(c, st->line, "float() argument must be a string or a real number, not '%s'", jv_kind_name(v));
    else jx_fail(c, st->line, "must be real number, not %s", type_name(st, v));
    int upper = sp->conv == 'E' || sp->conv == 'F' || sp->conv == 'G';
    if (isnan(x)) {
        jb_puts(c, b, upper ? "NAN" : "nan");
        return;
    }
    if (isinf(x)) {
        jb_puts(c, b, x < 0 ? (upper ? "-INF" : "-inf") : (upper ? "INF" : "inf"));
        return;
    }
    size_t len;
    char *p = jf_printf_double(c, st->line, sp->conv, (sp->flags & F_ALT) != 0, sp->prec < 0 ? 6 : sp->prec, x, &len);
    jb_put(c, b, p, len);
}

/* %c: the code point of an int, or a one-character string itself. */
static void conv_char(fstate *st, jv v, jbuf *b) {
    jctx *c = st->c;
    if (!st->markup && v.k == JV_STR) {
        size_t len = ju_len(v.u.s, v.n);
        if (len != 1)
            jx_fail(c, st->line, "%%c requires an int or a unicode character, not a string of length %zu", len);
        jb_put(c, b, v.u.s, v.n);
        return;
    }
    if (st->markup || (v.k != JV_INT && v.k != JV_BOOL))
        jx_fail(c, st->line, "%%c requires an int or a unicode character, not %s", type_name(st, v));
    jf_put_chr(c, st->line, b, v.u.i, "%c");
}

void jf_put_chr(jctx *c, int line, jbuf *b, int64_t cp, const char *what) {
    if (cp < 0 || cp > 0x10FFFF) jx_fail(c, line, "%%c arg not in range(0x110000)");
    if (cp >= 0xD800 && cp <= 0xDFFF)
        jx_fail(c, line,
                "%s of %" PRId64 " (U+%04" PRIX64 "): Python gives a lone surrogate, which the renderer's UTF-8 "
                "strings cannot hold (unsupported)",
                what, cp, (uint64_t)cp);
    char u[4];
    jb_put(c, b, u, ju_encode((int32_t)cp, u));
}

/* Appends one converted argument p (n bytes) with its sign, prefix, padding and, for s/r/a,
 * precision. numeric: a d/i/u/o/x/X/e/f/g result. */
static void put_padded(fstate *st, const fspec *sp, const char *p, size_t n, int numeric) {
    jctx *c = st->c;
    jbuf *o = &st->out;
    int conv = sp->conv, flags = sp->flags;
    char fill = numeric && (flags & F_ZERO) ? '0' : ' ', signch = 0;
    int64_t len = (int64_t)ju_len(p, n), width = sp->width;
    if ((conv == 's' || conv == 'r' || conv == 'a') && sp->prec >= 0 && len > sp->prec) {
        n = ju_offset(p, n, (size_t)sp->prec);
        len = sp->prec;
    }
    int sign = numeric;
    if (sign) {
        if (n && (p[0] == '-' || p[0] == '+')) {
            signch = p[0];
            p++, n--, len--;
        } else if (flags & F_SIGN) {
            signch = '+';
        } else if (flags & F_BLANK) {
            signch = ' ';
        } else {
            sign = 0;
        }
    }
    if (width < len) width = len;
    if (sign) {
        if (fill != ' ') jb_putc(c, o, signch);
        if (width > len) width--;
    }
    int prefix = (flags & F_ALT) && (conv == 'x' || conv == 'X' || conv == 'o'); /* "0x" still to write */
    if (prefix) {
        if (fill != ' ') {
            jb_put(c, o, p, 2);
            p += 2, n -= 2;
            prefix = 0;
        }
        width = width - 2 < 0 ? 0 : width - 2;
        len -= 2;
    }
    if (width > len && !(flags & F_LJUST)) {
        put_fill(c, o, fill, width - len);
        width = len;
    }
    if (fill == ' ') {
        if (sign) jb_putc(c, o, signch);
        if (prefix) {
            jb_put(c, o, p, 2);
            p += 2, n -= 2;
        }
    }
    jb_put(c, o, p, n);
    if (width > len) put_fill(c, o, ' ', width - len);
}

/* Formats the spec after one '%' (the format string's position is just past it). */
static void format_one(fstate *st) {
    jctx *c = st->c;
    size_t at = st->pos;
    fspec sp;
    parse_spec(st, &sp);
    jv v = next_arg(st);
    jbuf b = {0};
    jb_put(c, &b, "", 0);
    int numeric = 0;
    switch (sp.conv) {
    case 's': case 'r': case 'a': conv_text(st, &sp, v, &b); break;
    case 'd': case 'i': case 'u': case 'o': case 'x': case 'X': conv_int(st, &sp, v, &b); numeric = 1; break;
    case 'e': case 'E': case 'f': case 'F': case 'g': case 'G': conv_float(st, &sp, v, &b); numeric = 1; break;
    case 'c': conv_char(st, v, &b); break;
    default: {
        /* index of the conversion character in code points, as Python counts */
        size_t conv_at = st->pos - 1;
        while (conv_at > at && ((unsigned char)st->s[conv_at] & 0xC0) == 0x80) conv_at--;
        jx_fail(c, st->line, "unsupported format character '%c' (0x%" PRIx32 ") at index %zu",
                sp.conv >= 32 && sp.conv <= 126 ? (char)sp.conv : '?', (uint32_t)sp.conv, ju_len(st->s, conv_at));
    }
    }
    put_padded(st, &sp, b.p, b.n, numeric);
}

/* fmt % args: literal text copied, each '%' spec formatted, then every
 * argument of a tuple must have been used. */
jv jx_percent_format(jctx *c, int line, jv fmt, jv args) {
    fstate st = {0};
    st.c = c;
    st.line = line;
    st.s = fmt.u.s;
    st.n = fmt.n;
    st.args = st.cur = args;
    st.markup = fmt.gen == JG_MARKUP;
    int tuple = args.k == JV_LIST && args.tuple && !args.gen;
    st.arglen = tuple ? (int64_t)args.u.l->n : -1;
    st.argidx = tuple ? 0 : -2;
    /* Python's mapping test: has __getitem__, is neither a tuple nor a str */
    st.mapping = args.k == JV_DICT || args.k == JV_UNDEF || (args.k == JV_LIST && !args.gen && !args.tuple);
    jb_put(c, &st.out, "", 0);
    while (st.pos < st.n) {
        const char *pct = memchr(st.s + st.pos, '%', st.n - st.pos);
        size_t end = pct ? (size_t)(pct - st.s) : st.n;
        jb_put(c, &st.out, st.s + st.pos, end - st.pos);
        st.pos = end;
        if (!pct) break;
        st.pos++;
        if (st.pos < st.n && st.s[st.pos] == '%') {
            jb_putc(c, &st.out, '%');
            st.pos++;
            continue;
        }
        format_one(&st);
    }
    if (st.argidx < st.arglen && !st.mapping)
        jx_fail(c, line, "not all arguments converted during string formatting");
    jv r = jv_strn(st.out.p, st.out.n);
    r.gen = st.markup ? JG_MARKUP : JG_NONE;
    return r;
}
