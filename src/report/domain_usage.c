/* Expert usage per domain: see domain_usage.h. */
#include "report/domain_usage.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "report/usage_report.h"
#include "routing/routing_split.h"
#include "routing/usage_compare.h"
#include "util/atomic_write.h"

#define MAX_DRAWN_DOMAINS 32
#define SLUG_MAX 64

struct mt_domain_usage {
    const mt_config *cfg;
    char *model_name, *field, *data;
    mt_recorder_opts base;       /* stat, no window */
    pthread_mutex_t mu;          /* the labels, the request counters */
    pthread_mutex_t pass_mu;     /* the sink's end of pass; takes and resets */
    atomic_bool active;          /* whether passes beginning now are recorded */
    /* the engine thread's view of the pass in progress */
    bool in_pass, pass_on;
    int num_domains;             /* under mu; entries below num_domains never change */
    char *names[MT_DOMAIN_MAX];
    char *slugs[MT_DOMAIN_MAX];  /* folder names under domains/ */
    mt_recorder *recorders[MT_DOMAIN_MAX]; /* always active: `active` above decides per pass */
    int64_t requests[MT_DOMAIN_MAX], unlabelled; /* while recording, since the last write or reset */
    int64_t requests_total[MT_DOMAIN_MAX];        /* since creation */
    mt_recorder *rest;            /* the tokens of no domain (the split's rest) */
    mt_routing_split *split;
    mt_routing_sink split_sink;
};

void mt_domain_usage_free(mt_domain_usage *u) {
    if (!u) return;
    for (int g = 0; g < u->num_domains; g++) {
        free(u->names[g]);
        free(u->slugs[g]);
        mt_recorder_free(u->recorders[g]);
    }
    mt_recorder_free(u->rest);
    mt_routing_split_free(u->split);
    pthread_mutex_destroy(&u->mu);
    pthread_mutex_destroy(&u->pass_mu);
    free(u->model_name);
    free(u->field);
    free(u->data);
    free(u);
}

/* ---- the sink ---------------------------------------------------------------------------------- */

static void usage_on_layer(void *ctx, const mt_routing_event *ev) {
    mt_domain_usage *u = ctx;
    if (!u->in_pass) {
        u->in_pass = true;
        u->pass_on = atomic_load_explicit(&u->active, memory_order_acquire);
    }
    if (u->pass_on) u->split_sink.on_layer(u->split_sink.ctx, ev);
}

/* Every recorder commits the pass here, together, so a snapshot under pass_mu sees the same passes
 * in each. */
static void usage_on_pass(void *ctx, const mt_pass_event *ev) {
    mt_domain_usage *u = ctx;
    if (u->in_pass && u->pass_on) {
        pthread_mutex_lock(&u->pass_mu);
        u->split_sink.on_pass(u->split_sink.ctx, ev);
        pthread_mutex_unlock(&u->pass_mu);
    }
    u->in_pass = u->pass_on = false;
}

mt_routing_sink mt_domain_usage_sink(mt_domain_usage *u) {
    mt_routing_sink s = {.on_layer = usage_on_layer, .on_pass = usage_on_pass, .ctx = u};
    return s;
}

/* ---- labels ------------------------------------------------------------------------------------- */

mt_domain_usage *mt_domain_usage_new(const mt_config *cfg, const char *model_name, const mt_recorder_opts *base,
                                     const char *field, const char *data, mt_err *err) {
    mt_domain_usage *u = calloc(1, sizeof *u);
    if (!u) {
        mt_errf(err, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&u->mu, NULL);
    pthread_mutex_init(&u->pass_mu, NULL);
    atomic_init(&u->active, false);
    u->cfg = cfg;
    u->base = *base;
    u->base.mode = MT_REC_STAT;
    u->base.buffer_size = -1;
    u->base.dump_dir = NULL;
    u->model_name = strdup(model_name ? model_name : "");
    u->field = strdup(field ? field : "");
    u->data = data ? strdup(data) : NULL;
    u->split = mt_routing_split_new(MT_DOMAIN_MAX);
    if (!u->model_name || !u->field || (data && !u->data) || !u->split) {
        mt_errf(err, "out of memory");
        goto fail;
    }
    if (!(u->rest = mt_recorder_new(cfg, u->model_name, &u->base, err))) goto fail;
    mt_recorder_start(u->rest);
    mt_routing_split_set_rest(u->split, mt_recorder_sink(u->rest));
    u->split_sink = mt_routing_split_sink(u->split);
    return u;
fail:
    mt_domain_usage_free(u);
    return NULL;
}

/* A folder name for label g: its letters, digits, '.', '-' and '_', others as '_', at most SLUG_MAX
 * bytes, never starting with '.'; "-2", "-3", ... appended when an earlier label took it, letter
 * case aside. */
static void make_slug(const mt_domain_usage *u, int g, const char *label, char *slug, size_t n) {
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
        for (int h = 0; h < g && !taken; h++) taken = strcasecmp(u->slugs[h], slug) == 0; /* case-blind file systems */
        if (!taken) return;
        snprintf(slug, n, "%s-%d", base, suffix);
    }
}

