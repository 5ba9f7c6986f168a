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
    free(p->bias_ids);
    free(p->bias_values);
    for (int i = 0; i < p->n_stop_strings; i++) free(p->stop_strings[i]);
    free(p->stop_strings);
    p->stop_ids = p->logprob_ids = p->bias_ids = NULL;
    p->bias_values = NULL;
    p->stop_strings = NULL;
    p->n_stop_ids = p->n_stop_strings = p->n_logprob_ids = p->n_bias = 0;
}

/* A malloc'd copy of the n elements of `size` bytes at src; NULL when n is 0 or out of memory. */
static void *dup_array(const void *src, int n, size_t size) {
    void *out = n > 0 ? malloc((size_t)n * size) : NULL;
    if (out) memcpy(out, src, (size_t)n * size);
    return out;
}

int mt_gen_params_copy(mt_gen_params *out, const mt_gen_params *p) {
    *out = *p;
    out->stop_strings = NULL;
    out->n_stop_strings = 0; /* counts the strings copied so far, for mt_gen_params_free */
    out->logprob_ids = dup_array(p->logprob_ids, p->n_logprob_ids, sizeof *p->logprob_ids);
    out->stop_ids = dup_array(p->stop_ids, p->n_stop_ids, sizeof *p->stop_ids);
    out->bias_ids = dup_array(p->bias_ids, p->n_bias, sizeof *p->bias_ids);
    out->bias_values = dup_array(p->bias_values, p->n_bias, sizeof *p->bias_values);
    if ((p->n_logprob_ids > 0 && !out->logprob_ids) || (p->n_stop_ids > 0 && !out->stop_ids) ||
        (p->n_bias > 0 && (!out->bias_ids || !out->bias_values)))
        goto oom;
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
    free(j->logprobs);
    free(j->ids_logprobs);
    free(j->prompt_ids_logprobs);
    free(j->top_ids);
    free(j->top_logprobs);
    free(j->prompt_logprobs);
    free(j->prompt_top_ids);
    free(j->prompt_top_logprobs);
    free(j->text_at);
}

/* j's log-probability results, as p asks for a prompt of n_prompt tokens (the prompt's lists only
 * where the engine scores it); -1 when out of memory (free_scores frees what was made). */
static int alloc_scores(mt_gen_job *j, const mt_gen_params *p, int n_prompt) {
    if (!p->return_logprob) return 0;
    size_t outs = (size_t)p->max_new_tokens + 1, prompt = (size_t)n_prompt;
    size_t scored = mt_gen_params_score_from(p, n_prompt) ? prompt : 0;
    j->n_top = p->top_logprobs;
    j->n_ids = p->n_logprob_ids;
    size_t top = (size_t)j->n_top, ids = (size_t)j->n_ids;
    j->logprobs = malloc(outs * sizeof *j->logprobs);
    j->text_at = malloc(outs * sizeof *j->text_at);
    j->prompt_logprobs = malloc(prompt * sizeof *j->prompt_logprobs);
    if (top) {
        j->top_ids = malloc(outs * top * sizeof *j->top_ids);
        j->top_logprobs = malloc(outs * top * sizeof *j->top_logprobs);
    }
    if (top && scored) {
        j->prompt_top_ids = malloc(scored * top * sizeof *j->prompt_top_ids);
        j->prompt_top_logprobs = malloc(scored * top * sizeof *j->prompt_top_logprobs);
    }
    if (ids) j->ids_logprobs = malloc(outs * ids * sizeof *j->ids_logprobs);
    if (ids && scored) j->prompt_ids_logprobs = malloc(scored * ids * sizeof *j->prompt_ids_logprobs);
    if (!j->logprobs || !j->text_at || !j->prompt_logprobs || (top && (!j->top_ids || !j->top_logprobs)) ||
        (top && scored && (!j->prompt_top_ids || !j->prompt_top_logprobs)) || (ids && !j->ids_logprobs) ||
        (ids && scored && !j->prompt_ids_logprobs))
        return -1;
    for (size_t i = 0; i < prompt; i++) j->prompt_logprobs[i] = NAN;   /* none scored yet */
    return 0;
}

mt_gen_job *mt_gen_job_new(int64_t id, int32_t *prompt, int n_prompt, mt_gen_params *params) {
    mt_gen_job *j = calloc(1, sizeof *j);
    int32_t *output = malloc(((size_t)params->max_new_tokens + 1) * sizeof *output);
    if (!j || !output || alloc_scores(j, params, n_prompt)) {
        if (j) free_scores(j);
        free(j);
        free(output);
        return NULL;
    }
    j->id = id;
    j->prompt = prompt;
    j->n_prompt = n_prompt;
    j->params = *params;
    memset(params, 0, sizeof *params);
    j->output = output;
    j->t_arrival = mt_now_s();
    j->matched_string = -1;
    pthread_mutex_init(&j->mu, NULL);
    init_monotonic_cond(&j->changed);
    atomic_init(&j->refs, 1);
    return j;
}

int mt_gen_job_attach_text(mt_gen_job *j, const mt_tokenizer *tok) {
    bool skip = j->params.skip_special_tokens;
    if (!(j->detok = mt_detok_stream_new(tok, skip))) return -1;
    if (skip && j->params.n_stop_strings > 0 && !(j->stop_detok = mt_detok_stream_new(tok, 0))) return -1;
    return 0;
}

void mt_gen_job_ref(mt_gen_job *j) { atomic_fetch_add(&j->refs, 1); }

void mt_gen_job_unref(mt_gen_job *j) {
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    free(j->prompt);
    mt_gen_params_free(&j->params);
    mt_detok_stream_free(j->detok);
    mt_detok_stream_free(j->stop_detok);
    free(j->output);
    free_scores(j);
    mt_strbuf_free(&j->text);
    mt_strbuf_free(&j->stop_text);
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
