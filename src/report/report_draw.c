/* Drawing helpers of the report: colour map, text anchoring, tick spacing. Text goes through
 * Pango, so a label in any script finds a font that has its characters (fontconfig's fallback)
 * and is shaped and ordered as the script needs (Arabic, Devanagari, right-to-left runs). */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cairo-svg.h>
#include <pango/pangocairo.h>

#include "report/report_draw.h"
#include "util/err.h"

/* Nine stops sampled from the viridis colour map (van der Walt & Smith, matplotlib's default map:
 * perceptually uniform, readable in grey and by colour-blind readers), interpolated linearly. */
static const double STOPS[9][3] = {
    {68, 1, 84},    {72, 40, 120},  {62, 74, 137},  {49, 104, 142}, {38, 130, 142},
    {31, 158, 137}, {53, 183, 121}, {109, 205, 89}, {253, 231, 37},
};

void mt_rd_colormap(double t, double rgb[3]) {
    if (!(t > 0)) t = 0;
    if (t > 1) t = 1;
    double x = t * 8;
    int i = (int)x;
    if (i >= 8) i = 7;
    double f = x - i;
    for (int c = 0; c < 3; c++) rgb[c] = (STOPS[i][c] * (1 - f) + STOPS[i + 1][c] * f) / 255.0;
}

/* ColorBrewer's 11-class RdBu (Cynthia Brewer, colorbrewer2.org), from blue to red, interpolated
 * linearly: a diverging map whose middle is near white. */
static const double DIVERGING[11][3] = {
    {5, 48, 97},     {33, 102, 172},  {67, 147, 195},  {146, 197, 222}, {209, 229, 240}, {247, 247, 247},
    {253, 219, 199}, {244, 165, 130}, {214, 96, 77},   {178, 24, 43},   {103, 0, 31},
};

void mt_rd_colormap_diverging(double t, double rgb[3]) {
    if (!(t > 0)) t = 0;
    if (t > 1) t = 1;
    double x = t * 10;
    int i = (int)x;
    if (i >= 10) i = 9;
    double f = x - i;
    for (int c = 0; c < 3; c++) rgb[c] = (DIVERGING[i][c] * (1 - f) + DIVERGING[i + 1][c] * f) / 255.0;
}

/* The text layout a cairo context carries (user data, made at its first text), with the font
 * mt_rd_font chose. */
static const cairo_user_data_key_t LAYOUT_KEY;

static void free_layout(void *layout) { g_object_unref(layout); }

static void set_font(PangoLayout *l, double size, int bold) {
    PangoFontDescription *d = pango_font_description_new();
    pango_font_description_set_family(d, "sans-serif");
    pango_font_description_set_weight(d, bold ? PANGO_WEIGHT_BOLD : PANGO_WEIGHT_NORMAL);
    pango_font_description_set_absolute_size(d, size * PANGO_SCALE);
    pango_layout_set_font_description(l, d);
    pango_font_description_free(d);
}

/* NULL only when Pango cannot make a layout (out of memory). */
static PangoLayout *layout_of(cairo_t *cr) {
    PangoLayout *l = cairo_get_user_data(cr, &LAYOUT_KEY);
    if (l) {
        pango_cairo_update_layout(cr, l); /* the current transformation (rotated labels) */
        return l;
    }
    if (!(l = pango_cairo_create_layout(cr))) return NULL;
    if (cairo_set_user_data(cr, &LAYOUT_KEY, l, free_layout) != CAIRO_STATUS_SUCCESS) {
        g_object_unref(l);
        return NULL;
    }
    set_font(l, 12, 0);
    return l;
}

void mt_rd_font(cairo_t *cr, double size, int bold) {
    PangoLayout *l = layout_of(cr);
    if (l) set_font(l, size, bold);
}

/* s laid out in the current font: its advance width and its baseline's distance from the top;
 * NULL when the context has no layout. */
static PangoLayout *lay_out(cairo_t *cr, const char *s, double *width, double *baseline) {
    PangoLayout *l = layout_of(cr);
    if (!l) return NULL;
    pango_layout_set_text(l, s, -1);
    PangoRectangle logical;
    pango_layout_get_extents(l, NULL, &logical);
    *width = (double)logical.width / PANGO_SCALE;
    *baseline = (double)pango_layout_get_baseline(l) / PANGO_SCALE;
    return l;
}

int mt_rd_missing_glyphs(cairo_t *cr, const char *s) {
    double w, base;
    PangoLayout *l = lay_out(cr, s, &w, &base);
    return l ? pango_layout_get_unknown_glyphs_count(l) : 0;
}

/* Said once a process: a label whose characters no installed font has is drawn with boxes. */
static void warn_missing_font(const char *s) {
    static atomic_flag said = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&said)) return;
    mt_log("report: no installed font has every character of \"%.60s\"; they are drawn as boxes "
           "(setup.sh installs fonts for Chinese, Japanese, Korean, Arabic, Hebrew, Devanagari and more)", s);
}

