/* GPU figures on a full-size shape with dummy weights, each against a ceiling measured in the same
 * run on the same device (device-to-device copy bandwidth; a large bf16 cuBLAS product):
 *  - decode tokens/s at batch 1, 64, 256 against the bandwidth roofline of the bytes a step must
 *    read (attention, router, the experts actually touched, lm_head, embedding rows, K/V);
 *  - prefill tokens/s for 8 prompts of 2,048 tokens against cuBLAS throughput in model FLOPs;
 *  - the cost of per-request routing capture and of `stat` recording at batch 64 (alternating);
 *  - sampled decode at batch 64 (device sampling, with and without each token's log-probability, with
 *    penalties over the context, and the logits copied out and sampled on the host)
 *    against greedy (alternating).
 *
 *   build/bench_cuda [--model DIR] [--context P] [--steps N] [--reps R] [--figures decode|prefill|recording|sampling]
 *                    [--only decodeB|prefill] [--batch B]
 *   build/bench_cuda --figures stages [--batch B]    (what each kind of launch costs in a decode step)
 *   build-tl/bench_cuda --figures timeline [--batch B] [--timeline-csv FILE]  (when each launch's blocks
 *                    start, pass their wait and end, in a build configured with
 *                    -DMOETRACE_CUDA_TIMELINE=ON; FILE gets every block's record)
 *   build/bench_cuda --figures ceiling   (read-only launches of a layer's sizes: what the memory gives them)
 * --figures measures one group of figures (with the ceilings), --batch only that decode batch; --only runs one figure (decode at batch B, or prefill) and brackets two of its passes for `ncu --profile-from-start off`.
 * DIR holds a config.json (default bench/configs/qwen3-30b-a3b, Qwen3-30B-A3B). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/cuda_backend.h"
#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/penalties.h"
#include "routing/capture.h"
#include "routing/recorder.h"
#include "timeline_report.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static void die(const char *what, const mt_err *err) {
    fprintf(stderr, "bench_cuda: %s: %s\n", what, err->msg);
    exit(1);
}

/* ---- bytes and FLOPs of the model -------------------------------------------------------------- */

typedef struct shape_costs {
    double attn_params;     /* q, k, v, o per layer */
    double router_params;   /* per MoE layer */
    double expert_params;   /* one expert (gate, up, down) */
    double dense_params;    /* dense MLP per dense layer */
    double lm_head_params;
    int moe_layers, dense_layers;
} shape_costs;

static shape_costs costs_of(const mt_config *c) {
    shape_costs s;
    double H = c->hidden_size, qd = (double)c->num_attention_heads * c->head_dim,
           kvd = (double)c->num_key_value_heads * c->head_dim;
    s.attn_params = H * qd * 2 + H * kvd * 2;
    s.router_params = H * c->num_experts;
    s.expert_params = 3.0 * H * c->moe_intermediate_size;
    s.dense_params = 3.0 * H * c->intermediate_size;
    s.lm_head_params = H * c->vocab_size;
    s.moe_layers = c->num_moe_layers;
    s.dense_layers = c->num_hidden_layers - c->num_moe_layers;
    return s;
}

/* ---- a decode workload: B sequences of P prompt tokens, then steps -------------------------------- */

typedef struct workload {
    const mt_model *m;
    mt_kv_cache *kv;
    int B, len;                 /* sequences, tokens so far in each */
    mt_kv_seq *seqs, **seq_ptrs;
    int32_t *tokens, *seq_ids, *pos, *rows, *picked;   /* [rows] the pass's next token per logit row */
    int32_t *next;              /* [B] each sequence's next token */
    const mt_sample_row *sample; /* [B] each row's sampling on the device, or NULL (argmax) */
    const mt_sample_row *host_sample; /* [B] instead: copy the logits out and sample on the host */
    float *logprobs;            /* [B] or NULL: each row's token's log-probability, asked of the pass */
    int top_n;                  /* alternatives listed per row (with logprobs), into top_ids/top_lps */
    int32_t *top_ids;           /* [B, MT_TOP_LOGPROBS_MAX] */
    float *top_lps;
    float *logits;              /* [B, vocab] for host_sample */
    uint64_t *work;             /* [vocab] */
    mt_penalties *pen;          /* [B] or NULL: each sequence's penalties, whose logit changes each step
                                   builds (inside its time) and hands to the pass */
    mt_logit_adjust *adj;       /* the step's changes */
    size_t adj_cap;
} workload;

/* Positions each sequence of a figure's workload reserves (its steps after a prompt of P): the
 * recording figure's 3 modes take turns over reps rounds of `steps` steps; the sampling figure's 7
 * modes over 3 rounds; the stage costs' 14 settings over 3 rounds of `steps` steps and 2 to
 * recapture; the timeline a few steps. main sizes the KV cache from them. */
/* the decode figure: warm-up, its steps twice (plain and overlapped), 4 counting, 4 profiled */
#define DECODE_LEN(P, steps) ((P) + 2 * (steps) + 16)
#define RECORDING_LEN(P, steps, reps) ((P) + (steps) * (3 * (reps) + 2) + 8)
enum { SAMPLING_MODES = 7, SAMPLING_ROUNDS = 3, STAGE_SETTINGS = 14, STAGE_ROUNDS = 3, TIMELINE_STEPS = 5 };
#define SAMPLING_LEN(P, steps) ((P) + (steps) * SAMPLING_MODES * SAMPLING_ROUNDS + 8)
#define STAGES_LEN(P, steps) ((P) + STAGE_SETTINGS * STAGE_ROUNDS * ((steps) + 2) + 8)
/* KV blocks that B sequences reserving len positions each hold, with a block to spare each. */
static int blocks_for(int B, int len) {
    return B * ((len + MT_KV_BLOCK - 1) / MT_KV_BLOCK + 1);
}
static int max_int(int a, int b) {
    return a > b ? a : b;
}

