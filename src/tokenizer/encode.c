/* The encoding pipeline of Tokenizer.encode (tokenizers/src/tokenizer/mod.rs): split on
 * non-normalized added tokens, normalize each remaining piece and split it on normalized added
 * tokens, pre-tokenize, BPE each word, then the post-processor when add_special_tokens. Also
 * decode (ids -> token strings -> decoders) and the lookups of tokenizer.h. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

static void push(int32_t **ids, size_t *n, size_t *cap, int32_t id) {
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *ids = realloc(*ids, *cap * sizeof **ids);
        if (!*ids) abort();
    }
    (*ids)[(*n)++] = id;
}

static void post_process(const tk_post *pp, int32_t **ids, size_t *n, size_t *cap) {
    if (pp->type == TK_PP_SEQ) {
        for (int i = 0; i < pp->nsub; i++) post_process(&pp->sub[i], ids, n, cap);
        return;
    }
    if (pp->type != TK_PP_TEMPLATE) return; /* ByteLevel: offsets only */
    int32_t *seq = *ids;
    size_t ns = *n;
    int32_t *out = NULL;
    size_t no = 0, co = 0;
    for (int i = 0; i < pp->nitems; i++) {
        const tk_tmpl_item *it = &pp->items[i];
        if (it->is_seq)
            for (size_t k = 0; k < ns; k++) push(&out, &no, &co, seq[k]);
        else
            for (size_t k = 0; k < it->nids; k++) push(&out, &no, &co, it->ids[k]);
    }
    free(seq);
    *ids = out, *n = no, *cap = co;
}

int mt_tokenizer_encode(mt_tokenizer *tok, const char *text, size_t len, int add_special_tokens, int32_t **ids_out,
                        size_t *n_out, mt_err *err) {
    *ids_out = NULL, *n_out = 0;
    size_t valid = tk_utf8_valid_prefix(text, len);
    if (valid != len) return mt_errf(err, "tokenize: input is not valid UTF-8 (byte offset %zu)", valid);
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    tk_pieces raw = {0};
    tk_added_split(tok, &tok->trie_raw, text, len, 1, &raw);
    tk_buf normed = {0};
    for (size_t r = 0; r < raw.n; r++) {
        tk_piece *p = &raw.v[r];
        const char *s = raw.buf.p + p->off;
        if (p->id >= 0) {
            push(&ids, &n, &cap, p->id);
            continue;
        }
        normed.n = 0;
        tk_buf_put(&normed, "", 0);
        if (tok->norm) {
            if (tk_normalize(tok->norm, s, p->len, &normed, err)) goto fail;
        } else {
            tk_buf_put(&normed, s, p->len);
        }
        tk_pieces pieces = {0};
        tk_added_split(tok, &tok->trie_norm, normed.p, normed.n, p->origin0, &pieces);
        if (tok->pretok && tk_pretokenize(tok->pretok, &pieces, err)) {
            tk_pieces_free(&pieces);
            goto fail;
        }
        for (size_t k = 0; k < pieces.n; k++) {
            tk_piece *q = &pieces.v[k];
            if (q->id >= 0) {
                push(&ids, &n, &cap, q->id);
            } else if (tk_bpe_encode_word(&tok->bpe, pieces.buf.p + q->off, q->len, &ids, &n, &cap, err)) {
                tk_pieces_free(&pieces);
                goto fail;
            }
        }
        tk_pieces_free(&pieces);
    }
    tk_buf_free(&normed);
    tk_pieces_free(&raw);
    if (add_special_tokens && tok->post) post_process(tok->post, &ids, &n, &cap);
    if (!ids) ids = malloc(sizeof *ids);
    *ids_out = ids, *n_out = n;
    return 0;
fail:
    tk_buf_free(&normed);
    tk_pieces_free(&raw);
    free(ids);
    return -1;
}

int mt_tokenizer_decode(const mt_tokenizer *tok, const int32_t *ids, size_t n, int skip_special_tokens, char **text,
                        size_t *text_len, mt_err *err) {
    char **toks = malloc((n ? n : 1) * sizeof *toks);
    size_t *lens = malloc((n ? n : 1) * sizeof *lens), k = 0;
    if (!toks || !lens) abort();
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= tok->vocab_size || !tok->id_tok[ids[i]]) continue;
        const char *s = tok->id_tok[ids[i]];
        size_t l = tok->id_tok_len[ids[i]];
        if (skip_special_tokens && tk_strmap_get(&tok->special_set, s, l) >= 0) continue;
        toks[k] = (char *)s, lens[k] = l, k++;
    }
    tk_buf out = {0};
    int rc = tk_decode_tokens(tok->dec, toks, lens, k, &out, err);
    free(toks), free(lens);
    if (rc) {
        tk_buf_free(&out);
        return -1;
    }
    *text = out.p, *text_len = out.n;
    return 0;
}

int mt_tokenizer_token_bytes(const mt_tokenizer *tok, int32_t id, char **bytes, size_t *len, mt_err *err) {
    if (id < 0 || (size_t)id >= tok->vocab_size || !tok->id_tok[id])
        return mt_errf(err, "token id %d is not in the vocabulary", id);
    tk_buf out = {0};
    tk_decode_token_bytes(tok->dec, tok->id_tok[id], tok->id_tok_len[id], &out);
    *bytes = out.p, *len = out.n;
    return 0;
}

int32_t mt_tokenizer_token_to_id(const mt_tokenizer *tok, const char *token) {
    size_t l = strlen(token);
    int32_t id = tk_strmap_get(&tok->added_map, token, l);
    return id >= 0 ? id : tk_strmap_get(&tok->bpe.vocab, token, l);
}

const char *mt_tokenizer_id_to_token(const mt_tokenizer *tok, int32_t id) {
    if (id < 0 || (size_t)id >= tok->vocab_size) return NULL;
    return tok->id_tok[id];
}

size_t mt_tokenizer_vocab_size(const mt_tokenizer *tok) { return tok->vocab_size; }

int mt_tokenizer_is_special(const mt_tokenizer *tok, int32_t id) {
    const char *s = mt_tokenizer_id_to_token(tok, id);
    return s && tk_strmap_get(&tok->special_set, s, tok->id_tok_len[id]) >= 0;
}
