/* model.c - kg_model_open/close and sessions.
 *
 * A model file (tools/kosmosg-convert) holds every tensor under its original
 * Kosmos-G key, the tokenizer files as U8 tensors and one JSON config per
 * component in __metadata__. Opening checks the format version, builds each
 * component from its config and loads it strictly: the official loader's
 * strict=False would leave a missing weight random, so here the first
 * missing or mismatched tensor fails the open, named. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kg_model_options_init(kg_model_options *o)
{
    memset(o, 0, sizeof *o);
    o->backend = KG_BACKEND_AUTO;
    o->precision = KG_PRECISION_AUTO;
}

static const char *const precision_names[] = {"fp16", "bf16", "fp32", "auto"};

const char *kg_precision_name(kg_precision p)
{
    return (int)p >= 0 && (int)p <= (int)KG_PRECISION_AUTO ? precision_names[p] : NULL;
}

kg_status kg_precision_from_name(const char *name, kg_precision *out, kg_error *err)
{
    if (!name || !out)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "precision name: NULL");
    for (int p = 0; p <= (int)KG_PRECISION_AUTO; p++) {
        if (!strcmp(name, precision_names[p])) {
            *out = (kg_precision)p;
            return KG_OK;
        }
    }
    return kg_error_set(err, KG_ERR_INVALID_ARG,
                        "unknown precision \"%s\" (fp32, bf16, fp16 or auto)", name);
}

const char *kg_backend_kind_name(kg_backend_kind k)
{
    switch (k) {
    case KG_BACKEND_AUTO: return "auto";
    case KG_BACKEND_CPU: return "cpu";
    case KG_BACKEND_CUDA: return "cuda";
    }
    return "?";
}

kg_backend_kind kg_model_backend(const kg_model *m)
{
    return m->kind;
}

/* AUTO: fp16 on CUDA, fp32 on the CPU (which has no fp16 arithmetic). */
kg_precision kg_precision_resolve(kg_precision p, kg_backend_kind kind)
{
    if (p != KG_PRECISION_AUTO || kind == KG_BACKEND_AUTO)
        return p;
    return kind == KG_BACKEND_CUDA ? KG_PRECISION_FP16 : KG_PRECISION_FP32;
}

static kg_backend_config backend_config(const kg_model_options *o, kg_backend_kind kind)
{
    kg_backend_config c;
    kg_precision p = kg_precision_resolve(o->precision, kind);
    c.device_id = o->device_id;
    c.dtype = p == KG_PRECISION_BF16 ? KG_BF16 : p == KG_PRECISION_FP32 ? KG_F32 : KG_F16;
    c.n_threads = o->n_threads;
    return c;
}

kg_status kg_model_store_new(const kg_model *m, kg_backend **out, kg_error *err)
{
    kg_backend_config cfg = backend_config(&m->opt, m->kind);
    return m->provider->weights_new(out, &cfg, err);
}

/* Finds the provider of kind and creates the model's weight store on it. */
static kg_status open_store(kg_model *m, kg_backend_kind kind, kg_error *err)
{
    kg_backend_config cfg = backend_config(&m->opt, kind);
    kg_status st = kg_backend_provider_get(kind, &m->provider, err);
    if (st == KG_OK)
        st = m->provider->weights_new(&m->store, &cfg, err);
    return st;
}

static kg_status meta_json(const kg_st_file *st, const char *key, kg_json **out, kg_error *err)
{
    const char *s = kg_st_metadata(st, key);
    if (!s)
        return kg_error_set(err, KG_ERR_FORMAT,
                            "%s: __metadata__ has no \"%s\" (not a kosmosg-convert model file?)",
                            kg_st_path(st), key);
    return kg_json_parse(out, s, strlen(s), key, err);
}

/* The tokenizer files are read (not used from the mapping) and parsed into
 * the tokenizer's own memory. */
static kg_status load_tokenizer(kg_model *m, kg_error *err)
{
    const kg_st_tensor *spm, *dict;
    char *spm_buf = NULL, *dict_buf = NULL;
    kg_status st = kg_st_get(m->st, "tokenizer.sentencepiece", KG_U8, -1, NULL, &spm, err);
    if (st == KG_OK)
        st = kg_st_get(m->st, "tokenizer.dict", KG_U8, -1, NULL, &dict, err);
    if (st != KG_OK)
        return st;
    spm_buf = malloc(spm->nbytes ? spm->nbytes : 1);
    dict_buf = malloc(dict->nbytes ? dict->nbytes : 1);
    if (!spm_buf || !dict_buf)
        st = kg_error_set(err, KG_ERR_NOMEM, "no memory for the tokenizer files");
    if (st == KG_OK)
        st = kg_st_read(m->st, spm, spm_buf, err);
    if (st == KG_OK)
        st = kg_st_read(m->st, dict, dict_buf, err);
    if (st == KG_OK)
        st = kg_tokenizer_new(&m->tok, spm_buf, spm->nbytes, dict_buf, dict->nbytes, err);
    free(spm_buf);
    free(dict_buf);
    return st;
}

