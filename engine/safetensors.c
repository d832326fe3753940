/* safetensors.c - mmap reader for .safetensors files.
 *
 * The whole header is validated at open time (see docs/weights-format.md),
 * so later lookups can trust every tensor's data pointer and size.
 * kg_st_read and kg_st_to_f32 copy tensor data with pread() rather than
 * through the mapping: a file truncated on disk after the open then gives
 * KG_ERR_IO instead of a SIGBUS in the reading process. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"

/* The reference implementation refuses headers above 100 MB too. */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
/* Offsets and dims must be exact in the parser's doubles. */
#define ST_MAX_INT ((int64_t)1 << 53)

struct kg_st_file {
    char *path;
    const unsigned char *base;
    size_t len;
    void *map; /* mmap'd region, NULL for memory files */
    size_t map_len;
    int fd;          /* the open file (pread), -1 for memory files */
    struct stat st;  /* at open: kg_st_check_unchanged compares */
    kg_json *header; /* owns the name / metadata strings */
    kg_st_tensor *tensors;
    size_t count;
    size_t *by_name; /* indices sorted by name, for binary search */
    const char **meta_keys;
    const char **meta_values;
    size_t meta_count;
};

static const struct {
    const char *name;
    kg_dtype dtype;
} st_dtypes[] = {
    {"F64", KG_F64}, {"F32", KG_F32}, {"F16", KG_F16}, {"BF16", KG_BF16},
    {"I64", KG_I64}, {"I32", KG_I32}, {"U8", KG_U8},   {"BOOL", KG_U8},
};

static int parse_dtype(const char *s, kg_dtype *out)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++) {
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *out = st_dtypes[i].dtype;
            return 1;
        }
    }
    return 0;
}

static int json_uint(const kg_json *j, int64_t *out)
{
    double v;
    if (kg_json_type_of(j) != KG_JSON_NUMBER)
        return 0;
    v = kg_json_number(j, -1.0);
    if (!(v >= 0.0 && v <= (double)ST_MAX_INT) || v != (double)(int64_t)v)
        return 0;
    *out = (int64_t)v;
    return 1;
}

static char *shape_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    kg_tensor t;
    memset(&t, 0, sizeof t);
    t.ndim = ndim;
    for (int i = 0; i < ndim && i < KG_MAX_DIMS; i++)
        t.shape[i] = shape[i];
    return kg_shape_str(&t, buf, n);
}

void kg_st_close(kg_st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_len);
    if (f->fd >= 0)
        close(f->fd);
    kg_json_free(f->header);
    free(f->tensors);
    free(f->by_name);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    free(f);
}

/* Sort keys carry their tensor index, so qsort needs no context pointer. */
typedef struct name_ref {
    const char *name;
    size_t idx;
} name_ref;

typedef struct range_ref {
    size_t begin, end, idx;
} range_ref;

static int cmp_name_ref(const void *a, const void *b)
{
    return strcmp(((const name_ref *)a)->name, ((const name_ref *)b)->name);
}

