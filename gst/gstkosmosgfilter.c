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
 * ControlNet (the official demo's ControlNet tab): request pads `control_%u`
 * carry control maps (edges, depth, pose, scribble...), distinct from the
 * reference pads and not counted against the `<i>` placeholders. Each names
 * its ControlNet file and scale as pad properties (`control_0::location=
 * canny.safetensors control_0::conditioning-scale=0.8` from gst-launch);
 * `canny=true` takes a photo and uses its Canny edges. Every map is resized
 * to the output size; several ControlNets add up.
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
#include "gstkosmosggenerate.h"

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
  /* object lock: the seqnum of the last FLUSH_STOP, and whether the next
   * flush is the element's own for a seek upstream did not flush this pad
   * for (the pad keeps its reference and uses it again) */
  guint32 flush_stop_seqnum;
  gboolean keep_on_flush;
  /* aggregate thread: an image came since start(); a pad that had one and
   * ends without one after a flush (a seek past the end) ends cleanly */
  gboolean had_image;
  GstClockTime last_rt;         /* object lock: running time of last */
  /* object lock: live, the newest image that came during a generation,
   * kept here instead of the aggregator's queue (see the chain function) */
  GstBuffer *pending;
  GstVideoInfo pending_info;
  GstClockTime pending_rt;
  GstPadChainFunction agg_chain;        /* GstAggregatorPad's */

  /* control_%u pads (object lock): a ControlNet map, not a reference */
  gboolean control;
  gchar *location;              /* the ControlNet file */
  gdouble scale;                /* conditioning scale */
  gboolean canny;               /* the map is a photo: use its Canny edges */
  gdouble canny_low, canny_high;
  /* the ControlNet opened from net_location; aggregate thread and stop() */
  kg_control_net *net;
  gchar *net_location;
};

enum
{
  PROP_PAD_0,
  PROP_PAD_INDEX,
  PROP_PAD_LOCATION,
  PROP_PAD_CONDITIONING_SCALE,
  PROP_PAD_CANNY,
  PROP_PAD_CANNY_LOW,
  PROP_PAD_CANNY_HIGH,
};

#define DEFAULT_PAD_INDEX (-1)
#define DEFAULT_CONDITIONING_SCALE 1.0
#define DEFAULT_CANNY_LOW 100.0    /* controlnet_aux CannyDetector's */
#define DEFAULT_CANNY_HIGH 200.0

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
    case PROP_PAD_LOCATION:
      GST_OBJECT_LOCK (pad);
      g_free (pad->location);
      pad->location = g_value_dup_string (value);
      pad->fresh = TRUE;        /* the next generation uses it */
      GST_OBJECT_UNLOCK (pad);
      break;
    case PROP_PAD_CONDITIONING_SCALE:
      GST_OBJECT_LOCK (pad);
      pad->scale = g_value_get_double (value);
      GST_OBJECT_UNLOCK (pad);
      break;
    case PROP_PAD_CANNY:
      GST_OBJECT_LOCK (pad);
      pad->canny = g_value_get_boolean (value);
      GST_OBJECT_UNLOCK (pad);
      break;
    case PROP_PAD_CANNY_LOW:
    case PROP_PAD_CANNY_HIGH:
      GST_OBJECT_LOCK (pad);
      *(prop_id == PROP_PAD_CANNY_LOW ? &pad->canny_low : &pad->canny_high) =
          g_value_get_double (value);
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
    case PROP_PAD_LOCATION:
      GST_OBJECT_LOCK (pad);
      g_value_set_string (value, pad->location);
      GST_OBJECT_UNLOCK (pad);
      break;
    case PROP_PAD_CONDITIONING_SCALE:
      GST_OBJECT_LOCK (pad);
      g_value_set_double (value, pad->scale);
      GST_OBJECT_UNLOCK (pad);
      break;
    case PROP_PAD_CANNY:
      GST_OBJECT_LOCK (pad);
      g_value_set_boolean (value, pad->canny);
      GST_OBJECT_UNLOCK (pad);
      break;
    case PROP_PAD_CANNY_LOW:
    case PROP_PAD_CANNY_HIGH:
      GST_OBJECT_LOCK (pad);
      g_value_set_double (value, prop_id == PROP_PAD_CANNY_LOW ?
          pad->canny_low : pad->canny_high);
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
  gst_clear_buffer (&pad->pending);
  pad->fresh = FALSE;
  pad->keep_on_flush = FALSE;
  GST_OBJECT_UNLOCK (pad);
}

/* An upstream flush drops the reference (upstream sends the images from
 * the seek position); the element's own flush for a seek keeps it and makes
 * it new, so the seek generates from it again. */
static GstFlowReturn
gst_kosmosg_filter_pad_flush (GstAggregatorPad * aggpad, GstAggregator * agg)
{
  GstKosmosGFilterPad *pad = GST_KOSMOSG_FILTER_PAD (aggpad);

  GST_OBJECT_LOCK (pad);
  if (pad->keep_on_flush) {
    pad->keep_on_flush = FALSE;
    pad->fresh = pad->last != NULL;
    gst_clear_buffer (&pad->pending);
    GST_OBJECT_UNLOCK (pad);
    return GST_FLOW_OK;
  }
  GST_OBJECT_UNLOCK (pad);
  gst_kosmosg_filter_pad_clear (pad);
  return GST_FLOW_OK;
}

/* Closes the pad's ControlNet; the model it was opened on must still be open
 * (the element calls this from stop() and release_pad, never during a
 * generation on this pad's net). */
static void
gst_kosmosg_filter_pad_close_net (GstKosmosGFilterPad * pad)
{
  kg_control_net_close (pad->net);
  pad->net = NULL;
  g_clear_pointer (&pad->net_location, g_free);
}

static void
gst_kosmosg_filter_pad_finalize (GObject * object)
{
  GstKosmosGFilterPad *pad = GST_KOSMOSG_FILTER_PAD (object);

  g_warn_if_fail (pad->net == NULL);
  g_free (pad->location);
  gst_clear_buffer (&GST_KOSMOSG_FILTER_PAD (object)->last);
  gst_clear_buffer (&GST_KOSMOSG_FILTER_PAD (object)->pending);
  G_OBJECT_CLASS (gst_kosmosg_filter_pad_parent_class)->finalize (object);
}

