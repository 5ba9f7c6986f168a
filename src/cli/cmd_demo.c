/* moetrace demo: the embedded model end to end (SPEC §3). It writes the checkpoint out, then runs
 * what the other commands do on it, printing what each step shows: a generation, the routing of
 * every token, the same request batched among others (routing unchanged, bit for bit), the expert
 * load the recorder counted, an EPLB placement with the same traffic run under it, expert use per
 * domain, and the request of step 3 token by token (a per_token dump traced with report --request). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/demo_model.h"
#include "cli/model_open.h"
#include "cli/profile_domains.h"
#include "engine/engine.h"
#include "engine/kv_cache.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "report/report.h"
#include "report/request_trace.h"
#include "routing/balancedness.h"
#include "routing/placement.h"
#include "routing/recorder.h"
#include "routing/stat_dump.h"
#include "tokenizer/tokenizer.h"
#include "util/json_util.h"
#include "util/npy.h"

static const char DEMO_HELP[] =
    "usage: moetrace demo [--out DIR] [--prompt TEXT] [--max-new-tokens N] [--device cpu|cuda] [--threads N]\n"
    "\n"
    "Runs the model embedded in moetrace (a small Qwen3-MoE trained on this project's documentation:\n"
    "4 layers, layer 1 dense, 8 experts, top-2) end to end and prints what each step shows:\n"
    "  1. a greedy generation from the prompt\n"
    "  2. where every token went: its experts at every layer (SPEC §2's routing, routing.npy)\n"
    "  3. the same request batched among 11 others, prefill chunked: its routing and tokens unchanged\n"
    "  4. the expert load the recorder counted over that traffic (stat dump, heatmap.png)\n"
    "  5. an EPLB placement over 4 virtual GPUs (placement.json) and the same traffic run under it:\n"
    "     per-GPU balancedness before and after (load.png), returned routing unchanged\n"
    "  6. expert use per domain: prose and command-line prompts (domains.jsonl) recorded apart, how\n"
    "     far each domain's routing is from the other's and its distinctive experts (domains.json,\n"
    "     domains.png, a stat dump per domain in domains/)\n"
    "  7. the request of step 3, token by token: its tokens' experts at every layer, from a per_token\n"
    "     dump of that traffic (moetrace report --request; request.png)\n"
    "\n"
    "  --out DIR              where the files go (default: a new folder moetrace-demo-XXXXXX in $TMPDIR);\n"
    "                         DIR/demo-model is the embedded checkpoint, which every command takes as --model\n"
    "  --prompt TEXT          the request of steps 1-3 (default: \"%s\")\n"
    "  --max-new-tokens N     tokens each request generates (default 16)\n"
    "  --device cpu|cuda      compute device (default cpu)\n"
    "  --threads N            CPU threads (default: all cores)\n"
    "Exits 1 if a check fails (routing changed by batching or by the placement).\n";

static const char DEFAULT_PROMPT[] = "Every token of the batch is routed to its experts";

/* The traffic of steps 3-5: the demo's request and these. */
static const char *const OTHER_PROMPTS[] = {
    "The recorder counts",
    "EPLB replicates heavy experts",
    "The server returns the routing",
    "Balancedness is the mean load over the max load",
    "A forward pass takes a flat batch of tokens",
    "The KV cache is paged",
    "Prefix caching keeps the routing of cached tokens",
    "The CUDA backend captures decode steps in graphs",
    "The tokenizer reads tokenizer.json",
    "Batch invariance means",
    "moetrace profile writes a stat dump",
};
enum { N_OTHERS = sizeof OTHER_PROMPTS / sizeof OTHER_PROMPTS[0], N_REQUESTS = N_OTHERS + 1 };

/* The labelled traffic of step 6: {domain, prompt}. */
static const char *const DOMAIN_PROMPTS[][2] = {
    {"prose", "The recorder counts the tokens routed to each expert"},
    {"prose", "Balancedness is the mean load over the maximum load"},
    {"prose", "Every request gets the routing of its own tokens"},
    {"prose", "The engine batches requests from many sequences"},
    {"prose", "A placement replicates the busiest experts"},
    {"prose", "The tokenizer turns text into ids"},
    {"commands", "cmake -S . -B build && cmake --build build -j"},
    {"commands", "moetrace run --model DIR --input-ids 1,2,3 --routing-out routing.npy"},
    {"commands", "curl -s localhost:30000/generate -d '{\"text\": \"Hello\"}'"},
    {"commands", "moetrace eplb --counts dump.json --num-replicas 12 --num-gpus 4 --out placement.json"},
    {"commands", "./test.sh && ./demo.sh --out /tmp/demo"},
    {"commands", "moetrace profile --model DIR --data prompts.jsonl --out prof/"},
};
enum { N_DOMAIN_PROMPTS = sizeof DOMAIN_PROMPTS / sizeof DOMAIN_PROMPTS[0] };
enum { DEMO_GPUS = 4, DEMO_REDUNDANT = 4, DEMO_CHUNK = 16 };

