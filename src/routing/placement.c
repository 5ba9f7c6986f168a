/* Expert placement: building, validation, loading, JSON, dispatch (see placement.h). */
#include "routing/placement.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routing/eplb.h"
#include "routing/stat_dump.h"
#include "util/json_util.h"

/* splitmix64's finaliser: a bijective 64-bit mix with good avalanche. */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void mt_moe_shape_from_config(const mt_config *c, mt_moe_shape *s) {
    memset(s, 0, sizeof *s);
    s->num_hidden_layers = c->num_hidden_layers;
    s->num_experts = c->num_experts;
    for (int l = 0; l < c->num_hidden_layers && l < MT_MAX_LAYERS; l++)
        if (c->layer_is_moe[l]) s->moe_layers[s->num_moe_layers++] = l;
}

int mt_moe_shape_from_dump(const mt_stat_dump *d, mt_moe_shape *s, mt_err *err) {
    memset(s, 0, sizeof *s);
    if (d->num_hidden_layers > MT_MAX_LAYERS)
        return mt_errf(err, "stat dump has %d hidden layers, more than the %d supported", d->num_hidden_layers,
                       MT_MAX_LAYERS);
    s->num_hidden_layers = d->num_hidden_layers;
    s->num_experts = d->num_experts;
    s->num_moe_layers = d->num_moe_layers;
    memcpy(s->moe_layers, d->moe_layers, (size_t)d->num_moe_layers * sizeof *s->moe_layers);
    return 0;
}

void mt_placement_free(mt_placement *p) {
    if (!p) return;
    free(p->phy2log);
    free(p->logcnt);
    free(p->log2phy);
    free(p->salt);
    memset(p, 0, sizeof *p);
}

static void *dup_array(const void *src, size_t n, size_t size) {
    void *d = malloc(n ? n * size : 1);
    if (d && n) memcpy(d, src, n * size);
    return d;
}

int mt_placement_copy(const mt_placement *src, mt_placement *dst) {
    size_t rows = (size_t)src->num_moe_layers, E = (size_t)src->num_experts;
    *dst = *src;
    dst->phy2log = dup_array(src->phy2log, rows * (size_t)src->num_physical, sizeof *src->phy2log);
    dst->logcnt = dup_array(src->logcnt, rows * E, sizeof *src->logcnt);
    dst->log2phy = dup_array(src->log2phy, rows * E * (size_t)src->max_replicas, sizeof *src->log2phy);
    dst->salt = dup_array(src->salt, rows * E, sizeof *src->salt);
    if (dst->phy2log && dst->logcnt && dst->log2phy && dst->salt) return 0;
    mt_placement_free(dst);
    return -1;
}

mt_placement *mt_placement_dup(const mt_placement *src) {
    mt_placement *p = malloc(sizeof *p);
    if (p && mt_placement_copy(src, p)) {
        free(p);
        return NULL;
    }
    return p;
}

void mt_placement_destroy(mt_placement *p) {
    mt_placement_free(p);
    free(p);
}

int mt_placement_fits(const mt_placement *p, const mt_config *c, mt_err *err) {
    if (p->num_experts != c->num_experts || p->num_hidden_layers != c->num_hidden_layers)
        return mt_errf(err, "the expert placement is for %d experts x %d layers, the model has %d x %d",
                       p->num_experts, p->num_hidden_layers, c->num_experts, c->num_hidden_layers);
    for (int l = 0; l < c->num_hidden_layers && l < MT_MAX_LAYERS; l++)
        if ((p->row_of[l] >= 0) != c->layer_is_moe[l])
            return mt_errf(err, "the expert placement's MoE layers differ from the model's (layer %d)", l);
    return 0;
}

/* Checks one row of R slots; counts replicas into cnt[E]. name/row only for messages. */
static int check_row(const int32_t *row, int R, int E, int32_t *cnt, const char *name, int r, mt_err *err) {
    memset(cnt, 0, (size_t)E * sizeof *cnt);
    for (int s = 0; s < R; s++) {
        if (row[s] < 0 || row[s] >= E)
            return mt_errf(err, "%s: physical_to_logical_map[%d][%d] = %d is not a logical expert of the model "
                                "(num_experts %d)", name, r, s, row[s], E);
        cnt[row[s]]++;
    }
    for (int e = 0; e < E; e++)
        if (cnt[e] < 1)
            return mt_errf(err, "%s: physical_to_logical_map[%d] has no replica of logical expert %d", name, r, e);
    return 0;
}

