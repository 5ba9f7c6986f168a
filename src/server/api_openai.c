/* The OpenAI-compatible endpoints (SPEC §5): GET /v1/models, POST /v1/completions and
 * POST /v1/chat/completions, with server-sent-event streaming, usage, and the routing of each
 * choice in "routed_experts": {"data", "shape", "dtype"} when return_routed_experts is asked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/job_run.h"
#include "server/request_params.h"
#include "server/server_internal.h"

#define COMPLETIONS_DEFAULT_MAX_TOKENS 16 /* OpenAI's default */
#define CHAT_DEFAULT_MAX_TOKENS 128      /* SGLang's default (KV blocks are reserved up front) */

typedef struct openai_reply {
    const mt_config *cfg;
    bool chat;
    bool include_usage;
    char id[80];
    char model[256];
    long created;
    size_t text_sent;     /* bytes of text already streamed */
    bool role_sent;
} openai_reply;

#define field mt_params_field

static cJSON *envelope(const openai_reply *o, bool chunk) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", o->id);
    cJSON_AddStringToObject(root, "object", o->chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                    : "text_completion");
    cJSON_AddNumberToObject(root, "created", (double)o->created);
    cJSON_AddStringToObject(root, "model", o->model);
    return root;
}

static cJSON *usage_json(const mt_gen_job *j) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", j->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", j->n_output);
    cJSON_AddNumberToObject(u, "total_tokens", j->n_prompt + j->n_output);
    if (j->n_cached > 0) {
        cJSON *details = cJSON_AddObjectToObject(u, "prompt_tokens_details");
        cJSON_AddNumberToObject(details, "cached_tokens", j->n_cached);
    }
    return u;
}

static void add_text(cJSON *obj, const char *key, const char *s, size_t n) {
    char *copy = strndup(s ? s : "", n);
    cJSON_AddStringToObject(obj, key, copy ? copy : "");
    free(copy);
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

static cJSON *whole_response(void *ctx, const mt_gen_job *j) {
    const openai_reply *o = ctx;
    cJSON *root = envelope(o, false), *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", 0);
    if (o->chat) {
        cJSON *msg = cJSON_AddObjectToObject(choice, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        add_text(msg, "content", j->text.data, j->text.len);
    } else {
        add_text(choice, "text", j->text.data, j->text.len);
    }
    cJSON_AddNullToObject(choice, "logprobs");
    finish_choice(o, j, choice, true);
    cJSON_AddItemToArray(choices, choice);
    cJSON_AddItemToObject(root, "usage", usage_json(j));
    return root;
}

static void format_chunk(void *ctx, mt_gen_job *j, bool final, mt_strbuf *out) {
    openai_reply *o = ctx;
    size_t upto = final ? j->text.len : j->text_stable;
    if (!final && upto <= o->text_sent && o->role_sent) return;
    cJSON *root = envelope(o, true), *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", 0);
    const char *delta_text = (j->text.data ? j->text.data : "") + o->text_sent;
    size_t delta_len = upto > o->text_sent ? upto - o->text_sent : 0;
    if (o->chat) {
        cJSON *delta = cJSON_AddObjectToObject(choice, "delta");
        if (!o->role_sent) cJSON_AddStringToObject(delta, "role", "assistant");
        if (delta_len > 0 || !o->role_sent) add_text(delta, "content", delta_text, delta_len);
    } else {
        add_text(choice, "text", delta_text, delta_len);
    }
    o->role_sent = true;
    o->text_sent += delta_len;
    cJSON_AddNullToObject(choice, "logprobs");
    finish_choice(o, j, choice, final);
    cJSON_AddItemToArray(choices, choice);
    mt_sse_event(out, root);
    if (final && o->include_usage) {
        cJSON *u = envelope(o, true);
        cJSON_AddArrayToObject(u, "choices");
        cJSON_AddItemToObject(u, "usage", usage_json(j));
        mt_sse_event(out, u);
    }
}

/* The prompt of /v1/completions: a string, a list of ids, or a list holding one of those. */
static int completion_prompt(mt_server *s, const cJSON *prompt, int32_t **ids, int *n, mt_api_error *e) {
    if (!prompt) return mt_api_fail(e, 400, "'prompt' is required");
    if (cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) == 1 &&
        (cJSON_IsString(prompt->child) || cJSON_IsArray(prompt->child)))
        prompt = prompt->child;
    else if (cJSON_IsArray(prompt) && (cJSON_IsString(prompt->child) || cJSON_IsArray(prompt->child)))
        return mt_api_fail(e, 400, "several prompts in one request are not supported; send one request per prompt");
    if (cJSON_IsString(prompt)) return mt_params_encode(s->b.tokenizer, prompt->valuestring, true, ids, n, e);
    if (cJSON_IsArray(prompt)) return mt_params_parse_ids(prompt, "prompt", ids, n, e);
    return mt_api_fail(e, 400, "'prompt' must be a string or a list of token ids");
}

/* The prompt of /v1/chat/completions: messages through the chat template, then tokenized without
 * added special tokens (as transformers' apply_chat_template(tokenize=True)). */
static int chat_prompt(mt_server *s, const cJSON *body, int32_t **ids, int *n, mt_api_error *e) {
    const cJSON *messages = field(body, "messages"), *tools = field(body, "tools");
    const cJSON *kwargs = field(body, "chat_template_kwargs"), *gen_prompt = field(body, "add_generation_prompt");
    if (!s->b.chat_template) return mt_api_fail(e, 400, "the model has no chat template");
    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0)
        return mt_api_fail(e, 400, "'messages' must be a non-empty list of messages");
    const cJSON *m;
    int i = 0;
    cJSON_ArrayForEach(m, messages) {
        if (!cJSON_IsObject(m) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "role")))
            return mt_api_fail(e, 400, "'messages' entry %d must be an object with a string 'role'", i);
        i++;
    }
    if (tools && !cJSON_IsArray(tools)) return mt_api_fail(e, 400, "'tools' must be a list");
    if (kwargs && !cJSON_IsObject(kwargs)) return mt_api_fail(e, 400, "'chat_template_kwargs' must be an object");
    if (gen_prompt && !cJSON_IsBool(gen_prompt)) return mt_api_fail(e, 400, "'add_generation_prompt' must be true or false");
    char *text = NULL;
    mt_err err;
    pthread_mutex_lock(&s->chat_mu);
    int rc = mt_chat_render(s->b.chat_template, messages, tools, gen_prompt ? cJSON_IsTrue(gen_prompt) : 1, kwargs,
                            &text, &err);
    pthread_mutex_unlock(&s->chat_mu);
    if (rc) return mt_api_fail(e, 400, "chat template: %s", err.msg);
    rc = mt_params_encode(s->b.tokenizer, text, false, ids, n, e);
    free(text);
    return rc;
}

