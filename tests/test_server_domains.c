/* moetrace serve --domain-field: expert use per domain over served traffic, end to end over HTTP
 * with the qwen3_moe test checkpoint:
 *  - 30 concurrent /generate requests (streamed or not) labelled "code", "prose" or 7 (an integer
 *    label), or not at all: at the dump each domain's stat dump counts exactly the routing its
 *    requests returned, the domains and the unlabelled requests add up to the recorder's dump, and
 *    domains.json lists each domain's requests and tokens (domains.png drawn: the dump visualises);
 *  - bad labels (empty, an object, longer than 200 bytes) are 400s and the server keeps serving;
 *  - past 256 distinct labels a new one is a 400; known ones still work;
 *  - a dump that cannot be written loses nothing: the next one counts its requests, per domain too;
 *  - after /stop_expert_distribution_record nothing more is counted. */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "support/api_util.h"
#include "support/bg_request.h"
#include "support/http_client.h"
#include "support/server_proc.h"
#include "server_setup.h"
#include "util/json_util.h"

#define MODEL MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"
#define LAYERS 4
#define TOP_K 2
#define EXPERTS 8
#define N_REQ 30
#define N_LABELS 4 /* "code", "prose", 7, none */

static mt_test_server g_srv;
static const char *LABEL_JSON[N_LABELS] = {"\"code\"", "\"prose\"", "7", NULL};
static const char *LABEL_NAME[N_LABELS] = {"code", "prose", "7", NULL};

static int setup(void **state) {
    (void)state;
    if (server_setup("dom_")) return -1;
    if (!g_bin) return 0;
    char args[1024], log[512];
    snprintf(args, sizeof args,
             "--model %s --threads 2 --enable-return-routed-experts --domain-field topic --expert-dump-dir %s "
             "--expert-dump-visualize --max-running-requests 16 --max-batch-tokens 64",
             MODEL, g_dir);
    snprintf(log, sizeof log, "%s/server.log", g_dir);
    return mt_test_server_start(&g_srv, g_bin, args, log, 120);
}

static int teardown(void **state) {
    (void)state;
    if (!g_bin) return 0;
    if (g_srv.pid > 0) mt_test_server_stop(&g_srv, SIGKILL, 10);
    return server_teardown(state);
}

typedef struct req_case {
    int label;                     /* index into LABEL_*; N_LABELS - 1: none */
    bool stream;
    int32_t prompt[40];
    int n_prompt, max_new;
    pthread_barrier_t *start;
    long status;
    int64_t count[LAYERS][EXPERTS]; /* its returned routing, counted */
    int64_t rows;
} req_case;

static char *body_of(const req_case *g) {
    char *b = malloc(2048), *p = b;
    p += sprintf(p, "{\"input_ids\": [");
    for (int i = 0; i < g->n_prompt; i++) p += sprintf(p, "%s%d", i ? "," : "", g->prompt[i]);
    p += sprintf(p, "], \"sampling_params\": {\"max_new_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true}, "
                    "\"return_routed_experts\": true, \"stream\": %s",
                 g->max_new, g->stream ? "true" : "false");
    if (LABEL_JSON[g->label]) p += sprintf(p, ", \"topic\": %s", LABEL_JSON[g->label]);
    strcpy(p, "}");
    return b;
}

static void count_routing(req_case *g, const cJSON *meta) {
    const cJSON *b64 = cJSON_GetObjectItem(meta, "routed_experts");
    size_t n = 0;
    int32_t *ids = cJSON_IsString(b64) ? mt_api_routing_ids(b64->valuestring, "int32", &n) : NULL;
    if (!ids) {
        g->status = -1;
        return;
    }
    g->rows = (int64_t)(n / (LAYERS * TOP_K));
    for (size_t i = 0; i < n; i++) {
        int l = (int)(i / TOP_K % LAYERS);
        if (ids[i] >= 0) g->count[l][ids[i]]++;
    }
    free(ids);
}

