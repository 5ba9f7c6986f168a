#include "support/api_util.h"

#include <stdlib.h>
#include <string.h>

#include "routing/routing_wire.h"
#include "util/base64.h"
#include "util/json_util.h"

cJSON *mt_api_json(mt_http_client *c, const char *path, const char *body, long *status) {
    mt_http_response r;
    int rc = mt_http_call(c, body ? "POST" : "GET", path, body, &r);
    *status = rc == 0 ? r.status : 0;
    cJSON *j = rc == 0 ? cJSON_Parse(r.body) : NULL;
    mt_http_response_free(&r);
    return j;
}

int32_t *mt_api_routing_ids(const char *b64, const char *dtype, size_t *count) {
    mt_routing_dtype d;
    mt_err err;
    if (!b64 || mt_routing_dtype_parse(dtype, &d, &err)) return NULL;
    uint8_t *bytes;
    size_t len;
    if (mt_base64_decode(b64, strlen(b64), &bytes, &len)) return NULL;
    size_t n = len / mt_routing_dtype_size(d);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (ids) mt_routing_unpack(bytes, n, d, ids);
    free(bytes);
    *count = n;
    return ids;
}

int mt_api_int_array(const cJSON *arr, int32_t *out, int cap) {
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (n < cap) out[n] = (int32_t)it->valuedouble;
        n++;
    }
    return n < cap ? n : cap;
}

static int gather(const char *data, size_t len, void *ctx) {
    (void)len;
    mt_sse_events *ev = ctx;
    if (!strcmp(data, "[DONE]")) {
        ev->done++;
        return 0;
    }
    if (ev->done) ev->after_done++;
    cJSON *item = cJSON_Parse(data);
    cJSON_AddItemToArray(ev->list, item ? item : cJSON_CreateNull());
    ev->n++;
    return 0;
}

int mt_api_stream(mt_http_client *c, const char *path, const char *body, mt_sse_events *ev, long *status) {
    memset(ev, 0, sizeof *ev);
    ev->list = cJSON_CreateArray();
    mt_http_response r;
    int rc = mt_http_stream(c, path, body, gather, ev, &r);
    *status = r.status;
    mt_http_response_free(&r);
    return rc;
}

void mt_sse_events_free(mt_sse_events *ev) {
    cJSON_Delete(ev->list);
    ev->list = NULL;
}

bool mt_api_same_json(const cJSON *a, const cJSON *b) {
    char *x = cJSON_PrintUnformatted(a), *y = cJSON_PrintUnformatted(b);
    bool same = x && y && !strcmp(x, y);
    cJSON_free(x);
    cJSON_free(y);
    return same;
}

cJSON *mt_api_read_json(const char *path) {
    size_t len;
    mt_err err;
    char *text = mt_read_file(path, &len, &err);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    return j;
}

int64_t mt_api_cell(const cJSON *obj, const char *key, int row, int col) {
    return (int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(obj, key), row), col)->valuedouble;
}
