/* json.c - recursive-descent JSON reader with hard limits.
 *
 * Input comes from untrusted files, so every read is bounds-checked against
 * the given length (no NUL terminator is assumed), nesting is capped, raw
 * bytes must be valid UTF-8 and numbers go through strtod on a bounded,
 * NUL-terminated copy. */
#include "json.h"

#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64
#define JSON_MAX_NUMBER 128
/* Each value costs ~100 bytes of tree, so this bounds a hostile document's
 * memory to ~100 MB; a full model header has a few tens of thousands. */
#define JSON_MAX_VALUES 1000000

struct kg_json {
    kg_json_type type;
    int boolean;
    double number;
    char *str; /* NUL-terminated; may hold NULs inside */
    size_t str_len;
    kg_json **items; /* array elements or object values */
    char **keys;     /* object keys (NUL-terminated) */
    size_t count, cap;
};

typedef struct parser {
    const unsigned char *p;
    size_t len, pos;
    const char *what;
    kg_error *err;
    kg_status status;
    size_t n_values;
} parser;

static kg_status fail(parser *ps, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static kg_status fail(parser *ps, const char *fmt, ...)
{
    char msg[KG_ERROR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    kg_vformat_elided(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ps->status == KG_OK)
        ps->status = kg_error_set(ps->err, KG_ERR_FORMAT, "%s: invalid JSON at byte %zu: %s",
                                  ps->what, ps->pos, msg);
    return ps->status;
}

void kg_json_free(kg_json *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->count; i++) {
        kg_json_free(j->items[i]);
        if (j->keys)
            free(j->keys[i]);
    }
    free(j->items);
    free(j->keys);
    free(j->str);
    free(j);
}

static void skip_ws(parser *ps)
{
    while (ps->pos < ps->len) {
        unsigned char c = ps->p[ps->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        ps->pos++;
    }
}

static int at_literal(parser *ps, const char *lit)
{
    size_t n = strlen(lit);
    return ps->len - ps->pos >= n && memcmp(ps->p + ps->pos, lit, n) == 0;
}

/* Appends bytes to a growing buffer. */
typedef struct sbuf {
    char *data;
    size_t len, cap;
} sbuf;

static int sbuf_put(sbuf *b, const void *src, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        char *d;
        while (cap < b->len + n + 1)
            cap *= 2;
        d = realloc(b->data, cap);
        if (!d)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, src, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 1;
}

static size_t utf8_encode(uint32_t cp, unsigned char out[4])
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, <= U+10FFFF), 0 when invalid. */
static size_t utf8_valid(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static int read_hex4(parser *ps, uint32_t *out)
{
    uint32_t v = 0;
    if (ps->len - ps->pos < 4)
        return 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = ps->p[ps->pos + (size_t)i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return 0;
    }
    ps->pos += 4;
    *out = v;
    return 1;
}

/* Parses a string starting at the opening quote into a malloc'd buffer. */
static kg_status parse_string(parser *ps, char **out, size_t *out_len)
{
    sbuf b = {0};
    ps->pos++; /* opening quote */
    if (!sbuf_put(&b, "", 0))
        goto nomem;
    for (;;) {
        unsigned char c;
        if (ps->pos >= ps->len) {
            fail(ps, "unterminated string");
            goto fail;
        }
        c = ps->p[ps->pos];
        if (c == '"') {
            ps->pos++;
            break;
        }
        if (c < 0x20) {
            fail(ps, "control character 0x%02x in string", c);
            goto fail;
        }
        if (c == '\\') {
            unsigned char e, enc[4];
            uint32_t cp;
            if (ps->pos + 1 >= ps->len) {
                fail(ps, "unterminated escape");
                goto fail;
            }
            e = ps->p[ps->pos + 1];
            ps->pos += 2;
            switch (e) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u':
                if (!read_hex4(ps, &cp)) {
                    fail(ps, "invalid \\u escape");
                    goto fail;
                }
                if (cp >= 0xdc00 && cp <= 0xdfff) {
                    fail(ps, "lone low surrogate \\u%04x", (unsigned)cp);
                    goto fail;
                }
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    uint32_t lo;
                    if (!at_literal(ps, "\\u")) {
                        fail(ps, "high surrogate \\u%04x without a low surrogate", (unsigned)cp);
                        goto fail;
                    }
                    ps->pos += 2;
                    if (!read_hex4(ps, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                        fail(ps, "high surrogate \\u%04x without a low surrogate", (unsigned)cp);
                        goto fail;
                    }
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                break;
            default:
                ps->pos -= 2;
                fail(ps, "invalid escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?');
                goto fail;
            }
            if (!sbuf_put(&b, enc, utf8_encode(cp, enc)))
                goto nomem;
            continue;
        }
        {
            size_t n = utf8_valid(ps->p + ps->pos, ps->len - ps->pos);
            if (!n) {
                fail(ps, "invalid UTF-8 in string");
                goto fail;
            }
            if (!sbuf_put(&b, ps->p + ps->pos, n))
                goto nomem;
            ps->pos += n;
        }
    }
    *out = b.data;
    *out_len = b.len;
    return KG_OK;
nomem:
    if (ps->status == KG_OK)
        ps->status =
            kg_error_set(ps->err, KG_ERR_NOMEM, "%s: out of memory parsing JSON", ps->what);
fail:
    free(b.data);
    return ps->status;
}

static kg_status parse_number(parser *ps, double *out)
{
    size_t start = ps->pos, n;
    char buf[JSON_MAX_NUMBER + 1];
    const unsigned char *p = ps->p;
    size_t i = ps->pos, len = ps->len;

    if (i < len && p[i] == '-')
        i++;
    if (i < len && p[i] == '0') {
        i++;
    } else if (i < len && p[i] >= '1' && p[i] <= '9') {
        while (i < len && p[i] >= '0' && p[i] <= '9')
            i++;
    } else {
        return fail(ps, "invalid number");
    }
    if (i < len && p[i] == '.') {
        i++;
        if (i >= len || p[i] < '0' || p[i] > '9')
            return fail(ps, "invalid number: digit expected after '.'");
        while (i < len && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    if (i < len && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < len && (p[i] == '+' || p[i] == '-'))
            i++;
        if (i >= len || p[i] < '0' || p[i] > '9')
            return fail(ps, "invalid number: digit expected in exponent");
        while (i < len && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    n = i - start;
    if (n > JSON_MAX_NUMBER)
        return fail(ps, "number longer than %d characters", JSON_MAX_NUMBER);
    memcpy(buf, p + start, n);
    buf[n] = '\0';
    /* strtod follows LC_NUMERIC, which a host application (GStreamer) may
     * have set to a locale with a decimal comma. */
    {
        const char *dp = localeconv()->decimal_point;
        char *dot = memchr(buf, '.', n);
        if (dot && dp && dp[0] && dp[1] == '\0')
            *dot = dp[0];
    }
    *out = strtod(buf, NULL);
    ps->pos = i;
    return KG_OK;
}

static kg_json *new_node(parser *ps, kg_json_type type)
{
    kg_json *j;
    if (++ps->n_values > JSON_MAX_VALUES) {
        fail(ps, "more than %d values", JSON_MAX_VALUES);
        return NULL;
    }
    j = calloc(1, sizeof *j);
    if (!j && ps->status == KG_OK)
        ps->status =
            kg_error_set(ps->err, KG_ERR_NOMEM, "%s: out of memory parsing JSON", ps->what);
    if (j)
        j->type = type;
    return j;
}

static int add_child(parser *ps, kg_json *parent, kg_json *child, char *key)
{
    if (parent->count == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 4;
        kg_json **items = realloc(parent->items, cap * sizeof *items);
        if (!items)
            goto nomem;
        parent->items = items;
        if (parent->type == KG_JSON_OBJECT) {
            char **keys = realloc(parent->keys, cap * sizeof *keys);
            if (!keys)
                goto nomem;
            parent->keys = keys;
        }
        parent->cap = cap;
    }
    parent->items[parent->count] = child;
    if (parent->type == KG_JSON_OBJECT)
        parent->keys[parent->count] = key;
    parent->count++;
    return 1;
nomem:
    if (ps->status == KG_OK)
        ps->status =
            kg_error_set(ps->err, KG_ERR_NOMEM, "%s: out of memory parsing JSON", ps->what);
    return 0;
}

static kg_json *parse_value(parser *ps, int depth);

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Python's json keeps the last of repeated keys, a first-match lookup the first: rather than
 * pick one, a repeated key is an error (sorted, so a huge object cannot stall us). */
static int unique_keys(parser *ps, const kg_json *obj)
{
    const char **sorted;
    int ok = 1;
    if (obj->count < 2)
        return 1;
    sorted = malloc(obj->count * sizeof *sorted);
    if (!sorted) {
        if (ps->status == KG_OK)
            ps->status =
                kg_error_set(ps->err, KG_ERR_NOMEM, "%s: out of memory parsing JSON", ps->what);
        return 0;
    }
    memcpy(sorted, obj->keys, obj->count * sizeof *sorted);
    qsort(sorted, obj->count, sizeof *sorted, cmp_key);
    for (size_t i = 1; i < obj->count && ok; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            fail(ps, "duplicate object key \"%s\"", sorted[i]);
            ok = 0;
        }
    free(sorted);
    return ok;
}

static kg_json *parse_container(parser *ps, int depth, int is_object)
{
    kg_json *j;
    char close = is_object ? '}' : ']';

    if (depth >= JSON_MAX_DEPTH) {
        fail(ps, "nesting deeper than %d levels", JSON_MAX_DEPTH);
        return NULL;
    }
    j = new_node(ps, is_object ? KG_JSON_OBJECT : KG_JSON_ARRAY);
    if (!j)
        return NULL;
    ps->pos++;
    skip_ws(ps);
    if (ps->pos < ps->len && ps->p[ps->pos] == (unsigned char)close) {
        ps->pos++;
        return j;
    }
    for (;;) {
        char *key = NULL;
        size_t key_len;
        kg_json *child;

        skip_ws(ps);
        if (is_object) {
            if (ps->pos >= ps->len || ps->p[ps->pos] != '"') {
                fail(ps, "object key (a string) expected");
                goto fail;
            }
            if (parse_string(ps, &key, &key_len) != KG_OK)
                goto fail;
            if (strlen(key) != key_len) {
                /* lookups compare C strings: "a\u0000b" would answer for "a" */
                free(key);
                fail(ps, "object key with a NUL character (\\u0000)");
                goto fail;
            }
            skip_ws(ps);
            if (ps->pos >= ps->len || ps->p[ps->pos] != ':') {
                free(key);
                fail(ps, "':' expected after object key");
                goto fail;
            }
            ps->pos++;
        }
        child = parse_value(ps, depth + 1);
        if (!child) {
            free(key);
            goto fail;
        }
        if (!add_child(ps, j, child, key)) {
            kg_json_free(child);
            free(key);
            goto fail;
        }
        skip_ws(ps);
        if (ps->pos >= ps->len) {
            fail(ps, "unterminated %s", is_object ? "object" : "array");
            goto fail;
        }
        if (ps->p[ps->pos] == ',') {
            ps->pos++;
            continue;
        }
        if (ps->p[ps->pos] == (unsigned char)close) {
            ps->pos++;
            if (is_object && !unique_keys(ps, j))
                goto fail;
            return j;
        }
        fail(ps, "',' or '%c' expected", close);
        goto fail;
    }
fail:
    kg_json_free(j);
    return NULL;
}

static kg_json *parse_value(parser *ps, int depth)
{
    kg_json *j;
    unsigned char c;

    skip_ws(ps);
    if (ps->pos >= ps->len) {
        fail(ps, "value expected, found end of input");
        return NULL;
    }
    c = ps->p[ps->pos];
    if (c == '{' || c == '[')
        return parse_container(ps, depth, c == '{');
    if (c == '"') {
        j = new_node(ps, KG_JSON_STRING);
        if (j && parse_string(ps, &j->str, &j->str_len) != KG_OK) {
            kg_json_free(j);
            return NULL;
        }
        return j;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        j = new_node(ps, KG_JSON_NUMBER);
        if (j && parse_number(ps, &j->number) != KG_OK) {
            kg_json_free(j);
            return NULL;
        }
        return j;
    }
    if (at_literal(ps, "true") || at_literal(ps, "false")) {
        j = new_node(ps, KG_JSON_BOOL);
        if (j)
            j->boolean = c == 't';
        ps->pos += c == 't' ? 4 : 5;
        return j;
    }
    if (at_literal(ps, "null")) {
        ps->pos += 4;
        return new_node(ps, KG_JSON_NULL);
    }
    if (c >= 0x20 && c < 0x7f)
        fail(ps, "unexpected character '%c'", c);
    else
        fail(ps, "unexpected byte 0x%02x", c);
    return NULL;
}

kg_status kg_json_parse(kg_json **out, const char *text, size_t len, const char *what,
                        kg_error *err)
{
    parser ps;
    kg_json *root;

    if (!out || (!text && len))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_json_parse: NULL argument");
    *out = NULL;
    ps.p = (const unsigned char *)text;
    ps.len = len;
    ps.pos = 0;
    ps.what = what ? what : "JSON";
    ps.err = err;
    ps.status = KG_OK;
    ps.n_values = 0;
    root = parse_value(&ps, 0);
    if (!root)
        return ps.status;
    skip_ws(&ps);
    if (ps.pos != ps.len) {
        kg_json_free(root);
        return fail(&ps, "trailing characters after the document");
    }
    *out = root;
    return KG_OK;
}

kg_json_type kg_json_type_of(const kg_json *j)
{
    return j ? j->type : KG_JSON_NULL;
}

size_t kg_json_count(const kg_json *j)
{
    return j && (j->type == KG_JSON_ARRAY || j->type == KG_JSON_OBJECT) ? j->count : 0;
}

const kg_json *kg_json_at(const kg_json *j, size_t i)
{
    return i < kg_json_count(j) ? j->items[i] : NULL;
}

const char *kg_json_key_at(const kg_json *j, size_t i)
{
    return j && j->type == KG_JSON_OBJECT && i < j->count ? j->keys[i] : NULL;
}

const kg_json *kg_json_get(const kg_json *obj, const char *key)
{
    if (!obj || obj->type != KG_JSON_OBJECT || !key)
        return NULL;
    for (size_t i = 0; i < obj->count; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return obj->items[i];
    return NULL;
}

const char *kg_json_string(const kg_json *j)
{
    return j && j->type == KG_JSON_STRING ? j->str : NULL;
}

size_t kg_json_string_len(const kg_json *j)
{
    return j && j->type == KG_JSON_STRING ? j->str_len : 0;
}

double kg_json_number(const kg_json *j, double fallback)
{
    return j && j->type == KG_JSON_NUMBER ? j->number : fallback;
}

int kg_json_bool(const kg_json *j, int fallback)
{
    return j && j->type == KG_JSON_BOOL ? j->boolean : fallback;
}

/* Integers above 2^53 are not exact in a double, so they are refused
 * rather than silently rounded. */
static int as_int(const kg_json *j, int64_t *out)
{
    double v;
    if (!j || j->type != KG_JSON_NUMBER)
        return 0;
    v = j->number;
    if (!(v >= -9007199254740992.0 && v <= 9007199254740992.0) || v != floor(v))
        return 0;
    *out = (int64_t)v;
    return 1;
}

kg_status kg_json_req_int(const kg_json *obj, const char *key, int64_t *out, const char *what,
                          kg_error *err)
{
    const kg_json *v = kg_json_get(obj, key);
    if (!v)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: missing key '%s'", what, key);
    if (!as_int(v, out))
        return kg_error_set(err, KG_ERR_FORMAT, "%s: key '%s' is not an integer", what, key);
    return KG_OK;
}

kg_status kg_json_req_double(const kg_json *obj, const char *key, double *out, const char *what,
                             kg_error *err)
{
    const kg_json *v = kg_json_get(obj, key);
    if (!v)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: missing key '%s'", what, key);
    if (v->type != KG_JSON_NUMBER || !isfinite(v->number))
        return kg_error_set(err, KG_ERR_FORMAT, "%s: key '%s' is not a finite number", what, key);
    *out = v->number;
    return KG_OK;
}

kg_status kg_json_opt_eps(const kg_json *obj, const char *key, double dflt, float *out,
                          const char *what, kg_error *err)
{
    const kg_json *v = kg_json_get(obj, key);
    double x = dflt;
    if (v && v->type != KG_JSON_NULL) {
        if (v->type != KG_JSON_NUMBER)
            return kg_error_set(err, KG_ERR_FORMAT, "%s: key '%s' is not a number", what, key);
        x = v->number;
    }
    if (!(x > 0.0 && x <= KG_JSON_MAX_EPS))
        return kg_error_set(err, KG_ERR_FORMAT, "%s: %s %g: expected a number in (0, %g]", what,
                            key, x, KG_JSON_MAX_EPS);
    *out = (float)x;
    return KG_OK;
}

kg_status kg_json_req_int_array(const kg_json *obj, const char *key, int64_t *out, size_t max,
                                size_t *n, const char *what, kg_error *err)
{
    const kg_json *v = kg_json_get(obj, key);
    if (!v)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: missing key '%s'", what, key);
    if (v->type != KG_JSON_ARRAY)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: key '%s' is not an array", what, key);
    if (v->count > max)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: key '%s' has %zu elements, at most %zu allowed", what, key,
                            v->count, max);
    for (size_t i = 0; i < v->count; i++)
        if (!as_int(v->items[i], &out[i]))
            return kg_error_set(err, KG_ERR_FORMAT, "%s: element %zu of '%s' is not an integer",
                                what, i, key);
    *n = v->count;
    return KG_OK;
}
