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

/* Index of token among p's changes, or where it would go (as -1 - index). */
static int find(const mt_penalties *p, int32_t token) {
    int lo = 0, hi = p->n_changes;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (p->changes[mid].token < token) lo = mid + 1;
        else hi = mid;
    }
    return lo < p->n_changes && p->changes[lo].token == token ? lo : -1 - lo;
}

/* Change i from its token's count, prompt flag and bias (penalties.h's rule). */
static void update(mt_penalties *p, int i) {
    mt_logit_adjust *a = &p->changes[i];
    int32_t c = p->count[i];
    a->scale = c > 0 || p->in_prompt[i] ? p->repetition : 1.0f;
    a->add = p->bias[i];
    if (c > 0) {   /* one rounding a statement: never fused */
        float by_count = p->frequency * (float)c;
        a->add = a->add - by_count;
        a->add = a->add - p->presence;
    }
}

/* The index of token's change, made (count 0, not in the prompt, no bias) where it has none; the
 * room was taken at init. */
static int change_of(mt_penalties *p, int32_t token) {
    int at = find(p, token);
    if (at >= 0) return at;
    at = -1 - at;
    size_t tail = (size_t)(p->n_changes - at);
    memmove(p->changes + at + 1, p->changes + at, tail * sizeof *p->changes);
    memmove(p->count + at + 1, p->count + at, tail * sizeof *p->count);
    memmove(p->in_prompt + at + 1, p->in_prompt + at, tail);
    memmove(p->bias + at + 1, p->bias + at, tail * sizeof *p->bias);
    p->changes[at] = (mt_logit_adjust){0, token, 1.0f, 0.0f};
    p->count[at] = 0;
    p->in_prompt[at] = 0;
    p->bias[at] = 0.0f;
    p->n_changes++;
    return at;
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
    /* room for the prompt's tokens (when they count), every output token (when they count) and the
     * biased ones */
    int from_prompt = p->track_prompt ? n_prompt : 0;
    size_t cap = (size_t)from_prompt + (size_t)(p->track_output && max_new > 0 ? max_new : 0) + (size_t)n_bias;
    if (cap == 0) cap = 1;
    int n_ids = from_prompt > n_bias ? from_prompt : n_bias;
    int32_t *ids = malloc((size_t)(n_ids > 0 ? n_ids : 1) * sizeof *ids);
    p->changes = malloc(cap * sizeof *p->changes);
    p->count = calloc(cap, sizeof *p->count);
    p->in_prompt = malloc(cap);
    p->bias = malloc(cap * sizeof *p->bias);
    if (!ids || !p->changes || !p->count || !p->in_prompt || !p->bias) {
        free(ids);
        goto oom;
    }
    if (n_bias > 0) {   /* each biased token once */
        memcpy(ids, bias_ids, (size_t)n_bias * sizeof *ids);
        qsort(ids, (size_t)n_bias, sizeof *ids, cmp_i32);
        for (int i = 1; i < n_bias; i++)
            if (ids[i] == ids[i - 1]) {
                mt_errf(err, "logit bias: token %d is named twice", ids[i]);
                free(ids);
                mt_penalties_free(p);
                return -1;
            }
    }
    /* the prompt's distinct tokens, sorted: one sort rather than an insertion each */
    int n = copy_sorted_distinct(ids, prompt, from_prompt);
    for (int i = 0; i < n; i++) {
        p->changes[i] = (mt_logit_adjust){0, ids[i], 1.0f, 0.0f};
        p->in_prompt[i] = 1;
        p->bias[i] = 0.0f;
    }
    p->n_changes = n;
    free(ids);
    for (int i = 0; i < n_bias; i++) p->bias[change_of(p, bias_ids[i])] = bias[i];
    for (int i = 0; i < p->n_changes; i++) update(p, i);
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
    free(p->changes);
    free(p->count);
    free(p->in_prompt);
    free(p->bias);
    free(p->barred);
    memset(p, 0, sizeof *p);
    p->repetition = 1.0f;
}

bool mt_penalties_on(const mt_penalties *p) { return p->n_changes > 0 || p->track_output || p->n_barred > 0; }

void mt_penalties_add_output(mt_penalties *p, int32_t token) {
    if (!p->track_output) return;
    int at = change_of(p, token);
    p->count[at]++;
    update(p, at);
}

int mt_penalties_max_changes(const mt_penalties *p) { return p->n_changes + p->n_barred; }

int mt_penalties_row(const mt_penalties *p, int row, int n_out, mt_logit_adjust *out) {
    int n_barred = n_out < p->min_new_tokens ? p->n_barred : 0, n = 0, k = 0;
    for (int i = 0; i < p->n_changes; i++) {
        const mt_logit_adjust *a = &p->changes[i];
        for (; k < n_barred && p->barred[k] < a->token; k++) out[n++] = (mt_logit_adjust){row, p->barred[k], 1.0f, -INFINITY};
        if (a->scale == 1.0f && a->add == 0.0f) continue;   /* nothing to change */
        out[n] = *a;
        out[n].row = row;
        if (k < n_barred && p->barred[k] == a->token) {
            out[n].add = -INFINITY;
            k++;
        }
        n++;
    }
    for (; k < n_barred; k++) out[n++] = (mt_logit_adjust){row, p->barred[k], 1.0f, -INFINITY};
    return n;
}
