/* One request's routing out of a per_token dump: reading, labels and JSON (request_trace.h); the
 * picture is request_trace_draw.c. */
#include "report/request_trace.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "model/safetensors.h"
#include "routing/stat_dump.h"
#include "tokenizer/tokenizer.h"
#include "util/atomic_write.h"
#include "util/json_util.h"
#include "util/strbuf.h"

void mt_request_trace_free(mt_request_trace *t) {
    if (!t) return;
    free(t->model);
    free(t->request_id);
    free(t->domain);
    free(t->moe_layers);
    free(t->layer_is_moe);
    free(t->position);
    free(t->token_id);
    free(t->experts);
    free(t->gap_first);
    free(t->gap_last);
    if (t->text)
        for (int64_t i = 0; i < t->n; i++) free(t->text[i]);
    free(t->text);
    memset(t, 0, sizeof *t);
}

/* ---- reading ---- */

/* The index's mode must be per_token (the other dumps hold counts only). */
static int check_per_token(const cJSON *index, const char *path, const char *what, mt_err *err) {
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(index, "mode");
    const char *m = cJSON_IsString(mode) ? mode->valuestring : "stat";
    if (!strcmp(m, "per_token")) return 0;
    return mt_errf(err, "%s: %s needs a per_token dump, and this is a \"%s\" dump (counts only): record one "
                   "with serve --expert-distribution-recorder-mode per_token or profile --per-token", path, what, m);
}

/* The error for an id no request has: up to 10 of the ids present and how many there are. */
static int unknown_request(const cJSON *ids, const char *path, const char *rid, mt_err *err) {
    int n = cJSON_GetArraySize(ids);
    if (n == 0) return mt_errf(err, "%s: no request \"%s\": the dump records no request", path, rid);
    char list[700] = "";
    size_t len = 0;
    for (int i = 0; i < n && i < 10; i++) {
        const char *s = cJSON_GetArrayItem(ids, i)->valuestring;
        int w = snprintf(list + len, sizeof list - len, "%s\"%.50s\"", i ? ", " : "", s);
        if (w < 0 || (size_t)w >= sizeof list - len) break;
        len += (size_t)w;
    }
    return mt_errf(err, "%s: no request \"%s\" among its %d request%s: %s%s", path, rid, n, n == 1 ? "" : "s", list,
                   n > 10 ? ", ..." : "");
}

/* request_ids: an array of strings; the first entry equal to rid into t (with how many are). */
static int find_request(const cJSON *index, const char *path, const char *rid, mt_request_trace *t, mt_err *err) {
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(index, "request_ids");
    if (!cJSON_IsArray(ids))
        return mt_errf(err, "%s: missing array \"request_ids\" (a per_token index names its requests)", path);
    int i = 0;
    const cJSON *v;
    t->request_index = -1;
    cJSON_ArrayForEach(v, ids) {
        if (!cJSON_IsString(v)) return mt_errf(err, "%s: request_ids[%d] is not a string", path, i);
        if (!strcmp(v->valuestring, rid)) {
            if (t->request_index < 0) t->request_index = i;
            t->same_id++;
        }
        i++;
    }
    if (t->request_index < 0) return unknown_request(ids, path, rid, err);
    const cJSON *domains = cJSON_GetObjectItemCaseSensitive(index, "request_domains");
    if (domains && !cJSON_IsNull(domains)) {
        if (!cJSON_IsArray(domains) || cJSON_GetArraySize(domains) != i)
            return mt_errf(err, "%s: request_domains must be an array as long as request_ids (%d)", path, i);
        const cJSON *d = cJSON_GetArrayItem(domains, (int)t->request_index);
        if (cJSON_IsString(d) && !(t->domain = strdup(d->valuestring))) return mt_errf(err, "out of memory");
        if (!cJSON_IsString(d) && !cJSON_IsNull(d))
            return mt_errf(err, "%s: request_domains[%lld] is neither a string nor null", path, (long long)t->request_index);
    }
    return 0;
}

