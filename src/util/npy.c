#include "util/npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/json_util.h"

int mt_npy_write(const char *path, mt_npy_type type, const void *data, int ndim, const int64_t *shape, mt_err *err) {
    char dict[256], shp[160] = "";
    int64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        count *= shape[i];
        snprintf(shp + strlen(shp), sizeof shp - strlen(shp), "%lld,%s", (long long)shape[i],
                 (ndim > 1 && i < ndim - 1) ? " " : "");
    }
    if (ndim > 1) shp[strlen(shp) - 1] = '\0'; /* numpy writes (2, 3) but (2,) */
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                       type == MT_NPY_F32 ? "<f4" : "<i4", shp);
    int total = 10 + len + 1;
    int pad = (64 - total % 64) % 64;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return mt_errf(err, "%s: %s", path, strerror(errno));
    uint16_t hlen = (uint16_t)(len + pad + 1);
    unsigned char magic[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8)};
    fwrite(magic, 1, 10, f);
    fwrite(dict, 1, (size_t)len, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    fwrite(data, 4, (size_t)count, f);
    int bad = ferror(f);
    if (fclose(f) || bad || rename(tmp, path)) {
        remove(tmp);
        return mt_errf(err, "%s: write failed", path);
    }
    return 0;
}

int mt_npy_read(const char *path, mt_npy *out, mt_err *err) {
    memset(out, 0, sizeof *out);
    size_t len;
    char *buf = mt_read_file(path, &len, err);
    if (!buf) return -1;
    int rc = -1;
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) {
        mt_errf(err, "%s: not a .npy file", path);
        goto done;
    }
    size_t hlen = (unsigned char)buf[8] | ((size_t)(unsigned char)buf[9] << 8), off = 10;
    if (buf[6] >= 2) {
        if (len < 12) goto bad;
        hlen = hlen | ((size_t)(unsigned char)buf[10] << 16) | ((size_t)(unsigned char)buf[11] << 24);
        off = 12;
    }
    if (off + hlen > len) goto bad;
    char header[1024];
    snprintf(header, sizeof header, "%.*s", (int)(hlen < sizeof header - 1 ? hlen : sizeof header - 1), buf + off);
    if (strstr(header, "'<f4'")) out->type = MT_NPY_F32;
    else if (strstr(header, "'<i4'")) out->type = MT_NPY_I32;
    else {
        mt_errf(err, "%s: only <f4 and <i4 arrays are supported", path);
        goto done;
    }
    if (strstr(header, "'fortran_order': True")) {
        mt_errf(err, "%s: Fortran order is not supported", path);
        goto done;
    }
    char *s = strstr(header, "'shape': (");
    if (!s) goto bad;
    s += 10;
    out->count = 1;
    size_t data_len = len - off - hlen;
    while (*s && *s != ')') {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s) break;
        /* dimensions are non-negative and their product must fit the data (no overflow) */
        if (out->ndim == 8 || v < 0 || (v > 0 && (size_t)out->count > data_len / 4 / (size_t)v)) goto bad;
        out->shape[out->ndim++] = v;
        out->count *= v;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    if ((size_t)out->count * 4 != data_len) goto bad;
    out->data = malloc((size_t)out->count * 4 + 1);
    if (!out->data) {
        mt_errf(err, "%s: out of memory", path);
        goto done;
    }
    memcpy(out->data, buf + off + hlen, (size_t)out->count * 4);
    rc = 0;
    goto done;
bad:
    mt_errf(err, "%s: malformed .npy header or size", path);
done:
    free(buf);
    return rc;
}

void mt_npy_free(mt_npy *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}
