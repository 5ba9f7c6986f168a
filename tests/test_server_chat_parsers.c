/* moetrace serve with SGLang's chat parsers: --reasoning-parser qwen3 --tool-call-parser qwen25 on
 * one server, --reasoning-parser deepseek-r1 --tool-call-parser hermes on another, over the small
 * text model (dummy weights) whose test tokenizer has "<think>" and "</think>" as tokens (1000,
 * 1001) and writes "<tool_call>" as three ("<tool", "_call", ">"). The model's output is random, so
 * logit_bias steers it towards the markers, and each answer is checked against its own tokens: with
 * logprobs, the tokens' bytes join into the raw output (special tokens kept, eos ignored), which
 * server/chat_output.h splits as the server must have (its parsing is tested in
 * test_chat_output.c). Checked: /get_server_info names the parsers, bad names are refused at
 * start-up; the message's content, reasoning_content (null when empty) and tool_calls, the same
 * streamed (delta.reasoning_content, delta.content; logprobs still listing every token); markers
 * forced by a +100 bias; separate_reasoning false (the raw text as content), stream_reasoning false
 * (the reasoning in one chunk) and their bad values; tools with tool_choice "none" parsed as no
 * tools; enable_thinking false leaving the content whole; /v1/completions and /generate unparsed. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "server/chat_output.h"
#include "server_setup.h"
#include "test_cli.h"
#include "tokenizer/tok_util.h"
#include "util/strbuf.h"

/* SERVER_TEXT_CONFIG with a context that fits the template's tool listing. */
static const char CONFIG[] =
    "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 1004, \"hidden_size\": 64, \"num_hidden_layers\": 3,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16, \"max_position_embeddings\": 1024,"
    " \"num_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32, \"intermediate_size\": 64,"
    " \"mlp_only_layers\": [0], \"eos_token_id\": 2}";

static mt_test_server g_qwen, g_r1;
static mt_http_client *g_cq, *g_cr;

static const char *const TOOL_NAMES[] = {"f", "get_weather"};
static const char TOOLS[] = "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {}}},"
                            " {\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}]";
/* What the servers do with a request without and with tools. */
static const mt_chat_split_opts QWEN = {.reasoning = MT_REASONING_QWEN3};
static const mt_chat_split_opts QWEN_TOOLS = {.reasoning = MT_REASONING_QWEN3, .tool_calls = true,
                                              .tool_names = TOOL_NAMES, .n_tool_names = 2};
static const mt_chat_split_opts R1 = {.reasoning = MT_REASONING_DEEPSEEK_R1};
static const mt_chat_split_opts R1_TOOLS = {.reasoning = MT_REASONING_DEEPSEEK_R1, .tool_calls = true,
                                            .tool_names = TOOL_NAMES, .n_tool_names = 2};

static int start(mt_test_server *srv, const char *flags, const char *log) {
    char args[1024];
    snprintf(args, sizeof args, "--model %s/model --load-format dummy --threads 1 --expert-dump-dir %s %s", g_dir, g_dir,
             flags);
    return mt_test_server_start(srv, g_bin, args, path_of(log), 120);
}

static int setup(void **state) {
    (void)state;
    if (server_setup("srvparse_")) return -1;
    if (!g_bin) return 0;
    if (server_text_model(CONFIG) || start(&g_qwen, "--reasoning-parser qwen3 --tool-call-parser qwen25", "qwen.log") ||
        start(&g_r1, "--reasoning-parser deepseek-r1 --tool-call-parser hermes", "r1.log"))
        return -1;
    g_cq = mt_http_client_new(g_qwen.url, NULL);
    g_cr = mt_http_client_new(g_r1.url, NULL);
    return 0;
}

static int teardown(void **state) {
    if (!g_bin) return 0;
    mt_http_client_free(g_cr);
    int st = g_r1.pid > 0 ? mt_test_server_stop(&g_r1, SIGTERM, 60) : 0;
    return server_stop_and_teardown(state, &g_qwen, g_cq) == 0 && st == 0 ? 0 : -1;
}

