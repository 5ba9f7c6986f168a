/* A model computes with weights private to the process: a checkpoint file rewritten or truncated in
 * place after loading (an RL trainer saving its next step into the served folder) changes nothing,
 * after a load as after a weight update. Also: a mapped checkpoint notices such writes, non-finite
 * weights are named in a warning, headers must be UTF-8 and name each tensor once, dummy weights
 * that cannot fit the host are refused before any is made. */
#include <fcntl.h>
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
#include <cjson/cJSON.h>

#include "engine/forward.h"
#include "engine/weight_swap.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "test_files.h"
#include "tmp_dir.h"

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"
#define PROMPT_LEN 5

static void copy_file(const char *from, const char *to) {
    size_t len = 0;
    char *data = slurp(from, &len);
    assert_non_null(data);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    free(data);
}

/* g_dir/name: a copy of the fixture's folder. */
static const char *copy_fixture(const char *name) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s", path_of(name));
    assert_int_equal(mkdir(dir, 0755), 0);
    static const char *files[] = {"config.json", "generation_config.json", "model.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char from[600], to[600];
        snprintf(from, sizeof from, "%s/%s", FIXTURE, files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        copy_file(from, to);
    }
    return dir;
}

/* The size of the header of the safetensors file at path plus its 8 length bytes. */
static size_t data_start(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char len[8];
    assert_int_equal(fread(len, 1, 8, f), 8);
    fclose(f);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | len[i];
    return 8 + (size_t)n;
}

/* Overwrites the data section of dir/model.safetensors in place (same inode, header kept) with
 * bytes, so the file stays a valid checkpoint of other weights. */
static void rewrite_data_in_place(const char *dir, unsigned char byte) {
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    size_t start = data_start(path), n = (size_t)st.st_size - start;
    unsigned char *fill = malloc(n);
    assert_non_null(fill);
    memset(fill, byte, n);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, fill, n, (off_t)start), (ssize_t)n);
    close(fd);
    free(fill);
}

static void truncate_checkpoint(const char *dir) {
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(truncate(path, 0), 0);
}

/* The logits of the last of a fixed prompt's tokens, into out[vocab]. */
static void last_logits(const mt_model *m, float *out) {
    const mt_config *c = &m->cfg;
    mt_kv_cache kv;
    mt_err err;
    assert_int_equal(mt_kv_cache_init(&kv, c->num_hidden_layers, c->num_key_value_heads * c->head_dim, 4, &err), 0);
    mt_kv_seq seq = {0};
    mt_kv_seq *seqs[1] = {&seq};
    assert_int_equal(mt_kv_seq_reserve(&kv, &seq, PROMPT_LEN, &err), 0);
    int32_t tokens[PROMPT_LEN] = {3, 141, 59, 265, 35}, seq_ids[PROMPT_LEN] = {0}, positions[PROMPT_LEN];
    for (int i = 0; i < PROMPT_LEN; i++) positions[i] = i;
    int32_t row = PROMPT_LEN - 1;
    mt_batch b = {.n_tokens = PROMPT_LEN, .tokens = tokens, .seq_ids = seq_ids, .positions = positions,
                  .seqs = seqs, .num_seqs = 1, .n_logits = 1, .logit_rows = &row};
    if (mt_forward(m, &kv, &b, out, NULL, &err)) fail_msg("%s", err.msg);
    mt_kv_seq_release(&kv, &seq);
    mt_kv_cache_free(&kv);
}

static float *logits_of(const mt_model *m) {
    float *l = malloc((size_t)m->cfg.vocab_size * sizeof *l);
    assert_non_null(l);
    last_logits(m, l);
    return l;
}

static void assert_same_logits(const float *a, const float *b, int vocab) {
    assert_memory_equal(a, b, (size_t)vocab * sizeof *a);
}

