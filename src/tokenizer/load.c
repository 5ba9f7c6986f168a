/* Loading tokenizer.json (the Hugging Face `tokenizers` serialization) into the structures of
 * tok_internal.h. Every unsupported component is an error naming its "type". */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tokenizer/tok_internal.h"
#include "util/json_util.h"

/* The GPT-2 pre-tokenization regex of the ByteLevel pre-tokenizer when use_regex is true. */
static const char GPT2_RE[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static const char *type_of(const cJSON *o) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : "";
}
static int get_bool(const cJSON *o, const char *k, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}
static const char *get_str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
static char *dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (!c) abort();
    memcpy(c, s, n);
    return c;
}
/* The bytes of one of the file's strings (malloc'd, NUL-terminated past *len): the file is parsed
 * with mt_json_parse_keep_nul, which keeps an escape \u0000 as C0 80 (a vocabulary may hold the
 * token "\u0000": InternLM2's does). */
static char *dup_bytes(const char *s, size_t *len) {
    char *c = mt_json_bytes(s, len);
    if (!c) abort();
    return c;
}
/* Token ids are integers in [0, MAX_ID): 16x the largest vocabularies in use (~262K), so a bad
 * file cannot make the id tables (24 bytes per id) huge. */
#define MAX_ID (1 << 22)
static int get_id(const cJSON *v, int32_t *id) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < MAX_ID)) return -1; /* range before cast */
    *id = (int32_t)v->valuedouble;
    return *id == v->valuedouble ? 0 : -1;
}
static uint32_t first_char(const char *s) {
    uint32_t cp = 0;
    if (*s) tk_utf8_dec(s, strlen(s), &cp);
    return cp;
}
static int prepend_scheme(const cJSON *o, const char *where, int *out, mt_err *err) {
    const char *ps = get_str(o, "prepend_scheme");
    const cJSON *aps = cJSON_GetObjectItemCaseSensitive(o, "add_prefix_space");
    *out = TK_PREPEND_ALWAYS;
    if (ps) {
        if (!strcmp(ps, "always")) *out = TK_PREPEND_ALWAYS;
        else if (!strcmp(ps, "first")) *out = TK_PREPEND_FIRST;
        else if (!strcmp(ps, "never")) *out = TK_PREPEND_NEVER;
        else return mt_errf(err, "%s: unknown prepend_scheme '%s'", where, ps);
    }
    if (cJSON_IsFalse(aps)) *out = TK_PREPEND_NEVER;
    return 0;
}

static int parse_norm(tk_norm *n, const cJSON *o, const char *path, mt_err *err) {
    const char *t = type_of(o);
    memset(n, 0, sizeof *n);
    if (!strcmp(t, "NFC")) n->type = TK_N_NFC;
    else if (!strcmp(t, "NFKC")) n->type = TK_N_NFKC;
    else if (!strcmp(t, "NFD")) n->type = TK_N_NFD;
    else if (!strcmp(t, "NFKD")) n->type = TK_N_NFKD;
    else if (!strcmp(t, "Lowercase")) n->type = TK_N_LOWER;
    else if (!strcmp(t, "Prepend")) {
        n->type = TK_N_PREPEND;
        const char *p = get_str(o, "prepend");
        if (!p) return mt_errf(err, "%s: normalizer Prepend without \"prepend\"", path);
        n->content = dup_bytes(p, &n->content_len);
    } else if (!strcmp(t, "Replace")) {
        n->type = TK_N_REPLACE;
        const char *c = get_str(o, "content");
        if (!c) return mt_errf(err, "%s: normalizer Replace without \"content\"", path);
        n->content = dup_bytes(c, &n->content_len);
        if (tk_pattern_parse(&n->pat, cJSON_GetObjectItemCaseSensitive(o, "pattern"), path, err)) return -1;
    } else if (!strcmp(t, "Strip")) {
        n->type = TK_N_STRIP;
        n->left = get_bool(o, "strip_left", 1), n->right = get_bool(o, "strip_right", 1);
    } else if (!strcmp(t, "Sequence")) {
        n->type = TK_N_SEQ;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "normalizers");
        n->nsub = cJSON_GetArraySize(a);
        n->sub = calloc((size_t)n->nsub + 1, sizeof *n->sub);
        for (int i = 0; i < n->nsub; i++)
            if (parse_norm(&n->sub[i], cJSON_GetArrayItem(a, i), path, err)) return -1;
    } else {
        return mt_errf(err, "%s: normalizer type '%s' is not supported", path, t);
    }
    return 0;
}

