/* Vocabulary specialisation of a per_token dump: counting, token texts and JSON
 * (token_specialisation.h); the picture is token_specialisation_draw.c. */
#include "report/token_specialisation.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "report/coactivation.h"
#include "util/atomic_write.h"
#include "util/json_util.h"
#include "util/strbuf.h"

/* ---- a map of 64-bit keys to counts: open addressing, linear probing, at most half full ---- */

typedef struct count_map {
    uint64_t *keys; /* key + 1; 0: an empty slot */
    int64_t *vals;
    size_t cap, n;  /* cap: 0 or a power of two */
} count_map;

static size_t slot_of(uint64_t stored, size_t cap) {
    uint64_t h = stored * 0x9E3779B97F4A7C15ull;
    return (size_t)(h ^ h >> 29) & (cap - 1);
}

static int map_resize(count_map *m, size_t cap) {
    uint64_t *keys = calloc(cap, sizeof *keys);
    int64_t *vals = malloc(cap * sizeof *vals);
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return -1;
    }
    for (size_t s = 0; s < m->cap; s++) {
        if (!m->keys[s]) continue;
        size_t t = slot_of(m->keys[s], cap);
        while (keys[t]) t = (t + 1) & (cap - 1);
        keys[t] = m->keys[s];
        vals[t] = m->vals[s];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return 0;
}

/* The slot of key, or where it would go. */
static size_t map_slot(const count_map *m, uint64_t key) {
    size_t s = slot_of(key + 1, m->cap);
    while (m->keys[s] && m->keys[s] != key + 1) s = (s + 1) & (m->cap - 1);
    return s;
}

/* key's count, added as 0 when absent; NULL when out of memory. */
static int64_t *map_at(count_map *m, uint64_t key) {
    if (2 * (m->n + 1) > m->cap && map_resize(m, m->cap ? 2 * m->cap : 1024)) return NULL;
    size_t s = map_slot(m, key);
    if (!m->keys[s]) {
        m->keys[s] = key + 1;
        m->vals[s] = 0;
        m->n++;
    }
    return &m->vals[s];
}

static void map_clear(count_map *m) {
    if (m->keys) memset(m->keys, 0, m->cap * sizeof *m->keys);
    m->n = 0;
}

