#include "engine/sampler.h"

#include <stdlib.h>
#include <string.h>

int mt_sampler_init(mt_sampler *s, const mt_sampling_params *p, int vocab) {
    memset(s, 0, sizeof *s);
    s->params = *p;
    s->state = p->seed ^ 0x853c49e6748fea9bull;
    s->vocab = vocab;
    return 0;
}

void mt_sampler_free(mt_sampler *s) {
    free(s->work);
    memset(s, 0, sizeof *s);
}

/* splitmix64 -> 24 random bits. */
static uint32_t next_u24(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (uint32_t)(z >> 40);
}

mt_sample_row mt_sampler_next(mt_sampler *s) {
    const mt_sampling_params *p = &s->params;
    mt_sample_row r = {p->temperature, p->top_k, p->top_p, 0, p->min_p};
    if (p->temperature > 0.0f) r.u24 = next_u24(&s->state);
    return r;
}

int mt_sample(mt_sampler *s, const float *logits) {
    mt_sample_row r = mt_sampler_next(s);
    if (!(r.temperature > 0.0f)) return mt_argmax(logits, s->vocab);
    if (!s->work && !(s->work = malloc((size_t)s->vocab * sizeof *s->work))) return -1;
    return mt_sample_pick(&r, logits, s->vocab, s->work);
}