/* Parses kg.config.<name> and runs the component's config reader on it. */
#define CONFIG(name, fn, cfgp)                                 \
    do {                                                       \
        kg_json *j_ = NULL;                                    \
        st = meta_json(m->st, "kg.config." name, &j_, err);    \
        if (st == KG_OK)                                       \
            st = fn(cfgp, j_, err);                            \
        kg_json_free(j_);                                      \
        if (st != KG_OK) {                                     \
            kg_error_prefix(err, "%s: kg.config." name, path); \
            goto fail;                                         \
        }                                                      \
    } while (0)

#define LOAD(what, call)                                        \
    do {                                                        \
        st = call;                                              \
        if (st != KG_OK) {                                      \
            kg_error_prefix(err, "%s: loading %s", path, what); \
            goto fail;                                          \
        }                                                       \
    } while (0)

kg_status kg_model_open(kg_model **out, const char *path, const kg_model_options *opt,
                        kg_error *err)
{
    kg_model *m;
    kg_model_options defaults;
    kg_status st;
    const char *ver;
    kg_clip_config clip_cfg;
    kg_connector_config conn_cfg;
    kg_mllm_config mllm_cfg;
    kg_aligner_config al_cfg;
    kg_unet_config unet_cfg;
    kg_vae_config vae_cfg;

    *out = NULL;
    if (!path || !*path)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "no model file given");
    if (!opt) {
        kg_model_options_init(&defaults);
        opt = &defaults;
    }
    if (!kg_precision_name(opt->precision))
        return kg_error_set(err, KG_ERR_INVALID_ARG,
                            "precision %d: expected fp16, bf16, fp32 or auto", (int)opt->precision);
    m = calloc(1, sizeof *m);
    if (!m)
        return kg_error_set(err, KG_ERR_NOMEM, "%s: no memory for the model", path);
    m->opt = *opt;

    st = kg_st_open(&m->st, path, err);
    if (st != KG_OK)
        goto fail;
    ver = kg_st_metadata(m->st, "kg.format_version");
    if (kg_st_metadata(m->st, "kg.kind") &&
        !strcmp(kg_st_metadata(m->st, "kg.kind"), "controlnet")) {
        st = kg_error_set(err, KG_ERR_FORMAT,
                          "%s is a ControlNet file, not a Kosmos-G model (load it with "
                          "kg_control_net_open / --controlnet)",
                          path);
        goto fail;
    }
    if (!ver) {
        st = kg_error_set(err, KG_ERR_FORMAT,
                          "%s: no kg.format_version in __metadata__: not a model file written "
                          "by kosmosg-convert",
                          path);
        goto fail;
    }
    if (strcmp(ver, KG_FORMAT_VERSION) != 0) {
        st = kg_error_set(err, KG_ERR_VERSION,
                          "%s: format version %s, this build reads version %s; re-run "
                          "kosmosg-convert of this version",
                          path, ver, KG_FORMAT_VERSION);
        goto fail;
    }

    CONFIG("clip", kg_clip_config_from_json, &clip_cfg);
    CONFIG("connector", kg_connector_config_from_json, &conn_cfg);
    CONFIG("mllm", kg_mllm_config_from_json, &mllm_cfg);
    CONFIG("aligner", kg_aligner_config_from_json, &al_cfg);
    CONFIG("unet", kg_unet_config_from_json, &unet_cfg);
    CONFIG("vae", kg_vae_config_from_json, &vae_cfg);
    CONFIG("scheduler", kg_scheduler_config_from_json, &m->sched_cfg);

    st = load_tokenizer(m, err);
    if (st != KG_OK) {
        kg_error_prefix(err, "%s: tokenizer", path);
        goto fail;
    }

    m->kind = opt->backend;
    if (m->kind == KG_BACKEND_AUTO) {
        kg_error probe = {0};
        m->kind = KG_BACKEND_CUDA;
        if (open_store(m, KG_BACKEND_CUDA, &probe) != KG_OK) {
            m->kind = KG_BACKEND_CPU;
            snprintf(m->fallback_reason, sizeof m->fallback_reason, "%s", probe.msg);
        }
    }
    if (!m->store) {
        st = open_store(m, m->kind, err);
        if (st != KG_OK) {
            if (m->fallback_reason[0])
                kg_error_prefix(err, "backend auto: no CUDA (%s), and the CPU", m->fallback_reason);
            goto fail;
        }
    }

    LOAD("img_model.visual",
         kg_clip_load(&m->clip, &clip_cfg, m->store, m->st, "img_model.visual.", err));
    m->loaded |= KG_LOADED_CLIP;
    LOAD("img_connector",
         kg_connector_load(&m->connector, &conn_cfg, m->store, m->st, "img_connector.", err));
    m->loaded |= KG_LOADED_CONNECTOR;
    LOAD("gpt_model.decoder",
         kg_mllm_load(&m->mllm, &mllm_cfg, m->store, m->st, "gpt_model.decoder.", err));
    m->loaded |= KG_LOADED_MLLM;
    LOAD("aligner", kg_aligner_load(&m->aligner, &al_cfg, m->store, m->st, "aligner.", err));
    m->loaded |= KG_LOADED_ALIGNER;
    LOAD("diffusion_unet.unet",
         kg_unet_load(&m->unet, &unet_cfg, m->store, m->st, "diffusion_unet.unet.", err));
    m->loaded |= KG_LOADED_UNET;
    LOAD("vae.vae", kg_vae_load(&m->vae, &vae_cfg, m->store, m->st, "vae.vae.", err));
    m->loaded |= KG_LOADED_VAE;
    /* every weight is the process's own copy now: a file rewritten during the
     * load fails it, and nothing refers to the file afterwards */
    st = kg_st_check_unchanged(m->st, err);
    if (st != KG_OK)
        goto fail;
    kg_st_close(m->st);
    m->st = NULL;
    m->vae_factor = 1 << (vae_cfg.n_blocks - 1);
    /* any latent size: the U-Net's upsamplers take their skips' sizes (diffusers'
     * forward_upsample_size), so only the VAE's factor constrains the image */
    m->size_multiple = m->vae_factor;

    *out = m;
    return KG_OK;
