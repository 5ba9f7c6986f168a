#include "routing/routing_wire.h"

#include <string.h>

static const char *const DTYPE_NAMES[] = {"int32", "int16", "uint8"};

int mt_routing_dtype_parse(const char *name, mt_routing_dtype *d, mt_err *err) {
    for (int i = 0; i < 3; i++) {
        if (name && !strcmp(name, DTYPE_NAMES[i])) {
            *d = (mt_routing_dtype)i;
            return 0;
        }
    }
    return mt_errf(err, "routed_experts_dtype '%s': expected int32, int16 or uint8", name ? name : "(null)");
}

const char *mt_routing_dtype_name(mt_routing_dtype d) { return (unsigned)d < 3 ? DTYPE_NAMES[d] : "?"; }

size_t mt_routing_dtype_size(mt_routing_dtype d) { return d == MT_ROUTING_INT32 ? 4 : d == MT_ROUTING_INT16 ? 2 : 1; }

int mt_routing_dtype_fits(mt_routing_dtype d, int num_experts) {
    if (d == MT_ROUTING_UINT8) return num_experts <= 255;
    if (d == MT_ROUTING_INT16) return num_experts <= 32767;
    return 1;
}

void mt_routing_pack(const int32_t *ids, size_t n, mt_routing_dtype d, uint8_t *dst) {
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        switch (d) {
        case MT_ROUTING_INT32:
            dst[4 * i] = (uint8_t)v;
            dst[4 * i + 1] = (uint8_t)(v >> 8);
            dst[4 * i + 2] = (uint8_t)(v >> 16);
            dst[4 * i + 3] = (uint8_t)(v >> 24);
            break;
        case MT_ROUTING_INT16:
            dst[2 * i] = (uint8_t)v;
            dst[2 * i + 1] = (uint8_t)(v >> 8);
            break;
        case MT_ROUTING_UINT8:
            dst[i] = (uint8_t)v; /* -1 -> 255 */
            break;
        }
    }
}

void mt_routing_unpack(const uint8_t *src, size_t n, mt_routing_dtype d, int32_t *ids) {
    for (size_t i = 0; i < n; i++) {
        switch (d) {
        case MT_ROUTING_INT32:
            ids[i] = (int32_t)((uint32_t)src[4 * i] | (uint32_t)src[4 * i + 1] << 8 | (uint32_t)src[4 * i + 2] << 16 |
                               (uint32_t)src[4 * i + 3] << 24);
            break;
        case MT_ROUTING_INT16:
            ids[i] = (int16_t)(uint16_t)((unsigned)src[2 * i] | (unsigned)src[2 * i + 1] << 8);
            break;
        case MT_ROUTING_UINT8:
            ids[i] = src[i] == 255 ? -1 : src[i];
            break;
        }
    }
}
