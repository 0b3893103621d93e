/* The in-memory index: every study the plugin knows of, its state, and for
 * analysed studies the findings (flattened for /findings) and the per-series
 * image embeddings (for /search). study_* functions expect g.mu to be held;
 * index_* functions (the REST side) take it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "index.h"

static struct {
  study_t **table;
  size_t table_size, n_studies;
  double total_seconds; /* engine runs, for the mean analysis time */
  long long n_timed;
} ix;

static size_t hash_id(const char *id) {
  return (size_t)fnv1a64(FNV64_OFFSET, id, strlen(id));
}

study_t *study_find(const char *id) {
  if (!ix.table) return NULL;
  for (study_t *s = ix.table[hash_id(id) % ix.table_size]; s; s = s->next)
    if (strcmp(s->id, id) == 0) return s;
  return NULL;
}

static void table_grow(void) {
  size_t nsize = ix.table_size ? ix.table_size * 2 : 1024;
  study_t **nt = calloc(nsize, sizeof *nt);
  if (!nt) return;
  for (size_t i = 0; i < ix.table_size; i++) {
    study_t *s = ix.table[i];
    while (s) {
      study_t *next = s->next;
      size_t h = hash_id(s->id) % nsize;
      s->next = nt[h];
      nt[h] = s;
      s = next;
    }
  }
  free(ix.table);
  ix.table = nt;
  ix.table_size = nsize;
}

study_t *study_get(const char *id) {
  study_t *s = study_find(id);
  if (s) return s;
  if (strlen(id) >= sizeof s->id) return NULL;
  if (ix.n_studies + 1 > ix.table_size) table_grow();
  if (!ix.table) return NULL;
  s = calloc(1, sizeof *s);
  if (!s) return NULL;
  strcpy(s->id, id);
  s->checked_seq = -1;
  s->new_seq = -1;
  size_t h = hash_id(id) % ix.table_size;
  s->next = ix.table[h];
  ix.table[h] = s;
  ix.n_studies++;
  return s;
}

void study_clear_result(study_t *s) {
  s->retry = 0;
  free(s->error); s->error = NULL;
  free(s->sr_id); s->sr_id = NULL;
  s->sr_uid[0] = 0;
  cJSON_Delete(s->findings); s->findings = NULL;
  for (int i = 0; i < s->nf; i++) {
    free(s->f[i].label); free(s->f[i].label_set);
    free(s->f[i].modality); free(s->f[i].series_uid);
  }
  free(s->f); s->f = NULL; s->nf = 0;
  for (int i = 0; i < s->nemb; i++) free(s->emb[i].v);
  free(s->emb); s->emb = NULL; s->nemb = 0;
  s->fingerprint[0] = 0;
  s->seconds = 0;
  s->analysed_at[0] = 0;
  cJSON_Delete(s->failed_series); s->failed_series = NULL;
}

void study_free_all(void) {
  for (size_t i = 0; i < ix.table_size; i++) {
    study_t *s = ix.table[i];
    while (s) {
      study_t *n = s->next;
      study_clear_result(s);
      free(s->patient_id); free(s->patient_name); free(s->study_date); free(s->study_uid);
      free(s);
      s = n;
    }
  }
  free(ix.table);
  ix.table = NULL;
  ix.table_size = ix.n_studies = 0;
}

void study_set_patient_info(study_t *s, const cJSON *study_json) {
  const cJSON *pt = cJSON_GetObjectItemCaseSensitive(study_json, "PatientMainDicomTags");
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(study_json, "MainDicomTags");
  free(s->patient_id); free(s->patient_name); free(s->study_date); free(s->study_uid);
  s->patient_id = xstrdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pt, "PatientID")));
  s->patient_name = xstrdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pt, "PatientName")));
  s->study_date = xstrdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(mt, "StudyDate")));
  s->study_uid = xstrdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(mt, "StudyInstanceUID")));
}


void study_for_each_locked(void (*fn)(study_t *s, void *arg), void *arg) {
  for (size_t i = 0; i < ix.table_size; i++)
    for (study_t *s = ix.table[i], *next; s; s = next) {
      next = s->next;
      fn(s, arg);
    }
}

void index_note_analysis_locked(double seconds) {
  ix.total_seconds += seconds;
  ix.n_timed++;
}

