// The CUDA kernels one by one against float64 references on the host (skipped without a device):
// the small and large product paths (dense, grouped, every epilogue), both attention kernels over
// paged, multi-tile contexts, and the attention prologue. Fresh random inputs; outputs poisoned
// before each launch so unwritten elements show.
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "cuda_test_util.cuh"
#include "kernels/cuda/cuda_kernels.h"

static int failures = 0;
static uint64_t rng_state = 88172645463325252ull;

static float frand() {   // uniform [-1, 1)
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / 16777216.0) * 2.0f - 1.0f;
}

static float bf(float x) { return __bfloat162float(__float2bfloat16(x)); }

static void report(const char *what, double err, double tol) {
    bool ok = err <= tol;   // NaN fails
    printf("  %-64s rel err %.2e %s\n", what, err, ok ? "ok" : "FAIL");
    if (!ok) failures++;
}

static double rel(const std::vector<double> &ref, const std::vector<float> &got) {
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        double d = got[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

// ---- products ------------------------------------------------------------------------------------

// W row-major [rows, K] (bf16 values) tiled on the device.
static bf16 *tile_weights(const std::vector<float> &w, int rows, int K, int mode_gate_up) {
    bf16 *d;
    size_t elems = mt_dmat_elems(rows, K);
    CK(cudaMalloc(&d, elems * sizeof(bf16)));
    CK(cudaMemset(d, 0, elems * sizeof(bf16)));
    float *src = to_dev(w);
    if (!mode_gate_up) {
        mt_cuda_tile_rows(d, K, src, 0, rows, 0, MT_ROWS_DIRECT, 0);
    } else {   // w holds gate rows then up rows, rows/2 each
        mt_cuda_tile_rows(d, K, src, 0, rows / 2, 0, MT_ROWS_GATE, 0);
        mt_cuda_tile_rows(d, K, src + (size_t)(rows / 2) * K, 0, rows / 2, 0, MT_ROWS_UP, 0);
    }
    CK(cudaDeviceSynchronize());
    cudaFree(src);
    return d;
}

// Slice sums for the split path (mt_cuda_linear_split): 8 slices x 512 rows x 8192 weight rows.
static float *g_partials;
static float *partials() {
    if (!g_partials) CK(cudaMalloc(&g_partials, (size_t)8 * 512 * 8192 * sizeof(float)));
    return g_partials;
}

// The small path itself: mt_cuda_linear_small with the direct path, which it would hand some
// products to, off.
static void small_path(const mt_linear_args *a) {
    mt_cuda_linear_direct_set(0);
    mt_cuda_linear_small(a, 0);
    mt_cuda_linear_direct_set(-1);
}

// Runs `run` on a again (reset puts back what a.out, out_bytes of it, held before the first run, NULL:
// NaN poison) and tells whether a.out then holds the bits it holds now.
template <class Run>
static bool same_again(const mt_linear_args &a, size_t out_bytes, const void *reset, Run run) {
    std::vector<char> want(out_bytes), got(out_bytes);
    CK(cudaMemcpy(want.data(), a.out, out_bytes, cudaMemcpyDeviceToHost));
    if (reset) CK(cudaMemcpy(a.out, reset, out_bytes, cudaMemcpyHostToDevice));
    else CK(cudaMemset(a.out, 0xff, out_bytes));
    run();
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(got.data(), a.out, out_bytes, cudaMemcpyDeviceToHost));
    return memcmp(want.data(), got.data(), out_bytes) == 0;
}

static void report_same(const char *what, bool same) {
    printf("  %-64s %s\n", what, same ? "ok" : "FAIL");
    if (!same) failures++;
}

// The direct path (mt_cuda_linear_direct, each of its variants) run on a, whose output (out_bytes
// at a.out) holds the small path's result: the same bits. reset as in same_again.
static void check_direct(mt_linear_args a, size_t out_bytes, const void *reset, const char *what) {
    bool same = true;
    for (int mode = 1; mode <= 3; mode++) {
        const bool ok = same_again(a, out_bytes, reset, [&] {
            mt_cuda_linear_direct_set(mode);
            mt_cuda_linear_small(&a, 0);
            mt_cuda_linear_direct_set(-1);
        });
        if (!ok) printf("    direct variant %d differs\n", mode);
        same &= ok;
    }
    report_same(what, same);
}

// The small path on a, whose output holds its result already, again with the L2 hints on (the
// weights fetched ahead into L2 to stay, the first item's rest after the wait): the same bits, and
// no fault from the prefetched ranges. reset as in same_again.
static void check_l2_hints(mt_linear_args a, size_t out_bytes, const void *reset, const char *what) {
    a.l2_keep = a.W.w;
    a.l2_keep_bytes = mt_dmat_elems(a.W.rows, a.W.K) * sizeof(bf16) & ~(size_t)255;
    a.l2_rest = 1;
    report_same(what, same_again(a, out_bytes, reset, [&] { small_path(&a); }));
}

// path: 0 small, 1 large, 2 split.
static void check_dense(int rows, int K, int n, int epi, int path, int tile_rows = 64) {
    const bool large = path == 1;
    std::vector<float> w((size_t)rows * K), x((size_t)n * K);
    for (auto &v : w) v = bf(frand() / sqrtf((float)K));
    for (auto &v : x) v = bf(frand());
    std::vector<bf16> xb(x.size());
    for (size_t i = 0; i < x.size(); i++) xb[i] = __float2bfloat16(x[i]);
    bool swiglu = epi == MT_EPI_SWIGLU;
    int out_cols = swiglu ? rows / 2 : rows;
    std::vector<double> ref((size_t)n * out_cols);
    std::vector<float> base((size_t)n * out_cols);
    for (auto &v : base) v = frand();
    for (int t = 0; t < n; t++) {
        for (int r = 0; r < out_cols; r++) {
            auto dot = [&](int row) {
                double s = 0;
                for (int k = 0; k < K; k++) s += (double)w[(size_t)row * K + k] * x[(size_t)t * K + k];
                return s;
            };
            double v;
            if (swiglu) {
                double g = dot(r), u = dot(r + rows / 2);
                v = g / (1 + exp(-g)) * u;
            } else {
                v = dot(r);
            }
            if (epi == MT_EPI_F32_ADD) v += base[(size_t)t * out_cols + r];
            ref[(size_t)t * out_cols + r] = v;
        }
    }
    bf16 *dw = tile_weights(w, rows, K, swiglu);
    bf16 *dx = to_dev(xb);
    void *dout;
    size_t out_bytes = (size_t)n * out_cols * (epi == MT_EPI_F32 || epi == MT_EPI_F32_ADD ? 4 : 2);
    CK(cudaMalloc(&dout, out_bytes));
    if (epi == MT_EPI_F32_ADD) CK(cudaMemcpy(dout, base.data(), out_bytes, cudaMemcpyHostToDevice));
    else CK(cudaMemset(dout, 0xff, out_bytes));   // NaN poison
    mt_linear_args a = mt_dense_args({dw, rows, mt_round16(rows), K}, dx, K, n, dout, out_cols, epi, tile_rows);
    a.partials = partials();
    a.weights_once = path == 2;   // as the engine calls the split path (decode batches)
    if (path == 2) mt_cuda_linear_split(&a, 0);
    else if (large) mt_cuda_linear_large(&a, 0);
    else small_path(&a);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    std::vector<float> got((size_t)n * out_cols);
    if (epi == MT_EPI_F32 || epi == MT_EPI_F32_ADD) {
        got = from_dev((float *)dout, got.size());
    } else {
        auto g = from_dev((bf16 *)dout, got.size());
        for (size_t i = 0; i < got.size(); i++) got[i] = __bfloat162float(g[i]);
    }
    char what[160];
    snprintf(what, sizeof what, "linear %s rows %d K %d n %d epilogue %d",
             path == 2 ? "split" : large ? (tile_rows == 128 ? "large/128" : "large/64") : "small", rows, K, n, epi);
    report(what, rel(ref, got), epi == MT_EPI_F32 || epi == MT_EPI_F32_ADD ? 1e-5 : 8e-3);
    if (path == 0 && n <= 8) {
        snprintf(what, sizeof what, "  direct path: same bits (rows %d K %d n %d epilogue %d)", rows, K, n, epi);
        check_direct(a, out_bytes, epi == MT_EPI_F32_ADD ? base.data() : nullptr, what);
        snprintf(what, sizeof what, "  L2 hints: same bits (rows %d K %d n %d epilogue %d)", rows, K, n, epi);
        check_l2_hints(a, out_bytes, epi == MT_EPI_F32_ADD ? base.data() : nullptr, what);
    }
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dout);
}