/* Validates and fills p from rows [num_moe_layers, R]; rows_in is copied. Messages name row i as
 * file_row[i] (the file's own index) when file_row is not NULL. */
static int build(const mt_moe_shape *s, int M, int R, const int32_t *rows_in, const int *file_row, const char *name,
                 const char *source, mt_placement *p, mt_err *err) {
    memset(p, 0, sizeof *p);
    int L = s->num_moe_layers, E = s->num_experts;
    if (L < 1) return mt_errf(err, "%s: the model has no MoE layer to place", name);
    if (M < 1) return mt_errf(err, "%s: ep size %d must be positive", name, M);
    if (R < E)
        return mt_errf(err, "%s: %d physical slots per layer are fewer than the model's %d experts", name, R, E);
    if (R % M)
        return mt_errf(err, "%s: %d physical slots per layer are not divisible by num_gpus (ep size) %d", name, R, M);
    p->num_hidden_layers = s->num_hidden_layers;
    p->num_experts = E;
    p->num_moe_layers = L;
    p->num_gpus = M;
    p->num_physical = R;
    p->slots_per_gpu = R / M;
    snprintf(p->source, sizeof p->source, "%s", source);
    for (int l = 0; l < MT_MAX_LAYERS; l++) p->row_of[l] = -1;
    for (int i = 0; i < L; i++) {
        p->moe_layers[i] = s->moe_layers[i];
        p->row_of[s->moe_layers[i]] = i;
    }
    p->phy2log = malloc((size_t)L * R * sizeof *p->phy2log);
    p->logcnt = malloc((size_t)L * E * sizeof *p->logcnt);
    if (!p->phy2log || !p->logcnt) {
        mt_placement_free(p);
        return mt_errf(err, "%s: out of memory", name);
    }
    memcpy(p->phy2log, rows_in, (size_t)L * R * sizeof *p->phy2log);
    for (int i = 0; i < L; i++) {
        int32_t *cnt = p->logcnt + (size_t)i * E;
        if (check_row(p->phy2log + (size_t)i * R, R, E, cnt, name, file_row ? file_row[i] : i, err)) {
            mt_placement_free(p);
            return -1;
        }
        for (int e = 0; e < E; e++)
            if (cnt[e] > p->max_replicas) p->max_replicas = cnt[e];
    }
    int X = p->max_replicas;
    p->log2phy = malloc((size_t)L * E * X * sizeof *p->log2phy);
    p->salt = malloc((size_t)L * E * sizeof *p->salt);
    int32_t *fill = calloc((size_t)E, sizeof *fill);
    if (!p->log2phy || !p->salt || !fill) {
        free(fill);
        mt_placement_free(p);
        return mt_errf(err, "%s: out of memory", name);
    }
    for (size_t i = 0; i < (size_t)L * E * X; i++) p->log2phy[i] = -1;
    for (int i = 0; i < L; i++) {
        for (int e = 0; e < E; e++) p->salt[(size_t)i * E + e] = mix64(((uint64_t)(uint32_t)s->moe_layers[i] << 32) | (uint32_t)e);
        memset(fill, 0, (size_t)E * sizeof *fill);
        for (int slot = 0; slot < R; slot++) {
            int e = p->phy2log[(size_t)i * R + slot];
            p->log2phy[((size_t)i * E + e) * X + fill[e]++] = slot;
        }
    }
    free(fill);
    return 0;
}

int mt_placement_from_phy2log(const mt_moe_shape *s, int ep_size, int num_physical, const int32_t *phy2log,
                              mt_placement *p, mt_err *err) {
    return build(s, ep_size, num_physical, phy2log, NULL, "placement", "file", p, err);
}

int mt_placement_plan(const mt_moe_shape *s, int ep_size, int num_physical, const double *moe_load, const char *name,
                      mt_placement *p, mt_err *err) {
    memset(p, 0, sizeof *p);
    mt_eplb_params ep = {.num_replicas = num_physical, .num_groups = 1, .num_nodes = 1, .num_gpus = ep_size};
    mt_eplb_plan plan = {0};
    int rc = mt_eplb_plan_compute(moe_load, s->num_moe_layers, s->num_experts, &ep, &plan, err);
    if (rc == 0) rc = build(s, ep_size, num_physical, plan.phy2log, NULL, name, "eplb", p, err);
    mt_eplb_plan_free(&plan);
    return rc;
}

