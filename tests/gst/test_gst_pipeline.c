/* test_gst_pipeline.c - kosmosgfilter in whole pipelines on the real engine
 * (CPU backend, tiny model, 64x64): the threading of the text-only mode (a
 * pad requested during a text-only generation never starts a second
 * generation on the session), reference pads that appear after PAUSED, a
 * bad prompt while PLAYING, flushing seeks (text-only and with reference
 * pads: prerolling, PLAYING mid-generation, after EOS, a seekable upstream,
 * past the end, refused when live), live frames replaced during a generation
 * (QoS). The
 * pipelines use appsrc/appsink through their action signals. */
#include "test_gst_common.h"

typedef struct
{
  GstElement *pipeline;
  GstElement *filter;
  GstElement *sink;
  GstBus *bus;
} Pipe;

/* kosmosgfilter name=f <props> ! capsfilter 64x64 ! appsink, and the
 * branches of more (may be "") */
static void
pipe_start_with (Pipe * p, const gchar * props, const gchar * more,
    gboolean play)
{
  gchar *desc = g_strdup_printf ("kosmosgfilter name=f model-location=\"%s\" "
      "backend=cpu seed=%d %s ! " TEST_SINK_CAPS " ! appsink name=out "
      "sync=false %s", tiny_model (), TEST_SEED, props, more);
  GError *err = NULL;

  p->pipeline = gst_parse_launch (desc, &err);
  fail_unless (p->pipeline != NULL, "%s: %s", desc, err ? err->message : "");
  g_free (desc);
  p->filter = gst_bin_get_by_name (GST_BIN (p->pipeline), "f");
  p->sink = gst_bin_get_by_name (GST_BIN (p->pipeline), "out");
  p->bus = gst_element_get_bus (p->pipeline);
  if (play)
    gst_element_set_state (p->pipeline, GST_STATE_PLAYING);
}

static void
pipe_start (Pipe * p, const gchar * props, gboolean play)
{
  pipe_start_with (p, props, "", play);
}

static void
pipe_stop (Pipe * p)
{
  fail_unless_equals_int (gst_element_set_state (p->pipeline, GST_STATE_NULL),
      GST_STATE_CHANGE_SUCCESS);
  gst_object_unref (p->filter);
  gst_object_unref (p->sink);
  gst_bus_set_flushing (p->bus, TRUE);
  gst_object_unref (p->bus);
  gst_object_unref (p->pipeline);
}

/* An appsrc holding one reference image (then EOS when eos), linked to a
 * newly requested sink pad of the filter while the pipeline runs. */
static GstPad *
add_reference (Pipe * p, GstBuffer * ref, const GstVideoInfo * info,
    gboolean eos)
{
  GstElement *src = gst_element_factory_make ("appsrc", NULL);
  GstCaps *caps = gst_video_info_to_caps (info);
  GstPad *sinkpad, *srcpad;
  GstFlowReturn ret = GST_FLOW_ERROR;

  fail_unless (src != NULL);
  g_object_set (src, "caps", caps, "format", GST_FORMAT_TIME, NULL);
  gst_caps_unref (caps);
  gst_bin_add (GST_BIN (p->pipeline), src);
  sinkpad = gst_element_request_pad_simple (p->filter, "sink_%u");
  fail_unless (sinkpad != NULL);
  srcpad = gst_element_get_static_pad (src, "src");
  fail_unless_equals_int (gst_pad_link (srcpad, sinkpad), GST_PAD_LINK_OK);
  gst_object_unref (srcpad);
  fail_unless (gst_element_sync_state_with_parent (src));
  g_signal_emit_by_name (src, "push-buffer", ref, &ret);
  fail_unless_equals_int (ret, GST_FLOW_OK);
  if (eos)
    g_signal_emit_by_name (src, "end-of-stream", &ret);
  return sinkpad;
}

static GstSample *
pull_sample (Pipe * p, gdouble timeout)
{
  GstSample *sample = NULL;

  g_signal_emit_by_name (p->sink, "try-pull-sample",
      (GstClockTime) (timeout * GST_SECOND), &sample);
  return sample;
}

/* Bus messages until EOS (fails on an error or after timeout seconds):
 * the kosmosg-progress steps in order, the number of kosmosg-done, and
 * the warnings' texts joined. */
typedef struct
{
  gint steps[4096];
  gint n_steps;
  gint n_done;
  GString *warnings;
  gchar *done_prompt;
} BusLog;

