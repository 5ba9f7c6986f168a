/* Expert co-activation of a per_token dump (`moetrace report INDEX.json --coactivation`): per MoE
 * layer, how often experts i and j are chosen for the same token, as OLMoE's analysis defines it
 * (arXiv 2409.02060, section "MoE Analysis", "Expert co-activation"; docs/RECORDER.md, "Co-activation
 * and vocabulary specialisation"). Drawn by coactivation_draw.c, or written as JSON.
 *
 * - Every row of the dump is one token (the recorder keeps one per token forwarded; tokens served
 *   from the prefix cache have none). At a layer, a row's experts are its top_k ids within
 *   0 .. num_experts-1, each once (a -1, an id out of range or a repeat is passed over); a row with
 *   none there is not one of the layer's tokens.
 * - counts[i][j], i != j: the tokens whose experts include both i and j (symmetric); counts[i][i]:
 *   the tokens of expert i.
 * - share(i, j) = counts[i][j] / counts[i][i]: of expert i's tokens, the share that also chose j
 *   (row-normalised; none on the diagonal nor for an expert without tokens).
 * - top pairs: the MT_COACT_TOP_PAIRS ordered pairs (i, j) with counts[i][j] > 0 of highest share,
 *   ties to the higher count, then the lower i, then the lower j.
 * - mean_share: the mean of share(i, j) over the experts i with tokens and every j != i. When every
 *   token has top_k distinct experts it is (top_k - 1) / (num_experts - 1) whatever the routing (a
 *   row of shares sums to top_k - 1): the share of every pair had the experts been chosen uniformly
 *   and independently. mean_max_share: the mean, over the experts with tokens, of each one's highest
 *   share (how strongly an expert is tied to one partner).
 * Cost: one pass over the rows, O(T x layers x top_k^2) time, nothing allocated per token or pair;
 * memory O(layers x num_experts^2) (8 bytes a count) whatever T; the dump is read in place.
 *
 * Shared by the analyses of every row (token_specialisation.h): which layers they cover
 * (mt_analysis_layers, mt_analysis_layers_text), a row's experts (mt_analysis_row_experts), their
 * JSON's header and numbers (mt_analysis_header_json, mt_analysis_number). */
#ifndef MT_REPORT_COACTIVATION_H
#define MT_REPORT_COACTIVATION_H

#include <stdint.h>

#include "report/request_trace.h"
#include "util/err.h"

#define MT_COACTIVATION_FORMAT "moetrace.coactivation.v1"
#define MT_COACT_TOP_PAIRS 10 /* pairs listed per layer */
#define MT_ANALYSIS_DRAWN 4   /* layers a picture shows when none are named */

/* The hidden layers an analysis of d covers, ascending, into *out (malloc'd) and *n: those in
 * asked[0..n_asked) when n_asked > 0 (each must be a MoE layer of d: a dense layer, a layer beyond
 * num_hidden_layers or a repeat is an error naming it, with the MoE layers), else up to max_default
 * MoE layers evenly spaced from the first to the last (every MoE layer when max_default <= 0). A
 * dump without MoE layers is an error. */
int mt_analysis_layers(const mt_per_token_dump *d, const int *asked, int n_asked, int max_default, int **out, int *n,
                       mt_err *err);

/* "layers 0, 5, 11 of 12 MoE layers" into buf: the first of layers[0..n) (at most 24 are
 * written), of `total` layers covered ("…" when more than written). */
void mt_analysis_layers_text(const mt_per_token_dump *d, const int *layers, int n, int total, char *buf, size_t size);

/* Row r's experts at hidden layer l into ids (top_k room): its ids within 0 .. num_experts-1, each
 * once, in router order; how many (0 for a dense layer). */
int mt_analysis_row_experts(const mt_per_token_dump *d, int64_t r, int l, int32_t *ids);

/* v as JSON into buf (32 bytes): the shortest decimal that reads back as v exactly, "null" for NAN. */
void mt_analysis_number(double v, char buf[32]);

struct cJSON;
/* The JSON object an analysis of d begins with: format, model, num_hidden_layers, moe_layers,
 * num_experts, top_k, num_tokens (the rows), dropped_tokens. NULL when out of memory. */
struct cJSON *mt_analysis_header_json(const mt_per_token_dump *d, const char *format);

typedef struct mt_coact_pair {
    int i, j;      /* of expert i's tokens, those that also chose j */
    int64_t count; /* counts[i][j] */
    double share;  /* count / counts[i][i] */
} mt_coact_pair;

typedef struct mt_coact_layer {
    int layer;          /* hidden layer */
    int64_t tokens;     /* rows with at least one expert at this layer */
    int64_t *counts;    /* [num_experts, num_experts] */
    int n_top;
    mt_coact_pair top[MT_COACT_TOP_PAIRS]; /* highest share first */
    double mean_share, mean_max_share;     /* NAN when no expert has tokens (or there is one expert) */
} mt_coact_layer;

typedef struct mt_coactivation {
    const mt_per_token_dump *dump; /* read from (not owned: it must outlive c) */
    int n;                          /* layers */
    mt_coact_layer *layers;         /* [n] in the order of the layers given */
} mt_coactivation;

/* Counts the co-activations of d's rows at the hidden layers layers[0..n) (MoE layers of d, as
 * mt_analysis_layers gives them). */
int mt_coactivation_compute(const mt_per_token_dump *d, const int *layers, int n, mt_coactivation *c, mt_err *err);
void mt_coactivation_free(mt_coactivation *c);
/* share(i, j) of layer l, NAN on the diagonal and for an expert without tokens. */
double mt_coactivation_share(const mt_coact_layer *l, int num_experts, int i, int j);

/* Writes c as JSON, or draws it (.png or .svg by out_path's extension: one heatmap of shares per
 * layer, experts on both axes, a colour bar); atomically. */
int mt_coactivation_write_json(const mt_coactivation *c, const char *out_path, mt_err *err);
int mt_coactivation_render(const mt_coactivation *c, const char *out_path, mt_err *err);

#endif