/* A string field, or NULL when it is null or absent. */
static const char *text_of(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A message part against the parsed one: null when that is empty, else the same text. */
static void assert_part(const cJSON *msg, const char *key, const mt_strbuf *want, const char *body) {
    const cJSON *v = cJSON_GetObjectItem(msg, key);
    if (!v) fail_msg("%s: no '%s' in the message", body, key);
    if (!want->len) {
        if (!cJSON_IsNull(v)) fail_msg("%s: '%s' is %s, want null", body, key, cJSON_PrintUnformatted(v));
        return;
    }
    if (!cJSON_IsString(v) || strlen(v->valuestring) != want->len || memcmp(v->valuestring, want->data, want->len))
        fail_msg("%s: '%s' is %s, want '%.*s'", body, key, cJSON_PrintUnformatted(v), (int)want->len, want->data);
}

/* The raw output of an answer with logprobs: its tokens' bytes joined, invalid UTF-8 made U+FFFD as
 * the text is decoded. */
static void raw_output(const cJSON *logprobs, mt_strbuf *out) {
    mt_strbuf joined = {0};
    const cJSON *t, *b;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(logprobs, "content")) {
        cJSON_ArrayForEach(b, cJSON_GetObjectItem(t, "bytes")) {
            char c = (char)b->valueint;
            mt_strbuf_append(&joined, &c, 1);
        }
    }
    tk_buf repaired = {0};
    tk_utf8_lossy(&repaired, joined.data ? joined.data : "", joined.len);
    mt_strbuf_append(out, repaired.p ? repaired.p : "", repaired.n);
    tk_buf_free(&repaired);
    mt_strbuf_free(&joined);
}

/* What an answer held. */
typedef struct outcome {
    bool reasoning, content, calls;
    bool tool_marker;       /* the raw output holds "<tool_call>" */
    int reasoning_chunks;   /* streamed: chunks carrying reasoning_content */
} outcome;

/* body (a JSON object without "stream") answered whole and streamed by c: the parts o gives for its
 * raw output, the same both ways; the tokens all listed. */