static void
collect_until_eos (Pipe * p, BusLog * log, gdouble timeout)
{
  gint64 end = g_get_monotonic_time () + (gint64) (timeout * G_USEC_PER_SEC);

  log->warnings = g_string_new (NULL);
  for (;;) {
    gint64 left = end - g_get_monotonic_time ();
    GstMessage *msg;

    fail_unless (left > 0, "no EOS within %.0f s", timeout);
    msg = gst_bus_timed_pop_filtered (p->bus, left * GST_USECOND,
        GST_MESSAGE_EOS | GST_MESSAGE_ERROR | GST_MESSAGE_WARNING |
        GST_MESSAGE_ELEMENT);
    fail_unless (msg != NULL, "no EOS within %.0f s", timeout);
    switch (GST_MESSAGE_TYPE (msg)) {
      case GST_MESSAGE_EOS:
        gst_message_unref (msg);
        return;
      case GST_MESSAGE_ERROR:{
        GError *e = NULL;
        gchar *dbg = NULL;

        gst_message_parse_error (msg, &e, &dbg);
        fail ("unexpected error: %s (%s)", e->message, dbg);
        break;
      }
      case GST_MESSAGE_WARNING:{
        GError *e = NULL;

        gst_message_parse_warning (msg, &e, NULL);
        GST_INFO ("warning: %s", e->message);
        g_string_append_printf (log->warnings, "%s\n", e->message);
        g_error_free (e);
        break;
      }
      default:{
        const GstStructure *s = gst_message_get_structure (msg);
        guint step = 0;

        if (gst_structure_has_name (s, "kosmosg-progress")
            && gst_structure_get_uint (s, "step", &step)
            && log->n_steps < (gint) G_N_ELEMENTS (log->steps))
          log->steps[log->n_steps++] = (gint) step;
        if (gst_structure_has_name (s, "kosmosg-done")) {
          log->n_done++;
          g_free (log->done_prompt);
          log->done_prompt = g_strdup (gst_structure_get_string (s,
                  "prompt"));
        }
        break;
      }
    }
    gst_message_unref (msg);
  }
}

static void
buslog_clear (BusLog * log)
{
  if (log->warnings)
    g_string_free (log->warnings, TRUE);
  g_free (log->done_prompt);
}

static void
wait_first_step (Pipe * p)
{
  GstMessage *msg = pop_element_message (p->bus, "kosmosg-progress", 120);

  fail_unless (msg != NULL, "no kosmosg-progress");
  gst_message_unref (msg);
}

/* Issue 18: a pad requested (and fed, with a prompt that now has a
 * placeholder) while the text-only generation runs. Before the fix the
 * aggregator generated on the same session at the same time (ASan:
 * memcpy-param-overlap; release: shape errors or wrong pixels). Now the
 * text-only image comes out exactly as kg_generate makes it, the steps of
 * one generation only, a warning names the pad, then EOS. */
#define RACE_STEPS 60

GST_START_TEST (test_pad_requested_during_text_only)
{
  Pipe p;
  BusLog log = { 0 };
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 21, &info);
  GstSample *sample;
  GstPad *pad;
  kg_output want = { 0 };
  gchar *props = g_strdup_printf ("prompt=\"a red bicycle\" "
      "num-inference-steps=%d", RACE_STEPS);

  pipe_start (&p, props, TRUE);
  wait_first_step (&p);
  g_object_set (p.filter, "prompt", "<i> on a beach", NULL);
  pad = add_reference (&p, ref, &info, TRUE);

  sample = pull_sample (&p, 120);
  fail_unless (sample != NULL, "no text-only image");
  collect_until_eos (&p, &log, 120);
  GST_INFO ("%d progress messages after the first, %d done", log.n_steps,
      log.n_done);
  /* one generation: steps 2..RACE_STEPS once each, in order */
  fail_unless_equals_int (log.n_steps, RACE_STEPS - 1);
  for (gint i = 0; i < log.n_steps; i++)
    fail_unless_equals_int (log.steps[i], i + 2);
  fail_unless_equals_int (log.n_done, 1);
  fail_unless_equals_string (log.done_prompt, "a red bicycle");
  fail_unless (strstr (log.warnings->str, GST_PAD_NAME (pad)) != NULL,
      "no warning names %s: %s", GST_PAD_NAME (pad), log.warnings->str);

  engine_generate_steps ("a red bicycle", NULL, NULL, 0, TEST_SIZE,
      TEST_SIZE, 1, RACE_STEPS, &want);
  assert_same_image (gst_sample_get_buffer (sample),
      gst_sample_get_caps (sample), &want, 0);

  kg_output_free (&want);
  gst_sample_unref (sample);
  gst_object_unref (pad);
  gst_buffer_unref (ref);
  buslog_clear (&log);
  g_free (props);
  pipe_stop (&p);
}

GST_END_TEST;

/* Issue 16 (1): a prompt with a placeholder and no sink pad yet, as with
 * uridecodebin/decodebin whose pads appear after PAUSED: the filter waits
 * for the pad instead of refusing "1 placeholder but 0 reference images". */
