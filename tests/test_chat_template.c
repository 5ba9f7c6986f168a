/* Chat templates: byte-exact renderings against transformers' apply_chat_template
 * (tests/chat/expected.json, written by tests/chat/make_fixtures.py on the GPU machine), template
 * errors, unsupported constructs naming the line, and `moetrace chat-template` end to end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "chat/chat_template.h"
#include "util/json_util.h"
#include "test_files.h"

static cJSON *load_json(const char *rel) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", MT_SOURCE_DIR, rel);
    char *t = slurp(path, NULL);
    if (!t) fail_msg("cannot read %s", path);
    cJSON *j = cJSON_Parse(t);
    free(t);
    if (!j) fail_msg("%s: invalid JSON", path);
    return j;
}

static const char *tok_or_null(const cJSON *tokens, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(tokens, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static mt_chat_template *load_named(const char *name) {
    char rel[512];
    snprintf(rel, sizeof rel, "tests/chat/templates/%s.jinja", name);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", MT_SOURCE_DIR, rel);
    char *src = slurp(path, NULL);
    if (!src) fail_msg("cannot read %s", path);
    snprintf(rel, sizeof rel, "tests/chat/templates/%s.tokens.json", name);
    cJSON *tokens = load_json(rel);
    mt_chat_template *t = NULL;
    mt_err err = {{0}};
    if (mt_chat_template_from_string(&t, src, tok_or_null(tokens, "bos_token"), tok_or_null(tokens, "eos_token"), &err))
        fail_msg("%s: %s", name, err.msg);
    cJSON_Delete(tokens);
    free(src);
    return t;
}

static const cJSON *find_conv(const cJSON *convs, const char *name) {
    const cJSON *c;
    cJSON_ArrayForEach(c, convs) {
        if (!strcmp(cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring, name)) return c;
    }
    return NULL;
}

static void test_renderings(void **state) {
    (void)state;
    cJSON *expected = load_json("tests/chat/expected.json");
    cJSON *convs = load_json("tests/chat/conversations.json");
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(expected, "cases");
    assert_true(cJSON_IsArray(cases));
    int total = 0, ok = 0, ok_err = 0, bad = 0;
    char cur_name[256] = "";
    mt_chat_template *tpl = NULL;
    const cJSON *cs;
    cJSON_ArrayForEach(cs, cases) {
        const char *tname = cJSON_GetObjectItemCaseSensitive(cs, "template")->valuestring;
        const char *cname = cJSON_GetObjectItemCaseSensitive(cs, "conversation")->valuestring;
        int agp = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cs, "add_generation_prompt"));
        if (strcmp(tname, cur_name)) {
            mt_chat_template_free(tpl);
            tpl = load_named(tname);
            snprintf(cur_name, sizeof cur_name, "%s", tname);
        }
        const cJSON *conv = find_conv(convs, cname);
        assert_non_null(conv);
        total++;
        char *out = NULL;
        mt_err err = {{0}};
        int rc = mt_chat_render(tpl, cJSON_GetObjectItemCaseSensitive(conv, "messages"),
                                cJSON_GetObjectItemCaseSensitive(conv, "tools"), agp,
                                cJSON_GetObjectItemCaseSensitive(conv, "kwargs"), &out, &err);
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(cs, "output");
        const cJSON *want_err = cJSON_GetObjectItemCaseSensitive(cs, "error");
        if (cJSON_IsString(want_err)) {
            if (rc == 0) {
                bad++;
                fprintf(stderr, "MISMATCH %s/%s/agp=%d: expected error '%s', rendered OK\n", tname, cname, agp, want_err->valuestring);
            } else {
                ok_err++;
            }
        } else if (rc != 0) {
            bad++;
            fprintf(stderr, "MISMATCH %s/%s/agp=%d: render failed: %s\n", tname, cname, agp, err.msg);
        } else if (strcmp(out, want->valuestring)) {
            bad++;
            size_t i = 0;
            while (out[i] && out[i] == want->valuestring[i]) i++;
            size_t from = i > 40 ? i - 40 : 0;
            fprintf(stderr, "MISMATCH %s/%s/agp=%d at byte %zu:\n  got  [%.80s]\n  want [%.80s]\n", tname, cname, agp, i,
                    out + from, want->valuestring + from);
        } else {
            ok++;
        }
        free(out);
    }
    mt_chat_template_free(tpl);
    fprintf(stderr, "chat template renderings: %d cases, %d byte-equal, %d expected errors reproduced, %d mismatches\n",
            total, ok, ok_err, bad);
    cJSON_Delete(expected);
    cJSON_Delete(convs);
    assert_int_equal(bad, 0);
    assert_true(total >= 100);
}

static int render_str(const char *src, const char *messages_json, char **out, mt_err *err) {
    mt_chat_template *t = NULL;
    if (mt_chat_template_from_string(&t, src, "<s>", "</s>", err)) return -1;
    cJSON *m = cJSON_Parse(messages_json);
    int rc = mt_chat_render(t, m, NULL, 1, NULL, out, err);
    cJSON_Delete(m);
    mt_chat_template_free(t);
    return rc;
}

static void test_errors_name_line(void **state) {
    (void)state;
    char *out = NULL;
    mt_err err = {{0}};
    assert_int_equal(render_str("a\nb\n{{ messages | frobnicate }}", "[]", &out, &err), -1);
    assert_non_null(strstr(err.msg, "line 3"));
    assert_non_null(strstr(err.msg, "unsupported filter 'frobnicate'"));
    assert_int_equal(render_str("{% for m in messages %}\n{% include 'x' %}{% endfor %}", "[]", &out, &err), -1);
    assert_non_null(strstr(err.msg, "line 2"));
    assert_non_null(strstr(err.msg, "unsupported statement 'include'"));
    assert_int_equal(render_str("{% if true %}\nno end", "[]", &out, &err), -1);
    assert_non_null(strstr(err.msg, "line 1"));
    assert_int_equal(render_str("\n\n{{ raise_exception('nope') }}", "[]", &out, &err), -1);
    assert_non_null(strstr(err.msg, "line 3"));
    assert_non_null(strstr(err.msg, "nope"));
    assert_int_equal(render_str("{{ messages[0].content.bad.worse }}", "[{\"content\": \"x\"}]", &out, &err), -1);
    assert_int_equal(render_str("{{ x is frob }}", "[]", &out, &err), -1);
    assert_non_null(strstr(err.msg, "unsupported test 'frob'"));
    assert_int_equal(render_str("{% set ns = namespace(l=[]) %}{{ ns.l.append(1) }}", "[]", &out, &err), -1);
    assert_non_null(strstr(err.msg, "unsafe"));
    assert_int_equal(render_str("{{ 'a' + 1 }}", "[]", &out, &err), -1);
    assert_int_equal(render_str("{{ (1 }}", "[]", &out, &err), -1);
    assert_int_equal(render_str("{{ 'abc' }", "[]", &out, &err), -1);
    /* undefined renders empty and is falsy; whitespace control */
    assert_int_equal(render_str("[{{ nothing }}]{% if nothing %}x{% endif %}  {{- bos_token -}}  |", "[]", &out, &err), 0);
    assert_string_equal(out, "[]<s>|");
    free(out);
    assert_int_equal(render_str("{{ messages[0]['content'][::-1] ~ '|' ~ messages|length }}", "[{\"content\": \"h\u00e9llo\"}]", &out, &err), 0);
    assert_string_equal(out, "oll\u00e9h|1");
    free(out);
}

