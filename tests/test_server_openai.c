/* moetrace serve with text: a small model (dummy weights) whose vocabulary matches the trained test
 * tokenizer, with the Qwen3 chat template. Checks the OpenAI endpoints (/v1/models, completions and
 * chat completions, streamed and not, usage, routed_experts in the choice), that they agree with
 * /generate, the chosen tokens' log-probabilities (equal to /generate's; text_offset in characters of
 * the choice's text, chat's bytes joining into the content), stop strings (trimmed, kept with
 * no_stop_trim, never streamed), a stop token's text left out of the text, /metrics and the dashboard data; a per_token recording
 * names each request by the id its response carried, and with --domain-field the completions and
 * chat endpoints label their requests' domains as /generate does; what OpenAI's client library reads
 * (tests/compat/openai_client.sh): the error object's "param", x-request-id, the chat message's and
 * log-probabilities' "refusal", "usage": null in streamed chunks, completions' suffix and best_of;
 * the sampling controls at the top level (frequency_penalty, presence_penalty, logit_bias, min_tokens
 * or min_new_tokens, min_p, repetition_penalty) act as /generate's sampling_params, and their bad
 * values are 400s naming them. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "support/api_util.h"
#include "support/http_client.h"
#include "model/safetensors.h"
#include "support/server_proc.h"
#include "server_setup.h"
#include "util/json_util.h"
#include "tokenizer/tok_util.h"
#include "util/strbuf.h"

#define LAYERS 3
#define TOP_K 2

static mt_test_server g_srv;
static mt_http_client *g_c;

/* Starts `moetrace serve` on the test model (g_dir/model, dummy weights) with flags, dumping into
 * dump_dir, its log in g_dir/log_name; 0 once it answers. */
static int start_server(mt_test_server *srv, const char *flags, const char *dump_dir, const char *log_name) {
    char args[1024];
    snprintf(args, sizeof args, "--model %s/model --load-format dummy --threads 1 --expert-dump-dir %s %s", g_dir,
             dump_dir, flags);
    return mt_test_server_start(srv, g_bin, args, path_of(log_name), 120);
}

static int setup(void **state) {
    (void)state;
    if (server_setup("srvoai_")) return -1;
    if (!g_bin) return 0;
    if (server_text_model(SERVER_TEXT_CONFIG)) return -1;
    if (start_server(&g_srv, "--served-model-name tiny --enable-return-routed-experts --enable-expert-distribution-metrics",
                     g_dir, "server.log"))
        return -1;
    g_c = mt_http_client_new(g_srv.url, NULL);
    return 0;
}

static int teardown(void **state) { return server_stop_and_teardown(state, &g_srv, g_c); }

static cJSON *call(const char *path, const char *body, long want) { return server_call(g_c, path, body, want); }

static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    if (!cJSON_IsString(v)) fail_msg("'%s' is not a string", k);
    return v->valuestring;
}

static int num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    if (!cJSON_IsNumber(v)) fail_msg("'%s' is not a number", k);
    return v->valueint;
}

static const cJSON *choice0(const cJSON *j) { return cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0); }

/* Token count of text as `moetrace tokenize` gives it. */
static int count_tokens(const char *text_file, bool special) {
    char cmd[1024], out[65536];
    snprintf(cmd, sizeof cmd, "%s tokenize --model %s/model %s < %s", g_bin, g_dir, special ? "" : "--no-special-tokens",
             text_file);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    assert_int_equal(pclose(p), 0);
    cJSON *ids = cJSON_Parse(out);
    int count = cJSON_GetArraySize(ids);
    cJSON_Delete(ids);
    return count;
}

/* Text holding U+0000 (the test tokenizer's id 191 is byte 0) is written \u0000 in the JSON, with
 * the text after it: it was cut at the NUL ("d"), and a generated NUL was dropped. A text prompt
 * holding it is encoded whole (it was refused). */
static void test_text_with_nul(void **state) {
    (void)state;
    if (!g_bin) skip();
    const char *bodies[][2] = {
        {"/v1/completions", "{\"prompt\": [70, 191, 70], \"max_tokens\": 0, \"echo\": true}"},
        {"/v1/completions", "{\"prompt\": [70, 191, 70], \"max_tokens\": 0, \"echo\": true, \"stream\": true}"},
        {"/v1/completions", "{\"prompt\": \"d\\u0000d\", \"max_tokens\": 0, \"echo\": true}"},
        {"/v1/completions", "{\"prompt\": [\"d\\u0000d\"], \"max_tokens\": 0, \"echo\": true, \"stream\": true}"},
    };
    for (int i = 0; i < 4; i++) {
        mt_http_response r;
        assert_int_equal(mt_http_call(g_c, "POST", bodies[i][0], bodies[i][1], &r), 0);
        assert_int_equal(r.status, 200);
        if (!strstr(r.body, "\"text\":\"d\\u0000d\"")) fail_msg("%s: %s", bodies[i][1], r.body);
        mt_http_response_free(&r);
    }
}

static void test_models_and_completions(void **state) {
    (void)state;
    if (!g_bin) skip();
    cJSON *models = call("/v1/models", NULL, 200);
    assert_string_equal(str(models, "object"), "list");
    assert_string_equal(str(cJSON_GetArrayItem(cJSON_GetObjectItem(models, "data"), 0), "id"), "tiny");
    cJSON_Delete(models);

    const char *prompt = "Hello world, hello moetrace";
    char path[512];
    write_text("prompt.txt", prompt);
    snprintf(path, sizeof path, "%s/prompt.txt", g_dir);
    int n_prompt = count_tokens(path, true);

    cJSON *comp = call("/v1/completions",
                       "{\"model\": \"tiny\", \"prompt\": \"Hello world, hello moetrace\", \"max_tokens\": 8, "
                       "\"temperature\": 0, \"ignore_eos\": true, \"return_routed_experts\": true}", 200);
    assert_string_equal(str(comp, "object"), "text_completion");
    assert_true(!strncmp(str(comp, "id"), "cmpl-", 5));
    const cJSON *ch = choice0(comp), *usage = cJSON_GetObjectItem(comp, "usage");
    assert_string_equal(str(ch, "finish_reason"), "length");
    assert_int_equal(num(usage, "prompt_tokens"), n_prompt);
    assert_int_equal(num(usage, "completion_tokens"), 8);
    assert_int_equal(num(usage, "total_tokens"), n_prompt + 8);
    const cJSON *re = cJSON_GetObjectItem(ch, "routed_experts");
    assert_string_equal(str(re, "dtype"), "int32");
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(re, "shape"), 0)->valueint, n_prompt + 7);
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(re, "shape"), 1)->valueint, LAYERS);
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(re, "shape"), 2)->valueint, TOP_K);

    /* The same through SGLang's /generate: same text, same routing. */
    cJSON *gen = call("/generate",
                      "{\"text\": \"Hello world, hello moetrace\", \"sampling_params\": {\"max_new_tokens\": 8, "
                      "\"temperature\": 0, \"ignore_eos\": true}, \"return_routed_experts\": true}", 200);
    assert_string_equal(str(gen, "text"), str(ch, "text"));
    const cJSON *meta = cJSON_GetObjectItem(gen, "meta_info");
    assert_string_equal(str(meta, "routed_experts"), str(re, "data"));
    assert_int_equal(num(meta, "prompt_tokens"), n_prompt);

    /* Streamed: the deltas add up to the same text; routing in the last choice; usage at the end. */
    mt_sse_events ev;
    long status;
    assert_int_equal(mt_api_stream(g_c, "/v1/completions",
                                   "{\"prompt\": \"Hello world, hello moetrace\", \"max_tokens\": 8, \"temperature\": 0, "
                                   "\"ignore_eos\": true, \"stream\": true, \"stream_options\": {\"include_usage\": true}, "
                                   "\"return_routed_experts\": true}", &ev, &status), 0);
    assert_int_equal(status, 200);
    assert_int_equal(ev.done, 1);
    assert_int_equal(ev.after_done, 0);
    assert_true(ev.n >= 2);
    char text[4096] = "";
    for (int i = 0; i < ev.n - 1; i++) {
        const cJSON *e = cJSON_GetArrayItem(ev.list, i), *c = choice0(e);
        assert_string_equal(str(e, "object"), "text_completion");
        strcat(text, str(c, "text"));
        bool last_choice = i == ev.n - 2;
        assert_true(cJSON_IsNull(cJSON_GetObjectItem(c, "finish_reason")) != last_choice);
        assert_true((cJSON_GetObjectItem(c, "routed_experts") != NULL) == last_choice);
        if (last_choice) assert_string_equal(str(cJSON_GetObjectItem(c, "routed_experts"), "data"), str(re, "data"));
    }
    assert_string_equal(text, str(ch, "text"));
    const cJSON *usage_event = cJSON_GetArrayItem(ev.list, ev.n - 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(usage_event, "choices")), 0);
    assert_int_equal(num(cJSON_GetObjectItem(usage_event, "usage"), "completion_tokens"), 8);
    mt_sse_events_free(&ev);

    /* A prompt given as token ids, and as a list of one string. */
    cJSON *ids = call("/v1/completions", "{\"prompt\": [5, 6, 7], \"max_tokens\": 3, \"ignore_eos\": true}", 200);
    assert_int_equal(num(cJSON_GetObjectItem(ids, "usage"), "prompt_tokens"), 3);
    cJSON_Delete(ids);

    /* max_tokens 0: the routing of the P prompt tokens (all forwarded), not P + G - 1 = P - 1 rows */
    static const char *const zero[] = {
        "/v1/completions", "{\"prompt\": [5, 6, 7], \"max_tokens\": 0, \"return_routed_experts\": true}",
        "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 0, "
                                "\"return_routed_experts\": true}",
    };
    for (int i = 0; i < 2; i++) {
        cJSON *z = call(zero[2 * i], zero[2 * i + 1], 200);
        const cJSON *zu = cJSON_GetObjectItem(z, "usage");
        assert_int_equal(num(zu, "completion_tokens"), 0);
        const cJSON *zshape = cJSON_GetObjectItem(cJSON_GetObjectItem(choice0(z), "routed_experts"), "shape");
        assert_int_equal(cJSON_GetArrayItem(zshape, 0)->valueint, num(zu, "prompt_tokens"));
        cJSON_Delete(z);
    }
    cJSON *one = call("/v1/completions", "{\"prompt\": [\"Hello world, hello moetrace\"], \"max_tokens\": 8, "
                                         "\"temperature\": 0, \"ignore_eos\": true}", 200);
    assert_string_equal(str(choice0(one), "text"), str(ch, "text"));
    cJSON_Delete(one);
    cJSON_Delete(gen);
    cJSON_Delete(comp);
}

