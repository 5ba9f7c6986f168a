/* Model configuration read from a Hugging Face `config.json` (both the classic spelling and the
 * transformers 5 one: rope_parameters, num_local_experts) plus `generation_config.json` for eos.
 * Everything the forward pass needs to know about an architecture is data in mt_config: the
 * forward pass never switches on the model type, it reads these fields. */
#ifndef MT_MODEL_CONFIG_H
#define MT_MODEL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

#define MT_MAX_LAYERS 256
#define MT_MAX_EOS 32
#define MT_MAX_ROPE_PAIRS 256  /* head_dim / 2 */

typedef enum mt_arch {
    MT_ARCH_QWEN3_MOE,
    MT_ARCH_QWEN2_MOE,
    MT_ARCH_MIXTRAL,
    MT_ARCH_OLMOE,
} mt_arch;

/* How rotary frequencies are derived (model/rope_config.h). */
typedef enum mt_rope_type { MT_ROPE_DEFAULT, MT_ROPE_LINEAR, MT_ROPE_YARN } mt_rope_type;

/* Where q/k normalisation applies: none, per head (Qwen3), over the whole projection (OLMoE). */
typedef enum mt_qk_norm { MT_QK_NORM_NONE, MT_QK_NORM_PER_HEAD, MT_QK_NORM_FULL } mt_qk_norm;

typedef struct mt_config {
    char model_type[32];
    mt_arch arch;
    int vocab_size;
    int hidden_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;
    int head_dim;
    int max_position_embeddings;
    float rms_norm_eps;
    float rope_theta;
    mt_rope_type rope_type;
    double rope_factor;       /* linear and yarn: the context scaling factor (1 for default) */
    int rope_original_max_positions; /* yarn: original_max_position_embeddings (0 otherwise) */
    float rope_attention_factor;     /* cos and sin are scaled by it (yarn; 1 otherwise) */
    float rope_inv_freq[MT_MAX_ROPE_PAIRS]; /* [head_dim / 2] inverse frequencies every forward path
                                             * rotates with (filled from the above) */
    bool attention_bias;      /* q/k/v carry biases (Qwen2-MoE) */
    mt_qk_norm qk_norm;
    bool tie_word_embeddings;
    int sliding_window;       /* attend to at most this many past positions; 0: unlimited */

    /* MoE */
    int num_experts;
    int top_k;                /* num_experts_per_tok */
    int moe_intermediate_size;
    int intermediate_size;    /* dense MLP layers */
    bool norm_topk_prob;
    int shared_expert_intermediate_size; /* 0: no shared expert */
    bool shared_expert_gate;  /* sigmoid gate on the shared expert (Qwen2-MoE) */
    bool layer_is_moe[MT_MAX_LAYERS];
    int num_moe_layers;

    /* Generation */
    int bos_token_id;         /* -1 when unknown */
    int eos_ids[MT_MAX_EOS];
    int num_eos;
} mt_config;

/* Parses config.json text. */
int mt_config_parse(mt_config *cfg, const char *json_text, mt_err *err);
/* Reads DIR/config.json and, when present, DIR/generation_config.json. */
int mt_config_load(mt_config *cfg, const char *dir, mt_err *err);
/* True when id is one of the eos ids. */
bool mt_config_is_eos(const mt_config *cfg, int id);
/* NULL when a and b describe the same computation (every field that shapes the weights or the
 * forward pass equal), else the first field that differs (its config.json name). The generation
 * settings (bos_token_id, eos_token_id) are not compared: they are not the weights'. */
const char *mt_config_differs(const mt_config *a, const mt_config *b);

#endif
