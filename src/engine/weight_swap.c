#include "engine/weight_swap.h"

#include <stdio.h>
#include <string.h>

#include "engine/cuda_backend.h"

/* Exchanges the weights of a and b (not their config or name). */
static void exchange_weights(mt_model *a, mt_model *b) {
#define SWAP(field)                                                                                                    \
    do {                                                                                                               \
        unsigned char t[sizeof a->field];                                                                              \
        memcpy(t, &a->field, sizeof t);                                                                                \
        memcpy(&a->field, &b->field, sizeof t);                                                                        \
        memcpy(&b->field, t, sizeof t);                                                                                \
    } while (0)
    SWAP(ckpt);
    SWAP(embed);
    SWAP(final_norm);
    SWAP(lm_head);
    SWAP(layers);
    SWAP(owned);
    SWAP(n_owned);
    SWAP(cap_owned);
    SWAP(device);
    SWAP(device_free);
#undef SWAP
}

int mt_model_swap_weights(mt_model *m, const char *dir, mt_err *err) {
    mt_model fresh;
    int loaded = m->device ? mt_model_load_mapped(&fresh, dir, MT_LOAD_AUTO, err)
                           : mt_model_load(&fresh, dir, MT_LOAD_AUTO, err);
    if (loaded) return -1;
    const char *diff = mt_config_differs(&m->cfg, &fresh.cfg);
    if (diff) {
        mt_model_free(&fresh);
        return mt_errf(err, "%s: its config differs from the served model's (%s)", dir, diff);
    }
    if (m->device) {
        m->device_free(m->device);
        m->device = NULL;
        if (mt_cuda_attach(&fresh, err) || mt_checkpoint_unchanged(fresh.ckpt, err)) {
            char why[MT_ERR_LEN];
            snprintf(why, sizeof why, "%s", err->msg);
            mt_model_free(&fresh);
            mt_err again;
            if (mt_checkpoint_unchanged(m->ckpt, &again) || mt_cuda_attach(m, &again)) {
                mt_errf(err, "uploading %s failed (%.400s), and uploading the served weights again failed too (%.400s)",
                        dir, why, again.msg);
                return -2;
            }
            return mt_errf(err, "uploading %s failed: %.900s", dir, why);
        }
    }
    exchange_weights(m, &fresh);
    mt_model_free(&fresh); /* the old weights (their device copy, if any, is gone already) */
    return 0;
}
