/* Paged KV cache: fixed-size blocks of MT_KV_BLOCK positions, shared by all sequences, and a block
 * table per sequence. Storage per block and layer: K and V as float32 [MT_KV_BLOCK, kv_dim].
 * A sequence must reserve blocks for the positions it is about to forward (mt_kv_seq_reserve)
 * before the forward pass writes them. */
#ifndef MT_ENGINE_KV_CACHE_H
#define MT_ENGINE_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define MT_KV_BLOCK 16

typedef struct mt_kv_cache {
    int num_layers;
    int kv_dim;           /* num_key_value_heads * head_dim */
    int num_blocks;
    float *k, *v;         /* [num_blocks, num_layers, MT_KV_BLOCK, kv_dim] */
    int32_t *free_list;   /* stack of free block ids */
    int num_free;
} mt_kv_cache;

typedef struct mt_kv_seq {
    int32_t *blocks;      /* block table */
    int num_blocks;
    int capacity;
} mt_kv_seq;

int mt_kv_cache_init(mt_kv_cache *c, int num_layers, int kv_dim, int num_blocks, mt_err *err);
void mt_kv_cache_free(mt_kv_cache *c);

/* Ensures s has blocks for positions [0, num_positions). Fails (nothing changed) when the cache
 * has too few free blocks. */
int mt_kv_seq_reserve(mt_kv_cache *c, mt_kv_seq *s, int num_positions, mt_err *err);
/* Returns every block of s to the cache. */
void mt_kv_seq_release(mt_kv_cache *c, mt_kv_seq *s);

/* Address of K (or V) of one position of one layer of a sequence. */
static inline float *mt_kv_at(const mt_kv_cache *c, float *base, const mt_kv_seq *s, int layer, int pos) {
    int32_t block = s->blocks[pos / MT_KV_BLOCK];
    size_t off = (((size_t)block * c->num_layers + layer) * MT_KV_BLOCK + pos % MT_KV_BLOCK) * c->kv_dim;
    return base + off;
}

#endif