/* The safetensors file the index names ("tensors"), beside the index when relative, into out. */
static int tensors_path(const cJSON *index, const char *path, char *out, size_t size, mt_err *err) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(index, "tensors");
    if (!cJSON_IsString(name) || !name->valuestring[0])
        return mt_errf(err, "%s: missing string field \"tensors\" (the name of the dump's .safetensors file)", path);
    const char *slash = strrchr(path, '/');
    const char *file = name->valuestring;
    int w = file[0] == '/' || !slash ? snprintf(out, size, "%s", file)
                                     : snprintf(out, size, "%.*s/%s", (int)(slash - path), path, file);
    if (w < 0 || (size_t)w >= size) return mt_errf(err, "%s: the tensors' path is too long", path);
    struct stat st;
    if (stat(out, &st) != 0)
        return mt_errf(err, "%s: its tensors file %s cannot be read: %s (the .safetensors is written beside its index)",
                       path, out, strerror(errno));
    return 0;
}

/* Tensor name of ck with dtype and shape [dims...] (-1: any length, the first dimension then
 * giving *rows when *rows is -1, else having to equal it). */
static const mt_tensor_info *tensor(const mt_checkpoint *ck, const char *file, const char *name, const char *dtype,
                                    int ndim, const int64_t *dims, int64_t *rows, mt_err *err) {
    const mt_tensor_info *ti = mt_checkpoint_find(ck, name);
    if (!ti) {
        mt_errf(err, "%s: no tensor \"%s\" (a per_token dump has request_index, topk_ids, position, token_id)", file, name);
        return NULL;
    }
    bool ok = !strcmp(ti->dtype_name, dtype) && ti->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = d == 0 ? (*rows < 0 || ti->shape[0] == *rows) : ti->shape[d] == dims[d];
    if (!ok) {
        mt_errf(err, "%s: tensor \"%s\" must be %s of shape %s, T the rows of request_index (the index has %lld layers, "
                "top_k %lld); it is %s with %d dims", file, name, dtype, ndim == 3 ? "[T, num_hidden_layers, top_k]" : "[T]",
                (long long)dims[1], (long long)dims[2], ti->dtype_name, ti->ndim);
        return NULL;
    }
    if (*rows < 0) *rows = ti->shape[0];
    return ti;
}

static int32_t read_i32(const mt_tensor_info *ti, int64_t i) {
    int32_t v;
    memcpy(&v, (const char *)ti->data + i * 4, 4);
    return v;
}

static int64_t read_i64(const mt_tensor_info *ti, int64_t i) {
    int64_t v;
    memcpy(&v, (const char *)ti->data + i * 8, 8);
    return v;
}

/* Positions beyond any model's context: a file holding one is refused rather than listing billions
 * of missing positions. */
#define MAX_POSITION (1 << 26)

/* A row of the request: its position and its row in the file, sorted by position then row. */
typedef struct row_ref {
    int32_t position;
    int64_t row;
} row_ref;

static int cmp_row(const void *a, const void *b) {
    const row_ref *x = a, *y = b;
    if (x->position != y->position) return x->position < y->position ? -1 : 1;
    return (x->row > y->row) - (x->row < y->row);
}

/* The runs of positions in [0, last] without a row (rows ascending, distinct). */
static int find_gaps(mt_request_trace *t, mt_err *err) {
    t->gap_first = malloc(sizeof(int32_t) * (size_t)(t->n + 1));
    t->gap_last = malloc(sizeof(int32_t) * (size_t)(t->n + 1));
    if (!t->gap_first || !t->gap_last) return mt_errf(err, "out of memory");
    int64_t expect = 0;
    for (int64_t i = 0; i < t->n; i++) {
        if (t->position[i] > expect) {
            t->gap_first[t->n_gaps] = (int32_t)expect;
            t->gap_last[t->n_gaps++] = t->position[i] - 1;
        }
        expect = (int64_t)t->position[i] + 1;
    }
    return 0;
}

/* Copies the request's rows out of the dump (checked by mt_per_token_open), in position order, one
 * per position. */
