/* The REST routes under Root (default /unimed/) and the Orthanc Explorer
 * extension. Every answer is JSON; errors are {"error": "...", "status": N}.
 * The routes are registered with Orthanc like its own, so they sit behind
 * Orthanc's authentication. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "plugin_internal.h"
#include "explorer_js.h" /* generated from explorer.js: unimed_explorer_js[] */

static const char *root(void) { return g.cfg.root ? g.cfg.root : "/unimed/"; }

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

/* Decoded value of a GET argument, in a per-thread buffer slot. */
static const char *get_arg(const OrthancPluginHttpRequest *req, const char *key) {
  static _Thread_local char bufs[4][2048];
  static _Thread_local int next;
  for (uint32_t i = 0; i < req->getCount; i++)
    if (strcmp(req->getKeys[i], key) == 0) {
      char *b = bufs[next++ % 4];
      url_decode(req->getValues[i], b, sizeof bufs[0]);
      return b;
    }
  return NULL;
}

static int parse_limit(const OrthancPluginHttpRequest *req, int def, int *out) {
  const char *v = get_arg(req, "limit");
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

/* ---- GET status ---- */
static OrthancPluginErrorCode r_status(OrthancPluginRestOutput *out, const char *url,
                                       const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  cJSON *j = cJSON_CreateObject();
  cJSON_AddBoolToObject(j, "enabled", 1);
  cJSON_AddStringToObject(j, "version", UNIMED_PLUGIN_VERSION);
  cJSON_AddStringToObject(j, "server", g.server_id);
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
  pthread_mutex_lock(&g.mu);
  long n[ST_SKIPPED + 1] = {0};
  for (size_t i = 0; i < g.table_size; i++)
    for (study_t *s = g.table[i]; s; s = s->next)
      if (s->state >= 0 && s->state <= ST_SKIPPED) n[s->state]++;
  long n_new = n[ST_NEW], n_queued = n[ST_QUEUED];
  cJSON *q = cJSON_AddObjectToObject(j, "queue");
  cJSON_AddNumberToObject(q, "waiting_stable", (double)n_new);
  cJSON_AddNumberToObject(q, "queued", (double)n_queued);
  cJSON_AddNumberToObject(q, "running", g.running);
  /* Studies in each final state (a study counts once). */
  cJSON_AddNumberToObject(j, "done", (double)n[ST_DONE]);
  cJSON_AddNumberToObject(j, "failed", (double)n[ST_FAILED]);
  cJSON_AddNumberToObject(j, "skipped", (double)n[ST_SKIPPED]);
  cJSON_AddNumberToObject(j, "analyses", (double)g.n_timed);
  cJSON_AddNumberToObject(j, "mean_analysis_seconds", g.n_timed ? g.total_seconds / (double)g.n_timed : 0.0);
  cJSON_AddNumberToObject(j, "last_change", (double)g.last_change);
  cJSON_AddBoolToObject(j, "catching_up", g.catching_up || !g.threads_started);
  pthread_mutex_unlock(&g.mu);
  cJSON_AddNumberToObject(j, "workers", g.cfg.workers);
  cJSON_AddNumberToObject(j, "threads", g.cfg.threads);
  cJSON_AddBoolToObject(j, "write_reports", g.cfg.write_reports);
  answer(out, 200, j);
  return 0;
}

static cJSON *study_answer_locked(const study_t *s) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "study", s->id);
  cJSON_AddStringToObject(j, "state", s->state == ST_NEW ? "queued" : state_name(s->state));
  if (s->state == ST_NEW) cJSON_AddStringToObject(j, "detail", "waiting for the study to become stable");
  if (s->study_uid) cJSON_AddStringToObject(j, "study_uid", s->study_uid);
  if (s->patient_id) cJSON_AddStringToObject(j, "patient_id", s->patient_id);
  if (s->patient_name) cJSON_AddStringToObject(j, "patient_name", s->patient_name);
  if (s->study_date) cJSON_AddStringToObject(j, "study_date", s->study_date);
  if (s->state == ST_FAILED || s->state == ST_SKIPPED)
    cJSON_AddStringToObject(j, "error", s->error ? s->error : "");
  if (s->state == ST_DONE) {
    if (s->sr_id) cJSON_AddStringToObject(j, "sr", s->sr_id);
    else cJSON_AddNullToObject(j, "sr");
    if (s->sr_uid[0]) cJSON_AddStringToObject(j, "sr_sop_instance_uid", s->sr_uid);
    cJSON_AddStringToObject(j, "model", g.model_hash);
    cJSON_AddStringToObject(j, "label_sets", g.labelsets_key);
    if (s->analysed_at[0]) cJSON_AddStringToObject(j, "analysed_at", s->analysed_at);
    cJSON_AddNumberToObject(j, "seconds", s->seconds);
    cJSON *flat = cJSON_AddArrayToObject(j, "scores");
    for (int i = 0; i < s->nf; i++) {
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "label", s->f[i].label);
      cJSON_AddNumberToObject(o, "probability", s->f[i].probability);
      cJSON_AddStringToObject(o, "label_set", s->f[i].label_set);
      cJSON_AddStringToObject(o, "modality", s->f[i].modality);
      cJSON_AddStringToObject(o, "series_uid", s->f[i].series_uid);
      cJSON_AddItemToArray(flat, o);
    }
    cJSON_AddItemToObject(j, "findings", s->findings ? cJSON_Duplicate(s->findings, 1) : cJSON_CreateNull());
  }
  return j;
}

