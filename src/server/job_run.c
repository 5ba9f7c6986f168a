#include "server/job_run.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"
#include "util/base64.h"

#define WAIT_POLL_MS 100

_Static_assert(MT_REQUEST_RID_LEN <= MT_JOB_NAME_LEN, "a request's rid must fit a job's name");

void mt_job_set_free(mt_job_set *set) {
    for (int k = 0; k < set->n; k++) mt_gen_job_unref(set->jobs[k]);
    free(set->jobs);
    mt_job_signal_unref(set->signal);
    memset(set, 0, sizeof *set);
}

/* Job k of r, named, with the set's signal; NULL when out of memory. */
static mt_gen_job *make_job(mt_server *s, const mt_gen_request *r, int k, int64_t id, const char *name,
                            mt_job_signal *signal) {
    const mt_gen_prompt *p = &r->prompts[k / r->n];
    mt_gen_params params;
    int32_t *ids = malloc((size_t)p->n_ids * sizeof *ids);
    if (!ids || mt_gen_request_output_params(r, k, &params)) {
        free(ids);
        return NULL;
    }
    memcpy(ids, p->ids, (size_t)p->n_ids * sizeof *ids);
    mt_gen_job *j = mt_gen_job_new(id, ids, p->n_ids, &params); /* takes ids and params */
    if (!j) {
        free(ids);
        mt_gen_params_free(&params);
        return NULL;
    }
    if (s->b.tokenizer && mt_gen_job_attach_text(j, s->b.tokenizer)) {
        mt_gen_job_unref(j);
        return NULL;
    }
    snprintf(j->name, sizeof j->name, "%s", name);
    mt_job_signal_ref(signal);
    j->signal = signal;
    return j;
}

/* Waits (j locked) until the engine thread took j in or refused it; false when the client left first
 * (a job held back by a pause or a weight update may wait long). */
static bool wait_accepted_locked(mt_gen_job *j, int client_fd) {
    while (j->state == MT_JOB_QUEUED) {
        mt_gen_job_wait_locked(j, j->version, WAIT_POLL_MS);
        if (j->state != MT_JOB_QUEUED) break;
        pthread_mutex_unlock(&j->mu);
        bool gone = mt_http_client_gone(client_fd);
        pthread_mutex_lock(&j->mu);
        if (gone && j->state == MT_JOB_QUEUED) return false;
    }
    return true;
}

int mt_jobs_start(mt_server *s, const mt_gen_request *r, char (*names)[MT_JOB_NAME_LEN], const char *id_prefix,
                  int client_fd, mt_job_set *set, mt_api_error *e) {
    memset(set, 0, sizeof *set);
    if (atomic_load(&s->draining)) return mt_api_fail(e, 503, "the server is shutting down");
    int n = mt_gen_request_outputs(r);
    int64_t first = atomic_fetch_add(&s->next_job_id, n);
    mt_server_response_id(s, first, id_prefix, set->base, sizeof set->base);
    set->signal = mt_job_signal_new();
    set->jobs = calloc((size_t)n, sizeof *set->jobs);
    if (!set->signal || !set->jobs) {
        mt_job_set_free(set);
        return mt_api_fail(e, 500, "out of memory");
    }
    for (int k = 0; k < n; k++) {
        char name[MT_JOB_NAME_LEN];
        if (names && names[k][0]) snprintf(name, sizeof name, "%s", names[k]);
        else if (names) mt_server_response_id(s, first + k, "", name, sizeof name);
        else if (n == 1) snprintf(name, sizeof name, "%s", set->base);
        else mt_job_name_numbered(name, set->base, k);
        if (!(set->jobs[k] = make_job(s, r, k, first + k, name, set->signal))) {
            mt_job_set_free(set);
            return mt_api_fail(e, 500, "out of memory");
        }
        set->jobs[k]->name_from_client = names && names[k][0];
        set->n = k + 1;
    }
    for (int k = 0; k < n; k++) mt_engine_loop_submit(s->b.loop, set->jobs[k]);
    bool refused = false;
    for (int k = 0; k < n; k++) {
        mt_gen_job *j = set->jobs[k];
        pthread_mutex_lock(&j->mu);
        if (!wait_accepted_locked(j, client_fd)) {
            pthread_mutex_unlock(&j->mu);
            for (int i = 0; i < n; i++) mt_engine_loop_cancel(s->b.loop, set->jobs[i]);
            mt_job_set_free(set);
            return mt_api_fail(e, 499, "the client closed the connection");
        }
        if (j->state == MT_JOB_REJECTED && !refused) {
            refused = true;
            if (r->n_prompts > 1 && !j->rejected_busy) mt_api_fail(e, 400, "prompt %d: %s", k / r->n, j->error);
            else mt_api_fail(e, j->rejected_busy ? 503 : 400, "%s", j->error);
        }
        pthread_mutex_unlock(&j->mu);
    }
    if (!refused) {
        if (s->b.domains && !r->prompts[0].params.probe)
            mt_domain_usage_count_request(s->b.domains, r->prompts[0].params.group);
        return 0;
    }
    for (int k = 0; k < n; k++) mt_engine_loop_cancel(s->b.loop, set->jobs[k]);
    mt_job_set_free(set);
    return -1;
}

