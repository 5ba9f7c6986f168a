#include "tokenizer/tok_util.h"
#include "tokenizer/unicode_lib_tables.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(void) {
    fputs("moetrace: out of memory in tokenizer\n", stderr);
    abort();
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom();
    return q;
}

void tk_buf_put(tk_buf *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 64;
        while (c < b->n + n + 1) c *= 2;
        b->p = xrealloc(b->p, c);
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
void tk_buf_putc(tk_buf *b, char c) { tk_buf_put(b, &c, 1); }
void tk_buf_free(tk_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

static uint64_t hash_bytes(const char *s, size_t n) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static void strmap_grow(tk_strmap *m) {
    size_t oc = m->cap, nc = oc ? oc * 2 : 64;
    char **ok = m->keys;
    uint32_t *ol = m->klen;
    int32_t *ov = m->vals;
    m->keys = calloc(nc, sizeof *m->keys);
    m->klen = calloc(nc, sizeof *m->klen);
    m->vals = calloc(nc, sizeof *m->vals);
    if (!m->keys || !m->klen || !m->vals) oom();
    m->cap = nc;
    for (size_t i = 0; i < oc; i++) {
        if (!ok[i]) continue;
        size_t j = hash_bytes(ok[i], ol[i]) & (nc - 1);
        while (m->keys[j]) j = (j + 1) & (nc - 1);
        m->keys[j] = ok[i], m->klen[j] = ol[i], m->vals[j] = ov[i];
    }
    free(ok), free(ol), free(ov);
}

void tk_strmap_put(tk_strmap *m, const char *k, size_t klen, int32_t v) {
    if ((m->n + 1) * 2 > m->cap) strmap_grow(m);
    size_t j = hash_bytes(k, klen) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->klen[j] == klen && !memcmp(m->keys[j], k, klen)) {
            m->vals[j] = v;
            return;
        }
        j = (j + 1) & (m->cap - 1);
    }
    char *c = xrealloc(NULL, klen + 1);
    memcpy(c, k, klen);
    c[klen] = 0;
    m->keys[j] = c, m->klen[j] = (uint32_t)klen, m->vals[j] = v;
    m->n++;
}

int32_t tk_strmap_get(const tk_strmap *m, const char *k, size_t klen) {
    if (!m->cap) return -1;
    size_t j = hash_bytes(k, klen) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->klen[j] == klen && !memcmp(m->keys[j], k, klen)) return m->vals[j];
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

void tk_strmap_free(tk_strmap *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys), free(m->klen), free(m->vals);
    memset(m, 0, sizeof *m);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

void tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t nid) {
    if ((m->n + 1) * 2 > m->cap) {
        size_t oc = m->cap, nc = oc ? oc * 2 : 64;
        uint64_t *ok = m->keys;
        int32_t *orank = m->rank, *onid = m->nid;
        m->keys = calloc(nc, sizeof *m->keys);
        m->rank = calloc(nc, sizeof *m->rank);
        m->nid = calloc(nc, sizeof *m->nid);
        if (!m->keys || !m->rank || !m->nid) oom();
        m->cap = nc;
        for (size_t i = 0; i < oc; i++) {
            if (!ok[i]) continue;
            size_t j = hash_u64(ok[i]) & (nc - 1);
            while (m->keys[j]) j = (j + 1) & (nc - 1);
            m->keys[j] = ok[i], m->rank[j] = orank[i], m->nid[j] = onid[i];
        }
        free(ok), free(orank), free(onid);
    }
    uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
    size_t j = hash_u64(key) & (m->cap - 1);
    while (m->keys[j] && m->keys[j] != key) j = (j + 1) & (m->cap - 1);
    if (!m->keys[j]) m->n++;
    m->keys[j] = key, m->rank[j] = rank, m->nid[j] = nid;
}

int tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *nid) {
    if (!m->cap) return 0;
    uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
    size_t j = hash_u64(key) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->keys[j] == key) {
            *rank = m->rank[j], *nid = m->nid[j];
            return 1;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return 0;
}

void tk_pairmap_free(tk_pairmap *m) {
    free(m->keys), free(m->rank), free(m->nid);
    memset(m, 0, sizeof *m);
}

int tk_utf8_dec(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80 || n < 2) {
        *cp = u[0];
        return 1;
    }
    if (u[0] < 0xE0) {
        *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
        return 2;
    }
    if (u[0] < 0xF0 || n < 4) {
        *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) | ((uint32_t)(u[2] & 0x3F) << 6) |
          (u[3] & 0x3F);
    return 4;
}

int tk_utf8_enc(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6)), o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)), o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)), o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid sequence at s[0..n) (0 when invalid), and in *maximal the length of the maximal
 * valid-prefix subpart (at least 1) to replace with one U+FFFD when invalid (Unicode §3.9). */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *maximal) {
    unsigned char c = s[0];
    *maximal = 1;
    if (c < 0x80) return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) need = 2;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF) need = 2;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    else return 0;
    for (size_t i = 1; i <= need; i++) {
        if (i >= n) return 0;
        unsigned char b = s[i];
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h) return 0;
        *maximal = i + 1;
    }
    return need + 1;
}

size_t tk_utf8_valid_prefix(const char *s, size_t n) {
    size_t i = 0, mx;
    while (i < n) {
        size_t l = utf8_seq((const unsigned char *)s + i, n - i, &mx);
        if (!l) break;
        i += l;
    }
    return i;
}

void tk_utf8_lossy(tk_buf *b, const char *s, size_t n) {
    size_t i = 0, start = 0, mx;
    while (i < n) {
        size_t l = utf8_seq((const unsigned char *)s + i, n - i, &mx);
        if (l) {
            i += l;
            continue;
        }
        tk_buf_put(b, s + start, i - start);
        tk_buf_put(b, "\xEF\xBF\xBD", 3);
        i += mx;
        start = i;
    }
    tk_buf_put(b, s + start, n - start);
}

int tk_is_whitespace(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

int tk_in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

int tk_is_numeric(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    return tk_in_ranges(tk_numeric, sizeof tk_numeric / sizeof *tk_numeric, c);
}

int tk_norm_excluded_cp(uint32_t c) { /* (the normalizer skips lead bytes below 0xDF: U+07C0) */
    return c >= tk_norm_excluded[0][0] && tk_in_ranges(tk_norm_excluded, sizeof tk_norm_excluded / sizeof *tk_norm_excluded, c);
}

const char *tk_lower_of(uint32_t c) {
    size_t lo = 0, hi = sizeof tk_lower_map / sizeof *tk_lower_map;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < tk_lower_map[mid].cp) hi = mid;
        else if (c > tk_lower_map[mid].cp) lo = mid + 1;
        else return tk_lower_map[mid].lower;
    }
    return NULL;
}

int tk_is_word(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    return tk_in_ranges(tk_word, sizeof tk_word / sizeof *tk_word, c);
}

static tk_bytelevel g_bytelevel;
static pthread_once_t g_bytelevel_once = PTHREAD_ONCE_INIT;

static void bytelevel_build(void) {
    int n = 0;
    for (int i = 0; i < 512; i++) g_bytelevel.dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp;
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) cp = (uint32_t)b;
        else cp = 256u + (uint32_t)n++;
        char e[4];
        g_bytelevel.enc_len[b] = tk_utf8_enc(cp, e);
        memcpy(g_bytelevel.enc[b], e, (size_t)g_bytelevel.enc_len[b]);
        g_bytelevel.dec[cp] = (int16_t)b;
    }
}

const tk_bytelevel *tk_bytelevel_map(void) {
    pthread_once(&g_bytelevel_once, bytelevel_build);
    return &g_bytelevel;
}
