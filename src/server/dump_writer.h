/* The files a placement switch leaves behind, and a thread that writes them off the engine thread.
 *
 * A switch takes the recorder's window between two forward passes (mt_recorder_take, cheap) and
 * writes it afterwards: expert_distribution_<ms>.json (the window), beside it, for a rebalance,
 * expert_placement_<ms>.json (the placement planned on it), and with --expert-dump-visualize the
 * heatmap. A switch asked over HTTP writes them on its own thread (mt_window_files_write) and
 * answers with their names; serve --enable-eplb's periodic rebalance, which runs on the engine
 * thread, hands them to the dump writer, so the next forward pass does not wait for the disk.
 *
 * The writer writes its jobs one at a time in the order given, so dumps are named in window order.
 * Whoever dumps the recorder or switches placements drains it first (under the server's
 * placement_mu, which the periodic rebalance takes before submitting): every window reaches the
 * disk before the next one does. */
#ifndef MT_SERVER_DUMP_WRITER_H
#define MT_SERVER_DUMP_WRITER_H

#include <stdbool.h>

#include "routing/placement.h"
#include "routing/recorder.h"
#include "server/metrics.h"
#include "util/err.h"

typedef struct mt_window_files {
    mt_recorder *window;      /* the window taken at the switch, dumped and freed by the write; NULL
                                 when dump already names its file (written between the passes) */
    char dump[4096];          /* the window's dump; "" when there is none */
    const mt_placement *plan; /* written beside the dump, or NULL */
    int heatmap_ep_size;      /* > 0: a heatmap beside the dump, per-GPU lines for this many GPUs */
    mt_server_metrics *metrics; /* counts a window that could not be written, or NULL */
    char plan_path[4200];     /* out: expert_placement_<ms>.json, "" when not written */
    bool dump_failed;         /* out: the window could not be written (dump_err says why) */
    mt_err dump_err;
} mt_window_files;

/* Writes what f holds (logging each file and each failure), frees f->window. A failure of the
 * placement file or the heatmap is only logged. -1 when the window's dump failed. */
int mt_window_files_write(mt_window_files *f);

typedef struct mt_dump_writer mt_dump_writer;

/* The writer's thread; NULL with err when no thread can be made. */
mt_dump_writer *mt_dump_writer_new(mt_err *err);
/* Queues f (copied) for writing; the writer then owns f->window and plan (a placement it frees
 * after writing, or NULL: f->plan is ignored). -1 when out of memory: the caller keeps them. */
int mt_dump_writer_submit(mt_dump_writer *w, const mt_window_files *f, mt_placement *plan);
/* Jobs submitted and not yet written (the one being written included); 0 when w is NULL. */
int mt_dump_writer_pending(mt_dump_writer *w);
/* Returns once every job submitted before the call is written. w may be NULL. */
void mt_dump_writer_drain(mt_dump_writer *w);
/* Drains, stops the thread, frees. w may be NULL. */
void mt_dump_writer_free(mt_dump_writer *w);

#endif
