/* moetrace profile end to end: outputs exist and agree with each other — the stat dump's counts
 * equal the counts derived from the per-token dump and the tokens forwarded; the per-token index
 * names requests by their records' "rid" / "id", else by line number; bad datasets give an error
 * naming the line. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "cli/dataset.h"
#include "model/safetensors.h"
#include "routing/stat_dump.h"
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

/* dir/name is a PNG file. */
static void assert_png(const char *dir, const char *name) {
    char path[256];
    unsigned char sig[8] = {0};
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: missing", path);
    size_t n = fread(sig, 1, sizeof sig, f);
    fclose(f);
    if (n != 8 || memcmp(sig, "\x89PNG\r\n\x1a\n", 8)) fail_msg("%s: not a PNG file", path);
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
    /* sized from the dataset: every prompt token and 5 new tokens a request (forwarded counts 4) */
    assert_int_equal((int)cJSON_GetObjectItem(index, "max_tokens")->valuedouble, forwarded + 30);
    assert_int_equal((int)cJSON_GetObjectItem(index, "dropped_tokens")->valuedouble, 0);
    cJSON_Delete(index);
    mt_checkpoint_close(ck);
    assert_png(g_dir, "out/heatmap.png");
    /* the per-token index reads as a dump (its counts are the stat dump's): report and eplb take it */
    snprintf(args, sizeof args, "report %s --out %s/out/per_token.png", tok_index, g_dir);
    if (run_moetrace(args, out, sizeof out)) fail_msg("report on the per-token index: %s", out);
    assert_png(g_dir, "out/per_token.png");
    snprintf(args, sizeof args, "eplb --counts %s --num-replicas 8 --num-gpus 4 --out %s/out/pt_placement.json",
             tok_index, g_dir);
    if (run_moetrace(args, out, sizeof out)) fail_msg("eplb on the per-token index: %s", out);
    cJSON_Delete(stat);
    cJSON_Delete(sum);
}

/* Lines of `ls PATTERN` (a shell glob). */
static int count_files(const char *pattern) {
    char cmd[512], out[64];
    snprintf(cmd, sizeof cmd, "ls %s 2>/dev/null | wc -l", pattern);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    int n = fgets(out, sizeof out, p) ? atoi(out) : -1;
    pclose(p);
    return n;
}

/* The documented commands on profile's folders: --per-token's dump has a folder of its own, so
 * DIR/expert_distribution_*.json is the stat dump alone (eplb and report do not count the window
 * twice, and refuse the index given with its stat dump); the index has no buffer_size; dumps name
 * the checkpoint folder however --model names it ("DIR/." and "DIR/"), so eplb sums two profiles of
 * one checkpoint; --out DIR/ joins without "//". */
