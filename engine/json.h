/* json.h - a small defensive JSON reader for safetensors headers and the
 * model configs kept in __metadata__.
 *
 * Parsing builds an immutable tree; every lookup tolerates NULL so chains
 * like kg_json_get(kg_json_get(root, "a"), "b") need no checks between. */
#ifndef KG_JSON_H
#define KG_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum kg_json_type {
    KG_JSON_NULL,
    KG_JSON_BOOL,
    KG_JSON_NUMBER,
    KG_JSON_STRING,
    KG_JSON_ARRAY,
    KG_JSON_OBJECT,
} kg_json_type;

typedef struct kg_json kg_json;

/* Parses len bytes (no NUL needed). Rejects trailing garbage, depth > 64,
 * invalid escapes; strings are decoded to UTF-8 (\u escapes included).
 * `what` names the document in error messages. */
kg_status kg_json_parse(kg_json **out, const char *text, size_t len, const char *what,
                        kg_error *err);
void kg_json_free(kg_json *j);

kg_json_type kg_json_type_of(const kg_json *j);                  /* KG_JSON_NULL for NULL */
size_t kg_json_count(const kg_json *j);                          /* array/object members, else 0 */
const kg_json *kg_json_at(const kg_json *j, size_t i);           /* array element or object value */
const char *kg_json_key_at(const kg_json *j, size_t i);          /* object key, else NULL */
const kg_json *kg_json_get(const kg_json *obj, const char *key); /* first member named key */
const char *kg_json_string(const kg_json *j);                    /* NULL unless a string */
size_t kg_json_string_len(const kg_json *j);                     /* bytes (strings may hold NUL) */
double kg_json_number(const kg_json *j, double fallback);
int kg_json_bool(const kg_json *j, int fallback);

/* Typed getters for required config keys: the error names `what` and key. */
kg_status kg_json_req_int(const kg_json *obj, const char *key, int64_t *out, const char *what,
                          kg_error *err);
kg_status kg_json_req_double(const kg_json *obj, const char *key, double *out, const char *what,
                             kg_error *err);
/* An optional epsilon (layer/group norm): absent or null -> dflt; otherwise a finite number
 * in (0, KG_JSON_MAX_EPS], or KG_ERR_FORMAT naming `what`, key and value. */
#define KG_JSON_MAX_EPS 0.1
kg_status kg_json_opt_eps(const kg_json *obj, const char *key, double dflt, float *out,
                          const char *what, kg_error *err);
/* Reads an array of integers into out[0..max); *n gets the length. */
kg_status kg_json_req_int_array(const kg_json *obj, const char *key, int64_t *out, size_t max,
                                size_t *n, const char *what, kg_error *err);

#endif