static outcome check_answer(mt_http_client *c, const mt_chat_split_opts *o, const char *body) {
    outcome r = {0};
    cJSON *j = server_call(c, "/v1/chat/completions", body, 200);
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItem(choice, "message"), *lp = cJSON_GetObjectItem(choice, "logprobs");
    int completion = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "completion_tokens")->valueint;
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(lp, "content")), completion);
    mt_strbuf raw = {0};
    raw_output(lp, &raw);
    mt_chat_output want;
    assert_int_equal(mt_chat_output_parse(o, raw.data ? raw.data : "", raw.len, &want), 0);
    assert_part(msg, "content", &want.content, body);
    assert_part(msg, "reasoning_content", &want.reasoning, body);
    const cJSON *calls = cJSON_GetObjectItem(msg, "tool_calls");
    assert_int_equal(cJSON_GetArraySize(calls), want.n_calls);
    if (!want.n_calls) assert_null(calls);
    for (int i = 0; i < want.n_calls; i++) {
        const cJSON *call = cJSON_GetArrayItem(calls, i), *fn = cJSON_GetObjectItem(call, "function");
        assert_true(!strncmp(text_of(call, "id"), "call_", 5));
        assert_string_equal(text_of(call, "type"), "function");
        assert_string_equal(text_of(fn, "name"), want.calls[i].name);
        assert_string_equal(text_of(fn, "arguments"), want.calls[i].arguments);
    }
    assert_string_equal(text_of(choice, "finish_reason"), want.n_calls ? "tool_calls" : "length");
    r.reasoning = want.reasoning.len > 0;
    r.content = want.content.len > 0;
    r.calls = want.n_calls > 0;
    r.tool_marker = raw.data && strstr(raw.data, "<tool_call>");

    /* streamed: the deltas join into the same parts */
    char sbody[4096];
    snprintf(sbody, sizeof sbody, "{\"stream\": true, %s", body + 1);
    mt_sse_events ev;
    long status;
    assert_int_equal(mt_api_stream(c, "/v1/chat/completions", sbody, &ev, &status), 0);
    assert_int_equal(status, 200);
    assert_int_equal(ev.done, 1);
    mt_strbuf reasoning = {0}, content = {0};
    int listed = 0, streamed_calls = 0;
    const char *finish = NULL;
    for (int i = 0; i < ev.n; i++) {
        const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(ev.list, i), "choices"), 0);
        const cJSON *delta = cJSON_GetObjectItem(ch, "delta");
        assert_int_equal(cJSON_GetObjectItem(delta, "role") != NULL, i == 0);
        const char *rs = text_of(delta, "reasoning_content"), *cs = text_of(delta, "content");
        if (rs) {
            mt_strbuf_puts(&reasoning, rs);
            r.reasoning_chunks++;
            if (content.len || streamed_calls) fail_msg("%s: reasoning streamed after content", body);
        }
        if (cs) mt_strbuf_puts(&content, cs);
        const cJSON *call;
        cJSON_ArrayForEach(call, cJSON_GetObjectItem(delta, "tool_calls")) {
            const cJSON *fn = cJSON_GetObjectItem(call, "function");
            assert_int_equal(cJSON_GetObjectItem(call, "index")->valueint, streamed_calls);
            assert_string_equal(text_of(fn, "name"), want.calls[streamed_calls].name);
            assert_string_equal(text_of(fn, "arguments"), want.calls[streamed_calls].arguments);
            streamed_calls++;
        }
        listed += cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "logprobs"), "content"));
        const char *fr = text_of(ch, "finish_reason");
        if (fr) {
            assert_int_equal(i, ev.n - 1);
            finish = fr;
        }
    }
    assert_int_equal(listed, completion);
    assert_int_equal(streamed_calls, want.n_calls);
    assert_non_null(finish);
    assert_string_equal(finish, want.n_calls ? "tool_calls" : "length");
    if (reasoning.len != want.reasoning.len || (reasoning.len && memcmp(reasoning.data, want.reasoning.data, reasoning.len)))
        fail_msg("%s: streamed reasoning '%s', whole '%s'", body, reasoning.data ? reasoning.data : "",
                 want.reasoning.data ? want.reasoning.data : "");
    if (content.len != want.content.len || (content.len && memcmp(content.data, want.content.data, content.len)))
        fail_msg("%s: streamed content '%s', whole '%s'", body, content.data ? content.data : "",
                 want.content.data ? want.content.data : "");
    mt_strbuf_free(&reasoning);
    mt_strbuf_free(&content);
    mt_sse_events_free(&ev);
    mt_chat_output_free(&want);
    mt_strbuf_free(&raw);
    cJSON_Delete(j);
    return r;
}

/* A chat body: bias (a logit_bias object), seed, max_tokens and extra fields (", ..."), eos ignored
 * and special tokens kept so the tokens' bytes are the text, logprobs on. */
static void chat_body(char *out, size_t len, const char *bias, int seed, int max_tokens, const char *extra) {
    snprintf(out, len,
             "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": %d, \"seed\": %d, "
             "\"logit_bias\": %s, \"ignore_eos\": true, \"skip_special_tokens\": false, \"logprobs\": true%s}",
             max_tokens, seed, bias, extra);
}

static void test_server_info(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    cJSON *q = server_call(g_cq, "/get_server_info", NULL, 200), *r = server_call(g_cr, "/get_server_info", NULL, 200);
    assert_string_equal(text_of(q, "reasoning_parser"), "qwen3");
    assert_string_equal(text_of(q, "tool_call_parser"), "qwen25");
    assert_string_equal(text_of(r, "reasoning_parser"), "deepseek-r1");
    assert_string_equal(text_of(r, "tool_call_parser"), "hermes");
    cJSON_Delete(q);
    cJSON_Delete(r);
}

/* Unknown parser names stop the server before it loads anything, naming the accepted ones. */
static void test_flags_refused(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char out[4096], args[1024];
    snprintf(args, sizeof args, "serve --model %s/model --reasoning-parser deepseek", g_dir);
    assert_int_equal(run_moetrace(args, out, sizeof out), 2);
    assert_non_null(strstr(out, "--reasoning-parser: unknown parser 'deepseek' (accepted: qwen3, deepseek-r1)"));
    snprintf(args, sizeof args, "serve --model %s/model --tool-call-parser llama3", g_dir);
    assert_int_equal(run_moetrace(args, out, sizeof out), 2);
    assert_non_null(strstr(out, "--tool-call-parser: unknown parser 'llama3' (accepted: qwen25"));
    assert_non_null(strstr(out, "hermes)"));
    snprintf(args, sizeof args, "serve --model %s/model --reasoning-parser", g_dir);
    assert_int_equal(run_moetrace(args, out, sizeof out), 2);
}

