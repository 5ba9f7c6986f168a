/* `moetrace demo` (SPEC §3): the embedded model end to end. Runs the binary into a scratch folder
 * and checks what it reports and writes: the checkpoint it wrote is loadable by the other commands
 * and gives the same routing through `moetrace run`; routing.npy has SPEC §2's layout; batching
 * and the EPLB placement left the routing unchanged; the stat dumps, placement and pictures exist;
 * the per-domain step wrote its dumps, and `moetrace profile` takes the dataset it wrote.
 * Bad options exit 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "test_cli.h"
#include "test_files.h"
#include "tmp_dir.h"
#include "util/npy.h"

static char out_text[1 << 17];

static void assert_png(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s missing", path);
    unsigned char sig[8] = {0};
    assert_int_equal(fread(sig, 1, 8, f), 8);
    fclose(f);
    assert_memory_equal(sig, "\x89PNG\r\n\x1a\n", 8);
}

static void test_demo_end_to_end(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    char args[2048], path[1024];
    assert_int_equal(tmp_dir_make("demo_"), 0);
    const char *dir = g_dir;
    snprintf(args, sizeof args, "demo --out %s --threads 2 --max-new-tokens 12", dir);
    int rc = run_moetrace(args, out_text, sizeof out_text);
    if (rc != 0) fail_msg("moetrace demo exited %d:\n%s", rc, out_text);
    assert_non_null(strstr(out_text, "identical to its run alone, bit for bit"));
    assert_non_null(strstr(out_text, "unchanged by the placement"));
    assert_non_null(strstr(out_text, "6. Expert use per domain"));

    /* routing.npy: [P + G - 1, layers, top_k] int32, -1 exactly on the dense layer */
    mt_npy r;
    mt_err err;
    snprintf(path, sizeof path, "%s/routing.npy", dir);
    assert_int_equal(mt_npy_read(path, &r, &err), 0);
    assert_int_equal(r.type, MT_NPY_I32);
    assert_int_equal(r.ndim, 3);
    int rows = (int)r.shape[0], L = (int)r.shape[1], k = (int)r.shape[2];
    assert_int_equal(L, 4);
    assert_int_equal(k, 2);
    const int32_t *ids = r.data;
    for (int t = 0; t < rows; t++)
        for (int l = 0; l < L; l++)
            for (int j = 0; j < k; j++) {
                int32_t e = ids[((size_t)t * L + l) * k + j];
                if (l == 1) assert_int_equal(e, -1);
                else assert_true(e >= 0 && e < 8);
            }

    /* the checkpoint it wrote, through `moetrace run` with the same prompt: the same routing */
    snprintf(args, sizeof args,
             "run --model %s/demo-model --prompt 'Every token of the batch is routed to its experts' --max-new-tokens 12 "
             "--threads 2 --routing-out %s/run_routing.npy",
             dir, dir);
    rc = run_moetrace(args, out_text, sizeof out_text);
    if (rc != 0) fail_msg("moetrace run on the demo's checkpoint exited %d:\n%s", rc, out_text);
    mt_npy r2;
    snprintf(path, sizeof path, "%s/run_routing.npy", dir);
    assert_int_equal(mt_npy_read(path, &r2, &err), 0);
    assert_int_equal(r2.count, r.count);
    assert_memory_equal(r2.data, r.data, (size_t)r.count * sizeof(int32_t));
    mt_npy_free(&r);
    mt_npy_free(&r2);

    /* the placement: SPEC §6's format, 12 slots on 4 GPUs for each of the 3 MoE layers */
    snprintf(path, sizeof path, "%s/placement.json", dir);
    char *text = slurp(path, NULL);
    assert_non_null(text);
    cJSON *p = cJSON_Parse(text);
    assert_non_null(p);
    assert_string_equal(cJSON_GetObjectItem(p, "format")->valuestring, "moetrace.placement.v1");
    assert_int_equal(cJSON_GetObjectItem(p, "num_gpus")->valueint, 4);
    const cJSON *p2l = cJSON_GetObjectItem(p, "physical_to_logical_map");
    assert_int_equal(cJSON_GetArraySize(p2l), 3);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetArrayItem(p2l, 0)), 12);
    cJSON_Delete(p);
    free(text);

    assert_png(dir, "heatmap.png");
    assert_png(dir, "load.png");

    /* step 6: two domains of 6 requests, each with its dump, the picture; and the profile command
     * it names runs on the domains.jsonl it wrote */
    for (int pass = 0; pass < 2; pass++) {
        snprintf(path, sizeof path, pass ? "%s/prof/domains.json" : "%s/domains.json", dir);
        text = slurp(path, NULL);
        if (!text) fail_msg("%s missing", path);
        cJSON *dj = cJSON_Parse(text);
        assert_non_null(dj);
        const cJSON *doms = cJSON_GetObjectItem(dj, "domains");
        assert_int_equal(cJSON_GetArraySize(doms), 2);
        for (int g = 0; g < 2; g++) {
            const cJSON *d = cJSON_GetArrayItem(doms, g);
            assert_string_equal(cJSON_GetObjectItem(d, "name")->valuestring, g ? "commands" : "prose");
            assert_int_equal(cJSON_GetObjectItem(d, "requests")->valueint, 6);
            char *dump = slurp(cJSON_GetObjectItem(d, "stat_dump")->valuestring, NULL);
            assert_non_null(dump);
            free(dump);
        }
        cJSON_Delete(dj);
        free(text);
        if (pass == 0) {
            assert_png(dir, "domains.png");
            snprintf(args, sizeof args,
                     "profile --model %s/demo-model --data %s/domains.jsonl --domain-field domain --out %s/prof "
                     "--max-new-tokens 4 --threads 2",
                     dir, dir, dir);
            rc = run_moetrace(args, out_text, sizeof out_text);
            if (rc != 0) fail_msg("moetrace profile on the demo's domains.jsonl exited %d:\n%s", rc, out_text);
        }
    }
    assert_int_equal(tmp_dir_remove(), 0);
}

static void test_demo_bad_options(void **state) {
    (void)state;
    if (!getenv("MOETRACE_BIN")) skip();
    assert_int_equal(run_moetrace("demo --help", out_text, sizeof out_text), 0);
    assert_non_null(strstr(out_text, "usage: moetrace demo"));
    assert_int_equal(run_moetrace("demo --no-such-flag", out_text, sizeof out_text), 2);
    assert_non_null(strstr(out_text, "--no-such-flag"));
    assert_int_equal(run_moetrace("demo --max-new-tokens 0", out_text, sizeof out_text), 2);
    assert_int_equal(run_moetrace("demo --device tpu", out_text, sizeof out_text), 2);
    assert_int_equal(run_moetrace("demo --out /proc/no/such/dir", out_text, sizeof out_text), 1);
    assert_non_null(strstr(out_text, "/proc/no/such/dir"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_end_to_end),
        cmocka_unit_test(test_demo_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