GST_START_TEST (test_pad_after_paused)
{
  Pipe p;
  BusLog log = { 0 };
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 40, 24, 22, &info);
  GstSample *sample;
  GstPad *pad;
  GstMessage *msg;
  kg_output want = { 0 };
  gchar *props = g_strdup_printf ("prompt=\"<i> in the snow\" "
      "num-inference-steps=%d", TEST_STEPS);

  pipe_start (&p, props, TRUE);
  /* nothing to do yet: no error, no image */
  msg = gst_bus_timed_pop_filtered (p.bus, GST_SECOND / 2,
      GST_MESSAGE_ERROR | GST_MESSAGE_EOS);
  fail_unless (msg == NULL, "%s before the reference pad appeared",
      GST_MESSAGE_TYPE_NAME (msg));
  fail_unless (pull_sample (&p, 0.1) == NULL);

  pad = add_reference (&p, ref, &info, TRUE);
  sample = pull_sample (&p, 120);
  fail_unless (sample != NULL, "no image after the pad appeared");
  collect_until_eos (&p, &log, 120);
  fail_unless_equals_int (log.n_done, 1);
  engine_generate ("<i> in the snow", &ref, &info, 1, TEST_SIZE, TEST_SIZE, 1,
      &want);
  assert_same_image (gst_sample_get_buffer (sample),
      gst_sample_get_caps (sample), &want, 0);

  kg_output_free (&want);
  gst_sample_unref (sample);
  gst_object_unref (pad);
  gst_buffer_unref (ref);
  buslog_clear (&log);
  g_free (props);
  pipe_stop (&p);
}

GST_END_TEST;

static GstElement *
appsrc_of (GstPad * sinkpad)
{
  GstPad *peer = gst_pad_get_peer (sinkpad);
  GstElement *src = gst_pad_get_parent_element (peer);

  gst_object_unref (peer);
  return src;
}

static void
push_ref (GstPad * sinkpad, GstBuffer * ref, GstClockTime pts)
{
  GstElement *src = appsrc_of (sinkpad);
  GstBuffer *buf = gst_buffer_copy (ref);
  GstFlowReturn ret = GST_FLOW_ERROR;

  GST_BUFFER_PTS (buf) = pts;
  g_signal_emit_by_name (src, "push-buffer", buf, &ret);
  fail_unless_equals_int (ret, GST_FLOW_OK);
  gst_buffer_unref (buf);
  gst_object_unref (src);
}

/* Issue 16 (4): a prompt with the wrong placeholder count set while PLAYING
 * tore the pipeline down. It is refused with a warning, the last good
 * prompt stays and makes the image of the next reference, and the next
 * good prompt is used from the reference after it. */
GST_START_TEST (test_bad_prompt_while_playing)
{
  Pipe p;
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 23, &info);
  GstBuffer *ref2 = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 24, &info);
  GstBuffer *ref3 = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 25, &info);
  GstSample *first, *second, *third;
  GstPad *pad;
  GstMessage *msg;
  GError *err = NULL;
  gchar *now = NULL;
  kg_output want2 = { 0 }, want3 = { 0 };
  gchar *props = g_strdup_printf ("prompt=\"<i> in the snow\" "
      "num-inference-steps=%d", TEST_STEPS);

  pipe_start (&p, props, TRUE);
  pad = add_reference (&p, ref, &info, FALSE);
  first = pull_sample (&p, 120);
  fail_unless (first != NULL);
  fail_unless_equals_int (gst_element_get_state (p.pipeline, NULL, NULL,
          10 * GST_SECOND), GST_STATE_CHANGE_SUCCESS);

  g_object_set (p.filter, "prompt", "<i> wearing <i>", NULL);
  msg = gst_bus_timed_pop_filtered (p.bus, 10 * GST_SECOND,
      GST_MESSAGE_WARNING | GST_MESSAGE_ERROR);
  fail_unless (msg != NULL && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_WARNING,
      "no warning for the refused prompt");
  gst_message_parse_warning (msg, &err, NULL);
  GST_INFO ("warning: %s", err->message);
  fail_unless (strstr (err->message, "2 \"<i>\" placeholders but 1 "
          "reference image") != NULL, "%s", err->message);
  g_clear_error (&err);
  gst_message_unref (msg);
  g_object_get (p.filter, "prompt", &now, NULL);
  fail_unless_equals_string (now, "<i> in the snow");
  g_free (now);

  push_ref (pad, ref2, GST_SECOND);
  second = pull_sample (&p, 120);
  fail_unless (second != NULL, "no image after the refused prompt");
  engine_generate ("<i> in the snow", &ref2, &info, 1, TEST_SIZE, TEST_SIZE,
      1, &want2);
  assert_same_image (gst_sample_get_buffer (second),
      gst_sample_get_caps (second), &want2, 0);

  g_object_set (p.filter, "prompt", "<i> at night", NULL);
  push_ref (pad, ref3, 2 * GST_SECOND);
  third = pull_sample (&p, 120);
  fail_unless (third != NULL, "no image for the next good prompt");
  engine_generate ("<i> at night", &ref3, &info, 1, TEST_SIZE, TEST_SIZE, 1,
      &want3);
  assert_same_image (gst_sample_get_buffer (third),
      gst_sample_get_caps (third), &want3, 0);
  assert_no_error (p.bus);

  kg_output_free (&want2);
  kg_output_free (&want3);
  gst_sample_unref (first);
  gst_sample_unref (second);
  gst_sample_unref (third);
  gst_object_unref (pad);
  gst_buffer_unref (ref);
  gst_buffer_unref (ref2);
  gst_buffer_unref (ref3);
  g_free (props);
  pipe_stop (&p);
}