static void workload_init(workload *w, const mt_model *m, mt_kv_cache *kv, int B, int P, int max_len, int prefill_chunk) {
    mt_err err;
    memset(w, 0, sizeof *w);
    w->m = m;
    w->kv = kv;
    w->B = B;
    w->seqs = calloc((size_t)B, sizeof *w->seqs);
    w->seq_ptrs = calloc((size_t)B, sizeof *w->seq_ptrs);
    int cap = B * P > B ? B * P : B;
    if (cap < prefill_chunk) cap = prefill_chunk;
    w->tokens = malloc((size_t)cap * sizeof(int32_t));
    w->seq_ids = malloc((size_t)cap * sizeof(int32_t));
    w->pos = malloc((size_t)cap * sizeof(int32_t));
    w->rows = malloc((size_t)cap * sizeof(int32_t));
    w->picked = malloc((size_t)cap * sizeof(int32_t));
    w->next = malloc((size_t)B * sizeof(int32_t));
    for (int s = 0; s < B; s++) {
        w->seq_ptrs[s] = &w->seqs[s];
        if (mt_kv_seq_reserve(kv, &w->seqs[s], max_len, &err)) die("KV reserve", &err);
    }
    /* prefill, several sequences per pass */
    uint32_t r = 12345;
    int per_pass = prefill_chunk / P > 0 ? prefill_chunk / P : 1;
    for (int s0 = 0; s0 < B; s0 += per_pass) {
        int n = 0, nl = 0;
        for (int s = s0; s < B && s < s0 + per_pass; s++) {
            for (int p = 0; p < P; p++, n++) {
                r = r * 1664525u + 1013904223u;
                w->tokens[n] = (int32_t)(r >> 8) % m->cfg.vocab_size;
                w->seq_ids[n] = s;
                w->pos[n] = p;
            }
            w->rows[nl++] = n - 1;
        }
        mt_batch b = {.n_tokens = n, .tokens = w->tokens, .seq_ids = w->seq_ids, .positions = w->pos,
                      .seqs = w->seq_ptrs, .num_seqs = B, .n_logits = nl, .logit_rows = w->rows, .next_tokens = w->picked};
        if (mt_forward(m, kv, &b, NULL, NULL, &err)) die("prefill", &err);
        for (int i = 0; i < nl; i++) w->next[s0 + i] = w->picked[i];
    }
    w->len = P;
}

/* One decode step of all B sequences (greedy on the device); returns seconds. */
static double workload_step(workload *w, const mt_routing_sink *sink) {
    mt_err err;
    for (int s = 0; s < w->B; s++) {
        w->tokens[s] = w->next[s];
        w->seq_ids[s] = s;
        w->pos[s] = w->len;
        w->rows[s] = s;
    }
    mt_batch b = {.n_tokens = w->B, .tokens = w->tokens, .seq_ids = w->seq_ids, .positions = w->pos,
                  .seqs = w->seq_ptrs, .num_seqs = w->B, .n_logits = w->B, .logit_rows = w->rows, .next_tokens = w->picked,
                  .sample = w->sample, .next_logprobs = w->logprobs, .top_n = w->top_n, .top_ids = w->top_ids,
                  .top_logprobs = w->top_lps};
    int V = w->m->cfg.vocab_size;
    if (w->host_sample) {   /* what a backend without device sampling does */
        b.next_tokens = NULL;
        if (!w->logits) w->logits = malloc((size_t)w->B * V * sizeof(float));
        if (!w->work) w->work = malloc((size_t)V * sizeof(uint64_t));
    }
    double t0 = now_s();
    if (w->pen) {   /* what the engine does for penalised rows: their changes, built each step */
        size_t need = 0;
        for (int s = 0; s < w->B; s++) need += (size_t)mt_penalties_max_changes(&w->pen[s]);
        if (need > w->adj_cap) {
            free(w->adj);
            w->adj = malloc(need * sizeof *w->adj);
            w->adj_cap = need;
        }
        for (int s = 0; s < w->B; s++) b.n_adjusts += mt_penalties_row(&w->pen[s], s, w->len, w->adj + b.n_adjusts);
        b.adjusts = w->adj;
    }
    if (mt_forward(w->m, w->kv, &b, w->logits, sink, &err)) die("decode", &err);
    if (w->host_sample)
        for (int i = 0; i < w->B; i++) w->picked[i] = mt_sample_pick(&w->host_sample[i], w->logits + (size_t)i * V, V, w->work);
    for (int s = 0; w->pen && s < w->B; s++) mt_penalties_add_output(&w->pen[s], w->picked[s]);
    double t = now_s() - t0;
    memcpy(w->next, w->picked, (size_t)w->B * sizeof(int32_t));
    w->len++;
    return t;
}

