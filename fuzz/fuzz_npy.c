/* Fuzz target: the .npy reader (util/npy.c). An array that loads has a shape whose product is its
 * element count, and that many elements of data. */
#include "fuzz_util.h"
#include "util/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    mt_npy a;
    mt_err err = {{0}};
    if (mt_npy_read(path, &a, &err) == 0) {
        FUZZ_CHECK(a.ndim >= 0 && a.ndim <= 8);
        int64_t count = 1;
        for (int i = 0; i < a.ndim; i++) {
            FUZZ_CHECK(a.shape[i] >= 0);
            count *= a.shape[i];
        }
        FUZZ_CHECK(count == a.count && (size_t)a.count * 4 <= size);
        const uint8_t *p = a.data;
        unsigned sum = 0;
        for (int64_t i = 0; i < a.count * 4; i++) sum += p[i];
        if (sum == 12345678) fputc(' ', stderr); /* keep the reads */
        mt_npy_free(&a);
    } else {
        FUZZ_CHECK(err.msg[0] && strstr(err.msg, path));
    }
    close(fd);
    return 0;
}
