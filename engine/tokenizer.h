/* tokenizer.h - SentencePiece UNIGRAM encoder + fairseq dictionary, in C.
 *
 * Reproduces what Kosmos-G's text_transform does (app_model.py:65-82):
 * sentencepiece 0.1.97 `encode(text, out_type=str)` on the official
 * sentencepiece.bpe.model, then fairseq `Dictionary.index(piece)` for each
 * piece. Steps, each as sentencepiece does it:
 *   1. normalise with the model's precompiled charsmap (nmt_nfkc: longest
 *      match in a darts-clone trie, replacement strings from a blob), drop
 *      leading / collapse repeated / drop trailing spaces, add the dummy
 *      prefix, spaces -> U+2581;
 *   2. Viterbi over all pieces (float path scores, piece candidates summed
 *      and compared in double as sentencepiece does, earliest start wins a
 *      tie); a character with no one-character piece is an unknown node
 *      scored min_score - 10, and consecutive unknown pieces are merged into
 *      one;
 *   3. map each piece string through the dictionary: a known piece gets
 *      spm id + 1, a merged unknown run is not in the dictionary and gets
 *      <unk> = 3.
 * Invalid UTF-8: every byte that does not start a valid UTF-8 sequence
 * (including overlong forms, surrogates, truncated sequences, > U+10FFFF)
 * becomes U+FFFD, consuming that one byte - exactly sentencepiece's
 * normaliser. U+FFFD is no piece, so such bytes end up in an <unk> (3).
 * Encoding never fails on text content: errors are KG_ERR_NOMEM, KG_ERR_PROMPT
 * for text over 2 GB, and KG_ERR_FORMAT when a corrupted charsmap points
 * outside its string blob. */
#ifndef KG_TOKENIZER_H
#define KG_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* fairseq Dictionary() specials (fairseq/data/dictionary.py). */
enum { KG_TOK_BOS = 0, KG_TOK_PAD = 1, KG_TOK_EOS = 2, KG_TOK_UNK = 3 };

typedef struct kg_tokenizer kg_tokenizer;

/* A growable list of token ids. Zero-initialise; kg_ids_free releases it. */
typedef struct kg_ids {
    int32_t *v;
    size_t n, cap;
} kg_ids;

kg_status kg_ids_push(kg_ids *ids, int32_t id, kg_error *err);
void kg_ids_free(kg_ids *ids);

/* spm: the bytes of sentencepiece.bpe.model; dict: the bytes of fairseq's
 * dict.txt. Both are copied. The dictionary gets fairseq's 4 specials, the
 * dict.txt lines, then "<mask>" and unilm's SPECIAL_SYMBOLS (</doc>,
 * <image>, </image>, </chunk>, </line>) - 64007 symbols for Kosmos-G.
 * Malformed files give KG_ERR_FORMAT; a non-unigram model, user-defined or
 * byte pieces give KG_ERR_UNSUPPORTED. */
kg_status kg_tokenizer_new(kg_tokenizer **out, const void *spm, size_t spm_len, const char *dict,
                           size_t dict_len, kg_error *err);
void kg_tokenizer_free(kg_tokenizer *tok);

/* Appends the fairseq ids of len bytes of text (no BOS/EOS) to ids. The
 * tokenizer is read-only here: concurrent calls are safe. */
kg_status kg_tokenizer_encode(const kg_tokenizer *tok, const char *text, size_t len, kg_ids *ids,
                              kg_error *err);
/* Same, also appending the sentencepiece id of every piece to spm_ids
 * (0 = unknown), aligned with ids. */
kg_status kg_tokenizer_encode_spm(const kg_tokenizer *tok, const char *text, size_t len,
                                  kg_ids *ids, kg_ids *spm_ids, kg_error *err);

/* fairseq Dictionary.index(symbol): its id, or KG_TOK_UNK when absent. */
int32_t kg_tokenizer_symbol_id(const kg_tokenizer *tok, const char *symbol);
/* Number of dictionary symbols (the MLLM's embedding rows): 64007. */
int64_t kg_tokenizer_vocab_size(const kg_tokenizer *tok);

#endif
