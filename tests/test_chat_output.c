/* A chat completion's reasoning, content and tool calls (server/chat_output.h), in-process: the
 * parsers' names; whole outputs split as SGLang's qwen3 and deepseek-r1 reasoning parsers and its
 * qwen25 tool-call parser split them (markers, unclosed blocks, whitespace stripped as Python's
 * str.strip, several calls, bad JSON, names outside the request's tools, "</tool_call>" inside JSON
 * strings, nested objects, long integers); and the streaming splitter fed the same texts cut at every
 * byte, and byte by byte: its deltas join into the whole output's parts, never show part of a
 * UTF-8 character, and reasoning never follows content; what it holds back while a marker may be
 * coming, and stream_reasoning false (the reasoning in one delta). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/chat_output.h"
#include "util/json_util.h"

static const mt_chat_split_opts QWEN3 = {.reasoning = MT_REASONING_QWEN3};
static const mt_chat_split_opts R1 = {.reasoning = MT_REASONING_DEEPSEEK_R1};
static const mt_chat_split_opts TOOLS = {.tool_calls = true};
static const mt_chat_split_opts R1_TOOLS = {.reasoning = MT_REASONING_DEEPSEEK_R1, .tool_calls = true};
static const mt_chat_split_opts QWEN3_TOOLS = {.reasoning = MT_REASONING_QWEN3, .tool_calls = true};
static const mt_chat_split_opts OFF = {0};

/* "": the part is empty (null in an answer). */
static void assert_part(const mt_strbuf *got, const char *want, const char *what, const char *text) {
    if (got->len != strlen(want) || (got->len && memcmp(got->data, want, got->len)))
        fail_msg("%s of '%s': '%.*s', want '%s'", what, text, (int)got->len, got->data ? got->data : "", want);
}

static void check_whole(const mt_chat_split_opts *o, const char *text, const char *reasoning, const char *content) {
    mt_chat_output out;
    assert_int_equal(mt_chat_output_parse(o, text, strlen(text), &out), 0);
    assert_part(&out.reasoning, reasoning, "reasoning", text);
    assert_part(&out.content, content, "content", text);
    mt_chat_output_free(&out);
}

static void test_names(void **state) {
    (void)state;
    mt_reasoning_parser r;
    mt_tool_parser t;
    assert_int_equal(mt_reasoning_parser_from_name("qwen3", &r), 0);
    assert_int_equal(r, MT_REASONING_QWEN3);
    assert_string_equal(mt_reasoning_parser_name(r), "qwen3");
    assert_int_equal(mt_reasoning_parser_from_name("deepseek-r1", &r), 0);
    assert_string_equal(mt_reasoning_parser_name(r), "deepseek-r1");
    assert_int_equal(mt_reasoning_parser_from_name("deepseek", &r), -1);
    assert_int_equal(mt_reasoning_parser_from_name("", &r), -1);
    assert_null(mt_reasoning_parser_name(MT_REASONING_OFF));
    const char *qwen[] = {"qwen25", "qwen", "qwen3"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(mt_tool_parser_from_name(qwen[i], &t), 0);
        assert_string_equal(mt_tool_parser_name(t), "qwen25");
    }
    assert_int_equal(mt_tool_parser_from_name("hermes", &t), 0);
    assert_string_equal(mt_tool_parser_name(t), "hermes");
    assert_int_equal(mt_tool_parser_from_name("llama3", &t), -1);
    assert_null(mt_tool_parser_name(MT_TOOL_PARSER_OFF));
}