static void test_chat(void **state) {
    (void)state;
    if (!g_bin) skip();
    /* The prompt is the rendered template, tokenized without added special tokens. */
    write_text("messages.json", "[{\"role\": \"user\", \"content\": \"Say hello\"}]");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s chat-template --model %s/model --messages %s/messages.json > %s/rendered.txt", g_bin,
             g_dir, g_dir, g_dir);
    assert_int_equal(system(cmd), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/rendered.txt", g_dir);
    int n_prompt = count_tokens(path, false);

    static const char BODY[] = "{\"model\": \"tiny\", \"messages\": [{\"role\": \"user\", \"content\": \"Say hello\"}], "
                               "\"max_tokens\": 6, \"temperature\": 0, \"ignore_eos\": true, \"return_routed_experts\": true, "
                               "\"routed_experts_dtype\": \"uint8\"%s}";
    char body[512];
    snprintf(body, sizeof body, BODY, "");
    cJSON *chat = call("/v1/chat/completions", body, 200);
    assert_string_equal(str(chat, "object"), "chat.completion");
    assert_true(!strncmp(str(chat, "id"), "chatcmpl-", 9));
    const cJSON *ch = choice0(chat), *msg = cJSON_GetObjectItem(ch, "message");
    assert_string_equal(str(msg, "role"), "assistant");
    assert_int_equal(num(cJSON_GetObjectItem(chat, "usage"), "prompt_tokens"), n_prompt);
    const cJSON *re = cJSON_GetObjectItem(ch, "routed_experts");
    assert_string_equal(str(re, "dtype"), "uint8");
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(re, "shape"), 0)->valueint, n_prompt + 5);
    size_t count;
    int32_t *ids = mt_api_routing_ids(str(re, "data"), "uint8", &count);
    assert_int_equal(count, (size_t)(n_prompt + 5) * LAYERS * TOP_K);
    assert_int_equal(ids[0], -1); /* layer 0 is dense */
    free(ids);

    snprintf(body, sizeof body, BODY, ", \"stream\": true");
    mt_sse_events ev;
    long status;
    assert_int_equal(mt_api_stream(g_c, "/v1/chat/completions", body, &ev, &status), 0);
    assert_int_equal(status, 200);
    assert_int_equal(ev.done, 1);
    char text[4096] = "";
    for (int i = 0; i < ev.n; i++) {
        const cJSON *e = cJSON_GetArrayItem(ev.list, i), *c = choice0(e), *delta = cJSON_GetObjectItem(c, "delta");
        assert_string_equal(str(e, "object"), "chat.completion.chunk");
        if (i == 0) assert_string_equal(str(delta, "role"), "assistant");
        if (cJSON_GetObjectItem(delta, "content")) strcat(text, str(delta, "content"));
        if (i == ev.n - 1) {
            assert_string_equal(str(c, "finish_reason"), "length");
            assert_string_equal(str(cJSON_GetObjectItem(c, "routed_experts"), "data"), str(re, "data"));
        } else {
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(c, "finish_reason")));
        }
    }
    assert_string_equal(text, str(msg, "content"));
    mt_sse_events_free(&ev);

    /* pairs of bodies (without their closing brace) that must give the same prompt: content as a list
     * of text parts (OpenAI clients) reads as their texts joined by newlines; null (an assistant turn
     * with tool calls only) as ""; as SGLang gives them to the template, no tools with "tool_choice":
     * "none" and a tool call's "arguments" string as the JSON it holds (the template prints it with
     * tojson) */
    static const char *const SAME[][2] = {
        {"{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Say hello\"}]}]",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"Say hello\"}]"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Say\"}, {\"type\": "
         "\"text\", \"text\": \"hello\"}]}]",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"Say\\nhello\"}]"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": null}, "
         "{\"role\": \"user\", \"content\": \"Say hello\"}]",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"\"}, "
         "{\"role\": \"user\", \"content\": \"Say hello\"}]"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"tool_choice\": \"none\", \"tools\": "
         "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"the weather of a city\"}}]",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"tools\": []",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": null, "
         "\"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": "
         "\"{  \\\"city\\\" :   \\\"Paris\\\",  \\\"days\\\":  [1,2]  }\"}}]}, {\"role\": \"tool\", \"content\": \"sunny\"}]",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": null, "
         "\"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": "
         "{\"city\": \"Paris\", \"days\": [1, 2]}}}]}, {\"role\": \"tool\", \"content\": \"sunny\"}]"},
    };
    for (size_t i = 0; i < sizeof SAME / sizeof *SAME; i++) {
        char b1[1024], b2[1024];
        snprintf(b1, sizeof b1, "%s, \"max_tokens\": 4, \"temperature\": 0, \"ignore_eos\": true}", SAME[i][0]);
        snprintf(b2, sizeof b2, "%s, \"max_tokens\": 4, \"temperature\": 0, \"ignore_eos\": true}", SAME[i][1]);
        cJSON *a = call("/v1/chat/completions", b1, 200), *b = call("/v1/chat/completions", b2, 200);
        assert_int_equal(num(cJSON_GetObjectItem(a, "usage"), "prompt_tokens"),
                         num(cJSON_GetObjectItem(b, "usage"), "prompt_tokens"));
        assert_string_equal(str(cJSON_GetObjectItem(choice0(a), "message"), "content"),
                            str(cJSON_GetObjectItem(choice0(b), "message"), "content"));
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
    static const char *const BAD_ARGS[][2] = {
        {"{city: Paris}", "is not JSON"}, {"{\\\"a\\\": 1} trailing", "is not JSON"},
        {"{\\\"a\\\": 1}{\\\"b\\\": 2}", "is not JSON"}, {"[1, 2]", "must hold a JSON object"}, {"5", "must hold a JSON object"}};
    for (size_t i = 0; i < sizeof BAD_ARGS / sizeof *BAD_ARGS; i++) {
        char b[1024], want[256];
        snprintf(b, sizeof b, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", "
                 "\"content\": null, \"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", "
                 "\"arguments\": \"%s\"}}]}]}", BAD_ARGS[i][0]);
        snprintf(want, sizeof want, "'messages' entry 1: tool call 0's 'arguments' %s", BAD_ARGS[i][1]);
        cJSON *bad = call("/v1/chat/completions", b, 400);
        if (!strstr(str(cJSON_GetObjectItem(bad, "error"), "message"), want))
            fail_msg("arguments %s: %s", BAD_ARGS[i][0], str(cJSON_GetObjectItem(bad, "error"), "message"));
        cJSON_Delete(bad);
    }
    cJSON *img = call("/v1/chat/completions",
                      "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"x\"}, "
                      "{\"type\": \"image_url\", \"image_url\": {\"url\": \"http://x/y.png\"}}]}]}", 400);
    assert_non_null(strstr(str(cJSON_GetObjectItem(img, "error"), "message"), "content part 1 is of type 'image_url'"));
    cJSON_Delete(img);
    cJSON_Delete(chat);

    static const char *const BAD[] = {
        "{\"messages\": \"hi\"}",
        "{\"messages\": [{\"content\": \"no role\"}]}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": 5}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"chat_template_kwargs\": [1]}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"n\": 0}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"n\": 1025}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": -5}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"stream_options\": 1}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_logprobs\": 2}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": true, \"top_logprobs\": 21}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": true, \"top_logprobs\": -1}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": \"yes\"}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}",
        "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tool_choice\": \"required\"}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tool_choice\": {\"type\": \"function\", "
        "\"function\": {\"name\": \"f\"}}}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response_format\": {\"type\": \"json_object\"}}",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response_format\": \"json\"}",
        "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\"}]}]}",
        "{\"messages\": [{\"role\": \"user\", \"content\": [\"x\"]}]}",
    };
    for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) cJSON_Delete(call("/v1/chat/completions", BAD[i], 400));
    cJSON_Delete(call("/v1/completions", "{\"prompt\": \"a\", \"echo\": 1}", 400));
    cJSON_Delete(call("/v1/completions", "{\"prompt\": \"a\", \"logprobs\": 21}", 400));
    cJSON_Delete(call("/v1/completions", "{\"prompt\": \"a\", \"logprobs\": true}", 400));
    cJSON_Delete(call("/v1/completions", "{\"prompt\": [\"a\", 5]}", 400));
    cJSON_Delete(call("/v1/completions", "{\"prompt\": []}", 400));
    cJSON_Delete(call("/v1/completions", "{\"prompt\": [\"a\", \"b\"], \"n\": 600}", 400));
    cJSON_Delete(call("/v1/completions", "{\"prompt\": 5}", 400));
    cJSON_Delete(call("/v1/completions", "{\"prompt\": \"a\", \"response_format\": {\"type\": \"json_schema\"}}", 400));
    /* the constraints that ask for nothing are accepted */
    cJSON_Delete(call("/v1/chat/completions",
                      "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 1, \"tool_choice\": \"auto\", "
                      "\"response_format\": {\"type\": \"text\"}}", 200));
    cJSON_Delete(call("/v1/chat/completions",
                      "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 1, \"tool_choice\": \"none\", "
                      "\"response_format\": null}", 200));
    cJSON_Delete(call("/generate", "{\"text\": \"bad \xc3\x28 utf-8\"}", 400));
}

