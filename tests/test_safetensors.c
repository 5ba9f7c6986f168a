/* Tests of the safetensors reader on files crafted here, in a temp dir under /tmp: valid single
 * files and folders, sharded folders with an index, and every malformed header the reader must
 * reject with a message naming the file and the tensor. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/safetensors.h"

static char g_root[64];

static char *path_of(const char *rel) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_root, rel);
    return buf[k];
}

static void write_bytes(const char *rel, const void *bytes, size_t n) {
    FILE *f = fopen(path_of(rel), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

/* Writes a safetensors file: the header padded with spaces to a multiple of 8, then the data. */
static void write_st(const char *rel, const char *header, const void *data, size_t n) {
    size_t hl = strlen(header), padded = (hl + 7) / 8 * 8;
    unsigned char *buf = calloc(1, 8 + padded + n + 1);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    if (n) memcpy(buf + 8 + padded, data, n);
    write_bytes(rel, buf, 8 + padded + n);
    free(buf);
}

static void make_dir(const char *rel) { assert_int_equal(mkdir(path_of(rel), 0755), 0); }

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state) {
    (void)state;
    strcpy(g_root, "/tmp/mt_safetensors_XXXXXX");
    return mkdtemp(g_root) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    return nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* a: F32 [2,2] = 1..4; b: F16 [3] = 1, -2, 0.5; c: BF16 [2] = 1, -3.5; ids: I64 [2];
 * s: F32 scalar 7; z: F32 [0]. */
static const char *VALID_HEADER =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
    "\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[16,32]},"
    "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[32,36]},"
    "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[36,36]},"
    "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[36,42]},"
    "\"c\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[42,46]}}";

static size_t valid_data(unsigned char *d) {
    float a[4] = {1, 2, 3, 4}, s = 7;
    int64_t ids[2] = {5, 6};
    uint16_t b[3] = {0x3C00, 0xC000, 0x3800}, c[2] = {0x3F80, 0xC060};
    memcpy(d, a, 16);
    memcpy(d + 16, ids, 16);
    memcpy(d + 32, &s, 4);
    memcpy(d + 36, b, 6);
    memcpy(d + 42, c, 4);
    return 46;
}

static void check_valid(const mt_checkpoint *ck) {
    assert_int_equal(mt_checkpoint_count(ck), 6);
    const char *order[] = {"a", "b", "c", "ids", "s", "z"};
    for (int i = 0; i < 6; i++) assert_string_equal(mt_checkpoint_at(ck, i)->name, order[i]);
    assert_null(mt_checkpoint_at(ck, 6));
    assert_null(mt_checkpoint_find(ck, "missing"));

    const mt_tensor_info *t = mt_checkpoint_find(ck, "a");
    assert_non_null(t);
    assert_int_equal(t->dtype, MT_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->nbytes, 16);
    for (int i = 0; i < 4; i++) assert_true(mt_load_f32(t->dtype, t->data, (size_t)i) == (float)(i + 1));
    t = mt_checkpoint_find(ck, "b");
    assert_int_equal(t->dtype, MT_F16);
    assert_true(mt_load_f32(t->dtype, t->data, 0) == 1.0f);
    assert_true(mt_load_f32(t->dtype, t->data, 1) == -2.0f);
    assert_true(mt_load_f32(t->dtype, t->data, 2) == 0.5f);
    t = mt_checkpoint_find(ck, "c");
    assert_int_equal(t->dtype, MT_BF16);
    assert_string_equal(mt_tensor_dtype_string(t), "BF16");
    assert_true(mt_load_f32(t->dtype, t->data, 0) == 1.0f);
    assert_true(mt_load_f32(t->dtype, t->data, 1) == -3.5f);
    t = mt_checkpoint_find(ck, "s");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->nbytes, 4);
    assert_true(*(const float *)t->data == 7.0f);
    t = mt_checkpoint_find(ck, "z");
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], 0);
    assert_int_equal(t->nbytes, 0);

    t = mt_checkpoint_find(ck, "ids");
    assert_non_null(t);
    assert_false(mt_tensor_dtype_supported(t));
    assert_string_equal(mt_tensor_dtype_string(t), "I64");
    int64_t id1; /* unsupported tensors stay in the mapping, aligned or not */
    memcpy(&id1, (const unsigned char *)t->data + 8, sizeof id1);
    assert_int_equal(id1, 6);

    mt_err err = {{0}};
    const mt_tensor_info *got = NULL;
    assert_int_equal(mt_checkpoint_get(ck, "ids", &got, &err), -1);
    assert_null(got);
    assert_non_null(strstr(err.msg, "'ids'"));
    assert_non_null(strstr(err.msg, "I64"));
    assert_int_equal(mt_checkpoint_get(ck, "nope", &got, &err), -1);
    assert_non_null(strstr(err.msg, "'nope'"));
    assert_int_equal(mt_checkpoint_get(ck, "c", &got, &err), 0);
    assert_true(got == mt_checkpoint_find(ck, "c"));
}

