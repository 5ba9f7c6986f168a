/* One request's routing drawn (request_trace.h): its layers x experts heatmap over a grid of its
 * tokens coloured by their top-1 expert at every layer. */
#include "report/request_trace.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cairo.h>

#include "report/report_draw.h"
#include "util/strbuf.h"

void mt_request_trace_expert_rgb(int e, double rgb[3]) {
    static const double VALUE[3] = {0.93, 0.76, 0.58}, SAT[3] = {0.55, 0.75, 0.80};
    double h = fmod(e * 137.50776405003785, 360.0) / 60.0, v = VALUE[e % 3], s = SAT[e % 3];
    double c = v * s, x = c * (1 - fabs(fmod(h, 2.0) - 1)), m = v - c;
    double r = 0, g = 0, b = 0;
    switch ((int)h) {
    case 0: r = c, g = x; break;
    case 1: r = x, g = c; break;
    case 2: g = c, b = x; break;
    case 3: g = x, b = c; break;
    case 4: r = x, b = c; break;
    default: r = c, b = x; break;
    }
    rgb[0] = r + m;
    rgb[1] = g + m;
    rgb[2] = b + m;
}

/* What the picture shows, computed once. */
typedef struct trace_layout {
    const mt_request_trace *t;
    int64_t shown;        /* token rows drawn */
    int n_rows;           /* rows of the grid: tokens drawn and one per gap before or between them */
    int64_t *row_token;   /* [n_rows] token of each row, or -1 - gap for a gap's row */
    double *share;        /* [L, E] share of the request's tokens routed to expert e at layer l */
    double vmax, step;    /* colour scale of the heatmap */
    char note[512];       /* what is missing or cut, "" when nothing */
    /* geometry */
    double cw, ch, eh;    /* layer column, token row, expert row */
    double x0, label_x, pos_w, label_w;
    double hy, gy;        /* heatmap top, grid top */
    double cbx, width, height;
} trace_layout;

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* "a–b" or "a" into buf. */
static void range_text(char *buf, size_t n, int32_t a, int32_t b) {
    if (a == b) snprintf(buf, n, "%d", a);
    else snprintf(buf, n, "%d–%d", a, b);
}

static void make_note(trace_layout *g) {
    const mt_request_trace *t = g->t;
    mt_strbuf b = {0};
    if (t->n_gaps) {
        mt_strbuf_puts(&b, t->n_gaps > 1 || t->gap_first[0] != t->gap_last[0] ? "positions " : "position ");
        for (int64_t k = 0; k < t->n_gaps && k < 4; k++) {
            char r[48];
            range_text(r, sizeof r, t->gap_first[k], t->gap_last[k]);
            mt_strbuf_printf(&b, "%s%s", k ? ", " : "", r);
        }
        if (t->n_gaps > 4) mt_strbuf_printf(&b, " and %lld more runs", (long long)(t->n_gaps - 4));
        mt_strbuf_puts(&b, t->dropped_tokens ? " not recorded: prefix cache, outside the recording, or dropped (the "
                                               "recorder was full)"
                                             : " not recorded: prefix cache or outside the recording");
    }
    if (g->shown < t->n)
        mt_strbuf_printf(&b, "%sthe grid shows the first %lld of %lld tokens (the .json output has all)",
                         b.len ? " · " : "", (long long)g->shown, (long long)t->n);
    snprintf(g->note, sizeof g->note, "%s", b.data ? b.data : "");
    mt_strbuf_free(&b);
}

/* The grid's rows: tokens in position order, a gap's row where positions are missing before one. */
static int make_rows(trace_layout *g, mt_err *err) {
    const mt_request_trace *t = g->t;
    g->shown = t->n < MT_REQUEST_TRACE_MAX_ROWS ? t->n : MT_REQUEST_TRACE_MAX_ROWS;
    g->row_token = malloc(sizeof(int64_t) * (size_t)(2 * g->shown + 1));
    if (!g->row_token) return mt_errf(err, "out of memory");
    int64_t gap = 0;
    for (int64_t i = 0; i < g->shown; i++) {
        while (gap < t->n_gaps && t->gap_last[gap] < t->position[i]) g->row_token[g->n_rows++] = -1 - gap++;
        g->row_token[g->n_rows++] = i;
    }
    return 0;
}

