/* Evaluator of the chat-template interpreter: statements, expressions, scoping (a for-loop
 * iteration and a macro call open a scope; if does not), attribute/item lookup with Jinja's
 * Undefined semantics, Python arithmetic and comparisons, macros and {% call %}. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "chat/jinja.h"

static jscope *scope_new(jctx *c, jscope *parent) {
    jscope *s = jx_alloc(c, sizeof *s);
    s->parent = parent;
    return s;
}

static int lookup(jscope *s, const char *name, size_t n, jv *out) {
    for (; s; s = s->parent)
        if (jv_dict_gets(&s->vars, name, n, out)) return 1;
    return 0;
}

static void assign(jctx *c, jscope *s, const char *name, size_t n, jv v) {
    jv_dict_set(c, &s->vars, jv_strn(name, n), v);
}

static jscope *g_scope_of(jctx *c);
static void set_scope(jctx *c, jscope *s);
static void exec_body(jctx *c, jscope *s, const jnode *body);

jv jx_arg(jv *args, int nargs, const char **kwn, jv *kwv, int nkw, int pos, const char *name, jv dflt) {
    if (pos >= 0 && pos < nargs) return args[pos];
    if (name)
        for (int i = 0; i < nkw; i++)
            if (!strcmp(kwn[i], name)) return kwv[i];
    return dflt;
}

/* ---- attribute / item access ---- */
static jv undef_attr(jctx *c, jv obj, const char *name, size_t n) {
    jbuf b = {0};
    jb_puts(c, &b, "'");
    jb_puts(c, &b, jv_kind_name(obj));
    jb_puts(c, &b, " object' has no attribute '");
    jb_put(c, &b, name, n);
    jb_puts(c, &b, "'");
    return jv_undef(b.p);
}

static void fail_undefined(jctx *c, int line, jv u) {
    if (u.n) jx_fail(c, line, "%.*s", (int)u.n, u.u.s);
    jx_fail(c, line, "value is undefined");
}

jv jx_getattr(jctx *c, int line, jv obj, const char *name, size_t n) {
    jv out;
    switch (obj.k) {
    case JV_UNDEF: fail_undefined(c, line, obj); break;
    case JV_DICT: case JV_NS:
        if (jv_dict_gets(obj.u.d, name, n, &out)) return out;
        break;
    default: break;
    }
    return undef_attr(c, obj, name, n);
}

static int64_t norm_index(int64_t i, size_t len) { return i < 0 ? i + (int64_t)len : i; }

jv jx_getitem(jctx *c, int line, jv obj, jv key) {
    jv out;
    switch (obj.k) {
    case JV_UNDEF: fail_undefined(c, line, obj); break;
    case JV_DICT: case JV_NS:
        if (jv_dict_get(obj.u.d, key, &out)) return out;
        if (key.k == JV_STR) return undef_attr(c, obj, key.u.s, key.n);
        return jv_undef("no such key");
    case JV_LIST:
        if (obj.gen) return jv_undef("object is not subscriptable");
        if (key.k == JV_INT || key.k == JV_BOOL) {
            int64_t i = norm_index(key.u.i, obj.u.l->n);
            if (i >= 0 && (size_t)i < obj.u.l->n) return obj.u.l->v[i];
            return jv_undef("list index out of range");
        }
        break;
    case JV_STR:
        if (key.k == JV_INT || key.k == JV_BOOL) {
            size_t len = ju_len(obj.u.s, obj.n);
            int64_t i = norm_index(key.u.i, len);
            if (i >= 0 && (size_t)i < len) {
                size_t a = ju_offset(obj.u.s, obj.n, (size_t)i), b = ju_offset(obj.u.s, obj.n, (size_t)i + 1);
                return jv_strn(obj.u.s + a, b - a);
            }
            return jv_undef("string index out of range");
        }
        break;
    default: break;
    }
    if (key.k == JV_STR) return undef_attr(c, obj, key.u.s, key.n);
    return jv_undef("no such item");
}

static int64_t slice_bound(jctx *c, int line, jv v, int64_t dflt, size_t len, int64_t step) {
    if (v.k == JV_UNDEF || v.k == JV_NONE) return dflt;
    if (v.k != JV_INT && v.k != JV_BOOL) jx_fail(c, line, "slice indices must be integers or None");
    int64_t i = v.u.i, L = (int64_t)len;
    if (i < 0) {
        i += L;
        if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= L) {
        i = step < 0 ? L - 1 : L;
    }
    return i;
}