/* ---- findings extraction ----
 * The engine's findings JSON nests label sets inside series (or the other
 * way round); rather than depend on one layout, walk the tree and collect
 * every object that has a label name and a probability, with the nearest
 * enclosing modality, series UID and label-set name. */
typedef struct {
  const char *modality, *series_uid, *label_set;
  const char *warning; /* of the enclosing label-set object (model card) */
} ctx_t;

static const char *str_item(const cJSON *o, const char *const *keys) {
  for (int i = 0; keys[i]; i++) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, keys[i]);
    if (cJSON_IsString(it) && it->valuestring) return it->valuestring;
  }
  return NULL;
}

/* A number, also when written as a raw JSON literal (the engine prints
 * probabilities with cJSON_AddRawToObject). */
static int json_number(const cJSON *it, double *v) {
  if (cJSON_IsNumber(it)) {
    *v = it->valuedouble;
    return 1;
  }
  if (cJSON_IsRaw(it) && it->valuestring) {
    char *end;
    *v = strtod(it->valuestring, &end);
    return end != it->valuestring;
  }
  return 0;
}

static int num_item(const cJSON *o, const char *const *keys, double *v) {
  for (int i = 0; keys[i]; i++)
    if (json_number(cJSON_GetObjectItemCaseSensitive(o, keys[i]), v)) return 1;
  return 0;
}

static void add_finding(study_t *s, const char *label, double p, const ctx_t *c) {
  finding_t *nf = realloc(s->f, (size_t)(s->nf + 1) * sizeof *nf);
  if (!nf) return;
  s->f = nf;
  finding_t *f = &s->f[s->nf++];
  f->label = xstrdup(label);
  f->label_set = xstrdup(c->label_set ? c->label_set : "");
  f->modality = xstrdup(c->modality ? c->modality : "");
  f->series_uid = xstrdup(c->series_uid ? c->series_uid : "");
  f->probability = p;
  f->warning = c->warning;
}

static void walk(study_t *s, const cJSON *node, ctx_t c, const char *parent_key) {
  static const char *const k_mod[] = {"modality", "Modality", NULL};
  static const char *const k_series[] = {"series", "series_uid", "series_instance_uid", "SeriesInstanceUID", NULL};
  static const char *const k_ls[] = {"label_set", "labelset", NULL};
  static const char *const k_label[] = {"label", "name", NULL};
  static const char *const k_prob[] = {"probability", "prob", "score", NULL};
  if (cJSON_IsArray(node)) {
    const cJSON *it;
    cJSON_ArrayForEach(it, node) walk(s, it, c, parent_key);
    return;
  }
  if (!cJSON_IsObject(node)) return;
  const char *v;
  if ((v = str_item(node, k_mod))) c.modality = v;
  if ((v = str_item(node, k_series))) c.series_uid = v;
  if ((v = str_item(node, k_ls))) c.label_set = v;
  else if (parent_key && (strcmp(parent_key, "label_sets") == 0 || strcmp(parent_key, "labelsets") == 0) &&
           (v = str_item(node, (const char *const[]){"name", NULL})))
    c.label_set = v;
  double p = 0;
  int has_p = num_item(node, k_prob, &p);
  const char *label = str_item(node, k_label);
  int is_ls_obj = parent_key && (strcmp(parent_key, "label_sets") == 0 || strcmp(parent_key, "labelsets") == 0);
  if (is_ls_obj) c.warning = str_item(node, (const char *const[]){"warning", NULL});
  if (has_p && label && !is_ls_obj) {
    add_finding(s, label, p, &c);
    return;
  }
  const cJSON *it;
  cJSON_ArrayForEach(it, node) {
    if (cJSON_IsObject(it) || cJSON_IsArray(it)) walk(s, it, c, it->string);
    else if (it->string && parent_key && json_number(it, &p) &&
             (strcmp(parent_key, "scores") == 0 || strcmp(parent_key, "probabilities") == 0))
      add_finding(s, it->string, p, &c); /* {"scores": {"label": p}} */
  }
}

