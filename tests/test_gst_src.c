/* test_gst_src.c - kosmosgsrc with GstHarness on the real engine (CPU
 * backend, tiny model, 64x64, 2 steps): num-images then EOS with the bytes
 * of kg_generate, live regeneration on a prompt change, unlock during a
 * generation. */
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
  return s;
}

GST_CHECK_MAIN (kosmosgsrc);
