/* GStreamer Kosmos-G plugin
 * Copyright (C) 2026 kosmosg-gst authors
 *
 * This library is free software; you can redistribute it and/or
 * modify it under the terms of the GNU Library General Public
 * License as published by the Free Software Foundation; either
 * version 2.1 of the License, or (at your option) any later version.
 */
/* gstkosmosgcuda.h - CUDA memory for both elements: output caps
 * video/x-raw(memory:CUDAMemory) when the model runs on CUDA and downstream
 * takes it, the pipeline's GstCudaContext shared through need-context /
 * have-context and context queries, and buffers the engine writes on the
 * device (kg_params.device_out). Built with -Dgst-cuda (gstreamer-cuda-1.0);
 * without it the same functions keep everything in system memory and
 * explain the refusal when downstream wants CUDA memory only. */
#ifndef __GST_KOSMOSG_CUDA_H__
#define __GST_KOSMOSG_CUDA_H__

#include <gst/gst.h>
#include <gst/video/video.h>

#include "kosmosg.h"

G_BEGIN_DECLS

typedef struct _GstKosmosGEngine GstKosmosGEngine;
typedef struct _GstKosmosGCuda GstKosmosGCuda;

#define GST_KOSMOSG_CUDA_FEATURE "memory:CUDAMemory"

/* Sink caps from the fields of one structure: system memory first, then,
 * with gst-cuda, the same in CUDA memory, which the filter maps for reading
 * (gst-cuda downloads it: reference images and control maps are prepared on
 * the host) so a GPU upstream needs no cudadownload in front. */
#ifdef KG_HAVE_GST_CUDA
#define GST_KOSMOSG_SINK_CAPS(fields) \
  "video/x-raw, " fields "; video/x-raw(" GST_KOSMOSG_CUDA_FEATURE "), " fields
#else
#define GST_KOSMOSG_SINK_CAPS(fields) "video/x-raw, " fields
#endif

/* Element class: set_context for the CUDA context (chains up). */
void gst_kosmosg_cuda_class_init (GstElementClass * klass);
/* Allocates e->cuda, owned by the element (freed with it). */
void gst_kosmosg_cuda_init (GstKosmosGEngine * e);
/* After the model loaded (NULL->READY): on the CUDA backend, finds the
 * pipeline's GstCudaContext for the engine's device or makes one around the
 * device's primary context and announces it. Never fails: without a context
 * the output stays in system memory. */
void gst_kosmosg_cuda_open (GstKosmosGEngine * e, gint device_id);
/* READY->NULL: drops the output pool, pending buffers and contexts. */
void gst_kosmosg_cuda_close (GstKosmosGEngine * e);
/* Answers a GST_QUERY_CONTEXT for "gst.cuda.context"; FALSE when not ours. */
gboolean gst_kosmosg_cuda_handle_query (GstKosmosGEngine * e,
    GstQuery * query);

/* Takes the engine's src caps (CUDA memory structures first, as the
 * template) and removes the CUDA memory ones unless the loaded model runs on
 * CUDA with a context; unchanged before the model is loaded. */
GstCaps *gst_kosmosg_cuda_filter_caps (GstKosmosGEngine * e, GstCaps * caps);
/* When downstream accepts CUDA memory only and this element cannot make it,
 * posts CORE/NEGOTIATION saying why and returns TRUE. */
gboolean gst_kosmosg_cuda_refuse (GstKosmosGEngine * e, GstCaps * downstream);
/* The same for the peer of srcpad (kosmosgsrc's negotiate); FALSE after
 * posting the error. */
gboolean gst_kosmosg_cuda_check_peer (GstKosmosGEngine * e, GstPad * srcpad);

/* The negotiated output caps: CUDA memory (a buffer pool on the engine's
 * context) or system memory. FALSE after posting an error. */
gboolean gst_kosmosg_cuda_set_output (GstKosmosGEngine * e, GstCaps * caps,
    const GstVideoInfo * info);
gboolean gst_kosmosg_cuda_output_on_device (GstKosmosGEngine * e);
/* Before kg_generate: with CUDA memory output, n buffers from the pool,
 * mapped for the device, as p->device_out. FALSE after posting an error. */
gboolean gst_kosmosg_cuda_prepare (GstKosmosGEngine * e, kg_params * p,
    gint n);
/* After kg_generate: unmaps; drops the buffers when it failed. */
void gst_kosmosg_cuda_finish (GstKosmosGEngine * e, gboolean ok);
/* Image index of the last generation, as written on the device. */
GstBuffer *gst_kosmosg_cuda_take_buffer (GstKosmosGEngine * e, gint index);

G_END_DECLS

#endif /* __GST_KOSMOSG_CUDA_H__ */
