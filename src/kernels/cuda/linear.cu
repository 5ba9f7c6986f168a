// Batch-invariant matrix products over tiled bf16 weights (see cuda_kernels.h).
//
// Both paths compute every output the same way: for each of the mt_k_slices(K) slices, a fresh
// fp32 accumulator takes one m16n8k16 MMA per 16-wide chunk of the slice in increasing order; the
// slice results are added, in slice order, to a total that starts at zero. The small path gives
// each slice to one warp and adds the warps' results in order; the large path walks the slices in
// turn. A row's result is therefore the same bits whichever path and whatever batch computed it.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/linear_common.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/row_norm.cuh"

namespace {

// Small path: a work item is one 16-row weight tile of one group (or of the dense matrix) and all
// of that group's X rows (at most 64), done in passes of ROWS X rows. A block walks its items with a
// grid stride; its warp w streams slice w of every (item, pass) through a ring of STAGES stages in
// shared memory, each stage CHUNKS weight tiles and the pass's X rows of those chunks. A slot is
// refilled as soon as its stage has been used, so STAGES stages are in flight while a warp waits,
// and the loads of the next pass and item while a pass's partial sums are added. Two shapes:
// passes of 16 rows (two 8-row MMA n-tiles) for groups of more than 8 rows, and passes of 8 rows
// (one n-tile) when no group has more (decode at batches up to 8), whose stages carry half the X
// bytes and so take 8 weight chunks (4 KB copies) in the same shared memory. Either shape computes
// each output with the same chain, so the bits do not depend on which one ran.
template <int ROWS_, int CHUNKS_, int STAGES_>
struct SmallShape {
    static constexpr int ROWS = ROWS_;       // X rows per pass
    static constexpr int CHUNKS = CHUNKS_;   // 16-wide chunks per stage (one bulk copy of weights)
    static constexpr int STAGES = STAGES_;   // stages in each warp's ring (all in flight)
    static constexpr int STAGE_ELEMS = CHUNKS * (256 + ROWS * 16);
    static constexpr int PART = ROWS * 16;   // one warp's partial sums of a pass: 16 rows x ROWS
    static constexpr size_t SMEM = (size_t)8 * STAGES * STAGE_ELEMS * sizeof(bf16) + (size_t)2 * 8 * PART * sizeof(float);
};
using Small16 = SmallShape<16, 6, 2>;   // 3 KB weight copies; 2 blocks fit a multiprocessor
using Small8 = SmallShape<8, 8, 2>;     // 4 KB weight copies (b1: 3.47 -> 3.39 ms, docs/PERF.md)
using Small8Narrow = SmallShape<8, 4, 2>; // 2 KB copies, three blocks per multiprocessor
// Dense products of one wave of one block per multiprocessor (o at batches up to 8: 128 items):
// three 3 KB stages a warp, all copied before the wait; 116 KB, so the block fits beside a decode
// attention block (103 KB) and is resident while attention runs (docs/PERF.md).
using Small8Deep = SmallShape<8, 6, 3>;
constexpr int SMALL_MAX_ROWS = 64;   // X rows of one group (or dense call) the small path takes

// ---- the previous layer's MoE combine folded into a product (mt_cuda_linear_small_combined) -------
//
// The product's X row is RMSNorm(h + the combine) * norm_w. The norm launch's block of T =
// rmsnorm_threads(H) threads (16 warps at H = 2048) is played by the product's first COMBINERS
// blocks: real warp m of block b plays virtual warp COMBINERS * m + b, so each combines H /
// COMBINERS of the row (the expert rows are read once, not by every block). They write their parts
// of the combined row to h_out and their virtual warps' sums of squares to sums, then count
// themselves in `ready`; every block waits for the count, then normalises the whole row into its
// shared memory: the same additions in the same order as the combine launch followed by the norm,
// so the same bits. (Clusters sharing the row through shared memory gave the same bits, but a
// launch of 40 clusters took 3-5 us to become resident: docs/PERF.md.)
constexpr int COMBINERS = 8;
constexpr int COMBINE_MAX_K = 8;   // expert slots a token's combine reads (top-k)

// A thread's part of the combine, read before the dependency wait: h at its 4-vector and its
// token's slots and weights (what launches three or more back wrote: launch.cuh).
struct CombineEarly {
    float4 h;
    int32_t slot[COMBINE_MAX_K];
    float w[COMBINE_MAX_K];
};

// The 4-vector index this thread combines, or -1.
__device__ __forceinline__ int combine_vec(const mt_combine_args &cb) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = rmsnorm_threads(cb.H) / 32;
    const int i = (warp * COMBINERS + (int)blockIdx.x) * 32 + lane;
    return blockIdx.x < COMBINERS && warp < nw / COMBINERS && i < cb.H / 4 ? i : -1;
}

__device__ __forceinline__ void combine_before_wait(const mt_combine_args &cb, CombineEarly &ce) {
    const int i = combine_vec(cb);
    ce.h = i >= 0 ? __ldcg(reinterpret_cast<const float4 *>(cb.h) + i) : make_float4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < COMBINE_MAX_K; j++) {
        ce.slot[j] = i >= 0 && j < cb.k ? __ldcg(cb.pair_pos + j) : 0;
        ce.w[j] = i >= 0 && j < cb.k ? __ldcg(cb.w + j) : 0.0f;
    }
}

