/* moetrace report: draw a stat dump as a PNG or SVG picture (SPEC §3). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "report/report.h"
#include "routing/stat_dump.h"
#include "util/err.h"

static const char USAGE[] =
    "usage: moetrace report DUMP.json --out FILE.png|FILE.svg [--ep-size M] [--placement F.json]\n"
    "\n"
    "Draws a stat dump (format moetrace.expert_distribution.v1) as a layers x experts heatmap:\n"
    "colour = the expert's share of the layer's routed tokens, dense layers greyed, a per-layer\n"
    "balancedness column and a title with the model, token count and mean balancedness.\n"
    "\n"
    "  --out FILE           .png or .svg (by extension), written atomically\n"
    "  --ep-size M          add a per-GPU load chart for M expert-parallel GPUs (contiguous split into\n"
    "                       M equal blocks: without --placement, M must divide the dump's num_experts)\n"
    "  --placement F.json   placement from `moetrace eplb`: per-GPU load before (contiguous split)\n"
    "                       and after (the placement); M defaults to its num_gpus\n"
    "\n"
    "A dump recorded while the engine ran a placement (run/profile --ep-size, --init-expert-location)\n"
    "draws, without --placement, the per-GPU loads the engine measured as \"after\".\n";

int cmd_report(int argc, char **argv) {
    const char *dump = NULL, *out = NULL, *plc = NULL;
    int ep = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        }
        int has_val = !strcmp(a, "--out") || !strcmp(a, "--ep-size") || !strcmp(a, "--placement");
        if (has_val && i + 1 >= argc) {
            fprintf(stderr, "moetrace report: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--out")) out = argv[++i];
        else if (!strcmp(a, "--placement")) plc = argv[++i];
        else if (!strcmp(a, "--ep-size")) {
            const char *s = argv[++i];
            char *end;
            errno = 0;
            long v = strtol(s, &end, 10);
            if (errno || end == s || *end || v < 1 || v > 1000000) {
                fprintf(stderr, "moetrace report: --ep-size must be a positive integer (got '%s')\n", s);
                return 2;
            }
            ep = (int)v;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "moetrace report: unknown option '%s'\n%s", a, USAGE);
            return 2;
        } else if (!dump) dump = a;
        else {
            fprintf(stderr, "moetrace report: unexpected argument '%s' (one DUMP.json only)\n", a);
            return 2;
        }
    }
    if (!dump || !out) {
        fprintf(stderr, "moetrace report: %s is required\n%s", !dump ? "DUMP.json" : "--out", USAGE);
        return 2;
    }
    mt_err err = {{0}};
    mt_stat_dump d;
    memset(&d, 0, sizeof d);
    mt_placement p;
    memset(&p, 0, sizeof p);
    int rc = 1;
    if (mt_stat_dump_load(dump, &d, &err)) goto fail;
    if (plc) {
        mt_moe_shape shape;
        mt_placement_opts po = {.ep_size = ep, .num_redundant = -1};
        if (mt_moe_shape_from_dump(&d, &shape, &err) || mt_placement_load(plc, &shape, &po, &p, &err)) goto fail;
    }
    mt_report_opts o = {.ep_size = ep, .placement = plc ? &p : NULL};
    if (mt_report_render(&d, out, &o, &err)) goto fail;
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "moetrace report: %s\n", err.msg);
done:
    mt_placement_free(&p);
    mt_stat_dump_free(&d);
    return rc;
}
