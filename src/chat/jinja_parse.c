/* Parser of the chat-template interpreter: tokens -> AST (jinja.h), following Jinja2's grammar and
 * operator precedence (or < and < not < comparisons < + - < ~ < * / // % < ** < unary < filters/tests
 * < postfix). Unsupported statements are errors naming the line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chat/jinja_lex.h"

typedef struct parser {
    jarena *a;
    jtok *t;
    int nt, i;
    int depth; /* nesting of expressions and blocks, bounded to keep the C stack safe */
    char *err;
    size_t err_len;
    jmp_buf jb;
} parser;

static _Noreturn __attribute__((format(printf, 3, 4))) void perr(parser *P, int line, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(P->err, P->err_len, "chat template line %d: %s", line, msg);
    longjmp(P->jb, 1);
}

static void *palloc(parser *P, size_t n) {
    void *p = ja_alloc(P->a, n);
    if (!p) perr(P, 0, "out of memory");
    return p;
}

static jnode *node(parser *P, jn_kind k, int line) {
    jnode *n = palloc(P, sizeof *n);
    n->k = k;
    n->line = line;
    return n;
}

/* growable node-pointer vector in the arena */
typedef struct nvec {
    jnode **v;
    int n, cap;
    const char **names;
    size_t *names_n;
} nvec;
static void nv_push(parser *P, nvec *v, jnode *x, const char *name, size_t name_n) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 4;
        jnode **nn = palloc(P, (size_t)cap * sizeof *nn);
        const char **nm = palloc(P, (size_t)cap * sizeof *nm);
        size_t *nl = palloc(P, (size_t)cap * sizeof *nl);
        if (v->n) {
            memcpy(nn, v->v, (size_t)v->n * sizeof *nn);
            memcpy(nm, v->names, (size_t)v->n * sizeof *nm);
            memcpy(nl, v->names_n, (size_t)v->n * sizeof *nl);
        }
        v->v = nn;
        v->names = nm;
        v->names_n = nl;
        v->cap = cap;
    }
    v->v[v->n] = x;
    v->names[v->n] = name;
    v->names_n[v->n] = name_n;
    v->n++;
}

static jtok *cur(parser *P) { return &P->t[P->i]; }
static jtok *peek(parser *P, int k) { return &P->t[P->i + k < P->nt ? P->i + k : P->nt - 1]; }
static int is_op(jtok *t, const char *op) { return t->t == JT_OP && t->n == strlen(op) && !memcmp(t->s, op, t->n); }
static int is_name(jtok *t, const char *nm) { return t->t == JT_NAME && t->n == strlen(nm) && !memcmp(t->s, nm, t->n); }
static int accept_op(parser *P, const char *op) {
    if (is_op(cur(P), op)) {
        P->i++;
        return 1;
    }
    return 0;
}
static int accept_name(parser *P, const char *nm) {
    if (is_name(cur(P), nm)) {
        P->i++;
        return 1;
    }
    return 0;
}
static const char *tok_desc(jtok *t) {
    switch (t->t) {
    case JT_EOF: return "end of template";
    case JT_BLOCK_END: return "end of statement block";
    case JT_VAR_END: return "end of print statement";
    case JT_STRING: return "string";
    case JT_INT: case JT_FLOAT: return "number";
    default: return "token";
    }
}
static void expect_op(parser *P, const char *op) {
    jtok *t = cur(P);
    if (!accept_op(P, op)) {
        if (t->t == JT_NAME || t->t == JT_OP)
            perr(P, t->line, "expected '%s', got '%.*s'", op, (int)t->n, t->s);
        perr(P, t->line, "expected '%s', got %s", op, tok_desc(t));
    }
}
static jtok *expect_name(parser *P) {
    jtok *t = cur(P);
    if (t->t != JT_NAME) perr(P, t->line, "expected a name, got %s", tok_desc(t));
    P->i++;
    return t;
}

static jnode *parse_expr(parser *P);
static jnode *parse_or(parser *P);
static jnode *parse_unary(parser *P, int with_filter);
static jnode *parse_primary(parser *P);

