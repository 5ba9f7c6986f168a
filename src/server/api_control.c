/* Engine control endpoints, as SGLang spells them, for RL loops: POST /update_weights_from_disk (a
 * checkpoint of the same shape replaces the served weights in place; the prefix cache is emptied),
 * GET|POST /flush_cache, GET /get_weight_version, POST /abort_request (cancel requests by rid, or
 * all, e.g. the rollouts left when a step has enough), GET|POST /health_generate (the engine
 * generates a token: the probe slime and others poll), and POST /pause_generation and
 * /continue_generation (interruptible rollouts: generation stops around a weight update; the running
 * requests are aborted, retracted or paused in place, new ones wait). Expert placement switches are
 * api_placement.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/job_run.h"
#include "server/request_body.h"
#include "server/request_params.h"
#include "server/server_internal.h"
#include "util/json_util.h"

#define field mt_params_field

/* {"success", "message", "num_paused_requests"} with 200 on success, else 400 (SGLang's answer). */
static int update_answer(mt_http_request *rq, bool ok, const char *message, int held) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "success", ok);
    cJSON_AddStringToObject(o, "message", message);
    cJSON_AddNumberToObject(o, "num_paused_requests", held);
    return mt_reply_json(rq, ok ? 200 : 400, o);
}

int mt_api_update_weights(mt_http_request *rq) {
    mt_server *s = rq->server;
    mt_err err;
    if (atomic_load(&s->draining)) return mt_reply_errorf(rq, 503, "the server is shutting down");
    cJSON *body = mt_json_parse_body(rq->body, rq->body_len, "the request body", &err);
    if (!body) return mt_reply_errorf(rq, 400, "%s", err.msg);
    const cJSON *path = field(body, "model_path"), *format = field(body, "load_format");
    const cJSON *version = field(body, "weight_version");
    mt_api_error e = {0};
    bool abort_live = false;
    int rc = 0;
    if (!cJSON_IsObject(body)) rc = mt_api_fail(&e, 400, "the request body is not a JSON object");
    else if (!cJSON_IsString(path) || !path->valuestring[0])
        rc = mt_api_fail(&e, 400, "'model_path' must be the path of a checkpoint folder on the server");
    else if (format && !(cJSON_IsString(format) && !strcmp(format->valuestring, "auto")))
        rc = mt_api_fail(&e, 400, "'load_format' must be \"auto\" (safetensors) or absent");
    else if (version && (!cJSON_IsString(version) || strlen(version->valuestring) >= MT_WEIGHT_VERSION_LEN))
        rc = mt_api_fail(&e, 400, "'weight_version' must be a string of at most %d bytes", MT_WEIGHT_VERSION_LEN - 1);
    else if (mt_params_bool(body, "abort_all_requests", &abort_live, &e) < 0)
        rc = -1;
    if (rc) {
        cJSON_Delete(body);
        return mt_reply_error(rq, &e);
    }
    int held = 0;
    mt_log("update_weights_from_disk: %s", path->valuestring);
    rc = mt_engine_loop_update_weights(s->b.loop, path->valuestring, abort_live, version ? version->valuestring : NULL,
                                       &held, &err);
    char message[MT_ERR_LEN + 64];
    if (rc) snprintf(message, sizeof message, "Failed to update weights: %s", err.msg);
    else snprintf(message, sizeof message, "Succeeded to update model weights.");
    cJSON_Delete(body);
    return update_answer(rq, rc == 0, message, held);
}

int mt_api_flush_cache(mt_http_request *rq) {
    mt_err err;
    int blocks = mt_engine_loop_flush_cache(rq->server->b.loop, &err);
    if (blocks < 0) return mt_reply_errorf(rq, 503, "%s", err.msg);
    char text[128];
    int n = snprintf(text, sizeof text, "Cache flushed.\n%d cached blocks dropped.\n", blocks);
    return mt_reply(rq, 200, "text/plain; charset=utf-8", text, (size_t)n);
}

int mt_api_weight_version(mt_http_request *rq) {
    char version[MT_WEIGHT_VERSION_LEN];
    mt_engine_loop_weight_version(rq->server->b.loop, version, sizeof version);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "weight_version", version);
    return mt_reply_json(rq, 200, o);
}

int mt_api_abort_request(mt_http_request *rq) {
    mt_err err;
    cJSON *body = mt_json_parse_body(rq->body, rq->body_len, "the request body", &err);
    if (!body) return mt_reply_errorf(rq, 400, "%s", err.msg);
    const cJSON *rid = field(body, "rid");
    bool all = false;
    mt_api_error e = {0};
    int rc = !cJSON_IsObject(body)                          ? mt_api_fail(&e, 400, "the request body is not a JSON object")
             : mt_params_bool(body, "abort_all", &all, &e) < 0 ? -1
             : rid && (!cJSON_IsString(rid) || !rid->valuestring[0])
                 ? mt_api_fail(&e, 400, "'rid' must be a non-empty string")
             : !rid && !all ? mt_api_fail(&e, 400, "give the 'rid' of the request to abort, or \"abort_all\": true")
                            : 0;
    if (rc) {
        cJSON_Delete(body);
        return mt_reply_error(rq, &e);
    }
    int n = mt_engine_loop_abort(rq->server->b.loop, all ? NULL : rid->valuestring, &err);
    cJSON_Delete(body);
    if (n < 0) return mt_reply_errorf(rq, 503, "%s", err.msg);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "aborted", n);
    return mt_reply_json(rq, 200, o);
}

