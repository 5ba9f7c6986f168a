// Uploads a model's weights to the device in the tiled bf16 layout of kernels/cuda, or fills them
// there with deterministic random values when the host has none (--load-format dummy).
#include <stdlib.h>
#include <string.h>

#include "engine/cuda_internal.h"

namespace {

constexpr size_t STAGING_BYTES = 64u << 20;
constexpr int STAGES = 2;

// Checkpoint rows reach the device through STAGES stages: the host copies a chunk into a stage's
// page-locked buffer, the copy engine moves it to the stage's device buffer and a kernel converts it
// into place, all queued on the stream; the host fills the other stage meanwhile and waits only
// when it comes back to a stage whose last kernel has not run yet. Without page-locked memory each
// chunk is copied from pageable memory and waited for.
struct Uploader {
    GpuModel *g;
    void *staging[STAGES];   // device buffers for raw checkpoint rows
    void *pinned[STAGES];    // page-locked host buffers, or NULL
    cudaEvent_t used[STAGES]; // recorded after the kernel reading staging[i] (nullptr: none)
    int next;                // the stage the next chunk goes through
    uint64_t seed;           // dummy fills: advanced per matrix
    mt_err *err;
};

// A host copy split over the kernels' thread pool in slices of at least 1 MiB: reading a mapped
// checkpoint faults its pages in, which threads do side by side.
struct CopyJob {
    char *dst;
    const char *src;
    size_t bytes, slice;
};

void copy_slice(void *ctx, int i) {
    const CopyJob *c = (const CopyJob *)ctx;
    size_t from = (size_t)i * c->slice, n = c->bytes - from < c->slice ? c->bytes - from : c->slice;
    memcpy(c->dst + from, c->src + from, n);
}

void parallel_copy(void *dst, const void *src, size_t bytes) {
    size_t slices = bytes >> 20;
    if (slices > 16) slices = 16;
    if (slices < 2) {
        memcpy(dst, src, bytes);
        return;
    }
    CopyJob c = {(char *)dst, (const char *)src, bytes, (bytes + slices - 1) / slices};
    mt_parallel_for((int)slices, copy_slice, &c);
}

// Queues bytes of host src onto a stage's device buffer; *stage gets the stage, whose buffer the
// caller's kernel then reads (queue it, then stage_release). NULL with u.err on a CUDA error.
void *stage_in(Uploader &u, const void *src, size_t bytes, int *stage) {
    int s = u.next;
    u.next = (u.next + 1) % STAGES;
    *stage = s;
    if (!u.pinned[s]) {
        if (cudaMemcpyAsync(u.staging[s], src, bytes, cudaMemcpyHostToDevice, u.g->stream) != cudaSuccess) {
            mt_errf(u.err, "CUDA error in cudaMemcpyAsync (weight upload) on device 0");
            return nullptr;
        }
        return u.staging[s];
    }
    cudaError_t rc = u.used[s] ? cudaEventSynchronize(u.used[s]) : cudaSuccess;
    if (rc != cudaSuccess) {
        mt_cuda_fail(u.err, "cudaEventSynchronize (weight upload)", rc);
        return nullptr;
    }
    parallel_copy(u.pinned[s], src, bytes);
    rc = cudaMemcpyAsync(u.staging[s], u.pinned[s], bytes, cudaMemcpyHostToDevice, u.g->stream);
    if (rc != cudaSuccess) {
        mt_cuda_fail(u.err, "cudaMemcpyAsync (weight upload)", rc);
        return nullptr;
    }
    return u.staging[s];
}

// After the kernel reading stage s is queued: the stage is free again once it has run (or at once
// from pageable memory, which is waited for).
int stage_release(Uploader &u, int s) {
    cudaError_t rc = u.pinned[s] ? cudaEventRecord(u.used[s], u.g->stream) : cudaStreamSynchronize(u.g->stream);
    if (rc != cudaSuccess) return mt_cuda_fail(u.err, u.pinned[s] ? "cudaEventRecord (weight upload)" : "cudaStreamSynchronize (weight upload)", rc);
    return 0;
}

// The stages' buffers; page-locked host memory where the driver gives it.
int stages_init(Uploader &u) {
    for (int s = 0; s < STAGES; s++) {
        if (!(u.staging[s] = mt_gpu_alloc(u.g, STAGING_BYTES, u.err))) return -1;
        if (cudaMallocHost(&u.pinned[s], STAGING_BYTES) != cudaSuccess ||
            cudaEventCreateWithFlags(&u.used[s], cudaEventDisableTiming) != cudaSuccess) {
            cudaGetLastError(); // fall back to pageable copies
            if (u.pinned[s]) cudaFreeHost(u.pinned[s]);
            u.pinned[s] = nullptr;
            u.used[s] = nullptr;
        }
    }
    return 0;
}

// Waits for the stream, then frees the host side of the stages (the device buffers go with the model).
void stages_free(Uploader &u) {
    cudaStreamSynchronize(u.g->stream);
    for (int s = 0; s < STAGES; s++) {
        if (u.pinned[s]) cudaFreeHost(u.pinned[s]);
        if (u.used[s]) cudaEventDestroy(u.used[s]);
        u.pinned[s] = nullptr;
        u.used[s] = nullptr;
    }
}

void free_model(void *p) {
    GpuModel *g = (GpuModel *)p;
    if (!g) return;
    cudaStreamSynchronize(g->stream);
    for (int i = 0; i < g->n_allocs; i++) cudaFree(g->allocs[i]);
    mt_gpu_scratch_release(&g->s);
    cudaFree(g->s.in);
    cudaFreeHost(g->s.h_in);
    for (int i = 0; i < 4096; i++)
        if (g->prof.ev[i]) cudaEventDestroy(g->prof.ev[i]);
    for (auto &ps : g->pass)
        if (ps.done) cudaEventDestroy(ps.done);
    if (g->inputs_copied) cudaEventDestroy(g->inputs_copied);
    mt_gpu_graphs_clear(g);
    cudaFree(g->split);
    if (g->l2_ahead) {   // the kept lines back to normal lines, the set-aside L2 back to all
        cudaCtxResetPersistingL2Cache();
        mt_cuda_l2_keep_setup(0);
    }
    cudaStreamDestroy(g->stream);
    free(g->allocs);
    free(g->layers);
    free(g->moe_index);
    free(g);
}

// Rows [0, rows) of a host matrix into tiled dst (already zeroed), by chunks through the stages.
int upload_rows(Uploader &u, bf16 *dst, const mt_mat &m, int mode) {
    size_t esz = mt_dtype_size(m.dtype), row_bytes = (size_t)m.cols * esz;
    int chunk = (int)(STAGING_BYTES / row_bytes);
    if (chunk < 1) return mt_errf(u.err, "a row of %d values does not fit the upload buffer", m.cols);
    for (int r0 = 0; r0 < m.rows; r0 += chunk) {
        int n = m.rows - r0 < chunk ? m.rows - r0 : chunk, s;
        const void *rows = stage_in(u, (const char *)m.data + (size_t)r0 * row_bytes, (size_t)n * row_bytes, &s);
        if (!rows) return -1;
        mt_cuda_tile_rows(dst, m.cols, rows, (int)m.dtype, n, r0, mode, u.g->stream);
        MT_CU_LAUNCHED(u.err);
        if (stage_release(u, s)) return -1;
    }
    return 0;
}

// A tiled matrix made of the given parts (stacked rows, or gate/up interleaved).
int make_dmat(Uploader &u, mt_dmat *out, bf16 *dst, const mt_mat *const *parts, const int *modes, int n_parts) {
    int rows = 0, K = parts[0]->cols;
    for (int i = 0; i < n_parts; i++) {
        if (parts[i]->cols != K) return mt_errf(u.err, "stacked matrices differ in width (%d vs %d)", parts[i]->cols, K);
        rows += parts[i]->rows;
    }
    if (K % 16) return mt_errf(u.err, "the CUDA backend needs matrix widths that are multiples of 16 (got %d)", K);
    if (!dst) {
        dst = (bf16 *)mt_gpu_alloc(u.g, mt_dmat_elems(rows, K) * sizeof(bf16), u.err);
        if (!dst) return -1;
    }
    *out = {dst, rows, mt_round16(rows), K};
    size_t elems = mt_dmat_elems(rows, K);
    if (!parts[0]->data) {   // dummy weights
        float scale = 1.0f / sqrtf((float)K);
        u.seed = u.seed * 6364136223846793005ull + 1442695040888963407ull;
        mt_cuda_fill_random(dst, elems, scale, u.seed, u.g->stream);
        MT_CU_LAUNCHED(u.err);
        return 0;
    }
    MT_CU(u.err, cudaMemsetAsync(dst, 0, elems * sizeof(bf16), u.g->stream));
    int row0 = 0;
    for (int i = 0; i < n_parts; i++) {
        if (modes[i] == MT_ROWS_DIRECT) {
            // stacked parts: shift the destination by the rows before this part (multiples of 16)
            if (row0 % 16) return mt_errf(u.err, "stacked matrix parts must have multiples of 16 rows");
            if (upload_rows(u, dst + (size_t)row0 * K, *parts[i], MT_ROWS_DIRECT)) return -1;
            row0 += parts[i]->rows;
        } else if (upload_rows(u, dst, *parts[i], modes[i])) {
            return -1;
        }
    }
    return 0;
}

int make_single(Uploader &u, mt_dmat *out, const mt_mat &m) {
    const mt_mat *p[1] = {&m};
    int mode[1] = {MT_ROWS_DIRECT};
    return make_dmat(u, out, nullptr, p, mode, 1);
}

int make_mlp(Uploader &u, GpuMlp *out, const mt_expert &e, bf16 *gu_dst, bf16 *down_dst) {
    if (e.gate.rows % 8) return mt_errf(u.err, "the CUDA backend needs MLP widths that are multiples of 8 (got %d)", e.gate.rows);
    const mt_mat *p[2] = {&e.gate, &e.up};
    int modes[2] = {MT_ROWS_GATE, MT_ROWS_UP};
    if (make_dmat(u, &out->gate_up, gu_dst, p, modes, 2)) return -1;
    const mt_mat *d[1] = {&e.down};
    int dm[1] = {MT_ROWS_DIRECT};
    return make_dmat(u, &out->down, down_dst, d, dm, 1);
}

int make_vec(Uploader &u, float **out, const float *host, int n) {
    if (!host) {
        *out = nullptr;
        return 0;
    }
    *out = (float *)mt_gpu_alloc(u.g, (size_t)n * sizeof(float), u.err);
    if (!*out) return -1;
    MT_CU(u.err, cudaMemcpyAsync(*out, host, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, u.g->stream));
    MT_CU(u.err, cudaStreamSynchronize(u.g->stream));
    return 0;
}

int upload_layer(Uploader &u, const mt_model *m, int l) {
    const mt_config *c = &m->cfg;
    const mt_layer *L = &m->layers[l];
    GpuLayer *G = &u.g->layers[l];
    int H = c->hidden_size, qd = c->num_attention_heads * c->head_dim, kvd = c->num_key_value_heads * c->head_dim;
    bool full = c->qk_norm == MT_QK_NORM_FULL;
    if (make_vec(u, &G->attn_norm, L->attn_norm, H) || make_vec(u, &G->mlp_norm, L->mlp_norm, H) ||
        make_vec(u, &G->q_bias, L->q_bias, qd) || make_vec(u, &G->k_bias, L->k_bias, kvd) ||
        make_vec(u, &G->v_bias, L->v_bias, kvd) || make_vec(u, &G->q_norm, L->q_norm, full ? qd : c->head_dim) ||
        make_vec(u, &G->k_norm, L->k_norm, full ? kvd : c->head_dim))
        return -1;
    const mt_mat *qkv[3] = {&L->q, &L->k, &L->v};
    int direct[3] = {MT_ROWS_DIRECT, MT_ROWS_DIRECT, MT_ROWS_DIRECT};
    if (make_dmat(u, &G->qkv, nullptr, qkv, direct, 3) || make_single(u, &G->o, L->o)) return -1;
    G->is_moe = L->is_moe;
    if (!L->is_moe) return make_mlp(u, &G->dense, L->dense, nullptr, nullptr);

    if (make_single(u, &G->router, L->router)) return -1;
    int E = c->num_experts, I = c->moe_intermediate_size;
    G->gate_up_stride = mt_dmat_elems(2 * I, H);
    G->down_stride = mt_dmat_elems(H, I);
    bf16 *gu = (bf16 *)mt_gpu_alloc(u.g, G->gate_up_stride * E * sizeof(bf16), u.err);
    bf16 *dn = (bf16 *)mt_gpu_alloc(u.g, G->down_stride * E * sizeof(bf16), u.err);
    if (!gu || !dn) return -1;
    for (int e = 0; e < E; e++) {
        GpuMlp x;
        if (make_mlp(u, &x, L->experts[e], gu + e * G->gate_up_stride, dn + e * G->down_stride)) return -1;
        if (e == 0) {
            G->experts_gate_up = x.gate_up;
            G->experts_down = x.down;
        }
    }
    G->has_shared = L->has_shared;
    if (L->has_shared) {
        if (make_mlp(u, &G->shared, L->shared, nullptr, nullptr)) return -1;
        if (L->shared_gate.rows && make_single(u, &G->shared_gate, L->shared_gate)) return -1;
    }
    return 0;
}

int check_shapes(const mt_config *c, mt_err *err) {
    if (!mt_cuda_attention_supports(c->head_dim))
        return mt_errf(err, "the CUDA backend supports head_dim 16, 32, 64 or 128 (model has %d)", c->head_dim);
    if (c->num_attention_heads % c->num_key_value_heads)
        return mt_errf(err, "num_attention_heads %d is not a multiple of num_key_value_heads %d", c->num_attention_heads,
                       c->num_key_value_heads);
    if (c->num_experts > 1024 || c->top_k > 32)
        return mt_errf(err, "the CUDA backend routes at most 1024 experts with top_k <= 32 (model: %d, top-%d)",
                       c->num_experts, c->top_k);
    if (c->hidden_size % 16) return mt_errf(err, "the CUDA backend needs hidden_size a multiple of 16 (got %d)", c->hidden_size);
    return 0;
}

// L2 set aside for the weights decode passes keep ahead (GpuModel.l2_ahead): 10 MB, about what the
// memory moves while the router runs on the H100 (docs/CUDA.md, "Weights ahead in L2");
// MOETRACE_CUDA_L2_AHEAD=MB sets it, 0 turns it off. Devices before compute capability 9.0 lack
// the bulk prefetch: none there. Returns the bytes a pass may keep. The set-aside is the device's:
// a model freed while another is attached gives it back for both, whose kept lines are then normal
// lines (slower, the same results).
size_t l2_ahead_setup() {
    const char *env = getenv("MOETRACE_CUDA_L2_AHEAD");
    const double mb = env ? atof(env) : 10.0;
    int dev = 0, major = 0;
    if (!(mb > 0) || cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess || major < 9) {
        cudaGetLastError();
        return 0;
    }
    const size_t want = (size_t)(mb * 1048576.0) & ~(size_t)255;
    const size_t got = mt_cuda_l2_keep_setup(want) & ~(size_t)255;
    return got < want ? got : want;
}

}  // namespace

