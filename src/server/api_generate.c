/* POST /generate, SGLang's native generation endpoint (SPEC §5). */
#include <stdlib.h>
#include <string.h>

#include "server/job_run.h"
#include "server/request_body.h"
#include "server/server_internal.h"

typedef struct generate_reply {
    const mt_config *cfg;
    bool with_text;
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
    cJSON_AddStringToObject(meta, "id", j->name);
    cJSON_AddNumberToObject(meta, "prompt_tokens", j->n_prompt);
    cJSON_AddNumberToObject(meta, "completion_tokens", j->n_output);
    cJSON_AddNumberToObject(meta, "cached_tokens", j->n_cached);
    if (j->logprobs) {   /* SGLang's [logprob, token id, text] triples; the text is not produced */
        cJSON *lps = cJSON_AddArrayToObject(meta, "output_token_logprobs");
        for (int i = 0; i < j->n_output; i++) {
            cJSON *t = cJSON_CreateArray();
            cJSON_AddItemToArray(t, mt_job_logprob_json(j, i));
            cJSON_AddItemToArray(t, cJSON_CreateNumber(j->output[i]));
            cJSON_AddItemToArray(t, cJSON_CreateNull());
            cJSON_AddItemToArray(lps, t);
        }
    }
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
    mt_api_error e;
    mt_gen_request r;
    mt_request_ctx c;
    mt_server_request_ctx(s, &c);
    if (mt_request_parse(&c, MT_BODY_GENERATE, rq->body, rq->body_len, &r, &e)) return mt_reply_error(rq, &e);
    generate_reply *g = calloc(1, sizeof *g);
    if (!g) {
        mt_gen_request_free(&r);
        return mt_reply_errorf(rq, 500, "out of memory");
    }
    g->cfg = c.cfg;
    g->with_text = c.tokenizer != NULL;
    /* takes prompt and params; the job's name is the rid, else a response id */
    mt_gen_job *j = mt_job_start(s, r.prompt, r.n_prompt, &r.params, r.rid, "", &e);
    if (!j) {
        free(g);
        return mt_reply_error(rq, &e);
    }
    return mt_reply_job(rq, j, r.stream, format_event, whole_response, g);
}