static int parse_pretok(tk_pretok *p, const cJSON *o, const char *path, mt_err *err) {
    const char *t = type_of(o);
    memset(p, 0, sizeof *p);
    if (!strcmp(t, "Split")) {
        p->type = TK_P_SPLIT;
        if (tk_pattern_parse(&p->pat, cJSON_GetObjectItemCaseSensitive(o, "pattern"), path, err)) return -1;
        const char *b = get_str(o, "behavior");
        if (!b) return mt_errf(err, "%s: Split without \"behavior\"", path);
        if (!strcmp(b, "Removed")) p->behavior = TK_B_REMOVED;
        else if (!strcmp(b, "Isolated")) p->behavior = TK_B_ISOLATED;
        else if (!strcmp(b, "MergedWithPrevious")) p->behavior = TK_B_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext")) p->behavior = TK_B_MERGED_NEXT;
        else if (!strcmp(b, "Contiguous")) p->behavior = TK_B_CONTIGUOUS;
        else return mt_errf(err, "%s: Split behavior '%s' is not supported", path, b);
        p->invert = get_bool(o, "invert", 0);
    } else if (!strcmp(t, "ByteLevel")) {
        p->type = TK_P_BYTELEVEL;
        p->add_prefix_space = get_bool(o, "add_prefix_space", 1);
        p->use_regex = get_bool(o, "use_regex", 1);
        if (p->use_regex) {
            cJSON *pat = cJSON_CreateObject();
            cJSON_AddStringToObject(pat, "Regex", GPT2_RE);
            int rc = tk_pattern_parse(&p->pat, pat, path, err);
            cJSON_Delete(pat);
            if (rc) return -1;
        }
    } else if (!strcmp(t, "Metaspace")) {
        p->type = TK_P_METASPACE;
        const char *r = get_str(o, "replacement");
        if (!r || !*r) return mt_errf(err, "%s: Metaspace without \"replacement\"", path);
        p->repl = first_char(r);
        p->repl_len = tk_utf8_enc(p->repl, p->repl_s);
        p->split = get_bool(o, "split", 1);
        if (prepend_scheme(o, path, &p->prepend_scheme, err)) return -1;
    } else if (!strcmp(t, "Digits")) {
        p->type = TK_P_DIGITS;
        p->individual = get_bool(o, "individual_digits", 0);
    } else if (!strcmp(t, "Sequence")) {
        p->type = TK_P_SEQ;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers");
        p->nsub = cJSON_GetArraySize(a);
        p->sub = calloc((size_t)p->nsub + 1, sizeof *p->sub);
        for (int i = 0; i < p->nsub; i++)
            if (parse_pretok(&p->sub[i], cJSON_GetArrayItem(a, i), path, err)) return -1;
    } else {
        return mt_errf(err, "%s: pre_tokenizer type '%s' is not supported", path, t);
    }
    return 0;
}

