/* POST /generate, SGLang's native generation endpoint (SPEC §5). A request of several outputs (a
 * list of prompts, or "n" > 1) is answered as SGLang answers it: a JSON list of the outputs'
 * objects in output order, or when streamed, each output's events carrying its "index". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server/job_run.h"
#include "server/request_body.h"
#include "server/server_internal.h"
#include "util/json_util.h"

typedef struct generate_reply {
    const mt_config *cfg;
    const mt_tokenizer *tokenizer;
    bool with_text;
    bool list;            /* answered with a list; streamed events carry "index" */
    int emitted[];        /* [outputs] output tokens already streamed */
} generate_reply;

/* SGLang's [logprob, token id, text] triple; the text with return_text_in_logprobs, else null. */
static cJSON *triple(const generate_reply *g, const mt_gen_job *j, float lp, int32_t id) {
    cJSON *t = cJSON_CreateArray();
    cJSON_AddItemToArray(t, mt_logprob_json(lp));
    cJSON_AddItemToArray(t, cJSON_CreateNumber(id));
    size_t len;
    char *piece = j->params.text_in_logprobs ? mt_token_piece(g->tokenizer, id, &len) : NULL;
    cJSON_AddItemToArray(t, piece ? cJSON_CreateString(piece) : cJSON_CreateNull());
    free(piece);
    return t;
}

/* A token's alternatives: triples, most likely first (null when they are not known). */
static cJSON *top_list(const generate_reply *g, const mt_gen_job *j, const int32_t *ids, const float *lps, bool known) {
    if (!known) return cJSON_CreateNull();
    cJSON *list = cJSON_CreateArray();
    for (int k = 0; k < j->n_top && ids[k] >= 0; k++) cJSON_AddItemToArray(list, triple(g, j, lps[k], ids[k]));
    return list;
}

/* With return_logprob: input_token_logprobs (the prompt from logprob_start_len, default its last
 * token; the first listed without a value, as SGLang lists it), output_token_logprobs, with
 * token_ids_logprob input_token_ids_logprobs and output_token_ids_logprobs (the named tokens at each
 * position), and with top_logprobs_num input_top_logprobs and output_top_logprobs. */
static void add_logprobs(const generate_reply *g, const mt_gen_job *j, cJSON *meta) {
    int start = j->params.logprob_start >= 0 ? j->params.logprob_start : j->n_prompt - 1;
    cJSON *in = cJSON_AddArrayToObject(meta, "input_token_logprobs");
    for (int p = start; p < j->n_prompt; p++)
        cJSON_AddItemToArray(in, triple(g, j, p > start ? j->prompt_logprobs[p] : NAN, j->prompt[p]));
    cJSON *out = cJSON_AddArrayToObject(meta, "output_token_logprobs");
    for (int i = 0; i < j->n_output; i++) cJSON_AddItemToArray(out, triple(g, j, j->logprobs[i], j->output[i]));
    if (j->n_ids > 0) {   /* token_ids_logprob: the named tokens at every listed position */
        const int32_t *named = j->params.logprob_ids;
        cJSON *in_ids = cJSON_AddArrayToObject(meta, "input_token_ids_logprobs");
        for (int p = start; p < j->n_prompt; p++) {
            bool known = p > start && j->prompt_scored && j->prompt_ids_logprobs;
            cJSON *list = known ? cJSON_CreateArray() : cJSON_CreateNull();
            for (int k = 0; known && k < j->n_ids; k++)
                cJSON_AddItemToArray(list, triple(g, j, j->prompt_ids_logprobs[(size_t)p * j->n_ids + k], named[k]));
            cJSON_AddItemToArray(in_ids, list);
        }
        cJSON *out_ids = cJSON_AddArrayToObject(meta, "output_token_ids_logprobs");
        for (int i = 0; i < j->n_output; i++) {
            cJSON *list = cJSON_CreateArray();
            for (int k = 0; k < j->n_ids; k++)
                cJSON_AddItemToArray(list, triple(g, j, j->ids_logprobs[(size_t)i * j->n_ids + k], named[k]));
            cJSON_AddItemToArray(out_ids, list);
        }
    }
    if (j->n_top == 0) return;
    cJSON *in_top = cJSON_AddArrayToObject(meta, "input_top_logprobs");
    for (int p = start; p < j->n_prompt; p++) {
        bool known = p > start && j->prompt_scored && j->prompt_top_ids;
        size_t at = known ? (size_t)p * j->n_top : 0;
        cJSON_AddItemToArray(in_top, top_list(g, j, known ? j->prompt_top_ids + at : NULL,
                                              known ? j->prompt_top_logprobs + at : NULL, known));
    }
    cJSON *out_top = cJSON_AddArrayToObject(meta, "output_top_logprobs");
    for (int i = 0; i < j->n_output; i++) {
        size_t at = (size_t)i * j->n_top;
        cJSON_AddItemToArray(out_top, top_list(g, j, j->top_ids + at, j->top_logprobs + at, true));
    }
}

