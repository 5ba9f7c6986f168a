/* Binds checkpoint tensors (or dummy weights) to the model structure. */
#include "model/model.h"

#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/host_memory.h"

/* Per-architecture tensor names of the MoE block, as published checkpoints spell them. */
typedef struct moe_names {
    const char *block;                   /* "mlp" or "block_sparse_moe" */
    const char *gate, *up, *down;        /* expert projection names */
} moe_names;

static moe_names names_for(mt_arch arch) {
    if (arch == MT_ARCH_MIXTRAL) return (moe_names){"block_sparse_moe", "w1", "w3", "w2"};
    return (moe_names){"mlp", "gate_proj", "up_proj", "down_proj"};
}

typedef struct binder {
    mt_model *m;
    bool dummy;
    bool shapes_only;          /* dummy without host data */
    uint64_t seed;
    mt_err *err;
    unsigned char *used;       /* per checkpoint tensor (name order): bound to the model */
} binder;

static void *own(mt_model *m, size_t bytes) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 64;
        void **o = realloc(m->owned, (size_t)cap * sizeof *o);
        if (!o) return NULL;
        m->owned = o;
        m->cap_owned = cap;
    }
    void *p = malloc(bytes ? bytes : 1);
    if (p) m->owned[m->n_owned++] = p;
    return p;
}

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static uint64_t next_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-scale, scale). */
static float rand_uniform(uint64_t *s, float scale) {
    return ((float)(next_rand(s) >> 40) / (float)(1 << 24) * 2.0f - 1.0f) * scale;
}

static const mt_tensor_info *lookup(binder *b, const char *name, int ndim, int64_t d0, int64_t d1) {
    const mt_tensor_info *t;
    if (mt_checkpoint_get(b->m->ckpt, name, &t, b->err)) return NULL;
    b->used[t - mt_checkpoint_at(b->m->ckpt, 0)] = 1; /* the checkpoint's tensors are one array */
    bool ok = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!ok) {
        char got[128] = "", want[64];
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (ndim == 1) snprintf(want, sizeof want, "%lld", (long long)d0);
        else snprintf(want, sizeof want, "%lld, %lld", (long long)d0, (long long)d1);
        mt_errf(b->err, "tensor '%s' in %s has shape [%s], expected [%s]", name, t->file, got, want);
        return NULL;
    }
    return t;
}

static int bind_mat(binder *b, mt_mat *out, const char *name, int rows, int cols) {
    out->rows = rows;
    out->cols = cols;
    if (b->shapes_only) {
        out->dtype = MT_BF16;
        out->data = NULL;
        return 0;
    }
    if (b->dummy) {
        uint16_t *w = own(b->m, (size_t)rows * cols * sizeof *w);
        if (!w) return mt_errf(b->err, "out of memory for dummy tensor '%s'", name);
        uint64_t s = b->seed ^ hash_name(name);
        float scale = 1.0f / sqrtf((float)cols);
        for (size_t i = 0; i < (size_t)rows * cols; i++) w[i] = mt_f32_to_bf16(rand_uniform(&s, scale));
        out->dtype = MT_BF16;
        out->data = w;
        return 0;
    }
    const mt_tensor_info *t = lookup(b, name, 2, rows, cols);
    if (!t) return -1;
    out->dtype = t->dtype;
    out->data = t->data;
    return 0;
}

/* Small vectors become float32 copies. `fill` is the dummy value (1 for norms, 0 for biases). */
static int bind_vec(binder *b, float **out, const char *name, int n, float fill) {
    float *v = own(b->m, (size_t)n * sizeof *v);
    if (!v) return mt_errf(b->err, "out of memory for '%s'", name);
    if (b->dummy) {
        for (int i = 0; i < n; i++) v[i] = fill;
    } else {
        const mt_tensor_info *t = lookup(b, name, 1, n, 0);
        if (!t) return -1;
        for (int i = 0; i < n; i++) v[i] = mt_load_f32(t->dtype, t->data, (size_t)i);
    }
    *out = v;
    return 0;
}

#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)

static int bind_mlp(binder *b, mt_expert *e, const char *prefix, const char *g, const char *u, const char *d, int inter) {
    char name[512];
    int hidden = b->m->cfg.hidden_size;
    if (bind_mat(b, &e->gate, NAME("%s.%s.weight", prefix, g), inter, hidden)) return -1;
    if (bind_mat(b, &e->up, NAME("%s.%s.weight", prefix, u), inter, hidden)) return -1;
    return bind_mat(b, &e->down, NAME("%s.%s.weight", prefix, d), hidden, inter);
}