int mt_domain_usage_group(mt_domain_usage *u, const char *label, mt_err *err) {
    size_t len = label ? strlen(label) : 0;
    if (len == 0) return mt_errf(err, "a domain label must not be empty");
    if (len > MT_DOMAIN_LABEL_MAX) return mt_errf(err, "a domain label is longer than %d bytes", MT_DOMAIN_LABEL_MAX);
    pthread_mutex_lock(&u->mu);
    int g = 0, rc = -1;
    while (g < u->num_domains && strcmp(u->names[g], label)) g++;
    if (g < u->num_domains) {
        rc = g + 1;
        goto out;
    }
    if (g == MT_DOMAIN_MAX) {
        mt_errf(err, "domain '%.64s': %d domains are recorded already, the most there can be", label, MT_DOMAIN_MAX);
        goto out;
    }
    char slug[SLUG_MAX + 16];
    make_slug(u, g, label, slug, sizeof slug);
    u->names[g] = strdup(label);
    u->slugs[g] = strdup(slug);
    if (!u->names[g] || !u->slugs[g] || !(u->recorders[g] = mt_recorder_new(u->cfg, u->model_name, &u->base, err))) {
        if (!u->names[g] || !u->slugs[g]) mt_errf(err, "out of memory");
        goto undo;
    }
    mt_recorder_start(u->recorders[g]);
    if (mt_routing_split_add(u->split, mt_recorder_sink(u->recorders[g])) != g + 1) {
        mt_errf(err, "domain '%.64s': the split sink is full", label);
        goto undo;
    }
    u->num_domains = g + 1;
    rc = g + 1;
    pthread_mutex_unlock(&u->mu);
    mt_err ignored; /* out of memory: the take makes its own */
    mt_recorder_prepare_twin(u->recorders[g], &ignored); /* its entry never changes now */
    return rc;
undo:
    free(u->names[g]);
    free(u->slugs[g]);
    mt_recorder_free(u->recorders[g]);
    u->names[g] = u->slugs[g] = NULL;
    u->recorders[g] = NULL;
out:
    pthread_mutex_unlock(&u->mu);
    return rc;
}

void mt_domain_usage_count_request(mt_domain_usage *u, int g) {
    bool active = atomic_load_explicit(&u->active, memory_order_acquire);
    pthread_mutex_lock(&u->mu);
    if (g >= 1 && g <= u->num_domains) {
        u->requests_total[g - 1]++;
        if (active) u->requests[g - 1]++;
    } else if (g == 0 && active) {
        u->unlabelled++;
    }
    pthread_mutex_unlock(&u->mu);
}

int mt_domain_usage_stats(mt_domain_usage *u, mt_domain_stat *out) {
    pthread_mutex_lock(&u->mu);
    int n = u->num_domains;
    for (int g = 0; g < n; g++) {
        mt_recorder_counts k;
        mt_recorder_get_counts(u->recorders[g], &k);
        out[g] = (mt_domain_stat){.name = u->names[g], .requests_total = u->requests_total[g], .tokens = k.num_tokens};
    }
    pthread_mutex_unlock(&u->mu);
    return n;
}

bool mt_domain_usage_label(void *ctx, int32_t g, char *out, size_t size) {
    mt_domain_usage *u = ctx;
    pthread_mutex_lock(&u->mu);
    bool known = g >= 1 && g <= u->num_domains;
    if (known) snprintf(out, size, "%s", u->names[g - 1]);
    pthread_mutex_unlock(&u->mu);
    return known;
}

int mt_domain_usage_num_domains(mt_domain_usage *u) {
    pthread_mutex_lock(&u->mu);
    int n = u->num_domains;
    pthread_mutex_unlock(&u->mu);
    return n;
}

void mt_domain_usage_start(mt_domain_usage *u) { atomic_store_explicit(&u->active, true, memory_order_release); }
void mt_domain_usage_stop(mt_domain_usage *u) { atomic_store_explicit(&u->active, false, memory_order_release); }