/* Whether a finished job's routing has the rows SGLang's clients reshape it to, P + G - 1 less
 * routed_experts_start_len (P with max_new_tokens 0). Only an output aborted before it forwarded that
 * much has fewer (queued, or in its prompt's prefill); its routing is left out of meta_info, as SGLang
 * leaves it out for a request aborted before it ran: slime and AReaL would fail reshaping it. */
static bool routing_complete(const mt_gen_job *j) {
    int rows = j->n_prompt + j->n_output - (j->n_output > 0 || j->params.max_new_tokens > 0);
    return j->finish != MT_JOB_ABORTED || j->routing_rows >= rows - j->params.routing_start;
}

/* The routing and, as slime reads it back, the routed_experts_start_len it starts at. */
static void add_routing(const generate_reply *g, const mt_gen_job *j, cJSON *meta) {
    if (!routing_complete(j)) return;
    mt_job_add_routing(j, g->cfg, meta, "routed_experts", true);
    cJSON_AddNumberToObject(meta, "routed_experts_start_len", j->params.routing_start);
}

/* {"text", "output_ids", "meta_info"}; the finish reason and the routing once the job finished. */
static cJSON *generate_json(const generate_reply *g, const mt_gen_job *j, bool final) {
    cJSON *root = cJSON_CreateObject();
    if (g->with_text) {
        cJSON_AddItemToObject(root, "text", mt_json_text(j->text.data ? j->text.data : "", j->text_stable));
    }
    cJSON_AddItemToObject(root, "output_ids", cJSON_CreateIntArray(j->output, j->n_output));
    cJSON *meta = cJSON_AddObjectToObject(root, "meta_info");
    cJSON_AddStringToObject(meta, "id", j->name);
    cJSON_AddNumberToObject(meta, "prompt_tokens", j->n_prompt);
    cJSON_AddNumberToObject(meta, "completion_tokens", j->n_output);
    cJSON_AddNumberToObject(meta, "cached_tokens", j->n_cached);
    cJSON_AddStringToObject(meta, "weight_version", j->weight_version);
    if (j->logprobs) add_logprobs(g, j, meta);
    if (final) {
        cJSON_AddItemToObject(meta, "finish_reason", mt_job_finish_sglang(j));
        cJSON_AddNumberToObject(meta, "e2e_latency", j->t_finished - j->t_arrival);
        if (j->params.return_routing) add_routing(g, j, meta);
    } else {
        cJSON_AddNullToObject(meta, "finish_reason");
    }
    return root;
}

static cJSON *whole_response(void *ctx, mt_gen_job *const *jobs, int n) {
    const generate_reply *g = ctx;
    if (!g->list) return generate_json(g, jobs[0], true);
    cJSON *list = cJSON_CreateArray();
    for (int k = 0; k < n; k++) cJSON_AddItemToArray(list, generate_json(g, jobs[k], true));
    return list;
}

static void format_event(void *ctx, int k, mt_gen_job *j, bool final, mt_strbuf *out) {
    generate_reply *g = ctx;
    if (!final && j->n_output == g->emitted[k]) return;
    g->emitted[k] = j->n_output;
    cJSON *event = generate_json(g, j, final);
    if (g->list) cJSON_AddNumberToObject(event, "index", k);
    mt_sse_event(out, event);
}

int mt_api_generate(mt_http_request *rq) {
    mt_server *s = rq->server;
    mt_api_error e;
    mt_gen_request r;
    mt_request_ctx c;
    mt_server_request_ctx(s, &c);
    if (mt_request_parse(&c, MT_BODY_GENERATE, rq->body, rq->body_len, &r, &e)) return mt_reply_refused(rq, &e);
    int outputs = mt_gen_request_outputs(&r);
    generate_reply *g = calloc(1, sizeof *g + (size_t)outputs * sizeof *g->emitted);
    char (*names)[MT_JOB_NAME_LEN] = calloc((size_t)outputs, sizeof *names);
    if (!g || !names) {
        free(g);
        free(names);
        mt_gen_request_free(&r);
        return mt_reply_errorf(rq, 500, "out of memory");
    }
    g->cfg = c.cfg;
    g->tokenizer = c.tokenizer;
    g->with_text = c.tokenizer != NULL;
    g->list = r.list;
    for (int k = 0; k < outputs; k++) mt_gen_request_output_name(&r, k, names[k]);
    mt_job_set set;
    int rc = mt_jobs_start(s, &r, names, "", rq->client_fd, &set, &e);
    bool stream = r.stream;
    free(names);
    mt_gen_request_free(&r);
    if (rc) {
        free(g);
        return mt_reply_error(rq, &e);
    }
    return mt_reply_jobs(rq, &set, stream, format_event, NULL, whole_response, g, NULL);
}
