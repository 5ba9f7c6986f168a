/* Expert distribution recorder: options, lifecycle, and the routing sink. Dumps: recorder_dump.c. */
#define _POSIX_C_SOURCE 200809L
#include "routing/recorder.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "routing/balancedness.h"
#include "routing/recorder_internal.h"

void mt_recorder_opts_default(mt_recorder_opts *o) {
    o->mode = MT_REC_STAT;
    o->buffer_size = MT_REC_DEFAULT_BUFFER_SIZE;
    o->dump_dir = NULL;
    o->ep_size = 0;
    o->max_tokens = MT_REC_DEFAULT_MAX_TOKENS;
    o->placement = NULL;
}

static const char *const MODE_NAMES[] = {"stat", "per_pass", "per_token"};

const char *mt_recorder_mode_name(mt_recorder_mode m) {
    return (unsigned)m < 3 ? MODE_NAMES[m] : "?";
}

int mt_recorder_parse_mode(const char *s, mt_recorder_mode *m, mt_err *err) {
    for (int i = 0; i < 3; i++) {
        if (s && strcmp(s, MODE_NAMES[i]) == 0) {
            *m = (mt_recorder_mode)i;
            return 0;
        }
    }
    return mt_errf(err, "recorder mode '%s': expected stat, per_pass or per_token", s ? s : "(null)");
}

int mt_recorder_opts_from_env(mt_recorder_opts *o, mt_err *err) {
    mt_recorder_mode mode = o->mode;
    const char *dir = o->dump_dir;
    const char *v = getenv("MOETRACE_EXPERT_RECORDER_MODE");
    if (v) {
        mt_err e2;
        if (mt_recorder_parse_mode(v, &mode, &e2) != 0)
            return mt_errf(err, "MOETRACE_EXPERT_RECORDER_MODE='%s': expected stat, per_pass or per_token",
                           v);
    }
    v = getenv("MOETRACE_EXPERT_DUMP_DIR");
    if (v) {
        struct stat st;
        if (!*v) return mt_errf(err, "MOETRACE_EXPERT_DUMP_DIR is set but empty");
        if (stat(v, &st) != 0 || !S_ISDIR(st.st_mode))
            return mt_errf(err, "MOETRACE_EXPERT_DUMP_DIR='%s': not an existing folder", v);
        dir = v;
    }
    o->mode = mode;
    o->dump_dir = dir;
    return 0;
}

static void *xcalloc(size_t n, size_t size) { return n ? calloc(n, size) : malloc(1); }

