/* BPE model as the tokenizers library defines it (tokenizers/src/models/bpe/model.rs, word.rs):
 * characters -> ids (unknown ones through byte_fallback <0xNN> tokens or a fused/unfused unk),
 * then merges applied lowest rank first (ties: leftmost) with a binary heap, O(n log n) per word.
 * With ignore_merges a word found whole in the vocabulary is one token. Words shorter than
 * CACHE_MAX_WORD bytes are cached. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

#define CACHE_MAX_WORD 256
#define CACHE_MAX_ENTRIES 200000

typedef struct sym {
    int32_t id, prev, next, len;
} sym;
typedef struct hent {
    int32_t rank, pos, nid;
} hent;

static int hless(const hent *a, const hent *b) { return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos; }

static void hpush(hent *h, size_t *n, hent e) {
    size_t i = (*n)++;
    h[i] = e;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!hless(&h[i], &h[p])) break;
        hent t = h[i];
        h[i] = h[p], h[p] = t;
        i = p;
    }
}

static hent hpop(hent *h, size_t *n) {
    hent top = h[0];
    h[0] = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && hless(&h[l], &h[m])) m = l;
        if (r < *n && hless(&h[r], &h[m])) m = r;
        if (m == i) break;
        hent t = h[i];
        h[i] = h[m], h[m] = t;
        i = m;
    }
    return top;
}

static void push_id(int32_t **ids, size_t *n, size_t *cap, int32_t id) {
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *ids = realloc(*ids, *cap * sizeof **ids);
        if (!*ids) abort();
    }
    (*ids)[(*n)++] = id;
}

static int merge_word(tk_bpe *m, const char *w, size_t n, int32_t **ids, size_t *nids, size_t *cap, mt_err *err) {
    size_t scap = n + 1; /* one symbol per byte at most, unless a prefix/suffix widens a char */
    sym *s = malloc(scap * sizeof *s);
    if (!s) abort();
    size_t ns = 0;
    int32_t unk = -1, unk_len = 0;
    tk_buf tmp = {0};
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = tk_utf8_dec(w + i, n - i, &cp);
        const char *c = w + i;
        size_t cl = (size_t)l;
        int first = i == 0, last = i + (size_t)l == n;
        if ((!first && m->cont_prefix) || (last && m->end_suffix)) {
            tmp.n = 0;
            if (!first && m->cont_prefix) tk_buf_put(&tmp, m->cont_prefix, strlen(m->cont_prefix));
            tk_buf_put(&tmp, w + i, (size_t)l);
            if (last && m->end_suffix) tk_buf_put(&tmp, m->end_suffix, strlen(m->end_suffix));
            c = tmp.p, cl = tmp.n;
        }
        i += (size_t)l;
        int32_t id = tk_strmap_get(&m->vocab, c, cl);
        if (id >= 0) {
            if (unk >= 0) s[ns++] = (sym){unk, 0, 0, unk_len}, unk = -1;
            s[ns++] = (sym){id, 0, 0, l};
            continue;
        }
        if (m->byte_fallback) {
            int ok = 1;
            for (size_t k = 0; k < cl; k++) ok = ok && m->byte_id[(unsigned char)c[k]] >= 0;
            if (ok) {
                if (ns + cl + (n - i) + 2 > scap) {
                    scap = 2 * (ns + cl + (n - i) + 2);
                    s = realloc(s, scap * sizeof *s);
                    if (!s) abort();
                }
                for (size_t k = 0; k < cl; k++) s[ns++] = (sym){m->byte_id[(unsigned char)c[k]], 0, 0, 1};
                continue;
            }
        }
        if (m->unk_id >= 0) {
            if (unk >= 0 && m->fuse_unk) {
                unk_len += l;
            } else {
                if (unk >= 0) s[ns++] = (sym){unk, 0, 0, unk_len};
                unk = m->unk_id, unk_len = l;
            }
        } else if (m->unk_id == -2) {
            tk_buf_free(&tmp);
            free(s);
            return mt_errf(err, "BPE: unk_token is not in the vocabulary");
        }
    }
    if (unk >= 0) s[ns++] = (sym){unk, 0, 0, unk_len};
    tk_buf_free(&tmp);
    for (size_t k = 0; k < ns; k++) s[k].prev = (int32_t)k - 1, s[k].next = k + 1 < ns ? (int32_t)k + 1 : -1;

    hent *h = malloc((2 * ns + 2) * sizeof *h);
    if (!h) abort();
    size_t hn = 0;
    for (size_t k = 0; k + 1 < ns; k++) {
        int32_t rank, nid;
        if (tk_pairmap_get(&m->merges, s[k].id, s[k + 1].id, &rank, &nid)) hpush(h, &hn, (hent){rank, (int32_t)k, nid});
    }
    while (hn) {
        hent t = hpop(h, &hn);
        sym *cur = &s[t.pos];
        if (cur->len == 0 || cur->next < 0) continue;
        sym *right = &s[cur->next];
        int32_t rank, nid;
        if (!tk_pairmap_get(&m->merges, cur->id, right->id, &rank, &nid) || nid != t.nid) continue;
        cur->id = t.nid;
        cur->len += right->len;
        right->len = 0;
        cur->next = right->next;
        if (cur->next >= 0) s[cur->next].prev = t.pos;
        if (cur->prev >= 0 && tk_pairmap_get(&m->merges, s[cur->prev].id, cur->id, &rank, &nid))
            hpush(h, &hn, (hent){rank, cur->prev, nid});
        if (cur->next >= 0 && tk_pairmap_get(&m->merges, cur->id, s[cur->next].id, &rank, &nid))
            hpush(h, &hn, (hent){rank, t.pos, nid});
        /* the heap never holds more than one entry per live pair plus stale ones; keep room */
        if (hn + 2 >= 2 * ns + 2) {
            h = realloc(h, (hn + 2 * ns + 4) * sizeof *h);
            if (!h) abort();
        }
    }
    for (size_t k = 0; k < ns; k++)
        if (s[k].len) push_id(ids, nids, cap, s[k].id);
    free(h);
    free(s);
    return 0;
}

