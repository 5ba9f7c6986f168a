/* Python's format(value, spec) for the chat-template renderer's values: the format-spec
 * mini-language that str.format applies to each replacement field, as Python 3.11 documents it:
 * [[fill]align][sign][z][#][0][width][grouping][.precision][type]. str takes s; int and bool take
 * b c d o x X n and the float types, which convert them; float takes e E f F g G n % and none (repr's
 * digits, or 'g'-like with a precision). An empty spec is str(value); None, lists, dicts and the
 * other values take no other spec. Widths and precisions count code points; the fill may be any
 * code point. The checks run in Python's order, so a spec with several faults names the same one.
 * The locale is C's: 'n' is 'd' or 'g'. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "chat/jinja_fmt.h"

typedef struct fspec {
    char fill[4];    /* UTF-8 of the fill character */
    size_t fill_n;
    int fill_given;  /* an explicit [fill]align pair */
    int align;       /* '<' '>' '^' '=', or 0: the type's default */
    int sign;        /* '+' '-' ' ', or 0 */
    int z, alt;
    int64_t width;   /* -1: none */
    int grouping;    /* ',' '_', or 0 */
    int64_t prec;    /* -1: none */
    int32_t type;    /* code point, or 0 */
} fspec;

static int is_align(int32_t cp) { return cp == '<' || cp == '>' || cp == '^' || cp == '='; }

/* A presentation type as Python quotes it in messages: printable ASCII itself, else \x<hex>. */
static const char *type_text(int32_t t, char buf[16]) {
    if (t > 32 && t < 128) snprintf(buf, 16, "%c", (char)t);
    else snprintf(buf, 16, "\\x%" PRIx32, (uint32_t)t);
    return buf;
}

/* Reads the decimal number at s[*i] into *out (its digits known to be there). */
static void read_digits(jctx *c, int line, const char *s, size_t n, size_t *i, int64_t *out) {
    int64_t v = 0;
    for (; *i < n && s[*i] >= '0' && s[*i] <= '9'; (*i)++) {
        int d = s[*i] - '0';
        if (v > (INT64_MAX - d) / 10) jx_fail(c, line, "Too many decimal digits in format string");
        v = v * 10 + d;
    }
    *out = v;
}

/* Whether grouping character g may go with presentation type t (already defaulted). */
static int grouping_allowed(int g, int32_t t) {
    if (t == 0 || t == 'd' || t == 'e' || t == 'f' || t == 'g' || t == 'E' || t == 'G' || t == '%' || t == 'F') return 1;
    return g == '_' && (t == 'b' || t == 'o' || t == 'x' || t == 'X');
}

/* Parses spec for a value of Python type tname whose default presentation type is dflt_type and
 * default alignment dflt_align. */
static void parse_spec(jctx *c, int line, const char *s, size_t n, const char *tname, int32_t dflt_type,
                       int dflt_align, fspec *f) {
    memset(f, 0, sizeof *f);
    f->fill[0] = ' ';
    f->fill_n = 1;
    f->width = f->prec = -1;
    size_t i = 0, adv0 = 0, adv1 = 0;
    int32_t c0 = n ? ju_decode(s, n, &adv0) : -1;
    int32_t c1 = n > adv0 ? ju_decode(s + adv0, n - adv0, &adv1) : -1;
    if (c1 >= 0 && is_align(c1)) {
        memcpy(f->fill, s, adv0 <= 4 ? adv0 : 1);
        f->fill_n = adv0 <= 4 ? adv0 : 1;
        f->fill_given = 1;
        f->align = c1;
        i = adv0 + adv1;
    } else if (c0 >= 0 && is_align(c0)) {
        f->align = c0;
        i = 1;
    }
    if (i < n && (s[i] == '+' || s[i] == '-' || s[i] == ' ')) f->sign = s[i++];
    if (i < n && s[i] == 'z') f->z = 1, i++;
    if (i < n && s[i] == '#') f->alt = 1, i++;
    if (!f->fill_given && i < n && s[i] == '0') {
        f->fill[0] = '0';
        f->fill_n = 1;
        if (!f->align && dflt_align == '>') f->align = '=';
        i++;
    }
    if (i < n && s[i] >= '0' && s[i] <= '9') read_digits(c, line, s, n, &i, &f->width);
    if (i < n && (s[i] == ',' || s[i] == '_')) {
        f->grouping = s[i++];
        if (i < n && (s[i] == ',' || s[i] == '_') && s[i] != f->grouping)
            jx_fail(c, line, "Cannot specify both ',' and '_'.");
    }
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || s[i] < '0' || s[i] > '9') jx_fail(c, line, "Format specifier missing precision");
        read_digits(c, line, s, n, &i, &f->prec);
    }
    if (i < n) {
        size_t adv;
        int32_t t = ju_decode(s + i, n - i, &adv);
        if (i + adv < n)
            jx_fail(c, line, "Invalid format specifier '%.*s' for object of type '%s'", jf_clip(s, n, 200), s, tname);
        f->type = t;
    }
    int32_t t = f->type ? f->type : dflt_type;
    if (f->grouping && !grouping_allowed(f->grouping, t)) {
        char buf[16];
        jx_fail(c, line, "Cannot specify '%c' with '%s'.", f->grouping, type_text(t, buf));
    }
}

