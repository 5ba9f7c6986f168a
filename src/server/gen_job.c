#include "server/gen_job.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void mt_gen_params_free(mt_gen_params *p) {
    free(p->stop_ids);
    for (int i = 0; i < p->n_stop_strings; i++) free(p->stop_strings[i]);
    free(p->stop_strings);
    p->stop_ids = NULL;
    p->stop_strings = NULL;
    p->n_stop_ids = p->n_stop_strings = 0;
}

double mt_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

mt_gen_job *mt_gen_job_new(int64_t id, int32_t *prompt, int n_prompt, mt_gen_params *params) {
    mt_gen_job *j = calloc(1, sizeof *j);
    int32_t *output = malloc(((size_t)params->max_new_tokens + 1) * sizeof *output);
    float *logprobs = params->return_logprob ? malloc(((size_t)params->max_new_tokens + 1) * sizeof *logprobs) : NULL;
    if (!j || !output || (params->return_logprob && !logprobs)) {
        free(j);
        free(output);
        free(logprobs);
        return NULL;
    }
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
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->changed, &ca);
    pthread_condattr_destroy(&ca);
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
    mt_strbuf_free(&j->text);
    free(j->routing);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->changed);
    free(j);
}

uint64_t mt_gen_job_wait_locked(mt_gen_job *j, uint64_t seen, int timeout_ms) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (j->version == seen) {
        if (pthread_cond_timedwait(&j->changed, &j->mu, &until) == ETIMEDOUT) break;
    }
    return j->version;
}