int mt_cuda_fail(mt_err *err, const char *call, cudaError_t rc) {
    // the runtime also keeps the error as its last one: a failure it recovers from (an allocation
    // that did not fit) would otherwise be reported again by the next pass's launch check
    cudaGetLastError();
    int dev = -1;
    cudaGetDevice(&dev);
    cudaDeviceProp p;
    const char *name = dev >= 0 && cudaGetDeviceProperties(&p, dev) == cudaSuccess ? p.name : "?";
    return mt_errf(err, "CUDA error in %s on device %d (%s): %s", call, dev, name, cudaGetErrorString(rc));
}

void *mt_gpu_alloc(GpuModel *g, size_t bytes, mt_err *err) {
    if (g->n_allocs == g->cap_allocs) {
        int cap = g->cap_allocs ? 2 * g->cap_allocs : 256;
        void **a = (void **)realloc(g->allocs, (size_t)cap * sizeof *a);
        if (!a) {
            mt_errf(err, "out of host memory");
            return nullptr;
        }
        g->allocs = a;
        g->cap_allocs = cap;
    }
    void *p = nullptr;
    cudaError_t rc = cudaMalloc(&p, bytes ? bytes : 16);
    if (rc != cudaSuccess) {
        mt_cuda_fail(err, "cudaMalloc", rc);
        char more[128];
        snprintf(more, sizeof more, " (asking for %.1f MiB)", (double)bytes / (1 << 20));
        strncat(err->msg, more, sizeof err->msg - strlen(err->msg) - 1);
        return nullptr;
    }
    g->allocs[g->n_allocs++] = p;
    g->weight_bytes += bytes;
    return p;
}

