/* Drawing helpers of the report: colour map, text anchoring, tick spacing. */
#include <math.h>

#include "report/report_draw.h"

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

void mt_rd_font(cairo_t *cr, double size, int bold) {
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

void mt_rd_text(cairo_t *cr, double x, double y, double ax, double ay, const char *s) {
    cairo_text_extents_t te;
    cairo_font_extents_t fe;
    cairo_text_extents(cr, s, &te);
    cairo_font_extents(cr, &fe);
    double dy = ay >= 1 ? 0 : ay <= 0 ? fe.ascent : fe.ascent * 0.5 - fe.descent * 0.25;
    cairo_move_to(cr, x - te.x_advance * ax, y + dy);
    cairo_show_text(cr, s);
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
