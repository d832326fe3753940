/* GStreamer Kosmos-G plugin
 * Copyright (C) 2026 kosmosg-gst authors
 *
 * This library is free software; you can redistribute it and/or
 * modify it under the terms of the GNU Library General Public
 * License as published by the Free Software Foundation; either
 * version 2.1 of the License, or (at your option) any later version.
 */
#include <stdlib.h>
#include <string.h>

#include "gstkosmosgcommon.h"

GST_DEBUG_CATEGORY_STATIC (kosmosg_common_debug);
#define GST_CAT_DEFAULT kosmosg_common_debug

static void
ensure_debug_category (void)
{
  static gsize done = 0;

  if (g_once_init_enter (&done)) {
    GST_DEBUG_CATEGORY_INIT (kosmosg_common_debug, "kosmosg", 0,
        "Kosmos-G engine wrapper");
    g_once_init_leave (&done, 1);
  }
}

GType
gst_kosmosg_scheduler_get_type (void)
{
  static gsize type = 0;
  static const GEnumValue values[] = {
    {KG_SCHED_DPMPP_2M, "DPM-Solver++ 2M (the official default)", "dpm++2m"},
    {KG_SCHED_DDIM, "DDIM", "ddim"},
    {KG_SCHED_PNDM, "PNDM (PLMS)", "pndm"},
    {KG_SCHED_EULER, "Euler", "euler"},
    {KG_SCHED_DPMPP_2M_KARRAS, "DPM-Solver++ 2M with Karras sigmas",
        "dpm++2m-karras"},
    {KG_SCHED_LCM, "LCM (for an LCM-LoRA: 2-8 steps, guidance 1-2)", "lcm"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstKosmosGScheduler", values);
    g_once_init_leave (&type, t);
  }
  return (GType) type;
}

GType
gst_kosmosg_backend_get_type (void)
{
  static gsize type = 0;
  static const GEnumValue values[] = {
    {KG_BACKEND_AUTO, "CUDA when a device is usable, else the CPU", "auto"},
    {KG_BACKEND_CUDA, "CUDA (an error when no device is usable)", "cuda"},
    {KG_BACKEND_CPU, "CPU (fp32)", "cpu"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstKosmosGBackend", values);
    g_once_init_leave (&type, t);
  }
  return (GType) type;
}

GType
gst_kosmosg_precision_get_type (void)
{
  static gsize type = 0;
  static const GEnumValue values[] = {
    {KG_PRECISION_AUTO, "fp16 on CUDA, fp32 on the CPU", "auto"},
    {KG_PRECISION_FP16, "float16 weights and activations (CUDA only)", "fp16"},
    {KG_PRECISION_BF16, "bfloat16 weights and activations on CUDA; bfloat16 "
          "linear/conv weights with fp32 activations on the CPU", "bf16"},
    {KG_PRECISION_FP32, "float32", "fp32"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstKosmosGPrecision", values);
    g_once_init_leave (&type, t);
  }
  return (GType) type;
}

void
gst_kosmosg_install_properties (GObjectClass * klass, guint first_id)
{
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS;

  gst_kosmosg_cuda_class_init (GST_ELEMENT_CLASS (klass));

  /* Both elements install these; the doc blocks name kosmosgfilter's and
   * gstkosmosgsrc.c points kosmosgsrc's at them. */
  /**
   * GstKosmosGFilter:model-location:
   *
   * Model file written by `kosmosg-convert` (`.safetensors`); when unset,
   * the `KOSMOSG_MODEL` environment variable. Loaded at NULL->READY and shared
   * by every element of the process that names the same file with the same
   * backend, device, precision and threads.
   */
  g_object_class_install_property (klass,
      first_id + GST_KOSMOSG_PROP_MODEL_LOCATION,
      g_param_spec_string ("model-location", "Model Location",
          "Kosmos-G model file written by kosmosg-convert (.safetensors); "
          "when unset, the KOSMOSG_MODEL environment variable", NULL,
          rw | GST_PARAM_MUTABLE_READY));
  /**
   * GstKosmosGFilter:prompt:
   *
   * The text, with one `<i>` per reference image (kosmosgfilter: bound to
   * the sink pads in order) or plain text. A change triggers a new generation.
   * Refused with a WARNING message, the previous prompt kept, when it is not
   * valid UTF-8 and, while PAUSED or PLAYING, when its `<i>` count differs from
   * the number of reference pads (0 for kosmosgsrc).
   */
  g_object_class_install_property (klass, first_id + GST_KOSMOSG_PROP_PROMPT,
      g_param_spec_string ("prompt", "Prompt",
          "Text with one \"<i>\" placeholder per reference image; a change "
          "triggers a new generation", NULL, rw | GST_PARAM_MUTABLE_PLAYING));
  /**
   * GstKosmosGFilter:negative-prompt:
   *
   * What the image should not show; NULL or "" uses the model's
   * unconditional prompt. A change triggers a new generation; invalid UTF-8 is
   * refused like #GstKosmosGFilter:prompt.
   */
  g_object_class_install_property (klass,
      first_id + GST_KOSMOSG_PROP_NEGATIVE_PROMPT,
      g_param_spec_string ("negative-prompt", "Negative Prompt",
          "What the image should not show (NULL: the model's unconditional "
          "prompt)", NULL, rw | GST_PARAM_MUTABLE_PLAYING));
  /**
   * GstKosmosGFilter:num-inference-steps:
   *
   * Denoising steps per generation; the next generation uses a new
   * value.
   */
  g_object_class_install_property (klass,
      first_id + GST_KOSMOSG_PROP_NUM_INFERENCE_STEPS,
      g_param_spec_uint ("num-inference-steps", "Inference Steps",
          "Denoising steps per image", KG_STEPS_MIN, KG_STEPS_MAX,
          GST_KOSMOSG_DEFAULT_STEPS,
          rw | GST_PARAM_MUTABLE_PLAYING));
  /**
   * GstKosmosGFilter:guidance-scale:
   *
   * Classifier-free guidance scale; 1 or less disables guidance.
   * Controllable: a #GstControlBinding is sampled at each generation.
   */
  g_object_class_install_property (klass,
      first_id + GST_KOSMOSG_PROP_GUIDANCE_SCALE,
      g_param_spec_double ("guidance-scale", "Guidance Scale",
          "Classifier-free guidance scale (<= 1: no guidance)", KG_GUIDANCE_MIN,
          KG_GUIDANCE_MAX,
          GST_KOSMOSG_DEFAULT_GUIDANCE,
          rw | GST_PARAM_MUTABLE_PLAYING | GST_PARAM_CONTROLLABLE));
  /**
   * GstKosmosGFilter:seed:
   *
   * Noise seed; -1 draws a random one, reported in the `kosmosg-done`
   * message and the buffer meta. The same seed, inputs and settings give the
   * same image.
   */
  g_object_class_install_property (klass, first_id + GST_KOSMOSG_PROP_SEED,
      g_param_spec_int64 ("seed", "Seed",
          "Noise seed (-1: a random one, reported in the kosmosg-done message "
          "and the buffer meta)", -1, G_MAXINT64, GST_KOSMOSG_DEFAULT_SEED,
          rw | GST_PARAM_MUTABLE_PLAYING));
  /**
   * GstKosmosGFilter:num-images:
   *
   * Images per generation, each its own output buffer (offset = index in
   * the batch).
   */
  g_object_class_install_property (klass,
      first_id + GST_KOSMOSG_PROP_NUM_IMAGES,
      g_param_spec_uint ("num-images", "Number of Images",
          "Images generated per trigger (one output buffer each)", 1,
          KG_MAX_OUTPUTS,
          GST_KOSMOSG_DEFAULT_NUM_IMAGES, rw | GST_PARAM_MUTABLE_PLAYING));
  /**
   * GstKosmosGFilter:scheduler:
   *
   * The diffusion scheduler: `dpm++2m` (the official default), `ddim`,
   * `pndm`, `euler`, `dpm++2m-karras` or `lcm` (for an LCM-LoRA).
   */
  g_object_class_install_property (klass,
      first_id + GST_KOSMOSG_PROP_SCHEDULER,
      g_param_spec_enum ("scheduler", "Scheduler", "Diffusion scheduler",
          GST_TYPE_KOSMOSG_SCHEDULER, GST_KOSMOSG_DEFAULT_SCHEDULER,
          rw | GST_PARAM_MUTABLE_PLAYING));
  /**
   * GstKosmosGFilter:backend:
   *
   * `auto`: CUDA when a device is usable, else the CPU with a WARNING
   * message; `cuda`: an error when no device is usable (never a silent
   * fallback); `cpu`.
   */
  g_object_class_install_property (klass, first_id + GST_KOSMOSG_PROP_BACKEND,
      g_param_spec_enum ("backend", "Backend",
          "Compute backend (auto: CUDA when a device is usable, else the CPU "
          "with a warning)", GST_TYPE_KOSMOSG_BACKEND,
          GST_KOSMOSG_DEFAULT_BACKEND, rw | GST_PARAM_MUTABLE_READY));
  /**
   * GstKosmosGFilter:cuda-device-id:
   *
   * The CUDA device the model and the generation run on.
   */
  g_object_class_install_property (klass,
      first_id + GST_KOSMOSG_PROP_CUDA_DEVICE_ID,
      g_param_spec_int ("cuda-device-id", "CUDA Device ID",
          "CUDA device to run on", 0, G_MAXINT, GST_KOSMOSG_DEFAULT_DEVICE_ID,
          rw | GST_PARAM_MUTABLE_READY));
  /**
   * GstKosmosGFilter:precision:
   *
   * Weight and activation precision. `auto` (the default): fp16 on CUDA,
   * fp32 on the CPU. On CUDA `fp16`, `bf16` and `fp32` are that precision
   * throughout. On the CPU `bf16` stores the linear and conv weights in
   * bfloat16 (about half the model's memory) and computes with fp32
   * accumulation and fp32 activations; `fp16` there fails the READY
   * transition with a LIBRARY/SETTINGS error, never a silent fp32 run.
   */
  g_object_class_install_property (klass,
      first_id + GST_KOSMOSG_PROP_PRECISION,
      g_param_spec_enum ("precision", "Precision",
          "Weight and activation precision: auto = fp16 on CUDA, fp32 on the "
          "CPU; bf16 on the CPU stores the linear/conv weights in bfloat16 "
          "(half the memory) and computes in fp32; fp16 on the CPU is an "
          "error", GST_TYPE_KOSMOSG_PRECISION,
          GST_KOSMOSG_DEFAULT_PRECISION, rw | GST_PARAM_MUTABLE_READY));
  /**
   * GstKosmosGFilter:post-messages:
   *
   * Post the `kosmosg-progress` (after each denoising step) and
   * `kosmosg-done` (after each generation) element messages and the
   * GST_MESSAGE_PROGRESS `generate` messages.
   */
  g_object_class_install_property (klass,
      first_id + GST_KOSMOSG_PROP_POST_MESSAGES,
      g_param_spec_boolean ("post-messages", "Post Messages",
          "Post kosmosg-progress and kosmosg-done element messages",
          GST_KOSMOSG_DEFAULT_POST_MESSAGES, rw | GST_PARAM_MUTABLE_PLAYING));
  /**
   * GstKosmosGFilter:loras:
   *
   * LoRA files applied to the U-Net, each with its scale:
   * `"a.safetensors:0.8;b.safetensors:0.3"` (diffusers or kohya `.safetensors`;
   * scale 1 when omitted, 0 = off; several add up). A change takes effect at the
   * next generation without reloading the model.
   */
  g_object_class_install_property (klass, first_id + GST_KOSMOSG_PROP_LORAS,
      g_param_spec_string ("loras", "LoRAs",
          "LoRA files on the U-Net, each with its scale: "
          "\"a.safetensors:0.8;b.safetensors:0.3\" (diffusers or kohya "
          ".safetensors; scale 1 when omitted, 0 = off; several add up). "
          "Changeable while PLAYING: the next generation uses the new list "
          "without reloading the model", NULL, rw | GST_PARAM_MUTABLE_PLAYING));
  /**
   * GstKosmosGFilter:n-threads:
   *
   * Worker threads of the CPU backend (0: one per core). They sleep while
   * idle.
   */
  g_object_class_install_property (klass,
      first_id + GST_KOSMOSG_PROP_N_THREADS,
      g_param_spec_uint ("n-threads", "Threads",
          "Worker threads of the CPU backend (0: one per core); they sleep "
          "while idle", 0, GST_KOSMOSG_MAX_THREADS, GST_KOSMOSG_DEFAULT_N_THREADS,
          rw | GST_PARAM_MUTABLE_READY));

  gst_type_mark_as_plugin_api (GST_TYPE_KOSMOSG_SCHEDULER, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_KOSMOSG_BACKEND, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_KOSMOSG_PRECISION, 0);
  ensure_debug_category ();
}

void
gst_kosmosg_settings_init (GstKosmosGSettings * s)
{
  memset (s, 0, sizeof *s);
  s->steps = GST_KOSMOSG_DEFAULT_STEPS;
  s->guidance_scale = GST_KOSMOSG_DEFAULT_GUIDANCE;
  s->seed = GST_KOSMOSG_DEFAULT_SEED;
  s->num_images = GST_KOSMOSG_DEFAULT_NUM_IMAGES;
  s->scheduler = GST_KOSMOSG_DEFAULT_SCHEDULER;
  s->backend = GST_KOSMOSG_DEFAULT_BACKEND;
  s->cuda_device_id = GST_KOSMOSG_DEFAULT_DEVICE_ID;
  s->precision = GST_KOSMOSG_DEFAULT_PRECISION;
  s->post_messages = GST_KOSMOSG_DEFAULT_POST_MESSAGES;
  s->n_threads = GST_KOSMOSG_DEFAULT_N_THREADS;
}

void
gst_kosmosg_settings_clear (GstKosmosGSettings * s)
{
  g_clear_pointer (&s->model_location, g_free);
  g_clear_pointer (&s->prompt, g_free);
  g_clear_pointer (&s->negative_prompt, g_free);
  g_clear_pointer (&s->loras, g_free);
}

void
gst_kosmosg_settings_copy (GstKosmosGSettings * dst,
    const GstKosmosGSettings * src)
{
  *dst = *src;
  dst->model_location = g_strdup (src->model_location);
  dst->prompt = g_strdup (src->prompt);
  dst->negative_prompt = g_strdup (src->negative_prompt);
  dst->loras = g_strdup (src->loras);
}

void
gst_kosmosg_settings_set (GstKosmosGSettings * s, GstKosmosGProp prop,
    const GValue * value)
{
  switch (prop) {
    case GST_KOSMOSG_PROP_MODEL_LOCATION:
      g_free (s->model_location);
      s->model_location = g_value_dup_string (value);
      break;
    case GST_KOSMOSG_PROP_PROMPT:
      g_free (s->prompt);
      s->prompt = g_value_dup_string (value);
      s->prompt_serial++;
      break;
    case GST_KOSMOSG_PROP_NEGATIVE_PROMPT:
      g_free (s->negative_prompt);
      s->negative_prompt = g_value_dup_string (value);
      s->prompt_serial++;
      break;
    case GST_KOSMOSG_PROP_NUM_INFERENCE_STEPS:
      s->steps = g_value_get_uint (value);
      break;
    case GST_KOSMOSG_PROP_GUIDANCE_SCALE:
      s->guidance_scale = g_value_get_double (value);
      break;
    case GST_KOSMOSG_PROP_SEED:
      s->seed = g_value_get_int64 (value);
      break;
    case GST_KOSMOSG_PROP_NUM_IMAGES:
      s->num_images = g_value_get_uint (value);
      break;
    case GST_KOSMOSG_PROP_SCHEDULER:
      s->scheduler = g_value_get_enum (value);
      break;
    case GST_KOSMOSG_PROP_BACKEND:
      s->backend = g_value_get_enum (value);
      break;
    case GST_KOSMOSG_PROP_CUDA_DEVICE_ID:
      s->cuda_device_id = g_value_get_int (value);
      break;
    case GST_KOSMOSG_PROP_PRECISION:
      s->precision = g_value_get_enum (value);
      break;
    case GST_KOSMOSG_PROP_POST_MESSAGES:
      s->post_messages = g_value_get_boolean (value);
      break;
    case GST_KOSMOSG_PROP_LORAS:
      g_free (s->loras);
      s->loras = g_value_dup_string (value);
      break;
    case GST_KOSMOSG_PROP_N_THREADS:
      s->n_threads = g_value_get_uint (value);
      break;
    case GST_KOSMOSG_N_PROPS:
      break;
  }
}

void
gst_kosmosg_settings_get (const GstKosmosGSettings * s, GstKosmosGProp prop,
    GValue * value)
{
  switch (prop) {
    case GST_KOSMOSG_PROP_MODEL_LOCATION:
      g_value_set_string (value, s->model_location);
      break;
    case GST_KOSMOSG_PROP_PROMPT:
      g_value_set_string (value, s->prompt);
      break;
    case GST_KOSMOSG_PROP_NEGATIVE_PROMPT:
      g_value_set_string (value, s->negative_prompt);
      break;
    case GST_KOSMOSG_PROP_NUM_INFERENCE_STEPS:
      g_value_set_uint (value, s->steps);
      break;
    case GST_KOSMOSG_PROP_GUIDANCE_SCALE:
      g_value_set_double (value, s->guidance_scale);
      break;
    case GST_KOSMOSG_PROP_SEED:
      g_value_set_int64 (value, s->seed);
      break;
    case GST_KOSMOSG_PROP_NUM_IMAGES:
      g_value_set_uint (value, s->num_images);
      break;
    case GST_KOSMOSG_PROP_SCHEDULER:
      g_value_set_enum (value, s->scheduler);
      break;
    case GST_KOSMOSG_PROP_BACKEND:
      g_value_set_enum (value, s->backend);
      break;
    case GST_KOSMOSG_PROP_CUDA_DEVICE_ID:
      g_value_set_int (value, s->cuda_device_id);
      break;
    case GST_KOSMOSG_PROP_PRECISION:
      g_value_set_enum (value, s->precision);
      break;
    case GST_KOSMOSG_PROP_POST_MESSAGES:
      g_value_set_boolean (value, s->post_messages);
      break;
    case GST_KOSMOSG_PROP_LORAS:
      g_value_set_string (value, s->loras);
      break;
    case GST_KOSMOSG_PROP_N_THREADS:
      g_value_set_uint (value, s->n_threads);
      break;
    case GST_KOSMOSG_N_PROPS:
      break;
  }
}

void
gst_kosmosg_set_property (GstElement * element, GstKosmosGSettings * s,
    GstKosmosGProp prop, const GValue * value, gint n_refs)
{
  const gchar *v = NULL, *end = NULL, *what = "prompt";
  gchar *old = NULL, *escaped;
  gboolean streaming;
  gint n;

  if (prop != GST_KOSMOSG_PROP_PROMPT
      && prop != GST_KOSMOSG_PROP_NEGATIVE_PROMPT)
    goto set;
  v = g_value_get_string (value);
  if (prop == GST_KOSMOSG_PROP_NEGATIVE_PROMPT)
    what = "negative prompt";
  if (v && !g_utf8_validate (v, -1, &end)) {
    /* the text itself cannot go into a GError message: escaped, in the
     * debug text */
    escaped = g_strescape (v, NULL);
    GST_ELEMENT_WARNING (element, LIBRARY, SETTINGS,
        ("The new %s is refused: it is not valid UTF-8 (byte %"
            G_GSIZE_FORMAT "); the previous one stays", what,
            (gsize) (end - v)), ("refused: \"%s\"", escaped));
    g_free (escaped);
    return;
  }
  if (prop != GST_KOSMOSG_PROP_PROMPT || !v)
    goto set;
  n = gst_kosmosg_count_placeholders (v);
  GST_OBJECT_LOCK (element);
  streaming = GST_STATE (element) >= GST_STATE_PAUSED;
  old = g_strdup (s->prompt);
  GST_OBJECT_UNLOCK (element);
  if (streaming && n != n_refs) {
    GST_ELEMENT_WARNING (element, LIBRARY, SETTINGS,
        ("The new prompt is refused: it has %d \"<i>\" placeholder%s but "
            "%d reference image%s %s connected; the previous prompt stays",
            n, n == 1 ? "" : "s", n_refs, n_refs == 1 ? "" : "s",
            n_refs == 1 ? "is" : "are"), ("refused: \"%s\"; kept: \"%s\"",
            v, old ? old : ""));
    g_free (old);
    return;
  }
  g_free (old);

set:
  GST_OBJECT_LOCK (element);
  gst_kosmosg_settings_set (s, prop, value);
  GST_OBJECT_UNLOCK (element);
}

GstCaps *
gst_kosmosg_fixate_src_caps (GstCaps * caps)
{
  GstStructure *st;

  caps = gst_caps_truncate (gst_caps_make_writable (caps));
  st = gst_caps_get_structure (caps, 0);
  gst_structure_fixate_field_nearest_int (st, "width",
      GST_KOSMOSG_DEFAULT_SIZE);
  gst_structure_fixate_field_nearest_int (st, "height",
      GST_KOSMOSG_DEFAULT_SIZE);
  if (gst_structure_has_field (st, "framerate"))
    gst_structure_fixate_field_nearest_fraction (st, "framerate", 0, 1);
  else
    gst_structure_set (st, "framerate", GST_TYPE_FRACTION, 0, 1, NULL);
  if (gst_structure_has_field (st, "pixel-aspect-ratio"))
    gst_structure_fixate_field_nearest_fraction (st, "pixel-aspect-ratio", 1,
        1);
  else
    gst_structure_set (st, "pixel-aspect-ratio", GST_TYPE_FRACTION, 1, 1,
        NULL);
  return gst_caps_fixate (caps);
}

void
gst_kosmosg_meta_register (void)
{
  static const gchar *tags[] = { NULL };
  static gsize done = 0;

  if (g_once_init_enter (&done)) {
    gst_meta_register_custom (GST_KOSMOSG_META_NAME, tags, NULL, NULL, NULL);
    g_once_init_leave (&done, 1);
  }
}

gint
gst_kosmosg_count_placeholders (const gchar * prompt)
{
  gint n = 0;
  const gchar *p = prompt;

  while (p && (p = strstr (p, "<i>"))) {
    n++;
    p += 3;
  }
  return n;
}

void
gst_kosmosg_engine_init (GstKosmosGEngine * e, GstElement * element)
{
  memset (e, 0, sizeof *e);
  e->element = element;
  ensure_debug_category ();
  gst_kosmosg_cuda_init (e);
}

static void
post_load_progress (GstKosmosGEngine * e, GstProgressType type,
    const gchar * text, gboolean loaded_now, guint users)
{
  GstMessage *msg = gst_message_new_progress (GST_OBJECT (e->element), type,
      "model-load", text);

  if (type == GST_PROGRESS_TYPE_COMPLETE)
    gst_structure_set (gst_message_writable_structure (msg),
        "loaded", G_TYPE_BOOLEAN, loaded_now, "users", G_TYPE_UINT, users,
        NULL);
  gst_element_post_message (e->element, msg);
}

static void
post_open_error (GstKosmosGEngine * e, const gchar * path,
    const kg_error * err)
{
  const gchar *msg = err->msg;

  switch (err->code) {
    case KG_ERR_IO:
      if (!g_file_test (path, G_FILE_TEST_EXISTS))
        GST_ELEMENT_ERROR (e->element, RESOURCE, NOT_FOUND,
            ("Kosmos-G model file '%s' not found", path), ("%s", msg));
      else
        GST_ELEMENT_ERROR (e->element, RESOURCE, OPEN_READ,
            ("Could not read Kosmos-G model file '%s'", path), ("%s", msg));
      break;
    case KG_ERR_FORMAT:
    case KG_ERR_VERSION:
    case KG_ERR_WEIGHTS:
      GST_ELEMENT_ERROR (e->element, LIBRARY, SETTINGS,
          ("'%s' is not a usable Kosmos-G model file", path), ("%s", msg));
      break;
    case KG_ERR_NO_DEVICE:
      GST_ELEMENT_ERROR (e->element, LIBRARY, INIT,
          ("No usable CUDA device for backend=cuda"), ("%s", msg));
      break;
    case KG_ERR_DEVICE:
      GST_ELEMENT_ERROR (e->element, LIBRARY, INIT,
          ("CUDA device initialisation failed"), ("%s", msg));
      break;
    case KG_ERR_UNSUPPORTED:
      GST_ELEMENT_ERROR (e->element, LIBRARY, SETTINGS,
          ("Unsupported precision property: %s", msg), (NULL));
      break;
    case KG_ERR_NOMEM:
      GST_ELEMENT_ERROR (e->element, RESOURCE, NO_SPACE_LEFT,
          ("Not enough memory to load Kosmos-G model '%s'", path),
          ("%s", msg));
      break;
    default:
      GST_ELEMENT_ERROR (e->element, LIBRARY, INIT,
          ("Could not load Kosmos-G model '%s'", path), ("%s: %s",
              kg_status_name (err->code), msg));
      break;
  }
}

gboolean
gst_kosmosg_engine_open (GstKosmosGEngine * e, const GstKosmosGSettings * s)
{
  kg_model_options opt;
  kg_error err = { 0 };
  const gchar *path = s->model_location;
  gboolean loaded_now = FALSE;
  guint users = 0;
  gchar *text;
  kg_model *model;

  if (!path || !*path)
    path = g_getenv ("KOSMOSG_MODEL");
  if (!path || !*path) {
    GST_ELEMENT_ERROR (e->element, RESOURCE, NOT_FOUND,
        ("No Kosmos-G model: set the model-location property or the "
            "KOSMOSG_MODEL environment variable"), (NULL));
    return FALSE;
  }

  kg_model_options_init (&opt);
  opt.backend = s->backend;
  opt.device_id = s->cuda_device_id;
  opt.precision = s->precision;
  opt.n_threads = (int) s->n_threads;

  text = g_strdup_printf ("Loading Kosmos-G model '%s'", path);
  post_load_progress (e, GST_PROGRESS_TYPE_START, text, FALSE, 0);
  g_free (text);
  e->model = gst_kosmosg_model_acquire (path, &opt, &loaded_now, &users, &err);
  if (!e->model) {
    text = g_strdup_printf ("Loading Kosmos-G model '%s' failed", path);
    post_load_progress (e, GST_PROGRESS_TYPE_ERROR, text, FALSE, 0);
    g_free (text);
    post_open_error (e, path, &err);
    return FALSE;
  }
  model = gst_kosmosg_model_get (e->model);
  if (kg_session_new (&e->session, model, &err) != KG_OK) {
    post_load_progress (e, GST_PROGRESS_TYPE_ERROR,
        "Creating a Kosmos-G session failed", FALSE, 0);
    GST_ELEMENT_ERROR (e->element, RESOURCE, NO_SPACE_LEFT,
        ("Could not create a Kosmos-G session"), ("%s: %s",
            kg_status_name (err.code), err.msg));
    gst_kosmosg_model_release (e->model);
    e->model = NULL;
    return FALSE;
  }
  if (loaded_now)
    text = g_strdup_printf ("Loaded Kosmos-G model '%s' on %s", path,
        kg_backend_kind_name (kg_model_backend (model)));
  else
    text = g_strdup_printf ("Sharing the Kosmos-G model '%s' already loaded "
        "on %s (%u users)", path,
        kg_backend_kind_name (kg_model_backend (model)), users);
  post_load_progress (e, GST_PROGRESS_TYPE_COMPLETE, text, loaded_now, users);
  g_free (text);

  if (s->backend == KG_BACKEND_AUTO
      && kg_model_backend (model) == KG_BACKEND_CPU)
    GST_ELEMENT_WARNING (e->element, RESOURCE, NOT_FOUND,
        ("No usable CUDA device: backend=auto runs on the CPU, which is much "
            "slower"), ("%s", kg_model_fallback_reason (model) ?
            kg_model_fallback_reason (model) : "no CUDA backend"));
  gst_kosmosg_cuda_open (e, s->cuda_device_id);
  return TRUE;
}

void
gst_kosmosg_engine_close (GstKosmosGEngine * e)
{
  gst_kosmosg_cuda_close (e);
  g_clear_pointer (&e->session, kg_session_free);
  g_clear_pointer (&e->model, gst_kosmosg_model_release);
}

void
gst_kosmosg_engine_set_cancel (GstKosmosGEngine * e, gboolean cancel)
{
  g_atomic_int_set (&e->cancel, cancel ? 1 : 0);
}

gboolean
gst_kosmosg_engine_cancelled (GstKosmosGEngine * e)
{
  return g_atomic_int_get (&e->cancel) != 0;
}

typedef struct
{
  GstKosmosGEngine *e;
  gboolean post;
  gint64 start_us;
} ProgressCtx;

gint
gst_kosmosg_engine_size_multiple (GstKosmosGEngine * e)
{
  if (!e->model)
    return KG_SIZE_STEP;
  return kg_model_size_multiple (gst_kosmosg_model_get (e->model));
}

static void
set_stepped_range (GstStructure * st, const gchar * field, gint step)
{
  GValue v = G_VALUE_INIT;
  gint lo = MAX (KG_SIZE_MIN, step) + step - 1;

  lo -= lo % step;
  g_value_init (&v, GST_TYPE_INT_RANGE);
  gst_value_set_int_range_step (&v, lo, KG_SIZE_MAX - KG_SIZE_MAX % step,
      step);
  gst_structure_take_value (st, field, &v);
}

GstCaps *
gst_kosmosg_engine_src_caps (GstKosmosGEngine * e, GstCaps * filter)
{
  GstCaps *caps = gst_caps_from_string (GST_KOSMOSG_SRC_CAPS);
  gint step = gst_kosmosg_engine_size_multiple (e);

  caps = gst_caps_make_writable (caps);
  for (guint i = 0; i < gst_caps_get_size (caps); i++) {
    GstStructure *st = gst_caps_get_structure (caps, i);

    set_stepped_range (st, "width", step);
    set_stepped_range (st, "height", step);
  }
  caps = gst_kosmosg_cuda_filter_caps (e, caps);
  if (filter) {
    GstCaps *tmp = gst_caps_intersect_full (filter, caps,
        GST_CAPS_INTERSECT_FIRST);

    gst_caps_unref (caps);
    caps = tmp;
  }
  return caps;
}

static void
post_size_error (GstKosmosGEngine * e, gint w, gint h)
{
  gint step = gst_kosmosg_engine_size_multiple (e);

  GST_ELEMENT_ERROR (e->element, CORE, NEGOTIATION,
      ("Unsupported output size %dx%d: width and height must be multiples "
          "of %d for this model", w, h, step), ("downstream asked for %dx%d",
          w, h));
}

GstCaps *
gst_kosmosg_engine_intersect_caps (GstKosmosGEngine * e, GstCaps * downstream)
{
  GstCaps *caps = gst_kosmosg_engine_src_caps (e, downstream);
  const GstStructure *st;
  gint w = 0, h = 0;

  if (!gst_caps_is_empty (caps))
    return caps;
  gst_caps_unref (caps);
  if (gst_kosmosg_cuda_refuse (e, downstream))
    return NULL;
  st = gst_caps_is_empty (downstream) ? NULL :
      gst_caps_get_structure (downstream, 0);
  if (st && gst_structure_get_int (st, "width", &w)
      && gst_structure_get_int (st, "height", &h))
    post_size_error (e, w, h);
  else
    GST_ELEMENT_ERROR (e->element, CORE, NEGOTIATION,
        ("Downstream accepts no output the model can make"),
        ("downstream: %" GST_PTR_FORMAT, downstream));
  return NULL;
}

gboolean
gst_kosmosg_output_info_from_caps (GstKosmosGEngine * e, GstCaps * caps,
    GstVideoInfo * info)
{
  gint w, h, step = gst_kosmosg_engine_size_multiple (e);

  if (!gst_video_info_from_caps (info, caps)) {
    GST_ELEMENT_ERROR (e->element, CORE, NEGOTIATION,
        ("Unusable output caps"), ("%" GST_PTR_FORMAT, caps));
    return FALSE;
  }
  w = GST_VIDEO_INFO_WIDTH (info);
  h = GST_VIDEO_INFO_HEIGHT (info);
  if (w % step == 0 && h % step == 0)
    return gst_kosmosg_cuda_set_output (e, caps, info);
  post_size_error (e, w, h);
  return FALSE;
}

/* GST_MESSAGE_PROGRESS code "generate": what gst-launch-1.0 prints. Every
 * START is closed by COMPLETE, CANCELED or ERROR, as gst-launch waits for
 * that before it sets a prerolled pipeline to PLAYING. */
static void
post_generate_progress (GstKosmosGEngine * e, GstProgressType type,
    const gchar * text, gint step, gint total)
{
  GstMessage *msg = gst_message_new_progress (GST_OBJECT (e->element), type,
      "generate", text);

  if (total > 0)
    gst_structure_set (gst_message_writable_structure (msg),
        "step", G_TYPE_UINT, (guint) step, "num-steps", G_TYPE_UINT,
        (guint) total, NULL);
  gst_element_post_message (e->element, msg);
}

static void
on_progress (void *user, kg_stage stage, int step, int total)
{
  ProgressCtx *ctx = user;
  GstStructure *st;
  gchar *text;

  if (!ctx->post || stage != KG_STAGE_DENOISE)
    return;
  text = g_strdup_printf ("Denoising step %d of %d", step, total);
  post_generate_progress (ctx->e, GST_PROGRESS_TYPE_CONTINUE, text, step,
      total);
  g_free (text);
  st = gst_structure_new ("kosmosg-progress",
      "step", G_TYPE_UINT, (guint) step,
      "num-steps", G_TYPE_UINT, (guint) total,
      "image", G_TYPE_UINT, 0u,
      "elapsed", G_TYPE_UINT64,
      (guint64) (g_get_monotonic_time () - ctx->start_us) * GST_USECOND,
      NULL);
  gst_element_post_message (ctx->e->element,
      gst_message_new_element (GST_OBJECT (ctx->e->element), st));
}

static void
post_generate_error (GstKosmosGEngine * e, const kg_error * err, gint width,
    gint height)
{
  switch (err->code) {
    case KG_ERR_PROMPT:
      /* the engine names the cause (too many tokens for the model, a text
       * the tokenizer refuses); placeholder counts are checked before */
      GST_ELEMENT_ERROR (e->element, LIBRARY, SETTINGS,
          ("Unusable prompt: %s", err->msg), ("%s", kg_status_name (err->code)));
      break;
    case KG_ERR_IMAGE:
      GST_ELEMENT_ERROR (e->element, STREAM, FORMAT,
          ("Unsupported %s image: %s", g_str_has_prefix (err->msg, "control")
              ? "control" : "reference", err->msg), ("%s", err->msg));
      break;
    case KG_ERR_NOMEM:
      GST_ELEMENT_ERROR (e->element, RESOURCE, NO_SPACE_LEFT,
          ("Not enough memory to generate a %dx%d image", width, height),
          ("%s", err->msg));
      break;
    default:
      GST_ELEMENT_ERROR (e->element, STREAM, FAILED,
          ("Image generation failed"), ("%s: %s", kg_status_name (err->code),
              err->msg));
      break;
  }
}

GstFlowReturn
gst_kosmosg_engine_generate (GstKosmosGEngine * e,
    const GstKosmosGSettings * s, const kg_image * images, gint n_images,
    const kg_control * controls, gint n_controls, gint width, gint height,
    kg_output * out, gboolean * latency_changed)
{
  kg_params p;
  kg_error err = { 0 };
  kg_status st;
  kg_lora_ref *loras = NULL;
  int n_loras = 0;
  ProgressCtx ctx = { e, s->post_messages, g_get_monotonic_time () };
  GstClockTime took, old, est;
  gint placeholders;

  *latency_changed = FALSE;
  memset (out, 0, sizeof *out);
  if (!s->prompt) {
    GST_ELEMENT_ERROR (e->element, LIBRARY, SETTINGS, ("No prompt set"),
        ("set the prompt property"));
    return GST_FLOW_ERROR;
  }
  placeholders = gst_kosmosg_count_placeholders (s->prompt);
  if (placeholders != n_images) {
    GST_ELEMENT_ERROR (e->element, LIBRARY, SETTINGS,
        ("The prompt has %d \"<i>\" placeholder%s but %d reference image%s "
            "%s connected", placeholders, placeholders == 1 ? "" : "s",
            n_images, n_images == 1 ? "" : "s", n_images == 1 ? "is" : "are"),
        ("prompt: \"%s\"", s->prompt));
    return GST_FLOW_ERROR;
  }

  {
    gint mult = kg_model_size_multiple (gst_kosmosg_model_get (e->model));
    if (width % mult || height % mult) {
      GST_ELEMENT_ERROR (e->element, CORE, NEGOTIATION,
          ("Unsupported output size %dx%d for this model", width, height),
          ("width and height must be multiples of %d", mult));
      return GST_FLOW_NOT_NEGOTIATED;
    }
  }

  if (kg_lora_list_parse (s->loras, &loras, &n_loras, &err) != KG_OK) {
    GST_ELEMENT_ERROR (e->element, LIBRARY, SETTINGS,
        ("Invalid loras property: %s", err.msg), ("loras: \"%s\"", s->loras));
    return GST_FLOW_ERROR;
  }

  kg_params_init (&p);
  p.loras = loras;
  p.n_loras = n_loras;
  p.prompt = s->prompt;
  p.negative_prompt = s->negative_prompt;
  p.images = images;
  p.n_images = n_images;
  p.controls = controls;
  p.n_controls = n_controls;
  p.steps = (int) s->steps;
  p.guidance_scale = (float) s->guidance_scale;
  p.seed = s->seed;
  p.num_images = (int) s->num_images;
  p.scheduler = s->scheduler;
  p.width = width;
  p.height = height;
  p.cancel = (const volatile int *) &e->cancel;

  GST_DEBUG_OBJECT (e->element, "generating %ux %dx%d, %u steps, %d images: "
      "\"%s\"", s->num_images, width, height, s->steps, n_images, s->prompt);
  if (!g_atomic_int_compare_and_exchange (&e->busy, 0, 1)) {
    free (loras);
    GST_ELEMENT_ERROR (e->element, CORE, FAILED,
        ("Internal error: a second generation started while one runs"),
        ("one kg_session never runs two generations at once"));
    return GST_FLOW_ERROR;
  }
  if (s->post_messages) {
    gchar *text = g_strdup_printf ("Generating %u %dx%d image%s in %u steps",
        s->num_images, width, height, s->num_images == 1 ? "" : "s", s->steps);

    post_generate_progress (e, GST_PROGRESS_TYPE_START, text, 0, 0);
    g_free (text);
  }
  if (!gst_kosmosg_cuda_prepare (e, &p, p.num_images)) {
    g_atomic_int_set (&e->busy, 0);
    free (loras);
    if (s->post_messages)
      post_generate_progress (e, GST_PROGRESS_TYPE_ERROR,
          "Generation failed", 0, 0);
    return GST_FLOW_ERROR;
  }
  st = kg_generate (e->session, &p, on_progress, NULL, &ctx, out, &err);
  gst_kosmosg_cuda_finish (e, st == KG_OK);
  g_atomic_int_set (&e->busy, 0);
  free (loras);
  if (st == KG_ERR_CANCELLED) {
    GST_DEBUG_OBJECT (e->element, "generation cancelled: %s", err.msg);
    if (s->post_messages)
      post_generate_progress (e, GST_PROGRESS_TYPE_CANCELED,
          "Generation cancelled", 0, 0);
    return GST_FLOW_FLUSHING;
  }
  if (st != KG_OK) {
    if (s->post_messages)
      post_generate_progress (e, GST_PROGRESS_TYPE_ERROR,
          "Generation failed", 0, 0);
    post_generate_error (e, &err, width, height);
    return GST_FLOW_ERROR;
  }
  if (s->post_messages)
    post_generate_progress (e, GST_PROGRESS_TYPE_COMPLETE, "Generated", 0, 0);

  took = (GstClockTime) (g_get_monotonic_time () - ctx.start_us) * GST_USECOND;
  GST_OBJECT_LOCK (e->element);
  old = e->estimate;
  est = old ? (3 * old + took) / 4 : took;
  e->estimate = est;
  GST_OBJECT_UNLOCK (e->element);
  *latency_changed = old == 0 || est > old + old / 5 || est < old - old / 5;

  if (s->post_messages) {
    GstStructure *done = gst_structure_new ("kosmosg-done",
        "seed", G_TYPE_INT64, (gint64) out->seed,
        "num-steps", G_TYPE_UINT, s->steps,
        "num-images", G_TYPE_UINT, (guint) out->n,
        "encode-time", G_TYPE_UINT64,
        (guint64) (out->seconds_encode * GST_SECOND),
        "denoise-time", G_TYPE_UINT64,
        (guint64) (out->seconds_denoise * GST_SECOND),
        "decode-time", G_TYPE_UINT64,
        (guint64) (out->seconds_decode * GST_SECOND),
        "prompt", G_TYPE_STRING, s->prompt,
        NULL);
    gst_element_post_message (e->element,
        gst_message_new_element (GST_OBJECT (e->element), done));
  }
  return GST_FLOW_OK;
}

static GstBuffer *
copy_to_system_memory (const kg_output * out, gint index,
    const GstVideoInfo * info)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (info),
      NULL);
  const gsize row = (gsize) out->width * 3;
  const guint8 *src = out->rgb + (gsize) index * row * out->height;
  gboolean rgba = GST_VIDEO_INFO_FORMAT (info) == GST_VIDEO_FORMAT_RGBA;
  GstVideoFrame frame;

  if (!gst_video_frame_map (&frame, (GstVideoInfo *) info, buf,
          GST_MAP_WRITE)) {
    gst_buffer_unref (buf);
    return NULL;
  }
  for (gint y = 0; y < out->height; y++) {
    guint8 *dst = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame, 0)
        + (gsize) y * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0);
    const guint8 *s_row = src + (gsize) y * row;

    if (!rgba) {
      memcpy (dst, s_row, row);
      continue;
    }
    for (gint x = 0; x < out->width; x++) {
      dst[4 * x + 0] = s_row[3 * x + 0];
      dst[4 * x + 1] = s_row[3 * x + 1];
      dst[4 * x + 2] = s_row[3 * x + 2];
      dst[4 * x + 3] = 255;
    }
  }
  gst_video_frame_unmap (&frame);
  return buf;
}

GstBuffer *
gst_kosmosg_make_buffer (GstKosmosGEngine * e, const kg_output * out,
    gint index, const GstVideoInfo * info, const GstKosmosGSettings * s)
{
  GstBuffer *buf;
  GstCustomMeta *meta;

  if (gst_kosmosg_cuda_output_on_device (e))
    buf = gst_kosmosg_cuda_take_buffer (e, index);
  else
    buf = copy_to_system_memory (out, index, info);
  if (!buf)
    return NULL;
  meta = gst_buffer_add_custom_meta (buf, GST_KOSMOSG_META_NAME);
  if (meta)
    gst_structure_set (gst_custom_meta_get_structure (meta),
        "prompt", G_TYPE_STRING, s->prompt,
        "negative-prompt", G_TYPE_STRING, s->negative_prompt,
        "seed", G_TYPE_INT64, (gint64) out->seed,
        "num-inference-steps", G_TYPE_UINT, s->steps,
        "guidance-scale", G_TYPE_DOUBLE, s->guidance_scale,
        "scheduler", G_TYPE_STRING, kg_scheduler_type_name (s->scheduler),
        "image-index", G_TYPE_UINT, (guint) index, NULL);
  return buf;
}