static int copy_rows(mt_request_trace *t, const mt_per_token_dump *d, mt_err *err) {
    int L = t->num_hidden_layers, K = t->top_k;
    int64_t T = d->rows;
    const mt_tensor_info *req = d->request_index, *ids = d->topk_ids, *pos = d->position, *tok = d->token_id;
    const char *file = req->file;
    row_ref *rows = malloc(sizeof *rows * (size_t)(T ? T : 1));
    if (!rows) return mt_errf(err, "out of memory");
    int64_t n = 0;
    for (int64_t r = 0; r < T; r++) {
        if (read_i64(req, r) != t->request_index) continue;
        int32_t p = read_i32(pos, r);
        if (p < 0 || p >= MAX_POSITION) {
            free(rows);
            return mt_errf(err, "%s: position[%lld] = %d is not a position in a context (0 .. %d)", file, (long long)r, p,
                           MAX_POSITION - 1);
        }
        rows[n++] = (row_ref){p, r};
    }
    qsort(rows, (size_t)n, sizeof *rows, cmp_row);
    size_t row_ids = (size_t)L * (size_t)K;
    t->position = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    t->token_id = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    t->experts = malloc(sizeof(int32_t) * row_ids * (size_t)(n ? n : 1));
    if (!t->position || !t->token_id || !t->experts) {
        free(rows);
        return mt_errf(err, "out of memory");
    }
    for (int64_t i = 0; i < n; i++) {
        if (t->n && t->position[t->n - 1] == rows[i].position) continue; /* one row per position: the first */
        t->position[t->n] = rows[i].position;
        t->token_id[t->n] = read_i32(tok, rows[i].row);
        memcpy(t->experts + (size_t)t->n * row_ids, (const char *)ids->data + (size_t)rows[i].row * row_ids * 4,
               row_ids * 4);
        t->n++;
    }
    free(rows);
    return find_gaps(t, err);
}

/* An integer field of the index in [lo, hi] into *out; dflt when absent (-1 when absent is an
 * error). */
static int index_int(const cJSON *index, const char *path, const char *key, double lo, double hi, int64_t dflt,
                     int64_t *out, mt_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(index, key);
    if (!v && dflt >= 0) {
        *out = dflt;
        return 0;
    }
    if (!v) return mt_errf(err, "%s: missing field \"%s\" (a per_token index has it)", path, key);
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(x >= lo && x <= hi) || x != floor(x))
        return mt_errf(err, "%s: field \"%s\" must be an integer in [%.0f, %.0f]", path, key, lo, hi);
    *out = (int64_t)x;
    return 0;
}

/* top_k (1 .. num_experts: the width of topk_ids) and dropped_tokens (0 when absent). */
static int read_counts(const cJSON *index, const char *path, mt_per_token_dump *t, mt_err *err) {
    int64_t top_k, dropped;
    if (index_int(index, path, "top_k", 1, t->num_experts, -1, &top_k, err) ||
        index_int(index, path, "dropped_tokens", 0, 9007199254740992.0, 0, &dropped, err))
        return -1;
    t->top_k = (int)top_k;
    t->dropped_tokens = dropped;
    return 0;
}

/* Shape and names from the index (a dump: mt_stat_dump_from_json checks its counts' shape). */
static int read_shape(const cJSON *index, const char *path, mt_per_token_dump *t, mt_err *err) {
    mt_stat_dump d;
    memset(&d, 0, sizeof d);
    if (mt_stat_dump_from_json(index, path, &d, err)) {
        mt_stat_dump_free(&d);
        return -1;
    }
    t->num_hidden_layers = d.num_hidden_layers;
    t->num_experts = d.num_experts;
    t->num_moe_layers = d.num_moe_layers;
    t->model = strdup(d.model ? d.model : "");
    t->moe_layers = malloc(sizeof(int) * (size_t)(d.num_moe_layers ? d.num_moe_layers : 1));
    t->layer_is_moe = calloc((size_t)d.num_hidden_layers, sizeof(bool));
    int rc = 0;
    if (!t->model || !t->moe_layers || !t->layer_is_moe) rc = mt_errf(err, "out of memory");
    for (int m = 0; rc == 0 && m < d.num_moe_layers; m++) {
        t->moe_layers[m] = d.moe_layers[m];
        t->layer_is_moe[d.moe_layers[m]] = true;
    }
    mt_stat_dump_free(&d);
    if (rc == 0) rc = read_counts(index, path, t, err);
    return rc;
}

