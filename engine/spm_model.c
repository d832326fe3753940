/* spm_model.c - bounds-checked protobuf reader for sentencepiece .model files.
 *
 * Wire format: a message is a sequence of (key varint = field << 3 | wire
 * type, value); wire types 0 varint, 1 fixed64, 2 length-delimited, 5
 * fixed32. Unknown fields are skipped; a scalar seen twice keeps the last
 * value and an embedded message seen twice is merged, as protobuf does. */
#include "spm_model.h"

#include <stdlib.h>
#include <string.h>

typedef struct pb {
    const uint8_t *p, *end;
    const char *what;
} pb;

typedef struct pb_field {
    uint32_t num;
    int wire;
    uint64_t v;          /* varint / fixed values */
    const uint8_t *data; /* wire type 2 */
    size_t len;
} pb_field;

static kg_status pb_varint(pb *b, uint64_t *out, kg_error *err)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end)
            return kg_error_set(err, KG_ERR_FORMAT, "%s: truncated varint", b->what);
        uint8_t c = *b->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return KG_OK;
        }
    }
    return kg_error_set(err, KG_ERR_FORMAT, "%s: varint longer than 10 bytes", b->what);
}

/* Reads the next field; returns KG_OK with f->num == 0 at the end. */
static kg_status pb_next(pb *b, pb_field *f, kg_error *err)
{
    uint64_t key = 0;
    kg_status st;

    memset(f, 0, sizeof *f);
    if (b->p == b->end)
        return KG_OK;
    if ((st = pb_varint(b, &key, err)) != KG_OK)
        return st;
    f->num = (uint32_t)(key >> 3);
    f->wire = (int)(key & 7);
    if (f->num == 0 || key >> 32)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: invalid protobuf field key %llu", b->what,
                            (unsigned long long)key);
    switch (f->wire) {
    case 0: return pb_varint(b, &f->v, err);
    case 1:
    case 5: {
        size_t n = f->wire == 1 ? 8 : 4;
        if ((size_t)(b->end - b->p) < n)
            return kg_error_set(err, KG_ERR_FORMAT, "%s: truncated fixed field %u", b->what,
                                f->num);
        for (size_t i = 0; i < n; i++)
            f->v |= (uint64_t)b->p[i] << (8 * i);
        b->p += n;
        return KG_OK;
    }
    case 2: {
        uint64_t len = 0;
        if ((st = pb_varint(b, &len, err)) != KG_OK)
            return st;
        if (len > (uint64_t)(b->end - b->p))
            return kg_error_set(err, KG_ERR_FORMAT, "%s: field %u claims %llu bytes, only %zu left",
                                b->what, f->num, (unsigned long long)len, (size_t)(b->end - b->p));
        f->data = b->p;
        f->len = (size_t)len;
        b->p += len;
        return KG_OK;
    }
    default:
        return kg_error_set(err, KG_ERR_FORMAT, "%s: unsupported protobuf wire type %d (field %u)",
                            b->what, f->wire, f->num);
    }
}

static kg_status expect_wire(const pb *b, const pb_field *f, int wire, const char *name,
                             kg_error *err)
{
    if (f->wire != wire)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: %s has wire type %d, expected %d", b->what,
                            name, f->wire, wire);
    return KG_OK;
}

static kg_status add_piece(kg_spm_model *m, size_t *cap_pieces, size_t *cap_strings,
                           const uint8_t *s, size_t len, float score, int type)
{
    if ((size_t)m->n_pieces == *cap_pieces) {
        size_t cap = *cap_pieces ? *cap_pieces * 2 : 1024;
        kg_spm_piece *p = realloc(m->pieces, cap * sizeof *p);
        if (!p)
            return KG_ERR_NOMEM;
        m->pieces = p;
        *cap_pieces = cap;
    }
    if (m->strings_len + len + 1 > *cap_strings) {
        size_t cap = *cap_strings ? *cap_strings : 1 << 16;
        while (cap < m->strings_len + len + 1)
            cap *= 2;
        char *p = realloc(m->strings, cap);
        if (!p)
            return KG_ERR_NOMEM;
        m->strings = p;
        *cap_strings = cap;
    }
    kg_spm_piece *pc = &m->pieces[m->n_pieces++];
    pc->offset = m->strings_len;
    pc->len = (uint32_t)len;
    pc->score = score;
    pc->type = type;
    memcpy(m->strings + m->strings_len, s, len);
    m->strings[m->strings_len + len] = '\0';
    m->strings_len += len + 1;
    return KG_OK;
}

