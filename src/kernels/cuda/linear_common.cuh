// Pieces every matrix-product kernel shares (linear.cu, linear_direct.cu, linear_wgmma.cu): which X
// rows a block of the large-tile paths owns, which rows a decode-sized item covers, where a
// position's X row is, and how a finished output is written.
#ifndef MT_KERNELS_CUDA_LINEAR_COMMON_CUH
#define MT_KERNELS_CUDA_LINEAR_COMMON_CUH

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/mma.cuh"

// A block's X rows: positions [row0, row0 + nrows) of group g.
struct Work {
    int g, row0, nrows;
};

// The X rows of tile `tile` of a large-tile path with BN rows per tile: dense, rows BN tile ..;
// grouped, tile `tile` of the sort's tiles (tile_offsets, BN = tile_rows). False past the last tile.
__device__ __forceinline__ bool large_tile_work_at(const mt_linear_args &a, int BN, int tile, Work &wk) {
    if (a.group_offsets) {
        if (tile >= a.tile_offsets[a.n_groups]) return false;
        int lo = 0, hi = a.n_groups - 1;   // last g with tile_offsets[g] <= tile
        while (lo < hi) {
            int mid = (lo + hi + 1) >> 1;
            if (a.tile_offsets[mid] <= tile) lo = mid;
            else hi = mid - 1;
        }
        wk.g = lo;
        wk.row0 = a.group_offsets[lo] + (tile - a.tile_offsets[lo]) * BN;
        wk.nrows = min(BN, a.group_offsets[lo + 1] - wk.row0);
    } else {
        wk.g = 0;
        wk.row0 = tile * BN;
        wk.nrows = min(BN, a.n - wk.row0);
    }
    return true;
}
// The same for block row blockIdx.y.
__device__ __forceinline__ bool large_tile_work(const mt_linear_args &a, int BN, Work &wk) {
    return large_tile_work_at(a, BN, blockIdx.y, wk);
}

// One item of the decode-sized paths (the small path in linear.cu, the direct path): 16-row tile rt
// (of R a group) of group g, over X rows [row0, row0 + nrows).
struct ItemRows {
    int g, rt, row0, nrows;
};

// Item `item`'s rows. Grouped: slot item / R of the sort's active table, its group, first row and
// rows read with three loads issued together without waiting for n_active (slots past n_groups
// read as empty; slots past n_active hold stale values, which callers never reach). Dense: rows
// [group_rows (item / R), +group_rows). Rows are capped at max_rows. early reads through L2, as
// reads before the dependency wait must.
__device__ __forceinline__ ItemRows item_rows(const mt_linear_args &a, int item, int R, int group_rows, int max_rows, bool early) {
    ItemRows it;
    const int y = item / R;
    it.rt = item - y * R;
    if (a.group_offsets) {
        const int32_t *t = a.active;
        const bool slot = y < a.n_groups;
        it.g = slot ? (early ? __ldcg(t + y) : t[y]) : 0;
        it.row0 = slot ? (early ? __ldcg(t + a.n_groups + y) : t[a.n_groups + y]) : 0;
        it.nrows = slot ? min(max_rows, early ? __ldcg(t + 2 * a.n_groups + y) : t[2 * a.n_groups + y]) : 0;
    } else {
        it.g = 0;
        it.row0 = y * group_rows;
        it.nrows = min(max_rows, a.n - it.row0);
    }
    return it;
}

// X row of sorted position p (gathered through src_rows when set).
__device__ __forceinline__ int src_row(const mt_linear_args &a, int p) { return a.src_rows ? a.src_rows[p] : p; }

// Writes one finished output value (or, for SwiGLU, one gate/up pair) of position p.
template <int EPI>
__device__ __forceinline__ void store_out(const mt_linear_args &a, int p, int col, float v) {
    size_t at = (size_t)p * a.ldo + col;
    if (EPI == MT_EPI_F32) ((float *)a.out)[at] = v;
    else if (EPI == MT_EPI_F32_ADD) ((float *)a.out)[at] = (a.resid ? a.resid[at] : ((float *)a.out)[at]) + v;
    else ((bf16 *)a.out)[at] = __float2bfloat16(v);
}
__device__ __forceinline__ void store_swiglu(const mt_linear_args &a, int p, int col, float gate, float up) {
    ((bf16 *)a.out)[(size_t)p * a.ldo + col] = __float2bfloat16(mt_silu(gate) * up);
}

// L::run<EPI>(a, st) with a's epilogue as the compile-time EPI, and what it returns: the one place
// that maps the epilogue enum to kernel instantiations.
template <class L>
inline decltype(auto) by_epilogue(const mt_linear_args &a, cudaStream_t st) {
    switch (a.epilogue) {
    case MT_EPI_F32: return L::template run<MT_EPI_F32>(a, st);
    case MT_EPI_F32_ADD: return L::template run<MT_EPI_F32_ADD>(a, st);
    case MT_EPI_BF16: return L::template run<MT_EPI_BF16>(a, st);
    default: return L::template run<MT_EPI_SWIGLU>(a, st);
    }
}

#endif
