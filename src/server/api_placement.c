/* The expert placement endpoints of expert-parallel serving (--ep-size): POST /update_expert_location
 * (switch to a given placement) and POST /eplb_rebalance (plan one with EPLB from the recorder's
 * window and switch to it). They parse and answer; the switch itself is placement_switch.h
 * (docs/API.md, docs/RECORDER.md, docs/EPLB.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/placement_switch.h"
#include "server/request_params.h"
#include "server/server_internal.h"
#include "routing/stat_dump.h"
#include "util/json_util.h"

#define field mt_params_field

/* The body as a moetrace.placement.v1 object: SGLang's --init-expert-location JSON (no "format",
 * a "physical_to_logical_map") gets the format and this server's num_gpus added. */
static int normalise_placement_body(cJSON *body, int num_gpus, mt_api_error *e) {
    const cJSON *fmt = field(body, "format");
    if (fmt) {
        if (cJSON_IsString(fmt) && !strcmp(fmt->valuestring, MT_STAT_DUMP_FORMAT))
            return mt_api_fail(e, 400, "the request body is a stat dump, not a placement: plan one with `moetrace "
                                       "eplb --counts`, or POST /eplb_rebalance to plan from the server's recorder");
        return 0; /* checked with the rest by mt_placement_from_json */
    }
    if (!field(body, "physical_to_logical_map"))
        return mt_api_fail(e, 400, "the request body must be a placement: {\"format\": \"%s\", \"num_gpus\": M, "
                                   "\"physical_to_logical_map\": [[...], ...]} (what `moetrace eplb` writes), or "
                                   "SGLang's {\"physical_to_logical_map\": ...}", MT_PLACEMENT_FORMAT);
    cJSON_AddStringToObject(body, "format", MT_PLACEMENT_FORMAT);
    if (!field(body, "num_gpus")) cJSON_AddNumberToObject(body, "num_gpus", num_gpus);
    return 0;
}

/* The body's placement, validated as --init-expert-location validates a file, plus: the running
 * placement's slots per layer (num_experts + redundant experts: what each GPU has room for). */
static int placement_from_body(mt_server *s, const mt_placement *cur, cJSON *body, mt_placement *p, mt_api_error *e) {
    if (!cJSON_IsObject(body)) return mt_api_fail(e, 400, "the request body is not a JSON object");
    if (normalise_placement_body(body, cur->num_gpus, e)) return -1;
    mt_moe_shape shape;
    mt_moe_shape_from_config(&s->b.model->cfg, &shape);
    mt_err err;
    if (mt_placement_from_json(body, "the request body", &shape, cur->num_gpus, p, &err))
        return mt_api_fail(e, 400, "%s", err.msg);
    if (p->num_physical != cur->num_physical) {
        mt_api_fail(e, 400, "the request body: the placement has %d physical slots per layer; this server runs %d "
                            "(%d experts + %d redundant, --ep-num-redundant-experts) on %d GPUs, and a switch keeps "
                            "that number", p->num_physical, cur->num_physical, cur->num_experts,
                    cur->num_physical - cur->num_experts, cur->num_gpus);
        mt_placement_free(p);
        return -1;
    }
    return 0;
}

/* The answer of a switch done: {"success": true, "message", "dump", "num_tokens", "num_gpus",
 * "num_replicas"}, and "dump_error" when the window could not be written (dump then null). Called
 * under window_mu (the next switch frees w->next). */
static cJSON *switch_answer(const mt_placement_switch *w, const char *message) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "success", 1);
    cJSON_AddStringToObject(o, "message", message);
    if (w->dump[0]) cJSON_AddStringToObject(o, "dump", w->dump);
    else cJSON_AddNullToObject(o, "dump");
    if (w->dump_error[0]) cJSON_AddStringToObject(o, "dump_error", w->dump_error);
    cJSON_AddNumberToObject(o, "num_tokens", (double)w->counts.num_tokens);
    cJSON_AddNumberToObject(o, "num_gpus", w->next->num_gpus);
    cJSON_AddNumberToObject(o, "num_replicas", w->next->num_physical);
    return o;
}

