/* The OpenAI-compatible endpoints (SPEC §5): GET /v1/models, POST /v1/completions and
 * POST /v1/chat/completions, with server-sent-event streaming, usage, and the routing of each
 * choice in "routed_experts": {"data", "shape", "dtype"} when return_routed_experts is asked, the
 * chosen tokens' log-probabilities and their alternatives when asked (chat: "logprobs": true and
 * "top_logprobs": N; completions: "logprobs": N), and the completions' "echo" of the prompt. Under
 * serve --reasoning-parser and --tool-call-parser, a chat answer's text is split into
 * "reasoning_content", "content" and "tool_calls" (server/chat_output.h), streamed as deltas of
 * each. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/chat_output.h"
#include "server/job_run.h"
#include "server/request_body.h"
#include "server/server_internal.h"
#include "util/json_util.h"

/* The completions' text_offset: where each listed token starts in the choice's text (the echoed
 * prompt, then the output's text), in characters (Unicode code points, as vLLM counts them in
 * Python strings). A token adds what the text gained when it was decoded: a skipped special token
 * nothing, a character split across tokens is counted at the token that completes it. */
typedef struct text_offsets {
    size_t echo_chars;    /* characters of the echoed prompt (0 without echo) */
    size_t bytes, chars;  /* the output's text counted so far: bytes, and the characters they hold */
} text_offsets;

/* What one choice has streamed so far. */
typedef struct choice_stream {
    size_t text_sent;     /* bytes of text already streamed */
    bool role_sent;
    int lp_sent;          /* listed tokens (echoed prompt, then output) whose log-probabilities were streamed */
    bool echo_sent;       /* echo: the prompt's text and tokens went out */
    text_offsets offsets; /* completions: where its listed tokens start */
    mt_chat_split *split; /* streamed chat with a parser (openai_reply.parse): its text's splitter */
} choice_stream;

typedef struct openai_reply {
    const mt_config *cfg;
    bool chat;
    bool include_usage;
    bool echo;            /* completions: each choice starts with its prompt */
    int n;                /* samples of each prompt: choice k's prompt is k / n */
    char id[MT_JOB_NAME_LEN];   /* the response's id */
    char model[256];
    long created;
    const mt_tokenizer *tokenizer;
    bool reasoning_field; /* chat under --reasoning-parser: every message has "reasoning_content" */
    bool parse;           /* chat with a parser applied to this request: the text is split */
    mt_chat_split_opts split; /* how (split.tool_names: tool_names) */
    char **tool_names;    /* the request's tools' names (owned) */
    int n_tool_names;
    int n_choices;
    choice_stream choices[]; /* [n_choices] */
} openai_reply;

static void openai_reply_free(void *ctx) {
    openai_reply *o = ctx;
    if (!o) return;
    for (int k = 0; k < o->n_choices; k++) mt_chat_split_free(o->choices[k].split);
    for (int i = 0; i < o->n_tool_names; i++) free(o->tool_names[i]);
    free(o->tool_names);
    free(o);
}

/* The chat parsers applied to request r (serve --reasoning-parser, --tool-call-parser): the
 * reasoning unless "separate_reasoning" is false, the tool calls when the template got tools (their
 * names taken over from r); with stream, a splitter for every choice. -1 when out of memory. */
static int chat_parsers(openai_reply *o, const mt_server *s, mt_gen_request *r) {
    o->reasoning_field = s->b.reasoning_parser != MT_REASONING_OFF;
    if (o->reasoning_field && r->separate_reasoning) {
        o->split.reasoning = s->b.reasoning_parser;
        o->split.hold_reasoning = !r->stream_reasoning;
    }
    if (s->b.tool_parser != MT_TOOL_PARSER_OFF && r->with_tools) {
        o->tool_names = r->tool_names;
        o->n_tool_names = r->n_tool_names;
        r->tool_names = NULL;
        r->n_tool_names = 0;
        o->split.tool_calls = true;
        o->split.tool_names = (const char *const *)o->tool_names;
        o->split.n_tool_names = o->n_tool_names;
    }
    o->parse = o->split.reasoning != MT_REASONING_OFF || o->split.tool_calls;
    for (int k = 0; o->parse && r->stream && k < o->n_choices; k++)
        if (!(o->choices[k].split = mt_chat_split_new(&o->split))) return -1;
    return 0;
}

