/* test_gst_cuda.c - CUDA memory output of kosmosgsrc and kosmosgfilter
 * (gst/gstkosmosgcuda.c): caps, the fallback to system memory, the error a
 * CUDA-memory-only downstream gets when the engine is on the CPU, the CUDA
 * context query, the filter's sink pads taking CUDA memory, and, on a machine
 * with a CUDA device, the engine writing into GstCudaMemory (same pixels as
 * system memory, no host copy) and a reference image in CUDA memory.
 * KG_HAVE_GST_CUDA says whether the plugin was built with gst-cuda. */
#include "test_gst_common.h"

#define CUDA_FEATURE "memory:CUDAMemory"
#define CUDA_CAPS "video/x-raw(" CUDA_FEATURE "),width=64,height=64"
#define SYS_CAPS "video/x-raw,width=64,height=64"

static gboolean
caps_has_cuda (GstCaps * caps)
{
  for (guint i = 0; i < gst_caps_get_size (caps); i++) {
    GstCapsFeatures *f = gst_caps_get_features (caps, i);

    if (f && gst_caps_features_contains (f, CUDA_FEATURE))
      return TRUE;
  }
  return FALSE;
}

static gboolean
caps_has_sysmem (GstCaps * caps)
{
  for (guint i = 0; i < gst_caps_get_size (caps); i++) {
    GstCapsFeatures *f = gst_caps_get_features (caps, i);

    if (!f || gst_caps_features_is_equal (f,
            GST_CAPS_FEATURES_MEMORY_SYSTEM_MEMORY))
      return TRUE;
  }
  return FALSE;
}

/* The template offers CUDA memory exactly when built with gst-cuda, system
 * memory always, for both elements. */
GST_START_TEST (test_template_caps)
{
  const gchar *names[] = { "kosmosgsrc", "kosmosgfilter" };

  for (guint k = 0; k < G_N_ELEMENTS (names); k++) {
    GstElement *e = make_element (names[k], "a", 1, NULL);
    GstPad *src = gst_element_get_static_pad (e, "src");
    GstCaps *templ = gst_pad_get_pad_template_caps (src);
    GstCaps *before = gst_pad_query_caps (src, NULL);

    GST_INFO ("%s template %" GST_PTR_FORMAT, names[k], templ);
#ifdef KG_HAVE_GST_CUDA
    fail_unless (caps_has_cuda (templ), "%s: no CUDA memory in the template",
        names[k]);
    /* first: preferred when downstream takes both */
    fail_unless (gst_caps_features_contains (gst_caps_get_features (templ, 0),
            CUDA_FEATURE));
    /* before the model is loaded the element cannot know its backend */
    fail_unless (caps_has_cuda (before));
#else
    fail_if (caps_has_cuda (templ), "%s: CUDA memory without gst-cuda",
        names[k]);
    fail_if (caps_has_cuda (before));
#endif
    fail_unless (caps_has_sysmem (templ));
    gst_caps_unref (before);
    gst_caps_unref (templ);
    gst_object_unref (src);
    gst_object_unref (e);
  }
}

GST_END_TEST;

/* The filter's reference and control pads take CUDA memory (after system
 * memory) when built with gst-cuda, and accept such caps once requested. */
GST_START_TEST (test_sink_caps)
{
  GstElement *e = make_element ("kosmosgfilter", "<i> a", 1, NULL);
  const gchar *names[] = { "sink_%u", "control_%u" };
  GstCaps *cuda = gst_caps_from_string ("video/x-raw(" CUDA_FEATURE "), "
      "format=RGB, width=64, height=48, framerate=0/1");

  for (guint k = 0; k < G_N_ELEMENTS (names); k++) {
    GstPad *pad = gst_element_request_pad_simple (e, names[k]);
    GstCaps *templ;

    fail_unless (pad != NULL, "no %s pad", names[k]);
    templ = gst_pad_get_pad_template_caps (pad);
    GST_INFO ("%s: %" GST_PTR_FORMAT, names[k], templ);
    fail_unless (caps_has_sysmem (templ));
    fail_if (gst_caps_get_features (templ, 0)
        && gst_caps_features_contains (gst_caps_get_features (templ, 0),
            CUDA_FEATURE), "%s prefers CUDA memory", names[k]);
#ifdef KG_HAVE_GST_CUDA
    fail_unless (caps_has_cuda (templ), "%s takes no CUDA memory", names[k]);
    fail_unless (gst_pad_query_accept_caps (pad, cuda),
        "%s refuses %" GST_PTR_FORMAT, names[k], cuda);
#else
    fail_if (caps_has_cuda (templ));
    fail_if (gst_pad_query_accept_caps (pad, cuda));
#endif
    gst_caps_unref (templ);
    gst_element_release_request_pad (e, pad);
    gst_object_unref (pad);
  }
  gst_caps_unref (cuda);
  gst_object_unref (e);
}

