/* lora.h - LoRA on the SD1.5 U-Net with diffusers 0.21.4 semantics (the version
 * Kosmos-G pins; the official demo's load_lora = lora_state_dict +
 * load_lora_into_unet, scale = cross_attention_kwargs["scale"]).
 *
 * A patched layer computes  W x + scale * (alpha / rank) * up(down(x))  for its
 * LoRACompatibleLinear/Conv weight W (attention to_q/k/v/out.0, ff.net.0.proj,
 * ff.net.2, proj_in/out, resnet conv1/conv2/conv_shortcut/time_emb_proj,
 * down/upsampler convs); alpha / rank = 1 when the file has no alpha. Several
 * LoRAs add up (diffusers 0.21.4 itself keeps only the last one per layer; see
 * docs/critical-details.md).
 *
 * Applied as a per-session merged copy of the patched weights,
 * W' = W + sum_i scale_i (alpha_i / rank_i) up_i down_i, computed with the
 * session's own ops when the LoRA list or a scale changes; the model's
 * weights are never touched and unpatched layers are shared. Why merged and
 * not low-rank deltas at run time: docs/lora.md. */
#ifndef KG_LORA_H
#define KG_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "kosmosg.h"
#include "ops.h"
#include "status.h"
#include "unet.h"

#define KG_LORA_NAME_MAX 128

/* One layer a LoRA may patch. */
typedef struct kg_lora_target {
    char name[KG_LORA_NAME_MAX]; /* diffusers module path, e.g. "mid_block.attentions.0.proj_in" */
    size_t offset;               /* of its kg_tensor weight inside kg_unet */
    int conv;                    /* LoRACompatibleConv: 4-D weight, LoRA down [r, in, kh, kw] */
    int64_t out, in, kh, kw;     /* weight [out, in] or [out, in, kh, kw] */
} kg_lora_target;

typedef struct kg_lora_table {
    kg_lora_target *t;
    int n;
} kg_lora_table;

/* Every LoRA-compatible layer of m, in module order. */
kg_status kg_lora_table_build(kg_lora_table *tab, const kg_unet *m, kg_error *err);
void kg_lora_table_free(kg_lora_table *tab);

/* A LoRA file, parsed and checked against a U-Net's layers: every U-Net entry
 * must name a LoRA-compatible layer with the right shapes (KG_ERR_WEIGHTS
 * naming the file and key otherwise); text-encoder entries are counted and
 * ignored (Kosmos-G has no CLIP text encoder). */
typedef struct kg_lora_file kg_lora_file;

kg_status kg_lora_file_open(kg_lora_file **out, const kg_lora_table *tab, const char *path,
                            kg_error *err);
void kg_lora_file_close(kg_lora_file *f);
int kg_lora_file_layers(const kg_lora_file *f);         /* U-Net layers patched */
int kg_lora_file_ignored(const kg_lora_file *f);        /* text-encoder tensors ignored */
const char *kg_lora_file_layout(const kg_lora_file *f); /* "diffusers" or "kohya" */

/* Per-session LoRA state: the open files (kept across generations, reopened
 * when the file changes on disk) and the merged weights of the current list. */
typedef struct kg_lora_cached kg_lora_cached;

typedef struct kg_lora_set {
    kg_lora_table tab;
    kg_unet view; /* the base U-Net with the patched weights pointing into blob */
    int active;   /* view differs from the base */
    void *blob;   /* session backend memory of the merged weights */
    size_t blob_size;
    char *key; /* the list the view holds ("path\n%.9g\n..."), NULL = none */
    kg_lora_cached *cache;
    int n_cache;
    double merge_seconds; /* time of the last merge (kosmosg-bench reports it) */
} kg_lora_set;

/* Makes the view hold base + the given LoRAs at their scales (nothing to do
 * when the list is unchanged; scale 0 entries are skipped but still checked).
 * Uses c's arena (reset) and allocates session memory: call between
 * generations. On error the set holds no LoRA (view = base) and the error
 * names the file and key. */
kg_status kg_lora_set_apply(kg_lora_set *ls, kg_ctx *c, const kg_unet *base,
                            const kg_lora_ref *refs, int n, kg_error *err);
/* The U-Net to run: the merged view, or base without LoRA. */
const kg_unet *kg_lora_set_unet(const kg_lora_set *ls, const kg_unet *base);
void kg_lora_set_free(kg_lora_set *ls, kg_backend *be);

#endif
