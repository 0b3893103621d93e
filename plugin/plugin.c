/* UniMed for Orthanc — the Orthanc plugin: entry points, configuration,
 * event flow, the persistent journal and the analysis workers.
 *
 * Event flow (docs/PLUGIN.md):
 *  - the OnChange callback only records (NewStudy) and enqueues
 *    (StableStudy) in memory; it starts the threads at OrthancStarted and
 *    joins them at OrthancStopped;
 *  - the journal thread replays Orthanc's /changes log from the stored
 *    position (at start: what happened while the plugin was down; then every
 *    second: anything the callback could not deliver before a crash) and
 *    persists the queue and that position in one global property;
 *  - worker threads analyse one study at a time with their own engine. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "plugin_internal.h"

#ifndef UNIMED_DEFAULT_LABELSET_DIR
#define UNIMED_DEFAULT_LABELSET_DIR "/usr/share/unimed/labelsets"
#endif
#ifndef UNIMED_SOURCE_LABELSET_DIR
#define UNIMED_SOURCE_LABELSET_DIR UNIMED_DEFAULT_LABELSET_DIR
#endif

plugin_t g;

/* ======================================================================
 * configuration
 * ==================================================================== */

static int cfg_err(char *err, size_t n, const char *fmt, const char *key) {
  snprintf(err, n, fmt, key);
  return -1;
}

static int get_bool(const cJSON *sec, const char *key, int def, int *out, char *err, size_t n) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(sec, key);
  if (!it) { *out = def; return 0; }
  if (!cJSON_IsBool(it)) return cfg_err(err, n, "\"UniMed\".\"%s\" must be true or false", key);
  *out = cJSON_IsTrue(it);
  return 0;
}

static int get_int(const cJSON *sec, const char *key, long long def, long long lo, long long hi,
                   long long *out, char *err, size_t n) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(sec, key);
  if (!it) { *out = def; return 0; }
  if (!cJSON_IsNumber(it) || it->valuedouble != (double)(long long)it->valuedouble) {
    return cfg_err(err, n, "\"UniMed\".\"%s\" must be an integer", key);
  }
  long long v = (long long)it->valuedouble;
  if (v < lo || v > hi) {
    snprintf(err, n, "\"UniMed\".\"%s\" is %lld; it must be between %lld and %lld", key, v, lo, hi);
    return -1;
  }
  *out = v;
  return 0;
}

static int get_str(const cJSON *sec, const char *key, const char *def, char **out, char *err,
                   size_t n) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(sec, key);
  if (!it) { *out = def ? xstrdup(def) : NULL; return 0; }
  if (!cJSON_IsString(it) || !it->valuestring[0])
    return cfg_err(err, n, "\"UniMed\".\"%s\" must be a non-empty string", key);
  *out = xstrdup(it->valuestring);
  return 0;
}

static int get_str_array(const cJSON *sec, const char *key, char ***out, int *count, char *err,
                         size_t n) {
  *out = NULL;
  *count = 0;
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(sec, key);
  if (!it) return 0;
  if (!cJSON_IsArray(it)) return cfg_err(err, n, "\"UniMed\".\"%s\" must be an array of strings", key);
  int k = cJSON_GetArraySize(it);
  *out = calloc((size_t)k + 1, sizeof(char *));
  const cJSON *x;
  cJSON_ArrayForEach(x, it) {
    if (!cJSON_IsString(x) || !x->valuestring[0])
      return cfg_err(err, n, "\"UniMed\".\"%s\" must be an array of non-empty strings", key);
    (*out)[(*count)++] = xstrdup(x->valuestring);
  }
  return 0;
}

/* Relative paths in Orthanc's configuration are relative to the folder of
 * the configuration file. */
static char *resolve_path(const char *p, const char *base) {
  if (!p) return NULL;
  if (p[0] == '/' || !base || !base[0]) return xstrdup(p);
  size_t n = strlen(base) + strlen(p) + 2;
  char *r = malloc(n);
  snprintf(r, n, "%s/%s", base, p);
  return r;
}

static int mkdir_p(const char *path) {
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return -1;
  for (char *p = tmp + 1; *p; p++) {
    if (*p == '/') {
      *p = 0;
      if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
      *p = '/';
    }
  }
  if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
  return 0;
}

static void config_free(unimed_config_t *c) {
  free(c->model_dir);
  for (int i = 0; i < c->n_label_sets; i++) free(c->label_sets[i]);
  free(c->label_sets);
  free(c->label_set_dir);
  for (int i = 0; i < c->n_modalities; i++) free(c->modalities[i]);
  free(c->modalities);
  free(c->root);
  free(c->cache_dir);
  memset(c, 0, sizeof *c);
}

/* The number of a user metadata / content type: the declared one (a number,
 * or [number, "mime"] for content types), else the default. */
static int user_number(const cJSON *root, const char *section, const char *name, int def,
                       char out[16], char *err, size_t n) {
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, section);
  const cJSON *v = s ? cJSON_GetObjectItemCaseSensitive(s, name) : NULL;
  if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
  int num = def;
  if (v) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 1024 || v->valuedouble > 65535) {
      snprintf(err, n, "\"%s\".\"%s\" must be a number between 1024 and 65535", section, name);
      return -1;
    }
    num = (int)v->valuedouble;
  }
  snprintf(out, 16, "%d", num);
  return 0;
}