static int cmp_range_ref(const void *a, const void *b)
{
    const range_ref *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Refuses repeated names in O(n log n), so a huge header cannot stall us. */
static kg_status check_unique(const kg_st_file *f, const char **names, size_t n, const char *what,
                              kg_error *err)
{
    const char **sorted;
    kg_status s = KG_OK;
    if (n < 2)
        return KG_OK;
    sorted = malloc(n * sizeof *sorted);
    if (!sorted)
        return kg_error_set(err, KG_ERR_NOMEM, "%s: out of memory", f->path);
    memcpy(sorted, names, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_str_ptr);
    for (size_t i = 1; i < n && s == KG_OK; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0)
            s = kg_error_set(err, KG_ERR_FORMAT, "%s: duplicate %s '%s'", f->path, what, sorted[i]);
    free(sorted);
    return s;
}

static kg_status parse_metadata(kg_st_file *f, const kg_json *meta, kg_error *err)
{
    size_t n;
    if (kg_json_type_of(meta) != KG_JSON_OBJECT)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: __metadata__ is not an object", f->path);
    n = kg_json_count(meta);
    if (n) {
        f->meta_keys = calloc(n, sizeof *f->meta_keys);
        f->meta_values = calloc(n, sizeof *f->meta_values);
        if (!f->meta_keys || !f->meta_values)
            return kg_error_set(err, KG_ERR_NOMEM, "%s: out of memory", f->path);
    }
    for (size_t i = 0; i < n; i++) {
        const char *key = kg_json_key_at(meta, i);
        const kg_json *v = kg_json_at(meta, i);
        if (kg_json_type_of(v) != KG_JSON_STRING)
            return kg_error_set(err, KG_ERR_FORMAT,
                                "%s: __metadata__ value of '%s' is not a string", f->path, key);
        if (strlen(kg_json_string(v)) != kg_json_string_len(v))
            return kg_error_set(err, KG_ERR_FORMAT,
                                "%s: __metadata__ value of '%s' contains a NUL character", f->path,
                                key);
        f->meta_keys[i] = key;
        f->meta_values[i] = kg_json_string(v);
    }
    f->meta_count = n;
    return check_unique(f, f->meta_keys, n, "__metadata__ key", err);
}

static kg_status parse_tensor(kg_st_file *f, kg_st_tensor *t, const char *name, const kg_json *desc,
                              const unsigned char *data, size_t data_len, size_t *begin_out,
                              size_t *end_out, kg_error *err)
{
    const kg_json *dt = kg_json_get(desc, "dtype");
    const kg_json *shape = kg_json_get(desc, "shape");
    const kg_json *offs = kg_json_get(desc, "data_offsets");
    int64_t begin, end;
    uint64_t numel = 1;
    size_t esize;

    t->name = name;
    if (kg_json_type_of(desc) != KG_JSON_OBJECT)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: tensor '%s': entry is not an object", f->path,
                            name);
    if (kg_json_type_of(dt) != KG_JSON_STRING)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: tensor '%s': missing or non-string dtype",
                            f->path, name);
    if (!parse_dtype(kg_json_string(dt), &t->dtype))
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: tensor '%s': unknown dtype '%s' (supported: F64 F32 F16 "
                            "BF16 I64 I32 U8 BOOL)",
                            f->path, name, kg_json_string(dt));
    if (kg_json_type_of(shape) != KG_JSON_ARRAY)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: tensor '%s': missing or non-array shape",
                            f->path, name);
    if (kg_json_count(shape) > KG_MAX_DIMS)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: tensor '%s': %zu dims, at most %d supported",
                            f->path, name, kg_json_count(shape), KG_MAX_DIMS);
    t->ndim = (int)kg_json_count(shape);
    for (int i = 0; i < KG_MAX_DIMS; i++)
        t->shape[i] = 1;
    for (int i = 0; i < t->ndim; i++) {
        int64_t d;
        if (!json_uint(kg_json_at(shape, (size_t)i), &d))
            return kg_error_set(err, KG_ERR_FORMAT,
                                "%s: tensor '%s': dim %d is not a non-negative integer", f->path,
                                name, i);
        t->shape[i] = d;
        /* d <= 2^53, so the product only overflows past the file size check */
        if (d != 0 && numel > (uint64_t)ST_MAX_INT / (uint64_t)d)
            return kg_error_set(err, KG_ERR_FORMAT, "%s: tensor '%s': element count overflows",
                                f->path, name);
        numel *= (uint64_t)d;
    }
    if (kg_json_type_of(offs) != KG_JSON_ARRAY || kg_json_count(offs) != 2 ||
        !json_uint(kg_json_at(offs, 0), &begin) || !json_uint(kg_json_at(offs, 1), &end))
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets must be [begin, end] with "
                            "non-negative integers",
                            f->path, name);
    if (begin > end)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets begin %lld > end %lld", f->path, name,
                            (long long)begin, (long long)end);
    if ((uint64_t)end > data_len)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets end %lld is past the end of the "
                            "data section (%zu bytes)",
                            f->path, name, (long long)end, data_len);
    esize = kg_dtype_size(t->dtype);
    if ((uint64_t)(end - begin) != numel * esize) {
        char sb[96];
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: tensor '%s': size mismatch: %s %s needs %llu bytes, "
                            "data_offsets span %lld",
                            f->path, name, kg_dtype_name(t->dtype),
                            shape_str(t->ndim, t->shape, sb, sizeof sb),
                            (unsigned long long)(numel * esize), (long long)(end - begin));
    }
    t->data = data + begin;
    t->nbytes = (size_t)(end - begin);
    *begin_out = (size_t)begin;
    *end_out = (size_t)end;
    return KG_OK;
}

