/* Expert co-activation of a per_token dump: counting and JSON (coactivation.h); the picture is
 * coactivation_draw.c. Also the layers and the JSON header every analysis of the rows shares. */
#include "report/coactivation.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "util/atomic_write.h"
#include "util/json_util.h"
#include "util/strbuf.h"

/* ---- shared by the analyses ---- */

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* "0, 2, 3" (the first 16, then "…") into buf. */
static void moe_list(const mt_per_token_dump *d, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    for (int m = 0; m < d->num_moe_layers && m < 16; m++) {
        int w = snprintf(buf + len, size - len, "%s%d", m ? ", " : "", d->moe_layers[m]);
        if (w < 0 || (size_t)w >= size - len) return;
        len += (size_t)w;
    }
    if (d->num_moe_layers > 16) snprintf(buf + len, size - len, ", …");
}

int mt_analysis_layers(const mt_per_token_dump *d, const int *asked, int n_asked, int max_default, int **out, int *n,
                       mt_err *err) {
    *out = NULL;
    *n = 0;
    char moe[160];
    moe_list(d, moe, sizeof moe);
    if (d->num_moe_layers == 0)
        return mt_errf(err, "the dump has no MoE layer (its %d layers are dense)", d->num_hidden_layers);
    int count = d->num_moe_layers;
    if (n_asked > 0) count = n_asked;
    else if (max_default > 0 && max_default < count) count = max_default;
    int *v = malloc(sizeof *v * (size_t)count);
    if (!v) return mt_errf(err, "out of memory");
    for (int k = 0; k < count; k++) {
        if (n_asked > 0) {
            int l = asked[k];
            const char *why = NULL;
            if (l < 0 || l >= d->num_hidden_layers) why = "is not a layer of the dump";
            else if (!d->layer_is_moe[l]) why = "is dense (no experts)";
            if (why) {
                free(v);
                return mt_errf(err, "--layers: layer %d %s; its MoE layers are %s (of %d layers, 0 .. %d)", l, why, moe,
                               d->num_hidden_layers, d->num_hidden_layers - 1);
            }
            v[k] = l;
        } else { /* evenly spaced: the first and the last MoE layer always among them */
            int m = count == 1 ? 0 : (int)(((int64_t)k * (d->num_moe_layers - 1) + (count - 1) / 2) / (count - 1));
            v[k] = d->moe_layers[m];
        }
    }
    qsort(v, (size_t)count, sizeof *v, cmp_int);
    for (int k = 1; k < count; k++)
        if (v[k] == v[k - 1]) {
            int l = v[k];
            free(v);
            return mt_errf(err, "--layers: layer %d is named twice", l);
        }
    *out = v;
    *n = count;
    return 0;
}

void mt_analysis_layers_text(const mt_per_token_dump *d, const int *layers, int n, int total, char *buf, size_t size) {
    mt_strbuf b = {0};
    mt_strbuf_puts(&b, total == 1 ? "layer " : "layers ");
    for (int k = 0; k < n && k < 24; k++) mt_strbuf_printf(&b, "%s%d", k ? ", " : "", layers[k]);
    mt_strbuf_printf(&b, "%s of %d MoE layers", total > n || n > 24 ? ", …" : "", d->num_moe_layers);
    snprintf(buf, size, "%s", b.data);
    mt_strbuf_free(&b);
}

int mt_analysis_row_experts(const mt_per_token_dump *d, int64_t r, int l, int32_t *ids) {
    mt_per_token_experts(d, r, l, ids);
    int m = 0;
    for (int a = 0; a < d->top_k; a++) {
        int32_t e = ids[a];
        bool skip = e < 0 || e >= d->num_experts;
        for (int b = 0; b < m && !skip; b++) skip = ids[b] == e;
        if (!skip) ids[m++] = e;
    }
    return m;
}

