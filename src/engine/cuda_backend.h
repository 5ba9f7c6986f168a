/* The GPU backend of the engine (--device cuda): the model's weights uploaded once to the device in
 * bf16, the KV cache in device memory, and the forward pass run there over the same flat batch as
 * the CPU one (mt_forward dispatches here when the model is attached to a device). Routing leaves
 * the device once per forward pass and reaches the sink as host arrays, exactly as on the CPU, so
 * the engine, recorder, per-request routing and server work unchanged.
 *
 * Builds without nvcc get stubs that fail with a clear error. */
#ifndef MT_ENGINE_CUDA_BACKEND_H
#define MT_ENGINE_CUDA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "model/model.h"
#include "routing/capture.h"
#include "util/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* True when this build has the CUDA backend compiled in. */
bool mt_cuda_compiled(void);
/* Number of usable devices (0 when none or no driver). */
int mt_cuda_device_count(void);

/* Uploads m's weights to device 0 (converted to bf16 in the tiled layout); matrices without host
 * data (MT_LOAD_SHAPES) are filled with deterministic random values there. Sets m->device. Fails
 * with a clear error for shapes the kernels do not support. */
int mt_cuda_attach(mt_model *m, mt_err *err);

/* Device K/V storage for a cache created for an attached model. */
int mt_cuda_kv_init(mt_kv_cache *kv, const mt_model *m, mt_err *err);
void mt_cuda_kv_free(mt_kv_cache *kv);

/* Allocates the pass scratch for passes of up to max_tokens tokens and max_logit_rows rows of logits
 * now (a decode step's graph pads to its bucket; that is counted), replacing what the model held, so
 * such passes allocate no device memory later. A failure says how much was needed and free, and what
 * to lower. */
int mt_cuda_reserve(const mt_model *m, int max_tokens, int max_logit_rows, mt_err *err);
/* Device bytes the pass scratch holds now (0 when none). */
size_t mt_cuda_scratch_bytes(const mt_model *m);
/* Free memory of the device, in bytes (0 when it cannot be read). */
double mt_cuda_memory_free(void);

/* The forward pass on the device, in two halves (engine/forward.h's mt_forward_begin and _end; the
 * batch already validated there). begin queues the pass's launches and the copies of its outputs
 * (at most two passes in flight, from one mt_passes: another's is refused; the routing is copied
 * out when `routing`, for a sink that wants it); a token
 * MT_TOKEN_OF_ROW(r) is read on the device from the pass in flight's pick. end waits for the oldest
 * pass, writes b's outputs and hands its routing to the sink; b is that pass's batch with its tokens
 * resolved. With b NULL it only waits for the oldest pass and drops it. */
int mt_cuda_forward_begin(const mt_model *m, mt_kv_cache *kv, const mt_passes *q, const mt_batch *b, float *logits,
                          bool routing, mt_err *err);
int mt_cuda_forward_end(const mt_model *m, const mt_batch *b, const mt_routing_sink *sink, mt_err *err);

/* Per-stage device time of forward passes, for benchmarks: on/off (also MOETRACE_CUDA_PROFILE=1
 * at attach), and a report of the milliseconds per stage since the last reset (then reset).
 * Profiling adds events between stages; leave it off when timing whole passes. */
void mt_cuda_profile(const mt_model *m, bool on);
void mt_cuda_profile_report(const mt_model *m, char *buf, size_t len);

/* The Hopper wgmma product path: 1 on, 0 off, -1 as MOETRACE_CUDA_WGMMA says (on unless 0). Both
 * give the same bits; for comparisons in tests and benchmarks. Takes effect from the next pass
 * (captured decode graphs keep the kernels they were captured with: clear them by re-attaching). */
void mt_cuda_set_wgmma(int on);

/* Kinds of launch a pass can leave out (mt_cuda_set_skip). */
enum mt_cuda_skip {
    MT_SKIP_QKV = 1 << 0,
    MT_SKIP_QK_PREP = 1 << 1,
    MT_SKIP_ATTENTION = 1 << 2,
    MT_SKIP_O = 1 << 3,
    MT_SKIP_NORM = 1 << 4,         /* the layers' RMSNorm launches (not the one the combine does) */
    MT_SKIP_ROUTER = 1 << 5,
    MT_SKIP_ROUTE_SORT = 1 << 6,
    MT_SKIP_GATE_UP = 1 << 7,
    MT_SKIP_DOWN = 1 << 8,
    MT_SKIP_COMBINE = 1 << 9,
};
/* For benchmarks that measure what each kind of launch costs inside a decode step: every pass
 * leaves out the launches in mask (their outputs keep what an earlier pass left there, so tokens
 * and routing are meaningless while any is set; run a pass with 0 first so those outputs exist).
 * 0, the default, runs everything. Clears the captured decode graphs. */
void mt_cuda_set_skip(const mt_model *m, unsigned mask);

/* Marks the region an external profiler (ncu --profile-from-start off) should look at. */
void mt_cuda_profiler_range(bool on);

/* Device facts for reports: name and memory. */
int mt_cuda_describe(char *buf, size_t len);
/* Benchmark ceilings measured now on device 0: device-to-device copy bandwidth in GB/s (bytes
 * read plus written) and a bf16 8192^3 cuBLAS product in TFLOP/s (median of 10). */
int mt_cuda_rooflines(double *copy_gbps, double *bf16_tflops, mt_err *err);
/* What launches that only read can do (bench_cuda --figures ceiling): per layer of `layers`, one
 * launch of each of launches[0 .. n_launches) (distinct data each, so every byte from memory),
 * chained as the forward pass chains its launches; the figures are medians of graph replays. The
 * fields after `bytes` describe how the product kernel streams that launch's weights, for the
 * variant that copies its skeleton (items dealt by grid stride, each warp a slice of each item
 * through its ring of bulk copies, a block barrier after each item) without its arithmetic. */
typedef struct mt_read_launch {
    size_t bytes;
    int item_bytes;               /* one 16-row weight tile over all of K */
    int blocks_per_sm;            /* the grid: one block an item, at most this many a multiprocessor */
    int stage_bytes, stages;      /* each warp's ring */
    int smem;                     /* dynamic shared memory a block */
    int early;                    /* the ring's first copies before the dependency wait */
} mt_read_launch;
typedef struct mt_read_variant {
    char name[96];
    double layer_us;
} mt_read_variant;
typedef struct mt_read_ceiling {
    double layer_bytes;
    double layer_us_wait_first;   /* the launches reading after their dependency wait */
    double layer_us_early;        /* each thread's first loads issued before the wait */
    double layer_us_one_launch;   /* one launch a layer for all its bytes */
    double one_launch_gbps;       /* one launch reading every layer's bytes */
    double l2_hop_ns_idle;        /* one thread's dependent L2 loads, nothing else running */
    double l2_hop_ns_streaming_elsewhere;   /* ... while the other multiprocessors stream from memory */
    double l2_hop_ns_streaming_beside;      /* ... while its own multiprocessor streams too */
    int n_variants;               /* the layer's launches read in other ways (names say how) */
    mt_read_variant variant[8];
} mt_read_ceiling;
int mt_cuda_read_ceiling(const mt_read_launch *launches, int n_launches, int layers, mt_read_ceiling *out, mt_err *err);

#ifdef __cplusplus
}
#endif

#endif
