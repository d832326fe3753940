/* test_gst_common.h - helpers of the GstCheck suites of the kosmosg plugin:
 * elements set up for the tiny test model (KG_TINY_MODEL) on the CPU
 * backend, reference images, bus helpers, and the engine called directly
 * for comparisons. */
#ifndef KG_TEST_GST_COMMON_H
#define KG_TEST_GST_COMMON_H

#include <string.h>

#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>

#include "kosmosg.h"

#define TEST_SEED 42
#define TEST_STEPS 2
#define TEST_SIZE 64
#define TEST_SINK_CAPS "video/x-raw,width=64,height=64"
#define META_NAME "KosmosGGenerationMeta"

G_GNUC_UNUSED static const gchar *
tiny_model (void)
{
  const gchar *p = g_getenv ("KG_TINY_MODEL");

  fail_unless (p != NULL && *p, "KG_TINY_MODEL is not set");
  return p;
}

/* A floating-free element with the test defaults and a bus of its own. */
G_GNUC_UNUSED static GstElement *
make_element (const gchar * factory, const gchar * prompt, guint steps,
    GstBus ** bus)
{
  GstElement *e = gst_element_factory_make (factory, NULL);

  fail_unless (e != NULL, "cannot create %s", factory);
  gst_object_ref_sink (e);
  g_object_set (e, "model-location", tiny_model (), "backend", KG_BACKEND_CPU,
      "prompt", prompt, "num-inference-steps", steps,
      "seed", (gint64) TEST_SEED, NULL);
  if (bus) {
    *bus = gst_bus_new ();
    gst_element_set_bus (e, *bus);
  }
  return e;
}

/* Deterministic test picture: every byte a function of (x, y, channel). */
G_GNUC_UNUSED static GstBuffer *
make_ref (GstVideoFormat fmt, gint w, gint h, guint salt, GstVideoInfo * info)
{
  GstVideoFrame frame;
  GstBuffer *buf;

  gst_video_info_set_format (info, fmt, w, h);
  GST_VIDEO_INFO_FPS_N (info) = 0;
  GST_VIDEO_INFO_FPS_D (info) = 1;
  buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (info), NULL);
  fail_unless (gst_video_frame_map (&frame, info, buf, GST_MAP_WRITE));
  for (gint y = 0; y < h; y++) {
    guint8 *row = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame, 0)
        + y * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0);
    gint n = w * GST_VIDEO_FRAME_COMP_PSTRIDE (&frame, 0);

    for (gint i = 0; i < n; i++)
      row[i] = (guint8) ((i * 7 + y * 13 + salt * 61 + (i * y) / 5) & 255);
  }
  gst_video_frame_unmap (&frame);
  GST_BUFFER_PTS (buf) = 0;
  return buf;
}

G_GNUC_UNUSED static gchar *
caps_string (const GstVideoInfo * info)
{
  GstCaps *caps = gst_video_info_to_caps (info);
  gchar *s = gst_caps_to_string (caps);

  gst_caps_unref (caps);
  return s;
}

G_GNUC_UNUSED static void
set_src_caps (GstHarness * h, const GstVideoInfo * info)
{
  gchar *s = caps_string (info);

  gst_harness_set_src_caps_str (h, s);
  g_free (s);
}

G_GNUC_UNUSED static kg_pixel_format
kg_format_of (GstVideoFormat f)
{
  switch (f) {
    case GST_VIDEO_FORMAT_RGB:
      return KG_PIX_RGB;
    case GST_VIDEO_FORMAT_RGBA:
      return KG_PIX_RGBA;
    case GST_VIDEO_FORMAT_RGBx:
      return KG_PIX_RGBX;
    case GST_VIDEO_FORMAT_BGR:
      return KG_PIX_BGR;
    case GST_VIDEO_FORMAT_BGRA:
      return KG_PIX_BGRA;
    case GST_VIDEO_FORMAT_BGRx:
      return KG_PIX_BGRX;
    default:
      return KG_PIX_GRAY8;
  }
}

/* kg_generate on the same inputs, as the reference for the element's
 * bytes: n_images reference buffers with their infos, steps steps. */
G_GNUC_UNUSED static void
engine_generate_steps (const gchar * prompt, GstBuffer ** refs,
    const GstVideoInfo * infos, gint n_images, gint width, gint height,
    gint num_images, gint steps, kg_output * out)
{
  kg_model_options opt;
  kg_model *m = NULL;
  kg_session *s = NULL;
  kg_params p;
  kg_error err = { 0 };
  kg_image images[4];
  GstVideoFrame frames[4];

  fail_unless (n_images <= 4);
  kg_model_options_init (&opt);
  opt.backend = KG_BACKEND_CPU;
  fail_unless (kg_model_open (&m, tiny_model (), &opt, &err) == KG_OK, "%s",
      err.msg);
  fail_unless (kg_session_new (&s, m, &err) == KG_OK, "%s", err.msg);
  for (gint i = 0; i < n_images; i++) {
    fail_unless (gst_video_frame_map (&frames[i], (GstVideoInfo *) & infos[i],
            refs[i], GST_MAP_READ));
    images[i].format = kg_format_of (GST_VIDEO_INFO_FORMAT (&infos[i]));
    images[i].width = GST_VIDEO_INFO_WIDTH (&infos[i]);
    images[i].height = GST_VIDEO_INFO_HEIGHT (&infos[i]);
    images[i].stride = GST_VIDEO_FRAME_PLANE_STRIDE (&frames[i], 0);
    images[i].data = GST_VIDEO_FRAME_PLANE_DATA (&frames[i], 0);
  }
  kg_params_init (&p);
  p.prompt = prompt;
  p.images = images;
  p.n_images = n_images;
  p.steps = steps;
  p.guidance_scale = 6.0f;
  p.seed = TEST_SEED;
  p.num_images = num_images;
  p.width = width;
  p.height = height;
  fail_unless (kg_generate (s, &p, NULL, NULL, NULL, out, &err) == KG_OK,
      "%s", err.msg);
  for (gint i = 0; i < n_images; i++)
    gst_video_frame_unmap (&frames[i]);
  kg_session_free (s);
  kg_model_close (m);
}

