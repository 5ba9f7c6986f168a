/* Vocabulary specialisation drawn (token_specialisation.h): per layer, a table of its experts, most
 * specialised first, each with its score and its top tokens and their shares. */
#include "report/token_specialisation.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cairo.h>

#include "report/coactivation.h"
#include "report/report_draw.h"

enum { ROW_H = 18, HEAD_H = 46, ID_W = 40, BAR_W = 52, TOKENS_X = 136, CELL_W = 112 };

/* What the picture shows, computed once. */
typedef struct tspec_layout {
    const mt_token_spec *s;
    int E, shown;        /* experts, rows drawn per layer */
    int cols, rows;      /* the grid of panels */
    int *order;          /* [n, E] each layer's experts, most specialised first */
    double pw, ph, x0, y0, width, height;
    char layers[256];    /* "layers 0, 5, 11 of 12 MoE layers" */
} tspec_layout;

/* An expert and its score, to sort by. */
typedef struct ranked_expert {
    double score;
    int e;
} ranked_expert;

/* Higher score first, experts without a score last, then by id. */
static int cmp_expert(const void *a, const void *b) {
    const ranked_expert *x = a, *y = b;
    if (isnan(x->score) != isnan(y->score)) return isnan(x->score) ? 1 : -1;
    if (!isnan(x->score) && x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->e > y->e) - (x->e < y->e);
}

static int make_layout(tspec_layout *g, mt_err *err) {
    const mt_token_spec *s = g->s;
    const mt_per_token_dump *d = s->dump;
    g->E = d->num_experts;
    g->shown = g->E < MT_TOKEN_SPEC_MAX_ROWS ? g->E : MT_TOKEN_SPEC_MAX_ROWS;
    ranked_expert *r = malloc(sizeof *r * (size_t)g->E);
    if (!r || !(g->order = malloc(sizeof *g->order * (size_t)(s->n ? s->n : 1) * (size_t)g->E))) {
        free(r);
        return mt_errf(err, "out of memory");
    }
    for (int k = 0; k < s->n; k++) {
        for (int e = 0; e < g->E; e++) r[e] = (ranked_expert){s->layers[k].experts[e].score, e};
        qsort(r, (size_t)g->E, sizeof *r, cmp_expert);
        for (int e = 0; e < g->E; e++) g->order[(size_t)k * g->E + e] = r[e].e;
    }
    free(r);
    g->cols = s->n <= 1 ? 1 : 2;
    g->rows = (s->n + g->cols - 1) / g->cols;
    g->pw = TOKENS_X + MT_TOKEN_SPEC_DRAWN * CELL_W + 24;
    g->ph = HEAD_H + g->shown * ROW_H + (g->shown < g->E ? 22 : 0) + 24;
    g->x0 = 16;
    g->y0 = d->dropped_tokens ? MT_RD_TITLE_WARN_H : MT_RD_TITLE_H;
    g->width = fmax(g->x0 + g->cols * g->pw, 980); /* the title's lines whole, for one layer too */
    g->height = g->y0 + fmax(g->rows, 1) * g->ph;
    int first[24];
    for (int k = 0; k < s->n && k < 24; k++) first[k] = s->layers[k].layer;
    mt_analysis_layers_text(d, first, s->n < 24 ? s->n : 24, s->n, g->layers, sizeof g->layers);
    return 0;
}

static void draw_title(cairo_t *cr, const tspec_layout *g) {
    const mt_token_spec *s = g->s;
    const mt_per_token_dump *d = s->dump;
    char title[512], sub[512], expl[512], warn[256];
    snprintf(title, sizeof title, "%s — vocabulary specialisation", d->model[0] ? d->model : "(unnamed model)");
    snprintf(sub, sizeof sub, "%lld tokens counted (the dump's rows) · %lld token ids, %lld ranked (seen at least %d "
             "times) · %s · %d experts, top-%d", (long long)d->rows, (long long)s->distinct_ids,
             (long long)s->ranked_ids, s->min_count, g->layers, d->num_experts, d->top_k);
    snprintf(expl, sizeof expl, "share: of a token id's occurrences, those whose top-%d included the expert (%.3g%% if "
             "routing ignored the token) · score: mean share of its top %d ids · most specialised first", d->top_k,
             100.0 * d->top_k / d->num_experts, MT_TOKEN_SPEC_TOP);
    snprintf(warn, sizeof warn, "%lld tokens were dropped by the recorder (it was full) and are not counted",
             (long long)d->dropped_tokens);
    mt_rd_title_block(cr, g->width - 32, title, sub, expl, d->dropped_tokens ? warn : NULL);
}

/* rgb lightened towards white, a background black text reads on. */
static void tint(double v, double rgb[3]) {
    mt_rd_colormap(v, rgb);
    for (int c = 0; c < 3; c++) rgb[c] = 0.55 + 0.45 * rgb[c];
}

/* One top token in its cell at (x, y): its text (or #id) and its share, on a background tinted by it. */
static void draw_token(cairo_t *cr, const tspec_layout *g, const mt_tspec_token *t, double x, double y) {
    double rgb[3];
    char label[512], fit[512], pct[16];
    tint(t->share, rgb);
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
    cairo_rectangle(cr, x, y + 1, CELL_W - 4, ROW_H - 2);
    cairo_fill(cr);
    const char *text = mt_token_spec_text(g->s, t->id);
    if (text) mt_request_trace_visible(text, label, sizeof label);
    else snprintf(label, sizeof label, "#%d", t->id);
    snprintf(pct, sizeof pct, "%.0f%%", 100 * t->share);
    cairo_set_source_rgb(cr, 0.08, 0.08, 0.08);
    mt_rd_font(cr, 11, 0);
    mt_rd_text(cr, x + 4, y + ROW_H / 2.0, 0, 0.5, mt_rd_fit(cr, label, CELL_W - 44, fit, sizeof fit));
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    mt_rd_font(cr, 9, 0);
    mt_rd_text(cr, x + CELL_W - 8, y + ROW_H / 2.0, 1, 0.5, pct);
}