static void test_per_token_layout(void **state) {
    (void)state;
    if (!g_bin) skip();
    char args[2048], out[8192], path[512];
    mt_err err;
    write_file("few.jsonl", "{\"input_ids\": [3, 4, 5, 6]}\n{\"input_ids\": [7, 8, 9]}\n");
    snprintf(args, sizeof args, "profile --model %s/. --data %s/few.jsonl --out %s/lay/ --max-new-tokens 3 --per-token",
             MODEL, g_dir, g_dir);
    int st = run_moetrace_stdout(args, out, sizeof out);
    if (st) fail_msg("profile: exit %d", st);
    snprintf(path, sizeof path, "%s/lay/summary.json\n", g_dir);
    assert_string_equal(out, path);
    snprintf(path, sizeof path, "%s/lay/summary.json", g_dir);
    cJSON *sum = mt_json_load_file(path, &err);
    assert_non_null(sum);
    const char *stat = cJSON_GetObjectItem(sum, "stat_dump")->valuestring;
    const char *index = cJSON_GetObjectItem(sum, "per_token_dump")->valuestring;
    snprintf(path, sizeof path, "%s/lay/expert_distribution_", g_dir);
    assert_memory_equal(stat, path, strlen(path));
    snprintf(path, sizeof path, "%s/lay/per_token/expert_distribution_", g_dir);
    assert_memory_equal(index, path, strlen(path));
    snprintf(path, sizeof path, "%s/lay/expert_distribution_*.json", g_dir);
    assert_int_equal(count_files(path), 1);
    snprintf(path, sizeof path, "%s/lay/per_token/expert_distribution_*.safetensors", g_dir);
    assert_int_equal(count_files(path), 1);
    cJSON *sj = mt_json_load_file(stat, &err), *ij = mt_json_load_file(index, &err);
    assert_true(sj && ij);
    assert_string_equal(cJSON_GetObjectItem(sj, "model")->valuestring, "qwen3_moe");
    assert_non_null(cJSON_GetObjectItem(sj, "buffer_size"));
    assert_null(cJSON_GetObjectItem(ij, "buffer_size")); /* the window of buffer_size is not per_token's */
    cJSON_Delete(sj);
    cJSON_Delete(ij);

    /* the same checkpoint as "DIR/": the README's eplb and report commands over both folders */
    snprintf(args, sizeof args, "profile --model %s/ --data %s/few.jsonl --out %s/lay2 --max-new-tokens 3", MODEL,
             g_dir, g_dir);
    if (run_moetrace(args, out, sizeof out)) fail_msg("profile: %s", out);
    snprintf(args, sizeof args, "eplb --counts %s/lay/expert_distribution_*.json %s/lay2/expert_distribution_*.json "
             "--num-replicas 8 --num-gpus 4 --out %s/lay/placement.json", g_dir, g_dir, g_dir);
    if (run_moetrace(args, out, sizeof out)) fail_msg("eplb over two profiles of one checkpoint: %s", out);
    snprintf(args, sizeof args, "report %s/lay/expert_distribution_*.json --out %s/lay/load.png", g_dir, g_dir);
    if (run_moetrace(args, out, sizeof out)) fail_msg("report: %s", out);
    assert_png(g_dir, "lay/load.png");

    /* the index with the stat dump of its window: refused, naming the index */
    snprintf(args, sizeof args, "eplb --counts %s %s --num-replicas 8 --num-gpus 4 --out %s/lay/twice.json", stat,
             index, g_dir);
    assert_int_equal(run_moetrace(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "is a per_token index and"));
    snprintf(args, sizeof args, "report %s %s --out %s/lay/twice.png", stat, index, g_dir);
    assert_int_equal(run_moetrace(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "is a per_token index and"));
    cJSON_Delete(sum);
}

/* The placement log says "one replica each", not "up to 1 replicas". */
static void test_placement_log(void **state) {
    (void)state;
    if (!g_bin) skip();
    char args[2048], out[8192];
    write_file("one.jsonl", "{\"input_ids\": [3, 4, 5]}\n");
    snprintf(args, sizeof args, "profile --model %s --data %s/one.jsonl --out %s/plc --max-new-tokens 1 --ep-size 8",
             MODEL, g_dir, g_dir);
    if (run_moetrace(args, out, sizeof out)) fail_msg("profile: %s", out);
    assert_non_null(strstr(out, "8 physical slots on 8 GPUs (1 per GPU), one replica each"));
}

/* --domain-field: each domain's stat dump holds exactly its requests' tokens, as the per-token dump
 * (the other channel) tells them apart; domains.json and the picture are written; labels that map
 * to the same folder name get distinct folders; a domain's dump is a stat dump other commands take. */
