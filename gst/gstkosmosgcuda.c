/* GStreamer Kosmos-G plugin
 * Copyright (C) 2026 kosmosg-gst authors
 *
 * This library is free software; you can redistribute it and/or
 * modify it under the terms of the GNU Library General Public
 * License as published by the Free Software Foundation; either
 * version 2.1 of the License, or (at your option) any later version.
 */
/* gstkosmosgcuda.c - CUDA memory output (see gstkosmosgcuda.h).
 *
 * Which CUDA context: the engine computes with the CUDA runtime, i.e. in the
 * primary context of its device (cuBLASLt and cuDNN too), and the images are
 * written there by a kernel of the engine (kg_params.device_out,
 * kernels/cuda/image.cu). The output buffers are therefore GstCudaMemory of a
 * GstCudaContext that wraps that primary context
 * (gst_cuda_context_new_wrapped), so the engine writes into them directly and
 * nothing crosses to the host. That context is what this element announces
 * (HAVE_CONTEXT) when the pipeline has none, so the CUDA elements started
 * after it (cudadownload, nvh264enc, ... : a pipeline reaches READY before
 * PAUSED, where they look for a context) share it and take the buffers as
 * they are. When the pipeline already has a GstCudaContext for the device
 * (an application's, or one an nvcodec element made with cuCtxCreate), this
 * element shares it (it answers context queries with it), but still
 * allocates its output in the primary context: a kernel cannot write memory
 * of another CUcontext. GstCudaMemory carries its own context, so those
 * elements still read the buffers correctly (they push the memory's context
 * to copy); only that case may cost them a device-to-device copy.
 *
 * NOT RUN ON A GPU: no session that wrote this had one. Caps negotiation,
 * the fallback to system memory and the context query without a device are
 * tested (tests/test_gst_cuda.c); the device path (context, pool, the
 * engine's kernel writing into GstCudaMemory) is checked by that test's
 * device cases and tests/gpu/run-device-checks.sh when a GPU is lent. */
#include <string.h>

#include "gstkosmosgcommon.h"
#include "gstkosmosgcuda.h"

#ifdef KG_HAVE_GST_CUDA
#include <gmodule.h>
#include <gst/cuda/gstcudabufferpool.h>
#include <gst/cuda/gstcudacontext.h>
#include <gst/cuda/gstcudaloader.h>
#include <gst/cuda/gstcudamemory.h>
#include <gst/cuda/gstcudautils.h>
#endif

GST_DEBUG_CATEGORY_STATIC (kosmosg_cuda_debug);
#define GST_CAT_DEFAULT kosmosg_cuda_debug

struct _GstKosmosGCuda
{
  GstElement *element;
  GMutex lock;                  /* contexts: set_context and queries come from any thread */
#ifdef KG_HAVE_GST_CUDA
  gint device_id;               /* the engine's device; -1 while not on CUDA */
  GstCudaContext *context;      /* the pipeline's, shared (queries answer it) */
  GstCudaContext *primary;      /* the engine's primary context, wrapped: output memory */
  /* streaming thread only */
  gboolean on_device;
  GstBufferPool *pool;
  GstVideoInfo info;
  gint n_pending;
  GstBuffer *pending[KG_MAX_OUTPUTS];
  GstMapInfo map[KG_MAX_OUTPUTS];
  gboolean mapped[KG_MAX_OUTPUTS];
  kg_device_image dev[KG_MAX_OUTPUTS];
#endif
};

static GstElementClass *
parent_element_class (GstElement * element)
{
  return g_type_class_peek_parent (G_OBJECT_GET_CLASS (element));
}

static GQuark
cuda_quark (void)
{
  static GQuark q;

  if (!q)
    q = g_quark_from_static_string ("kosmosg-cuda");
  return q;
}

#ifdef KG_HAVE_GST_CUDA
static GstKosmosGCuda *
cuda_of (GstElement * element)
{
  return g_object_get_qdata (G_OBJECT (element), cuda_quark ());
}
#endif

