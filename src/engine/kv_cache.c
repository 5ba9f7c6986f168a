#include "engine/kv_cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cuda_backend.h"
#include "model/model.h"

static int kv_init(mt_kv_cache *c, int num_layers, int kv_dim, int num_blocks, bool host_kv, mt_err *err) {
    memset(c, 0, sizeof *c);
    if (num_blocks <= 0) return mt_errf(err, "KV cache needs at least one block");
    size_t per = (size_t)num_blocks * num_layers * MT_KV_BLOCK * kv_dim;
    size_t nb = (size_t)num_blocks;
    c->num_layers = num_layers;
    c->kv_dim = kv_dim;
    c->num_blocks = num_blocks;
    c->num_buckets = 1;
    while (c->num_buckets < 2 * num_blocks) c->num_buckets *= 2;
    if (host_kv) {
        c->k = malloc(per * sizeof(float));
        c->v = malloc(per * sizeof(float));
    }
    c->refcount = calloc(nb, sizeof *c->refcount);
    c->hash = calloc(nb, sizeof *c->hash);
    c->published = calloc(nb, sizeof *c->published);
    c->free_list = malloc(nb * sizeof *c->free_list);
    c->lru_prev = malloc(nb * sizeof *c->lru_prev);
    c->lru_next = malloc(nb * sizeof *c->lru_next);
    c->chain = malloc(nb * sizeof *c->chain);
    c->bucket = malloc((size_t)c->num_buckets * sizeof *c->bucket);
    if ((host_kv && (!c->k || !c->v)) || !c->refcount || !c->hash || !c->published || !c->free_list || !c->lru_prev ||
        !c->lru_next || !c->chain || !c->bucket) {
        mt_kv_cache_free(c);
        return mt_errf(err, "out of memory for a KV cache of %d blocks", num_blocks);
    }
    for (int i = 0; i < num_blocks; i++) c->free_list[i] = num_blocks - 1 - i;
    c->num_free = num_blocks;
    for (int i = 0; i < c->num_buckets; i++) c->bucket[i] = -1;
    c->lru_head = c->lru_tail = -1;
    return 0;
}

/* Bytes of one stored expert id: the narrowest type holding every id and the dense-layer mark. */
static int routing_id_bytes(int num_experts) { return num_experts <= 255 ? 1 : num_experts <= 32767 ? 2 : 4; }

double mt_kv_block_bytes(int num_layers, int kv_dim, int top_k, int num_experts, bool on_device) {
    double positions = (double)num_layers * MT_KV_BLOCK;
    if (on_device) return positions * kv_dim * 2.0 * 2.0; /* K and V, bf16 */
    return positions * ((double)kv_dim * 2.0 * sizeof(float) + (double)top_k * routing_id_bytes(num_experts));
}

int mt_kv_blocks_for_memory(double available, double fraction, double block_bytes, int context, int max_running,
                            bool *capped) {
    const double most = (double)(1 << 28), least = 16.0;
    double want = ceil((double)context / MT_KV_BLOCK) * (max_running > 0 ? max_running : 1);
    double fit = available > 0 && block_bytes > 0 ? floor(available * fraction / block_bytes) : want;
    double blocks = fit < want ? fit : want;
    if (capped) *capped = fit < want;
    if (blocks < least) blocks = least;
    if (blocks > most) blocks = most;
    return (int)blocks;
}

int mt_kv_cache_init(mt_kv_cache *c, int num_layers, int kv_dim, int num_blocks, mt_err *err) {
    return kv_init(c, num_layers, kv_dim, num_blocks, true, err);
}

int mt_kv_cache_init_model(mt_kv_cache *c, const mt_model *m, int num_blocks, mt_err *err) {
    const mt_config *cfg = &m->cfg;
    if (kv_init(c, cfg->num_hidden_layers, cfg->num_key_value_heads * cfg->head_dim, num_blocks, !m->device, err))
        return -1;
    if (m->device && mt_cuda_kv_init(c, m, err)) {
        mt_kv_cache_free(c);
        return -1;
    }
    return 0;
}

