/* Untrusted JSON holding U+0000 (util/json_util.h): cJSON keeps strings as C strings, so a string
 * with U+0000 would silently end there. mt_json_find_nul's scan (escapes, escaped backslashes,
 * raw NUL bytes, member names, bytes after the value), mt_json_parse's refusal and its message,
 * and every file parser of untrusted input refusing such a file by name: config.json,
 * tokenizer.json, tokenizer_config.json, safetensors headers, stat dumps (and so placements planned
 * from them). Request bodies: test_server_errors; `chat-template --messages`: test_chat_template;
 * `profile --data`: test_profile. Also request bodies naming a key twice in one object (refused by
 * mt_json_parse_body, not by the file parsers). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "chat/chat_template.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "routing/placement.h"
#include "routing/stat_dump.h"
#include "tmp_dir.h"
#include "tokenizer/tokenizer.h"
#include "util/json_util.h"

static int setup(void **state) {
    (void)state;
    return tmp_dir_make("jsonutil_");
}

static void test_find_nul(void **state) {
    (void)state;
    static const struct { const char *json; size_t len; long at; } cases[] = {
        {"{\"text\": \"a\\u0000b\"}", 0, 11},
        {"{\"a\\u0000\": 1}", 0, 3},                      /* a member name */
        {"[\"x\", \"\\\\u0000\"]", 0, -1},                /* \\u0000: a backslash, then the letters */
        {"[\"\\\\\\u0000\"]", 0, 4},                      /* \\ then \u0000 */
        {"[\"\\\"\\u0000\"]", 0, 4},                      /* \" then \u0000 */
        {"[\"\\u00000\"]", 0, 2},
        {"[\"\\u0001\", \"\\u1000\", \"u0000\"]", 0, -1},
        {"[\"\\u000\"]", 0, -1},                          /* cut short (not JSON) */
        {"[\"\\u00", 0, -1},
        {"[1, 2] \"\\u0000\"", 0, 8},                     /* the scan itself does not stop at the value */
        {"[\"a\0b\"]", 7, 3},                            /* a raw NUL byte in a string */
        {"[1,\0 2]", 7, -1},                              /* ... outside one */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].json);
        long at = mt_json_find_nul(cases[i].json, len);
        if (at != cases[i].at) fail_msg("case %zu (%s): %ld, want %ld", i, cases[i].json, at, cases[i].at);
    }
}

static void test_parse(void **state) {
    (void)state;
    mt_err err = {{0}};
    const char *ok = "{\"text\": \"a\\\\u0000b\"} trailing \"\\u0000\"";
    const char *end = NULL;
    cJSON *j = mt_json_parse(ok, strlen(ok), "body", &end, &err);
    if (!j) fail_msg("%s", err.msg);
    assert_string_equal(cJSON_GetObjectItem(j, "text")->valuestring, "a\\u0000b");
    assert_ptr_equal(end, ok + 21);
    cJSON_Delete(j);
    /* text holding NUL bytes survives cJSON's C strings and prints as \u0000 */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "t", mt_json_text("a\0b\0\0\xc3\xa9", 7));
    char *printed = mt_json_print(o);
    assert_string_equal(printed, "{\"t\":\"a\\u0000b\\u0000\\u0000\xc3\xa9\"}");
    free(printed);
    cJSON_Delete(o);
    /* bytes that are no UTF-8 (an error quoting a file's header, a message cut inside a character)
     * print as U+FFFD: every body is valid UTF-8 JSON */
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "message", "tensor 'extra.\xff' \xed\xa0\x80 \xc3");
    printed = mt_json_print(o);
    assert_string_equal(printed, "{\"message\":\"tensor 'extra.\xef\xbf\xbd' \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
                                 "\xef\xbf\xbd\"}");
    free(printed);
    cJSON_Delete(o);
    /* the whole text must be the value: whitespace may follow, nothing else */
    assert_null(mt_json_parse_whole(ok, strlen(ok), "body", &err));
    assert_string_equal(err.msg, "body: unexpected text after the JSON value at byte 22");
    const char *spaced = " {\"a\": 1} \r\n\t ";
    j = mt_json_parse_whole(spaced, strlen(spaced), "body", &err);
    if (!j) fail_msg("%s", err.msg);
    cJSON_Delete(j);

    const char *bad = "{\"text\": \"a\\u0000bcdefgh\"}";
    assert_null(mt_json_parse(bad, strlen(bad), "the request body", NULL, &err));
    assert_string_equal(err.msg, "the request body: a string holds U+0000 (\\u0000 at byte 11), which is not supported");
    assert_null(mt_json_parse(bad, strlen(bad), NULL, NULL, &err));
    assert_string_equal(err.msg, "a string holds U+0000 (\\u0000 at byte 11), which is not supported");
    assert_null(mt_json_parse("{\"a\": ", 6, "f.json", NULL, &err));
    assert_non_null(strstr(err.msg, "f.json: invalid JSON near byte"));
    assert_null(mt_json_parse("[\"a\0b\"]", 7, "raw", NULL, &err));
    assert_non_null(strstr(err.msg, "U+0000"));
    /* nested past cJSON's limit: said so, not "invalid" (brackets inside strings do not count) */
    for (int depth = CJSON_NESTING_LIMIT; depth <= CJSON_NESTING_LIMIT + 2; depth++) {
        size_t n = 0;
        char *deep = malloc((size_t)depth * 8 + 16);
        for (int k = 0; k < depth; k++) n += (size_t)sprintf(deep + n, "{\"[{\":");
        n += (size_t)sprintf(deep + n, "1");
        for (int k = 0; k < depth; k++) deep[n++] = '}';
        cJSON *r = mt_json_parse(deep, n, "body", NULL, &err);
        if (depth <= CJSON_NESTING_LIMIT) {
            if (!r) fail_msg("depth %d: %s", depth, err.msg);
            cJSON_Delete(r);
        } else {
            assert_null(r);
            if (!strstr(err.msg, "body: JSON nested deeper than 1000 arrays and objects"))
                fail_msg("depth %d: %s", depth, err.msg);
        }
        free(deep);
    }
}

