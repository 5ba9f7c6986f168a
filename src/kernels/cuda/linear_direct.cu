// Direct path: products whose groups (or dense call) have at most 8 X rows, as decode batches up
// to 8 give (mt_cuda_linear_direct in cuda_kernels.h).
//
// The arithmetic is the small path's (linear.cu): each output is one m16n8k16 MMA chain per K slice
// over its 16-wide chunks in order, the slices' sums added in slice order to a total from zero, so
// the bits are the same. What differs is how the weights travel. The small path streams each warp's
// slice through a ring of shared memory and ends every pass with a block barrier. Here a warp loads
// its A fragments from global memory straight into registers (four coalesced 4-byte loads a lane
// per 16 x 16 tile, which the tiled layout gives in fragment order), BATCH chunks at a time, and
// never waits for another warp: it leaves its slice's sums of an item in shared memory and counts
// itself in; the warp that completes an item's count adds the slices and writes the outputs. A
// block owns a contiguous run of items (at most DR_MAX_ITEMS); warp w streams slice w of each.
//
// Registers hold far fewer bytes in flight than the small path's rings, so this is slower for most
// products; the engine uses it where it measured faster, the expert down product of decode batches
// up to 8 (docs/PERF.md, twenty-second session).
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/linear_common.cuh"
#include "kernels/cuda/mma.cuh"

#include <stdlib.h>

namespace {

constexpr int DR_MAX_ROWS = 8;    // X rows of a group: one MMA n-tile
constexpr int DR_MAX_ITEMS = 8;   // items a block keeps slice sums of (32 KB of shared memory)
constexpr int DR_GROUP_ROWS = 64; // rows of a dense item, as the small path counts them

// 4 bytes of weights read once: not kept in L1, 256-byte L2 fetches, the product's L2 policy.
__device__ __forceinline__ uint32_t ld_weight32(const bf16 *p, uint64_t policy) {
    uint32_t v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.L2::256B.b32 %0, [%1], %2;\n"
                 : "=r"(v)
                 : "l"(p), "l"(policy));
    return v;
}

// Where a fragment register j of a 16 x 16 tile sits: core matrix 2 (j & 1) + (j >> 1) (mma.cuh),
// 64 elements each; lane l's pair is elements 2l, 2l + 1 of it.
__device__ __forceinline__ int frag_core(int j) { return ((j & 1) * 2 + (j >> 1)) * 64; }

// The last slice of item `il` is in (part, this lane's column of each warp's fragment): add the
// slices in order from zero, as every path does, and write the outputs.
template <int EPI>
__device__ __forceinline__ void direct_finish(const mt_linear_args &a, const ItemRows &cur, const float4 (*slices)[32], int S) {
    const int lane = threadIdx.x & 31, tq = lane >> 2, t4 = lane & 3;
    __threadfence_block();
    float t0 = 0.0f, t1 = 0.0f, t2 = 0.0f, t3 = 0.0f;
    for (int w = 0; w < S; w++) {
        const float4 v = slices[w][lane];
        t0 += v.x;
        t1 += v.y;
        t2 += v.z;
        t3 += v.w;
    }
    // the fragment: t0, t1 row tq, X rows 2 t4 and 2 t4 + 1; t2, t3 row tq + 8
    const int xa = 2 * t4, xb = 2 * t4 + 1;
    if (EPI == MT_EPI_SWIGLU) {
        const int col = cur.rt * 8 + tq;   // gate rows 0-7 of the tile, up rows 8-15
        if (col < a.W.rows / 2) {
            if (xa < cur.nrows) store_swiglu(a, cur.row0 + xa, col, t0, t2);
            if (xb < cur.nrows) store_swiglu(a, cur.row0 + xb, col, t1, t3);
        }
    } else {
        const int col = cur.rt * 16 + tq;
        if (col < a.W.rows) {
            if (xa < cur.nrows) store_out<EPI>(a, cur.row0 + xa, col, t0);
            if (xb < cur.nrows) store_out<EPI>(a, cur.row0 + xb, col, t1);
        }
        if (col + 8 < a.W.rows) {
            if (xa < cur.nrows) store_out<EPI>(a, cur.row0 + xa, col + 8, t2);
            if (xb < cur.nrows) store_out<EPI>(a, cur.row0 + xb, col + 8, t3);
        }
    }
}

