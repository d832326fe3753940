/* GStreamer Kosmos-G plugin
 * Copyright (C) 2026 kosmosg-gst authors
 *
 * This library is free software; you can redistribute it and/or
 * modify it under the terms of the GNU Library General Public
 * License as published by the Free Software Foundation; either
 * version 2.1 of the License, or (at your option) any later version.
 */
/**
 * SECTION:element-kosmosgsrc
 * @title: kosmosgsrc
 * @see_also: kosmosgfilter
 *
 * Generates images with Kosmos-G from a text prompt alone. Not live (the
 * default), it produces #GstKosmosGSrc:num-images images and then EOS; a
 * seek cancels the generation in progress between two denoising steps and
 * generates again, the images stamped from the seek position in a new
 * segment (also after EOS). Downstream may ask for a framerate: images are
 * then one frame apart.
 *
 * With #GstKosmosGSrc:is-live it produces a new batch whenever the prompt or
 * the negative prompt changes. Each image is stamped with the running time
 * at which its generation started (its "capture" time); the minimum latency
 * is the running average of a generation (a LATENCY message when it moves),
 * the framerate 0/1 (images come at no fixed rate: put videorate after the
 * element for one), and a live source is not seekable. QoS events reporting
 * late images raise the latency by their lateness (see the element
 * documentation, docs/elements.md).
 *
 * The messages are those of kosmosgfilter.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 kosmosgsrc model-location=kosmosg.safetensors \
 *     prompt="a red bicycle by the sea" ! pngenc ! filesink location=out.png
 * ]|
 */
#include "gstkosmosgsrc.h"
#include "gstkosmosgcommon.h"
#include "gstkosmosggenerate.h"

GST_DEBUG_CATEGORY_STATIC (kosmosg_src_debug);
#define GST_CAT_DEFAULT kosmosg_src_debug

struct _GstKosmosGSrc
{
  GstPushSrc parent;

  /* object lock; cond is signalled on prompt changes and unlock */
  GstKosmosGSettings settings;
  gboolean is_live;
  gboolean unlocked;
  GCond cond;
  /* live: the latency QoS events showed to be needed (the reported one
   * plus an image's lateness); object lock, cleared at start */
  GstClockTime qos_latency;

  GstKosmosGEngine engine;

  /* streaming thread */
  GstVideoInfo out_info;
  GstKosmosGGenerator gen;
  GstClockTime batch_rt;        /* running time when the batch started */
};

enum
{
  PROP_0,
  PROP_IS_LIVE,
  PROP_COMMON_FIRST,
};

#define DEFAULT_IS_LIVE FALSE

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_KOSMOSG_SRC_CAPS));

#define gst_kosmosg_src_parent_class parent_class
G_DEFINE_TYPE (GstKosmosGSrc, gst_kosmosg_src, GST_TYPE_PUSH_SRC);
GST_ELEMENT_REGISTER_DEFINE (kosmosgsrc, "kosmosgsrc", GST_RANK_NONE,
    GST_TYPE_KOSMOSG_SRC);

static void
gst_kosmosg_src_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (object);

  if (prop_id == PROP_IS_LIVE) {
    GST_OBJECT_LOCK (self);
    self->is_live = g_value_get_boolean (value);
    GST_OBJECT_UNLOCK (self);
    gst_base_src_set_live (GST_BASE_SRC (self), g_value_get_boolean (value));
    return;
  }
  if (prop_id < PROP_COMMON_FIRST
      || prop_id >= PROP_COMMON_FIRST + GST_KOSMOSG_N_PROPS) {
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    return;
  }
  gst_kosmosg_set_property (GST_ELEMENT (self), &self->settings,
      prop_id - PROP_COMMON_FIRST, value, 0);
  GST_OBJECT_LOCK (self);
  g_cond_broadcast (&self->cond);
  GST_OBJECT_UNLOCK (self);
}

static void
gst_kosmosg_src_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (object);

  if (prop_id == PROP_IS_LIVE) {
    GST_OBJECT_LOCK (self);
    g_value_set_boolean (value, self->is_live);
    GST_OBJECT_UNLOCK (self);
    return;
  }
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
gst_kosmosg_src_finalize (GObject * object)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (object);

  gst_kosmosg_generator_clear (&self->gen);
  gst_kosmosg_engine_close (&self->engine);
  gst_kosmosg_settings_clear (&self->settings);
  g_cond_clear (&self->cond);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static GstCaps *