/* mt_json_parse_keep_nul: \u0000 kept as C0 80 in names and values, mt_json_unmask_nul reads it back;
 * an escaped backslash before u0000 is text; errors name offsets of the text as given. */
static void test_keep_nul(void **state) {
    (void)state;
    mt_err err = {{0}};
    const char *text = "{\"a\\u0000\": \"x\\u0000y\\u0000\", \"b\": \"\\\\u0000\", \"c\": 12345678901234567}";
    cJSON *j = mt_json_parse_keep_nul(text, strlen(text), "t", &err);
    if (!j) fail_msg("%s", err.msg);
    const cJSON *a = j->child;
    assert_string_equal(a->string, "a\xC0\x80");
    char out[16];
    assert_int_equal(mt_json_unmask_nul(a->valuestring, strlen(a->valuestring), out), 4);
    assert_memory_equal(out, "x\0y\0", 4);
    assert_string_equal(cJSON_GetObjectItem(j, "b")->valuestring, "\\u0000");
    size_t blen;
    char *bytes = mt_json_bytes(a->valuestring, &blen);
    assert_non_null(bytes);
    assert_int_equal(blen, 4);
    assert_memory_equal(bytes, "x\0y\0", 5); /* NUL-terminated past its length */
    free(bytes);
    assert_true(mt_json_holds_nul(a->string));
    assert_false(mt_json_holds_nul(cJSON_GetObjectItem(j, "b")->valuestring));
    assert_false(mt_json_holds_nul(NULL));
    int64_t v;
    assert_true(mt_json_int64(cJSON_GetObjectItem(j, "c"), &v));
    assert_true(v == 12345678901234567LL);
    cJSON_Delete(j);
    /* the same as mt_json_parse without a NUL */
    j = mt_json_parse_keep_nul("[1]", 3, "t", &err);
    assert_non_null(j);
    cJSON_Delete(j);
    /* offsets of the given text: the bad byte after two escapes is at 24 */
    const char *bad = "[\"\\u0000\", \"\\u0000\", 1, }";
    assert_null(mt_json_parse_keep_nul(bad, strlen(bad), "t", &err));
    char want[64];
    snprintf(want, sizeof want, "t: invalid JSON near byte %zu", strlen(bad) - 1);
    assert_string_equal(err.msg, want);
    const char *raw = "[\"\\u0000\", \"a\0b\"]";
    assert_null(mt_json_parse_keep_nul(raw, 18, "t", &err));
    assert_string_equal(err.msg, "t: a string holds U+0000 (\\u0000 at byte 13), which is not supported");
}

/* mt_json_parse_body_keep_nul: without \u0000 exactly mt_json_parse_body (nothing kept, a raw C0 80
 * left alone); with it, valid UTF-8 required, the whole-body and duplicate-key checks kept, offsets
 * of the text as given. mt_json_nul_string finds names and values holding C0 80 outside a skipped
 * member, with the member that holds them. */