/* qwen3: reasoning only when the output opens it; then stripped, split at the first </think>. */
static void test_reasoning_qwen3(void **state) {
    (void)state;
    check_whole(&QWEN3, "Hello", "", "Hello");
    check_whole(&QWEN3, "  \nHello world \n", "", "  \nHello world \n"); /* no reasoning: as it is */
    check_whole(&QWEN3, "<think>\nLet me think.\n</think>\n\nThe answer is 42.\n", "Let me think.",
                "The answer is 42.");
    check_whole(&QWEN3, "\n <think>abc", "abc", "");            /* unclosed: all reasoning */
    check_whole(&QWEN3, "<think>\n\n</think>\n\n", "", "");       /* empty block */
    check_whole(&QWEN3, "<think></think>Hi", "", "Hi");
    check_whole(&QWEN3, "Hi <think>x</think>y", "", "Hi <think>x</think>y"); /* text first: no reasoning */
    check_whole(&QWEN3, "</think>x", "", "</think>x");           /* closing without opening: text */
    check_whole(&QWEN3, "<thi", "", "<thi");                     /* a marker's start at the end: text */
    check_whole(&QWEN3, "   ", "", "   ");
    check_whole(&QWEN3, "", "", "");
    /* in reasoning, further <think> are dropped; text after </think> is the content as it is (a
     * second </think> included), stripped */
    check_whole(&QWEN3, "<think>a <think>b</think> c </think> d ", "a b", "c </think> d");
    /* the reasoning's own whitespace inside is kept */
    check_whole(&QWEN3, "<think>line 1\n\nline 2</think>ok", "line 1\n\nline 2", "ok");
}

/* deepseek-r1: in reasoning from the start. */
static void test_reasoning_deepseek_r1(void **state) {
    (void)state;
    check_whole(&R1, "abc</think>def", "abc", "def");
    check_whole(&R1, "<think>\nabc\n</think>\n\ndef", "abc", "def");
    check_whole(&R1, "Thinking, no end", "Thinking, no end", "");
    check_whole(&R1, "a <think> b</think>c</think>d", "a  b", "c</think>d");
    check_whole(&R1, "</thi", "</thi", "");
    check_whole(&R1, "</think>", "", "");
    check_whole(&R1, " \n ", "", "");
    /* Unicode whitespace (U+3000, U+00A0, U+2003, U+2028) is stripped as Python strips it; a
     * character that is no whitespace (U+200B) is not */
    check_whole(&R1, "\xE3\x80\x80" "abc\xC2\xA0</think>\xE2\x80\x83x\xE2\x80\xA8", "abc", "x");
    check_whole(&R1, "\xE2\x80\x8B" "a</think>b", "\xE2\x80\x8B" "a", "b");
    /* no parser: everything is content */
    check_whole(&OFF, "<think>a</think> b ", "", "<think>a</think> b ");
}

static const char *const WEATHER[] = {"get_weather", "get_time"};
static const mt_chat_split_opts NAMED = {.tool_calls = true, .tool_names = WEATHER, .n_tool_names = 2};

typedef struct want_call {
    const char *name, *arguments;
} want_call;

static void check_calls(const mt_chat_split_opts *o, const char *text, const char *reasoning, const char *content,
                        const want_call *calls, int n) {
    mt_chat_output out;
    assert_int_equal(mt_chat_output_parse(o, text, strlen(text), &out), 0);
    assert_part(&out.reasoning, reasoning, "reasoning", text);
    assert_part(&out.content, content, "content", text);
    if (out.n_calls != n) fail_msg("'%s': %d calls, want %d", text, out.n_calls, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(out.calls[i].part, MT_CHAT_TOOL_CALL);
        assert_int_equal(out.calls[i].index, i);
        assert_string_equal(out.calls[i].name, calls[i].name);
        assert_string_equal(out.calls[i].arguments, calls[i].arguments);
    }
    mt_chat_output_free(&out);
}

