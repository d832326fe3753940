/* test_gst_filter.c - kosmosgfilter with GstHarness on the real engine
 * (CPU backend, tiny model, 64x64, 2 steps): one, two and zero pads with
 * the bytes checked against kg_generate, pad index order, caps, EOS,
 * flush and state change mid-generation, messages, latency, framerate from
 * the input, downstream QoS (late references dropped and reported). */
#include "test_gst_common.h"

static GstHarness *
harness_for (GstElement * e, const gchar * pad)
{
  GstHarness *h = gst_harness_new_with_element (e, pad, "src");

  /* like filesrc ! pngdec: not live, every image counts */
  gst_harness_set_live (h, FALSE);
  gst_harness_set_sink_caps_str (h, TEST_SINK_CAPS);
  return h;
}

static void
assert_eos_next (GstHarness * h)
{
  GstEvent *ev;

  while ((ev = gst_harness_pull_event (h))) {
    GstEventType t = GST_EVENT_TYPE (ev);

    gst_event_unref (ev);
    if (t == GST_EVENT_EOS)
      return;
  }
  fail ("no EOS");
}

GST_START_TEST (test_one_pad)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", "<i> in the snow",
      TEST_STEPS, &bus);
  GstHarness *h = harness_for (e, "sink_0");
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 40, 30, 1, &info);
  GstBuffer *out;
  GstCaps *caps, *expected;
  GstStructure *meta;
  kg_output want = { 0 };
  gint64 seed = 0;
  guint steps = 0;
  gdouble guidance = 0;

  set_src_caps (h, &info);
  fail_unless_equals_int (gst_harness_push (h, gst_buffer_ref (ref)),
      GST_FLOW_OK);
  gst_harness_push_event (h, gst_event_new_eos ());
  out = gst_harness_pull (h);
  fail_unless (out != NULL);

  caps = gst_pad_get_current_caps (h->sinkpad);
  GST_INFO ("output caps %" GST_PTR_FORMAT, caps);
  expected = gst_caps_from_string ("video/x-raw,format=RGB,width=64,"
      "height=64,pixel-aspect-ratio=1/1,framerate=0/1");
  fail_unless (gst_caps_is_equal (caps, expected));
  gst_caps_unref (expected);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (out), 0);
  fail_unless (!GST_BUFFER_DURATION_IS_VALID (out));

  meta = meta_of (out);
  fail_unless (gst_structure_get (meta, "seed", G_TYPE_INT64, &seed,
          "num-inference-steps", G_TYPE_UINT, &steps,
          "guidance-scale", G_TYPE_DOUBLE, &guidance, NULL));
  fail_unless_equals_int64 (seed, TEST_SEED);
  fail_unless_equals_int (steps, TEST_STEPS);
  fail_unless_equals_float (guidance, 6.0);
  fail_unless_equals_string (gst_structure_get_string (meta, "prompt"),
      "<i> in the snow");

  engine_generate ("<i> in the snow", &ref, &info, 1, 64, 64, 1, &want);
  assert_same_image (out, caps, &want, 0);
  assert_eos_next (h);
  assert_no_error (bus);

  kg_output_free (&want);
  gst_caps_unref (caps);
  gst_buffer_unref (out);
  gst_buffer_unref (ref);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

/* Two pads with different formats and sizes; with swap, the pads' index
 * properties reverse the binding to the placeholders. */
