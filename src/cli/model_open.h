/* Opening a model for a subcommand: checkpoint or dummy weights, on the CPU or a CUDA device. */
#ifndef MT_CLI_MODEL_OPEN_H
#define MT_CLI_MODEL_OPEN_H

#include "model/model.h"
#include "util/err.h"

/* Checks a --device value ("cpu" or "cuda"); prints the error and returns -1 otherwise. */
int mt_cli_check_device(const char *device);

/* Default token budget of a forward pass (--max-batch-tokens) on `device`: 512 on the CPU; 8192
 * on a GPU, where larger prefill chunks reach the fast product path (docs/CUDA.md). */
int mt_cli_default_batch_tokens(const char *device);

/* Loads DIR for `device`: with "cuda" the weights are uploaded (dummy weights are made on the
 * device, never on the host). */
int mt_cli_open_model(mt_model *m, const char *dir, mt_load_format fmt, const char *device, mt_err *err);

#endif