static jv do_slice(jctx *c, int line, jv obj, jv lo, jv hi, jv st) {
    int64_t step = 1;
    if (st.k != JV_UNDEF && st.k != JV_NONE) {
        if (st.k != JV_INT) jx_fail(c, line, "slice step must be an integer");
        step = st.u.i;
        if (!step) jx_fail(c, line, "slice step cannot be zero");
    }
    size_t len;
    /* Jinja turns a failed subscript into Undefined (except on Undefined itself) */
    if (obj.k == JV_UNDEF) fail_undefined(c, line, obj);
    if ((obj.k == JV_LIST && obj.gen) || (obj.k != JV_LIST && obj.k != JV_STR)) return jv_undef("object is not subscriptable");
    if (obj.k == JV_LIST) len = obj.u.l->n;
    else len = ju_len(obj.u.s, obj.n);
    int64_t L = (int64_t)len;
    int64_t start = slice_bound(c, line, lo, step < 0 ? L - 1 : 0, len, step);
    int64_t stop = slice_bound(c, line, hi, step < 0 ? -1 : L, len, step);
    if (obj.k == JV_LIST) {
        jv out = jv_list_new(c, 0);
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
            jv_list_push(c, out, obj.u.l->v[i]);
            if (jx_add_overflows(i, step)) break;
        }
        return out;
    }
    /* string: ascii fast path for contiguous ranges */
    if (step == 1 && len == obj.n) return start < stop ? jv_strn(obj.u.s + start, (size_t)(stop - start)) : jv_strn("", 0);
    size_t *offs = jx_alloc(c, (len + 1) * sizeof *offs);
    size_t k = 0;
    for (size_t i = 0; i < obj.n; i++)
        if (((unsigned char)obj.u.s[i] & 0xC0) != 0x80) offs[k++] = i;
    offs[len] = obj.n;
    jbuf b = {0};
    jb_put(c, &b, "", 0);
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        jb_put(c, &b, obj.u.s + offs[i], offs[i + 1] - offs[i]);
        if (jx_add_overflows(i, step)) break;
    }
    return jv_strn(b.p, b.n);
}

jv jx_iter_list(jctx *c, int line, jv v) {
    switch (v.k) {
    case JV_LIST: return v;
    case JV_UNDEF: return jv_list_new(c, 0);
    case JV_DICT: {
        jv out = jv_list_new(c, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) jv_list_push(c, out, v.u.d->keys[i]);
        return out;
    }
    case JV_STR: {
        jv out = jv_list_new(c, v.n);
        for (size_t i = 0; i < v.n;) {
            size_t adv;
            ju_decode(v.u.s + i, v.n - i, &adv);
            jv_list_push(c, out, jv_strn(v.u.s + i, adv));
            i += adv;
        }
        return out;
    }
    default: jx_fail(c, line, "'%s' object is not iterable", jv_kind_name(v));
    }
}

static int is_num(jv v) { return v.k == JV_INT || v.k == JV_BOOL || v.k == JV_FLOAT; }
static double num_f(jv v) { return v.k == JV_FLOAT ? v.u.f : (double)v.u.i; }

int jx_compare(jctx *c, int line, jv a, jv b) {
    if (is_num(a) && is_num(b)) {
        if (a.k != JV_FLOAT && b.k != JV_FLOAT) return a.u.i < b.u.i ? -1 : a.u.i > b.u.i;
        double x = num_f(a), y = num_f(b);
        return x < y ? -1 : x > y;
    }
    if (a.k == JV_STR && b.k == JV_STR) {
        size_t n = a.n < b.n ? a.n : b.n;
        int r = memcmp(a.u.s, b.u.s, n);
        if (r) return r < 0 ? -1 : 1;
        return a.n < b.n ? -1 : a.n > b.n;
    }
    if (a.k == JV_LIST && b.k == JV_LIST) {
        size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        for (size_t i = 0; i < n; i++) {
            if (jv_equal(a.u.l->v[i], b.u.l->v[i])) continue;
            return jx_compare(c, line, a.u.l->v[i], b.u.l->v[i]);
        }
        return a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
    }
    jx_fail(c, line, "'<' not supported between instances of '%s' and '%s'", jv_kind_name(a), jv_kind_name(b));
}

static int contains(jctx *c, int line, jv item, jv container) {
    switch (container.k) {
    case JV_STR:
        if (item.k != JV_STR) jx_fail(c, line, "'in <string>' requires string as left operand, not %s", jv_kind_name(item));
        if (!item.n) return 1;
        for (size_t i = 0; i + item.n <= container.n; i++)
            if (!memcmp(container.u.s + i, item.u.s, item.n)) return 1;
        return 0;
    case JV_LIST:
        for (size_t i = 0; i < container.u.l->n; i++)
            if (jv_equal(container.u.l->v[i], item)) return 1;
        return 0;
    case JV_DICT: case JV_NS: {
        jv o;
        return jv_dict_get(container.u.d, item, &o);
    }
    case JV_UNDEF: return 0;
    default: jx_fail(c, line, "argument of type '%s' is not iterable", jv_kind_name(container));
    }
}

