#include "util/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void reserve(mt_strbuf *b, size_t extra) {
    if (b->data && b->len + extra < b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap <= b->len + extra) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        fputs("moetrace: out of memory\n", stderr);
        abort();
    }
    b->data = p;
    b->cap = cap;
}

void mt_strbuf_append(mt_strbuf *b, const char *s, size_t n) {
    reserve(b, n);
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void mt_strbuf_puts(mt_strbuf *b, const char *s) { mt_strbuf_append(b, s, strlen(s)); }

void mt_strbuf_printf(mt_strbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void mt_strbuf_truncate(mt_strbuf *b, size_t n) {
    if (!b->data || n >= b->len) return;
    b->len = n;
    b->data[n] = '\0';
}

char *mt_strbuf_take(mt_strbuf *b) {
    if (!b->data) {
        reserve(b, 0);
        b->data[0] = '\0';
    }
    char *s = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}

void mt_strbuf_free(mt_strbuf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
