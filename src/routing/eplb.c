/* EPLB planner. Algorithm: DeepSeek's Expert-Parallel Load Balancer, github.com/deepseek-ai/EPLB
 * (eplb.py: balanced_packing, replicate_experts, rebalance_experts_hierarchical, rebalance_experts).
 * This is an independent C implementation of the published description; see docs/EPLB.md. */
#include "routing/eplb.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct keyed {
    float w;
    int32_t idx;
} keyed;

/* Descending by weight, ascending index among equal weights: the order of a stable descending sort. */
static int cmp_desc(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->w > y->w) return -1;
    if (x->w < y->w) return 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Packing with caller scratch: order[n] items, packw[num_packs] floats, packn[num_packs] ints. */
static void pack_row(const float *w, int n, int num_packs, int32_t *pack, int32_t *rank, keyed *order,
                     float *packw, int32_t *packn) {
    int per_pack = n / num_packs;
    if (per_pack == 1) { /* the reference short-cuts this case to the identity */
        for (int i = 0; i < n; i++) {
            pack[i] = i;
            rank[i] = 0;
        }
        return;
    }
    for (int i = 0; i < n; i++) {
        order[i].w = w[i];
        order[i].idx = i;
    }
    qsort(order, (size_t)n, sizeof *order, cmp_desc);
    for (int p = 0; p < num_packs; p++) {
        packw[p] = 0.0f;
        packn[p] = 0;
    }
    for (int k = 0; k < n; k++) {
        int best = -1;
        for (int p = 0; p < num_packs; p++) {
            if (packn[p] >= per_pack) continue;
            if (best < 0 || packw[p] < packw[best]) best = p;
        }
        int32_t item = order[k].idx;
        pack[item] = best;
        rank[item] = packn[best];
        packw[best] += w[item]; /* float32 accumulation, as the reference's tensor sums */
        packn[best]++;
    }
}

int mt_eplb_balanced_packing(const float *w, int n, int num_packs, int32_t *pack, int32_t *rank,
                             mt_err *err) {
    if (n <= 0 || num_packs <= 0 || n % num_packs != 0)
        return mt_errf(err, "balanced packing: %d items do not split evenly into %d packs", n, num_packs);
    keyed *order = malloc((size_t)n * sizeof *order);
    float *packw = malloc((size_t)num_packs * sizeof *packw);
    int32_t *packn = malloc((size_t)num_packs * sizeof *packn);
    if (!order || !packw || !packn) {
        free(order);
        free(packw);
        free(packn);
        return mt_errf(err, "balanced packing: out of memory for %d items", n);
    }
    pack_row(w, n, num_packs, pack, rank, order, packw, packn);
    free(order);
    free(packw);
    free(packn);
    return 0;
}

void mt_eplb_replicate(const float *w, int num_log, int num_phy, int32_t *phy2log, int32_t *rank,
                       int32_t *cnt) {
    for (int i = 0; i < num_log; i++) {
        phy2log[i] = i;
        rank[i] = 0;
        cnt[i] = 1;
    }
    for (int i = num_log; i < num_phy; i++) {
        int best = 0;
        float best_v = w[0] / (float)cnt[0];
        for (int j = 1; j < num_log; j++) {
            float v = w[j] / (float)cnt[j]; /* float32 division, as weight / logcnt in torch */
            if (v > best_v) {
                best_v = v;
                best = j;
            }
        }
        phy2log[i] = best;
        rank[i] = cnt[best];
        cnt[best]++;
    }
}

int mt_eplb_check_params(int num_experts, const mt_eplb_params *p, mt_err *err) {
    if (num_experts <= 0) return mt_errf(err, "num_experts must be positive (got %d)", num_experts);
    if (p->num_gpus <= 0) return mt_errf(err, "num_gpus must be positive (got %d)", p->num_gpus);
    if (p->num_nodes <= 0) return mt_errf(err, "num_nodes must be positive (got %d)", p->num_nodes);
    if (p->num_groups <= 0) return mt_errf(err, "num_groups must be positive (got %d)", p->num_groups);
    if (p->num_replicas <= 0) return mt_errf(err, "num_replicas must be positive (got %d)", p->num_replicas);
    /* G and N matter to the hierarchical policy only, which runs when G % N == 0; the global one
     * (the reference's fallback) ignores them, as the reference does */
    bool hier = p->num_groups % p->num_nodes == 0;
    if (hier && num_experts % p->num_groups != 0)
        return mt_errf(err, "num_experts (%d) must be a multiple of num_groups (%d) for the hierarchical policy "
                       "(num_groups a multiple of num_nodes)", num_experts, p->num_groups);
    if (hier && p->num_gpus % p->num_nodes != 0)
        return mt_errf(err, "num_gpus (%d) must be a multiple of num_nodes (%d) for the hierarchical policy "
                       "(num_groups a multiple of num_nodes)", p->num_gpus, p->num_nodes);
    if (p->num_replicas % p->num_gpus != 0)
        return mt_errf(err, "num_replicas (%d) must be a multiple of num_gpus (%d)", p->num_replicas,
                       p->num_gpus);
    if (p->num_replicas < num_experts)
        return mt_errf(err, "num_replicas (%d) must be at least num_experts (%d)", p->num_replicas,
                       num_experts);
    return 0;
}

