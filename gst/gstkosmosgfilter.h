/* GStreamer Kosmos-G plugin
 * Copyright (C) 2026 kosmosg-gst authors
 *
 * This library is free software; you can redistribute it and/or
 * modify it under the terms of the GNU Library General Public
 * License as published by the Free Software Foundation; either
 * version 2.1 of the License, or (at your option) any later version.
 */
#ifndef __GST_KOSMOSG_FILTER_H__
#define __GST_KOSMOSG_FILTER_H__

#include <gst/gst.h>
#include <gst/base/gstaggregator.h>

G_BEGIN_DECLS

#define GST_TYPE_KOSMOSG_FILTER_PAD (gst_kosmosg_filter_pad_get_type ())
G_DECLARE_FINAL_TYPE (GstKosmosGFilterPad, gst_kosmosg_filter_pad,
    GST, KOSMOSG_FILTER_PAD, GstAggregatorPad);

#define GST_TYPE_KOSMOSG_FILTER (gst_kosmosg_filter_get_type ())
G_DECLARE_FINAL_TYPE (GstKosmosGFilter, gst_kosmosg_filter,
    GST, KOSMOSG_FILTER, GstAggregator);

GST_ELEMENT_REGISTER_DECLARE (kosmosgfilter);

G_END_DECLS

#endif /* __GST_KOSMOSG_FILTER_H__ */
