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
#include "listing.h"
#include "nearest.h"
#include "rest.h"
#include "text_query.h"
#include "explorer_js.h" /* generated from explorer.js: unimed_explorer_js[] */

const char *rest_root(void) { return g.cfg.root ? g.cfg.root : "/unimed/"; }

void rest_answer(OrthancPluginRestOutput *out, int status, cJSON *j) {
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

void rest_answer_error(OrthancPluginRestOutput *out, int status, const char *fmt, ...) {
  char msg[1200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "error", msg);
  cJSON_AddNumberToObject(j, "status", status);
  rest_answer(out, status, j);
}

#define answer rest_answer
#define answer_error rest_answer_error

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

const char *rest_arg(const OrthancPluginHttpRequest *req, const char *key, char *buf, size_t n) {
  for (uint32_t i = 0; i < req->getCount; i++)
    if (strcmp(req->getKeys[i], key) == 0) {
      url_decode(req->getValues[i], buf, n);
      return buf;
    }
  return NULL;
}

int rest_check_args(OrthancPluginRestOutput *out, const OrthancPluginHttpRequest *req,
                    const char *const *allowed) {
  for (uint32_t i = 0; i < req->getCount; i++) {
    /* "_": the cache buster browsers' XHR libraries add (jQuery's cache: false). */
    int known = strcmp(req->getKeys[i], "_") == 0;
    for (int k = 0; allowed[k] && !known; k++) known = strcmp(req->getKeys[i], allowed[k]) == 0;
    if (known) continue;
    char list[512] = "";
    size_t off = 0;
    for (int k = 0; allowed[k]; k++) {
      int w = snprintf(list + off, sizeof list - off, "%s%s", k ? ", " : "", allowed[k]);
      if (w < 0 || (size_t)w >= sizeof list - off) break;
      off += (size_t)w;
    }
    const char *near = nearest_name(req->getKeys[i], allowed);
    char hint[160] = "";
    if (near) snprintf(hint, sizeof hint, " (did you mean \"%s\"?)", near);
    answer_error(out, 400, "unknown query argument \"%.100s\"%s; this route takes: %s",
                 req->getKeys[i], hint, off ? list : "none");
    return -1;
  }
  return 0;
}

int rest_page(OrthancPluginRestOutput *out, const OrthancPluginHttpRequest *req, int def,
              long *since, int *limit) {
  char b[64];
  const char *v = rest_arg(req, "limit", b, sizeof b);
  *limit = def;
  if (v) {
    char *end;
    long l = strtol(v, &end, 10);
    if (!*v || *end || l < 1 || l > 100000) {
      answer_error(out, 400, "\"limit\" must be an integer between 1 and 100000");
      return -1;
    }
    *limit = (int)l;
  }
  *since = 0;
  v = rest_arg(req, "since", b, sizeof b);
  if (v) {
    char *end;
    long l = strtol(v, &end, 10);
    if (!*v || *end || l < 0) {
      answer_error(out, 400, "\"since\" must be a non-negative integer (the position to start from)");
      return -1;
    }
    *since = l;
  }
  return 0;
}

int rest_valid_id(const char *id) {
  size_t n = strlen(id);
  if (n == 0 || n > 63) return 0;
  for (size_t i = 0; i < n; i++)
    if (!isxdigit((unsigned char)id[i]) && id[i] != '-') return 0;
  return 1;
}
#define valid_id rest_valid_id

static const char *const no_args[] = {NULL};

/* Whether Orthanc still holds the study. A study deleted a moment ago may
 * still be in the index (Orthanc reports deletions to plugins
 * asynchronously): REST never answers about it, and the index forgets it. */
int rest_study_in_orthanc(const char *id) {
  char uri[128];
  /* The list of the study's metadata names: Orthanc answers it from two
   * small database lookups (GET /studies/{id} reads the whole study), and
   * 404 only when the study is not there. */
  snprintf(uri, sizeof uri, "/studies/%s/metadata", id);
  int st = orth_call(OrthancPluginHttpMethod_Get, uri, NULL, NULL, 0, NULL, NULL);
  if (st == 404) plugin_study_gone(id);
  return st == 200;
}

/* ---- GET status ---- */
OrthancPluginErrorCode rest_status(OrthancPluginRestOutput *out, const char *url,
                                       const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  if (rest_check_args(out, req, no_args)) return 0;
  cJSON *j = cJSON_CreateObject();
  cJSON_AddBoolToObject(j, "enabled", 1);
  cJSON_AddNullToObject(j, "reason");
  cJSON_AddStringToObject(j, "version", UNIMED_PLUGIN_VERSION);
  cJSON_AddStringToObject(j, "server", g.cfg.server_id);
  cJSON_AddItemToObject(j, "model", index_model_json());
  cJSON_AddStringToObject(j, "precision", unimed_precision_name((unimed_precision)g.cfg.precision));
  cJSON_AddItemToObject(j, "label_sets", index_label_sets_json(0));
  /* The model card (docs/MODEL.md): null when the model directory has none. */
  cJSON *card = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(g.describe, "model_card"), 1);
  cJSON_AddItemToObject(j, "model_card", card ? card : cJSON_CreateNull());
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
  cJSON *ix = cJSON_AddObjectToObject(j, "index");
  cJSON_AddNumberToObject(ix, "bytes", (double)index_bytes());
  long long hits, misses, calls;
  text_query_stats(&hits, &misses, &calls);
  cJSON *texts = cJSON_AddObjectToObject(ix, "search_texts");
  cJSON_AddNumberToObject(texts, "cached", (double)hits);
  cJSON_AddNumberToObject(texts, "encoded", (double)misses);
  cJSON_AddNumberToObject(texts, "tower_calls", (double)calls);
  cJSON_AddItemToObject(j, "analyze_all", listing_status_json());
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
  if (rest_check_args(out, req, no_args)) return 0;
  const char *id = req->groups[0];
  if (!valid_id(id)) { answer_error(out, 400, "not an Orthanc study ID: %s", id); return 0; }
  if (!rest_study_in_orthanc(id)) {
    answer_error(out, 404, "unknown study: %s", id);
    return 0;
  }
  if (!index_wait_ready(REST_INDEX_WAIT_SECONDS)) {
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
  if (rest_check_args(out, req, no_args)) return 0;
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
  cJSON_AddStringToObject(j, "study_id", id);
  cJSON_AddStringToObject(j, "state", "queued");
  answer(out, 202, j);
  return 0;
}

/* ---- GET findings ---- */
OrthancPluginErrorCode rest_findings(OrthancPluginRestOutput *out, const char *url,
                                         const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  static const char *const args[] = {"label", "min_probability", "label_set", "modality",
                                     "limit", "since", NULL};
  if (rest_check_args(out, req, args)) return 0;
  char lb[2048], mb[64], sb[256], ob[64];
  const char *label = rest_arg(req, "label", lb, sizeof lb);
  if (!label || !label[0]) { answer_error(out, 400, "the \"label\" argument is required"); return 0; }
  double minp = 0.5;
  const char *mp = rest_arg(req, "min_probability", mb, sizeof mb);
  if (mp) {
    char *end;
    minp = strtod(mp, &end);
    if (!*mp || *end || !(minp >= 0.0 && minp <= 1.0)) {
      answer_error(out, 400, "\"min_probability\" must be a number between 0 and 1");
      return 0;
    }
  }
  page_t page;
  if (rest_page(out, req, 100, &page.since, &page.limit)) return 0;
  const char *lset = rest_arg(req, "label_set", sb, sizeof sb);
  const char *mod = rest_arg(req, "modality", ob, sizeof ob);
  if (!index_wait_ready(REST_INDEX_WAIT_SECONDS)) {
    answer_error(out, 503, "the index of analysed studies is still being rebuilt; try again");
    return 0;
  }
  answer(out, 200, index_findings_json(label, minp, lset, mod, page, rest_study_in_orthanc));
  return 0;
}

/* ---- GET search ---- */
OrthancPluginErrorCode rest_search(OrthancPluginRestOutput *out, const char *url,
                                       const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  static const char *const args[] = {"text", "modality", "limit", "since", NULL};
  if (rest_check_args(out, req, args)) return 0;
  char tb[2048], ob[64];
  const char *text = rest_arg(req, "text", tb, sizeof tb);
  if (!text || !text[0]) { answer_error(out, 400, "the \"text\" argument is required"); return 0; }
  page_t page;
  if (rest_page(out, req, 10, &page.since, &page.limit)) return 0;
  const char *mod = rest_arg(req, "modality", ob, sizeof ob);
  float *q = malloc((size_t)g.dim * sizeof *q);
  char err[512] = "";
  int rc = q ? text_query_embed(text, q, err, sizeof err) : -1;
  if (rc != 0) {
    free(q);
    answer_error(out, 400, "cannot embed the text: %s", err);
    return 0;
  }
  if (!index_wait_ready(REST_INDEX_WAIT_SECONDS)) {
    free(q);
    answer_error(out, 503, "the index of analysed studies is still being rebuilt; try again");
    return 0;
  }
  cJSON *j = index_search_json(text, q, mod, page, rest_study_in_orthanc);
  free(q);
  answer(out, 200, j);
  return 0;
}

/* ---- POST classify ---- */
OrthancPluginErrorCode rest_classify(OrthancPluginRestOutput *out, const char *url,
                                         const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Post) { not_allowed(out, "POST"); return 0; }
  if (rest_check_args(out, req, no_args)) return 0;
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
  const char *uid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r.findings, "study"));
  cJSON_AddStringToObject(j, "study_instance_uid", uid ? uid : "");
  cJSON_AddItemToObject(j, "model", index_model_json());
  cJSON_AddItemToObject(j, "label_sets", index_label_sets_json(0));
  cJSON_AddBoolToObject(j, "complete", r.complete);
  cJSON_AddItemToObject(j, "failed_series", index_failed_series_json(r.findings));
  cJSON_AddItemToObject(j, "scores", index_scores_json(r.findings));
  cJSON_AddItemToObject(j, "label_set_warnings", index_label_set_warnings_json(r.findings));
  unimed_study_result_free(&r);
  answer(out, 200, j);
  return 0;
}

