/* UniMed for Orthanc — the plugin's runtime context, shared by its files.
 *
 *   plugin.c       entry points, the OnChange dispatch, the route table
 *   config.c       the "UniMed" configuration section
 *   study_state.c  the per-study state machine (table) and the study record
 *   index.c        the in-memory index of studies, findings and embeddings
 *   index_store.c  its query side: the int8 embedding matrix, the packed
 *                  findings rows and their scans (search, findings)
 *   text_query.c   a search text's embedding: cached, batched
 *   journal.c      the work queue, the journal (global property) and the
 *                  replay of /changes; the rebuild at start
 *   worker.c       the analysis of one study and the worker threads
 *   rest.c         the REST handlers and the Explorer extension
 *   listing.c      GET studies, POST studies/analyze-all
 *   sr_render.c    GET studies/{id}/report.html
 *   sr_versions.c  the versions of a study's report
 *   members.c      re-analysis after removals
 *   nearest.c      the nearest known name (for messages)
 *   labels.c       findings as Orthanc labels (Orthanc >= 1.12)
 *   orthanc_io.c   calls into Orthanc's REST API, logging, helpers
 *
 * Include order (no cycles): orthanc_io.h, config.h, study_state.h
 * <- plugin_internal.h <- index_store.h, index.h <- journal.h, worker.h;
 * text_query.h; rest.h stands alone. */
#ifndef UNIMED_PLUGIN_INTERNAL_H
#define UNIMED_PLUGIN_INTERNAL_H

#include <cjson/cJSON.h>
#include <orthanc/OrthancCPlugin.h>
#include <pthread.h>

#include "analysis.h"
#include "config.h"
#include "orthanc_io.h"

#define UNIMED_PLUGIN_NAME "unimed"
/* The SRs' Manufacturer: how the plugin knows its own reports in a study. */
#define UNIMED_SR_MANUFACTURER "UniMed for Orthanc"
#ifndef UNIMED_PLUGIN_VERSION
#define UNIMED_PLUGIN_VERSION "0.1.0"
#endif

typedef struct {
  OrthancPluginContext *ctx;
  unimed_config_t cfg;
  int enabled;
  char disabled_reason[1024];

  unimed_engine **engines; /* one per worker */
  unimed_engine *rest_engine;
  pthread_mutex_t rest_engine_mu;
  int dim;
  char model_hash[32];
  char labelsets_key[1024]; /* "name:hash,..." */
  cJSON *describe;

  /* One lock for the index and the queue; cv signals queue changes and stop. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
} plugin_t;

extern plugin_t g;

#endif
