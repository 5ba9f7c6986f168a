/* Operations endpoints: GET /health, GET /metrics (Prometheus text), GET /get_model_info,
 * GET /dashboard (a live expert-load heatmap page, dashboard_page.c) and its data,
 * GET /dashboard/data (the recorder's current window as JSON; under a placement also its load per
 * GPU and the placement switches). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kv_cache.h"
#include "routing/balancedness.h"
#include "server/server_internal.h"
#include "util/strbuf.h"

int mt_api_health(mt_http_request *rq) {
    mt_server *s = rq->server;
    if (!atomic_load(&s->ready)) return mt_reply_errorf(rq, 503, "the model is still loading");
    if (atomic_load(&s->draining)) return mt_reply_errorf(rq, 503, "the server is shutting down");
    mt_engine_loop_stats st;
    mt_engine_loop_get_stats(s->b.loop, &st);
    if (st.failed) return mt_reply_errorf(rq, 503, "the engine has failed (see the server log)");
    return mt_reply(rq, 200, "text/plain; charset=utf-8", "", 0);
}

/* GET /get_server_info, SGLang's: the settings a client reads back (the served model, its limits,
 * expert parallelism, routing return, the recorder, the chat parsers) and "internal_states" (one
 * entry, as a server of one data-parallel rank: the KV cache in tokens, the requests running and
 * waiting, the pause). */
int mt_api_server_info(mt_http_request *rq) {
    mt_server *s = rq->server;
    const mt_config *c = &s->b.model->cfg;
    mt_engine_loop_stats st;
    mt_engine_loop_get_stats(s->b.loop, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model_path", s->b.model_name);
    cJSON_AddStringToObject(o, "served_model_name", s->b.model_name);
    cJSON_AddStringToObject(o, "host", s->address);
    cJSON_AddNumberToObject(o, "port", s->port);
    cJSON_AddNumberToObject(o, "context_length", c->max_position_embeddings);
    cJSON_AddNumberToObject(o, "max_running_requests", s->b.max_running);
    cJSON_AddNumberToObject(o, "ep_size", s->b.ep_size);
    cJSON_AddBoolToObject(o, "enable_eplb", s->b.eplb_every > 0);
    if (s->b.eplb_every > 0) {
        cJSON_AddNumberToObject(o, "eplb_rebalance_num_iterations", (double)s->b.eplb_every);
        cJSON_AddNumberToObject(o, "eplb_min_rebalancing_utilization_threshold", s->b.eplb_threshold);
    }
    cJSON_AddBoolToObject(o, "enable_return_routed_experts", s->b.enable_return_routing);
    cJSON_AddStringToObject(o, "expert_distribution_recorder_mode",
                            mt_recorder_mode_name(mt_recorder_get_mode(s->b.recorder)));
    if (s->b.domain_field) cJSON_AddStringToObject(o, "domain_field", s->b.domain_field);
    else cJSON_AddNullToObject(o, "domain_field");
    const char *rp = mt_reasoning_parser_name(s->b.reasoning_parser), *tp = mt_tool_parser_name(s->b.tool_parser);
    cJSON_AddItemToObject(o, "reasoning_parser", rp ? cJSON_CreateString(rp) : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "tool_call_parser", tp ? cJSON_CreateString(tp) : cJSON_CreateNull());
    char version[MT_WEIGHT_VERSION_LEN];
    mt_engine_loop_weight_version(s->b.loop, version, sizeof version);
    cJSON_AddStringToObject(o, "weight_version", version);
    cJSON *states = cJSON_AddArrayToObject(o, "internal_states"), *st0 = cJSON_CreateObject();
    cJSON_AddNumberToObject(st0, "max_total_num_tokens", (double)st.engine.kv_blocks_total * MT_KV_BLOCK);
    cJSON_AddNumberToObject(st0, "num_running_reqs", st.engine.running);
    cJSON_AddNumberToObject(st0, "num_waiting_reqs", st.engine.waiting + st.queued);
    cJSON_AddBoolToObject(st0, "generation_paused", st.paused);
    cJSON_AddItemToArray(states, st0);
    return mt_reply_json(rq, 200, o);
}

int mt_api_model_info(mt_http_request *rq) {
    mt_server *s = rq->server;
    const mt_config *c = &s->b.model->cfg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model_path", s->b.model_name);
    cJSON_AddStringToObject(o, "model_type", c->model_type);
    cJSON_AddBoolToObject(o, "is_generation", 1);
    cJSON_AddNumberToObject(o, "context_length", c->max_position_embeddings);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->num_hidden_layers);
    cJSON_AddNumberToObject(o, "num_experts", c->num_experts);
    cJSON_AddNumberToObject(o, "top_k", c->top_k);
    cJSON_AddNumberToObject(o, "max_running_requests", s->b.max_running);
    cJSON_AddNumberToObject(o, "ep_size", s->b.ep_size);
    char source[sizeof ((mt_placement *)0)->source];
    mt_server_placement_source(s, source, sizeof source);
    cJSON_AddStringToObject(o, "placement", source);
    cJSON_AddBoolToObject(o, "enable_return_routed_experts", s->b.enable_return_routing);
    char version[MT_WEIGHT_VERSION_LEN];
    mt_engine_loop_weight_version(s->b.loop, version, sizeof version);
    cJSON_AddStringToObject(o, "weight_version", version);
    return mt_reply_json(rq, 200, o);
}

