/* A generation job's text and the sampling fields of a request, in-process (no server): engine
 * events fed to a job (server/job_results.h) with the byte-level test tokenizer. A matched stop token
 * leaves its text out of the job's text unless no_stop_trim, as SGLang's detokenizer trims it; stop
 * strings are matched in the text decoded with special tokens kept, as SGLang matches them, so
 * "<|endoftext|>" stops whatever skip_special_tokens says, and the returned text is cut where the
 * string is in it; text_at gives where each token's text starts. A token's own bytes
 * (mt_tokenizer_token_bytes). With min_new_tokens a stop string counts only where it ends in the
 * text of a later token (one straddling the boundary does). Requests (server/request_body.h): the
 * OpenAI endpoints refuse vLLM's sampling extras unless neutral; min-p, the penalties,
 * min_new_tokens (min_tokens) and logit_bias are read into the job's parameters, in SGLang's ranges
 * (logit_bias: OpenAI's), and copied whole; seeds take the integers a JSON number holds exactly,
 * negative ones too. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/config.h"
#include "server/job_results.h"
#include "server/request_body.h"
#include "tokenizer/tokenizer.h"

#define BL MT_SOURCE_DIR "/tests/tokenizer/bl"
#define MODEL MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"

/* Ids of the byte-level test tokenizer. */
enum { ENDOFTEXT = 0, BYTE_C3 = 130, BYTE_A9 = 105, E_ACUTE = 592, HELLO = 427, THE = 266, ER = 272 };

static mt_tokenizer *g_tok;