/* Resets every recorder and counter; mu and pass_mu held. */
static void reset_locked(mt_domain_usage *u) {
    for (int g = 0; g < u->num_domains; g++) {
        mt_recorder_reset(u->recorders[g]);
        u->requests[g] = 0;
    }
    mt_recorder_reset(u->rest);
    u->unlabelled = 0;
}

void mt_domain_usage_reset(mt_domain_usage *u) {
    pthread_mutex_lock(&u->mu);
    pthread_mutex_lock(&u->pass_mu);
    reset_locked(u);
    pthread_mutex_unlock(&u->pass_mu);
    pthread_mutex_unlock(&u->mu);
}

int mt_domain_usage_set_placement(mt_domain_usage *u, const mt_placement *p, mt_err *err) {
    pthread_mutex_lock(&u->mu);
    pthread_mutex_lock(&u->pass_mu);
    int rc = mt_recorder_set_placement(u->rest, p, err);
    for (int g = 0; rc == 0 && g < u->num_domains; g++)
        if (mt_recorder_set_placement(u->recorders[g], p, err)) rc = -1;
    if (rc == 0) {
        u->base.placement = p; /* for the recorders of labels seen from now on */
        reset_locked(u);
    }
    pthread_mutex_unlock(&u->pass_mu);
    pthread_mutex_unlock(&u->mu);
    return rc;
}

/* ---- the report ----------------------------------------------------------------------------------- */

/* The folder at path, made when missing. */
static int make_dir(const char *path, mt_err *err) {
    struct stat st;
    if (mkdir(path, 0755) == 0) return 0;
    if (errno != EEXIST) return mt_errf(err, "cannot create %s: %s", path, strerror(errno));
    if (stat(path, &st) || !S_ISDIR(st.st_mode)) return mt_errf(err, "%s: not a folder", path);
    return 0;
}

struct mt_domain_window {
    mt_domain_usage *u;
    int G;                       /* the domains known at the take */
    mt_recorder *taken[MT_DOMAIN_MAX], *rest;
    int64_t requests[MT_DOMAIN_MAX], unlabelled;
};

void mt_domain_window_free(mt_domain_window *w) {
    if (!w) return;
    for (int g = 0; g < w->G; g++) mt_recorder_free(w->taken[g]);
    mt_recorder_free(w->rest);
    free(w);
}

int mt_domain_usage_ready_take(mt_domain_usage *u, mt_err *err) {
    pthread_mutex_lock(&u->mu);
    int n = u->num_domains; /* entries below it never change: made ready without the lock */
    pthread_mutex_unlock(&u->mu);
    int rc = mt_recorder_prepare_twin(u->rest, err);
    for (int g = 0; rc == 0 && g < n; g++) rc = mt_recorder_prepare_twin(u->recorders[g], err);
    return rc;
}

mt_domain_window *mt_domain_usage_take(mt_domain_usage *u, mt_err *err) {
    mt_domain_window *w = calloc(1, sizeof *w);
    if (!w) {
        mt_errf(err, "domain usage: out of memory");
        return NULL;
    }
    w->u = u;
    pthread_mutex_lock(&u->mu); /* no label comes meanwhile */
    w->G = u->num_domains;
    int made = 0;
    if (w->G == 0) mt_errf(err, "domain usage: no request carried a domain label");
    else if ((w->rest = mt_recorder_twin(u->rest, err)))
        while (made < w->G && (w->taken[made] = mt_recorder_twin(u->recorders[made], err))) made++;
    if (w->G == 0 || made < w->G) { /* nothing taken */
        pthread_mutex_unlock(&u->mu);
        w->G = made;
        mt_domain_window_free(w);
        return NULL;
    }
    /* every recorder at the same pass boundary: the engine waits at its end of pass meanwhile */
    pthread_mutex_lock(&u->pass_mu);
    for (int g = 0; g < w->G; g++) {
        mt_recorder_take_into(u->recorders[g], w->taken[g]);
        w->requests[g] = u->requests[g];
        u->requests[g] = 0;
    }
    mt_recorder_take_into(u->rest, w->rest);
    w->unlabelled = u->unlabelled;
    u->unlabelled = 0;
    pthread_mutex_unlock(&u->pass_mu);
    pthread_mutex_unlock(&u->mu);
    return w;
}

