/* fuzz_spm.c - libFuzzer target: a corrupted SentencePiece model (the
 * tokenizer.sentencepiece bytes of a model file) with the real dict.txt.
 * The protobuf reader must refuse it with a message or give a model whose
 * every offset stays inside its buffers; a tokenizer built from it must
 * then encode anything - including text that walks the fuzzed
 * precompiled charsmap - without reading out of bounds (a charsmap entry
 * that points outside the model is refused when reached). */
#include "fuzz_common.h"
#include "spm_model.h"
#include "tokenizer.h"

static char *dict;
static size_t dict_len;

static const char *const texts[] = {
    "a photo of <i> wearing a hat",
    "  leading,   repeated   and trailing spaces  ",
    "\xef\xbc\xa6\xef\xbd\x95\xef\xbd\x8c\xef\xbd\x8c width \xef\xac\x81 ligature \xe2\x91\xa0",
    "\xe3\x81\x8b\xe3\x82\x99 \xea\xb0\x80 \xd8\xa7\xd9\x84 \xef\xb7\xba",
    "invalid \xff\xfe \xc0\x80 \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82",
    "\t\n\r\x01\x7f",
    "",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dict = fuzz_read_golden("kosmosg/dict.txt", &dict_len);
    return 0;
}

static void check_model(const kg_spm_model *m)
{
    FUZZ_REQUIRE(m->n_pieces >= 0);
    FUZZ_REQUIRE(m->n_pieces == 0 || m->pieces != NULL);
    for (int64_t i = 0; i < m->n_pieces; i++) {
        const kg_spm_piece *p = &m->pieces[i];
        FUZZ_REQUIRE(p->offset <= m->strings_len && p->len < m->strings_len - p->offset + 1);
        FUZZ_REQUIRE(m->strings[p->offset + p->len] == '\0');
    }
    FUZZ_REQUIRE(m->n_units == 0 || m->charsmap_units != NULL);
    if (m->charsmap_strings)
        FUZZ_REQUIRE(m->charsmap_strings[m->charsmap_strings_len] == '\0');
}

static void encode(const kg_tokenizer *tok, const char *text, size_t len)
{
    kg_ids ids = {0};
    kg_error err = {0};
    int64_t vocab = kg_tokenizer_vocab_size(tok);
    kg_status s = kg_tokenizer_encode(tok, text, len, &ids, &err);
    /* a charsmap entry is only followed when text reaches it, so a corrupted
     * one may pass kg_tokenizer_new and be refused here, named */
    if (s != KG_OK)
        FUZZ_REFUSED(s, err);
    FUZZ_REQUIRE(s == KG_OK || s == KG_ERR_NOMEM || s == KG_ERR_FORMAT);
    for (size_t i = 0; i < ids.n; i++)
        FUZZ_REQUIRE(ids.v[i] >= 0 && ids.v[i] < vocab);
    kg_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kg_spm_model m;
    kg_tokenizer *tok = NULL;
    kg_error err = {0};
    kg_status s;
    /* exact-size copy: the reader must stay inside it */
    uint8_t *buf = malloc(size ? size : 1);

    FUZZ_REQUIRE(buf != NULL);
    memcpy(buf, data, size);
    memset(&m, 0, sizeof m);
    s = kg_spm_parse(&m, buf, size, "fuzz", &err);
    if (s == KG_OK)
        check_model(&m);
    else
        FUZZ_REFUSED(s, err);
    kg_spm_free(&m);

    err = (kg_error){0};
    s = kg_tokenizer_new(&tok, buf, size, dict, dict_len, &err);
    if (s == KG_OK) {
        size_t tail = size < 64 ? size : 64;
        FUZZ_REQUIRE(tok != NULL);
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
            encode(tok, texts[i], strlen(texts[i]));
        encode(tok, (const char *)buf + size - tail, tail);
    } else {
        FUZZ_REFUSED(s, err);
        FUZZ_REQUIRE(tok == NULL);
    }
    kg_tokenizer_free(tok);
    free(buf);
    return 0;
}
