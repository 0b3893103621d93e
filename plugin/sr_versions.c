/* The versions of a study's report: found in Orthanc by their series'
 * Manufacturer (ours), ordered by Instance Number; the superseded ones are
 * removed once their successor is stored (docs/REPORTS.md says why). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orthanc_io.h"
#include "sr_versions.h"

static const char *tag(const cJSON *o, const char *name) {
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(o, "MainDicomTags");
  return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(mt, name));
}

static int by_instance_number_desc(const void *a, const void *b) {
  int x = ((const sr_version_t *)a)->instance_number, y = ((const sr_version_t *)b)->instance_number;
  return x < y ? 1 : x > y ? -1 : 0;
}

int sr_versions_list(const char *study_id, const char *manufacturer, sr_version_t **out) {
  *out = NULL;
  char uri[160];
  int st;
  snprintf(uri, sizeof uri, "/studies/%s/series", study_id);
  cJSON *series = orth_get_json(uri, &st);
  if (!series) return 0;
  int n = 0, cap = 0;
  sr_version_t *v = NULL;
  const cJSON *se;
  cJSON_ArrayForEach(se, series) {
    const char *mod = tag(se, "Modality"), *man = tag(se, "Manufacturer");
    const char *sid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(se, "ID"));
    if (!mod || strcmp(mod, "SR") != 0 || !man || strcmp(man, manufacturer) != 0 || !sid) continue;
    snprintf(uri, sizeof uri, "/series/%s/instances", sid);
    cJSON *inst = orth_get_json(uri, &st);
    const cJSON *it;
    cJSON_ArrayForEach(it, inst) {
      const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "ID"));
      const char *uid = tag(it, "SOPInstanceUID"), *num = tag(it, "InstanceNumber");
      if (!id || !uid) continue;
      if (n == cap) {
        cap = cap ? 2 * cap : 4;
        sr_version_t *g = realloc(v, (size_t)cap * sizeof *g);
        if (!g) break;
        v = g;
      }
      sr_version_t *x = &v[n++];
      snprintf(x->instance_id, sizeof x->instance_id, "%s", id);
      snprintf(x->sop_instance_uid, sizeof x->sop_instance_uid, "%s", uid);
      snprintf(x->series_uid, sizeof x->series_uid, "%s", tag(se, "SeriesInstanceUID") ? tag(se, "SeriesInstanceUID") : "");
      x->instance_number = num ? atoi(num) : 0;
    }
    cJSON_Delete(inst);
  }
  cJSON_Delete(series);
  if (n > 1) qsort(v, (size_t)n, sizeof *v, by_instance_number_desc);
  *out = v;
  return n;
}

int sr_versions_remove_superseded(const sr_version_t *v, int n, const char *keep_uid) {
  int removed = 0;
  for (int i = 0; i < n; i++) {
    if (keep_uid && strcmp(v[i].sop_instance_uid, keep_uid) == 0) continue;
    char uri[160];
    snprintf(uri, sizeof uri, "/instances/%s", v[i].instance_id);
    int st = orth_call(OrthancPluginHttpMethod_Delete, uri, NULL, NULL, 0, NULL, NULL);
    if (st == 200) removed++;
    else log_warning("UniMed: cannot remove the superseded SR %s (HTTP %d)", v[i].instance_id, st);
  }
  return removed;
}
