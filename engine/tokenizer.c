/* tokenizer.c - sentencepiece unigram encoding + fairseq dictionary lookup.
 *
 * Behaviour follows sentencepiece 0.1.97 (normalizer.cc Normalize /
 * NormalizePrefix, unigram_model.cc EncodeOptimized,
 * sentencepiece_processor.cc merging of unknown runs) and fairseq
 * Dictionary.add_from_file / index. The piece lookup is a hash of all piece
 * strings probed with an incrementally updated FNV-1a hash, so the Viterbi
 * costs O(n * max_piece_len) probes. */
#include "tokenizer.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "spm_model.h"

/* sentencepiece unigram_model.cc: kUnkPenalty. */
#define UNK_PENALTY 10.0f
/* normalizer.h kMaxTrieResultsSize: only the first 32 prefix matches count. */
#define MAX_TRIE_RESULTS 32

static const char SPACE_SYMBOL[] = "\xe2\x96\x81";     /* U+2581 */
static const char REPLACEMENT_CHAR[] = "\xef\xbf\xbd"; /* U+FFFD */

/* ---- string -> int32 hash map (open addressing, keys not owned) ----
 * A slot keeps the upper hash bits next to the entry index, so a probe for
 * an absent key rarely touches the key arrays. */

typedef struct strslot {
    uint32_t tag; /* low hash bits */
    int32_t e;    /* entry index, -1 = empty */
} strslot;

typedef struct strmap {
    const char **key;
    uint32_t *klen;
    int32_t *val;
    size_t n, cap;
    strslot *slot;
    size_t mask;
    int shift; /* 64 - log2(slots) */
} strmap;

#define FNV_BASIS 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = FNV_BASIS;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * FNV_PRIME;
    return h;
}

static void strmap_free(strmap *m)
{
    free(m->key);
    free(m->klen);
    free(m->val);
    free(m->slot);
    memset(m, 0, sizeof *m);
}

/* Slot holding key s or the empty slot where it would go. */
static size_t strmap_probe(const strmap *m, const char *s, size_t n, uint64_t h)
{
    /* FNV's low bits barely mix the last bytes (keys that differ there
     * cluster), so the slot comes from the high bits of a Fibonacci hash. */
    const uint32_t tag = (uint32_t)h;
    size_t i = (size_t)((h * 0x9e3779b97f4a7c15ULL) >> m->shift);
    for (;;) {
        const strslot *sl = &m->slot[i];
        if (sl->e < 0 ||
            (sl->tag == tag && m->klen[sl->e] == n && memcmp(m->key[sl->e], s, n) == 0))
            return i;
        i = (i + 1) & m->mask;
    }
}

/* Entry index of key s (h = fnv(s, n)), -1 when absent. */
static int32_t strmap_find(const strmap *m, const char *s, size_t n, uint64_t h)
{
    if (!m->slot)
        return -1;
    return m->slot[strmap_probe(m, s, n, h)].e;
}

/* Keeps the load factor at most 1/2; returns -1 when out of memory. */
static int strmap_reserve(strmap *m, size_t want)
{
    if (want > INT32_MAX / 2)
        return -1;
    if (want > m->cap) {
        size_t cap = m->cap ? m->cap : 64;
        while (cap < want)
            cap *= 2;
        const char **k = realloc(m->key, cap * sizeof *k);
        if (k)
            m->key = k;
        uint32_t *kl = realloc(m->klen, cap * sizeof *kl);
        if (kl)
            m->klen = kl;
        int32_t *v = realloc(m->val, cap * sizeof *v);
        if (v)
            m->val = v;
        if (!k || !kl || !v)
            return -1;
        m->cap = cap;
    }
    if (m->slot && 2 * want <= m->mask + 1)
        return 0;
    size_t slots = 64;
    while (slots < 2 * want)
        slots *= 2;
    strslot *sl = malloc(slots * sizeof *sl);
    if (!sl)
        return -1;
    free(m->slot);
    m->slot = sl;
    m->mask = slots - 1;
    m->shift = 64;
    for (size_t k = slots; k > 1; k >>= 1)
        m->shift--;
    for (size_t i = 0; i < slots; i++)
        sl[i].e = -1;
    for (size_t e = 0; e < m->n; e++) {
        uint64_t h = fnv(m->key[e], m->klen[e]);
        size_t i = strmap_probe(m, m->key[e], m->klen[e], h);
        sl[i].tag = (uint32_t)h;
        sl[i].e = (int32_t)e;
    }
    return 0;
}

