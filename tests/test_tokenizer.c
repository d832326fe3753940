/* test_tokenizer.c - sentencepiece + fairseq dictionary + prompt layout vs
 * the official Kosmos-G tokenization (golden kosmosg/tokenizer.safetensors,
 * 300 prompts; the e2e goldens' tokens.*), plus robustness: long prompts,
 * invalid UTF-8, corrupted model and dictionary files. Ids are compared
 * exactly (no tolerance). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "prompt.h"
#include "testutil.h"
#include "tokenizer.h"

#define IMAGE_TOKENS 64

typedef struct blob {
    char *p;
    size_t n;
} blob;

static blob read_all(const char *rel)
{
    blob b = {0};
    const char *path = kgt_golden_path(rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("cannot open %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    b.n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    b.p = malloc(b.n + 1);
    if (!b.p || fread(b.p, 1, b.n, f) != b.n) {
        printf("cannot read %s\n", path);
        exit(1);
    }
    b.p[b.n] = '\0';
    fclose(f);
    return b;
}

static const kg_st_tensor *need(const kg_st_file *f, const char *name)
{
    const kg_st_tensor *t = kg_st_find(f, name);
    if (!t) {
        printf("golden tensor %s missing\n", name);
        exit(1);
    }
    return t;
}

static int64_t i64_at(const kg_st_tensor *t, size_t i)
{
    int64_t v;
    memcpy(&v, (const char *)t->data + 8 * i, 8);
    return v;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}

static void print_ids(const char *what, const int32_t *v, size_t n)
{
    printf("    %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++)
        printf(" %d", v[i]);
    printf(n > 40 ? " ...\n" : "\n");
}

static void print_golden_ids(const char *what, const kg_st_tensor *t, size_t b, size_t e)
{
    printf("    %s (%zu):", what, e - b);
    for (size_t i = b; i < e && i < b + 40; i++)
        printf(" %lld", (long long)i64_at(t, i));
    printf(e - b > 40 ? " ...\n" : "\n");
}

static int ids_equal(const int32_t *v, size_t n, const kg_st_tensor *t, size_t b, size_t e)
{
    if (n != e - b)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] != i64_at(t, b + i))
            return 0;
    return 1;
}

/* The 300 golden prompts: src ids + image mask, negative ids, spm ids. */
static void test_golden_prompts(const kg_tokenizer *tok)
{
    kg_st_file *g = kgt_golden_open("kosmosg/tokenizer.safetensors");
    if (!g) {
        kgt_check(0, "open kosmosg/tokenizer.safetensors");
        return;
    }
    const kg_st_tensor *pu = need(g, "prompt.utf8"), *po = need(g, "prompt.offsets");
    const kg_st_tensor *ni = need(g, "n_images");
    const kg_st_tensor *si = need(g, "src.ids"), *so = need(g, "src.offsets");
    const kg_st_tensor *sm = need(g, "src.img_mask");
    const kg_st_tensor *ngi = need(g, "neg.ids"), *ngo = need(g, "neg.offsets");
    const kg_st_tensor *ngs = need(g, "neg.spm_ids");
    const size_t n_prompts = (size_t)ni->shape[0];
    const char *meta_n = kg_st_metadata(g, "num_prompts");
    size_t src_ok = 0, mask_ok = 0, neg_ok = 0, spm_ok = 0, shown = 0;

    kgt_check(meta_n && (size_t)atoll(meta_n) == n_prompts && n_prompts == 300,
              "golden holds %zu prompts (metadata num_prompts %s)", n_prompts,
              meta_n ? meta_n : "?");
    for (size_t i = 0; i < n_prompts; i++) {
        const char *text = (const char *)pu->data + i64_at(po, i);
        size_t len = (size_t)(i64_at(po, i + 1) - i64_at(po, i));
        size_t sb = (size_t)i64_at(so, i), se = (size_t)i64_at(so, i + 1);
        size_t nb = (size_t)i64_at(ngo, i), ne = (size_t)i64_at(ngo, i + 1);
        kg_prompt_seq seq, neg;
        kg_ids ids = {0}, spm = {0};
        kg_error err = {0};
        int ok_src = 0, ok_mask = 0, ok_neg = 0, ok_spm = 0;

        if (kg_prompt_encode_n(tok, text, len, i64_at(ni, i), IMAGE_TOKENS, &seq, &err) == KG_OK) {
            ok_src = ids_equal(seq.ids, seq.n, si, sb, se);
            ok_mask = seq.n == se - sb;
            for (size_t k = 0; ok_mask && k < seq.n; k++)
                ok_mask = seq.img_mask[k] == ((const uint8_t *)sm->data)[sb + k];
        } else {
            printf("  prompt %zu: %s\n", i, err.msg);
        }
        if (kg_prompt_encode_negative_n(tok, text, len, &neg, &err) == KG_OK)
            ok_neg = ids_equal(neg.ids, neg.n, ngi, nb, ne);
        /* neg.spm_ids: -1 at <s>, then one sentencepiece id per piece. */
        if (kg_tokenizer_encode_spm(tok, text, len, &ids, &spm, &err) == KG_OK &&
            spm.n + 1 == ne - nb && i64_at(ngs, nb) == -1) {
            ok_spm = 1;
            for (size_t k = 0; k < spm.n; k++)
                ok_spm &= spm.v[k] == i64_at(ngs, nb + 1 + k);
        }
        src_ok += ok_src;
        mask_ok += ok_mask;
        neg_ok += ok_neg;
        spm_ok += ok_spm;
        if (!(ok_src && ok_mask && ok_neg && ok_spm) && shown++ < 10) {
            printf("  MISMATCH prompt %zu %.*s (src %d mask %d neg %d spm %d)\n", i,
                   (int)(len > 80 ? 80 : len), text, ok_src, ok_mask, ok_neg, ok_spm);
            print_ids("got src", seq.ids, seq.n);
            print_golden_ids("want src", si, sb, se);
            print_ids("got neg", neg.ids, neg.n);
            print_golden_ids("want neg", ngi, nb, ne);
            print_ids("got spm", spm.v, spm.n);
            print_golden_ids("want spm", ngs, nb, ne);
        }
        kg_prompt_seq_free(&seq);
        kg_prompt_seq_free(&neg);
        kg_ids_free(&ids);
        kg_ids_free(&spm);
    }
    kgt_check(src_ok == n_prompts, "src ids exact: %zu/%zu prompts matched", src_ok, n_prompts);
    kgt_check(mask_ok == n_prompts, "src img_mask exact: %zu/%zu prompts matched", mask_ok,
              n_prompts);
    kgt_check(neg_ok == n_prompts, "neg ids exact: %zu/%zu prompts matched", neg_ok, n_prompts);
    kgt_check(spm_ok == n_prompts, "sentencepiece ids exact: %zu/%zu prompts matched", spm_ok,
              n_prompts);

    /* Dictionary specials as the golden lists them. */
    const char *sj = kg_st_metadata(g, "special_ids");
    kg_json *j = NULL;
    size_t sp_ok = 0, sp_n = 0;
    if (sj && kg_json_parse(&j, sj, strlen(sj), "special_ids", NULL) == KG_OK) {
        sp_n = kg_json_count(j);
        for (size_t k = 0; k < sp_n; k++)
            sp_ok += kg_tokenizer_symbol_id(tok, kg_json_key_at(j, k)) ==
                     (int32_t)kg_json_number(kg_json_at(j, k), -1);
    }
    kg_json_free(j);
    kgt_check(sp_n == 10 && sp_ok == sp_n, "special symbol ids: %zu/%zu match metadata", sp_ok,
              sp_n);
    const char *vs = kg_st_metadata(g, "vocab_size");
    kgt_check(vs && kg_tokenizer_vocab_size(tok) == atoll(vs), "vocab size %lld (golden %s)",
              (long long)kg_tokenizer_vocab_size(tok), vs ? vs : "?");
    kg_st_close(g);
}