static kg_status parse_file(kg_st_file *f, kg_error *err)
{
    uint64_t hlen = 0;
    const unsigned char *data;
    size_t data_len, n_tensors = 0, k = 0;
    const kg_json *meta = NULL;
    name_ref *names = NULL;
    range_ref *ranges = NULL;
    kg_status s;

    if (f->len < 8)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: truncated: %zu bytes, a safetensors file needs at least 8",
                            f->path, f->len);
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | f->base[i];
    if (hlen > ST_MAX_HEADER)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: header length %llu is larger than the %llu byte limit", f->path,
                            (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    if (hlen > f->len - 8)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: header length %llu is past the end of the file (%zu bytes)",
                            f->path, (unsigned long long)hlen, f->len);
    s = kg_json_parse(&f->header, (const char *)f->base + 8, (size_t)hlen, f->path, err);
    if (s != KG_OK)
        return s;
    if (kg_json_type_of(f->header) != KG_JSON_OBJECT)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: header is not a JSON object", f->path);
    data = f->base + 8 + hlen;
    data_len = f->len - 8 - (size_t)hlen;

    for (size_t i = 0; i < kg_json_count(f->header); i++) {
        if (strcmp(kg_json_key_at(f->header, i), "__metadata__") == 0) {
            if (meta)
                return kg_error_set(err, KG_ERR_FORMAT, "%s: duplicate __metadata__", f->path);
            meta = kg_json_at(f->header, i);
        } else {
            n_tensors++;
        }
    }
    if (meta && (s = parse_metadata(f, meta, err)) != KG_OK)
        return s;

    if (n_tensors) {
        f->tensors = calloc(n_tensors, sizeof *f->tensors);
        f->by_name = calloc(n_tensors, sizeof *f->by_name);
        names = calloc(n_tensors, sizeof *names);
        ranges = calloc(n_tensors, sizeof *ranges);
        if (!f->tensors || !f->by_name || !names || !ranges) {
            s = kg_error_set(err, KG_ERR_NOMEM, "%s: out of memory for %zu tensors", f->path,
                             n_tensors);
            goto done;
        }
    }
    for (size_t i = 0; i < kg_json_count(f->header); i++) {
        const char *name = kg_json_key_at(f->header, i);
        if (strcmp(name, "__metadata__") == 0)
            continue;
        s = parse_tensor(f, &f->tensors[k], name, kg_json_at(f->header, i), data, data_len,
                         &ranges[k].begin, &ranges[k].end, err);
        if (s != KG_OK)
            goto done;
        names[k].name = name;
        names[k].idx = k;
        ranges[k].idx = k;
        k++;
    }
    f->count = n_tensors;

    if (n_tensors) {
        qsort(names, n_tensors, sizeof *names, cmp_name_ref);
        for (size_t i = 0; i < n_tensors; i++) {
            if (i && strcmp(names[i - 1].name, names[i].name) == 0) {
                s = kg_error_set(err, KG_ERR_FORMAT, "%s: duplicate tensor name '%s'", f->path,
                                 names[i].name);
                goto done;
            }
            f->by_name[i] = names[i].idx;
        }
        qsort(ranges, n_tensors, sizeof *ranges, cmp_range_ref);
        /* sorted by begin and disjoint so far, the last non-empty range has the
         * largest end: comparing with it finds the first overlap */
        {
            const range_ref *prev = NULL;
            for (size_t i = 0; i < n_tensors; i++) {
                const range_ref *r = &ranges[i];
                if (r->begin == r->end)
                    continue;
                if (prev && prev->end > r->begin) {
                    s = kg_error_set(err, KG_ERR_FORMAT,
                                     "%s: data of tensors '%s' [%zu, %zu) and '%s' "
                                     "[%zu, %zu) overlap",
                                     f->path, f->tensors[prev->idx].name, prev->begin, prev->end,
                                     f->tensors[r->idx].name, r->begin, r->end);
                    goto done;
                }
                prev = r;
            }
        }
    }
    s = KG_OK;
done:
    free(names);
    free(ranges);
    return s;
}

static kg_status finish_open(kg_st_file *f, kg_st_file **out, kg_error *err)
{
    kg_status s = parse_file(f, err);
    if (s != KG_OK) {
        kg_st_close(f);
        return s;
    }
    *out = f;
    return KG_OK;
}