mt_recorder *mt_recorder_new(const mt_config *cfg, const char *model_name, const mt_recorder_opts *o,
                             mt_err *err) {
    mt_recorder_opts def;
    if (!o) {
        mt_recorder_opts_default(&def);
        o = &def;
    }
    if (cfg->num_hidden_layers < 1 || cfg->num_hidden_layers > MT_MAX_LAYERS || cfg->num_experts < 1 ||
        cfg->top_k < 1 || cfg->top_k > cfg->num_experts) {
        mt_errf(err, "recorder: bad model shape (num_hidden_layers %d, num_experts %d, top_k %d)",
                cfg->num_hidden_layers, cfg->num_experts, cfg->top_k);
        return NULL;
    }
    if ((unsigned)o->mode > MT_REC_PER_TOKEN) {
        mt_errf(err, "recorder: unknown mode %d", (int)o->mode);
        return NULL;
    }
    if (o->buffer_size == 0 || o->buffer_size < -1) {
        mt_errf(err, "recorder: buffer size %d: expected a positive number of forward passes or -1",
                o->buffer_size);
        return NULL;
    }
    if (o->max_tokens < 1) {
        mt_errf(err, "recorder: max_tokens %ld: expected > 0", o->max_tokens);
        return NULL;
    }
    int E = cfg->num_experts;
    int ep = o->ep_size;
    const mt_placement *plc = o->placement;
    if (plc) {
        if (mt_placement_fits(plc, cfg, err)) return NULL;
        if (ep && ep != plc->num_gpus) {
            mt_errf(err, "recorder: ep_size %d differs from the placement's num_gpus %d", ep, plc->num_gpus);
            return NULL;
        }
        ep = plc->num_gpus;
    }
    if (ep == 0) ep = E % 8 == 0 ? 8 : 1;
    if (ep < 1 || (!plc && ep > E)) {
        mt_errf(err, "recorder: ep_size %d: expected 1..num_experts (%d)", ep, E);
        return NULL;
    }
    if (!plc && E % ep) { /* SPEC §4: M contiguous equal blocks */
        mt_errf(err, "recorder: ep_size %d does not divide num_experts %d (without a placement, experts are split "
                "into ep_size equal blocks)", ep, E);
        return NULL;
    }
    if (plc && ((size_t)cfg->num_hidden_layers * ((size_t)E + (size_t)plc->num_physical) > INT32_MAX)) {
        mt_errf(err, "recorder: %d layers x (%d experts + %d slots) is too many counters", cfg->num_hidden_layers, E,
                plc->num_physical);
        return NULL;
    }
    mt_recorder *r = calloc(1, sizeof *r);
    if (!r) {
        mt_errf(err, "recorder: out of memory");
        return NULL;
    }
    r->L = cfg->num_hidden_layers;
    r->E = E;
    r->K = cfg->top_k;
    for (int l = 0; l < r->L; l++) {
        r->is_moe[l] = cfg->layer_is_moe[l];
        r->num_moe += r->is_moe[l];
    }
    r->mode = o->mode;
    r->buffer_size = o->buffer_size;
    r->ep_size = ep;
    r->max_tokens = o->max_tokens;
    r->id_bytes = E <= 255 ? 1 : E <= 32767 ? 2 : 4;
    r->plc = plc;
    r->R = plc ? plc->num_physical : 0;
    r->LE = (size_t)r->L * (size_t)E;
    r->NC = r->LE + (size_t)r->L * (size_t)r->R;
    r->model = strdup(model_name ? model_name : "");
    r->dump_dir = strdup(o->dump_dir ? o->dump_dir : MT_REC_DEFAULT_DUMP_DIR);
    r->pend_count = xcalloc(r->NC, sizeof *r->pend_count);
    r->pend_touched = xcalloc(r->NC, sizeof *r->pend_touched);
    r->total = xcalloc(r->NC, sizeof *r->total);
    r->gpu_tmp = xcalloc(plc ? (size_t)r->L * (size_t)ep : 0, sizeof *r->gpu_tmp);
    atomic_init(&r->active, false);
    atomic_init(&r->epoch, 0u);
    if (r->mode != MT_REC_PER_TOKEN) {
        r->ring_cap = r->buffer_size > 0 ? r->buffer_size : (r->mode == MT_REC_PER_PASS ? 16 : 0);
        if (r->ring_cap) r->ring = calloc((size_t)r->ring_cap, sizeof *r->ring);
    }
    if (!r->model || !r->dump_dir || !r->pend_count || !r->pend_touched || !r->total || !r->gpu_tmp ||
        (r->ring_cap && !r->ring) ||
        pthread_mutex_init(&r->mu, NULL) != 0 || pthread_mutex_init(&r->dump_mu, NULL) != 0) {
        free(r->model);
        free(r->dump_dir);
        free(r->pend_count);
        free(r->pend_touched);
        free(r->total);
        free(r->gpu_tmp);
        free(r->ring);
        free(r);
        mt_errf(err, "recorder: out of memory");
        return NULL;
    }
    return r;
}

static void free_token_store(mt_recorder *r) {
    for (int64_t i = 0; i < r->n_req; i++) free(r->req_names[i]);
    free(r->req_names);
    free(r->req_groups);
    r->req_names = NULL;
    r->req_groups = NULL;
    free(r->tok_ids);
    free(r->tok_req);
    free(r->tok_pos);
    free(r->tok_tok);
    free(r->req_ids);
    free(r->req_hash_key);
    free(r->req_hash_val);
    r->tok_ids = NULL;
    r->tok_req = NULL;
    r->tok_pos = r->tok_tok = NULL;
    r->req_ids = r->req_hash_key = r->req_hash_val = NULL;
    r->tok_cap = r->req_cap = r->req_hash_cap = 0;
}

void mt_recorder_free(mt_recorder *r) {
    if (!r) return;
    for (int i = 0; i < r->ring_cap; i++) {
        free(r->ring[i].idx);
        free(r->ring[i].cnt);
    }
    free(r->ring);
    free_token_store(r);
    free(r->stage_ids);
    free(r->stage_req);
    free(r->stage_name);
    free(r->stage_group);
    free(r->stage_pos);
    free(r->stage_tok);
    free(r->stage_again);
    free(r->pend_count);
    free(r->pend_touched);
    free(r->total);
    free(r->gpu_tmp);
    free(r->model);
    free(r->dump_dir);
    mt_placement_destroy(r->plc_owned);
    mt_recorder_free(r->spare);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->dump_mu);
    free(r);
}

void mt_rec_reset_locked(mt_recorder *r) {
    if (r->num_passes) /* the counts move only with the passes: else they are zero already (after a take) */
        memset(r->total, 0, r->NC * sizeof *r->total);
    r->num_passes = r->num_tokens = 0;
    r->bal_sum = 0;
    r->dropped_passes = 0;
    r->ring_head = r->ring_len = 0;
    /* The token store's memory is released: a per_token dump may have been large. */
    free_token_store(r);
    r->tok_n = 0;
    r->dropped_tokens = 0;
    r->n_req = 0;
}

/* The epoch moves before the state changes: a pass begun under the old state reads the old epoch
 * (begin_pass reads the epoch before the state) and is not committed. */
void mt_recorder_start(mt_recorder *r) {
    atomic_fetch_add(&r->epoch, 1u);
    atomic_store(&r->active, true);
}

void mt_recorder_stop(mt_recorder *r) {
    atomic_fetch_add(&r->epoch, 1u);
    atomic_store(&r->active, false);
}

