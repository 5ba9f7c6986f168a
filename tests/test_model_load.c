/* Model loading: config spellings, dummy weights, and every malformed checkpoint giving a clear
 * error before any compute (missing tensor, wrong shape, unsupported dtype, truncated file, bad
 * config). Malformed checkpoints are derived from the qwen3_moe fixture in a temp folder. */
#include <math.h>
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
#include "model/rope_config.h"
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

typedef enum mutation { DROP, RESHAPE, RETYPE, ADD } mutation; /* ADD: a BF16 [4] tensor named victim */

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
    if (mut == ADD) {
        cJSON *e = cJSON_AddObjectToObject(hdr, victim);
        cJSON_AddStringToObject(e, "dtype", "BF16");
        cJSON_AddItemToArray(cJSON_AddArrayToObject(e, "shape"), cJSON_CreateNumber(4));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + 8)));
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
    if (mut == ADD) fwrite("\0\0\0\0\0\0\0\0", 1, 8, f);
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
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"num_local_experts\": 4, \"num_experts_per_tok\": 2,"  \
    " \"intermediate_size\": 8"

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
         " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 4}}",
         "'dynamic' is not supported (supported: default, linear, yarn)"},
        {MIXTRAL_FIELDS ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8}}", "'llama3'"},
        {MIXTRAL_FIELDS ", \"rope_scaling\": {\"rope_type\": \"linear\"}}", "'rope_scaling.factor' must be a positive"},
        {MIXTRAL_FIELDS ", \"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": -2}}",
         "'rope_parameters.factor' must be a positive"},
        {MIXTRAL_FIELDS ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": \"4\"}}",
         "'rope_scaling.factor' must be a finite number"},
        {MIXTRAL_FIELDS ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 0}}", "'rope_scaling.factor' must be positive"},
        {MIXTRAL_FIELDS ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 0}}",
         "original_max_position_embeddings' must be a positive integer"},
        {MIXTRAL_FIELDS ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 10.5}}",
         "original_max_position_embeddings' must be a positive integer"},
        {MIXTRAL_FIELDS ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4, \"attention_factor\": -1}}",
         "'rope_scaling.attention_factor' must be positive"},
        {MIXTRAL_FIELDS ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4, \"truncate\": \"no\"}}", "truncate"},
        {MIXTRAL_FIELDS ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4, \"beta_fast\": [32]}}", "beta_fast"},
        {"{\"model_type\": \"mixtral\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"num_local_experts\": 4, \"num_experts_per_tok\": 8,"
         " \"intermediate_size\": 8}",
         "num_experts_per_tok"},
        {"{\"model_type\": \"qwen3_moe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 8,"
         " \"mlp_only_layers\": [5]}", "mlp_only_layers"},
        /* field getters' messages name the file too */
        {MIXTRAL_FIELDS ", \"rms_norm_eps\": \"1e-5\"}", "config.json: field 'rms_norm_eps'"},
        {"{\"model_type\": 3}", "config.json: field 'model_type' must be a string"},
        /* features moetrace does not implement are refused, not ignored */
        {MIXTRAL_FIELDS ", \"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\"}}", "fp8"},
        {MIXTRAL_FIELDS ", \"rope_parameters\": {\"full_attention\": {\"rope_type\": \"default\"}}}", "per-layer-type"},
        {MIXTRAL_FIELDS ", \"layer_types\": [\"full_attention\", \"sliding_attention\"]}", "layer_types[1]"},
        {"{\"model_type\": \"olmoe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2, \"intermediate_size\": 8,"
         " \"clip_qkv\": 8.0}", "clip_qkv"},
        /* config.json keys that change what transformers computes, refused rather than ignored: a rotary
         * factor other than 1, at the top level or in either rotary object (transformers 5 reads it
         * from there) */
        {MIXTRAL_FIELDS ", \"partial_rotary_factor\": 0.5}", "'partial_rotary_factor' 0.5"},
        {MIXTRAL_FIELDS ", \"partial_rotary_factor\": \"0.5\"}", "'partial_rotary_factor' must be a number"},
        {MIXTRAL_FIELDS ", \"partial_rotary_factor\": 0}", "partial_rotary_factor"},
        {MIXTRAL_FIELDS ", \"rope_parameters\": {\"rope_type\": \"default\", \"partial_rotary_factor\": 0.25}}",
         "'rope_parameters.partial_rotary_factor' 0.25"},
        {MIXTRAL_FIELDS ", \"rope_scaling\": {\"type\": \"default\", \"partial_rotary_factor\": 0.5}}",
         "'rope_scaling.partial_rotary_factor' 0.5"},
        /* a bias on o_proj too (Qwen3-MoE and OLMoE read attention_bias for all four projections) */
        {"{\"model_type\": \"qwen3_moe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 8,"
         " \"attention_bias\": true}", "'attention_bias' true"},
        {"{\"model_type\": \"olmoe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2, \"intermediate_size\": 8,"
         " \"attention_bias\": true}", "'attention_bias' true"},
        /* OLMoE: a window only flash attention would apply; q/k norms over hidden_size */
        {"{\"model_type\": \"olmoe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2, \"intermediate_size\": 8,"
         " \"sliding_window\": 4096}", "'sliding_window'"},
        {"{\"model_type\": \"olmoe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2, \"intermediate_size\": 8,"
         " \"head_dim\": 32}", "head_dim 32"},
        /* Mixtral: a window of 0 would leave no position to attend to */
        {MIXTRAL_FIELDS ", \"sliding_window\": 0}", "sliding_window 0"},
        /* the two names of the expert count disagree */
        {MIXTRAL_FIELDS ", \"num_experts\": 8}", "'num_local_experts' 4"},
        /* Qwen's sliding window switch, an activation other than SiLU */
        {"{\"model_type\": \"qwen2_moe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_key_value_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2,"
         " \"use_sliding_window\": true}",
         "use_sliding_window"},
        {MIXTRAL_FIELDS ", \"hidden_act\": \"gelu\"}", "hidden_act 'gelu'"},
        /* eos ids are integers, and no more than are kept */
        {MIXTRAL_FIELDS ", \"eos_token_id\": 2.5}", "eos_token_id"},
        {MIXTRAL_FIELDS ", \"eos_token_id\": [1e30]}", "eos_token_id"},
        {MIXTRAL_FIELDS ", \"eos_token_id\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,"
         "27,28,29,30,31,32,33]}", "33 ids"},
        /* products of sizes the forward pass keeps in an int */
        {"{\"model_type\": \"mixtral\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4194304, \"num_key_value_heads\": 4194304, \"head_dim\": 512,"
         " \"num_local_experts\": 4, \"num_experts_per_tok\": 2, \"intermediate_size\": 8}",
         "config.json: (num_attention_heads 4194304 + 2 x num_key_value_heads 4194304) x head_dim 512"},
        {"{\"model_type\": \"mixtral\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 200,"
         " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"num_local_experts\": 20000000,"
         " \"num_experts_per_tok\": 20000000, \"intermediate_size\": 8}",
         "config.json: num_hidden_layers 200 x num_experts_per_tok 20000000"},
        /* transformers 5 types mlp_only_layers list[int] */
        {"{\"model_type\": \"qwen3_moe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 8,"
         " \"intermediate_size\": 16, \"mlp_only_layers\": [1.7]}", "'mlp_only_layers' must be a list of integers"},
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

