// The large product path on Hopper (sm_90a): warpgroup MMAs (wgmma) fed by the copy engine, with the
// same arithmetic as linear_large_kernel (linear.cu), so the same bits.
//
// A block is persistent: it takes 128-weight-row x 128-X-row tiles t = blockIdx.x, + gridDim.x, ...
// (weight block t % nx of X tile t / nx) until the tiles run out. One thread of warpgroup 0 fills a
// ring of shared-memory stages, each 4 chunks of 16 k, with two tensor copies per stage that
// complete on the stage's "full" barrier:
//  - weights: a box of 8 row tiles x 4 chunks of the tiled layout, seen as a tensor
//    [group][chunk][row tile][256] so that the stage holds [chunk][row tile] tiles: 8-row groups
//    256 bytes apart, k halves 128;
//  - X: 128 contiguous rows x 64 k, written with the 128-byte swizzle (gathered X rows are
//    gathered into sorted order first: mt_cuda_gather_rows; one tensor copy per row measured 4x
//    slower, the copy engine's per-copy cost).
// Warpgroups 1 and 2 each own 64 weight rows: one m64n128k16 step per chunk, both operands read by
// the tensor cores from the stage; after each stage's steps they wait for the previous stage's
// steps and hand its slot back on the slot's "empty" barrier. The producer runs up to 6 stages
// ahead, across tile boundaries, so the next tile's data arrives during this tile's epilogue.
//
// Arithmetic, as in the other paths: per K slice, an accumulator that starts at zero takes one
// step per chunk in increasing order; at the slice's last chunk the warpgroup waits for its steps,
// adds the accumulator to the running total and clears it. One wgmma step gives the same bits as
// the m16n8k16 MMAs over the same rows (tests/test_cuda_wgmma.cu checks that on the device), so
// every output equals the small and mma.sync paths' bit for bit.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/linear_common.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/wgmma.cuh"

namespace {

constexpr int TW_RT = 8;                                  // weight row tiles per block tile (128 rows)
constexpr int TW_BN = 128;                                // X rows per block tile
constexpr int TW_KC = 4;                                  // 16-wide chunks per stage: 128 bytes of an X row
constexpr int TW_STAGES = 6;
constexpr int TW_A_BYTES = TW_RT * TW_KC * 512;           // weights of a stage: [chunk][row tile] tiles
constexpr int TW_B_BYTES = TW_BN * 128;                   // X rows of a stage, 128-byte swizzle
constexpr int TW_STAGE_BYTES = TW_A_BYTES + TW_B_BYTES;
constexpr size_t TW_SMEM = (size_t)TW_STAGES * TW_STAGE_BYTES + 1024;   // + aligning stages to 1024
constexpr int TW_THREADS = 384;                           // producer warpgroup + 2 consumer warpgroups
constexpr int TW_CONSUMER_WARPS = 8;

__device__ __forceinline__ void tensor_copy_2d(void *smem, const CUtensorMap *map, int x, int y, uint64_t *bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
            (uint32_t)__cvta_generic_to_shared(smem)),
        "l"(map), "r"(x), "r"(y), "r"((uint32_t)__cvta_generic_to_shared(bar))
        : "memory");
}
__device__ __forceinline__ void tensor_copy_4d(void *smem, const CUtensorMap *map, int x, int y, int z, int w, uint64_t *bar,
                                               uint64_t policy) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, {%2, %3, %4, "
        "%5}], [%6], %7;\n" ::"r"((uint32_t)__cvta_generic_to_shared(smem)),
        "l"(map), "r"(x), "r"(y), "r"(z), "r"(w), "r"((uint32_t)__cvta_generic_to_shared(bar)), "l"(policy)
        : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)) : "memory");
}

