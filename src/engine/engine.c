/* Iteration-level scheduler over mt_forward. See engine.h. */
#include "engine/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/penalties.h"

/* Prompt positions scored in one pass at most without mt_engine_opts.max_scored_rows; a scored
 * prompt is forwarded in chunks of this many positions. */
#define MT_ENGINE_SCORE_ROWS 256

typedef struct seq {
    int64_t id;
    char *name;               /* mt_request.name (malloc'd), or NULL */
    int32_t group;            /* mt_request.group */
    bool probe;               /* mt_request.probe */
    int32_t *tokens;          /* prompt then generated */
    int n_prompt, n_tokens;
    int n_forwarded;          /* positions whose K/V (and routing) are in the cache */
    int peak_forwarded;       /* the most positions ever forwarded: after a preemption, positions below
                                 it are forwarded again (recomputed) and their scores are kept */
    int n_cached;             /* prompt tokens adopted from the prefix cache at the admission where it
                                 first forwarded (an earlier one, given back unforwarded, does not count) */
    long admit_hits, admit_lookups; /* prefix-cache blocks its last admission hit and looked up */
    int n_published;          /* leading full blocks published to the prefix cache */
    uint64_t last_hash;       /* hash of block n_published - 1 */
    uint64_t *block_hash;     /* with prefix caching: hash of each full block of the tokens, room for
                                 the whole context; else NULL */
    int n_hashed;             /* entries of block_hash known: the prompt's at submit, then each
                                 generated block's as it is published */
    int n_prompt_blocks;      /* full prompt blocks */
    int preemptions;          /* times the sequence gave its blocks back to let older ones grow */
    int32_t *saved_routing;   /* [n_saved, layers, top_k]: the routing of what it had forwarded when it
                                 last gave its blocks back (preempted, retracted), so a request
                                 cancelled before forwarding it again still answers with it; freed
                                 once forwarded again (same routing: batch invariance) */
    int n_saved;
    int max_new_tokens;
    bool ignore_eos, cancelled;
    mt_finish_reason finishing; /* it ended while a pass holding its next token was in flight (overlapped
                                 decode): it finishes when that pass ends, its token there dropped */
    int32_t *stop;
    int n_stop;
    float *logprobs;          /* [max_new_tokens] with return_logprob, else NULL */
    int score_from;           /* mt_request.score_from */
    int n_top;                /* mt_request.top_logprobs */
    float *prompt_lp;         /* [n_prompt] with score_from > 0 (NaN where not scored) */
    int32_t *prompt_top_ids;  /* [n_prompt, n_top] with score_from > 0 and n_top > 0 */
    float *prompt_top_lps;
    int32_t *top_ids;         /* [max_new_tokens + 1, n_top] with return_logprob and n_top > 0 */
    float *top_lps;
    int32_t *lp_ids;          /* mt_request.logprob_ids (copied) */
    int n_lp_ids;
    float *prompt_ids_lp;     /* [n_prompt, n_lp_ids] with score_from > 0 and n_lp_ids > 0 */
    float *ids_lp;            /* [max_new_tokens + 1, n_lp_ids] with return_logprob and n_lp_ids > 0 */
    mt_sampler sampler;
    mt_penalties pen;         /* its generated tokens' logit changes (penalties, bias, barred stops) */
    mt_kv_seq kv;
} seq;

/* One forward pass: its batch and what it hands back. */
typedef struct pass {
    int32_t *tokens, *seq, *pos, *rows, *next;
    int32_t *chunk;            /* [max_running] tokens of each running sequence in the pass */
    mt_sample_row *sample;     /* [rows] each logit row's sampling, for the forward pass */
    mt_logit_adjust *adj;      /* the pass's logit changes (mt_batch.adjusts), grown as needed */
    size_t adj_cap;
    float *logprob;            /* [rows] each row's token's log-probability */
    int32_t *target;           /* [rows] the prompt token a scored row's log-probability is of, else -1 */
    int32_t *top_ids;          /* [rows_cap, MT_TOP_LOGPROBS_MAX] each row's alternatives */
    float *top_lps;
    int32_t *ids_off;          /* [rows_cap + 1] each row's listed tokens' range in ids */
    int32_t *ids;              /* [rows_cap, MT_LOGPROB_IDS_MAX] the listed tokens, row after row */
    float *ids_lp;             /* their log-probabilities */
    int64_t *req;
    const char **name;         /* [tokens] each token's request name (owned by its seq) */
    int32_t *group;            /* [tokens] each token's request group */
    uint8_t *again;            /* [tokens] 1 where the token is forwarded again after a preemption */
    mt_kv_seq **kv;
    mt_batch b;
    int n, pass_top;           /* its tokens; the alternatives listed for each row */
} pass;

struct mt_engine {
    const mt_model *m;
    mt_engine_opts o;
    mt_kv_cache kv;
    mt_engine_callback cb;
    void *cb_ctx;
    const mt_routing_sink *user_sink;
    seq **waiting, **running;
    int n_waiting, n_running;
    pass pass_bufs[2];         /* a pass being built or in flight, and the one overlapped after it */
    pass *in_flight;           /* begun and not yet ended (overlapped decode), or NULL */
    mt_passes q;               /* the forward passes begun */
    int rows_cap;              /* logit rows of one pass at most: one per running sequence + scored ones */
    double kv_memory_free;     /* a cache sized from memory: the bytes free when it was sized */
    bool kv_capped;            /* ... and memory, not a full context per running sequence, set its size */
    double forward_s, step_s;  /* wall time inside forward passes, and inside mt_engine_step */
    long preemptions, recomputed;  /* sequences preempted; positions forwarded again after one */
    int peak_running;          /* the most sequences running at once */
    double sink_s;             /* of forward_s: in the routing sink (the routing store and the caller's) */
    int logits_rows;           /* rows `logits` holds (CPU; grown to rows_cap when scoring first needs it) */
    float *logits;
    pass *ending;              /* the pass whose routing the sink is being handed */
    mt_routing_event kept;     /* a routing event without the dropped tokens of an overlapped pass */
    int32_t *kept_ints;        /* its arrays: [max_running, 4 + 2 top_k] */
    float *kept_w;             /* [max_running, top_k] */
    int64_t *kept_req;
    const char **kept_name;
    uint8_t *kept_again;
    long dropped;              /* tokens forwarded for a sequence that had finished (overlapped decode) */
    long overlapped;           /* passes begun while another was in flight */
    mt_routing_sink sink;      /* the engine's own (store_routing, pass_done) */
    bool drain_failed;         /* a pass ended outside a step failed: the next step says so */
    mt_err drain_err;
    int32_t *routing_buf;     /* [max context, layers, top_k] for FINISHED events */
    long passes, forwarded;
};

static void store_routing(void *ctx, const mt_routing_event *ev);
static void pass_done(void *ctx, const mt_pass_event *ev);

static void pass_free(pass *P) {
    free(P->tokens); free(P->seq); free(P->pos); free(P->rows); free(P->next); free(P->sample); free(P->logprob);
    free(P->target); free(P->top_ids); free(P->top_lps); free(P->ids_off); free(P->ids); free(P->ids_lp); free(P->req);
    free(P->name); free(P->group); free(P->again); free(P->kv); free(P->chunk); free(P->adj);
}

