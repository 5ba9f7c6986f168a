/* Expert lift per group of requests, drawn with Cairo: see usage_report.h. */
#include "report/usage_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "report/report_draw.h"

#define LIFT_LOG2_MAX 3.0 /* the colour scale spans lifts 1/8 .. 8 */

typedef struct usage_layout {
    const mt_usage_groups *u;
    const char *title;
    double *divergence; /* [num_groups] mean over MoE layers, -1 where no layer has one */
    double cw, ch, x0, y0, W, H, panel, width, height;
} usage_layout;

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

static void draw_title(cairo_t *cr, const usage_layout *g) {
    char buf[256];
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    mt_rd_font(cr, 17, 1);
    mt_rd_text_fit(cr, 16, 12, g->width - 32, g->title);
    mt_rd_font(cr, 12, 0);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    snprintf(buf, sizeof buf,
             "lift: a group's share of each layer's routed tokens over the whole traffic's share · %d group%s · %d experts",
             g->u->num_groups, g->u->num_groups == 1 ? "" : "s", g->u->num_experts);
    mt_rd_text(cr, 16, 36, 0, 0, buf);
}

/* Group k's line under its name: its requests and tokens where known, its mean divergence where
 * it has one, joined by " · ". */
static void group_stats(const usage_layout *g, int k, char *buf, size_t size) {
    const mt_usage_groups *u = g->u;
    char part[3][96];
    int n = 0;
    if (u->requests)
        snprintf(part[n++], sizeof part[0], "%lld request%s", (long long)u->requests[k], u->requests[k] == 1 ? "" : "s");
    if (u->tokens[k] >= 0)
        snprintf(part[n++], sizeof part[0], "%lld token%s", (long long)u->tokens[k], u->tokens[k] == 1 ? "" : "s");
    if (g->divergence[k] >= 0)
        snprintf(part[n++], sizeof part[0], "divergence from the rest %.3f bits (mean over layers)", g->divergence[k]);
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? " · " : "", part[i]);
}

static void draw_group(cairo_t *cr, const usage_layout *g, int k, double top) {
    const mt_usage_groups *u = g->u;
    int L = u->num_layers, E = u->num_experts;
    char buf[320];
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    mt_rd_font(cr, 13, 1);
    mt_rd_text_fit(cr, g->x0, top, g->width - g->x0 - 16, u->names[k]);   // labels run up to 200 bytes
    mt_rd_font(cr, 11, 0);
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    group_stats(g, k, buf, sizeof buf);
    mt_rd_text(cr, g->x0, top + 17, 0, 0, buf);

    double y0 = top + 36;
    double rgb[3];
    for (int l = 0; l < L; l++) {
        double y = y0 + l * g->ch;
        if (!u->layer_is_moe[l]) {
            cairo_set_source_rgb(cr, 0.93, 0.93, 0.93);
            cairo_rectangle(cr, g->x0, y, g->W, g->ch);
            cairo_fill(cr);
            if (g->ch >= 9) {
                cairo_set_source_rgb(cr, 0.45, 0.45, 0.45);
                mt_rd_font(cr, fmin(10, g->ch - 1), 0);
                mt_rd_text(cr, g->x0 + g->W / 2, y + g->ch / 2, 0.5, 0.5, "dense layer");
            }
            continue;
        }
        for (int e = 0; e < E; e++) {
            double lift = mt_usage_lift(u, k, l, e);
            if (lift < 0) {
                rgb[0] = rgb[1] = rgb[2] = 0.80;
            } else {
                double t = lift > 0 ? log2(lift) : -LIFT_LOG2_MAX;
                mt_rd_colormap_diverging(0.5 + 0.5 * clampd(t, -LIFT_LOG2_MAX, LIFT_LOG2_MAX) / LIFT_LOG2_MAX, rgb);
            }
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_rectangle(cr, g->x0 + e * g->cw, y, g->cw, g->ch);
            cairo_fill(cr);
        }
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, g->x0 - 0.5, y0 - 0.5, g->W + 1, g->H + 1);
    cairo_stroke(cr);
    mt_rd_font(cr, 10, 0);
    mt_rd_cell_axes(cr, g->x0, y0, g->cw, g->ch, E, L, 3);
    mt_rd_font(cr, 11, 0);
    mt_rd_text_vertical(cr, 20, y0 + g->H / 2, "layer");
}