static void *run_case(void *arg) {
    req_case *g = arg;
    char *body = body_of(g);
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    pthread_barrier_wait(g->start);
    if (g->stream) {
        mt_sse_events ev;
        mt_api_stream(c, "/generate", body, &ev, &g->status);
        if (g->status == 200 && ev.n > 0) count_routing(g, cJSON_GetObjectItem(cJSON_GetArrayItem(ev.list, ev.n - 1), "meta_info"));
        mt_sse_events_free(&ev);
    } else {
        cJSON *j = mt_api_json(c, "/generate", body, &g->status);
        if (g->status == 200) count_routing(g, cJSON_GetObjectItem(j, "meta_info"));
        cJSON_Delete(j);
    }
    mt_http_client_free(c);
    free(body);
    return NULL;
}

/* The newest domain_usage_* folder of the dump dir, into out; false when there is none. */
static bool newest_usage_dir(char *out, size_t n) {
    DIR *d = opendir(g_dir);
    struct dirent *e;
    char best[256] = "";
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "domain_usage_", 13) && strcmp(e->d_name, best) > 0) snprintf(best, sizeof best, "%s", e->d_name);
    if (d) closedir(d);
    if (!best[0]) return false;
    snprintf(out, n, "%s/%s", g_dir, best);
    return true;
}

/* Dumps the recorder (inline: its JSON into *dump when dump is not NULL) and loads the domain
 * usage written beside it; dir gets its folder. */
static cJSON *dump_domains(mt_http_client *c, cJSON **dump, char *dir, size_t n) {
    long status;
    cJSON *d = mt_api_json(c, "/dump_expert_distribution_record?inline=1", "", &status);
    assert_int_equal(status, 200);
    if (dump) *dump = d;
    else cJSON_Delete(d);
    char path[1024];
    assert_true(newest_usage_dir(dir, n));
    snprintf(path, sizeof path, "%s/domains.json", dir);
    mt_err err;
    cJSON *dj = mt_json_load_file(path, &err);
    if (!dj) fail_msg("%s", err.msg);
    return dj;
}

static int64_t count_at(const cJSON *dump, int l, int e) {
    return (int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(dump, "logical_count"), l), e)->valuedouble;
}

static const cJSON *domain_named(const cJSON *dj, const char *name) {
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(dj, "domains"))
        if (!strcmp(cJSON_GetObjectItem(d, "name")->valuestring, name)) return d;
    return NULL;
}

static void post_ok(mt_http_client *c, const char *path) {
    mt_http_response r;
    assert_int_equal(mt_http_call(c, "POST", path, "", &r), 0);
    assert_int_equal(r.status, 200);
    mt_http_response_free(&r);
}

static long generate_status(mt_http_client *c, const char *topic_json, char *msg, size_t n) {
    char body[1024];
    snprintf(body, sizeof body, "{\"input_ids\": [3, 4, 5], \"sampling_params\": {\"max_new_tokens\": 1}%s%s}",
             topic_json ? ", \"topic\": " : "", topic_json ? topic_json : "");
    long status;
    cJSON *j = mt_api_json(c, "/generate", body, &status);
    const cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message");
    if (msg) snprintf(msg, n, "%s", cJSON_IsString(m) ? m->valuestring : "");
    cJSON_Delete(j);
    return status;
}

