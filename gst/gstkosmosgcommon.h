/* GStreamer Kosmos-G plugin
 * Copyright (C) 2026 kosmosg-gst authors
 *
 * This library is free software; you can redistribute it and/or
 * modify it under the terms of the GNU Library General Public
 * License as published by the Free Software Foundation; either
 * version 2.1 of the License, or (at your option) any later version.
 */
/* gstkosmosgcommon.h - what kosmosgfilter and kosmosgsrc share: the enum
 * types, the generation properties, output caps, and the engine wrapper that
 * loads the model (NULL->READY), runs kg_generate with cancellation, posts the
 * element messages and maps engine errors to GStreamer errors. */
#ifndef __GST_KOSMOSG_COMMON_H__
#define __GST_KOSMOSG_COMMON_H__

#include <gst/gst.h>
#include <gst/video/video.h>

#include "gstkosmosgcuda.h"
#include "gstkosmosgregistry.h"
#include "kosmosg.h"

G_BEGIN_DECLS

#define GST_TYPE_KOSMOSG_SCHEDULER (gst_kosmosg_scheduler_get_type ())
GType gst_kosmosg_scheduler_get_type (void);
#define GST_TYPE_KOSMOSG_BACKEND (gst_kosmosg_backend_get_type ())
GType gst_kosmosg_backend_get_type (void);
#define GST_TYPE_KOSMOSG_PRECISION (gst_kosmosg_precision_get_type ())
GType gst_kosmosg_precision_get_type (void);

/* Output: RGB first so fixation picks it; the sizes are narrowed to the
 * model's size step by gst_kosmosg_engine_src_caps once it is loaded. With
 * gst-cuda, CUDA memory comes first (preferred when downstream takes it);
 * gst_kosmosg_cuda_filter_caps drops it unless the model runs on CUDA. */
#define GST_KOSMOSG_SRC_CAPS_FIELDS \
  "format = (string) { RGB, RGBA }, " \
  "width = (int) [ " G_STRINGIFY (KG_SIZE_MIN) ", " G_STRINGIFY (KG_SIZE_MAX) " ], " \
  "height = (int) [ " G_STRINGIFY (KG_SIZE_MIN) ", " G_STRINGIFY (KG_SIZE_MAX) " ], " \
  "pixel-aspect-ratio = (fraction) 1/1, " \
  "framerate = (fraction) [ 0/1, MAX ]"
#ifdef KG_HAVE_GST_CUDA
#define GST_KOSMOSG_SRC_CAPS \
  "video/x-raw(" GST_KOSMOSG_CUDA_FEATURE "), " GST_KOSMOSG_SRC_CAPS_FIELDS "; " \
  "video/x-raw, " GST_KOSMOSG_SRC_CAPS_FIELDS
#else
#define GST_KOSMOSG_SRC_CAPS "video/x-raw, " GST_KOSMOSG_SRC_CAPS_FIELDS
#endif

#define GST_KOSMOSG_DEFAULT_SIZE KG_DEFAULT_SIZE
#define GST_KOSMOSG_DEFAULT_STEPS KG_DEFAULT_STEPS
#define GST_KOSMOSG_DEFAULT_GUIDANCE KG_DEFAULT_GUIDANCE
#define GST_KOSMOSG_DEFAULT_SEED (-1)
#define GST_KOSMOSG_DEFAULT_NUM_IMAGES 1
#define GST_KOSMOSG_DEFAULT_SCHEDULER KG_SCHED_DPMPP_2M
#define GST_KOSMOSG_DEFAULT_BACKEND KG_BACKEND_AUTO
#define GST_KOSMOSG_DEFAULT_DEVICE_ID 0
#define GST_KOSMOSG_DEFAULT_PRECISION KG_PRECISION_AUTO
#define GST_KOSMOSG_DEFAULT_POST_MESSAGES TRUE
#define GST_KOSMOSG_DEFAULT_N_THREADS 0
#define GST_KOSMOSG_MAX_THREADS 1024 /* the CPU backend's KG_CPU_MAX_THREADS */

/* Name of the GstCustomMeta on every output buffer. */
#define GST_KOSMOSG_META_NAME "KosmosGGenerationMeta"

/* Property ids relative to the first id an element reserves for them. */
typedef enum
{
  GST_KOSMOSG_PROP_MODEL_LOCATION = 0,
  GST_KOSMOSG_PROP_PROMPT,
  GST_KOSMOSG_PROP_NEGATIVE_PROMPT,
  GST_KOSMOSG_PROP_NUM_INFERENCE_STEPS,
  GST_KOSMOSG_PROP_GUIDANCE_SCALE,
  GST_KOSMOSG_PROP_SEED,
  GST_KOSMOSG_PROP_NUM_IMAGES,
  GST_KOSMOSG_PROP_SCHEDULER,
  GST_KOSMOSG_PROP_BACKEND,
  GST_KOSMOSG_PROP_CUDA_DEVICE_ID,
  GST_KOSMOSG_PROP_PRECISION,
  GST_KOSMOSG_PROP_POST_MESSAGES,
  GST_KOSMOSG_PROP_LORAS,
  GST_KOSMOSG_PROP_N_THREADS,
  GST_KOSMOSG_N_PROPS
} GstKosmosGProp;