/* tokens.src / img_mask / negative of the end-to-end goldens. */
static void test_e2e_tokens(const kg_tokenizer *tok)
{
    static const char *const cases[] = {"app512_dpms",     "text_negative_dpms",
                                        "text_pndm",       "two_images_ddim",
                                        "two_images_dpms", "variation_g1_dpms"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char rel[128];
        snprintf(rel, sizeof rel, "kosmosg/e2e_%s.safetensors", cases[c]);
        kg_st_file *g = kgt_golden_open(rel);
        if (!g) {
            kgt_check(0, "open %s", rel);
            continue;
        }
        const kg_st_tensor *p = need(g, "in.prompt.utf8"), *np = need(g, "in.negative_prompt.utf8");
        const kg_st_tensor *src = need(g, "tokens.src"), *mask = need(g, "tokens.img_mask");
        const kg_st_tensor *neg = need(g, "tokens.negative");
        int64_t n_img = 0;
        char key[64];
        for (;; n_img++) {
            snprintf(key, sizeof key, "in.image%lld.rgb", (long long)n_img);
            if (!kg_st_find(g, key))
                break;
        }
        kg_prompt_seq s, n;
        kg_error err = {0};
        int ok_s = 0, ok_m = 0, ok_n = 0;
        if (kg_prompt_encode_n(tok, p->data, p->nbytes, n_img, IMAGE_TOKENS, &s, &err) == KG_OK) {
            ok_s = ids_equal(s.ids, s.n, src, 0, (size_t)src->shape[src->ndim - 1]);
            ok_m = s.n == (size_t)mask->shape[mask->ndim - 1] &&
                   memcmp(s.img_mask, mask->data, s.n) == 0;
        }
        if (kg_prompt_encode_negative_n(tok, np->data, np->nbytes, &n, &err) == KG_OK)
            ok_n = ids_equal(n.ids, n.n, neg, 0, (size_t)neg->shape[neg->ndim - 1]);
        kgt_check(ok_s && ok_m && ok_n,
                  "e2e_%s: %lld image(s), src %zu ids %s, mask %s, negative %s", cases[c],
                  (long long)n_img, s.n, ok_s ? "exact" : "DIFFER", ok_m ? "exact" : "DIFFER",
                  ok_n ? "exact" : "DIFFER");
        kg_prompt_seq_free(&s);
        kg_prompt_seq_free(&n);
        kg_st_close(g);
    }
}

