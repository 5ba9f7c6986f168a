/* moetrace report: draw a stat dump as a PNG or SVG picture (SPEC §3), compare dumps, draw a series
 * of dumps' balancedness over time (--over-time), trace one request of a per_token dump (--request),
 * or analyse every row of one (--coactivation, --token-specialisation). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "report/coactivation.h"
#include "report/over_time.h"
#include "report/report.h"
#include "report/request_trace.h"
#include "report/token_specialisation.h"
#include "report/usage_report.h"
#include "routing/stat_dump.h"
#include "routing/usage_compare.h"
#include "util/atomic_write.h"
#include "util/err.h"

#define MAX_COMPARED 32

/* The dumps' counts as groups of mt_usage_compare (their sum is all traffic). The dumps must be of
 * one model and shape: expert i of one checkpoint has nothing to do with expert i of another. */
static int compare_dumps(const mt_stat_dump *d, char *const *paths, int n, const char *out, mt_err *err) {
    int L = d[0].num_hidden_layers, E = d[0].num_experts;
    for (int i = 1; i < n; i++)
        if (mt_stat_dump_check_same_model(&d[0], paths[0], &d[i], paths[i],
                                          "the dumps compared must be of one model (its expert i is not another "
                                          "checkpoint's expert i)", err))
            return -1;
    size_t LE = (size_t)L * (size_t)E;
    int64_t *count = calloc((size_t)n * LE, sizeof *count), *all = calloc(LE, sizeof *all);
    int64_t *tokens = calloc((size_t)n, sizeof *tokens);
    bool *is_moe = calloc((size_t)L, sizeof *is_moe);
    int rc = -1;
    if (!count || !all || !tokens || !is_moe) {
        mt_errf(err, "out of memory");
        goto out;
    }
    for (int m = 0; m < d[0].num_moe_layers; m++) is_moe[d[0].moe_layers[m]] = true;
    for (int i = 0; i < n; i++) {
        for (int m = 0; m < d[i].num_moe_layers; m++)
            for (int e = 0; e < E; e++) {
                int64_t v = d[i].moe_count[(size_t)m * E + e];
                count[(size_t)i * LE + (size_t)d[i].moe_layers[m] * E + e] = v;
                all[(size_t)d[i].moe_layers[m] * E + e] += v;
            }
        tokens[i] = d[i].num_tokens;
        if (tokens[i] < 0 && d[i].top_k > 0 && d[i].num_moe_layers > 0) { /* from the counts; else unknown (-1) */
            int64_t pairs = 0;
            for (int e = 0; e < E; e++) pairs += d[i].moe_count[e];
            tokens[i] = pairs / d[i].top_k;
        }
    }
    mt_usage_groups u = {.num_groups = n, .num_layers = L, .num_experts = E, .names = (const char *const *)paths,
                         .tokens = tokens, .count = count, .all = all, .layer_is_moe = is_moe};
    size_t len = strlen(out);
    if (len > 5 && !strcasecmp(out + len - 5, ".json")) {
        cJSON *cmp = mt_usage_compare_json(&u, 4), *j = cJSON_CreateObject();
        char *text = NULL;
        if (cmp && j && cJSON_AddStringToObject(j, "format", "moetrace.usage_comparison.v1")) {
            cJSON_AddItemToObject(j, "dumps", cJSON_DetachItemFromObject(cmp, "groups"));
            cJSON_AddItemToObject(j, "mean_divergence_per_layer", cJSON_DetachItemFromObject(cmp, "mean_divergence_per_layer"));
            text = cJSON_Print(j);
        }
        rc = text ? mt_atomic_write(out, text, strlen(text), err) : mt_errf(err, "out of memory");
        free(text);
        cJSON_Delete(cmp);
        cJSON_Delete(j);
    } else {
        char title[256];
        snprintf(title, sizeof title, "%s — expert use compared", d[0].model && d[0].model[0] ? d[0].model : "(unnamed model)");
        rc = mt_usage_report_render(&u, title, out, err);
    }
out:
    free(count);
    free(all);
    free(tokens);
    free(is_moe);
    return rc;
}

