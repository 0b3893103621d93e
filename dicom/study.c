/* From files to model inputs: collecting DICOM files (folders walked
 * recursively) into series, ordering a series' frames and picking the ones
 * the model sees, and turning one frame into the model's tensor. */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "resample.h"
#include "series.h"
#include "unimed_dicom.h"

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

int udcm_frame_tensor(udcm_handle *h, uint32_t frame, const udcm_pipeline_opts *opts, int size,
                      const float mean[3], const float std[3], float *out, uint8_t *rgb_out,
                      char *err, size_t errlen) {
  uint8_t *rgb = NULL;
  int w = 0, hh = 0;
  if (udcm_frame_rgb8(h, frame, opts, &rgb, &w, &hh, err, errlen) != 0) return -1;
  uint8_t *crop = rgb_out ? rgb_out : malloc((size_t)size * size * 3);
  int rc = -1;
  if (!crop) {
    set_err(err, errlen, "out of memory");
  } else if (um_resize_shorter_crop_rgb8(rgb, w, hh, size, crop) != 0) {
    set_err(err, errlen, "cannot resize a %dx%d frame to %d", w, hh, size);
  } else {
    um_rgb8_to_chw_normalized(crop, size, mean, std, out);
    rc = 0;
  }
  if (crop != rgb_out) free(crop);
  udcm_free(rgb);
  return rc;
}

void udcm_rgb8_to_tensor(const uint8_t *rgb, int size, const float mean[3], const float std[3],
                         float *out) {
  um_rgb8_to_chw_normalized(rgb, size, mean, std, out);
}

/* ---- collecting files into series ---- */

typedef struct {
  const udcm_limits *limits;
  udcm_collect_warn warn;
  void *ctx;
  udcm_collection *out;
  int depth;
} collector;

static void warnf(collector *c, const char *fmt, ...) {
  if (!c->warn) return;
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  c->warn(c->ctx, msg);
}

static udcm_series *find_or_add_series(udcm_collection *col, const udcm_info *info) {
  for (int i = 0; i < col->n_series; i++)
    if (strcmp(col->series[i].series_uid, info->series_uid) == 0 &&
        strcmp(col->series[i].study_uid, info->study_uid) == 0)
      return &col->series[i];
  udcm_series *grown = realloc(col->series, (size_t)(col->n_series + 1) * sizeof *grown);
  if (!grown) return NULL;
  col->series = grown;
  udcm_series *s = &col->series[col->n_series++];
  memset(s, 0, sizeof *s);
  snprintf(s->study_uid, sizeof s->study_uid, "%s", info->study_uid);
  snprintf(s->series_uid, sizeof s->series_uid, "%s", info->series_uid);
  snprintf(s->modality, sizeof s->modality, "%s", info->modality);
  snprintf(s->body_part, sizeof s->body_part, "%s", info->body_part_examined);
  snprintf(s->sop_class_uid, sizeof s->sop_class_uid, "%s", info->sop_class_uid);
  snprintf(s->series_description, sizeof s->series_description, "%s", info->series_description);
  s->series_number = info->has_series_number ? info->series_number : 0;
  return s;
}

/* Adds one instance, read from `path` or, when data is set, from memory. */
static int add_instance(collector *c, const char *path, const void *data, size_t len) {
  char err[512];
  c->out->n_files++;
  udcm_handle *h = data ? udcm_open_memory(data, len, path, c->limits, err, sizeof err)
                        : udcm_open_file(path, c->limits, err, sizeof err);
  if (!h) {
    c->out->n_skipped++;
    warnf(c, "skipped %s", err);
    return 0;
  }
  udcm_info info;
  udcm_get_info(h, &info);
  udcm_close(h);
  udcm_series *s = find_or_add_series(c->out, &info);
  if (!s) return -1;
  udcm_instance *grown = realloc(s->instances, (size_t)(s->n_instances + 1) * sizeof *grown);
  if (!grown) return -1;
  s->instances = grown;
  udcm_instance *inst = &s->instances[s->n_instances++];
  inst->path = strdup(path);
  inst->data = data;
  inst->len = len;
  inst->info = info;
  if (!inst->path) return -1;
  if (info.is_image) s->is_image = 1;
  if (info.is_wsi) s->is_wsi = 1;
  return 0;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walks a folder in name order (deterministic across file systems). */
static int add_path(collector *c, const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) {
    c->out->n_files++;
    c->out->n_skipped++;
    warnf(c, "skipped %s: %s", path, strerror(errno));
    return 0;
  }
  if (!S_ISDIR(st.st_mode)) return S_ISREG(st.st_mode) ? add_instance(c, path, NULL, 0) : 0;
  if (c->depth > 32) {
    warnf(c, "skipped %s: folders nested deeper than 32", path);
    return 0;
  }
  DIR *d = opendir(path);
  if (!d) {
    warnf(c, "skipped %s: %s", path, strerror(errno));
    return 0;
  }
  char **names = NULL;
  size_t n = 0;
  struct dirent *e;
  int rc = 0;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue; /* ., .., hidden files */
    char **g = realloc(names, (n + 1) * sizeof *g);
    if (!g || !(g[n] = strdup(e->d_name))) {
      names = g ? g : names;
      rc = -1;
      break;
    }
    names = g;
    n++;
  }
  closedir(d);
  qsort(names, n, sizeof *names, compare_names);
  c->depth++;
  for (size_t i = 0; i < n && rc == 0; i++) {
    size_t len = strlen(path) + strlen(names[i]) + 2;
    char *child = malloc(len);
    if (!child) {
      rc = -1;
      break;
    }
    snprintf(child, len, "%s/%s", path, names[i]);
    rc = add_path(c, child);
    free(child);
  }
  c->depth--;
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  return rc;
}

