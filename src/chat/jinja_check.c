/* Load-time check of a parsed chat template: a filter, test, loop attribute, method or global that
 * the interpreter does not implement is refused when the template is loaded, naming it and its
 * line, rather than failing only when a render reaches it. Jinja2 itself refuses unknown filter and
 * test names when it compiles a template; methods and globals it resolves at render time, so only
 * names that can never resolve here are refused: Python methods this interpreter lacks, and Jinja's
 * globals cycler/joiner/lipsum unless the template binds that name itself (the caller's variables
 * come from JSON and are never callable).
 *
 * The same walk marks each macro (and {% call %} body) with the special names its body refers to
 * (JM_* in jnode.op), which decide, as in Jinja, whether extra arguments are collected or refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chat/jinja.h"

typedef struct checker {
    const jnode *root;
    char *err;
    size_t err_len;
    jmp_buf jb;
} checker;

static _Noreturn __attribute__((format(printf, 3, 4))) void cerr(checker *K, int line, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(K->err, K->err_len, "chat template line %d: %s", line, msg);
    longjmp(K->jb, 1);
}

static int name_in(const char *const *names, const char *s, size_t n) {
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == n && !memcmp(names[i], s, n)) return 1;
    return 0;
}

static int name_is(const char *s, size_t n, const char *lit) { return strlen(lit) == n && !memcmp(s, lit, n); }

static const char *const loop_attrs[] = {"index", "index0", "revindex", "revindex0", "first", "last", "length",
                                         "previtem", "nextitem", "depth", "depth0", NULL};
static const char *const unsupported_globals[] = {"cycler", "joiner", "lipsum", NULL};

/* Does any statement of the tree bind `name` (set, for target, macro name or parameter)? */
static int binds_name(const jnode *e, const char *name, size_t n) {
    if (!e) return 0;
    switch (e->k) {
    case JN_SET: case JN_SET_BLOCK: case JN_FOR: case JN_MACRO:
        for (int i = 0; i < e->nnames; i++)
            if (e->names_n[i] == n && !memcmp(e->names[i], name, n)) return 1;
        if (e->k == JN_MACRO && e->name && e->name_n == n && !memcmp(e->name, name, n)) return 1;
        break;
    default: break;
    }
    const jnode *kids[4] = {e->a, e->b, e->c, e->d};
    for (int i = 0; i < 4; i++)
        if (binds_name(kids[i], name, n)) return 1;
    for (int i = 0; i < e->nitems; i++)
        if (binds_name(e->items[i], name, n)) return 1;
    for (int i = 0; i < e->nitems2; i++)
        if (binds_name(e->items2[i], name, n)) return 1;
    return 0;
}

/* JM_* bits for the names among caller/kwargs/varargs that the tree refers to. */
static int special_refs(const jnode *e) {
    if (!e) return 0;
    int r = 0;
    if (e->k == JN_NAME) {
        if (name_is(e->name, e->name_n, "caller")) r |= JM_CALLER;
        if (name_is(e->name, e->name_n, "kwargs")) r |= JM_KWARGS;
        if (name_is(e->name, e->name_n, "varargs")) r |= JM_VARARGS;
    }
    const jnode *kids[4] = {e->a, e->b, e->c, e->d};
    for (int i = 0; i < 4; i++) r |= special_refs(kids[i]);
    for (int i = 0; i < e->nitems; i++) r |= special_refs(e->items[i]);
    for (int i = 0; i < e->nitems2; i++) r |= special_refs(e->items2[i]);
    return r;
}

/* The JM_* bits of a macro (or call block) as Jinja's compiler decides them: a parameter named
 * varargs or kwargs is an ordinary one (no collecting); one named caller must have a default when
 * the body refers to caller, which then stays the special one. */
