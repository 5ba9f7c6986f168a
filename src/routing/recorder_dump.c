/* Dumps of the expert distribution recorder: the JSON object of SPEC §4, and the files
 * (stat/per_pass JSON; per_token safetensors + JSON index). Formats: docs/RECORDER.md.
 * safetensors layout (https://github.com/huggingface/safetensors, README "Format"): an 8-byte
 * little-endian header length, a JSON header (padded with spaces to a multiple of 8), then the data
 * section; every tensor here starts at a multiple of 8 bytes. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "routing/balancedness.h"
#include "routing/recorder_internal.h"
#include "routing/stat_dump.h"
#include "util/atomic_write.h"

/* Builds [L][E] from an int64 or int32 array. */
static cJSON *matrix_json(const int64_t *c64, const int32_t *c32, int L, int E) {
    cJSON *m = cJSON_CreateArray();
    for (int l = 0; m && l < L; l++) {
        cJSON *row = cJSON_CreateArray();
        if (!row) {
            cJSON_Delete(m);
            return NULL;
        }
        cJSON_AddItemToArray(m, row);
        for (int e = 0; e < E; e++) {
            size_t i = (size_t)l * (size_t)E + (size_t)e;
            cJSON *v = cJSON_CreateNumber(c64 ? (double)c64[i] : (double)c32[i]);
            if (!v) {
                cJSON_Delete(m);
                return NULL;
            }
            cJSON_AddItemToArray(row, v);
        }
    }
    return m;
}

static bool add_num(cJSON *o, const char *k, double v) { return cJSON_AddNumberToObject(o, k, v) != NULL; }

/* key: {"per_layer": [one per MoE layer], "mean"}: per-GPU balancedness of rows [L][width] of counts,
 * GPU g holding the counters [g * width / M, (g + 1) * width / M): logical experts (contiguous split)
 * or physical slots (the placement's GPUs). */
static bool add_balancedness(const mt_recorder *r, cJSON *o, const char *key, const int64_t *counts, int width) {
    cJSON *bal = cJSON_AddObjectToObject(o, key);
    cJSON *per = bal ? cJSON_AddArrayToObject(bal, "per_layer") : NULL;
    bool ok = per != NULL;
    double sum = 0;
    for (int l = 0; ok && l < r->L; l++) {
        if (!r->is_moe[l]) continue;
        double b = mt_balancedness_contiguous(counts + (size_t)l * (size_t)width, width, r->ep_size);
        sum += b;
        ok = cJSON_AddItemToArray(per, cJSON_CreateNumber(b));
    }
    return ok && add_num(bal, "mean", r->num_moe ? sum / r->num_moe : 1.0);
}

/* "placement", "physical_count" [L][R], "gpu_load" [L][M] and "pass_balancedness" (caller holds mu). */
static bool add_physical(const mt_recorder *r, cJSON *o) {
    int L = r->L, R = r->R, M = r->plc->num_gpus;
    cJSON *pj = mt_placement_to_json(r->plc);
    if (!pj || !cJSON_AddItemToObject(o, "placement", pj)) {
        cJSON_Delete(pj);
        return false;
    }
    const int64_t *phys = r->total + r->LE;
    cJSON *pc = matrix_json(phys, NULL, L, R);
    if (!pc || !cJSON_AddItemToObject(o, "physical_count", pc)) {
        cJSON_Delete(pc);
        return false;
    }
    int64_t *load = malloc((size_t)L * (size_t)M * sizeof *load);
    if (!load) return false;
    for (int l = 0; l < L; l++)
        for (int g = 0; g < M; g++) {
            int64_t s = 0;
            for (int k = 0; k < r->plc->slots_per_gpu; k++) s += phys[(size_t)l * R + (size_t)g * r->plc->slots_per_gpu + k];
            load[(size_t)l * M + g] = s;
        }
    cJSON *gl = matrix_json(load, NULL, L, M);
    free(load);
    if (!gl || !cJSON_AddItemToObject(o, "gpu_load", gl)) {
        cJSON_Delete(gl);
        return false;
    }
    return add_num(o, "pass_balancedness", r->num_passes ? r->bal_sum / (double)r->num_passes : 1.0);
}

