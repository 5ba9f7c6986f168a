// Sampling of logit rows on the device, by the definition in kernels/sample.h (the CPU's
// mt_sample_pick is the reference), and the changes made to the rows' logits before it. Sampling
// takes one block per row, every sum an exact integer sum of fixed-point weights, so the token
// depends on the row alone. The weights are recomputed from the logits in each pass (an exp per
// logit), which keeps the scratch at a few KB per row. Also the rows' log-probabilities
// (mt_token_logprob) and their most likely tokens (mt_top_logprobs), one block per row as well.
#include <math.h>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/launch.cuh"

namespace {

constexpr int THREADS = 1024;
constexpr int BINS = 2048;               // radix bins per digit, two per thread
constexpr int DIGITS = 4;
__constant__ int DIGIT_SHIFT[DIGITS] = {30, 19, 8, 0};

typedef unsigned long long u64;

// Inclusive sum over threads t..THREADS-1 (suffix) or 0..t (prefix) of v, exact; scratch: 32 u64.
template <bool SUFFIX>
__device__ u64 block_scan(u64 v, u64 *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        u64 w = SUFFIX ? __shfl_down_sync(0xffffffffu, v, o) : __shfl_up_sync(0xffffffffu, v, o);
        if (SUFFIX ? lane + o < 32 : lane >= o) v += w;
    }
    __syncthreads();
    if (lane == (SUFFIX ? 0 : 31)) scratch[warp] = v;   // the warp's total
    __syncthreads();
    u64 add = 0;
    for (int w = 0; w < 32; w++)
        if (SUFFIX ? w > warp : w < warp) add += scratch[w];
    return v + add;
}

struct Row {
    const float *x;
    int V;
    float mx, temperature;
    // fixed-point weight of logit i (NaN weighs 0)
    __device__ u64 q(int i) const {
        float p = expf(__fdiv_rn(__fsub_rn(x[i], mx), temperature));
        return p >= 0.0f ? __float2ull_rz(__fmul_rn(p, 1099511627776.0f)) : 0ull;   // 2^40
    }
};

// The largest t >= lo whose weights q >= t (count_only: how many; else their sum) reach need.
__device__ u64 select_threshold(const Row &r, u64 lo, bool count_only, u64 need, u64 *hist, u64 *scratch,
                                u64 *shared_result) {
    u64 prefix = 0, above = 0;
    for (int d = 0; d < DIGITS; d++) {
        const int shift = DIGIT_SHIFT[d];
        const u64 fixed = d == 0 ? 0ull : ~((1ull << DIGIT_SHIFT[d - 1]) - 1);
        for (int b = threadIdx.x; b < BINS; b += THREADS) hist[b] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < r.V; i += THREADS) {
            u64 v = r.q(i);
            if (v < lo || (v & fixed) != prefix) continue;
            atomicAdd(&hist[(v >> shift) & (BINS - 1)], count_only ? 1ull : v);
        }
        __syncthreads();
        // Thread t holds bins 2t and 2t + 1; incl(b) = amount in bins >= b. The chosen bin is the
        // highest b with above + incl(b) >= need (bin 0 at the latest).
        const int b0 = 2 * threadIdx.x, b1 = b0 + 1;
        u64 h0 = hist[b0], h1 = hist[b1];
        u64 incl0 = block_scan<true>(h0 + h1, scratch);   // bins >= b0
        u64 incl1 = incl0 - h0, incl2 = incl1 - h1;       // bins >= b1, bins >= b1 + 1
        if (above + incl1 >= need && above + incl2 < need) {
            shared_result[0] = b1;
            shared_result[1] = above + incl2;
        } else if (above + incl0 >= need && above + incl1 < need) {
            shared_result[0] = b0;
            shared_result[1] = above + incl1;
        } else if (b0 == 0 && above + incl0 < need) {   // need beyond every weight: bin 0, as on the host
            shared_result[0] = 0;
            shared_result[1] = above + incl1;
        }
        __syncthreads();
        prefix |= shared_result[0] << shift;
        above = shared_result[1];
        __syncthreads();
    }
    return prefix;
}

