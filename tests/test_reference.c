/* The engine against Hugging Face transformers: fixtures made by tests/fixtures/make_fixtures.py
 * (small random checkpoints saved by transformers, reference outputs in float32).
 * Checks, per architecture and prompt: logits relative error <= 1e-3, routing sets equal for
 * >= 99% of (token, MoE layer) pairs, greedy tokens equal; for the transformers-saved single file
 * and the sharded hub-layout copy; and through `moetrace run` end to end. */
#include <math.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/generate.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "routing/capture.h"
#include "util/npy.h"

#include "reference_common.h"

static void check_model(const char *dir, const char *arch) {
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, dir, MT_LOAD_AUTO, &err)) fail_msg("%s: %s", dir, err.msg);
    for (size_t p = 0; p < 2; p++) {
        fixture_result r = run_fixture(&m, dir, PROMPTS[p]);
        print_message("  %-10s %-5s P=%3d logits rel err %.2e, routing sets equal %.4f, greedy tokens %s\n", arch,
                      PROMPTS[p], r.P, r.logits_rel_err, r.routing_agreement, r.greedy_equal == r.G ? "equal" : "DIFFER");
        assert_true(r.logits_rel_err <= 1e-3);
        assert_true(r.routing_agreement >= 0.99);
        assert_int_equal(r.greedy_equal, r.G);
        double score_err = check_scores(&m, dir, PROMPTS[p], 1e-5);
        print_message("  %-10s %-5s scored prompt: log-probabilities within %.2e of transformers'\n", arch, PROMPTS[p],
                      score_err);
    }
    mt_model_free(&m);
}

static void test_against_transformers(void **state) {
    (void)state;
    for (size_t a = 0; a < 4; a++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", FIXTURES, ARCHS[a]);
        check_model(dir, ARCHS[a]);
    }
}

/* Rotary scaling (yarn past its original length, linear) against transformers. */
static void test_rope_scaling_against_transformers(void **state) {
    (void)state;
    int checked = 0;
    for (size_t v = 0; v < sizeof ROPE_VARIANTS / sizeof *ROPE_VARIANTS; v++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", FIXTURES, ROPE_VARIANTS[v]);
        if (!rope_fixture_made(dir)) continue;
        check_model(dir, ROPE_VARIANTS[v]);
        checked++;
    }
    if (!checked) skip();
}

/* The same references through the sharded, index-described copies (hub tensor naming). */
static void test_sharded_hub_layout(void **state) {
    (void)state;
    for (size_t a = 0; a < 4; a++) {
        char dir[512], ref[512];
        snprintf(dir, sizeof dir, "%s/%s_hub", FIXTURES, ARCHS[a]);
        snprintf(ref, sizeof ref, "%s/%s", FIXTURES, ARCHS[a]);
        mt_model m;
        mt_err err;
        if (mt_model_load(&m, dir, MT_LOAD_AUTO, &err)) fail_msg("%s: %s", dir, err.msg);
        mt_npy prompt, logits;
        load_npy(ref, "prompt", "short", &prompt);
        load_npy(ref, "logits", "short", &logits);
        int P = (int)prompt.count;
        float *ours = malloc((size_t)P * m.cfg.vocab_size * sizeof *ours);
        int32_t out[4];
        int n_out;
        mt_generate_opts o = {.max_new_tokens = 1, .ignore_eos = true, .prompt_logits = ours};
        assert_int_equal(mt_generate(&m, prompt.data, P, &o, out, &n_out, &err), 0);
        assert_true(rel_err(ours, logits.data, (size_t)P * m.cfg.vocab_size) <= 1e-3);
        free(ours);
        mt_npy_free(&prompt);
        mt_npy_free(&logits);
        mt_model_free(&m);
    }
}

/* The model `moetrace demo` embeds (assets/demo-model, trained by tests/fixtures/make_demo_model.py)
 * against its transformers references (tests/fixtures/demo): a trained model, so its routing has
 * structure that random fixtures lack. */
static void test_demo_model(void **state) {
    (void)state;
    const char *dir = MT_SOURCE_DIR "/assets/demo-model", *ref = MT_SOURCE_DIR "/tests/fixtures/demo";
    const char *prompts[] = {"demo", "second"};
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, dir, MT_LOAD_AUTO, &err)) fail_msg("%s: %s", dir, err.msg);
    for (size_t p = 0; p < 2; p++) {
        fixture_result r = run_fixture(&m, ref, prompts[p]);
        print_message("  demo model %-6s P=%3d logits rel err %.2e, routing sets equal %.4f, greedy tokens %s\n",
                      prompts[p], r.P, r.logits_rel_err, r.routing_agreement, r.greedy_equal == r.G ? "equal" : "DIFFER");
        assert_true(r.logits_rel_err <= 1e-3);
        assert_true(r.routing_agreement >= 0.99);
        assert_int_equal(r.greedy_equal, r.G);
    }
    mt_model_free(&m);
}

