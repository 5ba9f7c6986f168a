// RMSNorm of one token's row by a whole block, shared by every kernel that normalises a row (the
// norm launch, the MoE combine, the decode router): the same code everywhere, so a row's bits never
// depend on which launch computed it. Device code only; included by .cu files.
#ifndef MT_KERNELS_CUDA_ROW_NORM_CUH
#define MT_KERNELS_CUDA_ROW_NORM_CUH

#include "kernels/cuda/cuda_kernels.h"

// The norm launch's block width for a row of H (the order its sums are added in) and the
// 4-vectors each thread owns: 1 .. 4, or 0 past that.
static inline __host__ __device__ int rmsnorm_threads(int H) {
    int threads = (H / 4 + 31) / 32 * 32;
    return threads > 512 ? 512 : threads;
}
static inline __host__ __device__ int rmsnorm_vecs(int H) {
    int threads = rmsnorm_threads(H), v = (H / 4 + threads - 1) / threads;
    return v <= 4 ? v : 0;
}

// The MoE combine's arithmetic on one 4-vector of a token's row, shared by the combine launch and
// the product that folds it in (linear.cu), so both give the same bits: acc starts at zero and
// takes w_j * e_j over the token's expert slots in order (then the gated shared expert); the
// result is h + acc.
__device__ __forceinline__ void combine_fma(float4 &acc, float w, float4 e) {
    acc.x += w * e.x;
    acc.y += w * e.y;
    acc.z += w * e.z;
    acc.w += w * e.w;
}
__device__ __forceinline__ float4 combine_sum(float4 h, float4 acc) {
    h.x += acc.x;
    h.y += acc.y;
    h.z += acc.z;
    h.w += acc.w;
    return h;
}
__device__ __forceinline__ float combine_gate(float sg) { return 1.0f / (1.0f + expf(-sg)); }

// A warp's sum as every norm here adds it: partners at lane distance 16, 8, 4, 2, 1 (every lane
// gets the same bits).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block in a fixed order (warp trees, then warp 0 over the warp sums). All threads
// get the result. scratch: 32 floats of shared memory.
static __device__ __forceinline__ float block_sum(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        const float t = warp_sum(lane < nw ? scratch[lane] : 0.0f);
        if (lane == 0) scratch[32] = t;
    }
    __syncthreads();
    return scratch[32];
}

// One 4-vector's sum of squares, for every norm here, with its roundings spelled out: written as
// `x*x + y*y + ...`, the compiler chose per kernel which product of the first add to fuse, so the
// folded combine (linear.cu) computed fma(x, x, y*y) where the norm launch computed fma(y, y, x*x),
// and a decode step of one token differed, rarely, from the same step in a batch.
__device__ __forceinline__ float sumsq4(float4 u) {
    return __fmaf_rn(u.w, u.w, __fmaf_rn(u.z, u.z, __fmaf_rn(u.y, u.y, __fmul_rn(u.x, u.x))));
}

// The norm's scale from a row's sum of squares, and 4-vector i of the normed row (y2: the row as
// bf16 pairs): the same expressions wherever a row is normed.
__device__ __forceinline__ float rms_inv(float ss, int H, float eps) { return 1.0f / sqrtf(ss / (float)H + eps); }
__device__ __forceinline__ void put_normed4(__nv_bfloat162 *y2, int i, float4 u, float inv, float4 g) {
    y2[2 * i] = __floats2bfloat162_rn(u.x * inv * g.x, u.y * inv * g.y);
    y2[2 * i + 1] = __floats2bfloat162_rn(u.z * inv * g.z, u.w * inv * g.w);
}

// RMSNorm of one row by the whole block; thread i owns the 4-vectors i, i + blockDim, ...
// (H % 4 == 0). The same code serves every caller, so a row's bits never depend on which did it.
// VECS: the 4-vectors each thread owns (1 .. 4, known at launch: rmsnorm_vecs), or 0 for any
// number; compiling only the path a width takes keeps these latency-bound kernels' code, which
// they fetch cold at every launch, small. The norm weights of a thread's first vectors come loaded
// (norm_weights, which callers issue before their dependency wait: weights are never written), and
// so do the row's values there.
template <int VECS>
struct NormWeights {
    float4 g[VECS ? VECS : 4];
};

template <int VECS>
__device__ __forceinline__ NormWeights<VECS> norm_weights(const float *w, int H) {
    NormWeights<VECS> n;
    const float4 *w4 = reinterpret_cast<const float4 *>(w);
#pragma unroll
    for (int j = 0; j < (VECS ? VECS : 4); j++) {
        int i = threadIdx.x + j * blockDim.x;
        n.g[j] = i < H / 4 ? w4[i] : make_float4(0, 0, 0, 0);
    }
    return n;
}

// v: the row's values at this thread's first vectors (zeros past H); any others come from x.
template <int VECS>
__device__ __forceinline__ void rmsnorm_values(bf16 *y, const float4 *v, const float *x, const float *w,
                                               const NormWeights<VECS> &nw, int H, float eps, float *scratch) {
    constexpr int NV = VECS ? VECS : 4;
    const float4 *xr = reinterpret_cast<const float4 *>(x);
    const float4 *w4 = reinterpret_cast<const float4 *>(w);
    float ss = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; j++) ss += sumsq4(v[j]);
    if (VECS == 0)
        for (int i = threadIdx.x + NV * blockDim.x; i < H / 4; i += blockDim.x) ss += sumsq4(xr[i]);
    ss = block_sum(ss, scratch);
    const float inv = rms_inv(ss, H, eps);
    __nv_bfloat162 *yr = reinterpret_cast<__nv_bfloat162 *>(y);
