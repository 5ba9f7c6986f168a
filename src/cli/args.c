#include "cli/args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

int mt_arg_double(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "moetrace: %s: '%s' is not a number in [%g, %g]\n", flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int mt_arg_float(const char *flag, const char *s, double lo, double hi, float *out) {
    double v;
    if (mt_arg_double(flag, s, lo, hi, &v)) return -1;
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

/* The folder part of path ("." when it has none) into buf. */
static void parent_of(const char *path, char *buf, size_t len) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(buf, len, ".");
    else if (slash == path) snprintf(buf, len, "/");
    else snprintf(buf, len, "%.*s", (int)(slash - path), path);
}

/* 0 when dir is a folder this process can create files in; else prints why. */
static int writable_dir(const char *flag, const char *path, const char *dir) {
    struct stat st;
    if (stat(dir, &st)) {
        fprintf(stderr, "moetrace: %s %s: folder '%s' does not exist\n", flag, path, dir);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "moetrace: %s %s: '%s' is not a folder\n", flag, path, dir);
        return -1;
    }
    if (access(dir, W_OK | X_OK)) {
        fprintf(stderr, "moetrace: %s %s: cannot write into folder '%s': %s\n", flag, path, dir, strerror(errno));
        return -1;
    }
    return 0;
}

int mt_arg_out_file(const char *flag, const char *path) {
    if (!*path) {
        fprintf(stderr, "moetrace: %s: the path is empty\n", flag);
        return -1;
    }
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            fprintf(stderr, "moetrace: %s %s: is a folder (give a file name)\n", flag, path);
            return -1;
        }
        if (access(path, W_OK)) {
            fprintf(stderr, "moetrace: %s %s: cannot be written: %s\n", flag, path, strerror(errno));
            return -1;
        }
    }
    char dir[4096];
    parent_of(path, dir, sizeof dir);
    return writable_dir(flag, path, dir);
}

char *mt_arg_trim_slashes(char *path) {
    for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--) path[n - 1] = '\0';
    return path;
}

int mt_arg_out_dir(const char *flag, const char *given) {
    if (!*given) {
        fprintf(stderr, "moetrace: %s: the path is empty\n", flag);
        return -1;
    }
    char path[4096];   /* without trailing slashes ("prof/" is the folder prof) */
    snprintf(path, sizeof path, "%s", given);
    mt_arg_trim_slashes(path);
    struct stat st;
    if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            fprintf(stderr, "moetrace: %s %s: exists and is not a folder\n", flag, path);
            return -1;
        }
        return writable_dir(flag, path, path);
    }
    char parent[4096];
    parent_of(path, parent, sizeof parent);
    if (writable_dir(flag, path, parent)) return -1;
    if (mkdir(path, 0755) && errno != EEXIST) {
        fprintf(stderr, "moetrace: %s %s: cannot create the folder: %s\n", flag, path, strerror(errno));
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