static void test_body_keep_nul(void **state) {
    (void)state;
    mt_err err = {{0}};
    bool kept = true;
    cJSON *j = mt_json_parse_body_keep_nul("{\"a\": \"\xC0\x80\"}", 11, "b", &kept, &err);
    assert_non_null(j);
    assert_false(kept);
    cJSON_Delete(j);
    const char *text = "{\"t\": [\"x\\u0000\", \"y\"], \"o\": {\"k\": [\"\\u0000\"]}} \n";
    j = mt_json_parse_body_keep_nul(text, strlen(text), "b", &kept, &err);
    if (!j) fail_msg("%s", err.msg);
    assert_true(kept);
    const char *key;
    bool in_name;
    const cJSON *t = cJSON_GetObjectItem(j, "t"), *o = cJSON_GetObjectItem(j, "o");
    const cJSON *at = mt_json_nul_string(j, t, &key, &in_name);
    assert_ptr_equal(at, cJSON_GetArrayItem(cJSON_GetObjectItem(o, "k"), 0));
    assert_string_equal(key, "k");
    assert_false(in_name);
    assert_ptr_equal(mt_json_nul_string(j, o, &key, &in_name), t->child);
    assert_string_equal(key, "t");
    assert_null(mt_json_nul_string(t->child->next, NULL, &key, &in_name));
    cJSON_Delete(j);
    const char *named = "{\"s\": {\"\\u0000\": 1}}";
    j = mt_json_parse_body_keep_nul(named, strlen(named), "b", &kept, &err);
    assert_non_null(j);
    assert_ptr_equal(mt_json_nul_string(j, NULL, &key, &in_name), cJSON_GetObjectItem(j, "s")->child);
    assert_true(in_name);
    assert_string_equal(key, "s");
    assert_null(mt_json_nul_string(j, cJSON_GetObjectItem(j, "s"), &key, &in_name)); /* inside skip: not looked at */
    cJSON_Delete(j);
    static const struct { const char *text; const char *msg; } bad[] = {
        {"{\"a\": \"\\u0000\", \"a\": 1}", "b: duplicate key 'a' (one object names it twice)"},
        {"{\"a\": \"\\u0000\"} [", "b: unexpected text after the JSON value at byte 16"},
        {"{\"a\": \"\\u0000\xC0\x80\"}", "b: not valid UTF-8 (byte 13)"},
        {"{\"a\": \"\\u0000\", 1}", "b: invalid JSON near byte 17"}, /* as for {"a": "xxxxxx", 1} */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_null(mt_json_parse_body_keep_nul(bad[i].text, strlen(bad[i].text), "b", &kept, &err));
        assert_string_equal(err.msg, bad[i].msg);
    }
    assert_null(mt_json_parse_body("{\"a\": \"xxxxxx\", 1}", 19, "b", &err));
    assert_string_equal(err.msg, "b: invalid JSON near byte 17");
    /* a dataset line's reader: what follows the value and duplicate keys are left alone */
    const char *line = "{\"a\": \"\\u0000\", \"a\": 1} x";
    j = mt_json_parse_text_keep_nul(line, strlen(line), "l", &kept, &err);
    assert_non_null(j);
    assert_true(kept);
    assert_string_equal(j->child->valuestring, "\xC0\x80");
    cJSON_Delete(j);
    assert_null(mt_json_parse_text_keep_nul("[\"\\u0000\xff\"]", 10, "l", &kept, &err));
    assert_string_equal(err.msg, "l: not valid UTF-8 (byte 8)");
    const char raw[] = "{\"a\": \"\\u0000\", \"b\": \"\0\"}";
    assert_null(mt_json_parse_body_keep_nul(raw, sizeof raw - 1, "b", &kept, &err));
    assert_string_equal(err.msg, "b: a string holds U+0000 (\\u0000 at byte 22), which is not supported");
}

/* Integers past 2^53 keep their exact value beside cJSON's double (mt_json_int64); other numbers,
 * and integers past int64, do not claim one. */
