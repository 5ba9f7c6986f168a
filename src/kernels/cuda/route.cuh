// Device pieces of MoE routing shared by the routing launches (moe_route.cu) and the decode router
// (moe_router.cu): softmax top-k of one token by a warp, the stable counting sort of a decode-sized
// pass by one block (of a one-token pass by the warp that routed it), and the scan of the sort's
// counts that every sort shares. One copy of the code, so every launch that routes a token gives
// the same ids and weights. Device code only; included by .cu files.
#ifndef MT_KERNELS_CUDA_ROUTE_CUH
#define MT_KERNELS_CUDA_ROUTE_CUH

#include <math.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/timeline.cuh"

// One warp per token. Ties in top-k go to the lower expert id (as the CPU path and torch.topk on
// distinct values). Each of the k rounds takes the largest remaining probability with two warp
// reductions (redux.sync): the maximum of the values' bits (a non-negative float orders as its
// bits) and the lowest expert id holding it. A probability that is NaN (from NaN logits) is never
// preferred to a number, and every id written is a real expert.
// PER_LANE: router logits each lane holds (E <= 32 * PER_LANE); k <= 32 (the CUDA backend refuses
// more). ids_local, when set, gets the ids too (shared memory of the caller, which reads them back).
// Returns pick `lane` in lanes below k (0 in the others).
template <int PER_LANE>
__device__ int route_token_n(int t, int32_t *ids, int32_t *ids_local, float *weights, const float *logits, int ld, int E,
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

    // lane j keeps pick j (k <= 32), so no array of picks goes to local memory
    int my_id = 0;
    float my_value = 0.0f, wsum = 0.0f;
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
        if (lane == j) {
            my_id = bi;
            my_value = bv;
        }
        wsum += bv;
    }
    if (lane < k) {
        ids[(size_t)t * k + lane] = my_id;
        if (ids_local) ids_local[t * k + lane] = my_id;
        weights[(size_t)t * k + lane] = renorm ? my_value / wsum : my_value;
    }
    return my_id;
}

// Ranks pairs [begin, end) in order into their experts' slots, starting at cursor[e] (shared
// memory): the calling warp walks them 32 at a time, ranking equal experts with match_any. Stable.
static __device__ void scatter_in_order(const mt_expert_sort &s, const int32_t *ids, int begin, int end, int k, int32_t *cursor) {
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

// Threads of the block that routes and sorts a decode-sized pass (route_sort_small_block).
constexpr int SMALL_SORT_THREADS = 512;

// From count[E]: the sort's counts, offsets, tile offsets (offsets[E] and tile_offsets[E] the
// totals), the active list (ids in order, then their first positions, then their rows), n_active,
// and cursor[e] = offsets[e]. By a whole block of at least E threads (at most 1024), thread e taking
// expert e: the rows, tiles and active experts before it by warp scans and the warps' totals, with
// no loop over experts. count and cursor may be shared or global memory (count may be s.counts);
// returns with cursor[] set and visible to the block.
static __device__ void scan_counts_block(const mt_expert_sort &s, const int32_t *count, int32_t *cursor, int E) {
    __shared__ int totals[32][3];
    const int e = threadIdx.x, lane = e & 31, warp = e >> 5;
    const int c = e < E ? count[e] : 0, tiles = (c + s.tile_rows - 1) / s.tile_rows, act = c > 0;
    int inc_rows = c, inc_tiles = tiles, inc_act = act;   // inclusive scans within the warp
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int r = __shfl_up_sync(0xffffffffu, inc_rows, o), t = __shfl_up_sync(0xffffffffu, inc_tiles, o),
            a = __shfl_up_sync(0xffffffffu, inc_act, o);
        if (lane >= o) {
            inc_rows += r;
            inc_tiles += t;
            inc_act += a;
        }
    }
    if (lane == 31) {
        totals[warp][0] = inc_rows;
        totals[warp][1] = inc_tiles;
        totals[warp][2] = inc_act;
    }
    __syncthreads();
    int at = inc_rows - c, tile_at = inc_tiles - tiles, rank = inc_act - act;
    for (int w = 0; w < warp; w++) {
        at += totals[w][0];
        tile_at += totals[w][1];
        rank += totals[w][2];
    }
    if (e < E) {
        s.counts[e] = c;
        s.offsets[e] = at;
        s.tile_offsets[e] = tile_at;
        cursor[e] = at;
        if (act) {
            s.active[rank] = e;
            s.active[E + rank] = at;
            s.active[2 * E + rank] = c;
        }
        if (e == E - 1) {
            s.offsets[E] = at + c;
            s.tile_offsets[E] = tile_at + tiles;
            *s.n_active = rank + act;
        }
    }
    __syncthreads();
}

