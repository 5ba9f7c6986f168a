#include "support/server_proc.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support/http_client.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

char *mt_test_server_log(const mt_test_server *s) {
    FILE *f = fopen(s->log_path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *p = realloc(buf, cap *= 2);
            if (!p) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = p;
        }
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    return buf;
}

static int exit_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

int mt_test_server_wait(mt_test_server *s, double timeout_s) {
    double t0 = now_s();
    for (;;) {
        int status;
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid) {
            s->pid = 0;
            return exit_code(status);
        }
        if (r < 0) return -1;
        if (now_s() - t0 > timeout_s) return -2;
        sleep_ms(10);
    }
}

int mt_test_server_stop(mt_test_server *s, int sig, double timeout_s) {
    if (s->pid <= 0) return -1;
    kill(s->pid, sig);
    int rc = mt_test_server_wait(s, timeout_s);
    if (rc == -2) {
        fprintf(stderr, "server %d did not exit within %.0f s; killing it\n", (int)s->pid, timeout_s);
        kill(s->pid, SIGKILL);
        rc = mt_test_server_wait(s, 10);
        return rc < 0 ? rc : 128 + SIGKILL;
    }
    return rc;
}

pid_t mt_test_spawn(const char *shell_command) {
    pid_t parent = getpid(), pid = fork();
    if (pid != 0) return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test that dies takes its server along */
    if (getppid() != parent) _exit(127);
    execl("/bin/sh", "sh", "-c", shell_command, (char *)NULL);
    _exit(127);
}

/* s->url from the log line's "PORT (ADDRESS; loading ...)" (colon at the ':' before PORT): ADDRESS
 * is there when --host was a name (what it resolved to), else the server is reached at 127.0.0.1. */
static void set_url(mt_test_server *s, const char *colon) {
    const char *open = strstr(colon, " ("), *semi = open ? strchr(open, ';') : NULL, *eol = strchr(colon, '\n');
    char address[64] = "127.0.0.1";
    if (semi && (!eol || semi < eol) && semi - open - 2 < (long)sizeof address)
        snprintf(address, sizeof address, "%.*s", (int)(semi - open - 2), open + 2);
    bool v6 = strchr(address, ':') != NULL;
    snprintf(s->url, sizeof s->url, "http://%s%s%s:%d", v6 ? "[" : "", address, v6 ? "]" : "", s->port);
}

int mt_test_server_start(mt_test_server *s, const char *bin, const char *args, const char *log_path, double timeout_s) {
    memset(s, 0, sizeof *s);
    snprintf(s->log_path, sizeof s->log_path, "%s", log_path);
    FILE *f = fopen(log_path, "w");
    if (!f) return -1;
    fclose(f);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "exec %s serve --port 0 %s >/dev/null 2>>%s", bin, args, log_path);
    if ((s->pid = mt_test_spawn(cmd)) < 0) return -1;
    double t0 = now_s();
    while (now_s() - t0 < timeout_s) {
        if (mt_test_server_wait(s, 0) != -2) {
            char *log = mt_test_server_log(s);
            fprintf(stderr, "server exited during start-up:\n%s\n", log ? log : "");
            free(log);
            return -1;
        }
        if (!s->port) {
            char *log = mt_test_server_log(s);
            const char *at = log ? strstr(log, "listening on http://") : NULL;
            const char *colon = at ? strchr(at + 20, ':') : NULL;
            if (colon) {
                s->port = atoi(colon + 1);
                set_url(s, colon);
            }
            free(log);
        }
        if (s->port) {
            mt_http_client *c = mt_http_client_new(s->url, NULL);
            mt_http_response r;
            int ok = c && mt_http_call(c, "GET", "/health", NULL, &r) == 0 && r.status == 200;
            if (c) mt_http_response_free(&r);
            mt_http_client_free(c);
            if (ok) return 0;
        }
        sleep_ms(20);
    }
    fprintf(stderr, "server did not become healthy within %.0f s\n", timeout_s);
    mt_test_server_stop(s, SIGKILL, 5);
    return -1;
}
