/* GStreamer Kosmos-G plugin
 * Copyright (C) 2026 kosmosg-gst authors
 *
 * This library is free software; you can redistribute it and/or
 * modify it under the terms of the GNU Library General Public
 * License as published by the Free Software Foundation; either
 * version 2.1 of the License, or (at your option) any later version.
 */
/**
 * SECTION:element-kosmosgfilter
 * @title: kosmosgfilter
 * @see_also: kosmosgsrc
 *
 * Generates images with Kosmos-G from a prompt and reference images. Every
 * request pad `sink_%u` carries one reference image, bound to the `<i>`
 * placeholders of #GstKosmosGFilter:prompt in pad order (or in the order of
 * the pads' `index` property). A pad keeps its last image after EOS, so still
 * images work: a new generation starts whenever a new set of references or a
 * new prompt arrives, and the element sends EOS after the last generation
 * once every pad is EOS. With no sink pad and a prompt without placeholders
 * when it starts (READY->PAUSED), it generates one batch from the prompt
 * alone and then sends EOS (text-only mode); with placeholders and no pad
 * yet, it waits for the pads (decodebin and uridecodebin add them after
 * PAUSED).
 *
 * The output size comes from the caps (512x512 unless downstream asks for
 * another size that is a multiple of 8 and that the model can make).
 *
 * Element messages (when #GstKosmosGFilter:post-messages is TRUE):
 * `kosmosg-progress` (step, num-steps, image, elapsed) after every denoising
 * step, `kosmosg-done` (seed, num-steps, num-images, encode-time,
 * denoise-time, decode-time, prompt) after every generation. Model loading
 * (NULL->READY) is reported with GST_MESSAGE_PROGRESS code "model-load".
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 filesrc location=cat.png ! pngdec ! \
 *     kosmosgfilter model-location=kosmosg.safetensors prompt="<i> in the snow" ! \
 *     pngenc ! filesink location=out.png
 * ]|
 */
#include <string.h>

#include "gstkosmosgfilter.h"
#include "gstkosmosgcommon.h"

GST_DEBUG_CATEGORY_STATIC (kosmosg_filter_debug);
#define GST_CAT_DEFAULT kosmosg_filter_debug

/* ---- the sink pad ---- */

struct _GstKosmosGFilterPad
{
  GstAggregatorPad parent;

  gint index;                   /* object lock */
  /* the reference image, kept after EOS; aggregate thread, cleared by
   * flush/stop under the pad's object lock */
  GstBuffer *last;
  GstVideoInfo last_info;
  GstVideoInfo info;            /* current caps; aggregate thread */
  gboolean fresh;               /* last not used by a generation yet */
};

enum
{
  PROP_PAD_0,
  PROP_PAD_INDEX,
};

#define DEFAULT_PAD_INDEX (-1)

G_DEFINE_TYPE (GstKosmosGFilterPad, gst_kosmosg_filter_pad,
    GST_TYPE_AGGREGATOR_PAD);

static void
gst_kosmosg_filter_pad_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstKosmosGFilterPad *pad = GST_KOSMOSG_FILTER_PAD (object);

  switch (prop_id) {
    case PROP_PAD_INDEX:
      GST_OBJECT_LOCK (pad);
      pad->index = g_value_get_int (value);
      GST_OBJECT_UNLOCK (pad);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
}

static void
gst_kosmosg_filter_pad_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstKosmosGFilterPad *pad = GST_KOSMOSG_FILTER_PAD (object);

  switch (prop_id) {
    case PROP_PAD_INDEX:
      GST_OBJECT_LOCK (pad);
      g_value_set_int (value, pad->index);
      GST_OBJECT_UNLOCK (pad);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
}

static void
gst_kosmosg_filter_pad_clear (GstKosmosGFilterPad * pad)
{
  GST_OBJECT_LOCK (pad);
  gst_clear_buffer (&pad->last);
  pad->fresh = FALSE;
  GST_OBJECT_UNLOCK (pad);
}

static GstFlowReturn
gst_kosmosg_filter_pad_flush (GstAggregatorPad * aggpad, GstAggregator * agg)
{
  gst_kosmosg_filter_pad_clear (GST_KOSMOSG_FILTER_PAD (aggpad));
  return GST_FLOW_OK;
}

static void
gst_kosmosg_filter_pad_finalize (GObject * object)
{
  gst_clear_buffer (&GST_KOSMOSG_FILTER_PAD (object)->last);
  G_OBJECT_CLASS (gst_kosmosg_filter_pad_parent_class)->finalize (object);
}