/* Inserts key s (h = fnv(s, n)) with val, or sets the value of an
 * existing key when overwrite. Returns the entry index, -1 when out of
 * memory. */
static int32_t strmap_put_h(strmap *m, const char *s, size_t n, uint64_t h, int32_t val,
                            int overwrite)
{
    if (strmap_reserve(m, m->n + 1))
        return -1;
    size_t i = strmap_probe(m, s, n, h);
    int32_t e = m->slot[i].e;
    if (e >= 0) {
        if (overwrite)
            m->val[e] = val;
        return e;
    }
    e = (int32_t)m->n++;
    m->key[e] = s;
    m->klen[e] = (uint32_t)n;
    m->val[e] = val;
    m->slot[i].tag = (uint32_t)h;
    m->slot[i].e = e;
    return e;
}

static int32_t strmap_put(strmap *m, const char *s, size_t n, int32_t val, int overwrite)
{
    return strmap_put_h(m, s, n, fnv(s, n), val, overwrite);
}

/* ---- tokenizer ---- */

struct kg_tokenizer {
    kg_spm_model spm;
    strmap pieces;        /* NORMAL and UNUSED pieces (sentencepiece's trie) -> spm id */
    size_t max_piece_len; /* bytes */
    float unk_score;      /* min NORMAL score - kUnkPenalty */
    int32_t unk_id;
    char *dict_buf; /* owned copy of dict.txt */
    strmap dict;    /* symbol -> fairseq id */
    int64_t n_symbols;
};

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static int buf_append(buf *b, const char *s, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

kg_status kg_ids_push(kg_ids *ids, int32_t id, kg_error *err)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = realloc(ids->v, cap * sizeof *v);
        if (!v)
            return kg_error_set(err, KG_ERR_NOMEM, "token ids: out of memory (%zu ids)", cap);
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return KG_OK;
}

void kg_ids_free(kg_ids *ids)
{
    if (!ids)
        return;
    free(ids->v);
    memset(ids, 0, sizeof *ids);
}

/* string_util::DecodeUTF8 validity: the rune must be a minimal encoding of
 * a scalar value (no surrogates, <= U+10FFFF). Returns the byte length of a
 * valid character at s, or 0. */
