/* Expert usage compared across groups of requests: see usage_compare.h. */
#include "routing/usage_compare.h"

#include <math.h>
#include <stdlib.h>

static double row_sum(const int64_t *c, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)c[i];
    return s;
}

/* The p log2(p / m) term of a divergence, 0 where p is 0. */
static double kl_term(double p, double m) { return p > 0 ? p * log2(p / m) : 0.0; }

double mt_usage_js_divergence(const int64_t *p, const int64_t *q, int n) {
    double sp = row_sum(p, n), sq = row_sum(q, n);
    if (sp <= 0 || sq <= 0) return -1.0;
    double js = 0;
    for (int i = 0; i < n; i++) {
        double a = (double)p[i] / sp, b = (double)q[i] / sq, m = 0.5 * (a + b);
        js += 0.5 * kl_term(a, m) + 0.5 * kl_term(b, m);
    }
    return js < 0 ? 0.0 : (js > 1 ? 1.0 : js); /* rounding can step just outside [0, 1] */
}

static const int64_t *group_row(const mt_usage_groups *u, int g, int l) {
    return u->count + ((size_t)g * (size_t)u->num_layers + (size_t)l) * (size_t)u->num_experts;
}

double mt_usage_lift(const mt_usage_groups *u, int g, int l, int e) {
    int E = u->num_experts;
    const int64_t *c = group_row(u, g, l), *all = u->all + (size_t)l * (size_t)E;
    double sg = row_sum(c, E), sa = row_sum(all, E);
    if (sg <= 0 || sa <= 0 || all[e] <= 0) return -1.0;
    return ((double)c[e] / sg) / ((double)all[e] / sa);
}

/* rest = all traffic's row of layer l less group g's; false when a count would be negative (the
 * group counted more than all traffic). */
static bool rest_row(const mt_usage_groups *u, int g, int l, int64_t *rest) {
    const int64_t *c = group_row(u, g, l), *all = u->all + (size_t)l * (size_t)u->num_experts;
    bool ok = true;
    for (int e = 0; e < u->num_experts; e++) {
        rest[e] = all[e] - c[e];
        ok = ok && rest[e] >= 0;
    }
    return ok;
}

double mt_usage_divergence_mean(const mt_usage_groups *u, int g, int64_t *rest) {
    double sum = 0;
    int n = 0;
    for (int l = 0; l < u->num_layers; l++) {
        if (!u->layer_is_moe[l] || !rest_row(u, g, l, rest)) continue;
        double js = mt_usage_js_divergence(group_row(u, g, l), rest, u->num_experts);
        if (js >= 0) {
            sum += js;
            n++;
        }
    }
    return n ? sum / n : -1.0;
}

static cJSON *num_or_null(double v) { return v < 0 ? cJSON_CreateNull() : cJSON_CreateNumber(v); }

/* The top_n experts by share_g - share_rest > 0, as JSON; rest [E] is all's row less the group's.
 * Empty when the group or the rest has no tokens: there is nothing to compare. */
static cJSON *distinctive_json(const mt_usage_groups *u, int g, int l, const int64_t *rest, int top_n) {
    int E = u->num_experts;
    const int64_t *c = group_row(u, g, l);
    double sg = row_sum(c, E), sr = row_sum(rest, E);
    cJSON *list = cJSON_CreateArray();
    if (!list || sg <= 0 || sr <= 0) return list;
    int last = -1;
    double last_excess = INFINITY;
    for (int r = 0; r < top_n; r++) { /* descending excess, ties to the lower expert id */
        int best = -1;
        double best_excess = 0;
        for (int e = 0; e < E; e++) {
            double ex = (double)c[e] / sg - (double)rest[e] / sr;
            bool after = ex < last_excess || (ex == last_excess && e > last);
            if (after && ex > 0 && (best < 0 || ex > best_excess)) {
                best = e;
                best_excess = ex;
            }
        }
        if (best < 0) break;
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddItemToArray(list, o);
        cJSON_AddNumberToObject(o, "expert", best);
        cJSON_AddNumberToObject(o, "share", (double)c[best] / sg);
        cJSON_AddNumberToObject(o, "share_rest", (double)rest[best] / sr);
        cJSON_AddItemToObject(o, "lift", num_or_null(mt_usage_lift(u, g, l, best)));
        last = best;
        last_excess = best_excess;
    }
    return list;
}

cJSON *mt_usage_compare_json(const mt_usage_groups *u, int top_n) {
    int G = u->num_groups, L = u->num_layers, E = u->num_experts;
    int64_t *rest = malloc((size_t)E * sizeof *rest);
    double *div_sum = calloc((size_t)L, sizeof *div_sum);
    int *div_n = calloc((size_t)L, sizeof *div_n);
    cJSON *root = cJSON_CreateObject();
    cJSON *groups = root ? cJSON_AddArrayToObject(root, "groups") : NULL;
    bool ok = rest && div_sum && div_n && groups;
    for (int g = 0; ok && g < G; g++) {
        cJSON *o = cJSON_CreateObject();
        if (!(ok = o != NULL)) break;
        cJSON_AddItemToArray(groups, o);
        cJSON_AddStringToObject(o, "name", u->names[g]);
        if (u->requests) cJSON_AddNumberToObject(o, "requests", (double)u->requests[g]);
        cJSON_AddItemToObject(o, "tokens", num_or_null((double)u->tokens[g]));
        cJSON *mean = cJSON_AddNullToObject(o, "divergence_mean");
        cJSON *per = cJSON_AddArrayToObject(o, "divergence_per_layer");
        cJSON *dist = cJSON_AddArrayToObject(o, "distinctive_experts_per_layer");
        if (!(ok = mean && per && dist)) break;
        double sum = 0;
        int n = 0;
        for (int l = 0; ok && l < L; l++) {
            if (!u->layer_is_moe[l]) {
                cJSON_AddItemToArray(per, cJSON_CreateNull());
                cJSON_AddItemToArray(dist, cJSON_CreateNull());
                continue;
            }
            if (!(ok = rest_row(u, g, l, rest))) break;
            double js = mt_usage_js_divergence(group_row(u, g, l), rest, E);
            cJSON_AddItemToArray(per, num_or_null(js));
            if (js >= 0) {
                sum += js;
                n++;
                div_sum[l] += js;
                div_n[l]++;
            }
            cJSON_AddItemToArray(dist, distinctive_json(u, g, l, rest, top_n));
        }
        if (ok && n) cJSON_ReplaceItemInObject(o, "divergence_mean", cJSON_CreateNumber(sum / n));
    }
    cJSON *layer_mean = ok ? cJSON_AddArrayToObject(root, "mean_divergence_per_layer") : NULL;
    ok = ok && layer_mean;
    for (int l = 0; ok && l < L; l++)
        cJSON_AddItemToArray(layer_mean, u->layer_is_moe[l] && div_n[l] ? cJSON_CreateNumber(div_sum[l] / div_n[l])
                                                                         : cJSON_CreateNull());
    free(rest);
    free(div_sum);
    free(div_n);
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}
