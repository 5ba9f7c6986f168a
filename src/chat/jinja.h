/* Internal interface of the chat-template Jinja interpreter (src/chat/jinja_*.c).
 *
 * Semantics follow Jinja2 as transformers configures it for chat templates
 * (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols; tojson = json.dumps with
 * ensure_ascii=False). Everything a render creates lives in one arena freed after the render; errors
 * inside a render longjmp to the render's entry point (jx_fail) carrying "chat template line N: ...".
 * Strings are UTF-8 byte ranges; lengths, indexes and slices count code points as Python does. */
#ifndef MT_CHAT_JINJA_H
#define MT_CHAT_JINJA_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- arena ---- */
typedef struct jarena_chunk jarena_chunk;
typedef struct jarena {
    jarena_chunk *head;
} jarena;
void *ja_alloc(jarena *a, size_t n); /* zeroed; NULL only on OOM */
void ja_free(jarena *a);

/* ---- values ---- */
typedef enum {
    JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_NS, JV_FUNC
} jv_kind;

/* Jinja's map/select/reject/unique/items filters return generators and reverse an iterator: always
 * true, no len(), not subscriptable, not printable, not JSON. dict.keys()/values()/items() return
 * views: printable as dict_keys([...]), no subscript, not JSON. */
enum { JG_NONE = 0, JG_GENERATOR, JG_KEYS, JG_VALUES, JG_ITEMS, JG_REVITER,
       JG_MARKUP /* JV_STR from |safe or |escape: `+` HTML-escapes a plain str operand (markupsafe) */ };

typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jfunc jfunc;

typedef struct jv {
    jv_kind k;
    int tuple;   /* JV_LIST printed as a tuple */
    int gen;     /* JV_LIST standing for a Python iterator or view (JG_*), see below */
    size_t n;    /* JV_STR byte length; JV_UNDEF: length of the name in s (0 = unknown) */
    union {
        int64_t i; /* JV_BOOL, JV_INT */
        double f;
        const char *s; /* JV_STR bytes (not NUL-terminated); JV_UNDEF: name or hint */
        jlist *l;
        jdict *d; /* JV_DICT, JV_NS */
        jfunc *fn;
    } u;
} jv;

struct jlist {
    jv *v;
    size_t n, cap;
};
struct jdict {
    jv *keys, *vals;
    size_t n, cap;
};

struct jnode;
struct jscope;
struct jctx;
typedef jv (*jbuiltin_fn)(struct jctx *c, int line, jv *args, int nargs, const char **kwn, jv *kwv, int nkw);
struct jfunc {
    const char *name;
    jbuiltin_fn builtin;        /* builtin function, or NULL for a macro */
    const struct jnode *macro;  /* JN_MACRO node */
    struct jscope *closure;
    struct jfunc *caller;       /* `caller` bound inside a {% call %} */
};

/* ---- render context ---- */
typedef struct jbuf {
    char *p;
    size_t n, cap;
} jbuf;

typedef struct jscope {
    struct jscope *parent;
    jdict vars;
} jscope;

typedef struct jctx {
    jarena *a;
    jmp_buf jb;
    char errmsg[1024];
    jscope *root;
    jscope *cur; /* scope of the statement being executed */
    jbuf *out;
    int loop_ctl; /* 1 break, 2 continue */
    int depth;
    size_t allocated; /* bytes taken from the arena by this render (jx_alloc) */
    bool masked_nul;  /* the input JSON's strings hold U+0000 as C0 80 (mt_json_parse_keep_nul) */
} jctx;

/* A render may take at most this much memory: a template that loops or repeats without end (or
 * builds ever longer strings) fails with an error instead of exhausting the process. */
#define JX_MAX_RENDER_BYTES ((size_t)512 << 20)

