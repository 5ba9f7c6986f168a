/* moetrace profile: a JSONL dataset through the batched engine at a given concurrency, with the
 * recorder on; writes the stat dump, optionally the per-token dump, a heatmap and a summary. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "chat/chat_template.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/dataset.h"
#include "cli/model_open.h"
#include "cli/placement_flags.h"
#include "cli/profile_domains.h"
#include "cli/sampling_flags.h"
#include "engine/engine.h"
#include "engine/kv_cache.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "engine/request_tally.h"
#include "report/report.h"
#include "routing/balancedness.h"
#include "routing/recorder.h"
#include "routing/stat_dump.h"
#include "tokenizer/tokenizer.h"
#include "util/atomic_write.h"
#include "util/json_util.h"

static const char PROFILE_HELP[] =
    "usage: moetrace profile --model DIR --data FILE.jsonl --out DIR [options]\n"
    "\n"
    "Runs every line of FILE.jsonl ({\"prompt\": str} | {\"messages\": [...]} | {\"input_ids\": [...]})\n"
    "through the batched engine and records where every token went (\"prompt\" and \"messages\" may\n"
    "hold U+0000, \\u0000; any other string holding it is an error). Writes to --out:\n"
    "  expert_distribution_<ms>.json  the stat dump (SPEC §4)\n"
    "  per_token/expert_distribution_<ms>.json + .safetensors\n"
    "                                 the per-token dump (with --per-token): its JSON index and its rows,\n"
    "                                 apart (so DIR/expert_distribution_*.json is the stat dump alone)\n"
    "  heatmap.png                    layers x experts heatmap\n"
    "  summary.json                   requests, tokens, wall time, balancedness and routing entropy (of\n"
    "                                 the stat dump's counts), co-selected pairs (docs/RECORDER.md)\n"
    "  domains/<domain>/expert_distribution_<ms>.json, domains.json, domains.png\n"
    "                                 expert use per domain (with --domain-field)\n"
    "\n"
    "  --max-new-tokens N     per request (default 64)      --concurrency C   sequences in flight (default 16)\n"
    "  --temperature T --top-p P --top-k K --min-p P --seed S --ignore-eos\n"
    "  --repetition-penalty R --frequency-penalty F --presence-penalty P --min-new-tokens N\n"
    "                         sampling and penalties, as in run (default greedy);\n"
    "                         record i (0-based, blank lines not counted) samples with seed S+i, so\n"
    "                         run --seed S+i reproduces its tokens and routing\n"
    "  --per-token            also write the per-token dump of every forwarded token (sized from\n"
    "                         the dataset, so none is dropped); its index's request_ids name each\n"
    "                         request by its line's \"rid\" or \"id\" (a string or an integer),\n"
    "                         else by its line number in FILE.jsonl (1-based), as strings\n"
    "  --domain-field F       group the records by their field F (a string or an integer: a domain,\n"
    "                         a language, a source...) and record each group's expert use apart: its\n"
    "                         stat dump, its divergence from the rest of the traffic, its distinctive\n"
    "                         experts and a heatmap of each expert's lift (docs/RECORDER.md); the\n"
    "                         prefix cache is then off, so each request forwards all its tokens.\n"
    "                         Records without F belong to no domain; a dataset where no record has F\n"
    "                         is an error. An integer label 7 and the string \"7\" are one domain\n"
    "  --max-batch-tokens N   token budget of a forward pass (default 512 on cpu, 8192 on cuda)\n"
    "  --threads N  --load-format auto|dummy  --device cpu|cuda\n"
    "%s"
    "Without a placement, balancedness is that of 8 contiguous blocks of experts (1 when 8 does not\n"
    "divide num_experts); with one, it is measured per GPU from the physical counts of the dump.\n"
    "An interrupt (Ctrl-C, SIGTERM) cancels the requests and writes what was recorded; summary.json then\n"
    "says \"interrupted\": true and counts a cancelled request only for the tokens it forwarded.\n";

#define PER_TOKEN_DIR "per_token" /* under --out: the per-token dump, apart from the stat dump */

