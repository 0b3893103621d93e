/* The REST routes under Root (default /unimed/) and the Orthanc Explorer
 * extension (the route table is in plugin.c). Every answer is JSON; errors are {"error": "...", "status": N}.
 * The routes are registered with Orthanc like its own, so they sit behind
 * Orthanc's authentication. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "index.h"
#include "journal.h"
#include "rest.h"
#include "explorer_js.h" /* generated from explorer.js: unimed_explorer_js[] */

const char *rest_root(void) { return g.cfg.root ? g.cfg.root : "/unimed/"; }

static void answer(OrthancPluginRestOutput *out, int status, cJSON *j) {
  char *txt = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  if (!txt) {
    OrthancPluginSendHttpStatusCode(g.ctx, out, 500);
    return;
  }
  size_t n = strlen(txt);
  if (status == 200) {
    OrthancPluginAnswerBuffer(g.ctx, out, txt, (uint32_t)n, "application/json");
  } else {
    OrthancPluginSetHttpHeader(g.ctx, out, "Content-Type", "application/json");
    OrthancPluginSendHttpStatus(g.ctx, out, (uint16_t)status, txt, (uint32_t)n);
  }
  free(txt);
}

static void answer_error(OrthancPluginRestOutput *out, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void answer_error(OrthancPluginRestOutput *out, int status, const char *fmt, ...) {
  char msg[1200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "error", msg);
  cJSON_AddNumberToObject(j, "status", status);
  answer(out, status, j);
}

/* 405 with the allowed methods. Orthanc reserves status 405 to
 * OrthancPluginSendMethodNotAllowed (which sends the Allow header). */
static void not_allowed(OrthancPluginRestOutput *out, const char *allowed) {
  OrthancPluginSendMethodNotAllowed(g.ctx, out, allowed);
}

/* Orthanc hands GET arguments over as they came (percent-encoded). */
static int hexval(int c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
       : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void url_decode(const char *in, char *out, size_t n) {
  size_t o = 0;
  for (size_t i = 0; in[i] && o + 1 < n; i++) {
    if (in[i] == '%' && hexval(in[i + 1]) >= 0 && hexval(in[i + 2]) >= 0) {
      out[o++] = (char)(hexval(in[i + 1]) * 16 + hexval(in[i + 2]));
      i += 2;
    } else {
      out[o++] = in[i] == '+' ? ' ' : in[i];
    }
  }
  out[o] = 0;
}

/* Decoded values of a request's GET arguments: one buffer per argument a
 * handler reads, owned by the handler (no shared slots to overwrite). */
typedef char arg_buf[2048];

/* Decoded value of GET argument key into buf, or NULL when absent. */
/* How long a route waits for the index rebuilt at start before answering 503. */
#define INDEX_WAIT_SECONDS 30

static const char *get_arg(const OrthancPluginHttpRequest *req, const char *key, arg_buf buf) {
  for (uint32_t i = 0; i < req->getCount; i++)
    if (strcmp(req->getKeys[i], key) == 0) {
      url_decode(req->getValues[i], buf, sizeof(arg_buf));
      return buf;
    }
  return NULL;
}

static int parse_limit(const OrthancPluginHttpRequest *req, int def, int *out) {
  arg_buf b;
  const char *v = get_arg(req, "limit", b);
  if (!v) { *out = def; return 0; }
  char *end;
  long l = strtol(v, &end, 10);
  if (!*v || *end || l < 1 || l > 100000) return -1;
  *out = (int)l;
  return 0;
}

static int valid_id(const char *id) {
  size_t n = strlen(id);
  if (n == 0 || n > 63) return 0;
  for (size_t i = 0; i < n; i++)
    if (!isxdigit((unsigned char)id[i]) && id[i] != '-') return 0;
  return 1;
}

/* Whether Orthanc still holds the study. A study deleted a moment ago may
 * still be in the index (Orthanc reports deletions to plugins
 * asynchronously): REST never answers about it, and the index forgets it. */
static int study_in_orthanc(const char *id) {
  char uri[128];
  snprintf(uri, sizeof uri, "/studies/%s", id);
  int st = orth_call(OrthancPluginHttpMethod_Get, uri, NULL, NULL, 0, NULL, NULL);
  if (st == 404) plugin_study_gone(id);
  return st == 200;
}

/* ---- GET status ---- */
OrthancPluginErrorCode rest_status(OrthancPluginRestOutput *out, const char *url,
                                       const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  cJSON *j = cJSON_CreateObject();
  cJSON_AddBoolToObject(j, "enabled", 1);
  cJSON_AddStringToObject(j, "version", UNIMED_PLUGIN_VERSION);
  cJSON_AddStringToObject(j, "server", g.cfg.server_id);
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(g.describe, "model");
  cJSON_AddItemToObject(j, "model", model ? cJSON_Duplicate(model, 1) : cJSON_CreateNull());
  cJSON *ls = cJSON_AddArrayToObject(j, "label_sets");
  const cJSON *it;
  cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(g.describe, "label_sets")) {
    cJSON *o = cJSON_CreateObject();
    const char *keys[] = {"name", "version", "hash"};
    for (int k = 0; k < 3; k++) {
      const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, keys[k]));
      if (v) cJSON_AddStringToObject(o, keys[k], v);
    }
    cJSON_AddItemToArray(ls, o);
  }
  index_counts_t c;
  index_counts(&c);
  queue_status_t qs;
  queue_status(&qs);
  cJSON *q = cJSON_AddObjectToObject(j, "queue");
  cJSON_AddNumberToObject(q, "waiting_stable", (double)c.n[ST_NEW]);
  cJSON_AddNumberToObject(q, "queued", (double)c.n[ST_QUEUED]);
  cJSON_AddNumberToObject(q, "running", (double)qs.running);
  /* Studies in each final state (a study counts once). */
  cJSON_AddNumberToObject(j, "done", (double)c.n[ST_DONE]);
  cJSON_AddNumberToObject(j, "failed", (double)c.n[ST_FAILED]);
  cJSON_AddNumberToObject(j, "skipped", (double)c.n[ST_SKIPPED]);
  cJSON_AddNumberToObject(j, "analyses", (double)c.analyses);
  cJSON_AddNumberToObject(j, "mean_analysis_seconds", c.mean_seconds);
  cJSON_AddNumberToObject(j, "last_change", (double)qs.last_change);
  cJSON_AddBoolToObject(j, "catching_up", qs.catching_up);
  cJSON_AddNumberToObject(j, "workers", g.cfg.workers);
  cJSON_AddNumberToObject(j, "threads", g.cfg.threads);
  cJSON_AddBoolToObject(j, "write_reports", g.cfg.write_reports);
  answer(out, 200, j);
  return 0;
}

