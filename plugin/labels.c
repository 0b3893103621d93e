/* UniMed for Orthanc — the findings of a study as Orthanc labels (Orthanc
 * >= 1.12), beside the UniMedFindings metadata that every version gets.
 *
 * Whether the running Orthanc has labels is asked at run time (/system's
 * "HasLabels", Orthanc 1.12.0 on), and labels are read and written through
 * Orthanc's REST API, so one plugin binary, built against Debian 12's SDK
 * headers, loads on 1.10 (no labels) and on 1.12 (labels).
 *
 * Ours are the labels that start with the configured prefix ("LabelPrefix",
 * default "unimed-"): re-analysis sets the ones the new findings call for and
 * removes our stale ones, and never touches any other label. A study whose
 * analysis failed, or that has no image to analyse, carries none of ours;
 * Orthanc removes every label of a deleted study itself. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "labels.h"
#include "plugin_internal.h"

#define LABEL_MAX_LEN 64 /* Orthanc's limit on a label's length */
#define PREFIX_MAX_LEN (LABEL_MAX_LEN - 48) /* label sets keep names to 48 */

static int labels_wanted = 1;          /* "UniMed"."Labels" */
static char prefix[PREFIX_MAX_LEN + 1] = "unimed-";
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static int orthanc_has_labels;

static int label_char(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

int labels_configure(const cJSON *section, char *err, size_t n) {
  labels_wanted = 1;
  snprintf(prefix, sizeof prefix, "%s", "unimed-");
  const cJSON *on = cJSON_GetObjectItemCaseSensitive(section, "Labels");
  if (on) {
    if (!cJSON_IsBool(on)) {
      snprintf(err, n, "%s", "\"UniMed\".\"Labels\" must be true or false");
      return -1;
    }
    labels_wanted = cJSON_IsTrue(on);
  }
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(section, "LabelPrefix");
  if (p) {
    const char *v = cJSON_GetStringValue(p);
    size_t len = v ? strlen(v) : 0;
    int ok = v && len >= 1 && len <= PREFIX_MAX_LEN;
    for (size_t i = 0; ok && i < len; i++) ok = label_char((unsigned char)v[i]);
    if (!ok) {
      snprintf(err, n,
               "\"UniMed\".\"LabelPrefix\" must be 1 to %d letters, digits, '-' or '_' "
               "(the characters Orthanc allows in a label), e.g. \"unimed-\"",
               PREFIX_MAX_LEN);
      return -1;
    }
    snprintf(prefix, sizeof prefix, "%s", v);
  }
  return 0;
}

static void probe(void) {
  int st = 0;
  cJSON *sys = orth_get_json("/system", &st);
  orthanc_has_labels = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sys, "HasLabels"));
  const char *version = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(sys, "Version"));
  log_info("UniMed: Orthanc %s %s labels; findings become labels: %s", version ? version : "?",
           orthanc_has_labels ? "has" : "has no",
           orthanc_has_labels && labels_wanted ? prefix : "no");
  cJSON_Delete(sys);
}

int labels_active(void) {
  if (!labels_wanted) return 0;
  pthread_once(&probe_once, probe);
  return orthanc_has_labels;
}

const char *labels_prefix(void) { return prefix; }

/* ---- from findings to label names ---- */

typedef struct {
  const char *name; /* without the prefix */
  double p;
} candidate_t;

static int by_probability(const void *a, const void *b) {
  const candidate_t *x = a, *y = b;
  if (x->p != y->p) return x->p < y->p ? 1 : -1;
  if (!x->name || !y->name) return !x->name - !y->name; /* nameless ones never become labels */
  return strcmp(x->name, y->name);
}

static const cJSON *find_named(const cJSON *array, const char *key, const char *name) {
  const cJSON *it;
  cJSON_ArrayForEach(it, array) {
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, key));
    if (v && name && strcmp(v, name) == 0) return it;
  }
  return NULL;
}

/* A finding's probability: a number when read back from Orthanc, raw JSON
 * text (written with the digits that round-trip) when fresh from the
 * engine; -1 when absent. */
static double probability(const cJSON *p) {
  if (cJSON_IsNumber(p)) return p->valuedouble;
  if (cJSON_IsRaw(p) && p->valuestring) {
    char *end = NULL;
    double v = strtod(p->valuestring, &end);
    if (end && end != p->valuestring && *end == 0) return v;
  }
  return -1;
}

/* Adds to wanted (up to cap names, deduplicated) the labels of one label set:
 * its findings at or above their thresholds, the most probable first, at
 * most the set's "max_per_study"; a finding's probability is its highest
 * over the study's series. */
