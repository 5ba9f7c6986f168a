// Kernel launches with programmatic dependent launch (Hopper): a kernel launched by mt_launch may
// start while the kernel before it in the stream is finishing, so its launch and prologue (weight
// prefetches) overlap that kernel's tail. Every kernel launched this way calls
// mt_grid_dependency_wait() before it touches anything an earlier kernel writes or reads (and
// before any early return), which waits for the earlier kernels to complete with their memory
// visible; the order of results is therefore exactly the stream order. MOETRACE_CUDA_PDL=0 turns
// the early starts off (plain stream order) for comparisons.
//
// What a kernel may read before its wait: what no kernel writes (weights), the pass's inputs (copied
// in before its first kernel), and what kernels two or more launches back wrote. The last holds
// because a kernel lets its dependents start only once its own wait has returned (below), that is
// once the kernel before it has completed: when kernel N starts, kernel N-2 is done. Such reads of
// data written on the device go through L2 (__ldcg, cp.async.cg), never a multiprocessor's L1,
// which an earlier launch may have filled with older values.
#ifndef MT_KERNELS_CUDA_LAUNCH_CUH
#define MT_KERNELS_CUDA_LAUNCH_CUH

#include <cuda_runtime.h>
#include <utility>

#include "kernels/cuda/timeline.cuh"

__device__ __forceinline__ void mt_grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    mt_tl_waited();
    // the next kernel may be scheduled as soon as every block of this one has started
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Starts an asynchronous fetch of [p, p + bytes) into L2 (bytes a multiple of 16); for weights, which
// no kernel writes, before mt_grid_dependency_wait().
__device__ __forceinline__ void mt_prefetch_l2(const void *p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#endif
}

// The same with the lines kept: they are evicted last, in the L2 set aside for persisting
// accesses (mt_cuda_l2_keep_setup), so a later launch finds them there after other launches have
// streamed far more than L2 holds through it.
__device__ __forceinline__ void mt_prefetch_l2_keep(const void *p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(policy));
    asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;\n" ::"l"(p), "r"(bytes), "l"(policy) : "memory");
#endif
}

// Block blockIdx.x's even share of [p, p + bytes) by mt_prefetch_l2_keep, from one thread.
__device__ __forceinline__ void mt_prefetch_l2_keep_share(const void *p, size_t bytes) {
    const size_t share = ((bytes + gridDim.x - 1) / gridDim.x + 255) & ~(size_t)255;
    const size_t b0 = share * blockIdx.x;
    if (b0 < bytes) mt_prefetch_l2_keep(static_cast<const char *>(p) + b0, (unsigned)(bytes - b0 < share ? bytes - b0 : share));
}

bool mt_pdl_enabled();   // set once from MOETRACE_CUDA_PDL and the device (launch.cu)
int mt_cuda_sm_count();   // multiprocessors of the current device, read once (launch.cu)

// cluster_x > 0: the grid runs as clusters of cluster_x blocks (sm_90), which may share their
// shared memory.
template <typename... KernelArgs, typename... Args>
inline void mt_launch_clusters(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                               int cluster_x, Args &&...args) {
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = mt_pdl_enabled() ? 1 : 0;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    if (cluster_x > 0) {
        attr[1].id = cudaLaunchAttributeClusterDimension;
        attr[1].val.clusterDim.x = (unsigned)cluster_x;
        attr[1].val.clusterDim.y = 1;
        attr[1].val.clusterDim.z = 1;
        cfg.numAttrs = 2;
    }
    cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

template <typename... KernelArgs, typename... Args>
inline void mt_launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args &&...args) {
    mt_launch_clusters(kernel, grid, block, smem, st, 0, std::forward<Args>(args)...);
}

#endif