static uint64_t mix64(uint64_t z) { /* splitmix64's finaliser */
    z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ z >> 27) * 0x94D049BB133111EBull;
    return z ^ z >> 31;
}

/* "call_" and 24 hex digits, unique to the response (its id), the choice and the call. */
static void tool_call_id(const openai_reply *o, int k, int index, char *out, size_t len) {
    uint64_t h = 0xCBF29CE484222325ull; /* FNV-1a of the id */
    for (const char *p = o->id; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001B3ull;
    uint64_t a = mix64(h ^ ((uint64_t)(uint32_t)k << 32 | (uint32_t)index)), b = mix64(a + 0x9E3779B97F4A7C15ull);
    snprintf(out, len, "call_%016llx%08llx", (unsigned long long)a, (unsigned long long)(b >> 32));
}

/* A parsed tool call as OpenAI's message.tool_calls entry; streamed ones carry their "index". */
static cJSON *tool_call_json(const openai_reply *o, int k, const mt_chat_delta *call, bool with_index) {
    char id[48];
    tool_call_id(o, k, call->index, id, sizeof id);
    cJSON *c = cJSON_CreateObject();
    if (with_index) cJSON_AddNumberToObject(c, "index", call->index);
    cJSON_AddStringToObject(c, "id", id);
    cJSON_AddStringToObject(c, "type", "function");
    cJSON *fn = cJSON_AddObjectToObject(c, "function");
    cJSON_AddStringToObject(fn, "name", call->name);
    cJSON_AddStringToObject(fn, "arguments", call->arguments);
    return c;
}

static cJSON *envelope(const openai_reply *o, bool chunk) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", o->id);
    cJSON_AddStringToObject(root, "object", o->chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                    : "text_completion");
    cJSON_AddNumberToObject(root, "created", (double)o->created);
    cJSON_AddStringToObject(root, "model", o->model);
    return root;
}

/* Usage of the whole response: each prompt counted once (with the cached tokens of the sample
 * that found the fewest), every choice's completion. */
static cJSON *usage_json(const openai_reply *o, mt_gen_job *const *jobs, int n) {
    long prompt = 0, completion = 0, cached = 0;
    for (int k = 0; k < n; k++) {
        completion += jobs[k]->n_output;
        if (k % o->n) continue;
        int fewest = jobs[k]->n_cached;
        for (int j = k + 1; j < k + o->n && j < n; j++)
            if (jobs[j]->n_cached < fewest) fewest = jobs[j]->n_cached;
        prompt += jobs[k]->n_prompt;
        cached += fewest;
    }
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)completion);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt + completion));
    if (cached > 0) {
        cJSON *details = cJSON_AddObjectToObject(u, "prompt_tokens_details");
        cJSON_AddNumberToObject(details, "cached_tokens", (double)cached);
    }
    return u;
}

static void add_text(cJSON *obj, const char *key, const char *s, size_t n) {
    cJSON_AddItemToObject(obj, key, mt_json_text(s ? s : "", s ? n : 0));
}

/* A parsed part of the message: its text, or null when it is empty. */
static void add_part(cJSON *obj, const char *key, const mt_strbuf *b) {
    if (b->len) add_text(obj, key, b->data, b->len);
    else cJSON_AddNullToObject(obj, key);
}

/* Tokens a choice lists: with echo its prompt's, then its outputs. */
static int listed_count(const openai_reply *o, const mt_gen_job *j) { return (o->echo ? j->n_prompt : 0) + j->n_output; }

/* Listed token q: its id, log-probability (NaN: none, as for the first prompt token) and
 * alternatives (NULL: none known). */