_Noreturn void jx_fail(jctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* True when a + b leaves int64_t: integer arithmetic fails then, and loops stepping i by b end. */
static inline int jx_add_overflows(int64_t a, int64_t b) { return b > 0 ? a > INT64_MAX - b : a < INT64_MIN - b; }
void *jx_alloc(jctx *c, size_t n);

jv jv_undef(const char *hint);
jv jv_none(void);
jv jv_bool(int b);
jv jv_int(int64_t i);
jv jv_float(double f);
jv jv_strn(const char *s, size_t n);
jv jv_cstr(const char *s);
jv jv_str_copy(jctx *c, const char *s, size_t n);
jv jv_list_new(jctx *c, size_t cap);
jv jv_dict_new(jctx *c, size_t cap);
void jv_list_push(jctx *c, jv list, jv item);
void jv_dict_set(jctx *c, jdict *d, jv key, jv val);
int jv_dict_get(const jdict *d, jv key, jv *out);
int jv_dict_gets(const jdict *d, const char *key, size_t n, jv *out);

int jv_truthy(jv v);
int jv_equal(jv a, jv b);
int jv_is_str(jv v, const char *s); /* string equal to C string */
const char *jv_kind_name(jv v);      /* Python type name for messages: 'str', 'list', ... */

/* Python's str.upper/lower/title/capitalize/swapcase/casefold of s: full case mappings (ß -> SS),
 * final sigma (jinja_unicode.c). */
enum { JU_UPPER, JU_LOWER, JU_TITLE, JU_CAPITALIZE, JU_SWAPCASE, JU_CASEFOLD };
jv ju_case_map(jctx *c, jv s, int how);
jv jx_jinja_title(jctx *c, jv s); /* Jinja's title filter, which differs from str.title */

/* Python str() / repr() appended to buf. */
void jv_to_str(jctx *c, jbuf *b, jv v);
void jv_repr(jctx *c, jbuf *b, jv v);
jv jv_stringify(jctx *c, jv v); /* str(v) as a string value */
void jv_float_repr(double f, char out[40]);

/* json.dumps(v, ensure_ascii, indent, separators, sort_keys). indent < 0: none; indent_str
 * overrides the indent unit when not NULL. Fails (line) on values JSON cannot hold. */
void jv_tojson(jctx *c, int line, jbuf *b, jv v, int indent, const char *indent_str, const char *item_sep,
               const char *key_sep, int sort_keys, int ensure_ascii);

/* buffers (arena-backed) */
void jb_put(jctx *c, jbuf *b, const char *s, size_t n);
void jb_puts(jctx *c, jbuf *b, const char *s);
void jb_putc(jctx *c, jbuf *b, char ch);

/* UTF-8 helpers */
size_t ju_len(const char *s, size_t n);                      /* code points */
size_t ju_offset(const char *s, size_t n, size_t cp);        /* byte offset of code point cp (clamped) */
int32_t ju_decode(const char *s, size_t n, size_t *adv);     /* one code point; invalid byte -> itself */
/* the code point ending at byte end (> lo), its first byte (>= lo) into *start */
int32_t ju_decode_before(const char *s, size_t lo, size_t end, size_t *start);
size_t ju_encode(int32_t cp, char out[4]);
int ju_isspace(int32_t cp);                                   /* Python str.isspace for one char */

/* Python's character classes (jinja_unicode.c): str.isdecimal/isdigit/isnumeric/isalpha/
 * isprintable of one character; ju_islower/ju_isupper the Lowercase/Uppercase properties,
 * ju_istitle category Lt (what str.islower/isupper/istitle test). */
int ju_isdecimal(int32_t cp);
int ju_decimal_value(int32_t cp); /* a decimal digit's value (str.isdecimal), or -1 */
int ju_isdigit(int32_t cp);
int ju_isnumeric(int32_t cp);
int ju_isalpha(int32_t cp);
int ju_isprintable(int32_t cp);
int ju_islower(int32_t cp);
int ju_isupper(int32_t cp);
int ju_istitle(int32_t cp);

/* ---- AST ---- */
typedef enum {
    /* statements */
    JN_TEXT, JN_OUTPUT, JN_IF, JN_FOR, JN_SET, JN_SET_BLOCK, JN_MACRO, JN_CALLBLOCK, JN_FILTERBLOCK,
    JN_BREAK, JN_CONTINUE, JN_BODY,
    /* expressions */
    JN_LIT, JN_NAME, JN_LIST, JN_TUPLE, JN_DICT, JN_GETATTR, JN_GETITEM, JN_SLICE, JN_CALL, JN_FILTER,
    JN_TEST, JN_BINOP, JN_UNARY, JN_AND, JN_OR, JN_NOT, JN_COMPARE, JN_COND, JN_CONCAT
} jn_kind;

/* JN_MACRO's op: the special names its body refers to (set by jinja_check). As in Jinja, a macro
 * takes extra keyword arguments only when its body uses `kwargs`, extra positional ones only when it
 * uses `varargs`, and a `caller` keyword only when it uses `caller`. */
enum { JM_CALLER = 1, JM_KWARGS = 2, JM_VARARGS = 4 };

typedef struct jnode {
    jn_kind k;
    int line;
    int op;               /* operator token id for BINOP/UNARY/COMPARE; negated test; JM_* of a macro */
    const char *name;     /* NAME/GETATTR attr/FILTER/TEST/MACRO name; TEXT bytes */
    size_t name_n;
    jv lit;               /* JN_LIT */
    struct jnode *a, *b, *c, *d; /* children, meaning depends on kind */
    struct jnode **items; /* list elements, call args, body statements, dict keys, compare operands */
    int nitems;
    struct jnode **items2; /* dict values, call kwarg values, else-body, macro defaults */
    int nitems2;
    const char **names;    /* call kwarg names, for/set targets, macro params */
    size_t *names_n;
    int nnames;
} jnode;

/* operator ids (also lexer tokens) */
enum {
    JOP_ADD = 1, JOP_SUB, JOP_MUL, JOP_DIV, JOP_FLOORDIV, JOP_MOD, JOP_POW, JOP_TILDE,
    JOP_EQ, JOP_NE, JOP_LT, JOP_LE, JOP_GT, JOP_GE, JOP_IN, JOP_NOTIN
};

/* Parses a template (already newline-normalised) into a JN_BODY node allocated in arena a.
 * Returns NULL after writing "chat template line N: ..." into err (err_len bytes). */
jnode *jinja_parse(jarena *a, const char *src, size_t n, char *err, size_t err_len);

/* The load-time check (jinja_check.c), run by jinja_parse: refuses filters, tests, loop attributes,
 * methods and globals outside the subset, and sets each macro's JM_* flags. 0, or -1 with err. */
int jinja_check(jnode *body, char *err, size_t err_len);

/* Renders the tree; globals are set in c->root beforehand. 0 ok, -1 with c->errmsg. */
int jinja_render(jctx *c, const jnode *body, jbuf *out);

/* evaluator helpers shared with filters */
jv jx_eval(jctx *c, const jnode *e);
jv jx_call(jctx *c, int line, jv fn, jv *args, int nargs, const char **kwn, jv *kwv, int nkw);
jv jx_getattr(jctx *c, int line, jv obj, const char *name, size_t n);
jv jx_getitem(jctx *c, int line, jv obj, jv key);
int jx_compare(jctx *c, int line, jv a, jv b); /* <0, 0, >0 for ordering; fails on unorderable */
jv jx_iter_list(jctx *c, int line, jv v);       /* iterable -> list (dict: keys; str: chars) */

/* filters/tests/methods (jinja_filters.c, jinja_methods.c) */
jv jx_filter(jctx *c, int line, const char *name, size_t n, jv v, jv *args, int nargs, const char **kwn,
             jv *kwv, int nkw);
int jx_test(jctx *c, int line, const char *name, size_t n, jv v, jv *args, int nargs);
/* Method call obj.name(args); *found = 0 when obj has no such method. */
jv jx_method(jctx *c, int line, jv obj, const char *name, size_t n, jv *args, int nargs, const char **kwn,
             jv *kwv, int nkw, int *found);
/* NULL-terminated names: the filters and tests jx_filter/jx_test implement, and the Python methods
 * of str, dict, list, int and float (and markupsafe's Markup) that jx_method does not. */
extern const char *const jx_filter_names[];
extern const char *const jx_test_names[];
extern const char *const jx_unsupported_methods[];
/* Global functions (range, namespace, dict, raise_exception, strftime_now); NULL if unknown. */
jbuiltin_fn jx_global_fn(const char *name);

jv jx_html_escape(jctx *c, jv s); /* markupsafe.escape of a str (result marked JG_MARKUP) */

/* Python's printf-style formatting fmt % args (jinja_format.c): args is a tuple (one value per
 * conversion), a mapping (dict) for %(key)s, or any other value as the one argument. A markup fmt
 * HTML-escapes the arguments and gives markup, as markupsafe does. Fails with Python's messages. */
jv jx_percent_format(jctx *c, int line, jv fmt, jv args);

/* fmt.format(*args, **kwargs), or fmt.format_map(args[0]) when format_map (jinja_strformat.c): as
 * jinja2's sandbox runs them (string.Formatter with sandboxed field access; a markup fmt escapes
 * its fields and gives markup). Fails with Python's messages. */
jv jx_str_format(jctx *c, int line, jv fmt, jv *args, int nargs, const char **kwn, jv *kwv, int nkw, int format_map);

/* Python's int(s, base) and float(s) of a string (jinja_pynum.c): 0, JX_NUM_INVALID (Python's
 * ValueError) or JX_NUM_OVERFLOW (an int beyond 64 bits). round(x, ndigits) as Python's. */
enum { JX_NUM_INVALID = 1, JX_NUM_OVERFLOW = 2 };
int jx_py_int(const char *s, size_t n, int base, int64_t *out);
int jx_py_float(const char *s, size_t n, double *out);
double jx_py_round_float(double x, int64_t ndigits);
int jx_py_round_int(int64_t x, int64_t ndigits, int64_t *out);

/* argument helper: positional i or keyword name, else dflt */
jv jx_arg(jv *args, int nargs, const char **kwn, jv *kwv, int nkw, int pos, const char *name, jv dflt);

#endif
