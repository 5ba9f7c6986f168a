/* mt_sample_pick and mt_argmax on the host (the definition: kernels/sample.h). */
#include "kernels/sample.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

_Static_assert(sizeof(mt_sample_row) == MT_SAMPLE_ROW_WORDS * 4, "the device reads a row as its words");
_Static_assert(sizeof(mt_logit_adjust) == MT_LOGIT_ADJUST_WORDS * 4, "the device reads a change as its words");

float mt_logit_adjusted(float x, const mt_logit_adjust *a) {
    if (a->add == -INFINITY) return -INFINITY;
    float s = x;   /* two statements: never contracted into one fused operation */
    if (a->scale != 1.0f) s = x > 0.0f ? x / a->scale : x * a->scale;
    return s + a->add;
}

int mt_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best] || (x[best] != x[best] && x[i] == x[i])) best = i;
    return best;
}

/* What every log-probability of a row subtracts: its largest logit (-inf when none is finite), its
 * temperature, and log(sum exp((l - max) / T)) over its non-NaN logits, in double. */
typedef struct row_norm {
    float mx;
    double T, log_sum;
} row_norm;

static row_norm row_normaliser(const mt_sample_row *r, const float *logits, int V) {
    row_norm n = {-INFINITY, r && r->temperature > 0.0f ? (double)r->temperature : 1.0, 0.0};
    for (int i = 0; i < V; i++) n.mx = fmaxf(n.mx, logits[i]);   /* fmaxf skips NaN */
    if (n.mx == -INFINITY) return n;
    double sum = 0.0;
    for (int i = 0; i < V; i++)
        if (logits[i] == logits[i]) sum += exp(((double)logits[i] - n.mx) / n.T);
    n.log_sum = log(sum);
    return n;
}

/* Token id's log-probability under n (NaN when the row has no finite logit). */
static float logprob_at(const row_norm *n, const float *logits, int id) {
    return n->mx == -INFINITY ? NAN : (float)(((double)logits[id] - n->mx) / n->T - n->log_sum);
}

float mt_token_logprob(const mt_sample_row *r, const float *logits, int V, int token) {
    row_norm n = row_normaliser(r, logits, V);
    return logprob_at(&n, logits, token);
}

/* Whether logit a (id ia) ranks before logit b (id ib): larger first, ties to the lower id. */
static bool ranks_before(float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); }

/* The n best of the row into ids (ranks_before order); returns how many were listable. */
static int select_top(const float *logits, int V, int n, int32_t *ids) {
    int listed = 0;
    for (int i = 0; i < V; i++) {   /* insertion into the sorted list of the best so far */
        float v = logits[i];
        if (v != v || (listed == n && !ranks_before(v, i, logits[ids[n - 1]], ids[n - 1]))) continue;
        int j = listed < n ? listed++ : n - 1;
        for (; j > 0 && ranks_before(v, i, logits[ids[j - 1]], ids[j - 1]); j--) ids[j] = ids[j - 1];
        ids[j] = i;
    }
    return listed;
}

float mt_score_row(const mt_sample_row *r, const float *logits, int V, int token, int n, int32_t *ids, float *lps,
                   const int32_t *named, int n_named, float *named_lps) {
    if (n > MT_TOP_LOGPROBS_MAX) n = MT_TOP_LOGPROBS_MAX;
    int listed = n > 0 ? select_top(logits, V, n, ids) : 0;
    row_norm norm = row_normaliser(r, logits, V);
    for (int j = 0; j < n; j++) {
        if (j >= listed) ids[j] = -1;
        lps[j] = j < listed ? logprob_at(&norm, logits, ids[j]) : NAN;
    }
    for (int j = 0; j < n_named; j++) named_lps[j] = logprob_at(&norm, logits, named[j]);
    return token >= 0 ? logprob_at(&norm, logits, token) : NAN;
}

void mt_ids_logprobs(const mt_sample_row *r, const float *logits, int V, const int32_t *ids, int n, float *out) {
    if (n > 0) mt_score_row(r, logits, V, -1, 0, NULL, NULL, ids, n, out);
}

