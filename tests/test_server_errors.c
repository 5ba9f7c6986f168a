/* moetrace serve against bad input: every malformed request gets a JSON error
 * {"error": {"message", "type", "code"}} with the right 4xx status, and the server keeps serving
 * (GET /health is checked after each case). Also: the API key (401), /health answering 503 while
 * the model loads, and a model with more than 255 experts (no uint8 routing). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "chat/chat_template.h"
#include "model/config.h"
#include "server/request_body.h"
#include "server_setup.h"
#include "support/api_util.h"
#include "support/http_client.h"
#include "support/server_proc.h"
#include "test_cli.h"

#define MODEL MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"

static int setup(void **state) {
    (void)state;
    return server_setup("srverr_");
}

static void expect_alive(mt_http_client *c, const char *after) {
    mt_http_response r;
    if (mt_http_call(c, "GET", "/health", NULL, &r) != 0 || r.status != 200)
        fail_msg("server not healthy after %s (%ld %s)", after, r.status, r.error);
    mt_http_response_free(&r);
}

/* The answer is the JSON error object with code == status and a message containing needle. */
static void expect_error(const mt_http_response *r, long status, const char *needle, const char *what) {
    if (r->status != status) fail_msg("%s: status %ld (want %ld): %s", what, r->status, status, r->body);
    cJSON *j = cJSON_Parse(r->body);
    const cJSON *e = cJSON_GetObjectItem(j, "error");
    const cJSON *msg = cJSON_GetObjectItem(e, "message"), *type = cJSON_GetObjectItem(e, "type"),
                *code = cJSON_GetObjectItem(e, "code");
    if (!cJSON_IsString(msg) || !cJSON_IsString(type) || !cJSON_IsNumber(code) || code->valueint != status)
        fail_msg("%s: not a JSON error object: %s", what, r->body);
    if (needle && !strstr(msg->valuestring, needle)) fail_msg("%s: message '%s' lacks '%s'", what, msg->valuestring, needle);
    cJSON_Delete(j);
}

static char *long_ids(int n, int max_new) {
    char *s = malloc((size_t)n * 6 + 128), *p = s;
    p += sprintf(p, "{\"input_ids\": [");
    for (int i = 0; i < n; i++) p += sprintf(p, "%s%d", i ? "," : "", 3 + i % 400);
    sprintf(p, "], \"sampling_params\": {\"max_new_tokens\": %d}}", max_new);
    return s;
}

/* A raw HTTP exchange: sends text (then, with hang_up, closes the sending side) and reads the answer
 * into reply (NUL-terminated; waiting at most 10 s for it to start, then until its Content-Length
 * bytes of body came or the server closed). Returns its status (0 when none came). */
static int raw_exchange(int port, const char *text, bool hang_up, char *reply, size_t reply_len) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    reply[0] = '\0';
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return 0;
    }
    (void)!write(fd, text, strlen(text));
    if (hang_up) shutdown(fd, SHUT_WR);
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, reply + got, reply_len - 1 - got);
        if (n <= 0) break;
        reply[got += (size_t)n] = '\0';
        const char *body = strstr(reply, "\r\n\r\n"), *cl = strcasestr(reply, "\r\nContent-Length:");
        if (got == reply_len - 1 || (body && cl && cl < body && strlen(body + 4) >= strtoul(cl + 17, NULL, 10))) break;
    }
    close(fd);
    int status = 0;
    sscanf(reply, "HTTP/1.%*d %d", &status);
    return status;
}

