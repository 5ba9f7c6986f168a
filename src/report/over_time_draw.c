/* Balancedness over time drawn (over_time.h): one column per window in time order; the measured
 * mean over MoE layers as a line with points over a band from the worst to the best layer, the
 * balancedness planned for a window as a diamond in its column, a dashed line where the placement
 * changed (labelled with the new one's source), and each window's tokens as a bar in a strip below. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cairo.h>

#include "report/over_time.h"
#include "report/report_draw.h"

static const double MEAN_RGB[3] = {0.15, 0.35, 0.65}, PLAN_RGB[3] = {0.90, 0.45, 0.10}, FEW_RGB[3] = {0.80, 0.25, 0.15};

typedef struct ot_layout {
    const mt_over_time *t;
    int slots;            /* windows, and one more for the last window's plan when it has one */
    double slot;          /* column width */
    int64_t few_below;    /* a window with fewer tokens (or none) is drawn as one of few tokens */
    double tok_top;       /* the token strip's top value */
    bool any_unplaced;    /* some window ran without a placement */
    double x0, py, ph, ty, th, width, height;
} ot_layout;

static double x_of(const ot_layout *g, int i) { return g->x0 + (i + 0.5) * g->slot; }
static double y_of(const ot_layout *g, double b) { return g->py + g->ph * (1 - b); }

static void set_rgb(cairo_t *cr, const double rgb[3]) { cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]); }

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static bool few_tokens(const ot_layout *g, const mt_ot_window *w) {
    return w->num_tokens == 0 || (w->num_tokens > 0 && w->num_tokens < g->few_below);
}

/* "HH:MM:SS" (time 1) or "YYYY-MM-DD HH:MM:SS" (time 0) of a stamp, UTC. */
static void stamp_text(int64_t ms, int time_only, char *buf, size_t n) {
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&s, &tm)) snprintf(buf, n, "?");
    else strftime(buf, n, time_only ? "%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
}

static int make_layout(const mt_over_time *t, ot_layout *g, mt_err *err) {
    memset(g, 0, sizeof *g);
    g->t = t;
    g->slots = t->n + !isnan(t->w[t->n - 1].planned_next);
    double plot_w = fmax(760, fmin(1000, 64.0 * g->slots));
    g->slot = plot_w / g->slots;
    int64_t *tok = malloc(sizeof *tok * (size_t)t->n), top = 0;
    if (!tok) return mt_errf(err, "out of memory");
    int known = 0;
    for (int i = 0; i < t->n; i++) {
        if (t->w[i].num_tokens >= 0) tok[known++] = t->w[i].num_tokens;
        if (t->w[i].num_tokens > top) top = t->w[i].num_tokens;
        if (!t->w[i].source[0]) g->any_unplaced = true;
    }
    qsort(tok, (size_t)known, sizeof *tok, cmp_i64);
    g->few_below = known ? (tok[known / 2] + 9) / 10 : 0; /* a tenth of the median */
    free(tok);
    g->tok_top = mt_rd_nice_ceil((double)(top > 0 ? top : 1));
    g->x0 = 76;
    g->py = 128;
    g->ph = 300;
    g->ty = g->py + g->ph + 22;
    g->th = 64;
    g->width = g->x0 + plot_w + 36;
    g->height = g->ty + g->th + 70;
    return 0;
}

static void draw_title(cairo_t *cr, const ot_layout *g) {
    const mt_over_time *t = g->t;
    const mt_ot_window *first = &t->w[0], *last = &t->w[t->n - 1];
    char buf[1200], a[40], b[40];
    double w = g->width - 32;
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    mt_rd_font(cr, 17, 1);
    if (t->n == 1)
        snprintf(buf, sizeof buf, "%s — balancedness of 1 window: %.3f%s", t->model[0] ? t->model : "(unnamed model)",
                 first->bal_mean, first->num_tokens == 0 ? " (no tokens)" : "");
    else
        snprintf(buf, sizeof buf, "%s — balancedness of %d windows: %.3f (first%s) → %.3f (last%s)",
                 t->model[0] ? t->model : "(unnamed model)", t->n, first->bal_mean,
                 first->num_tokens == 0 ? ", no tokens" : "", last->bal_mean, last->num_tokens == 0 ? ", no tokens" : "");
    mt_rd_text_fit(cr, 16, 12, w, buf);
    mt_rd_font(cr, 12, 0);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    int at = 0;
    if (t->by_stamp) {
        stamp_text(first->stamp_ms, 0, a, sizeof a);
        stamp_text(last->stamp_ms, 0, b, sizeof b);
        bool same_day = !strncmp(a, b, 10);
        at = t->n == 1 ? snprintf(buf, sizeof buf, "%s UTC · ", a)
                       : snprintf(buf, sizeof buf, "%s – %s UTC · ", a, same_day ? b + 11 : b);
    }
    snprintf(buf + at, sizeof buf - (size_t)at, "EP %d, measured under the placement each window ran%s", t->ep_size,
             g->any_unplaced ? " (without one: contiguous blocks of experts)" : "");
    mt_rd_text_fit(cr, 16, 36, w, buf);
    if (!t->by_stamp) {
        cairo_set_source_rgb(cr, 0.65, 0.2, 0.1);
        snprintf(buf, sizeof buf, "in the order given: %s has no <unix-ms> stamp in its name (expert_distribution_<ms>.json)",
                 t->unstamped);
        mt_rd_text_fit(cr, 16, 54, w, buf);
    }
}

