/* Generation request bodies (see request_body.h). */
#include "server/request_body.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/sample.h"
#include "server/request_params.h"
#include "util/json_util.h"
#include "util/strbuf.h"

#define field mt_params_field

#define SGLANG_DEFAULT_MAX_NEW_TOKENS 128
#define COMPLETIONS_DEFAULT_MAX_TOKENS 16 /* OpenAI's default */
#define CHAT_DEFAULT_MAX_TOKENS 128      /* SGLang's default (KV blocks are reserved up front) */

/* /generate's log-probability fields: return_logprob (meta_info's input_token_logprobs from
 * logprob_start_len, default the last prompt token, and output_token_logprobs), top_logprobs_num
 * (input_top_logprobs and output_top_logprobs), token_ids_logprob (input_token_ids_logprobs and
 * output_token_ids_logprobs: those tokens' at every listed position) and return_text_in_logprobs
 * (each token's text, which needs the tokenizer). */
static int logprob_fields(const cJSON *body, const mt_param_caps *caps, mt_gen_params *p, mt_api_error *e) {
    p->logprob_start = -1;
    if (mt_params_bool(body, "return_logprob", &p->return_logprob, e) < 0 ||
        mt_params_int(body, "logprob_start_len", -1, 1 << 30, &p->logprob_start, e) < 0 ||
        mt_params_int(body, "top_logprobs_num", 0, MT_TOP_LOGPROBS_MAX, &p->top_logprobs, e) < 0 ||
        mt_params_bool(body, "return_text_in_logprobs", &p->text_in_logprobs, e) < 0)
        return -1;
    const cJSON *ids = field(body, "token_ids_logprob");
    if (ids) {
        if (cJSON_IsArray(ids) && cJSON_GetArraySize(ids) > MT_LOGPROB_IDS_MAX)
            return mt_api_fail(e, 400, "'token_ids_logprob' lists more than %d tokens", MT_LOGPROB_IDS_MAX);
        if (mt_params_parse_ids(ids, "token_ids_logprob", &p->logprob_ids, &p->n_logprob_ids, e)) return -1;
        for (int i = 0; i < p->n_logprob_ids; i++)
            if (p->logprob_ids[i] >= caps->cfg->vocab_size)
                return mt_api_fail(e, 400, "'token_ids_logprob' entry %d (%d) is outside the vocabulary [0, %d)", i,
                                   p->logprob_ids[i], caps->cfg->vocab_size);
    }
    if (p->text_in_logprobs && !caps->have_tokenizer)
        return mt_api_fail(e, 400, "'return_text_in_logprobs' needs the model's tokenizer.json");
    return 0;
}

/* Once the prompt is known: logprob_start_len must fall inside it (SGLang's rule). */
static int logprob_start_fits(const mt_gen_params *p, int n_prompt, mt_api_error *e) {
    if (p->return_logprob && p->logprob_start >= n_prompt)
        return mt_api_fail(e, 400, "'logprob_start_len' %d must be less than the prompt's %d tokens", p->logprob_start,
                           n_prompt);
    return 0;
}

/* Prefixes e's message with the prompt it is about, in a request of several. */
static int about_prompt(mt_api_error *e, int i, bool list) {
    if (!list) return -1;
    char message[sizeof e->message];
    int n = snprintf(message, sizeof message, "prompt %d: ", i);
    snprintf(message + n, sizeof message - (size_t)n, "%.*s", (int)(sizeof message - 1 - (size_t)n), e->message);
    memcpy(e->message, message, sizeof message);
    return -1;
}

/* Allocates r's prompts (refusing more than a request may ask outputs for). */
static int alloc_prompts(mt_gen_request *r, int count, mt_api_error *e) {
    if (count > MT_REQUEST_MAX_OUTPUTS)
        return mt_api_fail(e, 400, "the request has %d prompts, more than %d", count, MT_REQUEST_MAX_OUTPUTS);
    if (!(r->prompts = calloc((size_t)count, sizeof *r->prompts))) return mt_api_fail(e, 500, "out of memory");
    r->n_prompts = count;
    return 0;
}

