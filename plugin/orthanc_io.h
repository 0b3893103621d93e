/* UniMed for Orthanc — calls into Orthanc's REST API, logging, small helpers. */
#ifndef UNIMED_PLUGIN_ORTHANC_IO_H
#define UNIMED_PLUGIN_ORTHANC_IO_H

#include <cjson/cJSON.h>
#include <orthanc/OrthancCPlugin.h>
#include <stddef.h>
#include <stdint.h>

/* The Orthanc context all calls go through (set once at initialisation). */
void orth_set_context(OrthancPluginContext *ctx);
OrthancPluginContext *orth_context(void);

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
/* Writes metadata. expected_etag: a revision (If-Match: written only if the
 * metadata is still at it, else 409); "" (created only if absent, else 409);
 * NULL (an unconditional write: with the current revision, so that
 * "CheckRevisions": true accepts it, read again and retried when another
 * writer came between). Returns the HTTP status. */
int orth_meta_put(const char *study, const char *name, const char *value, const char *expected_etag);

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xstrdup(const char *s);
void now_iso(char out[32]);
double now_seconds(void);
uint64_t fnv1a64(uint64_t h, const void *p, size_t n);
#define FNV64_OFFSET 1469598103934665603ULL

#endif
