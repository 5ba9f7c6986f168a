#include "cli/args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mt_arg_int(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "moetrace: %s: '%s' is not an integer in [%ld, %ld]\n", flag, s, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int mt_arg_float(const char *flag, const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "moetrace: %s: '%s' is not a number in [%g, %g]\n", flag, s, lo, hi);
        return -1;
    }
    *out = (float)v;
    return 0;
}

int mt_arg_u64(const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-') {
        fprintf(stderr, "moetrace: %s: '%s' is not a non-negative integer\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

int mt_arg_id_list(const char *flag, const char *s, int32_t **ids, int *n) {
    int cap = 16, count = 0;
    int32_t *v = malloc((size_t)cap * sizeof *v);
    if (!v) return -1;
    const char *p = s;
    for (;;) {
        while (*p == ' ') p++;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (errno || end == p || x < 0 || x > INT32_MAX) {
            fprintf(stderr, "moetrace: %s: expected comma-separated non-negative token ids, got '%s'\n", flag, s);
            free(v);
            return -1;
        }
        if (count == cap) {
            cap *= 2;
            int32_t *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) { free(v); return -1; }
            v = nv;
        }
        v[count++] = (int32_t)x;
        p = end;
        while (*p == ' ') p++;
        if (*p == '\0') break;
        if (*p != ',') {
            fprintf(stderr, "moetrace: %s: unexpected '%c' in '%s'\n", flag, *p, s);
            free(v);
            return -1;
        }
        p++;
    }
    *ids = v;
    *n = count;
    return 0;
}

int mt_arg_load_format(const char *flag, const char *s, mt_load_format *out) {
    if (!strcmp(s, "auto")) *out = MT_LOAD_AUTO;
    else if (!strcmp(s, "dummy")) *out = MT_LOAD_DUMMY;
    else {
        fprintf(stderr, "moetrace: %s: '%s' is not auto or dummy\n", flag, s);
        return -1;
    }
    return 0;
}

const char *mt_arg_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "moetrace: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}