// Small and large paths give bitwise the same outputs for the same rows.
static void check_paths_agree(int rows, int K, int n) {
    std::vector<float> w((size_t)rows * K);
    std::vector<bf16> xb((size_t)n * K);
    for (auto &v : w) v = bf(frand() / sqrtf((float)K));
    for (auto &v : xb) v = __float2bfloat16(frand());
    bf16 *dw = tile_weights(w, rows, K, 0);
    bf16 *dx = to_dev(xb);
    float *o1, *o2;
    CK(cudaMalloc(&o1, (size_t)n * rows * 4));
    CK(cudaMalloc(&o2, (size_t)n * rows * 4));
    mt_linear_args a = mt_dense_args({dw, rows, mt_round16(rows), K}, dx, K, n, o1, rows, MT_EPI_F32, 0);
    mt_cuda_linear_small(&a, 0);   // passes of 8 rows when n <= 8
    a.out = o2;
    a.rows_max = 0;                // passes of 16 rows
    mt_cuda_linear_small(&a, 0);
    CK(cudaDeviceSynchronize());
    auto g0 = from_dev(o2, (size_t)n * rows);
    mt_cuda_linear_large(&a, 0);
    CK(cudaDeviceSynchronize());
    auto g1 = from_dev(o1, (size_t)n * rows), g2 = from_dev(o2, (size_t)n * rows);
    a.tile_rows = 128;
    mt_cuda_linear_large(&a, 0);
    CK(cudaDeviceSynchronize());
    auto g3 = from_dev(o2, (size_t)n * rows);
    a.weights_once = 1;   // weights by bulk copies (decode batches)
    CK(cudaMemset(o2, 0xff, (size_t)n * rows * 4));
    mt_cuda_linear_large(&a, 0);
    CK(cudaDeviceSynchronize());
    auto g5 = from_dev(o2, (size_t)n * rows);
    a.partials = partials();
    CK(cudaMemset(o2, 0xff, (size_t)n * rows * 4));
    mt_cuda_linear_split(&a, 0);
    CK(cudaDeviceSynchronize());
    auto g4 = from_dev(o2, (size_t)n * rows);
    bool same = memcmp(g1.data(), g0.data(), g1.size() * 4) == 0 && memcmp(g1.data(), g2.data(), g1.size() * 4) == 0 && memcmp(g1.data(), g3.data(), g1.size() * 4) == 0 &&
                memcmp(g1.data(), g4.data(), g1.size() * 4) == 0 && memcmp(g1.data(), g5.data(), g1.size() * 4) == 0;
    char what[96];
    snprintf(what, sizeof what, "small (8-, 16-row passes), large (64, 128, bulk), split equal: rows %d K %d n %d", rows, K,
             n);
    printf("  %-64s %s\n", what, same ? "ok" : "FAIL");
    if (!same) failures++;
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(o1);
    cudaFree(o2);
}

