// Paged causal attention over bf16 K/V, on tensor cores, batch-invariant (see cuda_kernels.h).
//
// A warp owns 16 attention rows (a row is one query head of one token). The KV positions are cut
// into tiles of 32; each tile gives, from an empty start, its own softmax state per row (max m,
// sum l, output o), and a row's states are merged in tile order into its result. That order
// depends on the row's position alone, so every path below computes the same bits:
//  - the rows kernel: 4 warps of 16 rows each walk the tiles in order, sharing each K/V tile,
//    merging as they go (prefill chunks);
//  - the decode kernel: 4 warps compute 4 tiles of the same 16 rows at a time, one warp merges
//    them in order (decode at large batches);
//  - the split kernels: one warp per (rows, tile) writes the tile's state to scratch, then a merge
//    kernel folds the states in tile order (decode at small batches, where the rows kernel would
//    leave the GPU idle); up to 32 KV tiles the same in one cluster launch, the states going
//    straight into the shared memory of the block that folds them.
// State updates use explicit fp32 intrinsics (no contraction choices left to the compiler).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/mma.cuh"

namespace {

constexpr int KV_TILE = 32;
constexpr int ROWS_MIN_BLOCKS = 3;   // rows kernel blocks per multiprocessor (168 registers at head_dim 128)

template <int HD>
struct RowState {        // this thread's part of a warp's 16-row state: rows tq and tq + 8
    float m[2], l[2];
    float o[HD / 8][4];
};

template <int HD>
__device__ __forceinline__ void state_reset(RowState<HD> &s) {
    s.m[0] = s.m[1] = -INFINITY;
    s.l[0] = s.l[1] = 0.0f;
#pragma unroll
    for (int d = 0; d < HD / 8; d++) s.o[d][0] = s.o[d][1] = s.o[d][2] = s.o[d][3] = 0.0f;
}

struct RowInfo {
    bool valid[2];
    int pos[2];
};

// Loads the 16 query rows' A-fragments (rows tq, tq+8 of the warp's 16).
template <int HD>
__device__ __forceinline__ void load_q(uint32_t qa[HD / 16][4], const mt_attention_args &a, const mt_attn_tile &t,
                                       int kvh, int row_base, RowInfo &ri) {
    const int lane = threadIdx.x & 31, tq = lane >> 2, t4 = lane & 3;
    const int G = a.n_heads / a.n_kv_heads, qd = a.n_heads * HD;
    const bf16 *qrow[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        int r = row_base + tq + 8 * h;
        ri.valid[h] = r < t.n_tok * t.n_heads;
        int tok = t.first_token + (ri.valid[h] ? r / t.n_heads : 0);
        int head = kvh * G + t.head0 + (ri.valid[h] ? r % t.n_heads : 0);
        ri.pos[h] = ri.valid[h] ? a.positions[tok] : -1;
        qrow[h] = a.q + (size_t)tok * qd + (size_t)head * HD;
    }
#pragma unroll
    for (int kc = 0; kc < HD / 16; kc++) {
        const int c = kc * 16 + 2 * t4;
        qa[kc][0] = ri.valid[0] ? *reinterpret_cast<const uint32_t *>(qrow[0] + c) : 0u;
        qa[kc][1] = ri.valid[1] ? *reinterpret_cast<const uint32_t *>(qrow[1] + c) : 0u;
        qa[kc][2] = ri.valid[0] ? *reinterpret_cast<const uint32_t *>(qrow[0] + c + 8) : 0u;
        qa[kc][3] = ri.valid[1] ? *reinterpret_cast<const uint32_t *>(qrow[1] + c + 8) : 0u;
    }
}

// Starts copying KV tile kt (positions kt*32 ..) of kv head kvh, the sequence's block table at
// block_table + table_off, into shared memory, rows of HD+8, as one cp.async group; positions
// beyond max_pos are zeros, and position skip_pos (>= 0) is left out (issue_kv_row copies it).
// Threads [0, NT) of the caller take part. A tile spans two KV blocks of 16 positions: both
// block-table entries are read first (two independent loads, through L2: the table is a pass
// input, which callers may read before their dependency wait), so every copy is issued without
// waiting on a lookup.
template <int HD, int NT>
__device__ __forceinline__ void issue_kv_tile(bf16 *Ks, bf16 *Vs, const mt_attention_args &a, int table_off, int kvh, int kt,
                                             int max_pos, int tid, int skip_pos = -1) {
    constexpr int VEC = HD / 8;   // 16-byte vectors per position
    const int kvd = a.n_kv_heads * HD;
    const int32_t *table = a.block_table + table_off + kt * 2;
    size_t base[2];
#pragma unroll
    for (int b = 0; b < 2; b++) {
        bool used = kt * KV_TILE + 16 * b <= max_pos;
        base[b] = used ? ((size_t)__ldcg(table + b) * a.num_layers + a.layer) * 16 * kvd + (size_t)kvh * HD : 0;
    }
#pragma unroll
    for (int i = 0; i < (KV_TILE * VEC + NT - 1) / NT; i++) {
        int v = tid + i * NT;
        if ((KV_TILE * VEC) % NT != 0 && v >= KV_TILE * VEC) break;
        int r = v / VEC, q = v % VEC;
        if (kt * KV_TILE + r == skip_pos) continue;
        bool ok = kt * KV_TILE + r <= max_pos;
        size_t off = ok ? base[r >> 4] + (size_t)(r & 15) * kvd + q * 8 : 0;
        mt_cp_async16(Ks + r * (HD + 8) + q * 8, a.k_cache + off, ok ? 16 : 0);
        mt_cp_async16(Vs + r * (HD + 8) + q * 8, a.v_cache + off, ok ? 16 : 0);
    }
    mt_cp_async_commit();
}

// Starts copying position pos (of KV tile kt) of kv head kvh into its row of the tile, as one
// cp.async group; lanes [0, HD/8) of the calling warp take part.
template <int HD>
__device__ __forceinline__ void issue_kv_row(bf16 *Ks, bf16 *Vs, const mt_attention_args &a, int table_off, int kvh, int kt,
                                            int pos, int lane) {
    const int kvd = a.n_kv_heads * HD, r = pos - kt * KV_TILE;
    if (lane < HD / 8) {
        size_t off = ((size_t)__ldcg(a.block_table + table_off + pos / 16) * a.num_layers + a.layer) * 16 * kvd +
                     (size_t)(pos % 16) * kvd + (size_t)kvh * HD + lane * 8;
        mt_cp_async16(Ks + r * (HD + 8) + lane * 8, a.k_cache + off, 16);
        mt_cp_async16(Vs + r * (HD + 8) + lane * 8, a.v_cache + off, 16);
    }
    mt_cp_async_commit();
}

// Tile i of a.tiles, read through L2 (a pass input: callers may read it before their dependency wait).
__device__ __forceinline__ mt_attn_tile load_tile(const mt_attention_args &a, int i) {
    const int32_t *p = reinterpret_cast<const int32_t *>(a.tiles + i);
    return {__ldcg(p), __ldcg(p + 1), __ldcg(p + 2), __ldcg(p + 3), __ldcg(p + 4), __ldcg(p + 5)};
}

// The same, waiting until this thread's part has landed (the caller's barrier makes the whole
// tile visible).
template <int HD, int NT>
__device__ __forceinline__ void load_kv_tile(bf16 *Ks, bf16 *Vs, const mt_attention_args &a, int table_off, int kvh, int kt,
                                             int max_pos, int tid) {
    issue_kv_tile<HD, NT>(Ks, Vs, a, table_off, kvh, kt, max_pos, tid);
    mt_cp_async_wait<0>();
}

// Tile kt's probabilities for the warp's 16 rows (rows tq and tq + 8 of this thread): the scores
// Q.K^T in log2 units, masked; the rows' maxima xm (-inf for a row masked throughout); in sc,
// P = exp2(score - xm) rounded to bf16 first (the sums count exactly what the P.V product uses);
// and xl, this thread's part of the row sums.
template <int HD>
__device__ __forceinline__ void tile_probs(float sc[4][4], float xm[2], float xl[2], const uint32_t qa[HD / 16][4],
                                           const RowInfo &ri, const bf16 *Ks, int kt, float scale_log2, int window) {
    const int lane = threadIdx.x & 31, tq = lane >> 2, t4 = lane & 3;
    // K's B-fragments by ldmatrix.x4: matrix m of lane group lane / 8 holds positions nt*8 .. +7
    // (rows) and dims 8m .. 8m + 7 of a 32-dim pair of chunks, which gives every lane the same two
    // values per register the MMA's fragment asks for (position tq, dims 2 t4 and 2 t4 + 1).
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
        sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
        const bf16 *krow = Ks + (nt * 8 + (lane & 7)) * (HD + 8) + (lane >> 3) * 8;
#pragma unroll
        for (int kc = 0; kc + 1 < HD / 16; kc += 2) {
            uint32_t r[4];
            mt_ldmatrix_x4(r, krow + kc * 16);
            uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
            mt_mma(sc[nt], qa[kc], b0);
            mt_mma(sc[nt], qa[kc + 1], b1);
        }
        if constexpr (HD / 16 % 2 == 1) {   // head_dim 16: the one chunk by plain loads
            const bf16 *kq = Ks + (nt * 8 + tq) * (HD + 8) + (HD / 16 - 1) * 16 + 2 * t4;
            uint32_t b[2] = {*reinterpret_cast<const uint32_t *>(kq), *reinterpret_cast<const uint32_t *>(kq + 8)};
            mt_mma(sc[nt], qa[HD / 16 - 1], b);
        }
    }
    xm[0] = xm[1] = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
#pragma unroll
        for (int q = 0; q < 4; q++) {
            int h = q >> 1;
            int p = kt * KV_TILE + nt * 8 + 2 * t4 + (q & 1);
            bool ok = ri.valid[h] && p <= ri.pos[h] && (window <= 0 || p > ri.pos[h] - window);
            sc[nt][q] = ok ? __fmul_rn(sc[nt][q], scale_log2) : -INFINITY;
            xm[h] = fmaxf(xm[h], sc[nt][q]);
        }
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        xm[h] = fmaxf(xm[h], __shfl_xor_sync(0xffffffffu, xm[h], 1));
        xm[h] = fmaxf(xm[h], __shfl_xor_sync(0xffffffffu, xm[h], 2));
    }
    xl[0] = xl[1] = 0.0f;
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
#pragma unroll
        for (int q = 0; q < 4; q++) {
            int h = q >> 1;
            float p = xm[h] == -INFINITY ? 0.0f : exp2f(__fsub_rn(sc[nt][q], xm[h]));
            p = __bfloat162float(__float2bfloat16(p));
            sc[nt][q] = p;
            xl[h] = __fadd_rn(xl[h], p);
        }
    }
}

