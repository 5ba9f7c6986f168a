// The large product path on Hopper warpgroup instructions (wgmma, sm_90a): the same arithmetic as
// linear_large_kernel (linear.cu), so the same bits, with the tensor cores fed asynchronously.
//
// A block computes 128 weight rows x BN X rows (BN = 64 or 128) with two warpgroups of 64 weight
// rows each. Every 16-wide chunk of K is one m64nBNk16 step per warpgroup, both operands read by
// the tensor cores from shared memory: the weights' core matrices (the tiled layout's, each 16-byte
// row copied to where 8-row groups are 128 bytes apart) and the X rows. Weights and X rows stream
// through 5 shared-memory stages of 4 chunks each (cp.async).
//
// Arithmetic, as in the other paths: per K slice, an accumulator that starts at zero takes one
// step per chunk in increasing order; at the slice's last chunk the warpgroup waits for its steps
// to finish, adds the accumulator to the running total and clears it. One wgmma step gives the
// same bits as the m16n8k16 MMAs over the same rows (tests/test_cuda_wgmma.cu checks that on the
// device), so every output equals the small and mma.sync paths' bit for bit.
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/linear_common.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/wgmma.cuh"

namespace {

constexpr int WG_RT = 8;   // row tiles per block (128 weight rows)

// BN X rows per block, KC 16-wide chunks per shared-memory stage, STAGES stages (measured on the
// H200: 8 chunks x 3 stages, or separate registers for alternate stages' weight fragments, ran no
// faster than 4 x 5).
template <int BN_, int KC_ = 4, int STAGES_ = 5>
struct WgShape {
    static constexpr int BN = BN_, KC = KC_, STAGES = STAGES_, AHEAD = STAGES_ - 2;
    static constexpr int A_ELEMS = WG_RT * KC * 256;
    // X rows of a stage: for chunk kc and k half h (8 k each), BN rows of 16 bytes, so core
    // matrices of 8 rows are 128 bytes apart along N and BN * 16 bytes apart along K.
    static constexpr int B_ELEMS = BN * KC * 16;
    static constexpr int STAGE_ELEMS = A_ELEMS + B_ELEMS;
    static constexpr size_t SMEM = (size_t)STAGES * STAGE_ELEMS * sizeof(bf16);
    static constexpr int NACC = BN / 2;   // accumulator registers per thread of an m64nBN step
};

template <int BN>
__device__ __forceinline__ void wgmma_step(float (&d)[BN / 2], uint64_t a_desc, uint64_t b_desc, int scale_d);
template <>
__device__ __forceinline__ void wgmma_step<64>(float (&d)[32], uint64_t a_desc, uint64_t b_desc, int scale_d) {
    mt_wgmma_n64(d, a_desc, b_desc, scale_d);
}
template <>
__device__ __forceinline__ void wgmma_step<128>(float (&d)[64], uint64_t a_desc, uint64_t b_desc, int scale_d) {
    mt_wgmma_n128(d, a_desc, b_desc, scale_d);
}

template <int EPI, class Shape>
__global__ void __launch_bounds__(256, 1) linear_wgmma_kernel(const mt_linear_args a) {
    constexpr int NACC = Shape::NACC, BN = Shape::BN, WG_KC = Shape::KC, WG_STAGES = Shape::STAGES;
    constexpr int WG_AHEAD = Shape::AHEAD, WG_A_ELEMS = Shape::A_ELEMS;
    extern __shared__ uint4 smem_raw[];
    bf16 *smem = reinterpret_cast<bf16 *>(smem_raw);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int tq = lane >> 2, t4 = lane & 3;

    Work wk;
    if (!large_tile_work(a, BN, wk)) return;
    const int C = a.W.K / 16, S = mt_k_slices(a.W.K);
    const int rt0 = blockIdx.x * WG_RT, n_rt = min(WG_RT, a.W.rows_pad / 16 - rt0);
    const bf16 *W = a.W.w + (size_t)wk.g * a.group_stride + (size_t)rt0 * C * 256;
    const int n_kt = (C + WG_KC - 1) / WG_KC;

    // X copies: piece h of this thread is 16 bytes of X row xr (a 16-row block per warp and chunk),
    // k half (lane & 1) of chunk (warp + 8h) / TB of the stage.
    constexpr int TB = BN / 16;
    constexpr int XV = BN * WG_KC * 2 / 256;
    const int xr = (warp % TB) * 16 + (lane >> 1), xh = lane & 1;
    const bf16 *xsrc = xr < wk.nrows ? a.X + (size_t)src_row(a, wk.row0 + xr) * a.ldx + xh * 8 : nullptr;

    // A stage's weights: for chunk kc and k half h, the 16 8-row groups' core matrices side by side
    // (128 bytes apart, 2 KB per (kc, h)); a tile's 16-byte row lv is row lv % 8 of its core
    // matrix lv / 8 = 2 h + (8-row group within the tile).
    auto load_stage = [&](int slot, int kt) {
        bf16 *as = smem + slot * Shape::STAGE_ELEMS;
        bf16 *bs = as + WG_A_ELEMS;
#pragma unroll
        for (int h = 0; h < WG_KC; h++) {   // weight tiles: 8 row tiles x KC chunks x 32 rows of 16 bytes
            int v = tid + h * 256;
            int rl = v / (WG_KC * 32), kc = (v >> 5) % WG_KC, lv = v & 31;
            int c = kt * WG_KC + kc, cm = lv >> 3;
            bool ok = rl < n_rt && c < C;
            const bf16 *src = ok ? W + ((size_t)rl * C + c) * 256 + lv * 8 : a.W.w;
            mt_cp_async16(as + ((kc * 2 + (cm >> 1)) * 16 + rl * 2 + (cm & 1)) * 64 + (lv & 7) * 8, src, ok ? 16 : 0);
        }
#pragma unroll
        for (int h = 0; h < XV; h++) {
            int kc = (warp + 8 * h) / TB;
            int c = kt * WG_KC + kc;
            bool ok = xsrc && c < C;
            mt_cp_async16(bs + ((kc * 2 + xh) * BN + xr) * 8, ok ? xsrc + c * 16 : a.X, ok ? 16 : 0);
        }
    };

    float acc[NACC], tot[NACC];
#pragma unroll
    for (int i = 0; i < NACC; i++) acc[i] = tot[i] = 0.0f;
    int slice = 0, slice_start = 0, slice_end = C / S;

#pragma unroll
    for (int s = 0; s < WG_AHEAD; s++) {
        if (s < n_kt) load_stage(s, s);
        mt_cp_async_commit();
    }
    const int wg = warp >> 2;   // warpgroup: weight rows 64 wg .. 64 wg + 63 (8-row groups 8 wg ..)
    auto step = [&](int kt) {
        mt_cp_async_wait<WG_AHEAD - 1>();
        mt_fence_proxy_async();
        // Stage kt has landed for every thread; the steps of stage kt - 2 have finished in both
        // warpgroups (the wait at the end of the last stage), so its slot is refilled now.
        __syncthreads();
        if (kt + WG_AHEAD < n_kt) load_stage((kt + WG_AHEAD) % WG_STAGES, kt + WG_AHEAD);
        mt_cp_async_commit();
        const bf16 *as = smem + (kt % WG_STAGES) * Shape::STAGE_ELEMS;
        const bf16 *bs = as + WG_A_ELEMS;
        mt_wgmma_pin(acc);
        mt_wgmma_fence();
#pragma unroll
        for (int kc = 0; kc < WG_KC; kc++) {
            int c = kt * WG_KC + kc;
            if (c >= C) break;
            uint64_t a_desc = mt_wgmma_desc(as + (kc * 2 * 16 + 8 * wg) * 64, 16 * 128, 128);
            uint64_t b_desc = mt_wgmma_desc(bs + kc * 2 * BN * 8, BN * 16, 128);
            // a slice's first step starts the accumulator from zero (scale_d 0: d = a . b)
            wgmma_step<BN>(acc, a_desc, b_desc, c != slice_start);
            if (c + 1 == slice_end) {   // the same in every thread of the block
                mt_wgmma_commit();
                mt_wgmma_wait<0>();
                mt_wgmma_pin(acc);
#pragma unroll
                for (int i = 0; i < NACC; i++) tot[i] += acc[i];
                mt_wgmma_pin(acc);
                mt_wgmma_fence();   // the next steps may use acc again
                slice++;
                slice_start = slice_end;
                slice_end = (slice + 1) * C / S;
            }
        }
        mt_wgmma_commit();
        mt_wgmma_wait<1>();
        mt_wgmma_pin(acc);
    };
    for (int kt = 0; kt < n_kt; kt++) step(kt);
    mt_wgmma_wait<0>();
    mt_cp_async_wait<0>();

    // tot[4j + q]: weight row tq (q < 2) or tq + 8 (q >= 2) of this warp's tile, X row 8j + 2 t4 + q % 2
    const int rt = rt0 + warp;
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int i = j * 8 + 2 * t4 + h;
            if (i >= wk.nrows) continue;
            int p = wk.row0 + i;
            if (EPI == MT_EPI_SWIGLU) {
                int col = rt * 8 + tq;
                if (col < a.W.rows / 2) store_swiglu(a, p, col, tot[4 * j + h], tot[4 * j + 2 + h]);
            } else {
                int col = rt * 16 + tq;
                if (col < a.W.rows) store_out<EPI>(a, p, col, tot[4 * j + h]);
                if (col + 8 < a.W.rows) store_out<EPI>(a, p, col + 8, tot[4 * j + 2 + h]);
            }
        }
    }
}

