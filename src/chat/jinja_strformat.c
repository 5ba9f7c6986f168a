/* str.format and str.format_map in chat templates, as Jinja's sandbox runs them: not Python's
 * str.format but string.Formatter.vformat through jinja2's SandboxedFormatter, whose quirks this
 * follows (jinja2 3.1.6 on Python 3.11):
 * - replacement fields {name!conv:spec}; '{{' and '}}' are braces; errors come in the order the
 *   fields are met, as Python parses lazily;
 * - automatic numbering ({}) and manual numbering ({0}) cannot mix; only a field that is all digits
 *   counts as manual, so '{0[0]}{}' is allowed (str.format itself would refuse it);
 * - field access .attr and [key] go through the sandbox's getattr and getitem: a missing attribute,
 *   key or index is Undefined (prints nothing), an unsafe attribute (leading underscore, mutating
 *   method) too; an Undefined argument fails on any access;
 * - conversions !s !r !a; the spec may hold nested fields ({:{w}}), at most two levels deep;
 * - each field is format(value, spec) (jinja_fmtspec.c); a markup format string (|safe) escapes
 *   every field as markupsafe's EscapeFormatter does and gives markup.
 * What Python would print with a memory address (a method, a function) is an error here. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "chat/jinja.h"
#include "chat/jinja_fmt.h"

/* Attributes of Python 3.11's types that the sandbox lets through as methods (printing one shows
 * its address), that it refuses (ImmutableSandboxedEnvironment: mutating methods, any leading
 * underscore), and that hold values. Space-separated. */
static const char STR_METHODS[] =
    "capitalize casefold center count encode endswith expandtabs find format format_map index isalnum isalpha "
    "isascii isdecimal isdigit isidentifier islower isnumeric isprintable isspace istitle isupper join ljust lower "
    "lstrip maketrans partition removeprefix removesuffix replace rfind rindex rjust rpartition rsplit rstrip split "
    "splitlines startswith strip swapcase title translate upper zfill";
static const char MARKUP_METHODS[] = "escape striptags unescape";
static const char DICT_METHODS[] = "copy fromkeys get items keys values";
static const char DICT_MUTATORS[] = "clear pop popitem setdefault update";
static const char DICT_DUNDERS[] =
    "__class__ __class_getitem__ __contains__ __delattr__ __delitem__ __dir__ __doc__ __eq__ __format__ __ge__ "
    "__getattribute__ __getitem__ __getstate__ __gt__ __hash__ __init__ __init_subclass__ __ior__ __iter__ __le__ "
    "__len__ __lt__ __ne__ __new__ __or__ __reduce__ __reduce_ex__ __repr__ __reversed__ __ror__ __setattr__ "
    "__setitem__ __sizeof__ __str__ __subclasshook__";
static const char LIST_METHODS[] = "copy count index";
static const char LIST_MUTATORS[] = "append clear extend insert pop remove reverse sort";
static const char TUPLE_METHODS[] = "count index";
static const char INT_METHODS[] = "as_integer_ratio bit_count bit_length conjugate from_bytes to_bytes";
static const char FLOAT_METHODS[] = "as_integer_ratio conjugate fromhex hex is_integer";
static const char UNDEFINED_ATTRS[] =
    "__add__ __aiter__ __bool__ __call__ __class__ __complex__ __delattr__ __dir__ __div__ __doc__ __eq__ "
    "__float__ __floordiv__ __format__ __ge__ __getattr__ __getattribute__ __getitem__ __getstate__ __gt__ "
    "__hash__ __init__ __init_subclass__ __int__ __iter__ __le__ __len__ __lt__ __mod__ __module__ __mul__ __ne__ "
    "__neg__ __new__ __pos__ __pow__ __radd__ __rdiv__ __reduce__ __reduce_ex__ __repr__ __rfloordiv__ __rmod__ "
    "__rmul__ __rpow__ __rsub__ __rtruediv__ __setattr__ __sizeof__ __slots__ __str__ __sub__ __subclasshook__ "
    "__truediv__ _fail_with_undefined_error _undefined_exception _undefined_hint _undefined_message "
    "_undefined_name _undefined_obj";

