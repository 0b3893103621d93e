/* Studies of a running Orthanc over REST (libcurl). See orthanc_source.h. */
#include "orthanc_source.h"

#include <cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unimed_model.h"

typedef struct {
  char *data;
  size_t len, cap;
} buffer;

static size_t on_body(char *p, size_t size, size_t n, void *ctx) {
  buffer *b = ctx;
  size_t k = size * n;
  if (b->len + k + 1 > b->cap) {
    size_t nc = b->cap ? b->cap : 1 << 16;
    while (nc < b->len + k + 1) nc *= 2;
    char *nd = realloc(b->data, nc);
    if (!nd) return 0; /* curl reports a write error */
    b->data = nd;
    b->cap = nc;
  }
  memcpy(b->data + b->len, p, k);
  b->len += k;
  b->data[b->len] = 0;
  return k;
}

typedef struct {
  CURL *curl;
  char base[2048];
  char userpwd[512];
  ut_orthanc_log_fn log;
  void *log_ctx;
} client;

static void logf_(const client *c, const char *fmt, ...) {
  if (!c->log) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  c->log(c->log_ctx, line);
}

/* GET (body NULL) or POST a JSON body. Returns the HTTP status (0 when the
 * server could not be reached, with the reason in err). */
static long request(client *c, const char *path, const char *body, buffer *out, char *err,
                    size_t errlen) {
  char url[4096];
  snprintf(url, sizeof url, "%s%s", c->base, path);
  out->len = 0;
  if (out->data) out->data[0] = 0;
  curl_easy_setopt(c->curl, CURLOPT_URL, url);
  curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, out);
  struct curl_slist *hdr = NULL;
  if (body) {
    hdr = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
  } else {
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
  }
  CURLcode rc = curl_easy_perform(c->curl);
  curl_slist_free_all(hdr);
  curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
  if (rc != CURLE_OK) {
    unimed_set_err(err, errlen, "%s: %s", url, curl_easy_strerror(rc));
    return 0;
  }
  long status = 0;
  curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200)
    unimed_set_err(err, errlen, "%s: HTTP %ld%s", url, status,
               status == 401 ? " (login refused: check the credentials)" :
               status == 403 ? " (forbidden for this user)" : "");
  return status;
}

static cJSON *get_json(client *c, const char *path, const char *body, buffer *b, long *status,
                       char *err, size_t errlen) {
  *status = request(c, path, body, b, err, errlen);
  if (*status != 200) return NULL;
  cJSON *j = cJSON_ParseWithLength(b->data ? b->data : "", b->len);
  if (!j) unimed_set_err(err, errlen, "%s%s: the answer is not JSON", c->base, path);
  return j;
}

static int read_credentials(const ut_orthanc_opts *o, char *out, size_t cap, char *err,
                            size_t errlen) {
  out[0] = 0;
  if (o->credentials_file) {
    FILE *fp = fopen(o->credentials_file, "r");
    if (!fp) {
      unimed_set_err(err, errlen, "%s: %s", o->credentials_file, strerror(errno));
      return -1;
    }
    char line[512] = "";
    if (!fgets(line, sizeof line, fp)) line[0] = 0;
    fclose(fp);
    line[strcspn(line, "\r\n")] = 0;
    if (!strchr(line, ':') || line[0] == ':') {
      unimed_set_err(err, errlen, "%s: the first line must be user:password", o->credentials_file);
      return -1;
    }
    snprintf(out, cap, "%s", line);
    return 0;
  }
  const char *u = getenv("UNIMED_ORTHANC_USER"), *p = getenv("UNIMED_ORTHANC_PASSWORD");
  if (u && *u) snprintf(out, cap, "%s:%s", u, p ? p : "");
  return 0;
}