// P as the A-fragments of the two 16-position halves of the tile.
__device__ __forceinline__ void pack_probs(uint32_t pa[2][4], const float sc[4][4]) {
#pragma unroll
    for (int kk = 0; kk < 2; kk++) {
        pa[kk][0] = mt_pack_bf16(sc[2 * kk][0], sc[2 * kk][1]);
        pa[kk][1] = mt_pack_bf16(sc[2 * kk][2], sc[2 * kk][3]);
        pa[kk][2] = mt_pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
        pa[kk][3] = mt_pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
    }
}

// Output dims 8d .. 8d + 15 of the tile's P.V: x0 (dims 8d..) and x1 (8d + 8..) from zero, over the
// tile's two halves in order (HD % 16 == 0: dims come in pairs of 8).
template <int HD>
__device__ __forceinline__ void tile_pv_pair(float x0[4], float x1[4], const uint32_t pa[2][4], const bf16 *Vs, int d) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int q = 0; q < 4; q++) x0[q] = x1[q] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < 2; kk++) {
        // rows 16kk + lane%16 of V, columns d*8 (lanes 0-15) and (d+1)*8 (lanes 16-31), transposed
        const bf16 *vp = Vs + (16 * kk + (lane & 15)) * (HD + 8) + (d + (lane >> 4)) * 8;
        uint32_t r0, r1, r2, r3;
        uint32_t addr = (uint32_t)__cvta_generic_to_shared(vp);
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                     : "r"(addr));
        uint32_t b0[2] = {r0, r1}, b1[2] = {r2, r3};
        mt_mma(x0, pa[kk], b0);
        mt_mma(x1, pa[kk], b1);
    }
}

