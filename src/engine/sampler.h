/* Next-token sampling: greedy (temperature <= 0), or temperature -> top-k -> top-p (the order
 * Hugging Face's generate applies them) with a seeded generator, so a seed reproduces a run. */
#ifndef MT_ENGINE_SAMPLER_H
#define MT_ENGINE_SAMPLER_H

#include <stdint.h>

typedef struct mt_sampling_params {
    float temperature;   /* <= 0: greedy */
    int top_k;           /* <= 0: off */
    float top_p;         /* >= 1: off */
    uint64_t seed;
} mt_sampling_params;

typedef struct mt_sampler {
    mt_sampling_params params;
    uint64_t state;
    int vocab;
    float *probs;        /* [vocab] work space */
    int32_t *order;      /* [vocab] */
} mt_sampler;

int mt_sampler_init(mt_sampler *s, const mt_sampling_params *p, int vocab);
void mt_sampler_free(mt_sampler *s);
/* Picks a token from logits[vocab] (not modified). */
int mt_sample(mt_sampler *s, const float *logits);
/* Index of the largest logit, ties to the lowest index. */
int mt_argmax(const float *x, int n);

#endif
