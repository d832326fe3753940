/* test_gst_src.c - kosmosgsrc with GstHarness and in pipelines on the real
 * engine (CPU backend, tiny model, 64x64, 2 steps): num-images then EOS with
 * the bytes of kg_generate, live regeneration on a prompt change, unlock
 * during a generation, the plugin's metadata, seeks (prerolling, during a
 * regeneration, after EOS; live: refused), live timestamps and latency,
 * framerate, QoS. */
#include "test_gst_common.h"

static GstHarness *
src_harness (GstElement * e)
{
  GstHarness *h = gst_harness_new_with_element (e, NULL, "src");

  gst_harness_set_sink_caps_str (h, TEST_SINK_CAPS);
  return h;
}

GST_START_TEST (test_num_images_then_eos)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgsrc", "a red bicycle", TEST_STEPS,
      &bus);
  GstHarness *h;
  GstBuffer *o[2];
  GstCaps *caps;
  kg_output want = { 0 };
  GstEvent *ev;
  gboolean eos = FALSE;

  g_object_set (e, "num-images", 2, NULL);
  h = src_harness (e);
  gst_harness_play (h);
  o[0] = gst_harness_pull (h);
  o[1] = gst_harness_pull (h);
  fail_unless (o[0] && o[1]);
  caps = gst_pad_get_current_caps (h->sinkpad);
  engine_generate ("a red bicycle", NULL, NULL, 0, 64, 64, 2, &want);
  for (gint i = 0; i < 2; i++) {
    gint64 seed = 0;

    assert_same_image (o[i], caps, &want, i);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (o[i]), 0);
    fail_unless (gst_structure_get_int64 (meta_of (o[i]), "seed", &seed));
    fail_unless_equals_int64 (seed, TEST_SEED);
    gst_buffer_unref (o[i]);
  }
  while (!eos && (ev = gst_harness_pull_event (h))) {
    eos = GST_EVENT_TYPE (ev) == GST_EVENT_EOS;
    gst_event_unref (ev);
  }
  fail_unless (eos);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 0);
  assert_no_error (bus);

  kg_output_free (&want);
  gst_caps_unref (caps);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

GST_START_TEST (test_live_prompt_change)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgsrc", "a red bicycle", TEST_STEPS,
      &bus);
  GstHarness *h;
  GstBuffer *a, *b;
  GstCaps *caps;
  kg_output wa = { 0 }, wb = { 0 };
  GstQuery *q;
  gboolean live = FALSE;
  GstClockTime min_lat = 0, max_lat = 0;

  g_object_set (e, "is-live", TRUE, NULL);
  h = src_harness (e);
  gst_harness_use_systemclock (h);
  gst_harness_play (h);
  a = gst_harness_pull (h);
  fail_unless (a != NULL);
  /* nothing new until the prompt changes */
  g_usleep (G_USEC_PER_SEC / 2);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 0);
  g_object_set (e, "prompt", "a blue boat", NULL);
  b = gst_harness_pull (h);
  fail_unless (b != NULL);
  fail_unless_equals_string (gst_structure_get_string (meta_of (b),
          "prompt"), "a blue boat");
  fail_unless (GST_BUFFER_PTS (b) >= GST_BUFFER_PTS (a));

  caps = gst_pad_get_current_caps (h->sinkpad);
  engine_generate ("a red bicycle", NULL, NULL, 0, 64, 64, 1, &wa);
  engine_generate ("a blue boat", NULL, NULL, 0, 64, 64, 1, &wb);
  assert_same_image (a, caps, &wa, 0);
  assert_same_image (b, caps, &wb, 0);

  q = gst_query_new_latency ();
  fail_unless (gst_pad_peer_query (h->sinkpad, q));
  gst_query_parse_latency (q, &live, &min_lat, &max_lat);
  fail_unless (live);
  fail_unless (min_lat > 0, "latency not from the running estimate");
  gst_query_unref (q);
  assert_no_error (bus);

  kg_output_free (&wa);
  kg_output_free (&wb);
  gst_caps_unref (caps);
  gst_buffer_unref (a);
  gst_buffer_unref (b);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

/* PAUSED->READY while a 1000-step generation runs: unlock cancels it
 * between steps, without an error. */
