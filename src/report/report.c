/* moetrace report: a stat dump drawn with Cairo (see report.h for the panels). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cairo.h>

#include "report/report.h"
#include "report/report_draw.h"
#include "routing/balancedness.h"

/* Everything the drawing needs, computed once from the dump. */
typedef struct layout {
    int L, E, nmoe, ep, has_plc;
    int measured;     /* "after" is the placement the engine ran, from the dump's physical counts */
    int *moe_of;      /* [L] MoE row of each hidden layer, -1 for dense */
    double *share;    /* [nmoe, E] count / layer total */
    double *bal_b;    /* [nmoe] balancedness, contiguous split (ep or E) */
    double *bal_a;    /* [nmoe] balancedness under the placement */
    double *rel_b;    /* [2, ep] per-GPU load / mean load: mean over layers, max over layers */
    double *rel_a;
    double vmax;      /* colour scale top */
    double step;      /* colour bar tick step */
    int clipped;      /* some shares exceed vmax */
    double mean_b, mean_a;
    int64_t total;    /* routed (token, expert) pairs over all MoE layers */
    /* geometry */
    double cw, ch, x0, y0, W, H, bx, cbx, gy, gw, width, height;
} layout;

static void layout_free(layout *g) {
    free(g->moe_of);
    free(g->share);
    free(g->bal_b);
    free(g->bal_a);
    free(g->rel_b);
    free(g->rel_a);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Per-GPU loads of every MoE layer into rel[0..ep) (mean of load/mean) and rel[ep..2ep) (max): the
 * contiguous split (p NULL), placement p with each expert's load split evenly over its replicas, or
 * (measured) the dump's physical counts under the placement the engine ran. */
static void gpu_rel(const mt_stat_dump *d, const mt_placement *p, int measured, int ep, double *load, double *rel,
                    double *bal) {
    int used = 0;
    for (int g = 0; g < 2 * ep; g++) rel[g] = 0;
    for (int l = 0; l < d->num_moe_layers; l++) {
        const int64_t *c = d->moe_count + (size_t)l * d->num_experts;
        if (measured)
            mt_gpu_load_contiguous(d->phys_count + (size_t)l * p->num_physical, p->num_physical, ep, load);
        else if (p)
            mt_gpu_load_placement(c, p->phy2log + (size_t)l * p->num_physical,
                                  p->logcnt + (size_t)l * p->num_experts, p->num_physical, ep, load);
        else
            mt_gpu_load_contiguous(c, d->num_experts, ep, load);
        bal[l] = mt_balancedness_of(load, ep);
        double mean = 0;
        for (int g = 0; g < ep; g++) mean += load[g];
        mean /= ep;
        if (mean <= 0) continue;
        used++;
        for (int g = 0; g < ep; g++) {
            double r = load[g] / mean;
            rel[g] += r;
            if (r > rel[ep + g]) rel[ep + g] = r;
        }
    }
    for (int g = 0; g < ep; g++) rel[g] = used ? rel[g] / used : 0;
}

static int layout_compute(const mt_stat_dump *d, const mt_report_opts *o, layout *g, mt_err *err) {
    memset(g, 0, sizeof *g);
    g->L = d->num_hidden_layers;
    g->E = d->num_experts;
    g->nmoe = d->num_moe_layers;
    g->ep = o ? o->ep_size : 0;
    const mt_placement *p = o ? o->placement : NULL;
    if (!p && d->placement && d->phys_count) {
        p = d->placement;
        g->measured = 1;
    }
    g->has_plc = p != NULL;
    if (g->L < 1 || g->E < 1) return mt_errf(err, "stat dump has no layers or no experts");
    if (p) {
        if (p->num_moe_layers != g->nmoe)
            return mt_errf(err, "placement has %d layers but the stat dump has %d MoE layers",
                           p->num_moe_layers, g->nmoe);
        if (p->num_experts != g->E)
            return mt_errf(err, "placement is for %d experts but the stat dump has %d", p->num_experts,
                           g->E);
        if (g->ep && g->ep != p->num_gpus)
            return mt_errf(err, "--ep-size %d differs from the %splacement's num_gpus %d", g->ep,
                           g->measured ? "running " : "",
                           p->num_gpus);
        g->ep = p->num_gpus;
    }
    if (g->ep < 0 || g->ep > g->E)
        return mt_errf(err, "--ep-size %d must be in [1, num_experts = %d]", g->ep, g->E);
    if (!p && g->ep && g->E % g->ep)
        return mt_errf(err, "--ep-size %d does not divide the dump's %d experts: without a placement they are split "
                       "into M equal contiguous blocks (give --placement, or an M dividing %d)", g->ep, g->E, g->E);
    int M = g->ep ? g->ep : g->E;
    size_t ne = (size_t)(g->nmoe ? g->nmoe : 1);
    g->moe_of = malloc(sizeof(int) * (size_t)g->L);
    g->share = calloc(ne * (size_t)g->E, sizeof(double));
    g->bal_b = calloc(ne, sizeof(double));
    g->bal_a = calloc(ne, sizeof(double));
    g->rel_b = calloc(2 * (size_t)M, sizeof(double));
    g->rel_a = calloc(2 * (size_t)M, sizeof(double));
    double *load = calloc((size_t)M, sizeof(double));
    if (!g->moe_of || !g->share || !g->bal_b || !g->bal_a || !g->rel_b || !g->rel_a || !load) {
        free(load);
        return mt_errf(err, "out of memory drawing the report");
    }
    for (int l = 0; l < g->L; l++) g->moe_of[l] = -1;
    for (int i = 0; i < g->nmoe; i++)
        if (d->moe_layers[i] >= 0 && d->moe_layers[i] < g->L) g->moe_of[d->moe_layers[i]] = i;
    double smax = 0;
    size_t ncell = (size_t)g->nmoe * g->E;
    for (int i = 0; i < g->nmoe; i++) {
        const int64_t *c = d->moe_count + (size_t)i * g->E;
        int64_t t = 0;
        for (int e = 0; e < g->E; e++) t += c[e];
        g->total += t;
        for (int e = 0; e < g->E; e++) {
            double s = t > 0 ? (double)c[e] / (double)t : 0;
            g->share[(size_t)i * g->E + e] = s;
            if (s > smax) smax = s;
        }
    }
    /* Colour scale up to the 99th percentile of the shares (so one hot cell does not flatten the rest;
     * cells above are drawn at the top colour and the bar's top label says so), at least 2x uniform. */
    double *sorted = malloc(sizeof(double) * (ncell ? ncell : 1));
    if (!sorted) return mt_errf(err, "out of memory drawing the report");
    memcpy(sorted, g->share, sizeof(double) * ncell);
    qsort(sorted, ncell, sizeof(double), cmp_double);
    double p99 = ncell ? sorted[(size_t)((ncell - 1) * 0.99)] : 0;
    free(sorted);
    double raw = fmax(p99, 2.0 / g->E);
    if (raw > smax && smax > 0) raw = smax;
    g->step = mt_rd_nice_ceil(raw / 4);
    g->vmax = g->step * ceil(raw / g->step - 1e-9);
    g->clipped = smax > g->vmax * (1 + 1e-9);
    gpu_rel(d, NULL, 0, M, load, g->rel_b, g->bal_b);
    if (p) gpu_rel(d, p, g->measured, M, load, g->rel_a, g->bal_a);
    free(load);
    for (int i = 0; i < g->nmoe; i++) {
        g->mean_b += g->bal_b[i] / g->nmoe;
        g->mean_a += g->bal_a[i] / g->nmoe;
    }

    /* Geometry: cells sized from the shape so that 8 experts and 256 experts both fill ~1000 px. */
    g->cw = g->E <= 16 ? 56 : clampd(floor(960.0 / g->E), 3, 56);
    g->ch = clampd(floor(640.0 / g->L), 8, 30);
    g->W = g->cw * g->E;
    g->H = g->ch * g->L;
    g->x0 = 84;
    g->y0 = 74;
    g->bx = g->x0 + g->W + 16;      /* balancedness column, 100 px */
    g->cbx = g->bx + 100 + 52;      /* colour bar, 16 px + labels */
    g->width = g->cbx + 16 + 70;
    if (g->width < 620) g->width = 620;
    g->gy = g->y0 + g->H + 52;      /* GPU panel top */
    g->gw = g->cbx - g->x0 - 20;
    if (g->gw > 64.0 * M * (p ? 1.5 : 1)) g->gw = 64.0 * M * (p ? 1.5 : 1);
    if (g->gw < 240) g->gw = 240;
    g->height = g->gy + (g->ep ? 286 : 0) + 10;
    return 0;
}

static void fmt_count(char *b, size_t n, int64_t v) {
    if (v < 0) snprintf(b, n, "n/a");
    else if (v >= 10000000) snprintf(b, n, "%.1fM", v / 1e6);
    else if (v >= 100000) snprintf(b, n, "%.0fk", v / 1e3);
    else snprintf(b, n, "%lld", (long long)v);
}


static void draw_title(cairo_t *cr, const mt_stat_dump *d, const layout *g) {
    char buf[512], tok[32];
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    mt_rd_font(cr, 17, 1);
    snprintf(buf, sizeof buf, "%s — expert routing", d->model && d->model[0] ? d->model : "(unnamed model)");
    mt_rd_text_fit(cr, 16, 12, g->width - 32, buf);
    mt_rd_font(cr, 12, 0);
    fmt_count(tok, sizeof tok, d->num_tokens);
    char bal[128];
    if (g->has_plc)
        snprintf(bal, sizeof bal, "mean balancedness %.3f → %.3f %s (EP %d)", g->mean_b, g->mean_a,
                 g->measured ? "measured" : "with the placement", g->ep);
    else if (g->ep)
        snprintf(bal, sizeof bal, "mean balancedness %.3f (EP %d)", g->mean_b, g->ep);
    else
        snprintf(bal, sizeof bal, "mean balancedness %.3f (per expert)", g->mean_b);
    snprintf(buf, sizeof buf, "%s tokens · %d MoE of %d layers · %d experts, top-%d · %s", tok, g->nmoe,
             g->L, g->E, d->top_k, bal);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    mt_rd_text(cr, 16, 36, 0, 0, buf);
}

static void draw_heatmap(cairo_t *cr, const layout *g) {
    double rgb[3];
    char buf[32];
    int labels = g->cw >= 44 && g->ch >= 16;
    for (int l = 0; l < g->L; l++) {
        double y = g->y0 + l * g->ch;
        int i = g->moe_of[l];
        if (i < 0) {
            if (l > 0 && g->moe_of[l - 1] < 0) continue; /* drawn with the run's first row */
            int run = 1;
            while (l + run < g->L && g->moe_of[l + run] < 0) run++;
            cairo_set_source_rgb(cr, 0.86, 0.86, 0.86);
            cairo_rectangle(cr, g->x0, y, g->W, g->ch * run);
            cairo_fill(cr);
            if (g->ch * run >= 9) {
                cairo_set_source_rgb(cr, 0.40, 0.40, 0.40);
                mt_rd_font(cr, fmin(11, g->ch * run - 1), 0);
                mt_rd_text(cr, g->x0 + g->W / 2, y + g->ch * run / 2, 0.5, 0.5,
                           run > 1 ? "dense layers" : "dense layer");
            }
            continue;
        }
        for (int e = 0; e < g->E; e++) {
            double s = g->share[(size_t)i * g->E + e];
            mt_rd_colormap(s / g->vmax, rgb);
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_rectangle(cr, g->x0 + e * g->cw, y, g->cw, g->ch);
            cairo_fill(cr);
            if (labels) {
                double lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2];
                if (lum > 0.5) cairo_set_source_rgb(cr, 0, 0, 0);
                else cairo_set_source_rgb(cr, 1, 1, 1);
                mt_rd_font(cr, 10, 0);
                snprintf(buf, sizeof buf, "%.1f%%", s * 100);
                mt_rd_text(cr, g->x0 + (e + 0.5) * g->cw, y + g->ch / 2, 0.5, 0.5, buf);
            }
        }
    }
    /* thin separators between cells when they are large enough to carry them */
    if (g->cw >= 12 && g->ch >= 12) {
        cairo_set_source_rgba(cr, 1, 1, 1, 0.6);
        cairo_set_line_width(cr, 1);
        for (int e = 1; e < g->E; e++) {
            cairo_move_to(cr, g->x0 + e * g->cw, g->y0);
            cairo_line_to(cr, g->x0 + e * g->cw, g->y0 + g->H);
        }
        for (int l = 1; l < g->L; l++) {
            cairo_move_to(cr, g->x0, g->y0 + l * g->ch);
            cairo_line_to(cr, g->x0 + g->W, g->y0 + l * g->ch);
        }
        cairo_stroke(cr);
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, g->x0 - 0.5, g->y0 - 0.5, g->W + 1, g->H + 1);
    cairo_stroke(cr);

    /* axes: experts below, layers left */
    mt_rd_font(cr, 11, 0);
    mt_rd_cell_axes(cr, g->x0, g->y0, g->cw, g->ch, g->E, g->L, 4);
    mt_rd_font(cr, 12, 1);
    mt_rd_text(cr, g->x0 + g->W / 2, g->y0 + g->H + 24, 0.5, 0, "expert");
    mt_rd_text_vertical(cr, 24, g->y0 + g->H / 2, "hidden layer");
    mt_rd_font(cr, 11, 0);
    mt_rd_text(cr, g->x0, g->y0 - 6, 0, 1, "share of the layer's routed tokens");
}