static _Noreturn void bad_operands(jctx *c, int line, const char *op, jv a, jv b) {
    if (a.k == JV_UNDEF) fail_undefined(c, line, a);
    if (b.k == JV_UNDEF) fail_undefined(c, line, b);
    jx_fail(c, line, "unsupported operand type(s) for %s: '%s' and '%s'", op, jv_kind_name(a), jv_kind_name(b));
}

static int64_t py_floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* Python's ints are unbounded, these are 64-bit: a result that does not fit is an error rather than
 * undefined behaviour or a wrong number. */
static int mul_overflows(int64_t a, int64_t b) {
    if (a == 0 || b == 0) return 0;
    if (a == -1 || b == -1) return a == INT64_MIN || b == INT64_MIN;
    if (a > 0) return b > 0 ? a > INT64_MAX / b : b < INT64_MIN / a;
    return b > 0 ? a < INT64_MIN / b : a < INT64_MAX / b;
}

static jv int_op(jctx *c, int line, int op, int64_t x, int64_t y) {
    int ovf = 0;
    int64_t r = 0;
    switch (op) {
    case JOP_ADD: ovf = jx_add_overflows(x, y), r = ovf ? 0 : x + y; break;
    case JOP_SUB: ovf = y == INT64_MIN ? x >= 0 : jx_add_overflows(x, -y), r = ovf ? 0 : x - y; break;
    case JOP_MUL: ovf = mul_overflows(x, y), r = ovf ? 0 : x * y; break;
    case JOP_FLOORDIV: ovf = x == INT64_MIN && y == -1, r = ovf ? 0 : py_floordiv(x, y); break;
    case JOP_MOD: /* the sign of the divisor, as Python */
        r = y == -1 ? 0 : x % y;
        if (r != 0 && (r < 0) != (y < 0)) r += y;
        break;
    case JOP_POW: /* y >= 0; beyond |x| <= 1 the loop overflows within 64 steps */
        if (x == 0 || x == 1) r = x == 1 || y == 0;
        else if (x == -1) r = y % 2 ? -1 : 1;
        else {
            r = 1;
            for (int64_t i = 0; i < y && !ovf; i++) ovf = mul_overflows(r, x), r = ovf ? 0 : r * x;
        }
        break;
    default: break;
    }
    if (ovf) jx_fail(c, line, "integer overflow: the result does not fit in 64 bits");
    return jv_int(r);
}