static kg_status parse_piece(kg_spm_model *m, size_t *cap_pieces, size_t *cap_strings,
                             const uint8_t *data, size_t len, const char *what, kg_error *err)
{
    pb b = {data, data + len, what};
    pb_field f;
    const uint8_t *s = NULL;
    size_t slen = 0;
    float score = 0.0f;
    int type = KG_SPM_NORMAL, have_piece = 0;
    kg_status st;

    for (;;) {
        if ((st = pb_next(&b, &f, err)) != KG_OK)
            return st;
        if (f.num == 0)
            break;
        if (f.num == 1) {
            if ((st = expect_wire(&b, &f, 2, "SentencePiece.piece", err)) != KG_OK)
                return st;
            s = f.data;
            slen = f.len;
            have_piece = 1;
        } else if (f.num == 2) {
            if ((st = expect_wire(&b, &f, 5, "SentencePiece.score", err)) != KG_OK)
                return st;
            uint32_t u = (uint32_t)f.v;
            memcpy(&score, &u, sizeof score);
        } else if (f.num == 3) {
            if ((st = expect_wire(&b, &f, 0, "SentencePiece.type", err)) != KG_OK)
                return st;
            if (f.v < KG_SPM_NORMAL || f.v > KG_SPM_BYTE)
                return kg_error_set(err, KG_ERR_FORMAT, "%s: piece %lld has unknown type %llu",
                                    what, (long long)m->n_pieces, (unsigned long long)f.v);
            type = (int)f.v;
        }
    }
    /* sentencepiece rejects empty pieces ("piece must not be empty"). */
    if (!have_piece || slen == 0)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: piece %lld is empty", what,
                            (long long)m->n_pieces);
    if (slen > UINT32_MAX / 2)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: piece %lld is too long", what,
                            (long long)m->n_pieces);
    if (add_piece(m, cap_pieces, cap_strings, s, slen, score, type) != KG_OK)
        return kg_error_set(err, KG_ERR_NOMEM, "%s: out of memory for pieces", what);
    return KG_OK;
}

static kg_status parse_trainer(kg_spm_model *m, const uint8_t *data, size_t len, const char *what,
                               kg_error *err)
{
    pb b = {data, data + len, what};
    pb_field f;
    kg_status st;

    for (;;) {
        if ((st = pb_next(&b, &f, err)) != KG_OK)
            return st;
        if (f.num == 0)
            return KG_OK;
        if (f.wire != 0)
            continue;
        if (f.num == 3)
            m->model_type = (int)f.v;
        else if (f.num == 24)
            m->treat_whitespace_as_suffix = f.v != 0;
        else if (f.num == 35)
            m->byte_fallback = f.v != 0;
    }
}

/* Splits the precompiled charsmap as Normalizer::DecodePrecompiledCharsMap does. */
static kg_status set_charsmap(kg_spm_model *m, const uint8_t *blob, size_t len, const char *what,
                              kg_error *err)
{
    free(m->charsmap_units);
    free(m->charsmap_strings);
    m->charsmap_units = NULL;
    m->charsmap_strings = NULL;
    m->n_units = 0;
    m->charsmap_strings_len = 0;
    if (len == 0)
        return KG_OK;
    if (len <= 4)
        return kg_error_set(err, KG_ERR_FORMAT, "%s: precompiled_charsmap of %zu bytes is broken",
                            what, len);
    uint32_t trie_size = (uint32_t)blob[0] | (uint32_t)blob[1] << 8 | (uint32_t)blob[2] << 16 |
                         (uint32_t)blob[3] << 24;
    /* A darts-clone array is whole 256-unit blocks, so every child probe
     * (node ^ offset ^ label) of a well-formed trie stays inside it. */
    if ((size_t)trie_size > len - 4 || trie_size == 0 || trie_size % (4 * 256) != 0)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: precompiled_charsmap trie size %u does not fit its %zu-byte blob "
                            "(or is not whole 256-unit blocks)",
                            what, trie_size, len);
    m->n_units = trie_size / 4;
    m->charsmap_strings_len = len - 4 - trie_size;
    m->charsmap_units = malloc(m->n_units * sizeof *m->charsmap_units);
    m->charsmap_strings = malloc(m->charsmap_strings_len + 1);
    if (!m->charsmap_units || !m->charsmap_strings)
        return kg_error_set(err, KG_ERR_NOMEM, "%s: out of memory for the charsmap", what);
    for (size_t i = 0; i < m->n_units; i++) {
        const uint8_t *u = blob + 4 + 4 * i;
        m->charsmap_units[i] =
            (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
    }
    memcpy(m->charsmap_strings, blob + 4 + trie_size, m->charsmap_strings_len);
    m->charsmap_strings[m->charsmap_strings_len] = '\0';
    return KG_OK;
}