typedef struct profile_args {
    const char *model, *data, *out, *device, *domain_field;
    int max_new_tokens, concurrency, threads, max_batch_tokens;
    mt_placement_flags placement;
    bool ignore_eos, per_token;
    mt_sampling_params sampling;
    mt_load_format load_format;
} profile_args;

static int parse(profile_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->max_new_tokens = 64;
    a->device = "cpu";
    a->concurrency = 16;
    a->max_batch_tokens = 0;   /* 0: the device's default */
    mt_sampling_flags_init(&a->sampling);
    mt_placement_flags_init(&a->placement);
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i], *v;
        int pf = mt_placement_flags_parse(&a->placement, argc, argv, &i);
        if (pf == 0) pf = mt_sampling_flags_parse(&a->sampling, argc, argv, &i);
        if (pf < 0) return -1;
        if (pf > 0) continue;
#define VALUE() do { if (!(v = mt_arg_value(argc, argv, &i))) return -1; } while (0)
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { printf(PROFILE_HELP, MT_PLACEMENT_FLAGS_HELP); exit(0);
        } else if (!strcmp(f, "--model")) { VALUE(); a->model = v;
        } else if (!strcmp(f, "--data")) { VALUE(); a->data = v;
        } else if (!strcmp(f, "--out")) { VALUE(); a->out = mt_arg_trim_slashes(argv[i]);
        } else if (!strcmp(f, "--max-new-tokens")) { VALUE(); if (mt_arg_int(f, v, 0, 1 << 20, &a->max_new_tokens)) return -1;
        } else if (!strcmp(f, "--concurrency")) { VALUE(); if (mt_arg_int(f, v, 1, 4096, &a->concurrency)) return -1;
        } else if (!strcmp(f, "--max-batch-tokens")) { VALUE(); if (mt_arg_int(f, v, 1, 1 << 20, &a->max_batch_tokens)) return -1;
        } else if (!strcmp(f, "--threads")) { VALUE(); if (mt_arg_int(f, v, 1, 1024, &a->threads)) return -1;
        } else if (!strcmp(f, "--ignore-eos")) { a->ignore_eos = true;
        } else if (!strcmp(f, "--per-token")) { a->per_token = true;
        } else if (!strcmp(f, "--domain-field")) { VALUE(); if (!v[0]) { fprintf(stderr, "moetrace: profile: --domain-field: empty\n"); return -1; } a->domain_field = v;
        } else if (!strcmp(f, "--load-format")) { VALUE(); if (mt_arg_load_format(f, v, &a->load_format)) return -1;
        } else if (!strcmp(f, "--device")) { VALUE(); if (mt_cli_check_device(v)) return -1; a->device = v;
        } else {
            fprintf(stderr, "moetrace: profile: unknown option '%s' (see moetrace profile --help)\n", f);
            return -1;
        }
#undef VALUE
    }
    if (!a->model || !a->data || !a->out) {
        fprintf(stderr, "moetrace: profile: --model, --data and --out are required\n");
        return -1;
    }
    if (!a->max_batch_tokens) a->max_batch_tokens = mt_cli_default_batch_tokens(a->device);
    return 0;
}

/* ---- statistics from the per-request routing ----------------------------------------------- */

typedef struct profile_state {
    const mt_config *cfg;
    int64_t *count;      /* [layers, experts] from the per-request routing (checked against the recorder) */
    int64_t *pairs;      /* [layers, experts, experts] co-selection counts (i < j) */
    mt_request_tally tally; /* the requests as summary.json counts them */
    long finished;       /* FINISHED events, cancelled ones included (the progress bar's) */
    long adopted;        /* rows of their routing adopted from the prefix cache, cancelled ones' included */
    int total;
    mt_domain_usage *domains; /* with --domain-field: each request counted for its domain when it ran */
    const int32_t *groups;    /* [total] each request's domain group, or NULL */
} profile_state;

/* A finished request: its routing into the per-request counts and pairs, its tokens into the tally
 * and, when it forwarded anything, its request into its domain's "requests". */
