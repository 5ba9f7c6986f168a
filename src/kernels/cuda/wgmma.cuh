// Hopper warpgroup matrix instructions (wgmma, sm_90a) for the large product path
// (linear_wgmma.cu) and its tests. Everything here compiles for the compute_90 PTX target too, where
// the instructions are left out (__CUDA_ARCH_FEAT_SM90_ALL unset) and the wgmma steps trap: the host
// only launches wgmma kernels on devices that run the sm_90a code (mt_cuda_wgmma_usable).
//
// Operands: both from shared memory, K-major: A the weights in the tiled layout's core matrices of
// 8 rows x 8 k (16 bytes per row, 128 bytes per core matrix; no swizzle), B the X rows, 128 bytes
// of k per row with the 128-byte swizzle the copy engine writes.
#ifndef MT_KERNELS_CUDA_WGMMA_CUH
#define MT_KERNELS_CUDA_WGMMA_CUH

#include <stdint.h>

// Shared-memory matrix descriptor, no swizzle: start address, the byte distance between core
// matrices adjacent in K (leading) and in M or N (stride).
__device__ __forceinline__ uint64_t mt_wgmma_desc(const void *smem, uint32_t k_step_bytes, uint32_t n_step_bytes) {
    uint32_t addr = (uint32_t)__cvta_generic_to_shared(smem);
    uint64_t d = (uint64_t)((addr >> 4) & 0x3fff);
    d |= (uint64_t)((k_step_bytes >> 4) & 0x3fff) << 16;
    d |= (uint64_t)((n_step_bytes >> 4) & 0x3fff) << 32;
    return d;   // base offset 0, swizzle mode 0 (none)
}

// Shared-memory matrix descriptor of K-major rows of 128 bytes (64 bf16) written with the 128-byte
// swizzle (16-byte unit u of row r at unit u ^ (r % 8), 8-row groups 1024 bytes apart, from a
// 1024-byte boundary); the start moves 32 bytes per 16-wide k step inside the rows.
__device__ __forceinline__ uint64_t mt_wgmma_desc_sw128(const void *smem) {
    uint32_t addr = (uint32_t)__cvta_generic_to_shared(smem);
    uint64_t d = (uint64_t)((addr >> 4) & 0x3fff);
    d |= (uint64_t)1 << 16;                  // leading byte offset: unused with this swizzle
    d |= (uint64_t)(1024 >> 4) << 32;        // stride byte offset: 8-row groups
    d |= (uint64_t)1 << 62;                  // layout: 128-byte swizzle
    return d;
}

// Orders this thread's earlier register accesses before the next wgmma steps (accumulators and A
// fragments written by ordinary instructions).
__device__ __forceinline__ void mt_wgmma_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
// Pins accumulator registers in place across the asynchronous steps (an empty asm that reads and
// writes each), so the compiler moves none of them between steps, which would make ptxas wait for
// the warpgroup before every step.
template <int N>
__device__ __forceinline__ void mt_wgmma_pin(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}
// Closes the group of wgmma steps issued since the last commit.
__device__ __forceinline__ void mt_wgmma_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Waits until at most N committed groups are still running.
template <int N>
__device__ __forceinline__ void mt_wgmma_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Makes this thread's completed shared-memory writes (plain stores, cp.async) visible to the
// tensor cores' reads (the async proxy); a barrier after it extends that to the whole block.
__device__ __forceinline__ void mt_fence_proxy_async() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// d += a . b for one m64n64k16 step: a = 64 weight rows x 16 and b = 64 X rows x 16, both
// from shared memory (descriptors), fp32 accumulate in d; with scale_d 0 the step ignores d's old
// values (d = a . b).
__device__ __forceinline__ void mt_wgmma_n64(float (&d)[32], uint64_t a_desc, uint64_t b_desc, int scale_d) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, %32, %33, p, 1, 1, 0, 0;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(a_desc), "l"(b_desc), "r"(scale_d));
#else
    (void)d; (void)a_desc; (void)b_desc; (void)scale_d;
    __trap();
#endif
}

// d += a . b for one m64n128k16 step: a = 64 weight rows x 16 and b = 128 X rows x 16, both
// from shared memory (descriptors), fp32 accumulate in d; with scale_d 0 the step ignores d's old
// values (d = a . b).
__device__ __forceinline__ void mt_wgmma_n128(float (&d)[64], uint64_t a_desc, uint64_t b_desc, int scale_d) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, %64, %65, p, 1, 1, 0, 0;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a_desc), "l"(b_desc), "r"(scale_d));
#else
    (void)d; (void)a_desc; (void)b_desc; (void)scale_d;
    __trap();
#endif
}


#endif