/* What fuzz/fuzz_chat_template.c found: integer arithmetic past 64 bits (undefined behaviour,
 * now an error; Python's ints would grow), repetitions and steps that overflowed or never ended,
 * sorting an empty list (memcpy from NULL), int with a bad base (an unset pointer read) or of a float
 * beyond 64 bits, and templates that loop without end (a render is bounded in memory). */
/* Templates rendered over no messages: each to its text, or failing with a message holding needle. */
typedef struct { const char *src, *want; } render_case;
typedef struct { const char *src, *needle; } fail_case;

static void expect_renders(const render_case *ok, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char *out = NULL;
        mt_err err = {{0}};
        if (render_str(ok[i].src, "[]", &out, &err)) fail_msg("%s: %s", ok[i].src, err.msg);
        assert_string_equal(out, ok[i].want);
        free(out);
    }
}

static void expect_fails(const fail_case *bad, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char *out = NULL;
        mt_err err = {{0}};
        if (render_str(bad[i].src, "[]", &out, &err) != -1) fail_msg("%s rendered '%s'", bad[i].src, out);
        if (!strstr(err.msg, bad[i].needle)) fail_msg("%s: '%s' lacks '%s'", bad[i].src, err.msg, bad[i].needle);
    }
}

static void test_limits(void **state) {
    (void)state;
    static const render_case ok[] = {
        {"{{ [] | sort }}|{{ missing | sort }}", "[]|[]"},
        {"{{ 7 % -3 }} {{ -7 % 3 }} {{ -9223372036854775807 % 3 }} {{ (-2) ** 63 }} {{ 1 ** 9223372036854775807 }}",
         "-2 2 2 -9223372036854775808 1"},
        {"[{{ '' * 9223372036854775807 }}][{{ ([] * 9223372036854775807) | length }}]", "[][0]"},
        {"{{ [1, 2, 3, 4, 5, 6][4::9223372036854775807] }} {{ 'abcdef'[1::9223372036854775807] }}", "[5] b"},
        {"{{ range(9223372036854775806, 9223372036854775807, 4611686018427387904) | list }}", "[9223372036854775806]"},
        /* int(s, base) with a base Python refuses falls back to float(s), then the default (strtoll's
         * end pointer was read unset) */
        {"{{ 'x\\ny' | int(1, true) }} {{ '12' | int(1, true) }} {{ 'ff' | int(0, 16) }} {{ '  ' | int(5) }} {{ '7' | int(0, 'x') }}",
         "1 12 255 5 7"},
    };
    expect_renders(ok, sizeof ok / sizeof *ok);
    static const fail_case bad[] = {
        {"{{ 1152921504606846976 * 1024 }}", "integer overflow"},
        {"{{ 2 ** 64 }}", "integer overflow"},
        {"{{ -9223372036854775807 - 2 }}", "integer overflow"},
        {"{{ (-9223372036854775807 - 1) // -1 }}", "integer overflow"},
        {"{{ 'abcd' * 4611686018427387904 }}", "repetition too large"},
        {"{{ 1e300 | int }}", "integer overflow"},
        {"{{ '-1e19' | int }}", "integer overflow"},
        {"{{ 'x' | indent(9223372036854775807) }}", "width too large"},
        {"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "MiB"},
    };
    expect_fails(bad, sizeof bad / sizeof *bad);
}

/* printf-style formatting (`'%s' % x`, `|format`): renderings are in the snippets (checked against
 * jinja2); here, that each of Python's errors is one naming its problem (the expected texts are
 * CPython 3.11's, except %c's, worded as in later versions), and the limits that Python lacks. */
static void test_percent_format(void **state) {
    (void)state;
    static const render_case ok[] = {
        {"{{ '%s-%05.1f|%-4d|%x' % ('a', 2.25, 7, 255) }}", "a-002.2|7   |ff"},
        {"{{ '%(name)s=%(v)r' % {'name': 'k', 'v': 'x'} }}|{{ '%s' % none }}|{{ '%s%%'|format(5) }}", "k='x'|None|5%"},
        {"{{ '%(a)s'|format(a=[1]) }}|{{ '%c%c' % (233, 'z') }}|{{ '%*s|' % (-3, 'x') }}", "[1]|\xc3\xa9z|x  |"},
    };
    expect_renders(ok, sizeof ok / sizeof *ok);
    static const fail_case bad[] = {
        {"{{ '%s %s' % (1,) }}", "line 1: not enough arguments for format string"},
        {"{{ '%s' % () }}", "not enough arguments for format string"},
        {"{{ '%*d' % (5,) }}", "not enough arguments for format string"},
        {"{{ '%s' % (1, 2) }}", "not all arguments converted during string formatting"},
        {"{{ 'abc' % 5 }}", "not all arguments converted during string formatting"},
        {"{{ '%d' % 'a' }}", "%d format: a real number is required, not str"},
        {"{{ '%i' % [1] }}", "%i format: a real number is required, not list"},
        {"{{ '%x' % 1.5 }}", "%x format: an integer is required, not float"},
        {"{{ '%f' % none }}", "must be real number, not NoneType"},
        {"{{ '%d' % (1e308 * 10) }}", "cannot convert float infinity to integer"},
        {"{{ '%d' % (1e308 * 10 * 0) }}", "cannot convert float NaN to integer"},
        {"{{ '%c' % 'ab' }}", "%c requires an int or a unicode character, not a string of length 2"},
        {"{{ '%c' % 1.5 }}", "%c requires an int or a unicode character, not float"},
        {"{{ '%c' % 1114112 }}", "%c arg not in range(0x110000)"},
        {"{{ '%c' % 55296 }}", "%c of 55296 (U+D800): Python gives a lone surrogate"},
        {"{{ '%z' % 1 }}", "unsupported format character 'z' (0x7a) at index 1"},
        {"{{ '\xc3\xa9%\xc3\xa9' % 1 }}", "unsupported format character '?' (0xe9) at index 2"},
        {"{{ '%(a)s' % (1,) }}", "format requires a mapping"},
        {"{{ '%(a)s' % 'x' }}", "format requires a mapping"},
        {"{{ '%(a)s' % {'b': 1} }}", "KeyError: 'a'"},
        {"{{ '%(a)s' % [1] }}", "list indices must be integers or slices, not str"},
        {"{{ '%(a' % {'a': 1} }}", "incomplete format key"},
        {"{{ '%-5' % (1,) }}", "incomplete format"},
        {"{{ 'abc%' % () }}", "incomplete format"},
        {"{{ '%*d' % (1.5, 2) }}", "* wants int"},
        {"{{ '%.*f' % ('2', 2.0) }}", "* wants int"},
        {"{{ '%d' % undefined_var }}", "'undefined_var' is undefined"},
        {"{{ '%(a)s' % undefined_var }}", "'undefined_var' is undefined"},
        {"{{ '%s'|format(1, a=2) }}", "format: can't handle positional and keyword arguments at the same time"},
        {"{{ '%(a)s'|format(1) }}", "format requires a mapping"},
        {"{{ '%s %s'|format(1) }}", "not enough arguments for format string"},
        {"{{ '%d'|safe % 'x' }}", "invalid literal for int() with base 10: 'x'"},
        {"{{ '%f'|safe % '1e' }}", "could not convert string to float: '1e'"},
        {"{{ '%x'|safe % 5 }}", "%x format: an integer is required, not _MarkupEscapeHelper"},
        {"{{ '%*s'|safe % (3, 'a') }}", "* wants int"},
        /* beyond Python: bounded widths, precisions and memory */
        {"{{ '%99999999999s' % 'x' }}", "width too big"},
        {"{{ '%*s' % (9223372036854775807, 'x') }}", "width too big"},
        {"{{ '%.99999999999s' % 'x' }}", "precision too big"},
        {"{{ '%.2000000f' % 1.0 }}", "precision too big"},
        {"{{ '%2000000000s' % 'x' }}", "MiB"},
    };
    expect_fails(bad, sizeof bad / sizeof *bad);
}

/* str.format and str.format_map: renderings are in the snippets (checked against jinja2's
 * sandbox); here, that each error carries Python's message (string.Formatter's, as jinja2 3.1.6 on
 * Python 3.11 raises them), and what the renderer refuses beyond Python. */
static void test_str_format(void **state) {
    (void)state;
    static const render_case ok[] = {
        {"{{ '{} {:>4} {!r}'.format('a', 7, 'b') }}|{{ '{0:{1}}|'.format('x', 3) }}", "a    7 'b'|x  |"},
        {"{{ '{k}:{0[1]}'.format('ab', k='v') }}|{{ '{a}'.format_map({'a': '\xc3\xa9'}) }}|{{ '{:\xc3\xa9^5}'.format('x') }}",
         "v:b|\xc3\xa9|\xc3\xa9\xc3\xa9x\xc3\xa9\xc3\xa9"},
        {"{{ '{0.nope}|{0.__class__}|{0[9]}'.format([1]) }}", "||"},
    };
    expect_renders(ok, sizeof ok / sizeof *ok);
    static const fail_case bad[] = {
        {"{{ '{0}{}'.format(1, 2) }}", "line 1: cannot switch from manual field specification to automatic field numbering"},
        {"{{ '{}{1}'.format(1, 2) }}", "cannot switch from manual field specification to automatic field numbering"},
        {"{{ '{name}'.format(nom=1) }}", "KeyError: 'name'"},
        {"{{ '{x}'.format_map({}) }}", "KeyError: 'x'"},
        {"{{ '{[0]}'.format([1]) }}", "KeyError: ''"},
        {"{{ '{2}'.format(1, 2) }}", "tuple index out of range"},
        {"{{ '{}'.format() }}", "tuple index out of range"},
        {"{{ '{99999999999999999999}'.format(1) }}", "Too many decimal digits in format string"},
        {"{{ '{:99999999999999999999}'.format(1) }}", "Too many decimal digits in format string"},
        {"{{ '{'.format(1) }}", "Single '{' encountered in format string"},
        {"{{ 'a}b'.format() }}", "Single '}' encountered in format string"},
        {"{{ '{0'.format(1) }}", "expected '}' before end of string"},
        {"{{ '{0{}'.format(1) }}", "unexpected '{' in field name"},
        {"{{ '{:{}'.format(1) }}", "unmatched '{' in format spec"},
        {"{{ '{!'.format(1) }}", "end of string while looking for conversion specifier"},
        {"{{ '{0!rr}'.format(1) }}", "expected ':' after conversion specifier"},
        {"{{ '{0!x}'.format(1) }}", "Unknown conversion specifier x"},
        {"{{ '{:{:{}}}'.format(1, 2, 3) }}", "Max string recursion exceeded"},
        {"{{ '{0.}'.format(1) }}", "Empty attribute in format string"},
        {"{{ '{0[]}'.format(1) }}", "Empty attribute in format string"},
        {"{{ '{0[a]b}'.format({'a': 1}) }}", "Only '.' or '[' may follow ']' in format field specifier"},
        {"{{ '{:d}'.format('s') }}", "Unknown format code 'd' for object of type 'str'"},
        {"{{ '{:x}'.format(1.5) }}", "Unknown format code 'x' for object of type 'float'"},
        {"{{ '{:s}'.format(true) }}", "Unknown format code 's' for object of type 'bool'"},
        {"{{ '{:5 }'.format(1) }}", "Unknown format code '\\x20' for object of type 'int'"},
        {"{{ '{:x}'.format('a'|safe) }}", "Unknown format code 'x' for object of type 'Markup'"},
        {"{{ '{:5}'.format(none) }}", "unsupported format string passed to NoneType.__format__"},
        {"{{ '{:5}'.format([1]) }}", "unsupported format string passed to list.__format__"},
        {"{{ '{:5}'.format(undefined_var) }}", "unsupported format string passed to Undefined.__format__"},
        {"{{ '{:,n}'.format(1) }}", "Cannot specify ',' with 'n'."},
        {"{{ '{:,x}'.format(1) }}", "Cannot specify ',' with 'x'."},
        {"{{ '{:,}'.format('s') }}", "Cannot specify ',' with 's'."},
        {"{{ '{:,_}'.format(1) }}", "Cannot specify both ',' and '_'."},
        {"{{ '{:+}'.format('s') }}", "Sign not allowed in string format specifier"},
        {"{{ '{: }'.format('s') }}", "Space not allowed in string format specifier"},
        {"{{ '{:#}'.format('s') }}", "Alternate form (#) not allowed in string format specifier"},
        {"{{ '{:z}'.format('s') }}", "Negative zero coercion (z) not allowed in string format specifier"},
        {"{{ '{:=5}'.format('s') }}", "'=' alignment not allowed in string format specifier"},
        {"{{ '{:.2d}'.format(1) }}", "Precision not allowed in integer format specifier"},
        {"{{ '{:z}'.format(1) }}", "Negative zero coercion (z) not allowed in integer format specifier"},
        {"{{ '{:+c}'.format(65) }}", "Sign not allowed with integer format specifier 'c'"},
        {"{{ '{:#c}'.format(65) }}", "Alternate form (#) not allowed with integer format specifier 'c'"},
        {"{{ '{:c}'.format(1114112) }}", "%c arg not in range(0x110000)"},
        {"{{ '{:10.2fx}'.format(1.5) }}", "Invalid format specifier '10.2fx' for object of type 'float'"},
        {"{{ '{:.}'.format(1.5) }}", "Format specifier missing precision"},
        {"{{ '{a}'.format_map({'a': 1}, b=2) }}", "format_map() takes no keyword arguments"},
        {"{{ '{a}'.format_map() }}", "format_map() takes exactly one argument (0 given)"},
        {"{{ '{a}'.format_map([1]) }}", "list indices must be integers or slices, not str"},
        {"{{ '{a}'.format_map(none) }}", "'NoneType' object is not subscriptable"},
        {"{{ ('{:3}'|safe).format('<'|safe) }}", "Unsupported format specification for Markup."},
        {"{{ '{0.x}'.format(undefined_var) }}", "'undefined_var' is undefined"},
        {"{{ '{0[x].y}'.format({}) }}", "'dict object' has no attribute 'x'"},
        {"{{ '{0[5][0]}'.format([1]) }}", "list object has no element 5"},
        {"{{ '{0.__class__.x}'.format(1) }}", "access to attribute '__class__' of 'int' object is unsafe."},
        /* beyond Python: what it prints with a memory address, a lone surrogate, bounded precision */
        {"{{ '{0.items}'.format({}) }}", "unsupported: str.format of dict.items, a method"},
        {"{{ '{0[upper]}'.format('s') }}", "unsupported: str.format of str.upper, a method"},
        {"{{ '{}'.format(range) }}", "memory address"},
        {"{{ '{}'.format([1]|map('string')) }}", "cannot print a generator"},
        {"{{ '{:c}'.format(55296) }}", "format code 'c' of 55296 (U+D800): Python gives a lone surrogate"},
        {"{{ '{:.2000000f}'.format(1.0) }}", "precision too big"},
        {"{{ '{:2000000000}'.format('x') }}", "MiB"},
    };
    expect_fails(bad, sizeof bad / sizeof *bad);
}

/* tests/chat/snippets_expected.json: small templates over the interpreter's subset, rendered by
 * jinja2 in transformers' environment (tests/chat/snippets.py). */
static void test_snippets(void **state) {
    (void)state;
    cJSON *doc = load_json("tests/chat/snippets_expected.json");
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(doc, "messages");
    const cJSON *cs;
    int total = 0, ok = 0, ok_err = 0, bad = 0;
    cJSON_ArrayForEach(cs, cJSON_GetObjectItemCaseSensitive(doc, "cases")) {
        const char *src = cJSON_GetObjectItemCaseSensitive(cs, "template")->valuestring;
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(cs, "output");
        total++;
        mt_chat_template *t = NULL;
        mt_err err = {{0}};
        char *out = NULL;
        int rc = mt_chat_template_from_string(&t, src, "<s>", "</s>", &err);
        if (rc == 0) rc = mt_chat_render(t, messages, NULL, 1, NULL, &out, &err);
        mt_chat_template_free(t);
        if (!cJSON_IsString(want)) {
            if (rc == 0) {
                bad++;
                fprintf(stderr, "SNIPPET %s\n  expected error %s, rendered [%s]\n", src,
                        cJSON_GetObjectItemCaseSensitive(cs, "error")->valuestring, out);
            } else ok_err++;
        } else if (rc != 0) {
            bad++;
            fprintf(stderr, "SNIPPET %s\n  failed: %s\n", src, err.msg);
        } else if (strcmp(out, want->valuestring)) {
            bad++;
            fprintf(stderr, "SNIPPET %s\n  got  [%s]\n  want [%s]\n", src, out, want->valuestring);
        } else ok++;
        free(out);
    }
    fprintf(stderr, "chat template snippets: %d cases, %d byte-equal, %d expected errors reproduced, %d mismatches\n",
            total, ok, ok_err, bad);
    cJSON_Delete(doc);
    assert_int_equal(bad, 0);
}

static int run_cli(const char *args, const char *outfile) {
    const char *bin = getenv("MOETRACE_BIN");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' chat-template %s > '%s' 2>'%s.err'", bin, args, outfile, outfile);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Writes text as the file path, then runs chat-template with args (as run_cli). */
static int write_and_run(const char *path, const char *text, const char *args, const char *outfile) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return run_cli(args, outfile);
}

/* The file at path holds both needles. */
static void expect_in_file(const char *path, const char *a, const char *b) {
    char *text = slurp(path, NULL);
    if (!text || !strstr(text, a) || !strstr(text, b)) fail_msg("%s: '%s' lacks '%s' or '%s'", path, text, a, b);
    free(text);
}

/* A tokenizer_config.json of named templates: "tool_use" when tools are given (an empty list too),
 * else "default", as transformers' get_chat_template chooses; a list with only "tool_use" renders
 * with tools and says why it cannot without. */
static void test_named_templates(void **state) {
    (void)state;
    char dir[] = "/tmp/mt_named_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    cJSON *msgs = cJSON_Parse("[{\"role\": \"user\", \"content\": \"hi\"}]");
    cJSON *tools = cJSON_Parse("[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]"), *none = cJSON_CreateArray();
    const char *lists[2] = {
        "{\"chat_template\": [{\"name\": \"default\", \"template\": \"D{{ messages[0].content }}\"},"
        " {\"name\": \"tool_use\", \"template\": \"T{{ tools|length }}{{ messages[0].content }}\"}]}",
        "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T{{ tools|length }}\"}]}"};
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(path, "wb");
        fputs(lists[k], f);
        fclose(f);
        mt_chat_template *t = NULL;
        mt_err err = {{0}};
        if (mt_chat_template_load(&t, dir, &err)) fail_msg("list %d: %s", k, err.msg);
        char *out = NULL;
        assert_int_equal(mt_chat_render(t, msgs, tools, 0, NULL, &out, &err), 0);
        assert_string_equal(out, k ? "T1" : "T1hi");
        free(out);
        assert_int_equal(mt_chat_render(t, msgs, none, 0, NULL, &out, &err), 0);
        assert_string_equal(out, k ? "T0" : "T0hi");
        free(out);
        if (k == 0) {
            assert_int_equal(mt_chat_render(t, msgs, NULL, 0, NULL, &out, &err), 0);
            assert_string_equal(out, "Dhi");
            free(out);
        } else {
            assert_int_equal(mt_chat_render(t, msgs, NULL, 0, NULL, &out, &err), -1);
            assert_non_null(strstr(err.msg, "no \"default\" entry, only \"tool_use\""));
        }
        mt_chat_template_free(t);
    }
    FILE *f = fopen(path, "wb");
    fputs("{\"chat_template\": [{\"name\": \"rag\", \"template\": \"R\"}]}", f);
    fclose(f);
    mt_chat_template *t = NULL;
    mt_err err = {{0}};
    assert_int_equal(mt_chat_template_load(&t, dir, &err), -1);
    assert_non_null(strstr(err.msg, "no entry named \"default\""));
    f = fopen(path, "wb"); /* each named template is parsed at load: a broken one is refused, named */
    fputs("{\"chat_template\": [{\"name\": \"default\", \"template\": \"D\"}, {\"name\": \"tool_use\", "
          "\"template\": \"{% include 'x' %}\"}]}", f);
    fclose(f);
    assert_int_equal(mt_chat_template_load(&t, dir, &err), -1);
    assert_non_null(strstr(err.msg, "the \"tool_use\" template: "));
    cJSON_Delete(msgs);
    cJSON_Delete(tools);
    cJSON_Delete(none);
    unlink(path);
    rmdir(dir);
}

/* JSON integers past 2^53 reach the template exactly (messages, tools and kwargs alike), as
 * Python's json reads them; floats stay floats. */
static void test_long_integers(void **state) {
    (void)state;
    mt_chat_template *t = NULL;
    mt_err err = {{0}};
    assert_int_equal(mt_chat_template_from_string(&t, "{{ messages[0].n }} {{ tools|tojson }} {{ x }} {{ y }}", NULL, NULL,
                                                  &err), 0);
    const char *m = "[{\"role\": \"user\", \"n\": 12345678901234567}]", *tl = "[{\"max\": 9223372036854775807}]",
               *kw = "{\"x\": -9007199254740993, \"y\": 1e17}";
    cJSON *msgs = mt_json_parse(m, strlen(m), NULL, NULL, &err), *tools = mt_json_parse(tl, strlen(tl), NULL, NULL, &err),
          *kwargs = mt_json_parse(kw, strlen(kw), NULL, NULL, &err);
    char *out = NULL;
    assert_int_equal(mt_chat_render(t, msgs, tools, 0, kwargs, &out, &err), 0);
    assert_string_equal(out, "12345678901234567 [{\"max\": 9223372036854775807}] -9007199254740993 1e+17");
    free(out);
    cJSON_Delete(msgs);
    cJSON_Delete(tools);
    cJSON_Delete(kwargs);
    mt_chat_template_free(t);
}

static void test_cli(void **state) {
    (void)state;
    const char *bin = getenv("MOETRACE_BIN");
    if (!bin) skip();
    char dir[] = "/tmp/mt_chat_XXXXXX";
    assert_non_null(mkdtemp(dir));
    /* a model folder with the Qwen3 template and the expected rendering of two settings */
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/chat/templates/qwen3.jinja", MT_SOURCE_DIR);
    char *src = slurp(path, NULL);
    assert_non_null(src);
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "chat_template", src);
    cJSON *eos = cJSON_AddObjectToObject(cfg, "eos_token");
    cJSON_AddStringToObject(eos, "content", "<|im_end|>");
    char *cfg_text = cJSON_Print(cfg);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "wb");
    fputs(cfg_text, f);
    fclose(f);
    free(cfg_text);
    cJSON_Delete(cfg);
    free(src);

    cJSON *convs = load_json("tests/chat/conversations.json");
    cJSON *expected = load_json("tests/chat/expected.json");
    const cJSON *conv = find_conv(convs, "tool_call");
    cJSON *wrapped = cJSON_CreateObject();
    cJSON_AddItemToObject(wrapped, "messages", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(conv, "messages"), 1));
    cJSON_AddItemToObject(wrapped, "tools", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(conv, "tools"), 1));
    char *wt = cJSON_Print(wrapped);
    snprintf(path, sizeof path, "%s/messages.json", dir);
    f = fopen(path, "wb");
    fputs(wt, f);
    fclose(f);
    free(wt);
    cJSON_Delete(wrapped);

    const cJSON *thinking = find_conv(convs, "enable_thinking_false");
    char *tm = cJSON_Print(cJSON_GetObjectItemCaseSensitive(thinking, "messages"));
    char tpath[4096];
    snprintf(tpath, sizeof tpath, "%s/thinking.json", dir);
    f = fopen(tpath, "wb");
    fputs(tm, f);
    fclose(f);
    free(tm);

    char args[8192], outp[4096];
    snprintf(outp, sizeof outp, "%s/out.txt", dir);
    struct { const char *conv, *extra; int agp; const char *file; } runs[] = {
        {"tool_call", "", 1, path},
        {"tool_call", "--no-generation-prompt", 0, path},
        {"enable_thinking_false", "--kwargs '{\"enable_thinking\": false}'", 1, tpath},
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        snprintf(args, sizeof args, "--model '%s' --messages '%s' %s", dir, runs[r].file, runs[r].extra);
        assert_int_equal(run_cli(args, outp), 0);
        char *got = slurp(outp, NULL);
        const cJSON *cs, *want = NULL;
        cJSON_ArrayForEach(cs, cJSON_GetObjectItemCaseSensitive(expected, "cases")) {
            if (!strcmp(cJSON_GetObjectItemCaseSensitive(cs, "template")->valuestring, "qwen3") &&
                !strcmp(cJSON_GetObjectItemCaseSensitive(cs, "conversation")->valuestring, runs[r].conv) &&
                cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cs, "add_generation_prompt")) == runs[r].agp)
                want = cJSON_GetObjectItemCaseSensitive(cs, "output");
        }
        assert_non_null(want);
        assert_string_equal(got, want->valuestring);
        free(got);
    }
    /* chat_template.jinja beside tokenizer_config.json wins, as in transformers */
    char jpath[4200];
    snprintf(jpath, sizeof jpath, "%s/chat_template.jinja", dir);
    snprintf(args, sizeof args, "--model '%s' --messages '%s'", dir, path);
    assert_int_equal(write_and_run(jpath, "{{ eos_token }}{{ messages | length }}{% if add_generation_prompt %}+{% endif %}\n",
                                   args, outp), 0);
    char *got = slurp(outp, NULL);
    assert_string_equal(got, "<|im_end|>6+");
    free(got);
    /* errors: missing folder, bad kwargs, unknown flag */
    snprintf(args, sizeof args, "--model '%s/nope' --messages '%s'", dir, path);
    assert_int_not_equal(run_cli(args, outp), 0);
    snprintf(args, sizeof args, "--model '%s' --messages '%s' --kwargs '[1]'", dir, path);
    assert_int_not_equal(run_cli(args, outp), 0);
    snprintf(args, sizeof args, "--bogus");
    assert_int_not_equal(run_cli(args, outp), 0);
    /* a message holding U+0000 (cJSON would cut it there): an error naming the file, not a prompt
     * rendered from "a"; an escaped backslash followed by u0000 is text */
    char npath[4200], errp[4200];
    snprintf(npath, sizeof npath, "%s/nul.json", dir);
    snprintf(errp, sizeof errp, "%s.err", outp);
    snprintf(args, sizeof args, "--model '%s' --messages '%s'", dir, npath);
    assert_int_equal(write_and_run(npath, "[{\"role\": \"user\", \"content\": \"a\\u0000bcdefgh\"}]", args, outp), 1);
    expect_in_file(errp, npath, "U+0000");
    snprintf(args, sizeof args, "--model '%s' --messages '%s' --kwargs '{\"x\": \"\\u0000\"}'", dir, path);
    assert_int_equal(run_cli(args, outp), 1);
    expect_in_file(errp, "--kwargs", "U+0000");
    snprintf(args, sizeof args, "--model '%s' --messages '%s'", dir, npath);
    assert_int_equal(write_and_run(npath, "[{\"role\": \"user\", \"content\": \"a\\\\u0000bcdefgh\"}]", args, outp), 0);
    got = slurp(outp, NULL);
    assert_string_equal(got, "<|im_end|>1+");
    free(got);
    snprintf(args, sizeof args, "--help");
    assert_int_equal(run_cli(args, outp), 0);
    cJSON_Delete(convs);
    cJSON_Delete(expected);
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_renderings),
        cmocka_unit_test(test_snippets),
        cmocka_unit_test(test_errors_name_line),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_percent_format),
        cmocka_unit_test(test_str_format),
        cmocka_unit_test(test_named_templates),
        cmocka_unit_test(test_long_integers),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