static int macro_refs(checker *K, const jnode *m) {
    int refs = special_refs(m->a);
    for (int i = 0; i < m->nnames; i++) {
        if (name_is(m->names[i], m->names_n[i], "varargs")) refs &= ~JM_VARARGS;
        if (name_is(m->names[i], m->names_n[i], "kwargs")) refs &= ~JM_KWARGS;
        if (name_is(m->names[i], m->names_n[i], "caller") && (refs & JM_CALLER) &&
            !(i < m->nitems2 && m->items2[i]))
            cerr(K, m->line, "When defining macros or call blocks the special 'caller' argument must be omitted or "
                             "be given a default.");
    }
    return refs;
}

static void check_filter_name(checker *K, int line, const char *s, size_t n) {
    if (!name_in(jx_filter_names, s, n)) cerr(K, line, "unsupported filter '%.*s'", (int)n, s);
}
static void check_test_name(checker *K, int line, const char *s, size_t n) {
    if (!name_in(jx_test_names, s, n)) cerr(K, line, "unsupported test '%.*s'", (int)n, s);
}

/* A string literal argument naming a filter (map) or a test (select, reject, selectattr, rejectattr). */
static void check_named_arg(checker *K, const jnode *f) {
    int is_map = name_is(f->name, f->name_n, "map");
    int attr = name_is(f->name, f->name_n, "selectattr") || name_is(f->name, f->name_n, "rejectattr");
    int sel = attr || name_is(f->name, f->name_n, "select") || name_is(f->name, f->name_n, "reject");
    int pos = attr ? 1 : 0;
    if (!(is_map || sel) || f->nitems <= pos) return;
    const jnode *a = f->items[pos];
    if (a->k != JN_LIT || a->lit.k != JV_STR) return;
    if (is_map) {
        for (int i = 0; i < f->nnames; i++)
            if (name_is(f->names[i], f->names_n[i], "attribute")) return;
        check_filter_name(K, a->line, a->lit.u.s, a->lit.n);
    } else {
        check_test_name(K, a->line, a->lit.u.s, a->lit.n);
    }
}

static void walk(checker *K, jnode *e, int in_loop);

static void walk_kids(checker *K, jnode *e, int in_loop) {
    jnode *kids[4] = {e->a, e->b, e->c, e->d};
    for (int i = 0; i < 4; i++) walk(K, kids[i], in_loop);
    for (int i = 0; i < e->nitems; i++) walk(K, e->items[i], in_loop);
    for (int i = 0; i < e->nitems2; i++) walk(K, e->items2[i], in_loop);
}

static void walk(checker *K, jnode *e, int in_loop) {
    if (!e) return;
    switch (e->k) {
    case JN_FILTER: case JN_FILTERBLOCK:
        check_filter_name(K, e->line, e->name, e->name_n);
        if (e->k == JN_FILTER) check_named_arg(K, e);
        break;
    case JN_TEST: check_test_name(K, e->line, e->name, e->name_n); break;
    case JN_GETATTR:
        if (in_loop && e->a->k == JN_NAME && name_is(e->a->name, e->a->name_n, "loop") &&
            !name_in(loop_attrs, e->name, e->name_n))
            cerr(K, e->line, "unsupported loop attribute 'loop.%.*s'", (int)e->name_n, e->name);
        break;
    case JN_CALL: {
        const jnode *f = e->a;
        if (f->k == JN_GETATTR && name_in(jx_unsupported_methods, f->name, f->name_n))
            cerr(K, e->line, "unsupported method '%.*s'", (int)f->name_n, f->name);
        if (f->k == JN_NAME && name_in(unsupported_globals, f->name, f->name_n) && !binds_name(K->root, f->name, f->name_n))
            cerr(K, e->line, "unsupported global function '%.*s'", (int)f->name_n, f->name);
        break;
    }
    case JN_MACRO: e->op = macro_refs(K, e); break;
    case JN_FOR:
        walk(K, e->a, in_loop);
        walk(K, e->b, in_loop);
        walk(K, e->c, in_loop + 1);
        walk(K, e->d, in_loop);
        return;
    default: break;
    }
    walk_kids(K, e, in_loop);
}

int jinja_check(jnode *body, char *err, size_t err_len) {
    checker K;
    K.root = body;
    K.err = err;
    K.err_len = err_len;
    if (setjmp(K.jb)) return -1;
    walk(&K, body, 0);
    return 0;
}