static int32_t listed_token(const openai_reply *o, const mt_gen_job *j, int q, float *lp, const int32_t **top_ids,
                            const float **top_lps) {
    int n_echo = o->echo ? j->n_prompt : 0;
    *top_ids = NULL;
    *top_lps = NULL;
    if (q >= n_echo) {
        int i = q - n_echo;
        *lp = j->logprobs[i];
        if (j->n_top) {
            *top_ids = j->top_ids + (size_t)i * j->n_top;
            *top_lps = j->top_logprobs + (size_t)i * j->n_top;
        }
        return j->output[i];
    }
    *lp = j->prompt_scored ? j->prompt_logprobs[q] : NAN;
    if (j->n_top && j->prompt_scored && q > 0) {
        *top_ids = j->prompt_top_ids + (size_t)q * j->n_top;
        *top_lps = j->prompt_top_logprobs + (size_t)q * j->n_top;
    }
    return j->prompt[q];
}

/* Chat's {"token", "logprob", "bytes"} of a token: its text as mt_token_piece shows it, and its own
 * bytes (mt_tokenizer_token_bytes: a piece of a character gives that piece, not U+FFFD's bytes, so
 * the bytes of consecutive tokens join into their text, as OpenAI defines "bytes"). */
static cJSON *chat_token(const openai_reply *o, int32_t id, float lp) {
    size_t len, n_raw = 0;
    char *piece = mt_token_piece(o->tokenizer, id, &len), *raw = NULL;
    mt_err err;
    if (mt_tokenizer_token_bytes(o->tokenizer, id, &raw, &n_raw, &err)) n_raw = 0;
    cJSON *t = cJSON_CreateObject(), *bytes = cJSON_CreateArray();
    cJSON_AddStringToObject(t, "token", piece ? piece : "");
    cJSON_AddItemToObject(t, "logprob", mt_logprob_json(lp));
    for (size_t b = 0; b < n_raw; b++) cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)raw[b]));
    cJSON_AddItemToObject(t, "bytes", bytes);
    free(piece);
    free(raw);
    return t;
}

static size_t count_chars(const char *s, size_t n) {
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) chars += ((unsigned char)s[i] & 0xC0) != 0x80;
    return chars;
}

/* The echoed prompt's text_offset of each of its tokens into off[n_prompt]: the characters its
 * tokens before it decode to (one at a time, as the output's text is made), at most the echo's;
 * returns the echo's characters (its text as echo_text decodes it). */
static size_t prompt_offsets(const openai_reply *o, const mt_gen_job *j, size_t *off) {
    bool skip = j->params.skip_special_tokens;
    char *text = NULL;
    size_t len = 0, echo_chars = 0, chars = 0;
    mt_err err;
    if (mt_tokenizer_decode(o->tokenizer, j->prompt, (size_t)j->n_prompt, skip, &text, &len, &err) == 0)
        echo_chars = count_chars(text, len);
    free(text);
    mt_detok_stream *ds = mt_detok_stream_new(o->tokenizer, skip);
    for (int q = 0; q < j->n_prompt; q++) {
        off[q] = chars < echo_chars ? chars : echo_chars;
        char *piece = NULL;
        size_t n = 0;
        if (ds && mt_detok_stream_feed(ds, &j->prompt[q], 1, &piece, &n, &err) == 0) chars += count_chars(piece, n);
        free(piece);
    }
    mt_detok_stream_free(ds);
    return echo_chars;
}

/* Output token i's text_offset: the echo, then the characters of the output's text before the
 * token's own (text_at), at most the whole text (a stop string may have cut it). */
static size_t output_offset(const mt_gen_job *j, int i, text_offsets *at) {
    size_t pos = j->text_at[i] < j->text.len ? j->text_at[i] : j->text.len;
    if (pos < at->bytes) at->bytes = at->chars = 0;   /* cut before what was counted: count again */
    if (pos > at->bytes) at->chars += count_chars(j->text.data + at->bytes, pos - at->bytes);
    at->bytes = pos;
    return at->echo_chars + at->chars;
}

