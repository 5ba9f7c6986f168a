/* Fuzz target: the safetensors reader (model/safetensors.c). Each input is one checkpoint file; on
 * success every tensor is found again by name, names are sorted, and its first and last bytes are
 * read; every error on a single file names it. fuzz/run.sh builds and runs it. */
#include "fuzz_util.h"
#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    mt_checkpoint *ck = NULL;
    mt_err err = {{0}};
    if (mt_checkpoint_open(&ck, path, &err) == 0) {
        unsigned sum = 0;
        for (int i = 0; i < mt_checkpoint_count(ck); i++) {
            const mt_tensor_info *t = mt_checkpoint_at(ck, i);
            FUZZ_CHECK(mt_checkpoint_find(ck, t->name) == t);
            FUZZ_CHECK(i == 0 || strcmp(mt_checkpoint_at(ck, i - 1)->name, t->name) < 0);
            const uint8_t *p = t->data;
            if (t->nbytes) sum += p[0] + p[t->nbytes - 1];
            FUZZ_CHECK(!t->supported || (uintptr_t)p % mt_dtype_size(t->dtype) == 0);
        }
        if (sum == 12345678) fputc(' ', stderr); /* keep the reads */
        mt_checkpoint_close(ck);
    } else {
        FUZZ_CHECK(err.msg[0] && strstr(err.msg, path));
    }
    close(fd);
    return 0;
}
