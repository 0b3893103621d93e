/* The analysis engine: a study's DICOM instances -> per-series embeddings ->
 * label-set findings -> findings JSON and a TID 1500 SR. Shared by the
 * Orthanc plugin and `unimed analyze`. */
#include "analysis.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unimed_dicom.h"
#include "unimed_model.h"

#ifndef UNIMED_VERSION
#error "UNIMED_VERSION (the project version) must be defined by the build"
#endif

struct unimed_engine {
  unimed_model *model;
  unimed_label_set **sets;
  unimed_label_embeddings *embeddings;
  int n_sets;
  /* The model card (NULL: the model directory has none) and, per label set,
   * the warning that its findings carry when the card does not list it
   * (NULL: listed, or no card). */
  unimed_model_card *card;
  char **set_warnings;
  int max_slices;
  int aggregate_max;
  udcm_limits limits; /* checked when a file's header is read */
  char manufacturer[128];
  char software_version[64];
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static int compare_strings(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.json files of a folder, sorted (the order of groups in reports). */
static char **list_label_sets(const char *dir, int *n, char *err, size_t errlen) {
  DIR *d = opendir(dir);
  if (!d) {
    set_err(err, errlen, "%s: cannot open the label-set folder", dir);
    return NULL;
  }
  char **names = NULL;
  int count = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (e->d_name[0] == '.' || len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
    char **g = realloc(names, (size_t)(count + 1) * sizeof *g);
    if (!g) break;
    names = g;
    size_t plen = strlen(dir) + len + 2;
    names[count] = malloc(plen);
    if (!names[count]) break;
    snprintf(names[count++], plen, "%s/%s", dir, e->d_name);
  }
  closedir(d);
  if (count == 0) {
    set_err(err, errlen, "%s: no label sets (*.json) found", dir);
    free(names);
    return NULL;
  }
  qsort(names, (size_t)count, sizeof *names, compare_strings);
  *n = count;
  return names;
}

unimed_engine *unimed_engine_create(const unimed_engine_options *o, char *err, size_t errlen) {
  unimed_engine *e = calloc(1, sizeof *e);
  if (!e) {
    set_err(err, errlen, "out of memory");
    return NULL;
  }
  e->max_slices = o->max_slices > 0 ? o->max_slices : 8;
  udcm_limits_default(&e->limits);
  if (o->max_frame_bytes) {
    e->limits.max_frame_bytes = o->max_frame_bytes;
    e->limits.max_frame_pixels = o->max_frame_bytes / 4;
  }
  e->aggregate_max = o->aggregate_max;
  snprintf(e->manufacturer, sizeof e->manufacturer, "%s",
           o->manufacturer ? o->manufacturer : "UniMed for Orthanc");
  snprintf(e->software_version, sizeof e->software_version, "%s",
           o->software_version ? o->software_version : UNIMED_VERSION);
  if (o->threads > 0) unimed_set_threads(o->threads);
  const unimed_load_options lo = {.precision = o->precision};
  e->model = unimed_model_load_opts(o->model_dir, &lo, err, errlen);
  if (!e->model) goto fail;
  /* A malformed card fails the engine like a malformed label set: analysing
   * without it would drop the very warnings it exists for (docs/MODEL.md). */
  if (unimed_model_card_load(o->model_dir, &e->card, err, errlen) != 0) goto fail;

  char **owned = NULL;
  const char *const *paths = o->label_sets;
  int n = o->n_label_sets;
  if (n == 0) {
    if (!o->label_set_dir) {
      set_err(err, errlen, "no label sets given and no label-set folder");
      goto fail;
    }
    owned = list_label_sets(o->label_set_dir, &n, err, errlen);
    if (!owned) goto fail;
    paths = (const char *const *)owned;
  }
  e->sets = calloc((size_t)n, sizeof *e->sets);
  e->embeddings = calloc((size_t)n, sizeof *e->embeddings);
  e->set_warnings = calloc((size_t)n, sizeof *e->set_warnings);
  int ok = e->sets && e->embeddings && e->set_warnings;
  if (!ok) set_err(err, errlen, "out of memory");
  for (int i = 0; ok && i < n; i++) {
    e->sets[i] = unimed_label_set_load(paths[i], err, errlen);
    if (!e->sets[i]) {
      ok = 0;
      break;
    }
    e->n_sets = i + 1;
    char why[512];
    if (unimed_model_card_check(e->card, unimed_model_hash(e->model), e->sets[i]->name,
                                e->sets[i]->version, why, sizeof why)) {
      e->set_warnings[i] = strdup(why);
      if (!e->set_warnings[i]) {
        set_err(err, errlen, "out of memory");
        ok = 0;
        break;
      }
    }
    if (unimed_label_set_embed(e->model, e->sets[i], o->cache_dir, &e->embeddings[i], err,
                               errlen) != 0)
      ok = 0;
  }
  if (owned) {
    for (int i = 0; i < n; i++) free(owned[i]);
    free(owned);
  }
  if (!ok) goto fail;
  return e;
fail:
  unimed_engine_free(e);
  return NULL;
}

void unimed_engine_free(unimed_engine *e) {
  if (!e) return;
  for (int i = 0; i < e->n_sets; i++) {
    unimed_label_embeddings_free(&e->embeddings[i]);
    unimed_label_set_free(e->sets[i]);
    if (e->set_warnings) free(e->set_warnings[i]);
  }
  free(e->sets);
  free(e->embeddings);
  free(e->set_warnings);
  unimed_model_card_free(e->card);
  unimed_model_free(e->model);
  free(e);
}

int unimed_engine_embed_dim(const unimed_engine *e) {
  return unimed_model_config(e->model)->embed_dim;
}

int unimed_engine_embed_text(unimed_engine *e, const char *text, float *out, char *err,
                             size_t errlen) {
  return unimed_encode_texts(e->model, &text, 1, out, err, errlen);
}

int unimed_engine_embed_texts(unimed_engine *e, const char *const *texts, int n, float *out,
                              char *err, size_t errlen) {
  return unimed_encode_texts(e->model, texts, n, out, err, errlen);
}

static cJSON *code_json(const unimed_code *c) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "value", c->value);
  cJSON_AddStringToObject(j, "scheme", c->scheme);
  cJSON_AddStringToObject(j, "meaning", c->meaning);
  return j;
}