// Grouped (expert) products: E experts with the given token counts, rows gathered from X.
// rows_max: the small path's bound on rows per group (8 or less: passes of 8 rows). sort_early:
// the small path run again with the first item's weights copied before the dependency wait (the
// sort written launches before, as for the down product), which must give the same bits.
static void check_grouped(int rows, int K, int E, const std::vector<int> &counts, int n_tokens, bool large, int tile_rows = 64,
                          int rows_max = 0, bool sort_early = false) {
    size_t stride = mt_dmat_elems(rows, K);
    std::vector<float> w((size_t)E * rows * K);
    for (auto &v : w) v = bf(frand() / sqrtf((float)K));
    std::vector<bf16> xb((size_t)n_tokens * K);
    for (auto &v : xb) v = __float2bfloat16(frand());
    bf16 *dw;
    CK(cudaMalloc(&dw, stride * E * sizeof(bf16)));
    for (int e = 0; e < E; e++) {
        std::vector<float> we(w.begin() + (size_t)e * rows * K, w.begin() + (size_t)(e + 1) * rows * K);
        bf16 *t = tile_weights(we, rows, K, 0);
        CK(cudaMemcpy(dw + e * stride, t, stride * sizeof(bf16), cudaMemcpyDeviceToDevice));
        cudaFree(t);
    }
    HostSort hs = host_sort(counts, tile_rows, [&](int e, int i) { return (int32_t)((e * 31 + i * 17) % n_tokens); });
    const std::vector<int32_t> &off = hs.off, &src = hs.src;
    int total = hs.total;
    std::vector<double> ref((size_t)total * rows);
    for (int e = 0; e < E; e++)
        for (int p = off[e]; p < off[e + 1]; p++)
            for (int r = 0; r < rows; r++) {
                double s = 0;
                for (int k = 0; k < K; k++)
                    s += (double)w[((size_t)e * rows + r) * K + k] * __bfloat162float(xb[(size_t)src[p] * K + k]);
                ref[(size_t)p * rows + r] = s;
            }
    bf16 *dx = to_dev(xb);
    float *dout;
    CK(cudaMalloc(&dout, (size_t)total * rows * 4 + 16));
    CK(cudaMemset(dout, 0xff, (size_t)total * rows * 4));
    mt_linear_args a = {};
    a.W = {dw, rows, mt_round16(rows), K};
    a.group_stride = stride;
    a.X = dx;
    a.ldx = K;
    hs.set_grouped(a, tile_rows);
    if (!large) a.max_work = E;
    a.rows_max = rows_max;
    a.out = dout;
    a.ldo = rows;
    a.epilogue = MT_EPI_F32;
    a.weights_once = tile_rows == 64;   // both weight loads of the large path: bulk copies, cp.async
    if (large) mt_cuda_linear_large(&a, 0);
    else small_path(&a);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    auto got = from_dev(dout, (size_t)total * rows);
    char what[160];
    snprintf(what, sizeof what, "grouped %s rows %d K %d experts %d pairs %d",
             large ? (tile_rows == 128 ? "large/128" : "large/64") : rows_max ? "small/8" : "small", rows, K, E, total);
    report(what, rel(ref, got), 1e-5);
    if (!large && rows_max > 0 && rows_max <= 8) {
        a.sort_early = sort_early;
        snprintf(what, sizeof what, "  direct path: same bits%s", sort_early ? " (first weights before the wait)" : "");
        check_direct(a, (size_t)total * rows * 4, nullptr, what);
        a.sort_early = 0;
    }
    if (sort_early) {
        CK(cudaMemset(dout, 0xff, (size_t)total * rows * 4));
        a.sort_early = 1;
        small_path(&a);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        auto again = from_dev(dout, (size_t)total * rows);
        bool same = memcmp(again.data(), got.data(), got.size() * sizeof(float)) == 0;
        printf("    first stages copied before the wait: same bits %s\n", same ? "ok" : "FAILED");
        if (!same) failures++;
    }
    for (void *p : hs.device_buffers()) cudaFree(p);
    cudaFree(dw); cudaFree(dx); cudaFree(dout);
}

// ---- expert sort ----------------------------------------------------------------------------------

// Device buffers of an expert sort of nk pairs over E experts (zeroed), and their release.
static void sort_alloc(mt_expert_sort &s, int E, size_t nk) {
    int32_t **bufs[] = {&s.offsets, &s.src_rows, &s.pair_pos, &s.active, &s.n_active, &s.tile_offsets, &s.counts, &s.chunks};
    size_t sizes[] = {(size_t)E + 1, nk, nk, (size_t)3 * E, 1, (size_t)E + 1, (size_t)E, ((nk + 1023) / 1024) * E};
    for (int i = 0; i < 8; i++) {
        CK(cudaMalloc(bufs[i], sizes[i] * sizeof(int32_t) + 16));
        CK(cudaMemset(*bufs[i], 0, sizes[i] * sizeof(int32_t) + 16));
    }
    s.tile_rows = 64;
}
static void sort_free(mt_expert_sort &s) {
    int32_t *bufs[] = {s.offsets, s.src_rows, s.pair_pos, s.active, s.n_active, s.tile_offsets, s.counts, s.chunks};
    for (auto p : bufs) cudaFree(p);
}

