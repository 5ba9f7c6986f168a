/* An expert placement switch between two forward passes (placement_switch.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routing/balancedness.h"
#include "routing/stat_dump.h"
#include "server/dump_writer.h"
#include "server/placement_switch.h"
#include "server/server_internal.h"

/* Windows of periodic rebalances that may wait for the dump writer at once. */
#define MT_MAX_WINDOWS_WAITING 4

int mt_placement_switchable(mt_server *s, mt_api_error *e) {
    if (!s->b.placement)
        return mt_api_fail(e, 400, "serve was started without --ep-size (no expert placement): there is none to "
                                   "change; start it with --ep-size M [--init-expert-location FILE|trivial] "
                                   "[--ep-num-redundant-experts N]");
    return 0;
}

int mt_placement_switch_rebalance(mt_placement_switch *w, mt_server *s, double skip_above) {
    int L = s->b.placement->num_moe_layers;
    *w = (mt_placement_switch){.s = s, .rebalance = true, .skip_above = skip_above,
                               .next = calloc(1, sizeof *w->next), .before = calloc((size_t)L, sizeof(double)),
                               .after = calloc((size_t)L, sizeof(double))};
    if (w->next && w->before && w->after) return 0;
    mt_placement_switch_release(w, false);
    return -1;
}

void mt_placement_switch_release(mt_placement_switch *w, bool installed) {
    mt_recorder_free(w->window);
    mt_domain_window_free(w->domains);
    w->window = NULL;
    w->domains = NULL;
    if (!installed) mt_placement_destroy(w->next); /* planned or read but not installed, or never built */
    free(w->before);
    free(w->after);
    w->next = NULL;
    w->before = w->after = NULL;
}

/* The rows of the window's MoE layers as planner weights [moe layers, E]. */
static double *moe_weights(const mt_placement *p, const int64_t *logical) {
    int E = p->num_experts;
    double *w = malloc((size_t)p->num_moe_layers * (size_t)E * sizeof *w);
    for (int i = 0; w && i < p->num_moe_layers; i++)
        for (int e = 0; e < E; e++) w[(size_t)i * E + e] = (double)logical[(size_t)p->moe_layers[i] * E + e];
    return w;
}

/* Plans the next placement with EPLB on the recorder's window (engine thread, no pass running): the
 * running placement's slots and GPUs, one group, one node (as --init-expert-location plans a stat
 * dump), and the balancedness before (measured per GPU from the physical counts) and after (each
 * expert's window count split evenly over its new replicas). */
static int plan_rebalance(mt_placement_switch *w, const int64_t *logical, const int64_t *physical, mt_err *err) {
    const mt_placement *cur = w->current;
    int L = cur->num_moe_layers, E = cur->num_experts, R = cur->num_physical, M = cur->num_gpus;
    int64_t routed = 0;
    for (int i = 0; i < L; i++)
        for (int e = 0; e < E; e++) routed += logical[(size_t)cur->moe_layers[i] * E + e];
    if (w->counts.num_tokens == 0 || routed == 0) {
        w->status = 400;
        return mt_errf(err, "the recorder has recorded nothing since its last start, reset, dump or placement "
                            "switch: serve some traffic first (a placement planned from no load would be arbitrary)");
    }
    mt_moe_shape shape;
    mt_moe_shape_from_config(&w->s->b.model->cfg, &shape);
    double *weights = moe_weights(cur, logical);
    int rc = !weights ? mt_errf(err, "out of memory")
                      : mt_placement_plan(&shape, M, R, weights, "the recorder's window", w->next, err);
    free(weights);
    if (rc) {
        w->status = 500;
        return -1;
    }
    for (int i = 0; i < L; i++) {
        size_t l = (size_t)cur->moe_layers[i];
        w->before[i] = mt_balancedness_contiguous(physical + l * R, R, M);
        w->after[i] = mt_balancedness_placement(logical + l * E, w->next->phy2log + (size_t)i * R,
                                                w->next->logcnt + (size_t)i * E, R, M);
    }
    return 0;
}

/* Reads the window (and, for a rebalance, plans from it unless skip_above says it is balanced
 * enough). 0, 1 when the rebalance is skipped, -1 with err and w->status. */
