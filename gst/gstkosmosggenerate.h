/* GStreamer Kosmos-G plugin
 * Copyright (C) 2026 kosmosg-gst authors
 *
 * This library is free software; you can redistribute it and/or
 * modify it under the terms of the GNU Library General Public
 * License as published by the Free Software Foundation; either
 * version 2.1 of the License, or (at your option) any later version.
 */
/* gstkosmosggenerate.h - the prompt-only generation loop that kosmosgsrc
 * and kosmosgfilter's text-only mode share: a batch generated from a
 * snapshot of the element's settings (progress messages and cancellation
 * between steps come from gst_kosmosg_engine_generate), handed out as
 * stamped buffers one at a time. Streaming thread only, except where a
 * function says otherwise. */
#ifndef __GST_KOSMOSG_GENERATE_H__
#define __GST_KOSMOSG_GENERATE_H__

#include "gstkosmosgcommon.h"

G_BEGIN_DECLS

typedef struct
{
  kg_output out;                /* the batch being handed out */
  GstKosmosGSettings settings;  /* the settings it was made with */
  gint next;                    /* next image of out */
  /* PTS of the next image: the timeline never goes back except through
   * gst_kosmosg_generator_reset (start, seek) */
  GstClockTime next_pts;
  /* read under the element's object lock with its settings, written by
   * the streaming thread under it too */
  gboolean generated_once;
  guint generated_serial;       /* settings.prompt_serial of the last batch */
} GstKosmosGGenerator;

void gst_kosmosg_generator_init (GstKosmosGGenerator * g);
void gst_kosmosg_generator_clear (GstKosmosGGenerator * g);
/* Drops the batch and starts again at pts, with nothing generated yet. */
void gst_kosmosg_generator_reset (GstKosmosGGenerator * g, GstClockTime pts);
/* Images of the batch not handed out yet. */
gint gst_kosmosg_generator_pending (const GstKosmosGGenerator * g);
/* Whether the current prompt has not been generated yet. Caller holds the
 * element's object lock (settings are the element's). */
gboolean gst_kosmosg_generator_prompt_is_new (const GstKosmosGGenerator * g,
    const GstKosmosGSettings * settings);

/* Generates a batch from the prompt alone with the element's settings
 * (copied under its object lock after controlled properties were synced
 * at sync_time, unless that is GST_CLOCK_TIME_NONE), size from info.
 * Returns what gst_kosmosg_engine_generate returns (GST_FLOW_FLUSHING when
 * cancelled); the prompt counts as generated once the batch is made (a
 * cancelled one is made again). */
GstFlowReturn gst_kosmosg_generator_run (GstKosmosGGenerator * g,
    GstKosmosGEngine * e, const GstKosmosGSettings * settings,
    const GstVideoInfo * info, GstClockTime sync_time,
    gboolean * latency_changed);

/* The next image as a buffer in info's format: PTS pts, or the end of the
 * previous image when pts is earlier or GST_CLOCK_TIME_NONE; duration one
 * frame (none at framerate 0/1); offset its index in the batch. NULL after
 * posting an error when no buffer could be written. */
GstBuffer *gst_kosmosg_generator_pop (GstKosmosGGenerator * g,
    GstKosmosGEngine * e, const GstVideoInfo * info, GstClockTime pts);

G_END_DECLS

#endif /* __GST_KOSMOSG_GENERATE_H__ */
