/* Balancedness = mean / max per-GPU load (SGLang's and vLLM's definition; see balancedness.h). */
#include "routing/balancedness.h"

#include <math.h>
#include <stdlib.h>

void mt_gpu_load_contiguous(const int64_t *count, int num_experts, int ep_size, double *gpu_load) {
    for (int g = 0; g < ep_size; g++) {
        int lo = (int)((int64_t)g * num_experts / ep_size);
        int hi = (int)((int64_t)(g + 1) * num_experts / ep_size);
        double s = 0.0;
        for (int e = lo; e < hi; e++) s += (double)count[e];
        gpu_load[g] = s;
    }
}

void mt_gpu_load_placement(const int64_t *count, const int32_t *phy2log, const int32_t *logcnt,
                           int num_physical, int ep_size, double *gpu_load) {
    int per_gpu = num_physical / ep_size;
    for (int g = 0; g < ep_size; g++) {
        double s = 0.0;
        for (int k = 0; k < per_gpu; k++) {
            int e = phy2log[g * per_gpu + k];
            s += (double)count[e] / (double)logcnt[e];
        }
        gpu_load[g] = s;
    }
}

double mt_balancedness_of(const double *gpu_load, int n) {
    double sum = 0.0, max = 0.0;
    for (int i = 0; i < n; i++) {
        sum += gpu_load[i];
        if (gpu_load[i] > max) max = gpu_load[i];
    }
    if (max <= 0.0) return 1.0;
    return sum / n / max;
}

#define STACK_GPUS 1024

double mt_balancedness_contiguous(const int64_t *count, int num_experts, int ep_size) {
    double stack[STACK_GPUS];
    double *load = ep_size <= STACK_GPUS ? stack : malloc((size_t)ep_size * sizeof *load);
    if (!load) return NAN;
    mt_gpu_load_contiguous(count, num_experts, ep_size, load);
    double b = mt_balancedness_of(load, ep_size);
    if (load != stack) free(load);
    return b;
}

double mt_balancedness_placement(const int64_t *count, const int32_t *phy2log, const int32_t *logcnt,
                                 int num_physical, int ep_size) {
    double stack[STACK_GPUS];
    double *load = ep_size <= STACK_GPUS ? stack : malloc((size_t)ep_size * sizeof *load);
    if (!load) return NAN;
    mt_gpu_load_placement(count, phy2log, logcnt, num_physical, ep_size, load);
    double b = mt_balancedness_of(load, ep_size);
    if (load != stack) free(load);
    return b;
}
