#include "server/gen_job.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void mt_gen_params_free(mt_gen_params *p) {
    free(p->stop_ids);
    free(p->logprob_ids);
    p->logprob_ids = NULL;
    p->n_logprob_ids = 0;
    for (int i = 0; i < p->n_stop_strings; i++) free(p->stop_strings[i]);
    free(p->stop_strings);
    p->stop_ids = NULL;
    p->stop_strings = NULL;
    p->n_stop_ids = p->n_stop_strings = 0;
}

int mt_gen_params_copy(mt_gen_params *out, const mt_gen_params *p) {
    *out = *p;
    out->stop_ids = NULL;
    out->stop_strings = NULL;
    out->n_stop_ids = out->n_stop_strings = 0;
    out->logprob_ids = NULL;
    out->n_logprob_ids = 0;
    if (p->n_logprob_ids > 0) {
        if (!(out->logprob_ids = malloc((size_t)p->n_logprob_ids * sizeof *out->logprob_ids))) return -1;
        memcpy(out->logprob_ids, p->logprob_ids, (size_t)p->n_logprob_ids * sizeof *out->logprob_ids);
        out->n_logprob_ids = p->n_logprob_ids;
    }
    if (p->n_stop_ids > 0) {
        if (!(out->stop_ids = malloc((size_t)p->n_stop_ids * sizeof *out->stop_ids))) return -1;
        memcpy(out->stop_ids, p->stop_ids, (size_t)p->n_stop_ids * sizeof *out->stop_ids);
        out->n_stop_ids = p->n_stop_ids;
    }
    if (p->n_stop_strings > 0) {
        if (!(out->stop_strings = calloc((size_t)p->n_stop_strings, sizeof *out->stop_strings))) goto oom;
        for (int i = 0; i < p->n_stop_strings; i++) {
            if (!(out->stop_strings[i] = strdup(p->stop_strings[i]))) goto oom;
            out->n_stop_strings = i + 1;
        }
    }
    return 0;
oom:
    mt_gen_params_free(out);
    return -1;
}

static void init_monotonic_cond(pthread_cond_t *c) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
}

/* The absolute monotonic time timeout_ms from now. */
static struct timespec deadline_in(int timeout_ms) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    return until;
}

mt_job_signal *mt_job_signal_new(void) {
    mt_job_signal *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->mu, NULL);
    init_monotonic_cond(&s->changed);
    atomic_init(&s->refs, 1);
    return s;
}

void mt_job_signal_ref(mt_job_signal *s) { atomic_fetch_add(&s->refs, 1); }

void mt_job_signal_unref(mt_job_signal *s) {
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->changed);
    free(s);
}