__global__ void __launch_bounds__(THREADS) sample_kernel(int32_t *tokens, const float *logits, int ld, int V,
                                                          const mt_sample_row *rows) {
    MT_TIMELINE_KERNEL(MT_TL_SAMPLE);
    mt_grid_dependency_wait();
    const mt_sample_row spec = rows[blockIdx.x];
    if (!(spec.temperature > 0.0f)) return;   // greedy: the argmax already written stays
    __shared__ u64 hist[BINS];
    __shared__ u64 scratch[32];
    __shared__ u64 result[2];
    __shared__ float fscratch[32];
    Row r;
    r.x = logits + (size_t)blockIdx.x * ld;
    r.V = V;
    r.temperature = spec.temperature;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += THREADS) mx = fmaxf(mx, r.x[i]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if ((threadIdx.x & 31) == 0) fscratch[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = -INFINITY;
    for (int w = 0; w < 32; w++) mx = fmaxf(mx, fscratch[w]);
    r.mx = mx;

    u64 t = 0;
    if (spec.top_k > 0 && spec.top_k < V) t = select_threshold(r, 0, true, (u64)spec.top_k, hist, scratch, result);
    // this thread's contiguous run of ids, for the kept masses and the final walk in id order
    const int per = (V + THREADS - 1) / THREADS, begin = min(V, threadIdx.x * per), end = min(V, begin + per);
    auto run_mass = [&](u64 thr) {
        u64 m = 0;
        for (int i = begin; i < end; i++) {
            u64 v = r.q(i);
            m += v >= thr ? v : 0;
        }
        return m;
    };
    if (spec.top_p < 1.0f) {
        u64 mass = block_scan<true>(run_mass(t), scratch);   // top-k's
        if (threadIdx.x == 0) result[0] = mass;
        __syncthreads();
        mass = result[0];
        __syncthreads();
        u64 total = mass;   // the row's
        if (t > 0) {
            total = block_scan<true>(run_mass(0), scratch);
            if (threadIdx.x == 0) result[0] = total;
            __syncthreads();
            total = result[0];
            __syncthreads();
        }
        u64 need = (u64)ceil((double)spec.top_p * (double)total);
        if (need < 1) need = 1;
        // top-p's set within top-k's: its threshold; else top-k's set is the smaller one
        if (mass >= need) t = select_threshold(r, t, false, need, hist, scratch, result);
    }
    if (spec.min_p > 0.0f) {   // the top weight is exactly 2^40: exp(0)
        const u64 t_min = (u64)ceil((double)spec.min_p * 1099511627776.0);
        if (t_min > t) t = t_min;
    }
    const u64 mine = run_mass(t);
    const u64 upto = block_scan<false>(mine, scratch);   // kept mass of ids < end
    __shared__ u64 kept_total;
    if (threadIdx.x == THREADS - 1) kept_total = upto;
    __syncthreads();
    const u64 kept = kept_total;
    if (kept == 0) return;   // every weight 0: the argmax stays
    const u64 u = spec.u24 & 0xffffffu, at = (kept >> 24) * u + (((kept & 0xffffffu) * u) >> 24);
    u64 run = upto - mine;
    if (run <= at && at < upto) {   // exactly one thread
        for (int i = begin; i < end; i++) {
            u64 v = r.q(i);
            if (v < t) continue;
            run += v;
            if (run > at) {
                tokens[blockIdx.x] = i;
                break;
            }
        }
    }
}

// The pass's logit changes (mt_logit_adjust, kernels/sample.h): list[0] holds their count, the
// changes start at word 4; a thread a change, (row, token) pairs distinct.
__global__ void adjust_kernel(float *logits, int ld, const int32_t *list) {
    mt_grid_dependency_wait();
    const int n = list[0];
    const mt_logit_adjust *changes = (const mt_logit_adjust *)(list + 4);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const mt_logit_adjust a = changes[i];
        float *x = logits + (size_t)a.row * ld + a.token;
        float v = *x;
        if (a.add == -INFINITY) {
            v = -INFINITY;
        } else {
            if (a.scale != 1.0f) v = v > 0.0f ? __fdiv_rn(v, a.scale) : __fmul_rn(v, a.scale);
            v = __fadd_rn(v, a.add);
        }
        *x = v;
    }
}

constexpr int LP_THREADS = 1024;

// A float reduction over the block in a fixed tree (so the same row gives the same bits in any
// batch); scratch: 32 floats. MAX: the largest value (NaN skipped), else the sum.
template <bool MAX>
__device__ float block_reduce(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = MAX ? fmaxf(v, w) : v + w;
    }
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = scratch[0];
    for (int w = 1; w < LP_THREADS / 32; w++) v = MAX ? fmaxf(v, scratch[w]) : v + scratch[w];
    return v;
}

// Adds logit v's weight exp((v - mx) / T) to sum (a NaN logit weighs 0).
__device__ __forceinline__ void add_weight(float &sum, float v, float mx, float T) {
    if (v == v) sum += expf((v - mx) / T);
}

// The log-probability of logit v in a row of largest logit mx and log_sum = log(sum of weights):
// (v - mx) / T - log_sum, rounded step by step (no contraction), so the token's value and the same
// token's value in the top list are the same bits.
__device__ __forceinline__ float logprob_of(float v, float mx, float T, float log_sum) {
    return __fsub_rn(__fdiv_rn(__fsub_rn(v, mx), T), log_sum);
}

