/* A switch's files, written where the caller is or on the dump writer's thread (dump_writer.h). */
#include "server/dump_writer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routing/stat_dump.h"
#include "server/server_internal.h"
#include "util/atomic_write.h"

/* f->plan as <dump dir>/expert_placement_<ms>.json beside <dump dir>/expert_distribution_<ms>.json. */
static void write_plan(mt_window_files *f) {
    char path[sizeof f->plan_path];
    if (mt_stat_dump_sibling(f->dump, "expert_placement_", ".json", path, sizeof path)) return;
    cJSON *o = mt_placement_to_json(f->plan);
    char *text = o ? cJSON_Print(o) : NULL;
    mt_err err;
    if (!text) mt_log("the planned placement could not be written (out of memory)");
    else if (mt_atomic_write(path, text, strlen(text), &err)) mt_log("the planned placement was not written: %s", err.msg);
    else {
        mt_log("planned placement written to %s", path);
        snprintf(f->plan_path, sizeof f->plan_path, "%s", path);
    }
    free(text);
    cJSON_Delete(o);
}

/* The domains' usage of the window dumped to f->dump, into domain_usage_<ms>/ beside it. When it
 * cannot be written (nothing of it is left), it goes back into the server's domain usage, so the next
 * dump's counts it; a switch's is dropped there, as the switch dropped what came before it. */
static void write_domains(mt_window_files *f) {
    char dir[4096], json[4096];
    if (mt_stat_dump_sibling(f->dump, "domain_usage_", "", dir, sizeof dir))
        mt_errf(&f->domains_err, "unexpected dump name %s", f->dump);
    else if (!mt_domain_window_write(f->domains, dir, f->domains_picture, json, sizeof json, &f->domains_err)) {
        mt_log("expert use per domain: %s", json);
        return;
    }
    f->domains_failed = true;
    bool kept = mt_domain_usage_put_back(f->domains);
    f->domains = NULL;
    mt_log("expert use per domain not written%s: %s", kept ? " (kept for the next dump)" : "", f->domains_err.msg);
}

int mt_window_files_write(mt_window_files *f) {
    /* first, so that they are ready even when the next take comes before the files are written */
    mt_err ignored; /* out of memory: the next take makes its own */
    if (f->next_of) mt_recorder_prepare_twin(f->next_of, &ignored);
    if (f->next_domains_of) mt_domain_usage_ready_take(f->next_domains_of, &ignored);
    const char *what = f->put_back_into ? "expert distribution dump" : "expert distribution dump (before the placement switch)";
    f->dump[0] = f->plan_path[0] = '\0';
    f->dump_failed = f->domains_failed = false;
    bool dumped = f->window != NULL;
    if (f->window) {
        int rc = f->put_back_into ? mt_recorder_dump_window(f->put_back_into, f->window, f->dump, sizeof f->dump, &f->dump_err)
                                  : mt_recorder_dump(f->window, f->dump, sizeof f->dump, &f->dump_err);
        if (!f->put_back_into) mt_recorder_free(f->window);
        f->window = NULL;
        if (rc) {
            f->dump[0] = '\0';
            f->dump_failed = true;
            if (f->metrics) mt_metrics_dump_failed(f->metrics);
            mt_log("%s failed%s: %s", what, f->put_back_into ? " (the window is kept for the next dump)" : "",
                   f->dump_err.msg);
        } else {
            mt_log("%s: %s", what, f->dump);
        }
    }
    if (f->domains && dumped && !f->dump_failed) {
        write_domains(f);
    } else if (f->domains && dumped) {
        f->domains_failed = true;
        mt_errf(&f->domains_err, "its window's dump failed");
        if (f->put_back_into) { /* kept with the window for the next dump */
            mt_domain_usage_put_back(f->domains);
            f->domains = NULL;
        } else {
            mt_log("expert use per domain not written: its window's dump failed");
        }
    }
    mt_domain_window_free(f->domains);
    f->domains = NULL;
    if (f->dump[0] && f->plan) write_plan(f);
    if (f->dump[0] && f->heatmap_ep_size > 0) mt_server_visualize_dump(f->dump, f->heatmap_ep_size);
    return f->dump_failed ? -1 : 0;
}

typedef struct job {
    mt_window_files files;
    mt_placement *plan; /* owned */
    struct job *next;
} job;

struct mt_dump_writer {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* a job came, or stop */
    pthread_cond_t idle; /* the queue emptied */
    job *head, *tail;
    int queued;          /* jobs on the queue */
    bool busy;           /* a job is being written (taken off the queue) */
    bool stop;
    pthread_t thread;
};

static void *writer_main(void *arg) {
    mt_dump_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stop) pthread_cond_wait(&w->wake, &w->mu);
        if (!w->head) break; /* stop, with nothing left */
        job *j = w->head;
        w->head = j->next;
        w->queued--;
        if (!w->head) w->tail = NULL;
        w->busy = true;
        pthread_mutex_unlock(&w->mu);
        mt_window_files_write(&j->files);
        mt_placement_destroy(j->plan);
        free(j);
        pthread_mutex_lock(&w->mu);
        w->busy = false;
        if (!w->head) pthread_cond_broadcast(&w->idle);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

mt_dump_writer *mt_dump_writer_new(mt_err *err) {
    mt_dump_writer *w = calloc(1, sizeof *w);
    if (!w) {
        mt_errf(err, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->wake, NULL);
    pthread_cond_init(&w->idle, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w)) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->wake);
        pthread_cond_destroy(&w->idle);
        free(w);
        mt_errf(err, "cannot start the dump writer's thread");
        return NULL;
    }
    return w;
}

int mt_dump_writer_submit(mt_dump_writer *w, const mt_window_files *f, mt_placement *plan) {
    job *j = malloc(sizeof *j);
    if (!j) return -1;
    j->files = *f;
    j->files.plan = plan;
    j->plan = plan;
    j->next = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->tail) w->tail->next = j;
    else w->head = j;
    w->tail = j;
    w->queued++;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int mt_dump_writer_pending(mt_dump_writer *w) {
    if (!w) return 0;
    pthread_mutex_lock(&w->mu);
    int n = w->queued + (w->busy ? 1 : 0);
    pthread_mutex_unlock(&w->mu);
    return n;
}

void mt_dump_writer_drain(mt_dump_writer *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    while (w->head || w->busy) pthread_cond_wait(&w->idle, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

void mt_dump_writer_free(mt_dump_writer *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL); /* it writes what is queued first */
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->wake);
    pthread_cond_destroy(&w->idle);
    free(w);
}