void study_set_findings(study_t *s, cJSON *findings) {
  for (int i = 0; i < s->nf; i++) {
    free(s->f[i].label); free(s->f[i].label_set);
    free(s->f[i].modality); free(s->f[i].series_uid);
  }
  free(s->f); s->f = NULL; s->nf = 0;
  cJSON_Delete(s->findings);
  s->findings = findings;
  if (!findings) return;
  ctx_t c = {0};
  walk(s, findings, c, NULL);
}

int study_set_embeddings_json(study_t *s, const cJSON *emb) {
  for (int i = 0; i < s->nemb; i++) free(s->emb[i].v);
  free(s->emb); s->emb = NULL; s->nemb = 0;
  const cJSON *series = cJSON_GetObjectItemCaseSensitive(emb, "series");
  int n = cJSON_GetArraySize(series);
  if (n <= 0) return 0;
  s->emb = calloc((size_t)n, sizeof *s->emb);
  if (!s->emb) return -1;
  const cJSON *it;
  cJSON_ArrayForEach(it, series) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(it, "embedding");
    int d = cJSON_GetArraySize(e);
    if (d != g.dim || d <= 0) continue; /* other model: unusable for search */
    series_emb_t *se = &s->emb[s->nemb];
    se->v = malloc((size_t)d * sizeof(float));
    if (!se->v) continue;
    int k = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, e) {
      double d1 = 0;
      se->v[k++] = json_number(x, &d1) ? (float)d1 : 0.f;
    }
    const char *uid = str_item(it, (const char *const[]){"series_uid", NULL});
    const char *mod = str_item(it, (const char *const[]){"modality", NULL});
    snprintf(se->series_uid, sizeof se->series_uid, "%s", uid ? uid : "");
    snprintf(se->modality, sizeof se->modality, "%s", mod ? mod : "");
    s->nemb++;
  }
  return 0;
}

cJSON *embeddings_to_json(const unimed_study_result *r, int dim) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "dim", dim);
  cJSON_AddStringToObject(j, "model", g.model_hash);
  cJSON *arr = cJSON_AddArrayToObject(j, "series");
  for (int i = 0; i < r->n_series; i++) {
    const unimed_series_result *sr = &r->series[i];
    if (!sr->embedding) continue;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "series_uid", sr->series_uid);
    cJSON_AddStringToObject(o, "modality", sr->modality);
    cJSON_AddNumberToObject(o, "n_frames", sr->n_frames);
    cJSON *e = cJSON_AddArrayToObject(o, "embedding");
    for (int k = 0; k < dim; k++) {
      /* 7 significant digits survive the round trip through JSON. */
      char num[32];
      double x = isfinite(sr->embedding[k]) ? (double)sr->embedding[k] : 0.0;
      snprintf(num, sizeof num, "%.7g", x);
      cJSON_AddItemToArray(e, cJSON_CreateRaw(num));
    }
    cJSON_AddItemToArray(arr, o);
  }
  return j;
}

/* ---- queries for REST ---- */

/* A study's results are listed while it is done, and also while it is
 * queued or running again with its previous results still held (a re-check
 * after a restart or a StableStudy): they stay true until replaced. */
static int has_listed_result(const study_t *s) {
  if (s->state == ST_DONE) return 1;
  return (s->state == ST_QUEUED || s->state == ST_RUNNING) && !s->deleted && s->findings &&
         !s->error;
}

void index_counts(index_counts_t *c) {
  memset(c, 0, sizeof *c);
  pthread_mutex_lock(&g.mu);
  for (size_t i = 0; i < ix.table_size; i++)
    for (study_t *s = ix.table[i]; s; s = s->next)
      if (s->state >= 0 && s->state < ST_COUNT) c->n[s->state]++;
  c->analyses = ix.n_timed;
  c->mean_seconds = ix.n_timed ? ix.total_seconds / (double)ix.n_timed : 0.0;
  pthread_mutex_unlock(&g.mu);
}

/* ---- one schema (docs/openapi.json): the same names on every route ----
 * study_id / series: Orthanc IDs; *_instance_uid: DICOM UIDs. */

cJSON *index_model_json(void) {
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(g.describe, "model");
  cJSON *o = cJSON_CreateObject();
  const char *keys[] = {"name", "version", "hash"};
  for (int k = 0; k < 3; k++) {
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, keys[k]));
    cJSON_AddStringToObject(o, keys[k], v ? v : "");
  }
  return o;
}

