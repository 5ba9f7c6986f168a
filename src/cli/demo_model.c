/* The embedded demo checkpoint (demo_model.h). The files are included byte for byte by the
 * assembler (.incbin) from MT_DEMO_MODEL_DIR, which the build sets to assets/demo-model; the build
 * also lists them as this file's dependencies, so a new model rebuilds the binary. */
#include "cli/demo_model.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "util/atomic_write.h"

#ifndef MT_DEMO_MODEL_DIR
#error "MT_DEMO_MODEL_DIR must name the folder of the demo checkpoint (set by CMakeLists.txt)"
#endif

/* sym_start .. sym_end: the bytes of MT_DEMO_MODEL_DIR/file, read-only, 16-byte aligned. */
#define MT_EMBED(sym, file)                                                                      \
    __asm__(".pushsection .rodata\n"                                                            \
            ".balign 16\n"                                                                      \
            ".globl " #sym "_start\n.hidden " #sym "_start\n" #sym "_start:\n"                  \
            ".incbin \"" MT_DEMO_MODEL_DIR "/" file "\"\n"                                      \
            ".globl " #sym "_end\n.hidden " #sym "_end\n" #sym "_end:\n"                        \
            ".popsection\n");                                                                   \
    extern const unsigned char sym##_start[], sym##_end[]

MT_EMBED(mt_demo_config, "config.json");
MT_EMBED(mt_demo_generation_config, "generation_config.json");
MT_EMBED(mt_demo_weights, "model.safetensors");
MT_EMBED(mt_demo_tokenizer, "tokenizer.json");
MT_EMBED(mt_demo_tokenizer_config, "tokenizer_config.json");

const mt_demo_file *mt_demo_model_files(int *n) {
    static mt_demo_file files[5];
    if (!files[0].name) {
        const mt_demo_file all[5] = {
            {"config.json", mt_demo_config_start, (size_t)(mt_demo_config_end - mt_demo_config_start)},
            {"generation_config.json", mt_demo_generation_config_start,
             (size_t)(mt_demo_generation_config_end - mt_demo_generation_config_start)},
            {"model.safetensors", mt_demo_weights_start, (size_t)(mt_demo_weights_end - mt_demo_weights_start)},
            {"tokenizer.json", mt_demo_tokenizer_start, (size_t)(mt_demo_tokenizer_end - mt_demo_tokenizer_start)},
            {"tokenizer_config.json", mt_demo_tokenizer_config_start,
             (size_t)(mt_demo_tokenizer_config_end - mt_demo_tokenizer_config_start)},
        };
        memcpy(files, all, sizeof files);
    }
    *n = 5;
    return files;
}

int mt_demo_model_write(const char *dir, mt_err *err) {
    if (mkdir(dir, 0755) && errno != EEXIST) return mt_errf(err, "%s: cannot create the folder: %s", dir, strerror(errno));
    int n;
    const mt_demo_file *f = mt_demo_model_files(&n);
    for (int i = 0; i < n; i++) {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, f[i].name) >= (int)sizeof path)
            return mt_errf(err, "%s: path too long", dir);
        if (mt_atomic_write(path, f[i].data, f[i].size, err)) return -1;
    }
    return 0;
}