/* Is name (n bytes) one of the space-separated words? */
static int in_words(const char *words, const char *name, size_t n) {
    if (!n || memchr(name, ' ', n)) return 0;
    for (const char *w = words; *w;) {
        size_t k = strcspn(w, " ");
        if (k == n && !memcmp(w, name, n)) return 1;
        w += k;
        w += *w == ' ';
    }
    return 0;
}

typedef struct sfstate {
    jctx *c;
    int line;
    jv *args;       /* positional arguments */
    int nargs;
    jv map;         /* keyword arguments (a dict), or format_map's argument (any value) */
    int markup;     /* the format string is markup: fields are escaped */
    int64_t next;   /* the next automatic field number */
    int manual;     /* a field was numbered by hand */
} sfstate;

/* Python's type name of v, as the sandbox's messages write it. */
static const char *py_type(jv v) {
    if (v.k == JV_STR && v.gen == JG_MARKUP) return "Markup";
    return jv_kind_name(v);
}

/* jinja2's object_type_repr of v: how its Undefined hints name the object. */
static void put_type_repr(jctx *c, jbuf *b, jv v) {
    if (v.k == JV_NONE) {
        jb_puts(c, b, "None");
        return;
    }
    jb_puts(c, b, v.k == JV_NS ? "jinja2.utils.Namespace" : v.k == JV_STR && v.gen == JG_MARKUP ? "markupsafe.Markup"
                                                                                              : jv_kind_name(v));
    jb_puts(c, b, " object");
}

/* Undefined values the sandbox makes, with jinja2's hints (the message when one is used further). */
static jv undef_no_attr(sfstate *st, jv obj, const char *name, size_t n) {
    jbuf b = {0};
    jb_putc(st->c, &b, '\'');
    put_type_repr(st->c, &b, obj);
    jb_puts(st->c, &b, "' has no attribute ");
    jv_repr(st->c, &b, jv_strn(name, (size_t)jf_clip(name, n, 100)));
    return jv_undef(b.p);
}
static jv undef_no_element(sfstate *st, jv obj, int64_t k) {
    jbuf b = {0};
    char tmp[40];
    put_type_repr(st->c, &b, obj);
    snprintf(tmp, sizeof tmp, " has no element %" PRId64, k);
    jb_puts(st->c, &b, tmp);
    return jv_undef(b.p);
}
static jv undef_unsafe(sfstate *st, jv obj, const char *name, size_t n) {
    jbuf b = {0};
    jb_puts(st->c, &b, "access to attribute ");
    jv_repr(st->c, &b, jv_strn(name, (size_t)jf_clip(name, n, 100)));
    jb_puts(st->c, &b, " of '");
    jb_puts(st->c, &b, py_type(obj));
    jb_puts(st->c, &b, "' object is unsafe.");
    return jv_undef(b.p);
}

static _Noreturn void fail_undefined(sfstate *st, jv u) {
    if (u.n) jx_fail(st->c, st->line, "%.*s", (int)u.n, u.u.s);
    jx_fail(st->c, st->line, "value is undefined");
}

/* Values whose attributes and items the renderer does not model (functions, macros, iterators,
 * dict views). */
static void refuse_opaque_object(sfstate *st, jv obj) {
    if (obj.k == JV_FUNC || (obj.k == JV_LIST && obj.gen))
        jx_fail(st->c, st->line, "unsupported: str.format field access into a %s", jv_kind_name(obj));
}

static _Noreturn void fail_method(sfstate *st, jv obj, const char *name, size_t n) {
    jx_fail(st->c, st->line, "unsupported: str.format of %s.%.*s, a method, which Python prints with its memory address",
            py_type(obj), jf_clip(name, n, 100), name);
}

