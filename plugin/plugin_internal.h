/* UniMed for Orthanc — the Orthanc plugin, shared declarations.
 *
 * plugin.c     entry points, configuration, event flow, journal, workers
 * rest.c       the REST routes under Root and the Explorer extension
 * orthanc_io.c calls into Orthanc's REST API, metadata, small helpers
 * index.c      the in-memory index of findings and embeddings
 * labels.c     findings as Orthanc labels (Orthanc >= 1.12)
 */
#ifndef UNIMED_PLUGIN_INTERNAL_H
#define UNIMED_PLUGIN_INTERNAL_H

#include <cjson/cJSON.h>
#include <orthanc/OrthancCPlugin.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "analysis.h"

#define UNIMED_PLUGIN_NAME "unimed"
#ifndef UNIMED_PLUGIN_VERSION
#define UNIMED_PLUGIN_VERSION "0.1.0"
#endif

/* Where results are kept in Orthanc: user metadata and a user attachment.
 * The plugin addresses them by number, so they work whether or not the
 * names are declared in "UserMetadata"/"UserContentType"; a declaration
 * under these names overrides the number. */
#define UNIMED_META_STATE "UniMedState"       /* UserMetadata, default 4600 */
#define UNIMED_META_FINDINGS "UniMedFindings" /* UserMetadata, default 4601 */
#define UNIMED_ATTACH_EMB "UniMedEmbeddings"  /* UserContentType, default 4602 */
#define UNIMED_GLOBAL_PROPERTY 4600           /* journal: queue + /changes position */

/* ---- configuration ---- */
typedef struct {
  int enable;
  char *model_dir;
  char **label_sets;
  int n_label_sets;
  char *label_set_dir;
  char **modalities;
  int n_modalities;
  int max_slices;
  int workers;
  int threads;
  int precision;         /* unimed_precision: "Precision" "fp32" (default) / "bf16" */
  int write_reports;
  char *root;            /* "/unimed/" */
  long long max_classify_bytes;
  char *cache_dir;
  int claim_lease;       /* seconds a "running" claim by another server is honoured */
  int journal_property;  /* global property holding the journal (default 4600) */
} unimed_config_t;

/* ---- studies ---- */
enum study_state {
  ST_NONE = 0, /* unknown / deleted */
  ST_NEW,      /* NewStudy seen, not yet stable */
  ST_QUEUED,
  ST_RUNNING,
  ST_DONE,
  ST_FAILED,
  ST_SKIPPED   /* nothing to analyse (no image series, Modalities filter), or
                  claimed by another server */
};

typedef struct {
  char *label, *label_set, *modality, *series_uid;
  double probability;
} finding_t;

typedef struct {
  char series_uid[65];
  char modality[17];
  float *v; /* dim floats */
} series_emb_t;

typedef struct study {
  char id[64];
  int state;
  int requeue;       /* a StableStudy arrived while running: check again after */
  int force;         /* POST analyze: analyse even if up to date */
  int elsewhere;     /* skipped because another server holds the claim */
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
  struct study *next;
} study_t;

typedef struct {
  OrthancPluginContext *ctx;
  unimed_config_t cfg;
  int enabled;
  char disabled_reason[1024];
  char server_id[128];
  char meta_state[16], meta_findings[16], attach_emb[16]; /* numbers, as text */

  unimed_engine **engines; /* one per worker */
  unimed_engine *rest_engine;
  pthread_mutex_t rest_engine_mu;
  int dim;
  char model_hash[32];
  char labelsets_key[1024]; /* "name:hash,..." */
  cJSON *describe;

  pthread_mutex_t mu;
  pthread_cond_t cv;
  study_t **table;
  size_t table_size, n_studies;
  study_t **queue; /* FIFO ring */
  size_t q_cap, q_head, q_len;
  int running;
  int stop;
  int started;
  int catching_up;
  int dirty;
  int64_t last_change;
  long long n_done, n_failed, n_skipped;
  double total_seconds;
  long long n_timed;
  pthread_t *worker_threads;
  pthread_t journal_thread;
  int threads_started;
} plugin_t;

extern plugin_t g;

/* ---- orthanc_io.c ---- */
typedef struct {
  char *data;
  size_t len;
} buf_t;
void buf_free(buf_t *b);

/* Calls Orthanc's own REST API. Returns the HTTP status (0 when the call
 * could not be made). out (may be NULL) receives the body; etag (may be NULL,
 * 64 bytes) the ETag answer header. */
int orth_call(OrthancPluginHttpMethod method, const char *uri, const char *if_match,
              const void *body, size_t len, buf_t *out, char *etag);
cJSON *orth_get_json(const char *uri, int *status);
int64_t orth_last_change(void);
int orth_meta_get(const char *study, const char *name, buf_t *out, char *etag);
/* Writes metadata; with check_revision, sends If-Match with the current
 * revision (or expected_etag when given). Returns the HTTP status. */
int orth_meta_put(const char *study, const char *name, const char *value, const char *expected_etag);

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xstrdup(const char *s);
void now_iso(char out[32]);
double now_seconds(void);
uint64_t fnv1a64(uint64_t h, const void *p, size_t n);
#define FNV64_OFFSET 1469598103934665603ULL

/* ---- index.c ---- */
study_t *study_find(const char *id);
study_t *study_get(const char *id); /* creates; call with g.mu held */
void study_clear_result(study_t *s);
/* Fills s's findings/embeddings from a findings JSON and an embeddings JSON
 * (takes ownership of findings). */
void study_set_findings(study_t *s, cJSON *findings);
int study_set_embeddings_json(study_t *s, const cJSON *emb);
cJSON *embeddings_to_json(const unimed_study_result *r, int dim);
void study_free_all(void);
const char *state_name(int st);

/* ---- plugin.c ---- */
void enqueue_locked(study_t *s, int force);
int plugin_enqueue(const char *id, int force); /* 1 queued, 0 already pending */

/* ---- labels.c ---- */
/* Reads "UniMed"."Labels" (default true) and "UniMed"."LabelPrefix"
 * (default "unimed-"). 0, or -1 with a message. */
int labels_configure(const cJSON *section, char *err, size_t n);
/* 1 when findings become labels: wanted, and the running Orthanc has labels
 * (asked once, at the first call). */
int labels_active(void);
const char *labels_prefix(void);
/* Makes the study's labels with our prefix those that findings (as stored in
 * UniMedFindings; NULL = none) call for; other labels stay untouched. A no-op
 * without labels_active(). 0, or -1 when Orthanc refused a change. */
int labels_update(const char *study, const cJSON *findings);

/* ---- rest.c ---- */
void rest_register(void);
void rest_register_disabled(void);
void explorer_register(void);

#endif
