/* Next-token sampling: greedy (temperature <= 0), or temperature -> top-k, top-p, min-p with a
 * seeded generator per sequence, so a seed reproduces a run. The generator lives here; how a row's token follows from its logits and its draw is the
 * kernel mt_sample_pick (kernels/sample.h), which the CPU and the device both implement. */
#ifndef MT_ENGINE_SAMPLER_H
#define MT_ENGINE_SAMPLER_H

#include <stdint.h>

#include "kernels/sample.h"

typedef struct mt_sampling_params {
    float temperature;   /* <= 0: greedy */
    int top_k;           /* <= 0: off */
    float top_p;         /* >= 1: off */
    uint64_t seed;
    float min_p;         /* <= 0: off; keeps tokens at least min_p times as likely as the top one */
    /* Penalties on the logits before the token is picked (engine/penalties.h; zero: off). */
    float repetition_penalty; /* <= 0 or 1: off; a token of the prompt or the output: x / r where x > 0,
                                 else x * r */
    float frequency_penalty;  /* subtracted once for each time the output holds the token */
    float presence_penalty;   /* subtracted once where the output holds the token */
    int min_new_tokens;       /* the request's stop tokens (and eos) barred until this many are out */
} mt_sampling_params;

typedef struct mt_sampler {
    mt_sampling_params params;
    uint64_t state;
    int vocab;
    uint64_t *work;      /* [vocab], made by the first mt_sample */
} mt_sampler;

int mt_sampler_init(mt_sampler *s, const mt_sampling_params *p, int vocab);
void mt_sampler_free(mt_sampler *s);
/* The row spec for this sequence's next token: its parameters and, when it samples (temperature
 * > 0), the next draw of its generator (greedy rows draw nothing). */
mt_sample_row mt_sampler_next(mt_sampler *s);
/* mt_sample_pick with mt_sampler_next's row; -1 when out of memory for the work space. */
int mt_sample(mt_sampler *s, const float *logits);

#endif
