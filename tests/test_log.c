/* mt_log from several threads at once (the engine's, the HTTP threads', the dump writer's): every
 * line comes out whole, "moetrace: " and its text and its newline together. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/err.h"

enum { THREADS = 4, LINES = 3000 };

static void *log_lines(void *arg) {
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < LINES; i++) mt_log("thread %d line %d: %s", id, i, "a window written beside its plan");
    return NULL;
}

static void test_lines_whole(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/test_log_%d.txt", MT_BINARY_DIR, (int)getpid());
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_non_null(freopen(path, "w", stderr));
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) assert_int_equal(pthread_create(&th[t], NULL, log_lines, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    fflush(stderr);
    assert_true(dup2(saved, 2) >= 0); /* stderr back on the terminal for cmocka's report */
    close(saved);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[256];
    int n = 0, seen[THREADS] = {0};
    while (fgets(line, sizeof line, f)) {
        int id, i, len = 0;
        char tail[64] = "";
        if (sscanf(line, "moetrace: thread %d line %d: %63[^\n]%n", &id, &i, tail, &len) != 3 ||
            strcmp(tail, "a window written beside its plan") || line[len] != '\n' || id < 0 || id >= THREADS ||
            i != seen[id])
            fail_msg("line %d is not whole or out of its thread's order: '%s'", n, line);
        seen[id]++;
        n++;
    }
    fclose(f);
    remove(path);
    assert_int_equal(n, THREADS * LINES);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_lines_whole)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
