/* UniMed for Orthanc — the in-memory index: every study the plugin knows of,
 * its state, and for analysed studies the findings (flattened, for
 * `findings`) and the per-series image embeddings (for `search`).
 *
 * Functions named index_* take g.mu themselves (for REST); study_* and
 * *_locked expect the caller to hold g.mu. */
#ifndef UNIMED_PLUGIN_INDEX_H
#define UNIMED_PLUGIN_INDEX_H

#include <stdint.h>

#include "plugin_internal.h"
#include "study_state.h"

typedef struct {
  char *label, *label_set, *modality, *series_uid;
  double probability;
  const char *warning; /* the label set's model-card warning, NULL when none; points into
                          the study's findings JSON (freed with it) */
} finding_t;

typedef struct {
  char series_uid[65];
  char modality[17];
  float *v; /* dim floats */
} series_emb_t;

typedef struct study {
  char id[64];
  int state;         /* enum study_state: changed only by study_apply_locked() */
  int rerun;         /* an event arrived while running: check again after */
  int force;         /* POST analyze: analyse even if up to date */
  int run_forced;    /* running: this run analyses even if up to date */
  int deleted;       /* running: deleted meanwhile (Orthanc's Deleted) */
  int retry;         /* failed because Orthanc could not store: analysed again later */
  int64_t new_seq;   /* /changes position of the NewStudy the replay saw (-1: none) */
  int elsewhere;     /* skipped because another server holds the claim */
  /* Another server's claim as this server last saw it: its ETag (revision)
   * and when this server first saw that revision (now_seconds(): this
   * server's monotonic clock). The lease runs from there, so no two
   * servers' clocks are compared. */
  char claim_etag[64];
  double claim_seen;
  double new_seen;   /* when it became "new" (now_seconds()): see recheck_unstable() */
  int64_t checked_seq; /* /changes position read when the last check started */
  char *error;
  char *sr_id;
  char sr_uid[65];
  char *patient_id, *patient_name, *study_date, *study_uid;
  char fingerprint[17];
  cJSON *findings;   /* as stored in UniMedFindings */
  finding_t *f;
  int nf;
  series_emb_t *emb;
  int nemb;
  double seconds;
  char analysed_at[32];
  cJSON *failed_series; /* a failed analysis: the series and their decoder's reasons */
  struct study *next;
} study_t;

/* ---- with g.mu held ---- */
study_t *study_find(const char *id);
study_t *study_get(const char *id); /* creates it (state none) when unknown */
void study_clear_result(study_t *s);
void study_set_patient_info(study_t *s, const cJSON *orthanc_study);
/* Fills s's findings from a findings JSON (takes ownership). */
void study_set_findings(study_t *s, cJSON *findings);
int study_set_embeddings_json(study_t *s, const cJSON *emb);
/* Calls fn for every study. */
void study_for_each_locked(void (*fn)(study_t *s, void *arg), void *arg);
void index_note_analysis_locked(double seconds);
void study_free_all(void);

cJSON *embeddings_to_json(const unimed_study_result *r, int dim);

/* ---- for REST (take g.mu) ---- */
/* Paging of a list: the items [since, since + limit) of total. */
typedef struct {
  long since;
  int limit;
} page_t;

typedef struct {
  long n[ST_COUNT];       /* studies per state */
  long long analyses;     /* engine runs */
  double mean_seconds;
} index_counts_t;
void index_counts(index_counts_t *c);
/* A study's answer for GET studies/{id}; NULL when the plugin knows nothing
 * of it. *pending: 1 while new, queued or running. */
cJSON *index_study_json(const char *id, int *pending);
/* Whether a listed study may be answered (REST: still in Orthanc); called
 * without g.mu held. */
typedef int (*study_keep_fn)(const char *id);
/* The studies whose best finding `label` has at least min_p (optionally of
 * one label set / modality), best first, at most limit, those keep() refuses
 * left out. */
cJSON *index_findings_json(const char *label, double min_p, const char *label_set,
                           const char *modality, page_t page, study_keep_fn keep);
/* The studies whose image embeddings are nearest to q (g.dim floats), those
 * keep() refuses left out. */
cJSON *index_search_json(const char *text, const float *q, const char *modality, page_t page,
                         study_keep_fn keep);

/* ---- one schema for every route (docs/openapi.json) ---- */
/* {"model": {name, version, hash}} parts and the label sets, as on every route. */
cJSON *index_model_json(void);
cJSON *index_label_sets_json(int with_labels);
/* The scores (flat) and the failed series of an engine findings JSON. */
cJSON *index_scores_json(const cJSON *findings);
cJSON *index_failed_series_json(const cJSON *findings);
/* The findings' "label_set_warnings" (model card), [] when none. */
cJSON *index_label_set_warnings_json(const cJSON *findings);
/* GET studies: filters (NULL = any); analysed_since: ISO 8601 prefix
 * compared with analysed_at. */
typedef struct {
  int state;               /* -1: any */
  const char *label_set, *modality, *analysed_since;
} study_filter_t;
/* Those keep() refuses left out. On every list, "total" counts the kept
 * studies found while filling the page plus the candidates not yet asked
 * about (an upper bound when a later candidate was deleted meanwhile). */
cJSON *index_list_json(const study_filter_t *f, page_t page, study_keep_fn keep);
/* 1 when the plugin holds no state for the study (never analysed nor pending). */
int index_is_unanalysed(const char *id);

#endif