static _Noreturn void unknown_type(jctx *c, int line, int32_t t, const char *tname) {
    char buf[16];
    jx_fail(c, line, "Unknown format code '%s' for object of type '%s'", type_text(t, buf), tname);
}

/* Appends fill x count. */
static void put_pad(jctx *c, jbuf *b, const fspec *f, int64_t count) { jf_put_repeat(c, b, f->fill, f->fill_n, count); }

/* Appends body (len code points) padded to the width: align defaults to dflt. */
static void put_aligned(jctx *c, jbuf *out, const fspec *f, const char *body, size_t n, int64_t len, int dflt) {
    int64_t pad = f->width > len ? f->width - len : 0;
    int align = f->align ? f->align : dflt;
    int64_t left = align == '>' ? pad : align == '^' ? pad / 2 : 0;
    put_pad(c, out, f, left);
    jb_put(c, out, body, n);
    put_pad(c, out, f, pad - left);
}

/* Grouping nd integer digits: a separator every `group` digits, zeros on the left up to at least
 * min_width characters; like Python, a separator never leads, so the result may be one character
 * longer than min_width. Returns the length; writes the digits d into out when d is not NULL (out
 * then ends with that many bytes, written from the right). */
static int64_t group_digits(char *out, const char *d, int64_t nd, int sep, int group, int64_t min_width) {
    int64_t remaining = nd, min = min_width, len = 0;
    for (;;) {
        int64_t l = remaining > min ? remaining : min;
        if (l < 1) l = 1;
        if (l > group) l = group;
        for (int64_t k = 0; out && k < l; k++) *--out = remaining - 1 - k >= 0 ? d[remaining - 1 - k] : '0';
        len += l;
        remaining -= l;
        min -= l;
        if (remaining <= 0 && min <= 0) return len;
        if (out) *--out = (char)sep;
        len++;
        min--;
    }
}

/* Appends a number: sign, prefix (0x, ...), integer digits (grouped when the spec asks and group >
 * 0), then rest (fraction, exponent, %, or a 'c' character), padded as Python pads numbers: right
 * by default, '=' between the prefix and the digits; a '0' fill with '=' alignment zero-pads the
 * digits themselves, separators included. */
static void put_number(jctx *c, jbuf *out, const fspec *f, const char *sign, const char *prefix, const char *d,
                       size_t nd, const char *rest, size_t nrest, int group) {
    int64_t fixed = (int64_t)(strlen(sign) + strlen(prefix) + ju_len(rest, nrest));
    int grouped = f->grouping && group;
    int zero = f->align == '=' && f->fill_n == 1 && f->fill[0] == '0';
    int64_t min_width = grouped && zero && f->width > fixed ? f->width - fixed : 0;
    if (min_width > (int64_t)JX_MAX_RENDER_BYTES) jx_fail(c, 0, "rendering needs more than %zu MiB", JX_MAX_RENDER_BYTES >> 20);
    int64_t nd_out = grouped ? group_digits(NULL, d, (int64_t)nd, f->grouping, group, min_width) : (int64_t)nd;
    int64_t len = fixed + nd_out, pad = f->width > len ? f->width - len : 0;
    int align = f->align ? f->align : '>';
    int64_t left = align == '>' ? pad : align == '^' ? pad / 2 : 0;
    put_pad(c, out, f, left);
    jb_puts(c, out, sign);
    jb_puts(c, out, prefix);
    if (align == '=') put_pad(c, out, f, pad);
    if (grouped) { /* room first (failing at once when too big), then the digits from the right */
        jf_put_repeat(c, out, "0", 1, nd_out);
        group_digits(out->p + out->n, d, (int64_t)nd, f->grouping, group, min_width);
    } else {
        jb_put(c, out, d, nd);
    }
    jb_put(c, out, rest, nrest);
    if (align != '=') put_pad(c, out, f, pad - left);
}