/* Room for a pass of bt tokens, rows_cap logit rows and max_running sequences; -1 out of memory. */
static int pass_alloc(pass *P, size_t bt, int rows_cap, int max_running) {
    P->tokens = malloc(bt * sizeof(int32_t));
    P->seq = malloc(bt * sizeof(int32_t));
    P->pos = malloc(bt * sizeof(int32_t));
    P->rows = malloc(bt * sizeof(int32_t));
    P->next = malloc(bt * sizeof(int32_t));
    P->sample = malloc(bt * sizeof *P->sample);
    P->logprob = malloc(bt * sizeof *P->logprob);
    P->target = malloc(bt * sizeof *P->target);
    P->top_ids = malloc((size_t)rows_cap * MT_TOP_LOGPROBS_MAX * sizeof *P->top_ids);
    P->top_lps = malloc((size_t)rows_cap * MT_TOP_LOGPROBS_MAX * sizeof *P->top_lps);
    P->ids_off = malloc(((size_t)rows_cap + 1) * sizeof *P->ids_off);
    P->req = malloc(bt * sizeof(int64_t));
    P->name = malloc(bt * sizeof *P->name);
    P->group = malloc(bt * sizeof *P->group);
    P->again = malloc(bt * sizeof *P->again);
    P->kv = calloc((size_t)max_running, sizeof *P->kv);
    P->chunk = calloc((size_t)max_running, sizeof *P->chunk);
    bool ok = P->tokens && P->seq && P->pos && P->rows && P->next && P->sample && P->logprob && P->target && P->top_ids &&
              P->top_lps && P->ids_off && P->req && P->name && P->group && P->again && P->kv && P->chunk;
    return ok ? 0 : -1;
}

static void seq_free(seq *s) {
    if (!s) return;
    free(s->name);
    free(s->block_hash);
    free(s->saved_routing);
    free(s->tokens);
    free(s->stop);
    free(s->logprobs);
    free(s->prompt_lp);
    free(s->prompt_top_ids);
    free(s->prompt_top_lps);
    free(s->top_ids);
    free(s->top_lps);
    free(s->lp_ids);
    free(s->prompt_ids_lp);
    free(s->ids_lp);
    mt_sampler_free(&s->sampler);
    mt_penalties_free(&s->pen);
    free(s);
}

/* Bytes a block of the engine's cache takes where its K/V live (its routing counted on the host). */
static double kv_block_bytes(const mt_engine *e) {
    const mt_config *c = &e->m->cfg;
    return mt_kv_block_bytes(c->num_hidden_layers, c->num_key_value_heads * c->head_dim, e->o.no_routing ? 0 : c->top_k,
                             c->num_experts, e->m->device != NULL);
}

mt_engine *mt_engine_new(const mt_model *m, const mt_engine_opts *o, mt_engine_callback cb, void *cb_ctx,
                         const mt_routing_sink *sink, mt_err *err) {
    const mt_config *c = &m->cfg;
    if (o->num_kv_blocks < 0 || o->max_batch_tokens <= 0 || o->max_running <= 0 ||
        (o->num_kv_blocks == 0 && !(o->kv_memory_fraction > 0 && o->kv_memory_fraction <= 1))) {
        mt_errf(err, "engine options out of range (kv blocks %d, kv memory fraction %g, batch tokens %d, running %d)",
                o->num_kv_blocks, o->kv_memory_fraction, o->max_batch_tokens, o->max_running);
        return NULL;
    }
    if (o->placement && mt_placement_fits(o->placement, c, err)) return NULL;
    mt_engine *e = calloc(1, sizeof *e);
    if (!e) {
        mt_errf(err, "out of memory");
        return NULL;
    }
    e->m = m;
    e->o = *o;
    e->cb = cb;
    e->cb_ctx = cb_ctx;
    e->user_sink = sink;
    e->sink = (mt_routing_sink){store_routing, pass_done, e};
    if (e->o.max_scored_rows <= 0) e->o.max_scored_rows = MT_ENGINE_SCORE_ROWS;
    const char *overlap = getenv("MOETRACE_OVERLAP");   /* the default's override: 1 always, 0 never */
    if (e->o.overlap == 0 && overlap && (!strcmp(overlap, "0") || !strcmp(overlap, "1")))
        e->o.overlap = overlap[0] == '1' ? 1 : -1;
    e->rows_cap = o->max_running + e->o.max_scored_rows;
    if (mt_engine_reserve(e, err)) {
        mt_engine_free(e);
        return NULL;
    }
    int blocks = o->num_kv_blocks;
    if (blocks == 0) {
        e->kv_memory_free = mt_forward_memory_available(m);
        blocks = mt_kv_blocks_for_memory(e->kv_memory_free, o->kv_memory_fraction, kv_block_bytes(e),
                                         c->max_position_embeddings, o->max_running, &e->kv_capped);
    }
    if (mt_kv_cache_init_model(&e->kv, m, blocks, err) ||
        (!o->no_routing && mt_kv_cache_init_routing(&e->kv, c->top_k, c->num_experts, err))) {
        mt_engine_free(e);
        return NULL;
    }
    size_t bt = (size_t)o->max_batch_tokens + (size_t)o->max_running;
    e->waiting = NULL;
    e->running = calloc((size_t)o->max_running, sizeof *e->running);
    bool ok = e->running != NULL;
    for (int i = 0; i < 2; i++) ok &= pass_alloc(&e->pass_bufs[i], bt, e->rows_cap, o->max_running) == 0;
    size_t k = (size_t)c->top_k, R = (size_t)o->max_running;
    e->kept_ints = malloc(R * (4 + 2 * k) * sizeof *e->kept_ints);
    e->kept_w = malloc(R * k * sizeof *e->kept_w);
    e->kept_req = malloc(R * sizeof *e->kept_req);
    e->kept_name = malloc(R * sizeof *e->kept_name);
    e->kept_again = malloc(R * sizeof *e->kept_again);
    ok &= e->kept_ints && e->kept_w && e->kept_req && e->kept_name && e->kept_again;
    /* a device backend returns next tokens alone; the CPU one needs room for the logits */
    e->logits_rows = o->max_running;
    e->logits = m->device ? NULL : malloc((size_t)e->logits_rows * c->vocab_size * sizeof(float));
    e->routing_buf = o->no_routing ? NULL
                                   : malloc((size_t)c->max_position_embeddings * c->num_hidden_layers * c->top_k *
                                            sizeof(int32_t));
    if (!ok || (!m->device && !e->logits) || (!o->no_routing && !e->routing_buf)) {
        mt_errf(err, "out of memory");
        mt_engine_free(e);
        return NULL;
    }
    return e;
}

int mt_engine_reserve(mt_engine *e, mt_err *err) {
    int tokens = e->o.max_batch_tokens > e->o.max_running ? e->o.max_batch_tokens : e->o.max_running;
    return mt_forward_reserve(e->m, tokens, e->rows_cap, err);
}

void mt_engine_free(mt_engine *e) {
    if (!e) return;
    while (e->q.n) {   /* a pass overlapped into the free: waited for, its outputs dropped */
        mt_err ignored;
        mt_forward_end(e->m, &e->q, &ignored);
    }
    mt_passes_free(&e->q);
    for (int i = 0; i < e->n_waiting; i++) seq_free(e->waiting[i]);
    for (int i = 0; i < e->n_running; i++) {
        mt_kv_seq_release(&e->kv, &e->running[i]->kv);
        seq_free(e->running[i]);
    }
    free(e->waiting);
    free(e->running);
    for (int i = 0; i < 2; i++) pass_free(&e->pass_bufs[i]);
    free(e->kept_ints); free(e->kept_w); free(e->kept_req); free(e->kept_name); free(e->kept_again);
    free(e->logits);
    free(e->routing_buf);
    mt_kv_cache_free(&e->kv);
    free(e);
}

static bool id_live(const mt_engine *e, int64_t id) {
    for (int i = 0; i < e->n_waiting; i++)
        if (e->waiting[i]->id == id) return true;
    for (int i = 0; i < e->n_running; i++)
        if (e->running[i]->id == id) return true;
    return false;
}