/* `steps` decode steps of all B sequences (greedy on the device) overlapped as the engine runs them
 * (mt_engine_opts.overlap): step i + 1 is begun, its tokens the picks of step i (MT_TOKEN_OF_ROW),
 * before step i ends. t[i]: seconds between the ends of steps i - 1 and i (the first from its begin). */
static void workload_overlapped(workload *w, int steps, double *t) {
    mt_err err;
    int B = w->B;
    int32_t *tok = malloc(2 * (size_t)B * sizeof *tok), *pos = malloc(2 * (size_t)B * sizeof *pos);
    int32_t *next = malloc(2 * (size_t)B * sizeof *next);
    mt_batch b[2];
    for (int s = 0; s < B; s++) {
        w->seq_ids[s] = s;
        w->rows[s] = s;
    }
    for (int h = 0; h < 2; h++)
        b[h] = (mt_batch){.n_tokens = B, .tokens = tok + h * B, .seq_ids = w->seq_ids, .positions = pos + h * B,
                          .seqs = w->seq_ptrs, .num_seqs = B, .n_logits = B, .logit_rows = w->rows,
                          .next_tokens = next + h * B};
    mt_passes q = {0};
    double last = now_s();
    for (int i = 0; i <= steps; i++) {
        if (i < steps) {   /* step i begins while step i - 1 is in flight */
            mt_batch *bi = &b[i % 2];
            for (int s = 0; s < B; s++) {
                tok[(i % 2) * B + s] = i == 0 ? w->next[s] : MT_TOKEN_OF_ROW(s);
                pos[(i % 2) * B + s] = w->len + i;
            }
            if (mt_forward_begin(w->m, w->kv, &q, bi, NULL, NULL, &err)) die("decode (overlapped)", &err);
        }
        if (i == 0) continue;
        if (mt_forward_end(w->m, &q, &err)) die("decode (overlapped)", &err);
        double now = now_s();
        t[i - 1] = now - last;
        last = now;
    }
    memcpy(w->next, next + ((steps - 1) % 2) * B, (size_t)B * sizeof *w->next);
    w->len += steps;
    mt_passes_free(&q);
    free(tok);
    free(pos);
    free(next);
}

static void workload_free(workload *w) {
    for (int s = 0; s < w->B; s++) mt_kv_seq_release(w->kv, &w->seqs[s]);
    free(w->seqs); free(w->seq_ptrs); free(w->tokens); free(w->seq_ids); free(w->pos); free(w->rows); free(w->picked); free(w->next);
    free(w->logits); free(w->work); free(w->adj);
}

/* ---- sinks: per-request routing store (what the engine does), distinct-expert counter ---------- */

typedef struct request_store {
    int layers, k, max_len;
    int32_t *ids;   /* [B, max_len, layers, k] */
} request_store;

static void store_on_layer(void *ctx, const mt_routing_event *ev) {
    request_store *r = ctx;
    for (int i = 0; i < ev->n_tokens; i++) {
        int32_t *dst = r->ids + (((size_t)ev->seq_ids[i] * r->max_len + ev->positions[i]) * r->layers + ev->layer) * r->k;
        memcpy(dst, ev->topk_ids + (size_t)i * ev->top_k, (size_t)ev->top_k * sizeof(int32_t));
    }
}

typedef struct touched_counter {
    int E;
    long touched, layer_events;
    unsigned char *seen;
} touched_counter;

static void count_on_layer(void *ctx, const mt_routing_event *ev) {
    touched_counter *t = ctx;
    memset(t->seen, 0, (size_t)t->E);
    int distinct = 0;
    for (int i = 0; i < ev->n_tokens * ev->top_k; i++) {
        int e = ev->topk_ids[i];
        distinct += !t->seen[e];
        t->seen[e] = 1;
    }
    t->touched += distinct;
    t->layer_events++;
}

/* ---- figures ----------------------------------------------------------------------------------- */

typedef struct decode_figure {
    double step_s, tokens_per_s, bytes, roofline_s;
    double plain_step_s;        /* each step ended before the next begins (step_s: overlapped) */
    char profile[1024];
} decode_figure;

static decode_figure measure_decode(const mt_model *m, mt_kv_cache *kv, int B, int P, int steps, double copy_gbps) {
    const mt_config *c = &m->cfg;
    shape_costs sc = costs_of(c);
    workload w;
    workload_init(&w, m, kv, B, P, DECODE_LEN(P, steps), 8192);
    for (int i = 0; i < 2; i++) workload_step(&w, NULL);   /* warm-up */
    /* half the steps of each kind, then the other half, so both see the same contexts */
    double *t = malloc((size_t)steps * sizeof *t), *t_plain = malloc((size_t)steps * sizeof *t_plain);
    int half = steps / 2;
    for (int round = 0; round < 2; round++) {
        int from = round * half, n = round ? steps - half : half;
        for (int i = 0; i < n; i++) t_plain[from + i] = workload_step(&w, NULL);
        workload_overlapped(&w, n, t + from);
    }
    touched_counter tc = {c->num_experts, 0, 0, calloc((size_t)c->num_experts, 1)};
    mt_routing_sink count = {count_on_layer, NULL, &tc};
    for (int i = 0; i < 4; i++) workload_step(&w, &count);
    double touched_per_layer = (double)tc.touched / (double)tc.layer_events;
    decode_figure f;
    mt_cuda_profile(m, true);
    for (int i = 0; i < 4; i++) workload_step(&w, NULL);
    mt_cuda_profile(m, false);
    mt_cuda_profile_report(m, f.profile, sizeof f.profile);
    double ctx = P + 2 + steps / 2.0;
    double kv_bytes = ctx * c->num_key_value_heads * c->head_dim * 2.0 * 2.0 * c->num_hidden_layers;
    double params = c->num_hidden_layers * sc.attn_params + sc.moe_layers * (sc.router_params + touched_per_layer * sc.expert_params) +
                    sc.dense_layers * sc.dense_params + sc.lm_head_params + B * (double)c->hidden_size;
    f.bytes = params * 2.0 + B * kv_bytes;
    f.step_s = median(t, steps);
    f.plain_step_s = median(t_plain, steps);
    f.tokens_per_s = B / f.step_s;
    /* the copy's rate counts bytes read plus bytes written: that is what the memory moves per second,
     * and a stream that only reads moves its bytes at the same rate */
    f.roofline_s = f.bytes / (copy_gbps * 1e9);
    free(t);
    free(t_plain);
    free(tc.seen);
    workload_free(&w);
    return f;
}