/* The tensors, each of its dtype and shape, all of the same T rows. */
static int check_tensors(mt_per_token_dump *d, const char *file, mt_err *err) {
    int64_t shape3[3] = {0, d->num_hidden_layers, d->top_k};
    d->rows = -1;
    d->request_index = tensor(d->ck, file, "request_index", "I64", 1, shape3, &d->rows, err);
    d->topk_ids = d->request_index ? tensor(d->ck, file, "topk_ids", "I32", 3, shape3, &d->rows, err) : NULL;
    d->position = d->topk_ids ? tensor(d->ck, file, "position", "I32", 1, shape3, &d->rows, err) : NULL;
    d->token_id = d->position ? tensor(d->ck, file, "token_id", "I32", 1, shape3, &d->rows, err) : NULL;
    return d->token_id ? 0 : -1;
}

/* The rows agree with the index (file: the tensors' file): every request_index is an index of
 * request_ids, and every id of topk_ids is an expert of the index's num_experts or -1. */
static int check_row_values(const mt_per_token_dump *d, const char *index_path, const char *file, int64_t n_requests,
                            mt_err *err) {
    for (int64_t r = 0; r < d->rows; r++) {
        int64_t ri = read_i64(d->request_index, r);
        if (ri < 0 || ri >= n_requests)
            return mt_errf(err, "%s: request_index[%lld] = %lld is not an index of the %lld request_ids of %s", file,
                           (long long)r, (long long)ri, (long long)n_requests, index_path);
    }
    int64_t per_row = (int64_t)d->num_hidden_layers * d->top_k;
    for (int64_t i = 0; i < d->rows * per_row; i++) {
        int32_t id = read_i32(d->topk_ids, i);
        if (id < -1 || id >= d->num_experts)
            return mt_errf(err, "%s: topk_ids[%lld][%lld][%lld] = %d is not an expert id of %s (0 .. %d, or -1 for none: "
                           "the recorder stores ids out of range as -1)", file, (long long)(i / per_row),
                           (long long)(i % per_row / d->top_k), (long long)(i % d->top_k), id, index_path,
                           d->num_experts - 1);
    }
    return 0;
}

/* The index against the tensors (file), once for every reader: request_ids is an array, T rows is
 * its num_tokens_recorded (where the index states it), and check_row_values. */
static int check_rows(const mt_per_token_dump *d, const char *index_path, const char *file, mt_err *err) {
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(d->index, "request_ids");
    if (!cJSON_IsArray(ids))
        return mt_errf(err, "%s: missing array \"request_ids\" (a per_token index names its requests)", index_path);
    if (cJSON_GetObjectItemCaseSensitive(d->index, "num_tokens_recorded")) {
        int64_t recorded;
        if (index_int(d->index, index_path, "num_tokens_recorded", 0, 9007199254740992.0, 0, &recorded, err))
            return -1;
        if (recorded != d->rows)
            return mt_errf(err, "%s: num_tokens_recorded is %lld, but the tensors of %s hold %lld rows", index_path,
                           (long long)recorded, file, (long long)d->rows);
    }
    return check_row_values(d, index_path, file, cJSON_GetArraySize(ids), err);
}

int mt_per_token_open(const char *index_path, const char *what, mt_per_token_dump *d, mt_err *err) {
    memset(d, 0, sizeof *d);
    if (!(d->index = mt_json_load_file(index_path, err))) return -1;
    char st_path[4096];
    int rc = -1;
    if (read_shape(d->index, index_path, d, err) || check_per_token(d->index, index_path, what, err) ||
        tensors_path(d->index, index_path, st_path, sizeof st_path, err))
        goto out;
    if (mt_checkpoint_open(&d->ck, st_path, err)) {
        char inner[MT_ERR_LEN];
        snprintf(inner, sizeof inner, "%s", err->msg);
        mt_errf(err, "%s: its tensors file: %s", index_path, inner);
        goto out;
    }
    rc = check_tensors(d, st_path, err) || check_rows(d, index_path, st_path, err) ? -1 : 0;
out:
    if (rc) mt_per_token_close(d);
    return rc;
}

void mt_per_token_close(mt_per_token_dump *d) {
    if (!d) return;
    free(d->model);
    free(d->moe_layers);
    free(d->layer_is_moe);
    mt_checkpoint_close(d->ck);
    cJSON_Delete(d->index);
    memset(d, 0, sizeof *d);
}

void mt_per_token_experts(const mt_per_token_dump *d, int64_t r, int l, int32_t *ids) {
    size_t k = (size_t)d->top_k, at = ((size_t)r * (size_t)d->num_hidden_layers + (size_t)l) * k;
    memcpy(ids, (const char *)d->topk_ids->data + at * 4, k * 4);
}

