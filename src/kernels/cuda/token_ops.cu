// Per-token kernels: embedding gather, RMSNorm, the attention prologue (biases, q/k norm, RoPE,
// K/V into the paged cache), the MoE combine and the greedy argmax. One block per token (or row):
// every reduction runs inside one row in a fixed order, so results never depend on the batch.
#include <math.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/row_norm.cuh"

namespace {

__global__ void embed_kernel(float *h, const bf16 *embed, const int32_t *tokens, const int32_t *picked, int H) {
    MT_TIMELINE_KERNEL(MT_TL_EMBED);
    mt_grid_dependency_wait();
    int32_t t = tokens[blockIdx.x];
    if (t < 0) t = picked[-1 - t];   // MT_TOKEN_OF_ROW: the previous pass's pick
    const bf16 *row = embed + (size_t)t * H;
    float *out = h + (size_t)blockIdx.x * H;
    for (int d = threadIdx.x; d < H; d += blockDim.x) out[d] = __bfloat162float(row[d]);
}

// dst row p = src row rows[p], a warp per row, 16 bytes per lane and step (width % 8 == 0).
__global__ void gather_rows_kernel(bf16 *dst, const bf16 *src, int ld_src, const int32_t *rows, int n, int width) {
    MT_TIMELINE_KERNEL(MT_TL_GATHER_ROWS);
    mt_grid_dependency_wait();
    const int p = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (p >= n) return;
    const uint4 *from = reinterpret_cast<const uint4 *>(src + (size_t)rows[p] * ld_src);
    uint4 *to = reinterpret_cast<uint4 *>(dst + (size_t)p * width);
    for (int i = lane; i < width / 8; i += 32) to[i] = from[i];
}

// One block per row (of rows[], when set).
template <int VECS>
__global__ void rmsnorm_kernel(bf16 *y, const float *x, const int32_t *rows, const float *w, int H, float eps) {
    MT_TIMELINE_KERNEL(MT_TL_RMSNORM);
    const NormWeights<VECS> nw = norm_weights<VECS>(w, H);
    const int row = rows ? __ldcg(rows + blockIdx.x) : blockIdx.x;   // a pass input
    mt_grid_dependency_wait();
    __shared__ float scratch[33];
    rmsnorm_row<VECS>(y + (size_t)blockIdx.x * H, x + (size_t)row * H, w, nw, H, eps, scratch);
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

// RoPE (rotate-half) on n_vec heads of hd values in shared memory at position pos: pair i turns
// by pos * inv_freq[i], its cos and sin scaled by scale.
__device__ void rope_vectors(float *v, int n_vec, int hd, int pos, const float *inv_freq, float scale) {
    const int half = hd / 2;
    for (int e = threadIdx.x; e < n_vec * half; e += blockDim.x) {
        int hh = e / half, i = e % half;
        float s, c;
        sincosf((float)pos * inv_freq[i], &s, &c);
        s *= scale;
        c *= scale;
        float *x = v + (size_t)hh * hd;
        float a = x[i], b = x[i + half];
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
    }
}

__global__ void qk_prep_kernel(const mt_qk_prep_args a) {
    MT_TIMELINE_KERNEL(MT_TL_QK_PREP);
    mt_grid_dependency_wait();
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
    rope_vectors(q, a.n_heads, hd, pos, a.inv_freq, a.rope_scale);
    rope_vectors(k, a.n_kv_heads, hd, pos, a.inv_freq, a.rope_scale);
    __syncthreads();
    bf16 *qo = a.q_out + (size_t)t * qd;
    for (int i = threadIdx.x; i < qd; i += blockDim.x) qo[i] = __float2bfloat16(q[i]);
    const int32_t block = a.kv_block[t];
    if (block < 0) return;   // padding token of a captured graph: nothing to cache
    size_t off = (((size_t)block * a.num_layers + a.layer) * 16 + pos % 16) * kvd;
    for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
        a.k_cache[off + i] = __float2bfloat16(k[i]);
        a.v_cache[off + i] = __float2bfloat16(v[i]);
    }
}

// Per head: a block per (token, group of QK_HEADS head slots), where slots are the q heads, then
// the k heads, then the v heads; threadIdx.y picks the slot, max(32, hd/2) threads per slot, thread
// i < hd/2 owning the RoPE pair (i, i + hd/2). Per-head q/k norm (or none). The token's RoPE sines
// and cosines are computed once per block (slot 0's threads) and shared by its slots.
constexpr int QK_HEADS = 8;

__global__ void qk_prep_head_kernel(const mt_qk_prep_args a) {
    MT_TIMELINE_KERNEL(MT_TL_QK_PREP);
    __shared__ float warp_ss[QK_HEADS][4];
    __shared__ float rope_sin[64], rope_cos[64];   // head_dim <= 128
    const int t = blockIdx.x, hd = a.head_dim, half = hd / 2;
    const int slot = blockIdx.y * QK_HEADS + threadIdx.y;
    const bool live = slot < a.n_heads + 2 * a.n_kv_heads;
    const int i = threadIdx.x < half ? threadIdx.x : 0;   // idle threads shadow pair 0, write nothing
    const bool owner = live && threadIdx.x < half;
    const int qd = a.n_heads * hd, kvd = a.n_kv_heads * hd;
    const bool is_q = slot < a.n_heads, is_k = !is_q && slot < a.n_heads + a.n_kv_heads;
    const int col = slot * hd;   // q, k, v heads are consecutive in the qkv row
    // Before the wait: the pass's inputs (through L2: an earlier pass wrote them there), biases,
    // norm weights and the token's RoPE angles; after it only the q/k/v row is read.
    const int pos = __ldcg(a.positions + t);
    const int32_t block = __ldcg(a.kv_block + t);
    const float *bias = is_q ? a.q_bias : is_k ? a.k_bias : a.v_bias;
    const int bcol = is_q ? col : is_k ? col - qd : col - qd - kvd;
    float b0 = 0.0f, b1 = 0.0f;
    if (live && bias) {
        b0 = bias[bcol + i];
        b1 = bias[bcol + i + half];
    }
    const float *nw = is_q ? a.q_norm : is_k ? a.k_norm : nullptr;
    float n0 = 0.0f, n1 = 0.0f;
    if (live && nw) {
        n0 = nw[i];
        n1 = nw[i + half];
    }
    if (threadIdx.y == 0 && threadIdx.x < half) {
        float s, c;
        sincosf((float)pos * a.inv_freq[threadIdx.x], &s, &c);
        rope_sin[threadIdx.x] = s * a.rope_scale;
        rope_cos[threadIdx.x] = c * a.rope_scale;
    }
    mt_grid_dependency_wait();
    float x0 = 0.0f, x1 = 0.0f;
    if (live) {
        const float *row = a.qkv + (size_t)t * (qd + 2 * kvd) + col;
        x0 = row[i];
        x1 = row[i + half];
        if (bias) {
            x0 += b0;
            x1 += b1;
        }
    }
    __syncthreads();
    if (live && !is_q && !is_k) {   // v: straight into the cache
        if (block >= 0 && owner) {
            size_t off = (((size_t)block * a.num_layers + a.layer) * 16 + pos % 16) * kvd + (size_t)(col - qd - kvd);
            a.v_cache[off + i] = __float2bfloat16(x0);
            a.v_cache[off + i + half] = __float2bfloat16(x1);
        }
    }
    if (a.q_norm || a.k_norm) {   // the same for the whole block: every thread reaches the barrier
        float ss = owner ? x0 * x0 + x1 * x1 : 0.0f;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        if ((threadIdx.x & 31) == 0) warp_ss[threadIdx.y][threadIdx.x >> 5] = ss;
        __syncthreads();
        if (live && nw) {
            ss = 0.0f;
            for (int w = 0; w < (int)(blockDim.x >> 5); w++) ss += warp_ss[threadIdx.y][w];
            float inv = 1.0f / sqrtf(ss / (float)hd + a.eps);
            x0 = x0 * inv * n0;
            x1 = x1 * inv * n1;
        }
    }
    if (!owner || (!is_q && !is_k)) return;
    const float s = rope_sin[i], c = rope_cos[i];
    float y0 = x0 * c - x1 * s, y1 = x1 * c + x0 * s;
    if (is_q) {
        bf16 *qo = a.q_out + (size_t)t * qd + col;
        qo[i] = __float2bfloat16(y0);
        qo[i + half] = __float2bfloat16(y1);
        return;
    }
    if (block < 0) return;
    size_t off = (((size_t)block * a.num_layers + a.layer) * 16 + pos % 16) * kvd + (size_t)(col - qd);
    a.k_cache[off + i] = __float2bfloat16(y0);
    a.k_cache[off + i + half] = __float2bfloat16(y1);
}

// One block per token (rmsnorm_threads(H) threads): h += the token's k expert outputs ye (rows
// pair_pos) weighted by w, plus the shared expert ys gated by sigmoid(sg); then, when y is set,
// y = RMSNorm(h) * norm_w (the next layer's input norm, saving a launch). The expert rows are added
// one at a time in slot order. Before the dependency wait the block reads what launches at least
// two back wrote (launch.cuh): the sort's slots and the routing weights of the first GROUP
// experts, and h itself (the o product's), besides the norm weights; after it, only the expert rows
// (all of a group's loads issued before its adds) and the shared expert.
// GROUP: expert rows loaded together, 8 for decode-sized passes (latency-bound: one block per
// multiprocessor or fewer), 1 for larger ones, where the registers the group holds would cost
// blocks per multiprocessor (prefill 0.340 -> 0.352 s with 8). The adds are in slot order either
// way, so the bits are the same.
template <int VECS, int GROUP>
__global__ void moe_combine_kernel(float *h, const float *ye, const int32_t *pair_pos, const float *w, int k, int H,
                                   const float *ys, const float *sg, int ld_sg, bf16 *y, const float *norm_w,
                                   float eps) {
    MT_TIMELINE_KERNEL(MT_TL_COMBINE);
    __shared__ float scratch[33];
    const int t = blockIdx.x;
    const int32_t *slots = pair_pos + (size_t)t * k;
    const float *wt = w + (size_t)t * k;
    float4 *hr = reinterpret_cast<float4 *>(h + (size_t)t * H);
    int32_t slot0[GROUP];
    float w0[GROUP];
#pragma unroll
    for (int u = 0; u < GROUP; u++) {
        slot0[u] = u < k ? __ldcg(slots + u) : 0;
        w0[u] = u < k ? __ldcg(wt + u) : 0.0f;
    }
    constexpr int NV = VECS ? VECS : 4;
    float4 h0[NV];   // h at this thread's first vectors
#pragma unroll
    for (int j = 0; j < NV; j++) {
        int i = threadIdx.x + j * blockDim.x;
        h0[j] = i < H / 4 ? __ldcg(hr + i) : make_float4(0, 0, 0, 0);
    }
    NormWeights<VECS> nw;
    if (y) nw = norm_weights<VECS>(norm_w, H);
    mt_grid_dependency_wait();
    const float gate = ys ? combine_gate(sg[(size_t)t * ld_sg]) : 0.0f;
    auto combine = [&](int i, float4 o) {   // o + this token's expert rows (and shared expert) at vector i
        float4 acc = make_float4(0, 0, 0, 0);   // combine_fma's order (row_norm.cuh), loads grouped
#pragma unroll 1   // its code is fetched cold at every launch (decode): one copy of the group
        for (int j0 = 0; j0 < k; j0 += GROUP) {
            float wj[GROUP];
            float4 e[GROUP];
#pragma unroll
            for (int u = 0; u < GROUP; u++) {
                bool in = j0 + u < k;
                int32_t slot = j0 == 0 ? slot0[u] : in ? slots[j0 + u] : 0;
                wj[u] = j0 == 0 ? w0[u] : in ? wt[j0 + u] : 0.0f;
                e[u] = in ? reinterpret_cast<const float4 *>(ye + (size_t)slot * H)[i] : make_float4(0, 0, 0, 0);
            }
#pragma unroll
            for (int u = 0; u < GROUP; u++) {
                if (j0 + u >= k) break;
                combine_fma(acc, wj[u], e[u]);
            }
        }
        if (ys) combine_fma(acc, gate, reinterpret_cast<const float4 *>(ys + (size_t)t * H)[i]);
        return combine_sum(o, acc);
    };
#pragma unroll
    for (int j = 0; j < NV; j++) {
        int i = threadIdx.x + j * blockDim.x;
        if (i < H / 4) {
            h0[j] = combine(i, h0[j]);
            hr[i] = h0[j];
        }
    }
    if (VECS == 0)
        for (int i = threadIdx.x + NV * blockDim.x; i < H / 4; i += blockDim.x) hr[i] = combine(i, hr[i]);
    MT_TIMELINE_MARK(0);   // combined
    if (y) rmsnorm_values<VECS>(y + (size_t)t * H, h0, h + (size_t)t * H, norm_w, nw, H, eps, scratch);
}

// Greedy sampling in two stages, ties to the lower index: chunks of a row to (value, index)
// pairs, then each row's pairs in chunk order.
constexpr int ARGMAX_CHUNK = 4096;

__device__ __forceinline__ void better(float &bv, int &bi, float v, int i) {
    if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
}

__global__ void argmax_partial_kernel(float *pv, int *pi, const float *logits, int ld, int V) {
    MT_TIMELINE_KERNEL(MT_TL_ARGMAX);
    mt_grid_dependency_wait();
    __shared__ float sv[256];
    __shared__ int si[256];
    const float *row = logits + (size_t)blockIdx.y * ld;
    int begin = blockIdx.x * ARGMAX_CHUNK, end = min(V, begin + ARGMAX_CHUNK);
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x) better(bv, bi, row[i], i);
    sv[threadIdx.x] = bv;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) better(sv[threadIdx.x], si[threadIdx.x], sv[threadIdx.x + s], si[threadIdx.x + s]);
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        pv[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = sv[0];
        pi[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = si[0];
    }
}