static void test_domains(void **state) {
    (void)state;
    if (!g_bin) skip();
    static const char *const labels[] = {"code", "math", "prose / chat", "7", NULL, "prose _ chat"};
    enum { N = 24, D = 5 };
    char ds[16384] = "", out[65536], args[1024];
    unsigned s = 11;
    for (int r = 0; r < N; r++) {
        const char *lab = labels[r % 6];
        char rec[1024];
        int n = snprintf(rec, sizeof rec, "{\"rid\": \"r%d\", ", r);
        if (lab && r % 6 == 3) n += snprintf(rec + n, sizeof rec - n, "\"topic\": 7, "); /* an integer label */
        else if (lab) n += snprintf(rec + n, sizeof rec - n, "\"topic\": \"%s\", ", lab);
        n += snprintf(rec + n, sizeof rec - n, "\"input_ids\": [");
        int len = 1 + (int)((s = s * 1103515245u + 12345u) >> 16) % 40;
        for (int i = 0; i < len; i++)
            n += snprintf(rec + n, sizeof rec - n, "%s%d", i ? ", " : "", 3 + (int)(((s = s * 1103515245u + 12345u) >> 16) % 500));
        snprintf(rec + n, sizeof rec - n, "]}\n");
        strcat(ds, rec);
    }
    write_file("domains.jsonl", ds);
    snprintf(args, sizeof args,
             "profile --model %s --data %s/domains.jsonl --out %s/dom --max-new-tokens 4 --ignore-eos --concurrency 5 "
             "--max-batch-tokens 48 --per-token --domain-field topic --ep-size 4", MODEL, g_dir, g_dir);
    int st = run_moetrace(args, out, sizeof out);
    if (st != 0) fail_msg("profile failed: %s", out);

    char path[256];
    mt_err err;
    snprintf(path, sizeof path, "%s/dom/summary.json", g_dir);
    cJSON *sum = mt_json_load_file(path, &err);
    assert_non_null(sum);
    cJSON *dj = mt_json_load_file(cJSON_GetObjectItem(sum, "domain_usage")->valuestring, &err);
    assert_non_null(dj);
    assert_string_equal(cJSON_GetObjectItem(dj, "format")->valuestring, "moetrace.domain_usage.v1");
    assert_string_equal(cJSON_GetObjectItem(dj, "field")->valuestring, "topic");
    assert_int_equal(cJSON_GetObjectItem(dj, "unlabelled_requests")->valueint, N / 6);
    cJSON *doms = cJSON_GetObjectItem(dj, "domains");
    assert_int_equal(cJSON_GetArraySize(doms), D);

    /* expected counts per domain from the per-token dump: request name r<i> has labels[i % 6] */
    const char *tok_index = cJSON_GetObjectItem(sum, "per_token_dump")->valuestring;
    char st_path[512];
    snprintf(st_path, sizeof st_path, "%.*s.safetensors", (int)(strlen(tok_index) - 5), tok_index);
    mt_checkpoint *ck;
    if (mt_checkpoint_open(&ck, st_path, &err)) fail_msg("%s", err.msg);
    cJSON *index = mt_json_load_file(tok_index, &err);
    assert_non_null(index);
    const mt_tensor_info *ids = mt_checkpoint_find(ck, "topk_ids"), *req = mt_checkpoint_find(ck, "request_index");
    int64_t want[6][4][8] = {{{0}}}, tokens[6] = {0};
    for (int64_t t = 0; t < ids->shape[0]; t++) {
        int64_t ri;
        memcpy(&ri, (const char *)req->data + t * 8, 8);
        int r = atoi(cJSON_GetArrayItem(cJSON_GetObjectItem(index, "request_ids"), (int)ri)->valuestring + 1);
        int lab = r % 6;
        tokens[lab]++;
        /* the index names each request's domain (null: no label) */
        const cJSON *dom = cJSON_GetArrayItem(cJSON_GetObjectItem(index, "request_domains"), (int)ri);
        if (labels[lab]) assert_true(cJSON_IsString(dom) && !strcmp(dom->valuestring, labels[lab]));
        else assert_true(cJSON_IsNull(dom));
        for (int l = 0; l < 4; l++)
            for (int k = 0; k < 2; k++) {
                int32_t e = ((const int32_t *)ids->data)[(t * 4 + l) * 2 + k];
                if (e >= 0) want[lab][l][e]++;
            }
    }
    static const int order[D] = {0, 1, 2, 3, 5}; /* first appearance; label 4 is "no label" */
    static const char *const folders[D] = {"code", "math", "prose___chat", "7", "prose___chat-2"};
    for (int g = 0; g < D; g++) {
        cJSON *d = cJSON_GetArrayItem(doms, g);
        int lab = order[g];
        assert_string_equal(cJSON_GetObjectItem(d, "name")->valuestring, labels[lab]);
        assert_int_equal(cJSON_GetObjectItem(d, "requests")->valueint, N / 6);
        assert_int_equal(cJSON_GetObjectItem(d, "tokens")->valueint, (int)tokens[lab]);
        const char *dump = cJSON_GetObjectItem(d, "stat_dump")->valuestring;
        char folder[128];
        snprintf(folder, sizeof folder, "/domains/%s/expert_distribution_", folders[g]);
        if (!strstr(dump, folder)) fail_msg("domain %d's dump %s is not under %s", g, dump, folder);
        mt_stat_dump sd;
        if (mt_stat_dump_load(dump, &sd, &err)) fail_msg("%s", err.msg);
        assert_int_equal(sd.num_tokens, tokens[lab]);
        assert_non_null(sd.phys_count); /* recorded under the run's placement, as the whole run's dump */
        for (int i = 0; i < sd.num_moe_layers; i++)
            for (int e = 0; e < 8; e++)
                assert_int_equal(sd.moe_count[(size_t)i * 8 + e], want[lab][sd.moe_layers[i]][e]);
        mt_stat_dump_free(&sd);
        cJSON *div = cJSON_GetObjectItem(d, "divergence_mean");
        assert_true(cJSON_IsNumber(div) && div->valuedouble >= 0 && div->valuedouble <= 1);
        if (g == 0) { /* other commands take a domain's dump */
            snprintf(args, sizeof args, "report %s --out %s/dom/code.svg", dump, g_dir);
            if (run_moetrace(args, out, sizeof out)) fail_msg("report: %s", out);
            snprintf(args, sizeof args, "eplb --counts %s --num-replicas 12 --num-gpus 4 --out %s/dom/code_plc.json", dump, g_dir);
            if (run_moetrace(args, out, sizeof out)) fail_msg("eplb: %s", out);
        }
    }
    assert_png(g_dir, "dom/domains.png");
    cJSON_Delete(index);
    mt_checkpoint_close(ck);
    cJSON_Delete(dj);
    cJSON_Delete(sum);
}

