/* Group-sampled rollouts, what RL with groups of samples (GRPO and its kin) asks of an engine: P
 * prompts of L tokens, each sampled n times (temperature 1, a seed per sample), G new tokens each,
 * the routing of every output kept for replay. The whole set runs through the batched engine in two
 * ways, alternated repetition by repetition on two engines (fresh prompts every run, so nothing is
 * cached from an earlier one):
 *  - shared: the samples of a prompt wait for its blocks while the first forwards them, then adopt
 *    them (the engine's default; what `serve` does for `n` or concurrent requests with a prefix);
 *  - unshared: every sample forwards its prompt (mt_engine_opts.no_shared_wait).
 * Prints each way's time, tokens forwarded and output tokens/s (median of the repetitions after a
 * warm-up one), and the ratio.
 *
 * --compare blocks compares instead how the KV cache's blocks are given out (both ways sharing):
 *  - lazy: as tokens need them, preempting the newest requests when none are left (the default);
 *  - whole: each request's whole context (prompt + G) reserved when it is admitted
 *    (mt_engine_opts.reserve_whole).
 * Outputs then end at lengths drawn uniformly from 1..G, the same for both ways (each sample is
 * cancelled at its length, as if it had sampled its end there), and --kv-blocks K sets the cache's
 * size (default: room for a quarter of the samples' whole contexts). It also prints the preemptions,
 * the tokens forwarded again, and the most samples running at once.
 *
 *   build/bench_rollout [--device cpu|cuda] [--model DIR] [--prompts P] [--n N] [--prompt-len L]
 *                       [--new G] [--reps R] [--threads T] [--max-running R] [--max-batch-tokens B]
 *                       [--compare sharing|blocks] [--kv-blocks K]
 *
 * Without --model: on cpu the mid-size shape of bench_model.h (4 layers), on cuda
 * bench/configs/qwen3-30b-a3b; weights are dummy either way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "bench_model.h"
#include "engine/cuda_backend.h"
#include "engine/engine.h"

#define MAX_REPS 21

typedef struct rollout_opts {
    int prompts, n, prompt_len, new_tokens;
    bool uniform_ends;   /* each output ends at a length drawn from 1..new_tokens */
} rollout_opts;

typedef struct run_result {
    double seconds;
    double forward_seconds, step_seconds, routing_seconds;   /* the engine's (mt_engine_stats) during the run */
    long forwarded, finished, generated, preemptions, recomputed;
    int peak_running;
    mt_engine *e;
    const int *ends;     /* with uniform_ends: each sample's length [prompts * n], else NULL */
} run_result;

static void on_event(void *ctx, const mt_engine_event *ev) {
    run_result *r = ctx;
    if (ev->kind == MT_EVENT_TOKEN) {
        if (r->ends && ev->n_generated == r->ends[ev->id]) mt_engine_cancel(r->e, ev->id);
        return;
    }
    r->finished++;
    r->generated += ev->n_generated;
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static int32_t next_id(int vocab) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (int32_t)(3 + g_rng % (uint64_t)(vocab - 3));
}