// The quad's partial row sums added up (every lane of a row's quad gets the sum).
__device__ __forceinline__ void quad_sums(float l[2]) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        l[h] = __fadd_rn(l[h], __shfl_xor_sync(0xffffffffu, l[h], 1));
        l[h] = __fadd_rn(l[h], __shfl_xor_sync(0xffffffffu, l[h], 2));
    }
}

// s = the state of the warp's 16 rows over tile kt alone (from an empty start), row sums final.
template <int HD>
__device__ __forceinline__ void tile_state(RowState<HD> &s, const uint32_t qa[HD / 16][4], const RowInfo &ri,
                                           const bf16 *Ks, const bf16 *Vs, int kt, float scale_log2, int window) {
    float sc[4][4];
    tile_probs<HD>(sc, s.m, s.l, qa, ri, Ks, kt, scale_log2, window);
    quad_sums(s.l);
    uint32_t pa[2][4];
    pack_probs(pa, sc);
#pragma unroll
    for (int d = 0; d < HD / 8; d += 2) tile_pv_pair<HD>(s.o[d], s.o[d + 1], pa, Vs, d);
}

// total <- total (+) x, the online-softmax merge of two states of the same rows; merging into an
// empty total copies x exactly.
template <int HD>
__device__ __forceinline__ void state_merge(RowState<HD> &t, const RowState<HD> &x) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float mn = fmaxf(t.m[h], x.m[h]);
        if (mn == -INFINITY) continue;
        float ca = exp2f(__fsub_rn(t.m[h], mn)), cb = exp2f(__fsub_rn(x.m[h], mn));
        t.l[h] = __fmaf_rn(x.l[h], cb, __fmul_rn(t.l[h], ca));
#pragma unroll
        for (int d = 0; d < HD / 8; d++) {
            t.o[d][2 * h] = __fmaf_rn(x.o[d][2 * h], cb, __fmul_rn(t.o[d][2 * h], ca));
            t.o[d][2 * h + 1] = __fmaf_rn(x.o[d][2 * h + 1], cb, __fmul_rn(t.o[d][2 * h + 1], ca));
        }
        t.m[h] = mn;
    }
}

template <int HD>
__device__ __forceinline__ void store_rows(const RowState<HD> &s, const mt_attention_args &a, const mt_attn_tile &t,
                                           int kvh, int row_base, const RowInfo &ri) {
    const int lane = threadIdx.x & 31, tq = lane >> 2, t4 = lane & 3;
    const int G = a.n_heads / a.n_kv_heads, qd = a.n_heads * HD;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        if (!ri.valid[h]) continue;
        int r = row_base + tq + 8 * h;
        int tok = t.first_token + r / t.n_heads, head = kvh * G + t.head0 + r % t.n_heads;
        bf16 *o = a.out + (size_t)tok * qd + (size_t)head * HD;
        float l = s.l[h] > 0.0f ? s.l[h] : 1.0f;
#pragma unroll
        for (int d = 0; d < HD / 8; d++) {
            int c = d * 8 + 2 * t4;
            *reinterpret_cast<uint32_t *>(o + c) =
                mt_pack_bf16(__fdiv_rn(s.o[d][2 * h], l), __fdiv_rn(s.o[d][2 * h + 1], l));
        }
    }
}

