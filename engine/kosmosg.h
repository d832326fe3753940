/* kosmosg.h - the public C API of the Kosmos-G engine.
 *
 *   kg_model_open()   maps a model file written by tools/kosmosg-convert, checks its
 *                     format version and every tensor, and uploads the weights to the
 *                     chosen backend. A model is immutable and may be shared.
 *   kg_session_new()  per-user state on the model's backend kind: stream/handles,
 *                     activation arena, scheduler state, cached unconditional branch.
 *   kg_generate()     prompt with <i> placeholders + reference images -> RGB8 images.
 *
 * Every call returns a kg_status; a kg_error, when given, names the culprit. */
#ifndef KG_KOSMOSG_H
#define KG_KOSMOSG_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "scheduler.h"
#include "status.h"
#include "tensor.h"

typedef struct kg_model kg_model;
typedef struct kg_session kg_session;

typedef enum kg_backend_kind {
    KG_BACKEND_AUTO = 0, /* CUDA when a device is usable, else CPU (kg_model_backend tells) */
    KG_BACKEND_CPU,
    KG_BACKEND_CUDA,
} kg_backend_kind;

typedef enum kg_precision {
    KG_PRECISION_FP16 = 0, /* CUDA default; the CPU backend always computes in fp32 */
    KG_PRECISION_BF16,
    KG_PRECISION_FP32,
} kg_precision;

typedef struct kg_model_options {
    kg_backend_kind backend;
    int device_id;
    kg_precision precision;
    int n_threads; /* CPU backend; <= 0: all cores */
} kg_model_options;

void kg_model_options_init(kg_model_options *o);

kg_status kg_model_open(kg_model **out, const char *path, const kg_model_options *opt,
                        kg_error *err);
void kg_model_close(kg_model *m);
/* The backend the model runs on (AUTO resolved to CPU or CUDA). */
kg_backend_kind kg_model_backend(const kg_model *m);
/* Why KG_BACKEND_AUTO fell back to the CPU (the CUDA init error), or NULL. */
const char *kg_model_fallback_reason(const kg_model *m);
const char *kg_backend_kind_name(kg_backend_kind k);
/* Output width and height must be multiples of this (64 for SD1.5: the VAE's
 * factor 8 times the U-Net's three halvings). */
int kg_model_size_multiple(const kg_model *m);

kg_status kg_session_new(kg_session **out, kg_model *m, kg_error *err);
void kg_session_free(kg_session *s);
/* Backend allocations made so far by the session (tests assert it stays flat). */
size_t kg_session_alloc_count(const kg_session *s);

/* A LoRA file (.safetensors, diffusers or kohya/A1111 layout) applied to the U-Net. */
typedef struct kg_lora_ref {
    const char *path;
    float scale; /* diffusers' cross_attention_kwargs["scale"] (the demo's "LoRA Scale"): 0 = off,
                    1 = as trained (diffusers' default, and what the official sample_controlnet uses) */
} kg_lora_ref;

/* Parses a LoRA list "a.safetensors:0.8;b.safetensors:0.3;c.safetensors" (scale 1 when
 * omitted; the scale is what follows the last ':' when that parses as a number) into
 * *out, one allocation to free() holding the entries and their paths; "" gives none. */
kg_status kg_lora_list_parse(const char *spec, kg_lora_ref **out, int *n, kg_error *err);

typedef struct kg_lora_info {
    const char *layout; /* "diffusers" or "kohya" (static string) */
    int layers;         /* U-Net layers the file patches */
    int ignored;        /* text-encoder tensors skipped: Kosmos-G has no CLIP text encoder */
} kg_lora_info;

/* Opens a LoRA file and checks it against the model's U-Net as kg_generate would (same errors,
 * naming the file and key), without a session; for tools that report what a LoRA does. */
kg_status kg_lora_inspect(const kg_model *m, const char *path, kg_lora_info *info, kg_error *err);

/* An SD1.5 ControlNet converted by `kosmosg-convert --controlnet`, loaded onto a
 * model's backend. Immutable once open: sessions of that model may share it. Close
 * it before its model. A file that is not a ControlNet, or one made for another
 * U-Net (SDXL, SD2, other widths) is refused with an error naming the file. */
typedef struct kg_control_net kg_control_net;

kg_status kg_control_net_open(kg_control_net **out, kg_model *m, const char *path,
                              kg_error *err);
void kg_control_net_close(kg_control_net *cn);

/* One control map for one ControlNet (the official sample_controlnet; several are
 * summed, each with its own scale and window, as diffusers' MultiControlNet). */
typedef struct kg_control {
    const kg_control_net *net;
    kg_image image;       /* the control map, any size: resized to the output size
                           * (PIL Lanczos, as diffusers' VaeImageProcessor), / 255 */
    float scale;          /* conditioning_scale, default 1.0 */
    float guidance_start; /* acts on step i when start <= i/N and (i+1)/N <= end */
    float guidance_end;   /* default 0.0 and 1.0 */
} kg_control;

void kg_control_init(kg_control *c);

typedef struct kg_params {
    const char *prompt;          /* UTF-8, one "<i>" per reference image */
    const char *negative_prompt; /* NULL or "" = the official unconditional "<s>" */
    const kg_image *images;
    int n_images;
    int steps;                   /* default 50 */
    float guidance_scale;        /* default 6.0 (the official demo); <= 1: no CFG */
    int64_t seed;                /* -1: random; the seed used is reported in kg_output */
    int num_images;              /* default 1 */
    kg_scheduler_type scheduler; /* default DPM-Solver++ 2M */
    int width, height;           /* multiples of 8, default 512 */
    const float *init_latents;   /* optional [num_images, 4, height/8, width/8] */
    const volatile int *cancel;  /* optional: nonzero stops between steps (KG_ERR_CANCELLED) */
    const kg_lora_ref *loras;    /* LoRAs on the U-Net, each at its own scale (several add up); the
                                    session keeps them merged and open between generations and
                                    re-merges only when the list or a scale changes */
    int n_loras;
    const kg_control *controls;  /* optional ControlNet maps (none: plain Kosmos-G) */
    int n_controls;
} kg_params;

void kg_params_init(kg_params *p);

typedef enum kg_stage {
    KG_STAGE_ENCODE = 0, /* tokenizer, CLIP, connector, MLLM, AlignerNet */
    KG_STAGE_DENOISE,
    KG_STAGE_DECODE,
    KG_STAGE_DONE,
} kg_stage;

/* Called after each stage and after each denoising step (step 1..total). */
typedef void (*kg_progress_fn)(void *user, kg_stage stage, int step, int total);

/* Called with host float32/int/u8 copies of every stage's tensors, under the names
 * tools/kosmosg-generate --dump documents; for comparisons with other implementations. */
typedef void (*kg_dump_fn)(void *user, const char *name, const kg_tensor *host);

typedef struct kg_output {
    int n;                  /* images */
    int width, height;
    uint8_t *rgb;           /* n * height * width * 3, row-major RGB */
    int64_t seed;           /* the seed actually used */
    double seconds_encode, seconds_denoise, seconds_decode;
} kg_output;

kg_status kg_generate(kg_session *s, const kg_params *p, kg_progress_fn progress, kg_dump_fn dump,
                      void *user, kg_output *out, kg_error *err);
void kg_output_free(kg_output *o);

#endif
