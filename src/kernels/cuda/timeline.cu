// Host side of the kernel timeline (timeline.h): the record buffer and the binding of every
// translation unit's pointer to it. Units register only in timeline builds (timeline.cuh), so
// elsewhere there is nothing to bind and recording is refused.
#include <string.h>

#include "kernels/cuda/timeline.cuh"

namespace {
constexpr int MAX_UNITS = 64;
mt_tl_binder binders[MAX_UNITS];
int n_binders = 0;
mt_tl_buffer *dev_buf = nullptr;   // device copy of the header
mt_tl_block *dev_rec = nullptr;
size_t dev_cap = 0;

void bind_all(mt_tl_buffer *b) {
    for (int i = 0; i < n_binders; i++) binders[i](b);
}
}  // namespace

int mt_tl_register(mt_tl_binder bind) {
    if (n_binders < MAX_UNITS) binders[n_binders++] = bind;
    return n_binders;
}

int mt_cuda_timeline_begin(size_t cap) {
    size_t per = (cap + MT_TL_SMS - 1) / MT_TL_SMS;
    if (per == 0 || n_binders == 0) return -1;
    if (per > dev_cap) {
        cudaFree(dev_rec);
        dev_rec = nullptr;
        dev_cap = 0;
        if (cudaMalloc(&dev_rec, per * MT_TL_SMS * sizeof(mt_tl_block)) != cudaSuccess) return -1;
        dev_cap = per;
    }
    if (!dev_buf && cudaMalloc(&dev_buf, sizeof(mt_tl_buffer)) != cudaSuccess) return -1;
    mt_tl_buffer h;
    memset(&h, 0, sizeof h);
    h.cap = per;
    h.rec = dev_rec;
    if (cudaMemcpy(dev_buf, &h, sizeof h, cudaMemcpyHostToDevice) != cudaSuccess) return -1;
    bind_all(dev_buf);
    return cudaDeviceSynchronize() == cudaSuccess ? 0 : -1;
}

size_t mt_cuda_timeline_end(mt_tl_block *out, size_t cap, size_t *recorded_out) {
    if (recorded_out) *recorded_out = 0;
    if (!dev_buf || cudaDeviceSynchronize() != cudaSuccess) return 0;
    bind_all(nullptr);
    mt_tl_buffer h;
    if (cudaMemcpy(&h, dev_buf, sizeof h, cudaMemcpyDeviceToHost) != cudaSuccess) return 0;
    size_t recorded = 0, copied = 0;
    for (int sm = 0; sm < MT_TL_SMS; sm++) {
        size_t n = h.count[sm] < h.cap ? (size_t)h.count[sm] : (size_t)h.cap;
        recorded += (size_t)h.count[sm];
        if (n > cap - copied) n = cap - copied;
        if (n && cudaMemcpy(out + copied, dev_rec + (size_t)sm * h.cap, n * sizeof(mt_tl_block), cudaMemcpyDeviceToHost) != cudaSuccess)
            return 0;
        copied += n;
    }
    if (recorded_out) *recorded_out = recorded;
    return copied;
}