static void draw_balancedness(cairo_t *cr, const layout *g) {
    char buf[64];
    const double bw = 100;
    cairo_set_source_rgb(cr, 0.96, 0.96, 0.96);
    cairo_rectangle(cr, g->bx, g->y0, bw, g->H);
    cairo_fill(cr);
    for (int l = 0; l < g->L; l++) {
        int i = g->moe_of[l];
        double y = g->y0 + l * g->ch, h = g->ch > 3 ? g->ch - 1 : g->ch;
        if (i < 0) {
            cairo_set_source_rgb(cr, 0.86, 0.86, 0.86);
            cairo_rectangle(cr, g->bx, y, bw, g->ch);
            cairo_fill(cr);
            continue;
        }
        if (g->has_plc) {
            cairo_set_source_rgb(cr, 0.55, 0.62, 0.72);
            cairo_rectangle(cr, g->bx, y, bw * g->bal_b[i], h / 2);
            cairo_fill(cr);
            cairo_set_source_rgb(cr, 0.90, 0.45, 0.10);
            cairo_rectangle(cr, g->bx, y + h / 2, bw * g->bal_a[i], h / 2);
            cairo_fill(cr);
        } else {
            cairo_set_source_rgb(cr, 0.30, 0.45, 0.65);
            cairo_rectangle(cr, g->bx, y, bw * g->bal_b[i], h);
            cairo_fill(cr);
        }
        if (g->ch >= 14) {
            double v = g->has_plc ? g->bal_a[i] : g->bal_b[i];
            if (g->has_plc) snprintf(buf, sizeof buf, "%.2f→%.2f", g->bal_b[i], v);
            else snprintf(buf, sizeof buf, "%.2f", v);
            mt_rd_font(cr, 10, 0);
            double tw = mt_rd_text_width(cr, buf);
            /* dark text on a light box, readable over the bars and the background alike */
            cairo_set_source_rgba(cr, 1, 1, 1, 0.8);
            cairo_rectangle(cr, g->bx + bw - tw - 5, y + g->ch / 2 - 6, tw + 4, 12);
            cairo_fill(cr);
            cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
            mt_rd_text(cr, g->bx + bw - 3, y + g->ch / 2, 1, 0.5, buf);
        }
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, g->bx - 0.5, g->y0 - 0.5, bw + 1, g->H + 1);
    cairo_stroke(cr);
    mt_rd_font(cr, 11, 0);
    for (int k = 0; k <= 2; k++) {
        double x = g->bx + bw * k / 2.0;
        cairo_move_to(cr, x, g->y0 + g->H);
        cairo_line_to(cr, x, g->y0 + g->H + 4);
        cairo_stroke(cr);
        mt_rd_text(cr, x, g->y0 + g->H + 6, 0.5, 0, k == 0 ? "0" : k == 1 ? "0.5" : "1");
    }
    mt_rd_font(cr, 12, 1);
    mt_rd_text(cr, g->bx + bw / 2, g->y0 + g->H + 24, 0.5, 0, "balancedness");
    mt_rd_font(cr, 11, 0);
    if (g->ep) snprintf(buf, sizeof buf, "EP %d", g->ep);
    else snprintf(buf, sizeof buf, "per expert");
    mt_rd_text(cr, g->bx, g->y0 - 6, 0, 1, buf);
    if (g->has_plc) {
        /* legend beside the column header */
        double lx = g->bx + 38, ly = g->y0 - 14;
        cairo_set_source_rgb(cr, 0.55, 0.62, 0.72);
        cairo_rectangle(cr, lx, ly, 8, 8);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, 0.90, 0.45, 0.10);
        cairo_rectangle(cr, lx + 48, ly, 8, 8);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
        mt_rd_font(cr, 10, 0);
        mt_rd_text(cr, lx + 10, ly + 4, 0, 0.5, "before");
        mt_rd_text(cr, lx + 58, ly + 4, 0, 0.5, "after");
    }
}