static void parse_call_args(parser *P, jnode *call) {
    /* after '(' */
    nvec pos = {0}, kw = {0};
    while (!accept_op(P, ")")) {
        if (pos.n + kw.n) expect_op(P, ",");
        if (accept_op(P, ")")) break;
        if (is_op(cur(P), "*") || is_op(cur(P), "**"))
            perr(P, cur(P)->line, "unsupported: *args / **kwargs in calls");
        if (cur(P)->t == JT_NAME && is_op(peek(P, 1), "=")) {
            jtok *nm = cur(P);
            P->i += 2;
            nv_push(P, &kw, parse_expr(P), nm->s, nm->n);
        } else {
            if (kw.n) perr(P, cur(P)->line, "positional argument after keyword argument");
            nv_push(P, &pos, parse_expr(P), NULL, 0);
        }
    }
    call->items = pos.v;
    call->nitems = pos.n;
    call->items2 = kw.v;
    call->nitems2 = kw.n;
    call->names = kw.names;
    call->names_n = kw.names_n;
    call->nnames = kw.n;
}

static jnode *parse_postfix(parser *P, jnode *e) {
    for (;;) {
        jtok *t = cur(P);
        if (accept_op(P, ".")) {
            jtok *nm = cur(P);
            jnode *g;
            if (nm->t == JT_NAME) {
                g = node(P, JN_GETATTR, t->line);
                g->name = nm->s;
                g->name_n = nm->n;
            } else if (nm->t == JT_INT) {
                g = node(P, JN_GETITEM, t->line);
                g->b = node(P, JN_LIT, t->line);
                g->b->lit = jv_int(nm->i);
            } else {
                perr(P, nm->line, "expected an attribute name after '.'");
            }
            P->i++;
            g->a = e;
            e = g;
        } else if (accept_op(P, "[")) {
            /* subscript or slice */
            jnode *parts[3] = {0};
            int colons = 0;
            for (;;) {
                if (is_op(cur(P), "]")) break;
                if (is_op(cur(P), ":")) {
                    P->i++;
                    if (++colons > 2) perr(P, t->line, "bad slice");
                    continue;
                }
                if (parts[colons]) perr(P, t->line, "bad subscript");
                parts[colons] = parse_expr(P);
                if (colons == 0 && is_op(cur(P), ",")) perr(P, t->line, "unsupported: tuple subscripts");
            }
            expect_op(P, "]");
            jnode *g;
            if (colons) {
                g = node(P, JN_SLICE, t->line);
                g->b = parts[0];
                g->c = parts[1];
                g->d = parts[2];
            } else {
                if (!parts[0]) perr(P, t->line, "empty subscript");
                g = node(P, JN_GETITEM, t->line);
                g->b = parts[0];
            }
            g->a = e;
            e = g;
        } else if (accept_op(P, "(")) {
            jnode *call = node(P, JN_CALL, t->line);
            call->a = e;
            parse_call_args(P, call);
            e = call;
        } else {
            return e;
        }
    }
}

static jnode *parse_filter_expr(parser *P, jnode *e) {
    for (;;) {
        jtok *t = cur(P);
        if (accept_op(P, "|")) {
            jtok *nm = expect_name(P);
            jnode *f = node(P, JN_FILTER, t->line);
            f->name = nm->s;
            f->name_n = nm->n;
            while (accept_op(P, ".")) { /* dotted filter names are not used by chat templates */
                perr(P, t->line, "unsupported: dotted filter name");
            }
            f->a = e;
            if (accept_op(P, "(")) parse_call_args(P, f);
            e = f;
        } else if (accept_name(P, "is")) {
            int neg = accept_name(P, "not");
            jtok *nm = expect_name(P);
            jnode *f = node(P, JN_TEST, t->line);
            f->name = nm->s;
            f->name_n = nm->n;
            f->op = neg;
            f->a = e;
            jtok *nx = cur(P);
            if (accept_op(P, "(")) {
                parse_call_args(P, f);
            } else if ((nx->t == JT_NAME && !is_name(nx, "else") && !is_name(nx, "or") && !is_name(nx, "and") &&
                        !is_name(nx, "if") && !is_name(nx, "in") && !is_name(nx, "is") && !is_name(nx, "not")) ||
                       nx->t == JT_STRING || nx->t == JT_INT || nx->t == JT_FLOAT || is_op(nx, "[") ||
                       is_op(nx, "{")) {
                jnode *arg = parse_postfix(P, parse_primary(P));
                f->items = palloc(P, sizeof(jnode *));
                f->items[0] = arg;
                f->nitems = 1;
            }
            e = f;
        } else {
            return e;
        }
    }
}