GST_START_TEST (test_stop_mid_generation)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgsrc", "a red bicycle", 1000, &bus);
  GstHarness *h = src_harness (e);
  GstMessage *msg;
  gint64 t0;
  gdouble took;

  gst_harness_play (h);
  msg = pop_element_message (bus, "kosmosg-progress", 120);
  fail_unless (msg != NULL);
  gst_message_unref (msg);
  t0 = g_get_monotonic_time ();
  fail_unless (gst_element_set_state (e, GST_STATE_READY) !=
      GST_STATE_CHANGE_FAILURE);
  took = (g_get_monotonic_time () - t0) / 1e6;
  GST_INFO ("PAUSED->READY took %.2f s", took);
  fail_unless (took < 60.0);
  while ((msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT))) {
    fail_if (gst_message_has_name (msg, "kosmosg-done"),
        "the 1000-step generation completed");
    gst_message_unref (msg);
  }
  fail_unless (gst_harness_try_pull (h) == NULL);
  assert_no_error (bus);

  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

/* ---- pipelines: kosmosgsrc name=s ... ! 64x64 ! appsink ---- */

typedef struct
{
  GstElement *pipeline;
  GstElement *src;
  GstElement *sink;
  GstBus *bus;
} Pipe;

static void
pipe_start (Pipe * p, const gchar * props)
{
  gchar *desc = g_strdup_printf ("kosmosgsrc name=s model-location=\"%s\" "
      "backend=cpu seed=%d %s ! " TEST_SINK_CAPS " ! appsink name=out "
      "sync=false", tiny_model (), TEST_SEED, props);
  GError *err = NULL;

  p->pipeline = gst_parse_launch (desc, &err);
  fail_unless (p->pipeline != NULL, "%s: %s", desc, err ? err->message : "");
  g_free (desc);
  p->src = gst_bin_get_by_name (GST_BIN (p->pipeline), "s");
  p->sink = gst_bin_get_by_name (GST_BIN (p->pipeline), "out");
  p->bus = gst_element_get_bus (p->pipeline);
  gst_element_set_state (p->pipeline, GST_STATE_PLAYING);
}

static void
pipe_stop (Pipe * p)
{
  fail_unless_equals_int (gst_element_set_state (p->pipeline, GST_STATE_NULL),
      GST_STATE_CHANGE_SUCCESS);
  gst_object_unref (p->src);
  gst_object_unref (p->sink);
  gst_bus_set_flushing (p->bus, TRUE);
  gst_object_unref (p->bus);
  gst_object_unref (p->pipeline);
}

static GstSample *
pull_sample (Pipe * p, gdouble timeout)
{
  GstSample *sample = NULL;

  g_signal_emit_by_name (p->sink, "try-pull-sample",
      (GstClockTime) (timeout * GST_SECOND), &sample);
  return sample;
}

/* Waits for EOS on the bus (fails on an error), counting kosmosg-done. */
static gint
wait_eos (Pipe * p, gdouble timeout)
{
  gint64 end = g_get_monotonic_time () + (gint64) (timeout * G_USEC_PER_SEC);
  gint done = 0;

  for (;;) {
    gint64 left = end - g_get_monotonic_time ();
    GstMessage *msg;

    fail_unless (left > 0, "no EOS within %.0f s", timeout);
    msg = gst_bus_timed_pop_filtered (p->bus, left * GST_USECOND,
        GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_ELEMENT);
    fail_unless (msg != NULL, "no EOS within %.0f s", timeout);
    if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
      GError *e = NULL;
      gchar *dbg = NULL;

      gst_message_parse_error (msg, &e, &dbg);
      fail ("unexpected error: %s (%s)", e->message, dbg);
    }
    if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_EOS) {
      gst_message_unref (msg);
      return done;
    }
    done += gst_message_has_name (msg, "kosmosg-done");
    gst_message_unref (msg);
  }
}

/* The elapsed time of the next kosmosg-progress message. */
static GstClockTime
progress_elapsed (GstBus * bus)
{
  GstMessage *msg = pop_element_message (bus, "kosmosg-progress", 120);
  guint64 elapsed = 0;

  fail_unless (msg != NULL, "no kosmosg-progress");
  fail_unless (gst_structure_get_uint64 (gst_message_get_structure (msg),
          "elapsed", &elapsed));
  gst_message_unref (msg);
  return elapsed;
}