/* Values of those keys that compute what moetrace computes still load: a rotary factor of 1 (or
 * null) wherever it is, silu's other name, false biases; a null key/value head count is one per
 * query head, as transformers fills it in; with both rotary objects, rope_theta is read from
 * rope_scaling or the top level, as transformers 5 reads it. */
static void test_config_accepted_values(void **state) {
    (void)state;
    mt_config base, c;
    mt_err err;
    if (mt_config_parse(&base, MIXTRAL_FIELDS "}", &err)) fail_msg("%s", err.msg);
    static const char *same[] = {
        MIXTRAL_FIELDS ", \"partial_rotary_factor\": 1}",
        MIXTRAL_FIELDS ", \"partial_rotary_factor\": 1.0}",
        MIXTRAL_FIELDS ", \"partial_rotary_factor\": null}",
        MIXTRAL_FIELDS ", \"rope_parameters\": {\"rope_type\": \"default\", \"partial_rotary_factor\": 1.0}}",
        MIXTRAL_FIELDS ", \"rope_parameters\": {\"rope_type\": \"default\", \"partial_rotary_factor\": null}}",
        MIXTRAL_FIELDS ", \"rope_scaling\": {\"type\": \"default\", \"partial_rotary_factor\": 1}}",
        MIXTRAL_FIELDS ", \"hidden_act\": \"swish\"}",
        MIXTRAL_FIELDS ", \"hidden_act\": \"silu\", \"attention_dropout\": 0.1, \"router_jitter_noise\": 0.1,"
        " \"output_router_logits\": true, \"sliding_window\": null}",
        MIXTRAL_FIELDS ", \"num_experts\": 4}",
        /* generation settings: an update keeps the served model's */
        MIXTRAL_FIELDS ", \"eos_token_id\": [7, 9], \"bos_token_id\": null}",
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        if (mt_config_parse(&c, same[i], &err)) fail_msg("case %zu: %s", i, err.msg);
        const char *diff = mt_config_differs(&base, &c);
        if (diff) fail_msg("case %zu: %s differs", i, diff);
    }
    /* false biases of the families whose bias would reach o_proj */
    const char *qwen3 = "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
                        " \"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2,"
                        " \"moe_intermediate_size\": 8, \"attention_bias\": false, \"head_dim\": 32}";
    if (mt_config_parse(&c, qwen3, &err)) fail_msg("%s", err.msg);
    assert_false(c.attention_bias);
    assert_int_equal(c.head_dim, 32); /* per-head q/k norms: any head size */
    const char *olmoe = "{\"model_type\": \"olmoe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
                        " \"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2,"
                        " \"intermediate_size\": 8, \"attention_bias\": false, \"sliding_window\": null,"
                        " \"head_dim\": 16, \"clip_qkv\": null}";
    if (mt_config_parse(&c, olmoe, &err)) fail_msg("%s", err.msg);
    assert_false(c.attention_bias);
    assert_int_equal(c.sliding_window, 0);
    /* num_key_value_heads null: as many as the query heads (Mixtral's default would be 8) */
    const char *kv_null = "{\"model_type\": \"mixtral\", \"vocab_size\": 512, \"hidden_size\": 64,"
                          " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": null,"
                          " \"num_local_experts\": 4, \"num_experts_per_tok\": 2, \"intermediate_size\": 8}";
    if (mt_config_parse(&c, kv_null, &err)) fail_msg("%s", err.msg);
    assert_int_equal(c.num_key_value_heads, 4);
    /* rope_theta: rope_parameters' own, unless rope_scaling holds the parameters */
    const char *params = MIXTRAL_FIELDS ", \"rope_theta\": 5000, \"rope_parameters\": {\"rope_type\": \"default\","
                         " \"rope_theta\": 7000}}";
    if (mt_config_parse(&c, params, &err)) fail_msg("%s", err.msg);
    assert_true(c.rope_theta == 7000.0f);
    const char *both = MIXTRAL_FIELDS ", \"rope_theta\": 5000, \"rope_parameters\": {\"rope_type\": \"default\","
                       " \"rope_theta\": 7000}, \"rope_scaling\": {\"type\": \"default\"}}";
    if (mt_config_parse(&c, both, &err)) fail_msg("%s", err.msg);
    assert_true(c.rope_theta == 5000.0f);
    const char *scaling = MIXTRAL_FIELDS ", \"rope_parameters\": {\"rope_theta\": 7000},"
                          " \"rope_scaling\": {\"rope_type\": \"default\", \"rope_theta\": 9000}}";
    if (mt_config_parse(&c, scaling, &err)) fail_msg("%s", err.msg);
    assert_true(c.rope_theta == 9000.0f);
    const char *empty = MIXTRAL_FIELDS ", \"rope_parameters\": {\"rope_theta\": 7000}, \"rope_scaling\": {}}";
    if (mt_config_parse(&c, empty, &err)) fail_msg("%s", err.msg);
    assert_true(c.rope_theta == 7000.0f);
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
    static const char *bad[] = {"{\"eos_token_id\": \"x\"}", "{\"eos_token_id\": [2, 7.5]}", "[2]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(g_dir, "generation_config.json", bad[i]);
        assert_int_equal(mt_config_load(&c, g_dir, &err), -1);
        print_message("  error: %s\n", err.msg);
        assert_non_null(strstr(err.msg, "generation_config.json"));
        assert_non_null(strstr(err.msg, i < 2 ? "eos_token_id" : "not a JSON object"));
    }
    /* bos only, or no eos: config.json's eos stays */
    write_text(g_dir, "generation_config.json", "{\"bos_token_id\": 1, \"eos_token_id\": null}");
    assert_int_equal(mt_config_load(&c, g_dir, &err), 0);
    assert_int_equal(c.num_eos, 1);
    assert_true(mt_config_is_eos(&c, 2));
    write_text(g_dir, "generation_config.json", "{\"eos_token_id\": 7}");
    assert_int_equal(mt_config_load(&c, g_dir, &err), 0);
    assert_int_equal(c.num_eos, 1);
    assert_true(mt_config_is_eos(&c, 7));
    remove_dir();
}

