/* The schedule of decode steps read back from the kernel timeline (kernels/cuda/timeline.h), for
 * bench_cuda --figures timeline: blocks grouped into launches, launches named by their place in a
 * layer, and per name the mean over the middle layers of when the launch's blocks started, passed
 * their dependency wait and left, each relative to the end of the launch before it. */
#ifndef MT_BENCH_TIMELINE_REPORT_H
#define MT_BENCH_TIMELINE_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/timeline.h"

typedef struct tl_launch {
    int kind, grid, n;
    uint64_t enter0, wait0, wait1, exit0, exit1;   /* first start, first/last wait return, first/last exit */
    double mark[2], out;                           /* block means from the block's own wait return: marks, exit */
    double enter;                                  /* sum over blocks of their start less wait0 */
    int n_mark[2];
} tl_launch;

static inline int tl_by_wait(const void *a, const void *b) {
    const mt_tl_block *x = a, *y = b;
    if (x->t_wait != y->t_wait) return x->t_wait < y->t_wait ? -1 : 1;
    return (int)x->kind - (int)y->kind;
}

static inline int tl_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Blocks sorted by their wait's return form launches: a launch's blocks all pass the wait after the
 * launch before it has ended, so each launch is a run of its kind and grid, grid blocks long. */
static inline size_t tl_launches(mt_tl_block *r, size_t n, tl_launch *out) {
    qsort(r, n, sizeof *r, tl_by_wait);
    size_t nl = 0;
    for (size_t i = 0; i < n; i++) {
        tl_launch *c = nl ? &out[nl - 1] : NULL;
        if (!c || c->kind != (int)r[i].kind || c->grid != (int)r[i].grid || c->n >= c->grid) {
            c = &out[nl++];
            c->kind = (int)r[i].kind;
            c->grid = (int)r[i].grid;
            c->n = 0;
            c->enter0 = c->exit0 = UINT64_MAX;
            c->wait0 = r[i].t_wait;
            c->wait1 = c->exit1 = 0;
            c->mark[0] = c->mark[1] = c->out = c->enter = 0.0;
            c->n_mark[0] = c->n_mark[1] = 0;
        }
        c->n++;
        c->out += (double)(r[i].t_exit - r[i].t_wait);
        c->enter += (double)r[i].t_enter - (double)c->wait0;
        for (int m = 0; m < 2; m++)
            if (r[i].t_mark[m]) {
                c->mark[m] += (double)r[i].t_mark[m] - (double)r[i].t_wait;
                c->n_mark[m]++;
            }
        if (r[i].t_enter < c->enter0) c->enter0 = r[i].t_enter;
        if (r[i].t_wait > c->wait1) c->wait1 = r[i].t_wait;
        if (r[i].t_exit < c->exit0) c->exit0 = r[i].t_exit;
        if (r[i].t_exit > c->exit1) c->exit1 = r[i].t_exit;
    }
    return nl;
}

static inline const char *tl_label(const tl_launch *l, int product) {
    static const char *const products[] = {"q/k/v", "o", "router", "gate/up", "down"};
    bool is_product = l->kind == MT_TL_LINEAR_SMALL || l->kind == MT_TL_LINEAR_LARGE || l->kind == MT_TL_LINEAR_WGMMA;
    if (l->kind == MT_TL_LINEAR_COMBINED) return "q/k/v+combine";
    if (is_product) return product < 5 ? products[product] : "product";
    if (l->kind == MT_TL_SPLIT_REDUCE) return product >= 1 && product <= 5 ? "(split reduce)" : "split reduce";
    return mt_tl_kind_name(l->kind);
}

enum { TL_MAX_LABELS = 32 };
typedef struct tl_row {
    const char *label;
    int count;
    double blocks, start, mean_start, release, wait_spread, first_out, last_out, share, mark[2], out;
    int n_mark[2];
} tl_row;

/* What a recording says: per launch label (in order of first appearance in a layer), the sums over
 * the middle layers' launches (divide by count for the means), in ns. */
typedef struct tl_summary {
    size_t blocks, launches;
    int steps;
    uint64_t tick;     /* the smallest step between distinct exit stamps (the timer's resolution, or more) */
    tl_row rows[TL_MAX_LABELS];
    int n_rows;
    double layer_ns;   /* a middle layer's mean sum of shares; 0 when no middle layer was recorded */
} tl_summary;

/* Groups the blocks r[0..n) (reordered) into launches, names them by their place in a layer (a step
 * starts at the embedding; a layer ends with its combine, or where the next layer's q/k/v product
 * folds that combine in; products count q/k/v, o, router,
 * gate/up, down, the one-launch router standing for the router) and sums the figures of layers 1 .. layers-2. */