/* ---- GET studies/{id} ---- */
static OrthancPluginErrorCode r_study(OrthancPluginRestOutput *out, const char *url,
                                      const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  const char *id = req->groups[0];
  if (!valid_id(id)) { answer_error(out, 400, "not an Orthanc study ID: %s", id); return 0; }
  pthread_mutex_lock(&g.mu);
  study_t *s = study_find(id);
  cJSON *j = NULL;
  int status = 404;
  if (s && s->state != ST_NONE) {
    j = study_answer_locked(s);
    status = (s->state == ST_NEW || s->state == ST_QUEUED || s->state == ST_RUNNING) ? 202 : 200;
  }
  pthread_mutex_unlock(&g.mu);
  if (!j) {
    int st;
    char uri[128];
    snprintf(uri, sizeof uri, "/studies/%s", id);
    cJSON *e = orth_get_json(uri, &st);
    cJSON_Delete(e);
    if (st == 200)
      answer_error(out, 404, "study %s has not been analysed (POST %sstudies/%s/analyze to queue it)",
                   id, root(), id);
    else
      answer_error(out, 404, "unknown study: %s", id);
    return 0;
  }
  answer(out, status, j);
  return 0;
}

/* ---- POST studies/{id}/analyze ---- */
static OrthancPluginErrorCode r_analyze(OrthancPluginRestOutput *out, const char *url,
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
  plugin_enqueue(id, 1);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "study", id);
  cJSON_AddStringToObject(j, "state", "queued");
  answer(out, 202, j);
  return 0;
}

/* ---- GET findings ---- */
typedef struct {
  const study_t *s;
  const finding_t *f;
} hit_t;

static int cmp_hit(const void *a, const void *b) {
  double pa = ((const hit_t *)a)->f->probability, pb = ((const hit_t *)b)->f->probability;
  return pa < pb ? 1 : pa > pb ? -1 : 0;
}

static void add_study_fields(cJSON *o, const study_t *s) {
  cJSON_AddStringToObject(o, "study", s->id);
  cJSON_AddStringToObject(o, "study_uid", s->study_uid ? s->study_uid : "");
  cJSON_AddStringToObject(o, "patient_id", s->patient_id ? s->patient_id : "");
  cJSON_AddStringToObject(o, "patient_name", s->patient_name ? s->patient_name : "");
  cJSON_AddStringToObject(o, "study_date", s->study_date ? s->study_date : "");
  if (s->sr_id) cJSON_AddStringToObject(o, "sr", s->sr_id);
}

