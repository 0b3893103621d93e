/* Training data straight from a running Orthanc over its REST API (libcurl):
 * the studies an Orthanc query selects (/tools/find), each study's instances
 * fetched into memory (/instances/{id}/file) one study at a time, nothing
 * exported or written to disk.
 *
 * Credentials never come from the command line (where `ps` shows them):
 * a file holding one line "user:password", or the environment variables
 * UNIMED_ORTHANC_USER and UNIMED_ORTHANC_PASSWORD. */
#ifndef UNIMED_TRAIN_ORTHANC_SOURCE_H
#define UNIMED_TRAIN_ORTHANC_SOURCE_H

#include <stddef.h>

typedef struct {
  const char *url;              /* e.g. http://localhost:8042 (no trailing '/' needed) */
  const char *credentials_file; /* NULL: the environment (or no authentication) */
  const char *modality;         /* ModalitiesInStudy, NULL: any */
  const char *study_date;       /* DICOM range YYYYMMDD-YYYYMMDD, NULL: any */
  const char *const *labels;    /* Orthanc labels the studies must all carry (Orthanc >= 1.12) */
  int n_labels;
  const char *query_json;       /* extra /tools/find "Query" fields as a JSON object, NULL: none */
} ut_orthanc_opts;

/* One study as fetched. Buffers are owned by the source and valid during the callback. */
typedef struct {
  const char *orthanc_id;       /* Orthanc study ID */
  const char *study_uid, *accession;
  /* the original study of an anonymised one (AnonymizedFrom), "" when none
   * or when the original is no longer in Orthanc */
  const char *original_id, *original_study_uid, *original_accession;
  int n_files;
  const void *const *data;
  const size_t *len;
  const char *const *names;     /* "orthanc:/instances/{id}" */
} ut_orthanc_study;

typedef void (*ut_orthanc_log_fn)(void *ctx, const char *line);
/* Returns 0 to go on, -1 to stop (the error is the callback's). */
typedef int (*ut_orthanc_study_fn)(void *ctx, const ut_orthanc_study *s);

/* Queries the server and calls fn once per study, in Orthanc study ID order.
 * A study whose instances cannot be fetched is logged and skipped (counted in
 * *skipped); a failing query, a refused login or an unreachable server is an
 * error (-1, message in err naming the URL and the HTTP status). */
int ut_orthanc_fetch(const ut_orthanc_opts *o, ut_orthanc_study_fn fn, void *fn_ctx,
                     ut_orthanc_log_fn log, void *log_ctx, int *skipped, char *err,
                     size_t errlen);

#endif