static const char *sign_of(const fspec *f, int neg) {
    return neg ? "-" : f->sign == '+' ? "+" : f->sign == ' ' ? " " : "";
}

/* str: optional precision (truncation), left-aligned by default. */
static void format_str(jctx *c, int line, jbuf *out, jv v, const char *s, size_t n, const char *tname) {
    fspec f;
    parse_spec(c, line, s, n, tname, 's', '<', &f);
    if (f.type && f.type != 's') unknown_type(c, line, f.type, tname);
    if (f.sign) jx_fail(c, line, "%s not allowed in string format specifier", f.sign == ' ' ? "Space" : "Sign");
    if (f.z) jx_fail(c, line, "Negative zero coercion (z) not allowed in string format specifier");
    if (f.alt) jx_fail(c, line, "Alternate form (#) not allowed in string format specifier");
    if (f.align == '=') jx_fail(c, line, "'=' alignment not allowed in string format specifier");
    size_t bytes = v.n;
    int64_t len = (int64_t)ju_len(v.u.s, v.n);
    if (f.prec >= 0 && len > f.prec) {
        bytes = ju_offset(v.u.s, v.n, (size_t)f.prec);
        len = f.prec;
    }
    put_aligned(c, out, &f, v.u.s, bytes, len, '<');
}

/* The float types of x: repr's shortest digits or printf's, then sign, grouping and padding. */
static void format_float(jctx *c, int line, jbuf *out, const fspec *f, double x) {
    int t = f->type == 'n' ? 'g' : (int)f->type;
    int upper = t == 'E' || t == 'F' || t == 'G';
    int neg = signbit(x) && !isnan(x);
    double ax = fabs(x);
    jbuf body = {0};
    jb_put(c, &body, "", 0);
    if (t == '%') ax *= 100;
    if (isnan(ax) || isinf(ax)) {
        jb_puts(c, &body, isnan(ax) ? (upper ? "NAN" : "nan") : (upper ? "INF" : "inf"));
        if (t == '%') jb_putc(c, &body, '%');
        put_number(c, out, f, sign_of(f, neg), "", "", 0, body.p, body.n, 0);
        return;
    }
    size_t len;
    if (t == 0 && f->prec < 0) { /* repr's digits; '#' keeps a point */
        char r[40];
        jv_float_repr(ax, r);
        char *e = strchr(r, 'e');
        if (f->alt && !strchr(r, '.')) {
            jb_put(c, &body, r, e ? (size_t)(e - r) : strlen(r));
            jb_putc(c, &body, '.');
            if (e) jb_puts(c, &body, e);
        } else {
            jb_puts(c, &body, r);
        }
    } else if (t == 0) { /* like 'g', but exponent form from prec-1 on and at least one decimal */
        int64_t p = f->prec ? f->prec : 1;
        char *s = jf_printf_double(c, line, 'e', f->alt, p - 1, ax, &len);
        int exp10 = atoi(strchr(s, 'e') + 1);
        int sci = exp10 < -4 || exp10 >= p - 1;
        if (!sci) s = jf_printf_double(c, line, 'f', f->alt, p - 1 - exp10, ax, &len);
        char *e = sci ? strchr(s, 'e') : s + len, *m = e;
        if (!f->alt && strchr(s, '.') && strchr(s, '.') < e) { /* trailing zeros, then a bare point */
            while (m[-1] == '0') m--;
            if (m[-1] == '.') m--;
        }
        jb_put(c, &body, s, (size_t)(m - s));
        if (!sci && !memchr(s, '.', (size_t)(m - s))) jb_puts(c, &body, ".0");
        jb_puts(c, &body, e);
    } else {
        char *s = jf_printf_double(c, line, t == '%' ? 'f' : t, f->alt, f->prec < 0 ? 6 : f->prec, ax, &len);
        jb_put(c, &body, s, len);
        if (t == '%') jb_putc(c, &body, '%');
    }
    if (neg && f->z) { /* z: a negative number that rounds to zero loses its sign */
        int nonzero = 0;
        for (size_t i = 0; i < body.n && body.p[i] != 'e' && body.p[i] != 'E'; i++)
            nonzero |= body.p[i] >= '1' && body.p[i] <= '9';
        neg = nonzero;
    }
    size_t nd = strspn(body.p, "0123456789");
    put_number(c, out, f, sign_of(f, neg), "", body.p, nd, body.p + nd, body.n - nd, 3);
}