/* What a probability means, per scoring kind (docs/LABEL_SETS.md). */
static const char *scoring_meaning(const char *scoring) {
  if (scoring && strcmp(scoring, "binary") == 0)
    return "each label on its own: how likely the image shows it rather than not (labels do not add up to 1)";
  return "the labels compete: the share of the image's likelihood that goes to each label (the set adds up to 1)";
}

cJSON *index_label_sets_json(int with_labels) {
  cJSON *arr = cJSON_CreateArray();
  const cJSON *it;
  cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(g.describe, "label_sets")) {
    cJSON *o = cJSON_CreateObject();
    const char *keys[] = {"name", "version", "hash", "scoring"};
    for (int k = 0; k < 4; k++) {
      const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, keys[k]));
      cJSON_AddStringToObject(o, keys[k], v ? v : "");
    }
    cJSON_AddStringToObject(o, "probability_meaning",
        scoring_meaning(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "scoring"))));
    /* With a model card: whether it lists the set, and the warning if not. */
    const cJSON *validated = cJSON_GetObjectItemCaseSensitive(it, "validated");
    const char *warning = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "warning"));
    if (cJSON_IsBool(validated)) cJSON_AddBoolToObject(o, "validated", cJSON_IsTrue(validated));
    if (warning) cJSON_AddStringToObject(o, "warning", warning);
    if (with_labels) {
      const cJSON *extra;
      cJSON_ArrayForEach(extra, it) {
        if (!extra->string || cJSON_GetObjectItemCaseSensitive(o, extra->string)) continue;
        cJSON_AddItemToObject(o, extra->string, cJSON_Duplicate(extra, 1));
      }
    }
    cJSON_AddItemToArray(arr, o);
  }
  return arr;
}

static cJSON *score_json(const finding_t *f) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "label", f->label);
  cJSON_AddNumberToObject(o, "probability", f->probability);
  cJSON_AddStringToObject(o, "label_set", f->label_set);
  cJSON_AddStringToObject(o, "modality", f->modality);
  cJSON_AddStringToObject(o, "series_instance_uid", f->series_uid);
  if (f->warning) cJSON_AddStringToObject(o, "label_set_warning", f->warning);
  return o;
}

cJSON *index_label_set_warnings_json(const cJSON *findings) {
  const cJSON *w = cJSON_GetObjectItemCaseSensitive(findings, "label_set_warnings");
  return cJSON_IsArray(w) ? cJSON_Duplicate(w, 1) : cJSON_CreateArray();
}

cJSON *index_scores_json(const cJSON *findings) {
  study_t tmp;
  memset(&tmp, 0, sizeof tmp);
  study_set_findings(&tmp, findings ? cJSON_Duplicate(findings, 1) : NULL);
  cJSON *arr = cJSON_CreateArray();
  for (int i = 0; i < tmp.nf; i++) cJSON_AddItemToArray(arr, score_json(&tmp.f[i]));
  study_clear_result(&tmp);
  return arr;
}

cJSON *index_failed_series_json(const cJSON *findings) {
  cJSON *arr = cJSON_CreateArray();
  const cJSON *se;
  cJSON_ArrayForEach(se, cJSON_GetObjectItemCaseSensitive(findings, "series")) {
    const char *err = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(se, "error"));
    if (!err) continue;
    const char *uid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(se, "series"));
    const char *mod = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(se, "modality"));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "series_instance_uid", uid ? uid : "");
    cJSON_AddStringToObject(o, "modality", mod ? mod : "");
    cJSON_AddStringToObject(o, "error", err);
    cJSON_AddItemToArray(arr, o);
  }
  /* Files that could not be read at all (no series to name). */
  const cJSON *sk;
  cJSON_ArrayForEach(sk, cJSON_GetObjectItemCaseSensitive(findings, "skipped")) {
    if (!cJSON_IsString(sk)) continue;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "series_instance_uid", "");
    cJSON_AddStringToObject(o, "modality", "");
    cJSON_AddStringToObject(o, "error", sk->valuestring);
    cJSON_AddItemToArray(arr, o);
  }
  return arr;
}