static jv binop(jctx *c, int line, int op, jv a, jv b) {
    static const char *const names[] = {"", "+", "-", "*", "/", "//", "%", "**", "~"};
    if (op == JOP_TILDE) {
        jbuf buf = {0};
        jb_put(c, &buf, "", 0);
        jv_to_str(c, &buf, a);
        jv_to_str(c, &buf, b);
        return jv_strn(buf.p, buf.n);
    }
    if (is_num(a) && is_num(b)) {
        int fl = a.k == JV_FLOAT || b.k == JV_FLOAT;
        int64_t x = a.u.i, y = b.u.i;
        double fx = num_f(a), fy = num_f(b);
        switch (op) {
        case JOP_ADD: return fl ? jv_float(fx + fy) : int_op(c, line, op, x, y);
        case JOP_SUB: return fl ? jv_float(fx - fy) : int_op(c, line, op, x, y);
        case JOP_MUL: return fl ? jv_float(fx * fy) : int_op(c, line, op, x, y);
        case JOP_DIV:
            if (fy == 0) jx_fail(c, line, "division by zero");
            return jv_float(fx / fy);
        case JOP_FLOORDIV:
            if (fy == 0) jx_fail(c, line, "integer division or modulo by zero");
            return fl ? jv_float(floor(fx / fy)) : int_op(c, line, op, x, y);
        case JOP_MOD:
            if (fy == 0) jx_fail(c, line, "integer division or modulo by zero");
            if (fl) {
                double r = fmod(fx, fy);
                if (r != 0 && ((r < 0) != (fy < 0))) r += fy;
                return jv_float(r);
            }
            return int_op(c, line, op, x, y);
        case JOP_POW: return !fl && y >= 0 ? int_op(c, line, op, x, y) : jv_float(pow(fx, fy));
        default: break;
        }
    }
    if (op == JOP_ADD && a.k == JV_STR && b.k == JV_STR && (a.gen == JG_MARKUP || b.gen == JG_MARKUP)) {
        if (a.gen != JG_MARKUP) a = jx_html_escape(c, a);
        if (b.gen != JG_MARKUP) b = jx_html_escape(c, b);
        a.gen = b.gen = JG_NONE;
        jv r = binop(c, line, op, a, b);
        r.gen = JG_MARKUP;
        return r;
    }
    if (op == JOP_ADD && a.k == JV_STR && b.k == JV_STR) {
        char *p = jx_alloc(c, a.n + b.n + 1);
        memcpy(p, a.u.s, a.n);
        memcpy(p + a.n, b.u.s, b.n);
        return jv_strn(p, a.n + b.n);
    }
    if (op == JOP_ADD && a.k == JV_LIST && b.k == JV_LIST && !a.gen && !b.gen && a.tuple == b.tuple) {
        jv out = jv_list_new(c, a.u.l->n + b.u.l->n);
        for (size_t i = 0; i < a.u.l->n; i++) jv_list_push(c, out, a.u.l->v[i]);
        for (size_t i = 0; i < b.u.l->n; i++) jv_list_push(c, out, b.u.l->v[i]);
        out.tuple = a.tuple && b.tuple;
        return out;
    }
    if (op == JOP_MUL && ((a.k == JV_STR && (b.k == JV_INT || b.k == JV_BOOL)) || (b.k == JV_STR && (a.k == JV_INT || a.k == JV_BOOL)))) {
        jv s = a.k == JV_STR ? a : b;
        int64_t k = a.k == JV_STR ? b.u.i : a.u.i;
        if (s.n == 0) k = 0; /* nothing to repeat, however often */
        if (k > 0 && (size_t)k > ((size_t)1 << 30) / s.n) jx_fail(c, line, "string repetition too large");
        jbuf buf = {0};
        jb_put(c, &buf, "", 0);
        for (int64_t i = 0; i < k; i++) jb_put(c, &buf, s.u.s, s.n);
        return jv_strn(buf.p, buf.n);
    }
    if (op == JOP_MUL && ((a.k == JV_LIST && !a.gen && (b.k == JV_INT)) || (b.k == JV_LIST && !b.gen && a.k == JV_INT))) {
        jv l = a.k == JV_LIST ? a : b;
        int64_t k = a.k == JV_LIST ? b.u.i : a.u.i;
        if (l.u.l->n == 0) k = 0;
        if (k > 0 && (size_t)k > ((size_t)1 << 24) / l.u.l->n) jx_fail(c, line, "list repetition too large");
        jv out = jv_list_new(c, 0);
        for (int64_t i = 0; i < k; i++)
            for (size_t j = 0; j < l.u.l->n; j++) jv_list_push(c, out, l.u.l->v[j]);
        return out;
    }
    if (op == JOP_MOD && a.k == JV_STR) return jx_percent_format(c, line, a, b);
    bad_operands(c, line, names[op], a, b);
}

/* ---- calls ---- */
static int kw_is(const char *kw, const jnode *m, int i) { return strlen(kw) == m->names_n[i] && !memcmp(kw, m->names[i], m->names_n[i]); }

static jv missing_param(jctx *c, const jnode *m, int i) {
    jv v = jv_undef(NULL);
    char *msg = jx_alloc(c, 256);
    snprintf(msg, 256, "parameter '%.*s' was not provided", (int)m->names_n[i], m->names[i]);
    v.u.s = msg;
    v.n = strlen(msg);
    return v;
}

/* Binds a macro's arguments as Jinja's Macro.__call__ does: positional ones first; only when they
 * are fewer than the parameters do keywords fill the rest; keywords left over go to `kwargs` when
 * the body uses it (else the call fails), extra positional ones to `varargs` likewise. */
