/* Replacing a served model's weights with those of another checkpoint of the same shape (an RL
 * step's new policy) without restarting: the checkpoint is loaded, its config must equal the
 * model's field by field, then its weights take the place of the model's in the same mt_model (so
 * every pointer to the model stays valid; its config is not written). On a device the served copy
 * is freed before the new one is uploaded (both rarely fit); if the upload fails the served weights
 * are uploaded again. On the CPU the new checkpoint is read into private memory (mt_model_load); on a
 * device it stays mapped (mt_model_load_mapped) and is checked unchanged after its upload, and the
 * served one before it is uploaded again.
 *
 * Nothing may run on the model meanwhile (the engine idle). Cached prompt blocks hold K/V and
 * routing of the old weights: flush them afterwards (mt_engine_flush_prefix_cache). */
#ifndef MT_ENGINE_WEIGHT_SWAP_H
#define MT_ENGINE_WEIGHT_SWAP_H

#include "model/model.h"
#include "util/err.h"

/* 0: swapped. -1: nothing changed (err says why: the checkpoint, its config, the upload). -2: the
 * new weights could not be uploaded and neither could the old ones: the model has no device copy
 * and must not be run. */
int mt_model_swap_weights(mt_model *m, const char *dir, mt_err *err);

#endif