/* ---- GET label-sets ---- */
OrthancPluginErrorCode rest_label_sets(OrthancPluginRestOutput *out, const char *url,
                                           const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  static const char *const args[] = {"limit", "since", NULL};
  if (rest_check_args(out, req, args)) return 0;
  long since;
  int limit;
  if (rest_page(out, req, 100, &since, &limit)) return 0;
  cJSON *all = index_label_sets_json(1);
  int total = cJSON_GetArraySize(all);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "total", total);
  cJSON_AddNumberToObject(j, "since", (double)since);
  cJSON_AddNumberToObject(j, "limit", limit);
  if (since + limit < total) cJSON_AddNumberToObject(j, "next_since", (double)(since + limit));
  else cJSON_AddNullToObject(j, "next_since");
  cJSON *arr = cJSON_AddArrayToObject(j, "label_sets");
  for (int i = (int)since; i < total && i < since + limit; i++)
    cJSON_AddItemToArray(arr, cJSON_Duplicate(cJSON_GetArrayItem(all, i), 1));
  cJSON_Delete(all);
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
  cJSON_AddStringToObject(j, "reason", g.disabled_reason);
  cJSON_AddStringToObject(j, "version", UNIMED_PLUGIN_VERSION);
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
#if ORTHANC_PLUGINS_VERSION_IS_ABOVE(1, 12, 4) /* the SDK of Debian 13's Orthanc 1.12.7 */
  OrthancPluginExtendOrthancExplorer2(g.ctx, UNIMED_PLUGIN_NAME, full);
#else
  OrthancPluginExtendOrthancExplorer(g.ctx, full);
#endif
  free(full);
}
