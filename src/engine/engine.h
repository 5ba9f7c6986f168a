/* The batched engine: iteration-level scheduling of many sequences over the flat-batch forward
 * pass, with chunked prefill under a token budget, a paged KV cache with prefix caching, and the
 * routing of every token stored in the cache blocks (so cached prefixes keep their routing).
 * A request whose next uncached prompt block is being forwarded by a running request waits until
 * that block is published, so a prefix shared by requests in flight together (n samples of one
 * prompt) is forwarded once; waiting requests behind it are admitted meanwhile.
 * KV blocks are taken as tokens need them: a request is admitted when its known tokens fit (with a
 * block to spare for each running sequence), and a decoding sequence takes a block every
 * MT_KV_BLOCK tokens. When none is left, the newest running sequences are preempted: they give their
 * blocks back (full ones stay in the prefix cache), wait at the head of the queue, and on return
 * forward again whatever is no longer cached. Their tokens, scores and routing do not change (a
 * token's pass does not depend on its batch); the sink sees recomputed tokens again, flagged
 * (mt_routing_event.recomputed). mt_engine_opts.reserve_whole reserves whole contexts instead.
 *
 * Use: mt_engine_submit() requests, call mt_engine_step() until mt_engine_idle(); events (each
 * generated token, each finished request with its full routing) arrive through the callback given
 * at creation, from inside mt_engine_step(). Single-threaded: callers serialise access. */
#ifndef MT_ENGINE_ENGINE_H
#define MT_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/sampler.h"
#include "model/model.h"
#include "routing/capture.h"
#include "routing/placement.h"
#include "util/err.h"

typedef struct mt_engine_opts {
    int num_kv_blocks;       /* KV cache size in blocks of MT_KV_BLOCK positions; 0: sized from
                                memory by kv_memory_fraction */
    double kv_memory_fraction; /* with num_kv_blocks 0: the share of the memory free once the pass
                                scratch is reserved (the device's for a model on one, else the
                                host's: mt_forward_memory_available) that the cache may take; it
                                takes no more than a full context for every running sequence
                                (mt_kv_blocks_for_memory) */
    int max_batch_tokens;    /* token budget of one forward pass (chunked prefill) */
    int max_running;         /* sequences in flight at once */
    bool prefix_cache;       /* reuse cached prompt prefixes */
    const mt_placement *placement; /* expert placement every pass dispatches over (not copied: must
                                      outlive the engine); NULL: none */
    bool no_routing;         /* keep no per-token routing (FINISHED events carry none); the sink
                                still sees every pass. For measuring the capture's cost. */
    int max_scored_rows;     /* scored prompt positions one pass may take (each a row of logits: on a
                                device vocab_size floats, 0.6 MB for Qwen3's vocabulary); 0: 256 */
    bool reserve_whole;      /* reserve each request's whole context (prompt + max_new_tokens) at
                                admission, so none is ever preempted; else blocks are taken as
                                tokens need them (below). For measuring what lazy blocks gain. */
    bool no_shared_wait;     /* admit a request at once even while prompt blocks it could adopt are
                                being forwarded by another (each forwards them). For measuring what
                                the wait saves (bench/bench_rollout.c). */
    int overlap;             /* overlapped decode: while every running sequence decodes, the next pass
                                begins before the one in flight hands its tokens out (its tokens are
                                the device's picks), so the host's turn between steps hides behind
                                the device's work. 0: on a device only; 1: always (the CPU gains
                                nothing; for tests); -1: never (for measuring what it gains) */
} mt_engine_opts;

typedef struct mt_request {
    int64_t id;              /* caller's id, unique among live requests */
    const char *name;        /* caller's name for the request (copied at submit), handed to the sink
                                with its tokens (mt_routing_event.request_names); NULL: none */
    int32_t group;           /* caller's group of the request (e.g. its domain), handed to the sink
                                with its tokens (mt_routing_event.request_groups); 0: none, else >= 1 */
    bool probe;              /* a probe of the caller's own (serve's /health_generate): its tokens
                                reach the sink flagged as recomputed ones are, so recorders count
                                their load (the experts ran) but give them no per_token rows */
    const int32_t *prompt;   /* copied at submit */
    int n_prompt;
    int max_new_tokens;
    bool ignore_eos;
    mt_sampling_params sampling;
    const int32_t *stop_ids; /* extra stop tokens (copied); may be NULL */
    int n_stop;
    bool return_logprob;     /* each generated token's log-probability (mt_token_logprob) */
    int score_from;          /* 0: no prompt token is scored; else 1..n_prompt: prompt tokens
                                score_from..n_prompt-1 get their log-probability given the tokens
                                before them (SGLang's logprob_start_len + 1). Positions from
                                score_from - 1 on are forwarded, never adopted from the prefix cache. */
    const int32_t *logprob_ids; /* tokens whose log-probabilities every scored prompt position and, with
                                return_logprob, every generated token lists (copied at submit;
                                SGLang's token_ids_logprob); NULL: none */
    int n_logprob_ids;       /* 0..MT_LOGPROB_IDS_MAX */
    int top_logprobs;        /* 0..MT_TOP_LOGPROBS_MAX: the most likely tokens (mt_top_logprobs) of
                                every scored prompt position and, with return_logprob, of every
                                generated token */
    const int32_t *bias_ids; /* logit bias (OpenAI's logit_bias): distinct tokens, and what is added to
                                their logits before each generated token is picked (finite values;
                                copied at submit); NULL: none. The penalties and min_new_tokens are
                                in `sampling` (engine/penalties.h says how they combine); they and the
                                bias change generated tokens' logits only, never a scored prompt's */
    const float *bias_values;
    int n_bias;
} mt_request;