/* ---- GET studies/{id} ---- */
OrthancPluginErrorCode rest_study(OrthancPluginRestOutput *out, const char *url,
                                      const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  const char *id = req->groups[0];
  if (!valid_id(id)) { answer_error(out, 400, "not an Orthanc study ID: %s", id); return 0; }
  if (!study_in_orthanc(id)) {
    answer_error(out, 404, "unknown study: %s", id);
    return 0;
  }
  if (!index_wait_ready(INDEX_WAIT_SECONDS)) {
    answer_error(out, 503, "the index of analysed studies is still being rebuilt; try again");
    return 0;
  }
  int pending = 0;
  cJSON *j = index_study_json(id, &pending);
  int status = pending ? 202 : 200;
  if (!j) {
    answer_error(out, 404, "study %s has not been analysed (POST %sstudies/%s/analyze to queue it)",
                 id, rest_root(), id);
    return 0;
  }
  answer(out, status, j);
  return 0;
}

/* ---- POST studies/{id}/analyze ---- */
OrthancPluginErrorCode rest_analyze(OrthancPluginRestOutput *out, const char *url,
                                        const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Post) { not_allowed(out, "POST"); return 0; }
  const char *id = req->groups[0];
  if (!valid_id(id)) { answer_error(out, 400, "not an Orthanc study ID: %s", id); return 0; }
  char uri[128];
  int st;
  snprintf(uri, sizeof uri, "/studies/%s", id);
  cJSON *e = orth_get_json(uri, &st);
  cJSON_Delete(e);
  if (st != 200) { answer_error(out, 404, "unknown study: %s", id); return 0; }
  plugin_event(id, EV_ANALYZE, 1);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "study", id);
  cJSON_AddStringToObject(j, "state", "queued");
  answer(out, 202, j);
  return 0;
}

/* ---- GET findings ---- */
OrthancPluginErrorCode rest_findings(OrthancPluginRestOutput *out, const char *url,
                                         const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  arg_buf label_b, mp_b, lset_b, mod_b;
  const char *label = get_arg(req, "label", label_b);
  if (!label || !label[0]) { answer_error(out, 400, "the \"label\" argument is required"); return 0; }
  double minp = 0.5;
  const char *mp = get_arg(req, "min-probability", mp_b);
  if (mp) {
    char *end;
    minp = strtod(mp, &end);
    if (!*mp || *end || !(minp >= 0.0 && minp <= 1.0)) {
      answer_error(out, 400, "\"min-probability\" must be a number between 0 and 1");
      return 0;
    }
  }
  int limit;
  if (parse_limit(req, 100, &limit)) { answer_error(out, 400, "\"limit\" must be a positive integer"); return 0; }
  const char *lset = get_arg(req, "label-set", lset_b);
  const char *mod = get_arg(req, "modality", mod_b);
  if (!index_wait_ready(INDEX_WAIT_SECONDS)) {
    answer_error(out, 503, "the index of analysed studies is still being rebuilt; try again");
    return 0;
  }
  cJSON *j = index_findings_json(label, minp, lset, mod, limit, study_in_orthanc);
  answer(out, 200, j);
  return 0;
}