// state_merge(t, tile_state(tile kt)) without holding the tile's whole state: its output is merged
// into t 8 dims at a time as its P.V products finish (the rows kernel's registers). The same
// operations in the same order, so the same bits.
template <int HD>
__device__ __forceinline__ void tile_merge_into(RowState<HD> &t, const uint32_t qa[HD / 16][4], const RowInfo &ri,
                                                const bf16 *Ks, const bf16 *Vs, int kt, float scale_log2, int window) {
    float sc[4][4], xm[2], xl[2];
    tile_probs<HD>(sc, xm, xl, qa, ri, Ks, kt, scale_log2, window);
    quad_sums(xl);
    float ca[2], cb[2];
    bool merge[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        float mn = fmaxf(t.m[h], xm[h]);
        merge[h] = mn != -INFINITY;
        ca[h] = merge[h] ? exp2f(__fsub_rn(t.m[h], mn)) : 1.0f;
        cb[h] = merge[h] ? exp2f(__fsub_rn(xm[h], mn)) : 0.0f;
        if (merge[h]) {
            t.l[h] = __fmaf_rn(xl[h], cb[h], __fmul_rn(t.l[h], ca[h]));
            t.m[h] = mn;
        }
    }
    uint32_t pa[2][4];
    pack_probs(pa, sc);
    // 4 pairs of 8 dims at a time: their products are in flight together, then merged (measured:
    // 1 or 2 pairs a little slower, 4 blocks per multiprocessor slower still, docs/PERF.md)
    constexpr int PV_GROUP = 4;
#pragma unroll
    for (int d0 = 0; d0 < HD / 8; d0 += 2 * PV_GROUP) {
        float x[PV_GROUP][2][4];
#pragma unroll
        for (int g = 0; g < PV_GROUP; g++)
            if (d0 + 2 * g < HD / 8) tile_pv_pair<HD>(x[g][0], x[g][1], pa, Vs, d0 + 2 * g);
#pragma unroll
        for (int g = 0; g < PV_GROUP; g++) {
            const int d = d0 + 2 * g;
            if (d >= HD / 8) break;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                if (!merge[h]) continue;
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    t.o[d][2 * h + e] = __fmaf_rn(x[g][0][2 * h + e], cb[h], __fmul_rn(t.o[d][2 * h + e], ca[h]));
                    t.o[d + 1][2 * h + e] = __fmaf_rn(x[g][1][2 * h + e], cb[h], __fmul_rn(t.o[d + 1][2 * h + e], ca[h]));
                }
            }
        }
    }
}

// Rows kernel: one block per (tile of <= 16*warps rows, kv head); warp w owns rows 16w..16w+15.
// Two KV buffers: the next tile is copied while this one is used. Each tile is merged into the
// total as its output dims come out of the tensor cores (tile_merge_into), which leaves room for
// three blocks per multiprocessor (168 registers at head_dim 128).
template <int HD>
__global__ void __launch_bounds__(128, ROWS_MIN_BLOCKS) attention_rows_kernel(const mt_attention_args a, float scale_log2) {
    MT_TIMELINE_KERNEL(MT_TL_ATTN_ROWS);
    mt_grid_dependency_wait();
    extern __shared__ uint4 smem_raw[];
    const int warp = threadIdx.x >> 5;
    const mt_attn_tile t = a.tiles[blockIdx.x];
    if (t.n_tok == 0) return;   // padding tile of a captured graph
    const int kvh = blockIdx.y;
    const int max_pos = t.max_pos;
    constexpr int BUF = 2 * KV_TILE * (HD + 8);   // bf16 per buffer: K then V
    bf16 *kv = reinterpret_cast<bf16 *>(smem_raw);

    uint32_t qa[HD / 16][4];
    RowInfo ri;
    load_q<HD>(qa, a, t, kvh, warp * 16, ri);
    int warp_max = max(ri.valid[0] ? ri.pos[0] : -1, ri.valid[1] ? ri.pos[1] : -1);
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) warp_max = max(warp_max, __shfl_xor_sync(0xffffffffu, warp_max, o));
    RowState<HD> total;
    state_reset(total);
    const int n_kt = max_pos / KV_TILE + 1;
    issue_kv_tile<HD, 128>(kv, kv + KV_TILE * (HD + 8), a, t.table_off, kvh, 0, max_pos, threadIdx.x);
    for (int kt = 0; kt < n_kt; kt++) {
        bf16 *Ks = kv + (kt & 1) * BUF, *Vs = Ks + KV_TILE * (HD + 8);
        if (kt + 1 < n_kt) {   // the other buffer was released by the barrier ending the last tile
            bf16 *Kn = kv + ((kt + 1) & 1) * BUF;
            issue_kv_tile<HD, 128>(Kn, Kn + KV_TILE * (HD + 8), a, t.table_off, kvh, kt + 1, max_pos, threadIdx.x);
            mt_cp_async_wait<1>();
        } else {
            mt_cp_async_wait<0>();
        }
        __syncthreads();
        if (kt * KV_TILE <= warp_max)   // else masked for every row of this warp: an empty state
            tile_merge_into<HD>(total, qa, ri, Ks, Vs, kt, scale_log2, a.sliding_window);
        __syncthreads();
    }
    store_rows<HD>(total, a, t, kvh, warp * 16, ri);
}

