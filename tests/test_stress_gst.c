/* test_stress_gst.c - the kosmosg elements under repeated state changes, on the tiny model
 * ($KG_TINY_MODEL), CPU backend, 64x64.
 *
 *   test_stress_gst cycles N    N x NULL->PLAYING->NULL of one kosmosgsrc pipeline: even cycles
 *                               run to EOS and must give the reference image (same seed), odd
 *                               cycles go back to NULL at once (mostly mid-generation).
 *   test_stress_gst midgen N    N long generations interrupted after their first step, by turns
 *                               with PAUSED->READY and with a flush (flush-start/flush-stop on
 *                               the source); after a flush the source must generate the image
 *                               again, equal to the reference.
 *   test_stress_gst pads N      kosmosgfilter: a sink pad requested and released N times while
 *                               PLAYING; the pipeline must still stop cleanly.
 *   test_stress_gst share       two pipelines on the same model file, each in its own thread:
 *                               identical images for identical seeds.
 * Every mode fails on an ERROR/WARNING message or a g_critical/g_warning (fatal here), which
 * includes the leaks tracer's "Leaks detected" at gst_deinit() when any GstObject/GstMiniObject
 * is left alive (GST_TRACERS=leaks, as meson runs it). RSS is printed for the cycles. */
#include <gst/gst.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define SIZE 64
#define SEED 7
#define IMG_BYTES (SIZE * SIZE * 3)

typedef struct sink_data {
    GMutex lock;
    int buffers;
    guint8 last[IMG_BYTES];
    int last_ok;
} sink_data;

static double rss_mib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1.0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE) / (1 << 20);
}

static void on_handoff(GstElement *sink, GstBuffer *buf, GstPad *pad, gpointer user)
{
    sink_data *d = user;
    GstMapInfo map;
    (void)sink;
    (void)pad;
    g_mutex_lock(&d->lock);
    d->buffers++;
    d->last_ok = 0;
    if (gst_buffer_map(buf, &map, GST_MAP_READ)) {
        if (map.size == IMG_BYTES) {
            memcpy(d->last, map.data, IMG_BYTES);
            d->last_ok = 1;
        }
        gst_buffer_unmap(buf, &map);
    }
    g_mutex_unlock(&d->lock);
}

static GstElement *src_pipeline(int steps, sink_data *d, const char *extra)
{
    GError *error = NULL;
    gchar *desc = g_strdup_printf(
        "kosmosgsrc name=src model-location=\"%s\" backend=cpu prompt=\"a red square\" "
        "num-inference-steps=%d seed=%d num-images=1 guidance-scale=1.0 post-messages=true %s ! "
        "video/x-raw,format=RGB,width=%d,height=%d ! fakesink name=sink sync=false "
        "signal-handoffs=true",
        getenv("KG_TINY_MODEL"), steps, SEED, extra ? extra : "", SIZE, SIZE);
    GstElement *p = gst_parse_launch(desc, &error);
    GstElement *sink;
    if (!p) {
        printf("cannot build \"%s\": %s\n", desc, error ? error->message : "?");
        exit(1);
    }
    g_free(desc);
    sink = gst_bin_get_by_name(GST_BIN(p), "sink");
    g_signal_connect(sink, "handoff", G_CALLBACK(on_handoff), d);
    gst_object_unref(sink);
    return p;
}

/* Pops messages until one of `types`; ERROR and WARNING messages are printed and counted. */
static GstMessage *wait_for(GstElement *p, GstMessageType types, const char *element_msg,
                            int *errors)
{
    GstBus *bus = gst_element_get_bus(p);
    GstMessage *m;
    for (;;) {
        m = gst_bus_timed_pop_filtered(bus, 60 * GST_SECOND,
                                       types | GST_MESSAGE_ERROR | GST_MESSAGE_WARNING);
        if (!m)
            break;
        if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR ||
            GST_MESSAGE_TYPE(m) == GST_MESSAGE_WARNING) {
            GError *e = NULL;
            if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR)
                gst_message_parse_error(m, &e, NULL);
            else
                gst_message_parse_warning(m, &e, NULL);
            printf("%s from %s: %s\n", gst_message_type_get_name(GST_MESSAGE_TYPE(m)),
                   GST_OBJECT_NAME(GST_MESSAGE_SRC(m)), e ? e->message : "?");
            g_clear_error(&e);
            (*errors)++;
            if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR && !(types & GST_MESSAGE_ERROR)) {
                gst_message_unref(m);
                m = NULL;
                break;
            }
            gst_message_unref(m);
            continue;
        }
        if (element_msg && GST_MESSAGE_TYPE(m) == GST_MESSAGE_ELEMENT &&
            !gst_message_has_name(m, element_msg)) {
            gst_message_unref(m);
            continue;
        }
        break;
    }
    gst_object_unref(bus);
    return m;
}

static void drain_bus(GstElement *p)
{
    GstBus *bus = gst_element_get_bus(p);
    gst_bus_set_flushing(bus, TRUE);
    gst_bus_set_flushing(bus, FALSE);
    gst_object_unref(bus);
}