// After the wait: the combiners' parts of the row to h_out and sums; then, once all are counted,
// the whole row, normed, into x (bf16 [H], shared memory).
__device__ __forceinline__ void combine_after_wait(const mt_combine_args &cb, bf16 *x, const CombineEarly &ce) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, H = cb.H, nw = rmsnorm_threads(H) / 32;
    const int i = combine_vec(cb);
    if (blockIdx.x < COMBINERS) {
        if (i >= 0) {
            float4 e[COMBINE_MAX_K];
#pragma unroll
            for (int j = 0; j < COMBINE_MAX_K; j++)
                e[j] = j < cb.k ? __ldcg(reinterpret_cast<const float4 *>(cb.ye + (size_t)ce.slot[j] * H) + i)
                                : make_float4(0, 0, 0, 0);
            float4 acc = make_float4(0, 0, 0, 0);
#pragma unroll
            for (int j = 0; j < COMBINE_MAX_K; j++)
                if (j < cb.k) combine_fma(acc, ce.w[j], e[j]);
            if (cb.ys) combine_fma(acc, combine_gate(__ldcg(cb.sg)), __ldcg(reinterpret_cast<const float4 *>(cb.ys) + i));
            const float4 hn = combine_sum(ce.h, acc);
            reinterpret_cast<float4 *>(cb.h_out)[i] = hn;
            const float ss = warp_sum(sumsq4(hn));   // the virtual warp's sum, as block_sum's first step
            if (lane == 0) cb.sums[warp * COMBINERS + blockIdx.x] = ss;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            __threadfence();
            atomicAdd(cb.ready, 1);
        }
    }
    if (threadIdx.x == 0) {
        int n;
        do asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(n) : "l"(cb.ready) : "memory");
        while (n < COMBINERS);
    }
    __syncthreads();
    const float t = warp_sum(lane < nw ? __ldcg(cb.sums + lane) : 0.0f);   // block_sum's second step, in every warp
    const float inv = 1.0f / sqrtf(t / (float)H + cb.eps);   // rms_inv, spelled out (its SASS as measured)
    const float4 *r4 = reinterpret_cast<const float4 *>(cb.h_out), *g4 = reinterpret_cast<const float4 *>(cb.norm_w);
    __nv_bfloat162 *x2 = reinterpret_cast<__nv_bfloat162 *>(x);
    for (int q = threadIdx.x; q < H / 4; q += blockDim.x) put_normed4(x2, q, __ldcg(r4 + q), inv, g4[q]);
    __syncthreads();
}

// ---- small path ----------------------------------------------------------------------------------

// Position in a warp's stream: item (a grid-stride index), pass within the item, stage within the
// pass; rt/g/row0/nrows describe the item. The producer also keeps the weight tile's address and
// this lane's X row of the pass (NULL past the item's rows), set at each new pass.
struct SmallCursor {
    int item, pass, st;
    int rt, g, row0, nrows;
    const bf16 *W, *xsrc;
};

// The item's rows (item_rows, linear_common.cuh): the weight copies start one memory round trip
// after the wait.
__device__ __forceinline__ void small_item(SmallCursor &c, const mt_linear_args &a, int R) {
    c.pass = 0;
    c.st = 0;
    const ItemRows it = item_rows(a, c.item, R, SMALL_MAX_ROWS, SMALL_MAX_ROWS, false);
    c.rt = it.rt;
    c.g = it.g;
    c.row0 = it.row0;
    c.nrows = it.nrows;
}

template <int ROWS>
__device__ __forceinline__ void small_stream_ptrs(SmallCursor &c, const mt_linear_args &a, int C, int xrow, int xhalf) {
    c.W = a.W.w + (size_t)c.g * a.group_stride + (size_t)c.rt * C * 256;
    int r = c.pass * ROWS + xrow;
    c.xsrc = xrow < ROWS && r < c.nrows ? a.X + (size_t)src_row(a, c.row0 + r) * a.ldx + xhalf : nullptr;
}

template <int ROWS>
__device__ __forceinline__ void small_advance(SmallCursor &c, const mt_linear_args &a, int R, int n_items, int n_st) {
    if (++c.st < n_st) return;
    c.st = 0;
    if (++c.pass * ROWS < c.nrows) return;
    c.item += gridDim.x;
    small_item(c, a, R);
}

