/* Added tokens: splitting text on them as the tokenizers library's AddedVocabulary does
 * (tokenizers/src/tokenizer/added_vocabulary.rs): leftmost-longest, non-overlapping matches; a
 * single_word token must not touch a word character (\w) on either side; lstrip / rstrip widen the
 * match over whitespace on its left (not past the previous match) / right. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

static int32_t trie_node(tk_trie *t) {
    if (t->nnodes == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->val = realloc(t->val, (size_t)t->cap * sizeof *t->val);
        if (!t->val) abort();
    }
    t->val[t->nnodes] = -1;
    return t->nnodes++;
}

void tk_trie_add(tk_trie *t, const char *s, size_t n, int32_t val) {
    if (!t->nnodes) trie_node(t);
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t child, unused;
        if (!tk_pairmap_get(&t->edges, node, (unsigned char)s[i], &child, &unused)) {
            child = trie_node(t);
            tk_pairmap_put(&t->edges, node, (unsigned char)s[i], child, 0);
        }
        node = child;
    }
    t->val[node] = val;
}

void tk_trie_free(tk_trie *t) {
    tk_pairmap_free(&t->edges);
    free(t->val);
    memset(t, 0, sizeof *t);
}

/* Longest match starting at s[i]: returns its length (0 if none) and the value. */
static size_t trie_longest(const tk_trie *t, const char *s, size_t n, size_t i, int32_t *val) {
    int32_t node = 0;
    size_t best = 0;
    for (size_t k = i; k < n; k++) {
        int32_t child, unused;
        if (!tk_pairmap_get(&t->edges, node, (unsigned char)s[k], &child, &unused)) break;
        node = child;
        if (t->val[node] >= 0) best = k + 1 - i, *val = t->val[node];
    }
    return best;
}

static uint32_t char_before(const char *s, size_t i) {
    size_t k = i - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    uint32_t cp;
    tk_utf8_dec(s + k, i - k, &cp);
    return cp;
}

void tk_added_split(const mt_tokenizer *tok, const tk_trie *t, const char *s, size_t n, int origin0, tk_pieces *out) {
    size_t start_offset = 0;
    if (t->nnodes == 0 || n == 0) {
        if (n) tk_pieces_add(out, s, n, -1, origin0);
        return;
    }
    size_t i = 0;
    while (i < n) {
        int32_t ai = -1;
        size_t len = trie_longest(t, s, n, i, &ai);
        if (!len) {
            i++;
            continue;
        }
        size_t start = i, stop = i + len;
        i = stop; /* the next search resumes after this match, kept or not */
        const tk_added *a = &tok->added[ai];
        if (a->single_word) {
            uint32_t cp;
            int start_space = start == 0 || !tk_is_word(char_before(s, start));
            int stop_space = stop == n || (tk_utf8_dec(s + stop, n - stop, &cp), !tk_is_word(cp));
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t k = ns - 1;
                while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
                uint32_t cp;
                tk_utf8_dec(s + k, ns - k, &cp);
                if (!tk_is_whitespace(cp)) break;
                ns = k;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                uint32_t cp;
                int l = tk_utf8_dec(s + stop, n - stop, &cp);
                if (!tk_is_whitespace(cp)) break;
                stop += (size_t)l;
            }
        }
        if (start_offset < start) tk_pieces_add(out, s + start_offset, start - start_offset, -1, origin0 && start_offset == 0);
        tk_pieces_add(out, s + start, stop - start, a->id, origin0 && start == 0);
        start_offset = stop;
    }
    if (start_offset < n) tk_pieces_add(out, s + start_offset, n - start_offset, -1, origin0 && start_offset == 0);
}
