#include "engine/kv_cache.h"

#include <stdlib.h>
#include <string.h>

int mt_kv_cache_init(mt_kv_cache *c, int num_layers, int kv_dim, int num_blocks, mt_err *err) {
    memset(c, 0, sizeof *c);
    size_t per = (size_t)num_blocks * num_layers * MT_KV_BLOCK * kv_dim;
    c->num_layers = num_layers;
    c->kv_dim = kv_dim;
    c->num_blocks = num_blocks;
    c->k = malloc(per * sizeof(float));
    c->v = malloc(per * sizeof(float));
    c->free_list = malloc((size_t)num_blocks * sizeof *c->free_list);
    if (!c->k || !c->v || !c->free_list) {
        mt_kv_cache_free(c);
        return mt_errf(err, "out of memory for a KV cache of %d blocks", num_blocks);
    }
    for (int i = 0; i < num_blocks; i++) c->free_list[i] = num_blocks - 1 - i;
    c->num_free = num_blocks;
    return 0;
}

void mt_kv_cache_free(mt_kv_cache *c) {
    free(c->k);
    free(c->v);
    free(c->free_list);
    memset(c, 0, sizeof *c);
}

int mt_kv_seq_reserve(mt_kv_cache *c, mt_kv_seq *s, int num_positions, mt_err *err) {
    int need = (num_positions + MT_KV_BLOCK - 1) / MT_KV_BLOCK;
    if (need <= s->num_blocks) return 0;
    if (need - s->num_blocks > c->num_free)
        return mt_errf(err, "KV cache full: %d positions need %d more blocks, %d free", num_positions,
                       need - s->num_blocks, c->num_free);
    if (need > s->capacity) {
        int cap = s->capacity ? s->capacity : 4;
        while (cap < need) cap *= 2;
        int32_t *b = realloc(s->blocks, (size_t)cap * sizeof *b);
        if (!b) return mt_errf(err, "out of memory for a block table");
        s->blocks = b;
        s->capacity = cap;
    }
    while (s->num_blocks < need) s->blocks[s->num_blocks++] = c->free_list[--c->num_free];
    return 0;
}

void mt_kv_seq_release(mt_kv_cache *c, mt_kv_seq *s) {
    for (int i = s->num_blocks - 1; i >= 0; i--) c->free_list[c->num_free++] = s->blocks[i];
    free(s->blocks);
    memset(s, 0, sizeof *s);
}
