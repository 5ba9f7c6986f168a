/* The engine thread and its queue. See engine_loop.h. */
#include "server/engine_loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/weight_swap.h"
#include "server/job_results.h"

#define LIVE_BUCKETS 1024

typedef struct live_node {
    mt_gen_job *job;
    struct live_node *next;
} live_node;

typedef struct id_list {
    int64_t *ids;
    int n, cap;
} id_list;

typedef struct job_list {
    mt_gen_job **jobs;
    int n, cap;
} job_list;

/* Work a handler asks of the engine thread besides generation, done between steps. */
typedef enum task_kind {
    TASK_UPDATE_WEIGHTS,
    TASK_FLUSH_CACHE,
    TASK_ABORT,
    TASK_PAUSE,
    TASK_CONTINUE,
    TASK_BETWEEN_PASSES
} task_kind;

typedef struct loop_task {
    task_kind kind;
    const char *dir;           /* TASK_UPDATE_WEIGHTS: the checkpoint */
    const char *version;       /* its weight version, or NULL */
    const char *name;          /* TASK_ABORT: the jobs to cancel (mt_engine_loop_abort), NULL: all */
    bool abort_live;           /* cancel the running jobs instead of letting them finish */
    mt_pause_mode mode;        /* TASK_PAUSE */
    mt_engine_loop_fn fn;      /* TASK_BETWEEN_PASSES: the work and its argument */
    void *ctx;
    bool aborted;              /* engine thread: they were cancelled */
    /* results, under the loop's mu */
    bool done;
    int rc, held, flushed, n_aborted, n_paused;
    mt_err err;
    struct loop_task *next;
} loop_task;

struct mt_engine_loop {
    mt_model *model;
    mt_engine *engine;
    mt_server_metrics *metrics;
    pthread_t thread;

    /* shared with handlers, under mu */
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t task_done;
    job_list inbox;
    id_list cancels;
    loop_task *tasks, *tasks_tail; /* in order; the first is the one in progress */
    bool stopping, failed;
    mt_engine_stats stats;
    int n_live;
    int n_held;                /* jobs held back while the weights change or generation is paused */
    bool paused;               /* /pause_generation: no forward pass until /continue_generation (only
                                  the engine thread writes it) */
    long weight_updates, weight_updates_failed;
    char weight_version[MT_WEIGHT_VERSION_LEN];
    long every_passes;         /* mt_engine_loop_every_passes: 0 off */
    mt_engine_loop_fn every_fn;
    void *every_ctx;

    /* engine thread only */
    live_node *live[LIVE_BUCKETS];
    id_list self_cancels;      /* ids whose stop string matched during the last step */
    job_list held;             /* submitted during a weight update or a pause, admitted after it */
    long passes_counted;       /* forward passes since the periodic work last ran (or was restarted) */
    long preemptions_logged;   /* the engine's preemptions when the log last told of them */
    time_t preemptions_log_at; /* ... and when (at most one such line a minute) */
};

static void id_push(id_list *l, int64_t id) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        int64_t *p = realloc(l->ids, (size_t)cap * sizeof *p);
        if (!p) abort();
        l->ids = p;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
}

static void job_push(job_list *l, mt_gen_job *j) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        mt_gen_job **p = realloc(l->jobs, (size_t)cap * sizeof *p);
        if (!p) abort();
        l->jobs = p;
        l->cap = cap;
    }
    l->jobs[l->n++] = j;
}

static unsigned bucket_of(int64_t id) { return (unsigned)((uint64_t)id * 0x9E3779B97F4A7C15ull >> 54) % LIVE_BUCKETS; }

static void live_add(mt_engine_loop *l, mt_gen_job *j) {
    live_node *n = malloc(sizeof *n);
    if (!n) abort();
    unsigned b = bucket_of(j->id);
    n->job = j;
    n->next = l->live[b];
    l->live[b] = n;
}