/* The GPUs the dump's recorder measured balancedness over ("ep_size"), where the report can draw them:
 * its placement's, or M equal blocks of experts; else 0 (per expert). */
static int dump_ep_size(const mt_stat_dump *d) {
    int M = d->ep_size;
    if (d->placement) return M == d->placement->num_gpus ? M : 0;
    return M >= 1 && M <= d->num_experts && d->num_experts % M == 0 ? M : 0;
}

/* An output of `what` drawn or as JSON: .png, .svg or .json in a folder that can be written;
 * else -1, said on stderr. */
static int check_out(const char *out, const char *what) {
    size_t n = strlen(out);
    bool ok = (n > 4 && (!strcasecmp(out + n - 4, ".png") || !strcasecmp(out + n - 4, ".svg"))) ||
              (n > 5 && !strcasecmp(out + n - 5, ".json"));
    if (!ok) {
        fprintf(stderr, "moetrace report: --out %s: %s is written as .png, .svg or .json\n", out, what);
        return -1;
    }
    return mt_arg_out_file("--out", out);
}

/* --request: one request of a per_token dump, drawn or as JSON. */
static int trace_request(char *const *dumps, int n_dumps, const char *rid, const char *model, const char *out,
                         bool placement_flags) {
    const char *bad = NULL;
    if (!rid) bad = "--model labels the tokens of a --request trace or of --token-specialisation; give --request RID";
    else if (n_dumps == 0) bad = "--request needs INDEX.json, the JSON index of a per_token dump";
    else if (n_dumps > 1) bad = "--request traces one per_token dump";
    else if (placement_flags) bad = "--ep-size and --placement draw a stat dump, not a --request trace";
    else if (!out) bad = "--out is required";
    if (bad) {
        if (rid && n_dumps > 1) fprintf(stderr, "moetrace report: %s; %d were given\n", bad, n_dumps);
        else fprintf(stderr, "moetrace report: %s\n", bad);
        return 2;
    }
    if (check_out(out, "a --request trace")) return 2;
    mt_err err = {{0}};
    mt_request_trace t;
    if (mt_request_trace_load(dumps[0], rid, &t, &err)) {
        fprintf(stderr, "moetrace report: --request %s: %s\n", rid, err.msg);
        return 1;
    }
    if (t.same_id > 1)
        mt_log("report: %d requests of %s have the id \"%s\"; tracing the first (request_index %lld)", t.same_id,
               dumps[0], rid, (long long)t.request_index);
    int rc = 0;
    if ((model && mt_request_trace_decode(&t, model, &err)) || mt_request_trace_write(&t, out, &err)) {
        fprintf(stderr, "moetrace report: %s\n", err.msg);
        rc = 1;
    }
    mt_request_trace_free(&t);
    return rc;
}

/* --over-time: the dumps' balancedness, window by window, drawn or as JSON. */
static int over_time(char *const *dumps, int n_dumps, int ep, const char *out, bool other_flags) {
    const char *bad = NULL;
    if (other_flags) bad = "--over-time draws stat dumps: --placement, --request and --model do not apply";
    else if (n_dumps == 0) bad = "--over-time needs the dumps, DUMP.json...";
    else if (!out) bad = "--out is required";
    if (bad) {
        fprintf(stderr, "moetrace report: %s\n", bad);
        return 2;
    }
    if (check_out(out, "--over-time")) return 2;
    mt_err err = {{0}};
    mt_over_time t;
    if (mt_over_time_load(dumps, n_dumps, ep, &t, &err)) {
        fprintf(stderr, "moetrace report: %s\n", err.msg);
        return t.needs_ep_size ? 2 : 1;
    }
    int rc = 0;
    if (mt_over_time_write(&t, out, &err)) {
        fprintf(stderr, "moetrace report: %s\n", err.msg);
        rc = 1;
    }
    mt_over_time_free(&t);
    return rc;
}

