/* Small helpers over cJSON: parsing untrusted JSON, reading optional typed fields, and whole files
 * into memory. */
#ifndef MT_UTIL_JSON_UTIL_H
#define MT_UTIL_JSON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "util/err.h"

/* The offset of the first byte of text[0..len) that starts no valid UTF-8 sequence (utf8proc's
 * reading: no overlong forms, surrogates or code points past U+10FFFF), or len when all do. JSON
 * text is UTF-8 (RFC 8259); the readers that must refuse anything else call it. */
size_t mt_utf8_valid_prefix(const char *text, size_t len);

/* Reads a whole file into a NUL-terminated buffer (free() it). NULL + err on failure. */
char *mt_read_file(const char *path, size_t *len, mt_err *err);
/* Parses a JSON file with mt_json_parse (what = the path): errors name the file and the position of
 * the syntax error or of the U+0000. */
cJSON *mt_json_load_file(const char *path, mt_err *err);

/* Parses untrusted JSON text of len bytes (it need not be NUL-terminated). cJSON keeps strings as C
 * strings, so a string (member name or value) holding U+0000 would silently end there: such text
 * is refused instead, whether the NUL is written as the escape \u0000 or as a raw byte. Bytes after
 * the JSON value are not parsed; *end (when end is not NULL) gets where the value ended. Returns the
 * tree (cJSON_Delete it), or NULL with err "<what>: invalid JSON near byte N" or "<what>: a string
 * holds U+0000 (\u0000 at byte N), which is not supported"; what may be NULL (no prefix). */
cJSON *mt_json_parse(const char *text, size_t len, const char *what, const char **end, mt_err *err);

/* mt_json_parse for files whose strings may hold U+0000 (a tokenizer.json's vocabulary may have a
 * token "\u0000"): each escape \u0000 inside a string is kept as the two bytes C0 80, as
 * mt_json_text keeps a NUL, instead of being refused; mt_json_unmask_nul turns them back. The text
 * must be valid UTF-8 (checked by the caller), so that C0 80 comes only from an escape. A raw NUL
 * byte in a string is still refused, and error offsets are those of the text as given. */
cJSON *mt_json_parse_keep_nul(const char *text, size_t len, const char *what, mt_err *err);
/* Copies the n bytes at s to out with every C0 80 pair as one NUL byte (out holds n bytes at
 * least; it may be s itself); returns the length written. */
size_t mt_json_unmask_nul(const char *s, size_t n, char *out);
/* The bytes of a string of such a tree, malloc'd and NUL-terminated past *len (NULL when out of
 * memory); and whether it holds U+0000, for fields that must stay C strings. */
char *mt_json_bytes(const char *s, size_t *len);
bool mt_json_holds_nul(const char *s);

/* A number of a tree mt_json_parse made, exactly, when its text was an integer of more than 15
 * digits that fits an int64 (cJSON keeps numbers as doubles, exact only up to 2^53; the parse keeps
 * such a literal's text beside it, as the node's valuestring). false for other numbers: read
 * valuedouble. */
bool mt_json_int64(const cJSON *number, int64_t *out);

/* The same for text that must hold one JSON value and nothing else but whitespace (a request body):
 * anything after the value is "<what>: unexpected text after the JSON value at byte N". */
cJSON *mt_json_parse_whole(const char *text, size_t len, const char *what, mt_err *err);

/* The first member (in key order) that an object of the tree, at any depth, names a second time, or
 * NULL when no object does; *object (when object is not NULL) gets the object holding it. cJSON
 * keeps every duplicate and its lookups find the first one, while Python's json, orjson and
 * JavaScript keep the last. Sets *oom and returns NULL when out of memory (NULL: not asked). */
const cJSON *mt_json_duplicate_key(const cJSON *root, const cJSON **object, bool *oom);

/* An HTTP request body: mt_json_parse_whole, and refused when an object names a key twice (clients'
 * parsers take the last, cJSON the first: the request would run with other values than its sender
 * reads back), with err "<what>: duplicate key 'k'" (", in 'parent'" when the object is a named
 * member). Files (config.json, tokenizer.json, ...) are read as their own libraries read them, with
 * mt_json_parse, duplicates allowed. */
