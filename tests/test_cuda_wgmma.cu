// The Hopper wgmma product path (kernels/cuda/linear_wgmma.cu) against the mma.sync paths, bit for
// bit (skipped without a device, and without a compute capability 9.0 device for the wgmma parts):
//  - one wgmma step (m64nNk16, both operands from shared memory) against the m16n8k16 MMAs
//    over the same data, chained over many chunks from a nonzero accumulator, with values of
//    widely different magnitudes; and a first step with scale-d 0 against MMAs from zero;
//  - the large product (every epilogue, dense and grouped, 64- and 128-row tiles) against the
//    mma.sync large kernel and the small kernel;
//  - with --bench: TFLOP/s of the mma.sync and wgmma large paths on prefill-sized products.
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "cuda_test_util.cuh"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/wgmma.cuh"

static int failures = 0;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t next_u64() {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static float frand() { return (float)((next_u64() >> 40) / 16777216.0) * 2.0f - 1.0f; }   // [-1, 1)
// sign * [1, 2) * 2^e with e in [lo, hi], bf16-rounded when asked; one in 16 is zero
static float wide(int lo, int hi) {
    uint64_t r = next_u64();
    if ((r & 15) == 0) return 0.0f;
    int e = lo + (int)((r >> 8) % (uint64_t)(hi - lo + 1));
    float m = 1.0f + (float)((r >> 24) & 0xffff) / 65536.0f;
    return ldexpf((r >> 4) & 1 ? -m : m, e);
}

static void verdict(const char *what, bool ok) {
    printf("  %-72s %s\n", what, ok ? "ok" : "FAIL");
    if (!ok) failures++;
}

// ---- one step: wgmma against mma.sync ------------------------------------------------------------

// One warpgroup: D (64 weight rows x N X rows) through `chunks` 16-wide chunks in order.
// mode 0: m16n8k16 MMAs from c0; 1: wgmma steps from c0; 2: MMAs from zero; 3: wgmma, the first
// step with scale-d 0 (the accumulator starts as NaN, which that step must ignore).
// The chunk's weights go to shared memory as the tiled layout holds them (core matrix of 8-row
// group g, k half h at (2 g + h) * 128 bytes); the MMAs read their fragments from there by ldmatrix.
template <int N>
__global__ void chain_kernel(const bf16 *Wt, const bf16 *X, const float *c0, float *out, int chunks, int mode) {
    __shared__ uint4 bs_raw[N * 2];
    __shared__ uint4 as_raw[4 * 32];
    bf16 *bs = reinterpret_cast<bf16 *>(bs_raw);
    bf16 *as = reinterpret_cast<bf16 *>(as_raw);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, tq = lane >> 2, t4 = lane & 3;
    const int K = chunks * 16;
    float acc[N / 2];
#pragma unroll
    for (int j = 0; j < N / 8; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) {
            int row = warp * 16 + tq + (q >> 1) * 8, col = j * 8 + 2 * t4 + (q & 1);
            acc[4 * j + q] = mode == 0 || mode == 1 ? c0[row * N + col] : mode == 2 ? 0.0f : __int_as_float(0x7fc00000);
        }
    for (int c = 0; c < chunks; c++) {
        __syncthreads();
        // this warp's tile (16 rows) of chunk c, as it is in memory: 8-row groups 256 bytes apart
        reinterpret_cast<uint4 *>(as + warp * 256 + lane * 8)[0] =
            *reinterpret_cast<const uint4 *>(Wt + ((size_t)warp * chunks + c) * 256 + lane * 8);
        __syncthreads();
        uint32_t A[4];
        mt_ld_a_frag(A, as + warp * 256 + mt_a_frag_lane(lane));
        if (mode == 0 || mode == 2) {
#pragma unroll
            for (int j = 0; j < N / 8; j++) {
                const bf16 *x = X + (size_t)(j * 8 + tq) * K + c * 16 + 2 * t4;
                uint32_t b[2] = {*reinterpret_cast<const uint32_t *>(x), *reinterpret_cast<const uint32_t *>(x + 8)};
                mt_mma(&acc[4 * j], A, b);
            }
        } else {
            __syncthreads();
            for (int v = tid; v < N * 2; v += blockDim.x) {   // X row n, k half h -> core-matrix layout
                int n = v >> 1, h = v & 1;
                bs_raw[h * N + n] = *reinterpret_cast<const uint4 *>(X + (size_t)n * K + c * 16 + h * 8);
            }
            mt_fence_proxy_async();
            __syncthreads();
            mt_wgmma_fence();
            uint64_t desc = mt_wgmma_desc(bs, N * 16, 128), a_desc = mt_wgmma_desc(as, 128, 256);
            if (N == 64) mt_wgmma_n64(*reinterpret_cast<float(*)[32]>(acc), a_desc, desc, mode == 1 || c > 0);
            else mt_wgmma_n128(*reinterpret_cast<float(*)[64]>(acc), a_desc, desc, mode == 1 || c > 0);
            mt_wgmma_commit();
            mt_wgmma_wait<0>();
        }
    }
#pragma unroll
    for (int j = 0; j < N / 8; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) {
            int row = warp * 16 + tq + (q >> 1) * 8, col = j * 8 + 2 * t4 + (q & 1);
            out[row * N + col] = acc[4 * j + q];
        }
}

template <int N>
static void check_step(int chunks) {
    const int K = chunks * 16;
    std::vector<float> w((size_t)64 * K), x((size_t)N * K), c0((size_t)64 * N);
    for (auto &v : w) v = __bfloat162float(__float2bfloat16(wide(-12, 10)));
    for (auto &v : x) v = __bfloat162float(__float2bfloat16(wide(-12, 10)));
    for (auto &v : c0) v = wide(-16, 24);
    std::vector<bf16> wt((size_t)64 * K), xb(x.size());
    for (int r = 0; r < 64; r++)
        for (int k = 0; k < K; k++) wt[mt_tiled_offset(r, k, K)] = __float2bfloat16(w[(size_t)r * K + k]);
    for (size_t i = 0; i < x.size(); i++) xb[i] = __float2bfloat16(x[i]);
    bf16 *dw = to_dev(wt), *dx = to_dev(xb);
    float *dc = to_dev(c0), *dout;
    CK(cudaMalloc(&dout, (size_t)4 * 64 * N * sizeof(float)));
    for (int mode = 0; mode < 4; mode++) chain_kernel<N><<<1, 128>>>(dw, dx, dc, dout + (size_t)mode * 64 * N, chunks, mode);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    auto got = from_dev(dout, (size_t)4 * 64 * N);
    // float64 reference of mode 0 (a sanity check of the layouts, not of the bits)
    double num = 0, den = 0, num_w = 0;
    for (int r = 0; r < 64; r++)
        for (int n = 0; n < N; n++) {
            double s = c0[(size_t)r * N + n];
            for (int k = 0; k < K; k++) s += (double)w[(size_t)r * K + k] * x[(size_t)n * K + k];
            double d0 = got[(size_t)r * N + n] - s, d1 = got[(size_t)64 * N + (size_t)r * N + n] - s;
            num += d0 * d0;
            num_w += d1 * d1;
            den += s * s;
        }
    for (int pair = 0; pair < 2; pair++) {
        const float *a = got.data() + (size_t)(2 * pair) * 64 * N, *b = a + (size_t)64 * N;
        int diff = 0;
        long max_ulp = 0;
        for (int i = 0; i < 64 * N; i++) {
            int32_t ia, ib;
            memcpy(&ia, &a[i], 4);
            memcpy(&ib, &b[i], 4);
            if (ia != ib) {
                diff++;
                max_ulp = std::max(max_ulp, labs((long)ia - (long)ib));
                if (diff <= 3)
                    printf("    differs at row %d col %d: mma %.9g (0x%08x) wgmma %.9g (0x%08x)\n", i / N, i % N, a[i],
                           (unsigned)ia, b[i], (unsigned)ib);
            }
        }
        char what[160];
        snprintf(what, sizeof what, "m64n%dk16 x %d chunks %s: %d of %d differ (max %ld ulp)", N, chunks,
                 pair ? "from zero / scale-d 0" : "from nonzero acc", diff, 64 * N, max_ulp);
        verdict(what, diff == 0);
    }
    printf("    rel err vs float64: mma %.2e, wgmma %.2e\n", sqrt(num / den), sqrt(num_w / den));
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dc);
    cudaFree(dout);
}