/* Starts a state change without waiting for the preroll (which is a whole generation). */
static int start_state(GstElement *p, GstState s)
{
    return gst_element_set_state(p, s) != GST_STATE_CHANGE_FAILURE;
}

static int set_state(GstElement *p, GstState s)
{
    GstStateChangeReturn r = gst_element_set_state(p, s);
    if (r == GST_STATE_CHANGE_ASYNC)
        r = gst_element_get_state(p, NULL, NULL, 60 * GST_SECOND);
    return r == GST_STATE_CHANGE_SUCCESS || r == GST_STATE_CHANGE_NO_PREROLL;
}

/* One run to EOS; copies the image into out. */
static int run_to_eos(GstElement *p, sink_data *d, guint8 *out, int *errors)
{
    GstMessage *m;
    int ok;
    d->buffers = 0;
    if (!set_state(p, GST_STATE_PLAYING))
        return 0;
    m = wait_for(p, GST_MESSAGE_EOS, NULL, errors);
    ok = m != NULL && d->buffers == 1 && d->last_ok;
    if (m)
        gst_message_unref(m);
    if (ok && out)
        memcpy(out, d->last, IMG_BYTES);
    return set_state(p, GST_STATE_NULL) && ok;
}

static int run_cycles(int n)
{
    static sink_data d;
    static guint8 ref[IMG_BYTES], img[IMG_BYTES];
    GstElement *p = src_pipeline(1, &d, NULL);
    int errors = 0, done = 0, same = 0, stopped = 0;
    double rss0 = 0, rss1;

    kgt_check(run_to_eos(p, &d, ref, &errors), "reference run to EOS");
    for (int i = 0; i < n; i++) {
        if (i == 10)
            rss0 = rss_mib();
        if (i % 2 == 0) {
            if (!run_to_eos(p, &d, img, &errors))
                break;
            same += !memcmp(img, ref, IMG_BYTES);
        } else {
            if (!start_state(p, GST_STATE_PLAYING) || !set_state(p, GST_STATE_NULL))
                break;
            stopped++;
        }
        drain_bus(p);
        done++;
    }
    rss1 = rss_mib();
    kgt_check(done == n, "%d of %d NULL->PLAYING->NULL cycles (%d to EOS, %d stopped at once)",
              done, n, done - stopped, stopped);
    kgt_check(same == (done + 1) / 2, "%d of %d completed cycles gave the reference image", same,
              (done + 1) / 2);
    kgt_check(errors == 0, "%d ERROR/WARNING messages", errors);
    printf("RSS: %.2f MiB after 10 cycles, %.2f MiB after %d (%+.2f MiB)\n", rss0, rss1, done,
           rss1 - rss0);
    gst_object_unref(p);
    return 0;
}

static int run_midgen(int n)
{
    static sink_data d;
    static guint8 ref[IMG_BYTES], img[IMG_BYTES];
    GstElement *shortp = src_pipeline(1, &d, NULL);
    GstElement *p = src_pipeline(200, &d, NULL);
    GstElement *src = gst_bin_get_by_name(GST_BIN(p), "src");
    int errors = 0, ready_ok = 0, flush_ok = 0;
    gint64 worst = 0;

    kgt_check(run_to_eos(shortp, &d, ref, &errors), "reference run to EOS");
    gst_object_unref(shortp);
    for (int i = 0; i < n; i++) {
        GstMessage *m;
        gint64 t0;
        g_object_set(src, "num-inference-steps", 200, NULL);
        d.buffers = 0;
        if (!start_state(p, GST_STATE_PLAYING))
            break;
        m = wait_for(p, GST_MESSAGE_ELEMENT, "kosmosg-progress", &errors);
        if (!m)
            break;
        gst_message_unref(m);
        t0 = g_get_monotonic_time();
        if (i % 2 == 0) {
            /* PAUSED->READY (through PAUSED) in the middle of the generation */
            if (!set_state(p, GST_STATE_READY))
                break;
            ready_ok += d.buffers == 0;
        } else {
            /* flush: the generation is cancelled and, the source not being done, redone; a
             * short one this time, which must give the reference image */
            g_object_set(src, "num-inference-steps", 1, NULL);
            if (!gst_element_send_event(src, gst_event_new_flush_start()) ||
                !gst_element_send_event(src, gst_event_new_flush_stop(TRUE)))
                break;
            m = wait_for(p, GST_MESSAGE_EOS, NULL, &errors);
            if (m) {
                gst_message_unref(m);
                flush_ok += d.buffers == 1 && d.last_ok && !memcmp(d.last, ref, IMG_BYTES);
            }
        }
        if (g_get_monotonic_time() - t0 > worst)
            worst = g_get_monotonic_time() - t0;
        if (!set_state(p, GST_STATE_NULL))
            break;
        drain_bus(p);
    }
    kgt_check(ready_ok == (n + 1) / 2,
              "%d of %d PAUSED->READY mid-generation: no image, clean stop", ready_ok, (n + 1) / 2);
    kgt_check(flush_ok == n / 2,
              "%d of %d flushes mid-generation: the image redone, reference bytes", flush_ok,
              n / 2);
    kgt_check(errors == 0, "%d ERROR/WARNING messages", errors);
    printf("slowest interruption (to READY / to the redone image): %.2f s\n", worst / 1e6);
    (void)img;
    gst_object_unref(src);
    gst_object_unref(p);
    return 0;
}

