#include "util/json_util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

char *mt_read_file(const char *path, size_t *len, mt_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        mt_errf(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        cap *= 2;
        char *nb = realloc(buf, cap + 1);
        if (!nb) { free(buf); buf = NULL; }
        buf = nb;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        mt_errf(err, "%s: read failed", path);
        return NULL;
    }
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

cJSON *mt_json_load_file(const char *path, mt_err *err) {
    size_t len;
    char *text = mt_read_file(path, &len, err);
    if (!text) return NULL;
    cJSON *root = mt_json_parse(text, len, path, NULL, err);
    free(text);
    return root;
}

long mt_json_find_nul(const char *text, size_t len) {
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (!in_string) {
            in_string = c == '"';
        } else if (c == '"') {
            in_string = false;
        } else if (c == '\0') {
            return (long)i;
        } else if (c == '\\') {
            if (i + 5 < len && text[i + 1] == 'u' && !memcmp(text + i + 2, "0000", 4)) return (long)i;
            i++; /* the escaped character; \uXXXX's hex digits are ordinary characters */
        }
    }
    return -1;
}

/* The deepest nesting of arrays and objects in text[0, n), strings skipped. */
static int nesting_before(const char *text, size_t n) {
    int depth = 0, deepest = 0;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\') i++;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > deepest) deepest = depth;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return deepest;
}

/* The next number token of valid JSON text from *pos (strings skipped): [*start, *end). false at the end. */
static bool next_number(const char *text, size_t len, size_t *pos, size_t *start, size_t *end) {
    for (size_t i = *pos; i < len; i++) {
        char c = text[i];
        if (c == '"') {
            for (i++; i < len && text[i] != '"'; i++)
                if (text[i] == '\\') i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i + 1;
            while (j < len && text[j] && strchr("0123456789+-.eE", text[j])) j++;
            *start = i;
            *pos = *end = j;
            return true;
        }
    }
    *pos = len;
    return false;
}

/* An integer literal (no fraction, no exponent) of more than 15 digits: a double may not hold it. */
static bool long_integer(const char *s, size_t n) {
    size_t digits = 0;
    for (size_t i = s[0] == '-' ? 1 : 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        digits++;
    }
    return digits > 15;
}

/* Pairs the tree's numbers with the text's number tokens, both in document order, and keeps each
 * long integer's literal as the number's valuestring (mt_json_int64 reads it). */
static void keep_long_integers(cJSON *node, const char *text, size_t len, size_t *pos) {
    for (; node; node = node->next) {
        size_t a, b;
        if (cJSON_IsNumber(node)) {
            if (!next_number(text, len, pos, &a, &b)) return;
            if (long_integer(text + a, b - a) && (node->valuestring = malloc(b - a + 1))) {
                memcpy(node->valuestring, text + a, b - a);
                node->valuestring[b - a] = '\0';
            }
        } else if (node->child) {
            keep_long_integers(node->child, text, len, pos);
        }
    }
}

/* Whether text holds a run of more than 15 digits (a long integer may be there). */
static bool has_long_digit_run(const char *text, size_t len) {
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        run = text[i] >= '0' && text[i] <= '9' ? run + 1 : 0;
        if (run > 15) return true;
    }
    return false;
}

bool mt_json_int64(const cJSON *number, int64_t *out) {
    if (!cJSON_IsNumber(number) || !number->valuestring) return false;
    errno = 0;
    char *end;
    long long v = strtoll(number->valuestring, &end, 10);
    if (errno || *end) return false;
    *out = (int64_t)v;
    return true;
}

/* Where offset at of a text made by mt_json_parse_keep_nul lies in the text it was given: each of the
 * n escapes \u0000 it shortened to two bytes (at the ascending offsets moved of the made text) is
 * four bytes longer there. */
static size_t given_offset(size_t at, const size_t *moved, size_t n) {
    size_t before = 0;
    while (before < n && moved[before] < at) before++;
    return at + 4 * before;
}

