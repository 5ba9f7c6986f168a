/* safetensors reader: every file is mapped read-only, its JSON header parsed with cJSON and
 * validated, and all tensors of all shards are gathered into one array sorted by name.
 * Format (https://github.com/huggingface/safetensors, README "Format"): u64 little-endian header
 * length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"},
 * then the data section; offsets are relative to its start (byte 8 + N). */
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/err.h"
#include "util/host_memory.h"
#include "util/json_util.h"

#define MAX_HEADER (100u << 20)          /* larger headers are rejected as absurd */
#define MAX_JSON_INT 9007199254740992.0  /* 2^53: doubles hold every integer below it */
#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define READ_CHUNK (64u << 20)           /* private reads: bytes per pread, a multiple of every element size */
#define NONFINITE_WARNINGS 8             /* tensors named in warnings per checkpoint; the rest are counted */

typedef struct st_file {
    char *path;
    void *map;      /* the file's mapping, or (private) anonymous memory holding what was read of it */
    size_t size;
    cJSON *json;    /* the header; tensor names point into it */
    int fd;         /* mapped: kept open to see whether the file changes; private: -1 once read */
    struct timespec mtime, ctime; /* when opened (ctime also moves on writes that keep the mtime) */
} st_file;

struct mt_checkpoint {
    char *path;
    mt_checkpoint_mode mode;
    double memory_available; /* private: host memory available at open (0: unknown) */
    double private_bytes;    /* private: bytes of anonymous memory taken so far */
    int nonfinite_tensors;   /* private: tensors holding NaN or Inf */
    st_file *files;
    int nfiles;
    mt_tensor_info *tensors;
    int ntensors;
    void **copies; /* aligned copies of the tensors whose mapped data is not (ncopies of them) */
    int ncopies;
};

/* Every dtype the safetensors format defines, with its width in bits. The first three are the
 * ones moetrace reads; the others are kept as unsupported. */
static const struct { const char *name; unsigned bits; mt_dtype dt; } DTYPES[] = {
    {"F32", 32, MT_F32}, {"F16", 16, MT_F16}, {"BF16", 16, MT_BF16},
    {"BOOL", 8, MT_DTYPE_COUNT}, {"U8", 8, MT_DTYPE_COUNT}, {"I8", 8, MT_DTYPE_COUNT},
    {"U16", 16, MT_DTYPE_COUNT}, {"I16", 16, MT_DTYPE_COUNT}, {"U32", 32, MT_DTYPE_COUNT},
    {"I32", 32, MT_DTYPE_COUNT}, {"U64", 64, MT_DTYPE_COUNT}, {"I64", 64, MT_DTYPE_COUNT},
    {"F64", 64, MT_DTYPE_COUNT}, {"C64", 64, MT_DTYPE_COUNT}, {"F4", 4, MT_DTYPE_COUNT},
    {"F6_E2M3", 6, MT_DTYPE_COUNT}, {"F6_E3M2", 6, MT_DTYPE_COUNT},
    {"F8_E4M3", 8, MT_DTYPE_COUNT}, {"F8_E5M2", 8, MT_DTYPE_COUNT},
    {"F8_E8M0", 8, MT_DTYPE_COUNT}, {"F8_E4M3FNUZ", 8, MT_DTYPE_COUNT},
    {"F8_E5M2FNUZ", 8, MT_DTYPE_COUNT},
};

typedef struct span { uint64_t begin, end; const char *name; int tensor; } span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const mt_tensor_info *)a)->name, ((const mt_tensor_info *)b)->name);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A JSON number that is a non-negative integer below 2^53. */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d < MAX_JSON_INT) || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

