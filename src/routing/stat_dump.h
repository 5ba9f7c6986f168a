/* Reading a stat dump of the expert-distribution recorder (SPEC §4, format
 * "moetrace.expert_distribution.v1"): the per-layer per-expert token counts summed over a window.
 *
 * Validates the format field, that logical_count has num_hidden_layers rows of num_experts entries,
 * that moe_layers are distinct ascending layer indices, and that every count of an MoE layer is a
 * non-negative integer, and that the rows of dense layers (not in moe_layers) are zeros. Errors name
 * the file and the field. top_k is optional (0 when absent: older dumps), and then matches any top_k
 * in mt_stat_dump_shape_differs.
 *
 * A dump recorded while the engine ran a placement also has "placement" (a moetrace.placement.v1
 * object) and "physical_count" ([num_hidden_layers][num_replicas] token counts per physical slot);
 * both are read and checked when present (each one needs the other). */
#ifndef MT_ROUTING_STAT_DUMP_H
#define MT_ROUTING_STAT_DUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "routing/placement.h"
#include "util/err.h"

#define MT_STAT_DUMP_FORMAT "moetrace.expert_distribution.v1"

typedef struct mt_stat_dump {
    char *model;             /* "model" field, or "" when absent */
    int num_hidden_layers;
    int num_experts;
    int top_k;               /* 0 when absent */
    int ep_size;             /* "ep_size" the recorder measured balancedness over; 0 when absent */
    bool per_token;          /* "mode" is "per_token": the JSON index of a per_token dump */
    int64_t num_forward_passes; /* -1 when absent */
    int64_t num_tokens;         /* -1 when absent */
    int num_moe_layers;
    int *moe_layers;         /* [num_moe_layers] hidden-layer index of each MoE layer, ascending */
    int64_t *moe_count;      /* [num_moe_layers, num_experts] logical_count rows of the MoE layers */
    mt_placement *placement; /* the placement the engine ran, or NULL */
    int64_t *phys_count;     /* [num_moe_layers, placement->num_physical] physical_count rows, or NULL */
} mt_stat_dump;

/* Parses the JSON text (len bytes); name is used in error messages (usually the path). */
int mt_stat_dump_parse(const char *json, size_t len, const char *name, mt_stat_dump *d, mt_err *err);
/* The same from a parsed JSON object. */
int mt_stat_dump_from_json(const cJSON *root, const char *name, mt_stat_dump *d, mt_err *err);
/* Reads and parses the file at path. */
int mt_stat_dump_load(const char *path, mt_stat_dump *d, mt_err *err);
void mt_stat_dump_free(mt_stat_dump *d);
/* 0 when some MoE layer's count is positive; else an error naming the dump: EPLB planned from a dump
 * without tokens would place experts arbitrarily. */
int mt_stat_dump_require_tokens(const mt_stat_dump *d, const char *name, mt_err *err);

/* The first shape field of b that differs from a's: "num_hidden_layers", "num_experts", "top_k" (where
 * both state one) or "moe_layers"; NULL when they have one shape. */
const char *mt_stat_dump_shape_differs(const mt_stat_dump *a, const mt_stat_dump *b);

/* d (read from path) is a dump of first's model (read from first_path) and of its shape (the fields
 * of mt_stat_dump_shape_differs): 0, or -1 and an error naming both files, and both models or both
 * shapes. why ends the error for another model: what needs dumps of one model (report --over-time,
 * the comparison of report A.json B.json). */
int mt_stat_dump_check_same_model(const mt_stat_dump *first, const char *first_path, const mt_stat_dump *d,
                                  const char *path, const char *why, mt_err *err);

/* Dumps summed, compared or drawn over time must count different tokens: the same file given twice,
 * or per_token indexes given with stat dumps (`profile --per-token` writes both for one window, and
 * each counts all of its tokens), would count tokens twice. per_token[i]: dump i is a per_token
 * index. 0, or -1 and an error naming the two files. */
int mt_stat_dump_refuse_overlap(const char *const *paths, const bool *per_token, int n, mt_err *err);

/* The file beside a dump named <dir>/expert_distribution_<stamp>.json (what the recorder writes):
 * <dir>/<stem><stamp><ext> into out, e.g. stem "expert_placement_" and ext ".json" for the placement a
 * rebalance planned on it, "domain_usage_" and "" for its folder of domain usage. -1 when path is not
 * so named or out is too small. */
int mt_stat_dump_sibling(const char *path, const char *stem, const char *ext, char *out, size_t size);

#endif