// COMBINE: the X row is the previous layer's combine, normed (above); one row, dense.
template <int EPI, class SP, bool COMBINE = false>
__global__ void __launch_bounds__(256) linear_small_kernel(const mt_linear_args a) {
    MT_TIMELINE_KERNEL(COMBINE ? MT_TL_LINEAR_COMBINED : MT_TL_LINEAR_SMALL);
    constexpr int SP_ROWS = SP::ROWS, SP_CHUNKS = SP::CHUNKS, SP_STAGES = SP::STAGES;
    constexpr int SP_STAGE_ELEMS = SP::STAGE_ELEMS, PART = SP::PART;
    extern __shared__ uint4 smem_raw[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int a_lane = mt_a_frag_lane(lane);
    const int tq = lane >> 2, t4 = lane & 3;
    const int C = a.W.K / 16, S = mt_k_slices(a.W.K), R = a.W.rows_pad / 16;
    const int c0 = warp * C / S, c1 = (warp + 1) * C / S;
    const int n_st = (c1 - c0 + SP_CHUNKS - 1) / SP_CHUNKS;
    const bool streams = warp < S;

    bf16 *ring = reinterpret_cast<bf16 *>(smem_raw) + (size_t)warp * SP_STAGES * SP_STAGE_ELEMS;
    float *part = reinterpret_cast<float *>(reinterpret_cast<bf16 *>(smem_raw) + (size_t)8 * SP_STAGES * SP_STAGE_ELEMS);

    // A stage's weight chunks are contiguous: one bulk copy by lane 0, completing on the slot's
    // barrier; the X rows are cp.async copies of every lane (one commit group per stage).
    __shared__ __align__(8) uint64_t wbar_all[8 * SP_STAGES];
    uint64_t *wbar = wbar_all + warp * SP_STAGES;
    if (lane == 0) {
#pragma unroll
        for (int s = 0; s < SP_STAGES; s++) mt_mbar_init(&wbar[s], 1);
        mt_mbar_init_fence();
    }
    __syncwarp();
    const uint64_t wpolicy = mt_weight_policy(a.weights_once);
    // Lane 0: the weights of chunks [cs, min(cs + CHUNKS, c1)) of the row tile at W into ring slot
    // `slot`, one bulk copy completing on that slot's barrier.
    auto copy_weights = [&](int slot, const bf16 *W, int cs) {
        const unsigned bytes = (unsigned)min(SP_CHUNKS, c1 - cs) * 512u;
        mt_mbar_expect(&wbar[slot], bytes);
        mt_bulk_copy(ring + slot * SP_STAGE_ELEMS, W + (size_t)cs * 256, bytes, &wbar[slot], wpolicy);
    };
    // Dense products know their stream before the wait (nothing in it is read from memory): the
    // weights of its first STAGES stages are copied into the ring then (no launch writes weights),
    // their X rows after. The rest of the item is not fetched into L2 ahead: that traffic delayed
    // the wait's return (batch 1 1.5% faster without, docs/PERF.md). Grouped products whose sort is
    // two or more launches back (sort_early: the down product) copy their first item's first
    // stages, the item's expert read from the sort (b1 -0.5%, docs/PERF.md); only lane 0 issues
    // weights, so only its count matters there.
    const int n_items_dense = R * ((a.n + SMALL_MAX_ROWS - 1) / SMALL_MAX_ROWS);
    const int xrow = lane >> 1, xhalf = (lane & 1) * 8;
    SmallCursor prod;
    prod.item = blockIdx.x;
    int w_ahead = 0;   // issue() calls ahead whose weights are already on their way
    if (a.group_offsets && a.sort_early && streams && lane == 0) {
        const int y = (int)blockIdx.x / R;
        if (y < a.n_groups && y < __ldcg(a.n_active)) {
            const bf16 *w = a.W.w + (size_t)__ldcg(a.active + y) * a.group_stride + (size_t)(blockIdx.x - y * R) * C * 256;
            mt_prefetch_l2(w + (size_t)c0 * 256, (unsigned)(c1 - c0) * 512u);
            for (int st = 0; st < SP_STAGES && st < n_st; st++, w_ahead++) copy_weights(st, w, c0 + st * SP_CHUNKS);
        }
    }
    if (!a.group_offsets && streams) {
        small_item(prod, a, R);
        if (prod.item < n_items_dense) small_stream_ptrs<SP_ROWS>(prod, a, C, xrow, xhalf);
        SmallCursor w = prod;
        for (int s = 0; s < SP_STAGES && w.item < n_items_dense; s++) {
            if (lane == 0) copy_weights(s, w.W, c0 + w.st * SP_CHUNKS);
            w_ahead++;
            small_advance<SP_ROWS>(w, a, R, n_items_dense, n_st);
            if (w.st == 0 && w.item < n_items_dense) small_stream_ptrs<SP_ROWS>(w, a, C, xrow, xhalf);
        }
    }
    // A later launch's weights into L2 to stay (the expert gate/up product of a decode pass:
    // its wait is for the router, a latency-bound launch that leaves the memory idle)
    if (a.l2_keep && threadIdx.x == 32) mt_prefetch_l2_keep_share(a.l2_keep, a.l2_keep_bytes);
    bf16 *xrow0 = reinterpret_cast<bf16 *>(smem_raw) + SP::SMEM / sizeof(bf16);   // COMBINE: the normed row
    CombineEarly ce;
    if constexpr (COMBINE) combine_before_wait(a.combine, ce);
    mt_grid_dependency_wait();
    if constexpr (COMBINE) combine_after_wait(a.combine, xrow0, ce);
    if (a.zero_after_wait && blockIdx.x == 0 && threadIdx.x == 0) *a.zero_after_wait = 0;
    const int n_items = a.group_offsets ? R * *a.n_active : n_items_dense;

    // lane's share of a stage's X rows: row lane / 2 of the pass (lanes of rows past ROWS idle),
    // half lane % 2 of each chunk
    if (a.group_offsets) {
        small_item(prod, a, R);
        if (prod.item < n_items) small_stream_ptrs<SP_ROWS>(prod, a, C, xrow, xhalf);
    }
    // The rest of the first item on its way at once (o at decode batches: its rings filled while
    // attention ran, so after the wait the whole slice is wanted as fast as it can come)
    if (a.l2_rest && !a.group_offsets && streams && lane == 0 && prod.item < n_items && n_st > SP_STAGES)
        mt_prefetch_l2(prod.W + (size_t)(c0 + SP_STAGES * SP_CHUNKS) * 256, (unsigned)(c1 - c0 - SP_STAGES * SP_CHUNKS) * 512u);
    // X rows past the item's rows are not copied: their stale values only reach output columns that
    // are never stored (an MMA's column j of B touches column j of the result alone)
    auto issue = [&](int slot) {   // one commit group per stage, empty past the end of the stream
        if (prod.item < n_items) {
            bf16 *stage = ring + slot * SP_STAGE_ELEMS;
            const int cs = c0 + prod.st * SP_CHUNKS;
            if (lane == 0 && w_ahead == 0) copy_weights(slot, prod.W, cs);
            if (w_ahead > 0) w_ahead--;
#pragma unroll
            for (int u = 0; u < SP_CHUNKS; u++) {
                int c = cs + u;
                if (!COMBINE && c < c1 && prod.xsrc)
                    mt_cp_async16(stage + SP_CHUNKS * 256 + u * SP_ROWS * 16 + xrow * 16 + xhalf, prod.xsrc + c * 16, 16);
            }
            small_advance<SP_ROWS>(prod, a, R, n_items, n_st);
            if (prod.st == 0 && prod.item < n_items) small_stream_ptrs<SP_ROWS>(prod, a, C, xrow, xhalf);   // a new pass
        }
        mt_cp_async_commit();
    };
    // The ring is filled to its depth: a slot is refilled once its stage has been used, so STAGES
    // stages are in flight while a warp waits.
    if (streams) {
#pragma unroll
        for (int s = 0; s < SP_STAGES; s++) issue(s);
    }

    int slot = 0, buf = 0, phase = 0;   // phase: of the slots' barriers, flips as the ring wraps
    for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
        SmallCursor cur;
        cur.item = item;
        small_item(cur, a, R);
        for (int pass = 0; pass * SP_ROWS < cur.nrows; pass++) {
            const int prow = min(SP_ROWS, cur.nrows - pass * SP_ROWS), nt = (prow + 7) >> 3;
            float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
            if (streams) {
                for (int st = 0; st < n_st; st++) {
                    mt_cp_async_wait<SP_STAGES - 1>();
                    mt_mbar_wait(&wbar[slot], phase);
                    __syncwarp();   // this stage has landed for every lane (X rows come from other lanes)
                    const bf16 *stage = ring + slot * SP_STAGE_ELEMS;
#pragma unroll
                    for (int u = 0; u < SP_CHUNKS; u++) {
                        if (c0 + st * SP_CHUNKS + u >= c1) break;
                        uint32_t A[4];
                        mt_ld_a_frag(A, stage + u * 256 + a_lane);
                        // B fragment: X row tq (COMBINE: row 0 for every column; columns past
                        // the row are never stored)
                        const bf16 *xs = COMBINE ? xrow0 + (c0 + st * SP_CHUNKS + u) * 16 + 2 * t4
                                                 : stage + SP_CHUNKS * 256 + u * SP_ROWS * 16 + tq * 16 + 2 * t4;
                        uint32_t b0[2] = {*reinterpret_cast<const uint32_t *>(xs), *reinterpret_cast<const uint32_t *>(xs + 8)};
                        mt_mma(acc[0], A, b0);
                        if (SP_ROWS > 8 && nt > 1) {
                            uint32_t b1[2] = {*reinterpret_cast<const uint32_t *>(xs + 128),
                                              *reinterpret_cast<const uint32_t *>(xs + 136)};
                            mt_mma(acc[1], A, b1);
                        }
                    }
                    __syncwarp();   // every lane is done with the slot: refill it
                    issue(slot);
                    if (slot == SP_STAGES - 1) {
                        slot = 0;
                        phase ^= 1;
                    } else {
                        slot++;
                    }
                }
                float *pw = part + (buf * 8 + warp) * PART;
#pragma unroll
                for (int j = 0; j < SP_ROWS / 8; j++) {
                    pw[j * 128 + tq * 8 + 2 * t4] = acc[j][0];
                    pw[j * 128 + tq * 8 + 2 * t4 + 1] = acc[j][1];
                    pw[j * 128 + (tq + 8) * 8 + 2 * t4] = acc[j][2];
                    pw[j * 128 + (tq + 8) * 8 + 2 * t4 + 1] = acc[j][3];
                }
            }
            __syncthreads();   // the partial sums of this pass are in; the other buffer is free again
            const float *pb = part + buf * 8 * PART;
            const int p0 = cur.row0 + pass * SP_ROWS;
            if (EPI == MT_EPI_SWIGLU) {
                if (threadIdx.x < nt * 64) {
                    int e = threadIdx.x, j = e >> 6, r = (e & 63) >> 3, n = e & 7;
                    int i = j * 8 + n, col = cur.rt * 8 + r;
                    if (i < prow && col < a.W.rows / 2) {
                        float gate = 0.0f, up = 0.0f;
                        for (int w = 0; w < S; w++) {
                            gate += pb[w * PART + j * 128 + r * 8 + n];
                            up += pb[w * PART + j * 128 + (r + 8) * 8 + n];
                        }
                        store_swiglu(a, p0 + i, col, gate, up);
                    }
                }
            } else if (threadIdx.x < nt * 128) {
                int e = threadIdx.x, j = e >> 7, r = (e & 127) >> 3, n = e & 7;
                int i = j * 8 + n, col = cur.rt * 16 + r;
                if (i < prow && col < a.W.rows) {
                    float tot = 0.0f;
                    for (int w = 0; w < S; w++) tot += pb[w * PART + j * 128 + r * 8 + n];
                    store_out<EPI>(a, p0 + i, col, tot);
                }
            }
            buf ^= 1;
        }
    }
    mt_cp_async_wait<0>();
}

