/* Lexer for the chat-template interpreter. Whitespace rules follow Jinja2's lexer with
 * trim_blocks=True and lstrip_blocks=True (as transformers configures it). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_lex.h"

typedef struct lexer {
    jarena *a;
    const char *src;
    size_t n, pos;
    int line;
    jtok *toks;
    size_t ntok, cap;
    char *err;
    size_t err_len;
} lexer;

static int lex_err(lexer *L, int line, const char *msg, const char *detail) {
    snprintf(L->err, L->err_len, "chat template line %d: %s%s", line, msg, detail ? detail : "");
    return -1;
}

static int push(lexer *L, jtok t) {
    if (L->ntok == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        jtok *nt = ja_alloc(L->a, cap * sizeof *nt);
        if (!nt) return -1;
        if (L->ntok) memcpy(nt, L->toks, L->ntok * sizeof *nt);
        L->toks = nt;
        L->cap = cap;
    }
    L->toks[L->ntok++] = t;
    return 0;
}

static int count_nl(const char *s, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

/* Python's str.isspace for the byte at s (ASCII, plus multi-byte Unicode spaces); returns its width or 0. */
static size_t ws_at(const char *s, size_t n) {
    if (!n) return 0;
    unsigned char ch = (unsigned char)s[0];
    if (ch < 0x80) return (ch == ' ' || (ch >= 9 && ch <= 13) || (ch >= 0x1c && ch <= 0x1f)) ? 1 : 0;
    size_t adv;
    int32_t cp = ju_decode(s, n, &adv);
    return ju_isspace(cp) ? adv : 0;
}

/* length after rstrip() of Python whitespace */
static size_t rstrip_len(const char *s, size_t n) {
    size_t end = n;
    while (end > 0) {
        size_t st = end - 1;
        while (st > 0 && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
        if (ws_at(s + st, end - st) == end - st) end = st;
        else break;
    }
    return end;
}

static int unescape_string(lexer *L, const char *s, size_t n, int line, jtok *t) {
    char *o = ja_alloc(L->a, n * 4 + 1);
    if (!o) return lex_err(L, line, "out of memory", NULL);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) {
            o[k++] = s[i];
            continue;
        }
        char e = s[++i];
        int32_t cp = -1;
        switch (e) {
        case 'n': o[k++] = '\n'; break;
        case 't': o[k++] = '\t'; break;
        case 'r': o[k++] = '\r'; break;
        case '\\': o[k++] = '\\'; break;
        case '\'': o[k++] = '\''; break;
        case '"': o[k++] = '"'; break;
        case 'a': o[k++] = '\a'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'v': o[k++] = '\v'; break;
        case '\n': break;
        case 'N': return lex_err(L, line, "unsupported: \\N{...} escapes in string literals (write the character, or \\u/\\U)", NULL);
        case 'x': case 'u': case 'U': {
            int w = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            if (i + (size_t)w >= n + 0 && i + (size_t)w > n - 1 + 1) return lex_err(L, line, "truncated escape in string literal", NULL);
            char hex[9] = {0};
            for (int j = 0; j < w; j++) {
                char h = i + 1 + (size_t)j < n ? s[i + 1 + (size_t)j] : 0;
                if (!isxdigit((unsigned char)h)) return lex_err(L, line, "bad escape in string literal", NULL);
                hex[j] = h;
            }
            cp = (int32_t)strtol(hex, NULL, 16);
            i += (size_t)w;
            break;
        }
        default:
            if (e >= '0' && e <= '7') {
                int v = 0, j = 0;
                while (j < 3 && i < n && s[i] >= '0' && s[i] <= '7') {
                    v = v * 8 + (s[i] - '0');
                    i++;
                    j++;
                }
                i--;
                cp = v;
            } else {
                o[k++] = '\\';
                o[k++] = e;
            }
        }
        if (cp >= 0) {
            if (cp > 0x10FFFF) return lex_err(L, line, "bad \\U escape in string literal", NULL);
            k += ju_encode(cp, o + k);
        }
    }
    t->s = o;
    t->n = k;
    return 0;
}

/* (\d+_)*\d+ from p[k]: the end, or k when there is no digit there. */
static size_t digits_us(const char *p, size_t left, size_t k) {
    size_t j = k;
    while (j < left && isdigit((unsigned char)p[j])) {
        while (j < left && isdigit((unsigned char)p[j])) j++;
        if (j + 1 < left && p[j] == '_' && isdigit((unsigned char)p[j + 1])) j++;
    }
    return j;
}

