/* fuzz_tokenizer.c - libFuzzer target: the real Kosmos-G tokenizer
 * (sentencepiece.bpe.model + dict.txt) on arbitrary bytes. Encoding never
 * fails on text content (tokenizer.h), every id is a dictionary id, and the
 * two entry points agree piece for piece. */
#include "fuzz_common.h"
#include "tokenizer.h"

static kg_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    size_t spm_len, dict_len;
    void *spm = fuzz_read_golden("kosmosg/sentencepiece.bpe.model", &spm_len);
    void *dict = fuzz_read_golden("kosmosg/dict.txt", &dict_len);
    kg_error err = {0};
    (void)argc;
    (void)argv;
    if (kg_tokenizer_new(&tok, spm, spm_len, dict, dict_len, &err) != KG_OK) {
        fprintf(stderr, "fuzz setup: tokenizer: %s\n", err.msg);
        exit(2);
    }
    free(spm);
    free(dict);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kg_ids ids = {0}, ids2 = {0}, spm_ids = {0};
    kg_error err = {0};
    int64_t vocab = kg_tokenizer_vocab_size(tok);
    /* an exact-size copy, so a read past the text is an ASan report */
    char *text = malloc(size ? size : 1);

    FUZZ_REQUIRE(text != NULL);
    memcpy(text, data, size);
    FUZZ_REQUIRE(kg_tokenizer_encode(tok, text, size, &ids, &err) == KG_OK);
    FUZZ_REQUIRE(kg_tokenizer_encode_spm(tok, text, size, &ids2, &spm_ids, &err) == KG_OK);
    FUZZ_REQUIRE(ids.n == ids2.n && spm_ids.n == ids.n);
    for (size_t i = 0; i < ids.n; i++) {
        FUZZ_REQUIRE(ids.v[i] == ids2.v[i]);
        FUZZ_REQUIRE(ids.v[i] >= 0 && ids.v[i] < vocab);
        /* a piece the model does not know can only map to <unk> */
        FUZZ_REQUIRE(spm_ids.v[i] >= 0);
        FUZZ_REQUIRE(spm_ids.v[i] != 0 || ids.v[i] == KG_TOK_UNK);
    }
    /* printable ASCII always gives a token; only spaces, controls (DEL included, which
     * nmt_nfkc removes) and non-ASCII that normalises away can give none */
    if (ids.n == 0)
        for (size_t i = 0; i < size; i++)
            FUZZ_REQUIRE(data[i] <= 0x20 || data[i] >= 0x7f);
    kg_ids_free(&ids);
    kg_ids_free(&ids2);
    kg_ids_free(&spm_ids);
    free(text);
    return 0;
}