int mt_kv_cache_init_routing(mt_kv_cache *c, int top_k, int num_experts, mt_err *err) {
    c->top_k = top_k;
    c->routing_bytes = routing_id_bytes(num_experts);
    size_t n = (size_t)c->num_blocks * MT_KV_BLOCK * c->num_layers * top_k * c->routing_bytes;
    c->routing = malloc(n ? n : 1);
    if (!c->routing) return mt_errf(err, "out of memory for routing storage");
    memset(c->routing, 0xff, n);
    return 0;
}

void mt_kv_cache_free(mt_kv_cache *c) {
    if (c->dev_k || c->dev_v) mt_cuda_kv_free(c);
    free(c->k); free(c->v); free(c->routing); free(c->refcount); free(c->hash); free(c->published);
    free(c->free_list); free(c->lru_prev); free(c->lru_next); free(c->chain); free(c->bucket);
    memset(c, 0, sizeof *c);
}

int mt_kv_available(const mt_kv_cache *c) { return c->num_free + c->num_lru; }

static void lru_remove(mt_kv_cache *c, int32_t b) {
    int32_t p = c->lru_prev[b], n = c->lru_next[b];
    if (p >= 0) c->lru_next[p] = n; else c->lru_head = n;
    if (n >= 0) c->lru_prev[n] = p; else c->lru_tail = p;
    c->num_lru--;
}

static void lru_push(mt_kv_cache *c, int32_t b) {
    c->lru_prev[b] = c->lru_tail;
    c->lru_next[b] = -1;
    if (c->lru_tail >= 0) c->lru_next[c->lru_tail] = b; else c->lru_head = b;
    c->lru_tail = b;
    c->num_lru++;
}

static size_t bucket_of(const mt_kv_cache *c, uint64_t h) { return (size_t)(h & (uint64_t)(c->num_buckets - 1)); }

static void unpublish(mt_kv_cache *c, int32_t b) {
    int32_t *at = &c->bucket[bucket_of(c, c->hash[b])];
    while (*at != b) at = &c->chain[*at];
    *at = c->chain[b];
    c->published[b] = false;
}

static int32_t find_published(const mt_kv_cache *c, uint64_t h) {
    for (int32_t b = c->bucket[bucket_of(c, h)]; b >= 0; b = c->chain[b])
        if (c->hash[b] == h) return b;
    return -1;
}

/* A fresh block: never-published ones first, else the least recently used cached one. */
static int32_t take_block(mt_kv_cache *c) {
    int32_t b;
    if (c->num_free > 0) {
        b = c->free_list[--c->num_free];
    } else {
        b = c->lru_head;
        lru_remove(c, b);
        unpublish(c, b);
    }
    c->refcount[b] = 1;
    if (c->routing) {
        size_t row = (size_t)MT_KV_BLOCK * c->num_layers * c->top_k * c->routing_bytes;
        memset(c->routing + (size_t)b * row, 0xff, row);
    }
    return b;
}

static int ensure_table(mt_kv_seq *s, int need, mt_err *err) {
    if (need <= s->capacity) return 0;
    int cap = s->capacity ? s->capacity : 4;
    while (cap < need) cap *= 2;
    int32_t *t = realloc(s->blocks, (size_t)cap * sizeof *t);
    if (!t) return mt_errf(err, "out of memory for a block table");
    s->blocks = t;
    s->capacity = cap;
    return 0;
}

int mt_kv_seq_reserve(mt_kv_cache *c, mt_kv_seq *s, int num_positions, mt_err *err) {
    int need = (num_positions + MT_KV_BLOCK - 1) / MT_KV_BLOCK;
    if (need <= s->num_blocks) return 0;
    if (need - s->num_blocks > mt_kv_available(c))
        return mt_errf(err, "KV cache full: %d positions need %d more blocks, %d available", num_positions,
                       need - s->num_blocks, mt_kv_available(c));
    if (ensure_table(s, need, err)) return -1;
    while (s->num_blocks < need) s->blocks[s->num_blocks++] = take_block(c);
    return 0;
}