static void test_domains_add_up(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    post_ok(c, "/start_expert_distribution_record");
    static req_case cases[N_REQ];
    pthread_t threads[N_REQ];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_REQ);
    unsigned seed = 7;
    for (int i = 0; i < N_REQ; i++) {
        req_case *g = &cases[i];
        memset(g, 0, sizeof *g);
        g->label = i % N_LABELS;
        g->stream = i % 3 == 0;
        seed = seed * 1103515245u + 12345u;
        g->n_prompt = 1 + (int)((seed >> 16) % 40);
        g->max_new = 1 + i % 9;
        for (int t = 0; t < g->n_prompt; t++) g->prompt[t] = 3 + (int32_t)((seed >> (t % 16)) % 400) + t;
        g->start = &start;
        pthread_create(&threads[i], NULL, run_case, g);
    }
    for (int i = 0; i < N_REQ; i++) pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < N_REQ; i++)
        if (cases[i].status != 200) fail_msg("request %d: status %ld", i, cases[i].status);

    cJSON *dump;
    char dir[512], path[1024];
    mt_err err;
    cJSON *dj = dump_domains(c, &dump, dir, sizeof dir);
    assert_string_equal(cJSON_GetObjectItem(dj, "format")->valuestring, "moetrace.domain_usage.v1");
    assert_string_equal(cJSON_GetObjectItem(dj, "field")->valuestring, "topic");
    assert_null(cJSON_GetObjectItem(dj, "data"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(dj, "domains")), N_LABELS - 1);
    int unlabelled = 0;
    for (int i = 0; i < N_REQ; i++) unlabelled += LABEL_JSON[cases[i].label] == NULL;
    assert_int_equal(cJSON_GetObjectItem(dj, "unlabelled_requests")->valueint, unlabelled);
    snprintf(path, sizeof path, "%s/domains.png", dir);
    assert_int_equal(access(path, F_OK), 0);

    int64_t rest[LAYERS][EXPERTS] = {{0}}; /* the unlabelled requests' routing */
    for (int i = 0; i < N_REQ; i++)
        if (!LABEL_JSON[cases[i].label])
            for (int l = 0; l < LAYERS; l++)
                for (int e = 0; e < EXPERTS; e++) rest[l][e] += cases[i].count[l][e];
    int64_t domains_sum[LAYERS][EXPERTS] = {{0}};
    for (int k = 0; k < N_LABELS - 1; k++) {
        const cJSON *d = domain_named(dj, LABEL_NAME[k]);
        if (!d) fail_msg("domain %s missing", LABEL_NAME[k]);
        int64_t want[LAYERS][EXPERTS] = {{0}}, rows = 0;
        int requests = 0;
        for (int i = 0; i < N_REQ; i++) {
            if (cases[i].label != k) continue;
            requests++;
            rows += cases[i].rows;
            for (int l = 0; l < LAYERS; l++)
                for (int e = 0; e < EXPERTS; e++) want[l][e] += cases[i].count[l][e];
        }
        assert_int_equal(cJSON_GetObjectItem(d, "requests")->valueint, requests);
        assert_int_equal(cJSON_GetObjectItem(d, "tokens")->valueint, rows);
        cJSON *sd = mt_json_load_file(cJSON_GetObjectItem(d, "stat_dump")->valuestring, &err);
        if (!sd) fail_msg("%s", err.msg);
        assert_int_equal((int64_t)cJSON_GetObjectItem(sd, "num_tokens")->valuedouble, rows);
        for (int l = 0; l < LAYERS; l++)
            for (int e = 0; e < EXPERTS; e++) {
                assert_int_equal(count_at(sd, l, e), want[l][e]);
                domains_sum[l][e] += want[l][e];
            }
        cJSON_Delete(sd);
    }
    /* the domains and the unlabelled requests add up to the recorder's window */
    for (int l = 0; l < LAYERS; l++)
        for (int e = 0; e < EXPERTS; e++) assert_int_equal(count_at(dump, l, e), domains_sum[l][e] + rest[l][e]);
    /* /metrics: each label's requests since start-up, and no tokens since the dump */
    mt_http_response m;
    assert_int_equal(mt_http_call(c, "GET", "/metrics", NULL, &m), 0);
    for (int k = 0; k < N_LABELS - 1; k++) {
        int requests = 0;
        for (int i = 0; i < N_REQ; i++) requests += cases[i].label == k;
        char line[128];
        snprintf(line, sizeof line, "moetrace_domain_requests_total{domain=\"%s\"} %d\n", LABEL_NAME[k], requests);
        if (!strstr(m.body, line)) fail_msg("/metrics lacks '%s'", line);
        snprintf(line, sizeof line, "moetrace_domain_recorded_tokens{domain=\"%s\"} 0\n", LABEL_NAME[k]);
        if (!strstr(m.body, line)) fail_msg("/metrics lacks '%s'", line);
    }
    mt_http_response_free(&m);
    cJSON_Delete(dj);
    cJSON_Delete(dump);
    mt_http_client_free(c);
}

/* A stop that comes while a prompt is being prefilled (passes of 64 tokens here) stops the recorder and
 * the domains between the same two passes: the domains' tokens equal the dump's, wherever it lands. */