template <int EPI, class Shape>
void launch_shape(const mt_linear_args &a, cudaStream_t st) {
    static bool configured = false;
    if (!configured) {
        cudaFuncSetAttribute(linear_wgmma_kernel<EPI, Shape>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)Shape::SMEM);
        configured = true;
    }
    int work = a.group_offsets ? a.max_work : (a.n + Shape::BN - 1) / Shape::BN;
    if (work <= 0) return;
    dim3 grid((a.W.rows_pad / 16 + WG_RT - 1) / WG_RT, work);
    linear_wgmma_kernel<EPI, Shape><<<grid, 256, Shape::SMEM, st>>>(a);
}


template <int EPI>
void launch(const mt_linear_args &a, cudaStream_t st) {
    // grouped: the sort's tile size; dense: any tile gives the same bits, so 128 but for small n
    int bn = a.group_offsets ? a.tile_rows : (a.n <= 64 ? 64 : 128);
    if (bn == 128) launch_shape<EPI, WgShape<128>>(a, st);
    else launch_shape<EPI, WgShape<64>>(a, st);
}

int wgmma_enabled = -1;   // -1: as MOETRACE_CUDA_WGMMA says (off unless 1)

struct WgmmaPath {
    template <int EPI> static void run(const mt_linear_args &a, cudaStream_t st) { launch<EPI>(a, st); }
};

}  // namespace

void mt_cuda_wgmma_set_enabled(int on) { wgmma_enabled = on; }

int mt_cuda_wgmma_supported(void) {
    static int device_ok = -1;
    if (device_ok < 0) {
        // The sm_90a code runs on compute capability 9.0 devices only; elsewhere the compute_90
        // PTX (without wgmma) would be compiled, so the mma.sync kernels are used instead.
        int dev = 0, major = 0, minor = 0;
        device_ok = cudaGetDevice(&dev) == cudaSuccess &&
                    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
                    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
                    major == 9 && minor == 0;
    }
    return device_ok;
}

int mt_cuda_wgmma_usable(void) {
    if (wgmma_enabled < 0) {
        const char *env = getenv("MOETRACE_CUDA_WGMMA");
        wgmma_enabled = env && strcmp(env, "1") == 0;
    }
    return wgmma_enabled && mt_cuda_wgmma_supported();
}

void mt_cuda_linear_wgmma(const mt_linear_args *a, cudaStream_t st) { by_epilogue<WgmmaPath>(*a, st); }