// Whether logit a (id ia, not NaN) ranks before entry b (id ib; ib < 0: an empty place, which every
// logit ranks before): larger first, ties to the lower id (kernels/sample.h, mt_top_logprobs).
__device__ __forceinline__ bool ranks_before(float a, int ia, float b, int ib) {
    return ib < 0 || a > b || (a == b && ia < ib);
}

// A warp's top k (k <= 32) of the logits offered to it, sorted: lane j holds place j (lanes >= k
// hold nothing meaningful); the worst listed place (or an empty one) is mirrored in every lane. The
// list is a function of the set of logits offered, whatever their order (the ranking is a strict
// order on (logit, id) with NaN excluded), so how a row is split among warps cannot change it.
struct WarpTop {
    float v;
    int id;             // -1: empty place
    float worst_v;      // place k - 1
    int worst_id;
    int k;

    __device__ void init(int k_) {
        k = k_;
        v = worst_v = -INFINITY;
        id = worst_id = -1;
    }

    // Every lane offers logit x of id i when want (NaN never listed); warp-collective.
    __device__ void offer(float x, int i, bool want) {
        const int lane = threadIdx.x & 31;
        bool pending = want && x == x && ranks_before(x, i, worst_v, worst_id);
        unsigned m;
        while ((m = __ballot_sync(0xffffffffu, pending))) {
            const int src = __ffs(m) - 1;
            const float cv = __shfl_sync(0xffffffffu, x, src);
            const int ci = __shfl_sync(0xffffffffu, i, src);
            // places ranking before the candidate are a prefix of the list; it goes right after them
            const int pos = __popc(__ballot_sync(0xffffffffu, lane < k && !ranks_before(cv, ci, v, id)));
            const float up_v = __shfl_up_sync(0xffffffffu, v, 1);
            const int up_id = __shfl_up_sync(0xffffffffu, id, 1);
            if (lane == pos) {
                v = cv;
                id = ci;
            } else if (lane > pos && lane < k) {
                v = up_v;
                id = up_id;
            }
            worst_v = __shfl_sync(0xffffffffu, v, k - 1);
            worst_id = __shfl_sync(0xffffffffu, id, k - 1);
            pending = pending && lane != src && ranks_before(x, i, worst_v, worst_id);
        }
    }
};

constexpr int LP_UNROLL = 4;   // float4s in flight per thread in the top-list pass

// One block per row: mt_token_logprob (kernels/sample.h) of the row's scored token (targets[row] when
// >= 0, else tokens[row]) into out (when not NULL), summed in float; with TOP, also the row's k most
// likely tokens and their log-probabilities (mt_top_logprobs) into top_ids/top_lps [n, k], from the
// same max and sum, so a listed token's value is the scored value of that token bit for bit. The
// row is read as float4s (rows start 64-byte aligned: ld is a multiple of 16), 8 in flight per
// thread (4 with TOP, where each warp also keeps its top k of its own float4s); the tail past the
// last whole float4 one float at a time. Every thread sees the same elements in the same order with
// or without TOP, so the max and the sum are the same bits.
template <bool TOP>
__global__ void __launch_bounds__(LP_THREADS) token_logprob_kernel(float *out, const int32_t *tokens,
                                                                   const int32_t *targets,
                                                                   const float *__restrict__ logits, int ld, int V,
                                                                   const mt_sample_row *rows, int k,
                                                                   int32_t *top_ids, float *top_lps,
                                                                   const int32_t *ids_off, const int32_t *ids_list,
                                                                   float *ids_out) {
    __shared__ float scratch[32];
    __shared__ float cand_v[TOP ? 32 * MT_TOP_LOGPROBS_MAX : 1];
    __shared__ int cand_id[TOP ? 32 * MT_TOP_LOGPROBS_MAX : 1];
    mt_grid_dependency_wait();
    const float *x = logits + (size_t)blockIdx.x * ld;
    const float4 *x4 = reinterpret_cast<const float4 *>(x);
    const int V4 = V / 4, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float T = rows && rows[blockIdx.x].temperature > 0.0f ? rows[blockIdx.x].temperature : 1.0f;
    float mx = -INFINITY;
    WarpTop top;
    if (!TOP) {
#pragma unroll 8
        for (int i = threadIdx.x; i < V4; i += LP_THREADS) {
            float4 v = x4[i];
            mx = fmaxf(mx, fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w)));
        }
        for (int i = 4 * V4 + threadIdx.x; i < V; i += LP_THREADS) mx = fmaxf(mx, x[i]);
    } else {
        // the same elements per thread as above, in the same order, with warp-uniform trip counts
        top.init(k);
        for (int base = warp * 32; base < V4; base += LP_UNROLL * LP_THREADS) {
            float4 v[LP_UNROLL];
#pragma unroll
            for (int u = 0; u < LP_UNROLL; u++) {
                const int i = base + lane + u * LP_THREADS;
                v[u] = i < V4 ? x4[i] : make_float4(NAN, NAN, NAN, NAN);
            }
#pragma unroll
            for (int u = 0; u < LP_UNROLL; u++) {
                const int i = base + lane + u * LP_THREADS;
                if (i < V4) mx = fmaxf(mx, fmaxf(fmaxf(v[u].x, v[u].y), fmaxf(v[u].z, v[u].w)));
                top.offer(v[u].x, 4 * i, i < V4);
                top.offer(v[u].y, 4 * i + 1, i < V4);
                top.offer(v[u].z, 4 * i + 2, i < V4);
                top.offer(v[u].w, 4 * i + 3, i < V4);
            }
        }
        for (int base = 4 * V4 + warp * 32; base < V; base += LP_THREADS) {
            const int i = base + lane;
            const float v = i < V ? x[i] : NAN;
            if (i < V) mx = fmaxf(mx, v);
            top.offer(v, i, i < V);
        }
        if (lane < k) {
            cand_v[warp * k + lane] = top.v;
            cand_id[warp * k + lane] = top.id;
        }
    }
    mx = block_reduce<true>(mx, scratch);
    float sum = 0.0f;
