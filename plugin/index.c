/* The in-memory index: every study the plugin knows of, its state, and for
 * analysed studies the findings (for /findings) and the per-series image
 * embeddings (for /search), kept packed in the store (index_store.c).
 * study_* functions expect g.mu to be held; index_* functions (the REST
 * side) take it. */
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#include "index.h"

/* Studies are never freed one by one (a deleted study's entry is cleared
 * and kept, study_free_all() frees them at the end), so they come from
 * slabs of their own: no per-study malloc header, and none of them left
 * scattered among the transient JSON of a rebuild. */
#define SLAB_STUDIES 2048
typedef struct slab {
  struct slab *next;
  size_t used;
  study_t studies[SLAB_STUDIES];
} slab_t;

static struct {
  slab_t *slabs;
  study_t **table;
  size_t table_size, n_studies;
  double total_seconds; /* engine runs, for the mean analysis time */
  long long n_timed;
} ix;

static const char *str_of(const cJSON *o, const char *key) {
  return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
}

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
  if (!ix.slabs || ix.slabs->used == SLAB_STUDIES) {
    /* mmap: malloc could place a slab in the arena of whichever thread asks
     * (a rebuild thread), among its transient JSON. */
    slab_t *sl = mmap(NULL, sizeof *sl, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sl == MAP_FAILED) return NULL;
    sl->next = ix.slabs;
    ix.slabs = sl;
  }
  s = &ix.slabs->studies[ix.slabs->used];
  memset(s, 0, sizeof *s);
  strcpy(s->id, id);
  s->checked_seq = -1;
  s->new_seq = -1;
  s->f_row = s->emb_row = STORE_NO_ROW;
  s->num = store_add_study_locked(s);
  if (s->num == UINT32_MAX) return NULL; /* the slot stays free */
  ix.slabs->used++;
  size_t h = hash_id(id) % ix.table_size;
  s->next = ix.table[h];
  ix.table[h] = s;
  ix.n_studies++;
  return s;
}

static void forget_series(study_t *s) {
  free(s->series);
  s->series = NULL;
  s->n_series = 0;
  free(s->set_warnings);
  s->set_warnings = NULL;
  s->n_set_warnings = 0;
}

void study_clear_result(study_t *s) {
  s->retry = 0;
  free(s->error); s->error = NULL;
  free(s->sr_id); s->sr_id = NULL;
  s->sr_uid[0] = 0;
  s->has_result = 0;
  s->complete = 0;
  s->warnings_json = STORE_NO_NAME;
  store_put_findings_locked(s->num, 0, NULL, &s->f_row, &s->nf);
  store_put_embeddings_locked(s->num, 0, NULL, NULL, NULL, &s->emb_row, &s->nemb);
  forget_series(s);
  s->fingerprint[0] = 0;
  s->seconds = 0;
  s->analysed_at[0] = 0;
  cJSON_Delete(s->failed_series); s->failed_series = NULL;
  study_update_listed_locked(s);
}

void study_free_all(void) {
  for (size_t i = 0; i < ix.table_size; i++) {
    study_t *s = ix.table[i];
    while (s) {
      study_t *n = s->next;
      study_clear_result(s);
      free(s->tags);
      free(s->claim_etag);
      s = n;
    }
  }
  free(ix.table);
  ix.table = NULL;
  ix.table_size = ix.n_studies = 0;
  while (ix.slabs) {
    slab_t *next = ix.slabs->next;
    munmap(ix.slabs, sizeof *ix.slabs);
    ix.slabs = next;
  }
  store_free();
}

void study_set_patient_info(study_t *s, const cJSON *study_json) {
  const cJSON *pt = cJSON_GetObjectItemCaseSensitive(study_json, "PatientMainDicomTags");
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(study_json, "MainDicomTags");
  const char *v[4] = {str_of(pt, "PatientID"), str_of(pt, "PatientName"), str_of(mt, "StudyDate"),
                      str_of(mt, "StudyInstanceUID")};
  size_t len[4], n = 0;
  for (int i = 0; i < 4; i++) n += (len[i] = v[i] ? strlen(v[i]) : 0) + 1;
  char *t = malloc(n);
  if (!t) return; /* the previous tags stay */
  free(s->tags);
  s->tags = t;
  for (int i = 0; i < 4; i++) {
    if (len[i]) memcpy(t, v[i], len[i]);
    t[len[i]] = 0;
    t += len[i] + 1;
  }
}