static cJSON *parse_mapped(const char *text, size_t len, const char *what, const char **end, const size_t *moved,
                           size_t nmoved, mt_err *err) {
    const char *stop = NULL, *sep = what ? ": " : "";
    if (!what) what = "";
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &stop, 0);
    if (!root) {
        size_t at = stop && stop >= text && stop <= text + len ? (size_t)(stop - text) : 0;
        if (nesting_before(text, at < len ? at + 1 : at) > CJSON_NESTING_LIMIT) /* the bracket it stopped at */
            mt_errf(err, "%s%sJSON nested deeper than %d arrays and objects (at byte %zu)", what, sep,
                    CJSON_NESTING_LIMIT, given_offset(at, moved, nmoved));
        else
            mt_errf(err, "%s%sinvalid JSON near byte %zu", what, sep, given_offset(at, moved, nmoved));
        return NULL;
    }
    long nul = mt_json_find_nul(text, (size_t)(stop - text));
    if (nul >= 0) {
        cJSON_Delete(root);
        mt_errf(err, "%s%sa string holds U+0000 (\\u0000 at byte %zu), which is not supported", what, sep,
                given_offset((size_t)nul, moved, nmoved));
        return NULL;
    }
    size_t parsed = (size_t)(stop - text), pos = 0;
    if (has_long_digit_run(text, parsed)) keep_long_integers(root, text, parsed, &pos);
    if (end) *end = stop;
    return root;
}

cJSON *mt_json_parse(const char *text, size_t len, const char *what, const char **end, mt_err *err) {
    return parse_mapped(text, len, what, end, NULL, 0, err);
}

/* mt_json_parse_keep_nul; *end_at (when end_at is not NULL) gets the offset in text where the value
 * ended. */
static cJSON *parse_keep_nul(const char *text, size_t len, const char *what, size_t *end_at, mt_err *err) {
    long first = mt_json_find_nul(text, len);
    if (first < 0 || text[first] == '\0') {
        const char *end = NULL;
        cJSON *root = mt_json_parse(text, len, what, &end, err);
        if (root && end_at) *end_at = (size_t)(end - text);
        return root;
    }
    char *made = calloc(len ? len : 1, 1); /* (zeroed: gcc cannot see that len > 0 here) */
    size_t *moved = NULL, nmoved = 0, cap = 0, n = 0;
    if (!made) {
        mt_errf(err, "%s%sout of memory", what ? what : "", what ? ": " : "");
        return NULL;
    }
    bool in_string = false; /* mt_json_find_nul's scan */
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string && c == '\\' && i + 5 < len && text[i + 1] == 'u' && !memcmp(text + i + 2, "0000", 4)) {
            if (nmoved == cap) {
                cap = cap ? 2 * cap : 64;
                size_t *grown = realloc(moved, cap * sizeof *moved);
                if (!grown) {
                    free(made), free(moved);
                    mt_errf(err, "%s%sout of memory", what ? what : "", what ? ": " : "");
                    return NULL;
                }
                moved = grown;
            }
            moved[nmoved++] = n;
            made[n++] = (char)0xC0, made[n++] = (char)0x80;
            i += 5;
            continue;
        }
        made[n++] = c;
        if (!in_string) {
            in_string = c == '"';
        } else if (c == '"') {
            in_string = false;
        } else if (c == '\\' && i + 1 < len) {
            made[n++] = text[++i];
        }
    }
    const char *end = made;
    cJSON *root = parse_mapped(made, n, what, &end, moved, nmoved, err);
    size_t end_made = (size_t)(end - made);
    if (root && end_at) *end_at = given_offset(end_made, moved, nmoved);
    free(made), free(moved);
    return root;
}

cJSON *mt_json_parse_keep_nul(const char *text, size_t len, const char *what, mt_err *err) {
    return parse_keep_nul(text, len, what, NULL, err);
}

char *mt_json_bytes(const char *s, size_t *len) {
    size_t n = strlen(s);
    char *out = malloc(n + 1);
    if (!out) return NULL;
    *len = mt_json_unmask_nul(s, n, out);
    out[*len] = '\0';
    return out;
}