/* The choice's "logprobs" for listed tokens [from, to) (null without log-probabilities): chat's
 * {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}, the completions'
 * {"tokens", "token_logprobs", "top_logprobs", "text_offset"}, whose top_logprobs is null when no
 * alternatives were asked, else one {text: logprob} object a token (null for the first prompt token
 * of an echo). A token's text is mt_token_piece's; offsets are text_offsets (the echoed prompt's
 * tokens are all listed in the first call). */
static cJSON *logprobs_json(const openai_reply *o, const mt_gen_job *j, int from, int to, text_offsets *offsets) {
    if (!j->logprobs) return cJSON_CreateNull();
    int n_echo = o->echo ? j->n_prompt : 0;
    size_t *echo_off = NULL;
    if (!o->chat && from < n_echo && (echo_off = malloc((size_t)n_echo * sizeof *echo_off)))
        offsets->echo_chars = prompt_offsets(o, j, echo_off);
    cJSON *root = cJSON_CreateObject(), *content = NULL, *tokens = NULL, *values = NULL, *tops = NULL;
    cJSON *text_offset = NULL;
    if (o->chat) {
        content = cJSON_AddArrayToObject(root, "content");
        cJSON_AddNullToObject(root, "refusal"); /* OpenAI's type has it: the refusal's tokens, never any here */
    } else {
        tokens = cJSON_AddArrayToObject(root, "tokens");
        values = cJSON_AddArrayToObject(root, "token_logprobs");
        if (j->n_top) tops = cJSON_AddArrayToObject(root, "top_logprobs");
        else cJSON_AddNullToObject(root, "top_logprobs");
        text_offset = cJSON_AddArrayToObject(root, "text_offset");
    }
    for (int q = from; q < to; q++) {
        float lp;
        const int32_t *top_ids;
        const float *top_lps;
        int32_t id = listed_token(o, j, q, &lp, &top_ids, &top_lps);
        size_t len;
        char *piece = o->chat ? NULL : mt_token_piece(o->tokenizer, id, &len);
        if (o->chat) {
            cJSON *t = chat_token(o, id, lp), *alts = cJSON_AddArrayToObject(t, "top_logprobs");
            for (int k = 0; top_ids && k < j->n_top && top_ids[k] >= 0; k++)
                cJSON_AddItemToArray(alts, chat_token(o, top_ids[k], top_lps[k]));
            cJSON_AddItemToArray(content, t);
        } else {
            cJSON_AddItemToArray(tokens, cJSON_CreateString(piece ? piece : ""));
            cJSON_AddItemToArray(values, mt_logprob_json(lp));
            size_t at = q >= n_echo ? output_offset(j, q - n_echo, offsets) : echo_off ? echo_off[q] : 0;
            cJSON_AddItemToArray(text_offset, cJSON_CreateNumber((double)at));
            if (tops && !top_ids) cJSON_AddItemToArray(tops, cJSON_CreateNull());
            if (tops && top_ids) {
                cJSON *alts = cJSON_CreateObject();
                for (int k = 0; k < j->n_top && top_ids[k] >= 0; k++) {
                    size_t alt_len;
                    char *alt = mt_token_piece(o->tokenizer, top_ids[k], &alt_len);
                    /* two ids of one text: the likelier one's value stays, as a dict would keep one */
                    if (alt && !cJSON_GetObjectItemCaseSensitive(alts, alt))
                        cJSON_AddItemToObject(alts, alt, mt_logprob_json(top_lps[k]));
                    free(alt);
                }
                cJSON_AddItemToArray(tops, alts);
            }
        }
        free(piece);
    }
    free(echo_off);
    return root;
}

/* With echo, the choice's prompt as text (decoded as its output is, skip_special_tokens
 * included) appended to out; else nothing. */
static void echo_text(const openai_reply *o, const mt_gen_job *j, mt_strbuf *out) {
    char *text = NULL;
    size_t len = 0;
    mt_err err;
    if (!o->echo || mt_tokenizer_decode(o->tokenizer, j->prompt, (size_t)j->n_prompt, j->params.skip_special_tokens,
                                        &text, &len, &err))
        return;
    mt_strbuf_append(out, text, len);
    free(text);
}

