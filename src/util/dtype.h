/* Element types of checkpoint tensors and the conversions the kernels use.
 * BF16 and F16 are stored as raw uint16_t bit patterns. */
#ifndef MT_UTIL_DTYPE_H
#define MT_UTIL_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum mt_dtype {
    MT_F32 = 0,
    MT_F16,
    MT_BF16,
    MT_DTYPE_COUNT
} mt_dtype;

/* Bytes per element. */
static inline size_t mt_dtype_size(mt_dtype t) { return t == MT_F32 ? 4 : 2; }

/* "F32", "F16", "BF16" (safetensors spelling). */
const char *mt_dtype_name(mt_dtype t);

static inline float mt_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, NaN kept quiet. */
static inline uint16_t mt_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float mt_f16_to_f32(uint16_t h);
uint16_t mt_f32_to_f16(float f);

/* Reads element i of a tensor of type t as float. */
static inline float mt_load_f32(mt_dtype t, const void *data, size_t i) {
    switch (t) {
    case MT_F32: return ((const float *)data)[i];
    case MT_BF16: return mt_bf16_to_f32(((const uint16_t *)data)[i]);
    default: return mt_f16_to_f32(((const uint16_t *)data)[i]);
    }
}

#endif