#define MAX_DEPTH 256

static void enter(parser *P, int line) {
    if (++P->depth > MAX_DEPTH) perr(P, line, "template nested too deeply (more than %d levels)", MAX_DEPTH);
}

static jnode *parse_primary(parser *P) {
    jtok *t = cur(P);
    jnode *e;
    if (t->t == JT_NAME) {
        P->i++;
        e = node(P, JN_LIT, t->line);
        if (is_name(t, "true") || is_name(t, "True")) e->lit = jv_bool(1);
        else if (is_name(t, "false") || is_name(t, "False")) e->lit = jv_bool(0);
        else if (is_name(t, "none") || is_name(t, "None")) e->lit = jv_none();
        else {
            e->k = JN_NAME;
            e->name = t->s;
            e->name_n = t->n;
        }
        return e;
    }
    if (t->t == JT_STRING) {
        P->i++;
        e = node(P, JN_LIT, t->line);
        if (cur(P)->t == JT_STRING) { /* adjacent literals concatenate */
            size_t total = t->n;
            int j = P->i;
            while (P->t[j].t == JT_STRING) total += P->t[j++].n;
            char *s = palloc(P, total + 1);
            memcpy(s, t->s, t->n);
            size_t k = t->n;
            while (cur(P)->t == JT_STRING) {
                memcpy(s + k, cur(P)->s, cur(P)->n);
                k += cur(P)->n;
                P->i++;
            }
            e->lit = jv_strn(s, total);
        } else {
            e->lit = jv_strn(t->s, t->n);
        }
        return e;
    }
    if (t->t == JT_INT || t->t == JT_FLOAT) {
        P->i++;
        e = node(P, JN_LIT, t->line);
        e->lit = t->t == JT_INT ? jv_int(t->i) : jv_float(t->f);
        return e;
    }
    if (accept_op(P, "(")) {
        if (accept_op(P, ")")) {
            e = node(P, JN_TUPLE, t->line);
            return e;
        }
        jnode *first = parse_expr(P);
        if (!is_op(cur(P), ",")) {
            expect_op(P, ")");
            return first;
        }
        nvec v = {0};
        nv_push(P, &v, first, NULL, 0);
        while (accept_op(P, ",")) {
            if (is_op(cur(P), ")")) break;
            nv_push(P, &v, parse_expr(P), NULL, 0);
        }
        expect_op(P, ")");
        e = node(P, JN_TUPLE, t->line);
        e->items = v.v;
        e->nitems = v.n;
        return e;
    }
    if (accept_op(P, "[")) {
        nvec v = {0};
        while (!accept_op(P, "]")) {
            if (v.n) expect_op(P, ",");
            if (accept_op(P, "]")) break;
            nv_push(P, &v, parse_expr(P), NULL, 0);
        }
        e = node(P, JN_LIST, t->line);
        e->items = v.v;
        e->nitems = v.n;
        return e;
    }
    if (accept_op(P, "{")) {
        nvec k = {0}, v = {0};
        while (!accept_op(P, "}")) {
            if (k.n) expect_op(P, ",");
            if (accept_op(P, "}")) break;
            nv_push(P, &k, parse_expr(P), NULL, 0);
            expect_op(P, ":");
            nv_push(P, &v, parse_expr(P), NULL, 0);
        }
        e = node(P, JN_DICT, t->line);
        e->items = k.v;
        e->nitems = k.n;
        e->items2 = v.v;
        e->nitems2 = v.n;
        return e;
    }
    if (t->t == JT_OP || t->t == JT_NAME) perr(P, t->line, "unexpected '%.*s'", (int)t->n, t->s);
    perr(P, t->line, "unexpected %s", tok_desc(t));
}