// ---- the large product against the mma.sync paths -------------------------------------------------

enum { PATH_SMALL, PATH_MMA, PATH_WGMMA };

static int wgmma_taken = 0;   // products the wgmma path took (it declines some shapes)

// The wgmma path reads gathered X rows in sorted order (mt_cuda_gather_rows), as the forward pass
// gives them; `gathered` (positions x K) holds them.
static mt_linear_args gathered_args(mt_linear_args a, bf16 *gathered, int positions) {
    if (!a.src_rows) return a;
    mt_cuda_gather_rows(gathered, a.X, a.ldx, a.src_rows, positions, a.W.K, 0);
    a.X = gathered;
    a.ldx = a.W.K;
    a.x_rows = positions;
    a.src_rows = nullptr;
    return a;
}

static bool run_path(mt_linear_args a, int path, bf16 *gathered = nullptr, int positions = 0) {
    bool took = true;
    if (path == PATH_SMALL) {
        mt_cuda_linear_small(&a, 0);
    } else if (path == PATH_MMA) {
        mt_cuda_wgmma_set_enabled(0);
        mt_cuda_linear_large(&a, 0);
        mt_cuda_wgmma_set_enabled(-1);
    } else {
        mt_cuda_wgmma_set_enabled(1);
        mt_linear_args g = gathered_args(a, gathered, positions);
        took = mt_cuda_linear_wgmma(&g, 0);
        if (!took) mt_cuda_linear_large(&g, 0);
        mt_cuda_wgmma_set_enabled(-1);
    }
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    return took;
}