// CPS: chunks per K slice (C / mt_k_slices(K)).
template <int EPI, int CPS>
__global__ void __launch_bounds__(TW_THREADS, 1)
    linear_tma_kernel(const __grid_constant__ CUtensorMap wmap, const __grid_constant__ CUtensorMap xmap,
                      const mt_linear_args a, int nx, int n_tiles) {
    MT_TIMELINE_KERNEL(MT_TL_LINEAR_WGMMA);
    extern __shared__ uint8_t smem_raw[];
    __shared__ __align__(8) uint64_t full[TW_STAGES], empty[TW_STAGES];
    // the swizzled X rows need stages on 1024-byte boundaries (the swizzle follows address bits)
    const uint32_t raw_at = (uint32_t)__cvta_generic_to_shared(smem_raw);
    uint8_t *stages = smem_raw + ((1024 - (raw_at & 1023)) & 1023);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int C = a.W.K / 16, n_kt = C / TW_KC;

    if (tid == 0) {
        for (int s = 0; s < TW_STAGES; s++) {
            mt_mbar_init(&full[s], 1);
            mt_mbar_init(&empty[s], TW_CONSUMER_WARPS);
        }
        mt_mbar_init_fence();
    }
    __syncthreads();
    mt_grid_dependency_wait();

    if (warp < 4) {   // producer warpgroup: one thread issues every copy
        if (tid != 0) return;
        const uint64_t wpolicy = mt_weight_policy(a.weights_once);
        int it = 0;   // stages filled so far, over all of this block's tiles
        for (int t = blockIdx.x; t < n_tiles; t += gridDim.x) {
            Work wk;
            if (!large_tile_work_at(a, TW_BN, t / nx, wk)) break;
            const int rt0 = (t % nx) * TW_RT;
            for (int kt = 0; kt < n_kt; kt++, it++) {
                const int slot = it % TW_STAGES;
                if (it >= TW_STAGES) mt_mbar_wait(&empty[slot], ((it / TW_STAGES) - 1) & 1);
                uint8_t *as = stages + slot * TW_STAGE_BYTES, *bs = as + TW_A_BYTES;
                // whole boxes arrive, rows past the matrices' ends as zeros
                mt_mbar_expect(&full[slot], TW_STAGE_BYTES);
                tensor_copy_4d(as, &wmap, 0, rt0, kt * TW_KC, wk.g, &full[slot], wpolicy);
                tensor_copy_2d(bs, &xmap, kt * 64, wk.row0, &full[slot]);
            }
        }
        return;
    }

    // consumers: warp cw (0..7) of warpgroup wg owns weight rows 16 cw .. 16 cw + 15 of the tile.
    // The steps run in periods of PC chunks (whole stages and whole slices), unrolled, so where a
    // slice ends is known at compile time: no branch between steps touches the accumulators.
    constexpr int PC = CPS % TW_KC == 0 ? CPS : CPS % 2 == 0 ? 2 * CPS : 4 * CPS;   // lcm(CPS, TW_KC)
    constexpr int PST = PC / TW_KC;
    const int cw = warp - 4, wg = cw >> 2, tq = lane >> 2, t4 = lane & 3;
    float acc[64], tot[64];
    int it = 0;
    for (int t = blockIdx.x; t < n_tiles; t += gridDim.x) {
        Work wk;
        if (!large_tile_work_at(a, TW_BN, t / nx, wk)) break;
#pragma unroll
        for (int i = 0; i < 64; i++) acc[i] = tot[i] = 0.0f;
        int held = -1;   // the slot whose steps may still run
        for (int per = 0; per < C / PC; per++) {
#pragma unroll
            for (int ps = 0; ps < PST; ps++, it++) {
                const int slot = it % TW_STAGES;
                mt_mbar_wait(&full[slot], (it / TW_STAGES) & 1);
                const uint8_t *as = stages + slot * TW_STAGE_BYTES, *bs = as + TW_A_BYTES;
                mt_wgmma_pin(acc);
                mt_wgmma_fence();
#pragma unroll
                for (int kc = 0; kc < TW_KC; kc++) {
                    const int c = ps * TW_KC + kc;   // chunk within the period
                    uint64_t a_desc = mt_wgmma_desc(as + (kc * TW_RT + 4 * wg) * 512, 128, 256);
                    uint64_t b_desc = mt_wgmma_desc_sw128(bs + kc * 32);
                    // a slice's first step starts the accumulator from zero (scale_d 0: d = a . b)
                    mt_wgmma_n128(acc, a_desc, b_desc, c % CPS != 0);
                    if ((c + 1) % CPS == 0) {   // a slice's last chunk
                        mt_wgmma_commit();
                        mt_wgmma_wait<0>();
                        mt_wgmma_pin(acc);
#pragma unroll
                        for (int i = 0; i < 64; i++) tot[i] += acc[i];
                        mt_wgmma_pin(acc);
                        mt_wgmma_fence();   // the next steps may use acc again
                    }
                }
                mt_wgmma_commit();
                mt_wgmma_wait<1>();   // the previous stage's steps are done: its slot goes back
                mt_wgmma_pin(acc);
                if (held >= 0 && lane == 0) mbar_arrive(&empty[held]);
                held = slot;
            }
        }
        mt_wgmma_wait<0>();
        if (held >= 0 && lane == 0) mbar_arrive(&empty[held]);

        // tot[4j + q]: weight row tq (q < 2) or tq + 8 (q >= 2) of this warp's tile, X row 8j + 2 t4 + q % 2
        const int rt = (t % nx) * TW_RT + cw;
        if constexpr (EPI == MT_EPI_F32_ADD) {
            // every old value loaded before any store (a load after a store could alias it, so the
            // compiler would wait out each load in turn); acc is free now
            float *out = (float *)a.out;
            const int col = rt * 16 + tq;
#pragma unroll
            for (int q = 0; q < 64; q++) {
                int i = (q >> 2) * 8 + 2 * t4 + (q & 1), c = col + (q & 2) * 4;
                acc[q] = i < wk.nrows && c < a.W.rows ? out[(size_t)(wk.row0 + i) * a.ldo + c] : 0.0f;
            }
#pragma unroll
            for (int q = 0; q < 64; q++) {
                int i = (q >> 2) * 8 + 2 * t4 + (q & 1), c = col + (q & 2) * 4;
                if (i < wk.nrows && c < a.W.rows) out[(size_t)(wk.row0 + i) * a.ldo + c] = acc[q] + tot[q];
            }
        } else {
#pragma unroll
            for (int j = 0; j < TW_BN / 8; j++) {
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
    }
}

// cuTensorMapEncodeTiled from the driver, found through the runtime (no link against libcuda).
PFN_cuTensorMapEncodeTiled_v12000 encode_tiled() {
    static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
    static bool looked = false;
    if (!looked) {
        looked = true;
        void *p = nullptr;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) == cudaSuccess &&
            q == cudaDriverEntryPointSuccess)
            fn = (PFN_cuTensorMapEncodeTiled_v12000)p;
    }
    return fn;
}