static int setup(void **state) {
    (void)state;
    mt_err err;
    if (mt_tokenizer_load(&g_tok, BL, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    mt_tokenizer_free(g_tok);
    return 0;
}

typedef struct job_opts {
    const char *stop;      /* a stop string, or NULL */
    const char *stop2;     /* a second one, or NULL */
    bool keep_special;     /* skip_special_tokens false */
    bool no_stop_trim;
    bool logprobs;         /* return_logprob: text_at is kept */
    int min_new;           /* min_new_tokens */
} job_opts;

static mt_gen_job *new_job(job_opts o) {
    mt_gen_params p = {.max_new_tokens = 16, .skip_special_tokens = !o.keep_special, .no_stop_trim = o.no_stop_trim,
                       .return_logprob = o.logprobs, .logprob_start = -1, .sampling.min_new_tokens = o.min_new};
    if (o.stop) {
        p.stop_strings = calloc(2, sizeof *p.stop_strings);
        p.stop_strings[p.n_stop_strings++] = strdup(o.stop);
        if (o.stop2) p.stop_strings[p.n_stop_strings++] = strdup(o.stop2);
    }
    int32_t *prompt = malloc(sizeof *prompt);
    prompt[0] = HELLO;
    mt_gen_job *j = mt_gen_job_new(1, prompt, 1, &p);
    assert_non_null(j);
    assert_int_equal(mt_gen_job_attach_text(j, g_tok), 0);
    return j;
}

/* Feeds the tokens (the last one a stop token when last_stops) and ends the job as the engine would
 * (stopped by that token, by a matched stop string, or at the length). Returns the index of the
 * token at which a stop string matched, or -1. */
static int run_job(mt_gen_job *j, const int32_t *ids, int n, bool last_stops) {
    int matched_at = -1, fed = 0;
    for (int i = 0; i < n && matched_at < 0; i++, fed++) {
        mt_engine_event ev = {.kind = MT_EVENT_TOKEN, .id = 1, .token = ids[i], .stops = last_stops && i == n - 1,
                              .logprob = -1.0f, .n_prompt = 1, .n_generated = i + 1};
        bool first;
        double since;
        if (mt_job_take_token(j, &ev, 0.0, &first, &since)) matched_at = i;
    }
    mt_engine_event end = {.kind = MT_EVENT_FINISHED, .id = 1, .output = ids, .n_generated = fed, .n_prompt = 1,
                           .reason = matched_at >= 0 ? MT_FINISH_CANCELLED : last_stops ? MT_FINISH_STOP : MT_FINISH_LENGTH};
    mt_config cfg = {0};
    double e2e;
    mt_job_take_end(j, &end, &cfg, &e2e);
    return matched_at;
}

static void assert_text(const mt_gen_job *j, const char *want) {
    if (j->text.len != strlen(want) || memcmp(j->text.data ? j->text.data : "", want, j->text.len))
        fail_msg("text '%.*s', want '%s'", (int)j->text.len, j->text.data ? j->text.data : "", want);
}

/* A stop token's text is left out of the text (SGLang's trim_matched_stop), kept with no_stop_trim;
 * output_ids keep the token. It was appended like any other token's. */
static void test_stop_token_text(void **state) {
    (void)state;
    const int32_t ids[] = {HELLO, BYTE_C3, BYTE_A9, THE};
    for (int keep = 0; keep < 2; keep++) {
        mt_gen_job *j = new_job((job_opts){.no_stop_trim = keep});
        assert_int_equal(run_job(j, ids, 4, true), -1);
        assert_text(j, keep ? " hello\xC3\xA9 the" : " hello\xC3\xA9");
        assert_int_equal(j->finish, MT_JOB_STOP_TOKEN);
        assert_int_equal(j->matched_token, THE);
        assert_int_equal(j->n_output, 4);
        assert_int_equal(j->output[3], THE);
        mt_gen_job_unref(j);
    }
    /* a special stop token shown by skip_special_tokens false: left out too */
    const int32_t eot[] = {HELLO, ENDOFTEXT};
    mt_gen_job *j = new_job((job_opts){.keep_special = true});
    run_job(j, eot, 2, true);
    assert_text(j, " hello");
    mt_gen_job_unref(j);
    j = new_job((job_opts){.keep_special = true, .no_stop_trim = true});
    run_job(j, eot, 2, true);
    assert_text(j, " hello<|endoftext|>");
    mt_gen_job_unref(j);
    /* a stop token kept by no_stop_trim is matched against no stop string, at the end neither (a
     * shorter stop string in the last bytes the end looked at again) */
    const int32_t er[] = {HELLO, ER};
    j = new_job((job_opts){.stop = "er", .stop2 = "xyzzy", .keep_special = true, .no_stop_trim = true});
    assert_int_equal(run_job(j, er, 2, true), -1);
    assert_text(j, " helloer");
    assert_int_equal(j->finish, MT_JOB_STOP_TOKEN);
    mt_gen_job_unref(j);
    /* a token that is no stop token keeps its text at the end */
    j = new_job((job_opts){0});
    run_job(j, ids, 4, false);
    assert_text(j, " hello\xC3\xA9 the");
    assert_int_equal(j->finish, MT_JOB_LENGTH);
    mt_gen_job_unref(j);
}

/* Stop strings are matched in the text with special tokens kept: "<|endoftext|>" stops with
 * skip_special_tokens true as with false (it did not match the skipped text), and the returned text
 * follows skip_special_tokens. A string the returned text holds only across a skipped special token
 * does not stop (SGLang never sees it); one in both is cut where it is in the returned text. */
static void test_stop_string_special_tokens(void **state) {
    (void)state;
    const int32_t ids[] = {HELLO, ENDOFTEXT, THE};
    for (int keep = 0; keep < 2; keep++) {
        mt_gen_job *j = new_job((job_opts){.stop = "<|endoftext|>", .keep_special = keep});
        assert_int_equal(run_job(j, ids, 3, false), 1);
        assert_text(j, " hello");
        assert_int_equal(j->finish, MT_JOB_STOP_STRING);
        assert_int_equal(j->matched_string, 0);
        assert_int_equal(j->text_stable, j->text.len);
        mt_gen_job_unref(j);
    }
    /* no_stop_trim: the skipped string is not in the text to keep */
    mt_gen_job *j = new_job((job_opts){.stop = "<|endoftext|>", .no_stop_trim = true});
    run_job(j, ids, 3, false);
    assert_text(j, " hello");
    assert_int_equal(j->finish, MT_JOB_STOP_STRING);
    mt_gen_job_unref(j);

    j = new_job((job_opts){.stop = "o t"});   /* " hello the" skipped, " hello<|endoftext|> the" kept */
    assert_int_equal(run_job(j, ids, 3, false), -1);
    assert_text(j, " hello the");
    assert_int_equal(j->finish, MT_JOB_LENGTH);
    mt_gen_job_unref(j);

    j = new_job((job_opts){.stop = "e"});
    assert_int_equal(run_job(j, ids, 3, false), 0);
    assert_text(j, " h");
    mt_gen_job_unref(j);
    j = new_job((job_opts){.stop = " th", .no_stop_trim = true});
    assert_int_equal(run_job(j, ids, 3, false), 2);
    assert_text(j, " hello th");
    mt_gen_job_unref(j);
}

/* min_new_tokens: a stop string counts only where it ends in the text of a token after the first
 * min_new_tokens (SGLang checks no stop condition before), one straddling that boundary included;
 * one wholly inside the first tokens' text never does, nor is the returned text cut there. Alike
 * whether stop strings are matched in the returned text (special tokens kept) or in a second
 * decoding (skipped). It stopped at the first occurrence whatever min_new_tokens said. */
static void test_stop_string_min_new_tokens(void **state) {
    (void)state;
    const int32_t ids[] = {HELLO, THE, HELLO, THE};   /* " hello the hello the" */
    static const char LONG_STOP[] = "xyzzyxyzzyxyzzyxyzzyxyzzy";
    const struct {
        const char *stop, *stop2;
        int min_new, matched_at;  /* the token whose text completes the match; -1: none */
        const char *text;
    } cases[] = {
        {" hello", NULL, 0, 0, ""},
        {" hello", NULL, 1, 2, " hello the"},             /* the first one is the first token's own */
        {" hello", NULL, 3, -1, " hello the hello the"},  /* both inside the first three */
        {"o t", NULL, 1, 1, " hell"},                     /* straddles tokens 0 and 1: it ends in 1 */
        {"o t", NULL, 2, 3, " hello the hell"},           /* wholly inside the first two */
        {"the", NULL, 2, 3, " hello the hello "},
        {"the", NULL, 4, -1, " hello the hello the"},
        /* a stop string longer than the whole text holds all of it back: an unshown occurrence inside
         * the first tokens is not where the text is cut */
        {" hello", LONG_STOP, 1, 2, " hello the"},
        {"the", LONG_STOP, 2, 3, " hello the hello "},
        {"e h", LONG_STOP, 2, 2, " hello th"},            /* "e h" straddles tokens 1 and 2 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int keep = 0; keep < 2; keep++) {
            mt_gen_job *j = new_job((job_opts){.stop = cases[i].stop, .stop2 = cases[i].stop2, .keep_special = keep,
                                               .min_new = cases[i].min_new});
            int at = run_job(j, ids, 4, false);
            if (at != cases[i].matched_at)
                fail_msg("case %zu (keep %d): matched at token %d, want %d", i, keep, at, cases[i].matched_at);
            assert_text(j, cases[i].text);
            assert_int_equal(j->finish, at >= 0 ? MT_JOB_STOP_STRING : MT_JOB_LENGTH);
            assert_int_equal(j->text_stable, j->text.len);
            mt_gen_job_unref(j);
        }
    }
}

/* text_at: each output token's start in the text; a character split across tokens starts where its
 * first piece was fed, a stop token left out starts at the text's end. */
static void test_text_at(void **state) {
    (void)state;
    const int32_t ids[] = {HELLO, BYTE_C3, BYTE_A9, ENDOFTEXT, THE};
    mt_gen_job *j = new_job((job_opts){.logprobs = true});
    run_job(j, ids, 5, true);
    assert_text(j, " hello\xC3\xA9");
    const size_t want[] = {0, 6, 6, 8, 8};
    for (int i = 0; i < 5; i++) assert_int_equal(j->text_at[i], want[i]);
    mt_gen_job_unref(j);
}

static void assert_token_bytes(const mt_tokenizer *tok, int32_t id, const char *want, size_t want_len) {
    char *bytes;
    size_t len;
    mt_err err;
    if (mt_tokenizer_token_bytes(tok, id, &bytes, &len, &err)) fail_msg("id %d: %s", id, err.msg);
    if (len != want_len || memcmp(bytes, want, len)) fail_msg("id %d: %zu bytes '%.*s'", id, len, (int)len, bytes);
    free(bytes);
}

/* A token's own bytes: a byte-level piece of a character is that byte (its decoded text is U+FFFD),
 * so the two pieces of "é" join into it; special tokens give their text; SentencePiece-style
 * tokens keep their leading space (decoded alone, the text's first, it is dropped) and a
 * byte-fallback piece is its byte. */
static void test_token_bytes(void **state) {
    (void)state;
    assert_token_bytes(g_tok, BYTE_C3, "\xC3", 1);
    assert_token_bytes(g_tok, BYTE_A9, "\xA9", 1);
    assert_token_bytes(g_tok, E_ACUTE, "\xC3\xA9", 2);
    assert_token_bytes(g_tok, HELLO, " hello", 6);
    assert_token_bytes(g_tok, ENDOFTEXT, "<|endoftext|>", 13);
    char *bytes = NULL;
    size_t len;
    mt_err err;
    assert_int_equal(mt_tokenizer_token_bytes(g_tok, 5000, &bytes, &len, &err), -1);
    assert_int_equal(mt_tokenizer_token_bytes(g_tok, -1, &bytes, &len, &err), -1);

    mt_tokenizer *sp, *ms;
    if (mt_tokenizer_load(&sp, MT_SOURCE_DIR "/tests/tokenizer/sp", &err)) fail_msg("%s", err.msg);
    if (mt_tokenizer_load(&ms, MT_SOURCE_DIR "/tests/tokenizer/ms", &err)) fail_msg("%s", err.msg);
    assert_token_bytes(sp, mt_tokenizer_token_to_id(sp, "<0xC3>"), "\xC3", 1);
    assert_token_bytes(sp, mt_tokenizer_token_to_id(sp, "\xE2\x96\x81w"), " w", 2);
    assert_token_bytes(ms, mt_tokenizer_token_to_id(ms, "\xE2\x96\x81w"), " w", 2);
    mt_tokenizer_free(sp);
    mt_tokenizer_free(ms);
}

/* Parses body as kind; returns the status (0: accepted) and the error message in msg. */
static int parse(mt_body_kind kind, const char *body, mt_gen_request *r, char *msg, size_t msg_len) {
    static mt_config cfg;
    static bool loaded;
    mt_err err;
    if (!loaded && mt_config_load(&cfg, MODEL, &err)) fail_msg("%s", err.msg);
    loaded = true;
    mt_request_ctx ctx = {.cfg = &cfg, .tokenizer = g_tok};
    mt_api_error e = {0};
    int rc = mt_request_parse(&ctx, kind, body, strlen(body), r, &e);
    snprintf(msg, msg_len, "%s", rc ? e.message : "");
    return rc ? e.status : 0;
}

/* The OpenAI endpoints: vLLM's sampling extras are a 400 naming the field unless neutral. They were
 * accepted and ignored. */
static void test_openai_unsupported_fields(void **state) {
    (void)state;
    static const char *const REFUSED[] = {
        "\"typical_p\": 0.5", "\"use_beam_search\": true", "\"length_penalty\": 2",
        "\"include_stop_str_in_output\": true", "\"bad_words\": [\"the\"]", "\"allowed_token_ids\": [5]",
        "\"prompt_logprobs\": 0", "\"truncate_prompt_tokens\": 2", "\"guided_regex\": \"a+\"",
        "\"guided_choice\": [\"x\"]", "\"guided_json\": {\"type\": \"object\"}", "\"guided_grammar\": \"root ::= x\"",
        "\"structured_outputs\": {\"regex\": \"a\"}", "\"logits_processors\": [\"x\"]",
    };
    static const char *const NEUTRAL[] = {
        "\"typical_p\": 1", "\"use_beam_search\": false", "\"length_penalty\": 1",
        "\"include_stop_str_in_output\": false", "\"bad_words\": []", "\"allowed_token_ids\": null",
        "\"prompt_logprobs\": null", "\"truncate_prompt_tokens\": null", "\"guided_regex\": null",
    };
    char body[512], msg[1024];
    for (int chat = 0; chat < 2; chat++) {
        const char *fmt = chat ? "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], %s}" : "{\"prompt\": \"hi\", %s}";
        mt_body_kind kind = chat ? MT_BODY_CHAT : MT_BODY_COMPLETIONS;
        for (size_t i = 0; i < sizeof REFUSED / sizeof *REFUSED; i++) {
            mt_gen_request r;
            snprintf(body, sizeof body, fmt, REFUSED[i]);
            assert_int_equal(parse(kind, body, &r, msg, sizeof msg), 400);
            char name[64];
            snprintf(name, sizeof name, "'%.*s'", (int)(strchr(REFUSED[i] + 1, '"') - REFUSED[i] - 1), REFUSED[i] + 1);
            if (!strstr(msg, name)) fail_msg("%s: '%s' does not name %s", body, msg, name);
        }
        for (size_t i = 0; i < sizeof NEUTRAL / sizeof *NEUTRAL && !chat; i++) {   /* chat: no template here */
            mt_gen_request r;
            snprintf(body, sizeof body, fmt, NEUTRAL[i]);
            if (parse(kind, body, &r, msg, sizeof msg)) fail_msg("%s: %s", body, msg);
            mt_gen_request_free(&r);
        }
    }
}

/* One output's parameters as the sampling controls of the bodies below set them. */
static void assert_controls(const mt_gen_params *p) {
    assert_true(p->sampling.min_p == 0.25f);
    assert_true(p->sampling.frequency_penalty == -1.5f);
    assert_true(p->sampling.presence_penalty == 2.0f);
    assert_true(p->sampling.repetition_penalty == 1.25f);
    assert_int_equal(p->sampling.min_new_tokens, 3);
    static const int32_t ids[3] = {7, 300, 0};
    static const float values[3] = {-100.0f, 2.5f, 100.0f};
    assert_int_equal(p->n_bias, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(p->bias_ids[i], ids[i]);
        assert_true(p->bias_values[i] == values[i]);
    }
}

/* min-p, the penalties, min_new_tokens and logit_bias are read into the parameters, by /generate and
 * by the OpenAI endpoints (min_tokens there, or min_new_tokens when both agree), each output of n
 * with a copy of its own; null, absent and {} are their neutral values. They were refused unless
 * neutral. */
static void test_sampling_controls(void **state) {
    (void)state;
    static const char CONTROLS[] = "\"min_p\": 0.25, \"frequency_penalty\": -1.5, \"presence_penalty\": 2, "
                                   "\"repetition_penalty\": 1.25, \"logit_bias\": {\"7\": -100, \"300\": 2.5, \"0\": 100}, "
                                   "\"n\": 2";
    char body[1024], msg[1024];
    for (int openai = 0; openai < 3; openai++) {
        if (openai == 0)
            snprintf(body, sizeof body, "{\"text\": \"hi\", \"sampling_params\": {\"max_new_tokens\": 8, "
                     "\"min_new_tokens\": 3, %s}}", CONTROLS);
        else
            snprintf(body, sizeof body, "{\"prompt\": \"hi\", \"max_tokens\": 8, %s, %s}",
                     openai == 1 ? "\"min_tokens\": 3" : "\"min_new_tokens\": 3, \"min_tokens\": 3", CONTROLS);
        mt_gen_request r;
        if (parse(openai ? MT_BODY_COMPLETIONS : MT_BODY_GENERATE, body, &r, msg, sizeof msg)) fail_msg("%s: %s", body, msg);
        assert_controls(&r.prompts[0].params);
        for (int k = 0; k < 2; k++) {
            mt_gen_params out;
            assert_int_equal(mt_gen_request_output_params(&r, k, &out), 0);
            assert_controls(&out);
            assert_true(out.bias_ids != r.prompts[0].params.bias_ids && out.bias_values != r.prompts[0].params.bias_values);
            mt_gen_params_free(&out);
            assert_null(out.bias_ids);
            assert_int_equal(out.n_bias, 0);
        }
        mt_gen_request_free(&r);
    }
    static const char *const NEUTRAL[] = {
        "\"min_p\": null, \"frequency_penalty\": null, \"presence_penalty\": null, \"repetition_penalty\": null, "
        "\"min_new_tokens\": null, \"logit_bias\": null",
        "\"min_p\": 0, \"frequency_penalty\": 0, \"presence_penalty\": 0, \"repetition_penalty\": 1, "
        "\"min_new_tokens\": 0, \"logit_bias\": {}",
        "\"max_new_tokens\": 0",
    };
    for (size_t i = 0; i < sizeof NEUTRAL / sizeof *NEUTRAL; i++) {
        mt_gen_request r;
        snprintf(body, sizeof body, "{\"text\": \"hi\", \"sampling_params\": {%s}}", NEUTRAL[i]);
        if (parse(MT_BODY_GENERATE, body, &r, msg, sizeof msg)) fail_msg("%s: %s", body, msg);
        const mt_gen_params *p = &r.prompts[0].params;
        assert_true(p->sampling.min_p == 0 && p->sampling.frequency_penalty == 0 && p->sampling.presence_penalty == 0);
        assert_true(p->sampling.repetition_penalty == 1.0f);
        assert_int_equal(p->sampling.min_new_tokens, 0);
        assert_int_equal(p->n_bias, 0);
        assert_null(p->bias_ids);
        mt_gen_request_free(&r);
    }
}

/* Out of range: a 400 naming the field (SGLang's ranges; logit_bias: OpenAI's object of token ids,
 * in the vocabulary, to numbers in [-100, 100]). min_new_tokens past max_new_tokens names both, the
 * default limit too (once the prompt is known), in the request's spelling. */
static void test_sampling_controls_refused(void **state) {
    (void)state;
    static const struct { bool openai; const char *fields, *needle; } cases[] = {
        {false, "\"min_p\": 1.5", "'min_p' must be a number in [0, 1]"},
        {false, "\"min_p\": -0.1", "'min_p'"},
        {false, "\"min_p\": \"0.5\"", "'min_p'"},
        {false, "\"frequency_penalty\": 2.5", "'frequency_penalty' must be a number in [-2, 2]"},
        {false, "\"frequency_penalty\": -2.01", "'frequency_penalty'"},
        {false, "\"presence_penalty\": -3", "'presence_penalty' must be a number in [-2, 2]"},
        {false, "\"repetition_penalty\": 0", "'repetition_penalty' must be a number in (0, 2]"},
        {false, "\"repetition_penalty\": 2.5", "'repetition_penalty'"},
        {false, "\"repetition_penalty\": -1", "'repetition_penalty'"},
        {false, "\"min_new_tokens\": -1", "'min_new_tokens'"},
        {false, "\"min_new_tokens\": 1.5", "'min_new_tokens'"},
        {false, "\"min_new_tokens\": \"3\"", "'min_new_tokens'"},
        {false, "\"min_new_tokens\": 9, \"max_new_tokens\": 8", "'min_new_tokens' 9 is more than 'max_new_tokens' 8"},
        {false, "\"min_new_tokens\": 129", "'min_new_tokens' 129 is more than max_new_tokens 128, its default"},
        {false, "\"logit_bias\": {\"x\": 1}", "'logit_bias' key 'x' is not a token id in [0, 512)"},
        {false, "\"logit_bias\": {\"512\": 1}", "'logit_bias' key '512' is not a token id"},
        {false, "\"logit_bias\": {\"-1\": 1}", "'logit_bias' key '-1'"},
        {false, "\"logit_bias\": {\"1.0\": 1}", "'logit_bias' key '1.0'"},
        {false, "\"logit_bias\": {\" 5\": 1}", "'logit_bias' key ' 5'"},
        {false, "\"logit_bias\": {\"\": 1}", "'logit_bias' key ''"},
        {false, "\"logit_bias\": {\"99999999999999999999\": 1}", "'logit_bias' key '99999999999999999999'"},
        {false, "\"logit_bias\": {\"5\": 101}", "'logit_bias' value of token '5' must be a number in [-100, 100]"},
        {false, "\"logit_bias\": {\"5\": -100.5}", "[-100, 100]"},
        {false, "\"logit_bias\": {\"5\": 1e400}", "[-100, 100]"},
        {false, "\"logit_bias\": {\"5\": \"1\"}", "'logit_bias' value of token '5'"},
        {false, "\"logit_bias\": {\"5\": null}", "'logit_bias' value of token '5'"},
        {false, "\"logit_bias\": {\"5\": 1, \"005\": 2}", "'logit_bias' names token 5 twice"},
        {false, "\"logit_bias\": [[5, 1]]", "'logit_bias' must be an object"},
        {false, "\"logit_bias\": []", "'logit_bias' must be an object"},
        {false, "\"logit_bias\": \"5:1\"", "'logit_bias' must be an object"},
        {true, "\"min_tokens\": 9, \"max_tokens\": 8", "'min_tokens' 9 is more than 'max_tokens' 8"},
        {true, "\"min_tokens\": 9, \"max_completion_tokens\": 8", "'min_tokens' 9 is more than 'max_completion_tokens' 8"},
        {true, "\"min_new_tokens\": 9, \"max_tokens\": 8", "'min_new_tokens' 9 is more than 'max_tokens' 8"},
        {true, "\"min_tokens\": 17", "'min_tokens' 17 is more than max_tokens 16, its default"},
        {true, "\"min_tokens\": -1", "'min_tokens'"},
        {true, "\"min_tokens\": 2, \"min_new_tokens\": 3", "'min_tokens' 2 and 'min_new_tokens' 3 disagree"},
        {true, "\"frequency_penalty\": 2.5", "'frequency_penalty'"},
        {true, "\"presence_penalty\": -2.5", "'presence_penalty'"},
        {true, "\"repetition_penalty\": 0", "'repetition_penalty'"},
        {true, "\"min_p\": 2", "'min_p'"},
        {true, "\"logit_bias\": {\"5\": 101}", "'logit_bias'"},
        {true, "\"logit_bias\": {\"abc\": 1}", "'logit_bias' key 'abc'"},
    };
    char body[512], msg[1024];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        mt_gen_request r;
        if (cases[i].openai) snprintf(body, sizeof body, "{\"prompt\": \"hi\", %s}", cases[i].fields);
        else snprintf(body, sizeof body, "{\"text\": \"hi\", \"sampling_params\": {%s}}", cases[i].fields);
        int status = parse(cases[i].openai ? MT_BODY_COMPLETIONS : MT_BODY_GENERATE, body, &r, msg, sizeof msg);
        if (status != 400) fail_msg("%s: status %d", body, status);
        if (!strstr(msg, cases[i].needle)) fail_msg("%s: '%s' lacks '%s'", body, msg, cases[i].needle);
    }
    /* the default limit cut by the context: the prompt's tokens and the context length named */
    char *ids = malloc(8 * 600), *big = malloc(8 * 600 + 200);
    size_t at = 0;
    for (int i = 0; i < 500; i++) at += (size_t)sprintf(ids + at, "%s%d", i ? ", " : "", 5 + i % 400);
    sprintf(big, "{\"input_ids\": [%s], \"sampling_params\": {\"min_new_tokens\": 20}}", ids);
    mt_gen_request r;
    assert_int_equal(parse(MT_BODY_GENERATE, big, &r, msg, sizeof msg), 400);
    if (!strstr(msg, "'min_new_tokens' 20 is more than the 12 new tokens that the model's context length (512)"))
        fail_msg("%s", msg);
    sprintf(big, "{\"input_ids\": [%s], \"sampling_params\": {\"min_new_tokens\": 12}}", ids);
    assert_int_equal(parse(MT_BODY_GENERATE, big, &r, msg, sizeof msg), 0);
    assert_int_equal(r.prompts[0].params.max_new_tokens, 12);
    mt_gen_request_free(&r);
    free(ids);
    free(big);
}

/* Seeds: every integer a JSON number holds exactly, negative ones too (OpenAI's and vLLM's seed is
 * any int64; a negative one is its two's complement); beyond 2^53 - 1 a 400 naming the range. */
static void test_seed_range(void **state) {
    (void)state;
    static const struct { const char *seed; int status; uint64_t want; } cases[] = {
        {"0", 0, 0},
        {"9007199254740991", 0, 9007199254740991ull},
        {"-1", 0, UINT64_MAX},
        {"-9007199254740991", 0, (uint64_t)-9007199254740991ll},
        {"9007199254740992", 400, 0},
        {"-9007199254740992", 400, 0},
        {"9223372036854775807", 400, 0},
        {"1.5", 400, 0},
    };
    char body[256], msg[1024];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int openai = 0; openai < 2; openai++) {
            mt_gen_request r;
            if (openai) snprintf(body, sizeof body, "{\"prompt\": \"hi\", \"seed\": %s}", cases[i].seed);
            else snprintf(body, sizeof body, "{\"text\": \"hi\", \"sampling_params\": {\"seed\": %s}}", cases[i].seed);
            int status = parse(openai ? MT_BODY_COMPLETIONS : MT_BODY_GENERATE, body, &r, msg, sizeof msg);
            if (status != cases[i].status) fail_msg("seed %s: status %d (%s)", cases[i].seed, status, msg);
            if (status) {
                assert_non_null(strstr(msg, "[-9007199254740991, 9007199254740991]"));
                continue;
            }
            assert_true(r.prompts[0].params.sampling.seed == cases[i].want);
            mt_gen_request_free(&r);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_token_text),
        cmocka_unit_test(test_stop_string_special_tokens),
        cmocka_unit_test(test_stop_string_min_new_tokens),
        cmocka_unit_test(test_text_at),
        cmocka_unit_test(test_token_bytes),
        cmocka_unit_test(test_openai_unsupported_fields),
        cmocka_unit_test(test_sampling_controls),
        cmocka_unit_test(test_sampling_controls_refused),
        cmocka_unit_test(test_seed_range),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
