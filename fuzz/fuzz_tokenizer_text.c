/* Fuzz target: encoding and decoding arbitrary text with the repository's tokenizers
 * (tests/tokenizer/{bl,sp,ms}: byte-level BPE, SentencePiece-style, and one with normalizers and
 * added tokens). The first byte picks the tokenizer and add_special_tokens; the rest is the text.
 * The same bytes, read as ids, are decoded too. */
#include "fuzz_tokenizer_check.h"

static const char *const NAMES[] = {"bl", "sp", "ms"};
#define NTOK (sizeof NAMES / sizeof *NAMES)
static mt_tokenizer *g_tok[NTOK];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    for (size_t i = 0; i < NTOK; i++) {
        char path[4096];
        mt_err err;
        snprintf(path, sizeof path, "%s/tests/tokenizer/%s", MT_SOURCE_DIR, NAMES[i]);
        if (mt_tokenizer_load(&g_tok[i], path, &err)) {
            fprintf(stderr, "fuzz_tokenizer_text: %s\n", err.msg);
            abort();
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    mt_tokenizer *tok = g_tok[data[0] % NTOK];
    int add_special = (data[0] / NTOK) & 1;
    fuzz_check_text(tok, (const char *)data + 1, size - 1, add_special);
    size_t n = (size - 1) / 2;
    int32_t *ids = malloc(n * sizeof *ids + 1);
    FUZZ_CHECK(ids != NULL);
    int32_t range = (int32_t)mt_tokenizer_vocab_size(tok) + 4;
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)((data[1 + 2 * i] | data[2 + 2 * i] << 8) % range) - 2;
    fuzz_check_decode(tok, ids, n, add_special);
    free(ids);
    return 0;
}