static int check_outputs(const mt_gen_request *r, mt_api_error *e) {
    long outputs = (long)r->n_prompts * r->n;
    if (outputs > MT_REQUEST_MAX_OUTPUTS)
        return mt_api_fail(e, 400, "the request asks for %ld outputs (%d prompts x 'n' %d), more than %d", outputs,
                           r->n_prompts, r->n, MT_REQUEST_MAX_OUTPUTS);
    return 0;
}

static int decimal_digits(int v) {
    int d = 1;
    while (v >= 10) v /= 10, d++;
    return d;
}

/* /generate's prompts: "text" (a string or a list of strings) or "input_ids" (a list of ids or a
 * list of such lists). Counts them; *list when they came as a list. */
static int generate_shape(const cJSON *text, const cJSON *ids, int *count, bool *list, mt_api_error *e) {
    if (!!text == !!ids) return mt_api_fail(e, 400, "give exactly one of 'text' or 'input_ids'");
    const cJSON *arr = text ? text : ids, *it;
    *list = cJSON_IsArray(arr) && (text || cJSON_IsArray(arr->child));
    *count = *list ? cJSON_GetArraySize(arr) : 1;
    if (text && !cJSON_IsString(text) && !cJSON_IsArray(text))
        return mt_api_fail(e, 400, "'text' must be a string or a list of strings");
    if (!*list) return 0;
    if (*count == 0) return mt_api_fail(e, 400, "'text' is an empty list");
    int i = 0;
    cJSON_ArrayForEach(it, arr) {
        if (text && !cJSON_IsString(it)) return mt_api_fail(e, 400, "'text' entry %d must be a string", i);
        if (ids && !cJSON_IsArray(it)) return mt_api_fail(e, 400, "'input_ids' entry %d must be a list of token ids", i);
        i++;
    }
    return 0;
}

/* /generate's "rid": a string (in a list request, the outputs are named rid_k), or in a list
 * request a list of distinct strings, one per prompt (sample j of prompt i named rid[i]_j when
 * n > 1). Every name must fit a job's name. */
static int generate_rids(const cJSON *rid, mt_gen_request *r, mt_api_error *e) {
    if (!rid) return 0;
    int outputs = mt_gen_request_outputs(r);
    if (cJSON_IsString(rid)) {
        size_t len = strlen(rid->valuestring);
        size_t room = r->list ? MT_JOB_NAME_LEN - 2 - (size_t)decimal_digits(outputs - 1) : MT_REQUEST_RID_LEN - 1;
        if (len > room) return mt_api_fail(e, 400, "'rid' must be a string of at most %zu characters%s", room,
                                           r->list ? " here (its outputs are named rid_k)" : "");
        snprintf(r->rid, sizeof r->rid, "%s", rid->valuestring);
        return 0;
    }
    if (!r->list || !cJSON_IsArray(rid))
        return mt_api_fail(e, 400, r->list ? "'rid' must be a string or a list of strings, one per prompt"
                                           : "'rid' must be a string");
    if (cJSON_GetArraySize(rid) != r->n_prompts)
        return mt_api_fail(e, 400, "'rid' has %d entries for %d prompts", cJSON_GetArraySize(rid), r->n_prompts);
    size_t room = r->n > 1 ? MT_JOB_NAME_LEN - 2 - (size_t)decimal_digits(r->n - 1) : MT_REQUEST_RID_LEN - 1;
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, rid) {
        if (!cJSON_IsString(it) || !it->valuestring[0] || strlen(it->valuestring) > room)
            return mt_api_fail(e, 400, "'rid' entry %d must be a non-empty string of at most %zu characters", i, room);
        for (int k = 0; k < i; k++)
            if (!strcmp(r->prompts[k].rid, it->valuestring))
                return mt_api_fail(e, 400, "'rid' entries %d and %d are the same", k, i);
        snprintf(r->prompts[i++].rid, MT_REQUEST_RID_LEN, "%s", it->valuestring);
    }
    return 0;
}

/* Encodes the prompt string s (with its special tokens). kept_nul: the body was parsed keeping each
 * escaped U+0000 as C0 80 (mt_json_parse_body_keep_nul), read back here as a NUL byte. */