static void
run_two_pads (gboolean swap)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", "<i> wearing <i>",
      TEST_STEPS, &bus);
  GstHarness *h0 = harness_for (e, "sink_0");
  GstHarness *h1 = gst_harness_new_with_element (e, "sink_1", NULL);
  GstVideoInfo infos[2], ordered_infos[2];
  GstBuffer *refs[2], *ordered[2];
  GstBuffer *out;
  GstCaps *caps;
  kg_output want = { 0 };

  refs[0] = make_ref (GST_VIDEO_FORMAT_RGBA, 48, 36, 2, &infos[0]);
  refs[1] = make_ref (GST_VIDEO_FORMAT_BGR, 30, 50, 3, &infos[1]);
  if (swap) {
    GstPad *p0 = gst_element_get_static_pad (e, "sink_0");
    GstPad *p1 = gst_element_get_static_pad (e, "sink_1");

    g_object_set (p0, "index", 1, NULL);
    g_object_set (p1, "index", 0, NULL);
    gst_object_unref (p0);
    gst_object_unref (p1);
  }
  set_src_caps (h0, &infos[0]);
  set_src_caps (h1, &infos[1]);
  fail_unless_equals_int (gst_harness_push (h0, gst_buffer_ref (refs[0])),
      GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_push (h1, gst_buffer_ref (refs[1])),
      GST_FLOW_OK);
  gst_harness_push_event (h0, gst_event_new_eos ());
  gst_harness_push_event (h1, gst_event_new_eos ());
  out = gst_harness_pull (h0);
  fail_unless (out != NULL);
  caps = gst_pad_get_current_caps (h0->sinkpad);

  ordered[0] = refs[swap ? 1 : 0];
  ordered[1] = refs[swap ? 0 : 1];
  ordered_infos[0] = infos[swap ? 1 : 0];
  ordered_infos[1] = infos[swap ? 0 : 1];
  engine_generate ("<i> wearing <i>", ordered, ordered_infos, 2, 64, 64, 1,
      &want);
  assert_same_image (out, caps, &want, 0);
  assert_eos_next (h0);
  assert_no_error (bus);

  kg_output_free (&want);
  gst_caps_unref (caps);
  gst_buffer_unref (out);
  gst_buffer_unref (refs[0]);
  gst_buffer_unref (refs[1]);
  gst_harness_teardown (h1);
  gst_harness_teardown (h0);
  release_element (e, bus);
}

GST_START_TEST (test_two_pads)
{
  run_two_pads (FALSE);
}

GST_END_TEST;

GST_START_TEST (test_two_pads_index)
{
  run_two_pads (TRUE);
}

GST_END_TEST;

/* No sink pad at all: a prompt-only generation. Through gst_harness_new_parse,
 * as a harness plays an element with sink pad templates the moment it is
 * created, before its sink caps could be set. */
GST_START_TEST (test_zero_pads)
{
  GstBus *bus = gst_bus_new ();
  gchar *desc = g_strdup_printf ("kosmosgfilter model-location=\"%s\" "
      "backend=cpu prompt=\"a red bicycle\" num-inference-steps=%d seed=%d "
      "! capsfilter caps=\"%s\"", tiny_model (), TEST_STEPS, TEST_SEED,
      TEST_SINK_CAPS);
  GstHarness *h = gst_harness_new_parse (desc);
  GstBuffer *out;
  GstCaps *caps;
  kg_output want = { 0 };

  gst_element_set_bus (h->element, bus);
  gst_harness_play (h);
  out = gst_harness_pull (h);
  fail_unless (out != NULL);
  caps = gst_pad_get_current_caps (h->sinkpad);
  engine_generate ("a red bicycle", NULL, NULL, 0, 64, 64, 1, &want);
  assert_same_image (out, caps, &want, 0);
  assert_eos_next (h);
  assert_no_error (bus);

  kg_output_free (&want);
  gst_caps_unref (caps);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
  gst_bus_set_flushing (bus, TRUE);
  gst_object_unref (bus);
  g_free (desc);
}

GST_END_TEST;

GST_START_TEST (test_caps_rgba_256)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", "<i> at night", TEST_STEPS,
      &bus);
  GstHarness *h = gst_harness_new_with_element (e, "sink_0", "src");
  GstVideoInfo info, out_info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGBA, 37, 53, 4, &info);
  GstBuffer *out;
  GstCaps *caps;
  kg_output want = { 0 };

  gst_harness_set_sink_caps_str (h,
      "video/x-raw,format=RGBA,width=256,height=256");
  set_src_caps (h, &info);
  gst_harness_push (h, gst_buffer_ref (ref));
  gst_harness_push_event (h, gst_event_new_eos ());
  out = gst_harness_pull (h);
  fail_unless (out != NULL);
  caps = gst_pad_get_current_caps (h->sinkpad);
  fail_unless (gst_video_info_from_caps (&out_info, caps));
  fail_unless_equals_int (GST_VIDEO_INFO_FORMAT (&out_info),
      GST_VIDEO_FORMAT_RGBA);
  fail_unless_equals_int (GST_VIDEO_INFO_WIDTH (&out_info), 256);
  fail_unless_equals_int (GST_VIDEO_INFO_HEIGHT (&out_info), 256);
  engine_generate ("<i> at night", &ref, &info, 1, 256, 256, 1, &want);
  assert_same_image (out, caps, &want, 0);
  assert_no_error (bus);

  kg_output_free (&want);
  gst_caps_unref (caps);
  gst_buffer_unref (out);
  gst_buffer_unref (ref);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

