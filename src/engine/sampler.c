#include "engine/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int mt_sampler_init(mt_sampler *s, const mt_sampling_params *p, int vocab) {
    memset(s, 0, sizeof *s);
    s->params = *p;
    s->state = p->seed ^ 0x853c49e6748fea9bull;
    s->vocab = vocab;
    s->probs = malloc((size_t)vocab * sizeof *s->probs);
    s->order = malloc((size_t)vocab * sizeof *s->order);
    if (!s->probs || !s->order) {
        mt_sampler_free(s);
        return -1;
    }
    return 0;
}

void mt_sampler_free(mt_sampler *s) {
    free(s->probs);
    free(s->order);
    memset(s, 0, sizeof *s);
}

int mt_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* splitmix64 -> uniform in [0, 1) with 24 random bits. */
static float next_uniform(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) / 16777216.0f;
}

static int by_prob_desc(const void *a, const void *b, void *ctx) {
    const float *probs = ctx;
    int ia = *(const int32_t *)a, ib = *(const int32_t *)b;
    float pa = probs[ia], pb = probs[ib];
    if (pa != pb) return pa > pb ? -1 : 1;
    return ia - ib;
}

int mt_sample(mt_sampler *s, const float *logits) {
    const mt_sampling_params *p = &s->params;
    int V = s->vocab;
    if (p->temperature <= 0.0f) return mt_argmax(logits, V);
    float mx = logits[mt_argmax(logits, V)];
    float sum = 0.0f;
    for (int i = 0; i < V; i++) {
        s->probs[i] = expf((logits[i] - mx) / p->temperature);
        sum += s->probs[i];
        s->order[i] = i;
    }
    for (int i = 0; i < V; i++) s->probs[i] /= sum;
    int keep = V;
    bool filter = (p->top_k > 0 && p->top_k < V) || p->top_p < 1.0f;
    if (filter) {
        qsort_r(s->order, (size_t)V, sizeof *s->order, by_prob_desc, s->probs);
        if (p->top_k > 0 && p->top_k < keep) keep = p->top_k;
        if (p->top_p < 1.0f) {
            /* Renormalise over the top-k survivors, then keep the smallest prefix reaching top_p. */
            float mass = 0.0f;
            for (int i = 0; i < keep; i++) mass += s->probs[s->order[i]];
            float acc = 0.0f;
            int n = 0;
            while (n < keep) {
                acc += s->probs[s->order[n]] / mass;
                n++;
                if (acc >= p->top_p) break;
            }
            keep = n > 0 ? n : 1;
        }
    }
    float total = 0.0f;
    for (int i = 0; i < keep; i++) total += s->probs[filter ? s->order[i] : i];
    float r = next_uniform(&s->state) * total;
    for (int i = 0; i < keep; i++) {
        int id = filter ? s->order[i] : i;
        r -= s->probs[id];
        if (r < 0.0f) return id;
    }
    return filter ? s->order[keep - 1] : keep - 1;
}