/* A horizontal colour bar under the title: lift 1/8 .. 8 on a log scale. */
static void draw_colorbar(cairo_t *cr, const usage_layout *g) {
    double rgb[3], x0 = g->x0 + 40, y0 = 58, w = 300, h = 10;
    int steps = (int)w;
    for (int k = 0; k < steps; k++) {
        mt_rd_colormap_diverging((k + 0.5) / steps, rgb);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, x0 + k * w / steps, y0, w / steps + 0.5, h);
        cairo_fill(cr);
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, x0 - 0.5, y0 - 0.5, w + 1, h + 1);
    cairo_stroke(cr);
    static const char *const labels[] = {"≤ 1/8", "1/4", "1/2", "1", "2", "4", "≥ 8"};
    mt_rd_font(cr, 10, 0);
    for (int k = 0; k <= 6; k++) {
        double x = x0 + w * k / 6.0;
        cairo_move_to(cr, x, y0 + h);
        cairo_line_to(cr, x, y0 + h + 3);
        cairo_stroke(cr);
        mt_rd_text(cr, x, y0 + h + 5, 0.5, 0, labels[k]);
    }
    mt_rd_font(cr, 11, 0);
    mt_rd_text(cr, x0 - 8, y0 + h / 2, 1, 0.5, "lift");
    cairo_set_source_rgb(cr, 0.80, 0.80, 0.80);
    cairo_rectangle(cr, x0 + w + 24, y0, 14, h);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    mt_rd_text(cr, x0 + w + 42, y0 + h / 2, 0, 0.5, "no token used the expert");
}

static void draw_all(cairo_t *cr, const void *arg) {
    const usage_layout *g = arg;
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    draw_title(cr, g);
    for (int k = 0; k < g->u->num_groups; k++) draw_group(cr, g, k, g->y0 + k * g->panel);
    draw_colorbar(cr, g);
}

int mt_usage_report_render(const mt_usage_groups *u, const char *title, const char *out_path, mt_err *err) {
    if (u->num_groups < 1 || u->num_layers < 1 || u->num_experts < 1)
        return mt_errf(err, "%s: nothing to draw (no groups, layers or experts)", out_path);
    if (mt_rd_check_ext(out_path, err)) return -1;
    usage_layout g = {.u = u, .title = title ? title : "expert use by group"};
    g.cw = clampd(640.0 / u->num_experts, 3, 32);
    g.ch = clampd(240.0 / u->num_layers, 3, 24);
    g.x0 = 64;
    g.y0 = 96;
    g.W = g.cw * u->num_experts;
    g.H = g.ch * u->num_layers;
    g.panel = 36 + g.H + 22 + 14;
    g.width = fmax(g.x0 + g.W + 24, 720);
    g.height = g.y0 + u->num_groups * g.panel + 8;
    if (g.height > 32000) return mt_errf(err, "%s: %d groups are too many to draw", out_path, u->num_groups);
    int64_t *rest = malloc((size_t)u->num_experts * sizeof *rest);
    g.divergence = malloc((size_t)u->num_groups * sizeof *g.divergence);
    if (!rest || !g.divergence) {
        free(rest);
        free(g.divergence);
        return mt_errf(err, "%s: out of memory", out_path);
    }
    for (int k = 0; k < u->num_groups; k++) g.divergence[k] = mt_usage_divergence_mean(u, k, rest);
    free(rest);
    int rc = mt_rd_render_file(out_path, g.width, g.height, draw_all, &g, err);
    free(g.divergence);
    return rc;
}