int tk_bpe_encode_word(tk_bpe *m, const char *w, size_t n, int32_t **ids, size_t *nids, size_t *cap, mt_err *err) {
    if (n == 0) return 0;
    if (m->ignore_merges) {
        int32_t id = tk_strmap_get(&m->vocab, w, n);
        if (id >= 0) {
            push_id(ids, nids, cap, id);
            return 0;
        }
    }
    int cacheable = n < CACHE_MAX_WORD;
    if (cacheable) {
        pthread_mutex_lock(&m->cache_lock);
        int32_t e = tk_strmap_get(&m->cache, w, n);
        if (e >= 0) {
            int32_t cnt = m->cache_ids[e];
            for (int32_t k = 0; k < cnt; k++) push_id(ids, nids, cap, m->cache_ids[e + 1 + k]);
            pthread_mutex_unlock(&m->cache_lock);
            return 0;
        }
        pthread_mutex_unlock(&m->cache_lock);
    }
    size_t before = *nids;
    if (merge_word(m, w, n, ids, nids, cap, err)) return -1;
    if (!cacheable) return 0;
    pthread_mutex_lock(&m->cache_lock);
    if (m->cache.n < CACHE_MAX_ENTRIES && tk_strmap_get(&m->cache, w, n) < 0) {
        size_t cnt = *nids - before;
        if (m->cache_n + cnt + 1 > m->cache_cap) {
            m->cache_cap = (m->cache_n + cnt + 1) * 2;
            m->cache_ids = realloc(m->cache_ids, m->cache_cap * sizeof *m->cache_ids);
            if (!m->cache_ids) abort();
        }
        tk_strmap_put(&m->cache, w, n, (int32_t)m->cache_n);
        m->cache_ids[m->cache_n] = (int32_t)cnt;
        if (cnt) memcpy(m->cache_ids + m->cache_n + 1, *ids + before, cnt * sizeof(int32_t));
        m->cache_n += cnt + 1;
    }
    pthread_mutex_unlock(&m->cache_lock);
    return 0;
}