/* --layers "0,5,11" into *layers (malloc'd) and *n; else -1, said on stderr. */
static int parse_layers(const char *s, int **layers, int *n) {
    int count = 1;
    for (const char *p = s; *p; p++) count += *p == ',';
    char *copy = strdup(s);
    int *v = malloc(sizeof *v * (size_t)count);
    int rc = copy && v ? 0 : -1;
    char *piece = copy;
    for (int k = 0; rc == 0 && k < count; k++) {
        char *comma = strchr(piece, ',');
        if (comma) *comma = '\0';
        rc = mt_arg_int("--layers", piece, 0, 1000000, &v[k]);
        if (comma) piece = comma + 1;
    }
    free(copy);
    if (rc) {
        free(v);
        return -1;
    }
    *layers = v;
    *n = count;
    return 0;
}

/* What an analysis of every row of a per_token dump is asked. */
typedef struct analysis_args {
    bool coact, spec;            /* --coactivation, --token-specialisation */
    const char *layers, *min_count, *model, *out;
    bool other_flags;            /* --over-time, --request, --ep-size or --placement */
} analysis_args;

/* The flags before any work; 0, or 2 after saying what is wrong. */
static int check_analysis(const analysis_args *a, int n_dumps, const char *what) {
    char bad[256] = "";
    if (a->coact && a->spec)
        snprintf(bad, sizeof bad, "give one of --coactivation and --token-specialisation");
    else if (a->other_flags)
        snprintf(bad, sizeof bad, "%s reads a per_token dump: --over-time, --request, --ep-size and --placement do "
                 "not apply", what);
    else if (a->coact && (a->model || a->min_count))
        snprintf(bad, sizeof bad, "--model and --min-count go with --token-specialisation, not --coactivation");
    else if (n_dumps != 1)
        snprintf(bad, sizeof bad, "%s reads one per_token dump, INDEX.json; %d were given", what, n_dumps);
    else if (!a->out)
        snprintf(bad, sizeof bad, "--out is required");
    if (bad[0]) {
        fprintf(stderr, "moetrace report: %s\n", bad);
        return 2;
    }
    return check_out(a->out, what) ? 2 : 0;
}

/* The analysis of the open dump d at layers[0..n), computed and written (as JSON or drawn). */
static int run_analysis(const analysis_args *a, const mt_per_token_dump *d, const int *layers, int n, int min_count,
                        bool json, mt_err *err) {
    int rc = -1;
    if (a->coact) {
        mt_coactivation c;
        if (mt_coactivation_compute(d, layers, n, &c, err) == 0)
            rc = json ? mt_coactivation_write_json(&c, a->out, err) : mt_coactivation_render(&c, a->out, err);
        mt_coactivation_free(&c);
    } else {
        mt_token_spec s;
        if (mt_token_spec_compute(d, layers, n, min_count, &s, err) == 0 &&
            !(a->model && mt_token_spec_decode(&s, a->model, err)))
            rc = json ? mt_token_spec_write_json(&s, a->out, err) : mt_token_spec_render(&s, a->out, err);
        mt_token_spec_free(&s);
    }
    return rc;
}

/* --coactivation / --token-specialisation: every row of one per_token dump, drawn or as JSON. */
static int analysis(const analysis_args *a, char *const *dumps, int n_dumps) {
    const char *what = a->coact ? "--coactivation" : "--token-specialisation";
    int min_count = MT_TOKEN_SPEC_MIN_COUNT, *asked = NULL, n_asked = 0, *layers = NULL, n = 0;
    if (check_analysis(a, n_dumps, what) ||
        (a->min_count && mt_arg_int("--min-count", a->min_count, 1, INT_MAX, &min_count)) ||
        (a->layers && parse_layers(a->layers, &asked, &n_asked)))
        return 2;
    size_t len = strlen(a->out);
    bool json = len > 5 && !strcasecmp(a->out + len - 5, ".json");
    mt_err err = {{0}};
    mt_per_token_dump d;
    int rc = 1;
    if (mt_per_token_open(dumps[0], what, &d, &err) == 0) {
        /* a picture shows a few layers unless told which; the JSON has them all */
        if (mt_analysis_layers(&d, asked, n_asked, json ? 0 : MT_ANALYSIS_DRAWN, &layers, &n, &err)) rc = 2;
        else if (run_analysis(a, &d, layers, n, min_count, json, &err) == 0) rc = 0;
        mt_per_token_close(&d);
    }
    if (rc) fprintf(stderr, "moetrace report: %s\n", err.msg);
    free(asked);
    free(layers);
    return rc;
}

