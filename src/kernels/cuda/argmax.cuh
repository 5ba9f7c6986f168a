// The greedy pick's order, shared by the argmax launches (token_ops.cu) and the products that take
// their rows' argmax in their epilogue (linear.cu): the larger value wins, ties go to the lower
// index, and a NaN never wins. It is a total order on (value, index) pairs, so every reduction
// order gives the same pick.
#ifndef MT_KERNELS_CUDA_ARGMAX_CUH
#define MT_KERNELS_CUDA_ARGMAX_CUH

// The index a row with no candidate (or only NaNs) starts from; it reads as token 0.
constexpr int MT_ARGMAX_NONE = 0x7fffffff;

__device__ __forceinline__ void mt_argmax_better(float &bv, int &bi, float v, int i) {
    if (v > bv || (v == bv && i < bi)) {
        bv = v;
        bi = i;
    }
}

#endif
