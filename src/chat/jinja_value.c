/* Values of the chat-template interpreter: arena, constructors, truthiness, equality, Python str()
 * and repr(), json.dumps, UTF-8 helpers. Formats follow CPython's str/repr/json.dumps. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "chat/jinja.h"

struct jarena_chunk {
    jarena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *ja_alloc(jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        jarena_chunk *ch = malloc(sizeof *ch + cap);
        if (!ch) return NULL;
        ch->cap = cap;
        ch->used = 0;
        if (n > 65536 && a->head) { /* big block: keep the current chunk on top */
            ch->next = a->head->next;
            a->head->next = ch;
        } else {
            ch->next = a->head;
            a->head = ch;
        }
        ch->used = n;
        memset(ch->data, 0, n);
        return ch->data;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

void ja_free(jarena *a) {
    jarena_chunk *ch = a->head;
    while (ch) {
        jarena_chunk *nx = ch->next;
        free(ch);
        ch = nx;
    }
    a->head = NULL;
}

void jx_fail(jctx *c, int line, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(c->errmsg, sizeof c->errmsg, "chat template line %d: %s", line, msg);
    else
        snprintf(c->errmsg, sizeof c->errmsg, "chat template: %s", msg);
    longjmp(c->jb, 1);
}

void *jx_alloc(jctx *c, size_t n) {
    if (n > JX_MAX_RENDER_BYTES - c->allocated)
        jx_fail(c, 0, "rendering needs more than %zu MiB", JX_MAX_RENDER_BYTES >> 20);
    c->allocated += n;
    void *p = ja_alloc(c->a, n);
    if (!p) jx_fail(c, 0, "out of memory");
    return p;
}

/* ---- buffers ---- */
void jb_put(jctx *c, jbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = jx_alloc(c, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
void jb_puts(jctx *c, jbuf *b, const char *s) { jb_put(c, b, s, strlen(s)); }
void jb_putc(jctx *c, jbuf *b, char ch) { jb_put(c, b, &ch, 1); }

/* ---- UTF-8 ---- */
int32_t ju_decode(const char *s, size_t n, size_t *adv) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    if (r <= 0) {
        *adv = 1;
        return (unsigned char)s[0];
    }
    *adv = (size_t)r;
    return cp;
}
int32_t ju_decode_before(const char *s, size_t lo, size_t end, size_t *start) {
    size_t st = end - 1, adv;
    while (st > lo && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
    *start = st;
    return ju_decode(s + st, end - st, &adv);
}
size_t ju_encode(int32_t cp, char out[4]) {
    return (size_t)utf8proc_encode_char(cp, (utf8proc_uint8_t *)out);
}
size_t ju_len(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) k++;
    return k;
}
size_t ju_offset(const char *s, size_t n, size_t cp) {
    size_t k = 0, i = 0;
    for (; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (k == cp) return i;
            k++;
        }
    }
    return n;
}
int ju_isspace(int32_t cp) {
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f) || cp == 0x85) return 1;
    if (cp < 0x80) return 0;
    utf8proc_category_t cat = utf8proc_category(cp);
    if (cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP) return 1;
    return 0;
}

