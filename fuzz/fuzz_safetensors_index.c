/* Fuzz target: the index of a sharded checkpoint (model/safetensors.c, model.safetensors.index.json).
 * The input is the index, in a scratch folder beside links to the two shards of the mixtral_hub
 * fixture; the folder is opened as a checkpoint. One that opens has every mapped tensor, in the shard
 * the index names; every error names the index or a shard. */
#include <stdlib.h>

#include "fuzz_util.h"
#include "model/safetensors.h"

static char g_dir[64] = "/tmp/fuzz_st_index_XXXXXX";
static char g_index[128];

static void cleanup(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) fputs("fuzz_safetensors_index: cleanup failed\n", stderr);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    if (!mkdtemp(g_dir)) abort();
    atexit(cleanup);
    for (int i = 1; i <= 2; i++) {
        char from[4096], to[128];
        snprintf(from, sizeof from, "%s/tests/fixtures/models/mixtral_hub/model-0000%d-of-00002.safetensors",
                 MT_SOURCE_DIR, i);
        snprintf(to, sizeof to, "%s/model-0000%d-of-00002.safetensors", g_dir, i);
        if (symlink(from, to)) abort();
    }
    snprintf(g_index, sizeof g_index, "%s/model.safetensors.index.json", g_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(g_index, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f)) abort();
    mt_checkpoint *ck = NULL;
    mt_err err = {{0}};
    if (mt_checkpoint_open(&ck, g_dir, &err) == 0) {
        FUZZ_CHECK(mt_checkpoint_count(ck) > 0);
        for (int i = 0; i < mt_checkpoint_count(ck); i++) {
            const mt_tensor_info *t = mt_checkpoint_at(ck, i);
            FUZZ_CHECK(mt_checkpoint_find(ck, t->name) == t && strstr(t->file, g_dir) == t->file);
        }
        mt_checkpoint_close(ck);
    } else {
        FUZZ_CHECK(strstr(err.msg, g_dir) != NULL);
    }
    return 0;
}
