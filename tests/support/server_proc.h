/* Starting and stopping a real `moetrace serve` process for end-to-end tests and bench_server. */
#ifndef MT_TESTS_SERVER_PROC_H
#define MT_TESTS_SERVER_PROC_H

#include <sys/types.h>

typedef struct mt_test_server {
    pid_t pid;
    int port;
    char url[96];        /* "http://127.0.0.1:PORT", or the address a --host name resolved to */
    char log_path[512];  /* the server's stderr */
} mt_test_server;

/* Runs shell_command through /bin/sh in a child process that is killed when the caller dies.
 * Returns its pid (-1 on failure). */
pid_t mt_test_spawn(const char *shell_command);

/* Runs `bin serve --port 0 ARGS` (ARGS through /bin/sh; stdout to /dev/null, stderr appended to
 * log_path), reads the
 * port from its "listening on" log line and waits until GET /health answers 200. Returns 0, or -1
 * (the process is then killed) after timeout_s or when it exits. */
int mt_test_server_start(mt_test_server *s, const char *bin, const char *args, const char *log_path, double timeout_s);

/* Sends sig (e.g. SIGTERM) and waits up to timeout_s for the exit (then SIGKILL). Returns the exit
 * status, 128 + signal number when killed by a signal, or -1. */
int mt_test_server_stop(mt_test_server *s, int sig, double timeout_s);

/* Waits up to timeout_s for the process to exit on its own; same return values (-2: still running). */
int mt_test_server_wait(mt_test_server *s, double timeout_s);

/* Reads the whole log (malloc'd, NUL-terminated; NULL when unreadable). */
char *mt_test_server_log(const mt_test_server *s);

#endif