/* Adds the finish reason (or null) and, once finished, the routing to a choice. An output with
 * parsed tool calls (n_calls) that stopped (a stop token or string) finishes with "tool_calls" and no
 * matched_stop, as SGLang answers it. */
static void finish_choice(const openai_reply *o, const mt_gen_job *j, cJSON *choice, bool final, int n_calls) {
    const char *reason = mt_chat_finish_reason(mt_job_finish_openai(j), n_calls);
    bool calls = !strcmp(reason, "tool_calls");
    if (final) cJSON_AddStringToObject(choice, "finish_reason", reason);
    else cJSON_AddNullToObject(choice, "finish_reason");
    if (final && !calls && j->finish == MT_JOB_STOP_STRING)
        cJSON_AddStringToObject(choice, "matched_stop", j->params.stop_strings[j->matched_string]);
    else if (final && !calls && j->finish == MT_JOB_STOP_TOKEN)
        cJSON_AddNumberToObject(choice, "matched_stop", j->matched_token);
    if (final && j->params.return_routing) mt_job_add_routing(j, o->cfg, choice, "routed_experts", false);
}

/* The message's content, reasoning_content (under --reasoning-parser) and tool_calls from the
 * parsed text; returns the calls. */
static int parsed_message(const openai_reply *o, int k, const mt_gen_job *j, cJSON *msg) {
    mt_chat_output out;
    if (mt_chat_output_parse(&o->split, j->text.data ? j->text.data : "", j->text.len, &out)) {
        add_text(msg, "content", j->text.data, j->text.len); /* out of memory: the text as it is */
        return 0;
    }
    add_part(msg, "content", &out.content);
    if (o->reasoning_field) add_part(msg, "reasoning_content", &out.reasoning);
    cJSON *calls = out.n_calls ? cJSON_AddArrayToObject(msg, "tool_calls") : NULL;
    for (int i = 0; i < out.n_calls; i++) cJSON_AddItemToArray(calls, tool_call_json(o, k, &out.calls[i], false));
    int n_calls = out.n_calls;
    mt_chat_output_free(&out);
    return n_calls;
}

static cJSON *whole_response(void *ctx, mt_gen_job *const *jobs, int n) {
    const openai_reply *o = ctx;
    cJSON *root = envelope(o, false), *choices = cJSON_AddArrayToObject(root, "choices");
    for (int k = 0; k < n; k++) {
        const mt_gen_job *j = jobs[k];
        cJSON *choice = cJSON_CreateObject();
        int n_calls = 0;
        cJSON_AddNumberToObject(choice, "index", k);
        if (o->chat) {
            cJSON *msg = cJSON_AddObjectToObject(choice, "message");
            cJSON_AddStringToObject(msg, "role", "assistant");
            if (o->parse) {
                n_calls = parsed_message(o, k, j, msg);
            } else {
                add_text(msg, "content", j->text.data, j->text.len);
                if (o->reasoning_field) cJSON_AddNullToObject(msg, "reasoning_content"); /* separate_reasoning false */
            }
            cJSON_AddNullToObject(msg, "refusal"); /* a field of OpenAI's message: moetrace never refuses */
        } else {
            mt_strbuf text = {0};
            echo_text(o, j, &text);
            mt_strbuf_append(&text, j->text.data ? j->text.data : "", j->text.len);
            add_text(choice, "text", text.data, text.len);
            mt_strbuf_free(&text);
        }
        text_offsets offsets = {0};
        cJSON_AddItemToObject(choice, "logprobs", logprobs_json(o, j, 0, listed_count(o, j), &offsets));
        finish_choice(o, j, choice, true, n_calls);
        cJSON_AddItemToArray(choices, choice);
    }
    cJSON_AddItemToObject(root, "usage", usage_json(o, jobs, n));
    return root;
}