// ---- large path ----------------------------------------------------------------------------------

constexpr int LG_RT = 8;                  // row tiles per block (128 rows)
constexpr int LG_KC = 4;                  // 16-wide chunks per stage (BK = 64)
constexpr int LG_STAGES = 3;
constexpr int LG_BSTRIDE = LG_KC * 16 + 8;  // bf16 per staged X row (padding against bank conflicts)
constexpr int LG_A_ELEMS = LG_RT * LG_KC * 256;

// Block tile: 128 weight rows x BN X rows, 8 warps. MT (m-tiles per warp) picks the shape:
// MT = 2: BN = 64, warps 4 x 2, each 32 rows x 32 X rows; MT = 4: BN = 128, warps 2 x 4, each
// 64 rows x 32 X rows (twice the MMAs per shared-memory read, for prefill-sized products).
template <int MT>
struct LargeShape {
    static constexpr int BN = MT == 2 ? 64 : 128;
    static constexpr int WARPS_M = LG_RT / MT;   // 4 or 2
    static constexpr int B_ELEMS = BN * LG_BSTRIDE;
    static constexpr size_t SMEM = (size_t)LG_STAGES * (LG_A_ELEMS + B_ELEMS) * sizeof(bf16);
};

// SPLIT: the block computes slice blockIdx.z alone and writes its sums to a.partials (dense only);
// linear_split_reduce_kernel adds the slices in order and applies the epilogue.
template <int EPI, int MT, bool SPLIT, bool BULK>
__global__ void __launch_bounds__(256) linear_large_kernel(const mt_linear_args a) {
    MT_TIMELINE_KERNEL(MT_TL_LINEAR_LARGE);
    mt_grid_dependency_wait();
    const uint64_t wpolicy = mt_weight_policy(a.weights_once);
    using Shape = LargeShape<MT>;
    constexpr int BN = Shape::BN;
    extern __shared__ uint4 smem_raw[];
    bf16 *As = reinterpret_cast<bf16 *>(smem_raw);
    bf16 *Bs = As + LG_STAGES * LG_A_ELEMS;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int a_lane = mt_a_frag_lane(lane);
    const int tq = lane >> 2, t4 = lane & 3;
    // warp owns row tiles wm*MT .. wm*MT+MT-1 and X rows 32wn .. 32wn+31
    const int wm = warp % Shape::WARPS_M, wn = warp / Shape::WARPS_M;

    Work wk;
    if (!large_tile_work(a, BN, wk)) return;
    const int C = a.W.K / 16, S = mt_k_slices(a.W.K);
    const int rt0 = blockIdx.x * LG_RT, n_rt = min(LG_RT, a.W.rows_pad / 16 - rt0);
    const bf16 *W = a.W.w + (size_t)wk.g * a.group_stride + (size_t)rt0 * C * 256;
    // chunks [cb, ce) of K: all of them, or one slice
    const int cb = SPLIT ? (int)blockIdx.z * C / S : 0, ce = SPLIT ? ((int)blockIdx.z + 1) * C / S : C;
    const int n_kt = (ce - cb + LG_KC - 1) / LG_KC;

    // The staged X rows this thread copies: vectors tid + 256h of 8 per row.
    constexpr int XV = BN * 8 / 256;
    const bf16 *xsrc[XV];
#pragma unroll
    for (int h = 0; h < XV; h++) {
        int r = (tid + h * 256) >> 3;
        xsrc[h] = r < wk.nrows ? a.X + (size_t)src_row(a, wk.row0 + r) * a.ldx + ((tid + h * 256) & 7) * 8 : nullptr;
    }
    // BULK (weights read once: decode batches, from DRAM): each row tile's chunks of a stage are
    // contiguous (2 KB), one bulk copy each by thread 0, completing on the stage's barrier.
    // Otherwise (weights read again by other blocks: prefill, from L2) cp.async by every thread,
    // which measured faster there. X rows: cp.async by every thread.
    __shared__ __align__(8) uint64_t wbar[LG_STAGES];
    if constexpr (BULK) {
        if (tid == 0) {
#pragma unroll
            for (int s = 0; s < LG_STAGES; s++) mt_mbar_init(&wbar[s], 1);
            mt_mbar_init_fence();
        }
        __syncthreads();
    }
    auto load_stage = [&](int stage, int kt) {
        bf16 *as = As + stage * LG_A_ELEMS;
        bf16 *bs = Bs + stage * Shape::B_ELEMS;
        if constexpr (BULK) {
            if (tid == 0) {
                int c0 = cb + kt * LG_KC;
                unsigned bytes = (unsigned)min(LG_KC, ce - c0) * 512u;
                mt_mbar_expect(&wbar[stage], bytes * n_rt);
                for (int rl = 0; rl < n_rt; rl++)
                    mt_bulk_copy(as + rl * LG_KC * 256, W + ((size_t)rl * C + c0) * 256, bytes, &wbar[stage], wpolicy);
            }
        } else {
#pragma unroll
            for (int h = 0; h < 4; h++) {
                int v = tid + h * 256;
                int rl = v >> 7, kc = (v >> 5) & 3, lv = v & 31;
                int c = cb + kt * LG_KC + kc;
                bool ok = rl < n_rt && c < ce;
                const bf16 *src = ok ? W + ((size_t)rl * C + c) * 256 + lv * 8 : a.W.w;
                mt_cp_async16_stream(as + (rl * LG_KC + kc) * 256 + lv * 8, src, ok ? 16 : 0, wpolicy);
            }
        }
#pragma unroll
        for (int h = 0; h < XV; h++) {
            int v = tid + h * 256;
            int r = v >> 3, q = v & 7;
            bool ok = xsrc[h] && cb + kt * LG_KC + (q >> 1) < ce;
            const bf16 *src = ok ? xsrc[h] + (cb + kt * LG_KC) * 16 : a.X;
            mt_cp_async16(bs + r * LG_BSTRIDE + q * 8, src, ok ? 16 : 0);
        }
    };

    float acc[MT][4][4], tot[MT][4][4];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[m][j][q] = tot[m][j][q] = 0.0f;
    int slice = 0, slice_end = C / S;
    // ldmatrix.x4 row of this lane: X row (lane % 8) + 8 * (lane / 16) of an n-tile pair, k half (lane / 8) % 2
    const int ld_row = (lane & 7) + ((lane >> 4) << 3), ld_k = ((lane >> 3) & 1) * 8;

#pragma unroll
    for (int s = 0; s < LG_STAGES - 1; s++) {
        if (s < n_kt) load_stage(s, s);
        mt_cp_async_commit();
    }
    for (int kt = 0; kt < n_kt; kt++) {
        mt_cp_async_wait<LG_STAGES - 2>();
        if constexpr (BULK) mt_mbar_wait(&wbar[kt % LG_STAGES], (kt / LG_STAGES) & 1);
        __syncthreads();
        int nk = kt + LG_STAGES - 1;
        if (nk < n_kt) load_stage(nk % LG_STAGES, nk);
        mt_cp_async_commit();
        const bf16 *as = As + (kt % LG_STAGES) * LG_A_ELEMS;
        const bf16 *bs = Bs + (kt % LG_STAGES) * Shape::B_ELEMS;
#pragma unroll
        for (int kc = 0; kc < LG_KC; kc++) {
            int c = cb + kt * LG_KC + kc;
            if (c >= ce) break;
            uint32_t af[MT][4];
#pragma unroll
            for (int m = 0; m < MT; m++) mt_ld_a_frag(af[m], as + ((wm * MT + m) * LG_KC + kc) * 256 + a_lane);
#pragma unroll
            for (int jp = 0; jp < 2; jp++) {   // n-tiles 2jp, 2jp+1: one ldmatrix.x4 gives both B fragments
                const bf16 *p = bs + (wn * 32 + jp * 16 + ld_row) * LG_BSTRIDE + kc * 16 + ld_k;
                uint32_t r0, r1, r2, r3;
                asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                             : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                             : "r"((uint32_t)__cvta_generic_to_shared(p)));
                uint32_t b0[2] = {r0, r1}, b1[2] = {r2, r3};
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    mt_mma(acc[m][2 * jp], af[m], b0);
                    mt_mma(acc[m][2 * jp + 1], af[m], b1);
                }
            }
            if (!SPLIT && c + 1 == slice_end) {
#pragma unroll
                for (int m = 0; m < MT; m++)
#pragma unroll
                    for (int j = 0; j < 4; j++)
#pragma unroll
                        for (int q = 0; q < 4; q++) {
                            tot[m][j][q] += acc[m][j][q];
                            acc[m][j][q] = 0.0f;
                        }
                slice++;
                slice_end = (slice + 1) * C / S;
            }
        }
    }
    mt_cp_async_wait<0>();

    if constexpr (SPLIT) {   // this slice's sums, [slice][position][weight row]
        float *part = a.partials + (size_t)blockIdx.z * a.n * a.W.rows_pad;
#pragma unroll
        for (int m = 0; m < MT; m++) {
            int row = (rt0 + wm * MT + m) * 16 + tq;
            if (rt0 + wm * MT + m >= a.W.rows_pad / 16) continue;
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int i = wn * 32 + j * 8 + 2 * t4 + h;
                    if (i >= wk.nrows) continue;
                    float *dst = part + (size_t)(wk.row0 + i) * a.W.rows_pad + row;
                    dst[0] = acc[m][j][h];
                    dst[8] = acc[m][j][2 + h];
                }
        }
    } else {
#pragma unroll
        for (int m = 0; m < MT; m++) {
            int rt = rt0 + wm * MT + m;
#pragma unroll
            for (int j = 0; j < 4; j++) {
#pragma unroll
                for (int h = 0; h < 2; h++) {   // the two X rows 2*t4 + h of this n-tile
                    int i = wn * 32 + j * 8 + 2 * t4 + h;
                    if (i >= wk.nrows) continue;
                    int p = wk.row0 + i;
                    if (EPI == MT_EPI_SWIGLU) {
                        int col = rt * 8 + tq;
                        if (col < a.W.rows / 2) store_swiglu(a, p, col, tot[m][j][h], tot[m][j][2 + h]);
                    } else {
                        int col = rt * 16 + tq;
                        if (col < a.W.rows) store_out<EPI>(a, p, col, tot[m][j][h]);
                        if (col + 8 < a.W.rows) store_out<EPI>(a, p, col + 8, tot[m][j][2 + h]);
                    }
                }
            }
        }
    }
}