static int parse_decoder(tk_decoder *d, const cJSON *o, const char *path, mt_err *err) {
    const char *t = type_of(o);
    memset(d, 0, sizeof *d);
    if (!strcmp(t, "ByteLevel")) d->type = TK_D_BYTELEVEL;
    else if (!strcmp(t, "ByteFallback")) d->type = TK_D_BYTEFALLBACK;
    else if (!strcmp(t, "Fuse")) d->type = TK_D_FUSE;
    else if (!strcmp(t, "Metaspace")) {
        d->type = TK_D_METASPACE;
        const char *r = get_str(o, "replacement");
        if (!r || !*r) return mt_errf(err, "%s: decoder Metaspace without \"replacement\"", path);
        d->ch = first_char(r);
        if (prepend_scheme(o, path, &d->prepend_scheme, err)) return -1;
    } else if (!strcmp(t, "Strip")) {
        d->type = TK_D_STRIP;
        const char *c = get_str(o, "content");
        d->ch = c ? first_char(c) : ' ';
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "start"), *b = cJSON_GetObjectItemCaseSensitive(o, "stop");
        d->start = cJSON_IsNumber(a) ? a->valueint : 0;
        d->stop = cJSON_IsNumber(b) ? b->valueint : 0;
    } else if (!strcmp(t, "Replace")) {
        d->type = TK_D_REPLACE;
        const char *c = get_str(o, "content");
        if (!c) return mt_errf(err, "%s: decoder Replace without \"content\"", path);
        d->content = dup_bytes(c, &d->content_len);
        if (tk_pattern_parse(&d->pat, cJSON_GetObjectItemCaseSensitive(o, "pattern"), path, err)) return -1;
    } else if (!strcmp(t, "Sequence")) {
        d->type = TK_D_SEQ;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "decoders");
        d->nsub = cJSON_GetArraySize(a);
        d->sub = calloc((size_t)d->nsub + 1, sizeof *d->sub);
        for (int i = 0; i < d->nsub; i++)
            if (parse_decoder(&d->sub[i], cJSON_GetArrayItem(a, i), path, err)) return -1;
    } else {
        return mt_errf(err, "%s: decoder type '%s' is not supported", path, t);
    }
    return 0;
}

static int parse_post(tk_post *p, const cJSON *o, const char *path, mt_err *err) {
    const char *t = type_of(o);
    memset(p, 0, sizeof *p);
    if (!strcmp(t, "ByteLevel")) {
        p->type = TK_PP_BYTELEVEL;
    } else if (!strcmp(t, "Sequence")) {
        p->type = TK_PP_SEQ;
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "processors");
        p->nsub = cJSON_GetArraySize(a);
        p->sub = calloc((size_t)p->nsub + 1, sizeof *p->sub);
        for (int i = 0; i < p->nsub; i++)
            if (parse_post(&p->sub[i], cJSON_GetArrayItem(a, i), path, err)) return -1;
    } else if (!strcmp(t, "TemplateProcessing")) {
        p->type = TK_PP_TEMPLATE;
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
        p->nitems = cJSON_GetArraySize(single);
        p->items = calloc((size_t)p->nitems + 1, sizeof *p->items);
        for (int i = 0; i < p->nitems; i++) {
            const cJSON *it = cJSON_GetArrayItem(single, i);
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
            if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) {
                p->items[i].is_seq = 1;
                continue;
            }
            const char *id = get_str(sp, "id");
            const cJSON *st = id ? cJSON_GetObjectItemCaseSensitive(specials, id) : NULL;
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(st, "ids");
            if (!cJSON_IsArray(ids))
                return mt_errf(err, "%s: TemplateProcessing single[%d] names special token '%s' missing from special_tokens",
                               path, i, id ? id : "?");
            p->items[i].nids = (size_t)cJSON_GetArraySize(ids);
            p->items[i].ids = calloc(p->items[i].nids + 1, sizeof(int32_t));
            for (size_t k = 0; k < p->items[i].nids; k++)
                if (get_id(cJSON_GetArrayItem(ids, (int)k), &p->items[i].ids[k]))
                    return mt_errf(err, "%s: TemplateProcessing special token '%s' has an invalid id", path, id);
        }
    } else {
        return mt_errf(err, "%s: post_processor type '%s' is not supported", path, t);
    }
    return 0;
}

/* The largest special token id a post-processor adds, -1 when none. */
static int32_t post_max_id(const tk_post *p) {
    int32_t m = -1;
    for (int i = 0; i < p->nitems; i++)
        for (size_t k = 0; k < p->items[i].nids; k++)
            if (p->items[i].ids[k] > m) m = p->items[i].ids[k];
    for (int i = 0; i < p->nsub; i++) {
        int32_t s = post_max_id(&p->sub[i]);
        if (s > m) m = s;
    }
    return m;
}

void tk_post_free(tk_post *p) {
    if (!p) return;
    for (int i = 0; i < p->nitems; i++) free(p->items[i].ids);
    free(p->items);
    for (int i = 0; i < p->nsub; i++) tk_post_free(&p->sub[i]);
    free(p->sub);
}