/* Outputs steered towards both think markers: each answer is its raw output parsed (qwen3: reasoning
 * only when it opens with <think>; deepseek-r1: from the start). Among the seeds, some answers have
 * both parts, and with qwen3 some are plain content. */
static void test_reasoning(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    const char *bias = "{\"1000\": 5, \"1001\": 5, \"191\": -100}"; /* 191: byte 0, kept out of the text */
    char body[2048];
    int both_q = 0, plain_q = 0, both_r = 0;
    for (int seed = 0; seed < 12; seed++) {
        chat_body(body, sizeof body, bias, seed, 16, "");
        outcome q = check_answer(g_cq, &QWEN, body), r = check_answer(g_cr, &R1, body);
        both_q += q.reasoning && q.content;
        plain_q += !q.reasoning && q.content;
        both_r += r.reasoning && r.content;
    }
    assert_true(both_q > 0);
    assert_true(plain_q > 0);
    assert_true(both_r > 0);
}

/* Markers forced by a +100 bias: the answer is certain. */
static void test_forced_markers(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char body[2048];
    chat_body(body, sizeof body, "{\"1001\": 100}", 0, 3, "");
    cJSON *j = server_call(g_cq, "/v1/chat/completions", body, 200); /* qwen3: no <think> first, so content */
    const cJSON *msg = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
    assert_string_equal(text_of(msg, "content"), "</think></think></think>");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(msg, "reasoning_content")));
    cJSON_Delete(j);
    j = server_call(g_cr, "/v1/chat/completions", body, 200); /* deepseek-r1: empty reasoning, then the rest */
    msg = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
    assert_string_equal(text_of(msg, "content"), "</think></think>");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(msg, "reasoning_content")));
    cJSON_Delete(j);
    chat_body(body, sizeof body, "{\"1000\": 100}", 0, 2, "");
    j = server_call(g_cq, "/v1/chat/completions", body, 200); /* <think><think>: an empty, unclosed reasoning */
    msg = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(msg, "content")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(msg, "reasoning_content")));
    assert_null(cJSON_GetObjectItem(msg, "tool_calls"));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(msg, "refusal")));
    cJSON_Delete(j);
}

/* Requests with tools: outputs steered towards the tool-call markers' tokens are parsed as the
 * request's tools say (a block the output ends inside, or whose text is no call, stays content);
 * "tool_choice": "none" gives the template no tools and parses none. */
static void test_tool_calls(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    const char *opening = "{\"738\": 100, \"718\": 100, \"32\": 100}"; /* "<tool", "_call", ">" */
    const char *closing = "{\"738\": 100, \"718\": 100, \"32\": 100, \"561\": 100, \"713\": 100, \"1001\": 100}";
    char body[2048], extra[512];
    snprintf(extra, sizeof extra, ", %s", TOOLS);
    int marker = 0;
    for (int seed = 0; seed < 8; seed++) {
        chat_body(body, sizeof body, opening, seed, 24, extra);
        marker += check_answer(g_cq, &QWEN_TOOLS, body).tool_marker;
        chat_body(body, sizeof body, closing, seed, 24, extra); /* "</", "tool", "</think>" too */
        check_answer(g_cq, &QWEN_TOOLS, body);
        check_answer(g_cr, &R1_TOOLS, body);
    }
    assert_true(marker > 0);
    /* no tools for the template: the raw output is the content, as it is */
    snprintf(extra, sizeof extra, ", %s, \"tool_choice\": \"none\"", TOOLS);
    chat_body(body, sizeof body, "{\"738\": 100, \"718\": 100, \"32\": 100, \"20\": 100}", 1, 12, extra);
    cJSON *j = server_call(g_cq, "/v1/chat/completions", body, 200);
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    mt_strbuf raw = {0};
    raw_output(cJSON_GetObjectItem(choice, "logprobs"), &raw);
    const cJSON *msg = cJSON_GetObjectItem(choice, "message");
    assert_part(msg, "content", &raw, body);
    assert_null(cJSON_GetObjectItem(msg, "tool_calls"));
    mt_strbuf_free(&raw);
    cJSON_Delete(j);
}

