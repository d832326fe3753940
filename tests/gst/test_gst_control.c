/* test_gst_control.c - kosmosgfilter's control_%u pads with GstHarness on the
 * real engine (CPU, tiny model, 64x64, 2 steps) and the tiny ControlNet
 * converted at build time ($KG_CONTROLNET_FILE): a control map with two
 * reference images, a control map with a text-only prompt, two ControlNets
 * with their own scales and the element's guidance window, each byte for
 * byte against kg_generate with the same kg_control list; canny on a photo;
 * and the errors naming the pad: no location, a model file as ControlNet, a
 * ControlNet for another U-Net ($KG_CONTROLNET_OTHER), an unusable format. */
#include "test_gst_common.h"

static const gchar *
env_path (const gchar * name)
{
  const gchar *p = g_getenv (name);

  fail_unless (p != NULL && *p, "%s is not set", name);
  return p;
}

typedef struct
{
  GstBuffer *buf;
  GstVideoInfo info;
  gdouble scale;
  gboolean canny;
} Ctl;

/* kg_generate with the same references and control maps. */
static void
reference (const gchar * prompt, GstBuffer ** refs, const GstVideoInfo * infos,
    gint n_refs, const Ctl * ctls, gint n_ctls, gdouble start, gdouble end,
    kg_output * out)
{
  kg_model_options opt;
  kg_model *m = NULL;
  kg_session *s = NULL;
  kg_control_net *net = NULL;
  kg_params p;
  kg_error err = { 0 };
  kg_image images[4];
  kg_control controls[4];
  GstVideoFrame frames[8];

  kg_model_options_init (&opt);
  opt.backend = KG_BACKEND_CPU;
  fail_unless (kg_model_open (&m, tiny_model (), &opt, &err) == KG_OK, "%s",
      err.msg);
  fail_unless (kg_session_new (&s, m, &err) == KG_OK, "%s", err.msg);
  fail_unless (kg_control_net_open (&net, m, env_path ("KG_CONTROLNET_FILE"),
          &err) == KG_OK, "%s", err.msg);
  for (gint i = 0; i < n_refs + n_ctls; i++) {
    const GstVideoInfo *info = i < n_refs ? &infos[i] : &ctls[i - n_refs].info;
    GstBuffer *buf = i < n_refs ? refs[i] : ctls[i - n_refs].buf;
    kg_image im;

    fail_unless (gst_video_frame_map (&frames[i], (GstVideoInfo *) info, buf,
            GST_MAP_READ));
    im.format = kg_format_of (GST_VIDEO_INFO_FORMAT (info));
    im.width = GST_VIDEO_INFO_WIDTH (info);
    im.height = GST_VIDEO_INFO_HEIGHT (info);
    im.stride = GST_VIDEO_FRAME_PLANE_STRIDE (&frames[i], 0);
    im.data = GST_VIDEO_FRAME_PLANE_DATA (&frames[i], 0);
    if (i < n_refs) {
      images[i] = im;
    } else {
      kg_control *c = &controls[i - n_refs];

      kg_control_init (c);
      c->net = net;
      c->image = im;
      c->scale = (float) ctls[i - n_refs].scale;
      c->canny = ctls[i - n_refs].canny;
      c->guidance_start = (float) start;
      c->guidance_end = (float) end;
    }
  }
  kg_params_init (&p);
  p.prompt = prompt;
  p.images = images;
  p.n_images = n_refs;
  p.controls = controls;
  p.n_controls = n_ctls;
  p.steps = TEST_STEPS;
  p.guidance_scale = 6.0f;
  p.seed = TEST_SEED;
  p.width = p.height = TEST_SIZE;
  fail_unless (kg_generate (s, &p, NULL, NULL, NULL, out, &err) == KG_OK,
      "%s", err.msg);
  for (gint i = 0; i < n_refs + n_ctls; i++)
    gst_video_frame_unmap (&frames[i]);
  kg_control_net_close (net);
  kg_session_free (s);
  kg_model_close (m);
}

static GstHarness *
pad_harness (GstElement * e, const gchar * pad, gboolean with_src)
{
  GstHarness *h = gst_harness_new_with_element (e, pad, with_src ? "src" :
      NULL);

  gst_harness_set_live (h, FALSE);
  if (with_src)
    gst_harness_set_sink_caps_str (h, TEST_SINK_CAPS);
  return h;
}

static void
set_pad (GstElement * e, const gchar * name, const gchar * location,
    gdouble scale, gboolean canny)
{
  GstPad *pad = gst_element_get_static_pad (e, name);

  fail_unless (pad != NULL, "no pad %s", name);
  g_object_set (pad, "location", location, "conditioning-scale", scale,
      "canny", canny, NULL);
  gst_object_unref (pad);
}