/* The model runs on CUDA: the only case CUDA memory is offered in. */
static gboolean
engine_on_cuda (GstKosmosGEngine * e)
{
  return e->model
      && kg_model_backend (gst_kosmosg_model_get (e->model)) ==
      KG_BACKEND_CUDA;
}

static void
cuda_free (gpointer data)
{
  GstKosmosGCuda *c = data;

#ifdef KG_HAVE_GST_CUDA
  gst_clear_object (&c->context);
  gst_clear_object (&c->primary);
#endif
  g_mutex_clear (&c->lock);
  g_free (c);
}

void
gst_kosmosg_cuda_init (GstKosmosGEngine * e)
{
  GstKosmosGCuda *c = g_new0 (GstKosmosGCuda, 1);

  c->element = e->element;
  g_mutex_init (&c->lock);
#ifdef KG_HAVE_GST_CUDA
  c->device_id = -1;
  gst_video_info_init (&c->info);
#endif
  e->cuda = c;
  g_object_set_qdata_full (G_OBJECT (e->element), cuda_quark (), c,
      cuda_free);
}

#ifdef KG_HAVE_GST_CUDA
/* cuDevicePrimaryCtxRetain/Release are not in gst-cuda's loader: taken from
 * the same libcuda it loads. */
typedef CUresult (*PrimaryRetainFn) (CUcontext * ctx, CUdevice dev);
typedef CUresult (*PrimaryReleaseFn) (CUdevice dev);

typedef struct
{
  PrimaryReleaseFn release;
  CUdevice dev;
} PrimaryRef;

static void
primary_unref (gpointer data)
{
  PrimaryRef *r = data;

  r->release (r->dev);
  g_free (r);
}

/* A GstCudaContext around the primary context of device_id, which holds a
 * reference on the primary context for as long as it lives. */
static GstCudaContext *
wrap_primary (GstElement * element, gint device_id)
{
  GModule *lib;
  PrimaryRetainFn retain = NULL;
  PrimaryReleaseFn release = NULL;
  CUdevice dev;
  CUcontext ctx;
  GstCudaContext *wrapped;
  PrimaryRef *ref;

  if (!gst_cuda_load_library ()) {
    GST_WARNING_OBJECT (element, "gst-cuda cannot load libcuda");
    return NULL;
  }
  lib = g_module_open ("libcuda.so.1", G_MODULE_BIND_LAZY);
  if (!lib || !g_module_symbol (lib, "cuDevicePrimaryCtxRetain",
          (gpointer *) & retain)
      || !(g_module_symbol (lib, "cuDevicePrimaryCtxRelease_v2",
              (gpointer *) & release)
          || g_module_symbol (lib, "cuDevicePrimaryCtxRelease",
              (gpointer *) & release))) {
    GST_WARNING_OBJECT (element, "libcuda without the primary context API");
    if (lib)
      g_module_close (lib);
    return NULL;
  }
  /* libcuda stays loaded for the process, as gst-cuda keeps it */
  g_module_make_resident (lib);
  if (!gst_cuda_result (CuInit (0))
      || !gst_cuda_result (CuDeviceGet (&dev, device_id))
      || !gst_cuda_result (retain (&ctx, dev))) {
    GST_WARNING_OBJECT (element, "no primary context on CUDA device %d",
        device_id);
    return NULL;
  }
  wrapped = gst_cuda_context_new_wrapped (ctx, dev);
  if (!wrapped) {
    release (dev);
    return NULL;
  }
  ref = g_new (PrimaryRef, 1);
  ref->release = release;
  ref->dev = dev;
  g_object_set_qdata_full (G_OBJECT (wrapped),
      g_quark_from_static_string ("kosmosg-primary-ref"), ref, primary_unref);
  return wrapped;
}

/* The pipeline's context: from downstream, upstream, then the bin or the
 * application (NEED_CONTEXT, answered synchronously through set_context).
 * No lock is held here: each of these may call set_context. */