typedef struct demo_args {
    const char *out, *prompt, *device;
    int max_new_tokens, threads;
} demo_args;

static int parse(demo_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->prompt = DEFAULT_PROMPT;
    a->device = "cpu";
    a->max_new_tokens = 16;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i], *v;
#define VALUE() do { if (!(v = mt_arg_value(argc, argv, &i))) return -1; } while (0)
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { printf(DEMO_HELP, DEFAULT_PROMPT); exit(0);
        } else if (!strcmp(f, "--out")) { VALUE(); a->out = v;
        } else if (!strcmp(f, "--prompt")) { VALUE(); a->prompt = v;
        } else if (!strcmp(f, "--max-new-tokens")) { VALUE(); if (mt_arg_int(f, v, 1, 256, &a->max_new_tokens)) return -1;
        } else if (!strcmp(f, "--threads")) { VALUE(); if (mt_arg_int(f, v, 1, 1024, &a->threads)) return -1;
        } else if (!strcmp(f, "--device")) { VALUE(); if (mt_cli_check_device(v)) return -1; a->device = v;
        } else {
            fprintf(stderr, "moetrace: demo: unknown option '%s' (see moetrace demo --help)\n", f);
            return -1;
        }
#undef VALUE
    }
    if (!*a->prompt) {
        fprintf(stderr, "moetrace: demo: --prompt is empty\n");
        return -1;
    }
    return 0;
}

/* ---- one engine run over a set of prompts ----------------------------------------------------- */

/* What a request returned: its generated ids and its routing [rows, layers, top_k]. */
typedef struct demo_result {
    int32_t *output, *routing;
    int n_generated, rows;
} demo_result;

typedef struct demo_traffic {
    int n;                   /* requests */
    int32_t **ids;           /* [n] prompt ids */
    int *len;
    const int32_t *groups;   /* [n] each request's group (mt_request.group), or NULL: none */
    mt_domain_usage *domains; /* each finished request counted for its group's "requests", or NULL */
    demo_result *res;        /* [n] filled by the run */
    size_t route_row;        /* layers * top_k */
    long passes, tokens;     /* of the last run */
} demo_traffic;

static void on_event(void *ctx, const mt_engine_event *ev) {
    demo_traffic *t = ctx;
    if (ev->kind != MT_EVENT_FINISHED || ev->id < 0 || ev->id >= t->n) return;
    demo_result *r = &t->res[ev->id];
    free(r->output);
    free(r->routing);
    r->n_generated = ev->n_generated;
    r->rows = ev->routing_rows;
    if (t->domains) mt_domain_usage_count_request(t->domains, t->groups ? t->groups[ev->id] : 0);
    r->output = malloc(((size_t)ev->n_generated + 1) * sizeof *r->output);
    r->routing = malloc(((size_t)ev->routing_rows * t->route_row + 1) * sizeof *r->routing);
    if (r->output) memcpy(r->output, ev->output, (size_t)ev->n_generated * sizeof *r->output);
    if (r->routing) memcpy(r->routing, ev->routing, (size_t)ev->routing_rows * t->route_row * sizeof *r->routing);
}

/* Runs requests [0, n) of t greedily, at most `running` at once, with passes of at most `chunk`
 * tokens, no prefix cache (every token is forwarded), under placement p (or none), every pass's
 * routing going to sink (or nowhere). */
static int run_traffic(const mt_model *m, demo_traffic *t, int n, int running, int chunk, int max_new,
                       const mt_placement *p, const mt_routing_sink *sink, mt_err *err) {
    int longest = 0;
    for (int i = 0; i < n; i++) longest = t->len[i] > longest ? t->len[i] : longest;
    int blocks = (longest + max_new + MT_KV_BLOCK - 1) / MT_KV_BLOCK;
    mt_engine_opts eo = {.num_kv_blocks = blocks * running + 8, .max_batch_tokens = chunk, .max_running = running,
                         .prefix_cache = false, .placement = p};
    mt_engine *e = mt_engine_new(m, &eo, on_event, t, sink, err);
    if (!e) return -1;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        t->res[i].rows = -1;
        mt_request r = {.id = i, .prompt = t->ids[i], .n_prompt = t->len[i], .max_new_tokens = max_new,
                        .sampling = {.top_p = 1.0f}, .group = t->groups ? t->groups[i] : 0};
        rc = mt_engine_submit(e, &r, err);
    }
    while (!rc && !mt_engine_idle(e))
        if (mt_engine_step(e, err) < 0) rc = -1;
    mt_engine_stats es;
    mt_engine_get_stats(e, &es);
    t->passes = es.forward_passes;
    t->tokens = es.tokens_forwarded;
    mt_engine_free(e);
    for (int i = 0; i < n && !rc; i++)
        if (t->res[i].rows < 0 || !t->res[i].output || !t->res[i].routing)
            rc = mt_errf(err, "request %d returned no result (out of memory?)", i);
    return rc;
}