static void test_rewritten_after_load(void **state) {
    (void)state;
    const char *dir = copy_fixture("loaded");
    mt_model m, other;
    mt_err err;
    if (mt_model_load(&m, dir, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    float *before = logits_of(&m);
    rewrite_data_in_place(dir, 0x01);
    /* the rewritten file is another model... */
    if (mt_model_load(&other, dir, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    float *theirs = logits_of(&other);
    assert_true(memcmp(theirs, before, (size_t)m.cfg.vocab_size * sizeof *before) != 0);
    mt_model_free(&other);
    /* ...which the loaded one does not become */
    float *after = logits_of(&m);
    assert_same_logits(before, after, m.cfg.vocab_size);
    truncate_checkpoint(dir); /* a save caught halfway: reading a truncated mapping faults */
    last_logits(&m, after);
    assert_same_logits(before, after, m.cfg.vocab_size);
    mt_model_free(&m);
    free(before);
    free(theirs);
    free(after);
}

static void test_rewritten_after_update(void **state) {
    (void)state;
    const char *served = copy_fixture("served");
    char step[600];
    snprintf(step, sizeof step, "%s", copy_fixture("step1"));
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, served, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    float *before = logits_of(&m);
    if (mt_model_swap_weights(&m, step, &err)) fail_msg("%s", err.msg);
    rewrite_data_in_place(step, 0x01); /* the trainer saves step 2 where step 1 was */
    float *after = logits_of(&m);
    assert_same_logits(before, after, m.cfg.vocab_size);
    truncate_checkpoint(step);
    last_logits(&m, after);
    assert_same_logits(before, after, m.cfg.vocab_size);
    mt_model_free(&m);
    free(before);
    free(after);
}

/* What the device backend keeps: the mapping, checked before it is read again. */
static void test_mapped_notices_writes(void **state) {
    (void)state;
    const char *dir = copy_fixture("mapped");
    mt_checkpoint *ck;
    mt_err err;
    if (mt_checkpoint_open(&ck, dir, &err)) fail_msg("%s", err.msg);
    assert_int_equal(mt_checkpoint_unchanged(ck, &err), 0);
    rewrite_data_in_place(dir, 0x01);
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct timespec times[2] = {{0, UTIME_OMIT}, {12345, 678}}; /* a write within the clock's granularity */
    assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
    assert_int_equal(mt_checkpoint_unchanged(ck, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "modified in place"));
    mt_checkpoint_close(ck);
    /* a private checkpoint does not depend on its files */
    if (mt_checkpoint_open_mode(&ck, dir, MT_CHECKPOINT_PRIVATE, &err)) fail_msg("%s", err.msg);
    truncate_checkpoint(dir);
    assert_int_equal(mt_checkpoint_unchanged(ck, &err), 0);
    mt_checkpoint_close(ck);
}

/* Runs load(dir) with stderr captured; returns what was logged (free it). */
static char *logged_while(int (*load)(const char *dir), const char *dir, int *rc) {
    fflush(stderr);
    int saved = dup(2);
    const char *log = path_of("stderr.txt");
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    *rc = load(dir);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    size_t len = 0;
    char *text = slurp(log, &len);
    assert_non_null(text);
    return text;
}

static int load_and_free(const char *dir) {
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, dir, MT_LOAD_AUTO, &err)) return -1;
    mt_model_free(&m);
    return 0;
}

static char g_served[600];

static int update_to(const char *dir) {
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, g_served, MT_LOAD_AUTO, &err)) return -1;
    int rc = mt_model_swap_weights(&m, dir, &err);
    mt_model_free(&m);
    return rc;
}

/* Sets the first element of tensor name in dir/model.safetensors to all-ones bits (NaN in F32, F16
 * and BF16). */
static void poison(const char *dir, const char *name) {
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t start = data_start(path);
    char *file = slurp(path, NULL);
    assert_non_null(file);
    cJSON *header = cJSON_ParseWithLength(file + 8, start - 8), *t = cJSON_GetObjectItem(header, name);
    assert_non_null(t);
    const char *dtype = cJSON_GetObjectItem(t, "dtype")->valuestring;
    size_t at = start + (size_t)cJSON_GetArrayItem(cJSON_GetObjectItem(t, "data_offsets"), 0)->valuedouble;
    size_t width = !strcmp(dtype, "F32") ? 4 : 2;
    cJSON_Delete(header);
    free(file);
    unsigned char ones[4] = {0xff, 0xff, 0xff, 0xff};
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, ones, width, (off_t)at), (ssize_t)width);
    close(fd);
}

