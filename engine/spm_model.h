/* spm_model.h - reader for a SentencePiece model file (sentencepiece_model.proto).
 *
 * Only the fields an encoder needs are kept: the pieces (string, score,
 * type), TrainerSpec.model_type / treat_whitespace_as_suffix / byte_fallback
 * and the NormalizerSpec (precompiled charsmap, add_dummy_prefix,
 * remove_extra_whitespaces, escape_whitespaces). Absent fields take the
 * proto2 defaults of sentencepiece_model.proto. Every length and varint is
 * checked against the buffer: a truncated or corrupted file gives
 * KG_ERR_FORMAT, nothing is read out of bounds. The result owns copies of
 * everything, so the input buffer may go away afterwards. */
#ifndef KG_SPM_MODEL_H
#define KG_SPM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* ModelProto.SentencePiece.Type */
typedef enum kg_spm_type {
    KG_SPM_NORMAL = 1,
    KG_SPM_UNKNOWN = 2,
    KG_SPM_CONTROL = 3,
    KG_SPM_USER_DEFINED = 4,
    KG_SPM_BYTE = 6,
    KG_SPM_UNUSED = 5,
} kg_spm_type;

/* TrainerSpec.ModelType */
enum {
    KG_SPM_MODEL_UNIGRAM = 1,
    KG_SPM_MODEL_BPE = 2,
    KG_SPM_MODEL_WORD = 3,
    KG_SPM_MODEL_CHAR = 4
};

typedef struct kg_spm_piece {
    size_t offset; /* into kg_spm_model.strings */
    uint32_t len;  /* bytes */
    float score;
    int type; /* kg_spm_type */
} kg_spm_piece;

typedef struct kg_spm_model {
    kg_spm_piece *pieces; /* spm id order */
    int64_t n_pieces;
    char *strings; /* piece bytes, each followed by a NUL */
    size_t strings_len;

    int model_type;                 /* TrainerSpec field 3, default UNIGRAM */
    int treat_whitespace_as_suffix; /* TrainerSpec field 24, default false */
    int byte_fallback;              /* TrainerSpec field 35, default false */

    int add_dummy_prefix;         /* NormalizerSpec field 3, default true */
    int remove_extra_whitespaces; /* NormalizerSpec field 4, default true */
    int escape_whitespaces;       /* NormalizerSpec field 5, default true */
    /* NormalizerSpec field 2 = <u32 LE trie bytes><darts-clone units><NUL-separated
     * replacement strings>, split here. n_units == 0: no normalisation rules. */
    uint32_t *charsmap_units;
    size_t n_units;
    char *charsmap_strings; /* always NUL-terminated (one NUL added past the blob) */
    size_t charsmap_strings_len;
} kg_spm_model;

/* Parses len bytes of a .model file. `what` names the file in errors. */
kg_status kg_spm_parse(kg_spm_model *m, const void *buf, size_t len, const char *what,
                       kg_error *err);
void kg_spm_free(kg_spm_model *m);

#endif