static GstFlowReturn gst_kosmosg_filter_pad_chain (GstPad * pad,
    GstObject * parent, GstBuffer * buf);

static void
gst_kosmosg_filter_pad_constructed (GObject * object)
{
  GstKosmosGFilterPad *pad = GST_KOSMOSG_FILTER_PAD (object);

  G_OBJECT_CLASS (gst_kosmosg_filter_pad_parent_class)->constructed (object);
  pad->agg_chain = GST_PAD_CHAINFUNC (object);
  g_warn_if_fail (pad->agg_chain != NULL);
  gst_pad_set_chain_function (GST_PAD (object),
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_pad_chain));
}

static void
gst_kosmosg_filter_pad_class_init (GstKosmosGFilterPadClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstAggregatorPadClass *aggpad_class = GST_AGGREGATOR_PAD_CLASS (klass);

  gobject_class->set_property = gst_kosmosg_filter_pad_set_property;
  gobject_class->get_property = gst_kosmosg_filter_pad_get_property;
  gobject_class->finalize = gst_kosmosg_filter_pad_finalize;
  gobject_class->constructed = gst_kosmosg_filter_pad_constructed;

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

  /**
   * GstKosmosGFilterPad:location:
   *
   * control_%u pads: the ControlNet file (from `kosmosg-convert
   * --controlnet`) this pad's map drives. Required.
   */
  g_object_class_install_property (gobject_class, PROP_PAD_LOCATION,
      g_param_spec_string ("location", "ControlNet location",
          "control_%u pads: the ControlNet file (kosmosg-convert --controlnet)",
          NULL, G_PARAM_READWRITE | GST_PARAM_MUTABLE_PLAYING |
          G_PARAM_STATIC_STRINGS));
  /**
   * GstKosmosGFilterPad:conditioning-scale:
   *
   * control_%u pads: the ControlNet's conditioning scale (the demo's 1.0).
   */
  g_object_class_install_property (gobject_class, PROP_PAD_CONDITIONING_SCALE,
      g_param_spec_double ("conditioning-scale", "Conditioning scale",
          "control_%u pads: the ControlNet's conditioning scale", -100.0,
          100.0, DEFAULT_CONDITIONING_SCALE, G_PARAM_READWRITE |
          GST_PARAM_MUTABLE_PLAYING | G_PARAM_STATIC_STRINGS));
  /**
   * GstKosmosGFilterPad:canny:
   *
   * control_%u pads: the incoming image is a photo; its Canny edges
   * (OpenCV's algorithm on RGB, as the demo's CannyDetector) are the map.
   */
  g_object_class_install_property (gobject_class, PROP_PAD_CANNY,
      g_param_spec_boolean ("canny", "Canny",
          "control_%u pads: turn the image into its Canny edge map first",
          FALSE, G_PARAM_READWRITE | GST_PARAM_MUTABLE_PLAYING |
          G_PARAM_STATIC_STRINGS));
  /**
   * GstKosmosGFilterPad:canny-low:
   *
   * control_%u pads with #GstKosmosGFilterPad:canny: the low hysteresis
   * threshold of the Canny edge detector (the demo's 100): weaker gradients
   * are never edges.
   */
  g_object_class_install_property (gobject_class, PROP_PAD_CANNY_LOW,
      g_param_spec_double ("canny-low", "Canny low threshold",
          "control_%u pads with canny: the low hysteresis threshold", 0.0,
          100000.0, DEFAULT_CANNY_LOW, G_PARAM_READWRITE |
          GST_PARAM_MUTABLE_PLAYING | G_PARAM_STATIC_STRINGS));
  /**
   * GstKosmosGFilterPad:canny-high:
   *
   * control_%u pads with #GstKosmosGFilterPad:canny: the high hysteresis
   * threshold (the demo's 200): stronger gradients are always edges, those
   * between the thresholds only when connected to one.
   */
  g_object_class_install_property (gobject_class, PROP_PAD_CANNY_HIGH,
      g_param_spec_double ("canny-high", "Canny high threshold",
          "control_%u pads with canny: the high hysteresis threshold", 0.0,
          100000.0, DEFAULT_CANNY_HIGH, G_PARAM_READWRITE |
          GST_PARAM_MUTABLE_PLAYING | G_PARAM_STATIC_STRINGS));

  aggpad_class->flush = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_pad_flush);
}

static void
gst_kosmosg_filter_pad_init (GstKosmosGFilterPad * pad)
{
  pad->index = DEFAULT_PAD_INDEX;
  pad->scale = DEFAULT_CONDITIONING_SCALE;
  pad->canny_low = DEFAULT_CANNY_LOW;
  pad->canny_high = DEFAULT_CANNY_HIGH;
  gst_video_info_init (&pad->info);
  gst_video_info_init (&pad->last_info);
  pad->last_rt = GST_CLOCK_TIME_NONE;
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
  GstClockTime last_pts;        /* a position in the src segment */

  guint32 seek_seqnum;          /* object lock: the last seek handled */

  /* set by the aggregate thread, read by the pads' chain functions: the
   * pipeline is live, a generation is running */
  volatile gint live;
  volatile gint generating;
  /* object lock: QoS; earliest is the running time before which a
   * reference is already late (downstream QoS events), reset by flushes */
  GstClockTime qos_earliest;
  gdouble qos_proportion;
  guint64 qos_processed, qos_dropped;

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
  GstKosmosGGenerator text_gen;        /* the text-only batch */
  GstPadActivateModeFunction agg_src_activate_mode;

  /* object lock */
  gdouble control_start, control_end;   /* control-guidance-start/-end */
  guint control_serial;                 /* the next control_%u number */
  GList *dead_nets;     /* ControlNets of released pads, closed at stop() */
};

