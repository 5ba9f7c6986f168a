/* The expert distribution recorder endpoints (SPEC §5), GET or POST, with SGLang's plain-text
 * answers (sglang/srt/entrypoints/http_server.py):
 *   /start_expert_distribution_record  drops what was recorded, starts recording
 *   /stop_expert_distribution_record   stops (the data stays until the next dump or start)
 *   /dump_expert_distribution_record   writes the dump into the dump dir and resets the data;
 *                                      ?inline=1 answers with the dump's JSON instead of text.
 * With --expert-dump-visualize a heatmap PNG is written beside every dump. With --domain-field the
 * domain usage (report/domain_usage.h) follows the recorder: started, stopped and reset with it,
 * and written at each dump into dump_dir/domain_usage_<ms>/ beside expert_distribution_<ms>.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/report.h"
#include "routing/stat_dump.h"
#include "server/server_internal.h"
#include "util/json_util.h"

static const char START_TEXT[] = "Start recording the expert distribution.\n";
static const char STOP_TEXT[] = "Stop recording the expert distribution.\n";
static const char DUMP_TEXT[] = "Dump expert distribution record.\n";

static int start_now(mt_engine *engine, void *ctx, mt_err *err) {
    (void)engine;
    (void)err;
    mt_server *s = ctx;
    mt_recorder_reset(s->b.recorder);
    mt_recorder_start(s->b.recorder);
    if (s->b.domains) {
        mt_domain_usage_reset(s->b.domains);
        mt_domain_usage_start(s->b.domains);
    }
    return 0;
}

int mt_api_start_record(mt_http_request *rq) {
    mt_server *s = rq->server;
    mt_recorder *r = s->b.recorder;
    /* as SGLang, a start while recording drops what was recorded, with a warning */
    if (mt_recorder_active(r))
        mt_log("expert distribution recorder: already recording; the data recorded so far is dropped (dump it "
               "first to keep it)");
    /* not while a placement switch or a dump takes and writes the window (placement_switch.h); with
     * domains, the recorder and the domains restart between the same two passes */
    pthread_mutex_lock(&s->window_mu);
    mt_err err;
    if (!s->b.domains || !mt_engine_loop_running(s->b.loop) || mt_engine_loop_between_passes(s->b.loop, start_now, s, &err))
        start_now(NULL, s, &err);
    pthread_mutex_unlock(&s->window_mu);
    mt_log("expert distribution recorder: started (%s)", mt_recorder_mode_name(mt_recorder_get_mode(r)));
    return mt_reply(rq, 200, "text/plain; charset=utf-8", START_TEXT, strlen(START_TEXT));
}

static int stop_now(mt_engine *engine, void *ctx, mt_err *err) {
    (void)engine;
    (void)err;
    mt_server *s = ctx;
    mt_recorder_stop(s->b.recorder);
    if (s->b.domains) mt_domain_usage_stop(s->b.domains);
    return 0;
}

int mt_api_stop_record(mt_http_request *rq) {
    mt_server *s = rq->server;
    if (!mt_recorder_active(s->b.recorder))
        mt_log("expert distribution recorder: stop while not recording (nothing changes)");
    /* with domains, the recorder and the domains stop between the same two passes (a stop in a pass
     * would drop it from the recorder's window but not from the domains': their counts would part) */
    pthread_mutex_lock(&s->window_mu);
    mt_err err;
    if (!s->b.domains || !mt_engine_loop_running(s->b.loop) || mt_engine_loop_between_passes(s->b.loop, stop_now, s, &err))
        stop_now(NULL, s, &err);
    pthread_mutex_unlock(&s->window_mu);
    mt_log("expert distribution recorder: stopped");
    return mt_reply(rq, 200, "text/plain; charset=utf-8", STOP_TEXT, strlen(STOP_TEXT));
}

