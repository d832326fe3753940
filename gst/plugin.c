/* GStreamer Kosmos-G plugin
 * Copyright (C) 2026 kosmosg-gst authors
 *
 * This library is free software; you can redistribute it and/or
 * modify it under the terms of the GNU Library General Public
 * License as published by the Free Software Foundation; either
 * version 2.1 of the License, or (at your option) any later version.
 */
#include "gstkosmosgcommon.h"
#include "gstkosmosgfilter.h"
#include "gstkosmosgsrc.h"

static gboolean
plugin_init (GstPlugin * plugin)
{
  gboolean ret = FALSE;

  gst_kosmosg_meta_register ();
  ret |= GST_ELEMENT_REGISTER (kosmosgfilter, plugin);
  ret |= GST_ELEMENT_REGISTER (kosmosgsrc, plugin);
  return ret;
}

/* The origin is this plugin's (meson option package_origin), not the
 * model's: Kosmos-G itself comes from Microsoft's unilm repository. */
GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, kosmosg,
    "Image generation with Kosmos-G (multimodal prompts: text and reference "
    "images) on the CPU and CUDA", plugin_init, VERSION, "LGPL",
    GST_PACKAGE_NAME, GST_PACKAGE_ORIGIN)