cJSON *mt_rec_build_json_locked(mt_recorder *r, mt_err *err) {
    int L = r->L, E = r->E;
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddStringToObject(o, "format", MT_STAT_DUMP_FORMAT) &&
              cJSON_AddStringToObject(o, "mode", mt_recorder_mode_name(r->mode)) &&
              cJSON_AddStringToObject(o, "model", r->model) && add_num(o, "num_hidden_layers", L);
    cJSON *moe = ok ? cJSON_AddArrayToObject(o, "moe_layers") : NULL;
    ok = ok && moe;
    for (int l = 0; ok && l < L; l++)
        if (r->is_moe[l]) ok = cJSON_AddItemToArray(moe, cJSON_CreateNumber(l));
    ok = ok && add_num(o, "num_experts", E) && add_num(o, "top_k", r->K) &&
         add_num(o, "num_forward_passes", (double)r->num_passes) && add_num(o, "num_tokens", (double)r->num_tokens) &&
         /* the window of buffer_size does not apply to per_token, which records every pass since the reset */
         (r->mode == MT_REC_PER_TOKEN || add_num(o, "buffer_size", r->buffer_size)) && add_num(o, "ep_size", r->ep_size);
    if (ok && r->dropped_passes) ok = add_num(o, "dropped_passes", (double)r->dropped_passes);
    cJSON *lc = ok ? matrix_json(r->total, NULL, L, E) : NULL;
    ok = ok && lc && cJSON_AddItemToObject(o, "logical_count", lc);
    /* Balancedness: measured under the placement when there is one, else the contiguous split. */
    if (r->plc) {
        ok = ok && add_physical(r, o) && add_balancedness(r, o, "balancedness", r->total + r->LE, r->R) &&
             add_balancedness(r, o, "balancedness_contiguous", r->total, E);
    } else {
        ok = ok && add_balancedness(r, o, "balancedness", r->total, E);
    }
    if (ok && r->mode == MT_REC_PER_PASS) {
        cJSON *passes = cJSON_AddArrayToObject(o, "passes");
        int32_t *dense = malloc((r->LE > r->NC - r->LE ? r->LE : r->NC - r->LE) * sizeof *dense);
        ok = passes && dense;
        for (int i = 0; ok && i < r->ring_len; i++) {
            const mt_rec_pass *p = &r->ring[(r->ring_head + i) % r->ring_cap];
            cJSON *po = cJSON_CreateObject();
            ok = po && cJSON_AddItemToArray(passes, po) && add_num(po, "forward_pass_id", (double)p->id) &&
                 add_num(po, "num_tokens", (double)p->n_tokens);
            if (ok) mt_rec_pass_dense(p, 0, r->LE, dense);
            cJSON *m = ok ? matrix_json(NULL, dense, L, E) : NULL;
            ok = ok && m && cJSON_AddItemToObject(po, "logical_count", m);
            if (ok && r->plc) {
                mt_rec_pass_dense(p, r->LE, r->NC - r->LE, dense);
                m = matrix_json(NULL, dense, L, r->R);
                ok = m && cJSON_AddItemToObject(po, "physical_count", m) && add_num(po, "balancedness", p->balancedness);
            }
        }
        free(dense);
    }
    if (ok && r->mode == MT_REC_PER_TOKEN)
        ok = add_num(o, "num_tokens_recorded", (double)r->tok_n) && add_num(o, "max_tokens", (double)r->max_tokens) &&
             add_num(o, "dropped_tokens", (double)r->dropped_tokens) &&
             add_num(o, "num_requests", (double)r->n_req);
    if (!ok) {
        cJSON_Delete(o);
        mt_errf(err, "recorder dump: out of memory");
        return NULL;
    }
    return o;
}

cJSON *mt_recorder_dump_json(mt_recorder *r, bool reset, mt_err *err) {
    if (reset) pthread_mutex_lock(&r->dump_mu); /* after a file dump's put-back: it would be in this one */
    pthread_mutex_lock(&r->mu);
    cJSON *o = mt_rec_build_json_locked(r, err);
    if (o && reset) mt_rec_reset_locked(r);
    pthread_mutex_unlock(&r->mu);
    if (reset) pthread_mutex_unlock(&r->dump_mu);
    return o;
}

/* ---- safetensors ---- */