static mt_gen_job *live_find(mt_engine_loop *l, int64_t id) {
    for (live_node *n = l->live[bucket_of(id)]; n; n = n->next)
        if (n->job->id == id) return n->job;
    return NULL;
}

static mt_gen_job *live_remove(mt_engine_loop *l, int64_t id) {
    for (live_node **p = &l->live[bucket_of(id)]; *p; p = &(*p)->next) {
        if ((*p)->job->id == id) {
            live_node *n = *p;
            mt_gen_job *j = n->job;
            *p = n->next;
            free(n);
            return j;
        }
    }
    return NULL;
}

/* ---- results (server/job_results.h) -------------------------------------------------------- */

static void on_token(mt_engine_loop *l, const mt_engine_event *ev) {
    mt_gen_job *j = live_find(l, ev->id);
    if (!j) return;
    bool first;
    double since;
    bool matched = mt_job_take_token(j, ev, mt_now_s(), &first, &since);
    if (first) mt_metrics_first_token(l->metrics, since);
    else mt_metrics_next_token(l->metrics, since);
    if (matched) id_push(&l->self_cancels, j->id);
}

static void on_finished(mt_engine_loop *l, const mt_engine_event *ev) {
    mt_gen_job *j = live_remove(l, ev->id);
    if (!j) return;
    double e2e;
    mt_finish_label label = mt_job_take_end(j, ev, &l->model->cfg, &e2e);
    mt_metrics_finished(l->metrics, label, ev->n_prompt, ev->n_generated, ev->n_cached, e2e);
    pthread_mutex_lock(&l->mu);
    l->n_live--;
    pthread_mutex_unlock(&l->mu);
    mt_gen_job_unref(j);
}

static void on_event(void *ctx, const mt_engine_event *ev) {
    if (ev->kind == MT_EVENT_TOKEN) on_token(ctx, ev);
    else on_finished(ctx, ev);
}

static void reject(mt_gen_job *j, bool busy, const char *why) {
    pthread_mutex_lock(&j->mu);
    j->state = MT_JOB_REJECTED;
    j->rejected_busy = busy;
    snprintf(j->error, sizeof j->error, "%s", why);
    mt_gen_job_changed(j);
    pthread_mutex_unlock(&j->mu);
}

/* ---- the thread --------------------------------------------------------------------------- */

static bool answers_to(const char *job_name, const char *name);

/* A running job named by its client that /abort_request could not tell apart from a job named name:
 * the same name, or one answering to the other's abort (name_<digits>, an output of a request of
 * several); NULL when there is none. */
static const mt_gen_job *live_clashing(mt_engine_loop *l, const char *name) {
    for (int b = 0; b < LIVE_BUCKETS; b++)
        for (live_node *n = l->live[b]; n; n = n->next)
            if (n->job->name_from_client &&
                (answers_to(n->job->name, name) || answers_to(name, n->job->name))) return n->job;
    return NULL;
}