/* Parses the "UniMed" section. Returns 0, or -1 with a message. */
static int config_load(unimed_config_t *c, char *err, size_t n) {
  memset(c, 0, sizeof *c);
  char *text = OrthancPluginGetConfiguration(g.ctx);
  if (!text) return cfg_err(err, n, "%s", "cannot read Orthanc's configuration");
  cJSON *root = cJSON_Parse(text);
  OrthancPluginFreeString(g.ctx, text);
  if (!root) return cfg_err(err, n, "%s", "Orthanc's configuration is not valid JSON");

  /* Folder of the configuration file, for relative paths. */
  char base[PATH_MAX] = "";
  /* Deprecated in the 1.12 SDK without a replacement for this use
   * (relative paths in the configuration). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  char *cp = OrthancPluginGetConfigurationPath(g.ctx);
#pragma GCC diagnostic pop
  if (cp) {
    struct stat st;
    snprintf(base, sizeof base, "%s", cp);
    if (stat(cp, &st) != 0 || !S_ISDIR(st.st_mode)) {
      char *slash = strrchr(base, '/');
      if (slash) *slash = 0; else base[0] = 0;
    }
    OrthancPluginFreeString(g.ctx, cp);
  }

  int rc = -1;
  long long v;
  const cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, "UniMed");
  if (sec && !cJSON_IsObject(sec)) {
    cfg_err(err, n, "%s", "\"UniMed\" must be an object");
    goto done;
  }
  if (get_bool(sec, "Enable", 1, &c->enable, err, n)) goto done;
  if (!c->enable) { rc = 0; goto done; }
  char *md = NULL;
  if (get_str(sec, "ModelDirectory", NULL, &md, err, n)) goto done;
  if (!md) {
    cfg_err(err, n, "%s", "\"UniMed\".\"ModelDirectory\" is missing (the folder with config.json, model.safetensors, vocab.txt)");
    goto done;
  }
  c->model_dir = resolve_path(md, base);
  free(md);
  char **ls = NULL;
  int nls = 0;
  if (get_str_array(sec, "LabelSets", &ls, &nls, err, n)) {
    for (int i = 0; i < nls; i++) free(ls[i]);
    free(ls);
    goto done;
  }
  c->label_sets = ls;
  c->n_label_sets = nls;
  for (int i = 0; i < nls; i++) {
    char *r = resolve_path(ls[i], base);
    free(ls[i]);
    ls[i] = r;
  }
  char *lsd = NULL;
  {
    /* The installed label sets, or those of the source tree for a build
     * that was not installed. */
    const char *def = UNIMED_DEFAULT_LABELSET_DIR;
    struct stat lst;
    if (stat(def, &lst) != 0) def = UNIMED_SOURCE_LABELSET_DIR;
    if (get_str(sec, "LabelSetDirectory", def, &lsd, err, n)) goto done;
  }
  c->label_set_dir = resolve_path(lsd, base);
  free(lsd);
  if (get_str_array(sec, "Modalities", &c->modalities, &c->n_modalities, err, n)) goto done;
  if (get_int(sec, "MaxSlices", 8, 1, 4096, &v, err, n)) goto done;
  c->max_slices = (int)v;
  if (get_int(sec, "Workers", 1, 1, 64, &v, err, n)) goto done;
  c->workers = (int)v;
  if (get_int(sec, "Threads", 1, 1, 256, &v, err, n)) goto done;
  c->threads = (int)v;
  {
    char *prec = NULL;
    if (get_str(sec, "Precision", "fp32", &prec, err, n)) goto done;
    unimed_precision pv;
    int bad = unimed_precision_parse(prec, &pv) != 0;
    free(prec);
    if (bad) {
      cfg_err(err, n, "%s", "\"UniMed\".\"Precision\" must be \"fp32\" or \"bf16\"");
      goto done;
    }
    c->precision = (int)pv;
  }
  if (get_bool(sec, "WriteReports", 1, &c->write_reports, err, n)) goto done;
  if (labels_configure(sec, err, n)) goto done;
  if (get_str(sec, "Root", "/unimed/", &c->root, err, n)) goto done;
  {
    size_t rl = strlen(c->root);
    if (c->root[0] != '/' || c->root[rl - 1] != '/' || rl < 2 ||
        strspn(c->root, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-_") != rl) {
      free(c->root);
      c->root = NULL; /* the disabled status route goes to the default root */
      cfg_err(err, n, "%s", "\"UniMed\".\"Root\" must start and end with '/' and contain only letters, digits, '-', '_' (e.g. \"/unimed/\")");
      goto done;
    }
  }
  if (get_int(sec, "MaxClassifyBytes", 64LL << 20, 1, 1LL << 32, &v, err, n)) goto done;
  c->max_classify_bytes = v;
  if (get_int(sec, "ClaimLease", 3600, 10, 7 * 86400, &v, err, n)) goto done;
  c->claim_lease = (int)v;
  if (get_int(sec, "JournalProperty", UNIMED_GLOBAL_PROPERTY, 1024, 2147483647LL, &v, err, n)) goto done;
  c->journal_property = (int)v;
  char *cd = NULL;
  if (get_str(sec, "CacheDirectory", NULL, &cd, err, n)) goto done;
  if (cd) {
    c->cache_dir = resolve_path(cd, base);
    free(cd);
  } else {
    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(root, "StorageDirectory");
    if (cJSON_IsString(sd) && sd->valuestring[0]) {
      char *s = resolve_path(sd->valuestring, base);
      size_t l = strlen(s) + 16;
      c->cache_dir = malloc(l);
      snprintf(c->cache_dir, l, "%s/unimed", s);
      free(s);
    } else {
      c->cache_dir = xstrdup("/var/lib/orthanc/unimed");
    }
  }
  if (user_number(root, "UserMetadata", UNIMED_META_STATE, 4600, g.meta_state, err, n) ||
      user_number(root, "UserMetadata", UNIMED_META_FINDINGS, 4601, g.meta_findings, err, n) ||
      user_number(root, "UserContentType", UNIMED_ATTACH_EMB, 4602, g.attach_emb, err, n))
    goto done;
  /* A stable identity for claims: survives restarts of this server. */
  const cJSON *dsi = cJSON_GetObjectItemCaseSensitive(root, "DatabaseServerIdentifier");
  if (cJSON_IsString(dsi) && dsi->valuestring[0]) {
    snprintf(g.server_id, sizeof g.server_id, "%s", dsi->valuestring);
  } else {
    char host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    const cJSON *port = cJSON_GetObjectItemCaseSensitive(root, "HttpPort");
    snprintf(g.server_id, sizeof g.server_id, "%s:%d", host,
             cJSON_IsNumber(port) ? port->valueint : 8042);
  }
  rc = 0;
done:
  cJSON_Delete(root);
  return rc;
}

/* ======================================================================
 * queue
 * ==================================================================== */

void enqueue_locked(study_t *s, int force) {
  if (force) s->force = 1;
  if (s->state == ST_QUEUED) return;
  if (s->state == ST_RUNNING) {
    s->requeue = 1;
    return;
  }
  if (g.q_len == g.q_cap) {
    size_t nc = g.q_cap ? g.q_cap * 2 : 256;
    study_t **nq = malloc(nc * sizeof *nq);
    if (!nq) return;
    for (size_t i = 0; i < g.q_len; i++) nq[i] = g.queue[(g.q_head + i) % g.q_cap];
    free(g.queue);
    g.queue = nq;
    g.q_cap = nc;
    g.q_head = 0;
  }
  g.queue[(g.q_head + g.q_len) % g.q_cap] = s;
  g.q_len++;
  s->state = ST_QUEUED;
  g.dirty = 1;
  pthread_cond_broadcast(&g.cv);
}