static int encode_prompt(const mt_request_ctx *c, const cJSON *s, bool kept_nul, int32_t **ids, int *n,
                         mt_api_error *e) {
    if (!kept_nul || !mt_json_holds_nul(s->valuestring))
        return mt_params_encode(c->tokenizer, s->valuestring, strlen(s->valuestring), true, ids, n, e);
    size_t len;
    char *bytes = mt_json_bytes(s->valuestring, &len);
    if (!bytes) return mt_api_fail(e, 500, "out of memory");
    int rc = mt_params_encode(c->tokenizer, bytes, len, true, ids, n, e);
    free(bytes);
    return rc;
}

/* /generate: "text" or "input_ids", "sampling_params" (an object, or in a list request a list of
 * them, one per prompt, all with the same "n"), "stream", "rid" and the routing fields. */
static int generate_body(const mt_request_ctx *c, const cJSON *body, bool kept_nul, mt_gen_request *r,
                         mt_api_error *e) {
    const cJSON *text = field(body, "text"), *ids = field(body, "input_ids"), *sp = field(body, "sampling_params");
    mt_param_caps caps = {c->cfg, c->tokenizer != NULL, c->routing_enabled};
    int count = 0;
    bool listed = false; /* the prompts came as a list */
    if (generate_shape(text, ids, &count, &listed, e) || mt_params_bool(body, "stream", &r->stream, e) < 0) return -1;
    r->list = listed;
    if (sp && cJSON_IsArray(sp) && (!listed || cJSON_GetArraySize(sp) != count))
        return mt_api_fail(e, 400, listed ? "'sampling_params' has %d entries for %d prompts"
                                           : "'sampling_params' must be an object", cJSON_GetArraySize(sp), count);
    if (alloc_prompts(r, count, e)) return -1;
    bool *max_given = calloc((size_t)count, sizeof *max_given);
    if (!max_given) return mt_api_fail(e, 500, "out of memory");
    int rc = 0;
    for (int i = 0; i < count && !rc; i++) {
        mt_gen_params *p = &r->prompts[i].params;
        int n;
        rc = mt_params_parse_sampling(sp && cJSON_IsArray(sp) ? cJSON_GetArrayItem(sp, i) : sp, MT_PARAMS_SGLANG, &caps,
                                      p, &max_given[i], &n, e) ||
             mt_params_parse_routing(body, &caps, p, e) || logprob_fields(body, &caps, p, e);
        if (!rc && i > 0 && n != r->n)
            rc = mt_api_fail(e, 400, "every entry of 'sampling_params' must ask for the same 'n' (%d, then %d)", r->n, n);
        r->n = n;
        if (rc && sp && cJSON_IsArray(sp)) about_prompt(e, i, true);
    }
    if (!rc && r->n > 1) r->list = true;  /* answered as a list, as SGLang does */
    if (!rc) rc = check_outputs(r, e) || generate_rids(field(body, "rid"), r, e);
    for (int i = 0; i < count && !rc; i++) {
        mt_gen_prompt *p = &r->prompts[i];
        const cJSON *t = listed && text ? cJSON_GetArrayItem(text, i) : text;
        const cJSON *v = listed && ids ? cJSON_GetArrayItem(ids, i) : ids;
        rc = (t ? encode_prompt(c, t, kept_nul, &p->ids, &p->n_ids, e)
                : mt_params_parse_ids(v, "input_ids", &p->ids, &p->n_ids, e)) ||
             mt_params_fit(&p->params,
                           &(mt_fit_limits){max_given[i], SGLANG_DEFAULT_MAX_NEW_TOKENS, c->kv_positions, NULL, NULL},
                           p->n_ids, c->cfg, e) ||
             logprob_start_fits(&p->params, p->n_ids, e);
        if (rc) about_prompt(e, i, count > 1);
    }
    free(max_given);
    return rc ? -1 : 0;
}

