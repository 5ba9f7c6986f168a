/* The recorder endpoints of `moetrace serve` as a serving engineer drives them (a tiny model with
 * dummy weights, per_pass mode, a window of 3 passes):
 *  - start/stop/dump in any order: a dump before any start or twice in a row is an empty dump,
 *    stop twice and start while recording answer SGLang's texts; a start drops what was recorded;
 *  - the window: the last 3 passes, each MoE row of logical_count summing to num_tokens x top_k,
 *    the passes summing to logical_count, and equal to the returned routing of those tokens;
 *  - /metrics's window lines and balancedness agree with the dump taken right after them;
 *  - the dump dir removed before a dump: a 500 naming it, the server serves on, and the data is
 *    kept for the next dump once the folder is back; dumps in quick succession get distinct names. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "server_setup.h"
#include "util/base64.h"

#define LAYERS 3
#define EXPERTS 8
#define TOP_K 2
#define WINDOW 3

static mt_test_server g_srv;
static mt_http_client *g_c;

static int setup(void **state) {
    (void)state;
    if (server_setup("srvrec_")) return -1;
    if (!g_bin) return 0;
    if (server_text_model(SERVER_TEXT_CONFIG)) return -1;
    if (mkdir(path_of("dumps"), 0755)) return -1;
    char args[1024];
    snprintf(args, sizeof args,
             "--model %s/model --load-format dummy --threads 1 --expert-dump-dir %s --enable-return-routed-experts "
             "--expert-distribution-recorder-mode per_pass --expert-distribution-recorder-buffer-size %d",
             g_dir, path_of("dumps"), WINDOW);
    if (mt_test_server_start(&g_srv, g_bin, args, path_of("server.log"), 120)) return -1;
    g_c = mt_http_client_new(g_srv.url, NULL);
    return 0;
}

static int teardown(void **state) { return server_stop_and_teardown(state, &g_srv, g_c); }

/* Calls a recorder endpoint and checks its plain-text answer. */
static void text_call(const char *path, const char *want) {
    mt_http_response r;
    assert_int_equal(mt_http_call(g_c, "POST", path, "", &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, want);
    mt_http_response_free(&r);
}

static const char START[] = "Start recording the expert distribution.\n";
static const char STOP[] = "Stop recording the expert distribution.\n";
static const char DUMP[] = "Dump expert distribution record.\n";

static int64_t num(const cJSON *o, const char *k) { return (int64_t)cJSON_GetObjectItem(o, k)->valuedouble; }

static cJSON *dump_inline(void) { return server_call(g_c, "/dump_expert_distribution_record?inline=1", "", 200); }

/* Greedy /generate of n prompt ids (base + i) and g new tokens; its routing [P + g - 1, L, K] into
 * *rows (malloc'd), the row count returned. */
static int generate(int base, int n, int g, int32_t **rows) {
    char body[2048];
    int w = snprintf(body, sizeof body, "{\"input_ids\": [");
    for (int i = 0; i < n; i++) w += snprintf(body + w, sizeof body - (size_t)w, "%s%d", i ? ", " : "", base + i);
    snprintf(body + w, sizeof body - (size_t)w,
             "], \"sampling_params\": {\"max_new_tokens\": %d, \"temperature\": 0, \"ignore_eos\": true}, "
             "\"return_routed_experts\": true}", g);
    cJSON *j = server_call(g_c, "/generate", body, 200);
    const cJSON *m = cJSON_GetObjectItem(j, "meta_info");
    const char *b64 = cJSON_GetObjectItem(m, "routed_experts")->valuestring;
    size_t len;
    uint8_t *raw = NULL;
    assert_int_equal(mt_base64_decode(b64, strlen(b64), &raw, &len), 0);
    int T = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "routed_experts_shape"), 0)->valueint;
    assert_int_equal(len, (size_t)T * LAYERS * TOP_K * 4);
    *rows = (int32_t *)raw;
    cJSON_Delete(j);
    return T;
}

/* Every MoE row of the dump's logical_count sums to num_tokens x top_k, dense rows to 0; per_pass:
 * the passes sum to logical_count and their tokens to num_tokens. */
static void check_dump(const cJSON *d, int64_t passes, int64_t tokens) {
    assert_int_equal(num(d, "num_forward_passes"), passes);
    assert_int_equal(num(d, "num_tokens"), tokens);
    const cJSON *lc = cJSON_GetObjectItem(d, "logical_count"), *ps = cJSON_GetObjectItem(d, "passes");
    assert_int_equal(cJSON_GetArraySize(ps), passes);
    int64_t sum[LAYERS][EXPERTS] = {{0}}, ptok = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, ps) {
        ptok += num(p, "num_tokens");
        for (int l = 0; l < LAYERS; l++)
            for (int e = 0; e < EXPERTS; e++)
                sum[l][e] += (int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(p, "logical_count"), l), e)
                                 ->valuedouble;
    }
    assert_int_equal(ptok, tokens);
    for (int l = 0; l < LAYERS; l++) {
        int64_t row = 0;
        for (int e = 0; e < EXPERTS; e++) {
            int64_t c = (int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(lc, l), e)->valuedouble;
            assert_int_equal(c, sum[l][e]);
            row += c;
        }
        assert_int_equal(row, l == 0 ? 0 : tokens * TOP_K);
    }
}