/* The recorder's window: counts [layers, experts] and balancedness per layer (NAN for dense layers):
 * under a placement measured per GPU from the physical counts, else over ep_size contiguous blocks. */
typedef struct window {
    bool placed;                /* counted under a placement: its shape is the start-up one's */
    char source[sizeof ((mt_placement *)0)->source]; /* that placement's source */
    uint64_t switches[MT_SWITCH_TRIGGERS][MT_SWITCH_RESULTS]; /* the switches counted so far */
    mt_recorder_counts counts;
    int64_t *logical_count;
    int64_t *physical_count;   /* [layers, num_physical] under a placement, else NULL */
    double *balancedness;
    double mean;
} window;

static void window_free(window *w) {
    free(w->logical_count);
    free(w->physical_count);
    free(w->balancedness);
}

/* The placement's source and the window are read under placement_mu: a switch (which takes it, and
 * sets the recorder's placement and then placement_now) cannot come between them, so the physical
 * counts are those of the placement named. Every switch keeps the start-up placement's slots, GPUs
 * and MoE layers, which is what is read of it afterwards (a switched-out placement is freed). */
static int window_read(mt_server *s, window *w) {
    const mt_config *c = &s->b.model->cfg;
    const mt_placement *p = s->b.placement;
    int L = c->num_hidden_layers, E = c->num_experts, moe = 0;
    w->logical_count = malloc((size_t)L * E * sizeof *w->logical_count);
    w->physical_count = p ? malloc((size_t)L * p->num_physical * sizeof *w->physical_count) : NULL;
    w->balancedness = malloc((size_t)L * sizeof *w->balancedness);
    if (!w->logical_count || !w->balancedness || (p && !w->physical_count)) {
        window_free(w);
        return -1;
    }
    pthread_mutex_lock(&s->placement_mu);
    w->placed = s->placement_now != NULL;
    snprintf(w->source, sizeof w->source, "%s", s->placement_now ? s->placement_now->source : "");
    mt_metrics_switches(&s->metrics, w->switches); /* counted under the same lock as the switch */
    int rc = mt_recorder_window(s->b.recorder, &w->counts, w->logical_count, w->physical_count);
    pthread_mutex_unlock(&s->placement_mu);
    if (rc) {
        window_free(w);
        return -1;
    }
    w->mean = 0;
    for (int l = 0; l < L; l++) {
        if (!c->layer_is_moe[l]) w->balancedness[l] = NAN;
        else if (p) w->balancedness[l] = mt_balancedness_contiguous(w->physical_count + (size_t)l * p->num_physical,
                                                                    p->num_physical, s->b.ep_size);
        else w->balancedness[l] = mt_balancedness_contiguous(w->logical_count + (size_t)l * E, E, s->b.ep_size);
        if (c->layer_is_moe[l]) {
            w->mean += w->balancedness[l];
            moe++;
        }
    }
    w->mean = moe ? w->mean / moe : 1.0;
    return 0;
}

