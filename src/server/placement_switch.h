/* One switch of the expert placement a server runs (--ep-size), shared by POST
 * /update_expert_location and POST /eplb_rebalance (api_placement.c) and serve --enable-eplb's
 * rebalance every N passes (eplb_auto.c).
 *
 * The switch happens between two forward passes, on the engine thread: the recorder's window is
 * read (for a rebalance, planned on with EPLB) and taken when it holds anything, and the recorder
 * restarts empty under the new placement, so no window mixes two placements. Then the server
 * installs the new placement (what /get_model_info and /metrics read), and the window taken is
 * written (dump_writer.h): its dump, a rebalance's placement beside it (expert_placement_<ms>.json),
 * with --domain-field the domains' usage of the same passes (taken with it), the heatmap. Over HTTP
 * they are written on the caller's thread before it answers; the periodic rebalance leaves them to
 * the dump writer, so the engine thread only plans and switches.
 * Switches run one at a time: the caller holds the server's window_mu (server_internal.h); the switch
 * takes placement_mu, on the engine thread between the two passes, only to change the engine's and
 * the recorders' placement and install the new one: not while it waits for the pass boundary, reads
 * and plans on the window, or writes the files. */
#ifndef MT_SERVER_PLACEMENT_SWITCH_H
#define MT_SERVER_PLACEMENT_SWITCH_H

#include <stdbool.h>

#include "engine/engine.h"
#include "routing/placement.h"
#include "routing/recorder.h"
#include "server/http.h"
#include "server/server.h"

typedef struct mt_placement_switch {
    mt_server *s;
    const mt_placement *current; /* what the engine runs now (mt_placement_switch_run sets it; the
                                    caller of mt_placement_switch_run_here does) */
    mt_placement *next;          /* what it runs after: given, or planned on the engine thread for a
                                    rebalance (then allocated, empty, by the caller) */
    bool rebalance;
    mt_switch_trigger trigger;   /* what asked for it, for the metrics (mt_placement_switch_run sets it;
                                    the caller of mt_placement_switch_run_here does) */
    double skip_above;           /* rebalance: leave the placement as it is when the window's mean
                                    per-pass balancedness is above this (>= 1: never skip) */
    /* results */
    bool skipped;                /* the rebalance was not needed (skip_above): nothing changed */
    int status;                  /* HTTP status when the switch failed */
    mt_recorder *window;         /* the window taken at the switch, until it is written */
    mt_domain_window *domains;   /* with --domain-field: the domains' usage of its passes, or NULL */
    char dump[4096];             /* the window written at the switch; "" when it held nothing or
                                    its dump failed (dump_error then says why) */
    char dump_error[1024];
    char plan[4200];             /* rebalance: the placement planned, written beside dump as
                                    expert_placement_<ms>.json; "" when not written */
    mt_recorder_counts counts;   /* of that window */
    double *before, *after;      /* rebalance, [MoE layers] allocated by the caller: balancedness
                                    measured under current, predicted for next */
} mt_placement_switch;

/* Prepares w as a rebalance of s's placement: next, before and after allocated (skip_above >= 1:
 * never skip). -1 when out of memory; w then holds nothing to release. */
int mt_placement_switch_rebalance(mt_placement_switch *w, mt_server *s, double skip_above);
/* Frees what w holds once it is done: before and after, a window not written, and next unless the
 * server installed it (installed: the switch ran and was not skipped). */
void mt_placement_switch_release(mt_placement_switch *w, bool installed);

/* 400 when this server cannot switch placements (no --ep-size), naming why; 0 when it can. */
int mt_placement_switchable(mt_server *s, mt_api_error *e);

/* From a thread other than the engine's, window_mu held (not placement_mu): runs the switch between
 * two passes and installs w->next as the server's placement (the server then owns it, and frees it
 * at the next switch: read it only while still holding window_mu), counting it in the metrics as
 * trigger's (applied or failed), then writes the window's files (dump, plan, dump_error). 0, or -1 with the HTTP status
 * and reason in e (w->next then stays the caller's; a window taken before the failure is still
 * written). */
int mt_placement_switch_run(mt_placement_switch *w, mt_switch_trigger trigger, mt_api_error *e);

/* The same from the engine thread between two passes (engine: the loop's), window_mu held (not
 * placement_mu), w->trigger set; an applied switch is counted in the metrics, the caller counts a
 * failed or skipped one; the
 * files are left to the server's dump writer (written here when it has none). 0 (w->skipped when the
 * rebalance was not needed), or -1 with err (w->next stays the caller's). */
int mt_placement_switch_run_here(mt_placement_switch *w, mt_engine *engine, mt_err *err);

#endif
