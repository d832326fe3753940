/* GStreamer Kosmos-G plugin
 * Copyright (C) 2026 kosmosg-gst authors
 *
 * This library is free software; you can redistribute it and/or
 * modify it under the terms of the GNU Library General Public
 * License as published by the Free Software Foundation; either
 * version 2.1 of the License, or (at your option) any later version.
 */
/* gstkosmosgregistry.h - the process-wide table of loaded Kosmos-G models.
 *
 * A model file is large (GBs) and slow to load, so every element of the
 * process that asks for the same file on the same backend, device,
 * precision and CPU thread count shares one kg_model (the engine's model is immutable and may be
 * shared; each element keeps its own kg_session). Entries are refcounted and
 * unloaded when the last element releases them. */
#ifndef __GST_KOSMOSG_REGISTRY_H__
#define __GST_KOSMOSG_REGISTRY_H__

#include <gst/gst.h>

#include "kosmosg.h"

G_BEGIN_DECLS

typedef struct _GstKosmosGModel GstKosmosGModel;

/* Returns the shared entry for (path, opt->backend, opt->device_id,
 * opt->precision, opt->n_threads), loading the file when no element holds it yet.
 * *loaded_now tells whether this call loaded it; *users is the number of
 * holders including this one. NULL with err filled on failure. */
GstKosmosGModel *gst_kosmosg_model_acquire (const gchar * path,
    const kg_model_options * opt, gboolean * loaded_now, guint * users,
    kg_error * err);

void gst_kosmosg_model_release (GstKosmosGModel * model);

kg_model *gst_kosmosg_model_get (GstKosmosGModel * model);

G_END_DECLS

#endif /* __GST_KOSMOSG_REGISTRY_H__ */