/* The same with TEST_STEPS steps. */
G_GNUC_UNUSED static void
engine_generate (const gchar * prompt, GstBuffer ** refs,
    const GstVideoInfo * infos, gint n_images, gint width, gint height,
    gint num_images, kg_output * out)
{
  engine_generate_steps (prompt, refs, infos, n_images, width, height,
      num_images, TEST_STEPS, out);
}

/* Asserts buf holds image index of out, in RGB or RGBA (alpha 255). */
G_GNUC_UNUSED static void
assert_same_image (GstBuffer * buf, GstCaps * caps, const kg_output * out,
    gint index)
{
  GstVideoInfo info;
  GstVideoFrame frame;
  gint bpp, diff = 0;

  fail_unless (gst_video_info_from_caps (&info, caps));
  fail_unless_equals_int (GST_VIDEO_INFO_WIDTH (&info), out->width);
  fail_unless_equals_int (GST_VIDEO_INFO_HEIGHT (&info), out->height);
  bpp = GST_VIDEO_INFO_FORMAT (&info) == GST_VIDEO_FORMAT_RGBA ? 4 : 3;
  fail_unless (gst_video_frame_map (&frame, &info, buf, GST_MAP_READ));
  for (gint y = 0; y < out->height; y++) {
    const guint8 *row = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame,
        0) + y * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0);
    const guint8 *ref = out->rgb + ((gsize) index * out->height + y)
        * out->width * 3;

    for (gint x = 0; x < out->width; x++) {
      diff += memcmp (row + x * bpp, ref + x * 3, 3) != 0;
      if (bpp == 4)
        diff += row[x * 4 + 3] != 255;
    }
  }
  gst_video_frame_unmap (&frame);
  GST_INFO ("%d of %d pixels differ from kg_generate", diff,
      out->width * out->height);
  fail_unless_equals_int (diff, 0);
}

G_GNUC_UNUSED static GstStructure *
meta_of (GstBuffer * buf)
{
  GstCustomMeta *meta = gst_buffer_get_custom_meta (buf, META_NAME);

  fail_unless (meta != NULL, "no " META_NAME " on the output buffer");
  return gst_custom_meta_get_structure (meta);
}

/* The next element message named name (others of that kind are skipped
 * only when skip is TRUE), or NULL after timeout seconds. */
G_GNUC_UNUSED static GstMessage *
pop_element_message (GstBus * bus, const gchar * name, gdouble timeout)
{
  gint64 end = g_get_monotonic_time () + (gint64) (timeout * G_USEC_PER_SEC);

  for (;;) {
    gint64 left = end - g_get_monotonic_time ();
    GstMessage *msg;

    if (left <= 0)
      return NULL;
    msg = gst_bus_timed_pop_filtered (bus, left * GST_USECOND,
        GST_MESSAGE_ELEMENT | GST_MESSAGE_ERROR);
    if (!msg)
      return NULL;
    if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
      GError *e = NULL;
      gchar *dbg = NULL;

      gst_message_parse_error (msg, &e, &dbg);
      fail ("unexpected error: %s (%s)", e->message, dbg);
    }
    if (gst_message_has_name (msg, name))
      return msg;
    gst_message_unref (msg);
  }
}

/* The first error on the bus within timeout seconds; domain/code checked,
 * and its text must contain needle. */
G_GNUC_UNUSED static void
assert_error (GstBus * bus, GQuark domain, gint code, const gchar * needle)
{
  GstMessage *msg = gst_bus_timed_pop_filtered (bus, 120 * GST_SECOND,
      GST_MESSAGE_ERROR);
  GError *e = NULL;
  gchar *dbg = NULL;

  fail_unless (msg != NULL, "no error posted (expected \"%s\")", needle);
  gst_message_parse_error (msg, &e, &dbg);
  GST_INFO ("error: %s (%s)", e->message, dbg);
  fail_unless (g_error_matches (e, domain, code),
      "error \"%s\" is %s/%d, expected %s/%d", e->message,
      g_quark_to_string (e->domain), e->code, g_quark_to_string (domain),
      code);
  fail_unless (strstr (e->message, needle) != NULL,
      "error \"%s\" does not name \"%s\"", e->message, needle);
  g_error_free (e);
  g_free (dbg);
  gst_message_unref (msg);
}

G_GNUC_UNUSED static void
assert_no_error (GstBus * bus)
{
  GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);

  if (msg) {
    GError *e = NULL;
    gchar *dbg = NULL;

    gst_message_parse_error (msg, &e, &dbg);
    fail ("unexpected error: %s (%s)", e->message, dbg);
  }
}

G_GNUC_UNUSED static void
release_element (GstElement * e, GstBus * bus)
{
  gst_element_set_state (e, GST_STATE_NULL);
  gst_element_set_bus (e, NULL);
  if (bus) {
    gst_bus_set_flushing (bus, TRUE);
    gst_object_unref (bus);
  }
  gst_object_unref (e);
}

#endif
