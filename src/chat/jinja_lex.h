/* Lexer of the chat-template interpreter: template text -> tokens, applying Jinja's whitespace
 * control ({%- -%} {{- -}} {%+), trim_blocks and lstrip_blocks, comments and {% raw %} blocks. */
#ifndef MT_CHAT_JINJA_LEX_H
#define MT_CHAT_JINJA_LEX_H

#include <stddef.h>
#include <stdint.h>

#include "chat/jinja.h"

typedef enum {
    JT_TEXT, JT_VAR_BEGIN, JT_VAR_END, JT_BLOCK_BEGIN, JT_BLOCK_END,
    JT_NAME, JT_STRING, JT_INT, JT_FLOAT, JT_OP, JT_EOF
} jt_kind;

typedef struct jtok {
    jt_kind t;
    int line;
    const char *s; /* TEXT/NAME/OP: source bytes; STRING: unescaped bytes (arena) */
    size_t n;
    int64_t i;
    double f;
} jtok;

/* Tokenises src (newlines already normalised to \n). Returns the count (last token JT_EOF) or -1
 * with "chat template line N: ..." in err. */
int jinja_lex(jarena *a, const char *src, size_t n, jtok **out, char *err, size_t err_len);

#endif