gst_kosmosg_src_fixate (GstBaseSrc * bsrc, GstCaps * caps)
{
  return gst_kosmosg_fixate_src_caps (caps);
}

/* Live, images come when the prompt changes, at no fixed rate: framerate
 * 0/1 (variable), as live sources without a frame clock report it. */
static GstCaps *
gst_kosmosg_src_get_caps (GstBaseSrc * bsrc, GstCaps * filter)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (bsrc);
  GstCaps *caps = gst_kosmosg_engine_src_caps (&self->engine, NULL), *tmp;
  gboolean live;

  GST_OBJECT_LOCK (self);
  live = self->is_live;
  GST_OBJECT_UNLOCK (self);
  if (live) {
    caps = gst_caps_make_writable (caps);
    for (guint i = 0; i < gst_caps_get_size (caps); i++)
      gst_structure_set (gst_caps_get_structure (caps, i), "framerate",
          GST_TYPE_FRACTION, 0, 1, NULL);
  }
  if (!filter)
    return caps;
  tmp = gst_caps_intersect_full (filter, caps, GST_CAPS_INTERSECT_FIRST);
  gst_caps_unref (caps);
  return tmp;
}

static gboolean
gst_kosmosg_src_set_caps (GstBaseSrc * bsrc, GstCaps * caps)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (bsrc);
  GstVideoInfo info;

  if (!gst_kosmosg_output_info_from_caps (&self->engine, caps, &info))
    return FALSE;
  self->out_info = info;
  return TRUE;
}

/* a downstream that takes CUDA memory only is refused with the reason */
static gboolean
gst_kosmosg_src_negotiate (GstBaseSrc * bsrc)
{
  if (!gst_kosmosg_cuda_check_peer (&GST_KOSMOSG_SRC (bsrc)->engine,
          GST_BASE_SRC_PAD (bsrc)))
    return FALSE;
  return GST_BASE_SRC_CLASS (parent_class)->negotiate (bsrc);
}

static gboolean
gst_kosmosg_src_start (GstBaseSrc * bsrc)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (bsrc);

  gst_kosmosg_generator_reset (&self->gen, 0);
  GST_OBJECT_LOCK (self);
  self->qos_latency = 0;
  GST_OBJECT_UNLOCK (self);
  gst_video_info_init (&self->out_info);
  gst_kosmosg_engine_set_cancel (&self->engine, FALSE);
  return TRUE;
}

static gboolean
gst_kosmosg_src_stop (GstBaseSrc * bsrc)
{
  gst_kosmosg_generator_clear (&GST_KOSMOSG_SRC (bsrc)->gen);
  return TRUE;
}

static gboolean
gst_kosmosg_src_unlock (GstBaseSrc * bsrc)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (bsrc);

  gst_kosmosg_engine_set_cancel (&self->engine, TRUE);
  GST_OBJECT_LOCK (self);
  self->unlocked = TRUE;
  g_cond_broadcast (&self->cond);
  GST_OBJECT_UNLOCK (self);
  return TRUE;
}

static gboolean
gst_kosmosg_src_unlock_stop (GstBaseSrc * bsrc)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (bsrc);

  GST_OBJECT_LOCK (self);
  self->unlocked = FALSE;
  GST_OBJECT_UNLOCK (self);
  gst_kosmosg_engine_set_cancel (&self->engine, FALSE);
  return TRUE;
}

/* Live: an image is stamped when its generation starts and is ready one
 * generation later, so the minimum latency is the running estimate of a
 * generation (0 before the first), raised by what QoS showed; the maximum
 * is unbounded, as nothing is lost while downstream waits (the prompt
 * stays). Not live: no latency. Object lock held. */
static GstClockTime
live_latency_locked (GstKosmosGSrc * self)
{
  return MAX (self->engine.estimate, self->qos_latency);
}

static gboolean
gst_kosmosg_src_query (GstBaseSrc * bsrc, GstQuery * query)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (bsrc);

  if (gst_kosmosg_cuda_handle_query (&self->engine, query))
    return TRUE;
  if (GST_QUERY_TYPE (query) == GST_QUERY_LATENCY) {
    gboolean live;
    GstClockTime min;

    GST_OBJECT_LOCK (self);
    live = self->is_live;
    min = live ? live_latency_locked (self) : 0;
    GST_OBJECT_UNLOCK (self);
    GST_DEBUG_OBJECT (self, "latency: live %d, min %" GST_TIME_FORMAT, live,
        GST_TIME_ARGS (min));
    gst_query_set_latency (query, live, min, GST_CLOCK_TIME_NONE);
    return TRUE;
  }
  return GST_BASE_SRC_CLASS (parent_class)->query (bsrc, query);
}