/* getattr(obj, name) in the sandbox, then obj[name] when Python has no such attribute. */
static jv sandbox_getattr(sfstate *st, jv obj, const char *name, size_t n) {
    int under = n && name[0] == '_';
    jv out;
    refuse_opaque_object(st, obj);
    switch (obj.k) {
    case JV_UNDEF:
        if (in_words(UNDEFINED_ATTRS, name, n)) return undef_unsafe(st, obj, name, n);
        fail_undefined(st, obj);
    case JV_NS: /* jinja2's Namespace has only its own attributes */
        if (!jv_dict_gets(obj.u.d, name, n, &out)) return undef_no_attr(st, obj, name, n);
        return under ? undef_unsafe(st, obj, name, n) : out;
    case JV_DICT:
        if (in_words(DICT_DUNDERS, name, n) || in_words(DICT_MUTATORS, name, n)) return undef_unsafe(st, obj, name, n);
        if (in_words(DICT_METHODS, name, n)) fail_method(st, obj, name, n);
        if (jv_dict_gets(obj.u.d, name, n, &out)) return out;
        return undef_no_attr(st, obj, name, n);
    case JV_LIST:
        if (!obj.tuple && in_words(LIST_MUTATORS, name, n)) return undef_unsafe(st, obj, name, n);
        if (in_words(obj.tuple ? TUPLE_METHODS : LIST_METHODS, name, n)) fail_method(st, obj, name, n);
        break;
    case JV_STR:
        if (in_words(STR_METHODS, name, n) || (obj.gen == JG_MARKUP && in_words(MARKUP_METHODS, name, n)))
            fail_method(st, obj, name, n);
        break;
    case JV_BOOL: case JV_INT:
        if (n == 4 && (!memcmp(name, "real", 4) || !memcmp(name, "imag", 4))) return jv_int(name[0] == 'r' ? obj.u.i : 0);
        if (n == 9 && !memcmp(name, "numerator", 9)) return jv_int(obj.u.i);
        if (n == 11 && !memcmp(name, "denominator", 11)) return jv_int(1);
        if (in_words(INT_METHODS, name, n)) fail_method(st, obj, name, n);
        break;
    case JV_FLOAT:
        if (n == 4 && (!memcmp(name, "real", 4) || !memcmp(name, "imag", 4))) return jv_float(name[0] == 'r' ? obj.u.f : 0.0);
        if (in_words(FLOAT_METHODS, name, n)) fail_method(st, obj, name, n);
        break;
    default: break;
    }
    /* the other types' own underscore attributes are Python's special methods: refused */
    if (n > 4 && !memcmp(name, "__", 2) && !memcmp(name + n - 2, "__", 2)) return undef_unsafe(st, obj, name, n);
    return undef_no_attr(st, obj, name, n);
}

/* obj[key] in the sandbox (key: an int, or a str); when Python refuses it, a str key is tried as an
 * attribute. */
static jv sandbox_getitem(sfstate *st, jv obj, jv key) {
    jv out;
    if (obj.k == JV_UNDEF) fail_undefined(st, obj);
    refuse_opaque_object(st, obj);
    if (obj.k == JV_DICT && jv_dict_get(obj.u.d, key, &out)) return out;
    if (key.k == JV_INT && key.u.i >= 0) {
        if (obj.k == JV_LIST && (size_t)key.u.i < obj.u.l->n) return obj.u.l->v[key.u.i];
        if (obj.k == JV_STR && (size_t)key.u.i < ju_len(obj.u.s, obj.n)) {
            size_t a = ju_offset(obj.u.s, obj.n, (size_t)key.u.i), b = ju_offset(obj.u.s, obj.n, (size_t)key.u.i + 1);
            return jv_strn(obj.u.s + a, b - a);
        }
    }
    if (key.k == JV_STR) return sandbox_getattr(st, obj, key.u.s, key.n);
    return undef_no_element(st, obj, key.u.i);
}

/* The value of s when it is all decimal digits (Python turns such a field name or key into an
 * int): 1 and *out, else 0. */
static int decimal_index(sfstate *st, const char *s, size_t n, int64_t *out) {
    int64_t v = 0;
    if (!n) return 0;
    for (size_t i = 0; i < n;) {
        size_t adv;
        int d = ju_decimal_value(ju_decode(s + i, n - i, &adv));
        if (d < 0) return 0;
        if (v > (INT64_MAX - d) / 10) jx_fail(st->c, st->line, "Too many decimal digits in format string");
        v = v * 10 + d;
        i += adv;
    }
    *out = v;
    return 1;
}