static int raw_http(int port, const char *text, bool hang_up) {
    char reply[4096];
    return raw_exchange(port, text, hang_up, reply, sizeof reply);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A request is answered at once from its headers, while the client has sent no byte of its body of
 * Content-Length bytes: a length above --max-request-bytes with 413 (the server used to wait for the
 * body until its idle timeout, 60 s, then close without an answer); a missing API key with 401,
 * whatever the length (it used to read and keep the whole body first, up to the cap). The API key
 * check comes first. */
static void expect_early(int port, const char *auth, const char *length, int want) {
    char req[512], reply[4096];
    snprintf(req, sizeof req, "POST /generate HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"
             "Content-Length: %s\r\n\r\n", auth, length);
    double t0 = now_s();
    int status = raw_exchange(port, req, false, reply, sizeof reply);
    double dt = now_s() - t0;
    if (status != want || dt > 5) fail_msg("Content-Length %s: status %d after %.1f s (want %d at once): %s", length,
                                          status, dt, want, reply);
    const char *body = strstr(reply, "\r\n\r\n");
    assert_non_null(body);
    mt_http_response r = {.status = status, .body = (char *)body + 4};
    expect_error(&r, want, want == 413 ? "exceeds" : "API key", length);
}

/* A connection to the server on this machine, its reads waiting at most 10 s. */
static int connect_local(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Sends text on a new connection and reads until the server closes it: exactly one answer came, a
 * JSON 400 with "Connection: close" whose message holds needle. */
static void expect_refused_framing(int port, const char *text, const char *needle) {
    int fd = connect_local(port);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    char reply[8192];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof reply - 1 && (n = read(fd, reply + got, sizeof reply - 1 - got)) > 0) got += (size_t)n;
    reply[got] = '\0';
    close(fd);
    int answers = 0;
    for (const char *p = reply; (p = strstr(p, "HTTP/1.1 ")); p++) answers++;
    int status = 0;
    sscanf(reply, "HTTP/1.%*d %d", &status);
    const char *body = strstr(reply, "\r\n\r\n");
    if (answers != 1 || status != 400 || !body || !strcasestr(reply, "Connection: close"))
        fail_msg("%.80s...: %d answers, status %d, want one 400 with Connection: close: %s", text, answers, status, reply);
    mt_http_response r = {.status = status, .body = (char *)body + 4};
    expect_error(&r, 400, needle, text);
}

static void test_malformed_requests(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_test_server srv;
    char args[1024], log[512];
    snprintf(args, sizeof args, "--model %s --threads 1 --enable-return-routed-experts --max-request-bytes 4096 --kv-blocks 8",
             MODEL);
    snprintf(log, sizeof log, "%s/a.log", g_dir);
    assert_int_equal(mt_test_server_start(&srv, g_bin, args, log, 120), 0);
    mt_http_client *c = mt_http_client_new(srv.url, NULL);

    char *too_long = long_ids(600, 1), *no_room = long_ids(500, 100), *kv = long_ids(100, 100);
    char *full = long_ids(512, 1); /* then the "max_new_tokens" key is taken out: the default limit */
    char *cut = strstr(full, ", \"sampling_params\"");
    assert_non_null(cut);
    strcpy(cut, "}");
    /* 100 prompt tokens leave room for 29 new ones in the KV cache (see below), fewer than 30 */
    char *min_room = long_ids(100, 0), *cut_min = strstr(min_room, ", \"sampling_params\"");
    strcpy(cut_min, ", \"sampling_params\": {\"min_new_tokens\": 30}}");
    char long_rid[200]; /* 78 characters: its two outputs' names rid_0, rid_1 would not fit a job's name */
    snprintf(long_rid, sizeof long_rid, "{\"input_ids\": [1], \"sampling_params\": {\"n\": 2}, \"rid\": \"%078d\"}", 7);
    char *nested = malloc(3010), *huge = malloc(6000); /* deeper than cJSON's nesting limit (1000) */
    memset(nested, '[', 1500);
    memset(nested + 1500, ']', 1500);
    nested[3000] = '\0';
    sprintf(huge, "{\"input_ids\": [1], \"pad\": \"%04000d\"}", 0);
    memset(huge + 30, 'x', 5000);
    strcpy(huge + 5030, "\"}");
    static const char *G = "/generate";
    const struct { const char *method, *path, *body; long status; const char *needle; } cases[] = {
        {"POST", G, "nope", 400, "JSON"},
        {"POST", G, "", 400, "JSON"},
        {"POST", G, "[1, 2]", 400, "JSON object"},
        {"POST", G, "{\"input_ids\": [1, 2", 400, "JSON"},
        {"POST", G, "{}", 400, "exactly one"},
        {"POST", G, "{\"text\": \"a\", \"input_ids\": [1]}", 400, "exactly one"},
        {"POST", G, "{\"input_ids\": \"1,2\"}", 400, "input_ids"},
        {"POST", G, "{\"input_ids\": []}", 400, "empty"},
        {"POST", G, "{\"input_ids\": [1, 2.5]}", 400, "entry 1"},
        {"POST", G, "{\"input_ids\": [1, -3]}", 400, "entry 1"},
        {"POST", G, "{\"input_ids\": [1, \"2\"]}", 400, "entry 1"},
        {"POST", G, "{\"input_ids\": [1, 512]}", 400, "vocabulary"},
        {"POST", G, "{\"input_ids\": [1, 1e10]}", 400, "token id 10000000000 at index 1 of 'input_ids' is outside the vocabulary"},
        {"POST", G, "{\"input_ids\": [9007199254740993]}", 400, "token id 9007199254740993 at index 0"},
        {"POST", G, "{\"input_ids\": [1e400]}", 400, "token id (past any number) at index 0"},
        {"POST", G, "{\"input_ids\": [[1, 2], 3]}", 400, "'input_ids' entry 1 must be a list"},
        {"POST", G, "{\"input_ids\": [[1], []]}", 400, "prompt 1: 'input_ids' is empty"},
        {"POST", G, "{\"input_ids\": [[1], [600]], \"sampling_params\": {\"max_new_tokens\": 2}}", 400,
         "prompt 1: token id 600"},
        {"POST", G, "{\"text\": []}", 400, "empty list"},
        {"POST", G, "{\"text\": [\"a\", 5]}", 400, "'text' entry 1"},
        {"POST", G, "{\"text\": [\"a\", \"b\"]}", 400, "tokenizer"},
        {"POST", G, "{\"input_ids\": [[1], [2]], \"sampling_params\": [{}]}", 400, "1 entries for 2 prompts"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": [{}]}", 400, "must be an object"},
        {"POST", G, "{\"input_ids\": [[1], [2]], \"sampling_params\": [{\"n\": 2}, {}]}", 400, "same 'n'"},
        {"POST", G, "{\"input_ids\": [[1], [2]], \"sampling_params\": [{}, {\"top_p\": 0}]}", 400, "prompt 1: 'top_p'"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"n\": 0}}", 400, "'n'"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"n\": 1025}}", 400, "more than 1024"},
        {"POST", G, "{\"input_ids\": [[1], [2]], \"rid\": [\"a\", \"a\"]}", 400, "the same"},
        {"POST", G, "{\"input_ids\": [[1], [2]], \"rid\": [\"a\"]}", 400, "1 entries for 2 prompts"},
        {"POST", G, "{\"input_ids\": [1], \"rid\": [\"a\"]}", 400, "'rid' must be a string"},
        {"POST", G, long_rid, 400, "at most 77 characters"},
        {"POST", G, "{\"text\": 5}", 400, "'text'"},
        {"POST", G, "{\"text\": \"hello\"}", 400, "tokenizer"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"max_new_tokens\": -1}}", 400, "max_new_tokens"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"max_new_tokens\": 1e12}}", 400, "max_new_tokens"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"max_new_tokens\": 100000}}", 400, "max_new_tokens"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"max_new_tokens\": \"5\"}}", 400, "max_new_tokens"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"max_new_tokens\": 5.5}}", 400, "max_new_tokens"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"temperature\": -1}}", 400, "temperature"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"temperature\": \"hot\"}}", 400, "temperature"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"top_p\": 0}}", 400, "top_p"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"top_p\": 1.5}}", 400, "top_p"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"top_k\": \"x\"}}", 400, "top_k"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": [1]}", 400, "sampling_params"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"frobnicate\": 1}}", 400, "frobnicate"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"stop\": 5}}", 400, "stop"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"stop\": [\"x\"]}}", 400, "tokenizer"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"stop_token_ids\": [99999]}}", 400, "stop_token_ids"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"ignore_eos\": \"yes\"}}", 400, "ignore_eos"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"seed\": 9007199254740992}}", 400, "seed"},
        /* the sampling controls out of SGLang's ranges (logit_bias: OpenAI's) */
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"min_p\": 1.5}}", 400, "'min_p' must be a number in [0, 1]"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"repetition_penalty\": 0}}", 400,
         "'repetition_penalty' must be a number in (0, 2]"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"frequency_penalty\": 2.5}}", 400,
         "'frequency_penalty' must be a number in [-2, 2]"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"presence_penalty\": -2.5}}", 400,
         "'presence_penalty' must be a number in [-2, 2]"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"min_new_tokens\": -1}}", 400, "'min_new_tokens'"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"min_new_tokens\": 5, \"max_new_tokens\": 4}}", 400,
         "'min_new_tokens' 5 is more than 'max_new_tokens' 4"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"min_new_tokens\": 129}}", 400,
         "'min_new_tokens' 129 is more than max_new_tokens 128, its default"},
        {"POST", G, "{\"input_ids\": [[1], [2]], \"sampling_params\": [{}, {\"min_new_tokens\": 3, \"max_new_tokens\": 2}]}",
         400, "prompt 1: 'min_new_tokens' 3"},
        {"POST", G, min_room, 400, "'min_new_tokens' 30 is more than the 29 new tokens that the model's context length"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"logit_bias\": {\"five\": 2}}}", 400,
         "'logit_bias' key 'five' is not a token id in [0, 512)"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"logit_bias\": {\"512\": 2}}}", 400,
         "'logit_bias' key '512' is not a token id in [0, 512)"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"logit_bias\": {\"5\": 101}}}", 400,
         "'logit_bias' value of token '5' must be a number in [-100, 100]"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"logit_bias\": {\"5\": \"2\"}}}", 400, "'logit_bias' value"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"logit_bias\": [[5, 2]]}}", 400,
         "'logit_bias' must be an object"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"logit_bias\": 5}}", 400, "'logit_bias' must be an object"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"logit_bias\": {\"5\": 1, \"5\": 2}}}", 400,
         "duplicate key '5'"},
        {"POST", G, "{\"input_ids\": [1]} xx", 400, "unexpected text after the JSON value at byte 19"},
        {"POST", G, "{\"input_ids\": [1]}{\"input_ids\": [2]}", 400, "unexpected text after the JSON value"},
        /* a key named twice in one object: cJSON read the first (50 tokens ran, and [5]), the clients'
         * parsers read the last */
        {"POST", G, "{\"input_ids\": [5, 6], \"sampling_params\": {\"max_new_tokens\": 50}, "
                    "\"sampling_params\": {\"max_new_tokens\": 2}}", 400,
         "the request body: duplicate key 'sampling_params' (one object names it twice)"},
        {"POST", G, "{\"input_ids\": [5], \"input_ids\": [99999]}", 400, "duplicate key 'input_ids'"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"max_new_tokens\": 1, \"temperature\": 0, "
                    "\"max_new_tokens\": 2}}", 400, "duplicate key 'max_new_tokens', in 'sampling_params'"},
        {"POST", G, "{\"input_ids\": [[1], [2]], \"sampling_params\": [{\"top_k\": 1}, {\"top_k\": 1, \"top_k\": 2}]}",
         400, "duplicate key 'top_k'"},
        {"POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\", \"role\": \"system\"}]}",
         400, "duplicate key 'role'"},
        {"POST", "/abort_request", "{\"rid\": \"a\", \"rid\": \"b\"}", 400, "duplicate key 'rid'"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"stop_regex\": \"a+\"}}", 400, "stop_regex"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"custom_params\": 5}}", 400, "custom_params"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"stream_interval\": 0}}", 400, "stream_interval"},
        {"POST", G, "{\"input_ids\": [1], \"stream\": \"yes\"}", 400, "stream"},
        {"POST", G, "{\"input_ids\": [1], \"return_routed_experts\": \"true\"}", 400, "return_routed_experts"},
        {"POST", G, "{\"input_ids\": [1], \"routed_experts_dtype\": \"int8\"}", 400, "int8"},
        {"POST", G, "{\"input_ids\": [1], \"routed_experts_dtype\": 5}", 400, "routed_experts_dtype"},
        {"POST", G, "{\"input_ids\": [1], \"routed_experts_start_len\": -1}", 400, "routed_experts_start_len"},
        {"POST", G, "{\"input_ids\": [1, 2], \"routed_experts_start_len\": 3}", 400, "routed_experts_start_len"},
        {"POST", G, "{\"input_ids\": [1], \"return_logprob\": 1}", 400, "return_logprob"},
        {"POST", G, "{\"input_ids\": [1, 2], \"return_logprob\": true, \"logprob_start_len\": 2}", 400, "less than the prompt's 2 tokens"},
        {"POST", G, "{\"input_ids\": [1], \"return_logprob\": true, \"logprob_start_len\": -2}", 400, "logprob_start_len"},
        {"POST", G, "{\"input_ids\": [1], \"return_logprob\": true, \"logprob_start_len\": 0.5}", 400, "logprob_start_len"},
        {"POST", G, "{\"input_ids\": [1], \"return_logprob\": true, \"top_logprobs_num\": 21}", 400, "top_logprobs_num"},
        {"POST", G, "{\"input_ids\": [1], \"return_logprob\": true, \"top_logprobs_num\": \"5\"}", 400, "top_logprobs_num"},
        {"POST", G, "{\"input_ids\": [1], \"token_ids_logprob\": [512]}", 400, "outside the vocabulary"},
        {"POST", G, "{\"input_ids\": [1], \"token_ids_logprob\": []}", 400, "'token_ids_logprob' is empty"},
        {"POST", G, "{\"input_ids\": [1], \"token_ids_logprob\": [-1]}", 400, "token_ids_logprob"},
        {"POST", G, "{\"input_ids\": [1], \"token_ids_logprob\": 3}", 400, "token_ids_logprob"},
        {"POST", G, "{\"input_ids\": [1], \"return_text_in_logprobs\": 1}", 400, "return_text_in_logprobs"},
        {"POST", G, "{\"input_ids\": [1], \"return_logprob\": true, \"return_text_in_logprobs\": true}", 400, "tokenizer"},
        {"POST", G, "{\"input_ids\": [[1, 2], [3]], \"return_logprob\": true, \"logprob_start_len\": 1}", 400, "prompt 1: 'logprob_start_len' 1"},
        {"POST", G, "{\"input_ids\": [1], \"rid\": 5}", 400, "rid"},
        {"POST", G, too_long, 400, "context length"},
        {"POST", G, no_room, 400, "context length"},
        {"POST", G, full, 400, "no room for a new token"},
        {"POST", G, kv, 400, "KV blocks"},
        {"POST", G, nested, 400, "JSON nested deeper than 1000 arrays and objects"},
        {"POST", G, "{\"input_ids\": [1], \"sampling_params\": {\"stop\": [\"a\\u0000b\"]}}", 400, "'stop' holds U+0000"},
        {"POST", "/v1/completions", "{\"prompt\": \"a\", \"user\": \"\\u0000\"}", 400, "U+0000"},
        {"POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\\u0000b\"}], \"tools\": [{\"x\": "
         "\"\\u0000\"}]}", 400, "'x' holds U+0000, which moetrace reads only in the prompt ('messages')"},
        {"POST", G, huge, 413, "exceeds"},
        {"GET", G, NULL, 405, "GET"},
        {"POST", "/nonexistent", "{}", 404, "/nonexistent"},
        {"POST", "/v1/completions", "{\"prompt\": \"hi\"}", 400, "tokenizer"},
        {"POST", "/v1/chat/completions", "{\"messages\": []}", 400, "tokenizer"},
        {"POST", "/v1/models", "{}", 405, NULL},
        {"GET", "/v1/completions", NULL, 405, NULL},
    };
    int n_refused = 0; /* 400s of generation requests: each counted as rejected */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mt_http_response r;
        char what[160];
        n_refused += cases[i].status == 400 && (!strcmp(cases[i].path, G) || !strncmp(cases[i].path, "/v1/", 4));
        snprintf(what, sizeof what, "case %zu (%s %s %.60s)", i, cases[i].method, cases[i].path,
                 cases[i].body ? cases[i].body : "");
        if (mt_http_call(c, cases[i].method, cases[i].path, cases[i].body, &r)) fail_msg("%s: %s", what, r.error);
        expect_error(&r, cases[i].status, cases[i].needle, what);
        mt_http_response_free(&r);
        expect_alive(c, what);
    }
    /* without a limit, the default one fits the KV cache too: 100 prompt tokens in 8 blocks of 16
     * leave room for 29 new ones (the last is never forwarded); it was refused naming KV blocks */
    char *no_limit = long_ids(100, 0), *cut_limit = strstr(no_limit, ", \"sampling_params\"");
    strcpy(cut_limit, "}");
    long fit_status;
    cJSON *fit = mt_api_json(c, G, no_limit, &fit_status);
    assert_int_equal(fit_status, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(fit, "output_ids")), 29);
    cJSON_Delete(fit);
    free(no_limit);
    /* HEAD: as GET without a body on the routes that change nothing (health probes), else 405 */
    const struct {
        const char *path;
        long status;
    } heads[] = {{"/health", 200}, {"/metrics", 200}, {"/v1/models", 200}, {"/get_model_info", 200},
                 {G, 405}, {"/start_expert_distribution_record", 405}, {"/flush_cache", 405}};
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        mt_http_response r;
        assert_int_equal(mt_http_call(c, "HEAD", heads[i].path, NULL, &r), 0);
        if (r.status != heads[i].status) fail_msg("HEAD %s: %ld, want %ld", heads[i].path, r.status, heads[i].status);
        assert_int_equal(strlen(r.body), 0);
        mt_http_response_free(&r);
        expect_alive(c, heads[i].path);
    }
    /* SGLang's other sampling keys with neutral values (clients forward SGLang's whole dict) */
    long neutral_status;
    cJSON *neutral = mt_api_json(c, G, "{\"input_ids\": [1], \"sampling_params\": {\"max_new_tokens\": 1, \"logit_bias\": null, "
                                       "\"custom_params\": {\"x\": 1}, \"stream_interval\": 4, \"structural_tag\": null, "
                                       "\"stop_regex\": [], \"min_p\": 0, \"json_schema\": null, \"sampling_seed\": 3}}",
                                 &neutral_status);
    assert_int_equal(neutral_status, 200);
    cJSON_Delete(neutral);
    /* and the sampling controls' own neutral values, with null for their defaults */
    neutral = mt_api_json(c, G, "{\"input_ids\": [1], \"sampling_params\": {\"max_new_tokens\": 1, \"min_p\": null, "
                                "\"frequency_penalty\": 0, \"presence_penalty\": null, \"repetition_penalty\": 1, "
                                "\"min_new_tokens\": null, \"logit_bias\": {}}}", &neutral_status);
    assert_int_equal(neutral_status, 200);
    cJSON_Delete(neutral);
    /* the same key in two objects is no duplicate */
    neutral = mt_api_json(c, G, "{\"input_ids\": [[1], [2]], \"sampling_params\": [{\"max_new_tokens\": 1}, "
                                "{\"max_new_tokens\": 1}]}", &neutral_status);
    assert_int_equal(neutral_status, 200);
    cJSON_Delete(neutral);
    free(too_long);
    free(min_room);
    free(no_room);
    free(full);
    free(kv);
    free(nested);
    free(huge);

    /* Broken HTTP itself. */
    int garbage = raw_http(srv.port, "GARBAGE\r\n\r\n", false); /* libmicrohttpd just closes */
    assert_true(garbage == 0 || garbage == 400);
    expect_alive(c, "a garbage request line");
    assert_int_equal(raw_http(srv.port, "GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", false), 400);
    expect_alive(c, "a malformed header");
    raw_http(srv.port, "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"input_", true);
    expect_alive(c, "a body cut short");
    expect_early(srv.port, "", "99999999999", 413);
    expect_alive(c, "a Content-Length above the limit");
    /* Content-Length headers that cannot frame the body: two of them (the library used the first, 3,
     * answered the invalid JSON '{"i', then read the rest as the next request; a proxy in front may
     * have used the other), a non-numeric one beside Transfer-Encoding (it was ignored), or a length
     * beside Transfer-Encoding (the library used the chunks, a proxy may have used the length): one
     * JSON 400 naming the problem, and the connection closed */
    const char *gen = "{\"input_ids\": [1], \"sampling_params\": {\"max_new_tokens\": 1}}";
    char framed[512];
    snprintf(framed, sizeof framed, "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(gen), gen);
    expect_refused_framing(srv.port, framed, "the request has 2 Content-Length headers");
    snprintf(framed, sizeof framed, "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\ncontent-length: %zu\r\n\r\n%s",
             strlen(gen), strlen(gen), gen);
    expect_refused_framing(srv.port, framed, "the request has 2 Content-Length headers");
    snprintf(framed, sizeof framed, "POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
             "Content-Length: 1e3\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n", strlen(gen), gen);
    expect_refused_framing(srv.port, framed, "the Content-Length header '1e3' is not a number of bytes");
    snprintf(framed, sizeof framed, "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
             "Transfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n", strlen(gen), gen);
    expect_refused_framing(srv.port, framed, "both Content-Length and Transfer-Encoding");
    expect_alive(c, "Content-Length headers that cannot frame the body");

    /* Still serving real work, and the refusals were counted. */
    long status;
    cJSON *ok = mt_api_json(c, "/generate", "{\"input_ids\": [1, 2, 3], \"sampling_params\": {\"max_new_tokens\": 2}}", &status);
    assert_int_equal(status, 200);
    cJSON_Delete(ok);
    mt_http_response r;
    assert_int_equal(mt_http_call(c, "GET", "/metrics", NULL, &r), 0);
    double rejected = mt_prom_value(r.body, "moetrace_requests_rejected_total");
    if (rejected < n_refused) fail_msg("moetrace_requests_rejected_total %.0f, after %d refused requests", rejected, n_refused);
    mt_http_response_free(&r);
    mt_http_client_free(c);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);
}

