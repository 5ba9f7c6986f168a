// The MoE router of a decode-sized pass in one launch: the post-attention RMSNorm, the router
// product and the routing + sort, which otherwise take three launches of one or a few blocks each
// (at batch 1 about 12 us a layer, mostly latency: docs/CUDA.md).
//
// One cluster of R blocks, R = the router's 16-row tiles (E <= 128: R <= 8, a portable cluster).
// Every block copies its weight tile into shared memory before the dependency wait (weights: no
// launch writes them), then normalises the pass's rows itself (a warp a row, with the norm
// launch's arithmetic: row_norm.cuh; a pass of one token by the whole block, with the norm launch's
// code), takes its 16 logits per token with the small product path's
// arithmetic (warp w: slice w of mt_k_slices(H), m16n8k16 chunks in order; slices added in order
// from zero) and stores them into block 0's shared memory with asynchronous remote stores that
// complete on a barrier there (no cluster-wide fence or barrier at the end). Block 0 then routes and sorts
// (route.cuh, the routing launch's code). Same bits as mt_cuda_rmsnorm + mt_cuda_linear_small +
// mt_cuda_route_sort.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/route.cuh"
#include "kernels/cuda/row_norm.cuh"

namespace {

constexpr int ROUTER_MAX_TOKENS = 8;    // one m16n8k16 n-tile of tokens
constexpr int ROUTER_MAX_TILES = 8;     // blocks of a portable cluster
constexpr int ROUTER_THREADS = SMALL_SORT_THREADS;   // 512: the norm's block width for H >= 1924 too

// Shared memory: the weight tile [16 x H], the norm's weights [H], the normed rows [n][H + 8]
// (padded against bank conflicts), the warps' slice sums [8][16 x 8], and block 0's logits [n][ld].
size_t router_smem(int n, int H, int ld) {
    return (size_t)16 * H * sizeof(bf16) + (size_t)H * sizeof(float) + (size_t)n * (H + 8) * sizeof(bf16) +
           (size_t)8 * 128 * sizeof(float) + (size_t)n * ld * sizeof(float) + MT_SMEM_PAD;
}

// NV: 4-vectors of a row per thread of the norm (rmsnorm_row_warp)
template <int NV>
__global__ void __launch_bounds__(ROUTER_THREADS) moe_router_kernel(const mt_moe_router_args a) {
    MT_TIMELINE_KERNEL(MT_TL_MOE_ROUTER);
    extern __shared__ uint4 smem_raw[];
    __shared__ __align__(8) uint64_t wbar, nbar, lbar;
    const int H = a.H, C = H / 16, S = mt_k_slices(H), rt = blockIdx.x, xstride = H + 8;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    bf16 *wt = static_cast<bf16 *>(mt_smem_base(smem_raw));
    float *nws = reinterpret_cast<float *>(wt + (size_t)16 * H);
    bf16 *xs = reinterpret_cast<bf16 *>(nws + H);
    float *part = reinterpret_cast<float *>(xs + (size_t)a.n * xstride);
    float *lg = part + 8 * 128;
    // One token: the whole block normalises it with the norm launch's code, at that launch's width
    // (one load a thread instead of a warp's 16 in turn, and the sums' trees side by side), its
    // weights from global memory; otherwise a warp a token, its weights copied to nws.
    const bool one_row = a.n == 1 && rmsnorm_threads(H) == ROUTER_THREADS && rmsnorm_vecs(H) == NV;
    if (tid == 0) {   // the tile: 16 rows x H, contiguous in the tiled layout
        const unsigned bytes = (unsigned)H * 32u;
        mt_mbar_init(&wbar, 1);
        mt_mbar_init(&nbar, 1);
        mt_mbar_init(&lbar, 1);
        mt_mbar_init_fence();
        if (!one_row) {   // only the warps' norm waits on it: no copy is left in flight at exit
            mt_mbar_expect(&nbar, (unsigned)H * 4u);
            mt_bulk_copy(nws, a.norm_w, (unsigned)H * 4u, &nbar, mt_weight_policy(false));
        }
        mt_mbar_expect(&wbar, bytes);
        mt_bulk_copy(wt, a.W.w + (size_t)rt * C * 256, bytes, &wbar, mt_weight_policy(true));
        // block 0: the other blocks' logits, 4 bytes each, arrive by asynchronous remote stores
        if (rt == 0 && a.W.rows > 16) mt_mbar_expect(&lbar, (unsigned)(a.W.rows - 16) * (unsigned)a.n * 4u);
    }
    __syncthreads();   // the barriers are initialised
    // every block must have started, and block 0's barrier be initialised, before another block
    // writes its shared memory: arrive now, wait before the first remote write
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
    __shared__ float norm_scratch[33];
    NormWeights<NV> nwr;
    if (one_row) nwr = norm_weights<NV>(a.norm_w, H);   // weights: before the wait
    mt_grid_dependency_wait();

    if (one_row) {
        rmsnorm_row<NV>(xs, a.h, a.norm_w, nwr, H, a.eps, norm_scratch);   // the norm launch's code
    } else if (warp < a.n) {   // warp t normalises token t
        mt_mbar_wait(&nbar, 0);
        rmsnorm_row_warp<NV>(xs + (size_t)warp * xstride, a.h + (size_t)warp * H, nws, H, a.eps);
    }
    __syncthreads();
    if (rt == 0)   // the normed rows for the expert products
        for (int i = tid; i < a.n * H / 8; i += ROUTER_THREADS) {
            int t = i / (H / 8), v = i - t * (H / 8);
            reinterpret_cast<uint4 *>(a.y + (size_t)t * H)[v] = reinterpret_cast<const uint4 *>(xs + (size_t)t * xstride)[v];
        }

    if (warp < S) {   // slice `warp` of this tile for every token
        mt_mbar_wait(&wbar, 0);
        const int c0 = warp * C / S, c1 = (warp + 1) * C / S;
        const int a_lane = mt_a_frag_lane(lane), tq = lane >> 2, t4 = lane & 3;
        // B fragment: token tq (the last token's row for columns past n, which are never stored)
        const bf16 *xr = xs + (size_t)min(tq, a.n - 1) * xstride + 2 * t4;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
        for (int c = c0; c < c1; c++) {
            uint32_t A[4];
            mt_ld_a_frag(A, wt + (size_t)c * 256 + a_lane);
            uint32_t b[2] = {*reinterpret_cast<const uint32_t *>(xr + c * 16), *reinterpret_cast<const uint32_t *>(xr + c * 16 + 8)};
            mt_mma(acc, A, b);
        }
        float *pw = part + warp * 128;   // [row][token], as the small path's partial sums
        pw[tq * 8 + 2 * t4] = acc[0];
        pw[tq * 8 + 2 * t4 + 1] = acc[1];
        pw[(tq + 8) * 8 + 2 * t4] = acc[2];
        pw[(tq + 8) * 8 + 2 * t4 + 1] = acc[3];
    }
    __syncthreads();
    asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory");
    if (tid < 16 * a.n) {
        const int i = tid >> 4, r = tid & 15, col = rt * 16 + r;
        float tot = 0.0f;
        for (int w = 0; w < S; w++) tot += part[w * 128 + r * 8 + i];
        if (col < a.W.rows) {
            a.logits[(size_t)i * a.ld + col] = tot;
            if (rt == 0) lg[i * a.ld + col] = tot;
            else mt_st_async_remote(&lg[i * a.ld + col], &lbar, 0, tot);   // completes on block 0's lbar
        }
    }
    if (rt != 0) return;   // no block reads this one's shared memory
    __syncthreads();       // block 0's own logits
    if (a.W.rows > 16) mt_mbar_wait(&lbar, 0);   // and every other block's
    route_sort_small_block<4>(a.sort, a.ids, a.weights, lg, a.ld, a.n, a.E, a.k, a.renorm);   // E <= 128
}

template <int NV>
void launch_router(const mt_moe_router_args &a, cudaStream_t st) {
    static int configured_smem = 0;
    const size_t smem = router_smem(a.n, a.H, a.ld);
    if ((int)smem > configured_smem) {
        cudaFuncSetAttribute(moe_router_kernel<NV>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        configured_smem = (int)smem;
    }
    const int R = a.W.rows_pad / 16;
    mt_launch_clusters(moe_router_kernel<NV>, dim3(R), dim3(ROUTER_THREADS), smem, st, R, a);
}

}  // namespace

int mt_cuda_moe_router_takes(int n, int E, int k, int H) {
    if (n < 1 || n > ROUTER_MAX_TOKENS || E < 1 || mt_round16(E) / 16 > ROUTER_MAX_TILES || k < 1 || k > E ||
        n * k > SMALL_SORT_THREADS || H % 16 != 0 || H > 4096)
        return 0;
    static int optin = -1;   // shared memory a block may have, of the device in use (one per process)
    if (optin < 0) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
            cudaGetLastError();
            optin = 0;
        }
    }
    return router_smem(n, H, mt_round16(E)) + 8 * 1024 <= (size_t)optin;   // + the static arrays
}

void mt_cuda_moe_router(const mt_moe_router_args *a, cudaStream_t st) {
    if (a->H <= 2048) launch_router<1>(*a, st);
    else launch_router<2>(*a, st);
}
