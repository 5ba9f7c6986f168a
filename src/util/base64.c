#include "util/base64.h"

#include <stdlib.h>

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t mt_base64_encoded_len(size_t n) { return (n + 2) / 3 * 4; }

void mt_base64_encode_into(const void *data, size_t n, char *out) {
    const uint8_t *in = data;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = ALPHABET[v >> 18];
        *out++ = ALPHABET[(v >> 12) & 63];
        *out++ = ALPHABET[(v >> 6) & 63];
        *out++ = ALPHABET[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = ALPHABET[v >> 18];
        *out++ = ALPHABET[(v >> 12) & 63];
        *out++ = '=';
        *out++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = ALPHABET[v >> 18];
        *out++ = ALPHABET[(v >> 12) & 63];
        *out++ = ALPHABET[(v >> 6) & 63];
        *out++ = '=';
    }
    *out = '\0';
}

char *mt_base64_encode(const void *data, size_t n) {
    char *out = malloc(mt_base64_encoded_len(n) + 1);
    if (out) mt_base64_encode_into(data, n, out);
    return out;
}

static int sextet(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int mt_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len) {
    if (len % 4) return -1;
    size_t pad = 0;
    if (len >= 1 && text[len - 1] == '=') pad++;
    if (len >= 2 && text[len - 2] == '=') pad++;
    size_t n = len / 4 * 3 - pad;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        int s[4];
        for (int k = 0; k < 4; k++) {
            s[k] = sextet(text[i + k]);
            if (s[k] < 0 && !(last && text[i + k] == '=' && k >= 4 - (int)pad)) {
                free(buf);
                return -1;
            }
        }
        uint32_t v = (uint32_t)(s[0] & 63) << 18 | (uint32_t)(s[1] & 63) << 12 |
                     (uint32_t)(s[2] < 0 ? 0 : s[2]) << 6 | (uint32_t)(s[3] < 0 ? 0 : s[3]);
        buf[o++] = (uint8_t)(v >> 16);
        if (o < n) buf[o++] = (uint8_t)(v >> 8);
        if (o < n) buf[o++] = (uint8_t)v;
    }
    *out = buf;
    *out_len = n;
    return 0;
}
