/* End-to-end CPU figures on a mid-size Qwen3-MoE shape with dummy weights (bench_model.h):
 * prefill and batch-1 decode tokens/s, the bytes of weights a decode step must read, and that
 * traffic as a fraction of this machine's memory read bandwidth measured in the same run.
 *
 * The machine may be shared (other work moves both figures by tens of percent within a
 * second), so the run alternates: each repetition runs one pass of the bandwidth probe of
 * bench_common.h, decodes --decode tokens (the same positions every time), and runs the probe
 * again; its ratio is the decode traffic over the mean of the two probes. The medians over the
 * repetitions are reported.
 *
 *   build/bench_decode [--threads N] [--decode N] [--prefill N] [--layers N] [--reps N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "bench_model.h"
#include "engine/forward.h"

#define MAX_REPS 101

int main(int argc, char **argv) {
    const int threads = bench_arg_int(argc, argv, "--threads", 2, 1, 1024);
    const int n_decode = bench_arg_int(argc, argv, "--decode", 16, 1, 100000);
    const int n_prefill = bench_arg_int(argc, argv, "--prefill", 256, 1, 4000);
    const int layers = bench_arg_int(argc, argv, "--layers", 8, 1, 256);
    const int reps = bench_arg_int(argc, argv, "--reps", 21, 1, MAX_REPS);
    mt_model m;
    mt_err err;
    if (bench_setup(threads, layers, &m)) return 1;
    const mt_config *c = &m.cfg;
    bw_probe probe;
    if (bw_probe_init(&probe, (size_t)256 << 20)) {
        fprintf(stderr, "out of memory for the bandwidth probe\n");
        return 1;
    }
    bw_probe_run(&probe); /* warm-up pass */

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

    const size_t bytes = bench_decode_bytes(&m);
    double bw[MAX_REPS], tps[MAX_REPS], ratio[MAX_REPS];
    int32_t t = 1, p, zero = 0, row = 0;
    mt_batch db = {.n_tokens = 1, .tokens = &t, .seq_ids = &zero, .positions = &p, .seqs = seqs,
                   .num_seqs = 1, .n_logits = 1, .logit_rows = &row};
    printf("moetrace CPU bench: qwen3_moe hidden %d, %d layers, %d experts top-%d, moe_intermediate %d, vocab %d (dummy BF16)\n",
           c->hidden_size, c->num_hidden_layers, c->num_experts, c->top_k, c->moe_intermediate_size, c->vocab_size);
    printf("threads %d, isa %s; %d repetitions of [bandwidth probe, %d decode tokens after %d of context, probe]\n",
           mt_kernels_threads(), mt_isa_name(mt_kernels_isa()), reps, n_decode, n_prefill);
    for (int r = 0; r < reps; r++) {
        const double bw_before = bw_probe_run(&probe);
        t0 = now_s();
        for (int g = 0; g < n_decode; g++) {
            p = n_prefill + g; /* every repetition decodes the same positions */
            if (mt_forward(&m, &kv, &db, logits, NULL, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            t = (t * 31 + 7) % c->vocab_size;
        }
        tps[r] = n_decode / (now_s() - t0);
        bw[r] = 0.5 * (bw_before + bw_probe_run(&probe));
        ratio[r] = bytes * tps[r] / 1e9 / bw[r];
        printf("  rep %2d: bandwidth %6.2f GB/s, decode %6.2f tokens/s = %5.2f GB/s of weights = %3.0f%%\n", r + 1, bw[r],
               tps[r], bytes * tps[r] / 1e9, 100.0 * ratio[r]);
    }
    double bw_med = median(bw, reps), tps_med = median(tps, reps), ratio_med = median(ratio, reps);
    printf("%-44s %10.2f GB/s\n", "measured memory read bandwidth (median)", bw_med);
    printf("%-44s %10.1f tokens/s  (%d tokens, %.3f s)\n", "prefill (one batch)", n_prefill / prefill_s, n_prefill, prefill_s);
    printf("%-44s %10.2f tokens/s  (median of %d x %d tokens)\n", "decode, batch 1", tps_med, reps, n_decode);
    printf("%-44s %10.1f MB\n", "weight bytes read per decoded token", bytes / 1e6);
    printf("%-44s %10.2f GB/s = %.0f%% of measured bandwidth (median of per-repetition ratios)\n",
           "decode weight traffic", bytes * tps_med / 1e9, 100.0 * ratio_med);
    free(tok); free(sid); free(pos); free(logits);
    bw_probe_free(&probe);
    mt_kv_seq_release(&kv, &seq);
    mt_kv_cache_free(&kv);
    mt_model_free(&m);
    mt_kernels_shutdown();
    return 0;
}
