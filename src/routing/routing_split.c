/* The request-group split sink: see routing_split.h. */
#include "routing/routing_split.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct mt_routing_split {
    mt_routing_sink *groups;   /* [max_groups]; the first num_groups are set */
    int max_groups;
    atomic_int num_groups;     /* published after the group's sink is written */
    pthread_mutex_t add_mu;    /* one adder at a time */
    mt_routing_sink rest;      /* tokens of no group (on_layer NULL: none) */
    int pass_groups;           /* num_groups as the pass in progress began */
    int pass_slots;            /* pass_groups, + 1 for the rest when there is one: slot pass_groups */
    bool failed;
    /* the pass in progress: its tokens in group order (order[start[g] .. start[g+1]) in batch order) */
    bool in_pass, pass_dropped;
    int pass_n;
    int *start;     /* [max_groups + 2] slot s's tokens are order[start[s] .. start[s + 1]) */
    int *order;     /* [cap] */
    int *seqs_in;   /* [max_groups + 1] distinct sequences of each slot in the pass */
    /* the pass's tokens in that order: their fields, the same at every layer, copied at its first
       layer; their choices, copied at each layer; group g's slice starts at start[g] */
    int cap;        /* tokens the buffers below hold */
    int top_k_cap;  /* top_k they were sized for */
    int32_t *seq, *pos, *tok, *grp, *ids, *phys;
    int64_t *req;
    const char **names;
    uint8_t *again;  /* mt_routing_event.recomputed, in that order */
    float *weights;
    int32_t *sorted; /* scratch: one group's sequence slots, sorted */
};

mt_routing_split *mt_routing_split_new(int max_groups) {
    if (max_groups < 1) return NULL;
    mt_routing_split *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->add_mu, NULL);
    s->groups = calloc((size_t)max_groups, sizeof *s->groups);
    s->start = calloc((size_t)max_groups + 2, sizeof *s->start);
    s->seqs_in = calloc((size_t)max_groups + 1, sizeof *s->seqs_in);
    if (!s->groups || !s->start || !s->seqs_in) {
        mt_routing_split_free(s);
        return NULL;
    }
    s->max_groups = max_groups;
    atomic_init(&s->num_groups, 0);
    return s;
}

int mt_routing_split_add(mt_routing_split *s, mt_routing_sink group) {
    if (!group.on_layer) return -1;
    pthread_mutex_lock(&s->add_mu);
    int n = atomic_load_explicit(&s->num_groups, memory_order_relaxed), g = -1;
    if (n < s->max_groups) {
        s->groups[n] = group;
        atomic_store_explicit(&s->num_groups, n + 1, memory_order_release);
        g = n + 1;
    }
    pthread_mutex_unlock(&s->add_mu);
    return g;
}

void mt_routing_split_set_rest(mt_routing_split *s, mt_routing_sink rest) { s->rest = rest; }

void mt_routing_split_free(mt_routing_split *s) {
    if (!s) return;
    pthread_mutex_destroy(&s->add_mu);
    free(s->groups);
    free(s->start);
    free(s->seqs_in);
    free(s->order);
    free(s->seq);
    free(s->pos);
    free(s->tok);
    free(s->grp);
    free(s->ids);
    free(s->phys);
    free(s->req);
    free(s->names);
    free(s->again);
    free(s->weights);
    free(s->sorted);
    free(s);
}

bool mt_routing_split_failed(const mt_routing_split *s) { return s->failed; }

/* The token's slot in the pass in progress: its group's index (0-based), the rest's slot for a
 * token of no group, or -1 (no group and no rest). */
static int slot_of_token(const mt_routing_split *s, const mt_routing_event *ev, int t) {
    int32_t g = ev->request_groups ? ev->request_groups[t] : 0;
    if (g >= 1 && g <= s->pass_groups) return g - 1;
    return s->pass_slots > s->pass_groups ? s->pass_groups : -1;
}

static mt_routing_sink *slot_sink(mt_routing_split *s, int slot) {
    return slot < s->pass_groups ? &s->groups[slot] : &s->rest;
}

/* Buffers for n tokens of k choices; false when memory runs out. */
static bool reserve(mt_routing_split *s, int n, int k) {
    if (n <= s->cap && k <= s->top_k_cap) return true;
    int cap = n > s->cap ? n : s->cap, kk = k > s->top_k_cap ? k : s->top_k_cap;
    size_t nk = (size_t)cap * (size_t)kk;
#define GROW(p, count)                                                   \
    do {                                                                 \
        void *q = realloc((p), (count) * sizeof *(p));                   \
        if (!q) return false;                                            \
        (p) = q;                                                         \
    } while (0)
    GROW(s->order, (size_t)cap);
    GROW(s->seq, (size_t)cap);
    GROW(s->pos, (size_t)cap);
    GROW(s->tok, (size_t)cap);
    GROW(s->grp, (size_t)cap);
    GROW(s->req, (size_t)cap);
    GROW(s->names, (size_t)cap);
    GROW(s->again, (size_t)cap);
    GROW(s->sorted, (size_t)cap);
    GROW(s->ids, nk);
    GROW(s->phys, nk);
    GROW(s->weights, nk);
#undef GROW
    s->cap = cap;
    s->top_k_cap = kk;
    return true;
}