static jnode *parse_unary(parser *P, int with_filter) {
    jtok *t = cur(P);
    jnode *e;
    enter(P, t->line);
    if (accept_op(P, "-") || accept_op(P, "+")) {
        e = node(P, JN_UNARY, t->line);
        e->op = t->s[0] == '-' ? JOP_SUB : JOP_ADD;
        e->a = parse_unary(P, 0);
    } else {
        e = parse_postfix(P, parse_primary(P));
    }
    if (with_filter) e = parse_filter_expr(P, e);
    P->depth--;
    return e;
}

static jnode *binop(parser *P, int line, int op, jnode *a, jnode *b) {
    jnode *e = node(P, JN_BINOP, line);
    e->op = op;
    e->a = a;
    e->b = b;
    return e;
}

static jnode *parse_pow(parser *P) {
    jnode *e = parse_unary(P, 1);
    while (is_op(cur(P), "**")) {
        int line = cur(P)->line;
        P->i++;
        e = binop(P, line, JOP_POW, e, parse_unary(P, 1));
    }
    return e;
}
static jnode *parse_math2(parser *P) {
    jnode *e = parse_pow(P);
    for (;;) {
        jtok *t = cur(P);
        int op = is_op(t, "*") ? JOP_MUL : is_op(t, "/") ? JOP_DIV : is_op(t, "//") ? JOP_FLOORDIV
               : is_op(t, "%") ? JOP_MOD : 0;
        if (!op) return e;
        P->i++;
        e = binop(P, t->line, op, e, parse_pow(P));
    }
}
static jnode *parse_concat(parser *P) {
    jnode *e = parse_math2(P);
    while (is_op(cur(P), "~")) {
        int line = cur(P)->line;
        P->i++;
        e = binop(P, line, JOP_TILDE, e, parse_math2(P));
    }
    return e;
}
static jnode *parse_math1(parser *P) {
    jnode *e = parse_concat(P);
    for (;;) {
        jtok *t = cur(P);
        int op = is_op(t, "+") ? JOP_ADD : is_op(t, "-") ? JOP_SUB : 0;
        if (!op) return e;
        P->i++;
        e = binop(P, t->line, op, e, parse_concat(P));
    }
}
static jnode *parse_compare(parser *P) {
    jnode *first = parse_math1(P);
    nvec ops = {0};
    int opv[64];
    for (;;) {
        jtok *t = cur(P);
        int op = is_op(t, "==") ? JOP_EQ : is_op(t, "!=") ? JOP_NE : is_op(t, "<") ? JOP_LT : is_op(t, "<=") ? JOP_LE
               : is_op(t, ">") ? JOP_GT : is_op(t, ">=") ? JOP_GE : is_name(t, "in") ? JOP_IN : 0;
        if (!op && is_name(t, "not") && is_name(peek(P, 1), "in")) {
            op = JOP_NOTIN;
            P->i++;
        }
        if (!op) break;
        P->i++;
        if (ops.n >= 64) perr(P, t->line, "comparison chain too long");
        opv[ops.n] = op;
        nv_push(P, &ops, parse_math1(P), NULL, 0);
    }
    if (!ops.n) return first;
    jnode *e = node(P, JN_COMPARE, first->line);
    e->a = first;
    e->items = ops.v;
    e->nitems = ops.n;
    /* operators stored in items2 slots as LIT ints */
    e->items2 = palloc(P, (size_t)ops.n * sizeof(jnode *));
    for (int j = 0; j < ops.n; j++) {
        e->items2[j] = node(P, JN_LIT, first->line);
        e->items2[j]->op = opv[j];
    }
    e->nitems2 = ops.n;
    return e;
}
static jnode *parse_not(parser *P) {
    jtok *t = cur(P);
    if (accept_name(P, "not")) {
        jnode *e = node(P, JN_NOT, t->line);
        enter(P, t->line);
        e->a = parse_not(P);
        P->depth--;
        return e;
    }
    return parse_compare(P);
}
static jnode *parse_and(parser *P) {
    jnode *e = parse_not(P);
    while (is_name(cur(P), "and")) {
        jnode *x = node(P, JN_AND, cur(P)->line);
        P->i++;
        x->a = e;
        x->b = parse_not(P);
        e = x;
    }
    return e;
}
static jnode *parse_or(parser *P) {
    jnode *e = parse_and(P);
    while (is_name(cur(P), "or")) {
        jnode *x = node(P, JN_OR, cur(P)->line);
        P->i++;
        x->a = e;
        x->b = parse_and(P);
        e = x;
    }
    return e;
}
static jnode *parse_expr(parser *P) {
    enter(P, cur(P)->line);
    jnode *e = parse_or(P);
    while (is_name(cur(P), "if")) {
        jnode *x = node(P, JN_COND, cur(P)->line);
        P->i++;
        x->a = e;
        x->b = parse_or(P);
        if (accept_name(P, "else")) x->c = parse_expr(P);
        e = x;
    }
    P->depth--;
    return e;
}