static int run_pads(int n)
{
    GError *error = NULL;
    gchar *desc = g_strdup_printf(
        "videotestsrc num-buffers=1 ! video/x-raw,format=RGB,width=32,height=32 ! "
        "kosmosgfilter name=f model-location=\"%s\" backend=cpu prompt=\"<i> on a beach\" "
        "num-inference-steps=200 seed=%d guidance-scale=1.0 post-messages=true ! "
        "video/x-raw,format=RGB,width=%d,height=%d ! fakesink sync=false",
        getenv("KG_TINY_MODEL"), SEED, SIZE, SIZE);
    GstElement *p = gst_parse_launch(desc, &error);
    GstElement *f;
    GstMessage *m;
    int errors = 0, requested = 0, pads0, pads1;

    g_free(desc);
    if (!kgt_check(p != NULL, "filter pipeline: %s", error ? error->message : "ok"))
        return 0;
    f = gst_bin_get_by_name(GST_BIN(p), "f");
    pads0 = f->numsinkpads;
    kgt_check(start_state(p, GST_STATE_PLAYING), "PLAYING");
    m = wait_for(p, GST_MESSAGE_ELEMENT, "kosmosg-progress", &errors);
    kgt_check(m != NULL, "generation started");
    if (m)
        gst_message_unref(m);
    for (int i = 0; i < n; i++) {
        GstPad *pad = gst_element_request_pad_simple(f, "sink_%u");
        if (!pad)
            break;
        requested++;
        gst_element_release_request_pad(f, pad);
        gst_object_unref(pad);
    }
    pads1 = f->numsinkpads;
    kgt_check(requested == n, "%d of %d sink pads requested and released while PLAYING", requested,
              n);
    kgt_check(pads1 == pads0, "sink pads: %d before, %d after", pads0, pads1);
    kgt_check(set_state(p, GST_STATE_NULL), "back to NULL mid-generation");
    kgt_check(errors == 0, "%d ERROR/WARNING messages", errors);
    gst_object_unref(f);
    gst_object_unref(p);
    return 0;
}

typedef struct share_job {
    GstElement *p;
    sink_data d;
    guint8 img[3][IMG_BYTES];
    int ok, errors;
} share_job;

static gpointer share_thread(gpointer user)
{
    share_job *j = user;
    GstElement *src = gst_bin_get_by_name(GST_BIN(j->p), "src");
    j->ok = 1;
    for (int k = 0; k < 3 && j->ok; k++) {
        g_object_set(src, "seed", (gint64)(SEED + k), NULL);
        j->ok = run_to_eos(j->p, &j->d, j->img[k], &j->errors);
        drain_bus(j->p);
    }
    gst_object_unref(src);
    return NULL;
}

static int run_share(void)
{
    static share_job a, b;
    GThread *ta, *tb;
    a.p = src_pipeline(1, &a.d, NULL);
    b.p = src_pipeline(1, &b.d, NULL);
    ta = g_thread_new("pipeline-a", share_thread, &a);
    tb = g_thread_new("pipeline-b", share_thread, &b);
    g_thread_join(ta);
    g_thread_join(tb);
    kgt_check(a.ok && b.ok, "both pipelines generated 3 images");
    kgt_check(a.errors == 0 && b.errors == 0, "%d + %d ERROR/WARNING messages", a.errors, b.errors);
    for (int k = 0; k < 3; k++)
        kgt_check(!memcmp(a.img[k], b.img[k], IMG_BYTES), "seed %d: both pipelines, same bytes",
                  SEED + k);
    kgt_check(memcmp(a.img[0], a.img[1], IMG_BYTES) != 0, "seeds %d and %d differ", SEED, SEED + 1);
    gst_object_unref(a.p);
    gst_object_unref(b.p);
    return 0;
}

int main(int argc, char **argv)
{
    /* scripts/sanitize.sh runs fewer rounds: ASan makes each one ~3x slower */
    const char *scale = getenv("KG_STRESS_GST_N");
    int n = argc >= 3 ? atoi(scale && *scale ? scale : argv[2]) : 0;
    if (!getenv("KG_TINY_MODEL")) {
        printf("KG_TINY_MODEL is not set\n");
        return 1;
    }
    gst_init(NULL, NULL);
    /* a critical or a warning from GLib/GStreamer is a failure */
    g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
    if (argc >= 3 && !strcmp(argv[1], "cycles"))
        run_cycles(n);
    else if (argc >= 3 && !strcmp(argv[1], "midgen"))
        run_midgen(n);
    else if (argc >= 3 && !strcmp(argv[1], "pads"))
        run_pads(n);
    else if (argc >= 2 && !strcmp(argv[1], "share"))
        run_share();
    else {
        fprintf(stderr, "usage: test_stress_gst cycles N | midgen N | pads N | share\n");
        return 2;
    }
    /* the leaks tracer checks here; a leak is a fatal g_warning */
    gst_deinit();
    return kgt_finish();
}