int plugin_enqueue(const char *id, int force) {
  pthread_mutex_lock(&g.mu);
  study_t *s = study_get(id);
  int r = 0;
  if (s) {
    r = s->state != ST_QUEUED && s->state != ST_RUNNING;
    enqueue_locked(s, force);
  }
  pthread_mutex_unlock(&g.mu);
  return r;
}

static study_t *dequeue_locked(void) {
  while (g.q_len) {
    study_t *s = g.queue[g.q_head];
    g.q_head = (g.q_head + 1) % g.q_cap;
    g.q_len--;
    if (s->state == ST_QUEUED) return s;
  }
  return NULL;
}

/* ======================================================================
 * the journal: persisted queue + position in /changes
 * ==================================================================== */

static void persist(void) {
  pthread_mutex_lock(&g.mu);
  if (!g.dirty) {
    pthread_mutex_unlock(&g.mu);
    return;
  }
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "version", 1);
  cJSON_AddNumberToObject(j, "last_change", (double)g.last_change);
  cJSON *p = cJSON_AddArrayToObject(j, "pending");
  for (size_t i = 0; i < g.table_size; i++)
    for (study_t *s = g.table[i]; s; s = s->next) {
      if (s->state != ST_NEW && s->state != ST_QUEUED && s->state != ST_RUNNING) continue;
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "id", s->id);
      cJSON_AddStringToObject(o, "state", s->state == ST_NEW ? "new" : "queued");
      if (s->force) cJSON_AddBoolToObject(o, "force", 1);
      cJSON_AddItemToArray(p, o);
    }
  g.dirty = 0;
  pthread_mutex_unlock(&g.mu);
  char *txt = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  if (txt) {
    if (OrthancPluginSetGlobalProperty(g.ctx, g.cfg.journal_property, txt) != OrthancPluginErrorCode_Success) {
      log_warning("UniMed: cannot store the journal in global property %d", g.cfg.journal_property);
      pthread_mutex_lock(&g.mu);
      g.dirty = 1;
      pthread_mutex_unlock(&g.mu);
    }
    free(txt);
  }
}

/* Replays /changes from g.last_change. */
static void replay_changes(void) {
  for (;;) {
    char uri[128];
    pthread_mutex_lock(&g.mu);
    int64_t since = g.last_change;
    pthread_mutex_unlock(&g.mu);
    snprintf(uri, sizeof uri, "/changes?since=%lld&limit=1000", (long long)since);
    cJSON *j = orth_get_json(uri, NULL);
    if (!j) return;
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "Changes");
    const cJSON *c;
    pthread_mutex_lock(&g.mu);
    cJSON_ArrayForEach(c, ch) {
      const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "ChangeType"));
      const char *rt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "ResourceType"));
      const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "ID"));
      const cJSON *seqj = cJSON_GetObjectItemCaseSensitive(c, "Seq");
      if (!type || !rt || !id || !cJSON_IsNumber(seqj) || strcmp(rt, "Study") != 0) continue;
      int64_t seq = (int64_t)seqj->valuedouble;
      if (strcmp(type, "NewStudy") == 0) {
        study_t *s = study_get(id);
        if (s && s->state == ST_NONE && seq > s->checked_seq) {
          s->state = ST_NEW;
          g.dirty = 1;
        }
      } else if (strcmp(type, "StableStudy") == 0) {
        study_t *s = study_get(id);
        /* Already checked after this change was logged: nothing new. */
        if (s && seq > s->checked_seq) enqueue_locked(s, 0);
      } else if (strcmp(type, "Deleted") == 0) {
        study_t *s = study_find(id);
        if (s && s->state != ST_RUNNING && s->state != ST_QUEUED) {
          study_clear_result(s);
          s->state = ST_NONE;
          g.dirty = 1;
        }
      }
    }
    const cJSON *last = cJSON_GetObjectItemCaseSensitive(j, "Last");
    int done = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "Done"));
    if (cJSON_IsNumber(last) && (int64_t)last->valuedouble > g.last_change) {
      g.last_change = (int64_t)last->valuedouble;
      g.dirty = 1;
    }
    pthread_mutex_unlock(&g.mu);
    cJSON_Delete(j);
    if (done || !cJSON_IsNumber(last) || (int64_t)last->valuedouble <= since) return;
  }
}

static void set_patient_info(study_t *s, const cJSON *study_json) {
  const cJSON *pt = cJSON_GetObjectItemCaseSensitive(study_json, "PatientMainDicomTags");
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(study_json, "MainDicomTags");
  free(s->patient_id); free(s->patient_name); free(s->study_date); free(s->study_uid);
  s->patient_id = xstrdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pt, "PatientID")));
  s->patient_name = xstrdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pt, "PatientName")));
  s->study_date = xstrdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(mt, "StudyDate")));
  s->study_uid = xstrdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(mt, "StudyInstanceUID")));
}

/* Applies a stored UniMedState (+ findings + embeddings) to the index. */
static void load_done_study(study_t *s, const cJSON *state) {
  const char *v;
  free(s->sr_id);
  s->sr_id = xstrdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(state, "sr")));
  v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(state, "sr_uid"));
  snprintf(s->sr_uid, sizeof s->sr_uid, "%s", v ? v : "");
  v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(state, "fingerprint"));
  snprintf(s->fingerprint, sizeof s->fingerprint, "%s", v ? v : "");
  v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(state, "time"));
  snprintf(s->analysed_at, sizeof s->analysed_at, "%s", v ? v : "");
  const cJSON *sec = cJSON_GetObjectItemCaseSensitive(state, "seconds");
  s->seconds = cJSON_IsNumber(sec) ? sec->valuedouble : 0;
}

