/* The host's share of penalised decoding: the logit changes a decode step hands to the forward pass
 * (engine/penalties.h), built for B rows of P-token prompts as each step's output token comes,
 * under three settings: a repetition penalty (every prompt token changed), frequency and presence
 * penalties (the output's tokens only), and both. Prints each setting's changes a step, their bytes
 * (what a device pass uploads) and the host time a step (median of the repetitions), to set beside
 * a decode step's time (bench_cuda's sampling figure runs the same changes through the device).
 *
 *   build/bench_penalties [--batch B] [--prompt-len P] [--steps S] [--reps R]
 *
 * Vocabulary 151,936 (Qwen3's); prompt and output tokens drawn uniformly from it. */
#include "bench_common.h"
#include "engine/penalties.h"

#define VOCAB 151936
#define MAX_REPS 15

static uint32_t g_rng = 12345;
static int32_t next_token(void) {
    g_rng = g_rng * 1664525u + 1013904223u;
    return (int32_t)((g_rng >> 8) % VOCAB);
}

int main(int argc, char **argv) {
    int B = bench_arg_int(argc, argv, "--batch", 64, 1, 4096);
    int P = bench_arg_int(argc, argv, "--prompt-len", 2048, 1, 1 << 20);
    int S = bench_arg_int(argc, argv, "--steps", 200, 1, 1 << 16);
    int R = bench_arg_int(argc, argv, "--reps", 5, 1, MAX_REPS);
    const char *names[3] = {"repetition 1.1", "frequency 0.5 + presence 0.5", "all three"};
    const mt_sampling_params settings[3] = {
        {.temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.1f},
        {.temperature = 1.0f, .top_p = 1.0f, .frequency_penalty = 0.5f, .presence_penalty = 0.5f},
        {.temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.1f, .frequency_penalty = 0.5f,
         .presence_penalty = 0.5f},
    };
    printf("penalties' logit changes on the host: %d rows, %d-token prompts, %d steps, median of %d\n", B, P, S, R);
    int32_t *prompt = malloc((size_t)P * sizeof *prompt);
    mt_penalties *pen = calloc((size_t)B, sizeof *pen);
    for (int k = 0; k < 3; k++) {
        double t[MAX_REPS], changes = 0;
        for (int rep = 0; rep < R; rep++) {
            mt_err err;
            size_t cap = 0;
            for (int i = 0; i < B; i++) {
                for (int j = 0; j < P; j++) prompt[j] = next_token();
                if (mt_penalties_init(&pen[i], &settings[k], prompt, P, S, NULL, NULL, 0, NULL, 0, &err)) {
                    fprintf(stderr, "bench_penalties: %s\n", err.msg);
                    return 1;
                }
                cap += (size_t)mt_penalties_max_changes(&pen[i]) + (size_t)S;
            }
            mt_logit_adjust *out = malloc(cap * sizeof *out);
            long total = 0;
            double t0 = now_s();
            for (int s = 0; s < S; s++) {
                int n = 0;
                for (int i = 0; i < B; i++) n += mt_penalties_row(&pen[i], i, s, out + n);
                total += n;
                for (int i = 0; i < B; i++) mt_penalties_add_output(&pen[i], next_token());
            }
            t[rep] = (now_s() - t0) / S;
            changes = (double)total / S;
            free(out);
            for (int i = 0; i < B; i++) mt_penalties_free(&pen[i]);
        }
        printf("  %-30s %8.0f changes a step (%.2f MB), %.3f ms a step\n", names[k], changes,
               changes * sizeof(mt_logit_adjust) / 1e6, median(t, R) * 1e3);
    }
    free(pen);
    free(prompt);
    return 0;
}