static void
find_pipeline_context (GstKosmosGCuda * c)
{
  GstElement *element = c->element;
  GstIterator *it;
  GValue v = G_VALUE_INIT;
  gboolean found = FALSE;
  GstPad *src = gst_element_get_static_pad (element, "src");
  GstQuery *q;

  q = gst_query_new_context (GST_CUDA_CONTEXT_TYPE);
  if (src && gst_pad_peer_query (src, q)) {
    GstContext *ctx = NULL;

    gst_query_parse_context (q, &ctx);
    if (ctx)
      gst_element_set_context (element, ctx);
  }
  gst_query_unref (q);
  if (src)
    gst_object_unref (src);

  g_mutex_lock (&c->lock);
  found = c->context != NULL;
  g_mutex_unlock (&c->lock);
  if (found)
    return;

  it = gst_element_iterate_sink_pads (element);
  while (!found && gst_iterator_next (it, &v) == GST_ITERATOR_OK) {
    GstPad *pad = g_value_get_object (&v);

    q = gst_query_new_context (GST_CUDA_CONTEXT_TYPE);
    if (gst_pad_peer_query (pad, q)) {
      GstContext *ctx = NULL;

      gst_query_parse_context (q, &ctx);
      if (ctx)
        gst_element_set_context (element, ctx);
    }
    gst_query_unref (q);
    g_value_reset (&v);
    g_mutex_lock (&c->lock);
    found = c->context != NULL;
    g_mutex_unlock (&c->lock);
  }
  g_value_unset (&v);
  gst_iterator_free (it);
  if (found)
    return;

  gst_element_post_message (element,
      gst_message_new_need_context (GST_OBJECT (element),
          GST_CUDA_CONTEXT_TYPE));
}
#endif

static void
gst_kosmosg_cuda_set_context (GstElement * element, GstContext * context)
{
#ifdef KG_HAVE_GST_CUDA
  GstKosmosGCuda *c = cuda_of (element);

  if (c) {
    GstCudaContext *ctx = NULL;
    gint device_id;

    g_mutex_lock (&c->lock);
    ctx = c->context ? gst_object_ref (c->context) : NULL;
    device_id = c->device_id;
    g_mutex_unlock (&c->lock);
    /* only a context of the engine's device is taken (-1: any, before the
     * model is loaded; open() checks the device again) */
    if (gst_cuda_handle_set_context (element, context, device_id, &ctx)) {
      g_mutex_lock (&c->lock);
      gst_object_replace ((GstObject **) & c->context, (GstObject *) ctx);
      g_mutex_unlock (&c->lock);
    }
    gst_clear_object (&ctx);
  }
#endif
  parent_element_class (element)->set_context (element, context);
}

void
gst_kosmosg_cuda_class_init (GstElementClass * klass)
{
  if (!kosmosg_cuda_debug)
    GST_DEBUG_CATEGORY_INIT (kosmosg_cuda_debug, "kosmosgcuda", 0,
        "Kosmos-G CUDA memory and context");
  klass->set_context = GST_DEBUG_FUNCPTR (gst_kosmosg_cuda_set_context);
}