uint64_t mt_job_signal_count(mt_job_signal *s) {
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->count;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void mt_job_signal_wait(mt_job_signal *s, uint64_t seen, int timeout_ms) {
    struct timespec until = deadline_in(timeout_ms);
    pthread_mutex_lock(&s->mu);
    while (s->count == seen)
        if (pthread_cond_timedwait(&s->changed, &s->mu, &until) == ETIMEDOUT) break;
    pthread_mutex_unlock(&s->mu);
}

void mt_gen_job_changed(mt_gen_job *j) {
    j->version++;
    pthread_cond_broadcast(&j->changed);
    if (!j->signal) return;
    pthread_mutex_lock(&j->signal->mu);
    j->signal->count++;
    pthread_cond_broadcast(&j->signal->changed);
    pthread_mutex_unlock(&j->signal->mu);
}

void mt_job_name_numbered(char *out, const char *base, int k) {
    char suffix[16];
    int n = snprintf(suffix, sizeof suffix, "_%d", k);
    size_t len = strlen(base), room = MT_JOB_NAME_LEN - 1 - (size_t)n;
    if (len > room) len = room;
    memcpy(out, base, len);
    memcpy(out + len, suffix, (size_t)n + 1);
}

double mt_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void free_scores(mt_gen_job *j) {
    free(j->ids_logprobs);
    free(j->prompt_ids_logprobs);
    free(j->top_ids);
    free(j->top_logprobs);
    free(j->prompt_logprobs);
    free(j->prompt_top_ids);
    free(j->prompt_top_logprobs);
}

mt_gen_job *mt_gen_job_new(int64_t id, int32_t *prompt, int n_prompt, mt_gen_params *params) {
    mt_gen_job *j = calloc(1, sizeof *j);
    int32_t *output = malloc(((size_t)params->max_new_tokens + 1) * sizeof *output);
    bool lp = params->return_logprob;
    size_t n_top = lp ? (size_t)params->top_logprobs : 0, outs = (size_t)params->max_new_tokens + 1;
    float *logprobs = lp ? malloc(outs * sizeof *logprobs) : NULL;
    /* the prompt's scores, only where they are computed (a start before its last token) */
    size_t scored = lp && params->logprob_start >= 0 && params->logprob_start + 1 < n_prompt ? (size_t)n_prompt : 0;
    if (j && lp) {
        j->n_top = (int)n_top;
        j->prompt_logprobs = malloc((size_t)n_prompt * sizeof *j->prompt_logprobs);
        if (n_top) {
            j->top_ids = malloc(outs * n_top * sizeof *j->top_ids);
            j->top_logprobs = malloc(outs * n_top * sizeof *j->top_logprobs);
        }
        if (n_top && scored) {
            j->prompt_top_ids = malloc(scored * n_top * sizeof *j->prompt_top_ids);
            j->prompt_top_logprobs = malloc(scored * n_top * sizeof *j->prompt_top_logprobs);
        }
        j->n_ids = params->n_logprob_ids;
        if (j->n_ids) j->ids_logprobs = malloc(outs * (size_t)j->n_ids * sizeof *j->ids_logprobs);
        if (j->n_ids && scored) j->prompt_ids_logprobs = malloc(scored * (size_t)j->n_ids * sizeof *j->prompt_ids_logprobs);
    }
    if (!j || !output || (lp && (!logprobs || !j->prompt_logprobs)) || (n_top && (!j->top_ids || !j->top_logprobs)) ||
        (n_top && scored && (!j->prompt_top_ids || !j->prompt_top_logprobs)) || (j && j->n_ids && !j->ids_logprobs) ||
        (j && j->n_ids && scored && !j->prompt_ids_logprobs)) {
        if (j) free_scores(j);
        free(j);
        free(output);
        free(logprobs);
        return NULL;
    }
    for (int p = 0; lp && p < n_prompt; p++) j->prompt_logprobs[p] = NAN;   /* none scored yet */
    j->id = id;
    j->prompt = prompt;
    j->n_prompt = n_prompt;
    j->params = *params;
    memset(params, 0, sizeof *params);
    j->output = output;
    j->logprobs = logprobs;
    j->t_arrival = mt_now_s();
    j->matched_string = -1;
    pthread_mutex_init(&j->mu, NULL);
    init_monotonic_cond(&j->changed);
    atomic_init(&j->refs, 1);
    return j;
}

void mt_gen_job_ref(mt_gen_job *j) { atomic_fetch_add(&j->refs, 1); }

void mt_gen_job_unref(mt_gen_job *j) {
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    free(j->prompt);
    mt_gen_params_free(&j->params);
    mt_detok_stream_free(j->detok);
    free(j->output);
    free(j->logprobs);
    free_scores(j);
    mt_strbuf_free(&j->text);
    free(j->routing);
    mt_job_signal_unref(j->signal);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->changed);
    free(j);
}

uint64_t mt_gen_job_wait_locked(mt_gen_job *j, uint64_t seen, int timeout_ms) {
    struct timespec until = deadline_in(timeout_ms);
    while (j->version == seen) {
        if (pthread_cond_timedwait(&j->changed, &j->mu, &until) == ETIMEDOUT) break;
    }
    return j->version;
}