int mt_placement_trivial(const mt_moe_shape *s, int ep_size, mt_placement *p, mt_err *err) {
    int L = s->num_moe_layers, E = s->num_experts;
    if (ep_size < 1 || E % ep_size)
        return mt_errf(err, "trivial placement: ep size %d does not divide num_experts %d", ep_size, E);
    int32_t *rows = malloc((size_t)(L ? L : 1) * E * sizeof *rows);
    if (!rows) return mt_errf(err, "trivial placement: out of memory");
    for (int i = 0; i < L; i++)
        for (int e = 0; e < E; e++) rows[(size_t)i * E + e] = e;
    int rc = build(s, ep_size, E, rows, NULL, "trivial placement", "trivial", p, err);
    free(rows);
    return rc;
}

/* An integer field that must equal `want` when present. */
static int check_optional(const cJSON *root, const char *key, int want, const char *what, const char *name,
                          mt_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return mt_errf(err, "%s: \"%s\" must be an integer", name, key);
    if (v->valuedouble != want) /* compared as doubles: the value may be far outside int */
        return mt_errf(err, "%s: \"%s\" is %.15g but %s %d", name, key, v->valuedouble, what, want);
    return 0;
}

/* moe_layers, when present beside rows per MoE layer, must be the model's. */
static int check_moe_layers(const cJSON *root, const mt_moe_shape *s, const char *name, mt_err *err) {
    const cJSON *ml = cJSON_GetObjectItemCaseSensitive(root, "moe_layers");
    if (!ml || cJSON_IsNull(ml)) return 0;
    bool same = cJSON_IsArray(ml) && cJSON_GetArraySize(ml) == s->num_moe_layers;
    for (int i = 0; same && i < s->num_moe_layers; i++) {
        const cJSON *v = cJSON_GetArrayItem(ml, i);
        same = cJSON_IsNumber(v) && v->valuedouble == s->moe_layers[i];
    }
    if (!same) return mt_errf(err, "%s: \"moe_layers\" differ from the model's MoE layers", name);
    return 0;
}

int mt_placement_from_json(const cJSON *root, const char *name, const mt_moe_shape *s, int ep_size,
                           mt_placement *p, mt_err *err) {
    memset(p, 0, sizeof *p);
    const char *fmt = NULL;
    mt_err tmp;
    if (!cJSON_IsObject(root)) return mt_errf(err, "%s: not a JSON object", name);
    if (mt_json_string(root, "format", &fmt, &tmp) != 1 || strcmp(fmt, MT_PLACEMENT_FORMAT) != 0)
        return mt_errf(err, "%s: \"format\" must be \"%s\"", name, MT_PLACEMENT_FORMAT);
    int M = 0;
    if (mt_json_int(root, "num_gpus", &M, &tmp) != 1 || M < 1)
        return mt_errf(err, "%s: \"num_gpus\" must be a positive integer", name);
    if (ep_size > 0 && ep_size != M)
        return mt_errf(err, "%s: --ep-size %d differs from the placement's num_gpus %d", name, ep_size, M);
    if (check_optional(root, "num_experts", s->num_experts, "the model has num_experts", name, err) ||
        check_optional(root, "num_hidden_layers", s->num_hidden_layers, "the model has num_hidden_layers", name,
                       err))
        return -1;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "physical_to_logical_map");
    if (!cJSON_IsArray(map) || cJSON_GetArraySize(map) < 1)
        return mt_errf(err, "%s: \"physical_to_logical_map\" must be a non-empty array of rows", name);
    int nrows = cJSON_GetArraySize(map), L = s->num_moe_layers;
    bool per_hidden = nrows != L && nrows == s->num_hidden_layers;
    if (nrows != L && !per_hidden)
        return mt_errf(err, "%s: physical_to_logical_map has %d rows; the model has %d MoE layers (of %d hidden "
                            "layers)", name, nrows, L, s->num_hidden_layers);
    if (!per_hidden && check_moe_layers(root, s, name, err)) return -1;
    int R = cJSON_GetArraySize(cJSON_GetArrayItem(map, per_hidden ? s->moe_layers[0] : 0));
    if (R < 1) return mt_errf(err, "%s: physical_to_logical_map rows must not be empty", name);
    if (check_optional(root, "num_replicas", R, "physical_to_logical_map rows have", name, err)) return -1;
    int32_t *rows = malloc((size_t)L * R * sizeof *rows);
    if (!rows) return mt_errf(err, "%s: out of memory", name);
    for (int i = 0; i < L; i++) {
        int r = per_hidden ? s->moe_layers[i] : i;
        const cJSON *row = cJSON_GetArrayItem(map, r);
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != R) {
            free(rows);
            return mt_errf(err, "%s: physical_to_logical_map[%d] must be an array of %d slots like the first row",
                           name, r, R);
        }
        int k = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, row) {
            double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
            if (!(x == floor(x)) || x < INT32_MIN || x > INT32_MAX) {
                free(rows);
                return mt_errf(err, "%s: physical_to_logical_map[%d][%d] must be an integer expert id", name, r, k);
            }
            rows[(size_t)i * R + k++] = (int32_t)x;
        }
    }
    /* A placement embedded in a dump says where it came from. */
    const char *src = "file";
    if (mt_json_string(root, "source", &src, &tmp) != 1) src = "file";
    int rc = build(s, M, R, rows, per_hidden ? s->moe_layers : NULL, name, src, p, err);
    free(rows);
    return rc;
}

