/* A scratch folder for one test program (include after cmocka.h): made by tmp_dir_make in the
 * group setup, removed with its content by tmp_dir_remove in the teardown. */
#ifndef MT_TESTS_TMP_DIR_H
#define MT_TESTS_TMP_DIR_H

#include <stdio.h>
#include <stdlib.h>

static char g_dir[256];

/* g_dir/<prefix>XXXXXX under the build folder; 0 on success. */
static inline int tmp_dir_make(const char *prefix) {
    snprintf(g_dir, sizeof g_dir, "%s/%sXXXXXX", MT_BINARY_DIR, prefix);
    return mkdtemp(g_dir) ? 0 : -1;
}

static inline int tmp_dir_remove(void) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A cmocka group teardown that removes the folder. */
static inline int tmp_dir_teardown(void **state) {
    (void)state;
    return tmp_dir_remove();
}

/* g_dir/name; up to 8 results may be used in one expression. */
static inline const char *path_of(const char *name) {
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

/* Writes text as g_dir/name. */
static inline void write_text(const char *name, const char *text) {
    FILE *f = fopen(path_of(name), "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

#endif