static void gauge(mt_strbuf *o, const char *name, const char *help, double v) {
    mt_strbuf_printf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %.9g\n", name, help, name, name, v);
}

static void counter(mt_strbuf *o, const char *name, const char *help, double v) {
    mt_strbuf_printf(o, "# HELP %s %s\n# TYPE %s counter\n%s %.17g\n", name, help, name, name, v);
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void put_label_value(mt_strbuf *o, const char *v) {
    for (; *v; v++) {
        if (*v == '\\') mt_strbuf_puts(o, "\\\\");
        else if (*v == '"') mt_strbuf_puts(o, "\\\"");
        else if (*v == '\n') mt_strbuf_puts(o, "\\n");
        else mt_strbuf_append(o, v, 1);
    }
}

/* One metric with a sample per domain: its requests_total, or its tokens. */
static void per_domain(mt_strbuf *o, const char *name, const char *type, const char *help, const mt_domain_stat *st,
                       int n, bool tokens) {
    mt_strbuf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (int g = 0; g < n; g++) {
        mt_strbuf_printf(o, "%s{domain=\"", name);
        put_label_value(o, st[g].name);
        mt_strbuf_printf(o, "\"} %lld\n", (long long)(tokens ? st[g].tokens : st[g].requests_total));
    }
}

/* serve --domain-field: each label's requests and recorded tokens. */
static void domain_metrics(mt_domain_usage *u, mt_strbuf *o) {
    mt_domain_stat *st = malloc(MT_DOMAIN_MAX * sizeof *st);
    if (!st) return;
    int n = mt_domain_usage_stats(u, st);
    per_domain(o, "moetrace_domain_requests_total", "counter",
               "Requests accepted with each domain label since start-up.", st, n, false);
    per_domain(o, "moetrace_domain_recorded_tokens", "gauge",
               "Tokens of each domain recorded since recording started or the last dump.", st, n, true);
    free(st);
}

int mt_api_metrics(mt_http_request *rq) {
    mt_server *s = rq->server;
    mt_strbuf o = {0};
    mt_metrics_render(&s->metrics, &o);
    bool ready = atomic_load(&s->ready);
    gauge(&o, "moetrace_server_ready", "1 once the model is loaded and requests are served.", ready);
    gauge(&o, "moetrace_server_draining", "1 while shutting down (no new requests).", atomic_load(&s->draining));
    gauge(&o, "moetrace_http_connections_open", "HTTP connections open (each served by its own thread).",
          mt_conn_guard_open(s->guard));
    gauge(&o, "moetrace_http_connections_max", "--max-connections: the first request of a connection accepted beyond it is answered 503.",
          s->opts.max_connections);
    counter(&o, "moetrace_http_header_timeouts_total",
            "New connections closed because their request headers did not arrive within --header-timeout.",
            (double)mt_conn_guard_header_timeouts(s->guard));
    counter(&o, "moetrace_http_body_timeouts_total",
            "Connections closed because a request body did not all arrive within --body-timeout of its headers.",
            (double)mt_conn_guard_body_timeouts(s->guard));
    if (ready) {
        mt_engine_loop_stats st;
        mt_engine_loop_get_stats(s->b.loop, &st);
        const mt_engine_stats *es = &st.engine;
        gauge(&o, "moetrace_num_requests_running", "Sequences the engine is running.", es->running);
        gauge(&o, "moetrace_num_requests_waiting", "Requests queued for the engine (queue depth).",
              es->waiting + st.queued);
        gauge(&o, "moetrace_kv_cache_blocks_total", "KV cache blocks (16 positions each).", es->kv_blocks_total);
        gauge(&o, "moetrace_kv_cache_blocks_free", "KV cache blocks free or holding only evictable prefixes.",
              es->kv_blocks_free);
        gauge(&o, "moetrace_kv_cache_usage_ratio", "Share of the KV cache held by running sequences.",
              es->kv_blocks_total ? 1.0 - (double)es->kv_blocks_free / es->kv_blocks_total : 0.0);
        counter(&o, "moetrace_prefix_cache_hit_blocks_total", "Prompt blocks found in the prefix cache.",
                (double)es->prefix_hit_blocks);
        counter(&o, "moetrace_prefix_cache_lookup_blocks_total", "Prompt blocks looked up in the prefix cache.",
                (double)es->prefix_lookup_blocks);
        counter(&o, "moetrace_forward_passes_total", "Forward passes run.", (double)es->forward_passes);
        counter(&o, "moetrace_preemptions_total",
                "Requests preempted (KV blocks given back for older requests to grow; forwarded again later).",
                (double)es->preemptions);
        counter(&o, "moetrace_tokens_recomputed_total", "Of the tokens forwarded: forwarded again after a preemption.",
                (double)es->tokens_recomputed);
        counter(&o, "moetrace_tokens_forwarded_total", "Tokens forwarded (prompt chunks and decode).",
                (double)es->tokens_forwarded);
        counter(&o, "moetrace_forward_pass_seconds_total",
                "Wall time inside forward passes (on a device: upload to results handed over).", es->forward_seconds);
        counter(&o, "moetrace_engine_step_seconds_total",
                "Wall time inside engine steps, forward passes included (the rest: scheduling and events).",
                es->step_seconds);
        gauge(&o, "moetrace_kv_cache_bytes", "Memory the KV cache's K and V take (device memory on cuda).",
              es->kv_bytes);
        gauge(&o, "moetrace_engine_failed", "1 after a forward pass failed.", st.failed);
        gauge(&o, "moetrace_generation_paused", "1 while /pause_generation holds generation (until /continue_generation).",
              st.paused);
        mt_strbuf_puts(&o, "# HELP moetrace_weight_updates_total Weight updates (/update_weights_from_disk), by result.\n"
                           "# TYPE moetrace_weight_updates_total counter\n");
        mt_strbuf_printf(&o, "moetrace_weight_updates_total{result=\"ok\"} %ld\n", st.weight_updates);
        mt_strbuf_printf(&o, "moetrace_weight_updates_total{result=\"failed\"} %ld\n", st.weight_updates_failed);
        char version[MT_WEIGHT_VERSION_LEN];
        mt_engine_loop_weight_version(s->b.loop, version, sizeof version);
        mt_strbuf_puts(&o, "# HELP moetrace_weight_version_info The weight version requests run with now (value 1).\n"
                           "# TYPE moetrace_weight_version_info gauge\nmoetrace_weight_version_info{weight_version=\"");
        put_label_value(&o, version);
        mt_strbuf_puts(&o, "\"} 1\n");

        mt_recorder *r = s->b.recorder;
        mt_strbuf_printf(&o, "# HELP moetrace_expert_recorder_active 1 while the expert distribution recorder records.\n"
                             "# TYPE moetrace_expert_recorder_active gauge\nmoetrace_expert_recorder_active{mode=\"%s\"} %d\n",
                         mt_recorder_mode_name(mt_recorder_get_mode(r)), mt_recorder_active(r));
        window w;
        if (window_read(s, &w) == 0) {
            gauge(&o, "moetrace_expert_recorder_window_forward_passes", "Forward passes in the recorder's window.",
                  (double)w.counts.num_forward_passes);
            gauge(&o, "moetrace_expert_recorder_window_tokens", "Tokens in the recorder's window.",
                  (double)w.counts.num_tokens);
            gauge(&o, "moetrace_expert_recorder_dropped_tokens", "per_token rows dropped for lack of room.",
                  (double)w.counts.dropped_tokens);
            gauge(&o, "moetrace_expert_balancedness_ep_size", "Expert-parallel size the balancedness assumes.",
                  s->b.ep_size);
            mt_strbuf_puts(&o, "# HELP moetrace_expert_balancedness Mean over max GPU load of a MoE layer in the "
                               "recorder's window (1 is perfect).\n# TYPE moetrace_expert_balancedness gauge\n");
            const mt_config *c = &s->b.model->cfg;
            for (int l = 0; l < c->num_hidden_layers; l++)
                if (c->layer_is_moe[l])
                    mt_strbuf_printf(&o, "moetrace_expert_balancedness{layer=\"%d\"} %.6f\n", l, w.balancedness[l]);
            gauge(&o, "moetrace_expert_balancedness_mean", "Mean balancedness over the MoE layers.", w.mean);
            window_free(&w);
        }
        if (s->b.domains) domain_metrics(s->b.domains, &o);
    }
    int status = mt_reply(rq, 200, "text/plain; version=0.0.4; charset=utf-8", o.data ? o.data : "", o.len);
    mt_strbuf_free(&o);
    return status;
}

int mt_api_dashboard(mt_http_request *rq) {
    return mt_reply(rq, 200, "text/html; charset=utf-8", mt_dashboard_page, strlen(mt_dashboard_page));
}

/* The dashboard's "placement": the one the window was counted under (source, GPUs, slots), the
 * window's tokens per GPU (its physical counts summed over the MoE layers; slot s is on GPU
 * s / slots_per_gpu) and the switches applied so far by trigger. NULL when out of memory. */
static cJSON *placement_json(mt_server *s, const window *w) {
    const mt_placement *p = s->b.placement; /* the shape of every placement the server runs */
    int M = p->num_gpus, R = p->num_physical;
    double *load = calloc((size_t)M * 2, sizeof *load); /* the window's, then one layer's */
    if (!load) return NULL;
    double *layer = load + M;
    for (int i = 0; i < p->num_moe_layers; i++) {
        mt_gpu_load_contiguous(w->physical_count + (size_t)p->moe_layers[i] * R, R, M, layer);
        for (int g = 0; g < M; g++) load[g] += layer[g];
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "source", w->source);
    cJSON_AddNumberToObject(o, "num_gpus", M);
    cJSON_AddNumberToObject(o, "num_replicas", R);
    cJSON_AddItemToObject(o, "gpu_load", cJSON_CreateDoubleArray(load, M));
    free(load);
    cJSON *sw = cJSON_AddObjectToObject(o, "switches");
    for (int t = 0; t < MT_SWITCH_TRIGGERS; t++)
        cJSON_AddNumberToObject(sw, mt_metrics_switch_trigger_name((mt_switch_trigger)t), (double)w->switches[t][MT_SWITCH_APPLIED]);
    return o;
}

int mt_api_dashboard_data(mt_http_request *rq) {
    mt_server *s = rq->server;
    const mt_config *c = &s->b.model->cfg;
    window w;
    if (window_read(s, &w)) return mt_reply_errorf(rq, 500, "out of memory");
    cJSON *plc = w.placed ? placement_json(s, &w) : cJSON_CreateNull();
    if (!plc) {
        window_free(&w);
        return mt_reply_errorf(rq, 500, "out of memory");
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", s->b.model_name);
    cJSON_AddBoolToObject(o, "recording", mt_recorder_active(s->b.recorder));
    cJSON_AddStringToObject(o, "mode", mt_recorder_mode_name(mt_recorder_get_mode(s->b.recorder)));
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->num_hidden_layers);
    cJSON_AddNumberToObject(o, "num_experts", c->num_experts);
    cJSON_AddNumberToObject(o, "ep_size", s->b.ep_size);
    cJSON_AddNumberToObject(o, "num_forward_passes", (double)w.counts.num_forward_passes);
    cJSON_AddNumberToObject(o, "num_tokens", (double)w.counts.num_tokens);
    cJSON *lc = cJSON_AddArrayToObject(o, "logical_count"), *bal = cJSON_AddArrayToObject(o, "balancedness");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        cJSON *row = cJSON_CreateArray();
        for (int e = 0; e < c->num_experts; e++)
            cJSON_AddItemToArray(row, cJSON_CreateNumber((double)w.logical_count[(size_t)l * c->num_experts + e]));
        cJSON_AddItemToArray(lc, row);
        cJSON_AddItemToArray(bal, c->layer_is_moe[l] ? cJSON_CreateNumber(w.balancedness[l]) : cJSON_CreateNull());
    }
    cJSON_AddNumberToObject(o, "balancedness_mean", w.mean);
    mt_engine_loop_stats st;
    mt_engine_loop_get_stats(s->b.loop, &st);
    cJSON_AddNumberToObject(o, "running", st.engine.running);
    cJSON_AddNumberToObject(o, "waiting", st.engine.waiting + st.queued);
    cJSON_AddItemToObject(o, "placement", plc);
    cJSON_AddNumberToObject(o, "eplb_every", (double)s->b.eplb_every);
    window_free(&w);
    return mt_reply_json(rq, 200, o);
}