static void admit_job(mt_engine_loop *l, mt_gen_job *j) {
    const mt_gen_job *clash = j->name_from_client ? live_clashing(l, j->name) : NULL;
    if (clash) {
        /* A job leaves the live table before it is marked finished, so a client that reuses a rid
         * once its response came is never refused. */
        char why[MT_ERR_LEN];
        if (!strcmp(clash->name, j->name))
            snprintf(why, sizeof why, "duplicate request id '%s': a request with that rid is still running", j->name);
        else
            snprintf(why, sizeof why, "request id '%s' clashes with the running request '%s': /abort_request "
                     "of either would cancel both", j->name, clash->name);
        mt_metrics_rejected(l->metrics);
        reject(j, false, why);
        mt_gen_job_unref(j);
        return;
    }
    snprintf(j->weight_version, sizeof j->weight_version, "%s", l->weight_version); /* only this thread writes it */
    mt_request r = {.id = j->id, .name = j->name, .prompt = j->prompt, .n_prompt = j->n_prompt,
                    .max_new_tokens = j->params.max_new_tokens, .ignore_eos = j->params.ignore_eos,
                    .sampling = j->params.sampling, .stop_ids = j->params.stop_ids, .n_stop = j->params.n_stop_ids,
                    .return_logprob = j->params.return_logprob, .group = j->params.group,
                    .probe = j->params.probe, .bias_ids = j->params.bias_ids,
                    .bias_values = j->params.bias_values, .n_bias = j->params.n_bias};
    if (j->params.return_logprob) {
        r.score_from = mt_gen_params_score_from(&j->params, j->n_prompt);
        r.top_logprobs = j->params.top_logprobs;
        r.logprob_ids = j->params.logprob_ids;
        r.n_logprob_ids = j->params.n_logprob_ids;
    }
    mt_err err = {{0}};
    if (mt_engine_submit(l->engine, &r, &err)) {
        /* The engine names the request by its internal id ("request 12: ..."), which means nothing
         * to the client. */
        const char *why = err.msg;
        if (!strncmp(why, "request ", 8) && strstr(why, ": ")) why = strstr(why, ": ") + 2;
        mt_metrics_rejected(l->metrics);
        reject(j, false, why);
        mt_gen_job_unref(j);
        return;
    }
    live_add(l, j);
    pthread_mutex_lock(&l->mu);
    l->n_live++;
    pthread_mutex_unlock(&l->mu);
    pthread_mutex_lock(&j->mu);
    j->state = MT_JOB_RUNNING;
    mt_gen_job_changed(j);
    pthread_mutex_unlock(&j->mu);
}

static void cancel_all_live(mt_engine_loop *l) {
    for (int b = 0; b < LIVE_BUCKETS; b++)
        for (live_node *n = l->live[b]; n; n = n->next) mt_engine_cancel(l->engine, n->job->id);
}

static void fail_engine(mt_engine_loop *l, const char *why) {
    mt_log("engine: %s; refusing new requests", why);
    for (int b = 0; b < LIVE_BUCKETS; b++) {
        for (live_node *n = l->live[b]; n; n = n->next) {
            pthread_mutex_lock(&n->job->mu);
            snprintf(n->job->error, sizeof n->job->error, "engine failed: %.900s", why);
            pthread_mutex_unlock(&n->job->mu);
        }
    }
    cancel_all_live(l);
    mt_engine_finish_cancelled(l->engine); /* without a forward pass (after the one in flight, if any) */
    pthread_mutex_lock(&l->mu);
    l->failed = true;
    pthread_mutex_unlock(&l->mu);
}

/* A cancel for a job held back by a weight update: it leaves the queue and ends as aborted, with no
 * tokens and no routing, as a job cancelled before its first pass ends. */
static void cancel_held(mt_engine_loop *l, int64_t id) {
    for (int i = 0; i < l->held.n; i++) {
        mt_gen_job *j = l->held.jobs[i];
        if (j->id != id) continue;
        memmove(l->held.jobs + i, l->held.jobs + i + 1, (size_t)(l->held.n - i - 1) * sizeof *l->held.jobs);
        l->held.n--;
        pthread_mutex_lock(&l->mu);
        l->n_held--;
        pthread_mutex_unlock(&l->mu);
        snprintf(j->weight_version, sizeof j->weight_version, "%s", l->weight_version);
        static const int32_t no_routing[1];
        mt_engine_event ev = {.kind = MT_EVENT_FINISHED, .id = j->id, .reason = MT_FINISH_CANCELLED,
                              .n_prompt = j->n_prompt, .routing = no_routing};
        double e2e;
        mt_finish_label label = mt_job_take_end(j, &ev, &l->model->cfg, &e2e);
        mt_metrics_finished(l->metrics, label, ev.n_prompt, 0, 0, e2e);
        mt_gen_job_unref(j);
        return;
    }
}

/* Ends task t (taken out of the queue) with rc (and err's message when rc != 0) and wakes its
 * caller. */