static void draw_colorbar(cairo_t *cr, const layout *g) {
    double rgb[3];
    char buf[32];
    double cy = g->y0 + 10, h = g->H < 160 ? g->H - 10 : g->H * 0.8;
    if (h < 100) h = 100;
    double y1 = cy + h;
    int steps = (int)h;
    for (int k = 0; k < steps; k++) {
        mt_rd_colormap((k + 0.5) / steps, rgb);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, g->cbx, y1 - (k + 1) * h / steps, 16, h / steps + 0.5);
        cairo_fill(cr);
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, g->cbx - 0.5, cy - 0.5, 17, h + 1);
    cairo_stroke(cr);
    mt_rd_font(cr, 11, 0);
    int nt = (int)floor(g->vmax / g->step + 0.5);
    for (int k = 0; k <= nt; k++) {
        double v = g->step * k, y = y1 - h * v / g->vmax;
        cairo_move_to(cr, g->cbx + 16, y);
        cairo_line_to(cr, g->cbx + 20, y);
        cairo_stroke(cr);
        snprintf(buf, sizeof buf, "%s%.3g%%", k == nt && g->clipped ? "≥ " : "", v * 100);
        mt_rd_text(cr, g->cbx + 22, y, 0, 0.5, buf);
    }
    /* the share every expert would get under perfect balance */
    double u = 1.0 / g->E;
    if (u <= g->vmax) {
        double y = y1 - h * u / g->vmax;
        cairo_set_source_rgb(cr, 0.85, 0.1, 0.1);
        cairo_set_line_width(cr, 2);
        cairo_move_to(cr, g->cbx - 4, y);
        cairo_line_to(cr, g->cbx + 16, y);
        cairo_stroke(cr);
        mt_rd_font(cr, 9, 0);
        mt_rd_text(cr, g->cbx - 6, y, 1, 0.5, "uniform");
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    mt_rd_font(cr, 11, 0);
    mt_rd_text(cr, g->cbx, g->y0 - 6, 0, 1, "token share");
}

