/* UniMed for Orthanc — the plugin's entry file: Orthanc's entry points, the
 * configuration and engines at start, the route table, and the OnChange
 * callback that turns Orthanc's events into state-machine events.
 *
 * Event flow (docs/PLUGIN.md):
 *  - the OnChange callback only applies events to the in-memory state
 *    machine (study_state.c); it starts the threads at OrthancStarted and
 *    joins them at OrthancStopped;
 *  - the journal thread (journal.c) replays Orthanc's /changes log and
 *    persists the queue and that position in one global property;
 *  - worker threads (worker.c) analyse one study at a time with their own
 *    engine. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "journal.h"
#include "listing.h"
#include "members.h"
#include "rest.h"
#include "text_query.h"
#include "worker.h"

plugin_t g;

/* ======================================================================
 * the route table (under "UniMed"."Root")
 * ==================================================================== */

typedef struct {
  const char *path; /* regular expression after Root */
  OrthancPluginRestCallback handler;
} route_t;

static const route_t routes[] = {
    {"status", rest_status},                    /* GET */
    {"studies", rest_studies},                  /* GET ?state=&label_set=&modality=&analysed_since=&limit=&since= */
    {"studies/analyze-all", rest_analyze_all},  /* POST */
    {"studies/([^/]+)", rest_study},            /* GET */
    {"studies/([^/]+)/analyze", rest_analyze},  /* POST */
    {"studies/([^/]+)/report.html", rest_report_html}, /* GET */
    {"findings", rest_findings},                /* GET ?label=&min_probability=&label_set=&modality=&limit=&since= */
    {"search", rest_search},                    /* GET ?text=&modality=&limit=&since= */
    {"classify", rest_classify},                /* POST a DICOM file */
    {"label-sets", rest_label_sets},            /* GET */
    {".*", rest_unknown},
};

static const route_t disabled_routes[] = {
    {"status", rest_disabled_status},
    {".*", rest_disabled},
};

static void register_routes(const route_t *r, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char re[512];
    snprintf(re, sizeof re, "%s%s", rest_root(), r[i].path);
    OrthancPluginRegisterRestCallbackNoLock(g.ctx, re, r[i].handler);
  }
}

/* ======================================================================
 * Orthanc's events
 * ==================================================================== */

static OrthancPluginErrorCode on_change(OrthancPluginChangeType type,
                                        OrthancPluginResourceType rtype, const char *id) {
  switch (type) {
    case OrthancPluginChangeType_OrthancStarted:
      if (g.enabled) {
        threads_start(worker_main, (void **)g.engines, g.cfg.workers);
        members_start(g.cfg.stable_age);
      }
      break;
    case OrthancPluginChangeType_OrthancStopped:
      members_stop();
      listing_stop();
      threads_stop();
      break;
    case OrthancPluginChangeType_NewStudy:
      if (id) plugin_event(id, EV_NEW_STUDY, 0);
      break;
    case OrthancPluginChangeType_StableStudy:
      if (id) plugin_event(id, EV_STABLE, 0);
      break;
    case OrthancPluginChangeType_Deleted:
      if (id && rtype == OrthancPluginResourceType_Study) {
        plugin_study_gone(id);
      } else if (id && (rtype == OrthancPluginResourceType_Instance ||
                        rtype == OrthancPluginResourceType_Series)) {
        members_removed(id); /* its study is analysed again once removals settle */
      }
      break;
    default:
      break;
  }
  return OrthancPluginErrorCode_Success;
}

/* ======================================================================
 * entry points
 * ==================================================================== */

static void disable(const char *why) {
  g.enabled = 0;
  size_t n = strlen(why);
  if (n >= sizeof g.disabled_reason) n = sizeof g.disabled_reason - 1;
  memcpy(g.disabled_reason, why, n);
  g.disabled_reason[n] = 0;
}

static int mkdir_p(const char *path) {
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return -1;
  for (char *p = tmp + 1; *p; p++) {
    if (*p == '/') {
      *p = 0;
      if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
      *p = '/';
    }
  }
  if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
  return 0;
}

static int create_engines(char *err, size_t errlen) {
  unimed_engine_options o;
  memset(&o, 0, sizeof o);
  o.model_dir = g.cfg.model_dir;
  o.label_sets = (const char *const *)g.cfg.label_sets;
  o.n_label_sets = g.cfg.n_label_sets;
  o.label_set_dir = g.cfg.label_set_dir;
  o.cache_dir = g.cfg.cache_dir;
  o.max_slices = g.cfg.max_slices;
  o.threads = g.cfg.threads;
  o.precision = (unimed_precision)g.cfg.precision;
  o.max_frame_bytes = (uint64_t)g.cfg.decode_budget_mb << 20;
  o.manufacturer = UNIMED_SR_MANUFACTURER; /* worker.c recognises its SRs by it */
  o.software_version = UNIMED_PLUGIN_VERSION;
  if (o.cache_dir && mkdir_p(o.cache_dir) != 0) {
    log_warning("UniMed: cannot create CacheDirectory %s (%s): label-set embeddings are not cached",
                o.cache_dir, strerror(errno));
    o.cache_dir = NULL;
  }
  g.rest_engine = unimed_engine_create(&o, err, errlen);
  if (!g.rest_engine) return -1;
  g.engines = calloc((size_t)g.cfg.workers, sizeof *g.engines);
  for (int i = 0; i < g.cfg.workers; i++) {
    g.engines[i] = unimed_engine_create(&o, err, errlen);
    if (!g.engines[i]) return -1;
  }
  g.dim = unimed_engine_embed_dim(g.rest_engine);
  if (store_init(g.dim) != 0) {
    snprintf(err, errlen, "out of memory for the index");
    return -1;
  }
  g.describe = unimed_engine_describe(g.rest_engine);
  const unimed_model_card *card = unimed_engine_model_card(g.rest_engine);
  if (card)
    log_warning("UniMed: model card %s: %d validated label set(s)", card->path, card->n_label_sets);
  else
    log_info("UniMed: %s has no model card (model-card.json): no label set is flagged", g.cfg.model_dir);
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(g.describe, "model");
  const char *mh = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "hash"));
  snprintf(g.model_hash, sizeof g.model_hash, "%s", mh ? mh : "");
  size_t off = 0;
  const cJSON *ls;
  cJSON_ArrayForEach(ls, cJSON_GetObjectItemCaseSensitive(g.describe, "label_sets")) {
    const char *nm = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ls, "name"));
    const char *hs = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ls, "hash"));
    /* A set the model card does not list: its findings and SR carry the
     * warning, so the key (and the studies' fingerprints) change when the
     * card starts or stops listing it. */
    const char *warning = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ls, "warning"));
    if (warning) log_warning("UniMed: %s", warning);
    int w = snprintf(g.labelsets_key + off, sizeof g.labelsets_key - off, "%s%s:%s%s",
                     off ? "," : "", nm ? nm : "?", hs ? hs : "?", warning ? ":unlisted" : "");
    if (w < 0 || (size_t)w >= sizeof g.labelsets_key - off) break;
    off += (size_t)w;
  }
  return 0;
}

