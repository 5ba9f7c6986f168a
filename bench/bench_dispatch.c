/* Cost of running a placement: the dispatch of routed choices to replicas (mt_placement_dispatch)
 * at DeepSeek-V3 scale (256 experts, top-8, 288 slots on 32 GPUs, planned with EPLB on skewed
 * loads), and the stat recorder's per-pass cost (its sink only) with and without physical counts (48 MoE layers,
 * 128 experts, top-8, 144 slots on 8 GPUs). Prints the figures to stdout. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "routing/eplb.h"
#include "routing/placement.h"
#include "routing/recorder.h"

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static uint64_t rng = 12345;
static uint32_t next(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33);
}

/* An EPLB placement of L MoE layers (all layers MoE) x E experts into R slots on M GPUs. */
static int make_placement(int L, int E, int R, int M, mt_config *c, mt_placement *p) {
    memset(c, 0, sizeof *c);
    c->num_hidden_layers = L;
    c->num_experts = E;
    c->top_k = 8;
    for (int l = 0; l < L; l++) c->layer_is_moe[l] = true;
    c->num_moe_layers = L;
    double *w = malloc(sizeof(double) * L * E);
    for (int i = 0; i < L * E; i++) {
        double u = next() / 4294967296.0;
        w[i] = (double)(int64_t)(u * u * u * 200000.0);
    }
    mt_eplb_params ep = {.num_replicas = R, .num_groups = 1, .num_nodes = 1, .num_gpus = M};
    mt_eplb_plan plan;
    mt_err err;
    mt_moe_shape s;
    mt_moe_shape_from_config(c, &s);
    int rc = mt_eplb_plan_compute(w, L, E, &ep, &plan, &err) || mt_placement_from_phy2log(&s, M, R, plan.phy2log, p, &err);
    if (rc) fprintf(stderr, "bench_dispatch: %s\n", err.msg);
    free(w);
    mt_eplb_plan_free(&plan);
    return rc;
}

static void bench_dispatch(void) {
    mt_config c;
    mt_placement p;
    if (make_placement(58, 256, 288, 32, &c, &p)) exit(1);
    enum { N = 4096, K = 8 };
    int32_t *ids = malloc(sizeof(int32_t) * N * K), *phys = malloc(sizeof(int32_t) * N * K);
    int32_t tok[N], pos[N];
    for (int i = 0; i < N; i++) {
        tok[i] = (int32_t)(next() % 129280);
        pos[i] = i;
        for (int j = 0; j < K; j++) ids[i * K + j] = (int32_t)((next() % 32) * 8 + j); /* distinct per token */
    }
    for (int n = 1; n <= N; n *= 64) {
        int reps = n == 1 ? 200000 : 200 * N / n / 16;
        double t0 = now_ns();
        for (int r = 0; r < reps; r++) mt_placement_dispatch(&p, r % 58, n, K, ids, tok, pos, phys);
        double dt = (now_ns() - t0) / reps;
        printf("dispatch: %4d tokens x top-%d over 288 slots: %8.1f ns per layer, %.2f ns per routed choice\n", n,
               K, dt, dt / (n * K));
    }
    free(ids);
    free(phys);
    mt_placement_free(&p);
}

/* One synthetic pass of n tokens through the recorder's sink, 48 layers. */
static double bench_recorder_pass(const mt_config *c, const mt_placement *p, int n) {
    mt_recorder_opts o;
    mt_recorder_opts_default(&o);
    o.placement = p;
    mt_err err;
    mt_recorder *r = mt_recorder_new(c, "bench", &o, &err);
    if (!r) {
        fprintf(stderr, "bench_dispatch: %s\n", err.msg);
        exit(1);
    }
    mt_recorder_start(r);
    int K = c->top_k, L = c->num_hidden_layers;
    int32_t *ids = malloc(sizeof(int32_t) * n * K), *phys = malloc(sizeof(int32_t) * L * n * K);
    int32_t *tok = malloc(sizeof(int32_t) * n), *pos = malloc(sizeof(int32_t) * n), *seq = calloc(n, sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        tok[i] = (int32_t)(next() % 150000);
        pos[i] = i;
        for (int j = 0; j < K; j++) ids[i * K + j] = (int32_t)((next() % 16) * 8 + j);
    }
    if (p) /* dispatched beforehand: this times the recorder only */
        for (int l = 0; l < L; l++) mt_placement_dispatch(p, l, n, K, ids, tok, pos, phys + (size_t)l * n * K);
    mt_routing_sink s = mt_recorder_sink(r);
    int reps = n == 1 ? 20000 : 200;
    double t0 = now_ns();
    for (int rep = 0; rep < reps; rep++) {
        for (int l = 0; l < L; l++) {
            mt_routing_event ev = {.layer = l, .n_tokens = n, .top_k = K, .seq_ids = seq, .positions = pos,
                                   .tokens = tok, .topk_ids = ids, .phys_ids = p ? phys + (size_t)l * n * K : NULL};
            s.on_layer(s.ctx, &ev);
        }
        mt_pass_event pe = {.n_tokens = n, .num_seqs_in_pass = 1};
        s.on_pass(s.ctx, &pe);
    }
    double dt = (now_ns() - t0) / reps;
    mt_recorder_free(r);
    free(ids);
    free(phys);
    free(tok);
    free(pos);
    free(seq);
    return dt;
}

int main(void) {
    bench_dispatch();
    mt_config c;
    mt_placement p;
    if (make_placement(48, 128, 144, 8, &c, &p)) return 1;
    for (int n = 1; n <= 256; n *= 256) {
        double without = bench_recorder_pass(&c, NULL, n), with = bench_recorder_pass(&c, &p, n);
        printf("stat recorder, 48 layers x 128 experts, top-8, %3d tokens per pass: %9.1f us without a placement, "
               "%9.1f us with physical counts too (144 slots, 8 GPUs)\n", n, without / 1e3, with / 1e3);
    }
    mt_placement_free(&p);
    return 0;
}