/* `moetrace run` end to end: the .npy files it writes equal the references. */
static void test_cli_run(void **state) {
    (void)state;
    const char *bin = getenv("MOETRACE_BIN");
    if (!bin) skip();
    char dir[512], cmd[4096], ids[2048] = "";
    snprintf(dir, sizeof dir, "%s/qwen3_moe", FIXTURES);
    mt_npy prompt, logits, routing, tokens, got;
    load_npy(dir, "prompt", "long", &prompt);
    load_npy(dir, "logits", "long", &logits);
    load_npy(dir, "routing", "long", &routing);
    load_npy(dir, "tokens", "long", &tokens);
    for (int i = 0; i < prompt.count; i++)
        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%d", i ? "," : "", ((int32_t *)prompt.data)[i]);
    snprintf(cmd, sizeof cmd,
             "%s run --model %s --input-ids %s --max-new-tokens %d --ignore-eos --temperature 0 --threads 2 "
             "--logits-out %s/cli_logits.npy --routing-out %s/cli_routing.npy --tokens-out %s/cli_tokens.npy > %s/cli_stdout.txt",
             bin, dir, ids, (int)tokens.count, MT_BINARY_DIR, MT_BINARY_DIR, MT_BINARY_DIR, MT_BINARY_DIR);
    assert_int_equal(system(cmd), 0);
    mt_err err;
    char path[512];
    snprintf(path, sizeof path, "%s/cli_logits.npy", MT_BINARY_DIR);
    assert_int_equal(mt_npy_read(path, &got, &err), 0);
    assert_int_equal(got.ndim, 2);
    assert_true(rel_err(got.data, logits.data, (size_t)logits.count) <= 1e-3);
    mt_npy_free(&got);
    snprintf(path, sizeof path, "%s/cli_routing.npy", MT_BINARY_DIR);
    assert_int_equal(mt_npy_read(path, &got, &err), 0);
    assert_int_equal(got.type, MT_NPY_I32);
    assert_int_equal(got.ndim, 3);
    assert_int_equal(got.shape[0], prompt.count + tokens.count - 1);
    assert_memory_equal(got.data, routing.data, (size_t)routing.count * 4);
    mt_npy_free(&got);
    snprintf(path, sizeof path, "%s/cli_tokens.npy", MT_BINARY_DIR);
    assert_int_equal(mt_npy_read(path, &got, &err), 0);
    assert_memory_equal(got.data, tokens.data, (size_t)tokens.count * 4);
    mt_npy_free(&got);
    mt_npy_free(&prompt);
    mt_npy_free(&logits);
    mt_npy_free(&routing);
    mt_npy_free(&tokens);
}

/* A version 1.0 .npy file of float32 with the given shape text and data_bytes zero bytes of data. */
static void write_npy(const char *path, const char *shape, size_t data_bytes) {
    char header[256];
    int n = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }", shape);
    while ((10 + n + 1) % 64) header[n++] = ' ';
    header[n++] = '\n';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned char magic[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
    fwrite(magic, 1, sizeof magic, f);
    fwrite(header, 1, (size_t)n, f);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
}

/* Shapes that are negative, or whose element count overflows into the data's size, are refused
 * (found by fuzz/fuzz_npy.c: the count wrapped and readers went far past the data). */
static void test_npy_malformed(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/npy_malformed.npy", MT_BINARY_DIR);
    const struct { const char *shape; size_t bytes; bool ok; } cases[] = {
        {"(2, 3)", 24, true},
        {"(0, 5)", 0, true},
        {"(-1, -4)", 16, false},
        {"(4611686018427387905,)", 4, false},          /* 2^62 + 1 elements: 4 x count wraps to 4 bytes */
        {"(129, 99999999999999999999)", 4, false},    /* strtoll saturates; the product overflows */
        {"(3,)", 8, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_npy(path, cases[i].shape, cases[i].bytes);
        mt_npy a;
        mt_err err = {{0}};
        int rc = mt_npy_read(path, &a, &err);
        if ((rc == 0) != cases[i].ok) fail_msg("shape %s: rc %d (%s)", cases[i].shape, rc, err.msg);
        if (rc == 0) mt_npy_free(&a);
        else assert_non_null(strstr(err.msg, path));
    }
    remove(path);
}

int main(void) {
    mt_kernels_init(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_transformers),
        cmocka_unit_test(test_rope_scaling_against_transformers),
        cmocka_unit_test(test_sharded_hub_layout),
        cmocka_unit_test(test_demo_model),
        cmocka_unit_test(test_cli_run),
        cmocka_unit_test(test_npy_malformed),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mt_kernels_shutdown();
    return rc;
}
