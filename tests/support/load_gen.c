#include "support/load_gen.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "support/http_client.h"
#include "util/base64.h"

typedef struct shared {
    const mt_load_opts *o;
    atomic_int next;
    pthread_mutex_t mu;
    mt_load_result *r;
    double *latency;            /* [requests] of completed ones */
    int n_latency;
} shared;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t next_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void fail(shared *sh, const char *fmt, int index, const char *detail) {
    pthread_mutex_lock(&sh->mu);
    sh->r->failed++;
    if (!sh->r->first_failure[0]) {
        char what[256];
        snprintf(what, sizeof what, fmt, detail);
        snprintf(sh->r->first_failure, sizeof sh->r->first_failure, "request %d: %s", index, what);
    }
    pthread_mutex_unlock(&sh->mu);
}

/* The routing of a completed request: shape [P + G - 1, L, k]; per row and layer either all -1 (a
 * dense layer, the same layers in every row) or k distinct ids in [0, E). Returns NULL when right. */
static const char *check_routing(const cJSON *meta, int n_prompt, int n_generated, int num_experts) {
    static _Thread_local char why[160];
    const cJSON *data = cJSON_GetObjectItem(meta, "routed_experts"), *shape = cJSON_GetObjectItem(meta, "routed_experts_shape");
    if (!cJSON_IsString(data) || !cJSON_IsArray(shape) || cJSON_GetArraySize(shape) != 3) return "no routing";
    int rows = cJSON_GetArrayItem(shape, 0)->valueint, L = cJSON_GetArrayItem(shape, 1)->valueint,
        k = cJSON_GetArrayItem(shape, 2)->valueint;
    if (rows != n_prompt + n_generated - 1) {
        snprintf(why, sizeof why, "%d routing rows for %d prompt + %d generated tokens", rows, n_prompt, n_generated);
        return why;
    }
    uint8_t *bytes;
    size_t len;
    if (mt_base64_decode(data->valuestring, strlen(data->valuestring), &bytes, &len)) return "routing is not base64";
    const char *bad = NULL;
    if (len != (size_t)rows * L * k * 4) bad = "routing byte count does not match its shape";
    const int32_t *ids = (const int32_t *)bytes;
    for (int t = 0; t < rows && !bad; t++) {
        for (int l = 0; l < L && !bad; l++) {
            const int32_t *v = ids + ((size_t)t * L + l) * k;
            bool dense = v[0] == -1, dense_first = ids[(size_t)l * k] == -1;
            if (dense != dense_first) bad = "dense layers differ between rows";
            for (int j = 0; j < k && !bad; j++) {
                if (dense ? v[j] != -1 : v[j] < 0 || v[j] >= num_experts) bad = "expert id out of range";
                for (int m = 0; m < j && !bad && !dense; m++)
                    if (v[m] == v[j]) bad = "an expert chosen twice for one token";
            }
        }
    }
    free(bytes);
    return bad;
}

typedef struct stream_state {
    int events;
    bool abandon_after_first;
    cJSON *last;                /* the last JSON event */
} stream_state;

static int on_event(const char *data, size_t len, void *ctx) {
    (void)len;
    stream_state *st = ctx;
    if (!strcmp(data, "[DONE]")) return 0;
    st->events++;
    cJSON_Delete(st->last);
    st->last = cJSON_Parse(data);
    return st->abandon_after_first ? 1 : 0;
}