/* Reads one study's stored results from Orthanc (no lock held). */
static void fetch_stored_results(const char *id, cJSON **findings, cJSON **emb) {
  buf_t b;
  *findings = *emb = NULL;
  if (orth_meta_get(id, g.meta_findings, &b, NULL) == 200 && b.data)
    *findings = cJSON_ParseWithLength(b.data, b.len);
  buf_free(&b);
  char uri[256];
  snprintf(uri, sizeof uri, "/studies/%s/attachments/%s/data", id, g.attach_emb);
  if (orth_call(OrthancPluginHttpMethod_Get, uri, NULL, NULL, 0, &b, NULL) == 200 && b.data)
    *emb = cJSON_ParseWithLength(b.data, b.len);
  buf_free(&b);
}

/* At start: the index of findings and embeddings from Orthanc's metadata,
 * and the studies left running by a crash. */
static void rebuild_index(void) {
  cJSON *studies = orth_get_json("/studies?expand", NULL);
  const cJSON *st;
  long n_loaded = 0, n_requeued = 0;
  time_t now = time(NULL);
  cJSON_ArrayForEach(st, studies) {
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "ID"));
    if (!id) continue;
    buf_t b;
    if (orth_meta_get(id, g.meta_state, &b, NULL) != 200 || !b.data) {
      buf_free(&b);
      continue;
    }
    cJSON *state = cJSON_ParseWithLength(b.data, b.len);
    buf_free(&b);
    const char *sv = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(state, "state"));
    if (!sv) { cJSON_Delete(state); continue; }
    cJSON *findings = NULL, *emb = NULL;
    if (strcmp(sv, "done") == 0) fetch_stored_results(id, &findings, &emb);
    pthread_mutex_lock(&g.mu);
    study_t *s = study_get(id);
    if (s && s->state != ST_QUEUED && s->state != ST_RUNNING) {
      set_patient_info(s, st);
      if (strcmp(sv, "done") == 0) {
        study_clear_result(s);
        load_done_study(s, state);
        study_set_findings(s, findings);
        findings = NULL;
        if (emb) study_set_embeddings_json(s, emb);
        s->state = ST_DONE;
        g.n_done++;
        n_loaded++;
      } else if (strcmp(sv, "failed") == 0) {
        study_clear_result(s);
        load_done_study(s, state);
        s->error = xstrdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(state, "error")));
        s->state = ST_FAILED;
        g.n_failed++;
      } else if (strcmp(sv, "running") == 0) {
        /* Interrupted: ours (same identity), or another server's whose lease ran out. */
        const char *owner = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(state, "owner"));
        const cJSON *since = cJSON_GetObjectItemCaseSensitive(state, "since");
        int mine = owner && strcmp(owner, g.server_id) == 0;
        int expired = !cJSON_IsNumber(since) || now - (time_t)since->valuedouble > g.cfg.claim_lease;
        if (mine || expired) {
          enqueue_locked(s, 0);
          n_requeued++;
        }
      }
    }
    pthread_mutex_unlock(&g.mu);
    cJSON_Delete(findings);
    cJSON_Delete(emb);
    cJSON_Delete(state);
  }
  cJSON_Delete(studies);
  log_warning("UniMed: index rebuilt: %ld analysed studies, %ld interrupted analyses queued again",
              n_loaded, n_requeued);
}

static void journal_start(void) {
  int64_t stored = -1;
  cJSON *pending = NULL;
  char *txt = OrthancPluginGetGlobalProperty(g.ctx, g.cfg.journal_property, "");
  if (txt) {
    cJSON *j = txt[0] ? cJSON_Parse(txt) : NULL;
    OrthancPluginFreeString(g.ctx, txt);
    if (j) {
      const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "last_change");
      if (cJSON_IsNumber(l)) stored = (int64_t)l->valuedouble;
      pending = cJSON_DetachItemFromObjectCaseSensitive(j, "pending");
      cJSON_Delete(j);
    }
  }
  rebuild_index();
  long n_pending = 0;
  pthread_mutex_lock(&g.mu);
  const cJSON *p;
  cJSON_ArrayForEach(p, pending) {
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "id"));
    if (!id) continue;
    study_t *s = study_get(id);
    if (!s) continue;
    /* "new": recorded but never analysed; Orthanc forgets unstable studies
     * over a restart, so no StableStudy will come: check it now. */
    enqueue_locked(s, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "force")));
    n_pending++;
  }
  pthread_mutex_unlock(&g.mu);
  cJSON_Delete(pending);
  if (stored < 0) {
    /* First start: begin at the end of the log (existing studies are not
     * analysed unless asked with POST .../analyze). */
    stored = orth_last_change();
    if (stored < 0) stored = 0;
  }
  pthread_mutex_lock(&g.mu);
  g.last_change = stored;
  g.dirty = 1;
  pthread_mutex_unlock(&g.mu);
  replay_changes();
  pthread_mutex_lock(&g.mu);
  g.catching_up = 0;
  pthread_cond_broadcast(&g.cv);
  log_warning("UniMed: caught up: %ld pending studies from the journal, now at change %lld, %zu queued",
              n_pending, (long long)g.last_change, g.q_len);
  pthread_mutex_unlock(&g.mu);
  persist();
}

static void *journal_main(void *arg) {
  (void)arg;
  journal_start();
  double last_replay = now_seconds(), last_claims = last_replay;
  pthread_mutex_lock(&g.mu);
  while (!g.stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 300 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&g.cv, &g.mu, &ts);
    if (g.stop) break;
    pthread_mutex_unlock(&g.mu);
    if (now_seconds() - last_replay >= 1.0) {
      replay_changes();
      last_replay = now_seconds();
    }
    if (now_seconds() - last_claims >= 60.0) {
      /* Studies claimed by another server: look again (it may be done, or
       * its claim may have expired because it died). */
      pthread_mutex_lock(&g.mu);
      for (size_t i = 0; i < g.table_size; i++)
        for (study_t *s = g.table[i]; s; s = s->next)
          if (s->state == ST_SKIPPED && s->elsewhere) enqueue_locked(s, 0);
      pthread_mutex_unlock(&g.mu);
      last_claims = now_seconds();
    }
    persist();
    pthread_mutex_lock(&g.mu);
  }
  pthread_mutex_unlock(&g.mu);
  return NULL;
}

/* ======================================================================
 * analysis of one study
 * ==================================================================== */