/* What each kind of launch costs inside a decode step of batch B: the step with that kind left out
 * (mt_cuda_set_skip; tokens meaningless meanwhile), against the step with everything, the settings
 * taking turns in each of 3 rounds of `steps` steps (the context grows by one token a step).
 * Diagnostic only (--figures stages): not part of the default run. */
static void measure_stage_costs(const mt_model *m, mt_kv_cache *kv, int B, int P, int steps) {
    static const struct {
        const char *name;
        unsigned mask;
    } settings[] = {
        {"nothing (the step)", 0},
        {"q/k/v product", MT_SKIP_QKV},
        {"q/k prologue", MT_SKIP_QK_PREP},
        {"attention", MT_SKIP_ATTENTION},
        {"o product", MT_SKIP_O},
        {"RMSNorm launches", MT_SKIP_NORM},
        {"router product", MT_SKIP_ROUTER},
        {"route + sort", MT_SKIP_ROUTE_SORT},
        {"expert gate/up", MT_SKIP_GATE_UP},
        {"expert down", MT_SKIP_DOWN},
        {"combine", MT_SKIP_COMBINE},
        {"every product", MT_SKIP_QKV | MT_SKIP_O | MT_SKIP_ROUTER | MT_SKIP_GATE_UP | MT_SKIP_DOWN},
        /* the last two give the products' own chain: the step with them alone, less the step without
         * any launch of the layers (compare with --figures ceiling) */
        {"all but the products", MT_SKIP_QK_PREP | MT_SKIP_ATTENTION | MT_SKIP_NORM | MT_SKIP_ROUTE_SORT | MT_SKIP_COMBINE},
        {"every launch of a layer", MT_SKIP_QKV | MT_SKIP_QK_PREP | MT_SKIP_ATTENTION | MT_SKIP_O | MT_SKIP_NORM |
                                        MT_SKIP_ROUTER | MT_SKIP_ROUTE_SORT | MT_SKIP_GATE_UP | MT_SKIP_DOWN | MT_SKIP_COMBINE},
    };
    enum { N_SET = sizeof settings / sizeof settings[0], ROUNDS = 3 };
    _Static_assert((int)N_SET == (int)STAGE_SETTINGS && (int)ROUNDS == (int)STAGE_ROUNDS, "STAGES_LEN sizes the KV cache for these");
    workload w;
    int max_len = STAGES_LEN(P, steps);
    workload_init(&w, m, kv, B, P, max_len, 8192);
    workload_step(&w, NULL);   /* every output exists before any launch is left out */
    double t[N_SET][ROUNDS];
    for (int r = 0; r < ROUNDS; r++)
        for (int i = 0; i < N_SET; i++) {
            int k = (i + r) % N_SET;
            mt_cuda_set_skip(m, settings[k].mask);
            for (int s = 0; s < 2; s++) workload_step(&w, NULL);   /* the graph recaptured */
            double sum = 0;
            for (int s = 0; s < steps; s++) sum += workload_step(&w, NULL);
            t[k][r] = sum / steps;
        }
    mt_cuda_set_skip(m, 0);
    double base = median(t[0], ROUNDS);
    int layers = m->cfg.num_hidden_layers;
    printf("decode batch %d, context %d..%d: step %.3f ms (median of %d rounds)\n", B, P, max_len - 8, base * 1e3, ROUNDS);
    for (int i = 1; i < N_SET; i++) {
        double v = median(t[i], ROUNDS);
        printf("    without %-24s %.3f ms: %6.1f us a layer\n", settings[i].name, v * 1e3, (base - v) * 1e6 / layers);
    }
    printf("    the products alone: %.1f us a layer (the step with them alone, less the step without the layers)\n",
           (median(t[N_SET - 2], ROUNDS) - median(t[N_SET - 1], ROUNDS)) * 1e6 / layers);
    workload_free(&w);
}

/* Every record as a CSV row, in recording order (per multiprocessor), for analyses the report does
 * not make (which multiprocessors a launch's last blocks ran on, say). */
static void write_timeline_csv(const char *path, const mt_tl_block *rec, size_t n) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench_cuda: cannot write %s\n", path);
        return;
    }
    fprintf(f, "kind,grid,block,sm,t_enter,t_wait,t_exit,t_mark0,t_mark1\n");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s,%u,%u,%u,%llu,%llu,%llu,%llu,%llu\n", mt_tl_kind_name((int)rec[i].kind), rec[i].grid,
                rec[i].block, rec[i].sm, (unsigned long long)rec[i].t_enter, (unsigned long long)rec[i].t_wait,
                (unsigned long long)rec[i].t_exit, (unsigned long long)rec[i].t_mark[0],
                (unsigned long long)rec[i].t_mark[1]);
    fclose(f);
}

