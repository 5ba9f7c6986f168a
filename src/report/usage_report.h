/* The picture of `moetrace profile --domain-field` (domains.png / .svg): for each group of requests,
 * a heatmap of hidden layers (rows; dense layers greyed) x experts (columns) coloured by the lift of
 * each expert (the group's share of the layer's routed tokens over all traffic's share,
 * routing/usage_compare.h) on a log scale from 1/8 to 8 (blue: used less than in all traffic, white:
 * as much, red: more), with the group's requests, tokens and mean divergence from the rest. Cells
 * whose expert no token used are light grey. Output format from the extension (.png or .svg);
 * written atomically. */
#ifndef MT_REPORT_USAGE_REPORT_H
#define MT_REPORT_USAGE_REPORT_H

#include "routing/usage_compare.h"
#include "util/err.h"

/* title: the first line (e.g. the model and the dataset field). */
int mt_usage_report_render(const mt_usage_groups *u, const char *title, const char *out_path, mt_err *err);

#endif
