/* mt_sample_pick and mt_argmax on the host (the definition: kernels/sample.h). */
#include "kernels/sample.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

int mt_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best] || (x[best] != x[best] && x[i] == x[i])) best = i;
    return best;
}

float mt_token_logprob(const mt_sample_row *r, const float *logits, int V, int token) {
    double T = r && r->temperature > 0.0f ? (double)r->temperature : 1.0;
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) mx = fmaxf(mx, logits[i]);   /* fmaxf skips NaN */
    if (mx == -INFINITY) return NAN;   /* no finite logit */
    double sum = 0.0;
    for (int i = 0; i < V; i++)
        if (logits[i] == logits[i]) sum += exp(((double)logits[i] - mx) / T);
    return (float)(((double)logits[token] - mx) / T - log(sum));
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
        uint64_t mass = 0;
        for (int i = 0; i < V; i++) mass += work[i] >= t ? work[i] : 0;
        uint64_t need = (uint64_t)ceil((double)r->top_p * (double)mass);
        if (need < 1) need = 1;
        if (mass > 0) t = select_threshold(work, V, t, false, need, hist);
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
