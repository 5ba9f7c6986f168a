/* The model `moetrace demo` ships inside the binary (assets/demo-model/, made by
 * tests/fixtures/make_demo_model.py): a small Qwen3-MoE checkpoint with its tokenizer, embedded at
 * build time so the demo needs no download and no file beside the binary. */
#ifndef MT_CLI_DEMO_MODEL_H
#define MT_CLI_DEMO_MODEL_H

#include <stddef.h>

#include "util/err.h"

typedef struct mt_demo_file {
    const char *name;            /* file name inside the checkpoint folder */
    const unsigned char *data;
    size_t size;
} mt_demo_file;

/* The embedded files (config.json, generation_config.json, model.safetensors, tokenizer.json,
 * tokenizer_config.json); *n receives their count. */
const mt_demo_file *mt_demo_model_files(int *n);

/* Writes the embedded checkpoint into folder dir (created if missing; existing files of the same
 * names are replaced atomically), so every command can load it like any checkpoint. */
int mt_demo_model_write(const char *dir, mt_err *err);

#endif
