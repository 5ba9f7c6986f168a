// Helpers of the CUDA kernel tests: checked CUDA calls, vectors to and from the device, an expert
// sort made on the host for grouped products.
#ifndef MT_TESTS_CUDA_TEST_UTIL_CUH
#define MT_TESTS_CUDA_TEST_UTIL_CUH

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

#include "kernels/cuda/cuda_kernels.h"

#define CK(call)                                                                                  \
    do {                                                                                          \
        cudaError_t e_ = (call);                                                                  \
        if (e_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

// A device copy of v (16 bytes of slack past the end for vector loads).
template <typename T>
static T *to_dev(const std::vector<T> &v) {
    T *d;
    CK(cudaMalloc(&d, v.size() * sizeof(T) + 16));
    CK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

template <typename T>
static std::vector<T> from_dev(const T *d, size_t n) {
    std::vector<T> v(n);
    CK(cudaMemcpy(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
}

// The sort a grouped product reads, made on the host: group e owns counts[e] positions, position i
// of group e reads X row src_of(e, i) (called in group, then position order). Host offsets and
// source rows for references; device copies for the product.
struct HostSort {
    std::vector<int32_t> off, src;
    int total = 0;
    int32_t *doff = nullptr, *dtiles = nullptr, *dact = nullptr, *dsrc = nullptr, *dna = nullptr;

    // The product's grouped fields (max_work as the large path needs it).
    void set_grouped(mt_linear_args &a, int tile_rows) const {
        int E = (int)off.size() - 1;
        a.group_offsets = doff;
        a.src_rows = dsrc;
        a.active = dact;
        a.n_active = dna;
        a.tile_offsets = dtiles;
        a.n_groups = E;
        a.tile_rows = tile_rows;
        a.max_work = (total + tile_rows - 1) / tile_rows + E;
    }
    std::vector<void *> device_buffers() const { return {doff, dtiles, dact, dsrc, dna}; }
};

template <class SrcOf>
static HostSort host_sort(const std::vector<int> &counts, int tile_rows, SrcOf src_of) {
    int E = (int)counts.size();
    HostSort s;
    std::vector<int32_t> tiles(E + 1, 0), active;
    s.off.assign(E + 1, 0);
    for (int e = 0; e < E; e++) {
        s.off[e + 1] = s.off[e] + counts[e];
        tiles[e + 1] = tiles[e] + (counts[e] + tile_rows - 1) / tile_rows;
        if (counts[e]) active.push_back(e);
        for (int i = 0; i < counts[e]; i++) s.src.push_back(src_of(e, i));
    }
    s.total = s.off[E];
    std::vector<int32_t> na(1, (int32_t)active.size());
    active.resize(3 * (size_t)E);   // then each active group's first position and rows
    for (int y = 0; y < na[0]; y++) {
        active[E + y] = s.off[active[y]];
        active[2 * E + y] = counts[active[y]];
    }
    s.doff = to_dev(s.off);
    s.dtiles = to_dev(tiles);
    s.dact = to_dev(active);
    s.dsrc = to_dev(s.src);
    s.dna = to_dev(na);
    return s;
}

#endif
