/* backend.c - backend-independent helpers: release and the sticky error (also linked into
 * the CUDA module). Providers: backend_provider.c. */
#include "backend.h"

#include <stdarg.h>
#include <stdio.h>

void kg_backend_free(kg_backend *be)
{
    if (be && be->ops && be->ops->destroy)
        be->ops->destroy(be);
}

void kg_backend_fail(kg_backend *be, kg_status code, const char *fmt, ...)
{
    va_list ap;
    if (!be || be->err.code != KG_OK)
        return;
    be->err.code = code;
    va_start(ap, fmt);
    vsnprintf(be->err.msg, sizeof be->err.msg, fmt, ap);
    va_end(ap);
}