/* config.json is a named pipe: loading blocks on it until the test writes the config, so the
 * server is observably "loading". The model has 300 experts (uint8 routing impossible), routing
 * return is not enabled, and an API key is required. */
static const char CONFIG_300[] =
    "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 256, \"hidden_size\": 32, \"num_hidden_layers\": 2,"
    " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 16, \"max_position_embeddings\": 128,"
    " \"num_experts\": 300, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 16, \"intermediate_size\": 32,"
    " \"eos_token_id\": 2}";

static void test_loading_api_key_and_many_experts(void **state) {
    (void)state;
    if (!g_bin) skip();
    const char *dir = path_of("m300"), *fifo = path_of("m300/config.json"), *log = path_of("b.log");
    char args[1024];
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(mkfifo(fifo, 0644), 0);
    snprintf(args, sizeof args, "--model %s --load-format dummy --threads 1 --api-key s3cret", dir);

    /* Start by hand: mt_test_server_start waits for a healthy server, which this is not yet. */
    mt_test_server srv;
    memset(&srv, 0, sizeof srv);
    snprintf(srv.log_path, sizeof srv.log_path, "%s", log);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "exec %s serve --port 0 %s >/dev/null 2>%s", g_bin, args, log);
    srv.pid = mt_test_spawn(cmd);
    for (int i = 0; i < 500 && !srv.port; i++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        char *text = mt_test_server_log(&srv);
        const char *at = text ? strstr(text, "listening on http://127.0.0.1:") : NULL;
        if (at) srv.port = atoi(at + 30);
        free(text);
    }
    assert_true(srv.port > 0);
    snprintf(srv.url, sizeof srv.url, "http://127.0.0.1:%d", srv.port);
    mt_http_client *anon = mt_http_client_new(srv.url, NULL), *wrong = mt_http_client_new(srv.url, "guess"),
                   *c = mt_http_client_new(srv.url, "s3cret");
    mt_http_response r;

    /* Loading. */
    assert_int_equal(mt_http_call(anon, "GET", "/health", NULL, &r), 0);
    expect_error(&r, 503, "loading", "/health while loading");
    mt_http_response_free(&r);
    assert_int_equal(mt_http_call(c, "POST", "/generate", "{\"input_ids\": [1]}", &r), 0);
    expect_error(&r, 503, "loading", "/generate while loading");
    mt_http_response_free(&r);
    assert_int_equal(mt_http_call(c, "GET", "/metrics", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(mt_prom_value(r.body, "moetrace_server_ready") == 0);
    mt_http_response_free(&r);

    int fd = open(fifo, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, CONFIG_300, strlen(CONFIG_300)), (ssize_t)strlen(CONFIG_300));
    close(fd);
    for (int i = 0; i < 500; i++) {
        int rc = mt_http_call(anon, "GET", "/health", NULL, &r);
        long st = r.status;
        mt_http_response_free(&r);
        if (rc == 0 && st == 200) break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    expect_alive(anon, "loading"); /* /health needs no key */

    /* API key: every path but /health. */
    const char *paths[] = {"/generate", "/v1/models", "/metrics", "/start_expert_distribution_record", "/dashboard",
                           "/nonexistent"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        const char *body = i == 0 ? "{\"input_ids\": [1]}" : NULL;
        assert_int_equal(mt_http_call(anon, body ? "POST" : "GET", paths[i], body, &r), 0);
        expect_error(&r, 401, "API key", paths[i]);
        mt_http_response_free(&r);
        assert_int_equal(mt_http_call(wrong, body ? "POST" : "GET", paths[i], body, &r), 0);
        expect_error(&r, 401, "API key", paths[i]);
        mt_http_response_free(&r);
    }
    expect_early(srv.port, "", "99999999999", 401);
    expect_early(srv.port, "Authorization: Bearer s3cret\r\n", "99999999999", 413);
    expect_early(srv.port, "", "1000000", 401);
    const char *const basic[] = {"Authorization: Basic czNjcmV0", NULL};
    assert_int_equal(mt_http_call_headers(anon, "GET", "/v1/models", NULL, basic, &r), 0);
    expect_error(&r, 401, "API key", "Basic authorization");
    mt_http_response_free(&r);
    assert_int_equal(mt_http_call(c, "GET", "/v1/models", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    mt_http_response_free(&r);
    assert_int_equal(mt_http_call(anon, "GET", "/dashboard?api_key=s3cret", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "<canvas"));
    mt_http_response_free(&r);

    /* 300 experts: no uint8; routing return not enabled. */
    assert_int_equal(mt_http_call(c, "POST", "/generate", "{\"input_ids\": [1], \"routed_experts_dtype\": \"uint8\"}", &r), 0);
    expect_error(&r, 400, "300 experts", "uint8 with 300 experts");
    mt_http_response_free(&r);
    assert_int_equal(mt_http_call(c, "POST", "/generate", "{\"input_ids\": [1], \"return_routed_experts\": true}", &r), 0);
    expect_error(&r, 400, "--enable-return-routed-experts", "routing not enabled");
    mt_http_response_free(&r);
    long status;
    cJSON *j = mt_api_json(c, "/generate",
                           "{\"input_ids\": [1, 2], \"sampling_params\": {\"max_new_tokens\": 3, \"ignore_eos\": true},"
                           " \"routed_experts_dtype\": \"int16\"}", &status);
    assert_int_equal(status, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "output_ids")), 3);
    cJSON_Delete(j);
    expect_alive(anon, "the key checks");
    mt_http_client_free(anon);
    mt_http_client_free(wrong);
    mt_http_client_free(c);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);
}

