/* Expert co-activation drawn (coactivation.h): one heatmap of shares per layer, experts on both
 * axes, in a grid, with one colour bar. */
#include "report/coactivation.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cairo.h>

#include "report/report_draw.h"

/* What the picture shows, computed once. */
typedef struct coact_layout {
    const mt_coactivation *c;
    int E, cols, rows;
    double cell, side;   /* a heatmap's cell and side */
    double pw, ph;       /* a panel's width and height */
    double x0, y0;       /* the first panel's top left */
    double vmax, step;   /* colour scale */
    double cbx, width, height;
    char layers[256];    /* "layers 0, 5, 11 of 12 MoE layers" */
} coact_layout;

enum { HEAD_H = 42, AXIS_W = 36, FOOT_H = 58 };

static void make_layout(coact_layout *g) {
    const mt_coactivation *c = g->c;
    const mt_per_token_dump *d = c->dump;
    int E = g->E = d->num_experts;
    g->cell = fmax(2, floor(384.0 / E));
    g->side = g->cell * E;
    g->cols = c->n <= 1 ? 1 : c->n <= 4 ? 2 : c->n <= 9 ? 3 : 4;
    g->rows = (c->n + g->cols - 1) / g->cols;
    g->pw = AXIS_W + g->side + 40;
    g->ph = HEAD_H + g->side + FOOT_H;
    g->x0 = 16;
    g->y0 = d->dropped_tokens ? MT_RD_TITLE_WARN_H : MT_RD_TITLE_H;
    double top = 0;
    for (int k = 0; k < c->n; k++)
        for (int i = 0; i < E; i++)
            for (int j = 0; j < E; j++) {
                double s = mt_coactivation_share(&c->layers[k], E, i, j);
                if (!isnan(s)) top = fmax(top, s);
            }
    g->step = mt_rd_nice_ceil(fmax(top, 0.01) / 4);
    g->vmax = fmin(1.0, g->step * ceil(fmax(top, 0.01) / g->step - 1e-9));
    g->cbx = g->x0 + g->cols * g->pw + 36; /* room for the uniform share's label on its left */
    g->width = fmax(g->cbx + 16 + 64, 800); /* the title's lines whole, for one layer too */
    g->height = g->y0 + fmax(g->rows, 1) * g->ph + 8;
    int first[24];
    for (int k = 0; k < c->n && k < 24; k++) first[k] = c->layers[k].layer;
    mt_analysis_layers_text(d, first, c->n < 24 ? c->n : 24, c->n, g->layers, sizeof g->layers);
}

static void draw_title(cairo_t *cr, const coact_layout *g) {
    const mt_per_token_dump *d = g->c->dump;
    char title[512], sub[512], expl[512], warn[256];
    snprintf(title, sizeof title, "%s — expert co-activation", d->model[0] ? d->model : "(unnamed model)");
    snprintf(sub, sizeof sub, "%lld tokens counted (the dump's rows) · %s · %d experts, top-%d", (long long)d->rows,
             g->layers, d->num_experts, d->top_k);
    int w = snprintf(expl, sizeof expl, "row i, column j: of expert i's tokens, the share that also chose j (grey: "
                     "the diagonal; white: never together)");
    if (d->num_experts > 1 && w > 0 && (size_t)w < sizeof expl)
        snprintf(expl + w, sizeof expl - (size_t)w, " · uniform choice: %.3g%% a pair",
                 100.0 * (d->top_k - 1) / (d->num_experts - 1));
    snprintf(warn, sizeof warn, "%lld tokens were dropped by the recorder (it was full) and are not counted",
             (long long)d->dropped_tokens);
    mt_rd_title_block(cr, g->width - 32, title, sub, expl, d->dropped_tokens ? warn : NULL);
}

/* The strongest pairs of layer l as "1→0 100% · 2→0 100% · …" into buf. */
static void pairs_text(const mt_coact_layer *l, int max, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    for (int p = 0; p < l->n_top && p < max; p++) {
        int w = snprintf(buf + len, size - len, "%s%d→%d %.3g%%", p ? " · " : "", l->top[p].i, l->top[p].j,
                         100 * l->top[p].share);
        if (w < 0 || (size_t)w >= size - len) return;
        len += (size_t)w;
    }
}