double mt_rd_text_width(cairo_t *cr, const char *s) {
    double w = 0, base;
    return lay_out(cr, s, &w, &base) ? w : 0;
}

void mt_rd_text(cairo_t *cr, double x, double y, double ax, double ay, const char *s) {
    double w, base;
    PangoLayout *l = lay_out(cr, s, &w, &base);
    if (!l) return;
    PangoFontMetrics *m = pango_context_get_metrics(pango_layout_get_context(l),
                                                    pango_layout_get_font_description(l), NULL);
    double ascent = (double)pango_font_metrics_get_ascent(m) / PANGO_SCALE;
    double descent = (double)pango_font_metrics_get_descent(m) / PANGO_SCALE;
    pango_font_metrics_unref(m);
    if (pango_layout_get_unknown_glyphs_count(l) > 0) warn_missing_font(s);
    /* where the baseline goes: at y (ay 1), an ascent below y (top), or centred on the font's
       lowercase middle */
    double baseline_y = y + (ay >= 1 ? 0 : ay <= 0 ? ascent : ascent * 0.5 - descent * 0.25);
    cairo_move_to(cr, x - w * ax, baseline_y - base);
    pango_cairo_show_layout(cr, l);
}

const char *mt_rd_fit(cairo_t *cr, const char *s, double max_width, char *out, size_t out_size) {
    static const char ELLIPSIS[] = "\xe2\x80\xa6";   /* U+2026 */
    size_t n = strlen(s);
    if (n < out_size && mt_rd_text_width(cr, s) <= max_width) {
        memcpy(out, s, n + 1);
        return out;
    }
    /* the longest prefix of at most `n` bytes that fits with the ellipsis: binary search over its
     * length, each candidate backed off to a character boundary */
    size_t lo = 0, hi = n < out_size - sizeof ELLIPSIS ? n : out_size - sizeof ELLIPSIS;
    while (lo < hi) {
        size_t mid = (lo + hi + 1) / 2, cut = mid;
        while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) cut--;
        memcpy(out, s, cut);
        memcpy(out + cut, ELLIPSIS, sizeof ELLIPSIS);
        if (cut > lo && mt_rd_text_width(cr, out) <= max_width) lo = cut;
        else hi = mid - 1;
    }
    memcpy(out, s, lo);
    memcpy(out + lo, ELLIPSIS, sizeof ELLIPSIS);
    return out;
}

void mt_rd_text_fit(cairo_t *cr, double x, double y, double max_width, const char *s) {
    char buf[1024];
    mt_rd_text(cr, x, y, 0, 0, mt_rd_fit(cr, s, max_width, buf, sizeof buf));
}

void mt_rd_text_vertical(cairo_t *cr, double x, double y, const char *s) {
    cairo_save(cr);
    cairo_translate(cr, x, y);
    cairo_rotate(cr, -1.5707963267948966);
    mt_rd_text(cr, 0, 0, 0.5, 0.5, s);
    cairo_restore(cr);
}

int mt_rd_tick_step(double unit_px, double min_px, int powers_of_two) {
    static const int DEC[] = {1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000};
    static const int POW2[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
    const int *s = powers_of_two ? POW2 : DEC;
    for (int i = 0; i < 11; i++)
        if (s[i] * unit_px >= min_px) return s[i];
    return s[10];
}

double mt_rd_nice_ceil(double x) {
    if (!(x > 0)) return 1;
    double p = pow(10, floor(log10(x)));
    static const double M[] = {1, 2, 2.5, 5, 10};
    for (int i = 0; i < 5; i++)
        if (M[i] * p >= x * (1 - 1e-9)) return M[i] * p;
    return 10 * p;
}

void mt_rd_cell_axes(cairo_t *cr, double x0, double y0, double cw, double ch, int cols, int rows, double tick) {
    char buf[32];
    int xs = mt_rd_tick_step(cw, 30, 1);
    for (int c = 0; c < cols; c += xs) {
        double x = x0 + (c + 0.5) * cw;
        cairo_move_to(cr, x, y0 + rows * ch);
        cairo_line_to(cr, x, y0 + rows * ch + tick);
        cairo_stroke(cr);
        snprintf(buf, sizeof buf, "%d", c);
        mt_rd_text(cr, x, y0 + rows * ch + tick + 2, 0.5, 0, buf);
    }
    int ys = mt_rd_tick_step(ch, 14, 0);
    for (int r = 0; r < rows; r += ys) {
        double y = y0 + (r + 0.5) * ch;
        cairo_move_to(cr, x0 - tick, y);
        cairo_line_to(cr, x0, y);
        cairo_stroke(cr);
        snprintf(buf, sizeof buf, "%d", r);
        mt_rd_text(cr, x0 - tick - 2, y, 1, 0.5, buf);
    }
}

void mt_rd_colorbar(cairo_t *cr, double x, double y, double h, double vmax, double step, const char *label,
                    double mark, const char *mark_label) {
    double rgb[3];
    char buf[32];
    for (int k = 0; k < (int)h; k++) {
        mt_rd_colormap((k + 0.5) / h, rgb);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, x, y + h - k - 1, 16, 1.5);
        cairo_fill(cr);
    }
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, x - 0.5, y - 0.5, 17, h + 1);
    cairo_stroke(cr);
    mt_rd_font(cr, 10, 0);
    int ticks = (int)floor(vmax / step + 0.5);
    for (int k = 0; k <= ticks; k++) {
        double v = fmin(step * k, vmax), ty = y + h - h * v / vmax;
        cairo_move_to(cr, x + 16, ty);
        cairo_line_to(cr, x + 20, ty);
        cairo_stroke(cr);
        snprintf(buf, sizeof buf, "%.3g%%", v * 100);
        mt_rd_text(cr, x + 22, ty, 0, 0.5, buf);
    }
    if (label) mt_rd_text(cr, x, y - 6, 0, 1, label);
    if (!mark_label || !(mark >= 0 && mark <= vmax)) return;
    double my = y + h - h * mark / vmax;
    cairo_set_source_rgb(cr, 0.85, 0.1, 0.1);
    cairo_move_to(cr, x - 1, my);
    cairo_line_to(cr, x - 8, my - 5);
    cairo_line_to(cr, x - 8, my + 5);
    cairo_close_path(cr);
    cairo_fill(cr);
    mt_rd_font(cr, 9, 0);
    mt_rd_text(cr, x - 10, my, 1, 0.5, mark_label);
}