/* Plans with EPLB on a stat dump's logical_count. */
static int plan_from_dump(const cJSON *root, const char *name, const mt_moe_shape *s, const mt_placement_opts *o,
                          mt_placement *p, mt_err *err) {
    if (o->ep_size < 1)
        return mt_errf(err, "%s is a stat dump: planning a placement from it needs --ep-size", name);
    mt_stat_dump d;
    if (mt_stat_dump_from_json(root, name, &d, err)) return -1;
    if (mt_stat_dump_require_tokens(&d, name, err)) {
        mt_stat_dump_free(&d);
        return -1;
    }
    int rc = -1;
    double *w = NULL;
    bool same = d.num_experts == s->num_experts && d.num_hidden_layers == s->num_hidden_layers &&
                d.num_moe_layers == s->num_moe_layers &&
                !memcmp(d.moe_layers, s->moe_layers, (size_t)d.num_moe_layers * sizeof *d.moe_layers);
    if (!same) {
        mt_errf(err, "%s: the dump's shape (%d hidden layers, %d MoE layers, %d experts) is not the model's (%d, %d, "
                     "%d)", name, d.num_hidden_layers, d.num_moe_layers, d.num_experts, s->num_hidden_layers,
                s->num_moe_layers, s->num_experts);
        goto out;
    }
    int L = d.num_moe_layers, E = d.num_experts;
    mt_eplb_params ep = {.num_replicas = E + (o->num_redundant > 0 ? o->num_redundant : 0), .num_groups = 1,
                         .num_nodes = 1, .num_gpus = o->ep_size};
    mt_err e2;
    if (mt_eplb_check_params(E, &ep, &e2)) {
        mt_errf(err, "%s: cannot plan %d experts + %d redundant on %d GPUs: %s", name, E, ep.num_replicas - E,
                o->ep_size, e2.msg);
        goto out;
    }
    w = malloc((size_t)L * E * sizeof *w);
    if (!w) {
        mt_errf(err, "%s: out of memory", name);
        goto out;
    }
    for (size_t i = 0; i < (size_t)L * E; i++) w[i] = (double)d.moe_count[i];
    rc = mt_placement_plan(s, o->ep_size, ep.num_replicas, w, name, p, err);
out:
    free(w);
    mt_stat_dump_free(&d);
    return rc;
}

int mt_placement_load(const char *path, const mt_moe_shape *s, const mt_placement_opts *o, mt_placement *p,
                      mt_err *err) {
    memset(p, 0, sizeof *p);
    mt_placement_opts dflt = {0, -1};
    if (!o) o = &dflt;
    if (!strcmp(path, "trivial")) {
        if (o->ep_size < 1) return mt_errf(err, "the trivial placement needs --ep-size");
        if (o->num_redundant > 0)
            return mt_errf(err, "the trivial placement has no redundant experts (--ep-num-redundant-experts %d)",
                           o->num_redundant);
        return mt_placement_trivial(s, o->ep_size, p, err);
    }
    cJSON *root = mt_json_load_file(path, err);
    if (!root) return -1;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    int rc;
    if (cJSON_IsString(fmt) && !strcmp(fmt->valuestring, MT_STAT_DUMP_FORMAT)) {
        rc = plan_from_dump(root, path, s, o, p, err);
    } else if (cJSON_IsString(fmt) && !strcmp(fmt->valuestring, MT_PLACEMENT_FORMAT)) {
        rc = mt_placement_from_json(root, path, s, o->ep_size, p, err);
        if (rc == 0 && o->num_redundant >= 0 && p->num_physical - p->num_experts != o->num_redundant) {
            rc = mt_errf(err, "%s: the placement has %d redundant experts, not --ep-num-redundant-experts %d", path,
                         p->num_physical - p->num_experts, o->num_redundant);
            mt_placement_free(p);
        }
    } else {
        rc = mt_errf(err, "%s: \"format\" must be \"%s\" (a placement) or \"%s\" (a stat dump to plan from)", path,
                     MT_PLACEMENT_FORMAT, MT_STAT_DUMP_FORMAT);
    }
    cJSON_Delete(root);
    return rc;
}

