/* moetrace serve's prompt log-probabilities and alternatives, on a small text model (dummy weights)
 * loaded in this process too, for the reference: every value equals, bitwise, mt_token_logprob and
 * mt_top_logprobs of the logits of one pass over the whole prompt (mt_generate's prompt logits).
 * /generate: logprob_start_len (and its default, the last prompt token), top_logprobs_num,
 * return_text_in_logprobs, streamed and not, scored positions never taken from the prefix cache;
 * /v1/completions: echo with "logprobs": N and max_tokens 0 (how evaluation harnesses score a text),
 * streamed and not; chat's top_logprobs. Generated tokens' log-probabilities and alternatives are
 * taken after the penalties, the logit bias and min_new_tokens' barred tokens changed the logits
 * (as SGLang takes them), as engine/penalties.h says, bitwise. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "engine/generate.h"
#include "kernels/kernels.h"
#include "kernels/sample.h"
#include "model/model.h"
#include "server_setup.h"
#include "tokenizer/tokenizer.h"

#define TOP 3
#define MAXP 64

static mt_test_server g_srv;
static mt_http_client *g_c;
static mt_model g_model;
static mt_tokenizer *g_tok;

static int setup(void **state) {
    (void)state;
    if (server_setup("srvlp_")) return -1;
    if (!g_bin) return 0;
    if (server_text_model(SERVER_TEXT_CONFIG)) return -1;
    char args[1024], dir[600], err_path[700];
    snprintf(dir, sizeof dir, "%s/model", g_dir);
    /* 16 scored positions a pass: the 40-token prompts are scored over three passes */
    snprintf(args, sizeof args, "--model %s --load-format dummy --threads 1 --max-scored-tokens 16", dir);
    if (mt_test_server_start(&g_srv, g_bin, args, path_of("server.log"), 120)) return -1;
    g_c = mt_http_client_new(g_srv.url, NULL);
    mt_err err;
    if (mt_model_load(&g_model, dir, MT_LOAD_DUMMY, &err)) return -1;
    snprintf(err_path, sizeof err_path, "%s/tokenizer.json", dir);
    return mt_tokenizer_load(&g_tok, err_path, &err);
}

static int teardown(void **state) {
    if (g_bin) {
        mt_model_free(&g_model);
        mt_tokenizer_free(g_tok);
    }
    return server_stop_and_teardown(state, &g_srv, g_c);
}

static cJSON *call(const char *path, const char *body, long want) { return server_call(g_c, path, body, want); }

/* The reference: the logits of every position of ids, in one pass. */
static float *prompt_logits(const int32_t *ids, int n) {
    float *logits = malloc((size_t)n * g_model.cfg.vocab_size * sizeof *logits);
    int32_t next;
    int n_next = 0;
    mt_err err;
    mt_generate_opts o = {.max_new_tokens = 1, .ignore_eos = true, .prompt_logits = logits};
    if (mt_generate(&g_model, ids, n, &o, &next, &n_next, &err)) fail_msg("%s", err.msg);
    return logits;
}

static float num(const cJSON *x) { return (float)x->valuedouble; }

/* A /generate triple [logprob, id, text] against the expected values (text NULL: null). */
static void check_triple(const cJSON *t, float lp, int32_t id, const char *text) {
    assert_int_equal(cJSON_GetArraySize(t), 3);
    const cJSON *v = cJSON_GetArrayItem(t, 0);
    if (lp != lp) assert_true(cJSON_IsNull(v));
    else if (num(v) != lp) fail_msg("logprob %.9g, want %.9g (token %d)", num(v), lp, id);
    assert_int_equal(cJSON_GetArrayItem(t, 1)->valueint, id);
    const cJSON *s = cJSON_GetArrayItem(t, 2);
    if (!text) assert_true(cJSON_IsNull(s));
    else assert_string_equal(cJSON_GetStringValue(s), text);
}

/* A token's text as the lists give it. */
static char *piece(int32_t id) {
    char *text = NULL;
    size_t len = 0;
    mt_err err;
    if (mt_tokenizer_decode(g_tok, &id, 1, 0, &text, &len, &err)) fail_msg("%s", err.msg);
    char *out = strndup(text, len);
    free(text);
    return out;
}