/* Expert e's row at y: its id, its score as a bar and a number, its first top tokens. */
static void draw_expert(cairo_t *cr, const tspec_layout *g, const mt_tspec_expert *x, int e, double px, double y) {
    double rgb[3];
    char buf[96];
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    mt_rd_font(cr, 11, 1);
    snprintf(buf, sizeof buf, "%d", e);
    mt_rd_text(cr, px + ID_W - 6, y + ROW_H / 2.0, 1, 0.5, buf);
    cairo_set_source_rgb(cr, 0.92, 0.92, 0.92);
    cairo_rectangle(cr, px + ID_W, y + 4, BAR_W, ROW_H - 8);
    cairo_fill(cr);
    mt_rd_font(cr, 10, 0);
    if (isnan(x->score)) {
        cairo_set_source_rgb(cr, 0.5, 0.5, 0.5);
        mt_rd_text(cr, px + ID_W + BAR_W + 6, y + ROW_H / 2.0, 0, 0.5, "—");
        snprintf(buf, sizeof buf, "no ranked token id was routed here (%lld tokens)", (long long)x->tokens);
        mt_rd_text(cr, px + TOKENS_X + 4, y + ROW_H / 2.0, 0, 0.5, buf);
        return;
    }
    mt_rd_colormap(x->score, rgb);
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
    cairo_rectangle(cr, px + ID_W, y + 4, BAR_W * x->score, ROW_H - 8);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    snprintf(buf, sizeof buf, "%.2f", x->score);
    mt_rd_text(cr, px + ID_W + BAR_W + 6, y + ROW_H / 2.0, 0, 0.5, buf);
    for (int i = 0; i < x->n_top && i < MT_TOKEN_SPEC_DRAWN; i++)
        draw_token(cr, g, &x->top[i], px + TOKENS_X + i * CELL_W, y);
}

static void draw_panel(cairo_t *cr, const tspec_layout *g, int k) {
    const mt_tspec_layer *l = &g->s->layers[k];
    double px = g->x0 + (k % g->cols) * g->pw, py = g->y0 + (k / g->cols) * g->ph;
    char buf[256];
    int scored = 0;
    for (int e = 0; e < g->E; e++) scored += l->experts[e].n_top > 0;
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    mt_rd_font(cr, 13, 1);
    snprintf(buf, sizeof buf, "layer %d", l->layer);
    mt_rd_text(cr, px, py, 0, 0, buf);
    double after = px + mt_rd_text_width(cr, buf) + 12;
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    mt_rd_font(cr, 11, 0);
    if (scored)
        snprintf(buf, sizeof buf, "mean score %.2f · %d of %d experts reached by ranked ids", l->mean_score, scored, g->E);
    else
        snprintf(buf, sizeof buf, "no ranked token id (seen at least %d times) in the dump", g->s->min_count);
    mt_rd_text_fit(cr, after, py + 1, g->pw - (after - px) - 24, buf);
    mt_rd_font(cr, 10, 1);
    double hy = py + HEAD_H - 6;
    mt_rd_text(cr, px + ID_W - 6, hy, 1, 1, "expert");
    mt_rd_text(cr, px + ID_W, hy, 0, 1, "score");
    mt_rd_text(cr, px + TOKENS_X + 4, hy, 0, 1, g->s->text ? "top tokens (share)" : "top token ids (share)");
    const int *order = g->order + (size_t)k * g->E;
    for (int r = 0; r < g->shown; r++) {
        double y = py + HEAD_H + r * ROW_H;
        if (r % 2) {
            cairo_set_source_rgb(cr, 0.975, 0.975, 0.975);
            cairo_rectangle(cr, px, y, g->pw - 24, ROW_H);
            cairo_fill(cr);
        }
        draw_expert(cr, g, &l->experts[order[r]], order[r], px, y);
    }
    if (g->shown < g->E) {
        cairo_set_source_rgb(cr, 0.65, 0.2, 0.1);
        mt_rd_font(cr, 11, 0);
        snprintf(buf, sizeof buf, "the %d most specialised of %d experts are drawn; the .json output has them all",
                 g->shown, g->E);
        mt_rd_text(cr, px, py + HEAD_H + g->shown * ROW_H + 6, 0, 0, buf);
    }
}

static void draw_spec(cairo_t *cr, const void *arg) {
    const tspec_layout *g = arg;
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    draw_title(cr, g);
    for (int k = 0; k < g->s->n; k++) draw_panel(cr, g, k);
}

int mt_token_spec_render(const mt_token_spec *s, const char *out_path, mt_err *err) {
    if (mt_rd_check_ext(out_path, err)) return -1;
    tspec_layout g;
    memset(&g, 0, sizeof g);
    g.s = s;
    int rc = make_layout(&g, err);
    if (rc == 0) rc = mt_rd_render_file(out_path, g.width, g.height, draw_spec, &g, err);
    free(g.order);
    return rc;
}