/* tests/data/tokenizer_spm097.tsv: sentencepiece 0.1.97 itself on random
 * texts and on letter runs whose segmentations tie in exact arithmetic
 * (the piece-candidate sums there are double in sentencepiece; float sums
 * pick other pieces). Each line: input bytes in hex, TAB, spm ids. */
static void test_reference_file(const kg_tokenizer *tok)
{
    FILE *f = fopen(KG_TOK_REF, "r");
    char line[8192];
    size_t n = 0, ok = 0, shown = 0;

    if (!f) {
        kgt_check(0, "open %s", KG_TOK_REF);
        return;
    }
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#')
            continue;
        char *tab = strchr(line, '\t');
        if (!tab)
            continue;
        size_t hex = (size_t)(tab - line), len = hex / 2;
        char text[4096];
        for (size_t i = 0; i < len && i < sizeof text; i++) {
            unsigned v;
            sscanf(line + 2 * i, "%2x", &v);
            text[i] = (char)v;
        }
        kg_ids ids = {0}, spm = {0};
        kg_error err = {0};
        int good = len <= sizeof text &&
                   kg_tokenizer_encode_spm(tok, text, len, &ids, &spm, &err) == KG_OK;
        char *p = tab + 1;
        size_t k = 0;
        for (;;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            good &=
                k < spm.n && spm.v[k] == v && ids.v[k] == (v == 0 ? KG_TOK_UNK : (int32_t)v + 1);
            k++;
            p = end;
        }
        good &= k == spm.n;
        if (!good && shown++ < 5)
            printf("  reference line %zu (%zu bytes) differs\n", n + 1, len);
        ok += good;
        n++;
        kg_ids_free(&ids);
        kg_ids_free(&spm);
    }
    fclose(f);
    kgt_check(n > 300 && ok == n,
              "sentencepiece 0.1.97 reference texts: %zu/%zu exact (spm ids; fairseq = spm + 1, "
              "unknown -> 3)",
              ok, n);
}