extern "C" bool mt_cuda_compiled(void) { return true; }

extern "C" int mt_cuda_device_count(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

extern "C" int mt_cuda_describe(char *buf, size_t len) {
    int dev = 0;
    cudaDeviceProp p;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
        snprintf(buf, len, "no CUDA device");
        return -1;
    }
    snprintf(buf, len, "%s (sm_%d%d, %d SMs, %.0f GiB)", p.name, p.major, p.minor, p.multiProcessorCount,
             (double)p.totalGlobalMem / (1u << 30));
    return 0;
}

extern "C" int mt_cuda_attach(mt_model *m, mt_err *err) {
    const mt_config *c = &m->cfg;
    if (m->device) return 0;
    if (mt_cuda_device_count() <= 0) return mt_errf(err, "--device cuda: no CUDA device is visible");
    if (check_shapes(c, err)) return -1;
    MT_CU(err, cudaSetDevice(0));
    GpuModel *g = (GpuModel *)calloc(1, sizeof *g);
    if (!g) return mt_errf(err, "out of host memory");
    g->num_layers = c->num_hidden_layers;
    if (cudaDeviceGetAttribute(&g->sm_count, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess) g->sm_count = 1;
    g->layers = (GpuLayer *)calloc((size_t)c->num_hidden_layers, sizeof *g->layers);
    g->moe_index = (int *)malloc((size_t)c->num_hidden_layers * sizeof(int));
    Uploader u = {g, {nullptr}, {nullptr}, {nullptr}, 0, 0x6d6f657472616365ull, err};
    int rc = -1;
    if (!g->layers || !g->moe_index) {
        mt_errf(err, "out of host memory");
        goto done;
    }
    if (cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking) != cudaSuccess) {
        mt_errf(err, "CUDA error in cudaStreamCreate on device 0");
        goto done;
    }
    for (int l = 0; l < c->num_hidden_layers; l++) g->moe_index[l] = c->layer_is_moe[l] ? g->num_moe_layers++ : -1;
    g->l2_ahead = l2_ahead_setup();
    if (stages_init(u)) goto done;
    {
        size_t VH = (size_t)c->vocab_size * c->hidden_size;
        g->embed = (bf16 *)mt_gpu_alloc(g, VH * sizeof(bf16), err);
        if (!g->embed) goto done;
        if (m->embed.data) {
            // row-major: convert through staging in chunks
            size_t esz = mt_dtype_size(m->embed.dtype), chunk = STAGING_BYTES / esz;
            for (size_t i = 0; i < VH; i += chunk) {
                size_t n = VH - i < chunk ? VH - i : chunk;
                int s;
                const void *part = stage_in(u, (const char *)m->embed.data + i * esz, n * esz, &s);
                if (!part) goto done;
                mt_cuda_convert_bf16(g->embed + i, part, (int)m->embed.dtype, n, g->stream);
                if (stage_release(u, s)) goto done;
            }
        } else {
            mt_cuda_fill_random(g->embed, VH, 1.0f, 0x656d626564ull, g->stream);
        }
        if (make_vec(u, &g->final_norm, m->final_norm, c->hidden_size) || make_single(u, &g->lm_head, m->lm_head)) goto done;
        g->inv_freq = (float *)mt_gpu_alloc(g, (size_t)c->head_dim / 2 * sizeof(float), err);
        if (!g->inv_freq) goto done;
        cudaError_t ce = cudaMemcpyAsync(g->inv_freq, c->rope_inv_freq, (size_t)c->head_dim / 2 * sizeof(float),
                                         cudaMemcpyHostToDevice, g->stream);
        if (ce != cudaSuccess) {
            mt_cuda_fail(err, "cudaMemcpyAsync (RoPE frequencies)", ce);
            goto done;
        }
        for (int l = 0; l < c->num_hidden_layers; l++)
            if (upload_layer(u, m, l)) goto done;
        cudaError_t e = cudaStreamSynchronize(g->stream);
        if (e != cudaSuccess) {
            mt_cuda_fail(err, "cudaStreamSynchronize (weight upload)", e);
            goto done;
        }
    }
    stages_free(u);
    m->device = g;
    m->device_free = free_model;
    g->prof.on = getenv("MOETRACE_CUDA_PROFILE") && !strcmp(getenv("MOETRACE_CUDA_PROFILE"), "1");
    g->graphs_off = getenv("MOETRACE_CUDA_GRAPHS") && !strcmp(getenv("MOETRACE_CUDA_GRAPHS"), "0");
    rc = 0;
done:
    if (rc) {
        if (g->stream) stages_free(u);
        free_model(g);
    }
    return rc;
}
