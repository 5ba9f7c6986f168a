#include "server/metrics.h"

#include <string.h>

static const double TTFT_BOUNDS[] = {0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80};
static const double ITL_BOUNDS[] = {0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double E2E_BOUNDS[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600};

static void hist_init(mt_histogram *h, const double *bounds, int n) {
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->n_bounds = n;
}

static void hist_observe(mt_histogram *h, double v) {
    int b = 0;
    while (b < h->n_bounds && v > h->bounds[b]) b++;
    h->counts[b]++;
    h->count++;
    h->sum += v;
}

void mt_metrics_init(mt_server_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    hist_init(&m->ttft, TTFT_BOUNDS, (int)(sizeof TTFT_BOUNDS / sizeof *TTFT_BOUNDS));
    hist_init(&m->itl, ITL_BOUNDS, (int)(sizeof ITL_BOUNDS / sizeof *ITL_BOUNDS));
    hist_init(&m->e2e, E2E_BOUNDS, (int)(sizeof E2E_BOUNDS / sizeof *E2E_BOUNDS));
}

void mt_metrics_destroy(mt_server_metrics *m) { pthread_mutex_destroy(&m->mu); }

void mt_metrics_http(mt_server_metrics *m, const char *path, int code) {
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < m->n_http && !(m->http[i].code == code && !strcmp(m->http[i].path, path))) i++;
    if (i == m->n_http && m->n_http < MT_METRICS_MAX_ROUTES) {
        m->http[i].path = path;
        m->http[i].code = code;
        m->http[i].n = 0;
        m->n_http++;
    }
    if (i < m->n_http) m->http[i].n++;
    pthread_mutex_unlock(&m->mu);
}

void mt_metrics_first_token(mt_server_metrics *m, double ttft_s) {
    pthread_mutex_lock(&m->mu);
    hist_observe(&m->ttft, ttft_s);
    pthread_mutex_unlock(&m->mu);
}

void mt_metrics_next_token(mt_server_metrics *m, double itl_s) {
    pthread_mutex_lock(&m->mu);
    hist_observe(&m->itl, itl_s);
    pthread_mutex_unlock(&m->mu);
}

void mt_metrics_finished(mt_server_metrics *m, mt_finish_label label, int prompt_tokens, int generated_tokens,
                         int cached_tokens, double e2e_s) {
    pthread_mutex_lock(&m->mu);
    m->finished[label]++;
    m->prompt_tokens += (uint64_t)prompt_tokens;
    m->generation_tokens += (uint64_t)generated_tokens;
    m->cached_prompt_tokens += (uint64_t)cached_tokens;
    hist_observe(&m->e2e, e2e_s);
    pthread_mutex_unlock(&m->mu);
}

void mt_metrics_rejected(mt_server_metrics *m) {
    pthread_mutex_lock(&m->mu);
    m->rejected++;
    pthread_mutex_unlock(&m->mu);
}

void mt_metrics_placement_switch(mt_server_metrics *m, mt_switch_trigger trigger, mt_switch_result result) {
    pthread_mutex_lock(&m->mu);
    m->switches[trigger][result]++;
    pthread_mutex_unlock(&m->mu);
}

void mt_metrics_dump_failed(mt_server_metrics *m) {
    pthread_mutex_lock(&m->mu);
    m->dumps_failed++;
    pthread_mutex_unlock(&m->mu);
}

void mt_metrics_switches(mt_server_metrics *m, uint64_t out[MT_SWITCH_TRIGGERS][MT_SWITCH_RESULTS]) {
    pthread_mutex_lock(&m->mu);
    memcpy(out, m->switches, sizeof m->switches);
    pthread_mutex_unlock(&m->mu);
}

static const char *const TRIGGERS[MT_SWITCH_TRIGGERS] = {"update_expert_location", "eplb_rebalance", "periodic"};

const char *mt_metrics_switch_trigger_name(mt_switch_trigger trigger) { return TRIGGERS[trigger]; }

static void render_hist(mt_strbuf *o, const char *name, const char *help, const mt_histogram *h) {
    mt_strbuf_printf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int b = 0; b < h->n_bounds; b++) {
        cum += h->counts[b];
        mt_strbuf_printf(o, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[b], (unsigned long long)cum);
    }
    mt_strbuf_printf(o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name,
                     (unsigned long long)h->count, name, h->sum, name, (unsigned long long)h->count);
}

static void render_counter(mt_strbuf *o, const char *name, const char *help, uint64_t v) {
    mt_strbuf_printf(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, (unsigned long long)v);
}

void mt_metrics_render(mt_server_metrics *m, mt_strbuf *o) {
    static const char *const FINISH_NAMES[MT_FINISHED_KINDS] = {"length", "stop", "abort"};
    pthread_mutex_lock(&m->mu);
    mt_strbuf_puts(o, "# HELP moetrace_http_requests_total HTTP requests answered, by path and status code.\n"
                      "# TYPE moetrace_http_requests_total counter\n");
    for (int i = 0; i < m->n_http; i++)
        mt_strbuf_printf(o, "moetrace_http_requests_total{path=\"%s\",code=\"%d\"} %llu\n", m->http[i].path,
                         m->http[i].code, (unsigned long long)m->http[i].n);
    mt_strbuf_puts(o, "# HELP moetrace_requests_finished_total Generation requests finished, by finish reason.\n"
                      "# TYPE moetrace_requests_finished_total counter\n");
    for (int k = 0; k < MT_FINISHED_KINDS; k++)
        mt_strbuf_printf(o, "moetrace_requests_finished_total{finish_reason=\"%s\"} %llu\n", FINISH_NAMES[k],
                         (unsigned long long)m->finished[k]);
    render_counter(o, "moetrace_requests_rejected_total", "Generation requests refused by the engine (bad input).",
                   m->rejected);
    render_counter(o, "moetrace_prompt_tokens_total", "Prompt tokens of finished requests.", m->prompt_tokens);
    render_counter(o, "moetrace_generation_tokens_total", "Tokens generated by finished requests.",
                   m->generation_tokens);
    render_counter(o, "moetrace_cached_prompt_tokens_total", "Prompt tokens served from the prefix cache.",
                   m->cached_prompt_tokens);
    render_hist(o, "moetrace_time_to_first_token_seconds", "Time from request arrival to its first generated token.",
                &m->ttft);
    render_hist(o, "moetrace_inter_token_latency_seconds", "Time between consecutive generated tokens of a request.",
                &m->itl);
    render_hist(o, "moetrace_e2e_request_latency_seconds", "Time from request arrival to its end.", &m->e2e);
    static const char *const RESULTS[MT_SWITCH_RESULTS] = {"applied", "skipped", "failed"};
    mt_strbuf_puts(o, "# HELP moetrace_expert_placement_switches_total Expert placement switches, by what asked for "
                      "them (an endpoint, or --enable-eplb every N passes) and their result.\n"
                      "# TYPE moetrace_expert_placement_switches_total counter\n");
    for (int t = 0; t < MT_SWITCH_TRIGGERS; t++)
        for (int r = 0; r < MT_SWITCH_RESULTS; r++)
            mt_strbuf_printf(o, "moetrace_expert_placement_switches_total{trigger=\"%s\",result=\"%s\"} %llu\n",
                             TRIGGERS[t], RESULTS[r], (unsigned long long)m->switches[t][r]);
    render_counter(o, "moetrace_expert_dumps_failed_total",
                   "Recorder windows that could not be written (the dump folder gone, the disk full): a dump's "
                   "window is kept for the next dump, a placement switch's is lost.", m->dumps_failed);
    pthread_mutex_unlock(&m->mu);
}
