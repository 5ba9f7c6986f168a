/* The forward pass over a flat batch of tokens drawn from any number of sequences: each token
 * carries its sequence and position, so one call can mix prompt chunks and decode steps.
 * K and V of every token are written to the paged cache first, then each token attends to the
 * positions 0..pos of its own sequence. Every MoE layer reports its routing to `sink`.
 * With an expert placement in the batch, every routed choice is also dispatched to a physical replica
 * (routing/placement.h) and the physical slots travel with the routing event; the computation itself
 * is unchanged (a replica holds the same weights), so outputs are identical with or without one. */
#ifndef MT_ENGINE_FORWARD_H
#define MT_ENGINE_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/kv_cache.h"
#include "kernels/sample.h"
#include "model/model.h"
#include "routing/capture.h"
#include "routing/placement.h"
#include "util/err.h"

#define MT_MAX_HEAD_DIM 512

typedef struct mt_batch {
    int n_tokens;
    const int32_t *tokens;      /* [n_tokens] token ids */
    const int32_t *seq_ids;     /* [n_tokens] index into seqs */
    const int32_t *positions;   /* [n_tokens] position within the sequence */
    mt_kv_seq *const *seqs;     /* block tables; each must cover the positions it is given */
    int num_seqs;
    const int64_t *request_ids; /* [n_tokens] caller's request ids, passed to the sink; may be NULL */
    const char *const *request_names; /* [n_tokens] names of those requests, passed to the sink
                                   (mt_routing_event.request_names); may be NULL */
    const int32_t *request_groups; /* [n_tokens] groups of those requests, passed to the sink
                                   (mt_routing_event.request_groups); may be NULL */
    const uint8_t *recomputed;  /* [n_tokens] tokens forwarded before, passed to the sink
                                   (mt_routing_event.recomputed); may be NULL */
    int n_logits;               /* how many tokens want logits */
    const int32_t *logit_rows;  /* [n_logits] batch indices of those tokens */
    int32_t *next_tokens;       /* [n_logits] or NULL: receives each logit row's next token: its
                                 * argmax (ties to the lower id), or what sample[i] picks; a device
                                 * backend then skips copying the logits out, and there (only)
                                 * logits may be NULL */
    const mt_sample_row *sample; /* [n_logits] or NULL (all argmax): each row's sampling
                                 * (kernels/sample.h), used with next_tokens */
    float *next_logprobs;       /* [n_logits] or NULL: with next_tokens, each row's token's
                                 * log-probability (mt_token_logprob, at the row's temperature) */
    const int32_t *logit_targets; /* [n_logits] or NULL: with next_logprobs, a row whose target is
                                 * >= 0 gets that token's log-probability instead of its next
                                 * token's (a prompt position scoring the prompt's next token) */
    int top_n;                  /* 0..MT_TOP_LOGPROBS_MAX: with next_tokens, each row's top_n most
                                 * likely tokens (mt_top_logprobs) into top_ids and top_logprobs */
    int32_t *top_ids;           /* [n_logits * top_n] with top_n > 0 */
    float *top_logprobs;        /* [n_logits * top_n] with top_n > 0 */
    const int32_t *ids_offsets; /* [n_logits + 1] or NULL: with next_tokens, row i lists the tokens
                                 * ids_list[ids_offsets[i] .. ids_offsets[i + 1]) (ids_offsets[0] 0) */
    const int32_t *ids_list;
    float *ids_logprobs;        /* [ids_offsets[n_logits]]: their log-probabilities (mt_ids_logprobs) */
    const mt_logit_adjust *adjusts; /* [n_adjusts] or NULL: with next_tokens, changes to logits of the
                                 * rows (kernels/sample.h: penalties, biases, barred tokens) made
                                 * before each row's token is picked and its log-probabilities
                                 * taken; sorted by row, then token, at most one per (row, token).
                                 * Logits handed back are the changed ones */
    int n_adjusts;
    const mt_placement *placement; /* expert placement to dispatch over, or NULL (none: no dispatch);
                                      it must fit the model (mt_moe_shape_from_config) */
} mt_batch;

/* Runs the model on the batch (on the CPU, or on the model's device when it has one); writes
 * logits [n_logits, vocab_size], or with b->next_tokens only each row's next token. sink may be NULL.
 * Fails without computing anything on an invalid batch (token id out of the vocabulary,
 * position beyond a sequence's reserved blocks or the model's context, bad sequence index; on a
 * device, a sequence whose tokens are not consecutive positions in consecutive slots, the layout the
 * engine builds). */
int mt_forward(const mt_model *m, mt_kv_cache *kv, const mt_batch *b, float *logits,
               const mt_routing_sink *sink, mt_err *err);

/* Overlapped passes: mt_forward split in two, so the caller can begin the next pass before it reads
 * the outputs of the one in flight (on a device the host's turn between two decode steps then hides
 * behind the device's work). mt_forward_begin checks the batch and starts the pass (on a device its
 * launches are queued; the CPU runs it at mt_forward_end); mt_forward_end ends the oldest pass begun
 * (passes end in the order they began): its outputs are written, its routing reaches its sink, then
 * the sink's on_pass. At most two passes are in flight; the batch, logits and sink of a pass, and
 * the arrays they point to, must stay as they are until it ends.
 * A token of a pass begun while one is in flight may be MT_TOKEN_OF_ROW(r): the next token the pass
 * in flight picks for its logit row r (it must have next_tokens); the sink sees the token itself.
 * A pass begun with another in flight allocates nothing on a device: reserve its room first
 * (mt_forward_reserve). */
#define MT_TOKEN_OF_ROW(r) (-1 - (r))

typedef struct mt_pass_slot {
    const mt_batch *b;
    mt_kv_cache *kv;
    float *logits;
    const mt_routing_sink *sink;
    int32_t *tokens;            /* its tokens with MT_TOKEN_OF_ROW resolved (owned; NULL: it has none) */
    size_t tokens_cap;
    bool from_row;              /* some token is MT_TOKEN_OF_ROW */
    bool resolved;              /* ... and the pass before it has ended, giving them */
} mt_pass_slot;

typedef struct mt_passes {      /* passes begun and not yet ended, oldest first; zero-initialised */
    int n;
    mt_pass_slot pass[2];
} mt_passes;

int mt_forward_begin(const mt_model *m, mt_kv_cache *kv, mt_passes *q, const mt_batch *b, float *logits,
                     const mt_routing_sink *sink, mt_err *err);
int mt_forward_end(const mt_model *m, mt_passes *q, mt_err *err);
/* Frees what q holds (its passes must have ended). */
void mt_passes_free(mt_passes *q);

/* Prepares m's backend for passes of up to max_tokens tokens and max_logit_rows rows of logits: on a
 * device their scratch is allocated now (mt_cuda_reserve), so no later pass allocates device memory
 * and a shortage shows at start-up; the CPU needs nothing. */
int mt_forward_reserve(const mt_model *m, int max_tokens, int max_logit_rows, mt_err *err);

/* Memory a KV cache for m is carved from, in bytes: the device's free memory when m runs on one,
 * else the host's available memory; 0 when unknown. */
double mt_forward_memory_available(const mt_model *m);

#endif