void
gst_kosmosg_cuda_open (GstKosmosGEngine * e, gint device_id)
{
#ifdef KG_HAVE_GST_CUDA
  GstKosmosGCuda *c = e->cuda;
  GstCudaContext *primary, *shared;
  guint shared_dev = 0;

  if (!engine_on_cuda (e))
    return;
  g_mutex_lock (&c->lock);
  c->device_id = device_id;
  if (c->context) {
    g_object_get (c->context, "cuda-device-id", &shared_dev, NULL);
    if ((gint) shared_dev != device_id)
      gst_clear_object (&c->context);
  }
  g_mutex_unlock (&c->lock);

  primary = wrap_primary (e->element, device_id);
  if (!primary) {
    GST_WARNING_OBJECT (e->element, "no CUDA context for device %d: output "
        "in system memory only", device_id);
    return;
  }
  find_pipeline_context (c);
  g_mutex_lock (&c->lock);
  c->primary = primary;
  if (!c->context)
    c->context = gst_object_ref (primary);
  shared = gst_object_ref (c->context);
  g_mutex_unlock (&c->lock);

  if (shared == primary) {
    GstContext *ctx = gst_context_new_cuda_context (primary);

    GST_INFO_OBJECT (e->element, "announcing the engine's primary CUDA "
        "context of device %d", device_id);
    gst_element_post_message (e->element,
        gst_message_new_have_context (GST_OBJECT (e->element), ctx));
  } else if (gst_cuda_context_get_handle (shared) ==
      gst_cuda_context_get_handle (primary)) {
    GST_INFO_OBJECT (e->element, "the pipeline shares the engine's primary "
        "CUDA context of device %d", device_id);
  } else {
    GST_INFO_OBJECT (e->element, "the pipeline's CUDA context of device %d "
        "is not the primary one the engine computes in: output memory "
        "stays in the primary context", device_id);
  }
  gst_object_unref (shared);
#endif
}

void
gst_kosmosg_cuda_close (GstKosmosGEngine * e)
{
  GstKosmosGCuda *c = e->cuda;

  if (!c)
    return;
#ifdef KG_HAVE_GST_CUDA
  gst_kosmosg_cuda_finish (e, FALSE);
  if (c->pool) {
    gst_buffer_pool_set_active (c->pool, FALSE);
    gst_clear_object (&c->pool);
  }
  c->on_device = FALSE;
  g_mutex_lock (&c->lock);
  c->device_id = -1;
  gst_clear_object (&c->context);
  gst_clear_object (&c->primary);
  g_mutex_unlock (&c->lock);
#endif
}

gboolean
gst_kosmosg_cuda_handle_query (GstKosmosGEngine * e, GstQuery * query)
{
#ifdef KG_HAVE_GST_CUDA
  GstKosmosGCuda *c = e->cuda;
  GstCudaContext *ctx;
  gboolean ret;

  if (GST_QUERY_TYPE (query) != GST_QUERY_CONTEXT || !c)
    return FALSE;
  g_mutex_lock (&c->lock);
  ctx = c->context ? gst_object_ref (c->context) : NULL;
  g_mutex_unlock (&c->lock);
  if (!ctx)
    return FALSE;
  ret = gst_cuda_handle_context_query (e->element, query, ctx);
  gst_object_unref (ctx);
  return ret;
#else
  return FALSE;
#endif
}

static gboolean
has_cuda_context (GstKosmosGEngine * e)
{
#ifdef KG_HAVE_GST_CUDA
  gboolean ret;

  g_mutex_lock (&e->cuda->lock);
  ret = e->cuda->primary != NULL;
  g_mutex_unlock (&e->cuda->lock);
  return ret;
#else
  return FALSE;
#endif
}

static gboolean
structure_is_cuda (GstCaps * caps, guint i)
{
  GstCapsFeatures *f = gst_caps_get_features (caps, i);

  return f && !gst_caps_features_is_any (f)
      && gst_caps_features_contains (f, GST_KOSMOSG_CUDA_FEATURE);
}

GstCaps *
gst_kosmosg_cuda_filter_caps (GstKosmosGEngine * e, GstCaps * caps)
{
  if (!e->model || (engine_on_cuda (e) && has_cuda_context (e)))
    return caps;
  caps = gst_caps_make_writable (caps);
  for (guint i = gst_caps_get_size (caps); i > 0; i--)
    if (structure_is_cuda (caps, i - 1))
      gst_caps_remove_structure (caps, i - 1);
  return caps;
}

