/* status.c - status names and error message formatting. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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
    case KG_ERR_NONFINITE: return "KG_ERR_NONFINITE";
    }
    return "KG_ERR_UNKNOWN";
}

/* Start of the UTF-8 character that contains s[i] (never before s). */
static size_t char_start(const char *s, size_t i)
{
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    return i;
}

void kg_elide_middle(char *dst, size_t size, const char *src)
{
    static const char dots[] = "...";
    size_t n = strlen(src), head, tail;
    if (size == 0)
        return;
    if (n < size) {
        memmove(dst, src, n + 1);
        return;
    }
    if (size < sizeof dots + 2) {
        dst[0] = '\0';
        return;
    }
    /* a third for the start (what failed), the rest for the end (why) */
    head = char_start(src, (size - sizeof dots) / 3);
    tail = n - (size - sizeof dots - head);
    if (tail < n && ((unsigned char)src[tail] & 0xC0) == 0x80)
        while (tail < n && ((unsigned char)src[tail] & 0xC0) == 0x80)
            tail++;
    memmove(dst, src, head);
    memcpy(dst + head, dots, sizeof dots - 1);
    memmove(dst + head + sizeof dots - 1, src + tail, n - tail + 1);
}

void kg_vformat_elided(char *dst, size_t size, const char *fmt, va_list ap)
{
    va_list ap2;
    char *full;
    int n;
    if (size == 0)
        return;
    va_copy(ap2, ap);
    n = vsnprintf(dst, size, fmt, ap);
    if (n >= 0 && (size_t)n >= size && (full = malloc((size_t)n + 1))) {
        vsnprintf(full, (size_t)n + 1, fmt, ap2);
        kg_elide_middle(dst, size, full);
        free(full);
    } else if (n >= 0 && (size_t)n >= size) {
        /* no memory for the whole text: at least end on a character boundary */
        dst[char_start(dst, size - 1)] = '\0';
    }
    va_end(ap2);
}

kg_status kg_error_set(kg_error *err, kg_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        kg_vformat_elided(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

static void format_elided(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kg_vformat_elided(dst, size, fmt, ap);
    va_end(ap);
}

void kg_error_prefix(kg_error *err, const char *fmt, ...)
{
    char head[KG_ERROR_MSG_LEN];
    char old[KG_ERROR_MSG_LEN];
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    kg_vformat_elided(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    format_elided(err->msg, sizeof err->msg, "%s: %s", head, old);
}

void kg_error_clear(kg_error *err)
{
    if (err) {
        err->code = KG_OK;
        err->msg[0] = '\0';
    }
}