static void test_generate_scores(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    const int V = g_model.cfg.vocab_size;
    int32_t ids[40];
    int P = 40;
    for (int i = 0; i < P; i++) ids[i] = (7 + 31 * i) % V;
    float *logits = prompt_logits(ids, P);
    char body[2048];
    int at = snprintf(body, sizeof body, "{\"input_ids\": [");
    for (int i = 0; i < P; i++) at += snprintf(body + at, sizeof body - (size_t)at, "%s%d", i ? ", " : "", ids[i]);
    char req[2600];
    for (int stream = 0; stream < 2; stream++) {
        /* start 0 with text and alternatives; start 17 without text; the default (last token only) */
        static const char *const OPTS[] = {
            "\"logprob_start_len\": 0, \"top_logprobs_num\": 3, \"return_text_in_logprobs\": true, "
            "\"token_ids_logprob\": [5, 77, 1003]",
            "\"logprob_start_len\": 17, \"top_logprobs_num\": 3",
            "\"top_logprobs_num\": 0",
        };
        static const int START[] = {0, 17, 39};
        for (int o = 0; o < 3; o++) {
            snprintf(req, sizeof req,
                     "%s], \"sampling_params\": {\"max_new_tokens\": 4, \"temperature\": 0, \"ignore_eos\": true}, "
                     "\"return_logprob\": true, %s%s}",
                     body, OPTS[o], stream ? ", \"stream\": true" : "");
            cJSON *gen = NULL;
            mt_sse_events ev = {0};
            if (stream) {
                long status;
                assert_int_equal(mt_api_stream(g_c, "/generate", req, &ev, &status), 0);
                assert_int_equal(status, 200);
                assert_true(ev.n >= 1);
                gen = cJSON_GetArrayItem(ev.list, ev.n - 1);   /* the last event holds everything */
            } else {
                gen = call("/generate", req, 200);
            }
            const cJSON *meta = cJSON_GetObjectItem(gen, "meta_info");
            const cJSON *in = cJSON_GetObjectItem(meta, "input_token_logprobs");
            const cJSON *out = cJSON_GetObjectItem(meta, "output_token_logprobs");
            const cJSON *in_top = cJSON_GetObjectItem(meta, "input_top_logprobs");
            const cJSON *out_top = cJSON_GetObjectItem(meta, "output_top_logprobs");
            const cJSON *out_ids = cJSON_GetObjectItem(gen, "output_ids");
            bool text = o == 0, top = o < 2;
            int start = START[o];
            assert_int_equal(cJSON_GetArraySize(in), P - start);
            assert_int_equal(cJSON_GetArraySize(out), 4);
            assert_true(top ? cJSON_GetArraySize(in_top) == P - start : in_top == NULL);
            assert_true(top ? cJSON_GetArraySize(out_top) == 4 : out_top == NULL);
            for (int p = start; p < P; p++) {
                const float *row = logits + (size_t)(p - 1) * V;
                char *s = text ? piece(ids[p]) : NULL;
                check_triple(cJSON_GetArrayItem(in, p - start), p > start ? mt_token_logprob(NULL, row, V, ids[p]) : NAN,
                             ids[p], s);
                free(s);
                if (!top) continue;
                const cJSON *alts = cJSON_GetArrayItem(in_top, p - start);
                if (p == start) {
                    assert_true(cJSON_IsNull(alts));
                    continue;
                }
                int32_t want_ids[TOP];
                float want_lps[TOP];
                mt_top_logprobs(NULL, row, V, TOP, want_ids, want_lps);
                assert_int_equal(cJSON_GetArraySize(alts), TOP);
                for (int k = 0; k < TOP; k++) {
                    char *a = text ? piece(want_ids[k]) : NULL;
                    check_triple(cJSON_GetArrayItem(alts, k), want_lps[k], want_ids[k], a);
                    free(a);
                }
            }
            /* token_ids_logprob (first option): the named tokens at every listed position */
            static const int32_t NAMED[3] = {5, 77, 1003};
            const cJSON *in_ids = cJSON_GetObjectItem(meta, "input_token_ids_logprobs");
            const cJSON *out_named = cJSON_GetObjectItem(meta, "output_token_ids_logprobs");
            assert_true(o == 0 ? cJSON_GetArraySize(in_ids) == P - start && cJSON_GetArraySize(out_named) == 4
                               : in_ids == NULL && out_named == NULL);
            for (int p = start; o == 0 && p <= P; p++) {
                const cJSON *list = p < P ? cJSON_GetArrayItem(in_ids, p - start) : cJSON_GetArrayItem(out_named, 0);
                if (p == start) {
                    assert_true(cJSON_IsNull(list));
                    continue;
                }
                assert_int_equal(cJSON_GetArraySize(list), 3);
                for (int k = 0; k < 3; k++) {
                    char *a = piece(NAMED[k]);
                    check_triple(cJSON_GetArrayItem(list, k),
                                 mt_token_logprob(NULL, logits + (size_t)(p - 1) * V, V, NAMED[k]), NAMED[k], a);
                    free(a);
                }
            }
            /* the first output token: greedy, so the top alternative of the last prompt row */
            const float *last = logits + (size_t)(P - 1) * V;
            int32_t first = cJSON_GetArrayItem(out_ids, 0)->valueint;
            assert_int_equal(first, mt_argmax(last, V));
            char *first_text = text ? piece(first) : NULL;
            check_triple(cJSON_GetArrayItem(out, 0), mt_token_logprob(NULL, last, V, first), first, first_text);
            free(first_text);
            for (int i = 0; top && i < 4; i++) {
                const cJSON *alts = cJSON_GetArrayItem(out_top, i);
                assert_int_equal(cJSON_GetArraySize(alts), TOP);
                /* greedy: the chosen token is the first alternative, with the same value */
                assert_int_equal(cJSON_GetArrayItem(cJSON_GetArrayItem(alts, 0), 1)->valueint,
                                 cJSON_GetArrayItem(out_ids, i)->valueint);
                assert_true(num(cJSON_GetArrayItem(cJSON_GetArrayItem(alts, 0), 0)) ==
                            num(cJSON_GetArrayItem(cJSON_GetArrayItem(out, i), 0)));
            }
            /* scored positions are forwarded: start 0 adopts nothing, the default all but the last token */
            int cached = cJSON_GetObjectItem(meta, "cached_tokens")->valueint;
            if (o == 0) assert_int_equal(cached, 0);
            if (o == 1) assert_true(cached <= 16);
            if (stream) mt_sse_events_free(&ev);
            else cJSON_Delete(gen);
        }
    }
    free(logits);
}