/* The kernel timeline of a few decode steps of batch B (builds with the timeline only); csv: when
 * set, every record is written there too. */
static void measure_timeline(const mt_model *m, mt_kv_cache *kv, int B, int P, const char *csv) {
    enum { STEPS = TIMELINE_STEPS };
    const size_t cap = (size_t)4 << 20;
    workload w;
    workload_init(&w, m, kv, B, P, P + STEPS + 16, 8192);
    for (int i = 0; i < 3; i++) workload_step(&w, NULL);   /* the graph captured */
    if (mt_cuda_timeline_begin(cap)) {
        printf("timeline: not in this build (configure with -DMOETRACE_CUDA_TIMELINE=ON)\n");
        workload_free(&w);
        return;
    }
    double sum = 0;
    for (int i = 0; i < STEPS; i++) sum += workload_step(&w, NULL);
    mt_tl_block *rec = malloc(cap * sizeof *rec);
    size_t recorded = 0, n = mt_cuda_timeline_end(rec, cap, &recorded);
    printf("decode batch %d, context %d, timeline build: step %.3f ms (mean of %d)\n", B, P, sum / STEPS * 1e3, STEPS);
    if (recorded > n) printf("timeline: %zu blocks recorded, only %zu kept: the report is wrong\n", recorded, n);
    tl_report(rec, n, m->cfg.num_hidden_layers);
    if (csv) write_timeline_csv(csv, rec, n);
    free(rec);
    workload_free(&w);
}

/* Prefill of B prompts of L tokens in one pass: best of 3, against cuBLAS in model FLOPs; with
 * `stages`, one more pass's device time per stage. */
static void measure_prefill(const mt_model *m, mt_kv_cache *kv, int B, int L, double gemm_tflops, bool stages) {
    const mt_config *c = &m->cfg;
    shape_costs sc = costs_of(c);
    workload w;
    memset(&w, 0, sizeof w);
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double s0 = now_s();
        workload_init(&w, m, kv, B, L, L + 1, B * L);
        double s = now_s() - s0;
        if (s < best) best = s;
        workload_free(&w);
    }
    double tokens = (double)B * L;
    double flops = 2.0 * tokens * (c->num_hidden_layers * sc.attn_params + sc.moe_layers * (sc.router_params + c->top_k * sc.expert_params) +
                                   sc.dense_layers * sc.dense_params) +
                   2.0 * B * sc.lm_head_params +
                   4.0 * c->head_dim * c->num_attention_heads * (double)B * L * (L + 1) / 2.0 * c->num_hidden_layers;
    printf("prefill %d x %d tokens: %8.0f tokens/s, %.3f s, %.0f TFLOP/s in model FLOPs -> %.0f%% of cuBLAS\n", B, L,
           tokens / best, best, flops / best / 1e12, 100.0 * flops / best / 1e12 / gemm_tflops);
    if (!stages) return;
    char prof[1024];
    mt_cuda_profile(m, true);
    workload_init(&w, m, kv, B, L, L + 1, B * L);
    workload_free(&w);
    mt_cuda_profile(m, false);
    mt_cuda_profile_report(m, prof, sizeof prof);
    printf("    stages: %s\n", prof);
}

/* One figure's passes for an external profiler: the warm-up unprofiled, then two passes inside the
 * profiler range. */
static int profile_only(const char *dir, const char *what, int P) {
    mt_err err;
    mt_model m;
    if (mt_model_load(&m, dir, MT_LOAD_SHAPES, &err) || mt_cuda_attach(&m, &err)) die(dir, &err);
    mt_kv_cache kv;
    int B = !strncmp(what, "decode", 6) ? atoi(what + 6) : 1;
    if (B < 1) B = 1;
    int blocks = 8 * (2048 / 16) + 64, decode_blocks = B * ((P + 32) / 16 + 2);
    if (mt_kv_cache_init_model(&kv, &m, blocks > decode_blocks ? blocks : decode_blocks, &err)) die("KV cache", &err);
    workload w;
    if (!strcmp(what, "prefill")) {
        workload_init(&w, &m, &kv, 8, 2048, 2049, 8 * 2048);
        workload_free(&w);
        mt_cuda_profiler_range(true);
        workload_init(&w, &m, &kv, 8, 2048, 2049, 8 * 2048);
        mt_cuda_profiler_range(false);
        workload_free(&w);
    } else {
        workload_init(&w, &m, &kv, B, P, P + 16, 8192);
        for (int i = 0; i < 4; i++) workload_step(&w, NULL);
        mt_cuda_profiler_range(true);
        for (int i = 0; i < 2; i++) workload_step(&w, NULL);
        mt_cuda_profiler_range(false);
        workload_free(&w);
    }
    mt_kv_cache_free(&kv);
    mt_model_free(&m);
    return 0;
}

/* --figures ceiling: what launches that only read, of a decode layer's product sizes at batch 1
 * (q/k/v, o, router, the top-k experts' gate/up, their down), cost at best; and one thread's L2
 * round trip with and without other multiprocessors streaming. Reads the config only. */