typedef struct {
  int state;           /* ST_DONE, ST_FAILED, ST_SKIPPED, ST_NONE (deleted) */
  int unchanged;       /* already up to date: index untouched */
  int analysed;        /* the engine ran (for the mean analysis time) */
  int elsewhere;       /* another server holds the claim */
  char error[600];
  char fingerprint[17];
  char *sr_id;
  char sr_uid[65];
  cJSON *findings;
  cJSON *emb;
  cJSON *study_json;
  double seconds;
  char time[32];
} outcome_t;

static int is_non_image_modality(const char *m) {
  static const char *const skip[] = {"SR", "KO", "PR", "DOC", "REG", "RTSTRUCT", "RTPLAN",
                                     "RTRECORD", "FID", "PLAN", "AU", "ECG", "HD", NULL};
  if (!m) return 0;
  for (int i = 0; skip[i]; i++)
    if (strcasecmp(m, skip[i]) == 0) return 1;
  return 0;
}

static int modality_wanted(const char *m) {
  if (g.cfg.n_modalities == 0) return 1;
  for (int i = 0; i < g.cfg.n_modalities; i++)
    if (m && strcasecmp(m, g.cfg.modalities[i]) == 0) return 1;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static cJSON *state_json(const char *state, const outcome_t *o) {
  cJSON *j = cJSON_CreateObject();
  char t[32];
  now_iso(t);
  cJSON_AddStringToObject(j, "state", state);
  cJSON_AddStringToObject(j, "owner", g.server_id);
  cJSON_AddNumberToObject(j, "since", (double)time(NULL));
  cJSON_AddStringToObject(j, "time", t);
  cJSON_AddStringToObject(j, "model", g.model_hash);
  cJSON_AddStringToObject(j, "label_sets", g.labelsets_key);
  if (o) {
    cJSON_AddStringToObject(j, "fingerprint", o->fingerprint);
    if (o->sr_id) cJSON_AddStringToObject(j, "sr", o->sr_id);
    if (o->sr_uid[0]) cJSON_AddStringToObject(j, "sr_uid", o->sr_uid);
    if (o->error[0]) cJSON_AddStringToObject(j, "error", o->error);
    cJSON_AddNumberToObject(j, "seconds", o->seconds);
  }
  return j;
}

static int put_state(const char *id, const char *state, const outcome_t *o, const char *etag) {
  cJSON *j = state_json(state, o);
  char *txt = cJSON_PrintUnformatted(j);
  cJSON_Delete(j);
  int st = orth_meta_put(id, g.meta_state, txt, etag);
  free(txt);
  return st;
}

/* Stores the SR unless an instance with its SOP Instance UID is already in
 * Orthanc (re-analysis with the same model and label sets: same UID). */
static int store_sr(const unimed_study_result *r, outcome_t *o) {
  snprintf(o->sr_uid, sizeof o->sr_uid, "%s", r->sr_sop_instance_uid);
  buf_t b;
  if (r->sr_sop_instance_uid[0] &&
      orth_call(OrthancPluginHttpMethod_Post, "/tools/lookup", NULL, r->sr_sop_instance_uid,
                strlen(r->sr_sop_instance_uid), &b, NULL) == 200 && b.data) {
    cJSON *l = cJSON_ParseWithLength(b.data, b.len);
    buf_free(&b);
    const cJSON *it;
    cJSON_ArrayForEach(it, l) {
      const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "Type"));
      const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "ID"));
      if (type && id && strcmp(type, "Instance") == 0) {
        o->sr_id = xstrdup(id);
        break;
      }
    }
    cJSON_Delete(l);
    if (o->sr_id) return 0;
  } else {
    buf_free(&b);
  }
  int st = orth_call(OrthancPluginHttpMethod_Post, "/instances", NULL, r->sr, r->sr_len, &b, NULL);
  if (st != 200 || !b.data) {
    buf_free(&b);
    snprintf(o->error, sizeof o->error, "Orthanc refused the SR (HTTP %d)", st);
    return -1;
  }
  cJSON *a = cJSON_ParseWithLength(b.data, b.len);
  buf_free(&b);
  o->sr_id = xstrdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "ID")));
  cJSON_Delete(a);
  return 0;
}