/* Validates one header entry and fills *t and *sp. data_size is the data section's length. */
static int parse_entry(const st_file *f, const cJSON *e, size_t hdr_end, mt_tensor_info *t,
                       span *sp, mt_err *err) {
    const char *name = e->string;
    const uint64_t data_size = f->size - hdr_end;
    if (!cJSON_IsObject(e)) return mt_errf(err, "%s: tensor '%s': entry is not an object", f->path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(dt)) return mt_errf(err, "%s: tensor '%s': missing string \"dtype\"", f->path, name);
    size_t k = 0, nd = sizeof DTYPES / sizeof DTYPES[0];
    while (k < nd && strcmp(DTYPES[k].name, dt->valuestring) != 0) k++;
    if (k == nd) return mt_errf(err, "%s: tensor '%s': unknown dtype '%s'", f->path, name, dt->valuestring);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsArray(shape)) return mt_errf(err, "%s: tensor '%s': \"shape\" is not a list", f->path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > MT_MAX_DIMS)
        return mt_errf(err, "%s: tensor '%s': %d dims, at most %d supported", f->path, name, ndim, MT_MAX_DIMS);
    uint64_t numel = 1;
    bool overflow = false;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        uint64_t dim;
        if (!json_uint(d, &dim))
            return mt_errf(err, "%s: tensor '%s': shape[%d] is not a non-negative integer", f->path, name, i);
        t->shape[i++] = (int64_t)dim;
        if (dim && numel > UINT64_MAX / dim) overflow = true;
        numel *= dim;
    }

    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_uint(off->child, &begin) ||
        !json_uint(off->child->next, &end) || begin > end)
        return mt_errf(err, "%s: tensor '%s': \"data_offsets\" is not [begin, end] with 0 <= begin <= end",
                       f->path, name);
    if (end > data_size)
        return mt_errf(err, "%s: tensor '%s': data_offsets [%llu, %llu] run past the data section (%llu bytes)",
                       f->path, name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)data_size);
    unsigned bits = DTYPES[k].bits;
    if (overflow || numel > UINT64_MAX / bits)
        return mt_errf(err, "%s: tensor '%s': shape has too many elements", f->path, name);
    if ((numel * bits) % 8 || numel * bits / 8 != end - begin)
        return mt_errf(err, "%s: tensor '%s': %llu elements of %s need %llu %s, data_offsets [%llu, %llu] "
                       "hold %llu", f->path, name, (unsigned long long)numel, DTYPES[k].name,
                       (unsigned long long)(bits % 8 ? numel * bits : numel * bits / 8),
                       bits % 8 ? "bits" : "bytes",
                       (unsigned long long)begin, (unsigned long long)end, (unsigned long long)(end - begin));
    bool supported = DTYPES[k].dt != MT_DTYPE_COUNT;

    t->name = name;
    t->dtype = DTYPES[k].dt;
    t->ndim = ndim;
    t->data = (const unsigned char *)f->map + hdr_end + begin;
    t->nbytes = (size_t)(end - begin);
    t->file = f->path;
    t->dtype_name = DTYPES[k].name;
    t->supported = supported;
    *sp = (span){begin, end, name, 0};
    return 0;
}

/* A name the header of f gives two tensors (JSON allows it, the format does not). */
static int check_names(const st_file *f, const span *spans, int ns, mt_err *err) {
    const char **names = malloc((size_t)(ns + 1) * sizeof *names);
    if (!names) return mt_errf(err, "%s: out of memory", f->path);
    for (int i = 0; i < ns; i++) names[i] = spans[i].name;
    qsort(names, (size_t)ns, sizeof *names, cmp_str);
    int rc = 0;
    for (int i = 1; i < ns && rc == 0; i++)
        if (strcmp(names[i - 1], names[i]) == 0) rc = mt_errf(err, "%s: duplicate tensor name '%s'", f->path, names[i]);
    free(names);
    return rc;
}

/* Reads [from, to) of f into its anonymous memory. A short read means the file shrank since it was
 * measured: another process is writing it. */
static int read_range(const st_file *f, size_t from, size_t to, mt_err *err) {
    unsigned char *dst = f->map;
    while (from < to) {
        size_t want = to - from < READ_CHUNK ? to - from : READ_CHUNK;
        ssize_t got = pread(f->fd, dst + from, want, (off_t)from);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return mt_errf(err, "cannot read %s: %s", f->path, strerror(errno));
        if (got == 0)
            return mt_errf(err, "%s: ends at byte %zu of the %zu it had when opened (is it being written?)", f->path,
                           from, f->size);
        from += (size_t)got;
    }
    return 0;
}

