/* kosmosg.h - the public C API of the Kosmos-G engine (libkosmosg).
 *
 *   kg_model_open()   reads a model file written by kosmosg-convert, checks its
 *                     format version and every tensor, and puts the weights on the
 *                     chosen backend. A model holds weights only: it is immutable
 *                     and may be shared by any number of sessions and threads.
 *   kg_session_new()  per-user state on the model's backend kind: stream/handles,
 *                     activation arena, scheduler state, cached unconditional branch.
 *                     One session runs one generation at a time.
 *   kg_generate()     prompt with <i> placeholders + reference images -> RGB8 images.
 *
 * Every call returns a kg_status; a kg_error, when given, names the culprit.
 * This header is self-contained: it needs only the C standard library. */
#ifndef KG_KOSMOSG_H
#define KG_KOSMOSG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ limits, defaults */

/* Output width and height: between KG_SIZE_MIN and KG_SIZE_MAX, multiples of
 * the loaded model's kg_model_size_multiple() (KG_SIZE_STEP for SD1.5). */
#define KG_SIZE_MIN 8
#define KG_SIZE_MAX 4096
#define KG_SIZE_STEP 8
#define KG_DEFAULT_SIZE 512
#define KG_STEPS_MIN 1
#define KG_STEPS_MAX 1000
#define KG_DEFAULT_STEPS 50
#define KG_GUIDANCE_MIN 0.0
#define KG_GUIDANCE_MAX 100.0
#define KG_DEFAULT_GUIDANCE 6.0 /* the official demo's */
#define KG_MAX_IMAGES 16        /* reference images per prompt */
#define KG_MAX_OUTPUTS 64       /* images per kg_generate call */
#define KG_MAX_CONTROLS 8       /* ControlNet maps per kg_generate call */

/* ----------------------------------------------------------------- status */

typedef enum kg_status {
    KG_OK = 0,
    KG_ERR_INVALID_ARG, /* a caller passed a value outside the contract */
    KG_ERR_IO,          /* a file cannot be opened, mapped or read */
    KG_ERR_FORMAT,      /* a file is malformed (header, JSON, protobuf) */
    KG_ERR_VERSION,     /* a model file of an unknown format version */
    KG_ERR_WEIGHTS,     /* a tensor is missing or has the wrong dtype/shape */
    KG_ERR_SHAPE,       /* an op was called with inconsistent shapes */
    KG_ERR_NOMEM,       /* host memory or the activation arena ran out */
    KG_ERR_NO_DEVICE,   /* the requested GPU backend has no usable device */
    KG_ERR_DEVICE,      /* a driver/runtime/library call on the device failed */
    KG_ERR_PROMPT,      /* prompt text or placeholder count is invalid */
    KG_ERR_IMAGE,       /* a reference image has an unsupported format or size */
    KG_ERR_CANCELLED,   /* the caller's cancel flag stopped the work */
    KG_ERR_UNSUPPORTED, /* a valid request this build cannot serve */
    KG_ERR_NONFINITE,   /* a stage produced NaN/Inf (weights, latents, scheduler config) */
} kg_status;

#define KG_ERROR_MSG_LEN 512

typedef struct kg_error {
    kg_status code;
    char msg[KG_ERROR_MSG_LEN];
} kg_error;

/* Short constant name of a status, e.g. "KG_ERR_WEIGHTS". */
const char *kg_status_name(kg_status s);

/* ------------------------------------------------------------------ images */

/* Largest accepted reference image width or height. */
#define KG_IMAGE_MAX_SIDE 65536

typedef enum kg_pixel_format {
    KG_PIX_RGB,   /* 3 bytes R, G, B */
    KG_PIX_RGBA,  /* 4 bytes; alpha dropped */
    KG_PIX_RGBX,  /* 4 bytes; padding byte ignored */
    KG_PIX_BGR,   /* 3 bytes B, G, R */
    KG_PIX_BGRA,  /* 4 bytes; alpha dropped */
    KG_PIX_BGRX,  /* 4 bytes; padding byte ignored */
    KG_PIX_GRAY8, /* 1 byte, replicated to R = G = B */
} kg_pixel_format;