/* The request's stop ids, min-p, penalties and logit bias: in range (engine/penalties.h). */
static int check_penalties(const mt_request *r, const mt_config *c, mt_err *err) {
    const mt_sampling_params *p = &r->sampling;
    long long id = (long long)r->id;
    for (int i = 0; i < r->n_stop; i++)
        if (r->stop_ids[i] < 0 || r->stop_ids[i] >= c->vocab_size)
            return mt_errf(err, "request %lld: stop token id %d is outside the vocabulary [0, %d)", id, r->stop_ids[i],
                           c->vocab_size);
    if (!(p->min_p <= 1.0f) || !isfinite(p->repetition_penalty) || !isfinite(p->frequency_penalty) ||
        !isfinite(p->presence_penalty) || p->min_new_tokens < 0)
        return mt_errf(err, "request %lld: min_p %g must be at most 1, the penalties finite (%g, %g, %g) and "
                            "min_new_tokens %d not negative", id, p->min_p, p->repetition_penalty, p->frequency_penalty,
                       p->presence_penalty, p->min_new_tokens);
    if (r->n_bias < 0 || (r->n_bias > 0 && (!r->bias_ids || !r->bias_values)))
        return mt_errf(err, "request %lld: %d logit biases without their lists", id, r->n_bias);
    for (int i = 0; i < r->n_bias; i++)
        if (r->bias_ids[i] < 0 || r->bias_ids[i] >= c->vocab_size || !isfinite(r->bias_values[i]))
            return mt_errf(err, "request %lld: logit bias %g of token %d: the token must be in the vocabulary [0, %d) "
                                "and the bias finite", id, r->bias_values[i], r->bias_ids[i], c->vocab_size);
    return 0;
}

/* Positions a request may occupy: the last generated token is never forwarded. */
static int positions_needed(int n_prompt, int max_new) { return max_new > 0 ? n_prompt + max_new - 1 : n_prompt; }

int mt_engine_submit(mt_engine *e, const mt_request *r, mt_err *err) {
    const mt_config *c = &e->m->cfg;
    if (r->n_prompt <= 0) return mt_errf(err, "request %lld: empty prompt", (long long)r->id);
    if (r->max_new_tokens < 0) return mt_errf(err, "request %lld: max_new_tokens must be >= 0", (long long)r->id);
    if (r->group < 0) return mt_errf(err, "request %lld: group %d is negative", (long long)r->id, r->group);
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= c->vocab_size)
            return mt_errf(err, "request %lld: token id %d at index %d is outside the vocabulary [0, %d)",
                           (long long)r->id, r->prompt[i], i, c->vocab_size);
    if ((long)r->n_prompt + r->max_new_tokens > c->max_position_embeddings)
        return mt_errf(err, "request %lld: %d prompt tokens + %d new tokens exceed the model's context of %d",
                       (long long)r->id, r->n_prompt, r->max_new_tokens, c->max_position_embeddings);
    int blocks = (positions_needed(r->n_prompt, r->max_new_tokens) + MT_KV_BLOCK - 1) / MT_KV_BLOCK;
    if (blocks > e->kv.num_blocks)
        return mt_errf(err, "request %lld: its prompt and new tokens need %d KV blocks, the cache has %d", (long long)r->id, blocks,
                       e->kv.num_blocks);
    if (r->score_from < 0 || r->score_from > r->n_prompt)
        return mt_errf(err, "request %lld: score_from %d must be 0..%d (the prompt's length)", (long long)r->id, r->score_from,
                       r->n_prompt);
    if (r->n_logprob_ids < 0 || r->n_logprob_ids > MT_LOGPROB_IDS_MAX || (r->n_logprob_ids > 0 && !r->logprob_ids))
        return mt_errf(err, "request %lld: %d listed token ids, at most %d", (long long)r->id, r->n_logprob_ids,
                       MT_LOGPROB_IDS_MAX);
    for (int i = 0; i < r->n_logprob_ids; i++)
        if (r->logprob_ids[i] < 0 || r->logprob_ids[i] >= c->vocab_size)
            return mt_errf(err, "request %lld: listed token id %d is outside the vocabulary [0, %d)", (long long)r->id,
                           r->logprob_ids[i], c->vocab_size);
    if (r->top_logprobs < 0 || r->top_logprobs > MT_TOP_LOGPROBS_MAX)
        return mt_errf(err, "request %lld: top_logprobs %d must be 0..%d", (long long)r->id, r->top_logprobs, MT_TOP_LOGPROBS_MAX);
    if (check_penalties(r, c, err)) return -1;
    if (id_live(e, r->id)) return mt_errf(err, "request id %lld is already live", (long long)r->id);
    seq *s = calloc(1, sizeof *s);
    /* room for every live sequence, so a preemption never allocates */
    seq **w = realloc(e->waiting, ((size_t)e->n_waiting + 1 + (size_t)e->o.max_running) * sizeof *w);
    if (w) e->waiting = w;
    if (!s || !w) {
        free(s);
        return mt_errf(err, "out of memory");
    }
    s->id = r->id;
    s->name = r->name ? strdup(r->name) : NULL;
    s->group = r->group;
    s->probe = r->probe;
    s->n_prompt = s->n_tokens = r->n_prompt;
    s->max_new_tokens = r->max_new_tokens;
    s->ignore_eos = r->ignore_eos;
    s->tokens = malloc(((size_t)r->n_prompt + r->max_new_tokens) * sizeof *s->tokens);
    s->stop = r->n_stop > 0 ? malloc((size_t)r->n_stop * sizeof *s->stop) : NULL;
    s->logprobs = r->return_logprob ? malloc(((size_t)r->max_new_tokens + 1) * sizeof *s->logprobs) : NULL;
    s->score_from = r->score_from;
    s->n_top = r->top_logprobs;
    size_t n_top = (size_t)s->n_top, scored = r->score_from > 0 ? (size_t)r->n_prompt : 0;
    size_t listed = (r->return_logprob ? (size_t)r->max_new_tokens + 1 : 0) * n_top;
    if (scored) s->prompt_lp = malloc(scored * sizeof *s->prompt_lp);
    if (scored && n_top) {
        s->prompt_top_ids = malloc(scored * n_top * sizeof *s->prompt_top_ids);
        s->prompt_top_lps = malloc(scored * n_top * sizeof *s->prompt_top_lps);
    }
    if (listed) {
        s->top_ids = malloc(listed * sizeof *s->top_ids);
        s->top_lps = malloc(listed * sizeof *s->top_lps);
    }
    size_t n_ids = (size_t)r->n_logprob_ids, outs = r->return_logprob ? (size_t)r->max_new_tokens + 1 : 0;
    s->n_lp_ids = r->n_logprob_ids;
    if (n_ids) s->lp_ids = malloc(n_ids * sizeof *s->lp_ids);
    if (n_ids && scored) s->prompt_ids_lp = malloc(scored * n_ids * sizeof *s->prompt_ids_lp);
    if (n_ids && outs) s->ids_lp = malloc(outs * n_ids * sizeof *s->ids_lp);
    if ((r->name && !s->name) || !s->tokens || (r->n_stop > 0 && !s->stop) || (r->return_logprob && !s->logprobs) ||
        (scored && !s->prompt_lp) || (scored && n_top && (!s->prompt_top_ids || !s->prompt_top_lps)) ||
        (listed && (!s->top_ids || !s->top_lps)) || (n_ids && !s->lp_ids) || (n_ids && scored && !s->prompt_ids_lp) ||
        (n_ids && outs && !s->ids_lp) || mt_sampler_init(&s->sampler, &r->sampling, c->vocab_size)) {
        seq_free(s);
        return mt_errf(err, "out of memory");
    }
    for (size_t p = 0; p < scored; p++) s->prompt_lp[p] = NAN;
    if (n_ids) memcpy(s->lp_ids, r->logprob_ids, n_ids * sizeof *s->lp_ids);
    for (size_t i = 0; s->prompt_ids_lp && i < scored * n_ids; i++) s->prompt_ids_lp[i] = NAN;
    for (size_t i = 0; i < scored * n_top; i++) {
        s->prompt_top_ids[i] = -1;
        s->prompt_top_lps[i] = NAN;
    }
    memcpy(s->tokens, r->prompt, (size_t)r->n_prompt * sizeof *s->tokens);
    s->n_prompt_blocks = r->n_prompt / MT_KV_BLOCK;
    int context_blocks = (r->n_prompt + r->max_new_tokens) / MT_KV_BLOCK;
    if (e->o.prefix_cache && context_blocks > 0) {
        if (!(s->block_hash = malloc((size_t)context_blocks * sizeof *s->block_hash))) {
            seq_free(s);
            return mt_errf(err, "out of memory");
        }
        for (int i = 0; i < s->n_prompt_blocks; i++)
            s->block_hash[i] = mt_kv_block_hash(i ? s->block_hash[i - 1] : 0, s->tokens + (size_t)i * MT_KV_BLOCK);
        s->n_hashed = s->n_prompt_blocks;
    }
    if (r->n_stop > 0) memcpy(s->stop, r->stop_ids, (size_t)r->n_stop * sizeof *s->stop);
    s->n_stop = r->n_stop;
    /* barred before min_new_tokens: every token that would stop it, and eos even when ignored, as
     * SGLang bars them */
    int n_barred = r->sampling.min_new_tokens > 0 ? c->num_eos + r->n_stop : 0;
    int32_t *barred = n_barred > 0 ? malloc((size_t)n_barred * sizeof *barred) : NULL;
    if (n_barred > 0 && !barred) {
        seq_free(s);
        return mt_errf(err, "out of memory");
    }
    for (int i = 0; i < n_barred && i < c->num_eos; i++) barred[i] = c->eos_ids[i];
    if (n_barred > 0 && r->n_stop > 0) memcpy(barred + c->num_eos, r->stop_ids, (size_t)r->n_stop * sizeof *barred);
    int rc = mt_penalties_init(&s->pen, &r->sampling, r->prompt, r->n_prompt, r->max_new_tokens, r->bias_ids,
                               r->bias_values, r->n_bias, barred, n_barred, err);
    free(barred);
    if (rc) {   /* err says why: out of memory, or a token biased twice */
        seq_free(s);
        return -1;
    }
    e->waiting[e->n_waiting++] = s;
    return 0;
}