_Static_assert(sizeof(int) == sizeof(int32_t), "cJSON_CreateIntArray reads int32_t rows as int");

static cJSON *matrix(const int32_t *v, int rows, int cols) {
    cJSON *m = cJSON_CreateArray();
    for (int i = 0; m && i < rows; i++) {
        cJSON *row = cJSON_CreateIntArray(v + (size_t)i * cols, cols);
        if (!row || !cJSON_AddItemToArray(m, row)) {
            cJSON_Delete(row);
            cJSON_Delete(m);
            return NULL;
        }
    }
    return m;
}

cJSON *mt_placement_to_json(const mt_placement *p) {
    cJSON *o = cJSON_CreateObject();
    cJSON *ml = cJSON_CreateIntArray(p->moe_layers, p->num_moe_layers);
    cJSON *p2l = matrix(p->phy2log, p->num_moe_layers, p->num_physical);
    cJSON *cnt = matrix(p->logcnt, p->num_moe_layers, p->num_experts);
    bool ok = o && ml && p2l && cnt && cJSON_AddStringToObject(o, "format", MT_PLACEMENT_FORMAT) &&
              cJSON_AddStringToObject(o, "source", p->source) && cJSON_AddNumberToObject(o, "num_gpus", p->num_gpus) &&
              cJSON_AddNumberToObject(o, "num_replicas", p->num_physical) &&
              cJSON_AddNumberToObject(o, "num_experts", p->num_experts) &&
              cJSON_AddNumberToObject(o, "num_hidden_layers", p->num_hidden_layers);
    if (ok) {
        cJSON_AddItemToObject(o, "moe_layers", ml);
        cJSON_AddItemToObject(o, "physical_to_logical_map", p2l);
        cJSON_AddItemToObject(o, "logical_replica_count", cnt);
        return o;
    }
    cJSON_Delete(o);
    cJSON_Delete(ml);
    cJSON_Delete(p2l);
    cJSON_Delete(cnt);
    return NULL;
}

/* Replica of expert e (row `row`) for a token: h = mix64(((position << 32) | token) ^ salt), salt =
 * mix64((layer << 32) | e); replica index = (h >> 32) * count >> 32, i.e. h's high 32 bits scaled
 * to [0, count). */
static inline int32_t pick(const mt_placement *p, int row, int32_t e, int32_t token, int32_t position) {
    size_t at = (size_t)row * p->num_experts + (size_t)e;
    const int32_t *slots = p->log2phy + at * p->max_replicas;
    uint32_t c = (uint32_t)p->logcnt[at];
    if (c == 1) return slots[0];
    uint64_t key = ((uint64_t)(uint32_t)position << 32) | (uint32_t)token;
    uint64_t h = mix64(key ^ p->salt[at]);
    return slots[((h >> 32) * c) >> 32];
}

int32_t mt_placement_slot(const mt_placement *p, int layer, int32_t expert, int32_t token, int32_t position) {
    int row = layer >= 0 && layer < MT_MAX_LAYERS ? p->row_of[layer] : -1;
    if (row < 0 || expert < 0 || expert >= p->num_experts) return -1;
    return pick(p, row, expert, token, position);
}

void mt_placement_dispatch(const mt_placement *p, int layer, int n, int k, const int32_t *topk_ids,
                           const int32_t *tokens, const int32_t *positions, int32_t *phys) {
    int row = layer >= 0 && layer < MT_MAX_LAYERS ? p->row_of[layer] : -1;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < k; j++) {
            int32_t e = topk_ids[(size_t)i * k + j];
            phys[(size_t)i * k + j] = row < 0 || e < 0 || e >= p->num_experts
                                          ? -1
                                          : pick(p, row, e, tokens[i], positions[i]);
        }
    }
}