/* Keys a config.json leaves out take transformers' defaults for its family
 * (configuration_<family>.py), not one set shared by all: Mixtral's rope_theta 1e6, rms_norm_eps 1e-5
 * and 8 key/value heads, Qwen2-MoE's shared expert of 5632 and biased q/k/v (`qkv_bias`, not
 * `attention_bias`), OLMoE's eos 50279, ... */
static void test_transformers_defaults(void **state) {
    (void)state;
    mt_config c;
    mt_err err;
    const char *mixtral = "{\"model_type\": \"mixtral\", \"vocab_size\": 512, \"hidden_size\": 512, \"num_hidden_layers\": 2,"
                          " \"num_attention_heads\": 16, \"num_local_experts\": 4, \"num_experts_per_tok\": 2,"
                          " \"intermediate_size\": 8, \"attention_bias\": true, \"moe_intermediate_size\": 99}";
    if (mt_config_parse(&c, mixtral, &err)) fail_msg("%s", err.msg);
    assert_int_equal(c.num_key_value_heads, 8);
    assert_true(c.rope_theta == 1e6f);
    assert_true(c.rms_norm_eps == 1e-5f);
    assert_int_equal(c.max_position_embeddings, 131072);
    assert_false(c.attention_bias);             /* Mixtral has no q/k/v bias, whatever the key says */
    assert_int_equal(c.moe_intermediate_size, 8); /* its experts are intermediate_size wide */
    assert_int_equal(c.bos_token_id, 1);
    assert_int_equal(c.num_eos, 1);
    assert_int_equal(c.eos_ids[0], 2);

    const char *qwen2 = "{\"model_type\": \"qwen2_moe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
                        " \"num_attention_heads\": 16, \"num_experts\": 4, \"num_experts_per_tok\": 2,"
                        " \"attention_bias\": false}";
    if (mt_config_parse(&c, qwen2, &err)) fail_msg("%s", err.msg);
    assert_int_equal(c.num_key_value_heads, 16);
    assert_int_equal(c.shared_expert_intermediate_size, 5632);
    assert_true(c.shared_expert_gate);
    assert_int_equal(c.moe_intermediate_size, 1408);
    assert_true(c.attention_bias);              /* qkv_bias (default true) decides, not attention_bias */
    assert_int_equal(c.max_position_embeddings, 32768);
    assert_true(c.rms_norm_eps == 1e-6f && c.rope_theta == 10000.0f);
    assert_int_equal(c.num_eos, 0);
    const char *qwen2_nobias = "{\"model_type\": \"qwen2_moe\", \"vocab_size\": 512, \"hidden_size\": 64,"
                               " \"num_hidden_layers\": 2, \"num_attention_heads\": 16, \"num_experts\": 4,"
                               " \"num_experts_per_tok\": 2, \"qkv_bias\": false}";
    if (mt_config_parse(&c, qwen2_nobias, &err)) fail_msg("%s", err.msg);
    assert_false(c.attention_bias);

    const char *qwen3 = "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
                        " \"num_attention_heads\": 8, \"num_experts\": 4, \"num_experts_per_tok\": 2,"
                        " \"shared_expert_intermediate_size\": 32}";
    if (mt_config_parse(&c, qwen3, &err)) fail_msg("%s", err.msg);
    assert_int_equal(c.num_key_value_heads, 4);
    assert_int_equal(c.moe_intermediate_size, 768);
    assert_int_equal(c.shared_expert_intermediate_size, 0); /* Qwen3-MoE has no shared expert */
    assert_false(c.norm_topk_prob);
    assert_int_equal(c.max_position_embeddings, 32768);

    const char *olmoe = "{\"model_type\": \"olmoe\", \"vocab_size\": 512, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
                        " \"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2,"
                        " \"intermediate_size\": 8, \"bos_token_id\": null}";
    if (mt_config_parse(&c, olmoe, &err)) fail_msg("%s", err.msg);
    assert_int_equal(c.num_key_value_heads, 4);
    assert_true(c.rms_norm_eps == 1e-5f && c.rope_theta == 10000.0f);
    assert_int_equal(c.max_position_embeddings, 4096);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.num_eos, 1);
    assert_int_equal(c.eos_ids[0], 50279);
    /* an explicit null is no eos, as in transformers */
    const char *mixtral_null = "{\"model_type\": \"mixtral\", \"vocab_size\": 512, \"hidden_size\": 64,"
                               " \"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"num_local_experts\": 4,"
                               " \"num_experts_per_tok\": 2, \"intermediate_size\": 8, \"eos_token_id\": null}";
    if (mt_config_parse(&c, mixtral_null, &err)) fail_msg("%s", err.msg);
    assert_int_equal(c.num_eos, 0);
}