/* One parsed delta into a chunk's "delta". */
static void add_delta(const openai_reply *o, int k, const mt_chat_delta *x, cJSON *delta) {
    if (x->part == MT_CHAT_TOOL_CALL) {
        cJSON *calls = cJSON_AddArrayToObject(delta, "tool_calls");
        cJSON_AddItemToArray(calls, tool_call_json(o, k, x, true));
    } else {
        add_text(delta, x->part == MT_CHAT_REASONING ? "reasoning_content" : "content", x->text.data, x->text.len);
    }
}

/* The chunks of a parsed chat choice k (o->parse): one for each delta the text since the last call
 * completes (delta.reasoning_content, delta.content, or delta.tool_calls with one whole call), the
 * first with the role until it went out, the first with the log-probabilities of the tokens since
 * the last chunk, the last with the finish reason when final. Nothing goes out when nothing is
 * completed (once the role went out, before the end): the log-probabilities wait for the next. */
static void format_parsed_chunk(openai_reply *o, int k, mt_gen_job *j, bool final, mt_strbuf *out) {
    choice_stream *c = &o->choices[k];
    size_t upto = final ? j->text.len : j->text_stable;
    mt_chat_deltas d = {0};
    if (upto > c->text_sent) {
        mt_chat_split_feed(c->split, j->text.data + c->text_sent, upto - c->text_sent, &d);
        c->text_sent = upto;
    }
    if (final) mt_chat_split_finish(c->split, &d);
    int listed = listed_count(o, j), chunks = d.n ? d.n : 1;
    for (int i = 0; i < chunks && (d.n || final || !c->role_sent); i++) {
        cJSON *root = envelope(o, true), *choices = cJSON_AddArrayToObject(root, "choices");
        cJSON *choice = cJSON_CreateObject();
        cJSON_AddNumberToObject(choice, "index", k);
        cJSON *delta = cJSON_AddObjectToObject(choice, "delta");
        if (!c->role_sent) cJSON_AddStringToObject(delta, "role", "assistant");
        if (d.n) add_delta(o, k, &d.items[i], delta);
        else if (!c->role_sent) add_text(delta, "content", "", 0);
        c->role_sent = true;
        if (j->logprobs && listed > c->lp_sent) {
            cJSON_AddItemToObject(choice, "logprobs", logprobs_json(o, j, c->lp_sent, listed, &c->offsets));
            c->lp_sent = listed;
        } else {
            cJSON_AddNullToObject(choice, "logprobs");
        }
        finish_choice(o, j, choice, final && i == chunks - 1, mt_chat_split_calls(c->split));
        cJSON_AddItemToArray(choices, choice);
        if (o->include_usage) cJSON_AddNullToObject(root, "usage");
        mt_sse_event(out, root);
    }
    mt_chat_deltas_free(&d);
}

/* A chunk of choice k: the text and log-probabilities since its last chunk. With echo, the first
 * chunk carries the prompt's text and, with log-probabilities, its tokens once they are scored. */
static void format_chunk(void *ctx, int k, mt_gen_job *j, bool final, mt_strbuf *out) {
    openai_reply *o = ctx;
    choice_stream *c = &o->choices[k];
    if (o->parse) {
        format_parsed_chunk(o, k, j, final, out);
        return;
    }
    size_t upto = final ? j->text.len : j->text_stable;
    bool echo_now = o->echo && !c->echo_sent && (!j->logprobs || j->prompt_scored || final);
    if (!final && !echo_now && upto <= c->text_sent && c->role_sent) return;
    if (o->echo && !c->echo_sent && !echo_now) return;   /* the prompt's scores come first */
    cJSON *root = envelope(o, true), *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", k);
    const char *delta_text = (j->text.data ? j->text.data : "") + c->text_sent;
    size_t delta_len = upto > c->text_sent ? upto - c->text_sent : 0;
    if (o->chat) {
        cJSON *delta = cJSON_AddObjectToObject(choice, "delta");
        if (!c->role_sent) cJSON_AddStringToObject(delta, "role", "assistant");
        if (delta_len > 0 || !c->role_sent) add_text(delta, "content", delta_text, delta_len);
    } else {
        mt_strbuf text = {0};
        if (echo_now) echo_text(o, j, &text);
        mt_strbuf_append(&text, delta_text, delta_len);
        add_text(choice, "text", text.data, text.len);
        mt_strbuf_free(&text);
    }
    c->role_sent = true;
    c->echo_sent |= echo_now;
    c->text_sent += delta_len;
    int listed = listed_count(o, j);
    if (j->logprobs && listed > c->lp_sent) {   /* the tokens listed since the last chunk */
        cJSON_AddItemToObject(choice, "logprobs", logprobs_json(o, j, c->lp_sent, listed, &c->offsets));
        c->lp_sent = listed;
    } else {
        cJSON_AddNullToObject(choice, "logprobs");
    }
    finish_choice(o, j, choice, final, 0);
    cJSON_AddItemToArray(choices, choice);
    if (o->include_usage) cJSON_AddNullToObject(root, "usage"); /* OpenAI: null but in the usage chunk */
    mt_sse_event(out, root);
}