static void bind_macro_args(jctx *c, int line, jfunc *fn, jscope *s, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    const jnode *m = fn->macro;
    int npos = nargs < m->nnames ? nargs : m->nnames, caller_param = -1;
    for (int i = 0; i < m->nnames; i++)
        if (m->names_n[i] == 6 && !memcmp(m->names[i], "caller", 6)) caller_param = i;
    char *used = jx_alloc(c, (size_t)nkw + 1);
    for (int i = 0; i < m->nnames; i++) {
        jv v;
        int have = i < npos;
        if (have) v = args[i];
        if (!have && i == caller_param && fn->caller) { /* a parameter named caller takes the call block's */
            v.k = JV_FUNC;
            v.u.fn = fn->caller;
            have = 1;
        }
        for (int k = 0; k < nkw && !have && npos < m->nnames; k++)
            if (kw_is(kwn[k], m, i)) {
                v = kwv[k];
                used[k] = have = 1;
            }
        if (!have && m->items2 && m->items2[i]) {
            /* defaults see the arguments bound so far */
            jscope *saved = g_scope_of(c);
            set_scope(c, s);
            v = jx_eval(c, m->items2[i]);
            set_scope(c, saved);
        } else if (!have) {
            v = missing_param(c, m, i);
        }
        assign(c, s, m->names[i], m->names_n[i], v);
    }
    if ((m->op & JM_CALLER) && caller_param < 0) {
        jv cv = jv_undef("No caller defined");
        if (fn->caller) {
            cv.k = JV_FUNC;
            cv.u.fn = fn->caller;
        }
        for (int k = 0; k < nkw; k++)
            if (!used[k] && !fn->caller && !strcmp(kwn[k], "caller")) cv = kwv[k], used[k] = 1;
        assign(c, s, "caller", 6, cv);
    }
    char label[160]; /* repr() of the macro's name */
    snprintf(label, sizeof label, fn->name ? "'%.150s'" : "None", fn->name);
    jv kwargs = jv_dict_new(c, 0);
    if (fn->caller && !(m->op & JM_CALLER) && caller_param < 0) { /* {% call %} passes the body as the keyword `caller` */
        if (!(m->op & JM_KWARGS))
            jx_fail(c, line, "macro %s was invoked with two values for the special caller argument. This is most likely a bug.", label);
        jv cv = {0};
        cv.k = JV_FUNC;
        cv.u.fn = fn->caller;
        jv_dict_set(c, kwargs.u.d, jv_cstr("caller"), cv);
    }
    for (int k = 0; k < nkw; k++) {
        if (used[k]) continue;
        if (!(m->op & JM_KWARGS)) {
            if (!strcmp(kwn[k], "caller"))
                jx_fail(c, line, "macro %s was invoked with two values for the special caller argument. This is most likely a bug.", label);
            jx_fail(c, line, "macro %s takes no keyword argument '%s'", label, kwn[k]);
        }
        jv_dict_set(c, kwargs.u.d, jv_cstr(kwn[k]), kwv[k]);
    }
    if (nargs > m->nnames && !(m->op & JM_VARARGS))
        jx_fail(c, line, "macro %s takes not more than %d argument(s)", label, m->nnames);
    jv varargs = jv_list_new(c, 0);
    varargs.tuple = 1;
    for (int i = m->nnames; i < nargs; i++) jv_list_push(c, varargs, args[i]);
    /* only where the body collects them: a parameter of that name stays what it was given */
    if (m->op & JM_VARARGS) assign(c, s, "varargs", 7, varargs);
    if (m->op & JM_KWARGS) assign(c, s, "kwargs", 6, kwargs);
}

static jv call_macro(jctx *c, int line, jfunc *fn, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    if (++c->depth > 200) jx_fail(c, line, "macro recursion too deep");
    jscope *s = scope_new(c, fn->closure ? fn->closure : c->root);
    bind_macro_args(c, line, fn, s, args, nargs, kwn, kwv, nkw);
    jbuf *saved_out = c->out, buf = {0};
    jb_put(c, &buf, "", 0);
    c->out = &buf;
    int saved_ctl = c->loop_ctl;
    jscope *saved_scope = g_scope_of(c);
    exec_body(c, s, fn->macro->a);
    set_scope(c, saved_scope);
    c->loop_ctl = saved_ctl;
    c->out = saved_out;
    c->depth--;
    return jv_strn(buf.p, buf.n);
}

jv jx_call(jctx *c, int line, jv fn, jv *args, int nargs, const char **kwn, jv *kwv, int nkw) {
    if (fn.k == JV_UNDEF) fail_undefined(c, line, fn);
    if (fn.k != JV_FUNC) jx_fail(c, line, "'%s' object is not callable", jv_kind_name(fn));
    if (fn.u.fn->builtin) return fn.u.fn->builtin(c, line, args, nargs, kwn, kwv, nkw);
    return call_macro(c, line, fn.u.fn, args, nargs, kwn, kwv, nkw);
}

/* current scope (set while executing) */
static jscope *g_scope_of(jctx *c) { return c->cur; }
static void set_scope(jctx *c, jscope *s) { c->cur = s; }

static void eval_args(jctx *c, const jnode *e, jv **args, const char ***kwn, jv **kwv) {
    *args = jx_alloc(c, (size_t)(e->nitems + 1) * sizeof(jv));
    for (int i = 0; i < e->nitems; i++) (*args)[i] = jx_eval(c, e->items[i]);
    *kwv = jx_alloc(c, (size_t)(e->nitems2 + 1) * sizeof(jv));
    *kwn = jx_alloc(c, (size_t)(e->nitems2 + 1) * sizeof(char *));
    for (int i = 0; i < e->nitems2; i++) {
        char *nm = jx_alloc(c, e->names_n[i] + 1);
        memcpy(nm, e->names[i], e->names_n[i]);
        (*kwn)[i] = nm;
        (*kwv)[i] = jx_eval(c, e->items2[i]);
    }
}

