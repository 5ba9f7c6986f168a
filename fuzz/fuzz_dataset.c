/* Fuzz target: the JSONL dataset reader of `moetrace profile` (cli/dataset.c): the input is the
 * file; prompts and messages go through the fixture tokenizer without post-processor (an empty
 * text gives no ids) and the Qwen3 chat template. A dataset that loads has non-empty prompts of
 * valid ids and a non-empty name for every request. */
#include "cli/dataset.h"
#include "fuzz_util.h"
#include "util/json_util.h"

static mt_text_tools g_tools;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char path[4096];
    mt_err err;
    snprintf(path, sizeof path, "%s/tests/tokenizer/ms", MT_SOURCE_DIR);
    if (mt_tokenizer_load(&g_tools.tok, path, &err)) goto fail;
    snprintf(path, sizeof path, "%s/tests/chat/templates/qwen3.jinja", MT_SOURCE_DIR);
    char *src = mt_read_file(path, NULL, &err);
    if (!src || mt_chat_template_from_string(&g_tools.tpl, src, NULL, "<|im_end|>", &err)) goto fail;
    free(src);
    g_tools.model_dir = "/nonexistent"; /* never read: both are loaded */
    return 0;
fail:
    fprintf(stderr, "fuzz_dataset: %s\n", err.msg);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    mt_dataset d;
    mt_err err = {{0}};
    if (mt_dataset_load(path, &g_tools, "domain", &d, &err) == 0) {
        FUZZ_CHECK(d.n > 0);
        for (int i = 0; i < d.n; i++) {
            FUZZ_CHECK(d.len[i] > 0);
            FUZZ_CHECK(d.names[i] && d.names[i][0]);
            FUZZ_CHECK(!d.domains[i] || (d.domains[i][0] && strlen(d.domains[i]) <= 200));
            for (int k = 0; k < d.len[i]; k++) FUZZ_CHECK(d.ids[i][k] >= 0);
        }
        mt_dataset_free(&d);
    } else {
        FUZZ_CHECK(strstr(err.msg, path) != NULL);
    }
    close(fd);
    return 0;
}