// Blocks of the small kernel of shape SP the whole device holds at once (set up once per shape).
template <int EPI, class SP>
int small_resident() {
    static int resident = 0;
    if (!resident) {
        cudaFuncSetAttribute(linear_small_kernel<EPI, SP>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SP::SMEM);
        int per_sm = 0;
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, linear_small_kernel<EPI, SP>, 256, SP::SMEM);
        resident = per_sm > 0 ? per_sm * mt_cuda_sm_count() : 1;
    }
    return resident;
}

template <int EPI, class SP>
void launch_small_shape(const mt_linear_args &a, int items, cudaStream_t st) {
    int resident = small_resident<EPI, SP>();
    mt_launch(linear_small_kernel<EPI, SP>, dim3(items < resident ? items : resident), dim3(256), SP::SMEM, st, a);
}

template <int EPI>
void launch_small(const mt_linear_args &a, cudaStream_t st) {
    int groups = a.group_offsets ? a.max_work : (a.n + SMALL_MAX_ROWS - 1) / SMALL_MAX_ROWS;
    int items = groups * (a.W.rows_pad / 16);
    if (items <= 0) return;
    if (a.rows_max > 0 && a.rows_max <= Small8::ROWS) {
        // Narrow stages fit three blocks per multiprocessor instead of two: they take the product
        // when that means fewer items a block, so fewer waves. Dense products only when they then
        // fit one wave (q/k/v at batch 1: 320 items, 264 Small8 blocks; not lm_head's 9,496);
        // expert products whenever (gate/up at batch 1: 768 items, 3 -> 2 a block). docs/PERF.md:
        // b1 3.25 -> 3.21 ms (q/k/v), then 3.156 -> 3.126 ms and b8 8.66 -> 8.53 ms (experts).
        // Dense products that fit one wave of the deep shape take it (o: b1 -0.9%).
        const int r8 = small_resident<EPI, Small8>(), rn = small_resident<EPI, Small8Narrow>();
        const bool fewer_waves = (items + rn - 1) / rn < (items + r8 - 1) / r8;
        if (!a.group_offsets && items <= small_resident<EPI, Small8Deep>()) launch_small_shape<EPI, Small8Deep>(a, items, st);
        else if (fewer_waves && (a.group_offsets || items <= rn)) launch_small_shape<EPI, Small8Narrow>(a, items, st);
        else launch_small_shape<EPI, Small8>(a, items, st);
    } else {
        launch_small_shape<EPI, Small16>(a, items, st);
    }
}