bool mt_json_holds_nul(const char *s) {
    return s && strstr(s, "\xC0\x80") != NULL;
}

size_t mt_json_unmask_nul(const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] == 0xC0 && i + 1 < n && (unsigned char)s[i + 1] == 0x80) {
            out[o++] = '\0';
            i++;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

/* root, or NULL with err when text[end..len) holds more than whitespace (root deleted). */
static cJSON *nothing_after(cJSON *root, const char *text, size_t len, size_t end, const char *what, mt_err *err) {
    if (!root) return NULL;
    size_t at = end;
    while (at < len && (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' || text[at] == '\r')) at++;
    if (at < len) {
        cJSON_Delete(root);
        mt_errf(err, "%s%sunexpected text after the JSON value at byte %zu", what ? what : "", what ? ": " : "", at);
        return NULL;
    }
    return root;
}

cJSON *mt_json_parse_whole(const char *text, size_t len, const char *what, mt_err *err) {
    const char *end = NULL;
    cJSON *root = mt_json_parse(text, len, what, &end, err);
    return nothing_after(root, text, len, root ? (size_t)(end - text) : 0, what, err);
}

static int key_order(const void *a, const void *b) {
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string, y->string);
}

/* Members' pointers gathered for sorting, the buffer reused from one object to the next. */
typedef struct member_list {
    const cJSON **items;
    size_t cap;
} member_list;

/* The duplicate member of o itself (its members sorted by key in ml: a body of 16 MB may hold an
 * object of a million keys), or NULL; sets *oom when ml cannot grow. */
static const cJSON *duplicate_in(const cJSON *o, member_list *ml, bool *oom) {
    size_t n = 0;
    for (const cJSON *it = o->child; it; it = it->next) n++;
    if (n < 2) return NULL;
    if (n > ml->cap) {
        const cJSON **grown = realloc(ml->items, n * sizeof *grown);
        if (!grown) {
            *oom = true;
            return NULL;
        }
        ml->items = grown;
        ml->cap = n;
    }
    n = 0;
    for (const cJSON *it = o->child; it; it = it->next) ml->items[n++] = it;
    qsort(ml->items, n, sizeof *ml->items, key_order);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(ml->items[i - 1]->string, ml->items[i]->string)) return ml->items[i];
    return NULL;
}

/* The first duplicate member of v or of a value inside it (depth first; cJSON's nesting limit bounds
 * the recursion), *object its object. */
static const cJSON *duplicate_below(const cJSON *v, const cJSON **object, member_list *ml, bool *oom) {
    if (cJSON_IsObject(v)) {
        const cJSON *dup = duplicate_in(v, ml, oom);
        if (dup || *oom) {
            *object = v;
            return dup;
        }
    }
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) return NULL;
    for (const cJSON *it = v->child; it; it = it->next) {
        const cJSON *dup = duplicate_below(it, object, ml, oom);
        if (dup || *oom) return dup;
    }
    return NULL;
}

const cJSON *mt_json_duplicate_key(const cJSON *root, const cJSON **object, bool *oom) {
    member_list ml = {0};
    const cJSON *holder = NULL;
    bool no_memory = false;
    const cJSON *dup = root ? duplicate_below(root, &holder, &ml, &no_memory) : NULL;
    free(ml.items);
    if (object) *object = holder;
    if (oom) *oom = no_memory;
    return dup;
}

/* root, or NULL with err when one of its objects names a key twice (root deleted). */
static cJSON *no_duplicates(cJSON *root, const char *what, mt_err *err) {
    if (!root) return NULL;
    const char *sep = what ? ": " : "";
    if (!what) what = "";
    const cJSON *holder = NULL;
    bool oom = false;
    const cJSON *dup = mt_json_duplicate_key(root, &holder, &oom);
    if (!dup && !oom) return root;
    if (oom) mt_errf(err, "%s%sout of memory", what, sep);
    else if (holder->string)
        mt_errf(err, "%s%sduplicate key '%s', in '%s' (one object names it twice)", what, sep, dup->string,
                holder->string);
    else mt_errf(err, "%s%sduplicate key '%s' (one object names it twice)", what, sep, dup->string);
    cJSON_Delete(root);
    return NULL;
}