#define HF_CONFIGS MT_SOURCE_DIR "/tests/fixtures/hf_configs/"

/* The published config.json of each family's real checkpoints parses to the model transformers
 * builds from it. */
static void test_real_configs(void **state) {
    (void)state;
    static const struct {
        const char *file;
        int layers, heads, kv, head_dim, experts, top_k, moe_inter, shared, moe_layers;
        float eps, theta;
        bool bias, norm_topk;
        mt_qk_norm qk;
        int eos;
    } cases[] = {
        {"qwen1.5-moe-a2.7b.json", 24, 16, 16, 128, 60, 4, 1408, 5632, 24, 1e-6f, 1e6f, true, false, MT_QK_NORM_NONE, 151643},
        {"qwen2-57b-a14b.json", 28, 28, 4, 128, 64, 8, 2560, 20480, 28, 1e-6f, 1e6f, true, false, MT_QK_NORM_NONE, 151643},
        {"qwen3-30b-a3b.json", 48, 32, 4, 128, 128, 8, 768, 0, 48, 1e-6f, 1e6f, false, true, MT_QK_NORM_PER_HEAD, 151645},
        {"qwen3-235b-a22b.json", 94, 64, 4, 128, 128, 8, 1536, 0, 94, 1e-6f, 1e6f, false, true, MT_QK_NORM_PER_HEAD, 151645},
        {"mixtral-8x7b-v0.1.json", 32, 32, 8, 128, 8, 2, 14336, 0, 32, 1e-5f, 1e6f, false, true, MT_QK_NORM_NONE, 2},
        {"mixtral-8x22b-v0.1.json", 56, 48, 8, 128, 8, 2, 16384, 0, 56, 1e-5f, 1e6f, false, true, MT_QK_NORM_NONE, 2},
        {"olmoe-1b-7b-0924.json", 16, 16, 16, 128, 64, 8, 1024, 0, 16, 1e-5f, 1e4f, false, false, MT_QK_NORM_FULL, 50279},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, HF_CONFIGS "%s", cases[i].file);
        mt_err err;
        char *text = mt_read_file(path, NULL, &err);
        if (!text) fail_msg("%s", err.msg);
        mt_config c;
        if (mt_config_parse(&c, text, &err)) fail_msg("%s: %s", cases[i].file, err.msg);
        free(text);
        print_message("  %s: %d layers, %d experts\n", cases[i].file, c.num_hidden_layers, c.num_experts);
        assert_int_equal(c.num_hidden_layers, cases[i].layers);
        assert_int_equal(c.num_attention_heads, cases[i].heads);
        assert_int_equal(c.num_key_value_heads, cases[i].kv);
        assert_int_equal(c.head_dim, cases[i].head_dim);
        assert_int_equal(c.num_experts, cases[i].experts);
        assert_int_equal(c.top_k, cases[i].top_k);
        assert_int_equal(c.moe_intermediate_size, cases[i].moe_inter);
        assert_int_equal(c.shared_expert_intermediate_size, cases[i].shared);
        assert_int_equal(c.num_moe_layers, cases[i].moe_layers);
        assert_true(c.rms_norm_eps == cases[i].eps);
        assert_true(c.rope_theta == cases[i].theta);
        assert_int_equal(c.attention_bias, cases[i].bias);
        assert_int_equal(c.norm_topk_prob, cases[i].norm_topk);
        assert_int_equal(c.qk_norm, cases[i].qk);
        assert_int_equal(c.sliding_window, 0);
        assert_false(c.tie_word_embeddings);
        assert_int_equal(c.num_eos, 1);
        assert_int_equal(c.eos_ids[0], cases[i].eos);
    }
}

