/* A growable NUL-terminated byte string, for building HTTP bodies, server-sent events and the
 * Prometheus text. Appends abort the process when memory runs out (as the tokenizer's buffers do):
 * a server that cannot allocate a few bytes of text cannot answer anyway. */
#ifndef MT_UTIL_STRBUF_H
#define MT_UTIL_STRBUF_H

#include <stddef.h>

typedef struct mt_strbuf {
    char *data;   /* NUL-terminated once anything was appended; NULL before */
    size_t len;
    size_t cap;
} mt_strbuf;

void mt_strbuf_append(mt_strbuf *b, const char *s, size_t n);
void mt_strbuf_puts(mt_strbuf *b, const char *s);
void mt_strbuf_printf(mt_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops everything after the first n bytes (n <= len). */
void mt_strbuf_truncate(mt_strbuf *b, size_t n);
/* Hands the string over (malloc'd, never NULL: "" when empty) and resets b. */
char *mt_strbuf_take(mt_strbuf *b);
void mt_strbuf_free(mt_strbuf *b);

#endif