bool mt_engine_cancel(mt_engine *e, int64_t id) {
    for (int i = 0; i < e->n_waiting; i++)
        if (e->waiting[i]->id == id) return e->waiting[i]->cancelled = true;
    for (int i = 0; i < e->n_running; i++)
        if (e->running[i]->id == id) return e->running[i]->cancelled = true;
    return false;
}

bool mt_engine_idle(const mt_engine *e) { return e->n_waiting == 0 && e->n_running == 0 && !e->in_flight; }

static void drain_quietly(mt_engine *e);

int mt_engine_flush_prefix_cache(mt_engine *e) {
    drain_quietly(e);
    return mt_kv_flush(&e->kv);
}

int mt_engine_set_placement(mt_engine *e, const mt_placement *p, mt_err *err) {
    if (!p) return mt_errf(err, "no placement to switch to");
    if (mt_placement_fits(p, &e->m->cfg, err)) return -1;
    if (mt_engine_drain(e, err)) return -1;   /* the pass in flight dispatches over the old one */
    e->o.placement = p;
    return 0;
}

void mt_engine_get_stats(const mt_engine *e, mt_engine_stats *s) {
    s->waiting = e->n_waiting;
    s->running = e->n_running;
    s->kv_blocks_total = e->kv.num_blocks;
    s->kv_blocks_free = mt_kv_available(&e->kv);
    s->kv_bytes = (double)e->kv.num_blocks * kv_block_bytes(e);
    s->kv_memory_free = e->kv_memory_free;
    s->kv_capped = e->kv_capped;
    s->forward_seconds = e->forward_s;
    s->step_seconds = e->step_s;
    s->routing_seconds = e->sink_s;
    s->prefix_hit_blocks = e->kv.hits;
    s->prefix_lookup_blocks = e->kv.lookups;
    s->forward_passes = e->passes;
    s->tokens_forwarded = e->forwarded;
    s->preemptions = e->preemptions;
    s->tokens_recomputed = e->recomputed;
    s->peak_running = e->peak_running;
    s->tokens_dropped = e->dropped;
    s->passes_overlapped = e->overlapped;
}

/* Publishes every full, forwarded block not yet published (prompt blocks under the hashes computed
 * at submit, generated ones under hashes computed here and kept for a preempted sequence's return). */
static void publish_blocks(mt_engine *e, seq *s) {
    if (!e->o.prefix_cache) return;
    int full = s->n_forwarded / MT_KV_BLOCK;
    while (s->n_published < full) {
        int i = s->n_published;
        if (i == s->n_hashed) {
            s->block_hash[i] = mt_kv_block_hash(i ? s->block_hash[i - 1] : 0, s->tokens + (size_t)i * MT_KV_BLOCK);
            s->n_hashed++;
        }
        s->last_hash = s->block_hash[i];
        mt_kv_publish(&e->kv, &s->kv, i, s->last_hash);
        s->n_published++;
    }
}

/* Whether a running sequence will publish prompt block i under h (it has not forwarded it yet). */
static bool block_in_flight(const mt_engine *e, int i, uint64_t h) {
    for (int r = 0; r < e->n_running; r++) {
        const seq *o = e->running[r];
        if (!o->cancelled && o->n_published <= i && i < o->n_prompt_blocks && o->block_hash[i] == h) return true;
    }
    return false;
}

typedef enum admit_result { ADMITTED, NO_ROOM, DEFERRED } admit_result;

/* Positions of s that must be forwarded whatever the cache holds: the last token (its logits give the
 * next one) and every prompt position still to score a prompt token. Blocks before it may be adopted. */
static int first_to_forward(const seq *s) {
    int keep = s->n_tokens - 1;
    int score_lo = s->score_from - 1 > s->peak_forwarded ? s->score_from - 1 : s->peak_forwarded;
    if (s->score_from > 0 && score_lo < s->n_prompt - 1 && score_lo < keep) keep = score_lo;
    return keep;
}

/* Blocks an admission must leave available besides its own: one per running sequence (sixteen
 * decode steps each), so that what is admitted now is not preempted at the next step. */
static int admission_headroom(const mt_engine *e) { return e->o.reserve_whole ? 0 : e->n_running; }

/* Adopts cached blocks (prompt ones, and a preempted sequence's generated ones, before
 * first_to_forward) and reserves the rest: the known tokens' positions, or with reserve_whole the
 * whole context.
 * DEFERRED when the first prompt block not cached is being forwarded by a running sequence: s waits
 * until it is published, so a prefix shared by requests running together is forwarded once. */
static admit_result try_admit(mt_engine *e, seq *s) {
    long hits = e->kv.hits, lookups = e->kv.lookups;
    if (e->o.prefix_cache) {
        int max_blocks = first_to_forward(s) / MT_KV_BLOCK, cached = 0;
        if (max_blocks > s->n_hashed) max_blocks = s->n_hashed;
        while (cached < max_blocks && mt_kv_cached(&e->kv, s->block_hash[cached])) cached++;
        if (cached < max_blocks && cached < s->n_prompt_blocks && !e->o.no_shared_wait &&
            block_in_flight(e, cached, s->block_hash[cached]))
            return DEFERRED; /* looked up again at the next step: counted then */
        e->kv.lookups += max_blocks; /* hit or not; mt_kv_seq_adopt counts the hits */
        for (int i = 0; i < cached; i++) {
            if (!mt_kv_seq_adopt(&e->kv, &s->kv, s->block_hash[i])) break;
            s->last_hash = s->block_hash[i];
        }
        s->n_published = s->kv.num_blocks;
        s->n_forwarded = s->kv.num_blocks * MT_KV_BLOCK;
    }
    int positions = e->o.reserve_whole ? positions_needed(s->n_prompt, s->max_new_tokens) : s->n_tokens;
    if (mt_kv_seq_reserve(&e->kv, &s->kv, positions, NULL) ||
        (e->n_running > 0 && mt_kv_available(&e->kv) < admission_headroom(e))) {
        mt_kv_seq_release(&e->kv, &s->kv);
        s->n_published = s->n_forwarded = 0;
        e->kv.hits = hits;   /* a request that waits is looked up again: count it once */
        e->kv.lookups = lookups;
        return NO_ROOM;
    }
    if (s->peak_forwarded == 0) s->n_cached = s->n_forwarded; /* nothing of its own forwarded yet */
    s->admit_hits = e->kv.hits - hits;
    s->admit_lookups = e->kv.lookups - lookups;
    return ADMITTED;
}

