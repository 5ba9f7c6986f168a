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

void mt_log(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("moetrace: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
