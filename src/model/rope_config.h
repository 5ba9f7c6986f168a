/* Rotary position embedding settings of config.json -> mt_config's rope fields, and the inverse
 * frequency table every forward path (CPU and CUDA) rotates with.
 *
 * Types, as transformers defines them (modeling_rope_utils.py, transformers 5.17):
 *   default  inv_freq[i] = 1 / theta^(2i / head_dim)
 *   linear   the default table divided by `factor` (position interpolation)
 *   yarn     interpolated frequencies (default / factor) blended into the default ones over the
 *            dimensions between beta_fast and beta_slow rotations of original_max_position_embeddings,
 *            and cos/sin scaled by an attention factor (0.1 ln(factor) + 1 unless given, or the
 *            mscale / mscale_all_dim ratio)
 * Other types (dynamic, longrope, llama3, ...) are refused with the type's name. The parameters come
 * from one object: rope_scaling when it holds any key, else rope_parameters (transformers 5). */
#ifndef MT_MODEL_ROPE_CONFIG_H
#define MT_MODEL_ROPE_CONFIG_H

#include <cjson/cJSON.h>

#include "model/config.h"
#include "util/err.h"

/* Reads the rotary settings of config.json's root into cfg (rope_theta, starting from
 * default_theta, the family's default; rope_type and its parameters) and fills cfg->rope_inv_freq.
 * cfg->head_dim and cfg->max_position_embeddings must be set. Errors name the key. */
int mt_rope_config_parse(mt_config *cfg, const cJSON *root, float default_theta, mt_err *err);

/* The name of a rope type as config.json spells it. */
const char *mt_rope_type_name(mt_rope_type t);

#endif