typedef struct
{
  gchar *model_location;
  gchar *prompt;
  gchar *negative_prompt;
  guint steps;
  gdouble guidance_scale;
  gint64 seed;
  guint num_images;
  kg_scheduler_type scheduler;
  kg_backend_kind backend;
  gint cuda_device_id;
  kg_precision precision;
  gboolean post_messages;
  /* "a.safetensors:0.8;b.safetensors" (kg_lora_list_parse), NULL = none */
  gchar *loras;
  guint n_threads;              /* CPU backend; 0: all cores */
  /* bumped whenever prompt or negative-prompt changes */
  guint prompt_serial;
} GstKosmosGSettings;

void gst_kosmosg_install_properties (GObjectClass * klass, guint first_id);
void gst_kosmosg_settings_init (GstKosmosGSettings * s);
void gst_kosmosg_settings_clear (GstKosmosGSettings * s);
/* Deep copy, for a generation to work on while properties keep changing. */
void gst_kosmosg_settings_copy (GstKosmosGSettings * dst,
    const GstKosmosGSettings * src);
/* Caller holds the object lock. */
void gst_kosmosg_settings_set (GstKosmosGSettings * s, GstKosmosGProp prop,
    const GValue * value);
void gst_kosmosg_settings_get (const GstKosmosGSettings * s,
    GstKosmosGProp prop, GValue * value);

/* 512x512 (or the nearest size downstream allows), framerate 0/1, first
 * format. Takes caps, returns fixed caps. */
GstCaps *gst_kosmosg_fixate_src_caps (GstCaps * caps);

void gst_kosmosg_meta_register (void);

struct _GstKosmosGEngine
{
  GstElement *element;
  GstKosmosGModel *model;
  kg_session *session;
  /* kg_params.cancel points here: set from any thread, read between steps */
  volatile gint cancel;
  /* 1 while kg_generate runs: a session never runs two generations at once,
   * and the elements' threading guarantees it; this catches a regression */
  volatile gint busy;
  /* running estimate of one generation, 0 before the first; protected by
   * the element's object lock */
  GstClockTime estimate;
  /* CUDA memory output and context (gstkosmosgcuda.c), owned by element */
  GstKosmosGCuda *cuda;
};

void gst_kosmosg_engine_init (GstKosmosGEngine * e, GstElement * element);
/* NULL->READY: acquires the model named by s (or $KOSMOSG_MODEL) and opens a
 * session, posting GST_MESSAGE_PROGRESS "model-load" and, when backend=auto
 * fell back to the CPU, a warning. FALSE after posting an error. */
gboolean gst_kosmosg_engine_open (GstKosmosGEngine * e,
    const GstKosmosGSettings * s);
void gst_kosmosg_engine_close (GstKosmosGEngine * e);
void gst_kosmosg_engine_set_cancel (GstKosmosGEngine * e, gboolean cancel);
gboolean gst_kosmosg_engine_cancelled (GstKosmosGEngine * e);

/* The size step of the loaded model (kg_model_size_multiple), KG_SIZE_STEP
 * before it is loaded. */
gint gst_kosmosg_engine_size_multiple (GstKosmosGEngine * e);
/* The output caps the engine can make: the src template with width and
 * height as ranges stepped by the size multiple ([8, 4096, 8] style), so
 * capsfilter/videoscale fixate to a size the model can make. filter may be
 * NULL. */
GstCaps *gst_kosmosg_engine_src_caps (GstKosmosGEngine * e, GstCaps * filter);
/* Downstream caps (first structure preferred) intersected with what the
 * engine can make; NULL after posting CORE/NEGOTIATION naming the size
 * downstream wants when nothing is left. */
GstCaps *gst_kosmosg_engine_intersect_caps (GstKosmosGEngine * e,
    GstCaps * downstream);
/* Parses caps into info; FALSE after posting CORE/NEGOTIATION when they are
 * unusable or the size is not a multiple of the model's step. */
gboolean gst_kosmosg_output_info_from_caps (GstKosmosGEngine * e,
    GstCaps * caps, GstVideoInfo * info);

/* Runs one generation (with n_controls ControlNet maps, 0 for none).
 * GST_FLOW_OK with out filled; GST_FLOW_FLUSHING when cancelled (nothing
 * posted); GST_FLOW_NOT_NEGOTIATED or GST_FLOW_ERROR after posting an
 * element error. *latency_changed tells that the running estimate moved by
 * more than 20 %. */
GstFlowReturn gst_kosmosg_engine_generate (GstKosmosGEngine * e,
    const GstKosmosGSettings * s, const kg_image * images, gint n_images,
    const kg_control * controls, gint n_controls, gint width, gint height,
    kg_output * out, gboolean * latency_changed);

/* Image index of out as a buffer in the negotiated format (system memory,
 * or the CUDA memory the engine wrote it into), with the generation meta
 * attached; timestamps are left to the caller. */
GstBuffer *gst_kosmosg_make_buffer (GstKosmosGEngine * e,
    const kg_output * out, gint index,
    const GstVideoInfo * info, const GstKosmosGSettings * s);

/* Sets a property of s from set_property, under the element's object lock
 * except for the checks: a prompt or negative prompt that is not valid
 * UTF-8 is refused, and while the element streams (PAUSED or PLAYING) so is
 * a prompt whose placeholders do not match its n_refs reference pads: a
 * warning message says why and the previous value stays. */
void gst_kosmosg_set_property (GstElement * element, GstKosmosGSettings * s,
    GstKosmosGProp prop, const GValue * value, gint n_refs);

/* Number of "<i>" placeholders in prompt. */
gint gst_kosmosg_count_placeholders (const gchar * prompt);

G_END_DECLS

#endif /* __GST_KOSMOSG_COMMON_H__ */