static void test_stop_mid_prompt(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    char body[2048];
    for (int k = 0; k < 16; k++) {
        int n = snprintf(body, sizeof body, "{\"topic\": \"code\", \"sampling_params\": {\"max_new_tokens\": 1}, "
                                            "\"input_ids\": [%d", 3 + k); /* a prompt of its own: no cached prefix */
        for (int t = 1; t < 300; t++) n += snprintf(body + n, sizeof body - (size_t)n, ",%d", 3 + (t * 37 + k) % 400);
        snprintf(body + n, sizeof body - (size_t)n, "]}");
        post_ok(c, "/start_expert_distribution_record");
        mt_bg_request b;
        mt_bg_start(&b, g_srv.url, body, false);
        usleep((useconds_t)(k * 1000));
        post_ok(c, "/stop_expert_distribution_record");
        mt_bg_join(&b);
        assert_int_equal(b.status, 200);
        mt_bg_free(&b);
        cJSON *dump;
        char dir[512];
        cJSON *dj = dump_domains(c, &dump, dir, sizeof dir);
        int64_t in_dump = (int64_t)cJSON_GetObjectItem(dump, "num_tokens")->valuedouble;
        int64_t in_domains = (int64_t)cJSON_GetObjectItem(dj, "tokens")->valuedouble;
        if (in_dump != in_domains)
            fail_msg("stop after %d ms: the dump counts %lld tokens, the domains %lld", k, (long long)in_dump,
                     (long long)in_domains);
        cJSON_Delete(dj);
        cJSON_Delete(dump);
    }
    mt_http_client_free(c);
}

/* A dump that cannot be written (its folder gone) is a 500 and loses nothing: the recorder's window
 * and the domains' usage of the same passes both go back, so the next dump counts every request
 * since the last one written, in the recorder's dump and per domain alike. */
static void test_failed_dump_keeps_domains(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    post_ok(c, "/start_expert_distribution_record");
    cJSON_Delete(dump_domains(c, NULL, (char[512]){0}, 512)); /* an empty window to start from */
    static req_case cases[8];
    pthread_barrier_t one;
    pthread_barrier_init(&one, NULL, 1);
    char away[600];
    snprintf(away, sizeof away, "%s.away", g_dir);
    for (int i = 0; i < 8; i++) {
        req_case *g = &cases[i];
        memset(g, 0, sizeof *g);
        g->label = i % N_LABELS;
        g->n_prompt = 3 + i;
        g->max_new = 2 + i % 3;
        for (int t = 0; t < g->n_prompt; t++) g->prompt[t] = 5 + 11 * i + t;
        g->start = &one;
        run_case(g);
        assert_int_equal(g->status, 200);
        if (i == 5) { /* the folder goes away: the dump fails */
            assert_int_equal(rename(g_dir, away), 0);
            long status;
            cJSON *e = mt_api_json(c, "/dump_expert_distribution_record", "", &status);
            rename(away, g_dir);
            assert_int_equal(status, 500);
            const cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "error"), "message");
            if (!cJSON_IsString(m) || !strstr(m->valuestring, "not an existing folder"))
                fail_msg("%s", cJSON_IsString(m) ? m->valuestring : "no message");
            cJSON_Delete(e);
        }
    }
    pthread_barrier_destroy(&one);
    cJSON *dump;
    char dir[512];
    mt_err err;
    cJSON *dj = dump_domains(c, &dump, dir, sizeof dir);
    int64_t all[LAYERS][EXPERTS] = {{0}}, rows_all = 0;
    for (int i = 0; i < 8; i++) {
        rows_all += cases[i].rows;
        for (int l = 0; l < LAYERS; l++)
            for (int e = 0; e < EXPERTS; e++) all[l][e] += cases[i].count[l][e];
    }
    assert_int_equal((int64_t)cJSON_GetObjectItem(dump, "num_tokens")->valuedouble, rows_all);
    assert_int_equal(cJSON_GetObjectItem(dj, "tokens")->valueint, rows_all);
    for (int l = 0; l < LAYERS; l++)
        for (int e = 0; e < EXPERTS; e++) assert_int_equal(count_at(dump, l, e), all[l][e]);
    for (int k = 0; k < N_LABELS - 1; k++) {
        int64_t want[LAYERS][EXPERTS] = {{0}}, rows = 0;
        int requests = 0;
        for (int i = 0; i < 8; i++)
            if (cases[i].label == k) {
                requests++;
                rows += cases[i].rows;
                for (int l = 0; l < LAYERS; l++)
                    for (int e = 0; e < EXPERTS; e++) want[l][e] += cases[i].count[l][e];
            }
        const cJSON *d = domain_named(dj, LABEL_NAME[k]);
        assert_int_equal(cJSON_GetObjectItem(d, "requests")->valueint, requests);
        assert_int_equal(cJSON_GetObjectItem(d, "tokens")->valueint, rows);
        cJSON *sd = mt_json_load_file(cJSON_GetObjectItem(d, "stat_dump")->valuestring, &err);
        if (!sd) fail_msg("%s", err.msg);
        for (int l = 0; l < LAYERS; l++)
            for (int e = 0; e < EXPERTS; e++) assert_int_equal(count_at(sd, l, e), want[l][e]);
        cJSON_Delete(sd);
    }
    assert_int_equal(cJSON_GetObjectItem(dj, "unlabelled_requests")->valueint, 2);
    mt_http_response m;
    assert_int_equal(mt_http_call(c, "GET", "/metrics", NULL, &m), 0);
    if (!strstr(m.body, "moetrace_expert_dumps_failed_total 1\n")) fail_msg("/metrics: no failed dump counted");
    mt_http_response_free(&m);
    cJSON_Delete(dj);
    cJSON_Delete(dump);
    mt_http_client_free(c);
}