int32_t mt_per_token_token_id(const mt_per_token_dump *d, int64_t r) { return read_i32(d->token_id, r); }

int mt_request_trace_load(const char *index_path, const char *request_id, mt_request_trace *t, mt_err *err) {
    memset(t, 0, sizeof *t);
    mt_per_token_dump d;
    if (mt_per_token_open(index_path, "--request", &d, err)) return -1;
    int rc = -1;
    /* the dump's shape, handed over */
    t->model = d.model;
    t->moe_layers = d.moe_layers;
    t->layer_is_moe = d.layer_is_moe;
    d.model = NULL;
    d.moe_layers = NULL;
    d.layer_is_moe = NULL;
    t->num_hidden_layers = d.num_hidden_layers;
    t->num_experts = d.num_experts;
    t->top_k = d.top_k;
    t->num_moe_layers = d.num_moe_layers;
    t->dropped_tokens = d.dropped_tokens;
    if (!(t->request_id = strdup(request_id))) mt_errf(err, "out of memory");
    else if (find_request(d.index, index_path, request_id, t, err) == 0)
        rc = copy_rows(t, &d, err);
    mt_per_token_close(&d);
    if (rc) mt_request_trace_free(t);
    return rc;
}

int64_t mt_request_trace_missing_count(const mt_request_trace *t) {
    int64_t n = 0;
    for (int64_t g = 0; g < t->n_gaps; g++) n += (int64_t)t->gap_last[g] - t->gap_first[g] + 1;
    return n;
}

/* ---- token text ---- */

int mt_request_trace_decode_ids(const char *tokenizer_path, const int32_t *ids, int64_t n, char **texts,
                                int64_t *bad, mt_err *err) {
    *bad = -1;
    mt_tokenizer *tok;
    if (mt_tokenizer_load(&tok, tokenizer_path, err)) return -1;
    size_t vocab = mt_tokenizer_vocab_size(tok);
    int rc = 0;
    int64_t i = 0;
    for (; i < n; i++) {
        int32_t id = ids[i];
        size_t len;
        if (id < 0 || (size_t)id >= vocab || !mt_tokenizer_id_to_token(tok, id)) {
            *bad = i;
            rc = mt_errf(err, "%s: token id %d is no token of its vocabulary (%zu ids): is it the dump's model?",
                         tokenizer_path, id, vocab);
            break;
        }
        if ((rc = mt_tokenizer_decode(tok, &id, 1, 0, &texts[i], &len, err))) break;
    }
    mt_tokenizer_free(tok);
    for (int64_t k = 0; rc && k < i; k++) {
        free(texts[k]);
        texts[k] = NULL;
    }
    return rc;
}

int mt_request_trace_decode(mt_request_trace *t, const char *tokenizer_path, mt_err *err) {
    char **text = calloc((size_t)(t->n ? t->n : 1), sizeof *text);
    if (!text) return mt_errf(err, "out of memory");
    int64_t bad;
    if (mt_request_trace_decode_ids(tokenizer_path, t->token_id, t->n, text, &bad, err)) {
        free(text);
        if (bad >= 0) {
            char inner[MT_ERR_LEN];
            snprintf(inner, sizeof inner, "%s", err->msg);
            mt_errf(err, "position %d of request \"%s\": %s", t->position[bad], t->request_id, inner);
        }
        return -1;
    }
    t->text = text;
    return 0;
}

const char *mt_request_trace_visible(const char *s, char *out, size_t out_size) {
    size_t len = 0;
    if (!*s) s = "\xe2\x88\x85"; /* ∅ */
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char pic[4] = {(char)c, 0, 0, 0};
        if (c == ' ') memcpy(pic, "\xe2\x90\xa3", 4);       /* ␣ */
        else if (c == '\n') memcpy(pic, "\xe2\x86\xb5", 4); /* ↵ */
        else if (c == '\t') memcpy(pic, "\xe2\x87\xa5", 4); /* ⇥ */
        else if (c == 0x7f) memcpy(pic, "\xe2\x90\xa1", 4); /* ␡ */
        else if (c < 0x20) memcpy(pic, (char[4]){(char)0xe2, (char)0x90, (char)(0x80 + c), 0}, 4); /* U+2400 + c */
        size_t k = strlen(pic);
        if (len + k + 1 > out_size) break;
        memcpy(out + len, pic, k);
        len += k;
    }
    /* cut: no partial character at the end */
    size_t lead = len;
    while (lead > 0 && ((unsigned char)out[lead - 1] & 0xC0) == 0x80) lead--;
    if (lead > 0 && (unsigned char)out[lead - 1] >= 0xC0) {
        unsigned char c = (unsigned char)out[lead - 1];
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (len - (lead - 1) < need) len = lead - 1;
    }
    if (out_size) out[len] = '\0';
    return out;
}