static inline void tl_summarize(mt_tl_block *r, size_t n, int layers, tl_summary *out) {
    memset(out, 0, sizeof *out);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (r[i].t_wait) r[kept++] = r[i];
    n = kept;
    tl_launch *ls = malloc((n ? n : 1) * sizeof *ls);
    size_t nl = tl_launches(r, n, ls);
    uint64_t *stamps = malloc((n ? n : 1) * sizeof *stamps);
    for (size_t i = 0; i < n; i++) stamps[i] = r[i].t_exit;
    qsort(stamps, n, sizeof *stamps, tl_u64);
    uint64_t tick = UINT64_MAX;
    for (size_t i = 1; i < n; i++)
        if (stamps[i] > stamps[i - 1] && stamps[i] - stamps[i - 1] < tick) tick = stamps[i] - stamps[i - 1];
    free(stamps);

    tl_row *rows = out->rows;
    int n_rows = 0, steps = 0, layer = -1, product = 0;
    double layer_sum = 0.0;
    long layer_count = 0;
    for (size_t i = 0; i < nl; i++) {
        const tl_launch *l = &ls[i];
        if (l->kind == MT_TL_EMBED) {
            steps++;
            layer = 0;
            product = 0;
            continue;
        }
        if (layer < 0 || i == 0) continue;
        if (l->kind == MT_TL_LINEAR_COMBINED && product > 0) {   // the layer before folded its combine into this
            if (layer >= 1 && layer <= layers - 2) layer_count++;
            layer++;
            product = 0;
        }
        const char *label = tl_label(l, product);
        bool is_product = l->kind == MT_TL_LINEAR_SMALL || l->kind == MT_TL_LINEAR_LARGE ||
                          l->kind == MT_TL_LINEAR_WGMMA || l->kind == MT_TL_LINEAR_COMBINED;
        if (layer >= 1 && layer <= layers - 2) {
            const tl_launch *p = &ls[i - 1];
            int k = 0;
            while (k < n_rows && strcmp(rows[k].label, label)) k++;
            if (k == n_rows && n_rows < TL_MAX_LABELS) {
                memset(&rows[n_rows], 0, sizeof rows[n_rows]);
                rows[n_rows++].label = label;
            }
            if (k < n_rows) {
                double pe = (double)p->exit1;
                tl_row *w = &rows[k];
                w->count++;
                w->blocks += l->n;
                w->start += (double)l->enter0 - pe;
                w->mean_start += l->enter / l->n + ((double)l->wait0 - pe);
                w->release += (double)l->wait0 - pe;
                w->wait_spread += (double)(l->wait1 - l->wait0);
                w->first_out += (double)(l->exit0 - l->wait0);
                w->last_out += (double)(l->exit1 - l->wait0);
                w->share += (double)l->exit1 - pe;
                w->out += l->out / l->n;
                for (int m = 0; m < 2; m++)
                    if (l->n_mark[m]) {
                        w->mark[m] += l->mark[m] / l->n_mark[m];
                        w->n_mark[m]++;
                    }
                layer_sum += (double)l->exit1 - pe;
            }
        }
        if (is_product) product++;
        if (l->kind == MT_TL_MOE_ROUTER) product = 3;   // the router product was inside it: gate/up next
        if (l->kind == MT_TL_COMBINE) {
            if (layer >= 1 && layer <= layers - 2) layer_count++;
            layer++;
            product = 0;
        }
    }
    out->blocks = n;
    out->launches = nl;
    out->steps = steps;
    out->tick = tick == UINT64_MAX ? 0 : tick;
    out->n_rows = n_rows;
    out->layer_ns = layer_count ? layer_sum / (double)layer_count : 0.0;
    free(ls);
}

/* Prints the per-launch means over layers 1 .. layers-2 of every step recorded. */
static inline void tl_report(mt_tl_block *r, size_t n, int layers) {
    tl_summary *s = malloc(sizeof *s);
    tl_summarize(r, n, layers, s);
    printf("timeline: %zu blocks in %zu launches, %d steps; globaltimer step %llu ns\n", s->blocks, s->launches, s->steps,
           (unsigned long long)s->tick);
    printf("  means over layers 1..%d, us; start (first block's, and the blocks' mean)/release/share from the end of\n"
           "  the launch before; first/last out from the first wait's return; block out and\n"
           "  the marks (where kernels set them) are block means from the block's own wait\n", layers - 2);
    printf("  %-16s %7s %8s %10s %8s %8s %9s %8s %8s %9s %6s %6s\n", "launch", "blocks", "start", "mean start", "release", "waits", "first out",
           "last out", "share", "block out", "mark0", "mark1");
    for (int k = 0; k < s->n_rows; k++) {
        const tl_row *w = &s->rows[k];
        double c = w->count ? w->count : 1;
        printf("  %-16s %7.0f %8.2f %10.2f %8.2f %8.2f %9.2f %8.2f %8.2f %9.2f", w->label, w->blocks / c, w->start / c * 1e-3,
               w->mean_start / c * 1e-3, w->release / c * 1e-3, w->wait_spread / c * 1e-3, w->first_out / c * 1e-3, w->last_out / c * 1e-3,
               w->share / c * 1e-3, w->out / c * 1e-3);
        for (int m = 0; m < 2; m++) {
            if (w->n_mark[m]) printf(" %6.2f", w->mark[m] / w->n_mark[m] * 1e-3);
            else printf(" %6s", "-");
        }
        printf("\n");
    }
    if (s->layer_ns > 0) printf("  a layer: %.2f us (sum of shares)\n", s->layer_ns * 1e-3);
    free(s);
}

#endif