GST_END_TEST;

/* Issue 16 (3), text-only mode: a flushing seek while the generation runs
 * (prerolling, 1000 steps) cancels it at the next step (a CANCELED
 * progress message) and generates again in a new segment; a seek after EOS
 * generates a new image and EOS again. */
static gboolean
seek_to (Pipe * p, GstClockTime pos)
{
  return gst_element_seek_simple (p->pipeline, GST_FORMAT_TIME,
      GST_SEEK_FLAG_FLUSH, (gint64) pos);
}

GST_START_TEST (test_text_only_seeks)
{
  Pipe p;
  BusLog log = { 0 }, log2 = { 0 };
  GstSample *sample;
  gint64 t0;

  pipe_start (&p, "prompt=\"a red bicycle\" num-inference-steps=1000", TRUE);
  wait_first_step (&p);
  g_object_set (p.filter, "num-inference-steps", TEST_STEPS, NULL);
  t0 = g_get_monotonic_time ();
  fail_unless (seek_to (&p, 0), "seek while prerolling refused");
  sample = pull_sample (&p, 60);
  fail_unless (sample != NULL, "no image after the seek while prerolling");
  GST_INFO ("seek while prerolling to the new image: %.2f s",
      (g_get_monotonic_time () - t0) / 1e6);
  gst_sample_unref (sample);
  collect_until_eos (&p, &log, 60);
  fail_unless_equals_int (log.n_done, 1);

  fail_unless (seek_to (&p, 0), "seek after EOS refused");
  sample = pull_sample (&p, 60);
  fail_unless (sample != NULL, "no image after the seek after EOS");
  gst_sample_unref (sample);
  collect_until_eos (&p, &log2, 60);
  fail_unless_equals_int (log2.n_done, 1);
  buslog_clear (&log);
  buslog_clear (&log2);
  pipe_stop (&p);
}

GST_END_TEST;

/* Issue 16 (3) with reference pads. What reaches the appsink, in order:
 * F flush-start, f flush-stop, G segment, B buffer, E EOS. */
typedef struct
{
  GMutex lock;
  GString *seq;
} FlowLog;

static GstPadProbeReturn
flow_probe (GstPad * pad, GstPadProbeInfo * info, gpointer data)
{
  FlowLog *log = data;
  gchar c = 0;

  if (info->type & GST_PAD_PROBE_TYPE_BUFFER)
    c = 'B';
  else if (info->type & (GST_PAD_PROBE_TYPE_EVENT_BOTH
          | GST_PAD_PROBE_TYPE_EVENT_FLUSH)) {
    switch (GST_EVENT_TYPE (GST_PAD_PROBE_INFO_EVENT (info))) {
      case GST_EVENT_FLUSH_START:
        c = 'F';
        break;
      case GST_EVENT_FLUSH_STOP:
        c = 'f';
        break;
      case GST_EVENT_SEGMENT:
        c = 'G';
        break;
      case GST_EVENT_EOS:
        c = 'E';
        break;
      default:
        break;
    }
  }
  if (c) {
    g_mutex_lock (&log->lock);
    g_string_append_c (log->seq, c);
    g_mutex_unlock (&log->lock);
  }
  return GST_PAD_PROBE_OK;
}

static void
flow_log_attach (Pipe * p, FlowLog * log)
{
  GstPad *pad = gst_element_get_static_pad (p->sink, "sink");

  g_mutex_init (&log->lock);
  log->seq = g_string_new (NULL);
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER |
      GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM | GST_PAD_PROBE_TYPE_EVENT_FLUSH,
      flow_probe, log, NULL);
  gst_object_unref (pad);
}

/* After the last flush-stop, a segment comes before any buffer, and at least
 * one buffer follows (the seek's image). */
