/* Paged KV cache with prefix caching and per-token routing storage.
 *
 * Fixed-size blocks of MT_KV_BLOCK positions are shared by all sequences; a sequence owns a block
 * table. Each block stores, per layer, K and V as float32 [MT_KV_BLOCK, kv_dim], and the routing of
 * its tokens [MT_KV_BLOCK, num_layers, top_k] in the narrowest integer type holding the expert ids
 * (uint8 for <= 255 experts; the all-ones value means "dense layer"). Routing thus lives and dies
 * with the cached prefix: a prefix-cache hit returns the routing computed when those tokens were
 * first forwarded.
 *
 * Prefix caching: a full block can be published under a hash of its tokens and of everything before
 * them (mt_kv_block_hash). Blocks are reference counted; a published block nobody uses stays cached
 * (least recently used first out) until its memory is needed. */
#ifndef MT_ENGINE_KV_CACHE_H
#define MT_ENGINE_KV_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define MT_KV_BLOCK 16

typedef struct mt_kv_cache {
    int num_layers;
    int kv_dim;           /* num_key_value_heads * head_dim */
    int num_blocks;
    float *k, *v;         /* [num_blocks, num_layers, MT_KV_BLOCK, kv_dim]; NULL on a device */
    void *dev_k, *dev_v;  /* device K/V (bf16, same layout) when the model runs on a GPU */
    /* routing */
    int top_k;            /* 0: no routing storage */
    int routing_bytes;    /* 1, 2 or 4 per id */
    uint8_t *routing;     /* [num_blocks, MT_KV_BLOCK, num_layers, top_k] */
    /* block bookkeeping */
    int32_t *refcount;    /* [num_blocks] */
    uint64_t *hash;       /* [num_blocks] valid when published[b] */
    bool *published;
    int32_t *free_list;   /* never-published free blocks (stack) */
    int num_free;
    int32_t *lru_prev, *lru_next; /* published blocks with refcount 0, oldest first */
    int32_t lru_head, lru_tail;
    int num_lru;
    int32_t *bucket, *chain;      /* hash -> published block */
    int num_buckets;
    long hits, lookups;           /* prefix-cache statistics, in blocks: adopted (mt_kv_seq_adopt counts
                                     them) and looked up (the admitting caller counts those) */
} mt_kv_cache;

typedef struct mt_kv_seq {
    int32_t *blocks;      /* block table */
    int num_blocks;
    int capacity;
} mt_kv_seq;

/* top_k and num_experts size the routing storage (top_k 0: none). */
int mt_kv_cache_init(mt_kv_cache *c, int num_layers, int kv_dim, int num_blocks, mt_err *err);
/* A cache shaped for model m, with its K/V where m computes (host, or the model's device). */
struct mt_model;
int mt_kv_cache_init_model(mt_kv_cache *c, const struct mt_model *m, int num_blocks, mt_err *err);
int mt_kv_cache_init_routing(mt_kv_cache *c, int top_k, int num_experts, mt_err *err);
void mt_kv_cache_free(mt_kv_cache *c);

/* Bytes one block of MT_KV_BLOCK positions takes in the memory its K/V live in: float32 K and V on
 * the host, with the block's routing (top_k ids a position and layer, the narrowest type that holds
 * num_experts); bf16 K and V on a device (the routing stays on the host). */
double mt_kv_block_bytes(int num_layers, int kv_dim, int top_k, int num_experts, bool on_device);

/* A cache sized from memory: room for a full context (`context` positions) for each of max_running
 * sequences, cut to what `fraction` of `available` bytes holds at block_bytes a block, and at least
 * 16 blocks. available 0 (unknown) gives the full-context size. *capped (may be NULL) tells whether
 * memory cut it. */
int mt_kv_blocks_for_memory(double available, double fraction, double block_bytes, int context, int max_running,
                            bool *capped);

/* Blocks a sequence could still get (free + evictable). */
int mt_kv_available(const mt_kv_cache *c);

/* Ensures s has blocks for positions [0, num_positions). Fails (nothing changed) when too few
 * blocks are free or evictable. */
int mt_kv_seq_reserve(mt_kv_cache *c, mt_kv_seq *s, int num_positions, mt_err *err);
/* Drops s's references; published blocks stay cached, others return to the free list. */
void mt_kv_seq_release(mt_kv_cache *c, mt_kv_seq *s);

/* Prefix caching. The hash of block i chains the hash of block i-1 (0 for the first). */
uint64_t mt_kv_block_hash(uint64_t parent, const int32_t *tokens);
/* Whether a block is published under h (no reference taken, no statistics counted). */
bool mt_kv_cached(const mt_kv_cache *c, uint64_t h);
/* Appends to s the cached block published under h (taking a reference, counting a hit); false when
 * absent. */
bool mt_kv_seq_adopt(mt_kv_cache *c, mt_kv_seq *s, uint64_t h);
/* Forgets every published block (the prefix cache empties): cached blocks nobody uses become free,
 * blocks sequences use stay theirs. Returns how many blocks were published. */
int mt_kv_flush(mt_kv_cache *c);
/* Publishes block index i of s under h (no-op when h is already published by another block). */
void mt_kv_publish(mt_kv_cache *c, const mt_kv_seq *s, int i, uint64_t h);

/* Address of K (or V) of one position of one layer of a sequence. */
static inline float *mt_kv_at(const mt_kv_cache *c, float *base, const mt_kv_seq *s, int layer, int pos) {
    int32_t block = s->blocks[pos / MT_KV_BLOCK];
    size_t off = (((size_t)block * c->num_layers + layer) * MT_KV_BLOCK + pos % MT_KV_BLOCK) * c->kv_dim;
    return base + off;
}

/* Routing of one token at one layer: write top_k ids, read them back (-1 for dense layers). */
void mt_kv_routing_write(mt_kv_cache *c, const mt_kv_seq *s, int pos, int layer, const int32_t *ids);
void mt_kv_routing_read(const mt_kv_cache *c, const mt_kv_seq *s, int pos, int32_t *out /* [layers*top_k] */);

#endif