/* ---- constructors ---- */
jv jv_undef(const char *hint) {
    jv v = {0};
    v.k = JV_UNDEF;
    v.u.s = hint;
    v.n = hint ? strlen(hint) : 0;
    return v;
}
jv jv_none(void) {
    jv v = {0};
    v.k = JV_NONE;
    return v;
}
jv jv_bool(int b) {
    jv v = {0};
    v.k = JV_BOOL;
    v.u.i = b ? 1 : 0;
    return v;
}
jv jv_int(int64_t i) {
    jv v = {0};
    v.k = JV_INT;
    v.u.i = i;
    return v;
}
jv jv_float(double f) {
    jv v = {0};
    v.k = JV_FLOAT;
    v.u.f = f;
    return v;
}
jv jv_strn(const char *s, size_t n) {
    jv v = {0};
    v.k = JV_STR;
    v.u.s = s ? s : "";
    v.n = s ? n : 0;
    return v;
}
jv jv_cstr(const char *s) { return jv_strn(s, strlen(s)); }
jv jv_str_copy(jctx *c, const char *s, size_t n) {
    char *p = jx_alloc(c, n + 1);
    if (n) memcpy(p, s, n);
    return jv_strn(p, n);
}
jv jv_list_new(jctx *c, size_t cap) {
    jv v = {0};
    v.k = JV_LIST;
    v.u.l = jx_alloc(c, sizeof(jlist));
    if (cap) {
        v.u.l->v = jx_alloc(c, cap * sizeof(jv));
        v.u.l->cap = cap;
    }
    return v;
}
jv jv_dict_new(jctx *c, size_t cap) {
    jv v = {0};
    v.k = JV_DICT;
    v.u.d = jx_alloc(c, sizeof(jdict));
    if (cap) {
        v.u.d->keys = jx_alloc(c, cap * sizeof(jv));
        v.u.d->vals = jx_alloc(c, cap * sizeof(jv));
        v.u.d->cap = cap;
    }
    return v;
}
void jv_list_push(jctx *c, jv list, jv item) {
    jlist *l = list.u.l;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        jv *nv = jx_alloc(c, cap * sizeof(jv));
        if (l->n) memcpy(nv, l->v, l->n * sizeof(jv));
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = item;
}
void jv_dict_set(jctx *c, jdict *d, jv key, jv val) {
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->keys[i], key)) {
            d->vals[i] = val;
            return;
        }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        jv *nk = jx_alloc(c, cap * sizeof(jv)), *nvv = jx_alloc(c, cap * sizeof(jv));
        if (d->n) {
            memcpy(nk, d->keys, d->n * sizeof(jv));
            memcpy(nvv, d->vals, d->n * sizeof(jv));
        }
        d->keys = nk;
        d->vals = nvv;
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n] = val;
    d->n++;
}
int jv_dict_gets(const jdict *d, const char *key, size_t n, jv *out) {
    for (size_t i = d->n; i-- > 0;) {
        const jv *k = &d->keys[i];
        if (k->k == JV_STR && k->n == n && !memcmp(k->u.s, key, n)) {
            *out = d->vals[i];
            return 1;
        }
    }
    return 0;
}
int jv_dict_get(const jdict *d, jv key, jv *out) {
    if (key.k == JV_STR) return jv_dict_gets(d, key.u.s, key.n, out);
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->keys[i], key)) {
            *out = d->vals[i];
            return 1;
        }
    return 0;
}

int jv_truthy(jv v) {
    switch (v.k) {
    case JV_UNDEF: case JV_NONE: return 0;
    case JV_BOOL: case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.n != 0;
    case JV_LIST: return (v.gen == JG_GENERATOR || v.gen == JG_REVITER) ? 1 : v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    default: return 1;
    }
}

static int is_num(jv v) { return v.k == JV_INT || v.k == JV_BOOL || v.k == JV_FLOAT; }

int jv_equal(jv a, jv b) {
    if (is_num(a) && is_num(b)) {
        if (a.k == JV_FLOAT || b.k == JV_FLOAT) {
            double x = a.k == JV_FLOAT ? a.u.f : (double)a.u.i, y = b.k == JV_FLOAT ? b.u.f : (double)b.u.i;
            return x == y;
        }
        return a.u.i == b.u.i;
    }
    if (a.k != b.k) return 0;
    if (a.k == JV_LIST && (a.gen || b.gen)) return a.gen == b.gen && a.u.l == b.u.l;
    if (a.k == JV_LIST && a.tuple != b.tuple) return 0; /* (1, 2) != [1, 2] */
    switch (a.k) {
    case JV_UNDEF: case JV_NONE: return 1;
    case JV_STR: return a.n == b.n && !memcmp(a.u.s, b.u.s, a.n);
    case JV_LIST:
        if (a.u.l->n != b.u.l->n) return 0;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!jv_equal(a.u.l->v[i], b.u.l->v[i])) return 0;
        return 1;
    case JV_DICT: {
        if (a.u.d->n != b.u.d->n) return 0;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jv o;
            if (!jv_dict_get(b.u.d, a.u.d->keys[i], &o) || !jv_equal(a.u.d->vals[i], o)) return 0;
        }
        return 1;
    }
    case JV_NS: return a.u.d == b.u.d;
    case JV_FUNC: return a.u.fn == b.u.fn;
    default: return 0;
    }
}

int jv_is_str(jv v, const char *s) {
    size_t n = strlen(s);
    return v.k == JV_STR && v.n == n && !memcmp(v.u.s, s, n);
}