/* The keyword argument (format) or the mapping's item (format_map) named key. */
static jv lookup_key(sfstate *st, const char *key, size_t n) {
    jv m = st->map, out;
    jbuf b = {0};
    switch (m.k) {
    case JV_DICT:
        if (jv_dict_gets(m.u.d, key, n, &out)) return out;
        jv_repr(st->c, &b, jv_strn(key, (size_t)jf_clip(key, n, 100)));
        jx_fail(st->c, st->line, "KeyError: %s", b.p);
    case JV_UNDEF: fail_undefined(st, m);
    case JV_STR: jx_fail(st->c, st->line, "string indices must be integers, not 'str'");
    case JV_LIST:
        if (!m.gen) jx_fail(st->c, st->line, "%s indices must be integers or slices, not str", jv_kind_name(m));
        break;
    default: break;
    }
    jx_fail(st->c, st->line, "'%s' object is not subscriptable", jv_kind_name(m));
}

/* The value a field name designates: its first part (an argument number or a keyword), then each
 * .attr and [key] in turn. */
static jv get_field(sfstate *st, const char *s, size_t n) {
    jctx *c = st->c;
    size_t i = 0;
    while (i < n && s[i] != '.' && s[i] != '[') i++;
    int64_t idx;
    jv obj;
    if (decimal_index(st, s, i, &idx)) {
        if (idx >= st->nargs) jx_fail(c, st->line, "tuple index out of range");
        obj = st->args[idx];
    } else {
        obj = lookup_key(st, s, i);
    }
    while (i < n) {
        if (s[i] == '.') {
            size_t a = ++i;
            while (i < n && s[i] != '.' && s[i] != '[') i++;
            if (i == a) jx_fail(c, st->line, "Empty attribute in format string");
            obj = sandbox_getattr(st, obj, s + a, i - a);
        } else if (s[i] == '[') {
            size_t a = ++i;
            while (i < n && s[i] != ']') i++;
            if (i >= n) jx_fail(c, st->line, "Missing ']' in format string");
            if (i == a) jx_fail(c, st->line, "Empty attribute in format string");
            jv key = decimal_index(st, s + a, i - a, &idx) ? jv_int(idx) : jv_strn(s + a, i - a);
            obj = sandbox_getitem(st, obj, key);
            i++;
        } else {
            jx_fail(c, st->line, "Only '.' or '[' may follow ']' in format field specifier");
        }
    }
    return obj;
}

/* !s, !r, !a: str(), repr() or ascii() of the value, a plain str. */
static jv convert(sfstate *st, jv v, int32_t conv) {
    jctx *c = st->c;
    if (!conv) return v;
    if (conv != 's' && conv != 'r' && conv != 'a') {
        char u[4];
        jx_fail(c, st->line, "Unknown conversion specifier %.*s", (int)ju_encode(conv, u), u);
    }
    if (v.k == JV_FUNC) jf_format(c, st->line, v, "", 0); /* fails: Python prints an address */
    jbuf b = {0};
    jb_put(c, &b, "", 0);
    if (conv == 's') {
        jv_to_str(c, &b, v);
        return jv_strn(b.p, b.n);
    }
    jf_repr(c, &b, v);
    if (conv == 'r') return jv_strn(b.p, b.n);
    jbuf a = {0};
    jb_put(c, &a, "", 0);
    jf_put_ascii(c, &a, b.p, b.n);
    return jv_strn(a.p, a.n);
}

static void vformat(sfstate *st, const char *s, size_t n, int depth, jbuf *out);