static void test_layout_errors(const kg_tokenizer *tok)
{
    kg_prompt_seq s;
    kg_error err = {0};
    kg_status st = kg_prompt_encode(tok, "<i> next to <i>", 1, IMAGE_TOKENS, &s, &err);
    kgt_check(st == KG_ERR_PROMPT && strstr(err.msg, "2 \"<i>\"") && strstr(err.msg, "1 image"),
              "2 placeholders, 1 image -> %s \"%s\"", kg_status_name(st), err.msg);
    st = kg_prompt_encode(tok, "a cat", 1, IMAGE_TOKENS, &s, &err);
    kgt_check(st == KG_ERR_PROMPT && strstr(err.msg, "0 \"<i>\"") && strstr(err.msg, "1 image"),
              "0 placeholders, 1 image -> %s \"%s\"", kg_status_name(st), err.msg);
    kgt_check(s.ids == NULL && s.n == 0, "failed encode leaves an empty sequence");
    /* "<i<i>>" holds one placeholder; "<<i>i>" too. */
    st = kg_prompt_encode(tok, "<i<i>>", 1, IMAGE_TOKENS, &s, &err);
    kgt_check(st == KG_OK && s.n == 1 + 2 + 66 + 1, "\"<i<i>>\" = one image block (%zu tokens)",
              s.n);
    kg_prompt_seq_free(&s);
    /* A non-default image_tokens (a model whose connector has fewer latents). */
    st = kg_prompt_encode(tok, "<i>", 1, 4, &s, &err);
    int ok = st == KG_OK && s.n == 7;
    for (size_t i = 0; ok && i < s.n; i++)
        ok = s.img_mask[i] == (i >= 2 && i < 6) && s.ids[i] == (i == 0   ? 0
                                                                : i == 6 ? 64004
                                                                         : 64003);
    kgt_check(ok, "image_tokens 4: [<s>, <image> x5, </image>], mask on positions 2..5");
    kg_prompt_seq_free(&s);
    st = kg_prompt_encode_negative(tok, NULL, &s, &err);
    kgt_check(st == KG_OK && s.n == 1 && s.ids[0] == 0 && s.img_mask[0] == 0,
              "NULL negative prompt -> [<s>]");
    kg_prompt_seq_free(&s);
}

/* Documented behaviour (sentencepiece's normaliser): each byte that does
 * not start a valid UTF-8 sequence becomes U+FFFD after the charsmap step,
 * so it is never normalised away and always ends in an <unk>. Expected
 * ids: the same text with each bad byte replaced by U+E000, a private-use
 * character that nmt_nfkc keeps and the vocabulary lacks (both verified
 * against sentencepiece 0.1.97). A literal U+FFFD is different: the
 * charsmap turns it into a space. */
