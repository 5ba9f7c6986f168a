/* Kernel timeline for benchmarks: in builds configured with MOETRACE_CUDA_TIMELINE=ON, every
 * forward kernel's blocks record when they started, when their dependency wait returned and when
 * their last warp left, read from %globaltimer (nanoseconds, one clock for every multiprocessor),
 * so a decode step's real schedule under graphs and programmatic launch can be read back
 * (bench_cuda --figures timeline). Recording adds a barrier and two atomics to each block; other
 * builds record nothing and these calls fail. C and CUDA C++. */
#ifndef MT_KERNELS_CUDA_TIMELINE_H
#define MT_KERNELS_CUDA_TIMELINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What a block was part of. */
enum mt_tl_kind {
    MT_TL_EMBED,
    MT_TL_RMSNORM,
    MT_TL_LINEAR_SMALL,
    MT_TL_LINEAR_LARGE,
    MT_TL_LINEAR_WGMMA,
    MT_TL_SPLIT_REDUCE,
    MT_TL_GATHER_ROWS,
    MT_TL_QK_PREP,
    MT_TL_ATTN_ROWS,
    MT_TL_ATTN_DECODE,
    MT_TL_ATTN_SPLIT,
    MT_TL_ATTN_MERGE,
    MT_TL_ROUTE,
    MT_TL_ROUTE_SORT,
    MT_TL_SORT,
    MT_TL_COMBINE,
    MT_TL_ARGMAX,
    MT_TL_SAMPLE,
    MT_TL_MOE_ROUTER,
    MT_TL_LINEAR_COMBINED,   /* a small-path product with the previous layer's MoE combine folded in */
    MT_TL_KINDS
};
static inline const char *mt_tl_kind_name(int kind) {
    static const char *const names[MT_TL_KINDS] = {
        "embed",      "rmsnorm",    "linear_small", "linear_large", "linear_wgmma", "split_reduce",
        "gather_rows", "qk_prep",   "attn_rows",    "attn_decode",  "attn_split",   "attn_merge",
        "route",      "route_sort", "sort",         "combine",      "argmax",       "sample",
        "moe_router", "linear_combined",
    };
    return kind >= 0 && kind < MT_TL_KINDS ? names[kind] : "?";
}

/* One block of one launch. */
typedef struct mt_tl_block {
    uint64_t t_enter, t_wait, t_exit;   /* ns: first statement, dependency wait returned (0: none), last warp out */
    uint64_t t_mark[2];                 /* ns: the kernel's own marks (MT_TIMELINE_MARK; 0: not reached) */
    uint32_t kind, grid, block, sm;     /* mt_tl_kind, blocks in the launch, this block's index, multiprocessor */
} mt_tl_block;

/* Starts recording (earlier records dropped) into room for about cap blocks, split evenly between
 * the multiprocessors; -1 when this build has no timeline or the buffer cannot be had. */
int mt_cuda_timeline_begin(size_t cap);
/* Stops recording (after the device is idle), copies up to cap records into out, in no particular
 * order, and returns how many it copied; *recorded (when set) gets how many blocks tried to record
 * (more than copied when a multiprocessor's room ran out). */
size_t mt_cuda_timeline_end(mt_tl_block *out, size_t cap, size_t *recorded);

#ifdef __cplusplus
}
#endif

#endif
