/* Small helpers over cJSON for reading optional typed fields, and whole files into memory. */
#ifndef MT_UTIL_JSON_UTIL_H
#define MT_UTIL_JSON_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "util/err.h"

/* Reads a whole file into a NUL-terminated buffer (free() it). NULL + err on failure. */
char *mt_read_file(const char *path, size_t *len, mt_err *err);
/* Parses a JSON file; errors name the file and the position of the syntax error. */
cJSON *mt_json_load_file(const char *path, mt_err *err);

/* Field getters: return 1 when the field exists with the right type (value stored), 0 when it is
 * absent or JSON null (value untouched), -1 when it exists with the wrong type (err names it). */
int mt_json_int(const cJSON *obj, const char *key, int *value, mt_err *err);
int mt_json_float(const cJSON *obj, const char *key, float *value, mt_err *err);
int mt_json_bool(const cJSON *obj, const char *key, bool *value, mt_err *err);
int mt_json_string(const cJSON *obj, const char *key, const char **value, mt_err *err);

#endif
