/* Internals of the expert distribution recorder, shared by recorder.c (recording) and
 * recorder_dump.c (dump formats). Not for other modules. */
#ifndef MT_ROUTING_RECORDER_INTERNAL_H
#define MT_ROUTING_RECORDER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "routing/recorder.h"

/* One forward pass of the window (stat, per_pass). */
typedef struct mt_rec_pass {
    int64_t id;       /* forward_pass_id: the pass's index among all passes the sink saw */
    int64_t n_tokens;
    double balancedness;  /* with a placement: the pass's per-GPU balancedness */
    /* Sparse counts: the n non-zero entries (index l * E + e for logical counts, L * E + l * R + s
     * for physical ones, count). Buffers are reused when the slot is overwritten. */
    int n, cap;
    int32_t *idx, *cnt;
} mt_rec_pass;

struct mt_recorder {
    /* fixed at creation */
    int L, E, K;
    bool is_moe[MT_MAX_LAYERS];
    int num_moe;
    char *model;
    mt_recorder_mode mode;
    int buffer_size;
    char *dump_dir;
    mt_recorder_group_label group_label; /* names request groups in per_token dumps, or NULL */
    void *group_label_ctx;
    int ep_size;
    int64_t max_tokens;
    const mt_placement *plc; /* NULL: no physical counts */
    mt_placement *plc_owned; /* a recorder made by mt_recorder_take: its own copy (= plc), freed with it */
    bool taken;           /* made by mt_recorder_take: no sink feeds it, its dump writes it in place */
    int64_t taken_at_drops; /* taken: the drops count of the recorder it was taken from, then */
    struct mt_recorder *spare; /* under mu: an empty twin made ahead (mt_recorder_prepare_twin), or NULL */
    unsigned plc_gen;     /* under mu: bumped by every mt_recorder_set_placement */
    unsigned twin_gen;    /* a twin's: its maker's plc_gen when it copied the placement */
    pthread_mutex_t dump_mu; /* mt_recorder_dump, from its take to its put-back: one at a time (the
                                sink never takes it; taken before mu) */
    int R;                /* physical slots per layer (0 without a placement) */
    size_t LE, NC;        /* L * E (start of the physical counts), L * E + L * R (all counters) */
    double *gpu_tmp;      /* [L, M] per-GPU loads of one pass (engine thread, under mu at commit) */
    int id_bytes;         /* per_token id storage: 1 (uint8, 255 = -1) when E <= 255, 2 (int16) when
                             E <= 32767, else 4; widened to int32 in dumps */

    atomic_bool active;
    /* Bumped by every start, stop and reset: a pass is committed only when the recorder is active
     * at its end and no start, stop or reset came since its first layer (see pass_epoch). */
    atomic_uint epoch;

    /* engine thread only (no lock) */
    bool in_pass;         /* a pass has begun (first on_layer seen) and not ended */
    bool pass_recording;  /* this pass is recorded */
    unsigned pass_epoch;  /* epoch at the pass's first layer */
    int64_t pass_counter; /* passes seen by the sink */
    int pass_n;           /* tokens of the current pass */
    int32_t *pend_count;  /* [NC] counts of the current pass (zero outside pend_touched) */
    int32_t *pend_touched; /* [NC] indices of the non-zero entries of pend_count */
    int pend_n;
    bool layer_seen[MT_MAX_LAYERS]; /* this pass */
    bool phys_seen[MT_MAX_LAYERS];  /* this pass, physical counts */
    /* per_token staging of the current pass */
    int stage_cap;
    unsigned char *stage_ids; /* [stage_cap, L, K] ids of id_bytes each */
    int64_t *stage_req;   /* [stage_cap] request id (or sequence slot) */
    const char **stage_name; /* [stage_cap] the event's request name, or NULL (valid until on_pass) */
    int32_t *stage_group; /* [stage_cap] the event's request group (0: none) */
    int32_t *stage_pos, *stage_tok;
    uint8_t *stage_again; /* [stage_cap] the token was recorded before (mt_routing_event.recomputed) */
    bool stage_any_again; /* some token of the pass was: its row is not kept twice */
    bool stage_failed;    /* out of memory for this pass: its tokens count as dropped */

    /* shared, under mu (mt_recorder_swap exchanges each of these fields but mu and drops: keep it
     * in step) */
    pthread_mutex_t mu;
    int64_t drops;        /* data dropped so far (resets, placement switches): a window taken before
                             the last drop is not put back */
    int64_t *total;       /* [NC] sum over the window: logical [L, E] then physical [L, R] */
    int64_t num_passes, num_tokens;
    double bal_sum;       /* sum of the window's per-pass balancedness (with a placement) */
    int64_t dropped_passes; /* out of memory at commit */
    mt_rec_pass *ring;    /* window of passes (bounded buffer_size, or growing for per_pass -1) */
    int ring_cap, ring_head, ring_len;
    /* per_token store */
    int64_t tok_n, tok_cap, dropped_tokens;
    unsigned char *tok_ids; /* [tok_cap, L, K] ids of id_bytes each */
    int64_t *tok_req;     /* [tok_cap] request index */
    int32_t *tok_pos, *tok_tok;
    int64_t *req_ids;     /* request index -> id (the key of req_hash) */
    char **req_names;     /* request index -> name (malloc'd), or NULL: dumped as the id's digits */
    int32_t *req_groups;  /* request index -> group (0: none) */
    int64_t n_req, req_cap;
    int64_t *req_hash_key; /* open addressing, -1 slot value = empty */
    int64_t *req_hash_val;
    int64_t req_hash_cap;
};

/* Builds the dump object of the data under mu (caller holds it). */
cJSON *mt_rec_build_json_locked(mt_recorder *r, mt_err *err);
/* Dense counts of a window pass into out (zeroed first): the counters [base, base + len), i.e.
 * logical [L, E] (base 0, len LE) or physical [L, R] (base LE, len L * R). */
void mt_rec_pass_dense(const mt_rec_pass *p, size_t base, size_t len, int32_t *out);
/* Drops the recorded data (caller holds mu). */
void mt_rec_reset_locked(mt_recorder *r);
/* Puts a window taken from r (mt_recorder_take) back in front of what r recorded since, as if it
 * had never been taken (a dump that failed keeps its data), unless r's data was dropped since (a
 * reset, a placement switch): then nothing changes. taken is then to be freed by the caller. */
bool mt_rec_put_back(mt_recorder *r, mt_recorder *taken);

#endif
