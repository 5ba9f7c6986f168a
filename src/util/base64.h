/* Base64 (RFC 4648 §4: the standard alphabet with '=' padding), as Python's base64.b64encode and
 * b64decode use. The routing wire format (SPEC §2) is base64 of raw little-endian bytes. */
#ifndef MT_UTIL_BASE64_H
#define MT_UTIL_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Characters of the encoding of n bytes (without a terminating NUL). */
size_t mt_base64_encoded_len(size_t n);

/* Writes the encoding of data[n] into out (mt_base64_encoded_len(n) characters, then a NUL). */
void mt_base64_encode_into(const void *data, size_t n, char *out);

/* The encoding as a malloc'd NUL-terminated string; NULL when out of memory. */
char *mt_base64_encode(const void *data, size_t n);

/* Decodes len characters (length a multiple of 4, padding only at the end, no whitespace) into a
 * malloc'd buffer of *out_len bytes. Returns 0, or -1 on invalid input or out of memory. */
int mt_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len);

#endif
