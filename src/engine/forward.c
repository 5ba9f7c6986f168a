/* CPU forward pass. One function per stage; each works on all tokens of the batch at once
 * (matrix-matrix products), so prefill is never token by token. */
#include "engine/forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cuda_backend.h"
#include "engine/moe.h"
#include "engine/sampler.h"
#include "util/host_memory.h"

_Static_assert(MT_MAX_HEAD_DIM <= MT_ATTN_MAX_HEAD_DIM, "mt_attend must take every head size the forward pass accepts");

typedef struct scratch {
    float *h, *xn, *q, *k, *v, *att, *out;
    float *mlp_gate, *mlp_up;
} scratch;

static void scratch_free(scratch *s) {
    free(s->h); free(s->xn); free(s->q); free(s->k); free(s->v); free(s->att); free(s->out);
    free(s->mlp_gate); free(s->mlp_up);
}

static int scratch_alloc(scratch *s, const mt_config *c, int n) {
    memset(s, 0, sizeof *s);
    size_t H = (size_t)c->hidden_size, q = (size_t)c->num_attention_heads * c->head_dim;
    size_t kv = (size_t)c->num_key_value_heads * c->head_dim;
    size_t inter = (size_t)(c->intermediate_size > c->moe_intermediate_size ? c->intermediate_size : c->moe_intermediate_size);
    if ((size_t)c->shared_expert_intermediate_size > inter) inter = (size_t)c->shared_expert_intermediate_size;
    s->h = malloc(n * H * sizeof(float));
    s->xn = malloc(n * H * sizeof(float));
    s->q = malloc(n * q * sizeof(float));
    s->k = malloc(n * kv * sizeof(float));
    s->v = malloc(n * kv * sizeof(float));
    s->att = malloc(n * q * sizeof(float));
    s->out = malloc(n * H * sizeof(float));
    s->mlp_gate = malloc(n * inter * sizeof(float));
    s->mlp_up = malloc(n * inter * sizeof(float));
    if (!s->h || !s->xn || !s->q || !s->k || !s->v || !s->att || !s->out || !s->mlp_gate || !s->mlp_up) {
        scratch_free(s);
        return -1;
    }
    return 0;
}

/* rows_before: logit rows with next tokens of the pass in flight before b (its MT_TOKEN_OF_ROW
 * range), 0 when none. */
