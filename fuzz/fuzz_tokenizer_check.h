/* Properties of a loaded tokenizer on one text, shared by the tokenizer fuzz targets: encoding
 * either succeeds with ids inside the vocabulary or fails with a message; decoding those ids
 * succeeds; the streaming detokenizer fed one id at a time produces exactly what decode does, unless
 * an id rewrote text it had returned (a byte-fallback byte turning the bytes before it into U+FFFD,
 * so only when the decoded text has some). */
#ifndef MT_FUZZ_TOKENIZER_CHECK_H
#define MT_FUZZ_TOKENIZER_CHECK_H

#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

/* The stream's text of ids fed one by one, then finish (malloc'd). */
static inline char *fuzz_stream_text(const mt_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                                     size_t *len) {
    mt_detok_stream *s = mt_detok_stream_new(tok, skip_special);
    char *all = calloc(1, 1), *piece = NULL;
    size_t piece_len = 0;
    mt_err err = {{0}};
    FUZZ_CHECK(s && all);
    *len = 0;
    for (size_t i = 0; i <= n; i++) {
        int rc = i < n ? mt_detok_stream_feed(s, ids + i, 1, &piece, &piece_len, &err)
                       : mt_detok_stream_finish(s, &piece, &piece_len, &err);
        FUZZ_CHECK(rc == 0 && strlen(piece) <= piece_len);
        all = realloc(all, *len + piece_len + 1);
        FUZZ_CHECK(all != NULL);
        memcpy(all + *len, piece, piece_len + 1);
        *len += piece_len;
        free(piece);
    }
    mt_detok_stream_free(s);
    return all;
}

/* Decodes ids at once and through a detok stream; both must agree. */
static inline void fuzz_check_decode(const mt_tokenizer *tok, const int32_t *ids, size_t n, int skip_special) {
    char *text = NULL;
    size_t len = 0, stream_len = 0;
    mt_err err = {{0}};
    FUZZ_CHECK(mt_tokenizer_decode(tok, ids, n, skip_special, &text, &len, &err) == 0);
    FUZZ_CHECK(strlen(text) <= len);
    char *streamed = fuzz_stream_text(tok, ids, n, skip_special, &stream_len);
    FUZZ_CHECK((stream_len == len && memcmp(streamed, text, len) == 0) || memmem(text, len, "\xEF\xBF\xBD", 3));
    free(streamed);
    free(text);
}

/* Encodes text (add_special: with the post-processor's special tokens) and decodes the result. */
static inline void fuzz_check_text(mt_tokenizer *tok, const char *text, size_t len, int add_special) {
    int32_t *ids = NULL;
    size_t n = 0;
    mt_err err = {{0}};
    if (mt_tokenizer_encode(tok, text, len, add_special, &ids, &n, &err) != 0) {
        FUZZ_CHECK(err.msg[0] != '\0');
        return;
    }
    size_t vocab = mt_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && (size_t)ids[i] < vocab);
    fuzz_check_decode(tok, ids, n, 0);
    fuzz_check_decode(tok, ids, n, 1);
    free(ids);
}

#endif