static void finish(mt_engine *e, seq *s, mt_finish_reason reason) {
    const mt_config *c = &e->m->cfg;
    int rows = !e->routing_buf ? 0 : s->n_forwarded > s->n_saved ? s->n_forwarded : s->n_saved;
    size_t row = (size_t)c->num_hidden_layers * c->top_k;
    for (int p = 0; p < rows; p++) {
        int32_t *out = e->routing_buf + (size_t)p * row;
        if (p < s->n_forwarded) mt_kv_routing_read(&e->kv, &s->kv, p, out);
        else memcpy(out, s->saved_routing + (size_t)p * row, row * sizeof *out);
    }
    mt_engine_event ev = {.kind = MT_EVENT_FINISHED, .id = s->id, .reason = reason,
                          .output = s->tokens + s->n_prompt, .logprobs = s->logprobs, .n_prompt = s->n_prompt,
                          .n_generated = s->n_tokens - s->n_prompt, .n_cached = s->n_cached,
                          .n_top = s->n_top, .top_ids = s->top_ids, .top_logprobs = s->top_lps,
                          .prompt_logprobs = s->prompt_lp, .prompt_top_ids = s->prompt_top_ids,
                          .prompt_top_logprobs = s->prompt_top_lps,
                          .n_ids = s->n_lp_ids, .ids_logprobs = s->ids_lp, .prompt_ids_logprobs = s->prompt_ids_lp,
                          .routing = e->routing_buf, .routing_rows = rows};
    if (e->cb) e->cb(e->cb_ctx, &ev);
    mt_kv_seq_release(&e->kv, &s->kv);
    seq_free(s);
}

/* Removes finished/cancelled entries from running, keeping order. */
static void compact_running(mt_engine *e) {
    int j = 0;
    for (int i = 0; i < e->n_running; i++)
        if (e->running[i]) e->running[j++] = e->running[i];
    e->n_running = j;
}

/* Admits waiting sequences in order while running slots last, until one does not fit; deferred
 * ones keep their place. */
static void admit(mt_engine *e) {
    int kept = 0, i = 0;
    for (; i < e->n_waiting && e->n_running < e->o.max_running; i++) {
        seq *s = e->waiting[i];
        if (s->cancelled) {
            finish(e, s, MT_FINISH_CANCELLED);
            continue;
        }
        admit_result r = try_admit(e, s);
        if (r == NO_ROOM) break;
        if (r == DEFERRED) e->waiting[kept++] = s;
        else e->running[e->n_running++] = s;
    }
    memmove(e->waiting + kept, e->waiting + i, (size_t)(e->n_waiting - i) * sizeof *e->waiting);
    e->n_waiting = kept + e->n_waiting - i;
    if (e->n_running > e->peak_running) e->peak_running = e->n_running;
}

/* Keeps the routing of what s forwarded beyond what is saved, before its blocks go. Out of memory,
 * the rows saved so far stay (a cancel before s forwards again would answer with fewer rows). */
static void save_routing(mt_engine *e, seq *s) {
    if (!e->routing_buf || s->n_forwarded <= s->n_saved) return;
    size_t row = (size_t)e->m->cfg.num_hidden_layers * e->m->cfg.top_k;
    int32_t *saved = realloc(s->saved_routing, (size_t)s->n_forwarded * row * sizeof *saved);
    if (!saved) return;
    for (int p = s->n_saved; p < s->n_forwarded; p++) mt_kv_routing_read(&e->kv, &s->kv, p, saved + (size_t)p * row);
    s->saved_routing = saved;
    s->n_saved = s->n_forwarded;
}

/* Running sequence i gives its blocks back and waits at the head of the queue; when admitted again
 * it adopts what is still cached of its blocks and forwards the rest again (its routing, tokens and
 * scores do not change: a token's pass does not depend on its batch; its generator has drawn only for
 * the tokens it has). Room in `waiting` is kept at submit. */
static void requeue(mt_engine *e, int i) {
    seq *s = e->running[i];
    save_routing(e, s);
    if (s->peak_forwarded == 0) { /* admitted, never forwarded: looked up again when admitted again */
        e->kv.hits -= s->admit_hits;
        e->kv.lookups -= s->admit_lookups;
    }
    mt_kv_seq_release(&e->kv, &s->kv);
    s->n_forwarded = s->n_published = 0;
    s->last_hash = 0;
    s->preemptions++;
    e->running[i] = NULL;
    memmove(e->waiting + 1, e->waiting, (size_t)e->n_waiting * sizeof *e->waiting);
    e->waiting[0] = s;
    e->n_waiting++;
}

/* requeue for lack of blocks: counted as a preemption. */
static void preempt(mt_engine *e, int i) {
    requeue(e, i);
    e->preemptions++;
}

/* Gives each running sequence, oldest first, the blocks for every token it knows (a decoding one
 * its next position's); where none is left, the newest running sequences are preempted until it
 * fits (the sequence itself, when it is the newest). The oldest always fits: submit refuses a
 * request whose whole context exceeds the cache. */
static void grow(mt_engine *e) {
    for (int i = 0; i < e->n_running; i++) {
        seq *s = e->running[i];
        if (!s) continue;
        while (mt_kv_seq_reserve(&e->kv, &s->kv, s->n_tokens, NULL)) {
            int v = e->n_running - 1;
            while (!e->running[v]) v--;
            preempt(e, v);
            if (v == i) break;
        }
    }
    compact_running(e);
}

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Whether the ending pass's token i is dropped: its sequence finished while the pass was in flight
 * (only an overlapped pass ends while a sequence is finishing). */
static bool token_dropped(const mt_engine *e, const mt_routing_event *ev, int i) {
    return e->running[ev->seq_ids[i]]->finishing != 0;
}

/* ev without its dropped tokens, in e->kept (whose arrays hold max_running tokens: an overlapped
 * pass has one a sequence). */
static const mt_routing_event *without_dropped(mt_engine *e, const mt_routing_event *ev) {
    int k = ev->top_k, n = 0;
    mt_routing_event *o = &e->kept;
    int32_t *seq_ids = e->kept_ints, *pos = seq_ids + e->o.max_running, *tok = pos + e->o.max_running;
    int32_t *group = tok + e->o.max_running, *ids = group + e->o.max_running, *phys = ids + (size_t)e->o.max_running * k;
    for (int i = 0; i < ev->n_tokens; i++) {
        if (token_dropped(e, ev, i)) continue;
        seq_ids[n] = ev->seq_ids[i];
        pos[n] = ev->positions[i];
        tok[n] = ev->tokens[i];
        if (ev->request_groups) group[n] = ev->request_groups[i];
        if (ev->request_ids) e->kept_req[n] = ev->request_ids[i];
        if (ev->request_names) e->kept_name[n] = ev->request_names[i];
        if (ev->recomputed) e->kept_again[n] = ev->recomputed[i];
        memcpy(ids + (size_t)n * k, ev->topk_ids + (size_t)i * k, (size_t)k * sizeof *ids);
        memcpy(e->kept_w + (size_t)n * k, ev->topk_weights + (size_t)i * k, (size_t)k * sizeof *e->kept_w);
        if (ev->phys_ids) memcpy(phys + (size_t)n * k, ev->phys_ids + (size_t)i * k, (size_t)k * sizeof *phys);
        n++;
    }
    *o = *ev;
    o->n_tokens = n;
    o->seq_ids = seq_ids;
    o->positions = pos;
    o->tokens = tok;
    o->request_groups = ev->request_groups ? group : NULL;
    o->request_ids = ev->request_ids ? e->kept_req : NULL;
    o->request_names = ev->request_names ? e->kept_name : NULL;
    o->recomputed = ev->recomputed ? e->kept_again : NULL;
    o->topk_ids = ids;
    o->topk_weights = e->kept_w;
    o->phys_ids = ev->phys_ids ? phys : NULL;
    return o;
}

