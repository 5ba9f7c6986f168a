/* JSONL datasets of `moetrace profile` (see dataset.h). */
#include "cli/dataset.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "util/json_util.h"
#include "report/domain_usage.h"

void mt_dataset_free(mt_dataset *d) {
    for (int i = 0; i < d->n; i++) {
        free(d->ids[i]);
        free(d->names[i]);
        free(d->domains[i]);
    }
    free(d->ids);
    free(d->len);
    free(d->names);
    free(d->domains);
    free(d->lines);
    memset(d, 0, sizeof *d);
}

static int parse_ids(const cJSON *input, int32_t **ids, int *n, mt_err *err) {
    if (!cJSON_IsArray(input) || cJSON_GetArraySize(input) == 0) return mt_errf(err, "'input_ids' must be a non-empty list");
    int count = cJSON_GetArraySize(input), i = 0;
    int32_t *v = malloc((size_t)count * sizeof *v);
    if (!v) return mt_errf(err, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, input) {
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || it->valuedouble < 0 ||
            it->valuedouble > 2147483647.0) {
            free(v);
            return mt_errf(err, "'input_ids' entry %d is not a non-negative integer", i);
        }
        v[i++] = (int32_t)it->valuedouble;
    }
    *ids = v;
    *n = count;
    return 0;
}

/* A prompt or messages (rendered with the chat template) through the tokenizer. kept_nul: the line
 * was parsed keeping each escaped U+0000 as C0 80 (only the prompt or messages may hold one). */
static int encode_text(mt_text_tools *t, const cJSON *line, bool kept_nul, int32_t **ids, int *n, mt_err *err) {
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(line, "prompt");
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(line, "messages");
    if (!prompt && !messages) return mt_errf(err, "expected one of 'prompt', 'messages' or 'input_ids'");
    if (!t->tok && mt_tokenizer_load(&t->tok, t->model_dir, err)) return -1;
    char *rendered = NULL;
    const char *text;
    size_t len;
    if (messages) {
        if (!cJSON_IsArray(messages)) return mt_errf(err, "'messages' must be a list");
        if (!t->tpl && mt_chat_template_load(&t->tpl, t->model_dir, err)) return -1;
        if (mt_chat_render_bytes(t->tpl, messages, cJSON_GetObjectItemCaseSensitive(line, "tools"), 1, NULL, kept_nul,
                                 &rendered, &len, err))
            return -1;
        text = rendered;
    } else {
        if (!cJSON_IsString(prompt)) return mt_errf(err, "'prompt' must be a string");
        text = prompt->valuestring;
        len = strlen(text);
        if (kept_nul && mt_json_holds_nul(text)) {
            if (!(rendered = mt_json_bytes(text, &len))) return mt_errf(err, "out of memory");
            text = rendered;
        }
    }
    size_t count = 0;
    int32_t *v = NULL;
    int rc = mt_tokenizer_encode(t->tok, text, len, !messages, &v, &count, err);
    free(rendered);
    if (rc) return -1;
    if (count == 0 || count > 1u << 30) {
        free(v);
        return mt_errf(err, count ? "the prompt is too long" : "the prompt encodes to no tokens");
    }
    *ids = v;
    *n = (int)count;
    return 0;
}

/* Field key's value as a label (mt_json_label) into *out, or NULL when the record has no such field. */
static int parse_label(const cJSON *line, const char *key, size_t max_len, char **out, mt_err *err) {
    return mt_json_label(line, key, max_len, out, err) < 0 ? -1 : 0;
}

/* The record's own name for its request: "rid", else "id". */
static int parse_name(const cJSON *line, char **name, mt_err *err) {
    const char *key = cJSON_GetObjectItemCaseSensitive(line, "rid") ? "rid" : "id";
    return parse_label(line, key, SIZE_MAX, name, err);
}

#define DOMAIN_MAX_BYTES MT_DOMAIN_LABEL_MAX

/* An error when a string of the record other than its prompt ("messages" when it has them, else
 * "prompt") holds U+0000: names, labels and tools are C strings, which would end at the NUL. */