static const char *tag(const cJSON *study, const char *name) {
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(study, "MainDicomTags"), name);
  return cJSON_IsString(t) ? t->valuestring : "";
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The /tools/find request. */
static char *find_body(const ut_orthanc_opts *o, char *err, size_t errlen) {
  cJSON *q = o->query_json ? cJSON_Parse(o->query_json) : cJSON_CreateObject();
  if (!cJSON_IsObject(q)) {
    cJSON_Delete(q);
    unimed_set_err(err, errlen, "--orthanc-query: not a JSON object: %s", o->query_json);
    return NULL;
  }
  if (o->modality) {
    cJSON_DeleteItemFromObjectCaseSensitive(q, "ModalitiesInStudy");
    cJSON_AddStringToObject(q, "ModalitiesInStudy", o->modality);
  }
  if (o->study_date) {
    cJSON_DeleteItemFromObjectCaseSensitive(q, "StudyDate");
    cJSON_AddStringToObject(q, "StudyDate", o->study_date);
  }
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "Level", "Study");
  cJSON_AddItemToObject(root, "Query", q);
  if (o->n_labels > 0) {
    cJSON *l = cJSON_AddArrayToObject(root, "Labels");
    for (int i = 0; i < o->n_labels; i++) cJSON_AddItemToArray(l, cJSON_CreateString(o->labels[i]));
    cJSON_AddStringToObject(root, "LabelsConstraint", "All");
  }
  char *s = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return s;
}

/* Fetches one study's instances and calls fn. 1 skipped, 0 done, -1 stop. */
static int fetch_study(client *c, const char *id, ut_orthanc_study_fn fn, void *fn_ctx, char *err,
                       size_t errlen) {
  char path[512], e2[1024];
  buffer b = {0};
  long status;
  int rc = 1, n = 0;
  cJSON *study = NULL, *orig = NULL, *inst = NULL;
  void **data = NULL;
  size_t *len = NULL;
  char **names = NULL;
  snprintf(path, sizeof path, "/studies/%s", id);
  if (!(study = get_json(c, path, NULL, &b, &status, e2, sizeof e2))) {
    logf_(c, "skipped Orthanc study %s: %s", id, e2);
    goto done;
  }
  ut_orthanc_study s;
  memset(&s, 0, sizeof s);
  s.orthanc_id = id;
  s.study_uid = tag(study, "StudyInstanceUID");
  s.accession = tag(study, "AccessionNumber");
  s.original_id = s.original_study_uid = s.original_accession = "";
  /* an anonymised study points at its original */
  char orig_id[128] = "";
  snprintf(path, sizeof path, "/studies/%s/metadata/AnonymizedFrom", id);
  if (request(c, path, NULL, &b, e2, sizeof e2) == 200 && b.len > 0 && b.len < sizeof orig_id) {
    snprintf(orig_id, sizeof orig_id, "%s", b.data);
    s.original_id = orig_id;
    snprintf(path, sizeof path, "/studies/%s", orig_id);
    if ((orig = get_json(c, path, NULL, &b, &status, e2, sizeof e2)) != NULL) {
      s.original_study_uid = tag(orig, "StudyInstanceUID");
      s.original_accession = tag(orig, "AccessionNumber");
    } else {
      logf_(c, "Orthanc study %s: anonymised from %s, which is not readable (%s): only its "
               "Orthanc ID can match the labels", id, orig_id, e2);
    }
  }
  snprintf(path, sizeof path, "/studies/%s/instances", id);
  if (!(inst = get_json(c, path, NULL, &b, &status, e2, sizeof e2)) || !cJSON_IsArray(inst)) {
    logf_(c, "skipped Orthanc study %s: %s", id, inst ? "instance list is not an array" : e2);
    goto done;
  }
  int total = cJSON_GetArraySize(inst);
  data = calloc((size_t)(total ? total : 1), sizeof *data);
  len = calloc((size_t)(total ? total : 1), sizeof *len);
  names = calloc((size_t)(total ? total : 1), sizeof *names);
  if (!data || !len || !names) {
    unimed_set_err(err, errlen, "out of memory");
    rc = -1;
    goto done;
  }
  const cJSON *it;
  cJSON_ArrayForEach(it, inst) {
    const cJSON *iid = cJSON_GetObjectItemCaseSensitive(it, "ID");
    if (!cJSON_IsString(iid)) continue;
    snprintf(path, sizeof path, "/instances/%s/file", iid->valuestring);
    buffer f = {0};
    if (request(c, path, NULL, &f, e2, sizeof e2) != 200) {
      logf_(c, "Orthanc study %s: instance %s not fetched: %s", id, iid->valuestring, e2);
      free(f.data);
      continue;
    }
    char nm[256];
    snprintf(nm, sizeof nm, "orthanc:/instances/%s", iid->valuestring);
    names[n] = strdup(nm);
    data[n] = f.data;
    len[n] = f.len;
    n++;
  }
  s.n_files = n;
  s.data = (const void *const *)data;
  s.len = len;
  s.names = (const char *const *)names;
  rc = fn(fn_ctx, &s) != 0 ? -1 : 0;
done:
  for (int i = 0; i < n; i++) {
    free(data[i]);
    free(names[i]);
  }
  free(data);
  free(len);
  free(names);
  cJSON_Delete(study);
  cJSON_Delete(orig);
  cJSON_Delete(inst);
  free(b.data);
  return rc;
}

