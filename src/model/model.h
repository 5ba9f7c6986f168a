/* A loaded model: its config and every weight bound by name, checked for presence, dtype and
 * shape before any compute starts; a checkpoint tensor the config has no place for is an error too.
 * Large matrices stay in the checkpoint's memory in their own dtype (mt_model_load: the files read
 * into private memory, so a process rewriting them while the model serves changes nothing;
 * mt_model_load_mapped: read-only mappings of the files); small vectors (norm weights, biases) are
 * converted to float32 copies.
 *
 * Tensor naming follows the published checkpoints of each architecture (model/arch_names.c);
 * adding an architecture means adding its names and config defaults, not a new forward pass. */
#ifndef MT_MODEL_MODEL_H
#define MT_MODEL_MODEL_H

#include <stdbool.h>

#include "kernels/kernels.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "util/err.h"

typedef struct mt_expert {
    mt_mat gate;  /* [I, H] */
    mt_mat up;    /* [I, H] */
    mt_mat down;  /* [H, I] */
} mt_expert;

typedef struct mt_layer {
    float *attn_norm;          /* [H] */
    mt_mat q, k, v, o;         /* q: [heads*hd, H], k/v: [kv*hd, H], o: [H, heads*hd] */
    float *q_bias, *k_bias, *v_bias; /* NULL unless attention_bias */
    float *q_norm, *k_norm;    /* [hd] per head, or [heads*hd]/[kv*hd] over the projection; NULL if none */
    float *mlp_norm;           /* [H] */
    bool is_moe;
    mt_expert dense;           /* dense MLP when !is_moe */
    mt_mat router;             /* [E, H] */
    mt_expert *experts;        /* [E] */
    bool has_shared;
    mt_expert shared;          /* shared expert (Qwen2-MoE) */
    mt_mat shared_gate;        /* [1, H] sigmoid gate of the shared expert */
} mt_layer;

typedef struct mt_model {
    mt_config cfg;
    char name[256];            /* the checkpoint folder's name (its real path's last part), for dumps and reports */
    mt_checkpoint *ckpt;       /* NULL with dummy weights */
    mt_mat embed;              /* [V, H] */
    float *final_norm;         /* [H] */
    mt_mat lm_head;            /* [V, H] (the embedding when tied) */
    mt_layer *layers;
    void **owned;              /* buffers to free (float copies, dummy weights) */
    int n_owned, cap_owned;
    void *device;              /* a backend's copy of the weights (engine/cuda_backend.h), or NULL */
    void (*device_free)(void *device);
} mt_model;

typedef enum mt_load_format {
    MT_LOAD_AUTO,
    MT_LOAD_DUMMY,             /* config.json only; weights filled with deterministic random BF16 */
    MT_LOAD_SHAPES,            /* config.json only; matrices have no data (a device backend fills them) */
} mt_load_format;

/* Loads DIR (config.json + safetensors), or only its config for MT_LOAD_DUMMY / MT_LOAD_SHAPES.
 * Norm weights are 1 and biases 0 in both config-only formats. MT_LOAD_DUMMY is refused up front
 * when its weights need more host memory than is available. */
int mt_model_load(mt_model *m, const char *dir, mt_load_format fmt, mt_err *err);
/* The same with the matrices in mappings of the files, for a backend that copies them elsewhere
 * (mt_cuda_attach) and reads them again only to upload them anew: check mt_checkpoint_unchanged
 * first. Costs no anonymous host memory for the weights. */
int mt_model_load_mapped(mt_model *m, const char *dir, mt_load_format fmt, mt_err *err);
void mt_model_free(mt_model *m);

#endif
