// Device helpers shared by the CUDA kernels: the one tensor-core instruction every product uses,
// streaming and asynchronous copies, and dtype loads.
#ifndef MT_KERNELS_CUDA_MMA_CUH
#define MT_KERNELS_CUDA_MMA_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// c += a . b for one m16n8k16 tile (bf16 in, fp32 accumulate). Every matrix product and the
// attention use exactly this instruction, so a value's arithmetic never depends on the path.
__device__ __forceinline__ void mt_mma(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// ldmatrix.x4: four 8x8 b16 matrices from shared memory, lanes 8j .. 8j + 7 giving the row
// addresses of matrix j; r[j] is this lane's pair of matrix j (row lane / 4, columns 2 (lane % 4) ..).
__device__ __forceinline__ void mt_ldmatrix_x4(uint32_t r[4], const void *row_lane) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((uint32_t)__cvta_generic_to_shared(row_lane)));
}
// The m16n8k16 A-fragment (a0..a3) of a 16x16 weight tile in shared memory, tiled layout
// (cuda_kernels.h): each lane passes the tile's address + mt_a_frag_lane(lane) elements, and the
// four core matrices come back in fragment order.
__device__ __forceinline__ void mt_ld_a_frag(uint32_t a[4], const void *tile_lane) { mt_ldmatrix_x4(a, tile_lane); }
// Fragment matrix j = lane / 8 holds rows 8 (j & 1) .. and k 8 (j >> 1) .., which the tiled layout
// stores as core matrix 2 (j & 1) + (j >> 1); the lane gives row lane % 8 of it.
__device__ __forceinline__ int mt_a_frag_lane(int lane) {
    int j = lane >> 3;
    return ((j & 1) * 2 + (j >> 1)) * 64 + (lane & 7) * 8;
}

// Dynamic shared memory starts right after the kernel's static shared memory (and the 1 KB the
// device reserves), so its alignment moves with the static part: 4 bytes more of static shared
// memory in the small product path put its bulk copies' destinations 16 bytes past a 32-byte
// boundary and made batch-1 decode 27% slower (docs/PERF.md). A kernel that bulk-copies into
// dynamic shared memory either keeps its static shared memory a multiple of 32 bytes (the
// product kernels, checked by mt_cuda_linear_layout_check; at 32 past a 128-byte boundary the
// large path measured as fast as at one) or takes its base from mt_smem_base, asking for
// MT_SMEM_PAD bytes more: the dynamic shared memory from its first 128-byte boundary.
constexpr int MT_SMEM_PAD = 128;
__device__ __forceinline__ void *mt_smem_base(void *raw) {
    const uint32_t at = (uint32_t)__cvta_generic_to_shared(raw);
    return static_cast<char *>(raw) + ((128u - (at & 127u)) & 127u);
}