enum
{
  PROP_0,
  PROP_COMMON_FIRST,
};
/* after the shared ones */
#define PROP_CONTROL_GUIDANCE_START (PROP_COMMON_FIRST + GST_KOSMOSG_N_PROPS)
#define PROP_CONTROL_GUIDANCE_END (PROP_CONTROL_GUIDANCE_START + 1)

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink_%u",
    GST_PAD_SINK,
    GST_PAD_REQUEST,
    GST_STATIC_CAPS (GST_KOSMOSG_SINK_CAPS (
        "format = (string) { RGB, RGBA, RGBx, BGR, BGRA, BGRx, GRAY8 }, "
        "width = (int) [ 1, 65536 ], height = (int) [ 1, 65536 ], "
        "framerate = (fraction) [ 0/1, MAX ]")));

static GstStaticPadTemplate control_template =
GST_STATIC_PAD_TEMPLATE ("control_%u",
    GST_PAD_SINK,
    GST_PAD_REQUEST,
    GST_STATIC_CAPS (GST_KOSMOSG_SINK_CAPS (
        "format = (string) { RGB, RGBA, RGBx, BGR, BGRA, BGRx, GRAY8 }, "
        "width = (int) [ 1, 65536 ], height = (int) [ 1, 65536 ], "
        "framerate = (fraction) [ 0/1, MAX ]")));

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
  gint n_refs = 0;

  if (prop_id == PROP_CONTROL_GUIDANCE_START
      || prop_id == PROP_CONTROL_GUIDANCE_END) {
    GST_OBJECT_LOCK (self);
    *(prop_id == PROP_CONTROL_GUIDANCE_START ? &self->control_start :
        &self->control_end) = g_value_get_double (value);
    GST_OBJECT_UNLOCK (self);
    return;
  }
  if (prop_id < PROP_COMMON_FIRST
      || prop_id >= PROP_COMMON_FIRST + GST_KOSMOSG_N_PROPS) {
    G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    return;
  }
  GST_OBJECT_LOCK (self);
  /* the reference pads: control_%u pads do not count against the <i> */
  for (GList * l = GST_ELEMENT (self)->sinkpads; l; l = l->next)
    n_refs += !((GstKosmosGFilterPad *) l->data)->control;
  GST_OBJECT_UNLOCK (self);
  gst_kosmosg_set_property (GST_ELEMENT (self), &self->settings,
      prop_id - PROP_COMMON_FIRST, value, n_refs);
}

static void
gst_kosmosg_filter_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (object);

  if (prop_id == PROP_CONTROL_GUIDANCE_START
      || prop_id == PROP_CONTROL_GUIDANCE_END) {
    GST_OBJECT_LOCK (self);
    g_value_set_double (value, prop_id == PROP_CONTROL_GUIDANCE_START ?
        self->control_start : self->control_end);
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
gst_kosmosg_filter_finalize (GObject * object)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (object);

  /* stop() closed them; before the model either way */
  g_list_free_full (self->dead_nets, (GDestroyNotify) kg_control_net_close);
  gst_kosmosg_engine_close (&self->engine);
  gst_kosmosg_settings_clear (&self->settings);
  gst_kosmosg_generator_clear (&self->text_gen);
  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static guint
pad_number (GstPad * pad)
{
  const gchar *name = GST_PAD_NAME (pad);

  return (guint) g_ascii_strtoull (strchr (name, '_') + 1, NULL, 10);
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

/* The reference pads in placeholder order, then the control pads by
 * number; *n_refs gets the number of reference pads. */
static GList *
sorted_sink_pads_split (GstKosmosGFilter * self, guint * n_refs)
{
  GList *refs = NULL, *ctls = NULL;

  GST_OBJECT_LOCK (self);
  for (GList * l = GST_ELEMENT (self)->sinkpads; l; l = l->next) {
    GstKosmosGFilterPad *pad = l->data;

    if (pad->control)
      ctls = g_list_prepend (ctls, gst_object_ref (pad));
    else
      refs = g_list_prepend (refs, gst_object_ref (pad));
  }
  GST_OBJECT_UNLOCK (self);
  refs = g_list_sort (refs, compare_pads);
  ctls = g_list_sort (ctls, compare_pads);
  if (n_refs)
    *n_refs = g_list_length (refs);
  return g_list_concat (refs, ctls);
}

static GList *
sorted_sink_pads (GstKosmosGFilter * self)
{
  return sorted_sink_pads_split (self, NULL);
}

/* Opens (or keeps) the ControlNet named by the pad's location. FALSE after
 * posting an error naming the pad. Aggregate thread. */
static gboolean
control_pad_net (GstKosmosGFilter * self, GstKosmosGFilterPad * pad)
{
  gchar *location;
  kg_control_net *net = NULL, *old = NULL;
  kg_error err = { 0 };

  GST_OBJECT_LOCK (pad);
  location = g_strdup (pad->location);
  if (pad->net && location && !g_strcmp0 (location, pad->net_location)) {
    GST_OBJECT_UNLOCK (pad);
    g_free (location);
    return TRUE;
  }
  GST_OBJECT_UNLOCK (pad);
  if (!location || !*location) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("Control pad %s has no ControlNet: set its location property "
            "(%s::location=FILE)", GST_PAD_NAME (pad), GST_PAD_NAME (pad)),
        (NULL));
    g_free (location);
    return FALSE;
  }
  if (kg_control_net_open (&net,
          gst_kosmosg_model_get (self->engine.model), location,
          &err) != KG_OK) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
        ("Could not load the ControlNet of pad %s: %s", GST_PAD_NAME (pad),
            err.msg), ("%s: %s", kg_status_name (err.code), location));
    g_free (location);
    return FALSE;
  }
  GST_OBJECT_LOCK (pad);
  old = pad->net;
  pad->net = net;
  g_free (pad->net_location);
  pad->net_location = location;
  GST_OBJECT_UNLOCK (pad);
  kg_control_net_close (old);
  return TRUE;
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

/* A QoS message for a reference image no generation will use: replaced by a
 * newer one before a generation took it, or already late for downstream.
 * Any thread. */
