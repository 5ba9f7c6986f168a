/* Stat dump reader (SPEC §4). */
#define _POSIX_C_SOURCE 200809L
#include "routing/stat_dump.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/json_util.h"

void mt_stat_dump_free(mt_stat_dump *d) {
    if (!d) return;
    free(d->model);
    free(d->moe_layers);
    free(d->moe_count);
    mt_placement_free(d->placement);
    free(d->placement);
    free(d->phys_count);
    memset(d, 0, sizeof *d);
}

/* A JSON number that is an integer in [lo, hi]. */
static int get_int(const cJSON *v, double lo, double hi, int64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double x = v->valuedouble;
    if (!isfinite(x) || x != floor(x) || x < lo || x > hi) return -1;
    *out = (int64_t)x;
    return 0;
}

static int required_int(const cJSON *root, const char *key, double lo, double hi, const char *name,
                        int64_t *out, mt_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v) return mt_errf(err, "%s: missing field \"%s\"", name, key);
    if (get_int(v, lo, hi, out))
        return mt_errf(err, "%s: field \"%s\" must be an integer in [%.0f, %.0f]", name, key, lo, hi);
    return 0;
}

static int64_t optional_int(const cJSON *root, const char *key, int64_t dflt) {
    int64_t v;
    if (get_int(cJSON_GetObjectItemCaseSensitive(root, key), 0, 9007199254740992.0, &v)) return dflt;
    return v;
}

/* Row m of physical_count (hidden layer moe_layers[m]) into d->phys_count, checked against logical_count. */
static int physical_row(const cJSON *pc, const char *name, mt_stat_dump *d, int m, int64_t *sum, mt_err *err) {
    int R = d->placement->num_physical, E = d->num_experts;
    int layer = d->moe_layers[m];
    const cJSON *row = cJSON_GetArrayItem(pc, layer);
    if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != R)
        return mt_errf(err, "%s: physical_count[%d] must be an array of num_replicas = %d counts", name, layer, R);
    int s = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, row) {
        int64_t x;
        if (get_int(c, 0, 9007199254740992.0, &x))
            return mt_errf(err, "%s: physical_count[%d][%d] must be a non-negative integer", name, layer, s);
        d->phys_count[(size_t)m * R + s++] = x;
    }
    /* The replicas of each expert carry exactly its logical count. */
    const int32_t *p2l = d->placement->phy2log + (size_t)m * R;
    memset(sum, 0, (size_t)E * sizeof *sum);
    for (s = 0; s < R; s++) sum[p2l[s]] += d->phys_count[(size_t)m * R + s];
    for (int e = 0; e < E; e++)
        if (sum[e] != d->moe_count[(size_t)m * E + e])
            return mt_errf(err, "%s: physical_count[%d] gives expert %d %lld tokens, logical_count[%d] %lld", name,
                           layer, e, (long long)sum[e], layer, (long long)d->moe_count[(size_t)m * E + e]);
    return 0;
}

/* The optional "placement" + "physical_count" pair (a dump recorded under a placement). */
static int parse_physical(const cJSON *root, const char *name, mt_stat_dump *d, mt_err *err) {
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(root, "placement");
    const cJSON *pc = cJSON_GetObjectItemCaseSensitive(root, "physical_count");
    if (!pj && !pc) return 0;
    if (!pj || !pc) return mt_errf(err, "%s: \"%s\" without \"%s\"", name, pj ? "placement" : "physical_count",
                                   pj ? "physical_count" : "placement");
    mt_moe_shape shape;
    if (mt_moe_shape_from_dump(d, &shape, err)) return -1;
    char where[1100];
    snprintf(where, sizeof where, "%s: \"placement\"", name);
    d->placement = calloc(1, sizeof *d->placement);
    if (!d->placement) return mt_errf(err, "%s: out of memory", name);
    if (mt_placement_from_json(pj, where, &shape, 0, d->placement, err)) return -1;
    int R = d->placement->num_physical, nl = d->num_hidden_layers;
    if (!cJSON_IsArray(pc) || cJSON_GetArraySize(pc) != nl)
        return mt_errf(err, "%s: physical_count must have num_hidden_layers = %d rows", name, nl);
    int E = d->num_experts;
    d->phys_count = malloc((size_t)d->num_moe_layers * (size_t)R * sizeof *d->phys_count);
    int64_t *sum = malloc((size_t)E * sizeof *sum);
    int rc = d->phys_count && sum ? 0 : mt_errf(err, "%s: out of memory", name);
    for (int m = 0; rc == 0 && m < d->num_moe_layers; m++) rc = physical_row(pc, name, d, m, sum, err);
    free(sum);
    return rc;
}