fail:
    kg_model_close(m);
    return st;
}

int kg_model_size_multiple(const kg_model *m)
{
    return m->size_multiple;
}

kg_precision kg_model_precision(const kg_model *m)
{
    return kg_precision_resolve(m->opt.precision, m->kind);
}

size_t kg_model_weight_bytes(const kg_model *m)
{
    return m->store->bytes_allocated;
}

const char *kg_model_fallback_reason(const kg_model *m)
{
    return m->fallback_reason[0] ? m->fallback_reason : NULL;
}

void kg_model_close(kg_model *m)
{
    if (!m)
        return;
    if (m->loaded & KG_LOADED_VAE)
        kg_vae_free(&m->vae, m->store);
    if (m->loaded & KG_LOADED_UNET)
        kg_unet_free(&m->unet, m->store);
    if (m->loaded & KG_LOADED_ALIGNER)
        kg_aligner_free(&m->aligner, m->store);
    if (m->loaded & KG_LOADED_MLLM)
        kg_mllm_free(&m->mllm, m->store);
    if (m->loaded & KG_LOADED_CONNECTOR)
        kg_connector_free(&m->connector, m->store);
    if (m->loaded & KG_LOADED_CLIP)
        kg_clip_free(&m->clip, m->store);
    kg_tokenizer_free(m->tok);
    kg_backend_free(m->store);
    kg_st_close(m->st);
    free(m);
}

kg_status kg_session_new(kg_session **out, kg_model *m, kg_error *err)
{
    kg_session *s;
    kg_status st;
    *out = NULL;
    if (!m)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_session_new: no model");
    s = calloc(1, sizeof *s);
    if (!s)
        return kg_error_set(err, KG_ERR_NOMEM, "no memory for a session");
    s->m = m;
    {
        kg_backend_config cfg = backend_config(&m->opt, m->kind);
        st = m->provider->compute_new(&s->be, &cfg, err);
    }
    if (st != KG_OK) {
        free(s);
        return st;
    }
    kg_ctx_init(&s->ctx, s->be);
    *out = s;
    return KG_OK;
}

void kg_session_free(kg_session *s)
{
    if (!s)
        return;
    kg_ctx_release(&s->ctx);
    kg_lora_set_free(&s->lora, s->be);
    kg_backend_free(s->be);
    free(s->uncond);
    free(s->uncond_key);
    free(s);
}

kg_status kg_lora_inspect(const kg_model *m, const char *path, kg_lora_info *info, kg_error *err)
{
    kg_lora_table tab;
    kg_lora_file *f = NULL;
    kg_status st;
    if (!m || !info)
        return kg_error_set(err, KG_ERR_INVALID_ARG, "kg_lora_inspect: no model or info");
    st = kg_lora_table_build(&tab, &m->unet, err);
    if (st != KG_OK)
        return st;
    st = kg_lora_file_open(&f, &tab, path, err);
    if (st == KG_OK) {
        info->layout = kg_lora_file_layout(f);
        info->layers = kg_lora_file_layers(f);
        info->ignored = kg_lora_file_ignored(f);
    }
    kg_lora_file_close(f);
    kg_lora_table_free(&tab);
    return st;
}

size_t kg_session_alloc_count(const kg_session *s)
{
    return s->be->n_allocs;
}
