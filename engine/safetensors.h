/* safetensors.h - mmap reader for .safetensors files.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "value", ...}}, then the raw data. Every offset
 * is checked against the file size, data ranges must not overlap, names are
 * unique, and size = numel * dtype size. Malformed files give KG_ERR_FORMAT
 * naming the file and the problem; nothing is read out of bounds. */
#ifndef KG_SAFETENSORS_H
#define KG_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

typedef struct kg_st_tensor {
    const char *name;
    kg_dtype dtype;
    int ndim; /* 0 for scalars; at most KG_MAX_DIMS */
    int64_t shape[KG_MAX_DIMS];
    const void *data; /* inside the mapping; may be unaligned */
    size_t nbytes;
} kg_st_tensor;

typedef struct kg_st_file kg_st_file;

kg_status kg_st_open(kg_st_file **out, const char *path, kg_error *err);
/* Parses a caller-owned buffer that must outlive the handle (fuzzing, tests). */
kg_status kg_st_open_memory(kg_st_file **out, const void *buf, size_t len, const char *name,
                            kg_error *err);
void kg_st_close(kg_st_file *f);

const char *kg_st_path(const kg_st_file *f);
size_t kg_st_count(const kg_st_file *f);
const kg_st_tensor *kg_st_at(const kg_st_file *f, size_t i); /* header order */
const kg_st_tensor *kg_st_find(const kg_st_file *f, const char *name);

/* Strict getter: the tensor must exist with this dtype and shape, otherwise
 * KG_ERR_WEIGHTS with a message naming the file, the tensor and both
 * dtypes/shapes. ndim < 0 skips the shape check. */
kg_status kg_st_get(const kg_st_file *f, const char *name, kg_dtype dtype, int ndim,
                    const int64_t *shape, const kg_st_tensor **out, kg_error *err);

/* Like kg_st_get but accepts F32, F16 or BF16 and converts into dst
 * (numel floats). */
kg_status kg_st_get_f32(const kg_st_file *f, const char *name, int ndim, const int64_t *shape,
                        float *dst, kg_error *err);

/* Copies the tensor's raw bytes into dst (t->nbytes). File data is read with
 * pread(), not through the mapping: a file truncated after the open gives
 * KG_ERR_IO naming the tensor, never a SIGBUS. */
kg_status kg_st_read(const kg_st_file *f, const kg_st_tensor *t, void *dst, kg_error *err);

/* KG_ERR_IO when the file's size or modification time differ from the open's
 * (rewritten in place while it was read); KG_OK for memory files. */
kg_status kg_st_check_unchanged(const kg_st_file *f, kg_error *err);

/* Reads any float tensor (F32/F16/BF16) as float32 (as kg_st_read);
 * KG_ERR_WEIGHTS otherwise. */
kg_status kg_st_to_f32(const kg_st_file *f, const kg_st_tensor *t, float *dst, kg_error *err);

/* __metadata__ (string values only, as the format requires). */
const char *kg_st_metadata(const kg_st_file *f, const char *key); /* NULL if absent */
size_t kg_st_metadata_count(const kg_st_file *f);
const char *kg_st_metadata_key(const kg_st_file *f, size_t i);
const char *kg_st_metadata_value(const kg_st_file *f, size_t i);

#endif