static void test_orders(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    /* dump before any start, and twice: empty dumps */
    for (int i = 0; i < 2; i++) {
        cJSON *d = dump_inline();
        check_dump(d, 0, 0);
        cJSON_Delete(d);
    }
    text_call("/stop_expert_distribution_record", STOP);
    text_call("/stop_expert_distribution_record", STOP);
    int32_t *rows;
    text_call("/start_expert_distribution_record", START);
    generate(10, 5, 4, &rows);
    free(rows);
    /* a start while recording drops what was recorded */
    text_call("/start_expert_distribution_record", START);
    cJSON *d = dump_inline();
    check_dump(d, 0, 0);
    cJSON_Delete(d);
    /* still recording after a dump; stopped, nothing more is recorded */
    generate(20, 6, 1, &rows);
    free(rows);
    text_call("/stop_expert_distribution_record", STOP);
    generate(30, 6, 3, &rows);
    free(rows);
    d = dump_inline();
    check_dump(d, 1, 6);
    cJSON_Delete(d);
}

/* The window of the last WINDOW passes equals the routing of their tokens, and /metrics says what
 * the dump says. */
static void test_window_and_metrics(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    text_call("/start_expert_distribution_record", START);
    int32_t *rows;
    int T = generate(40, 9, 7, &rows); /* a prefill pass, then 6 one-token passes */
    assert_int_equal(T, 9 + 7 - 1);
    text_call("/stop_expert_distribution_record", STOP);
    mt_http_response m;
    assert_int_equal(mt_http_call(g_c, "GET", "/metrics", NULL, &m), 0);
    cJSON *d = dump_inline();
    check_dump(d, WINDOW, WINDOW);
    int64_t want[LAYERS][EXPERTS] = {{0}};
    for (int t = T - WINDOW; t < T; t++)
        for (int l = 0; l < LAYERS; l++)
            for (int k = 0; k < TOP_K; k++) {
                int32_t e = rows[((size_t)t * LAYERS + l) * TOP_K + k];
                if (e >= 0) want[l][e]++;
            }
    free(rows);
    const cJSON *lc = cJSON_GetObjectItem(d, "logical_count");
    for (int l = 0; l < LAYERS; l++)
        for (int e = 0; e < EXPERTS; e++)
            assert_int_equal((int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(lc, l), e)->valuedouble, want[l][e]);
    assert_true(mt_prom_value(m.body, "moetrace_expert_recorder_window_forward_passes") == WINDOW);
    assert_true(mt_prom_value(m.body, "moetrace_expert_recorder_window_tokens") == WINDOW);
    assert_non_null(strstr(m.body, "moetrace_expert_recorder_active{mode=\"per_pass\"} 0\n"));
    const cJSON *per_layer = cJSON_GetObjectItem(cJSON_GetObjectItem(d, "balancedness"), "per_layer");
    for (int l = 1; l < LAYERS; l++) {
        char name[96];
        snprintf(name, sizeof name, "moetrace_expert_balancedness{layer=\"%d\"} ", l);
        const char *at = strstr(m.body, name);
        assert_non_null(at);
        double got = strtod(at + strlen(name), NULL), want_b = cJSON_GetArrayItem(per_layer, l - 1)->valuedouble;
        if (got < want_b - 1e-6 || got > want_b + 1e-6) fail_msg("layer %d: /metrics %g, dump %g", l, got, want_b);
    }
    mt_http_response_free(&m);
    cJSON_Delete(d);
}

static int count_dumps(void) {
    DIR *dir = opendir(path_of("dumps"));
    int n = 0;
    struct dirent *e;
    while (dir && (e = readdir(dir)))
        if (!strncmp(e->d_name, "expert_distribution_", 20) && strstr(e->d_name, ".json")) n++;
    if (dir) closedir(dir);
    return n;
}

static void test_dump_dir_gone(void **state) {
    (void)state;
    SKIP_WITHOUT_SERVER();
    text_call("/start_expert_distribution_record", START);
    int32_t *rows;
    generate(50, 4, 1, &rows);
    free(rows);
    char moved[600];
    snprintf(moved, sizeof moved, "%s.away", path_of("dumps"));
    assert_int_equal(rename(path_of("dumps"), moved), 0);
    long status;
    cJSON *e = mt_api_json(g_c, "/dump_expert_distribution_record", "", &status);
    assert_int_equal(status, 500);
    const char *msg = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "error"), "message")->valuestring;
    assert_non_null(strstr(msg, path_of("dumps")));
    cJSON_Delete(e);
    generate(60, 3, 1, &rows); /* the server serves on */
    free(rows);
    assert_int_equal(rename(moved, path_of("dumps")), 0);
    text_call("/stop_expert_distribution_record", STOP);
    cJSON *d = dump_inline();
    check_dump(d, 2, 7); /* both requests' passes, kept through the failed dump */
    cJSON_Delete(d);
    /* dumps in quick succession: one file each */
    int before = count_dumps();
    for (int i = 0; i < 5; i++) text_call("/dump_expert_distribution_record", DUMP);
    assert_int_equal(count_dumps(), before + 5);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_orders),
        cmocka_unit_test(test_window_and_metrics),
        cmocka_unit_test(test_dump_dir_gone),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