/* Two records with the same prompt under two labels: each domain counts all of its tokens (the
 * prefix cache is off with --domain-field; with it on, the second would forward almost none). */
/* Two records of one 57-token prompt, labelled topic "a" and "b" when labelled. */
static void write_shared_prompt(const char *name, bool labelled) {
    char ids[1024] = "", ds[4096];
    for (int i = 0; i < 57; i++) snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%d", i ? ", " : "", 5 + i * 7);
    snprintf(ds, sizeof ds, "{%s\"input_ids\": [%s]}\n{%s\"input_ids\": [%s]}\n", labelled ? "\"topic\": \"a\", " : "",
             ids, labelled ? "\"topic\": \"b\", " : "", ids);
    write_file(name, ds);
}

static void test_domains_shared_prompt(void **state) {
    (void)state;
    if (!g_bin) skip();
    char out[65536], args[1024];
    write_shared_prompt("shared.jsonl", true);
    snprintf(args, sizeof args, "profile --model %s --data %s/shared.jsonl --out %s/shared --max-new-tokens 1 "
             "--concurrency 1 --domain-field topic", MODEL, g_dir, g_dir);
    int st = run_moetrace(args, out, sizeof out);
    if (st != 0) fail_msg("profile failed: %s", out);
    char path[256];
    mt_err err;
    snprintf(path, sizeof path, "%s/shared/domains.json", g_dir);
    cJSON *dj = mt_json_load_file(path, &err);
    assert_non_null(dj);
    const cJSON *doms = cJSON_GetObjectItem(dj, "domains");
    mt_stat_dump d[2];
    for (int g = 0; g < 2; g++) {
        const cJSON *dom = cJSON_GetArrayItem(doms, g);
        assert_int_equal(cJSON_GetObjectItem(dom, "tokens")->valueint, 57); /* P + G - 1 */
        if (mt_stat_dump_load(cJSON_GetObjectItem(dom, "stat_dump")->valuestring, &d[g], &err)) fail_msg("%s", err.msg);
    }
    assert_memory_equal(d[0].moe_count, d[1].moe_count, (size_t)d[0].num_moe_layers * d[0].num_experts * sizeof(int64_t));
    mt_stat_dump_free(&d[0]);
    mt_stat_dump_free(&d[1]);
    cJSON_Delete(dj);

    /* labels that differ only in case get distinct folders (one folder on case-blind file systems) */
    write_file("case.jsonl", "{\"topic\": \"Code\", \"input_ids\": [5, 6]}\n{\"topic\": \"code\", \"input_ids\": [7, 8]}\n");
    snprintf(args, sizeof args, "profile --model %s --data %s/case.jsonl --out %s/case --max-new-tokens 1 --domain-field topic",
             MODEL, g_dir, g_dir);
    st = run_moetrace(args, out, sizeof out);
    if (st != 0) fail_msg("profile failed: %s", out);
    snprintf(path, sizeof path, "%s/case/domains.json", g_dir);
    dj = mt_json_load_file(path, &err);
    assert_non_null(dj);
    const char *dump1 = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(dj, "domains"), 1), "stat_dump")->valuestring;
    if (!strstr(dump1, "/domains/code-2/")) fail_msg("the second label's dump is %s", dump1);
    cJSON_Delete(dj);
}

