#include "engine/moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int mt_moe_scratch_init(mt_moe_scratch *s, const mt_config *c, int n) {
    memset(s, 0, sizeof *s);
    size_t E = (size_t)c->num_experts, k = (size_t)c->top_k, H = (size_t)c->hidden_size;
    size_t inter = (size_t)c->moe_intermediate_size;
    if ((size_t)c->shared_expert_intermediate_size > inter) inter = (size_t)c->shared_expert_intermediate_size;
    size_t nk = (size_t)n * k;
    size_t rows_x = nk > (size_t)n ? nk : (size_t)n;
    s->router = malloc((size_t)n * E * sizeof(float));
    s->topk_ids = malloc(2 * nk * sizeof(int32_t)); /* then phys_ids: no allocation more per pass */
    s->phys_ids = s->topk_ids ? s->topk_ids + nk : NULL;
    s->topk_w = malloc(nk * sizeof(float));
    s->count = malloc(E * sizeof(int32_t));
    s->offset = malloc((E + 1) * sizeof(int32_t));
    s->rows = malloc(nk * sizeof(int32_t));
    s->weights = malloc(nk * sizeof(float));
    s->xe = malloc(rows_x * H * sizeof(float));
    s->ye = malloc(rows_x * H * sizeof(float));
    s->gate = malloc(rows_x * inter * sizeof(float));
    s->up = malloc(rows_x * inter * sizeof(float));
    s->ops = malloc(2 * E * sizeof *s->ops);
    if (!s->ops || !s->router || !s->topk_ids || !s->phys_ids || !s->topk_w || !s->count || !s->offset || !s->rows || !s->weights || !s->xe ||
        !s->ye || !s->gate || !s->up) {
        mt_moe_scratch_free(s);
        return -1;
    }
    return 0;
}

void mt_moe_scratch_free(mt_moe_scratch *s) {
    free(s->router); free(s->topk_ids); free(s->topk_w); free(s->count); free(s->offset);
    free(s->rows); free(s->weights); free(s->xe); free(s->ye); free(s->gate); free(s->up);
    free(s->ops);
    memset(s, 0, sizeof *s);
}

void mt_swiglu_mlp(float *out, const float *x, int n, const mt_expert *e, float *gate_buf, float *up_buf) {
    const mt_matmul_op ops[2] = {{gate_buf, x, n, &e->gate}, {up_buf, x, n, &e->up}};
    mt_matmul_group(ops, 2);
    mt_silu_mul(gate_buf, up_buf, (int64_t)n * e->gate.rows);
    mt_matmul(out, gate_buf, n, &e->down);
}

void mt_topk(const float *probs, int n_experts, int k, int32_t *ids, float *vals) {
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < n_experts; e++) {
            bool taken = false;
            for (int i = 0; i < j; i++) taken |= ids[i] == e;
            if (!taken && (best < 0 || probs[e] > probs[best])) best = e;
        }
        ids[j] = best;
        vals[j] = probs[best];
    }
}

static void route(const float *x, int n, const mt_config *c, const mt_layer *L, mt_moe_scratch *s) {
    int E = c->num_experts, k = c->top_k;
    mt_matmul(s->router, x, n, &L->router);
    for (int t = 0; t < n; t++) {
        float *p = s->router + (size_t)t * E;
        mt_softmax(p, E);
        int32_t *ids = s->topk_ids + (size_t)t * k;
        float *w = s->topk_w + (size_t)t * k;
        mt_topk(p, E, k, ids, w);
        if (c->norm_topk_prob) {
            float sum = 0.0f;
            for (int j = 0; j < k; j++) sum += w[j];
            for (int j = 0; j < k; j++) w[j] /= sum;
        }
    }
}

/* Counting sort of (token, slot) pairs by expert; within an expert, tokens stay in batch order. */
static void group_by_expert(int n, const mt_config *c, mt_moe_scratch *s) {
    int E = c->num_experts, k = c->top_k;
    memset(s->count, 0, (size_t)E * sizeof *s->count);
    for (int i = 0; i < n * k; i++) s->count[s->topk_ids[i]]++;
    s->offset[0] = 0;
    for (int e = 0; e < E; e++) s->offset[e + 1] = s->offset[e] + s->count[e];
    memset(s->count, 0, (size_t)E * sizeof *s->count);
    for (int t = 0; t < n; t++) {
        for (int j = 0; j < k; j++) {
            int e = s->topk_ids[(size_t)t * k + j];
            int at = s->offset[e] + s->count[e]++;
            s->rows[at] = t;
            s->weights[at] = s->topk_w[(size_t)t * k + j];
        }
    }
}