/* The rotary tables against transformers' (tests/fixtures/make_rope_fixtures.py wrote rope_tables.json
 * from its rotary embedding): every inverse frequency and the cos/sin scale, for default, linear and
 * yarn settings with full-size head dims; a setting transformers refuses is refused too. Each case is
 * read once as rope_parameters and once as rope_scaling (the spelling of published Qwen3 advice). */
static void test_rope_tables_match_transformers(void **state) {
    (void)state;
    mt_err err;
    const char *path = MT_SOURCE_DIR "/tests/fixtures/models/rope_tables.json";
    if (access(path, F_OK) != 0) { /* made on the GPU machine (transformers), committed with the fixtures */
        print_message("  %s not made yet: run tests/fixtures/make_rope_fixtures.py where transformers is\n", path);
        skip();
    }
    char *text = mt_read_file(path, NULL, &err);
    if (!text) fail_msg("%s", err.msg);
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *c;
    int checked = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(c, "rope_parameters");
        char *rope = cJSON_PrintUnformatted(params);
        for (int spelling = 0; spelling < 2; spelling++) {
            char json[2048];
            snprintf(json, sizeof json,
                     "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 512, \"hidden_size\": %d, \"num_hidden_layers\": 2,"
                     " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": %d,"
                     " \"max_position_embeddings\": %d, \"num_experts\": 4, \"num_experts_per_tok\": 2,"
                     " \"moe_intermediate_size\": 8, \"%s\": %s}",
                     4 * cJSON_GetObjectItemCaseSensitive(c, "head_dim")->valueint,
                     cJSON_GetObjectItemCaseSensitive(c, "head_dim")->valueint,
                     cJSON_GetObjectItemCaseSensitive(c, "max_position_embeddings")->valueint,
                     spelling ? "rope_scaling" : "rope_parameters", rope);
            mt_config cfg;
            int rc = mt_config_parse(&cfg, json, &err);
            const cJSON *refused = cJSON_GetObjectItemCaseSensitive(c, "error");
            if (refused) {
                print_message("  %s: refused (%s), as transformers does (%s)\n", c->string, rc ? err.msg : "NOT",
                              refused->valuestring);
                assert_int_not_equal(rc, 0);
                continue;
            }
            if (rc) fail_msg("%s: %s", c->string, err.msg);
            const cJSON *inv = cJSON_GetObjectItemCaseSensitive(c, "inv_freq");
            assert_int_equal(cJSON_GetArraySize(inv), cfg.head_dim / 2);
            double worst = 0;
            for (int i = 0; i < cfg.head_dim / 2; i++) {
                double want = cJSON_GetArrayItem(inv, i)->valuedouble;
                double rel = fabs(cfg.rope_inv_freq[i] - want) / want;
                if (rel > worst) worst = rel;
            }
            double af = cJSON_GetObjectItemCaseSensitive(c, "attention_factor")->valuedouble;
            if (!spelling)
                print_message("  %s: %s, inverse frequencies within %.1e of transformers', cos/sin scale %.6f (%.6f)\n",
                              c->string, mt_rope_type_name(cfg.rope_type), worst, cfg.rope_attention_factor, af);
            assert_true(worst <= 4e-6);
            assert_true(fabs(cfg.rope_attention_factor - af) <= 1e-6 * af);
            checked++;
        }
        free(rope);
    }
    cJSON_Delete(root);
    assert_true(checked >= 12);
}