/* Records sharing a prompt with the prefix cache on: the second takes the first's blocks, so the
 * per-request routing holds rows the recorder counted once. No false warning, and the log says why
 * the two are not compared. */
static void test_prefix_hits_not_compared(void **state) {
    (void)state;
    if (!g_bin) skip();
    char out[65536], args[1024];
    write_shared_prompt("hits.jsonl", false);
    snprintf(args, sizeof args, "profile --model %s --data %s/hits.jsonl --out %s/hits --max-new-tokens 2 "
             "--concurrency 1", MODEL, g_dir, g_dir);
    int st = run_moetrace(args, out, sizeof out);
    if (st != 0) fail_msg("profile failed: %s", out);
    if (strstr(out, "differ")) fail_msg("a false warning: %s", out);
    if (!strstr(out, "48 prompt tokens came from the prefix cache")) fail_msg("no reason given: %s", out);
}

/* Shannon entropy in bits of counts c[0..n). */
static double entropy_of(const double *c, int n) {
    double total = 0, h = 0;
    for (int e = 0; e < n; e++) total += c[e];
    for (int e = 0; e < n; e++)
        if (c[e] > 0) h -= c[e] / total * log2(c[e] / total);
    return h;
}

/* Records sharing a 40-token prefix (a system prompt), the prefix cache on: summary.json's
 * balancedness and routing entropy are the stat dump's, counted as forwarded (the cached prefix
 * once), not from each request's routing (the prefix once per request); dense layers are null. */
static void test_summary_matches_dump(void **state) {
    (void)state;
    if (!g_bin) skip();
    char ds[8192] = "", out[65536], args[1024];
    for (int r = 0; r < 8; r++) {
        strcat(ds, "{\"input_ids\": [");
        for (int i = 0; i < 40; i++) snprintf(ds + strlen(ds), sizeof ds - strlen(ds), "%s%d", i ? ", " : "", 11 + i * 5);
        for (int i = 0; i < 6; i++) snprintf(ds + strlen(ds), sizeof ds - strlen(ds), ", %d", 300 + r * 17 + i * 3);
        strcat(ds, "]}\n");
    }
    write_file("prefix.jsonl", ds);
    snprintf(args, sizeof args, "profile --model %s --data %s/prefix.jsonl --out %s/prefix --max-new-tokens 4 "
             "--ignore-eos --concurrency 2 --max-batch-tokens 32", MODEL, g_dir, g_dir);
    if (run_moetrace(args, out, sizeof out)) fail_msg("profile failed: %s", out);
    char path[256];
    mt_err err;
    snprintf(path, sizeof path, "%s/prefix/summary.json", g_dir);
    cJSON *sum = mt_json_load_file(path, &err);
    assert_non_null(sum);
    assert_true(cJSON_GetObjectItem(sum, "prompt_tokens_from_prefix_cache")->valueint > 0); /* the cache hit */
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(sum, "interrupted")));
    assert_int_equal(cJSON_GetObjectItem(sum, "requests_cancelled")->valueint, 0);
    cJSON *dump = mt_json_load_file(cJSON_GetObjectItem(sum, "stat_dump")->valuestring, &err);
    assert_non_null(dump);
    const cJSON *bal = cJSON_GetObjectItem(sum, "balancedness_per_layer"), *ent = cJSON_GetObjectItem(sum, "routing_entropy_per_layer");
    const cJSON *dump_bal = cJSON_GetObjectItem(cJSON_GetObjectItem(dump, "balancedness"), "per_layer");
    const cJSON *moe = cJSON_GetObjectItem(dump, "moe_layers"), *lc = cJSON_GetObjectItem(dump, "logical_count");
    assert_int_equal(cJSON_GetArraySize(bal), 4);
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(bal, 1)) && cJSON_IsNull(cJSON_GetArrayItem(ent, 1)));
    for (int m = 0; m < cJSON_GetArraySize(moe); m++) {
        int l = cJSON_GetArrayItem(moe, m)->valueint;
        double b = cJSON_GetArrayItem(bal, l)->valuedouble, want = cJSON_GetArrayItem(dump_bal, m)->valuedouble;
        if (b != want) fail_msg("layer %d: summary balancedness %.17g, the stat dump's %.17g", l, b, want);
        double c[8];
        for (int e = 0; e < 8; e++) c[e] = cJSON_GetArrayItem(cJSON_GetArrayItem(lc, l), e)->valuedouble;
        double h = cJSON_GetArrayItem(ent, l)->valuedouble;
        if (fabs(h - entropy_of(c, 8)) > 1e-12) fail_msg("layer %d: summary entropy %.17g, the dump's counts' %.17g", l, h, entropy_of(c, 8));
    }
    double mean = cJSON_GetObjectItem(sum, "balancedness_mean")->valuedouble;
    double want_mean = cJSON_GetObjectItem(cJSON_GetObjectItem(dump, "balancedness"), "mean")->valuedouble;
    if (mean != want_mean) fail_msg("summary balancedness_mean %.17g, the stat dump's %.17g", mean, want_mean);
    cJSON_Delete(dump);
    cJSON_Delete(sum);
}