/* What evaluation harnesses send to score a text: echo, max_tokens 0, logprobs N. */
static void test_completions_echo(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    const int V = g_model.cfg.vocab_size;
    static const char TEXT[] = "The capital of France is Paris";
    int32_t *ids = NULL;
    size_t n_ids = 0;
    mt_err err;
    if (mt_tokenizer_encode(g_tok, TEXT, strlen(TEXT), 1, &ids, &n_ids, &err)) fail_msg("%s", err.msg);
    int P = (int)n_ids;
    assert_true(P > 3 && P < MAXP);
    float *logits = prompt_logits(ids, P);
    cJSON *whole = NULL;
    for (int stream = 0; stream < 2; stream++) {
        char req[512];
        snprintf(req, sizeof req, "{\"prompt\": \"%s\", \"max_tokens\": 0, \"echo\": true, \"logprobs\": 2, "
                                  "\"temperature\": 0%s}", TEXT, stream ? ", \"stream\": true" : "");
        /* gathered over the chunks when streamed */
        char text[512] = "";
        const cJSON *lists[8];
        int n_lists = 0;
        mt_sse_events ev = {0};
        cJSON *resp = NULL;
        if (stream) {
            long status;
            assert_int_equal(mt_api_stream(g_c, "/v1/completions", req, &ev, &status), 0);
            assert_int_equal(status, 200);
            for (int i = 0; i < ev.n; i++) {
                const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(ev.list, i), "choices"), 0);
                if (!ch) continue;
                strncat(text, cJSON_GetStringValue(cJSON_GetObjectItem(ch, "text")), sizeof text - strlen(text) - 1);
                const cJSON *lp = cJSON_GetObjectItem(ch, "logprobs");
                if (!cJSON_IsNull(lp) && n_lists < 8) lists[n_lists++] = lp;
            }
        } else {
            resp = whole = call("/v1/completions", req, 200);
            const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(resp, "choices"), 0);
            snprintf(text, sizeof text, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(ch, "text")));
            lists[n_lists++] = cJSON_GetObjectItem(ch, "logprobs");
        }
        assert_string_equal(text, TEXT);   /* the prompt, and nothing generated */
        int q = 0;
        double last_offset = -1;
        for (int l = 0; l < n_lists; l++) {
            const cJSON *tokens = cJSON_GetObjectItem(lists[l], "tokens"), *vals = cJSON_GetObjectItem(lists[l], "token_logprobs");
            const cJSON *tops = cJSON_GetObjectItem(lists[l], "top_logprobs"), *offs = cJSON_GetObjectItem(lists[l], "text_offset");
            for (int i = 0; i < cJSON_GetArraySize(vals); i++, q++) {
                assert_true(q < P);
                char *s = piece(ids[q]);
                assert_string_equal(cJSON_GetStringValue(cJSON_GetArrayItem(tokens, i)), s);
                free(s);
                double off = cJSON_GetArrayItem(offs, i)->valuedouble;
                assert_true(off > last_offset || (q == 0 && off == 0));
                last_offset = off;
                const cJSON *v = cJSON_GetArrayItem(vals, i), *alts = cJSON_GetArrayItem(tops, i);
                if (q == 0) {
                    assert_true(cJSON_IsNull(v) && cJSON_IsNull(alts));
                    continue;
                }
                const float *row = logits + (size_t)(q - 1) * V;
                assert_true(num(v) == mt_token_logprob(NULL, row, V, ids[q]));
                int32_t want_ids[2];
                float want_lps[2];
                mt_top_logprobs(NULL, row, V, 2, want_ids, want_lps);
                char *a = piece(want_ids[0]);
                const cJSON *best = cJSON_GetObjectItem(alts, a);
                assert_non_null(best);
                assert_true(num(best) == want_lps[0]);
                assert_true(cJSON_GetArraySize(alts) >= 1 && cJSON_GetArraySize(alts) <= 2);
                free(a);
            }
        }
        assert_int_equal(q, P);
        if (stream) mt_sse_events_free(&ev);
    }
    /* echo without log-probabilities: the prompt's text before the completion's */
    cJSON *plain = call("/v1/completions", "{\"prompt\": \"Hello world\", \"max_tokens\": 3, \"echo\": true}", 200);
    const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(plain, "choices"), 0), "text"));
    assert_true(!strncmp(t, "Hello world", 11));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(plain, "choices"), 0), "logprobs")));
    cJSON_Delete(plain);
    cJSON_Delete(whole);
    free(logits);
    free(ids);
}

