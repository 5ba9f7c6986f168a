/* Model loading: config spellings, dummy weights, and every malformed checkpoint giving a clear
 * error before any compute (missing tensor, wrong shape, unsupported dtype, truncated file, bad
 * config). Malformed checkpoints are derived from the qwen3_moe fixture in a temp folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "model/model.h"
#include "util/json_util.h"

#define SRC MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"

static char g_dir[256];

static void write_text(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void copy_file(const char *from, const char *to, long limit) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    long done = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (limit >= 0 && done + (long)n > limit) n = (size_t)(limit - done);
        fwrite(buf, 1, n, out);
        done += (long)n;
        if (limit >= 0 && done >= limit) break;
    }
    fclose(in);
    fclose(out);
}

/* A fresh copy of the fixture's config files in g_dir. */
static void fresh_dir(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/moetrace_load_XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    char to[512];
    snprintf(to, sizeof to, "%s/config.json", g_dir);
    copy_file(SRC "/config.json", to, -1);
    snprintf(to, sizeof to, "%s/generation_config.json", g_dir);
    copy_file(SRC "/generation_config.json", to, -1);
}

static void remove_dir(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    assert_int_equal(system(cmd), 0);
}

typedef enum mutation { DROP, RESHAPE, RETYPE } mutation;

/* Rewrites the fixture checkpoint into g_dir with `victim` mutated. */
static void write_mutated(const char *victim, mutation mut) {
    mt_checkpoint *ck;
    mt_err err;
    assert_int_equal(mt_checkpoint_open(&ck, SRC "/model.safetensors", &err), 0);
    cJSON *hdr = cJSON_CreateObject();
    size_t off = 0;
    for (int i = 0; i < mt_checkpoint_count(ck); i++) {
        const mt_tensor_info *t = mt_checkpoint_at(ck, i);
        int is_victim = !strcmp(t->name, victim);
        if (is_victim && mut == DROP) continue;
        cJSON *e = cJSON_AddObjectToObject(hdr, t->name);
        cJSON_AddStringToObject(e, "dtype", is_victim && mut == RETYPE ? "I16" : mt_tensor_dtype_string(t));
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++) {
            int64_t v = t->shape[d];
            if (is_victim && mut == RESHAPE) v = d == 0 ? v / 2 : v * 2;
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)v));
        }
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + t->nbytes)));
        off += t->nbytes;
    }
    char *json = cJSON_PrintUnformatted(hdr);
    size_t hlen = strlen(json), padded = (hlen + 7) / 8 * 8; /* the data section starts 8-aligned */
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", g_dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t len64 = padded;
    fwrite(&len64, 8, 1, f);
    fwrite(json, 1, hlen, f);
    for (size_t i = hlen; i < padded; i++) fputc(' ', f);
    for (int i = 0; i < mt_checkpoint_count(ck); i++) {
        const mt_tensor_info *t = mt_checkpoint_at(ck, i);
        if (!strcmp(t->name, victim) && mut == DROP) continue;
        fwrite(t->data, 1, t->nbytes, f);
    }
    fclose(f);
    free(json);
    cJSON_Delete(hdr);
    mt_checkpoint_close(ck);
}

static void expect_load_error(const char *needle1, const char *needle2) {
    mt_model m;
    mt_err err = {{0}};
    assert_int_equal(mt_model_load(&m, g_dir, MT_LOAD_AUTO, &err), -1);
    print_message("  error: %s\n", err.msg);
    if (needle1 && !strstr(err.msg, needle1)) fail_msg("'%s' does not name '%s'", err.msg, needle1);
    if (needle2 && !strstr(err.msg, needle2)) fail_msg("'%s' does not name '%s'", err.msg, needle2);
}

static void test_missing_tensor(void **state) {
    (void)state;
    fresh_dir();
    write_mutated("model.layers.2.mlp.experts.3.up_proj.weight", DROP);
    expect_load_error("model.layers.2.mlp.experts.3.up_proj.weight", NULL);
    remove_dir();
}

static void test_wrong_shape(void **state) {
    (void)state;
    fresh_dir();
    write_mutated("model.layers.0.self_attn.q_proj.weight", RESHAPE);
    expect_load_error("model.layers.0.self_attn.q_proj.weight", "shape");
    remove_dir();
}

static void test_unsupported_dtype(void **state) {
    (void)state;
    fresh_dir();
    write_mutated("model.layers.3.mlp.gate.weight", RETYPE);
    expect_load_error("model.layers.3.mlp.gate.weight", "I16");
    remove_dir();
}

static void test_truncated_file(void **state) {
    (void)state;
    fresh_dir();
    char to[512];
    snprintf(to, sizeof to, "%s/model.safetensors", g_dir);
    copy_file(SRC "/model.safetensors", to, 300000);
    expect_load_error("model.safetensors", NULL);
    remove_dir();
}

static void test_no_checkpoint(void **state) {
    (void)state;
    fresh_dir();
    expect_load_error(g_dir, NULL);
    remove_dir();
}

/* A complete mixtral config but for its closing brace. */
#define MIXTRAL_FIELDS                                                                                    \
    "{\"model_type\": \"mixtral\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"  \
    " \"num_attention_heads\": 4, \"num_local_experts\": 4, \"num_experts_per_tok\": 2, \"intermediate_size\": 8"