/* A caller-owned 8-bit image: row y starts at data + y * stride. */
typedef struct kg_image {
    kg_pixel_format format;
    int64_t width;
    int64_t height;
    size_t stride; /* bytes per row, >= width * bytes per pixel */
    const uint8_t *data;
} kg_image;

/* ----------------------------------------------------------------- tensors */

/* What a kg_dump_fn receives: host memory, contiguous, PyTorch dim order. */
typedef enum kg_dtype {
    KG_F32 = 0,
    KG_F16,
    KG_BF16,
    KG_I32,
    KG_I64,
    KG_U8,
    KG_F64,
} kg_dtype;

#define KG_MAX_DIMS 4

typedef struct kg_tensor {
    kg_dtype dtype;
    int ndim;
    int64_t shape[KG_MAX_DIMS]; /* unused trailing dims are 1 */
    void *data;
} kg_tensor;

size_t kg_dtype_size(kg_dtype dt);
const char *kg_dtype_name(kg_dtype dt);
int64_t kg_tensor_numel(const kg_tensor *t);

/* -------------------------------------------------------------- schedulers */

typedef enum kg_scheduler_type {
    KG_SCHED_DPMPP_2M = 0,    /* "dpm++2m" (Kosmos-G's default "dpms") */
    KG_SCHED_DDIM,            /* "ddim" */
    KG_SCHED_PNDM,            /* "pndm" */
    KG_SCHED_EULER,           /* "euler" */
    KG_SCHED_DPMPP_2M_KARRAS, /* "dpm++2m-karras" */
    KG_SCHED_LCM,             /* "lcm" */
    KG_SCHED_TYPE_COUNT,
} kg_scheduler_type;

/* "dpm++2m", "ddim", "pndm", "euler", "dpm++2m-karras", "lcm" (also "dpms", the
 * official demo's name for dpm++2m). */
kg_status kg_scheduler_type_from_name(const char *name, kg_scheduler_type *out, kg_error *err);
const char *kg_scheduler_type_name(kg_scheduler_type type); /* NULL when out of range */

/* ------------------------------------------------------------------- model */

typedef struct kg_model kg_model;
typedef struct kg_session kg_session;

typedef enum kg_backend_kind {
    KG_BACKEND_AUTO = 0, /* CUDA when a device is usable, else CPU (kg_model_backend tells) */
    KG_BACKEND_CPU,
    KG_BACKEND_CUDA,
} kg_backend_kind;

/* CUDA computes in the precision's dtype throughout. The CPU computes in fp32:
 * BF16 there stores the linear and conv weights in bfloat16 (half the memory)
 * and runs those layers on bf16 inputs with fp32 accumulation (AVX512-BF16/AMX
 * where the CPU has them); FP16 is refused (KG_ERR_UNSUPPORTED), never
 * silently run in another precision. */
typedef enum kg_precision {
    KG_PRECISION_FP16 = 0,
    KG_PRECISION_BF16,
    KG_PRECISION_FP32,
    KG_PRECISION_AUTO, /* the default: fp16 on CUDA, fp32 on the CPU */
} kg_precision;

/* "fp16", "bf16", "fp32", "auto" (NULL when out of range) and back. */
const char *kg_precision_name(kg_precision p);
kg_status kg_precision_from_name(const char *name, kg_precision *out, kg_error *err);
/* What p means on backend kind: AUTO is fp16 on CUDA and fp32 on the CPU; on
 * KG_BACKEND_AUTO (not yet resolved) and for any other p, p itself. */
kg_precision kg_precision_resolve(kg_precision p, kg_backend_kind kind);

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
/* Output width and height must be multiples of this step (see KG_SIZE_MIN). */
int kg_model_size_multiple(const kg_model *m);
/* The precision the model runs in (AUTO resolved to FP16 or FP32). */
kg_precision kg_model_precision(const kg_model *m);
/* Bytes of the model's weights in its backend's memory (halved, roughly, by
 * bf16 on the CPU: linear and conv weights are nearly all of them). */
size_t kg_model_weight_bytes(const kg_model *m);

/* ----------------------------------------------------------------- session */

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