static size_t utf8_valid_len(const uint8_t *s, size_t n)
{
    uint32_t c;
    if (s[0] < 0x80)
        return 1;
    if (n >= 2 && (s[0] & 0xe0) == 0xc0) {
        c = (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
        return ((s[1] & 0xc0) == 0x80 && c >= 0x80) ? 2 : 0;
    }
    if (n >= 3 && (s[0] & 0xf0) == 0xe0) {
        c = (uint32_t)(s[0] & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
        return ((s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80 && c >= 0x800 &&
                (c < 0xd800 || c > 0xdfff))
                   ? 3
                   : 0;
    }
    if (n >= 4 && (s[0] & 0xf8) == 0xf0) {
        c = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 |
            (uint32_t)(s[2] & 0x3f) << 6 | (s[3] & 0x3f);
        return ((s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80 &&
                c >= 0x10000 && c <= 0x10ffff)
                   ? 4
                   : 0;
    }
    return 0;
}

/* string_util::OneCharLen: length from the lead byte alone. */
static size_t one_char_len(uint8_t c)
{
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[c >> 4];
}

/* Darts-clone commonPrefixSearch over the charsmap trie, keeping the
 * longest of the first MAX_TRIE_RESULTS matches. Returns its length (0 =
 * none) and its value (offset of the replacement string). Probes outside
 * the array, impossible in a well-formed trie, end the search. */
static size_t charsmap_longest(const kg_spm_model *m, const uint8_t *s, size_t n, uint32_t *value)
{
    const uint32_t *u = m->charsmap_units;
    size_t nu = m->n_units, best = 0, pos, found = 0;

#define DA_OFFSET(x) (((x) >> 10) << (((x) & (1u << 9)) >> 6))
#define DA_LABEL(x) ((x) & (0x80000000u | 0xffu))
#define DA_HAS_LEAF(x) (((x) >> 8) & 1u)
    pos = DA_OFFSET(u[0]);
    for (size_t i = 0; i < n; i++) {
        pos ^= s[i];
        if (pos >= nu)
            break;
        uint32_t unit = u[pos];
        if (DA_LABEL(unit) != s[i])
            break;
        pos ^= DA_OFFSET(unit);
        if (pos >= nu)
            break;
        if (DA_HAS_LEAF(unit)) {
            if (found < MAX_TRIE_RESULTS) {
                best = i + 1;
                *value = u[pos] & 0x7fffffffu;
            }
            found++;
        }
    }
#undef DA_OFFSET
#undef DA_LABEL
#undef DA_HAS_LEAF
    return best;
}

typedef struct prefix {
    const char *s; /* replacement */
    size_t n;      /* its length */
    size_t consumed;
} prefix;

/* Normalizer::NormalizePrefix. */
static kg_status normalize_prefix(const kg_tokenizer *tok, const uint8_t *in, size_t n, prefix *p,
                                  kg_error *err)
{
    const kg_spm_model *m = &tok->spm;
    uint32_t value = 0;
    size_t len = m->n_units ? charsmap_longest(m, in, n, &value) : 0;

    if (len) {
        if (value >= m->charsmap_strings_len)
            return kg_error_set(err, KG_ERR_FORMAT,
                                "sentencepiece model: charsmap entry points at %u, past the "
                                "%zu-byte string blob",
                                value, m->charsmap_strings_len);
        p->s = m->charsmap_strings + value;
        p->n = strlen(p->s);
        p->consumed = len;
        return KG_OK;
    }
    len = utf8_valid_len(in, n);
    if (len) {
        p->s = (const char *)in;
        p->n = len;
        p->consumed = len;
    } else {
        p->s = REPLACEMENT_CHAR;
        p->n = 3;
        p->consumed = 1;
    }
    return KG_OK;
}

static int ends_with(const buf *b, const char *s, size_t n)
{
    return b->n >= n && memcmp(b->p + b->n - n, s, n) == 0;
}

static int add_ws(const kg_spm_model *m, buf *out)
{
    return m->escape_whitespaces ? buf_append(out, SPACE_SYMBOL, 3) : buf_append(out, " ", 1);
}

/* Normalizer::Normalize. */
static kg_status normalize(const kg_tokenizer *tok, const char *text, size_t len, buf *out,
                           kg_error *err)
{
    const kg_spm_model *m = &tok->spm;
    const uint8_t *in = (const uint8_t *)text;
    prefix p;
    kg_status st;
    int is_prev_space;

    out->n = 0;
    if (m->remove_extra_whitespaces) {
        while (len) {
            if ((st = normalize_prefix(tok, in, len, &p, err)) != KG_OK)
                return st;
            if (!(p.n == 1 && p.s[0] == ' '))
                break;
            in += p.consumed;
            len -= p.consumed;
        }
    }
    if (len == 0)
        return KG_OK;
    if (!m->treat_whitespace_as_suffix && m->add_dummy_prefix && add_ws(m, out))
        goto nomem;

    is_prev_space = m->remove_extra_whitespaces;
    while (len) {
        if ((st = normalize_prefix(tok, in, len, &p, err)) != KG_OK)
            return st;
        const char *s = p.s;
        size_t n = p.n;
        while (is_prev_space && n && s[0] == ' ') {
            s++;
            n--;
        }
        if (n) {
            for (size_t i = 0; i < n; i++) {
                int bad = (m->escape_whitespaces && s[i] == ' ') ? buf_append(out, SPACE_SYMBOL, 3)
                                                                 : buf_append(out, s + i, 1);
                if (bad)
                    goto nomem;
            }
            is_prev_space = s[n - 1] == ' ';
        }
        in += p.consumed;
        len -= p.consumed;
        if (!m->remove_extra_whitespaces)
            is_prev_space = 0;
    }

    if (m->remove_extra_whitespaces) {
        const char *sp = m->escape_whitespaces ? SPACE_SYMBOL : " ";
        size_t spn = m->escape_whitespaces ? 3 : 1;
        while (ends_with(out, sp, spn))
            out->n -= spn;
    }
    if (m->treat_whitespace_as_suffix && m->add_dummy_prefix && add_ws(m, out))
        goto nomem;
    return KG_OK;

nomem:
    return kg_error_set(err, KG_ERR_NOMEM, "tokenizer: out of memory normalising %zu bytes", len);
}

typedef struct best_path {
    float score;   /* best total score of a path ending here */
    int32_t start; /* start of its last piece, -1 = not reached yet */
    int32_t id;    /* spm id of its last piece */
} best_path;

/* Model::EncodeOptimized + the unknown-run merge of
 * SentencePieceProcessor, then Dictionary.index per piece. */
static kg_status encode_normalized(const kg_tokenizer *tok, const char *s, size_t size, kg_ids *ids,
                                   kg_ids *spm_ids, kg_error *err)
{
    const kg_spm_model *m = &tok->spm;
    best_path *bp = NULL;
    int32_t *ends = NULL;
    size_t n_pieces = 0;
    kg_status st = KG_OK;

    if (size == 0)
        return KG_OK;
    if (size > INT32_MAX - 1)
        return kg_error_set(err, KG_ERR_PROMPT, "tokenizer: text of %zu bytes is too long", size);
    bp = malloc((size + 1) * sizeof *bp);
    ends = malloc((size + 1) * sizeof *ends);
    if (!bp || !ends) {
        st = kg_error_set(err, KG_ERR_NOMEM, "tokenizer: out of memory for %zu bytes", size);
        goto done;
    }
    for (size_t i = 0; i <= size; i++) {
        bp[i].score = 0.0f;
        bp[i].start = -1;
        bp[i].id = -1;
    }

    for (size_t start = 0; start < size;) {
        const float till_here = bp[start].score;
        size_t mblen = one_char_len((uint8_t)s[start]);
        size_t max_len = size - start;
        int has_single = 0;
        uint64_t h = FNV_BASIS;

        if (mblen > max_len)
            mblen = max_len;
        if (max_len > tok->max_piece_len)
            max_len = tok->max_piece_len;
        for (size_t len = 1; len <= max_len; len++) {
            h = (h ^ (uint8_t)s[start + len - 1]) * FNV_PRIME;
            int32_t e = strmap_find(&tok->pieces, s + start, len, h);
            if (e < 0)
                break; /* no piece starts with these bytes */
            int32_t id = tok->pieces.val[e];
            if (id < 0 || m->pieces[id].type == KG_SPM_UNUSED)
                continue;
            best_path *t = &bp[start + len];
            /* In sentencepiece the piece score is the result of a ternary
             * with a double branch (the user-defined bonus), so this sum and
             * its comparison are double; only the stored value is float.
             * Float arithmetic here breaks exact ties differently ("aaaaaaa"). */
            const double cand = (double)m->pieces[id].score + (double)till_here;
            if (t->start < 0 || cand > (double)t->score) {
                t->score = (float)cand;
                t->start = (int32_t)start;
                t->id = id;
            }
            if (len == mblen)
                has_single = 1;
        }
        if (!has_single) {
            best_path *t = &bp[start + mblen];
            /* float, unlike the piece candidates above: unk_score is a float. */
            const float cand = tok->unk_score + till_here;
            if (t->start < 0 || cand > t->score) {
                t->score = cand;
                t->start = (int32_t)start;
                t->id = tok->unk_id;
            }
        }
        start += mblen;
    }

    /* Backtrack; ends[] collects piece end offsets from the right. */
    for (size_t end = size; end > 0; end = (size_t)bp[end].start)
        ends[n_pieces++] = (int32_t)end;

    for (size_t k = n_pieces; k-- > 0;) {
        size_t end = (size_t)ends[k];
        size_t begin = (size_t)bp[end].start;
        int32_t id = bp[end].id;
        /* A run of unknown pieces is emitted as one piece (the decoder can
         * then copy it); its surface is no dictionary word, so it maps to
         * <unk> like every other unknown piece. */
        while (id == tok->unk_id && k > 0 && bp[ends[k - 1]].id == tok->unk_id)
            end = (size_t)ends[--k];
        int32_t e = strmap_find(&tok->dict, s + begin, end - begin, fnv(s + begin, end - begin));
        if ((st = kg_ids_push(ids, e < 0 ? KG_TOK_UNK : tok->dict.val[e], err)) != KG_OK)
            goto done;
        if (spm_ids && (st = kg_ids_push(spm_ids, id, err)) != KG_OK)
            goto done;
    }

done:
    free(bp);
    free(ends);
    return st;
}

kg_status kg_tokenizer_encode_spm(const kg_tokenizer *tok, const char *text, size_t len,
                                  kg_ids *ids, kg_ids *spm_ids, kg_error *err)
{
    buf norm = {0};
    kg_status st;

    if (!tok || !ids || (!text && len))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_tokenizer_encode: NULL argument");
    st = normalize(tok, text, len, &norm, err);
    if (st == KG_OK)
        st = encode_normalized(tok, norm.p, norm.n, ids, spm_ids, err);
    free(norm.p);
    return st;
}

kg_status kg_tokenizer_encode(const kg_tokenizer *tok, const char *text, size_t len, kg_ids *ids,
                              kg_error *err)
{
    return kg_tokenizer_encode_spm(tok, text, len, ids, NULL, err);
}

/* ---- loading ---- */

static kg_status build_pieces(kg_tokenizer *tok, kg_error *err)
{
    const kg_spm_model *m = &tok->spm;
    float min_score = FLT_MAX;
    int n_normal = 0;

    if (m->model_type != KG_SPM_MODEL_UNIGRAM)
        return kg_error_set(err, KG_ERR_UNSUPPORTED,
                            "sentencepiece model: model_type %d, only UNIGRAM (1) is supported",
                            m->model_type);
    if (m->byte_fallback)
        return kg_error_set(err, KG_ERR_UNSUPPORTED,
                            "sentencepiece model: byte_fallback is not supported");
    /* Pieces plus their distinct proper prefixes: 148k for Kosmos-G's 64k. */
    if (m->n_pieces > INT32_MAX / 16 || strmap_reserve(&tok->pieces, 3 * (size_t)m->n_pieces))
        return kg_error_set(err, KG_ERR_NOMEM, "sentencepiece model: out of memory for %lld pieces",
                            (long long)m->n_pieces);
    tok->unk_id = -1;
    for (int64_t i = 0; i < m->n_pieces; i++) {
        const kg_spm_piece *p = &m->pieces[i];
        const char *s = m->strings + p->offset;
        if (p->type == KG_SPM_USER_DEFINED || p->type == KG_SPM_BYTE)
            return kg_error_set(err, KG_ERR_UNSUPPORTED,
                                "sentencepiece model: piece %lld \"%s\" is a %s piece (not "
                                "supported)",
                                (long long)i, s, p->type == KG_SPM_BYTE ? "byte" : "user-defined");
        if (p->type == KG_SPM_UNKNOWN) {
            if (tok->unk_id >= 0)
                return kg_error_set(
                    err, KG_ERR_FORMAT,
                    "sentencepiece model: unk is defined twice (pieces %d and %lld)", tok->unk_id,
                    (long long)i);
            tok->unk_id = (int32_t)i;
        }
        if (p->type != KG_SPM_NORMAL && p->type != KG_SPM_UNUSED)
            continue;
        if (p->type == KG_SPM_NORMAL) {
            n_normal++;
            if (p->score < min_score)
                min_score = p->score;
        }
        if (strmap_find(&tok->pieces, s, p->len, fnv(s, p->len)) >= 0)
            return kg_error_set(err, KG_ERR_FORMAT,
                                "sentencepiece model: piece %lld \"%s\" is already defined",
                                (long long)i, s);
        if (strmap_put(&tok->pieces, s, p->len, (int32_t)i, 1) < 0)
            return kg_error_set(err, KG_ERR_NOMEM, "sentencepiece model: out of memory");
        if (p->len > tok->max_piece_len)
            tok->max_piece_len = p->len;
    }
    /* Every proper prefix of a piece maps to -1, so the Viterbi stops
     * extending a candidate as soon as no piece can match (as a trie walk). */
    for (int64_t i = 0; i < m->n_pieces; i++) {
        const kg_spm_piece *p = &m->pieces[i];
        if (p->type != KG_SPM_NORMAL && p->type != KG_SPM_UNUSED)
            continue;
        const char *ps = m->strings + p->offset;
        uint64_t h = FNV_BASIS;
        for (uint32_t len = 1; len < p->len; len++) {
            h = (h ^ (uint8_t)ps[len - 1]) * FNV_PRIME;
            if (strmap_put_h(&tok->pieces, ps, len, h, -1, 0) < 0)
                return kg_error_set(err, KG_ERR_NOMEM, "sentencepiece model: out of memory");
        }
    }
    if (tok->unk_id < 0)
        return kg_error_set(err, KG_ERR_FORMAT, "sentencepiece model: unk is not defined");
    if (n_normal == 0)
        return kg_error_set(err, KG_ERR_FORMAT, "sentencepiece model: no normal pieces");
    tok->unk_score = min_score - UNK_PENALTY;
    return KG_OK;
}

/* fairseq Dictionary.add_symbol: an existing symbol keeps its id unless
 * overwrite, which gives it a new one. */
static kg_status add_symbol(kg_tokenizer *tok, const char *s, size_t n, int overwrite,
                            kg_error *err)
{
    if (!overwrite && strmap_find(&tok->dict, s, n, fnv(s, n)) >= 0)
        return KG_OK;
    if (tok->n_symbols >= INT32_MAX / 4)
        return kg_error_set(err, KG_ERR_FORMAT, "dict.txt: too many symbols");
    if (strmap_put(&tok->dict, s, n, (int32_t)tok->n_symbols, 1) < 0)
        return kg_error_set(err, KG_ERR_NOMEM, "dict.txt: out of memory");
    tok->n_symbols++;
    return KG_OK;
}

static int is_py_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* Dictionary.add_from_file: each line is "<word> <count>[ #fairseq:overwrite]". */
static kg_status parse_dict_line(kg_tokenizer *tok, char *line, size_t n, size_t lineno,
                                 kg_error *err)
{
    static const char OVERWRITE[] = "#fairseq:overwrite";
    int overwrite = 0;
    char *sp;

    while (n && is_py_space(line[n - 1]))
        n--;
    sp = n ? memrchr(line, ' ', n) : NULL;
    if (sp && (size_t)(line + n - sp - 1) == sizeof OVERWRITE - 1 &&
        memcmp(sp + 1, OVERWRITE, sizeof OVERWRITE - 1) == 0) {
        overwrite = 1;
        n = (size_t)(sp - line);
        sp = memrchr(line, ' ', n);
    }
    if (!sp)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "dict.txt line %zu: expected '<token> <cnt> [flags]'", lineno);
    const char *c = sp + 1, *end = line + n;
    if (c < end && (*c == '+' || *c == '-'))
        c++;
    if (c == end)
        return kg_error_set(err, KG_ERR_FORMAT, "dict.txt line %zu: missing count", lineno);
    for (; c < end; c++)
        if (*c < '0' || *c > '9')
            return kg_error_set(err, KG_ERR_FORMAT, "dict.txt line %zu: count is not an integer",
                                lineno);
    size_t wn = (size_t)(sp - line);
    if (!overwrite && strmap_find(&tok->dict, line, wn, fnv(line, wn)) >= 0)
        return kg_error_set(err, KG_ERR_FORMAT, "dict.txt line %zu: duplicate word \"%.*s\"",
                            lineno, (int)(wn > INT32_MAX ? INT32_MAX : wn), line);
    return add_symbol(tok, line, wn, overwrite, err);
}

/* An empty dict.txt, or one written for another SentencePiece model, maps most words to <unk>
 * and the prompt is silently ignored; fairseq's dict for a SentencePiece model lists (nearly)
 * every normal piece, so fewer than half of them is refused. */
static kg_status check_coverage(const kg_tokenizer *tok, kg_error *err)
{
    const kg_spm_model *m = &tok->spm;
    int64_t normal = 0, found = 0;
    for (int64_t i = 0; i < m->n_pieces; i++) {
        const kg_spm_piece *p = &m->pieces[i];
        const char *ps = m->strings + p->offset;
        if (p->type != KG_SPM_NORMAL)
            continue;
        normal++;
        found += strmap_find(&tok->dict, ps, p->len, fnv(ps, p->len)) >= 0;
    }
    if (normal > 0 && 2 * found < normal)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "dict.txt: only %lld of the sentencepiece model's %lld pieces are "
                            "dictionary words (%lld symbols): an empty dictionary, or one for "
                            "another tokenizer; every other word would become <unk>",
                            (long long)found, (long long)normal, (long long)tok->n_symbols - 10);
    return KG_OK;
}

static kg_status build_dict(kg_tokenizer *tok, const char *dict, size_t len, kg_error *err)
{
    static const char *const head[] = {"<s>", "<pad>", "</s>", "<unk>"};
    /* unilm tasks/gpt_base.py: <mask>, then data/utils.py SPECIAL_SYMBOLS. */
    static const char *const tail[] = {"<mask>",   "</doc>",   "<image>",
                                       "</image>", "</chunk>", "</line>"};
    size_t lines = 1;
    kg_status st;

    tok->dict_buf = malloc(len + 1);
    if (!tok->dict_buf)
        return kg_error_set(err, KG_ERR_NOMEM, "dict.txt: out of memory");
    if (len)
        memcpy(tok->dict_buf, dict, len);
    tok->dict_buf[len] = '\0';
    for (size_t i = 0; i < len; i++)
        lines += dict[i] == '\n' || dict[i] == '\r';
    if (lines > INT32_MAX / 4 || strmap_reserve(&tok->dict, lines + 16))
        return kg_error_set(err, KG_ERR_NOMEM, "dict.txt: out of memory for %zu lines", lines);

    for (size_t i = 0; i < sizeof head / sizeof head[0]; i++)
        if ((st = add_symbol(tok, head[i], strlen(head[i]), 0, err)) != KG_OK)
            return st;
    /* Python text mode: \n, \r\n and \r all end a line. */
    size_t pos = 0, lineno = 1;
    while (pos < len) {
        size_t end = pos;
        while (end < len && tok->dict_buf[end] != '\n' && tok->dict_buf[end] != '\r')
            end++;
        if ((st = parse_dict_line(tok, tok->dict_buf + pos, end - pos, lineno, err)) != KG_OK)
            return st;
        if (end < len && tok->dict_buf[end] == '\r' && end + 1 < len &&
            tok->dict_buf[end + 1] == '\n')
            end++;
        pos = end + 1;
        lineno++;
    }
    for (size_t i = 0; i < sizeof tail / sizeof tail[0]; i++)
        if ((st = add_symbol(tok, tail[i], strlen(tail[i]), 0, err)) != KG_OK)
            return st;
    return check_coverage(tok, err);
}

kg_status kg_tokenizer_new(kg_tokenizer **out, const void *spm, size_t spm_len, const char *dict,
                           size_t dict_len, kg_error *err)
{
    kg_tokenizer *tok;
    kg_status st;

    if (!out || (!spm && spm_len) || (!dict && dict_len))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_tokenizer_new: NULL argument");
    *out = NULL;
    tok = calloc(1, sizeof *tok);
    if (!tok)
        return kg_error_set(err, KG_ERR_NOMEM, "kg_tokenizer_new: out of memory");
    if ((st = kg_spm_parse(&tok->spm, spm, spm_len, "sentencepiece model", err)) != KG_OK)
        goto fail;
    if ((st = build_pieces(tok, err)) != KG_OK)
        goto fail;
    if ((st = build_dict(tok, dict, dict_len, err)) != KG_OK)
        goto fail;
    *out = tok;
    return KG_OK;

fail:
    kg_tokenizer_free(tok);
    return st;
}

void kg_tokenizer_free(kg_tokenizer *tok)
{
    if (!tok)
        return;
    kg_spm_free(&tok->spm);
    strmap_free(&tok->pieces);
    strmap_free(&tok->dict);
    free(tok->dict_buf);
    free(tok);
}

int32_t kg_tokenizer_symbol_id(const kg_tokenizer *tok, const char *symbol)
{
    size_t n = strlen(symbol);
    int32_t e = strmap_find(&tok->dict, symbol, n, fnv(symbol, n));
    return e < 0 ? KG_TOK_UNK : tok->dict.val[e];
}

int64_t kg_tokenizer_vocab_size(const kg_tokenizer *tok)
{
    return tok->n_symbols;
}
