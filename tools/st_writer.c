/* st_writer.c - minimal safetensors writer: header JSON in insertion order,
 * data 8-byte aligned as the format recommends. */
#include "st_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *name;
    kg_tensor t;
    size_t nbytes;
} entry;

typedef struct kv {
    char *key, *value;
} kv;

struct kg_st_writer {
    entry *items;
    size_t n, cap;
    kv *meta;
    size_t n_meta, cap_meta;
};

kg_st_writer *kg_st_writer_new(void)
{
    return calloc(1, sizeof(kg_st_writer));
}

void kg_st_writer_free(kg_st_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->items[i].name);
        free(w->items[i].t.data);
    }
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->items);
    free(w->meta);
    free(w);
}

kg_status kg_st_writer_add(kg_st_writer *w, const char *name, const kg_tensor *t, kg_error *err)
{
    entry *e = NULL;
    size_t nb = kg_tensor_nbytes(t);
    void *copy = malloc(nb ? nb : 1);
    if (!copy)
        return kg_error_set(err, KG_ERR_NOMEM, "dump: no memory for %s", name);
    memcpy(copy, t->data, nb);
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->items[i].name, name))
            e = &w->items[i];
    if (e) {
        free(e->t.data);
    } else {
        if (w->n == w->cap) {
            size_t cap = w->cap ? 2 * w->cap : 32;
            entry *items = realloc(w->items, cap * sizeof *items);
            if (!items) {
                free(copy);
                return kg_error_set(err, KG_ERR_NOMEM, "dump: no memory for %s", name);
            }
            w->items = items;
            w->cap = cap;
        }
        e = &w->items[w->n++];
        e->name = strdup(name);
    }
    e->t = *t;
    e->t.data = copy;
    e->nbytes = nb;
    return KG_OK;
}

kg_status kg_st_writer_add_metadata(kg_st_writer *w, const char *key, const char *value,
                                    kg_error *err)
{
    if (w->n_meta == w->cap_meta) {
        size_t cap = w->cap_meta ? 2 * w->cap_meta : 8;
        kv *meta = realloc(w->meta, cap * sizeof *meta);
        if (!meta)
            return kg_error_set(err, KG_ERR_NOMEM, "dump: no memory for metadata");
        w->meta = meta;
        w->cap_meta = cap;
    }
    w->meta[w->n_meta].key = strdup(key);
    w->meta[w->n_meta].value = strdup(value);
    w->n_meta++;
    return KG_OK;
}

/* Appends s to the growable buffer as a JSON string literal. */
static int put_json_string(char **buf, size_t *len, size_t *cap, const char *s)
{
    for (;;) {
        size_t need = *len + 6 * strlen(s) + 3;
        if (need <= *cap)
            break;
        *cap = need * 2;
        *buf = realloc(*buf, *cap);
        if (!*buf)
            return 0;
    }
    (*buf)[(*len)++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            (*buf)[(*len)++] = '\\';
            (*buf)[(*len)++] = (char)*p;
        } else if (*p < 0x20) {
            *len += (size_t)sprintf(*buf + *len, "\\u%04x", *p);
        } else {
            (*buf)[(*len)++] = (char)*p;
        }
    }
    (*buf)[(*len)++] = '"';
    return 1;
}

static int put(char **buf, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        char *b = realloc(*buf, (*len + n + 1) * 2);
        if (!b)
            return 0;
        *buf = b;
        *cap = (*len + n + 1) * 2;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    return 1;
}

kg_status kg_st_writer_write(const kg_st_writer *w, kg_outfile *o, kg_error *err)
{
    char *hdr = NULL, tmp[256];
    const char *path = o->path;
    size_t len = 0, cap = 0, off = 0;
    uint64_t hlen;
    kg_status st = KG_OK;
    int okb = put(&hdr, &len, &cap, "{");

    if (okb && w->n_meta) {
        okb = put(&hdr, &len, &cap, "\"__metadata__\":{");
        for (size_t i = 0; okb && i < w->n_meta; i++) {
            okb = (i == 0 || put(&hdr, &len, &cap, ",")) &&
                  put_json_string(&hdr, &len, &cap, w->meta[i].key) && put(&hdr, &len, &cap, ":") &&
                  put_json_string(&hdr, &len, &cap, w->meta[i].value);
        }
        okb = okb && put(&hdr, &len, &cap, w->n ? "}," : "}");
    }
    for (size_t i = 0; okb && i < w->n; i++) {
        const entry *e = &w->items[i];
        okb = (i == 0 || put(&hdr, &len, &cap, ",")) && put_json_string(&hdr, &len, &cap, e->name);
        snprintf(tmp, sizeof tmp, ":{\"dtype\":\"%s\",\"shape\":[", kg_dtype_name(e->t.dtype));
        okb = okb && put(&hdr, &len, &cap, tmp);
        for (int d = 0; okb && d < e->t.ndim; d++) {
            snprintf(tmp, sizeof tmp, d ? ",%lld" : "%lld", (long long)e->t.shape[d]);
            okb = put(&hdr, &len, &cap, tmp);
        }
        snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%zu,%zu]}", off, off + e->nbytes);
        okb = okb && put(&hdr, &len, &cap, tmp);
        off += e->nbytes;
    }
    okb = okb && put(&hdr, &len, &cap, "}");
    while (okb && len % 8)
        okb = put(&hdr, &len, &cap, " ");
    if (!okb) {
        st = kg_error_set(err, KG_ERR_NOMEM, "%s: no memory for the header", path);
        goto fail;
    }
    hlen = len;
    if ((st = kg_outfile_write(o, &hlen, 8, err)) != KG_OK ||
        (st = kg_outfile_write(o, hdr, len, err)) != KG_OK)
        goto fail;
    for (size_t i = 0; i < w->n; i++)
        if ((st = kg_outfile_write(o, w->items[i].t.data, w->items[i].nbytes, err)) != KG_OK)
            goto fail;
fail:
    free(hdr);
    return st;
}

kg_status kg_st_writer_save(const kg_st_writer *w, const char *path, kg_error *err)
{
    kg_outfile o;
    kg_status st = kg_outfile_open(&o, path, err);
    if (st == KG_OK)
        st = kg_st_writer_write(w, &o, err);
    if (st == KG_OK)
        st = kg_outfile_commit(&o, err);
    kg_outfile_abort(&o);
    return st;
}