kg_status kg_control_net_open(kg_control_net **out, kg_model *m, const char *path, kg_error *err);
void kg_control_net_close(kg_control_net *cn);

/* One control map for one ControlNet (the official sample_controlnet; several are
 * summed, each with its own scale and window, as diffusers' MultiControlNet). */
typedef struct kg_control {
    const kg_control_net *net;
    kg_image image;              /* the control map, any size: resized to the output size
                           * (PIL Lanczos, as diffusers' VaeImageProcessor), / 255 */
    float scale;                 /* conditioning_scale, default 1.0 */
    float guidance_start;        /* acts on step i when start <= i/N and (i+1)/N <= end */
    float guidance_end;          /* default 0.0 and 1.0 */
    int canny;                   /* nonzero: the image is a photo; its Canny edges (OpenCV's
                           * algorithm on RGB, as the demo's CannyDetector) are the map */
    float canny_low, canny_high; /* thresholds, default 100 and 200 (CannyDetector's) */
} kg_control;

void kg_control_init(kg_control *c);

/* An output image in CUDA device memory, written by kg_generate instead of kg_output.rgb
 * (kg_params.device_out). The address belongs to the model's device and must be usable from
 * that device's primary context, the one the CUDA runtime (and so the engine) computes in:
 * memory allocated in the primary context, or in any context the primary one can address
 * (GStreamer: a GstCudaContext made with gst_cuda_context_new_wrapped() around the primary
 * context). The engine converts the decoded image on its own stream and synchronises that
 * stream before kg_generate returns, so the memory is complete for any other stream. */
typedef struct kg_device_image {
    uint64_t ptr;           /* device address (CUdeviceptr) */
    size_t pitch;           /* bytes per row, >= width * bytes per pixel */
    kg_pixel_format format; /* KG_PIX_RGB, or KG_PIX_RGBA / KG_PIX_RGBX (4th byte 255) */
} kg_device_image;

typedef struct kg_params {
    const char *prompt;          /* UTF-8, one "<i>" per reference image */
    const char *negative_prompt; /* NULL or "" = the official unconditional "<s>" */
    const kg_image *images;
    int n_images;                /* 0..KG_MAX_IMAGES */
    int steps;                   /* KG_STEPS_MIN..KG_STEPS_MAX, default KG_DEFAULT_STEPS */
    float guidance_scale;        /* default KG_DEFAULT_GUIDANCE; <= 1: no CFG */
    int64_t seed;                /* -1: random; the seed used is reported in kg_output */
    int num_images;              /* 1..KG_MAX_OUTPUTS, default 1 */
    kg_scheduler_type scheduler; /* default DPM-Solver++ 2M */
    int width, height;           /* default KG_DEFAULT_SIZE; see kg_model_size_multiple */
    const float *init_latents;   /* optional [num_images, 4, height/8, width/8] */
    const volatile int *cancel;  /* optional: nonzero stops between steps (KG_ERR_CANCELLED) */
    const kg_lora_ref *loras;    /* LoRAs on the U-Net, each at its own scale (several add up); the
                                    session keeps them merged and open between generations and
                                    re-merges only when the list or a scale changes */
    int n_loras;
    const kg_control *controls;        /* optional ControlNet maps (none: plain Kosmos-G) */
    int n_controls;                    /* 0..KG_MAX_CONTROLS */
    const kg_device_image *device_out; /* optional, num_images entries: the images go there
                                    (pixels as kg_output.rgb would hold them) and kg_output.rgb
                                    stays NULL; CUDA backend only (KG_ERR_UNSUPPORTED on the CPU) */
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
    int n; /* images */
    int width, height;
    uint8_t *rgb; /* n * height * width * 3, row-major RGB; NULL with device_out */
    int64_t seed; /* the seed actually used */
    double seconds_encode, seconds_denoise, seconds_decode;
} kg_output;

kg_status kg_generate(kg_session *s, const kg_params *p, kg_progress_fn progress, kg_dump_fn dump,
                      void *user, kg_output *out, kg_error *err);
void kg_output_free(kg_output *o);

#ifdef __cplusplus
}
#endif

#endif