int ut_orthanc_fetch(const ut_orthanc_opts *o, ut_orthanc_study_fn fn, void *fn_ctx,
                     ut_orthanc_log_fn log, void *log_ctx, int *skipped, char *err,
                     size_t errlen) {
  client c;
  memset(&c, 0, sizeof c);
  c.log = log;
  c.log_ctx = log_ctx;
  snprintf(c.base, sizeof c.base, "%s", o->url);
  size_t bl = strlen(c.base);
  while (bl > 0 && c.base[bl - 1] == '/') c.base[--bl] = 0;
  if (strncmp(c.base, "http://", 7) && strncmp(c.base, "https://", 8)) {
    unimed_set_err(err, errlen, "--orthanc %s: not an http:// or https:// URL", o->url);
    return -1;
  }
  if (read_credentials(o, c.userpwd, sizeof c.userpwd, err, errlen) != 0) return -1;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || !(c.curl = curl_easy_init())) {
    unimed_set_err(err, errlen, "libcurl could not be initialised");
    return -1;
  }
  curl_easy_setopt(c.curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c.curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c.curl, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(c.curl, CURLOPT_FAILONERROR, 0L);
  if (c.userpwd[0]) {
    curl_easy_setopt(c.curl, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(c.curl, CURLOPT_USERPWD, c.userpwd);
  }
  int rc = -1;
  buffer b = {0};
  long status;
  cJSON *sys = NULL, *found = NULL;
  char *body = NULL;
  char **ids = NULL;
  int n = 0;
  body = find_body(o, err, errlen); /* a bad --orthanc-query is said first */
  if (!body) goto done;
  if (!(sys = get_json(&c, "/system", NULL, &b, &status, err, errlen))) goto done;
  const cJSON *ver = cJSON_GetObjectItemCaseSensitive(sys, "Version");
  const char *version = cJSON_IsString(ver) ? ver->valuestring : "?";
  if (o->n_labels > 0) {
    int maj = 0, min = 0;
    if (sscanf(version, "%d.%d", &maj, &min) != 2 || maj * 100 + min < 112) {
      unimed_set_err(err, errlen, "%s: Orthanc %s has no labels (they came with Orthanc 1.12): "
                              "select the studies with --orthanc-query instead", c.base, version);
      goto done;
    }
  }
  found = get_json(&c, "/tools/find", body, &b, &status, err, errlen);
  if (found == NULL) logf_(&c, "the query was %s", body);
  if (!found) goto done;
  if (!cJSON_IsArray(found)) {
    unimed_set_err(err, errlen, "%s/tools/find: the answer is not a list of studies", c.base);
    goto done;
  }
  int total = cJSON_GetArraySize(found);
  ids = calloc((size_t)(total ? total : 1), sizeof *ids);
  if (!ids) {
    unimed_set_err(err, errlen, "out of memory");
    goto done;
  }
  const cJSON *it;
  cJSON_ArrayForEach(it, found) if (cJSON_IsString(it)) ids[n++] = it->valuestring;
  qsort(ids, (size_t)n, sizeof *ids, cmp_str);
  logf_(&c, "%s: Orthanc %s, %d studies selected", c.base, version, n);
  for (int i = 0; i < n; i++) {
    int r = fetch_study(&c, ids[i], fn, fn_ctx, err, errlen);
    if (r < 0) goto done;
    if (r > 0 && skipped) (*skipped)++;
  }
  rc = 0;
done:
  free(body);
  free(ids);
  cJSON_Delete(found);
  cJSON_Delete(sys);
  free(b.data);
  memset(c.userpwd, 0, sizeof c.userpwd);
  curl_easy_cleanup(c.curl);
  return rc;
}