const char *jv_kind_name(jv v) {
    switch (v.k) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST:
        switch (v.gen) {
        case JG_GENERATOR: return "generator";
        case JG_KEYS: return "dict_keys";
        case JG_VALUES: return "dict_values";
        case JG_ITEMS: return "dict_items";
        case JG_REVITER: return "list_reverseiterator";
        default: return v.tuple ? "tuple" : "list";
        }
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    default: return "function";
    }
}

/* CPython float repr: shortest round-trip digits; exponent form when exp < -4 or >= 16. */
void jv_float_repr(double f, char out[40]) {
    if (isnan(f)) {
        strcpy(out, "nan");
        return;
    }
    if (isinf(f)) {
        strcpy(out, f < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    /* tmp = [-]d[.ddd]e[+-]XX */
    char digits[24];
    int nd = 0, neg = 0;
    const char *p = tmp;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    char *o = out;
    if (neg) *o++ = '-';
    if (exp < -4 || exp >= 16) {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        sprintf(o, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
        return;
    }
    if (exp < 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -exp - 1; i++) *o++ = '0';
        memcpy(o, digits, (size_t)nd);
        o += nd;
    } else {
        for (int i = 0; i <= exp; i++) *o++ = i < nd ? digits[i] : '0';
        *o++ = '.';
        if (nd > exp + 1) {
            memcpy(o, digits + exp + 1, (size_t)(nd - exp - 1));
            o += nd - exp - 1;
        } else {
            *o++ = '0';
        }
    }
    *o = 0;
}

static int py_printable(int32_t cp) {
    if (cp == ' ') return 1;
    if (cp < 0x20 || cp == 0x7f) return 0;
    if (cp < 0x7f) return 1;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
        return 0;
    default:
        return 1;
    }
}

static void repr_str(jctx *c, jbuf *b, const char *s, size_t n) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    jb_putc(c, b, q);
    for (size_t i = 0; i < n;) {
        size_t adv;
        int32_t cp = ju_decode(s + i, n - i, &adv);
        char tmp[16];
        if (cp == q || cp == '\\') {
            jb_putc(c, b, '\\');
            jb_putc(c, b, (char)cp);
        } else if (cp == '\n') jb_puts(c, b, "\\n");
        else if (cp == '\r') jb_puts(c, b, "\\r");
        else if (cp == '\t') jb_puts(c, b, "\\t");
        else if (!py_printable(cp)) {
            if (cp < 0x100) snprintf(tmp, sizeof tmp, "\\x%02x", (unsigned)cp);
            else if (cp < 0x10000) snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
            else snprintf(tmp, sizeof tmp, "\\U%08x", (unsigned)cp);
            jb_puts(c, b, tmp);
        } else jb_put(c, b, s + i, adv);
        i += adv;
    }
    jb_putc(c, b, q);
}

static void repr_rec(jctx *c, jbuf *b, jv v);

void jv_repr(jctx *c, jbuf *b, jv v) {
    if (++c->depth > 400) jx_fail(c, 0, "value nested too deeply to print");
    repr_rec(c, b, v);
    c->depth--;
}

static void repr_rec(jctx *c, jbuf *b, jv v) {
    char tmp[48];
    switch (v.k) {
    case JV_STR: repr_str(c, b, v.u.s, v.n); return;
    case JV_LIST:
        if (v.gen == JG_GENERATOR || v.gen == JG_REVITER)
            jx_fail(c, 0, "cannot print a %s (the result of map/select/reject/unique/items/reverse); apply |list first",
                    jv_kind_name(v));
        if (v.gen) {
            jb_puts(c, b, v.gen == JG_KEYS ? "dict_keys(" : v.gen == JG_VALUES ? "dict_values(" : "dict_items(");
            jv plain = v;
            plain.gen = 0;
            jv_repr(c, b, plain);
            jb_putc(c, b, ')');
            return;
        }
        jb_putc(c, b, v.tuple ? '(' : '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) jb_puts(c, b, ", ");
            jv_repr(c, b, v.u.l->v[i]);
        }
        if (v.tuple && v.u.l->n == 1) jb_putc(c, b, ',');
        jb_putc(c, b, v.tuple ? ')' : ']');
        return;
    case JV_DICT:
        jb_putc(c, b, '{');
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) jb_puts(c, b, ", ");
            jv_repr(c, b, v.u.d->keys[i]);
            jb_puts(c, b, ": ");
            jv_repr(c, b, v.u.d->vals[i]);
        }
        jb_putc(c, b, '}');
        return;
    case JV_NS:
        jb_puts(c, b, "<Namespace {");
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) jb_puts(c, b, ", ");
            jv_repr(c, b, v.u.d->keys[i]);
            jb_puts(c, b, ": ");
            jv_repr(c, b, v.u.d->vals[i]);
        }
        jb_puts(c, b, "}>");
        return;
    case JV_UNDEF: return;
    case JV_NONE: jb_puts(c, b, "None"); return;
    case JV_BOOL: jb_puts(c, b, v.u.i ? "True" : "False"); return;
    case JV_INT: snprintf(tmp, sizeof tmp, "%" PRId64, v.u.i); jb_puts(c, b, tmp); return;
    case JV_FLOAT: jv_float_repr(v.u.f, tmp); jb_puts(c, b, tmp); return;
    case JV_FUNC: jb_puts(c, b, "<function "); jb_puts(c, b, v.u.fn->name ? v.u.fn->name : "?"); jb_putc(c, b, '>'); return;
    }
}