bool mt_recorder_active(const mt_recorder *r) { return atomic_load(&((mt_recorder *)r)->active); }
mt_recorder_mode mt_recorder_get_mode(const mt_recorder *r) { return r->mode; }

/* Exchanges the recorded data of a and b (both locked, or private to the caller). */
static void swap_data(mt_recorder *a, mt_recorder *b) {
#define SWAP(T, f)  \
    do {            \
        T t = a->f; \
        a->f = b->f; \
        b->f = t;   \
    } while (0)
    /* every field of recorder_internal.h's "shared, under mu" block but the mutex */
    SWAP(int64_t *, total);
    SWAP(int64_t, num_passes);
    SWAP(int64_t, num_tokens);
    SWAP(double, bal_sum);
    SWAP(int64_t, dropped_passes);
    SWAP(mt_rec_pass *, ring);
    SWAP(int, ring_cap);
    SWAP(int, ring_head);
    SWAP(int, ring_len);
    SWAP(int64_t, tok_n);
    SWAP(int64_t, tok_cap);
    SWAP(int64_t, dropped_tokens);
    SWAP(unsigned char *, tok_ids);
    SWAP(int64_t *, tok_req);
    SWAP(int32_t *, tok_pos);
    SWAP(int32_t *, tok_tok);
    SWAP(int64_t *, req_ids);
    SWAP(char **, req_names);
    SWAP(int32_t *, req_groups);
    SWAP(int64_t, n_req);
    SWAP(int64_t, req_cap);
    SWAP(int64_t *, req_hash_key);
    SWAP(int64_t *, req_hash_val);
    SWAP(int64_t, req_hash_cap);
#undef SWAP
}

int mt_recorder_swap(mt_recorder *a, mt_recorder *b) {
    if (a == b) return 0;
    if (a->L != b->L || a->E != b->E || a->K != b->K || a->NC != b->NC || a->mode != b->mode ||
        a->buffer_size != b->buffer_size || a->max_tokens != b->max_tokens || a->plc != b->plc ||
        a->id_bytes != b->id_bytes)
        return -1;
    mt_recorder *first = a < b ? a : b, *second = a < b ? b : a; /* one lock order */
    pthread_mutex_lock(&first->mu);
    pthread_mutex_lock(&second->mu);
    swap_data(a, b);
    pthread_mutex_unlock(&second->mu);
    pthread_mutex_unlock(&first->mu);
    return 0;
}

static int64_t tok_reserve(mt_recorder *r, int64_t n);

/* What a twin of r copies, read under mu (a switch changes the placement under it): a copy of r's
 * placement (NULL without one), its generation and, for an active per_token recorder, its store's
 * size. -1 when out of memory. */
static int twin_inputs(mt_recorder *r, mt_placement **plc, unsigned *gen, int64_t *cap, mt_err *err) {
    pthread_mutex_lock(&r->mu);
    *plc = r->plc ? mt_placement_dup(r->plc) : NULL;
    *gen = r->plc_gen;
    *cap = r->mode == MT_REC_PER_TOKEN && mt_recorder_active(r) ? r->tok_cap : 0;
    bool failed = r->plc && !*plc;
    pthread_mutex_unlock(&r->mu);
    return failed ? mt_errf(err, "recorder: out of memory") : 0;
}

/* An empty, inactive twin of r owning plc. */
static mt_recorder *make_twin(mt_recorder *r, mt_placement *plc, unsigned gen, int64_t cap, mt_err *err) {
    mt_config shape;
    memset(&shape, 0, sizeof shape);
    shape.num_hidden_layers = r->L;
    shape.num_experts = r->E;
    shape.top_k = r->K;
    memcpy(shape.layer_is_moe, r->is_moe, sizeof r->is_moe);
    mt_recorder_opts o = {.mode = r->mode, .buffer_size = r->buffer_size, .dump_dir = r->dump_dir,
                          .ep_size = r->ep_size, .max_tokens = r->max_tokens, .placement = plc};
    mt_recorder *t = mt_recorder_new(&shape, r->model, &o, err);
    if (!t) {
        mt_placement_destroy(plc);
        return NULL;
    }
    t->plc_owned = plc;
    t->twin_gen = gen;
    t->taken = true;
    t->group_label = r->group_label;
    t->group_label_ctx = r->group_label_ctx;
    if (cap > 0) tok_reserve(t, cap); /* r goes on recording in a store as large as the one taken: no
                                         regrowing; allocated, not written: pages come as rows do */
    return t;
}

mt_recorder *mt_recorder_twin(mt_recorder *r, mt_err *err) {
    pthread_mutex_lock(&r->mu);
    mt_recorder *spare = r->spare;
    r->spare = NULL;
    bool current = spare && spare->twin_gen == r->plc_gen;
    pthread_mutex_unlock(&r->mu);
    if (current) return spare;
    mt_recorder_free(spare); /* made before a placement switch */
    mt_placement *plc;
    unsigned gen;
    int64_t cap;
    if (twin_inputs(r, &plc, &gen, &cap, err)) return NULL;
    return make_twin(r, plc, gen, cap, err);
}