/* Scratch for one layer of the hierarchical policy; sizes depend on E, R, G, N only. */
typedef struct work {
    float *w;          /* [E] layer weights in float32 */
    float *group_w;    /* [G] */
    int32_t *gpack;    /* [G] */
    int32_t *grank;    /* [G] */
    int32_t *log2mlog; /* [E] */
    int32_t *mlog2log; /* [E] */
    float *mlog_w;     /* [E/N] */
    int32_t *phy2mlog; /* [R/N] */
    int32_t *prank;    /* [R/N] */
    int32_t *mcnt;     /* [E] replica counts of all nodes' mlog experts, node-major */
    float *phy_w;      /* [R/N] */
    int32_t *ppack;    /* [R/N] */
    int32_t *prk;      /* [R/N] */
    int32_t *pphy2phy; /* [R/N] */
    keyed *order;      /* [max(G, R/N)] */
    float *packw;      /* [max(N, M/N)] */
    int32_t *packn;    /* [max(N, M/N)] */
} work;

static void work_free(work *k) {
    free(k->w);
    free(k->group_w);
    free(k->gpack);
    free(k->grank);
    free(k->log2mlog);
    free(k->mlog2log);
    free(k->mlog_w);
    free(k->phy2mlog);
    free(k->prank);
    free(k->mcnt);
    free(k->phy_w);
    free(k->ppack);
    free(k->prk);
    free(k->pphy2phy);
    free(k->order);
    free(k->packw);
    free(k->packn);
}

static int work_alloc(work *k, int E, int R, int G, int N, int M) {
    memset(k, 0, sizeof *k);
    size_t e = (size_t)E, rn = (size_t)(R / N), en = (size_t)(E / N), g = (size_t)G;
    size_t no = g > rn ? g : rn;
    size_t np = (size_t)(N > M / N ? N : M / N);
    k->w = malloc(e * sizeof(float));
    k->group_w = malloc(g * sizeof(float));
    k->gpack = malloc(g * sizeof(int32_t));
    k->grank = malloc(g * sizeof(int32_t));
    k->log2mlog = malloc(e * sizeof(int32_t));
    k->mlog2log = malloc(e * sizeof(int32_t));
    k->mlog_w = malloc(en * sizeof(float));
    k->phy2mlog = malloc(rn * sizeof(int32_t));
    k->prank = malloc(rn * sizeof(int32_t));
    k->mcnt = malloc(e * sizeof(int32_t));
    k->phy_w = malloc(rn * sizeof(float));
    k->ppack = malloc(rn * sizeof(int32_t));
    k->prk = malloc(rn * sizeof(int32_t));
    k->pphy2phy = malloc(rn * sizeof(int32_t));
    k->order = malloc(no * sizeof(keyed));
    k->packw = malloc(np * sizeof(float));
    k->packn = malloc(np * sizeof(int32_t));
    if (!k->w || !k->group_w || !k->gpack || !k->grank || !k->log2mlog || !k->mlog2log || !k->mlog_w ||
        !k->phy2mlog || !k->prank || !k->mcnt || !k->phy_w || !k->ppack || !k->prk || !k->pphy2phy ||
        !k->order || !k->packw || !k->packn) {
        work_free(k);
        return -1;
    }
    return 0;
}

/* One layer of the hierarchical policy (the global policy is G = N = 1).
 * Outputs phy2log[R], phyrank[R], logcnt[E]. */
