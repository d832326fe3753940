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

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, kosmosg,
    "Kosmos-G multimodal image generation", plugin_init, VERSION, "LGPL",
    PACKAGE, "https://github.com/microsoft/unilm/tree/master/kosmos-g")