static int nul_outside_prompt(const cJSON *line, mt_err *err) {
    const char *key = cJSON_GetObjectItemCaseSensitive(line, "messages") ? "messages" : "prompt";
    char where[16];
    snprintf(where, sizeof where, "'%s'", key);
    return mt_json_nul_only_in(line, key, NULL, where, err);
}

int mt_dataset_line(mt_text_tools *t, const char *line, size_t len, const char *domain_field, mt_dataset_record *r,
                    mt_err *err) {
    memset(r, 0, sizeof *r);
    bool kept_nul = false;
    cJSON *obj = mt_json_parse_text_keep_nul(line, len, NULL, &kept_nul, err);
    int rc;
    if (!obj) rc = -1;
    else if (!cJSON_IsObject(obj)) rc = mt_errf(err, "not a JSON object");
    else if (kept_nul && nul_outside_prompt(obj, err)) rc = -1;
    else if (parse_name(obj, &r->name, err)) rc = -1;
    else if (domain_field && parse_label(obj, domain_field, DOMAIN_MAX_BYTES, &r->domain, err)) rc = -1;
    else if (cJSON_GetObjectItemCaseSensitive(obj, "input_ids"))
        rc = parse_ids(cJSON_GetObjectItemCaseSensitive(obj, "input_ids"), &r->ids, &r->n, err);
    else rc = encode_text(t, obj, kept_nul, &r->ids, &r->n, err);
    cJSON_Delete(obj);
    if (rc) {
        free(r->name);
        free(r->domain);
        memset(r, 0, sizeof *r);
    }
    return rc;
}

/* Appends a request (the record's memory taken over on success). */
static int push(mt_dataset *d, int *cap, const mt_dataset_record *r, int lineno) {
    if (d->n == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        int32_t **ni = realloc(d->ids, (size_t)nc * sizeof *ni);
        if (ni) d->ids = ni;
        int *nl = realloc(d->len, (size_t)nc * sizeof *nl);
        if (nl) d->len = nl;
        char **nn = realloc(d->names, (size_t)nc * sizeof *nn);
        if (nn) d->names = nn;
        char **nd = realloc(d->domains, (size_t)nc * sizeof *nd);
        if (nd) d->domains = nd;
        int *nline = realloc(d->lines, (size_t)nc * sizeof *nline);
        if (nline) d->lines = nline;
        if (!ni || !nl || !nn || !nd || !nline) return -1;
        *cap = nc;
    }
    d->ids[d->n] = r->ids;
    d->names[d->n] = r->name;
    d->domains[d->n] = r->domain;
    d->lines[d->n] = lineno;
    d->len[d->n++] = r->n;
    return 0;
}

/* "<lineno>" (malloc'd), the name of a request whose record has none. */
static char *line_name(int lineno) {
    char digits[16];
    snprintf(digits, sizeof digits, "%d", lineno);
    return strdup(digits);
}

int mt_dataset_load(const char *path, mt_text_tools *t, const char *domain_field, mt_dataset *d, mt_err *err) {
    memset(d, 0, sizeof *d);
    FILE *f = fopen(path, "r");
    if (!f) return mt_errf(err, "--data %s: cannot open", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, cap_n = 0, rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t at = 0;
        while (at < (size_t)len && (line[at] == ' ' || line[at] == '\t' || line[at] == '\r' || line[at] == '\n')) at++;
        if (at == (size_t)len) continue;
        mt_dataset_record r;
        mt_err e = {{0}};
        if (mt_dataset_line(t, line + at, (size_t)len - at, domain_field, &r, &e)) {
            rc = mt_errf(err, "%s line %d: %s", path, lineno, e.msg);
        } else if ((!r.name && !(r.name = line_name(lineno))) || push(d, &cap_n, &r, lineno)) {
            free(r.ids);
            free(r.name);
            free(r.domain);
            rc = mt_errf(err, "%s line %d: out of memory", path, lineno);
        }
    }
    free(line);
    fclose(f);
    if (rc == 0 && d->n == 0) rc = mt_errf(err, "--data %s: no requests", path);
    if (rc) mt_dataset_free(d);
    return rc;
}