static void
assert_segment_after_flush (FlowLog * log)
{
  const gchar *after;

  g_mutex_lock (&log->lock);
  GST_INFO ("flow at the appsink: %s", log->seq->str);
  after = strrchr (log->seq->str, 'f');
  fail_unless (after != NULL, "no flush-stop reached the sink: %s",
      log->seq->str);
  fail_unless (strchr (after, 'B') != NULL, "no buffer after the flush: %s",
      log->seq->str);
  fail_unless (strchr (after, 'G') != NULL
      && strchr (after, 'G') < strchr (after, 'B'),
      "data before the segment after the flush: %s", log->seq->str);
  g_mutex_unlock (&log->lock);
}

static void
flow_log_clear (FlowLog * log)
{
  g_string_free (log->seq, TRUE);
  g_mutex_clear (&log->lock);
}

/* The first kosmosg-progress of the generation of n steps: its elapsed
 * time, an upper bound of one step (it includes the prompt encoding). */
static gdouble
wait_first_step_of (Pipe * p, guint n)
{
  for (;;) {
    GstMessage *msg = pop_element_message (p->bus, "kosmosg-progress", 120);
    guint steps = 0;
    guint64 elapsed = 0;

    fail_unless (msg != NULL, "no kosmosg-progress of the %u-step run", n);
    gst_structure_get (gst_message_get_structure (msg), "num-steps",
        G_TYPE_UINT, &steps, "elapsed", G_TYPE_UINT64, &elapsed, NULL);
    gst_message_unref (msg);
    if (steps == n)
      return elapsed / 1e9;
  }
}

#define SEEK_POS (2 * GST_SECOND)
/* A seek's result comes within a second of the step in progress. ASan
 * builds (scripts/sanitize.sh) run the engine about ten times slower (a
 * 2-step generation there: 0.3-0.7 s), so there the bound is 5 s: they
 * check memory, the normal build checks the time. */
#if defined(__SANITIZE_ADDRESS__)
#define SEEK_BOUND_S 5.0
#else
#define SEEK_BOUND_S 1.0
#endif

/* The seek's image: at the seek position, in a segment starting there,
 * equal to kg_generate's from ref; the time from the seek printed and
 * bounded by a second after the step in progress. */
static void
check_seek_image (Pipe * p, gint64 t0, gdouble step_s, GstBuffer * ref,
    const GstVideoInfo * info, const gchar * what)
{
  GstSample *sample = pull_sample (p, 60);
  gdouble took = (g_get_monotonic_time () - t0) / 1e6;
  const GstSegment *seg;
  kg_output want = { 0 };

  fail_unless (sample != NULL, "no image after the seek %s", what);
  g_print ("seek %s -> new image: %.3f s (a step took <= %.3f s)\n", what,
      took, step_s);
  fail_unless (took < SEEK_BOUND_S + step_s, "seek %s: the image took %.2f s",
      what, took);
  seg = gst_sample_get_segment (sample);
  fail_unless_equals_uint64 (seg->start, SEEK_POS);
  fail_unless_equals_uint64 (GST_BUFFER_PTS (gst_sample_get_buffer (sample)),
      SEEK_POS);
  if (!ref) {
    gst_sample_unref (sample);
    return;
  }
  engine_generate ("<i> in the snow", &ref, info, 1, TEST_SIZE, TEST_SIZE, 1,
      &want);
  assert_same_image (gst_sample_get_buffer (sample),
      gst_sample_get_caps (sample), &want, 0);
  kg_output_free (&want);
  gst_sample_unref (sample);
}

/* Seek while prerolling: a still reference (its pad at EOS, its upstream
 * not seekable), a 1000-step generation cancelled at its next step, the
 * reference generated again at the seek position, then EOS. */
GST_START_TEST (test_seek_prerolling_with_reference)
{
  Pipe p;
  BusLog log = { 0 };
  FlowLog flow;
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 31, &info);
  GstPad *pad;
  gdouble step_s;
  gint64 t0;

  pipe_start (&p, "prompt=\"<i> in the snow\" num-inference-steps=1000",
      TRUE);
  flow_log_attach (&p, &flow);
  pad = add_reference (&p, ref, &info, TRUE);
  step_s = wait_first_step_of (&p, 1000);
  g_object_set (p.filter, "num-inference-steps", TEST_STEPS, NULL);
  t0 = g_get_monotonic_time ();
  fail_unless (seek_to (&p, SEEK_POS), "seek while prerolling refused");
  check_seek_image (&p, t0, step_s, ref, &info, "while prerolling");
  collect_until_eos (&p, &log, 60);
  fail_unless_equals_int (log.n_done, 1);
  assert_segment_after_flush (&flow);

  buslog_clear (&log);
  gst_object_unref (pad);
  gst_buffer_unref (ref);
  pipe_stop (&p);
  flow_log_clear (&flow);
}