static void
post_qos_drop (GstKosmosGFilter * self, GstBuffer * buf, GstClockTime rt)
{
  GstMessage *msg;
  guint64 processed, dropped;
  gdouble proportion;
  GstClockTime earliest;
  gint64 jitter = 0;

  GST_OBJECT_LOCK (self);
  dropped = ++self->qos_dropped;
  processed = self->qos_processed;
  proportion = self->qos_proportion;
  earliest = self->qos_earliest;
  GST_OBJECT_UNLOCK (self);
  if (GST_CLOCK_TIME_IS_VALID (rt) && GST_CLOCK_TIME_IS_VALID (earliest)
      && rt < earliest)
    jitter = GST_CLOCK_DIFF (rt, earliest);
  GST_DEBUG_OBJECT (self, "dropping the reference at %" GST_TIME_FORMAT
      " (%" G_GUINT64_FORMAT " dropped, %" G_GUINT64_FORMAT " used)",
      GST_TIME_ARGS (rt), dropped, processed);
  msg = gst_message_new_qos (GST_OBJECT (self),
      g_atomic_int_get (&self->live), rt, GST_CLOCK_TIME_NONE,
      GST_BUFFER_PTS (buf), GST_BUFFER_DURATION (buf));
  gst_message_set_qos_values (msg, jitter, proportion, 1000000);
  gst_message_set_qos_stats (msg, GST_FORMAT_BUFFERS, processed, dropped);
  gst_element_post_message (GST_ELEMENT (self), msg);
}

/* Live, during a generation: the newest image waits in the pad's pending
 * slot, replacing (and reporting) an older one, so a live upstream is never
 * held up for a generation and no stale image is queued; the aggregator
 * takes it right after the generation (get_next_time). */
static GstFlowReturn
gst_kosmosg_filter_pad_chain (GstPad * pad, GstObject * parent,
    GstBuffer * buf)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (parent);
  GstKosmosGFilterPad *kpad = GST_KOSMOSG_FILTER_PAD (pad);
  GstCaps *caps;
  GstEvent *seg_event;
  GstVideoInfo info;
  GstClockTime rt = GST_CLOCK_TIME_NONE, old_rt;
  GstBuffer *old;
  gboolean have_info;

  if (!g_atomic_int_get (&self->live) || !g_atomic_int_get (&self->generating))
    return kpad->agg_chain (pad, parent, buf);
  caps = gst_pad_get_current_caps (pad);
  have_info = caps && gst_video_info_from_caps (&info, caps);
  gst_clear_caps (&caps);
  if (!have_info)
    return kpad->agg_chain (pad, parent, buf);
  seg_event = gst_pad_get_sticky_event (pad, GST_EVENT_SEGMENT, 0);
  if (seg_event) {
    const GstSegment *seg;

    gst_event_parse_segment (seg_event, &seg);
    rt = gst_segment_to_running_time (seg, GST_FORMAT_TIME,
        GST_BUFFER_PTS (buf));
    gst_event_unref (seg_event);
  }
  GST_OBJECT_LOCK (kpad);
  old = kpad->pending;
  old_rt = kpad->pending_rt;
  kpad->pending = buf;
  kpad->pending_info = info;
  kpad->pending_rt = rt;
  GST_OBJECT_UNLOCK (kpad);
  if (old) {
    post_qos_drop (self, old, old_rt);
    gst_buffer_unref (old);
  }
  return GST_FLOW_OK;
}

/* A new reference image for pad (aggregate thread). Already late for
 * downstream's QoS: reported and not used. Otherwise it replaces the pad's
 * reference, reporting that one if no generation used it; *newest gets the
 * newest running time. */
static void
take_reference (GstKosmosGFilter * self, GstKosmosGFilterPad * pad,
    GstBuffer * buf, const GstVideoInfo * info, GstClockTime rt,
    GstClockTime * newest)
{
  GstClockTime earliest, old_rt = GST_CLOCK_TIME_NONE;
  GstBuffer *old = NULL;

  pad->had_image = TRUE;
  GST_OBJECT_LOCK (self);
  earliest = self->qos_earliest;
  GST_OBJECT_UNLOCK (self);
  if (GST_CLOCK_TIME_IS_VALID (rt) && GST_CLOCK_TIME_IS_VALID (earliest)
      && rt < earliest) {
    post_qos_drop (self, buf, rt);
    return;
  }
  GST_OBJECT_LOCK (pad);
  if (pad->last && pad->fresh) {
    old = gst_buffer_ref (pad->last);
    old_rt = pad->last_rt;
  }
  gst_buffer_replace (&pad->last, buf);
  pad->last_info = *info;
  pad->last_rt = rt;
  pad->fresh = TRUE;
  GST_OBJECT_UNLOCK (pad);
  if (old) {
    post_qos_drop (self, old, old_rt);
    gst_buffer_unref (old);
  }
  if (GST_CLOCK_TIME_IS_VALID (rt)
      && (!GST_CLOCK_TIME_IS_VALID (*newest) || rt > *newest))
    *newest = rt;
}

/* Runs one generation and pushes its images; pts is the running time of
 * the newest reference. The frames stay mapped by the caller. A generation
 * cancelled by a flush or a stop returns GST_FLOW_FLUSHING. */