static void
gst_kosmosg_filter_pad_class_init (GstKosmosGFilterPadClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstAggregatorPadClass *aggpad_class = GST_AGGREGATOR_PAD_CLASS (klass);

  gobject_class->set_property = gst_kosmosg_filter_pad_set_property;
  gobject_class->get_property = gst_kosmosg_filter_pad_get_property;
  gobject_class->finalize = gst_kosmosg_filter_pad_finalize;

  /**
   * GstKosmosGFilterPad:index:
   *
   * Position of this pad's image among the prompt's `<i>` placeholders
   * (0 = first); -1 uses the pad number. Pads are bound in ascending order.
   */
  g_object_class_install_property (gobject_class, PROP_PAD_INDEX,
      g_param_spec_int ("index", "Index",
          "Position of this pad's image among the prompt's <i> placeholders "
          "(-1: the pad number)", -1, G_MAXINT, DEFAULT_PAD_INDEX,
          G_PARAM_READWRITE | GST_PARAM_MUTABLE_PLAYING |
          G_PARAM_STATIC_STRINGS));

  aggpad_class->flush = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_pad_flush);
}

static void
gst_kosmosg_filter_pad_init (GstKosmosGFilterPad * pad)
{
  pad->index = DEFAULT_PAD_INDEX;
  gst_video_info_init (&pad->info);
  gst_video_info_init (&pad->last_info);
}

/* ---- the element ---- */

struct _GstKosmosGFilter
{
  GstAggregator parent;

  GstKosmosGSettings settings;  /* object lock */
  GstKosmosGEngine engine;

  /* aggregate thread (or the text-only thread) */
  GstVideoInfo out_info;
  gboolean generated_once;
  guint generated_serial;       /* settings.prompt_serial of the last generation */
  GstClockTime last_pts;

  /* bumped by every FLUSH_START and text-only seek: a generation that saw
   * it change drops its result even when the flush ended before the cancel
   * flag was read */
  volatile gint flush_seq;

  /* Text-only mode: no sink pad and a prompt without placeholders when the
   * src pad activates. GstAggregator only aggregates once a sink pad has
   * data, so for that activation the src pad's task runs text_only_loop
   * instead of the aggregator's loop: both only ever run on that one task,
   * so nothing can start a second generation on the session meanwhile. */
  gboolean text_only;           /* object lock; set while the src pad is active */
  /* src pad stream lock */
  GstSegment text_segment;
  gboolean text_started;        /* stream-start and caps pushed */
  gboolean text_need_segment;
  guint32 text_seqnum;
  GstPadActivateModeFunction agg_src_activate_mode;
};

enum
{
  PROP_0,
  PROP_COMMON_FIRST,
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink_%u",
    GST_PAD_SINK,
    GST_PAD_REQUEST,
    GST_STATIC_CAPS ("video/x-raw, "
        "format = (string) { RGB, RGBA, RGBx, BGR, BGRA, BGRx, GRAY8 }, "
        "width = (int) [ 1, 65536 ], height = (int) [ 1, 65536 ], "
        "framerate = (fraction) [ 0/1, MAX ]"));

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_KOSMOSG_SRC_CAPS));

static void gst_kosmosg_filter_child_proxy_init (gpointer g_iface,
    gpointer iface_data);

#define gst_kosmosg_filter_parent_class parent_class
G_DEFINE_TYPE_WITH_CODE (GstKosmosGFilter, gst_kosmosg_filter,
    GST_TYPE_AGGREGATOR, G_IMPLEMENT_INTERFACE (GST_TYPE_CHILD_PROXY,
        gst_kosmosg_filter_child_proxy_init));
GST_ELEMENT_REGISTER_DEFINE (kosmosgfilter, "kosmosgfilter", GST_RANK_NONE,
    GST_TYPE_KOSMOSG_FILTER);

static void
gst_kosmosg_filter_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (object);
  gint n_refs;

  if (prop_id < PROP_COMMON_FIRST
      || prop_id >= PROP_COMMON_FIRST + GST_KOSMOSG_N_PROPS) {
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    return;
  }
  GST_OBJECT_LOCK (self);
  n_refs = (gint) GST_ELEMENT (self)->numsinkpads;
  GST_OBJECT_UNLOCK (self);
  gst_kosmosg_set_property (GST_ELEMENT (self), &self->settings,
      prop_id - PROP_COMMON_FIRST, value, n_refs);
}

static void
gst_kosmosg_filter_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (object);

  if (prop_id < PROP_COMMON_FIRST
      || prop_id >= PROP_COMMON_FIRST + GST_KOSMOSG_N_PROPS) {
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    return;
  }
  GST_OBJECT_LOCK (self);
  gst_kosmosg_settings_get (&self->settings, prop_id - PROP_COMMON_FIRST,
      value);
  GST_OBJECT_UNLOCK (self);
}

static void
gst_kosmosg_filter_finalize (GObject * object)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (object);

  gst_kosmosg_engine_close (&self->engine);
  gst_kosmosg_settings_clear (&self->settings);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static guint
