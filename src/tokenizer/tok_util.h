/* Internal helpers of the tokenizer: growable byte buffers, string and pair hash maps, UTF-8
 * decoding/encoding, lossy UTF-8 repair as Rust's String::from_utf8_lossy, and the Unicode character
 * classes the tokenizers library uses (Rust's char::is_whitespace, char::is_numeric, regex \w). */
#ifndef MT_TOKENIZER_TOK_UTIL_H
#define MT_TOKENIZER_TOK_UTIL_H

#include <stddef.h>
#include <stdint.h>

typedef struct tk_buf {
    char *p;
    size_t n, cap;
} tk_buf;
void tk_buf_put(tk_buf *b, const void *s, size_t n); /* aborts on out-of-memory */
void tk_buf_putc(tk_buf *b, char c);
void tk_buf_free(tk_buf *b);

/* Open-addressing map from byte strings to int32; keys are copied. */
typedef struct tk_strmap {
    char **keys;
    uint32_t *klen;
    int32_t *vals;
    size_t cap, n;
} tk_strmap;
void tk_strmap_put(tk_strmap *m, const char *k, size_t klen, int32_t v); /* replaces */
int32_t tk_strmap_get(const tk_strmap *m, const char *k, size_t klen);   /* -1 when absent */
void tk_strmap_free(tk_strmap *m);

/* Map from a pair of ids to (rank, new id). */
typedef struct tk_pairmap {
    uint64_t *keys; /* 0 = empty; key = ((a+1) << 32) | (b+1) */
    int32_t *rank, *nid;
    size_t cap, n;
} tk_pairmap;
void tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t nid);
int tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *nid);
void tk_pairmap_free(tk_pairmap *m);

/* Decodes the character at s (valid UTF-8 assumed); returns its length. */
int tk_utf8_dec(const char *s, size_t n, uint32_t *cp);
int tk_utf8_enc(uint32_t cp, char *out);
/* Length of the valid UTF-8 prefix of s. */
size_t tk_utf8_valid_prefix(const char *s, size_t n);
/* Appends s to b, replacing invalid sequences with U+FFFD as String::from_utf8_lossy does. */
void tk_utf8_lossy(tk_buf *b, const char *s, size_t n);

/* Whether cp is in one of the n ascending, disjoint inclusive ranges r (binary search). */
int tk_in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp);
int tk_is_whitespace(uint32_t cp); /* Unicode White_Space */
/* The library's own Unicode sets and mappings (unicode_lib_tables.h, generated from the library),
 * where utf8proc's differ: Nd, Nl, No as Rust's char::is_numeric has them; the word characters of
 * single_word (alphabetic, marks, Nd, Pc, joiners); the code points its normalizers leave alone as
 * starters (its tables are older); the lowercase of cp as its Lowercase normalizer makes it (UTF-8;
 * NULL when cp is unchanged). */
int tk_is_numeric(uint32_t cp);
int tk_is_word(uint32_t cp);
int tk_norm_excluded_cp(uint32_t cp);
const char *tk_lower_of(uint32_t cp);

/* The ByteLevel (GPT-2) byte <-> char map: printable bytes map to themselves, the others to U+0100
 * onwards. Built once, thread-safe. */
typedef struct tk_bytelevel {
    char enc[256][3]; /* UTF-8 of the char for each byte */
    int enc_len[256];
    int16_t dec[512]; /* char -> byte, -1 when the char is not in the map */
} tk_bytelevel;
const tk_bytelevel *tk_bytelevel_map(void);

#endif