void mt_server_visualize_dump(const char *json_path, int ep_size) {
    mt_stat_dump d;
    mt_err err;
    if (mt_stat_dump_load(json_path, &d, &err)) {
        mt_log("expert dump visualisation: %s", err.msg);
        return;
    }
    char png[4096];
    size_t n = strlen(json_path);
    snprintf(png, sizeof png, "%.*s.png", (int)(n > 5 ? n - 5 : n), json_path);
    mt_report_opts ro = {.ep_size = ep_size};
    if (mt_report_render(&d, png, &ro, &err)) mt_log("expert dump visualisation: %s", err.msg);
    else mt_log("expert distribution heatmap: %s", png);
    mt_stat_dump_free(&d);
}

/* What one dump takes: the recorder's window and, with domains, their usage of the same passes. */
typedef struct dump_take {
    mt_server *s;
    mt_recorder *window;
    mt_domain_window *domains;
    bool domains_failed; /* their take: they stay for the next dump */
    mt_err domains_err;
} dump_take;

static int take_now(mt_engine *engine, void *ctx, mt_err *err) {
    (void)engine;
    dump_take *t = ctx;
    mt_domain_usage *u = t->s->b.domains;
    if (!(t->window = mt_recorder_take(t->s->b.recorder, err))) return -1;
    if (u && mt_domain_usage_num_domains(u) > 0 && !(t->domains = mt_domain_usage_take(u, &t->domains_err)))
        t->domains_failed = true;
    return 0;
}

int mt_server_dump_recorder(mt_server *s, char *path, size_t path_len, mt_err *err) {
    dump_take t = {.s = s};
    /* not while a placement switch reads, plans on and dumps the window (placement_switch.h): its plan
     * would sit beside an emptied dump; dumps one at a time, from take to write (or put-back). The
     * placement's readers (/metrics, the dashboard) go on meanwhile: they take placement_mu only. */
    pthread_mutex_lock(&s->window_mu);
    mt_dump_writer_drain(s->dump_writer); /* a periodic rebalance's window, taken earlier, goes first */
    int rc;
    /* With domains, the window and the domains' usage are taken between the same two passes (on the
     * engine thread), so they count the same tokens; once the engine has stopped, here. Either way
     * they are written here, off the engine thread. */
    if (!s->b.domains || !mt_engine_loop_running(s->b.loop)) rc = take_now(NULL, &t, err);
    else rc = mt_engine_loop_between_passes(s->b.loop, take_now, &t, err);
    mt_window_files f = {.window = t.window, .put_back_into = s->b.recorder, .domains = t.domains,
                         .domains_picture = s->b.dump_visualize, .metrics = &s->metrics,
                         .next_of = s->b.recorder, .next_domains_of = s->b.domains};
    if (rc == 0 && mt_window_files_write(&f)) { /* logged there */
        rc = mt_errf(err, "%s", f.dump_err.msg);
    } else if (rc) { /* nothing taken */
        mt_metrics_dump_failed(&s->metrics);
        mt_log("expert distribution dump failed: %s", err->msg);
    }
    pthread_mutex_unlock(&s->window_mu);
    if (rc) return -1;
    snprintf(path, path_len, "%s", f.dump);
    if (s->b.dump_visualize) mt_server_visualize_dump(path, s->b.ep_size); /* the lock is not needed */
    if (t.domains_failed || f.domains_failed) /* it stays for the next dump */
        return mt_errf(err, "%s was written, but the domain usage not (it is kept for the next dump): %s", path,
                       t.domains_failed ? t.domains_err.msg : f.domains_err.msg);
    return 0;
}

int mt_api_dump_record(mt_http_request *rq) {
    char path[4096];
    mt_err err;
    if (mt_server_dump_recorder(rq->server, path, sizeof path, &err))
        return mt_reply_errorf(rq, 500, "cannot write the dump: %s", err.msg);
    const char *inline_arg = mt_http_query(rq, "inline");
    if (!inline_arg || !strcmp(inline_arg, "0") || !strcmp(inline_arg, "false"))
        return mt_reply(rq, 200, "text/plain; charset=utf-8", DUMP_TEXT, strlen(DUMP_TEXT));
    size_t len;
    char *text = mt_read_file(path, &len, &err); /* exactly what was written, read back */
    if (!text) return mt_reply_errorf(rq, 500, "cannot read the dump back: %s", err.msg);
    int status = mt_reply(rq, 200, "application/json", text, len);
    free(text);
    return status;
}