int udcm_collect(const char *const *paths, int n_paths, const udcm_limits *limits,
                 udcm_collect_warn warn, void *ctx, udcm_collection *out, char *err,
                 size_t errlen) {
  memset(out, 0, sizeof *out);
  collector c = {limits, warn, ctx, out, 0};
  for (int i = 0; i < n_paths; i++)
    if (add_path(&c, paths[i]) != 0) {
      set_err(err, errlen, "%s: out of memory while collecting files", paths[i]);
      udcm_collection_free(out);
      return -1;
    }
  return 0;
}

int udcm_collect_memory(const udcm_memory_file *files, int n_files, const udcm_limits *limits,
                        udcm_collect_warn warn, void *ctx, udcm_collection *out, char *err,
                        size_t errlen) {
  memset(out, 0, sizeof *out);
  collector c = {limits, warn, ctx, out, 0};
  for (int i = 0; i < n_files; i++) {
    const char *name = files[i].name ? files[i].name : "<memory>";
    if (add_instance(&c, name, files[i].data, files[i].len) != 0) {
      set_err(err, errlen, "%s: out of memory while collecting instances", name);
      udcm_collection_free(out);
      return -1;
    }
  }
  return 0;
}

udcm_handle *udcm_instance_open(const udcm_instance *inst, const udcm_limits *limits, char *err,
                                size_t errlen) {
  return inst->data ? udcm_open_memory(inst->data, inst->len, inst->path, limits, err, errlen)
                    : udcm_open_file(inst->path, limits, err, errlen);
}

void udcm_collection_free(udcm_collection *col) {
  for (int i = 0; i < col->n_series; i++) {
    for (int j = 0; j < col->series[i].n_instances; j++) free(col->series[i].instances[j].path);
    free(col->series[i].instances);
  }
  free(col->series);
  memset(col, 0, sizeof *col);
}

/* ---- frames of a series ---- */

int udcm_series_pick_frames(const udcm_series *s, int max_frames, udcm_frame_ref *out) {
  if (max_frames <= 0 || s->n_instances <= 0) return 0;
  /* Image instances ordered along the slice normal (or by InstanceNumber). */
  size_t n = (size_t)s->n_instances;
  um_slice_info *slices = calloc(n, sizeof *slices);
  size_t *order = calloc(n, sizeof *order);
  if (!slices || !order) {
    free(slices);
    free(order);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    const udcm_info *in = &s->instances[i].info;
    slices[i].has_position = in->has_image_position;
    memcpy(slices[i].position, in->image_position, sizeof slices[i].position);
    slices[i].has_orientation = in->has_image_orientation;
    memcpy(slices[i].orientation, in->image_orientation, sizeof slices[i].orientation);
    slices[i].has_instance_number = in->has_instance_number;
    slices[i].instance_number = in->instance_number;
  }
  if (um_series_order(slices, n, order) < 0)
    for (size_t i = 0; i < n; i++) order[i] = i;
  free(slices);
  /* Every frame of every image instance, in that order. */
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    if (s->instances[order[i]].info.is_image) total += (size_t)s->instances[order[i]].info.frames;
  udcm_frame_ref *all = calloc(total ? total : 1, sizeof *all);
  size_t *pick = calloc((size_t)max_frames, sizeof *pick);
  if (!all || !pick) {
    free(order);
    free(all);
    free(pick);
    return -1;
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const udcm_info *in = &s->instances[order[i]].info;
    if (!in->is_image) continue;
    for (int f = 0; f < in->frames; f++) {
      all[k].instance = (int)order[i];
      all[k].frame = (uint32_t)f;
      k++;
    }
  }
  size_t chosen = um_series_select(total, (size_t)max_frames, pick);
  for (size_t i = 0; i < chosen; i++) out[i] = all[pick[i]];
  free(order);
  free(all);
  free(pick);
  return (int)chosen;
}