static void set_labels(const cJSON *set_rule, const cJSON *findings, const char **wanted, int *n,
                       int cap) {
  const char *set_name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(set_rule, "name"));
  const cJSON *rules = cJSON_GetObjectItemCaseSensitive(set_rule, "labels");
  const cJSON *max = cJSON_GetObjectItemCaseSensitive(set_rule, "orthanc_max_per_study");
  int n_rules = cJSON_GetArraySize(rules);
  if (!set_name || n_rules <= 0 || !cJSON_IsNumber(max) || max->valueint <= 0) return;
  candidate_t *c = calloc((size_t)n_rules, sizeof *c);
  if (!c) return;
  int k = 0;
  const cJSON *rule;
  cJSON_ArrayForEach(rule, rules) {
    c[k].name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rule, "orthanc_label"));
    c[k].p = -1;
    const char *label = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rule, "name"));
    const cJSON *series;
    cJSON_ArrayForEach(series, cJSON_GetObjectItemCaseSensitive(findings, "series")) {
      const cJSON *ls = find_named(cJSON_GetObjectItemCaseSensitive(series, "label_sets"), "name",
                                   set_name);
      const cJSON *f = find_named(cJSON_GetObjectItemCaseSensitive(ls, "findings"), "label", label);
      double p = probability(cJSON_GetObjectItemCaseSensitive(f, "probability"));
      if (p > c[k].p) c[k].p = p;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rule, "orthanc_threshold");
    if (!c[k].name || !cJSON_IsNumber(t) || c[k].p < t->valuedouble) c[k].p = -1;
    k++;
  }
  qsort(c, (size_t)n_rules, sizeof *c, by_probability);
  for (int i = 0, taken = 0; i < n_rules && taken < max->valueint && c[i].p >= 0; i++) {
    int dup = 0;
    for (int j = 0; j < *n && !dup; j++) dup = strcmp(wanted[j], c[i].name) == 0;
    if (dup) continue; /* another label of this set already set it */
    taken++;
    if (*n < cap) wanted[(*n)++] = c[i].name;
  }
  free(c);
}

/* ---- applying them ---- */

static int label_call(OrthancPluginHttpMethod method, const char *study, const char *label) {
  char uri[160];
  snprintf(uri, sizeof uri, "/studies/%s/labels/%s", study, label);
  return orth_call(method, uri, NULL, "", 0, NULL, NULL);
}

int labels_update(const char *study, const cJSON *findings) {
  if (!labels_active()) return 0;
  enum { CAP = 256 };
  const char *wanted[CAP];
  int n_wanted = 0;
  if (findings) {
    const cJSON *set_rule;
    cJSON_ArrayForEach(set_rule, cJSON_GetObjectItemCaseSensitive(g.describe, "label_sets"))
      set_labels(set_rule, findings, wanted, &n_wanted, CAP);
  }
  char uri[128];
  snprintf(uri, sizeof uri, "/studies/%s/labels", study);
  int st = 0;
  cJSON *current = orth_get_json(uri, &st);
  if (!cJSON_IsArray(current)) {
    cJSON_Delete(current);
    if (st != 404) log_warning("UniMed: study %s: GET %s answered HTTP %d", study, uri, st);
    return st == 404 ? 0 : -1; /* 404: deleted meanwhile, so no labels either */
  }
  size_t plen = strlen(prefix);
  int rc = 0;
  /* Stale ones of ours first, then the missing ones. */
  const cJSON *it;
  cJSON_ArrayForEach(it, current) {
    const char *l = cJSON_GetStringValue(it);
    if (!l || strncmp(l, prefix, plen) != 0) continue; /* not ours */
    int keep = 0;
    for (int i = 0; i < n_wanted && !keep; i++) keep = strcmp(l + plen, wanted[i]) == 0;
    if (keep) continue;
    st = label_call(OrthancPluginHttpMethod_Delete, study, l);
    if (st != 200 && st != 404) {
      log_warning("UniMed: study %s: removing label %s answered HTTP %d", study, l, st);
      rc = -1;
    }
  }
  for (int i = 0; i < n_wanted; i++) {
    char full[LABEL_MAX_LEN + 1];
    snprintf(full, sizeof full, "%s%s", prefix, wanted[i]);
    int have = 0;
    cJSON_ArrayForEach(it, current) {
      const char *l = cJSON_GetStringValue(it);
      if (l && strcmp(l, full) == 0) have = 1;
    }
    if (have) continue;
    st = label_call(OrthancPluginHttpMethod_Put, study, full);
    if (st != 200 && st != 404) {
      log_warning("UniMed: study %s: setting label %s answered HTTP %d", study, full, st);
      rc = -1;
    }
  }
  cJSON_Delete(current);
  return rc;
}
