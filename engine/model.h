/* model.h - internals shared by model.c and pipeline.c (not public API). */
#ifndef KG_MODEL_H
#define KG_MODEL_H

#include "aligner.h"
#include "clip_vit.h"
#include "connector.h"
#include "controlnet.h"
#include "kosmosg.h"
#include "lora.h"
#include "mllm.h"
#include "ops.h"
#include "safetensors.h"
#include "scheduler.h"
#include "tokenizer.h"
#include "unet.h"
#include "vae.h"

/* kg.format_version of model and ControlNet files (tools/kosmosg_convert FORMAT_VERSION) */
#define KG_FORMAT_VERSION "1"

enum {
    KG_LOADED_CLIP = 1 << 0,
    KG_LOADED_CONNECTOR = 1 << 1,
    KG_LOADED_MLLM = 1 << 2,
    KG_LOADED_ALIGNER = 1 << 3,
    KG_LOADED_UNET = 1 << 4,
    KG_LOADED_VAE = 1 << 5,
};

struct kg_model {
    kg_model_options opt;
    kg_backend_kind kind;                   /* resolved: CPU or CUDA */
    char fallback_reason[KG_ERROR_MSG_LEN]; /* why AUTO chose the CPU */
    const kg_backend_provider *provider;
    kg_backend *store; /* weight store: owns the weight blobs, computes nothing */
    kg_st_file *st;    /* the model file, open during kg_model_open only */
    kg_tokenizer *tok;
    kg_clip clip;
    kg_connector connector;
    kg_mllm mllm;
    kg_aligner aligner;
    kg_unet unet;
    kg_vae vae;
    kg_scheduler_config sched_cfg;
    int vae_factor;    /* image pixels per latent pixel: 2^(VAE up blocks - 1) */
    int size_multiple; /* output sizes are multiples of this: the VAE's factor */
    unsigned loaded;
};

struct kg_control_net {
    const kg_model *m; /* the model it was opened for */
    kg_backend *store; /* its own weight store of the model's kind: opening one never
                           touches the shared model */
    kg_controlnet net;
};

struct kg_session {
    kg_model *m;
    kg_backend *be;
    kg_ctx ctx;
    char *uncond_key; /* negative prompt the cached unconditional embedding belongs to */
    float *uncond;    /* [queries, dim] host copy, NULL until computed */
    kg_lora_set lora; /* the LoRA-merged U-Net weights of this session */
};

/* A new, empty weight store of the model's backend kind, device and dtype. */
kg_status kg_model_store_new(const kg_model *m, kg_backend **out, kg_error *err);

#endif