static void check_sort(int n, int k, int E) {
    std::vector<int32_t> ids((size_t)n * k);
    for (int t = 0; t < n; t++)
        for (int j = 0; j < k; j++) {   // distinct experts per token
            int e;
            bool dup;
            do {
                e = (int)((frand() * 0.5f + 0.5f) * E) % E;
                dup = false;
                for (int q = 0; q < j; q++) dup |= ids[(size_t)t * k + q] == e;
            } while (dup);
            ids[(size_t)t * k + j] = e;
        }
    std::vector<int32_t> off(E + 1, 0), src, pos((size_t)n * k);
    for (int32_t e : ids) off[e + 1]++;
    for (int e = 0; e < E; e++) off[e + 1] += off[e];
    src.resize((size_t)n * k);
    std::vector<int32_t> cur(off.begin(), off.end() - 1);
    for (size_t i = 0; i < ids.size(); i++) {
        pos[i] = cur[ids[i]]++;
        src[pos[i]] = (int32_t)(i / k);
    }
    int32_t *d_ids = to_dev(ids);
    size_t nk = ids.size();
    mt_expert_sort s;
    sort_alloc(s, E, nk);
    mt_cuda_expert_sort(&s, d_ids, n, k, E, 0);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    bool ok = from_dev(s.offsets, E + 1) == off && from_dev(s.src_rows, nk) == src && from_dev(s.pair_pos, nk) == pos;
    // the counts, tiles of tile_rows and the active list (ids, first positions, rows) too
    std::vector<int32_t> counts(E), tiles(E + 1, 0), active;
    for (int e = 0; e < E; e++) {
        counts[e] = off[e + 1] - off[e];
        tiles[e + 1] = tiles[e] + (counts[e] + s.tile_rows - 1) / s.tile_rows;
        if (counts[e] > 0) active.push_back(e);
    }
    const int na = (int)active.size();
    auto act = from_dev(s.active, 3 * (size_t)E);
    ok = ok && from_dev(s.counts, E) == counts && from_dev(s.tile_offsets, E + 1) == tiles && from_dev(s.n_active, 1)[0] == na;
    for (int y = 0; y < na && ok; y++)
        ok = act[y] == active[y] && act[E + y] == off[active[y]] && act[2 * E + y] == counts[active[y]];
    char what[128];
    snprintf(what, sizeof what, "expert sort n %d top-%d of %d experts (stable, exact)", n, k, E);
    printf("  %-64s %s\n", what, ok ? "ok" : "FAIL");
    if (!ok) failures++;
    sort_free(s);
    cudaFree(d_ids);
}

// Routing: softmax/top-k against a host reference, and the fused decode-sized kernel equal to the
// two-kernel path in every output.
static void check_route_sort(int n, int E, int k) {
    int ld = mt_round16(E);
    std::vector<float> logits((size_t)n * ld);
    for (auto &v : logits) v = frand() * 4.0f;
    std::vector<int32_t> ref_ids((size_t)n * k);
    for (int t = 0; t < n; t++) {
        std::vector<int> taken;
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool used = false;
                for (int q : taken) used |= q == e;
                if (!used && (best < 0 || logits[(size_t)t * ld + e] > logits[(size_t)t * ld + best])) best = e;
            }
            taken.push_back(best);
            ref_ids[(size_t)t * k + j] = best;
        }
    }
    float *dl = to_dev(logits);
    size_t nk = (size_t)n * k;
    mt_expert_sort s[2];
    int32_t *ids[2];
    float *w[2];
    for (int v = 0; v < 2; v++) {
        sort_alloc(s[v], E, nk);
        CK(cudaMalloc(&ids[v], nk * 4));
        CK(cudaMalloc(&w[v], nk * 4));
    }
    mt_cuda_route(ids[0], w[0], dl, ld, n, E, k, 1, 0);
    mt_cuda_expert_sort(&s[0], ids[0], n, k, E, 0);
    mt_cuda_route_sort(&s[1], ids[1], w[1], dl, ld, n, E, k, 1, 0);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    bool ok = from_dev(ids[0], nk) == ref_ids && from_dev(ids[1], nk) == ref_ids && from_dev(w[0], nk) == from_dev(w[1], nk);
    ok = ok && from_dev(s[0].offsets, E + 1) == from_dev(s[1].offsets, E + 1) && from_dev(s[0].src_rows, nk) == from_dev(s[1].src_rows, nk) &&
         from_dev(s[0].pair_pos, nk) == from_dev(s[1].pair_pos, nk) && from_dev(s[0].tile_offsets, E + 1) == from_dev(s[1].tile_offsets, E + 1) &&
         from_dev(s[0].n_active, 1) == from_dev(s[1].n_active, 1) && from_dev(s[0].counts, E) == from_dev(s[1].counts, E);
    int na = from_dev(s[0].n_active, 1)[0];
    auto a0 = from_dev(s[0].active, 3 * E), a1 = from_dev(s[1].active, 3 * E);
    auto off0 = from_dev(s[0].offsets, E + 1);
    for (int part = 0; part < 3; part++)
        ok = ok && std::equal(a0.begin() + part * E, a0.begin() + part * E + na, a1.begin() + part * E);
    for (int y = 0; y < na; y++)   // each active expert's first position and rows, as the offsets say
        ok = ok && a0[E + y] == off0[a0[y]] && a0[2 * E + y] == off0[a0[y] + 1] - off0[a0[y]];
    char what[128];
    snprintf(what, sizeof what, "route + sort n %d top-%d of %d (vs host top-k; fused = two kernels)", n, k, E);
    printf("  %-64s %s\n", what, ok ? "ok" : "FAIL");
    if (!ok) failures++;
    for (int v = 0; v < 2; v++) {
        sort_free(s[v]);
        cudaFree(ids[v]);
        cudaFree(w[v]);
    }
    cudaFree(dl);
}