static jv eval_call(jctx *c, const jnode *e, jfunc *caller) {
    jv *args, *kwv;
    const char **kwn;
    const jnode *f = e->a;
    if (f->k == JN_GETATTR) {
        jv obj = jx_eval(c, f->a);
        eval_args(c, e, &args, &kwn, &kwv);
        if (obj.k == JV_UNDEF) fail_undefined(c, e->line, obj);
        int found = 0;
        jv r = jx_method(c, e->line, obj, f->name, f->name_n, args, e->nitems, kwn, kwv, e->nitems2, &found);
        if (found) return r;
        jv fn = jx_getattr(c, e->line, obj, f->name, f->name_n);
        if (fn.k == JV_UNDEF) jx_fail(c, e->line, "'%s' object has no attribute '%.*s'", jv_kind_name(obj), (int)f->name_n, f->name);
        return jx_call(c, e->line, fn, args, e->nitems, kwn, kwv, e->nitems2);
    }
    jv fn = jx_eval(c, f);
    eval_args(c, e, &args, &kwn, &kwv);
    if (caller) {
        if (fn.k != JV_FUNC || fn.u.fn->builtin) jx_fail(c, e->line, "{%% call %%} needs a macro");
        jfunc *bound = jx_alloc(c, sizeof *bound);
        *bound = *fn.u.fn;
        bound->caller = caller;
        fn.u.fn = bound;
    }
    if (fn.k == JV_UNDEF && f->k == JN_NAME)
        jx_fail(c, e->line, "'%.*s' is undefined", (int)f->name_n, f->name);
    return jx_call(c, e->line, fn, args, e->nitems, kwn, kwv, e->nitems2);
}

jv jx_eval(jctx *c, const jnode *e) {
    switch (e->k) {
    case JN_LIT: return e->lit;
    case JN_NAME: {
        jv v;
        if (lookup(g_scope_of(c), e->name, e->name_n, &v)) return v;
        char nm[128];
        snprintf(nm, sizeof nm, "%.*s", (int)(e->name_n < 100 ? e->name_n : 100), e->name);
        jbuiltin_fn g = jx_global_fn(nm);
        if (g) {
            jfunc *fn = jx_alloc(c, sizeof *fn);
            char *name = jx_alloc(c, strlen(nm) + 1); /* e->name points into the source, unterminated */
            memcpy(name, nm, strlen(nm) + 1);
            fn->builtin = g;
            fn->name = name;
            jv r = {0};
            r.k = JV_FUNC;
            r.u.fn = fn;
            return r;
        }
        char *msg = jx_alloc(c, e->name_n + 20);
        snprintf(msg, e->name_n + 20, "'%.*s' is undefined", (int)e->name_n, e->name);
        return jv_undef(msg);
    }
    case JN_LIST: case JN_TUPLE: {
        jv out = jv_list_new(c, (size_t)e->nitems);
        for (int i = 0; i < e->nitems; i++) jv_list_push(c, out, jx_eval(c, e->items[i]));
        out.tuple = e->k == JN_TUPLE;
        return out;
    }
    case JN_DICT: {
        jv out = jv_dict_new(c, (size_t)e->nitems);
        for (int i = 0; i < e->nitems; i++) jv_dict_set(c, out.u.d, jx_eval(c, e->items[i]), jx_eval(c, e->items2[i]));
        return out;
    }
    case JN_GETATTR: return jx_getattr(c, e->line, jx_eval(c, e->a), e->name, e->name_n);
    case JN_GETITEM: {
        jv obj = jx_eval(c, e->a);
        return jx_getitem(c, e->line, obj, jx_eval(c, e->b));
    }
    case JN_SLICE: {
        jv obj = jx_eval(c, e->a);
        jv lo = e->b ? jx_eval(c, e->b) : jv_none(), hi = e->c ? jx_eval(c, e->c) : jv_none(),
           st = e->d ? jx_eval(c, e->d) : jv_none();
        return do_slice(c, e->line, obj, lo, hi, st);
    }
    case JN_CALL: return eval_call(c, e, NULL);
    case JN_FILTER: {
        jv v = jx_eval(c, e->a);
        jv *args, *kwv;
        const char **kwn;
        eval_args(c, e, &args, &kwn, &kwv);
        return jx_filter(c, e->line, e->name, e->name_n, v, args, e->nitems, kwn, kwv, e->nitems2);
    }
    case JN_TEST: {
        jv v;
        /* `x is defined` must not fail on undefined chains: evaluate leniently */
        v = jx_eval(c, e->a);
        jv *args = jx_alloc(c, (size_t)(e->nitems + 1) * sizeof(jv));
        for (int i = 0; i < e->nitems; i++) args[i] = jx_eval(c, e->items[i]);
        int r = jx_test(c, e->line, e->name, e->name_n, v, args, e->nitems);
        return jv_bool(e->op ? !r : r);
    }
    case JN_BINOP: {
        jv a = jx_eval(c, e->a);
        jv b = jx_eval(c, e->b);
        return binop(c, e->line, e->op, a, b);
    }
    case JN_UNARY: {
        jv a = jx_eval(c, e->a);
        if (a.k == JV_INT || a.k == JV_BOOL) return e->op == JOP_SUB ? int_op(c, e->line, JOP_SUB, 0, a.u.i) : jv_int(a.u.i);
        if (a.k == JV_FLOAT) return jv_float(e->op == JOP_SUB ? -a.u.f : a.u.f);
        if (a.k == JV_UNDEF) fail_undefined(c, e->line, a);
        jx_fail(c, e->line, "bad operand type for unary %c: '%s'", e->op == JOP_SUB ? '-' : '+', jv_kind_name(a));
    }
    case JN_AND: {
        jv a = jx_eval(c, e->a);
        return jv_truthy(a) ? jx_eval(c, e->b) : a;
    }
    case JN_OR: {
        jv a = jx_eval(c, e->a);
        return jv_truthy(a) ? a : jx_eval(c, e->b);
    }
    case JN_NOT: return jv_bool(!jv_truthy(jx_eval(c, e->a)));
    case JN_COMPARE: {
        jv left = jx_eval(c, e->a);
        for (int i = 0; i < e->nitems; i++) {
            jv right = jx_eval(c, e->items[i]);
            int op = e->items2[i]->op, r;
            switch (op) {
            case JOP_EQ: r = jv_equal(left, right); break;
            case JOP_NE: r = !jv_equal(left, right); break;
            case JOP_IN: r = contains(c, e->line, left, right); break;
            case JOP_NOTIN: r = !contains(c, e->line, left, right); break;
            default: {
                if (left.k == JV_UNDEF) fail_undefined(c, e->line, left);
                if (right.k == JV_UNDEF) fail_undefined(c, e->line, right);
                int k = jx_compare(c, e->line, left, right);
                r = op == JOP_LT ? k < 0 : op == JOP_LE ? k <= 0 : op == JOP_GT ? k > 0 : k >= 0;
            }
            }
            if (!r) return jv_bool(0);
            left = right;
        }
        return jv_bool(1);
    }
    case JN_COND:
        if (jv_truthy(jx_eval(c, e->b))) return jx_eval(c, e->a);
        return e->c ? jx_eval(c, e->c) : jv_undef("the inline if-expression evaluated to false and no else section was defined");
    default: jx_fail(c, e->line, "internal: not an expression");
    }
}