// A tensor map the driver refused: said once on stderr (the product then takes the mma.sync path).
void report_encode(const char *what, CUresult r) {
    static bool said = false;
    if (r == CUDA_SUCCESS || said) return;
    said = true;
    fprintf(stderr, "moetrace: cuTensorMapEncodeTiled refused the %s map (CUresult %d); the wgmma path is not used\n", what,
            (int)r);
}

// The tensor map of X: [x_rows][K] bf16, row stride ldx, boxes of 64 k x 128 rows, 128-byte
// swizzle. False when the copy engine cannot take this X.
bool x_tensor_map(const mt_linear_args &a, CUtensorMap *map) {
    PFN_cuTensorMapEncodeTiled_v12000 encode = encode_tiled();
    if (!encode || a.x_rows <= 0 || a.ldx % 8 != 0 || ((uintptr_t)a.X & 15) != 0) return false;
    cuuint64_t dims[2] = {(cuuint64_t)a.W.K, (cuuint64_t)a.x_rows};
    cuuint64_t strides[1] = {(cuuint64_t)a.ldx * sizeof(bf16)};
    cuuint32_t box[2] = {64, TW_BN}, elem_strides[2] = {1, 1};
    CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)a.X, dims, strides, box, elem_strides,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    report_encode("X", r);
    return r == CUDA_SUCCESS;
}

