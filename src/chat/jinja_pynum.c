/* Python's number conversions as the chat-template filters need them: int(str, base) and
 * float(str) (PEP 515 underscores, surrounding whitespace, Unicode decimal digits), and
 * round(x, ndigits) (correctly rounded, ties to even; an int stays an int). Ints are 64-bit here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chat/jinja.h"

/* s stripped of Python whitespace, its decimal digits made ASCII, into out (NUL-terminated).
 * Returns 0, or -1 when another non-ASCII character or a NUL is left, or out is too small. */
static int ascii_number_text(const char *s, size_t n, char *out, size_t cap) {
    size_t a = 0, b = n, adv;
    while (a < b && ju_isspace(ju_decode(s + a, b - a, &adv))) a += adv;
    size_t st;
    while (b > a && ju_isspace(ju_decode_before(s, a, b, &st))) b = st;
    size_t k = 0;
    for (size_t i = a; i < b; i += adv) {
        int32_t cp = ju_decode(s + i, b - i, &adv);
        if (k + 1 >= cap || cp == 0) return -1;
        if (cp < 0x80) out[k++] = (char)cp;
        else if (ju_decimal_value(cp) >= 0) out[k++] = (char)('0' + ju_decimal_value(cp));
        else return -1;
    }
    out[k] = 0;
    return 0;
}

static int digit_of(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'Z') return ch - 'A' + 10;
    return 99;
}

int jx_py_int(const char *s, size_t n, int base, int64_t *out) {
    char t[256];
    if (base != 0 && (base < 2 || base > 36)) return JX_NUM_INVALID;
    if (ascii_number_text(s, n, t, sizeof t)) return JX_NUM_INVALID;
    const char *p = t;
    int neg = *p == '-';
    if (*p == '+' || *p == '-') p++;
    int prefixed = 0;
    if (p[0] == '0' && p[1]) {
        char x = (char)(p[1] | 0x20);
        int pb = x == 'x' ? 16 : x == 'o' ? 8 : x == 'b' ? 2 : 0;
        if (pb && (base == 0 || base == pb)) {
            base = pb;
            p += 2;
            prefixed = 1;
        }
    }
    int leading_zero_rule = base == 0; /* base 0 without a prefix: decimal, no leading zeros */
    if (base == 0) base = 10;
    if (prefixed && *p == '_') p++; /* one underscore may follow the prefix */
    if (!*p) return JX_NUM_INVALID;
    unsigned __int128 v = 0;
    int overflow = 0, nonzero = 0;
    for (const char *q = p; *q; q++) {
        if (*q == '_') {
            if (q == p || !q[1] || q[1] == '_') return JX_NUM_INVALID;
            continue;
        }
        int d = digit_of(*q);
        if (d >= base) return JX_NUM_INVALID;
        nonzero |= d != 0;
        if (!overflow) v = v * (unsigned)base + (unsigned)d;
        if (v > (unsigned __int128)INT64_MAX + 1) overflow = 1;
    }
    if (leading_zero_rule && p[0] == '0' && nonzero) return JX_NUM_INVALID;
    if (overflow || v > (unsigned __int128)INT64_MAX + (unsigned)neg) return JX_NUM_OVERFLOW;
    *out = neg ? (int64_t)(0 - (uint64_t)v) : (int64_t)v;
    return 0;
}

/* digitpart: digit (["_"] digit)*; returns the characters consumed (0: none). */
static size_t digit_part(const char *p) {
    size_t k = 0;
    if (!(p[0] >= '0' && p[0] <= '9')) return 0;
    while ((p[k] >= '0' && p[k] <= '9') || (p[k] == '_' && p[k + 1] >= '0' && p[k + 1] <= '9')) k++;
    return k;
}