static bool same_result(const demo_result *a, const demo_result *b, size_t route_row) {
    return a->n_generated == b->n_generated && a->rows == b->rows &&
           !memcmp(a->output, b->output, (size_t)a->n_generated * sizeof *a->output) &&
           !memcmp(a->routing, b->routing, (size_t)a->rows * route_row * sizeof *a->routing);
}

/* ---- printing -------------------------------------------------------------------------------- */

/* Prints text quoted, with control characters escaped, at most max bytes of it. */
static void print_quoted(const char *s, size_t len, size_t max) {
    putchar('"');
    for (size_t i = 0; i < len && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    if (len > max) fputs("...", stdout);
    putchar('"');
}

/* s as one word of the shell: in single quotes, each ' written as '\\'' */
static void print_shell_quoted(const char *s) {
    putchar('\'');
    for (; *s; s++) {
        if (*s == '\'') fputs("'\\''", stdout);
        else putchar(*s);
    }
    putchar('\'');
}

/* The text of ids, quoted (the decoder's own text, special tokens shown). */
static void print_ids_text(const mt_tokenizer *tok, const int32_t *ids, size_t n, size_t max) {
    char *text = NULL;
    size_t len = 0;
    mt_err err;
    if (mt_tokenizer_decode(tok, ids, n, 0, &text, &len, &err)) {
        printf("(%s)", err.msg);
        return;
    }
    print_quoted(text, len, max);
    free(text);
}

/* One token's text, quoted, in a column `width` characters wide (a piece cut short ends in "..."). */
static void print_token_cell(const mt_tokenizer *tok, int32_t id, int width) {
    char *text = NULL;
    size_t len = 0;
    mt_err err;
    char cell[256];
    int n = 0, cols = 0;   /* bytes, and characters shown (UTF-8 continuation bytes take no column) */
    if (!mt_tokenizer_decode(tok, &id, 1, 0, &text, &len, &err)) {
        cell[n++] = '"';
        cols++;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)text[i];
            bool lead = (c & 0xc0) != 0x80;
            if (lead && cols >= width - 5) {
                n += snprintf(cell + n, sizeof cell - (size_t)n, "...");
                cols += 3;
                break;
            }
            if (c == '\n' || c == '\t') {
                cell[n++] = '\\';
                cell[n++] = c == '\n' ? 'n' : 't';
                cols += 2;
            } else {
                cell[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
                cols += lead;
            }
        }
        cell[n++] = '"';
        cols++;
        free(text);
    }
    cell[n] = 0;
    fputs(cell, stdout);
    for (; cols < width; cols++) putchar(' ');
}

static void print_routing_table(const mt_config *c, const mt_tokenizer *tok, const int32_t *seq, int n_prompt,
                                const demo_result *r) {
    int L = c->num_hidden_layers, k = c->top_k;
    printf("     pos  %-16s", "token");
    for (int l = 0; l < L; l++) printf("  layer %-*d", k * 3 - 6 > 0 ? k * 3 - 6 : 0, l);
    putchar('\n');
    for (int t = 0; t < r->rows; t++) {
        printf("   %5d  ", t);
        print_token_cell(tok, seq[t], 16);
        for (int l = 0; l < L; l++) {
            char cell[128];
            int n = 0;
            const int32_t *ids = r->routing + ((size_t)t * L + l) * k;
            if (!c->layer_is_moe[l]) {
                n = snprintf(cell, sizeof cell, "-");
            } else {
                for (int j = 0; j < k && n < (int)sizeof cell - 8; j++) n += snprintf(cell + n, sizeof cell - n, "%s%d", j ? " " : "", ids[j]);
            }
            int width = l == L - 1 && t < n_prompt ? 0 : k * 3 > 7 ? k * 3 : 7;   /* no padding at a line's end */
            printf("  %-*s", width, cell);
        }
        if (t >= n_prompt) fputs("  (generated)", stdout);
        putchar('\n');
    }
}

/* ---- the demo --------------------------------------------------------------------------------- */

typedef struct demo_state {
    demo_args a;
    char out[4096], model_dir[4096], dump[4096];
    char per_token_dir[4096]; /* out/per_token: step 7's dump, apart from the stat dumps (as profile) */
    mt_model model;
    bool model_loaded;
    mt_tokenizer *tok;
    demo_traffic traffic;
    demo_result solo, *first;   /* first: the batched run's results, kept for step 5 */
    mt_recorder *rec, *rec_plc, *rec_tok; /* rec_tok: per_token, step 3's traffic (step 7) */
    mt_placement plc;
    int64_t *count, *phys;
    mt_err err;
} demo_state;