static int parse_root(const cJSON *root, const char *name, mt_stat_dump *d, mt_err *err) {
    if (!cJSON_IsObject(root)) return mt_errf(err, "%s: not a JSON object", name);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(fmt))
        return mt_errf(err, "%s: missing string field \"format\" (expected \"%s\")", name, MT_STAT_DUMP_FORMAT);
    if (strcmp(fmt->valuestring, MT_STAT_DUMP_FORMAT) != 0)
        return mt_errf(err, "%s: field \"format\" is \"%s\", expected \"%s\"", name, fmt->valuestring,
                       MT_STAT_DUMP_FORMAT);
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(root, "mode");
    /* a per_token dump's JSON index carries the same counts (docs/RECORDER.md) */
    if (mode && (!cJSON_IsString(mode) || (strcmp(mode->valuestring, "stat") && strcmp(mode->valuestring, "per_pass") &&
                                           strcmp(mode->valuestring, "per_token"))))
        return mt_errf(err, "%s: field \"mode\" must be \"stat\", \"per_pass\" or \"per_token\" for a dump with "
                       "logical_count", name);

    int64_t nl, ne;
    if (required_int(root, "num_hidden_layers", 1, 1e6, name, &nl, err)) return -1;
    if (required_int(root, "num_experts", 1, 1e6, name, &ne, err)) return -1;
    d->num_hidden_layers = (int)nl;
    d->num_experts = (int)ne;
    d->top_k = (int)optional_int(root, "top_k", 0);
    d->ep_size = (int)optional_int(root, "ep_size", 0);
    d->per_token = mode && !strcmp(mode->valuestring, "per_token");
    d->num_forward_passes = optional_int(root, "num_forward_passes", -1);
    d->num_tokens = optional_int(root, "num_tokens", -1);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    d->model = strdup(cJSON_IsString(model) ? model->valuestring : "");
    if (!d->model) return mt_errf(err, "%s: out of memory", name);

    const cJSON *ml = cJSON_GetObjectItemCaseSensitive(root, "moe_layers");
    if (!cJSON_IsArray(ml)) return mt_errf(err, "%s: missing array field \"moe_layers\"", name);
    int nm = cJSON_GetArraySize(ml);
    if (nm < 1) return mt_errf(err, "%s: \"moe_layers\" is empty: the dump has no MoE layer", name);
    d->moe_layers = malloc((size_t)nm * sizeof *d->moe_layers);
    if (!d->moe_layers) return mt_errf(err, "%s: out of memory", name);
    d->num_moe_layers = nm;
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, ml) {
        int64_t x;
        if (get_int(v, 0, (double)nl - 1, &x))
            return mt_errf(err, "%s: moe_layers[%d] must be a layer index in [0, %d)", name, i, (int)nl);
        if (i > 0 && x <= d->moe_layers[i - 1])
            return mt_errf(err, "%s: moe_layers must be strictly ascending (moe_layers[%d] = %d after %d)", name,
                           i, (int)x, d->moe_layers[i - 1]);
        d->moe_layers[i++] = (int)x;
    }

    const cJSON *lc = cJSON_GetObjectItemCaseSensitive(root, "logical_count");
    if (!cJSON_IsArray(lc)) return mt_errf(err, "%s: missing array field \"logical_count\"", name);
    if (cJSON_GetArraySize(lc) != nl)
        return mt_errf(err, "%s: logical_count has %d rows, expected num_hidden_layers = %d", name,
                       cJSON_GetArraySize(lc), (int)nl);
    int layer = 0, m = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, lc) { /* before allocating: the counts must be there, not just claimed */
        if (m < nm && d->moe_layers[m] == layer) {
            if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != ne)
                return mt_errf(err, "%s: logical_count[%d] must be an array of num_experts = %d counts", name, layer,
                               (int)ne);
            m++;
        }
        layer++;
    }
    m = 0;
    d->moe_count = malloc((size_t)nm * (size_t)ne * sizeof *d->moe_count);
    if (!d->moe_count) return mt_errf(err, "%s: out of memory for %d x %d counts", name, nm, (int)ne);
    layer = 0;
    cJSON_ArrayForEach(row, lc) {
        if (m < nm && d->moe_layers[m] == layer) {
            int e = 0;
            const cJSON *c;
            cJSON_ArrayForEach(c, row) {
                int64_t x;
                if (get_int(c, 0, 9007199254740992.0, &x))
                    return mt_errf(err, "%s: logical_count[%d][%d] must be a non-negative integer", name, layer, e);
                d->moe_count[(size_t)m * ne + e] = x;
                e++;
            }
            m++;
        } /* a dense layer's row (not in moe_layers) is ignored (SPEC §6): the recorder writes zeros there */
        layer++;
    }
    return parse_physical(root, name, d, err);
}

