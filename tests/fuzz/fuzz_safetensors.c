/* fuzz_safetensors.c - libFuzzer target for the safetensors reader and the
 * JSON parser under it. Any input must either open with every invariant
 * holding or be refused with a message; everything an accepted file offers
 * is read in full, so a bad bound shows up as an ASan report. Built and run
 * by tests/fuzz/run-fuzz.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "safetensors.h"

#define FUZZ_MAX_CONVERT 4096

static void require(int cond)
{
    if (!cond)
        abort(); /* a broken invariant is a finding */
}

static void check_file(const kg_st_file *f, const uint8_t *buf, size_t len)
{
    static float out[FUZZ_MAX_CONVERT];
    kg_error err;
    volatile unsigned sum = 0;

    for (size_t i = 0; i < kg_st_count(f); i++) {
        const kg_st_tensor *t = kg_st_at(f, i);
        const kg_st_tensor *g = NULL;
        kg_tensor v = kg_tensor_make(NULL, t->dtype, t->ndim, t->shape);
        const uint8_t *d = t->data;

        require(t->ndim >= 0 && t->ndim <= KG_MAX_DIMS);
        require(kg_tensor_nbytes(&v) == t->nbytes);
        require(d >= buf + 8 && d + t->nbytes <= buf + len);
        require(kg_st_find(f, t->name) == t);
        require(kg_st_get(f, t->name, t->dtype, t->ndim, t->shape, &g, &err) == KG_OK && g == t);
        for (size_t k = 0; k < t->nbytes; k++)
            sum += d[k];
        if (t->nbytes <= FUZZ_MAX_CONVERT * 2 && kg_tensor_numel(&v) <= FUZZ_MAX_CONVERT) {
            kg_status s = kg_st_to_f32(f, t, out, &err);
            int is_float = t->dtype == KG_F32 || t->dtype == KG_F16 || t->dtype == KG_BF16;
            require(is_float ? s == KG_OK : s == KG_ERR_WEIGHTS);
        }
    }
    for (size_t i = 0; i < kg_st_metadata_count(f); i++) {
        const char *k = kg_st_metadata_key(f, i);
        const char *v = kg_st_metadata_value(f, i);
        require(k && v && kg_st_metadata(f, k) == v);
        sum += (unsigned)strlen(k) + (unsigned)strlen(v);
    }
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kg_st_file *f = NULL;
    kg_json *j = NULL;
    kg_error err;
    kg_status s;

    err.code = KG_OK;
    err.msg[0] = '\0';
    s = kg_st_open_memory(&f, data, size, "fuzz", &err);
    if (s == KG_OK) {
        require(f != NULL);
        check_file(f, data, size);
    } else {
        require(f == NULL && (s == KG_ERR_FORMAT || s == KG_ERR_NOMEM) && err.msg[0] != '\0');
    }
    kg_st_close(f);

    /* the parser alone, on the whole input */
    s = kg_json_parse(&j, (const char *)data, size, "fuzz", &err);
    require(s == KG_OK ? j != NULL : j == NULL);
    kg_json_free(j);
    return 0;
}