/* Elements of a float tensor's n bytes at p that are NaN or infinite (exponent bits all set). A
 * clean tensor, the usual case, is scanned a word at a time; one that is not is counted exactly. */
static size_t count_nonfinite(mt_dtype dt, const unsigned char *p, size_t n) {
    const bool f32 = dt == MT_F32;
    const uint64_t lanes = f32 ? 0x0000000100000001ull : 0x0001000100010001ull, top = lanes << (f32 ? 31 : 15);
    const uint64_t exponent = (f32 ? 0x7f800000ull : dt == MT_BF16 ? 0x7f80ull : 0x7c00ull) * lanes;
    uint64_t any = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w, t;
        memcpy(&w, p + i, 8);
        t = (w & exponent) ^ exponent; /* a lane of 0: all its exponent bits set */
        any |= (t - lanes) & ~t & top;
    }
    size_t bad = 0, width = f32 ? 4 : 2;
    for (size_t j = any ? 0 : i; j + width <= n; j += width) {
        uint32_t v = 0;
        memcpy(&v, p + j, width); /* little-endian, as the format stores it */
        bad += (v & (uint32_t)(exponent / lanes)) == (uint32_t)(exponent / lanes);
    }
    return bad;
}

static void warn_nonfinite(mt_checkpoint *ck, const st_file *f, const mt_tensor_info *t, size_t bad) {
    if (ck->nonfinite_tensors++ < NONFINITE_WARNINGS)
        mt_log("warning: %s: tensor '%s' holds %zu NaN or infinite value%s of %zu", f->path, t->name, bad,
               bad == 1 ? "" : "s", t->nbytes / mt_dtype_size(t->dtype));
    else if (ck->nonfinite_tensors == NONFINITE_WARNINGS + 1)
        mt_log("warning: %s: more tensors hold NaN or infinite values (only the first %d are named)", f->path,
               NONFINITE_WARNINGS);
}

/* Private: reads every tensor's bytes (spans in file order) and, while they are in the cache, counts
 * the float tensors' non-finite values. Bytes outside every tensor are not read. */
static int read_tensors(mt_checkpoint *ck, const st_file *f, size_t hdr_end, const span *spans, int ns,
                        mt_err *err) {
    for (int i = 0; i < ns; i++) {
        const mt_tensor_info *t = &ck->tensors[spans[i].tensor];
        size_t begin = hdr_end + (size_t)spans[i].begin, end = hdr_end + (size_t)spans[i].end, bad = 0;
        for (size_t at = begin; at < end; at += READ_CHUNK) {
            size_t upto = end - at < READ_CHUNK ? end : at + READ_CHUNK;
            if (read_range(f, at, upto, err)) return -1;
            if (t->supported) bad += count_nonfinite(t->dtype, (const unsigned char *)f->map + at, upto - at);
        }
        if (bad) warn_nonfinite(ck, f, t, bad);
    }
    return 0;
}

/* Makes the memory of file f: its read-only mapping, or (private) anonymous memory of its size that
 * read_range fills, after checking it fits what the host has. */
static int map_file(mt_checkpoint *ck, st_file *f, mt_err *err) {
    if (ck->mode == MT_CHECKPOINT_MAPPED) {
        f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, f->fd, 0);
        if (f->map == MAP_FAILED) return f->map = NULL, mt_errf(err, "cannot mmap %s: %s", f->path, strerror(errno));
        return 0;
    }
    const double gib = 1024.0 * 1024.0 * 1024.0;
    if (ck->memory_available > 0 && ck->private_bytes + (double)f->size > ck->memory_available)
        return mt_errf(err, "%s: the checkpoint's files need %.2f GiB of host memory so far, %.2f GiB is available "
                       "(MemAvailable of /proc/meminfo)", f->path, (ck->private_bytes + (double)f->size) / gib,
                       ck->memory_available / gib);
    f->map = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (f->map == MAP_FAILED)
        return f->map = NULL, mt_errf(err, "%s: out of memory for its %zu bytes", f->path, f->size);
    ck->private_bytes += (double)f->size;
    return 0;
}

