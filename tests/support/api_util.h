/* JSON calls and routing decoding for the server tests. */
#ifndef MT_TESTS_API_UTIL_H
#define MT_TESTS_API_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "support/http_client.h"

/* Calls path (GET when body is NULL, else POST) and parses the answer; *status gets the HTTP status
 * (0 when no answer came). NULL when the body is not JSON. */
cJSON *mt_api_json(mt_http_client *c, const char *path, const char *body, long *status);

/* A whole server-sent-event stream: every "data:" payload but [DONE], parsed, in order. */
typedef struct mt_sse_events {
    cJSON *list;       /* JSON array of the events (NULL entries for payloads that are not JSON) */
    int n;
    int done;          /* [DONE] seen */
    int after_done;    /* events after [DONE] (must be 0) */
} mt_sse_events;

/* POSTs body to path and gathers the stream; *status: HTTP status. Free with mt_sse_events_free. */
int mt_api_stream(mt_http_client *c, const char *path, const char *body, mt_sse_events *ev, long *status);
void mt_sse_events_free(mt_sse_events *ev);

/* Decodes routed_experts (base64 of little-endian dtype values) into int32 ids as SGLang's helper
 * does (np.frombuffer(b64decode(s), dtype)), widening uint8 255 to -1. NULL on bad input. */
int32_t *mt_api_routing_ids(const char *b64, const char *dtype, size_t *count);

/* Whether two JSON values print the same (unformatted). */
bool mt_api_same_json(const cJSON *a, const cJSON *b);

/* A JSON array of numbers into ints (at most cap); returns how many. */
int mt_api_int_array(const cJSON *arr, int32_t *out, int cap);

/* The JSON file at path, parsed; NULL when it cannot be read or parsed. */
cJSON *mt_api_read_json(const char *path);

/* Element [row][col] of the 2-D number array key of obj (a dump's logical_count, physical_count). */
int64_t mt_api_cell(const cJSON *obj, const char *key, int row, int col);

#endif