static void draw_gpu_panel(cairo_t *cr, const layout *g) {
    char buf[160];
    int M = g->ep, two = g->has_plc;
    double bars = 0, top = 0;
    for (int k = 0; k < 2 * M; k++) {
        double v = fmax(g->rel_b[k], two ? g->rel_a[k] : 0);
        if (k < M && v > bars) bars = v;
        if (v > top) top = v;
    }
    /* the axis fits the bars; worst-layer ticks beyond 2x the tallest bar are clipped and labelled */
    double ystep = mt_rd_nice_ceil(fmin(fmax(top, 1.0) * 1.05, fmax(bars, 1.0) * 2) / 4);
    double ymax = ystep * ceil(fmin(fmax(top, 1.0) * 1.05, fmax(bars, 1.0) * 2) / ystep - 1e-9);
    double px = g->x0, py = g->gy + 50, pw = g->gw, ph = 170;
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    mt_rd_font(cr, 13, 1);
    if (two)
        snprintf(buf, sizeof buf, "Per-GPU load, EP %d: contiguous split (before) vs %s (after)", M,
                 g->measured ? "running placement, measured" : "placement");
    else
        snprintf(buf, sizeof buf, "Per-GPU load, EP %d (experts split into %d contiguous blocks)", M, M);
    mt_rd_text(cr, px - 60, g->gy, 0, 0, buf);
    mt_rd_font(cr, 11, 0);
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    mt_rd_text(cr, px - 60, g->gy + 17, 0, 0,
               "bar: load / mean GPU load, averaged over MoE layers; tick: worst layer; line: perfect balance");
    /* y grid */
    int nt = (int)floor(ymax / ystep + 0.5);
    for (int k = 0; k <= nt; k++) {
        double v = ystep * k, y = py + ph - ph * v / ymax;
        cairo_set_source_rgb(cr, 0.88, 0.88, 0.88);
        cairo_set_line_width(cr, 1);
        cairo_move_to(cr, px, y);
        cairo_line_to(cr, px + pw, y);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
        snprintf(buf, sizeof buf, "%.3g", v);
        mt_rd_text(cr, px - 6, y, 1, 0.5, buf);
    }
    double slot = pw / M;
    for (int gi = 0; gi < M; gi++) {
        for (int s = 0; s < 1 + two; s++) {
            const double *rel = s ? g->rel_a : g->rel_b;
            double bw = two ? slot * 0.38 : slot * 0.66;
            double x = two ? px + gi * slot + slot * 0.1 + s * bw * 1.05 : px + gi * slot + slot * 0.17;
            if (two && s == 0) cairo_set_source_rgb(cr, 0.55, 0.62, 0.72);
            else if (two) cairo_set_source_rgb(cr, 0.90, 0.45, 0.10);
            else cairo_set_source_rgb(cr, 0.30, 0.45, 0.65);
            double h = ph * rel[gi] / ymax;
            cairo_rectangle(cr, x, py + ph - h, bw, h);
            cairo_fill(cr);
            double worst = rel[M + gi], ym = py + ph - ph * fmin(worst, ymax) / ymax;
            if (worst > ymax) {
                snprintf(buf, sizeof buf, "%.3g", worst);
                cairo_set_source_rgb(cr, 0.15, 0.15, 0.15);
                mt_rd_font(cr, 9, 0);
                mt_rd_text(cr, x + bw / 2, ym - 2, 0.5, 1, buf);
            }
            cairo_set_source_rgb(cr, 0.15, 0.15, 0.15);
            cairo_set_line_width(cr, 2);
            cairo_move_to(cr, x, ym);
            cairo_line_to(cr, x + bw, ym);
            cairo_stroke(cr);
            cairo_set_line_width(cr, 1);
            cairo_move_to(cr, x + bw / 2, ym);
            cairo_line_to(cr, x + bw / 2, py + ph - h);
            cairo_stroke(cr);
        }
    }
    /* perfect balance */
    double y1 = py + ph - ph / ymax;
    cairo_set_source_rgb(cr, 0.85, 0.1, 0.1);
    cairo_set_line_width(cr, 1.5);
    double dash[] = {5, 3};
    cairo_set_dash(cr, dash, 2, 0);
    cairo_move_to(cr, px, y1);
    cairo_line_to(cr, px + pw, y1);
    cairo_stroke(cr);
    cairo_set_dash(cr, NULL, 0, 0);
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_move_to(cr, px, py);
    cairo_line_to(cr, px, py + ph);
    cairo_line_to(cr, px + pw, py + ph);
    cairo_stroke(cr);
    int xs = mt_rd_tick_step(slot, 26, 1);
    mt_rd_font(cr, 11, 0);
    for (int gi = 0; gi < M; gi += xs) {
        snprintf(buf, sizeof buf, "%d", gi);
        mt_rd_text(cr, px + (gi + 0.5) * slot, py + ph + 5, 0.5, 0, buf);
    }
    mt_rd_font(cr, 12, 1);
    mt_rd_text(cr, px + pw / 2, py + ph + 22, 0.5, 0, "GPU");
    mt_rd_text_vertical(cr, 24, py + ph / 2, "load / mean");
    if (two) {
        double lx = px + pw + 16;
        mt_rd_font(cr, 11, 0);
        cairo_set_source_rgb(cr, 0.55, 0.62, 0.72);
        cairo_rectangle(cr, lx, py + 4, 10, 10);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, 0.90, 0.45, 0.10);
        cairo_rectangle(cr, lx, py + 22, 10, 10);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        snprintf(buf, sizeof buf, "before (mean balancedness %.3f)", g->mean_b);
        mt_rd_text(cr, lx + 14, py + 9, 0, 0.5, buf);
        snprintf(buf, sizeof buf, "after (mean balancedness %.3f)", g->mean_a);
        mt_rd_text(cr, lx + 14, py + 27, 0, 0.5, buf);
    }
}

