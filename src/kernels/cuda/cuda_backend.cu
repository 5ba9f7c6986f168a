// CUDA backend entry points. The GPU forward pass grows here; today this unit proves the build
// compiles and links device code and reports which devices exist.
#include <cuda_runtime.h>

extern "C" int mt_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return n;
}
