/* Times the EPLB planner at DeepSeek-V3 scale: 58 MoE layers x 256 experts -> 288 replicas on
 * 32 GPUs, 4 nodes, 8 expert groups (goal: < 50 ms per plan). Prints the figures to stdout. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "routing/balancedness.h"
#include "routing/eplb.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(void) {
    enum { L = 58, E = 256, R = 288, M = 32, N = 4, G = 8, REPS = 20 };
    double *w = malloc(sizeof(double) * L * E);
    int64_t *c = malloc(sizeof(int64_t) * L * E);
    if (!w || !c) return 1;
    uint64_t s = 12345;
    for (int i = 0; i < L * E; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(s >> 11) / 9007199254740992.0;
        c[i] = (int64_t)(u * u * u * 200000.0);
        w[i] = (double)c[i];
    }
    mt_eplb_params p = {.num_replicas = R, .num_groups = G, .num_nodes = N, .num_gpus = M};
    mt_err err;
    double best = 1e30, total = 0;
    mt_eplb_plan plan;
    for (int r = 0; r < REPS; r++) {
        double t0 = now_ms();
        if (mt_eplb_plan_compute(w, L, E, &p, &plan, &err)) {
            fprintf(stderr, "bench_eplb: %s\n", err.msg);
            return 1;
        }
        double dt = now_ms() - t0;
        total += dt;
        if (dt < best) best = dt;
        if (r + 1 < REPS) mt_eplb_plan_free(&plan);
    }
    double before = 0, after = 0;
    for (int l = 0; l < L; l++) {
        before += mt_balancedness_contiguous(c + l * E, E, M);
        after += mt_balancedness_placement(c + l * E, plan.phy2log + l * R, plan.logcnt + l * E, R, M);
    }
    printf("eplb plan: %d layers x %d experts -> %d replicas, %d GPUs, %d nodes, %d groups: "
           "best %.2f ms, mean %.2f ms over %d runs (goal < 50 ms); mean balancedness %.4f -> %.4f\n",
           L, E, R, M, N, G, best, total / REPS, REPS, before / L, after / L);
    mt_eplb_plan_free(&plan);
    free(w);
    free(c);
    return 0;
}
