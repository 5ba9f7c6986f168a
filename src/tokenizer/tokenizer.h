/* Tokenizer: reads a Hugging Face `tokenizer.json` and encodes / decodes exactly as the `tokenizers`
 * library does (Tokenizer.encode(text, add_special_tokens) and Tokenizer.decode(ids,
 * skip_special_tokens)). Supported: model BPE (merges by rank, ignore_merges, byte_fallback, unk);
 * normalizers NFC/NFKC/NFD/NFKD, Lowercase, Replace, Prepend, Strip, Sequence; pre-tokenizers Split,
 * ByteLevel, Metaspace, Digits, Sequence; added tokens (special or not, lstrip/rstrip/single_word/
 * normalized); post-processors TemplateProcessing, ByteLevel, Sequence; decoders ByteLevel,
 * Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence. Anything else is a load error naming
 * its "type". A loaded tokenizer may be shared by threads (its word cache takes a lock). */
#ifndef MT_TOKENIZER_TOKENIZER_H
#define MT_TOKENIZER_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct mt_tokenizer mt_tokenizer;

/* path: a folder holding tokenizer.json, or the tokenizer.json file itself. */
int mt_tokenizer_load(mt_tokenizer **out, const char *path, mt_err *err);
void mt_tokenizer_free(mt_tokenizer *tok);

/* text: `len` bytes of UTF-8 (invalid UTF-8 is an error). *ids is malloc'd (free() it). */
int mt_tokenizer_encode(mt_tokenizer *tok, const char *text, size_t len, int add_special_tokens,
                        int32_t **ids, size_t *n, mt_err *err);

/* *text is malloc'd, NUL-terminated, *text_len bytes (without the NUL). Unknown ids are skipped, as
 * in the library. */
int mt_tokenizer_decode(const mt_tokenizer *tok, const int32_t *ids, size_t n, int skip_special_tokens,
                        char **text, size_t *text_len, mt_err *err);

/* A token's own bytes: what it adds to a text when decoded inside it, before the repair of invalid
 * UTF-8 (a byte-level token holding part of a character gives that part, not U+FFFD; a Metaspace
 * token's leading space is kept, as it is everywhere but at a text's start), so the bytes of
 * consecutive tokens join into their text. Special tokens give their text. *bytes is malloc'd
 * (NUL-terminated, *len bytes without the NUL); an id with no token is an error. */
int mt_tokenizer_token_bytes(const mt_tokenizer *tok, int32_t id, char **bytes, size_t *len, mt_err *err);

/* -1 when absent. id_to_token returns NULL when absent; the string lives as long as tok (a token
 * holding U+0000, as InternLM2's "\u0000", reads as cut there: mt_tokenizer_token_bytes has all
 * of its bytes). */
int32_t mt_tokenizer_token_to_id(const mt_tokenizer *tok, const char *token);
const char *mt_tokenizer_id_to_token(const mt_tokenizer *tok, int32_t id);
/* One past the largest id of the model vocabulary and the added tokens. */
size_t mt_tokenizer_vocab_size(const mt_tokenizer *tok);
int mt_tokenizer_is_special(const mt_tokenizer *tok, int32_t id);

/* Incremental detokenizer for streaming: feed ids one at a time (or more); each call returns only
 * new complete text (never a trailing partial UTF-8 character). The concatenation of everything
 * returned by feed and then finish equals mt_tokenizer_decode of all the ids, except where an id
 * changes text already returned (a byte-fallback byte can turn the bytes before it into U+FFFD): that
 * text stays as returned and the stream goes on from the first whole character after it. */
typedef struct mt_detok_stream mt_detok_stream;
mt_detok_stream *mt_detok_stream_new(const mt_tokenizer *tok, int skip_special_tokens);
/* *text (malloc'd, NUL-terminated, possibly empty) receives the new text. */
int mt_detok_stream_feed(mt_detok_stream *s, const int32_t *ids, size_t n, char **text, size_t *text_len,
                         mt_err *err);
/* Emits whatever was held back (e.g. a sequence that really ends in invalid UTF-8). */
int mt_detok_stream_finish(mt_detok_stream *s, char **text, size_t *text_len, mt_err *err);
void mt_detok_stream_free(mt_detok_stream *s);

#endif