static OrthancPluginErrorCode r_findings(OrthancPluginRestOutput *out, const char *url,
                                         const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  const char *label = get_arg(req, "label");
  if (!label || !label[0]) { answer_error(out, 400, "the \"label\" argument is required"); return 0; }
  double minp = 0.5;
  const char *mp = get_arg(req, "min-probability");
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
  const char *lset = get_arg(req, "label-set");
  const char *mod = get_arg(req, "modality");
  pthread_mutex_lock(&g.mu);
  size_t cap = 256, n = 0;
  hit_t *hits = malloc(cap * sizeof *hits);
  for (size_t i = 0; i < g.table_size && hits; i++)
    for (study_t *s = g.table[i]; s; s = s->next) {
      if (s->state != ST_DONE) continue;
      /* Best matching finding of each study. */
      const finding_t *best = NULL;
      for (int k = 0; k < s->nf; k++) {
        const finding_t *f = &s->f[k];
        if (strcasecmp(f->label, label) != 0 || f->probability < minp) continue;
        if (lset && strcasecmp(f->label_set, lset) != 0) continue;
        if (mod && strcasecmp(f->modality, mod) != 0) continue;
        if (!best || f->probability > best->probability) best = f;
      }
      if (!best) continue;
      if (n == cap) {
        hit_t *nh = realloc(hits, 2 * cap * sizeof *nh);
        if (!nh) break;
        hits = nh;
        cap *= 2;
      }
      hits[n].s = s;
      hits[n].f = best;
      n++;
    }
  if (hits) qsort(hits, n, sizeof *hits, cmp_hit);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "label", label);
  cJSON_AddNumberToObject(j, "min_probability", minp);
  cJSON_AddNumberToObject(j, "count", (double)(n < (size_t)limit ? n : (size_t)limit));
  cJSON *arr = cJSON_AddArrayToObject(j, "studies");
  for (size_t i = 0; i < n && i < (size_t)limit; i++) {
    cJSON *o = cJSON_CreateObject();
    add_study_fields(o, hits[i].s);
    cJSON_AddStringToObject(o, "label", hits[i].f->label);
    cJSON_AddNumberToObject(o, "probability", hits[i].f->probability);
    cJSON_AddStringToObject(o, "label_set", hits[i].f->label_set);
    cJSON_AddStringToObject(o, "modality", hits[i].f->modality);
    cJSON_AddStringToObject(o, "series_uid", hits[i].f->series_uid);
    cJSON_AddItemToArray(arr, o);
  }
  pthread_mutex_unlock(&g.mu);
  free(hits);
  answer(out, 200, j);
  return 0;
}

/* ---- GET search ---- */
typedef struct {
  const study_t *s;
  int series;
  double score;
} shit_t;

static int cmp_shit(const void *a, const void *b) {
  double pa = ((const shit_t *)a)->score, pb = ((const shit_t *)b)->score;
  return pa < pb ? 1 : pa > pb ? -1 : 0;
}