static int measure_read_ceiling(const char *dir, double copy_gbps) {
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, dir, MT_LOAD_SHAPES, &err)) die(dir, &err);
    const mt_config *c = &m.cfg;
    double H = c->hidden_size, qd = (double)c->num_attention_heads * c->head_dim,
           kvd = (double)c->num_key_value_heads * c->head_dim;
    const char *names[5] = {"q/k/v", "o", "router", "gate/up", "down"};
    /* how the small path streams each product at batch 1 (linear.cu as of this writing: the narrow
     * shape, 2 KB copies 2 deep, three blocks a multiprocessor; o the deep one, 3 KB copies 3 deep,
     * one block; the router's 8 tiles; gate/up reads its experts only after its wait) */
    const int narrow = 56 << 10, deep = 116 << 10;
    const int Hi = c->hidden_size, I = c->moe_intermediate_size, qdi = (int)qd;
    mt_read_launch ls[5] = {
        {(size_t)(2 * H * (qd + 2 * kvd)), 32 * Hi, 3, 2048, 2, narrow, 1},
        {(size_t)(2 * qd * H), 32 * qdi, 1, 3072, 3, deep, 1},
        {(size_t)(2 * H * c->num_experts), 32 * Hi, 3, 2048, 2, narrow, 0},
        {(size_t)(2 * c->top_k * 2.0 * I * H), 32 * Hi, 3, 2048, 2, narrow, 0},
        {(size_t)(2 * c->top_k * H * I), 32 * I, 3, 2048, 2, narrow, 1},
    };
    int layers = c->num_hidden_layers;
    mt_read_ceiling rc;
    if (mt_cuda_read_ceiling(ls, 5, layers, &rc, &err)) die("read ceiling", &err);
    printf("a layer's launches at batch 1 (%d layers):", layers);
    for (int i = 0; i < 5; i++) printf(" %s %.1f MB%s", names[i], ls[i].bytes / 1e6, i < 4 ? "," : "\n");
    double at_copy = rc.layer_bytes / (copy_gbps * 1e3);
    printf("%-60s %8.1f us\n", "their bytes at the copy rate", at_copy);
    printf("%-60s %8.1f us (%.0f%% of the copy rate)\n", "read-only launches, reading after the wait",
           rc.layer_us_wait_first, 100.0 * at_copy / rc.layer_us_wait_first);
    printf("%-60s %8.1f us (%.0f%%)\n", "read-only launches, first loads before the wait", rc.layer_us_early,
           100.0 * at_copy / rc.layer_us_early);
    printf("%-60s %8.1f us (%.0f%%)\n", "one read-only launch a layer", rc.layer_us_one_launch,
           100.0 * at_copy / rc.layer_us_one_launch);
    for (int v = 0; v < rc.n_variants; v++)
        printf("  %-70s %8.1f us (%.0f%%)\n", rc.variant[v].name, rc.variant[v].layer_us,
               100.0 * at_copy / rc.variant[v].layer_us);
    printf("%-60s %8.0f GB/s (%.0f%% of the copy rate)\n", "one launch reading every layer", rc.one_launch_gbps,
           100.0 * rc.one_launch_gbps / copy_gbps);
    printf("%-60s %8.0f ns\n", "one thread's dependent L2 load, idle", rc.l2_hop_ns_idle);
    printf("%-60s %8.0f ns\n", "... while the other multiprocessors stream", rc.l2_hop_ns_streaming_elsewhere);
    printf("%-60s %8.0f ns\n", "... while its own multiprocessor streams too", rc.l2_hop_ns_streaming_beside);
    mt_model_free(&m);
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = MT_SOURCE_DIR "/bench/configs/qwen3-30b-a3b";
    int P = 512, steps = 32, reps = 9;
    const char *only = NULL, *figures = NULL, *timeline_csv = NULL;
    int one_batch = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--context")) P = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--only")) only = argv[i + 1];
        else if (!strcmp(argv[i], "--figures")) figures = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) one_batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--timeline-csv")) timeline_csv = argv[i + 1];
    }
    if (one_batch < 0 || one_batch > 256) {
        fprintf(stderr, "bench_cuda: --batch takes 1 .. 256\n");
        return 2;
    }
    if (!mt_cuda_compiled() || mt_cuda_device_count() == 0) {
        printf("bench_cuda: no CUDA device (or no CUDA backend in this build); nothing to measure\n");
        return 0;
    }
    mt_err err;
    char dev[256];
    mt_cuda_describe(dev, sizeof dev);
    if (only) return profile_only(dir, only, P);
    double copy_gbps, gemm_tflops;
    if (mt_cuda_rooflines(&copy_gbps, &gemm_tflops, &err)) die("rooflines", &err);
    printf("device: %s\n", dev);
    printf("%-52s %10.0f GB/s (read + write)\n", "device-to-device copy", copy_gbps);
    printf("%-52s %10.0f TFLOP/s\n", "cuBLAS bf16 8192^3", gemm_tflops);

    if (figures && !strcmp(figures, "ceiling")) return measure_read_ceiling(dir, copy_gbps);

    mt_model m;
    double t0 = now_s();
    if (mt_model_load(&m, dir, MT_LOAD_SHAPES, &err) || mt_cuda_attach(&m, &err)) die(dir, &err);
    const mt_config *c = &m.cfg;
    printf("model: %s (%s, %d layers, %d experts top-%d, dummy bf16 weights made on the device in %.1f s)\n", m.name,
           c->model_type, c->num_hidden_layers, c->num_experts, c->top_k, now_s() - t0);

    int batches[3] = {1, 64, 256}, n_batches = 3;
    if (one_batch > 0) {   /* --batch B: that batch alone (any size the KV cache holds) */
        batches[0] = one_batch;
        n_batches = 1;
    }
    /* The KV cache: what the largest workload of the figures asked for reserves (each figure frees
     * its workload's blocks before the next), so that the run fits beside the weights of
     * Qwen3-30B-A3B (57 GiB) on an 80 GB H100. */
    int blocks = 64;
    if (!figures || !strcmp(figures, "decode"))
        for (int i = 0; i < n_batches; i++) blocks = max_int(blocks, blocks_for(batches[i], DECODE_LEN(P, steps)));
    if (!figures || !strcmp(figures, "prefill")) blocks = max_int(blocks, blocks_for(8, 2048 + 1));
    if (!figures || !strcmp(figures, "recording")) blocks = max_int(blocks, blocks_for(64, RECORDING_LEN(P, steps, reps)));
    if (!figures || !strcmp(figures, "sampling")) blocks = max_int(blocks, blocks_for(64, SAMPLING_LEN(P, steps)));
    if (figures && !strcmp(figures, "stages"))
        blocks = max_int(blocks, blocks_for(one_batch ? one_batch : 1, STAGES_LEN(P, steps / 2 > 0 ? steps / 2 : 1)));
    if (figures && !strcmp(figures, "timeline")) blocks = max_int(blocks, blocks_for(one_batch ? one_batch : 1, P + TIMELINE_STEPS + 16));
    mt_kv_cache kv;
    if (mt_kv_cache_init_model(&kv, &m, blocks, &err)) die("KV cache", &err);
    for (int i = 0; i < n_batches && (!figures || !strcmp(figures, "decode")); i++) {
        decode_figure f = measure_decode(&m, &kv, batches[i], P, steps, copy_gbps);
        printf("decode batch %3d (context %d): %8.1f tokens/s, step %.3f ms; roofline step %.3f ms "
               "(%.2f GB read) -> %.0f%% of roofline\n",
               batches[i], P, f.tokens_per_s, f.step_s * 1e3, f.roofline_s * 1e3, f.bytes / 1e9,
               100.0 * f.roofline_s / f.step_s);
        printf("    overlapped as the engine runs it (the next step begun before this one's tokens are read); each "
               "step ended before the next begins: step %.3f ms, %.0f%% of roofline (overlap saves %.2f%%)\n",
               f.plain_step_s * 1e3, 100.0 * f.roofline_s / f.plain_step_s, 100.0 * (1.0 - f.step_s / f.plain_step_s));
        printf("    stages: %s\n", f.profile);
    }

    /* prefill: 8 prompts of 2,048 tokens in one pass (the figure), then 8 of 512 (a pass of 4,096
     * tokens: 256 rows per expert on average) */
    if (!figures || !strcmp(figures, "prefill")) {
        measure_prefill(&m, &kv, 8, 2048, gemm_tflops, true);
        measure_prefill(&m, &kv, 8, 512, gemm_tflops, false);
    }

    /* recording overhead at batch 64: off / per-request capture / capture + stat recorder */
    if (!figures || !strcmp(figures, "recording")) {
        int B = 64;
        workload w;
        workload_init(&w, &m, &kv, B, P, RECORDING_LEN(P, steps, reps), 8192);
        request_store rs = {c->num_hidden_layers, c->top_k, RECORDING_LEN(P, steps, reps), NULL};
        rs.ids = calloc((size_t)B * rs.max_len * rs.layers * rs.k, sizeof(int32_t));
        mt_routing_sink capture = {store_on_layer, NULL, &rs};
        mt_recorder_opts ro;
        mt_recorder_opts_default(&ro);
        mt_recorder *rec = mt_recorder_new(c, m.name, &ro, &err);
        if (!rec) die("recorder", &err);
        mt_recorder_start(rec);
        mt_routing_fanout fan = {0};
        mt_routing_fanout_add(&fan, capture);
        mt_routing_fanout_add(&fan, mt_recorder_sink(rec));
        mt_routing_sink with_stat = mt_routing_fanout_sink(&fan);
        const mt_routing_sink *modes[3] = {NULL, &capture, &with_stat};
        double *t[3];
        for (int k = 0; k < 3; k++) t[k] = malloc((size_t)reps * sizeof(double));
        for (int i = 0; i < 2; i++) workload_step(&w, NULL);
        /* the modes take turns step by step (the context grows by one token a step, so blocks of
         * steps per mode would give the later modes longer contexts) */
        for (int r = 0; r < reps; r++) {
            double sum[3] = {0, 0, 0};
            for (int s = 0; s < 3 * steps; s++) sum[(s + r) % 3] += workload_step(&w, modes[(s + r) % 3]);
            for (int k = 0; k < 3; k++) t[k][r] = sum[k] / steps;
        }
        double off = median(t[0], reps), cap = median(t[1], reps), stat = median(t[2], reps);
        printf("batch 64 decode step: off %.3f ms, per-request capture %.3f ms (%+.2f%%), capture + stat recorder %.3f ms "
               "(%+.2f%% over capture)\n",
               off * 1e3, cap * 1e3, 100.0 * (cap / off - 1.0), stat * 1e3, 100.0 * (stat / cap - 1.0));
        for (int k = 0; k < 3; k++) free(t[k]);
        free(rs.ids);
        mt_recorder_free(rec);
        workload_free(&w);
    }
    /* sampled decode at batch 64: greedy / temperature 1 / temperature 0.7 + top-k 50 + top-p 0.9 on
     * the device, temperature 1 with the logits copied out and sampled on the host, and temperature 1
     * with each token's log-probability (return_logprob), and with it 5 alternatives (top_logprobs_num);
     * temperature 1 with repetition, frequency and presence penalties over the context (the changes
     * built on the host each step, as the engine does, uploaded, made on the device) */
    if (!figures || !strcmp(figures, "sampling")) {
        int B = 64, n_modes = SAMPLING_MODES, s_reps = SAMPLING_ROUNDS;
        workload w;
        int len = SAMPLING_LEN(P, steps);
        workload_init(&w, &m, &kv, B, P, len, 8192);
        mt_sample_row *t1 = malloc((size_t)B * sizeof *t1), *filt = malloc((size_t)B * sizeof *filt);
        uint32_t r = 777;
        for (int i = 0; i < B; i++) {
            r = r * 1664525u + 1013904223u;
            t1[i] = (mt_sample_row){1.0f, 0, 1.0f, r >> 8, 0.0f};
            filt[i] = (mt_sample_row){0.7f, 50, 0.9f, r >> 8, 0.0f};
        }
        const char *names[7] = {"greedy", "T 1 (device)", "T 0.7, top-k 50, top-p 0.9 (device)", "T 1 (logits to host)",
                                "T 1 + log-probabilities (device)", "T 1 + log-probabilities + 5 alternatives",
                                "T 1 + repetition/frequency/presence penalties"};
        double *t[7];
        /* penalties over a prompt of P random tokens (each a changed logit, with the outputs so far) */
        mt_penalties *pen = calloc((size_t)B, sizeof *pen);
        mt_sampling_params penalised = {.temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.1f,
                                        .frequency_penalty = 0.5f, .presence_penalty = 0.5f};
        int32_t *pen_prompt = malloc((size_t)P * sizeof *pen_prompt);
        mt_err pen_err;
        for (int i = 0; i < B; i++) {
            for (int j = 0; j < P; j++) {
                r = r * 1664525u + 1013904223u;
                pen_prompt[j] = (int32_t)((r >> 8) % (uint32_t)m.cfg.vocab_size);
            }
            if (mt_penalties_init(&pen[i], &penalised, pen_prompt, P, len, NULL, NULL, 0, NULL, 0, &pen_err))
                die("penalties", &pen_err);
        }
        free(pen_prompt);
        float *lps = malloc((size_t)B * sizeof *lps);
        w.top_ids = malloc((size_t)B * MT_TOP_LOGPROBS_MAX * sizeof *w.top_ids);
        w.top_lps = malloc((size_t)B * MT_TOP_LOGPROBS_MAX * sizeof *w.top_lps);
        for (int k = 0; k < n_modes; k++) t[k] = malloc((size_t)s_reps * sizeof(double));
        for (int k = 0; k < n_modes; k++) {   /* warm-up: each mode's graph captured */
            w.sample = k == 1 || k >= 4 ? t1 : k == 2 ? filt : NULL;
            w.host_sample = k == 3 ? t1 : NULL;
            w.logprobs = k == 4 || k == 5 ? lps : NULL;
            w.top_n = k == 5 ? 5 : 0;
            w.pen = k == 6 ? pen : NULL;
            workload_step(&w, NULL);
        }
        for (int rep = 0; rep < s_reps; rep++) {
            double sum[7] = {0, 0, 0, 0, 0, 0, 0};
            for (int st = 0; st < n_modes * steps; st++) {
                int k = (st + rep) % n_modes;
                w.sample = k == 1 || k >= 4 ? t1 : k == 2 ? filt : NULL;
                w.host_sample = k == 3 ? t1 : NULL;
                w.logprobs = k == 4 || k == 5 ? lps : NULL;
                w.top_n = k == 5 ? 5 : 0;
                w.pen = k == 6 ? pen : NULL;
                sum[k] += workload_step(&w, NULL);
            }
            for (int k = 0; k < n_modes; k++) t[k][rep] = sum[k] / steps;
        }
        double greedy = median(t[0], s_reps);
        for (int k = 0; k < n_modes; k++) {
            double v = median(t[k], s_reps);
            printf("batch 64 decode step, %-40s %.3f ms (%+.2f%% over greedy)\n", names[k], v * 1e3, 100.0 * (v / greedy - 1.0));
            free(t[k]);
        }
        for (int i = 0; i < B; i++) mt_penalties_free(&pen[i]);
        free(pen);
        w.pen = NULL;
        free(t1);
        free(filt);
        free(lps);
        free(w.top_ids);
        free(w.top_lps);
        workload_free(&w);
    }
    if (figures && !strcmp(figures, "stages"))
        measure_stage_costs(&m, &kv, one_batch ? one_batch : 1, P, steps / 2 > 0 ? steps / 2 : 1);
    if (figures && !strcmp(figures, "timeline")) measure_timeline(&m, &kv, one_batch ? one_batch : 1, P, timeline_csv);
    mt_kv_cache_free(&kv);
    mt_model_free(&m);
    return 0;
}