static cJSON *model_json(const unimed_model *m) {
  const unimed_config *c = unimed_model_config(m);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "name", c->name);
  cJSON_AddStringToObject(j, "version", c->version);
  cJSON_AddStringToObject(j, "hash", unimed_model_hash(m));
  cJSON_AddNumberToObject(j, "embed_dim", c->embed_dim);
  cJSON_AddStringToObject(j, "precision", unimed_precision_name(unimed_model_precision(m)));
  return j;
}

static cJSON *string_array(char **items, int n) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(items[i]));
  return a;
}

/* The card as status routes show it; JSON null when there is none. */
static cJSON *card_json(const unimed_engine *e) {
  const unimed_model_card *c = e->card;
  if (!c) return cJSON_CreateNull();
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "file", c->path);
  cJSON_AddStringToObject(j, "name", c->name);
  cJSON_AddStringToObject(j, "version", c->version);
  cJSON_AddStringToObject(j, "model_hash", c->model_hash);
  cJSON_AddBoolToObject(j, "matches_model",
                        !c->model_hash[0] || strcmp(c->model_hash, unimed_model_hash(e->model)) == 0);
  cJSON_AddStringToObject(j, "intended_use", c->intended_use);
  cJSON *sets = cJSON_AddArrayToObject(j, "label_sets");
  for (int i = 0; i < c->n_label_sets; i++) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "name", c->label_sets[i].name);
    cJSON_AddStringToObject(s, "version", c->label_sets[i].version);
    cJSON_AddStringToObject(s, "question", c->label_sets[i].question);
    cJSON_AddItemToArray(sets, s);
  }
  return j;
}