static void test_invalid_utf8(const kg_tokenizer *tok)
{
#define PUA "\xee\x80\x80"
    static const struct {
        const char *bad, *same, *what;
    } cases[] = {
        {"a\xff"
         "b",
         "a" PUA "b", "0xFF byte"},
        {"x\x80y", "x" PUA "y", "lone continuation byte"},
        {"\xc0\xaf slash", PUA PUA " slash", "overlong '/' (C0 AF)"},
        {"\xe0\x80\xaf", PUA PUA PUA, "overlong 3-byte"},
        {"sur\xed\xa0\x80gate", "sur" PUA PUA PUA "gate", "lone surrogate D800"},
        {"euro \xe2\x82", "euro " PUA PUA, "truncated 3-byte at the end"},
        {"\xf0\x9f\x98"
         "a",
         PUA PUA PUA "a", "truncated emoji"},
        {"\xf4\x90\x80\x80", PUA PUA PUA PUA, "above U+10FFFF"},
        {"\xf8\x88\x80\x80\x80", PUA PUA PUA PUA PUA, "5-byte form"},
    };
#undef PUA
    size_t ok = 0, n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        kg_ids a = {0}, b = {0};
        kg_error err = {0};
        int good =
            kg_tokenizer_encode(tok, cases[i].bad, strlen(cases[i].bad), &a, &err) == KG_OK &&
            kg_tokenizer_encode(tok, cases[i].same, strlen(cases[i].same), &b, &err) == KG_OK &&
            a.n == b.n && a.n > 0 && memcmp(a.v, b.v, a.n * sizeof *a.v) == 0;
        int has_unk = 0;
        for (size_t k = 0; k < a.n; k++)
            has_unk |= a.v[k] == KG_TOK_UNK;
        good &= has_unk;
        if (!good)
            printf("  invalid UTF-8 case \"%s\" differs from its U+E000 form\n", cases[i].what);
        ok += good;
        kg_ids_free(&a);
        kg_ids_free(&b);
    }
    kgt_check(ok == n, "invalid UTF-8: U+FFFD per bad byte, in an <unk>: %zu/%zu cases", ok, n);

    /* "a\xffb" normalises to "▁a\uFFFDb": [▁a, <unk>, b]; "a\uFFFDb" to "▁a▁b". */
    kg_ids v = {0};
    kg_error err = {0};
    kg_tokenizer_encode(tok,
                        "a\xff"
                        "b",
                        3, &v, &err);
    int32_t a_id = kg_tokenizer_symbol_id(tok, "\xe2\x96\x81"
                                               "a");
    int32_t b_id = kg_tokenizer_symbol_id(tok, "b");
    kgt_check(v.n == 3 && v.v[0] == a_id && v.v[1] == KG_TOK_UNK && v.v[2] == b_id,
              "\"a\\xffb\" -> [%d, 3, %d] (got %zu ids)", a_id, b_id, v.n);
    kg_ids_free(&v);
    kg_tokenizer_encode(tok,
                        "a\xef\xbf\xbd"
                        "b",
                        5, &v, &err);
    int32_t sb_id = kg_tokenizer_symbol_id(tok, "\xe2\x96\x81"
                                                "b");
    kgt_check(v.n == 2 && v.v[0] == a_id && v.v[1] == sb_id,
              "\"a\\uFFFDb\" -> [%d, %d] (nmt_nfkc maps a literal U+FFFD to a space)", a_id, sb_id);
    kg_ids_free(&v);

    /* Random bytes (NUL included) through both entry points: never an
     * error, every id inside the vocabulary. */
    size_t runs = 3000, fine = 0;
    int64_t vocab = kg_tokenizer_vocab_size(tok);
    char buf[512];
    for (size_t r = 0; r < runs; r++) {
        size_t len = rnd() % sizeof buf;
        for (size_t k = 0; k < len; k++) {
            uint32_t x = rnd();
            /* Bias towards UTF-8 lead/continuation bytes and spaces. */
            buf[k] = (char)(x % 4 == 0   ? 0x80 | (x >> 8) % 64
                            : x % 4 == 1 ? 0xc0 | (x >> 8) % 64
                            : x % 4 == 2 ? ' ' + (x >> 8) % 96
                                         : (x >> 8) & 0xff);
        }
        kg_ids ids = {0};
        kg_prompt_seq s, ng;
        int good = kg_tokenizer_encode(tok, buf, len, &ids, &err) == KG_OK;
        for (size_t k = 0; good && k < ids.n; k++)
            good = ids.v[k] >= 0 && ids.v[k] < vocab;
        good &= kg_prompt_encode_negative_n(tok, buf, len, &ng, &err) == KG_OK && ng.n == ids.n + 1;
        int64_t n_img = 0;
        for (const char *p = buf; (p = memmem(p, (size_t)(buf + len - p), "<i>", 3)); p += 3)
            n_img++;
        good &= kg_prompt_encode_n(tok, buf, len, n_img, IMAGE_TOKENS, &s, &err) == KG_OK;
        fine += good;
        kg_ids_free(&ids);
        kg_prompt_seq_free(&s);
        kg_prompt_seq_free(&ng);
    }
    kgt_check(fine == runs, "random bytes: %zu/%zu encodes succeed with ids in [0, %lld)", fine,
              runs, (long long)vocab);
}