void jv_to_str(jctx *c, jbuf *b, jv v) {
    if (v.k == JV_STR) jb_put(c, b, v.u.s, v.n);
    else jv_repr(c, b, v);
}

jv jv_stringify(jctx *c, jv v) {
    if (v.k == JV_STR) return v;
    jbuf b = {0};
    jv_to_str(c, &b, v);
    return jv_strn(b.p, b.n);
}

/* ---- json.dumps ---- */
static void json_str_ascii_char(jctx *c, jbuf *b, char ch) {
    char tmp[8];
    switch (ch) {
    case '"': jb_puts(c, b, "\\\""); return;
    case '\\': jb_puts(c, b, "\\\\"); return;
    case '\n': jb_puts(c, b, "\\n"); return;
    case '\r': jb_puts(c, b, "\\r"); return;
    case '\t': jb_puts(c, b, "\\t"); return;
    case '\b': jb_puts(c, b, "\\b"); return;
    case '\f': jb_puts(c, b, "\\f"); return;
    default:
        if ((unsigned char)ch < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned char)ch);
            jb_puts(c, b, tmp);
        } else jb_putc(c, b, ch);
    }
}

static void json_str(jctx *c, jbuf *b, const char *s, size_t n, int ascii) {
    jb_putc(c, b, '"');
    if (ascii) { /* ensure_ascii=True: non-ASCII as \uXXXX (UTF-16 surrogate pairs above the BMP) */
        for (size_t i = 0; i < n;) {
            unsigned char ch = (unsigned char)s[i];
            if (ch < 0x80) {
                json_str_ascii_char(c, b, (char)ch);
                i++;
                continue;
            }
            size_t adv;
            int32_t cp = ju_decode(s + i, n - i, &adv);
            char tmp[16];
            if (cp >= 0x10000) {
                int32_t v = cp - 0x10000;
                snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
            } else {
                snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
            }
            jb_puts(c, b, tmp);
            i += adv;
        }
        jb_putc(c, b, '"');
        return;
    }
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[8];
        switch (ch) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (ch < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", ch);
                esc = tmp;
            }
        }
        if (esc) {
            jb_put(c, b, s + run, i - run);
            jb_puts(c, b, esc);
            run = i + 1;
        }
    }
    jb_put(c, b, s + run, n - run);
    jb_putc(c, b, '"');
}

typedef struct jsonopt {
    int indent;
    const char *indent_str, *item_sep, *key_sep;
    int sort_keys, line, ascii;
} jsonopt;

static void json_nl(jctx *c, jbuf *b, const jsonopt *o, int level) {
    jb_putc(c, b, '\n');
    for (int i = 0; i < level; i++) {
        if (o->indent_str) jb_puts(c, b, o->indent_str);
        else for (int k = 0; k < o->indent; k++) jb_putc(c, b, ' ');
    }
}