/* ---- GET search ---- */
OrthancPluginErrorCode rest_search(OrthancPluginRestOutput *out, const char *url,
                                       const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  arg_buf text_b, mod_b;
  const char *text = get_arg(req, "text", text_b);
  if (!text || !text[0]) { answer_error(out, 400, "the \"text\" argument is required"); return 0; }
  int limit;
  if (parse_limit(req, 10, &limit)) { answer_error(out, 400, "\"limit\" must be a positive integer"); return 0; }
  const char *mod = get_arg(req, "modality", mod_b);
  float *q = malloc((size_t)g.dim * sizeof *q);
  char err[512] = "";
  pthread_mutex_lock(&g.rest_engine_mu);
  int rc = q ? unimed_engine_embed_text(g.rest_engine, text, q, err, sizeof err) : -1;
  pthread_mutex_unlock(&g.rest_engine_mu);
  if (rc != 0) {
    free(q);
    answer_error(out, 400, "cannot embed the text: %s", err);
    return 0;
  }
  if (!index_wait_ready(INDEX_WAIT_SECONDS)) {
    free(q);
    answer_error(out, 503, "the index of analysed studies is still being rebuilt; try again");
    return 0;
  }
  cJSON *j = index_search_json(text, q, mod, limit, study_in_orthanc);
  free(q);
  answer(out, 200, j);
  return 0;
}

/* ---- POST classify ---- */
OrthancPluginErrorCode rest_classify(OrthancPluginRestOutput *out, const char *url,
                                         const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Post) { not_allowed(out, "POST"); return 0; }
  if ((long long)req->bodySize > g.cfg.max_classify_bytes) {
    answer_error(out, 413, "the body has %u bytes; MaxClassifyBytes is %lld", req->bodySize,
                 g.cfg.max_classify_bytes);
    return 0;
  }
  if (req->bodySize == 0) { answer_error(out, 400, "the body must be a DICOM file"); return 0; }
  unimed_blob b = {"classify", req->body, req->bodySize};
  unimed_study_result r;
  memset(&r, 0, sizeof r);
  pthread_mutex_lock(&g.rest_engine_mu);
  int rc = unimed_engine_analyze_blobs(g.rest_engine, &b, 1, 0, &r);
  pthread_mutex_unlock(&g.rest_engine_mu);
  if (rc != 0) {
    answer_error(out, 400, "cannot classify: %s", r.error[0] ? r.error : "analysis failed");
    unimed_study_result_free(&r);
    return 0;
  }
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "model", g.model_hash);
  cJSON_AddItemToObject(j, "findings", r.findings ? r.findings : cJSON_CreateNull());
  r.findings = NULL;
  unimed_study_result_free(&r);
  answer(out, 200, j);
  return 0;
}

/* ---- GET label-sets ---- */
OrthancPluginErrorCode rest_label_sets(OrthancPluginRestOutput *out, const char *url,
                                           const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  const cJSON *ls = cJSON_GetObjectItemCaseSensitive(g.describe, "label_sets");
  cJSON *j = cJSON_CreateObject();
  cJSON_AddItemToObject(j, "label_sets", ls ? cJSON_Duplicate(ls, 1) : cJSON_CreateArray());
  answer(out, 200, j);
  return 0;
}

/* ---- anything else under Root ---- */
OrthancPluginErrorCode rest_unknown(OrthancPluginRestOutput *out, const char *url,
                                        const OrthancPluginHttpRequest *req) {
  (void)req;
  answer_error(out, 404, "no such UniMed route: %s", url);
  return 0;
}

/* ---- disabled: say why ---- */
OrthancPluginErrorCode rest_disabled_status(OrthancPluginRestOutput *out, const char *url,
                                                const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  cJSON *j = cJSON_CreateObject();
  cJSON_AddBoolToObject(j, "enabled", 0);
  cJSON_AddStringToObject(j, "version", UNIMED_PLUGIN_VERSION);
  cJSON_AddStringToObject(j, "reason", g.disabled_reason);
  answer(out, 200, j);
  return 0;
}

OrthancPluginErrorCode rest_disabled(OrthancPluginRestOutput *out, const char *url,
                                         const OrthancPluginHttpRequest *req) {
  (void)url;
  (void)req;
  answer_error(out, 503, "the UniMed plugin is disabled: %s", g.disabled_reason);
  return 0;
}

/* ---- Orthanc Explorer ---- */
void rest_register_explorer(void) {
  /* The script reads the REST root from this first line. */
  const char *js = unimed_explorer_js;
  size_t n = strlen(js) + strlen(rest_root()) + 64;
  char *full = malloc(n);
  if (!full) return;
  snprintf(full, n, "var UNIMED_ROOT = '%s';\n%s", rest_root(), js);
  OrthancPluginExtendOrthancExplorer(g.ctx, full);
  free(full);
}