/* ---- JSON ---- */

static void json_string(mt_strbuf *b, const char *s, size_t n) {
    cJSON *v = mt_json_text(s, n);
    char *text = v ? mt_json_print(v) : NULL;
    if (!text) {
        cJSON_Delete(v);
        abort(); /* as mt_strbuf does when memory runs out */
    }
    mt_strbuf_puts(b, text);
    free(text);
    cJSON_Delete(v);
}

static void json_header(mt_strbuf *b, const mt_request_trace *t) {
    mt_strbuf_printf(b, "{\"format\": \"%s\",\n \"model\": ", MT_REQUEST_TRACE_FORMAT);
    json_string(b, t->model, strlen(t->model));
    mt_strbuf_puts(b, ", \"request_id\": ");
    json_string(b, t->request_id, strlen(t->request_id));
    mt_strbuf_puts(b, ", \"domain\": ");
    if (t->domain) json_string(b, t->domain, strlen(t->domain));
    else mt_strbuf_puts(b, "null");
    mt_strbuf_printf(b, ",\n \"num_hidden_layers\": %d, \"moe_layers\": [", t->num_hidden_layers);
    for (int m = 0; m < t->num_moe_layers; m++) mt_strbuf_printf(b, "%s%d", m ? ", " : "", t->moe_layers[m]);
    mt_strbuf_printf(b, "], \"num_experts\": %d, \"top_k\": %d, \"num_tokens\": %lld,\n \"missing_positions\": [",
                     t->num_experts, t->top_k, (long long)t->n);
    bool first = true;
    for (int64_t g = 0; g < t->n_gaps; g++)
        for (int64_t p = t->gap_first[g]; p <= t->gap_last[g]; p++, first = false)
            mt_strbuf_printf(b, "%s%lld", first ? "" : ", ", (long long)p);
    mt_strbuf_puts(b, "],\n \"tokens\": [");
}

static void json_token(mt_strbuf *b, const mt_request_trace *t, int64_t i) {
    int L = t->num_hidden_layers, K = t->top_k;
    mt_strbuf_printf(b, "%s\n  {\"position\": %d, \"token_id\": %d", i ? "," : "", t->position[i], t->token_id[i]);
    if (t->text) {
        mt_strbuf_puts(b, ", \"text\": ");
        json_string(b, t->text[i], strlen(t->text[i]));
    }
    mt_strbuf_puts(b, ", \"experts\": [");
    const int32_t *row = t->experts + (size_t)i * (size_t)L * (size_t)K;
    for (int l = 0; l < L; l++) {
        mt_strbuf_puts(b, l ? ", [" : "[");
        for (int k = 0; k < K; k++) mt_strbuf_printf(b, "%s%d", k ? ", " : "", row[l * K + k]);
        mt_strbuf_puts(b, "]");
    }
    mt_strbuf_puts(b, "]}");
}

int mt_request_trace_write_json(const mt_request_trace *t, const char *out_path, mt_err *err) {
    mt_strbuf b = {0};
    json_header(&b, t);
    for (int64_t i = 0; i < t->n; i++) json_token(&b, t, i);
    mt_strbuf_puts(&b, t->n ? "\n ]}\n" : "]}\n");
    int rc = mt_atomic_write(out_path, b.data, b.len, err);
    mt_strbuf_free(&b);
    return rc;
}

int mt_request_trace_write(const mt_request_trace *t, const char *out_path, mt_err *err) {
    size_t n = strlen(out_path);
    if (n > 5 && !strcasecmp(out_path + n - 5, ".json")) return mt_request_trace_write_json(t, out_path, err);
    return mt_request_trace_render(t, out_path, err);
}