static size_t out_elem(int epi) { return epi == MT_EPI_F32 || epi == MT_EPI_F32_ADD ? 4 : 2; }

// Runs each path on the same inputs (the output starting from the same bytes) and compares.
static void compare_paths(mt_linear_args a, size_t out_bytes, bool with_small, const char *what, int positions = 0) {
    bf16 *gathered = nullptr;
    if (a.src_rows) CK(cudaMalloc(&gathered, (size_t)positions * a.W.K * sizeof(bf16)));
    bool took = false;
    std::vector<unsigned char> base(out_bytes);
    for (auto &b : base) b = (unsigned char)(next_u64() >> 56);
    if (a.epilogue == MT_EPI_F32_ADD)   // finite floats to add to
        for (size_t i = 0; i + 4 <= out_bytes; i += 4) {
            float f = frand();
            memcpy(&base[i], &f, 4);
        }
    std::vector<unsigned char> res[3];
    for (int path = 0; path < 3; path++) {
        if (path == PATH_SMALL && !with_small) continue;
        CK(cudaMemcpy(a.out, base.data(), out_bytes, cudaMemcpyHostToDevice));
        bool t = run_path(a, path, gathered, positions);
        if (path == PATH_WGMMA) took = t;
        res[path] = from_dev((unsigned char *)a.out, out_bytes);
    }
    cudaFree(gathered);
    wgmma_taken += took;
    bool same = res[PATH_MMA] == res[PATH_WGMMA] && (!with_small || res[PATH_SMALL] == res[PATH_WGMMA]);
    bool written = res[PATH_MMA] != base;
    char line[200];
    snprintf(line, sizeof line, "%s: %s = mma.sync%s", what, took ? "wgmma" : "declined", with_small ? " = small" : "");
    verdict(line, same && written);
}

static bf16 *random_weights(size_t elems, float scale) {
    bf16 *d;
    CK(cudaMalloc(&d, elems * sizeof(bf16)));
    mt_cuda_fill_random(d, elems, scale, next_u64(), 0);
    return d;
}

static void check_dense(int rows, int K, int n, int epi, int tile_rows) {
    bool swiglu = epi == MT_EPI_SWIGLU;
    int out_cols = swiglu ? rows / 2 : rows;
    bf16 *dw = random_weights(mt_dmat_elems(rows, K), 1.0f / sqrtf((float)K));
    bf16 *dx = random_weights((size_t)n * K, 1.0f);
    size_t out_bytes = (size_t)n * out_cols * out_elem(epi);
    void *dout;
    CK(cudaMalloc(&dout, out_bytes));
    mt_linear_args a = mt_dense_args({dw, rows, mt_round16(rows), K}, dx, K, n, dout, out_cols, epi, tile_rows);
    char what[160];
    snprintf(what, sizeof what, "dense rows %d K %d n %d epilogue %d tile %d", rows, K, n, epi, tile_rows);
    compare_paths(a, out_bytes, n <= 64, what);
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dout);
}

struct Grouped {
    mt_linear_args a;
    std::vector<void *> bufs;
    size_t out_bytes;
    int positions;
};