void mt_analysis_number(double v, char buf[32]) {
    if (isnan(v)) {
        snprintf(buf, 32, "null");
        return;
    }
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, 32, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) return;
    }
}

cJSON *mt_analysis_header_json(const mt_per_token_dump *d, const char *format) {
    cJSON *j = cJSON_CreateObject(), *moe = NULL;
    bool ok = j && cJSON_AddStringToObject(j, "format", format) && cJSON_AddStringToObject(j, "model", d->model) &&
              cJSON_AddNumberToObject(j, "num_hidden_layers", d->num_hidden_layers) &&
              (moe = cJSON_AddArrayToObject(j, "moe_layers"));
    for (int m = 0; ok && m < d->num_moe_layers; m++)
        ok = cJSON_AddItemToArray(moe, cJSON_CreateNumber(d->moe_layers[m]));
    ok = ok && cJSON_AddNumberToObject(j, "num_experts", d->num_experts) &&
         cJSON_AddNumberToObject(j, "top_k", d->top_k) &&
         cJSON_AddNumberToObject(j, "num_tokens", (double)d->rows) &&
         cJSON_AddNumberToObject(j, "dropped_tokens", (double)d->dropped_tokens);
    if (!ok) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

/* ---- counting ---- */

void mt_coactivation_free(mt_coactivation *c) {
    if (!c) return;
    for (int k = 0; c->layers && k < c->n; k++) free(c->layers[k].counts);
    free(c->layers);
    memset(c, 0, sizeof *c);
}

double mt_coactivation_share(const mt_coact_layer *l, int num_experts, int i, int j) {
    int64_t own = l->counts[(size_t)i * num_experts + i];
    if (i == j || own == 0) return NAN;
    return (double)l->counts[(size_t)i * num_experts + j] / (double)own;
}

/* Whether pair x goes before pair y among the top pairs. */
static bool pair_before(const mt_coact_pair *x, const mt_coact_pair *y) {
    if (x->share != y->share) return x->share > y->share;
    if (x->count != y->count) return x->count > y->count;
    return x->i != y->i ? x->i < y->i : x->j < y->j;
}

/* Top pairs and means of a counted layer. */
static void summarise(mt_coact_layer *l, int E) {
    double sum = 0, sum_max = 0;
    int used = 0;
    for (int i = 0; i < E; i++) {
        if (l->counts[(size_t)i * E + i] == 0) continue;
        double best = 0;
        used++;
        for (int j = 0; j < E; j++) {
            if (j == i) continue;
            mt_coact_pair p = {i, j, l->counts[(size_t)i * E + j], mt_coactivation_share(l, E, i, j)};
            sum += p.share;
            best = fmax(best, p.share);
            if (p.count == 0 || (l->n_top == MT_COACT_TOP_PAIRS && !pair_before(&p, &l->top[l->n_top - 1]))) continue;
            int at = l->n_top < MT_COACT_TOP_PAIRS ? l->n_top++ : MT_COACT_TOP_PAIRS - 1;
            while (at > 0 && pair_before(&p, &l->top[at - 1])) {
                l->top[at] = l->top[at - 1];
                at--;
            }
            l->top[at] = p;
        }
        sum_max += best;
    }
    l->mean_share = used && E > 1 ? sum / ((double)used * (E - 1)) : NAN;
    l->mean_max_share = used && E > 1 ? sum_max / used : NAN;
}

int mt_coactivation_compute(const mt_per_token_dump *d, const int *layers, int n, mt_coactivation *c, mt_err *err) {
    memset(c, 0, sizeof *c);
    c->dump = d;
    int E = d->num_experts, K = d->top_k;
    size_t EE = (size_t)E * (size_t)E;
    int32_t *ids = malloc(sizeof *ids * (size_t)K);
    c->layers = calloc((size_t)(n ? n : 1), sizeof *c->layers);
    if (!ids || !c->layers) {
        free(ids);
        return mt_errf(err, "out of memory");
    }
    c->n = n;
    for (int k = 0; k < n; k++) {
        c->layers[k].layer = layers[k];
        if (!(c->layers[k].counts = calloc(EE, sizeof(int64_t)))) {
            free(ids);
            mt_coactivation_free(c);
            return mt_errf(err, "out of memory (%d x %d counts for each of %d layers)", E, E, n);
        }
    }
    for (int64_t r = 0; r < d->rows; r++)
        for (int k = 0; k < n; k++) {
            mt_coact_layer *l = &c->layers[k];
            int m = mt_analysis_row_experts(d, r, l->layer, ids);
            l->tokens += m > 0;
            for (int a = 0; a < m; a++) {
                size_t row = (size_t)ids[a] * E;
                l->counts[row + ids[a]]++;
                for (int b = a + 1; b < m; b++) {
                    l->counts[row + ids[b]]++;
                    l->counts[(size_t)ids[b] * E + ids[a]]++;
                }
            }
        }
    free(ids);
    for (int k = 0; k < n; k++) summarise(&c->layers[k], E);
    return 0;
}

/* ---- JSON ---- */

/* "key": v, v exactly or null. */
static void put_share(mt_strbuf *b, const char *key, double v) {
    char num[32];
    mt_analysis_number(v, num);
    mt_strbuf_printf(b, "\"%s\": %s", key, num);
}

static void put_layer(mt_strbuf *b, const mt_coact_layer *l, int E, bool first) {
    mt_strbuf_printf(b, "%s\n  {\"layer\": %d, \"num_tokens\": %lld, ", first ? "" : ",", l->layer, (long long)l->tokens);
    put_share(b, "mean_share", l->mean_share);
    mt_strbuf_puts(b, ", ");
    put_share(b, "mean_max_share", l->mean_max_share);
    mt_strbuf_puts(b, ",\n   \"top_pairs\": [");
    for (int p = 0; p < l->n_top; p++) {
        const mt_coact_pair *x = &l->top[p];
        mt_strbuf_printf(b, "%s{\"i\": %d, \"j\": %d, \"count\": %lld, ", p ? ", " : "", x->i, x->j, (long long)x->count);
        put_share(b, "share", x->share);
        mt_strbuf_puts(b, "}");
    }
    mt_strbuf_puts(b, "],\n   \"counts\": [");
    for (int i = 0; i < E; i++) {
        mt_strbuf_puts(b, i ? ",\n              [" : "[");
        for (int j = 0; j < E; j++) mt_strbuf_printf(b, "%s%lld", j ? ", " : "", (long long)l->counts[(size_t)i * E + j]);
        mt_strbuf_puts(b, "]");
    }
    mt_strbuf_puts(b, "]}");
}

int mt_coactivation_write_json(const mt_coactivation *c, const char *out_path, mt_err *err) {
    const mt_per_token_dump *d = c->dump;
    int E = d->num_experts;
    cJSON *head = mt_analysis_header_json(d, MT_COACTIVATION_FORMAT);
    char num[32];
    mt_analysis_number(E > 1 ? (double)(d->top_k - 1) / (E - 1) : NAN, num);
    bool ok = head && cJSON_AddRawToObject(head, "uniform_share", num);
    char *text = ok ? mt_json_print(head) : NULL;
    cJSON_Delete(head);
    if (!text) return mt_errf(err, "out of memory");
    mt_strbuf b = {0};
    mt_strbuf_append(&b, text, strlen(text) - 1); /* the header without its closing brace */
    free(text);
    mt_strbuf_puts(&b, ",\n \"layers\": [");
    for (int k = 0; k < c->n; k++) put_layer(&b, &c->layers[k], E, k == 0);
    mt_strbuf_puts(&b, c->n ? "\n ]}\n" : "]}\n");
    int rc = mt_atomic_write(out_path, b.data, b.len, err);
    mt_strbuf_free(&b);
    return rc;
}
