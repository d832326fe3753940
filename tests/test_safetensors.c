/* test_safetensors.c - the safetensors reader on every golden file, on a
 * hand-built valid file (dtypes, unaligned data, scalars, metadata), and on
 * a table of malformed files, each of which must give its own error, both
 * from memory and from a real file. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "testutil.h"

/* 8-byte little-endian header length + header + data. malloc'd. */
static unsigned char *build(const char *header, const void *data, size_t data_len, size_t *len)
{
    size_t hlen = strlen(header);
    unsigned char *buf = malloc(8 + hlen + data_len + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    if (data_len)
        memcpy(buf + 8 + hlen, data, data_len);
    *len = 8 + hlen + data_len;
    return buf;
}

static char tmp_path[256];

static const char *write_temp(const void *buf, size_t len)
{
    const char *dir = getenv("TMPDIR");
    int fd;
    snprintf(tmp_path, sizeof tmp_path, "%s/kg_st_XXXXXX", dir && dir[0] ? dir : "/tmp");
    fd = mkstemp(tmp_path);
    if (fd < 0 || (len && write(fd, buf, len) != (ssize_t)len)) {
        kgt_check(0, "cannot write temp file %s", tmp_path);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    close(fd);
    return tmp_path;
}

/* ---- golden files -------------------------------------------------- */

/* Facts read from the headers with Python's json module. */
static const struct {
    const char *rel;
    size_t count, meta;
} known[] = {
    {"sd/unet_tiny.weights.safetensors", 208, 4},
    {"sd/unet_tiny4.weights.safetensors", 684, 4},
    {"sd/vae_tiny.weights.safetensors", 70, 4},
    {"sd/unet_tiny.io.safetensors", 85, 9},
    {"sched/sched_euler.safetensors", 299, 8},
    {"kosmosg/tokenizer.safetensors", 14, 11},
    {"kosmosg/kosmosg_tiny/sd15/unet/diffusion_pytorch_model.safetensors", 682, 1},
    {"kosmosg/kosmosg_tiny/sd15/vae/diffusion_pytorch_model.safetensors", 240, 1},
};

static int n_golden;

static void check_golden_file(const char *path, const char *rel)
{
    kg_st_file *f = NULL;
    kg_error err = {0};
    kg_status s = kg_st_open(&f, path, &err);
    unsigned char head[8];
    uint64_t hlen = 0;
    size_t total = 0, bad = 0;
    struct stat st;
    FILE *fp;

    n_golden++;
    if (!kgt_check(s == KG_OK, "open %s: %s", rel, err.msg))
        return;
    /* header length read independently of the reader */
    fp = fopen(path, "rb");
    if (fp && fread(head, 1, 8, fp) == 8)
        for (int i = 7; i >= 0; i--)
            hlen = (hlen << 8) | head[i];
    if (fp)
        fclose(fp);
    stat(path, &st);
    for (size_t i = 0; i < kg_st_count(f); i++) {
        const kg_st_tensor *t = kg_st_at(f, i);
        kg_tensor v = kg_tensor_make(NULL, t->dtype, t->ndim, t->shape);
        if (kg_tensor_nbytes(&v) != t->nbytes || kg_st_find(f, t->name) != t || !t->data)
            bad++;
        total += t->nbytes;
    }
    kgt_check(kg_st_count(f) > 0 && bad == 0,
              "%s: %zu tensors, each nbytes == numel * dtype size and findable by name (%zu bad)",
              rel, kg_st_count(f), bad);
    /* the Python writer packs the data section tightly */
    kgt_check(8 + hlen + total == (uint64_t)st.st_size,
              "%s: 8 + header %llu + data %zu == file size %lld", rel, (unsigned long long)hlen,
              total, (long long)st.st_size);
    kgt_check(kg_st_metadata_count(f) > 0 && kg_st_metadata_key(f, 0) &&
                  kg_st_metadata(f, kg_st_metadata_key(f, 0)) == kg_st_metadata_value(f, 0),
              "%s: __metadata__ present (%zu keys)", rel, kg_st_metadata_count(f));
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
        if (strcmp(rel, known[k].rel) == 0)
            kgt_check(kg_st_count(f) == known[k].count && kg_st_metadata_count(f) == known[k].meta,
                      "%s: %zu tensors (want %zu), %zu metadata keys (want %zu)", rel,
                      kg_st_count(f), known[k].count, kg_st_metadata_count(f), known[k].meta);
    kg_st_close(f);
}

static void walk(const char *root, const char *sub)
{
    char dir[4096], path[4096], rel[4096];
    DIR *d;
    struct dirent *e;
    snprintf(dir, sizeof dir, "%s%s%s", root, sub[0] ? "/" : "", sub);
    d = opendir(dir);
    if (!d)
        return;
    while ((e = readdir(d))) {
        struct stat st;
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.')
            continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path ||
            snprintf(rel, sizeof rel, "%s%s%s", sub, sub[0] ? "/" : "", e->d_name) >=
                (int)sizeof rel ||
            stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            walk(root, rel);
        else if (n > 12 && strcmp(e->d_name + n - 12, ".safetensors") == 0)
            check_golden_file(path, rel);
    }
    closedir(d);
}

static void test_golden(void)
{
    const char *root = getenv("KG_GOLDEN");
    kg_st_file *f;
    kg_error err = {0};
    const kg_st_tensor *t = NULL;
    float v[32 * 4 * 9];
    kg_status s;

    if (!root)
        root = "../shared/golden";
    walk(root, "");
    kgt_check(n_golden >= 27, "walked %d golden .safetensors files under %s", n_golden, root);

    f = kgt_golden_open("sd/unet_tiny.weights.safetensors");
    if (f) {
        const int64_t shape[4] = {32, 4, 3, 3};
        const int64_t wrong[4] = {32, 4, 1, 1};
        kgt_check(kg_st_get(f, "conv_in.weight", KG_F32, 4, shape, &t, &err) == KG_OK &&
                      t->nbytes == 4608,
                  "unet_tiny conv_in.weight F32 [32, 4, 3, 3]: %s", err.msg);
        s = kg_st_get_f32(f, "conv_in.weight", 4, shape, v, &err);
        kgt_check(s == KG_OK && v[0] == -0.0012478034477680922f && v[1] == 0.08940726518630981f &&
                      v[2] == -0.13717418909072876f && v[3] == -0.12265650928020477f,
                  "unet_tiny conv_in.weight values %.9g %.9g %.9g %.9g", v[0], v[1], v[2], v[3]);
        kgt_check(kg_st_get(f, "conv_in.weight", KG_F16, 4, shape, &t, &err) == KG_ERR_WEIGHTS &&
                      strstr(err.msg, "unet_tiny.weights.safetensors") &&
                      strstr(err.msg, "'conv_in.weight' is F32 [32, 4, 3, 3], expected F16 "
                                      "[32, 4, 3, 3]"),
                  "strict getter, wrong dtype: %s", err.msg);
        kgt_check(kg_st_get(f, "conv_in.weight", KG_F32, 4, wrong, &t, &err) == KG_ERR_WEIGHTS &&
                      strstr(err.msg, "is F32 [32, 4, 3, 3], expected F32 [32, 4, 1, 1]"),
                  "strict getter, wrong shape: %s", err.msg);
        kgt_check(kg_st_get(f, "conv_in.weight", KG_F32, 2, shape, &t, &err) == KG_ERR_WEIGHTS &&
                      strstr(err.msg, "expected F32 [32, 4]"),
                  "strict getter, wrong rank: %s", err.msg);
        kgt_check(kg_st_get(f, "conv_in.weight", KG_F32, -1, NULL, &t, &err) == KG_OK,
                  "strict getter, ndim -1 skips the shape");
        kgt_check(kg_st_get(f, "conv_inn.weight", KG_F32, 4, shape, &t, &err) == KG_ERR_WEIGHTS &&
                      strstr(err.msg, "'conv_inn.weight' not found"),
                  "strict getter, missing: %s", err.msg);
        kgt_check(kg_st_metadata(f, "seed") && strcmp(kg_st_metadata(f, "seed"), "0") == 0 &&
                      strncmp(kg_st_metadata(f, "config"), "{\"attention_head_dim\": 8", 24) == 0 &&
                      kg_st_metadata(f, "nope") == NULL,
                  "unet_tiny __metadata__ seed/config");
        kg_st_close(f);
    }

    f = kgt_golden_open("kosmosg/kosmosg_tiny/sd15/unet/diffusion_pytorch_model.safetensors");
    if (f) {
        const int64_t shape[4] = {32, 4, 3, 3};
        kgt_check(kg_st_get_f32(f, "conv_in.weight", 4, shape, v, &err) == KG_OK &&
                      v[0] == -0.11700439453125f && v[1] == -0.004482269287109375f &&
                      v[2] == 0.161865234375f && v[3] == -0.11053466796875f,
                  "kosmosg_tiny unet conv_in.weight F16 -> F32 exact: %s", err.msg);
        kgt_check(kg_st_metadata(f, "format") && strcmp(kg_st_metadata(f, "format"), "pt") == 0,
                  "kosmosg_tiny unet __metadata__ format=pt");
        kg_st_close(f);
    }

    f = kgt_golden_open("sched/sched_euler.safetensors");
    if (f) {
        double d = 0;
        kgt_check(kg_st_get(f, "n20.init_noise_sigma", KG_F64, 0, NULL, &t, &err) == KG_OK &&
                      t->nbytes == 8,
                  "0-dim F64 scalar: %s", err.msg);
        if (t)
            memcpy(&d, t->data, 8);
        kgt_check(d == 14.614645004272461, "init_noise_sigma = %.17g", d);
        kgt_check(kg_st_to_f32(f, t, v, &err) == KG_ERR_WEIGHTS &&
                      strstr(err.msg, "is F64, a float tensor (F32/F16/BF16) is needed"),
                  "kg_st_to_f32 refuses F64: %s", err.msg);
        kg_st_close(f);
    }

    f = kgt_golden_open("sched/sched_ddim.safetensors");
    if (f) {
        int64_t ts[2] = {0, 0};
        const int64_t shape[1] = {20};
        kgt_check(kg_st_get(f, "n20.timesteps", KG_I64, 1, shape, &t, &err) == KG_OK,
                  "ddim n20.timesteps I64 [20]: %s", err.msg);
        if (t)
            memcpy(ts, t->data, sizeof ts);
        kgt_check(ts[0] == 951 && ts[1] == 901, "ddim timesteps start 951, 901 (%lld, %lld)",
                  (long long)ts[0], (long long)ts[1]);
        kgt_check(kg_st_get_f32(f, "n20.timesteps", 1, shape, v, &err) == KG_ERR_WEIGHTS &&
                      strstr(err.msg, "is I64 [20], expected F32/F16/BF16 [20]"),
                  "kg_st_get_f32 refuses I64: %s", err.msg);
        kg_st_close(f);
    }
}

/* ---- a hand-built valid file ----------------------------------------- */

static void test_valid_file(void)
{
    /* header length is odd on purpose: every tensor is unaligned */
    const char *header = "{\"u\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
                         "\"h\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[3,11]},"
                         "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[11,17]},"
                         "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[17,25]},"
                         "\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[25,33]},"
                         "\"e\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[33,33]},"
                         "\"e2\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[33,33]},"
                         "\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[33,41]},"
                         "\"z\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[41,43]},"
                         "\"q\":{\"dtype\":\"I32\",\"shape\":[1,1,1,1],\"data_offsets\":[43,47]},"
                         "\"__metadata__\":{\"k\":\"v\",\"format\":\"pt\",\"uni\":\"\\u00e9\"}}   ";
    unsigned char data[47];
    uint16_t h[4] = {0x3c00, 0xc000, 0x3800, 0x7bff};
    uint16_t b[3] = {0x3f80, 0xc040, 0x0001};
    float fv[2] = {1.5f, -7.25f};
    double sv = 3.25;
    int64_t iv = -5;
    int32_t qv = 42;
    unsigned char *buf;
    size_t len;
    kg_st_file *f = NULL;
    kg_error err = {0};
    float out[4];
    const kg_st_tensor *t;
    kg_status s;

    data[0] = 1, data[1] = 2, data[2] = 3;
    for (int i = 0; i < 4; i++)
        data[3 + 2 * i] = (unsigned char)h[i], data[4 + 2 * i] = (unsigned char)(h[i] >> 8);
    for (int i = 0; i < 3; i++)
        data[11 + 2 * i] = (unsigned char)b[i], data[12 + 2 * i] = (unsigned char)(b[i] >> 8);
    memcpy(data + 17, fv, 8);
    memcpy(data + 25, &sv, 8);
    memcpy(data + 33, &iv, 8);
    data[41] = 1, data[42] = 0;
    memcpy(data + 43, &qv, 4);
    buf = build(header, data, sizeof data, &len);

    kgt_check(kg_st_open_memory(&f, buf, len, "valid.safetensors", &err) == KG_OK,
              "valid file opens: %s", err.msg);
    if (!f) {
        free(buf);
        return;
    }
    kgt_check(kg_st_count(f) == 10 && strcmp(kg_st_at(f, 0)->name, "u") == 0 &&
                  strcmp(kg_st_at(f, 9)->name, "q") == 0 && kg_st_at(f, 10) == NULL,
              "10 tensors in header order");
    kgt_check(strcmp(kg_st_path(f), "valid.safetensors") == 0, "path is the given name");
    t = kg_st_find(f, "u");
    kgt_check(t && t->dtype == KG_U8 && memcmp(t->data, "\1\2\3", 3) == 0 &&
                  (const unsigned char *)t->data >= buf &&
                  (const unsigned char *)t->data + t->nbytes <= buf + len,
              "U8 data inside the buffer");
    s = kg_st_get_f32(f, "h", 2, (int64_t[]){2, 2}, out, &err);
    kgt_check(s == KG_OK && out[0] == 1.0f && out[1] == -2.0f && out[2] == 0.5f &&
                  out[3] == 65504.0f,
              "unaligned F16 -> F32 exact (%g %g %g %g)", out[0], out[1], out[2], out[3]);
    s = kg_st_get_f32(f, "b", 1, (int64_t[]){3}, out, &err);
    kgt_check(s == KG_OK && out[0] == 1.0f && out[1] == -3.0f && out[2] == ldexpf(1.0f, -133),
              "unaligned BF16 -> F32 exact incl. subnormal (%g %g %g)", out[0], out[1], out[2]);
    kgt_check(kg_st_get_f32(f, "f", 1, (int64_t[]){2}, out, &err) == KG_OK && out[0] == 1.5f &&
                  out[1] == -7.25f,
              "unaligned F32 copy");
    t = NULL;
    kgt_check(kg_st_get(f, "s", KG_F64, 0, NULL, &t, &err) == KG_OK && t->ndim == 0 &&
                  t->nbytes == 8,
              "0-dim scalar");
    kgt_check(kg_st_get(f, "e", KG_F32, 2, (int64_t[]){0, 4}, &t, &err) == KG_OK && t->nbytes == 0,
              "empty [0, 4] tensor sharing its offset with others");
    kgt_check(kg_st_get(f, "z", KG_U8, 1, (int64_t[]){2}, &t, &err) == KG_OK, "BOOL reads as U8");
    kgt_check(kg_st_get(f, "q", KG_I32, 4, (int64_t[]){1, 1, 1, 1}, &t, &err) == KG_OK,
              "I32 with 4 dims");
    t = kg_st_find(f, "i");
    kgt_check(kg_st_to_f32(f, t, out, &err) == KG_ERR_WEIGHTS &&
                  strstr(err.msg, "valid.safetensors: tensor 'i' is I64"),
              "kg_st_to_f32 refuses I64: %s", err.msg);
    kgt_check(kg_st_metadata_count(f) == 3 && strcmp(kg_st_metadata(f, "format"), "pt") == 0 &&
                  strcmp(kg_st_metadata(f, "uni"), "\xc3\xa9") == 0 &&
                  strcmp(kg_st_metadata_key(f, 0), "k") == 0 &&
                  strcmp(kg_st_metadata_value(f, 0), "v") == 0 && kg_st_metadata_key(f, 3) == NULL,
              "__metadata__ strings");
    kgt_check(kg_st_find(f, "__metadata__") == NULL && kg_st_find(f, "x") == NULL,
              "__metadata__ is not a tensor");
    kg_st_close(f);

    /* the same bytes through a real file and mmap */
    {
        const char *p = write_temp(buf, len);
        f = NULL;
        kgt_check(p && kg_st_open(&f, p, &err) == KG_OK && kg_st_count(f) == 10 &&
                      kg_st_get_f32(f, "h", 2, (int64_t[]){2, 2}, out, &err) == KG_OK &&
                      out[3] == 65504.0f,
                  "valid file via mmap: %s", err.msg);
        kg_st_close(f);
        if (p)
            unlink(p);
    }
    free(buf);

    /* only metadata, no tensors */
    buf = build("{\"__metadata__\":{}}", NULL, 0, &len);
    f = NULL;
    kgt_check(kg_st_open_memory(&f, buf, len, "meta-only", &err) == KG_OK && kg_st_count(f) == 0 &&
                  kg_st_at(f, 0) == NULL && kg_st_find(f, "a") == NULL,
              "a file with no tensors is valid");
    kg_st_close(f);
    free(buf);

    f = NULL;
    kgt_check(kg_st_open(&f, "/nonexistent/dir/x.safetensors", &err) == KG_ERR_IO &&
                  strstr(err.msg, "/nonexistent/dir/x.safetensors: cannot open"),
              "missing file -> KG_ERR_IO: %s", err.msg);
    kgt_check(kg_st_open(&f, "/tmp", &err) == KG_ERR_IO && strstr(err.msg, "not a regular file"),
              "a directory -> KG_ERR_IO: %s", err.msg);
    kg_st_close(NULL);
    kgt_check(kg_st_count(NULL) == 0 && kg_st_find(NULL, "a") == NULL &&
                  kg_st_metadata(NULL, "a") == NULL,
              "NULL handles are tolerated");
}

/* ---- malformed files ------------------------------------------------- */

#define T(name, dt, shape, b, e) \
    "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]}"

typedef struct bad_case {
    const char *what;
    const char *header; /* NULL: raw bytes below */
    size_t data_len;
    const char *raw;
    size_t raw_len;
    kg_status code;
    const char *msg;
} bad_case;

static const bad_case bad[] = {
    {"empty file", NULL, 0, "", 0, KG_ERR_FORMAT, "truncated: 0 bytes"},
    {"truncated (5 bytes)", NULL, 0, "\x10\0\0\0\0", 5, KG_ERR_FORMAT, "truncated: 5 bytes"},
    {"header length past EOF", NULL, 0, "\x40\0\0\0\0\0\0\0{}", 10, KG_ERR_FORMAT,
     "header length 64 is past the end of the file (10 bytes)"},
    {"header length 2^63", NULL, 0, "\0\0\0\0\0\0\0\x80{}", 10, KG_ERR_FORMAT,
     "header length 9223372036854775808 is larger than the 100000000 byte limit"},
    {"header length 0", NULL, 0, "\0\0\0\0\0\0\0\0{}", 10, KG_ERR_FORMAT,
     "value expected, found end of input"},
    {"offsets past EOF", "{" T("w", "F32", "[4]", "0", "16") "}", 8, NULL, 0, KG_ERR_FORMAT,
     "tensor 'w': data_offsets end 16 is past the end of the data section (8 bytes)"},
    {"overlapping offsets",
     "{" T("a", "F32", "[2]", "0", "8") "," T("b", "F32", "[2]", "4", "12") "}", 12, NULL, 0,
     KG_ERR_FORMAT, "data of tensors 'a' [0, 8) and 'b' [4, 12) overlap"},
    {"overlap hidden behind a short range",
     "{" T("a", "U8", "[100]", "0", "100") "," T("b", "U8", "[10]", "10", "20") "}", 100, NULL, 0,
     KG_ERR_FORMAT, "'a' [0, 100) and 'b' [10, 20) overlap"},
    {"begin > end", "{" T("w", "F32", "[0]", "8", "0") "}", 8, NULL, 0, KG_ERR_FORMAT,
     "tensor 'w': data_offsets begin 8 > end 0"},
    {"bad JSON: truncated", "{\"w\":{\"dtype\":", 0, NULL, 0, KG_ERR_FORMAT,
     "invalid JSON at byte 14: value expected"},
    {"bad JSON: trailing garbage", "{}x", 0, NULL, 0, KG_ERR_FORMAT,
     "trailing characters after the document"},
    {"bad JSON: invalid escape", "{\"w\\q\":1}", 0, NULL, 0, KG_ERR_FORMAT, "invalid escape '\\q'"},
    {"bad JSON: single quotes", "{'w':1}", 0, NULL, 0, KG_ERR_FORMAT,
     "object key (a string) expected"},
    {"bad JSON: control character", "{\"w\x01\":1}", 0, NULL, 0, KG_ERR_FORMAT,
     "control character 0x01 in string"},
    {"bad JSON: invalid UTF-8", "{\"w\xfe\":1}", 0, NULL, 0, KG_ERR_FORMAT, "invalid UTF-8"},
    {"header not an object", "[1,2]", 0, NULL, 0, KG_ERR_FORMAT, "header is not a JSON object"},
    {"entry not an object", "{\"w\":[1]}", 0, NULL, 0, KG_ERR_FORMAT,
     "tensor 'w': entry is not an object"},
    {"unknown dtype", "{" T("w", "F8_E4M3", "[4]", "0", "4") "}", 4, NULL, 0, KG_ERR_FORMAT,
     "tensor 'w': unknown dtype 'F8_E4M3'"},
    {"missing dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NULL, 0, KG_ERR_FORMAT,
     "tensor 'w': missing or non-string dtype"},
    {"missing shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, NULL, 0,
     KG_ERR_FORMAT, "tensor 'w': missing or non-array shape"},
    {"data_offsets of length 3",
     "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, NULL, 0,
     KG_ERR_FORMAT, "tensor 'w': data_offsets must be [begin, end]"},
    {"negative offset", "{" T("w", "F32", "[1]", "-4", "0") "}", 4, NULL, 0, KG_ERR_FORMAT,
     "tensor 'w': data_offsets must be [begin, end] with non-negative integers"},
    {"duplicate names", "{" T("w", "F32", "[1]", "0", "4") "," T("w", "F32", "[1]", "4", "8") "}",
     8, NULL, 0, KG_ERR_FORMAT, "duplicate object key \"w\""},
    {"shape/size mismatch", "{" T("w", "F32", "[3]", "0", "8") "}", 8, NULL, 0, KG_ERR_FORMAT,
     "tensor 'w': size mismatch: F32 [3] needs 12 bytes, data_offsets span 8"},
    {"negative dim", "{" T("w", "F32", "[-1]", "0", "4") "}", 4, NULL, 0, KG_ERR_FORMAT,
     "tensor 'w': dim 0 is not a non-negative integer"},
    {"non-integer dim", "{" T("w", "F32", "[2, 1.5]", "0", "12") "}", 12, NULL, 0, KG_ERR_FORMAT,
     "tensor 'w': dim 1 is not a non-negative integer"},
    {"string dim", "{" T("w", "F32", "[1, 1, \"2\"]", "0", "8") "}", 8, NULL, 0, KG_ERR_FORMAT,
     "tensor 'w': dim 2 is not a non-negative integer"},
    {"more than 4 dims", "{" T("w", "F32", "[1,1,1,1,1]", "0", "4") "}", 4, NULL, 0, KG_ERR_FORMAT,
     "tensor 'w': 5 dims, at most 4 supported"},
    {"element count overflow", "{" T("w", "U8", "[4294967296,4294967296,4294967296]", "0", "4") "}",
     4, NULL, 0, KG_ERR_FORMAT, "tensor 'w': element count overflows"},
    {"offset beyond 2^53", "{" T("w", "U8", "[1]", "0", "1e300") "}", 4, NULL, 0, KG_ERR_FORMAT,
     "tensor 'w': data_offsets must be"},
    {"metadata value not a string", "{\"__metadata__\":{\"k\":1}}", 0, NULL, 0, KG_ERR_FORMAT,
     "__metadata__ value of 'k' is not a string"},
    {"metadata not an object", "{\"__metadata__\":\"x\"}", 0, NULL, 0, KG_ERR_FORMAT,
     "__metadata__ is not an object"},
    {"metadata value with NUL", "{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", 0, NULL, 0,
     KG_ERR_FORMAT, "__metadata__ value of 'k' contains a NUL"},
    {"duplicate metadata", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, NULL, 0, KG_ERR_FORMAT,
     "duplicate object key \"__metadata__\""},
    {"duplicate metadata key", "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, NULL, 0,
     KG_ERR_FORMAT, "duplicate object key \"k\""},
    {"NUL in a tensor name",
     "{\"w\\u0000x\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, NULL, 0,
     KG_ERR_FORMAT, "object key with a NUL character"},
};

static void test_malformed(void)
{
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const bad_case *c = &bad[i];
        unsigned char *buf;
        size_t len;
        kg_st_file *f = NULL;
        kg_error err = {0};
        kg_status s;
        const char *p;

        if (c->header) {
            unsigned char *zeros = calloc(1, c->data_len + 1);
            buf = build(c->header, zeros, c->data_len, &len);
            free(zeros);
        } else {
            len = c->raw_len;
            buf = malloc(len + 1);
            memcpy(buf, c->raw, len);
        }
        s = kg_st_open_memory(&f, buf, len, "bad.safetensors", &err);
        kgt_check(s == c->code && f == NULL && strstr(err.msg, c->msg) &&
                      strstr(err.msg, "bad.safetensors"),
                  "memory, %s -> %s \"%s\"", c->what, kg_status_name(s), err.msg);
        kg_st_close(f);
        f = NULL;
        p = write_temp(buf, len);
        if (p) {
            s = kg_st_open(&f, p, &err);
            kgt_check(s == c->code && f == NULL && strstr(err.msg, c->msg) && strstr(err.msg, p),
                      "file, %s -> %s \"%s\"", c->what, kg_status_name(s), err.msg);
            kg_st_close(f);
            unlink(p);
        }
        free(buf);
    }
}

/* Random byte flips of a valid file: whatever the outcome, nothing may be
 * read out of bounds (meaningful under -Db_sanitize=address). */
static void test_mutations(void)
{
    const char *header =
        "{" T("a", "F16", "[2,3]", "0", "12") "," T("b", "BF16", "[2]", "12", "16") "," T(
            "c", "F32", "[1,1,2]", "16", "24") ",\"__metadata__\":{\"x\":\"y\"}}";
    unsigned char data[24] = {0};
    size_t len, ok = 0, n = 20000;
    unsigned char *orig = build(header, data, sizeof data, &len);
    unsigned char *buf = malloc(len);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    float out[64];

    for (size_t it = 0; it < n; it++) {
        kg_st_file *f = NULL;
        kg_error err = {0};
        int flips = 1 + (int)(it % 4);
        memcpy(buf, orig, len);
        for (int k = 0; k < flips; k++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            buf[(rng >> 8) % len] = (unsigned char)rng;
        }
        if (kg_st_open_memory(&f, buf,
                              (size_t)((rng >> 40) % 8 == 0 ? len - (rng >> 20) % len : len), "mut",
                              &err) == KG_OK) {
            ok++;
            for (size_t i = 0; i < kg_st_count(f); i++) {
                const kg_st_tensor *t = kg_st_at(f, i);
                if (t->nbytes <= sizeof out / 2)
                    kg_st_to_f32(f, t, out, &err);
            }
        } else if (err.msg[0] == '\0') {
            kgt_check(0, "mutation %zu failed without a message", it);
            break;
        }
        kg_st_close(f);
    }
    kgt_check(ok > 0 && ok < n,
              "%zu random mutations: %zu still valid, the rest refused with a message", n, ok);
    free(buf);
    free(orig);
}

/* The fuzz seed corpus: valid_* must open, bad_* must be refused. */
static void test_corpus(void)
{
    const char *dir = getenv("KG_ST_CORPUS");
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *e;
    int n = 0;

    while (d && (e = readdir(d))) {
        char path[4096];
        kg_st_file *f = NULL;
        kg_error err = {0};
        kg_status s;
        int valid = strncmp(e->d_name, "valid_", 6) == 0;
        if (!valid && strncmp(e->d_name, "bad_", 4) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        s = kg_st_open(&f, path, &err);
        kgt_check(valid ? s == KG_OK : s == KG_ERR_FORMAT, "corpus %s -> %s %s", e->d_name,
                  kg_status_name(s), err.msg);
        kg_st_close(f);
        n++;
    }
    if (d)
        closedir(d);
    kgt_check(n >= 10, "%d seed corpus files checked in %s", n, dir ? dir : "(KG_ST_CORPUS unset)");
}

int main(void)
{
    test_golden();
    test_corpus();
    test_valid_file();
    test_malformed();
    test_mutations();
    return kgt_finish();
}