static const char *public_state(const study_t *s) {
  return s->state == ST_NEW ? "queued" : study_state_name(s->state);
}

/* The fields every route gives for a study. */
static void add_study_fields(cJSON *o, const study_t *s) {
  cJSON_AddStringToObject(o, "study_id", s->id);
  cJSON_AddStringToObject(o, "study_instance_uid", s->study_uid ? s->study_uid : "");
  cJSON_AddStringToObject(o, "patient_id", s->patient_id ? s->patient_id : "");
  cJSON_AddStringToObject(o, "patient_name", s->patient_name ? s->patient_name : "");
  cJSON_AddStringToObject(o, "study_date", s->study_date ? s->study_date : "");
  cJSON_AddStringToObject(o, "state", public_state(s));
  if (s->sr_id) {
    cJSON *sr = cJSON_AddObjectToObject(o, "sr");
    cJSON_AddStringToObject(sr, "instance_id", s->sr_id);
    cJSON_AddStringToObject(sr, "sop_instance_uid", s->sr_uid);
  } else {
    cJSON_AddNullToObject(o, "sr");
  }
}

static cJSON *study_answer_locked(const study_t *s) {
  cJSON *j = cJSON_CreateObject();
  add_study_fields(j, s);
  if (s->state == ST_NEW) cJSON_AddStringToObject(j, "detail", "waiting for the study to become stable");
  if (s->state == ST_FAILED || s->state == ST_SKIPPED)
    cJSON_AddStringToObject(j, "error", s->error ? s->error : "");
  else
    cJSON_AddNullToObject(j, "error");
  cJSON_AddItemToObject(j, "model", index_model_json());
  cJSON_AddItemToObject(j, "label_sets", index_label_sets_json(0));
  if (s->state == ST_DONE || s->state == ST_FAILED) {
    cJSON_AddStringToObject(j, "analysed_at", s->analysed_at);
    cJSON_AddNumberToObject(j, "seconds", s->seconds);
  }
  cJSON *failed = s->findings ? index_failed_series_json(s->findings)
                : s->failed_series ? cJSON_Duplicate(s->failed_series, 1) : cJSON_CreateArray();
  cJSON_AddItemToObject(j, "failed_series", failed);
  cJSON_AddItemToObject(j, "label_set_warnings", index_label_set_warnings_json(s->findings));
  if (s->state == ST_DONE) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(s->findings, "complete");
    cJSON_AddBoolToObject(j, "complete", c ? cJSON_IsTrue(c) : cJSON_GetArraySize(failed) == 0);
    cJSON *flat = cJSON_AddArrayToObject(j, "scores");
    for (int i = 0; i < s->nf; i++) cJSON_AddItemToArray(flat, score_json(&s->f[i]));
  }
  return j;
}

cJSON *index_study_json(const char *id, int *pending) {
  pthread_mutex_lock(&g.mu);
  study_t *s = study_find(id);
  cJSON *j = NULL;
  if (s && s->state != ST_NONE) {
    j = study_answer_locked(s);
    *pending = s->state == ST_NEW || s->state == ST_QUEUED || s->state == ST_RUNNING;
  }
  pthread_mutex_unlock(&g.mu);
  return j;
}

int index_is_unanalysed(const char *id) {
  pthread_mutex_lock(&g.mu);
  const study_t *s = study_find(id);
  int r = !s || s->state == ST_NONE;
  pthread_mutex_unlock(&g.mu);
  return r;
}

static int in_page(size_t i, page_t page) {
  return i >= (size_t)page.since && i < (size_t)page.since + (size_t)page.limit;
}

/* ---- GET findings ---- */
typedef struct {
  const study_t *s;
  const finding_t *f;
} hit_t;

static int cmp_hit(const void *a, const void *b) {
  double pa = ((const hit_t *)a)->f->probability, pb = ((const hit_t *)b)->f->probability;
  if (pa != pb) return pa < pb ? 1 : -1;
  return strcmp(((const hit_t *)a)->s->id, ((const hit_t *)b)->s->id); /* stable pages */
}

/* Studies deleted from Orthanc since they were indexed are never listed:
 * each list is built in two steps. A candidates function copies the first
 * `want` items of the stable order (and how many there are in all) under
 * g.mu; keep() (which asks Orthanc) then runs without g.mu held. */