gboolean
gst_kosmosg_cuda_refuse (GstKosmosGEngine * e, GstCaps * downstream)
{
  gboolean cuda = FALSE, other = FALSE;
  gchar *why;

  if (!downstream || gst_caps_is_any (downstream)
      || gst_caps_is_empty (downstream))
    return FALSE;
  for (guint i = 0; i < gst_caps_get_size (downstream); i++) {
    if (structure_is_cuda (downstream, i))
      cuda = TRUE;
    else
      other = TRUE;
  }
  if (!cuda || other)
    return FALSE;
#ifndef KG_HAVE_GST_CUDA
  why = g_strdup ("this build of the plugin has no CUDA memory support "
      "(built without gstreamer-cuda-1.0, -Dgst-cuda)");
#else
  if (!e->model)
    return FALSE;
  if (!engine_on_cuda (e)) {
    const gchar *reason =
        kg_model_fallback_reason (gst_kosmosg_model_get (e->model));

    why = reason ? g_strdup_printf ("the model runs on the CPU: backend=auto "
        "found no usable CUDA device (%s)", reason) :
        g_strdup ("the model runs on the CPU (backend=cpu)");
  } else if (!has_cuda_context (e)) {
    why = g_strdup ("no GstCudaContext could be made for the engine's CUDA "
        "device (GST_DEBUG=kosmosgcuda:5 tells why)");
  } else {
    return FALSE;               /* CUDA memory is offered: another mismatch */
  }
#endif
  GST_ELEMENT_ERROR (e->element, CORE, NEGOTIATION,
      ("Downstream accepts only CUDA memory (video/x-raw(memory:CUDAMemory)), "
          "but %s", why), ("downstream: %" GST_PTR_FORMAT, downstream));
  g_free (why);
  return TRUE;
}

gboolean
gst_kosmosg_cuda_check_peer (GstKosmosGEngine * e, GstPad * srcpad)
{
  GstCaps *peer = gst_pad_peer_query_caps (srcpad, NULL);
  gboolean refused = gst_kosmosg_cuda_refuse (e, peer);

  gst_caps_unref (peer);
  return !refused;
}

gboolean
gst_kosmosg_cuda_set_output (GstKosmosGEngine * e, GstCaps * caps,
    const GstVideoInfo * info)
{
  gboolean want = gst_caps_get_size (caps) > 0 && structure_is_cuda (caps, 0);
#ifdef KG_HAVE_GST_CUDA
  GstKosmosGCuda *c = e->cuda;
  GstStructure *config;
  GstCudaContext *primary;

  gst_kosmosg_cuda_finish (e, FALSE);
  if (c->pool) {
    gst_buffer_pool_set_active (c->pool, FALSE);
    gst_clear_object (&c->pool);
  }
  c->on_device = FALSE;
  if (!want)
    return TRUE;
  g_mutex_lock (&c->lock);
  primary = c->primary ? gst_object_ref (c->primary) : NULL;
  g_mutex_unlock (&c->lock);
  if (!engine_on_cuda (e) || !primary) {
    GST_ELEMENT_ERROR (e->element, CORE, NEGOTIATION,
        ("CUDA memory output needs the model on CUDA and a CUDA context"),
        ("caps %" GST_PTR_FORMAT, caps));
    gst_clear_object (&primary);
    return FALSE;
  }
  c->pool = gst_cuda_buffer_pool_new (primary);
  gst_object_unref (primary);
  config = gst_buffer_pool_get_config (c->pool);
  /* num-images buffers per generation, at most KG_MAX_OUTPUTS live */
  gst_buffer_pool_config_set_params (config, caps, GST_VIDEO_INFO_SIZE (info),
      0, 0);
  gst_buffer_pool_config_add_option (config,
      GST_BUFFER_POOL_OPTION_VIDEO_META);
  if (!gst_buffer_pool_set_config (c->pool, config)
      || !gst_buffer_pool_set_active (c->pool, TRUE)) {
    GST_ELEMENT_ERROR (e->element, RESOURCE, NO_SPACE_LEFT,
        ("Could not allocate CUDA memory for the output"),
        ("CUDA buffer pool for %" GST_PTR_FORMAT, caps));
    gst_clear_object (&c->pool);
    return FALSE;
  }
  c->info = *info;
  c->on_device = TRUE;
  GST_INFO_OBJECT (e->element, "output in CUDA memory: %" GST_PTR_FORMAT,
      caps);
  return TRUE;
#else
  if (want) {
    GST_ELEMENT_ERROR (e->element, CORE, NEGOTIATION,
        ("CUDA memory output is not built in (-Dgst-cuda)"),
        ("caps %" GST_PTR_FORMAT, caps));
    return FALSE;
  }
  return TRUE;
#endif
}