static int make_shares(trace_layout *g, mt_err *err) {
    const mt_request_trace *t = g->t;
    int L = t->num_hidden_layers, E = t->num_experts, K = t->top_k;
    g->share = calloc((size_t)L * (size_t)E, sizeof(double));
    if (!g->share) return mt_errf(err, "out of memory");
    for (int64_t i = 0; i < t->n; i++)
        for (int l = 0; l < L; l++)
            for (int k = 0; k < K; k++) {
                int32_t e = t->experts[((size_t)i * L + l) * K + k];
                if (t->layer_is_moe[l] && e >= 0 && e < E) g->share[(size_t)l * E + e] += 1.0 / (double)t->n;
            }
    double top = 0;
    for (size_t c = 0; c < (size_t)L * E; c++) top = fmax(top, g->share[c]);
    g->step = mt_rd_nice_ceil(fmax(top, 0.01) / 4);
    g->vmax = fmin(1.0, g->step * ceil(fmax(top, 0.01) / g->step - 1e-9));
    return 0;
}

static void make_geometry(trace_layout *g) {
    const mt_request_trace *t = g->t;
    int L = t->num_hidden_layers, E = t->num_experts;
    g->cw = L <= 8 ? 48 : clampd(floor(960.0 / L), 6, 48);
    g->ch = g->n_rows > 256 ? 14 : 16;
    g->eh = clampd(floor(480.0 / E), 3, 16);
    g->pos_w = 46;
    g->label_w = t->text ? 140 : 64;
    g->label_x = 16;
    g->x0 = g->label_x + g->pos_w + 8 + g->label_w + 8;
    g->hy = 118;
    g->gy = g->hy + E * g->eh + 82;
    g->cbx = g->x0 + L * g->cw + 24;
    g->width = fmax(g->cbx + 16 + 80, 760);
    g->height = g->gy + fmax(g->n_rows, 1) * g->ch + (g->n_rows > 40 ? 40 : 16) + (g->shown < t->n ? 24 : 0);
}

static void layout_free(trace_layout *g) {
    free(g->row_token);
    free(g->share);
}

/* Black or white, whichever reads on rgb. */
static void text_colour_on(cairo_t *cr, const double rgb[3]) {
    double lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2];
    if (lum > 0.5) cairo_set_source_rgb(cr, 0, 0, 0);
    else cairo_set_source_rgb(cr, 1, 1, 1);
}

static void draw_title(cairo_t *cr, const trace_layout *g) {
    const mt_request_trace *t = g->t;
    char buf[1024], dom[320] = "";
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    mt_rd_font(cr, 17, 1);
    snprintf(buf, sizeof buf, "%s — request %s", t->model[0] ? t->model : "(unnamed model)", t->request_id);
    mt_rd_text_fit(cr, 16, 12, g->width - 32, buf);
    mt_rd_font(cr, 12, 0);
    if (t->domain) snprintf(dom, sizeof dom, "domain %s · ", t->domain);
    if (t->n)
        snprintf(buf, sizeof buf, "%s%lld tokens (positions %d–%d) · %d MoE of %d layers · %d experts, top-%d", dom,
                 (long long)t->n, t->position[0], t->position[t->n - 1], t->num_moe_layers, t->num_hidden_layers,
                 t->num_experts, t->top_k);
    else
        snprintf(buf, sizeof buf, "%sno token of this request was recorded · %d MoE of %d layers · %d experts, top-%d",
                 dom, t->num_moe_layers, t->num_hidden_layers, t->num_experts, t->top_k);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    mt_rd_text_fit(cr, 16, 36, g->width - 32, buf);
    if (g->note[0]) {
        cairo_set_source_rgb(cr, 0.65, 0.2, 0.1);
        mt_rd_text_fit(cr, 16, 54, g->width - 32, g->note);
    }
}