static void put_u64le(unsigned char *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

static bool host_is_le(void) {
    uint16_t x = 1;
    unsigned char c;
    memcpy(&c, &x, 1);
    return c == 1;
}

typedef struct st_tensor {
    const char *name, *dtype;
    int ndim;
    int64_t shape[3];
    const void *data;
    size_t nbytes;   /* bytes in the file */
    int narrow;      /* 0: data is written as is; 1 or 2: data holds uint8 (255 = -1) or int16 ids,
                        widened to int32 on the way out */
} st_tensor;

/* Streams n ids of `narrow` bytes each as little-endian int32. */
static int append_widened(mt_atomic_file *f, const void *src, size_t n, int narrow, mt_err *err) {
    int32_t buf[8192];
    for (size_t done = 0; done < n;) {
        size_t m = n - done < 8192 ? n - done : 8192;
        if (narrow == 1) {
            const uint8_t *p = (const uint8_t *)src + done;
            for (size_t i = 0; i < m; i++) buf[i] = p[i] == 255 ? -1 : p[i];
        } else {
            const int16_t *p = (const int16_t *)src + done;
            for (size_t i = 0; i < m; i++) buf[i] = p[i];
        }
        if (mt_atomic_append(f, buf, m * sizeof *buf, err) != 0) return -1;
        done += m;
    }
    return 0;
}

/* Writes the tensors, back to back, as one safetensors file (atomically, never replacing a file:
 * 1 when path is taken). Callers order them so that each starts at a multiple of its element size
 * (the data section starts at a multiple of 8). Takes metadata. */
static int write_safetensors(const char *path, const st_tensor *t, int n, cJSON *metadata, mt_err *err) {
    if (!host_is_le()) {
        cJSON_Delete(metadata);
        return mt_errf(err, "%s: safetensors writing needs a little-endian host", path);
    }
    cJSON *h = cJSON_CreateObject();
    if (!h) {
        cJSON_Delete(metadata);
        return mt_errf(err, "%s: out of memory", path);
    }
    if (metadata) cJSON_AddItemToObject(h, "__metadata__", metadata);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *ti = cJSON_AddObjectToObject(h, t[i].name);
        cJSON_AddStringToObject(ti, "dtype", t[i].dtype);
        cJSON *sh = cJSON_AddArrayToObject(ti, "shape");
        for (int d = 0; d < t[i].ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[d]));
        cJSON *of = cJSON_AddArrayToObject(ti, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + t[i].nbytes)));
        off += t[i].nbytes;
    }
    char *hs = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!hs) return mt_errf(err, "%s: out of memory", path);
    size_t hl = strlen(hs), padded = (hl + 7) / 8 * 8;
    char *hdr = malloc(8 + padded);
    if (!hdr) {
        free(hs);
        return mt_errf(err, "%s: out of memory", path);
    }
    put_u64le((unsigned char *)hdr, padded);
    memcpy(hdr + 8, hs, hl);
    memset(hdr + 8 + hl, ' ', padded - hl);
    free(hs);
    mt_atomic_file *f = mt_atomic_open(path, err);
    int rc = f ? mt_atomic_append(f, hdr, 8 + padded, err) : -1;
    free(hdr);
    for (int i = 0; rc == 0 && i < n; i++) {
        if (!t[i].nbytes) continue;
        rc = t[i].narrow ? append_widened(f, t[i].data, t[i].nbytes / 4, t[i].narrow, err)
                         : mt_atomic_append(f, t[i].data, t[i].nbytes, err);
    }
    if (!f) return -1;
    if (rc != 0) {
        mt_atomic_abort(f);
        return -1;
    }
    return mt_atomic_commit_new(f, err);
}

/* Writes the per_token tensors (caller holds mu): 0, 1 when path is taken, -1. request_index
 * (8-byte elements) goes first so every tensor is aligned to its element size. */