static GstFlowReturn
generate_and_push (GstKosmosGFilter * self, const kg_image * images,
    gint n_images, const kg_control * controls, gint n_controls,
    GstClockTime pts)
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
      controls, n_controls, GST_VIDEO_INFO_WIDTH (&self->out_info),
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
  if (latency_changed) {
    GstClockTime est;

    GST_OBJECT_LOCK (self);
    est = self->engine.estimate;
    GST_OBJECT_UNLOCK (self);
    gst_aggregator_set_latency (agg, est, GST_CLOCK_TIME_NONE);
  }

  if (!GST_CLOCK_TIME_IS_VALID (pts) || pts < self->last_pts)
    pts = self->last_pts;
  for (gint i = 0; i < out.n && ret == GST_FLOW_OK; i++) {
    GstBuffer *buf = gst_kosmosg_make_buffer (&self->engine, &out, i, &self->out_info, &s);

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
  guint n_refs = 0;
  GList *pads = sorted_sink_pads_split (self, &n_refs), *l;
  guint n = g_list_length (pads), i = 0;
  kg_control *controls = g_new0 (kg_control, MAX (n - n_refs, 1));
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
  guint64 n_used = 0;

  g_atomic_int_set (&self->live, live);
  for (l = pads; l; l = l->next) {
    GstKosmosGFilterPad *pad = l->data;
    GstAggregatorPad *aggpad = GST_AGGREGATOR_PAD (pad);
    GstBuffer *buf;
    GstVideoInfo pending_info;
    GstClockTime rt;
    gboolean pad_eos;

    /* the image that came during the last generation, older than any
     * queued since */
    GST_OBJECT_LOCK (pad);
    buf = pad->pending;
    pad->pending = NULL;
    pending_info = pad->pending_info;
    rt = pad->pending_rt;
    GST_OBJECT_UNLOCK (pad);
    if (buf) {
      take_reference (self, pad, buf, &pending_info, rt, &pts);
      gst_buffer_unref (buf);
    }
    /* live: only the newest image counts, older queued ones are stale;
     * not live: every image is a reference set of its own */
    while ((buf = gst_aggregator_pad_pop_buffer (aggpad))) {
      GST_OBJECT_LOCK (pad);
      rt = gst_segment_to_running_time (&aggpad->segment, GST_FORMAT_TIME,
          GST_BUFFER_PTS (buf));
      GST_OBJECT_UNLOCK (pad);
      take_reference (self, pad, buf, &pad->info, rt, &pts);
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
      if (!missing && pad_eos && !pad->had_image)
        missing = pad;
    }
    i++;
  }

  GST_OBJECT_LOCK (self);
  prompt_changed = !self->generated_once
      || self->settings.prompt_serial != self->generated_serial;
  GST_OBJECT_UNLOCK (self);

  if (all_have && (any_fresh || prompt_changed)) {
    /* the newest reference's running time as a position in the output
     * segment (the same in the segment a pipeline starts with) */
    if (GST_CLOCK_TIME_IS_VALID (pts)) {
      GST_OBJECT_LOCK (self);
      pts = gst_segment_position_from_running_time (&GST_AGGREGATOR_PAD
          (agg->srcpad)->segment, GST_FORMAT_TIME, pts);
      GST_OBJECT_UNLOCK (self);
    }
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
      if (i >= n_refs) {
        kg_control *c = &controls[i - n_refs];

        if (!control_pad_net (self, pad)) {
          ret = GST_FLOW_ERROR;
          goto done;
        }
        kg_control_init (c);
        c->image = images[i];
        GST_OBJECT_LOCK (self);
        c->guidance_start = (float) self->control_start;
        c->guidance_end = (float) self->control_end;
        GST_OBJECT_UNLOCK (self);
        GST_OBJECT_LOCK (pad);
        c->net = pad->net;
        c->scale = (float) pad->scale;
        c->canny = pad->canny;
        c->canny_low = (float) pad->canny_low;
        c->canny_high = (float) pad->canny_high;
        GST_OBJECT_UNLOCK (pad);
      }
      GST_OBJECT_LOCK (pad);
      n_used += pad->fresh;
      pad->fresh = FALSE;
      GST_OBJECT_UNLOCK (pad);
    }
    g_atomic_int_set (&self->generating, 1);
    ret = generate_and_push (self, images, (gint) n_refs, controls,
        (gint) (n - n_refs), pts);
    g_atomic_int_set (&self->generating, 0);
    if (ret == GST_FLOW_OK) {
      GST_OBJECT_LOCK (self);
      self->qos_processed += n_used;
      GST_OBJECT_UNLOCK (self);
    }
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
  g_free (controls);
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
      GST_OBJECT_LOCK (pad);
      pad->flush_stop_seqnum = gst_event_get_seqnum (event);
      GST_OBJECT_UNLOCK (pad);
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
      /* the output framerate follows the references' */
      if (GST_VIDEO_INFO_FPS_N (&info) != GST_VIDEO_INFO_FPS_N (&pad->info)
          || GST_VIDEO_INFO_FPS_D (&info) != GST_VIDEO_INFO_FPS_D (&pad->info))
        gst_pad_mark_reconfigure (agg->srcpad);
      pad->info = info;
      break;
    }
    default:
      break;
  }
  return GST_AGGREGATOR_CLASS (parent_class)->sink_event (agg, aggpad, event);
}

/* The output framerate is the highest of the sink pads' (as
 * videoaggregator's) when downstream accepts it; 0/1 without one. */
static GstFlowReturn
gst_kosmosg_filter_update_src_caps (GstAggregator * agg, GstCaps * caps,
    GstCaps ** ret)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (agg);
  gint best_n = 0, best_d = 1;

  GST_OBJECT_LOCK (self);
  for (GList * l = GST_ELEMENT (self)->sinkpads; l; l = l->next) {
    const GstVideoInfo *info = &((GstKosmosGFilterPad *) l->data)->info;
    gint n = GST_VIDEO_INFO_FPS_N (info), d = GST_VIDEO_INFO_FPS_D (info);

    if (n > 0 && d > 0 && (best_n == 0
            || gst_util_fraction_compare (n, d, best_n, best_d) > 0)) {
      best_n = n;
      best_d = d;
    }
  }
  GST_OBJECT_UNLOCK (self);

  *ret = gst_kosmosg_engine_intersect_caps (&self->engine, caps);
  if (*ret && best_n > 0) {
    GstCaps *want = gst_caps_copy (*ret), *both;

    gst_caps_set_simple (want, "framerate", GST_TYPE_FRACTION, best_n, best_d,
        NULL);
    both = gst_caps_intersect (want, *ret);
    gst_caps_unref (want);
    if (gst_caps_is_empty (both)) {
      GST_DEBUG_OBJECT (self, "downstream refuses framerate %d/%d", best_n,
          best_d);
      gst_caps_unref (both);
    } else {
      gst_caps_unref (*ret);
      *ret = both;
    }
  }
  return *ret ? GST_FLOW_OK : GST_FLOW_NOT_NEGOTIATED;
}

/* Live references that came during a generation wait in the pads' pending
 * slots, not in the aggregator's queues: a timeout at once makes it call
 * aggregate() for them. */
static GstClockTime
gst_kosmosg_filter_get_next_time (GstAggregator * agg)
{
  gboolean pending = FALSE;

  GST_OBJECT_LOCK (agg);
  for (GList * l = GST_ELEMENT (agg)->sinkpads; l && !pending; l = l->next) {
    GstKosmosGFilterPad *pad = l->data;

    GST_OBJECT_LOCK (pad);
    pending = pad->pending != NULL;
    GST_OBJECT_UNLOCK (pad);
  }
  GST_OBJECT_UNLOCK (agg);
  return pending ? 0 : GST_CLOCK_TIME_NONE;
}