/* Every published config in the fixtures folder, the shared copy of Qwen3-30B-A3B's (when the shared
 * folder sits beside the checkout), the benchmark's and the demo model's load with the refusals above
 * in place. */
static void test_published_configs_load(void **state) {
    (void)state;
    static const char *files[] = {
        HF_CONFIGS "qwen1.5-moe-a2.7b.json", HF_CONFIGS "qwen2-57b-a14b.json", HF_CONFIGS "qwen3-30b-a3b.json",
        HF_CONFIGS "qwen3-235b-a22b.json", HF_CONFIGS "mixtral-8x7b-v0.1.json", HF_CONFIGS "mixtral-8x22b-v0.1.json",
        HF_CONFIGS "olmoe-1b-7b-0924.json", MT_SOURCE_DIR "/bench/configs/qwen3-30b-a3b/config.json",
        MT_SOURCE_DIR "/assets/demo-model/config.json",
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        mt_err err;
        char *text = mt_read_file(files[i], NULL, &err);
        if (!text) fail_msg("%s", err.msg);
        mt_config c;
        if (mt_config_parse(&c, text, &err)) fail_msg("%s: %s", files[i], err.msg);
        free(text);
    }
    /* the shared copy is the fixture's file */
    const char *shared = MT_SOURCE_DIR "/../shared/configs/qwen3-30b-a3b.json";
    if (access(shared, R_OK) != 0) {
        print_message("  %s is not here: not checked\n", shared);
        return;
    }
    mt_err err;
    char *text = mt_read_file(shared, NULL, &err);
    if (!text) fail_msg("%s", err.msg);
    mt_config from_shared, from_fixture;
    if (mt_config_parse(&from_shared, text, &err)) fail_msg("%s: %s", shared, err.msg);
    free(text);
    text = mt_read_file(HF_CONFIGS "qwen3-30b-a3b.json", NULL, &err);
    if (!text) fail_msg("%s", err.msg);
    if (mt_config_parse(&from_fixture, text, &err)) fail_msg("%s", err.msg);
    free(text);
    assert_null(mt_config_differs(&from_shared, &from_fixture));
    assert_int_equal(from_shared.num_hidden_layers, 48);
    assert_int_equal(from_shared.num_experts, 128);
}