// The tensor map of the weights: the tiled layout as [group][chunk][row tile][256 elements] (row
// tiles C * 512 bytes apart, chunks 512), boxes of 4 chunks x 8 row tiles, so a box lands as
// [chunk][row tile] tiles.
bool w_tensor_map(const mt_linear_args &a, CUtensorMap *map) {
    PFN_cuTensorMapEncodeTiled_v12000 encode = encode_tiled();
    if (!encode || ((uintptr_t)a.W.w & 15) != 0) return false;
    const int C = a.W.K / 16, groups = a.group_offsets ? a.n_groups : 1;
    cuuint64_t dims[4] = {256, (cuuint64_t)(a.W.rows_pad / 16), (cuuint64_t)C, (cuuint64_t)groups};
    cuuint64_t strides[3] = {(cuuint64_t)C * 512, 512, (cuuint64_t)(groups > 1 ? a.group_stride : (size_t)C * a.W.rows_pad) * 2};
    cuuint32_t box[4] = {256, TW_RT, TW_KC, 1}, elem_strides[4] = {1, 1, 1, 1};
    CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, (void *)a.W.w, dims, strides, box, elem_strides,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    report_encode("weights", r);
    return r == CUDA_SUCCESS;
}

template <int EPI, int CPS>
void launch_cps(const mt_linear_args &a, const CUtensorMap &wmap, const CUtensorMap &xmap, cudaStream_t st) {
    static bool configured = false;
    if (!configured) {
        cudaFuncSetAttribute(linear_tma_kernel<EPI, CPS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)TW_SMEM);
        configured = true;
    }
    const int nx = (a.W.rows_pad / 16 + TW_RT - 1) / TW_RT;
    const int ny = a.group_offsets ? a.max_work : (a.n + TW_BN - 1) / TW_BN;
    if (ny <= 0) return;
    const int n_tiles = nx * ny, blocks = n_tiles < mt_cuda_sm_count() ? n_tiles : mt_cuda_sm_count();
    mt_launch(linear_tma_kernel<EPI, CPS>, dim3(blocks), dim3(TW_THREADS), TW_SMEM, st, wmap, xmap, a, nx, n_tiles);
}

// Chunks per K slice when the kernel takes this K (8 slices of whole periods), else 0.
int chunks_per_slice(int K) {
    const int C = K / 16, S = mt_k_slices(K), cps = C / S;
    if (K % (16 * TW_KC) != 0 || C % S != 0) return 0;
    return cps == 6 || cps == 8 || cps == 16 || cps == 32 ? cps : 0;
}

template <int EPI>
bool launch(const mt_linear_args &a, cudaStream_t st) {
    // 128-row tiles only (grouped: the sort counted 128-row tiles), contiguous X rows
    const int cps = chunks_per_slice(a.W.K);
    if (!cps || a.src_rows || (a.group_offsets && a.tile_rows != TW_BN)) return false;
    CUtensorMap wmap, xmap;
    if (!w_tensor_map(a, &wmap) || !x_tensor_map(a, &xmap)) return false;
    if (cps == 6) launch_cps<EPI, 6>(a, wmap, xmap, st);
    else if (cps == 8) launch_cps<EPI, 8>(a, wmap, xmap, st);
    else if (cps == 16) launch_cps<EPI, 16>(a, wmap, xmap, st);
    else launch_cps<EPI, 32>(a, wmap, xmap, st);
    return true;
}

int wgmma_enabled = -1;   // -1: as MOETRACE_CUDA_WGMMA says (on unless 0)

struct WgmmaPath {
    template <int EPI> static bool run(const mt_linear_args &a, cudaStream_t st) { return launch<EPI>(a, st); }
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
        wgmma_enabled = !(env && strcmp(env, "0") == 0);
    }
    return wgmma_enabled && mt_cuda_wgmma_supported();
}

int mt_cuda_wgmma_takes_grouped(int K, int tile_rows) {
    return mt_cuda_wgmma_usable() && tile_rows == TW_BN && chunks_per_slice(K) != 0;
}

int mt_cuda_linear_wgmma(const mt_linear_args *a, cudaStream_t st) { return by_epilogue<WgmmaPath>(*a, st); }