static void test_long_integers(void **state) {
    (void)state;
    const char *text = "{\"a\": 9223372036854775807, \"s\": \"12345678901234567890\", \"b\": [12345678901234567, 1.5, "
                       "-9007199254740993, 1e20, 99999999999999999999], \"c\": 123, \"d\": {\"e\": -9223372036854775808}}";
    mt_err err;
    cJSON *j = mt_json_parse(text, strlen(text), "t", NULL, &err);
    if (!j) fail_msg("%s", err.msg);
    int64_t v;
    assert_true(mt_json_int64(cJSON_GetObjectItem(j, "a"), &v));
    assert_true(v == INT64_MAX);
    const cJSON *b = cJSON_GetObjectItem(j, "b");
    assert_true(mt_json_int64(cJSON_GetArrayItem(b, 0), &v));
    assert_true(v == 12345678901234567LL);
    assert_false(mt_json_int64(cJSON_GetArrayItem(b, 1), &v));
    assert_true(mt_json_int64(cJSON_GetArrayItem(b, 2), &v));
    assert_true(v == -9007199254740993LL);
    assert_false(mt_json_int64(cJSON_GetArrayItem(b, 3), &v)); /* an exponent: a float */
    assert_false(mt_json_int64(cJSON_GetArrayItem(b, 4), &v)); /* past int64 */
    assert_false(mt_json_int64(cJSON_GetObjectItem(j, "c"), &v)); /* exact as a double already */
    assert_false(mt_json_int64(cJSON_GetObjectItem(j, "s"), &v));
    assert_true(mt_json_int64(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "d"), "e"), &v));
    assert_true(v == INT64_MIN);
    cJSON *copy = cJSON_Duplicate(j, 1); /* the literal goes with a copy, and is freed with it */
    assert_true(mt_json_int64(cJSON_GetObjectItem(copy, "a"), &v));
    assert_true(v == INT64_MAX);
    cJSON_Delete(copy);
    cJSON_Delete(j);
}

/* A key named twice in one object, at any depth, refuses a request body and names the key (and the
 * member holding the object); the same key in two objects is no duplicate; files keep cJSON's
 * reading (mt_json_parse: the first one). An object of many keys is checked in n log n. */
