/* Decoders ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace and Sequence as the tokenizers
 * library defines them (tokenizers/src/decoders, Decoder::decode = decode_chain then concatenation). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

typedef struct tlist {
    char **s;
    size_t *n;
    size_t len, cap;
} tlist;

static void tl_add(tlist *t, const char *s, size_t n) {
    if (t->len == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->s = realloc(t->s, t->cap * sizeof *t->s);
        t->n = realloc(t->n, t->cap * sizeof *t->n);
        if (!t->s || !t->n) abort();
    }
    char *c = malloc(n + 1);
    if (!c) abort();
    memcpy(c, s, n);
    c[n] = 0;
    t->s[t->len] = c, t->n[t->len] = n;
    t->len++;
}

static void tl_free(tlist *t) {
    for (size_t i = 0; i < t->len; i++) free(t->s[i]);
    free(t->s), free(t->n);
    memset(t, 0, sizeof *t);
}

static int byte_of_char(uint32_t cp) { /* inverse of the ByteLevel map, -1 when not in it */
    return cp < 512 ? tk_bytelevel_map()->dec[cp] : -1;
}

/* raw_bytes: one token's own bytes as it stands inside a text: bytes that do not form UTF-8 are kept
 * as they are (not made U+FFFD), Metaspace's replacement is a space even in first place, and Strip
 * strips nothing (it trims the whole text's ends). */