static void json_key(jctx *c, jbuf *b, const jsonopt *o, jv k) {
    char tmp[48];
    switch (k.k) {
    case JV_STR: json_str(c, b, k.u.s, k.n, o->ascii); return;
    case JV_INT: snprintf(tmp, sizeof tmp, "\"%" PRId64 "\"", k.u.i); jb_puts(c, b, tmp); return;
    case JV_BOOL: jb_puts(c, b, k.u.i ? "\"true\"" : "\"false\""); return;
    case JV_NONE: jb_puts(c, b, "\"null\""); return;
    case JV_FLOAT: jv_float_repr(k.u.f, tmp); jb_putc(c, b, '"'); jb_puts(c, b, tmp); jb_putc(c, b, '"'); return;
    default: jx_fail(c, o->line, "tojson: keys must be str, int, float, bool or None, not %s", jv_kind_name(k));
    }
}

static int key_cmp(jctx *c, const jsonopt *o, jv a, jv b) {
    if (a.k == JV_STR && b.k == JV_STR) {
        size_t n = a.n < b.n ? a.n : b.n;
        int r = memcmp(a.u.s, b.u.s, n);
        return r ? r : (a.n < b.n ? -1 : a.n > b.n);
    }
    return jx_compare(c, o->line, a, b);
}

static void json_val(jctx *c, jbuf *b, const jsonopt *o, jv v, int level) {
    char tmp[48];
    if (level > 200) jx_fail(c, o->line, "tojson: value nested too deeply");
    switch (v.k) {
    case JV_NONE: jb_puts(c, b, "null"); return;
    case JV_BOOL: jb_puts(c, b, v.u.i ? "true" : "false"); return;
    case JV_INT: snprintf(tmp, sizeof tmp, "%" PRId64, v.u.i); jb_puts(c, b, tmp); return;
    case JV_FLOAT:
        if (isnan(v.u.f)) jb_puts(c, b, "NaN");
        else if (isinf(v.u.f)) jb_puts(c, b, v.u.f < 0 ? "-Infinity" : "Infinity");
        else {
            jv_float_repr(v.u.f, tmp);
            jb_puts(c, b, tmp);
        }
        return;
    case JV_STR: json_str(c, b, v.u.s, v.n, o->ascii); return;
    case JV_LIST:
        if (v.gen) jx_fail(c, o->line, "tojson: Object of type %s is not JSON serializable", jv_kind_name(v));
        if (!v.u.l->n) {
            jb_puts(c, b, "[]");
            return;
        }
        jb_putc(c, b, '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) jb_puts(c, b, o->item_sep);
            if (o->indent >= 0) json_nl(c, b, o, level + 1);
            json_val(c, b, o, v.u.l->v[i], level + 1);
        }
        if (o->indent >= 0) json_nl(c, b, o, level);
        jb_putc(c, b, ']');
        return;
    case JV_DICT: {
        size_t n = v.u.d->n;
        if (!n) {
            jb_puts(c, b, "{}");
            return;
        }
        size_t *ord = jx_alloc(c, n * sizeof *ord);
        for (size_t i = 0; i < n; i++) ord[i] = i;
        if (o->sort_keys) /* insertion sort: stable, small dicts */
            for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && key_cmp(c, o, v.u.d->keys[ord[j - 1]], v.u.d->keys[ord[j]]) > 0; j--) {
                    size_t t = ord[j];
                    ord[j] = ord[j - 1];
                    ord[j - 1] = t;
                }
        jb_putc(c, b, '{');
        for (size_t i = 0; i < n; i++) {
            if (i) jb_puts(c, b, o->item_sep);
            if (o->indent >= 0) json_nl(c, b, o, level + 1);
            json_key(c, b, o, v.u.d->keys[ord[i]]);
            jb_puts(c, b, o->key_sep);
            json_val(c, b, o, v.u.d->vals[ord[i]], level + 1);
        }
        if (o->indent >= 0) json_nl(c, b, o, level);
        jb_putc(c, b, '}');
        return;
    }
    default:
        jx_fail(c, o->line, "tojson: Object of type %s is not JSON serializable", jv_kind_name(v));
    }
}

void jv_tojson(jctx *c, int line, jbuf *b, jv v, int indent, const char *indent_str, const char *item_sep,
               const char *key_sep, int sort_keys, int ensure_ascii) {
    jsonopt o = {indent, indent_str, item_sep, key_sep, sort_keys, line, ensure_ascii};
    if (!o.item_sep) o.item_sep = (indent >= 0 || indent_str) ? "," : ", ";
    if (!o.key_sep) o.key_sep = ": ";
    if (indent_str && o.indent < 0) o.indent = 0;
    json_val(c, b, &o, v, 0);
}
