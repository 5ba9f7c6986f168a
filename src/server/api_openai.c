/* The OpenAI-compatible endpoints (SPEC §5): GET /v1/models, POST /v1/completions and
 * POST /v1/chat/completions, with server-sent-event streaming, usage, and the routing of each
 * choice in "routed_experts": {"data", "shape", "dtype"} when return_routed_experts is asked, and the
 * chosen tokens' log-probabilities when asked (chat: "logprobs": true; completions: "logprobs": 0). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/job_run.h"
#include "server/request_body.h"
#include "server/server_internal.h"

/* What one choice has streamed so far. */
typedef struct choice_stream {
    size_t text_sent;     /* bytes of text already streamed */
    bool role_sent;
    int lp_sent;          /* output tokens whose log-probabilities were streamed */
    size_t lp_offset;     /* completions: text_offset of the next of them */
} choice_stream;

typedef struct openai_reply {
    const mt_config *cfg;
    bool chat;
    bool include_usage;
    int n;                /* samples of each prompt: choice k's prompt is k / n */
    char id[MT_JOB_NAME_LEN];   /* the response's id */
    char model[256];
    long created;
    const mt_tokenizer *tokenizer;
    choice_stream choices[]; /* [outputs] */
} openai_reply;

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
    char *copy = strndup(s ? s : "", n);
    cJSON_AddStringToObject(obj, key, copy ? copy : "");
    free(copy);
}

/* The choice's "logprobs" for output tokens [from, to) (null without return_logprob): chat's
 * {"content": [{"token", "logprob", "bytes", "top_logprobs": []}]}, the completions'
 * {"tokens", "token_logprobs", "top_logprobs": null, "text_offset"}. A token's text is its id
 * decoded alone (special tokens shown), so a piece of a UTF-8 character reads as U+FFFD, as the
 * tokenizers library gives it; *offset advances by each token's bytes. */
static cJSON *logprobs_json(const openai_reply *o, const mt_gen_job *j, int from, int to, size_t *offset) {
    if (!j->logprobs) return cJSON_CreateNull();
    cJSON *root = cJSON_CreateObject(), *content = NULL, *tokens = NULL, *values = NULL, *offsets = NULL;
    if (o->chat) {
        content = cJSON_AddArrayToObject(root, "content");
    } else {
        tokens = cJSON_AddArrayToObject(root, "tokens");
        values = cJSON_AddArrayToObject(root, "token_logprobs");
        cJSON_AddNullToObject(root, "top_logprobs");
        offsets = cJSON_AddArrayToObject(root, "text_offset");
    }
    for (int i = from; i < to; i++) {
        char *text = NULL;
        size_t len = 0;
        mt_err err;
        if (mt_tokenizer_decode(o->tokenizer, &j->output[i], 1, 0, &text, &len, &err)) len = 0;
        char *piece = strndup(text ? text : "", len);
        if (o->chat) {
            cJSON *t = cJSON_CreateObject(), *bytes = cJSON_CreateArray();
            cJSON_AddStringToObject(t, "token", piece ? piece : "");
            cJSON_AddItemToObject(t, "logprob", mt_job_logprob_json(j, i));
            for (size_t b = 0; b < len; b++) cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)text[b]));
            cJSON_AddItemToObject(t, "bytes", bytes);
            cJSON_AddArrayToObject(t, "top_logprobs");
            cJSON_AddItemToArray(content, t);
        } else {
            cJSON_AddItemToArray(tokens, cJSON_CreateString(piece ? piece : ""));
            cJSON_AddItemToArray(values, mt_job_logprob_json(j, i));
            cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)*offset));
        }
        *offset += len;
        free(piece);
        free(text);
    }
    return root;
}

/* Adds the finish reason (or null) and, once finished, the routing to a choice. */
static void finish_choice(const openai_reply *o, const mt_gen_job *j, cJSON *choice, bool final) {
    if (final) cJSON_AddStringToObject(choice, "finish_reason", mt_job_finish_openai(j));
    else cJSON_AddNullToObject(choice, "finish_reason");
    if (final && j->finish == MT_JOB_STOP_STRING)
        cJSON_AddStringToObject(choice, "matched_stop", j->params.stop_strings[j->matched_string]);
    else if (final && j->finish == MT_JOB_STOP_TOKEN)
        cJSON_AddNumberToObject(choice, "matched_stop", j->matched_token);
    if (final && j->params.return_routing) mt_job_add_routing(j, o->cfg, choice, "routed_experts", false);
}

static cJSON *whole_response(void *ctx, mt_gen_job *const *jobs, int n) {
    const openai_reply *o = ctx;
    cJSON *root = envelope(o, false), *choices = cJSON_AddArrayToObject(root, "choices");
    for (int k = 0; k < n; k++) {
        const mt_gen_job *j = jobs[k];
        cJSON *choice = cJSON_CreateObject();
        cJSON_AddNumberToObject(choice, "index", k);
        if (o->chat) {
            cJSON *msg = cJSON_AddObjectToObject(choice, "message");
            cJSON_AddStringToObject(msg, "role", "assistant");
            add_text(msg, "content", j->text.data, j->text.len);
        } else {
            add_text(choice, "text", j->text.data, j->text.len);
        }
        size_t offset = 0;
        cJSON_AddItemToObject(choice, "logprobs", logprobs_json(o, j, 0, j->n_output, &offset));
        finish_choice(o, j, choice, true);
        cJSON_AddItemToArray(choices, choice);
    }
    cJSON_AddItemToObject(root, "usage", usage_json(o, jobs, n));
    return root;
}

/* A chunk of choice k: the text and log-probabilities since its last chunk. */
static void format_chunk(void *ctx, int k, mt_gen_job *j, bool final, mt_strbuf *out) {
    openai_reply *o = ctx;
    choice_stream *c = &o->choices[k];
    size_t upto = final ? j->text.len : j->text_stable;
    if (!final && upto <= c->text_sent && c->role_sent) return;
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
        add_text(choice, "text", delta_text, delta_len);
    }
    c->role_sent = true;
    c->text_sent += delta_len;
    if (j->logprobs && j->n_output > c->lp_sent) {   /* the tokens generated since the last chunk */
        cJSON_AddItemToObject(choice, "logprobs", logprobs_json(o, j, c->lp_sent, j->n_output, &c->lp_offset));
        c->lp_sent = j->n_output;
    } else {
        cJSON_AddNullToObject(choice, "logprobs");
    }
    finish_choice(o, j, choice, final);
    cJSON_AddItemToArray(choices, choice);
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
        return mt_reply_error(rq, &e);
    openai_reply *o = calloc(1, sizeof *o + (size_t)mt_gen_request_outputs(&r) * sizeof *o->choices);
    if (!o) {
        mt_gen_request_free(&r);
        return mt_reply_errorf(rq, 500, "out of memory");
    }
    o->cfg = c.cfg;
    o->chat = chat;
    o->include_usage = r.include_usage;
    o->n = r.n;
    o->tokenizer = c.tokenizer;
    o->created = (long)time(NULL);
    snprintf(o->model, sizeof o->model, "%s", s->b.model_name);
    mt_job_set set;
    int rc = mt_jobs_start(s, &r, NULL, chat ? "chatcmpl-" : "cmpl-", &set, &e);
    bool stream = r.stream;
    mt_gen_request_free(&r);
    if (rc) {
        free(o);
        return mt_reply_error(rq, &e);
    }
    snprintf(o->id, sizeof o->id, "%s", set.base);
    return mt_reply_jobs(rq, &set, stream, format_chunk, usage_chunk, whole_response, o);
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
