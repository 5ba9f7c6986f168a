/* The benchmarks' model: a mid-size Qwen3-MoE shape (hidden 1024, 32 experts top-4,
 * moe_intermediate 512, vocab 32000) with dummy BF16 weights, and the bytes of weights one
 * decoded token reads. */
#ifndef MT_BENCH_MODEL_H
#define MT_BENCH_MODEL_H

#include <stdio.h>
#include <unistd.h>

#include "model/model.h"

#define BENCH_CONFIG                                                                                     \
    "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 32000, \"hidden_size\": 1024, \"num_hidden_layers\": %d," \
    " \"num_attention_heads\": 16, \"num_key_value_heads\": 4, \"head_dim\": 64,"                               \
    " \"max_position_embeddings\": 4096, \"rope_theta\": 1000000.0, \"num_experts\": 32,"                      \
    " \"num_experts_per_tok\": 4, \"moe_intermediate_size\": 512, \"intermediate_size\": 2048,"                \
    " \"norm_topk_prob\": true, \"rms_norm_eps\": 1e-6, \"tie_word_embeddings\": false}"

/* Loads the dummy model with the given number of layers; 0 on success. */
static inline int bench_load_model(mt_model *m, int layers, mt_err *err) {
    char dir[] = "/tmp/moetrace_bench_XXXXXX", path[256];
    if (!mkdtemp(dir)) return mt_errf(err, "mkdtemp failed");
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return mt_errf(err, "cannot write %s", path);
    fprintf(f, BENCH_CONFIG, layers);
    fclose(f);
    int rc = mt_model_load(m, dir, MT_LOAD_DUMMY, err);
    remove(path);
    rmdir(dir);
    return rc;
}

/* Starts the kernels with `threads` threads and loads the model; prints the error and returns
 * -1 on failure. */
static inline int bench_setup(int threads, int layers, mt_model *m) {
    mt_err err;
    mt_kernels_init(threads);
    if (bench_load_model(m, layers, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static inline size_t bench_mat_bytes(const mt_mat *m) { return (size_t)m->rows * m->cols * mt_dtype_size(m->dtype); }

/* Weight bytes one decode token reads: attention, router, top_k experts, lm_head, one embedding row. */
static inline size_t bench_decode_bytes(const mt_model *m) {
    const mt_config *c = &m->cfg;
    size_t b = bench_mat_bytes(&m->lm_head) + (size_t)c->hidden_size * mt_dtype_size(m->embed.dtype);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const mt_layer *L = &m->layers[l];
        b += bench_mat_bytes(&L->q) + bench_mat_bytes(&L->k) + bench_mat_bytes(&L->v) + bench_mat_bytes(&L->o);
        if (L->is_moe)
            b += bench_mat_bytes(&L->router) + (size_t)c->top_k * (bench_mat_bytes(&L->experts[0].gate) * 3);
        else
            b += bench_mat_bytes(&L->dense.gate) * 3;
    }
    return b;
}

#endif