/* ---- log-probabilities -------------------------------------------------------------------- */

/* Completions' "logprobs": 0 and chat's "logprobs": true give the chosen tokens' log-probabilities,
 * the same floats as /generate's return_logprob for the same prompt; streamed, the chunks' lists
 * add up to the whole one, text_offset included. */
#define MAX_LISTED 32

typedef struct listed {
    float values[MAX_LISTED];
    int offsets[MAX_LISTED];
    char tokens[MAX_LISTED][64];
    int n;
} listed;

static void completion_logprobs(const cJSON *lp, listed *out) {
    const cJSON *tokens = cJSON_GetObjectItem(lp, "tokens"), *vals = cJSON_GetObjectItem(lp, "token_logprobs");
    const cJSON *offs = cJSON_GetObjectItem(lp, "text_offset");
    int k = cJSON_GetArraySize(tokens);
    assert_int_equal(cJSON_GetArraySize(vals), k);
    assert_int_equal(cJSON_GetArraySize(offs), k);
    for (int i = 0; i < k && out->n < MAX_LISTED; i++, out->n++) {
        const cJSON *v = cJSON_GetArrayItem(vals, i);
        out->values[out->n] = cJSON_IsNumber(v) ? (float)v->valuedouble : NAN;
        out->offsets[out->n] = cJSON_GetArrayItem(offs, i)->valueint;
        snprintf(out->tokens[out->n], sizeof out->tokens[0], "%s", cJSON_GetArrayItem(tokens, i)->valuestring);
    }
}

/* A special token of the test tokenizer, which skip_special_tokens leaves out of the text. */
static bool special_text(const char *tok) { return !strncmp(tok, "<|", 2) || !strcmp(tok, "[MASK]"); }

/* Byte index of character (code point) `chars` of s. */
static size_t char_index(const char *s, int chars) {
    size_t i = 0;
    for (int c = 0; s[i] && c < chars; c++) {
        i++;
        while (((unsigned char)s[i] & 0xC0) == 0x80) i++;
    }
    return i;
}

/* text_offset points into the choice's text, in characters: non-decreasing, within the text, and
 * every token shown as it is in the text (not a piece of a character, not a skipped special token)
 * is found at its offset. */
static void assert_offsets_in_text(const listed *l, const char *text) {
    size_t chars = 0;
    for (size_t i = 0; text[i]; i++) chars += ((unsigned char)text[i] & 0xC0) != 0x80;
    for (int i = 0; i < l->n; i++) {
        assert_true(l->offsets[i] >= (i ? l->offsets[i - 1] : 0) && (size_t)l->offsets[i] <= chars);
        const char *tok = l->tokens[i];
        if (strstr(tok, "\xEF\xBF\xBD") || special_text(tok)) continue;
        if (strncmp(text + char_index(text, l->offsets[i]), tok, strlen(tok)))
            fail_msg("token %d '%s' is not at character %d of '%s'", i, tok, l->offsets[i], text);
    }
}

static void chat_logprobs(const cJSON *lp, float *values, int *n, mt_strbuf *joined) {
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(lp, "content")) {
        values[(*n)++] = (float)cJSON_GetObjectItem(t, "logprob")->valuedouble;
        const cJSON *b;
        if (special_text(str(t, "token"))) continue;   /* not in the content */
        cJSON_ArrayForEach(b, cJSON_GetObjectItem(t, "bytes")) {
            char byte = (char)b->valueint;
            mt_strbuf_append(joined, &byte, 1);
        }
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(t, "top_logprobs")), 0);
    }
}

/* The non-null "logprobs" of a streamed answer's chunks, in order (valid until ev is freed). */
static int streamed_logprobs(const char *path, const char *body, mt_sse_events *ev, const cJSON **out, int max) {
    long status;
    assert_int_equal(mt_api_stream(g_c, path, body, ev, &status), 0);
    assert_int_equal(status, 200);
    int n = 0;
    for (int i = 0; i < ev->n && n < max; i++) {
        const cJSON *lp = cJSON_GetObjectItem(choice0(cJSON_GetArrayItem(ev->list, i)), "logprobs");
        if (!cJSON_IsNull(lp)) out[n++] = lp;
    }
    return n;
}

