// Weight preparation on the device: row-major checkpoint data (f32, f16, bf16) into the tiled bf16
// layout of cuda_kernels.h, deterministic random fills for --load-format dummy, plain conversions.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/mma.cuh"

namespace {

__global__ void tile_rows_kernel(bf16 *dst, int K, const void *src, int dtype, int n_rows, int first_row, int mode) {
    size_t total = (size_t)n_rows * K;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        int i = first_row + (int)(e / K), k = (int)(e % K);
        int row = mode == MT_ROWS_DIRECT ? i : (i / 8) * 16 + (mode == MT_ROWS_UP ? 8 : 0) + i % 8;
        dst[mt_tiled_offset(row, k, K)] = __float2bfloat16(mt_load_any(src, dtype, e));
    }
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__global__ void fill_random_kernel(bf16 *dst, size_t n, float scale, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = mix64(seed + 0x9e3779b97f4a7c15ull * (i + 1));
        float u = (float)(z >> 40) / 16777216.0f;   // [0, 1)
        dst[i] = __float2bfloat16((2.0f * u - 1.0f) * scale);
    }
}

__global__ void convert_bf16_kernel(bf16 *dst, const void *src, int dtype, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16(mt_load_any(src, dtype, i));
}

__global__ void convert_f32_kernel(float *dst, const void *src, int dtype, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = mt_load_any(src, dtype, i);
}

__global__ void fill_f32_kernel(float *dst, size_t n, float v) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) dst[i] = v;
}

unsigned grid_for(size_t n) {
    size_t b = (n + 255) / 256;
    return (unsigned)(b < 65536 ? (b ? b : 1) : 65536);
}

}  // namespace

void mt_cuda_tile_rows(bf16 *dst, int K, const void *src, int src_dtype, int n_rows, int first_row, int mode,
                       cudaStream_t st) {
    size_t n = (size_t)n_rows * K;
    if (n) tile_rows_kernel<<<grid_for(n), 256, 0, st>>>(dst, K, src, src_dtype, n_rows, first_row, mode);
}

void mt_cuda_fill_random(bf16 *dst, size_t n, float scale, uint64_t seed, cudaStream_t st) {
    if (n) fill_random_kernel<<<grid_for(n), 256, 0, st>>>(dst, n, scale, seed);
}

void mt_cuda_convert_bf16(bf16 *dst, const void *src, int src_dtype, size_t n, cudaStream_t st) {
    if (n) convert_bf16_kernel<<<grid_for(n), 256, 0, st>>>(dst, src, src_dtype, n);
}

void mt_cuda_convert_f32(float *dst, const void *src, int src_dtype, size_t n, cudaStream_t st) {
    if (n) convert_f32_kernel<<<grid_for(n), 256, 0, st>>>(dst, src, src_dtype, n);
}

void mt_cuda_fill_f32(float *dst, size_t n, float value, cudaStream_t st) {
    if (n) fill_f32_kernel<<<grid_for(n), 256, 0, st>>>(dst, n, value);
}