static void
run_refused_size (const gchar * sink_caps, const gchar * needle)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", "<i>", TEST_STEPS, &bus);
  GstHarness *h = gst_harness_new_with_element (e, "sink_0", "src");
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 5, &info);

  gst_harness_set_sink_caps_str (h, sink_caps);
  set_src_caps (h, &info);
  gst_harness_push (h, ref);
  gst_harness_push_event (h, gst_event_new_eos ());
  assert_error (bus, GST_CORE_ERROR, GST_CORE_ERROR_NEGOTIATION, needle);
  fail_unless (gst_harness_try_pull (h) == NULL);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_START_TEST (test_caps_250_refused)
{
  run_refused_size ("video/x-raw,width=250,height=250", "250x250");
}

GST_END_TEST;

/* 72x64: a multiple of 8 that is not one of 64 (latent 9x8). The U-Net
 * interpolates its upsamplers to the skips' sizes as diffusers does, so the
 * element makes it, equal to the engine's own image. */
GST_START_TEST(test_caps_72x64)
{
    GstBus *bus;
    GstElement *e = make_element("kosmosgfilter", "<i>", TEST_STEPS, &bus);
    GstHarness *h = gst_harness_new_with_element(e, "sink_0", "src");
    GstVideoInfo info, out_info;
    GstBuffer *ref = make_ref(GST_VIDEO_FORMAT_RGB, 32, 32, 5, &info);
    GstBuffer *out;
    GstCaps *caps;
    kg_output want = {0};

    gst_harness_set_sink_caps_str(h, "video/x-raw,width=72,height=64");
    set_src_caps(h, &info);
    gst_harness_push(h, gst_buffer_ref(ref));
    gst_harness_push_event(h, gst_event_new_eos());
    out = gst_harness_pull(h);
    fail_unless(out != NULL);
    caps = gst_pad_get_current_caps(h->sinkpad);
    fail_unless(gst_video_info_from_caps(&out_info, caps));
    fail_unless_equals_int(GST_VIDEO_INFO_WIDTH(&out_info), 72);
    fail_unless_equals_int(GST_VIDEO_INFO_HEIGHT(&out_info), 64);
    engine_generate("<i>", &ref, &info, 1, 72, 64, 1, &want);
    assert_same_image(out, caps, &want, 0);
    assert_no_error(bus);

    kg_output_free(&want);
    gst_caps_unref(caps);
    gst_buffer_unref(out);
    gst_buffer_unref(ref);
    gst_harness_teardown(h);
    release_element(e, bus);
}

GST_END_TEST;

/* Issue 16 (2): once the model is loaded the src caps state its size step
 * (kg_model_size_multiple) for both elements, so capsfilter/videoscale
 * fixate to a size it can make. */
static void
assert_caps_step (const gchar * factory, gint step)
{
  GstElement *e = make_element (factory, "a cat", TEST_STEPS, NULL);
  GstPad *src = gst_element_get_static_pad (e, "src");
  GstCaps *caps;
  const GValue *w, *h;

  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_READY),
      GST_STATE_CHANGE_SUCCESS);
  caps = gst_pad_query_caps (src, NULL);
  GST_INFO ("%s caps %" GST_PTR_FORMAT, factory, caps);
  w = gst_structure_get_value (gst_caps_get_structure (caps, 0), "width");
  h = gst_structure_get_value (gst_caps_get_structure (caps, 0), "height");
  fail_unless (GST_VALUE_HOLDS_INT_RANGE (w) && GST_VALUE_HOLDS_INT_RANGE (h));
  fail_unless_equals_int (gst_value_get_int_range_step (w), step);
  fail_unless_equals_int (gst_value_get_int_range_step (h), step);
  fail_unless_equals_int (gst_value_get_int_range_min (w), step);
  fail_unless_equals_int (gst_value_get_int_range_max (w) % step, 0);
  gst_caps_unref (caps);
  gst_object_unref (src);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_object_unref (e);
}

