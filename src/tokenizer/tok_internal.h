/* Internal representation of a loaded tokenizer.json (see tokenizer.h), shared by the loader,
 * the encoding pipeline stages and the decoders. Semantics follow the Hugging Face `tokenizers`
 * library (tokenizers/src: normalizers, pre_tokenizers, models/bpe, tokenizer/added_vocabulary.rs,
 * processors, decoders), read for facts. */
#ifndef MT_TOKENIZER_TOK_INTERNAL_H
#define MT_TOKENIZER_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tok_util.h"
#include "tokenizer/tokenizer.h"

/* How regexes are compiled: UTF-8, Unicode classes, and no \C (one byte inside a character; the
 * library's engine refuses a bare \C too, and reads \C-x as a control character, refused here). */
#define TK_PCRE2_OPTIONS (PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C)

/* A Replace / Split pattern: {"String": s} (literal) or {"Regex": r}: re is r translated for PCRE2
 * (regex_unicode.h); re_written, when not NULL, is r as written, which matches the same on texts
 * without a code point tk_regex_has_changed finds. */
typedef struct tk_pattern {
    char *lit; /* literal when re == NULL */
    size_t lit_len;
    pcre2_code *re, *re_written;
} tk_pattern;
int tk_pattern_parse(tk_pattern *p, const void *cjson, const char *where, mt_err *err);
void tk_pattern_free(tk_pattern *p);
/* Finds the matches of p in s[0..n) (valid UTF-8) as the library's find_matches does: a cover of
 * [0, n) by segments (start, end, is_match). Returns the number of segments written into *segs
 * (malloc'd), or SIZE_MAX with err set when PCRE2 fails (its match limit); with err NULL the rest of
 * the text is then one segment without a match. */
typedef struct tk_seg {
    size_t a, b;
    int match;
} tk_seg;
size_t tk_pattern_find(tk_pattern *p, const char *s, size_t n, tk_seg **segs, mt_err *err);

enum { TK_N_NFC, TK_N_NFKC, TK_N_NFD, TK_N_NFKD, TK_N_LOWER, TK_N_REPLACE, TK_N_PREPEND, TK_N_STRIP, TK_N_SEQ };
typedef struct tk_norm {
    int type;
    tk_pattern pat;
    char *content; /* Replace content, Prepend string */
    size_t content_len;
    int left, right; /* Strip */
    struct tk_norm *sub;
    int nsub;
} tk_norm;

enum { TK_B_REMOVED, TK_B_ISOLATED, TK_B_MERGED_PREV, TK_B_MERGED_NEXT, TK_B_CONTIGUOUS };
enum { TK_P_SPLIT, TK_P_BYTELEVEL, TK_P_METASPACE, TK_P_DIGITS, TK_P_SEQ };
enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER };
typedef struct tk_pretok {
    int type;
    tk_pattern pat; /* Split; ByteLevel's GPT-2 regex when use_regex */
    int behavior, invert;
    int add_prefix_space, use_regex;
    uint32_t repl; /* Metaspace */
    char repl_s[5];
    int repl_len, prepend_scheme, split;
    int individual; /* Digits */
    struct tk_pretok *sub;
    int nsub;
} tk_pretok;

enum { TK_D_BYTELEVEL, TK_D_METASPACE, TK_D_BYTEFALLBACK, TK_D_FUSE, TK_D_STRIP, TK_D_REPLACE, TK_D_SEQ };
typedef struct tk_decoder {
    int type;
    uint32_t ch; /* Metaspace replacement, Strip content */
    int prepend_scheme;
    int start, stop;
    tk_pattern pat;
    char *content;
    size_t content_len;
    struct tk_decoder *sub;
    int nsub;
} tk_decoder;

enum { TK_PP_TEMPLATE, TK_PP_BYTELEVEL, TK_PP_SEQ };
typedef struct tk_tmpl_item {
    int is_seq;  /* $A (type ids and $B ignored: single sequences only) */
    int32_t *ids; /* ids of the special token */
    size_t nids;
} tk_tmpl_item;
typedef struct tk_post {
    int type;
    tk_tmpl_item *items;
    int nitems;
    struct tk_post *sub;
    int nsub;
} tk_post;