pad_number (GstPad * pad)
{
  const gchar *name = GST_PAD_NAME (pad);

  return (guint) g_ascii_strtoull (name + strlen ("sink_"), NULL, 10);
}

static gint
compare_pads (gconstpointer a, gconstpointer b)
{
  GstKosmosGFilterPad *pa = (GstKosmosGFilterPad *) a;
  GstKosmosGFilterPad *pb = (GstKosmosGFilterPad *) b;
  gint ia, ib;
  guint na = pad_number (GST_PAD (pa)), nb = pad_number (GST_PAD (pb));

  GST_OBJECT_LOCK (pa);
  ia = pa->index;
  GST_OBJECT_UNLOCK (pa);
  GST_OBJECT_LOCK (pb);
  ib = pb->index;
  GST_OBJECT_UNLOCK (pb);
  if (ia < 0)
    ia = (gint) MIN (na, (guint) G_MAXINT);
  if (ib < 0)
    ib = (gint) MIN (nb, (guint) G_MAXINT);
  if (ia != ib)
    return ia < ib ? -1 : 1;
  return na < nb ? -1 : (na > nb ? 1 : 0);
}

/* The sink pads in placeholder order, each with a reference. */
static GList *
sorted_sink_pads (GstKosmosGFilter * self)
{
  GList *pads;

  GST_OBJECT_LOCK (self);
  pads = g_list_copy (GST_ELEMENT (self)->sinkpads);
  for (GList * l = pads; l; l = l->next)
    gst_object_ref (l->data);
  GST_OBJECT_UNLOCK (self);
  return g_list_sort (pads, compare_pads);
}

static gboolean
to_kg_format (GstVideoFormat f, kg_pixel_format * out)
{
  switch (f) {
    case GST_VIDEO_FORMAT_RGB:
      *out = KG_PIX_RGB;
      return TRUE;
    case GST_VIDEO_FORMAT_RGBA:
      *out = KG_PIX_RGBA;
      return TRUE;
    case GST_VIDEO_FORMAT_RGBx:
      *out = KG_PIX_RGBX;
      return TRUE;
    case GST_VIDEO_FORMAT_BGR:
      *out = KG_PIX_BGR;
      return TRUE;
    case GST_VIDEO_FORMAT_BGRA:
      *out = KG_PIX_BGRA;
      return TRUE;
    case GST_VIDEO_FORMAT_BGRx:
      *out = KG_PIX_BGRX;
      return TRUE;
    case GST_VIDEO_FORMAT_GRAY8:
      *out = KG_PIX_GRAY8;
      return TRUE;
    default:
      return FALSE;
  }
}

static GstClockTime
output_duration (const GstVideoInfo * info)
{
  if (GST_VIDEO_INFO_FPS_N (info) <= 0 || GST_VIDEO_INFO_FPS_D (info) <= 0)
    return GST_CLOCK_TIME_NONE;
  return gst_util_uint64_scale_int (GST_SECOND, GST_VIDEO_INFO_FPS_D (info),
      GST_VIDEO_INFO_FPS_N (info));
}

/* Runs one generation and pushes its images; pts is the running time of
 * the newest reference. The frames stay mapped by the caller. A generation
 * cancelled by a flush or a stop returns GST_FLOW_FLUSHING. */
