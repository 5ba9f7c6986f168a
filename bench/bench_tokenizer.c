/* Single-thread encode throughput of moetrace's tokenizer on a few MB of mixed text, written to a
 * file so the `tokenizers` library can be timed on exactly the same documents in the same run
 * (tests/tokenizer/bench_tokenizers_lib.py):
 *
 *   build/bench_tokenizer --model DIR [--mb 3] [--text-out docs.txt] [--reps 3]
 *
 * The text: strings of the test corpus (tests/tokenizer/corpus.json: CJK, emoji, code, whitespace
 * runs, ...) drawn deterministically and joined into documents of about 4 KB; in the file the
 * documents are separated by NUL bytes. Each document is encoded without special tokens; the best
 * of --reps passes is reported. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "tokenizer/tokenizer.h"
#include "util/json_util.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    const char *model = NULL, *text_out = NULL;
    double mb = 3.0;
    int reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--mb")) mb = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--text-out")) text_out = argv[i + 1];
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    }
    if (!model) {
        fprintf(stderr, "usage: bench_tokenizer --model DIR [--mb 3] [--text-out F] [--reps 3]\n");
        return 2;
    }
    mt_err err;
    char *json = mt_read_file(MT_SOURCE_DIR "/tests/tokenizer/corpus.json", NULL, &err);
    cJSON *corpus = json ? cJSON_Parse(json) : NULL;
    if (!cJSON_IsArray(corpus)) {
        fprintf(stderr, "bench_tokenizer: cannot read tests/tokenizer/corpus.json\n");
        return 1;
    }
    int n_str = cJSON_GetArraySize(corpus);
    /* documents of ~4 KB of corpus strings joined by spaces, NUL-separated */
    size_t cap = (size_t)(mb * 1e6) + 8192, used = 0;
    char *text = malloc(cap);
    uint64_t r = 42;
    size_t doc_start = 0;
    int n_docs = 0;
    while (used < (size_t)(mb * 1e6)) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        const char *s = cJSON_GetArrayItem(corpus, (int)((r >> 33) % (uint64_t)n_str))->valuestring;
        size_t sl = strlen(s);
        if (used + sl + 2 >= cap) break;
        memcpy(text + used, s, sl);
        used += sl;
        text[used++] = ' ';
        if (used - doc_start >= 4096) {
            text[used++] = '\0';
            doc_start = used;
            n_docs++;
        }
    }
    text[used++] = '\0';
    n_docs++;
    if (text_out) {
        FILE *f = fopen(text_out, "wb");
        if (!f || fwrite(text, 1, used, f) != used) {
            fprintf(stderr, "bench_tokenizer: cannot write %s\n", text_out);
            return 1;
        }
        fclose(f);
    }
    mt_tokenizer *tok;
    if (mt_tokenizer_load(&tok, model, &err)) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
        return 1;
    }
    double best = 1e30;
    size_t tokens = 0;
    for (int rep = 0; rep < reps; rep++) {
        tokens = 0;
        double t0 = now_s();
        for (size_t at = 0; at < used;) {
            size_t dl = strlen(text + at);
            int32_t *ids = NULL;
            size_t n = 0;
            if (mt_tokenizer_encode(tok, text + at, dl, 0, &ids, &n, &err)) {
                fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
                return 1;
            }
            tokens += n;
            free(ids);
            at += dl + 1;
        }
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    double bytes = (double)(used - (size_t)n_docs);
    printf("{\"impl\": \"moetrace\", \"model\": \"%s\", \"mb\": %.3f, \"docs\": %d, \"tokens\": %zu, \"seconds\": %.4f, "
           "\"mb_per_s\": %.3f}\n",
           model, bytes / 1e6, n_docs, tokens, best, bytes / 1e6 / best);
    mt_tokenizer_free(tok);
    free(text);
    cJSON_Delete(corpus);
    free(json);
    return 0;
}