int mt_top_logprobs(const mt_sample_row *r, const float *logits, int V, int n, int32_t *ids, float *lps) {
    if (n > MT_TOP_LOGPROBS_MAX) n = MT_TOP_LOGPROBS_MAX;
    mt_score_row(r, logits, V, -1, n, ids, lps, NULL, 0, NULL);
    int listed = 0;
    while (listed < n && ids[listed] >= 0) listed++;
    return listed;
}

/* Radix digits of a weight (at most 2^40, 41 bits), from the top. */
enum { DIGITS = 4, BINS = 2048 };
static const int DIGIT_SHIFT[DIGITS] = {30, 19, 8, 0};

/* The largest t >= lo such that the weights q >= t (count_only: how many; else their sum) reach
 * need, found digit by digit; need must be >= 1 and at most the amount of all q >= lo. */
static uint64_t select_threshold(const uint64_t *q, int V, uint64_t lo, bool count_only, uint64_t need,
                                 uint64_t *hist) {
    uint64_t prefix = 0, above = 0;   /* bits fixed so far; amount strictly above their range */
    for (int d = 0; d < DIGITS; d++) {
        int shift = DIGIT_SHIFT[d];
        uint64_t fixed = d == 0 ? 0 : ~((1ull << DIGIT_SHIFT[d - 1]) - 1);
        memset(hist, 0, BINS * sizeof *hist);
        for (int i = 0; i < V; i++) {
            uint64_t v = q[i];
            if (v < lo || (v & fixed) != prefix) continue;
            hist[(v >> shift) & (BINS - 1)] += count_only ? 1 : v;
        }
        int b = BINS - 1;
        while (b > 0 && above + hist[b] < need) above += hist[b--];
        prefix |= (uint64_t)b << shift;
    }
    return prefix;
}

int mt_sample_pick(const mt_sample_row *r, const float *logits, int V, uint64_t *work) {
    if (!(r->temperature > 0.0f)) return mt_argmax(logits, V);
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) mx = fmaxf(mx, logits[i]);
    for (int i = 0; i < V; i++) {
        float p = expf((logits[i] - mx) / r->temperature);
        work[i] = p >= 0.0f ? (uint64_t)ldexpf(p, MT_SAMPLE_FIXED_BITS) : 0;   /* NaN weighs 0 */
    }
    uint64_t hist[BINS];
    uint64_t t = 0;
    if (r->top_k > 0 && r->top_k < V) t = select_threshold(work, V, 0, true, (uint64_t)r->top_k, hist);
    if (r->top_p < 1.0f) {
        uint64_t total = 0, mass = 0; /* the row's and top-k's */
        for (int i = 0; i < V; i++) {
            total += work[i];
            mass += work[i] >= t ? work[i] : 0;
        }
        uint64_t need = (uint64_t)ceil((double)r->top_p * (double)total);
        if (need < 1) need = 1;
        /* top-p's set within top-k's: its threshold; else top-k's set is the smaller one */
        if (mass >= need) t = select_threshold(work, V, t, false, need, hist);
    }
    if (r->min_p > 0.0f) {   /* the top weight is exactly 2^40: exp(0) */
        uint64_t t_min = (uint64_t)ceil((double)r->min_p * 1099511627776.0);
        if (t_min > t) t = t_min;
    }
    uint64_t kept = 0;
    for (int i = 0; i < V; i++) kept += work[i] >= t ? work[i] : 0;
    if (kept == 0) return mt_argmax(logits, V);
    /* floor(kept * u24 / 2^24), exactly */
    uint64_t u = r->u24 & 0xffffffu, at = (kept >> 24) * u + (((kept & 0xffffffu) * u) >> 24), run = 0;
    for (int i = 0; i < V; i++) {
        if (work[i] < t) continue;
        run += work[i];
        if (run > at) return i;
    }
    return mt_argmax(logits, V);   /* not reached: run ends at kept > at */
}