/* ---- statements ---- */
static void expect_block_end(parser *P) {
    jtok *t = cur(P);
    if (t->t != JT_BLOCK_END) {
        if (t->t == JT_NAME || t->t == JT_OP) perr(P, t->line, "expected end of statement block, got '%.*s'", (int)t->n, t->s);
        perr(P, t->line, "expected end of statement block, got %s", tok_desc(t));
    }
    P->i++;
}

/* Parses statements until a {% name %} whose name is in `ends` (NULL-terminated); leaves P at that
 * name token (after BLOCK_BEGIN). At top level ends==NULL and stops at EOF. */
static jnode *parse_body(parser *P, const char *const *ends, int open_line, const char *what);

static void parse_targets(parser *P, jnode *n) {
    nvec v = {0};
    int paren = accept_op(P, "(");
    do {
        jtok *nm = expect_name(P);
        nv_push(P, &v, NULL, nm->s, nm->n);
    } while (accept_op(P, ","));
    if (paren) expect_op(P, ")");
    n->names = v.names;
    n->names_n = v.names_n;
    n->nnames = v.n;
}

static jnode *parse_statement(parser *P) {
    jtok *kw = cur(P);
    int line = kw->line;
    if (kw->t != JT_NAME) perr(P, line, "expected a statement name after '{%%'");
    P->i++;
    if (is_name(kw, "if")) {
        jnode *n = node(P, JN_IF, line);
        n->a = parse_expr(P);
        expect_block_end(P);
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        n->b = parse_body(P, ends, line, "if");
        jnode *tail = n;
        for (;;) {
            jtok *e = cur(P);
            P->i++;
            if (is_name(e, "elif")) {
                jnode *x = node(P, JN_IF, e->line);
                x->a = parse_expr(P);
                expect_block_end(P);
                x->b = parse_body(P, ends, e->line, "if");
                tail->c = x;
                tail = x;
            } else if (is_name(e, "else")) {
                expect_block_end(P);
                static const char *const ends2[] = {"endif", NULL};
                tail->c = parse_body(P, ends2, e->line, "if");
            } else {
                expect_block_end(P);
                return n;
            }
        }
    }
    if (is_name(kw, "for")) {
        jnode *n = node(P, JN_FOR, line);
        parse_targets(P, n);
        if (!accept_name(P, "in")) perr(P, line, "expected 'in' in for loop");
        n->a = parse_or(P); /* no ternary: `if` here is the loop filter */
        if (accept_name(P, "if")) n->b = parse_expr(P);
        if (accept_name(P, "recursive")) perr(P, line, "unsupported: recursive for loops");
        expect_block_end(P);
        static const char *const ends[] = {"else", "endfor", NULL};
        n->c = parse_body(P, ends, line, "for");
        jtok *e = cur(P);
        P->i++;
        if (is_name(e, "else")) {
            expect_block_end(P);
            static const char *const ends2[] = {"endfor", NULL};
            n->d = parse_body(P, ends2, line, "for");
            P->i++;
        }
        expect_block_end(P);
        return n;
    }
    if (is_name(kw, "set")) {
        jnode *n = node(P, JN_SET, line);
        jtok *nm = expect_name(P);
        if (accept_op(P, ".")) { /* ns.attr = */
            jtok *attr = expect_name(P);
            n->a = node(P, JN_NAME, line);
            n->a->name = nm->s;
            n->a->name_n = nm->n;
            n->name = attr->s;
            n->name_n = attr->n;
            expect_op(P, "=");
            n->b = parse_expr(P);
            expect_block_end(P);
            return n;
        }
        P->i--;
        parse_targets(P, n);
        if (accept_op(P, "=")) {
            n->b = parse_expr(P);
            if (is_op(cur(P), ",")) { /* implicit tuple */
                nvec v = {0};
                nv_push(P, &v, n->b, NULL, 0);
                while (accept_op(P, ",")) nv_push(P, &v, parse_expr(P), NULL, 0);
                jnode *tu = node(P, JN_TUPLE, line);
                tu->items = v.v;
                tu->nitems = v.n;
                n->b = tu;
            }
            expect_block_end(P);
            return n;
        }
        if (n->nnames != 1) perr(P, line, "block set takes one name");
        if (is_op(cur(P), "|")) perr(P, line, "unsupported: filtered block set");
        expect_block_end(P);
        n->k = JN_SET_BLOCK;
        static const char *const ends[] = {"endset", NULL};
        n->c = parse_body(P, ends, line, "set");
        P->i++;
        expect_block_end(P);
        return n;
    }
    if (is_name(kw, "macro") || is_name(kw, "call")) {
        int is_call = is_name(kw, "call");
        jnode *n = node(P, is_call ? JN_CALLBLOCK : JN_MACRO, line);
        jnode *sig = n; /* parameters live on the macro node; for call, on n->b (the caller macro) */
        if (is_call) {
            sig = node(P, JN_MACRO, line);
            sig->name = "caller";
            sig->name_n = 6;
            n->b = sig;
        } else {
            jtok *nm = expect_name(P);
            n->name = nm->s;
            n->name_n = nm->n;
        }
        if (!is_call || is_op(cur(P), "(")) {
            if (is_call) P->i++;
            else expect_op(P, "(");
            nvec params = {0}, defs = {0};
            while (!accept_op(P, ")")) {
                if (params.n) expect_op(P, ",");
                if (accept_op(P, ")")) break;
                jtok *pn = expect_name(P);
                jnode *def = NULL;
                if (accept_op(P, "=")) def = parse_expr(P);
                else if (defs.n && defs.v[defs.n - 1]) perr(P, pn->line, "non-default argument follows default argument");
                nv_push(P, &params, NULL, pn->s, pn->n);
                nv_push(P, &defs, def, NULL, 0);
            }
            sig->names = params.names;
            sig->names_n = params.names_n;
            sig->nnames = params.n;
            sig->items2 = defs.v;
            sig->nitems2 = defs.n;
        }
        if (is_call) {
            jnode *callee = parse_expr(P);
            if (callee->k != JN_CALL) perr(P, line, "expected a macro call after 'call'");
            n->a = callee;
            expect_block_end(P);
            static const char *const ends[] = {"endcall", NULL};
            sig->a = parse_body(P, ends, line, "call");
        } else {
            expect_block_end(P);
            static const char *const ends[] = {"endmacro", NULL};
            n->a = parse_body(P, ends, line, "macro");
        }
        P->i++;
        if (cur(P)->t == JT_NAME) P->i++; /* {% endmacro name %} */
        expect_block_end(P);
        return n;
    }
    if (is_name(kw, "filter")) {
        jnode *n = node(P, JN_FILTERBLOCK, line);
        jtok *nm = expect_name(P);
        n->name = nm->s;
        n->name_n = nm->n;
        if (accept_op(P, "(")) parse_call_args(P, n);
        if (is_op(cur(P), "|")) perr(P, line, "unsupported: chained filter block");
        expect_block_end(P);
        static const char *const ends[] = {"endfilter", NULL};
        n->a = parse_body(P, ends, line, "filter");
        P->i++;
        expect_block_end(P);
        return n;
    }
    if (is_name(kw, "generation")) { /* transformers' assistant-mask marker: renders its body */
        expect_block_end(P);
        static const char *const ends[] = {"endgeneration", NULL};
        jnode *body = parse_body(P, ends, line, "generation");
        P->i++;
        expect_block_end(P);
        return body;
    }
    if (is_name(kw, "break") || is_name(kw, "continue")) {
        jnode *n = node(P, is_name(kw, "break") ? JN_BREAK : JN_CONTINUE, line);
        expect_block_end(P);
        return n;
    }
    perr(P, line, "unsupported statement '%.*s'", (int)kw->n, kw->s);
}