/* POST /update_expert_location: body a placement (moetrace.placement.v1, or SGLang's
 * {"physical_to_logical_map": ...}). 200 {"success", "message", "dump", ...} once the engine runs it. */
int mt_api_update_expert_location(mt_http_request *rq) {
    mt_server *s = rq->server;
    mt_api_error e = {0};
    if (atomic_load(&s->draining)) return mt_reply_errorf(rq, 503, "the server is shutting down");
    if (mt_placement_switchable(s, &e)) return mt_reply_error(rq, &e);
    mt_err err;
    cJSON *body = mt_json_parse_body(rq->body, rq->body_len, "the request body", &err);
    if (!body) return mt_reply_errorf(rq, 400, "%s", err.msg);
    mt_placement_switch w = {.s = s, .next = calloc(1, sizeof *w.next)};
    /* every switch keeps the start-up placement's slots and GPUs: the body is checked against those */
    int rc = !w.next ? mt_api_fail(&e, 500, "out of memory") : placement_from_body(s, s->b.placement, body, w.next, &e);
    cJSON_Delete(body);
    pthread_mutex_lock(&s->window_mu);
    if (rc == 0) rc = mt_placement_switch_run(&w, MT_SWITCH_BY_UPDATE, &e);
    cJSON *o = rc == 0 ? switch_answer(&w, "Expert location updated.") : NULL;
    pthread_mutex_unlock(&s->window_mu);
    mt_placement_switch_release(&w, rc == 0);
    return rc ? mt_reply_error(rq, &e) : mt_reply_json(rq, 200, o);
}

/* Per MoE layer and their mean, as "<key>" and "<key>_mean". */
static void add_per_layer(cJSON *o, const char *key, const double *v, int n) {
    cJSON *a = cJSON_AddArrayToObject(o, key);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
        sum += v[i];
    }
    char mean[64];
    snprintf(mean, sizeof mean, "%s_mean", key);
    cJSON_AddNumberToObject(o, mean, n ? sum / n : 1.0);
}

/* POST /eplb_rebalance (body empty or an object): plans with EPLB on the recorder's window and
 * switches to it. 200 {"success", "message", "dump" (the window planned on), "balancedness_before",
 * "balancedness_after" (+ _mean), "placement"}. */
int mt_api_eplb_rebalance(mt_http_request *rq) {
    mt_server *s = rq->server;
    mt_api_error e = {0};
    if (atomic_load(&s->draining)) return mt_reply_errorf(rq, 503, "the server is shutting down");
    if (mt_placement_switchable(s, &e)) return mt_reply_error(rq, &e);
    cJSON *body = mt_api_control_body(rq, &e);
    if (!body) return mt_reply_error(rq, &e);
    cJSON_Delete(body);
    int L = s->b.placement->num_moe_layers;
    mt_placement_switch w;
    if (mt_placement_switch_rebalance(&w, s, 1.0)) return mt_reply_errorf(rq, 500, "out of memory");
    pthread_mutex_lock(&s->window_mu);
    int rc = mt_placement_switch_run(&w, MT_SWITCH_BY_REBALANCE, &e);
    cJSON *o = NULL;
    if (rc == 0) { /* under the lock: the next switch frees w.next */
        o = switch_answer(&w, "Rebalanced: planned with EPLB on the recorder's window and applied.");
        add_per_layer(o, "balancedness_before", w.before, L);
        add_per_layer(o, "balancedness_after", w.after, L);
        if (w.plan[0]) cJSON_AddStringToObject(o, "placement_file", w.plan);
        else cJSON_AddNullToObject(o, "placement_file");
        cJSON *pj = mt_placement_to_json(w.next);
        if (pj) cJSON_AddItemToObject(o, "placement", pj);
    }
    pthread_mutex_unlock(&s->window_mu);
    mt_placement_switch_release(&w, rc == 0);
    return rc ? mt_reply_error(rq, &e) : mt_reply_json(rq, 200, o);
}

void mt_server_placement_source(mt_server *s, char *out, size_t size) {
    pthread_mutex_lock(&s->placement_mu);
    snprintf(out, size, "%s", s->placement_now ? s->placement_now->source : "none");
    pthread_mutex_unlock(&s->placement_mu);
}