static void test_bad_labels_and_limit(void **state) {
    (void)state;
    if (!g_bin) skip();
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    char msg[512], long_label[256];
    memset(long_label, 'x', 203);
    long_label[0] = long_label[202] = '"';
    long_label[203] = 0;
    assert_int_equal(generate_status(c, "\"\"", msg, sizeof msg), 400);
    assert_non_null(strstr(msg, "'topic' must be a non-empty string or an integer"));
    assert_int_equal(generate_status(c, "{}", msg, sizeof msg), 400);
    assert_int_equal(generate_status(c, "1.5", msg, sizeof msg), 400);
    assert_int_equal(generate_status(c, long_label, msg, sizeof msg), 400);
    assert_non_null(strstr(msg, "longer than 200 bytes"));
    assert_int_equal(generate_status(c, NULL, NULL, 0), 200);
    /* a label with characters Prometheus escapes */
    assert_int_equal(generate_status(c, "\"say \\\"hi\\\"\\n\"", msg, sizeof msg), 200);
    mt_http_response m;
    assert_int_equal(mt_http_call(c, "GET", "/metrics", NULL, &m), 0);
    if (!strstr(m.body, "moetrace_domain_requests_total{domain=\"say \\\"hi\\\"\\n\"} 1\n")) fail_msg("%s", m.body);
    mt_http_response_free(&m);
    /* labels up to the most there can be; one more is refused, known ones still served */
    post_ok(c, "/start_expert_distribution_record");
    for (int i = 0; i < 256; i++) {
        char label[32];
        snprintf(label, sizeof label, "\"l%d\"", i);
        long st = generate_status(c, label, msg, sizeof msg);
        if (i < 252 && st != 200) fail_msg("label %d: %ld %s", i, st, msg);
        if (i >= 252 && (st != 400 || !strstr(msg, "256 domains are recorded already"))) fail_msg("label %d: %ld %s", i, st, msg);
    }
    assert_int_equal(generate_status(c, "\"code\"", NULL, 0), 200);
    char dir[512], path[1024];
    cJSON *dj = dump_domains(c, NULL, dir, sizeof dir);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(dj, "domains")), 256);
    assert_int_equal(cJSON_GetObjectItem(domain_named(dj, "code"), "requests")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(domain_named(dj, "prose"), "requests")->valueint, 0);
    assert_int_equal(cJSON_GetObjectItem(domain_named(dj, "prose"), "tokens")->valueint, 0);
    cJSON_Delete(dj);
    snprintf(path, sizeof path, "%s/domains.png", dir);
    assert_int_equal(access(path, F_OK), -1); /* more than 32 domains: not drawn */
    /* stopped: nothing counted */
    post_ok(c, "/stop_expert_distribution_record");
    assert_int_equal(generate_status(c, "\"code\"", NULL, 0), 200);
    dj = dump_domains(c, NULL, dir, sizeof dir);
    assert_int_equal(cJSON_GetObjectItem(domain_named(dj, "code"), "tokens")->valueint, 0);
    cJSON_Delete(dj);
    long health;
    cJSON_Delete(mt_api_json(c, "/health", NULL, &health));
    assert_int_equal(health, 200);
    mt_http_client_free(c);
}