static void on_event(void *ctx, const mt_engine_event *ev) {
    profile_state *s = ctx;
    if (ev->kind != MT_EVENT_FINISHED) return;
    const mt_config *c = s->cfg;
    int L = c->num_hidden_layers, k = c->top_k, E = c->num_experts;
    for (int t = 0; t < ev->routing_rows; t++) {
        for (int l = 0; l < L; l++) {
            if (!c->layer_is_moe[l]) continue;
            const int32_t *ids = ev->routing + ((size_t)t * L + l) * k;
            for (int j = 0; j < k; j++) {
                s->count[(size_t)l * E + ids[j]]++;
                for (int m = j + 1; m < k; m++) {
                    int a = ids[j] < ids[m] ? ids[j] : ids[m], b = ids[j] < ids[m] ? ids[m] : ids[j];
                    s->pairs[((size_t)l * E + a) * E + b]++;
                }
            }
        }
    }
    s->finished++;
    s->adopted += ev->n_cached;
    if (mt_request_tally_add(&s->tally, ev) && s->domains && ev->id >= 0 && ev->id < s->total)
        mt_domain_usage_count_request(s->domains, s->groups[ev->id]);
}

/* The replicas of every expert carry exactly its logical count (phys [L, R], logical [L, E]). */
static bool physical_matches(const mt_placement *p, const int64_t *phys, const int64_t *logical) {
    int R = p->num_physical, E = p->num_experts;
    for (int i = 0; i < p->num_moe_layers; i++) {
        int l = p->moe_layers[i];
        for (int e = 0; e < E; e++) {
            int64_t sum = 0;
            for (int r = 0; r < p->logcnt[(size_t)i * E + e]; r++)
                sum += phys[(size_t)l * R + p->log2phy[((size_t)i * E + e) * p->max_replicas + r]];
            if (sum != logical[(size_t)l * E + e]) return false;
        }
    }
    return true;
}

