/* live-mix.c - live image mixing with kosmosgfilter: a live source (a camera
 * with --camera, else a moving test pattern) on sink_0 and a still reference
 * image on sink_1, mixed by the prompt; type a new prompt on stdin to change
 * it while the pipeline runs.
 *
 *   live-mix [--camera] [--steps N] [--size N] [--frames N] MODEL REFERENCE.png
 *
 * The live branch goes through a leaky one-buffer queue, so every generation
 * takes the newest camera frame; the sink does not sync, so a preview shows
 * each image as soon as it exists. --frames N quits after N generated images
 * (with a fakesink: for headless runs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gst/gst.h>

typedef struct
{
  GMainLoop *loop;
  GstElement *pipeline;
  GstElement *mixer;
  gint frames_left;             /* -1: run until EOS/error/Ctrl-C */
  gboolean failed;              /* an error ended the run: exit status 1 */
} App;

static gboolean
on_bus (GstBus * bus, GstMessage * msg, gpointer data)
{
  App *app = data;

  switch (GST_MESSAGE_TYPE (msg)) {
    case GST_MESSAGE_ERROR:{
      GError *err = NULL;
      gchar *dbg = NULL;

      gst_message_parse_error (msg, &err, &dbg);
      g_printerr ("error: %s\n(%s)\n", err->message, dbg ? dbg : "");
      g_error_free (err);
      g_free (dbg);
      app->failed = TRUE;
      g_main_loop_quit (app->loop);
      break;
    }
    case GST_MESSAGE_WARNING:{
      GError *err = NULL;

      gst_message_parse_warning (msg, &err, NULL);
      g_printerr ("warning: %s\n", err->message);
      g_error_free (err);
      break;
    }
    case GST_MESSAGE_EOS:
      g_main_loop_quit (app->loop);
      break;
    case GST_MESSAGE_PROGRESS:{
      gchar *code = NULL, *text = NULL;

      /* model loading; the per-step "generate" progress would flood */
      gst_message_parse_progress (msg, NULL, &code, &text);
      if (g_strcmp0 (code, "generate") != 0)
        g_print ("%s\n", text);
      g_free (code);
      g_free (text);
      break;
    }
    case GST_MESSAGE_ELEMENT:{
      const GstStructure *s = gst_message_get_structure (msg);
      gint64 seed = 0;
      guint64 denoise = 0;

      if (!gst_structure_has_name (s, "kosmosg-done"))
        break;
      gst_structure_get_int64 (s, "seed", &seed);
      gst_structure_get_uint64 (s, "denoise-time", &denoise);
      g_print ("image done: seed %" G_GINT64_FORMAT ", denoising %.2f s, "
          "prompt \"%s\"\n", seed, denoise / 1e9,
          gst_structure_get_string (s, "prompt"));
      if (app->frames_left > 0 && --app->frames_left == 0)
        g_main_loop_quit (app->loop);
      break;
    }
    default:
      break;
  }
  return TRUE;
}

/* One line on stdin = the new prompt (it needs two "<i>": camera, reference;
 * the mixer refuses another one with a warning and keeps its prompt). */
static gboolean
on_stdin (GIOChannel * ch, GIOCondition cond, gpointer data)
{
  App *app = data;
  gchar *line = NULL;
  GIOStatus st = g_io_channel_read_line (ch, &line, NULL, NULL, NULL);

  if (st == G_IO_STATUS_EOF || st == G_IO_STATUS_ERROR)
    return FALSE;
  if (line) {
    g_strstrip (line);
    if (*line) {
      gchar *now = NULL;

      g_object_set (app->mixer, "prompt", line, NULL);
      g_object_get (app->mixer, "prompt", &now, NULL);
      g_print ("prompt: \"%s\"\n", now);
      g_free (now);
    }
    g_free (line);
  }
  return TRUE;
}

int
main (int argc, char **argv)
{
  gboolean camera = FALSE;
  gint steps = 25, frames = -1, size = 512;
  GOptionEntry entries[] = {
    {"camera", 0, 0, G_OPTION_ARG_NONE, &camera, "Use v4l2src", NULL},
    {"steps", 0, 0, G_OPTION_ARG_INT, &steps, "Denoising steps", "N"},
    {"size", 0, 0, G_OPTION_ARG_INT, &size, "Output width and height "
          "(a multiple of 64)", "N"},
    {"frames", 0, 0, G_OPTION_ARG_INT, &frames,
        "Quit after N images (headless, fakesink)", "N"},
    {NULL}
  };
  GOptionContext *ctx = g_option_context_new ("MODEL REFERENCE.png");
  GError *err = NULL;
  gchar *desc;
  App app = { 0 };
  GstBus *bus;
  GIOChannel *in;
  gint ret = 0;

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_group (ctx, gst_init_get_option_group ());
  if (!g_option_context_parse (ctx, &argc, &argv, &err) || argc != 3) {
    g_printerr ("%s\n", err ? err->message :
        "usage: live-mix [--camera] [--steps N] [--size N] [--frames N] "
        "MODEL REF.png");
    return 2;
  }
  g_option_context_free (ctx);

  desc = g_strdup_printf ("%s ! videoconvert ! video/x-raw,format=RGB ! "
      "queue leaky=downstream max-size-buffers=1 ! k.sink_0 "
      "filesrc location=\"%s\" ! pngdec ! k.sink_1 "
      "kosmosgfilter name=k model-location=\"%s\" num-inference-steps=%d "
      "prompt=\"<i> in the style of <i>\" ! video/x-raw,width=%d,height=%d ! "
      "videoconvert ! %s",
      camera ? "v4l2src" :
      "videotestsrc is-live=true pattern=ball ! video/x-raw,framerate=2/1",
      argv[2], argv[1], steps, size, size,
      frames > 0 ? "fakesink" : "autovideosink sync=false");
  app.pipeline = gst_parse_launch (desc, &err);
  g_free (desc);
  if (!app.pipeline) {
    g_printerr ("pipeline: %s\n", err->message);
    return 1;
  }
  app.mixer = gst_bin_get_by_name (GST_BIN (app.pipeline), "k");
  app.frames_left = frames;
  app.loop = g_main_loop_new (NULL, FALSE);
  bus = gst_element_get_bus (app.pipeline);
  gst_bus_add_watch (bus, on_bus, &app);
  in = g_io_channel_unix_new (0);
  g_io_add_watch (in, G_IO_IN | G_IO_HUP, on_stdin, &app);

  g_print ("type a new prompt (two <i>: live image, reference) and Enter\n");
  if (gst_element_set_state (app.pipeline, GST_STATE_PLAYING) ==
      GST_STATE_CHANGE_FAILURE) {
    GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);

    /* the error that failed the state change, not yet dispatched */
    if (msg) {
      on_bus (bus, msg, &app);
      gst_message_unref (msg);
    }
    ret = 1;
  } else {
    g_main_loop_run (app.loop);
  }
  if (app.failed)
    ret = 1;

  gst_element_set_state (app.pipeline, GST_STATE_NULL);
  g_io_channel_unref (in);
  gst_bus_remove_watch (bus);
  gst_object_unref (bus);
  gst_object_unref (app.mixer);
  gst_object_unref (app.pipeline);
  g_main_loop_unref (app.loop);
  return ret;
}