/* Request bodies parsed in-process (server/request_body.h), with a tokenizer that adds no special
 * tokens: a text prompt that encodes to nothing is a 400, not a double free (found by
 * fuzz/fuzz_request.c); U+0000 in a prompt's text is encoded with the rest (it was once cut there:
 * "a\u0000bcdefgh" encoded as "a"), and in any other string is a 400; an escaped backslash followed
 * by u0000 is just text. */
static void test_request_bodies(void **state) {
    (void)state;
    mt_config cfg;
    mt_tokenizer *tok;
    mt_chat_template *empty;
    mt_err err;
    if (mt_config_load(&cfg, MODEL, &err)) fail_msg("%s", err.msg);
    if (mt_tokenizer_load(&tok, MT_SOURCE_DIR "/tests/tokenizer/ms", &err)) fail_msg("%s", err.msg);
    if (mt_chat_template_from_string(&empty, "{{ '' }}", NULL, NULL, &err)) fail_msg("%s", err.msg);
    mt_request_ctx ctx = {.cfg = &cfg, .tokenizer = tok, .chat_template = empty};
    const struct { mt_body_kind kind; const char *body; int status; const char *needle; } cases[] = {
        {MT_BODY_GENERATE, "{\"text\": \"hello\", \"rid\": \"r1\"}", 0, "hello"},
        {MT_BODY_GENERATE, "{\"text\": \"\"}", 400, "no tokens"},
        {MT_BODY_COMPLETIONS, "{\"prompt\": \"\"}", 400, "no tokens"},
        {MT_BODY_COMPLETIONS, "{\"prompt\": [\"\"]}", 400, "no tokens"},
        {MT_BODY_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", 400, "no tokens"},
        {MT_BODY_GENERATE, "{\"text\": \"hello\", \"rid\": \"r1\", \"sampling_params\": {\"stop\": [\"x\\u0000\"]}}", 400,
         "'stop' holds U+0000, which moetrace reads only in the prompt ('text')"},
        {MT_BODY_GENERATE, "{\"text\": \"a\\u0000b\", \"rid\": \"r\\u0000\"}", 400, "'rid' holds U+0000"},
        {MT_BODY_GENERATE, "{\"text\": \"a\\u0000b\", \"x\\u0000\": 1}", 400, "a member name holds U+0000"},
        {MT_BODY_GENERATE, "{\"text\": \"a\\u0000b\", \"sampling_params\": {\"\\u0000\": 1}}", 400,
         "a member name in 'sampling_params' holds U+0000"},
        {MT_BODY_GENERATE, "{\"text\": \"a\\u0000b\\u00e9\xff\"}", 400, "not valid UTF-8 (byte 24)"},
        {MT_BODY_GENERATE, "{\"text\": \"a\\u0000b\"} x", 400, "unexpected text after the JSON value at byte 21"},
        {MT_BODY_GENERATE, "{\"text\": \"a\\u0000b\", \"text\": \"c\"}", 400, "duplicate key 'text'"},
        {MT_BODY_COMPLETIONS, "{\"prompt\": \"a\\u0000b\", \"stop\": \"\\u0000\"}", 400,
         "'stop' holds U+0000, which moetrace reads only in the prompt ('prompt')"},
        {MT_BODY_COMPLETIONS, "{\"prompt\": \"a\", \"suffix\": \"\\u0000\"}", 400, "'suffix' holds U+0000"},
        {MT_BODY_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\\u0000b\"}], \"stop\": [\"\\u0000\"]}", 400,
         "'stop' holds U+0000, which moetrace reads only in the prompt ('messages')"},
        {MT_BODY_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"chat_template_kwargs\": {\"k\": \"\\u0000\"}}",
         400, "'k' holds U+0000"},
        {MT_BODY_GENERATE, "{\"text\": \"a\\\\u0000bcdefgh\", \"rid\": \"r1\"}", 0, "a\\u0000bcdefgh"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        mt_gen_request r;
        mt_api_error e = {0};
        int rc = mt_request_parse(&ctx, cases[i].kind, cases[i].body, strlen(cases[i].body), &r, &e);
        if (cases[i].status == 0) { /* needle: the whole prompt text */
            if (rc) fail_msg("case %zu: %s", i, e.message);
            int32_t *ids;
            size_t n;
            if (mt_tokenizer_encode(tok, cases[i].needle, strlen(cases[i].needle), 1, &ids, &n, &err)) fail_msg("%s", err.msg);
            free(ids);
            assert_int_equal(r.n_prompts, 1);
            assert_int_equal(r.prompts[0].n_ids, n);
            assert_string_equal(r.rid, "r1");
            mt_gen_request_free(&r);
            continue;
        }
        assert_int_equal(rc, -1);
        assert_int_equal(e.status, cases[i].status);
        if (!strstr(e.message, cases[i].needle)) fail_msg("case %zu: '%s' lacks '%s'", i, e.message, cases[i].needle);
    }
    /* U+0000 in prompt text: the whole text is encoded, NUL bytes and all */
    const struct { mt_body_kind kind; const char *body; int prompt; const char *text; size_t len; } nul[] = {
        {MT_BODY_GENERATE, "{\"text\": \"a\\u0000bcdefgh\\u0000\"}", 0, "a\0bcdefgh\0", 10},
        {MT_BODY_GENERATE, "{\"text\": [\"x\", \"\\u0000\\u0000y\\\\u0000\"], \"rid\": [\"p\", \"q\"]}", 1, "\0\0y\\u0000", 9},
        {MT_BODY_COMPLETIONS, "{\"prompt\": \"\\u00e9\\u0000\xc3\xa9\"}", 0, "\xc3\xa9\0\xc3\xa9", 5},
        {MT_BODY_COMPLETIONS, "{\"prompt\": [[1, 2], \"a\\u0000\"], \"max_tokens\": 2}", 1, "a\0", 2},
    };
    for (size_t i = 0; i < sizeof nul / sizeof *nul; i++) {
        mt_gen_request r;
        mt_api_error e = {0};
        if (mt_request_parse(&ctx, nul[i].kind, nul[i].body, strlen(nul[i].body), &r, &e))
            fail_msg("U+0000 case %zu: %s", i, e.message);
        int32_t *ids;
        size_t n;
        if (mt_tokenizer_encode(tok, nul[i].text, nul[i].len, 1, &ids, &n, &err)) fail_msg("%s", err.msg);
        assert_int_equal(r.prompts[nul[i].prompt].n_ids, n);
        assert_memory_equal(r.prompts[nul[i].prompt].ids, ids, n * sizeof *ids);
        free(ids);
        mt_gen_request_free(&r);
    }
    /* and in chat messages, where the template sees the character U+0000, as Python's would: its
     * length, its JSON, a slice, and the text of content parts joined */
    mt_chat_template *show;
    if (mt_chat_template_from_string(&show, "{% for m in messages %}{{ m.content }}|{{ m.content | length }}|"
                                     "{{ m.content | tojson }}|{{ m.content[1:] }};{% endfor %}", NULL, NULL, &err))
        fail_msg("%s", err.msg);
    mt_request_ctx chat = {.cfg = &cfg, .tokenizer = tok, .chat_template = show};
    const char *body = "{\"messages\": [{\"role\": \"user\", \"content\": \"a\\u0000b\"}, {\"role\": \"user\", "
                       "\"content\": [{\"type\": \"text\", \"text\": \"\\u0000\"}, {\"type\": \"text\", \"text\": \"c\"}]}]}";
    const char want[] = "a\0b|3|\"a\\u0000b\"|\0b;\0\nc|3|\"\\u0000\\nc\"|\nc;";
    mt_gen_request cr;
    mt_api_error ce = {0};
    if (mt_request_parse(&chat, MT_BODY_CHAT, body, strlen(body), &cr, &ce)) fail_msg("chat: %s", ce.message);
    int32_t *want_ids;
    size_t n_want;
    if (mt_tokenizer_encode(tok, want, sizeof want - 1, 0, &want_ids, &n_want, &err)) fail_msg("%s", err.msg);
    assert_int_equal(cr.prompts[0].n_ids, n_want);
    assert_memory_equal(cr.prompts[0].ids, want_ids, n_want * sizeof *want_ids);
    free(want_ids);
    mt_gen_request_free(&cr);
    mt_chat_template_free(show);
    /* more prompts than a request may ask outputs for: refused before any is read */
    char *many = malloc(8 * 1100 + 64);
    size_t at = (size_t)sprintf(many, "{\"text\": [");
    for (int i = 0; i < 1025; i++) at += (size_t)sprintf(many + at, "%s\"a\"", i ? ", " : "");
    sprintf(many + at, "]}");
    mt_gen_request r;
    mt_api_error e = {0};
    assert_int_equal(mt_request_parse(&ctx, MT_BODY_GENERATE, many, strlen(many), &r, &e), -1);
    assert_int_equal(e.status, 400);
    assert_non_null(strstr(e.message, "1025 prompts, more than 1024"));
    free(many);
    mt_chat_template_free(empty);
    mt_tokenizer_free(tok);
}

/* --host takes a host name: the server listens on the first address it resolves to (localhost:
 * 127.0.0.1, or ::1 where that comes first), and says which. It used to refuse anything but a
 * numeric address. */
static void test_host_name(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_test_server srv;
    assert_int_equal(mt_test_server_start(&srv, g_bin, "--model " MODEL " --threads 1 --host localhost", path_of("h.log"), 120), 0);
    char *log = mt_test_server_log(&srv);
    char want[128];
    snprintf(want, sizeof want, "listening on http://localhost:%d (", srv.port);
    if (!strstr(log, want)) fail_msg("log lacks '%s': %s", want, log);
    free(log);
    mt_http_client *c = mt_http_client_new(srv.url, NULL);
    long status;
    cJSON *j = mt_api_json(c, "/generate", "{\"input_ids\": [1, 2], \"sampling_params\": {\"max_new_tokens\": 1}}", &status);
    assert_int_equal(status, 200);
    cJSON_Delete(j);
    mt_http_client_free(c);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);
}

/* Reads one answer (with a Content-Length) from fd into reply (NUL-terminated): its status, 0 when no
 * whole answer came. */
static int answer_on(int fd, char *reply, size_t len) {
    size_t got = 0;
    reply[0] = '\0';
    for (;;) {
        ssize_t n = read(fd, reply + got, len - 1 - got);
        if (n <= 0) return 0;
        reply[got += (size_t)n] = '\0';
        const char *body = strstr(reply, "\r\n\r\n"), *cl = strcasestr(reply, "\r\nContent-Length:");
        if (body && cl && cl < body && strlen(body + 4) >= strtoul(cl + 17, NULL, 10)) break;
        if (got == len - 1) return 0;
    }
    int status = 0;
    sscanf(reply, "HTTP/1.%*d %d", &status);
    return status;
}

static const char HEALTH[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

/* GET /health on an open keep-alive connection: its status (0 when no whole answer came). */
static int health_on(int fd) {
    if (write(fd, HEALTH, strlen(HEALTH)) != (ssize_t)strlen(HEALTH)) return 0;
    char reply[4096];
    return answer_on(fd, reply, sizeof reply);
}

/* moetrace_http_connections_open, asked on an open keep-alive connection (-1 when no answer came). */
static double connections_open_on(int fd) {
    const char *req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) return -1;
    size_t len = 1 << 20;
    char *reply = malloc(len);
    double open = answer_on(fd, reply, len) == 200 ? mt_prom_value(reply, "moetrace_http_connections_open") : -1;
    free(reply);
    return open;
}

/* Connections are admitted in the order they are accepted, whenever their headers come: of
 * --max-connections + 1 connections opened before any sends its request, exactly the last one
 * accepted is refused, every time, whichever sends first. The decision used to be taken when a
 * request's headers came, refusing every request while more than the limit were open, those of
 * admitted connections and refused ones still closing counted: a burst one above the limit got
 * 503s on several connections, often all of them. */
static void test_connection_order(void **state) {
    (void)state;
    if (!g_bin) skip();
    enum { MAX = 4 };
    mt_test_server srv;
    assert_int_equal(mt_test_server_start(&srv, g_bin, "--model " MODEL " --threads 1 --max-connections 4",
                                          path_of("order.log"), 120), 0);
    /* admitted first and kept open: it asks the server, without opening connections of its own,
     * when those of the last round are closed (a closed connection is counted until libmicrohttpd
     * has cleaned it up, shortly after the client sees it close) */
    int probe = connect_local(srv.port);
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 200 && connections_open_on(probe) != 1; i++) nanosleep(&(struct timespec){0, 20000000}, NULL);
        assert_true(connections_open_on(probe) == 1);
        int fd[MAX];
        for (int i = 0; i < MAX; i++) fd[i] = connect_local(srv.port);
        nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL); /* all accepted before any request */
        for (int i = MAX - 1; i >= 0; i--) /* the connection beyond the limit sends first */
            assert_int_equal(write(fd[i], HEALTH, strlen(HEALTH)), (ssize_t)strlen(HEALTH));
        int status[MAX];
        char reply[4096], refused[4096] = "";
        for (int i = 0; i < MAX; i++) {
            status[i] = answer_on(fd[i], reply, sizeof reply);
            if (status[i] == 503) snprintf(refused, sizeof refused, "%s", reply);
        }
        if (status[0] != 200 || status[1] != 200 || status[2] != 200 || status[3] != 503)
            fail_msg("round %d: statuses %d %d %d %d (want 200 200 200 503: the probe and three admitted)", round,
                     status[0], status[1], status[2], status[3]);
        if (!strstr(refused, "connection limit (--max-connections 4)") || !strcasestr(refused, "Connection: close"))
            fail_msg("round %d: the refusal: %s", round, refused);
        for (int i = 0; i < MAX - 1; i++) assert_int_equal(health_on(fd[i]), 200); /* admitted: still served */
        for (int i = 0; i < MAX; i++) close(fd[i]);
    }
    assert_int_equal(health_on(probe), 200);
    close(probe);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);
}