__global__ void argmax_final_kernel(int32_t *out, const float *pv, const int *pi, int chunks) {
    MT_TIMELINE_KERNEL(MT_TL_ARGMAX);
    mt_grid_dependency_wait();
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int c = threadIdx.x; c < chunks; c += 32) better(bv, bi, pv[(size_t)blockIdx.x * chunks + c], pi[(size_t)blockIdx.x * chunks + c]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        better(bv, bi, ov, oi);
    }
    if (threadIdx.x == 0) out[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
}

template <int VECS>
void launch_combine(float *h, const float *ye, const int32_t *pair_pos, const float *w, int n, int k, int H, const float *ys,
                    const float *sg, int ld_sg, bf16 *y, const float *norm_w, float eps, cudaStream_t st) {
    if (n <= mt_cuda_sm_count())
        mt_launch(moe_combine_kernel<VECS, 8>, n, rmsnorm_threads(H), 0, st, h, ye, pair_pos, w, k, H, ys, sg, ld_sg, y, norm_w, eps);
    else
        mt_launch(moe_combine_kernel<VECS, 1>, n, rmsnorm_threads(H), 0, st, h, ye, pair_pos, w, k, H, ys, sg, ld_sg, y, norm_w, eps);
}

}  // namespace

void mt_cuda_embed(float *h, const bf16 *embed, const int32_t *tokens, const int32_t *picked, int n, int H,
                   cudaStream_t st) {
    if (n > 0) mt_launch(embed_kernel, n, 256, 0, st, h, embed, tokens, picked, H);
}