/* With a card: "validated" and, when false, the "warning" the set's findings
 * carry. Without one: neither (nothing is claimed, so nothing to flag). */
static void add_validation(const unimed_engine *e, int set, cJSON *j) {
  if (!e->card) return;
  cJSON_AddBoolToObject(j, "validated", e->set_warnings[set] == NULL);
  if (e->set_warnings[set]) cJSON_AddStringToObject(j, "warning", e->set_warnings[set]);
}

const char *unimed_engine_label_set_warning(const unimed_engine *e, int set) {
  return set >= 0 && set < e->n_sets ? e->set_warnings[set] : NULL;
}

int unimed_engine_n_label_sets(const unimed_engine *e) { return e->n_sets; }

const unimed_label_set *unimed_engine_label_set(const unimed_engine *e, int set) {
  return set >= 0 && set < e->n_sets ? e->sets[set] : NULL;
}

const unimed_model_card *unimed_engine_model_card(const unimed_engine *e) { return e->card; }

cJSON *unimed_engine_describe(const unimed_engine *e) {
  cJSON *j = cJSON_CreateObject();
  cJSON_AddItemToObject(j, "model", model_json(e->model));
  cJSON_AddItemToObject(j, "model_card", card_json(e));
  cJSON *sets = cJSON_AddArrayToObject(j, "label_sets");
  for (int i = 0; i < e->n_sets; i++) {
    const unimed_label_set *ls = e->sets[i];
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "name", ls->name);
    cJSON_AddStringToObject(s, "version", ls->version);
    cJSON_AddStringToObject(s, "hash", ls->hash);
    cJSON_AddStringToObject(s, "scoring",
                            ls->scoring == UNIMED_SCORING_BINARY ? "binary" : "softmax");
    cJSON_AddItemToObject(s, "modalities", string_array(ls->modalities, ls->n_modalities));
    cJSON_AddItemToObject(s, "body_parts", string_array(ls->body_parts, ls->n_body_parts));
    cJSON_AddNumberToObject(s, "orthanc_max_per_study", ls->orthanc_max);
    add_validation(e, i, s);
    cJSON *labels = cJSON_AddArrayToObject(s, "labels");
    for (int k = 0; k < ls->n_labels; k++) {
      cJSON *l = cJSON_CreateObject();
      cJSON_AddStringToObject(l, "name", ls->labels[k].name);
      cJSON_AddItemToObject(l, "code", code_json(&ls->labels[k].code));
      if (ls->labels[k].orthanc_label)
        cJSON_AddStringToObject(l, "orthanc_label", ls->labels[k].orthanc_label);
      else
        cJSON_AddNullToObject(l, "orthanc_label");
      cJSON_AddNumberToObject(l, "orthanc_threshold", ls->labels[k].orthanc_threshold);
      cJSON_AddItemToArray(labels, l);
    }
    cJSON_AddItemToArray(sets, s);
  }
  return j;
}

/* ---- one series ---- */

void unimed_series_embedding_free(unimed_series_embedding *w) {
  free(w->frames);
  free(w->tiles);
  free(w->frame_embeddings);
  free(w->embedding);
  memset(w, 0, sizeof *w);
}