static int read_window(mt_placement_switch *w, mt_err *err) {
    mt_server *s = w->s;
    mt_recorder *rec = s->b.recorder;
    const mt_config *c = &s->b.model->cfg;
    size_t L = (size_t)c->num_hidden_layers;
    int64_t *logical = malloc(L * (size_t)c->num_experts * sizeof *logical);
    int64_t *physical = malloc(L * (size_t)w->current->num_physical * sizeof *physical);
    int rc = -1;
    w->status = 500;
    if (!logical || !physical) mt_errf(err, "out of memory");
    else if (w->rebalance && !mt_recorder_active(rec)) {
        w->status = 400;
        mt_errf(err, "the expert distribution recorder is not running: POST /start_expert_distribution_record, "
                     "serve traffic, then rebalance");
    } else if (!mt_recorder_window(rec, &w->counts, logical, physical)) {
        if (w->rebalance && w->skip_above < 1.0 && w->counts.num_forward_passes > 0 &&
            w->counts.pass_balancedness > w->skip_above)
            rc = 1;
        else if ((!w->rebalance || !plan_rebalance(w, logical, physical, err)) && !mt_placement_fits(w->next, c, err))
            rc = 0;
    }
    free(logical);
    free(physical);
    return rc;
}

/* w->next becomes the server's placement; the one a switch installed before is freed: the engine,
 * the recorders and placement_now point at w->next now, and readers take placement_mu (held), or
 * window_mu as the switches do. Counted in the metrics under the same lock, so a reader sees the
 * new placement with its count. */
static void install(mt_placement_switch *w) {
    mt_server *s = w->s;
    mt_placement *replaced = s->placement_owned;
    s->placement_owned = w->next;
    s->placement_now = w->next;
    mt_placement_destroy(replaced);
    mt_metrics_placement_switch(&s->metrics, w->trigger, MT_SWITCH_APPLIED);
    mt_log("expert placement switched (%s, %d slots on %d GPUs)", w->next->source, w->next->num_physical,
           w->next->num_gpus);
}

/* The window taken (with --domain-field, the domains' usage of the same passes too), then the
 * recorders and the engine switched and the new placement installed: engine thread, no pass running,
 * so the window is exactly the one planned on and the next window counts the new placement only.
 * placement_mu is held only around the switch itself, not while the window is read and planned on
 * (nor, by the HTTP caller, while it waits for the pass boundary): the placement's readers wait for
 * no forward pass. */
static int switch_between_passes(mt_engine *engine, void *ctx, mt_err *err) {
    mt_placement_switch *w = ctx;
    mt_server *s = w->s;
    mt_recorder *rec = s->b.recorder;
    int rc = read_window(w, err);
    if (rc < 0) return -1;
    if (rc == 1) {
        w->skipped = true;
        return 0;
    }
    if (w->counts.num_forward_passes > 0 || w->counts.tokens_recorded > 0) {
        if (!(w->window = mt_recorder_take(rec, err))) return -1; /* nothing changed */
        mt_err derr;
        if (s->b.domains && mt_domain_usage_num_domains(s->b.domains) > 0 &&
            !(w->domains = mt_domain_usage_take(s->b.domains, &derr)))
            mt_log("expert use per domain not written: %s", derr.msg); /* the switch drops it */
    }
    /* each part takes w->next only once the one before has: a failure puts those back on w->current,
     * so nothing keeps a pointer to a placement the caller then frees */
    mt_err ignored;
    pthread_mutex_lock(&s->placement_mu);
    if (mt_engine_set_placement(engine, w->next, err)) goto out;
    if (s->b.domains && mt_domain_usage_set_placement(s->b.domains, w->next, err)) goto engine_back;
    if (mt_recorder_set_placement(rec, w->next, err)) goto domains_back;
    install(w);
    pthread_mutex_unlock(&s->placement_mu);
    mt_engine_loop_restart_count(s->b.loop); /* serve --enable-eplb counts its passes from here */
    return 0;
domains_back:
    if (s->b.domains) mt_domain_usage_set_placement(s->b.domains, w->current, &ignored);
engine_back:
    mt_engine_set_placement(engine, w->current, &ignored);
out:
    pthread_mutex_unlock(&s->placement_mu);
    return -1;
}

