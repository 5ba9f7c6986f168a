/* Pre-tokenizers Split, ByteLevel, Metaspace, Digits and Sequence over a list of pieces, as the
 * tokenizers library defines them (tokenizers/src/pre_tokenizers, NormalizedString::split with its
 * SplitDelimiterBehavior). Empty pieces are dropped; added-token pieces pass through untouched. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

void tk_pieces_add(tk_pieces *p, const char *s, size_t len, int32_t id, int origin0) {
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->v = realloc(p->v, p->cap * sizeof *p->v);
        if (!p->v) abort();
    }
    size_t off = p->buf.n;
    tk_buf_put(&p->buf, s, len);
    p->v[p->n++] = (tk_piece){off, len, id, origin0};
}

void tk_pieces_free(tk_pieces *p) {
    tk_buf_free(&p->buf);
    free(p->v);
    memset(p, 0, sizeof *p);
}

/* Applies a split behavior to the segments covering s and appends the kept, non-empty parts. */
static void split_by(tk_seg *m, size_t nm, int behavior, const char *s, int origin0, tk_pieces *out) {
    /* Reduce to a list of (a, b) kept ranges, as NormalizedString::split does. */
    tk_seg *r = malloc((nm ? nm : 1) * sizeof *r);
    size_t nr = 0;
    if (!r) abort();
    int prev = 0;
    switch (behavior) {
    case TK_B_ISOLATED:
        for (size_t i = 0; i < nm; i++) r[nr++] = (tk_seg){m[i].a, m[i].b, 0};
        break;
    case TK_B_REMOVED:
        for (size_t i = 0; i < nm; i++)
            if (!m[i].match) r[nr++] = (tk_seg){m[i].a, m[i].b, 0};
        break;
    case TK_B_CONTIGUOUS:
        for (size_t i = 0; i < nm; i++) {
            if (m[i].match == prev && nr) r[nr - 1].b = m[i].b;
            else r[nr++] = (tk_seg){m[i].a, m[i].b, 0};
            prev = m[i].match;
        }
        break;
    case TK_B_MERGED_PREV:
        for (size_t i = 0; i < nm; i++) {
            if (m[i].match && !prev && nr) r[nr - 1].b = m[i].b;
            else r[nr++] = (tk_seg){m[i].a, m[i].b, 0};
            prev = m[i].match;
        }
        break;
    case TK_B_MERGED_NEXT: /* fold from the right */
        for (size_t k = nm; k-- > 0;) {
            if (m[k].match && !prev && nr) r[nr - 1].a = m[k].a;
            else r[nr++] = (tk_seg){m[k].a, m[k].b, 0};
            prev = m[k].match;
        }
        for (size_t i = 0; i < nr / 2; i++) {
            tk_seg t = r[i];
            r[i] = r[nr - 1 - i], r[nr - 1 - i] = t;
        }
        break;
    }
    for (size_t i = 0; i < nr; i++)
        if (r[i].b > r[i].a) tk_pieces_add(out, s + r[i].a, r[i].b - r[i].a, -1, origin0 && r[i].a == 0);
    free(r);
}

/* Segments where each character satisfying pred (or equal to ch) is its own match. */
static size_t char_find(const char *s, size_t n, int numeric, uint32_t ch, tk_seg **out) {
    tk_seg *v = malloc((2 * n + 2) * sizeof *v);
    size_t nv = 0, last = 0;
    if (!v) abort();
    if (n == 0) {
        v[nv++] = (tk_seg){0, 0, 0};
        *out = v;
        return nv;
    }
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = tk_utf8_dec(s + i, n - i, &cp);
        if (numeric ? tk_is_numeric(cp) : cp == ch) {
            if (last < i) v[nv++] = (tk_seg){last, i, 0};
            v[nv++] = (tk_seg){i, i + (size_t)l, 1};
            last = i + (size_t)l;
        }
        i += (size_t)l;
    }
    if (n > last) v[nv++] = (tk_seg){last, n, 0};
    *out = v;
    return nv;
}

