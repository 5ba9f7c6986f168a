// Per-token kernels: embedding gather, RMSNorm, the attention prologue (biases, q/k norm, RoPE,
// K/V into the paged cache), the MoE combine and the greedy argmax. One block per token (or row):
// every reduction runs inside one row in a fixed order, so results never depend on the batch.
#include <math.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/mma.cuh"

namespace {

// Sum over the block in a fixed order (warp trees, then warp 0 over the warp sums). All threads
// get the result. scratch: 32 floats of shared memory.
__device__ float block_sum(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nw ? scratch[lane] : 0.0f;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
        if (lane == 0) scratch[32] = t;
    }
    __syncthreads();
    return scratch[32];
}

__global__ void embed_kernel(float *h, const bf16 *embed, const int32_t *tokens, int H) {
    const bf16 *row = embed + (size_t)tokens[blockIdx.x] * H;
    float *out = h + (size_t)blockIdx.x * H;
    for (int d = threadIdx.x; d < H; d += blockDim.x) out[d] = __bfloat162float(row[d]);
}

__global__ void rmsnorm_kernel(bf16 *y, const float *x, const int32_t *rows, const float *w, int H, float eps) {
    __shared__ float scratch[33];
    const float *xr = x + (size_t)(rows ? rows[blockIdx.x] : blockIdx.x) * H;
    float ss = 0.0f;
    for (int d = threadIdx.x; d < H; d += blockDim.x) ss += xr[d] * xr[d];
    ss = block_sum(ss, scratch);
    float inv = 1.0f / sqrtf(ss / (float)H + eps);
    bf16 *yr = y + (size_t)blockIdx.x * H;
    for (int d = threadIdx.x; d < H; d += blockDim.x) yr[d] = __float2bfloat16(xr[d] * inv * w[d]);
}

// RMSNorm of n_vec vectors of length len (in place, shared memory), weight w[len]; warp per vector.
__device__ void norm_vectors(float *v, int n_vec, int len, const float *w, float eps) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int i = warp; i < n_vec; i += nw) {
        float *x = v + (size_t)i * len;
        float ss = 0.0f;
        for (int d = lane; d < len; d += 32) ss += x[d] * x[d];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        float inv = 1.0f / sqrtf(ss / (float)len + eps);
        for (int d = lane; d < len; d += 32) x[d] = x[d] * inv * w[d];
    }
}

// RoPE (rotate-half) on n_vec heads of hd values in shared memory at position pos.
__device__ void rope_vectors(float *v, int n_vec, int hd, int pos, float theta) {
    const int half = hd / 2;
    for (int e = threadIdx.x; e < n_vec * half; e += blockDim.x) {
        int hh = e / half, i = e % half;
        float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
        float s, c;
        sincosf((float)pos * inv_freq, &s, &c);
        float *x = v + (size_t)hh * hd;
        float a = x[i], b = x[i + half];
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
    }
}

__global__ void qk_prep_kernel(const mt_qk_prep_args a) {
    extern __shared__ float buf[];   // q [qd], k [kvd], v [kvd] of this token
    __shared__ float scratch[33];
    const int t = blockIdx.x, hd = a.head_dim;
    const int qd = a.n_heads * hd, kvd = a.n_kv_heads * hd, width = qd + 2 * kvd;
    const float *row = a.qkv + (size_t)t * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = row[i];
        if (i < qd) { if (a.q_bias) v += a.q_bias[i]; }
        else if (i < qd + kvd) { if (a.k_bias) v += a.k_bias[i - qd]; }
        else if (a.v_bias) v += a.v_bias[i - qd - kvd];
        buf[i] = v;
    }
    __syncthreads();
    float *q = buf, *k = buf + qd, *v = buf + qd + kvd;
    if (a.q_norm) {
        if (a.qk_norm_full) {
            float ss = 0.0f;
            for (int i = threadIdx.x; i < qd; i += blockDim.x) ss += q[i] * q[i];
            float inv = 1.0f / sqrtf(block_sum(ss, scratch) / (float)qd + a.eps);
            for (int i = threadIdx.x; i < qd; i += blockDim.x) q[i] = q[i] * inv * a.q_norm[i];
            ss = 0.0f;
            for (int i = threadIdx.x; i < kvd; i += blockDim.x) ss += k[i] * k[i];
            inv = 1.0f / sqrtf(block_sum(ss, scratch) / (float)kvd + a.eps);
            for (int i = threadIdx.x; i < kvd; i += blockDim.x) k[i] = k[i] * inv * a.k_norm[i];
        } else {
            norm_vectors(q, a.n_heads, hd, a.q_norm, a.eps);
            norm_vectors(k, a.n_kv_heads, hd, a.k_norm, a.eps);
        }
        __syncthreads();
    }
    const int pos = a.positions[t];
    rope_vectors(q, a.n_heads, hd, pos, a.rope_theta);
    rope_vectors(k, a.n_kv_heads, hd, pos, a.rope_theta);
    __syncthreads();
    bf16 *qo = a.q_out + (size_t)t * qd;
    for (int i = threadIdx.x; i < qd; i += blockDim.x) qo[i] = __float2bfloat16(q[i]);
    const int seq = a.seq_of_token[t];
    if (seq < 0) return;   // padding token of a captured graph: nothing to cache
    int32_t block = a.block_table[a.table_offset[seq] + pos / 16];
    size_t off = (((size_t)block * a.num_layers + a.layer) * 16 + pos % 16) * kvd;
    for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
        a.k_cache[off + i] = __float2bfloat16(k[i]);
        a.v_cache[off + i] = __float2bfloat16(v[i]);
    }
}

