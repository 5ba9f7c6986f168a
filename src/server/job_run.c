#include "server/job_run.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "server/server_internal.h"
#include "util/base64.h"

#define WAIT_POLL_MS 100

_Static_assert(MT_REQUEST_RID_LEN <= MT_JOB_NAME_LEN, "a request's rid must fit a job's name");

mt_gen_job *mt_job_start(mt_server *s, int32_t *prompt, int n_prompt, mt_gen_params *p, const char *rid,
                         const char *id_prefix, mt_api_error *e) {
    if (atomic_load(&s->draining)) {
        free(prompt);
        mt_gen_params_free(p);
        mt_api_fail(e, 503, "the server is shutting down");
        return NULL;
    }
    int64_t id = atomic_fetch_add(&s->next_job_id, 1);
    bool text = s->b.tokenizer != NULL;
    bool skip_special = p->skip_special_tokens;
    mt_gen_job *j = mt_gen_job_new(id, prompt, n_prompt, p);
    if (!j) {
        free(prompt);
        mt_gen_params_free(p);
        mt_api_fail(e, 500, "out of memory");
        return NULL;
    }
    if (text) j->detok = mt_detok_stream_new(s->b.tokenizer, skip_special);
    if (rid && rid[0]) snprintf(j->name, sizeof j->name, "%s", rid);
    else mt_server_response_id(s, id, id_prefix, j->name, sizeof j->name);
    mt_engine_loop_submit(s->b.loop, j);
    pthread_mutex_lock(&j->mu);
    while (j->state == MT_JOB_QUEUED) mt_gen_job_wait_locked(j, j->version, WAIT_POLL_MS);
    bool rejected = j->state == MT_JOB_REJECTED;
    if (rejected) mt_api_fail(e, j->rejected_busy ? 503 : 400, "%s", j->error);
    pthread_mutex_unlock(&j->mu);
    if (rejected) {
        mt_gen_job_unref(j);
        return NULL;
    }
    if (s->b.domains) mt_domain_usage_count_request(s->b.domains, j->params.group);
    return j;
}

bool mt_job_wait(mt_server *s, mt_gen_job *j, int client_fd) {
    bool cancelled = false;
    pthread_mutex_lock(&j->mu);
    while (j->state != MT_JOB_FINISHED) {
        mt_gen_job_wait_locked(j, j->version, WAIT_POLL_MS);
        if (j->state == MT_JOB_FINISHED || cancelled) continue;
        pthread_mutex_unlock(&j->mu);
        if (mt_http_client_gone(client_fd)) {
            mt_engine_loop_cancel(s->b.loop, j);
            cancelled = true;
        }
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return !cancelled;
}

int mt_reply_job(mt_http_request *rq, mt_gen_job *j, bool stream, mt_sse_format format, mt_job_json whole, void *ctx) {
    if (stream) return mt_reply_sse(rq, j, format, ctx, free);
    bool client_there = mt_job_wait(rq->server, j, rq->client_fd);
    mt_api_error e;
    int status;
    pthread_mutex_lock(&j->mu);
    if (!client_there) status = mt_reply_errorf(rq, 499, "the client closed the connection");
    else if (mt_job_failed(j, &e)) status = mt_reply_error(rq, &e);
    else status = mt_reply_json(rq, 200, whole(ctx, j));
    pthread_mutex_unlock(&j->mu);
    mt_gen_job_unref(j);
    free(ctx);
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

cJSON *mt_job_logprob_json(const mt_gen_job *j, int i) {
    float lp = j->logprobs[i];
    return isfinite(lp) ? cJSON_CreateNumber(lp) : isinf(lp) ? cJSON_CreateNumber(-FLT_MAX) : cJSON_CreateNull();
}