static void test_chat_top_logprobs(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    cJSON *chat = call("/v1/chat/completions",
                       "{\"messages\": [{\"role\": \"user\", \"content\": \"Say hello\"}], \"max_tokens\": 5, "
                       "\"temperature\": 0, \"ignore_eos\": true, \"logprobs\": true, \"top_logprobs\": 4}", 200);
    const cJSON *content = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(chat, "choices"), 0), "logprobs"), "content");
    assert_int_equal(cJSON_GetArraySize(content), 5);
    const cJSON *t;
    cJSON_ArrayForEach(t, content) {
        const cJSON *alts = cJSON_GetObjectItem(t, "top_logprobs");
        assert_int_equal(cJSON_GetArraySize(alts), 4);
        /* greedy: the token is the first alternative, with its value; the others no likelier */
        const cJSON *first = cJSON_GetArrayItem(alts, 0);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(first, "token")), cJSON_GetStringValue(cJSON_GetObjectItem(t, "token")));
        assert_true(num(cJSON_GetObjectItem(first, "logprob")) == num(cJSON_GetObjectItem(t, "logprob")));
        for (int k = 1; k < 4; k++)
            assert_true(num(cJSON_GetObjectItem(cJSON_GetArrayItem(alts, k), "logprob")) <=
                        num(cJSON_GetObjectItem(cJSON_GetArrayItem(alts, k - 1), "logprob")));
        assert_true(cJSON_IsArray(cJSON_GetObjectItem(first, "bytes")));
    }
    cJSON_Delete(chat);
}

/* The greedy tokens of a request with every logit change (repetition, frequency and presence
 * penalties, a logit bias on a prompt token, on a token the output holds and on one it would take,
 * eos barred by min_new_tokens): each is the argmax of the reference logits of the sequence so far
 * changed as engine/penalties.h says (scale the prompt's and the output's tokens, then add
 * (bias - frequency * count) - presence; eos -inf before min_new_tokens), its log-probability and
 * alternatives those of that changed row, bitwise. */