static int write_token_tensors(mt_recorder *r, const char *path, const char *index_name, mt_err *err) {
    int64_t T = r->tok_n;
    size_t row = (size_t)r->L * (size_t)r->K;
    static const int64_t zero = 0;
    st_tensor t[4] = {
        {"request_index", "I64", 1, {T, 0, 0}, T ? (const void *)r->tok_req : &zero, (size_t)T * 8, 0},
        {"topk_ids", "I32", 3, {T, r->L, r->K}, T ? (const void *)r->tok_ids : &zero, (size_t)T * row * 4,
         r->id_bytes == 4 ? 0 : r->id_bytes},
        {"position", "I32", 1, {T, 0, 0}, T ? (const void *)r->tok_pos : &zero, (size_t)T * 4, 0},
        {"token_id", "I32", 1, {T, 0, 0}, T ? (const void *)r->tok_tok : &zero, (size_t)T * 4, 0},
    };
    cJSON *meta = cJSON_CreateObject();
    if (!meta) return mt_errf(err, "%s: out of memory", path);
    cJSON_AddStringToObject(meta, "format", MT_STAT_DUMP_FORMAT);
    cJSON_AddStringToObject(meta, "index", index_name);
    return write_safetensors(path, t, 4, meta, err);
}

/* The per_token index's "request_ids" (caller holds mu): one string per request index, its name,
 * or the decimal digits of its id when it has none. NULL when out of memory. */
static cJSON *request_ids_json(const mt_recorder *r) {
    cJSON *ids = cJSON_CreateArray();
    for (int64_t i = 0; ids && i < r->n_req; i++) {
        char digits[24];
        const char *name = r->req_names[i];
        if (!name) {
            snprintf(digits, sizeof digits, "%lld", (long long)r->req_ids[i]);
            name = digits;
        }
        cJSON *v = cJSON_CreateString(name);
        if (!v || !cJSON_AddItemToArray(ids, v)) {
            cJSON_Delete(v);
            cJSON_Delete(ids);
            return NULL;
        }
    }
    return ids;
}

/* The per_token index's "request_domains" (caller holds mu): each request's group by name (null
 * for none, or a group the label function does not name); NULL when no request has a group or no
 * label function is set (nothing to add), or out of memory (*oom). */
static cJSON *request_domains_json(const mt_recorder *r, bool *oom) {
    *oom = false;
    bool any = false;
    for (int64_t i = 0; i < r->n_req && !any; i++) any = r->req_groups[i] > 0;
    if (!any || !r->group_label) return NULL;
    cJSON *list = cJSON_CreateArray();
    for (int64_t i = 0; list && i < r->n_req; i++) {
        char label[256];
        int32_t g = r->req_groups[i];
        cJSON *v = g > 0 && r->group_label(r->group_label_ctx, g, label, sizeof label) ? cJSON_CreateString(label)
                                                                                       : cJSON_CreateNull();
        if (!v || !cJSON_AddItemToArray(list, v)) {
            cJSON_Delete(v);
            cJSON_Delete(list);
            list = NULL;
        }
    }
    *oom = !list;
    return list;
}

/* dir/expert_distribution_<ms>[_k] into base: 0, or -1 when the path does not fit. */
static int base_name(const char *dir, long long ms, int k, char *base, size_t n, mt_err *err) {
    size_t len = strlen(dir);
    const char *sep = len && dir[len - 1] == '/' ? "" : "/"; /* "dumps/" is "dumps" */
    int w = k ? snprintf(base, n, "%s%sexpert_distribution_%lld_%d", dir, sep, ms, k)
              : snprintf(base, n, "%s%sexpert_distribution_%lld", dir, sep, ms);
    if (w < 0 || (size_t)w + 16 >= n) return mt_errf(err, "recorder dump: dump dir path too long: %s", dir);
    return 0;
}

/* Whether base.json or base.safetensors exists. */
static bool base_taken(const char *base) {
    char a[4096];
    struct stat st;
    snprintf(a, sizeof a, "%s.json", base);
    if (stat(a, &st) == 0) return true;
    snprintf(a, sizeof a, "%s.safetensors", base);
    return stat(a, &st) == 0;
}

/* The files of one dump under base (caller holds mu; o is the dump object, its per_token "tensors"
 * set here): per_token's .safetensors first, then the .json, neither replacing a file. 0, 1 when
 * a name was taken meanwhile (by another process: nothing of this dump is left), -1. */
