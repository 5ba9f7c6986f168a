/* Balancedness over time (`moetrace report DUMP.json... --over-time`): a series of stat dumps of one
 * model, each a window of the recorder (serve writes one at every placement switch, and at every
 * /dump_expert_distribution_record), read in time order, drawn as one picture or written as JSON
 * (docs/RECORDER.md, "Balancedness over time").
 *
 * - Order: by the <unix-ms> (then the _k a taken name got) of names expert_distribution_<ms>[_k].json;
 *   when some name has no such stamp, the order given (by_stamp false, unstamped names it).
 * - Each window is measured per GPU: under the placement it ran (its "placement" and
 *   "physical_count": each GPU's slots' counts), else over ep_size contiguous blocks of its logical
 *   experts; its mean over the MoE layers, and its worst and best MoE layer.
 * - planned_next: where expert_placement_<same stamp>.json lies in the dump's folder (what
 *   serve --enable-eplb planned on that window), the balancedness it plans for the next window: the
 *   mean over MoE layers of mt_balancedness_placement of the window's logical counts under it.
 * - placement_changed: the window ran a placement and the one before another (physical_to_logical_map
 *   differs); windows without a placement never change.
 * Refused, naming the file: a dump of another model or shape (model, layers, MoE layers, experts,
 * top_k), a placement on another number of GPUs than the others' (or than ep_size when given), a
 * window without a placement when ep_size is 0 (needs_ep_size set: the flag is missing), an ep_size
 * not dividing num_experts, a planned placement file that does not fit its dump. The dumps and the
 * placement files are read by the stat dump and placement readers. */
#ifndef MT_REPORT_OVER_TIME_H
#define MT_REPORT_OVER_TIME_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

#define MT_OVER_TIME_FORMAT "moetrace.balancedness_over_time.v1"

typedef struct mt_ot_window {
    const char *file;           /* the path given (not owned) */
    int64_t stamp_ms;           /* -1: the name has no stamp */
    int stamp_k;                /* the _k of expert_distribution_<ms>_<k>.json, 0 without */
    int64_t num_tokens;         /* -1 when the dump has none */
    int64_t num_forward_passes; /* -1 when the dump has none */
    char source[16];            /* the placement's source ("eplb", "file", "trivial"...), "" without one */
    double bal_mean, bal_min, bal_max; /* over the MoE layers */
    double planned_next;        /* NAN: no planned placement beside the dump */
    bool placement_changed;
} mt_ot_window;

typedef struct mt_over_time {
    char *model;       /* "" when the dumps name none */
    int ep_size;       /* the GPUs every window is measured over */
    int n;             /* windows */
    mt_ot_window *w;   /* [n] in time order */
    bool by_stamp;     /* false: in the order given */
    const char *unstamped; /* by_stamp false: the first name without a stamp */
    bool needs_ep_size; /* the load failed because a window has no placement and ep_size was 0 */
} mt_over_time;

/* The stamp of a dump's file name (any folder): expert_distribution_<ms>[_<k>].json into *ms and *k;
 * -1 when the name is not of that form (ms of at most 18 digits, k of at most 9). */
int mt_over_time_stamp(const char *path, int64_t *ms, int *k);

/* Reads the n dumps at paths (kept, not copied: they must outlive t); ep_size 0: from the
 * placements (every dump must have one). */
int mt_over_time_load(char *const *paths, int n, int ep_size, mt_over_time *t, mt_err *err);
void mt_over_time_free(mt_over_time *t);

/* JSON (format MT_OVER_TIME_FORMAT) for .json, else the picture (.png or .svg); written atomically. */
int mt_over_time_write(const mt_over_time *t, const char *out_path, mt_err *err);
int mt_over_time_write_json(const mt_over_time *t, const char *out_path, mt_err *err);
/* The picture (over_time_draw.c). */
int mt_over_time_render(const mt_over_time *t, const char *out_path, mt_err *err);

#endif
