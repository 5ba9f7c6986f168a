/* Engine control endpoints, as SGLang spells them, for RL loops: POST /update_weights_from_disk (a
 * checkpoint of the same shape replaces the served weights in place; the prefix cache is emptied),
 * GET|POST /flush_cache, GET /get_weight_version, and POST /abort_request (cancel requests by rid,
 * or all, e.g. the rollouts left when a step has enough). */
#include <stdio.h>
#include <string.h>

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
    cJSON *body = mt_json_parse_whole(rq->body, rq->body_len, "the request body", &err);
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
    cJSON *body = mt_json_parse_whole(rq->body, rq->body_len, "the request body", &err);
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