/* Layer numbers centred on the columns, at y (top of the text). */
static void draw_layer_numbers(cairo_t *cr, const trace_layout *g, double y) {
    char buf[16];
    int step = mt_rd_tick_step(g->cw, 24, 0);
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    mt_rd_font(cr, 10, 0);
    for (int l = 0; l < g->t->num_hidden_layers; l += step) {
        snprintf(buf, sizeof buf, "%d", l);
        mt_rd_text(cr, g->x0 + (l + 0.5) * g->cw, y, 0.5, 0, buf);
    }
}

/* A dense layer's column: grey, labelled when tall and wide enough. */
static void draw_dense_column(cairo_t *cr, const trace_layout *g, int l, double y, double h, int label) {
    cairo_set_source_rgb(cr, 0.86, 0.86, 0.86);
    cairo_rectangle(cr, g->x0 + l * g->cw, y, g->cw, h);
    cairo_fill(cr);
    if (label && g->cw >= 12 && h >= 60) {
        cairo_set_source_rgb(cr, 0.4, 0.4, 0.4);
        mt_rd_font(cr, fmin(11, g->cw - 2), 0);
        mt_rd_text_vertical(cr, g->x0 + (l + 0.5) * g->cw, y + h / 2, "dense");
    }
}

/* A panel's bold heading at (x, y) and its explanation after it, in grey. */
static void draw_heading(cairo_t *cr, double x, double y, const char *heading, const char *explanation) {
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    mt_rd_font(cr, 13, 1);
    mt_rd_text(cr, x, y, 0, 0, heading);
    double after = x + mt_rd_text_width(cr, heading) + 12;
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    mt_rd_font(cr, 11, 0);
    mt_rd_text(cr, after, y + 1, 0, 0, explanation);
}

static void draw_heatmap(cairo_t *cr, const trace_layout *g) {
    const mt_request_trace *t = g->t;
    int L = t->num_hidden_layers, E = t->num_experts;
    double rgb[3], H = E * g->eh;
    draw_heading(cr, g->label_x, g->hy - 36, "Experts this request used",
                 "share of its tokens routed to each expert, per hidden layer (all top-k choices); white: unused");
    for (int l = 0; l < L; l++) {
        if (!t->layer_is_moe[l]) {
            draw_dense_column(cr, g, l, g->hy, H, 1);
            continue;
        }
        for (int e = 0; e < E; e++) {
            double s = g->share[(size_t)l * E + e];
            if (s > 0) mt_rd_colormap(s / g->vmax, rgb);
            else rgb[0] = rgb[1] = rgb[2] = 0.985;
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_rectangle(cr, g->x0 + l * g->cw, g->hy + e * g->eh, g->cw, g->eh);
            cairo_fill(cr);
        }
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, g->x0 - 0.5, g->hy - 0.5, L * g->cw + 1, H + 1);
    cairo_stroke(cr);
    /* each expert's colour in the grid below, beside its row: the grid's legend */
    for (int e = 0; e < E; e++) {
        mt_request_trace_expert_rgb(e, rgb);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, g->x0 - 12, g->hy + e * g->eh, 9, g->eh);
        cairo_fill(cr);
    }
    char buf[16];
    int step = mt_rd_tick_step(g->eh, 13, 0);
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    mt_rd_font(cr, 10, 0);
    for (int e = 0; e < E; e += step) {
        snprintf(buf, sizeof buf, "%d", e);
        mt_rd_text(cr, g->x0 - 15, g->hy + (e + 0.5) * g->eh, 1, 0.5, buf);
    }
    mt_rd_font(cr, 11, 1);
    mt_rd_text(cr, g->x0 - 3, g->hy - 4, 1, 1, "expert");
    draw_layer_numbers(cr, g, g->hy + H + 4);
    mt_rd_font(cr, 12, 1);
    mt_rd_text(cr, g->x0 + L * g->cw / 2, g->hy + H + 18, 0.5, 0, "hidden layer");
}

