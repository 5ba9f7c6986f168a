/* Generation for one sequence: the whole prompt in one batched forward pass, then one decode step
 * per new token, stopping at eos (unless ignore_eos) or max_new_tokens. */
#ifndef MT_ENGINE_GENERATE_H
#define MT_ENGINE_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/sampler.h"
#include "model/model.h"
#include "routing/capture.h"
#include "routing/placement.h"
#include "util/err.h"

typedef struct mt_generate_opts {
    int max_new_tokens;
    bool ignore_eos;
    mt_sampling_params sampling;
    float *prompt_logits;          /* [P, vocab] written when not NULL */
    float *out_logprobs;           /* [max_new_tokens]: each token's log-probability (as the engine's
                                      return_logprob) when not NULL */
    const mt_routing_sink *sink;   /* routing of every forwarded token; may be NULL */
    const mt_placement *placement; /* expert placement to dispatch over (physical slots in the sink's
                                      events); NULL: none */
    void (*on_token)(void *ctx, int32_t token); /* called as each token is chosen; may be NULL */
    void *token_ctx;
} mt_generate_opts;

/* Writes up to max_new_tokens ids to out_tokens and their count to n_out. */
int mt_generate(const mt_model *m, const int32_t *prompt, int n_prompt, const mt_generate_opts *o,
                int32_t *out_tokens, int *n_out, mt_err *err);

#endif
