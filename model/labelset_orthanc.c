/* Label sets, loading: the Orthanc label fields ("orthanc_labels" of the
 * set, "orthanc_label" and "orthanc_threshold" of a label). They are data
 * of the file format, read and checked here; which labels a study gets is
 * decided by the plugin (plugin/labels.c, docs/LABEL_SETS.md "Orthanc
 * labels"). */
#include <stdio.h>
#include <string.h>

#include "labelset_internal.h"

#define LS_ORTHANC_LABEL_MAX 48  /* Orthanc allows 64 characters; the rest is the prefix's */
#define LS_DEFAULT_THRESHOLD 0.5 /* "orthanc_labels"."threshold" */
#define LS_DEFAULT_MAX 3         /* "orthanc_labels"."max_per_study" */

static int orthanc_label_char(int ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '-' || ch == '_';
}

/* The default Orthanc label of a finding: its name in lower case, every run
 * of other characters turned into one '-' ("Pleural effusion" ->
 * "pleural-effusion"); NULL when nothing is left (a name without ASCII
 * letters or digits needs an explicit "orthanc_label"). */
static char *default_orthanc_label(const char *name) {
  char out[LS_ORTHANC_LABEL_MAX + 1];
  size_t n = 0;
  for (const char *p = name; *p && n < LS_ORTHANC_LABEL_MAX; p++) {
    int ch = um_ls_ascii_lower((unsigned char)*p);
    if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_')
      out[n++] = (char)ch;
    else if (n && out[n - 1] != '-')
      out[n++] = '-';
  }
  while (n && out[n - 1] == '-') n--;
  out[n] = 0;
  return n ? strdup(out) : NULL;
}

void um_ls_load_orthanc_labels(um_ls_ctx *c, const cJSON *root, unimed_label_set *ls,
                               double *threshold) {
  /* "orthanc_labels": {"threshold", "max_per_study"}, or false for none. */
  *threshold = LS_DEFAULT_THRESHOLD;
  ls->orthanc_max = LS_DEFAULT_MAX;
  const cJSON *olj = cJSON_GetObjectItemCaseSensitive(root, "orthanc_labels");
  if (!olj || c->failed) return;
  if (cJSON_IsFalse(olj)) {
    ls->orthanc_max = 0;
  } else if (!cJSON_IsObject(olj)) {
    um_ls_fail(c, "orthanc_labels",
               "must be an object {\"threshold\", \"max_per_study\"} or false");
  } else {
    static const char *const okeys[] = {"threshold", "max_per_study", NULL};
    um_ls_check_keys(c, olj, "orthanc_labels", okeys);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(olj, "threshold");
    if (t && !c->failed) *threshold = um_ls_get_probability(c, t, "orthanc_labels.threshold");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(olj, "max_per_study");
    if (m && !c->failed) {
      if (!cJSON_IsNumber(m) || m->valuedouble != (double)(int)m->valuedouble ||
          m->valuedouble < 0 || m->valuedouble > 64)
        um_ls_fail(c, "orthanc_labels.max_per_study", "must be a whole number from 0 to 64");
      else
        ls->orthanc_max = (int)m->valuedouble;
    }
  }
}

void um_ls_load_orthanc_label(um_ls_ctx *c, unimed_label *l, const cJSON *jl, const char *field,
                              int set_enabled, double set_threshold) {
  char f[160];
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(jl, "orthanc_label");
  snprintf(f, sizeof f, "%s.orthanc_label", field);
  l->orthanc_threshold = set_threshold;
  if (cJSON_IsFalse(v) || (!v && !set_enabled)) {
    l->orthanc_label = NULL;
  } else if (v) {
    if (!cJSON_IsString(v) || !v->valuestring[0]) {
      um_ls_fail(c, f, "must be a label name (letters, digits, '-', '_') or false");
      return;
    }
    if (strlen(v->valuestring) > LS_ORTHANC_LABEL_MAX) {
      um_ls_fail(c, f, "\"%s\" is longer than %d characters", v->valuestring,
                 LS_ORTHANC_LABEL_MAX);
      return;
    }
    for (const char *p = v->valuestring; *p; p++)
      if (!orthanc_label_char((unsigned char)*p)) {
        um_ls_fail(c, f, "\"%s\": Orthanc labels allow only letters, digits, '-' and '_'",
                   v->valuestring);
        return;
      }
    l->orthanc_label = strdup(v->valuestring);
    if (!l->orthanc_label) um_ls_oom(c);
  } else {
    l->orthanc_label = default_orthanc_label(l->name);
    if (!l->orthanc_label) {
      um_ls_fail(c, f, "missing: \"%s\" has no letters or digits to name an Orthanc label after "
                       "(give \"orthanc_label\", or false)", l->name);
      return;
    }
  }
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(jl, "orthanc_threshold");
  if (t) {
    snprintf(f, sizeof f, "%s.orthanc_threshold", field);
    l->orthanc_threshold = um_ls_get_probability(c, t, f);
  }
}