static volatile sig_atomic_t g_interrupted;
static void on_signal(int sig) {
    (void)sig;
    g_interrupted = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void progress(const profile_state *s, long forwarded, double elapsed, bool final) {
    int width = 30, filled = (int)((double)s->finished / s->total * width);
    double rate = elapsed > 0 ? (double)forwarded / elapsed : 0.0;
    double eta = s->finished > 0 ? elapsed / (double)s->finished * (double)(s->total - s->finished) : 0.0;
    fprintf(stderr, "\r[");
    for (int i = 0; i < width; i++) fputc(i < filled ? '=' : (i == filled ? '>' : ' '), stderr);
    fprintf(stderr, "] %ld/%d requests  %.0f tokens/s  elapsed %.1fs  ETA %.0fs   %s", s->finished, s->total, rate,
            elapsed, eta, final ? "\n" : "");
    fflush(stderr);
}

/* ---- summary ------------------------------------------------------------------------------- */

/* What summary.json is made of (docs/RECORDER.md, "summary.json"). Balancedness and routing entropy
 * come from the stat recorder's counts, what was forwarded (a prefix adopted from the cache counts
 * once, when its first request forwarded it), as the stat dump beside it and heatmap.png; the
 * co-selected pairs come from the per-request routing (a cached prefix counts for every request
 * that adopted it). */
typedef struct summary_in {
    const profile_state *s;
    const mt_config *c;
    double wall;
    long passes, forwarded;    /* the engine's forward passes and tokens forwarded */
    int ep_size;
    const char *dump_path;     /* the stat dump */
    const mt_placement *plc;   /* the placement the engine ran, or NULL */
    const int64_t *rec;        /* [layers, experts] the stat recorder's logical counts (the dump's) */
    const int64_t *phys;       /* [layers, slots] its physical counts under plc, else NULL */
    double pass_bal;           /* the recorder's pass_balancedness (with plc) */
    bool interrupted;          /* a signal cancelled the requests still running or queued */
} summary_in;

/* The requests' figures (mt_request_tally: a cancelled request only for what it forwarded) and
 * whether the run was interrupted, with how many requests that cancelled. */
static void add_requests(cJSON *j, const mt_request_tally *t, bool interrupted) {
    cJSON_AddNumberToObject(j, "requests", (double)t->requests);
    cJSON_AddBoolToObject(j, "interrupted", interrupted);
    cJSON_AddNumberToObject(j, "requests_cancelled", (double)t->cancelled);
    cJSON_AddNumberToObject(j, "requests_not_forwarded", (double)t->cancelled_unforwarded);
    cJSON_AddNumberToObject(j, "prompt_tokens", (double)t->prompt_tokens);
    cJSON_AddNumberToObject(j, "generated_tokens", (double)t->generated_tokens);
    cJSON_AddNumberToObject(j, "prompt_tokens_from_prefix_cache", (double)t->cached);
}

/* Shannon entropy in bits of the distribution of counts cnt[0..E) (0 when all are 0). */
static double entropy_bits(const int64_t *cnt, int E) {
    double total = 0, h = 0;
    for (int e = 0; e < E; e++) total += (double)cnt[e];
    for (int e = 0; e < E && total > 0; e++)
        if (cnt[e] > 0) h -= cnt[e] / total * log2(cnt[e] / total);
    return h;
}

/* The five pairs of one layer's co-selection counts pairs[a][b] (a < b, [E, E]) chosen together most
 * often, descending (ties: the lower a, then b), as [{"experts": [a, b], "tokens": n}, ...]. */
static cJSON *top_pairs(const int64_t *pairs, int E) {
    cJSON *top = cJSON_CreateArray();
    int64_t last_best = INT64_MAX;
    int la = -1, lb = -1;
    for (int r = 0; r < 5; r++) {
        int64_t best = -1;
        int ba = -1, bb = -1;
        for (int a = 0; a < E; a++)
            for (int b = a + 1; b < E; b++) {
                int64_t v = pairs[(size_t)a * E + b];
                bool after = v < last_best || (v == last_best && (a > la || (a == la && b > lb)));
                if (after && v > best) { best = v; ba = a; bb = b; }
            }
        if (best <= 0) break;
        cJSON *p = cJSON_CreateObject();
        cJSON *ex = cJSON_AddArrayToObject(p, "experts");
        cJSON_AddItemToArray(ex, cJSON_CreateNumber(ba));
        cJSON_AddItemToArray(ex, cJSON_CreateNumber(bb));
        cJSON_AddNumberToObject(p, "tokens", (double)best);
        cJSON_AddItemToArray(top, p);
        last_best = best; la = ba; lb = bb;
    }
    return top;
}

/* Per hidden layer (null for dense ones): balancedness and routing entropy from the recorder's
 * counts (balancedness per GPU from the physical counts under a placement, else over ep_size
 * contiguous blocks: the stat dump's figure), the co-selected pairs from the per-request routing;
 * then balancedness_mean over the MoE layers. */
static void add_layers(cJSON *j, const summary_in *in) {
    const mt_config *c = in->c;
    int L = c->num_hidden_layers, E = c->num_experts;
    cJSON *bal = cJSON_AddArrayToObject(j, "balancedness_per_layer");
    cJSON *ent = cJSON_AddArrayToObject(j, "routing_entropy_per_layer");
    cJSON *pairs = cJSON_AddArrayToObject(j, "top_coselected_pairs_per_layer");
    double bsum = 0;
    int nmoe = 0;
    for (int l = 0; l < L; l++) {
        if (!c->layer_is_moe[l]) {
            cJSON_AddItemToArray(bal, cJSON_CreateNull());
            cJSON_AddItemToArray(ent, cJSON_CreateNull());
            cJSON_AddItemToArray(pairs, cJSON_CreateNull());
            continue;
        }
        const int64_t *cnt = in->rec + (size_t)l * E;
        int R = in->plc ? in->plc->num_physical : 0;
        double b = in->plc ? mt_balancedness_contiguous(in->phys + (size_t)l * R, R, in->ep_size)
                           : mt_balancedness_contiguous(cnt, E, in->ep_size);
        bsum += b;
        nmoe++;
        cJSON_AddItemToArray(bal, cJSON_CreateNumber(b));
        cJSON_AddItemToArray(ent, cJSON_CreateNumber(entropy_bits(cnt, E))); /* bits; log2(E) is uniform */
        cJSON_AddItemToArray(pairs, top_pairs(in->s->pairs + (size_t)l * E * E, E));
    }
    cJSON_AddNumberToObject(j, "balancedness_mean", nmoe ? bsum / nmoe : 1.0);
    cJSON_AddNumberToObject(j, "routing_entropy_max_bits", log2((double)E));
}

/* summary.json's object, format moetrace.profile_summary.v1 (its fields: docs/RECORDER.md). */
static cJSON *summary_json(const summary_in *in) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", "moetrace.profile_summary.v1");
    add_requests(j, &in->s->tally, in->interrupted);
    cJSON_AddNumberToObject(j, "tokens_forwarded", (double)in->forwarded);
    cJSON_AddNumberToObject(j, "forward_passes", (double)in->passes);
    cJSON_AddNumberToObject(j, "wall_time_s", in->wall);
    cJSON_AddNumberToObject(j, "tokens_per_s", in->wall > 0 ? in->forwarded / in->wall : 0);
    cJSON_AddNumberToObject(j, "ep_size", in->ep_size);
    if (in->plc) {
        cJSON *pj = cJSON_AddObjectToObject(j, "placement");
        cJSON_AddStringToObject(pj, "source", in->plc->source);
        cJSON_AddNumberToObject(pj, "num_gpus", in->plc->num_gpus);
        cJSON_AddNumberToObject(pj, "num_replicas", in->plc->num_physical);
        cJSON_AddNumberToObject(j, "pass_balancedness", in->pass_bal);
    }
    cJSON_AddStringToObject(j, "stat_dump", in->dump_path);
    add_layers(j, in);
    return j;
}