#pragma unroll 8
    for (int i = threadIdx.x; i < V4; i += LP_THREADS) {
        float4 v = x4[i];
        add_weight(sum, v.x, mx, T);
        add_weight(sum, v.y, mx, T);
        add_weight(sum, v.z, mx, T);
        add_weight(sum, v.w, mx, T);
    }
    for (int i = 4 * V4 + threadIdx.x; i < V; i += LP_THREADS) add_weight(sum, x[i], mx, T);
    sum = block_reduce<false>(sum, scratch);
    const float log_sum = logf(sum);
    if (out && threadIdx.x == 0) {
        const int tok = targets && targets[blockIdx.x] >= 0 ? targets[blockIdx.x] : tokens[blockIdx.x];
        out[blockIdx.x] = mx == -INFINITY ? NAN : logprob_of(x[tok], mx, T, log_sum);
    }
    if (ids_off)   // the row's listed tokens, a thread each
        for (int j = ids_off[blockIdx.x] + threadIdx.x; j < ids_off[blockIdx.x + 1]; j += LP_THREADS)
            ids_out[j] = mx == -INFINITY ? NAN : logprob_of(x[ids_list[j]], mx, T, log_sum);
    if (TOP) __syncthreads();   // every warp's list is in cand_v/cand_id (block_reduce's barriers did it too)
    if (TOP && warp == 0) {   // the block's list: warp 0 merges the 32 warps' lists
        top.init(k);
        for (int base = 0; base < 32 * k; base += 32) {
            const int j = base + lane;
            const bool have = j < 32 * k && cand_id[j] >= 0;
            top.offer(have ? cand_v[j] : NAN, have ? cand_id[j] : -1, have);
        }
        if (lane < k) {
            const size_t at = (size_t)blockIdx.x * k + lane;
            top_ids[at] = top.id;
            top_lps[at] = top.id >= 0 && mx != -INFINITY ? logprob_of(top.v, mx, T, log_sum) : NAN;
        }
    }
}

}  // namespace

void mt_cuda_token_logprob(float *out, const int32_t *tokens, const int32_t *targets, const float *logits, int ld,
                           int n, int V, const mt_sample_row *rows, int k, int32_t *top_ids, float *top_lps,
                           const int32_t *ids_off, const int32_t *ids_list, float *ids_out, cudaStream_t st) {
    if (n <= 0) return;
    if (k > 0)
        mt_launch(token_logprob_kernel<true>, n, LP_THREADS, 0, st, out, tokens, targets, logits, ld, V, rows, k,
                  top_ids, top_lps, ids_off, ids_list, ids_out);
    else if (out || ids_off)
        mt_launch(token_logprob_kernel<false>, n, LP_THREADS, 0, st, out, tokens, targets, logits, ld, V, rows, 0,
                  (int32_t *)nullptr, (float *)nullptr, ids_off, ids_list, ids_out);
}

void mt_cuda_adjust_logits(float *logits, int ld, const int32_t *list, int blocks, cudaStream_t st) {
    mt_launch(adjust_kernel, blocks, 256, 0, st, logits, ld, list);
}

void mt_cuda_sample(int32_t *tokens, const float *logits, int ld, int n, int V, const mt_sample_row *rows,
                    cudaStream_t st) {
    if (n > 0) mt_launch(sample_kernel, n, THREADS, 0, st, tokens, logits, ld, V, rows);
}
