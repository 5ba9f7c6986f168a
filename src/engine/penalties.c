/* A sequence's logit changes from its penalties, bias and barred tokens. See penalties.h. */
#include "engine/penalties.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* src[0..n) into dst sorted, each id once; returns how many. */
static int copy_sorted_distinct(int32_t *dst, const int32_t *src, int n) {
    if (n <= 0) return 0;
    memcpy(dst, src, (size_t)n * sizeof *dst);
    qsort(dst, (size_t)n, sizeof *dst, cmp_i32);
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (kept == 0 || dst[kept - 1] != dst[i]) dst[kept++] = dst[i];
    return kept;
}

/* Index of token in the sorted ids[0..n), or where it would go (as -1 - index). */
static int find(const int32_t *ids, int n, int32_t token) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (ids[mid] < token) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && ids[lo] == token ? lo : -1 - lo;
}

/* Counts token among the seen ones, adding its entry (not in the prompt) when new; the room was
 * taken at init. */
static void count_seen(mt_penalties *p, int32_t token) {
    int at = find(p->seen, p->n_seen, token);
    if (at < 0) {
        at = -1 - at;
        size_t tail = (size_t)(p->n_seen - at);
        memmove(p->seen + at + 1, p->seen + at, tail * sizeof *p->seen);
        memmove(p->count + at + 1, p->count + at, tail * sizeof *p->count);
        memmove(p->in_prompt + at + 1, p->in_prompt + at, tail);
        p->seen[at] = token;
        p->count[at] = 0;
        p->in_prompt[at] = 0;
        p->n_seen++;
    }
    p->count[at]++;
}

int mt_penalties_init(mt_penalties *p, const mt_sampling_params *sp, const int32_t *prompt, int n_prompt, int max_new,
                      const int32_t *bias_ids, const float *bias, int n_bias, const int32_t *barred, int n_barred,
                      mt_err *err) {
    memset(p, 0, sizeof *p);
    p->repetition = sp->repetition_penalty > 0.0f ? sp->repetition_penalty : 1.0f;
    p->frequency = sp->frequency_penalty;
    p->presence = sp->presence_penalty;
    p->min_new_tokens = sp->min_new_tokens > 0 ? sp->min_new_tokens : 0;
    p->track_prompt = p->repetition != 1.0f;
    p->track_output = p->track_prompt || p->frequency != 0.0f || p->presence != 0.0f;
    if (p->track_output) {
        /* the prompt's distinct tokens (when they count), sorted, then room for every output token */
        int from_prompt = p->track_prompt ? n_prompt : 0;
        size_t cap = (size_t)from_prompt + (size_t)(max_new > 0 ? max_new : 0);
        p->seen = malloc((cap ? cap : 1) * sizeof *p->seen);
        p->count = calloc(cap ? cap : 1, sizeof *p->count);
        p->in_prompt = malloc(cap ? cap : 1);
        if (!p->seen || !p->count || !p->in_prompt) goto oom;
        p->n_seen = copy_sorted_distinct(p->seen, prompt, from_prompt);
        memset(p->in_prompt, 1, (size_t)p->n_seen);
    }
    if (n_bias > 0) {
        /* the ids sorted, then each value put at its id's place */
        p->bias_ids = malloc((size_t)n_bias * sizeof *p->bias_ids);
        p->bias = malloc((size_t)n_bias * sizeof *p->bias);
        if (!p->bias_ids || !p->bias) goto oom;
        memcpy(p->bias_ids, bias_ids, (size_t)n_bias * sizeof *p->bias_ids);
        qsort(p->bias_ids, (size_t)n_bias, sizeof *p->bias_ids, cmp_i32);
        for (int i = 1; i < n_bias; i++)
            if (p->bias_ids[i] == p->bias_ids[i - 1]) {
                mt_errf(err, "logit bias: token %d is named twice", p->bias_ids[i]);
                mt_penalties_free(p);
                return -1;
            }
        for (int i = 0; i < n_bias; i++) p->bias[find(p->bias_ids, n_bias, bias_ids[i])] = bias[i];
        p->n_bias = n_bias;
    }
    if (p->min_new_tokens > 0 && n_barred > 0) {
        if (!(p->barred = malloc((size_t)n_barred * sizeof *p->barred))) goto oom;
        p->n_barred = copy_sorted_distinct(p->barred, barred, n_barred);
    }
    return 0;
oom:
    mt_penalties_free(p);
    return mt_errf(err, "out of memory for the penalties of a %d-token prompt", n_prompt);
}

void mt_penalties_free(mt_penalties *p) {
    free(p->seen);
    free(p->count);
    free(p->in_prompt);
    free(p->bias_ids);
    free(p->bias);
    free(p->barred);
    memset(p, 0, sizeof *p);
    p->repetition = 1.0f;
}

bool mt_penalties_on(const mt_penalties *p) {
    return p->track_output || p->n_bias > 0 || p->n_barred > 0;
}

void mt_penalties_add_output(mt_penalties *p, int32_t token) {
    if (p->track_output) count_seen(p, token);
}

int mt_penalties_max_changes(const mt_penalties *p) { return p->n_seen + p->n_bias + p->n_barred; }

int mt_penalties_row(const mt_penalties *p, int row, int n_out, mt_logit_adjust *out) {
    int n_barred = n_out < p->min_new_tokens ? p->n_barred : 0;
    int i = 0, j = 0, k = 0, n = 0;
    /* a merge of the three sorted lists: seen, biased, barred */
    while (i < p->n_seen || j < p->n_bias || k < n_barred) {
        int32_t tok = INT32_MAX;
        if (i < p->n_seen && p->seen[i] < tok) tok = p->seen[i];
        if (j < p->n_bias && p->bias_ids[j] < tok) tok = p->bias_ids[j];
        if (k < n_barred && p->barred[k] < tok) tok = p->barred[k];
        mt_logit_adjust a = {row, tok, 1.0f, 0.0f};
        if (j < p->n_bias && p->bias_ids[j] == tok) a.add = p->bias[j++];
        if (i < p->n_seen && p->seen[i] == tok) {
            int32_t c = p->count[i];
            if (c > 0 || p->in_prompt[i]) a.scale = p->repetition;
            if (c > 0) {   /* one rounding a statement: never fused */
                float by_count = p->frequency * (float)c;
                a.add = a.add - by_count;
                a.add = a.add - p->presence;
            }
            i++;
        }
        if (k < n_barred && p->barred[k] == tok) {
            a.add = -INFINITY;
            k++;
        }
        if (a.scale != 1.0f || a.add != 0.0f) out[n++] = a;
    }
    return n;
}