// The folded combine's product: X rows of 8-row passes in narrow stages (the shape q/k/v takes at
// batch 1); its shared memory and the normed row (H bf16).
using CombineShape = Small8Narrow;
size_t combined_smem(int H) { return CombineShape::SMEM + (size_t)H * sizeof(bf16); }

// Blocks of the combined product the device holds at once.
int combined_resident(int H) {
    static int resident = -1, for_h = 0;
    if (resident < 0 || for_h != H) {
        auto kernel = linear_small_kernel<MT_EPI_F32, CombineShape, true>;
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)combined_smem(H));
        int per_sm = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 256, combined_smem(H)) != cudaSuccess) {
            cudaGetLastError();
            per_sm = 0;
        }
        resident = per_sm * mt_cuda_sm_count();
        for_h = H;
    }
    return resident;
}

// out = epilogue(sum over slices s in order of partials[s]), one thread per output value.
template <int EPI>
__global__ void linear_split_reduce_kernel(const mt_linear_args a) {
    MT_TIMELINE_KERNEL(MT_TL_SPLIT_REDUCE);
    mt_grid_dependency_wait();
    const int S = mt_k_slices(a.W.K);
    const int cols = EPI == MT_EPI_SWIGLU ? a.W.rows / 2 : a.W.rows;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)a.n * cols) return;
    const int p = (int)(i / cols), col = (int)(i % cols);
    const size_t plane = (size_t)a.n * a.W.rows_pad;
    const float *part = a.partials + (size_t)p * a.W.rows_pad;
    if (EPI == MT_EPI_SWIGLU) {
        int row = (col >> 3) * 16 + (col & 7);   // gate row; its up row is 8 further
        float gate = 0.0f, up = 0.0f;
        for (int s = 0; s < S; s++) {
            gate += part[s * plane + row];
            up += part[s * plane + row + 8];
        }
        store_swiglu(a, p, col, gate, up);
    } else {
        float tot = 0.0f;
        for (int s = 0; s < S; s++) tot += part[s * plane + col];
        store_out<EPI>(a, p, col, tot);
    }
}