static void diamond(cairo_t *cr, double x, double y, double r) {
    cairo_new_path(cr);
    cairo_move_to(cr, x, y - r);
    cairo_line_to(cr, x + r, y);
    cairo_line_to(cr, x, y + r);
    cairo_line_to(cr, x - r, y);
    cairo_close_path(cr);
}

/* The dashed line of a placement switch from y0 to y1 at x; thin and light when they are dense. */
static void switch_line(cairo_t *cr, double x, double y0, double y1, int dense) {
    static const double dash[] = {5, 3};
    cairo_new_path(cr);
    cairo_set_source_rgba(cr, 0.35, 0.35, 0.35, dense ? 0.35 : 1);
    cairo_set_line_width(cr, dense ? 0.7 : 1.2);
    cairo_set_dash(cr, dash, dense ? 0 : 2, 0);
    cairo_move_to(cr, x, y0);
    cairo_line_to(cr, x, y1);
    cairo_stroke(cr);
    cairo_set_dash(cr, NULL, 0, 0);
}

/* One legend entry: its mark drawn by the caller at (x, y), its text after it; returns where the next goes. */
static double legend_text(cairo_t *cr, double x, double y, const char *s) {
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    mt_rd_text(cr, x + 22, y, 0, 0.5, s);
    return x + 22 + mt_rd_text_width(cr, s) + 18;
}

/* Two rows: the measured and planned marks, then the switches and the windows of few tokens. */
static void draw_legend(cairo_t *cr) {
    double x = 16, y = 84;
    mt_rd_font(cr, 11, 0);
    cairo_set_source_rgba(cr, MEAN_RGB[0], MEAN_RGB[1], MEAN_RGB[2], 0.18);
    cairo_rectangle(cr, x, y - 6, 16, 12);
    cairo_fill(cr);
    set_rgb(cr, MEAN_RGB);
    cairo_set_line_width(cr, 2);
    cairo_move_to(cr, x, y);
    cairo_line_to(cr, x + 16, y);
    cairo_stroke(cr);
    cairo_new_path(cr);
    cairo_arc(cr, x + 8, y, 3.5, 0, 2 * M_PI);
    cairo_fill(cr);
    x = legend_text(cr, x, y, "measured, mean over MoE layers (band: worst to best layer)");
    set_rgb(cr, PLAN_RGB);
    diamond(cr, x + 8, y, 5);
    cairo_fill(cr);
    legend_text(cr, x, y, "planned for the window at the rebalance before it");
    x = 16;
    y += 18;
    switch_line(cr, x + 8, y - 7, y + 7, 0);
    x = legend_text(cr, x, y, "placement switched (its source)");
    set_rgb(cr, FEW_RGB);
    cairo_set_line_width(cr, 1.5);
    cairo_new_path(cr); /* text leaves a current point */
    cairo_arc(cr, x + 8, y, 3.5, 0, 2 * M_PI);
    cairo_stroke(cr);
    legend_text(cr, x, y, "few tokens (< 1/10 of the median)");
}

