/* st_writer.h - collects named tensors in memory and writes one .safetensors
 * file (tools only: --dump of kosmosg-generate, test fixtures). */
#ifndef KG_ST_WRITER_H
#define KG_ST_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "outfile.h"
#include "status.h"
#include "tensor.h"

typedef struct kg_st_writer kg_st_writer;

kg_st_writer *kg_st_writer_new(void);
void kg_st_writer_free(kg_st_writer *w);

/* Copies the tensor (host data). A repeated name replaces the earlier one. */
kg_status kg_st_writer_add(kg_st_writer *w, const char *name, const kg_tensor *t, kg_error *err);
kg_status kg_st_writer_add_metadata(kg_st_writer *w, const char *key, const char *value,
                                    kg_error *err);
/* Writes the file to path through a temporary file renamed into place (outfile.h). */
kg_status kg_st_writer_save(const kg_st_writer *w, const char *path, kg_error *err);
/* Writes the file's bytes into an open kg_outfile (the caller commits it). */
kg_status kg_st_writer_write(const kg_st_writer *w, kg_outfile *o, kg_error *err);

#endif
