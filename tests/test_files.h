/* Reading a whole file in a test: slurp returns it NUL-terminated (malloc'd; the caller frees it),
 * or NULL when it cannot be read, slurp_json parsed (strings' \u0000 kept as C0 80:
 * mt_json_bytes reads them back); the reason is dropped (tests assert on NULL or name the path
 * themselves). */
#ifndef MT_TESTS_TEST_FILES_H
#define MT_TESTS_TEST_FILES_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdlib.h>

#include "util/json_util.h"

/* The whole file, or NULL; its length in *len when len is not NULL. */
static inline char *slurp(const char *path, size_t *len) {
    mt_err err;
    size_t n = 0;
    char *text = mt_read_file(path, &n, &err);
    if (len) *len = n;
    return text;
}

/* The file parsed as JSON, or NULL when it cannot be read or parsed (the caller cJSON_Deletes it). */
static inline cJSON *slurp_json(const char *path) {
    size_t n = 0;
    char *text = slurp(path, &n);
    mt_err err;
    cJSON *doc = text ? mt_json_parse_keep_nul(text, n, path, &err) : NULL;
    free(text);
    return doc;
}

#endif