bool mt_jobs_wait(mt_server *s, const mt_job_set *set, int client_fd) {
    bool cancelled = false;
    for (int k = 0; k < set->n; k++) {
        mt_gen_job *j = set->jobs[k];
        pthread_mutex_lock(&j->mu);
        while (j->state != MT_JOB_FINISHED) {
            mt_gen_job_wait_locked(j, j->version, WAIT_POLL_MS);
            if (j->state == MT_JOB_FINISHED || cancelled) continue;
            pthread_mutex_unlock(&j->mu);
            if (mt_http_client_gone(client_fd)) {
                for (int i = k; i < set->n; i++) mt_engine_loop_cancel(s->b.loop, set->jobs[i]);
                cancelled = true;
            }
            pthread_mutex_lock(&j->mu);
        }
        pthread_mutex_unlock(&j->mu);
    }
    return !cancelled;
}

int mt_reply_jobs(mt_http_request *rq, mt_job_set *set, bool stream, mt_sse_format format, mt_sse_end end,
                  mt_job_json whole, void *ctx, void (*free_ctx)(void *)) {
    if (!free_ctx) free_ctx = free;
    if (stream) {
        int rc = mt_reply_sse(rq, set->jobs, set->n, set->signal, format, end, ctx, free_ctx);
        memset(set, 0, sizeof *set); /* taken over by the stream */
        return rc;
    }
    bool client_there = mt_jobs_wait(rq->server, set, rq->client_fd);
    mt_api_error e;
    int status = 0;
    if (!client_there) status = mt_reply_errorf(rq, 499, "the client closed the connection");
    for (int k = 0; k < set->n && !status; k++) { /* finished: the engine thread writes them no more */
        if (mt_job_failed(set->jobs[k], &e)) status = mt_reply_error(rq, &e);
    }
    if (!status) status = mt_reply_json(rq, 200, whole(ctx, set->jobs, set->n));
    mt_job_set_free(set);
    free_ctx(ctx);
    return status;
}

bool mt_job_failed(const mt_gen_job *j, mt_api_error *e) {
    if (!j->error[0]) return false;
    mt_api_fail(e, 500, "%s", j->error);
    return true;
}

void mt_job_add_routing(const mt_gen_job *j, const mt_config *cfg, cJSON *obj, const char *prefix, bool flat) {
    size_t n = (size_t)j->routing_rows * cfg->num_hidden_layers * cfg->top_k;
    char *b64 = j->routing ? mt_base64_encode(j->routing, n * mt_routing_dtype_size(j->params.routing_dtype)) : NULL;
    cJSON *shape = cJSON_CreateArray();
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(j->routing_rows));
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(cfg->num_hidden_layers));
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(cfg->top_k));
    const char *dtype = mt_routing_dtype_name(j->params.routing_dtype);
    if (flat) {
        char key[64];
        cJSON_AddStringToObject(obj, prefix, b64 ? b64 : "");
        snprintf(key, sizeof key, "%s_shape", prefix);
        cJSON_AddItemToObject(obj, key, shape);
        snprintf(key, sizeof key, "%s_dtype", prefix);
        cJSON_AddStringToObject(obj, key, dtype);
    } else {
        cJSON *r = cJSON_AddObjectToObject(obj, prefix);
        cJSON_AddStringToObject(r, "data", b64 ? b64 : "");
        cJSON_AddItemToObject(r, "shape", shape);
        cJSON_AddStringToObject(r, "dtype", dtype);
    }
    free(b64);
}

cJSON *mt_job_finish_sglang(const mt_gen_job *j) {
    cJSON *r = cJSON_CreateObject();
    switch (j->finish) {
    case MT_JOB_LENGTH:
        cJSON_AddStringToObject(r, "type", "length");
        cJSON_AddNumberToObject(r, "length", j->params.max_new_tokens);
        break;
    case MT_JOB_STOP_TOKEN:
        cJSON_AddStringToObject(r, "type", "stop");
        cJSON_AddNumberToObject(r, "matched", j->matched_token);
        break;
    case MT_JOB_STOP_STRING:
        cJSON_AddStringToObject(r, "type", "stop");
        cJSON_AddStringToObject(r, "matched", j->params.stop_strings[j->matched_string]);
        break;
    default:
        cJSON_AddStringToObject(r, "type", "abort");
        cJSON_AddStringToObject(r, "message", j->error[0] ? j->error : "cancelled");
        break;
    }
    return r;
}

const char *mt_job_finish_openai(const mt_gen_job *j) {
    switch (j->finish) {
    case MT_JOB_LENGTH: return "length";
    case MT_JOB_STOP_TOKEN:
    case MT_JOB_STOP_STRING: return "stop";
    default: return "abort";
    }
}

cJSON *mt_logprob_json(float lp) {
    return isfinite(lp) ? cJSON_CreateNumber(lp) : isinf(lp) ? cJSON_CreateNumber(-FLT_MAX) : cJSON_CreateNull();
}

cJSON *mt_job_logprob_json(const mt_gen_job *j, int i) { return mt_logprob_json(j->logprobs[i]); }

char *mt_token_piece(const mt_tokenizer *tok, int32_t id, size_t *len) {
    char *text = NULL;
    mt_err err;
    *len = 0;
    if (mt_tokenizer_decode(tok, &id, 1, 0, &text, len, &err)) *len = 0;
    char *piece = malloc(*len + 1);
    if (piece) {
        if (*len) memcpy(piece, text, *len);
        piece[*len] = 0;
    } else {
        *len = 0;
    }
    free(text);
    return piece;
}