/* "separate_reasoning": false gives the raw output as the content (reasoning_content null);
 * "stream_reasoning": false sends the reasoning in one chunk once it ends; other values than
 * booleans are refused naming the field. */
static void test_request_fields(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char body[2048];
    chat_body(body, sizeof body, "{\"1000\": 5, \"1001\": 5, \"191\": -100}", 4, 16, ", \"separate_reasoning\": false");
    cJSON *j = server_call(g_cr, "/v1/chat/completions", body, 200);
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    mt_strbuf raw = {0};
    raw_output(cJSON_GetObjectItem(choice, "logprobs"), &raw);
    assert_part(cJSON_GetObjectItem(choice, "message"), "content", &raw, body);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(choice, "message"), "reasoning_content")));
    mt_strbuf_free(&raw);
    cJSON_Delete(j);
    /* deepseek-r1 without </think>: all reasoning, in one chunk */
    chat_body(body, sizeof body, "{\"1001\": -100, \"191\": -100}", 2, 12, ", \"stream_reasoning\": false");
    outcome held = check_answer(g_cr, &(mt_chat_split_opts){.reasoning = MT_REASONING_DEEPSEEK_R1, .hold_reasoning = true},
                                body);
    assert_true(held.reasoning);
    assert_int_equal(held.reasoning_chunks, 1);
    const char *bad[][2] = {
        {"\"separate_reasoning\": \"no\"", "'separate_reasoning'"},
        {"\"stream_reasoning\": 1", "'stream_reasoning'"},
    };
    for (int i = 0; i < 2; i++) {
        snprintf(body, sizeof body, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], %s}", bad[i][0]);
        j = server_call(g_cq, "/v1/chat/completions", body, 400);
        assert_non_null(strstr(text_of(cJSON_GetObjectItem(j, "error"), "message"), bad[i][1]));
        cJSON_Delete(j);
    }
}

/* Qwen3's template closes an empty think block in the prompt when enable_thinking is false: the
 * output has no markers, and its content stays whole. */
static void test_enable_thinking_false(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    char body[2048];
    int prompt[2];
    for (int off = 0; off < 2; off++) {
        chat_body(body, sizeof body, "{\"1000\": -100, \"191\": -100}", 5, 16,
                  off ? ", \"chat_template_kwargs\": {\"enable_thinking\": false}" : "");
        cJSON *j = server_call(g_cq, "/v1/chat/completions", body, 200);
        const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        mt_strbuf raw = {0};
        raw_output(cJSON_GetObjectItem(choice, "logprobs"), &raw);
        assert_part(cJSON_GetObjectItem(choice, "message"), "content", &raw, body);
        assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(choice, "message"), "reasoning_content")));
        prompt[off] = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valueint;
        mt_strbuf_free(&raw);
        cJSON_Delete(j);
    }
    assert_true(prompt[1] > prompt[0]); /* the empty block is in the prompt */
}

/* SGLang parses chat completions only: /v1/completions and /generate give the markers as text. */
static void test_other_endpoints_unparsed(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    cJSON *j = server_call(g_cr, "/v1/completions",
                           "{\"prompt\": \"Hi\", \"max_tokens\": 2, \"logit_bias\": {\"1000\": 100}}", 200);
    assert_string_equal(text_of(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "text"), "<think><think>");
    cJSON_Delete(j);
    j = server_call(g_cr, "/generate",
                    "{\"text\": \"Hi\", \"sampling_params\": {\"max_new_tokens\": 2, \"logit_bias\": {\"1001\": 100}}}",
                    200);
    assert_string_equal(text_of(j, "text"), "</think></think>");
    cJSON_Delete(j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_info),
        cmocka_unit_test(test_flags_refused),
        cmocka_unit_test(test_reasoning),
        cmocka_unit_test(test_forced_markers),
        cmocka_unit_test(test_tool_calls),
        cmocka_unit_test(test_request_fields),
        cmocka_unit_test(test_enable_thinking_false),
        cmocka_unit_test(test_other_endpoints_unparsed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