/* Length of Jinja's float literal at p (digits, then a fraction and/or an exponent), or 0. */
static size_t float_len(const char *p, size_t left) {
    size_t k = digits_us(p, left, 0);
    int frac = 0;
    if (k + 1 < left && p[k] == '.' && digits_us(p, left, k + 1) > k + 1) {
        k = digits_us(p, left, k + 1);
        frac = 1;
    }
    if (k < left && (p[k] | 0x20) == 'e') {
        size_t e = k + 1 + (k + 1 < left && (p[k + 1] == '+' || p[k + 1] == '-'));
        size_t end = digits_us(p, left, e);
        if (end > e) return end;
    }
    return frac ? k : 0;
}

/* Length of Jinja's integer literal at p: 0b/0o/0x with digits (one '_' before each digit
 * allowed), [1-9](_?\d)*, or 0(_?0)*; *base gets its base. */
static size_t int_len(const char *p, size_t left, int *base) {
    static const char *const digits[] = {"01", "01234567", "0123456789abcdefABCDEF"};
    if (left > 2 && p[0] == '0' && strchr("bBoOxX", p[1])) {
        int which = (p[1] | 0x20) == 'b' ? 0 : (p[1] | 0x20) == 'o' ? 1 : 2;
        size_t k = 2;
        for (;;) {
            size_t u = k < left && p[k] == '_';
            if (k + u < left && p[k + u] && strchr(digits[which], p[k + u])) k += u + 1;
            else break;
        }
        if (k > 2) {
            *base = which == 0 ? 2 : which == 1 ? 8 : 16;
            return k;
        }
    }
    *base = 10;
    char lead = p[0];
    size_t k = 1;
    while (k < left) {
        size_t u = p[k] == '_';
        if (k + u < left && (lead == '0' ? p[k + u] == '0' : isdigit((unsigned char)p[k + u]))) k += u + 1;
        else break;
    }
    return k;
}

/* A number literal as Jinja lexes it (a float, else an int; no float right after a '.', so that
 * x.0.1 is x[0][1]); its underscores dropped. */
static int lex_number(lexer *L, const char *p, size_t left, jtok *t) {
    char num[80];
    size_t m = 0;
    int after_dot = p > L->src && p[-1] == '.';
    size_t k = after_dot ? 0 : float_len(p, left);
    int base = 10;
    if (k) {
        t->t = JT_FLOAT;
    } else {
        k = int_len(p, left, &base);
        t->t = JT_INT;
    }
    for (size_t j = base == 10 ? 0 : 2; j < k; j++) {
        if (p[j] == '_') continue;
        if (m + 1 >= sizeof num) return lex_err(L, L->line, "number literal too long", NULL);
        num[m++] = p[j];
    }
    num[m] = 0;
    t->n = k;
    if (t->t == JT_FLOAT) {
        t->f = strtod(num, NULL);
        return 0;
    }
    errno = 0;
    unsigned long long v = strtoull(num, NULL, base);
    if (errno || v > INT64_MAX) return lex_err(L, L->line, "integer literal too large", NULL);
    t->i = (int64_t)v;
    return 0;
}

static int is_name_start(char ch) { return isalpha((unsigned char)ch) || ch == '_'; }
static int is_name_char(char ch) { return isalnum((unsigned char)ch) || ch == '_'; }

/* Lex the inside of a {{ }} or {% %} tag starting at L->pos. kind: 'v' or 'b'. On return L->pos is
 * just past the end delimiter; *trailing_nl_trimmed and *line_start report whitespace state. */