/* Connections: a request beyond --max-connections is answered 503 (JSON, then the connection
 * closed) instead of its connection being reset; a new connection that does not send its headers
 * within --header-timeout is closed, even when it sends a byte now and then (one client could
 * otherwise hold every connection thread: the server answered nobody, /health included); so is a
 * request whose body does not all come within --body-timeout of its headers. */
static void test_connection_limits(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_test_server srv;
    assert_int_equal(mt_test_server_start(&srv, g_bin, "--model " MODEL " --threads 1 --max-connections 4 --header-timeout 2 "
                                          "--body-timeout 2", path_of("conn.log"), 120), 0);
    int early = connect_local(srv.port); /* a keep-alive connection admitted before the others came */
    assert_int_equal(health_on(early), 200);
    int slow[4];
    double t0 = now_s();
    for (int i = 0; i < 4; i++) {
        slow[i] = connect_local(srv.port);
        assert_int_equal(write(slow[i], "GET /health HTTP/1.1\r\nHo", 25), 25); /* headers never finished */
    }
    /* the four accepted (admitted in accept order) before the sixth comes: on a loaded machine 200 ms
     * were not always enough */
    for (int k = 0; k < 100 && connections_open_on(early) < 5; k++) nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    char reply[4096];
    int status = raw_exchange(srv.port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", false, reply, sizeof reply);
    if (status != 503 || !strstr(reply, "connection limit") || !strcasestr(reply, "Connection: close"))
        fail_msg("a sixth connection: status %d: %s", status, reply);
    /* the connection admitted first keeps being served, over the limit or not */
    assert_int_equal(health_on(early), 200);
    /* one of them keeps sending a header byte every half second: closed all the same */
    for (int k = 0; k < 6; k++) {
        nanosleep(&(struct timespec){0, 500 * 1000 * 1000}, NULL);
        (void)!write(slow[0], "s", 1);
    }
    for (int i = 0; i < 4; i++) {
        char buf[64];
        ssize_t n = read(slow[i], buf, sizeof buf); /* the server's end: EOF or a reset */
        double dt = now_s() - t0;
        if (n > 0 || dt > 10) fail_msg("slow connection %d: read %zd after %.1f s (want it closed after about 3 s)", i, n, dt);
        close(slow[i]);
    }
    status = raw_exchange(srv.port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", false, reply, sizeof reply);
    if (status != 200) fail_msg("after the slow connections: status %d: %s", status, reply);
    /* headers at once, then the body a byte every half second: closed after --body-timeout (four
     * such clients used to hold every connection for as long as they liked, the server answering
     * nobody) */
    int trickle = connect_local(srv.port);
    const char *head = "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{";
    assert_int_equal(write(trickle, head, strlen(head)), (ssize_t)strlen(head));
    t0 = now_s();
    for (int k = 0; k < 6; k++) {
        nanosleep(&(struct timespec){0, 500 * 1000 * 1000}, NULL);
        (void)!write(trickle, " ", 1);
    }
    char buf[64];
    ssize_t got = read(trickle, buf, sizeof buf); /* EOF or a reset */
    double dt = now_s() - t0;
    if (got > 0 || (got < 0 && errno != ECONNRESET) || dt > 10)
        fail_msg("a body trickling in: read %zd after %.1f s (want it closed after about 3 s)", got, dt);
    close(trickle);
    /* a body sent in two pieces a second apart, within the deadline: served */
    const char *gen = "{\"input_ids\": [1, 2], \"sampling_params\": {\"max_new_tokens\": 1}}";
    char req[512];
    snprintf(req, sizeof req, "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%.10s", strlen(gen), gen);
    int pieces = connect_local(srv.port);
    assert_int_equal(write(pieces, req, strlen(req)), (ssize_t)strlen(req));
    nanosleep(&(struct timespec){1, 0}, NULL);
    assert_int_equal(write(pieces, gen + 10, strlen(gen + 10)), (ssize_t)strlen(gen + 10));
    if ((status = answer_on(pieces, reply, sizeof reply)) != 200) fail_msg("a body in two pieces: %d: %s", status, reply);
    close(pieces);
    close(early);
    mt_http_client *mc = mt_http_client_new(srv.url, NULL);
    mt_http_response m;
    assert_int_equal(mt_http_call(mc, "GET", "/metrics", NULL, &m), 0);
    assert_true(mt_prom_value(m.body, "moetrace_http_header_timeouts_total") == 4);
    assert_true(mt_prom_value(m.body, "moetrace_http_body_timeouts_total") == 1);
    assert_true(mt_prom_value(m.body, "moetrace_http_connections_max") == 4);
    double open = mt_prom_value(m.body, "moetrace_http_connections_open");
    /* this client's, and those just closed whose threads may not have ended yet */
    if (open < 1 || open > 4) fail_msg("moetrace_http_connections_open %.0f while one client is connected", open);
    mt_http_response_free(&m);
    mt_http_client_free(mc);
    char *log = mt_test_server_log(&srv);
    assert_non_null(strstr(log, "request headers did not all arrive within 2 s"));
    assert_non_null(strstr(log, "request body did not all arrive after its headers within 2 s"));
    free(log);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);
}

static void test_bad_flags(void **state) {
    (void)state;
    if (!g_bin) skip();
    const struct { const char *args; const char *needle; } cases[] = {
        {"serve", "--model"},
        {"serve --model " MODEL " --port 70000", "--port"},
        {"serve --model " MODEL " --host nowhere.invalid", "--host nowhere.invalid: cannot resolve"},
        {"serve --model " MODEL " --expert-distribution-recorder-mode sometimes", "sometimes"},
        {"serve --model " MODEL " --expert-distribution-recorder-buffer-size 0", "buffer-size"},
        {"serve --model " MODEL " --expert-dump-dir /nonexistent/dir", "/nonexistent/dir"},
        {"serve --model " MODEL " --frobnicate", "--frobnicate"},
        {"serve --model " MODEL " --header-timeout 0", "--header-timeout"},
        {"serve --model " MODEL " --body-timeout 0", "--body-timeout"},
        {"serve --model " MODEL " --device tpu", "tpu"},
        {"serve --model " MODEL " --port 0 --ep-size 3", "--ep-size"},
        {"serve --model " MODEL " --port 0 --init-expert-location /nonexistent.json", "/nonexistent.json"},
        {"serve --model /nonexistent/model --port 0", "config.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[4096];
        int st = run_moetrace(cases[i].args, out, sizeof out);
        if (st == 0 || !strstr(out, cases[i].needle))
            fail_msg("'%s': status %d, output '%s' lacks '%s'", cases[i].args, st, out, cases[i].needle);
    }
}

int main(void) {
    /* raw sockets write to connections the server may have closed (a slow client's header bytes after
     * its timeout): EPIPE, not a signal that ends the test */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_requests),
        cmocka_unit_test(test_loading_api_key_and_many_experts),
        cmocka_unit_test(test_bad_flags),
        cmocka_unit_test(test_host_name),
        cmocka_unit_test(test_connection_limits),
        cmocka_unit_test(test_connection_order),
        cmocka_unit_test(test_request_bodies),
    };
    return cmocka_run_group_tests(tests, setup, server_teardown);
}
