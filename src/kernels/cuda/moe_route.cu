// MoE routing on the device: softmax + top-k (+ renormalisation) per token, and the stable sort of
// (token, slot) pairs by expert that the grouped expert products and the combine read.
#include <math.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/route.cuh"

namespace {

template <int PER_LANE>
__global__ void route_kernel(int32_t *ids, float *weights, const float *logits, int ld, int n, int E, int k, int renorm) {
    MT_TIMELINE_KERNEL(MT_TL_ROUTE);
    mt_grid_dependency_wait();
    const int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (t < n) route_token_n<PER_LANE>(t, ids, nullptr, weights, logits, ld, E, k, renorm);
}

// Few pairs (decode batches): everything in one block of 32 warps (E <= SORT_WARP_E). Warp w
// takes pairs [w*per, (w+1)*per): per-warp counts, then for each expert the warps' first slots in
// warp order, so the warps scatter side by side and the order stays stable.
constexpr int SORT_WARP_E = 256;

__global__ void expert_sort_kernel(mt_expert_sort s, const int32_t *ids, int nk, int k, int E) {
    MT_TIMELINE_KERNEL(MT_TL_SORT);
    mt_grid_dependency_wait();
    extern __shared__ int32_t sort_smem[];   // count [E], cursor [E], per-warp cursors [32][E]
    const int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int32_t *count = sort_smem, *cursor = sort_smem + E, *wc = sort_smem + 2 * E;
    for (int e = threadIdx.x; e < nw * E; e += blockDim.x) wc[e] = 0;
    __syncthreads();
    const int per = (nk + nw - 1) / nw, begin = min(nk, warp * per), end = min(nk, begin + per);
    for (int i = begin + (threadIdx.x & 31); i < end; i += 32) atomicAdd(&wc[warp * E + ids[i]], 1);
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {   // warps' offsets within expert e
        int at = 0;
        for (int w = 0; w < nw; w++) {
            int c = wc[w * E + e];
            wc[w * E + e] = at;
            at += c;
        }
        count[e] = at;
    }
    __syncthreads();
    scan_counts_block(s, count, cursor, E);
    for (int e = threadIdx.x; e < nw * E; e += blockDim.x) wc[e] += cursor[e % E];
    __syncthreads();
    scatter_in_order(s, ids, begin, end, k, wc + warp * E);
}

// Decode-sized passes: routing and the sort in one block (route.cuh).
template <int PER_LANE>
__global__ void __launch_bounds__(SMALL_SORT_THREADS) route_sort_small_kernel(mt_expert_sort s, int32_t *ids, float *weights,
                                                                               const float *logits, int ld, int n, int E,
                                                                               int k, int renorm) {
    MT_TIMELINE_KERNEL(MT_TL_ROUTE_SORT);
    mt_grid_dependency_wait();
    route_sort_small_block<PER_LANE>(s, ids, weights, logits, ld, n, E, k, renorm);
}

// Many pairs (prefill): chunks of SORT_CHUNK pairs counted, scanned, then scattered in parallel.
constexpr int SORT_CHUNK = 1024;

__global__ void sort_count_kernel(mt_expert_sort s, const int32_t *ids, int nk, int E) {
    MT_TIMELINE_KERNEL(MT_TL_SORT);
    mt_grid_dependency_wait();
    extern __shared__ int32_t cnt[];   // [E]
    for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
    __syncthreads();
    const int begin = blockIdx.x * SORT_CHUNK, end = min(nk, begin + SORT_CHUNK);
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x) atomicAdd(&cnt[ids[i]], 1);
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) s.chunks[(size_t)blockIdx.x * E + e] = cnt[e];
}