/* Opens one file, validates its header and appends its tensors to ck. */
static int open_file(mt_checkpoint *ck, const char *path, mt_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mt_errf(err, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mt_errf(err, "%s: not a regular file", path);
    }
    if (st.st_size < 8) {
        close(fd);
        return mt_errf(err, "%s: %lld bytes, too short for a safetensors header", path, (long long)st.st_size);
    }
    st_file *files = realloc(ck->files, (size_t)(ck->nfiles + 1) * sizeof *files);
    char *copy = strdup(path);
    if (files) ck->files = files;
    if (!files || !copy) {
        free(copy);
        close(fd);
        return mt_errf(err, "%s: out of memory", path);
    }
    st_file *f = &files[ck->nfiles++];
    *f = (st_file){copy, NULL, (size_t)st.st_size, NULL, fd, st.st_mtim, st.st_ctim}; /* owned by ck from here on */
    if (map_file(ck, f, err)) return -1;
    bool private = ck->mode == MT_CHECKPOINT_PRIVATE;
    size_t head = f->size < 1024 ? f->size : 1024;
    if (private && read_range(f, 0, head, err)) return -1;

    const unsigned char *p = f->map;
    static const char lfs[] = "version https://git-lfs.github.com/spec/";
    if (f->size >= sizeof lfs - 1 && f->size < 1024 && memcmp(p, lfs, sizeof lfs - 1) == 0)
        return mt_errf(err, "%s: a Git LFS pointer file, not the weights (the repository was cloned without them: "
                       "run `git lfs pull` in it, or download the file)", path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | p[i];
    if (n > MAX_HEADER)
        return mt_errf(err, "%s: header length %llu is absurd (> 100 MB)", path, (unsigned long long)n);
    if (n > f->size - 8)
        return mt_errf(err, "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                       (unsigned long long)n, f->size);
    if (private && 8 + n > head && read_range(f, head, 8 + (size_t)n, err)) return -1;
    const char *hdr = (const char *)p + 8, *end = NULL;
    size_t valid = mt_utf8_valid_prefix(hdr, (size_t)n);
    if (valid < (size_t)n)
        return mt_errf(err, "%s: invalid UTF-8 at byte %zu of the header (the format's header is UTF-8 JSON)", path,
                       valid);
    char what[4096 + 16];
    snprintf(what, sizeof what, "%s: header", path);
    if (!(f->json = mt_json_parse(hdr, (size_t)n, what, &end, err))) return -1;
    for (; end < hdr + n; end++) /* writers pad the header with spaces */
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r' && *end != '\0')
            return mt_errf(err, "%s: unexpected bytes after the JSON header (byte %td)", path, end - hdr);
    if (!cJSON_IsObject(f->json)) return mt_errf(err, "%s: header is not a JSON object", path);

    int count = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, f->json) count++;
    mt_tensor_info *ts = realloc(ck->tensors, (size_t)(ck->ntensors + count + 1) * sizeof *ts);
    span *spans = malloc((size_t)(count + 1) * sizeof *spans);
    if (ts) ck->tensors = ts;
    if (!ts || !spans) {
        free(spans);
        return mt_errf(err, "%s: out of memory", path);
    }
    int ns = 0, rc = 0;
    cJSON_ArrayForEach(e, f->json) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) rc = mt_errf(err, "%s: \"__metadata__\" is not an object", path);
        } else {
            mt_tensor_info *t = &ck->tensors[ck->ntensors];
            memset(t, 0, sizeof *t);
            rc = parse_entry(f, e, 8 + (size_t)n, t, &spans[ns], err);
            if (rc == 0) spans[ns++].tensor = ck->ntensors++;
        }
        if (rc) break;
    }
    if (rc == 0) rc = check_names(f, spans, ns, err);
    if (rc == 0) { /* no two tensors may share bytes; empty ones occupy none */
        qsort(spans, (size_t)ns, sizeof *spans, cmp_span);
        const span *prev = NULL;
        for (int i = 0; i < ns && rc == 0; i++) {
            if (spans[i].begin == spans[i].end) continue;
            if (prev && spans[i].begin < prev->end)
                rc = mt_errf(err, "%s: tensors '%s' and '%s' overlap in the data section", path, prev->name,
                             spans[i].name);
            if (!prev || spans[i].end > prev->end) prev = &spans[i];
        }
    }
    if (rc == 0 && private) {
        rc = read_tensors(ck, f, 8 + (size_t)n, spans, ns, err);
        close(f->fd);
        f->fd = -1;
        if (rc == 0 && mprotect(f->map, f->size, PROT_READ) != 0)
            rc = mt_errf(err, "%s: cannot make its memory read-only: %s", path, strerror(errno));
    }
    free(spans);
    /* The format does not require alignment (writers such as MLX's pack tensors after an unpadded
     * header): a supported tensor whose data is not aligned to its element size is copied into an
     * aligned buffer, the others stay where they are. */
    for (int i = ck->ntensors - ns; rc == 0 && i < ck->ntensors; i++) {
        mt_tensor_info *t = &ck->tensors[i];
        if (!t->supported || t->nbytes == 0 || (uintptr_t)t->data % mt_dtype_size(t->dtype) == 0) continue;
        void **copies = realloc(ck->copies, (size_t)(ck->ncopies + 1) * sizeof *copies);
        void *aligned = malloc(t->nbytes);
        if (copies) ck->copies = copies;
        if (!copies || !aligned) {
            free(aligned);
            rc = mt_errf(err, "%s: tensor '%s': out of memory for an aligned copy of %zu bytes", path, t->name,
                         t->nbytes);
            break;
        }
        memcpy(aligned, t->data, t->nbytes);
        ck->copies[ck->ncopies++] = aligned;
        t->data = aligned;
    }
    return rc;
}

