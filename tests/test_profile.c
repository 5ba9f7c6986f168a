/* moetrace profile end to end: outputs exist and agree with each other — the stat dump's counts
 * equal the counts derived from the per-token dump and the tokens forwarded; the per-token index
 * names requests by their records' "rid" / "id", else by line number; bad datasets give an error
 * naming the line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "model/safetensors.h"
#include "test_cli.h"
#include "util/json_util.h"

#define MODEL MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"

static char g_dir[64];
static const char *g_bin;

static void write_file(const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state) {
    (void)state;
    g_bin = getenv("MOETRACE_BIN");
    snprintf(g_dir, sizeof g_dir, "/tmp/moetrace_prof_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Checks the per-token index's request names (index: the dump's JSON, tensors: its safetensors):
 * every request appears once under its expected name (names[r]), and the rows at position 0 under
 * that name carry its record's first token (first[r]). */
static void check_request_names(const cJSON *index, const mt_checkpoint *ck, char names[][32], const int *first,
                                int n) {
    const cJSON *rid = cJSON_GetObjectItem(index, "request_ids");
    assert_int_equal(cJSON_GetArraySize(rid), n);
    const mt_tensor_info *req = mt_checkpoint_find(ck, "request_index"), *pos = mt_checkpoint_find(ck, "position"),
                         *tok = mt_checkpoint_find(ck, "token_id");
    int seen[64] = {0};
    for (int64_t t = 0; t < req->shape[0]; t++) {
        int64_t ri;
        int32_t p, token;
        memcpy(&ri, (const char *)req->data + t * 8, 8);
        memcpy(&p, (const char *)pos->data + t * 4, 4);
        memcpy(&token, (const char *)tok->data + t * 4, 4);
        if (p != 0) continue;
        const cJSON *name = cJSON_GetArrayItem(rid, (int)ri);
        assert_true(cJSON_IsString(name));
        int r = 0;
        while (r < n && strcmp(names[r], name->valuestring)) r++;
        if (r == n) fail_msg("request_ids[%d] = \"%s\" is no record's name", (int)ri, name->valuestring);
        assert_int_equal(token, first[r]);
        seen[r]++;
    }
    for (int r = 0; r < n; r++)
        if (seen[r] != 1) fail_msg("record %d (\"%s\"): %d first tokens", r, names[r], seen[r]);
}

