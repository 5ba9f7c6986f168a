/* Drawing helpers of the report (private to src/report): colour map, text placement, tick steps. */
#ifndef MT_REPORT_DRAW_H
#define MT_REPORT_DRAW_H

#include <cairo.h>

#include "util/err.h"

/* Perceptual colour map (viridis-like, interpolated between fixed stops); t in [0, 1]. */
void mt_rd_colormap(double t, double rgb[3]);
/* Diverging colour map (blue, white at 0.5, red); t in [0, 1]. */
void mt_rd_colormap_diverging(double t, double rgb[3]);
/* Text is drawn with Pango (any script, with fontconfig's font fallback) in the font mt_rd_font
 * last chose for the context (12 units, regular, before any).
 * Draws s with its anchor at (x, y): ax 0 left, 0.5 centre, 1 right; ay 0 top, 0.5 middle, 1 baseline. */
void mt_rd_text(cairo_t *cr, double x, double y, double ax, double ay, const char *s);
/* How many characters of s no installed font has (drawn as boxes; mt_rd_text logs the first
 * such label of a process). */
int mt_rd_missing_glyphs(cairo_t *cr, const char *s);
/* The advance width of s in the current font. */
double mt_rd_text_width(cairo_t *cr, const char *s);
/* s cut to fit max_width in the current font: the whole of s when it fits, else its longest
 * prefix that ends on a UTF-8 character boundary and, with "…" added, fits (just "…" when none
 * does), into out (out_size >= 4). Returns out. */
const char *mt_rd_fit(cairo_t *cr, const char *s, double max_width, char *out, size_t out_size);
/* mt_rd_text of s cut to max_width (mt_rd_fit), left-aligned at x, top at y. */
void mt_rd_text_fit(cairo_t *cr, double x, double y, double max_width, const char *s);
/* Same, rotated by -90 degrees (reads bottom to top), centred on (x, y). */
void mt_rd_text_vertical(cairo_t *cr, double x, double y, const char *s);
/* Smallest step from 1, 2, 4, 5, 8, 10, 16, 20, 32, 50, 64, ... with step * unit_px >= min_px. */
int mt_rd_tick_step(double unit_px, double min_px, int powers_of_two);
/* A "nice" number >= x (1, 2, 2.5, 5 times a power of ten). */
double mt_rd_nice_ceil(double x);
/* The font of the text drawn next: sans-serif of size user units, bold or not. */
void mt_rd_font(cairo_t *cr, double size, int bold);
/* Axes of a grid of cols x rows cells of cw x ch from (x0, y0): column numbers below, row numbers
 * left, every few cells (mt_rd_tick_step), ticks tick long, in the current font and source. */
void mt_rd_cell_axes(cairo_t *cr, double x0, double y0, double cw, double ch, int cols, int rows, double tick);
/* A vertical colour bar of mt_rd_colormap, 16 wide and h tall from (x, y): 0 at the bottom, vmax at
 * the top, a tick every step labelled in percent (font 10), label (or nothing when NULL) above it;
 * when mark_label is not NULL and 0 <= mark <= vmax, a red pointer at mark on its left, labelled. */
void mt_rd_colorbar(cairo_t *cr, double x, double y, double h, double vmax, double step, const char *label,
                    double mark, const char *mark_label);
/* A picture's heading from (16, 12), each line cut to width: title (17, bold), subtitle (12),
 * explanation (11) and, when not NULL, a warning (11, red); it takes MT_RD_TITLE_H units, and
 * MT_RD_TITLE_WARN_H with a warning. */
#define MT_RD_TITLE_H 84
#define MT_RD_TITLE_WARN_H 100
void mt_rd_title_block(cairo_t *cr, double width, const char *title, const char *subtitle, const char *explanation,
                       const char *warning);
/* Black or white as the source, whichever reads on a background of rgb. */
void mt_rd_text_colour_on(cairo_t *cr, const double rgb[3]);
/* An error unless out_path ends in .png or .svg (any case). */
int mt_rd_check_ext(const char *out_path, mt_err *err);
/* Draws a width x height picture with draw(cr, arg) into out_path: PNG or SVG by its extension,
 * written to a temporary file beside it and renamed into place. Errors name the path. */
int mt_rd_render_file(const char *out_path, double width, double height, void (*draw)(cairo_t *cr, const void *arg),
                      const void *arg, mt_err *err);

#endif