/* Sorts the tensors by name; a name seen twice is an error. */
static int finish(mt_checkpoint *ck, mt_err *err) {
    if (ck->ntensors > 1) qsort(ck->tensors, (size_t)ck->ntensors, sizeof *ck->tensors, cmp_tensor);
    for (int i = 1; i < ck->ntensors; i++) {
        const mt_tensor_info *a = &ck->tensors[i - 1], *b = &ck->tensors[i];
        if (strcmp(a->name, b->name) != 0) continue;
        if (a->file == b->file) return mt_errf(err, "%s: duplicate tensor name '%s'", a->file, a->name);
        return mt_errf(err, "tensor '%s' appears in both %s and %s", a->name, a->file, b->file);
    }
    return 0;
}

static char *join(const char *dir, const char *name) {
    size_t ld = strlen(dir);
    bool slash = ld > 0 && dir[ld - 1] == '/';
    char *s = malloc(ld + strlen(name) + 2);
    if (s) sprintf(s, "%s%s%s", dir, slash ? "" : "/", name);
    return s;
}

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static char *read_text(const char *path, size_t *len, mt_err *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return mt_errf(err, "cannot open %s: %s", path, strerror(errno)), NULL;
    char *buf = NULL;
    long n = -1;
    if (fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) >= 0 && n <= (long)MAX_HEADER &&
        fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, fp) == (size_t)n) {
        *len = (size_t)n;
    } else {
        free(buf);
        buf = NULL;
        mt_errf(err, "cannot read %s (or larger than 100 MB)", path);
    }
    fclose(fp);
    return buf;
}

/* The first tensor the weight_map places in shard (for messages). */
static const char *first_tensor_of(const cJSON *map, const char *shard) {
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (cJSON_IsString(e) && strcmp(e->valuestring, shard) == 0) return e->string;
    }
    return "?";
}

