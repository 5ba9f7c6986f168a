/* moetrace serve under load and with clients that go away:
 *  - a bounded loopback load (300 requests, 32 client threads, some streamed, some abandoned):
 *    every completed request carries its full routing, nothing is left in the engine or the KV
 *    cache, and the server exits 0 on SIGTERM (under ASan: no leak);
 *  - the same kind of load with a KV cache of 10 blocks: requests are preempted and come back, and
 *    every completed one still has its full routing; /metrics counts the preemptions, the log says so;
 *  - a client that disconnects (non-streamed, streamed, or still queued) cancels its sequence:
 *    it finishes as "abort" long before its token limit and its KV blocks are freed, and the
 *    request is counted with code 499 in moetrace_http_requests_total (a stream sent to its end:
 *    200);
 *  - SIGTERM whose drain timeout cancels requests still generating: every client, streamed or
 *    not, still gets its answer (200, finish_reason abort), none a closed connection, and the
 *    server exits 0.
 * bench/bench_server.c runs the full-size load (2,000 requests at concurrency 64). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "server_setup.h"
#include "support/http_client.h"
#include "support/load_gen.h"
#include "support/server_proc.h"

#define MODEL MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"

/* Slow enough per token (a few ms on one thread) that a generation of thousands of tokens is
 * surely still running when its client goes away. */
static const char SLOW_CONFIG[] =
    "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 2000, \"hidden_size\": 512, \"num_hidden_layers\": 8,"
    " \"num_attention_heads\": 8, \"num_key_value_heads\": 4, \"head_dim\": 64, \"max_position_embeddings\": 4096,"
    " \"num_experts\": 32, \"num_experts_per_tok\": 4, \"moe_intermediate_size\": 256, \"intermediate_size\": 512,"
    " \"eos_token_id\": 2}";

static int setup(void **state) {
    (void)state;
    return server_setup("srvload_");
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The value of one labelled sample, e.g. name{finish_reason="abort"}; NAN when absent. */
static double sample(const char *text, const char *name_and_labels) {
    const char *at = strstr(text, name_and_labels);
    return at ? strtod(at + strlen(name_and_labels), NULL) : NAN;
}

typedef struct engine_state {
    double running, waiting, kv_total, kv_free, aborted, generated;
    double left, ok;   /* /generate requests counted with code 499, 200 (0 when absent) */
} engine_state;

static engine_state read_state(mt_http_client *c) {
    engine_state s = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    mt_http_response r;
    if (mt_http_call(c, "GET", "/metrics", NULL, &r) == 0 && r.status == 200) {
        s.running = mt_prom_value(r.body, "moetrace_num_requests_running");
        s.waiting = mt_prom_value(r.body, "moetrace_num_requests_waiting");
        s.kv_total = mt_prom_value(r.body, "moetrace_kv_cache_blocks_total");
        s.kv_free = mt_prom_value(r.body, "moetrace_kv_cache_blocks_free");
        s.aborted = sample(r.body, "moetrace_requests_finished_total{finish_reason=\"abort\"} ");
        s.generated = mt_prom_value(r.body, "moetrace_generation_tokens_total");
        s.left = sample(r.body, "moetrace_http_requests_total{path=\"/generate\",code=\"499\"} ");
        s.ok = sample(r.body, "moetrace_http_requests_total{path=\"/generate\",code=\"200\"} ");
        if (isnan(s.left)) s.left = 0;
        if (isnan(s.ok)) s.ok = 0;
    }
    mt_http_response_free(&r);
    return s;
}

/* Waits until the engine is empty with `aborted` aborted requests in total. */
static engine_state wait_idle(mt_http_client *c, double aborted) {
    engine_state s;
    for (int i = 0; i < 300; i++) {
        s = read_state(c);
        if (s.running == 0 && s.waiting == 0 && s.kv_free == s.kv_total && s.aborted == aborted) return s;
        sleep_ms(50);
    }
    fail_msg("engine not idle: running %g, waiting %g, KV free %g of %g, aborted %g (want %g)", s.running, s.waiting,
             s.kv_free, s.kv_total, s.aborted, aborted);
    return s;
}

/* Runs the load o against a server started with `extra` flags, checks every completed request and
 * that the engine ends empty; returns the server's /metrics body (malloc'd) and log. */
static void run_load(const char *extra, const char *log_name, mt_load_opts o, char **metrics_out, char **log_out) {
    mt_test_server srv;
    char args[512], log[512];
    snprintf(args, sizeof args, "--model %s --threads 1 --enable-return-routed-experts %s", MODEL, extra);
    snprintf(log, sizeof log, "%s/%s", g_dir, log_name);
    assert_int_equal(mt_test_server_start(&srv, g_bin, args, log, 120), 0);
    o.url = srv.url;
    mt_load_result r;
    int rc = mt_load_run(&o, &r);
    print_message("load: %d completed, %d abandoned, %d failed in %.2f s (%.0f requests/s; p50 %.0f ms, p99 %.0f ms)\n",
                  r.completed, r.disconnected, r.failed, r.wall_s, r.requests_per_s, r.latency_p50 * 1e3,
                  r.latency_p99 * 1e3);
    if (rc) fail_msg("load: %d failed; first: %s", r.failed, r.first_failure);
    assert_true(r.completed > 0);
    mt_http_client *c = mt_http_client_new(srv.url, NULL);
    engine_state s = read_state(c);
    for (int i = 0; i < 100 && !(s.running == 0 && s.waiting == 0 && s.kv_free == s.kv_total); i++) {
        sleep_ms(50);
        s = read_state(c);
    }
    assert_true(s.running == 0 && s.waiting == 0 && s.kv_free == s.kv_total);
    mt_http_response m;
    assert_int_equal(mt_http_call(c, "GET", "/metrics", NULL, &m), 0);
    *metrics_out = strdup(m.body);
    mt_http_response_free(&m);
    mt_http_client_free(c);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);
    *log_out = mt_test_server_log(&srv);
}