static void draw_colorbar(cairo_t *cr, const trace_layout *g) {
    double rgb[3], h = fmax(g->t->num_experts * g->eh, 100), y1 = g->hy + h;
    char buf[32];
    for (int k = 0; k < (int)h; k++) {
        mt_rd_colormap((k + 0.5) / h, rgb);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, g->cbx, y1 - k - 1, 16, 1.5);
        cairo_fill(cr);
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, g->cbx - 0.5, g->hy - 0.5, 17, h + 1);
    cairo_stroke(cr);
    mt_rd_font(cr, 10, 0);
    int nt = (int)floor(g->vmax / g->step + 0.5);
    for (int k = 0; k <= nt; k++) {
        double v = fmin(g->step * k, g->vmax), y = y1 - h * v / g->vmax;
        cairo_move_to(cr, g->cbx + 16, y);
        cairo_line_to(cr, g->cbx + 20, y);
        cairo_stroke(cr);
        snprintf(buf, sizeof buf, "%.3g%%", v * 100);
        mt_rd_text(cr, g->cbx + 22, y, 0, 0.5, buf);
    }
    mt_rd_text(cr, g->cbx, g->hy - 6, 0, 1, "of its tokens");
}

/* Token i's label: its position, then its text (whitespace made visible) or its id. */
static void draw_row_label(cairo_t *cr, const trace_layout *g, int64_t i, double y) {
    const mt_request_trace *t = g->t;
    char buf[32], vis[512], fit[512];
    cairo_set_source_rgb(cr, 0.45, 0.45, 0.45);
    mt_rd_font(cr, 10, 0);
    snprintf(buf, sizeof buf, "%d", t->position[i]);
    mt_rd_text(cr, g->label_x + g->pos_w, y + g->ch / 2, 1, 0.5, buf);
    if (t->text) mt_request_trace_visible(t->text[i], vis, sizeof vis);
    else snprintf(vis, sizeof vis, "%d", t->token_id[i]);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    mt_rd_font(cr, 11, 0);
    mt_rd_text(cr, g->label_x + g->pos_w + 8, y + g->ch / 2, 0, 0.5, mt_rd_fit(cr, vis, g->label_w, fit, sizeof fit));
}

static void draw_gap_row(cairo_t *cr, const trace_layout *g, int64_t gap, double y) {
    const mt_request_trace *t = g->t;
    char r[48], buf[128];
    double w = g->x0 + t->num_hidden_layers * g->cw - g->label_x;
    cairo_set_source_rgb(cr, 0.93, 0.90, 0.86);
    cairo_rectangle(cr, g->label_x, y + 1, w, g->ch - 2);
    cairo_fill(cr);
    range_text(r, sizeof r, t->gap_first[gap], t->gap_last[gap]);
    snprintf(buf, sizeof buf, "position%s %s not recorded", t->gap_first[gap] == t->gap_last[gap] ? "" : "s", r);
    cairo_set_source_rgb(cr, 0.45, 0.3, 0.2);
    mt_rd_font(cr, 10, 0);
    mt_rd_text(cr, g->label_x + 4, y + g->ch / 2, 0, 0.5, buf);
}

/* Token i's row at y: its label and its top-1 expert per layer (ids written in font id_font, 0: none). */
static void draw_token_row(cairo_t *cr, const trace_layout *g, int64_t i, double y, int id_font) {
    const mt_request_trace *t = g->t;
    int L = t->num_hidden_layers, K = t->top_k;
    double rgb[3];
    char buf[16];
    draw_row_label(cr, g, i, y);
    if (id_font) mt_rd_font(cr, id_font, 0);
    for (int l = 0; l < L; l++) {
        double x = g->x0 + l * g->cw;
        if (!t->layer_is_moe[l]) {
            draw_dense_column(cr, g, l, y, g->ch, 0);
            continue;
        }
        int32_t e = t->experts[((size_t)i * L + l) * K];
        if (e >= 0 && e < t->num_experts) mt_request_trace_expert_rgb(e, rgb);
        else rgb[0] = rgb[1] = rgb[2] = 1;
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, x, y, g->cw, g->ch);
        cairo_fill(cr);
        if (id_font) {
            text_colour_on(cr, rgb);
            snprintf(buf, sizeof buf, e >= 0 && e < t->num_experts ? "%d" : "?", e);
            mt_rd_text(cr, x + g->cw / 2, y + g->ch / 2, 0.5, 0.5, buf);
        }
    }
}