static int path_in(char *buf, size_t cap, const char *dir, const char *name, mt_err *err) {
    if (snprintf(buf, cap, "%s/%s", dir, name) >= (int)cap) return mt_errf(err, "%s: path too long", dir);
    return 0;
}

static int setup(demo_state *s) {
    demo_args *a = &s->a;
    if (a->out) {
        if (mkdir(a->out, 0755) && access(a->out, W_OK))
            return mt_errf(&s->err, "--out %s: cannot create or write", a->out);
        snprintf(s->out, sizeof s->out, "%s", a->out);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(s->out, sizeof s->out, "%s/moetrace-demo-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(s->out)) return mt_errf(&s->err, "cannot create a folder %s", s->out);
    }
    if (path_in(s->model_dir, sizeof s->model_dir, s->out, "demo-model", &s->err)) return -1;
    if (mt_demo_model_write(s->model_dir, &s->err)) return -1;
    if (mt_cli_open_model(&s->model, s->model_dir, MT_LOAD_AUTO, a->device, &s->err)) return -1;
    s->model_loaded = true;
    if (mt_tokenizer_load(&s->tok, s->model_dir, &s->err)) return -1;
    mt_kernels_init(a->threads);

    demo_traffic *t = &s->traffic;
    t->n = N_REQUESTS;
    t->ids = calloc(N_REQUESTS, sizeof *t->ids);
    t->len = calloc(N_REQUESTS, sizeof *t->len);
    t->res = calloc(N_REQUESTS, sizeof *t->res);
    s->first = calloc(N_REQUESTS, sizeof *s->first);
    t->route_row = (size_t)s->model.cfg.num_hidden_layers * s->model.cfg.top_k;
    if (!t->ids || !t->len || !t->res || !s->first) return mt_errf(&s->err, "out of memory");
    for (int i = 0; i < N_REQUESTS; i++) {
        const char *p = i == 0 ? a->prompt : OTHER_PROMPTS[i - 1];
        size_t n = 0;
        if (mt_tokenizer_encode(s->tok, p, strlen(p), 1, &t->ids[i], &n, &s->err)) return -1;
        if (n == 0) return mt_errf(&s->err, "the prompt \"%s\" has no tokens", p);
        if ((int)n + a->max_new_tokens > s->model.cfg.max_position_embeddings)
            return mt_errf(&s->err, "the prompt (%zu tokens) and %d new tokens exceed the model's context of %d", n,
                           a->max_new_tokens, s->model.cfg.max_position_embeddings);
        t->len[i] = (int)n;
    }
    return 0;
}

/* The MoE layers of c as "0, 2, 3" into buf. */
static const char *moe_layer_list(const mt_config *c, char *buf, size_t cap) {
    size_t n = 0;
    for (int l = 0; l < c->num_hidden_layers && n + 8 < cap; l++)
        if (c->layer_is_moe[l]) n += (size_t)snprintf(buf + n, cap - n, "%s%d", n ? ", " : "", l);
    return buf;
}

/* Steps 1 and 2: the request alone. */
static int step_generate(demo_state *s) {
    const mt_config *c = &s->model.cfg;
    demo_traffic *t = &s->traffic;
    if (run_traffic(&s->model, t, 1, 1, 512, s->a.max_new_tokens, NULL, NULL, &s->err)) return -1;
    s->solo = t->res[0];
    memset(&t->res[0], 0, sizeof t->res[0]);
    printf("1. Generate   [moetrace run --model %s --prompt ", s->model_dir);
    print_shell_quoted(s->a.prompt);
    printf(" --max-new-tokens %d --routing-out routing.npy]\n", s->a.max_new_tokens);
    printf("   prompt     ");
    print_ids_text(s->tok, t->ids[0], (size_t)t->len[0], 200);
    printf("  (%d tokens)\n   continues  ", t->len[0]);
    print_ids_text(s->tok, s->solo.output, (size_t)s->solo.n_generated, 400);
    printf("  (%d tokens, greedy)\n\n", s->solo.n_generated);

    char path[4096];
    int64_t shape[3] = {s->solo.rows, c->num_hidden_layers, c->top_k};
    if (path_in(path, sizeof path, s->out, "routing.npy", &s->err) ||
        mt_npy_write(path, MT_NPY_I32, s->solo.routing, 3, shape, &s->err))
        return -1;
    printf("2. Where every token went   (routing.npy: int32 [%d, %d, %d]: the prompt and every generated token\n"
           "   but the last, logical expert ids highest weight first, -1 on dense layers, shown as -)\n",
           s->solo.rows, c->num_hidden_layers, c->top_k);
    int32_t *seq = malloc(((size_t)t->len[0] + s->solo.n_generated) * sizeof *seq);
    if (!seq) return mt_errf(&s->err, "out of memory");
    memcpy(seq, t->ids[0], (size_t)t->len[0] * sizeof *seq);
    memcpy(seq + t->len[0], s->solo.output, (size_t)s->solo.n_generated * sizeof *seq);
    print_routing_table(c, s->tok, seq, t->len[0], &s->solo);
    free(seq);
    putchar('\n');
    return 0;
}

/* A stat recorder's options: an unbounded window, dumps into the demo's folder, balancedness over
 * the demo's GPUs. */
static mt_recorder_opts stat_opts(const demo_state *s) {
    mt_recorder_opts ro;
    mt_recorder_opts_default(&ro);
    ro.mode = MT_REC_STAT;
    ro.buffer_size = -1;
    ro.dump_dir = s->out;
    ro.ep_size = DEMO_GPUS;
    return ro;
}

/* Steps 3 and 4: the request among the others, with the stat recorder on. */
static int step_batch(demo_state *s) {
    const mt_config *c = &s->model.cfg;
    demo_traffic *t = &s->traffic;
    mt_recorder_opts ro = stat_opts(s);
    if (!(s->rec = mt_recorder_new(c, s->model.name, &ro, &s->err))) return -1;
    mt_recorder_start(s->rec);
    ro.mode = MT_REC_PER_TOKEN;
    if (path_in(s->per_token_dir, sizeof s->per_token_dir, s->out, "per_token", &s->err)) return -1;
    if (mkdir(s->per_token_dir, 0755) && errno != EEXIST)
        return mt_errf(&s->err, "cannot create %s: %s", s->per_token_dir, strerror(errno));
    ro.dump_dir = s->per_token_dir; /* so out/expert_distribution_*.json are the stat dumps alone */
    if (!(s->rec_tok = mt_recorder_new(c, s->model.name, &ro, &s->err))) return -1;
    mt_recorder_start(s->rec_tok);
    mt_routing_fanout fan = {0};
    mt_routing_fanout_add(&fan, mt_recorder_sink(s->rec));
    mt_routing_fanout_add(&fan, mt_recorder_sink(s->rec_tok));
    mt_routing_sink sink = mt_routing_fanout_sink(&fan);
    if (run_traffic(&s->model, t, N_REQUESTS, N_REQUESTS, DEMO_CHUNK, s->a.max_new_tokens, NULL, &sink, &s->err))
        return -1;
    printf("3. Batch invariance   (the request among %d others, %d at once, forward passes of at most %d tokens\n"
           "   mixing prefill chunks and decode tokens of different sequences)\n",
           N_OTHERS, N_REQUESTS, DEMO_CHUNK);
    printf("   %ld forward passes, %ld tokens\n", t->passes, t->tokens);
    bool same = same_result(&s->solo, &t->res[0], t->route_row);
    printf("   the request's routing (%d x %d x %d) and tokens: %s\n\n", s->solo.rows, c->num_hidden_layers, c->top_k,
           same ? "identical to its run alone, bit for bit" : "DIFFERENT from its run alone");
    memcpy(s->first, t->res, N_REQUESTS * sizeof *t->res);
    memset(t->res, 0, N_REQUESTS * sizeof *t->res);
    if (!same) return mt_errf(&s->err, "batching changed the request's routing or tokens");

    int L = c->num_hidden_layers, E = c->num_experts;
    s->count = malloc((size_t)L * E * sizeof *s->count);
    if (!s->count) return mt_errf(&s->err, "out of memory");
    mt_recorder_logical_count(s->rec, s->count);
    char *dump = s->dump, png[4096];
    if (mt_recorder_dump(s->rec, dump, sizeof s->dump, &s->err)) return -1;
    mt_stat_dump d;
    if (mt_stat_dump_load(dump, &d, &s->err)) return -1;
    mt_report_opts rop = {.ep_size = DEMO_GPUS};
    int rrc = path_in(png, sizeof png, s->out, "heatmap.png", &s->err) || mt_report_render(&d, png, &rop, &s->err);
    mt_stat_dump_free(&d);
    if (rrc) return -1;
    printf("4. Expert load   (the stat recorder over that traffic: %ld tokens; [moetrace profile] records it so)\n",
           t->tokens);
    printf("   tokens routed to each expert, and balancedness over %d GPUs of %d experts each (mean / max load)\n",
           DEMO_GPUS, E / DEMO_GPUS);
    printf("          ");
    for (int e = 0; e < E; e++) printf(" %5s%-2d", "e", e);
    printf("  balancedness\n");
    double sum = 0;
    int moe = 0;
    for (int l = 0; l < L; l++) {
        if (!c->layer_is_moe[l]) continue;
        printf("   layer %d", l);
        for (int e = 0; e < E; e++) printf(" %7lld", (long long)s->count[(size_t)l * E + e]);
        double b = mt_balancedness_contiguous(s->count + (size_t)l * E, E, DEMO_GPUS);
        printf("  %.3f\n", b);
        sum += b;
        moe++;
    }
    printf("   mean balancedness %.3f; stat dump %s, heatmap heatmap.png\n\n", moe ? sum / moe : 1.0, strrchr(dump, '/') + 1);
    return 0;
}

/* Step 5: EPLB over the recorded load, and the same traffic run under its placement. */
static int step_eplb(demo_state *s) {
    const mt_config *c = &s->model.cfg;
    demo_traffic *t = &s->traffic;
    int L = c->num_hidden_layers, E = c->num_experts, R = E + DEMO_REDUNDANT;
    char plc_path[4096], replicas[16], gpus[16];
    if (path_in(plc_path, sizeof plc_path, s->out, "placement.json", &s->err)) return -1;
    snprintf(replicas, sizeof replicas, "%d", R);
    snprintf(gpus, sizeof gpus, "%d", DEMO_GPUS);
    /* what `moetrace eplb` writes, by the command itself */
    char *eplb_argv[] = {"--counts", s->dump, "--num-replicas", replicas, "--num-gpus", gpus, "--out", plc_path};
    if (cmd_eplb((int)(sizeof eplb_argv / sizeof eplb_argv[0]), eplb_argv))
        return mt_errf(&s->err, "moetrace eplb failed (its message is above)");
    mt_moe_shape shape;
    mt_moe_shape_from_config(c, &shape);
    mt_placement_opts po = {.ep_size = 0, .num_redundant = -1};
    if (mt_placement_load(plc_path, &shape, &po, &s->plc, &s->err)) return -1;

    mt_recorder_opts ro = stat_opts(s); /* DEMO_GPUS: the placement's GPUs */
    ro.placement = &s->plc;
    if (!(s->rec_plc = mt_recorder_new(c, s->model.name, &ro, &s->err))) return -1;
    mt_recorder_start(s->rec_plc);
    mt_routing_sink sink = mt_recorder_sink(s->rec_plc);
    if (run_traffic(&s->model, t, N_REQUESTS, N_REQUESTS, DEMO_CHUNK, s->a.max_new_tokens, &s->plc, &sink, &s->err))
        return -1;
    int changed = 0;
    for (int i = 0; i < N_REQUESTS; i++) changed += !same_result(&s->first[i], &t->res[i], t->route_row);

    printf("5. An expert-parallel placement   [moetrace eplb --counts %s --num-replicas %d --num-gpus %d\n"
           "   --out placement.json]: EPLB put %d experts in %d slots on %d GPUs (%d each), replicating the busiest:\n",
           strrchr(s->dump, '/') + 1, R, DEMO_GPUS, E, R, DEMO_GPUS, R / DEMO_GPUS);
    for (int row = 0; row < s->plc.num_moe_layers; row++) {
        printf("     layer %d:", s->plc.moe_layers[row]);
        for (int e = 0; e < E; e++)
            if (s->plc.logcnt[(size_t)row * E + e] > 1) printf(" e%d x%d", e, s->plc.logcnt[(size_t)row * E + e]);
        printf("   GPUs:");
        for (int g = 0; g < DEMO_GPUS; g++) {
            printf(" [");
            for (int j = 0; j < s->plc.slots_per_gpu; j++)
                printf("%s%d", j ? " " : "", s->plc.phy2log[(size_t)row * R + g * s->plc.slots_per_gpu + j]);
            printf("]");
        }
        putchar('\n');
    }
    printf("   the same traffic run under it   [--init-expert-location placement.json]: each routed token goes\n"
           "   to one replica of its expert; balancedness over the %d GPUs, contiguous blocks -> placement:\n",
           DEMO_GPUS);
    s->phys = malloc((size_t)L * R * sizeof *s->phys);
    if (!s->phys) return mt_errf(&s->err, "out of memory");
    if (mt_recorder_physical_count(s->rec_plc, s->phys)) return mt_errf(&s->err, "the recorder kept no physical counts");
    double before = 0, after = 0;
    int moe = 0;
    for (int l = 0; l < L; l++) {
        if (!c->layer_is_moe[l]) continue;
        double b = mt_balancedness_contiguous(s->count + (size_t)l * E, E, DEMO_GPUS);
        double a = mt_balancedness_contiguous(s->phys + (size_t)l * R, R, DEMO_GPUS);
        printf("     layer %d   %.3f -> %.3f\n", l, b, a);
        before += b;
        after += a;
        moe++;
    }
    if (moe) printf("     mean      %.3f -> %.3f\n", before / moe, after / moe);
    printf("   routing returned to the %d requests (logical ids) and their tokens: %s\n", N_REQUESTS,
           changed ? "CHANGED by the placement" : "unchanged by the placement");
    if (changed) return mt_errf(&s->err, "the placement changed the routing or tokens of %d requests", changed);

    char dump[4096], png[4096];
    if (mt_recorder_dump(s->rec_plc, dump, sizeof dump, &s->err)) return -1;
    mt_stat_dump d;
    if (mt_stat_dump_load(dump, &d, &s->err)) return -1;
    mt_report_opts rop = {0};
    int rrc = path_in(png, sizeof png, s->out, "load.png", &s->err) || mt_report_render(&d, png, &rop, &s->err);
    mt_stat_dump_free(&d);
    if (rrc) return -1;
    printf("   stat dump under the placement %s; per-GPU load before and after: load.png\n\n", strrchr(dump, '/') + 1);
    return 0;
}

/* domains.jsonl: the labelled prompts, as `moetrace profile --domain-field domain` reads them. */
static int write_domain_data(const char *path, mt_err *err) {
    FILE *f = fopen(path, "w");
    if (!f) return mt_errf(err, "cannot write %s", path);
    for (int i = 0; i < N_DOMAIN_PROMPTS; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "domain", DOMAIN_PROMPTS[i][0]);
        cJSON_AddStringToObject(o, "prompt", DOMAIN_PROMPTS[i][1]);
        char *line = cJSON_PrintUnformatted(o);
        if (line) fprintf(f, "%s\n", line);
        free(line);
        cJSON_Delete(o);
    }
    return fclose(f) ? mt_errf(err, "cannot write %s", path) : 0;
}