GST_END_TEST;

/* Seek while prerolling with an upstream that seeks (videotestsrc, one
 * frame a second, each a reference of its own): the seek goes upstream, and
 * the first image after it is the one of the frame at the seek position. */
GST_START_TEST (test_seek_prerolling_seekable_upstream)
{
  Pipe p;
  FlowLog flow;
  gdouble step_s;
  gint64 t0;

  pipe_start_with (&p, "prompt=\"<i> in the snow\" num-inference-steps=1000",
      "videotestsrc ! video/x-raw,format=RGB,width=32,height=32,"
      "framerate=1/1 ! f.sink_0", TRUE);
  flow_log_attach (&p, &flow);
  step_s = wait_first_step_of (&p, 1000);
  g_object_set (p.filter, "num-inference-steps", TEST_STEPS, NULL);
  t0 = g_get_monotonic_time ();
  fail_unless (seek_to (&p, SEEK_POS), "seek while prerolling refused");
  check_seek_image (&p, t0, step_s, NULL, NULL, "upstream, prerolling");
  assert_segment_after_flush (&flow);
  assert_no_error (p.bus);

  pipe_stop (&p);
  flow_log_clear (&flow);
}

GST_END_TEST;

/* A seek past the end: upstream (a seekable appsrc) flushes, then ends
 * without an image. The pad had an image before the flush, so that is a
 * clean EOS, not the error of a pad that never had an image. */
static gboolean
on_seek_data (GstElement * src, guint64 offset, gpointer data)
{
  return TRUE;
}

GST_START_TEST (test_seek_past_the_end)
{
  Pipe p;
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 35, &info);
  GstElement *src;
  GstSample *first;
  GstMessage *msg;
  GstCaps *caps = gst_video_info_to_caps (&info);
  GstFlowReturn ret = GST_FLOW_ERROR;
  gint64 t0;
  gdouble took;
  gchar *props = g_strdup_printf ("prompt=\"<i> in the snow\" "
      "num-inference-steps=%d", TEST_STEPS);

  pipe_start_with (&p, props, "appsrc name=a stream-type=seekable "
      "format=time ! f.sink_0", FALSE);
  src = gst_bin_get_by_name (GST_BIN (p.pipeline), "a");
  g_object_set (src, "caps", caps, NULL);
  g_signal_connect (src, "seek-data", G_CALLBACK (on_seek_data), NULL);
  gst_element_set_state (p.pipeline, GST_STATE_PLAYING);
  g_signal_emit_by_name (src, "push-buffer", ref, &ret);
  fail_unless_equals_int (ret, GST_FLOW_OK);
  first = pull_sample (&p, 120);
  fail_unless (first != NULL);
  gst_sample_unref (first);

  t0 = g_get_monotonic_time ();
  fail_unless (seek_to (&p, SEEK_POS), "seek refused");
  g_signal_emit_by_name (src, "end-of-stream", &ret);
  msg = gst_bus_timed_pop_filtered (p.bus, 60 * GST_SECOND,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  took = (g_get_monotonic_time () - t0) / 1e6;
  fail_unless (msg != NULL, "no EOS after a seek past the end");
  if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
    GError *e = NULL;

    gst_message_parse_error (msg, &e, NULL);
    fail ("an error instead of EOS after a seek past the end: %s",
        e->message);
  }
  g_print ("seek past the end -> EOS: %.3f s\n", took);
  fail_unless (took < SEEK_BOUND_S, "EOS took %.2f s", took);
  gst_message_unref (msg);

  gst_object_unref (src);
  gst_caps_unref (caps);
  gst_buffer_unref (ref);
  g_free (props);
  pipe_stop (&p);
}

GST_END_TEST;