/* The k-th of the NUL-terminated strings that follow each other in block
 * (the study's tags, its series UIDs); k = their count: just past them. */
static const char *nth_string(const char *block, int k) {
  for (int i = 0; i < k; i++) block += strlen(block) + 1;
  return block;
}

const char *study_tag(const study_t *s, enum study_tag which) {
  return s->tags ? nth_string(s->tags, (int)which) : "";
}

void study_forget_tags(study_t *s) {
  free(s->tags);
  s->tags = NULL;
}

static char *moved(char *p, size_t n) {
  if (!p) return NULL;
  char *q = malloc(n);
  if (!q) return p;
  memcpy(q, p, n);
  free(p);
  return q;
}

static size_t strings_size(const char *p, int n) { return (size_t)(nth_string(p, n) - p); }

void study_move_strings_locked(study_t *s) {
  if (s->tags) s->tags = moved(s->tags, strings_size(s->tags, 4));
  if (s->series) s->series = moved(s->series, strings_size(s->series, s->n_series));
  if (s->sr_id) s->sr_id = moved(s->sr_id, strlen(s->sr_id) + 1);
  if (s->error) s->error = moved(s->error, strlen(s->error) + 1);
}

void study_for_each_locked(void (*fn)(study_t *s, void *arg), void *arg) {
  for (size_t i = 0; i < ix.table_size; i++)
    for (study_t *s = ix.table[i], *next; s; s = next) {
      next = s->next;
      fn(s, arg);
    }
}

static size_t usable(const void *p) { return p ? malloc_usable_size((void *)p) : 0; }

size_t index_bytes(void) {
  pthread_mutex_lock(&g.mu);
  size_t b = ix.table_size * sizeof *ix.table;
  for (const slab_t *sl = ix.slabs; sl; sl = sl->next) b += sizeof *sl;
  for (size_t i = 0; i < ix.table_size; i++)
    for (const study_t *s = ix.table[i]; s; s = s->next)
      b += usable(s->tags) + usable(s->series) + usable(s->sr_id) + usable(s->error) +
           usable(s->claim_etag) + usable(s->set_warnings);
  pthread_mutex_unlock(&g.mu);
  return b + store_bytes();
}

void index_note_analysis_locked(double seconds) {
  ix.total_seconds += seconds;
  ix.n_timed++;
}

/* ---- findings from the engine's findings JSON ----
 * One layout (analysis.c writes it): {"series": [{"series": UID, "modality",
 * "label_sets": [{"name", "warning"?, "findings": [{"label", "probability"},
 * ...]}, ...]}, ...], "label_set_warnings": [...], "complete"?}. */

/* A probability, also when written as a raw JSON literal (the engine prints
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


typedef void (*finding_fn)(const char *label, double p, const char *label_set, const char *warning,
                           const char *modality, const char *series_uid, void *arg);

static void findings_each(const cJSON *findings, finding_fn fn, void *arg) {
  const cJSON *se, *ls, *f;
  cJSON_ArrayForEach(se, cJSON_GetObjectItemCaseSensitive(findings, "series")) {
    const char *uid = str_of(se, "series"), *mod = str_of(se, "modality");
    cJSON_ArrayForEach(ls, cJSON_GetObjectItemCaseSensitive(se, "label_sets")) {
      const char *set = str_of(ls, "name"), *warning = str_of(ls, "warning");
      cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(ls, "findings")) {
        const char *label = str_of(f, "label");
        double p;
        if (label && json_number(cJSON_GetObjectItemCaseSensitive(f, "probability"), &p))
          fn(label, p, set ? set : "", warning, mod ? mod : "", uid ? uid : "", arg);
      }
    }
  }
}

/* The index of a series UID in the study's list, added when new; -1 when
 * out of memory. */
