/* fuzz_prompt.c - libFuzzer target: the Kosmos-G prompt layout with "<i>"
 * placeholders on the real tokenizer. Input: byte 0 = n_images (signed, so
 * negative counts are tried), byte 1 = image tokens (255: 0, refused), the
 * rest = the prompt, NUL bytes included. The layout is checked against the
 * rules of prompt.h: a count mismatch is refused, otherwise <s> first, one
 * <image> L x <image> </image> block per placeholder with exactly L masked
 * slots each. */
#include "fuzz_common.h"
#include "prompt.h"
#include "tokenizer.h"

static kg_tokenizer *tok;
static int32_t boi, eoi;

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
    boi = kg_tokenizer_symbol_id(tok, "<image>");
    eoi = kg_tokenizer_symbol_id(tok, "</image>");
    return 0;
}

/* str.count("<i>") over len bytes, written independently of prompt.c. */
static int64_t count_i(const char *s, size_t len)
{
    int64_t n = 0;
    for (size_t i = 0; i + 3 <= len;) {
        if (s[i] == '<' && s[i + 1] == 'i' && s[i + 2] == '>') {
            n++;
            i += 3;
        } else {
            i++;
        }
    }
    return n;
}

static void check_seq(const kg_prompt_seq *q, int64_t n_images, int64_t L)
{
    int64_t vocab = kg_tokenizer_vocab_size(tok);
    int64_t masked = 0, blocks = 0;
    FUZZ_REQUIRE(q->n >= 1 && q->ids[0] == KG_TOK_BOS && q->n_images == n_images);
    FUZZ_REQUIRE(q->img_mask[0] == 0);
    for (size_t i = 0; i < q->n; i++) {
        FUZZ_REQUIRE(q->ids[i] >= 0 && q->ids[i] < vocab);
        FUZZ_REQUIRE(q->img_mask[i] <= 1);
        if (q->img_mask[i]) {
            masked++;
            FUZZ_REQUIRE(q->ids[i] == boi);
            /* a run of masked slots opens right after a real <image> */
            if (!q->img_mask[i - 1]) {
                FUZZ_REQUIRE(q->ids[i - 1] == boi);
                FUZZ_REQUIRE(i + (size_t)L < q->n && q->ids[i + (size_t)L] == eoi);
                blocks++;
            }
        }
    }
    FUZZ_REQUIRE(masked == n_images * L && blocks == n_images);
}

static void check_negative(const char *text, size_t len)
{
    kg_prompt_seq q;
    kg_error err = {0};
    FUZZ_REQUIRE(kg_prompt_encode_negative_n(tok, text, len, &q, &err) == KG_OK);
    FUZZ_REQUIRE(q.n >= 1 && q.ids[0] == KG_TOK_BOS);
    for (size_t i = 0; i < q.n; i++)
        FUZZ_REQUIRE(q.img_mask[i] == 0);
    kg_prompt_seq_free(&q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kg_prompt_seq q;
    kg_error err = {0};
    kg_status s;
    int64_t n_images, L, found;
    size_t len;
    char *text;

    if (size < 2)
        return 0;
    n_images = (int8_t)data[0];
    L = data[1] == 255 ? 0 : 1 + data[1] % 64;
    len = size - 2;
    text = malloc(len + 1);
    FUZZ_REQUIRE(text != NULL);
    memcpy(text, data + 2, len);
    text[len] = '\0';

    /* length-delimited: NUL bytes are text */
    found = count_i(text, len);
    s = kg_prompt_encode_n(tok, text, len, n_images, L, &q, &err);
    if (L >= 1 && found == n_images) {
        FUZZ_REQUIRE(s == KG_OK);
        check_seq(&q, n_images, L);
    } else {
        FUZZ_REFUSED(s, err);
        FUZZ_REQUIRE(q.ids == NULL && q.img_mask == NULL && q.n == 0);
        FUZZ_REQUIRE(L < 1 || s == KG_ERR_PROMPT);
    }
    kg_prompt_seq_free(&q);

    /* NUL-terminated: the prompt ends at the first NUL */
    err = (kg_error){0};
    found = count_i(text, strlen(text));
    s = kg_prompt_encode(tok, text, found, L ? L : 1, &q, &err);
    FUZZ_REQUIRE(s == KG_OK);
    check_seq(&q, found, L ? L : 1);
    kg_prompt_seq_free(&q);

    check_negative(text, len);
    free(text);
    return 0;
}