/* ---- statements ---- */
static void output_value(jctx *c, jv v) { jv_to_str(c, c->out, v); }

static void bind_targets(jctx *c, jscope *s, const jnode *n, jv v) {
    if (n->nnames == 1) {
        assign(c, s, n->names[0], n->names_n[0], v);
        return;
    }
    jv items = v.k == JV_LIST ? v : jx_iter_list(c, n->line, v);
    if (items.u.l->n != (size_t)n->nnames)
        jx_fail(c, n->line, "cannot unpack %zu values into %d names", items.u.l->n, n->nnames);
    for (int i = 0; i < n->nnames; i++) assign(c, s, n->names[i], n->names_n[i], items.u.l->v[i]);
}

static void exec_for(jctx *c, jscope *s, const jnode *n) {
    jv it = jx_eval(c, n->a);
    jv items = jx_iter_list(c, n->line, it);
    if (n->b) { /* loop filter: evaluated with the targets bound */
        jv kept = jv_list_new(c, items.u.l->n);
        for (size_t i = 0; i < items.u.l->n; i++) {
            jscope *fs = scope_new(c, s);
            bind_targets(c, fs, n, items.u.l->v[i]);
            set_scope(c, fs);
            int keep = jv_truthy(jx_eval(c, n->b));
            set_scope(c, s);
            if (keep) jv_list_push(c, kept, items.u.l->v[i]);
        }
        items = kept;
    }
    size_t len = items.u.l->n;
    if (!len) {
        if (n->d) exec_body(c, s, n->d);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        jscope *is = scope_new(c, s);
        jv loop = jv_dict_new(c, 10);
        jdict *d = loop.u.d;
        jv_dict_set(c, d, jv_cstr("index0"), jv_int((int64_t)i));
        jv_dict_set(c, d, jv_cstr("index"), jv_int((int64_t)i + 1));
        jv_dict_set(c, d, jv_cstr("revindex0"), jv_int((int64_t)(len - i - 1)));
        jv_dict_set(c, d, jv_cstr("revindex"), jv_int((int64_t)(len - i)));
        jv_dict_set(c, d, jv_cstr("first"), jv_bool(i == 0));
        jv_dict_set(c, d, jv_cstr("last"), jv_bool(i + 1 == len));
        jv_dict_set(c, d, jv_cstr("length"), jv_int((int64_t)len));
        jv_dict_set(c, d, jv_cstr("depth"), jv_int(1));
        jv_dict_set(c, d, jv_cstr("depth0"), jv_int(0));
        if (i > 0) jv_dict_set(c, d, jv_cstr("previtem"), items.u.l->v[i - 1]);
        if (i + 1 < len) jv_dict_set(c, d, jv_cstr("nextitem"), items.u.l->v[i + 1]);
        loop.k = JV_NS; /* printed/used like an object; attribute access works */
        assign(c, is, "loop", 4, loop);
        bind_targets(c, is, n, items.u.l->v[i]);
        exec_body(c, is, n->c);
        set_scope(c, s);
        if (c->loop_ctl == 1) {
            c->loop_ctl = 0;
            break;
        }
        c->loop_ctl = 0;
    }
}

