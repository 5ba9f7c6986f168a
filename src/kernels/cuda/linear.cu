// Batch-invariant matrix products over tiled bf16 weights (see cuda_kernels.h).
//
// Both paths compute every output the same way: for each of the mt_k_slices(K) slices, a fresh
// fp32 accumulator takes one m16n8k16 MMA per 16-wide chunk of the slice in increasing order; the
// slice results are added, in slice order, to a total that starts at zero. The small path gives
// each slice to one warp and adds the warps' results in order; the large path walks the slices in
// turn. A row's result is therefore the same bits whichever path and whatever batch computed it.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/mma.cuh"

namespace {

constexpr int SMALL_ROWS = 64;   // rows of X per work item of the small path
constexpr int SMALL_STAGE = 4;   // weight tiles per pipeline stage of a warp
constexpr int SMALL_STAGES = 4;  // stages in each warp's shared-memory ring (cp.async)
// a stage: SMALL_STAGE weight tiles (512 B each), then the first 8 X rows of those chunks (256 B each)
constexpr int SMALL_STAGE_ELEMS = SMALL_STAGE * (256 + 128);
constexpr size_t SMALL_SMEM = (size_t)8 * SMALL_STAGES * SMALL_STAGE_ELEMS * sizeof(bf16);   // 8 warps' rings

struct Work {
    int g, row0, nrows;
};

__device__ __forceinline__ int src_row(const mt_linear_args &a, int p) { return a.src_rows ? a.src_rows[p] : p; }

// Writes one finished output value (or, for SwiGLU, one gate/up pair) of position p.
template <int EPI>
__device__ __forceinline__ void store_out(const mt_linear_args &a, int p, int col, float v) {
    size_t at = (size_t)p * a.ldo + col;
    if (EPI == MT_EPI_F32) ((float *)a.out)[at] = v;
    else if (EPI == MT_EPI_F32_ADD) ((float *)a.out)[at] += v;
    else ((bf16 *)a.out)[at] = __float2bfloat16(v);
}
__device__ __forceinline__ void store_swiglu(const mt_linear_args &a, int p, int col, float gate, float up) {
    ((bf16 *)a.out)[(size_t)p * a.ldo + col] = __float2bfloat16(mt_silu(gate) * up);
}

// ---- small path ----------------------------------------------------------------------------------

// Each warp streams its slice's weight tiles, and the first 8 X rows' matching chunks, through a
// ring of SMALL_STAGES stages in shared memory: cp.async keeps several stages in flight while the
// tensor cores work on one, and no MMA waits on a global load. X rows past the first 8 (batches of
// more than 8 rows) are read from global memory directly.
template <int EPI>
__global__ void __launch_bounds__(256) linear_small_kernel(const mt_linear_args a) {
    extern __shared__ uint4 smem_raw[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int tq = lane >> 2, t4 = lane & 3;
    const int rt = blockIdx.x;
    Work wk;
    if (a.group_offsets) {
        if ((int)blockIdx.y >= *a.n_active) return;
        wk.g = a.active[blockIdx.y];
        wk.row0 = a.group_offsets[wk.g];
        wk.nrows = min(SMALL_ROWS, a.group_offsets[wk.g + 1] - wk.row0);
    } else {
        wk.g = 0;
        wk.row0 = blockIdx.y * SMALL_ROWS;
        wk.nrows = min(SMALL_ROWS, a.n - wk.row0);
    }
    const int nt = (wk.nrows + 7) >> 3;
    const int C = a.W.K / 16, S = mt_k_slices(a.W.K);
    const bf16 *W = a.W.w + (size_t)wk.g * a.group_stride + (size_t)rt * C * 256;

    const bf16 *xr[SMALL_ROWS / 8];
#pragma unroll
    for (int j = 0; j < SMALL_ROWS / 8; j++) {
        int r = j * 8 + tq;
        xr[j] = r < wk.nrows ? a.X + (size_t)src_row(a, wk.row0 + r) * a.ldx + 2 * t4 : nullptr;
    }
    float acc[SMALL_ROWS / 8][4];
#pragma unroll
    for (int j = 0; j < SMALL_ROWS / 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    bf16 *ring = reinterpret_cast<bf16 *>(smem_raw) + (size_t)warp * SMALL_STAGES * SMALL_STAGE_ELEMS;
    // X row (lane / 2) of the first n-tile, half (lane % 2) of each 16-wide chunk
    const int xrow = lane >> 1;
    const bf16 *xcopy = lane < 16 && xrow < wk.nrows ? a.X + (size_t)src_row(a, wk.row0 + xrow) * a.ldx + (lane & 1) * 8 : nullptr;
    if (warp < S) {
        const int c0 = warp * C / S, c1 = (warp + 1) * C / S;
        const int n_st = (c1 - c0 + SMALL_STAGE - 1) / SMALL_STAGE;
        auto issue = [&](int st) {   // one commit group per stage, empty past the end
            if (st < n_st) {
                bf16 *stage = ring + (st % SMALL_STAGES) * SMALL_STAGE_ELEMS;
#pragma unroll
                for (int u = 0; u < SMALL_STAGE; u++) {
                    int c = c0 + st * SMALL_STAGE + u;
                    if (c < c1) {
                        mt_cp_async16(stage + u * 256 + lane * 8, W + (size_t)c * 256 + lane * 8, 16);
                        if (lane < 16)
                            mt_cp_async16(stage + SMALL_STAGE * 256 + u * 128 + lane * 8, xcopy ? xcopy + c * 16 : a.X,
                                          xcopy ? 16 : 0);
                    }
                }
            }
            mt_cp_async_commit();
        };
#pragma unroll
        for (int st = 0; st < SMALL_STAGES - 1; st++) issue(st);
        for (int st = 0; st < n_st; st++) {
            mt_cp_async_wait<SMALL_STAGES - 2>();
            __syncwarp();   // stage st has landed for every lane (X rows come from other lanes), and
                            // every lane is done with stage st - 1, whose slot is refilled now
            issue(st + SMALL_STAGES - 1);
            const bf16 *stage = ring + (st % SMALL_STAGES) * SMALL_STAGE_ELEMS;
#pragma unroll
            for (int u = 0; u < SMALL_STAGE; u++) {
                int c = c0 + st * SMALL_STAGE + u;
                if (c >= c1) break;
                uint4 af = *reinterpret_cast<const uint4 *>(stage + u * 256 + lane * 8);
                const uint32_t *A = reinterpret_cast<const uint32_t *>(&af);
                const bf16 *xs = stage + SMALL_STAGE * 256 + u * 128 + tq * 16 + 2 * t4;
                uint32_t b0[2] = {*reinterpret_cast<const uint32_t *>(xs), *reinterpret_cast<const uint32_t *>(xs + 8)};
                mt_mma(acc[0], A, b0);
#pragma unroll
                for (int j = 1; j < SMALL_ROWS / 8; j++) {
                    if (j >= nt) break;
                    uint32_t b[2] = {0u, 0u};
                    if (xr[j]) {
                        b[0] = *reinterpret_cast<const uint32_t *>(xr[j] + c * 16);
                        b[1] = *reinterpret_cast<const uint32_t *>(xr[j] + c * 16 + 8);
                    }
                    mt_mma(acc[j], A, b);
                }
            }
        }
        mt_cp_async_wait<0>();
    }
    __syncthreads();   // the rings are done: their memory now holds the warps' partial sums
    float (*part)[SMALL_ROWS / 8][128] = reinterpret_cast<float (*)[SMALL_ROWS / 8][128]>(smem_raw);
    if (warp < S) {
#pragma unroll
        for (int j = 0; j < SMALL_ROWS / 8; j++) {
            if (j >= nt) break;
            part[warp][j][tq * 8 + 2 * t4] = acc[j][0];
            part[warp][j][tq * 8 + 2 * t4 + 1] = acc[j][1];
            part[warp][j][(tq + 8) * 8 + 2 * t4] = acc[j][2];
            part[warp][j][(tq + 8) * 8 + 2 * t4 + 1] = acc[j][3];
        }
    }
    __syncthreads();
    if (EPI == MT_EPI_SWIGLU) {
        for (int e = threadIdx.x; e < nt * 64; e += blockDim.x) {
            int j = e >> 6, r = (e & 63) >> 3, n = e & 7;
            int i = j * 8 + n;
            if (i >= wk.nrows) continue;
            float gate = 0.0f, up = 0.0f;
            for (int w = 0; w < S; w++) {
                gate += part[w][j][r * 8 + n];
                up += part[w][j][(r + 8) * 8 + n];
            }
            int col = rt * 8 + r;
            if (col < a.W.rows / 2) store_swiglu(a, wk.row0 + i, col, gate, up);
        }
    } else {
        for (int e = threadIdx.x; e < nt * 128; e += blockDim.x) {
            int j = e >> 7, r = (e & 127) >> 3, n = e & 7;
            int i = j * 8 + n, col = rt * 16 + r;
            if (i >= wk.nrows || col >= a.W.rows) continue;
            float tot = 0.0f;
            for (int w = 0; w < S; w++) tot += part[w][j][r * 8 + n];
            store_out<EPI>(a, wk.row0 + i, col, tot);
        }
    }
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

template <int EPI, int MT>
__global__ void __launch_bounds__(256) linear_large_kernel(const mt_linear_args a) {
    using Shape = LargeShape<MT>;
    constexpr int BN = Shape::BN;
    extern __shared__ uint4 smem_raw[];
    bf16 *As = reinterpret_cast<bf16 *>(smem_raw);
    bf16 *Bs = As + LG_STAGES * LG_A_ELEMS;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int tq = lane >> 2, t4 = lane & 3;
    // warp owns row tiles wm*MT .. wm*MT+MT-1 and X rows 32wn .. 32wn+31
    const int wm = warp % Shape::WARPS_M, wn = warp / Shape::WARPS_M;

    Work wk;
    if (a.group_offsets) {
        int tile = blockIdx.y;
        if (tile >= a.tile_offsets[a.n_groups]) return;
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
        wk.row0 = blockIdx.y * BN;
        wk.nrows = min(BN, a.n - wk.row0);
    }
    const int C = a.W.K / 16, S = mt_k_slices(a.W.K);
    const int rt0 = blockIdx.x * LG_RT, n_rt = min(LG_RT, a.W.rows_pad / 16 - rt0);
    const bf16 *W = a.W.w + (size_t)wk.g * a.group_stride + (size_t)rt0 * C * 256;
    const int n_kt = (C + LG_KC - 1) / LG_KC;

    // The staged X rows this thread copies: vectors tid + 256h of 8 per row.
    constexpr int XV = BN * 8 / 256;
    const bf16 *xsrc[XV];
#pragma unroll
    for (int h = 0; h < XV; h++) {
        int r = (tid + h * 256) >> 3;
        xsrc[h] = r < wk.nrows ? a.X + (size_t)src_row(a, wk.row0 + r) * a.ldx + ((tid + h * 256) & 7) * 8 : nullptr;
    }
    auto load_stage = [&](int stage, int kt) {
        bf16 *as = As + stage * LG_A_ELEMS;
        bf16 *bs = Bs + stage * Shape::B_ELEMS;
#pragma unroll
        for (int h = 0; h < 4; h++) {
            int v = tid + h * 256;
            int rl = v >> 7, kc = (v >> 5) & 3, lv = v & 31;
            int c = kt * LG_KC + kc;
            bool ok = rl < n_rt && c < C;
            const bf16 *src = ok ? W + ((size_t)rl * C + c) * 256 + lv * 8 : a.W.w;
            mt_cp_async16(as + (rl * LG_KC + kc) * 256 + lv * 8, src, ok ? 16 : 0);
        }
#pragma unroll
        for (int h = 0; h < XV; h++) {
            int v = tid + h * 256;
            int r = v >> 3, q = v & 7;
            int k = kt * LG_KC * 16 + q * 8;
            bool ok = xsrc[h] && k < a.W.K;
            const bf16 *src = ok ? xsrc[h] + kt * LG_KC * 16 : a.X;
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
        __syncthreads();
        int nk = kt + LG_STAGES - 1;
        if (nk < n_kt) load_stage(nk % LG_STAGES, nk);
        mt_cp_async_commit();
        const bf16 *as = As + (kt % LG_STAGES) * LG_A_ELEMS;
        const bf16 *bs = Bs + (kt % LG_STAGES) * Shape::B_ELEMS;
#pragma unroll
        for (int kc = 0; kc < LG_KC; kc++) {
            int c = kt * LG_KC + kc;
            if (c >= C) break;
            uint4 af[MT];
#pragma unroll
            for (int m = 0; m < MT; m++) af[m] = *reinterpret_cast<const uint4 *>(as + ((wm * MT + m) * LG_KC + kc) * 256 + lane * 8);
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
                    mt_mma(acc[m][2 * jp], reinterpret_cast<const uint32_t *>(&af[m]), b0);
                    mt_mma(acc[m][2 * jp + 1], reinterpret_cast<const uint32_t *>(&af[m]), b1);
                }
            }
            if (c + 1 == slice_end) {
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

template <int EPI>
void launch_small(const mt_linear_args &a, cudaStream_t st) {
    int work = a.group_offsets ? a.max_work : (a.n + SMALL_ROWS - 1) / SMALL_ROWS;
    if (work <= 0) return;
    static bool configured = false;
    if (!configured) {
        cudaFuncSetAttribute(linear_small_kernel<EPI>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMALL_SMEM);
        configured = true;
    }
    dim3 grid(a.W.rows_pad / 16, work);
    linear_small_kernel<EPI><<<grid, 256, SMALL_SMEM, st>>>(a);
}

template <int EPI, int MT>
void launch_large_shape(const mt_linear_args &a, cudaStream_t st) {
    using Shape = LargeShape<MT>;
    static bool configured = false;
    if (!configured) {
        cudaFuncSetAttribute(linear_large_kernel<EPI, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)Shape::SMEM);
        configured = true;
    }
    int work = a.group_offsets ? a.max_work : (a.n + Shape::BN - 1) / Shape::BN;
    if (work <= 0) return;
    dim3 grid((a.W.rows_pad / 16 + LG_RT - 1) / LG_RT, work);
    linear_large_kernel<EPI, MT><<<grid, 256, Shape::SMEM, st>>>(a);
}

template <int EPI>
void launch_large(const mt_linear_args &a, cudaStream_t st) {
    if (a.tile_rows == 128) launch_large_shape<EPI, 4>(a, st);
    else launch_large_shape<EPI, 2>(a, st);
}

}  // namespace

void mt_cuda_linear_small(const mt_linear_args *a, cudaStream_t st) {
    switch (a->epilogue) {
    case MT_EPI_F32: launch_small<MT_EPI_F32>(*a, st); break;
    case MT_EPI_F32_ADD: launch_small<MT_EPI_F32_ADD>(*a, st); break;
    case MT_EPI_BF16: launch_small<MT_EPI_BF16>(*a, st); break;
    default: launch_small<MT_EPI_SWIGLU>(*a, st); break;
    }
}

void mt_cuda_linear_large(const mt_linear_args *a, cudaStream_t st) {
    if (mt_cuda_wgmma_usable()) {   // Hopper wgmma kernel when enabled (linear_wgmma.cu), same bits
        mt_cuda_linear_wgmma(a, st);
        return;
    }
    switch (a->epilogue) {
    case MT_EPI_F32: launch_large<MT_EPI_F32>(*a, st); break;
    case MT_EPI_F32_ADD: launch_large<MT_EPI_F32_ADD>(*a, st); break;
    case MT_EPI_BF16: launch_large<MT_EPI_BF16>(*a, st); break;
    default: launch_large<MT_EPI_SWIGLU>(*a, st); break;
    }
}
