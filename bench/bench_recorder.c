/* The cost of routing observability on the batched engine (mt_engine), CPU, dummy mid-size
 * Qwen3-MoE (bench_model.h): per-request routing capture, the recorder attached but off, and
 * recording in `stat` and `per_token` modes; plus batched decode throughput at several
 * concurrencies.
 *
 * For each concurrency S, five engines run the same workload (S requests of --prompt tokens,
 * --gen new tokens each, greedy, no prefix cache: one prefill step, then decode steps of S
 * tokens):
 *   bare       per-token routing storage off (mt_engine_opts.no_routing), no sink
 *   capture    the engine's per-request routing capture (the default), no sink
 *   off        capture + a recorder attached but not started
 *   stat       capture + a recorder recording in stat mode
 *   per_token  capture + a recorder recording in per_token mode
 * The engines run in lockstep: one step of each in turn (the order rotated at every step, and
 * reversed every NCOND steps), so
 * the steps compared ran within a fraction of a second of each other. The machine may be shared
 * (its speed moves by tens of percent within seconds); each cost is the median over all decode
 * steps of all repetitions of the ratio of a step's time to the same step of its reference
 * (capture vs bare, off vs capture, stat and per_token vs off), with the 95% confidence
 * interval of that median (from the order statistics).
 * The direct cost (time inside the recorder's sink, timed around each call; for the capture,
 * its routing writes and read-backs replayed apart) over the decode time resolves far smaller
 * costs than the ratios can.
 *
 *   build/bench_recorder [--threads N] [--layers N] [--reps N] [--prompt N] [--gen N] [--seqs 1,8,32] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "bench_model.h"
#include "engine/engine.h"
#include "engine/kv_cache.h"
#include "routing/recorder.h"

enum { BARE, CAPTURE, OFF, STAT, PER_TOKEN, NCOND };
static const char *const COND_NAME[NCOND] = {"bare", "capture", "recorder off", "stat", "per_token"};
static const int COND_REF[NCOND] = {-1, BARE, CAPTURE, OFF, OFF};

#define MAX_REPS 64
#define MAX_GEN 65
#define MAX_SEQS 16

/* A sink that times the calls into the sink it wraps. */
typedef struct timed_sink {
    mt_routing_sink inner;
    double secs;
} timed_sink;

static void timed_layer(void *ctx, const mt_routing_event *ev) {
    timed_sink *t = ctx;
    double t0 = now_s();
    t->inner.on_layer(t->inner.ctx, ev);
    t->secs += now_s() - t0;
}

static void timed_pass(void *ctx, const mt_pass_event *ev) {
    timed_sink *t = ctx;
    double t0 = now_s();
    if (t->inner.on_pass) t->inner.on_pass(t->inner.ctx, ev);
    t->secs += now_s() - t0;
}

/* Queues the workload: n requests of prompt_len tokens (distinct per request) and gen new ones. */
static int submit_workload(mt_engine *e, int n, int prompt_len, int gen, int vocab, mt_err *err) {
    int32_t *prompt = malloc((size_t)prompt_len * sizeof *prompt);
    if (!prompt) return mt_errf(err, "out of memory");
    for (int i = 0; i < n; i++) {
        for (int p = 0; p < prompt_len; p++)
            prompt[p] = (int32_t)((7919u * (unsigned)(i * prompt_len + p) + 17u) % (unsigned)vocab);
        mt_request r = {.id = i, .prompt = prompt, .n_prompt = prompt_len, .max_new_tokens = gen, .ignore_eos = true};
        if (mt_engine_submit(e, &r, err)) {
            free(prompt);
            return -1;
        }
    }
    free(prompt);
    return 0;
}

/* Seconds the engine's capture spends in one run: the routing writes of every forwarded token
 * at every MoE layer, and the read-back of each request's routing when it finishes, replayed on
 * a cache of the same shape (the engine's own calls, timed apart from the forward passes). */
static double capture_replay_s(const mt_config *c, int n, int prompt_len, int gen, int decode_only) {
    mt_kv_cache kv;
    mt_err err;
    const int per_seq = (prompt_len + gen + MT_KV_BLOCK - 1) / MT_KV_BLOCK;
    if (mt_kv_cache_init(&kv, c->num_hidden_layers, 1, per_seq * n, &err) ||
        mt_kv_cache_init_routing(&kv, c->top_k, c->num_experts, &err))
        return 0.0;
    mt_kv_seq *seqs = calloc((size_t)n, sizeof *seqs);
    int32_t *ids = malloc((size_t)c->top_k * sizeof *ids);
    int32_t *row = malloc((size_t)c->num_hidden_layers * c->top_k * sizeof *row);
    for (int i = 0; i < n; i++) mt_kv_seq_reserve(&kv, &seqs[i], prompt_len + gen, &err);
    for (int j = 0; j < c->top_k; j++) ids[j] = (j * 7) % c->num_experts;
    const int from = decode_only ? prompt_len : 0, to = prompt_len + gen - 1;
    double t0 = now_s();
    for (int p = from; p < to; p++)
        for (int l = 0; l < c->num_hidden_layers; l++) {
            if (!c->layer_is_moe[l]) continue;
            for (int i = 0; i < n; i++) mt_kv_routing_write(&kv, &seqs[i], p, l, ids);
        }
    for (int i = 0; i < n; i++)
        for (int p = 0; p < to; p++) mt_kv_routing_read(&kv, &seqs[i], p, row);
    double secs = now_s() - t0;
    for (int i = 0; i < n; i++) mt_kv_seq_release(&kv, &seqs[i]);
    free(seqs);
    free(ids);
    free(row);
    mt_kv_cache_free(&kv);
    return secs;
}