/* MOETRACE_EXPERT_DUMP_VISUALIZE (SPEC §4: =1) set to anything but 1 or 0 is an error naming the
 * variable, as the recorder's variables are; "true" used to start a server that silently drew no
 * heatmaps (a server that does start is stopped by timeout after 30 s). */
static void test_visualize_env(void **state) {
    (void)state;
    if (!g_bin) skip();
    static const char *const bad[] = {"true", "yes", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cmd[2048], out[4096];
        snprintf(cmd, sizeof cmd, "MOETRACE_EXPERT_DUMP_VISUALIZE='%s' timeout 30 '%s' serve --model %s --port 0 2>&1", bad[i], g_bin,
                 MODEL);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = 0;
        int st = pclose(p);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 2 || !strstr(out, "MOETRACE_EXPERT_DUMP_VISUALIZE"))
            fail_msg("MOETRACE_EXPERT_DUMP_VISUALIZE='%s': status %d, output '%s'", bad[i], st, out);
    }
}

/* Runs GET /dashboard's script under node (when installed) on stub canvases: for models of many
 * experts (512) or layers (250), every cell and balancedness figure lies inside the canvas (the
 * fixed 900 x 400 canvas cut them off); under a placement of 4 to 1000 GPUs, a bar per GPU and the
 * mean line lie inside the GPU canvas and the window's balancedness is told; a failed rebalance's
 * error message stays in the status line across refreshes. */