/* Every active expert over its gathered rows (expert e owns scratch rows offset[e] ..
 * offset[e+1]): the gate and up products of all experts as one group, one SiLU pass over all
 * rows, then the down products as one group. Two dispatches per layer whatever the number of
 * experts, with the work of all of them balanced over the pool; each output row is still
 * computed by the same kernel sequence as a lone product (batch invariance). */
static void run_experts(const float *x, const mt_config *c, const mt_layer *L, mt_moe_scratch *s) {
    const int H = c->hidden_size, I = c->moe_intermediate_size;
    const int total = s->offset[c->num_experts];
    for (int r = 0; r < total; r++) memcpy(s->xe + (size_t)r * H, x + (size_t)s->rows[r] * H, (size_t)H * sizeof(float));
    int nops = 0;
    for (int e = 0; e < c->num_experts; e++) {
        const int first = s->offset[e], cnt = s->offset[e + 1] - first;
        if (cnt == 0) continue;
        const mt_expert *ex = &L->experts[e];
        s->ops[nops++] = (mt_matmul_op){s->gate + (size_t)first * I, s->xe + (size_t)first * H, cnt, &ex->gate};
        s->ops[nops++] = (mt_matmul_op){s->up + (size_t)first * I, s->xe + (size_t)first * H, cnt, &ex->up};
    }
    mt_matmul_group(s->ops, nops);
    mt_silu_mul(s->gate, s->up, (int64_t)total * I);
    nops = 0;
    for (int e = 0; e < c->num_experts; e++) {
        const int first = s->offset[e], cnt = s->offset[e + 1] - first;
        if (cnt == 0) continue;
        s->ops[nops++] = (mt_matmul_op){s->ye + (size_t)first * H, s->gate + (size_t)first * I, cnt, &L->experts[e].down};
    }
    mt_matmul_group(s->ops, nops);
}

void mt_moe_forward(float *out, const float *x, int n, const mt_config *c, const mt_layer *L, int layer,
                    const mt_batch *b, const mt_routing_sink *sink, mt_moe_scratch *s) {
    int E = c->num_experts, H = c->hidden_size;
    route(x, n, c, L, s);
    /* Expert parallelism: each choice goes to one replica of its expert (virtual GPUs on the CPU: the
     * replica's weights are the logical expert's, so the computation below does not change). */
    const int32_t *phys = NULL;
    if (b->placement) {
        mt_placement_dispatch(b->placement, layer, n, c->top_k, s->topk_ids, b->tokens, b->positions, s->phys_ids);
        phys = s->phys_ids;
    }
    if (sink && sink->on_layer) {
        mt_routing_event ev = {.layer = layer, .n_tokens = n, .top_k = c->top_k, .seq_ids = b->seq_ids,
                               .positions = b->positions, .tokens = b->tokens, .request_ids = b->request_ids,
                               .request_names = b->request_names, .request_groups = b->request_groups,
                               .recomputed = b->recomputed,
                               .topk_ids = s->topk_ids, .topk_weights = s->topk_w, .phys_ids = phys};
        sink->on_layer(sink->ctx, &ev);
    }
    group_by_expert(n, c, s);
    run_experts(x, c, L, s);
    memset(out, 0, (size_t)n * H * sizeof *out);
    for (int e = 0; e < E; e++) {
        const int32_t *rows = s->rows + s->offset[e];
        const float *w = s->weights + s->offset[e];
        for (int i = 0; i < s->offset[e + 1] - s->offset[e]; i++) {
            float *o = out + (size_t)rows[i] * H;
            const float *y = s->ye + (size_t)(s->offset[e] + i) * H;
            for (int d = 0; d < H; d++) o[d] += w[i] * y[d];
        }
    }
    if (L->has_shared) {
        mt_swiglu_mlp(s->ye, x, n, &L->shared, s->gate, s->up);
        float *g = s->gate;
        mt_matmul(g, x, n, &L->shared_gate);
        for (int t = 0; t < n; t++) {
            float sg = 1.0f / (1.0f + expf(-g[t]));
            for (int d = 0; d < H; d++) out[(size_t)t * H + d] += sg * s->ye[(size_t)t * H + d];
        }
    }
}