kg_status kg_st_open_memory(kg_st_file **out, const void *buf, size_t len, const char *name,
                            kg_error *err)
{
    kg_st_file *f;
    if (!out || (!buf && len))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_st_open_memory: NULL argument");
    *out = NULL;
    f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(name ? name : "<memory>"))) {
        free(f);
        return kg_error_set(err, KG_ERR_NOMEM, "out of memory opening %s",
                            name ? name : "<memory>");
    }
    f->fd = -1;
    f->base = buf;
    f->len = len;
    return finish_open(f, out, err);
}

kg_status kg_st_open(kg_st_file **out, const char *path, kg_error *err)
{
    kg_st_file *f;
    struct stat st;
    int fd;

    if (!out || !path)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_st_open: NULL argument");
    *out = NULL;
    /* O_NONBLOCK: a FIFO given as a model would otherwise block open() until a writer comes;
     * it is refused by the regular-file check below (regular files ignore the flag) */
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return kg_error_set(err, KG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return kg_error_set(err, KG_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return kg_error_set(err, KG_ERR_IO, "%s: not a regular file (%s)", path,
                            S_ISDIR(st.st_mode)    ? "a directory"
                            : S_ISFIFO(st.st_mode) ? "a FIFO"
                            : S_ISCHR(st.st_mode)  ? "a character device"
                            : S_ISBLK(st.st_mode)  ? "a block device"
                            : S_ISSOCK(st.st_mode) ? "a socket"
                                                   : "not a file");
    }
    f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        close(fd);
        return kg_error_set(err, KG_ERR_NOMEM, "%s: out of memory", path);
    }
    f->fd = fd;
    f->st = st;
    if (st.st_size > 0) {
        f->map_len = (size_t)st.st_size;
        f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            int e = errno;
            f->map = NULL;
            kg_st_close(f);
            return kg_error_set(err, e == ENOMEM ? KG_ERR_NOMEM : KG_ERR_IO,
                                "%s: cannot mmap %lld bytes: %s", path, (long long)st.st_size,
                                strerror(e));
        }
        f->base = f->map;
        f->len = f->map_len;
    }
    return finish_open(f, out, err);
}

const char *kg_st_path(const kg_st_file *f)
{
    return f ? f->path : NULL;
}

size_t kg_st_count(const kg_st_file *f)
{
    return f ? f->count : 0;
}

const kg_st_tensor *kg_st_at(const kg_st_file *f, size_t i)
{
    return f && i < f->count ? &f->tensors[i] : NULL;
}

const kg_st_tensor *kg_st_find(const kg_st_file *f, const char *name)
{
    size_t lo = 0, hi;
    if (!f || !name)
        return NULL;
    hi = f->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const kg_st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0)
            return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static int shape_matches(const kg_st_tensor *t, int ndim, const int64_t *shape)
{
    if (ndim < 0)
        return 1;
    if (t->ndim != ndim)
        return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i])
            return 0;
    return 1;
}

static kg_status mismatch(const kg_st_file *f, const char *name, const kg_st_tensor *t,
                          const char *want_dtype, int ndim, const int64_t *shape, kg_error *err)
{
    char got[96], want[96];
    shape_str(t->ndim, t->shape, got, sizeof got);
    if (ndim < 0)
        snprintf(want, sizeof want, "any shape");
    else
        shape_str(ndim, shape, want, sizeof want);
    return kg_error_set(err, KG_ERR_WEIGHTS, "%s: tensor '%s' is %s %s, expected %s %s", f->path,
                        name, kg_dtype_name(t->dtype), got, want_dtype, want);
}

kg_status kg_st_get(const kg_st_file *f, const char *name, kg_dtype dtype, int ndim,
                    const int64_t *shape, const kg_st_tensor **out, kg_error *err)
{
    const kg_st_tensor *t;
    if (!f || !name || ndim > KG_MAX_DIMS || (ndim > 0 && !shape))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_st_get: invalid argument");
    t = kg_st_find(f, name);
    if (!t)
        return kg_error_set(err, KG_ERR_WEIGHTS, "%s: tensor '%s' not found", f->path, name);
    if (t->dtype != dtype || !shape_matches(t, ndim, shape))
        return mismatch(f, name, t, kg_dtype_name(dtype), ndim, shape, err);
    if (out)
        *out = t;
    return KG_OK;
}

