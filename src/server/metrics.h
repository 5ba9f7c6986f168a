/* Server counters and latency histograms, rendered in the Prometheus text exposition format
 * (version 0.0.4). Thread-safe: HTTP handlers and the engine thread record, /metrics renders.
 * Gauges that belong to other modules (engine queue and KV cache, recorder) are appended by the
 * /metrics handler (api_ops.c). */
#ifndef MT_SERVER_METRICS_H
#define MT_SERVER_METRICS_H

#include <pthread.h>
#include <stdint.h>

#include "util/strbuf.h"

#define MT_HIST_MAX_BOUNDS 24
#define MT_METRICS_MAX_ROUTES 48

typedef struct mt_histogram {
    const double *bounds;      /* upper bounds, ascending (+Inf implied) */
    int n_bounds;
    uint64_t counts[MT_HIST_MAX_BOUNDS + 1];  /* per bucket (not cumulative) */
    uint64_t count;
    double sum;
} mt_histogram;

typedef enum mt_finish_label { MT_FINISHED_LENGTH, MT_FINISHED_STOP, MT_FINISHED_ABORT, MT_FINISHED_KINDS } mt_finish_label;

/* Expert placement switches: what asked for one, and what came of it. */
typedef enum mt_switch_trigger { MT_SWITCH_BY_UPDATE, MT_SWITCH_BY_REBALANCE, MT_SWITCH_BY_PERIOD, MT_SWITCH_TRIGGERS } mt_switch_trigger;
typedef enum mt_switch_result { MT_SWITCH_APPLIED, MT_SWITCH_SKIPPED, MT_SWITCH_FAILED, MT_SWITCH_RESULTS } mt_switch_result;

typedef struct mt_server_metrics {
    pthread_mutex_t mu;
    struct { const char *path; int code; uint64_t n; } http[MT_METRICS_MAX_ROUTES];
    int n_http;
    uint64_t finished[MT_FINISHED_KINDS];
    uint64_t rejected;             /* generation requests refused with an error */
    uint64_t prompt_tokens, generation_tokens, cached_prompt_tokens;
    mt_histogram ttft, itl, e2e;
    uint64_t switches[MT_SWITCH_TRIGGERS][MT_SWITCH_RESULTS];
    uint64_t dumps_failed;         /* recorder windows that could not be written */
} mt_server_metrics;

void mt_metrics_init(mt_server_metrics *m);
void mt_metrics_destroy(mt_server_metrics *m);

/* path must be a string that lives as long as m (a route's literal; unknown paths as "other"). */
void mt_metrics_http(mt_server_metrics *m, const char *path, int code);
void mt_metrics_first_token(mt_server_metrics *m, double ttft_s);
void mt_metrics_next_token(mt_server_metrics *m, double itl_s);
void mt_metrics_finished(mt_server_metrics *m, mt_finish_label label, int prompt_tokens, int generated_tokens,
                         int cached_tokens, double e2e_s);
void mt_metrics_rejected(mt_server_metrics *m);
void mt_metrics_placement_switch(mt_server_metrics *m, mt_switch_trigger trigger, mt_switch_result result);
/* A recorder window that could not be written: a dump (its window kept) or a placement switch's
 * window (lost). */
void mt_metrics_dump_failed(mt_server_metrics *m);
/* The placement switches counted so far, by trigger and result (a copy read under m->mu). */
void mt_metrics_switches(mt_server_metrics *m, uint64_t out[MT_SWITCH_TRIGGERS][MT_SWITCH_RESULTS]);
/* A trigger's label in /metrics: "update_expert_location", "eplb_rebalance" or "periodic". */
const char *mt_metrics_switch_trigger_name(mt_switch_trigger trigger);

/* Appends every metric of m (with HELP and TYPE lines). */
void mt_metrics_render(mt_server_metrics *m, mt_strbuf *out);

#endif