static void test_nonfinite_named(void **state) {
    (void)state;
    snprintf(g_served, sizeof g_served, "%s", copy_fixture("finite"));
    const char *dir = copy_fixture("nan");
    poison(dir, "model.layers.2.mlp.gate.weight");
    int rc;
    char *log = logged_while(load_and_free, g_served, &rc);
    assert_int_equal(rc, 0);
    assert_null(strstr(log, "NaN")); /* nothing to say about finite weights */
    free(log);
    for (int i = 0; i < 2; i++) {
        log = logged_while(i == 0 ? load_and_free : update_to, dir, &rc);
        assert_int_equal(rc, 0); /* a warning, not a refusal */
        if (!strstr(log, "'model.layers.2.mlp.gate.weight' holds 1 NaN or infinite value"))
            fail_msg("%s: the log lacks the tensor:\n%s", i == 0 ? "load" : "update", log);
        free(log);
    }
}

static int open_private(const char *path) {
    mt_checkpoint *ck;
    mt_err err;
    int rc = mt_checkpoint_open_mode(&ck, path, MT_CHECKPOINT_PRIVATE, &err);
    if (rc == 0) mt_checkpoint_close(ck);
    return rc;
}

/* The scan counts non-finite values of each float dtype exactly, in a tensor's words and its tail,
 * and finds none in finite values whose exponent is all but full. */
static void test_nonfinite_counted_per_dtype(void **state) {
    (void)state;
    static const char header[] =
        "{\"a\": {\"dtype\": \"F32\", \"shape\": [5], \"data_offsets\": [0, 20]},"
        " \"b\": {\"dtype\": \"BF16\", \"shape\": [9], \"data_offsets\": [20, 38]},"
        " \"c\": {\"dtype\": \"F16\", \"shape\": [8], \"data_offsets\": [38, 54]},"
        " \"d\": {\"dtype\": \"BF16\", \"shape\": [8], \"data_offsets\": [54, 70]}}";
    const uint32_t a[5] = {0x3f800000u, 0x7f7fffffu, 0xc0000000u, 0x7f800000u, 0x7fc00001u}; /* +inf, NaN */
    const uint16_t b[9] = {0x3f80, 0x7f7f, 0, 0, 0x8000, 0, 0, 0x7f80, 0xffc1};                /* +inf, NaN */
    const uint16_t c[8] = {0xfc00, 0x3c00, 0x7bff, 0, 0, 0, 0, 0};                             /* -inf */
    const uint16_t d[8] = {0x7f7f, 0xff7f, 0x3f80, 0x0001, 0x8001, 0x7f00, 0xff00, 0x4000};     /* finite */
    const char *path = path_of("dtypes.safetensors");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = sizeof header - 1;
    for (int i = 0; i < 8; i++) fputc((int)(n >> (8 * i)) & 0xff, f);
    fputs(header, f);
    fwrite(a, 4, 5, f); /* the host is little-endian, as the format */
    fwrite(b, 2, 9, f);
    fwrite(c, 2, 8, f);
    fwrite(d, 2, 8, f);
    fclose(f);
    int rc;
    char *log = logged_while(open_private, path, &rc);
    assert_int_equal(rc, 0);
    if (!strstr(log, "'a' holds 2 NaN or infinite values of 5") || !strstr(log, "'b' holds 2 NaN or infinite values of 9") ||
        !strstr(log, "'c' holds 1 NaN or infinite value of 8") || strstr(log, "'d'"))
        fail_msg("%s", log);
    free(log);
}

