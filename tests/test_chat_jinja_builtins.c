/* The chat-template interpreter's Jinja subset against jinja2 3.1.6 in transformers' environment
 * (the expected texts and messages are jinja2's): what lies outside the subset is refused when the
 * template is loaded, naming it and its line; Python's built-ins (round, int/float of strings,
 * split/rsplit/splitlines, character classes, full case mappings, padding, partition, find with
 * start/end), tuple/list equality, number literals and macro argument checks give jinja2's results. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "chat/chat_template.h"
#include "chat/jinja.h"

typedef struct { const char *src, *want; } tcase;

static int render(const char *src, char **out, mt_err *err) {
    mt_chat_template *t = NULL;
    if (mt_chat_template_from_string(&t, src, "<s>", "</s>", err)) return -2;
    cJSON *m = cJSON_CreateArray();
    int rc = mt_chat_render(t, m, NULL, 1, NULL, out, err);
    cJSON_Delete(m);
    mt_chat_template_free(t);
    return rc;
}

/* Loading fails (not only a render), with a message holding want. */
static void test_refused_at_load(void **state) {
    (void)state;
    static const tcase bad[] = {
        {"a\n{{ x|batch(2) }}", "line 2: unsupported filter 'batch'"},
        {"{% if tools %}{{ tools|groupby('a') }}{% endif %}", "line 1: unsupported filter 'groupby'"},
        {"{% filter wordwrap %}x{% endfilter %}", "unsupported filter 'wordwrap'"},
        {"{{ x|map('nosuch') }}", "unsupported filter 'nosuch'"},
        {"{{ x is filter }}", "unsupported test 'filter'"},
        {"{{ x|selectattr('a', 'nosuch') }}", "unsupported test 'nosuch'"},
        {"{% for i in x %}\n\n{{ loop.cycle('a', 'b') }}{% endfor %}", "line 3: unsupported loop attribute 'loop.cycle'"},
        {"{% for i in x %}{% if loop.changed(i) %}{% endif %}{% endfor %}", "unsupported loop attribute 'loop.changed'"},
        {"{{ messages[0].content.encode('utf-8') }}", "unsupported method 'encode'"},
        {"{{ 'x'.isidentifier() }}", "unsupported method 'isidentifier'"},
        {"{% if false %}{{ cycler('a', 'b') }}{% endif %}", "unsupported global function 'cycler'"},
        {"{% set j = joiner(', ') %}", "unsupported global function 'joiner'"},
        {"{{ lipsum(1) }}", "unsupported global function 'lipsum'"},
        {"{{ 'a\\N{BULLET}' }}", "unsupported: \\N{...} escapes"},
        {"{% macro m(caller) %}{{ caller }}{% endmacro %}", "the special 'caller' argument must be omitted or be given a default"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mt_chat_template *t = NULL;
        mt_err err = {{0}};
        if (mt_chat_template_from_string(&t, bad[i].src, "<s>", "</s>", &err) == 0) fail_msg("%s loaded", bad[i].src);
        if (!strstr(err.msg, bad[i].want)) fail_msg("%s: '%s' lacks '%s'", bad[i].src, err.msg, bad[i].want);
    }
}

/* Every filter and test the load-time check lets through is one the renderer implements. */
static void test_supported_names_dispatch(void **state) {
    (void)state;
    char src[256];
    for (int i = 0; jx_filter_names[i]; i++) {
        snprintf(src, sizeof src, "{{ 'a'|%s }}", jx_filter_names[i]);
        char *out = NULL;
        mt_err err = {{0}};
        if (render(src, &out, &err) == 0) free(out);
        if (strstr(err.msg, "unsupported filter") || strstr(err.msg, "unsupported test")) fail_msg("%s: %s", src, err.msg);
    }
    for (int i = 0; jx_test_names[i]; i++) {
        snprintf(src, sizeof src, "{{ 'a'|select('%s', 'a')|list }}", jx_test_names[i]);
        char *out = NULL;
        mt_err err = {{0}};
        if (render(src, &out, &err) == 0) free(out);
        if (strstr(err.msg, "unsupported filter") || strstr(err.msg, "unsupported test")) fail_msg("%s: %s", src, err.msg);
    }
}

static void test_python_builtins(void **state) {
    (void)state;
    static const tcase ok[] = {
        {"{{ 2.675|round(2) }} {{ 42|round }} {{ 2.5|round }} {{ 3.5|round }} {{ -2.5|round }} {{ 1250|round(-2) }} {{ 1350|round(-2) }} {{ -1250|round(-2) }} {{ 1250.0|round(-2) }} {{ -0.4|round(-1) }} {{ 0.1|round(20) }}",
         "2.67 42 2.0 4.0 -2.0 1200 1400 -1200 1200.0 -0.0 0.1"},
        {"{{ 2.5|round(0, 'floor') }} {{ 2.1|round(0, 'ceil') }} {{ 42|round(1, 'floor') }} {{ 2.675|round(2, 'ceil') }} {{ 155|round(-1, 'ceil') }}",
         "2.0 3.0 42.0 2.68 160.0"},
        {"{{ ' a b '.rsplit(None, 1) }} {{ '   a'.rsplit(None, 0) }} {{ 'a b '.split(None, 1) }} {{ '  a '.split(None, 0) }} {{ '  '.rsplit(None, 0) }} {{ 'a  b c'.rsplit(maxsplit=1) }}",
         "[' a', 'b'] ['   a'] ['a', 'b '] ['a '] [] ['a  b', 'c']"},
        {"{{ 'a\\x0bb\\x0cc\\x1cd\\x85e\\u2028f\\u2029g\\x1dh\\x1ei'.splitlines() }} {{ 'a\\nb\\r\\nc\\rd'.splitlines(true) }} {{ 'x\\n'.splitlines() }} {{ ''.splitlines() }}",
         "['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] ['a\\n', 'b\\r\\n', 'c\\r', 'd'] ['x'] []"},
        {"{{ '²'.isdigit() }} {{ 'Ⅻ'.isalnum() }} {{ '½'.isalnum() }} {{ '½'.isdigit() }} {{ '½'.isnumeric() }} {{ '一'.isnumeric() }} {{ '٣'.isdecimal() }} {{ '²'.isdecimal() }} {{ ''.isascii() }} {{ 'é'.isascii() }} {{ ''.isprintable() }} {{ 'a\\n'.isprintable() }}",
         "True True True False True True True False True False True False"},
        {"{{ 'ª'.islower() }} {{ 'Ⅻ'.isupper() }} {{ 'AB1'.isupper() }} {{ '1'.islower() }} {{ 'Hello World'.istitle() }} {{ 'Hello world'.istitle() }} {{ 'ǅa'.istitle() }}",
         "True True True False True False True"},
        {"{{ (1, 2) == [1, 2] }} {{ (1, 2) == (1, 2) }} {{ [1, 2] in [(1, 2)] }} {{ (1, 2) != [1, 2] }}",
         "False True False True"},
        {"{{ '1_000'|int }} {{ '0x10'|int }} {{ '0x10'|int(0, 16) }} {{ '0x_1f'|int(0, 0) }} {{ '٣4'|int }} {{ ' 12 '|int }} {{ '1__0'|int(-1) }} {{ '0x10'|float }} {{ '1_0.5'|float }} {{ '010'|int(0, 0) }} {{ ' Inf '|float }} {{ '+5'|int }} {{ '1e3'|int }}",
         "1000 0 16 31 34 12 -1 0.0 10.5 10 inf 5 1000"},
        {"{{ 0x10 }} {{ 0o17 }} {{ 0b101 }} {{ 0X_1f }} {{ 1_000 }} {{ 1_0.5e1_0 }} {{ 2E3 }} {{ [[1, 2]].0.1 }}",
         "16 15 5 31 1000 105000000000.0 2000.0 2"},
        {"{{ 'ß'.upper() }} {{ 'ﬁ'|upper }} {{ 'ΟΔΟΣ'.lower() }} {{ 'ΟΣ Ο'|lower }} {{ 'İ'|lower|length }} {{ 'ŉ'.upper() }} {{ 'ΐ'.upper() }}",
         "SS FI οδος ος ο 2 ʼN Ϊ́"},
        {"{{ 'ǆ'|title }} {{ 'ǆ'|capitalize }} {{ 'ǆ'.title() }} {{ 'ﬁx'.capitalize() }} {{ 'Straße'.casefold() }} {{ 'AbΣ ß'.swapcase() }} {{ 'hello-wORLD (x'|title }} {{ \"they're\".title() }}",
         "Ǆ ǅ ǅ Fix strasse aBς SS Hello-World (X They'Re"},
        {"{{ '-4'.zfill(5) }} {{ 'ab'.center(7, '*') }} {{ 'ab'.center(5) }}| {{ 'abc'.center(6) }}| {{ 'a'.ljust(3, '.') }} {{ 'a'.rjust(3) }} {{ 'a=b=c'.partition('=') }} {{ 'a=b=c'.rpartition('=') }} {{ 'a'.rpartition('=') }}",
         "-0004 ***ab**   ab |  abc  | a..   a ('a', '=', 'b=c') ('a=b', '=', 'c') ('', '', 'a')"},
        {"{{ 'abcab'.find('b', 2) }} {{ 'abcab'.rfind('b', 0, 3) }} {{ 'abcab'.index('a', 1) }} {{ 'abcab'.count('ab', 1) }} {{ 'abc'.startswith('b', 1) }} {{ 'abc'.endswith('b', 0, 2) }} {{ 'abc'.find('', 4) }} {{ 'abc'.count('', 1) }} {{ 'abc'.startswith(('x', 'bc'), -2) }}",
         "4 1 3 1 True True -1 3 True"},
        {"{{ 'a\\tbc\\td'.expandtabs(4) }} {{ 'pre_x'.removeprefix('pre_') }} {{ 'x.py'.removesuffix('.py') }} {{ {'a': 1}.copy() }} {{ [1].copy() }}",
         "a   bc  d x x {'a': 1} [1]"},
        {"{{ 'hello world foo bar'|truncate(9) }} {{ 'hello world'|truncate(5, true) }} {{ 'hello world'|truncate(9, leeway=0) }} {{ 'abc'|center(7) }}|",
         "hello... he... hello...   abc  |"},
        {"{{ [1, 5, 3]|select('>', 2)|list }} {{ ('a'|safe) is escaped }} {{ 'a' is escaped }} {{ nothing is callable }}",
         "[5, 3] True False True"},
        {"{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, a=3, b=4) }}|{% macro k(a, b=2) %}{{ a }}{{ b }}{{ kwargs }}{% endmacro %}{{ k(1, a=5) }}|{{ k(b=3, a=4) }}",
         "1(2,){'a': 3, 'b': 4}|12{'a': 5}|43{}"},
        /* parameters named varargs, kwargs or caller (the review's cases; jinja2's texts) */
        {"{% macro m(a, varargs) %}{{ a }}{{ varargs }}{% endmacro %}{{ m(1, 2) }}|{% macro k(a, kwargs) %}{{ a }}{{ kwargs }}{% endmacro %}{{ k(1, 2) }}|{% macro c(caller=5) %}{{ caller }}{% endmacro %}{{ c(3) }}{{ c() }}|{% macro d(caller=none) %}[{{ caller() }}]{% endmacro %}{% call d() %}body{% endcall %}",
         "12|12|35|[body]"},
        {"{% for i in [1] %}{{ loop.depth }}{{ loop.depth0 }}{% endfor %}|{% macro cycler(a) %}[{{ a }}]{% endmacro %}{{ cycler(1) }}|{% set ns = namespace(zfill=1) %}{{ ns.zfill }}",
         "10|[1]|1"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        char *out = NULL;
        mt_err err = {{0}};
        if (render(ok[i].src, &out, &err)) fail_msg("%s: %s", ok[i].src, err.msg);
        if (strcmp(out, ok[i].want)) fail_msg("%s\n  got  [%s]\n  want [%s]", ok[i].src, out, ok[i].want);
        free(out);
    }
}

/* Render errors with jinja2's messages. */
static void test_python_errors(void **state) {
    (void)state;
    static const tcase bad[] = {
        {"{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}", "macro 'm' takes not more than 1 argument(s)"},
        {"{% macro m(a) %}{{ a }}{% endmacro %}{{ m(b=2) }}", "macro 'm' takes no keyword argument 'b'"},
        {"{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, a=2) }}", "macro 'm' takes no keyword argument 'a'"},
        {"{% macro m() %}x{% endmacro %}{% call m() %}y{% endcall %}", "macro 'm' was invoked with two values for the special caller argument. This is most likely a bug."},
        {"{% macro m(a) %}{{ caller(1, 2) }}{% endmacro %}{% call(x) m(1) %}{{ x }}{% endcall %}", "macro None takes not more than 1 argument(s)"},
        {"{{ 'x'|round }}", "type str doesn't define __round__ method"},
        {"{{ 1|round(0, 'up') }}", "method must be common, ceil or floor"},
        {"{{ 2.5|round(1.0) }}", "'float' object cannot be interpreted as an integer"},
        {"{{ 'ab'.center(5, '**') }}", "The fill character must be exactly one character long"},
        {"{{ 'ab'.partition('') }}", "empty separator"},
        {"{{ 'ab'.startswith(['a']) }}", "startswith first arg must be str or a tuple of str, not list"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *out = NULL;
        mt_err err = {{0}};
        int rc = render(bad[i].src, &out, &err);
        if (rc != -1) fail_msg("%s: %s", bad[i].src, rc ? err.msg : out);
        if (!strstr(err.msg, bad[i].want)) fail_msg("%s: '%s' lacks '%s'", bad[i].src, err.msg, bad[i].want);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_at_load),
        cmocka_unit_test(test_supported_names_dispatch),
        cmocka_unit_test(test_python_builtins),
        cmocka_unit_test(test_python_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