/* Whole-slide series: tissue tiles at the target spacing, else the overview. */
static int wsi_inputs(const unimed_config *c, const udcm_series *s, int n_tiles,
                      unimed_series_embedding *w, float **pixels, char *err, size_t errlen) {
  const int S = c->image_size;
  const size_t per = (size_t)3 * S * S;
  uint8_t *tiles = NULL;
  int n = 0;
  w->tiles = calloc((size_t)n_tiles, sizeof *w->tiles);
  w->frames = calloc((size_t)n_tiles, sizeof *w->frames);
  if (!w->tiles || !w->frames) {
    set_err(err, errlen, "series %s: out of memory", s->series_uid);
    return -1;
  }
  if (udcm_wsi_sample_tiles(s, NULL, n_tiles, S, UDCM_WSI_DEFAULT_SPACING_MM, &tiles, &n, w->tiles,
                            err, errlen) != 0)
    return -1;
  *pixels = malloc((size_t)(n > 0 ? n : 1) * per * sizeof(float));
  if (!*pixels) {
    udcm_free(tiles);
    set_err(err, errlen, "series %s: out of memory", s->series_uid);
    return -1;
  }
  if (n == 0) { /* no tissue found: the whole slide, as an overview */
    udcm_free(tiles);
    free(w->tiles);
    w->tiles = NULL;
    int level = udcm_wsi_overview_level(s, S);
    w->frames[0].instance = level >= 0 ? level : 0;
    w->n_frames = 1;
    return udcm_wsi_overview_tensor(s, NULL, S, c->mean, c->std, *pixels, NULL, err, errlen);
  }
  for (int i = 0; i < n; i++) {
    udcm_rgb8_to_tensor(tiles + (size_t)i * S * S * 3, S, c->mean, c->std, *pixels + (size_t)i * per);
    w->frames[i].instance = w->tiles[i].instance;
  }
  w->n_frames = n;
  udcm_free(tiles);
  return 0;
}

int unimed_series_embed(unimed_model *m, const udcm_series *s, int max_slices,
                        unimed_series_embedding *w, char *err, size_t errlen) {
  const unimed_config *c = unimed_model_config(m);
  if (s->is_wsi) {
    int n_tiles = max_slices > UDCM_WSI_DEFAULT_TILES ? max_slices : UDCM_WSI_DEFAULT_TILES;
    float *pixels = NULL;
    memset(w, 0, sizeof *w);
    w->frame_embeddings = malloc((size_t)n_tiles * c->embed_dim * sizeof(float));
    w->embedding = malloc((size_t)c->embed_dim * sizeof(float));
    int rc = -1;
    if (!w->frame_embeddings || !w->embedding)
      set_err(err, errlen, "series %s: out of memory", s->series_uid);
    else if (wsi_inputs(c, s, n_tiles, w, &pixels, err, errlen) == 0 &&
             unimed_encode_images(m, pixels, w->n_frames, w->frame_embeddings, err, errlen) == 0) {
      unimed_prompt_ensemble(w->frame_embeddings, w->n_frames, c->embed_dim, w->embedding);
      rc = 0;
    }
    free(pixels);
    if (rc != 0) unimed_series_embedding_free(w);
    return rc;
  }
  const int S = c->image_size, E = c->embed_dim;
  const size_t per = (size_t)3 * S * S;
  memset(w, 0, sizeof *w);
  w->frames = calloc((size_t)max_slices, sizeof *w->frames);
  float *pixels = malloc((size_t)max_slices * per * sizeof(float));
  w->frame_embeddings = malloc((size_t)max_slices * E * sizeof(float));
  w->embedding = malloc((size_t)E * sizeof(float));
  int rc = -1;
  if (!w->frames || !pixels || !w->frame_embeddings || !w->embedding) {
    set_err(err, errlen, "series %s: out of memory", s->series_uid);
    goto done;
  }
  w->n_frames = udcm_series_pick_frames(s, max_slices, w->frames);
  if (w->n_frames <= 0) {
    set_err(err, errlen, "series %s: no frames to analyse", s->series_uid);
    goto done;
  }
  /* Frames of one instance are decoded through one open handle. */
  udcm_handle *h = NULL;
  int open_instance = -1;
  for (int i = 0; i < w->n_frames; i++) {
    if (w->frames[i].instance != open_instance) {
      udcm_close(h);
      open_instance = w->frames[i].instance;
      h = udcm_instance_open(&s->instances[open_instance], NULL, err, errlen);
      if (!h) goto done;
    }
    if (udcm_frame_tensor(h, w->frames[i].frame, NULL, S, c->mean, c->std,
                          pixels + (size_t)i * per, NULL, err, errlen) != 0) {
      udcm_close(h);
      goto done;
    }
  }
  udcm_close(h);
  if (unimed_encode_images(m, pixels, w->n_frames, w->frame_embeddings, err, errlen) != 0)
    goto done;
  /* Series embedding: mean of the normalised frame embeddings, renormalised
   * (the same arithmetic as a prompt ensemble). */
  unimed_prompt_ensemble(w->frame_embeddings, w->n_frames, E, w->embedding);
  rc = 0;
done:
  free(pixels);
  if (rc != 0) unimed_series_embedding_free(w);
  return rc;
}