// E experts with the given row counts, positions gathered from n_tokens X rows.
// gather false: X rows are the sorted positions themselves (no src_rows), as for the down product.
static Grouped make_grouped(int rows, int K, const std::vector<int> &counts, int n_tokens, int epi, int tile_rows,
                            bool gather = true) {
    int E = (int)counts.size();
    Grouped g;
    size_t stride = mt_dmat_elems(rows, K);
    bf16 *dw = random_weights(stride * E, 1.0f / sqrtf((float)K));
    HostSort hs = host_sort(counts, tile_rows, [&](int, int) { return (int32_t)(next_u64() % (uint64_t)n_tokens); });
    int total = hs.total;
    int x_rows = gather ? n_tokens : total;
    bf16 *dx = random_weights((size_t)x_rows * K, 1.0f);
    int out_cols = epi == MT_EPI_SWIGLU ? rows / 2 : rows;
    g.out_bytes = (size_t)total * out_cols * out_elem(epi);
    g.positions = total;
    void *dout;
    CK(cudaMalloc(&dout, g.out_bytes + 16));
    mt_linear_args &a = g.a;
    a = {};
    a.W = {dw, rows, mt_round16(rows), K};
    a.group_stride = stride;
    a.X = dx;
    a.ldx = K;
    hs.set_grouped(a, tile_rows);
    a.x_rows = x_rows;
    if (!gather) a.src_rows = nullptr;
    a.out = dout;
    a.ldo = out_cols;
    a.epilogue = epi;
    g.bufs = hs.device_buffers();
    g.bufs.insert(g.bufs.end(), {dw, dx, dout});
    return g;
}

static void free_grouped(Grouped &g) {
    for (void *p : g.bufs) cudaFree(p);
}

static void check_grouped(int rows, int K, const std::vector<int> &counts, int n_tokens, int epi, int tile_rows,
                          bool gather = true) {
    Grouped g = make_grouped(rows, K, counts, n_tokens, epi, tile_rows, gather);
    bool small_ok = *std::max_element(counts.begin(), counts.end()) <= 64;
    char what[160];
    snprintf(what, sizeof what, "grouped rows %d K %d experts %d epilogue %d tile %d%s", rows, K, (int)counts.size(), epi,
             tile_rows, gather ? "" : " (X rows = positions)");
    compare_paths(g.a, g.out_bytes, small_ok, what, g.positions);
    free_grouped(g);
}

// ---- timing ---------------------------------------------------------------------------------------

// Median time of the product alone (for gathered X, the wgmma path's gather is timed apart).
static double time_path(mt_linear_args a, int path, int reps, bf16 *gathered, int positions) {
    run_path(a, path, gathered, positions);   // warm-up
    if (path == PATH_WGMMA) a = gathered_args(a, gathered, positions);
    mt_cuda_wgmma_set_enabled(path == PATH_WGMMA);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> ms(reps);
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(e0));
        mt_cuda_linear_large(&a, 0);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms[r], e0, e1));
    }
    mt_cuda_wgmma_set_enabled(-1);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    std::sort(ms.begin(), ms.end());
    return ms[reps / 2] * 1e-3;
}

static void bench_one(const char *name, const mt_linear_args &a, double flops, int positions = 0) {
    bf16 *gathered = nullptr;
    if (a.src_rows) CK(cudaMalloc(&gathered, (size_t)positions * a.W.K * sizeof(bf16)));
    double t_old = time_path(a, PATH_MMA, 9, gathered, positions), t_new = time_path(a, PATH_WGMMA, 9, gathered, positions);
    printf("  %-48s mma.sync %7.3f ms %6.1f TFLOP/s | wgmma %7.3f ms %6.1f TFLOP/s | x%.2f\n", name, t_old * 1e3,
           flops / t_old * 1e-12, t_new * 1e3, flops / t_new * 1e-12, t_old / t_new);
    if (gathered) {   // the gather the wgmma path needs first
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        CK(cudaEventRecord(e0));
        mt_cuda_gather_rows(gathered, a.X, a.ldx, a.src_rows, positions, a.W.K, 0);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        printf("  %-48s %.3f ms (%.0f GB/s written)\n", "  + gathering its X rows", ms, positions * (double)a.W.K * 2 / ms * 1e-6);
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        cudaFree(gathered);
    }
}