static int lex_tag(lexer *L, char kind, int *line_starting) {
    int depth = 0;
    const char *close = kind == 'v' ? "}}" : "%}";
    for (;;) {
        /* whitespace */
        while (L->pos < L->n) {
            size_t w = ws_at(L->src + L->pos, L->n - L->pos);
            if (!w) break;
            if (L->src[L->pos] == '\n') L->line++;
            L->pos += w;
        }
        if (L->pos >= L->n) return lex_err(L, L->line, "unexpected end of template inside a tag (missing '", kind == 'v' ? "}}')" : "%}')");
        const char *p = L->src + L->pos;
        size_t left = L->n - L->pos;
        if (depth == 0) {
            int sign = 0;
            size_t off = 0;
            if ((p[0] == '-' || p[0] == '+') && left >= 3 && p[1] == close[0] && p[2] == close[1]) {
                sign = p[0];
                off = 1;
            }
            if (left >= off + 2 && p[off] == close[0] && p[off + 1] == close[1]) {
                jtok t = {kind == 'v' ? JT_VAR_END : JT_BLOCK_END, L->line, p, off + 2, 0, 0};
                if (push(L, t)) return lex_err(L, L->line, "out of memory", NULL);
                L->pos += off + 2;
                int ended_nl = 0;
                if (sign == '-') {
                    size_t start = L->pos;
                    while (L->pos < L->n) {
                        size_t w = ws_at(L->src + L->pos, L->n - L->pos);
                        if (!w) break;
                        L->pos += w;
                    }
                    L->line += count_nl(L->src + start, L->pos - start);
                    ended_nl = L->pos > start && L->src[L->pos - 1] == '\n';
                } else if (sign == 0 && kind == 'b' && L->pos < L->n && L->src[L->pos] == '\n') {
                    L->pos++; /* trim_blocks */
                    L->line++;
                    ended_nl = 1;
                }
                *line_starting = ended_nl;
                return 0;
            }
        }
        jtok t = {JT_OP, L->line, p, 1, 0, 0};
        if (is_name_start(p[0])) {
            size_t k = 1;
            while (k < left && is_name_char(p[k])) k++;
            t.t = JT_NAME;
            t.n = k;
        } else if (isdigit((unsigned char)p[0])) {
            if (lex_number(L, p, left, &t)) return -1;
        } else if (p[0] == '\'' || p[0] == '"') {
            size_t k = 1;
            int nl = 0;
            while (k < left && p[k] != p[0]) {
                if (p[k] == '\\' && k + 1 < left) k++;
                if (p[k] == '\n') nl++;
                k++;
            }
            if (k >= left) return lex_err(L, L->line, "unterminated string literal", NULL);
            t.t = JT_STRING;
            if (unescape_string(L, p + 1, k - 1, L->line, &t)) return -1;
            L->line += nl;
            L->pos += k + 1;
            if (push(L, t)) return lex_err(L, L->line, "out of memory", NULL);
            continue;
        } else {
            static const char *const ops2[] = {"//", "**", "==", "!=", "<=", ">="};
            for (size_t j = 0; j < sizeof ops2 / sizeof ops2[0]; j++)
                if (left >= 2 && p[0] == ops2[j][0] && p[1] == ops2[j][1]) t.n = 2;
            if (t.n == 1 && (!p[0] || !strchr("+-*/%~()[]{},.:|=<>", p[0]))) {
                char bad[8] = {0};
                size_t adv;
                ju_decode(p, left, &adv);
                memcpy(bad, p, adv < 4 ? adv : 4);
                strcat(bad, "'");
                return lex_err(L, L->line, "unexpected character '", bad);
            }
            if (t.n == 1 && strchr("([{", p[0])) depth++;
            if (t.n == 1 && strchr(")]}", p[0])) {
                if (depth == 0) {
                    char bad[8] = {p[0], '\'', 0};
                    return lex_err(L, L->line, "unbalanced '", bad);
                }
                depth--;
            }
        }
        L->pos += t.n;
        if (push(L, t)) return lex_err(L, L->line, "out of memory", NULL);
    }
}

/* After "{%" (and sign) at L->pos: if the tag is `raw`, consume through the matching endraw and emit
 * its content as text. Returns 1 when handled, 0 when not a raw tag, -1 on error. */
static int try_raw(lexer *L, size_t after_open) {
    size_t p = after_open;
    while (p < L->n && (L->src[p] == ' ' || L->src[p] == '\t' || L->src[p] == '\n')) p++;
    if (!(L->n - p >= 3 && !memcmp(L->src + p, "raw", 3) && (p + 3 >= L->n || !is_name_char(L->src[p + 3]))))
        return 0;
    p += 3;
    while (p < L->n && (L->src[p] == ' ' || L->src[p] == '\t' || L->src[p] == '\n')) p++;
    int sign = 0;
    if (p < L->n && (L->src[p] == '-' || L->src[p] == '+')) sign = L->src[p++];
    if (!(L->n - p >= 2 && L->src[p] == '%' && L->src[p + 1] == '}')) return lex_err(L, L->line, "malformed raw tag", NULL);
    p += 2;
    if (sign == '-') while (p < L->n && ws_at(L->src + p, L->n - p)) p += ws_at(L->src + p, L->n - p);
    else if (sign == 0 && p < L->n && L->src[p] == '\n') p++;
    /* find {% [-+]? endraw [-+]? %} */
    for (size_t q = p; q + 1 < L->n; q++) {
        if (L->src[q] != '{' || L->src[q + 1] != '%') continue;
        size_t r = q + 2;
        int osign = 0;
        if (r < L->n && (L->src[r] == '-' || L->src[r] == '+')) osign = L->src[r++];
        while (r < L->n && (L->src[r] == ' ' || L->src[r] == '\t' || L->src[r] == '\n')) r++;
        if (!(L->n - r >= 6 && !memcmp(L->src + r, "endraw", 6))) continue;
        r += 6;
        while (r < L->n && (L->src[r] == ' ' || L->src[r] == '\t' || L->src[r] == '\n')) r++;
        int csign = 0;
        if (r < L->n && (L->src[r] == '-' || L->src[r] == '+')) csign = L->src[r++];
        if (!(L->n - r >= 2 && L->src[r] == '%' && L->src[r + 1] == '}')) continue;
        r += 2;
        size_t tend = q;
        if (osign == '-') tend = p + rstrip_len(L->src + p, q - p);
        jtok t = {JT_TEXT, L->line, L->src + p, tend - p, 0, 0};
        if (tend > p && push(L, t)) return lex_err(L, L->line, "out of memory", NULL);
        if (csign == '-') while (r < L->n && ws_at(L->src + r, L->n - r)) r += ws_at(L->src + r, L->n - r);
        else if (csign == 0 && r < L->n && L->src[r] == '\n') r++;
        L->line += count_nl(L->src + L->pos, r - L->pos);
        L->pos = r;
        return 1;
    }
    return lex_err(L, L->line, "missing {% endraw %}", NULL);
}

