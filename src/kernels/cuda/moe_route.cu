// MoE routing on the device: softmax + top-k (+ renormalisation) per token, and the stable sort of
// (token, slot) pairs by expert that the grouped expert products and the combine read.
#include <math.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch.cuh"

namespace {


// One warp per token. Ties in top-k go to the lower expert id (as the CPU path and torch.topk on
// distinct values). Each of the k rounds takes the largest remaining probability with two warp
// reductions (redux.sync): the maximum of the values' bits (a non-negative float orders as its
// bits) and the lowest expert id holding it. A probability that is NaN (from NaN logits) is never
// preferred to a number, and every id written is a real expert.
// PER_LANE: router logits each lane holds (E <= 32 * PER_LANE). ids_local, when set, gets the ids
// too (shared memory of the caller, which reads them back).
template <int PER_LANE>
__device__ void route_token_n(int t, int32_t *ids, int32_t *ids_local, float *weights, const float *logits, int ld, int E,
                              int k, int renorm) {
    const int lane = threadIdx.x & 31;
    const float *row = logits + (size_t)t * ld;
    float p[PER_LANE];
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        int e = i * 32 + lane;
        p[i] = e < E ? row[e] : -INFINITY;
        mx = fmaxf(mx, p[i]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        p[i] = i * 32 + lane < E ? expf(p[i] - mx) : 0.0f;
        sum += p[i];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    // candidates: key = the probability's bits + 2 (1 for NaN), 0 once taken or past E
    unsigned key[PER_LANE];
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
        float q = p[i] / sum;
        key[i] = i * 32 + lane >= E ? 0u : q >= 0.0f ? __float_as_uint(q + 0.0f) + 2u : 1u;
    }

    float chosen[32];
    float wsum = 0.0f;
#pragma unroll 1   // rolled loops here: these launches fetch their code cold (see per_lane_of)
    for (int j = 0; j < k; j++) {
        unsigned bk = 0u;
        int bi = 0x7fffffff;
#pragma unroll
        for (int i = 0; i < PER_LANE; i++)
            if (key[i] > bk) { bk = key[i]; bi = i * 32 + lane; }
        const unsigned top = __reduce_max_sync(0xffffffffu, bk);
        bi = (int)__reduce_min_sync(0xffffffffu, (unsigned)(bk == top && top ? bi : 0x7fffffff));
#pragma unroll
        for (int i = 0; i < PER_LANE; i++)
            if (i * 32 + lane == bi) key[i] = 0u;
        const float bv = top >= 2u ? __uint_as_float(top - 2u) : NAN;
        if (bi == 0x7fffffff) bi = j;   // fewer than k experts (k > E): refused on load; a real id anyway
        if (lane == 0) {
            ids[(size_t)t * k + j] = bi;
            if (ids_local) ids_local[t * k + j] = bi;
        }
        if (j < 32) chosen[j] = bv;
        wsum += bv;
    }
    if (lane == 0)
#pragma unroll 1
        for (int j = 0; j < k && j < 32; j++) weights[(size_t)t * k + j] = renorm ? chosen[j] / wsum : chosen[j];
}

// Router logits per lane for E experts (the kernels below are compiled per value, so each holds the
// code of one: a decode layer's routing launch fetches its code cold, and less code is less time).
int per_lane_of(int E) { return E <= 128 ? 4 : E <= 256 ? 8 : 32; }

template <int PER_LANE>
__global__ void route_kernel(int32_t *ids, float *weights, const float *logits, int ld, int n, int E, int k, int renorm) {
    MT_TIMELINE_KERNEL(MT_TL_ROUTE);
    mt_grid_dependency_wait();
    const int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (t < n) route_token_n<PER_LANE>(t, ids, nullptr, weights, logits, ld, E, k, renorm);
}

// Ranks pairs [begin, end) in order into their experts' slots, starting at cursor[e] (shared
// memory): the calling warp walks them 32 at a time, ranking equal experts with match_any. Stable.
__device__ void scatter_in_order(const mt_expert_sort &s, const int32_t *ids, int begin, int end, int k, int32_t *cursor) {
    const int lane = threadIdx.x & 31;
#pragma unroll 1
    for (int base = begin; base < end; base += 32) {
        int i = base + lane;
        int e = i < end ? ids[i] : -1 - lane;   // distinct negatives never match a real expert
        unsigned same = __match_any_sync(0xffffffffu, e);
        if (i < end) {
            int pos = cursor[e] + __popc(same & ((1u << lane) - 1u));
            s.src_rows[pos] = i / k;
            s.pair_pos[i] = pos;
        }
        __syncwarp();
        if (i < end && (same >> lane) == 1u) cursor[e] += __popc(same);   // highest lane of its group
        __syncwarp();
    }
}

// From count[E] (shared memory, E <= 1024): counts, offsets, tile offsets, the active list, and
// cursor[e] = offsets[e] (shared memory). Warp 0 alone: each lane owns E/32 consecutive experts,
// the lanes' sums are scanned across the warp.
__device__ void scan_counts_warp(const mt_expert_sort &s, const int32_t *count, int32_t *cursor, int E) {
    const int lane = threadIdx.x & 31;
    const int per = (E + 31) / 32, first = lane * per;
    int sum_rows = 0, sum_tiles = 0, sum_active = 0;
#pragma unroll 1
    for (int e = first; e < first + per && e < E; e++) {
        sum_rows += count[e];
        sum_tiles += (count[e] + s.tile_rows - 1) / s.tile_rows;
        sum_active += count[e] > 0;
    }
    int inc_rows = sum_rows, inc_tiles = sum_tiles, inc_active = sum_active;   // inclusive warp scans
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int r = __shfl_up_sync(0xffffffffu, inc_rows, o), t = __shfl_up_sync(0xffffffffu, inc_tiles, o),
            a = __shfl_up_sync(0xffffffffu, inc_active, o);
        if (lane >= o) {
            inc_rows += r;
            inc_tiles += t;
            inc_active += a;
        }
    }
    int at = inc_rows - sum_rows, tiles = inc_tiles - sum_tiles, active = inc_active - sum_active;
#pragma unroll 1
    for (int e = first; e < first + per && e < E; e++) {
        int c = count[e];
        s.counts[e] = c;
        s.offsets[e] = at;
        s.tile_offsets[e] = tiles;
        cursor[e] = at;
        if (c > 0) {
            s.active[active] = e;
            s.active[E + active] = at;
            s.active[2 * E + active] = c;
            active++;
        }
        at += c;
        tiles += (c + s.tile_rows - 1) / s.tile_rows;
    }
    if (lane == 31) {
        s.offsets[E] = inc_rows;
        s.tile_offsets[E] = inc_tiles;
        *s.n_active = inc_active;
    }
    __syncwarp();
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
    if (warp == 0) scan_counts_warp(s, count, cursor, E);
    __syncthreads();
    for (int e = threadIdx.x; e < nw * E; e += blockDim.x) wc[e] += cursor[e % E];
    __syncthreads();
    scatter_in_order(s, ids, begin, end, k, wc + warp * E);
}