static void test_bad_domains(void **state) {
    (void)state;
    if (!g_bin) skip();
    static const struct { const char *text, *flag, *needle; } cases[] = {
        {"{\"input_ids\": [1, 2]}\n", "--domain-field topic", "--domain-field topic: no line of"},
        {"{\"input_ids\": [1], \"topic\": \"a\"}\n{\"input_ids\": [1], \"topic\": [1]}\n", "--domain-field topic",
         "line 2: 'topic' must be a non-empty string or an integer"},
        {"{\"input_ids\": [1], \"topic\": \"\"}\n", "--domain-field topic", "line 1: 'topic' must be"},
        {"{\"input_ids\": [1]}\n", "--domain-field ''", "--domain-field: empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[1024], out[8192];
        write_file("bad.jsonl", cases[i].text);
        snprintf(args, sizeof args, "profile --model %s --data %s/bad.jsonl --out %s/bad %s --max-new-tokens 1", MODEL,
                 g_dir, g_dir, cases[i].flag);
        int st = run_moetrace(args, out, sizeof out);
        if (st == 0 || !strstr(out, cases[i].needle)) fail_msg("case %zu: exit %d, output '%s' lacks '%s'", i, st, out, cases[i].needle);
    }
    /* a domain's folder taken by a file: refused before the run, not after it (no dump written) */
    char args[1024], out[8192], path[512];
    snprintf(path, sizeof path, "%s/taken", g_dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/taken/domains", g_dir);
    assert_int_equal(mkdir(path, 0755), 0);
    write_file("taken/domains/a", "");
    write_file("bad.jsonl", "{\"input_ids\": [1, 2], \"topic\": \"a\"}\n");
    snprintf(args, sizeof args, "profile --model %s --data %s/bad.jsonl --out %s/taken --domain-field topic --max-new-tokens 1",
             MODEL, g_dir, g_dir);
    int st = run_moetrace(args, out, sizeof out);
    if (st == 0 || !strstr(out, "domains/a: not a folder")) fail_msg("exit %d, output '%s'", st, out);
    snprintf(args, sizeof args, "ls %s/taken/expert_distribution_*.json >/dev/null 2>&1", g_dir);
    assert_int_not_equal(system(args), 0);
}

/* A dataset of n records, record i labelled "l<i % labels>". */
static void write_labelled(int n, int labels) {
    static char text[65536];
    text[0] = 0;
    for (int i = 0; i < n; i++) {
        char rec[128];
        snprintf(rec, sizeof rec, "{\"input_ids\": [%d, 4], \"topic\": \"l%d\"}\n", 3 + i % 100, i % labels);
        strcat(text, rec);
    }
    write_file("many.jsonl", text);
}

/* Past 32 domains the picture is left out (and said so), the numbers still written; past 256 labels,
 * an error; one label for every record: no rest to diverge from. */
static void test_many_domains(void **state) {
    (void)state;
    if (!g_bin) skip();
    char args[1024], out[8192], path[256];
    mt_err err;
    write_labelled(33, 33);
    // an earlier run's picture in the folder goes: it would contradict this run's domains.json
    snprintf(path, sizeof path, "%s/many", g_dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/many/domains.png", g_dir);
    FILE *stale = fopen(path, "w");
    assert_non_null(stale);
    fclose(stale);
    snprintf(args, sizeof args, "profile --model %s --data %s/many.jsonl --out %s/many --domain-field topic --max-new-tokens 1",
             MODEL, g_dir, g_dir);
    if (run_moetrace(args, out, sizeof out)) fail_msg("profile: %s", out);
    assert_non_null(strstr(out, "33 domains: domains.png draws at most 32, so it is not drawn"));
    assert_non_null(strstr(out, "an earlier run's picture"));
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof path, "%s/many/domains.json", g_dir);
    cJSON *dj = mt_json_load_file(path, &err);
    assert_non_null(dj);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(dj, "domains")), 33);
    cJSON_Delete(dj);

    write_labelled(257, 257);
    snprintf(args, sizeof args, "profile --model %s --data %s/many.jsonl --out %s/many2 --domain-field topic --max-new-tokens 1",
             MODEL, g_dir, g_dir);
    assert_int_not_equal(run_moetrace(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "many.jsonl has more than 256 distinct values"));

    write_labelled(4, 1);
    snprintf(args, sizeof args, "profile --model %s --data %s/many.jsonl --out %s/one --domain-field topic --max-new-tokens 1",
             MODEL, g_dir, g_dir);
    if (run_moetrace(args, out, sizeof out)) fail_msg("profile: %s", out);
    snprintf(path, sizeof path, "%s/one/domains.json", g_dir);
    dj = mt_json_load_file(path, &err);
    assert_non_null(dj);
    const cJSON *d = cJSON_GetArrayItem(cJSON_GetObjectItem(dj, "domains"), 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(d, "divergence_mean")));
    const cJSON *layer;
    cJSON_ArrayForEach(layer, cJSON_GetObjectItem(d, "distinctive_experts_per_layer"))
        assert_true(cJSON_IsNull(layer) || cJSON_GetArraySize(layer) == 0);
    cJSON_Delete(dj);
    assert_png(g_dir, "one/domains.png");
}