static void draw_grid(cairo_t *cr, const trace_layout *g) {
    const mt_request_trace *t = g->t;
    int L = t->num_hidden_layers;
    draw_heading(cr, g->label_x, g->gy - 40, "Top-1 expert of every token",
                 "colour: the expert's id (the strip beside the experts above)");
    mt_rd_font(cr, 10, 1);
    mt_rd_text(cr, g->label_x + g->pos_w, g->gy - 4, 1, 1, "pos");
    mt_rd_text(cr, g->label_x + g->pos_w + 8, g->gy - 4, 0, 1, t->text ? "token" : "token id");
    draw_layer_numbers(cr, g, g->gy - 16);
    /* expert ids in the cells, in the largest font of 9 down to 7 in which the widest fits */
    char widest[16];
    snprintf(widest, sizeof widest, "%d", t->num_experts - 1);
    int id_font = 0;
    for (int size = 9; size >= 7 && !id_font && g->ch >= 10; size--) {
        mt_rd_font(cr, size, 0);
        if (mt_rd_text_width(cr, widest) <= g->cw - 2) id_font = size;
    }
    for (int r = 0; r < g->n_rows; r++) {
        double y = g->gy + r * g->ch;
        int64_t k = g->row_token[r];
        if (k < 0) draw_gap_row(cr, g, -1 - k, y);
        else draw_token_row(cr, g, k, y, id_font);
    }
    if (g->cw >= 10 && g->ch >= 10) { /* white separators between the layers */
        cairo_set_source_rgba(cr, 1, 1, 1, 0.7);
        cairo_set_line_width(cr, 1);
        for (int l = 1; l < L; l++) {
            cairo_move_to(cr, g->x0 + l * g->cw, g->gy);
            cairo_line_to(cr, g->x0 + l * g->cw, g->gy + g->n_rows * g->ch);
        }
        cairo_stroke(cr);
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, g->x0 - 0.5, g->gy - 0.5, L * g->cw + 1, g->n_rows * g->ch + 1);
    cairo_stroke(cr);
    double bottom = g->gy + g->n_rows * g->ch + 4;
    if (g->n_rows > 40) draw_layer_numbers(cr, g, bottom);
    if (g->shown < t->n) {
        char buf[160];
        snprintf(buf, sizeof buf, "… %lld more tokens (positions %d–%d): the .json output has them all",
                 (long long)(t->n - g->shown), t->position[g->shown], t->position[t->n - 1]);
        cairo_set_source_rgb(cr, 0.65, 0.2, 0.1);
        mt_rd_font(cr, 11, 0);
        mt_rd_text(cr, g->label_x, bottom + 16, 0, 0, buf);
    }
}

static void draw_trace(cairo_t *cr, const void *arg) {
    const trace_layout *g = arg;
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    draw_title(cr, g);
    draw_heatmap(cr, g);
    draw_colorbar(cr, g);
    draw_grid(cr, g);
}

int mt_request_trace_render(const mt_request_trace *t, const char *out_path, mt_err *err) {
    if (mt_rd_check_ext(out_path, err)) return -1;
    trace_layout g;
    memset(&g, 0, sizeof g);
    g.t = t;
    int rc = make_rows(&g, err) || make_shares(&g, err) ? -1 : 0;
    if (rc == 0) {
        make_note(&g);
        make_geometry(&g);
        rc = mt_rd_render_file(out_path, g.width, g.height, draw_trace, &g, err);
    }
    layout_free(&g);
    return rc;
}