typedef cJSON *(*candidates_fn)(const void *ctx, size_t want, size_t *total);

/* The page of kept candidates into `items`; returns the list's paging
 * object. total counts the kept studies up to where the page search
 * stopped plus every candidate not yet asked about: an upper bound unless
 * every candidate was asked (docs/PLUGIN.md). */
static cJSON *kept_page_json(candidates_fn candidates, const void *ctx, page_t page,
                             study_keep_fn keep, cJSON **items) {
  const size_t end = (size_t)page.since + (size_t)page.limit; /* kept index past the page */
  cJSON *page_items = NULL;
  size_t kept = 0, asked = 0, total = 0;
  for (size_t want = end + 16;; want *= 4) {
    cJSON *c = candidates(ctx, want, &total);
    if (!c) break; /* out of memory: the page found so far */
    cJSON_Delete(page_items);
    page_items = cJSON_CreateArray();
    kept = asked = 0;
    cJSON *it;
    /* One kept item past the page tells whether there is a next page. */
    while (kept <= end && (it = cJSON_DetachItemFromArray(c, 0)) != NULL) {
      const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "study_id"));
      asked++;
      if (!keep || (id && keep(id))) {
        if (in_page(kept, page) && page_items) {
          cJSON_AddItemToArray(page_items, it);
          it = NULL;
        }
        kept++;
      }
      cJSON_Delete(it);
    }
    cJSON_Delete(c);
    if (kept > end || total <= want) break;
  }
  size_t upper = kept + (total > asked ? total - asked : 0);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddNumberToObject(j, "total", (double)upper);
  cJSON_AddNumberToObject(j, "since", (double)page.since);
  cJSON_AddNumberToObject(j, "limit", page.limit);
  if (kept > end)
    cJSON_AddNumberToObject(j, "next_since", (double)end);
  else
    cJSON_AddNullToObject(j, "next_since");
  if (!page_items) page_items = cJSON_CreateArray();
  cJSON_AddItemToObject(j, "studies", page_items);
  *items = page_items;
  return j;
}

typedef struct {
  const char *label, *lset, *mod;
  double minp;
} findings_query_t;

/* The first `want` hits as JSON; *total: how many hits there are. */
static cJSON *findings_candidates(const void *ctx, size_t want, size_t *total) {
  const findings_query_t *fq = ctx;
  const char *label = fq->label, *lset = fq->lset, *mod = fq->mod;
  double minp = fq->minp;
  pthread_mutex_lock(&g.mu);
  size_t cap = 256, n = 0;
  hit_t *hits = malloc(cap * sizeof *hits);
  for (size_t i = 0; i < ix.table_size && hits; i++)
    for (study_t *s = ix.table[i]; s; s = s->next) {
      if (!has_listed_result(s)) continue;
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
  *total = n;
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; i < n && i < want; i++) {
    cJSON *o = cJSON_CreateObject();
    add_study_fields(o, hits[i].s);
    cJSON_AddItemToObject(o, "score", score_json(hits[i].f));
    cJSON_AddItemToArray(arr, o);
  }
  pthread_mutex_unlock(&g.mu);
  free(hits);
  return arr;
}

cJSON *index_findings_json(const char *label, double minp, const char *lset, const char *mod,
                           page_t page, study_keep_fn keep) {
  const findings_query_t fq = {label, lset, mod, minp};
  cJSON *arr;
  cJSON *j = kept_page_json(findings_candidates, &fq, page, keep, &arr);
  cJSON_AddStringToObject(j, "label", label);
  cJSON_AddNumberToObject(j, "min_probability", minp);
  return j;
}

/* ---- GET search ---- */
typedef struct {
  const study_t *s;
  int series;
  double score;
} search_hit_t;

static int cmp_search_hits(const void *a, const void *b) {
  double pa = ((const search_hit_t *)a)->score, pb = ((const search_hit_t *)b)->score;
  if (pa != pb) return pa < pb ? 1 : -1;
  return strcmp(((const search_hit_t *)a)->s->id, ((const search_hit_t *)b)->s->id);
}

typedef struct {
  const float *q;
  const char *mod;
} search_query_t;