// Decode kernel: one block per (tile of <= 16 rows, kv head); its 4 warps compute 4 KV tiles at a
// time, and warp 0 merges their states in tile order (through shared memory).
template <int HD>
__global__ void __launch_bounds__(128) attention_decode_kernel(const mt_attention_args a, float scale_log2) {
    MT_TIMELINE_KERNEL(MT_TL_ATTN_DECODE);
    mt_grid_dependency_wait();
    extern __shared__ uint4 smem_raw[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const mt_attn_tile t = a.tiles[blockIdx.x];
    if (t.n_tok == 0) return;
    const int kvh = blockIdx.y;
    const int max_pos = t.max_pos;
    bf16 *Ks = reinterpret_cast<bf16 *>(smem_raw) + warp * 2 * KV_TILE * (HD + 8);
    bf16 *Vs = Ks + KV_TILE * (HD + 8);
    RowState<HD> *slots = reinterpret_cast<RowState<HD> *>(reinterpret_cast<bf16 *>(smem_raw) + 4 * 2 * KV_TILE * (HD + 8));
    uint32_t qa[HD / 16][4];
    RowInfo ri;
    load_q<HD>(qa, a, t, kvh, 0, ri);
    RowState<HD> total, s;
    state_reset(total);
    for (int round = 0; round * 4 * KV_TILE <= max_pos; round++) {
        const int kt = round * 4 + warp;
        state_reset(s);
        if (kt * KV_TILE <= max_pos) {
            load_kv_tile<HD, 32>(Ks, Vs, a, t.table_off, kvh, kt, max_pos, lane);
            __syncwarp();
            tile_state<HD>(s, qa, ri, Ks, Vs, kt, scale_log2, a.sliding_window);
        }
        if (warp > 0) slots[(warp - 1) * 32 + lane] = s;
        __syncthreads();
        if (warp == 0) {
            state_merge(total, s);
            for (int w = 1; w < 4; w++) {
                RowState<HD> x = slots[(w - 1) * 32 + lane];
                state_merge(total, x);
            }
        }
        __syncthreads();
    }
    if (warp == 0) store_rows<HD>(total, a, t, kvh, 0, ri);
}

// A split warp's KV tile kt, after the dependency wait: the token's own K/V row (which the q/k
// prologue just wrote) copied in when the tile holds it, the rows' queries, then the tile's state.
template <int HD>
__device__ __forceinline__ void split_tile_state(RowState<HD> &s, const mt_attention_args &a, const mt_attn_tile &t, bf16 *Ks,
                                                 bf16 *Vs, int kvh, int kt, bool own_row, float scale_log2) {
    const int lane = threadIdx.x & 31;
    if (own_row) issue_kv_row<HD>(Ks, Vs, a, t.table_off, kvh, kt, t.max_pos, lane);
    uint32_t qa[HD / 16][4];
    RowInfo ri;
    load_q<HD>(qa, a, t, kvh, 0, ri);
    mt_cp_async_wait<0>();
    MT_TIMELINE_MARK(0);   // K/V landed
    __syncwarp();
    tile_state<HD>(s, qa, ri, Ks, Vs, kt, scale_log2, a.sliding_window);
    MT_TIMELINE_MARK(1);   // tile state computed
}

// Split kernel: warp w of block (tile, kv head, z) computes KV tile 4z + w of the tile's <= 16 rows
// and writes the state: o [16][HD], then m [16], then l [16], at state index (tile, kvh, kt).
// Decode tiles only (one token each): every K/V position but the token's own was written by
// earlier passes, so those copies start before the dependency wait; the token's own row, which
// the q/k prologue launched just before writes, is copied after it.
template <int HD>
__global__ void __launch_bounds__(128) attention_split_kernel(const mt_attention_args a, float scale_log2) {
    MT_TIMELINE_KERNEL(MT_TL_ATTN_SPLIT);
    extern __shared__ uint4 smem_raw[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, tq = lane >> 2, t4 = lane & 3;
    const mt_attn_tile t = load_tile(a, blockIdx.x);
    const int kvh = blockIdx.y, kt = blockIdx.z * 4 + warp;
    const int max_pos = t.max_pos;
    const bool work = t.n_tok != 0 && kt * KV_TILE <= max_pos && kt < a.split_max_tiles;
    bf16 *Ks = reinterpret_cast<bf16 *>(smem_raw) + warp * 2 * KV_TILE * (HD + 8);
    bf16 *Vs = Ks + KV_TILE * (HD + 8);
    const bool own_row = max_pos / KV_TILE == kt;   // this KV tile holds the token's own position
    if (work) issue_kv_tile<HD, 32>(Ks, Vs, a, t.table_off, kvh, kt, max_pos, lane, max_pos);
    mt_grid_dependency_wait();
    if (!work) return;
    RowState<HD> s;
    split_tile_state<HD>(s, a, t, Ks, Vs, kvh, kt, own_row, scale_log2);
    float *st = a.split_states + (((size_t)blockIdx.x * a.n_kv_heads + kvh) * a.split_max_tiles + kt) * 16 * (HD + 2);
#pragma unroll
    for (int h = 0; h < 2; h++) {
        int r = tq + 8 * h;
#pragma unroll
        for (int d = 0; d < HD / 8; d++) {
            st[r * HD + d * 8 + 2 * t4] = s.o[d][2 * h];
            st[r * HD + d * 8 + 2 * t4 + 1] = s.o[d][2 * h + 1];
        }
        if (t4 == 0) {
            st[16 * HD + r] = s.m[h];
            st[16 * HD + 16 + r] = s.l[h];
        }
    }
}

// One element's state (m, l, o) folded with the next tile's (mx, lx, ox): exactly the arithmetic of
// state_merge, for the kernels that merge split states element by element.
__device__ __forceinline__ void fold_state(float &m, float &l, float &o, float mx, float lx, float ox) {
    const float mn = fmaxf(m, mx);
    if (mn == -INFINITY) return;
    const float ca = exp2f(__fsub_rn(m, mn)), cb = exp2f(__fsub_rn(mx, mn));
    l = __fmaf_rn(lx, cb, __fmul_rn(l, ca));
    o = __fmaf_rn(ox, cb, __fmul_rn(o, ca));
    m = mn;
}

// Merge kernel: folds the split states of (tile, kv head) in tile order, element by element, with
// exactly the arithmetic of state_merge, and writes the rows.
// Block (tile, kv head, row), a thread per output dim. The tile (a pass input) is read before the
// dependency wait; the first MERGE_AHEAD states right after it, without waiting for the tile's
// count of them (their addresses do not depend on it; the scratch holds split_max_tiles states per
// (tile, kv head), and those past the tile's last are never folded), so the fold waits on one
// memory round trip.
constexpr int MERGE_AHEAD = 32;

template <int HD>
__global__ void __launch_bounds__(HD) attention_merge_kernel(const mt_attention_args a) {
    MT_TIMELINE_KERNEL(MT_TL_ATTN_MERGE);
    const mt_attn_tile t = load_tile(a, blockIdx.x);   // a pass input: before the wait
    mt_grid_dependency_wait();
    const int r = blockIdx.z, d = threadIdx.x, kvh = blockIdx.y;
    const float *base = a.split_states + ((size_t)blockIdx.x * a.n_kv_heads + kvh) * a.split_max_tiles * 16 * (HD + 2);
    float mx[MERGE_AHEAD], lx[MERGE_AHEAD], ox[MERGE_AHEAD];
    auto load = [&](int k0, int n_kt) {
#pragma unroll
        for (int j = 0; j < MERGE_AHEAD; j++) {
            const float *st = base + (size_t)(k0 + j) * 16 * (HD + 2);
            if (k0 + j < n_kt) {
                mx[j] = st[16 * HD + r];
                lx[j] = st[16 * HD + 16 + r];
                ox[j] = st[r * HD + d];
            }
        }
    };
    load(0, a.split_max_tiles);
    if (t.n_tok == 0 || r >= t.n_tok * t.n_heads) return;
    const int G = a.n_heads / a.n_kv_heads, qd = a.n_heads * HD;
    const int n_kt = t.max_pos / KV_TILE + 1;
    float m = -INFINITY, l = 0.0f, o = 0.0f;
    for (int k0 = 0; k0 < n_kt; k0 += MERGE_AHEAD) {
        if (k0 > 0) load(k0, n_kt);
#pragma unroll
        for (int j = 0; j < MERGE_AHEAD; j++) {
            if (k0 + j >= n_kt) break;
            fold_state(m, l, o, mx[j], lx[j], ox[j]);
        }
    }
    int tok = t.first_token + r / t.n_heads, head = kvh * G + t.head0 + r % t.n_heads;
    a.out[(size_t)tok * qd + (size_t)head * HD + d] = __float2bfloat16(__fdiv_rn(o, l > 0.0f ? l : 1.0f));
}

// Decode split attention in one launch, for passes whose KV tiles fit one portable cluster
// (split_max_tiles <= 32: 8 blocks of 4 warps). Block (z, tile, kv head): the blocks z of a
// (tile, kv head) are one cluster, and warp w of block z computes KV tile 4z + w's state as the
// split kernel does. Instead of going through scratch to a merge launch, each row's state goes
// straight into the shared memory of the block that merges that row (row r: block r % Z),
// completing on that block's barrier: by default each warp writes its states into its own (used)
// K tile and sends each row's with one bulk copy (b1 -0.5 to -1.8% against 8-byte remote stores,
// docs/PERF.md); each block then folds its rows' states in tile order with the merge kernel's
// arithmetic (fold_state). Same bits as the split and merge kernels.
constexpr int CLUSTER_MAX_TILES = 32;

// Rows of a tile of R rows that block b of Z merges (rows b, b + Z, ...).
__device__ __forceinline__ int cluster_rows_of(int R, int b, int Z) { return R > b ? (R - b + Z - 1) / Z : 0; }

// Floats a received row state takes in the folding block: o [HD], m, l, padded to 16 bytes (a bulk
// copy's unit); the launcher sizes the shared memory by it, whichever way the states travel.
template <int HD>
__host__ __device__ constexpr int cluster_state_floats() { return (HD + 2 + 3) / 4 * 4; }

template <int HD>
__global__ void __launch_bounds__(128) attention_split_cluster_kernel(const mt_attention_args a, float scale_log2, int bulk) {
    MT_TIMELINE_KERNEL(MT_TL_ATTN_SPLIT);
    extern __shared__ uint4 smem_raw[];
    __shared__ __align__(8) uint64_t sbar;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, tq = lane >> 2, t4 = lane & 3;
    const int Z = gridDim.x, zb = blockIdx.x, kvh = blockIdx.z, kt = zb * 4 + warp;
    const mt_attn_tile t = load_tile(a, blockIdx.y);
    const int max_pos = t.max_pos, R = t.n_tok * t.n_heads;
    const int n_kt = t.n_tok ? min(max_pos / KV_TILE + 1, a.split_max_tiles) : 0;   // tiles with work
    const bool work = kt < n_kt;
    const int my_rows = cluster_rows_of(R, zb, Z);
    // a received state: o [HD], m, l; padded to 16 bytes, a bulk copy's unit, when sent by copies
    constexpr int SW_ST = HD + 2, SW_BULK = cluster_state_floats<HD>();
    static_assert(16 * SW_BULK * sizeof(float) <= KV_TILE * (HD + 8) * sizeof(bf16), "16 row states fit a K tile");
    const int SW = bulk ? SW_BULK : SW_ST;
    bf16 *Ks = reinterpret_cast<bf16 *>(smem_raw) + warp * 2 * KV_TILE * (HD + 8);
    bf16 *Vs = Ks + KV_TILE * (HD + 8);
    float *recv = reinterpret_cast<float *>(reinterpret_cast<bf16 *>(smem_raw) + 4 * 2 * KV_TILE * (HD + 8));   // [kt][row][SW]
    if (threadIdx.x == 0) {
        mt_mbar_init(&sbar, 1);
        mt_mbar_init_fence();
        if (my_rows > 0) mt_mbar_expect(&sbar, (unsigned)(n_kt * my_rows * SW) * 4u);
    }
    __syncthreads();
    // every block of the cluster running, its barrier initialised, before the first remote store
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
    const bool own_row = max_pos / KV_TILE == kt;   // this KV tile holds the token's own position
    if (work) issue_kv_tile<HD, 32>(Ks, Vs, a, t.table_off, kvh, kt, max_pos, lane, max_pos);
    mt_grid_dependency_wait();
    RowState<HD> s;
    if (work) split_tile_state<HD>(s, a, t, Ks, Vs, kvh, kt, own_row, scale_log2);
    asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory");
    if (work && bulk) {
        // the warp's row states into its own K tile (used by now), then row r's state by lane r,
        // one bulk copy, to the block that folds it (34 remote stores of 8 bytes a lane otherwise)
        float *stage = reinterpret_cast<float *>(Ks);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = tq + 8 * h;
            if (r >= R) continue;
#pragma unroll
            for (int d = 0; d < HD / 8; d++) {
                stage[r * SW_BULK + d * 8 + 2 * t4] = s.o[d][2 * h];
                stage[r * SW_BULK + d * 8 + 2 * t4 + 1] = s.o[d][2 * h + 1];
            }
            if (t4 == 0) {
                stage[r * SW_BULK + HD] = s.m[h];
                stage[r * SW_BULK + HD + 1] = s.l[h];
            }
        }
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");   // the stores, before the copies read them
        __syncwarp();
        if (lane < R) {
            const int b = lane % Z, j = lane / Z;
            float *st = recv + ((size_t)kt * cluster_rows_of(R, b, Z) + j) * SW_BULK;   // in block b's shared memory
            mt_bulk_copy_to_block(st, stage + lane * SW_BULK, SW_BULK * 4u, &sbar, b);
            asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");   // the source read before the K tile goes
        }
    } else if (work) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = tq + 8 * h;
            if (r >= R) continue;
            const int b = r % Z, j = r / Z;
            float *st = recv + ((size_t)kt * cluster_rows_of(R, b, Z) + j) * SW;   // in block b's shared memory
#pragma unroll
            for (int d = 0; d < HD / 8; d++) mt_st_async_remote2(st + d * 8 + 2 * t4, &sbar, b, s.o[d][2 * h], s.o[d][2 * h + 1]);
            if (t4 == 0) mt_st_async_remote2(st + HD, &sbar, b, s.m[h], s.l[h]);
        }
    }
    if (my_rows == 0) return;   // no block stores into this one
    mt_mbar_wait(&sbar, 0);
    const int G = a.n_heads / a.n_kv_heads, qd = a.n_heads * HD;
    for (int i = threadIdx.x; i < my_rows * HD; i += blockDim.x) {
        const int j = i / HD, d = i - j * HD, r = zb + j * Z;
        float m = -INFINITY, l = 0.0f, o = 0.0f;
        for (int k = 0; k < n_kt; k++) {
            const float *st = recv + ((size_t)k * my_rows + j) * SW;
            fold_state(m, l, o, st[HD], st[HD + 1], st[d]);
        }
        const int tok = t.first_token + r / t.n_heads, head = kvh * G + t.head0 + r % t.n_heads;
        a.out[(size_t)tok * qd + (size_t)head * HD + d] = __float2bfloat16(__fdiv_rn(o, l > 0.0f ? l : 1.0f));
    }
}