static void
qos_reset (GstKosmosGFilter * self)
{
  GST_OBJECT_LOCK (self);
  self->qos_earliest = GST_CLOCK_TIME_NONE;
  self->qos_proportion = 1.0;
  self->qos_processed = self->qos_dropped = 0;
  GST_OBJECT_UNLOCK (self);
}

/* Downstream QoS (as GstVideoDecoder): references older than the earliest
 * time are already late and are dropped, not generated from. */
static void
qos_update (GstKosmosGFilter * self, GstEvent * event)
{
  GstQOSType type;
  gdouble proportion;
  GstClockTimeDiff diff;
  GstClockTime timestamp;

  gst_event_parse_qos (event, &type, &proportion, &diff, &timestamp);
  GST_OBJECT_LOCK (self);
  self->qos_proportion = proportion;
  if (!GST_CLOCK_TIME_IS_VALID (timestamp))
    self->qos_earliest = GST_CLOCK_TIME_NONE;
  else if (diff > 0)
    self->qos_earliest = timestamp + 2 * diff;
  else
    self->qos_earliest = (GstClockTime) MAX ((GstClockTimeDiff) timestamp
        + diff, 0);
  GST_DEBUG_OBJECT (self, "QoS: earliest %" GST_TIME_FORMAT ", proportion %f",
      GST_TIME_ARGS (self->qos_earliest), proportion);
  GST_OBJECT_UNLOCK (self);
}

static gboolean
gst_kosmosg_filter_src_query (GstAggregator * agg, GstQuery * query)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (agg);

  if (gst_kosmosg_cuda_handle_query (&self->engine, query))
    return TRUE;
  if (GST_QUERY_TYPE (query) == GST_QUERY_CAPS) {
    GstCaps *filter, *caps;

    gst_query_parse_caps (query, &filter);
    caps = gst_kosmosg_engine_src_caps (&self->engine, filter);
    gst_query_set_caps_result (query, caps);
    gst_caps_unref (caps);
    return TRUE;
  }
  return GST_AGGREGATOR_CLASS (parent_class)->src_query (agg, query);
}

/* A downstream that takes CUDA memory only is refused with the reason
 * (GstAggregator would otherwise stop silently when it does not meet the
 * template, as in a build without gst-cuda). */
static gboolean
gst_kosmosg_filter_negotiate (GstAggregator * agg)
{
  if (!gst_kosmosg_cuda_check_peer (&GST_KOSMOSG_FILTER (agg)->engine,
          agg->srcpad))
    return FALSE;
  return GST_AGGREGATOR_CLASS (parent_class)->negotiate (agg);
}

/* the CUDA context for upstream CUDA elements (gstkosmosgcuda.c) */
static gboolean
gst_kosmosg_filter_sink_query (GstAggregator * agg, GstAggregatorPad * pad,
    GstQuery * query)
{
  if (gst_kosmosg_cuda_handle_query (&GST_KOSMOSG_FILTER (agg)->engine, query))
    return TRUE;
  return GST_AGGREGATOR_CLASS (parent_class)->sink_query (agg, pad, query);
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

  if (!gst_kosmosg_output_info_from_caps (&self->engine, caps, &info))
    return FALSE;
  self->out_info = info;
  return GST_AGGREGATOR_CLASS (parent_class)->negotiated_src_caps (agg, caps);
}

/* After a flush (the task is stopped): the next image goes at the start of
 * the segment a seek set at the earliest. */
static GstFlowReturn
gst_kosmosg_filter_flush (GstAggregator * agg)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (agg);

  GST_OBJECT_LOCK (self);
  self->last_pts = GST_AGGREGATOR_PAD (agg->srcpad)->segment.start;
  GST_OBJECT_UNLOCK (self);
  qos_reset (self);
  return GST_FLOW_OK;
}

static gboolean
gst_kosmosg_filter_start (GstAggregator * agg)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (agg);

  self->generated_once = FALSE;
  self->last_pts = 0;
  qos_reset (self);
  g_atomic_int_set (&self->live, 0);
  g_atomic_int_set (&self->generating, 0);
  gst_video_info_init (&self->out_info);
  gst_kosmosg_engine_set_cancel (&self->engine, FALSE);
  return TRUE;
}

