/* The expert distribution recorder (SPEC §4), with SGLang's modes, as a routing sink.
 *
 *  - stat:      per hidden layer x logical expert token counts, summed over the last buffer_size
 *               forward passes (a circular window; buffer_size -1 = an unbounded running sum).
 *  - per_pass:  the counts of each of the last buffer_size forward passes (-1: all of them).
 *  - per_token: the routing [T, num_hidden_layers, top_k] of every token with its request, position
 *               and token id, at most max_tokens rows; further tokens are dropped and counted
 *               ("dropped_tokens" in the dump), never silently. Its logical_count covers every
 *               recorded token, dropped ones included. Requests are told apart by the events'
 *               request_ids (else sequence slots) and listed in the index by their request_names
 *               (else the id's decimal digits), as strings. A token forwarded again after its
 *               sequence was preempted (mt_routing_event.recomputed) keeps its one row, and a
 *               probe's token (serve's /health_generate) gets none; the counts of every mode
 *               include both, since the experts computed them.
 * Dense layers: zero rows in logical_count, -1 in per_token topk_ids.
 *
 * Threads: one engine thread calls the sink; other threads may call start/stop/active/dump/
 * dump_json at any time. The sink takes the recorder's mutex once per forward pass (in on_pass),
 * never per layer; a pass is recorded whole or not at all (decided at its first layer).
 * While not active the sink does a flag test per layer and nothing else.
 * Dumps reset the recorded data (as SGLang's dump does). Files are written atomically.
 *
 * With a placement (opts.placement, the one the engine dispatches over), the recorder also counts
 * the physical slots of the events (mt_routing_event.phys_ids) in the same window: physical_count
 * [num_hidden_layers, num_physical], whose replicas of each expert add up to its logical_count, and
 * per-GPU loads and balancedness measured from them (each pass's own balancedness too, averaged).
 * Formats: docs/RECORDER.md. */
#ifndef MT_ROUTING_RECORDER_H
#define MT_ROUTING_RECORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "model/config.h"
#include "routing/capture.h"
#include "routing/placement.h"
#include "util/err.h"

typedef enum mt_recorder_mode { MT_REC_STAT, MT_REC_PER_PASS, MT_REC_PER_TOKEN } mt_recorder_mode;

#define MT_REC_DEFAULT_BUFFER_SIZE 1000
#define MT_REC_DEFAULT_MAX_TOKENS 65536
#define MT_REC_DEFAULT_DUMP_DIR "/tmp"

typedef struct mt_recorder_opts {
    mt_recorder_mode mode;
    int buffer_size;       /* forward passes kept (stat, per_pass); -1 unbounded; > 0 otherwise */
    const char *dump_dir;  /* NULL: MT_REC_DEFAULT_DUMP_DIR. Not copied: must outlive the recorder */
    int ep_size;           /* for balancedness in dumps; 0: 8 if it divides num_experts, else 1; else
                              it must divide num_experts (equal contiguous blocks); with a
                              placement: 0 or its num_gpus */
    long max_tokens;       /* per_token row bound (> 0) */
    const mt_placement *placement; /* the placement the engine runs, or NULL. Not copied: must
                                      outlive the recorder */
} mt_recorder_opts;

/* Defaults: stat, buffer 1000, dump dir /tmp, ep_size auto, 65536 tokens, no placement. */
void mt_recorder_opts_default(mt_recorder_opts *o);
/* Applies MOETRACE_EXPERT_RECORDER_MODE and MOETRACE_EXPERT_DUMP_DIR when set (the dir string
 * points into the environment). An invalid value (unknown mode, empty, a dir that is not an
 * existing folder) is an error naming the variable; o is then untouched. */
int mt_recorder_opts_from_env(mt_recorder_opts *o, mt_err *err);
/* "stat" | "per_pass" | "per_token". */
int mt_recorder_parse_mode(const char *s, mt_recorder_mode *m, mt_err *err);
const char *mt_recorder_mode_name(mt_recorder_mode m);

typedef struct mt_recorder mt_recorder;

/* cfg gives num_hidden_layers, num_experts, top_k, layer_is_moe. model_name goes into dumps
 * (copied; NULL: ""). Starts inactive. */
mt_recorder *mt_recorder_new(const mt_config *cfg, const char *model_name, const mt_recorder_opts *o,
                             mt_err *err);
void mt_recorder_free(mt_recorder *r);

void mt_recorder_start(mt_recorder *r);
void mt_recorder_stop(mt_recorder *r);
bool mt_recorder_active(const mt_recorder *r);
/* Drops everything recorded so far (the active state is unchanged). */
void mt_recorder_reset(mt_recorder *r);
/* Exchanges what a and b recorded (counts, window, tokens), not their options, state or a pass in
 * progress: e.g. a full recorder with an empty one in O(1) under their locks, to dump the data
 * afterwards without holding the sink. -1 when they were made for different shapes or options. */
int mt_recorder_swap(mt_recorder *a, mt_recorder *b);
/* A new recorder holding what r recorded (counts, window, tokens) under r's options and a copy of r's
 * placement, inactive; r is left empty as a dump leaves it (a pass in progress commits into it).
 * O(size of the shape), not of the data: so a window can be taken between two forward passes and
 * dumped later from another thread (mt_recorder_dump_window, or mt_recorder_dump on the result and
 * mt_recorder_free). Not while mt_recorder_set_placement runs on r (serve orders both under its
 * window lock). NULL with err when out of memory (r then unchanged). */