static cJSON *search_candidates(const void *ctx, size_t want, size_t *total) {
  const search_query_t *sq = ctx;
  const float *q = sq->q;
  const char *mod = sq->mod;
  pthread_mutex_lock(&g.mu);
  size_t cap = 256, n = 0;
  search_hit_t *hits = malloc(cap * sizeof *hits);
  for (size_t i = 0; i < ix.table_size && hits; i++)
    for (study_t *s = ix.table[i]; s; s = s->next) {
      if (!has_listed_result(s) || s->nemb == 0) continue;
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
        search_hit_t *nh = realloc(hits, 2 * cap * sizeof *nh);
        if (!nh) break;
        hits = nh;
        cap *= 2;
      }
      hits[n].s = s;
      hits[n].series = best;
      hits[n].score = bs;
      n++;
    }
  if (hits) qsort(hits, n, sizeof *hits, cmp_search_hits);
  *total = n;
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; i < n && i < want; i++) {
    cJSON *o = cJSON_CreateObject();
    add_study_fields(o, hits[i].s);
    cJSON_AddNumberToObject(o, "similarity", hits[i].score);
    cJSON_AddStringToObject(o, "series_instance_uid", hits[i].s->emb[hits[i].series].series_uid);
    cJSON_AddStringToObject(o, "modality", hits[i].s->emb[hits[i].series].modality);
    cJSON_AddItemToArray(arr, o);
  }
  pthread_mutex_unlock(&g.mu);
  free(hits);
  return arr;
}

cJSON *index_search_json(const char *text, const float *q, const char *mod, page_t page,
                         study_keep_fn keep) {
  const search_query_t sq = {q, mod};
  cJSON *arr;
  cJSON *j = kept_page_json(search_candidates, &sq, page, keep, &arr);
  cJSON_AddStringToObject(j, "text", text);
  return j;
}

/* ---- GET studies ---- */
static int study_has(const study_t *s, const char *lset, const char *mod) {
  if (!lset && !mod) return 1;
  for (int k = 0; k < s->nf; k++) {
    if (lset && strcasecmp(s->f[k].label_set, lset) != 0) continue;
    if (mod && strcasecmp(s->f[k].modality, mod) != 0) continue;
    return 1;
  }
  for (int k = 0; !lset && k < s->nemb; k++)
    if (strcasecmp(s->emb[k].modality, mod) == 0) return 1;
  return 0;
}

static int cmp_study_id(const void *a, const void *b) {
  return strcmp((*(const study_t *const *)a)->id, (*(const study_t *const *)b)->id);
}

static cJSON *list_candidates(const void *ctx, size_t want, size_t *total) {
  const study_filter_t *f = ctx;
  pthread_mutex_lock(&g.mu);
  const study_t **all = malloc((ix.n_studies ? ix.n_studies : 1) * sizeof *all);
  size_t n = 0;
  for (size_t i = 0; i < ix.table_size && all; i++)
    for (const study_t *s = ix.table[i]; s; s = s->next) {
      if (s->state == ST_NONE) continue;
      if (f->state >= 0 && !(s->state == f->state || (f->state == ST_QUEUED && s->state == ST_NEW)))
        continue;
      if (!study_has(s, f->label_set, f->modality)) continue;
      if (f->analysed_since && strcmp(s->analysed_at, f->analysed_since) < 0) continue;
      all[n++] = s;
    }
  /* Orthanc IDs, sorted: a stable order for paging. */
  if (all) qsort(all, n, sizeof *all, cmp_study_id);
  *total = n;
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; i < n && i < want; i++) {
    cJSON *o = cJSON_CreateObject();
    add_study_fields(o, all[i]);
    if (all[i]->analysed_at[0]) cJSON_AddStringToObject(o, "analysed_at", all[i]->analysed_at);
    if (all[i]->error && (all[i]->state == ST_FAILED || all[i]->state == ST_SKIPPED))
      cJSON_AddStringToObject(o, "error", all[i]->error);
    cJSON_AddItemToArray(arr, o);
  }
  pthread_mutex_unlock(&g.mu);
  free(all);
  return arr;
}

cJSON *index_list_json(const study_filter_t *f, page_t page, study_keep_fn keep) {
  cJSON *arr;
  return kept_page_json(list_candidates, f, page, keep, &arr);
}
