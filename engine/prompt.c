/* prompt.c - Kosmos-G prompt layout (AppModel.kosmosg_preprocess). */
#include "prompt.h"

#include <stdlib.h>
#include <string.h>

static const char PLACEHOLDER[] = "<i>";
#define PLACEHOLDER_LEN (sizeof PLACEHOLDER - 1)

static const char *find_placeholder(const char *s, const char *end)
{
    return memmem(s, (size_t)(end - s), PLACEHOLDER, PLACEHOLDER_LEN);
}

/* str.count('<i>'): non-overlapping occurrences. */
static int64_t count_placeholders(const char *s, const char *end)
{
    int64_t n = 0;
    for (const char *p = find_placeholder(s, end); p;
         p = find_placeholder(p + PLACEHOLDER_LEN, end))
        n++;
    return n;
}

/* Moves ids into seq; the mask is 1 at the positions listed in slots. */
static kg_status finish(kg_prompt_seq *seq, kg_ids *ids, const kg_ids *slots, kg_error *err)
{
    seq->img_mask = calloc(ids->n ? ids->n : 1, 1);
    if (!seq->img_mask)
        return kg_error_set(err, KG_ERR_NOMEM, "prompt: out of memory for %zu tokens", ids->n);
    for (size_t i = 0; slots && i < slots->n; i++)
        seq->img_mask[slots->v[i]] = 1;
    seq->ids = ids->v;
    seq->n = ids->n;
    memset(ids, 0, sizeof *ids);
    return KG_OK;
}

kg_status kg_prompt_encode(const kg_tokenizer *tok, const char *prompt, int64_t n_images,
                           int64_t image_tokens, kg_prompt_seq *seq, kg_error *err)
{
    return kg_prompt_encode_n(tok, prompt, prompt ? strlen(prompt) : 0, n_images, image_tokens, seq,
                              err);
}

kg_status kg_prompt_encode_n(const kg_tokenizer *tok, const char *prompt, size_t len,
                             int64_t n_images, int64_t image_tokens, kg_prompt_seq *seq,
                             kg_error *err)
{
    const char *end;
    kg_ids ids = {0}, slots = {0};
    kg_status st;
    int64_t found;
    const char *p;

    if (!seq)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_prompt_encode: NULL seq");
    memset(seq, 0, sizeof *seq);
    if (!tok || (!prompt && len))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_prompt_encode: NULL argument");
    if (!prompt)
        prompt = "";
    if (image_tokens < 1 || image_tokens > (1 << 20))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_prompt_encode: image_tokens %lld",
                            (long long)image_tokens);
    end = prompt + len;
    found = count_placeholders(prompt, end);
    if (found != n_images)
        return kg_error_set(err, KG_ERR_PROMPT,
                            "the prompt has %lld \"<i>\" placeholder%s but %lld image%s given",
                            (long long)found, found == 1 ? "" : "s", (long long)n_images,
                            n_images == 1 ? " was" : "s were");
    const int32_t boi = kg_tokenizer_symbol_id(tok, "<image>");
    const int32_t eoi = kg_tokenizer_symbol_id(tok, "</image>");
    if (boi == KG_TOK_UNK || eoi == KG_TOK_UNK)
        return kg_error_set(err, KG_ERR_FORMAT, "dictionary has no <image> / </image> symbol");

    st = kg_ids_push(&ids, KG_TOK_BOS, err);
    p = prompt;
    for (int64_t k = 0; st == KG_OK && k < n_images; k++) {
        const char *next = find_placeholder(p, end);
        st = kg_tokenizer_encode(tok, p, (size_t)(next - p), &ids, err);
        /* <image> itself, then the slots (also <image> ids, overwritten by the
         * connector), then </image>. */
        for (int64_t j = 0; st == KG_OK && j <= image_tokens; j++) {
            if (j > 0)
                st = kg_ids_push(&slots, (int32_t)ids.n, err);
            if (st == KG_OK)
                st = kg_ids_push(&ids, boi, err);
        }
        if (st == KG_OK)
            st = kg_ids_push(&ids, eoi, err);
        p = next + PLACEHOLDER_LEN;
    }
    if (st == KG_OK)
        st = kg_tokenizer_encode(tok, p, (size_t)(end - p), &ids, err);
    if (st == KG_OK && ids.n > INT32_MAX)
        st = kg_error_set(err, KG_ERR_PROMPT, "prompt: %zu tokens", ids.n);
    if (st == KG_OK)
        st = finish(seq, &ids, &slots, err);
    if (st == KG_OK)
        seq->n_images = n_images;
    kg_ids_free(&ids);
    kg_ids_free(&slots);
    if (st != KG_OK)
        kg_prompt_seq_free(seq);
    return st;
}

kg_status kg_prompt_encode_negative(const kg_tokenizer *tok, const char *negative,
                                    kg_prompt_seq *seq, kg_error *err)
{
    if (!negative)
        negative = "";
    return kg_prompt_encode_negative_n(tok, negative, strlen(negative), seq, err);
}

kg_status kg_prompt_encode_negative_n(const kg_tokenizer *tok, const char *negative, size_t len,
                                      kg_prompt_seq *seq, kg_error *err)
{
    kg_ids ids = {0};
    kg_status st;

    if (!seq)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_prompt_encode_negative: NULL seq");
    memset(seq, 0, sizeof *seq);
    if (!tok || (!negative && len))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_prompt_encode_negative: NULL argument");
    st = kg_ids_push(&ids, KG_TOK_BOS, err);
    if (st == KG_OK)
        st = kg_tokenizer_encode(tok, negative, len, &ids, err);
    if (st == KG_OK)
        st = finish(seq, &ids, NULL, err);
    kg_ids_free(&ids);
    if (st != KG_OK)
        kg_prompt_seq_free(seq);
    return st;
}

void kg_prompt_seq_free(kg_prompt_seq *seq)
{
    if (!seq)
        return;
    free(seq->ids);
    free(seq->img_mask);
    memset(seq, 0, sizeof *seq);
}