/* A sharded checkpoint: open every shard the weight_map names, then check the map against them. */
static int open_index(mt_checkpoint *ck, const char *dir, const char *index, mt_err *err) {
    size_t len = 0;
    char *text = read_text(index, &len, err);
    if (!text) return -1;
    cJSON *root = mt_json_parse(text, len, index, NULL, err);
    free(text);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    const char **shards = NULL;
    int n = 0, rc = root ? 0 : -1;
    const cJSON *e;
    if (rc == 0 && !cJSON_IsObject(map)) rc = mt_errf(err, "%s: not JSON with a \"weight_map\" object", index);
    else cJSON_ArrayForEach(e, map) n++;
    if (rc == 0 && n == 0) rc = mt_errf(err, "%s: \"weight_map\" is empty", index);
    if (rc == 0 && !(shards = malloc((size_t)n * sizeof *shards))) rc = mt_errf(err, "%s: out of memory", index);
    int ns = 0;
    if (rc == 0) cJSON_ArrayForEach(e, map) {
        const char *s = cJSON_GetStringValue(e);
        if (!s || !*s || strchr(s, '/') || strstr(s, "..")) {
            rc = mt_errf(err, "%s: tensor '%s': shard name is not a plain file name", index, e->string);
            break;
        }
        shards[ns++] = s;
    }
    if (rc == 0) qsort(shards, (size_t)ns, sizeof *shards, cmp_str);
    for (int i = 0; i < ns && rc == 0; i++) {
        if (i > 0 && strcmp(shards[i], shards[i - 1]) == 0) continue;
        char *p = join(dir, shards[i]);
        struct stat st;
        if (!p) rc = mt_errf(err, "out of memory");
        else if (stat(p, &st) != 0)
            rc = mt_errf(err, "%s names shard %s (holding tensor '%s'), which cannot be opened: %s: %s", index,
                         shards[i], first_tensor_of(map, shards[i]), p, strerror(errno));
        else rc = open_file(ck, p, err);
        free(p);
    }
    free(shards);
    if (rc == 0) rc = finish(ck, err);
    if (rc == 0) cJSON_ArrayForEach(e, map) {
        const mt_tensor_info *t = mt_checkpoint_find(ck, e->string);
        const char *shard = e->valuestring, *base = t ? strrchr(t->file, '/') : NULL;
        base = base ? base + 1 : t ? t->file : NULL;
        if (!t)
            rc = mt_errf(err, "%s: tensor '%s' is mapped to shard %s, which does not hold it", index,
                         e->string, shard);
        else if (strcmp(base, shard) != 0)
            rc = mt_errf(err, "%s: tensor '%s' is mapped to shard %s but is in %s", index, e->string, shard,
                         t->file);
        if (rc) break;
    }
    cJSON_Delete(root);
    return rc;
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A path that exists as a name but is no file to read (a folder, a link to nothing). */
static int refuse_non_file(const char *path, mt_err *err) {
    struct stat st;
    if (lstat(path, &st) != 0 || is_file(path)) return 0;
    return mt_errf(err, "%s is there but is not a readable file (%s)", path,
                   S_ISDIR(st.st_mode) ? "a folder" : S_ISLNK(st.st_mode) ? "a link to nothing" : "not a regular file");
}

static int open_dir(mt_checkpoint *ck, const char *dir, mt_err *err) {
    char *p = join(dir, INDEX_NAME);
    if (!p) return mt_errf(err, "out of memory");
    if (refuse_non_file(p, err)) {
        free(p);
        return -1;
    }
    if (is_file(p)) {
        int rc = open_index(ck, dir, p, err);
        free(p);
        return rc;
    }
    free(p);
    if (!(p = join(dir, SINGLE_NAME))) return mt_errf(err, "out of memory");
    if (refuse_non_file(p, err)) {
        free(p);
        return -1;
    }
    if (is_file(p)) {
        int rc = open_file(ck, p, err);
        free(p);
        return rc ? rc : finish(ck, err);
    }
    free(p);
    /* No index and no model.safetensors: take every *.safetensors file there, in name order. */
    struct dirent **list = NULL;
    int n = scandir(dir, &list, NULL, alphasort), rc = 0, found = 0;
    if (n < 0) return mt_errf(err, "cannot list %s: %s", dir, strerror(errno));
    for (int i = 0; i < n; i++) {
        if (rc == 0 && list[i]->d_name[0] != '.' && has_suffix(list[i]->d_name, ".safetensors")) {
            char *f = join(dir, list[i]->d_name);
            if (!f) rc = mt_errf(err, "out of memory");
            else if (is_file(f)) found++, rc = open_file(ck, f, err);
            free(f);
        }
        free(list[i]);
    }
    free(list);
    if (rc == 0 && found == 0)
        rc = mt_errf(err, "no safetensors checkpoint in %s (expected %s or %s)", dir, SINGLE_NAME, INDEX_NAME);
    return rc ? rc : finish(ck, err);
}

int mt_checkpoint_open(mt_checkpoint **out, const char *path, mt_err *err) {
    return mt_checkpoint_open_mode(out, path, MT_CHECKPOINT_MAPPED, err);
}

int mt_checkpoint_open_mode(mt_checkpoint **out, const char *path, mt_checkpoint_mode mode, mt_err *err) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return mt_errf(err, "cannot open checkpoint %s: %s", path, strerror(errno));
    mt_checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck || !(ck->path = strdup(path))) {
        free(ck);
        return mt_errf(err, "out of memory opening %s", path);
    }
    ck->mode = mode;
    if (mode == MT_CHECKPOINT_PRIVATE) ck->memory_available = mt_host_memory_available();
    int rc;
    if (S_ISDIR(st.st_mode)) rc = open_dir(ck, path, err);
    else if ((rc = open_file(ck, path, err)) == 0) rc = finish(ck, err);
    if (rc) {
        mt_checkpoint_close(ck);
        return -1;
    }
    *out = ck;
    return 0;
}