static void analyse(unimed_engine *e, const char *id, int force, const char *known_fp,
                    outcome_t *o) {
  char uri[256];
  int st;
  o->study_json = NULL;
  snprintf(uri, sizeof uri, "/studies/%s", id);
  o->study_json = orth_get_json(uri, &st);
  if (!o->study_json) {
    if (st == 404) {
      o->state = ST_NONE;
      snprintf(o->error, sizeof o->error, "the study is not in Orthanc");
    } else {
      o->state = ST_FAILED;
      snprintf(o->error, sizeof o->error, "GET %s answered HTTP %d", uri, st);
    }
    return;
  }
  snprintf(uri, sizeof uri, "/studies/%s/series", id);
  cJSON *series = orth_get_json(uri, &st);
  if (!series) {
    o->state = st == 404 ? ST_NONE : ST_FAILED;
    snprintf(o->error, sizeof o->error, "GET %s answered HTTP %d", uri, st);
    return;
  }
  /* The instances of the image series to analyse. */
  int cap = 0, n = 0;
  const char **ids = NULL;
  const cJSON *se;
  cJSON_ArrayForEach(se, series) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(se, "MainDicomTags");
    const char *mod = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(mt, "Modality"));
    if (is_non_image_modality(mod) || !modality_wanted(mod)) continue;
    const cJSON *inst;
    cJSON_ArrayForEach(inst, cJSON_GetObjectItemCaseSensitive(se, "Instances")) {
      if (!cJSON_IsString(inst)) continue;
      if (n == cap) {
        cap = cap ? cap * 2 : 64;
        const char **ni = realloc(ids, (size_t)cap * sizeof *ni);
        if (!ni) break;
        ids = ni;
      }
      ids[n++] = inst->valuestring;
    }
  }
  if (n == 0) {
    o->state = ST_SKIPPED;
    snprintf(o->error, sizeof o->error,
             g.cfg.n_modalities ? "no image series of the configured Modalities"
                                : "no image series");
    free(ids);
    cJSON_Delete(series);
    return;
  }
  qsort(ids, (size_t)n, sizeof *ids, cmp_str);
  uint64_t h = fnv1a64(FNV64_OFFSET, g.model_hash, strlen(g.model_hash));
  h = fnv1a64(h, g.labelsets_key, strlen(g.labelsets_key));
  for (int i = 0; i < n; i++) h = fnv1a64(h, ids[i], strlen(ids[i]) + 1);
  snprintf(o->fingerprint, sizeof o->fingerprint, "%016llx", (unsigned long long)h);

  if (!force && known_fp && strcmp(known_fp, o->fingerprint) == 0) {
    o->state = ST_DONE;
    o->unchanged = 1;
    goto out;
  }

  /* Claim the study: a metadata write with a revision check (several
   * servers sharing one database; needs "CheckRevisions": true). */
  char etag[64] = "";
  buf_t b;
  st = orth_meta_get(id, g.meta_state, &b, etag);
  if (st == 200 && b.data) {
    cJSON *cur = cJSON_ParseWithLength(b.data, b.len);
    const char *cs = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cur, "state"));
    const char *owner = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cur, "owner"));
    const char *fp = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cur, "fingerprint"));
    const cJSON *since = cJSON_GetObjectItemCaseSensitive(cur, "since");
    if (!force && cs && fp && strcmp(cs, "done") == 0 && strcmp(fp, o->fingerprint) == 0) {
      /* Analysed already (by us before a restart, or by another server). */
      o->state = ST_DONE;
      const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cur, "sr"));
      o->sr_id = xstrdup(v);
      v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cur, "sr_uid"));
      snprintf(o->sr_uid, sizeof o->sr_uid, "%s", v ? v : "");
      const cJSON *secs = cJSON_GetObjectItemCaseSensitive(cur, "seconds");
      o->seconds = cJSON_IsNumber(secs) ? secs->valuedouble : 0;
      v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cur, "time"));
      snprintf(o->time, sizeof o->time, "%s", v ? v : "");
      fetch_stored_results(id, &o->findings, &o->emb);
      cJSON_Delete(cur);
      buf_free(&b);
      goto out;
    }
    if (cs && strcmp(cs, "running") == 0 && owner && strcmp(owner, g.server_id) != 0 &&
        cJSON_IsNumber(since) && time(NULL) - (time_t)since->valuedouble <= g.cfg.claim_lease) {
      o->state = ST_SKIPPED;
      o->elsewhere = 1;
      snprintf(o->error, sizeof o->error, "being analysed by %s", owner);
      cJSON_Delete(cur);
      buf_free(&b);
      goto out;
    }
    cJSON_Delete(cur);
  }
  buf_free(&b);
  st = put_state(id, "running", o, etag[0] ? etag : NULL);
  if (st == 409 || st == 412 || st == 428) {
    o->state = ST_SKIPPED;
    o->elsewhere = 1;
    snprintf(o->error, sizeof o->error, "claimed by another server (HTTP %d)", st);
    goto out;
  }
  if (st != 200) {
    o->state = ST_FAILED;
    snprintf(o->error, sizeof o->error, "cannot write metadata %s (HTTP %d)", g.meta_state, st);
    goto out;
  }

  /* Fetch every instance and analyse. */
  double t0 = now_seconds();
  unimed_blob *blobs = calloc((size_t)n, sizeof *blobs);
  buf_t *bufs = calloc((size_t)n, sizeof *bufs);
  int nb = 0;
  for (int i = 0; i < n && blobs && bufs; i++) {
    snprintf(uri, sizeof uri, "/instances/%s/file", ids[i]);
    st = orth_call(OrthancPluginHttpMethod_Get, uri, NULL, NULL, 0, &bufs[nb], NULL);
    if (st != 200 || !bufs[nb].data) {
      buf_free(&bufs[nb]);
      continue; /* deleted meanwhile */
    }
    blobs[nb].name = ids[i];
    blobs[nb].data = bufs[nb].data;
    blobs[nb].len = bufs[nb].len;
    nb++;
  }
  unimed_study_result r;
  memset(&r, 0, sizeof r);
  int rc = nb ? unimed_engine_analyze_blobs(e, blobs, nb, g.cfg.write_reports, &r) : -1;
  for (int i = 0; i < nb; i++) buf_free(&bufs[i]);
  free(bufs);
  free(blobs);
  o->seconds = now_seconds() - t0;
  o->analysed = 1;
  now_iso(o->time);
  if (rc != 0) {
    o->state = ST_FAILED;
    snprintf(o->error, sizeof o->error, "%s", nb ? (r.error[0] ? r.error : "analysis failed")
                                                 : "no instance could be read from Orthanc");
    unimed_study_result_free(&r);
    put_state(id, "failed", o, NULL);
    goto out;
  }
  if (g.cfg.write_reports && r.sr && r.sr_len) {
    if (store_sr(&r, o) != 0) {
      o->state = ST_FAILED;
      unimed_study_result_free(&r);
      put_state(id, "failed", o, NULL);
      goto out;
    }
  }
  o->findings = r.findings;
  r.findings = NULL;
  o->emb = embeddings_to_json(&r, g.dim);
  if (!r.complete && r.error[0]) {
    cJSON *w = cJSON_GetObjectItemCaseSensitive(o->findings, "warning");
    if (!w && cJSON_IsObject(o->findings))
      cJSON_AddStringToObject(o->findings, "warning", r.error);
  }
  unimed_study_result_free(&r);
  {
    char *ftxt = cJSON_PrintUnformatted(o->findings);
    int s1 = ftxt ? orth_meta_put(id, g.meta_findings, ftxt, NULL) : 0;
    free(ftxt);
    char *etxt = cJSON_PrintUnformatted(o->emb);
    snprintf(uri, sizeof uri, "/studies/%s/attachments/%s", id, g.attach_emb);
    char aetag[64];
    int s2 = orth_call(OrthancPluginHttpMethod_Get, uri, NULL, NULL, 0, NULL, aetag);
    s2 = etxt ? orth_call(OrthancPluginHttpMethod_Put, uri, s2 == 200 && aetag[0] ? aetag : NULL,
                          etxt, strlen(etxt), NULL, NULL)
              : 0;
    free(etxt);
    if (s1 != 200 || s2 != 200)
      log_warning("UniMed: study %s: storing findings/embeddings answered HTTP %d/%d", id, s1, s2);
  }
  o->state = ST_DONE;
  if (put_state(id, "done", o, NULL) != 200)
    log_warning("UniMed: study %s: cannot write metadata %s", id, g.meta_state);
out:
  free(ids);
  cJSON_Delete(series);
}