static void test_load(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_load_opts o = {.requests = 300, .concurrency = 32, .max_prompt_tokens = 64, .max_new_tokens = 12,
                      .vocab_size = 512, .num_experts = 8, .disconnect_fraction = 0.1, .stream_fraction = 0.25,
                      .seed = 7};
    char *metrics, *log;
    run_load("--max-running-requests 32", "load.log", o, &metrics, &log);
    free(metrics);
    free(log);
}

/* The same with a KV cache far too small for the requests running together: they are preempted
 * and come back (some abandoned by their clients meanwhile), every completed one still with its full
 * routing; the metrics count the preemptions and the log tells of them. */
static void test_load_preempting(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_load_opts o = {.requests = 120, .concurrency = 16, .max_prompt_tokens = 64, .max_new_tokens = 96,
                      .vocab_size = 512, .num_experts = 8, .disconnect_fraction = 0.1, .stream_fraction = 0.25,
                      .seed = 11};
    char *metrics, *log;
    run_load("--max-running-requests 16 --kv-blocks 10", "load_preempting.log", o, &metrics, &log);
    double preempted = mt_prom_value(metrics, "moetrace_preemptions_total");
    print_message("preempting load: %g preemptions, %g tokens forwarded again\n", preempted,
                  mt_prom_value(metrics, "moetrace_tokens_recomputed_total"));
    assert_true(preempted > 0);
    assert_non_null(log);
    assert_non_null(strstr(log, "the KV cache ran out"));
    free(metrics);
    free(log);
}

static const char LONG_REQUEST[] =
    "{\"input_ids\": [5, 6, 7, 8], \"sampling_params\": {\"max_new_tokens\": 4000, \"ignore_eos\": true}%s}";

typedef struct background_stream {
    mt_http_client *c;
    const char *body;
    atomic_int events;   /* events received */
    atomic_int leave;    /* set: the client leaves at its next event */
    int rc;
} background_stream;

static int until_told(const char *data, size_t len, void *ctx) {
    (void)data;
    (void)len;
    background_stream *b = ctx;
    atomic_fetch_add(&b->events, 1);
    return atomic_load(&b->leave);
}

static void *stream_in_background(void *arg) {
    background_stream *b = arg;
    mt_http_response r;
    b->rc = mt_http_stream(b->c, "/generate", b->body, until_told, b, &r);
    mt_http_response_free(&r);
    return NULL;
}

/* Waits until /generate was counted `left` times with code 499 and `ok` times with 200 (a request
 * is counted once its answer ended, which may trail its abort by a moment). */
static void wait_counted(mt_http_client *c, double left, double ok) {
    engine_state s = read_state(c);
    for (int i = 0; i < 500 && !(s.left == left && s.ok == ok); i++) {
        sleep_ms(20);
        s = read_state(c);
    }
    if (!(s.left == left && s.ok == ok))
        fail_msg("/generate counted %g times with 499 and %g with 200 (want %g and %g)", s.left, s.ok, left, ok);
}

static int count_events(const char *data, size_t len, void *ctx) {
    (void)data;
    (void)len;
    (*(int *)ctx)++;
    return 0;
}

static int abandon_at_first_event(const char *data, size_t len, void *ctx) {
    (void)data;
    (void)len;
    (*(int *)ctx)++;
    return 1;
}

