/* UniMed for Orthanc — the versions of a study's report (docs/REPORTS.md,
 * "Versions"): the UniMed SRs stored in a study, which one is current, and
 * the removal of the superseded ones once a new version is stored. */
#ifndef UNIMED_PLUGIN_SR_VERSIONS_H
#define UNIMED_PLUGIN_SR_VERSIONS_H

typedef struct {
  char instance_id[64];  /* Orthanc ID */
  char series_uid[65];
  char sop_instance_uid[65];
  int instance_number;
} sr_version_t;

/* The SRs of the study written by `manufacturer` (our SR series carry it),
 * the current one (highest Instance Number) first. Returns the count (0 when
 * none or on error); *out is malloc'd. */
int sr_versions_list(const char *study_id, const char *manufacturer, sr_version_t **out);

/* Removes every listed version but the one with SOP Instance UID keep_uid.
 * Returns the number removed. */
int sr_versions_remove_superseded(const sr_version_t *v, int n, const char *keep_uid);

#endif