static int series_index(study_t *s, const char *uid) {
  size_t len = 0;
  for (int i = 0; i < s->n_series; i++) {
    const char *u = s->series + len;
    if (strcmp(u, uid) == 0) return i;
    len += strlen(u) + 1;
  }
  if (s->n_series >= 0xFFFE) return -1;
  size_t n = strlen(uid) + 1;
  char *ns = realloc(s->series, len + n);
  if (!ns) return -1;
  memcpy(ns + len, uid, n);
  s->series = ns;
  return s->n_series++;
}

static const char *series_uid_at(const study_t *s, int index) {
  return index >= 0 && index < s->n_series ? nth_string(s->series, index) : "";
}

typedef struct {
  study_t *s;
  store_finding_in_t *in;
  int n, cap;
} collect_t;

static void collect_finding(const char *label, double p, const char *label_set, const char *warning,
                            const char *modality, const char *series_uid, void *arg) {
  collect_t *c = arg;
  if (c->n == c->cap) {
    int nc = c->cap ? 2 * c->cap : 32;
    store_finding_in_t *ni = realloc(c->in, (size_t)nc * sizeof *ni);
    if (!ni) return;
    c->in = ni;
    c->cap = nc;
  }
  c->in[c->n++] = (store_finding_in_t){label, label_set, modality, series_index(c->s, series_uid), p};
  if (!warning) return;
  uint16_t set = store_name_locked(label_set);
  for (int i = 0; i < c->s->n_set_warnings; i++)
    if (c->s->set_warnings[i].label_set == set) return;
  set_warning_t *nw = realloc(c->s->set_warnings, (size_t)(c->s->n_set_warnings + 1) * sizeof *nw);
  if (!nw) return;
  c->s->set_warnings = nw;
  nw[c->s->n_set_warnings++] = (set_warning_t){set, store_name_locked(warning)};
}

void study_set_findings(study_t *s, cJSON *findings) {
  free(s->set_warnings);
  s->set_warnings = NULL;
  s->n_set_warnings = 0;
  cJSON_Delete(s->failed_series);
  s->failed_series = NULL;
  s->warnings_json = STORE_NO_NAME;
  s->complete = 0;
  s->has_result = findings != NULL;
  collect_t c = {s, NULL, 0, 0};
  if (findings) {
    findings_each(findings, collect_finding, &c);
    cJSON *failed = index_failed_series_json(findings);
    const cJSON *complete = cJSON_GetObjectItemCaseSensitive(findings, "complete");
    s->complete = complete ? cJSON_IsTrue(complete) : cJSON_GetArraySize(failed) == 0;
    if (cJSON_GetArraySize(failed) > 0)
      s->failed_series = failed;
    else
      cJSON_Delete(failed);
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(findings, "label_set_warnings");
    if (cJSON_IsArray(w) && cJSON_GetArraySize(w) > 0) {
      char *txt = cJSON_PrintUnformatted(w);
      if (txt) s->warnings_json = store_name_locked(txt);
      free(txt);
    }
  }
  if (store_put_findings_locked(s->num, c.n, c.in, &s->f_row, &s->nf) != 0)
    log_error("UniMed: study %s: out of memory for its %d findings in the index", s->id, c.n);
  free(c.in);
  cJSON_Delete(findings);
  study_update_listed_locked(s);
}