#pragma unroll
    for (int j = 0; j < NV; j++) {
        int i = threadIdx.x + j * blockDim.x;
        if (i < H / 4) put_normed4(yr, i, v[j], inv, nw.g[j]);
    }
    if (VECS == 0)
        for (int i = threadIdx.x + NV * blockDim.x; i < H / 4; i += blockDim.x) put_normed4(yr, i, xr[i], inv, w4[i]);
}

template <int VECS>
__device__ __forceinline__ void rmsnorm_row(bf16 *y, const float *x, const float *w, const NormWeights<VECS> &nw, int H,
                                            float eps, float *scratch) {
    const float4 *xr = reinterpret_cast<const float4 *>(x);
    float4 v[VECS ? VECS : 4];
#pragma unroll
    for (int j = 0; j < (VECS ? VECS : 4); j++) {
        int i = threadIdx.x + j * blockDim.x;
        v[j] = i < H / 4 ? xr[i] : make_float4(0, 0, 0, 0);
    }
    rmsnorm_values<VECS>(y, v, x, w, nw, H, eps, scratch);
}

// Sixteen warp sums at once: s[i] is this lane's part of sum i. Returns, on lanes 2i and 2i + 1,
// sum i with exactly the bits of the butterfly block_sum applies to one value (partners at lane
// distance 16, 8, 4, 2, 1; each step adds two partial sums of the same lanes, and a + b = b + a),
// in 16 shuffles instead of 80: at each distance a lane keeps half of the sums it still holds
// (by its lane bit) and trades the other half with its partner, which keeps that half.
__device__ __forceinline__ float butterfly_sums16(const float s[16]) {
    const int lane = threadIdx.x & 31;
    float a8[8], a4[4], a2[2];
    const bool b4 = lane & 16, b3 = lane & 8, b2 = lane & 4, b1 = lane & 2;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        float keep = b4 ? s[i + 8] : s[i], give = b4 ? s[i] : s[i + 8];
        a8[i] = keep + __shfl_xor_sync(0xffffffffu, give, 16);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float keep = b3 ? a8[i + 4] : a8[i], give = b3 ? a8[i] : a8[i + 4];
        a4[i] = keep + __shfl_xor_sync(0xffffffffu, give, 8);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float keep = b2 ? a4[i + 2] : a4[i], give = b2 ? a4[i] : a4[i + 2];
        a2[i] = keep + __shfl_xor_sync(0xffffffffu, give, 4);
    }
    float keep = b1 ? a2[1] : a2[0], give = b1 ? a2[0] : a2[1];
    float a1 = keep + __shfl_xor_sync(0xffffffffu, give, 2);
    return a1 + __shfl_xor_sync(0xffffffffu, a1, 1);
}

// The same RMSNorm by one warp, for kernels that normalise several rows side by side: the warp
// plays the 16 warps of a 512-thread block, lane l of virtual warp w owning the 4-vectors
// 32w + l + 512j (j < NV), and adds their sums in block_sum's order. Same bits as rmsnorm_row at
// the norm launch's width (rmsnorm_threads: 512 from H = 1924; for smaller H its threads past the
// row add zeros, as the virtual ones do here). NV = ceil(H / 2048). x is read through L2 (it may
// have been written by other blocks of the same launch); w may be in shared memory.
template <int NV>
__device__ __forceinline__ void rmsnorm_row_warp(bf16 *y, const float *x, const float *w, int H, float eps) {
    const int lane = threadIdx.x & 31;
    const float4 *xr = reinterpret_cast<const float4 *>(x);
    const float4 *w4 = reinterpret_cast<const float4 *>(w);
    float4 v[16][NV];
#pragma unroll
    for (int vw = 0; vw < 16; vw++)
#pragma unroll
        for (int j = 0; j < NV; j++) {
            int i = vw * 32 + lane + j * 512;
            v[vw][j] = i < H / 4 ? __ldcg(xr + i) : make_float4(0, 0, 0, 0);
        }
    float ss[16];   // this lane's part of each virtual warp's sum
#pragma unroll
    for (int vw = 0; vw < 16; vw++) {
        ss[vw] = 0.0f;
#pragma unroll
        for (int j = 0; j < NV; j++) ss[vw] += sumsq4(v[vw][j]);
    }
    // lane vw: virtual warp vw's sum, as block_sum's scratch[vw]
    float t = butterfly_sums16(ss);
    t = __shfl_sync(0xffffffffu, t, 2 * lane);
    if (lane >= 16) t = 0.0f;
    const float inv = rms_inv(warp_sum(t), H, eps);
    __nv_bfloat162 *yr = reinterpret_cast<__nv_bfloat162 *>(y);
#pragma unroll
    for (int vw = 0; vw < 16; vw++)
#pragma unroll
        for (int j = 0; j < NV; j++) {
            int i = vw * 32 + lane + j * 512;
            if (i < H / 4) put_normed4(yr, i, v[vw][j], inv, w4[i]);
        }
}

#endif