void mt_cuda_gather_rows(bf16 *dst, const bf16 *src, int ld_src, const int32_t *rows, int n, int width, cudaStream_t st) {
    if (n > 0) mt_launch(gather_rows_kernel, (n + 7) / 8, 256, 0, st, dst, src, ld_src, rows, n, width);
}

void mt_cuda_rmsnorm(bf16 *y, const float *x, const int32_t *rows, const float *w, int n, int H, float eps, cudaStream_t st) {
    if (n <= 0) return;
    switch (rmsnorm_vecs(H)) {
    case 1: mt_launch(rmsnorm_kernel<1>, n, rmsnorm_threads(H), 0, st, y, x, rows, w, H, eps); break;
    case 2: mt_launch(rmsnorm_kernel<2>, n, rmsnorm_threads(H), 0, st, y, x, rows, w, H, eps); break;
    case 3: mt_launch(rmsnorm_kernel<3>, n, rmsnorm_threads(H), 0, st, y, x, rows, w, H, eps); break;
    case 4: mt_launch(rmsnorm_kernel<4>, n, rmsnorm_threads(H), 0, st, y, x, rows, w, H, eps); break;
    default: mt_launch(rmsnorm_kernel<0>, n, rmsnorm_threads(H), 0, st, y, x, rows, w, H, eps); break;
    }
}

