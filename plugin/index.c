/* The in-memory index: every study the plugin knows of, its state, and for
 * analysed studies the findings (flattened for /findings) and the per-series
 * image embeddings (for /search). All functions expect g.mu to be held. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "plugin_internal.h"

const char *state_name(int st) {
  switch (st) {
    case ST_NEW: return "new";
    case ST_QUEUED: return "queued";
    case ST_RUNNING: return "running";
    case ST_DONE: return "done";
    case ST_FAILED: return "failed";
    case ST_SKIPPED: return "skipped";
    default: return "none";
  }
}

static size_t hash_id(const char *id) {
  return (size_t)fnv1a64(FNV64_OFFSET, id, strlen(id));
}

study_t *study_find(const char *id) {
  if (!g.table) return NULL;
  for (study_t *s = g.table[hash_id(id) % g.table_size]; s; s = s->next)
    if (strcmp(s->id, id) == 0) return s;
  return NULL;
}

static void table_grow(void) {
  size_t nsize = g.table_size ? g.table_size * 2 : 1024;
  study_t **nt = calloc(nsize, sizeof *nt);
  if (!nt) return;
  for (size_t i = 0; i < g.table_size; i++) {
    study_t *s = g.table[i];
    while (s) {
      study_t *next = s->next;
      size_t h = hash_id(s->id) % nsize;
      s->next = nt[h];
      nt[h] = s;
      s = next;
    }
  }
  free(g.table);
  g.table = nt;
  g.table_size = nsize;
}

study_t *study_get(const char *id) {
  study_t *s = study_find(id);
  if (s) return s;
  if (strlen(id) >= sizeof s->id) return NULL;
  if (g.n_studies + 1 > g.table_size) table_grow();
  if (!g.table) return NULL;
  s = calloc(1, sizeof *s);
  if (!s) return NULL;
  strcpy(s->id, id);
  s->checked_seq = -1;
  size_t h = hash_id(id) % g.table_size;
  s->next = g.table[h];
  g.table[h] = s;
  g.n_studies++;
  return s;
}

void study_clear_result(study_t *s) {
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
}

void study_free_all(void) {
  for (size_t i = 0; i < g.table_size; i++) {
    study_t *s = g.table[i];
    while (s) {
      study_t *n = s->next;
      study_clear_result(s);
      free(s->patient_id); free(s->patient_name); free(s->study_date); free(s->study_uid);
      free(s);
      s = n;
    }
  }
  free(g.table);
  g.table = NULL;
  g.table_size = g.n_studies = 0;
}

/* ---- findings extraction ----
 * The engine's findings JSON nests label sets inside series (or the other
 * way round); rather than depend on one layout, walk the tree and collect
 * every object that has a label name and a probability, with the nearest
 * enclosing modality, series UID and label-set name. */
typedef struct {
  const char *modality, *series_uid, *label_set;
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