// A switch set by a test (1, 0), else by an environment variable read once (on unless "0").
struct Switch {
    const char *var;
    int setting, env;
    bool on() {
        if (setting >= 0) return setting == 1;
        if (env < 0) {
            const char *v = getenv(var);
            env = v && !strcmp(v, "0") ? 0 : 1;
        }
        return env == 1;
    }
    void set(int v) { setting = v < 0 ? -1 : v ? 1 : 0; }
};
// Whether decode split attention runs as one cluster launch where it fits
// (mt_cuda_attention_split_one_launch).
Switch split_one_launch = {"MOETRACE_CUDA_SPLIT_ONE_LAUNCH", -1, -1};
// How the one launch sends states (mt_cuda_attention_split_bulk).
Switch split_bulk = {"MOETRACE_CUDA_SPLIT_BULK", -1, -1};

float scale_log2_of(int hd) { return (1.0f / sqrtf((float)hd)) * 1.4426950408889634f; }

template <int HD>
void launch_rows(const mt_attention_args &a, cudaStream_t st) {
    size_t kv_bytes = 2 * 2 * KV_TILE * (HD + 8) * sizeof(bf16);   // two buffers of K and V
    mt_launch(attention_rows_kernel<HD>, dim3(a.n_tiles, a.n_kv_heads), 128, kv_bytes, st, a, scale_log2_of(HD));
}