static GstFlowReturn
generate_and_push (GstKosmosGFilter * self, const kg_image * images,
    gint n_images, GstClockTime pts, gboolean text_only)
{
  GstAggregator *agg = GST_AGGREGATOR (self);
  GstKosmosGSettings s;
  kg_output out;
  GstFlowReturn ret;
  gboolean latency_changed;
  GstClockTime duration = output_duration (&self->out_info);
  gint seq = g_atomic_int_get (&self->flush_seq);
  GstClockTime stream_time;

  GST_OBJECT_LOCK (self);
  stream_time = gst_segment_to_stream_time (&GST_AGGREGATOR_PAD
      (agg->srcpad)->segment, GST_FORMAT_TIME, pts);
  GST_OBJECT_UNLOCK (self);
  if (GST_CLOCK_TIME_IS_VALID (stream_time))
    gst_object_sync_values (GST_OBJECT (self), stream_time);

  GST_OBJECT_LOCK (self);
  gst_kosmosg_settings_copy (&s, &self->settings);
  GST_OBJECT_UNLOCK (self);

  ret = gst_kosmosg_engine_generate (&self->engine, &s, images, n_images,
      GST_VIDEO_INFO_WIDTH (&self->out_info),
      GST_VIDEO_INFO_HEIGHT (&self->out_info), &out, &latency_changed);
  self->generated_once = TRUE;
  self->generated_serial = s.prompt_serial;
  if (ret == GST_FLOW_FLUSHING || (ret == GST_FLOW_OK
          && g_atomic_int_get (&self->flush_seq) != seq)) {
    GST_DEBUG_OBJECT (self, "generation cancelled by a flush or stop");
    kg_output_free (&out);
    gst_kosmosg_settings_clear (&s);
    return GST_FLOW_FLUSHING;
  }
  if (ret != GST_FLOW_OK) {
    gst_kosmosg_settings_clear (&s);
    return ret;
  }
  if (latency_changed && !text_only) {
    GstClockTime est;

    GST_OBJECT_LOCK (self);
    est = self->engine.estimate;
    GST_OBJECT_UNLOCK (self);
    gst_aggregator_set_latency (agg, est, GST_CLOCK_TIME_NONE);
  }

  if (!GST_CLOCK_TIME_IS_VALID (pts) || pts < self->last_pts)
    pts = self->last_pts;
  for (gint i = 0; i < out.n && ret == GST_FLOW_OK; i++) {
    GstBuffer *buf = gst_kosmosg_make_buffer (&out, i, &self->out_info, &s);

    if (!buf) {
      GST_ELEMENT_ERROR (self, RESOURCE, WRITE, ("Could not write an output "
              "image"), ("mapping a %" G_GSIZE_FORMAT " byte buffer failed",
              GST_VIDEO_INFO_SIZE (&self->out_info)));
      ret = GST_FLOW_ERROR;
      break;
    }
    GST_BUFFER_PTS (buf) = pts;
    GST_BUFFER_DURATION (buf) = duration;
    GST_BUFFER_OFFSET (buf) = i;
    self->last_pts = pts;
    if (GST_CLOCK_TIME_IS_VALID (duration))
      pts += duration;
    GST_OBJECT_LOCK (self);
    GST_AGGREGATOR_PAD (agg->srcpad)->segment.position = self->last_pts;
    GST_OBJECT_UNLOCK (self);
    if (text_only)
      ret = gst_pad_push (agg->srcpad, buf);
    else
      ret = gst_aggregator_finish_buffer (agg, buf);
  }
  kg_output_free (&out);
  gst_kosmosg_settings_clear (&s);
  return ret;
}

static GstFlowReturn
gst_kosmosg_filter_aggregate (GstAggregator * agg, gboolean timeout)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (agg);
  GList *pads = sorted_sink_pads (self), *l;
  guint n = g_list_length (pads), i = 0;
  gboolean all_have = TRUE, any_fresh = FALSE, all_eos = TRUE;
  gboolean prompt_changed;
  GstClockTime pts = GST_CLOCK_TIME_NONE;
  GstFlowReturn ret = GST_FLOW_OK;
  kg_image *images = g_new0 (kg_image, MAX (n, 1));
  GstVideoFrame *frames = g_new0 (GstVideoFrame, MAX (n, 1));
  GstBuffer **refs = g_new0 (GstBuffer *, MAX (n, 1));
  GstVideoInfo *infos = g_new0 (GstVideoInfo, MAX (n, 1));
  guint mapped = 0;
  /* a pad at EOS that never had an image: it can never get one (until a
   * flush), so waiting for it would wait forever */
  GstKosmosGFilterPad *missing = NULL;
  gboolean live = GST_CLOCK_TIME_IS_VALID (gst_aggregator_get_latency (agg));

  for (l = pads; l; l = l->next) {
    GstKosmosGFilterPad *pad = l->data;
    GstAggregatorPad *aggpad = GST_AGGREGATOR_PAD (pad);
    GstBuffer *buf;
    gboolean pad_eos;

    /* live: only the newest image counts, older queued ones are stale;
     * not live: every image is a reference set of its own */
    while ((buf = gst_aggregator_pad_pop_buffer (aggpad))) {
      GstClockTime rt;

      GST_OBJECT_LOCK (pad);
      gst_buffer_replace (&pad->last, buf);
      pad->last_info = pad->info;
      pad->fresh = TRUE;
      rt = gst_segment_to_running_time (&aggpad->segment, GST_FORMAT_TIME,
          GST_BUFFER_PTS (buf));
      GST_OBJECT_UNLOCK (pad);
      if (GST_CLOCK_TIME_IS_VALID (rt)
          && (!GST_CLOCK_TIME_IS_VALID (pts) || rt > pts))
        pts = rt;
      gst_buffer_unref (buf);
      if (!live)
        break;
    }
    pad_eos = gst_aggregator_pad_is_eos (aggpad)
        && !gst_aggregator_pad_has_buffer (aggpad);
    all_eos &= pad_eos;
    /* a ref, as a flush may clear pad->last from upstream's thread */
    GST_OBJECT_LOCK (pad);
    if (pad->last) {
      refs[i] = gst_buffer_ref (pad->last);
      infos[i] = pad->last_info;
    }
    any_fresh |= pad->fresh;
    GST_OBJECT_UNLOCK (pad);
    if (!refs[i]) {
      all_have = FALSE;
      if (!missing && pad_eos)
        missing = pad;
    }
    i++;
  }

  GST_OBJECT_LOCK (self);
  prompt_changed = !self->generated_once
      || self->settings.prompt_serial != self->generated_serial;
  GST_OBJECT_UNLOCK (self);

  if (all_have && (any_fresh || prompt_changed)) {
    for (l = pads, i = 0; l; l = l->next, i++) {
      GstKosmosGFilterPad *pad = l->data;
      kg_pixel_format fmt;

      if (!to_kg_format (GST_VIDEO_INFO_FORMAT (&infos[i]), &fmt)
          || !gst_video_frame_map (&frames[i], &infos[i], refs[i],
              GST_MAP_READ)) {
        GST_ELEMENT_ERROR (self, STREAM, FAILED,
            ("Could not read the reference image on pad %s",
                GST_PAD_NAME (pad)), ("format %s",
                gst_video_format_to_string (GST_VIDEO_INFO_FORMAT
                    (&infos[i]))));
        ret = GST_FLOW_ERROR;
        goto done;
      }
      mapped++;
      images[i].format = fmt;
      images[i].width = GST_VIDEO_FRAME_WIDTH (&frames[i]);
      images[i].height = GST_VIDEO_FRAME_HEIGHT (&frames[i]);
      images[i].stride = (size_t) GST_VIDEO_FRAME_PLANE_STRIDE (&frames[i], 0);
      images[i].data = GST_VIDEO_FRAME_PLANE_DATA (&frames[i], 0);
      GST_OBJECT_LOCK (pad);
      pad->fresh = FALSE;
      GST_OBJECT_UNLOCK (pad);
    }
    ret = generate_and_push (self, images, (gint) n, pts, FALSE);
    /* the aggregator stops its task by itself when a flush or a stop
     * cancelled the generation; FLUSHING here would mark the pads flushing
     * even after a flush that is already over */
    if (ret == GST_FLOW_FLUSHING)
      ret = GST_FLOW_OK;
  } else if (missing) {
    GST_ELEMENT_ERROR (self, STREAM, FAILED,
        ("Pad %s reached end-of-stream without a reference image",
            GST_PAD_NAME (missing)), (NULL));
    ret = GST_FLOW_ERROR;
  }