static gboolean
seek_to (Pipe * p, GstClockTime pos)
{
  return gst_element_seek_simple (p->pipeline, GST_FORMAT_TIME,
      GST_SEEK_FLAG_FLUSH, (gint64) pos);
}

/* A pulled sample: its image is new (kosmosg-done seen by the caller), its
 * PTS and its segment's start are the seek position. */
static void
assert_sample_at (GstSample * sample, GstClockTime pos)
{
  const GstSegment *seg;

  fail_unless (sample != NULL, "no image after the seek");
  seg = gst_sample_get_segment (sample);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (gst_sample_get_buffer (sample)),
      pos);
  fail_unless (seg != NULL);
  fail_unless_equals_uint64 (seg->start, pos);
}

/* Issue 16 (3), kosmosgsrc: a flushing seek during the first generation
 * (prerolling, 1000 steps) cancels it at the next step boundary, within a
 * second of the step in progress, and a new image comes in a new segment
 * at the seek position; a second seek during the generation the first one
 * started does the same; a seek after EOS gives a new image and EOS again.
 * Each image has the bytes of kg_generate. */
GST_START_TEST (test_seeks)
{
  Pipe p;
  GstSample *sample;
  GstClockTime e1, e2, step;
  kg_output want = { 0 };
  gint64 t0;
  gdouble seek_s, image_s;

  pipe_start (&p, "prompt=\"a red bicycle\" num-inference-steps=1000");
  e1 = progress_elapsed (p.bus);
  e2 = progress_elapsed (p.bus);
  step = e2 - e1;

  /* 1: prerolling; half a step after a progress message, so that the
   * seek lands inside a step rather than on its boundary */
  g_object_set (p.src, "num-inference-steps", TEST_STEPS, NULL);
  g_usleep (step / 2000);
  t0 = g_get_monotonic_time ();
  fail_unless (seek_to (&p, 3 * GST_SECOND), "seek while prerolling refused");
  seek_s = (g_get_monotonic_time () - t0) / 1e6;
  sample = pull_sample (&p, 60);
  image_s = (g_get_monotonic_time () - t0) / 1e6;
  g_print ("kosmosgsrc seek while prerolling: step %.3f s, seek returned "
      "(generation cancelled) after %.3f s, new image after %.3f s\n",
      step / 1e9, seek_s, image_s);
  fail_unless (seek_s < step / 1e9 + 1.0, "the seek took %.3f s, a step "
      "%.3f s", seek_s, step / 1e9);
  assert_sample_at (sample, 3 * GST_SECOND);
  engine_generate ("a red bicycle", NULL, NULL, 0, 64, 64, 1, &want);
  assert_same_image (gst_sample_get_buffer (sample),
      gst_sample_get_caps (sample), &want, 0);
  gst_sample_unref (sample);
  fail_unless_equals_int (wait_eos (&p, 60), 1);

  /* 2: during the generation a seek started */
  g_object_set (p.src, "num-inference-steps", 1000, NULL);
  fail_unless (seek_to (&p, 0), "seek after EOS refused");
  progress_elapsed (p.bus);
  g_object_set (p.src, "num-inference-steps", TEST_STEPS, NULL);
  g_usleep (step / 2000);
  t0 = g_get_monotonic_time ();
  fail_unless (seek_to (&p, 2 * GST_SECOND), "second seek refused");
  seek_s = (g_get_monotonic_time () - t0) / 1e6;
  sample = pull_sample (&p, 60);
  image_s = (g_get_monotonic_time () - t0) / 1e6;
  g_print ("kosmosgsrc seek during a regeneration: seek returned after "
      "%.3f s, new image after %.3f s\n", seek_s, image_s);
  fail_unless (seek_s < step / 1e9 + 1.0, "the seek took %.3f s", seek_s);
  assert_sample_at (sample, 2 * GST_SECOND);
  assert_same_image (gst_sample_get_buffer (sample),
      gst_sample_get_caps (sample), &want, 0);
  gst_sample_unref (sample);
  fail_unless_equals_int (wait_eos (&p, 60), 1);

  /* 3: after EOS */
  fail_unless (seek_to (&p, GST_SECOND), "seek after EOS refused");
  sample = pull_sample (&p, 60);
  assert_sample_at (sample, GST_SECOND);
  gst_sample_unref (sample);
  fail_unless_equals_int (wait_eos (&p, 60), 1);

  kg_output_free (&want);
  pipe_stop (&p);
}