GST_START_TEST (test_caps_step)
{
  kg_model_options opt;
  kg_model *m = NULL;
  kg_error err = { 0 };
  gint step;

  kg_model_options_init (&opt);
  opt.backend = KG_BACKEND_CPU;
  fail_unless (kg_model_open (&m, tiny_model (), &opt, &err) == KG_OK, "%s",
      err.msg);
  step = kg_model_size_multiple (m);
  kg_model_close (m);
  GST_INFO ("tiny model size step %d", step);
  assert_caps_step ("kosmosgfilter", step);
  assert_caps_step ("kosmosgsrc", step);
}

GST_END_TEST;

/* Each new reference is a generation; EOS only after the last one. */
GST_START_TEST (test_eos_after_last)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", "<i>", TEST_STEPS, &bus);
  GstHarness *h = harness_for (e, "sink_0");
  GstVideoInfo info;
  GstBuffer *a = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 6, &info);
  GstBuffer *b = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 7, &info);
  GstBuffer *oa, *ob;
  GstCaps *caps;
  kg_output wa = { 0 }, wb = { 0 };

  GST_BUFFER_PTS (b) = GST_SECOND;
  set_src_caps (h, &info);
  gst_harness_push (h, gst_buffer_ref (a));
  gst_harness_push (h, gst_buffer_ref (b));
  gst_harness_push_event (h, gst_event_new_eos ());
  oa = gst_harness_pull (h);
  ob = gst_harness_pull (h);
  fail_unless (oa && ob);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (oa), 0);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (ob), GST_SECOND);
  caps = gst_pad_get_current_caps (h->sinkpad);
  engine_generate ("<i>", &a, &info, 1, 64, 64, 1, &wa);
  engine_generate ("<i>", &b, &info, 1, 64, 64, 1, &wb);
  assert_same_image (oa, caps, &wa, 0);
  assert_same_image (ob, caps, &wb, 0);
  assert_eos_next (h);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 0);
  assert_no_error (bus);

  kg_output_free (&wa);
  kg_output_free (&wb);
  gst_caps_unref (caps);
  gst_buffer_unref (oa);
  gst_buffer_unref (ob);
  gst_buffer_unref (a);
  gst_buffer_unref (b);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

/* The reference survives EOS: a new prompt on the EOS'd still image... is
 * covered by num-images here: two images per trigger, then EOS. */
GST_START_TEST (test_num_images)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", "<i>", TEST_STEPS, &bus);
  GstHarness *h;
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_GRAY8, 33, 21, 8, &info);
  GstBuffer *o[2];
  GstCaps *caps;
  kg_output want = { 0 };

  g_object_set (e, "num-images", 2, NULL);
  h = harness_for (e, "sink_0");
  set_src_caps (h, &info);
  gst_harness_push (h, gst_buffer_ref (ref));
  gst_harness_push_event (h, gst_event_new_eos ());
  o[0] = gst_harness_pull (h);
  o[1] = gst_harness_pull (h);
  fail_unless (o[0] && o[1]);
  caps = gst_pad_get_current_caps (h->sinkpad);
  engine_generate ("<i>", &ref, &info, 1, 64, 64, 2, &want);
  for (gint i = 0; i < 2; i++) {
    guint index = 9;

    assert_same_image (o[i], caps, &want, i);
    fail_unless (gst_structure_get_uint (meta_of (o[i]), "image-index",
            &index));
    fail_unless_equals_int (index, i);
    gst_buffer_unref (o[i]);
  }
  assert_eos_next (h);
  assert_no_error (bus);

  kg_output_free (&want);
  gst_caps_unref (caps);
  gst_buffer_unref (ref);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

/* Long generation (1000 steps) interrupted after its first step: by a
 * flush, after which a short generation on a new image must come out, and
 * by PAUSED->READY. Neither may post an error or a kosmosg-done for the
 * long run. */
