/* Expert placement switches for expert-parallel serving (--ep-size): POST /update_expert_location
 * (switch to a given placement) and POST /eplb_rebalance (plan one with EPLB from the recorder's
 * window and switch to it). The switch happens between two forward passes, on the engine thread; the
 * recorder's window is dumped and restarts empty there, so no window mixes two placements
 * (docs/API.md, docs/RECORDER.md, docs/EPLB.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/request_params.h"
#include "server/server_internal.h"
#include "routing/balancedness.h"
#include "routing/stat_dump.h"
#include "util/json_util.h"

#define field mt_params_field

/* One switch, prepared by the handler and done on the engine thread (switch_between_passes). */
typedef struct placement_switch {
    mt_server *s;
    const mt_placement *current; /* what the engine runs now */
    mt_placement *next;          /* what it runs after (planned on the engine thread for a rebalance) */
    bool rebalance;
    int status;                  /* HTTP status when the switch failed */
    char dump[4096];             /* the window written at the switch; "" when it held nothing */
    mt_recorder_counts counts;   /* of that window */
    double *before, *after;      /* rebalance: per MoE layer, measured under current / planned for next */
} placement_switch;

/* 400 when this server cannot switch placements, naming why; 0 when it can. */
static int check_switchable(mt_server *s, mt_api_error *e) {
    if (!s->b.placement)
        return mt_api_fail(e, 400, "serve was started without --ep-size (no expert placement): there is none to "
                                   "change; start it with --ep-size M [--init-expert-location FILE|trivial] "
                                   "[--ep-num-redundant-experts N]");
    if (s->b.domains)
        return mt_api_fail(e, 400, "switching the expert placement is not supported with --domain-field (the "
                                   "domains' recorders would mix two placements)");
    return 0;
}

/* The rows of the window's MoE layers as planner weights [moe layers, E]. */
static double *moe_weights(const mt_placement *p, const int64_t *logical) {
    int E = p->num_experts;
    double *w = malloc((size_t)p->num_moe_layers * (size_t)E * sizeof *w);
    for (int i = 0; w && i < p->num_moe_layers; i++)
        for (int e = 0; e < E; e++) w[(size_t)i * E + e] = (double)logical[(size_t)p->moe_layers[i] * E + e];
    return w;
}

/* Plans the next placement with EPLB on the recorder's window (engine thread, no pass running): the
 * running placement's slots and GPUs, one group, one node (as --init-expert-location plans a stat
 * dump), and the balancedness before (measured per GPU from the physical counts) and after (each
 * expert's window count split evenly over its new replicas). */
static int plan_rebalance(placement_switch *w, const int64_t *logical, const int64_t *physical, mt_err *err) {
    const mt_placement *cur = w->current;
    int L = cur->num_moe_layers, E = cur->num_experts, R = cur->num_physical, M = cur->num_gpus;
    int64_t routed = 0;
    for (int i = 0; i < L; i++)
        for (int e = 0; e < E; e++) routed += logical[(size_t)cur->moe_layers[i] * E + e];
    if (w->counts.num_tokens == 0 || routed == 0) {
        w->status = 400;
        return mt_errf(err, "the recorder has recorded nothing since its last start, reset, dump or placement "
                            "switch: serve some traffic first (a placement planned from no load would be arbitrary)");
    }
    mt_moe_shape shape;
    mt_moe_shape_from_config(&w->s->b.model->cfg, &shape);
    double *weights = moe_weights(cur, logical);
    int rc = !weights ? mt_errf(err, "out of memory")
                      : mt_placement_plan(&shape, M, R, weights, "the recorder's window", w->next, err);
    free(weights);
    if (rc) {
        w->status = 500;
        return -1;
    }
    for (int i = 0; i < L; i++) {
        size_t l = (size_t)cur->moe_layers[i];
        w->before[i] = mt_balancedness_contiguous(physical + l * R, R, M);
        w->after[i] = mt_balancedness_placement(logical + l * E, w->next->phy2log + (size_t)i * R,
                                                w->next->logcnt + (size_t)i * E, R, M);
    }
    return 0;
}

/* Reads the window (and, for a rebalance, plans from it), dumps it when it holds anything, then
 * switches the recorder and the engine: all between two passes, so the dump is exactly the window
 * planned on and the next window counts the new placement only. */
static int switch_between_passes(mt_engine *engine, void *ctx, mt_err *err) {
    placement_switch *w = ctx;
    mt_server *s = w->s;
    mt_recorder *rec = s->b.recorder;
    const mt_config *c = &s->b.model->cfg;
    size_t L = (size_t)c->num_hidden_layers;
    int64_t *logical = malloc(L * (size_t)c->num_experts * sizeof *logical);
    int64_t *physical = malloc(L * (size_t)w->current->num_physical * sizeof *physical);
    int rc = -1;
    w->status = 500;
    if (!logical || !physical) mt_errf(err, "out of memory");
    else if (w->rebalance && !mt_recorder_active(rec)) {
        w->status = 400;
        mt_errf(err, "the expert distribution recorder is not running: POST /start_expert_distribution_record, "
                     "serve traffic, then rebalance");
    } else if (!mt_recorder_window(rec, &w->counts, logical, physical) &&
               (!w->rebalance || !plan_rebalance(w, logical, physical, err)) && !mt_placement_fits(w->next, c, err)) {
        rc = 0;
    }
    free(logical);
    free(physical);
    if (rc) return -1;
    if (w->counts.num_forward_passes > 0 || w->counts.tokens_recorded > 0) {
        if (mt_recorder_dump(rec, w->dump, sizeof w->dump, err)) {
            w->dump[0] = '\0';
            return -1; /* nothing changed */
        }
        mt_log("expert distribution dump (before the placement switch): %s", w->dump);
    }
    if (mt_recorder_set_placement(rec, w->next, err) || mt_engine_set_placement(engine, w->next, err)) return -1;
    return 0;
}