static const char USAGE[] =
    "usage: moetrace report DUMP.json --out FILE.png|FILE.svg [--ep-size M] [--placement F.json]\n"
    "       moetrace report DUMP.json DUMP.json... --out FILE.png|FILE.svg|FILE.json\n"
    "       moetrace report DUMP.json DUMP.json... --over-time --out FILE.png|FILE.svg|FILE.json [--ep-size M]\n"
    "       moetrace report INDEX.json --request RID --out FILE.png|FILE.svg|FILE.json [--model DIR]\n"
    "       moetrace report INDEX.json --coactivation --out FILE.png|FILE.svg|FILE.json [--layers L,L...]\n"
    "       moetrace report INDEX.json --token-specialisation --out FILE.png|FILE.svg|FILE.json [--model DIR]\n"
    "                       [--layers L,L...] [--min-count N]\n"
    "\n"
    "Draws a stat dump (format moetrace.expert_distribution.v1) as a layers x experts heatmap:\n"
    "colour = the expert's share of the layer's routed tokens, dense layers greyed, a per-layer\n"
    "balancedness column and a title with the model, token count and mean balancedness.\n"
    "\n"
    "  --out FILE           .png or .svg (by extension), written atomically\n"
    "  --ep-size M          add a per-GPU load chart for M expert-parallel GPUs (contiguous split into\n"
    "                       M equal blocks: without --placement, M must divide the dump's num_experts);\n"
    "                       default: the dump's ep_size (as profile's heatmap.png draws it) when it divides\n"
    "                       num_experts or is the dump's placement's num_gpus, else balancedness per expert\n"
    "  --placement F.json   placement from `moetrace eplb`: per-GPU load before (contiguous split)\n"
    "                       and after (the placement); M defaults to its num_gpus\n"
    "\n"
    "A dump recorded while the engine ran a placement (run/profile --ep-size, --init-expert-location)\n"
    "draws, without --placement, the per-GPU loads the engine measured as \"after\".\n"
    "\n"
    "With several dumps of one model (up to 32: two workloads, two days of traffic, the per-domain dumps\n"
    "of profile --domain-field), compares their expert use: each dump's lift per layer and expert (its\n"
    "share over the dumps' combined share) as heatmaps, or with --out FILE.json the numbers: each\n"
    "dump's Jensen-Shannon divergence from the others per layer and its distinctive experts\n"
    "(docs/RECORDER.md, \"Expert usage per domain\"). Dumps of one kind, each once: per_token indexes\n"
    "given with stat dumps (profile --per-token writes both for one window) are refused, here and with\n"
    "--over-time, as is one file twice: their tokens would count twice.\n"
    "\n"
    "With --over-time, the dumps are windows of one model (any number: a day of serve --enable-eplb's\n"
    "dumps, DIR/expert_distribution_*.json), in the order of the <unix-ms> in their names (in the order\n"
    "given when a name has none). The picture: each window's per-GPU balancedness, measured under the\n"
    "placement it ran (mean over MoE layers: line and points; band: worst to best layer); where\n"
    "expert_placement_<ms>.json lies beside dump <ms>, the balancedness it planned for the next window\n"
    "(a diamond in that window's column); a dashed line where the placement changed, labelled with the\n"
    "new one's source (eplb, file, trivial); each window's tokens as a bar below. --out FILE.json writes\n"
    "the numbers (format moetrace.balancedness_over_time.v1; docs/RECORDER.md, \"Balancedness over\n"
    "time\").\n"
    "  --over-time          draw the dumps as a series\n"
    "  --ep-size M          GPUs of the windows recorded without a placement (M contiguous blocks of\n"
    "                       experts; required when there are such windows), else their placements'\n"
    "\n"
    "With --request, traces one request of a per_token dump (INDEX.json: the dump's JSON index, its\n"
    ".safetensors beside it): which experts each of its tokens went to, layer by layer. The picture has\n"
    "the request's own layers x experts heatmap (share of its tokens routed to each expert, all top-k\n"
    "choices) and a grid of its tokens (rows, position order, at most 1024) by hidden layers (columns,\n"
    "dense layers grey), each cell coloured by the token's top-1 expert (one fixed colour per expert id).\n"
    "--out FILE.json writes every token (format moetrace.request_trace.v1: position, token_id, text with\n"
    "--model, experts: top_k ids per hidden layer, -1s for dense layers). Positions the request did not\n"
    "forward itself (served from the prefix cache) have no rows and are listed as missing\n"
    "(docs/RECORDER.md, \"One request's trace\").\n"
    "  --request RID        the request's id exactly as the index's request_ids has it (the first of\n"
    "                       several requests with that id)\n"
    "  --model DIR          label tokens with their text, each decoded alone by DIR/tokenizer.json\n"
    "                       (special tokens shown; whitespace as ␣ ↵ ⇥); without it, their ids\n"
    "\n"
    "With --coactivation, counts the experts every token of a per_token dump (INDEX.json, as for --request)\n"
    "chose together, per MoE layer. The picture has a heatmap per layer, experts on both axes: row i,\n"
    "column j coloured by the share of expert i's tokens that also chose expert j (the diagonal grey), a\n"
    "colour bar marking the share uniform choices would give, and each layer's strongest pairs. --out\n"
    "FILE.json writes the numbers (format moetrace.coactivation.v1): per layer the pair counts (the\n"
    "diagonal: each expert's tokens), the 10 pairs of highest share and the mean shares.\n"
    "\n"
    "With --token-specialisation, ranks the token ids each expert receives: a token id's share for an\n"
    "expert is the share of its occurrences whose top-k included the expert; an expert's score, the mean\n"
    "share of its 10 highest. The picture: per layer, one row per expert (the 64 most specialised), its\n"
    "score and its 5 highest token ids (their text with --model) with their shares; --out FILE.json has\n"
    "every expert's 10 (format moetrace.token_specialisation.v1). Both count the dump's rows only: tokens\n"
    "served from the prefix cache have none (docs/RECORDER.md, \"Co-activation and vocabulary\n"
    "specialisation\"); a stat or per_pass dump is refused.\n"
    "  --coactivation       experts chosen together\n"
    "  --token-specialisation  the token ids each expert receives (also --token-specialization)\n"
    "  --layers L,L...      the hidden layers, MoE layers of the dump; default: up to 4 MoE layers evenly\n"
    "                       spaced in a picture, every MoE layer in a .json\n"
    "  --min-count N        rank the token ids seen at least N times (default 8)\n"
    "  --model DIR          token texts by DIR/tokenizer.json, as for --request\n";