// 16 bytes of weights read once: not kept in L1.
__device__ __forceinline__ uint4 mt_ld_stream(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// 16-byte asynchronous copy global -> shared; bytes beyond src_bytes (0 or 16) are zero-filled.
__device__ __forceinline__ void mt_cp_async16(void *smem, const void *gmem, int src_bytes) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
// The same for weights: the L2 fetches 256 bytes on a miss; with the evict-first policy (a product
// that reads each weight once, as decode does) their lines go first, so what is read again
// (activations, slice sums) stays cached.
__device__ __forceinline__ uint64_t mt_weight_policy(bool read_once) {
    uint64_t p;
    if (read_once) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
    else asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;\n" : "=l"(p));
    return p;
}
__device__ __forceinline__ void mt_cp_async16_stream(void *smem, const void *gmem, int src_bytes, uint64_t policy) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global.L2::cache_hint.L2::256B [%0], [%1], 16, %2, %3;\n" ::"r"(s), "l"(gmem),
                 "r"(src_bytes), "l"(policy));
}
__device__ __forceinline__ void mt_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void mt_cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Shared-memory barriers completed by bulk copies (sm_90): one thread arms a barrier with the
// bytes it expects and starts contiguous copies that complete on it; the others wait for the
// phase. A barrier's phases alternate 0, 1, 0, ... with each fill.
__device__ __forceinline__ void mt_mbar_init(uint64_t *bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)), "r"(count));
}
__device__ __forceinline__ void mt_mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mt_mbar_expect(uint64_t *bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)),
                 "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mt_mbar_wait(uint64_t *bar, unsigned parity) {
    uint32_t addr = (uint32_t)__cvta_generic_to_shared(bar);
    asm volatile(
        "{\n.reg .pred done;\nwait_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra wait_%=;\n}\n" ::"r"(addr),
        "r"(parity)
        : "memory");
}
// bytes (a multiple of 16, both addresses 16-byte aligned) from global to shared memory, completing
// on bar, with an L2 policy (mt_weight_policy).
__device__ __forceinline__ void mt_bulk_copy(void *smem, const void *gmem, unsigned bytes, uint64_t *bar, uint64_t policy) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;\n" ::"r"(
            (uint32_t)__cvta_generic_to_shared(smem)),
        "l"(gmem), "r"(bytes), "r"((uint32_t)__cvta_generic_to_shared(bar)), "l"(policy)
        : "memory");
}

// The shared::cluster address of block `rank`'s copy of this block's shared variable at p.
__device__ __forceinline__ uint32_t mt_cluster_addr(const void *p, unsigned rank) {
    uint32_t a;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(a) : "r"((uint32_t)__cvta_generic_to_shared(p)), "r"(rank));
    return a;
}

// v into the shared memory of block `rank` of this cluster at the place of `local` in this block,
// completing 4 bytes on that block's barrier at the place of `bar` (sm_90 st.async: no fence; the
// value is visible to whoever sees the barrier's phase complete).
__device__ __forceinline__ void mt_st_async_remote(const void *local, const uint64_t *bar, unsigned rank, float v) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];\n" ::"r"(
                     mt_cluster_addr(local, rank)),
                 "r"(__float_as_uint(v)), "r"(mt_cluster_addr(bar, rank))
                 : "memory");
}

// The same for two floats (8 bytes, local 8-byte aligned).
__device__ __forceinline__ void mt_st_async_remote2(const void *local, const uint64_t *bar, unsigned rank, float v0, float v1) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.b32 [%0], {%1, %2}, [%3];\n" ::"r"(
                     mt_cluster_addr(local, rank)),
                 "r"(__float_as_uint(v0)), "r"(__float_as_uint(v1)), "r"(mt_cluster_addr(bar, rank))
                 : "memory");
}

// bytes (a multiple of 16, both addresses 16-byte aligned) from this block's shared memory at src
// into block `rank`'s shared memory at the place of `local`, completing on that block's barrier at
// the place of `bar`; committed as a bulk group of the issuing thread.
__device__ __forceinline__ void mt_bulk_copy_to_block(const void *local, const void *src, unsigned bytes, const uint64_t *bar,
                                                      unsigned rank) {
    asm volatile(
        "cp.async.bulk.shared::cluster.shared::cta.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
        "cp.async.bulk.commit_group;\n" ::"r"(mt_cluster_addr(local, rank)),
        "r"((uint32_t)__cvta_generic_to_shared(src)), "r"(bytes), "r"(mt_cluster_addr(bar, rank))
        : "memory");
}

__device__ __forceinline__ uint32_t mt_pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

// Element i of a row-major array of dtype 0 f32, 1 f16, 2 bf16 (util/dtype.h order).
__device__ __forceinline__ float mt_load_any(const void *p, int dtype, size_t i) {
    if (dtype == 0) return ((const float *)p)[i];
    if (dtype == 1) return __half2float(((const __half *)p)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

__device__ __forceinline__ float mt_silu(float g) { return g / (1.0f + expf(-g)); }

#endif