bool mt_domain_usage_put_back(mt_domain_window *w) {
    if (!w) return false;
    mt_domain_usage *u = w->u;
    pthread_mutex_lock(&u->mu);
    pthread_mutex_lock(&u->pass_mu);
    for (int g = 0; g < w->G; g++) /* the requests come back with their tokens, not without */
        if (mt_recorder_put_back(u->recorders[g], w->taken[g])) u->requests[g] += w->requests[g];
    bool back = mt_recorder_put_back(u->rest, w->rest); /* the domains' go or stay with it: the same
                                                              resets and switches drop them all */
    if (back) u->unlabelled += w->unlabelled;
    pthread_mutex_unlock(&u->pass_mu);
    pthread_mutex_unlock(&u->mu);
    free(w);
    return back;
}

/* What the report is made of, from a window's recorders. */
typedef struct snapshot {
    int64_t *count, *all, *tokens, all_tokens;
    cJSON **dumps; /* [G] each domain's stat dump */
} snapshot;

static void snapshot_free(snapshot *s, int G) {
    for (int g = 0; s->dumps && g < G; g++) cJSON_Delete(s->dumps[g]);
    free(s->dumps);
    free(s->count);
    free(s->all);
    free(s->tokens);
}

/* All traffic (the rest's tokens and counts, then every domain's added) and each domain's counts
 * and stat dump. */
static int read_window(const mt_domain_window *w, snapshot *s, mt_err *err) {
    const mt_config *c = w->u->cfg;
    size_t LE = (size_t)c->num_hidden_layers * (size_t)c->num_experts;
    int G = w->G;
    *s = (snapshot){0};
    s->count = malloc((size_t)G * LE * sizeof *s->count);
    s->all = malloc(LE * sizeof *s->all);
    s->tokens = malloc((size_t)G * sizeof *s->tokens);
    s->dumps = calloc((size_t)G, sizeof *s->dumps);
    if (!s->count || !s->all || !s->tokens || !s->dumps) return mt_errf(err, "domain usage: out of memory");
    mt_recorder_counts k;
    mt_recorder_get_counts(w->rest, &k);
    s->all_tokens = k.num_tokens;
    mt_recorder_logical_count(w->rest, s->all);
    for (int g = 0; g < G; g++) {
        int64_t *cg = s->count + (size_t)g * LE;
        mt_recorder_get_counts(w->taken[g], &k);
        s->tokens[g] = k.num_tokens;
        s->all_tokens += k.num_tokens;
        mt_recorder_logical_count(w->taken[g], cg);
        for (size_t i = 0; i < LE; i++) s->all[i] += cg[i];
        if (!(s->dumps[g] = mt_recorder_dump_json(w->taken[g], false, err))) return -1;
    }
    return 0;
}

static long long unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* domains.json's object: the run's shape, then the comparison's groups as "domains" with their
 * dumps. */
static cJSON *domains_json(const mt_domain_window *w, const snapshot *s, const mt_usage_groups *g,
                           char (*paths)[4096], mt_err *err) {
    const mt_domain_usage *u = w->u;
    const mt_config *c = u->cfg;
    cJSON *cmp = mt_usage_compare_json(g, 4);
    cJSON *root = cJSON_CreateObject();
    if (!cmp || !root) {
        cJSON_Delete(cmp);
        cJSON_Delete(root);
        mt_errf(err, "domain usage: out of memory");
        return NULL;
    }
    cJSON_AddStringToObject(root, "format", "moetrace.domain_usage.v1");
    cJSON_AddStringToObject(root, "model", u->model_name);
    if (u->data) cJSON_AddStringToObject(root, "data", u->data);
    cJSON_AddStringToObject(root, "field", u->field);
    cJSON_AddNumberToObject(root, "num_hidden_layers", c->num_hidden_layers);
    cJSON *moe = cJSON_AddArrayToObject(root, "moe_layers");
    for (int l = 0; moe && l < c->num_hidden_layers; l++)
        if (c->layer_is_moe[l]) cJSON_AddItemToArray(moe, cJSON_CreateNumber(l));
    cJSON_AddNumberToObject(root, "num_experts", c->num_experts);
    cJSON_AddNumberToObject(root, "top_k", c->top_k);
    cJSON_AddNumberToObject(root, "tokens", (double)s->all_tokens);
    cJSON_AddNumberToObject(root, "unlabelled_requests", (double)w->unlabelled);
    cJSON *groups = cJSON_DetachItemFromObject(cmp, "groups");
    cJSON *it;
    int k = 0;
    cJSON_ArrayForEach(it, groups) cJSON_AddStringToObject(it, "stat_dump", paths[k++]);
    cJSON_AddItemToObject(root, "domains", groups);
    cJSON_AddItemToObject(root, "mean_divergence_per_layer", cJSON_DetachItemFromObject(cmp, "mean_divergence_per_layer"));
    cJSON_Delete(cmp);
    return root;
}

