/* GStreamer Kosmos-G plugin
 * Copyright (C) 2026 kosmosg-gst authors
 *
 * This library is free software; you can redistribute it and/or
 * modify it under the terms of the GNU Library General Public
 * License as published by the Free Software Foundation; either
 * version 2.1 of the License, or (at your option) any later version.
 */
#include <string.h>

#include "gstkosmosggenerate.h"

void
gst_kosmosg_generator_init (GstKosmosGGenerator * g)
{
  memset (g, 0, sizeof *g);
  gst_kosmosg_settings_init (&g->settings);
}

static void
drop_batch (GstKosmosGGenerator * g)
{
  kg_output_free (&g->out);
  memset (&g->out, 0, sizeof g->out);
  gst_kosmosg_settings_clear (&g->settings);
  g->next = 0;
}

void
gst_kosmosg_generator_clear (GstKosmosGGenerator * g)
{
  drop_batch (g);
}

void
gst_kosmosg_generator_reset (GstKosmosGGenerator * g, GstClockTime pts)
{
  drop_batch (g);
  g->generated_once = FALSE;
  g->next_pts = GST_CLOCK_TIME_IS_VALID (pts) ? pts : 0;
}

gint
gst_kosmosg_generator_pending (const GstKosmosGGenerator * g)
{
  return g->out.n - g->next;
}

gboolean
gst_kosmosg_generator_prompt_is_new (const GstKosmosGGenerator * g,
    const GstKosmosGSettings * settings)
{
  return !g->generated_once || settings->prompt_serial != g->generated_serial;
}

GstFlowReturn
gst_kosmosg_generator_run (GstKosmosGGenerator * g, GstKosmosGEngine * e,
    const GstKosmosGSettings * settings, const GstVideoInfo * info,
    GstClockTime sync_time, gboolean * latency_changed)
{
  GstKosmosGSettings s;
  GstFlowReturn ret;

  drop_batch (g);
  if (GST_CLOCK_TIME_IS_VALID (sync_time))
    gst_object_sync_values (GST_OBJECT (e->element), sync_time);
  GST_OBJECT_LOCK (e->element);
  gst_kosmosg_settings_copy (&s, settings);
  GST_OBJECT_UNLOCK (e->element);

  ret = gst_kosmosg_engine_generate (e, &s, NULL, 0, NULL, 0,
      GST_VIDEO_INFO_WIDTH (info), GST_VIDEO_INFO_HEIGHT (info), &g->out,
      latency_changed);
  if (ret != GST_FLOW_OK) {
    drop_batch (g);
    gst_kosmosg_settings_clear (&s);
    return ret;
  }
  GST_OBJECT_LOCK (e->element);
  g->generated_once = TRUE;
  g->generated_serial = s.prompt_serial;
  GST_OBJECT_UNLOCK (e->element);
  g->settings = s;
  return GST_FLOW_OK;
}

GstBuffer *
gst_kosmosg_generator_pop (GstKosmosGGenerator * g, GstKosmosGEngine * e,
    const GstVideoInfo * info, GstClockTime pts)
{
  GstBuffer *buf;
  GstClockTime duration = GST_CLOCK_TIME_NONE;

  g_return_val_if_fail (g->next < g->out.n, NULL);
  buf = gst_kosmosg_make_buffer (e, &g->out, g->next, info, &g->settings);
  if (!buf) {
    GST_ELEMENT_ERROR (e->element, RESOURCE, WRITE,
        ("Could not write an output image"),
        ("mapping a %" G_GSIZE_FORMAT " byte buffer failed",
            GST_VIDEO_INFO_SIZE (info)));
    return NULL;
  }
  if (GST_VIDEO_INFO_FPS_N (info) > 0 && GST_VIDEO_INFO_FPS_D (info) > 0)
    duration = gst_util_uint64_scale_int (GST_SECOND,
        GST_VIDEO_INFO_FPS_D (info), GST_VIDEO_INFO_FPS_N (info));
  if (GST_CLOCK_TIME_IS_VALID (pts) && pts > g->next_pts)
    g->next_pts = pts;
  GST_BUFFER_PTS (buf) = g->next_pts;
  GST_BUFFER_DURATION (buf) = duration;
  GST_BUFFER_OFFSET (buf) = g->next;
  if (GST_CLOCK_TIME_IS_VALID (duration))
    g->next_pts += duration;
  g->next++;
  return buf;
}
