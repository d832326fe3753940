/* lora.c - LoRA files (diffusers and kohya layouts) merged into a per-session
 * copy of the U-Net's patched weights (diffusers 0.21.4 loaders.py, models/lora.py). */
#include "lora.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "safetensors.h"

#define LORA_ALIGN 64
#define KEY_MAX 512

/* ------------------------------------------------------------ layer table */

typedef struct table_builder {
    kg_lora_table *tab;
    int cap;
    const kg_unet *m;
    kg_status st;
    kg_error *err;
} table_builder;

static void add(table_builder *b, const kg_tensor *w, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void add(table_builder *b, const kg_tensor *w, const char *fmt, ...)
{
    kg_lora_target *t;
    va_list ap;
    if (b->st != KG_OK)
        return;
    if (b->tab->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 256;
        kg_lora_target *nt = realloc(b->tab->t, (size_t)cap * sizeof *nt);
        if (!nt) {
            b->st = kg_error_set(b->err, KG_ERR_NOMEM, "no memory for the LoRA layer table");
            return;
        }
        b->tab->t = nt;
        b->cap = cap;
    }
    t = &b->tab->t[b->tab->n++];
    memset(t, 0, sizeof *t);
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->offset = (size_t)((const char *)w - (const char *)b->m);
    t->conv = w->ndim == 4;
    t->out = w->shape[0];
    t->in = w->shape[1];
    t->kh = t->conv ? w->shape[2] : 1;
    t->kw = t->conv ? w->shape[3] : 1;
}

static void add_resnet(table_builder *b, const kg_sd_resnet *r, const char *p)
{
    add(b, &r->conv1_w, "%s.conv1", p);
    if (r->has_temb)
        add(b, &r->temb_w, "%s.time_emb_proj", p);
    add(b, &r->conv2_w, "%s.conv2", p);
    if (r->has_shortcut)
        add(b, &r->short_w, "%s.conv_shortcut", p);
}

static void add_attn(table_builder *b, const kg_unet_attn *a, const char *p)
{
    add(b, &a->q_w, "%s.to_q", p);
    add(b, &a->k_w, "%s.to_k", p);
    add(b, &a->v_w, "%s.to_v", p);
    add(b, &a->out_w, "%s.to_out.0", p);
}

static void add_transformer(table_builder *b, const kg_unet_transformer *t, const char *p)
{
    char q[KG_LORA_NAME_MAX];
    add(b, &t->proj_in_w, "%s.proj_in", p);
    for (int j = 0; j < t->n_layers; j++) {
        const kg_unet_tblock *k = &t->blocks[j];
        snprintf(q, sizeof q, "%s.transformer_blocks.%d.attn1", p, j);
        add_attn(b, &k->attn1, q);
        snprintf(q, sizeof q, "%s.transformer_blocks.%d.attn2", p, j);
        add_attn(b, &k->attn2, q);
        add(b, &k->ff_in_w, "%s.transformer_blocks.%d.ff.net.0.proj", p, j);
        add(b, &k->ff_out_w, "%s.transformer_blocks.%d.ff.net.2", p, j);
    }
    add(b, &t->proj_out_w, "%s.proj_out", p);
}

static void add_block(table_builder *b, const kg_unet_block *k, const char *kind, int i)
{
    char p[KG_LORA_NAME_MAX];
    for (int l = 0; l < k->n_layers; l++) {
        snprintf(p, sizeof p, "%s_blocks.%d.resnets.%d", kind, i, l);
        add_resnet(b, &k->resnets[l], p);
        if (k->has_attn) {
            snprintf(p, sizeof p, "%s_blocks.%d.attentions.%d", kind, i, l);
            add_transformer(b, &k->attns[l], p);
        }
    }
    if (k->has_resample)
        add(b, &k->resample_w, "%s_blocks.%d.%ssamplers.0.conv", kind, i, kind);
}

kg_status kg_lora_table_build(kg_lora_table *tab, const kg_unet *m, kg_error *err)
{
    table_builder b = {tab, 0, m, KG_OK, err};
    memset(tab, 0, sizeof *tab);
    for (int i = 0; i < m->cfg.n_blocks; i++)
        add_block(&b, &m->down[i], "down", i);
    add_resnet(&b, &m->mid_resnets[0], "mid_block.resnets.0");
    add_transformer(&b, &m->mid_attn, "mid_block.attentions.0");
    add_resnet(&b, &m->mid_resnets[1], "mid_block.resnets.1");
    for (int i = 0; i < m->cfg.n_blocks; i++)
        add_block(&b, &m->up[i], "up", i);
    if (b.st != KG_OK)
        kg_lora_table_free(tab);
    return b.st;
}

void kg_lora_table_free(kg_lora_table *tab)
{
    free(tab->t);
    memset(tab, 0, sizeof *tab);
}

static int find_target(const kg_lora_table *tab, const char *name)
{
    for (int i = 0; i < tab->n; i++)
        if (!strcmp(tab->t[i].name, name))
            return i;
    return -1;
}

/* -------------------------------------------------------------- the files */

typedef struct lora_pair {
    int target;
    int64_t rank;
    double factor;                 /* network_alpha / rank, 1 without alpha */
    const kg_st_tensor *down, *up; /* in the mapping */
    const char *down_key;          /* the file's own key, for messages */
} lora_pair;

struct kg_lora_file {
    kg_st_file *st;
    const char *layout;
    lora_pair *pairs;
    int n;
    int ignored;
};

static kg_status kg_lora_to_f32(const kg_lora_file *f, const kg_st_tensor *t, float *dst,
                                kg_error *err)
{
    return kg_st_to_f32(f->st, t, dst, err);
}

int kg_lora_file_layers(const kg_lora_file *f)
{
    return f->n;
}
int kg_lora_file_ignored(const kg_lora_file *f)
{
    return f->ignored;
}
const char *kg_lora_file_layout(const kg_lora_file *f)
{
    return f->layout;
}

void kg_lora_file_close(kg_lora_file *f)
{
    if (!f)
        return;
    kg_st_close(f->st);
    free(f->pairs);
    free(f);
}

static int starts(const char *s, const char *p)
{
    return !strncmp(s, p, strlen(p));
}

static int ends(const char *s, const char *p)
{
    size_t a = strlen(s), b = strlen(p);
    return a >= b && !strcmp(s + a - b, p);
}

/* Python's s.replace(old, new) (every occurrence) in a buffer of 2 KEY_MAX bytes
 * (a longer result is cut, and then names no layer). */
static void replace_all(char *s, const char *old, const char *new_)
{
    char out[2 * KEY_MAX];
    size_t lo = strlen(old), ln = strlen(new_), n = 0;
    const char *p = s;
    while (*p && n + ln + 1 < sizeof out) {
        if (!strncmp(p, old, lo)) {
            memcpy(out + n, new_, ln);
            n += ln;
            p += lo;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = 0;
    memcpy(s, out, n + 1);
}

/* re.sub(r"\.\d+(?=\D*$)", "", s, count=1): drops the last ".<digits>" run that only
 * non-digits follow (diffusers' SDXL time-embedding rule, applied to every name with "emb") */
static void drop_last_index(char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        size_t j = i + 1;
        if (s[i] != '.' || j >= n || s[j] < '0' || s[j] > '9')
            continue;
        while (j < n && s[j] >= '0' && s[j] <= '9')
            j++;
        int digits_after = 0;
        for (size_t k = j; k < n; k++)
            digits_after |= s[k] >= '0' && s[k] <= '9';
        if (!digits_after) {
            memmove(s + i, s + j, n - j + 1);
            return;
        }
    }
}

/* The U-Net module a kohya "lora_unet_<name>" maps to, exactly as diffusers 0.21.4's
 * _convert_kohya_lora_to_diffusers + convert_state_dict_legacy_attn_format name it
 * (without unet_config, as the demo's lora_state_dict call has none). */
static void kohya_module(const char *lora_name, char *out)
{
    char s[2 * KEY_MAX];
    snprintf(s, sizeof s, "%s.lora.down.weight", lora_name + strlen("lora_unet_"));
    for (char *p = s; *p; p++)
        if (*p == '_')
            *p = '.';
    replace_all(s, strstr(s, "input.blocks") ? "input.blocks" : "down.blocks", "down_blocks");
    replace_all(s, strstr(s, "middle.block") ? "middle.block" : "mid.block", "mid_block");
    replace_all(s, strstr(s, "output.blocks") ? "output.blocks" : "up.blocks", "up_blocks");
    replace_all(s, "transformer.blocks", "transformer_blocks");
    replace_all(s, "to.q.lora", "to_q_lora");
    replace_all(s, "to.k.lora", "to_k_lora");
    replace_all(s, "to.v.lora", "to_v_lora");
    replace_all(s, "to.out.0.lora", "to_out_lora");
    replace_all(s, "proj.in", "proj_in");
    replace_all(s, "proj.out", "proj_out");
    replace_all(s, "emb.layers", "time_emb_proj");
    if (strstr(s, "emb"))
        drop_last_index(s);
    if (strstr(s, ".in."))
        replace_all(s, "in.layers.2", "conv1");
    if (strstr(s, ".out."))
        replace_all(s, "out.layers.3", "conv2");
    if (strstr(s, "downsamplers") || strstr(s, "upsamplers"))
        replace_all(s, "op", "conv");
    if (strstr(s, "skip"))
        replace_all(s, "skip.connection", "conv_shortcut");
    /* attn1/attn2 go through the attn-processor form and back:
     * "attn1.to_q_lora.down.weight" -> "attn1.to_q.lora.down.weight" */
    if (strstr(s, "transformer_blocks") && (strstr(s, "attn1") || strstr(s, "attn2"))) {
        replace_all(s, "to_out_lora", "to_out.0.lora");
        replace_all(s, "_lora", ".lora");
    }
    s[strlen(s) - strlen(".lora.down.weight")] = 0;
    snprintf(out, KEY_MAX, "%.*s", KEY_MAX - 1, s);
}

/* "lora_unet_x.lora_down.weight" -> "lora_unet_x"; NULL suffix when the key has no '.' */
static const char *split_name(const char *key, char *name)
{
    const char *dot = strchr(key, '.');
    size_t n = dot ? (size_t)(dot - key) : strlen(key);
    if (n >= KEY_MAX)
        n = KEY_MAX - 1;
    memcpy(name, key, n);
    name[n] = 0;
    return dot ? dot + 1 : NULL;
}

static kg_status shape_error(const kg_lora_file *f, const kg_lora_target *t, const char *key,
                             const kg_st_tensor *x, const char *role, const int64_t *want, int nd,
                             kg_error *err)
{
    char got[96], exp[96], hint[160] = "";
    kg_tensor a = kg_tensor_make(NULL, KG_F32, x->ndim, x->shape);
    kg_tensor b = kg_tensor_make(NULL, KG_F32, nd, want);
    /* the cross-attention width tells the model family apart */
    if (strstr(t->name, "attn2.to_") && (ends(t->name, "to_k") || ends(t->name, "to_v")) &&
        !strcmp(role, "down") && x->ndim == 2) {
        if (x->shape[1] == 1024)
            snprintf(hint, sizeof hint, " (context width 1024: a LoRA for SD 2.x, not SD1.5)");
        else if (x->shape[1] == 2048)
            snprintf(hint, sizeof hint, " (context width 2048: a LoRA for SDXL, not SD1.5)");
    }
    return kg_error_set(
        err, KG_ERR_WEIGHTS,
        "%s: LoRA tensor '%s' has shape %s, expected %s for the %s of U-Net layer %s%s",
        kg_st_path(f->st), key, kg_shape_str(&a, got, sizeof got),
        kg_shape_str(&b, exp, sizeof exp), role, t->name, hint);
}

/* Checks and records one down/up pair for module `module`. */
static kg_status add_pair(kg_lora_file *f, const kg_lora_table *tab, const char *module,
                          const char *down_key, const char *up_key, const kg_st_tensor *alpha,
                          int *cap, kg_error *err)
{
    const kg_st_tensor *down = kg_st_find(f->st, down_key), *up = kg_st_find(f->st, up_key);
    int ti = find_target(tab, module);
    const kg_lora_target *t;
    int64_t r, wd[4], wu[4];
    int nd;
    lora_pair *p;

    if (ti < 0)
        return kg_error_set(err, KG_ERR_WEIGHTS,
                            "%s: LoRA key '%s' names U-Net layer '%s', which this SD1.5 U-Net does "
                            "not have as a LoRA-compatible layer (diffusers 0.21.4 reads it the "
                            "same way; a LoRA for another model family?)",
                            kg_st_path(f->st), down_key, module);
    t = &tab->t[ti];
    if (!up)
        return kg_error_set(err, KG_ERR_WEIGHTS, "%s: LoRA key '%s' has no matching '%s'",
                            kg_st_path(f->st), down_key, up_key);
    for (int i = 0; i < f->n; i++)
        if (f->pairs[i].target == ti)
            return kg_error_set(err, KG_ERR_WEIGHTS,
                                "%s: U-Net layer %s is patched twice ('%s' and '%s')",
                                kg_st_path(f->st), t->name, f->pairs[i].down_key, down_key);
    if ((down->dtype != KG_F32 && down->dtype != KG_F16 && down->dtype != KG_BF16) ||
        (up->dtype != KG_F32 && up->dtype != KG_F16 && up->dtype != KG_BF16))
        return kg_error_set(err, KG_ERR_WEIGHTS, "%s: LoRA tensors '%s'/'%s' are not F32/F16/BF16",
                            kg_st_path(f->st), down_key, up_key);
    r = down->ndim >= 1 ? down->shape[0] : 0;
    nd = t->conv ? 4 : 2;
    wd[0] = r, wd[1] = t->in, wd[2] = t->kh, wd[3] = t->kw;
    wu[0] = t->out, wu[1] = r, wu[2] = 1, wu[3] = 1;
    if (r < 1 || down->ndim != nd || memcmp(down->shape, wd, (size_t)nd * sizeof *wd))
        return shape_error(f, t, down_key, down, "down", wd, nd, err);
    if (up->ndim != nd || memcmp(up->shape, wu, (size_t)nd * sizeof *wu))
        return shape_error(f, t, up_key, up, "up", wu, nd, err);
    if (f->n == *cap) {
        int nc = *cap ? 2 * *cap : 64;
        lora_pair *np = realloc(f->pairs, (size_t)nc * sizeof *np);
        if (!np)
            return kg_error_set(err, KG_ERR_NOMEM, "no memory for LoRA %s", kg_st_path(f->st));
        f->pairs = np;
        *cap = nc;
    }
    p = &f->pairs[f->n++];
    p->target = ti;
    p->rank = r;
    p->down = down;
    p->up = up;
    p->down_key = down->name;
    p->factor = 1.0;
    if (alpha) {
        float a;
        kg_status s;
        if (alpha->ndim > 1 || (alpha->ndim == 1 && alpha->shape[0] != 1))
            return kg_error_set(err, KG_ERR_WEIGHTS, "%s: LoRA alpha '%s' is not a scalar",
                                kg_st_path(f->st), alpha->name);
        s = kg_st_to_f32(f->st, alpha, &a, err);
        if (s != KG_OK)
            return s;
        if (!isfinite(a))
            return kg_error_set(err, KG_ERR_WEIGHTS, "%s: LoRA alpha '%s' is not finite",
                                kg_st_path(f->st), alpha->name);
        p->factor = (double)a / (double)r;
    }
    return KG_OK;
}

/* kohya / A1111: lora_unet_<module with _>.{lora_down.weight, lora_up.weight, alpha} */
static kg_status parse_kohya(kg_lora_file *f, const kg_lora_table *tab, kg_error *err)
{
    size_t n = kg_st_count(f->st);
    int cap = 0;
    char name[KEY_MAX], module[2 * KEY_MAX], key[KEY_MAX + 32];
    for (size_t i = 0; i < n; i++) {
        const char *k = kg_st_at(f->st, i)->name, *suffix = split_name(k, name);
        int down = suffix && !strcmp(suffix, "lora_down.weight");
        if (starts(k, "lora_te1_") || starts(k, "lora_te2_"))
            return kg_error_set(err, KG_ERR_WEIGHTS,
                                "%s: '%s' is an SDXL text-encoder entry: this is a LoRA for SDXL, "
                                "Kosmos-G uses the SD1.5 U-Net",
                                kg_st_path(f->st), k);
        if (!suffix || !(down || !strcmp(suffix, "lora_up.weight") || !strcmp(suffix, "alpha")))
            return kg_error_set(err, KG_ERR_WEIGHTS,
                                "%s: '%s' is not a kohya LoRA entry (<name>.lora_down.weight, "
                                ".lora_up.weight or .alpha)",
                                kg_st_path(f->st), k);
        snprintf(key, sizeof key, "%s.lora_down.weight", name);
        if (!kg_st_find(f->st, key))
            return kg_error_set(err, KG_ERR_WEIGHTS, "%s: '%s' has no matching '%s'",
                                kg_st_path(f->st), k, key);
        if (starts(k, "lora_te_")) {
            f->ignored++;
            continue;
        }
        if (!down)
            continue;
        kohya_module(name, module);
        snprintf(key, sizeof key, "%s.lora_up.weight", name);
        {
            char akey[KEY_MAX + 32];
            kg_status s;
            snprintf(akey, sizeof akey, "%s.alpha", name);
            s = add_pair(f, tab, module, k, key, kg_st_find(f->st, akey), &cap, err);
            if (s != KG_OK)
                return s;
        }
    }
    return KG_OK;
}

/* diffusers: [unet.]<module>.lora.{down,up}.weight, or the attn-processor form
 * [unet.]<...>.attn1.processor.to_q_lora.{down,up}.weight; text_encoder.* ignored */
static kg_status parse_diffusers(kg_lora_file *f, const kg_lora_table *tab, kg_error *err)
{
    size_t n = kg_st_count(f->st);
    int cap = 0, prefixed = 1;
    char module[2 * KEY_MAX], up[2 * KEY_MAX];
    for (size_t i = 0; i < n; i++) {
        const char *k = kg_st_at(f->st, i)->name;
        prefixed &= starts(k, "unet.") || starts(k, "text_encoder");
    }
    for (size_t i = 0; i < n; i++) {
        const char *k = kg_st_at(f->st, i)->name, *m = k;
        size_t len;
        kg_status s;
        if (prefixed && starts(k, "text_encoder")) {
            f->ignored++;
            continue;
        }
        if (prefixed)
            m += strlen("unet.");
        snprintf(module, KEY_MAX, "%s", m);
        if (strstr(module, ".processor.")) {
            replace_all(module, ".processor", "");
            replace_all(module, "to_out_lora", "to_out.0.lora");
            replace_all(module, "_lora", ".lora");
        }
        if (ends(module, ".lora.up.weight")) {
            continue; /* checked with its down weight; an orphan is caught below */
        } else if (!ends(module, ".lora.down.weight")) {
            return kg_error_set(err, KG_ERR_WEIGHTS,
                                "%s: '%s' is not a LoRA entry of the diffusers layout "
                                "(<module>.lora.down.weight / .lora.up.weight; kohya keys start "
                                "with lora_unet_)",
                                kg_st_path(f->st), k);
        }
        len = strlen(k);
        /* the up key in the file's own spelling: same key with "down" -> "up" at the end */
        snprintf(up, sizeof up, "%.*sup.weight", (int)(len - strlen("down.weight")), k);
        module[strlen(module) - strlen(".lora.down.weight")] = 0;
        s = add_pair(f, tab, module, k, up, NULL, &cap, err);
        if (s != KG_OK)
            return s;
    }
    /* every up weight must have had its down weight */
    for (size_t i = 0; i < n; i++) {
        const kg_st_tensor *t = kg_st_at(f->st, i);
        int found = !ends(t->name, "up.weight") || (prefixed && starts(t->name, "text_encoder"));
        for (int j = 0; !found && j < f->n; j++)
            found = f->pairs[j].up == t;
        if (!found)
            return kg_error_set(err, KG_ERR_WEIGHTS,
                                "%s: LoRA key '%s' has no matching down weight", kg_st_path(f->st),
                                t->name);
    }
    return KG_OK;
}

kg_status kg_lora_file_open(kg_lora_file **out, const kg_lora_table *tab, const char *path,
                            kg_error *err)
{
    kg_lora_file *f;
    kg_status s;
    size_t n;
    int kohya = 1;

    *out = NULL;
    if (!path || !*path)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "LoRA: no file given");
    f = calloc(1, sizeof *f);
    if (!f)
        return kg_error_set(err, KG_ERR_NOMEM, "no memory for LoRA %s", path);
    s = kg_st_open(&f->st, path, err);
    if (s != KG_OK) {
        kg_error_prefix(err, "LoRA");
        free(f);
        return s;
    }
    n = kg_st_count(f->st);
    for (size_t i = 0; i < n; i++) {
        const char *k = kg_st_at(f->st, i)->name;
        kohya &= starts(k, "lora_unet_") || starts(k, "lora_te_") || starts(k, "lora_te1_") ||
                 starts(k, "lora_te2_");
    }
    f->layout = kohya ? "kohya" : "diffusers";
    s = n == 0  ? kg_error_set(err, KG_ERR_WEIGHTS, "%s: no tensors (not a LoRA file)", path)
        : kohya ? parse_kohya(f, tab, err)
                : parse_diffusers(f, tab, err);
    if (s == KG_OK && f->n == 0)
        s = kg_error_set(err, KG_ERR_WEIGHTS,
                         "%s: no U-Net entries (%d text-encoder tensors only, which Kosmos-G "
                         "cannot use)",
                         path, f->ignored);
    if (s != KG_OK) {
        kg_lora_file_close(f);
        return s;
    }
    *out = f;
    return KG_OK;
}

/* ------------------------------------------------------------ the merging */

struct kg_lora_cached {
    char *path;
    kg_lora_file *file;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

static void cached_free(kg_lora_cached *c)
{
    free(c->path);
    kg_lora_file_close(c->file);
    memset(c, 0, sizeof *c);
}

/* The open file for path, from the cache unless the file changed on disk. */
static kg_status get_file(kg_lora_set *ls, const char *path, kg_lora_file **out, kg_error *err)
{
    struct stat sb;
    kg_lora_cached *c = NULL, *grown;
    kg_status s;
    if (stat(path, &sb) != 0)
        return kg_error_set(err, KG_ERR_IO, "LoRA %s: cannot open", path);
    for (int i = 0; i < ls->n_cache; i++)
        if (!strcmp(ls->cache[i].path, path))
            c = &ls->cache[i];
    if (c && c->dev == sb.st_dev && c->ino == sb.st_ino && c->size == sb.st_size &&
        c->mtime.tv_sec == sb.st_mtim.tv_sec && c->mtime.tv_nsec == sb.st_mtim.tv_nsec) {
        *out = c->file;
        return KG_OK;
    }
    if (!c) {
        grown = realloc(ls->cache, (size_t)(ls->n_cache + 1) * sizeof *grown);
        if (!grown)
            return kg_error_set(err, KG_ERR_NOMEM, "no memory for LoRA %s", path);
        ls->cache = grown;
        c = &ls->cache[ls->n_cache];
        memset(c, 0, sizeof *c);
        c->path = strdup(path);
        if (!c->path)
            return kg_error_set(err, KG_ERR_NOMEM, "no memory for LoRA %s", path);
        ls->n_cache++;
    } else {
        kg_lora_file_close(c->file);
        c->file = NULL;
    }
    s = kg_lora_file_open(&c->file, &ls->tab, path, err);
    if (s != KG_OK) {
        c->size = -1; /* reopen next time */
        return s;
    }
    c->dev = sb.st_dev;
    c->ino = sb.st_ino;
    c->size = sb.st_size;
    c->mtime = sb.st_mtim;
    *out = c->file;
    return KG_OK;
}

static char *list_key(const kg_lora_ref *refs, int n)
{
    size_t len = 1;
    char *k, *p;
    for (int i = 0; i < n; i++)
        len += strlen(refs[i].path) + 32;
    k = malloc(len);
    if (!k)
        return NULL;
    p = k;
    *p = 0;
    for (int i = 0; i < n; i++)
        p += sprintf(p, "%s\n%.9g\n", refs[i].path, (double)refs[i].scale);
    return k;
}

static size_t align_up(size_t n)
{
    return (n + LORA_ALIGN - 1) & ~(size_t)(LORA_ALIGN - 1);
}

static kg_tensor *weight_at(kg_unet *u, size_t off)
{
    return (kg_tensor *)((char *)u + off);
}

static void drop(kg_lora_set *ls, const kg_unet *base)
{
    ls->view = *base;
    ls->active = 0;
    free(ls->key);
    ls->key = NULL;
}

/* Host buffers for one layer's concatenated factors. */
typedef struct merge_buf {
    float *u, *dt, *tmp;
    size_t cap_u, cap_dt, cap_tmp;
} merge_buf;

static int reserve(float **p, size_t *cap, size_t n)
{
    float *q;
    if (n <= *cap)
        return 1;
    q = realloc(*p, n * sizeof *q);
    if (!q)
        return 0;
    *p = q;
    *cap = n;
    return 1;
}

/* Rank of target ti summed over the LoRAs with a nonzero scale. */
static int64_t total_rank(int ti, kg_lora_file *const *files, const float *scales, int nf)
{
    int64_t R = 0;
    for (int i = 0; i < nf; i++)
        for (int j = 0; scales[i] != 0.0f && j < files[i]->n; j++)
            if (files[i]->pairs[j].target == ti)
                R += files[i]->pairs[j].rank;
    return R;
}

/* dst = W + U Dt^T for target ti: U [out, R] holds scale * alpha / rank * up of every
 * LoRA side by side, Dt [K, R] their down weights transposed (K = in * kh * kw, the
 * flattened conv weight: a LoCon down conv followed by a 1x1 up conv is the conv with
 * weight up @ down). */
static kg_status merge_one(kg_ctx *c, const kg_lora_target *t, int ti, const kg_tensor *w,
                           const kg_tensor *dst, kg_lora_file *const *files, const float *scales,
                           int nf, merge_buf *mb, kg_error *err)
{
    int64_t K = t->in * t->kh * t->kw, R = total_rank(ti, files, scales, nf), r0 = 0;
    size_t mark = kg_mark(c);
    kg_tensor U, Dt, y, w2;

    if (!reserve(&mb->u, &mb->cap_u, (size_t)(t->out * R)) ||
        !reserve(&mb->dt, &mb->cap_dt, (size_t)(K * R)))
        return kg_error_set(err, KG_ERR_NOMEM, "no host memory to merge LoRA layer %s", t->name);
    for (int i = 0; i < nf; i++) {
        for (int j = 0; scales[i] != 0.0f && j < files[i]->n; j++) {
            const lora_pair *p = &files[i]->pairs[j];
            size_t nd = (size_t)(p->rank * K), nu = (size_t)(t->out * p->rank);
            float f = (float)((double)scales[i] * p->factor);
            kg_status s;
            if (p->target != ti)
                continue;
            if (!reserve(&mb->tmp, &mb->cap_tmp, nd > nu ? nd : nu))
                return kg_error_set(err, KG_ERR_NOMEM, "no host memory to merge LoRA layer %s",
                                    t->name);
            s = kg_lora_to_f32(files[i], p->down, mb->tmp, err);
            if (s != KG_OK)
                return s;
            for (int64_t r = 0; r < p->rank; r++)
                for (int64_t k = 0; k < K; k++)
                    mb->dt[k * R + r0 + r] = mb->tmp[r * K + k];
            s = kg_lora_to_f32(files[i], p->up, mb->tmp, err);
            if (s != KG_OK)
                return s;
            for (int64_t o = 0; o < t->out; o++)
                for (int64_t r = 0; r < p->rank; r++)
                    mb->u[o * R + r0 + r] = f * mb->tmp[o * p->rank + r];
            r0 += p->rank;
        }
    }
    U = kg_new2(c, t->out, R);
    Dt = kg_new_dt(c, c->be->weight_dtype, 2, (int64_t[]){K, R});
    y = kg_tensor_make(dst->data, dst->dtype, 2, (int64_t[]){t->out, K});
    w2 = kg_tensor_reshape(w, 2, (int64_t[]){t->out, K});
    kg_upload_f32(c, &U, mb->u);
    kg_upload_f32(c, &Dt, mb->dt);
    if (dst->dtype == c->be->act_dtype) {
        kg_linear(c, &y, &U, &Dt, NULL);
        kg_add(c, &y, &y, &w2);
    } else {
        /* bf16 weights on an fp32 backend (the CPU in bf16): the sum in fp32, rounded
         * once into the merged weight */
        kg_tensor d = kg_new2(c, t->out, K), base = kg_new2(c, t->out, K);
        kg_linear(c, &d, &U, &Dt, NULL);
        kg_copy(c, &base, &w2);
        kg_add(c, &d, &d, &base);
        kg_copy(c, &y, &d);
    }
    kg_reset(c, mark);
    return kg_ctx_status(c, err);
}

kg_status kg_lora_set_apply(kg_lora_set *ls, kg_ctx *c, const kg_unet *base,
                            const kg_lora_ref *refs, int n, kg_error *err)
{
    kg_backend *be = c->be;
    kg_lora_file **files = NULL;
    float *scales = NULL;
    int64_t *rank = NULL;
    size_t need = 0, arena = 0, used = 0;
    merge_buf mb = {0};
    char *key = NULL;
    kg_status s = KG_OK;
    double t0;
    struct timespec ts;

    if (n < 0 || (n > 0 && !refs))
        return kg_error_set(err, KG_ERR_INVALID_ARG, "LoRA list: %d entries", n);
    if (!ls->tab.t) {
        s = kg_lora_table_build(&ls->tab, base, err);
        if (s != KG_OK)
            return s;
    }
    key = list_key(refs, n);
    if (!key)
        return kg_error_set(err, KG_ERR_NOMEM, "no memory for the LoRA list");
    if (ls->key ? !strcmp(ls->key, key) : n == 0) {
        free(key);
        return KG_OK;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    drop(ls, base);
    files = calloc((size_t)n + 1, sizeof *files);
    scales = calloc((size_t)n + 1, sizeof *scales);
    rank = calloc((size_t)ls->tab.n + 1, sizeof *rank);
    if (!files || !scales || !rank) {
        s = kg_error_set(err, KG_ERR_NOMEM, "no memory for the LoRA list");
        goto done;
    }
    /* every file opens and fits the U-Net before anything is merged */
    for (int i = 0; i < n; i++) {
        if (!refs[i].path || !isfinite(refs[i].scale)) {
            s = kg_error_set(err, KG_ERR_INVALID_ARG, "LoRA %d: no path or a non-finite scale", i);
            goto done;
        }
        s = get_file(ls, refs[i].path, &files[i], err);
        if (s != KG_OK)
            goto done;
        scales[i] = refs[i].scale;
    }
    for (int ti = 0; ti < ls->tab.n; ti++) {
        const kg_lora_target *t = &ls->tab.t[ti];
        size_t nw = (size_t)(t->out * t->in * t->kh * t->kw), ab;
        size_t wb = nw * kg_dtype_size(be->weight_dtype), ad = kg_dtype_size(be->act_dtype);
        rank[ti] = total_rank(ti, files, scales, n);
        if (!rank[ti])
            continue;
        need += align_up(wb);
        ab = align_up((size_t)(t->out * rank[ti]) * ad) +
             align_up((size_t)(t->in * t->kh * t->kw * rank[ti]) * kg_dtype_size(be->weight_dtype));
        if (be->weight_dtype != be->act_dtype) /* merge_one's fp32 delta and base */
            ab += 2 * align_up(nw * ad);
        arena = ab > arena ? ab : arena;
    }
    if (need == 0) { /* every scale 0: the base U-Net, as diffusers' scale 0 */
        ls->key = key;
        key = NULL;
        goto done;
    }
    if (need > ls->blob_size) {
        if (ls->blob)
            be->ops->free(be, ls->blob);
        ls->blob = be->ops->alloc(be, need);
        ls->blob_size = ls->blob ? need : 0;
        if (!ls->blob) {
            s = kg_error_set(err, KG_ERR_NOMEM,
                             "cannot allocate %zu bytes for the LoRA-merged "
                             "U-Net weights",
                             need);
            goto done;
        }
    }
    s = kg_ctx_reserve(c, arena + 4 * KG_ARENA_ALIGN, err); /* U, Dt (+ d, base) padded */
    if (s != KG_OK)
        goto done;
    for (int ti = 0; ti < ls->tab.n && s == KG_OK; ti++) {
        const kg_lora_target *t = &ls->tab.t[ti];
        const kg_tensor *w = (const kg_tensor *)((const char *)base + t->offset);
        kg_tensor *v = weight_at(&ls->view, t->offset);
        if (!rank[ti])
            continue;
        *v = kg_tensor_make((char *)ls->blob + used, be->weight_dtype, w->ndim, w->shape);
        used += align_up((size_t)kg_tensor_numel(v) * kg_dtype_size(be->weight_dtype));
        s = merge_one(c, t, ti, w, v, files, scales, n, &mb, err);
    }
    if (s == KG_OK)
        s = be->ops->sync ? be->ops->sync(be) : KG_OK;
    if (s != KG_OK) {
        kg_ctx_status(c, err);
        kg_ctx_clear_error(c);
        goto done;
    }
    ls->active = 1;
    ls->key = key;
    key = NULL;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ls->merge_seconds = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec - t0;
done:
    if (s != KG_OK)
        drop(ls, base);
    free(key);
    free(files);
    free(scales);
    free(rank);
    free(mb.u);
    free(mb.dt);
    free(mb.tmp);
    return s;
}

const kg_unet *kg_lora_set_unet(const kg_lora_set *ls, const kg_unet *base)
{
    return ls->active ? &ls->view : base;
}

void kg_lora_set_free(kg_lora_set *ls, kg_backend *be)
{
    if (!ls)
        return;
    if (ls->blob && be)
        be->ops->free(be, ls->blob);
    for (int i = 0; i < ls->n_cache; i++)
        cached_free(&ls->cache[i]);
    free(ls->cache);
    free(ls->key);
    kg_lora_table_free(&ls->tab);
    memset(ls, 0, sizeof *ls);
}

/* ------------------------------------------------------------- the lists */

static int parse_scale(const char *s, size_t n, float *out)
{
    char buf[64], *end;
    double v;
    if (n == 0 || n >= sizeof buf)
        return 0;
    memcpy(buf, s, n);
    buf[n] = 0;
    v = strtod(buf, &end);
    if (*end || !isfinite(v) || fabs(v) > 1e6)
        return 0;
    *out = (float)v;
    return 1;
}

kg_status kg_lora_list_parse(const char *spec, kg_lora_ref **out, int *n, kg_error *err)
{
    size_t len, count = 0;
    kg_lora_ref *refs;
    char *text, *p;
    int k = 0;

    *out = NULL;
    *n = 0;
    if (!spec)
        return KG_OK;
    len = strlen(spec);
    for (size_t i = 0; i <= len; i++)
        count += spec[i] == ';' || spec[i] == 0;
    refs = malloc(count * sizeof *refs + len + 1);
    if (!refs)
        return kg_error_set(err, KG_ERR_NOMEM, "no memory for the LoRA list");
    text = (char *)(refs + count);
    memcpy(text, spec, len + 1);
    for (p = text; p;) {
        char *semi = strchr(p, ';'), *colon, *e;
        if (semi)
            *semi = 0;
        while (*p == ' ' || *p == '\t')
            p++;
        e = p + strlen(p);
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            *--e = 0;
        if (*p) {
            refs[k].path = p;
            refs[k].scale = 1.0f;
            colon = strrchr(p, ':');
            if (colon && parse_scale(colon + 1, strlen(colon + 1), &refs[k].scale)) {
                *colon = 0;
                if (!*p) {
                    kg_status st = kg_error_set(err, KG_ERR_INVALID_ARG,
                                                "LoRA list entry %d (':%s'): no file before the "
                                                "scale",
                                                k + 1, colon + 1);
                    free(refs); /* colon points into it */
                    return st;
                }
            }
            k++;
        }
        p = semi ? semi + 1 : NULL;
    }
    if (!k) {
        free(refs);
        return KG_OK;
    }
    *out = refs;
    *n = k;
    return KG_OK;
}