template <int HD>
void launch_split(const mt_attention_args &a, cudaStream_t st) {
    size_t smem = 4 * 2 * KV_TILE * (HD + 8) * sizeof(bf16);
    static bool configured = false;
    if (!configured) {
        cudaFuncSetAttribute(attention_split_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        configured = true;
    }
    const int Z = (a.split_max_tiles + 3) / 4;
    if (split_one_launch.on() && a.split_max_tiles <= CLUSTER_MAX_TILES) {
        const size_t cs = smem + (size_t)a.split_max_tiles * ((16 + Z - 1) / Z) * cluster_state_floats<HD>() * sizeof(float);
        static size_t configured_cluster = 0;
        if (cs > configured_cluster) {
            cudaFuncSetAttribute(attention_split_cluster_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)cs);
            configured_cluster = cs;
        }
        mt_launch_clusters(attention_split_cluster_kernel<HD>, dim3(Z, a.n_tiles, a.n_kv_heads), 128, cs, st, Z, a,
                           scale_log2_of(HD), split_bulk.on() ? 1 : 0);
        return;
    }
    dim3 grid(a.n_tiles, a.n_kv_heads, Z);
    mt_launch(attention_split_kernel<HD>, grid, 128, smem, st, a, scale_log2_of(HD));
    mt_launch(attention_merge_kernel<HD>, dim3(a.n_tiles, a.n_kv_heads, 16), HD, 0, st, a);
}