/* Each published config with its sizes shrunk (same keys otherwise) loads with dummy weights in
 * the shapes the family's checkpoints have. */
static void test_real_configs_dummy(void **state) {
    (void)state;
    static const char *files[] = {"qwen1.5-moe-a2.7b.json", "qwen2-57b-a14b.json", "qwen3-235b-a22b.json",
                                  "mixtral-8x22b-v0.1.json", "olmoe-1b-7b-0924.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, HF_CONFIGS "%s", files[i]);
        mt_err err;
        cJSON *root = mt_json_load_file(path, &err);
        if (!root) fail_msg("%s", err.msg);
        bool gqa = cJSON_GetObjectItem(root, "num_key_value_heads")->valueint <
                   cJSON_GetObjectItem(root, "num_attention_heads")->valueint;
        static const struct { const char *key; int value; } sizes[] = {
            {"vocab_size", 256}, {"hidden_size", 64}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
            {"head_dim", 16}, {"intermediate_size", 48}, {"moe_intermediate_size", 24},
            {"shared_expert_intermediate_size", 40}, {"num_experts", 6}, {"num_local_experts", 6},
            {"num_experts_per_tok", 2},
        };
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
            if (cJSON_GetObjectItem(root, sizes[k].key))
                cJSON_ReplaceItemInObject(root, sizes[k].key, cJSON_CreateNumber(sizes[k].value));
        cJSON_ReplaceItemInObject(root, "num_key_value_heads", cJSON_CreateNumber(gqa ? 2 : 4));
        char *text = cJSON_Print(root);
        cJSON_Delete(root);
        fresh_dir();
        write_text(g_dir, "config.json", text);
        free(text);
        snprintf(path, sizeof path, "%s/generation_config.json", g_dir);
        unlink(path);
        mt_model m;
        if (mt_model_load(&m, g_dir, MT_LOAD_DUMMY, &err)) fail_msg("%s: %s", files[i], err.msg);
        const mt_config *c = &m.cfg;
        int hd = c->head_dim, kv = gqa ? 2 : 4;
        assert_int_equal(hd, 16);
        assert_int_equal(c->num_experts, 6);
        for (int l = 0; l < 3; l++) {
            const mt_layer *L = &m.layers[l];
            assert_int_equal(L->q.rows, 4 * hd);
            assert_int_equal(L->k.rows, kv * hd);
            assert_int_equal(L->o.cols, 4 * hd);
            assert_true(L->is_moe);
            assert_int_equal(L->router.rows, 6);
            int inter = c->arch == MT_ARCH_MIXTRAL || c->arch == MT_ARCH_OLMOE ? 48 : 24;
            assert_int_equal(L->experts[5].gate.rows, inter);
            assert_int_equal(L->experts[5].down.cols, inter);
            assert_int_equal(L->has_shared, c->arch == MT_ARCH_QWEN2_MOE);
            if (L->has_shared) assert_int_equal(L->shared.up.rows, 40);
            assert_int_equal(L->q_bias != NULL, c->arch == MT_ARCH_QWEN2_MOE);
            assert_int_equal(L->q_norm != NULL, c->arch == MT_ARCH_QWEN3_MOE || c->arch == MT_ARCH_OLMOE);
        }
        assert_true(m.lm_head.data != m.embed.data);
        mt_model_free(&m);
        remove_dir();
    }
}