done:
  for (i = 0; i < mapped; i++)
    gst_video_frame_unmap (&frames[i]);
  for (i = 0; i < n; i++)
    gst_clear_buffer (&refs[i]);
  g_free (refs);
  g_free (infos);
  g_free (frames);
  g_free (images);
  g_list_free_full (pads, gst_object_unref);
  if (ret == GST_FLOW_OK && all_eos) {
    GST_DEBUG_OBJECT (self, "all pads are EOS, done");
    return GST_FLOW_EOS;
  }
  return ret;
}

static gboolean
gst_kosmosg_filter_sink_event (GstAggregator * agg, GstAggregatorPad * aggpad,
    GstEvent * event)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (agg);
  GstKosmosGFilterPad *pad = GST_KOSMOSG_FILTER_PAD (aggpad);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_FLUSH_START:
      g_atomic_int_inc (&self->flush_seq);
      gst_kosmosg_engine_set_cancel (&self->engine, TRUE);
      break;
    case GST_EVENT_FLUSH_STOP:
      gst_kosmosg_engine_set_cancel (&self->engine, FALSE);
      break;
    case GST_EVENT_CAPS:{
      GstCaps *caps;
      GstVideoInfo info;

      gst_event_parse_caps (event, &caps);
      if (!gst_video_info_from_caps (&info, caps)) {
        GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
            ("Unsupported reference image caps on pad %s",
                GST_PAD_NAME (pad)), ("%" GST_PTR_FORMAT, caps));
        gst_event_unref (event);
        return FALSE;
      }
      pad->info = info;
      break;
    }
    default:
      break;
  }
  return GST_AGGREGATOR_CLASS (parent_class)->sink_event (agg, aggpad, event);
}

static GstCaps *
gst_kosmosg_filter_fixate_src_caps (GstAggregator * agg, GstCaps * caps)
{
  return gst_kosmosg_fixate_src_caps (caps);
}

static gboolean
gst_kosmosg_filter_negotiated_src_caps (GstAggregator * agg, GstCaps * caps)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (agg);
  GstVideoInfo info;

  if (!gst_kosmosg_output_info_from_caps (GST_ELEMENT (self), caps, &info))
    return FALSE;
  self->out_info = info;
  return GST_AGGREGATOR_CLASS (parent_class)->negotiated_src_caps (agg, caps);
}