static void test_penalised_scores(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    const int V = g_model.cfg.vocab_size, P = 12, N = 8, MIN_NEW = 3;
    /* a negative frequency penalty: the output repeats tokens, so counts above 1 are met */
    const float REP = 1.5f, FREQ = -0.5f, PRES = 0.25f;
    int32_t seq[64];
    for (int i = 0; i < P; i++) seq[i] = (11 + 47 * i) % V;
    /* the unchanged greedy run's second token gets a bias, so the changes matter */
    float *logits = prompt_logits(seq, P);
    int32_t first = mt_argmax(logits + (size_t)(P - 1) * V, V);
    free(logits);
    const int32_t bias_ids[3] = {seq[4], first, 77};
    const float bias[3] = {2.5f, -0.75f, 1.25f};
    char body[2048];
    int at = snprintf(body, sizeof body, "{\"input_ids\": [");
    for (int i = 0; i < P; i++) at += snprintf(body + at, sizeof body - (size_t)at, "%s%d", i ? ", " : "", seq[i]);
    snprintf(body + at, sizeof body - (size_t)at,
             "], \"return_logprob\": true, \"top_logprobs_num\": %d, \"sampling_params\": {\"max_new_tokens\": %d, "
             "\"temperature\": 0, \"ignore_eos\": true, \"min_new_tokens\": %d, \"repetition_penalty\": %g, "
             "\"frequency_penalty\": %g, \"presence_penalty\": %g, \"logit_bias\": {\"%d\": %g, \"%d\": %g, \"%d\": %g}}}",
             TOP, N, MIN_NEW, REP, FREQ, PRES, bias_ids[0], bias[0], bias_ids[1], bias[1], bias_ids[2], bias[2]);
    cJSON *gen = call("/generate", body, 200);
    const cJSON *meta = cJSON_GetObjectItem(gen, "meta_info"), *out_ids = cJSON_GetObjectItem(gen, "output_ids");
    const cJSON *out = cJSON_GetObjectItem(meta, "output_token_logprobs"), *out_top = cJSON_GetObjectItem(meta, "output_top_logprobs");
    assert_int_equal(cJSON_GetArraySize(out_ids), N);
    float *row = malloc((size_t)V * sizeof *row);
    int changed_argmax = 0;   /* tokens the changes made other than the plain argmax */
    for (int i = 0; i < N; i++) {
        logits = prompt_logits(seq, P + i);
        const float *plain = logits + (size_t)(P + i - 1) * V;
        for (int v = 0; v < V; v++) {
            int count = 0;
            bool in_prompt = false;
            for (int k = 0; k < P; k++) in_prompt |= seq[k] == v;
            for (int k = P; k < P + i; k++) count += seq[k] == v;
            mt_logit_adjust a = {0, v, 1.0f, 0.0f};
            for (int b = 0; b < 3; b++)
                if (bias_ids[b] == v) a.add = bias[b];
            if (in_prompt || count > 0) a.scale = REP;
            if (count > 0) {
                float by_count = FREQ * (float)count;
                a.add = a.add - by_count;
                a.add = a.add - PRES;
            }
            if (v == 2 && i < MIN_NEW) a.add = -INFINITY;   /* eos */
            row[v] = mt_logit_adjusted(plain[v], &a);
        }
        int32_t tok = cJSON_GetArrayItem(out_ids, i)->valueint;
        assert_int_equal(tok, mt_argmax(row, V));
        changed_argmax += tok != mt_argmax(plain, V);
        check_triple(cJSON_GetArrayItem(out, i), mt_token_logprob(NULL, row, V, tok), tok, NULL);
        int32_t want_ids[TOP];
        float want_lps[TOP];
        mt_top_logprobs(NULL, row, V, TOP, want_ids, want_lps);
        const cJSON *alts = cJSON_GetArrayItem(out_top, i);
        for (int k = 0; k < TOP; k++) check_triple(cJSON_GetArrayItem(alts, k), want_lps[k], want_ids[k], NULL);
        seq[P + i] = tok;
        free(logits);
    }
    assert_true(changed_argmax > 0);
    int most = 0;   /* a token the output holds 3 times: rows with counts above 1 were checked */
    for (int i = 0; i < N; i++) {
        int count = 0;
        for (int k = 0; k < N; k++) count += seq[P + k] == seq[P + i];
        most = count > most ? count : most;
    }
    assert_true(most >= 3);
    free(row);
    cJSON_Delete(gen);
}

int main(void) {
    mt_kernels_init(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_scores),
        cmocka_unit_test(test_completions_echo),
        cmocka_unit_test(test_chat_top_logprobs),
        cmocka_unit_test(test_penalised_scores),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    mt_kernels_shutdown();
    return rc;
}
