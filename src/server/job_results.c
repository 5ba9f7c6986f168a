/* Engine events into job results. See job_results.h. */
#include "server/job_results.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routing/routing_wire.h"

static size_t utf8_char_start(const char *s, size_t len, size_t at) {
    while (at > 0 && at < len && ((unsigned char)s[at] & 0xC0) == 0x80) at--;
    return at;
}

/* Appends decoded text; cuts it at the first stop string. Returns true when a stop string matched. */
static bool append_text(mt_gen_job *j, const char *piece, size_t n) {
    size_t old = j->text.len;
    mt_strbuf_append(&j->text, piece, n);
    size_t longest = 0;
    for (int i = 0; i < j->params.n_stop_strings; i++) {
        size_t sl = strlen(j->params.stop_strings[i]);
        longest = sl > longest ? sl : longest;
    }
    if (longest > 0) {
        size_t from = old >= longest - 1 ? old - (longest - 1) : 0;
        const char *best = NULL;
        for (int i = 0; i < j->params.n_stop_strings; i++) {
            const char *stop = j->params.stop_strings[i];
            const char *hit = memmem(j->text.data + from, j->text.len - from, stop, strlen(stop));
            if (hit && (!best || hit < best)) {
                best = hit;
                j->matched_string = i;
            }
        }
        if (best) {
            size_t at = (size_t)(best - j->text.data);
            if (j->params.no_stop_trim) at += strlen(j->params.stop_strings[j->matched_string]);
            mt_strbuf_truncate(&j->text, at);
            j->text_stable = at;
            j->stop_matched = true;
            return true;
        }
    }
    size_t stable = j->text.len >= longest ? j->text.len - (longest ? longest - 1 : 0) : 0;
    stable = utf8_char_start(j->text.data, j->text.len, stable);
    if (stable > j->text_stable) j->text_stable = stable;
    return false;
}

/* Output tokens [from, from + n)'s alternatives, from the engine's lists of ev->n_top == j->n_top. */
static void take_top(mt_gen_job *j, int from, const int32_t *ids, const float *lps, int n) {
    size_t at = (size_t)from * j->n_top, len = (size_t)n * j->n_top;
    memcpy(j->top_ids + at, ids, len * sizeof *ids);
    memcpy(j->top_logprobs + at, lps, len * sizeof *lps);
}

/* The prompt's scores, from the first event that carries them (the first token, or the end). */
static void take_prompt_scores(mt_gen_job *j, const mt_engine_event *ev) {
    if (j->prompt_scored || !j->prompt_logprobs || !ev->prompt_logprobs) return;
    memcpy(j->prompt_logprobs, ev->prompt_logprobs, (size_t)j->n_prompt * sizeof *j->prompt_logprobs);
    if (j->prompt_ids_logprobs && ev->prompt_ids_logprobs)
        memcpy(j->prompt_ids_logprobs, ev->prompt_ids_logprobs, (size_t)j->n_prompt * j->n_ids * sizeof(float));
    if (j->prompt_top_ids && ev->prompt_top_ids) {
        size_t len = (size_t)j->n_prompt * j->n_top;
        memcpy(j->prompt_top_ids, ev->prompt_top_ids, len * sizeof *j->prompt_top_ids);
        memcpy(j->prompt_top_logprobs, ev->prompt_top_logprobs, len * sizeof *j->prompt_top_logprobs);
    }
    j->prompt_scored = true;
}

