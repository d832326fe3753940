/* GStreamer Kosmos-G plugin
 * Copyright (C) 2026 kosmosg-gst authors
 *
 * This library is free software; you can redistribute it and/or
 * modify it under the terms of the GNU Library General Public
 * License as published by the Free Software Foundation; either
 * version 2.1 of the License, or (at your option) any later version.
 */
#include <stdlib.h>

#include "gstkosmosgregistry.h"

struct _GstKosmosGModel
{
  gchar *key;                   /* "<canonical path>|<backend>|<device>|<precision>|<threads>" */
  gchar *path;                  /* as the first user gave it, for messages */
  kg_model *model;
  guint users;                  /* protected by registry_lock */
};

/* Loads run under the lock, so two elements asking for the same file at
 * once load it once; the second waits for the first. */
static GMutex registry_lock;
static GHashTable *registry;    /* key -> GstKosmosGModel, protected by registry_lock */

static gchar *
make_key (const gchar * path, const kg_model_options * opt)
{
  /* on an explicit backend, auto and the precision it means there are one model */
  char *real = realpath (path, NULL);
  gchar *key = g_strdup_printf ("%s|%d|%d|%d|%d", real ? real : path,
      (int) opt->backend, opt->device_id,
      (int) kg_precision_resolve (opt->precision, opt->backend), opt->n_threads);

  free (real);
  return key;
}

GstKosmosGModel *
gst_kosmosg_model_acquire (const gchar * path, const kg_model_options * opt,
    gboolean * loaded_now, guint * users, kg_error * err)
{
  GstKosmosGModel *entry;
  kg_model *model = NULL;
  gchar *key = make_key (path, opt);

  *loaded_now = FALSE;
  g_mutex_lock (&registry_lock);
  if (!registry)
    registry = g_hash_table_new (g_str_hash, g_str_equal);
  entry = g_hash_table_lookup (registry, key);
  if (entry) {
    g_free (key);
    entry->users++;
    *users = entry->users;
    g_mutex_unlock (&registry_lock);
    return entry;
  }
  if (kg_model_open (&model, path, opt, err) != KG_OK) {
    g_mutex_unlock (&registry_lock);
    g_free (key);
    return NULL;
  }
  entry = g_new0 (GstKosmosGModel, 1);
  entry->key = key;
  entry->model = model;
  entry->users = 1;
  g_hash_table_insert (registry, entry->key, entry);
  *loaded_now = TRUE;
  *users = 1;
  g_mutex_unlock (&registry_lock);
  return entry;
}

void
gst_kosmosg_model_release (GstKosmosGModel * entry)
{
  if (!entry)
    return;
  g_mutex_lock (&registry_lock);
  if (--entry->users > 0) {
    g_mutex_unlock (&registry_lock);
    return;
  }
  g_hash_table_remove (registry, entry->key);
  g_mutex_unlock (&registry_lock);
  kg_model_close (entry->model);
  g_free (entry->key);
  g_free (entry);
}

kg_model *
gst_kosmosg_model_get (GstKosmosGModel * entry)
{
  return entry->model;
}