static void test_valid_file_and_folder(void **state) {
    (void)state;
    unsigned char d[64];
    size_t n = valid_data(d);
    make_dir("single");
    write_st("single/model.safetensors", VALID_HEADER, d, n);
    write_st("single/ignored.safetensors", "{}", NULL, 0); /* model.safetensors wins */

    mt_checkpoint *ck = NULL;
    mt_err err = {{0}};
    assert_int_equal(mt_checkpoint_open(&ck, path_of("single/model.safetensors"), &err), 0);
    check_valid(ck);
    assert_non_null(strstr(mt_checkpoint_find(ck, "a")->file, "single/model.safetensors"));
    mt_checkpoint_close(ck);

    assert_int_equal(mt_checkpoint_open(&ck, path_of("single"), &err), 0);
    check_valid(ck);
    mt_checkpoint_close(ck);
}

/* The format does not require alignment: a header padded to 8k + 3 bytes leaves every tensor's
 * data misaligned in the file; supported ones are copied into aligned memory, with the same values. */
static void test_unaligned_data(void **state) {
    (void)state;
    unsigned char d[64], buf[1024];
    size_t n = valid_data(d), hl = strlen(VALID_HEADER), padded = (hl + 7) / 8 * 8 + 3;
    assert_true(8 + padded + n <= sizeof buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, VALID_HEADER, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    memcpy(buf + 8 + padded, d, n);
    write_bytes("unaligned.safetensors", buf, 8 + padded + n);
    mt_checkpoint *ck = NULL;
    mt_err err = {{0}};
    if (mt_checkpoint_open(&ck, path_of("unaligned.safetensors"), &err)) fail_msg("%s", err.msg);
    check_valid(ck);
    const char *names[] = {"a", "b", "c", "s"};
    const size_t widths[] = {4, 2, 2, 4};
    for (int i = 0; i < 4; i++) assert_int_equal((uintptr_t)mt_checkpoint_find(ck, names[i])->data % widths[i], 0);
    mt_checkpoint_close(ck);
}

static void test_empty_header(void **state) {
    (void)state;
    write_st("empty.safetensors", "{}", NULL, 0);
    mt_checkpoint *ck = NULL;
    mt_err err = {{0}};
    assert_int_equal(mt_checkpoint_open(&ck, path_of("empty.safetensors"), &err), 0);
    assert_int_equal(mt_checkpoint_count(ck), 0);
    assert_null(mt_checkpoint_find(ck, "x"));
    mt_checkpoint_close(ck);
}

static void write_shards(const char *dir) {
    char rel[256];
    float v[4] = {1, 2, 3, 4};
    snprintf(rel, sizeof rel, "%s/model-00001-of-00002.safetensors", dir);
    write_st(rel, "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", v, 16);
    snprintf(rel, sizeof rel, "%s/model-00002-of-00002.safetensors", dir);
    write_st(rel, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"extra\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", v + 2, 8);
}

static void write_index(const char *dir, const char *map) {
    char rel[256], text[1024];
    snprintf(rel, sizeof rel, "%s/model.safetensors.index.json", dir);
    snprintf(text, sizeof text, "{\"metadata\":{\"total_size\":24},\"weight_map\":{%s}}", map);
    write_bytes(rel, text, strlen(text));
}

#define S1 "\"model-00001-of-00002.safetensors\""
#define S2 "\"model-00002-of-00002.safetensors\""

static void test_sharded(void **state) {
    (void)state;
    make_dir("sharded");
    write_shards("sharded");
    write_index("sharded", "\"x\":" S1 ",\"y\":" S1 ",\"w\":" S2);
    mt_checkpoint *ck = NULL;
    mt_err err = {{0}};
    assert_int_equal(mt_checkpoint_open(&ck, path_of("sharded/"), &err), 0);
    assert_int_equal(mt_checkpoint_count(ck), 4);
    const mt_tensor_info *t = mt_checkpoint_find(ck, "w");
    assert_non_null(strstr(t->file, "model-00002-of-00002.safetensors"));
    assert_true(*(const float *)t->data == 3.0f);
    t = mt_checkpoint_find(ck, "extra"); /* not in the map, still available */
    assert_non_null(t);
    assert_true(*(const float *)t->data == 4.0f);
    t = mt_checkpoint_find(ck, "y");
    assert_true(((const float *)t->data)[1] == 4.0f);
    mt_checkpoint_close(ck);
}

static void expect_fail(const char *rel, const char *want1, const char *want2) {
    mt_checkpoint *ck = (mt_checkpoint *)1;
    mt_err err = {{0}};
    assert_int_equal(mt_checkpoint_open(&ck, path_of(rel), &err), -1);
    assert_null(ck);
    if (!strstr(err.msg, want1) || (want2 && !strstr(err.msg, want2)))
        fail_msg("error for %s lacks '%s'/'%s': %s", rel, want1, want2 ? want2 : "", err.msg);
    if (getenv("MT_TEST_VERBOSE")) fprintf(stderr, "  %s\n", err.msg);
}

static void test_sharded_errors(void **state) {
    (void)state;
    make_dir("sh_missing"); /* map names a tensor its shard lacks */
    write_shards("sh_missing");
    write_index("sh_missing", "\"x\":" S1 ",\"ghost\":" S2);
    expect_fail("sh_missing", "'ghost'", "model-00002-of-00002.safetensors");

    make_dir("sh_wrong"); /* map puts a tensor in the other shard */
    write_shards("sh_wrong");
    write_index("sh_wrong", "\"x\":" S2 ",\"y\":" S1 ",\"w\":" S2);
    expect_fail("sh_wrong", "'x'", "model-00001-of-00002.safetensors");

    make_dir("sh_escape");
    write_index("sh_escape", "\"x\":\"../model.safetensors\"");
    expect_fail("sh_escape", "'x'", "index.json");

    make_dir("sh_absent"); /* a shard file that does not exist */
    write_index("sh_absent", "\"x\":\"nothere.safetensors\"");
    expect_fail("sh_absent", "nothere.safetensors", "index.json names shard"); /* and says who names it */

    make_dir("sh_nomap");
    write_bytes("sh_nomap/model.safetensors.index.json", "{\"metadata\":{}}", 15);
    expect_fail("sh_nomap", "weight_map", "index.json");

    make_dir("sh_dup"); /* one tensor name in two shards */
    write_shards("sh_dup");
    write_st("sh_dup/model-00002-of-00002.safetensors",
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "abcd", 4);
    write_index("sh_dup", "\"x\":" S1 ",\"y\":" S1 ",\"w\":" S2);
    expect_fail("sh_dup", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors");
}

static void test_folder_fallback(void **state) {
    (void)state;
    make_dir("loose");
    write_st("loose/b.safetensors", "{\"p\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]}}",
             "\x80\x3f", 2);
    write_st("loose/a.safetensors", "{\"q\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]}}",
             "\x00\x3c", 2);
    write_bytes("loose/notes.txt", "hi", 2);
    mt_checkpoint *ck = NULL;
    mt_err err = {{0}};
    assert_int_equal(mt_checkpoint_open(&ck, path_of("loose"), &err), 0);
    assert_int_equal(mt_checkpoint_count(ck), 2);
    assert_true(mt_load_f32(MT_BF16, mt_checkpoint_find(ck, "p")->data, 0) == 1.0f);
    assert_true(mt_load_f32(MT_F16, mt_checkpoint_find(ck, "q")->data, 0) == 1.0f);
    mt_checkpoint_close(ck);

    make_dir("nothing");
    write_bytes("nothing/config.json", "{}", 2);
    expect_fail("nothing", "no safetensors checkpoint in", "nothing");
    expect_fail("does-not-exist", "does-not-exist", NULL);
}

static void test_malformed_files(void **state) {
    (void)state;
    make_dir("bad");
    write_bytes("bad/short.safetensors", "\x05\0\0\0", 4);
    expect_fail("bad/short.safetensors", "short.safetensors", "too short");
    write_bytes("bad/long.safetensors", "\xe8\x03\0\0\0\0\0\0{}", 10);
    expect_fail("bad/long.safetensors", "long.safetensors", "past the end");
    write_bytes("bad/absurd.safetensors", "\0\0\0\x10\0\0\0\0{}", 10);
    expect_fail("bad/absurd.safetensors", "absurd.safetensors", "absurd");
    /* a repository cloned without git-lfs holds pointer files where the weights should be */
    static const char pointer[] = "version https://git-lfs.github.com/spec/v1\n"
                                  "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
                                  "size 3966057608\n";
    write_bytes("bad/pointer.safetensors", pointer, sizeof pointer - 1);
    expect_fail("bad/pointer.safetensors", "pointer.safetensors", "Git LFS pointer");

    static const struct { const char *header, *want; size_t data; } cases[] = {
        {"{\"a\": ", NULL, 0},
        {"[1,2]", NULL, 0},
        {"{} xyz", NULL, 0},
        {"{\"__metadata__\":3}", "__metadata__", 0},
        {"{\"w1\":5}", "'w1'", 0},
        {"{\"w2\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "'w2'", 4},
        {"{\"w3\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", "Q4", 4},
        {"{\"w4\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}}", "'w4'", 4},
        {"{\"w5\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "'w5'", 4},
        {"{\"w6\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", "'w6'", 4},
        {"{\"w7\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", "'w7'", 4},
        {"{\"w8\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", "'w8'", 4},
        {"{\"w9\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", "'w9'", 4},
        {"{\"w10\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", "'w10'", 4},
        {"{\"w11\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", "'w11'", 4},
        {"{\"w12\":{\"dtype\":\"F32\",\"shape\":[1]}}", "'w12'", 4},
        {"{\"w13\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "'w13'", 4},
        {"{\"w14\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", "'w14'", 8},
        {"{\"w15\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}",
         "'w15'", 4},
        {"{\"w16\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"w17\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "'w16' and 'w17'", 8},
        {"{\"w18\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"w18\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "'w18'", 8},
        {"{\"w20\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", "'w20'", 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "bad/case%zu.safetensors", i);
        static const unsigned char zeros[16];
        write_st(rel, cases[i].header, zeros, cases[i].data);
        expect_fail(rel, rel + 4, cases[i].want);
    }
}

/* Unsupported but valid dtypes are kept, including sub-byte ones. */
static void test_unsupported_dtypes(void **state) {
    (void)state;
    write_st("quant.safetensors",
             "{\"q\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,2]},"
             "\"s\":{\"dtype\":\"F8_E8M0\",\"shape\":[1],\"data_offsets\":[2,3]},"
             "\"m\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[3,4]}}", "\x11\x22\x7f\x01", 4);
    mt_checkpoint *ck = NULL;
    mt_err err = {{0}};
    assert_int_equal(mt_checkpoint_open(&ck, path_of("quant.safetensors"), &err), 0);
    assert_int_equal(mt_checkpoint_count(ck), 3);
    const mt_tensor_info *t = mt_checkpoint_find(ck, "q");
    assert_string_equal(t->dtype_name, "F4");
    assert_int_equal(t->nbytes, 2);
    assert_int_equal(t->dtype, MT_DTYPE_COUNT);
    assert_false(t->supported);
    mt_checkpoint_close(ck);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_file_and_folder),
        cmocka_unit_test(test_empty_header),
        cmocka_unit_test(test_unaligned_data),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_sharded_errors),
        cmocka_unit_test(test_folder_fallback),
        cmocka_unit_test(test_malformed_files),
        cmocka_unit_test(test_unsupported_dtypes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