/* Label-set probabilities of a series: from the series embedding, or the
 * per-label maximum over its frames. */
static void score_series(const unimed_engine *e, int set, const unimed_series_embedding *w,
                         float *probs) {
  const unimed_label_set *ls = e->sets[set];
  const int E = unimed_model_config(e->model)->embed_dim;
  if (!e->aggregate_max) {
    unimed_label_set_score(e->model, ls, &e->embeddings[set], w->embedding, probs);
    return;
  }
  float *tmp = malloc((size_t)ls->n_labels * sizeof(float));
  for (int k = 0; k < ls->n_labels; k++) probs[k] = 0;
  for (int f = 0; tmp && f < w->n_frames; f++) {
    unimed_label_set_score(e->model, ls, &e->embeddings[set], w->frame_embeddings + (size_t)f * E,
                           tmp);
    for (int k = 0; k < ls->n_labels; k++) probs[k] = tmp[k] > probs[k] ? tmp[k] : probs[k];
  }
  free(tmp);
}

static cJSON *frames_json(const udcm_series *s, const unimed_series_embedding *w) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; i < w->n_frames; i++) {
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "sop_instance", s->instances[w->frames[i].instance].info.sop_instance_uid);
    cJSON_AddNumberToObject(f, "frame", w->frames[i].frame);
    if (w->tiles) {
      cJSON_AddNumberToObject(f, "tile_x", w->tiles[i].x);
      cJSON_AddNumberToObject(f, "tile_y", w->tiles[i].y);
    }
    cJSON_AddItemToArray(a, f);
  }
  return a;
}

/* ---- one study ---- */

static void warn_ignore(void *ctx, const char *message) {
  /* Unreadable files are reported per study in "skipped". */
  cJSON_AddItemToArray((cJSON *)ctx, cJSON_CreateString(message));
}

/* The SR's measurement groups, gathered while the series are scored. */
typedef struct {
  udcm_sr_group *groups;
  int n, cap;
} sr_groups;

static void sr_groups_free(sr_groups *g) {
  for (int i = 0; i < g->n; i++) {
    free((void *)g->groups[i].findings);
    free((void *)g->groups[i].images);
  }
  free(g->groups);
}

/* One group: a label set's findings on one series, with the images used. */
static int sr_add_group(sr_groups *g, const unimed_label_set *ls, const char *warning,
                        const udcm_series *s, const unimed_series_embedding *w,
                        const float *probs) {
  if (g->n == g->cap) {
    int cap = g->cap ? g->cap * 2 : 8;
    udcm_sr_group *grown = realloc(g->groups, (size_t)cap * sizeof *grown);
    if (!grown) return -1;
    g->groups = grown;
    g->cap = cap;
  }
  udcm_sr_finding *f = calloc((size_t)ls->n_labels, sizeof *f);
  udcm_sr_image_ref *im = calloc((size_t)w->n_frames, sizeof *im);
  if (!f || !im) {
    free(f);
    free(im);
    return -1;
  }
  for (int l = 0; l < ls->n_labels; l++) {
    f[l].label = ls->labels[l].name;
    f[l].code.value = ls->labels[l].code.value;
    f[l].code.scheme = ls->labels[l].code.scheme;
    f[l].code.meaning = ls->labels[l].code.meaning;
    f[l].probability = probs[l];
  }
  for (int i = 0; i < w->n_frames; i++) {
    const udcm_info *in = &s->instances[w->frames[i].instance].info;
    im[i].study_uid = in->study_uid;
    im[i].series_uid = in->series_uid;
    im[i].sop_class_uid = in->sop_class_uid;
    im[i].sop_instance_uid = in->sop_instance_uid;
    /* 1-based in the SR; a whole-slide level is referenced whole. */
    im[i].frame = in->frames > 1 && !s->is_wsi ? w->frames[i].frame + 1 : 0;
  }
  udcm_sr_group *grp = &g->groups[g->n++];
  memset(grp, 0, sizeof *grp);
  grp->label_set_name = ls->name;
  grp->label_set_version = ls->version;
  grp->label_set_hash = ls->hash;
  grp->series_uid = s->series_uid;
  grp->findings = f;
  grp->n_findings = (size_t)ls->n_labels;
  grp->images = im;
  grp->n_images = (size_t)w->n_frames;
  grp->comment = warning; /* NULL: listed by the model card, or no card */
  return 0;
}