/* Stores each token's routing in its KV block, then passes the event on (without the tokens of
 * sequences that finished while an overlapped pass was in flight: they are dropped). */
static void store_routing(void *ctx, const mt_routing_event *ev) {
    mt_engine *e = ctx;
    double t0 = seconds_now();
    bool any_dropped = false;
    for (int i = 0; i < ev->n_tokens; i++) {
        if (token_dropped(e, ev, i)) {
            any_dropped = true;
            continue;
        }
        if (e->kv.routing)
            mt_kv_routing_write(&e->kv, e->ending->kv[ev->seq_ids[i]], ev->positions[i], ev->layer,
                                ev->topk_ids + (size_t)i * ev->top_k);
    }
    if (any_dropped) ev = without_dropped(e, ev);
    if (e->user_sink && e->user_sink->on_layer && ev->n_tokens > 0) e->user_sink->on_layer(e->user_sink->ctx, ev);
    e->sink_s += seconds_now() - t0;
}

static void pass_done(void *ctx, const mt_pass_event *ev) {
    mt_engine *e = ctx;
    double t0 = seconds_now();
    mt_pass_event kept = *ev;
    for (int i = 0; i < e->n_running; i++) {   /* each dropped token was its sequence's only one */
        if (!e->running[i]->finishing) continue;
        kept.n_tokens--;
        kept.num_seqs_in_pass--;
    }
    if (e->user_sink && e->user_sink->on_pass && kept.n_tokens > 0) e->user_sink->on_pass(e->user_sink->ctx, &kept);
    e->sink_s += seconds_now() - t0;
}

/* Whether prompt position p's logits score prompt token p + 1 (not yet scored before a preemption). */
static bool scores_at(const seq *s, int p) {
    return s->score_from > 0 && p >= s->score_from - 1 && p >= s->peak_forwarded && p < s->n_prompt - 1;
}

/* The first position from f on that may score a prompt token (score_from > 0). */
static int first_scored(const seq *s, int f) {
    int lo = f > s->score_from - 1 ? f : s->score_from - 1;
    return lo > s->peak_forwarded ? lo : s->peak_forwarded;
}

/* Positions of [f, f + k) whose logits score the next prompt token. */
static int scored_in(const seq *s, int f, int k) {
    if (s->score_from == 0) return 0;
    int lo = first_scored(s, f), hi = f + k < s->n_prompt - 1 ? f + k : s->n_prompt - 1;
    return hi > lo ? hi - lo : 0;
}

/* A scored prompt row's spec: the request's temperature (its log-probabilities are taken at it), no
 * filters and no draw (its generator is not advanced, so scoring the prompt leaves the sampled
 * tokens as they would be; the row's own pick is not used). */
static mt_sample_row score_spec(const seq *s) { return (mt_sample_row){s->sampler.params.temperature, 0, 1.0f, 0u, 0.0f}; }

/* Copies row `row` of the pass's alternatives (pass_top wide) into the n places at ids/lps. */
static void take_top(const pass *P, int row, int pass_top, int n, int32_t *ids, float *lps) {
    memcpy(ids, P->top_ids + (size_t)row * pass_top, (size_t)n * sizeof *ids);
    memcpy(lps, P->top_lps + (size_t)row * pass_top, (size_t)n * sizeof *lps);
}

/* Room for the named tokens of a pass's rows (made when a request first names some). */
static int named_room(const mt_engine *e, pass *P, mt_err *err) {
    if (P->ids) return 0;
    size_t cap = (size_t)e->rows_cap * MT_LOGPROB_IDS_MAX;
    P->ids = malloc(cap * sizeof *P->ids);
    P->ids_lp = malloc(cap * sizeof *P->ids_lp);
    if (P->ids && P->ids_lp) return 0;
    free(P->ids);
    free(P->ids_lp);
    P->ids = NULL;
    P->ids_lp = NULL;
    return mt_errf(err, "out of memory for the named tokens of %d rows", e->rows_cap);
}

/* Logit row `row` of the pass: batch token `token`, its spec, its target (-1: its next token) and,
 * with `named`, s's named tokens (appended at *ids_at). */
static void add_row(pass *P, const seq *s, int row, int token, mt_sample_row spec, int32_t target, bool named,
                    int *ids_at) {
    P->rows[row] = token;
    P->sample[row] = spec;
    P->target[row] = target;
    P->ids_off[row] = *ids_at;
    if (named && s->n_lp_ids) {
        memcpy(P->ids + *ids_at, s->lp_ids, (size_t)s->n_lp_ids * sizeof *P->ids);
        *ids_at += s->n_lp_ids;
    }
}

static bool is_stop(const seq *s, const mt_config *c, int32_t tok) {
    if (!s->ignore_eos && mt_config_is_eos(c, tok)) return true;
    for (int i = 0; i < s->n_stop; i++)
        if (s->stop[i] == tok) return true;
    return false;
}

/* P's batch over its arrays. */
static void pass_batch(mt_engine *e, pass *P, int n, int n_rows, bool any_again, bool any_sampled, bool any_logprob,
                       int ids_at, int n_adj, int pass_top) {
    P->n = n;
    P->pass_top = pass_top;
    P->b = (mt_batch){.n_tokens = n, .tokens = P->tokens, .seq_ids = P->seq, .positions = P->pos,
                      .seqs = P->kv, .num_seqs = e->n_running, .request_ids = P->req, .request_names = P->name,
                      .request_groups = P->group, .recomputed = any_again ? P->again : NULL,
                      .n_logits = n_rows, .logit_rows = P->rows, .next_tokens = P->next,
                      .sample = any_sampled ? P->sample : NULL,
                      .next_logprobs = any_logprob ? P->logprob : NULL,
                      .logit_targets = any_logprob ? P->target : NULL,
                      .top_n = pass_top, .top_ids = P->top_ids, .top_logprobs = P->top_lps,
                      .ids_offsets = ids_at > 0 ? P->ids_off : NULL, .ids_list = P->ids, .ids_logprobs = P->ids_lp,
                      .adjusts = n_adj > 0 ? P->adj : NULL, .n_adjusts = n_adj, .placement = e->o.placement};
}

/* Running sequence i ends: now, or with defer, once the pass in flight after this one ends. */
static void end_seq(mt_engine *e, int i, mt_finish_reason reason, bool defer) {
    if (defer) {
        e->running[i]->finishing = reason;
        return;
    }
    finish(e, e->running[i], reason);
    e->running[i] = NULL;
}

static int step_once(mt_engine *e, mt_err *err);

int mt_engine_step(mt_engine *e, mt_err *err) {
    double t0 = seconds_now();
    int n = step_once(e, err);
    e->step_s += seconds_now() - t0;
    return n;
}

static int process_pass(mt_engine *e, pass *P, bool defer_finish);

static int begin_pass(mt_engine *e, pass *P, mt_err *err) {
    double t0 = seconds_now();
    int rc = mt_forward_begin(e->m, &e->kv, &e->q, &P->b, e->logits, &e->sink, err);
    e->forward_s += seconds_now() - t0;
    return rc;
}

/* Ends the oldest pass begun, P, handing its routing to the sinks. */
static int end_pass(mt_engine *e, pass *P, mt_err *err) {
    double t0 = seconds_now();
    e->ending = P;
    int rc = mt_forward_end(e->m, &e->q, err);
    e->ending = NULL;
    e->forward_s += seconds_now() - t0;
    return rc;
}

