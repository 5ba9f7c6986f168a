/* Balancedness of one layer's expert load over an expert-parallel size (SPEC §4), as SGLang and vLLM
 * define it: the load of a GPU is the tokens routed to the physical experts it holds, and
 * balancedness = mean GPU load / max GPU load (1.0 is perfect; a layer with no load counts as 1.0).
 *
 * Without a placement, the num_experts logical experts are split into ep_size contiguous blocks
 * (GPU g holds experts [floor(g*E/M), floor((g+1)*E/M)), equal blocks when M divides E). SPEC §4
 * asks for equal blocks: the recorder and `moetrace report` refuse an ep_size that does not divide
 * num_experts, and run/profile/serve --ep-size run the trivial placement, which needs it too.
 * With a placement (phy2log over num_physical slots, slot s on GPU s / (num_physical/M)), a logical
 * expert's load is split evenly over its replicas. Pure functions, no allocation. */
#ifndef MT_ROUTING_BALANCEDNESS_H
#define MT_ROUTING_BALANCEDNESS_H

#include <stdint.h>

/* Per-GPU loads of the contiguous split into gpu_load[ep_size]. ep_size in 1..num_experts. */
void mt_gpu_load_contiguous(const int64_t *count, int num_experts, int ep_size, double *gpu_load);

/* Per-GPU loads under a placement into gpu_load[ep_size]. logcnt[e] is the number of slots holding
 * expert e (>= 1 for every expert that phy2log names); num_physical % ep_size == 0. */
void mt_gpu_load_placement(const int64_t *count, const int32_t *phy2log, const int32_t *logcnt,
                           int num_physical, int ep_size, double *gpu_load);

/* mean / max of gpu_load[n]; 1.0 when the max is 0. */
double mt_balancedness_of(const double *gpu_load, int n);

/* Shorthands: the two loads above followed by mt_balancedness_of (NAN only if out of memory). */
double mt_balancedness_contiguous(const int64_t *count, int num_experts, int ep_size);
double mt_balancedness_placement(const int64_t *count, const int32_t *phy2log, const int32_t *logcnt,
                                 int num_physical, int ep_size);

#endif