/* g_dir/name: a one-tensor safetensors file whose header is the given JSON. */
static const char *write_safetensors(const char *name, const char *header, size_t data_bytes) {
    const char *path = path_of(name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = strlen(header);
    for (int i = 0; i < 8; i++) fputc((int)(n >> (8 * i)) & 0xff, f);
    fputs(header, f);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
    return path;
}

static void test_header_checks(void **state) {
    (void)state;
    mt_checkpoint *ck;
    mt_err err;
    const char *bad = write_safetensors("bad_utf8.safetensors",
                                        "{\"w.\xff\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4);
    assert_int_equal(mt_checkpoint_open_mode(&ck, bad, MT_CHECKPOINT_PRIVATE, &err), -1);
    assert_non_null(strstr(err.msg, "invalid UTF-8 at byte 4 of the header"));
    assert_int_equal(mt_checkpoint_open(&ck, bad, &err), -1);
    assert_non_null(strstr(err.msg, "bad_utf8.safetensors: invalid UTF-8"));
    const char *dup = write_safetensors("dup.safetensors",
                                        "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                                        " \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4);
    assert_int_equal(mt_checkpoint_open(&ck, dup, &err), -1);
    if (!strstr(err.msg, "dup.safetensors: duplicate tensor name 'w'")) fail_msg("%s", err.msg);
    /* model.safetensors there, but a link to nothing or a folder */
    char dir[600];
    snprintf(dir, sizeof dir, "%s", path_of("broken_names"));
    assert_int_equal(mkdir(dir, 0755), 0);
    char file[700];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    assert_int_equal(symlink("nowhere.safetensors", file), 0);
    assert_int_equal(mt_checkpoint_open(&ck, dir, &err), -1);
    if (!strstr(err.msg, "model.safetensors is there but is not a readable file (a link to nothing)"))
        fail_msg("%s", err.msg);
    assert_int_equal(unlink(file), 0);
    assert_int_equal(mkdir(file, 0755), 0);
    assert_int_equal(mt_checkpoint_open(&ck, dir, &err), -1);
    if (!strstr(err.msg, "(a folder)")) fail_msg("%s", err.msg);
}

static void test_dummy_refused_when_too_large(void **state) {
    (void)state;
    char dir[600];
    snprintf(dir, sizeof dir, "%s", path_of("huge"));
    assert_int_equal(mkdir(dir, 0755), 0);
    char path[700];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    /* about 79 TB of experts */
    fputs("{\"model_type\": \"qwen3_moe\", \"vocab_size\": 151936, \"hidden_size\": 8192, \"num_hidden_layers\": 48,"
          " \"num_attention_heads\": 64, \"num_key_value_heads\": 8, \"head_dim\": 128, \"num_experts\": 4096,"
          " \"num_experts_per_tok\": 8, \"moe_intermediate_size\": 8192}", f);
    fclose(f);
    mt_model m;
    mt_err err;
    assert_int_equal(mt_model_load(&m, dir, MT_LOAD_DUMMY, &err), -1);
    if (!strstr(err.msg, "--load-format dummy") || !strstr(err.msg, "config.json") || !strstr(err.msg, "GiB of host memory") ||
        !strstr(err.msg, "GiB is available"))
        fail_msg("%s", err.msg);
    /* the device backend's dummy weights: nothing made on the host */
    if (mt_model_load(&m, dir, MT_LOAD_SHAPES, &err)) fail_msg("%s", err.msg);
    mt_model_free(&m);
}

static int setup(void **state) {
    (void)state;
    return tmp_dir_make("checkpoint_private_");
}

int main(void) {
    mt_kernels_init(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rewritten_after_load), cmocka_unit_test(test_rewritten_after_update),
        cmocka_unit_test(test_mapped_notices_writes), cmocka_unit_test(test_nonfinite_named),
        cmocka_unit_test(test_header_checks),         cmocka_unit_test(test_nonfinite_counted_per_dtype),         cmocka_unit_test(test_dummy_refused_when_too_large),
    };
    return cmocka_run_group_tests(tests, setup, tmp_dir_teardown);
}
