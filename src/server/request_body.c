/* Generation request bodies (see request_body.h). */
#include "server/request_body.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/request_params.h"
#include "util/json_util.h"

#define field mt_params_field

#define SGLANG_DEFAULT_MAX_NEW_TOKENS 128
#define COMPLETIONS_DEFAULT_MAX_TOKENS 16 /* OpenAI's default */
#define CHAT_DEFAULT_MAX_TOKENS 128      /* SGLang's default (KV blocks are reserved up front) */

/* /generate's log-probability fields: return_logprob (each output token's, meta_info's
 * output_token_logprobs); the prompt's, top alternatives, chosen ids and text are not produced, so
 * their fields are accepted only with the values that ask for none. */
static int logprob_fields(const cJSON *body, mt_gen_params *p, mt_api_error *e) {
    const cJSON *start = field(body, "logprob_start_len"), *top = field(body, "top_logprobs_num");
    const cJSON *ids = field(body, "token_ids_logprob"), *text = field(body, "return_text_in_logprobs");
    if (mt_params_bool(body, "return_logprob", &p->return_logprob, e) < 0) return -1;
    if (start && !cJSON_IsNull(start) && !(cJSON_IsNumber(start) && start->valuedouble == -1))
        return mt_api_fail(e, 400, "'logprob_start_len' must be -1: prompt log-probabilities are not supported by moetrace");
    if (top && !cJSON_IsNull(top) && !(cJSON_IsNumber(top) && top->valuedouble == 0))
        return mt_api_fail(e, 400, "'top_logprobs_num' must be 0: top log-probabilities are not supported by moetrace");
    if (ids && !cJSON_IsNull(ids))
        return mt_api_fail(e, 400, "'token_ids_logprob' is not supported by moetrace");
    if (text && !cJSON_IsNull(text) && !cJSON_IsFalse(text))
        return mt_api_fail(e, 400, "'return_text_in_logprobs' is not supported by moetrace");
    return 0;
}

/* /generate: "text" or "input_ids", "sampling_params", "stream", "rid" and the routing fields. */
static int generate_body(const mt_request_ctx *c, const cJSON *body, mt_gen_request *r, mt_api_error *e) {
    const cJSON *text = field(body, "text"), *ids = field(body, "input_ids"), *rid = field(body, "rid");
    mt_param_caps caps = {c->cfg, c->tokenizer != NULL, c->routing_enabled};
    bool max_given = false;
    if (!!text == !!ids) return mt_api_fail(e, 400, "give exactly one of 'text' or 'input_ids'");
    if ((text && cJSON_IsArray(text)) || (ids && cJSON_IsArray(ids) && cJSON_IsArray(cJSON_GetArrayItem(ids, 0))))
        return mt_api_fail(e, 400, "batched requests (a list of prompts) are not supported; send one request per prompt");
    if (text && !cJSON_IsString(text)) return mt_api_fail(e, 400, "'text' must be a string");
    if (mt_params_bool(body, "stream", &r->stream, e) < 0) return -1;
    if (rid && (!cJSON_IsString(rid) || strlen(rid->valuestring) >= sizeof r->rid))
        return mt_api_fail(e, 400, "'rid' must be a string of at most %zu characters", sizeof r->rid - 1);
    if (rid) snprintf(r->rid, sizeof r->rid, "%s", rid->valuestring);
    if (mt_params_parse_sampling(field(body, "sampling_params"), MT_PARAMS_SGLANG, &caps, &r->params, &max_given, e) ||
        mt_params_parse_routing(body, &caps, &r->params, e) || logprob_fields(body, &r->params, e))
        return -1;
    if (text ? mt_params_encode(c->tokenizer, text->valuestring, true, &r->prompt, &r->n_prompt, e)
             : mt_params_parse_ids(ids, "input_ids", &r->prompt, &r->n_prompt, e))
        return -1;
    return mt_params_fit(&r->params, max_given, SGLANG_DEFAULT_MAX_NEW_TOKENS, r->n_prompt, c->cfg, e);
}

/* The prompt of /v1/completions: a string, a list of ids, or a list holding one of those. */
static int completion_prompt(const mt_request_ctx *c, const cJSON *prompt, mt_gen_request *r, mt_api_error *e) {
    if (!prompt) return mt_api_fail(e, 400, "'prompt' is required");
    if (cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) == 1 &&
        (cJSON_IsString(prompt->child) || cJSON_IsArray(prompt->child)))
        prompt = prompt->child;
    else if (cJSON_IsArray(prompt) && (cJSON_IsString(prompt->child) || cJSON_IsArray(prompt->child)))
        return mt_api_fail(e, 400, "several prompts in one request are not supported; send one request per prompt");
    if (cJSON_IsString(prompt)) return mt_params_encode(c->tokenizer, prompt->valuestring, true, &r->prompt, &r->n_prompt, e);
    if (cJSON_IsArray(prompt)) return mt_params_parse_ids(prompt, "prompt", &r->prompt, &r->n_prompt, e);
    return mt_api_fail(e, 400, "'prompt' must be a string or a list of token ids");
}

/* The prompt of /v1/chat/completions: messages through the chat template, then tokenized without
 * added special tokens (as transformers' apply_chat_template(tokenize=True)). */
