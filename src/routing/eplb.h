/* EPLB: expert-parallel load balancing planner (SPEC §6).
 *
 * Implements the algorithm of DeepSeek's Expert-Parallel Load Balancer (github.com/deepseek-ai/EPLB,
 * eplb.py): replicate heavy logical experts into redundant physical slots and pack the slots onto
 * GPUs so that per-GPU load is as even as possible. Hierarchical policy (expert groups packed onto
 * nodes, replicas made per node, replicas packed onto the node's GPUs) when num_groups is a multiple
 * of num_nodes, else the global policy (one group, one node). Arithmetic on loads is float32 like
 * the reference; ties follow its rules (stable descending sort, lowest index wins, first max wins),
 * so outputs equal the reference's on inputs without ties. Pure computation: no I/O, no globals. */
#ifndef MT_ROUTING_EPLB_H
#define MT_ROUTING_EPLB_H

#include <stdint.h>

#include "util/err.h"

typedef struct mt_eplb_params {
    int num_replicas; /* physical expert slots per layer, over all GPUs (>= num_experts) */
    int num_groups;   /* expert groups (DeepSeek-V3: n_group); 1 if the model has none */
    int num_nodes;    /* server nodes; GPUs of one node share the fast interconnect */
    int num_gpus;     /* expert-parallel size */
} mt_eplb_params;

typedef struct mt_eplb_plan {
    int num_layers;   /* rows: one per layer of the input weight matrix */
    int num_experts;  /* logical experts per layer */
    int num_replicas; /* physical slots per layer; slot s lives on GPU s / (num_replicas/num_gpus) */
    int num_gpus;
    int max_replicas; /* largest replica count over all layers and experts (log2phy's last dim) */
    int hierarchical; /* 1 if the hierarchical policy ran, 0 for the global one */
    int32_t *phy2log; /* [num_layers, num_replicas] logical expert of each physical slot */
    int32_t *phyrank; /* [num_layers, num_replicas] which replica (0..count-1) of its expert */
    int32_t *log2phy; /* [num_layers, num_experts, max_replicas] slots of each expert, -1 padded */
    int32_t *logcnt;  /* [num_layers, num_experts] replica count of each expert (>= 1) */
} mt_eplb_plan;

/* Checks the parameters against num_experts; the message names the failed constraint. */
int mt_eplb_check_params(int num_experts, const mt_eplb_params *p, mt_err *err);

/* Plans a placement for weight [num_layers, num_experts] (finite, >= 0; converted to float32 as
 * the reference does). On success fills *plan (free with mt_eplb_plan_free). */
int mt_eplb_plan_compute(const double *weight, int num_layers, int num_experts,
                         const mt_eplb_params *p, mt_eplb_plan *plan, mt_err *err);
void mt_eplb_plan_free(mt_eplb_plan *plan);

/* Building blocks, one row at a time (exposed for tests).
 * Balanced packing: n items of weight w go into num_packs packs of n/num_packs items each; items in
 * descending weight order (stable) each join the lightest pack that is not full (lowest index on
 * ties). n % num_packs must be 0. Writes pack[n] and rank[n] (position of the item in its pack).
 * Fails only on a bad n/num_packs or out of memory. */
int mt_eplb_balanced_packing(const float *w, int n, int num_packs, int32_t *pack, int32_t *rank,
                             mt_err *err);
/* Replication: num_phy >= num_log slots; slot i < num_log holds expert i, each further slot goes to
 * the expert with the largest w/count (first on ties). Writes phy2log[num_phy], rank[num_phy],
 * cnt[num_log]. */
void mt_eplb_replicate(const float *w, int num_log, int num_phy, int32_t *phy2log, int32_t *rank,
                       int32_t *cnt);

#endif
