/* libFuzzer target for the safetensors reader: each input is written to a memfd and opened as a
 * single checkpoint file; on success every tensor is looked up by name and its bytes touched.
 * Build and run by hand (not part of the CMake build), from the repository root:
 *   clang -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -I src src/model/safetensors.c src/util/err.c src/util/dtype.c fuzz/fuzz_safetensors.c -lcjson -lm -o /tmp/fuzz_safetensors && /tmp/fuzz_safetensors -max_total_time=60 -max_len=4096
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
    if (fd < 0) abort();
    if (size && write(fd, data, size) != (ssize_t)size) abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    mt_checkpoint *ck = NULL;
    mt_err err = {{0}};
    if (mt_checkpoint_open(&ck, path, &err) == 0) {
        unsigned sum = 0;
        for (int i = 0; i < mt_checkpoint_count(ck); i++) {
            const mt_tensor_info *t = mt_checkpoint_at(ck, i);
            if (mt_checkpoint_find(ck, t->name) != t) abort();
            if (i > 0 && strcmp(mt_checkpoint_at(ck, i - 1)->name, t->name) >= 0) abort();
            const uint8_t *p = t->data;
            if (t->nbytes) sum += p[0] + p[t->nbytes - 1];
            if (t->supported && ((uintptr_t)p % mt_dtype_size(t->dtype))) abort();
        }
        if (sum == 12345678) fputc(' ', stderr); /* keep the reads */
        mt_checkpoint_close(ck);
    } else if (!err.msg[0] || !strstr(err.msg, path)) {
        abort(); /* every error on a single file must name it */
    }
    close(fd);
    return 0;
}