template <int EPI, int BATCH, int MINB>
__global__ void __launch_bounds__(256, MINB) linear_direct_kernel(const mt_linear_args a) {
    MT_TIMELINE_KERNEL(MT_TL_LINEAR_SMALL);
    // [item][slice][lane]: a warp's fragment sums, for the block's most items (dynamic: sized by
    // the launch, so the next launch's blocks find room beside this one's)
    extern __shared__ float4 part_raw[];
    float4 (*part)[8][32] = reinterpret_cast<float4 (*)[8][32]>(part_raw);
    __shared__ int arrived[DR_MAX_ITEMS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, tq = lane >> 2, t4 = lane & 3;
    const int C = a.W.K / 16, S = mt_k_slices(a.W.K), R = a.W.rows_pad / 16;
    const int c0 = warp * C / S, span = (warp + 1) * C / S - c0;   // this warp's slice: chunks [c0, c0 + span)
    const int nb = (span + BATCH - 1) / BATCH;                     // batches an item
    if (threadIdx.x < DR_MAX_ITEMS) arrived[threadIdx.x] = 0;
    __syncthreads();
    const uint64_t policy = mt_weight_policy(a.weights_once);
    const bool streams = warp < S;

    // The block's items [i0, i1) of n: an even share in item order.
    int i0 = 0, i1 = 0;
    auto share = [&](int n) {
        i0 = (int)((long long)blockIdx.x * n / gridDim.x);
        i1 = (int)((long long)(blockIdx.x + 1) * n / gridDim.x);
    };
    ItemRows nxt = {0, 0, 0, 1};
    const bf16 *wp = nullptr, *xp = nullptr;   // this lane's weights and X row of item nxt, slice start
    auto set_item = [&](int item, bool early) {
        nxt = item_rows(a, item, R, DR_GROUP_ROWS, DR_MAX_ROWS, early);
        wp = a.W.w + (size_t)nxt.g * a.group_stride + ((size_t)nxt.rt * C + c0) * 256 + 2 * lane;
        // rows past the item's read its last row again: their columns are never stored
        xp = a.X + (size_t)src_row(a, nxt.row0 + min(tq, nxt.nrows - 1)) * a.ldx + (size_t)c0 * 16 + 2 * t4;
    };
    uint32_t A[BATCH][4], B[BATCH][2];
    // batch kb of the item at wp / xp: its weights, its X rows, or both
    auto load = [&](int kb, bool weights, bool xrows) {
#pragma unroll
        for (int u = 0; u < BATCH; u++) {
            const int c = kb * BATCH + u;
            if (c < span) {
                if (weights) {
#pragma unroll
                    for (int j = 0; j < 4; j++) A[u][j] = ld_weight32(wp + (size_t)c * 256 + frag_core(j), policy);
                }
                if (xrows) {
                    B[u][0] = __ldcg(reinterpret_cast<const unsigned *>(xp + c * 16));
                    B[u][1] = __ldcg(reinterpret_cast<const unsigned *>(xp + c * 16 + 8));
                }
            }
        }
    };

    // Dense products know their items before the wait, and grouped ones whose sort is two launches
    // back can read them then: the first batch of weights is on its way before the wait.
    const bool early = !a.group_offsets || a.sort_early;
    bool loaded = false;
    if (early && streams) {
        share(a.group_offsets ? R * __ldcg(a.n_active) : R * ((a.n + DR_GROUP_ROWS - 1) / DR_GROUP_ROWS));
        if (i0 < i1) {
            set_item(i0, a.group_offsets != nullptr);
            load(0, true, false);
            loaded = true;
        }
    }
    mt_grid_dependency_wait();
    if (a.zero_after_wait && blockIdx.x == 0 && threadIdx.x == 0) *a.zero_after_wait = 0;
    if (!streams) return;
    if (!early) {
        share(R * *a.n_active);
        if (i0 >= i1) return;
        set_item(i0, false);
        load(0, true, false);
    } else if (!loaded) {
        return;
    }
    load(0, false, true);

    ItemRows cur = nxt;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int il = 0, kb = 0;;) {   // batch kb of item i0 + il is in A, B (or on its way)
#pragma unroll
        for (int u = 0; u < BATCH; u++)
            if (kb * BATCH + u < span) mt_mma(acc, A[u], B[u]);
        int nk = kb + 1, nil = il;
        if (nk == nb) {
            nk = 0;
            nil++;
        }
        const bool more = i0 + nil < i1;
        if (more) {   // the next batch's loads go out before this item's sums are added
            if (nk == 0) set_item(i0 + nil, false);
            load(nk, true, true);
        }
        if (kb == nb - 1) {
            // this warp's slice of item il is done: its sums in, itself counted
            part[il][warp][lane] = make_float4(acc[0], acc[1], acc[2], acc[3]);
            __threadfence_block();
            __syncwarp();
            int before = 0;
            if (lane == 0) before = atomicAdd(&arrived[il], 1);
            before = __shfl_sync(0xffffffffu, before, 0);
            if (before == S - 1) direct_finish<EPI>(a, cur, part[il], S);
            acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
            cur = nxt;
        }
        if (!more) break;
        il = nil;
        kb = nk;
    }
}