static int validate(const mt_model *m, const mt_kv_cache *kv, const mt_batch *b, int rows_before, mt_err *err) {
    const mt_config *c = &m->cfg;
    if (b->n_tokens <= 0) return mt_errf(err, "empty batch");
    if (kv->kv_dim != c->num_key_value_heads * c->head_dim || kv->num_layers != c->num_hidden_layers)
        return mt_errf(err, "KV cache shape does not match the model");
    if (c->head_dim > MT_MAX_HEAD_DIM) return mt_errf(err, "head_dim %d exceeds %d", c->head_dim, MT_MAX_HEAD_DIM);
    for (int i = 0; i < b->n_tokens; i++) {
        int t = b->tokens[i], s = b->seq_ids[i], p = b->positions[i];
        if (t < 0 && rows_before > 0) {   /* MT_TOKEN_OF_ROW: a pick of the pass in flight */
            if (-1 - t < rows_before) continue;
            return mt_errf(err, "batch index %d: token %d stands for row %d of the pass in flight, which has %d rows", i,
                           t, -1 - t, rows_before);
        }
        if (t < 0 || t >= c->vocab_size)
            return mt_errf(err, "token id %d at batch index %d is outside the vocabulary [0, %d)", t, i, c->vocab_size);
        if (s < 0 || s >= b->num_seqs || !b->seqs[s]) return mt_errf(err, "batch index %d: bad sequence %d", i, s);
        if (p < 0 || p >= c->max_position_embeddings)
            return mt_errf(err, "position %d is outside the model's context of %d", p, c->max_position_embeddings);
        if (p >= b->seqs[s]->num_blocks * MT_KV_BLOCK)
            return mt_errf(err, "position %d of sequence %d has no KV block reserved", p, s);
    }
    for (int i = 0; i < b->n_logits; i++)
        if (b->logit_rows[i] < 0 || b->logit_rows[i] >= b->n_tokens)
            return mt_errf(err, "logit row %d outside the batch", b->logit_rows[i]);
    for (int i = 0; b->logit_targets && i < b->n_logits; i++)
        if (b->logit_targets[i] >= c->vocab_size)
            return mt_errf(err, "target token %d of logit row %d is outside the vocabulary [0, %d)", b->logit_targets[i], i,
                           c->vocab_size);
    if (b->ids_offsets) {
        if (!b->next_tokens || !b->ids_list || !b->ids_logprobs || b->ids_offsets[0] != 0)
            return mt_errf(err, "listed token ids need next tokens, a list, room for their values and offsets from 0");
        for (int i = 0; i < b->n_logits; i++)
            if (b->ids_offsets[i + 1] < b->ids_offsets[i]) return mt_errf(err, "listed token offsets decrease at row %d", i);
        for (int j = 0; j < b->ids_offsets[b->n_logits]; j++)
            if (b->ids_list[j] < 0 || b->ids_list[j] >= c->vocab_size)
                return mt_errf(err, "listed token id %d is outside the vocabulary [0, %d)", b->ids_list[j], c->vocab_size);
    }
    if (b->top_n < 0 || b->top_n > MT_TOP_LOGPROBS_MAX || (b->top_n > 0 && (!b->next_tokens || !b->top_ids || !b->top_logprobs)))
        return mt_errf(err, "top_n %d: must be 0..%d, with next tokens and room for the lists", b->top_n, MT_TOP_LOGPROBS_MAX);
    if (b->n_adjusts < 0 || (b->n_adjusts > 0 && (!b->adjusts || !b->next_tokens)))
        return mt_errf(err, "%d logit changes: they need a list and next tokens", b->n_adjusts);
    for (int i = 0; i < b->n_adjusts; i++) {
        const mt_logit_adjust *a = &b->adjusts[i];
        if (a->row < 0 || a->row >= b->n_logits || a->token < 0 || a->token >= c->vocab_size)
            return mt_errf(err, "logit change %d: row %d or token %d is outside the pass's %d rows of %d", i, a->row,
                           a->token, b->n_logits, c->vocab_size);
        if (!(a->scale > 0.0f && isfinite(a->scale)) || !(isfinite(a->add) || a->add == -INFINITY))
            return mt_errf(err, "logit change %d: scale %g must be positive and add %g finite or -inf", i, a->scale,
                           a->add);
        if (i > 0 && (a->row < a[-1].row || (a->row == a[-1].row && a->token <= a[-1].token)))
            return mt_errf(err, "logit change %d: changes must be sorted by row, then token, one per pair", i);
    }
    if (b->placement && mt_placement_fits(b->placement, c, err)) return -1;
    return 0;
}

static void add_bias(float *x, const float *bias, int n, int dim) {
    if (!bias) return;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < dim; i++) x[(size_t)r * dim + i] += bias[i];
}

typedef struct attn_job {
    const mt_config *cfg;
    const mt_kv_cache *kv;
    const mt_batch *b;
    int layer;
    const float *q;
    float *out;
} attn_job;

/* One (token, key/value head): the query heads sharing that key/value head attend together
 * to the token's visible positions (mt_attend). */
static void attend_one(void *ctx, int item) {
    const attn_job *j = ctx;
    const mt_config *c = j->cfg;
    const int heads = c->num_attention_heads, kvh_n = c->num_key_value_heads, hd = c->head_dim;
    const int group = heads / kvh_n;
    const int tok = item / kvh_n, kvh = item % kvh_n;
    const int pos = j->b->positions[tok];
    const mt_kv_seq *seq = j->b->seqs[j->b->seq_ids[tok]];
    const mt_kv_cache *kv = j->kv;
    const mt_kv_pages pages = {.k = kv->k, .v = kv->v, .blocks = seq->blocks, .block_rows = MT_KV_BLOCK,
                               .row_stride = kv->kv_dim,
                               .block_stride = (size_t)kv->num_layers * MT_KV_BLOCK * kv->kv_dim,
                               .offset = (size_t)j->layer * MT_KV_BLOCK * kv->kv_dim + (size_t)kvh * hd};
    int first = 0;
    if (c->sliding_window > 0 && pos - c->sliding_window + 1 > 0) first = pos - c->sliding_window + 1;
    const size_t at = ((size_t)tok * heads + (size_t)kvh * group) * hd;
    mt_attend(j->out + at, j->q + at, group, hd, 1.0f / sqrtf((float)hd), &pages, first, pos);
}