static void test_duplicate_keys(void **state) {
    (void)state;
    mt_err err = {{0}};
    const struct { const char *body, *msg; } refused[] = {
        {"{\"input_ids\": [5], \"input_ids\": [99999]}", "body: duplicate key 'input_ids' (one object names it twice)"},
        {"{\"a\": 1, \"sampling_params\": {\"n\": 1}, \"sampling_params\": {}}",
         "body: duplicate key 'sampling_params' (one object names it twice)"},
        {"{\"sampling_params\": {\"max_new_tokens\": 5, \"top_k\": 1, \"max_new_tokens\": 2}}",
         "body: duplicate key 'max_new_tokens', in 'sampling_params' (one object names it twice)"},
        {"{\"messages\": [{\"role\": \"user\"}, {\"content\": \"a\", \"role\": \"x\", \"role\": \"y\"}]}",
         "body: duplicate key 'role' (one object names it twice)"},
        {"[[{\"a\": {\"b\": {\"c\": 1, \"c\": 1}}}]]", "body: duplicate key 'c', in 'b' (one object names it twice)"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        const char *b = refused[i].body;
        if (mt_json_parse_body(b, strlen(b), "body", &err)) fail_msg("case %zu accepted: %s", i, b);
        assert_string_equal(err.msg, refused[i].msg);
        cJSON *j = mt_json_parse(b, strlen(b), "file.json", NULL, &err); /* files: duplicates allowed */
        if (!j) fail_msg("case %zu: %s", i, err.msg);
        cJSON_Delete(j);
    }
    const char *ok = "{\"a\": {\"x\": 1}, \"b\": {\"x\": 2}, \"A\": [{\"x\": 1}, {\"x\": 1}], \"x\": null}";
    cJSON *j = mt_json_parse_body(ok, strlen(ok), "body", &err);
    if (!j) fail_msg("%s", err.msg);
    cJSON_Delete(j);
    /* 200,000 distinct keys, then one of them again */
    enum { N = 200000 };
    char *big = malloc((size_t)N * 24 + 64);
    size_t at = 0;
    big[at++] = '{';
    for (int i = 0; i < N; i++) at += (size_t)sprintf(big + at, "%s\"k%d\": %d", i ? ", " : "", i, i);
    strcpy(big + at, "}");
    if (!(j = mt_json_parse_body(big, strlen(big), "body", &err))) fail_msg("%s", err.msg);
    cJSON_Delete(j);
    strcpy(big + at, ", \"k4711\": 0}");
    assert_null(mt_json_parse_body(big, strlen(big), "body", &err));
    assert_string_equal(err.msg, "body: duplicate key 'k4711' (one object names it twice)");
    free(big);
}

/* err names the file and U+0000. */
static void expect_refused(int rc, const mt_err *err, const char *file, const char *what) {
    if (rc != -1) fail_msg("%s: accepted", what);
    if (!strstr(err->msg, file) || !strstr(err->msg, "U+0000")) fail_msg("%s: '%s' lacks '%s' or U+0000", what, err->msg, file);
}

#define QWEN_CONFIG_AFTER_TYPE                                                                             \
    "\", \"vocab_size\": 64, \"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 2,"   \
    " \"num_key_value_heads\": 1, \"head_dim\": 16, \"num_experts\": 4, \"num_experts_per_tok\": 2,"         \
    " \"moe_intermediate_size\": 16, \"intermediate_size\": 32}"

static void test_config(void **state) {
    (void)state;
    mt_config c;
    mt_err err = {{0}};
    if (mt_config_parse(&c, "{\"model_type\": \"qwen3_moe" QWEN_CONFIG_AFTER_TYPE, &err)) fail_msg("%s", err.msg);
    expect_refused(mt_config_parse(&c, "{\"model_type\": \"qwen3_moe\\u0000!" QWEN_CONFIG_AFTER_TYPE, &err), &err,
                   "config.json", "config.json");
    mkdir(path_of("gen"), 0755);
    write_text("gen/config.json", "{\"model_type\": \"qwen3_moe" QWEN_CONFIG_AFTER_TYPE);
    write_text("gen/generation_config.json", "{\"eos_token_id\": 2, \"note\": \"\\u0000\"}");
    expect_refused(mt_config_load(&c, path_of("gen"), &err), &err, "generation_config.json", "generation_config.json");
}

static void test_tokenizer_files(void **state) {
    (void)state;
    mt_err err = {{0}};
    mt_tokenizer *tok;
    mkdir(path_of("tok"), 0755);
    const char *fmt = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"c%sd\": 3},"
                      " \"merges\": [[\"a\", \"b\"]]}}";
    char text[512];
    snprintf(text, sizeof text, fmt, "");
    write_text("tok/tokenizer.json", text);
    if (mt_tokenizer_load(&tok, path_of("tok"), &err)) fail_msg("%s", err.msg);
    mt_tokenizer_free(tok);
    /* A token may hold U+0000 (InternLM2's vocabulary has "\\u0000"): kept, with its length */
    write_text("tok/tokenizer.json",
               "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"\\u0000\": 3, \"a\\u0000\": 4},"
               " \"merges\": [[\"a\", \"\\u0000\"], \"a b\"]}}");
    if (mt_tokenizer_load(&tok, path_of("tok"), &err)) fail_msg("%s", err.msg);
    int32_t *ids;
    size_t n;
    assert_int_equal(mt_tokenizer_encode(tok, "a\0b\0", 4, 0, &ids, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 4), assert_int_equal(ids[1], 1), assert_int_equal(ids[2], 3);
    char *out;
    size_t len;
    assert_int_equal(mt_tokenizer_decode(tok, ids, n, 0, &out, &len, &err), 0);
    assert_int_equal(len, 6); /* no decoder: the tokens joined by spaces, as the library joins them */
    assert_memory_equal(out, "a\0 b \0", 6);
    free(out), free(ids);
    mt_tokenizer_free(tok);
    /* a String pattern holding it matches the byte; a regex holding it is refused (\\x00 is the way) */
    write_text("tok/tokenizer.json",
               "{\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u0000\"}, \"content\": \"b\"},"
               " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}}");
    if (mt_tokenizer_load(&tok, path_of("tok"), &err)) fail_msg("%s", err.msg);
    assert_int_equal(mt_tokenizer_encode(tok, "a\0", 2, 0, &ids, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 2);
    free(ids);
    mt_tokenizer_free(tok);
    write_text("tok/tokenizer.json",
               "{\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \"a\\u0000\"}, \"content\": \"b\"},"
               " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    expect_refused(mt_tokenizer_load(&tok, path_of("tok"), &err), &err, "tokenizer.json", "a regex holding U+0000");
    /* a raw NUL byte is no JSON (a string's control characters must be escaped) */
    FILE *f = fopen(path_of("tok/tokenizer.json"), "wb");
    assert_non_null(f);
    static const char raw_nul[] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\0\": 0}, \"merges\": []}}";
    assert_int_equal(fwrite(raw_nul, 1, sizeof raw_nul - 1, f), sizeof raw_nul - 1);
    fclose(f);
    expect_refused(mt_tokenizer_load(&tok, path_of("tok"), &err), &err, "tokenizer.json", "U+0000");
    /* nor is a file that is not UTF-8 a tokenizer.json to the library (it reads a Rust String) */
    write_text("tok/tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\xC0\x80\": 0}, \"merges\": []}}");
    assert_int_equal(mt_tokenizer_load(&tok, path_of("tok"), &err), -1);
    if (!strstr(err.msg, "tokenizer.json: not valid UTF-8 (byte 37)")) fail_msg("%s", err.msg);
    mt_chat_template *tpl;
    write_text("tok/tokenizer_config.json", "{\"chat_template\": \"{{ 'a' }}\"}");
    if (mt_chat_template_load(&tpl, path_of("tok"), &err)) fail_msg("%s", err.msg);
    mt_chat_template_free(tpl);
    write_text("tok/tokenizer_config.json", "{\"chat_template\": \"{{ 'a' }}\\u0000{{ 'b' }}\"}");
    expect_refused(mt_chat_template_load(&tpl, path_of("tok"), &err), &err, "tokenizer_config.json",
                   "tokenizer_config.json");
}

/* A safetensors file of one F32 scalar named name (a JSON string's content). */
static void write_safetensors(const char *file, const char *name) {
    char header[256];
    int n = snprintf(header, sizeof header, "{\"%s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}}", name);
    while (n % 8) header[n++] = ' ';
    FILE *f = fopen(path_of(file), "wb");
    assert_non_null(f);
    uint64_t hl = (uint64_t)n;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i));
    float one = 1.0f;
    assert_int_equal(fwrite(len8, 1, 8, f), 8);
    assert_int_equal(fwrite(header, 1, (size_t)n, f), (size_t)n);
    assert_int_equal(fwrite(&one, 1, 4, f), 4);
    fclose(f);
}

static void test_safetensors_header(void **state) {
    (void)state;
    mt_err err = {{0}};
    mt_checkpoint *ck;
    write_safetensors("ok.safetensors", "w.x");
    if (mt_checkpoint_open(&ck, path_of("ok.safetensors"), &err)) fail_msg("%s", err.msg);
    mt_checkpoint_close(ck);
    write_safetensors("nul.safetensors", "w\\u0000.x");
    expect_refused(mt_checkpoint_open(&ck, path_of("nul.safetensors"), &err), &err, "nul.safetensors", "header");
}

#define DUMP_AFTER_FORMAT                                                                                \
    "\", \"mode\": \"stat\", \"model\": \"m\", \"num_hidden_layers\": 1, \"moe_layers\": [0],"            \
    " \"num_experts\": 4, \"top_k\": 1, \"num_forward_passes\": 1, \"num_tokens\": 4,"                    \
    " \"logical_count\": [[1, 1, 1, 1]]}"

static void test_stat_dump_and_placement(void **state) {
    (void)state;
    mt_err err = {{0}};
    mt_stat_dump d;
    const char *ok = "{\"format\": \"moetrace.expert_distribution.v1" DUMP_AFTER_FORMAT;
    const char *bad = "{\"format\": \"moetrace.expert_distribution.v1\\u0000v2" DUMP_AFTER_FORMAT;
    if (mt_stat_dump_parse(ok, strlen(ok), "ok.json", &d, &err)) fail_msg("%s", err.msg);
    mt_stat_dump_free(&d);
    expect_refused(mt_stat_dump_parse(bad, strlen(bad), "dump.json", &d, &err), &err, "dump.json", "stat dump");

    /* --init-expert-location DUMP: planned from a stat dump file */
    mt_moe_shape shape = {.num_hidden_layers = 1, .num_experts = 4, .num_moe_layers = 1, .moe_layers = {0}};
    mt_placement_opts o = {.ep_size = 2, .num_redundant = -1};
    mt_placement p;
    write_text("dump_ok.json", ok);
    if (mt_placement_load(path_of("dump_ok.json"), &shape, &o, &p, &err)) fail_msg("%s", err.msg);
    mt_placement_free(&p);
    write_text("dump_nul.json", bad);
    expect_refused(mt_placement_load(path_of("dump_nul.json"), &shape, &o, &p, &err), &err, "dump_nul.json",
                   "placement from a dump");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_nul),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_long_integers),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_keep_nul),
        cmocka_unit_test(test_body_keep_nul),
        cmocka_unit_test(test_tokenizer_files),
        cmocka_unit_test(test_safetensors_header),
        cmocka_unit_test(test_stat_dump_and_placement),
    };
    return cmocka_run_group_tests(tests, setup, tmp_dir_teardown);
}