static void chain(const tk_decoder *d, tlist *in, tlist *out, int raw_bytes) {
    tk_buf b = {0};
    tk_buf_put(&b, "", 0);
    switch (d->type) {
    case TK_D_BYTELEVEL: {
        tk_buf raw = {0};
        tk_buf_put(&raw, "", 0);
        for (size_t t = 0; t < in->len; t++) {
            size_t start = raw.n;
            int ok = 1;
            for (size_t i = 0; i < in->n[t];) {
                uint32_t cp;
                i += (size_t)tk_utf8_dec(in->s[t] + i, in->n[t] - i, &cp);
                int by = byte_of_char(cp);
                if (by < 0) {
                    ok = 0;
                    break;
                }
                tk_buf_putc(&raw, (char)by);
            }
            if (!ok) {
                raw.n = start;
                tk_buf_put(&raw, in->s[t], in->n[t]);
            }
        }
        if (!raw_bytes) {
            tk_utf8_lossy(&b, raw.p, raw.n);
            tl_add(out, b.p, b.n);
        } else {
            tl_add(out, raw.p, raw.n);
        }
        tk_buf_free(&raw);
        break;
    }
    case TK_D_METASPACE:
        for (size_t t = 0; t < in->len; t++) {
            b.n = 0;
            for (size_t i = 0; i < in->n[t];) {
                uint32_t cp;
                int l = tk_utf8_dec(in->s[t] + i, in->n[t] - i, &cp);
                if (cp == d->ch) {
                    if (raw_bytes || !(t == 0 && d->prepend_scheme != TK_PREPEND_NEVER)) tk_buf_putc(&b, ' ');
                } else {
                    tk_buf_put(&b, in->s[t] + i, (size_t)l);
                }
                i += (size_t)l;
            }
            tl_add(out, b.p, b.n);
        }
        break;
    case TK_D_BYTEFALLBACK: {
        tk_buf bytes = {0};
        for (size_t t = 0; t <= in->len; t++) {
            const char *s = t < in->len ? in->s[t] : NULL;
            int byte = -1;
            if (s && in->n[t] == 6 && !memcmp(s, "<0x", 3) && s[5] == '>') {
                char hex[3] = {s[3], s[4], 0}, *end;
                long v = strtol(hex, &end, 16);
                if (*end == 0 && hex[0] != '-' && hex[0] != ' ') byte = (int)v;
            }
            if (byte >= 0) {
                tk_buf_putc(&bytes, (char)byte);
                continue;
            }
            if (bytes.n) {
                if (raw_bytes || tk_utf8_valid_prefix(bytes.p, bytes.n) == bytes.n) {
                    tl_add(out, bytes.p, bytes.n);
                } else {
                    for (size_t k = 0; k < bytes.n; k++) tl_add(out, "\xEF\xBF\xBD", 3);
                }
                bytes.n = 0;
            }
            if (s) tl_add(out, s, in->n[t]);
        }
        tk_buf_free(&bytes);
        break;
    }
    case TK_D_FUSE:
        for (size_t t = 0; t < in->len; t++) tk_buf_put(&b, in->s[t], in->n[t]);
        tl_add(out, b.p, b.n);
        break;
    case TK_D_STRIP:
        for (size_t t = 0; t < in->len && raw_bytes; t++) tl_add(out, in->s[t], in->n[t]);
        for (size_t t = 0; t < in->len && !raw_bytes; t++) {
            const char *s = in->s[t];
            size_t a = 0, e = in->n[t];
            for (int k = 0; k < d->start && a < e; k++) {
                uint32_t cp;
                int l = tk_utf8_dec(s + a, e - a, &cp);
                if (cp != d->ch) break;
                a += (size_t)l;
            }
            for (int k = 0; k < d->stop && e > a; k++) {
                size_t j = e - 1;
                while (j > a && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
                uint32_t cp;
                tk_utf8_dec(s + j, e - j, &cp);
                if (cp != d->ch) break;
                e = j;
            }
            tl_add(out, s + a, e - a);
        }
        break;
    case TK_D_REPLACE:
        for (size_t t = 0; t < in->len; t++) {
            if (raw_bytes && tk_utf8_valid_prefix(in->s[t], in->n[t]) != in->n[t]) { /* a piece of a character */
                tl_add(out, in->s[t], in->n[t]);
                continue;
            }
            tk_seg *segs; /* (no error channel here: a failed match leaves the rest as it is) */
            size_t ns = tk_pattern_find((tk_pattern *)&d->pat, in->s[t], in->n[t], &segs, NULL);
            b.n = 0;
            for (size_t i = 0; i < ns; i++) {
                if (segs[i].match) tk_buf_put(&b, d->content, d->content_len);
                else tk_buf_put(&b, in->s[t] + segs[i].a, segs[i].b - segs[i].a);
            }
            free(segs);
            tl_add(out, b.p, b.n);
        }
        break;
    case TK_D_SEQ: {
        tlist cur = {0};
        for (size_t t = 0; t < in->len; t++) tl_add(&cur, in->s[t], in->n[t]);
        for (int k = 0; k < d->nsub; k++) {
            tlist nxt = {0};
            chain(&d->sub[k], &cur, &nxt, raw_bytes);
            tl_free(&cur);
            cur = nxt;
        }
        for (size_t t = 0; t < cur.len; t++) tl_add(out, cur.s[t], cur.n[t]);
        tl_free(&cur);
        break;
    }
    }
    tk_buf_free(&b);
}

int tk_decode_tokens(const tk_decoder *d, char **toks, size_t *lens, size_t n, tk_buf *out, mt_err *err) {
    (void)err;
    tk_buf_put(out, "", 0);
    if (!d) {
        for (size_t i = 0; i < n; i++) {
            if (i) tk_buf_putc(out, ' ');
            tk_buf_put(out, toks[i], lens[i]);
        }
        return 0;
    }
    tlist in = {toks, lens, n, n}, res = {0};
    chain(d, &in, &res, 0);
    for (size_t i = 0; i < res.len; i++) tk_buf_put(out, res.s[i], res.n[i]);
    tl_free(&res);
    return 0;
}

void tk_decode_token_bytes(const tk_decoder *d, const char *token, size_t len, tk_buf *out) {
    tk_buf_put(out, "", 0);
    if (!d) {
        tk_buf_put(out, token, len);
        return;
    }
    char *toks[1] = {(char *)token};
    size_t lens[1] = {len};
    tlist in = {toks, lens, 1, 1}, res = {0};
    chain(d, &in, &res, 1);
    for (size_t i = 0; i < res.len; i++) tk_buf_put(out, res.s[i], res.n[i]);
    tl_free(&res);
}

int tk_decoder_strips_end(const tk_decoder *d) {
    if (!d) return 0;
    if (d->type == TK_D_STRIP && d->stop > 0) return 1;
    for (int i = 0; i < d->nsub; i++)
        if (tk_decoder_strips_end(&d->sub[i])) return 1;
    return 0;
}

void tk_decoder_free(tk_decoder *d) {
    if (!d) return;
    tk_pattern_free(&d->pat);
    free(d->content);
    for (int i = 0; i < d->nsub; i++) tk_decoder_free(&d->sub[i]);
    free(d->sub);
}