template <int HD>
void launch_decode(const mt_attention_args &a, cudaStream_t st) {
    size_t smem = 4 * 2 * KV_TILE * (HD + 8) * sizeof(bf16) + 3 * 32 * sizeof(RowState<HD>);
    static bool configured = false;
    if (!configured) {
        cudaFuncSetAttribute(attention_decode_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        configured = true;
    }
    mt_launch(attention_decode_kernel<HD>, dim3(a.n_tiles, a.n_kv_heads), 128, smem, st, a, scale_log2_of(HD));
}

enum Mode { DECODE, PREFILL, SPLIT };

void dispatch(const mt_attention_args *a, Mode mode, cudaStream_t st) {
    if (a->n_tiles <= 0) return;
    switch (a->head_dim) {
#define CASE(HD)                                                                     \
    case HD:                                                                         \
        if (mode == SPLIT) launch_split<HD>(*a, st);                                 \
        else if (mode == DECODE) launch_decode<HD>(*a, st);                          \
        else launch_rows<HD>(*a, st);                                                \
        break;
    CASE(16)
    CASE(32)
    CASE(64)
    CASE(128)
#undef CASE
    default: break;
    }
}

}  // namespace

int mt_cuda_attention_supports(int head_dim) {
    return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128;
}

void mt_cuda_attention_decode(const mt_attention_args *a, cudaStream_t st) {
    dispatch(a, a->split_states ? SPLIT : DECODE, st);
}
void mt_cuda_attention_prefill(const mt_attention_args *a, cudaStream_t st) { dispatch(a, PREFILL, st); }
void mt_cuda_attention_split_one_launch(int on) { split_one_launch.set(on); }
void mt_cuda_attention_split_bulk(int on) { split_bulk.set(on); }

size_t mt_cuda_attention_split_floats(int n_tiles, int n_kv_heads, int max_tiles, int head_dim) {
    return (size_t)n_tiles * n_kv_heads * max_tiles * 16 * (head_dim + 2);
}