static int bind_layer(binder *b, int l) {
    mt_model *m = b->m;
    const mt_config *c = &m->cfg;
    mt_layer *L = &m->layers[l];
    char name[512], prefix[128];
    int H = c->hidden_size, hd = c->head_dim;
    int qdim = c->num_attention_heads * hd, kvdim = c->num_key_value_heads * hd;
    snprintf(prefix, sizeof prefix, "model.layers.%d", l);

    if (bind_vec(b, &L->attn_norm, NAME("%s.input_layernorm.weight", prefix), H, 1.0f)) return -1;
    if (bind_vec(b, &L->mlp_norm, NAME("%s.post_attention_layernorm.weight", prefix), H, 1.0f)) return -1;
    if (bind_mat(b, &L->q, NAME("%s.self_attn.q_proj.weight", prefix), qdim, H)) return -1;
    if (bind_mat(b, &L->k, NAME("%s.self_attn.k_proj.weight", prefix), kvdim, H)) return -1;
    if (bind_mat(b, &L->v, NAME("%s.self_attn.v_proj.weight", prefix), kvdim, H)) return -1;
    if (bind_mat(b, &L->o, NAME("%s.self_attn.o_proj.weight", prefix), H, qdim)) return -1;
    if (c->attention_bias) {
        if (bind_vec(b, &L->q_bias, NAME("%s.self_attn.q_proj.bias", prefix), qdim, 0.0f)) return -1;
        if (bind_vec(b, &L->k_bias, NAME("%s.self_attn.k_proj.bias", prefix), kvdim, 0.0f)) return -1;
        if (bind_vec(b, &L->v_bias, NAME("%s.self_attn.v_proj.bias", prefix), kvdim, 0.0f)) return -1;
    }
    if (c->qk_norm != MT_QK_NORM_NONE) {
        bool full = c->qk_norm == MT_QK_NORM_FULL;
        if (bind_vec(b, &L->q_norm, NAME("%s.self_attn.q_norm.weight", prefix), full ? qdim : hd, 1.0f)) return -1;
        if (bind_vec(b, &L->k_norm, NAME("%s.self_attn.k_norm.weight", prefix), full ? kvdim : hd, 1.0f)) return -1;
    }

    L->is_moe = c->layer_is_moe[l];
    if (!L->is_moe) {
        char mlp[160];
        snprintf(mlp, sizeof mlp, "%s.mlp", prefix);
        return bind_mlp(b, &L->dense, mlp, "gate_proj", "up_proj", "down_proj", c->intermediate_size);
    }
    moe_names nm = names_for(c->arch);
    char block[192];
    snprintf(block, sizeof block, "%s.%s", prefix, nm.block);
    if (bind_mat(b, &L->router, NAME("%s.gate.weight", block), c->num_experts, H)) return -1;
    L->experts = own(m, (size_t)c->num_experts * sizeof *L->experts);
    if (!L->experts) return mt_errf(b->err, "out of memory");
    for (int e = 0; e < c->num_experts; e++) {
        char ep[256];
        snprintf(ep, sizeof ep, "%s.experts.%d", block, e);
        if (bind_mlp(b, &L->experts[e], ep, nm.gate, nm.up, nm.down, c->moe_intermediate_size)) return -1;
    }
    if (c->shared_expert_intermediate_size > 0) {
        char sp[256];
        snprintf(sp, sizeof sp, "%s.shared_expert", block);
        L->has_shared = true;
        if (bind_mlp(b, &L->shared, sp, "gate_proj", "up_proj", "down_proj", c->shared_expert_intermediate_size))
            return -1;
        if (c->shared_expert_gate && bind_mat(b, &L->shared_gate, NAME("%s.shared_expert_gate.weight", block), 1, H))
            return -1;
    }
    return 0;
}

/* Every tensor of the checkpoint must be bound: one left over means config.json describes another
 * model than the weights (fewer layers or experts, no shared expert, no biases), and computing
 * without it would silently give another model's outputs. transformers only warns about unused
 * weights; vLLM's loaders fail on most. Tolerated: rotary inverse frequencies that old checkpoints
 * saved, and lm_head.weight when the embeddings are tied (transformers and vLLM skip it too). */
static int check_all_used(const binder *b) {
    const mt_checkpoint *ck = b->m->ckpt;
    for (int i = 0; i < mt_checkpoint_count(ck); i++) {
        const mt_tensor_info *t = mt_checkpoint_at(ck, i);
        size_t len = strlen(t->name);
        static const char inv_freq[] = ".rotary_emb.inv_freq";
        if (b->used[i]) continue;
        if (len >= sizeof inv_freq - 1 && !strcmp(t->name + len - (sizeof inv_freq - 1), inv_freq)) continue;
        if (b->m->cfg.tie_word_embeddings && !strcmp(t->name, "lm_head.weight")) continue;
        return mt_errf(b->err,
                       "tensor '%s' in %s is not part of the %s model that config.json describes: the config does "
                       "not match the checkpoint (check num_hidden_layers, num_experts, the q/k/v bias, "
                       "shared_expert_intermediate_size, mlp_only_layers, decoder_sparse_step)",
                       t->name, t->file, b->m->cfg.model_type);
    }
    return 0;
}