/* The prompts of /v1/completions: a string, a list of ids, or a list of either. */
static int completion_prompts(const mt_request_ctx *c, const cJSON *prompt, bool kept_nul, mt_gen_request *r,
                              mt_api_error *e) {
    if (!prompt) return mt_api_fail(e, 400, "'prompt' is required");
    if (!cJSON_IsString(prompt) && !cJSON_IsArray(prompt))
        return mt_api_fail(e, 400, "'prompt' must be a string, a list of token ids, or a list of either");
    if (cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) == 0) return mt_api_fail(e, 400, "'prompt' is empty");
    bool several = cJSON_IsArray(prompt) && (cJSON_IsString(prompt->child) || cJSON_IsArray(prompt->child));
    if (alloc_prompts(r, several ? cJSON_GetArraySize(prompt) : 1, e)) return -1;
    for (int i = 0; i < r->n_prompts; i++) {
        const cJSON *p = several ? cJSON_GetArrayItem(prompt, i) : prompt;
        mt_gen_prompt *out = &r->prompts[i];
        int rc = cJSON_IsString(p) ? encode_prompt(c, p, kept_nul, &out->ids, &out->n_ids, e)
                 : cJSON_IsArray(p) ? mt_params_parse_ids(p, "prompt", &out->ids, &out->n_ids, e)
                                    : mt_api_fail(e, 400, "'prompt' entry %d must be a string or a list of token ids", i);
        if (rc) return about_prompt(e, i, r->n_prompts > 1);
    }
    return 0;
}

/* Message i's "content" as the chat templates read it, a string, into *out (NULL: keep it as it is).
 * OpenAI clients may send a list of parts ({"type": "text", "text": ...}): their texts are joined
 * with newlines, as vLLM does for templates that expect a string; null (an assistant turn that only
 * calls tools) becomes "". The model reads text only: any other part is a 400 naming it. */
static int flat_content(const cJSON *content, int i, char **out, mt_api_error *e) {
    *out = NULL;
    if (!content || cJSON_IsString(content)) return 0;
    if (cJSON_IsNull(content)) return (*out = strdup("")) ? 0 : mt_api_fail(e, 500, "out of memory");
    if (!cJSON_IsArray(content))
        return mt_api_fail(e, 400, "'messages' entry %d: 'content' must be a string, a list of parts or null", i);
    mt_strbuf b = {0};
    int k = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = cJSON_IsObject(part) ? cJSON_GetObjectItemCaseSensitive(part, "type") : NULL;
        const cJSON *text = cJSON_IsObject(part) ? cJSON_GetObjectItemCaseSensitive(part, "text") : NULL;
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text)) {
            mt_strbuf_free(&b);
            if (cJSON_IsString(type) && strcmp(type->valuestring, "text"))
                return mt_api_fail(e, 400, "'messages' entry %d: content part %d is of type '%.64s'; the model reads "
                                   "text parts only", i, k, type->valuestring);
            return mt_api_fail(e, 400, "'messages' entry %d: content part %d must be {\"type\": \"text\", \"text\": "
                               "string}", i, k);
        }
        if (k++) mt_strbuf_append(&b, "\n", 1);
        mt_strbuf_append(&b, text->valuestring, strlen(text->valuestring));
    }
    *out = mt_strbuf_take(&b);
    return 0;
}

/* The copy of messages (made on first use into *copy), its message i. NULL when out of memory. */
static cJSON *copied_message(const cJSON *messages, cJSON **copy, int i) {
    if (!*copy) *copy = cJSON_Duplicate(messages, 1);
    return *copy ? cJSON_GetArrayItem(*copy, i) : NULL;
}

/* Message i's tool calls with each string "arguments" read as the JSON object it holds, as SGLang gives
 * them to the templates (some iterate them as a mapping), into the copy. 0, or -1 with e (not one JSON
 * object: a 400). */