int jx_py_float(const char *s, size_t n, double *out) {
    char t[512], clean[512];
    if (ascii_number_text(s, n, t, sizeof t)) return JX_NUM_INVALID;
    const char *p = t + (t[0] == '+' || t[0] == '-');
    if (!strcasecmp(p, "inf") || !strcasecmp(p, "infinity") || !strcasecmp(p, "nan")) {
        double v = (p[0] | 0x20) == 'n' ? NAN : INFINITY;
        *out = t[0] == '-' ? -v : v;
        return 0;
    }
    size_t k = digit_part(p), frac = 0;
    if (p[k] == '.') {
        frac = digit_part(p + k + 1);
        if (!k && !frac) return JX_NUM_INVALID;
        k += 1 + frac;
    } else if (!k) {
        return JX_NUM_INVALID;
    }
    if ((p[k] | 0x20) == 'e') {
        size_t e = k + 1 + (p[k + 1] == '+' || p[k + 1] == '-');
        size_t ed = digit_part(p + e);
        if (!ed) return JX_NUM_INVALID;
        k = e + ed;
    }
    if (p[k]) return JX_NUM_INVALID;
    size_t m = 0;
    for (const char *q = t; *q; q++)
        if (*q != '_') clean[m++] = *q;
    clean[m] = 0;
    *out = strtod(clean, NULL);
    return 0;
}

/* ---- round ---- */

/* Adds one to the decimal digit string d (n digits, room for one more in front); returns its start. */
static char *decimal_increment(char *d, size_t n) {
    for (size_t i = n; i-- > 0;) {
        if (d[i] != '9') {
            d[i]++;
            return d;
        }
        d[i] = '0';
    }
    *--d = '1';
    return d;
}

/* round(x, -k) for k >= 1: to a multiple of 10^k, ties to even, from x's exact decimal digits. */
static double round_to_tens(double x, int64_t k) {
    if (fabs(x) < 1 || k > 400) return 0.0 * x;
    char buf[512];
    snprintf(buf + 1, sizeof buf - 1, "%.60f", fabs(x)); /* a double >= 1 has at most 52 fractional bits */
    char *ip = buf + 1, *dot = strchr(ip, '.');
    size_t ilen = (size_t)(dot - ip);
    int frac_nonzero = strspn(dot + 1, "0") != strlen(dot + 1);
    const char *q = "0";
    if ((int64_t)ilen < k) { /* |x| < 10^k: 0, or 10^k past the half */
        int past_half = (int64_t)ilen == k && (ip[0] > '5' || (ip[0] == '5' && (strspn(ip + 1, "0") < ilen - 1 || frac_nonzero)));
        if (past_half) q = "1";
    } else {
        size_t qlen = ilen - (size_t)k;
        const char *r = ip + qlen;
        int cmp = r[0] > '5' ? 1 : r[0] < '5' ? -1 : (strspn(r + 1, "0") < (size_t)k - 1 || frac_nonzero) ? 1 : 0;
        int q_odd = qlen && (ip[qlen - 1] - '0') % 2;
        ip[qlen] = 0;
        q = cmp > 0 || (cmp == 0 && q_odd) ? decimal_increment(ip, qlen) : qlen ? ip : "0";
    }
    char out[600];
    snprintf(out, sizeof out, "%s%se%lld", x < 0 ? "-" : "", q, (long long)k);
    return strtod(out, NULL);
}

double jx_py_round_float(double x, int64_t ndigits) {
    if (!isfinite(x) || x == 0) return x;
    if (ndigits > 323) return x;
    if (ndigits < -308) return 0.0 * x;
    if (ndigits < 0) return round_to_tens(x, -ndigits);
    char buf[800];
    snprintf(buf, sizeof buf, "%.*f", (int)ndigits, x); /* glibc prints the exact value, rounded half to even */
    return strtod(buf, NULL);
}

int jx_py_round_int(int64_t x, int64_t ndigits, int64_t *out) {
    if (ndigits >= 0) {
        *out = x;
        return 0;
    }
    if (ndigits < -19) {
        *out = 0;
        return 0;
    }
    __int128 m = 1;
    for (int64_t i = 0; i < -ndigits; i++) m *= 10;
    __int128 v = x, q = v / m, r = v % m;
    if (r < 0) { /* floor division */
        r += m;
        q--;
    }
    if (2 * r > m || (2 * r == m && (q & 1))) q++;
    __int128 res = q * m;
    if (res > INT64_MAX || res < INT64_MIN) return JX_NUM_OVERFLOW;
    *out = (int64_t)res;
    return 0;
}