__global__ void moe_combine_kernel(float *h, const float *ye, const int32_t *pair_pos, const float *w, int k, int H,
                                   const float *ys, const float *sg, int ld_sg) {
    const int t = blockIdx.y;
    const int d = blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= H) return;
    float acc = 0.0f;
    for (int j = 0; j < k; j++) acc += w[(size_t)t * k + j] * ye[(size_t)pair_pos[(size_t)t * k + j] * H + d];
    if (ys) {
        float g = 1.0f / (1.0f + expf(-sg[(size_t)t * ld_sg]));
        acc += g * ys[(size_t)t * H + d];
    }
    h[(size_t)t * H + d] += acc;
}

__global__ void argmax_kernel(int32_t *out, const float *logits, int ld, int V) {
    __shared__ float best_v[256];
    __shared__ int best_i[256];
    const float *row = logits + (size_t)blockIdx.x * ld;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        if (row[i] > bv) { bv = row[i]; bi = i; }
    best_v[threadIdx.x] = bv;
    best_i[threadIdx.x] = bi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            float ov = best_v[threadIdx.x + s];
            int oi = best_i[threadIdx.x + s];
            if (ov > best_v[threadIdx.x] || (ov == best_v[threadIdx.x] && oi < best_i[threadIdx.x])) {
                best_v[threadIdx.x] = ov;
                best_i[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = best_i[0] == 0x7fffffff ? 0 : best_i[0];
}

}  // namespace

void mt_cuda_embed(float *h, const bf16 *embed, const int32_t *tokens, int n, int H, cudaStream_t st) {
    if (n > 0) embed_kernel<<<n, 256, 0, st>>>(h, embed, tokens, H);
}

void mt_cuda_rmsnorm(bf16 *y, const float *x, const int32_t *rows, const float *w, int n, int H, float eps, cudaStream_t st) {
    if (n > 0) rmsnorm_kernel<<<n, 256, 0, st>>>(y, x, rows, w, H, eps);
}

void mt_cuda_qk_prep(const mt_qk_prep_args *a, cudaStream_t st) {
    if (a->n <= 0) return;
    size_t smem = (size_t)(a->n_heads + 2 * a->n_kv_heads) * a->head_dim * sizeof(float);
    static size_t configured = 0;
    if (smem > 48 * 1024 && smem > configured) {
        cudaFuncSetAttribute(qk_prep_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        configured = smem;
    }
    qk_prep_kernel<<<a->n, 256, smem, st>>>(*a);
}

void mt_cuda_moe_combine(float *h, const float *ye, const int32_t *pair_pos, const float *w, int n, int k, int H,
                         const float *ys, const float *sg, int ld_sg, cudaStream_t st) {
    if (n <= 0) return;
    dim3 grid((H + 255) / 256, n);
    moe_combine_kernel<<<grid, 256, 0, st>>>(h, ye, pair_pos, w, k, H, ys, sg, ld_sg);
}

void mt_cuda_argmax(int32_t *out, const float *logits, int ld, int n, int V, cudaStream_t st) {
    if (n > 0) argmax_kernel<<<n, 256, 0, st>>>(out, logits, ld, V);
}