static const char DASHBOARD_CHECK[] =
    "const fs = require('fs'), vm = require('vm');\n"
    "const html = fs.readFileSync(process.argv[2], 'utf8');\n"
    "const src = html.split('<script>')[1].split('</script>')[0];\n"
    "const ops = [];\n"
    "const g = {clearRect() {}, fillRect(x, y, w, h) { ops.push(['rect', x, y, w, h]); },\n"
    "           fillText(t, x, y) { ops.push(['text', x, y]); }, fillStyle: '', font: ''};\n"
    "const canvas = {width: 900, height: 400, getContext: () => g};\n"
    "const bars = {width: 900, height: 160, getContext: () => g};\n"
    "const els = {map: canvas, gpus: bars};\n"
    "const ctx = {document: {getElementById: id => els[id] || (els[id] = {textContent: ''})}, location: {search: ''},\n"
    "             URLSearchParams, fetch: () => new Promise(() => {}), setInterval: () => 0};\n"
    "vm.createContext(ctx);\n"
    "vm.runInContext(src, ctx);\n"
    "for (const [L, E] of [[4, 8], [61, 256], [48, 512], [250, 64], [94, 1024]]) {\n"
    "  const d = {num_hidden_layers: L, num_experts: E, logical_count: [], balancedness: []};\n"
    "  for (let l = 0; l < L; l++) {\n"
    "    d.logical_count.push(Array.from({length: E}, (_, e) => e % 7));\n"
    "    d.balancedness.push(l % 5 ? 0.5 : null);\n"
    "  }\n"
    "  ops.length = 0;\n"
    "  ctx.draw(d);\n"
    "  let cells = 0;\n"
    "  for (const o of ops) {\n"
    "    const out = o[0] === 'rect' ? o[1] + o[3] > canvas.width || o[2] + o[4] > canvas.height\n"
    "                                : o[1] + 30 > canvas.width || o[2] > canvas.height;\n"
    "    if (out) { console.log(`${L} x ${E}: ${o[0]} at ${o.slice(1)} outside ${canvas.width} x ${canvas.height}`); process.exit(1); }\n"
    "    if (o[0] === 'rect') cells++;\n"
    "  }\n"
    "  if (cells !== L * E) { console.log(`${L} x ${E}: ${cells} cells`); process.exit(1); }\n"
    "}\n"
    "const fail = m => { console.log(m); process.exit(1); };\n"
    "for (const M of [4, 64, 1000]) {\n"
    "  const load = Array.from({length: M}, (_, i) => 10 + i % 5);\n"
    "  const want = (load.reduce((a, b) => a + b) / M / Math.max(...load)).toFixed(3);\n"
    "  ops.length = 0;\n"
    "  ctx.drawGpus({gpu_load: load});\n"
    "  const rects = ops.filter(o => o[0] === 'rect');\n"
    "  if (rects.length !== M + 1) fail(`${M} GPUs: ${rects.length} rectangles`);\n"
    "  for (const o of rects) if (o[1] < 0 || o[2] < 0 || o[1] + o[3] > bars.width || o[2] + o[4] > bars.height)\n"
    "    fail(`${M} GPUs: rect at ${o.slice(1)} outside ${bars.width} x ${bars.height}`);\n"
    "  if (els.gpu.hidden || !els.gputext.textContent.includes(want)) fail(`${M} GPUs: '${els.gputext.textContent}'`);\n"
    "}\n"
    "ctx.drawGpus(null);\n"
    "if (!els.gpu.hidden) fail('the GPU section shows without a placement');\n"
    "const d = {model: 'm', mode: 'stat', recording: false, num_forward_passes: 0, num_tokens: 0, balancedness_mean: 1,\n"
    "           ep_size: 4, running: 0, waiting: 0, num_hidden_layers: 1, num_experts: 8, eplb_every: 0,\n"
    "           logical_count: [[0, 0, 0, 0, 0, 0, 0, 0]], balancedness: [1],\n"
    "           placement: {source: 'trivial', num_gpus: 4, num_replicas: 8, gpu_load: [0, 0, 0, 0],\n"
    "                       switches: {update_expert_location: 0, eplb_rebalance: 0, periodic: 0}}};\n"
    "const refused = JSON.stringify({error: {message: 'the recorder is not running'}});\n"
    "ctx.fetch = path => Promise.resolve(path === '/eplb_rebalance'\n"
    "  ? {ok: false, status: 400, text: () => Promise.resolve(refused)} : {ok: true, json: () => Promise.resolve(d)});\n"
    "ctx.call('/eplb_rebalance');\n"
    "setTimeout(() => {\n"
    "  ctx.refresh();\n"
    "  setTimeout(() => {\n"
    "    const t = els.status.textContent;\n"
    "    if (!t.startsWith('error: the recorder is not running | ') || !t.includes('placement trivial')) fail(`status '${t}'`);\n"
    "    console.log('ok');\n"
    "  }, 50);\n"
    "}, 50);\n";

static void test_dashboard_fits(void **state) {
    (void)state;
    if (!g_bin || system("node --version >/dev/null 2>&1") != 0) skip();
    mt_http_client *c = mt_http_client_new(g_srv.url, NULL);
    mt_http_response r;
    assert_int_equal(mt_http_call(c, "GET", "/dashboard", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    char page[512], script[512], cmd[1200], out[4096];
    snprintf(page, sizeof page, "%s/dashboard.html", g_dir);
    snprintf(script, sizeof script, "%s/dashboard_check.js", g_dir);
    FILE *f = fopen(page, "w");
    assert_non_null(f);
    fputs(r.body, f);
    fclose(f);
    f = fopen(script, "w");
    assert_non_null(f);
    fputs(DASHBOARD_CHECK, f);
    fclose(f);
    mt_http_response_free(&r);
    mt_http_client_free(c);
    snprintf(cmd, sizeof cmd, "node '%s' '%s' 2>&1", script, page);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    if (st != 0 || strcmp(out, "ok\n")) fail_msg("dashboard: %s", out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domains_add_up),
        cmocka_unit_test(test_stop_mid_prompt),
        cmocka_unit_test(test_failed_dump_keeps_domains),
        cmocka_unit_test(test_bad_labels_and_limit),
        cmocka_unit_test(test_visualize_env),
        cmocka_unit_test(test_dashboard_fits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