void mt_rd_title_block(cairo_t *cr, double width, const char *title, const char *subtitle, const char *explanation,
                       const char *warning) {
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    mt_rd_font(cr, 17, 1);
    mt_rd_text_fit(cr, 16, 12, width, title);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    mt_rd_font(cr, 12, 0);
    mt_rd_text_fit(cr, 16, 36, width, subtitle);
    mt_rd_font(cr, 11, 0);
    mt_rd_text_fit(cr, 16, 56, width, explanation);
    if (warning) {
        cairo_set_source_rgb(cr, 0.65, 0.2, 0.1);
        mt_rd_text_fit(cr, 16, 74, width, warning);
    }
}

void mt_rd_text_colour_on(cairo_t *cr, const double rgb[3]) {
    double lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2];
    if (lum > 0.5) cairo_set_source_rgb(cr, 0, 0, 0);
    else cairo_set_source_rgb(cr, 1, 1, 1);
}

static int has_ext(const char *path, const char *ext) {
    size_t n = strlen(path), k = strlen(ext);
    return n > k && strcasecmp(path + n - k, ext) == 0;
}

int mt_rd_check_ext(const char *out_path, mt_err *err) {
    if (has_ext(out_path, ".svg") || has_ext(out_path, ".png")) return 0;
    return mt_errf(err, "%s: output must end in .png or .svg", out_path);
}

int mt_rd_render_file(const char *out_path, double width, double height, void (*draw)(cairo_t *cr, const void *arg),
                      const void *arg, mt_err *err) {
    if (mt_rd_check_ext(out_path, err)) return -1;
    int svg = has_ext(out_path, ".svg");
    size_t n = strlen(out_path) + 32;
    char *tmp = malloc(n);
    if (!tmp) return mt_errf(err, "%s: out of memory", out_path);
    snprintf(tmp, n, "%s.tmp.%ld", out_path, (long)getpid());
    int w = (int)ceil(width), h = (int)ceil(height), rc = -1;
    cairo_surface_t *s = svg ? cairo_svg_surface_create(tmp, w, h)
                             : cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
    cairo_status_t st = cairo_surface_status(s);
    if (st != CAIRO_STATUS_SUCCESS) {
        mt_errf(err, "%s: cannot create the %s surface (%dx%d): %s", out_path, svg ? "SVG" : "PNG", w,
                h, cairo_status_to_string(st));
        goto out;
    }
    cairo_t *cr = cairo_create(s);
    draw(cr, arg);
    st = cairo_status(cr);
    cairo_destroy(cr);
    if (st != CAIRO_STATUS_SUCCESS) {
        mt_errf(err, "%s: drawing failed: %s", out_path, cairo_status_to_string(st));
        goto out;
    }
    if (svg) {
        cairo_surface_finish(s);
        st = cairo_surface_status(s);
    } else {
        st = cairo_surface_write_to_png(s, tmp);
    }
    if (st != CAIRO_STATUS_SUCCESS) {
        mt_errf(err, "%s: cannot write %s: %s", out_path, tmp, cairo_status_to_string(st));
        goto out;
    }
    if (rename(tmp, out_path) != 0) {
        mt_errf(err, "%s: cannot rename %s into place: %s", out_path, tmp, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    cairo_surface_destroy(s);
    if (rc) unlink(tmp);
    free(tmp);
    return rc;
}