/* Seek while PLAYING, during the generation of the second reference. */
GST_START_TEST (test_seek_playing_with_reference)
{
  Pipe p;
  BusLog log = { 0 };
  FlowLog flow;
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 32, &info);
  GstBuffer *ref2 = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 33, &info);
  GstSample *first;
  GstElement *src;
  GstFlowReturn ret;
  GstPad *pad;
  gdouble step_s;
  gint64 t0;
  gchar *props = g_strdup_printf ("prompt=\"<i> in the snow\" "
      "num-inference-steps=%d", TEST_STEPS);

  pipe_start (&p, props, TRUE);
  flow_log_attach (&p, &flow);
  pad = add_reference (&p, ref, &info, FALSE);
  first = pull_sample (&p, 120);
  fail_unless (first != NULL);
  fail_unless_equals_int (gst_element_get_state (p.pipeline, NULL, NULL,
          10 * GST_SECOND), GST_STATE_CHANGE_SUCCESS);

  g_object_set (p.filter, "num-inference-steps", 1000, NULL);
  push_ref (pad, ref2, GST_SECOND);
  src = appsrc_of (pad);
  g_signal_emit_by_name (src, "end-of-stream", &ret);
  gst_object_unref (src);
  step_s = wait_first_step_of (&p, 1000);
  g_object_set (p.filter, "num-inference-steps", TEST_STEPS, NULL);
  t0 = g_get_monotonic_time ();
  fail_unless (seek_to (&p, SEEK_POS), "seek while playing refused");
  check_seek_image (&p, t0, step_s, ref2, &info, "while playing");
  collect_until_eos (&p, &log, 60);
  fail_unless_equals_int (log.n_done, 1);
  assert_segment_after_flush (&flow);

  buslog_clear (&log);
  gst_sample_unref (first);
  gst_object_unref (pad);
  gst_buffer_unref (ref);
  gst_buffer_unref (ref2);
  g_free (props);
  pipe_stop (&p);
  flow_log_clear (&flow);
}

GST_END_TEST;

/* Seek after EOS: the reference generated again at the seek position, then
 * EOS again. */
GST_START_TEST (test_seek_after_eos_with_reference)
{
  Pipe p;
  BusLog log = { 0 }, log2 = { 0 };
  FlowLog flow;
  GstVideoInfo info;
  GstBuffer *ref = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 34, &info);
  GstSample *first;
  GstPad *pad;
  gint64 t0;
  gchar *props = g_strdup_printf ("prompt=\"<i> in the snow\" "
      "num-inference-steps=%d", TEST_STEPS);

  pipe_start (&p, props, TRUE);
  flow_log_attach (&p, &flow);
  pad = add_reference (&p, ref, &info, TRUE);
  first = pull_sample (&p, 120);
  fail_unless (first != NULL);
  collect_until_eos (&p, &log, 120);
  fail_unless_equals_int (log.n_done, 1);

  t0 = g_get_monotonic_time ();
  fail_unless (seek_to (&p, SEEK_POS), "seek after EOS refused");
  check_seek_image (&p, t0, 0.0, ref, &info, "after EOS");
  collect_until_eos (&p, &log2, 60);
  fail_unless_equals_int (log2.n_done, 1);
  assert_segment_after_flush (&flow);

  buslog_clear (&log);
  buslog_clear (&log2);
  gst_sample_unref (first);
  gst_object_unref (pad);
  gst_buffer_unref (ref);
  g_free (props);
  pipe_stop (&p);
  flow_log_clear (&flow);
}

GST_END_TEST;

/* Issue 16 (live/QoS): with a live upstream, the frames that come while a
 * generation runs replace one another (only the newest is kept, the
 * upstream is not held up) and each replaced one is reported with a QoS
 * message (dropped 1, then 2); the next image is generated from the newest
 * frame at once. Before, two of them queued, upstream blocked on the third,
 * and the next image came from the second, silently. */
GST_START_TEST (test_live_newest_reference)
{
  Pipe p;
  GstVideoInfo info;
  GstBuffer *a = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 41, &info);
  GstBuffer *refs[3];
  GstElement *src;
  GstSample *first, *second, *third;
  GstCaps *caps = gst_video_info_to_caps (&info);
  GstFlowReturn ret = GST_FLOW_ERROR;
  GstMessage *msg;
  kg_output want = { 0 };

  for (gint i = 0; i < 3; i++)
    refs[i] = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 42 + i, &info);
  pipe_start_with (&p, "prompt=\"<i> in the snow\" num-inference-steps=100",
      "appsrc name=a is-live=true do-timestamp=true min-latency=0 "
      "format=time ! f.sink_0", FALSE);
  src = gst_bin_get_by_name (GST_BIN (p.pipeline), "a");
  g_object_set (src, "caps", caps, NULL);
  gst_element_set_state (p.pipeline, GST_STATE_PLAYING);
  g_signal_emit_by_name (src, "push-buffer", a, &ret);
  fail_unless_equals_int (ret, GST_FLOW_OK);
  wait_first_step_of (&p, 100);
  /* the 100-step generation runs: three frames come meanwhile */
  for (gint i = 0; i < 3; i++) {
    g_signal_emit_by_name (src, "push-buffer", refs[i], &ret);
    fail_unless_equals_int (ret, GST_FLOW_OK);
    g_usleep (20000);
  }
  g_object_set (p.filter, "num-inference-steps", TEST_STEPS, NULL);

  first = pull_sample (&p, 120);
  fail_unless (first != NULL, "no image of the first frame");
  second = pull_sample (&p, 60);
  fail_unless (second != NULL, "no image after the generation");
  engine_generate ("<i> in the snow", &refs[2], &info, 1, TEST_SIZE,
      TEST_SIZE, 1, &want);
  assert_same_image (gst_sample_get_buffer (second),
      gst_sample_get_caps (second), &want, 0);
  third = pull_sample (&p, 0.5);
  fail_unless (third == NULL, "an image of a replaced frame");

  for (guint64 n = 1; n <= 2; n++) {
    GstFormat format;
    guint64 processed = 0, dropped = 0;
    gboolean live = FALSE;

    msg = gst_bus_pop_filtered (p.bus, GST_MESSAGE_QOS);
    fail_unless (msg != NULL, "QoS message %" G_GUINT64_FORMAT " missing", n);
    gst_message_parse_qos (msg, &live, NULL, NULL, NULL, NULL);
    gst_message_parse_qos_stats (msg, &format, &processed, &dropped);
    GST_INFO ("QoS: live %d processed %" G_GUINT64_FORMAT " dropped %"
        G_GUINT64_FORMAT, live, processed, dropped);
    fail_unless (live);
    fail_unless_equals_int (format, GST_FORMAT_BUFFERS);
    fail_unless_equals_uint64 (dropped, n);
    gst_message_unref (msg);
  }
  fail_unless (gst_bus_pop_filtered (p.bus, GST_MESSAGE_QOS) == NULL);
  assert_no_error (p.bus);

  kg_output_free (&want);
  gst_sample_unref (first);
  gst_sample_unref (second);
  for (gint i = 0; i < 3; i++)
    gst_buffer_unref (refs[i]);
  gst_buffer_unref (a);
  gst_caps_unref (caps);
  gst_object_unref (src);
  pipe_stop (&p);
}

