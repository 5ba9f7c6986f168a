/* Scoring texts, what evaluation harnesses ask of an engine to compare answers by likelihood
 * (/v1/completions with echo, logprobs and max_tokens 0; /generate with logprob_start_len 0): P
 * prompts of L tokens, every token after the first scored with A alternatives, nothing generated.
 * Three engines on the same model, alternated repetition by repetition with fresh prompts:
 *  - plain: the prompts forwarded without scoring (the prefill alone, the floor);
 *  - scored: every prompt token scored, at most the engine's default 256 scored rows a pass;
 *  - scored, wide: the same with --wide rows a pass (what `serve --device cuda` uses).
 * Prints each one's time and tokens/s (median of the repetitions after a warm-up one) and its ratio
 * to plain.
 *
 *   build/bench_scoring [--device cpu|cuda] [--model DIR] [--prompts P] [--prompt-len L] [--top A]
 *                       [--wide W] [--reps R] [--threads T] [--max-batch-tokens B]
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
#define WAYS 3

typedef struct scoring_opts {
    int prompts, prompt_len, top;
} scoring_opts;

static void on_event(void *ctx, const mt_engine_event *ev) {
    long *finished = ctx;
    if (ev->kind == MT_EVENT_FINISHED) (*finished)++;
}

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static int32_t next_id(int vocab) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (int32_t)(3 + g_rng % (uint64_t)(vocab - 3));
}

/* One run of fresh prompts on e (way 0 unscored); seconds, or -1 on error. */
static double run_scoring(mt_engine *e, long *finished, const mt_config *c, const scoring_opts *o, bool scored) {
    mt_err err;
    int32_t *prompt = malloc((size_t)o->prompt_len * sizeof *prompt);
    if (!prompt) return -1;
    *finished = 0;
    double t0 = now_s();
    for (int p = 0; p < o->prompts; p++) {
        for (int i = 0; i < o->prompt_len; i++) prompt[i] = next_id(c->vocab_size);
        mt_request r = {.id = p, .prompt = prompt, .n_prompt = o->prompt_len, .max_new_tokens = 0, .ignore_eos = true,
                        .return_logprob = scored, .score_from = scored ? 1 : 0, .top_logprobs = scored ? o->top : 0};
        if (mt_engine_submit(e, &r, &err)) {
            fprintf(stderr, "bench_scoring: %s\n", err.msg);
            free(prompt);
            return -1;
        }
    }
    free(prompt);
    while (!mt_engine_idle(e)) {
        if (mt_engine_step(e, &err) < 0) {
            fprintf(stderr, "bench_scoring: %s\n", err.msg);
            return -1;
        }
    }
    double s = now_s() - t0;
    return *finished == o->prompts ? s : -1;
}

int main(int argc, char **argv) {
    const char *device = bench_arg_str(argc, argv, "--device", "cpu");
    bool cuda = !strcmp(device, "cuda");
    const char *model_dir = bench_arg_str(argc, argv, "--model", cuda ? MT_SOURCE_DIR "/bench/configs/qwen3-30b-a3b" : NULL);
    scoring_opts o = {.prompts = bench_arg_int(argc, argv, "--prompts", 8, 1, 4096),
                      .prompt_len = bench_arg_int(argc, argv, "--prompt-len", cuda ? 1024 : 256, 2, 1 << 20),
                      .top = bench_arg_int(argc, argv, "--top", 5, 0, MT_TOP_LOGPROBS_MAX)};
    int wide = bench_arg_int(argc, argv, "--wide", cuda ? 4096 : 1024, 1, 1 << 20);
    int reps = bench_arg_int(argc, argv, "--reps", 3, 1, MAX_REPS);
    int threads = bench_arg_int(argc, argv, "--threads", 2, 1, 1024);
    int batch_tokens = bench_arg_int(argc, argv, "--max-batch-tokens", cuda ? 8192 : 512, 1, 1 << 20);
    if (strcmp(device, "cpu") && !cuda) {
        fprintf(stderr, "bench_scoring: --device must be cpu or cuda\n");
        return 2;
    }
    mt_model m;
    mt_err err;
    mt_kernels_init(threads);
    if (cuda && (!mt_cuda_compiled() || mt_cuda_device_count() <= 0)) {
        fprintf(stderr, "bench_scoring: no CUDA device (or no CUDA backend in this build)\n");
        return 1;
    }
    int rc = model_dir ? mt_model_load(&m, model_dir, cuda ? MT_LOAD_SHAPES : MT_LOAD_DUMMY, &err) : bench_load_model(&m, 4, &err);
    if (!rc && cuda) rc = mt_cuda_attach(&m, &err);
    if (rc) {
        fprintf(stderr, "bench_scoring: %s\n", err.msg);
        return 1;
    }
    const mt_config *c = &m.cfg;
    if (o.prompt_len > c->max_position_embeddings) {
        fprintf(stderr, "bench_scoring: prompts exceed the context of %d\n", c->max_position_embeddings);
        return 2;
    }
    int blocks = o.prompts * (o.prompt_len / MT_KV_BLOCK + 1);
    long finished[WAYS];
    mt_engine *engines[WAYS];
    for (int w = 0; w < WAYS; w++) {
        mt_engine_opts eo = {.num_kv_blocks = blocks, .max_batch_tokens = batch_tokens, .max_running = o.prompts,
                             .max_scored_rows = w == 2 ? wide : 0};
        if (!(engines[w] = mt_engine_new(&m, &eo, on_event, &finished[w], NULL, &err))) {
            fprintf(stderr, "bench_scoring: %s\n", err.msg);
            return 1;
        }
    }
    printf("scoring: %d prompts x %d tokens, every token after the first scored with %d alternatives, none "
           "generated; device %s, %s, %d tokens a pass\n", o.prompts, o.prompt_len, o.top, device,
           model_dir ? model_dir : "bench_model.h shape (4 layers)", batch_tokens);
    double secs[WAYS][MAX_REPS];
    for (int rep = -1; rep < reps; rep++) {
        for (int k = 0; k < WAYS; k++) {
            int w = (k + (rep < 0 ? 0 : rep)) % WAYS;   /* the order turns every repetition */
            double s = run_scoring(engines[w], &finished[w], c, &o, w > 0);
            if (s < 0) return 1;
            if (rep >= 0) secs[w][rep] = s;
        }
    }
    static const char *const NAMES[2] = {"plain prefill", "scored, 256 rows a pass"};
    double base = median(secs[0], reps);
    long tokens = (long)o.prompts * o.prompt_len;
    for (int w = 0; w < WAYS; w++) {
        double s = median(secs[w], reps);
        char name[64];
        if (w == 2) snprintf(name, sizeof name, "scored, %d rows a pass", wide);
        else snprintf(name, sizeof name, "%s", NAMES[w]);
        printf("%-28s %8.3f s  %10.0f prompt tokens/s  %.2fx the plain prefill's time\n", name, s, tokens / s, s / base);
    }
    for (int w = 0; w < WAYS; w++) mt_engine_free(engines[w]);
    mt_model_free(&m);
    mt_kernels_shutdown();
    return 0;
}