static void *worker_main(void *arg) {
  unimed_engine *e = arg;
  pthread_mutex_lock(&g.mu);
  for (;;) {
    while (!g.stop && (g.catching_up || g.q_len == 0)) pthread_cond_wait(&g.cv, &g.mu);
    if (g.stop) break;
    study_t *s = dequeue_locked();
    if (!s) continue;
    s->state = ST_RUNNING;
    s->requeue = 0;
    int force = s->force;
    s->force = 0;
    char id[64], fp[17];
    snprintf(id, sizeof id, "%s", s->id);
    /* A final result for this fingerprint (done, or failed) is not redone
     * unless forced. */
    int had_done = s->fingerprint[0] && (s->findings || s->sr_id);
    int had_failed = !had_done && s->fingerprint[0] && s->state != ST_NONE && s->error &&
                     s->analysed_at[0];
    snprintf(fp, sizeof fp, "%s", s->fingerprint);
    g.running++;
    pthread_mutex_unlock(&g.mu);

    int64_t seq = orth_last_change();
    outcome_t o;
    memset(&o, 0, sizeof o);
    analyse(e, id, force, had_done || had_failed ? fp : NULL, &o);
    if (!o.unchanged && !o.elsewhere && o.state != ST_NONE)
      labels_update(id, o.state == ST_DONE ? o.findings : NULL);

    pthread_mutex_lock(&g.mu);
    g.running--;
    if (seq > s->checked_seq) s->checked_seq = seq;
    if (o.study_json) set_patient_info(s, o.study_json);
    if (o.state == ST_NONE) {
      study_clear_result(s);
      s->state = ST_NONE;
    } else if (o.unchanged) {
      s->state = had_failed ? ST_FAILED : ST_DONE;
    } else if (o.state == ST_DONE) {
      int was_done = had_done;
      study_clear_result(s);
      s->sr_id = o.sr_id;
      o.sr_id = NULL;
      snprintf(s->sr_uid, sizeof s->sr_uid, "%s", o.sr_uid);
      snprintf(s->fingerprint, sizeof s->fingerprint, "%s", o.fingerprint);
      snprintf(s->analysed_at, sizeof s->analysed_at, "%s", o.time);
      s->seconds = o.seconds;
      study_set_findings(s, o.findings);
      o.findings = NULL;
      if (o.emb) study_set_embeddings_json(s, o.emb);
      s->state = ST_DONE;
      if (!was_done) g.n_done++;
      if (o.analysed) {
        g.total_seconds += o.seconds;
        g.n_timed++;
      }
    } else if (o.state == ST_FAILED) {
      study_clear_result(s);
      s->error = xstrdup(o.error);
      snprintf(s->fingerprint, sizeof s->fingerprint, "%s", o.fingerprint);
      snprintf(s->analysed_at, sizeof s->analysed_at, "%s", o.time[0] ? o.time : "-");
      if (o.analysed) {
        g.total_seconds += o.seconds;
        g.n_timed++;
      }
      s->state = ST_FAILED;
      g.n_failed++;
      log_error("UniMed: study %s: analysis failed: %s", id, o.error);
    } else {
      free(s->error);
      s->error = xstrdup(o.error);
      s->state = ST_SKIPPED;
      g.n_skipped++;
    }
    s->elsewhere = o.state == ST_SKIPPED && o.elsewhere;
    if (s->requeue || s->force) {
      s->requeue = 0;
      enqueue_locked(s, 0);
    }
    g.dirty = 1;
    pthread_cond_broadcast(&g.cv);
    free(o.sr_id);
    cJSON_Delete(o.findings);
    cJSON_Delete(o.emb);
    cJSON_Delete(o.study_json);
  }
  pthread_mutex_unlock(&g.mu);
  return NULL;
}

/* ======================================================================
 * threads, events
 * ==================================================================== */

static void start_threads(void) {
  if (g.threads_started || !g.enabled) return;
  g.stop = 0;
  g.catching_up = 1;
  g.worker_threads = calloc((size_t)g.cfg.workers, sizeof(pthread_t));
  pthread_create(&g.journal_thread, NULL, journal_main, NULL);
  for (int i = 0; i < g.cfg.workers; i++)
    pthread_create(&g.worker_threads[i], NULL, worker_main, g.engines[i]);
  g.threads_started = 1;
  log_warning("UniMed: %d worker(s) started", g.cfg.workers);
}

static void stop_threads(void) {
  if (!g.threads_started) return;
  pthread_mutex_lock(&g.mu);
  g.stop = 1;
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);
  pthread_join(g.journal_thread, NULL);
  for (int i = 0; i < g.cfg.workers; i++) pthread_join(g.worker_threads[i], NULL);
  free(g.worker_threads);
  g.worker_threads = NULL;
  g.threads_started = 0;
  /* Anything still queued is written for the next start. */
  pthread_mutex_lock(&g.mu);
  g.dirty = 1;
  pthread_mutex_unlock(&g.mu);
  persist();
  log_warning("UniMed: workers stopped");
}

static OrthancPluginErrorCode on_change(OrthancPluginChangeType type,
                                        OrthancPluginResourceType rtype, const char *id) {
  switch (type) {
    case OrthancPluginChangeType_OrthancStarted:
      start_threads();
      break;
    case OrthancPluginChangeType_OrthancStopped:
      stop_threads();
      break;
    case OrthancPluginChangeType_NewStudy:
      if (id) {
        pthread_mutex_lock(&g.mu);
        study_t *s = study_get(id);
        if (s && (s->state == ST_NONE)) {
          s->state = ST_NEW;
          g.dirty = 1;
        }
        pthread_mutex_unlock(&g.mu);
      }
      break;
    case OrthancPluginChangeType_StableStudy:
      if (id) plugin_enqueue(id, 0);
      break;
    case OrthancPluginChangeType_Deleted:
      if (id && rtype == OrthancPluginResourceType_Study) {
        pthread_mutex_lock(&g.mu);
        study_t *s = study_find(id);
        if (s && s->state != ST_RUNNING && s->state != ST_QUEUED) {
          study_clear_result(s);
          s->state = ST_NONE;
          g.dirty = 1;
        }
        pthread_mutex_unlock(&g.mu);
      }
      break;
    default:
      break;
  }
  return OrthancPluginErrorCode_Success;
}

/* ======================================================================
 * entry points
 * ==================================================================== */