static void test_bad_configs(void **state) {
    (void)state;
    mt_config ok;
    mt_err ok_err;
    if (mt_config_parse(&ok, MIXTRAL_FIELDS "}", &ok_err)) fail_msg("%s", ok_err.msg);
    static const struct { const char *json, *needle; } cases[] = {
        /* found by fuzz/fuzz_config.c: accepted, then NaN/inf in every norm or rotary angle */
        {MIXTRAL_FIELDS ", \"rms_norm_eps\": -1}", "rms_norm_eps"},
        {MIXTRAL_FIELDS ", \"rms_norm_eps\": 1e999}", "rms_norm_eps"},
        {MIXTRAL_FIELDS ", \"rope_theta\": 1e999}", "rope_theta"},
        {MIXTRAL_FIELDS ", \"max_position_embeddings\": 0}", "max_position_embeddings"},
        {MIXTRAL_FIELDS ", \"sliding_window\": -4096}", "sliding_window"},
        {"{\"model_type\": \"qwen3_moe\", ", "JSON"},
        {"[1, 2]", "JSON object"},
        {"{\"model_type\": \"llama\"}", "llama"},
        {"{\"model_type\": \"mixtral\", \"hidden_size\": 64}", "vocab_size"},
        {"{\"model_type\": \"mixtral\", \"vocab_size\": \"512\"}", "vocab_size"},
        {"{\"model_type\": \"mixtral\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_key_value_heads\": 3}", "num_key_value_heads"},
        {"{\"model_type\": \"mixtral\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}}", "yarn"},
        {"{\"model_type\": \"mixtral\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_local_experts\": 4, \"num_experts_per_tok\": 8, \"intermediate_size\": 8}",
         "num_experts_per_tok"},
        {"{\"model_type\": \"qwen3_moe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 8,"
         " \"mlp_only_layers\": [5]}", "mlp_only_layers"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mt_config c;
        mt_err err = {{0}};
        assert_int_equal(mt_config_parse(&c, cases[i].json, &err), -1);
        print_message("  config error: %s\n", err.msg);
        if (!strstr(err.msg, cases[i].needle)) fail_msg("case %zu: '%s' does not name '%s'", i, err.msg, cases[i].needle);
    }
}

/* transformers 4 spelling (rope_theta, num_experts) and 5 spelling (rope_parameters,
 * num_local_experts) give the same config. */
static void test_config_spellings(void **state) {
    (void)state;
    const char *v4 = "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 4,"
                     " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 32, \"rope_theta\": 1000000.0,"
                     " \"rope_scaling\": null, \"num_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32,"
                     " \"intermediate_size\": 96, \"mlp_only_layers\": [1], \"norm_topk_prob\": true, \"eos_token_id\": [2, 7]}";
    const char *v5 = "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 4,"
                     " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 32,"
                     " \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0},"
                     " \"num_local_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32,"
                     " \"intermediate_size\": 96, \"mlp_only_layers\": [1], \"norm_topk_prob\": true, \"eos_token_id\": [2, 7]}";
    mt_config a, b;
    mt_err err;
    assert_int_equal(mt_config_parse(&a, v4, &err), 0);
    assert_int_equal(mt_config_parse(&b, v5, &err), 0);
    assert_memory_equal(&a, &b, sizeof a);
    assert_true(a.rope_theta == 1000000.0f);
    assert_int_equal(a.num_experts, 8);
    assert_int_equal(a.num_moe_layers, 3);
    assert_false(a.layer_is_moe[1]);
    assert_true(mt_config_is_eos(&a, 7));
}

static void test_generation_config_eos(void **state) {
    (void)state;
    fresh_dir();
    write_text(g_dir, "generation_config.json", "{\"eos_token_id\": [5, 9, 11]}");
    mt_config c;
    mt_err err;
    assert_int_equal(mt_config_load(&c, g_dir, &err), 0);
    assert_int_equal(c.num_eos, 3);
    assert_true(mt_config_is_eos(&c, 9));
    assert_false(mt_config_is_eos(&c, 2));
    write_text(g_dir, "generation_config.json", "{\"eos_token_id\": \"x\"}");
    assert_int_equal(mt_config_load(&c, g_dir, &err), -1);
    assert_non_null(strstr(err.msg, "eos_token_id"));
    remove_dir();
}

/* --load-format dummy reads only config.json and is deterministic. */
static void test_dummy_weights(void **state) {
    (void)state;
    fresh_dir();
    mt_model a, b;
    mt_err err;
    assert_int_equal(mt_model_load(&a, g_dir, MT_LOAD_DUMMY, &err), 0);
    assert_int_equal(mt_model_load(&b, g_dir, MT_LOAD_DUMMY, &err), 0);
    assert_null(a.ckpt);
    const mt_mat *wa = &a.layers[2].experts[5].down, *wb = &b.layers[2].experts[5].down;
    assert_int_equal(wa->dtype, MT_BF16);
    assert_memory_equal(wa->data, wb->data, (size_t)wa->rows * wa->cols * 2);
    mt_model_free(&a);
    mt_model_free(&b);
    remove_dir();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_tensor),    cmocka_unit_test(test_wrong_shape),
        cmocka_unit_test(test_unsupported_dtype), cmocka_unit_test(test_truncated_file),
        cmocka_unit_test(test_no_checkpoint),     cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_config_spellings),  cmocka_unit_test(test_generation_config_eos),
        cmocka_unit_test(test_dummy_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