cJSON *mt_json_parse_body(const char *text, size_t len, const char *what, mt_err *err) {
    return no_duplicates(mt_json_parse_whole(text, len, what, err), what, err);
}

size_t mt_utf8_valid_prefix(const char *text, size_t len) {
    size_t i = 0;
    while (i < len) {
        if ((unsigned char)text[i] < 0x80) {
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &cp);
        if (n <= 0) break;
        i += (size_t)n;
    }
    return i;
}

/* mt_json_parse_text_keep_nul; *end_at gets the offset in text where the value ended. */
static cJSON *parse_text_keep_nul(const char *text, size_t len, const char *what, bool *kept_nul, size_t *end_at,
                                  mt_err *err) {
    long first = mt_json_find_nul(text, len);
    *kept_nul = first >= 0 && text[first] != '\0';
    if (*kept_nul) {
        size_t valid = mt_utf8_valid_prefix(text, len);
        if (valid < len) {
            mt_errf(err, "%s%snot valid UTF-8 (byte %zu)", what ? what : "", what ? ": " : "", valid);
            return NULL;
        }
    }
    return parse_keep_nul(text, len, what, end_at, err);
}

cJSON *mt_json_parse_text_keep_nul(const char *text, size_t len, const char *what, bool *kept_nul, mt_err *err) {
    size_t end;
    return parse_text_keep_nul(text, len, what, kept_nul, &end, err);
}

cJSON *mt_json_parse_body_keep_nul(const char *text, size_t len, const char *what, bool *kept_nul, mt_err *err) {
    size_t end = 0;
    cJSON *root = parse_text_keep_nul(text, len, what, kept_nul, &end, err);
    return no_duplicates(nothing_after(root, text, len, end, what, err), what, err);
}

/* mt_json_nul_string over node and its siblings; key: the member name enclosing them. */
static const cJSON *nul_below(const cJSON *node, const cJSON *skip, const char *key, const char **key_out,
                              bool *in_name) {
    for (; node; node = node->next) {
        const char *name = node->string ? node->string : key;
        if (node->string && mt_json_holds_nul(node->string)) {
            *in_name = true, *key_out = key;
            return node;
        }
        if (node == skip) continue;
        if (cJSON_IsString(node) && mt_json_holds_nul(node->valuestring)) {
            *in_name = false, *key_out = name;
            return node;
        }
        const cJSON *found = nul_below(node->child, skip, name, key_out, in_name);
        if (found) return found;
    }
    return NULL;
}

const cJSON *mt_json_nul_string(const cJSON *root, const cJSON *skip, const char **key, bool *in_name) {
    *key = NULL, *in_name = false;
    return root && root != skip ? nul_below(root->child, skip, NULL, key, in_name) : NULL;
}

int mt_json_nul_only_in(const cJSON *root, const char *key, const char *what, const char *where, mt_err *err) {
    const char *at;
    bool in_name;
    if (!mt_json_nul_string(root, cJSON_GetObjectItemCaseSensitive(root, key), &at, &in_name)) return 0;
    char holder[96] = "a member name";
    if (at && !mt_json_holds_nul(at))
        snprintf(holder, sizeof holder, in_name ? "a member name in '%.64s'" : "'%.64s'", at);
    return mt_errf(err, "%s%s%s holds U+0000, which moetrace reads only in %s", what ? what : "", what ? ": " : "",
                   holder, where);
}

