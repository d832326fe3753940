/* status.h - kg_status codes and the error record every fallible call fills.
 *
 * Library code never exits: every public function returns a kg_status and,
 * when given a kg_error, writes a message that names the culprit (file,
 * tensor, token, pad). */
#ifndef KG_STATUS_H
#define KG_STATUS_H

#include <stdarg.h>
#include <stddef.h>

typedef enum kg_status {
    KG_OK = 0,
    KG_ERR_INVALID_ARG,  /* a caller passed a value outside the contract */
    KG_ERR_IO,           /* a file cannot be opened, mapped or read */
    KG_ERR_FORMAT,       /* a file is malformed (header, JSON, protobuf) */
    KG_ERR_VERSION,      /* a model file of an unknown format version */
    KG_ERR_WEIGHTS,      /* a tensor is missing or has the wrong dtype/shape */
    KG_ERR_SHAPE,        /* an op was called with inconsistent shapes */
    KG_ERR_NOMEM,        /* host memory or the activation arena ran out */
    KG_ERR_NO_DEVICE,    /* the requested GPU backend has no usable device */
    KG_ERR_DEVICE,       /* a driver/runtime/library call on the device failed */
    KG_ERR_PROMPT,       /* prompt text or placeholder count is invalid */
    KG_ERR_IMAGE,        /* a reference image has an unsupported format or size */
    KG_ERR_CANCELLED,    /* the caller's cancel flag stopped the work */
    KG_ERR_UNSUPPORTED,  /* a valid request this build cannot serve */
    KG_ERR_NONFINITE,    /* a stage produced NaN/Inf (weights, latents, scheduler config) */
} kg_status;

#define KG_ERROR_MSG_LEN 512

typedef struct kg_error {
    kg_status code;
    char msg[KG_ERROR_MSG_LEN];
} kg_error;

/* Short constant name of a status, e.g. "KG_ERR_WEIGHTS". */
const char *kg_status_name(kg_status s);

/* Records code and a printf-style message in err (which may be NULL) and
 * returns code, so callers can write `return kg_error_set(err, ...)`. */
kg_status kg_error_set(kg_error *err, kg_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Prefixes an existing message with context ("loading unet: ..."). */
void kg_error_prefix(kg_error *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

void kg_error_clear(kg_error *err);

/* Copies src into dst (size bytes); a longer text loses its middle, replaced by "...", cut at
 * UTF-8 character boundaries: the start (what failed) and the end (why) survive a long path.
 * dst may be src. kg_error_set and kg_error_prefix shorten their messages this way. */
void kg_elide_middle(char *dst, size_t size, const char *src);
void kg_vformat_elided(char *dst, size_t size, const char *fmt, va_list ap);

#endif
