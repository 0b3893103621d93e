/* UniMed for Orthanc — the in-memory index: every study the plugin knows of,
 * its state, and for analysed studies the findings (flattened, for
 * `findings`) and the per-series image embeddings (for `search`).
 *
 * Functions named index_* take g.mu themselves (for REST); study_* and
 * *_locked expect the caller to hold g.mu. The findings and embeddings
 * live in the store (index_store.h), which search and findings scan
 * without g.mu. */
#ifndef UNIMED_PLUGIN_INDEX_H
#define UNIMED_PLUGIN_INDEX_H

#include <stdint.h>

#include "index_store.h"
#include "plugin_internal.h"
#include "study_state.h"

/* A label set's model-card warning in one study (name ids of the store). */
typedef struct {
  uint16_t label_set, warning;
} set_warning_t;

typedef struct study {
  /* Per study in memory: a few hundred bytes here (an archive holds 100 000s). */
  char id[48];          /* Orthanc ID (44 characters) */
  uint8_t state;        /* enum study_state: changed only by study_apply_locked() */
  uint8_t rerun;        /* an event arrived while running: check again after */
  uint8_t force;        /* POST analyze: analyse even if up to date */
  uint8_t run_forced;   /* running: this run analyses even if up to date */
  uint8_t deleted;      /* running: deleted meanwhile (Orthanc's Deleted) */
  uint8_t retry;        /* failed because Orthanc could not store: analysed again later */
  uint8_t elsewhere;    /* skipped because another server holds the claim */
  uint8_t has_result;   /* findings are stored (UniMedFindings) */
  uint8_t complete;     /* every series was analysed */
  int64_t new_seq;      /* /changes position of the NewStudy the replay saw (-1: none) */
  /* Another server's claim as this server last saw it: its ETag (revision;
   * NULL when none) and when this server first saw that revision
   * (now_seconds(): this server's monotonic clock). The lease runs from
   * there, so no two servers' clocks are compared. */
  char *claim_etag;
  double claim_seen;
  double new_seen;      /* when it became "new" (now_seconds()): see recheck_unstable() */
  int64_t checked_seq;  /* /changes position read when the last check started */
  char *error;
  char *sr_id;
  char sr_uid[65];
  char fingerprint[17];
  /* PatientID, PatientName, StudyDate, StudyInstanceUID: one block of four
   * NUL-terminated strings (study_tag()); NULL until known. */
  char *tags;
  /* Its results in the store (index_store.h): the findings JSON itself is
   * not kept (GET studies/{id} builds its answer from these). */
  uint32_t num;         /* its number in the store */
  int32_t f_row, nf;    /* its findings rows */
  int32_t emb_row, nemb; /* its embedding rows */
  char *series;         /* the series UIDs its rows name, each NUL-terminated */
  uint16_t n_series;
  uint16_t warnings_json; /* "label_set_warnings" printed, a store name id */
  int n_set_warnings;
  set_warning_t *set_warnings; /* label sets flagged by the model card */
  double seconds;
  char analysed_at[32];
  cJSON *failed_series; /* the series left out and their decoder's reasons; NULL when none */
  struct study *next;
} study_t;

/* ---- with g.mu held ---- */
study_t *study_find(const char *id);
study_t *study_get(const char *id); /* creates it (state none) when unknown */
void study_clear_result(study_t *s);
void study_set_patient_info(study_t *s, const cJSON *orthanc_study);
enum study_tag { TAG_PATIENT_ID, TAG_PATIENT_NAME, TAG_STUDY_DATE, TAG_STUDY_UID };
/* One of the study's tags ("" when unknown). */
const char *study_tag(const study_t *s, enum study_tag t);
void study_forget_tags(study_t *s);
/* Fills s's findings from a findings JSON (takes ownership and frees it). */
void study_set_findings(study_t *s, cJSON *findings);
/* After a change of state, deleted, error or results: whether the store may
 * list the study's results. */
void study_update_listed_locked(study_t *s);
int study_set_embeddings_json(study_t *s, const cJSON *emb);
/* Allocates the study's strings anew (after a rebuild, which left them
 * among freed JSON: malloc_trim() can then give those pages back). */
void study_move_strings_locked(study_t *s);
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
/* The memory the index holds, in bytes: the store (matrix, findings rows,
 * study numbers), the studies' entries and their strings (failed-series
 * JSON of failed studies not counted). */
size_t index_bytes(void);
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
