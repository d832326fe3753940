/* prompt.h - the Kosmos-G token sequence of a multimodal prompt.
 *
 * As AppModel.kosmosg_preprocess builds it (app_model.py:164-197):
 *   [<s>] + text_0 + [<image>] * (L + 1) + [</image>] + text_1 + ... + text_N
 * where text_k is the k-th snippet between "<i>" placeholders, each
 * tokenized on its own (so each gets its own dummy-prefix U+2581; empty or
 * all-space snippets give no tokens), L = image_tokens (the connector's
 * latent_query_num, 64 in Kosmos-G), and no </s>. img_mask is 1 on the L
 * slots after each <image> (where the connector's latents are spliced in),
 * 0 elsewhere - the leading <image> and the </image> stay real tokens.
 * The negative prompt is [<s>] + text with "<i>" kept as plain text; an
 * empty one is just [<s>]. */
#ifndef KG_PROMPT_H
#define KG_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tokenizer.h"

typedef struct kg_prompt_seq {
    int32_t *ids;      /* [n] fairseq ids */
    uint8_t *img_mask; /* [n] 1 = a connector latent goes here */
    size_t n;
    int64_t n_images; /* "<i>" placeholders = image blocks */
} kg_prompt_seq;

/* prompt: NUL-terminated UTF-8 (invalid bytes: see tokenizer.h). Fails with
 * KG_ERR_PROMPT naming both counts when the number of "<i>" differs from
 * n_images (the official code asserts). seq is overwritten; release it
 * with kg_prompt_seq_free, also after an error. */
kg_status kg_prompt_encode(const kg_tokenizer *tok, const char *prompt, int64_t n_images,
                           int64_t image_tokens, kg_prompt_seq *seq, kg_error *err);
/* Same for len bytes (the text may hold NUL bytes). */
kg_status kg_prompt_encode_n(const kg_tokenizer *tok, const char *prompt, size_t len,
                             int64_t n_images, int64_t image_tokens, kg_prompt_seq *seq,
                             kg_error *err);

/* [<s>] + tokens of negative (NULL = ""); img_mask all 0. */
kg_status kg_prompt_encode_negative(const kg_tokenizer *tok, const char *negative,
                                    kg_prompt_seq *seq, kg_error *err);
kg_status kg_prompt_encode_negative_n(const kg_tokenizer *tok, const char *negative, size_t len,
                                      kg_prompt_seq *seq, kg_error *err);

void kg_prompt_seq_free(kg_prompt_seq *seq);

#endif