void mt_checkpoint_close(mt_checkpoint *ck) {
    if (!ck) return;
    for (int i = 0; i < ck->nfiles; i++) {
        if (ck->files[i].map) munmap(ck->files[i].map, ck->files[i].size);
        if (ck->files[i].fd >= 0) close(ck->files[i].fd);
        cJSON_Delete(ck->files[i].json);
        free(ck->files[i].path);
    }
    for (int i = 0; i < ck->ncopies; i++) free(ck->copies[i]);
    free(ck->copies);
    free(ck->files);
    free(ck->tensors);
    free(ck->path);
    free(ck);
}

int mt_checkpoint_unchanged(const mt_checkpoint *ck, mt_err *err) {
    for (int i = 0; ck && i < ck->nfiles; i++) {
        const st_file *f = &ck->files[i];
        struct stat st;
        if (f->fd < 0) continue;
        if (fstat(f->fd, &st) != 0 || (size_t)st.st_size != f->size || st.st_mtim.tv_sec != f->mtime.tv_sec ||
            st.st_mtim.tv_nsec != f->mtime.tv_nsec || st.st_ctim.tv_sec != f->ctime.tv_sec ||
            st.st_ctim.tv_nsec != f->ctime.tv_nsec)
            return mt_errf(err, "%s was modified in place after it was opened (write a new checkpoint to a new "
                           "file or folder, or replace the file by renaming one over it)", f->path);
    }
    return 0;
}

const mt_tensor_info *mt_checkpoint_find(const mt_checkpoint *ck, const char *name) {
    if (!ck || !name || ck->ntensors == 0) return NULL;
    mt_tensor_info key = {.name = name};
    return bsearch(&key, ck->tensors, (size_t)ck->ntensors, sizeof key, cmp_tensor);
}

int mt_checkpoint_count(const mt_checkpoint *ck) { return ck ? ck->ntensors : 0; }

const mt_tensor_info *mt_checkpoint_at(const mt_checkpoint *ck, int i) {
    return ck && i >= 0 && i < ck->ntensors ? &ck->tensors[i] : NULL;
}

int mt_checkpoint_get(const mt_checkpoint *ck, const char *name, const mt_tensor_info **out, mt_err *err) {
    const mt_tensor_info *t = mt_checkpoint_find(ck, name);
    *out = NULL;
    if (!t) return mt_errf(err, "tensor '%s' not found in checkpoint %s", name, ck ? ck->path : "(none)");
    if (!t->supported)
        return mt_errf(err, "%s: tensor '%s' has dtype %s; moetrace reads F32, F16 and BF16", t->file, name,
                       t->dtype_name);
    *out = t;
    return 0;
}

const char *mt_tensor_dtype_string(const mt_tensor_info *t) { return t->dtype_name; }

bool mt_tensor_dtype_supported(const mt_tensor_info *t) { return t->supported; }