GST_END_TEST;

/* A live source is not seekable: the seek is refused at once and the
 * generation goes on to its image. */
GST_START_TEST (test_live_seek_refused)
{
  Pipe p;
  GstSample *sample;

  pipe_start (&p, "prompt=\"a red bicycle\" is-live=true "
      "num-inference-steps=20");
  progress_elapsed (p.bus);
  fail_if (seek_to (&p, GST_SECOND), "a live kosmosgsrc accepted a seek");
  sample = pull_sample (&p, 60);
  fail_unless (sample != NULL, "no image after the refused seek");
  gst_sample_unref (sample);
  assert_no_error (p.bus);
  pipe_stop (&p);
}

GST_END_TEST;

static GstClockTime
running_time (GstElement * e)
{
  GstClock *clock = gst_element_get_clock (e);
  GstClockTime now;

  fail_unless (clock != NULL);
  now = gst_clock_get_time (clock) - gst_element_get_base_time (e);
  gst_object_unref (clock);
  return now;
}

static GstClockTime
query_min_latency (GstHarness * h, gboolean * live)
{
  GstQuery *q = gst_query_new_latency ();
  GstClockTime min = 0, max = 0;

  fail_unless (gst_pad_peer_query (h->sinkpad, q));
  gst_query_parse_latency (q, live, &min, &max);
  fail_unless (!GST_CLOCK_TIME_IS_VALID (max), "max latency %"
      GST_TIME_FORMAT ": nothing is lost while downstream waits",
      GST_TIME_ARGS (max));
  gst_query_unref (q);
  return min;
}

static gint
count_latency_messages (GstBus * bus)
{
  GstMessage *msg;
  gint n = 0;

  while ((msg = gst_bus_pop_filtered (bus, GST_MESSAGE_LATENCY))) {
    n++;
    gst_message_unref (msg);
  }
  return n;
}

/* Issue 16 (9): live, an image is stamped with the running time at which
 * its generation started (not when it ended), and the latency reported is
 * the generation time: min > 0 after the first image (with a LATENCY
 * message), max unbounded. Before, the PTS was taken when the image was
 * pushed, after the last step. */
GST_START_TEST (test_live_timestamps)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgsrc", "a red bicycle", TEST_STEPS,
      &bus);
  GstHarness *h;
  GstBuffer *a, *b;
  GstClockTime rt0, rt1, rt2, min;
  gboolean live = FALSE;

  g_object_set (e, "is-live", TRUE, NULL);
  h = src_harness (e);
  gst_harness_use_systemclock (h);
  gst_harness_play (h);
  fail_unless_equals_uint64 (query_min_latency (h, &live), 0);
  fail_unless (live);
  a = gst_harness_pull (h);
  fail_unless (a != NULL);
  fail_unless (count_latency_messages (bus) >= 1, "no LATENCY message after "
      "the first generation");
  min = query_min_latency (h, &live);
  fail_unless (min > 0, "latency not from the generation time");

  g_object_set (e, "num-inference-steps", 40, NULL);
  rt0 = running_time (e);
  g_object_set (e, "prompt", "a blue boat", NULL);
  progress_elapsed (bus);
  rt1 = running_time (e);
  b = gst_harness_pull (h);
  fail_unless (b != NULL);
  rt2 = running_time (e);
  g_print ("live kosmosgsrc: prompt set at %" GST_TIME_FORMAT ", PTS %"
      GST_TIME_FORMAT ", first step done %" GST_TIME_FORMAT ", image out %"
      GST_TIME_FORMAT " (running times); latency after the first image %"
      GST_TIME_FORMAT "\n", GST_TIME_ARGS (rt0),
      GST_TIME_ARGS (GST_BUFFER_PTS (b)), GST_TIME_ARGS (rt1),
      GST_TIME_ARGS (rt2), GST_TIME_ARGS (min));
  fail_unless (GST_BUFFER_PTS (b) >= rt0 && GST_BUFFER_PTS (b) <= rt1,
      "PTS not the running time when the generation started");
  fail_unless (GST_BUFFER_PTS (b) >= GST_BUFFER_PTS (a));
  fail_unless (rt2 > rt1);
  assert_no_error (bus);

  gst_buffer_unref (a);
  gst_buffer_unref (b);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

