/* Fuzz target: loading tokenizer.json (tokenizer/load.c), then using what loaded: a few texts
 * encoded and decoded, every id of the vocabulary decoded. */
#include "fuzz_tokenizer_check.h"

static const char *const TEXTS[] = {
    "Hello world", "  leading and trailing  ", "héllo wörld 日本語 🙂", "12345 67", "a\nb\tc\r\n", "<s></s><unk>",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    mt_tokenizer *tok = NULL;
    mt_err err = {{0}};
    if (mt_tokenizer_load(&tok, path, &err) == 0) {
        for (size_t i = 0; i < sizeof TEXTS / sizeof *TEXTS; i++)
            for (int add = 0; add < 2; add++) fuzz_check_text(tok, TEXTS[i], strlen(TEXTS[i]), add);
        size_t vocab = mt_tokenizer_vocab_size(tok);
        size_t n = vocab < 4096 ? vocab + 2 : 4096;
        int32_t *ids = malloc(n * sizeof *ids + 1);
        FUZZ_CHECK(ids != NULL);
        for (size_t i = 0; i < n; i++) ids[i] = (int32_t)i - 1; /* -1 and vocab: unknown ids */
        fuzz_check_decode(tok, ids, n, 0);
        fuzz_check_decode(tok, ids, n, 1);
        for (size_t i = 0; i < n; i++) {
            const char *t = mt_tokenizer_id_to_token(tok, ids[i]);
            if (t) (void)mt_tokenizer_token_to_id(tok, t);
            (void)mt_tokenizer_is_special(tok, ids[i]);
        }
        free(ids);
        mt_tokenizer_free(tok);
    } else {
        FUZZ_CHECK(err.msg[0] != '\0');
    }
    close(fd);
    return 0;
}