static void test_disconnect_cancels(void **state) {
    (void)state;
    if (!g_bin) skip();
    char dir[512], args[1024], log[512];
    snprintf(dir, sizeof dir, "%s/slow", g_dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    write_text("slow/config.json", SLOW_CONFIG);
    snprintf(args, sizeof args, "--model %s --load-format dummy --threads 1 --max-running-requests 1 --kv-blocks 600",
             dir);
    snprintf(log, sizeof log, "%s/slow.log", g_dir);
    mt_test_server srv;
    assert_int_equal(mt_test_server_start(&srv, g_bin, args, log, 120), 0);
    mt_http_client *c = mt_http_client_new(srv.url, NULL), *d = mt_http_client_new(srv.url, NULL);
    char body[512];
    mt_http_response r;

    /* Not streamed: the client gives up after 300 ms. */
    snprintf(body, sizeof body, LONG_REQUEST, "");
    mt_http_client_set_timeout_ms(d, 300);
    assert_int_equal(mt_http_call(d, "POST", "/generate", body, &r), -1);
    mt_http_response_free(&r);
    engine_state s = wait_idle(c, 1);
    assert_true(s.generated < 4000);
    wait_counted(c, 1, 0);

    /* Streamed: the client leaves after the first event. */
    snprintf(body, sizeof body, LONG_REQUEST, ", \"stream\": true");
    int events = 0;
    mt_http_client_free(d);
    d = mt_http_client_new(srv.url, NULL);
    assert_int_equal(mt_http_stream(d, "/generate", body, abandon_at_first_event, &events, &r), 1);
    mt_http_response_free(&r);
    assert_int_equal(events, 1);
    double before = s.generated;
    s = wait_idle(c, 2);
    assert_true(s.generated - before < 4000);
    wait_counted(c, 2, 0); /* not 200, though its status line had gone out */

    /* Still waiting for its turn (one sequence at a time): cancelled in the queue at once, while
     * the request ahead of it goes on (a stream that leaves when told to). */
    mt_http_client *e = mt_http_client_new(srv.url, NULL);
    char ahead_body[512];
    snprintf(ahead_body, sizeof ahead_body, LONG_REQUEST, ", \"stream\": true");
    background_stream ahead = {.c = e, .body = ahead_body};
    atomic_init(&ahead.events, 0);
    atomic_init(&ahead.leave, 0);
    pthread_t t;
    pthread_create(&t, NULL, stream_in_background, &ahead);
    for (int i = 0; i < 500 && atomic_load(&ahead.events) == 0; i++) sleep_ms(20);
    assert_true(atomic_load(&ahead.events) > 0);
    snprintf(body, sizeof body, LONG_REQUEST, "");
    mt_http_client_set_timeout_ms(d, 300);
    assert_int_equal(mt_http_call(d, "POST", "/generate", body, &r), -1);
    mt_http_response_free(&r);
    for (int i = 0; i < 500; i++) { /* the engine's gauges follow the counters within an iteration */
        s = read_state(c);
        if (s.aborted == 3 && s.waiting == 0) break;
        sleep_ms(20);
    }
    if (!(s.aborted == 3 && s.waiting == 0 && s.running == 1))
        fail_msg("queued request not cancelled at once: aborted %g, waiting %g, running %g", s.aborted, s.waiting,
                 s.running);
    atomic_store(&ahead.leave, 1);
    pthread_join(t, NULL);
    assert_int_equal(ahead.rc, 1);
    wait_idle(c, 4);
    wait_counted(c, 4, 0);

    /* A stream sent to its end counts as 200 (d no longer gives up after 300 ms: a loaded machine
       may take longer for the two tokens). */
    mt_http_client_set_timeout_ms(d, 0);
    int n_events = 0;
    assert_int_equal(mt_http_stream(d, "/generate", "{\"input_ids\": [5, 6], \"stream\": true, \"sampling_params\": "
                                    "{\"max_new_tokens\": 2, \"ignore_eos\": true}}", count_events, &n_events, &r), 0);
    mt_http_response_free(&r);
    assert_true(n_events >= 2);
    wait_counted(c, 4, 1);
    mt_http_client_free(e);
    mt_http_client_free(d);
    mt_http_client_free(c);
    assert_int_equal(mt_test_server_stop(&srv, SIGTERM, 60), 0);
}

#define DRAIN_CLIENTS 32

typedef struct drain_client {
    const char *url;
    bool stream;
    long status;
    bool aborted;  /* the answer (the last event of a stream) says finish_reason abort */
} drain_client;

static int last_event(const char *data, size_t len, void *ctx) {
    (void)len;
    drain_client *d = ctx;
    if (strstr(data, "\"finish_reason\":{\"type\":\"abort\"")) d->aborted = true;
    return 0;
}

static void *drain_client_run(void *arg) {
    drain_client *d = arg;
    mt_http_client *c = mt_http_client_new(d->url, NULL);
    char body[512];
    /* large answers (every token's routing and top log-probabilities) take their handlers a while
       to format, so a daemon stopped right after the cancellation would cut some of them */
    snprintf(body, sizeof body, LONG_REQUEST,
             d->stream ? ", \"stream\": true, \"return_routed_experts\": true"
                       : ", \"return_routed_experts\": true, \"return_logprob\": true, \"top_logprobs_num\": 20");
    mt_http_response r;
    if (d->stream) {
        if (mt_http_stream(c, "/generate", body, last_event, d, &r) == 0) d->status = r.status;
    } else if (mt_http_call(c, "POST", "/generate", body, &r) == 0) {
        d->status = r.status;
        d->aborted = r.body && strstr(r.body, "\"finish_reason\":{\"type\":\"abort\"");
    }
    mt_http_response_free(&r);
    mt_http_client_free(c);
    return NULL;
}

/* The drain timeout cancels requests that are still generating: their handlers answer them
 * (finish_reason abort) before the daemon closes the connections. */
static void test_sigterm_cancels_and_answers(void **state) {
    (void)state;
    if (!g_bin) skip();
    char dir[512], args[1024], log[512];
    snprintf(dir, sizeof dir, "%s/slow_drain", g_dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    write_text("slow_drain/config.json", SLOW_CONFIG);
    snprintf(args, sizeof args, "--model %s --load-format dummy --threads 1 --kv-blocks 8400 --drain-timeout 1 "
             "--enable-return-routed-experts",
             dir);
    snprintf(log, sizeof log, "%s/slow_drain.log", g_dir);
    mt_test_server srv;
    assert_int_equal(mt_test_server_start(&srv, g_bin, args, log, 120), 0);
    drain_client clients[DRAIN_CLIENTS];
    pthread_t t[DRAIN_CLIENTS];
    for (int i = 0; i < DRAIN_CLIENTS; i++) {
        clients[i] = (drain_client){.url = srv.url, .stream = i % 4 == 0};
        pthread_create(&t[i], NULL, drain_client_run, &clients[i]);
    }
    mt_http_client *c = mt_http_client_new(srv.url, NULL);
    engine_state s = read_state(c);
    for (int i = 0; i < 500 && s.running != DRAIN_CLIENTS; i++) {
        sleep_ms(20);
        s = read_state(c);
    }
    assert_int_equal((int)s.running, DRAIN_CLIENTS);
    mt_http_client_free(c);
    sleep_ms(200);
    int st = mt_test_server_stop(&srv, SIGTERM, 60);
    int answered = 0;
    for (int i = 0; i < DRAIN_CLIENTS; i++) {
        pthread_join(t[i], NULL);
        answered += clients[i].status == 200 && clients[i].aborted;
    }
    if (answered != DRAIN_CLIENTS)
        fail_msg("%d of %d cancelled requests answered (200, finish_reason abort)", answered, DRAIN_CLIENTS);
    assert_int_equal(st, 0);
}

/* A client stalled mid-upload does not hold SIGTERM's exit for --drain-timeout: its request would
 * only be refused once its body came, so the drain does not wait for it, and the server says it
 * closed that connection. */
static void test_sigterm_skips_stalled_upload(void **state) {
    (void)state;
    if (!g_bin) skip();
    char args[1024], log[512];
    snprintf(args, sizeof args, "--model %s --threads 1 --drain-timeout 30", MODEL);
    snprintf(log, sizeof log, "%s/stalled_upload.log", g_dir);
    mt_test_server srv;
    assert_int_equal(mt_test_server_start(&srv, g_bin, args, log, 120), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char *head = "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"input_ids\": [1,";
    assert_int_equal(write(fd, head, strlen(head)), (ssize_t)strlen(head));
    sleep_ms(300);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int st = mt_test_server_stop(&srv, SIGTERM, 20);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    close(fd);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    assert_int_equal(st, 0);
    if (took > 10) fail_msg("the server took %.1f s to stop beside a stalled upload", took);
    char *text = mt_test_server_log(&srv);
    assert_non_null(text);
    assert_non_null(strstr(text, "closing 1 connection(s) whose request body had not come"));
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_load_preempting),
        cmocka_unit_test(test_disconnect_cancels),
        cmocka_unit_test(test_sigterm_cancels_and_answers),
        cmocka_unit_test(test_sigterm_skips_stalled_upload),
    };
    return cmocka_run_group_tests(tests, setup, server_teardown);
}
