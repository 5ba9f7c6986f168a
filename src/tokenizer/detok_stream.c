/* Incremental detokenizer: the algorithm of the tokenizers library's DecodeStream
 * (tokenizers/src/tokenizer/mod.rs, step_decode_stream): keep a window of ids and the text of its
 * already-emitted prefix; after each new id, decode the window and emit what extends the prefix
 * unless it ends in U+FFFD (an incomplete character). finish() emits what was held back. Where the
 * library's stream fails for good once an id rewrote emitted text, this one goes on (resume_at).
 * A decoder that strips the end of a text (Strip with stop > 0) drops characters at the end of a
 * window that later ids make inner ones; for those the window keeps every id (the whole text is
 * decoded at each step), so each text extends the one before and nothing is lost. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

struct mt_detok_stream {
    const mt_tokenizer *tok;
    int skip;
    int keep_all;   /* the window never drops ids (tk_decoder_strips_end) */
    int32_t *ids;
    size_t n, cap;
    char *prefix;
    size_t prefix_len, prefix_index;
};

mt_detok_stream *mt_detok_stream_new(const mt_tokenizer *tok, int skip_special_tokens) {
    mt_detok_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->tok = tok, s->skip = skip_special_tokens;
    s->keep_all = tk_decoder_strips_end(tok->dec);
    s->prefix = calloc(1, 1);
    return s;
}

static int ends_fffd(const char *t, size_t n) { return n >= 3 && !memcmp(t + n - 3, "\xEF\xBF\xBD", 3); }

static int empty(char **text, size_t *len) {
    *text = calloc(1, 1);
    *len = 0;
    return *text ? 0 : -1;
}

/* Where the new text of window decode t starts: after the emitted prefix; when the new ids rewrote
 * that prefix (a byte-fallback byte can turn the bytes before it into U+FFFD), what was emitted can
 * not be taken back, so the text goes on from the first whole character past its length. */
static size_t resume_at(const mt_detok_stream *s, const char *t, size_t tl) {
    size_t from = s->prefix_len;
    if (memcmp(t, s->prefix, s->prefix_len))
        while (from < tl && ((unsigned char)t[from] & 0xC0) == 0x80) from++;
    return from;
}

static int step(mt_detok_stream *s, int32_t id, tk_buf *out, mt_err *err) {
    char *t;
    size_t tl;
    if (s->prefix_len == 0 && s->n) {
        if (mt_tokenizer_decode(s->tok, s->ids, s->n, s->skip, &t, &tl, err)) return -1;
        if (!ends_fffd(t, tl)) {
            free(s->prefix);
            s->prefix = t, s->prefix_len = tl, s->prefix_index = s->n;
        } else {
            free(t);
        }
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->ids = realloc(s->ids, s->cap * sizeof *s->ids);
        if (!s->ids) abort();
    }
    s->ids[s->n++] = id;
    if (mt_tokenizer_decode(s->tok, s->ids, s->n, s->skip, &t, &tl, err)) return -1;
    if (tl > s->prefix_len && !ends_fffd(t, tl)) {
        size_t from = resume_at(s, t, tl);
        tk_buf_put(out, t + from, tl - from);
        if (s->keep_all) {   // the whole text so far is the prefix
            free(s->prefix);
            s->prefix = t, s->prefix_len = tl, s->prefix_index = 0;
            return 0;
        }
        free(t);
        size_t new_index = s->n - s->prefix_index;
        memmove(s->ids, s->ids + s->prefix_index, new_index * sizeof *s->ids);
        s->n = new_index;
        free(s->prefix);
        if (mt_tokenizer_decode(s->tok, s->ids, s->n, s->skip, &s->prefix, &s->prefix_len, err)) {
            s->prefix = calloc(1, 1), s->prefix_len = 0;
            return -1;
        }
        s->prefix_index = new_index;
    } else {
        free(t);
    }
    return 0;
}

int mt_detok_stream_feed(mt_detok_stream *s, const int32_t *ids, size_t n, char **text, size_t *text_len,
                         mt_err *err) {
    tk_buf out = {0};
    tk_buf_put(&out, "", 0);
    for (size_t i = 0; i < n; i++)
        if (step(s, ids[i], &out, err)) {
            tk_buf_free(&out);
            return -1;
        }
    *text = out.p, *text_len = out.n;
    return 0;
}

int mt_detok_stream_finish(mt_detok_stream *s, char **text, size_t *text_len, mt_err *err) {
    char *t;
    size_t tl;
    if (!s->n) return empty(text, text_len);
    if (mt_tokenizer_decode(s->tok, s->ids, s->n, s->skip, &t, &tl, err)) return -1;
    if (tl > s->prefix_len) {
        size_t from = resume_at(s, t, tl);
        memmove(t, t + from, tl - from + 1);
        *text = t, *text_len = tl - from;
    } else {
        free(t);
        if (empty(text, text_len)) return -1;
    }
    s->n = 0, s->prefix_index = 0;
    free(s->prefix);
    s->prefix = calloc(1, 1), s->prefix_len = 0;
    return 0;
}

void mt_detok_stream_free(mt_detok_stream *s) {
    if (!s) return;
    free(s->ids);
    free(s->prefix);
    free(s);
}