/* Rows a per_token recording of the whole dataset can need (every prompt token, and at most
 * max_new_tokens more a request), so none is dropped; the store grows only as rows come. */
static long per_token_rows(const mt_dataset *d, int max_new_tokens) {
    long rows = 0;
    for (int i = 0; i < d->n; i++) rows += (long)d->len[i] + max_new_tokens;
    return rows > 0 ? rows : 1;
}

int cmd_profile(int argc, char **argv) {
    profile_args a;
    if (parse(&a, argc, argv)) return 2;
    char tok_dir[4096]; /* the per-token dump's folder */
    snprintf(tok_dir, sizeof tok_dir, "%s/%s", strcmp(a.out, "/") ? a.out : "", PER_TOKEN_DIR);
    if (mt_arg_out_dir("--out", a.out) || (a.per_token && mt_arg_out_dir("--out", tok_dir))) return 1;
    mt_err err = {{0}};
    mt_model model;
    mt_kernels_init(a.threads); /* first: a GPU upload copies the checkpoint on its threads */
    if (mt_cli_open_model(&model, a.model, a.load_format, a.device, &err)) {
        fprintf(stderr, "moetrace: %s\n", err.msg);
        mt_kernels_shutdown();
        return 1;
    }
    const mt_config *c = &model.cfg;
    mt_text_tools tools = {a.model, NULL, NULL};
    mt_dataset d;
    int rc = 1;
    mt_recorder *stat = NULL, *tok_rec = NULL;
    mt_engine *engine = NULL;
    profile_state st = {0};
    mt_placement placement = {0};
    int64_t *phys = NULL, *rec = NULL; /* the stat recorder's physical and logical counts */
    mt_domain_usage *domains = NULL;
    int32_t *groups = NULL; /* each record's domain group (0: none) */
    if (mt_dataset_load(a.data, &tools, a.domain_field, &d, &err)) {
        fprintf(stderr, "moetrace: %s\n", err.msg);
        mt_tokenizer_free(tools.tok);
        mt_chat_template_free(tools.tpl);
        mt_kernels_shutdown();
        mt_model_free(&model);
        return 1;
    }
    int have_plc = mt_placement_flags_load(&a.placement, c, &placement);
    if (have_plc < 0) goto done;
    int ep = have_plc ? placement.num_gpus : (c->num_experts % 8 == 0 ? 8 : 1);
    mt_recorder_opts ro;
    mt_recorder_opts_default(&ro);
    ro.mode = MT_REC_STAT;
    ro.buffer_size = -1;
    ro.dump_dir = a.out;
    ro.ep_size = ep;
    ro.placement = have_plc ? &placement : NULL;
    mt_routing_fanout fan = {0};
    if (!(stat = mt_recorder_new(c, model.name, &ro, &err))) goto fail;
    mt_recorder_start(stat);
    mt_routing_fanout_add(&fan, mt_recorder_sink(stat));
    if (a.per_token) {
        mt_recorder_opts to = ro;
        to.mode = MT_REC_PER_TOKEN;
        to.max_tokens = per_token_rows(&d, a.max_new_tokens);
        to.dump_dir = tok_dir;
        if (!(tok_rec = mt_recorder_new(c, model.name, &to, &err))) goto fail;
        mt_recorder_start(tok_rec);
        mt_routing_fanout_add(&fan, mt_recorder_sink(tok_rec));
    }
    if (a.domain_field) {
        if (!(groups = calloc((size_t)d.n, sizeof *groups))) {
            mt_errf(&err, "out of memory");
            goto fail;
        }
        if (!(domains = mt_profile_domains_new(&d, a.domain_field, a.data, c, model.name, &ro, groups, &err)) ||
            mt_domain_usage_prepare(domains, a.out, &err))
            goto fail;
        mt_routing_fanout_add(&fan, mt_domain_usage_sink(domains));
        if (tok_rec) mt_recorder_set_group_label(tok_rec, mt_domain_usage_label, domains);
    }
    mt_routing_sink sink = mt_routing_fanout_sink(&fan);
    int longest = 0;
    for (int i = 0; i < d.n; i++) longest = d.len[i] > longest ? d.len[i] : longest;
    int blocks_per = (longest + a.max_new_tokens + MT_KV_BLOCK - 1) / MT_KV_BLOCK;
    mt_engine_opts eo = {.num_kv_blocks = blocks_per * a.concurrency + 64, .max_batch_tokens = a.max_batch_tokens,
                         .max_running = a.concurrency,
                         /* with domains, every request forwards all its tokens: a prefix two domains
                            share counts for both */
                         .prefix_cache = !a.domain_field,
                         .placement = have_plc ? &placement : NULL};
    st.cfg = c;
    st.total = d.n;
    st.domains = domains;
    st.groups = groups;
    st.count = calloc((size_t)c->num_hidden_layers * c->num_experts, sizeof *st.count);
    st.pairs = calloc((size_t)c->num_hidden_layers * c->num_experts * c->num_experts, sizeof *st.pairs);
    if (!st.count || !st.pairs) {
        mt_errf(&err, "out of memory");
        goto fail;
    }
    if (!(engine = mt_engine_new(&model, &eo, on_event, &st, &sink, &err))) goto fail;
    for (int i = 0; i < d.n; i++) {
        mt_request r = {.id = i, .name = d.names[i], .prompt = d.ids[i], .n_prompt = d.len[i],
                        .max_new_tokens = a.max_new_tokens, .ignore_eos = a.ignore_eos, .sampling = a.sampling,
                        .group = groups ? groups[i] : 0};
        r.sampling.seed = a.sampling.seed + (uint64_t)i;
        if (mt_engine_submit(engine, &r, &err)) {
            fprintf(stderr, "moetrace: %s line %d: %s\n", a.data, d.lines[i], err.msg);
            goto done;
        }
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    double t0 = now_s(), last = 0;
    bool interrupted = false;
    while (!mt_engine_idle(engine)) {
        if (g_interrupted) {
            for (int i = 0; i < d.n; i++) mt_engine_cancel(engine, i);
            g_interrupted = 0;
            interrupted = true;
            fprintf(stderr, "\nmoetrace: interrupted; cancelling and writing what was recorded\n");
        }
        if (mt_engine_step(engine, &err) < 0) goto fail;
        double t = now_s() - t0;
        if (t - last > 0.2) {
            mt_engine_stats es;
            mt_engine_get_stats(engine, &es);
            progress(&st, es.tokens_forwarded, t, false);
            last = t;
        }
    }
    double wall = now_s() - t0;
    mt_engine_stats es;
    mt_engine_get_stats(engine, &es);
    progress(&st, es.tokens_forwarded, wall, true);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);

    /* The recorder and the per-request routing are two channels over the same tokens. */
    rec = malloc((size_t)c->num_hidden_layers * c->num_experts * sizeof *rec);
    if (have_plc) phys = malloc((size_t)c->num_hidden_layers * placement.num_physical * sizeof *phys);
    if (!rec || (have_plc && !phys)) {
        mt_errf(&err, "out of memory");
        goto fail;
    }
    mt_recorder_logical_count(stat, rec);
    /* They count the same tokens unless a request took prompt tokens from the prefix cache (their
     * routing rows, computed once, are in each such request's routing; the recorder counted them when
     * they were forwarded) or a preempted sequence forwarded tokens again (the recorder counts that
     * work each time; the request's routing has each token once). */
    if (st.adopted > 0 || es.tokens_recomputed > 0)
        mt_log("per-request routing not compared with the recorder: %ld prompt tokens came from the prefix cache "
               "and %ld were forwarded again after preemption (the recorder counts what was forwarded, the routing "
               "each request's tokens once)", st.adopted, es.tokens_recomputed);
    else if (memcmp(rec, st.count, (size_t)c->num_hidden_layers * c->num_experts * sizeof *rec) != 0)
        mt_log("warning: recorder counts differ from the per-request routing");
    /* and the physical channel adds up to the logical one */
    if (have_plc && (mt_recorder_physical_count(stat, phys) || !physical_matches(&placement, phys, rec)))
        mt_log("warning: physical counts do not add up to the logical counts");
    mt_recorder_counts rc_counts;
    mt_recorder_get_counts(stat, &rc_counts);

    char dump_path[4096], tok_path[4096] = "";
    if (mt_recorder_dump(stat, dump_path, sizeof dump_path, &err)) goto fail;
    if (tok_rec && mt_recorder_dump(tok_rec, tok_path, sizeof tok_path, &err)) goto fail;
    mt_stat_dump sd;
    if (mt_stat_dump_load(dump_path, &sd, &err)) goto fail;
    char png[4096];
    snprintf(png, sizeof png, "%s/heatmap.png", a.out);
    mt_report_opts rop = {.ep_size = ep};
    int rrc = mt_report_render(&sd, png, &rop, &err);
    mt_stat_dump_free(&sd);
    if (rrc) goto fail;
    summary_in si = {.s = &st, .c = c, .wall = wall, .passes = es.forward_passes, .forwarded = es.tokens_forwarded,
                     .ep_size = ep, .dump_path = dump_path, .plc = have_plc ? &placement : NULL, .rec = rec,
                     .phys = phys, .pass_bal = rc_counts.pass_balancedness, .interrupted = interrupted};
    cJSON *sum = summary_json(&si);
    if (tok_path[0]) cJSON_AddStringToObject(sum, "per_token_dump", tok_path);
    char domains_path[4096];
    if (domains && mt_domain_usage_write(domains, a.out, true, domains_path, sizeof domains_path, &err)) {
        cJSON_Delete(sum);
        goto fail;
    }
    if (domains) cJSON_AddStringToObject(sum, "domain_usage", domains_path);
    char *text = cJSON_Print(sum);
    char sum_path[4096];
    snprintf(sum_path, sizeof sum_path, "%s/summary.json", a.out);
    int wrc = mt_atomic_write(sum_path, text, strlen(text), &err);
    cJSON_Delete(sum);
    free(text);
    if (wrc) goto fail;
    printf("%s\n", sum_path);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "moetrace: %s\n", err.msg);
done:
    mt_engine_free(engine);
    mt_recorder_free(stat);
    mt_recorder_free(tok_rec);
    mt_domain_usage_free(domains);
    free(groups);
    free(st.count);
    free(st.pairs);
    free(phys);
    free(rec);
    mt_placement_free(&placement);
    mt_dataset_free(&d);
    mt_tokenizer_free(tools.tok);
    mt_chat_template_free(tools.tpl);
    mt_kernels_shutdown();
    mt_model_free(&model);
    return rc;
}