int study_set_embeddings_json(study_t *s, const cJSON *emb) {
  const cJSON *series = cJSON_GetObjectItemCaseSensitive(emb, "series");
  int n = cJSON_GetArraySize(series), k = 0;
  float **v = n > 0 ? calloc((size_t)n, sizeof *v) : NULL;
  uint16_t *ser = n > 0 ? calloc((size_t)n, sizeof *ser) : NULL;
  uint16_t *mod = n > 0 ? calloc((size_t)n, sizeof *mod) : NULL;
  int rc = 0;
  if (n > 0 && (!v || !ser || !mod)) {
    rc = -1;
    n = 0;
  }
  const cJSON *it;
  const cJSON *walk = n > 0 ? series : NULL;
  cJSON_ArrayForEach(it, walk) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(it, "embedding");
    if (cJSON_GetArraySize(e) != g.dim || g.dim <= 0) continue; /* other model: unusable for search */
    int si = series_index(s, str_of(it, "series_uid") ? str_of(it, "series_uid") : "");
    if (si < 0 || !(v[k] = malloc((size_t)g.dim * sizeof(float)))) {
      rc = -1;
      continue;
    }
    int x = 0;
    const cJSON *num;
    cJSON_ArrayForEach(num, e) {
      double d1 = 0;
      v[k][x++] = json_number(num, &d1) ? (float)d1 : 0.f;
    }
    ser[k] = (uint16_t)si;
    mod[k] = store_name_locked(str_of(it, "modality") ? str_of(it, "modality") : "");
    k++;
  }
  if (store_put_embeddings_locked(s->num, k, (const float *const *)v, ser, mod, &s->emb_row,
                                  &s->nemb) != 0)
    rc = -1;
  for (int i = 0; i < k; i++) free(v[i]);
  free(v);
  free(ser);
  free(mod);
  if (rc != 0) log_error("UniMed: study %s: out of memory for its embeddings in the index", s->id);
  return rc;
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
  return (s->state == ST_QUEUED || s->state == ST_RUNNING) && !s->deleted && s->has_result &&
         !s->error;
}

void study_update_listed_locked(study_t *s) { store_set_listed_locked(s->num, has_listed_result(s)); }

void index_counts(index_counts_t *c) {
  memset(c, 0, sizeof *c);
  pthread_mutex_lock(&g.mu);
  for (size_t i = 0; i < ix.table_size; i++)
    for (study_t *s = ix.table[i]; s; s = s->next)
      if (s->state < ST_COUNT) c->n[s->state]++;
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

/* Probabilities are stored as floats; the engine writes them with 6
 * significant digits, which a float holds exactly: print them so again. */
static double six_digits(double p) {
  char b[32];
  snprintf(b, sizeof b, "%.6g", p);
  return strtod(b, NULL);
}

static cJSON *score_json(const char *label, double p, const char *label_set, const char *modality,
                         const char *series_uid, const char *warning) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "label", label);
  cJSON_AddNumberToObject(o, "probability", p);
  cJSON_AddStringToObject(o, "label_set", label_set);
  cJSON_AddStringToObject(o, "modality", modality);
  cJSON_AddStringToObject(o, "series_instance_uid", series_uid);
  if (warning) cJSON_AddStringToObject(o, "label_set_warning", warning);
  return o;
}

/* Stored finding i of s as a score. */
static cJSON *row_score_json(const study_t *s, int32_t i) {
  store_finding_t f;
  if (store_finding_locked(s, i, &f) != 0) return cJSON_CreateObject();
  const char *warning = NULL;
  for (int k = 0; k < s->n_set_warnings; k++)
    if (s->set_warnings[k].label_set == f.label_set) warning = store_name(s->set_warnings[k].warning);
  return score_json(store_name(f.label), six_digits(f.probability), store_name(f.label_set),
                    store_name(f.modality), series_uid_at(s, f.series), warning);
}

cJSON *index_label_set_warnings_json(const cJSON *findings) {
  const cJSON *w = cJSON_GetObjectItemCaseSensitive(findings, "label_set_warnings");
  return cJSON_IsArray(w) ? cJSON_Duplicate(w, 1) : cJSON_CreateArray();
}

static void add_score(const char *label, double p, const char *label_set, const char *warning,
                      const char *modality, const char *series_uid, void *arg) {
  cJSON_AddItemToArray(arg, score_json(label, p, label_set, modality, series_uid, warning));
}