gboolean
gst_kosmosg_cuda_output_on_device (GstKosmosGEngine * e)
{
#ifdef KG_HAVE_GST_CUDA
  return e->cuda && e->cuda->on_device;
#else
  return FALSE;
#endif
}

gboolean
gst_kosmosg_cuda_prepare (GstKosmosGEngine * e, kg_params * p, gint n)
{
#ifdef KG_HAVE_GST_CUDA
  GstKosmosGCuda *c = e->cuda;
  GstVideoFormat fmt;

  gst_kosmosg_cuda_finish (e, FALSE);
  if (!c->on_device)
    return TRUE;
  fmt = GST_VIDEO_INFO_FORMAT (&c->info);
  for (gint i = 0; i < n; i++) {
    GstMemory *mem;

    if (gst_buffer_pool_acquire_buffer (c->pool, &c->pending[i], NULL) !=
        GST_FLOW_OK)
      goto fail;
    c->n_pending = i + 1;
    mem = gst_buffer_peek_memory (c->pending[i], 0);
    if (!gst_is_cuda_memory (mem)
        || !gst_memory_map (mem, &c->map[i], GST_MAP_WRITE | GST_MAP_CUDA))
      goto fail;
    c->mapped[i] = TRUE;
    c->dev[i].ptr = (guint64) (guintptr) c->map[i].data;
    c->dev[i].pitch = GST_VIDEO_INFO_PLANE_STRIDE (&GST_CUDA_MEMORY_CAST
        (mem)->info, 0);
    c->dev[i].format = fmt == GST_VIDEO_FORMAT_RGB ? KG_PIX_RGB : KG_PIX_RGBA;
  }
  p->device_out = c->dev;
  return TRUE;
fail:
  gst_kosmosg_cuda_finish (e, FALSE);
  GST_ELEMENT_ERROR (e->element, RESOURCE, NO_SPACE_LEFT,
      ("Could not get CUDA memory for %d output image%s", n,
          n == 1 ? "" : "s"), (NULL));
  return FALSE;
#else
  return TRUE;
#endif
}

void
gst_kosmosg_cuda_finish (GstKosmosGEngine * e, gboolean ok)
{
#ifdef KG_HAVE_GST_CUDA
  GstKosmosGCuda *c = e->cuda;

  for (gint i = 0; i < c->n_pending; i++) {
    if (c->mapped[i])
      gst_memory_unmap (gst_buffer_peek_memory (c->pending[i], 0), &c->map[i]);
    c->mapped[i] = FALSE;
    if (!ok)
      gst_clear_buffer (&c->pending[i]);
  }
  if (!ok)
    c->n_pending = 0;
#endif
}

GstBuffer *
gst_kosmosg_cuda_take_buffer (GstKosmosGEngine * e, gint index)
{
#ifdef KG_HAVE_GST_CUDA
  GstKosmosGCuda *c = e->cuda;
  GstBuffer *buf;

  if (index < 0 || index >= c->n_pending || !c->pending[index])
    return NULL;
  buf = c->pending[index];
  c->pending[index] = NULL;
  GST_LOG_OBJECT (e->element, "image %d written by the engine into CUDA "
      "memory, no host copy", index);
  return buf;
#else
  return NULL;
#endif
}
