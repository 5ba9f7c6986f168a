#include "routing/capture.h"

#include <stdlib.h>
#include <string.h>

int mt_routing_table_init(mt_routing_table *t, int num_layers, int top_k, int capacity) {
    memset(t, 0, sizeof *t);
    t->num_layers = num_layers;
    t->top_k = top_k;
    t->capacity = capacity > 0 ? capacity : 1;
    size_t n = (size_t)t->capacity * (size_t)num_layers * (size_t)top_k;
    t->ids = malloc(n * sizeof *t->ids);
    if (!t->ids) return -1;
    for (size_t i = 0; i < n; i++) t->ids[i] = -1;
    return 0;
}

void mt_routing_table_free(mt_routing_table *t) {
    free(t->ids);
    memset(t, 0, sizeof *t);
}

static int grow(mt_routing_table *t, int need) {
    int cap = t->capacity;
    while (cap < need) cap *= 2;
    if (cap == t->capacity) return 0;
    size_t row = (size_t)t->num_layers * (size_t)t->top_k;
    int32_t *ids = realloc(t->ids, (size_t)cap * row * sizeof *ids);
    if (!ids) return -1;
    for (size_t i = (size_t)t->capacity * row; i < (size_t)cap * row; i++) ids[i] = -1;
    t->ids = ids;
    t->capacity = cap;
    return 0;
}

static void table_write(mt_routing_table *t, const mt_routing_event *ev, const int32_t *ids) {
    for (int i = 0; i < ev->n_tokens; i++) {
        int pos = ev->positions[i];
        if (pos < 0 || grow(t, pos + 1) != 0) continue;
        if (pos + 1 > t->rows) t->rows = pos + 1;
        int32_t *dst = t->ids + ((size_t)pos * t->num_layers + ev->layer) * t->top_k;
        memcpy(dst, ids + (size_t)i * ev->top_k, (size_t)ev->top_k * sizeof *dst);
    }
}

static void table_on_layer(void *ctx, const mt_routing_event *ev) { table_write(ctx, ev, ev->topk_ids); }

static void table_on_layer_physical(void *ctx, const mt_routing_event *ev) {
    if (ev->phys_ids) table_write(ctx, ev, ev->phys_ids);
}

mt_routing_sink mt_routing_table_sink(mt_routing_table *t) {
    mt_routing_sink s = {table_on_layer, NULL, t};
    return s;
}

mt_routing_sink mt_routing_table_physical_sink(mt_routing_table *t) {
    mt_routing_sink s = {table_on_layer_physical, NULL, t};
    return s;
}

void mt_routing_fanout_add(mt_routing_fanout *f, mt_routing_sink s) {
    if (f->n < MT_FANOUT_MAX && s.on_layer) f->sinks[f->n++] = s;
}

static void fanout_layer(void *ctx, const mt_routing_event *ev) {
    mt_routing_fanout *f = ctx;
    for (int i = 0; i < f->n; i++) f->sinks[i].on_layer(f->sinks[i].ctx, ev);
}

static void fanout_pass(void *ctx, const mt_pass_event *ev) {
    mt_routing_fanout *f = ctx;
    for (int i = 0; i < f->n; i++)
        if (f->sinks[i].on_pass) f->sinks[i].on_pass(f->sinks[i].ctx, ev);
}

mt_routing_sink mt_routing_fanout_sink(mt_routing_fanout *f) {
    mt_routing_sink s = {fanout_layer, fanout_pass, f};
    return s;
}