cJSON *index_scores_json(const cJSON *findings) {
  cJSON *arr = cJSON_CreateArray();
  findings_each(findings, add_score, arr);
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
  cJSON_AddStringToObject(o, "study_instance_uid", study_tag(s, TAG_STUDY_UID));
  cJSON_AddStringToObject(o, "patient_id", study_tag(s, TAG_PATIENT_ID));
  cJSON_AddStringToObject(o, "patient_name", study_tag(s, TAG_PATIENT_NAME));
  cJSON_AddStringToObject(o, "study_date", study_tag(s, TAG_STUDY_DATE));
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
  cJSON *failed = s->failed_series ? cJSON_Duplicate(s->failed_series, 1) : cJSON_CreateArray();
  cJSON_AddItemToObject(j, "failed_series", failed);
  cJSON *warnings = s->warnings_json != STORE_NO_NAME ? cJSON_Parse(store_name(s->warnings_json)) : NULL;
  cJSON_AddItemToObject(j, "label_set_warnings", warnings ? warnings : cJSON_CreateArray());
  if (s->state == ST_DONE) {
    cJSON_AddBoolToObject(j, "complete", s->has_result ? s->complete : cJSON_GetArraySize(failed) == 0);
    cJSON *flat = cJSON_AddArrayToObject(j, "scores");
    for (int32_t i = 0; i < s->nf; i++) cJSON_AddItemToArray(flat, row_score_json(s, i));
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

/* ---- GET findings, GET search ---- */

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

/* The scan's hits (no g.mu held), then their answers under g.mu: each hit
 * is looked at again there (its study may have changed since the scan). */
static store_hit_t *alloc_hits(size_t want) {
  return malloc((want ? want : 1) * sizeof(store_hit_t));
}

/* The first `want` hits as JSON; *total: how many hits there are. */
static cJSON *findings_candidates(const void *ctx, size_t want, size_t *total) {
  const findings_query_t *fq = ctx;
  store_hit_t *hits = alloc_hits(want);
  long n = hits ? store_findings(fq->label, fq->minp, fq->lset, fq->mod, want, hits, total) : -1;
  if (n < 0) {
    free(hits);
    return NULL;
  }
  cJSON *arr = cJSON_CreateArray();
  pthread_mutex_lock(&g.mu);
  for (long i = 0; i < n; i++) {
    const study_t *s = hits[i].study;
    double p = 0;
    int32_t row = has_listed_result(s) ? store_best_finding_locked(s, fq->label, fq->minp, fq->lset,
                                                                   fq->mod, &p)
                                       : STORE_NO_ROW;
    if (row == STORE_NO_ROW) continue;
    cJSON *o = cJSON_CreateObject();
    add_study_fields(o, s);
    cJSON_AddItemToObject(o, "score", row_score_json(s, row));
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

typedef struct {
  const float *q;
  const char *mod;
} search_query_t;

static cJSON *search_candidates(const void *ctx, size_t want, size_t *total) {
  const search_query_t *sq = ctx;
  store_hit_t *hits = alloc_hits(want);
  long n = hits ? store_search(sq->q, sq->mod, want, hits, total) : -1;
  if (n < 0) {
    free(hits);
    return NULL;
  }
  cJSON *arr = cJSON_CreateArray();
  pthread_mutex_lock(&g.mu);
  for (long i = 0; i < n; i++) {
    const study_t *s = hits[i].study;
    double score = 0;
    int32_t row = has_listed_result(s) ? store_best_embedding_locked(s, sq->q, sq->mod, &score)
                                       : STORE_NO_ROW;
    if (row == STORE_NO_ROW) continue;
    uint16_t series, modality;
    store_embedding_row_locked(row, &series, &modality);
    cJSON *o = cJSON_CreateObject();
    add_study_fields(o, s);
    cJSON_AddNumberToObject(o, "similarity", score);
    cJSON_AddStringToObject(o, "series_instance_uid", series_uid_at(s, series));
    cJSON_AddStringToObject(o, "modality", store_name(modality));
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
      if (!store_study_has_locked(s, f->label_set, f->modality)) continue;
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