static void test_long_prompt(const kg_tokenizer *tok)
{
    static const char *const parts[] = {
        "a photo of ", "<i>",    " 東京タワー ",     "🐶🤖 ", "crème brûlée, ",
        "ＦＵＬＬ ",   "\t\n  ", "aaaaaaaaaaaaaaaa", "ไทย ",      "1234567890 "};
    size_t cap = 10000, n = 0;
    int64_t n_img = 0;
    char *text = malloc(cap + 64);
    while (n < cap) {
        const char *p = parts[rnd() % (sizeof parts / sizeof parts[0])];
        n_img += strcmp(p, "<i>") == 0;
        memcpy(text + n, p, strlen(p));
        n += strlen(p);
    }
    text[n] = '\0';
    kg_prompt_seq s;
    kg_error err = {0};
    clock_t t0 = clock();
    kg_status st = kg_prompt_encode(tok, text, n_img, IMAGE_TOKENS, &s, &err);
    double sec = (double)(clock() - t0) / CLOCKS_PER_SEC;
    size_t slots = 0;
    for (size_t i = 0; st == KG_OK && i < s.n; i++)
        slots += s.img_mask[i];
    /* A bound that only catches a pathological (quadratic) encoder. */
    kgt_check(st == KG_OK && slots == (size_t)n_img * IMAGE_TOKENS && s.n > 1000 && sec < 2.0,
              "%zu-byte prompt with %lld images: %s, %zu tokens, %zu image slots", n,
              (long long)n_img, kg_status_name(st), s.n, slots);
    kg_prompt_seq_free(&s);
    free(text);
}

static kg_status try_model(const void *spm, size_t n, const blob *dict, kg_error *err)
{
    kg_tokenizer *t = NULL;
    kg_status st = kg_tokenizer_new(&t, spm, n, dict->p, dict->n, err);
    if (st == KG_OK) {
        /* A model that still loads must encode without crashing. */
        static const char *const texts[] = {"a photo of a cat", "ＦＵＬＬ ﬁ ℌ𝔢𝔩𝔩𝔬 東京 🐶",
                                            " \t leading and trailing  \n"};
        for (size_t i = 0; st == KG_OK && i < 3; i++) {
            kg_ids ids = {0};
            kg_status e = kg_tokenizer_encode(t, texts[i], strlen(texts[i]), &ids, err);
            if (e != KG_OK && e != KG_ERR_FORMAT)
                st = e;
            kg_ids_free(&ids);
        }
    }
    kg_tokenizer_free(t);
    return st;
}

