// Device side of the kernel timeline (timeline.h). MT_TIMELINE_KERNEL(kind) opens a kernel: in
// timeline builds (MT_TIMELINE defined) it stamps the block's start and, when the block's last warp
// leaves, writes the block's record; mt_tl_waited() (called by mt_grid_dependency_wait) stamps the
// wait's return; MT_TIMELINE_MARK(i) (i < 2), the first time the block's first thread passes it.
// Elsewhere all are empty. Each translation unit holds its own pointer to the record buffer
// (device globals are per unit without relocatable device code); a static registration gives
// timeline.cu a way to set all of them, and a build where no unit registered has no timeline.
#ifndef MT_KERNELS_CUDA_TIMELINE_CUH
#define MT_KERNELS_CUDA_TIMELINE_CUH

#include <cuda_runtime.h>

#include "kernels/cuda/timeline.h"

// Records are kept per multiprocessor (MT_TL_SMS regions of cap records each, counted apart), so
// the blocks of a launch do not queue on one counter.
enum { MT_TL_SMS = 256 };
struct mt_tl_buffer {
    unsigned long long cap;                   // records per region
    unsigned long long count[MT_TL_SMS];      // records written (or attempted) per region
    mt_tl_block *rec;                         // [MT_TL_SMS][cap]
};
typedef void (*mt_tl_binder)(mt_tl_buffer *);
int mt_tl_register(mt_tl_binder bind);   // timeline.cu

#ifdef MT_TIMELINE

namespace {
__device__ mt_tl_buffer *mt_tl_dev;   // this unit's buffer pointer (null: not recording)
void mt_tl_bind(mt_tl_buffer *b) { cudaMemcpyToSymbol(mt_tl_dev, &b, sizeof b); }
const int mt_tl_registered = mt_tl_register(mt_tl_bind);

// 32-byte aligned and sized, so that adding it to a kernel's static shared memory keeps the
// dynamic shared memory's base, where the products' bulk copies land, on a 32-byte boundary
// (mma.cuh): off it, the timeline build's products ran a third slower than the normal build's.
struct __align__(32) mt_tl_state {
    unsigned long long t_enter, t_wait, t_mark[2];
    int warps_left;
};

__device__ __forceinline__ unsigned long long mt_tl_now() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ mt_tl_state &mt_tl_shared() {
    __shared__ mt_tl_state s;
    return s;
}

__device__ __forceinline__ bool mt_tl_first_thread() { return threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0; }

struct mt_tl_guard {
    int kind;
    __device__ explicit mt_tl_guard(int k) : kind(k) {
        if (mt_tl_first_thread()) {
            mt_tl_state &s = mt_tl_shared();
            s.t_enter = mt_tl_now();
            s.t_wait = s.t_mark[0] = s.t_mark[1] = 0;
            s.warps_left = (int)((blockDim.x * blockDim.y * blockDim.z + 31) / 32);
        }
        __syncthreads();
    }
    __device__ ~mt_tl_guard() {
        unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
        if (tid % 32 != 0) return;
        mt_tl_state &s = mt_tl_shared();
        __threadfence_block();
        if (atomicSub(&s.warps_left, 1) != 1) return;
        mt_tl_buffer *b = mt_tl_dev;
        if (!b) return;
        mt_tl_block r;
        r.t_exit = mt_tl_now();   // before the counter's round trip, which is the recording's own
        r.t_enter = s.t_enter;
        r.t_wait = s.t_wait;
        r.t_mark[0] = s.t_mark[0];
        r.t_mark[1] = s.t_mark[1];
        r.kind = (uint32_t)kind;
        r.grid = gridDim.x * gridDim.y * gridDim.z;
        r.block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
        unsigned sm;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
        r.sm = sm;
        sm %= MT_TL_SMS;
        unsigned long long i = atomicAdd(&b->count[sm], 1ull);
        if (i >= b->cap) return;
        i += (unsigned long long)sm * b->cap;
        b->rec[i] = r;
    }
};
}  // namespace

__device__ __forceinline__ void mt_tl_waited() {
    if (mt_tl_first_thread()) mt_tl_shared().t_wait = mt_tl_now();
}

#define MT_TIMELINE_KERNEL(kind) mt_tl_guard mt_tl_guard_(kind)
#define MT_TIMELINE_MARK(i)                                                         \
    do {                                                                            \
        if (mt_tl_first_thread() && !mt_tl_shared().t_mark[i]) mt_tl_shared().t_mark[i] = mt_tl_now(); \
    } while (0)

#else

__device__ __forceinline__ void mt_tl_waited() {}
#define MT_TIMELINE_KERNEL(kind) ((void)0)
#define MT_TIMELINE_MARK(i) ((void)0)

#endif

#endif