static void test_logprobs(void **state) {
    (void)state;
    if (!g_bin) skip();
    cJSON *gen = call("/generate",
                      "{\"text\": \"Hello world, hello moetrace\", \"sampling_params\": {\"max_new_tokens\": 8, "
                      "\"temperature\": 0, \"ignore_eos\": true}, \"return_logprob\": true}", 200);
    const cJSON *want = cJSON_GetObjectItem(cJSON_GetObjectItem(gen, "meta_info"), "output_token_logprobs");
    assert_int_equal(cJSON_GetArraySize(want), 8);
    float ref[8];
    for (int i = 0; i < 8; i++) ref[i] = (float)cJSON_GetArrayItem(cJSON_GetArrayItem(want, i), 0)->valuedouble;

    listed whole_lp = {0};
    for (int stream = 0; stream < 2; stream++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"prompt\": \"Hello world, hello moetrace\", \"max_tokens\": 8, \"temperature\": 0, "
                 "\"ignore_eos\": true, \"logprobs\": 0%s}", stream ? ", \"stream\": true" : "");
        listed got = {0};
        mt_strbuf text = {0};
        if (!stream) {
            cJSON *comp = call("/v1/completions", body, 200);
            completion_logprobs(cJSON_GetObjectItem(choice0(comp), "logprobs"), &got);
            mt_strbuf_puts(&text, str(choice0(comp), "text"));
            cJSON_Delete(comp);
            whole_lp = got;
        } else {
            mt_sse_events ev;
            long status;
            assert_int_equal(mt_api_stream(g_c, "/v1/completions", body, &ev, &status), 0);
            for (int i = 0; i < ev.n; i++) {
                const cJSON *ch = choice0(cJSON_GetArrayItem(ev.list, i)), *lp = cJSON_GetObjectItem(ch, "logprobs");
                mt_strbuf_puts(&text, str(ch, "text"));
                if (!cJSON_IsNull(lp)) completion_logprobs(lp, &got);
            }
            mt_sse_events_free(&ev);
            assert_memory_equal(got.offsets, whole_lp.offsets, sizeof got.offsets);
        }
        assert_int_equal(got.n, 8);
        for (int i = 0; i < 8; i++)
            if (got.values[i] != ref[i])
                fail_msg("completions (stream %d) token %d: %.9g, /generate %.9g", stream, i, got.values[i], ref[i]);
        assert_offsets_in_text(&got, text.data ? text.data : "");
        mt_strbuf_free(&text);
    }

    /* chat: the tokens' bytes join into the message's content */
    static const char CHAT[] = "{\"messages\": [{\"role\": \"user\", \"content\": \"Say hello\"}], \"max_tokens\": 6, "
                               "\"temperature\": 0, \"ignore_eos\": true, \"logprobs\": true, \"top_logprobs\": 0%s}";
    char body[512];
    snprintf(body, sizeof body, CHAT, "");
    cJSON *chat = call("/v1/chat/completions", body, 200);
    float whole[8], streamed[8];
    int n_whole = 0, n_streamed = 0;
    mt_strbuf joined = {0};
    chat_logprobs(cJSON_GetObjectItem(choice0(chat), "logprobs"), whole, &n_whole, &joined);
    assert_int_equal(n_whole, 6);
    for (int i = 0; i < 6; i++) assert_true(whole[i] <= 0.0f);
    const char *content = str(cJSON_GetObjectItem(choice0(chat), "message"), "content");
    tk_buf repaired = {0};   /* the text is the joined bytes with invalid UTF-8 made U+FFFD */
    tk_utf8_lossy(&repaired, joined.data ? joined.data : "", joined.len);
    if (repaired.n != strlen(content) || memcmp(repaired.p, content, repaired.n))
        fail_msg("chat bytes join into '%.*s', content '%s'", (int)repaired.n, repaired.p, content);
    assert_true(joined.len < repaired.n);   /* this output holds a token that is part of a character */
    tk_buf_free(&repaired);
    mt_strbuf_free(&joined);
    cJSON_Delete(chat);
    snprintf(body, sizeof body, CHAT, ", \"stream\": true");
    mt_sse_events ev;
    const cJSON *lps[16];
    int k = streamed_logprobs("/v1/chat/completions", body, &ev, lps, 16);
    for (int i = 0; i < k; i++) chat_logprobs(lps[i], streamed, &n_streamed, &joined);
    mt_sse_events_free(&ev);
    mt_strbuf_free(&joined);
    assert_int_equal(n_streamed, 6);
    assert_memory_equal(whole, streamed, sizeof(float) * 6);

    /* without logprobs: null */
    cJSON *plain = call("/v1/completions", "{\"prompt\": [5, 6], \"max_tokens\": 2}", 200);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(choice0(plain), "logprobs")));
    cJSON_Delete(plain);
    cJSON_Delete(gen);
}

/* text_offset with echo: positions in the choice's text in characters; a skipped special token adds
 * nothing, the two tokens of "é" start where it does and it is counted once; the output's tokens
 * start after the echo. Streamed the same. (They were byte counts of each token's text as listed:
 * 12 for the skipped special token, 3 for each piece of the character.) */
static void test_text_offsets(void **state) {
    (void)state;
    if (!g_bin) skip();
    /* <|im_start|> c a f, the two bytes of "é", " hello" */
    static const char BODY[] = "{\"prompt\": [1, 69, 67, 72, 130, 105, 427], \"echo\": true, \"logprobs\": 0, "
                               "\"max_tokens\": 3, \"temperature\": 0, \"ignore_eos\": true%s%s}";
    for (int keep = 0; keep < 2; keep++) {
        const char *sst = keep ? ", \"skip_special_tokens\": false" : "";
        const char *echo = keep ? "<|im_start|>caf\xC3\xA9 hello" : "caf\xC3\xA9 hello";
        const int base = keep ? 12 : 0, want[] = {0, base, base + 1, base + 2, base + 3, base + 3, base + 4};
        char body[512];
        snprintf(body, sizeof body, BODY, sst, "");
        cJSON *comp = call("/v1/completions", body, 200);
        listed whole = {0};
        completion_logprobs(cJSON_GetObjectItem(choice0(comp), "logprobs"), &whole);
        const char *text = str(choice0(comp), "text");
        assert_int_equal(whole.n, 10);
        assert_memory_equal(text, echo, strlen(echo));
        for (int i = 0; i < 7; i++)
            if (whole.offsets[i] != want[i]) fail_msg("skip %d: token %d at %d, want %d", !keep, i, whole.offsets[i], want[i]);
        assert_int_equal(whole.offsets[7], base + 10);
        assert_offsets_in_text(&whole, text);
        cJSON_Delete(comp);

        snprintf(body, sizeof body, BODY, sst, ", \"stream\": true");
        mt_sse_events ev;
        const cJSON *lps[16];
        listed streamed = {0};
        int k = streamed_logprobs("/v1/completions", body, &ev, lps, 16);
        for (int i = 0; i < k; i++) completion_logprobs(lps[i], &streamed);
        mt_sse_events_free(&ev);
        assert_int_equal(streamed.n, 10);
        assert_memory_equal(streamed.offsets, whole.offsets, sizeof whole.offsets);
    }
}

