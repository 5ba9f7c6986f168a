/* The MoE block: router (softmax over experts, top-k in router order, optional renormalisation),
 * routing capture, experts run over the tokens routed to them (gathered into one matrix per
 * expert), weighted combine in expert-id order (so each token's sum never depends on the
 * batch), plus the optional sigmoid-gated shared expert. With a placement (b->placement), each
 * choice is dispatched to a replica (mt_placement_dispatch) and the slots go to the sink with the
 * routing; without one nothing but a pointer test is added. */
#ifndef MT_ENGINE_MOE_H
#define MT_ENGINE_MOE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/forward.h"

typedef struct mt_moe_scratch {
    float *router;      /* [n, E] */
    int32_t *topk_ids;  /* [n, k] */
    int32_t *phys_ids;  /* [n, k] physical slots (with a placement); inside topk_ids' allocation */
    float *topk_w;      /* [n, k] */
    int32_t *count;     /* [E] tokens per expert */
    int32_t *offset;    /* [E + 1] */
    int32_t *rows;      /* [n * k] token of each (expert, slot) */
    float *weights;     /* [n * k] */
    float *xe, *ye;     /* [n * k, H] gathered inputs / outputs */
    float *gate, *up;   /* [n * k, I] */
    mt_matmul_op *ops;  /* [2 * E] expert products of one group */
} mt_moe_scratch;

int mt_moe_scratch_init(mt_moe_scratch *s, const mt_config *c, int n);
void mt_moe_scratch_free(mt_moe_scratch *s);

/* out[n, H] = MoE(x) for hidden layer `layer`; reports routing to sink when not NULL. */
void mt_moe_forward(float *out, const float *x, int n, const mt_config *c, const mt_layer *L, int layer,
                    const mt_batch *b, const mt_routing_sink *sink, mt_moe_scratch *s);

/* out = down(silu(gate(x)) * up(x)) for n rows; gate_buf/up_buf hold [n, intermediate]. */
void mt_swiglu_mlp(float *out, const float *x, int n, const mt_expert *e, float *gate_buf, float *up_buf);

/* Top-k of probs[n_experts] by value, highest first, ties to the lower index. */
void mt_topk(const float *probs, int n_experts, int k, int32_t *ids, float *vals);

#endif