void mt_cuda_qk_prep(const mt_qk_prep_args *a, cudaStream_t st) {
    if (a->n <= 0) return;
    if (!a->qk_norm_full) {   // per-head work: a block per (token, head)
        dim3 grid(a->n, (a->n_heads + 2 * a->n_kv_heads + QK_HEADS - 1) / QK_HEADS);
        dim3 block(a->head_dim / 2 < 32 ? 32 : a->head_dim / 2, QK_HEADS);
        mt_launch(qk_prep_head_kernel, grid, block, 0, st, *a);
        return;
    }
    size_t smem = (size_t)(a->n_heads + 2 * a->n_kv_heads) * a->head_dim * sizeof(float);
    static size_t configured = 0;
    if (smem > 48 * 1024 && smem > configured) {
        cudaFuncSetAttribute(qk_prep_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        configured = smem;
    }
    mt_launch(qk_prep_kernel, a->n, 256, smem, st, *a);
}



void mt_cuda_moe_combine(float *h, const float *ye, const int32_t *pair_pos, const float *w, int n, int k, int H,
                         const float *ys, const float *sg, int ld_sg, bf16 *y, const float *norm_w, float eps,
                         cudaStream_t st) {
    if (n <= 0) return;
switch (rmsnorm_vecs(H)) {
    case 1: launch_combine<1>(h, ye, pair_pos, w, n, k, H, ys, sg, ld_sg, y, norm_w, eps, st); break;
    case 2: launch_combine<2>(h, ye, pair_pos, w, n, k, H, ys, sg, ld_sg, y, norm_w, eps, st); break;
    case 3: launch_combine<3>(h, ye, pair_pos, w, n, k, H, ys, sg, ld_sg, y, norm_w, eps, st); break;
    case 4: launch_combine<4>(h, ye, pair_pos, w, n, k, H, ys, sg, ld_sg, y, norm_w, eps, st); break;
    default: launch_combine<0>(h, ye, pair_pos, w, n, k, H, ys, sg, ld_sg, y, norm_w, eps, st); break;
    }
}

size_t mt_cuda_argmax_scratch(int n, int V) { return (size_t)n * ((V + ARGMAX_CHUNK - 1) / ARGMAX_CHUNK); }

void mt_cuda_argmax(int32_t *out, const float *logits, int ld, int n, int V, float *scratch, cudaStream_t st) {
    if (n <= 0) return;
    int chunks = (V + ARGMAX_CHUNK - 1) / ARGMAX_CHUNK;
    int *idx = reinterpret_cast<int *>(scratch + (size_t)n * chunks);
    mt_launch(argmax_partial_kernel, dim3(chunks, n), 256, 0, st, scratch, idx, logits, ld, V);
    mt_launch(argmax_final_kernel, n, 32, 0, st, out, scratch, idx, chunks);
}
