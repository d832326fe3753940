/* status.c - status names and error message formatting. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *kg_status_name(kg_status s)
{
    switch (s) {
    case KG_OK: return "KG_OK";
    case KG_ERR_INVALID_ARG: return "KG_ERR_INVALID_ARG";
    case KG_ERR_IO: return "KG_ERR_IO";
    case KG_ERR_FORMAT: return "KG_ERR_FORMAT";
    case KG_ERR_VERSION: return "KG_ERR_VERSION";
    case KG_ERR_WEIGHTS: return "KG_ERR_WEIGHTS";
    case KG_ERR_SHAPE: return "KG_ERR_SHAPE";
    case KG_ERR_NOMEM: return "KG_ERR_NOMEM";
    case KG_ERR_NO_DEVICE: return "KG_ERR_NO_DEVICE";
    case KG_ERR_DEVICE: return "KG_ERR_DEVICE";
    case KG_ERR_PROMPT: return "KG_ERR_PROMPT";
    case KG_ERR_IMAGE: return "KG_ERR_IMAGE";
    case KG_ERR_CANCELLED: return "KG_ERR_CANCELLED";
    case KG_ERR_UNSUPPORTED: return "KG_ERR_UNSUPPORTED";
    }
    return "KG_ERR_UNKNOWN";
}

kg_status kg_error_set(kg_error *err, kg_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void kg_error_prefix(kg_error *err, const char *fmt, ...)
{
    char head[KG_ERROR_MSG_LEN];
    char old[KG_ERROR_MSG_LEN];
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%.200s: %.300s", head, old);
}

void kg_error_clear(kg_error *err)
{
    if (err) {
        err->code = KG_OK;
        err->msg[0] = '\0';
    }
}