static int completions(mt_http_request *rq, bool chat) {
    mt_server *s = rq->server;
    const mt_config *cfg = &s->b.model->cfg;
    mt_api_error e;
    mt_gen_params p = {0};
    int32_t *prompt = NULL;
    int n_prompt = 0;
    bool max_given = false;
    openai_reply *o = calloc(1, sizeof *o);
    cJSON *body = cJSON_ParseWithLength(rq->body, rq->body_len);
    if (!o) {
        mt_api_fail(&e, 500, "out of memory");
        goto fail;
    }
    if (!body || !cJSON_IsObject(body)) {
        mt_api_fail(&e, 400, "the request body is not a JSON object");
        goto fail;
    }
    if (!s->b.tokenizer) {
        mt_api_fail(&e, 400, "the OpenAI endpoints need the model's tokenizer.json; use /generate with input_ids");
        goto fail;
    }
    const cJSON *model = field(body, "model"), *opts = field(body, "stream_options");
    bool streaming = false, include_usage = false;
    if (model && !cJSON_IsString(model)) {
        mt_api_fail(&e, 400, "'model' must be a string");
        goto fail;
    }
    if (mt_params_bool(body, "stream", &streaming, &e) < 0) goto fail;
    if (opts && (!cJSON_IsObject(opts) || mt_params_bool(opts, "include_usage", &include_usage, &e) < 0)) {
        mt_api_fail(&e, 400, "'stream_options' must be an object with a boolean 'include_usage'");
        goto fail;
    }
    mt_param_caps caps = {cfg, true, s->b.enable_return_routing};
    if (mt_params_parse_sampling(body, MT_PARAMS_OPENAI, &caps, &p, &max_given, &e) ||
        mt_params_parse_routing(body, &caps, &p, &e))
        goto fail;
    if (chat ? chat_prompt(s, body, &prompt, &n_prompt, &e)
             : completion_prompt(s, field(body, "prompt"), &prompt, &n_prompt, &e))
        goto fail;
    int default_max = chat ? CHAT_DEFAULT_MAX_TOKENS : COMPLETIONS_DEFAULT_MAX_TOKENS;
    if (mt_params_fit(&p, max_given, default_max, n_prompt, cfg, &e)) goto fail;
    o->cfg = cfg;
    o->chat = chat;
    o->include_usage = include_usage;
    o->created = (long)time(NULL);
    snprintf(o->model, sizeof o->model, "%s", s->b.model_name);
    cJSON_Delete(body);
    body = NULL;
    mt_gen_job *j = mt_job_start(s, prompt, n_prompt, &p, &e); /* takes prompt and p */
    prompt = NULL;
    if (!j) goto fail;
    mt_server_response_id(s, j->id, chat ? "chatcmpl-" : "cmpl-", o->id, sizeof o->id);
    return mt_reply_job(rq, j, streaming, format_chunk, whole_response, o);
fail:
    cJSON_Delete(body);
    free(prompt);
    mt_gen_params_free(&p);
    free(o);
    return mt_reply_error(rq, &e);
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