static int write_report(unimed_engine *e, const udcm_collection *col, const sr_groups *g,
                        int complete, const unimed_sr_version *version, const char *xml_path,
                        unimed_study_result *out) {
  const udcm_instance *source = NULL;
  for (int i = 0; i < col->n_series && !source; i++)
    if (col->series[i].is_image) source = &col->series[i].instances[0];
  /* Every image instance given (analysed or not) is part of the report's
   * identity: a study that gains or loses one gets a new report. */
  int n_inputs = 0;
  for (int i = 0; i < col->n_series; i++)
    if (col->series[i].is_image) n_inputs += col->series[i].n_instances;
  const char **inputs = calloc((size_t)(n_inputs ? n_inputs : 1), sizeof *inputs);
  if (!inputs) {
    snprintf(out->error, sizeof out->error, "out of memory while building the report");
    return -1;
  }
  n_inputs = 0;
  for (int i = 0; i < col->n_series; i++)
    if (col->series[i].is_image)
      for (int k = 0; k < col->series[i].n_instances; k++)
        inputs[n_inputs++] = col->series[i].instances[k].info.sop_instance_uid;
  const unimed_config *c = unimed_model_config(e->model);
  udcm_sr_request req;
  memset(&req, 0, sizeof req);
  if (source->data) {
    req.source_buffer = source->data;
    req.source_len = source->len;
  } else {
    req.source_path = source->path;
  }
  req.model_name = c->name;
  req.model_version = c->version;
  req.model_hash = unimed_model_hash(e->model);
  req.manufacturer = e->manufacturer;
  req.software_version = e->software_version;
  req.groups = g->groups;
  req.n_groups = (size_t)g->n;
  req.complete = complete;
  req.input_sop_instance_uids = inputs;
  req.n_inputs = (size_t)n_inputs;
  if (version) {
    req.instance_number = version->instance_number;
    req.predecessor_series_uid = version->predecessor_series_uid;
    req.predecessor_sop_instance_uid = version->predecessor_sop_instance_uid;
  }
  udcm_sr_write_params to = udcm_sr_write_default_params();
  to.dcm_buf = &out->sr;
  to.dcm_len = &out->sr_len;
  to.xml_path = xml_path;
  to.sop_instance_uid_out = out->sr_sop_instance_uid;
  int rc = udcm_sr_write(&req, &to, out->error, sizeof out->error);
  free(inputs);
  return rc;
}