int mt_recorder_prepare_twin(mt_recorder *r, mt_err *err) {
    pthread_mutex_lock(&r->mu);
    bool ready = r->spare && r->spare->twin_gen == r->plc_gen;
    pthread_mutex_unlock(&r->mu);
    if (ready) return 0;
    mt_placement *plc;
    unsigned gen;
    int64_t cap;
    if (twin_inputs(r, &plc, &gen, &cap, err)) return -1;
    mt_recorder *t = make_twin(r, plc, gen, cap, err);
    if (!t) return -1;
    pthread_mutex_lock(&r->mu);
    mt_recorder *old = NULL;
    if (gen == r->plc_gen) { /* else a switch came meanwhile: the take makes its own */
        old = r->spare;
        r->spare = t;
        t = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    mt_recorder_free(old);
    mt_recorder_free(t);
    return 0;
}

void mt_recorder_take_into(mt_recorder *r, mt_recorder *twin) {
    /* no epoch bump: a pass in progress commits into r's emptied data, as after a dump */
    pthread_mutex_lock(&r->mu);
    swap_data(r, twin);
    twin->taken_at_drops = r->drops;
    pthread_mutex_unlock(&r->mu);
}

mt_recorder *mt_recorder_take(mt_recorder *r, mt_err *err) {
    mt_recorder *t = mt_recorder_twin(r, err);
    if (t) mt_recorder_take_into(r, t);
    return t;
}

void mt_recorder_reset(mt_recorder *r) {
    pthread_mutex_lock(&r->mu);
    atomic_fetch_add(&r->epoch, 1u); /* the pass in progress began before: dropped too */
    mt_rec_reset_locked(r);
    r->drops++;
    pthread_mutex_unlock(&r->mu);
}

int mt_recorder_set_placement(mt_recorder *r, const mt_placement *p, mt_err *err) {
    if (!r->plc || !p) return mt_errf(err, "recorder: made without a placement, it counts no physical slots");
    if (p->num_physical != r->R || p->num_gpus != r->plc->num_gpus)
        return mt_errf(err, "recorder: the placement has %d slots on %d GPUs, the recorder counts %d on %d",
                       p->num_physical, p->num_gpus, r->R, r->plc->num_gpus);
    if (p->num_experts != r->E || p->num_hidden_layers != r->L || p->num_moe_layers != r->num_moe)
        return mt_errf(err, "recorder: the placement does not fit the model (%d experts, %d layers)", r->E, r->L);
    for (int l = 0; l < r->L; l++)
        if ((p->row_of[l] >= 0) != r->is_moe[l])
            return mt_errf(err, "recorder: the placement's MoE layers differ from the model's (layer %d)", l);
    pthread_mutex_lock(&r->mu);
    atomic_fetch_add(&r->epoch, 1u); /* a pass in progress was dispatched over the old placement */
    r->plc = p;
    r->plc_gen++; /* a twin made ahead copied the old placement */
    mt_rec_reset_locked(r);
    r->drops++;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static void counts_locked(const mt_recorder *r, mt_recorder_counts *c) {
    c->num_forward_passes = r->num_passes;
    c->num_tokens = r->num_tokens;
    c->tokens_recorded = r->tok_n;
    c->dropped_tokens = r->dropped_tokens;
    c->pass_balancedness = r->num_passes > 0 && r->plc ? r->bal_sum / (double)r->num_passes : 1.0;
}

void mt_recorder_get_counts(mt_recorder *r, mt_recorder_counts *c) {
    pthread_mutex_lock(&r->mu);
    counts_locked(r, c);
    pthread_mutex_unlock(&r->mu);
}

void mt_recorder_logical_count(mt_recorder *r, int64_t *out) {
    pthread_mutex_lock(&r->mu);
    memcpy(out, r->total, r->LE * sizeof *out);
    pthread_mutex_unlock(&r->mu);
}

int mt_recorder_physical_count(mt_recorder *r, int64_t *out) {
    if (!r->plc) return -1;
    pthread_mutex_lock(&r->mu);
    memcpy(out, r->total + r->LE, (r->NC - r->LE) * sizeof *out);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int mt_recorder_window(mt_recorder *r, mt_recorder_counts *c, int64_t *logical, int64_t *physical) {
    if (physical && !r->plc) return -1;
    pthread_mutex_lock(&r->mu);
    counts_locked(r, c);
    memcpy(logical, r->total, r->LE * sizeof *logical);
    if (physical) memcpy(physical, r->total + r->LE, (r->NC - r->LE) * sizeof *physical);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

void mt_recorder_set_group_label(mt_recorder *r, mt_recorder_group_label fn, void *ctx) {
    pthread_mutex_lock(&r->mu);
    r->group_label = fn;
    r->group_label_ctx = ctx;
    pthread_mutex_unlock(&r->mu);
}

/* ---- the sink (engine thread) ---- */

static int stage_reserve(mt_recorder *r, int n) {
    if (n <= r->stage_cap) return 0;
    int cap = r->stage_cap ? r->stage_cap : 64;
    while (cap < n) cap *= 2;
    size_t row = (size_t)r->L * (size_t)r->K * (size_t)r->id_bytes;
    unsigned char *ids = realloc(r->stage_ids, (size_t)cap * row);
    if (ids) r->stage_ids = ids;
    int64_t *req = realloc(r->stage_req, (size_t)cap * sizeof *req);
    if (req) r->stage_req = req;
    const char **name = realloc(r->stage_name, (size_t)cap * sizeof *name);
    if (name) r->stage_name = name;
    int32_t *group = realloc(r->stage_group, (size_t)cap * sizeof *group);
    if (group) r->stage_group = group;
    int32_t *pos = realloc(r->stage_pos, (size_t)cap * sizeof *pos);
    if (pos) r->stage_pos = pos;
    int32_t *tok = realloc(r->stage_tok, (size_t)cap * sizeof *tok);
    if (tok) r->stage_tok = tok;
    uint8_t *again = realloc(r->stage_again, (size_t)cap * sizeof *again);
    if (again) r->stage_again = again;
    if (!ids || !req || !name || !group || !pos || !tok || !again) return -1;
    r->stage_cap = cap;
    return 0;
}

static void begin_pass(mt_recorder *r, const mt_routing_event *ev) {
    r->in_pass = true;
    r->pass_epoch = atomic_load(&r->epoch);
    r->pass_recording = atomic_load(&r->active);
    if (!r->pass_recording) return;
    int n = ev->n_tokens > 0 ? ev->n_tokens : 0;
    r->pass_n = n;
    for (int i = 0; i < r->pend_n; i++) r->pend_count[r->pend_touched[i]] = 0;
    r->pend_n = 0;
    memset(r->layer_seen, 0, sizeof r->layer_seen);
    memset(r->phys_seen, 0, sizeof r->phys_seen);
    if (r->mode != MT_REC_PER_TOKEN) return;
    r->stage_failed = stage_reserve(r, n) != 0;
    if (r->stage_failed) return;
    size_t row = (size_t)r->L * (size_t)r->K * (size_t)r->id_bytes;
    memset(r->stage_ids, 0xFF, (size_t)n * row); /* -1 (255 in uint8) for layers without events */
    for (int t = 0; t < n; t++) {
        r->stage_req[t] = ev->request_ids ? ev->request_ids[t] : (ev->seq_ids ? ev->seq_ids[t] : 0);
        r->stage_name[t] = ev->request_names ? ev->request_names[t] : NULL;
        r->stage_group[t] = ev->request_groups ? ev->request_groups[t] : 0;
        r->stage_pos[t] = ev->positions ? ev->positions[t] : -1;
        r->stage_tok[t] = ev->tokens ? ev->tokens[t] : -1;
        r->stage_again[t] = ev->recomputed ? ev->recomputed[t] : 0;
    }
    r->stage_any_again = ev->recomputed != NULL;
}

/* Adds m ids in [0, width) to the pass's row cnt (counter index base + id), noting newly non-zero
 * entries; ids outside the range are not counted. */
static void count_ids(mt_recorder *r, const int32_t *ids, int m, int32_t *cnt, int32_t base, int width, bool fresh) {
    int32_t *touched = r->pend_touched;
    int nt = r->pend_n;
    if (fresh && m >= width) {
        /* Big pass, fresh (all-zero) row: plain histogram, then note the non-zero entries. */
        for (int i = 0; i < m; i++)
            if ((uint32_t)ids[i] < (uint32_t)width) cnt[ids[i]]++;
        for (int e = 0; e < width; e++)
            if (cnt[e]) touched[nt++] = base + e;
    } else {
        for (int i = 0; i < m; i++)
            if ((uint32_t)ids[i] < (uint32_t)width && cnt[ids[i]]++ == 0) touched[nt++] = base + ids[i];
    }
    r->pend_n = nt;
}

static void sink_on_layer(void *ctx, const mt_routing_event *ev) {
    mt_recorder *r = ctx;
    if (!r->in_pass) begin_pass(r, ev);
    if (!r->pass_recording) return;
    int l = ev->layer;
    /* dense layers have no experts: their rows stay zeros (SPEC §4; the dump reader refuses others) */
    if (l < 0 || l >= r->L || !r->is_moe[l] || ev->top_k != r->K || ev->n_tokens != r->pass_n || !ev->topk_ids) return;
    const int32_t *ids = ev->topk_ids;
    int n = ev->n_tokens, K = r->K, E = r->E;
    count_ids(r, ids, n * K, r->pend_count + (size_t)l * (size_t)E, l * E, E, !r->layer_seen[l]);
    r->layer_seen[l] = true;
    if (r->R && ev->phys_ids) {
        size_t base = r->LE + (size_t)l * (size_t)r->R;
        count_ids(r, ev->phys_ids, n * K, r->pend_count + base, (int32_t)base, r->R, !r->phys_seen[l]);
        r->phys_seen[l] = true;
    }
    if (r->mode == MT_REC_PER_TOKEN && !r->stage_failed) {
        /* Narrowed copy; ids outside 0..E-1 are stored as -1. */
        size_t row = (size_t)r->L * (size_t)K, off = (size_t)l * (size_t)K;
        if (r->id_bytes == 1) {
            for (int t = 0; t < n; t++) {
                uint8_t *d = (uint8_t *)r->stage_ids + (size_t)t * row + off;
                const int32_t *src = ids + (size_t)t * (size_t)K;
                for (int j = 0; j < K; j++) d[j] = (uint32_t)src[j] < (uint32_t)E ? (uint8_t)src[j] : 255;
            }
        } else if (r->id_bytes == 2) {
            for (int t = 0; t < n; t++) {
                int16_t *d = (int16_t *)r->stage_ids + (size_t)t * row + off;
                const int32_t *src = ids + (size_t)t * (size_t)K;
                for (int j = 0; j < K; j++) d[j] = (uint32_t)src[j] < (uint32_t)E ? (int16_t)src[j] : -1;
            }
        } else {
            for (int t = 0; t < n; t++) {
                int32_t *d = (int32_t *)r->stage_ids + (size_t)t * row + off;
                const int32_t *src = ids + (size_t)t * (size_t)K;
                for (int j = 0; j < K; j++) d[j] = (uint32_t)src[j] < (uint32_t)E ? src[j] : -1;
            }
        }
    }
}

/* Window slot for a new pass of n counters (bounded ring, or growing for per_pass -1); subtracts an
 * evicted pass from the totals. NULL when out of memory. */
static mt_rec_pass *window_slot(mt_recorder *r, int n) {
    size_t le = r->NC;
    if (r->ring_len == r->ring_cap && r->buffer_size < 0) {
        int cap = r->ring_cap * 2;
        mt_rec_pass *nr = calloc((size_t)cap, sizeof *nr);
        if (!nr) return NULL;
        for (int i = 0; i < r->ring_len; i++) nr[i] = r->ring[(r->ring_head + i) % r->ring_cap];
        for (int i = r->ring_len; i < r->ring_cap; i++) nr[i] = r->ring[(r->ring_head + i) % r->ring_cap];
        free(r->ring);
        r->ring = nr;
        r->ring_cap = cap;
        r->ring_head = 0;
    }
    mt_rec_pass *p;
    if (r->ring_len == r->ring_cap) { /* evict the oldest */
        p = &r->ring[r->ring_head];
        for (int i = 0; i < p->n; i++) r->total[p->idx[i]] -= p->cnt[i];
        r->num_tokens -= p->n_tokens;
        r->bal_sum -= p->balancedness;
        r->num_passes--;
        r->ring_head = (r->ring_head + 1) % r->ring_cap;
        r->ring_len--;
    } else {
        p = &r->ring[(r->ring_head + r->ring_len) % r->ring_cap];
    }
    p->n = 0;
    if (p->cap < n) {
        int cap = n < 64 ? 64 : n;
        if ((size_t)cap > le) cap = (int)le;
        int32_t *idx = realloc(p->idx, (size_t)cap * sizeof *idx);
        if (idx) p->idx = idx;
        int32_t *cnt = realloc(p->cnt, (size_t)cap * sizeof *cnt);
        if (cnt) p->cnt = cnt;
        if (!idx || !cnt) return NULL;
        p->cap = cap;
    }
    r->ring_len++;
    return p;
}

/* The request index of id, a new one (named name, copied; NULL: no name; in group) when id is new;
 * -1 when out of memory. */
static int64_t req_index(mt_recorder *r, int64_t id, const char *name, int32_t group) {
    if (r->n_req * 2 >= r->req_hash_cap) {
        int64_t cap = r->req_hash_cap ? r->req_hash_cap * 2 : 64;
        int64_t *keys = malloc((size_t)cap * sizeof *keys), *vals = malloc((size_t)cap * sizeof *vals);
        if (!keys || !vals) {
            free(keys);
            free(vals);
            return -1;
        }
        for (int64_t i = 0; i < cap; i++) vals[i] = -1;
        for (int64_t i = 0; i < r->n_req; i++) {
            uint64_t h = (uint64_t)r->req_ids[i] * 0x9E3779B97F4A7C15ull;
            int64_t s = (int64_t)(h % (uint64_t)cap);
            while (vals[s] >= 0) s = (s + 1) % cap;
            keys[s] = r->req_ids[i];
            vals[s] = i;
        }
        free(r->req_hash_key);
        free(r->req_hash_val);
        r->req_hash_key = keys;
        r->req_hash_val = vals;
        r->req_hash_cap = cap;
    }
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    int64_t s = (int64_t)(h % (uint64_t)r->req_hash_cap);
    while (r->req_hash_val[s] >= 0) {
        if (r->req_hash_key[s] == id) return r->req_hash_val[s];
        s = (s + 1) % r->req_hash_cap;
    }
    if (r->n_req == r->req_cap) {
        int64_t cap = r->req_cap ? r->req_cap * 2 : 64;
        int64_t *ids = realloc(r->req_ids, (size_t)cap * sizeof *ids);
        if (ids) r->req_ids = ids;
        char **names = realloc(r->req_names, (size_t)cap * sizeof *names);
        if (names) r->req_names = names;
        int32_t *groups = realloc(r->req_groups, (size_t)cap * sizeof *groups);
        if (groups) r->req_groups = groups;
        if (!ids || !names || !groups) return -1;
        r->req_cap = cap;
    }
    char *copy = name ? strdup(name) : NULL;
    if (name && !copy) return -1;
    r->req_names[r->n_req] = copy;
    r->req_groups[r->n_req] = group;
    r->req_ids[r->n_req] = id;
    r->req_hash_key[s] = id;
    r->req_hash_val[s] = r->n_req;
    return r->n_req++;
}

/* Room for n more rows in the token store (capped by max_tokens); returns how many fit. */
static int64_t tok_reserve(mt_recorder *r, int64_t n) {
    int64_t want = r->tok_n + n;
    if (want > r->max_tokens) want = r->max_tokens;
    if (want > r->tok_cap) {
        int64_t cap = r->tok_cap ? r->tok_cap : 256;
        while (cap < want) cap *= 2;
        if (cap > r->max_tokens) cap = r->max_tokens;
        size_t row = (size_t)r->L * (size_t)r->K * (size_t)r->id_bytes;
        unsigned char *ids = realloc(r->tok_ids, (size_t)cap * row);
        if (ids) r->tok_ids = ids;
        int64_t *req = realloc(r->tok_req, (size_t)cap * sizeof *req);
        if (req) r->tok_req = req;
        int32_t *pos = realloc(r->tok_pos, (size_t)cap * sizeof *pos);
        if (pos) r->tok_pos = pos;
        int32_t *tok = realloc(r->tok_tok, (size_t)cap * sizeof *tok);
        if (tok) r->tok_tok = tok;
        if (ids && req && pos && tok) r->tok_cap = cap;
    }
    int64_t room = r->tok_cap - r->tok_n;
    return room < n ? room : n;
}

static void commit_tokens(mt_recorder *r) {
    int64_t n = r->pass_n;
    if (r->stage_failed) {
        r->dropped_tokens += n;
        return;
    }
    /* a token forwarded again after its sequence's preemption has its row already */
    int64_t fresh = n;
    for (int64_t t = 0; r->stage_any_again && t < n; t++) fresh -= r->stage_again[t] != 0;
    int64_t keep = tok_reserve(r, fresh), kept = 0;
    size_t row = (size_t)r->L * (size_t)r->K * (size_t)r->id_bytes;
    for (int64_t t = 0; t < n && kept < keep; t++) {
        if (r->stage_any_again && r->stage_again[t]) continue;
        int64_t ri = req_index(r, r->stage_req[t], r->stage_name[t], r->stage_group[t]);
        if (ri < 0) break;
        int64_t d = r->tok_n++;
        r->tok_req[d] = ri;
        r->tok_pos[d] = r->stage_pos[t];
        r->tok_tok[d] = r->stage_tok[t];
        memcpy(r->tok_ids + (size_t)d * row, r->stage_ids + (size_t)t * row, row);
        kept++;
    }
    if (fresh > kept && r->dropped_tokens == 0) /* once per window: the dump says how many */
        mt_log("per_token recorder: full at %lld rows; the tokens of later passes are dropped until the next "
               "dump or start (their count is the dump's dropped_tokens; serve's --expert-distribution-recorder-max-tokens "
               "sets the room)",
               (long long)r->tok_n);
    r->dropped_tokens += fresh - kept;
}

/* Per-GPU balancedness of the pending pass (mean over MoE layers) from its physical counts. */
static double pass_balancedness(mt_recorder *r) {
    int M = r->plc->num_gpus, spg = r->plc->slots_per_gpu;
    memset(r->gpu_tmp, 0, (size_t)r->L * (size_t)M * sizeof *r->gpu_tmp);
    for (int i = 0; i < r->pend_n; i++) {
        size_t idx = (size_t)r->pend_touched[i];
        if (idx < r->LE) continue;
        size_t l = (idx - r->LE) / (size_t)r->R, slot = (idx - r->LE) % (size_t)r->R;
        r->gpu_tmp[l * (size_t)M + slot / (size_t)spg] += r->pend_count[idx];
    }
    double sum = 0;
    for (int l = 0; l < r->L; l++)
        if (r->is_moe[l]) sum += mt_balancedness_of(r->gpu_tmp + (size_t)l * (size_t)M, M);
    return r->num_moe ? sum / r->num_moe : 1.0;
}

static void commit_pass(mt_recorder *r) {
    double bal = r->plc ? pass_balancedness(r) : 0.0;
    if (r->ring_cap) {
        mt_rec_pass *p = window_slot(r, r->pend_n);
        if (!p) {
            r->dropped_passes++;
            return;
        }
        p->id = r->pass_counter;
        p->n_tokens = r->pass_n;
        p->balancedness = bal;
        p->n = r->pend_n;
        for (int i = 0; i < r->pend_n; i++) {
            p->idx[i] = r->pend_touched[i];
            p->cnt[i] = r->pend_count[r->pend_touched[i]];
        }
    }
    for (int i = 0; i < r->pend_n; i++) r->total[r->pend_touched[i]] += r->pend_count[r->pend_touched[i]];
    r->num_passes++;
    r->num_tokens += r->pass_n;
    r->bal_sum += bal;
    if (r->mode == MT_REC_PER_TOKEN) commit_tokens(r);
}

/* Appends what newer recorded to r's data (both under their owners' control), as if its passes had
 * been committed to r after r's own: the window rules (buffer_size, max_tokens) apply again. */
static void append_newer(mt_recorder *r, const mt_recorder *newer) {
    if (r->ring_cap == 0) { /* stat -1 and per_token: running sums */
        for (size_t i = 0; i < r->NC; i++) r->total[i] += newer->total[i];
        r->num_passes += newer->num_passes;
        r->num_tokens += newer->num_tokens;
        r->bal_sum += newer->bal_sum;
    } else {
        for (int i = 0; i < newer->ring_len; i++) {
            const mt_rec_pass *q = &newer->ring[(newer->ring_head + i) % newer->ring_cap];
            mt_rec_pass *p = window_slot(r, q->n);
            if (!p) {
                r->dropped_passes++;
                continue;
            }
            p->id = q->id;
            p->n_tokens = q->n_tokens;
            p->balancedness = q->balancedness;
            p->n = q->n;
            memcpy(p->idx, q->idx, (size_t)q->n * sizeof *p->idx);
            memcpy(p->cnt, q->cnt, (size_t)q->n * sizeof *p->cnt);
            for (int k = 0; k < q->n; k++) r->total[q->idx[k]] += q->cnt[k];
            r->num_passes++;
            r->num_tokens += q->n_tokens;
            r->bal_sum += q->balancedness;
        }
    }
    r->dropped_passes += newer->dropped_passes;
    int64_t keep = newer->tok_n ? tok_reserve(r, newer->tok_n) : 0, kept = 0;
    size_t row = (size_t)r->L * (size_t)r->K * (size_t)r->id_bytes;
    for (int64_t j = 0; j < keep; j++, kept++) {
        int64_t q = newer->tok_req[j];
        int64_t ri = req_index(r, newer->req_ids[q], newer->req_names[q], newer->req_groups[q]);
        if (ri < 0) break;
        int64_t d = r->tok_n++;
        r->tok_req[d] = ri;
        r->tok_pos[d] = newer->tok_pos[j];
        r->tok_tok[d] = newer->tok_tok[j];
        memcpy(r->tok_ids + (size_t)d * row, newer->tok_ids + (size_t)j * row, row);
    }
    r->dropped_tokens += newer->dropped_tokens + (newer->tok_n - kept);
}

bool mt_rec_put_back(mt_recorder *r, mt_recorder *taken) {
    pthread_mutex_lock(&r->mu);
    if (r->drops != taken->taken_at_drops) { /* reset or switched since: the window is dropped as it would have been */
        pthread_mutex_unlock(&r->mu);
        return false;
    }
    swap_data(r, taken); /* r holds the older data again, taken what r recorded since */
    append_newer(r, taken);
    pthread_mutex_unlock(&r->mu);
    return true;
}

bool mt_recorder_put_back(mt_recorder *r, mt_recorder *taken) {
    bool back = mt_rec_put_back(r, taken);
    mt_recorder_free(taken);
    return back;
}

static void sink_on_pass(void *ctx, const mt_pass_event *ev) {
    mt_recorder *r = ctx;
    (void)ev;
    bool rec = r->in_pass && r->pass_recording;
    r->in_pass = false;
    r->pass_recording = false;
    if (rec) {
        pthread_mutex_lock(&r->mu);
        /* A stop, start or reset between the first layer and here drops the pass: it began
         * before the window the recorder holds now. */
        if (atomic_load(&r->active) && atomic_load(&r->epoch) == r->pass_epoch) commit_pass(r);
        pthread_mutex_unlock(&r->mu);
    }
    r->pass_counter++;
}

void mt_rec_pass_dense(const mt_rec_pass *p, size_t base, size_t len, int32_t *out) {
    memset(out, 0, len * sizeof *out);
    for (int i = 0; i < p->n; i++)
        if ((size_t)p->idx[i] - base < len) out[(size_t)p->idx[i] - base] = p->cnt[i];
}

mt_routing_sink mt_recorder_sink(mt_recorder *r) {
    mt_routing_sink s = {.on_layer = sink_on_layer, .on_pass = sink_on_pass, .ctx = r};
    return s;
}