static void task_finish(mt_engine_loop *l, loop_task *t, int rc, const mt_err *err) {
    pthread_mutex_lock(&l->mu);
    loop_task **at = &l->tasks, *prev = NULL;
    while (*at && *at != t) prev = *at, at = &(*at)->next;
    if (*at) {
        *at = t->next;
        if (l->tasks_tail == t) l->tasks_tail = prev;
    }
    t->rc = rc;
    if (rc) t->err = *err;
    t->done = true;
    pthread_cond_broadcast(&l->task_done);
    pthread_mutex_unlock(&l->mu);
}

static void admit_held(mt_engine_loop *l, bool reject_them, const char *why) {
    for (int i = 0; i < l->held.n; i++) {
        if (reject_them) {
            reject(l->held.jobs[i], true, why);
            mt_gen_job_unref(l->held.jobs[i]);
        } else {
            admit_job(l, l->held.jobs[i]);
        }
    }
    l->held.n = 0;
    pthread_mutex_lock(&l->mu);
    l->n_held = 0;
    pthread_mutex_unlock(&l->mu);
}

/* Whether job name answers to the abort of name: the same, or name_<digits> (an output of a
 * request of several that gave name as its rid). */
static bool answers_to(const char *job_name, const char *name) {
    size_t n = strlen(name);
    if (strncmp(job_name, name, n)) return false;
    if (!job_name[n]) return true;
    if (job_name[n] != '_' || !job_name[n + 1]) return false;
    for (const char *p = job_name + n + 1; *p; p++)
        if (*p < '0' || *p > '9') return false;
    return true;
}

/* Cancels the live jobs named as name says (all when NULL) and refuses the held ones; returns how
 * many. */
static int abort_jobs(mt_engine_loop *l, const char *name) {
    int n = 0;
    for (int b = 0; b < LIVE_BUCKETS; b++)
        for (live_node *x = l->live[b]; x; x = x->next)
            if ((!name || answers_to(x->job->name, name)) && mt_engine_cancel(l->engine, x->job->id)) n++;
    for (int i = l->held.n - 1; i >= 0; i--) {
        if (name && !answers_to(l->held.jobs[i]->name, name)) continue;
        cancel_held(l, l->held.jobs[i]->id);
        n++;
    }
    return n;
}

/* The first task in the queue that is not a weight update (a flush, an abort, a pause or its end),
 * wherever it waits, or NULL. */
static loop_task *first_quick_task(mt_engine_loop *l) {
    pthread_mutex_lock(&l->mu);
    loop_task *t = l->tasks;
    while (t && t->kind == TASK_UPDATE_WEIGHTS) t = t->next;
    pthread_mutex_unlock(&l->mu);
    return t;
}

/* Whether a weight update waits in the queue (l->mu held). */
static bool update_queued_locked(const mt_engine_loop *l) {
    for (const loop_task *t = l->tasks; t; t = t->next)
        if (t->kind == TASK_UPDATE_WEIGHTS) return true;
    return false;
}

static bool update_queued(mt_engine_loop *l) {
    pthread_mutex_lock(&l->mu);
    bool queued = update_queued_locked(l);
    pthread_mutex_unlock(&l->mu);
    return queued;
}

static void set_paused(mt_engine_loop *l, bool paused) {
    pthread_mutex_lock(&l->mu);
    l->paused = paused;
    pthread_mutex_unlock(&l->mu);
}