static int report(int argc, char **argv, char **dumps) {
    const char *dump = NULL, *out = NULL, *plc = NULL, *request = NULL, *model = NULL;
    int ep = 0, n_dumps = 0;
    bool series = false;
    analysis_args an = {0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        }
        int has_val = !strcmp(a, "--out") || !strcmp(a, "--ep-size") || !strcmp(a, "--placement") ||
                      !strcmp(a, "--request") || !strcmp(a, "--model") || !strcmp(a, "--layers") ||
                      !strcmp(a, "--min-count");
        if (has_val && i + 1 >= argc) {
            fprintf(stderr, "moetrace report: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--over-time")) series = true;
        else if (!strcmp(a, "--coactivation")) an.coact = true;
        else if (!strcmp(a, "--token-specialisation") || !strcmp(a, "--token-specialization")) an.spec = true;
        else if (!strcmp(a, "--layers")) an.layers = argv[++i];
        else if (!strcmp(a, "--min-count")) an.min_count = argv[++i];
        else if (!strcmp(a, "--out")) out = argv[++i];
        else if (!strcmp(a, "--placement")) plc = argv[++i];
        else if (!strcmp(a, "--request")) request = argv[++i];
        else if (!strcmp(a, "--model")) model = argv[++i];
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
        } else {
            dumps[n_dumps++] = argv[i];
            if (!dump) dump = a;
        }
    }
    if (an.coact || an.spec) {
        an.model = model;
        an.out = out;
        an.other_flags = series || request || plc || ep;
        return analysis(&an, dumps, n_dumps);
    }
    if (an.layers || an.min_count) {
        fprintf(stderr, "moetrace report: --%s goes with --coactivation or --token-specialisation\n",
                an.layers ? "layers" : "min-count");
        return 2;
    }
    if (series) return over_time(dumps, n_dumps, ep, out, plc || request || model);
    if (n_dumps > MAX_COMPARED) {
        fprintf(stderr, "moetrace report: more than %d dumps to compare ('%s')\n", MAX_COMPARED, dumps[MAX_COMPARED]);
        return 2;
    }
    if (request || model) return trace_request(dumps, n_dumps, request, model, out, plc || ep);
    if (n_dumps > 1 && (plc || ep)) {
        fprintf(stderr, "moetrace report: --ep-size and --placement draw one dump; %d were given\n", n_dumps);
        return 2;
    }
    if (!dump || !out) {
        fprintf(stderr, "moetrace report: %s is required\n%s", !dump ? "DUMP.json" : "--out", USAGE);
        return 2;
    }
    /* the output before any work: its kind for the number of dumps, then its folder */
    size_t out_len = strlen(out);
    bool png_svg = out_len > 4 && (!strcasecmp(out + out_len - 4, ".png") || !strcasecmp(out + out_len - 4, ".svg"));
    bool json = out_len > 5 && !strcasecmp(out + out_len - 5, ".json");
    if (!png_svg && !(json && n_dumps > 1)) {
        fprintf(stderr, "moetrace report: --out %s: %s\n", out,
                json ? "a .json comparison needs two or more dumps (one dump is drawn as .png or .svg)"
                     : n_dumps > 1 ? "output must end in .png, .svg or .json" : "output must end in .png or .svg");
        return 2;
    }
    if (mt_arg_out_file("--out", out)) return 2;
    mt_err err = {{0}};
    mt_stat_dump d;
    memset(&d, 0, sizeof d);
    mt_placement p;
    memset(&p, 0, sizeof p);
    int rc = 1;
    if (n_dumps > 1) {
        mt_stat_dump many[MAX_COMPARED];
        memset(many, 0, sizeof many);
        int loaded = 0;
        bool per_token[MAX_COMPARED];
        for (; loaded < n_dumps && mt_stat_dump_load(dumps[loaded], &many[loaded], &err) == 0; loaded++)
            per_token[loaded] = many[loaded].per_token;
        const char *const *paths = (const char *const *)dumps;
        if (loaded == n_dumps && mt_stat_dump_refuse_overlap(paths, per_token, n_dumps, &err) == 0 &&
            compare_dumps(many, dumps, n_dumps, out, &err) == 0)
            rc = 0;
        for (int i = 0; i < loaded; i++) mt_stat_dump_free(&many[i]);
        if (rc) goto fail;
        goto done;
    }
    if (mt_stat_dump_load(dump, &d, &err)) goto fail;
    if (plc) {
        mt_moe_shape shape;
        mt_placement_opts po = {.ep_size = ep, .num_redundant = -1};
        if (mt_moe_shape_from_dump(&d, &shape, &err) || mt_placement_load(plc, &shape, &po, &p, &err)) goto fail;
    }
    mt_report_opts o = {.ep_size = ep ? ep : plc ? 0 : dump_ep_size(&d), .placement = plc ? &p : NULL};
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

int cmd_report(int argc, char **argv) {
    char **dumps = malloc(((size_t)argc + 1) * sizeof *dumps); /* the arguments that are not flags */
    if (!dumps) {
        fprintf(stderr, "moetrace report: out of memory\n");
        return 1;
    }
    int rc = report(argc, argv, dumps);
    free(dumps);
    return rc;
}