/* QoS from downstream (a sink with qos=true). Live: a positive jitter
 * means an image reached the sink that long after its running time plus
 * the pipeline latency, i.e. generations now take longer than the latency
 * reported: it is raised by that much and a LATENCY message makes the
 * pipeline take it, so later images are shown late instead of dropped
 * (until the next start). A generator cannot catch up by skipping work:
 * it only ever generates the newest prompt anyway. Not live: ignored (the
 * images carry stream times; skipping would lose images asked for). */
static gboolean
gst_kosmosg_src_event (GstBaseSrc * bsrc, GstEvent * event)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (bsrc);

  if (GST_EVENT_TYPE (event) == GST_EVENT_QOS) {
    GstQOSType type;
    gdouble proportion;
    GstClockTimeDiff jitter;
    GstClockTime timestamp, latency = GST_CLOCK_TIME_NONE;

    gst_event_parse_qos (event, &type, &proportion, &jitter, &timestamp);
    GST_OBJECT_LOCK (self);
    if (self->is_live && jitter > 0 && type != GST_QOS_TYPE_THROTTLE) {
      latency = live_latency_locked (self) + (GstClockTime) jitter;
      self->qos_latency = latency;
    }
    GST_OBJECT_UNLOCK (self);
    if (GST_CLOCK_TIME_IS_VALID (latency)) {
      GST_INFO_OBJECT (self, "image at %" GST_TIME_FORMAT " was %"
          GST_TIME_FORMAT " late: latency raised to %" GST_TIME_FORMAT,
          GST_TIME_ARGS (timestamp), GST_TIME_ARGS (jitter),
          GST_TIME_ARGS (latency));
      gst_element_post_message (GST_ELEMENT (self),
          gst_message_new_latency (GST_OBJECT (self)));
    }
  }
  return GST_BASE_SRC_CLASS (parent_class)->event (bsrc, event);
}

/* Seeks (not live): a generator has no media to seek in; a seek cancels
 * the generation in progress between two steps (basesrc's flush calls
 * unlock) and starts again from the current settings, num-images images
 * stamped from the seek position in a new segment, then EOS, also after
 * EOS. Live sources are not seekable. */
static gboolean
gst_kosmosg_src_is_seekable (GstBaseSrc * bsrc)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (bsrc);
  gboolean live;

  GST_OBJECT_LOCK (self);
  live = self->is_live;
  GST_OBJECT_UNLOCK (self);
  return !live;
}

/* With the stream lock: create() is not running. */
static gboolean
gst_kosmosg_src_do_seek (GstBaseSrc * bsrc, GstSegment * segment)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (bsrc);

  /* basesrc's default only seeks to 0 */
  if (segment->format != GST_FORMAT_TIME || segment->rate < 0.0
      || !GST_CLOCK_TIME_IS_VALID (segment->start))
    return FALSE;
  segment->time = segment->start;
  GST_DEBUG_OBJECT (self, "seek: generating again from %" GST_TIME_FORMAT,
      GST_TIME_ARGS (segment->start));
  gst_kosmosg_generator_reset (&self->gen, segment->start);
  return TRUE;
}

static GstClockTime
clock_running_time (GstKosmosGSrc * self)
{
  GstClock *clock = gst_element_get_clock (GST_ELEMENT (self));
  GstClockTime now, base;

  if (!clock)
    return GST_CLOCK_TIME_NONE;
  now = gst_clock_get_time (clock);
  base = gst_element_get_base_time (GST_ELEMENT (self));
  gst_object_unref (clock);
  return now > base ? now - base : 0;
}

/* Waits (live) for a prompt that has not been generated yet. FALSE when
 * unlocked, or (not live) when there is nothing left to generate. */
static gboolean
wait_for_work (GstKosmosGSrc * self, gboolean * eos)
{
  gboolean ready;

  *eos = FALSE;
  GST_OBJECT_LOCK (self);
  if (!self->is_live) {
    *eos = self->gen.generated_once;
    GST_OBJECT_UNLOCK (self);
    return !*eos;
  }
  while (!self->unlocked && !(self->settings.prompt
          && gst_kosmosg_generator_prompt_is_new (&self->gen,
              &self->settings)))
    g_cond_wait (&self->cond, GST_OBJECT_GET_LOCK (self));
  ready = !self->unlocked;
  GST_OBJECT_UNLOCK (self);
  return ready;
}