typedef enum mt_finish_reason {
    MT_FINISH_LENGTH = 1,
    MT_FINISH_STOP,          /* eos or a stop token */
    MT_FINISH_CANCELLED,
} mt_finish_reason;

typedef enum mt_engine_event_kind { MT_EVENT_TOKEN, MT_EVENT_FINISHED } mt_engine_event_kind;

typedef struct mt_engine_event {
    mt_engine_event_kind kind;
    int64_t id;
    int32_t token;                 /* TOKEN: the new token */
    bool stops;                    /* TOKEN: the token is one of the request's stop tokens (eos unless
                                      ignore_eos, or a stop id): its sequence finishes with MT_FINISH_STOP */
    float logprob;                 /* TOKEN: its log-probability (kernels/sample.h: at the row's
                                      temperature, before top-k/top-p) with return_logprob, else NaN */
    int n_top;                     /* the request's top_logprobs when the event lists alternatives, else 0 */
    const int32_t *top_ids;        /* TOKEN: the alternatives of the new token [n_top] (with
                                      return_logprob; else NULL); FINISHED: of every generated token
                                      [n_generated, n_top] (id -1 past the listable ones) */
    const float *top_logprobs;     /* their log-probabilities (NaN past the listable ones) */
    int n_ids;                     /* the request's n_logprob_ids when the event lists them, else 0 */
    const float *ids_logprobs;     /* TOKEN: the log-probabilities of the request's logprob_ids at the
                                      new token [n_ids] (with return_logprob); FINISHED: at every
                                      generated token [n_generated, n_ids] */
    mt_finish_reason reason;       /* FINISHED */
    const int32_t *output;         /* FINISHED: generated ids [n_generated] */
    const float *logprobs;         /* FINISHED: their log-probabilities [n_generated] with
                                      return_logprob, else NULL */
    /* The prompt's scores, complete from its first TOKEN event (which carries them too) on. */
    const float *prompt_logprobs;  /* FINISHED, with score_from > 0: [n_prompt], entry p the
                                      log-probability of prompt token p given those before it, NaN
                                      for p < score_from (not scored); else NULL */
    const int32_t *prompt_top_ids; /* FINISHED, with score_from > 0 and n_top > 0: [n_prompt,
                                      n_top] the alternatives at prompt token p (the distribution
                                      that scored it); -1 where not scored; else NULL */
    const float *prompt_top_logprobs; /* their log-probabilities (NaN where none) */
    const float *prompt_ids_logprobs; /* with score_from > 0 and n_ids > 0: [n_prompt, n_ids] the
                                      logprob_ids' log-probabilities at prompt token p (NaN where not
                                      scored); else NULL */
    int n_prompt, n_generated, n_cached;   /* n_cached: prompt tokens served from the prefix cache */
    /* FINISHED: routing of every forwarded token, SPEC §2 layout [routing_rows, layers, top_k],
     * valid during the callback only. A request cancelled while preempted or retracted (waiting
     * to forward its tokens again) answers with the routing they had: the engine keeps it on the
     * host when the sequence gives its blocks back. */
    const int32_t *routing;
    int routing_rows;
} mt_engine_event;

typedef void (*mt_engine_callback)(void *ctx, const mt_engine_event *ev);

typedef struct mt_engine mt_engine;

/* sink (may be NULL) sees every forward pass's routing, e.g. the recorder. */
mt_engine *mt_engine_new(const mt_model *m, const mt_engine_opts *o, mt_engine_callback cb, void *cb_ctx,
                         const mt_routing_sink *sink, mt_err *err);