/* One replacement field: s[*i] is just past its '{'; *i ends just past its '}'. */
static void format_field(sfstate *st, const char *s, size_t n, size_t *i, int depth, jbuf *out) {
    jctx *c = st->c;
    size_t p = *i, name_at = p;
    while (p < n && s[p] != '}' && s[p] != ':' && s[p] != '!') {
        if (s[p] == '{') jx_fail(c, st->line, "unexpected '{' in field name");
        if (s[p] == '[') {
            while (p < n && s[p] != ']') p++;
            if (p == n) break;
        }
        p++;
    }
    if (p >= n) jx_fail(c, st->line, "expected '}' before end of string");
    size_t name_n = p - name_at;
    int32_t conv = 0;
    if (s[p] == '!') {
        if (++p >= n) jx_fail(c, st->line, "end of string while looking for conversion specifier");
        size_t adv;
        conv = ju_decode(s + p, n - p, &adv);
        p += adv;
        if (p >= n) jx_fail(c, st->line, "unmatched '{' in format spec");
        if (s[p] != ':' && s[p] != '}') jx_fail(c, st->line, "expected ':' after conversion specifier");
    }
    size_t spec_at = p, spec_n = 0;
    if (s[p] == ':') {
        spec_at = ++p;
        int open = 1;
        for (; p < n; p++) {
            if (s[p] == '{') open++;
            else if (s[p] == '}' && --open == 0) break;
        }
        if (p >= n) jx_fail(c, st->line, "unmatched '{' in format spec");
        spec_n = p - spec_at;
    }
    *i = p + 1;

    const char *name = s + name_at;
    char numbered[24];
    if (!name_n) {
        if (st->manual)
            jx_fail(c, st->line, "cannot switch from manual field specification to automatic field numbering");
        name_n = (size_t)snprintf(numbered, sizeof numbered, "%" PRId64, st->next++);
        name = numbered;
    } else {
        int digits = 1; /* Python's str.isdigit of the whole name (decimal digits here) */
        for (size_t k = 0; k < name_n && digits;) {
            size_t adv;
            digits = ju_decimal_value(ju_decode(name + k, name_n - k, &adv)) >= 0;
            k += adv;
        }
        if (digits) {
            if (st->next > 0)
                jx_fail(c, st->line, "cannot switch from manual field specification to automatic field numbering");
            st->manual = 1;
        }
    }
    jv v = convert(st, get_field(st, name, name_n), conv);
    jbuf spec = {0};
    jb_put(c, &spec, "", 0);
    vformat(st, s + spec_at, spec_n, depth - 1, &spec);
    if (st->markup && v.k == JV_STR && v.gen == JG_MARKUP) { /* Markup.__html_format__ */
        if (spec.n) jx_fail(c, st->line, "Unsupported format specification for Markup.");
        jb_put(c, out, v.u.s, v.n);
        return;
    }
    jv r = jf_format(c, st->line, v, spec.p, spec.n);
    if (st->markup) r = jx_html_escape(c, r);
    jb_put(c, out, r.u.s, r.n);
}

/* Formats s (the format string, or a field's spec when depth < 2) into out. */
static void vformat(sfstate *st, const char *s, size_t n, int depth, jbuf *out) {
    if (depth < 0) jx_fail(st->c, st->line, "Max string recursion exceeded");
    for (size_t i = 0; i < n;) {
        size_t lit = i;
        while (i < n && s[i] != '{' && s[i] != '}') i++;
        jb_put(st->c, out, s + lit, i - lit);
        if (i >= n) break;
        if (i + 1 < n && s[i + 1] == s[i]) { /* {{ or }} */
            jb_putc(st->c, out, s[i]);
            i += 2;
        } else if (s[i] == '}') {
            jx_fail(st->c, st->line, "Single '}' encountered in format string");
        } else if (i + 1 == n) {
            jx_fail(st->c, st->line, "Single '{' encountered in format string");
        } else {
            i++;
            format_field(st, s, n, &i, depth, out);
        }
    }
}

jv jx_str_format(jctx *c, int line, jv fmt, jv *args, int nargs, const char **kwn, jv *kwv, int nkw, int format_map) {
    sfstate st = {0};
    st.c = c;
    st.line = line;
    st.markup = fmt.gen == JG_MARKUP;
    if (format_map) {
        if (nkw) jx_fail(c, line, "format_map() takes no keyword arguments");
        if (nargs != 1) jx_fail(c, line, "format_map() takes exactly one argument (%d given)", nargs);
        st.map = args[0];
    } else {
        st.args = args;
        st.nargs = nargs;
        st.map = jv_dict_new(c, (size_t)nkw);
        for (int k = 0; k < nkw; k++) jv_dict_set(c, st.map.u.d, jv_cstr(kwn[k]), kwv[k]);
    }
    jbuf out = {0};
    jb_put(c, &out, "", 0);
    vformat(&st, fmt.u.s, fmt.n, 2, &out);
    jv r = jv_strn(out.p, out.n);
    r.gen = st.markup ? JG_MARKUP : JG_NONE;
    return r;
}
