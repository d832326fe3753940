/* status.h - kg_status codes and the error record every fallible call fills.
 *
 * Library code never exits: every public function returns a kg_status and,
 * when given a kg_error, writes a message that names the culprit (file,
 * tensor, token, pad). */
#ifndef KG_STATUS_H
#define KG_STATUS_H

#include <stdarg.h>
#include <stddef.h>

#include "kosmosg.h" /* kg_status, kg_error, kg_status_name */

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