static void test_tool_calls(void **state) {
    (void)state;
    const want_call paris[] = {{"get_weather", "{\"city\":\"Paris\"}"}};
    check_calls(&NAMED, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "",
                "", paris, 1);
    const want_call two[] = {{"get_weather", "{\"city\":\"Paris\"}"}, {"get_time", "{}"}};
    check_calls(&NAMED,
                "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
                "<tool_call>{\"name\": \"get_time\"}</tool_call>\nDone.\n",
                "", "Sure.\n\n\nDone.", two, 2);
    /* not calls: they stay in the content as they were */
    const char *bad[] = {
        "<tool_call>{bad json}</tool_call>",
        "<tool_call>{\"arguments\": {}}</tool_call>",                       /* no name */
        "<tool_call>{\"name\": 7, \"arguments\": {}}</tool_call>",          /* not a string */
        "<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>",       /* empty */
        "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>",  /* not among the tools */
        "<tool_call>{\"name\": \"get_time\", \"arguments\": [1]}</tool_call>", /* arguments not an object */
        "<tool_call>[{\"name\": \"get_time\"}]</tool_call>",                /* not an object */
        "<tool_call>{\"name\": \"get_time\"} extra</tool_call>",            /* text after the object */
        "<tool_call>{\"name\": \"get_time\", \"arguments\": {\"s\": \"\\u0000\"}}</tool_call>", /* U+0000 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) check_calls(&NAMED, bad[i], "", bad[i], NULL, 0);
    /* one bad block between good ones: it is text, the others calls */
    const want_call around[] = {{"get_time", "{}"}, {"get_time", "{\"tz\":\"UTC\"}"}};
    check_calls(&NAMED,
                "<tool_call>{\"name\": \"get_time\"}</tool_call> <tool_call>{oops}</tool_call> "
                "<tool_call>{\"name\": \"get_time\", \"parameters\": {\"tz\": \"UTC\"}}</tool_call>",
                "", "<tool_call>{oops}</tool_call>", around, 2);
    /* any name without a list of names */
    const want_call any[] = {{"rm_rf", "{}"}};
    check_calls(&TOOLS, "<tool_call>{\"name\": \"rm_rf\", \"arguments\": null}</tool_call>", "", "", any, 1);
    /* "</tool_call>" inside JSON strings (escaped quotes too) and nested objects */
    const want_call nested[] = {
        {"f", "{\"a\":{\"b\":[1,{\"c\":\"x}</tool_call>y\"}]},\"q\":\"say \\\"</tool_call>\\\"\"}"}};
    check_calls(&TOOLS,
                "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": {\"b\": [1, {\"c\": \"x}</tool_call>y\"}]}, "
                "\"q\": \"say \\\"</tool_call>\\\"\"}}</tool_call>",
                "", "", nested, 1);
    /* integers too long for a double keep their digits; non-ASCII text is kept as it is */
    const want_call big[] = {{"f", "{\"id\":1234567890123456789,\"n\":-9007199254740993,\"x\":1.5,\"s\":\"\xC3\xA9\"}"}};
    check_calls(&TOOLS,
                "<tool_call>{\"name\": \"f\", \"arguments\": {\"id\": 1234567890123456789, \"n\": -9007199254740993, "
                "\"x\": 1.5, \"s\": \"\xC3\xA9\"}}</tool_call>",
                "", "", big, 1);
    /* a block the output ends inside is content; so is a marker's start */
    check_calls(&TOOLS, "Text <tool_call>{\"name\": \"f\"", "", "Text <tool_call>{\"name\": \"f\"", NULL, 0);
    check_calls(&TOOLS, "Text <tool_call>{\"name\": \"f\"}</tool_", "", "Text <tool_call>{\"name\": \"f\"}</tool_", NULL, 0);
    check_calls(&TOOLS, "Text <tool_ca", "", "Text <tool_ca", NULL, 0);
    /* with tools the content is stripped, calls or not */
    check_calls(&TOOLS, "\n  Hello  \n", "", "Hello", NULL, 0);
    check_calls(&TOOLS, "</tool_call> x", "", "</tool_call> x", NULL, 0);
}

/* Both parsers: the reasoning first, then the calls of the content only. */
static void test_reasoning_and_tools(void **state) {
    (void)state;
    const want_call f[] = {{"f", "{\"a\":1}"}};
    check_calls(&R1_TOOLS, "I should call f.\n</think>\n\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>",
                "I should call f.", "", f, 1);
    check_calls(&QWEN3_TOOLS,
                "<think>maybe <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call></think>"
                "Calling. <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call>",
                "maybe <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call>", "Calling.", f, 1);
    /* qwen3 without reasoning: the calls of the whole text */
    check_calls(&QWEN3_TOOLS, "Calling.<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call>", "",
                "Calling.", f, 1);
}

/* A stopped output with calls finishes with "tool_calls"; one cut by the limit or aborted keeps its
 * reason. */
static void test_finish_reason(void **state) {
    (void)state;
    assert_string_equal(mt_chat_finish_reason("stop", 1), "tool_calls");
    assert_string_equal(mt_chat_finish_reason("stop", 0), "stop");
    assert_string_equal(mt_chat_finish_reason("length", 2), "length");
    assert_string_equal(mt_chat_finish_reason("abort", 1), "abort");
}

/* ---- streaming ----------------------------------------------------------------------------------- */

typedef struct joined {
    mt_strbuf reasoning, content, calls; /* calls: "index:name:arguments;" each */
    int n_deltas;
} joined;

static void joined_free(joined *j) {
    mt_strbuf_free(&j->reasoning);
    mt_strbuf_free(&j->content);
    mt_strbuf_free(&j->calls);
}

/* Adds deltas to j, checking each: whole UTF-8 characters, no empty text, no reasoning after
 * content or calls, calls numbered in order. */
static void take(joined *j, mt_chat_deltas *d, const char *text) {
    for (int i = 0; i < d->n; i++) {
        const mt_chat_delta *x = &d->items[i];
        j->n_deltas++;
        if (x->part == MT_CHAT_TOOL_CALL) {
            int calls = 0;
            for (size_t k = 0; k < j->calls.len; k++) calls += j->calls.data[k] == ';';
            assert_int_equal(x->index, calls);
            mt_strbuf_printf(&j->calls, "%d:%s:%s;", x->index, x->name, x->arguments);
            continue;
        }
        assert_true(x->text.len > 0);
        if (mt_utf8_valid_prefix(x->text.data, x->text.len) != x->text.len)
            fail_msg("'%s': a delta cuts a character: '%.*s'", text, (int)x->text.len, x->text.data);
        if (x->part == MT_CHAT_REASONING && (j->content.len || j->calls.len))
            fail_msg("'%s': reasoning after content: '%.*s'", text, (int)x->text.len, x->text.data);
        mt_strbuf_append(x->part == MT_CHAT_REASONING ? &j->reasoning : &j->content, x->text.data, x->text.len);
    }
    mt_chat_deltas_clear(d);
}

/* text fed in the pieces cut at cuts[0..n_cuts) (ascending byte offsets). */
static void stream_pieces(const mt_chat_split_opts *o, const char *text, const size_t *cuts, int n_cuts, joined *j) {
    mt_chat_split *s = mt_chat_split_new(o);
    assert_non_null(s);
    mt_chat_deltas d = {0};
    size_t at = 0, len = strlen(text);
    for (int i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        mt_chat_split_feed(s, text + at, end - at, &d);
        take(j, &d, text);
        at = end;
    }
    mt_chat_split_finish(s, &d);
    take(j, &d, text);
    int calls = 0;
    for (size_t k = 0; k < j->calls.len; k++) calls += j->calls.data[k] == ';';
    assert_int_equal(mt_chat_split_calls(s), calls);
    mt_chat_deltas_free(&d);
    mt_chat_split_free(s);
}

static void assert_same(const joined *a, const joined *b, const char *text, const char *how) {
    if (a->reasoning.len != b->reasoning.len || (a->reasoning.len && memcmp(a->reasoning.data, b->reasoning.data, a->reasoning.len)) ||
        a->content.len != b->content.len || (a->content.len && memcmp(a->content.data, b->content.data, a->content.len)) ||
        a->calls.len != b->calls.len || (a->calls.len && memcmp(a->calls.data, b->calls.data, a->calls.len)))
        fail_msg("'%s' %s: reasoning '%.*s' content '%.*s' calls '%.*s'; whole: '%.*s' '%.*s' '%.*s'", text, how,
                 (int)b->reasoning.len, b->reasoning.data ? b->reasoning.data : "", (int)b->content.len,
                 b->content.data ? b->content.data : "", (int)b->calls.len, b->calls.data ? b->calls.data : "",
                 (int)a->reasoning.len, a->reasoning.data ? a->reasoning.data : "", (int)a->content.len,
                 a->content.data ? a->content.data : "", (int)a->calls.len, a->calls.data ? a->calls.data : "");
}

/* The texts the splitter is checked on: markers at every place, multibyte characters around them. */
static const char *const STREAM_TEXTS[] = {
    "<think>\nLet me think.\n</think>\n\nThe answer is 42.\n",
    "\xC3\xA9<think>\xE6\x97\xA5\xE6\x9C\xAC</think>\xC2\xA0\xC3\xBC<tool_call>{\"name\":\"f\",\"arguments\":{\"x\":\"\xC3\x9F\"}}"
    "</tool_call>\xF0\x9F\x98\x80",
    " <think>\xE6\x97\xA5 <think> \xE2\x80\x83</think>\xE2\x80\x83\xF0\x9F\x98\x80 <tool_call>{\"name\": \"f\"}</tool_call>"
    "\xC3\xA9 ",
    "reasoning only \xE2\x80\x83 </thi",
    "a</think>b<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"q\": \"}</tool_call>\"}}</tool_call>c"
    "<tool_call>{bad}</tool_call>\n<tool_call>\n{\"name\": \"get_time\"}\n</tool_call>\n<tool_ca",
    "plain text, no markers at all \xE6\x97\xA5\xE6\x9C\xAC\n",
    "<tool_call>{\"name\": \"f\", \"arguments\": {\"s\": \"a\\\\\"}}</tool_call><tool_call>{\"name\": \"rm\"}</tool_call>",
    "   ",
    "<think>",
    "</think>",
    "<tool_call>{\"name\": \"f\", \"arguments\": {\"s\": \"unterminated}</tool_call> more",
};

/* Every text, under every parser combination: cut once at every byte, and fed byte by byte, the
 * deltas join into the whole output's parts. */
static void test_stream_matches_whole(void **state) {
    (void)state;
    const mt_chat_split_opts opts[] = {
        QWEN3, R1, TOOLS, R1_TOOLS, QWEN3_TOOLS, NAMED, OFF,
        {.reasoning = MT_REASONING_DEEPSEEK_R1, .hold_reasoning = true, .tool_calls = true},
        {.reasoning = MT_REASONING_QWEN3, .hold_reasoning = true},
    };
    for (size_t oi = 0; oi < sizeof opts / sizeof *opts; oi++) {
        for (size_t ti = 0; ti < sizeof STREAM_TEXTS / sizeof *STREAM_TEXTS; ti++) {
            const char *text = STREAM_TEXTS[ti];
            size_t len = strlen(text);
            mt_chat_output whole;
            assert_int_equal(mt_chat_output_parse(&opts[oi], text, len, &whole), 0);
            joined w = {0};
            mt_strbuf_append(&w.reasoning, whole.reasoning.data, whole.reasoning.len);
            mt_strbuf_append(&w.content, whole.content.data, whole.content.len);
            for (int i = 0; i < whole.n_calls; i++)
                mt_strbuf_printf(&w.calls, "%d:%s:%s;", whole.calls[i].index, whole.calls[i].name, whole.calls[i].arguments);
            mt_chat_output_free(&whole);
            for (size_t cut = 0; cut <= len; cut++) {
                joined j = {0};
                stream_pieces(&opts[oi], text, &cut, 1, &j);
                char how[64];
                snprintf(how, sizeof how, "options %zu, cut at %zu", oi, cut);
                assert_same(&w, &j, text, how);
                joined_free(&j);
            }
            size_t *cuts = malloc(len * sizeof *cuts);
            for (size_t k = 0; k < len; k++) cuts[k] = k + 1;
            joined j = {0};
            stream_pieces(&opts[oi], text, cuts, len ? (int)len - 1 : 0, &j);
            char how[64];
            snprintf(how, sizeof how, "options %zu, byte by byte", oi);
            assert_same(&w, &j, text, how);
            joined_free(&j);
            free(cuts);
            joined_free(&w);
        }
    }
}

typedef struct step {
    const char *feed;      /* NULL: finish */
    const char *reasoning; /* what the deltas of this step join into, per part */
    const char *content;
    int calls;
} step;

static void run_steps(const mt_chat_split_opts *o, const step *steps, int n) {
    mt_chat_split *s = mt_chat_split_new(o);
    mt_chat_deltas d = {0};
    for (int i = 0; i < n; i++) {
        if (steps[i].feed) mt_chat_split_feed(s, steps[i].feed, strlen(steps[i].feed), &d);
        else mt_chat_split_finish(s, &d);
        joined j = {0};
        take(&j, &d, steps[i].feed ? steps[i].feed : "(end)");
        char what[64];
        snprintf(what, sizeof what, "step %d", i);
        assert_part(&j.reasoning, steps[i].reasoning, what, steps[i].feed ? steps[i].feed : "(end)");
        assert_part(&j.content, steps[i].content, what, steps[i].feed ? steps[i].feed : "(end)");
        int calls = 0;
        for (size_t k = 0; k < j.calls.len; k++) calls += j.calls.data[k] == ';';
        assert_int_equal(calls, steps[i].calls);
        joined_free(&j);
    }
    mt_chat_deltas_free(&d);
    mt_chat_split_free(s);
}

/* What goes out at each step: text that may be a marker's start, or whitespace that may be
 * stripped, waits; the rest goes at once. */
static void test_stream_holds_back(void **state) {
    (void)state;
    const step qwen3[] = {
        {"\n", "", "", 0},              /* may come before <think> */
        {"<thi", "", "", 0},
        {"nk>\nab", "ab", "", 0},
        {"c </th", "c", "", 0},         /* the space may end the reasoning: held */
        {"ink>\n\n", "", "", 0},
        {"The", "", "The", 0},
        {" answer \n", "", " answer", 0}, /* trailing whitespace held */
        {NULL, "", "", 0},              /* and stripped at the end */
    };
    run_steps(&QWEN3, qwen3, sizeof qwen3 / sizeof *qwen3);
    const step plain[] = {
        {"\n", "", "", 0},
        {"Hi ", "", "\nHi ", 0},        /* no reasoning: as it is, at once */
        {"<think>", "", "<think>", 0},
        {NULL, "", "", 0},
    };
    run_steps(&QWEN3, plain, sizeof plain / sizeof *plain);
    const step held[] = {
        {"<think>ab", "", "", 0},       /* stream_reasoning false: the reasoning waits for its end */
        {"c</think> x", "abc", "x", 0},
        {NULL, "", "", 0},
    };
    run_steps(&(mt_chat_split_opts){.reasoning = MT_REASONING_QWEN3, .hold_reasoning = true}, held,
              sizeof held / sizeof *held);
    const step unended[] = {
        {"abc", "", "", 0},
        {NULL, "abc", "", 0},           /* no </think>: at the end */
    };
    run_steps(&(mt_chat_split_opts){.reasoning = MT_REASONING_DEEPSEEK_R1, .hold_reasoning = true}, unended,
              sizeof unended / sizeof *unended);
    const step tools[] = {
        {"Hi <tool_", "", "Hi", 0},
        {"call>{\"name\": \"f\", \"arguments\": {}}</tool_c", "", "", 0},
        {"all>\n", "", "", 1},          /* the call, whole */
        {"<tool_call>{\"name\": \"f\"", "", "", 0},
        {" and", "", "", 0},
        {NULL, "", " \n<tool_call>{\"name\": \"f\" and", 0}, /* never ended: content (with the held space) */
    };
    run_steps(&TOOLS, tools, sizeof tools / sizeof *tools);
    /* a UTF-8 character cut between pieces goes out whole */
    const step utf8[] = {
        {"\xE6\x97", "", "", 0},
        {"\xA5\xE6", "", "\xE6\x97\xA5", 0},
        {"\x9C\xAC", "", "\xE6\x9C\xAC", 0},
        {NULL, "", "", 0},
    };
    run_steps(&OFF, utf8, sizeof utf8 / sizeof *utf8);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_reasoning_qwen3),
        cmocka_unit_test(test_reasoning_deepseek_r1),
        cmocka_unit_test(test_tool_calls),
        cmocka_unit_test(test_reasoning_and_tools),
        cmocka_unit_test(test_finish_reason),
        cmocka_unit_test(test_stream_matches_whole),
        cmocka_unit_test(test_stream_holds_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