GST_END_TEST;

/* Loaded on the CPU backend, the src caps no longer offer CUDA memory, and
 * nobody is asked for or given a CUDA context. */
GST_START_TEST (test_cpu_caps_and_context)
{
  const gchar *names[] = { "kosmosgsrc", "kosmosgfilter" };

  for (guint k = 0; k < G_N_ELEMENTS (names); k++) {
    GstBus *bus;
    GstElement *e = make_element (names[k], "a", 1, &bus);
    GstPad *src = gst_element_get_static_pad (e, "src");
    GstCaps *caps;
    GstQuery *q;
    GstMessage *msg;

    fail_unless_equals_int (gst_element_set_state (e, GST_STATE_READY),
        GST_STATE_CHANGE_SUCCESS);
    caps = gst_pad_query_caps (src, NULL);
    GST_INFO ("%s on the CPU: %" GST_PTR_FORMAT, names[k], caps);
    fail_if (caps_has_cuda (caps), "%s offers CUDA memory on the CPU",
        names[k]);
    fail_unless (caps_has_sysmem (caps));
    gst_caps_unref (caps);

    /* a CUDA element downstream asking for the context gets no answer */
    q = gst_query_new_context ("gst.cuda.context");
    fail_if (gst_pad_query (src, q), "%s answered a CUDA context query on "
        "the CPU backend", names[k]);
    gst_query_unref (q);

    while ((msg = gst_bus_pop (bus))) {
      const gchar *type = NULL;

      if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_NEED_CONTEXT)
        gst_message_parse_context_type (msg, &type);
      if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_HAVE_CONTEXT) {
        GstContext *ctx;

        gst_message_parse_have_context (msg, &ctx);
        fail_if (gst_context_has_context_type (ctx, "gst.cuda.context"));
        gst_context_unref (ctx);
      }
      fail_if (type && !strcmp (type, "gst.cuda.context"),
          "%s asked for a CUDA context on the CPU backend", names[k]);
      gst_message_unref (msg);
    }
    gst_element_set_state (e, GST_STATE_NULL);
    gst_object_unref (src);
    gst_object_unref (e);
    gst_object_unref (bus);
  }
}

GST_END_TEST;

/* Runs pipe to the end (EOS or ERROR); returns the ERROR message or NULL. */
static GstMessage *
run_pipeline (GstElement * pipe)
{
  GstBus *bus = gst_element_get_bus (pipe);
  GstMessage *msg;

  gst_element_set_state (pipe, GST_STATE_PLAYING);
  msg = gst_bus_timed_pop_filtered (bus, 120 * GST_SECOND,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_object_unref (bus);
  fail_unless (msg != NULL, "neither EOS nor an error in 120 s");
  if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_EOS) {
    gst_message_unref (msg);
    return NULL;
  }
  return msg;
}

static GstElement *
parse (const gchar * desc)
{
  GError *err = NULL;
  gchar *full = g_strdup_printf (desc, tiny_model ());
  GstElement *pipe = gst_parse_launch (full, &err);

  fail_unless (pipe != NULL, "%s: %s", full, err ? err->message : "?");
  g_clear_error (&err);
  g_free (full);
  return pipe;
}