static int one(const tk_pretok *pt, const char *s, size_t n, int origin0, tk_pieces *out, mt_err *err) {
    tk_seg *m;
    size_t nm;
    switch (pt->type) {
    case TK_P_SPLIT:
        nm = tk_pattern_find((tk_pattern *)&pt->pat, s, n, &m, err);
        if (nm == SIZE_MAX) return -1;
        if (pt->invert)
            for (size_t i = 0; i < nm; i++) m[i].match = !m[i].match;
        split_by(m, nm, pt->behavior, s, origin0, out);
        free(m);
        return 0;
    case TK_P_DIGITS:
        nm = char_find(s, n, 1, 0, &m);
        split_by(m, nm, pt->individual ? TK_B_ISOLATED : TK_B_CONTIGUOUS, s, origin0, out);
        free(m);
        return 0;
    case TK_P_METASPACE: {
        tk_buf b = {0};
        tk_buf_put(&b, "", 0);
        /* replace spaces first, then decide on the prefix from the replaced text */
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') tk_buf_put(&b, pt->repl_s, (size_t)pt->repl_len);
            else tk_buf_putc(&b, s[i]);
        }
        int starts = b.n >= (size_t)pt->repl_len && !memcmp(b.p, pt->repl_s, (size_t)pt->repl_len);
        int prepend = !starts && (pt->prepend_scheme == TK_PREPEND_ALWAYS ||
                                  (pt->prepend_scheme == TK_PREPEND_FIRST && origin0));
        tk_buf c = {0};
        tk_buf_put(&c, "", 0);
        if (prepend) tk_buf_put(&c, pt->repl_s, (size_t)pt->repl_len);
        tk_buf_put(&c, b.p, b.n);
        tk_buf_free(&b);
        if (pt->split) {
            nm = char_find(c.p, c.n, 0, pt->repl, &m);
            split_by(m, nm, TK_B_MERGED_NEXT, c.p, origin0, out);
            free(m);
        } else if (c.n) {
            tk_pieces_add(out, c.p, c.n, -1, origin0);
        }
        tk_buf_free(&c);
        return 0;
    }
    case TK_P_BYTELEVEL: {
        const tk_bytelevel *bl = tk_bytelevel_map();
        tk_buf src = {0};
        tk_buf_put(&src, "", 0);
        if (pt->add_prefix_space && !(n && s[0] == ' ')) tk_buf_putc(&src, ' ');
        tk_buf_put(&src, s, n);
        tk_pieces tmp = {0};
        if (pt->use_regex) {
            nm = tk_pattern_find((tk_pattern *)&pt->pat, src.p, src.n, &m, err);
            if (nm == SIZE_MAX) {
                tk_buf_free(&src);
                tk_pieces_free(&tmp);
                return -1;
            }
            split_by(m, nm, TK_B_ISOLATED, src.p, origin0, &tmp);
            free(m);
        } else if (src.n) {
            tk_pieces_add(&tmp, src.p, src.n, -1, origin0);
        }
        tk_buf mapped = {0};
        for (size_t k = 0; k < tmp.n; k++) {
            mapped.n = 0;
            const unsigned char *u = (const unsigned char *)tmp.buf.p + tmp.v[k].off;
            for (size_t i = 0; i < tmp.v[k].len; i++) tk_buf_put(&mapped, bl->enc[u[i]], (size_t)bl->enc_len[u[i]]);
            tk_pieces_add(out, mapped.p, mapped.n, -1, tmp.v[k].origin0);
        }
        tk_buf_free(&mapped);
        tk_buf_free(&src);
        tk_pieces_free(&tmp);
        return 0;
    }
    }
    return mt_errf(err, "internal: unknown pre-tokenizer %d", pt->type);
}

int tk_pretokenize(const tk_pretok *pt, tk_pieces *pieces, mt_err *err) {
    if (pt->type == TK_P_SEQ) {
        for (int i = 0; i < pt->nsub; i++)
            if (tk_pretokenize(&pt->sub[i], pieces, err)) return -1;
        return 0;
    }
    tk_pieces out = {0};
    for (size_t k = 0; k < pieces->n; k++) {
        tk_piece *p = &pieces->v[k];
        const char *s = pieces->buf.p + p->off;
        if (p->id >= 0) {
            tk_pieces_add(&out, s, p->len, p->id, p->origin0);
            continue;
        }
        if (one(pt, s, p->len, p->origin0, &out, err)) {
            tk_pieces_free(&out);
            return -1;
        }
    }
    tk_pieces_free(pieces);
    *pieces = out;
    return 0;
}

void tk_pretok_free(tk_pretok *p) {
    if (!p) return;
    tk_pattern_free(&p->pat);
    for (int i = 0; i < p->nsub; i++) tk_pretok_free(&p->sub[i]);
    free(p->sub);
}