static int parse_tool_arguments(const cJSON *messages, cJSON **copy, const cJSON *m, int i, mt_api_error *e) {
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
    if (!cJSON_IsString(role) || strcmp(role->valuestring, "assistant") || !cJSON_IsArray(calls)) return 0;
    int k = 0;
    const cJSON *call;
    cJSON_ArrayForEach(call, calls) {
        const cJSON *fn = cJSON_IsObject(call) ? cJSON_GetObjectItemCaseSensitive(call, "function") : NULL;
        const cJSON *args = cJSON_IsObject(fn) ? cJSON_GetObjectItemCaseSensitive(fn, "arguments") : NULL;
        if (cJSON_IsString(args)) {
            mt_err err;
            cJSON *value = mt_json_parse_whole(args->valuestring, strlen(args->valuestring), NULL, &err);
            if (!value)
                return mt_api_fail(e, 400, "'messages' entry %d: tool call %d's 'arguments' is not JSON (%s)", i, k,
                                   err.msg);
            if (!cJSON_IsObject(value)) { /* as SGLang: the arguments are a JSON object */
                cJSON_Delete(value);
                return mt_api_fail(e, 400, "'messages' entry %d: tool call %d's 'arguments' must hold a JSON object", i,
                                   k);
            }
            cJSON *cm = copied_message(messages, copy, i);
            cJSON *cfn = cm ? cJSON_GetObjectItemCaseSensitive(
                                  cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cm, "tool_calls"), k), "function")
                            : NULL;
            if (!cfn || !cJSON_ReplaceItemInObjectCaseSensitive(cfn, "arguments", value)) {
                cJSON_Delete(value);
                return mt_api_fail(e, 500, "out of memory");
            }
        }
        k++;
    }
    return 0;
}

/* The messages as the template reads them: every content flat_content changes replaced, and tool
 * calls' arguments parsed (parse_tool_arguments). A copy, or NULL when nothing changes (then the
 * messages are used as they are) or on error (rc -1 in *rc). */
static cJSON *template_messages(const cJSON *messages, int *rc, mt_api_error *e) {
    cJSON *copy = NULL;
    const cJSON *m;
    int i = 0;
    *rc = 0;
    cJSON_ArrayForEach(m, messages) {
        char *flat;
        if (flat_content(cJSON_GetObjectItemCaseSensitive(m, "content"), i, &flat, e) ||
            parse_tool_arguments(messages, &copy, m, i, e)) {
            free(flat);
            cJSON_Delete(copy);
            *rc = -1;
            return NULL;
        }
        if (flat) {
            cJSON *str = cJSON_CreateString(flat);
            cJSON *cm = copied_message(messages, &copy, i);
            free(flat);
            if (!cm || !str || !cJSON_ReplaceItemInObjectCaseSensitive(cm, "content", str)) {
                cJSON_Delete(str);
                cJSON_Delete(copy);
                *rc = mt_api_fail(e, 500, "out of memory");
                return NULL;
            }
        }
        i++;
    }
    return copy;
}

/* The names of the functions a chat request's tools define ({"type": "function", "function":
 * {"name": ...}}, OpenAI's form), which a parsed tool call must name; r->with_tools set. */
static int tool_names(const cJSON *tools, mt_gen_request *r, mt_api_error *e) {
    r->with_tools = true;
    if (!(r->tool_names = calloc((size_t)cJSON_GetArraySize(tools), sizeof *r->tool_names)))
        return mt_api_fail(e, 500, "out of memory");
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        const cJSON *fn = cJSON_IsObject(t) ? cJSON_GetObjectItemCaseSensitive(t, "function") : NULL;
        const cJSON *name = cJSON_IsObject(fn) ? cJSON_GetObjectItemCaseSensitive(fn, "name") : NULL;
        if (!cJSON_IsString(name)) continue;
        if (!(r->tool_names[r->n_tool_names] = strdup(name->valuestring))) return mt_api_fail(e, 500, "out of memory");
        r->n_tool_names++;
    }
    return 0;
}

/* The prompt of /v1/chat/completions: messages through the chat template, then tokenized without
 * added special tokens (as transformers' apply_chat_template(tokenize=True)). The tools as sent, or
 * none with "tool_choice": "none" or an empty list (as SGLang). kept_nul: the body was parsed
 * keeping each escaped U+0000 as C0 80, a NUL to the template. */