static int parse_seqs(const char *s, int *out) {
    int n = 0;
    while (*s && n < MAX_SEQS) {
        out[n] = atoi(s);
        if (out[n] > 0) n++;
        const char *comma = strchr(s, ',');
        if (!comma) break;
        s = comma + 1;
    }
    return n;
}

static void noop(void *ctx, const mt_engine_event *ev) {
    (void)ctx;
    (void)ev;
}

int main(int argc, char **argv) {
    const int threads = bench_arg_int(argc, argv, "--threads", 2, 1, 1024);
    const int layers = bench_arg_int(argc, argv, "--layers", 8, 1, 256);
    const int reps = bench_arg_int(argc, argv, "--reps", 9, 1, MAX_REPS);
    const int prompt_len = bench_arg_int(argc, argv, "--prompt", 16, 1, 1000);
    const int gen = bench_arg_int(argc, argv, "--gen", 17, 2, MAX_GEN);
    int seqs[MAX_SEQS];
    const int n_seqs = parse_seqs(bench_arg_str(argc, argv, "--seqs", "1,8,32"), seqs);
    if (n_seqs == 0) {
        fprintf(stderr, "--seqs: expected a list such as 1,8,32\n");
        return 2;
    }
    mt_model m;
    mt_err err;
    if (bench_setup(threads, layers, &m)) return 1;
    const mt_config *c = &m.cfg;
    printf("moetrace recorder bench: qwen3_moe hidden %d, %d layers, %d experts top-%d (dummy BF16); threads %d, isa %s\n",
           c->hidden_size, c->num_hidden_layers, c->num_experts, c->top_k, mt_kernels_threads(),
           mt_isa_name(mt_kernels_isa()));
    printf("workload: S requests x (%d prompt tokens, %d new tokens), greedy; %d repetitions, engine order rotated\n",
           prompt_len, gen, reps);

    mt_recorder_opts ro;
    mt_recorder_opts_default(&ro);
    ro.buffer_size = -1;
    mt_recorder *rec[NCOND] = {0}; /* off, stat, per_token: one recorder per engine */
    for (int k = OFF; k < NCOND; k++) {
        ro.mode = k == PER_TOKEN ? MT_REC_PER_TOKEN : MT_REC_STAT;
        ro.max_tokens = 1 << 20;
        if (!(rec[k] = mt_recorder_new(c, "bench", &ro, &err))) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
    }
    bw_probe probe;
    if (bw_probe_init(&probe, (size_t)256 << 20)) return 1;
    double tps_ref[MAX_SEQS] = {0};
    const int steps = gen; /* one prefill step, then gen - 1 decode steps */
    double *step_s = malloc((size_t)NCOND * steps * sizeof *step_s);
    if (!step_s) return 1;

    for (int si = 0; si < n_seqs; si++) {
        const int S = seqs[si];
        timed_sink ts[NCOND] = {{{0}, 0}};
        mt_engine *eng[NCOND];
        mt_routing_sink sink[NCOND]; /* the engines keep pointers to these */
        for (int k = 0; k < NCOND; k++) {
            mt_engine_opts o = {.num_kv_blocks = S * ((prompt_len + gen + MT_KV_BLOCK - 1) / MT_KV_BLOCK) + 4,
                                .max_batch_tokens = S * prompt_len, .max_running = S, .prefix_cache = false,
                                .no_routing = k == BARE};
            if (k >= OFF) ts[k].inner = mt_recorder_sink(rec[k]);
            sink[k] = (mt_routing_sink){timed_layer, timed_pass, &ts[k]};
            eng[k] = mt_engine_new(&m, &o, noop, NULL, k >= OFF ? &sink[k] : NULL, &err);
            if (!eng[k]) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
        }
        /* per condition: decode seconds, tokens, sink seconds, per repetition */
        static double dec_s[NCOND][MAX_REPS], sink_s[NCOND][MAX_REPS], pre_s[NCOND][MAX_REPS];
        static long dec_tok[NCOND][MAX_REPS];
        static double ratios[NCOND][MAX_REPS * (MAX_GEN - 1)];
        int nratio = 0;
        double bw[MAX_REPS];
        for (int r = 0; r < reps; r++) {
            bw[r] = bw_probe_run(&probe);
            for (int k = 0; k < NCOND; k++) {
                if (submit_workload(eng[k], S, prompt_len, gen, c->vocab_size, &err)) {
                    fprintf(stderr, "%s\n", err.msg);
                    return 1;
                }
                if (k >= OFF) mt_recorder_reset(rec[k]);
                if (k == STAT || k == PER_TOKEN) mt_recorder_start(rec[k]);
                dec_s[k][r] = sink_s[k][r] = 0.0;
                dec_tok[k][r] = 0;
            }
            for (int st = 0; st < steps; st++) {
                for (int j = 0; j < NCOND; j++) {
                    /* rotated each step, the direction alternating: every engine runs right
                     * before and right after its reference equally often */
                    const int k = (st + r + ((st / NCOND) % 2 ? NCOND - j : j)) % NCOND;
                    const double sink0 = ts[k].secs, t0 = now_s();
                    const int tokens = mt_engine_step(eng[k], &err);
                    const double dt = now_s() - t0;
                    if (tokens <= 0) {
                        fprintf(stderr, "%s: step %d forwarded %d tokens: %s\n", COND_NAME[k], st, tokens,
                                tokens < 0 ? err.msg : "idle too early");
                        return 1;
                    }
                    step_s[k * steps + st] = dt;
                    if (st == 0) {
                        pre_s[k][r] = dt;
                    } else {
                        dec_s[k][r] += dt;
                        dec_tok[k][r] += tokens;
                        sink_s[k][r] += ts[k].secs - sink0;
                    }
                }
            }
            for (int k = 0; k < NCOND; k++) {
                if (!mt_engine_idle(eng[k])) {
                    fprintf(stderr, "%s: not idle after %d steps\n", COND_NAME[k], steps);
                    return 1;
                }
                if (k >= OFF) mt_recorder_stop(rec[k]);
                if (k == STAT || k == PER_TOKEN) { /* the recorder saw every forwarded token */
                    mt_recorder_counts rc;
                    mt_recorder_get_counts(rec[k], &rc);
                    const int64_t want = (int64_t)S * (prompt_len + gen - 1);
                    if (rc.num_tokens != want || (k == PER_TOKEN && (rc.tokens_recorded != want || rc.dropped_tokens))) {
                        fprintf(stderr, "%s recorded %lld tokens of %lld\n", COND_NAME[k], (long long)rc.num_tokens,
                                (long long)want);
                        return 1;
                    }
                }
                if (COND_REF[k] >= 0)
                    for (int st = 1; st < steps; st++)
                        ratios[k][nratio + st - 1] = step_s[k * steps + st] / step_s[COND_REF[k] * steps + st] - 1.0;
            }
            nratio += steps - 1;
        }
        for (int k = 0; k < NCOND; k++) mt_engine_free(eng[k]);

        printf("\nconcurrency %d (median bandwidth probe %.1f GB/s)\n", S, median(bw, reps));
        printf("  %-13s %12s %10s %38s %12s\n", "engine", "decode tok/s", "prefill s",
               "step time vs reference [95% CI]", "direct cost");
        const double cap_s = capture_replay_s(c, S, prompt_len, gen, 1);
        for (int k = 0; k < NCOND; k++) {
            double tps[MAX_REPS], pre[MAX_REPS], direct[MAX_REPS];
            for (int r = 0; r < reps; r++) {
                tps[r] = dec_tok[k][r] / dec_s[k][r];
                pre[r] = pre_s[k][r];
                direct[r] = (k == CAPTURE ? cap_s : sink_s[k][r]) / dec_s[k][r];
            }
            char vs[80] = "", dc[32] = "";
            if (COND_REF[k] >= 0) {
                double *v = ratios[k];
                const double med = median(v, nratio); /* sorted now */
                /* 95% confidence interval of the median: order statistics n/2 -+ 0.98 sqrt(n) */
                const int half = (int)(0.98 * sqrt((double)nratio) + 1.0);
                const int lo = nratio / 2 - half < 0 ? 0 : nratio / 2 - half;
                const int hi = nratio / 2 + half >= nratio ? nratio - 1 : nratio / 2 + half;
                snprintf(vs, sizeof vs, "%+6.2f%% [%+.2f, %+.2f] vs %s", 100 * med, 100 * v[lo], 100 * v[hi],
                         COND_NAME[COND_REF[k]]);
            }
            if (k != BARE) snprintf(dc, sizeof dc, "%.4f%%", 100 * median(direct, reps));
            const double t = median(tps, reps);
            if (k == OFF) tps_ref[si] = t;
            printf("  %-13s %12.1f %10.3f %38s %12s\n", COND_NAME[k], t, median(pre, reps), vs, dc);
        }
    }
    printf("\nbatched decode throughput (recorder off, median):");
    for (int si = 0; si < n_seqs; si++)
        printf("  %d seq: %.1f tok/s (x%.2f)", seqs[si], tps_ref[si], tps_ref[si] / tps_ref[0]);
    printf("\n");
    bw_probe_free(&probe);
    for (int k = OFF; k < NCOND; k++) mt_recorder_free(rec[k]);
    free(step_s);
    mt_model_free(&m);
    mt_kernels_shutdown();
    return 0;
}
