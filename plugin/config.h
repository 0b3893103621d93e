/* UniMed for Orthanc — the "UniMed" section of Orthanc's configuration. */
#ifndef UNIMED_PLUGIN_CONFIG_H
#define UNIMED_PLUGIN_CONFIG_H

#include <orthanc/OrthancCPlugin.h>
#include <stddef.h>

#define UNIMED_DEFAULT_JOURNAL_PROPERTY 4600 /* journal: queue + /changes position */

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
  long long decode_budget_mb; /* "DecodeBudgetMB": largest decoded frame, per worker */
  char *cache_dir;
  int claim_lease;       /* seconds a "running" claim by another server is honoured */
  int journal_property;  /* global property holding the journal (default 4600) */
  int stable_age;        /* Orthanc's "StableAge" (default 60): removals settle as long */
  /* Where results are kept in Orthanc: the numbers of the user metadata and
   * attachment, as text (declared in "UserMetadata"/"UserContentType" under
   * the names below, else 4600, 4601, 4602). */
  char meta_state[16];    /* "UniMedState" */
  char meta_findings[16]; /* "UniMedFindings" */
  char attach_emb[16];    /* "UniMedEmbeddings" */
  char server_id[128];    /* stable identity for claims ("DatabaseServerIdentifier", else host:port) */
} unimed_config_t;

/* Parses the configuration. 0, or -1 with a message naming the key at fault
 * (c->root may still be set for the disabled routes). */
int config_load(OrthancPluginContext *ctx, unimed_config_t *c, char *err, size_t n);
void config_free(unimed_config_t *c);

#endif