static OrthancPluginErrorCode r_search(OrthancPluginRestOutput *out, const char *url,
                                       const OrthancPluginHttpRequest *req) {
  (void)url;
  if (req->method != OrthancPluginHttpMethod_Get) { not_allowed(out, "GET"); return 0; }
  const char *text = get_arg(req, "text");
  if (!text || !text[0]) { answer_error(out, 400, "the \"text\" argument is required"); return 0; }
  int limit;
  if (parse_limit(req, 10, &limit)) { answer_error(out, 400, "\"limit\" must be a positive integer"); return 0; }
  const char *mod = get_arg(req, "modality");
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
  pthread_mutex_lock(&g.mu);
  size_t cap = 256, n = 0;
  shit_t *hits = malloc(cap * sizeof *hits);
  for (size_t i = 0; i < g.table_size && hits; i++)
    for (study_t *s = g.table[i]; s; s = s->next) {
      if (s->state != ST_DONE || s->nemb == 0) continue;
      int best = -1;
      double bs = -2;
      for (int k = 0; k < s->nemb; k++) {
        if (mod && strcasecmp(s->emb[k].modality, mod) != 0) continue;
        double d = 0;
        for (int x = 0; x < g.dim; x++) d += (double)q[x] * s->emb[k].v[x];
        if (d > bs) { bs = d; best = k; }
      }
      if (best < 0) continue;
      if (n == cap) {
        shit_t *nh = realloc(hits, 2 * cap * sizeof *nh);
        if (!nh) break;
        hits = nh;
        cap *= 2;
      }
      hits[n].s = s;
      hits[n].series = best;
      hits[n].score = bs;
      n++;
    }
  if (hits) qsort(hits, n, sizeof *hits, cmp_shit);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "text", text);
  cJSON *arr = cJSON_AddArrayToObject(j, "studies");
  for (size_t i = 0; i < n && i < (size_t)limit; i++) {
    cJSON *o = cJSON_CreateObject();
    add_study_fields(o, hits[i].s);
    cJSON_AddNumberToObject(o, "similarity", hits[i].score);
    cJSON_AddStringToObject(o, "series_uid", hits[i].s->emb[hits[i].series].series_uid);
    cJSON_AddStringToObject(o, "modality", hits[i].s->emb[hits[i].series].modality);
    cJSON_AddItemToArray(arr, o);
  }
  pthread_mutex_unlock(&g.mu);
  free(hits);
  free(q);
  answer(out, 200, j);
  return 0;
}

/* ---- POST classify ---- */
static OrthancPluginErrorCode r_classify(OrthancPluginRestOutput *out, const char *url,
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
static OrthancPluginErrorCode r_label_sets(OrthancPluginRestOutput *out, const char *url,
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
static OrthancPluginErrorCode r_unknown(OrthancPluginRestOutput *out, const char *url,
                                        const OrthancPluginHttpRequest *req) {
  (void)req;
  answer_error(out, 404, "no such UniMed route: %s", url);
  return 0;
}

static void reg(const char *suffix, OrthancPluginRestCallback cb) {
  char re[512];
  snprintf(re, sizeof re, "%s%s", root(), suffix);
  OrthancPluginRegisterRestCallbackNoLock(g.ctx, re, cb);
}

void rest_register(void) {
  reg("status", r_status);
  reg("studies/([^/]+)", r_study);
  reg("studies/([^/]+)/analyze", r_analyze);
  reg("findings", r_findings);
  reg("search", r_search);
  reg("classify", r_classify);
  reg("label-sets", r_label_sets);
  reg(".*", r_unknown);
}

/* ---- disabled: say why ---- */
static OrthancPluginErrorCode r_disabled_status(OrthancPluginRestOutput *out, const char *url,
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

static OrthancPluginErrorCode r_disabled(OrthancPluginRestOutput *out, const char *url,
                                         const OrthancPluginHttpRequest *req) {
  (void)url;
  (void)req;
  answer_error(out, 503, "the UniMed plugin is disabled: %s", g.disabled_reason);
  return 0;
}

void rest_register_disabled(void) {
  reg("status", r_disabled_status);
  reg(".*", r_disabled);
}

/* ---- Orthanc Explorer ---- */
void explorer_register(void) {
  /* The script reads the REST root from this first line. */
  const char *js = unimed_explorer_js;
  size_t n = strlen(js) + strlen(root()) + 64;
  char *full = malloc(n);
  if (!full) return;
  snprintf(full, n, "var UNIMED_ROOT = '%s';\n%s", root(), js);
#if ORTHANC_PLUGINS_VERSION_IS_ABOVE(1, 12, 4) /* the SDK of Debian 13's Orthanc 1.12.7 */
  OrthancPluginExtendOrthancExplorer2(g.ctx, UNIMED_PLUGIN_NAME, full);
#else
  OrthancPluginExtendOrthancExplorer(g.ctx, full);
#endif
  free(full);
}