// The one-launch decode router against its three launches (norm, small-path product, route + sort):
// every output bitwise equal.
static void check_moe_router(int n, int E, int k, int H) {
    if (!mt_cuda_moe_router_takes(n, E, k, H)) {
        printf("  moe router n %d E %d H %d: not taken\n", n, E, H);
        failures++;
        return;
    }
    int ld = mt_round16(E);
    std::vector<float> h((size_t)n * H), nw(H), w((size_t)E * H);
    for (auto &v : h) v = frand() * 3.0f;
    for (auto &v : nw) v = 1.0f + 0.5f * frand();
    for (auto &v : w) v = bf(frand() / sqrtf((float)H));
    float *dh = to_dev(h), *dnw = to_dev(nw);
    bf16 *dw = tile_weights(w, E, H, 0);
    size_t nk = (size_t)n * k;
    mt_expert_sort s[2];
    int32_t *ids[2];
    float *wt[2], *lg[2];
    bf16 *y[2];
    for (int v = 0; v < 2; v++) {
        sort_alloc(s[v], E, nk);
        CK(cudaMalloc(&ids[v], nk * 4));
        CK(cudaMalloc(&wt[v], nk * 4));
        CK(cudaMalloc(&lg[v], (size_t)n * ld * 4));
        CK(cudaMemset(lg[v], 0, (size_t)n * ld * 4));
        CK(cudaMalloc(&y[v], (size_t)n * H * 2));
        CK(cudaMemset(y[v], 0xff, (size_t)n * H * 2));
    }
    mt_dmat W = {dw, E, ld, H};
    mt_cuda_rmsnorm(y[0], dh, nullptr, dnw, n, H, 1e-6f, 0);
    mt_linear_args a = mt_dense_args(W, y[0], H, n, lg[0], ld, MT_EPI_F32, 64);
    a.weights_once = 1;
    mt_cuda_linear_small(&a, 0);
    mt_cuda_route_sort(&s[0], ids[0], wt[0], lg[0], ld, n, E, k, 1, 0);
    mt_moe_router_args ra = {};
    ra.h = dh;
    ra.norm_w = dnw;
    ra.eps = 1e-6f;
    ra.n = n;
    ra.H = H;
    ra.y = y[1];
    ra.W = W;
    ra.logits = lg[1];
    ra.ld = ld;
    ra.sort = s[1];
    ra.ids = ids[1];
    ra.weights = wt[1];
    ra.E = E;
    ra.k = k;
    ra.renorm = 1;
    mt_cuda_moe_router(&ra, 0);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    auto y0 = from_dev(y[0], (size_t)n * H), y1 = from_dev(y[1], (size_t)n * H);
    auto l0 = from_dev(lg[0], (size_t)n * ld), l1 = from_dev(lg[1], (size_t)n * ld);
    bool ok = memcmp(y0.data(), y1.data(), y0.size() * 2) == 0;
    for (int t = 0; t < n; t++) ok = ok && memcmp(&l0[(size_t)t * ld], &l1[(size_t)t * ld], (size_t)E * 4) == 0;
    ok = ok && from_dev(ids[0], nk) == from_dev(ids[1], nk) && from_dev(wt[0], nk) == from_dev(wt[1], nk);
    ok = ok && from_dev(s[0].offsets, E + 1) == from_dev(s[1].offsets, E + 1) && from_dev(s[0].src_rows, nk) == from_dev(s[1].src_rows, nk) &&
         from_dev(s[0].pair_pos, nk) == from_dev(s[1].pair_pos, nk) && from_dev(s[0].tile_offsets, E + 1) == from_dev(s[1].tile_offsets, E + 1) &&
         from_dev(s[0].n_active, 1) == from_dev(s[1].n_active, 1) && from_dev(s[0].active, 3 * E) == from_dev(s[1].active, 3 * E) &&
         from_dev(s[0].counts, E) == from_dev(s[1].counts, E);
    char what[128];
    snprintf(what, sizeof what, "one-launch router n %d top-%d of %d, H %d (= norm + product + route/sort)", n, k, E, H);
    printf("  %-64s %s\n", what, ok ? "ok" : "FAIL");
    if (!ok) failures++;
    for (int v = 0; v < 2; v++) {
        sort_free(s[v]);
        cudaFree(ids[v]);
        cudaFree(wt[v]);
        cudaFree(lg[v]);
        cudaFree(y[v]);
    }
    cudaFree(dh);
    cudaFree(dnw);
    cudaFree(dw);
}

static bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The MoE combine folded into the next product (mt_cuda_linear_small_combined) against the combine
// launch (with the norm) and the product: out and the combined residual bitwise equal. Then the o
// product adding to that residual from its own buffer (resid) against adding in place.
static void check_combined(int rows, int H, int k, bool shared) {
    const int n = 1, E = 16, ld_sg = 16;
    if (!mt_cuda_linear_combined_takes(n, H, k, mt_round16(rows))) {
        printf("  combined product rows %d H %d: not taken\n", rows, H);
        failures++;
        return;
    }
    std::vector<float> h(H), ye((size_t)E * H), nw(H), ys(H), sg(ld_sg), w(k), wq((size_t)rows * H);
    std::vector<int32_t> pos(k);
    for (auto &v : h) v = frand() * 3.0f;
    for (auto &v : ye) v = frand();
    for (auto &v : nw) v = 1.0f + 0.5f * frand();
    for (auto &v : ys) v = frand();
    for (auto &v : sg) v = frand() * 2.0f;
    for (int j = 0; j < k; j++) {
        w[j] = 0.5f + 0.5f * frand();
        pos[j] = (j * 5 + 3) % E;
    }
    for (auto &v : wq) v = bf(frand() / sqrtf((float)H));
    float *dh[2] = {to_dev(h), to_dev(h)}, *dye = to_dev(ye), *dnw = to_dev(nw), *dys = to_dev(ys), *dsg = to_dev(sg);
    float *dw = to_dev(w), *dhout, *out[2], *sums;
    int *ready;
    int32_t *dpos = to_dev(pos);
    bf16 *dwq = tile_weights(wq, rows, H, 0), *xb;
    CK(cudaMalloc(&dhout, (size_t)H * 4));
    CK(cudaMemset(dhout, 0xff, (size_t)H * 4));
    CK(cudaMalloc(&xb, (size_t)H * 2));
    CK(cudaMalloc(&sums, 16 * 4));
    CK(cudaMalloc(&ready, 4));
    CK(cudaMemset(ready, 0, 4));
    for (int v = 0; v < 2; v++) {
        CK(cudaMalloc(&out[v], (size_t)rows * 4));
        CK(cudaMemset(out[v], 0xff, (size_t)rows * 4));
    }
    mt_dmat W = {dwq, rows, mt_round16(rows), H};
    mt_cuda_moe_combine(dh[0], dye, dpos, dw, n, k, H, shared ? dys : nullptr, shared ? dsg : nullptr, ld_sg, xb, dnw, 1e-6f, 0);
    mt_linear_args a = mt_dense_args(W, xb, H, n, out[0], rows, MT_EPI_F32, 64);
    a.weights_once = 1;
    mt_cuda_linear_small(&a, 0);
    mt_linear_args f = mt_dense_args(W, nullptr, H, n, out[1], rows, MT_EPI_F32, 64);
    f.weights_once = 1;
    f.combine = {dh[1], dye, dpos, dw, shared ? dys : nullptr, shared ? dsg : nullptr, ld_sg, k, H, dnw, 1e-6f, dhout, sums, ready};
    mt_cuda_linear_small_combined(&f, 0);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    bool ok = same_bits(from_dev(out[0], rows), from_dev(out[1], rows)) && same_bits(from_dev(dh[0], H), from_dev(dhout, H)) &&
              same_bits(from_dev(dh[1], H), h);   // the residual it read is left as it was
    char what[128];
    snprintf(what, sizeof what, "combine folded into a product: %d x %d, top-%d%s", rows, H, k, shared ? ", shared expert" : "");
    printf("  %-64s %s\n", what, ok ? "ok" : "FAIL");
    if (!ok) failures++;

    // o: out = resid + X . W^T from another buffer, against out += X . W^T in place
    std::vector<float> xo((size_t)n * rows);
    for (auto &v : xo) v = frand();
    std::vector<float> wo((size_t)H * rows);
    for (auto &v : wo) v = bf(frand() / sqrtf((float)rows));
    bf16 *dwo = tile_weights(wo, H, rows, 0), *dxo;
    std::vector<bf16> xob(xo.size());
    for (size_t i = 0; i < xo.size(); i++) xob[i] = __float2bfloat16(xo[i]);
    CK(cudaMalloc(&dxo, xob.size() * 2));
    CK(cudaMemcpy(dxo, xob.data(), xob.size() * 2, cudaMemcpyHostToDevice));
    mt_dmat Wo = {dwo, H, H, rows};
    float *o2;   // dh[0] holds the combined residual: add there in place
    CK(cudaMalloc(&o2, (size_t)H * 4));
    CK(cudaMemset(o2, 0xff, (size_t)H * 4));
    mt_linear_args oa = mt_dense_args(Wo, dxo, rows, n, dh[0], H, MT_EPI_F32_ADD, 64);
    oa.weights_once = 1;
    mt_cuda_linear_small(&oa, 0);
    mt_linear_args ob = oa;
    ob.out = o2;
    ob.resid = dhout;
    ob.zero_after_wait = ready;   // the combined product's count, for the next one
    ok = from_dev(ready, 1)[0] == 8;
    mt_cuda_linear_small(&ob, 0);
    CK(cudaDeviceSynchronize());
    ok = ok && same_bits(from_dev(dh[0], H), from_dev(o2, H)) && from_dev(ready, 1)[0] == 0;
    snprintf(what, sizeof what, "  then o added from its own residual buffer (%d x %d), count reset", H, rows);
    printf("  %-64s %s\n", what, ok ? "ok" : "FAIL");
    if (!ok) failures++;
    for (void *p : {(void *)dh[0], (void *)dh[1], (void *)dye, (void *)dnw, (void *)dys, (void *)dsg, (void *)dw, (void *)dhout,
                    (void *)out[0], (void *)out[1], (void *)dpos, (void *)dwq, (void *)xb, (void *)dwo, (void *)dxo,
                    (void *)o2, (void *)sums, (void *)ready})
        cudaFree(p);
}

// ---- attention -------------------------------------------------------------------------------------