// A launch of BATCH chunks a batch, MINB blocks a multiprocessor (the registers that leaves a thread).
template <int EPI, int BATCH, int MINB>
void launch_direct_shape(const mt_linear_args &a, cudaStream_t st) {
    static int resident = 0;
    if (!resident) {
        int per_sm = 0;
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, linear_direct_kernel<EPI, BATCH, MINB>, 256,
                                                      (size_t)2 * 8 * 32 * sizeof(float4));
        resident = per_sm > 0 ? per_sm * mt_cuda_sm_count() : 1;
    }
    const int groups = a.group_offsets ? a.max_work : (a.n + DR_GROUP_ROWS - 1) / DR_GROUP_ROWS;
    const int items = groups * (a.W.rows_pad / 16);
    if (items <= 0) return;
    int grid = items < resident ? items : resident;
    const int fewest = (items + DR_MAX_ITEMS - 1) / DR_MAX_ITEMS;   // so no block holds more
    if (grid < fewest) grid = fewest;
    const int per_block = (items + grid - 1) / grid;
    mt_launch(linear_direct_kernel<EPI, BATCH, MINB>, dim3(grid), dim3(256), (size_t)per_block * 8 * 32 * sizeof(float4),
              st, a);
}

template <int BATCH, int MINB>
struct DirectPath {
    template <int EPI> static void run(const mt_linear_args &a, cudaStream_t st) { launch_direct_shape<EPI, BATCH, MINB>(a, st); }
};

// -1: from MOETRACE_CUDA_DIRECT (read once); else what mt_cuda_linear_direct_set chose.
int direct_forced = -1;
int direct_mode() {
    if (direct_forced >= 0) return direct_forced;
    static int env = -1;
    if (env < 0) {
        const char *v = getenv("MOETRACE_CUDA_DIRECT");
        env = v && *v ? atoi(v) : 1;
    }
    return env;
}

}  // namespace

void mt_cuda_linear_direct_set(int mode) { direct_forced = mode; }

int mt_cuda_linear_direct(const mt_linear_args *a, cudaStream_t st) {
    const int mode = direct_mode();
    if (mode <= 0 || a->rows_max <= 0 || a->rows_max > DR_MAX_ROWS || a->W.K % 16 != 0) return 0;
    if (!a->group_offsets && a->n > DR_MAX_ROWS) return 0;
    // Left to itself it takes the grouped products without SwiGLU (the expert down product), the
    // one it measured faster on; set by a test, every product it can.
    if (direct_forced < 0 && (!a->group_offsets || a->epilogue == MT_EPI_SWIGLU)) return 0;
    // Up to 4 X rows a group (decode batches up to 4): batches of 8 chunks, two blocks a
    // multiprocessor; more (batch 8): batches of 4, four blocks, which measured faster there
    // (docs/PERF.md). mode 2 and 3 force one or the other (comparisons).
    const bool wide = mode == 2 || (mode != 3 && a->rows_max <= 4);
    if (wide) by_epilogue<DirectPath<8, 2>>(*a, st);
    else by_epilogue<DirectPath<4, 4>>(*a, st);
    return 1;
}