static int chat_prompt(const mt_request_ctx *c, const cJSON *body, bool kept_nul, mt_gen_request *r, mt_api_error *e) {
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
    const cJSON *choice = field(body, "tool_choice");
    if ((cJSON_IsString(choice) && !strcmp(choice->valuestring, "none")) || cJSON_GetArraySize(tools) == 0)
        tools = NULL; /* as SGLang: no tools (a named template list then renders "default") */
    if (tools && tool_names(tools, r, e)) return -1;
    int frc;
    cJSON *flat = template_messages(messages, &frc, e);
    if (frc) return -1;
    char *text = NULL;
    size_t len = 0;
    mt_err err;
    if (c->chat_mu) pthread_mutex_lock(c->chat_mu);
    int rc = mt_chat_render_bytes(c->chat_template, flat ? flat : messages, tools,
                                  gen_prompt ? cJSON_IsTrue(gen_prompt) : 1, kwargs, kept_nul, &text, &len, &err);
    if (c->chat_mu) pthread_mutex_unlock(c->chat_mu);
    cJSON_Delete(flat);
    if (rc) return mt_api_fail(e, 400, "chat template: %s", err.msg);
    rc = alloc_prompts(r, 1, e) ||
         mt_params_encode(c->tokenizer, text, len, false, &r->prompts[0].ids, &r->prompts[0].n_ids, e);
    free(text);
    return rc ? -1 : 0;
}

/* The OpenAI log-probability fields. Chat: "logprobs": true, with "top_logprobs" 0..20 alternatives
 * (which need "logprobs"). Completions: "logprobs": N, the chosen tokens' and N alternatives
 * (0..20), and "echo": the prompt's tokens listed too (the first without a value). "top_logprobs"
 * is not a completions field, nor "echo" a chat one: there they are ignored like other unknown keys. */
static int openai_logprobs(const cJSON *body, bool chat, mt_gen_request *r, mt_gen_params *p, mt_api_error *e) {
    const cJSON *lp = field(body, "logprobs");
    p->logprob_start = -1;
    if (chat) {
        if (lp && !cJSON_IsBool(lp)) return mt_api_fail(e, 400, "'logprobs' must be true or false");
        p->return_logprob = lp && cJSON_IsTrue(lp);
        if (mt_params_int(body, "top_logprobs", 0, MT_TOP_LOGPROBS_MAX, &p->top_logprobs, e) < 0) return -1;
        if (p->top_logprobs > 0 && !p->return_logprob)
            return mt_api_fail(e, 400, "'top_logprobs' needs 'logprobs': true");
        return 0;
    }
    int rc = mt_params_int(body, "logprobs", 0, MT_TOP_LOGPROBS_MAX, &p->top_logprobs, e);
    if (rc < 0 || mt_params_bool(body, "echo", &r->echo, e) < 0) return -1;
    p->return_logprob = rc == 1;
    if (r->echo) p->logprob_start = 0;
    return 0;
}

/* The OpenAI fields that ask for constrained output, which moetrace does not do: accepted only where
 * they ask for nothing ("response_format" of type "text"; "tool_choice" "auto", where the template
 * gets the tools and the model answers freely, or "none", where it gets none), refused otherwise
 * rather than ignored. */
static int openai_constraints(const cJSON *body, bool chat, mt_api_error *e) {
    const cJSON *rf = field(body, "response_format");
    if (rf) {
        const cJSON *type = cJSON_IsObject(rf) ? cJSON_GetObjectItemCaseSensitive(rf, "type") : NULL;
        if (!cJSON_IsString(type))
            return mt_api_fail(e, 400, "'response_format' must be an object with a string 'type'");
        if (strcmp(type->valuestring, "text"))
            return mt_api_fail(e, 400, "'response_format' of type '%.64s' is not supported by moetrace (no constrained "
                               "decoding); only 'text' is accepted", type->valuestring);
    }
    const cJSON *tc = chat ? field(body, "tool_choice") : NULL;
    if (tc && !(cJSON_IsString(tc) && (!strcmp(tc->valuestring, "auto") || !strcmp(tc->valuestring, "none"))))
        return mt_api_fail(e, 400, "'tool_choice' other than \"auto\" or \"none\" forces a tool call, which needs "
                           "constrained decoding: not supported by moetrace");
    return 0;
}

/* The completions fields moetrace cannot honour, refused rather than ignored: "suffix" (text after
 * the completion, fill-in-the-middle) unless null or "", and "best_of" (the n best of more
 * candidates) unless it is n, where every candidate is returned. */