static jnode *parse_body(parser *P, const char *const *ends, int open_line, const char *what) {
    nvec v = {0};
    for (;;) {
        jtok *t = cur(P);
        if (t->t == JT_EOF) {
            if (ends) perr(P, open_line, "'%s' block is never closed (missing {%% end%s %%})", what, what);
            break;
        }
        if (t->t == JT_TEXT) {
            jnode *n = node(P, JN_TEXT, t->line);
            n->name = t->s;
            n->name_n = t->n;
            nv_push(P, &v, n, NULL, 0);
            P->i++;
        } else if (t->t == JT_VAR_BEGIN) {
            P->i++;
            jnode *n = node(P, JN_OUTPUT, t->line);
            n->a = parse_expr(P);
            if (cur(P)->t != JT_VAR_END) {
                jtok *b = cur(P);
                if (b->t == JT_NAME || b->t == JT_OP) perr(P, b->line, "expected '}}', got '%.*s'", (int)b->n, b->s);
                perr(P, b->line, "expected '}}', got %s", tok_desc(b));
            }
            P->i++;
            nv_push(P, &v, n, NULL, 0);
        } else if (t->t == JT_BLOCK_BEGIN) {
            P->i++;
            jtok *kw = cur(P);
            if (ends && kw->t == JT_NAME) {
                for (int j = 0; ends[j]; j++)
                    if (is_name(kw, ends[j])) goto done;
            }
            if (kw->t == JT_NAME && ((kw->n > 3 && !memcmp(kw->s, "end", 3)) || is_name(kw, "else") || is_name(kw, "elif")))
                perr(P, kw->line, "unexpected '%.*s'%s%s", (int)kw->n, kw->s, ends ? " inside " : "", ends ? what : "");
            enter(P, kw->line);
            nv_push(P, &v, parse_statement(P), NULL, 0);
            P->depth--;
        } else {
            perr(P, t->line, "unexpected %s", tok_desc(t));
        }
    }
done:;
    jnode *b = node(P, JN_BODY, open_line);
    b->items = v.v;
    b->nitems = v.n;
    return b;
}

jnode *jinja_parse(jarena *a, const char *src, size_t n, char *err, size_t err_len) {
    jtok *toks;
    int nt = jinja_lex(a, src, n, &toks, err, err_len);
    if (nt < 0) return NULL;
    parser P;
    memset(&P, 0, sizeof P);
    P.a = a;
    P.t = toks;
    P.nt = nt;
    P.err = err;
    P.err_len = err_len;
    if (setjmp(P.jb)) return NULL;
    jnode *body = parse_body(&P, NULL, 1, "template");
    return jinja_check(body, err, err_len) ? NULL : body;
}
