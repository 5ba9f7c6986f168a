/* POST /generate, SGLang's native generation endpoint (SPEC §5). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/job_run.h"
#include "server/request_params.h"
#include "server/server_internal.h"

#define SGLANG_DEFAULT_MAX_NEW_TOKENS 128

typedef struct generate_reply {
    const mt_config *cfg;
    bool with_text;
    char id[80];
    int emitted;          /* output tokens already streamed */
} generate_reply;

/* {"text", "output_ids", "meta_info"}; the finish reason and the routing once the job finished. */
static cJSON *generate_json(const generate_reply *g, const mt_gen_job *j, bool final) {
    cJSON *root = cJSON_CreateObject();
    if (g->with_text) {
        char *text = strndup(j->text.data ? j->text.data : "", j->text_stable);
        cJSON_AddStringToObject(root, "text", text ? text : "");
        free(text);
    }
    cJSON_AddItemToObject(root, "output_ids", cJSON_CreateIntArray(j->output, j->n_output));
    cJSON *meta = cJSON_AddObjectToObject(root, "meta_info");
    cJSON_AddStringToObject(meta, "id", g->id);
    cJSON_AddNumberToObject(meta, "prompt_tokens", j->n_prompt);
    cJSON_AddNumberToObject(meta, "completion_tokens", j->n_output);
    cJSON_AddNumberToObject(meta, "cached_tokens", j->n_cached);
    if (final) {
        cJSON_AddItemToObject(meta, "finish_reason", mt_job_finish_sglang(j));
        cJSON_AddNumberToObject(meta, "e2e_latency", j->t_finished - j->t_arrival);
        if (j->params.return_routing) mt_job_add_routing(j, g->cfg, meta, "routed_experts", true);
    } else {
        cJSON_AddNullToObject(meta, "finish_reason");
    }
    return root;
}

static cJSON *whole_response(void *ctx, const mt_gen_job *j) { return generate_json(ctx, j, true); }

static void format_event(void *ctx, mt_gen_job *j, bool final, mt_strbuf *out) {
    generate_reply *g = ctx;
    if (!final && j->n_output == g->emitted) return;
    g->emitted = j->n_output;
    mt_sse_event(out, generate_json(g, j, final));
}

int mt_api_generate(mt_http_request *rq) {
    mt_server *s = rq->server;
    const mt_config *cfg = &s->b.model->cfg;
    mt_api_error e;
    mt_gen_params p = {0};
    int32_t *prompt = NULL;
    int n_prompt = 0;
    bool max_given = false, stream = false;
    cJSON *body = cJSON_ParseWithLength(rq->body, rq->body_len);
    if (!body || !cJSON_IsObject(body)) {
        cJSON_Delete(body);
        return mt_reply_errorf(rq, 400, "the request body is not a JSON object");
    }
    const cJSON *text = mt_params_field(body, "text"), *ids = mt_params_field(body, "input_ids"), *rid = mt_params_field(body, "rid");
    const cJSON *logprob = mt_params_field(body, "return_logprob");
    mt_param_caps caps = {cfg, s->b.tokenizer != NULL, s->b.enable_return_routing};
    generate_reply *g = calloc(1, sizeof *g);
    if (!g) {
        mt_api_fail(&e, 500, "out of memory");
        goto fail;
    }
    if (!!text == !!ids) {
        mt_api_fail(&e, 400, "give exactly one of 'text' or 'input_ids'");
        goto fail;
    }
    if ((text && cJSON_IsArray(text)) || (ids && cJSON_IsArray(ids) && cJSON_IsArray(cJSON_GetArrayItem(ids, 0)))) {
        mt_api_fail(&e, 400, "batched requests (a list of prompts) are not supported; send one request per prompt");
        goto fail;
    }
    if (text && !cJSON_IsString(text)) {
        mt_api_fail(&e, 400, "'text' must be a string");
        goto fail;
    }
    if (mt_params_bool(body, "stream", &stream, &e) < 0) goto fail;
    if (logprob && !cJSON_IsFalse(logprob)) {
        mt_api_fail(&e, 400, "'return_logprob' is not supported by moetrace");
        goto fail;
    }
    if (rid && (!cJSON_IsString(rid) || strlen(rid->valuestring) >= sizeof g->id)) {
        mt_api_fail(&e, 400, "'rid' must be a string of at most %zu characters", sizeof g->id - 1);
        goto fail;
    }
    if (mt_params_parse_sampling(mt_params_field(body, "sampling_params"), MT_PARAMS_SGLANG, &caps, &p, &max_given, &e) ||
        mt_params_parse_routing(body, &caps, &p, &e))
        goto fail;
    if (text ? mt_params_encode(s->b.tokenizer, text->valuestring, true, &prompt, &n_prompt, &e)
             : mt_params_parse_ids(ids, "input_ids", &prompt, &n_prompt, &e))
        goto fail;
    if (mt_params_fit(&p, max_given, SGLANG_DEFAULT_MAX_NEW_TOKENS, n_prompt, cfg, &e)) goto fail;
    g->cfg = cfg;
    g->with_text = s->b.tokenizer != NULL;
    if (rid) snprintf(g->id, sizeof g->id, "%s", rid->valuestring);
    cJSON_Delete(body);
    body = NULL;
    mt_gen_job *j = mt_job_start(s, prompt, n_prompt, &p, &e); /* takes prompt and p */
    prompt = NULL;
    if (!j) goto fail;
    if (!g->id[0]) mt_server_response_id(s, j->id, "", g->id, sizeof g->id);
    return mt_reply_job(rq, j, stream, format_event, whole_response, g);
fail:
    cJSON_Delete(body);
    free(prompt);
    mt_gen_params_free(&p);
    free(g);
    return mt_reply_error(rq, &e);
}
