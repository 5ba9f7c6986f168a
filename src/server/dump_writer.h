/* The files a recorder window leaves behind, and a thread that writes them off the engine thread.
 *
 * A window is taken between two forward passes (mt_recorder_take, cheap; with --domain-field the
 * domains' usage too, mt_domain_usage_take) and written afterwards: expert_distribution_<ms>.json
 * (the window), beside it, for a rebalance, expert_placement_<ms>.json (the placement planned on
 * it), with --domain-field domain_usage_<ms>/ (the domains' usage of the same passes), and with
 * --expert-dump-visualize the heatmap. Recorder dumps and switches asked over HTTP write them on
 * their own thread (mt_window_files_write) and answer with their names; serve --enable-eplb's
 * periodic rebalance, which runs on the engine thread, hands them to the dump writer, so the next
 * forward pass does not wait for the disk.
 *
 * The writer writes its jobs one at a time in the order given, so dumps are named in window order.
 * Whoever dumps the recorder or switches placements drains it first (under the server's
 * window_mu, which the periodic rebalance takes before submitting): every window reaches the disk
 * before the next one does. */
#ifndef MT_SERVER_DUMP_WRITER_H
#define MT_SERVER_DUMP_WRITER_H

#include <stdbool.h>

#include "report/domain_usage.h"
#include "routing/placement.h"
#include "routing/recorder.h"
#include "server/metrics.h"
#include "util/err.h"

typedef struct mt_window_files {
    mt_recorder *window;      /* the window taken, dumped and freed by the write (NULL: none) */
    mt_recorder *put_back_into; /* a recorder dump's: the recorder it was taken from, which gets it
                                   back when it cannot be written; NULL for a switch's window (its
                                   placement is gone: the window is lost, and counted) */
    mt_domain_window *domains;  /* the domains' usage of the same passes, written beside the dump
                                   (domain_usage_<ms>/) and freed by the write, or NULL */
    bool domains_picture;     /* domains.png with it */
    const mt_placement *plan; /* written beside the dump, or NULL */
    int heatmap_ep_size;      /* > 0: a heatmap beside the dump, per-GPU lines for this many GPUs */
    mt_server_metrics *metrics; /* counts a window that could not be written, or NULL */
    mt_recorder *next_of;     /* the recorder the window came from and the domains' usage, or NULL:
                                 their twins for the next take are made by the write, before its
                                 files (off the engine thread; mt_recorder_prepare_twin) */
    mt_domain_usage *next_domains_of;
    /* out */
    char dump[4096];          /* the window's dump; "" when there is none */
    char plan_path[4200];     /* expert_placement_<ms>.json, "" when not written */
    bool dump_failed;         /* the window could not be written (dump_err says why) */
    mt_err dump_err;
    bool domains_failed;      /* the domains' usage could not be written (domains_err says why) */
    mt_err domains_err;
} mt_window_files;

/* Writes what f holds (logging each file and each failure), frees f->window and f->domains. A
 * failure of the placement file or the heatmap is only logged. -1 when the window's dump failed. */
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