template <int EPI, int MT, bool SPLIT, bool BULK>
void launch_large_shape(const mt_linear_args &a, cudaStream_t st) {
    using Shape = LargeShape<MT>;
    static bool configured = false;
    if (!configured) {
        cudaFuncSetAttribute(linear_large_kernel<EPI, MT, SPLIT, BULK>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)Shape::SMEM);
        configured = true;
    }
    int work = a.group_offsets ? a.max_work : (a.n + Shape::BN - 1) / Shape::BN;
    if (work <= 0) return;
    dim3 grid((a.W.rows_pad / 16 + LG_RT - 1) / LG_RT, work, SPLIT ? mt_k_slices(a.W.K) : 1);
    mt_launch(linear_large_kernel<EPI, MT, SPLIT, BULK>, grid, 256, Shape::SMEM, st, a);
}

template <int EPI>
void launch_split(const mt_linear_args &a, cudaStream_t st) {
    if (a.n <= 0) return;
    launch_large_shape<EPI, 2, true, true>(a, st);   // decode batches: weights read once
    int cols = EPI == MT_EPI_SWIGLU ? a.W.rows / 2 : a.W.rows;
    size_t outs = (size_t)a.n * cols;
    mt_launch(linear_split_reduce_kernel<EPI>, dim3((unsigned)((outs + 255) / 256)), dim3(256), 0, st, a);
}

