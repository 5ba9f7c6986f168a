// Whether kernels start early under programmatic dependent launch (see launch.cuh), and the
// device's multiprocessor count that launches size their grids by.
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/launch.cuh"

bool mt_pdl_enabled() {
    static int on = -1;
    if (on < 0) {
        const char *env = getenv("MOETRACE_CUDA_PDL");
        int dev = 0, major = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        on = major >= 9 && !(env && !strcmp(env, "0")) ? 1 : 0;
    }
    return on == 1;
}

int mt_cuda_sm_count() {
    static int n = 0;
    if (!n) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
            n <= 0)
            n = 1;
    }
    return n;
}

size_t mt_cuda_l2_keep_setup(size_t want) {
    int dev = 0, most = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&most, cudaDevAttrMaxPersistingL2CacheSize, dev) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    size_t set = want < (size_t)most ? want : (size_t)most;
    if (cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, set) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    size_t got = 0;
    cudaDeviceGetLimit(&got, cudaLimitPersistingL2CacheSize);
    return got;
}