/* Prints o to path: pretty, or unformatted as recorder dumps are. */
static int write_json(const char *path, const cJSON *o, bool pretty, mt_err *err) {
    char *text = pretty ? cJSON_Print(o) : cJSON_PrintUnformatted(o);
    if (!text) return mt_errf(err, "out of memory");
    int rc = mt_atomic_write(path, text, strlen(text), err);
    free(text);
    return rc;
}

/* dir, dir/domains and the folders of the first G domains. */
static int make_dirs(mt_domain_usage *u, const char *dir, int G, mt_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/domains", dir);
    if (make_dir(dir, err) || make_dir(path, err)) return -1;
    for (int g = 0; g < G; g++) {
        snprintf(path, sizeof path, "%s/domains/%s", dir, u->slugs[g]);
        if (make_dir(path, err)) return -1;
    }
    return 0;
}

int mt_domain_usage_prepare(mt_domain_usage *u, const char *dir, mt_err *err) {
    return make_dirs(u, dir, mt_domain_usage_num_domains(u), err);
}

/* What a failed write leaves: the first `written` domain dumps, domains.json when json_path names it,
 * and the folders when they end up empty (an earlier run's files stay), so no half report remains. */
static void remove_partial(const mt_domain_usage *u, const char *dir, int G, char (*paths)[4096], int written,
                           const char *json_path) {
    char path[4096];
    for (int g = 0; paths && g < written; g++) unlink(paths[g]);
    if (json_path[0]) unlink(json_path);
    for (int g = 0; g < G; g++) {
        snprintf(path, sizeof path, "%s/domains/%s", dir, u->slugs[g]);
        rmdir(path);
    }
    snprintf(path, sizeof path, "%s/domains", dir);
    rmdir(path);
    rmdir(dir);
}

int mt_domain_window_write(mt_domain_window *w, const char *dir, bool picture, char *json_path, size_t json_path_len,
                           mt_err *err) {
    mt_domain_usage *u = w->u;
    const mt_config *c = u->cfg;
    int G = w->G, rc = -1, written = 0;
    snapshot s = {0};
    char (*paths)[4096] = malloc((size_t)G * sizeof *paths);
    cJSON *root = NULL;
    json_path[0] = '\0';
    if (make_dirs(u, dir, G, err) || read_window(w, &s, err)) goto out;
    if (!paths) {
        mt_errf(err, "domain usage: out of memory");
        goto out;
    }
    long long ms = unix_ms();
    for (; written < G; written++) {
        int g = written;
        snprintf(paths[g], sizeof paths[g], "%s/domains/%s/expert_distribution_%lld.json", dir, u->slugs[g], ms);
        if (write_json(paths[g], s.dumps[g], false, err)) goto out;
    }
    mt_usage_groups ug = {.num_groups = G, .num_layers = c->num_hidden_layers, .num_experts = c->num_experts,
                          .names = (const char *const *)u->names, .requests = w->requests, .tokens = s.tokens,
                          .count = s.count, .all = s.all, .layer_is_moe = c->layer_is_moe};
    if (!(root = domains_json(w, &s, &ug, paths, err))) goto out;
    snprintf(json_path, json_path_len, "%s/domains.json", dir);
    if (write_json(json_path, root, true, err)) goto out;
    char png[4096];
    snprintf(png, sizeof png, "%s/domains.png", dir);
    if (picture && G <= MAX_DRAWN_DOMAINS) {
        char title[512];
        snprintf(title, sizeof title, "%s — expert use by %s", u->model_name, u->field);
        if (mt_usage_report_render(&ug, title, png, err)) goto out;
    } else if (picture) {
        mt_log("%d domains: domains.png draws at most %d, so it is not drawn", G, MAX_DRAWN_DOMAINS);
        /* an earlier run's picture in the same folder would contradict this domains.json */
        if (remove(png) == 0) mt_log("removed %s, an earlier run's picture", png);
    }
    rc = 0;
out:
    if (rc) remove_partial(u, dir, G, paths, written, json_path);
    snapshot_free(&s, G);
    free(paths);
    cJSON_Delete(root);
    return rc;
}

int mt_domain_usage_write(mt_domain_usage *u, const char *dir, bool picture, char *json_path, size_t json_path_len,
                          mt_err *err) {
    mt_domain_window *w = mt_domain_usage_take(u, err);
    if (!w) return -1;
    if (mt_domain_window_write(w, dir, picture, json_path, json_path_len, err)) {
        mt_domain_usage_put_back(w); /* a write that fails loses nothing */
        return -1;
    }
    mt_domain_window_free(w);
    return 0;
}