static void map_free(count_map *m) {
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ---- counting ---- */

void mt_token_spec_free(mt_token_spec *s) {
    if (!s) return;
    for (int k = 0; s->layers && k < s->n; k++) free(s->layers[k].experts);
    free(s->layers);
    for (int64_t i = 0; s->text && i < s->n_text; i++) free(s->text[i]);
    free(s->text);
    free(s->text_id);
    memset(s, 0, sizeof *s);
}

/* The dump's token ids: `ids` counts each one's occurrences, then holds its index in rid and rocc
 * when it is ranked (at least min_count occurrences), -1 when it is not. */
typedef struct ranked {
    count_map ids;  /* token id -> occurrences, then -> index in rid or -1 */
    int32_t *rid;
    int64_t *rocc;
    int64_t n;
} ranked;

static int rank_ids(const mt_per_token_dump *d, int min_count, ranked *k, mt_err *err) {
    for (int64_t r = 0; r < d->rows; r++) {
        int64_t *v = map_at(&k->ids, (uint32_t)mt_per_token_token_id(d, r));
        if (!v) return mt_errf(err, "out of memory (token ids)");
        (*v)++;
    }
    k->rid = malloc(sizeof *k->rid * (k->ids.n + 1));
    k->rocc = malloc(sizeof *k->rocc * (k->ids.n + 1));
    if (!k->rid || !k->rocc) return mt_errf(err, "out of memory (token ids)");
    for (size_t s = 0; s < k->ids.cap; s++) {
        if (!k->ids.keys[s]) continue;
        if (k->ids.vals[s] < min_count) {
            k->ids.vals[s] = -1;
            continue;
        }
        k->rid[k->n] = (int32_t)(uint32_t)(k->ids.keys[s] - 1);
        k->rocc[k->n] = k->ids.vals[s];
        k->ids.vals[s] = k->n++;
    }
    return 0;
}

static bool token_before(const mt_tspec_token *x, const mt_tspec_token *y) {
    if (x->share != y->share) return x->share > y->share;
    if (x->count != y->count) return x->count > y->count;
    return x->id < y->id;
}

static void keep_top(mt_tspec_expert *e, const mt_tspec_token *t) {
    if (e->n_top == MT_TOKEN_SPEC_TOP && !token_before(t, &e->top[MT_TOKEN_SPEC_TOP - 1])) return;
    int at = e->n_top < MT_TOKEN_SPEC_TOP ? e->n_top++ : MT_TOKEN_SPEC_TOP - 1;
    for (; at > 0 && token_before(t, &e->top[at - 1]); at--) e->top[at] = e->top[at - 1];
    e->top[at] = *t;
}

/* One layer: the rows' (ranked id, expert) pairs counted in pairs, then each expert's top tokens. */
static int count_layer(const mt_per_token_dump *d, const ranked *k, count_map *pairs, int32_t *ids, mt_tspec_layer *l,
                       mt_err *err) {
    int E = d->num_experts;
    map_clear(pairs);
    for (int64_t r = 0; r < d->rows; r++) {
        int m = mt_analysis_row_experts(d, r, l->layer, ids);
        int64_t u = k->ids.vals[map_slot(&k->ids, (uint32_t)mt_per_token_token_id(d, r))];
        for (int a = 0; a < m; a++) {
            l->experts[ids[a]].tokens++;
            if (u < 0) continue;
            int64_t *v = map_at(pairs, (uint64_t)u * (uint64_t)E + (uint64_t)ids[a]);
            if (!v) return mt_errf(err, "out of memory (pairs of token id and expert at layer %d)", l->layer);
            (*v)++;
        }
    }
    for (size_t s = 0; s < pairs->cap; s++) {
        if (!pairs->keys[s]) continue;
        uint64_t key = pairs->keys[s] - 1, u = key / (uint64_t)E;
        mt_tspec_token t = {k->rid[u], pairs->vals[s], k->rocc[u], (double)pairs->vals[s] / (double)k->rocc[u]};
        keep_top(&l->experts[key % (uint64_t)E], &t);
    }
    double sum = 0;
    int scored = 0;
    for (int e = 0; e < E; e++) {
        mt_tspec_expert *x = &l->experts[e];
        double mean = 0;
        for (int i = 0; i < x->n_top; i++) mean += x->top[i].share;
        x->score = x->n_top ? mean / x->n_top : NAN;
        if (x->n_top) {
            sum += x->score;
            scored++;
        }
    }
    l->mean_score = scored ? sum / scored : NAN;
    return 0;
}

int mt_token_spec_compute(const mt_per_token_dump *d, const int *layers, int n, int min_count, mt_token_spec *s,
                          mt_err *err) {
    memset(s, 0, sizeof *s);
    s->dump = d;
    s->min_count = min_count;
    ranked k;
    memset(&k, 0, sizeof k);
    count_map pairs = {0};
    int32_t *ids = malloc(sizeof *ids * (size_t)d->top_k);
    int rc = -1;
    if (!ids || !(s->layers = calloc((size_t)(n ? n : 1), sizeof *s->layers))) {
        mt_errf(err, "out of memory");
        goto out;
    }
    s->n = n;
    for (int i = 0; i < n; i++) {
        s->layers[i].layer = layers[i];
        if (!(s->layers[i].experts = calloc((size_t)d->num_experts, sizeof *s->layers[i].experts))) {
            mt_errf(err, "out of memory");
            goto out;
        }
    }
    if (rank_ids(d, min_count, &k, err)) goto out;
    s->distinct_ids = (int64_t)k.ids.n;
    s->ranked_ids = k.n;
    rc = 0;
    for (int i = 0; rc == 0 && i < n; i++) rc = count_layer(d, &k, &pairs, ids, &s->layers[i], err);
out:
    free(ids);
    map_free(&pairs);
    map_free(&k.ids);
    free(k.rid);
    free(k.rocc);
    if (rc) mt_token_spec_free(s);
    return rc;
}

/* ---- token texts ---- */

static int cmp_id(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int mt_token_spec_decode(mt_token_spec *s, const char *tokenizer_path, mt_err *err) {
    int E = s->dump->num_experts;
    size_t n = 0;
    int32_t *ids = malloc(sizeof *ids * ((size_t)s->n * (size_t)E * MT_TOKEN_SPEC_TOP + 1));
    if (!ids) return mt_errf(err, "out of memory");
    for (int k = 0; k < s->n; k++)
        for (int e = 0; e < E; e++)
            for (int i = 0; i < s->layers[k].experts[e].n_top; i++) ids[n++] = s->layers[k].experts[e].top[i].id;
    qsort(ids, n, sizeof *ids, cmp_id);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || ids[i] != ids[u - 1]) ids[u++] = ids[i];
    char **text = calloc(u + 1, sizeof *text);
    int64_t bad;
    if (!text || mt_request_trace_decode_ids(tokenizer_path, ids, (int64_t)u, text, &bad, err)) {
        if (!text) mt_errf(err, "out of memory");
        free(text);
        free(ids);
        return -1;
    }
    s->text_id = ids;
    s->text = text;
    s->n_text = (int64_t)u;
    return 0;
}

const char *mt_token_spec_text(const mt_token_spec *s, int32_t id) {
    if (!s->text) return NULL;
    const int32_t *at = bsearch(&id, s->text_id, (size_t)s->n_text, sizeof id, cmp_id);
    return at ? s->text[at - s->text_id] : NULL;
}

/* ---- JSON ---- */

/* v exactly, or null (cJSON's own numbers may lose the last digits). */
static bool add_share(cJSON *o, const char *key, double v) {
    char num[32];
    mt_analysis_number(v, num);
    return cJSON_AddRawToObject(o, key, num) != NULL;
}

/* Expert e of layer l as a JSON object; NULL when out of memory. */
static cJSON *expert_json(const mt_token_spec *s, const mt_tspec_expert *x, int e) {
    cJSON *o = cJSON_CreateObject(), *list = NULL;
    bool ok = o && cJSON_AddNumberToObject(o, "expert", e) && cJSON_AddNumberToObject(o, "tokens", (double)x->tokens) &&
              add_share(o, "score", x->score) && (list = cJSON_AddArrayToObject(o, "top_tokens"));
    for (int i = 0; ok && i < x->n_top; i++) {
        const mt_tspec_token *t = &x->top[i];
        const char *text = mt_token_spec_text(s, t->id);
        cJSON *j = cJSON_CreateObject(), *tj = text ? mt_json_text(text, strlen(text)) : NULL;
        ok = j && cJSON_AddItemToArray(list, j) && cJSON_AddNumberToObject(j, "id", t->id) &&
             (!text || (tj && cJSON_AddItemToObject(j, "text", tj))) &&
             cJSON_AddNumberToObject(j, "count", (double)t->count) &&
             cJSON_AddNumberToObject(j, "occurrences", (double)t->occurrences) && add_share(j, "share", t->share);
        if (!ok && !j) cJSON_Delete(tj);
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* The JSON's header: the dump's, the ranking's parameters. */
static char *header_text(const mt_token_spec *s) {
    const mt_per_token_dump *d = s->dump;
    cJSON *head = mt_analysis_header_json(d, MT_TOKEN_SPEC_FORMAT);
    bool ok = head && cJSON_AddNumberToObject(head, "min_count", s->min_count) &&
              cJSON_AddNumberToObject(head, "token_ids", (double)s->distinct_ids) &&
              cJSON_AddNumberToObject(head, "ranked_token_ids", (double)s->ranked_ids) &&
              add_share(head, "uniform_share", (double)d->top_k / d->num_experts);
    char *text = ok ? mt_json_print(head) : NULL;
    cJSON_Delete(head);
    return text;
}

int mt_token_spec_write_json(const mt_token_spec *s, const char *out_path, mt_err *err) {
    char *head = header_text(s);
    if (!head) return mt_errf(err, "out of memory");
    mt_strbuf b = {0};
    mt_strbuf_append(&b, head, strlen(head) - 1); /* the header without its closing brace */
    free(head);
    mt_strbuf_puts(&b, ",\n \"layers\": [");
    for (int k = 0; k < s->n; k++) {
        const mt_tspec_layer *l = &s->layers[k];
        char num[32];
        mt_analysis_number(l->mean_score, num);
        mt_strbuf_printf(&b, "%s\n  {\"layer\": %d, \"mean_score\": %s,\n   \"experts\": [", k ? "," : "", l->layer, num);
        for (int e = 0; e < s->dump->num_experts; e++) {
            cJSON *o = expert_json(s, &l->experts[e], e);
            char *text = o ? mt_json_print(o) : NULL;
            cJSON_Delete(o);
            if (!text) {
                mt_strbuf_free(&b);
                return mt_errf(err, "out of memory");
            }
            mt_strbuf_printf(&b, "%s\n    %s", e ? "," : "", text);
            free(text);
        }
        mt_strbuf_puts(&b, "]}");
    }
    mt_strbuf_puts(&b, s->n ? "\n ]}\n" : "]}\n");
    int rc = mt_atomic_write(out_path, b.data, b.len, err);
    mt_strbuf_free(&b);
    return rc;
}