static void attention(const mt_model *m, mt_kv_cache *kv, const mt_batch *b, const mt_layer *L, int layer,
                      scratch *s) {
    const mt_config *c = &m->cfg;
    int n = b->n_tokens, hd = c->head_dim;
    int qdim = c->num_attention_heads * hd, kvdim = c->num_key_value_heads * hd;
    mt_rmsnorm(s->xn, s->h, L->attn_norm, n, c->hidden_size, c->rms_norm_eps);
    const mt_matmul_op qkv[3] = {{s->q, s->xn, n, &L->q}, {s->k, s->xn, n, &L->k}, {s->v, s->xn, n, &L->v}};
    mt_matmul_group(qkv, 3);
    add_bias(s->q, L->q_bias, n, qdim);
    add_bias(s->k, L->k_bias, n, kvdim);
    add_bias(s->v, L->v_bias, n, kvdim);
    if (c->qk_norm == MT_QK_NORM_PER_HEAD) {
        mt_rmsnorm(s->q, s->q, L->q_norm, n * c->num_attention_heads, hd, c->rms_norm_eps);
        mt_rmsnorm(s->k, s->k, L->k_norm, n * c->num_key_value_heads, hd, c->rms_norm_eps);
    } else if (c->qk_norm == MT_QK_NORM_FULL) {
        mt_rmsnorm(s->q, s->q, L->q_norm, n, qdim, c->rms_norm_eps);
        mt_rmsnorm(s->k, s->k, L->k_norm, n, kvdim, c->rms_norm_eps);
    }
    mt_rope(s->q, n, c->num_attention_heads, hd, b->positions, c->rope_inv_freq, c->rope_attention_factor);
    mt_rope(s->k, n, c->num_key_value_heads, hd, b->positions, c->rope_inv_freq, c->rope_attention_factor);
    for (int i = 0; i < n; i++) {
        const mt_kv_seq *seq = b->seqs[b->seq_ids[i]];
        memcpy(mt_kv_at(kv, kv->k, seq, layer, b->positions[i]), s->k + (size_t)i * kvdim, (size_t)kvdim * sizeof(float));
        memcpy(mt_kv_at(kv, kv->v, seq, layer, b->positions[i]), s->v + (size_t)i * kvdim, (size_t)kvdim * sizeof(float));
    }
    attn_job job = {c, kv, b, layer, s->q, s->att};
    mt_parallel_for(n * c->num_key_value_heads, attend_one, &job);
    mt_matmul(s->out, s->att, n, &L->o);
    for (size_t i = 0; i < (size_t)n * c->hidden_size; i++) s->h[i] += s->out[i];
}

/* End-of-pass event: tokens and distinct sequences of the batch. */
static void report_pass(const mt_batch *b, const mt_routing_sink *sink) {
    if (!sink || !sink->on_pass) return;
    int distinct = 0;
    unsigned char *seen = calloc((size_t)b->num_seqs, 1);
    for (int i = 0; i < b->n_tokens && seen; i++) {
        distinct += !seen[b->seq_ids[i]];
        seen[b->seq_ids[i]] = 1;
    }
    free(seen);
    mt_pass_event pe = {b->n_tokens, distinct};
    sink->on_pass(sink->ctx, &pe);
}

typedef struct score_job {
    const mt_batch *b;
    const float *logits;
    int V;
} score_job;