static int cmp_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Sorts the pass's tokens into slots (counting sort, stable), copies their fields in that order
 * and counts each slot's sequences. */
static void begin_pass(mt_routing_split *s, const mt_routing_event *ev) {
    s->in_pass = true;
    s->pass_dropped = false;
    s->pass_groups = atomic_load_explicit(&s->num_groups, memory_order_acquire);
    int G = s->pass_slots = s->pass_groups + (s->rest.on_layer != NULL);
    int n = ev->n_tokens > 0 ? ev->n_tokens : 0;
    s->pass_n = n;
    memset(s->start, 0, ((size_t)G + 1) * sizeof *s->start);
    if (n == 0) return;
    if (!reserve(s, n, ev->top_k > 0 ? ev->top_k : 1)) {
        s->failed = s->pass_dropped = true;
        return;
    }
    for (int t = 0; t < n; t++) {
        int g = slot_of_token(s, ev, t);
        if (g >= 0) s->start[g + 1]++;
    }
    for (int g = 0; g < G; g++) s->start[g + 1] += s->start[g];
    int *fill = s->seqs_in; /* the next free place of each slot, for now */
    for (int g = 0; g < G; g++) fill[g] = s->start[g];
    for (int t = 0; t < n; t++) {
        int g = slot_of_token(s, ev, t);
        if (g >= 0) s->order[fill[g]++] = t;
    }
    for (int i = 0; i < s->start[G]; i++) {
        int t = s->order[i];
        s->seq[i] = ev->seq_ids ? ev->seq_ids[t] : 0;
        s->pos[i] = ev->positions ? ev->positions[t] : -1;
        s->tok[i] = ev->tokens ? ev->tokens[t] : -1;
        s->grp[i] = ev->request_groups ? ev->request_groups[t] : 0;
        s->req[i] = ev->request_ids ? ev->request_ids[t] : -1;
        s->names[i] = ev->request_names ? ev->request_names[t] : NULL;
        s->again[i] = ev->recomputed ? ev->recomputed[t] : 0;
    }
    for (int g = 0; g < G; g++) {
        int a = s->start[g], m = s->start[g + 1] - a, distinct = 0;
        memcpy(s->sorted, s->seq + a, (size_t)m * sizeof *s->sorted);
        qsort(s->sorted, (size_t)m, sizeof *s->sorted, cmp_int32);
        for (int i = 0; i < m; i++) distinct += i == 0 || s->sorted[i] != s->sorted[i - 1];
        s->seqs_in[g] = distinct;
    }
}

static void split_on_layer(void *ctx, const mt_routing_event *ev) {
    mt_routing_split *s = ctx;
    if (!s->in_pass) begin_pass(s, ev);
    if (s->pass_dropped || ev->n_tokens != s->pass_n || !ev->topk_ids) return;
    int k = ev->top_k;
    if (k < 1 || k > s->top_k_cap) return; /* begin_pass sized the buffers for the pass's top_k */
    for (int i = 0; i < s->start[s->pass_slots]; i++) {
        size_t to = (size_t)i * k, from = (size_t)s->order[i] * k;
        memcpy(s->ids + to, ev->topk_ids + from, (size_t)k * sizeof *s->ids);
        if (ev->topk_weights) memcpy(s->weights + to, ev->topk_weights + from, (size_t)k * sizeof *s->weights);
        if (ev->phys_ids) memcpy(s->phys + to, ev->phys_ids + from, (size_t)k * sizeof *s->phys);
    }
    for (int g = 0; g < s->pass_slots; g++) {
        int a = s->start[g], m = s->start[g + 1] - a;
        if (m == 0) continue;
        size_t ak = (size_t)a * k;
        mt_routing_event sub = {
            .layer = ev->layer, .n_tokens = m, .top_k = k,
            .seq_ids = ev->seq_ids ? s->seq + a : NULL, .positions = ev->positions ? s->pos + a : NULL,
            .tokens = ev->tokens ? s->tok + a : NULL, .request_ids = ev->request_ids ? s->req + a : NULL,
            .request_names = ev->request_names ? s->names + a : NULL, .topk_ids = s->ids + ak,
            .topk_weights = ev->topk_weights ? s->weights + ak : NULL, .phys_ids = ev->phys_ids ? s->phys + ak : NULL,
            .request_groups = s->grp + a, .recomputed = ev->recomputed ? s->again + a : NULL,
        };
        mt_routing_sink *to = slot_sink(s, g);
        to->on_layer(to->ctx, &sub);
    }
}

static void split_on_pass(void *ctx, const mt_pass_event *ev) {
    (void)ev;
    mt_routing_split *s = ctx;
    if (s->in_pass && !s->pass_dropped) {
        for (int g = 0; g < s->pass_slots; g++) {
            int m = s->start[g + 1] - s->start[g];
            mt_routing_sink *k = slot_sink(s, g);
            if (m == 0 || !k->on_pass) continue;
            mt_pass_event sub = {.n_tokens = m, .num_seqs_in_pass = s->seqs_in[g]};
            k->on_pass(k->ctx, &sub);
        }
    }
    s->in_pass = false;
}

mt_routing_sink mt_routing_split_sink(mt_routing_split *s) {
    mt_routing_sink k = {.on_layer = split_on_layer, .on_pass = split_on_pass, .ctx = s};
    return k;
}