template <int EPI>
void launch_large(const mt_linear_args &a, cudaStream_t st) {
    if (a.tile_rows == 128 && a.weights_once) launch_large_shape<EPI, 4, false, true>(a, st);
    else if (a.tile_rows == 128) launch_large_shape<EPI, 4, false, false>(a, st);
    else if (a.weights_once) launch_large_shape<EPI, 2, false, true>(a, st);
    else launch_large_shape<EPI, 2, false, false>(a, st);
}

struct SmallPath {
    template <int EPI> static void run(const mt_linear_args &a, cudaStream_t st) { launch_small<EPI>(a, st); }
};
struct LargePath {
    template <int EPI> static void run(const mt_linear_args &a, cudaStream_t st) { launch_large<EPI>(a, st); }
};
struct SplitPath {
    template <int EPI> static void run(const mt_linear_args &a, cudaStream_t st) { launch_split<EPI>(a, st); }
};

}  // namespace

void mt_cuda_linear_small(const mt_linear_args *a, cudaStream_t st) {
    if (mt_cuda_linear_direct(a, st)) return;   // same bits (linear_direct.cu)
    by_epilogue<SmallPath>(*a, st);
}

void mt_cuda_linear_large(const mt_linear_args *a, cudaStream_t st) {
    // the Hopper kernel when usable and it takes this product (linear_wgmma.cu), same bits
    if (mt_cuda_wgmma_usable() && mt_cuda_linear_wgmma(a, st)) return;
    by_epilogue<LargePath>(*a, st);
}

void mt_cuda_linear_split(const mt_linear_args *a, cudaStream_t st) { by_epilogue<SplitPath>(*a, st); }

int mt_cuda_linear_combined_takes(int n, int H, int k, int rows_pad) {
    const int threads = rmsnorm_threads(H);
    if (n != 1 || k < 1 || k > COMBINE_MAX_K || H % 16 != 0 || H < 256 || threads % (32 * COMBINERS) != 0 || threads / 32 / COMBINERS > 8 ||
        rmsnorm_vecs(H) != 1)
        return 0;
    // one wave: the combiners (the first blocks) run whatever the others wait for
    return rows_pad / 16 >= COMBINERS && rows_pad / 16 <= combined_resident(H);
}

void mt_cuda_linear_small_combined(const mt_linear_args *a, cudaStream_t st) {
    combined_resident(a->combine.H);   // sets the kernel's shared memory limit
    mt_launch(linear_small_kernel<MT_EPI_F32, CombineShape, true>, dim3(a->W.rows_pad / 16), dim3(256),
              combined_smem(a->combine.H), st, *a);
}

const char *mt_cuda_linear_layout_check(void) {
    // the small path's bulk copies land at the dynamic shared memory's base (mma.cuh)
    struct Kernel {
        const void *f;
        const char *name;
    } kernels[] = {
        {(const void *)linear_small_kernel<MT_EPI_F32, Small8>, "linear_small_kernel<F32, Small8>"},
        {(const void *)linear_small_kernel<MT_EPI_F32, Small8Narrow>, "linear_small_kernel<F32, Small8Narrow>"},
        {(const void *)linear_small_kernel<MT_EPI_F32, Small16>, "linear_small_kernel<F32, Small16>"},
        {(const void *)linear_small_kernel<MT_EPI_F32_ADD, Small8Deep>, "linear_small_kernel<F32 add, Small8Deep>"},
        {(const void *)linear_small_kernel<MT_EPI_SWIGLU, Small8Narrow>, "linear_small_kernel<SwiGLU, Small8Narrow>"},
        {(const void *)linear_small_kernel<MT_EPI_F32, CombineShape, true>, "linear_small_kernel<F32, combined>"},
        {(const void *)linear_large_kernel<MT_EPI_F32, 2, true, true>, "linear_large_kernel<F32, 2, split, bulk>"},
    };
    for (const Kernel &k : kernels) {
        cudaFuncAttributes attr;
        if (cudaFuncGetAttributes(&attr, k.f) != cudaSuccess) return k.name;
        if (attr.sharedSizeBytes % 32 != 0) return k.name;
    }
    return nullptr;
}

int mt_cuda_linear_split_blocks(int rows_pad, int n) {
    return (rows_pad / 16 + LG_RT - 1) / LG_RT * ((n + LargeShape<2>::BN - 1) / LargeShape<2>::BN);
}
