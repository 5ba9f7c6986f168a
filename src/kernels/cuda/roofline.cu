// The two ceilings benchmarks report against, measured on the device at hand: device-to-device
// copy bandwidth (bytes read plus written) and a large bf16 cuBLAS matrix product.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_kernels.h"

extern "C" {
#include "engine/cuda_backend.h"
}

namespace {

float time_ms(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, a, b);
    return ms;
}

float median(float *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            float t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return v[n / 2];
}

}  // namespace

extern "C" int mt_cuda_rooflines(double *copy_gbps, double *bf16_tflops, mt_err *err) {
    const size_t bytes = (size_t)2 << 30;   // 2 GiB each way: far beyond L2
    const int N = 8192, reps = 10;
    void *a = nullptr, *b = nullptr, *c = nullptr;
    cudaEvent_t e0, e1;
    cublasHandle_t h = nullptr;
    float t[reps];
    int rc = -1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
        mt_errf(err, "rooflines: cannot allocate 2 x 2 GiB on the device");
        goto done;
    }
    mt_cuda_fill_random((bf16 *)a, bytes / 2, 1.0f, 1, 0);
    for (int i = 0; i < reps + 2; i++) {
        cudaEventRecord(e0);
        cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        if (i >= 2) t[i - 2] = time_ms(e0, e1);
    }
    *copy_gbps = 2.0 * (double)bytes / (median(t, reps) * 1e-3) / 1e9;
    // bf16 GEMM N x N x N on random data (operands carved from the copy buffers)
    c = (char *)b + (size_t)N * N * 2;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        mt_errf(err, "rooflines: cublasCreate failed");
        goto done;
    }
    {
        float alpha = 1.0f, beta = 0.0f;
        for (int i = 0; i < reps + 3; i++) {
            cudaEventRecord(e0);
            cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, N, N, N, &alpha, a, CUDA_R_16BF, N,
                                            (char *)a + (size_t)N * N * 2, CUDA_R_16BF, N, &beta, c, CUDA_R_16BF, N,
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
            cudaEventRecord(e1);
            cudaEventSynchronize(e1);
            if (s != CUBLAS_STATUS_SUCCESS) {
                mt_errf(err, "rooflines: cublasGemmEx failed (%d)", (int)s);
                goto done;
            }
            if (i >= 3) t[i - 3] = time_ms(e0, e1);
        }
        *bf16_tflops = 2.0 * N * (double)N * N / (median(t, reps) * 1e-3) / 1e12;
    }
    rc = 0;
done:
    if (h) cublasDestroy(h);
    cudaFree(a);
    cudaFree(b);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return rc;
}
