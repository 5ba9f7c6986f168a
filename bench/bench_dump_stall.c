/* How long the engine thread waits on the expert distribution recorder while a dump is written.
 *
 * A recorder of the Qwen3-30B-A3B shape (48 MoE layers, 128 experts, top-8) is filled with
 * --rows tokens of per_token routing (or a stat window of --rows / 64 passes), then dumped from
 * another thread while this thread goes on feeding it 64-token passes, as the engine thread does:
 * each pass's commit (on_pass, the one call that takes the recorder's lock) is timed. The dump takes
 * the window out under the lock and writes it from there (mt_recorder_take), so a commit should
 * wait microseconds, not the dump's whole time (what it waited while the dump held the lock).
 *
 *   build/bench_dump_stall [--rows N] [--dir DIR]     (default 65536 rows, /tmp) */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "routing/recorder.h"

enum { L = 48, E = 128, K = 8, PASS = 64 };

typedef struct dump_job {
    mt_recorder *r;
    atomic_bool done;
    double secs;
    int rc;
    char path[4096];
    mt_err err;
} dump_job;

static void *dump_main(void *arg) {
    dump_job *j = arg;
    double t0 = now_s();
    j->rc = mt_recorder_dump(j->r, j->path, sizeof j->path, &j->err);
    j->secs = now_s() - t0;
    atomic_store(&j->done, true);
    return NULL;
}

/* One pass of PASS tokens (pass p), its commit's time returned. */
static double feed_pass(mt_routing_sink s, int p) {
    static int32_t ids[PASS * K], seq[PASS], pos[PASS], tok[PASS];
    static int64_t req[PASS];
    for (int t = 0; t < PASS; t++) {
        seq[t] = t;
        req[t] = t;
        pos[t] = p;
        tok[t] = (p * 31 + t) % 151936;
    }
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < PASS * K; i++) ids[i] = (int32_t)((p * 7 + i * 13 + l * 5) % E);
        mt_routing_event ev = {.layer = l, .n_tokens = PASS, .top_k = K, .seq_ids = seq, .positions = pos,
                               .tokens = tok, .request_ids = req, .topk_ids = ids};
        s.on_layer(s.ctx, &ev);
    }
    mt_pass_event pe = {.n_tokens = PASS, .num_seqs_in_pass = PASS};
    double t0 = now_s();
    s.on_pass(s.ctx, &pe);
    return now_s() - t0;
}

static int run(mt_recorder_mode mode, long rows, const char *dir) {
    mt_config c;
    memset(&c, 0, sizeof c);
    c.num_hidden_layers = L;
    c.num_experts = E;
    c.top_k = K;
    for (int l = 0; l < L; l++) c.layer_is_moe[l] = true;
    c.num_moe_layers = L;
    mt_recorder_opts o;
    mt_recorder_opts_default(&o);
    o.mode = mode;
    o.max_tokens = rows + 100000; /* room for the passes fed during the dump */
    o.buffer_size = -1;
    o.dump_dir = dir;
    mt_err err;
    mt_recorder *r = mt_recorder_new(&c, "bench", &o, &err);
    if (!r) {
        fprintf(stderr, "bench_dump_stall: %s\n", err.msg);
        return 1;
    }
    mt_routing_sink s = mt_recorder_sink(r);
    mt_recorder_start(r);
    long passes = rows / PASS;
    double idle_max = 0;
    for (long p = 0; p < passes; p++) {
        double t = feed_pass(s, (int)p);
        if (p > passes / 2 && t > idle_max) idle_max = t;
    }
    dump_job j = {.r = r};
    atomic_init(&j.done, false);
    pthread_t th;
    if (pthread_create(&th, NULL, dump_main, &j)) return 1;
    double wait_max = 0, wait_sum = 0;
    long during = 0;
    while (!atomic_load(&j.done)) {
        double t = feed_pass(s, (int)(passes + during));
        wait_sum += t;
        if (t > wait_max) wait_max = t;
        during++;
    }
    pthread_join(th, NULL);
    if (j.rc) {
        fprintf(stderr, "bench_dump_stall: %s\n", j.err.msg);
        return 1;
    }
    printf("%-9s %6ld passes of %d tokens (%ld rows) dumped in %7.1f ms; %4ld passes committed meanwhile: "
           "commit %.3f ms mean, %.3f ms at most (%.3f ms at most before the dump)\n",
           mt_recorder_mode_name(mode), passes, PASS, passes * PASS, 1e3 * j.secs, during,
           during ? 1e3 * wait_sum / (double)during : 0.0, 1e3 * wait_max, 1e3 * idle_max);
    remove(j.path);
    if (mode == MT_REC_PER_TOKEN) { /* its tensors beside the index */
        size_t n = strlen(j.path);
        if (n > 5) {
            snprintf(j.path + n - 5, sizeof j.path - (n - 5), ".safetensors");
            remove(j.path);
        }
    }
    mt_recorder_free(r);
    return 0;
}

int main(int argc, char **argv) {
    long rows = 65536;
    const char *dir = "/tmp";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows = atol(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else {
            fprintf(stderr, "usage: bench_dump_stall [--rows N] [--dir DIR]\n");
            return 2;
        }
    }
    if (rows < PASS) rows = PASS;
    printf("the recorder's commit (on_pass, engine thread) while another thread dumps; Qwen3-30B-A3B shape\n");
    if (run(MT_REC_PER_TOKEN, rows, dir) || run(MT_REC_STAT, rows, dir)) return 1;
    return 0;
}
