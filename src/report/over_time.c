/* Balancedness over time: reading a series of stat dumps and the placements planned beside them,
 * and the JSON (over_time.h); the picture is over_time_draw.c. */
#include "report/over_time.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "routing/balancedness.h"
#include "routing/placement.h"
#include "routing/stat_dump.h"
#include "util/atomic_write.h"
#include "util/json_util.h"

static const char DUMP_STEM[] = "expert_distribution_", PLAN_STEM[] = "expert_placement_";

void mt_over_time_free(mt_over_time *t) {
    if (!t) return;
    free(t->model);
    free(t->w);
    memset(t, 0, sizeof *t);
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The digits at *s (1 to max of them) as a number, *s moved past them; -1 when none or too many. */
static int64_t digits(const char **s, int max) {
    int64_t v = 0;
    int n = 0;
    for (; isdigit((unsigned char)**s); (*s)++, n++) {
        if (n == max) return -1;
        v = v * 10 + (**s - '0');
    }
    return n ? v : -1;
}

int mt_over_time_stamp(const char *path, int64_t *ms, int *k) {
    const char *s = base_name(path);
    if (strncmp(s, DUMP_STEM, sizeof DUMP_STEM - 1)) return -1;
    s += sizeof DUMP_STEM - 1;
    int64_t stamp = digits(&s, 18), taken = 0;
    if (stamp < 0) return -1;
    if (*s == '_') {
        s++;
        if ((taken = digits(&s, 9)) < 0) return -1;
    }
    if (strcmp(s, ".json")) return -1;
    *ms = stamp;
    *k = (int)taken;
    return 0;
}

/* ---- order ---- */

typedef struct ordered {
    int given; /* index in paths */
    int64_t ms;
    int k;
} ordered;

static int cmp_ordered(const void *a, const void *b) {
    const ordered *x = a, *y = b;
    if (x->ms != y->ms) return x->ms < y->ms ? -1 : 1;
    if (x->k != y->k) return x->k < y->k ? -1 : 1;
    return (x->given > y->given) - (x->given < y->given);
}

/* The windows' order into t->w (file and stamp filled). */
static void order_windows(char *const *paths, int n, mt_over_time *t, ordered *o) {
    t->by_stamp = true;
    for (int i = 0; i < n; i++) {
        o[i].given = i;
        if (mt_over_time_stamp(paths[i], &o[i].ms, &o[i].k)) {
            o[i].ms = -1;
            o[i].k = 0;
            if (t->by_stamp) t->unstamped = paths[i];
            t->by_stamp = false;
        }
    }
    if (t->by_stamp) qsort(o, (size_t)n, sizeof *o, cmp_ordered);
    for (int i = 0; i < n; i++) {
        t->w[i].file = paths[o[i].given];
        t->w[i].stamp_ms = o[i].ms;
        t->w[i].stamp_k = o[i].k;
    }
}

/* ---- one window ---- */

/* The GPUs window d is measured over into t->ep_size (set by the first window that tells it). */
static int gpus_of(const mt_stat_dump *d, const char *path, int ep_flag, mt_over_time *t, mt_err *err) {
    if (d->placement) {
        int M = d->placement->num_gpus;
        if (ep_flag && M != ep_flag)
            return mt_errf(err, "%s: its placement runs on %d GPUs, not --ep-size %d", path, M, ep_flag);
        if (t->ep_size && M != t->ep_size)
            return mt_errf(err, "%s: its placement runs on %d GPUs, the windows before on %d: balancedness over "
                           "different numbers of GPUs does not compare", path, M, t->ep_size);
        t->ep_size = M;
        return 0;
    }
    if (!ep_flag) {
        t->needs_ep_size = true;
        return mt_errf(err, "%s: recorded without an expert placement: give --ep-size M to measure it over M "
                       "contiguous blocks of experts", path);
    }
    if (ep_flag > d->num_experts || d->num_experts % ep_flag)
        return mt_errf(err, "%s: --ep-size %d does not divide the dump's %d experts: without a placement they are "
                       "split into M equal contiguous blocks", path, ep_flag, d->num_experts);
    t->ep_size = ep_flag;
    return 0;
}

/* Per-GPU balancedness of every MoE layer: under the placement it ran, else the contiguous split. */
static void measure(const mt_stat_dump *d, int M, mt_ot_window *w) {
    double sum = 0;
    w->bal_min = INFINITY;
    w->bal_max = -INFINITY;
    for (int m = 0; m < d->num_moe_layers; m++) {
        double b = d->placement ? mt_balancedness_contiguous(d->phys_count + (size_t)m * d->placement->num_physical,
                                                             d->placement->num_physical, M)
                                : mt_balancedness_contiguous(d->moe_count + (size_t)m * d->num_experts, d->num_experts, M);
        sum += b;
        w->bal_min = fmin(w->bal_min, b);
        w->bal_max = fmax(w->bal_max, b);
    }
    w->bal_mean = sum / d->num_moe_layers;
}

/* The placement planned on window d, when its file lies beside the dump: the next window's
 * balancedness it plans (NAN without one). */
static int planned(const mt_stat_dump *d, const char *path, int M, mt_ot_window *w, mt_err *err) {
    w->planned_next = NAN;
    if (w->stamp_ms < 0) return 0;
    char file[4200];
    if (mt_stat_dump_sibling(path, PLAN_STEM, ".json", file, sizeof file))
        return mt_errf(err, "%s: the path is too long", path);
    struct stat st;
    if (stat(file, &st) != 0 && errno == ENOENT) return 0;
    mt_moe_shape shape;
    if (mt_moe_shape_from_dump(d, &shape, err)) return -1;
    cJSON *root = mt_json_load_file(file, err);
    if (!root) return -1;
    mt_placement p;
    int rc = mt_placement_from_json(root, file, &shape, M, &p, err);
    cJSON_Delete(root);
    if (rc) return -1;
    int R = p.num_physical, E = p.num_experts;
    double sum = 0;
    for (int m = 0; m < d->num_moe_layers; m++)
        sum += mt_balancedness_placement(d->moe_count + (size_t)m * E, p.phy2log + (size_t)m * R, p.logcnt + (size_t)m * E,
                                         R, M);
    mt_placement_free(&p);
    w->planned_next = sum / d->num_moe_layers;
    return 0;
}

/* Both windows ran a placement, and not the same one. */
static bool changed(const mt_stat_dump *before, const mt_stat_dump *d) {
    const mt_placement *a = before ? before->placement : NULL, *b = d->placement;
    if (!a || !b) return false;
    return a->num_physical != b->num_physical ||
           memcmp(a->phy2log, b->phy2log, (size_t)a->num_moe_layers * (size_t)a->num_physical * sizeof *a->phy2log);
}

static int window(const mt_stat_dump *d, const mt_stat_dump *before, const char *path, int ep_flag, mt_over_time *t,
                  mt_ot_window *w, mt_err *err) {
    if (gpus_of(d, path, ep_flag, t, err)) return -1;
    w->num_tokens = d->num_tokens;
    w->num_forward_passes = d->num_forward_passes;
    if (d->placement) snprintf(w->source, sizeof w->source, "%s", d->placement->source);
    measure(d, t->ep_size, w);
    w->placement_changed = changed(before, d);
    return planned(d, path, t->ep_size, w, err);
}

int mt_over_time_load(char *const *paths, int n, int ep_size, mt_over_time *t, mt_err *err) {
    memset(t, 0, sizeof *t);
    if (n < 1) return mt_errf(err, "no dump to draw over time");
    t->n = n;
    t->w = calloc((size_t)n, sizeof *t->w);
    ordered *o = calloc((size_t)n, sizeof *o);
    if (!t->w || !o) {
        free(o);
        mt_over_time_free(t);
        return mt_errf(err, "out of memory");
    }
    order_windows(paths, n, t, o);
    free(o);
    /* two dumps at a time (the window and the one before) and the first, whose model all must have */
    mt_stat_dump first, before, d;
    memset(&first, 0, sizeof first);
    memset(&before, 0, sizeof before);
    memset(&d, 0, sizeof d);
    const char **files = calloc((size_t)n, sizeof *files); /* each window's file and kind: none counted twice */
    bool *per_token = calloc((size_t)n, sizeof *per_token);
    int rc = files && per_token ? 0 : mt_errf(err, "out of memory");
    for (int i = 0; i < n && rc == 0; i++) {
        const char *path = t->w[i].file;
        mt_stat_dump *cur = i ? &d : &first;
        if (mt_stat_dump_load(path, cur, err)) rc = -1;
        else if (i && mt_stat_dump_check_same_model(&first, t->w[0].file, cur, path,
                                                    "one model's windows are drawn over time", err))
            rc = -1;
        else rc = window(cur, i == 0 ? NULL : i == 1 ? &first : &before, path, ep_size, t, &t->w[i], err);
        if (rc == 0) {
            files[i] = path;
            per_token[i] = cur->per_token;
        }
        if (i) {
            mt_stat_dump_free(&before);
            before = d;
            memset(&d, 0, sizeof d);
        }
    }
    if (rc == 0) rc = mt_stat_dump_refuse_overlap(files, per_token, n, err);
    free(files);
    free(per_token);
    if (rc == 0 && !(t->model = strdup(first.model))) rc = mt_errf(err, "out of memory");
    mt_stat_dump_free(&first);
    mt_stat_dump_free(&before);
    mt_stat_dump_free(&d);
    if (rc) {
        bool needs = t->needs_ep_size;
        mt_over_time_free(t);
        t->needs_ep_size = needs;
    }
    return rc;
}

/* ---- JSON ---- */

static bool add_count(cJSON *o, const char *key, int64_t v) {
    return v < 0 ? cJSON_AddNullToObject(o, key) != NULL : cJSON_AddNumberToObject(o, key, (double)v) != NULL;
}

static cJSON *window_json(const mt_ot_window *w) {
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddStringToObject(o, "file", w->file) && add_count(o, "stamp_ms", w->stamp_ms) &&
              add_count(o, "num_tokens", w->num_tokens) && add_count(o, "num_forward_passes", w->num_forward_passes) &&
              (w->source[0] ? cJSON_AddStringToObject(o, "placement_source", w->source)
                            : cJSON_AddNullToObject(o, "placement_source")) &&
              cJSON_AddNumberToObject(o, "balancedness_mean", w->bal_mean) &&
              cJSON_AddNumberToObject(o, "balancedness_min_layer", w->bal_min) &&
              cJSON_AddNumberToObject(o, "balancedness_max_layer", w->bal_max) &&
              (isnan(w->planned_next) ? cJSON_AddNullToObject(o, "planned_next")
                                      : cJSON_AddNumberToObject(o, "planned_next", w->planned_next)) &&
              cJSON_AddBoolToObject(o, "placement_changed", w->placement_changed);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

int mt_over_time_write_json(const mt_over_time *t, const char *out_path, mt_err *err) {
    cJSON *j = cJSON_CreateObject();
    cJSON *list = NULL;
    bool ok = j && cJSON_AddStringToObject(j, "format", MT_OVER_TIME_FORMAT) &&
              cJSON_AddStringToObject(j, "model", t->model) && cJSON_AddNumberToObject(j, "ep_size", t->ep_size) &&
              cJSON_AddNumberToObject(j, "num_windows", t->n) &&
              cJSON_AddStringToObject(j, "ordered_by", t->by_stamp ? "stamp" : "arguments") &&
              (list = cJSON_AddArrayToObject(j, "windows"));
    for (int i = 0; ok && i < t->n; i++) {
        cJSON *w = window_json(&t->w[i]);
        ok = w && cJSON_AddItemToArray(list, w);
        if (!ok) cJSON_Delete(w);
    }
    char *text = ok ? cJSON_Print(j) : NULL;
    int rc = text ? mt_atomic_write(out_path, text, strlen(text), err) : mt_errf(err, "%s: out of memory", out_path);
    free(text);
    cJSON_Delete(j);
    return rc;
}

int mt_over_time_write(const mt_over_time *t, const char *out_path, mt_err *err) {
    size_t n = strlen(out_path);
    if (n > 5 && !strcasecmp(out_path + n - 5, ".json")) return mt_over_time_write_json(t, out_path, err);
    return mt_over_time_render(t, out_path, err);
}
