/* serve --enable-eplb: the server rebalances its expert placement by itself, every N forward passes
 * (--eplb-rebalance-num-iterations, SGLang's name and default 1000), on the engine thread between
 * two passes. Each rebalance is what POST /eplb_rebalance does (placement_switch.h): EPLB planned
 * on the recorder's window, the new placement switched to, the window taken; the server's dump
 * writer then writes the window's dump and the planned placement beside it (dump_writer.h), so the
 * engine thread only plans and switches. It is skipped when the recorder holds nothing, is not
 * recording, or when the window's mean per-pass balancedness is above
 * --eplb-min-rebalancing-utilization-threshold (default 1.0: never). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/placement_switch.h"
#include "server/server_internal.h"

static double mean(const double *v, int n) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    return n ? sum / n : 1.0;
}

static double seconds_since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* The rebalance, under window_mu (the switch takes placement_mu for its own moment); its result for
 * the metrics, which count an applied one already. */
static mt_switch_result rebalance_locked(mt_server *s, mt_engine *engine) {
    mt_recorder_counts k;
    mt_recorder_get_counts(s->b.recorder, &k);
    if (!mt_recorder_active(s->b.recorder) || k.num_tokens == 0) {
        mt_log("EPLB: rebalance skipped: the recorder %s", mt_recorder_active(s->b.recorder)
                                                                ? "has recorded nothing since its last dump or reset"
                                                                : "is stopped (POST /start_expert_distribution_record)");
        return MT_SWITCH_SKIPPED;
    }
    int L = s->b.placement->num_moe_layers;
    mt_placement_switch w;
    mt_err err = {{0}};
    if (mt_placement_switch_rebalance(&w, s, s->b.eplb_threshold)) {
        mt_log("EPLB: rebalance failed, the placement stays: out of memory");
        return MT_SWITCH_FAILED;
    }
    w.current = s->placement_now; /* only switches change it, one at a time under window_mu */
    w.trigger = MT_SWITCH_BY_PERIOD;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = mt_placement_switch_run_here(&w, engine, &err);
    mt_switch_result result = rc ? MT_SWITCH_FAILED : w.skipped ? MT_SWITCH_SKIPPED : MT_SWITCH_APPLIED;
    if (rc) {
        mt_log("EPLB: rebalance failed, the placement stays: %s", err.msg);
    } else if (w.skipped) {
        mt_log("EPLB: rebalance skipped: the window's balancedness %.4f is above the threshold %g (%lld passes)",
               w.counts.pass_balancedness, s->b.eplb_threshold, (long long)w.counts.num_forward_passes);
    } else {
        mt_log("EPLB: rebalanced on %lld passes (%lld tokens), the engine thread held %.2f ms: balancedness %.4f "
               "measured, %.4f planned",
               (long long)w.counts.num_forward_passes, (long long)w.counts.num_tokens, 1e3 * seconds_since(&t0),
               mean(w.before, L), mean(w.after, L));
    }
    mt_placement_switch_release(&w, result == MT_SWITCH_APPLIED);
    return result;
}

/* The engine loop's periodic work (mt_engine_loop_every_passes), ctx the server. */
static int rebalance_now(mt_engine *engine, void *ctx, mt_err *err) {
    (void)err;
    mt_server *s = ctx;
    /* held: a switch, dump or start asked over HTTP is in progress (a switch waits for this thread,
     * and restarts the count once done); ask again after the next pass */
    if (pthread_mutex_trylock(&s->window_mu)) return 1;
    mt_switch_result result = rebalance_locked(s, engine);
    if (result != MT_SWITCH_APPLIED) mt_metrics_placement_switch(&s->metrics, MT_SWITCH_BY_PERIOD, result);
    pthread_mutex_unlock(&s->window_mu);
    return 0;
}

void mt_server_start_eplb(mt_server *s) {
    if (s->b.eplb_every <= 0 || !s->b.placement) return;
    if (!mt_recorder_active(s->b.recorder)) {
        mt_recorder_start(s->b.recorder);
        if (s->b.domains) mt_domain_usage_start(s->b.domains);
    }
    mt_err err;
    if (!(s->dump_writer = mt_dump_writer_new(&err)))
        mt_log("EPLB: %s: the rebalances' files are written on the engine thread", err.msg);
    mt_engine_loop_every_passes(s->b.loop, s->b.eplb_every, rebalance_now, s);
    mt_log("EPLB: rebalancing the expert placement every %ld forward passes%s", s->b.eplb_every,
           s->b.eplb_threshold < 1.0 ? " when the recorder's balancedness is at or below the threshold" : "");
}