static gboolean
caps_all_framerate_0 (GstCaps * caps)
{
  for (guint i = 0; i < gst_caps_get_size (caps); i++) {
    const GValue *v = gst_structure_get_value (gst_caps_get_structure (caps,
            i), "framerate");

    if (!v || !GST_VALUE_HOLDS_FRACTION (v)
        || gst_value_get_fraction_numerator (v) != 0)
      return FALSE;
  }
  return !gst_caps_is_empty (caps);
}

/* Framerate: live, images come at no fixed rate, so the caps say 0/1 and
 * a downstream asking for 30/1 is refused; not live, a framerate asked for
 * spaces the images one frame apart. */
GST_START_TEST (test_framerate)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgsrc", "a red bicycle", TEST_STEPS,
      &bus);
  GstPad *pad = gst_element_get_static_pad (e, "src");
  GstCaps *caps, *want;
  GstHarness *h;
  GstBuffer *o[2];
  gchar *str;

  fail_unless (gst_element_set_state (e, GST_STATE_READY) ==
      GST_STATE_CHANGE_SUCCESS);
  g_object_set (e, "is-live", TRUE, NULL);
  caps = gst_pad_query_caps (pad, NULL);
  str = gst_caps_to_string (caps);
  GST_INFO ("live caps %s", str);
  fail_unless (caps_all_framerate_0 (caps), "live caps %s", str);
  g_free (str);
  gst_caps_unref (caps);
  want = gst_caps_from_string ("video/x-raw,framerate=30/1");
  caps = gst_pad_query_caps (pad, want);
  fail_unless (gst_caps_is_empty (caps), "live accepts 30/1");
  gst_caps_unref (caps);
  g_object_set (e, "is-live", FALSE, NULL);
  caps = gst_pad_query_caps (pad, want);
  fail_if (gst_caps_is_empty (caps), "not live refuses 30/1");
  gst_caps_unref (caps);
  gst_caps_unref (want);
  gst_object_unref (pad);

  g_object_set (e, "num-images", 2, NULL);
  h = gst_harness_new_with_element (e, NULL, "src");
  gst_harness_set_sink_caps_str (h, TEST_SINK_CAPS ",framerate=5/1");
  gst_harness_play (h);
  o[0] = gst_harness_pull (h);
  o[1] = gst_harness_pull (h);
  fail_unless (o[0] && o[1]);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (o[0]), 0);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (o[1]), GST_SECOND / 5);
  fail_unless_equals_uint64 (GST_BUFFER_DURATION (o[1]), GST_SECOND / 5);
  gst_buffer_unref (o[0]);
  gst_buffer_unref (o[1]);
  assert_no_error (bus);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

/* QoS, live: an image reported 2 s late raises the latency by 2 s with a
 * LATENCY message; an early one (negative jitter) changes nothing. Not
 * live: no latency, QoS ignored. */
GST_START_TEST (test_live_qos)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgsrc", "a red bicycle", TEST_STEPS,
      &bus);
  GstHarness *h;
  GstBuffer *a;
  GstClockTime min0, min1;
  gboolean live = FALSE;

  g_object_set (e, "is-live", TRUE, NULL);
  h = src_harness (e);
  gst_harness_use_systemclock (h);
  gst_harness_play (h);
  a = gst_harness_pull (h);
  fail_unless (a != NULL);
  min0 = query_min_latency (h, &live);
  count_latency_messages (bus);
  fail_unless (gst_harness_push_upstream_event (h,
          gst_event_new_qos (GST_QOS_TYPE_UNDERFLOW, 1.0, 2 * GST_SECOND,
              GST_BUFFER_PTS (a))));
  fail_unless_equals_int (count_latency_messages (bus), 1);
  min1 = query_min_latency (h, &live);
  g_print ("live kosmosgsrc QoS: latency %" GST_TIME_FORMAT " -> %"
      GST_TIME_FORMAT " after an image 2 s late\n", GST_TIME_ARGS (min0),
      GST_TIME_ARGS (min1));
  fail_unless_equals_uint64 (min1, min0 + 2 * GST_SECOND);
  fail_unless (gst_harness_push_upstream_event (h,
          gst_event_new_qos (GST_QOS_TYPE_UNDERFLOW, 1.0, -GST_SECOND / 2,
              GST_BUFFER_PTS (a))));
  fail_unless_equals_int (count_latency_messages (bus), 0);
  fail_unless_equals_uint64 (query_min_latency (h, &live), min1);
  gst_buffer_unref (a);
  gst_harness_teardown (h);
  release_element (e, bus);

  e = make_element ("kosmosgsrc", "a red bicycle", TEST_STEPS, &bus);
  h = src_harness (e);
  gst_harness_play (h);
  a = gst_harness_pull (h);
  fail_unless (a != NULL);
  gst_harness_push_upstream_event (h, gst_event_new_qos
      (GST_QOS_TYPE_UNDERFLOW, 1.0, 2 * GST_SECOND, GST_BUFFER_PTS (a)));
  fail_unless_equals_int (count_latency_messages (bus), 0);
  fail_unless_equals_uint64 (query_min_latency (h, &live), 0);
  fail_if (live);
  gst_buffer_unref (a);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