/* The name dir gives its last part (trailing slashes ignored), into tmp (size n). */
static const char *last_part(const char *dir, char *tmp, size_t n) {
    snprintf(tmp, n, "%s", dir);
    size_t len = strlen(tmp);
    while (len > 1 && tmp[len - 1] == '/') tmp[--len] = '\0';
    return basename(tmp);
}

/* The checkpoint folder's name into out as dir names it ("dir/" is dir; a link keeps its own name),
 * or, when dir ends in "." or "..", the name of the folder that is. */
static void folder_name(const char *dir, char *out, size_t n) {
    char tmp[4096];
    const char *name = last_part(dir, tmp, sizeof tmp);
    char *real = NULL;
    if ((!strcmp(name, ".") || !strcmp(name, "..")) && (real = realpath(dir, NULL))) name = last_part(real, tmp, sizeof tmp);
    snprintf(out, n, "%s", name);
    free(real);
}

/* Bytes of host memory the dummy weights of c take (bf16 matrices; the float vectors are left out). */
static double dummy_bytes(const mt_config *c) {
    double H = c->hidden_size, hd = c->head_dim, per_layer_attn = 2.0 * H * hd * (c->num_attention_heads +
                                                                                   c->num_key_value_heads);
    double mats = (c->tie_word_embeddings ? 1.0 : 2.0) * c->vocab_size * H;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        mats += per_layer_attn;
        if (!c->layer_is_moe[l]) {
            mats += 3.0 * c->intermediate_size * H;
            continue;
        }
        mats += (double)c->num_experts * H * (1.0 + 3.0 * c->moe_intermediate_size);
        if (c->shared_expert_intermediate_size > 0) mats += 3.0 * c->shared_expert_intermediate_size * H + H;
    }
    return mats * 2.0;
}

/* Dummy weights are made in host memory: refused before any is made when they cannot fit. */
static int check_dummy_fits(const mt_config *c, const char *dir, mt_err *err) {
    const double gib = 1024.0 * 1024.0 * 1024.0, need = dummy_bytes(c), available = mt_host_memory_available();
    if (available > 0 && need > available)
        return mt_errf(err, "--load-format dummy: the weights %s/config.json describes need %.1f GiB of host memory, "
                       "%.1f GiB is available (MemAvailable of /proc/meminfo)", dir, need / gib, available / gib);
    return 0;
}

static int load(mt_model *m, const char *dir, mt_load_format fmt, mt_checkpoint_mode mode, mt_err *err) {
    memset(m, 0, sizeof *m);
    if (mt_config_load(&m->cfg, dir, err)) return -1;
    folder_name(dir, m->name, sizeof m->name);
    if (fmt == MT_LOAD_DUMMY && check_dummy_fits(&m->cfg, dir, err)) return -1;

    binder b = {m, fmt != MT_LOAD_AUTO, fmt == MT_LOAD_SHAPES, 0x6d6f657472616365ull, err, NULL};
    if (!b.dummy && mt_checkpoint_open_mode(&m->ckpt, dir, mode, err)) goto fail;
    if (!b.dummy && !(b.used = calloc((size_t)mt_checkpoint_count(m->ckpt) + 1, 1))) {
        mt_errf(err, "out of memory");
        goto fail;
    }
    const mt_config *c = &m->cfg;
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    if (!m->layers) {
        mt_errf(err, "out of memory");
        goto fail;
    }
    if (bind_mat(&b, &m->embed, "model.embed_tokens.weight", c->vocab_size, c->hidden_size)) goto fail;
    if (bind_vec(&b, &m->final_norm, "model.norm.weight", c->hidden_size, 1.0f)) goto fail;
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
    } else if (bind_mat(&b, &m->lm_head, "lm_head.weight", c->vocab_size, c->hidden_size)) {
        goto fail;
    }
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (bind_layer(&b, l)) goto fail;
    if (!b.dummy && check_all_used(&b)) goto fail;
    free(b.used);
    return 0;
fail:
    free(b.used);
    mt_model_free(m);
    return -1;
}

int mt_model_load(mt_model *m, const char *dir, mt_load_format fmt, mt_err *err) {
    return load(m, dir, fmt, MT_CHECKPOINT_PRIVATE, err);
}

int mt_model_load_mapped(mt_model *m, const char *dir, mt_load_format fmt, mt_err *err) {
    return load(m, dir, fmt, MT_CHECKPOINT_MAPPED, err);
}

void mt_model_free(mt_model *m) {
    if (m->device && m->device_free) m->device_free(m->device);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    if (m->ckpt) mt_checkpoint_close(m->ckpt);
    memset(m, 0, sizeof *m);
}