static gboolean
gst_kosmosg_filter_start (GstAggregator * agg)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (agg);

  self->generated_once = FALSE;
  self->last_pts = 0;
  gst_video_info_init (&self->out_info);
  gst_kosmosg_engine_set_cancel (&self->engine, FALSE);
  return TRUE;
}

static gboolean
gst_kosmosg_filter_stop (GstAggregator * agg)
{
  GList *l;

  GList *pads = sorted_sink_pads (GST_KOSMOSG_FILTER (agg));

  for (l = pads; l; l = l->next)
    gst_kosmosg_filter_pad_clear (l->data);
  g_list_free_full (pads, gst_object_unref);
  return TRUE;
}

/* ---- text-only mode (see the instance struct) ---- */

static gboolean
want_text_only (GstKosmosGFilter * self)
{
  gboolean ret;

  GST_OBJECT_LOCK (self);
  ret = GST_ELEMENT (self)->sinkpads == NULL
      && gst_kosmosg_count_placeholders (self->settings.prompt) == 0;
  GST_OBJECT_UNLOCK (self);
  return ret;
}

static gboolean
is_text_only (GstKosmosGFilter * self)
{
  gboolean ret;

  GST_OBJECT_LOCK (self);
  ret = self->text_only;
  GST_OBJECT_UNLOCK (self);
  return ret;
}

/* Stream-start and caps once per activation, a segment after every seek:
 * the aggregator's own negotiation only runs from its loop. */
static gboolean
text_only_push_events (GstKosmosGFilter * self)
{
  GstPad *srcpad = GST_AGGREGATOR_SRC_PAD (self);
  GstEvent *ev;

  if (!self->text_started) {
    GstCaps *templ = gst_pad_get_pad_template_caps (srcpad);
    GstCaps *caps = gst_pad_peer_query_caps (srcpad, templ);
    gchar *stream_id;

    gst_caps_unref (templ);
    if (gst_caps_is_empty (caps)) {
      gst_caps_unref (caps);
      GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
          ("Downstream accepts none of the output formats"), (NULL));
      return FALSE;
    }
    caps = gst_kosmosg_fixate_src_caps (caps);
    if (!gst_kosmosg_output_info_from_caps (GST_ELEMENT (self), caps,
            &self->out_info)) {
      gst_caps_unref (caps);
      return FALSE;
    }
    stream_id = gst_pad_create_stream_id (srcpad, GST_ELEMENT (self), "text");
    gst_pad_push_event (srcpad, gst_event_new_stream_start (stream_id));
    g_free (stream_id);
    if (!gst_pad_push_event (srcpad, gst_event_new_caps (caps))) {
      GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
          ("Downstream refused %" GST_PTR_FORMAT, caps), (NULL));
      gst_caps_unref (caps);
      return FALSE;
    }
    gst_caps_unref (caps);
    self->text_started = TRUE;
  }
  if (self->text_need_segment) {
    ev = gst_event_new_segment (&self->text_segment);
    gst_event_set_seqnum (ev, self->text_seqnum);
    gst_pad_push_event (srcpad, ev);
    self->text_need_segment = FALSE;
  }
  return TRUE;
}

/* The src pad's task in text-only mode: one batch, then EOS and pause. A
 * seek restarts it. */
static void
text_only_loop (gpointer data)
{
  GstKosmosGFilter *self = data;
  GstPad *srcpad = GST_AGGREGATOR_SRC_PAD (self);
  gint seq = g_atomic_int_get (&self->flush_seq);
  GstFlowReturn ret = GST_FLOW_NOT_NEGOTIATED;
  GstEvent *eos;

  if (text_only_push_events (self)) {
    self->last_pts = self->text_segment.start;
    ret = generate_and_push (self, NULL, 0, self->text_segment.start, TRUE);
  }
  if (ret == GST_FLOW_FLUSHING || g_atomic_int_get (&self->flush_seq) != seq) {
    /* a seek (which restarts the task) or a stop */
    gst_pad_pause_task (srcpad);
    return;
  }
  if (ret == GST_FLOW_NOT_LINKED || ret < GST_FLOW_EOS)
    GST_ELEMENT_FLOW_ERROR (self, ret);
  eos = gst_event_new_eos ();
  gst_event_set_seqnum (eos, self->text_seqnum);
  gst_pad_push_event (srcpad, eos);
  gst_pad_pause_task (srcpad);
}

/* A seek on a generator: cancel the generation in progress between two
 * steps, then generate again from the current settings, the new image
 * stamped at the seek position in a new segment (also after EOS). */