/* n_refs reference pads (sink_i) and n_ctls control pads (control_i): the
 * output equals kg_generate with the same maps, scales and window. */
static void
run_controls (const gchar * prompt, gint n_refs, const Ctl * ctls, gint n_ctls,
    gdouble start, gdouble end)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", prompt, TEST_STEPS, &bus);
  GstHarness *hs[8];
  GstBuffer *refs[4];
  GstVideoInfo infos[4];
  GstBuffer *out;
  GstCaps *caps;
  kg_output want = { 0 };
  gint n = 0;

  g_object_set (e, "control-guidance-start", start, "control-guidance-end",
      end, NULL);
  for (gint i = 0; i < n_refs; i++) {
    gchar *name = g_strdup_printf ("sink_%d", i);

    refs[i] = make_ref (i ? GST_VIDEO_FORMAT_BGRA : GST_VIDEO_FORMAT_RGB,
        40 + 8 * i, 30 + 6 * i, (guint) i + 1, &infos[i]);
    hs[n] = pad_harness (e, name, n == 0);
    n++;
    g_free (name);
  }
  for (gint i = 0; i < n_ctls; i++) {
    gchar *name = g_strdup_printf ("control_%d", i);

    hs[n] = pad_harness (e, name, n == 0);
    n++;
    set_pad (e, name, env_path ("KG_CONTROLNET_FILE"), ctls[i].scale,
        ctls[i].canny);
    g_free (name);
  }
  for (gint i = 0; i < n; i++) {
    const GstVideoInfo *info = i < n_refs ? &infos[i] : &ctls[i - n_refs].info;
    GstBuffer *buf = i < n_refs ? refs[i] : ctls[i - n_refs].buf;

    set_src_caps (hs[i], info);
    fail_unless_equals_int (gst_harness_push (hs[i], gst_buffer_ref (buf)),
        GST_FLOW_OK);
  }
  for (gint i = 0; i < n; i++)
    gst_harness_push_event (hs[i], gst_event_new_eos ());
  out = gst_harness_pull (hs[0]);
  fail_unless (out != NULL);
  caps = gst_pad_get_current_caps (hs[0]->sinkpad);
  reference (prompt, refs, infos, n_refs, ctls, n_ctls, start, end, &want);
  assert_same_image (out, caps, &want, 0);
  assert_no_error (bus);

  kg_output_free (&want);
  gst_caps_unref (caps);
  gst_buffer_unref (out);
  for (gint i = n - 1; i >= 0; i--)
    gst_harness_teardown (hs[i]);
  for (gint i = 0; i < n_refs; i++)
    gst_buffer_unref (refs[i]);
  release_element (e, bus);
}

GST_START_TEST (test_control_two_references)
{
  Ctl c = { 0 };

  c.buf = make_ref (GST_VIDEO_FORMAT_RGB, 64, 64, 9, &c.info);
  c.scale = 0.8;
  run_controls ("<i> next to <i>", 2, &c, 1, 0.0, 1.0);
  gst_buffer_unref (c.buf);
}

GST_END_TEST;

GST_START_TEST (test_control_text_only)
{
  Ctl c = { 0 };

  /* 50x40: resized to the 64x64 output */
  c.buf = make_ref (GST_VIDEO_FORMAT_RGBA, 50, 40, 5, &c.info);
  c.scale = 1.0;
  run_controls ("a watercolor lighthouse", 0, &c, 1, 0.0, 1.0);
  gst_buffer_unref (c.buf);
}

GST_END_TEST;

GST_START_TEST (test_two_controlnets_window)
{
  Ctl c[2] = { {0}, {0} };

  c[0].buf = make_ref (GST_VIDEO_FORMAT_RGB, 64, 64, 11, &c[0].info);
  c[0].scale = 0.5;
  c[1].buf = make_ref (GST_VIDEO_FORMAT_GRAY8, 64, 64, 12, &c[1].info);
  c[1].scale = 1.0;
  run_controls ("<i> in the snow", 1, c, 2, 0.0, 0.5);
  gst_buffer_unref (c[0].buf);
  gst_buffer_unref (c[1].buf);
}

GST_END_TEST;

GST_START_TEST (test_control_canny)
{
  Ctl c = { 0 };

  c.buf = make_ref (GST_VIDEO_FORMAT_RGB, 80, 60, 3, &c.info);
  c.scale = 1.0;
  c.canny = TRUE;
  run_controls ("a dog", 0, &c, 1, 0.0, 1.0);
  gst_buffer_unref (c.buf);
}