/* Ends the pass in flight, if any, and hands its outputs out (what the next step would do, with no
 * pass begun after it). */
int mt_engine_drain(mt_engine *e, mt_err *err) {
    pass *P = e->in_flight;
    if (!P) return 0;
    e->in_flight = NULL;
    if (end_pass(e, P, err)) return -1;
    return process_pass(e, P, false);
}

/* mt_engine_drain where no error can be returned: the next step returns it. */
static void drain_quietly(mt_engine *e) {
    if (e->in_flight && mt_engine_drain(e, &e->drain_err)) e->drain_failed = true;
}

int mt_engine_finish_cancelled(mt_engine *e) {
    drain_quietly(e);
    int n = 0;
    for (int i = 0; i < e->n_running; i++) {
        if (e->running[i]->cancelled) {
            finish(e, e->running[i], MT_FINISH_CANCELLED);
            e->running[i] = NULL;
            n++;
        }
    }
    compact_running(e);
    /* Cancelled requests still waiting finish now, even when no running slot is free. */
    int kept = 0;
    for (int i = 0; i < e->n_waiting; i++) {
        if (e->waiting[i]->cancelled) {
            finish(e, e->waiting[i], MT_FINISH_CANCELLED);
            n++;
        } else {
            e->waiting[kept++] = e->waiting[i];
        }
    }
    e->n_waiting = kept;
    return n;
}

int mt_engine_retract(mt_engine *e) {
    drain_quietly(e);
    int n = e->n_running;
    for (int i = n - 1; i >= 0; i--) requeue(e, i); /* newest first: the oldest ends at the head */
    e->n_running = 0;
    return n;
}

/* Builds the next pass over the running sequences into P: decode tokens first (one each), then
 * prefill chunks within the remaining budget (a prompt, or the tokens of a preempted sequence that
 * are not cached any more). Returns its tokens (0: none), -1 on error. */
static int build_pass(mt_engine *e, pass *P, mt_err *err) {
    int n = 0, n_rows = 0, budget = e->o.max_batch_tokens;
    int32_t *chunk = P->chunk;
    for (int i = 0; i < e->n_running; i++) {
        seq *s = e->running[i];
        P->kv[i] = &s->kv;
        chunk[i] = 0;
        if (s->n_forwarded >= s->n_prompt && s->n_forwarded == s->n_tokens - 1) chunk[i] = 1;
        budget -= chunk[i];
    }
    int score_left = e->o.max_scored_rows;   /* scored prompt rows this pass may still take */
    for (int i = 0; i < e->n_running && budget > 0; i++) {
        seq *s = e->running[i];
        if (chunk[i] || s->n_forwarded >= s->n_tokens) continue;
        int f = s->n_forwarded, take = s->n_tokens - f;
        if (take > budget) take = budget;
        if (scored_in(s, f, take) > score_left) take = first_scored(s, f) - f + score_left;
        score_left -= scored_in(s, f, take);
        chunk[i] = take;
        budget -= take;
    }
    /* scored rows: the CPU's logits grow once, before any generator draws for the pass */
    if (!e->m->device && score_left < e->o.max_scored_rows && e->logits_rows < e->rows_cap) {
        float *grown = realloc(e->logits, (size_t)e->rows_cap * e->m->cfg.vocab_size * sizeof *grown);
        if (!grown) return mt_errf(err, "out of memory for %d rows of logits", e->rows_cap);
        e->logits = grown;
        e->logits_rows = e->rows_cap;
    }
    bool any_named = false;     /* some request of the pass names tokens */
    for (int i = 0; i < e->n_running && !any_named; i++) any_named = e->running[i]->n_lp_ids > 0 && chunk[i] > 0;
    if (any_named && named_room(e, P, err)) return -1;
    size_t adj_need = 0;        /* the most logit changes the pass's generating rows can take */
    for (int i = 0; i < e->n_running; i++) {
        const seq *s = e->running[i];
        if (chunk[i] > 0 && s->n_forwarded + chunk[i] == s->n_tokens && mt_penalties_on(&s->pen))
            adj_need += (size_t)mt_penalties_max_changes(&s->pen);
    }
    if (adj_need > P->adj_cap) {
        mt_logit_adjust *grown = realloc(P->adj, adj_need * sizeof *grown);
        if (!grown) return mt_errf(err, "out of memory for %zu logit changes", adj_need);
        P->adj = grown;
        P->adj_cap = adj_need;
    }
    int n_adj = 0;              /* the pass's logit changes so far */
    int ids_at = 0;             /* named tokens of the pass's rows so far */
    bool any_sampled = false;   /* else every row takes its argmax */
    bool any_logprob = false;   /* some row's request wants its token's (or a prompt token's) log-probability */
    int pass_top = 0;           /* alternatives listed for every row: the most any row's request asks */
    bool any_again = false;     /* some token is forwarded again after its sequence's preemption, or
                                   is a probe's */
    for (int i = 0; i < e->n_running; i++) {
        seq *s = e->running[i];
        for (int t = 0; t < chunk[i]; t++, n++) {
            int p = s->n_forwarded + t;
            P->tokens[n] = s->tokens[p];
            P->seq[n] = i;
            P->pos[n] = p;
            P->req[n] = s->id;
            P->name[n] = s->name;
            P->group[n] = s->group;
            P->again[n] = s->probe || p < s->peak_forwarded;
            any_again |= P->again[n];
            if (scores_at(s, p)) {
                add_row(P, s, n_rows++, n, score_spec(s), s->tokens[p + 1], true, &ids_at);
                any_logprob = true;
                if (s->n_top > pass_top) pass_top = s->n_top;
            }
        }
        if (chunk[i] > 0 && s->n_forwarded + chunk[i] == s->n_tokens) {
            /* the row's draw comes from its own generator, so batching never changes a token */
            add_row(P, s, n_rows++, n - 1, mt_sampler_next(&s->sampler), -1, s->ids_lp != NULL, &ids_at);
            if (mt_penalties_on(&s->pen))
                n_adj += mt_penalties_row(&s->pen, n_rows - 1, s->n_tokens - s->n_prompt, P->adj + n_adj);
            any_logprob |= s->logprobs != NULL;
            if (s->top_ids && s->n_top > pass_top) pass_top = s->n_top;
        }
    }
    if (n == 0) return 0;
    P->ids_off[n_rows] = ids_at;
    for (int r = 0; r < n_rows; r++) any_sampled |= P->sample[r].temperature > 0.0f;
    pass_batch(e, P, n, n_rows, any_again, any_sampled, any_logprob, ids_at, n_adj, pass_top);
    return n;
}

/* Hands P's outputs out: scores, tokens, events; finishes what ends. With defer_finish (a pass begun
 * after P is in flight, holding every running sequence's next token) a sequence that ends is only
 * marked finishing, and finishes when that pass ends, its token there dropped. Returns 0. */