/* Row i's log-probability (of its target, else of its next token), alternatives and listed tokens'. */
static void score_one(void *ctx, int i) {
    const score_job *j = ctx;
    const mt_batch *b = j->b;
    const mt_sample_row *r = b->sample ? &b->sample[i] : NULL;
    int32_t scored = b->logit_targets && b->logit_targets[i] >= 0 ? b->logit_targets[i] : b->next_tokens[i];
    int from = b->ids_offsets ? b->ids_offsets[i] : 0, n_named = b->ids_offsets ? b->ids_offsets[i + 1] - from : 0;
    float lp = mt_score_row(r, j->logits + (size_t)i * j->V, j->V, scored, b->top_n,
                            b->top_n ? b->top_ids + (size_t)i * b->top_n : NULL,
                            b->top_n ? b->top_logprobs + (size_t)i * b->top_n : NULL,
                            n_named ? b->ids_list + from : NULL, n_named, n_named ? b->ids_logprobs + from : NULL);
    if (b->next_logprobs) b->next_logprobs[i] = lp;
}

/* Each logit row's next token, once the batch's changes are made to its logits: its argmax, or its
 * sample (kernels/sample.h); then, when asked, its log-probability (or its target's) and its most
 * likely alternatives, rows in parallel. */
static int next_tokens(const mt_batch *b, float *logits, int V, mt_err *err) {
    for (int i = 0; i < b->n_adjusts; i++) {
        float *x = logits + (size_t)b->adjusts[i].row * V + b->adjusts[i].token;
        *x = mt_logit_adjusted(*x, &b->adjusts[i]);
    }
    uint64_t *work = NULL;
    for (int i = 0; i < b->n_logits; i++) {
        const float *row = logits + (size_t)i * V;
        const mt_sample_row *r = b->sample ? &b->sample[i] : NULL;
        if (!r || !(r->temperature > 0.0f)) {
            b->next_tokens[i] = mt_argmax(row, V);
        } else {
            if (!work && !(work = malloc((size_t)V * sizeof *work))) return mt_errf(err, "out of memory for sampling");
            b->next_tokens[i] = mt_sample_pick(r, row, V, work);
        }
    }
    free(work);
    if (b->next_logprobs || b->top_n > 0 || b->ids_offsets) {
        score_job job = {b, logits, V};
        mt_parallel_for(b->n_logits, score_one, &job);
    }
    return 0;
}

static int forward_cpu(const mt_model *m, mt_kv_cache *kv, const mt_batch *b, float *logits,
                       const mt_routing_sink *sink, mt_err *err) {
    const mt_config *c = &m->cfg;
    int n = b->n_tokens, H = c->hidden_size;
    scratch s;
    int rc = 0;
    if (scratch_alloc(&s, c, n)) return mt_errf(err, "out of memory for a batch of %d tokens", n);
    mt_moe_scratch moe;
    if (mt_moe_scratch_init(&moe, c, n)) {
        scratch_free(&s);
        return mt_errf(err, "out of memory for a batch of %d tokens", n);
    }
    for (int i = 0; i < n; i++) {
        for (int d = 0; d < H; d++) s.h[(size_t)i * H + d] = mt_load_f32(m->embed.dtype, m->embed.data, (size_t)b->tokens[i] * H + d);
    }
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const mt_layer *L = &m->layers[l];
        attention(m, kv, b, L, l, &s);
        mt_rmsnorm(s.xn, s.h, L->mlp_norm, n, H, c->rms_norm_eps);
        if (L->is_moe)
            mt_moe_forward(s.out, s.xn, n, c, L, l, b, sink, &moe);
        else
            mt_swiglu_mlp(s.out, s.xn, n, &L->dense, s.mlp_gate, s.mlp_up);
        for (size_t i = 0; i < (size_t)n * H; i++) s.h[i] += s.out[i];
    }
    if (b->n_logits > 0) {
        for (int i = 0; i < b->n_logits; i++)
            memcpy(s.xn + (size_t)i * H, s.h + (size_t)b->logit_rows[i] * H, (size_t)H * sizeof(float));
        mt_rmsnorm(s.xn, s.xn, m->final_norm, b->n_logits, H, c->rms_norm_eps);
        mt_matmul(logits, s.xn, b->n_logits, &m->lm_head);
        if (b->next_tokens && next_tokens(b, logits, c->vocab_size, err)) rc = -1;
    }
    mt_moe_scratch_free(&moe);
    scratch_free(&s);
    return rc;
}

