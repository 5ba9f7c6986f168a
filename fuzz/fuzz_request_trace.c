/* Fuzz target: the per-request trace reader of `moetrace report INDEX.json --request RID`
 * (report/request_trace.c), over both files a user passes around. The input is the dump's JSON
 * index, a NUL byte, then the bytes of its safetensors file (no NUL: the index alone, its tensors
 * missing); both are written into a scratch folder, the tensors as the file the seeds' index names
 * ("t.safetensors"). Request "1" is traced. A trace that loads has top_k in 1 .. num_experts, rows
 * in strictly ascending positions inside a context, and gaps that are exactly the positions below
 * the last row without one; its JSON is written when it stays small. Every error names the index or
 * its tensors file. */
#include <limits.h>

#include "fuzz_util.h"
#include "report/request_trace.h"

static char g_dir[64], g_index[128], g_tensors[128], g_json[128];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    snprintf(g_dir, sizeof g_dir, "/tmp/fuzz_request_trace.XXXXXX");
    if (!mkdtemp(g_dir)) abort();
    snprintf(g_index, sizeof g_index, "%s/index.json", g_dir);
    snprintf(g_tensors, sizeof g_tensors, "%s/t.safetensors", g_dir);
    snprintf(g_json, sizeof g_json, "%s/trace.json", g_dir);
    return 0;
}

static void write_file(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f)) abort();
}

static void check(const mt_request_trace *t) {
    FUZZ_CHECK(t->num_hidden_layers > 0 && t->num_experts > 0);
    FUZZ_CHECK(t->top_k >= 1 && t->top_k <= t->num_experts);
    FUZZ_CHECK(t->num_moe_layers >= 1 && t->num_moe_layers <= t->num_hidden_layers);
    FUZZ_CHECK(t->same_id >= 1 && t->request_index >= 0 && t->dropped_tokens >= 0);
    for (int m = 0; m < t->num_moe_layers; m++) FUZZ_CHECK(t->layer_is_moe[t->moe_layers[m]]);
    for (int64_t i = 0; i < t->n; i++) {
        FUZZ_CHECK(t->position[i] >= 0 && t->position[i] < (1 << 26));
        FUZZ_CHECK(i == 0 || t->position[i] > t->position[i - 1]);
    }
    int64_t covered = t->n + mt_request_trace_missing_count(t);
    FUZZ_CHECK(covered == (t->n ? (int64_t)t->position[t->n - 1] + 1 : 0));
    for (int64_t g = 0; g < t->n_gaps; g++) {
        FUZZ_CHECK(t->gap_first[g] <= t->gap_last[g]);
        FUZZ_CHECK(g == 0 || t->gap_first[g] > t->gap_last[g - 1] + 1);
    }
    /* the experts are read as the dump holds them: every cell is there to read */
    int64_t sum = 0;
    size_t cells = (size_t)t->n * (size_t)t->num_hidden_layers * (size_t)t->top_k;
    for (size_t c = 0; c < cells; c++) sum += t->experts[c];
    if (sum == INT64_MIN) fputc(' ', stderr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t index_len = nul ? (size_t)(nul - data) : size;
    write_file(g_index, data, index_len);
    if (nul) write_file(g_tensors, nul + 1, size - index_len - 1);
    else unlink(g_tensors);
    mt_request_trace t;
    mt_err err = {{0}};
    if (mt_request_trace_load(g_index, "1", &t, &err) == 0) {
        check(&t);
        if (t.n * (int64_t)t.num_hidden_layers * t.top_k + mt_request_trace_missing_count(&t) < 100000) {
            if (mt_request_trace_write_json(&t, g_json, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                abort();
            }
        }
        mt_request_trace_free(&t);
    } else {
        FUZZ_CHECK(strstr(err.msg, g_index) || strstr(err.msg, g_tensors));
    }
    return 0;
}