/* A character boundary at or after i in s. */
static size_t char_start(const char *s, size_t i) {
    while (s[i] && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
    return i;
}

static void test_stop_strings(void **state) {
    (void)state;
    if (!g_bin) skip();
    static const char BODY[] = "{\"text\": \"Once upon a time\", \"sampling_params\": {\"max_new_tokens\": 24, "
                               "\"temperature\": 0, \"ignore_eos\": true%s}, \"return_routed_experts\": true%s}";
    char body[1024];
    snprintf(body, sizeof body, BODY, "", "");
    cJSON *full = call("/generate", body, 200);
    const char *text = str(full, "text");
    size_t len = strlen(text);
    if (len < 6) skip(); /* the dummy model must write something to cut */
    /* A stop string from the middle of the output: one character, cut where it first appears. */
    size_t a = char_start(text, len / 2), b = char_start(text, a + 1);
    char stop[16];
    snprintf(stop, sizeof stop, "%.*s", (int)(b - a), text + a);
    cJSON *stop_json = cJSON_CreateString(stop);
    char *stop_lit = cJSON_PrintUnformatted(stop_json);
    cJSON_Delete(stop_json);
    size_t cut = (size_t)(strstr(text, stop) - text);

    char extra[128];
    snprintf(extra, sizeof extra, ", \"stop\": [%s]", stop_lit);
    snprintf(body, sizeof body, BODY, extra, "");
    cJSON *stopped = call("/generate", body, 200);
    assert_int_equal(strlen(str(stopped, "text")), cut);
    assert_memory_equal(str(stopped, "text"), text, cut);
    const cJSON *meta = cJSON_GetObjectItem(stopped, "meta_info"), *fr = cJSON_GetObjectItem(meta, "finish_reason");
    assert_string_equal(str(fr, "type"), "stop");
    assert_string_equal(str(fr, "matched"), stop);
    int g = num(meta, "completion_tokens");
    assert_true(g < 24);
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(meta, "routed_experts_shape"), 0)->valueint,
                     num(meta, "prompt_tokens") + g - 1);

    /* no_stop_trim keeps the stop string. */
    snprintf(extra, sizeof extra, ", \"stop\": %s, \"no_stop_trim\": true", stop_lit);
    snprintf(body, sizeof body, BODY, extra, "");
    cJSON *kept = call("/generate", body, 200);
    assert_int_equal(strlen(str(kept, "text")), cut + strlen(stop));
    cJSON_Delete(kept);

    /* Streamed: the stop string never shows; the text adds up to the trimmed one. */
    snprintf(extra, sizeof extra, ", \"stop\": [%s]", stop_lit);
    snprintf(body, sizeof body, BODY, extra, ", \"stream\": true");
    mt_sse_events ev;
    long status;
    assert_int_equal(mt_api_stream(g_c, "/generate", body, &ev, &status), 0);
    for (int i = 0; i < ev.n; i++) {
        const char *t = str(cJSON_GetArrayItem(ev.list, i), "text");
        assert_true(strlen(t) <= cut);
        assert_memory_equal(t, text, strlen(t));
    }
    assert_string_equal(str(cJSON_GetArrayItem(ev.list, ev.n - 1), "text"), str(stopped, "text"));
    mt_sse_events_free(&ev);

    /* OpenAI spelling. */
    snprintf(body, sizeof body, "{\"prompt\": \"Once upon a time\", \"max_tokens\": 24, \"temperature\": 0, "
                                "\"ignore_eos\": true, \"stop\": %s}", stop_lit);
    cJSON *oai = call("/v1/completions", body, 200);
    assert_string_equal(str(choice0(oai), "finish_reason"), "stop");
    assert_string_equal(str(choice0(oai), "text"), str(stopped, "text"));
    cJSON_Delete(oai);
    free(stop_lit);
    cJSON_Delete(stopped);
    cJSON_Delete(full);
}

/* A stop token's text is not in the text (SGLang's detokenizer trims it), streamed or not, unless
 * no_stop_trim; output_ids keep it. It used to be appended. */
static void test_stop_token_text(void **state) {
    (void)state;
    if (!g_bin) skip();
    static const char BODY[] = "{\"text\": \"Once upon a time\", \"sampling_params\": {\"max_new_tokens\": %d, "
                               "\"temperature\": 0, \"ignore_eos\": true%s}%s}";
    char body[512], extra[128];
    snprintf(body, sizeof body, BODY, 8, "", "");
    cJSON *full = call("/generate", body, 200);
    const cJSON *ids = cJSON_GetObjectItem(full, "output_ids");
    int stop_id = cJSON_GetArrayItem(ids, 3)->valueint, first = 0;
    while (cJSON_GetArrayItem(ids, first)->valueint != stop_id) first++;
    snprintf(body, sizeof body, BODY, first, "", "");
    cJSON *before = call("/generate", body, 200);     /* the text of the tokens before the stop token */
    snprintf(body, sizeof body, BODY, first + 1, "", "");
    cJSON *with = call("/generate", body, 200);       /* ... and with its text */
    for (int mode = 0; mode < 3; mode++) {            /* whole, streamed, whole with no_stop_trim */
        snprintf(extra, sizeof extra, ", \"stop_token_ids\": [%d]%s", stop_id, mode == 2 ? ", \"no_stop_trim\": true" : "");
        snprintf(body, sizeof body, BODY, 8, extra, mode == 1 ? ", \"stream\": true" : "");
        const char *want = str(mode == 2 ? with : before, "text");
        if (mode == 1) {
            mt_sse_events ev;
            long status;
            assert_int_equal(mt_api_stream(g_c, "/generate", body, &ev, &status), 0);
            for (int i = 0; i < ev.n; i++) assert_true(strlen(str(cJSON_GetArrayItem(ev.list, i), "text")) <= strlen(want));
            assert_string_equal(str(cJSON_GetArrayItem(ev.list, ev.n - 1), "text"), want);
            mt_sse_events_free(&ev);
            continue;
        }
        cJSON *stopped = call("/generate", body, 200);
        assert_string_equal(str(stopped, "text"), want);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(stopped, "output_ids")), first + 1);
        const cJSON *fr = cJSON_GetObjectItem(cJSON_GetObjectItem(stopped, "meta_info"), "finish_reason");
        assert_int_equal(num(fr, "matched"), stop_id);
        cJSON_Delete(stopped);
    }
    cJSON_Delete(with);
    cJSON_Delete(before);
    cJSON_Delete(full);
}

static void test_metrics_and_dashboard(void **state) {
    (void)state;
    if (!g_bin) skip();
    cJSON_Delete(call("/generate", "{\"text\": \"metrics\", \"sampling_params\": {\"max_new_tokens\": 4}}", 200));
    mt_http_response r;
    for (int i = 0; i < 250; i++) { /* engine gauges are updated at the end of each engine iteration */
        assert_int_equal(mt_http_call(g_c, "GET", "/metrics", NULL, &r), 0);
        if (mt_prom_value(r.body, "moetrace_num_requests_running") == 0) break;
        mt_http_response_free(&r);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.content_type, "text/plain"));
    static const char *const NAMES[] = {
        "moetrace_time_to_first_token_seconds_count", "moetrace_inter_token_latency_seconds_count",
        "moetrace_e2e_request_latency_seconds_count", "moetrace_prompt_tokens_total", "moetrace_generation_tokens_total",
        "moetrace_http_requests_total", "moetrace_requests_finished_total", "moetrace_kv_cache_blocks_total",
        "moetrace_expert_recorder_window_tokens", "moetrace_expert_balancedness_mean", "moetrace_kv_cache_bytes",
        "moetrace_forward_pass_seconds_total", "moetrace_engine_step_seconds_total",
    };
    for (size_t i = 0; i < sizeof NAMES / sizeof *NAMES; i++)
        if (!(mt_prom_value(r.body, NAMES[i]) > 0)) fail_msg("%s is missing or 0 in:\n%s", NAMES[i], r.body);
    assert_true(mt_prom_value(r.body, "moetrace_preemptions_total") == 0); /* present; nothing preempted */
    assert_true(mt_prom_value(r.body, "moetrace_tokens_recomputed_total") == 0);
    assert_true(mt_prom_value(r.body, "moetrace_num_requests_running") == 0);
    assert_true(mt_prom_value(r.body, "moetrace_num_requests_waiting") == 0);
    assert_true(mt_prom_value(r.body, "moetrace_expert_recorder_active") == 1); /* --enable-expert-distribution-metrics */
    assert_non_null(strstr(r.body, "moetrace_expert_recorder_active{mode=\"stat\"} 1"));
    assert_non_null(strstr(r.body, "moetrace_expert_balancedness{layer=\"1\"}"));
    assert_null(strstr(r.body, "moetrace_expert_balancedness{layer=\"0\"}")); /* dense */
    assert_true(mt_prom_value(r.body, "moetrace_engine_step_seconds_total") >=
                mt_prom_value(r.body, "moetrace_forward_pass_seconds_total"));
    double kv_use = mt_prom_value(r.body, "moetrace_kv_cache_usage_ratio");
    assert_true(kv_use >= 0 && kv_use <= 1);
    mt_http_response_free(&r);

    assert_int_equal(mt_http_call(g_c, "GET", "/dashboard", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "/dashboard/data"));
    mt_http_response_free(&r);
    cJSON *d = call("/dashboard/data", NULL, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(d, "logical_count")), LAYERS);
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(cJSON_GetObjectItem(d, "balancedness"), 0)));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(d, "recording")));
    assert_true(num(d, "num_tokens") > 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(d, "placement"))); /* no --ep-size */
    assert_int_equal(num(d, "eplb_every"), 0);
    cJSON_Delete(d);
    cJSON *info = call("/get_model_info", NULL, 200);
    assert_int_equal(num(info, "num_hidden_layers"), LAYERS);
    cJSON_Delete(info);
}

