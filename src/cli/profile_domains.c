/* Expert usage per domain for `moetrace profile`: see profile_domains.h. */
#include "cli/profile_domains.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "report/usage_report.h"
#include "routing/routing_split.h"
#include "routing/usage_compare.h"
#include "util/atomic_write.h"

#define MAX_DRAWN_DOMAINS 32
#define SLUG_MAX 64

struct mt_profile_domains {
    const mt_config *cfg;
    const char *field, *data_path, *model_name, *out_dir;
    int num_domains, unlabelled;
    char **names;       /* [num_domains] labels, in order of first appearance */
    char **dirs;        /* [num_domains] dump folders, out_dir/domains/<slug> */
    int64_t *requests;  /* [num_domains] */
    mt_recorder **recorders;
    mt_routing_split *split;
};

void mt_profile_domains_free(mt_profile_domains *p) {
    if (!p) return;
    for (int g = 0; g < p->num_domains; g++) {
        free(p->names[g]);
        free(p->dirs[g]);
        if (p->recorders) mt_recorder_free(p->recorders[g]);
    }
    free(p->names);
    free(p->dirs);
    free(p->requests);
    free(p->recorders);
    mt_routing_split_free(p->split);
    free(p);
}

/* A folder name for label: its letters, digits, '.', '-' and '_', others as '_', at most SLUG_MAX
 * bytes, never starting with '.'; "-2", "-3", ... appended when an earlier label took it, letter
 * case aside. */
static void make_slug(const mt_profile_domains *p, int g, const char *label, char *slug, size_t n) {
    char base[SLUG_MAX + 1];
    size_t k = 0;
    for (const char *c = label; *c && k < SLUG_MAX; c++) {
        char ch = *c;
        bool keep = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                    ch == '_' || (ch == '.' && k > 0);
        base[k++] = keep ? ch : '_';
    }
    base[k] = 0;
    snprintf(slug, n, "%s", base);
    for (int suffix = 2;; suffix++) {
        bool taken = false;
        for (int h = 0; h < g && !taken; h++) {
            const char *dir = strrchr(p->dirs[h], '/');
            taken = dir && strcasecmp(dir + 1, slug) == 0; /* one folder on case-blind file systems */
        }
        if (!taken) return;
        snprintf(slug, n, "%s-%d", base, suffix);
    }
}

/* The folder at path, made when missing; an error now, before the run, when a file takes its place
 * (the recorder would find out only when it dumps, after the run). */
static int make_dir(const char *path, mt_err *err) {
    struct stat st;
    if (mkdir(path, 0755) == 0) return 0;
    if (errno != EEXIST) return mt_errf(err, "cannot create %s: %s", path, strerror(errno));
    if (stat(path, &st) || !S_ISDIR(st.st_mode)) return mt_errf(err, "%s: not a folder", path);
    return 0;
}

mt_profile_domains *mt_profile_domains_new(const mt_dataset *d, const char *field, const char *data_path,
                                           const mt_config *cfg, const char *model_name,
                                           const mt_recorder_opts *base, const char *out_dir, mt_err *err) {
    mt_profile_domains *p = calloc(1, sizeof *p);
    int *group_of = malloc((size_t)d->n * sizeof *group_of);
    if (p) {
        p->names = calloc(MT_PROFILE_MAX_DOMAINS, sizeof *p->names);
        p->dirs = calloc(MT_PROFILE_MAX_DOMAINS, sizeof *p->dirs);
        p->requests = calloc(MT_PROFILE_MAX_DOMAINS, sizeof *p->requests);
        p->recorders = calloc(MT_PROFILE_MAX_DOMAINS, sizeof *p->recorders);
    }
    if (!p || !group_of || !p->names || !p->dirs || !p->requests || !p->recorders) {
        mt_errf(err, "out of memory");
        goto fail;
    }
    p->cfg = cfg;
    p->field = field;
    p->data_path = data_path;
    p->model_name = model_name;
    p->out_dir = out_dir;
    for (int i = 0; i < d->n; i++) {
        group_of[i] = -1;
        if (!d->domains[i]) {
            p->unlabelled++;
            continue;
        }
        int g = 0;
        while (g < p->num_domains && strcmp(p->names[g], d->domains[i])) g++;
        if (g == p->num_domains) {
            if (g == MT_PROFILE_MAX_DOMAINS) {
                mt_errf(err, "--domain-field %s: %s has more than %d distinct values", field, data_path,
                        MT_PROFILE_MAX_DOMAINS);
                goto fail;
            }
            if (!(p->names[g] = strdup(d->domains[i]))) {
                mt_errf(err, "out of memory");
                goto fail;
            }
            p->num_domains++;
        }
        group_of[i] = g;
        p->requests[g]++;
    }
    if (p->num_domains == 0) {
        mt_errf(err, "--domain-field %s: no line of %s has that field", field, data_path);
        goto fail;
    }
    char path[4096], slug[SLUG_MAX + 16];
    snprintf(path, sizeof path, "%s/domains", out_dir);
    if (make_dir(path, err)) goto fail;
    mt_routing_sink sinks[MT_PROFILE_MAX_DOMAINS];
    for (int g = 0; g < p->num_domains; g++) {
        make_slug(p, g, p->names[g], slug, sizeof slug);
        snprintf(path, sizeof path, "%s/domains/%s", out_dir, slug);
        if (!(p->dirs[g] = strdup(path))) {
            mt_errf(err, "out of memory");
            goto fail;
        }
        if (make_dir(path, err)) goto fail;
        mt_recorder_opts o = *base;
        o.dump_dir = p->dirs[g];
        if (!(p->recorders[g] = mt_recorder_new(cfg, model_name, &o, err))) goto fail;
        mt_recorder_start(p->recorders[g]);
        sinks[g] = mt_recorder_sink(p->recorders[g]);
    }
    if (!(p->split = mt_routing_split_new(sinks, p->num_domains, group_of, d->n))) {
        mt_errf(err, "out of memory");
        goto fail;
    }
    free(group_of);
    return p;
fail:
    free(group_of);
    mt_profile_domains_free(p);
    return NULL;
}