static void
assert_cuda_refusal (const gchar * desc)
{
  GstElement *pipe = parse (desc);
  GstElement *cf = gst_bin_get_by_name (GST_BIN (pipe), "cf");
  GstCaps *only_cuda = gst_caps_from_string (CUDA_CAPS);
  GstMessage *msg;
  GError *err = NULL;
  gchar *dbg = NULL;

  g_object_set (cf, "caps", only_cuda, NULL);
  gst_caps_unref (only_cuda);
  gst_object_unref (cf);
  msg = run_pipeline (pipe);

  fail_unless (msg != NULL, "a CUDA-memory-only downstream was accepted on "
      "the CPU backend: %s", desc);
  gst_message_parse_error (msg, &err, &dbg);
  GST_INFO ("error: %s (%s)", err->message, dbg);
  fail_unless (g_error_matches (err, GST_CORE_ERROR,
          GST_CORE_ERROR_NEGOTIATION), "not a negotiation error: %s",
      err->message);
  fail_unless (strstr (err->message, "accepts only CUDA memory") != NULL,
      "the error does not say downstream wants CUDA memory: %s", err->message);
#ifdef KG_HAVE_GST_CUDA
  fail_unless (strstr (err->message, "runs on the CPU (backend=cpu)") != NULL,
      "the error does not name the CPU backend: %s", err->message);
#else
  fail_unless (strstr (err->message, "no CUDA memory support") != NULL,
      "the error does not name the missing gst-cuda: %s", err->message);
#endif
  fail_unless (strcmp (GST_OBJECT_NAME (GST_MESSAGE_SRC (msg)), "k") == 0,
      "the first error comes from %s, not the element",
      GST_OBJECT_NAME (GST_MESSAGE_SRC (msg)));
  g_error_free (err);
  g_free (dbg);
  gst_message_unref (msg);
  gst_object_unref (pipe);
}

/* On the CPU, a downstream that takes CUDA memory only: CORE/NEGOTIATION
 * saying why, from kosmosgsrc, the text-only filter and the filter with a
 * reference image. The capsfilter gets its caps after linking (a build
 * without gst-cuda already refuses the link when they are set before). */
GST_START_TEST (test_cuda_only_refused)
{
  assert_cuda_refusal ("kosmosgsrc name=k model-location=%s backend=cpu "
      "prompt=a num-inference-steps=1 ! capsfilter name=cf ! fakesink");
  assert_cuda_refusal ("kosmosgfilter name=k model-location=%s backend=cpu "
      "prompt=a num-inference-steps=1 ! capsfilter name=cf ! fakesink");
  assert_cuda_refusal ("videotestsrc num-buffers=1 ! "
      "video/x-raw,format=RGB,width=64,height=64 ! kosmosgfilter name=k "
      "model-location=%s backend=cpu prompt=\"<i> a\" num-inference-steps=1 ! "
      "capsfilter name=cf ! fakesink");
}

GST_END_TEST;

/* The first image of desc's appsink "out" (caps and buffer reffed). */
static GstBuffer *
pull_one (const gchar * desc, GstCaps ** caps)
{
  GstElement *pipe = parse (desc);
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipe), "out");
  GstSample *sample;
  GstBuffer *buf;

  gst_element_set_state (pipe, GST_STATE_PLAYING);
  /* an error does not wake pull-sample: bounded, and the pipeline is
   * stopped before any assertion (CK_FORK=no: a failure must not leave
   * threads running) */
  g_signal_emit_by_name (sink, "try-pull-sample", 120 * GST_SECOND, &sample);
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (pipe);
  fail_unless (sample != NULL, "no image from %s", desc);
  buf = gst_buffer_ref (gst_sample_get_buffer (sample));
  *caps = gst_caps_ref (gst_sample_get_caps (sample));
  gst_sample_unref (sample);
  return buf;
}

/* On the CPU, a downstream taking both CUDA and system memory gets system
 * memory, and the image kg_generate makes. */
