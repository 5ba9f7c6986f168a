/* Wire encodings of a per-request routing array (SPEC §2): the C-order ids of
 * [rows, num_hidden_layers, top_k] as little-endian int32 (the default, SGLang and vLLM
 * compatible), int16, or uint8 (only when num_experts <= 255; -1 of dense layers written as 255). */
#ifndef MT_ROUTING_ROUTING_WIRE_H
#define MT_ROUTING_ROUTING_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef enum mt_routing_dtype { MT_ROUTING_INT32, MT_ROUTING_INT16, MT_ROUTING_UINT8 } mt_routing_dtype;

/* "int32" | "int16" | "uint8"; anything else is an error naming the value. */
int mt_routing_dtype_parse(const char *name, mt_routing_dtype *d, mt_err *err);
const char *mt_routing_dtype_name(mt_routing_dtype d);
size_t mt_routing_dtype_size(mt_routing_dtype d);
/* Whether ids of a model with num_experts experts fit the dtype (uint8: <= 255, int16: <= 32767). */
int mt_routing_dtype_fits(mt_routing_dtype d, int num_experts);

/* Writes n ids (int32, -1 for dense layers) into dst as n little-endian values of dtype d. */
void mt_routing_pack(const int32_t *ids, size_t n, mt_routing_dtype d, uint8_t *dst);
/* The inverse: n values of dtype d into int32 ids (uint8 255 and int16 -1 back to -1). */
void mt_routing_unpack(const uint8_t *src, size_t n, mt_routing_dtype d, int32_t *ids);

#endif