static void disable(const char *why) {
  g.enabled = 0;
  size_t n = strlen(why);
  if (n >= sizeof g.disabled_reason) n = sizeof g.disabled_reason - 1;
  memcpy(g.disabled_reason, why, n);
  g.disabled_reason[n] = 0;
}

static int create_engines(char *err, size_t errlen) {
  unimed_engine_options o;
  memset(&o, 0, sizeof o);
  o.model_dir = g.cfg.model_dir;
  o.label_sets = (const char *const *)g.cfg.label_sets;
  o.n_label_sets = g.cfg.n_label_sets;
  o.label_set_dir = g.cfg.label_set_dir;
  o.cache_dir = g.cfg.cache_dir;
  o.max_slices = g.cfg.max_slices;
  o.threads = g.cfg.threads;
  o.precision = (unimed_precision)g.cfg.precision;
  o.manufacturer = "UniMed for Orthanc";
  o.software_version = UNIMED_PLUGIN_VERSION;
  if (o.cache_dir && mkdir_p(o.cache_dir) != 0) {
    log_warning("UniMed: cannot create CacheDirectory %s (%s): label-set embeddings are not cached",
                o.cache_dir, strerror(errno));
    o.cache_dir = NULL;
  }
  g.rest_engine = unimed_engine_create(&o, err, errlen);
  if (!g.rest_engine) return -1;
  g.engines = calloc((size_t)g.cfg.workers, sizeof *g.engines);
  for (int i = 0; i < g.cfg.workers; i++) {
    g.engines[i] = unimed_engine_create(&o, err, errlen);
    if (!g.engines[i]) return -1;
  }
  g.dim = unimed_engine_embed_dim(g.rest_engine);
  g.describe = unimed_engine_describe(g.rest_engine);
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(g.describe, "model");
  const char *mh = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "hash"));
  snprintf(g.model_hash, sizeof g.model_hash, "%s", mh ? mh : "");
  size_t off = 0;
  const cJSON *ls;
  cJSON_ArrayForEach(ls, cJSON_GetObjectItemCaseSensitive(g.describe, "label_sets")) {
    const char *nm = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ls, "name"));
    const char *hs = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ls, "hash"));
    int w = snprintf(g.labelsets_key + off, sizeof g.labelsets_key - off, "%s%s:%s",
                     off ? "," : "", nm ? nm : "?", hs ? hs : "?");
    if (w < 0 || (size_t)w >= sizeof g.labelsets_key - off) break;
    off += (size_t)w;
  }
  return 0;
}

__attribute__((visibility("default"))) int32_t OrthancPluginInitialize(OrthancPluginContext *context) {
  memset(&g, 0, sizeof g);
  g.ctx = context;
  pthread_mutex_init(&g.mu, NULL);
  pthread_mutex_init(&g.rest_engine_mu, NULL);
  pthread_cond_init(&g.cv, NULL);
  g.last_change = -1;

  if (OrthancPluginCheckVersion(context) == 0) {
    char msg[256];
    snprintf(msg, sizeof msg,
             "UniMed: this plugin needs Orthanc >= %d.%d.%d (running %s): not started",
             ORTHANC_PLUGINS_MINIMAL_MAJOR_NUMBER, ORTHANC_PLUGINS_MINIMAL_MINOR_NUMBER,
             ORTHANC_PLUGINS_MINIMAL_REVISION_NUMBER, context->orthancVersion);
    OrthancPluginLogError(context, msg);
    return -1;
  }
#define UNIMED_DESCRIPTION                                                                  \
  "UniMed for Orthanc: zero-shot findings with the UniMed-CLIP vision-language model, "    \
  "written back as DICOM SR and served over REST"
#if ORTHANC_PLUGINS_VERSION_IS_ABOVE(1, 12, 4) /* the SDK of Debian 13's Orthanc 1.12.7 */
  OrthancPluginSetDescription2(context, UNIMED_PLUGIN_NAME, UNIMED_DESCRIPTION);
#else
  OrthancPluginSetDescription(context, UNIMED_DESCRIPTION);
#endif

  char err[1024] = "";
  if (config_load(&g.cfg, err, sizeof err) != 0) {
    log_error("UniMed: configuration error: %s. The plugin is disabled; Orthanc goes on.", err);
    disable(err);
  } else if (!g.cfg.enable) {
    log_warning("UniMed: disabled by the configuration (\"UniMed\".\"Enable\": false)");
    disable("disabled by the configuration (\"UniMed\".\"Enable\": false)");
  } else {
    log_warning("UniMed: loading the model from %s (%d worker(s), %d thread(s) each, %s)",
                g.cfg.model_dir, g.cfg.workers, g.cfg.threads,
                unimed_precision_name((unimed_precision)g.cfg.precision));
    if (g.cfg.precision == UNIMED_PRECISION_BF16 && !unimed_bf16_supported())
      log_warning("UniMed: \"Precision\": \"bf16\" but this CPU has no avx512_bf16: "
                  "running FP32");
    if (create_engines(err, sizeof err) != 0) {
      char why[1200];
      snprintf(why, sizeof why, "cannot load the model or the label sets: %s", err);
      log_error("UniMed: %s. The plugin is disabled; Orthanc goes on.", why);
      disable(why);
    } else {
      g.enabled = 1;
      log_warning("UniMed: model %s, label sets %s, REST API under %s", g.model_hash,
                  g.labelsets_key, g.cfg.root);
    }
  }
  if (g.enabled) {
    rest_register();
    explorer_register();
    OrthancPluginRegisterOnChangeCallback(context, on_change);
  } else {
    rest_register_disabled();
  }
  return 0;
}

__attribute__((visibility("default"))) void OrthancPluginFinalize(void) {
  stop_threads();
  if (g.engines)
    for (int i = 0; i < g.cfg.workers; i++) unimed_engine_free(g.engines[i]);
  free(g.engines);
  unimed_engine_free(g.rest_engine);
  cJSON_Delete(g.describe);
  study_free_all();
  free(g.queue);
  config_free(&g.cfg);
}

__attribute__((visibility("default"))) const char *OrthancPluginGetName(void) {
  return UNIMED_PLUGIN_NAME;
}

__attribute__((visibility("default"))) const char *OrthancPluginGetVersion(void) {
  return UNIMED_PLUGIN_VERSION;
}