int mt_forward(const mt_model *m, mt_kv_cache *kv, const mt_batch *b, float *logits,
               const mt_routing_sink *sink, mt_err *err) {
    mt_passes q = {0};
    int rc = mt_forward_begin(m, kv, &q, b, logits, sink, err);
    if (rc == 0) rc = mt_forward_end(m, &q, err);
    mt_passes_free(&q);
    return rc;
}

static bool has_token_of_row(const mt_batch *b) {
    for (int i = 0; i < b->n_tokens; i++)
        if (b->tokens[i] < 0) return true;
    return false;
}

int mt_forward_begin(const mt_model *m, mt_kv_cache *kv, mt_passes *q, const mt_batch *b, float *logits,
                     const mt_routing_sink *sink, mt_err *err) {
    if (q->n >= 2) return mt_errf(err, "two passes are in flight already: end one first");
    const mt_batch *before = q->n ? q->pass[0].b : NULL;
    int rows_before = before && before->next_tokens ? before->n_logits : 0;
    if (validate(m, kv, b, rows_before, err)) return -1;
    mt_pass_slot *p = &q->pass[q->n];
    p->from_row = has_token_of_row(b);
    p->resolved = false;
    if (p->from_row) {   /* resolved when the pass before ends */
        if ((size_t)b->n_tokens > p->tokens_cap) {
            int32_t *grown = realloc(p->tokens, (size_t)b->n_tokens * sizeof *grown);
            if (!grown) return mt_errf(err, "out of memory for the tokens of a pass of %d", b->n_tokens);
            p->tokens = grown;
            p->tokens_cap = (size_t)b->n_tokens;
        }
        memcpy(p->tokens, b->tokens, (size_t)b->n_tokens * sizeof *p->tokens);
    }
    if (m->device && mt_cuda_forward_begin(m, kv, q, b, logits, sink && sink->on_layer, err)) return -1;
    p->b = b;
    p->kv = kv;
    p->logits = logits;
    p->sink = sink;
    q->n++;
    return 0;
}

/* The oldest pass's batch with its tokens as the sink sees them (MT_TOKEN_OF_ROW resolved). */
static mt_batch resolved_batch(const mt_pass_slot *p) {
    mt_batch rb = *p->b;
    if (p->from_row) rb.tokens = p->tokens;
    return rb;
}

int mt_forward_end(const mt_model *m, mt_passes *q, mt_err *err) {
    if (q->n == 0) return mt_errf(err, "no pass is in flight");
    mt_pass_slot p = q->pass[0];
    q->pass[0] = q->pass[1];
    q->pass[1] = p;   /* keeps its token buffer for a later pass */
    q->pass[1].b = NULL;
    q->n--;
    mt_batch rb = resolved_batch(&p);
    int rc;
    if (p.from_row && !p.resolved) {
        rc = mt_errf(err, "the pass before this one failed, so the tokens this pass takes from its picks are unknown");
        if (m->device) mt_cuda_forward_end(m, NULL, NULL, NULL);   /* drops it */
    } else {
        rc = m->device ? mt_cuda_forward_end(m, &rb, p.sink, err) : forward_cpu(m, p.kv, &rb, p.logits, p.sink, err);
    }
    if (rc == 0) report_pass(&rb, p.sink);
    /* the pass begun after it takes its picks */
    mt_pass_slot *next = q->n ? &q->pass[0] : NULL;
    if (next && next->from_row && rc == 0 && p.b->next_tokens) {
        for (int i = 0; i < next->b->n_tokens; i++)
            if (next->tokens[i] < 0) next->tokens[i] = p.b->next_tokens[-1 - next->tokens[i]];
        next->resolved = true;
    }
    return rc;
}

void mt_passes_free(mt_passes *q) {
    for (int i = 0; i < 2; i++) free(q->pass[i].tokens);
    memset(q, 0, sizeof *q);
}

int mt_forward_reserve(const mt_model *m, int max_tokens, int max_logit_rows, mt_err *err) {
    return m->device ? mt_cuda_reserve(m, max_tokens, max_logit_rows, err) : 0;
}

double mt_forward_memory_available(const mt_model *m) {
    return m->device ? mt_cuda_memory_free() : mt_host_memory_available();
}