/* ---- per_token recording: request ids as the clients know them ------------------------------- */

/* Tokens the engine forwarded for a finished request: every prompt token not served from the prefix
 * cache, and every output token but the last. */
static int forwarded(int prompt, int cached, int output) { return prompt - cached + output - 1; }

/* One request of test_per_token_request_ids: its response's id and forwarded tokens. */
typedef struct named_request {
    char id[128];
    int forwarded;
} named_request;

/* POSTs body to path on c; keeps the response's id (meta_info.id for /generate, else "id"). */
static void call_named(mt_http_client *c, const char *path, const char *body, named_request *out) {
    long status;
    cJSON *j = mt_api_json(c, path, body, &status);
    assert_int_equal(status, 200);
    const cJSON *meta = cJSON_GetObjectItem(j, "meta_info");
    if (meta) {
        snprintf(out->id, sizeof out->id, "%s", str(meta, "id"));
        out->forwarded = forwarded(num(meta, "prompt_tokens"), num(meta, "cached_tokens"),
                                   num(meta, "completion_tokens"));
    } else {
        const cJSON *u = cJSON_GetObjectItem(j, "usage"), *d = cJSON_GetObjectItem(u, "prompt_tokens_details");
        snprintf(out->id, sizeof out->id, "%s", str(j, "id"));
        out->forwarded = forwarded(num(u, "prompt_tokens"), d ? num(d, "cached_tokens") : 0, num(u, "completion_tokens"));
    }
    cJSON_Delete(j);
}

/* A server recording per_token: after /generate with a rid and without, a completion and a chat
 * completion, the dump's index lists the four requests by the ids their responses carried, as
 * strings, in order; each request's rows in the tensors are its forwarded tokens. */