cJSON *mt_json_parse_body(const char *text, size_t len, const char *what, mt_err *err);

/* mt_json_parse (end not given) for a record whose prompt text may hold U+0000. Text without the
 * escape \u0000 in a string is parsed exactly as mt_json_parse does, *kept_nul false. Text with it
 * must be valid UTF-8 ("<what>: not valid UTF-8 (byte N)") and is parsed as mt_json_parse_keep_nul
 * does (each \u0000 kept as C0 80), *kept_nul true: the caller then reads the strings that may hold
 * NUL with mt_json_bytes and refuses the others (mt_json_nul_string). A raw NUL is still refused.
 * mt_json_parse_body_keep_nul is the same for a request body (the checks of mt_json_parse_body). */
cJSON *mt_json_parse_text_keep_nul(const char *text, size_t len, const char *what, bool *kept_nul, mt_err *err);
cJSON *mt_json_parse_body_keep_nul(const char *text, size_t len, const char *what, bool *kept_nul, mt_err *err);
/* The first node under root (root's own name and value excepted) whose member name (*in_name true)
 * or string value (*in_name false) holds C0 80, skipping the values of skip and of everything inside
 * it (its own name is still looked at); NULL when there is none. *key gets the name of the member
 * that holds the string (for a name, or a string in a list, the member enclosing it), NULL when
 * none does. */
const cJSON *mt_json_nul_string(const cJSON *root, const cJSON *skip, const char **key, bool *in_name);
/* 0 when no string of the object root outside its member key holds C0 80 (mt_json_nul_string);
 * else -1 with err "<what>: 'm' holds U+0000, which moetrace reads only in <where>", naming the
 * member m that holds it ("a member name in 'm'" for a name); what may be NULL (no prefix). */
int mt_json_nul_only_in(const cJSON *root, const char *key, const char *what, const char *where, mt_err *err);

/* A JSON string of the n bytes at s, NUL bytes included. Decoded model output may hold U+0000 (a
 * byte-level token for byte 0), which cJSON's C strings would end at: each NUL is kept as the two
 * bytes C0 80, which valid UTF-8 never holds (decoded text is valid UTF-8), and mt_json_print
 * writes them out as \u0000. NULL when out of memory. */
cJSON *mt_json_text(const char *s, size_t n);
/* cJSON_PrintUnformatted, with every C0 80 pair that mt_json_text made written as \u0000, and every
 * other byte that starts no valid UTF-8 sequence (a message quoting a file's bytes, or cut inside a
 * character) as U+FFFD, so the text is always valid UTF-8 JSON (malloc'd: free() it; NULL when out
 * of memory). */
char *mt_json_print(const cJSON *root);

/* Offset of the first U+0000 inside a string of the JSON text[0..len): the backslash of an escape
 * \u0000 or a raw NUL byte; -1 when there is none. Follows JSON's string syntax, so an escaped
 * backslash followed by the letters u0000 (the raw text \\u0000) is no NUL. Never reads past len. */
long mt_json_find_nul(const char *text, size_t len);

/* Field getters: return 1 when the field exists with the right type (value stored), 0 when it is
 * absent or JSON null (value untouched), -1 when it exists with the wrong type (err names it). */
int mt_json_int(const cJSON *obj, const char *key, int *value, mt_err *err);
int mt_json_float(const cJSON *obj, const char *key, float *value, mt_err *err);
int mt_json_bool(const cJSON *obj, const char *key, bool *value, mt_err *err);
int mt_json_string(const cJSON *obj, const char *key, const char **value, mt_err *err);
/* Field key as a label (a domain, a request's name): a non-empty string of at most max_len bytes,
 * or an integer up to 2^53 in magnitude as its decimal digits, into *out (malloc'd). 1 when
 * present, 0 when absent (*out NULL), -1 otherwise, JSON null included (err names the field). */
int mt_json_label(const cJSON *obj, const char *key, size_t max_len, char **out, mt_err *err);

#endif