static gboolean
text_only_seek (GstKosmosGFilter * self, GstEvent * event)
{
  GstPad *srcpad = GST_AGGREGATOR_SRC_PAD (self);
  gdouble rate;
  GstFormat format;
  GstSeekFlags flags;
  GstSeekType start_type, stop_type;
  gint64 start, stop;
  guint32 seqnum = gst_event_get_seqnum (event);
  gboolean flush, ok = FALSE;
  GstEvent *ev;

  gst_event_parse_seek (event, &rate, &format, &flags, &start_type, &start,
      &stop_type, &stop);
  gst_event_unref (event);
  if (format != GST_FORMAT_TIME || rate <= 0.0) {
    GST_DEBUG_OBJECT (self, "refusing a %s seek at rate %f",
        gst_format_get_name (format), rate);
    return FALSE;
  }
  flush = (flags & GST_SEEK_FLAG_FLUSH) != 0;
  if (flush) {
    ev = gst_event_new_flush_start ();
    gst_event_set_seqnum (ev, seqnum);
    gst_pad_push_event (srcpad, ev);
  }
  g_atomic_int_inc (&self->flush_seq);
  gst_kosmosg_engine_set_cancel (&self->engine, TRUE);
  /* returns once the task is out of kg_generate (the next step boundary) */
  gst_pad_pause_task (srcpad);

  GST_PAD_STREAM_LOCK (srcpad);
  if (flush) {
    ev = gst_event_new_flush_stop (TRUE);
    gst_event_set_seqnum (ev, seqnum);
    gst_pad_push_event (srcpad, ev);
  }
  gst_kosmosg_engine_set_cancel (&self->engine, FALSE);
  if (gst_segment_do_seek (&self->text_segment, rate, format, flags,
          start_type, start, stop_type, stop, NULL)) {
    self->text_need_segment = TRUE;
    self->text_seqnum = seqnum;
    ok = TRUE;
  }
  /* a deactivated pad stays flushing: then the stop wins */
  if (is_text_only (self) && !GST_PAD_IS_FLUSHING (srcpad))
    ok = gst_pad_start_task (srcpad, text_only_loop, self, NULL) && ok;
  GST_PAD_STREAM_UNLOCK (srcpad);
  return ok;
}

static gboolean
gst_kosmosg_filter_src_activate_mode (GstPad * pad, GstObject * parent,
    GstPadMode mode, gboolean active)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (parent);

  if (active && mode == GST_PAD_MODE_PUSH && want_text_only (self)) {
    GST_DEBUG_OBJECT (self, "no sink pad and no placeholder: text-only");
    GST_OBJECT_LOCK (self);
    self->text_only = TRUE;
    GST_OBJECT_UNLOCK (self);
    gst_segment_init (&self->text_segment, GST_FORMAT_TIME);
    self->text_started = FALSE;
    self->text_need_segment = TRUE;
    self->text_seqnum = gst_util_seqnum_next ();
    gst_kosmosg_engine_set_cancel (&self->engine, FALSE);
    return gst_pad_start_task (pad, text_only_loop, self, NULL);
  }
  if (!active && is_text_only (self)) {
    gboolean ok;

    gst_kosmosg_engine_set_cancel (&self->engine, TRUE);
    ok = gst_pad_stop_task (pad);
    GST_OBJECT_LOCK (self);
    self->text_only = FALSE;
    GST_OBJECT_UNLOCK (self);
    return ok;
  }
  return self->agg_src_activate_mode (pad, parent, mode, active);
}

static gboolean
gst_kosmosg_filter_src_event (GstAggregator * agg, GstEvent * event)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (agg);

  if (GST_EVENT_TYPE (event) == GST_EVENT_SEEK && is_text_only (self))
    return text_only_seek (self, event);
  return GST_AGGREGATOR_CLASS (parent_class)->src_event (agg, event);
}

static GstPad *
gst_kosmosg_filter_request_new_pad (GstElement * element,
    GstPadTemplate * templ, const gchar * name, const GstCaps * caps)
{
  GstPad *pad = GST_ELEMENT_CLASS (parent_class)->request_new_pad (element,
      templ, name, caps);

  if (!pad)
    return NULL;
  if (is_text_only (GST_KOSMOSG_FILTER (element)))
    GST_ELEMENT_WARNING (element, CORE, PAD,
        ("Pad %s is used from the next start: kosmosgfilter is generating "
            "from the prompt alone, as it had no sink pad when it started",
            GST_PAD_NAME (pad)), (NULL));
  gst_child_proxy_child_added (GST_CHILD_PROXY (element), G_OBJECT (pad),
      GST_OBJECT_NAME (pad));
  return pad;
}

static void
gst_kosmosg_filter_release_pad (GstElement * element, GstPad * pad)
{
  gchar *name = gst_pad_get_name (pad);

  /* the element's reference goes with the pad */
  gst_object_ref (pad);
  GST_ELEMENT_CLASS (parent_class)->release_pad (element, pad);
  gst_child_proxy_child_removed (GST_CHILD_PROXY (element), G_OBJECT (pad),
      name);
  gst_object_unref (pad);
  g_free (name);
}