static void test_corrupt_files(const blob *spm, const blob *dict)
{
    kg_error err = {0};
    size_t cuts = 0, cut_format = 0;
    /* Truncations: the first bytes, then evenly spread cut points. */
    for (size_t len = 0; len < spm->n; len += len < 64 ? 1 : spm->n / 150) {
        cuts++;
        cut_format += try_model(spm->p, len, dict, &err) == KG_ERR_FORMAT;
    }
    /* The tail holds the trainer and normalizer specs (charsmap): cut there too. */
    for (size_t back = 1; back < 250000; back = back * 3 / 2 + 1) {
        cuts++;
        cut_format += try_model(spm->p, spm->n - back, dict, &err) == KG_ERR_FORMAT;
    }
    kgt_check(cut_format == cuts, "truncated model: %zu/%zu cuts give KG_ERR_FORMAT (last: %s)",
              cut_format, cuts, err.msg);

    /* Random byte corruption anywhere (also inside the charsmap trie): any
     * of OK / FORMAT / UNSUPPORTED, never a crash. */
    char *copy = malloc(spm->n);
    size_t flips = 90, handled = 0, n_ok = 0, n_fmt = 0;
    for (size_t r = 0; r < flips; r++) {
        memcpy(copy, spm->p, spm->n);
        /* The first pieces' framing, anywhere, and the tail (specs, charsmap). */
        size_t where = r % 3 == 0   ? rnd() % 4096
                       : r % 3 == 1 ? rnd() % spm->n
                                    : spm->n - 1 - rnd() % 240000;
        int count = 1 + (int)(rnd() % 8);
        for (int k = 0; k < count; k++)
            copy[(where + rnd() % 64) % spm->n] ^= (char)(1 + rnd() % 255);
        kg_status st = try_model(copy, spm->n, dict, &err);
        handled += st == KG_OK || st == KG_ERR_FORMAT || st == KG_ERR_UNSUPPORTED;
        n_ok += st == KG_OK;
        n_fmt += st == KG_ERR_FORMAT;
    }
    free(copy);
    kgt_check(handled == flips,
              "corrupted model bytes: %zu/%zu handled (%zu still load, %zu KG_ERR_FORMAT)", handled,
              flips, n_ok, n_fmt);

    kgt_check(try_model("not a model", 11, dict, &err) == KG_ERR_FORMAT, "garbage model: %s",
              err.msg);

    static const struct {
        const char *text, *what;
    } dicts[] = {
        {"a 1\n\nb 2\n", "empty line"},        {"a 1\nb\n", "missing count"},
        {"a 1\nb x\n", "non-numeric count"},   {"a 1\na 2\n", "duplicate word"},
        {"<s> 5\n", "duplicate of a special"},
    };
    for (size_t i = 0; i < sizeof dicts / sizeof dicts[0]; i++) {
        blob d = {(char *)dicts[i].text, strlen(dicts[i].text)};
        kg_status st = try_model(spm->p, spm->n, &d, &err);
        kgt_check(st == KG_ERR_FORMAT, "dict.txt with %s -> %s (%s)", dicts[i].what,
                  kg_status_name(st), err.msg);
    }
    /* the real dict + a word added twice, the second time with the overwrite flag */
    static const char extra[] = "zzqq 1\nzzqq 2 #fairseq:overwrite\n";
    size_t real_words = 0;
    char *ow = malloc(dict->n + sizeof extra);
    kg_tokenizer *t = NULL;
    kg_status st;
    for (size_t i = 0; i < dict->n; i++)
        real_words += dict->p[i] == '\n';
    memcpy(ow, dict->p, dict->n);
    memcpy(ow + dict->n, extra, sizeof extra - 1);
    st = kg_tokenizer_new(&t, spm->p, spm->n, ow, dict->n + sizeof extra - 1, &err);
    kgt_check(st == KG_OK && kg_tokenizer_symbol_id(t, "zzqq") == (int32_t)(4 + real_words + 1) &&
                  kg_tokenizer_vocab_size(t) == (int64_t)(4 + real_words + 2 + 6),
              "#fairseq:overwrite gives the word a new id (fairseq add_symbol): %s", err.msg);
    kg_tokenizer_free(t);
    free(ow);

    /* an empty dict, or one that is not for this model, would make every word <unk> */
    static const struct {
        const char *text, *what;
    } foreign[] = {{"", "empty"}, {"a 1\nthe 2\n", "two words"}, {"\n", "one empty line"}};
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++) {
        t = NULL;
        st = kg_tokenizer_new(&t, spm->p, spm->n, foreign[i].text, strlen(foreign[i].text), &err);
        kgt_check(st == KG_ERR_FORMAT && t == NULL &&
                      (i == 2 || strstr(err.msg, "an empty dictionary, or one for another")),
                  "dict.txt %s -> %s: %s", foreign[i].what, kg_status_name(st), err.msg);
        kg_tokenizer_free(t);
    }
}

int main(void)
{
    blob spm = read_all("kosmosg/sentencepiece.bpe.model");
    blob dict = read_all("kosmosg/dict.txt");
    kg_tokenizer *tok = NULL;
    kg_error err = {0};

    if (!kgt_check(kg_tokenizer_new(&tok, spm.p, spm.n, dict.p, dict.n, &err) == KG_OK,
                   "load sentencepiece.bpe.model (%zu bytes) + dict.txt (%zu bytes) %s", spm.n,
                   dict.n, err.msg))
        return kgt_finish();
    test_golden_prompts(tok);
    test_e2e_tokens(tok);
    test_reference_file(tok);
    test_layout_errors(tok);
    test_invalid_utf8(tok);
    test_long_prompt(tok);
    test_corrupt_files(&spm, &dict);
    kg_tokenizer_free(tok);
    free(spm.p);
    free(dict.p);
    return kgt_finish();
}