mt_recorder *mt_recorder_take(mt_recorder *r, mt_err *err);
/* mt_recorder_take in two steps, for windows of several recorders taken at one pass boundary: the
 * empty twin (the only step that can fail: NULL with err, out of memory), then the exchange, which
 * cannot fail. r's placement must not change between the two. */
mt_recorder *mt_recorder_twin(mt_recorder *r, mt_err *err);
void mt_recorder_take_into(mt_recorder *r, mt_recorder *twin);
/* Makes r's next twin ahead, off the engine thread, so that the next mt_recorder_twin or
 * mt_recorder_take between two passes only hands it out instead of allocating one (a twin made
 * before a placement switch is not handed out: that take makes its own). Any thread; 0 when one is
 * ready, -1 with err when out of memory (the take then makes its own). */
int mt_recorder_prepare_twin(mt_recorder *r, mt_err *err);
/* A window taken from r and not written goes back in front of what r recorded since, as if never
 * taken (unless r was reset or switched placements since: then it is dropped, as it would have
 * been); frees taken. true when it went back, false when dropped. Windows of r go back in the order
 * they were taken (the caller's lock). */
bool mt_recorder_put_back(mt_recorder *r, mt_recorder *taken);
mt_recorder_mode mt_recorder_get_mode(const mt_recorder *r);

/* Names request group g (>= 1; mt_routing_event.request_groups) into out (size bytes); false when
 * the group has no name. Called under the recorder's mutex while a per_token dump is written. */
typedef bool (*mt_recorder_group_label)(void *ctx, int32_t g, char *out, size_t size);
/* per_token dumps then list each request's group by name in the index ("request_domains"), when
 * any recorded request has a group. */
void mt_recorder_set_group_label(mt_recorder *r, mt_recorder_group_label fn, void *ctx);

/* The sink to hand to the engine (ctx = r). */
mt_routing_sink mt_recorder_sink(mt_recorder *r);

/* Writes the dump into dump_dir and resets the recorded data. The data is taken out of r first
 * (mt_recorder_take) and written from there, so the sink's next pass does not wait for the files;
 * when the write fails, the data goes back in front of what r recorded meanwhile (kept for the next
 * dump, as if never taken). stat/per_pass:
 * expert_distribution_<unix-ms>.json; per_token: expert_distribution_<unix-ms>.safetensors plus
 * the index expert_distribution_<unix-ms>.json (whose path is returned). A name already taken gets
 * a "_<n>" suffix. path_out (may be NULL) receives the JSON path. */
int mt_recorder_dump(mt_recorder *r, char *path_out, size_t path_len, mt_err *err);
/* The second half of mt_recorder_dump, for a window taken earlier (mt_recorder_take on r): writes
 * it, and when the write fails puts it back into r in front of what r recorded since (unless r was
 * reset or switched placements since: then it is dropped, as it would have been). Frees taken.
 * Dumps of r run one at a time from their take to here: the caller orders them (serve: its
 * window lock), as mt_recorder_dump does its own. */
int mt_recorder_dump_window(mt_recorder *r, mt_recorder *taken, char *path_out, size_t path_len, mt_err *err);

/* The dump's JSON object (for per_token: the index, without request ids nor tensors), for inline
 * HTTP answers. reset: also reset the recorded data. NULL + err on failure. cJSON_Delete it. */
cJSON *mt_recorder_dump_json(mt_recorder *r, bool reset, mt_err *err);

/* Counters, for tests and metrics (read under the mutex). */
typedef struct mt_recorder_counts {
    int64_t num_forward_passes; /* passes in the window (per_token: since the last reset) */
    int64_t num_tokens;         /* tokens of those passes */
    int64_t tokens_recorded;    /* per_token rows kept */
    int64_t dropped_tokens;     /* per_token rows dropped for lack of room */
    double pass_balancedness;   /* with a placement: mean over the window's passes of each pass's
                                   per-GPU balancedness (mean over MoE layers); 1.0 without passes */
} mt_recorder_counts;
void mt_recorder_get_counts(mt_recorder *r, mt_recorder_counts *c);
/* Copies the windowed logical_count [num_hidden_layers, num_experts] into out. */
void mt_recorder_logical_count(mt_recorder *r, int64_t *out);
/* Copies the windowed physical_count [num_hidden_layers, num_physical] into out; -1 without a
 * placement. */
int mt_recorder_physical_count(mt_recorder *r, int64_t *out);
/* The three above in one critical section, so a pass committed meanwhile cannot make them disagree
 * (what /metrics and the dashboard show): c, logical [num_hidden_layers, num_experts] and, when not
 * NULL, physical [num_hidden_layers, num_physical] (-1 when given without a placement). */
int mt_recorder_window(mt_recorder *r, mt_recorder_counts *c, int64_t *logical, int64_t *physical);

/* Switches the placement whose physical slots the recorder counts (serve's /update_expert_location,
 * called between two forward passes on the engine thread) and drops the recorded data, logical and
 * physical, as mt_recorder_reset does: a window never mixes two placements (dump it first to keep
 * it). Recording goes on if it was active. p must have the running placement's shape (the same
 * num_physical and num_gpus, so the counters keep their layout) and fit the recorder's layers and
 * experts; -1 with err otherwise, or when the recorder was made without a placement. p is not
 * copied and must outlive the recorder. */
int mt_recorder_set_placement(mt_recorder *r, const mt_placement *p, mt_err *err);

#endif