static int live_count(mt_engine_loop *l) {
    pthread_mutex_lock(&l->mu);
    int n = l->n_live;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* /pause_generation: no forward pass from now on. abort: the jobs in the engine end now as aborted
 * (no pass needed to end them); retract: the running ones give their blocks back and wait first in
 * the queue; in place: they stay as they are. Jobs held back stay held. Returns the jobs it aborted,
 * retracted or left paused. */
static int pause_now(mt_engine_loop *l, mt_pause_mode mode) {
    set_paused(l, true);
    int n = live_count(l);
    if (mode == MT_PAUSE_ABORT) {
        cancel_all_live(l);
        mt_engine_finish_cancelled(l->engine);
    } else if (mode == MT_PAUSE_RETRACT) {
        n = mt_engine_retract(l->engine);
    }
    static const char *const NAMES[] = {"abort", "retract", "in_place"};
    mt_log("engine: generation paused (%s): %d request(s) %s", NAMES[mode], n,
           mode == MT_PAUSE_ABORT ? "aborted" : mode == MT_PAUSE_RETRACT ? "retracted" : "paused in place");
    return n;
}

/* /continue_generation: the engine steps again; the held jobs go in after those paused, unless a
 * weight update still waits (it lets them in when done). */
static void continue_now(mt_engine_loop *l) {
    if (!l->paused) return;
    set_paused(l, false);
    if (!update_queued(l)) admit_held(l, false, NULL);
    mt_log("engine: generation continued");
}

/* Runs every flush, abort, pause, continue and between-passes call at once, in their order, even behind a weight update
 * that waits for running jobs (an abort or a pause is what may let it go on); then moves the first
 * task on when it is an update: once the engine is idle, or at once while paused (running jobs
 * cancelled first when it asks), the weights change and the held jobs go on (not while paused). */
static void run_tasks(mt_engine_loop *l) {
    mt_err err = {{0}};
    for (loop_task *q; (q = first_quick_task(l));) {
        if (q->kind == TASK_FLUSH_CACHE) q->flushed = mt_engine_flush_prefix_cache(l->engine);
        else if (q->kind == TASK_ABORT) q->n_aborted = abort_jobs(l, q->name);
        else if (q->kind == TASK_PAUSE) q->n_paused = pause_now(l, q->mode);
        else if (q->kind == TASK_BETWEEN_PASSES) {   /* after the pass in flight, if any */
            task_finish(l, q, mt_engine_drain(l->engine, &err) || q->fn(l->engine, q->ctx, &err) ? -1 : 0, &err);
            continue;
        } else continue_now(l);
        task_finish(l, q, 0, &err);
    }
    pthread_mutex_lock(&l->mu);
    loop_task *t = l->tasks;
    pthread_mutex_unlock(&l->mu);
    if (!t) return;
    if (t->abort_live && !t->aborted) {
        cancel_all_live(l);
        t->aborted = true;
    }
    /* paused jobs never finish: the weights change under them (SGLang takes no lock while paused) */
    if (l->paused) mt_engine_finish_cancelled(l->engine);
    else if (!mt_engine_idle(l->engine)) return;
    int rc = mt_model_swap_weights(l->model, t->dir, &err);
    /* a device's pass scratch went with the old upload: the largest pass's is reserved again now,
     * where a shortage shows, rather than in the middle of a pass */
    if (rc == 0 && mt_engine_reserve(l->engine, &err)) rc = -2;
    if (rc == 0) {
        mt_engine_flush_prefix_cache(l->engine);
        pthread_mutex_lock(&l->mu);
        if (t->version) snprintf(l->weight_version, sizeof l->weight_version, "%s", t->version);
        pthread_mutex_unlock(&l->mu);
        mt_log("engine: weights updated from %s%s%s", t->dir, t->version ? ", version " : "", t->version ? t->version : "");
    } else {
        mt_log("engine: weight update from %s failed: %s", t->dir, err.msg);
    }
    pthread_mutex_lock(&l->mu);
    t->held = l->n_held + (l->paused ? l->n_live : 0);
    if (rc) l->weight_updates_failed++;
    else l->weight_updates++;
    pthread_mutex_unlock(&l->mu);
    if (rc == -2) fail_engine(l, err.msg);
    if (rc == -2 || !l->paused) admit_held(l, rc == -2, "the engine has failed");
    task_finish(l, t, rc ? -1 : 0, &err);
}

/* Tells the log, at most once a minute, that the KV cache ran out and requests were preempted. */
static void log_preemptions(mt_engine_loop *l, long preemptions, long recomputed) {
    time_t now = time(NULL);
    if (preemptions == l->preemptions_logged || (l->preemptions_log_at && now - l->preemptions_log_at < 60)) return;
    mt_log("engine: the KV cache ran out: %ld requests preempted so far (%ld more since the last report), %ld tokens "
           "forwarded again; their outputs are unchanged. A larger --kv-cache-fraction or --kv-blocks, or a smaller "
           "--max-running-requests, avoids it",
           preemptions, preemptions - l->preemptions_logged, recomputed);
    l->preemptions_logged = preemptions;
    l->preemptions_log_at = now;
}

/* The periodic work (mt_engine_loop_every_passes, its settings read with the iteration's others)
 * once its count of passes is reached. */
static void after_pass(mt_engine_loop *l, long every, mt_engine_loop_fn fn, void *ctx) {
    if (!fn || every <= 0 || ++l->passes_counted < every) return;
    mt_err err = {{0}};
    /* the work sees every pass counted: the one in flight (overlapped decode) ends first */
    if (mt_engine_drain(l->engine, &err)) {
        fail_engine(l, err.msg);
        return;
    }
    int rc = fn(l->engine, ctx, &err);
    if (rc == 1) return; /* not now: asked again after the next pass */
    if (rc < 0) mt_log("engine: the work done every %ld passes failed: %s", every, err.msg);
    l->passes_counted = 0;
}

static void *loop_main(void *arg) {
    mt_engine_loop *l = arg;
    job_list taken = {0};
    id_list cancels = {0};
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->stopping && l->inbox.n == 0 && l->cancels.n == 0 && !l->tasks &&
               (l->paused || mt_engine_idle(l->engine)))
            pthread_cond_wait(&l->wake, &l->mu);
        bool stopping = l->stopping, failed = l->failed;
        long every = l->every_passes;
        mt_engine_loop_fn every_fn = l->every_fn;
        void *every_ctx = l->every_ctx;
        loop_task *task = l->tasks;
        /* while a weight update waits or generation is paused, new jobs are held */
        bool hold = (update_queued_locked(l) || l->paused) && !stopping && !failed;
        if (hold) l->n_held += l->inbox.n;
        job_list swap_jobs = l->inbox;
        l->inbox = taken;
        taken = swap_jobs;
        id_list swap_ids = l->cancels;
        l->cancels = cancels;
        cancels = swap_ids;
        pthread_mutex_unlock(&l->mu);

        for (int i = 0; i < taken.n; i++) {
            if (stopping || failed) {
                reject(taken.jobs[i], true, stopping ? "the server is shutting down" : "the engine has failed");
                mt_gen_job_unref(taken.jobs[i]);
            } else if (hold) {
                job_push(&l->held, taken.jobs[i]);
            } else {
                admit_job(l, taken.jobs[i]);
            }
        }
        taken.n = 0;
        for (int i = 0; i < cancels.n; i++) {
            if (!mt_engine_cancel(l->engine, cancels.ids[i])) cancel_held(l, cancels.ids[i]);
        }
        cancels.n = 0;
        if (stopping || failed) {
            admit_held(l, true, stopping ? "the server is shutting down" : "the engine has failed");
            mt_err err;
            mt_errf(&err, stopping ? "the server is shutting down" : "the engine has failed");
            while (task) {
                task_finish(l, task, -1, &err);
                pthread_mutex_lock(&l->mu);
                task = l->tasks;
                pthread_mutex_unlock(&l->mu);
            }
        }
        if (stopping) cancel_all_live(l);
        if (stopping && mt_engine_idle(l->engine)) break;
        if (task) run_tasks(l);

        if (l->paused && !stopping) {
            mt_engine_finish_cancelled(l->engine); /* cancelled while paused: they end without a pass */
        } else if (!mt_engine_idle(l->engine)) {
            mt_err err = {{0}};
            int forwarded = mt_engine_step(l->engine, &err);
            if (forwarded < 0) fail_engine(l, err.msg);
            else if (forwarded > 0 && !stopping) after_pass(l, every, every_fn, every_ctx);
        }
        for (int i = 0; i < l->self_cancels.n; i++) mt_engine_cancel(l->engine, l->self_cancels.ids[i]);
        l->self_cancels.n = 0;
        pthread_mutex_lock(&l->mu);
        mt_engine_get_stats(l->engine, &l->stats);
        long preemptions = l->stats.preemptions, recomputed = l->stats.tokens_recomputed;
        pthread_mutex_unlock(&l->mu);
        log_preemptions(l, preemptions, recomputed);
    }
    free(taken.jobs);
    free(cancels.ids);
    return NULL;
}