mt_routing_sink mt_profile_domains_sink(mt_profile_domains *p) { return mt_routing_split_sink(p->split); }

/* domains.json's object: the run's shape, then compare's groups as "domains" with their dumps. */
static cJSON *domains_json(const mt_profile_domains *p, const mt_usage_groups *u, char dumps[][4096], mt_err *err) {
    const mt_config *c = p->cfg;
    cJSON *cmp = mt_usage_compare_json(u, 4);
    cJSON *root = cJSON_CreateObject();
    if (!cmp || !root) {
        cJSON_Delete(cmp);
        cJSON_Delete(root);
        mt_errf(err, "domain usage: out of memory, or a domain counted more tokens than the whole run");
        return NULL;
    }
    cJSON_AddStringToObject(root, "format", "moetrace.domain_usage.v1");
    cJSON_AddStringToObject(root, "model", p->model_name);
    cJSON_AddStringToObject(root, "data", p->data_path);
    cJSON_AddStringToObject(root, "field", p->field);
    cJSON_AddNumberToObject(root, "num_hidden_layers", c->num_hidden_layers);
    cJSON *moe = cJSON_AddArrayToObject(root, "moe_layers");
    for (int l = 0; moe && l < c->num_hidden_layers; l++)
        if (c->layer_is_moe[l]) cJSON_AddItemToArray(moe, cJSON_CreateNumber(l));
    cJSON_AddNumberToObject(root, "num_experts", c->num_experts);
    cJSON_AddNumberToObject(root, "top_k", c->top_k);
    cJSON_AddNumberToObject(root, "unlabelled_requests", p->unlabelled);
    cJSON *groups = cJSON_DetachItemFromObject(cmp, "groups");
    cJSON *g;
    int k = 0;
    cJSON_ArrayForEach(g, groups) cJSON_AddStringToObject(g, "stat_dump", dumps[k++]);
    cJSON_AddItemToObject(root, "domains", groups);
    cJSON_AddItemToObject(root, "mean_divergence_per_layer", cJSON_DetachItemFromObject(cmp, "mean_divergence_per_layer"));
    cJSON_Delete(cmp);
    return root;
}

int mt_profile_domains_write(mt_profile_domains *p, const int64_t *all_count, char *json_path, size_t json_path_len,
                             mt_err *err) {
    const mt_config *c = p->cfg;
    int G = p->num_domains, L = c->num_hidden_layers, E = c->num_experts, rc = -1;
    size_t LE = (size_t)L * (size_t)E;
    if (mt_routing_split_failed(p->split)) return mt_errf(err, "domain usage: out of memory while recording");
    int64_t *count = malloc((size_t)G * LE * sizeof *count);
    int64_t *tokens = malloc((size_t)G * sizeof *tokens);
    bool *is_moe = malloc((size_t)L * sizeof *is_moe);
    char (*dumps)[4096] = malloc((size_t)G * sizeof *dumps);
    const char **names = malloc((size_t)G * sizeof *names);
    cJSON *root = NULL;
    char *text = NULL;
    if (!count || !tokens || !is_moe || !dumps || !names) {
        mt_errf(err, "out of memory");
        goto out;
    }
    for (int l = 0; l < L; l++) is_moe[l] = c->layer_is_moe[l];
    for (int g = 0; g < G; g++) {
        mt_recorder_counts rc_counts;
        mt_recorder_get_counts(p->recorders[g], &rc_counts);
        tokens[g] = rc_counts.num_tokens;
        mt_recorder_logical_count(p->recorders[g], count + (size_t)g * LE);
        names[g] = p->names[g];
        if (mt_recorder_dump(p->recorders[g], dumps[g], sizeof dumps[g], err)) goto out;
    }
    mt_usage_groups u = {.num_groups = G, .num_layers = L, .num_experts = E, .names = names,
                         .requests = p->requests, .tokens = tokens, .count = count, .all = all_count, .layer_is_moe = is_moe};
    if (!(root = domains_json(p, &u, dumps, err))) goto out;
    if (!(text = cJSON_Print(root))) {
        mt_errf(err, "out of memory");
        goto out;
    }
    snprintf(json_path, json_path_len, "%s/domains.json", p->out_dir);
    if (mt_atomic_write(json_path, text, strlen(text), err)) goto out;
    char png[4096];
    snprintf(png, sizeof png, "%s/domains.png", p->out_dir);
    if (G <= MAX_DRAWN_DOMAINS) {
        char title[512];
        snprintf(title, sizeof title, "%s — expert use by %s", p->model_name, p->field);
        if (mt_usage_report_render(&u, title, png, err)) goto out;
    } else {
        mt_log("%d domains: domains.png draws at most %d, so it is not drawn", G, MAX_DRAWN_DOMAINS);
        // an earlier run's picture in the same folder would contradict this run's domains.json
        if (remove(png) == 0) mt_log("removed %s, an earlier run's picture", png);
    }
    rc = 0;
out:
    free(count);
    free(tokens);
    free(is_moe);
    free(dumps);
    free(names);
    cJSON_Delete(root);
    free(text);
    return rc;
}