static int chat_prompt(const mt_request_ctx *c, const cJSON *body, mt_gen_request *r, mt_api_error *e) {
    const cJSON *messages = field(body, "messages"), *tools = field(body, "tools");
    const cJSON *kwargs = field(body, "chat_template_kwargs"), *gen_prompt = field(body, "add_generation_prompt");
    if (!c->chat_template) return mt_api_fail(e, 400, "the model has no chat template");
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
    if (c->chat_mu) pthread_mutex_lock(c->chat_mu);
    int rc = mt_chat_render(c->chat_template, messages, tools, gen_prompt ? cJSON_IsTrue(gen_prompt) : 1, kwargs,
                            &text, &err);
    if (c->chat_mu) pthread_mutex_unlock(c->chat_mu);
    if (rc) return mt_api_fail(e, 400, "chat template: %s", err.msg);
    rc = mt_params_encode(c->tokenizer, text, false, &r->prompt, &r->n_prompt, e);
    free(text);
    return rc;
}

/* The OpenAI log-probability fields: chat's "logprobs": true with "top_logprobs" 0, or the
 * completions' "logprobs": 0 (the chosen tokens' own; larger values ask for alternatives, which are
 * not produced). "top_logprobs" is not a completions field, so there it is ignored like other
 * unknown keys. */
static int openai_logprobs(const cJSON *body, bool chat, mt_gen_params *p, mt_api_error *e) {
    const cJSON *lp = field(body, "logprobs"), *top = field(body, "top_logprobs");
    if (lp && !cJSON_IsNull(lp)) {
        if (chat && !cJSON_IsBool(lp)) return mt_api_fail(e, 400, "'logprobs' must be true or false");
        if (!chat && !(cJSON_IsNumber(lp) && lp->valuedouble == 0))
            return mt_api_fail(e, 400, "'logprobs' must be 0 or null: top log-probabilities are not supported by moetrace");
        p->return_logprob = chat ? cJSON_IsTrue(lp) : true;
    }
    if (chat && top && !cJSON_IsNull(top) && !(cJSON_IsNumber(top) && top->valuedouble == 0))
        return mt_api_fail(e, 400, "'top_logprobs' must be 0: top log-probabilities are not supported by moetrace");
    return 0;
}

/* /v1/completions and /v1/chat/completions. */
static int openai_body(const mt_request_ctx *c, bool chat, const cJSON *body, mt_gen_request *r, mt_api_error *e) {
    if (!c->tokenizer)
        return mt_api_fail(e, 400, "the OpenAI endpoints need the model's tokenizer.json; use /generate with input_ids");
    const cJSON *model = field(body, "model"), *opts = field(body, "stream_options");
    bool max_given = false;
    if (model && !cJSON_IsString(model)) return mt_api_fail(e, 400, "'model' must be a string");
    if (mt_params_bool(body, "stream", &r->stream, e) < 0) return -1;
    if (opts && (!cJSON_IsObject(opts) || mt_params_bool(opts, "include_usage", &r->include_usage, e) < 0))
        return mt_api_fail(e, 400, "'stream_options' must be an object with a boolean 'include_usage'");
    mt_param_caps caps = {c->cfg, true, c->routing_enabled};
    if (mt_params_parse_sampling(body, MT_PARAMS_OPENAI, &caps, &r->params, &max_given, e) ||
        mt_params_parse_routing(body, &caps, &r->params, e) || openai_logprobs(body, chat, &r->params, e))
        return -1;
    if (chat ? chat_prompt(c, body, r, e) : completion_prompt(c, field(body, "prompt"), r, e)) return -1;
    int default_max = chat ? CHAT_DEFAULT_MAX_TOKENS : COMPLETIONS_DEFAULT_MAX_TOKENS;
    return mt_params_fit(&r->params, max_given, default_max, r->n_prompt, c->cfg, e);
}

/* The request's domain label, if any, as its group (a new label gets one). */
static int domain_group(const mt_request_ctx *c, const cJSON *root, mt_gen_params *p, mt_api_error *e) {
    char *label = NULL;
    mt_err err;
    int has = mt_json_label(root, c->domain_field, MT_DOMAIN_LABEL_MAX, &label, &err);
    if (has < 0) return mt_api_fail(e, 400, "%s", err.msg);
    if (has == 0) return 0;
    int g = mt_domain_usage_group(c->domains, label, &err);
    free(label);
    if (g < 0) return mt_api_fail(e, 400, "'%s': %s", c->domain_field, err.msg);
    p->group = g;
    return 0;
}

int mt_request_parse(const mt_request_ctx *c, mt_body_kind kind, const char *body, size_t len, mt_gen_request *r,
                     mt_api_error *e) {
    memset(r, 0, sizeof *r);
    mt_err err;
    cJSON *root = mt_json_parse(body, len, "the request body", NULL, &err);
    int rc = !root                      ? mt_api_fail(e, 400, "%s", err.msg)
             : !cJSON_IsObject(root)    ? mt_api_fail(e, 400, "the request body is not a JSON object")
             : kind == MT_BODY_GENERATE ? generate_body(c, root, r, e)
                                        : openai_body(c, kind == MT_BODY_CHAT, root, r, e);
    if (rc == 0 && c->domain_field && c->domains) rc = domain_group(c, root, &r->params, e);
    cJSON_Delete(root);
    if (rc) mt_gen_request_free(r);
    return rc;
}

void mt_gen_request_free(mt_gen_request *r) {
    free(r->prompt);
    mt_gen_params_free(&r->params);
    memset(r, 0, sizeof *r);
}