/* GstChildProxy: the sink pads are children, so `sink_0::index=1` works
 * from gst-launch (set once the pad is requested, through child-added). */
static GObject *
gst_kosmosg_filter_child_proxy_get_child_by_index (GstChildProxy * proxy,
    guint index)
{
  GObject *obj;

  GST_OBJECT_LOCK (proxy);
  obj = g_list_nth_data (GST_ELEMENT_CAST (proxy)->sinkpads, index);
  if (obj)
    gst_object_ref (obj);
  GST_OBJECT_UNLOCK (proxy);
  return obj;
}

static guint
gst_kosmosg_filter_child_proxy_get_children_count (GstChildProxy * proxy)
{
  guint count;

  GST_OBJECT_LOCK (proxy);
  count = GST_ELEMENT_CAST (proxy)->numsinkpads;
  GST_OBJECT_UNLOCK (proxy);
  return count;
}

static void
gst_kosmosg_filter_child_proxy_init (gpointer g_iface, gpointer iface_data)
{
  GstChildProxyInterface *iface = g_iface;

  iface->get_child_by_index = gst_kosmosg_filter_child_proxy_get_child_by_index;
  iface->get_children_count = gst_kosmosg_filter_child_proxy_get_children_count;
}

static GstStateChangeReturn
gst_kosmosg_filter_change_state (GstElement * element,
    GstStateChange transition)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (element);
  GstStateChangeReturn ret;

  switch (transition) {
    case GST_STATE_CHANGE_NULL_TO_READY:{
      GstKosmosGSettings s;
      gboolean ok;

      GST_OBJECT_LOCK (self);
      gst_kosmosg_settings_copy (&s, &self->settings);
      GST_OBJECT_UNLOCK (self);
      ok = gst_kosmosg_engine_open (&self->engine, &s);
      gst_kosmosg_settings_clear (&s);
      if (!ok)
        return GST_STATE_CHANGE_FAILURE;
      break;
    }
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      /* before chaining up: deactivating the src pad waits for its task */
      gst_kosmosg_engine_set_cancel (&self->engine, TRUE);
      break;
    default:
      break;
  }

  ret = GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);

  switch (transition) {
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      gst_kosmosg_engine_set_cancel (&self->engine, FALSE);
      break;
    case GST_STATE_CHANGE_READY_TO_NULL:
      gst_kosmosg_engine_close (&self->engine);
      break;
    default:
      break;
  }
  return ret;
}

static void
gst_kosmosg_filter_class_init (GstKosmosGFilterClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstAggregatorClass *agg_class = GST_AGGREGATOR_CLASS (klass);

  gobject_class->set_property = gst_kosmosg_filter_set_property;
  gobject_class->get_property = gst_kosmosg_filter_get_property;
  gobject_class->finalize = gst_kosmosg_filter_finalize;
  gst_kosmosg_install_properties (gobject_class, PROP_COMMON_FIRST);

  gst_element_class_set_static_metadata (element_class,
      "Kosmos-G image generator", "Filter/Editor/Video",
      "Generates images from a prompt with <i> placeholders and reference "
      "images (Kosmos-G)", "kosmosg-gst authors");
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &sink_template, GST_TYPE_KOSMOSG_FILTER_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &src_template, GST_TYPE_AGGREGATOR_PAD);

  element_class->change_state =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_change_state);
  element_class->request_new_pad =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_request_new_pad);
  element_class->release_pad =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_release_pad);
  agg_class->src_event = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_src_event);
  agg_class->aggregate = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_aggregate);
  agg_class->sink_event = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_sink_event);
  agg_class->fixate_src_caps =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_fixate_src_caps);
  agg_class->negotiated_src_caps =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_negotiated_src_caps);
  agg_class->start = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_start);
  agg_class->stop = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_stop);

  gst_type_mark_as_plugin_api (GST_TYPE_KOSMOSG_FILTER_PAD, 0);
  GST_DEBUG_CATEGORY_INIT (kosmosg_filter_debug, "kosmosgfilter", 0,
      "Kosmos-G image generator");
}

static void
gst_kosmosg_filter_init (GstKosmosGFilter * self)
{
  GstPad *srcpad = GST_AGGREGATOR_SRC_PAD (self);

  gst_kosmosg_settings_init (&self->settings);
  gst_kosmosg_engine_init (&self->engine, GST_ELEMENT (self));
  gst_video_info_init (&self->out_info);
  gst_segment_init (&self->text_segment, GST_FORMAT_TIME);
  self->agg_src_activate_mode = GST_PAD_ACTIVATEMODEFUNC (srcpad);
  gst_pad_set_activatemode_function (srcpad,
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_src_activate_mode));
}