mt_engine_loop *mt_engine_loop_start(mt_model *model, const mt_engine_opts *o, const mt_routing_sink *sink,
                                     mt_server_metrics *metrics, mt_err *err) {
    mt_engine_loop *l = calloc(1, sizeof *l);
    if (!l) {
        mt_errf(err, "out of memory");
        return NULL;
    }
    l->model = model;
    l->metrics = metrics;
    snprintf(l->weight_version, sizeof l->weight_version, "default");
    if (!(l->engine = mt_engine_new(model, o, on_event, l, sink, err))) {
        free(l);
        return NULL;
    }
    mt_engine_get_stats(l->engine, &l->stats);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->wake, NULL);
    pthread_cond_init(&l->task_done, NULL);
    if (pthread_create(&l->thread, NULL, loop_main, l)) {
        mt_engine_free(l->engine);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->wake);
        pthread_cond_destroy(&l->task_done);
        free(l);
        mt_errf(err, "cannot start the engine thread");
        return NULL;
    }
    return l;
}

void mt_engine_loop_submit(mt_engine_loop *l, mt_gen_job *j) {
    pthread_mutex_lock(&l->mu);
    if (l->stopping || l->failed) {
        bool stopping = l->stopping;
        pthread_mutex_unlock(&l->mu);
        reject(j, true, stopping ? "the server is shutting down" : "the engine has failed");
        return;
    }
    mt_gen_job_ref(j);
    job_push(&l->inbox, j);
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->mu);
}