/* int and bool: the integer types, or the float types of float(v). */
static void format_int(jctx *c, int line, jbuf *out, int64_t v, const char *s, size_t n, const char *tname) {
    fspec f;
    parse_spec(c, line, s, n, tname, 'd', '>', &f);
    int32_t t = f.type ? f.type : 'd';
    if (t == 'e' || t == 'E' || t == 'f' || t == 'F' || t == 'g' || t == 'G' || t == '%') {
        format_float(c, line, out, &f, (double)v);
        return;
    }
    if (!(t == 'd' || t == 'n' || t == 'b' || t == 'o' || t == 'x' || t == 'X' || t == 'c')) unknown_type(c, line, t, tname);
    if (f.prec >= 0) jx_fail(c, line, "Precision not allowed in integer format specifier");
    if (f.z) jx_fail(c, line, "Negative zero coercion (z) not allowed in integer format specifier");
    if (t == 'c') {
        if (f.sign) jx_fail(c, line, "Sign not allowed with integer format specifier 'c'");
        if (f.alt) jx_fail(c, line, "Alternate form (#) not allowed with integer format specifier 'c'");
        jbuf ch = {0};
        jb_put(c, &ch, "", 0);
        jf_put_chr(c, line, &ch, v, "format code 'c'");
        put_number(c, out, &f, "", "", "", 0, ch.p, ch.n, 0);
        return;
    }
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char d[72];
    if (t == 'b') {
        size_t k = 0;
        char rev[72];
        do rev[k++] = (char)('0' + (m & 1)); while (m >>= 1);
        for (size_t i = 0; i < k; i++) d[i] = rev[k - 1 - i];
        d[k] = '\0';
    } else {
        snprintf(d, sizeof d, t == 'o' ? "%" PRIo64 : t == 'x' ? "%" PRIx64 : t == 'X' ? "%" PRIX64 : "%" PRIu64, m);
    }
    const char *prefix = !f.alt ? "" : t == 'b' ? "0b" : t == 'o' ? "0o" : t == 'x' ? "0x" : t == 'X' ? "0X" : "";
    int group = f.grouping == '_' && (t == 'b' || t == 'o' || t == 'x' || t == 'X') ? 4 : 3;
    put_number(c, out, &f, sign_of(&f, v < 0), prefix, d, strlen(d), "", 0, group);
}

jv jf_format(jctx *c, int line, jv v, const char *spec, size_t spec_n) {
    jbuf out = {0};
    jb_put(c, &out, "", 0);
    if (v.k == JV_FUNC)
        jx_fail(c, line, "str.format of a %s: Python prints its memory address (unsupported)",
                v.u.fn->builtin ? "function" : "macro");
    if (!spec_n) {
        jv_to_str(c, &out, v); /* Undefined: "" */
        return jv_strn(out.p, out.n);
    }
    switch (v.k) {
    case JV_STR:
        format_str(c, line, &out, v, spec, spec_n, v.gen == JG_MARKUP ? "Markup" : "str");
        break;
    case JV_BOOL: case JV_INT:
        format_int(c, line, &out, v.u.i, spec, spec_n, v.k == JV_BOOL ? "bool" : "int");
        break;
    case JV_FLOAT: {
        fspec f;
        parse_spec(c, line, spec, spec_n, "float", 0, '>', &f);
        int32_t t = f.type;
        if (!(t == 0 || t == 'e' || t == 'E' || t == 'f' || t == 'F' || t == 'g' || t == 'G' || t == 'n' || t == '%'))
            unknown_type(c, line, t, "float");
        format_float(c, line, &out, &f, v.u.f);
        break;
    }
    default:
        jx_fail(c, line, "unsupported format string passed to %s.__format__", jv_kind_name(v));
    }
    return jv_strn(out.p, out.n);
}