static void draw_cells(cairo_t *cr, const coact_layout *g, const mt_coact_layer *l, double hx, double hy) {
    int E = g->E;
    double rgb[3];
    char buf[16];
    bool labels = g->cell >= 28;
    if (labels) mt_rd_font(cr, 9, 0);
    for (int i = 0; i < E; i++)
        for (int j = 0; j < E; j++) {
            double s = mt_coactivation_share(l, E, i, j);
            if (i == j) rgb[0] = rgb[1] = rgb[2] = 0.78;
            else if (isnan(s)) rgb[0] = rgb[1] = rgb[2] = 0.92; /* expert i has no token here */
            else if (s == 0) rgb[0] = rgb[1] = rgb[2] = 1;
            else mt_rd_colormap(s / g->vmax, rgb);
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_rectangle(cr, hx + j * g->cell, hy + i * g->cell, g->cell, g->cell);
            cairo_fill(cr);
            if (labels && !isnan(s) && s > 0) {
                mt_rd_text_colour_on(cr, rgb);
                snprintf(buf, sizeof buf, s < 0.005 ? "<1%%" : "%.0f%%", 100 * s);
                mt_rd_text(cr, hx + (j + 0.5) * g->cell, hy + (i + 0.5) * g->cell, 0.5, 0.5, buf);
            }
        }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, hx - 0.5, hy - 0.5, g->side + 1, g->side + 1);
    cairo_stroke(cr);
}

static void draw_panel(cairo_t *cr, const coact_layout *g, int k) {
    const mt_coact_layer *l = &g->c->layers[k];
    double px = g->x0 + (k % g->cols) * g->pw, py = g->y0 + (k / g->cols) * g->ph;
    double hx = px + AXIS_W, hy = py + HEAD_H, w = g->pw - 16;
    char buf[512], pairs[400];
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    mt_rd_font(cr, 13, 1);
    snprintf(buf, sizeof buf, "layer %d", l->layer);
    mt_rd_text(cr, px, py, 0, 0, buf);
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    mt_rd_font(cr, 11, 0);
    if (l->n_top)
        snprintf(buf, sizeof buf, "%lld tokens · strongest: %d→%d %.3g%% · each expert's strongest, mean: %.3g%%",
                 (long long)l->tokens, l->top[0].i, l->top[0].j, 100 * l->top[0].share, 100 * l->mean_max_share);
    else
        snprintf(buf, sizeof buf, "%lld tokens · no two experts chosen together", (long long)l->tokens);
    mt_rd_text_fit(cr, px, py + 19, w, buf);
    draw_cells(cr, g, l, hx, hy);
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    mt_rd_font(cr, 10, 0);
    mt_rd_cell_axes(cr, hx, hy, g->cell, g->cell, g->E, g->E, 3);
    mt_rd_font(cr, 11, 0);
    mt_rd_text_vertical(cr, px + 6, hy + g->side / 2, "expert i");
    mt_rd_text(cr, hx + g->side / 2, hy + g->side + 18, 0.5, 0, "also chose expert j");
    if (l->n_top) {
        pairs_text(l, 5, pairs, sizeof pairs);
        snprintf(buf, sizeof buf, "top pairs i→j: %s", pairs);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        mt_rd_text_fit(cr, px, hy + g->side + 36, w, buf);
    }
}

static void draw_coactivation(cairo_t *cr, const void *arg) {
    const coact_layout *g = arg;
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    draw_title(cr, g);
    for (int k = 0; k < g->c->n; k++) draw_panel(cr, g, k);
    const mt_per_token_dump *d = g->c->dump;
    double uniform = d->num_experts > 1 ? (double)(d->top_k - 1) / (d->num_experts - 1) : -1;
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    mt_rd_font(cr, 10, 0);
    mt_rd_colorbar(cr, g->cbx, g->y0 + HEAD_H, fmax(g->side, 120), g->vmax, g->step, "share", uniform, "uniform");
}

int mt_coactivation_render(const mt_coactivation *c, const char *out_path, mt_err *err) {
    if (mt_rd_check_ext(out_path, err)) return -1;
    coact_layout g;
    memset(&g, 0, sizeof g);
    g.c = c;
    make_layout(&g);
    return mt_rd_render_file(out_path, g.width, g.height, draw_coactivation, &g, err);
}