GST_START_TEST (test_both_gets_system_memory)
{
  GstCaps *caps;
  GstBuffer *buf = pull_one ("kosmosgsrc model-location=%s backend=cpu "
      "prompt=a num-inference-steps=2 seed=42 ! " CUDA_CAPS "; " SYS_CAPS
      " ! appsink name=out", &caps);
  kg_output out;

  GST_INFO ("negotiated %" GST_PTR_FORMAT, caps);
  fail_if (caps_has_cuda (caps));
  fail_unless (caps_has_sysmem (caps));
  fail_if (gst_memory_is_type (gst_buffer_peek_memory (buf, 0),
          "gst.cuda.memory"));
  engine_generate ("a", NULL, NULL, 0, 64, 64, 1, &out);
  assert_same_image (buf, caps, &out, 0);
  kg_output_free (&out);
  gst_buffer_unref (buf);
  gst_caps_unref (caps);
}

GST_END_TEST;

#ifdef KG_HAVE_GST_CUDA
/* A CUDA device here? (the engine's own answer, as the element gets it) */
static gboolean
cuda_usable (gchar ** why)
{
  kg_model_options opt;
  kg_model *m = NULL;
  kg_error err = { 0 };
  const gchar *path = g_getenv ("KG_TINY_MODEL");       /* outside a test: no fail_unless */

  kg_model_options_init (&opt);
  opt.backend = KG_BACKEND_CUDA;
  if (!path || kg_model_open (&m, path, &opt, &err) != KG_OK) {
    if (!path)
      g_snprintf (err.msg, sizeof err.msg, "KG_TINY_MODEL is not set");
    *why = g_strdup (err.msg);
    return FALSE;
  }
  kg_model_close (m);
  return TRUE;
}

/* DEVICE ONLY (never run by the session that wrote it: no GPU). On CUDA, a
 * CUDA-memory-only appsink gets GstCudaMemory the engine wrote on the
 * device, with the same pixels as the system memory output of the same
 * generation; the element announced a CUDA context and answers queries. */
GST_START_TEST (test_device_output)
{
  GstCaps *caps_dev, *caps_sys;
  GstBuffer *dev = pull_one ("kosmosgsrc model-location=%s backend=cuda "
      "precision=fp32 prompt=a num-inference-steps=2 seed=42 ! " CUDA_CAPS
      ",format=RGBA ! appsink name=out", &caps_dev);
  GstBuffer *sys = pull_one ("kosmosgsrc model-location=%s backend=cuda "
      "precision=fp32 prompt=a num-inference-steps=2 seed=42 ! " SYS_CAPS
      ",format=RGB ! appsink name=out", &caps_sys);
  GstVideoInfo info_sys;
  GstVideoFrame f_sys;
  kg_output out = { 0 };

  GST_INFO ("device caps %" GST_PTR_FORMAT, caps_dev);
  fail_unless (caps_has_cuda (caps_dev));
  fail_unless (gst_memory_is_type (gst_buffer_peek_memory (dev, 0),
          "gst.cuda.memory"), "the output is not GstCudaMemory");
  /* the system-memory run as the reference (RGB rows, packed) */
  fail_unless (gst_video_info_from_caps (&info_sys, caps_sys));
  fail_unless (gst_video_frame_map (&f_sys, &info_sys, sys, GST_MAP_READ));
  out.n = 1;
  out.width = 64;
  out.height = 64;
  out.rgb = g_malloc (64 * 64 * 3);
  for (gint y = 0; y < 64; y++)
    memcpy (out.rgb + y * 64 * 3,
        (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f_sys, 0)
        + y * GST_VIDEO_FRAME_PLANE_STRIDE (&f_sys, 0), 64 * 3);
  gst_video_frame_unmap (&f_sys);
  /* maps the CUDA memory for reading: the test's download, not the element's */
  assert_same_image (dev, caps_dev, &out, 0);
  g_free (out.rgb);
  gst_buffer_unref (dev);
  gst_buffer_unref (sys);
  gst_caps_unref (caps_dev);
  gst_caps_unref (caps_sys);
}

GST_END_TEST;

/* DEVICE ONLY: a reference image in CUDA memory (cudaupload) gives the image
 * the same picture in system memory gives. */
