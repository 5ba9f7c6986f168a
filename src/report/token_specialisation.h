/* Vocabulary specialisation of a per_token dump (`moetrace report INDEX.json --token-specialisation`):
 * for each expert of a layer, the token ids routed to it most often relative to how often they occur,
 * after OLMoE's analysis (arXiv 2409.02060, section "MoE Analysis", "Vocabulary specialization";
 * docs/RECORDER.md, "Co-activation and vocabulary specialisation"). Drawn by
 * token_specialisation_draw.c, or written as JSON.
 *
 * - Every row of the dump is one token (tokens served from the prefix cache have none); a token id
 *   is the token forwarded at that row (the input token). Its occurrences: the rows holding it.
 * - share(x, e) at a layer: of token id x's occurrences, the share whose top_k there includes expert
 *   e (each expert once per row; ids out of range skipped). Only ids with at least min_count
 *   occurrences are ranked (rarer ids would score 1.0 by chance).
 * - An expert's top tokens: the MT_TOKEN_SPEC_TOP ids of highest share, ties to the higher count,
 *   then the lower id. Its score: the mean share of its top tokens (NAN when no ranked id reached it).
 *   The paper defines the share per (expert, token); the score is this project's summary of it.
 * - tokens: the rows whose top_k includes the expert at that layer (every id, ranked or not).
 * Cost: one pass over the rows for the occurrences, then one per layer: O(T x layers x top_k)
 * expected time. Memory: hash maps of 16-byte slots kept at most half full, one of the distinct
 * token ids and, one layer at a time, one of the distinct (ranked id, expert) pairs seen (at most
 * min(T x top_k, ranked ids x num_experts)); the results, O(layers x num_experts x
 * MT_TOKEN_SPEC_TOP). The dump is read in place. */
#ifndef MT_REPORT_TOKEN_SPECIALISATION_H
#define MT_REPORT_TOKEN_SPECIALISATION_H

#include <stdint.h>

#include "report/request_trace.h"
#include "util/err.h"

#define MT_TOKEN_SPEC_FORMAT "moetrace.token_specialisation.v1"
#define MT_TOKEN_SPEC_TOP 10       /* token ids kept per expert; the score is over them */
#define MT_TOKEN_SPEC_MIN_COUNT 8  /* the default least occurrences of a ranked id */
#define MT_TOKEN_SPEC_MAX_ROWS 64  /* experts drawn per layer (the most specialised); the JSON has all */
#define MT_TOKEN_SPEC_DRAWN 5      /* top tokens drawn per expert */

typedef struct mt_tspec_token {
    int32_t id;
    int64_t count;       /* its rows whose top_k at the layer includes the expert */
    int64_t occurrences; /* its rows */
    double share;        /* count / occurrences */
} mt_tspec_token;

typedef struct mt_tspec_expert {
    int64_t tokens;      /* rows whose top_k at the layer includes the expert */
    int n_top;
    mt_tspec_token top[MT_TOKEN_SPEC_TOP]; /* highest share first */
    double score;        /* mean share of top[0 .. n_top); NAN when n_top is 0 */
} mt_tspec_expert;

typedef struct mt_tspec_layer {
    int layer;                /* hidden layer */
    mt_tspec_expert *experts; /* [num_experts] by id */
    double mean_score;        /* over the experts with a score; NAN when none has one */
} mt_tspec_layer;

typedef struct mt_token_spec {
    const mt_per_token_dump *dump; /* read from (not owned: it must outlive s) */
    int min_count;
    int64_t distinct_ids;          /* token ids in the dump */
    int64_t ranked_ids;            /* of them, those with at least min_count occurrences */
    int n;                          /* layers */
    mt_tspec_layer *layers;         /* [n] in the order of the layers given */
    int64_t n_text;                 /* mt_token_spec_decode: the ids of the top tokens, */
    int32_t *text_id;               /* ascending, */
    char **text;                    /* and their texts */
} mt_token_spec;

/* The specialisation of d's experts at the hidden layers layers[0..n) (MoE layers of d, as
 * mt_analysis_layers gives them), ranking ids of at least min_count (>= 1) occurrences. */
int mt_token_spec_compute(const mt_per_token_dump *d, const int *layers, int n, int min_count, mt_token_spec *s,
                          mt_err *err);
void mt_token_spec_free(mt_token_spec *s);

/* The text of every top token, each decoded alone by the tokenizer at tokenizer_path
 * (mt_request_trace_decode_ids); an id outside its vocabulary is an error naming it. */
int mt_token_spec_decode(mt_token_spec *s, const char *tokenizer_path, mt_err *err);
/* The text of top token id, or NULL (not decoded). */
const char *mt_token_spec_text(const mt_token_spec *s, int32_t id);

/* Writes s as JSON, or draws it (.png or .svg by out_path's extension: per layer, one row per
 * expert, most specialised first, at most MT_TOKEN_SPEC_MAX_ROWS, with its score and its first
 * MT_TOKEN_SPEC_DRAWN top tokens); atomically. */
int mt_token_spec_write_json(const mt_token_spec *s, const char *out_path, mt_err *err);
int mt_token_spec_render(const mt_token_spec *s, const char *out_path, mt_err *err);

#endif