static void plan_layer(work *k, int E, int R, int G, int N, int M, int32_t *phy2log, int32_t *phyrank,
                       int32_t *logcnt) {
    int gs = E / G;       /* experts per group */
    int gpn = G / N;      /* groups per node */
    int en = E / N;       /* logical experts per node */
    int rn = R / N;       /* physical slots per node */
    int mn = M / N;       /* GPUs per node */
    int per_gpu = R / M;  /* slots per GPU */

    /* Step 1: pack groups onto nodes by their total load. */
    for (int g = 0; g < G; g++) {
        float s = 0.0f;
        for (int j = 0; j < gs; j++) s += k->w[g * gs + j];
        k->group_w[g] = s;
    }
    pack_row(k->group_w, G, N, k->gpack, k->grank, k->order, k->packw, k->packn);
    /* Node-major ("mlog") numbering: node n owns mlog ids [n*en, (n+1)*en). */
    for (int e = 0; e < E; e++) {
        int g = e / gs;
        int m = (k->gpack[g] * gpn + k->grank[g]) * gs + e % gs;
        k->log2mlog[e] = m;
        k->mlog2log[m] = e;
    }

    for (int n = 0; n < N; n++) {
        /* Step 2: replicate within the node. */
        for (int j = 0; j < en; j++) k->mlog_w[j] = k->w[k->mlog2log[n * en + j]];
        int32_t *cnt = k->mcnt + (size_t)n * en;
        mt_eplb_replicate(k->mlog_w, en, rn, k->phy2mlog, k->prank, cnt);

        /* Step 3: pack the node's physical slots onto its GPUs by load per replica. */
        for (int p = 0; p < rn; p++) {
            int m = k->phy2mlog[p];
            k->phy_w[p] = k->mlog_w[m] / (float)cnt[m];
        }
        pack_row(k->phy_w, rn, mn, k->ppack, k->prk, k->order, k->packw, k->packn);
        for (int p = 0; p < rn; p++) k->pphy2phy[k->ppack[p] * per_gpu + k->prk[p]] = p;

        /* Map the packed slots back to logical ids. */
        for (int q = 0; q < rn; q++) {
            int p = k->pphy2phy[q];
            int mlog = n * en + k->phy2mlog[p];
            phy2log[n * rn + q] = k->mlog2log[mlog];
            phyrank[n * rn + q] = k->prank[p];
        }
    }
    for (int e = 0; e < E; e++) logcnt[e] = k->mcnt[k->log2mlog[e]];
}

void mt_eplb_plan_free(mt_eplb_plan *plan) {
    if (!plan) return;
    free(plan->phy2log);
    free(plan->phyrank);
    free(plan->log2phy);
    free(plan->logcnt);
    memset(plan, 0, sizeof *plan);
}

int mt_eplb_plan_compute(const double *weight, int num_layers, int num_experts, const mt_eplb_params *p,
                         mt_eplb_plan *plan, mt_err *err) {
    memset(plan, 0, sizeof *plan);
    if (num_layers <= 0) return mt_errf(err, "num_layers must be positive (got %d)", num_layers);
    if (mt_eplb_check_params(num_experts, p, err)) return -1;
    int E = num_experts, R = p->num_replicas, M = p->num_gpus;
    int hier = p->num_groups % p->num_nodes == 0;
    int G = hier ? p->num_groups : 1, N = hier ? p->num_nodes : 1;
    for (int l = 0; l < num_layers; l++)
        for (int e = 0; e < E; e++) {
            double v = weight[(size_t)l * E + e];
            if (!isfinite(v) || v < 0)
                return mt_errf(err, "load of layer row %d, expert %d is %g: loads must be finite and >= 0",
                               l, e, v);
        }

    size_t L = (size_t)num_layers;
    plan->num_layers = num_layers;
    plan->num_experts = E;
    plan->num_replicas = R;
    plan->num_gpus = M;
    plan->hierarchical = hier;
    plan->phy2log = malloc(L * R * sizeof(int32_t));
    plan->phyrank = malloc(L * R * sizeof(int32_t));
    plan->logcnt = malloc(L * E * sizeof(int32_t));
    work k;
    if (!plan->phy2log || !plan->phyrank || !plan->logcnt || work_alloc(&k, E, R, G, N, M)) {
        mt_eplb_plan_free(plan);
        return mt_errf(err, "eplb: out of memory for %d layers x %d replicas", num_layers, R);
    }
    for (size_t l = 0; l < L; l++) {
        for (int e = 0; e < E; e++) k.w[e] = (float)weight[l * E + e];
        plan_layer(&k, E, R, G, N, M, plan->phy2log + l * R, plan->phyrank + l * R, plan->logcnt + l * E);
    }
    work_free(&k);

    int maxc = 1;
    for (size_t i = 0; i < L * E; i++)
        if (plan->logcnt[i] > maxc) maxc = plan->logcnt[i];
    plan->max_replicas = maxc;
    plan->log2phy = malloc(L * E * maxc * sizeof(int32_t));
    if (!plan->log2phy) {
        mt_eplb_plan_free(plan);
        return mt_errf(err, "eplb: out of memory for logical_to_physical_map");
    }
    for (size_t i = 0; i < L * E * maxc; i++) plan->log2phy[i] = -1;
    for (size_t l = 0; l < L; l++)
        for (int s = 0; s < R; s++) {
            size_t e = (size_t)plan->phy2log[l * R + s];
            plan->log2phy[(l * E + e) * maxc + plan->phyrank[l * R + s]] = s;
        }
    return 0;
}
