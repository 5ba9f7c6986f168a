/* The server's state as the endpoint handlers (api_*.c) and the HTTP plumbing (http_*.c) share it. */
#ifndef MT_SERVER_SERVER_INTERNAL_H
#define MT_SERVER_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "engine/kv_cache.h"
#include "server/conn_guard.h"
#include "server/dump_writer.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/request_body.h"
#include "server/server.h"

struct MHD_Daemon;

struct mt_server {
    mt_server_opts opts;
    struct MHD_Daemon *daemon;
    mt_conn_guard *guard;         /* open connections, header deadlines */
    int port;
    char address[64];             /* numeric, what opts.host resolved to */
    mt_server_metrics metrics;
    atomic_bool ready;            /* backend set: serving */
    atomic_bool draining;         /* SIGTERM: no new generation requests */
    mt_server_backend b;          /* valid once ready */
    atomic_int in_flight;         /* HTTP requests received and not yet completely answered */
    atomic_int answering;         /* those of them being answered (their body came, or they were
                                     refused on their headers) */
    atomic_llong next_job_id;
    uint64_t id_salt;             /* mixes into response ids, different per server run */
    pthread_mutex_t chat_mu;      /* chat template rendering, one at a time */
    /* Whoever takes the recorder's window does so under window_mu, one at a time, from the take
     * until its files are written: placement switches (placement_switch.h: /update_expert_location,
     * /eplb_rebalance, --enable-eplb), recorder dumps and starts. Lock order: window_mu, then
     * placement_mu. */
    pthread_mutex_t window_mu;
    /* The placement the engine runs, and the switches' counts (metrics.h): a switch holds it, on the
     * engine thread between two passes, while it changes the engine's and the recorders' placement
     * and installs the new one here, so a reader that takes it (briefly: /metrics, /get_model_info,
     * the dashboard) sees a placement with the recorder's counts of it. Switches (under window_mu)
     * may read placement_now without it. */
    pthread_mutex_t placement_mu;
    const mt_placement *placement_now; /* what the engine dispatches over: b.placement until a switch */
    mt_placement *placement_owned; /* the one the last switch installed (= placement_now), owned: the
                                      next switch frees it once the engine, the recorders and
                                      placement_now have moved on; the server frees the last one after
                                      the engine thread has stopped */
    mt_dump_writer *dump_writer;  /* --enable-eplb: writes the periodic rebalances' windows (NULL
                                     without it); drained under window_mu before any other dump or
                                     switch */
    time_t started;
};

/* What the request body parsers (request_body.h) need of the server. */
static inline void mt_server_request_ctx(mt_server *s, mt_request_ctx *c) {
    mt_engine_loop_stats st;
    mt_engine_loop_get_stats(s->b.loop, &st);
    *c = (mt_request_ctx){.cfg = &s->b.model->cfg, .tokenizer = s->b.tokenizer, .chat_template = s->b.chat_template,
                          .chat_mu = &s->chat_mu, .routing_enabled = s->b.enable_return_routing,
                          .domain_field = s->b.domain_field, .domains = s->b.domains,
                          .kv_positions = st.engine.kv_blocks_total * MT_KV_BLOCK};
}

/* A handler: queues a reply on rq and returns its status (mt_reply* return values; 0 for a stream,
 * which is counted in the metrics when it ends), or -1 to close the connection. */
typedef int (*mt_handler)(mt_http_request *rq);

/* Endpoints (api_*.c). */
int mt_api_generate(mt_http_request *rq);
int mt_api_start_record(mt_http_request *rq);
int mt_api_stop_record(mt_http_request *rq);
int mt_api_dump_record(mt_http_request *rq);
int mt_api_models(mt_http_request *rq);
int mt_api_model_info(mt_http_request *rq);
int mt_api_server_info(mt_http_request *rq);
int mt_api_completions(mt_http_request *rq);
int mt_api_chat_completions(mt_http_request *rq);
int mt_api_health(mt_http_request *rq);
int mt_api_metrics(mt_http_request *rq);
int mt_api_dashboard(mt_http_request *rq);
int mt_api_dashboard_data(mt_http_request *rq);
int mt_api_update_weights(mt_http_request *rq);
int mt_api_flush_cache(mt_http_request *rq);
int mt_api_weight_version(mt_http_request *rq);
int mt_api_abort_request(mt_http_request *rq);
int mt_api_health_generate(mt_http_request *rq);
int mt_api_pause_generation(mt_http_request *rq);
int mt_api_continue_generation(mt_http_request *rq);
int mt_api_update_expert_location(mt_http_request *rq);
int mt_api_eplb_rebalance(mt_http_request *rq);
/* The body of a control request SGLang's clients may send empty (AReaL posts none): a JSON object,
 * {} when the body is empty. NULL with the 400 in e (api_control.c). */
cJSON *mt_api_control_body(mt_http_request *rq, mt_api_error *e);
/* <dump>.png beside the stat dump <dump>.json (--expert-dump-visualize); a failure is logged. */
void mt_server_visualize_dump(const char *json_path, int ep_size);
/* The source of the placement the engine dispatches over now ("trivial", "file", "eplb"; "none"
 * without --ep-size) into out (api_placement.c). A placement a switch replaced is freed, so nothing
 * outside placement_mu keeps a pointer to the one running. */
void mt_server_placement_source(mt_server *s, char *out, size_t size);

/* --enable-eplb: starts the recorder when stopped and the engine loop's rebalance every
 * b.eplb_every passes; nothing without it (eplb_auto.c). */
void mt_server_start_eplb(mt_server *s);

/* The HTML of GET /dashboard (dashboard_page.c). */
extern const char mt_dashboard_page[];

/* "prefix" followed by 32 hex digits unique to the job (response ids). */
void mt_server_response_id(const mt_server *s, int64_t job_id, const char *prefix, char *out, size_t len);

#endif