/* What is left to write after the switch (installed: w->next runs now): the window taken, the
 * domains' usage of its passes, the rebalance's plan beside it, the heatmap. */
static mt_window_files files_of(const mt_placement_switch *w, bool installed) {
    mt_window_files f = {.window = w->window,
                         .domains = w->domains,
                         .domains_picture = w->s->b.dump_visualize,
                         .plan = installed && w->rebalance ? w->next : NULL,
                         .heatmap_ep_size = w->s->b.dump_visualize ? w->s->b.ep_size : 0,
                         .metrics = &w->s->metrics,
                         .next_of = w->s->b.recorder,
                         .next_domains_of = w->s->b.domains};
    return f;
}

/* Written here, before the caller answers: the dump's and the plan's names into w. */
static void write_files_here(mt_placement_switch *w, bool installed) {
    mt_window_files f = files_of(w, installed);
    w->window = NULL;
    w->domains = NULL;
    if (!f.window) {
        mt_domain_window_free(f.domains);
        return;
    }
    mt_window_files_write(&f);
    snprintf(w->dump, sizeof w->dump, "%s", f.dump);
    snprintf(w->plan, sizeof w->plan, "%s", f.plan_path);
    if (f.dump_failed) snprintf(w->dump_error, sizeof w->dump_error, "%s", f.dump_err.msg);
}

int mt_placement_switch_run(mt_placement_switch *w, mt_switch_trigger trigger, mt_api_error *e) {
    mt_server *s = w->s;
    mt_err err;
    mt_dump_writer_drain(s->dump_writer); /* the windows before this one reach the disk first */
    w->current = s->placement_now; /* only switches change it, one at a time under window_mu */
    w->trigger = trigger;
    int rc = mt_engine_loop_between_passes(s->b.loop, switch_between_passes, w, &err);
    bool installed = rc == 0 && !w->skipped; /* installed there, and counted */
    if (rc) mt_metrics_placement_switch(&s->metrics, trigger, MT_SWITCH_FAILED);
    write_files_here(w, installed); /* the engine runs meanwhile, and readers of the placement */
    if (rc == 0) return 0;
    char window[sizeof w->dump + 64] = ""; /* taken before the failure: the old placement goes on with an empty window */
    if (w->dump[0]) snprintf(window, sizeof window, " (the window before it was written to %s)", w->dump);
    else if (w->dump_error[0])
        snprintf(window, sizeof window, " (the window before it could not be written either: %s)", w->dump_error);
    return mt_api_fail(e, w->status ? w->status : 503, "%s%s", err.msg, window);
}

/* f queued on the dump writer with its own copy of the plan (the next switch frees w->next, maybe
 * before the writer reaches it); false (nothing queued) when out of memory. With the disk behind
 * (each window waiting holds all of its data) the engine first waits for the writer. */
static bool hand_to_writer(mt_dump_writer *writer, const mt_window_files *f) {
    int waiting = mt_dump_writer_pending(writer);
    if (waiting >= MT_MAX_WINDOWS_WAITING) {
        mt_log("the dump writer has %d windows still to write: the engine thread waits for them", waiting);
        mt_dump_writer_drain(writer);
    }
    mt_placement *plan = f->plan ? mt_placement_dup(f->plan) : NULL;
    if ((f->plan && !plan) || mt_dump_writer_submit(writer, f, plan)) {
        mt_placement_destroy(plan);
        return false;
    }
    return true;
}

int mt_placement_switch_run_here(mt_placement_switch *w, mt_engine *engine, mt_err *err) {
    int rc = switch_between_passes(engine, w, err);
    bool installed = rc == 0 && !w->skipped; /* installed there, and counted */
    mt_window_files f = files_of(w, installed);
    /* the next pass does not wait for the disk; else (no writer, out of memory) written here */
    if (w->s->dump_writer && f.window && hand_to_writer(w->s->dump_writer, &f)) {
        w->window = NULL;
        w->domains = NULL;
    } else {
        write_files_here(w, installed);
    }
    return rc ? -1 : 0;
}