int mt_stat_dump_parse(const char *json, size_t len, const char *name, mt_stat_dump *d, mt_err *err) {
    memset(d, 0, sizeof *d);
    cJSON *root = mt_json_parse(json, len, name, NULL, err);
    if (!root) return -1;
    int rc = mt_stat_dump_from_json(root, name, d, err);
    cJSON_Delete(root);
    return rc;
}

int mt_stat_dump_from_json(const cJSON *root, const char *name, mt_stat_dump *d, mt_err *err) {
    memset(d, 0, sizeof *d);
    int rc = parse_root(root, name, d, err);
    if (rc) mt_stat_dump_free(d);
    return rc;
}

int mt_stat_dump_require_tokens(const mt_stat_dump *d, const char *name, mt_err *err) {
    for (size_t i = 0; i < (size_t)d->num_moe_layers * (size_t)d->num_experts; i++)
        if (d->moe_count[i] > 0) return 0;
    return mt_errf(err, "%s: no tokens were recorded (every count of its MoE layers is 0), so a placement planned "
                   "from it would be arbitrary; dump after traffic (a dump resets the recorder's counts)", name);
}

int mt_stat_dump_load(const char *path, mt_stat_dump *d, mt_err *err) {
    memset(d, 0, sizeof *d);
    FILE *f = fopen(path, "rb");
    if (!f) return mt_errf(err, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 65536 > cap) {
            size_t ncap = cap ? cap * 2 : 1 << 20;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                fclose(f);
                return mt_errf(err, "%s: out of memory reading the file", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return mt_errf(err, "%s: read error", path);
    }
    int rc = mt_stat_dump_parse(buf, len, path, d, err);
    free(buf);
    return rc;
}

int mt_stat_dump_sibling(const char *path, const char *stem, const char *ext, char *out, size_t size) {
    static const char DUMP[] = "expert_distribution_", JSON[] = ".json";
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    size_t n = strlen(base), dl = sizeof DUMP - 1, jl = sizeof JSON - 1;
    if (n <= dl + jl || strncmp(base, DUMP, dl) || strcmp(base + n - jl, JSON)) return -1;
    int len = snprintf(out, size, "%.*s%s%.*s%s", (int)(base - path), path, stem, (int)(n - dl - jl), base + dl, ext);
    return len < 0 || (size_t)len >= size ? -1 : 0;
}

const char *mt_stat_dump_shape_differs(const mt_stat_dump *a, const mt_stat_dump *b) {
    if (b->num_hidden_layers != a->num_hidden_layers) return "num_hidden_layers";
    if (b->num_experts != a->num_experts) return "num_experts";
    if (b->top_k && a->top_k && b->top_k != a->top_k) return "top_k";
    if (b->num_moe_layers != a->num_moe_layers ||
        memcmp(b->moe_layers, a->moe_layers, (size_t)a->num_moe_layers * sizeof *a->moe_layers))
        return "moe_layers";
    return NULL;
}

int mt_stat_dump_check_same_model(const mt_stat_dump *first, const char *first_path, const mt_stat_dump *d,
                                  const char *path, const char *why, mt_err *err) {
    if (strcmp(d->model, first->model))
        return mt_errf(err, "%s: a dump of model \"%s\", not \"%s\" as %s: %s", path, d->model, first->model,
                       first_path, why);
    const char *differs = mt_stat_dump_shape_differs(first, d);
    if (differs)
        return mt_errf(err, "%s: %d hidden layers, %d MoE layers, %d experts, top_k %d: not the shape of %s (%d, %d, %d, "
                       "%d; %s differs)", path, d->num_hidden_layers, d->num_moe_layers, d->num_experts, d->top_k,
                       first_path, first->num_hidden_layers, first->num_moe_layers, first->num_experts, first->top_k,
                       differs);
    return 0;
}

int mt_stat_dump_refuse_overlap(const char *const *paths, const bool *per_token, int n, mt_err *err) {
    if (n < 2) return 0;
    for (int i = 0; i < n; i++)
        if (per_token[i] != per_token[0]) {
            int index = per_token[i] ? i : 0, stat_dump = per_token[i] ? 0 : i;
            return mt_errf(err, "%s is a per_token index and %s a stat dump: give dumps of one kind (each counts all "
                                "of its window's tokens; profile --per-token writes both for one window, the stat dump "
                                "as DIR/expert_distribution_<ms>.json and the index under DIR/per_token/)",
                           paths[index], paths[stat_dump]);
        }
    struct stat *st = calloc((size_t)n, sizeof *st);
    if (!st) return mt_errf(err, "out of memory");
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (stat(paths[i], &st[i]) != 0) continue; /* read already: it was there */
        for (int j = 0; j < i && rc == 0; j++)
            if (st[j].st_ino == st[i].st_ino && st[j].st_dev == st[i].st_dev && st[i].st_ino)
                rc = mt_errf(err, "%s and %s are the same file: its tokens would count twice", paths[j], paths[i]);
    }
    free(st);
    return rc;
}
