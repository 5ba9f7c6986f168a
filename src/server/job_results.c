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

static size_t longest_stop(const mt_gen_params *p) {
    size_t longest = 0;
    for (int i = 0; i < p->n_stop_strings; i++) {
        size_t sl = strlen(p->stop_strings[i]);
        longest = sl > longest ? sl : longest;
    }
    return longest;
}

/* Where in a text an occurrence of a stop string of len bytes may start so that it starts at or
 * after from and ends after the text's first floor_len bytes. */
static size_t stop_start_bound(size_t from, size_t floor_len, size_t len) {
    size_t past_floor = floor_len + 1 > len ? floor_len + 1 - len : 0;
    return past_floor > from ? past_floor : from;
}

/* The earliest stop string in t[from, t->len) that ends after t's first floor_len bytes (of two at
 * one place, the first listed): its offset in t, or -1; *which its index. */
static long find_stop(const mt_gen_params *p, const mt_strbuf *t, size_t from, size_t floor_len, int *which) {
    const char *best = NULL;
    for (int i = 0; i < p->n_stop_strings; i++) {
        const char *stop = p->stop_strings[i];
        size_t len = strlen(stop), at = stop_start_bound(from, floor_len, len);
        const char *hit = at < t->len ? memmem(t->data + at, t->len - at, stop, len) : NULL;
        if (hit && (!best || hit < best)) {
            best = hit;
            *which = i;
        }
    }
    return best ? (long)(best - t->data) : -1;
}

/* Where a stop string completed by the bytes appended to a text of old bytes can start. */
static size_t stop_scan_from(size_t old, size_t longest) { return old >= longest - 1 ? old - (longest - 1) : 0; }

/* Stop string `which` matched: the text ends at `at` (the string's start; its end with no_stop_trim). */
static void end_at_stop(mt_gen_job *j, size_t at, int which) {
    if (j->params.no_stop_trim) at += strlen(j->params.stop_strings[which]);
    mt_strbuf_truncate(&j->text, at);
    j->text_stable = at;
    j->matched_string = which;
    j->stop_matched = true;
}

/* Moves text_stable on to what can be shown: never the start of a possible stop string, never half
 * a UTF-8 character. */
static void hold_back(mt_gen_job *j, size_t longest) {
    size_t stable = j->text.len >= longest ? j->text.len - (longest ? longest - 1 : 0) : 0;
    stable = utf8_char_start(j->text.data, j->text.len, stable);
    if (stable > j->text_stable) j->text_stable = stable;
}

/* Stop strings are looked for in the text decoded with special tokens kept, as SGLang looks for
 * them (its check decodes the output's tail with them): here stop_text, which kept_piece extends,
 * when the returned text skips them. A match there cuts the returned text at the stop string's
 * first place not yet shown (SGLang's trim finds it in the returned text), or nowhere when the
 * returned text lacks it (a special token's text that is skipped). */
static bool match_in_kept_text(mt_gen_job *j, const char *kept_piece, size_t kept_n, size_t shown, size_t longest) {
    size_t old = j->stop_text.len;
    int which = -1;
    mt_strbuf_append(&j->stop_text, kept_piece, kept_n);
    if (find_stop(&j->params, &j->stop_text, stop_scan_from(old, longest), j->stop_floor, &which) < 0) return false;
    const char *stop = j->params.stop_strings[which];
    size_t len = strlen(stop), at = stop_start_bound(shown, j->text_floor, len);
    const char *hit = j->text.len > at ? memmem(j->text.data + at, j->text.len - at, stop, len) : NULL;
    if (hit) {
        end_at_stop(j, (size_t)(hit - j->text.data), which);
    } else {
        j->text_stable = j->text.len;
        j->matched_string = which;
        j->stop_matched = true;
    }
    return true;
}

/* Appends a token's decoded text (piece; kept_piece: the same with special tokens kept, with a
 * stop_detok) and looks for stop strings: only once more than min_new_tokens tokens are out, and
 * then only for those that end after the first min_new_tokens tokens' text (one straddling it
 * counts). Returns true when one matched (the text is cut there). */
static bool append_text(mt_gen_job *j, const char *piece, size_t n, const char *kept_piece, size_t kept_n) {
    size_t old = j->text.len, shown = j->text_stable, longest = longest_stop(&j->params);
    bool may_stop = j->n_output > j->params.sampling.min_new_tokens;
    mt_strbuf_append(&j->text, piece, n);
    if (longest > 0 && j->stop_detok) {
        if (!may_stop) mt_strbuf_append(&j->stop_text, kept_piece, kept_n);
        else if (match_in_kept_text(j, kept_piece, kept_n, shown, longest)) return true;
    } else if (longest > 0 && may_stop) {
        int which = -1;
        long at = find_stop(&j->params, &j->text, stop_scan_from(old, longest), j->stop_floor, &which);
        if (at >= 0) {
            end_at_stop(j, (size_t)at, which);
            return true;
        }
    }
    if (!may_stop) {
        j->text_floor = j->text.len;
        j->stop_floor = j->stop_detok ? j->stop_text.len : j->text.len;
    }
    hold_back(j, longest);
    return false;
}

/* Decodes token (NULL: what the detokenizers held back, at the end) into the text. A stop token's
 * text is left out (SGLang's detokenizer trims it) unless no_stop_trim, and is matched against no
 * stop string (SGLang checks stop tokens first); nor is the end of an output a stop token ended
 * (stop_token with no token). Returns true when a stop string matched. */
static bool take_text(mt_gen_job *j, const int32_t *token, bool stop_token) {
    if (!j->detok || j->stop_matched || (token && stop_token && !j->params.no_stop_trim)) return false;
    char *piece = NULL, *kept = NULL;
    size_t len = 0, kept_len = 0;
    mt_err err;
    int rc = token ? mt_detok_stream_feed(j->detok, token, 1, &piece, &len, &err)
                   : mt_detok_stream_finish(j->detok, &piece, &len, &err);
    if (rc == 0 && j->stop_detok && !stop_token)
        rc = token ? mt_detok_stream_feed(j->stop_detok, token, 1, &kept, &kept_len, &err)
                   : mt_detok_stream_finish(j->stop_detok, &kept, &kept_len, &err);
    bool matched = false;
    if (rc == 0 && stop_token) {
        mt_strbuf_append(&j->text, piece, len);
        hold_back(j, longest_stop(&j->params));
    } else if (rc == 0) {
        matched = append_text(j, piece, len, kept, kept_len);
    }
    free(piece);
    free(kept);
    return matched;
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
    bool matched;
    pthread_mutex_lock(&j->mu);
    if (j->n_output <= j->params.max_new_tokens) {
        if (j->logprobs) j->logprobs[j->n_output] = ev->logprob;
        if (j->text_at) j->text_at[j->n_output] = j->text.len;
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
    matched = take_text(j, &ev->token, ev->stops);
    mt_gen_job_changed(j);
    pthread_mutex_unlock(&j->mu);
    return matched;
}

mt_finish_label mt_job_take_end(mt_gen_job *j, const mt_engine_event *ev, const mt_config *c, double *e2e) {
    mt_finish_label label;
    pthread_mutex_lock(&j->mu);
    take_text(j, NULL, ev->reason == MT_FINISH_STOP);
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
