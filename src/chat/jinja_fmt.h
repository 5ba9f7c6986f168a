/* Internal interface of the chat-template renderer's Python string formatting, shared by
 * printf-style `%` (jinja_format.c), str.format / str.format_map (jinja_strformat.c) and
 * format(value, spec), the format-spec mini-language (jinja_fmtspec.c). */
#ifndef MT_CHAT_JINJA_FMT_H
#define MT_CHAT_JINJA_FMT_H

#include <stddef.h>
#include <stdint.h>

#include "chat/jinja.h"

#define JF_MAX_NUM 0x7fffffff       /* largest %-width or %-precision (Python's limit there is INT_MAX) */
#define JF_MAX_FLOAT_PREC (1 << 20) /* digits after the point of a float (Python: memory only) */

/* Appends count copies of the n bytes at unit (one character, possibly several bytes). */
void jf_put_repeat(jctx *c, jbuf *b, const char *unit, size_t n, int64_t count);

/* Appends s with every non-ASCII code point as \xhh, \uhhhh or \Uhhhhhhhh (ascii() after repr()). */
void jf_put_ascii(jctx *c, jbuf *b, const char *s, size_t n);

/* repr() of a template value as Python writes it: Undefined for an undefined value, Markup('...')
 * for markup (|safe, |e). */
void jf_repr(jctx *c, jbuf *b, jv v);

/* printf's digits of a finite double for conversion conv (e E f F g G) with precision prec and the
 * '#' flag when alt: NUL-terminated, in the arena, *len bytes. glibc rounds exactly as Python does.
 * Fails (line) when prec exceeds JF_MAX_FLOAT_PREC. */
char *jf_printf_double(jctx *c, int line, int conv, int alt, int64_t prec, double x, size_t *len);

/* Appends chr(cp) in UTF-8; fails with Python's message outside range(0x110000). A surrogate
 * (U+D800..U+DFFF), which Python allows in a str but UTF-8 cannot encode, is an error naming what
 * asked for it ("%c", "format code 'c'"). */
void jf_put_chr(jctx *c, int line, jbuf *b, int64_t cp, const char *what);

/* The length in bytes of s's first max code points, at most 400 (quoting user text in messages). */
int jf_clip(const char *s, size_t n, size_t max);

/* Python's format(v, spec) for the renderer's values (str.format's fields): the format-spec
 * mini-language of str, int, bool and float; str() of anything else with an empty spec. The
 * result is a plain str. Fails with Python's messages. */
jv jf_format(jctx *c, int line, jv v, const char *spec, size_t spec_n);

#endif
