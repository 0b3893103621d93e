/* UniMed for Orthanc — findings as Orthanc labels (Orthanc >= 1.12; labels.c). */
#ifndef UNIMED_PLUGIN_LABELS_H
#define UNIMED_PLUGIN_LABELS_H

#include <stddef.h>

#include <cjson/cJSON.h>

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

#endif
