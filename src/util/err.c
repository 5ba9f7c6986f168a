#define _POSIX_C_SOURCE 200809L
#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>

int mt_errf(mt_err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* One line, whole: the stream is locked over its three writes, so lines of several threads (the
 * engine's, the HTTP threads', the dump writer's) never interleave. */
void mt_log(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    flockfile(stderr);
    fputs("moetrace: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    va_end(ap);
}