static void test_per_token_request_ids(void **state) {
    (void)state;
    if (!g_bin) skip();
    char dump_dir[512];
    snprintf(dump_dir, sizeof dump_dir, "%s", path_of("per_token"));
    assert_int_equal(mkdir(dump_dir, 0755), 0);
    mt_test_server srv;
    assert_int_equal(start_server(&srv, "--expert-distribution-recorder-mode per_token --domain-field topic", dump_dir,
                                  "per_token.log"),
                     0);
    mt_http_client *c = mt_http_client_new(srv.url, NULL);
    mt_http_response r;
    assert_int_equal(mt_http_call(c, "POST", "/start_expert_distribution_record", "", &r), 0);
    assert_int_equal(r.status, 200);
    mt_http_response_free(&r);

    named_request req[4];
    call_named(c, "/generate", "{\"text\": \"first request\", \"rid\": \"req-A\", \"topic\": \"docs\", "
                               "\"sampling_params\": {\"max_new_tokens\": 3, \"ignore_eos\": true}}", &req[0]);
    assert_string_equal(req[0].id, "req-A");
    /* a health probe forwards one token: counted as load, no row, no request of a domain */
    assert_int_equal(mt_http_call(c, "GET", "/health_generate", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    mt_http_response_free(&r);
    call_named(c, "/generate", "{\"text\": \"second one, without a rid\", "
                               "\"sampling_params\": {\"max_new_tokens\": 2, \"ignore_eos\": true}}", &req[1]);
    call_named(c, "/v1/completions", "{\"prompt\": \"a completion\", \"max_tokens\": 4, \"ignore_eos\": true, \"topic\": \"docs\"}",
               &req[2]);
    assert_true(!strncmp(req[2].id, "cmpl-", 5));
    call_named(c, "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], "
                                          "\"max_tokens\": 2, \"ignore_eos\": true, \"topic\": \"chat\"}", &req[3]);
    assert_true(!strncmp(req[3].id, "chatcmpl-", 9));
    assert_int_equal(mt_http_call(c, "POST", "/stop_expert_distribution_record", "", &r), 0);
    mt_http_response_free(&r);

    long status;
    cJSON *dump = mt_api_json(c, "/dump_expert_distribution_record?inline=1", "", &status);
    assert_int_equal(status, 200);
    assert_string_equal(str(dump, "mode"), "per_token");
    assert_int_equal(num(dump, "num_requests"), 4);
    const cJSON *ids = cJSON_GetObjectItem(dump, "request_ids");
    assert_int_equal(cJSON_GetArraySize(ids), 4);
    for (int i = 0; i < 4; i++) {
        const cJSON *v = cJSON_GetArrayItem(ids, i);
        if (!cJSON_IsString(v) || strcmp(v->valuestring, req[i].id)) {
            char *text = cJSON_PrintUnformatted(ids);
            fail_msg("request_ids %s: entry %d is not \"%s\"", text, i, req[i].id);
        }
    }
    /* request_domains: each request's label ("topic"), null for the unlabelled one */
    const cJSON *doms_of = cJSON_GetObjectItem(dump, "request_domains");
    static const char *const DOMAIN_OF[4] = {"docs", NULL, "docs", "chat"};
    assert_int_equal(cJSON_GetArraySize(doms_of), 4);
    for (int i = 0; i < 4; i++) {
        const cJSON *v = cJSON_GetArrayItem(doms_of, i);
        if (DOMAIN_OF[i]) assert_true(cJSON_IsString(v) && !strcmp(v->valuestring, DOMAIN_OF[i]));
        else assert_true(cJSON_IsNull(v));
    }

    /* request_index: each request's rows are its forwarded tokens */
    char tensors[1024];
    snprintf(tensors, sizeof tensors, "%s/%s", dump_dir, str(dump, "tensors"));
    mt_checkpoint *ck;
    mt_err err;
    if (mt_checkpoint_open(&ck, tensors, &err)) fail_msg("%s", err.msg);
    const mt_tensor_info *ri = mt_checkpoint_find(ck, "request_index");
    assert_non_null(ri);
    assert_int_equal(ri->shape[0], num(dump, "num_tokens_recorded"));
    assert_int_equal(num(dump, "num_tokens"), num(dump, "num_tokens_recorded") + 1); /* the probe's */
    int rows[4] = {0};
    for (int64_t t = 0; t < ri->shape[0]; t++) {
        int64_t v;
        memcpy(&v, (const char *)ri->data + t * 8, 8);
        assert_true(v >= 0 && v < 4);
        rows[v]++;
    }
    for (int i = 0; i < 4; i++)
        if (rows[i] != req[i].forwarded) fail_msg("request %s: %d rows, %d tokens forwarded", req[i].id, rows[i], req[i].forwarded);
    mt_checkpoint_close(ck);
    cJSON_Delete(dump);

    /* the domains beside the dump: "docs" (a /generate and a completion), "chat", one unlabelled */
    char cmd[1024], usage[1024];
    snprintf(cmd, sizeof cmd, "ls -d %s/domain_usage_* 2>/dev/null | head -1", dump_dir);
    FILE *ls = popen(cmd, "r");
    assert_non_null(ls);
    assert_non_null(fgets(usage, sizeof usage, ls));
    pclose(ls);
    usage[strcspn(usage, "\n")] = 0;
    strncat(usage, "/domains.json", sizeof usage - strlen(usage) - 1);
    cJSON *dj = mt_json_load_file(usage, &err);
    if (!dj) fail_msg("%s", err.msg);
    assert_int_equal(num(dj, "unlabelled_requests"), 1);
    assert_int_equal(num(dj, "tokens"), req[0].forwarded + req[1].forwarded + req[2].forwarded + req[3].forwarded + 1);
    const cJSON *doms = cJSON_GetObjectItem(dj, "domains");
    assert_int_equal(cJSON_GetArraySize(doms), 2);
    const cJSON *docs = cJSON_GetArrayItem(doms, 0), *chat = cJSON_GetArrayItem(doms, 1);
    assert_string_equal(str(docs, "name"), "docs");
    assert_int_equal(num(docs, "requests"), 2);
    assert_int_equal(num(docs, "tokens"), req[0].forwarded + req[2].forwarded);
    assert_string_equal(str(chat, "name"), "chat");
    assert_int_equal(num(chat, "requests"), 1);
    assert_int_equal(num(chat, "tokens"), req[3].forwarded);
    cJSON_Delete(dj);
    mt_http_client_free(c);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);
}

/* ---- what OpenAI's client library reads (tests/compat/openai_client.mjs) ---------------------- */

typedef struct raw_reply {
    char request_id[128]; /* the x-request-id header, "" when none */
    mt_strbuf body;
} raw_reply;

static size_t raw_header(char *line, size_t size, size_t n, void *ctx) {
    raw_reply *r = ctx;
    size_t len = size * n;
    static const char NAME[] = "x-request-id:";
    if (len > sizeof NAME && !strncasecmp(line, NAME, sizeof NAME - 1)) {
        size_t from = sizeof NAME - 1, to = len;
        while (from < to && line[from] == ' ') from++;
        while (to > from && (line[to - 1] == '\r' || line[to - 1] == '\n')) to--;
        snprintf(r->request_id, sizeof r->request_id, "%.*s", (int)(to - from), line + from);
    }
    return len;
}

static size_t raw_body(char *data, size_t size, size_t n, void *ctx) {
    mt_strbuf_append(&((raw_reply *)ctx)->body, data, size * n);
    return size * n;
}

/* POSTs body to path with libcurl, keeping the x-request-id header (the test client drops headers). */
static void post_raw(const char *path, const char *body, raw_reply *out) {
    memset(out, 0, sizeof *out);
    char url[512];
    snprintf(url, sizeof url, "%s%s", g_srv.url, path);
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, raw_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, raw_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    mt_strbuf_append(&out->body, "", 0);
}

/* The OpenAI endpoints' answers carry their id as x-request-id (the SDK's request_id), streamed or not. */
static void test_openai_request_id_header(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    raw_reply r;
    post_raw("/v1/completions", "{\"prompt\": \"Hello\", \"max_tokens\": 2}", &r);
    cJSON *j = cJSON_Parse(r.body.data);
    assert_non_null(j);
    assert_true(!strncmp(str(j, "id"), "cmpl-", 5));
    assert_string_equal(r.request_id, str(j, "id"));
    cJSON_Delete(j);
    mt_strbuf_free(&r.body);

    post_raw("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 2, "
                                     "\"stream\": true}", &r);
    const char *id = strstr(r.body.data, "\"id\":\"");
    assert_non_null(id);
    assert_true(r.request_id[0] != 0);
    assert_true(!strncmp(id + 6, r.request_id, strlen(r.request_id)) && id[6 + strlen(r.request_id)] == '"');
    mt_strbuf_free(&r.body);
}

/* Errors are OpenAI's object {"message", "type", "param", "code"} (the SDK reads .param from it). */
static void test_openai_error_object(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    cJSON *j = call("/v1/completions", "{\"prompt\": \"Hello\", \"max_tokens\": -1}", 400);
    const cJSON *err = cJSON_GetObjectItem(j, "error");
    assert_non_null(strstr(str(err, "message"), "max_tokens"));
    assert_string_equal(str(err, "type"), "invalid_request_error");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(err, "param")));
    assert_int_equal(num(err, "code"), 400);
    cJSON_Delete(j);
    /* a limit past the context is named as the request spelled it (audit h14: "max_new_tokens") */
    static const char *const past_context[][3] = {
        {"/v1/completions", "{\"prompt\": \"Hello there, how are you doing today, my friend\", \"max_tokens\": 254}", "max_tokens 254"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}], "
                                 "\"max_completion_tokens\": 254}", "max_completion_tokens 254"},
    };
    for (size_t i = 0; i < sizeof past_context / sizeof *past_context; i++) {
        j = call(past_context[i][0], past_context[i][1], 400);
        const char *message = str(cJSON_GetObjectItem(j, "error"), "message");
        if (!strstr(message, past_context[i][2]) || strstr(message, "max_new_tokens"))
            fail_msg("%s: %s", past_context[i][1], message);
        cJSON_Delete(j);
    }
}

/* suffix (fill-in-the-middle) and best_of other than n are refused, not ignored; their neutral values pass. */
static void test_completions_suffix_best_of(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    static const char *const refused[][2] = {
        {"\"suffix\": \" the end\"", "suffix"}, {"\"suffix\": 3", "suffix"},
        {"\"best_of\": 3", "best_of"}, {"\"best_of\": 1, \"n\": 2", "best_of"},
    };
    static const char *const accepted[] = {"\"suffix\": null", "\"suffix\": \"\"", "\"best_of\": 1",
                                           "\"best_of\": 2, \"n\": 2", "\"best_of\": null"};
    char body[256];
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        snprintf(body, sizeof body, "{\"prompt\": \"Hello\", \"max_tokens\": 2, %s}", refused[i][0]);
        cJSON *j = call("/v1/completions", body, 400);
        const char *message = str(cJSON_GetObjectItem(j, "error"), "message");
        if (!strstr(message, refused[i][1])) fail_msg("%s: %s", body, message);
        cJSON_Delete(j);
    }
    for (size_t i = 0; i < sizeof accepted / sizeof *accepted; i++) {
        snprintf(body, sizeof body, "{\"prompt\": \"Hello\", \"max_tokens\": 2, %s}", accepted[i]);
        cJSON_Delete(call("/v1/completions", body, 200));
    }
}

/* A chat message has "refusal": null, and so have chat log-probabilities (both required by OpenAI's
 * types); with include_usage every chunk but the usage chunk has "usage": null, without it none has usage. */
static void test_openai_required_nulls(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    static const char BODY[] = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 3, "
                               "\"logprobs\": true, \"ignore_eos\": true%s}";
    char body[512];
    snprintf(body, sizeof body, BODY, "");
    cJSON *chat = call("/v1/chat/completions", body, 200);
    const cJSON *ch = choice0(chat), *refusal = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "message"), "refusal");
    assert_true(cJSON_IsNull(refusal));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "logprobs"), "refusal")));
    cJSON_Delete(chat);

    static const char *const streams[][2] = {
        {"/v1/chat/completions", ", \"stream\": true, \"stream_options\": {\"include_usage\": true}"},
        {"/v1/chat/completions", ", \"stream\": true"},
        {"/v1/completions", ", \"stream\": true, \"stream_options\": {\"include_usage\": true}"},
    };
    for (int s = 0; s < 3; s++) {
        bool usage = strstr(streams[s][1], "include_usage") != NULL;
        if (s < 2) snprintf(body, sizeof body, BODY, streams[s][1]);
        else snprintf(body, sizeof body, "{\"prompt\": \"Hi\", \"max_tokens\": 3, \"n\": 2%s}", streams[s][1]);
        mt_sse_events ev;
        long status;
        assert_int_equal(mt_api_stream(g_c, streams[s][0], body, &ev, &status), 0);
        assert_int_equal(status, 200);
        assert_true(ev.n >= (usage ? 2 : 1));
        for (int i = 0; i < ev.n; i++) {
            const cJSON *e = cJSON_GetArrayItem(ev.list, i), *u = cJSON_GetObjectItem(e, "usage");
            bool usage_chunk = usage && i == ev.n - 1;
            if (usage_chunk) assert_true(cJSON_IsObject(u));
            else if (usage) assert_true(cJSON_IsNull(u));
            else assert_null(u);
            const cJSON *lp = cJSON_GetObjectItem(choice0(e), "logprobs");
            if (s < 2 && cJSON_IsObject(lp)) assert_true(cJSON_IsNull(cJSON_GetObjectItem(lp, "refusal")));
        }
        mt_sse_events_free(&ev);
    }
}