// The sort of a pass of one token, by the warp that routed it (lane j holding pick j): the picks are
// distinct experts, so each active expert has one row and one tile, and the experts before e (its
// offset and its tile offset) are the picks with lower ids. They are counted from a bitmask of the
// picks (mask: (E + 31) / 32 words of shared memory): the set bits of the words before e's and those
// of e's below it. Writes what scan_counts_block and the scatter write for the same pass.
static __device__ void sort_one_token_warp(const mt_expert_sort &s, unsigned *mask, int id, int k, int E) {
    const int lane = threadIdx.x & 31, words = (E + 31) / 32;
    for (int w = lane; w < words; w += 32) mask[w] = 0u;
    __syncwarp();
    if (lane < k) atomicOr(&mask[id >> 5], 1u << (id & 31));
    __syncwarp();
    if (lane < k) {
        int rank = __popc(mask[id >> 5] & ((1u << (id & 31)) - 1u));
        for (int w = 0; w < (id >> 5); w++) rank += __popc(mask[w]);
        s.active[rank] = id;
        s.active[E + rank] = rank;
        s.active[2 * E + rank] = 1;
        s.src_rows[rank] = 0;
        s.pair_pos[lane] = rank;
    }
    int before = 0;   // picks in the words before word i
    for (int i = 0; i < words; i++) {
        const unsigned m = mask[i];
        const int e = i * 32 + lane, below = before + __popc(m & ((1u << lane) - 1u));
        if (e < E) {
            s.counts[e] = (int)((m >> lane) & 1u);
            s.offsets[e] = below;
            s.tile_offsets[e] = below;
        }
        before += __popc(m);
    }
    if (lane == 0) {
        s.offsets[E] = k;
        s.tile_offsets[E] = k;
        *s.n_active = k;
    }
}

// Decode-sized passes (n <= 32 tokens, E <= 512, n * k <= 512): routing and the sort by one block
// of SMALL_SORT_THREADS threads. Warp w routes tokens w and w + 16, its ids also kept in shared
// memory for the counts and the scatter; the counts go to shared memory; the block scans them
// (scan_counts_block); a thread per pair scatters up to 64 pairs, warp 0 more (scatter_in_order).
// A pass of one token is routed and sorted by warp 0 alone (sort_one_token_warp). logits may be in
// shared memory.
template <int PER_LANE>
__device__ __forceinline__ void route_sort_small_block(const mt_expert_sort &s, int32_t *ids, float *weights,
                                                       const float *logits, int ld, int n, int E, int k, int renorm) {
    __shared__ int32_t count[SMALL_SORT_THREADS], cursor[SMALL_SORT_THREADS], ids_local[SMALL_SORT_THREADS];
    const int tid = threadIdx.x, warp = tid >> 5;
    if (n == 1) {
        if (warp == 0) {
            const int id = route_token_n<PER_LANE>(0, ids, nullptr, weights, logits, ld, E, k, renorm);
            MT_TIMELINE_MARK(0);   // routed
            sort_one_token_warp(s, reinterpret_cast<unsigned *>(count), id, k, E);
            MT_TIMELINE_MARK(1);   // sorted
        }
        return;
    }
    count[tid] = 0;
    __syncthreads();
    for (int t = warp; t < n; t += SMALL_SORT_THREADS / 32)
        route_token_n<PER_LANE>(t, ids, ids_local, weights, logits, ld, E, k, renorm);
    MT_TIMELINE_MARK(0);   // routed
    __syncthreads();
    for (int i = tid; i < n * k; i += blockDim.x) atomicAdd(&count[ids_local[i]], 1);
    __syncthreads();
    scan_counts_block(s, count, cursor, E);
    MT_TIMELINE_MARK(1);   // counted and scanned
    const int nk = n * k;
    if (nk <= SMALL_SORT_THREADS / 8) {   // a thread per pair: its rank among the earlier pairs of its expert
        if (tid < nk) {
            const int e = ids_local[tid];
            int pos = cursor[e];
            for (int q = 0; q < tid; q++) pos += ids_local[q] == e;
            s.src_rows[pos] = tid / k;
            s.pair_pos[tid] = pos;
        }
    } else if (warp == 0) {
        scatter_in_order(s, ids_local, 0, nk, k, cursor);
    }
}

// Router logits per lane for E experts (the kernels are compiled per value, so each holds the code
// of one: a decode layer's routing launch fetches its code cold, and less code is less time).
inline int per_lane_of(int E) { return E <= 128 ? 4 : E <= 256 ? 8 : 32; }

#endif
