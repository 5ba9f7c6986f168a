/* Parsing of command-line values, with errors that name the flag and the bad value. */
#ifndef MT_CLI_ARGS_H
#define MT_CLI_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"

/* Each returns 0, or prints "moetrace: FLAG: ..." to stderr and returns -1. */
int mt_arg_int(const char *flag, const char *s, long lo, long hi, int *out);
int mt_arg_float(const char *flag, const char *s, double lo, double hi, float *out);
int mt_arg_double(const char *flag, const char *s, double lo, double hi, double *out);
int mt_arg_u64(const char *flag, const char *s, uint64_t *out);
/* "1,2,3" -> malloc'd array; spaces allowed; at least one id. */
int mt_arg_id_list(const char *flag, const char *s, int32_t **ids, int *n);

/* "auto" | "dummy" (--load-format). */
int mt_arg_load_format(const char *flag, const char *s, mt_load_format *out);

/* Output paths, checked before any work so that a long run cannot fail at its end: a file (not
 * empty, not a folder, writable if it exists) in a folder that exists and can be written; a folder
 * (trailing slashes allowed; created when missing, its parent existing). */
int mt_arg_out_file(const char *flag, const char *path);
int mt_arg_out_dir(const char *flag, const char *path);
/* path without its trailing slashes ("/" stays), cut in place and returned: the files of --out prof/
 * are then prof/NAME, not prof//NAME. */
char *mt_arg_trim_slashes(char *path);

/* For the parsing loop: returns argv[++*i], or prints "FLAG needs a value" and returns NULL. */
const char *mt_arg_value(int argc, char **argv, int *i);

#endif
