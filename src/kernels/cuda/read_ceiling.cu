// What the memory can do for a decode step's reads, with nothing else in the way: kernels that only
// stream bytes (no products, no dependencies between their data), launched the way the forward
// pass launches its products. bench_cuda --figures ceiling prints these beside the step's figures,
// so a layer's time can be read against what launches of the same sizes cost at best.
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/mma.cuh"

extern "C" {
#include "engine/cuda_backend.h"
}

namespace {

constexpr int kThreads = 256, kBlocksPerSm = 4, kUnroll = 8;

// mma.cuh's mt_ld_stream with the 256-byte L2 fetch the products' weight copies also ask for (the
// figures in docs/PERF.md were measured with it).
__device__ __forceinline__ uint4 load_stream(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// One round of kUnroll 16-byte loads a thread from [i, hi) of p, kThreads apart.
__device__ __forceinline__ void load_round(uint4 (&v)[kUnroll], const uint4 *p, size_t i, size_t hi) {
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
        size_t j = i + (size_t)u * kThreads;
        v[u] = j < hi ? load_stream(p + j) : make_uint4(0, 0, 0, 0);
    }
}
__device__ __forceinline__ unsigned fold_round(const uint4 (&v)[kUnroll]) {
    unsigned acc = 0;
#pragma unroll
    for (int u = 0; u < kUnroll; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    return acc;
}
// Block b's contiguous share of [p, p + n16): [*lo, *hi).
__device__ __forceinline__ void block_share(size_t n16, size_t *lo, size_t *hi) {
    size_t per = (n16 + gridDim.x - 1) / gridDim.x;
    *lo = per * blockIdx.x;
    *hi = *lo + per < n16 ? *lo + per : n16;
}

// Block b reads its contiguous share of [p, p + n16) in 16-byte loads, kUnroll in flight a thread.
// early: the first round of loads is issued before the dependency wait (weights need none), as
// the products copy their first stages then. The loads' xor goes to *sink only when it is a value
// no data here makes, so nothing is written but the reads cannot be dropped.
__global__ void __launch_bounds__(kThreads) read_kernel(const uint4 *p, size_t n16, unsigned *sink, int early) {
    size_t lo, hi;
    block_share(n16, &lo, &hi);
    unsigned acc = 0;
    size_t i = lo + threadIdx.x;
    uint4 v[kUnroll];
    if (early) load_round(v, p, i, hi);
    mt_grid_dependency_wait();
    if (early) {
        acc ^= fold_round(v);
        i += (size_t)kUnroll * kThreads;
    }
    for (; i < hi; i += (size_t)kUnroll * kThreads) {
        load_round(v, p, i, hi);
        acc ^= fold_round(v);
    }
    if (acc == 0x9e3779b9u) *sink = acc;
}

// The reads the way the products stream their weights, without their arithmetic: items of
// item_bytes (a multiple of 128; the last may end early) dealt to the blocks by grid stride, warp w
// copying slice w (an eighth) of each of its block's items into its own ring of `stages` shared-
// memory stages of `stage_bytes` (one bulk copy a stage, completing on the stage's barrier),
// refilling a stage as soon as it has looked at it, and one block barrier after each item (where
// the product adds its warps' sums). early: the ring's first copies start before the wait.
__global__ void __launch_bounds__(kThreads) item_read_kernel(const char *p, size_t bytes, int item_bytes, unsigned *sink,
                                                             int early, int stage_bytes, int stages) {
    extern __shared__ __align__(128) unsigned char smem[];
    __shared__ uint64_t bars[8][8];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int n_items = (int)((bytes + item_bytes - 1) / (size_t)item_bytes);
    const int slice = item_bytes / 8, sps = (slice + stage_bytes - 1) / stage_bytes;   // stages a slice
    const int my_items = n_items > (int)blockIdx.x ? (n_items - (int)blockIdx.x + (int)gridDim.x - 1) / (int)gridDim.x : 0;
    const int n_stages = my_items * sps;
    unsigned char *ring = smem + (size_t)warp * stages * stage_bytes;
    uint64_t policy = mt_weight_policy(true);
    if (lane == 0)
        for (int s = 0; s < stages; s++) mt_mbar_init(&bars[warp][s], 1);
    mt_mbar_init_fence();
    __syncwarp();
    auto issue = [&](int i) {
        int s = i % stages, k = i / sps, j = i % sps;
        const size_t off = (size_t)(blockIdx.x + (size_t)k * gridDim.x) * item_bytes + (size_t)warp * slice +
                           (size_t)j * stage_bytes;
        size_t b = (size_t)min(stage_bytes, slice - j * stage_bytes);
        b = off >= bytes ? 0 : off + b > bytes ? bytes - off : b;
        mt_mbar_expect(&bars[warp][s], (unsigned)b);   // nothing to copy (past the end): the phase completes at once
        if (b) mt_bulk_copy(ring + (size_t)s * stage_bytes, p + off, (unsigned)b, &bars[warp][s], policy);
    };
    int issued = 0;
    if (early && lane == 0)
        for (; issued < stages && issued < n_stages; issued++) issue(issued);
    mt_grid_dependency_wait();
    if (lane == 0)
        for (; issued < stages && issued < n_stages; issued++) issue(issued);
    unsigned acc = 0;
    for (int i = 0; i < n_stages; i++) {
        int s = i % stages;
        mt_mbar_wait(&bars[warp][s], (unsigned)(i / stages) & 1u);
        acc ^= ((const unsigned *)(ring + (size_t)s * stage_bytes))[lane];
        __syncwarp();
        if (lane == 0 && i + stages < n_stages) issue(i + stages);
        if (i % sps == sps - 1) __syncthreads();
    }
    if (acc == 0x9e3779b9u) *sink = acc;
}

// One thread of the block that claims multiprocessor 0 first follows a chain of pointers through
// a small buffer held in L2 (loads that skip L1) and times `hops` steps; every other block streams
// [p, p + n16) as read_kernel does, unless it too sits on multiprocessor 0 and alone_sm0 is set.
// stream 0: nobody streams (the idle latency).
__global__ void __launch_bounds__(kThreads) chase_kernel(const unsigned *chain, int hops, const uint4 *p, size_t n16,
                                                         int stream, int alone_sm0, unsigned *claim, unsigned *sink,
                                                         unsigned long long *ns) {
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;\n" : "=r"(sm));
    __shared__ unsigned role;
    if (threadIdx.x == 0) role = sm == 0 ? (atomicAdd(claim, 1u) == 0 ? 1u : 2u) : 0u;
    __syncthreads();
    if (role == 1) {
        if (threadIdx.x != 0) return;
        unsigned x = 0;
        for (int h = 0; h < 64; h++) x = __ldcg(chain + x);   // settle the first lines
        unsigned long long t0, t1;
        asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t0)::"memory");
        for (int h = 0; h < hops; h++) x = __ldcg(chain + x);
        asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t1)::"memory");
        *ns = t1 - t0;
        if (x == 0xffffffffu) *sink = x;
        return;
    }
    if (!stream || (role == 2 && alone_sm0)) return;
    size_t lo, hi;
    block_share(n16, &lo, &hi);
    unsigned acc = 0;
    uint4 v[kUnroll];
    for (int rep = 0; rep < 4; rep++)   // long enough to cover the chase
        for (size_t i = lo + threadIdx.x; i < hi; i += (size_t)kUnroll * kThreads) {
            load_round(v, p, i, hi);
            acc ^= fold_round(v);
        }
    if (acc == 0x9e3779b9u) *sink = acc;
}

