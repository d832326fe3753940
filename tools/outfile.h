/* outfile.h - output files that appear whole or not at all.
 *
 * kg_outfile_open() creates a hidden temporary file beside the target at once, so a missing
 * directory, a read-only one or a target that is not a regular file (a directory, a FIFO) is
 * reported before any work; the data then goes to the temporary file with every write
 * checked (errno: ENOSPC, EFBIG, EIO...), is synced, and kg_outfile_commit() renames it over
 * the target. On any failure the temporary file is removed and an existing target is left
 * untouched. Messages name the path and the cause. */
#ifndef KG_OUTFILE_H
#define KG_OUTFILE_H

#include <stddef.h>

#include "status.h"

typedef struct kg_outfile {
    char *path; /* the target */
    char *tmp;  /* the temporary file beside it, NULL once committed or aborted */
    int fd;
} kg_outfile;

kg_status kg_outfile_open(kg_outfile *o, const char *path, kg_error *err);
kg_status kg_outfile_write(kg_outfile *o, const void *data, size_t n, kg_error *err);
/* fsync, close, rename over the target. */
kg_status kg_outfile_commit(kg_outfile *o, kg_error *err);
/* Removes the temporary file unless committed; frees. Safe on a zeroed or committed o. */
void kg_outfile_abort(kg_outfile *o);

#endif
