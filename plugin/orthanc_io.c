/* Calls into Orthanc's REST API and small helpers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "orthanc_io.h"

static OrthancPluginContext *ctx_;

void orth_set_context(OrthancPluginContext *ctx) { ctx_ = ctx; }
OrthancPluginContext *orth_context(void) { return ctx_; }

/* Formats a message and hands it to Orthanc's log at the given level. */
typedef enum { LOG_ERROR, LOG_WARNING, LOG_INFO } log_level;

static void log_at(log_level level, const char *fmt, va_list ap) {
  char msg[2048];
  vsnprintf(msg, sizeof msg, fmt, ap);
  if (!ctx_) return;
  if (level == LOG_ERROR) OrthancPluginLogError(ctx_, msg);
  else if (level == LOG_WARNING) OrthancPluginLogWarning(ctx_, msg);
  else OrthancPluginLogInfo(ctx_, msg);
}

void log_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_at(LOG_ERROR, fmt, ap);
  va_end(ap);
}

void log_warning(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_at(LOG_WARNING, fmt, ap);
  va_end(ap);
}

void log_info(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_at(LOG_INFO, fmt, ap);
  va_end(ap);
}

char *xstrdup(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

void now_iso(char out[32]) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

uint64_t fnv1a64(uint64_t h, const void *p, size_t n) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++) {
    h ^= c[i];
    h *= 1099511628211ULL;
  }
  return h;
}

void buf_free(buf_t *b) {
  if (!b) return;
  free(b->data);
  b->data = NULL;
  b->len = 0;
}

/* ETag from the JSON object of answer headers (case-insensitive key). */
static void extract_etag(const OrthancPluginMemoryBuffer *hb, char *etag) {
  etag[0] = 0;
  if (!hb->data || !hb->size) return;
  cJSON *h = cJSON_ParseWithLength(hb->data, hb->size);
  if (!h) return;
  cJSON *it;
  cJSON_ArrayForEach(it, h) {
    if (it->string && strcasecmp(it->string, "etag") == 0 && cJSON_IsString(it)) {
      const char *v = it->valuestring;
      size_t n = strlen(v);
      if (n >= 2 && v[0] == '"' && v[n - 1] == '"') { v++; n -= 2; }
      if (n > 63) n = 63;
      memcpy(etag, v, n);
      etag[n] = 0;
    }
  }
  cJSON_Delete(h);
}

int orth_call(OrthancPluginHttpMethod method, const char *uri, const char *if_match,
              const void *body, size_t len, buf_t *out, char *etag) {
  OrthancPluginMemoryBuffer ab = {0}, hb = {0};
  uint16_t status = 0;
  const char *hk[1] = {"If-Match"};
  const char *hv[1] = {if_match};
  if (out) { out->data = NULL; out->len = 0; }
  if (etag) etag[0] = 0;
  if (len > UINT32_MAX) return 0;
  OrthancPluginErrorCode rc = OrthancPluginCallRestApi(
      ctx_, &ab, etag ? &hb : NULL, &status, method, uri, if_match ? 1 : 0,
      if_match ? hk : NULL, if_match ? hv : NULL, body, (uint32_t)len, 0);
  if (rc != OrthancPluginErrorCode_Success && status == 0) {
    /* Map the common error codes when no HTTP status came back. */
    if (rc == OrthancPluginErrorCode_UnknownResource || rc == OrthancPluginErrorCode_InexistentItem)
      status = 404;
    else if (rc == OrthancPluginErrorCode_BadRequest || rc == OrthancPluginErrorCode_BadFileFormat)
      status = 400;
    /* A write whose If-Match is no longer the current revision (another
     * server wrote first): what Orthanc answers 409 over HTTP. */
    else if (rc == OrthancPluginErrorCode_Revision)
      status = 409;
    /* A database that is busy or away (PostgreSQL: a serialization failure
     * between servers' transactions): transient, worth retrying. */
    else if (rc == OrthancPluginErrorCode_Database || rc == OrthancPluginErrorCode_DatabaseUnavailable)
      status = 503;
    else
      status = 500;
  }
  if (etag && hb.data) extract_etag(&hb, etag);
  if (hb.data) OrthancPluginFreeMemoryBuffer(ctx_, &hb);
  if (ab.data) {
    if (out && status >= 200 && status < 300) {
      out->data = malloc(ab.size + 1);
      if (out->data) {
        memcpy(out->data, ab.data, ab.size);
        out->data[ab.size] = 0;
        out->len = ab.size;
      }
    }
    OrthancPluginFreeMemoryBuffer(ctx_, &ab);
  }
  return status;
}

cJSON *orth_get_json(const char *uri, int *status) {
  buf_t b;
  int st = orth_call(OrthancPluginHttpMethod_Get, uri, NULL, NULL, 0, &b, NULL);
  if (status) *status = st;
  if (st != 200 || !b.data) {
    buf_free(&b);
    return NULL;
  }
  cJSON *j = cJSON_ParseWithLength(b.data, b.len);
  buf_free(&b);
  return j;
}

int64_t orth_last_change(void) {
  cJSON *j = orth_get_json("/changes?last", NULL);
  int64_t last = -1;
  if (j) {
    cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "Last");
    if (cJSON_IsNumber(l)) last = (int64_t)l->valuedouble;
    cJSON_Delete(j);
  }
  return last;
}

int orth_meta_get(const char *study, const char *name, buf_t *out, char *etag) {
  char uri[256];
  snprintf(uri, sizeof uri, "/studies/%s/metadata/%s", study, name);
  return orth_call(OrthancPluginHttpMethod_Get, uri, NULL, NULL, 0, out, etag);
}

int orth_meta_put(const char *study, const char *name, const char *value,
                  const char *expected_etag) {
  char uri[256], etag[64];
  snprintf(uri, sizeof uri, "/studies/%s/metadata/%s", study, name);
  if (expected_etag && !expected_etag[0]) /* create only: 409 if it exists */
    return orth_call(OrthancPluginHttpMethod_Put, uri, NULL, value, strlen(value), NULL, NULL);
  if (expected_etag)
    return orth_call(OrthancPluginHttpMethod_Put, uri, expected_etag, value, strlen(value), NULL, NULL);
  /* An unconditional write: with the current revision, so that a server with
   * "CheckRevisions": true accepts it (absent metadata: no If-Match). Another
   * writer between our read and our write (a claim renewal, another server)
   * makes it 409: read again and write again (a few times). */
  int st = 0;
  for (int attempt = 0; attempt < 5; attempt++) {
    const char *im = NULL;
    if (orth_call(OrthancPluginHttpMethod_Get, uri, NULL, NULL, 0, NULL, etag) == 200 && etag[0]) im = etag;
    st = orth_call(OrthancPluginHttpMethod_Put, uri, im, value, strlen(value), NULL, NULL);
    if (st != 409 && st != 503) break;
    /* 503: the database aborted the transaction (PostgreSQL's serializable
     * conflicts between servers): a moment later it goes through. */
    if (st == 503) nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
  }
  return st;
}