static int write_dump_files(mt_recorder *r, cJSON *o, const char *base, char *json_path, size_t json_len,
                            mt_err *err) {
    char st_path[4096];
    snprintf(json_path, json_len, "%s.json", base);
    snprintf(st_path, sizeof st_path, "%s.safetensors", base);
    if (r->mode == MT_REC_PER_TOKEN) {
        const char *st_name = strrchr(st_path, '/') + 1, *js_name = strrchr(json_path, '/') + 1;
        cJSON *name = cJSON_CreateString(st_name);
        bool ok = name && (cJSON_GetObjectItemCaseSensitive(o, "tensors")
                               ? cJSON_ReplaceItemInObjectCaseSensitive(o, "tensors", name)
                               : cJSON_AddItemToObject(o, "tensors", name));
        if (!ok) {
            cJSON_Delete(name);
            return mt_errf(err, "recorder dump: out of memory");
        }
        int rc = write_token_tensors(r, st_path, js_name, err);
        if (rc) return rc;
    }
    char *text = cJSON_PrintUnformatted(o);
    int rc = text ? mt_atomic_write_new(json_path, text, strlen(text), err) : mt_errf(err, "recorder dump: out of memory");
    free(text);
    /* no tensors without their index */
    if (rc && r->mode == MT_REC_PER_TOKEN) unlink(st_path);
    return rc;
}

/* The dump of r's data, written and then reset (r is private to the caller: a taken window). */
static int dump_taken(mt_recorder *r, char *path_out, size_t path_len, mt_err *err) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    char base[4000], json_path[4096];
    pthread_mutex_lock(&r->mu);
    cJSON *o = mt_rec_build_json_locked(r, err);
    int rc = o ? 0 : -1;
    if (rc == 0 && r->mode == MT_REC_PER_TOKEN) {
        cJSON *ids = request_ids_json(r);
        bool oom;
        cJSON *domains = request_domains_json(r, &oom);
        if (!ids || oom || !cJSON_AddItemToObject(o, "request_ids", ids) ||
            (domains && !cJSON_AddItemToObject(o, "request_domains", domains)))
            rc = mt_errf(err, "recorder dump: out of memory");
    }
    /* The first free name; a name another writer takes between the check and the commit is
     * skipped too (the commits never replace a file). */
    for (int k = 0, tries = 0; rc == 0; k++) {
        if (k == 1000 || tries == 100) {
            rc = mt_errf(err, "recorder dump: no free file name in %s", r->dump_dir);
            break;
        }
        if ((rc = base_name(r->dump_dir, ms, k, base, sizeof base, err))) break;
        if (base_taken(base)) continue;
        tries++;
        rc = write_dump_files(r, o, base, json_path, sizeof json_path, err);
        if (rc != 1) break;
        rc = 0;
    }
    if (rc == 0) mt_rec_reset_locked(r);
    pthread_mutex_unlock(&r->mu);
    cJSON_Delete(o);
    if (rc == 0 && path_out && path_len) snprintf(path_out, path_len, "%s", json_path);
    return rc;
}

/* Whether r's dump dir is an existing folder (err says otherwise). */
static int dump_dir_ok(const mt_recorder *r, mt_err *err) {
    struct stat st;
    if (stat(r->dump_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return mt_errf(err, "recorder dump: dump dir '%s' is not an existing folder", r->dump_dir);
    return 0;
}

int mt_recorder_dump_window(mt_recorder *r, mt_recorder *taken, char *path_out, size_t path_len, mt_err *err) {
    int rc = dump_dir_ok(taken, err) ? -1 : dump_taken(taken, path_out, path_len, err);
    if (rc) mt_recorder_put_back(r, taken); /* nothing lost: the next dump writes it */
    else mt_recorder_free(taken);
    return rc;
}

int mt_recorder_dump(mt_recorder *r, char *path_out, size_t path_len, mt_err *err) {
    if (dump_dir_ok(r, err)) return -1;
    if (r->taken) return dump_taken(r, path_out, path_len, err);
    /* The window is taken out under the lock (in time of the shape, not of the data) and written from
     * there: the engine thread's next pass commits into the emptied recorder instead of waiting for
     * the JSON, the tensors and their fsyncs. */
    pthread_mutex_lock(&r->dump_mu); /* a second dump puts back (or takes) only after this one */
    mt_recorder *t = mt_recorder_take(r, err);
    int rc = t ? mt_recorder_dump_window(r, t, path_out, path_len, err) : -1;
    pthread_mutex_unlock(&r->dump_mu);
    return rc;
}