static int completions_unsupported(const cJSON *body, int n, mt_api_error *e) {
    const cJSON *suffix = field(body, "suffix"), *best_of = field(body, "best_of");
    if (suffix && !(cJSON_IsString(suffix) && !suffix->valuestring[0]))
        return mt_api_fail(e, 400, "'suffix' is not supported by moetrace (no fill-in-the-middle); only null or \"\" "
                           "is accepted");
    if (best_of && !(cJSON_IsNumber(best_of) && best_of->valuedouble == n))
        return mt_api_fail(e, 400, "'best_of' other than 'n' (%d) is not supported by moetrace (candidates are not "
                           "ranked)", n);
    return 0;
}

/* /v1/completions and /v1/chat/completions: the sampling fields (top-level) apply to every prompt. */
/* The name the request gave its limit on new tokens (max_completion_tokens wins, as it is read last). */
static const char *openai_max_key(const cJSON *body) {
    const cJSON *completion = field(body, "max_completion_tokens");
    return completion && !cJSON_IsNull(completion) ? "max_completion_tokens" : "max_tokens";
}

/* The name the request gave min_new_tokens (min_tokens unless only min_new_tokens is set). */
static const char *openai_min_key(const cJSON *body) {
    return !field(body, "min_tokens") && field(body, "min_new_tokens") ? "min_new_tokens" : "min_tokens";
}

static int openai_body(const mt_request_ctx *c, bool chat, const cJSON *body, bool kept_nul, mt_gen_request *r,
                       mt_api_error *e) {
    if (!c->tokenizer)
        return mt_api_fail(e, 400, "the OpenAI endpoints need the model's tokenizer.json; use /generate with input_ids");
    const cJSON *model = field(body, "model"), *opts = field(body, "stream_options");
    bool max_given = false;
    if (model && !cJSON_IsString(model)) return mt_api_fail(e, 400, "'model' must be a string");
    if (openai_constraints(body, chat, e)) return -1;
    if (mt_params_bool(body, "stream", &r->stream, e) < 0) return -1;
    r->separate_reasoning = r->stream_reasoning = true; /* SGLang's defaults (chat only) */
    if (chat && (mt_params_bool(body, "separate_reasoning", &r->separate_reasoning, e) < 0 ||
                 mt_params_bool(body, "stream_reasoning", &r->stream_reasoning, e) < 0))
        return -1;
    if (opts && (!cJSON_IsObject(opts) || mt_params_bool(opts, "include_usage", &r->include_usage, e) < 0))
        return mt_api_fail(e, 400, "'stream_options' must be an object with a boolean 'include_usage'");
    mt_param_caps caps = {c->cfg, true, c->routing_enabled};
    mt_gen_params shared;
    int rc = mt_params_parse_sampling(body, MT_PARAMS_OPENAI, &caps, &shared, &max_given, &r->n, e) ||
             mt_params_parse_routing(body, &caps, &shared, e) || openai_logprobs(body, chat, r, &shared, e) ||
             (!chat && completions_unsupported(body, r->n, e)) ||
             (chat ? chat_prompt(c, body, kept_nul, r, e) : completion_prompts(c, field(body, "prompt"), kept_nul, r, e)) ||
             check_outputs(r, e);
    mt_fit_limits lim = {max_given, chat ? CHAT_DEFAULT_MAX_TOKENS : COMPLETIONS_DEFAULT_MAX_TOKENS, c->kv_positions,
                         openai_max_key(body), openai_min_key(body)};
    for (int i = 0; i < r->n_prompts && !rc; i++) {
        mt_gen_prompt *p = &r->prompts[i];
        rc = mt_gen_params_copy(&p->params, &shared) ? mt_api_fail(e, 500, "out of memory")
             : mt_params_fit(&p->params, &lim, p->n_ids, c->cfg, e) ? about_prompt(e, i, r->n_prompts > 1)
                                                                   : 0;
    }
    mt_gen_params_free(&shared);
    return rc ? -1 : 0;
}

/* A 400 when a string of the body other than its prompt ("text" of /generate, "prompt" of
 * /v1/completions, "messages" of /v1/chat/completions) holds U+0000: stop strings, names and the
 * rest are C strings, which would end at the NUL. */
