/* moetrace eplb: plan an expert-parallel placement from a stat dump (SPEC §6). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "routing/balancedness.h"
#include "routing/eplb.h"
#include "routing/stat_dump.h"
#include "util/atomic_write.h"
#include "util/err.h"

#define PLACEMENT_FORMAT "moetrace.placement.v1"

static const char USAGE[] =
    "usage: moetrace eplb --counts DUMP.json [DUMP.json...] --num-replicas R --num-gpus M [--num-nodes N]\n"
    "                     [--num-groups G] [--eval DUMP2.json] --out F.json\n"
    "\n"
    "Plans where each logical expert's replicas go on an expert-parallel cluster with DeepSeek's EPLB\n"
    "algorithm, from the per-layer expert counts of a stat dump (rows of dense layers are ignored).\n"
    "\n"
    "  --counts DUMP.json   stat dump (format moetrace.expert_distribution.v1) to plan on; several\n"
    "                       (e.g. a day of serve's windows: DIR/expert_distribution_*.json, or the flag\n"
    "                       repeated) are summed: same model, layers and experts, one kind (stat dumps,\n"
    "                       or per_token indexes: profile --per-token writes both), each file once\n"
    "  --num-replicas R     physical expert slots per layer over all GPUs (>= num_experts,\n"
    "                       a multiple of M; R - num_experts redundant experts)\n"
    "  --num-gpus M         expert-parallel size\n"
    "  --num-nodes N        server nodes (default 1)\n"
    "  --num-groups G       expert groups, e.g. the model's n_group (default 1). Hierarchical policy when\n"
    "                       G is a multiple of N (then num_experts must be a multiple of G and M of N),\n"
    "                       else global, which uses neither (as DeepSeek's reference)\n"
    "  --eval DUMP2.json    also score the placement on another dump (same model) -> \"eval\" in F.json\n"
    "  --out F.json         placement JSON (format moetrace.placement.v1), written atomically\n"
    "\n"
    "Balancedness = mean / max per-GPU load per MoE layer; before = experts split into M contiguous\n"
    "blocks, after = the placement (an expert's load split evenly over its replicas).\n";

static int parse_int_arg(const char *flag, const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > 1000000) {
        fprintf(stderr, "moetrace eplb: %s must be an integer in [1, 1000000] (got '%s')\n", flag, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

#define MAX_COUNTS 4096 /* dumps --counts sums */

typedef struct eplb_args {
    const char *counts[MAX_COUNTS], *eval, *out;
    int n_counts, replicas, gpus, nodes, groups;
} eplb_args;

/* 0 ok, 1 help printed, -1 error printed. */
static int parse_args(int argc, char **argv, eplb_args *a) {
    memset(a, 0, sizeof *a);
    a->nodes = 1;
    a->groups = 1;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            fputs(USAGE, stdout);
            return 1;
        }
        static const char *const flags[] = {"--counts", "--eval",       "--out",       "--num-replicas",
                                            "--num-gpus", "--num-nodes", "--num-groups"};
        int which = -1;
        const char *val = NULL;
        for (int f = 0; f < (int)(sizeof flags / sizeof flags[0]); f++) {
            size_t n = strlen(flags[f]);
            if (!strncmp(arg, flags[f], n) && (arg[n] == 0 || arg[n] == '=')) {
                which = f;
                if (arg[n] == '=') val = arg + n + 1;
                break;
            }
        }
        if (which < 0) {
            fprintf(stderr, "moetrace eplb: unknown argument '%s' (see --help)\n", arg);
            return -1;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "moetrace eplb: %s needs a value\n", flags[which]);
                return -1;
            }
            val = argv[++i];
        }
        int rc = 0;
        switch (which) {
        case 0:
            /* the dumps after the flag, up to the next flag (a shell glob) */
            for (;;) {
                if (a->n_counts == MAX_COUNTS) {
                    fprintf(stderr, "moetrace eplb: --counts takes at most %d dumps\n", MAX_COUNTS);
                    return -1;
                }
                a->counts[a->n_counts++] = val;
                if (arg[strlen("--counts")] == '=' || i + 1 >= argc || !strncmp(argv[i + 1], "--", 2)) break;
                val = argv[++i];
            }
            break;
        case 1: a->eval = val; break;
        case 2: a->out = val; break;
        case 3: rc = parse_int_arg(flags[which], val, &a->replicas); break;
        case 4: rc = parse_int_arg(flags[which], val, &a->gpus); break;
        case 5: rc = parse_int_arg(flags[which], val, &a->nodes); break;
        case 6: rc = parse_int_arg(flags[which], val, &a->groups); break;
        }
        if (rc) return -1;
    }
    const char *missing = !a->n_counts ? "--counts" : !a->replicas ? "--num-replicas" : !a->gpus ? "--num-gpus"
                                                  : !a->out      ? "--out"
                                                                 : NULL;
    if (missing) {
        fprintf(stderr, "moetrace eplb: missing %s (see --help)\n", missing);
        return -1;
    }
    if (!*a->out) {
        fprintf(stderr, "moetrace eplb: --out must not be empty\n");
        return -1;
    }
    return mt_arg_out_file("--out", a->out); /* before any work, naming the path given */
}