static void exec_stmt(jctx *c, jscope *s, const jnode *n) {
    set_scope(c, s);
    switch (n->k) {
    case JN_TEXT: jb_put(c, c->out, n->name, n->name_n); return;
    case JN_OUTPUT: output_value(c, jx_eval(c, n->a)); return;
    case JN_BODY: exec_body(c, s, n); return;
    case JN_IF:
        for (const jnode *x = n; x;) {
            if (x->k == JN_BODY) {
                exec_body(c, s, x);
                return;
            }
            set_scope(c, s);
            if (jv_truthy(jx_eval(c, x->a))) {
                exec_body(c, s, x->b);
                return;
            }
            x = x->c;
        }
        return;
    case JN_FOR: exec_for(c, s, n); return;
    case JN_SET: {
        if (n->a) { /* ns.attr = value */
            jv ns;
            if (!lookup(s, n->a->name, n->a->name_n, &ns) || ns.k != JV_NS)
                jx_fail(c, n->line, "cannot assign attribute on non-namespace object '%.*s'", (int)n->a->name_n, n->a->name);
            jv v = jx_eval(c, n->b);
            jv_dict_set(c, ns.u.d, jv_strn(n->name, n->name_n), v);
            return;
        }
        bind_targets(c, s, n, jx_eval(c, n->b));
        return;
    }
    case JN_SET_BLOCK: {
        jbuf *saved = c->out, buf = {0};
        jb_put(c, &buf, "", 0);
        c->out = &buf;
        exec_body(c, s, n->c);
        c->out = saved;
        assign(c, s, n->names[0], n->names_n[0], jv_strn(buf.p, buf.n));
        return;
    }
    case JN_MACRO: {
        jfunc *fn = jx_alloc(c, sizeof *fn);
        char *nm = jx_alloc(c, n->name_n + 1);
        memcpy(nm, n->name, n->name_n);
        fn->name = nm;
        fn->macro = n;
        fn->closure = s;
        jv v = {0};
        v.k = JV_FUNC;
        v.u.fn = fn;
        assign(c, s, n->name, n->name_n, v);
        return;
    }
    case JN_CALLBLOCK: {
        jfunc *caller = jx_alloc(c, sizeof *caller);
        caller->name = NULL; /* Jinja names a {% call %} body's macro None */
        caller->macro = n->b;
        caller->closure = s;
        output_value(c, eval_call(c, n->a, caller));
        return;
    }
    case JN_FILTERBLOCK: {
        jbuf *saved = c->out, buf = {0};
        jb_put(c, &buf, "", 0);
        c->out = &buf;
        exec_body(c, s, n->a);
        c->out = saved;
        set_scope(c, s);
        jv *args, *kwv;
        const char **kwn;
        eval_args(c, n, &args, &kwn, &kwv);
        output_value(c, jx_filter(c, n->line, n->name, n->name_n, jv_strn(buf.p, buf.n), args, n->nitems, kwn, kwv, n->nitems2));
        return;
    }
    case JN_BREAK: c->loop_ctl = 1; return;
    case JN_CONTINUE: c->loop_ctl = 2; return;
    default: jx_fail(c, n->line, "internal: not a statement");
    }
}

static void exec_body(jctx *c, jscope *s, const jnode *body) {
    for (int i = 0; i < body->nitems && !c->loop_ctl; i++) exec_stmt(c, s, body->items[i]);
    set_scope(c, s);
}

int jinja_render(jctx *c, const jnode *body, jbuf *out) {
    c->out = out;
    c->loop_ctl = 0;
    jb_put(c, out, "", 0);
    exec_body(c, c->root, body);
    return 0;
}
