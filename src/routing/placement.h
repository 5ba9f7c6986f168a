/* Expert placement: the physical layout an expert-parallel deployment runs (SPEC §1), and the rule
 * that dispatches each routed token to one replica of its logical expert. Pure data and functions:
 * no engine, no I/O besides the file loader; a built placement is read-only and may be shared.
 *
 * Per MoE layer, R physical slots lie on M GPUs (slot s on GPU s / (R/M)); each slot holds one
 * logical expert (phy2log) and every logical expert has >= 1 slot (logcnt; log2phy lists its slots
 * in ascending order). Rows are the MoE layers in hidden-layer order; row_of maps a hidden layer to
 * its row (-1 for dense layers).
 *
 * Sources (mt_placement_load, as SGLang's --init-expert-location):
 *  - "trivial": R = E, slot e holds expert e (the contiguous split of SPEC §4; needs E % M == 0);
 *  - a placement JSON ("moetrace.placement.v1", written by `moetrace eplb`): rows per MoE layer
 *    (SPEC §6) or per hidden layer (SGLang's layout; rows of dense layers are ignored);
 *  - a stat dump ("moetrace.expert_distribution.v1"): planned with EPLB (mt_eplb_plan_compute) on
 *    its logical_count, R = E + num_redundant, one group, one node.
 * Every check names the file and the problem (layer count, num_experts, an expert without replica,
 * R not divisible by M, an expert id out of range, ep_size differing from the file's num_gpus...).
 *
 * Dispatch (mt_placement_slot): the replica of logical expert e chosen for a token is
 *   log2phy[e][ (hi32(h(token id, position, layer, e)) * logcnt[e]) >> 32 ]
 * with h a fixed 64-bit mix and hi32 its high 32 bits, scaled onto [0, logcnt[e]) (docs/EPLB.md,
 * "Dispatch"). It depends only on the token itself, never on
 * the batch, the request id or the scheduling, so per-GPU counts of a workload are batch-invariant and
 * reproducible; over many tokens each replica gets about 1/logcnt of its expert's tokens. */
#ifndef MT_ROUTING_PLACEMENT_H
#define MT_ROUTING_PLACEMENT_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "model/config.h"
#include "util/err.h"

#define MT_PLACEMENT_FORMAT "moetrace.placement.v1"

/* The MoE shape a placement must fit: from a model config or from a stat dump. */
typedef struct mt_moe_shape {
    int num_hidden_layers;
    int num_experts;
    int num_moe_layers;
    int moe_layers[MT_MAX_LAYERS]; /* ascending hidden-layer indices of the MoE layers */
} mt_moe_shape;

void mt_moe_shape_from_config(const mt_config *c, mt_moe_shape *s);
struct mt_stat_dump;
/* Fails when the dump has more than MT_MAX_LAYERS hidden layers. */
int mt_moe_shape_from_dump(const struct mt_stat_dump *d, mt_moe_shape *s, mt_err *err);

typedef struct mt_placement {
    int num_hidden_layers;
    int num_experts;      /* logical experts E */
    int num_moe_layers;   /* rows */
    int num_gpus;         /* M */
    int num_physical;     /* R slots per layer, R % M == 0, R >= E */
    int slots_per_gpu;    /* R / M */
    int max_replicas;     /* X: largest logcnt over all rows */
    int row_of[MT_MAX_LAYERS];     /* hidden layer -> row, -1 for dense layers */
    int moe_layers[MT_MAX_LAYERS]; /* row -> hidden layer */
    int32_t *phy2log;     /* [rows, R] logical expert of each slot */
    int32_t *logcnt;      /* [rows, E] replicas of each expert (>= 1) */
    int32_t *log2phy;     /* [rows, E, X] slots of each expert, ascending, -1 padded */
    uint64_t *salt;       /* [rows, E] dispatch hash salt of (layer, expert) */
    char source[16];      /* "trivial", "file" or "eplb" (a file's "source" field when it has one) */
} mt_placement;

typedef struct mt_placement_opts {
    int ep_size;       /* M; 0: the placement file's num_gpus (required for trivial and stat dumps) */
    int num_redundant; /* R - E: stat dumps plan with it (default 0); a placement file must match it;
                          -1: not given */
} mt_placement_opts;

/* path: "trivial", a placement JSON or a stat dump, told apart by their "format" field. */
int mt_placement_load(const char *path, const mt_moe_shape *s, const mt_placement_opts *o, mt_placement *p,
                      mt_err *err);
/* A placement JSON object already parsed; name is used in messages. ep_size 0: its num_gpus. */
int mt_placement_from_json(const cJSON *root, const char *name, const mt_moe_shape *s, int ep_size,
                           mt_placement *p, mt_err *err);
int mt_placement_trivial(const mt_moe_shape *s, int ep_size, mt_placement *p, mt_err *err);
/* From phy2log rows [s->num_moe_layers, num_physical] (copied); validates everything. */
int mt_placement_from_phy2log(const mt_moe_shape *s, int ep_size, int num_physical, const int32_t *phy2log,
                              mt_placement *p, mt_err *err);
/* Plans with EPLB (one group, one node) on moe_load [s->num_moe_layers, s->num_experts], each MoE
 * layer's load per logical expert: num_physical slots on ep_size GPUs, source "eplb"; name is used in
 * messages. */
int mt_placement_plan(const mt_moe_shape *s, int ep_size, int num_physical, const double *moe_load, const char *name,
                      mt_placement *p, mt_err *err);
void mt_placement_free(mt_placement *p);
/* dst = a copy of src owning its own arrays (free it with mt_placement_free); -1 when out of memory
 * (dst then holds nothing). */
int mt_placement_copy(const mt_placement *src, mt_placement *dst);
/* A copy of src on the heap (mt_placement_copy), or NULL when out of memory; mt_placement_destroy
 * frees such a placement, arrays and struct (NULL: nothing). */
mt_placement *mt_placement_dup(const mt_placement *src);
void mt_placement_destroy(mt_placement *p);
/* 0 when p was built for this model's shape (experts, layers, MoE layers), else -1 naming the misfit. */
int mt_placement_fits(const mt_placement *p, const mt_config *c, mt_err *err);

/* The placement as a JSON object of format moetrace.placement.v1 (without the maps' log2phy): format,
 * source, num_gpus, num_replicas, num_experts, num_hidden_layers, moe_layers,
 * physical_to_logical_map, logical_replica_count. NULL when out of memory. */
cJSON *mt_placement_to_json(const mt_placement *p);

/* The physical slot for one routed choice (see the header comment). layer is the hidden layer (an
 * MoE layer of the placement); expert in [0, E). */
int32_t mt_placement_slot(const mt_placement *p, int layer, int32_t expert, int32_t token, int32_t position);

/* Slots for n tokens x k choices of hidden layer `layer`: phys[i*k + j] for topk_ids[i*k + j] of the
 * token tokens[i] at positions[i]. Ids outside [0, E) give -1. */
void mt_placement_dispatch(const mt_placement *p, int layer, int n, int k, const int32_t *topk_ids,
                           const int32_t *tokens, const int32_t *positions, int32_t *phys);

static inline int mt_placement_gpu_of(const mt_placement *p, int slot) { return slot / p->slots_per_gpu; }

#endif
