/* One sequence's changes to its next token's logits (kernels/sample.h, mt_logit_adjust), from its
 * sampling parameters and the tokens it holds:
 *  - repetition penalty r on every token of the prompt or the output: x / r where x > 0, else x * r
 *    (transformers' and vLLM's rule);
 *  - frequency penalty f and presence penalty p on the output's tokens: minus f per occurrence,
 *    minus p once (OpenAI's rule, as SGLang and vLLM apply it; the prompt is not counted);
 *  - a logit bias b per named token: plus b (OpenAI's logit_bias);
 *  - barred tokens (the stop tokens) at -inf while fewer than min_new_tokens tokens are out.
 * A token's change: scale r where it applies, then add = (b - f * count) - p, each step rounded to
 * float in that order. What the sequence was batched with never enters, so neither do the tokens.
 * Each token's change is kept up to date as output tokens come, so a step's row is a copy (64 rows
 * of 2,048-token prompts under a repetition penalty: 136k changes, about 0.17 ms a step on the
 * host). */
#ifndef MT_ENGINE_PENALTIES_H
#define MT_ENGINE_PENALTIES_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/sampler.h"
#include "kernels/sample.h"
#include "util/err.h"

typedef struct mt_penalties {
    float repetition, frequency, presence; /* 1, 0, 0 when off */
    int min_new_tokens;
    bool track_prompt, track_output;
    /* Every token with a change (those of the prompt when it counts, of the output, of the bias),
     * sorted by id, each with its current change (row unset), kept up to date as tokens come, so a
     * step copies them; and for each, how often the output holds it, whether the prompt does, its
     * bias. */
    mt_logit_adjust *changes;
    int32_t *count;
    uint8_t *in_prompt;
    float *bias;
    int n_changes;
    int32_t *barred;     /* sorted, distinct */
    int n_barred;
} mt_penalties;

/* Sets p up for a sequence of sampling sp with the given prompt, up to max_new generated tokens,
 * logit bias (ids distinct, any order) and barred tokens (any order, repeats merged); the lists
 * are copied, and room for max_new output tokens is taken now. Token ids must be in [0, vocab) (the
 * engine checks them at submit). -1 with err when out of memory or a bias id repeats. */
int mt_penalties_init(mt_penalties *p, const mt_sampling_params *sp, const int32_t *prompt, int n_prompt, int max_new,
                      const int32_t *bias_ids, const float *bias, int n_bias, const int32_t *barred, int n_barred,
                      mt_err *err);
void mt_penalties_free(mt_penalties *p);
/* Whether p ever changes a logit. */
bool mt_penalties_on(const mt_penalties *p);
/* Counts a generated token (one of the max_new that init made room for: never allocates). */
void mt_penalties_add_output(mt_penalties *p, int32_t token);
/* The most changes mt_penalties_row writes now. */
int mt_penalties_max_changes(const mt_penalties *p);
/* The changes to logit row `row` for the next token after n_out generated ones, sorted by token,
 * into out (room for mt_penalties_max_changes); returns how many. */
int mt_penalties_row(const mt_penalties *p, int row, int n_out, mt_logit_adjust *out);

#endif