// One block of >= E threads: totals, the scan, then each chunk's first slot per expert.
__global__ void sort_scan_kernel(mt_expert_sort s, int n_chunks, int E) {
    MT_TIMELINE_KERNEL(MT_TL_SORT);
    mt_grid_dependency_wait();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int total = 0;
        for (int c = 0; c < n_chunks; c++) total += s.chunks[(size_t)c * E + e];
        s.counts[e] = total;
    }
    __syncthreads();
    scan_counts_block(s, s.counts, s.offsets, E);   // cursor: offsets again
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int at = s.offsets[e];
        for (int c = 0; c < n_chunks; c++) {
            int cnt = s.chunks[(size_t)c * E + e];
            s.chunks[(size_t)c * E + e] = at;
            at += cnt;
        }
    }
}

__global__ void sort_scatter_kernel(mt_expert_sort s, const int32_t *ids, int nk, int k, int E) {
    MT_TIMELINE_KERNEL(MT_TL_SORT);
    mt_grid_dependency_wait();
    extern __shared__ int32_t cursor[];   // [E]
    for (int e = threadIdx.x; e < E; e += blockDim.x) cursor[e] = s.chunks[(size_t)blockIdx.x * E + e];
    __syncthreads();
    const int begin = blockIdx.x * SORT_CHUNK;
    scatter_in_order(s, ids, begin, min(nk, begin + SORT_CHUNK), k, cursor);
}

}  // namespace

void mt_cuda_route_sort(const mt_expert_sort *s, int32_t *ids, float *weights, const float *logits, int ld, int n,
                        int E, int k, int renorm, cudaStream_t st) {
    if (n <= 0) return;
    if (n <= 32 && E <= SMALL_SORT_THREADS && n * k <= SMALL_SORT_THREADS) {
        int pl = per_lane_of(E);
        if (pl == 4) mt_launch(route_sort_small_kernel<4>, 1, SMALL_SORT_THREADS, 0, st, *s, ids, weights, logits, ld, n, E, k, renorm);
        else if (pl == 8) mt_launch(route_sort_small_kernel<8>, 1, SMALL_SORT_THREADS, 0, st, *s, ids, weights, logits, ld, n, E, k, renorm);
        else mt_launch(route_sort_small_kernel<32>, 1, SMALL_SORT_THREADS, 0, st, *s, ids, weights, logits, ld, n, E, k, renorm);
        return;
    }
    mt_cuda_route(ids, weights, logits, ld, n, E, k, renorm, st);
    mt_cuda_expert_sort(s, ids, n, k, E, st);
}

void mt_cuda_route(int32_t *ids, float *weights, const float *logits, int ld, int n, int E, int k, int renorm,
                   cudaStream_t st) {
    if (n <= 0) return;
    int pl = per_lane_of(E);
    if (pl == 4) mt_launch(route_kernel<4>, (n + 7) / 8, 256, 0, st, ids, weights, logits, ld, n, E, k, renorm);
    else if (pl == 8) mt_launch(route_kernel<8>, (n + 7) / 8, 256, 0, st, ids, weights, logits, ld, n, E, k, renorm);
    else mt_launch(route_kernel<32>, (n + 7) / 8, 256, 0, st, ids, weights, logits, ld, n, E, k, renorm);
}

void mt_cuda_expert_sort(const mt_expert_sort *s, const int32_t *ids, int n, int k, int E, cudaStream_t st) {
    int nk = n * k;
    size_t smem = (size_t)E * sizeof(int32_t);
    if (nk <= 4 * SORT_CHUNK && E <= SORT_WARP_E) {
        mt_launch(expert_sort_kernel, 1, 1024, (2 + 32) * smem, st, *s, ids, nk, k, E);
        return;
    }
    int chunks = (nk + SORT_CHUNK - 1) / SORT_CHUNK;
    mt_launch(sort_count_kernel, chunks, 256, smem, st, *s, ids, nk, E);
    mt_launch(sort_scan_kernel, 1, 1024, 0, st, *s, chunks, E);
    mt_launch(sort_scatter_kernel, chunks, 32, smem, st, *s, ids, nk, k, E);
}