/* Issue 16 (9): the plugin names its own origin and package (the meson
 * options package_origin / package_name), not the model's repository, and
 * both elements carry complete metadata. */
GST_START_TEST (test_plugin_metadata)
{
  GstPlugin *plugin = gst_registry_find_plugin (gst_registry_get (),
      "kosmosg");
  const gchar *factories[] = { "kosmosgfilter", "kosmosgsrc" };
  const gchar *klasses[] = { "Filter/Editor/Video", "Source/Video" };

  fail_unless (plugin != NULL);
  GST_INFO ("origin \"%s\", package \"%s\", source \"%s\", licence %s",
      gst_plugin_get_origin (plugin), gst_plugin_get_package (plugin),
      gst_plugin_get_source (plugin), gst_plugin_get_license (plugin));
  fail_unless_equals_string (gst_plugin_get_origin (plugin),
      KG_PACKAGE_ORIGIN);
  fail_if (strstr (gst_plugin_get_origin (plugin), "microsoft") != NULL,
      "the origin is the model's repository");
  fail_unless_equals_string (gst_plugin_get_package (plugin),
      KG_PACKAGE_NAME);
  fail_unless_equals_string (gst_plugin_get_source (plugin), "kosmosg-gst");
  fail_unless_equals_string (gst_plugin_get_license (plugin), "LGPL");
  fail_unless (strstr (gst_plugin_get_description (plugin), "Kosmos-G"));
  gst_object_unref (plugin);

  for (guint i = 0; i < G_N_ELEMENTS (factories); i++) {
    GstElementFactory *f = gst_element_factory_find (factories[i]);
    const gchar *keys[] = { GST_ELEMENT_METADATA_LONGNAME,
      GST_ELEMENT_METADATA_DESCRIPTION, GST_ELEMENT_METADATA_AUTHOR
    };

    fail_unless (f != NULL);
    fail_unless_equals_string (gst_element_factory_get_metadata (f,
            GST_ELEMENT_METADATA_KLASS), klasses[i]);
    for (guint k = 0; k < G_N_ELEMENTS (keys); k++) {
      const gchar *v = gst_element_factory_get_metadata (f, keys[k]);

      fail_unless (v && *v, "%s has no %s", factories[i], keys[k]);
    }
    fail_unless_equals_string (gst_element_factory_get_metadata (f,
            GST_ELEMENT_METADATA_AUTHOR), "kosmosg-gst authors");
    gst_object_unref (f);
  }
}

GST_END_TEST;

static Suite *
kosmosgsrc_suite (void)
{
  Suite *s = suite_create ("kosmosgsrc");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_num_images_then_eos);
  tcase_add_test (tc, test_live_prompt_change);
  tcase_add_test (tc, test_stop_mid_generation);
  tcase_add_test (tc, test_plugin_metadata);
  tcase_add_test (tc, test_seeks);
  tcase_add_test (tc, test_live_seek_refused);
  tcase_add_test (tc, test_live_timestamps);
  tcase_add_test (tc, test_framerate);
  tcase_add_test (tc, test_live_qos);
  return s;
}

GST_CHECK_MAIN (kosmosgsrc);