static int process_pass(mt_engine *e, pass *P, bool defer_finish) {
    const mt_config *c = &e->m->cfg;
    const int32_t *chunk = P->chunk;
    int pass_top = P->pass_top, row = 0, dropped = 0;
    for (int i = 0; i < e->n_running; i++) {
        seq *s = e->running[i];
        if (chunk[i] == 0) continue;
        if (s->finishing) {   /* it ended while P was in flight: P's token for it is dropped */
            row++;
            dropped++;
            finish(e, s, s->finishing);
            e->running[i] = NULL;
            continue;
        }
        for (int p = s->n_forwarded; p < s->n_forwarded + chunk[i]; p++) {
            if (!scores_at(s, p)) continue;
            s->prompt_lp[p + 1] = P->logprob[row];
            if (s->prompt_ids_lp)
                memcpy(s->prompt_ids_lp + (size_t)(p + 1) * s->n_lp_ids, P->ids_lp + P->ids_off[row],
                       (size_t)s->n_lp_ids * sizeof *s->prompt_ids_lp);
            if (s->n_top > 0)
                take_top(P, row, pass_top, s->n_top, s->prompt_top_ids + (size_t)(p + 1) * s->n_top,
                         s->prompt_top_lps + (size_t)(p + 1) * s->n_top);
            row++;
        }
        int again = (s->peak_forwarded < s->n_forwarded + chunk[i] ? s->peak_forwarded : s->n_forwarded + chunk[i]) -
                    s->n_forwarded;
        if (again > 0) e->recomputed += again;
        s->n_forwarded += chunk[i];
        if (s->n_forwarded > s->peak_forwarded) s->peak_forwarded = s->n_forwarded;
        if (s->saved_routing && s->n_forwarded >= s->n_saved) { /* its cache holds it all again */
            free(s->saved_routing);
            s->saved_routing = NULL;
            s->n_saved = 0;
        }
        publish_blocks(e, s);
        if (s->n_forwarded < s->n_tokens) continue; /* prompt not finished yet */
        float logprob = s->logprobs ? P->logprob[row] : NAN;   /* set when its request asks */
        int generated = s->n_tokens - s->n_prompt;
        int32_t *top_ids = s->top_ids ? s->top_ids + (size_t)generated * s->n_top : NULL;
        float *top_lps = s->top_ids ? s->top_lps + (size_t)generated * s->n_top : NULL;
        if (top_ids) take_top(P, row, pass_top, s->n_top, top_ids, top_lps);
        float *ids_lp = s->ids_lp ? s->ids_lp + (size_t)generated * s->n_lp_ids : NULL;
        if (ids_lp) memcpy(ids_lp, P->ids_lp + P->ids_off[row], (size_t)s->n_lp_ids * sizeof *ids_lp);
        int32_t tok = P->next[row++];
        if (generated >= s->max_new_tokens) { /* max_new_tokens == 0 */
            end_seq(e, i, MT_FINISH_LENGTH, defer_finish);
            continue;
        }
        if (s->logprobs) s->logprobs[generated] = logprob;
        s->tokens[s->n_tokens++] = tok;
        mt_penalties_add_output(&s->pen, tok);
        bool stops = is_stop(s, c, tok);
        mt_engine_event ev = {.kind = MT_EVENT_TOKEN, .id = s->id, .token = tok, .stops = stops, .logprob = logprob,
                              .n_prompt = s->n_prompt, .n_generated = generated + 1, .n_cached = s->n_cached,
                              .n_top = top_ids ? s->n_top : 0, .top_ids = top_ids, .top_logprobs = top_lps,
                              .n_ids = ids_lp ? s->n_lp_ids : 0, .ids_logprobs = ids_lp};
        if (generated == 0) {   /* the prompt is forwarded: its scores are complete */
            ev.n_top = s->n_top;
            ev.prompt_logprobs = s->prompt_lp;
            ev.prompt_top_ids = s->prompt_top_ids;
            ev.prompt_top_logprobs = s->prompt_top_lps;
            ev.n_ids = s->n_lp_ids;
            ev.prompt_ids_logprobs = s->prompt_ids_lp;
        }
        if (e->cb) e->cb(e->cb_ctx, &ev);
        mt_finish_reason reason = 0;
        if (stops) reason = MT_FINISH_STOP;
        else if (generated + 1 >= s->max_new_tokens) reason = MT_FINISH_LENGTH;
        if (reason) {
            end_seq(e, i, reason, defer_finish);
        }
    }
    e->passes++;
    e->forwarded += P->n - dropped;
    e->dropped += dropped;
    compact_running(e);
    return 0;
}

/* Whether the next pass may begin before P's outputs are read (overlapped decode): the engine
 * overlaps (mt_engine_opts.overlap), nothing waits to be admitted, and every running sequence
 * decodes one token in P and, whatever that token is, decodes another after it unless it stops
 * (not at its last token, not cancelled, no penalties: their changes need P's token). */
static bool can_overlap(const mt_engine *e, const pass *P) {
    if (e->o.overlap < 0 || (e->o.overlap == 0 && !e->m->device)) return false;
    if (e->n_waiting > 0 || e->n_running == 0) return false;
    for (int i = 0; i < e->n_running; i++) {
        const seq *s = e->running[i];
        if (P->chunk[i] != 1 || s->n_forwarded < s->n_prompt || s->n_forwarded != s->n_tokens - 1) return false;
        if (s->cancelled || s->finishing || mt_penalties_on(&s->pen) || s->n_tokens - s->n_prompt + 1 >= s->max_new_tokens)
            return false;
    }
    return true;
}

/* Begins pass C, each running sequence's next decode token, before P (in flight, pure decode: row i
 * sequence i's) has handed out its tokens: C's token i is P's pick of row i (MT_TOKEN_OF_ROW).
 * Returns 0 when begun, 1 when not now (a sequence's next position has no block free), -1 on error. */
static int begin_overlapped(mt_engine *e, pass *C, mt_err *err) {
    for (int i = 0; i < e->n_running; i++)
        if (mt_kv_seq_reserve(&e->kv, &e->running[i]->kv, e->running[i]->n_tokens + 1, NULL)) return 1;
    bool any_named = false, any_again = false, any_sampled = false, any_logprob = false;
    for (int i = 0; i < e->n_running; i++) any_named |= e->running[i]->n_lp_ids > 0;
    if (any_named && named_room(e, C, err)) return -1;
    int ids_at = 0, pass_top = 0, n = e->n_running;
    for (int i = 0; i < n; i++) {
        seq *s = e->running[i];
        C->kv[i] = &s->kv;
        C->chunk[i] = 1;
        C->tokens[i] = MT_TOKEN_OF_ROW(i);
        C->seq[i] = i;
        C->pos[i] = s->n_tokens;
        C->req[i] = s->id;
        C->name[i] = s->name;
        C->group[i] = s->group;
        C->again[i] = s->probe;
        any_again |= s->probe;
        add_row(C, s, i, i, mt_sampler_next(&s->sampler), -1, s->ids_lp != NULL, &ids_at);
        any_logprob |= s->logprobs != NULL;
        any_sampled |= C->sample[i].temperature > 0.0f;
        if (s->top_ids && s->n_top > pass_top) pass_top = s->n_top;
    }
    C->ids_off[n] = ids_at;
    pass_batch(e, C, n, n, any_again, any_sampled, any_logprob, ids_at, 0, pass_top);
    if (begin_pass(e, C, err)) return -1;
    e->overlapped++;
    return 0;
}

/* A step with a pass in flight: the next one begins first when it can, then the one in flight ends
 * and hands its outputs out while the device works on the next. */
static int step_overlapped(mt_engine *e, mt_err *err) {
    pass *P = e->in_flight, *C = P == &e->pass_bufs[0] ? &e->pass_bufs[1] : &e->pass_bufs[0];
    int begun = can_overlap(e, P) ? begin_overlapped(e, C, err) : 1;
    if (begun < 0) return -1;
    int rc = end_pass(e, P, err);
    e->in_flight = begun == 0 ? C : NULL;
    if (rc) return -1;
    process_pass(e, P, begun == 0);
    return begun == 0 ? C->n : 0;
}

static int step_once(mt_engine *e, mt_err *err) {
    if (e->drain_failed) {   /* a pass in flight failed where no error could be returned */
        e->drain_failed = false;
        if (err) *err = e->drain_err;
        return -1;
    }
    if (e->in_flight) return step_overlapped(e, err);
    mt_engine_finish_cancelled(e);
    admit(e);
    if (!e->o.reserve_whole) grow(e);
    if (e->n_running == 0) return 0;
    pass *P = &e->pass_bufs[0];   /* none in flight: either is free */
    int n = build_pass(e, P, err);
    if (n <= 0) return n;
    if (begin_pass(e, P, err)) return -1;
    if (can_overlap(e, P)) {   /* its outputs are handed out at the next step, after the next pass begins */
        e->in_flight = P;
        return n;
    }
    if (end_pass(e, P, err)) return -1;
    process_pass(e, P, false);
    return n;
}