GST_END_TEST;

/* A control pad whose ControlNet cannot be used: an error naming the pad
 * (and the cause), no output. */
static void
run_bad_controlnet (const gchar * location, const gchar * needle)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", "a dog", TEST_STEPS, &bus);
  GstHarness *h = pad_harness (e, "control_0", TRUE);
  GstVideoInfo info;
  GstBuffer *buf = make_ref (GST_VIDEO_FORMAT_RGB, 64, 64, 1, &info);
  GstPad *pad = gst_element_get_static_pad (e, "control_0");

  if (location)
    g_object_set (pad, "location", location, NULL);
  gst_object_unref (pad);
  set_src_caps (h, &info);
  gst_harness_push (h, buf);
  gst_harness_push_event (h, gst_event_new_eos ());
  assert_error (bus, GST_RESOURCE_ERROR, location ? GST_RESOURCE_ERROR_OPEN_READ
      : GST_RESOURCE_ERROR_NOT_FOUND, needle);
  fail_unless (gst_harness_try_pull (h) == NULL);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_START_TEST (test_control_without_location)
{
  run_bad_controlnet (NULL, "Control pad control_0 has no ControlNet");
}

GST_END_TEST;

GST_START_TEST (test_control_model_file)
{
  run_bad_controlnet (tiny_model (), "not a ControlNet file");
}

GST_END_TEST;

GST_START_TEST (test_control_other_unet)
{
  run_bad_controlnet (env_path ("KG_CONTROLNET_OTHER"),
      "does not fit the model's U-Net");
}

GST_END_TEST;

GST_START_TEST (test_control_missing_file)
{
  run_bad_controlnet ("/nonexistent/canny.safetensors",
      "/nonexistent/canny.safetensors");
}

GST_END_TEST;

/* A map in a format the pad does not take is refused at negotiation. */
GST_START_TEST (test_control_bad_format)
{
  GstElement *e = make_element ("kosmosgfilter", "a dog", TEST_STEPS, NULL);
  GstHarness *h = pad_harness (e, "control_0", TRUE);

  gst_harness_set_src_caps_str (h, "video/x-raw,format=I420,width=64,"
      "height=64,framerate=0/1");
  fail_unless_equals_int (gst_harness_push (h, gst_buffer_new_allocate (NULL,
              64 * 64 * 3 / 2, NULL)), GST_FLOW_NOT_NEGOTIATED);
  gst_harness_teardown (h);
  release_element (e, NULL);
}

GST_END_TEST;

/* control pads are children for gst-launch's control_0::location= and do
 * not count against the <i> placeholders */
GST_START_TEST (test_control_pad_properties)
{
  GstElement *e = make_element ("kosmosgfilter", "<i>", TEST_STEPS, NULL);
  GstPad *ref = gst_element_request_pad_simple (e, "sink_%u");
  GstPad *ctl = gst_element_request_pad_simple (e, "control_%u");
  gchar *loc = NULL;
  gdouble scale = 0;

  fail_unless_equals_string (GST_PAD_NAME (ref), "sink_0");
  fail_unless_equals_string (GST_PAD_NAME (ctl), "control_0");
  gst_child_proxy_set (GST_CHILD_PROXY (e), "control_0::location", "x.st",
      "control_0::conditioning-scale", 0.25, NULL);
  g_object_get (ctl, "location", &loc, "conditioning-scale", &scale, NULL);
  fail_unless_equals_string (loc, "x.st");
  fail_unless_equals_float (scale, 0.25);
  g_free (loc);
  gst_element_release_request_pad (e, ctl);
  gst_element_release_request_pad (e, ref);
  gst_object_unref (ctl);
  gst_object_unref (ref);
  release_element (e, NULL);
}

GST_END_TEST;

static Suite *
kosmosg_control_suite (void)
{
  Suite *s = suite_create ("kosmosg_control");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_control_pad_properties);
  tcase_add_test (tc, test_control_two_references);
  tcase_add_test (tc, test_control_text_only);
  tcase_add_test (tc, test_two_controlnets_window);
  tcase_add_test (tc, test_control_canny);
  tcase_add_test (tc, test_control_without_location);
  tcase_add_test (tc, test_control_model_file);
  tcase_add_test (tc, test_control_other_unet);
  tcase_add_test (tc, test_control_missing_file);
  tcase_add_test (tc, test_control_bad_format);
  return s;
}

GST_CHECK_MAIN (kosmosg_control);