static GstMessage *
wait_first_step (GstBus * bus)
{
  GstMessage *msg = pop_element_message (bus, "kosmosg-progress", 120);
  guint n = 0;

  fail_unless (msg != NULL, "no kosmosg-progress");
  fail_unless (gst_structure_get_uint (gst_message_get_structure (msg),
          "num-steps", &n));
  fail_unless_equals_int (n, 1000);
  return msg;
}

/* The steps the cancelled run made after the cancel, and no kosmosg-done
 * for it: the next done (if any) must be a 2-step run. */
static gint
drain_long_run (GstBus * bus, gboolean expect_short_done)
{
  GstMessage *msg;
  gint last = 0;

  while ((msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT))) {
    const GstStructure *s = gst_message_get_structure (msg);
    guint n = 0, step = 0;

    if (gst_structure_has_name (s, "kosmosg-done")) {
      fail_unless (gst_structure_get_uint (s, "num-steps", &n));
      fail_unless (expect_short_done && n == TEST_STEPS,
          "the cancelled %u-step generation completed", n);
    } else if (gst_structure_get_uint (s, "num-steps", &n) && n == 1000) {
      gst_structure_get_uint (s, "step", &step);
      last = (gint) step;
    }
    gst_message_unref (msg);
  }
  return last;
}

GST_START_TEST (test_flush_mid_generation)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", "<i>", 1000, &bus);
  GstHarness *h = harness_for (e, "sink_0");
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 9, &info);
  GstBuffer *ref2 = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 10, &info);
  GstBuffer *out;
  GstSegment seg;
  GstCaps *caps;
  kg_output want = { 0 };
  gint64 t0;
  gint last;

  set_src_caps (h, &info);
  gst_harness_push (h, ref);
  gst_message_unref (wait_first_step (bus));

  t0 = g_get_monotonic_time ();
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_start ()));
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_stop (TRUE)));
  g_object_set (e, "num-inference-steps", TEST_STEPS, NULL);
  gst_segment_init (&seg, GST_FORMAT_TIME);
  gst_harness_push_event (h, gst_event_new_segment (&seg));
  gst_harness_push (h, gst_buffer_ref (ref2));
  out = gst_harness_pull (h);
  fail_unless (out != NULL);
  GST_INFO ("flush to the next image: %.2f s",
      (g_get_monotonic_time () - t0) / 1e6);
  caps = gst_pad_get_current_caps (h->sinkpad);
  engine_generate ("<i>", &ref2, &info, 1, 64, 64, 1, &want);
  assert_same_image (out, caps, &want, 0);
  last = drain_long_run (bus, TRUE);
  GST_INFO ("the cancelled run stopped at step %d of 1000", last);
  fail_unless (last < 1000);
  assert_no_error (bus);

  kg_output_free (&want);
  gst_caps_unref (caps);
  gst_buffer_unref (out);
  gst_buffer_unref (ref2);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

GST_START_TEST (test_state_change_mid_generation)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", "<i>", 1000, &bus);
  GstHarness *h = harness_for (e, "sink_0");
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 11, &info);
  gint64 t0;
  gdouble took;
  gint last;

  set_src_caps (h, &info);
  gst_harness_push (h, ref);
  gst_message_unref (wait_first_step (bus));
  t0 = g_get_monotonic_time ();
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_READY),
      GST_STATE_CHANGE_SUCCESS);
  took = (g_get_monotonic_time () - t0) / 1e6;
  last = drain_long_run (bus, FALSE);
  GST_INFO ("PAUSED->READY took %.2f s; stopped at step %d of 1000", took,
      last);
  fail_unless (last < 1000);
  fail_unless (took < 60.0, "PAUSED->READY took %.1f s", took);
  fail_unless (gst_harness_try_pull (h) == NULL);
  assert_no_error (bus);

  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

