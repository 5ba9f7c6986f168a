#include "cli/model_open.h"

#include <stdio.h>
#include <string.h>

#include "engine/cuda_backend.h"

int mt_cli_check_device(const char *device) {
    if (!strcmp(device, "cpu") || !strcmp(device, "cuda")) return 0;
    fprintf(stderr, "moetrace: --device: '%s' is not cpu or cuda\n", device);
    return -1;
}

int mt_cli_default_batch_tokens(const char *device) { return !strcmp(device, "cuda") ? 8192 : 512; }

int mt_cli_open_model(mt_model *m, const char *dir, mt_load_format fmt, const char *device, mt_err *err) {
    bool cuda = !strcmp(device, "cuda");
    if (cuda && !mt_cuda_compiled())
        return mt_errf(err, "--device cuda: this build of moetrace has no CUDA backend (nvcc was not found at build time)");
    if (cuda && mt_cuda_device_count() <= 0) return mt_errf(err, "--device cuda: no CUDA device is visible");
    if (!cuda) return mt_model_load(m, dir, fmt, err);
    /* the device holds the weights: the host keeps only the files' mappings, for a re-upload */
    if (mt_model_load_mapped(m, dir, fmt == MT_LOAD_DUMMY ? MT_LOAD_SHAPES : fmt, err)) return -1;
    if (mt_cuda_attach(m, err) || mt_checkpoint_unchanged(m->ckpt, err)) {
        mt_model_free(m);
        return -1;
    }
    return 0;
}