void mt_engine_loop_cancel(mt_engine_loop *l, mt_gen_job *j) {
    pthread_mutex_lock(&l->mu);
    if (l->stopping) { /* every job gets cancelled anyway */
        pthread_mutex_unlock(&l->mu);
        return;
    }
    id_push(&l->cancels, j->id);
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->mu);
}

void mt_engine_loop_get_stats(mt_engine_loop *l, mt_engine_loop_stats *s) {
    pthread_mutex_lock(&l->mu);
    s->engine = l->stats;
    s->queued = l->inbox.n + l->n_held;
    s->live = l->n_live;
    s->failed = l->failed;
    s->weight_updates = l->weight_updates;
    s->weight_updates_failed = l->weight_updates_failed;
    s->paused = l->paused;
    pthread_mutex_unlock(&l->mu);
}

int mt_engine_loop_pending(mt_engine_loop *l) {
    pthread_mutex_lock(&l->mu);
    int n = l->inbox.n + l->n_held + l->n_live;
    pthread_mutex_unlock(&l->mu);
    return n;
}

void mt_engine_loop_stop(mt_engine_loop *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    bool running = !l->stopping;
    l->stopping = true;
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->mu);
    if (running) pthread_join(l->thread, NULL);
}

void mt_engine_loop_free(mt_engine_loop *l) {
    if (!l) return;
    mt_engine_loop_stop(l);
    free(l->inbox.jobs);
    free(l->cancels.ids);
    free(l->self_cancels.ids);
    free(l->held.jobs);
    mt_engine_free(l->engine);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->wake);
    pthread_cond_destroy(&l->task_done);
    free(l);
}