void mt_kv_seq_release(mt_kv_cache *c, mt_kv_seq *s) {
    for (int i = s->num_blocks - 1; i >= 0; i--) {
        int32_t b = s->blocks[i];
        if (--c->refcount[b] > 0) continue;
        if (c->published[b]) lru_push(c, b);
        else c->free_list[c->num_free++] = b;
    }
    free(s->blocks);
    memset(s, 0, sizeof *s);
}

uint64_t mt_kv_block_hash(uint64_t parent, const int32_t *tokens) {
    uint64_t h = parent ^ 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < MT_KV_BLOCK; i++) {
        h ^= (uint64_t)(uint32_t)tokens[i] + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 33;
    }
    return h ? h : 1;
}

bool mt_kv_cached(const mt_kv_cache *c, uint64_t h) { return find_published(c, h) >= 0; }

bool mt_kv_seq_adopt(mt_kv_cache *c, mt_kv_seq *s, uint64_t h) {
    int32_t b = find_published(c, h);
    if (b < 0 || ensure_table(s, s->num_blocks + 1, NULL)) return false;
    if (c->refcount[b]++ == 0) lru_remove(c, b);
    s->blocks[s->num_blocks++] = b;
    c->hits++;
    return true;
}

int mt_kv_flush(mt_kv_cache *c) {
    int n = 0;
    for (int32_t b = 0; b < c->num_blocks; b++) {
        if (!c->published[b]) continue;
        c->published[b] = false;
        n++;
        if (c->refcount[b] == 0) {
            lru_remove(c, b);
            c->free_list[c->num_free++] = b;
        }
    }
    for (int i = 0; i < c->num_buckets; i++) c->bucket[i] = -1;
    return n;
}

void mt_kv_publish(mt_kv_cache *c, const mt_kv_seq *s, int i, uint64_t h) {
    int32_t b = s->blocks[i];
    if (c->published[b] || find_published(c, h) >= 0) return;
    c->hash[b] = h;
    c->published[b] = true;
    size_t at = bucket_of(c, h);
    c->chain[b] = c->bucket[at];
    c->bucket[at] = b;
}

static uint8_t *routing_at(const mt_kv_cache *c, const mt_kv_seq *s, int pos, int layer) {
    int32_t b = s->blocks[pos / MT_KV_BLOCK];
    size_t idx = (((size_t)b * MT_KV_BLOCK + pos % MT_KV_BLOCK) * c->num_layers + layer) * c->top_k;
    return c->routing + idx * c->routing_bytes;
}

void mt_kv_routing_write(mt_kv_cache *c, const mt_kv_seq *s, int pos, int layer, const int32_t *ids) {
    uint8_t *p = routing_at(c, s, pos, layer);
    for (int j = 0; j < c->top_k; j++) {
        if (c->routing_bytes == 1) p[j] = (uint8_t)ids[j];
        else if (c->routing_bytes == 2) ((uint16_t *)p)[j] = (uint16_t)ids[j];
        else ((int32_t *)p)[j] = ids[j];
    }
}

void mt_kv_routing_read(const mt_kv_cache *c, const mt_kv_seq *s, int pos, int32_t *out) {
    const uint8_t *p = routing_at(c, s, pos, 0);
    int n = c->num_layers * c->top_k;
    for (int j = 0; j < n; j++) {
        if (c->routing_bytes == 1) out[j] = p[j] == 0xff ? -1 : p[j];
        else if (c->routing_bytes == 2) out[j] = ((const uint16_t *)p)[j] == 0xffff ? -1 : ((const uint16_t *)p)[j];
        else out[j] = ((const int32_t *)p)[j];
    }
}
