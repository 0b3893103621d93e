/* Internal to the label-set module of model/ (model/labelset_*.c): what its
 * files share. The loader's error context and JSON field readers
 * (labelset_fields.c), the checks of codes and of the applies_to values
 * (labelset_codes.c), prompt templates (labelset_prompts.c), the Orthanc
 * label fields (labelset_orthanc.c) and the embedding cache
 * (labelset_cache.c). The public API is unimed_model.h's "label sets"
 * section; nothing here is used outside these files. */
#ifndef UNIMED_LABELSET_INTERNAL_H
#define UNIMED_LABELSET_INTERNAL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "unimed_model.h"

#if defined(__GNUC__)
#define UM_LS_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define UM_LS_PRINTF(f, a)
#endif

/* FNV-1a 64: the label-set hash (over the file's bytes) and the cache
 * file's payload checksum. */
#define UM_LS_FNV_OFFSET 1469598103934665603ULL
static inline uint64_t um_ls_fnv1a(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

/* ---- loading: error context and field readers (labelset_fields.c) ---- */

/* The file being loaded and its first error. */
typedef struct {
  const char *path;
  char *err;
  size_t errlen;
  int failed;
} um_ls_ctx;

/* Records the first error only: "PATH: FIELD: message" ("PATH: message"
 * when field is NULL or ""). */
void um_ls_fail(um_ls_ctx *c, const char *field, const char *fmt, ...) UM_LS_PRINTF(3, 4);
void um_ls_oom(um_ls_ctx *c);
/* Unknown or repeated keys of an object are errors (typo protection);
 * known is NULL-terminated. */
void um_ls_check_keys(um_ls_ctx *c, const cJSON *obj, const char *field,
                      const char *const *known);
/* A required or optional non-blank string member of at most maxlen
 * characters (0 = any); a copy, or NULL when absent or bad. */
char *um_ls_get_string(um_ls_ctx *c, const cJSON *obj, const char *key, const char *field,
                       int required, size_t maxlen);
/* An optional array of non-blank strings (absent = none). */
void um_ls_get_string_array(um_ls_ctx *c, const cJSON *obj, const char *key, const char *field,
                            char ***out, int *n);
/* A number from 0 to 1. */
double um_ls_get_probability(um_ls_ctx *c, const cJSON *v, const char *field);

void um_ls_free_strings(char **v, int n);
int um_ls_ascii_lower(int c);
/* 1 when s is empty or only white space. */
int um_ls_blank(const char *s);
/* Case-insensitive (ASCII) comparison of a and b, ignoring surrounding
 * white space on both. */
int um_ls_same_token(const char *a, const char *b);

/* ---- codes and applies_to values (labelset_codes.c) ---- */

/* A label's "code" object into *code (value, scheme, meaning), with the
 * value checked against its scheme (SNOMED CT check digit, DCM, 99UNIMED). */
void um_ls_check_code(um_ls_ctx *c, const cJSON *obj, const char *field, unimed_code *code);
/* applies_to values as the file format wants them: code strings (uid 0:
 * letters, digits, '_', space, at most 16) or UIDs (uid 1). */
void um_ls_check_applies_values(um_ls_ctx *c, char **v, int n, const char *field, int uid);

/* ---- prompt templates (labelset_prompts.c) ---- */

/* Each template has exactly one "{}". */
void um_ls_check_templates(um_ls_ctx *c, char **t, int n, const char *field);
/* A label's own prompts have none. */
void um_ls_check_own_prompts(um_ls_ctx *c, char **p, int n, const char *field);
/* Prompts from templates: for the name, then for each synonym, every
 * template in order. */
void um_ls_expand(um_ls_ctx *c, char **templates, int n_templates, const char *name, char **syn,
                  int n_syn, char ***out, int *n);

/* ---- Orthanc labels (labelset_orthanc.c) ---- */

/* The set's "orthanc_labels" into ls->orthanc_max and *threshold (the
 * default threshold of its labels). */
void um_ls_load_orthanc_labels(um_ls_ctx *c, const cJSON *root, unimed_label_set *ls,
                               double *threshold);
/* A label's "orthanc_label" and "orthanc_threshold" (l->name is loaded). */
void um_ls_load_orthanc_label(um_ls_ctx *c, unimed_label *l, const cJSON *jl, const char *field,
                              int set_enabled, double set_threshold);

/* ---- embedding cache (labelset_cache.c) ---- */

/* 0 and a filled `out` when the cache file is complete and consistent with
 * the model hash, the label-set hash and the shape; -1 otherwise. */
int um_ls_cache_read(const char *file, const char *model_hash, const char *set_hash, int n_labels,
                     int dim, int binary, unimed_label_embeddings *out);
/* Writes the file (creating dir); best effort: a cache that cannot be
 * written only costs time later. */
void um_ls_cache_write(const char *dir, const char *file, const char *model_hash,
                       const char *set_hash, const unimed_label_embeddings *e);

#endif
