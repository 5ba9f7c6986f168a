/* Routing capture: the one way routing decisions leave the forward pass.
 *
 * For every MoE layer of every forward pass, the engine calls sink->on_layer once with the top-k
 * logical expert ids (router order: highest weight first) and weights of every token in the flat
 * batch. A NULL sink costs one pointer test per layer. Sinks must not call back into the engine.
 * When the engine runs an expert placement (routing/placement.h), the event also carries the physical
 * slot each choice was dispatched to (phys_ids); routing stays logical everywhere else. */
#ifndef MT_ROUTING_CAPTURE_H
#define MT_ROUTING_CAPTURE_H

#include <stdint.h>

typedef struct mt_routing_event {
    int layer;                  /* hidden-layer index (0 .. num_hidden_layers-1) */
    int n_tokens;               /* tokens in this forward pass */
    int top_k;
    const int32_t *seq_ids;     /* [n_tokens] engine sequence slot of each token */
    const int32_t *positions;   /* [n_tokens] position of each token in its sequence */
    const int32_t *tokens;      /* [n_tokens] token ids */
    const int64_t *request_ids; /* [n_tokens] caller's request id of each token, or NULL */
    const char *const *request_names; /* [n_tokens] the caller's name of each token's request (the id
                                   its client sees, e.g. a response id), or NULL; an entry may be
                                   NULL (no name). Valid until the end of the pass (on_pass). */
    const int32_t *topk_ids;    /* [n_tokens, top_k] logical expert ids */
    const float *topk_weights;  /* [n_tokens, top_k] the weights applied to the experts' outputs */
    const int32_t *phys_ids;    /* [n_tokens, top_k] physical slot of each choice (replica of topk_ids'
                                   expert; GPU = slot / slots per GPU), or NULL without a placement */
    const int32_t *request_groups; /* [n_tokens] the group of each token's request (mt_request.group:
                                   0 none, 1.. a caller's groups, e.g. domains), or NULL (none) */
    const uint8_t *recomputed;  /* [n_tokens] 1 where the token gets no per_token row of its own: it
                                   was forwarded before (its sequence was preempted and forwards it
                                   again: same routing), or it is a probe's (mt_request.probe); the
                                   experts ran either way, so counts include it. NULL: none */
} mt_routing_event;

/* End of one forward pass (after its last layer). */
typedef struct mt_pass_event {
    int n_tokens;
    int num_seqs_in_pass;       /* distinct sequences among the tokens */
} mt_pass_event;

typedef struct mt_routing_sink {
    void (*on_layer)(void *ctx, const mt_routing_event *ev);
    void (*on_pass)(void *ctx, const mt_pass_event *ev);  /* may be NULL */
    void *ctx;
} mt_routing_sink;

/* Several sinks behind one: events go to each in order. */
#define MT_FANOUT_MAX 4
typedef struct mt_routing_fanout {
    mt_routing_sink sinks[MT_FANOUT_MAX];
    int n;
} mt_routing_fanout;

/* Adds s to f (ignored when full or when s has no on_layer). */
void mt_routing_fanout_add(mt_routing_fanout *f, mt_routing_sink s);
mt_routing_sink mt_routing_fanout_sink(mt_routing_fanout *f);

/* A sink that keeps the routing of one sequence by position, in the SPEC §2 layout
 * [rows, num_hidden_layers, top_k] with -1 for dense layers. */
typedef struct mt_routing_table {
    int num_layers;
    int top_k;
    int capacity;    /* rows allocated */
    int rows;        /* 1 + highest position seen */
    int32_t *ids;    /* [capacity, num_layers, top_k] */
} mt_routing_table;

int mt_routing_table_init(mt_routing_table *t, int num_layers, int top_k, int capacity);
void mt_routing_table_free(mt_routing_table *t);
/* A sink writing every event's tokens into t (all tokens of the batch, whatever their sequence). */
mt_routing_sink mt_routing_table_sink(mt_routing_table *t);
/* The same with the physical slots (phys_ids) instead of the logical ids; events without phys_ids
 * are skipped (their rows stay -1). */
mt_routing_sink mt_routing_table_physical_sink(mt_routing_table *t);

#endif