/* One rollout on e (whose callback context is res): fresh prompts, every sample submitted at once. */
static int run_rollout(mt_engine *e, const mt_config *c, const rollout_opts *o, int run, run_result *res) {
    mt_err err;
    int32_t *prompt = malloc((size_t)o->prompt_len * sizeof *prompt);
    if (!prompt) return -1;
    mt_engine_stats before, after;
    mt_engine_get_stats(e, &before);
    int *ends = NULL;
    if (o->uniform_ends) {
        if (!(ends = malloc((size_t)o->prompts * o->n * sizeof *ends))) return -1;
        uint64_t x = 0x2545F4914F6CDD1Dull + (uint64_t)run / 2; /* both ways of a repetition draw the same */
        for (int i = 0; i < o->prompts * o->n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            ends[i] = 1 + (int)(x % (uint64_t)o->new_tokens);
        }
    }
    *res = (run_result){.e = e, .ends = ends};
    double t0 = now_s();
    for (int p = 0; p < o->prompts; p++) {
        for (int i = 0; i < o->prompt_len; i++) prompt[i] = next_id(c->vocab_size);
        for (int j = 0; j < o->n; j++) {
            mt_request r = {.id = (int64_t)p * o->n + j, .prompt = prompt, .n_prompt = o->prompt_len,
                            .max_new_tokens = o->new_tokens, .ignore_eos = true,
                            .sampling = {.temperature = 1.0f, .top_p = 1.0f,
                                         .seed = (uint64_t)run * 1000003u + (uint64_t)p * o->n + j}};
            if (mt_engine_submit(e, &r, &err)) {
                fprintf(stderr, "bench_rollout: %s\n", err.msg);
                free(prompt);
                return -1;
            }
        }
    }
    free(prompt);
    while (!mt_engine_idle(e)) {
        if (mt_engine_step(e, &err) < 0) {
            fprintf(stderr, "bench_rollout: %s\n", err.msg);
            free(ends);
            return -1;
        }
    }
    free(ends);
    res->seconds = now_s() - t0;
    mt_engine_get_stats(e, &after);
    res->forwarded = after.tokens_forwarded - before.tokens_forwarded;
    res->forward_seconds = after.forward_seconds - before.forward_seconds;
    res->step_seconds = after.step_seconds - before.step_seconds;
    res->routing_seconds = after.routing_seconds - before.routing_seconds;
    res->preemptions = after.preemptions - before.preemptions;
    res->recomputed = after.tokens_recomputed - before.tokens_recomputed;
    res->peak_running = after.peak_running;
    return res->finished == (long)o->prompts * o->n ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *device = bench_arg_str(argc, argv, "--device", "cpu");
    bool cuda = !strcmp(device, "cuda");
    const char *model_dir = bench_arg_str(argc, argv, "--model", cuda ? MT_SOURCE_DIR "/bench/configs/qwen3-30b-a3b" : NULL);
    rollout_opts o = {.prompts = bench_arg_int(argc, argv, "--prompts", cuda ? 16 : 4, 1, 4096),
                      .n = bench_arg_int(argc, argv, "--n", 8, 1, 1024),
                      .prompt_len = bench_arg_int(argc, argv, "--prompt-len", cuda ? 1024 : 256, 1, 1 << 20),
                      .new_tokens = bench_arg_int(argc, argv, "--new", cuda ? 128 : 16, 1, 1 << 20)};
    int reps = bench_arg_int(argc, argv, "--reps", 3, 1, MAX_REPS);
    int threads = bench_arg_int(argc, argv, "--threads", 2, 1, 1024);
    int max_running = bench_arg_int(argc, argv, "--max-running", o.prompts * o.n < 256 ? o.prompts * o.n : 256, 1, 4096);
    int batch_tokens = bench_arg_int(argc, argv, "--max-batch-tokens", cuda ? 8192 : 512, 1, 1 << 20);
    const char *compare = bench_arg_str(argc, argv, "--compare", "sharing");
    bool by_blocks = !strcmp(compare, "blocks");
    o.uniform_ends = by_blocks;
    if (strcmp(device, "cpu") && !cuda) {
        fprintf(stderr, "bench_rollout: --device must be cpu or cuda\n");
        return 2;
    }
    if (!by_blocks && strcmp(compare, "sharing")) {
        fprintf(stderr, "bench_rollout: --compare must be sharing or blocks\n");
        return 2;
    }

    mt_model m;
    mt_err err;
    mt_kernels_init(threads);
    int rc = 0;
    if (cuda && (!mt_cuda_compiled() || mt_cuda_device_count() <= 0)) {
        fprintf(stderr, "bench_rollout: no CUDA device (or no CUDA backend in this build)\n");
        return 1;
    }
    if (model_dir) rc = mt_model_load(&m, model_dir, cuda ? MT_LOAD_SHAPES : MT_LOAD_DUMMY, &err);
    else rc = bench_load_model(&m, 4, &err);
    if (!rc && cuda) rc = mt_cuda_attach(&m, &err);
    if (rc) {
        fprintf(stderr, "bench_rollout: %s\n", err.msg);
        return 1;
    }
    const mt_config *c = &m.cfg;
    if (o.prompt_len + o.new_tokens > c->max_position_embeddings) {
        fprintf(stderr, "bench_rollout: prompt + new tokens exceed the context of %d\n", c->max_position_embeddings);
        return 2;
    }
    /* sharing: room for every running sequence whole, and for every prompt's blocks cached besides;
     * blocks: room for a quarter of the samples whole */
    int seq_blocks = (o.prompt_len + o.new_tokens + MT_KV_BLOCK - 1) / MT_KV_BLOCK;
    int blocks = by_blocks ? bench_arg_int(argc, argv, "--kv-blocks", (o.prompts * o.n + 3) / 4 * seq_blocks, seq_blocks,
                                           1 << 30)
                           : max_running * seq_blocks + o.prompts * (o.prompt_len / MT_KV_BLOCK + 1);
    run_result res[2];
    mt_engine *engines[2];
    for (int w = 0; w < 2; w++) {
        mt_engine_opts eo = {.num_kv_blocks = blocks, .max_batch_tokens = batch_tokens, .max_running = max_running,
                             .prefix_cache = true, .no_shared_wait = !by_blocks && w == 1,
                             .reserve_whole = by_blocks && w == 1};
        if (!(engines[w] = mt_engine_new(&m, &eo, on_event, &res[w], NULL, &err))) {
            fprintf(stderr, "bench_rollout: %s\n", err.msg);
            return 1;
        }
    }
    printf("rollout: %d prompts x %d samples, %d prompt + %s%d new tokens each, routing kept; device %s, %s, "
           "%d running, %d tokens a pass, %d KV blocks\n", o.prompts, o.n, o.prompt_len, by_blocks ? "1.." : "",
           o.new_tokens, device, model_dir ? model_dir : "bench_model.h shape (4 layers)", max_running, batch_tokens,
           blocks);
    double secs[2][MAX_REPS], rate[2][MAX_REPS], host[2][MAX_REPS], routing[2][MAX_REPS];
    long forwarded[2] = {0, 0}, generated[2] = {0, 0}, preempted[2] = {0, 0}, recomputed[2] = {0, 0};
    int run = 0;
    for (int r = 0; r <= reps && !rc; r++) { /* r == 0: warm-up */
        for (int k = 0; k < 2 && !rc; k++) {
            int w = (r + k) % 2; /* alternate which way goes first */
            rc = run_rollout(engines[w], c, &o, run++, &res[w]);
            if (r > 0) {
                secs[w][r - 1] = res[w].seconds;
                rate[w][r - 1] = (double)res[w].generated / res[w].seconds;   /* output tokens/s */
                /* the rollout's time outside forward passes: scheduling, events, submitting */
                host[w][r - 1] = 1.0 - res[w].forward_seconds / res[w].seconds;
                routing[w][r - 1] = res[w].routing_seconds / res[w].seconds;   /* storing the routing, inside the passes */
            }
            forwarded[w] = res[w].forwarded;
            generated[w] = res[w].generated;
            preempted[w] = res[w].preemptions;
            recomputed[w] = res[w].recomputed;
        }
    }
    if (rc) {
        fprintf(stderr, "bench_rollout: a run failed\n");
        return 1;
    }
    const char *names[2] = {"shared (samples adopt the prompt's blocks)", "unshared (each sample forwards it)"};
    if (by_blocks) {
        names[0] = "lazy (blocks as tokens need them)";
        names[1] = "whole (each context reserved at admission)";
    }
    double median[2], median_rate[2];
    for (int w = 0; w < 2; w++) {
        qsort(secs[w], (size_t)reps, sizeof secs[w][0], cmp_double);
        qsort(rate[w], (size_t)reps, sizeof rate[w][0], cmp_double);
        qsort(host[w], (size_t)reps, sizeof host[w][0], cmp_double);
        qsort(routing[w], (size_t)reps, sizeof routing[w][0], cmp_double);
        median[w] = secs[w][reps / 2];
        median_rate[w] = rate[w][reps / 2];
        printf("  %-44s %8.3f s  (%.3f ... %.3f)  %10ld tokens forwarded  %9.1f output tokens/s  "
               "host: %4.1f%% outside forward passes, %4.1f%% storing routing\n", names[w], median[w], secs[w][0],
               secs[w][reps - 1], forwarded[w], median_rate[w], 100.0 * host[w][reps / 2], 100.0 * routing[w][reps / 2]);
        if (by_blocks)
            printf("  %-44s last run: %ld outputs, %ld preemptions, %ld tokens forwarded again; at most %d samples "
                   "running at once\n", "", generated[w], preempted[w], recomputed[w], res[w].peak_running);
    }
    if (by_blocks)
        printf("  lazy against whole: %.2fx the output tokens/s\n", median_rate[0] / median_rate[1]);
    else
        printf("  shared against unshared: %.2fx the rollout speed, %.2fx fewer tokens forwarded\n",
               median[1] / median[0], (double)forwarded[1] / (double)forwarded[0]);
    for (int w = 0; w < 2; w++) mt_engine_free(engines[w]);
    mt_model_free(&m);
    mt_kernels_shutdown();
    return 0;
}