kg_status kg_st_read(const kg_st_file *f, const kg_st_tensor *t, void *dst, kg_error *err)
{
    size_t done = 0;
    off_t off;
    if (!f || !t || (!dst && t->nbytes))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_st_read: NULL argument");
    if (f->fd < 0) {
        if (t->nbytes)
            memcpy(dst, t->data, t->nbytes);
        return KG_OK;
    }
    off = (off_t)((const unsigned char *)t->data - f->base);
    while (done < t->nbytes) {
        ssize_t r = pread(f->fd, (char *)dst + done, t->nbytes - done, off + (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return kg_error_set(err, KG_ERR_IO, "%s: reading tensor '%.150s': %s", f->path, t->name,
                                strerror(errno));
        if (r == 0)
            return kg_error_set(err, KG_ERR_IO,
                                "%s: tensor '%.150s' lies past the end of the file: the file was "
                                "truncated or rewritten after it was opened",
                                f->path, t->name);
        done += (size_t)r;
    }
    return KG_OK;
}

kg_status kg_st_check_unchanged(const kg_st_file *f, kg_error *err)
{
    struct stat now;
    if (!f || f->fd < 0)
        return KG_OK;
    if (fstat(f->fd, &now) != 0)
        return kg_error_set(err, KG_ERR_IO, "%s: cannot stat: %s", f->path, strerror(errno));
    if (now.st_size != f->st.st_size || now.st_mtim.tv_sec != f->st.st_mtim.tv_sec ||
        now.st_mtim.tv_nsec != f->st.st_mtim.tv_nsec)
        return kg_error_set(err, KG_ERR_IO,
                            "%s: the file changed on disk while it was read (size %lld -> %lld "
                            "bytes); load it again once it is complete",
                            f->path, (long long)f->st.st_size, (long long)now.st_size);
    return KG_OK;
}

kg_status kg_st_to_f32(const kg_st_file *f, const kg_st_tensor *t, float *dst, kg_error *err)
{
    const unsigned char *src;
    size_t n;
    kg_status s;
    if (!t || (!dst && t->nbytes))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_st_to_f32: NULL argument");
    switch (t->dtype) {
    case KG_F32: return kg_st_read(f, t, dst, err);
    case KG_F16:
    case KG_BF16:
        n = t->nbytes / 2;
        /* the raw halves go into dst's upper half and widen front to back:
         * element i is read (bytes 2n + 2i) before dst[i] (bytes 4i) is
         * written, and 4i + 4 <= 2n + 2(i + 1) for i < n */
        src = (const unsigned char *)dst + 2 * n;
        s = kg_st_read(f, t, (void *)src, err);
        if (s != KG_OK)
            return s;
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
            dst[i] = t->dtype == KG_F16 ? kg_f16_to_f32(h) : kg_bf16_to_f32(h);
        }
        return KG_OK;
    default:
        return kg_error_set(err, KG_ERR_WEIGHTS,
                            "%s: tensor '%s' is %s, a float tensor (F32/F16/BF16) is needed",
                            f ? f->path : "?", t->name, kg_dtype_name(t->dtype));
    }
}

kg_status kg_st_get_f32(const kg_st_file *f, const char *name, int ndim, const int64_t *shape,
                        float *dst, kg_error *err)
{
    const kg_st_tensor *t;
    if (!f || !name || ndim > KG_MAX_DIMS || (ndim > 0 && !shape))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_st_get_f32: invalid argument");
    t = kg_st_find(f, name);
    if (!t)
        return kg_error_set(err, KG_ERR_WEIGHTS, "%s: tensor '%s' not found", f->path, name);
    if ((t->dtype != KG_F32 && t->dtype != KG_F16 && t->dtype != KG_BF16) ||
        !shape_matches(t, ndim, shape))
        return mismatch(f, name, t, "F32/F16/BF16", ndim, shape, err);
    return kg_st_to_f32(f, t, dst, err);
}

const char *kg_st_metadata(const kg_st_file *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (size_t i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_values[i];
    return NULL;
}

size_t kg_st_metadata_count(const kg_st_file *f)
{
    return f ? f->meta_count : 0;
}

const char *kg_st_metadata_key(const kg_st_file *f, size_t i)
{
    return f && i < f->meta_count ? f->meta_keys[i] : NULL;
}

const char *kg_st_metadata_value(const kg_st_file *f, size_t i)
{
    return f && i < f->meta_count ? f->meta_values[i] : NULL;
}