static kg_status parse_normalizer(kg_spm_model *m, const uint8_t *data, size_t len,
                                  const char *what, kg_error *err)
{
    pb b = {data, data + len, what};
    pb_field f;
    kg_status st;

    for (;;) {
        if ((st = pb_next(&b, &f, err)) != KG_OK)
            return st;
        if (f.num == 0)
            return KG_OK;
        if (f.num == 2) {
            if ((st = expect_wire(&b, &f, 2, "NormalizerSpec.precompiled_charsmap", err)) != KG_OK)
                return st;
            if ((st = set_charsmap(m, f.data, f.len, what, err)) != KG_OK)
                return st;
        } else if (f.wire == 0 && f.num == 3) {
            m->add_dummy_prefix = f.v != 0;
        } else if (f.wire == 0 && f.num == 4) {
            m->remove_extra_whitespaces = f.v != 0;
        } else if (f.wire == 0 && f.num == 5) {
            m->escape_whitespaces = f.v != 0;
        }
    }
}

kg_status kg_spm_parse(kg_spm_model *m, const void *buf, size_t len, const char *what,
                       kg_error *err)
{
    pb b = {buf, (const uint8_t *)buf + len, what};
    pb_field f;
    size_t cap_pieces = 0, cap_strings = 0;
    int have_trainer = 0, have_normalizer = 0;
    kg_status st = KG_OK;

    memset(m, 0, sizeof *m);
    m->model_type = KG_SPM_MODEL_UNIGRAM;
    m->add_dummy_prefix = 1;
    m->remove_extra_whitespaces = 1;
    m->escape_whitespaces = 1;
    if (!buf && len)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "%s: NULL buffer", what);

    for (;;) {
        if ((st = pb_next(&b, &f, err)) != KG_OK)
            goto fail;
        if (f.num == 0)
            break;
        if (f.num == 1) {
            if ((st = expect_wire(&b, &f, 2, "ModelProto.pieces", err)) != KG_OK)
                goto fail;
            st = parse_piece(m, &cap_pieces, &cap_strings, f.data, f.len, what, err);
        } else if (f.num == 2) {
            if ((st = expect_wire(&b, &f, 2, "ModelProto.trainer_spec", err)) != KG_OK)
                goto fail;
            st = parse_trainer(m, f.data, f.len, what, err);
            have_trainer = 1;
        } else if (f.num == 3) {
            if ((st = expect_wire(&b, &f, 2, "ModelProto.normalizer_spec", err)) != KG_OK)
                goto fail;
            st = parse_normalizer(m, f.data, f.len, what, err);
            have_normalizer = 1;
        }
        if (st != KG_OK)
            goto fail;
    }
    /* sentencepiece itself accepts a model without the specs, but every
     * trained model has both, and requiring them turns a file cut at a
     * field boundary (which protobuf cannot tell from a complete one) into
     * an error. */
    if (m->n_pieces == 0 || !have_trainer || !have_normalizer) {
        st = kg_error_set(err, KG_ERR_FORMAT,
                          "%s: %s missing (truncated file, or not a sentencepiece model?)", what,
                          m->n_pieces == 0 ? "pieces"
                          : !have_trainer  ? "trainer_spec"
                                           : "normalizer_spec");
        goto fail;
    }
    return KG_OK;

fail:
    kg_spm_free(m);
    return st;
}

void kg_spm_free(kg_spm_model *m)
{
    if (!m)
        return;
    free(m->pieces);
    free(m->strings);
    free(m->charsmap_units);
    free(m->charsmap_strings);
    memset(m, 0, sizeof *m);
}