static void bench() {
    printf("bench (median of 9)\n");
    const int n = 16384;
    const struct {
        const char *name;
        int rows, K, epi;
    } dense[] = {{"dense 16384 x K 2048 x rows 1536 (bf16 out)", 1536, 2048, MT_EPI_BF16},
                 {"dense 16384 x K 2048 x rows 5120 (qkv, f32)", 5120, 2048, MT_EPI_F32},
                 {"dense 16384 x K 4096 x rows 2048 (o, f32 add)", 2048, 4096, MT_EPI_F32_ADD}};
    for (auto &d : dense) {
        bf16 *dw = random_weights(mt_dmat_elems(d.rows, d.K), 1.0f / sqrtf((float)d.K));
        bf16 *dx = random_weights((size_t)n * d.K, 1.0f);
        void *dout;
        CK(cudaMalloc(&dout, (size_t)n * d.rows * 4));
        CK(cudaMemset(dout, 0, (size_t)n * d.rows * 4));
        mt_linear_args a = mt_dense_args({dw, d.rows, mt_round16(d.rows), d.K}, dx, d.K, n, dout, d.rows, d.epi, 128);
        bench_one(d.name, a, 2.0 * n * d.rows * d.K);
        cudaFree(dw);
        cudaFree(dx);
        cudaFree(dout);
    }
    // experts: 128 x ~1024 rows (16384 tokens, top-8), gate_up with SwiGLU and down
    std::vector<int> counts(128);
    for (int e = 0; e < 128; e++) counts[e] = 1024 + (e % 7 - 3) * 40;
    long total = 0;
    for (int c : counts) total += c;
    for (int which = 0; which < 2; which++) {
        int rows = which ? 2048 : 1536, K = which ? 768 : 2048, epi = which ? MT_EPI_F32 : MT_EPI_SWIGLU;
        Grouped g = make_grouped(rows, K, counts, n, epi, 128, which == 0);
        bench_one(which ? "experts down 128 x ~1024 x K 768 x rows 2048" : "experts gate_up 128 x ~1024 x K 2048 x rows 1536",
                  g.a, 2.0 * total * rows * K, g.positions);
        free_grouped(g);
    }
}

int main(int argc, char **argv) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("test_cuda_wgmma: no CUDA device; skipped\n");
        return 77;
    }
    if (!mt_cuda_wgmma_supported()) {
        printf("test_cuda_wgmma: not a compute capability 9.0 device; skipped\n");
        return 77;
    }
    printf("one step: wgmma vs m16n8k16\n");
    check_step<128>(64);
    check_step<64>(64);
    check_step<128>(7);
    printf("large product: wgmma vs mma.sync (and small)\n");
    const int dense[][4] = {{4096, 1024, 300, MT_EPI_F32},   {40, 64, 200, MT_EPI_F32},      {512, 1024, 260, MT_EPI_SWIGLU},
                            {512, 1024, 137, MT_EPI_F32_ADD}, {200, 2048, 64, MT_EPI_F32},     {80, 768, 33, MT_EPI_BF16},
                            {1024, 4096, 129, MT_EPI_F32},   {2048, 768, 130, MT_EPI_F32},    {48, 32, 7, MT_EPI_F32},
                            {96, 48, 70, MT_EPI_BF16},       {1536, 2048, 300, MT_EPI_SWIGLU}, {5120, 2048, 129, MT_EPI_F32}};
    for (auto &d : dense)
        for (int tile : {64, 128}) check_dense(d[0], d[1], d[2], d[3], tile);
    for (int tile : {64, 128}) {
        check_grouped(1536, 2048, {300, 0, 1, 129, 64, 200, 17, 128}, 400, MT_EPI_SWIGLU, tile);
        check_grouped(2048, 768, {70, 3, 0, 300, 1}, 150, MT_EPI_F32, tile);
        check_grouped(96, 64, {130, 0, 1, 65, 64, 200}, 300, MT_EPI_BF16, tile);
        check_grouped(512, 1024, {3, 0, 64, 1, 0, 17, 40, 2}, 50, MT_EPI_F32, tile);
        check_grouped(2048, 768, {70, 3, 0, 300, 1, 129}, 150, MT_EPI_F32_ADD, tile, false);
    }
    verdict("the wgmma path took the products it should (128-row tiles, K 768 .. 4096)", wgmma_taken >= 22);
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) bench();
    printf("%s\n", failures ? "FAILED" : "all wgmma checks passed");
    return failures ? 1 : 0;
}
