/* outfile.c - see outfile.h. */
#include "outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

kg_status kg_outfile_open(kg_outfile *o, const char *path, kg_error *err)
{
    struct stat st;
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    mode_t mask;

    memset(o, 0, sizeof *o);
    o->fd = -1;
    if (!*path || (slash && !slash[1]))
        return kg_error_set(err, KG_ERR_IO, "%s: not a file name", path);
    /* stat, not open: opening a FIFO would block until a reader comes */
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return kg_error_set(err, KG_ERR_IO, "%s: exists and is not a regular file", path);
    o->path = strdup(path);
    o->tmp = malloc(strlen(path) + 16);
    if (!o->path || !o->tmp) {
        kg_outfile_abort(o);
        return kg_error_set(err, KG_ERR_NOMEM, "%s: no memory", path);
    }
    /* DIR/.NAME.XXXXXX: same directory (rename stays atomic), hidden */
    memcpy(o->tmp, path, dirlen);
    sprintf(o->tmp + dirlen, ".%s.XXXXXX", path + dirlen);
    o->fd = mkostemp(o->tmp, O_CLOEXEC);
    if (o->fd < 0) {
        int e = errno;
        free(o->tmp);
        o->tmp = NULL;
        kg_outfile_abort(o);
        if (dirlen)
            return kg_error_set(err, KG_ERR_IO, "%s: cannot create a file in %.*s: %s", path,
                                (int)dirlen, path, strerror(e));
        return kg_error_set(err, KG_ERR_IO, "%s: cannot create a file in the current directory: %s",
                            path, strerror(e));
    }
    /* mkstemp makes 0600; a finished output gets the usual 0666 & ~umask */
    mask = umask(0);
    umask(mask);
    if (fchmod(o->fd, 0666 & ~mask) != 0) {
        int e = errno;
        kg_outfile_abort(o);
        return kg_error_set(err, KG_ERR_IO, "%s: cannot set permissions: %s", path, strerror(e));
    }
    return KG_OK;
}

kg_status kg_outfile_write(kg_outfile *o, const void *data, size_t n, kg_error *err)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(o->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return kg_error_set(err, KG_ERR_IO, "%s: write failed: %s", o->path,
                                w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return KG_OK;
}

kg_status kg_outfile_commit(kg_outfile *o, kg_error *err)
{
    int e;
    if (fsync(o->fd) != 0 && errno != EINVAL) {
        e = errno;
        return kg_error_set(err, KG_ERR_IO, "%s: write failed: %s", o->path, strerror(e));
    }
    e = close(o->fd);
    o->fd = -1;
    if (e != 0)
        return kg_error_set(err, KG_ERR_IO, "%s: write failed: %s", o->path, strerror(errno));
    if (rename(o->tmp, o->path) != 0)
        return kg_error_set(err, KG_ERR_IO, "%s: cannot rename %s into place: %s", o->path, o->tmp,
                            strerror(errno));
    free(o->tmp);
    o->tmp = NULL;
    return KG_OK;
}

void kg_outfile_abort(kg_outfile *o)
{
    if (o->fd >= 0)
        close(o->fd);
    o->fd = -1;
    if (o->tmp)
        unlink(o->tmp);
    free(o->tmp);
    free(o->path);
    o->tmp = NULL;
    o->path = NULL;
}