GST_END_TEST;

/* A live pipeline does not seek: the seek is refused before anything
 * changes, and the generation in progress still ends in its image. */
GST_START_TEST (test_live_seek_refused)
{
  Pipe p;
  GstVideoInfo info;
  GstBuffer *a = make_ref (GST_VIDEO_FORMAT_RGB, 32, 32, 46, &info);
  GstElement *src;
  GstSample *sample;
  GstCaps *caps = gst_video_info_to_caps (&info);
  GstFlowReturn ret = GST_FLOW_ERROR;
  GstMessage *msg;
  gchar *props = g_strdup_printf ("prompt=\"<i> in the snow\" "
      "num-inference-steps=%d", 20);

  pipe_start_with (&p, props, "appsrc name=a is-live=true do-timestamp=true "
      "min-latency=0 format=time ! f.sink_0", FALSE);
  src = gst_bin_get_by_name (GST_BIN (p.pipeline), "a");
  g_object_set (src, "caps", caps, NULL);
  gst_element_set_state (p.pipeline, GST_STATE_PLAYING);
  g_signal_emit_by_name (src, "push-buffer", a, &ret);
  fail_unless_equals_int (ret, GST_FLOW_OK);
  wait_first_step_of (&p, 20);
  fail_if (seek_to (&p, SEEK_POS), "a live pipeline accepted a seek");
  sample = pull_sample (&p, 120);
  fail_unless (sample != NULL, "the generation did not end in its image");
  msg = gst_bus_pop_filtered (p.bus, GST_MESSAGE_PROGRESS);
  while (msg) {
    GstProgressType type;

    gst_message_parse_progress (msg, &type, NULL, NULL);
    fail_if (type == GST_PROGRESS_TYPE_CANCELED, "the generation was "
        "cancelled by a refused seek");
    gst_message_unref (msg);
    msg = gst_bus_pop_filtered (p.bus, GST_MESSAGE_PROGRESS);
  }
  assert_no_error (p.bus);

  gst_sample_unref (sample);
  gst_buffer_unref (a);
  gst_caps_unref (caps);
  gst_object_unref (src);
  g_free (props);
  pipe_stop (&p);
}

GST_END_TEST;

static Suite *
kosmosg_pipeline_suite (void)
{
  Suite *s = suite_create ("kosmosg-pipeline");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_pad_requested_during_text_only);
  tcase_add_test (tc, test_pad_after_paused);
  tcase_add_test (tc, test_bad_prompt_while_playing);
  tcase_add_test (tc, test_text_only_seeks);
  tcase_add_test (tc, test_seek_prerolling_with_reference);
  tcase_add_test (tc, test_seek_prerolling_seekable_upstream);
  tcase_add_test (tc, test_seek_past_the_end);
  tcase_add_test (tc, test_seek_playing_with_reference);
  tcase_add_test (tc, test_seek_after_eos_with_reference);
  tcase_add_test (tc, test_live_newest_reference);
  tcase_add_test (tc, test_live_seek_refused);
  return s;
}

GST_CHECK_MAIN (kosmosg_pipeline);