void mt_engine_free(mt_engine *e);
/* Reserves on the model's backend what the engine's largest pass needs (mt_forward_reserve: on a
 * device, the scratch of a pass of max(max_batch_tokens, max_running) tokens and max_running +
 * max_scored_rows rows of logits). Done at creation, before the KV cache takes its share of what is
 * left; call it again after the weights were uploaded anew (mt_model_swap_weights frees the device's
 * pass scratch with the old weights). */
int mt_engine_reserve(mt_engine *e, mt_err *err);

/* Queues a request; fails on bad input (token ids out of the vocabulary, prompt + max_new_tokens
 * beyond the context or the whole KV cache, duplicate live id, score_from or top_logprobs out of
 * range). */
int mt_engine_submit(mt_engine *e, const mt_request *r, mt_err *err);
/* Cancels a queued or running request: it finishes with MT_FINISH_CANCELLED at the next step
 * (a queued one too, whether or not a running slot is free) and its blocks are freed. Returns false
 * when the id is not live. */
bool mt_engine_cancel(mt_engine *e, int64_t id);
/* Finishes the cancelled requests, queued or running, without a forward pass (what mt_engine_step
 * does first), for a caller holding the engine paused (serve's /pause_generation). Returns how many. */
int mt_engine_finish_cancelled(mt_engine *e);
/* Gives every running sequence's blocks back (full ones stay in the prefix cache) and puts them at
 * the head of the queue in their order, as a preemption does (not counted as one): when admitted
 * again each adopts what is still cached and forwards the rest again, with the tokens, scores and
 * routing it would have had. serve's /pause_generation "retract". Returns how many. */
int mt_engine_retract(mt_engine *e);
/* One forward pass over the running sequences (admitting queued ones first). Returns the number of
 * tokens of the pass it began (0 when it began none: idle, or it only ended the pass in flight, see
 * below), -1 on error.
 * Overlapped decode (mt_engine_opts.overlap): a step may begin the next pass and return before the
 * pass's tokens are handed out; they come with the next step's events, after the pass after it has
 * begun. A sequence that stops then finishes one step after its last TOKEN event, and the token the
 * pass in flight computed for it is dropped (never handed out nor to the sink: the routing, the
 * recorder and every event are what they are without overlap). */
int mt_engine_step(mt_engine *e, mt_err *err);
/* Ends the pass in flight (overlapped decode), if any, and hands its outputs out, beginning none
 * after it. mt_engine_finish_cancelled, _retract, _flush_prefix_cache and _set_placement do this
 * first; call it before changing the model under the engine. */
int mt_engine_drain(mt_engine *e, mt_err *err);
bool mt_engine_idle(const mt_engine *e);
/* Empties the prefix cache (e.g. after the model's weights changed): no cached block is adopted
 * afterwards; running sequences keep theirs. Returns the blocks that were cached. */
int mt_engine_flush_prefix_cache(mt_engine *e);
/* Replaces the expert placement between two steps (serve's /update_expert_location): the next passes
 * dispatch over p, running sequences included; routing stays logical, so only the physical slots
 * handed to the sink change. p must fit the model (-1 with err otherwise, the old one stays) and
 * outlive the engine (not copied); NULL is refused too (a server without one has none to change). */
int mt_engine_set_placement(mt_engine *e, const mt_placement *p, mt_err *err);

typedef struct mt_engine_stats {
    int waiting, running;
    int kv_blocks_total, kv_blocks_free;
    double kv_bytes;         /* what the K/V take, where they live (device or host) */
    double kv_memory_free;   /* a cache sized from memory: the bytes free when it was sized; else 0 */
    bool kv_capped;          /* ... and it holds less than a full context for every running sequence */
    long prefix_hit_blocks, prefix_lookup_blocks; /* prompt blocks found in the prefix cache, and looked up
                                                     (the full blocks before a request's first token to
                                                     forward, once per admission that forwards) */
    long forward_passes, tokens_forwarded;
    long preemptions;        /* sequences that gave their blocks back for older ones to grow */
    long tokens_recomputed;  /* of tokens_forwarded: positions forwarded again after a preemption */
    int peak_running;        /* the most sequences running at once */
    long tokens_dropped;     /* tokens forwarded for a sequence that stopped while its pass was in
                                flight (overlapped decode; not in tokens_forwarded) */
    long passes_overlapped;  /* passes begun while the one before was in flight (overlapped decode) */
    double forward_seconds;  /* wall time inside forward passes (on a device: from the batch's upload
                                to its results handed to the sink) */
    double step_seconds;     /* wall time inside mt_engine_step, those passes included: the rest is
                                the host's scheduling and event work between passes */
    double routing_seconds;  /* of forward_seconds: in the routing sink, the engine's per-token store
                                and the caller's sink (the recorder's), after the device's work */
} mt_engine_stats;
void mt_engine_get_stats(const mt_engine *e, mt_engine_stats *s);

#endif