static int parse_model(tk_bpe *m, const cJSON *o, const char *path, mt_err *err) {
    const char *t = type_of(o);
    if (strcmp(t, "BPE")) return mt_errf(err, "%s: model type '%s' is not supported (only BPE)", path, *t ? t : "?");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(o, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(o, "merges");
    if (!cJSON_IsObject(vocab)) return mt_errf(err, "%s: model.vocab must be an object", path);
    int32_t maxid = -1;
    for (const cJSON *v = vocab->child; v; v = v->next) {
        int32_t id;
        if (get_id(v, &id)) return mt_errf(err, "%s: model.vocab['%s'] is not a valid id", path, v->string);
        size_t kl;
        char *key = dup_bytes(v->string, &kl);
        tk_strmap_put(&m->vocab, key, kl, id);
        free(key);
        if (id > maxid) maxid = id;
    }
    m->ntok = maxid + 1;
    m->tok = calloc((size_t)m->ntok + 1, sizeof *m->tok);
    m->tok_len = calloc((size_t)m->ntok + 1, sizeof *m->tok_len);
    for (const cJSON *v = vocab->child; v; v = v->next) {
        int32_t id = (int32_t)v->valuedouble;
        if (!m->tok[id]) {
            size_t kl;
            m->tok[id] = dup_bytes(v->string, &kl);
            m->tok_len[id] = (uint32_t)kl;
        }
    }
    const char *cp = get_str(o, "continuing_subword_prefix"), *es = get_str(o, "end_of_word_suffix");
    if (mt_json_holds_nul(cp) || mt_json_holds_nul(es))
        return mt_errf(err, "%s: a continuing_subword_prefix or end_of_word_suffix holding U+0000 is not supported", path);
    m->cont_prefix = cp && *cp ? dup(cp) : NULL;
    m->end_suffix = es && *es ? dup(es) : NULL;
    m->byte_fallback = get_bool(o, "byte_fallback", 0);
    m->fuse_unk = get_bool(o, "fuse_unk", 0);
    m->ignore_merges = get_bool(o, "ignore_merges", 0);
    const char *unk = get_str(o, "unk_token");
    m->unk_id = -1;
    if (unk) {
        size_t ul;
        char *ub = dup_bytes(unk, &ul);
        m->unk_id = tk_strmap_get(&m->vocab, ub, ul);
        free(ub);
        if (m->unk_id < 0) m->unk_id = -2; /* an error only when an unknown character shows up */
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_id[b] = tk_strmap_get(&m->vocab, name, 6);
    }
    int nm = cJSON_GetArraySize(merges);
    size_t plen = m->cont_prefix ? strlen(m->cont_prefix) : 0;
    tk_buf joined = {0}, pa = {0}, pb = {0};
    const cJSON *e = merges ? merges->child : NULL;
    for (int i = 0; i < nm; i++, e = e->next) {
        const char *a, *b;
        size_t al, bl;
        const char *sp = cJSON_IsString(e) ? strchr(e->valuestring, ' ') : NULL;
        if (sp && !strchr(sp + 1, ' ')) {
            a = e->valuestring, al = (size_t)(sp - a), b = sp + 1, bl = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            a = e->child->valuestring, al = strlen(a), b = e->child->next->valuestring, bl = strlen(b);
        } else {
            tk_buf_free(&joined), tk_buf_free(&pa), tk_buf_free(&pb);
            if (cJSON_IsString(e))
                return mt_errf(err, "%s: model.merges[%d] '%s' is not two tokens separated by one space", path, i,
                               e->valuestring);
            return mt_errf(err, "%s: model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]", path, i);
        }
        /* the tokens' bytes (C0 80 back to NUL); the masked halves split alike, C0 80 holding no space */
        pa.n = pb.n = 0;
        tk_buf_put(&pa, a, al), tk_buf_put(&pb, b, bl);
        a = pa.p, al = mt_json_unmask_nul(pa.p, pa.n, pa.p);
        b = pb.p, bl = mt_json_unmask_nul(pb.p, pb.n, pb.p);
        int32_t ia = tk_strmap_get(&m->vocab, a, al), ib = tk_strmap_get(&m->vocab, b, bl);
        joined.n = 0;
        tk_buf_put(&joined, a, al);
        size_t skip = plen && bl >= plen && !memcmp(b, m->cont_prefix, plen) ? plen : 0;
        tk_buf_put(&joined, b + skip, bl - skip);
        int32_t in = tk_strmap_get(&m->vocab, joined.p, joined.n);
        if (ia < 0 || ib < 0 || in < 0) {
            tk_buf_free(&joined), tk_buf_free(&pa), tk_buf_free(&pb);
            return mt_errf(err, "%s: model.merges[%d] uses a token missing from model.vocab", path, i);
        }
        tk_pairmap_put(&m->merges, ia, ib, i, in);
    }
    tk_buf_free(&joined), tk_buf_free(&pa), tk_buf_free(&pb);
    return 0;
}

static int parse_added(mt_tokenizer *tok, const cJSON *arr, const char *path, mt_err *err) {
    tok->nadded = cJSON_GetArraySize(arr);
    tok->added = calloc((size_t)tok->nadded + 1, sizeof *tok->added);
    for (int i = 0; i < tok->nadded; i++) {
        const cJSON *o = cJSON_GetArrayItem(arr, i);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
        const char *c = get_str(o, "content");
        tk_added *a = &tok->added[i];
        if (!c || get_id(id, &a->id))
            return mt_errf(err, "%s: added_tokens[%d] needs \"id\" (a token id) and \"content\"", path, i);
        a->content = dup_bytes(c, &a->len);
        a->special = get_bool(o, "special", 0);
        a->lstrip = get_bool(o, "lstrip", 0), a->rstrip = get_bool(o, "rstrip", 0);
        a->single_word = get_bool(o, "single_word", 0);
        a->normalized = get_bool(o, "normalized", !a->special);
        if (!a->len) continue;
        if (a->normalized && tok->norm) {
            tk_buf nb = {0};
            tk_buf_put(&nb, "", 0);
            if (tk_normalize(tok->norm, a->content, a->len, &nb, err)) {
                tk_buf_free(&nb);
                return -1;
            }
            if (nb.n != a->len || memcmp(nb.p, a->content, a->len)) a->norm = nb.p, a->norm_len = nb.n;
            else tk_buf_free(&nb);
        }
        if (a->normalized)
            tk_trie_add(&tok->trie_norm, a->norm ? a->norm : a->content, a->norm ? a->norm_len : a->len, i);
        else
            tk_trie_add(&tok->trie_raw, a->content, a->len, i);
        tk_strmap_put(&tok->added_map, a->content, a->len, a->id);
        if (a->special) tk_strmap_put(&tok->special_set, a->content, a->len, 1);
    }
    return 0;
}

int tk_load_json(mt_tokenizer *tok, const char *json, size_t len, const char *path, mt_err *err) {
    /* The library reads the file into a Rust String: bytes that are not UTF-8 are an error there */
    size_t valid = tk_utf8_valid_prefix(json, len);
    if (valid < len) return mt_errf(err, "%s: not valid UTF-8 (byte %zu)", path, valid);
    cJSON *root = mt_json_parse_keep_nul(json, len, path, err);
    if (!root) return -1;
    int rc = -1;
    const cJSON *o;
    if (!cJSON_IsObject(root)) {
        mt_errf(err, "%s: not a JSON object", path);
        goto out;
    }
    o = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(o)) {
        mt_errf(err, "%s: no \"model\" object", path);
        goto out;
    }
    if (parse_model(&tok->bpe, o, path, err)) goto out;
    o = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (cJSON_IsObject(o)) {
        tok->norm = calloc(1, sizeof *tok->norm);
        if (parse_norm(tok->norm, o, path, err)) goto out;
    }
    o = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (cJSON_IsObject(o)) {
        tok->pretok = calloc(1, sizeof *tok->pretok);
        if (parse_pretok(tok->pretok, o, path, err)) goto out;
    }
    o = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (cJSON_IsObject(o)) {
        tok->post = calloc(1, sizeof *tok->post);
        if (parse_post(tok->post, o, path, err)) goto out;
    }
    o = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (cJSON_IsObject(o)) {
        tok->dec = calloc(1, sizeof *tok->dec);
        if (parse_decoder(tok->dec, o, path, err)) goto out;
    }
    if (parse_added(tok, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), path, err)) goto out;
    if (!cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "truncation")) &&
        cJSON_GetObjectItemCaseSensitive(root, "truncation"))
        mt_log("%s: \"truncation\" is ignored", path);
    if (!cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "padding")) &&
        cJSON_GetObjectItemCaseSensitive(root, "padding"))
        mt_log("%s: \"padding\" is ignored", path);
    /* id -> token as decode sees it */
    size_t vs = (size_t)tok->bpe.ntok;
    for (int i = 0; i < tok->nadded; i++)
        if ((size_t)tok->added[i].id + 1 > vs) vs = (size_t)tok->added[i].id + 1;
    tok->vocab_size = vs;
    if (tok->post && post_max_id(tok->post) >= (int32_t)vs) {
        mt_errf(err, "%s: post_processor adds token id %d, outside the vocabulary of %zu ids", path,
                post_max_id(tok->post), vs);
        goto out;
    }
    tok->id_tok = calloc(vs + 1, sizeof *tok->id_tok);
    tok->id_tok_len = calloc(vs + 1, sizeof *tok->id_tok_len);
    for (int32_t i = 0; i < tok->bpe.ntok; i++) tok->id_tok[i] = tok->bpe.tok[i], tok->id_tok_len[i] = tok->bpe.tok_len[i];
    for (int i = 0; i < tok->nadded; i++) {
        tk_added *a = &tok->added[i];
        tok->id_tok[a->id] = a->norm ? a->norm : a->content;
        tok->id_tok_len[a->id] = (uint32_t)(a->norm ? a->norm_len : a->len);
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

void mt_tokenizer_free(mt_tokenizer *tok) {
    if (!tok) return;
    tk_norm_free(tok->norm), free(tok->norm);
    tk_pretok_free(tok->pretok), free(tok->pretok);
    tk_post_free(tok->post), free(tok->post);
    tk_decoder_free(tok->dec), free(tok->dec);
    tk_bpe *m = &tok->bpe;
    tk_strmap_free(&m->vocab);
    for (int32_t i = 0; i < m->ntok; i++) free(m->tok[i]);
    free(m->tok), free(m->tok_len);
    tk_pairmap_free(&m->merges);
    free(m->cont_prefix), free(m->end_suffix);
    tk_strmap_free(&m->cache);
    free(m->cache_ids);
    pthread_mutex_destroy(&m->cache_lock);
    for (int i = 0; i < tok->nadded; i++) free(tok->added[i].content), free(tok->added[i].norm);
    free(tok->added);
    tk_trie_free(&tok->trie_raw), tk_trie_free(&tok->trie_norm);
    tk_strmap_free(&tok->added_map), tk_strmap_free(&tok->special_set);
    free(tok->id_tok), free(tok->id_tok_len);
    free(tok);
}

int mt_tokenizer_load(mt_tokenizer **out, const char *path, mt_err *err) {
    *out = NULL;
    char file[4096];
    struct stat st;
    if (stat(path, &st)) return mt_errf(err, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) snprintf(file, sizeof file, "%s/tokenizer.json", path);
    else snprintf(file, sizeof file, "%s", path);
    FILE *f = fopen(file, "rb");
    if (!f) return mt_errf(err, "cannot open %s: %s", file, strerror(errno));
    tk_buf b = {0};
    char chunk[65536];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) tk_buf_put(&b, chunk, r);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        tk_buf_free(&b);
        return mt_errf(err, "cannot read %s", file);
    }
    mt_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) abort();
    pthread_mutex_init(&tok->bpe.cache_lock, NULL);
    int rc = tk_load_json(tok, b.p ? b.p : "", b.n, file, err);
    tk_buf_free(&b);
    if (rc) {
        mt_tokenizer_free(tok);
        return -1;
    }
    *out = tok;
    return 0;
}