static void one_request(shared *sh, mt_http_client *c, int index) {
    const mt_load_opts *o = sh->o;
    uint64_t rng = o->seed ^ (uint64_t)index * 0xD1B54A32D192ED03ull;
    int n_prompt = 1 + (int)(next_rand(&rng) % (uint64_t)o->max_prompt_tokens);
    int max_new = 1 + (int)(next_rand(&rng) % (uint64_t)o->max_new_tokens);
    bool abandon = (double)(next_rand(&rng) % 10000) < o->disconnect_fraction * 10000;
    bool stream = (double)(next_rand(&rng) % 10000) < o->stream_fraction * 10000;
    char *body = malloc((size_t)n_prompt * 12 + 256);
    size_t at = (size_t)sprintf(body, "{\"input_ids\": [");
    for (int i = 0; i < n_prompt; i++)
        at += (size_t)sprintf(body + at, "%s%d", i ? "," : "", (int)(next_rand(&rng) % (uint64_t)o->vocab_size));
    sprintf(body + at, "], \"sampling_params\": {\"max_new_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true}, "
                       "\"return_routed_experts\": true, \"stream\": %s}", max_new, stream ? "true" : "false");
    mt_http_response r;
    double t0 = now_s();
    cJSON *answer = NULL;
    const char *problem = NULL;
    bool abandoned;
    if (stream) {
        stream_state st = {.abandon_after_first = abandon};
        int rc = mt_http_stream(c, "/generate", body, on_event, &st, &r);
        answer = st.last;
        abandoned = abandon && rc == 1;
        if (rc != 0 || r.status != 200 || !st.last) problem = rc ? r.error : "stream without events";
    } else {
        if (abandon) mt_http_client_set_timeout_ms(c, 1 + (long)(next_rand(&rng) % 20));
        int rc = mt_http_call(c, "POST", "/generate", body, &r);
        mt_http_client_set_timeout_ms(c, 0);
        abandoned = abandon && rc != 0;
        if (rc != 0 || r.status != 200) problem = rc ? r.error : r.body;
        else answer = cJSON_Parse(r.body);
    }
    if (abandoned) {
        cJSON_Delete(answer);
        mt_http_response_free(&r);
        free(body);
        pthread_mutex_lock(&sh->mu);
        sh->r->disconnected++;
        pthread_mutex_unlock(&sh->mu);
        return;
    }
    double latency = now_s() - t0;
    free(body);
    if (!problem) {
        const cJSON *meta = cJSON_GetObjectItem(answer, "meta_info");
        const cJSON *ids = cJSON_GetObjectItem(answer, "output_ids");
        int generated = cJSON_GetArraySize(ids);
        if (!meta || generated != max_new) problem = "wrong number of generated tokens";
        else problem = check_routing(meta, n_prompt, generated, o->num_experts);
        if (!problem) {
            pthread_mutex_lock(&sh->mu);
            sh->r->completed++;
            sh->r->generated_tokens += generated;
            sh->latency[sh->n_latency++] = latency;
            pthread_mutex_unlock(&sh->mu);
        }
    }
    if (problem) fail(sh, "%s", index, problem);
    cJSON_Delete(answer);
    mt_http_response_free(&r);
}

static void *worker(void *arg) {
    shared *sh = arg;
    mt_http_client *c = mt_http_client_new(sh->o->url, sh->o->api_key);
    int i;
    while ((i = atomic_fetch_add(&sh->next, 1)) < sh->o->requests) one_request(sh, c, i);
    mt_http_client_free(c);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(const double *sorted, int n, double q) {
    if (n == 0) return 0;
    int i = (int)ceil(q * n) - 1;
    return sorted[i < 0 ? 0 : i >= n ? n - 1 : i];
}

int mt_load_run(const mt_load_opts *o, mt_load_result *r) {
    memset(r, 0, sizeof *r);
    shared sh = {.o = o, .r = r, .latency = calloc((size_t)o->requests + 1, sizeof(double))};
    atomic_init(&sh.next, 0);
    pthread_mutex_init(&sh.mu, NULL);
    pthread_t *threads = calloc((size_t)o->concurrency, sizeof *threads);
    double t0 = now_s();
    for (int t = 0; t < o->concurrency; t++) pthread_create(&threads[t], NULL, worker, &sh);
    for (int t = 0; t < o->concurrency; t++) pthread_join(threads[t], NULL);
    r->wall_s = now_s() - t0;
    qsort(sh.latency, (size_t)sh.n_latency, sizeof *sh.latency, cmp_double);
    r->requests_per_s = r->wall_s > 0 ? r->completed / r->wall_s : 0;
    r->latency_p50 = percentile(sh.latency, sh.n_latency, 0.50);
    r->latency_p90 = percentile(sh.latency, sh.n_latency, 0.90);
    r->latency_p99 = percentile(sh.latency, sh.n_latency, 0.99);
    r->latency_max = sh.n_latency ? sh.latency[sh.n_latency - 1] : 0;
    free(sh.latency);
    free(threads);
    pthread_mutex_destroy(&sh.mu);
    return r->failed == 0 && r->completed + r->disconnected == o->requests ? 0 : -1;
}
