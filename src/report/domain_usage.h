/* Expert usage per domain (labelled groups of requests), recorded live and written as a report:
 * one stat recorder per label, fed through a split sink (routing/routing_split.h) with the tokens
 * of that label's requests (mt_request.group = the label's group), and one of the tokens of no
 * label, so each domain's counts are exactly its forwarded tokens' and all traffic (the domains'
 * counts and the rest's, each token counted once) covers the same passes. `moetrace profile --domain-field` takes the labels from the dataset,
 * `moetrace serve --domain-field` from the requests.
 *
 * mt_domain_usage_write takes every recorder's counts at one pass boundary, resets them (as a
 * recorder's dump does) and writes under a folder (or in two steps: mt_domain_usage_take between
 * two passes, mt_domain_window_write later on another thread):
 *   domains/<slug>/expert_distribution_<ms>.json   each domain's stat dump (SPEC §4)
 *   domains.json   "moetrace.domain_usage.v1": per domain its dump, requests, tokens, divergence
 *                  from the rest of the traffic per layer and distinctive experts
 *                  (routing/usage_compare.h)
 *   domains.png    each domain's lift heatmap (report/usage_report.h), up to 32 domains
 * The counts are running sums since the start, the last reset or the last write (no window of
 * passes), so the domains and all traffic cover the same passes.
 *
 * Threads: the engine thread calls the sink; any thread may call the rest, labels included, while
 * the engine runs. A take holds the sink's end of pass (the engine waits there) only while it moves
 * each recorder's data into an empty twin made beforehand (mt_recorder_take_into); the write reads
 * the twins. Those twins are made ahead where possible (mt_domain_usage_ready_take, and for a new
 * label when it comes), so a take between two passes only hands them out. */
#ifndef MT_REPORT_DOMAIN_USAGE_H
#define MT_REPORT_DOMAIN_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/config.h"
#include "routing/capture.h"
#include "routing/recorder.h"
#include "util/err.h"

#define MT_DOMAIN_MAX 256        /* distinct labels */
#define MT_DOMAIN_LABEL_MAX 200  /* bytes of a label */

typedef struct mt_domain_usage mt_domain_usage;

/* cfg, model_name (copied), base: the options of the run's recorder (ep size, placement; its mode,
 * window and dump dir are not used). field: the field that labels requests (copied; domains.json's
 * "field"); data: the dataset's path (copied; "data"), or NULL for served traffic. Starts
 * inactive. cfg and base's placement must outlive the result. */
mt_domain_usage *mt_domain_usage_new(const mt_config *cfg, const char *model_name, const mt_recorder_opts *base,
                                     const char *field, const char *data, mt_err *err);
void mt_domain_usage_free(mt_domain_usage *u);
/* The group (1, 2, ...) of label, for mt_request.group: a label seen first gets a new group and
 * its own recorder (active when the usage is). Errors: an empty label, one longer than
 * MT_DOMAIN_LABEL_MAX bytes, a new label when MT_DOMAIN_MAX are known, out of memory. */
int mt_domain_usage_group(mt_domain_usage *u, const char *label, mt_err *err);
/* Counts one request of group g (0: unlabelled) for domains.json's "requests", while recording. */
void mt_domain_usage_count_request(mt_domain_usage *u, int g);
int mt_domain_usage_num_domains(mt_domain_usage *u);
/* The label of group g into out (size bytes); false when g names no domain. ctx: the usage (an
 * mt_recorder_group_label, so per_token dumps name their requests' domains). */
bool mt_domain_usage_label(void *ctx, int32_t g, char *out, size_t size);
/* A known domain's figures (for /metrics). */
typedef struct mt_domain_stat {
    const char *name;        /* the label (valid while u is) */
    int64_t requests_total;  /* requests counted with it since u was made, recording or not */
    int64_t tokens;          /* its forwarded tokens since the start, the last reset or write */
} mt_domain_stat;
/* The known domains' figures into out[MT_DOMAIN_MAX], in order of first appearance; returns how
 * many. */
int mt_domain_usage_stats(mt_domain_usage *u, mt_domain_stat *out);
mt_routing_sink mt_domain_usage_sink(mt_domain_usage *u);
void mt_domain_usage_start(mt_domain_usage *u);
void mt_domain_usage_stop(mt_domain_usage *u);
/* Switches the placement whose physical slots every domain's recorder counts (serve's placement
 * switches, between two forward passes) and drops what was recorded, as mt_recorder_set_placement
 * does (write it first to keep it). p must have the running placement's shape and outlive u. */
int mt_domain_usage_set_placement(mt_domain_usage *u, const mt_placement *p, mt_err *err);
/* Drops what was recorded (labels stay known). */
void mt_domain_usage_reset(mt_domain_usage *u);
/* Makes dir, dir/domains and each known domain's folder in it, so that a path taken by a file is
 * an error before a run rather than at its end. */
int mt_domain_usage_prepare(mt_domain_usage *u, const char *dir, mt_err *err);
/* Writes the files above under dir (made when missing; domains.png only with picture) and resets
 * the counts; the path of domains.json goes to json_path. Errors when no label is known yet; a write
 * that fails leaves no file and keeps the counts (mt_domain_usage_put_back). */
int mt_domain_usage_write(mt_domain_usage *u, const char *dir, bool picture, char *json_path, size_t json_path_len,
                          mt_err *err);

/* What the domains recorded, taken out at one pass boundary (the counts reset as by a write), to be
 * written later: serve takes it with the recorder's window between two passes and writes both off
 * the engine thread. NULL with err when no label is known yet or out of memory (nothing taken then).
 * Not while mt_domain_usage_set_placement runs; u must outlive the window. */
typedef struct mt_domain_window mt_domain_window;
mt_domain_window *mt_domain_usage_take(mt_domain_usage *u, mt_err *err);
/* Makes every known recorder's twin for the next take ahead (mt_recorder_prepare_twin), off the
 * engine thread, so that take only moves data. -1 with err when out of memory (that take then makes
 * what is missing itself). */
int mt_domain_usage_ready_take(mt_domain_usage *u, mt_err *err);
/* Writes a taken window's files under dir as mt_domain_usage_write does (it stays the caller's);
 * a write that fails removes what it wrote (so no half report remains) and the folders it leaves
 * empty. */
int mt_domain_window_write(mt_domain_window *w, const char *dir, bool picture, char *json_path, size_t json_path_len,
                           mt_err *err);
void mt_domain_window_free(mt_domain_window *w); /* NULL: nothing */
/* A window not written goes back into its usage in front of what was recorded since (as
 * mt_recorder_put_back; dropped when a reset or a placement switch came since), and is freed.
 * true when it went back. */
bool mt_domain_usage_put_back(mt_domain_window *w);

#endif
