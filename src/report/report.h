/* Routing reports (SPEC §3 `moetrace report`): draws a stat dump (SPEC §4) as a picture with Cairo.
 *
 * Panel 1: heatmap of hidden layers (rows; dense layers greyed) x experts (columns), colour = the
 * expert's share of the layer's routed tokens, with a colour bar, a per-layer balancedness column and
 * a title (model, tokens, mean balancedness). Panel 2 (ep_size > 0): per-GPU load relative to the
 * mean GPU load, averaged over MoE layers (bar) with the worst layer (tick); with a placement, the
 * contiguous split ("before") and the placement ("after") side by side.
 * Output format from the extension of out_path: .png or .svg; written atomically (temp + rename). */
#ifndef MT_REPORT_REPORT_H
#define MT_REPORT_REPORT_H

#include <stdint.h>

#include "routing/stat_dump.h"
#include "util/err.h"

/* A placement JSON (SPEC §6, format "moetrace.placement.v1"), one row per MoE layer. */
typedef struct mt_placement {
    int num_layers;   /* rows of physical_to_logical_map */
    int num_physical; /* slots per layer */
    int num_gpus;
    int num_experts;  /* logical experts (given to the reader) */
    int32_t *phy2log; /* [num_layers, num_physical] */
    int32_t *logcnt;  /* [num_layers, num_experts] replicas of each expert (counted from phy2log) */
} mt_placement;

/* Reads a placement file; checks the format, that every row has num_physical entries in
 * [0, num_experts), every expert has >= 1 replica, and num_physical % num_gpus == 0. */
int mt_placement_load(const char *path, int num_experts, mt_placement *p, mt_err *err);
void mt_placement_free(mt_placement *p);

typedef struct mt_report_opts {
    int ep_size;                  /* 0: no GPU panel (balancedness then per expert, M = num_experts) */
    const mt_placement *placement; /* NULL: none; else rows must equal the dump's MoE layers and
                                     ep_size must be 0 (then num_gpus) or equal num_gpus */
} mt_report_opts;

/* Draws dump d into out_path (.png or .svg). o may be NULL (no GPU panel). */
int mt_report_render(const mt_stat_dump *d, const char *out_path, const mt_report_opts *o, mt_err *err);

#endif