int jinja_lex(jarena *a, const char *src, size_t n, jtok **out, char *err, size_t err_len) {
    lexer L = {a, src, n, 0, 1, NULL, 0, 0, err, err_len};
    int line_starting = 1;
    while (L.pos < n) {
        /* find next tag opener */
        size_t q = L.pos;
        char kind = 0;
        for (; q + 1 < n; q++) {
            if (src[q] == '{' && (src[q + 1] == '{' || src[q + 1] == '%' || src[q + 1] == '#')) {
                kind = src[q + 1];
                break;
            }
        }
        if (!kind) q = n;
        size_t text_end = q;
        int sign = 0;
        if (kind && q + 2 < n && (src[q + 2] == '-' || src[q + 2] == '+')) sign = src[q + 2];
        if (kind) {
            if (sign == '-') {
                text_end = L.pos + rstrip_len(src + L.pos, q - L.pos);
            } else if (sign != '+' && kind != '{') { /* lstrip_blocks */
                size_t l_pos = q;
                while (l_pos > L.pos && src[l_pos - 1] != '\n') l_pos--;
                if (l_pos > L.pos || line_starting) {
                    int only_ws = l_pos < q;
                    for (size_t j = l_pos; j < q && only_ws; j++)
                        if (src[j] != ' ' && src[j] != '\t' && src[j] != '\v' && src[j] != '\f' && src[j] != '\r')
                            only_ws = 0;
                    if (only_ws) text_end = l_pos;
                }
            }
        }
        if (text_end > L.pos) {
            jtok t = {JT_TEXT, L.line, src + L.pos, text_end - L.pos, 0, 0};
            if (push(&L, t)) return lex_err(&L, L.line, "out of memory", NULL);
        }
        L.line += count_nl(src + L.pos, q - L.pos);
        L.pos = q;
        if (!kind) break;
        size_t after = q + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            size_t r = after;
            int found = 0;
            for (; r + 1 < n; r++)
                if (src[r] == '#' && src[r + 1] == '}') {
                    found = 1;
                    break;
                }
            if (!found) return lex_err(&L, L.line, "unterminated comment", NULL);
            int csign = (r > after && (src[r - 1] == '-' || src[r - 1] == '+')) ? src[r - 1] : 0;
            size_t p = r + 2;
            int ended_nl = 0;
            if (csign == '-') {
                while (p < n && ws_at(src + p, n - p)) p += ws_at(src + p, n - p);
                ended_nl = p > r + 2 && src[p - 1] == '\n';
            } else if (csign == 0 && p < n && src[p] == '\n') {
                p++;
                ended_nl = 1;
            }
            L.line += count_nl(src + q, p - q);
            L.pos = p;
            line_starting = ended_nl;
            continue;
        }
        if (kind == '%') {
            int r = try_raw(&L, after);
            if (r < 0) return -1;
            if (r == 1) {
                line_starting = L.pos > 0 && src[L.pos - 1] == '\n';
                continue;
            }
        }
        jtok t = {kind == '{' ? JT_VAR_BEGIN : JT_BLOCK_BEGIN, L.line, src + q, after - q, 0, 0};
        if (push(&L, t)) return lex_err(&L, L.line, "out of memory", NULL);
        L.pos = after;
        if (lex_tag(&L, kind == '{' ? 'v' : 'b', &line_starting)) return -1;
    }
    jtok e = {JT_EOF, L.line, src + n, 0, 0, 0};
    if (push(&L, e)) return lex_err(&L, L.line, "out of memory", NULL);
    *out = L.toks;
    return (int)L.ntok;
}