// Decode-sized passes (n <= 32 tokens, E <= 512, n * k <= 512): routing and the sort in one block
// of 512 threads. Warp w routes tokens w and w + 16, its ids also kept in shared memory for the
// counts and the scatter; the counts go to shared memory; warp 0 scans them (each lane owns E/32
// consecutive experts) and scatters the pairs.
constexpr int SMALL_SORT_THREADS = 512;

template <int PER_LANE>
__global__ void __launch_bounds__(SMALL_SORT_THREADS) route_sort_small_kernel(mt_expert_sort s, int32_t *ids, float *weights,
                                                                               const float *logits, int ld, int n, int E,
                                                                               int k, int renorm) {
    MT_TIMELINE_KERNEL(MT_TL_ROUTE_SORT);
    mt_grid_dependency_wait();
    __shared__ int32_t count[SMALL_SORT_THREADS], cursor[SMALL_SORT_THREADS], ids_local[SMALL_SORT_THREADS];
    const int tid = threadIdx.x, warp = tid >> 5;
    count[tid] = 0;
    __syncthreads();
    for (int t = warp; t < n; t += SMALL_SORT_THREADS / 32)
        route_token_n<PER_LANE>(t, ids, ids_local, weights, logits, ld, E, k, renorm);
    MT_TIMELINE_MARK(0);   // routed
    __syncthreads();
    for (int i = tid; i < n * k; i += blockDim.x) atomicAdd(&count[ids_local[i]], 1);
    __syncthreads();
    if (warp != 0) return;
    scan_counts_warp(s, count, cursor, E);
    MT_TIMELINE_MARK(1);   // counted and scanned
    scatter_in_order(s, ids_local, 0, n * k, k, cursor);
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
    if (threadIdx.x < 32) scan_counts_warp(s, s.counts, s.offsets, E);   // cursor: offsets again
    __syncthreads();
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