/* One domain's line of step 6 from domains.json's entry d: its tokens, divergence and the most
 * distinctive expert of each MoE layer with its lift. */
static void print_domain(const cJSON *d) {
    const cJSON *div = cJSON_GetObjectItem(d, "divergence_mean"), *per = cJSON_GetObjectItem(d, "distinctive_experts_per_layer");
    printf("     %-9s %2d requests %4d tokens   divergence %.3f bits   distinctive:",
           cJSON_GetObjectItem(d, "name")->valuestring, cJSON_GetObjectItem(d, "requests")->valueint,
           cJSON_GetObjectItem(d, "tokens")->valueint, cJSON_IsNumber(div) ? div->valuedouble : 0.0);
    int l = 0;
    const cJSON *layer;
    cJSON_ArrayForEach(layer, per) {
        const cJSON *top = cJSON_GetArrayItem(layer, 0), *lift = top ? cJSON_GetObjectItem(top, "lift") : NULL;
        if (top && cJSON_IsNumber(lift))
            printf("  L%d e%d x%.1f", l, cJSON_GetObjectItem(top, "expert")->valueint, lift->valuedouble);
        l++;
    }
    printf("\n");
}

static int step_domains(demo_state *s) {
    const mt_config *c = &s->model.cfg;
    int L = c->num_hidden_layers, rc = -1;
    char data[4096];
    if (path_in(data, sizeof data, s->out, "domains.jsonl", &s->err) || write_domain_data(data, &s->err)) return -1;
    /* the prompts as `moetrace profile --domain-field domain` reads them */
    mt_text_tools tools = {s->model_dir, s->tok, NULL};
    mt_dataset d;
    if (mt_dataset_load(data, &tools, "domain", &d, &s->err)) return -1;
    demo_result res[N_DOMAIN_PROMPTS];
    memset(res, 0, sizeof res);
    int32_t groups[N_DOMAIN_PROMPTS];
    demo_traffic t = {.n = d.n, .ids = d.ids, .len = d.len, .groups = groups, .res = res,
                      .route_row = (size_t)L * c->top_k};
    mt_domain_usage *pd = NULL;
    cJSON *dj = NULL;
    mt_recorder_opts ro = stat_opts(s);
    if (d.n > N_DOMAIN_PROMPTS) {
        mt_errf(&s->err, "domains.jsonl: %d lines, %d expected", d.n, N_DOMAIN_PROMPTS);
        goto out;
    }
    if (!(pd = mt_profile_domains_new(&d, "domain", data, c, s->model.name, &ro, groups, &s->err))) goto out;
    t.domains = pd;
    mt_routing_sink sink = mt_domain_usage_sink(pd);
    if (run_traffic(&s->model, &t, d.n, d.n, DEMO_CHUNK, s->a.max_new_tokens, NULL, &sink, &s->err))
        goto out;
    char json_path[4096];
    if (mt_domain_usage_write(pd, s->out, true, json_path, sizeof json_path, &s->err)) goto out;
    if (!(dj = mt_json_load_file(json_path, &s->err))) goto out;
    printf("6. Expert use per domain   [moetrace profile --model %s --data domains.jsonl --domain-field domain ...]\n"
           "   %d prose and %d command-line prompts, each domain recorded apart: how far its routing is from the\n"
           "   other's (Jensen-Shannon divergence, 0 to 1 bit) and, per MoE layer, its most distinctive expert\n"
           "   with its lift (its share of the domain's tokens over its share of all):\n",
           s->model_dir, N_DOMAIN_PROMPTS / 2, N_DOMAIN_PROMPTS / 2);
    const cJSON *dom;
    cJSON_ArrayForEach(dom, cJSON_GetObjectItem(dj, "domains")) print_domain(dom);
    printf("   domains.json, domains.png (every expert's lift per domain), a stat dump per domain in domains/\n\n");
    rc = 0;
out:
    for (int i = 0; i < d.n; i++) {
        free(res[i].output);
        free(res[i].routing);
    }
    mt_dataset_free(&d);
    cJSON_Delete(dj);
    mt_domain_usage_free(pd);
    return rc;
}

