/* Routing reports (SPEC §3 `moetrace report`): draws a stat dump (SPEC §4) as a picture with Cairo.
 *
 * Panel 1: heatmap of hidden layers (rows; dense layers greyed) x experts (columns), colour = the
 * expert's share of the layer's routed tokens, with a colour bar, a per-layer balancedness column and
 * a title (model, tokens, mean balancedness). Panel 2 (ep_size > 0): per-GPU load relative to the
 * mean GPU load, averaged over MoE layers (bar) with the worst layer (tick); with a placement, the
 * contiguous split ("before") and the placement ("after") side by side. Without a placement in the
 * options, a dump recorded under a placement (its "placement" and "physical_count") is drawn the
 * same way, "after" being the per-GPU loads the engine measured.
 * Output format from the extension of out_path: .png or .svg; written atomically (temp + rename). */
#ifndef MT_REPORT_REPORT_H
#define MT_REPORT_REPORT_H

#include <stdint.h>

#include "routing/placement.h"
#include "routing/stat_dump.h"
#include "util/err.h"

typedef struct mt_report_opts {
    int ep_size;                  /* 0: no GPU panel (balancedness then per expert, M = num_experts);
                                     without a placement it must divide num_experts (M equal blocks) */
    const mt_placement *placement; /* NULL: none; else rows must equal the dump's MoE layers and
                                     ep_size must be 0 (then num_gpus) or equal num_gpus */
} mt_report_opts;

/* Draws dump d into out_path (.png or .svg). o may be NULL (no GPU panel). */
int mt_report_render(const mt_stat_dump *d, const char *out_path, const mt_report_opts *o, mt_err *err);

#endif
