#include "util/json_util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *mt_read_file(const char *path, size_t *len, mt_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        mt_errf(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        cap *= 2;
        char *nb = realloc(buf, cap + 1);
        if (!nb) { free(buf); buf = NULL; }
        buf = nb;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        mt_errf(err, "%s: read failed", path);
        return NULL;
    }
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

cJSON *mt_json_load_file(const char *path, mt_err *err) {
    size_t len;
    char *text = mt_read_file(path, &len, err);
    if (!text) return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - text) : 0;
        mt_errf(err, "%s: invalid JSON near byte %zu", path, at);
    }
    free(text);
    return root;
}

static const cJSON *field(const cJSON *obj, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return (it && !cJSON_IsNull(it)) ? it : NULL;
}

int mt_json_int(const cJSON *obj, const char *key, int *value, mt_err *err) {
    const cJSON *it = field(obj, key);
    if (!it) return 0;
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || fabs(it->valuedouble) > 2147483647.0)
        return mt_errf(err, "field '%s' must be an integer", key);
    *value = (int)it->valuedouble;
    return 1;
}

int mt_json_float(const cJSON *obj, const char *key, float *value, mt_err *err) {
    const cJSON *it = field(obj, key);
    if (!it) return 0;
    if (!cJSON_IsNumber(it)) return mt_errf(err, "field '%s' must be a number", key);
    *value = (float)it->valuedouble;
    return 1;
}

int mt_json_bool(const cJSON *obj, const char *key, bool *value, mt_err *err) {
    const cJSON *it = field(obj, key);
    if (!it) return 0;
    if (!cJSON_IsBool(it)) return mt_errf(err, "field '%s' must be true or false", key);
    *value = cJSON_IsTrue(it);
    return 1;
}

int mt_json_string(const cJSON *obj, const char *key, const char **value, mt_err *err) {
    const cJSON *it = field(obj, key);
    if (!it) return 0;
    if (!cJSON_IsString(it)) return mt_errf(err, "field '%s' must be a string", key);
    *value = it->valuestring;
    return 1;
}