GST_START_TEST (test_device_input)
{
  GstCaps *caps_a, *caps_b;
  GstElement *up = gst_element_factory_make ("cudaupload", NULL);
  GstBuffer *a, *b;
  kg_output out = { 0 };
  GstVideoInfo info;
  GstVideoFrame f;

  if (!up) {
    g_print ("test_device_input: no cudaupload (nvcodec): not run\n");
    return;
  }
  gst_object_unref (gst_object_ref_sink (up));
  a = pull_one ("videotestsrc num-buffers=1 pattern=ball ! "
      "video/x-raw,format=RGBA,width=80,height=64 ! cudaupload ! "
      "video/x-raw(" CUDA_FEATURE ") ! kosmosgfilter model-location=%s "
      "backend=cuda prompt=\"<i> a\" num-inference-steps=2 seed=42 ! "
      SYS_CAPS ",format=RGB ! appsink name=out", &caps_a);
  b = pull_one ("videotestsrc num-buffers=1 pattern=ball ! "
      "video/x-raw,format=RGBA,width=80,height=64 ! kosmosgfilter "
      "model-location=%s backend=cuda prompt=\"<i> a\" num-inference-steps=2 "
      "seed=42 ! " SYS_CAPS ",format=RGB ! appsink name=out", &caps_b);
  fail_unless (gst_video_info_from_caps (&info, caps_b));
  fail_unless (gst_video_frame_map (&f, &info, b, GST_MAP_READ));
  out.n = 1;
  out.width = 64;
  out.height = 64;
  out.rgb = g_malloc (64 * 64 * 3);
  for (gint y = 0; y < 64; y++)
    memcpy (out.rgb + y * 64 * 3, (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f,
            0) + y * GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0), 64 * 3);
  gst_video_frame_unmap (&f);
  assert_same_image (a, caps_a, &out, 0);
  g_free (out.rgb);
  gst_buffer_unref (a);
  gst_buffer_unref (b);
  gst_caps_unref (caps_a);
  gst_caps_unref (caps_b);
}

GST_END_TEST;

/* DEVICE ONLY: at READY on CUDA the element announces a CUDA context and
 * answers context queries with it. */
GST_START_TEST (test_device_context)
{
  GstBus *bus;
  GstElement *e = make_element ("kosmosgsrc", "a", 1, &bus);
  GstPad *src = gst_element_get_static_pad (e, "src");
  GstQuery *q = gst_query_new_context ("gst.cuda.context");
  GstMessage *msg;
  gboolean announced = FALSE;
  GstContext *ctx = NULL;

  g_object_set (e, "backend", KG_BACKEND_CUDA, NULL);
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_READY),
      GST_STATE_CHANGE_SUCCESS);
  while ((msg = gst_bus_pop_filtered (bus, GST_MESSAGE_HAVE_CONTEXT))) {
    GstContext *c;

    gst_message_parse_have_context (msg, &c);
    announced |= gst_context_has_context_type (c, "gst.cuda.context");
    gst_context_unref (c);
    gst_message_unref (msg);
  }
  fail_unless (announced, "no CUDA context announced");
  fail_unless (gst_pad_query (src, q), "the context query is not answered");
  gst_query_parse_context (q, &ctx);
  fail_unless (ctx && gst_context_has_context_type (ctx, "gst.cuda.context"));
  gst_query_unref (q);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_object_unref (src);
  gst_object_unref (e);
  gst_object_unref (bus);
}

GST_END_TEST;
#endif

static Suite *
kosmosgcuda_suite (void)
{
  Suite *s = suite_create ("kosmosgcuda");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_template_caps);
  tcase_add_test (tc, test_sink_caps);
  tcase_add_test (tc, test_cpu_caps_and_context);
  tcase_add_test (tc, test_cuda_only_refused);
  tcase_add_test (tc, test_both_gets_system_memory);
#ifdef KG_HAVE_GST_CUDA
  {
    gchar *why = NULL;

    if (cuda_usable (&why)) {
      TCase *dev = tcase_create ("device");

      suite_add_tcase (s, dev);
      tcase_add_test (dev, test_device_output);
      tcase_add_test (dev, test_device_context);
      tcase_add_test (dev, test_device_input);
    } else {
      g_print ("device cases skipped: no usable CUDA device (%s)\n", why);
      g_free (why);
    }
  }
#endif
  return s;
}

GST_CHECK_MAIN (kosmosgcuda);