/* With stream_options.include_usage, a last chunk with no choices and the whole usage. */
static void usage_chunk(void *ctx, mt_gen_job *const *jobs, int n, mt_strbuf *out) {
    const openai_reply *o = ctx;
    if (!o->include_usage) return;
    cJSON *u = envelope(o, true);
    cJSON_AddArrayToObject(u, "choices");
    cJSON_AddItemToObject(u, "usage", usage_json(o, jobs, n));
    mt_sse_event(out, u);
}

static int completions(mt_http_request *rq, bool chat) {
    mt_server *s = rq->server;
    mt_api_error e;
    mt_gen_request r;
    mt_request_ctx c;
    mt_server_request_ctx(s, &c);
    if (mt_request_parse(&c, chat ? MT_BODY_CHAT : MT_BODY_COMPLETIONS, rq->body, rq->body_len, &r, &e))
        return mt_reply_refused(rq, &e);
    openai_reply *o = calloc(1, sizeof *o + (size_t)mt_gen_request_outputs(&r) * sizeof *o->choices);
    if (o) o->n_choices = mt_gen_request_outputs(&r);
    if (!o || (chat && chat_parsers(o, s, &r))) {
        openai_reply_free(o);
        mt_gen_request_free(&r);
        return mt_reply_errorf(rq, 500, "out of memory");
    }
    o->cfg = c.cfg;
    o->chat = chat;
    o->include_usage = r.include_usage;
    o->echo = r.echo;
    o->n = r.n;
    o->tokenizer = c.tokenizer;
    o->created = (long)time(NULL);
    snprintf(o->model, sizeof o->model, "%s", s->b.model_name);
    mt_job_set set;
    int rc = mt_jobs_start(s, &r, NULL, chat ? "chatcmpl-" : "cmpl-", rq->client_fd, &set, &e);
    bool stream = r.stream;
    mt_gen_request_free(&r);
    if (rc) {
        openai_reply_free(o);
        return mt_reply_error(rq, &e);
    }
    snprintf(o->id, sizeof o->id, "%s", set.base);
    char request_id[sizeof o->id]; /* the header's: o goes with the reply */
    memcpy(request_id, o->id, sizeof request_id);
    rq->request_id = request_id;
    int status = mt_reply_jobs(rq, &set, stream, format_chunk, usage_chunk, whole_response, o, openai_reply_free);
    rq->request_id = NULL;
    return status;
}

int mt_api_completions(mt_http_request *rq) { return completions(rq, false); }

int mt_api_chat_completions(mt_http_request *rq) { return completions(rq, true); }

int mt_api_models(mt_http_request *rq) {
    mt_server *s = rq->server;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data"), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", s->b.model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)s->started);
    cJSON_AddStringToObject(m, "owned_by", "moetrace");
    cJSON_AddStringToObject(m, "root", s->b.model_name);
    cJSON_AddNumberToObject(m, "max_model_len", s->b.model->cfg.max_position_embeddings);
    cJSON_AddItemToArray(data, m);
    return mt_reply_json(rq, 200, root);
}