/* GET|POST /health_generate, SGLang's deeper health check: one token generated from a one-token
 * prompt through the engine's queue, so a stuck or failed engine shows. 200 with an empty body, else
 * 503 with the reason (draining, a failed engine, the probe cancelled). */
int mt_api_health_generate(mt_http_request *rq) {
    static const char probe[] = "{\"input_ids\": [0], \"sampling_params\": {\"max_new_tokens\": 1, \"temperature\": 0}}";
    mt_server *s = rq->server;
    if (atomic_load(&s->draining)) return mt_reply_errorf(rq, 503, "the server is shutting down");
    /* SGLang's probe waits behind the pause and answers 503 after its timeout: the same verdict now */
    if (mt_engine_loop_paused(s->b.loop))
        return mt_reply_errorf(rq, 503, "generation is paused (/continue_generation resumes it)");
    mt_request_ctx c;
    mt_server_request_ctx(s, &c);
    mt_gen_request r;
    mt_api_error e;
    if (mt_request_parse(&c, MT_BODY_GENERATE, probe, sizeof probe - 1, &r, &e)) return mt_reply_error(rq, &e);
    r.prompts[0].params.probe = true; /* no per_token row, no request of a domain */
    mt_job_set set;
    int rc = mt_jobs_start(s, &r, NULL, "health-", rq->client_fd, &set, &e);
    mt_gen_request_free(&r);
    if (rc) return mt_reply_errorf(rq, 503, "%s", e.message);
    bool answered = mt_jobs_wait(s, &set, rq->client_fd);
    const mt_gen_job *j = set.jobs[0];
    bool generated = answered && !j->error[0] && j->finish != MT_JOB_ABORTED;
    mt_job_set_free(&set);
    if (!generated) return mt_reply_errorf(rq, 503, "the engine did not generate (cancelled, or failed: see the server log)");
    return mt_reply(rq, 200, "text/plain; charset=utf-8", "", 0);
}

cJSON *mt_api_control_body(mt_http_request *rq, mt_api_error *e) {
    size_t at = 0;
    while (at < rq->body_len && strchr(" \t\r\n", rq->body[at])) at++;
    if (at == rq->body_len) return cJSON_CreateObject();
    mt_err err;
    cJSON *body = mt_json_parse_body(rq->body, rq->body_len, "the request body", &err);
    if (!body) mt_api_fail(e, 400, "%s", err.msg);
    else if (!cJSON_IsObject(body)) mt_api_fail(e, 400, "the request body is not a JSON object");
    if (body && cJSON_IsObject(body)) return body;
    cJSON_Delete(body);
    return NULL;
}

/* SGLang's answer to both: {"message", "status": "ok"}, 200. */
static int control_answer(mt_http_request *rq, const char *message) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "message", message);
    cJSON_AddStringToObject(o, "status", "ok");
    return mt_reply_json(rq, 200, o);
}

/* POST /pause_generation {"mode": "abort" (default) | "retract" | "in_place"}: answers once the
 * engine has stopped between two passes (abort: once the aborted requests have ended). */
int mt_api_pause_generation(mt_http_request *rq) {
    static const char *const MODES[] = {"abort", "retract", "in_place"};
    mt_server *s = rq->server;
    if (atomic_load(&s->draining)) return mt_reply_errorf(rq, 503, "the server is shutting down");
    mt_api_error e = {0};
    cJSON *body = mt_api_control_body(rq, &e);
    if (!body) return mt_reply_error(rq, &e);
    const cJSON *given = field(body, "mode");
    int mode = given ? -1 : MT_PAUSE_ABORT;
    for (int m = 0; given && cJSON_IsString(given) && m < 3; m++)
        if (!strcmp(given->valuestring, MODES[m])) mode = m;
    if (mode < 0) {
        if (cJSON_IsString(given))
            mt_api_fail(&e, 400, "'mode' is \"%.200s\": it must be \"abort\", \"retract\" or \"in_place\"",
                        given->valuestring);
        else
            mt_api_fail(&e, 400, "'mode' must be a string: \"abort\", \"retract\" or \"in_place\"");
    }
    cJSON_Delete(body);
    if (mode < 0) return mt_reply_error(rq, &e);
    mt_err err;
    if (mt_engine_loop_pause(s->b.loop, (mt_pause_mode)mode, &err) < 0) return mt_reply_errorf(rq, 503, "%s", err.msg);
    return control_answer(rq, "Generation paused successfully.");
}

/* POST /continue_generation: the paused requests go on, then those that waited. SGLang's
 * "torch_empty_cache" (a boolean) is accepted and has nothing to do here. */
int mt_api_continue_generation(mt_http_request *rq) {
    mt_api_error e = {0};
    cJSON *body = mt_api_control_body(rq, &e);
    if (!body) return mt_reply_error(rq, &e);
    bool empty_cache = false;
    int rc = mt_params_bool(body, "torch_empty_cache", &empty_cache, &e);
    cJSON_Delete(body);
    if (rc < 0) return mt_reply_error(rq, &e);
    mt_err err;
    if (mt_engine_loop_continue(rq->server->b.loop, &err)) return mt_reply_errorf(rq, 503, "%s", err.msg);
    return control_answer(rq, "Generation continued successfully.");
}
