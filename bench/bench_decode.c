/* End-to-end CPU figures on a mid-size Qwen3-MoE shape with dummy weights: prefill and batch-1
 * decode tokens/s, the bytes of weights a decode step must read, and that traffic as a fraction
 * of this machine's memory bandwidth measured in the same run.
 *
 *   build/bench_decode [--threads N] [--decode N] [--prefill N] [--layers N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_common.h"
#include "engine/forward.h"
#include "model/model.h"

static const char *CONFIG =
    "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 32000, \"hidden_size\": 1024, \"num_hidden_layers\": %d,"
    " \"num_attention_heads\": 16, \"num_key_value_heads\": 4, \"head_dim\": 64, \"max_position_embeddings\": 4096,"
    " \"rope_theta\": 1000000.0, \"num_experts\": 32, \"num_experts_per_tok\": 4, \"moe_intermediate_size\": 512,"
    " \"intermediate_size\": 2048, \"norm_topk_prob\": true, \"rms_norm_eps\": 1e-6, \"tie_word_embeddings\": false}";

static size_t mat_bytes(const mt_mat *m) { return (size_t)m->rows * m->cols * mt_dtype_size(m->dtype); }

/* Weight bytes one decode token reads: attention, router, top_k experts, lm_head, one embedding row. */
static size_t decode_bytes(const mt_model *m) {
    const mt_config *c = &m->cfg;
    size_t b = mat_bytes(&m->lm_head) + (size_t)c->hidden_size * mt_dtype_size(m->embed.dtype);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const mt_layer *L = &m->layers[l];
        b += mat_bytes(&L->q) + mat_bytes(&L->k) + mat_bytes(&L->v) + mat_bytes(&L->o);
        if (L->is_moe)
            b += mat_bytes(&L->router) + (size_t)c->top_k * (mat_bytes(&L->experts[0].gate) * 3);
        else
            b += mat_bytes(&L->dense.gate) * 3;
    }
    return b;
}

int main(int argc, char **argv) {
    int threads = 2, n_decode = 64, n_prefill = 256, layers = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--decode")) n_decode = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prefill")) n_prefill = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--layers")) layers = atoi(argv[i + 1]);
    }
    mt_kernels_init(threads);
    char dir[] = "/tmp/moetrace_bench_XXXXXX", path[256];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, CONFIG, layers);
    fclose(f);
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, dir, MT_LOAD_DUMMY, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    remove(path);
    rmdir(dir);
    const mt_config *c = &m.cfg;

    double bw = measure_bandwidth((size_t)1 << 30, 5);

    mt_kv_cache kv;
    if (mt_kv_cache_init(&kv, c->num_hidden_layers, c->num_key_value_heads * c->head_dim,
                         (n_prefill + n_decode + MT_KV_BLOCK) / MT_KV_BLOCK + 1, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    mt_kv_seq seq = {0};
    mt_kv_seq *seqs[1] = {&seq};
    mt_kv_seq_reserve(&kv, &seq, n_prefill + n_decode, &err);
    int32_t *tok = malloc((size_t)n_prefill * sizeof *tok), *sid = calloc((size_t)n_prefill, sizeof *sid);
    int32_t *pos = malloc((size_t)n_prefill * sizeof *pos);
    for (int i = 0; i < n_prefill; i++) {
        tok[i] = (i * 7919) % c->vocab_size;
        pos[i] = i;
    }
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    int32_t last = n_prefill - 1;
    mt_batch pb = {.n_tokens = n_prefill, .tokens = tok, .seq_ids = sid, .positions = pos, .seqs = seqs,
                   .num_seqs = 1, .n_logits = 1, .logit_rows = &last};
    double t0 = now_s();
    if (mt_forward(&m, &kv, &pb, logits, NULL, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double prefill_s = now_s() - t0;

    int32_t t = 1, p, zero = 0, row = 0;
    mt_batch db = {.n_tokens = 1, .tokens = &t, .seq_ids = &zero, .positions = &p, .seqs = seqs,
                   .num_seqs = 1, .n_logits = 1, .logit_rows = &row};
    t0 = now_s();
    for (int g = 0; g < n_decode; g++) {
        p = n_prefill + g;
        mt_forward(&m, &kv, &db, logits, NULL, &err);
        t = (t * 31 + 7) % c->vocab_size;
    }
    double decode_s = now_s() - t0;
    double tps = n_decode / decode_s;
    size_t bytes = decode_bytes(&m);

    printf("moetrace CPU bench: qwen3_moe hidden %d, %d layers, %d experts top-%d, moe_intermediate %d, vocab %d (dummy BF16)\n",
           c->hidden_size, c->num_hidden_layers, c->num_experts, c->top_k, c->moe_intermediate_size, c->vocab_size);
    printf("threads %d, isa %s\n", mt_kernels_threads(), mt_isa_name(mt_kernels_isa()));
    printf("%-44s %10.2f GB/s\n", "measured memory read bandwidth", bw);
    printf("%-44s %10.1f tokens/s  (%d tokens, %.3f s)\n", "prefill (one batch)", n_prefill / prefill_s, n_prefill, prefill_s);
    printf("%-44s %10.2f tokens/s  (%d tokens after %d of context)\n", "decode, batch 1", tps, n_decode, n_prefill);
    printf("%-44s %10.1f MB\n", "weight bytes read per decoded token", bytes / 1e6);
    printf("%-44s %10.2f GB/s = %.0f%% of measured bandwidth\n", "decode weight traffic", bytes * tps / 1e9,
           100.0 * bytes * tps / 1e9 / bw);
    free(tok); free(sid); free(pos); free(logits);
    mt_kv_seq_release(&kv, &seq);
    mt_kv_cache_free(&kv);
    mt_model_free(&m);
    mt_kernels_shutdown();
    return 0;
}
