/* The GPU backend's entry points in builds without nvcc: each says the backend is missing. */
#ifndef MOETRACE_HAVE_CUDA
#include <stdio.h>

#include "engine/cuda_backend.h"
#include "kernels/cuda/timeline.h"

static int missing(mt_err *err) {
    return mt_errf(err, "--device cuda: this build of moetrace has no CUDA backend (nvcc was not found at build time)");
}

bool mt_cuda_compiled(void) { return false; }
int mt_cuda_device_count(void) { return 0; }
int mt_cuda_attach(mt_model *m, mt_err *err) {
    (void)m;
    return missing(err);
}
int mt_cuda_kv_init(mt_kv_cache *kv, const mt_model *m, mt_err *err) {
    (void)kv;
    (void)m;
    return missing(err);
}
void mt_cuda_kv_free(mt_kv_cache *kv) { (void)kv; }
int mt_cuda_forward_begin(const mt_model *m, mt_kv_cache *kv, const mt_passes *q, const mt_batch *b, float *logits,
                          bool routing, mt_err *err) {
    (void)m; (void)kv; (void)q; (void)b; (void)logits; (void)routing;
    return missing(err);
}
int mt_cuda_forward_end(const mt_model *m, const mt_batch *b, const mt_routing_sink *sink, mt_err *err) {
    (void)m; (void)b; (void)sink;
    return missing(err);
}
int mt_cuda_reserve(const mt_model *m, int max_tokens, int max_logit_rows, mt_err *err) {
    (void)m; (void)max_tokens; (void)max_logit_rows;
    return missing(err);
}
size_t mt_cuda_scratch_bytes(const mt_model *m) {
    (void)m;
    return 0;
}
double mt_cuda_memory_free(void) { return 0.0; }
int mt_cuda_rooflines(double *copy_gbps, double *bf16_tflops, mt_err *err) {
    *copy_gbps = *bf16_tflops = 0.0;
    return missing(err);
}
int mt_cuda_read_ceiling(const mt_read_launch *launches, int n_launches, int layers, mt_read_ceiling *out, mt_err *err) {
    (void)launches; (void)n_launches; (void)layers; (void)out;
    return missing(err);
}
void mt_cuda_profile(const mt_model *m, bool on) {
    (void)m;
    (void)on;
}
void mt_cuda_profile_report(const mt_model *m, char *buf, size_t len) {
    (void)m;
    snprintf(buf, len, "no CUDA backend in this build");
}
void mt_cuda_profiler_range(bool on) { (void)on; }
void mt_cuda_set_wgmma(int on) { (void)on; }
void mt_cuda_set_skip(const mt_model *m, unsigned mask) {
    (void)m;
    (void)mask;
}
int mt_cuda_describe(char *buf, size_t len) {
    snprintf(buf, len, "no CUDA backend in this build");
    return -1;
}
int mt_cuda_timeline_begin(size_t cap) {
    (void)cap;
    return -1;
}
size_t mt_cuda_timeline_end(mt_tl_block *out, size_t cap, size_t *recorded) {
    (void)out;
    (void)cap;
    if (recorded) *recorded = 0;
    return 0;
}
#else
typedef int mt_cuda_stub_unused; /* ISO C forbids an empty translation unit */
#endif