typedef struct tk_bpe {
    tk_strmap vocab;
    char **tok; /* by id; NULL when absent */
    uint32_t *tok_len;
    int32_t ntok;
    tk_pairmap merges;
    int32_t unk_id;
    int byte_fallback, fuse_unk, ignore_merges;
    char *cont_prefix, *end_suffix; /* NULL or non-empty */
    int32_t byte_id[256];
    /* Word cache: word -> slice of cache_ids, guarded by cache_lock. */
    pthread_mutex_t cache_lock;
    tk_strmap cache;
    int32_t *cache_ids;
    size_t cache_n, cache_cap;
} tk_bpe;

typedef struct tk_added {
    char *content;
    size_t len;
    char *norm; /* normalized form when normalized and different, else NULL */
    size_t norm_len;
    int32_t id;
    int special, lstrip, rstrip, single_word, normalized;
} tk_added;

/* Byte trie for leftmost-longest matching of added tokens. */
typedef struct tk_trie {
    tk_pairmap edges; /* (node, byte) -> child */
    int32_t *val;      /* node -> added index or -1 */
    int32_t nnodes, cap;
} tk_trie;

struct mt_tokenizer {
    tk_norm *norm;
    tk_pretok *pretok;
    tk_bpe bpe;
    tk_post *post;
    tk_decoder *dec;
    tk_added *added;
    int nadded;
    tk_trie trie_raw, trie_norm;
    tk_strmap added_map;   /* content -> id */
    tk_strmap special_set; /* content -> 1 */
    const char **id_tok;   /* id -> token string as decode sees it (added override) */
    uint32_t *id_tok_len;
    size_t vocab_size;
};

/* Pieces of text flowing through the pipeline; id >= 0 marks an added token (not split further). */
typedef struct tk_piece {
    size_t off, len;
    int32_t id;
    int origin0; /* starts at offset 0 of the original text (Metaspace prepend_scheme "first") */
} tk_piece;
typedef struct tk_pieces {
    tk_buf buf;
    tk_piece *v;
    size_t n, cap;
} tk_pieces;
void tk_pieces_add(tk_pieces *p, const char *s, size_t len, int32_t id, int origin0);
void tk_pieces_free(tk_pieces *p);

int tk_normalize(const tk_norm *n, const char *s, size_t len, tk_buf *out, mt_err *err);
int tk_pretokenize(const tk_pretok *pt, tk_pieces *pieces, mt_err *err); /* in place */
int tk_bpe_encode_word(tk_bpe *m, const char *w, size_t n, int32_t **ids, size_t *nids, size_t *cap, mt_err *err);
/* Splits the piece s on added tokens of trie t (leftmost-longest, lstrip/rstrip/single_word). */
void tk_added_split(const mt_tokenizer *tok, const tk_trie *t, const char *s, size_t n, int origin0,
                    tk_pieces *out);
void tk_trie_add(tk_trie *t, const char *s, size_t n, int32_t val);
void tk_trie_free(tk_trie *t);
/* Decoders over a list of token strings; the result is their final join. */
int tk_decode_tokens(const tk_decoder *d, char **toks, size_t *lens, size_t n, tk_buf *out, mt_err *err);
/* One token string's own bytes (mt_tokenizer_token_bytes) into out. */
void tk_decode_token_bytes(const tk_decoder *d, const char *token, size_t len, tk_buf *out);
/* Whether d strips characters from the end of a text (a Strip with stop > 0): then the text of some
 * ids is not a prefix of the text of those ids followed by more. */
int tk_decoder_strips_end(const tk_decoder *d);

int tk_load_json(mt_tokenizer *tok, const char *json, size_t len, const char *path, mt_err *err);
void tk_norm_free(tk_norm *n);
void tk_pretok_free(tk_pretok *p);
void tk_decoder_free(tk_decoder *d);
void tk_post_free(tk_post *p);

#endif