GST_START_TEST (test_messages)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", "<i>", 3, &bus);
  GstHarness *h;
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 12, &info);
  GstBuffer *out;
  GstMessage *msg;
  GstQuery *q;
  gboolean live = TRUE;
  GstClockTime min_lat = 0, max_lat = 0;
  gint64 seed = -2, meta_seed = -3;
  gboolean saw_start = FALSE, saw_complete = FALSE;

  g_object_set (e, "seed", (gint64) - 1, NULL);
  h = harness_for (e, "sink_0");
  /* model load: PROGRESS start + complete, posted by NULL->READY */
  while ((msg = gst_bus_pop_filtered (bus, GST_MESSAGE_PROGRESS))) {
    GstProgressType type;
    gchar *code = NULL, *text = NULL;

    gst_message_parse_progress (msg, &type, &code, &text);
    fail_unless_equals_string (code, "model-load");
    fail_unless (strstr (text, tiny_model ()) != NULL, "%s", text);
    saw_start |= type == GST_PROGRESS_TYPE_START;
    saw_complete |= type == GST_PROGRESS_TYPE_COMPLETE;
    g_free (code);
    g_free (text);
    gst_message_unref (msg);
  }
  fail_unless (saw_start && saw_complete);

  set_src_caps (h, &info);
  gst_harness_push (h, gst_buffer_ref (ref));
  for (guint i = 1; i <= 3; i++) {
    guint step = 0, n = 0;

    msg = pop_element_message (bus, "kosmosg-progress", 120);
    fail_unless (msg != NULL);
    fail_unless (gst_structure_get (gst_message_get_structure (msg),
            "step", G_TYPE_UINT, &step, "num-steps", G_TYPE_UINT, &n, NULL));
    fail_unless_equals_int (step, i);
    fail_unless_equals_int (n, 3);
    gst_message_unref (msg);
  }
  msg = pop_element_message (bus, "kosmosg-done", 120);
  fail_unless (msg != NULL);
  {
    const GstStructure *s = gst_message_get_structure (msg);
    guint64 t_enc = 0, t_den = 0, t_dec = 0;

    fail_unless (gst_structure_get (s, "seed", G_TYPE_INT64, &seed,
            "encode-time", G_TYPE_UINT64, &t_enc,
            "denoise-time", G_TYPE_UINT64, &t_den,
            "decode-time", G_TYPE_UINT64, &t_dec, NULL));
    fail_unless (seed >= 0, "random seed %" G_GINT64_FORMAT, seed);
    fail_unless (t_den > 0 && t_dec > 0);
  }
  gst_message_unref (msg);
  out = gst_harness_pull (h);
  fail_unless (gst_structure_get_int64 (meta_of (out), "seed", &meta_seed));
  fail_unless_equals_int64 (meta_seed, seed);
  gst_buffer_unref (out);

  /* latency answered from the running estimate of a generation */
  q = gst_query_new_latency ();
  fail_unless (gst_pad_peer_query (h->sinkpad, q));
  gst_query_parse_latency (q, &live, &min_lat, &max_lat);
  GST_INFO ("latency: live %d min %" GST_TIME_FORMAT, live,
      GST_TIME_ARGS (min_lat));
  fail_unless (min_lat > 0);
  gst_query_unref (q);

  /* post-messages=false: a second image generates without messages */
  g_object_set (e, "post-messages", FALSE, NULL);
  gst_harness_push (h, make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 13, &info));
  out = gst_harness_pull (h);
  fail_unless (out != NULL);
  gst_buffer_unref (out);
  fail_unless (gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT) == NULL);
  assert_no_error (bus);

  gst_buffer_unref (ref);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

/* Issue 16 (9): the output framerate follows the references' (it was 0/1
 * whatever the input), and the duration is one frame of it. */
GST_START_TEST (test_framerate_follows_input)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", "<i>", TEST_STEPS, &bus);
  GstHarness *h = harness_for (e, "sink_0");
  GstVideoInfo info, out_info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 14, &info);
  GstBuffer *out;
  GstCaps *caps;

  GST_VIDEO_INFO_FPS_N (&info) = 30;
  GST_VIDEO_INFO_FPS_D (&info) = 1;
  set_src_caps (h, &info);
  gst_harness_push (h, ref);
  gst_harness_push_event (h, gst_event_new_eos ());
  out = gst_harness_pull (h);
  fail_unless (out != NULL);
  caps = gst_pad_get_current_caps (h->sinkpad);
  GST_INFO ("output caps %" GST_PTR_FORMAT, caps);
  fail_unless (gst_video_info_from_caps (&out_info, caps));
  fail_unless_equals_int (GST_VIDEO_INFO_FPS_N (&out_info), 30);
  fail_unless_equals_int (GST_VIDEO_INFO_FPS_D (&out_info), 1);
  fail_unless_equals_uint64 (GST_BUFFER_DURATION (out), GST_SECOND / 30);
  assert_eos_next (h);
  assert_no_error (bus);

  gst_caps_unref (caps);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