static int nul_outside_prompt(const cJSON *root, mt_body_kind kind, mt_api_error *e) {
    const char *key = kind == MT_BODY_GENERATE ? "text" : kind == MT_BODY_COMPLETIONS ? "prompt" : "messages";
    char where[32];
    snprintf(where, sizeof where, "the prompt ('%s')", key);
    mt_err err;
    return mt_json_nul_only_in(root, key, "the request body", where, &err) ? mt_api_fail(e, 400, "%s", err.msg) : 0;
}

/* The request's domain label, if any, as every prompt's group (a new label gets one). */
static int domain_group(const mt_request_ctx *c, const cJSON *root, mt_gen_request *r, mt_api_error *e) {
    char *label = NULL;
    mt_err err;
    int has = mt_json_label(root, c->domain_field, MT_DOMAIN_LABEL_MAX, &label, &err);
    if (has < 0) return mt_api_fail(e, 400, "%s", err.msg);
    if (has == 0) return 0;
    int g = mt_domain_usage_group(c->domains, label, &err);
    free(label);
    if (g < 0) return mt_api_fail(e, 400, "'%s': %s", c->domain_field, err.msg);
    for (int i = 0; i < r->n_prompts; i++) r->prompts[i].params.group = g;
    return 0;
}

int mt_request_parse(const mt_request_ctx *c, mt_body_kind kind, const char *body, size_t len, mt_gen_request *r,
                     mt_api_error *e) {
    memset(r, 0, sizeof *r);
    mt_err err;
    bool kept_nul = false;
    cJSON *root = mt_json_parse_body_keep_nul(body, len, "the request body", &kept_nul, &err);
    int rc = !root                      ? mt_api_fail(e, 400, "%s", err.msg)
             : !cJSON_IsObject(root)    ? mt_api_fail(e, 400, "the request body is not a JSON object")
             : kept_nul && nul_outside_prompt(root, kind, e) ? -1
             : kind == MT_BODY_GENERATE ? generate_body(c, root, kept_nul, r, e)
                                        : openai_body(c, kind == MT_BODY_CHAT, root, kept_nul, r, e);
    if (rc == 0 && c->domain_field && c->domains) rc = domain_group(c, root, r, e);
    cJSON_Delete(root);
    if (rc) mt_gen_request_free(r);
    return rc;
}

void mt_gen_request_free(mt_gen_request *r) {
    for (int i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].ids);
        mt_gen_params_free(&r->prompts[i].params);
    }
    free(r->prompts);
    for (int i = 0; i < r->n_tool_names; i++) free(r->tool_names[i]);
    free(r->tool_names);
    memset(r, 0, sizeof *r);
}

/* A seed of its own for sample k > 0 of a prompt (splitmix64 of the prompt's seed and k): sample 0 is
 * the prompt alone with its seed, wherever it stands in a list. */
static uint64_t output_seed(uint64_t seed, int k) {
    if (k == 0) return seed;
    uint64_t x = seed + (uint64_t)k * 0x9E3779B97F4A7C15ull;
    x = (x ^ x >> 30) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ x >> 27) * 0x94D049BB133111EBull;
    return x ^ x >> 31;
}

int mt_gen_request_output_params(const mt_gen_request *r, int k, mt_gen_params *out) {
    if (mt_gen_params_copy(out, &r->prompts[k / r->n].params)) return -1;
    out->sampling.seed = output_seed(out->sampling.seed, k % r->n); /* sample k % n of its prompt */
    return 0;
}

void mt_gen_request_output_name(const mt_gen_request *r, int k, char *out) {
    const char *rid = r->prompts[k / r->n].rid;
    if (!r->list) snprintf(out, MT_JOB_NAME_LEN, "%s", r->rid);
    else if (rid[0] && r->n == 1) snprintf(out, MT_JOB_NAME_LEN, "%s", rid);
    else if (rid[0]) mt_job_name_numbered(out, rid, k % r->n);
    else if (r->rid[0]) mt_job_name_numbered(out, r->rid, k);
    else out[0] = 0;
}
