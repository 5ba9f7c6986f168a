/* Running the moetrace binary from a test (include after cmocka.h): run_moetrace runs
 * "$MOETRACE_BIN ARGS" through the shell, so MOETRACE_BIN must be set (tests skip when it is not),
 * and captures what it writes to stdout and stderr. */
#ifndef MT_TESTS_TEST_CLI_H
#define MT_TESTS_TEST_CLI_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

/* Runs "$MOETRACE_BIN args" with stderr redirected as `redirect` says ("2>&1": into out too,
 * "2>/dev/null": dropped); what it writes to stdout in out (NUL-terminated, cut at out_len - 1
 * bytes). Returns its exit status, -1 when it did not exit normally. */
static inline int run_moetrace_redirected(const char *args, const char *redirect, char *out, size_t out_len) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s %s %s", getenv("MOETRACE_BIN"), args, redirect);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, out_len - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Its stdout and stderr together in out; returns its exit status. */
static inline int run_moetrace(const char *args, char *out, size_t out_len) {
    return run_moetrace_redirected(args, "2>&1", out, out_len);
}

/* Its stdout alone in out; returns its exit status. */
static inline int run_moetrace_stdout(const char *args, char *out, size_t out_len) {
    return run_moetrace_redirected(args, "2>/dev/null", out, out_len);
}

#endif