// mode 0: decode kernel, 1: decode split kernels (split and merge launches), 2: prefill rows
// kernel, 3: decode split in one cluster launch, 4: the same sending its states by remote stores
// instead of bulk copies. Returns the output (for bitwise comparisons between modes).
static std::vector<bf16> check_attention(int hd, int n_heads, int n_kv, int ctx, int n_new, int mode) {
    bool decode = mode != 2;
    if (mode >= 3 && ctx / 32 + 1 > 32) return {};   // past one cluster: the two launches only
    uint64_t saved = rng_state;   // the same inputs for every mode of one shape
    rng_state = 12345 + (uint64_t)hd * 7 + (uint64_t)ctx;
    const int L = 2, layer = 1, kvd = n_kv * hd, qd = n_heads * hd, G = n_heads / n_kv;
    int n_blocks = (ctx + 15) / 16 + 1;
    std::vector<int32_t> table(n_blocks);
    for (int i = 0; i < n_blocks; i++) table[i] = (i * 7 + 3) % n_blocks;   // scattered blocks
    size_t cache_elems = (size_t)n_blocks * L * 16 * kvd;
    std::vector<bf16> kc(cache_elems), vc(cache_elems);
    for (size_t i = 0; i < cache_elems; i++) {
        kc[i] = __float2bfloat16(frand());
        vc[i] = __float2bfloat16(frand());
    }
    // the n_new last positions are the batch's tokens
    std::vector<int32_t> pos(n_new);
    for (int i = 0; i < n_new; i++) pos[i] = ctx - n_new + i;
    std::vector<bf16> q_all((size_t)ctx * qd);   // a query per position; the batch takes the last n_new
    for (auto &v : q_all) v = __float2bfloat16(frand() * 2.0f);
    std::vector<bf16> q(q_all.end() - (size_t)n_new * qd, q_all.end());
    auto kv_at = [&](const std::vector<bf16> &c, int p, int h, int d) {
        return (double)__bfloat162float(c[(((size_t)table[p / 16] * L + layer) * 16 + p % 16) * kvd + (size_t)h * hd + d]);
    };
    std::vector<double> ref((size_t)n_new * qd);
    for (int t = 0; t < n_new; t++)
        for (int h = 0; h < n_heads; h++) {
            int kh = h / G;
            std::vector<double> s(pos[t] + 1);
            double mx = -1e300;
            for (int p = 0; p <= pos[t]; p++) {
                double dot = 0;
                for (int d = 0; d < hd; d++) dot += (double)__bfloat162float(q[((size_t)t * n_heads + h) * hd + d]) * kv_at(kc, p, kh, d);
                s[p] = dot / sqrt((double)hd);
                mx = fmax(mx, s[p]);
            }
            double sum = 0;
            for (int p = 0; p <= pos[t]; p++) sum += s[p] = exp(s[p] - mx);
            for (int d = 0; d < hd; d++) {
                double o = 0;
                for (int p = 0; p <= pos[t]; p++) o += s[p] * kv_at(vc, p, kh, d);
                ref[((size_t)t * n_heads + h) * hd + d] = o / sum;
            }
        }
    std::vector<mt_attn_tile> tiles;   // one sequence, its block table at offset 0
    if (decode) {
        for (int t = 0; t < n_new; t++)
            for (int h0 = 0; h0 < G; h0 += 16) tiles.push_back({t, 1, h0, G - h0 < 16 ? G - h0 : 16, pos[t], 0});
    } else {
        int per = 64 / G;
        for (int t = 0; t < n_new; t += per) {
            int nt = n_new - t < per ? n_new - t : per;
            tiles.push_back({t, nt, 0, G, pos[t + nt - 1], 0});
        }
    }
    bf16 *dk = to_dev(kc), *dv = to_dev(vc), *dq = to_dev(q);
    int32_t *dpos = to_dev(pos), *dtab = to_dev(table);
    mt_attn_tile *dtiles = to_dev(tiles);
    bf16 *dout;
    CK(cudaMalloc(&dout, (size_t)n_new * qd * sizeof(bf16)));
    CK(cudaMemset(dout, 0xff, (size_t)n_new * qd * sizeof(bf16)));
    mt_attention_args a = {};
    a.q = dq;
    a.k_cache = dk;
    a.v_cache = dv;
    a.positions = dpos;
    a.block_table = dtab;
    a.layer = layer;
    a.num_layers = L;
    a.n_heads = n_heads;
    a.n_kv_heads = n_kv;
    a.head_dim = hd;
    a.tiles = dtiles;
    a.n_tiles = (int)tiles.size();
    a.out = dout;
    float *split = nullptr;
    if (mode == 1 || mode >= 3) {
        a.split_max_tiles = ctx / 32 + 1;
        CK(cudaMalloc(&split, mt_cuda_attention_split_floats(a.n_tiles, n_kv, a.split_max_tiles, hd) * sizeof(float)));
        a.split_states = split;
    }
    mt_cuda_attention_split_one_launch(mode >= 3 ? 1 : 0);
    mt_cuda_attention_split_bulk(mode == 4 ? 0 : 1);
    if (decode) mt_cuda_attention_decode(&a, 0);
    else mt_cuda_attention_prefill(&a, 0);
    mt_cuda_attention_split_one_launch(-1);
    mt_cuda_attention_split_bulk(-1);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    auto g = from_dev(dout, (size_t)n_new * qd);
    std::vector<float> got(g.size());
    for (size_t i = 0; i < g.size(); i++) got[i] = __bfloat162float(g[i]);
    char what[160];
    const char *names[5] = {"decode (4 warps)", "decode split", "prefill rows", "decode split, one launch",
                            "decode split, one launch, stores"};
    snprintf(what, sizeof what, "attention %s hd %d heads %d/%d ctx %d tokens %d", names[mode], hd, n_heads, n_kv, ctx, n_new);
    report(what, rel(ref, got), 1.5e-2);
    cudaFree(dk); cudaFree(dv); cudaFree(dq); cudaFree(dpos); cudaFree(dtab);
    cudaFree(dtiles); cudaFree(dout); cudaFree(split);
    rng_state = saved;
    return g;
}

