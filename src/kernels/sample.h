/* Picking a token from a row of logits: the one definition the CPU (kernels/cpu/sample.c) and the
 * device (kernels/cuda/sample.cu) implement, so a row's token depends only on its logits, its
 * parameters and its random draw, never on the batch. For a row with temperature T > 0:
 *   q_i = floor(exp((l_i - max l) / T) * 2^40)   fixed-point weights (a NaN logit weighs 0)
 *   top-k:  keep q_i >= the k-th largest q        (ties with it kept, as transformers does)
 *   top-p:  keep q_i >= the largest t whose mass {q >= t} reaches ceil(top_p * the row's mass)
 *           (ties kept);
 *   min-p:  keep q_i >= ceil(min_p * 2^40), the top token's weight being exactly 2^40 (a token at
 *           least min_p times as likely as the most likely one);
 *           with several filters, the tokens all keep: each judges the whole row, as SGLang's
 *           sampler does (not top-p over what top-k left, vLLM's order)
 *   pick:   r = floor(R * u24 / 2^24) with R the kept mass and u24 the row's 24 random bits; the
 *           token is the first id, in id order, whose running kept mass exceeds r.
 * Masses are integers, so every sum is exact whatever its order. Temperature <= 0, or every weight
 * 0 (all logits -inf or NaN), gives the argmax. The exponential may differ in its last bit between
 * the host's libm and the device, so CPU and GPU agree on the token except at such boundaries. */
#ifndef MT_KERNELS_SAMPLE_H
#define MT_KERNELS_SAMPLE_H

#include <stdint.h>

/* One logit row's sampling: parameters and the row's draw (MT_SAMPLE_ROW_WORDS 32-bit words; the
 * device reads them from a pass's uploaded inputs). */
typedef struct mt_sample_row {
    float temperature;   /* <= 0: argmax */
    int32_t top_k;       /* <= 0 or >= vocab: off */
    float top_p;         /* >= 1: off */
    uint32_t u24;        /* uniform draw in [0, 2^24) */
    float min_p;         /* <= 0: off; at most 1 */
} mt_sample_row;
#define MT_SAMPLE_ROW_WORDS 5

/* A change to one logit of a row before its token is picked and its log-probabilities are taken:
 * what repetition, frequency and presence penalties, a logit bias and tokens barred before
 * min_new_tokens come to (engine/penalties.h builds them). Logit x becomes
 *   add == -inf:  -inf (the token cannot be picked, whatever x was)
 *   else:         s + add, with s = x / scale where x > 0, x * scale otherwise (x itself when scale
 *                 is 1), each operation rounded on its own (no fused multiply-add), so the host and
 *                 the device give the same bits.
 * A pass holds at most one change per (row, token). */
typedef struct mt_logit_adjust {
    int32_t row;         /* logit row of the pass */
    int32_t token;       /* in [0, vocab) */
    float scale;         /* > 0; 1: none */
    float add;           /* finite, or -inf */
} mt_logit_adjust;
#define MT_LOGIT_ADJUST_WORDS 4

#define MT_SAMPLE_FIXED_BITS 40   /* q = floor(p * 2^40), at most 2^40 */
#define MT_TOP_LOGPROBS_MAX 20    /* most alternatives one row lists (OpenAI's limit) */
#define MT_LOGPROB_IDS_MAX 256    /* most tokens a request names for their log-probabilities */

#ifdef __cplusplus
extern "C" {
#endif
/* The token row r picks from logits[V]; work: [V] scratch. */
int mt_sample_pick(const mt_sample_row *r, const float *logits, int V, uint64_t *work);
/* The log-probability of `token` under row r's distribution before top-k and top-p (what SGLang
 * reports): log_softmax(logits / T)[token], with T the row's temperature, or 1 when r is NULL or
 * its temperature <= 0 (an argmax row). NaN logits weigh 0. The host sums in double, the device
 * (kernels/cuda) in float: they agree to about 1e-6 relative. */
float mt_token_logprob(const mt_sample_row *r, const float *logits, int V, int token);
/* Row r's n most likely tokens (n <= MT_TOP_LOGPROBS_MAX): ids[j] by decreasing logit, ties to the
 * lower id, and lps[j] their log-probabilities as mt_token_logprob gives them (the listed token's
 * value equals mt_token_logprob's bitwise). NaN logits are never listed; places past the row's
 * listable tokens get id -1 and NaN. Returns how many were listed. */
int mt_top_logprobs(const mt_sample_row *r, const float *logits, int V, int n, int32_t *ids, float *lps);
/* Everything a row asks, from one pass over its normaliser: returns mt_token_logprob(r, logits, V,
 * token) (NaN for token < 0); when n > 0 fills ids and lps as mt_top_logprobs does; and named_lps as
 * mt_ids_logprobs of named[0..n_named). The same bits as the separate calls. */
float mt_score_row(const mt_sample_row *r, const float *logits, int V, int token, int n, int32_t *ids, float *lps,
                   const int32_t *named, int n_named, float *named_lps);
/* The log-probabilities of ids[0..n) under row r's distribution into out, each the bits
 * mt_token_logprob gives (one pass over the row's normaliser). */
void mt_ids_logprobs(const mt_sample_row *r, const float *logits, int V, const int32_t *ids, int n, float *out);
/* Logit x after change a (mt_logit_adjust's rule). */
float mt_logit_adjusted(float x, const mt_logit_adjust *a);
/* Index of the largest logit, ties to the lowest index (NaN never wins). */
int mt_argmax(const float *x, int n);
#ifdef __cplusplus
}
#endif

#endif
