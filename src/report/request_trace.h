/* One request's routing out of a per_token dump (`moetrace report INDEX.json --request RID`): its
 * rows, in position order, read from the index and the safetensors file it names (docs/RECORDER.md,
 * "per_token" and "One request's trace"), drawn as a picture or written as JSON.
 *
 * - The request is the first entry of the index's request_ids equal to the id (exactly); its rows
 *   are those whose request_index points at that entry. A row whose position repeats an earlier
 *   row's is left out (the recorder keeps one row per token; a hand-made file might not).
 * - Missing positions: the positions below the request's highest recorded one that have no row
 *   (served from the prefix cache by another request, forwarded outside the recording, or dropped
 *   when the recorder was full).
 * - Experts: [n, num_hidden_layers, top_k] logical ids as the dump holds them, -1 for dense layers.
 * - Picture (.png or .svg, Cairo): a title, then the request's layers x experts heatmap (share of
 *   its tokens routed to each expert, all top_k choices counted; hidden layers as columns), then a
 *   grid of one row per token (at most MT_REQUEST_TRACE_MAX_ROWS, said when cut) and one column per
 *   hidden layer, each cell coloured by the token's top-1 expert (mt_request_trace_expert_rgb).
 * - JSON (format MT_REQUEST_TRACE_FORMAT): every row, no cap. Both are written atomically.
 * Errors name the file and the field (or the request id); a position outside 0 .. 2^26 - 1 is one. */
#ifndef MT_REPORT_REQUEST_TRACE_H
#define MT_REPORT_REQUEST_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/safetensors.h"
#include "util/err.h"

struct cJSON;

/* A per_token dump opened for reading row by row: the reader of mt_request_trace_load, which the
 * analyses of every row (coactivation.h, token_specialisation.h) share. Its index's shape and names,
 * and its tensors mapped in place, checked: I64 request_index [T], I32 topk_ids
 * [T, num_hidden_layers, top_k], I32 position [T] and I32 token_id [T]. Rows are read where they lie
 * in the mapping: nothing is copied or allocated per row. */
typedef struct mt_per_token_dump {
    char *model;            /* the index's "model" ("" when absent) */
    int num_hidden_layers, num_experts, top_k;
    int num_moe_layers;
    int *moe_layers;        /* [num_moe_layers] ascending hidden-layer indices */
    bool *layer_is_moe;     /* [num_hidden_layers] */
    int64_t dropped_tokens; /* the index's "dropped_tokens" (0 when absent) */
    int64_t rows;           /* T */
    struct cJSON *index;    /* the index as read (request_ids, request_domains) */
    mt_checkpoint *ck;
    const mt_tensor_info *request_index, *topk_ids, *position, *token_id;
} mt_per_token_dump;

/* Opens the per_token dump whose JSON index is at index_path (its tensors' file is found beside it
 * when the index names it relatively). `what` names the command in the error for a dump of another
 * mode ("--request needs a per_token dump, and this is a \"stat\" dump ..."). Other errors: a
 * malformed index, a missing or malformed safetensors file, a tensor missing or of another shape,
 * and rows that disagree with the index, checked here once for every reader: a request_index that
 * is no index of request_ids (an array), a row count other than num_tokens_recorded (where the index
 * has it), an id of topk_ids outside -1 .. num_experts - 1. Errors name the file and the field. */
int mt_per_token_open(const char *index_path, const char *what, mt_per_token_dump *d, mt_err *err);
void mt_per_token_close(mt_per_token_dump *d);
/* Row r's experts at hidden layer l: top_k ids into ids (-1 for dense layers, as the dump holds them). */
void mt_per_token_experts(const mt_per_token_dump *d, int64_t r, int l, int32_t *ids);
int32_t mt_per_token_token_id(const mt_per_token_dump *d, int64_t r);

/* Each of ids[0..n) decoded alone by the tokenizer at tokenizer_path (a folder holding
 * tokenizer.json, or the file), special tokens kept, as `moetrace detokenize --ids ID` prints it,
 * into texts[0..n) (malloc'd strings; the caller frees them). An id outside its vocabulary is an
 * error naming the id, with *bad its index (else *bad is -1); nothing is left in texts then. */
int mt_request_trace_decode_ids(const char *tokenizer_path, const int32_t *ids, int64_t n, char **texts,
                                int64_t *bad, mt_err *err);

#define MT_REQUEST_TRACE_FORMAT "moetrace.request_trace.v1"
#define MT_REQUEST_TRACE_MAX_ROWS 1024 /* token rows drawn; the JSON has them all */

typedef struct mt_request_trace {
    char *model;            /* the index's "model" ("" when absent) */
    char *request_id;
    char *domain;           /* its entry of request_domains, or NULL (none, or no such list) */
    int64_t request_index;  /* its index in request_ids */
    int same_id;            /* entries of request_ids equal to the id (>= 1; the first is traced) */
    int num_hidden_layers, num_experts, top_k;
    int num_moe_layers;
    int *moe_layers;        /* [num_moe_layers] ascending hidden-layer indices */
    bool *layer_is_moe;     /* [num_hidden_layers] */
    int64_t dropped_tokens; /* the dump's "dropped_tokens" (0 when absent) */
    int64_t n;              /* the request's rows */
    int32_t *position;      /* [n] strictly ascending */
    int32_t *token_id;      /* [n] */
    int32_t *experts;       /* [n, num_hidden_layers, top_k] */
    int64_t n_gaps;
    int32_t *gap_first, *gap_last; /* [n_gaps] runs of missing positions, ascending, inclusive */
    char **text;            /* [n] each token decoded alone (mt_request_trace_decode), or NULL */
} mt_request_trace;

/* Reads request request_id of the per_token dump whose JSON index is at index_path (its tensors'
 * file is found beside it when the index names it relatively). Errors: not a per_token dump, an
 * id no request has (listing up to 10 of the ids present and how many there are), a missing or
 * malformed safetensors file. */
int mt_request_trace_load(const char *index_path, const char *request_id, mt_request_trace *t, mt_err *err);
void mt_request_trace_free(mt_request_trace *t);

/* Fills t->text with each token decoded alone by the tokenizer at tokenizer_path (a folder holding
 * tokenizer.json, or the file), special tokens kept, as `moetrace detokenize --ids ID` prints it.
 * An id outside its vocabulary is an error naming the id and its position. */
int mt_request_trace_decode(mt_request_trace *t, const char *tokenizer_path, mt_err *err);

/* The positions missing below the highest recorded one (the sum of the gaps' lengths). */
int64_t mt_request_trace_missing_count(const mt_request_trace *t);

/* The categorical colour of expert e (>= 0): golden-angle hues in three lightness tiers, the same
 * for e in every picture. */
void mt_request_trace_expert_rgb(int e, double rgb[3]);

/* s with whitespace and control characters made visible ("␣" space, "↵" newline, "⇥" tab, the
 * control pictures U+2400.. for the other C0 characters, "␡" DEL; "∅" for an empty s) into out
 * (out_size bytes; cut on a character boundary when too small). Returns out. */
const char *mt_request_trace_visible(const char *s, char *out, size_t out_size);

/* Writes the trace as JSON (.json), or draws it (.png / .svg), by out_path's extension. */
int mt_request_trace_write(const mt_request_trace *t, const char *out_path, mt_err *err);
int mt_request_trace_write_json(const mt_request_trace *t, const char *out_path, mt_err *err);
int mt_request_trace_render(const mt_request_trace *t, const char *out_path, mt_err *err);

#endif