static GstFlowReturn
gst_kosmosg_src_create (GstPushSrc * psrc, GstBuffer ** outbuf)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (psrc);
  GstBuffer *buf;
  gboolean eos, live;

  if (gst_kosmosg_generator_pending (&self->gen) == 0) {
    gboolean latency_changed;
    GstFlowReturn ret;
    GstClockTime rt;

    if (!wait_for_work (self, &eos))
      return eos ? GST_FLOW_EOS : GST_FLOW_FLUSHING;

    /* live: the images' capture time, when their generation starts */
    rt = clock_running_time (self);
    self->batch_rt = rt;
    ret = gst_kosmosg_generator_run (&self->gen, &self->engine,
        &self->settings, &self->out_info,
        GST_CLOCK_TIME_IS_VALID (rt) ? rt : self->gen.next_pts,
        &latency_changed);
    if (ret != GST_FLOW_OK)
      return ret;
    if (latency_changed && gst_base_src_is_live (GST_BASE_SRC (self)))
      gst_element_post_message (GST_ELEMENT (self),
          gst_message_new_latency (GST_OBJECT (self)));
  }

  GST_OBJECT_LOCK (self);
  live = self->is_live;
  GST_OBJECT_UNLOCK (self);
  buf = gst_kosmosg_generator_pop (&self->gen, &self->engine,
      &self->out_info, live ? self->batch_rt : GST_CLOCK_TIME_NONE);
  if (!buf)
    return GST_FLOW_ERROR;
  *outbuf = buf;
  return GST_FLOW_OK;
}

static GstStateChangeReturn
gst_kosmosg_src_change_state (GstElement * element, GstStateChange transition)
{
  GstKosmosGSrc *self = GST_KOSMOSG_SRC (element);
  GstStateChangeReturn ret;

  if (transition == GST_STATE_CHANGE_NULL_TO_READY) {
    GstKosmosGSettings s;
    gboolean ok;

    GST_OBJECT_LOCK (self);
    gst_kosmosg_settings_copy (&s, &self->settings);
    GST_OBJECT_UNLOCK (self);
    ok = gst_kosmosg_engine_open (&self->engine, &s);
    gst_kosmosg_settings_clear (&s);
    if (!ok)
      return GST_STATE_CHANGE_FAILURE;
  } else if (transition == GST_STATE_CHANGE_PAUSED_TO_READY) {
    gst_kosmosg_engine_set_cancel (&self->engine, TRUE);
  }

  ret = GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);

  if (transition == GST_STATE_CHANGE_READY_TO_NULL)
    gst_kosmosg_engine_close (&self->engine);
  return ret;
}