static void draw_axes(cairo_t *cr, const ot_layout *g) {
    char buf[16];
    double right = g->x0 + g->slots * g->slot;
    mt_rd_font(cr, 11, 0);
    for (int k = 0; k <= 5; k++) {
        double y = y_of(g, k / 5.0);
        cairo_set_source_rgb(cr, 0.88, 0.88, 0.88);
        cairo_set_line_width(cr, 1);
        cairo_move_to(cr, g->x0, y);
        cairo_line_to(cr, right, y);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
        snprintf(buf, sizeof buf, "%.1f", k / 5.0);
        mt_rd_text(cr, g->x0 - 6, y, 1, 0.5, buf);
    }
    if (g->slots > g->t->n) { /* the column of the last plan: after the windows */
        cairo_set_source_rgb(cr, 0.95, 0.95, 0.95);
        cairo_rectangle(cr, g->x0 + g->t->n * g->slot, g->py, g->slot, g->ph);
        cairo_fill(cr);
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_rectangle(cr, g->x0 - 0.5, g->py - 0.5, right - g->x0 + 1, g->ph + 1);
    cairo_stroke(cr);
    mt_rd_font(cr, 12, 1);
    mt_rd_text_vertical(cr, 24, g->py + g->ph / 2, "balancedness (mean / max GPU load)");
}

/* The switches: a dashed line before each window whose placement changed, its source beside it
 * (skipped where it would overlap the label before); the first window's placement at the left. */
static void draw_switches(cairo_t *cr, const ot_layout *g) {
    const mt_over_time *t = g->t;
    double last = -1e9;
    mt_rd_font(cr, 10, 0);
    if (t->w[0].source[0]) {
        cairo_set_source_rgb(cr, 0.5, 0.5, 0.5);
        mt_rd_text_vertical(cr, g->x0 + 7, g->py + 4 + mt_rd_text_width(cr, t->w[0].source) / 2, t->w[0].source);
        last = g->x0;
    }
    for (int i = 1; i < t->n; i++) {
        if (!t->w[i].placement_changed) continue;
        double x = g->x0 + i * g->slot;
        switch_line(cr, x, g->py, g->ty + g->th, g->slot < 6);
        if (x - last < 14) continue;
        cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
        mt_rd_text_vertical(cr, x + 7, g->py + 4 + mt_rd_text_width(cr, t->w[i].source) / 2, t->w[i].source);
        last = x;
    }
}

static void draw_series(cairo_t *cr, const ot_layout *g) {
    const mt_over_time *t = g->t;
    int n = t->n;
    /* the band of the layers (a new path: text leaves a current point) */
    cairo_new_path(cr);
    cairo_set_source_rgba(cr, MEAN_RGB[0], MEAN_RGB[1], MEAN_RGB[2], 0.18);
    if (n == 1) {
        cairo_rectangle(cr, x_of(g, 0) - g->slot / 4, y_of(g, t->w[0].bal_max), g->slot / 2,
                        y_of(g, t->w[0].bal_min) - y_of(g, t->w[0].bal_max));
    } else {
        for (int i = 0; i < n; i++) cairo_line_to(cr, x_of(g, i), y_of(g, t->w[i].bal_min));
        for (int i = n - 1; i >= 0; i--) cairo_line_to(cr, x_of(g, i), y_of(g, t->w[i].bal_max));
        cairo_close_path(cr);
    }
    cairo_fill(cr);
    /* the mean: a line and its points, hollow for windows of few tokens */
    cairo_new_path(cr);
    set_rgb(cr, MEAN_RGB);
    cairo_set_line_width(cr, 2);
    for (int i = 0; i < n; i++) cairo_line_to(cr, x_of(g, i), y_of(g, t->w[i].bal_mean));
    cairo_stroke(cr);
    double r = fmax(1.5, fmin(4, g->slot * 0.2));
    for (int i = 0; i < n; i++) {
        cairo_new_sub_path(cr);
        cairo_arc(cr, x_of(g, i), y_of(g, t->w[i].bal_mean), r, 0, 2 * M_PI);
        if (few_tokens(g, &t->w[i])) {
            cairo_set_source_rgb(cr, 1, 1, 1);
            cairo_fill_preserve(cr);
            set_rgb(cr, FEW_RGB);
            cairo_set_line_width(cr, 1.5);
            cairo_stroke(cr);
            set_rgb(cr, MEAN_RGB);
        } else {
            cairo_fill(cr);
        }
    }
    /* what the rebalance at window i planned, in the column of window i + 1, tied to what it measured */
    double dr = fmax(2.5, fmin(6, g->slot * 0.28));
    for (int i = 0; i < n; i++) {
        if (isnan(t->w[i].planned_next)) continue;
        double x = x_of(g, i + 1), y = y_of(g, t->w[i].planned_next);
        if (i + 1 < n) {
            static const double dot[] = {1.5, 2};
            set_rgb(cr, PLAN_RGB);
            cairo_set_line_width(cr, 1);
            cairo_set_dash(cr, dot, 2, 0);
            cairo_move_to(cr, x, y);
            cairo_line_to(cr, x, y_of(g, t->w[i + 1].bal_mean));
            cairo_stroke(cr);
            cairo_set_dash(cr, NULL, 0, 0);
        }
        set_rgb(cr, PLAN_RGB);
        diamond(cr, x, y, dr);
        cairo_fill_preserve(cr);
        cairo_set_source_rgb(cr, 0.45, 0.2, 0.0);
        cairo_set_line_width(cr, 0.8);
        cairo_stroke(cr);
    }
}

/* A token count as a short label (k, M). */
static void count_text(double v, char *buf, size_t n) {
    if (v >= 1e6) snprintf(buf, n, "%gM", v / 1e6);
    else if (v >= 1e4) snprintf(buf, n, "%gk", v / 1e3);
    else snprintf(buf, n, "%g", v);
}

static void draw_tokens(cairo_t *cr, const ot_layout *g) {
    const mt_over_time *t = g->t;
    char buf[32];
    cairo_set_source_rgb(cr, 0.97, 0.97, 0.97);
    cairo_rectangle(cr, g->x0, g->ty, t->n * g->slot, g->th);
    cairo_fill(cr);
    double bw = fmin(40, fmax(1, g->slot * 0.6));
    mt_rd_font(cr, 9, 0);
    for (int i = 0; i < t->n; i++) {
        const mt_ot_window *w = &t->w[i];
        if (w->num_tokens < 0) {
            cairo_set_source_rgb(cr, 0.5, 0.5, 0.5);
            if (g->slot >= 8) mt_rd_text(cr, x_of(g, i), g->ty + g->th - 2, 0.5, 1, "?");
            continue;
        }
        double h = g->th * (double)w->num_tokens / g->tok_top;
        if (few_tokens(g, w)) set_rgb(cr, FEW_RGB);
        else cairo_set_source_rgb(cr, 0.55, 0.58, 0.62);
        cairo_rectangle(cr, x_of(g, i) - bw / 2, g->ty + g->th - fmax(h, 1), bw, fmax(h, 1));
        cairo_fill(cr);
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, g->x0 - 0.5, g->ty - 0.5, t->n * g->slot + 1, g->th + 1);
    cairo_stroke(cr);
    mt_rd_font(cr, 10, 0);
    count_text(g->tok_top, buf, sizeof buf);
    mt_rd_text(cr, g->x0 - 6, g->ty, 1, 0.5, buf);
    mt_rd_text(cr, g->x0 - 6, g->ty + g->th, 1, 0.5, "0");
    mt_rd_font(cr, 11, 1);
    mt_rd_text_vertical(cr, 24, g->ty + g->th / 2, "tokens");
}

/* Below the strip: every few columns, the window's index and its time of day. */
static void draw_x_labels(cairo_t *cr, const ot_layout *g) {
    const mt_over_time *t = g->t;
    char buf[40];
    double y = g->ty + g->th + 5;
    mt_rd_font(cr, 10, 0);
    int step = mt_rd_tick_step(g->slot, mt_rd_text_width(cr, "00:00:00") + 8, 0);
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    for (int i = 0; i < t->n; i += step) {
        snprintf(buf, sizeof buf, "#%d", i);
        mt_rd_text(cr, x_of(g, i), y, 0.5, 0, buf);
        if (t->w[i].stamp_ms < 0) continue;
        stamp_text(t->w[i].stamp_ms, 1, buf, sizeof buf);
        mt_rd_text(cr, x_of(g, i), y + 13, 0.5, 0, buf);
    }
    if (g->slots > t->n) mt_rd_text(cr, x_of(g, t->n), y, 0.5, 0, "next");
    mt_rd_font(cr, 12, 1);
    mt_rd_text(cr, g->x0 + g->slots * g->slot / 2, y + 32, 0.5, 0,
               t->by_stamp ? "window (index, time of day UTC of its dump)" : "window (index, in the order given)");
}

static void draw_over_time(cairo_t *cr, const void *arg) {
    const ot_layout *g = arg;
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    draw_title(cr, g);
    draw_legend(cr);
    draw_axes(cr, g);
    draw_tokens(cr, g);
    draw_switches(cr, g);
    draw_series(cr, g);
    draw_x_labels(cr, g);
}

int mt_over_time_render(const mt_over_time *t, const char *out_path, mt_err *err) {
    if (mt_rd_check_ext(out_path, err)) return -1;
    if (t->n < 1) return mt_errf(err, "%s: no window to draw", out_path);
    ot_layout g;
    if (make_layout(t, &g, err)) return -1;
    return mt_rd_render_file(out_path, g.width, g.height, draw_over_time, &g, err);
}