/* Step 7: the demo's request (request id 0, named "0" in the dump) out of step 3's per_token dump. */
static int step_trace(demo_state *s) {
    char index[4096], png[4096];
    if (mt_recorder_dump(s->rec_tok, index, sizeof index, &s->err)) return -1;
    mt_request_trace t;
    if (mt_request_trace_load(index, "0", &t, &s->err)) return -1;
    int rc = mt_request_trace_decode(&t, s->model_dir, &s->err) || path_in(png, sizeof png, s->out, "request.png", &s->err) ||
                     mt_request_trace_render(&t, png, &s->err) ? -1 : 0;
    if (rc == 0) {
        printf("7. One request, token by token   [moetrace report %s --request 0 --model %s --out request.png]\n"
               "   step 3's traffic as a per_token dump: the request's %lld tokens, each one's top-1 expert at every\n"
               "   layer, and the experts it used most (share of its tokens, all top-%d choices):\n   ",
               index, s->model_dir, (long long)t.n, t.top_k);
        for (int m = 0; m < t.num_moe_layers; m++) {
            int l = t.moe_layers[m], best = 0, n_best = -1;
            for (int e = 0; e < t.num_experts; e++) {
                int n = 0;
                for (int64_t i = 0; i < t.n; i++)
                    for (int k = 0; k < t.top_k; k++) n += t.experts[((size_t)i * t.num_hidden_layers + l) * t.top_k + k] == e;
                if (n > n_best) best = e, n_best = n;
            }
            printf("%slayer %d: e%d (%.0f%%)", m ? ", " : "", l, best, t.n ? 100.0 * n_best / (double)t.n : 0.0);
        }
        printf("\n   request.png\n\n");
    }
    mt_request_trace_free(&t);
    return rc;
}