/* A checkpoint tensor the config has no place for means config.json describes another model (here:
 * a fifth layer, a bias, a shared expert): refused, naming it, instead of computing without it. */
static void test_unused_tensor(void **state) {
    (void)state;
    static const char *extra[] = {"model.layers.4.input_layernorm.weight", "model.layers.0.self_attn.q_proj.bias",
                                  "model.layers.0.mlp.shared_expert_gate.weight",
                                  "model.layers.0.mlp.experts.8.up_proj.weight"};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        fresh_dir();
        write_mutated(extra[i], ADD);
        expect_load_error(extra[i], "config.json");
        remove_dir();
    }
    /* tolerated: rotary frequencies old checkpoints saved; lm_head.weight when the embeddings are tied */
    fresh_dir();
    write_mutated("model.layers.0.self_attn.rotary_emb.inv_freq", ADD);
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, g_dir, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    mt_model_free(&m);
    char *text = mt_read_file(SRC "/config.json", NULL, &err);
    assert_non_null(text);
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON_ReplaceItemInObject(root, "tie_word_embeddings", cJSON_CreateTrue());
    text = cJSON_Print(root);
    cJSON_Delete(root);
    write_text(g_dir, "config.json", text);
    free(text);
    if (mt_model_load(&m, g_dir, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    assert_true(m.lm_head.data == m.embed.data);
    mt_model_free(&m);
    remove_dir();
}

/* --model naming a file, not a folder. */
static void test_not_a_folder(void **state) {
    (void)state;
    mt_model m;
    mt_err err = {{0}};
    assert_int_equal(mt_model_load(&m, SRC "/config.json", MT_LOAD_DUMMY, &err), -1);
    print_message("  error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "config.json is not a folder"));
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

/* The model's name (a dump's "model", SPEC §4: the folder's name) is the checkpoint folder's own name,
 * however the path names it: "DIR/.", "DIR/", "." from inside it. */
static void test_folder_name(void **state) {
    (void)state;
    static const char *paths[] = {SRC, SRC "/", SRC "/.", SRC "/../qwen3_moe/", "."};
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        if (!strcmp(paths[i], ".")) assert_int_equal(chdir(SRC), 0);
        mt_model m;
        mt_err err = {{0}};
        if (mt_model_load(&m, paths[i], MT_LOAD_DUMMY, &err)) fail_msg("%s: %s", paths[i], err.msg);
        if (strcmp(m.name, "qwen3_moe")) fail_msg("--model %s: named \"%s\"", paths[i], m.name);
        mt_model_free(&m);
    }
    assert_int_equal(chdir(cwd), 0);
    /* a link to the folder keeps the name it was given (the folder it points to may be a hash) */
    char link[4096];
    snprintf(link, sizeof link, "%s/model_link_%d", MT_BINARY_DIR, (int)getpid());
    unlink(link);
    assert_int_equal(symlink(SRC, link), 0);
    mt_model m;
    mt_err err = {{0}};
    assert_int_equal(mt_model_load(&m, link, MT_LOAD_DUMMY, &err), 0);
    char want[64];
    snprintf(want, sizeof want, "model_link_%d", (int)getpid());
    assert_string_equal(m.name, want);
    mt_model_free(&m);
    unlink(link);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_tensor),    cmocka_unit_test(test_wrong_shape),
        cmocka_unit_test(test_unsupported_dtype), cmocka_unit_test(test_truncated_file),
        cmocka_unit_test(test_no_checkpoint),     cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_config_spellings),  cmocka_unit_test(test_config_accepted_values),
        cmocka_unit_test(test_generation_config_eos), cmocka_unit_test(test_published_configs_load),
        cmocka_unit_test(test_dummy_weights),     cmocka_unit_test(test_transformers_defaults),
        cmocka_unit_test(test_real_configs),      cmocka_unit_test(test_real_configs_dummy),
        cmocka_unit_test(test_unused_tensor),     cmocka_unit_test(test_not_a_folder),
        cmocka_unit_test(test_folder_name),       cmocka_unit_test(test_rope_tables_match_transformers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