static void draw_all(cairo_t *cr, const mt_stat_dump *d, const layout *g) {
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    draw_title(cr, d, g);
    draw_heatmap(cr, g);
    draw_balancedness(cr, g);
    draw_colorbar(cr, g);
    if (g->ep) draw_gpu_panel(cr, g);
}

/* draw_all for mt_rd_render_file. */
typedef struct report_draw_args {
    const mt_stat_dump *d;
    const layout *g;
} report_draw_args;

static void draw_report(cairo_t *cr, const void *arg) {
    const report_draw_args *a = arg;
    draw_all(cr, a->d, a->g);
}

int mt_report_render(const mt_stat_dump *d, const char *out_path, const mt_report_opts *o, mt_err *err) {
    if (mt_rd_check_ext(out_path, err)) return -1;
    layout g;
    if (layout_compute(d, o, &g, err)) {
        layout_free(&g);
        return -1;
    }
    if (g.width < 400) g.width = 400;
    if (g.ep && g.has_plc && g.width < g.x0 + g.gw + 16 + 250) g.width = g.x0 + g.gw + 16 + 250;
    if (g.ep && g.width < 660) g.width = 660;
    report_draw_args args = {d, &g};
    int rc = mt_rd_render_file(out_path, g.width, g.height, draw_report, &args, err);
    layout_free(&g);
    return rc;
}