cJSON *mt_json_text(const char *s, size_t n) {
    size_t nuls = 0;
    for (size_t i = 0; i < n; i++) nuls += s[i] == '\0';
    char *buf = malloc(n + nuls + 1);
    if (!buf) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i]) {
            buf[k++] = s[i];
        } else {
            buf[k++] = (char)0xC0;
            buf[k++] = (char)0x80;
        }
    }
    buf[k] = '\0';
    cJSON *str = cJSON_CreateString(buf);
    free(buf);
    return str;
}

/* Writes text[0..n) into out (when not NULL) with each C0 80 pair as \u0000 and each byte that
 * starts no valid UTF-8 sequence as U+FFFD; returns the length written. Runs of ASCII, all of a
 * routing body's base64, are copied whole. */
static size_t printable(const char *text, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t run = i;
        while (run < n && (unsigned char)text[run] < 0x80) run++;
        if (out) memcpy(out + k, text + i, run - i);
        k += run - i;
        if ((i = run) == n) break;
        const unsigned char *c = (const unsigned char *)text + i;
        utf8proc_int32_t cp;
        utf8proc_ssize_t len = utf8proc_iterate(c, (utf8proc_ssize_t)(n - i), &cp);
        const char *put = text + i;
        size_t take = len > 0 ? (size_t)len : 1, put_len = take;
        if (i + 1 < n && c[0] == 0xC0 && c[1] == 0x80) put = "\\u0000", take = 2, put_len = 6;
        else if (len <= 0) put = "\xEF\xBF\xBD", put_len = 3;
        if (out) memcpy(out + k, put, put_len);
        k += put_len;
        i += take;
    }
    return k;
}

char *mt_json_print(const cJSON *root) {
    char *text = cJSON_PrintUnformatted(root);
    if (!text) return NULL;
    size_t n = strlen(text);
    char *out = malloc(printable(text, n, NULL) + 1);
    if (out) out[printable(text, n, out)] = '\0';
    cJSON_free(text);
    return out;
}

static const cJSON *field(const cJSON *obj, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return (it && !cJSON_IsNull(it)) ? it : NULL;
}

int mt_json_int(const cJSON *obj, const char *key, int *value, mt_err *err) {
    const cJSON *it = field(obj, key);
    if (!it) return 0;
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || fabs(it->valuedouble) > 2147483647.0)
        return mt_errf(err, "field '%s' must be an integer", key);
    *value = (int)it->valuedouble;
    return 1;
}

int mt_json_float(const cJSON *obj, const char *key, float *value, mt_err *err) {
    const cJSON *it = field(obj, key);
    if (!it) return 0;
    if (!cJSON_IsNumber(it)) return mt_errf(err, "field '%s' must be a number", key);
    *value = (float)it->valuedouble;
    return 1;
}

int mt_json_bool(const cJSON *obj, const char *key, bool *value, mt_err *err) {
    const cJSON *it = field(obj, key);
    if (!it) return 0;
    if (!cJSON_IsBool(it)) return mt_errf(err, "field '%s' must be true or false", key);
    *value = cJSON_IsTrue(it);
    return 1;
}

int mt_json_label(const cJSON *obj, const char *key, size_t max_len, char **out, mt_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!v) return 0;
    char digits[24];
    const char *text = NULL;
    if (cJSON_IsString(v) && v->valuestring[0]) {
        text = v->valuestring;
    } else if (cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) <= 0x1p53) {
        snprintf(digits, sizeof digits, "%.0f", v->valuedouble); /* exact: an integer up to 2^53 */
        text = digits;
    }
    if (!text) return mt_errf(err, "'%s' must be a non-empty string or an integer", key);
    if (strlen(text) > max_len) return mt_errf(err, "'%s' is longer than %zu bytes", key, max_len);
    if (!(*out = strdup(text))) return mt_errf(err, "out of memory");
    return 1;
}

int mt_json_string(const cJSON *obj, const char *key, const char **value, mt_err *err) {
    const cJSON *it = field(obj, key);
    if (!it) return 0;
    if (!cJSON_IsString(it)) return mt_errf(err, "field '%s' must be a string", key);
    *value = it->valuestring;
    return 1;
}