__attribute__((visibility("default"))) int32_t OrthancPluginInitialize(OrthancPluginContext *context) {
  memset(&g, 0, sizeof g);
  g.ctx = context;
  orth_set_context(context);
  pthread_mutex_init(&g.mu, NULL);
  pthread_mutex_init(&g.rest_engine_mu, NULL);
  pthread_cond_init(&g.cv, NULL);

  if (OrthancPluginCheckVersion(context) == 0) {
    char msg[256];
    snprintf(msg, sizeof msg,
             "UniMed: this plugin needs Orthanc >= %d.%d.%d (running %s): not started",
             ORTHANC_PLUGINS_MINIMAL_MAJOR_NUMBER, ORTHANC_PLUGINS_MINIMAL_MINOR_NUMBER,
             ORTHANC_PLUGINS_MINIMAL_REVISION_NUMBER, context->orthancVersion);
    OrthancPluginLogError(context, msg);
    return -1;
  }
#define UNIMED_DESCRIPTION                                                                  \
  "UniMed for Orthanc: zero-shot findings with the UniMed-CLIP vision-language model, "    \
  "written back as DICOM SR and served over REST"
#if ORTHANC_PLUGINS_VERSION_IS_ABOVE(1, 12, 4) /* the SDK of Debian 13's Orthanc 1.12.7 */
  OrthancPluginSetDescription2(context, UNIMED_PLUGIN_NAME, UNIMED_DESCRIPTION);
#else
  OrthancPluginSetDescription(context, UNIMED_DESCRIPTION);
#endif

  char err[1024] = "";
  if (config_load(context, &g.cfg, err, sizeof err) != 0) {
    log_error("UniMed: configuration error: %s. The plugin is disabled; Orthanc goes on.", err);
    disable(err);
  } else if (!g.cfg.enable) {
    log_warning("UniMed: disabled by the configuration (\"UniMed\".\"Enable\": false)");
    disable("disabled by the configuration (\"UniMed\".\"Enable\": false)");
  } else {
    log_warning("UniMed: loading the model from %s (%d worker(s), %d thread(s) each, %s)",
                g.cfg.model_dir, g.cfg.workers, g.cfg.threads,
                unimed_precision_name((unimed_precision)g.cfg.precision));
    if (g.cfg.precision == UNIMED_PRECISION_BF16 && !unimed_bf16_supported())
      log_warning("UniMed: \"Precision\": \"bf16\" but this CPU has no avx512_bf16: "
                  "running FP32");
    if (g.cfg.precision == UNIMED_PRECISION_INT8 && !unimed_int8_supported())
      log_warning("UniMed: \"Precision\": \"int8\" but this CPU has no AVX-512 VNNI or AVX-VNNI: "
                  "running %s", unimed_bf16_supported() ? "BF16" : "FP32");
    if (create_engines(err, sizeof err) != 0) {
      char why[1200];
      snprintf(why, sizeof why, "cannot load the model or the label sets: %s", err);
      log_error("UniMed: %s. The plugin is disabled; Orthanc goes on.", why);
      disable(why);
    } else {
      g.enabled = 1;
      log_warning("UniMed: model %s, label sets %s, REST API under %s", g.model_hash,
                  g.labelsets_key, g.cfg.root);
    }
  }
  if (g.enabled) {
    register_routes(routes, sizeof routes / sizeof routes[0]);
    rest_register_explorer();
    OrthancPluginRegisterOnChangeCallback(context, on_change);
  } else {
    register_routes(disabled_routes, sizeof disabled_routes / sizeof disabled_routes[0]);
    /* The panel says that the plugin is disabled, and why. */
    rest_register_explorer();
  }
  return 0;
}

__attribute__((visibility("default"))) void OrthancPluginFinalize(void) {
  members_stop();
  listing_stop();
  threads_stop();
  if (g.engines)
    for (int i = 0; i < g.cfg.workers; i++) unimed_engine_free(g.engines[i]);
  free(g.engines);
  unimed_engine_free(g.rest_engine);
  cJSON_Delete(g.describe);
  study_free_all();
  text_query_free();
  queue_free();
  config_free(&g.cfg);
}

__attribute__((visibility("default"))) const char *OrthancPluginGetName(void) {
  return UNIMED_PLUGIN_NAME;
}

__attribute__((visibility("default"))) const char *OrthancPluginGetVersion(void) {
  return UNIMED_PLUGIN_VERSION;
}