/* Queues t and waits until the engine thread has done it. */
static void run_on_engine_thread(mt_engine_loop *l, loop_task *t) {
    pthread_mutex_lock(&l->mu);
    if (l->stopping || l->failed) {
        t->done = true;
        t->rc = -1;
        mt_errf(&t->err, l->stopping ? "the server is shutting down" : "the engine has failed");
    } else {
        if (l->tasks_tail) l->tasks_tail->next = t;
        else l->tasks = t;
        l->tasks_tail = t;
        pthread_cond_signal(&l->wake);
    }
    while (!t->done) pthread_cond_wait(&l->task_done, &l->mu);
    pthread_mutex_unlock(&l->mu);
}

int mt_engine_loop_update_weights(mt_engine_loop *l, const char *dir, bool abort_live, const char *version, int *held,
                                  mt_err *err) {
    loop_task t = {.kind = TASK_UPDATE_WEIGHTS, .dir = dir, .version = version, .abort_live = abort_live};
    run_on_engine_thread(l, &t);
    if (held) *held = t.held;
    if (t.rc) *err = t.err;
    return t.rc;
}

int mt_engine_loop_flush_cache(mt_engine_loop *l, mt_err *err) {
    loop_task t = {.kind = TASK_FLUSH_CACHE};
    run_on_engine_thread(l, &t);
    if (t.rc) {
        *err = t.err;
        return -1;
    }
    return t.flushed;
}

void mt_engine_loop_weight_version(mt_engine_loop *l, char *out, size_t size) {
    pthread_mutex_lock(&l->mu);
    snprintf(out, size, "%s", l->weight_version);
    pthread_mutex_unlock(&l->mu);
}

int mt_engine_loop_abort(mt_engine_loop *l, const char *name, mt_err *err) {
    loop_task t = {.kind = TASK_ABORT, .name = name};
    run_on_engine_thread(l, &t);
    if (t.rc) {
        *err = t.err;
        return -1;
    }
    return t.n_aborted;
}

int mt_engine_loop_pause(mt_engine_loop *l, mt_pause_mode mode, mt_err *err) {
    loop_task t = {.kind = TASK_PAUSE, .mode = mode};
    run_on_engine_thread(l, &t);
    if (t.rc) {
        *err = t.err;
        return -1;
    }
    return t.n_paused;
}

int mt_engine_loop_continue(mt_engine_loop *l, mt_err *err) {
    loop_task t = {.kind = TASK_CONTINUE};
    run_on_engine_thread(l, &t);
    if (t.rc) *err = t.err;
    return t.rc;
}

int mt_engine_loop_between_passes(mt_engine_loop *l, mt_engine_loop_fn fn, void *ctx, mt_err *err) {
    loop_task t = {.kind = TASK_BETWEEN_PASSES, .fn = fn, .ctx = ctx};
    run_on_engine_thread(l, &t);
    if (t.rc) *err = t.err;
    return t.rc;
}

void mt_engine_loop_every_passes(mt_engine_loop *l, long n, mt_engine_loop_fn fn, void *ctx) {
    pthread_mutex_lock(&l->mu);
    l->every_passes = n > 0 && fn ? n : 0;
    l->every_fn = fn;
    l->every_ctx = ctx;
    pthread_mutex_unlock(&l->mu);
}

void mt_engine_loop_restart_count(mt_engine_loop *l) { l->passes_counted = 0; }

bool mt_engine_loop_running(mt_engine_loop *l) {
    pthread_mutex_lock(&l->mu);
    bool running = !l->stopping && !l->failed;
    pthread_mutex_unlock(&l->mu);
    return running;
}

bool mt_engine_loop_paused(mt_engine_loop *l) {
    pthread_mutex_lock(&l->mu);
    bool paused = l->paused;
    pthread_mutex_unlock(&l->mu);
    return paused;
}