static int analyze_collection(unimed_engine *e, udcm_collection *col, cJSON *skipped,
                              int write_sr, const unimed_sr_version *version,
                              const char *xml_path, unimed_study_result *out) {
  const int E = unimed_model_config(e->model)->embed_dim;
  const char *study = NULL;
  for (int i = 0; i < col->n_series; i++) {
    if (!study) study = col->series[i].study_uid;
    if (strcmp(study, col->series[i].study_uid) != 0) {
      snprintf(out->error, sizeof out->error,
               "the input holds more than one study (%s and %s); analyse one study at a time",
               study, col->series[i].study_uid);
      cJSON_Delete(skipped);
      return -1;
    }
  }
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "study", study ? study : "");
  cJSON_AddItemToObject(j, "model", model_json(e->model));
  cJSON *series_out = cJSON_AddArrayToObject(j, "series");
  /* Which label sets were applied to some series (each warned about once). */
  char *applied = calloc((size_t)(e->n_sets ? e->n_sets : 1), 1);
  out->series = calloc((size_t)(col->n_series ? col->n_series : 1), sizeof *out->series);
  sr_groups groups = {0};
  int analysed = 0, failed = 0, rc = 0;
  char err[512], first_failure[400] = "";
  for (int i = 0; i < col->n_series; i++) {
    const udcm_series *s = &col->series[i];
    if (!s->is_image) continue; /* SR, presentation states, ... */
    cJSON *sj = cJSON_CreateObject();
    cJSON_AddStringToObject(sj, "series", s->series_uid);
    cJSON_AddStringToObject(sj, "modality", s->modality);
    cJSON_AddStringToObject(sj, "body_part", s->body_part);
    cJSON_AddItemToArray(series_out, sj);
    unimed_series_embedding w;
    if (unimed_series_embed(e->model, s, e->max_slices, &w, err, sizeof err) != 0) {
      cJSON_AddStringToObject(sj, "error", err);
      if (failed == 0)
        snprintf(first_failure, sizeof first_failure, "series %.64s: %.300s", s->series_uid, err);
      failed++;
      continue;
    }
    analysed++;
    cJSON_AddItemToObject(sj, "frames_used", frames_json(s, &w));
    cJSON *sets = cJSON_AddArrayToObject(sj, "label_sets");
    for (int k = 0; k < e->n_sets; k++) {
      const unimed_label_set *ls = e->sets[k];
      if (!unimed_label_set_applies(ls, s->modality, s->body_part, s->sop_class_uid)) continue;
      float *probs = malloc((size_t)ls->n_labels * sizeof(float));
      if (!probs) continue;
      score_series(e, k, &w, probs);
      cJSON *lj = cJSON_CreateObject();
      cJSON_AddStringToObject(lj, "name", ls->name);
      cJSON_AddStringToObject(lj, "version", ls->version);
      cJSON_AddStringToObject(lj, "scoring",
                              ls->scoring == UNIMED_SCORING_BINARY ? "binary" : "softmax");
      if (e->set_warnings[k]) cJSON_AddStringToObject(lj, "warning", e->set_warnings[k]);
      if (applied) applied[k] = 1;
      cJSON *fs = cJSON_AddArrayToObject(lj, "findings");
      for (int l = 0; l < ls->n_labels; l++) {
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "label", ls->labels[l].name);
        cJSON_AddItemToObject(f, "code", code_json(&ls->labels[l].code));
        char buf[32];
        snprintf(buf, sizeof buf, "%.6g", (double)probs[l]);
        cJSON_AddRawToObject(f, "probability", buf);
        cJSON_AddItemToArray(fs, f);
      }
      cJSON_AddItemToArray(sets, lj);
      if (write_sr && sr_add_group(&groups, ls, e->set_warnings[k], s, &w, probs) != 0) rc = -1;
      free(probs);
    }
    unimed_series_result *r = &out->series[out->n_series++];
    snprintf(r->series_uid, sizeof r->series_uid, "%s", s->series_uid);
    snprintf(r->modality, sizeof r->modality, "%s", s->modality);
    r->n_frames = w.n_frames;
    r->embedding = malloc((size_t)E * sizeof(float));
    if (r->embedding) memcpy(r->embedding, w.embedding, (size_t)E * sizeof(float));
    unimed_series_embedding_free(&w);
  }
  /* One line per applied label set that the model card does not list. */
  cJSON *warnings = cJSON_AddArrayToObject(j, "label_set_warnings");
  for (int k = 0; applied && k < e->n_sets; k++) {
    if (!applied[k] || !e->set_warnings[k]) continue;
    cJSON *wj = cJSON_CreateObject();
    cJSON_AddStringToObject(wj, "label_set", e->sets[k]->name);
    cJSON_AddStringToObject(wj, "version", e->sets[k]->version);
    cJSON_AddStringToObject(wj, "warning", e->set_warnings[k]);
    cJSON_AddItemToArray(warnings, wj);
  }
  free(applied);
  out->complete = failed == 0 && cJSON_GetArraySize(skipped) == 0;
  cJSON_AddBoolToObject(j, "complete", out->complete);
  cJSON_AddItemToObject(j, "skipped", skipped);
  out->findings = j;
  if (analysed == 0) {
    /* The decoder's own words travel with the failure (REST, panel, log). */
    if (failed == 1)
      snprintf(out->error, sizeof out->error, "no image series could be analysed: %.400s", first_failure);
    else if (failed > 1)
      snprintf(out->error, sizeof out->error,
               "none of the %d image series could be analysed; the first: %.400s", failed,
               first_failure);
    else if (col->n_series == 0 && cJSON_GetStringValue(cJSON_GetArrayItem(skipped, 0)))
      snprintf(out->error, sizeof out->error, "no DICOM instance could be read (%.400s)",
               cJSON_GetStringValue(cJSON_GetArrayItem(skipped, 0)));
    else
      snprintf(out->error, sizeof out->error, "%s",
               col->n_series == 0 ? "no DICOM instances found" : "the study holds no images");
    rc = -1;
  } else if (rc != 0) {
    snprintf(out->error, sizeof out->error, "out of memory while building the report");
  } else if (write_sr && groups.n > 0) {
    rc = write_report(e, col, &groups, out->complete, version, xml_path, out);
  }
  sr_groups_free(&groups);
  return rc;
}