static void
gst_kosmosg_src_class_init (GstKosmosGSrcClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseSrcClass *bsrc_class = GST_BASE_SRC_CLASS (klass);
  GstPushSrcClass *psrc_class = GST_PUSH_SRC_CLASS (klass);

  gobject_class->set_property = gst_kosmosg_src_set_property;
  gobject_class->get_property = gst_kosmosg_src_get_property;
  gobject_class->finalize = gst_kosmosg_src_finalize;

  /**
   * GstKosmosGSrc:is-live:
   *
   * Live: a new batch whenever the prompt changes, timestamped with the
   * clock; not live: #GstKosmosGSrc:num-images images, then EOS.
   */
  g_object_class_install_property (gobject_class, PROP_IS_LIVE,
      g_param_spec_boolean ("is-live", "Is Live",
          "Live: generate again whenever the prompt changes; not live: "
          "num-images images, then EOS", DEFAULT_IS_LIVE,
          G_PARAM_READWRITE | GST_PARAM_MUTABLE_READY |
          G_PARAM_STATIC_STRINGS));
  /* The generation properties shared with kosmosgfilter, documented
   * there (gstkosmosgcommon.c). */
  /**
   * GstKosmosGSrc:model-location:
   *
   * As #GstKosmosGFilter:model-location.
   */
  /**
   * GstKosmosGSrc:prompt:
   *
   * Plain text (no `<i>` placeholder: kosmosgsrc has no reference images);
   * live, a change starts a new batch. Otherwise as
   * #GstKosmosGFilter:prompt.
   */
  /**
   * GstKosmosGSrc:negative-prompt:
   *
   * Live, a change starts a new batch. Otherwise as
   * #GstKosmosGFilter:negative-prompt.
   */
  /**
   * GstKosmosGSrc:num-inference-steps:
   *
   * As #GstKosmosGFilter:num-inference-steps.
   */
  /**
   * GstKosmosGSrc:guidance-scale:
   *
   * As #GstKosmosGFilter:guidance-scale.
   */
  /**
   * GstKosmosGSrc:seed:
   *
   * As #GstKosmosGFilter:seed.
   */
  /**
   * GstKosmosGSrc:num-images:
   *
   * Images per batch: not live, the images before EOS (again after a seek).
   * Otherwise as #GstKosmosGFilter:num-images.
   */
  /**
   * GstKosmosGSrc:scheduler:
   *
   * As #GstKosmosGFilter:scheduler.
   */
  /**
   * GstKosmosGSrc:backend:
   *
   * As #GstKosmosGFilter:backend.
   */
  /**
   * GstKosmosGSrc:cuda-device-id:
   *
   * As #GstKosmosGFilter:cuda-device-id.
   */
  /**
   * GstKosmosGSrc:precision:
   *
   * As #GstKosmosGFilter:precision.
   */
  /**
   * GstKosmosGSrc:post-messages:
   *
   * As #GstKosmosGFilter:post-messages.
   */
  /**
   * GstKosmosGSrc:loras:
   *
   * As #GstKosmosGFilter:loras.
   */
  /**
   * GstKosmosGSrc:n-threads:
   *
   * As #GstKosmosGFilter:n-threads.
   */
  gst_kosmosg_install_properties (gobject_class, PROP_COMMON_FIRST);

  gst_element_class_set_static_metadata (element_class,
      "Kosmos-G text-to-image source", "Source/Video",
      "Generates images from a text prompt (Kosmos-G)",
      "kosmosg-gst authors");
  gst_element_class_add_static_pad_template (element_class, &src_template);

  element_class->change_state =
      GST_DEBUG_FUNCPTR (gst_kosmosg_src_change_state);
  bsrc_class->fixate = GST_DEBUG_FUNCPTR (gst_kosmosg_src_fixate);
  bsrc_class->get_caps = GST_DEBUG_FUNCPTR (gst_kosmosg_src_get_caps);
  bsrc_class->set_caps = GST_DEBUG_FUNCPTR (gst_kosmosg_src_set_caps);
  bsrc_class->negotiate = GST_DEBUG_FUNCPTR (gst_kosmosg_src_negotiate);
  bsrc_class->start = GST_DEBUG_FUNCPTR (gst_kosmosg_src_start);
  bsrc_class->stop = GST_DEBUG_FUNCPTR (gst_kosmosg_src_stop);
  bsrc_class->unlock = GST_DEBUG_FUNCPTR (gst_kosmosg_src_unlock);
  bsrc_class->unlock_stop = GST_DEBUG_FUNCPTR (gst_kosmosg_src_unlock_stop);
  bsrc_class->query = GST_DEBUG_FUNCPTR (gst_kosmosg_src_query);
  bsrc_class->event = GST_DEBUG_FUNCPTR (gst_kosmosg_src_event);
  bsrc_class->is_seekable = GST_DEBUG_FUNCPTR (gst_kosmosg_src_is_seekable);
  bsrc_class->do_seek = GST_DEBUG_FUNCPTR (gst_kosmosg_src_do_seek);
  psrc_class->create = GST_DEBUG_FUNCPTR (gst_kosmosg_src_create);

  GST_DEBUG_CATEGORY_INIT (kosmosg_src_debug, "kosmosgsrc", 0,
      "Kosmos-G text-to-image source");
}

static void
gst_kosmosg_src_init (GstKosmosGSrc * self)
{
  gst_kosmosg_settings_init (&self->settings);
  gst_kosmosg_generator_init (&self->gen);
  gst_kosmosg_engine_init (&self->engine, GST_ELEMENT (self));
  g_cond_init (&self->cond);
  gst_video_info_init (&self->out_info);
  gst_base_src_set_format (GST_BASE_SRC (self), GST_FORMAT_TIME);
  gst_base_src_set_live (GST_BASE_SRC (self), DEFAULT_IS_LIVE);
}