/* Issue 16 (9), QoS: a downstream QoS event (timestamp 1 s, 2 s late) makes
 * references before 5 s late: the one at 3 s is dropped with a QoS message
 * (counts: 1 used, 1 dropped) and not generated from; the one at 10 s is. */
GST_START_TEST (test_qos_late_reference_dropped)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgfilter", "<i>", TEST_STEPS, &bus);
  GstHarness *h = harness_for (e, "sink_0");
  GstVideoInfo info;
  GstBuffer *a = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 15, &info);
  GstBuffer *b = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 16, &info);
  GstBuffer *c = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 17, &info);
  GstBuffer *out;
  GstMessage *msg;
  GstCaps *caps;
  GstFormat format;
  guint64 processed = 0, dropped = 0, running_time = 0;
  gboolean live = TRUE;
  kg_output want = { 0 };

  GST_BUFFER_PTS (b) = 3 * GST_SECOND;
  GST_BUFFER_PTS (c) = 10 * GST_SECOND;
  set_src_caps (h, &info);
  gst_harness_push (h, gst_buffer_ref (a));
  out = gst_harness_pull (h);
  fail_unless (out != NULL);
  gst_buffer_unref (out);

  fail_unless (gst_harness_push_upstream_event (h,
          gst_event_new_qos (GST_QOS_TYPE_UNDERFLOW, 0.5, 2 * GST_SECOND,
              GST_SECOND)));
  gst_harness_push (h, gst_buffer_ref (b));
  gst_harness_push (h, gst_buffer_ref (c));
  out = gst_harness_pull (h);
  fail_unless (out != NULL);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (out), 10 * GST_SECOND);
  caps = gst_pad_get_current_caps (h->sinkpad);
  engine_generate ("<i>", &c, &info, 1, 64, 64, 1, &want);
  assert_same_image (out, caps, &want, 0);

  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_QOS);
  fail_unless (msg != NULL, "no QoS message for the late reference");
  gst_message_parse_qos (msg, &live, &running_time, NULL, NULL, NULL);
  gst_message_parse_qos_stats (msg, &format, &processed, &dropped);
  GST_INFO ("QoS: live %d, running time %" GST_TIME_FORMAT ", processed %"
      G_GUINT64_FORMAT ", dropped %" G_GUINT64_FORMAT, live,
      GST_TIME_ARGS (running_time), processed, dropped);
  fail_unless (!live);
  fail_unless_equals_uint64 (running_time, 3 * GST_SECOND);
  fail_unless_equals_int (format, GST_FORMAT_BUFFERS);
  fail_unless_equals_uint64 (processed, 1);
  fail_unless_equals_uint64 (dropped, 1);
  gst_message_unref (msg);
  fail_unless (gst_bus_pop_filtered (bus, GST_MESSAGE_QOS) == NULL);
  assert_no_error (bus);

  kg_output_free (&want);
  gst_caps_unref (caps);
  gst_buffer_unref (out);
  gst_buffer_unref (a);
  gst_buffer_unref (b);
  gst_buffer_unref (c);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

static Suite *
kosmosgfilter_suite (void)
{
  Suite *s = suite_create ("kosmosgfilter");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_one_pad);
  tcase_add_test (tc, test_two_pads);
  tcase_add_test (tc, test_two_pads_index);
  tcase_add_test (tc, test_zero_pads);
  tcase_add_test (tc, test_caps_rgba_256);
  tcase_add_test (tc, test_caps_250_refused);
  tcase_add_test(tc, test_caps_72x64);
  tcase_add_test (tc, test_caps_step);
  tcase_add_test (tc, test_eos_after_last);
  tcase_add_test (tc, test_num_images);
  tcase_add_test (tc, test_flush_mid_generation);
  tcase_add_test (tc, test_state_change_mid_generation);
  tcase_add_test (tc, test_messages);
  tcase_add_test (tc, test_framerate_follows_input);
  tcase_add_test (tc, test_qos_late_reference_dropped);
  return s;
}

GST_CHECK_MAIN (kosmosgfilter);