#define CK(call)                                                                                                     \
    do {                                                                                                           \
        cudaError_t e_ = (call);                                                                                   \
        if (e_ != cudaSuccess) {                                                                                   \
            mt_errf(err, "read ceiling: %s: %s", #call, cudaGetErrorString(e_));                                   \
            goto done;                                                                                             \
        }                                                                                                          \
    } while (0)

float median_of(float *v, int n) {
    std::sort(v, v + n);
    return v[n / 2];
}

// The launches launch(st) makes, captured as one graph and replayed kReps times after two warm-ups:
// the median in ms, or -1 with err set.
constexpr int kReps = 7;
template <class Launches>
float time_graph(cudaStream_t st, Launches launch, mt_err *err) {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    cudaEvent_t e0 = nullptr, e1 = nullptr;
    float t[kReps], ms = -1.0f;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    launch(st);
    CK(cudaStreamEndCapture(st, &graph));
    CK(cudaGraphInstantiate(&exec, graph, 0));
    for (int r = 0; r < kReps + 2; r++) {
        CK(cudaEventRecord(e0, st));
        CK(cudaGraphLaunch(exec, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        if (r >= 2) CK(cudaEventElapsedTime(&t[r - 2], e0, e1));
    }
    ms = median_of(t, kReps);
done:
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    return ms;
}

size_t padded(size_t bytes) { return (bytes + 255) / 256 * 256; }
// One block's share of bytes over `blocks`, rounded up to 128 bytes.
size_t padded_to(size_t bytes, int blocks) { return ((bytes + blocks - 1) / blocks + 127) / 128 * 128; }

// Other ways of streaming the same launches (all with their first copies before the wait).
struct Variant {
    const char *name;
    int bulk, blocks_per_sm, smem, stage_bytes, stages;
};
const Variant kVariants[] = {
    {"plain loads, 3 blocks a multiprocessor, 72 KB of shared memory each", 0, 3, 72 << 10, 0, 0},
    {"bulk copies 2 KB x 2 a warp, 3 blocks, 32 KB (the next launch's blocks fit beside)", 1, 3, 32 << 10, 2048, 2},
    {"bulk copies 2 KB x 2 a warp, 3 blocks, 72 KB", 1, 3, 72 << 10, 2048, 2},
    {"bulk copies 4 KB x 2 a warp, 2 blocks, 100 KB", 1, 2, 100 << 10, 4096, 2},
    {"bulk copies 2 KB x 4 a warp, 3 blocks, 64 KB", 1, 3, 64 << 10, 2048, 4},
    {"bulk copies 8 KB x 2 a warp, 1 block, 128 KB", 1, 1, 128 << 10, 8192, 2},
};
constexpr int kNumVariants = (int)(sizeof kVariants / sizeof kVariants[0]);
static_assert(kNumVariants + 2 <= (int)(sizeof(((mt_read_ceiling *)0)->variant) / sizeof(((mt_read_ceiling *)0)->variant[0])),
              "mt_read_ceiling holds every variant");

}  // namespace

extern "C" int mt_cuda_read_ceiling(const mt_read_launch *launches, int n_launches, int layers, mt_read_ceiling *out,
                                    mt_err *err) {
    const int sms = mt_cuda_sm_count(), grid = sms * kBlocksPerSm;
    size_t layer_bytes = 0;
    for (int i = 0; i < n_launches; i++) layer_bytes += padded(launches[i].bytes);
    const size_t total = layer_bytes * (size_t)layers;
    char *buf = nullptr;
    unsigned *sink = nullptr, *chain = nullptr, *claim = nullptr;
    unsigned long long *ns = nullptr;
    cudaStream_t st = nullptr;
    const int chain_n = 128 * 1024, hops = 1500;   // 512 KB chain: in L2, out of every L1
    unsigned *host_chain = nullptr;
    int rc = -1;
    float ms;
    // every layer's launches in turn, each reading its own bytes; read(i, p, bytes) launches one
    auto chain_of_layers = [&](auto read) {
        return [=](cudaStream_t s) {
            size_t off = 0;
            for (int l = 0; l < layers; l++)
                for (int i = 0; i < n_launches; i++) {
                    read(s, i, buf + off, padded(launches[i].bytes));
                    off += padded(launches[i].bytes);
                }
        };
    };
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    CK(cudaMalloc(&buf, total));
    CK(cudaMalloc(&sink, 64));
    CK(cudaMemsetAsync(buf, 1, total, st));
    CK(cudaFuncSetAttribute(read_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 << 10));
    CK(cudaFuncSetAttribute(item_read_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 << 10));
    out->layer_bytes = (double)layer_bytes;
    for (int early = 0; early < 2; early++) {
        ms = time_graph(st, chain_of_layers([=](cudaStream_t s, int, char *p, size_t b) {
            mt_launch(read_kernel, dim3(grid), dim3(kThreads), 0, s, (const uint4 *)p, b / 16, sink, early);
        }), err);
        if (ms < 0) goto done;
        (early ? out->layer_us_early : out->layer_us_wait_first) = ms * 1e3 / layers;
    }
    ms = time_graph(st, [=](cudaStream_t s) {
        for (int l = 0; l < layers; l++)
            mt_launch(read_kernel, dim3(grid), dim3(kThreads), 0, s, (const uint4 *)(buf + (size_t)l * layer_bytes),
                      layer_bytes / 16, sink, 1);
    }, err);
    if (ms < 0) goto done;
    out->layer_us_one_launch = ms * 1e3 / layers;
    ms = time_graph(st, [=](cudaStream_t s) {
        mt_launch(read_kernel, dim3(grid), dim3(kThreads), 0, s, (const uint4 *)buf, total / 16, sink, 1);
    }, err);
    if (ms < 0) goto done;
    out->one_launch_gbps = (double)total / (ms * 1e-3) / 1e9;
    out->n_variants = kNumVariants + 2;
    for (int v = 0; v < kNumVariants; v++) {
        const Variant x = kVariants[v];
        ms = time_graph(st, chain_of_layers([=](cudaStream_t s, int, char *p, size_t b) {
            if (x.bulk)   // one item a block: its share
                mt_launch(item_read_kernel, dim3(sms * x.blocks_per_sm), dim3(kThreads), (size_t)x.smem, s,
                          (const char *)p, b, (int)padded_to(b, sms * x.blocks_per_sm), sink, 1, x.stage_bytes, x.stages);
            else
                mt_launch(read_kernel, dim3(sms * x.blocks_per_sm), dim3(kThreads), (size_t)x.smem, s, (const uint4 *)p,
                          b / 16, sink, 1);
        }), err);
        if (ms < 0) goto done;
        snprintf(out->variant[v].name, sizeof out->variant[v].name, "%s", x.name);
        out->variant[v].layer_us = ms * 1e3 / layers;
    }
    // the products' skeleton: each launch as described, then with every launch's copies early
    for (int all_early = 0; all_early < 2; all_early++) {
        ms = time_graph(st, chain_of_layers([=](cudaStream_t s, int i, char *p, size_t b) {
            const mt_read_launch x = launches[i];
            const int items = (int)(b / (size_t)x.item_bytes), wave = x.blocks_per_sm * sms;
            mt_launch(item_read_kernel, dim3(items < wave ? items : wave), dim3(kThreads), (size_t)x.smem, s,
                      (const char *)p, b, x.item_bytes, sink, all_early ? 1 : x.early, x.stage_bytes, x.stages);
        }), err);
        if (ms < 0) goto done;
        mt_read_variant &r = out->variant[kNumVariants + all_early];
        snprintf(r.name, sizeof r.name, "%s",
                 all_early ? "the same, every launch's first copies before its wait"
                           : "the products' streaming skeleton (grids, items, rings, barriers)");
        r.layer_us = ms * 1e3 / layers;
    }
    // L2 round trips of one thread, idle and beside streaming blocks: a cycle over the chain's
    // 128-byte lines, a large odd stride apart
    host_chain = (unsigned *)calloc(chain_n, sizeof *host_chain);
    if (!host_chain) {
        mt_errf(err, "read ceiling: out of host memory");
        goto done;
    }
    for (int line = 0, lines = chain_n / 32; line < lines; line++) host_chain[line * 32] = (unsigned)((line + 1021) % lines) * 32;
    CK(cudaMalloc(&chain, chain_n * sizeof *chain));
    CK(cudaMalloc(&claim, sizeof *claim));
    CK(cudaMalloc(&ns, sizeof *ns));
    CK(cudaMemcpy(chain, host_chain, chain_n * sizeof *chain, cudaMemcpyHostToDevice));
    for (int mode = 0; mode < 3; mode++) {   // idle, streaming elsewhere, streaming on its multiprocessor too
        float v[kReps];
        for (int r = 0; r < kReps; r++) {
            unsigned long long h = 0;
            CK(cudaMemsetAsync(claim, 0, sizeof *claim, st));
            chase_kernel<<<grid, kThreads, 0, st>>>(chain, hops, (const uint4 *)buf, total / 16, mode > 0, mode == 1,
                                                   claim, sink, ns);
            CK(cudaGetLastError());
            CK(cudaMemcpyAsync(&h, ns, sizeof h, cudaMemcpyDeviceToHost, st));
            CK(cudaStreamSynchronize(st));
            v[r] = (float)h / hops;
        }
        (mode == 0 ? out->l2_hop_ns_idle : mode == 1 ? out->l2_hop_ns_streaming_elsewhere : out->l2_hop_ns_streaming_beside) =
            median_of(v, kReps);
    }
    rc = 0;
done:
    free(host_chain);
    cudaFree(buf);
    cudaFree(sink);
    cudaFree(chain);
    cudaFree(claim);
    cudaFree(ns);
    if (st) cudaStreamDestroy(st);
    return rc;
}