static void free_state(demo_state *s, bool kernels) {
    demo_traffic *t = &s->traffic;
    for (int i = 0; i < t->n; i++) {
        if (t->ids) free(t->ids[i]);
        if (t->res) {
            free(t->res[i].output);
            free(t->res[i].routing);
        }
        if (s->first) {
            free(s->first[i].output);
            free(s->first[i].routing);
        }
    }
    free(t->ids);
    free(t->len);
    free(t->res);
    free(s->first);
    free(s->solo.output);
    free(s->solo.routing);
    mt_recorder_free(s->rec);
    mt_recorder_free(s->rec_plc);
    mt_recorder_free(s->rec_tok);
    mt_placement_free(&s->plc);
    free(s->count);
    free(s->phys);
    mt_tokenizer_free(s->tok);
    if (kernels) mt_kernels_shutdown();
    if (s->model_loaded) mt_model_free(&s->model);
    free(s);
}

int cmd_demo(int argc, char **argv) {
    demo_state *s = calloc(1, sizeof *s);
    if (!s) {
        fprintf(stderr, "moetrace: demo: out of memory\n");
        return 1;
    }
    if (parse(&s->a, argc, argv)) {
        free(s);
        return 2;
    }
    int rc = 1;
    bool kernels = false;
    if (setup(s)) goto fail;
    kernels = true;
    const mt_config *c = &s->model.cfg;
    char moe[256] = "";
    printf("moetrace demo: the embedded model (%s: %d layers, MoE on layers %s, %d experts, top-%d, vocab %d), on %s\n"
           "files in %s (demo-model/ is the checkpoint: every command takes --model %s)\n\n",
           c->model_type, c->num_hidden_layers, moe_layer_list(c, moe, sizeof moe), c->num_experts, c->top_k,
           c->vocab_size, s->a.device, s->out, s->model_dir);
    if (step_generate(s) || step_batch(s) || step_eplb(s) || step_domains(s) || step_trace(s)) goto fail;
    printf("Next: moetrace serve --model %s --enable-return-routed-experts\n"
           "      then curl -s localhost:30000/generate -d '{\"text\": \"The recorder\", \"return_routed_experts\": true}'\n",
           s->model_dir);
    fflush(stdout);
    rc = 0;
    goto done;
fail:
    fflush(stdout);
    fprintf(stderr, "moetrace: demo: %s\n", s->err.msg);
done:
    free_state(s, kernels);
    return rc;
}
