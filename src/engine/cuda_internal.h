// State shared by the GPU backend's translation units (cuda_model.cu, cuda_forward.cu). CUDA C++.
#ifndef MT_ENGINE_CUDA_INTERNAL_H
#define MT_ENGINE_CUDA_INTERNAL_H

#include <cuda_runtime.h>
#include <stdio.h>

#include "kernels/cuda/cuda_kernels.h"

extern "C" {
#include "engine/cuda_backend.h"
}

// Checks a CUDA call; on failure writes "CUDA error in CALL on device D (NAME): reason" and
// returns -1 from the enclosing function.
#define MT_CU(err, call)                                                                        \
    do {                                                                                        \
        cudaError_t mt_cu_rc = (call);                                                          \
        if (mt_cu_rc != cudaSuccess) return mt_cuda_fail((err), #call, mt_cu_rc);              \
    } while (0)
// After kernel launches: the launch error, if any.
#define MT_CU_LAUNCHED(err) MT_CU(err, cudaGetLastError())

int mt_cuda_fail(mt_err *err, const char *call, cudaError_t rc);

struct GpuMlp {             // SwiGLU MLP: gate/up interleaved, then down
    mt_dmat gate_up, down;
};

struct GpuLayer {
    float *attn_norm, *mlp_norm;
    float *q_bias, *k_bias, *v_bias;        // NULL unless attention_bias
    float *q_norm, *k_norm;                 // NULL unless q/k norm
    mt_dmat qkv, o;                         // q, k, v stacked
    bool is_moe;
    GpuMlp dense;
    mt_dmat router;
    mt_dmat experts_gate_up, experts_down;  // expert 0 of E; expert e at + e * *_stride
    size_t gate_up_stride, down_stride;
    bool has_shared;
    GpuMlp shared;
    mt_dmat shared_gate;                    // [1, H] (rows padded to 16)
};

// Scratch of one forward pass, sized for `cap` tokens (reallocated when a batch is larger).
// Pinned host copies of one pass's outputs. Two passes can be in flight (mt_forward_begin), so there
// are two sets: a pass's are read while the next one's land.
struct HostOut {
    int32_t *cap_ids, *next, *top_ids;
    float *cap_w, *logprob, *top_lps;
    float *ids_lp;           // [ids_cap] listed tokens' log-probabilities
    size_t ids_cap;
};

struct GpuScratch {
    int cap, cap_logits;
    float *h, *qkv, *router, *ye, *ys, *sg, *logits;
    float *h_combined;       // the residual after a combine folded into the next q/k/v product
    float *combine_sums;     // [16] its partial sums of squares
    int *combine_ready;      // its combiners' count (0 between launches)
    size_t ye_bytes;         // bytes of ye (also the sorted X rows of a gathered expert product)
    bf16 *xb, *qb, *att, *act, *sact;
    int32_t *cap_ids;        // [moe layers, cap, k]
    float *cap_w;
    int32_t *offsets, *tile_offsets, *counts, *active, *n_active, *src_rows, *pair_pos;
    int32_t *next;            // [cap_logits] each logit row's next token (argmax or sample)
    float *logprob;           // [cap_logits] its (or its target's) log-probability, when a pass asks for it
    int32_t *top_ids;         // [cap_logits, MT_TOP_LOGPROBS_MAX] each row's top list (top_n places of it used)
    float *top_lps;           // their log-probabilities
    float *ids_lp;            // [ids_cap] listed tokens' log-probabilities (mt_batch.ids_offsets)
    size_t ids_cap;
    int32_t *adj, *h_adj;     // [adj_cap] the pass's logit changes (mt_batch.adjusts): their count, then the
    size_t adj_cap;           // changes from word 4 (mt_cuda_adjust_logits), device and pinned; graphs read it
    float *argmax_scratch;
    int32_t *sort_chunks;    // [ceil(cap*k/1024), E] per-chunk expert counts of the parallel sort
    float *split_part;       // [8, split_cap, split_rows] slice sums of split dense products
    int split_cap, split_rows;
    // batch inputs, uploaded in one copy: tokens, positions, cache block of each token, logit rows,
    // sampling, logit targets, table_offset, attention tiles (decode then prefill), block tables
    int32_t *in, *h_in;      // device, pinned host
    size_t in_cap;           // ints
    HostOut out[2];          // pinned host copies of the outputs: a set for each pass in flight
};

// Per-stage device time of forward passes (MOETRACE_CUDA_PROFILE=1 or mt_cuda_profile): events at
// stage boundaries, summed per stage after each pass.
enum ProfStage {
    PROF_EMBED, PROF_NORM, PROF_QKV, PROF_QK_PREP, PROF_ATTENTION, PROF_O_PROJ, PROF_ROUTER, PROF_ROUTE_SORT,
    PROF_EXPERT_GATE_UP, PROF_EXPERT_DOWN, PROF_SHARED, PROF_COMBINE, PROF_DENSE_MLP, PROF_LOGITS, PROF_COUNT
};
struct GpuProfile {
    bool on;
    cudaEvent_t ev[4096];
    int stage[4096];
    int n;
    double ms[PROF_COUNT];
    long passes;
};

// A captured decode pass: B token slots (padded), attention split over split_tiles KV tiles (0: no
// split), reading the K/V of one cache, with or without sampled rows and logit changes.
constexpr int MT_MAX_GRAPHS = 96;
struct GpuGraph {
    int B, split_tiles;
    bool sampled;            // ends with the sampling kernel (some row samples)
    bool adjusted;           // changes logits before the argmax (mt_batch.adjusts; any count)
    const void *kv_k, *kv_v;   // the cache's K and V buffers (a freed cache's address can come back with the other moved)
    cudaGraphExec_t exec;
};

struct GpuModel {
    int device;
    int sm_count;            // multiprocessors of the device
    size_t l2_ahead;         // bytes of the next dense product's weights a decode pass's expert
                             // gate/up product keeps in L2 (cuda_forward.cu, l2_ahead_part); 0: none
    cudaStream_t stream;
    bf16 *embed;             // row-major [V, H]
    float *final_norm;
    float *inv_freq;         // RoPE inverse frequencies [head_dim/2] (mt_config.rope_inv_freq)
    mt_dmat lm_head;
    GpuLayer *layers;
    int num_layers, num_moe_layers;
    int *moe_index;          // hidden layer -> MoE layer index (or -1)
    void **allocs;           // every device allocation, for the free
    int n_allocs, cap_allocs;
    size_t weight_bytes;
    GpuScratch s;
    GpuProfile prof;
    float *split;            // attention split states
    size_t split_floats;
    GpuGraph graphs[MT_MAX_GRAPHS];
    int n_graphs;
    bool graphs_off;         // MOETRACE_CUDA_GRAPHS=0
    unsigned skip;           // launches every pass leaves out (mt_cuda_set_skip; benchmarks only)
    // Passes in flight (mt_cuda_forward_begin, _end), oldest first, all begun from one mt_passes (owner)
    struct {
        int slots;           // token slots of its launches (a graph's bucket)
        int out;             // its set of host copies (s.out)
        cudaEvent_t done;    // recorded after its copies out
    } pass[2];
    int inflight, next_out;
    const void *owner;
    cudaEvent_t inputs_copied;   // recorded after the last pass's copies in: its pinned inputs are free again
};

// Drops every captured graph (their buffers are about to move).
void mt_gpu_graphs_clear(GpuModel *g);

// Frees the scratch buffers (not the batch-input buffers in/h_in).
void mt_gpu_scratch_release(GpuScratch *s);

// Device allocation remembered for the model's free; NULL on failure (err set).
void *mt_gpu_alloc(GpuModel *g, size_t bytes, mt_err *err);

#endif