/* A record's "prompt" holding U+0000 is encoded whole, NUL bytes and all (it was refused; before
 * that, cut at the NUL), and its "messages" reach the chat template with it. In-process, with a
 * tokenizer (the model above has none). */
static void test_prompt_with_nul(void **state) {
    (void)state;
    mt_text_tools tools = {.model_dir = MT_SOURCE_DIR "/tests/tokenizer/ms"};
    mt_err err;
    mt_dataset_record r;
    const char line[] = "{\"prompt\": \"a\\u0000bc\\u0000\", \"rid\": \"x\"}";
    if (mt_dataset_line(&tools, line, sizeof line - 1, NULL, &r, &err)) fail_msg("%s", err.msg);
    int32_t *ids;
    size_t n;
    if (mt_tokenizer_encode(tools.tok, "a\0bc\0", 5, 1, &ids, &n, &err)) fail_msg("%s", err.msg);
    assert_int_equal(r.n, n);
    assert_memory_equal(r.ids, ids, n * sizeof *ids);
    assert_string_equal(r.name, "x");
    free(ids);
    free(r.ids);
    free(r.name);
    if (mt_chat_template_from_string(&tools.tpl, "{{ messages[0].content | length }}{{ messages[0].content }}", NULL,
                                     NULL, &err))
        fail_msg("%s", err.msg);
    const char chat[] = "{\"messages\": [{\"role\": \"user\", \"content\": \"\\u0000z\"}]}";
    if (mt_dataset_line(&tools, chat, sizeof chat - 1, NULL, &r, &err)) fail_msg("%s", err.msg);
    if (mt_tokenizer_encode(tools.tok, "2\0z", 3, 0, &ids, &n, &err)) fail_msg("%s", err.msg);
    assert_int_equal(r.n, n);
    assert_memory_equal(r.ids, ids, n * sizeof *ids);
    free(ids);
    free(r.ids);
    mt_chat_template_free(tools.tpl);
    mt_tokenizer_free(tools.tok);
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
        /* U+0000 outside "prompt" would cut the string (cJSON's C strings): refused */
        {"{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 2], \"note\": \"a\\u0000b\"}\n",
         "line 2: 'note' holds U+0000, which moetrace reads only in 'prompt'"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\\u0000b\"}], \"tools\": [{\"x\": \"\\u0000\"}]}\n",
         "line 1: 'x' holds U+0000, which moetrace reads only in 'messages'"},
        {"{\"input_ids\": [1], \"\\u0000\": 1}\n", "line 1: a member name holds U+0000"},
        {"{\"input_ids\": [1], \"rid\": \"\\u0000\xff\"}\n", "line 1: not valid UTF-8 (byte 33)"},
        {"{\"prompt\": \"a\\u0000b\", \"rid\": \"\\u0000\"}\n", "line 1: 'rid' holds U+0000"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[1024], out[8192];
        write_file("bad.jsonl", cases[i].text);
        snprintf(args, sizeof args, "profile --model %s --data %s/bad.jsonl --out %s/bad", MODEL, g_dir, g_dir);
        int st = run_moetrace(args, out, sizeof out);
        if (st == 0 || !strstr(out, cases[i].needle)) fail_msg("case %zu: exit %d, output '%s' lacks '%s'", i, st, out, cases[i].needle);
    }
    /* a request the engine refuses (its prompt and new tokens exceed the context of 512) is named by
     * its line in the file, blank lines counted, as every other error and the default request names
     * count them (was: its index among the records, "line 2") */
    char args[1024], out[8192];
    static char longer[8192];
    snprintf(longer, sizeof longer, "{\"input_ids\": [1]}\n\n\n{\"input_ids\": [");
    for (int i = 0; i < 600; i++) strcat(longer, i ? ", 5" : "5");
    strcat(longer, "]}\n");
    write_file("long.jsonl", longer);
    snprintf(args, sizeof args, "profile --model %s --data %s/long.jsonl --out %s/bad --max-new-tokens 2", MODEL, g_dir,
             g_dir);
    assert_int_not_equal(run_moetrace(args, out, sizeof out), 0);
    if (!strstr(out, "long.jsonl line 4: ") || !strstr(out, "exceed the model's context"))
        fail_msg("output '%s' does not name line 4", out);
    /* --out naming a file: refused before the dataset runs (it failed when the dump was written) */
    write_file("good.jsonl", "{\"input_ids\": [1, 2]}\n");
    write_file("a_file", "x");
    snprintf(args, sizeof args, "profile --model %s --data %s/good.jsonl --out %s/a_file", MODEL, g_dir, g_dir);
    assert_int_not_equal(run_moetrace(args, out, sizeof out), 0);
    if (!strstr(out, "exists and is not a folder")) fail_msg("output '%s'", out);
    /* a new folder, named with a trailing slash as users type it, is created */
    snprintf(args, sizeof args, "profile --model %s --data %s/good.jsonl --out %s/new_out/ --max-new-tokens 1", MODEL, g_dir,
             g_dir);
    if (run_moetrace(args, out, sizeof out)) fail_msg("--out with a trailing slash: %s", out);
    char summary[512];
    snprintf(summary, sizeof summary, "%s/new_out/summary.json", g_dir);
    assert_int_equal(access(summary, F_OK), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outputs_agree),
        cmocka_unit_test(test_bad_datasets),
        cmocka_unit_test(test_prompt_with_nul),
        cmocka_unit_test(test_domains),
        cmocka_unit_test(test_domains_shared_prompt),
        cmocka_unit_test(test_prefix_hits_not_compared),
        cmocka_unit_test(test_summary_matches_dump),
        cmocka_unit_test(test_bad_domains),
        cmocka_unit_test(test_many_domains),
        cmocka_unit_test(test_per_token_layout),
        cmocka_unit_test(test_placement_log),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