int unimed_engine_analyze_files(unimed_engine *e, const char *const *paths, int n_paths,
                                int write_sr, const char *xml_path, unimed_study_result *out) {
  memset(out, 0, sizeof *out);
  udcm_collection col;
  cJSON *skipped = cJSON_CreateArray();
  if (udcm_collect(paths, n_paths, &e->limits, warn_ignore, skipped, &col, out->error,
                   sizeof out->error) != 0) {
    cJSON_Delete(skipped);
    return -1;
  }
  int rc = analyze_collection(e, &col, skipped, write_sr, NULL, xml_path, out);
  udcm_collection_free(&col);
  return rc;
}

int unimed_engine_analyze_blobs(unimed_engine *e, const unimed_blob *blobs, int n_blobs,
                                int write_sr, unimed_study_result *out) {
  return unimed_engine_analyze_blobs_version(e, blobs, n_blobs, write_sr, NULL, out);
}

int unimed_engine_analyze_blobs_version(unimed_engine *e, const unimed_blob *blobs, int n_blobs,
                                        int write_sr, const unimed_sr_version *version,
                                        unimed_study_result *out) {
  memset(out, 0, sizeof *out);
  udcm_memory_file *files = calloc((size_t)(n_blobs ? n_blobs : 1), sizeof *files);
  if (!files) {
    snprintf(out->error, sizeof out->error, "out of memory");
    return -1;
  }
  for (int i = 0; i < n_blobs; i++) {
    files[i].name = blobs[i].name;
    files[i].data = blobs[i].data;
    files[i].len = blobs[i].len;
  }
  udcm_collection col;
  cJSON *skipped = cJSON_CreateArray();
  int rc = udcm_collect_memory(files, n_blobs, &e->limits, warn_ignore, skipped, &col, out->error,
                               sizeof out->error);
  free(files);
  if (rc != 0) {
    cJSON_Delete(skipped);
    return -1;
  }
  rc = analyze_collection(e, &col, skipped, write_sr, version, NULL, out);
  udcm_collection_free(&col);
  return rc;
}

void unimed_study_result_free(unimed_study_result *r) {
  cJSON_Delete(r->findings);
  free(r->sr);
  for (int i = 0; i < r->n_series; i++) free(r->series[i].embedding);
  free(r->series);
  memset(r, 0, sizeof *r);
}