bool mt_job_take_token(mt_gen_job *j, const mt_engine_event *ev, double now, bool *first, double *since) {
    bool matched = false;
    pthread_mutex_lock(&j->mu);
    if (j->n_output <= j->params.max_new_tokens) {
        if (j->logprobs) j->logprobs[j->n_output] = ev->logprob;
        if (j->top_ids && ev->top_ids) take_top(j, j->n_output, ev->top_ids, ev->top_logprobs, 1);
        if (j->ids_logprobs && ev->ids_logprobs)
            memcpy(j->ids_logprobs + (size_t)j->n_output * j->n_ids, ev->ids_logprobs, (size_t)j->n_ids * sizeof(float));
        j->output[j->n_output++] = ev->token;
    }
    take_prompt_scores(j, ev);
    *first = j->n_output == 1;
    if (*first) j->t_first_token = now;
    *since = now - (*first ? j->t_arrival : j->t_last_token);
    j->t_last_token = now;
    if (j->detok && !j->stop_matched) {
        char *piece = NULL;
        size_t len = 0;
        mt_err err;
        if (mt_detok_stream_feed(j->detok, &ev->token, 1, &piece, &len, &err) == 0) matched = append_text(j, piece, len);
        free(piece);
    }
    mt_gen_job_changed(j);
    pthread_mutex_unlock(&j->mu);
    return matched;
}

mt_finish_label mt_job_take_end(mt_gen_job *j, const mt_engine_event *ev, const mt_config *c, double *e2e) {
    mt_finish_label label;
    pthread_mutex_lock(&j->mu);
    if (j->detok && !j->stop_matched) {
        char *rest = NULL;
        size_t len = 0;
        mt_err err;
        if (mt_detok_stream_finish(j->detok, &rest, &len, &err) == 0) append_text(j, rest, len);
        free(rest);
    }
    j->text_stable = j->text.len;
    int n_out = ev->n_generated <= j->params.max_new_tokens ? ev->n_generated : j->params.max_new_tokens;
    if (n_out > 0) memcpy(j->output, ev->output, (size_t)n_out * sizeof *j->output);
    if (n_out > 0 && j->logprobs && ev->logprobs) memcpy(j->logprobs, ev->logprobs, (size_t)n_out * sizeof *j->logprobs);
    if (n_out > 0 && j->top_ids && ev->top_ids) take_top(j, 0, ev->top_ids, ev->top_logprobs, n_out);
    if (n_out > 0 && j->ids_logprobs && ev->ids_logprobs)
        memcpy(j->ids_logprobs, ev->ids_logprobs, (size_t)n_out * j->n_ids * sizeof(float));
    take_prompt_scores(j, ev);
    j->n_output = n_out;
    if (j->stop_matched) {
        j->finish = MT_JOB_STOP_STRING;
        label = MT_FINISHED_STOP;
    } else if (ev->reason == MT_FINISH_STOP) {
        j->finish = MT_JOB_STOP_TOKEN;
        j->matched_token = n_out > 0 ? j->output[n_out - 1] : -1;
        label = MT_FINISHED_STOP;
    } else if (ev->reason == MT_FINISH_LENGTH) {
        j->finish = MT_JOB_LENGTH;
        label = MT_FINISHED_LENGTH;
    } else {
        j->finish = MT_JOB_ABORTED;
        label = MT_FINISHED_ABORT;
    }
    j->n_cached = ev->n_cached;
    if (j->params.return_routing) {
        int start = j->params.routing_start < ev->routing_rows ? j->params.routing_start : ev->routing_rows;
        size_t row = (size_t)c->num_hidden_layers * c->top_k;
        size_t count = (size_t)(ev->routing_rows - start) * row;
        j->routing = malloc(count * mt_routing_dtype_size(j->params.routing_dtype) + 1);
        if (j->routing) {
            mt_routing_pack(ev->routing + (size_t)start * row, count, j->params.routing_dtype, j->routing);
            j->routing_rows = ev->routing_rows - start;
        } else {
            snprintf(j->error, sizeof j->error, "out of memory for the routing of %d tokens", ev->routing_rows);
        }
    }
    j->state = MT_JOB_FINISHED;
    j->t_finished = mt_now_s();
    mt_gen_job_changed(j);
    *e2e = j->t_finished - j->t_arrival;
    pthread_mutex_unlock(&j->mu);
    return label;
}