static void test_outputs_agree(void **state) {
    (void)state;
    if (!g_bin) skip();
    char ds[65536] = "", out[65536], args[1024];
    /* Request names: "rid" on every third record, an integer "id" on the next, else the line number
     * (a blank line after the tenth record shifts the later ones). */
    char names[30][32];
    int first[30], line = 0;
    unsigned s = 7;
    for (int r = 0; r < 30; r++) {
        int len = 1 + (int)((s = s * 1103515245u + 12345u) >> 16) % 90;
        line++;
        if (r % 3 == 0) {
            snprintf(names[r], sizeof names[r], "row-%d", r);
            strcat(ds, "{\"rid\": \"");
            strcat(ds, names[r]);
            strcat(ds, "\", ");
        } else if (r % 3 == 1) {
            snprintf(names[r], sizeof names[r], "%d", 1000 + r);
            strcat(ds, "{\"id\": ");
            strcat(ds, names[r]);
            strcat(ds, ", ");
        } else {
            snprintf(names[r], sizeof names[r], "%d", line);
            strcat(ds, "{");
        }
        strcat(ds, "\"input_ids\": [");
        for (int i = 0; i < len; i++) {
            char num[16];
            int id = 3 + (int)(((s = s * 1103515245u + 12345u) >> 16) % 500);
            if (i == 0) first[r] = id;
            snprintf(num, sizeof num, "%s%d", i ? ", " : "", id);
            strcat(ds, num);
        }
        strcat(ds, "]}\n");
        if (r == 9) {
            strcat(ds, "\n");
            line++;
        }
    }
    write_file("ds.jsonl", ds);
    snprintf(args, sizeof args,
             "profile --model %s --data %s/ds.jsonl --out %s/out --max-new-tokens 5 --ignore-eos --concurrency 6 "
             "--max-batch-tokens 64 --per-token", MODEL, g_dir, g_dir);
    int st = run_moetrace(args, out, sizeof out);
    if (st != 0) fail_msg("profile failed: %s", out);
    assert_null(strstr(out, "differ"));

    char path[256];
    mt_err err;
    snprintf(path, sizeof path, "%s/out/summary.json", g_dir);
    cJSON *sum = mt_json_load_file(path, &err);
    assert_non_null(sum);
    assert_int_equal(cJSON_GetObjectItem(sum, "requests")->valueint, 30);
    assert_int_equal(cJSON_GetObjectItem(sum, "generated_tokens")->valueint, 150);
    int forwarded = cJSON_GetObjectItem(sum, "tokens_forwarded")->valueint;
    cJSON *stat = mt_json_load_file(cJSON_GetObjectItem(sum, "stat_dump")->valuestring, &err);
    assert_non_null(stat);
    assert_string_equal(cJSON_GetObjectItem(stat, "format")->valuestring, "moetrace.expert_distribution.v1");
    cJSON *lc = cJSON_GetObjectItem(stat, "logical_count");
    assert_int_equal(cJSON_GetArraySize(lc), 4);
    int64_t stat_count[4][8];
    for (int l = 0; l < 4; l++) {
        int64_t row = 0;
        for (int e = 0; e < 8; e++) row += stat_count[l][e] = (int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(lc, l), e)->valuedouble;
        assert_int_equal(row, l == 1 ? 0 : 2 * forwarded); /* layer 1 is dense; top-2 */
    }
    /* per-token dump: counts derived from topk_ids equal the stat dump */
    const char *tok_index = cJSON_GetObjectItem(sum, "per_token_dump")->valuestring;
    char st_path[512];
    snprintf(st_path, sizeof st_path, "%.*s.safetensors", (int)(strlen(tok_index) - 5), tok_index);
    mt_checkpoint *ck;
    if (mt_checkpoint_open(&ck, st_path, &err)) fail_msg("%s", err.msg);
    const mt_tensor_info *ids = mt_checkpoint_find(ck, "topk_ids");
    assert_non_null(ids);
    assert_int_equal(ids->shape[0], forwarded);
    int64_t derived[4][8] = {{0}};
    const int32_t *v = ids->data;
    for (int64_t t = 0; t < ids->shape[0]; t++)
        for (int l = 0; l < 4; l++)
            for (int k = 0; k < 2; k++) {
                int32_t e = v[(t * 4 + l) * 2 + k];
                if (l == 1) assert_int_equal(e, -1);
                else derived[l][e]++;
            }
    assert_memory_equal(derived, stat_count, sizeof derived);
    cJSON *index = mt_json_load_file(tok_index, &err);
    assert_non_null(index);
    check_request_names(index, ck, names, first, 30);
    cJSON_Delete(index);
    mt_checkpoint_close(ck);
    snprintf(path, sizeof path, "%s/out/heatmap.png", g_dir);
    FILE *png = fopen(path, "rb");
    assert_non_null(png);
    fclose(png);
    cJSON_Delete(stat);
    cJSON_Delete(sum);
}

static void test_bad_datasets(void **state) {
    (void)state;
    if (!g_bin) skip();
    static const struct { const char *text, *needle; } cases[] = {
        {"{\"input_ids\": [1, 2]}\nnot json\n", "line 2"},
        {"{\"input_ids\": [1, -2]}\n", "line 1"},
        {"{\"input_ids\": [1, 99999]}\n", "99999"},
        {"{\"other\": 1}\n", "input_ids"},
        {"{\"prompt\": \"hi\"}\n", "tokenizer.json"},
        {"{\"input_ids\": [1]}\n{\"id\": 1.5, \"input_ids\": [1]}\n", "line 2: 'id' must be"},
        {"{\"rid\": \"\", \"input_ids\": [1]}\n", "'rid' must be a non-empty string or an integer"},
        {"\n\n", "no requests"},
        /* U+0000 would cut the string (cJSON's C strings): refused, not tokenized up to it */
        {"{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 2], \"note\": \"a\\u0000b\"}\n", "line 2: a string holds U+0000"},
        {"{\"prompt\": \"a\\u0000bcdefgh\"}\n", "U+0000"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[1024], out[8192];
        write_file("bad.jsonl", cases[i].text);
        snprintf(args, sizeof args, "profile --model %s --data %s/bad.jsonl --out %s/bad", MODEL, g_dir, g_dir);
        int st = run_moetrace(args, out, sizeof out);
        if (st == 0 || !strstr(out, cases[i].needle)) fail_msg("case %zu: exit %d, output '%s' lacks '%s'", i, st, out, cases[i].needle);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outputs_agree),
        cmocka_unit_test(test_bad_datasets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