static cJSON *int_array(const int32_t *v, int n) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < n; i++) {
        cJSON *x = cJSON_CreateNumber(v[i]);
        if (!x || !cJSON_AddItemToArray(arr, x)) {
            cJSON_Delete(x);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

static cJSON *double_array(const double *v, int n) { return cJSON_CreateDoubleArray(v, n); }

static double mean_of(const double *v, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += v[i];
    return n ? s / n : 0.0;
}

#define EXACT_MAX 9007199254740992LL /* 2^53: the largest count a dump holds exactly (stat_dump.h) */

/* *sum += add, unless that passes EXACT_MAX; a -1 (absent) on either side makes the sum absent. */
static bool add_exact(int64_t *sum, int64_t add) {
    if (*sum < 0 || add < 0) {
        *sum = -1;
        return true;
    }
    if (add > EXACT_MAX - *sum) return false;
    *sum += add;
    return true;
}

/* The dumps of --counts into d: the first, with every other's MoE counts, tokens and passes added
 * (each must have the first's hidden layers, MoE layers and experts, and its model and top_k where
 * both state them; sums stay at most 2^53, what a dump holds exactly; no tokens counted twice). */
static int load_counts(const eplb_args *a, mt_stat_dump *d, mt_err *err) {
    bool per_token[MAX_COUNTS]; /* each dump's kind: no tokens counted twice */
    if (mt_stat_dump_load(a->counts[0], d, err)) return -1;
    per_token[0] = d->per_token;
    const char *model = d->model; /* the first model any dump names */
    for (int i = 1; i < a->n_counts; i++) {
        mt_stat_dump x = {0};
        if (mt_stat_dump_load(a->counts[i], &x, err)) return -1;
        per_token[i] = x.per_token;
        const char *differs = x.model[0] && model[0] && strcmp(x.model, model) ? "model" : mt_stat_dump_shape_differs(d, &x);
        bool exact = true;
        for (size_t k = 0; !differs && exact && k < (size_t)d->num_moe_layers * (size_t)d->num_experts; k++)
            exact = add_exact(&d->moe_count[k], x.moe_count[k]);
        exact = exact && add_exact(&d->num_tokens, x.num_tokens) &&
                add_exact(&d->num_forward_passes, x.num_forward_passes);
        if (differs)
            mt_errf(err, "%s: its %s differs from that of %s (--counts sums dumps of one model)", a->counts[i], differs,
                    a->counts[0]);
        else if (!exact)
            mt_errf(err, "%s: adding its counts passes 2^53, beyond what a count holds exactly", a->counts[i]);
        if (!model[0] && x.model[0]) {
            free(d->model);
            d->model = x.model; /* the dumps' model, named in the placement */
            x.model = NULL;
            model = d->model;
        }
        if (!d->top_k) d->top_k = x.top_k;
        mt_stat_dump_free(&x);
        if (differs || !exact) return -1;
    }
    return mt_stat_dump_refuse_overlap(a->counts, per_token, a->n_counts, err);
}

/* before[l]: contiguous split; after[l]: the plan, both on dump d's counts. */
static void score(const mt_stat_dump *d, const mt_eplb_plan *p, double *before, double *after) {
    for (int l = 0; l < d->num_moe_layers; l++) {
        const int64_t *c = d->moe_count + (size_t)l * d->num_experts;
        before[l] = mt_balancedness_contiguous(c, d->num_experts, p->num_gpus);
        after[l] = mt_balancedness_placement(c, p->phy2log + (size_t)l * p->num_replicas,
                                             p->logcnt + (size_t)l * d->num_experts, p->num_replicas, p->num_gpus);
    }
}

static int add_scores(cJSON *obj, const double *before, const double *after, int n) {
    cJSON *b = double_array(before, n), *a = double_array(after, n);
    int ok = b && a && cJSON_AddItemToObject(obj, "balancedness_before", b);
    if (!ok) {
        cJSON_Delete(b);
        cJSON_Delete(a);
        return -1;
    }
    if (!cJSON_AddItemToObject(obj, "balancedness_after", a)) {
        cJSON_Delete(a);
        return -1;
    }
    if (!cJSON_AddNumberToObject(obj, "balancedness_before_mean", mean_of(before, n)) ||
        !cJSON_AddNumberToObject(obj, "balancedness_after_mean", mean_of(after, n)))
        return -1;
    return 0;
}

static int add_owned(cJSON *obj, const char *key, cJSON *item) {
    if (!item) return -1;
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

static cJSON *placement_json(const eplb_args *a, const mt_stat_dump *d, const mt_eplb_plan *p,
                             const double *before, const double *after) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    int L = p->num_layers, E = p->num_experts, R = p->num_replicas, X = p->max_replicas;
    int bad = !cJSON_AddStringToObject(root, "format", PLACEMENT_FORMAT) ||
              !cJSON_AddNumberToObject(root, "num_gpus", a->gpus) ||
              !cJSON_AddNumberToObject(root, "num_nodes", a->nodes) ||
              !cJSON_AddNumberToObject(root, "num_groups", a->groups) ||
              !cJSON_AddNumberToObject(root, "num_replicas", a->replicas) ||
              !cJSON_AddStringToObject(root, "policy", p->hierarchical ? "hierarchical" : "global") ||
              !cJSON_AddNumberToObject(root, "num_experts", E) ||
              !cJSON_AddNumberToObject(root, "num_hidden_layers", d->num_hidden_layers) ||
              !cJSON_AddStringToObject(root, "model", d->model) ||
              !cJSON_AddStringToObject(root, "counts", a->counts[0]) ||
              (d->num_tokens >= 0 && !cJSON_AddNumberToObject(root, "num_tokens", (double)d->num_tokens));
    bad = bad || add_owned(root, "counts_files", cJSON_CreateStringArray(a->counts, a->n_counts));
    bad = bad || add_owned(root, "moe_layers", cJSON_CreateIntArray(d->moe_layers, d->num_moe_layers));
    cJSON *p2l = bad ? NULL : cJSON_CreateArray();
    bad = bad || add_owned(root, "physical_to_logical_map", p2l);
    for (int l = 0; !bad && l < L; l++) {
        cJSON *row = int_array(p->phy2log + (size_t)l * R, R);
        bad = !row || !cJSON_AddItemToArray(p2l, row);
        if (bad) cJSON_Delete(row);
    }
    cJSON *l2p = bad ? NULL : cJSON_CreateArray();
    bad = bad || add_owned(root, "logical_to_physical_map", l2p);
    for (int l = 0; !bad && l < L; l++) {
        cJSON *layer = cJSON_CreateArray();
        bad = !layer || !cJSON_AddItemToArray(l2p, layer);
        if (bad) cJSON_Delete(layer);
        for (int e = 0; !bad && e < E; e++) {
            cJSON *row = int_array(p->log2phy + ((size_t)l * E + e) * X, X);
            bad = !row || !cJSON_AddItemToArray(layer, row);
            if (bad) cJSON_Delete(row);
        }
    }
    cJSON *cnt = bad ? NULL : cJSON_CreateArray();
    bad = bad || add_owned(root, "logical_replica_count", cnt);
    for (int l = 0; !bad && l < L; l++) {
        cJSON *row = int_array(p->logcnt + (size_t)l * E, E);
        bad = !row || !cJSON_AddItemToArray(cnt, row);
        if (bad) cJSON_Delete(row);
    }
    bad = bad || add_scores(root, before, after, L);
    if (bad) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int cmd_eplb(int argc, char **argv) {
    eplb_args a;
    int prc = parse_args(argc, argv, &a);
    if (prc) return prc > 0 ? 0 : 2;

    mt_err err = {{0}};
    mt_stat_dump d = {0}, d2 = {0};
    mt_eplb_plan plan = {0};
    double *scores = NULL;
    cJSON *root = NULL;
    char *text = NULL;
    int rc = 1;

    if (load_counts(&a, &d, &err) || mt_stat_dump_require_tokens(&d, a.counts[0], &err)) goto fail;
    if (a.eval) {
        if (mt_stat_dump_load(a.eval, &d2, &err)) goto fail;
        if (d2.num_experts != d.num_experts) {
            mt_errf(&err, "%s: num_experts is %d but %s has %d", a.eval, d2.num_experts, a.counts[0], d.num_experts);
            goto fail;
        }
        if (d2.num_moe_layers != d.num_moe_layers ||
            memcmp(d2.moe_layers, d.moe_layers, (size_t)d.num_moe_layers * sizeof *d.moe_layers)) {
            mt_errf(&err, "%s: moe_layers differ from those of %s", a.eval, a.counts[0]);
            goto fail;
        }
    }
    mt_eplb_params params = {.num_replicas = a.replicas, .num_groups = a.groups, .num_nodes = a.nodes,
                             .num_gpus = a.gpus};
    if (mt_eplb_check_params(d.num_experts, &params, &err)) {
        char msg[MT_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", err.msg);
        mt_errf(&err, "%s (num_experts from %s; see --help)", msg, a.counts[0]);
        goto fail;
    }
    int L = d.num_moe_layers, E = d.num_experts;
    double *w = malloc((size_t)L * E * sizeof *w);
    if (!w) {
        mt_errf(&err, "out of memory for %d x %d loads", L, E);
        goto fail;
    }
    for (size_t i = 0; i < (size_t)L * E; i++) w[i] = (double)d.moe_count[i];
    int prc2 = mt_eplb_plan_compute(w, L, E, &params, &plan, &err);
    free(w);
    if (prc2) goto fail;

    scores = malloc((size_t)4 * L * sizeof *scores);
    if (!scores) {
        mt_errf(&err, "out of memory");
        goto fail;
    }
    score(&d, &plan, scores, scores + L);
    root = placement_json(&a, &d, &plan, scores, scores + L);
    if (!root) {
        mt_errf(&err, "out of memory building the placement JSON");
        goto fail;
    }
    if (a.eval) {
        score(&d2, &plan, scores + 2 * L, scores + 3 * L);
        cJSON *ev = cJSON_CreateObject();
        if (add_owned(root, "eval", ev) || !cJSON_AddStringToObject(ev, "counts", a.eval) ||
            add_scores(ev, scores + 2 * L, scores + 3 * L, L)) {
            mt_errf(&err, "out of memory building the placement JSON");
            goto fail;
        }
    }
    text = cJSON_PrintUnformatted(root);
    if (!text) {
        mt_errf(&err, "out of memory printing the placement JSON");
        goto fail;
    }
    mt_write_chunk chunks[2] = {{text, strlen(text)}, {"\n", 1}};
    if (mt_atomic_write_chunks(a.out, chunks, 2, &err)) goto fail;
    if (a.n_counts > 1) mt_log("eplb: planned on the sum of %d dumps", a.n_counts);
    mt_log("eplb: %s policy, %d MoE layers, %d experts -> %d replicas on %d GPUs; balancedness %.4f -> %.4f",
           plan.hierarchical ? "hierarchical" : "global", L, E, a.replicas, a.gpus, mean_of(scores, L),
           mean_of(scores + L, L));
    if (a.eval)
        mt_log("eval on %s: balancedness %.4f -> %.4f", a.eval, mean_of(scores + 2 * L, L),
               mean_of(scores + 3 * L, L));
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "moetrace eplb: %s\n", err.msg);
done:
    free(text);
    cJSON_Delete(root);
    free(scores);
    mt_eplb_plan_free(&plan);
    mt_stat_dump_free(&d);
    mt_stat_dump_free(&d2);
    return rc;
}