static gboolean
gst_kosmosg_filter_stop (GstAggregator * agg)
{
  GList *l;

  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (agg);
  GList *pads = sorted_sink_pads (self), *dead;

  /* the ControlNets go before the model can (READY->NULL) */
  for (l = pads; l; l = l->next) {
    gst_kosmosg_filter_pad_clear (l->data);
    gst_kosmosg_filter_pad_close_net (l->data);
    ((GstKosmosGFilterPad *) l->data)->had_image = FALSE;
  }
  g_list_free_full (pads, gst_object_unref);
  GST_OBJECT_LOCK (self);
  dead = self->dead_nets;
  self->dead_nets = NULL;
  GST_OBJECT_UNLOCK (self);
  g_list_free_full (dead, (GDestroyNotify) kg_control_net_close);
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
    GstCaps *peer = gst_pad_peer_query_caps (srcpad, NULL);
    GstCaps *caps = gst_kosmosg_engine_intersect_caps (&self->engine, peer);
    gchar *stream_id;

    gst_caps_unref (peer);
    if (!caps)
      return FALSE;
    caps = gst_kosmosg_fixate_src_caps (caps);
    if (!gst_kosmosg_output_info_from_caps (&self->engine, caps,
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

/* The src pad's task in text-only mode: one batch (the generation loop
 * kosmosgsrc runs too), stamped from the segment start, then EOS and
 * pause. A seek restarts it. */
static void
text_only_loop (gpointer data)
{
  GstKosmosGFilter *self = data;
  GstPad *srcpad = GST_AGGREGATOR_SRC_PAD (self);
  gint seq = g_atomic_int_get (&self->flush_seq);
  GstFlowReturn ret = GST_FLOW_NOT_NEGOTIATED;
  GstKosmosGGenerator *gen = &self->text_gen;
  GstEvent *eos;

  if (text_only_push_events (self)) {
    GstClockTime stream_time;
    gboolean latency_changed;

    gst_kosmosg_generator_reset (gen, self->text_segment.start);
    self->last_pts = self->text_segment.start;
    GST_OBJECT_LOCK (self);
    stream_time = gst_segment_to_stream_time (&GST_AGGREGATOR_PAD
        (srcpad)->segment, GST_FORMAT_TIME, self->text_segment.start);
    GST_OBJECT_UNLOCK (self);
    ret = gst_kosmosg_generator_run (gen, &self->engine, &self->settings,
        &self->out_info, stream_time, &latency_changed);
    if (ret == GST_FLOW_OK && g_atomic_int_get (&self->flush_seq) != seq)
      ret = GST_FLOW_FLUSHING;
    while (ret == GST_FLOW_OK && gst_kosmosg_generator_pending (gen) > 0) {
      GstBuffer *buf = gst_kosmosg_generator_pop (gen, &self->engine,
          &self->out_info, GST_CLOCK_TIME_NONE);

      if (!buf) {
        ret = GST_FLOW_ERROR;
        break;
      }
      self->last_pts = GST_BUFFER_PTS (buf);
      GST_OBJECT_LOCK (self);
      GST_AGGREGATOR_PAD (srcpad)->segment.position = self->last_pts;
      GST_OBJECT_UNLOCK (self);
      ret = gst_pad_push (srcpad, buf);
    }
    gst_kosmosg_generator_clear (gen);
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

/* Flushes a pad its upstream did not flush for the seek seqnum: it keeps
 * its reference for the next generation (see the pad's flush), its segment
 * and its EOS. The aggregator restarts its task once every pad saw the
 * seek's FLUSH_STOP. */
static void
flush_pad_locally (GstPad * pad, guint32 seqnum, gboolean start)
{
  GstKosmosGFilterPad *kpad = GST_KOSMOSG_FILTER_PAD (pad);
  GstEvent *ev, *segment, *eos;

  if (start) {
    GST_OBJECT_LOCK (kpad);
    kpad->keep_on_flush = TRUE;
    GST_OBJECT_UNLOCK (kpad);
    ev = gst_event_new_flush_start ();
    gst_event_set_seqnum (ev, seqnum);
    gst_pad_send_event (pad, ev);
    return;
  }
  segment = gst_pad_get_sticky_event (pad, GST_EVENT_SEGMENT, 0);
  eos = gst_pad_get_sticky_event (pad, GST_EVENT_EOS, 0);
  ev = gst_event_new_flush_stop (TRUE);
  gst_event_set_seqnum (ev, seqnum);
  gst_pad_send_event (pad, ev);
  if (segment) {
    segment = gst_event_make_writable (segment);
    gst_event_set_seqnum (segment, seqnum);
    gst_pad_send_event (pad, segment);
  }
  if (eos) {
    gst_event_unref (eos);
    ev = gst_event_new_eos ();
    gst_event_set_seqnum (ev, seqnum);
    gst_pad_send_event (pad, ev);
  }
}

/* A flushing seek with reference pads (see docs/elements.md): the
 * generation in progress is cancelled at its next step, the seek goes
 * upstream, and the pads upstream did not flush (still images at EOS) are
 * flushed here keeping their reference, so the element generates again at
 * the seek position in a new segment and sends EOS again when every pad is
 * at EOS. A seek that a pad could not follow (a live pipeline, an upstream
 * still streaming that cannot seek) is refused before anything changes. */
static gboolean
reference_seek (GstKosmosGFilter * self, GstEvent * event)
{
  GstAggregator *agg = GST_AGGREGATOR (self);
  gdouble rate;
  GstFormat format;
  GstSeekFlags flags;
  guint32 seqnum = gst_event_get_seqnum (event);
  GList *pads, *l;
  gboolean ok = TRUE;

  gst_event_parse_seek (event, &rate, &format, &flags, NULL, NULL, NULL,
      NULL);
  if (!(flags & GST_SEEK_FLAG_FLUSH))
    return GST_AGGREGATOR_CLASS (parent_class)->src_event (agg, event);
  GST_OBJECT_LOCK (self);
  if (seqnum == self->seek_seqnum) {
    /* the same seek through another sink of the pipeline */
    GST_OBJECT_UNLOCK (self);
    gst_event_unref (event);
    return TRUE;
  }
  GST_OBJECT_UNLOCK (self);
  if (format != GST_FORMAT_TIME || rate <= 0.0) {
    GST_DEBUG_OBJECT (self, "refusing a %s seek at rate %f",
        gst_format_get_name (format), rate);
    gst_event_unref (event);
    return FALSE;
  }
  if (GST_CLOCK_TIME_IS_VALID (gst_aggregator_get_latency (agg))) {
    GST_DEBUG_OBJECT (self, "live: refusing to seek");
    gst_event_unref (event);
    return FALSE;
  }
  pads = sorted_sink_pads (self);
  for (l = pads; l && ok; l = l->next) {
    GstPad *pad = l->data;
    GstQuery *q;
    gboolean seekable = FALSE;

    if (GST_PAD_IS_EOS (pad))
      continue;
    q = gst_query_new_seeking (GST_FORMAT_TIME);
    if (gst_pad_peer_query (pad, q))
      gst_query_parse_seeking (q, NULL, &seekable, NULL, NULL);
    gst_query_unref (q);
    if (!seekable) {
      GST_DEBUG_OBJECT (self, "refusing to seek: pad %s streams from an "
          "upstream that cannot seek", GST_PAD_NAME (pad));
      ok = FALSE;
    }
  }
  if (!pads || !ok) {
    g_list_free_full (pads, gst_object_unref);
    gst_event_unref (event);
    return FALSE;
  }

  GST_OBJECT_LOCK (self);
  self->seek_seqnum = seqnum;
  GST_OBJECT_UNLOCK (self);
  /* before the aggregator stops its task, which waits for aggregate() */
  g_atomic_int_inc (&self->flush_seq);
  gst_kosmosg_engine_set_cancel (&self->engine, TRUE);
  /* forwards the seek upstream; a pad upstream flushed has its FLUSH_STOP
   * once this returns, for a flushing seek runs in the seeking thread */
  GST_AGGREGATOR_CLASS (parent_class)->src_event (agg, event);

  for (gint pass = 0; pass < 2; pass++) {
    for (l = pads; l; l = l->next) {
      GstKosmosGFilterPad *pad = l->data;
      gboolean flushed;

      GST_OBJECT_LOCK (pad);
      flushed = pad->flush_stop_seqnum == seqnum;
      GST_OBJECT_UNLOCK (pad);
      if (!flushed)
        flush_pad_locally (GST_PAD (pad), seqnum, pass == 0);
    }
  }
  g_list_free_full (pads, gst_object_unref);
  gst_kosmosg_engine_set_cancel (&self->engine, FALSE);
  return TRUE;
}

static gboolean
gst_kosmosg_filter_src_event (GstAggregator * agg, GstEvent * event)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (agg);

  if (GST_EVENT_TYPE (event) == GST_EVENT_SEEK) {
    if (is_text_only (self))
      return text_only_seek (self, event);
    return reference_seek (self, event);
  }
  if (GST_EVENT_TYPE (event) == GST_EVENT_QOS)
    qos_update (self, event);
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

/* control_%u pads: GstAggregator names every pad it makes sink_%u */
static GstAggregatorPad *
gst_kosmosg_filter_create_new_pad (GstAggregator * agg, GstPadTemplate * templ,
    const gchar * req_name, const GstCaps * caps)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (agg);
  GstKosmosGFilterPad *pad;
  guint serial;
  gchar *name;

  if (g_strcmp0 (GST_PAD_TEMPLATE_NAME_TEMPLATE (templ), "control_%u"))
    return GST_AGGREGATOR_CLASS (parent_class)->create_new_pad (agg, templ,
        req_name, caps);
  GST_OBJECT_LOCK (self);
  if (req_name && g_str_has_prefix (req_name, "control_")
      && g_ascii_isdigit (req_name[8])) {
    serial = (guint) g_ascii_strtoull (req_name + 8, NULL, 10);
    self->control_serial = MAX (self->control_serial, serial + 1);
  } else {
    serial = self->control_serial++;
  }
  GST_OBJECT_UNLOCK (self);
  name = g_strdup_printf ("control_%u", serial);
  pad = g_object_new (GST_TYPE_KOSMOSG_FILTER_PAD, "name", name, "direction",
      GST_PAD_SINK, "template", templ, NULL);
  g_free (name);
  pad->control = TRUE;
  return GST_AGGREGATOR_PAD (pad);
}

static void
gst_kosmosg_filter_release_pad (GstElement * element, GstPad * pad)
{
  GstKosmosGFilter *self = GST_KOSMOSG_FILTER (element);
  GstKosmosGFilterPad *kpad = GST_KOSMOSG_FILTER_PAD (pad);
  gchar *name = gst_pad_get_name (pad);
  kg_control_net *net;

  /* a generation may still use the pad's ControlNet: closed at stop() */
  GST_OBJECT_LOCK (kpad);
  net = kpad->net;
  kpad->net = NULL;
  g_clear_pointer (&kpad->net_location, g_free);
  GST_OBJECT_UNLOCK (kpad);
  if (net) {
    GST_OBJECT_LOCK (self);
    self->dead_nets = g_list_prepend (self->dead_nets, net);
    GST_OBJECT_UNLOCK (self);
  }

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
      &control_template, GST_TYPE_KOSMOSG_FILTER_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &src_template, GST_TYPE_AGGREGATOR_PAD);

  /**
   * GstKosmosGFilter:control-guidance-start:
   *
   * Fraction of the denoising steps before the ControlNets of the control_%u
   * pads start acting (diffusers' control_guidance_start; the demo's 0).
   */
  g_object_class_install_property (gobject_class, PROP_CONTROL_GUIDANCE_START,
      g_param_spec_double ("control-guidance-start", "Control guidance start",
          "Fraction of the steps before the ControlNets act", 0.0, 1.0, 0.0,
          G_PARAM_READWRITE | GST_PARAM_MUTABLE_PLAYING |
          G_PARAM_STATIC_STRINGS));
  /**
   * GstKosmosGFilter:control-guidance-end:
   *
   * Fraction of the denoising steps after which the ControlNets stop
   * (diffusers' control_guidance_end; the demo's 1).
   */
  g_object_class_install_property (gobject_class, PROP_CONTROL_GUIDANCE_END,
      g_param_spec_double ("control-guidance-end", "Control guidance end",
          "Fraction of the steps after which the ControlNets stop", 0.0, 1.0,
          1.0, G_PARAM_READWRITE | GST_PARAM_MUTABLE_PLAYING |
          G_PARAM_STATIC_STRINGS));

  element_class->change_state =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_change_state);
  element_class->request_new_pad =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_request_new_pad);
  element_class->release_pad =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_release_pad);
  agg_class->src_event = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_src_event);
  agg_class->aggregate = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_aggregate);
  agg_class->sink_event = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_sink_event);
  agg_class->update_src_caps =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_update_src_caps);
  agg_class->src_query = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_src_query);
  agg_class->sink_query = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_sink_query);
  agg_class->negotiate = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_negotiate);
  agg_class->fixate_src_caps =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_fixate_src_caps);
  agg_class->negotiated_src_caps =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_negotiated_src_caps);
  agg_class->start = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_start);
  agg_class->flush = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_flush);
  agg_class->get_next_time =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_get_next_time);
  agg_class->stop = GST_DEBUG_FUNCPTR (gst_kosmosg_filter_stop);
  agg_class->create_new_pad =
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_create_new_pad);

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
  self->qos_earliest = GST_CLOCK_TIME_NONE;
  self->qos_proportion = 1.0;
  self->control_end = 1.0;
  gst_video_info_init (&self->out_info);
  gst_segment_init (&self->text_segment, GST_FORMAT_TIME);
  gst_kosmosg_generator_init (&self->text_gen);
  self->agg_src_activate_mode = GST_PAD_ACTIVATEMODEFUNC (srcpad);
  gst_pad_set_activatemode_function (srcpad,
      GST_DEBUG_FUNCPTR (gst_kosmosg_filter_src_activate_mode));
}
