/* Load test of `moetrace serve` over loopback: starts the server on a test checkpoint (or uses a
 * running one), sends N /generate requests from C client threads (keep-alive), a share of them
 * streamed and a share abandoned mid-way (the client disconnects), checks that every completed
 * request carries its full routing, that nothing is left in the engine or the KV cache afterwards,
 * and that the server drains and exits 0 on SIGTERM. Prints requests/s and latency percentiles.
 *
 *   build/bench_server [--requests 2000] [--concurrency 64] [--disconnect 0.1] [--stream 0.25]
 *                      [--max-prompt 64] [--max-new 16] [--threads N] [--model DIR] [--url URL]
 *
 * Exit status 0 when everything checked out. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "support/http_client.h"
#include "support/load_gen.h"
#include "support/server_proc.h"

int main(int argc, char **argv) {
    mt_load_opts o = {.requests = 2000, .concurrency = 64, .max_prompt_tokens = 64, .max_new_tokens = 16,
                      .disconnect_fraction = 0.1, .stream_fraction = 0.25, .seed = 1};
    const char *model = MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe", *url = NULL;
    const char *bin = getenv("MOETRACE_BIN") ? getenv("MOETRACE_BIN") : MT_BINARY_DIR "/moetrace";
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help")) {
            puts("usage: bench_server [--requests N] [--concurrency C] [--disconnect F] [--stream F] [--max-prompt N]\n"
                 "                    [--max-new N] [--threads N] [--model DIR] [--url URL]");
            return 0;
        }
        if (!v) {
            fprintf(stderr, "bench_server: %s needs a value\n", f);
            return 2;
        }
        if (!strcmp(f, "--requests")) o.requests = atoi(v);
        else if (!strcmp(f, "--concurrency")) o.concurrency = atoi(v);
        else if (!strcmp(f, "--disconnect")) o.disconnect_fraction = atof(v);
        else if (!strcmp(f, "--stream")) o.stream_fraction = atof(v);
        else if (!strcmp(f, "--max-prompt")) o.max_prompt_tokens = atoi(v);
        else if (!strcmp(f, "--max-new")) o.max_new_tokens = atoi(v);
        else if (!strcmp(f, "--threads")) threads = atoi(v);
        else if (!strcmp(f, "--model")) model = v;
        else if (!strcmp(f, "--url")) url = v;
        else {
            fprintf(stderr, "bench_server: unknown option %s\n", f);
            return 2;
        }
        i++;
    }
    if (o.requests < 1 || o.concurrency < 1 || o.max_prompt_tokens < 1 || o.max_new_tokens < 1) {
        fprintf(stderr, "bench_server: counts must be positive\n");
        return 2;
    }
    mt_http_global_init();
    mt_test_server srv = {0};
    if (!url) {
        char args[1024];
        snprintf(args, sizeof args, "--model %s --enable-return-routed-experts --max-running-requests %d %s%.0d",
                 model, o.concurrency, threads ? "--threads " : "", threads);
        if (mt_test_server_start(&srv, bin, args, "/tmp/bench_server.log", 120)) return 1;
        url = srv.url;
    }
    o.url = url;
    mt_http_client *c = mt_http_client_new(url, NULL);
    mt_http_response r;
    if (mt_http_call(c, "GET", "/get_model_info", NULL, &r) || r.status != 200) {
        fprintf(stderr, "bench_server: GET /get_model_info failed (%ld %s)\n", r.status, r.error);
        return 1;
    }
    cJSON *info = cJSON_Parse(r.body);
    o.num_experts = cJSON_GetObjectItem(info, "num_experts")->valueint;
    char cfg_path[1024];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", model);
    FILE *f = fopen(cfg_path, "r");
    char cfg_text[65536] = "";
    if (f) {
        cfg_text[fread(cfg_text, 1, sizeof cfg_text - 1, f)] = '\0';
        fclose(f);
    }
    cJSON *cfg = cJSON_Parse(cfg_text);
    o.vocab_size = cfg && cJSON_GetObjectItem(cfg, "vocab_size") ? cJSON_GetObjectItem(cfg, "vocab_size")->valueint : 100;
    cJSON_Delete(cfg);
    cJSON_Delete(info);
    mt_http_response_free(&r);

    mt_load_result res;
    int rc = mt_load_run(&o, &res);
    printf("requests %d (concurrency %d): completed %d, disconnected %d, failed %d\n", o.requests, o.concurrency,
           res.completed, res.disconnected, res.failed);
    if (res.failed) printf("first failure: %s\n", res.first_failure);
    printf("wall %.2f s, %.1f requests/s, %.0f generated tokens/s\n", res.wall_s, res.requests_per_s,
           res.generated_tokens / res.wall_s);
    printf("latency (completed requests): p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n",
           res.latency_p50 * 1e3, res.latency_p90 * 1e3, res.latency_p99 * 1e3, res.latency_max * 1e3);

    /* Nothing may be left behind: no running or waiting request, every KV block free. */
    double running = NAN, waiting = NAN, total = NAN, free_blocks = NAN;
    for (int attempt = 0; attempt < 50; attempt++) {
        if (mt_http_call(c, "GET", "/metrics", NULL, &r) == 0) {
            running = mt_prom_value(r.body, "moetrace_num_requests_running");
            waiting = mt_prom_value(r.body, "moetrace_num_requests_waiting");
            total = mt_prom_value(r.body, "moetrace_kv_cache_blocks_total");
            free_blocks = mt_prom_value(r.body, "moetrace_kv_cache_blocks_free");
        }
        mt_http_response_free(&r);
        if (running == 0 && waiting == 0 && free_blocks == total) break;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    printf("after the load: running %.0f, waiting %.0f, KV blocks free %.0f of %.0f\n", running, waiting, free_blocks,
           total);
    if (!(running == 0 && waiting == 0 && free_blocks == total)) rc = -1;
    mt_http_client_free(c);
    if (srv.pid > 0) {
        int st = mt_test_server_stop(&srv, SIGTERM, 60);
        printf("server exit status after SIGTERM: %d\n", st);
        if (st != 0) rc = -1;
    }
    return rc == 0 ? 0 : 1;
}