// The products, sorts and routing checks (everything before attention).
static void check_products_and_routing() {
    printf("products\n");
    const char *misaligned = mt_cuda_linear_layout_check();
    printf("  %-64s %s\n", "product kernels' dynamic shared memory on 32-byte boundaries", misaligned ? misaligned : "ok");
    if (misaligned) failures++;
    const int shapes[][3] = {{48, 64, 7}, {64, 32, 3}, {1024, 1024, 1}, {1024, 1024, 60}, {40, 1024, 300},
                             {4096, 1024, 300}, {256, 768, 130}, {200, 2048, 64}};
    for (auto &s : shapes) {
        for (int large = 0; large < 2; large++) {
            if (!large && s[2] > 64) continue;
            check_dense(s[0], s[1], s[2], MT_EPI_F32, large);
        }
    }
    const int split_shapes[][3] = {{200, 2048, 64}, {1024, 1024, 60}, {256, 768, 130}, {48, 64, 17}, {64, 32, 40},
                                   {5120, 2048, 256}};
    for (auto &s : split_shapes) check_dense(s[0], s[1], s[2], MT_EPI_F32, 2);
    check_dense(512, 1024, 137, MT_EPI_F32_ADD, 2);
    check_dense(512, 1024, 100, MT_EPI_SWIGLU, 2);
    check_dense(96, 64, 33, MT_EPI_BF16, 2);
    check_dense(512, 1024, 37, MT_EPI_F32_ADD, false);
    check_dense(512, 1024, 137, MT_EPI_F32_ADD, true);
    check_dense(4096, 1024, 300, MT_EPI_F32, true, 128);
    check_dense(40, 64, 200, MT_EPI_F32, true, 128);
    check_dense(512, 1024, 260, MT_EPI_SWIGLU, true, 128);
    check_dense(512, 1024, 137, MT_EPI_F32_ADD, true, 128);
    check_dense(96, 64, 9, MT_EPI_BF16, false);
    check_dense(96, 64, 5, MT_EPI_BF16, false);
    check_dense(192, 64, 8, MT_EPI_SWIGLU, false);
    check_dense(512, 1024, 3, MT_EPI_F32_ADD, false);
    check_dense(192, 64, 9, MT_EPI_SWIGLU, false);
    check_dense(512, 1024, 100, MT_EPI_SWIGLU, true);
    check_grouped(512, 1024, 8, {3, 0, 64, 1, 0, 17, 40, 2}, 50, false);
    check_grouped(512, 1024, 8, {3, 0, 64, 1, 0, 17, 40, 2}, 50, true);
    check_grouped(512, 1024, 8, {3, 0, 8, 1, 0, 7, 2, 2}, 8, false, 64, 8);
    check_grouped(1536, 2048, 6, {1, 0, 1, 1, 1, 0}, 1, false, 64, 1);
    check_grouped(2048, 768, 8, {1, 1, 1, 1, 1, 1, 1, 1}, 1, false, 64, 1, true);   // down at batch 1
    check_grouped(512, 1024, 8, {3, 0, 8, 1, 0, 7, 2, 2}, 8, false, 64, 8, true);
    check_grouped(512, 1024, 8, {3, 0, 64, 1, 0, 17, 40, 2}, 50, false, 64, 0, true);   // passes of 16 rows
    check_grouped(96, 64, 6, {130, 0, 1, 65, 64, 200}, 300, true);
    check_grouped(2048, 256, 5, {70, 3, 0, 129, 1}, 150, true);
    check_grouped(2048, 256, 5, {70, 3, 0, 300, 1}, 150, true, 128);
    check_grouped(96, 64, 6, {130, 0, 1, 65, 64, 200}, 300, true, 128);
    check_paths_agree(1024, 1024, 64);
    check_paths_agree(80, 768, 33);
    check_paths_agree(2048, 4096, 48);
    check_paths_agree(128, 2048, 16);
    check_paths_agree(1024, 1024, 1);
    check_paths_agree(2048, 4096, 8);
    check_paths_agree(128, 2048, 5);
    check_paths_agree(80, 768, 3);
    check_paths_agree(5120, 2048, 1);   // q/k/v at batch 1: just over one wave of 8-row blocks (narrow stages)
    check_dense(5120, 2048, 2, MT_EPI_F32, false);
    check_dense(1536, 2048, 1, MT_EPI_SWIGLU, false);    // an expert's gate/up at batch 1, dense
    check_dense(2048, 4096, 1, MT_EPI_F32_ADD, false);   // o at batch 1
    check_dense(40000, 1024, 1, MT_EPI_BF16, false);     // more items than one wave of direct blocks holds
    printf("expert sort\n");
    check_sort(7, 2, 8);
    check_sort(300, 8, 128);
    check_sort(500, 8, 256);
    check_sort(64, 8, 128);
    check_sort(100, 6, 400);
    check_sort(16384, 8, 128);
    check_sort(5000, 4, 60);
    check_sort(2000, 8, 1024);
    check_route_sort(1, 128, 8);
    check_route_sort(1, 60, 4);
    check_route_sort(1, 512, 8);
    check_route_sort(1, 8, 8);
    check_route_sort(32, 128, 8);
    check_route_sort(7, 8, 2);
    check_route_sort(20, 256, 8);
    check_route_sort(16, 512, 8);
    check_route_sort(4, 60, 4);
    check_route_sort(10, 400, 6);
    check_moe_router(1, 128, 8, 2048);
    check_moe_router(8, 128, 8, 2048);
    check_moe_router(3, 60, 4, 64);
    check_moe_router(5, 64, 6, 4096);
    check_moe_router(2, 8, 2, 256);
    check_moe_router(1, 64, 6, 4096);   // one token, normed by the whole block (two 4-vectors a thread)
    check_moe_router(1, 60, 4, 1920);   // one token, a norm width other than the block's: by a warp
    printf("combine folded into the next product\n");
    check_combined(5120, 2048, 8, false);   // q/k/v of Qwen3-30B-A3B at batch 1
    check_combined(5120, 2048, 8, true);
    check_combined(200, 2048, 4, false);
    check_combined(640, 1024, 6, true);     // 256-thread norm: one virtual warp a block
}

int main() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("test_cuda_kernels: no CUDA device; skipped\n");
        return 77;
    }
    // MOETRACE_KERNEL_TESTS=attention: the attention checks alone (a short run on a lent device)
    const char *only = getenv("MOETRACE_KERNEL_TESTS");
    if (!(only && !strcmp(only, "attention"))) check_products_and_routing();
    printf("attention\n");
    const int att[][4] = {{32, 4, 2, 7},      {32, 4, 2, 40},     {64, 16, 4, 300}, {128, 32, 4, 200},
                          {128, 32, 4, 513},  {16, 4, 2, 70},     {128, 32, 4, 1000}, {128, 64, 4, 700},
                          {64, 48, 16, 129},  {128, 32, 4, 1100}};
    for (auto &s : att) {
        auto rows = check_attention(s[0], s[1], s[2], s[3], 1, 0);
        auto split = check_attention(s[0], s[1], s[2], s[3], 1, 1);
        auto one = check_attention(s[0], s[1], s[2], s[3], 1, 3);
        auto stores = check_attention(s[0], s[1], s[2], s[3], 1, 4);
        auto pre = check_attention(s[0], s[1], s[2], s[3], s[3] < 40 ? s[3] : 40, 2);
        // the last token's rows: same bits from all four kernels
        size_t qd = (size_t)s[1] * s[0];
        bool same = memcmp(rows.data(), split.data(), qd * 2) == 0 &&
                    (one.empty() || memcmp(rows.data(), one.data(), qd * 2) == 0) &&
                    (stores.empty() || memcmp(rows.data(), stores.data(), qd * 2) == 0) &&
                    memcmp(rows.data(), pre.data() + pre.size() - qd, qd * 2) == 0;
        printf("  %-64s %s\n", "  decode rows, split, one launch (copies, stores), prefill rows equal", same ? "ok" : "FAIL");
        if (!same) failures++;
    }
    printf("%s\n", failures ? "FAILED" : "all kernel checks passed");
    return failures ? 1 : 0;
}