/* Runs the switch (placement_mu held by the caller) and installs w->next as the server's placement.
 * Returns 0, or -1 with the failure in e (w->next then stays the caller's). */
static int run_switch(placement_switch *w, mt_api_error *e) {
    mt_server *s = w->s;
    mt_err err;
    mt_placement **grown = realloc(s->placements, (size_t)(s->n_placements + 1) * sizeof *grown);
    if (!grown) return mt_api_fail(e, 500, "out of memory");
    s->placements = grown;
    if (mt_engine_loop_between_passes(s->b.loop, switch_between_passes, w, &err))
        return mt_api_fail(e, w->status ? w->status : 503, "%s", err.msg);
    s->placements[s->n_placements++] = w->next;
    s->placement_now = w->next;
    mt_log("expert placement switched (%s, %d slots on %d GPUs)", w->next->source, w->next->num_physical,
           w->next->num_gpus);
    if (w->dump[0] && s->b.dump_visualize) mt_server_visualize_dump(w->dump, s->b.ep_size);
    return 0;
}

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

static void add_placement_summary(cJSON *o, const placement_switch *w) {
    if (w->dump[0]) cJSON_AddStringToObject(o, "dump", w->dump);
    else cJSON_AddNullToObject(o, "dump");
    cJSON_AddNumberToObject(o, "num_tokens", (double)w->counts.num_tokens);
    cJSON_AddNumberToObject(o, "num_gpus", w->next->num_gpus);
    cJSON_AddNumberToObject(o, "num_replicas", w->next->num_physical);
}

/* POST /update_expert_location: body a placement (moetrace.placement.v1, or SGLang's
 * {"physical_to_logical_map": ...}). 200 {"success", "message", "dump", ...} once the engine runs it. */
int mt_api_update_expert_location(mt_http_request *rq) {
    mt_server *s = rq->server;
    mt_api_error e = {0};
    if (atomic_load(&s->draining)) return mt_reply_errorf(rq, 503, "the server is shutting down");
    if (check_switchable(s, &e)) return mt_reply_error(rq, &e);
    mt_err err;
    cJSON *body = mt_json_parse_whole(rq->body, rq->body_len, "the request body", &err);
    if (!body) return mt_reply_errorf(rq, 400, "%s", err.msg);
    placement_switch w = {.s = s, .next = calloc(1, sizeof *w.next)};
    pthread_mutex_lock(&s->placement_mu);
    w.current = s->placement_now;
    int rc = !w.next ? mt_api_fail(&e, 500, "out of memory") : placement_from_body(s, w.current, body, w.next, &e);
    cJSON_Delete(body);
    bool built = rc == 0;
    if (rc == 0) rc = run_switch(&w, &e);
    pthread_mutex_unlock(&s->placement_mu);
    if (rc) {
        if (built) mt_placement_free(w.next);
        free(w.next);
        return mt_reply_error(rq, &e);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "success", 1);
    cJSON_AddStringToObject(o, "message", "Expert location updated.");
    add_placement_summary(o, &w);
    return mt_reply_json(rq, 200, o);
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
    if (check_switchable(s, &e)) return mt_reply_error(rq, &e);
    cJSON *body = mt_api_control_body(rq, &e);
    if (!body) return mt_reply_error(rq, &e);
    cJSON_Delete(body);
    int L = s->b.placement->num_moe_layers;
    placement_switch w = {.s = s, .rebalance = true, .next = calloc(1, sizeof *w.next),
                          .before = calloc((size_t)L, sizeof(double)), .after = calloc((size_t)L, sizeof(double))};
    int rc = !w.next || !w.before || !w.after ? mt_api_fail(&e, 500, "out of memory") : 0;
    pthread_mutex_lock(&s->placement_mu);
    w.current = s->placement_now;
    if (rc == 0) rc = run_switch(&w, &e);
    pthread_mutex_unlock(&s->placement_mu);
    cJSON *o = NULL;
    if (rc == 0) {
        o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "success", 1);
        cJSON_AddStringToObject(o, "message", "Rebalanced: planned with EPLB on the recorder's window and applied.");
        add_placement_summary(o, &w);
        add_per_layer(o, "balancedness_before", w.before, L);
        add_per_layer(o, "balancedness_after", w.after, L);
        cJSON *pj = mt_placement_to_json(w.next);
        if (pj) cJSON_AddItemToObject(o, "placement", pj);
    } else if (w.next) {
        mt_placement_free(w.next); /* planned but not installed, or never built (all NULL) */
        free(w.next);
    }
    free(w.before);
    free(w.after);
    return rc ? mt_reply_error(rq, &e) : mt_reply_json(rq, 200, o);
}

const mt_placement *mt_server_placement_now(mt_server *s) {
    pthread_mutex_lock(&s->placement_mu);
    const mt_placement *p = s->placement_now;
    pthread_mutex_unlock(&s->placement_mu);
    return p;
}