/* The text, completion_tokens and finish reason of a /v1/completions answer and a /generate one for
 * the same prompt and controls (oai: the completion's top-level fields, gen: the sampling_params). */
static void same_as_generate(const char *prompt, const char *oai, const char *gen, char *text, size_t text_len) {
    char body[1024];
    snprintf(body, sizeof body, "{\"prompt\": \"%s\", \"max_tokens\": 8, %s}", prompt, oai);
    cJSON *c = call("/v1/completions", body, 200);
    snprintf(body, sizeof body, "{\"text\": \"%s\", \"sampling_params\": {\"max_new_tokens\": 8, %s}}", prompt, gen);
    cJSON *g = call("/generate", body, 200);
    const cJSON *meta = cJSON_GetObjectItem(g, "meta_info");
    if (strcmp(str(choice0(c), "text"), str(g, "text")))
        fail_msg("%s: completion '%s', /generate '%s'", oai, str(choice0(c), "text"), str(g, "text"));
    assert_int_equal(num(cJSON_GetObjectItem(c, "usage"), "completion_tokens"), num(meta, "completion_tokens"));
    assert_string_equal(str(choice0(c), "finish_reason"), str(cJSON_GetObjectItem(meta, "finish_reason"), "type"));
    snprintf(text, text_len, "%s", str(g, "text"));
    cJSON_Delete(c);
    cJSON_Delete(g);
}

static void test_sampling_controls(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    static const char PROMPT[] = "Hello world, hello moetrace";
    char plain[512], text[512], oai[256], gen[256];
    same_as_generate(PROMPT, "\"temperature\": 0, \"ignore_eos\": true", "\"temperature\": 0, \"ignore_eos\": true",
                     plain, sizeof plain);
    cJSON *g = call("/generate", "{\"text\": \"Hello world, hello moetrace\", \"sampling_params\": {\"max_new_tokens\": 1, "
                                 "\"temperature\": 0}}", 200);
    int first = cJSON_GetArrayItem(cJSON_GetObjectItem(g, "output_ids"), 0)->valueint;
    cJSON_Delete(g);
    /* each changes the output (the greedy one repeats tokens), as it does through /generate */
    static const char *const CONTROLS[][2] = {
        {"\"frequency_penalty\": 2", "\"frequency_penalty\": 2"},
        {"\"presence_penalty\": 2", "\"presence_penalty\": 2"},
        {"\"repetition_penalty\": 2", "\"repetition_penalty\": 2"},
        {"\"logit_bias\": {\"77\": 100}", "\"logit_bias\": {\"77\": 100}"},
        {"\"logit_bias\": {\"%d\": -100}", "\"logit_bias\": {\"%d\": -100}"},
    };
    for (size_t k = 0; k < sizeof CONTROLS / sizeof *CONTROLS; k++) {
        char o[128], q[128];
        snprintf(o, sizeof o, CONTROLS[k][0], first);
        snprintf(q, sizeof q, CONTROLS[k][1], first);
        snprintf(oai, sizeof oai, "\"temperature\": 0, \"ignore_eos\": true, %s", o);
        snprintf(gen, sizeof gen, "\"temperature\": 0, \"ignore_eos\": true, %s", q);
        same_as_generate(PROMPT, oai, gen, text, sizeof text);
        if (!strcmp(text, plain)) fail_msg("%s changed nothing: '%s'", o, text);
        if (k == 3) assert_string_equal(text, "kkkkkkkk");   /* token 77 is "k" */
    }
    /* min_tokens (or min_new_tokens) bars the greedy first token as a stop token from the first 3 */
    snprintf(oai, sizeof oai, "\"temperature\": 0, \"stop_token_ids\": [%d]", first);
    same_as_generate(PROMPT, oai, oai, text, sizeof text);
    assert_string_equal(text, "");
    static const char *const MIN_KEYS[] = {"\"min_tokens\": 3", "\"min_new_tokens\": 3",
                                           "\"min_tokens\": 3, \"min_new_tokens\": 3"};
    for (int k = 0; k < 3; k++) {
        snprintf(oai, sizeof oai, "\"temperature\": 0, \"stop_token_ids\": [%d], %s", first, MIN_KEYS[k]);
        snprintf(gen, sizeof gen, "\"temperature\": 0, \"stop_token_ids\": [%d], \"min_new_tokens\": 3", first);
        same_as_generate(PROMPT, oai, gen, text, sizeof text);
        assert_true(strlen(text) > 0);
    }
    /* min_p sampled with a seed */
    same_as_generate(PROMPT, "\"temperature\": 1, \"seed\": 7, \"min_p\": 0.5, \"ignore_eos\": true",
                     "\"temperature\": 1, \"seed\": 7, \"min_p\": 0.5, \"ignore_eos\": true", text, sizeof text);
    /* chat: a +100 bias makes every token the biased one */
    cJSON *chat = call("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 4, "
                                               "\"ignore_eos\": true, \"temperature\": 0, \"logit_bias\": {\"77\": 100}}", 200);
    assert_string_equal(str(cJSON_GetObjectItem(choice0(chat), "message"), "content"), "kkkk");
    cJSON_Delete(chat);
    /* bad values: 400s naming the field, the server serving on */
    static const char *const BAD[][2] = {
        {"\"frequency_penalty\": 2.5", "'frequency_penalty'"},
        {"\"presence_penalty\": -2.5", "'presence_penalty'"},
        {"\"repetition_penalty\": 0", "'repetition_penalty'"},
        {"\"min_p\": 1.5", "'min_p'"},
        {"\"min_tokens\": 9", "'min_tokens' 9 is more than 'max_tokens' 8"},
        {"\"min_tokens\": 2, \"min_new_tokens\": 3", "disagree"},
        {"\"logit_bias\": {\"abc\": 1}", "'logit_bias' key 'abc'"},
        {"\"logit_bias\": {\"1004\": 1}", "not a token id in [0, 1004)"},
        {"\"logit_bias\": {\"5\": 101}", "[-100, 100]"},
        {"\"logit_bias\": [5]", "'logit_bias' must be an object"},
    };
    for (size_t k = 0; k < sizeof BAD / sizeof *BAD; k++) {
        char body[512];
        snprintf(body, sizeof body, "{\"prompt\": \"Hello\", \"max_tokens\": 8, %s}", BAD[k][0]);
        cJSON *j = call("/v1/completions", body, 400);
        const char *message = str(cJSON_GetObjectItem(j, "error"), "message");
        if (!strstr(message, BAD[k][1])) fail_msg("%s: %s", body, message);
        cJSON_Delete(j);
    }
    cJSON_Delete(call("/v1/completions", "{\"prompt\": \"Hello\", \"max_tokens\": 1}", 200));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_models_and_completions),
        cmocka_unit_test(test_chat),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_text_offsets),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_stop_token_text),
        cmocka_unit_test(test_metrics_and_dashboard),
        cmocka_unit_test(test_per_token_request_ids),
        cmocka_unit_test(test_text_with_nul),
        cmocka_unit_test(test_openai_request_id_header),
        cmocka_unit_test(test_openai_error_object),
        cmocka_unit_test(test_completions_suffix_best_of),
        cmocka_unit_test(test_openai_required_nulls),
        cmocka_unit_test(test_sampling_controls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
