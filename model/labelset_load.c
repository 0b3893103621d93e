/* Label sets: loading a file. A label set is a JSON file naming the
 * findings to ask the model about, for which images, with which prompts and
 * codes (docs/LABEL_SETS.md). Loading validates everything — each error is
 * one line naming the file and the field — and expands the prompts, so a
 * loaded set is complete and consumers never re-derive anything. This file
 * reads the file and walks the set and its labels; the parts have their own
 * files (labelset_internal.h lists them). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "labelset_internal.h"

#define LS_MAX_FILE (4u << 20) /* a label set is a small text file */

static char *read_file(um_ls_ctx *c, size_t *len) {
  FILE *fp = fopen(c->path, "rb");
  if (!fp) {
    um_ls_fail(c, NULL, "cannot open: %s", strerror(errno));
    return NULL;
  }
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 8192;
      if (cap > LS_MAX_FILE * 2u) {
        um_ls_fail(c, NULL, "larger than %u MiB; not a label set", LS_MAX_FILE >> 20);
        break;
      }
      char *nb = realloc(buf, cap);
      if (!nb) {
        um_ls_oom(c);
        break;
      }
      buf = nb;
    }
    size_t r = fread(buf + n, 1, 4096, fp);
    n += r;
    if (r < 4096) {
      if (ferror(fp)) um_ls_fail(c, NULL, "read error: %s", strerror(errno));
      break;
    }
  }
  fclose(fp);
  if (!c->failed && n > LS_MAX_FILE)
    um_ls_fail(c, NULL, "larger than %u MiB; not a label set", LS_MAX_FILE >> 20);
  if (c->failed) {
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  *len = n;
  return buf;
}

void unimed_label_set_free(unimed_label_set *ls) {
  if (!ls) return;
  free(ls->path);
  free(ls->name);
  free(ls->version);
  free(ls->description);
  um_ls_free_strings(ls->modalities, ls->n_modalities);
  um_ls_free_strings(ls->body_parts, ls->n_body_parts);
  um_ls_free_strings(ls->sop_classes, ls->n_sop_classes);
  um_ls_free_strings(ls->templates, ls->n_templates);
  for (int i = 0; ls->labels && i < ls->n_labels; i++) {
    unimed_label *l = &ls->labels[i];
    free(l->name);
    free(l->orthanc_label);
    free(l->code.value);
    free(l->code.scheme);
    free(l->code.meaning);
    um_ls_free_strings(l->prompts, l->n_prompts);
    um_ls_free_strings(l->negatives, l->n_negatives);
    um_ls_free_strings(l->synonyms, l->n_synonyms);
  }
  free(ls->labels);
  free(ls);
}

static void load_label(um_ls_ctx *c, unimed_label_set *ls, const cJSON *jl, int i,
                       char **neg_templates, int n_neg_templates, double ls_threshold) {
  unimed_label *l = &ls->labels[i];
  char field[64], f[128];
  snprintf(field, sizeof field, "labels[%d]", i);
  if (!cJSON_IsObject(jl)) {
    um_ls_fail(c, field, "must be an object with at least \"name\" and \"code\"");
    return;
  }
  static const char *const keys[] = {"name",          "code",
                                     "synonyms",      "prompts",
                                     "negative_prompts", "orthanc_label",
                                     "orthanc_threshold", NULL};
  um_ls_check_keys(c, jl, field, keys);
  snprintf(f, sizeof f, "%s.name", field);
  l->name = um_ls_get_string(c, jl, "name", f, 1, 256);
  if (c->failed) return;
  if (strstr(l->name, "{}")) {
    um_ls_fail(c, f, "\"%s\" contains \"{}\"", l->name);
    return;
  }
  for (int j = 0; j < i; j++)
    if (um_ls_same_token(ls->labels[j].name, l->name)) {
      um_ls_fail(c, f, "\"%s\" duplicates labels[%d].name (label names must be unique, "
                       "ignoring case)", l->name, j);
      return;
    }
  snprintf(f, sizeof f, "%s.code", field);
  um_ls_check_code(c, cJSON_GetObjectItemCaseSensitive(jl, "code"), f, &l->code);
  if (c->failed) return;
  um_ls_load_orthanc_label(c, l, jl, field, ls->orthanc_max > 0, ls_threshold);

  snprintf(f, sizeof f, "%s.synonyms", field);
  um_ls_get_string_array(c, jl, "synonyms", f, &l->synonyms, &l->n_synonyms);
  for (int s = 0; s < l->n_synonyms && !c->failed; s++)
    if (strstr(l->synonyms[s], "{}")) {
      snprintf(f, sizeof f, "%s.synonyms[%d]", field, s);
      um_ls_fail(c, f, "\"%s\" contains \"{}\"", l->synonyms[s]);
    }

  /* positives: own prompts, else templates x (name, synonyms) */
  const cJSON *own = cJSON_GetObjectItemCaseSensitive(jl, "prompts");
  snprintf(f, sizeof f, "%s.prompts", field);
  if (own && cJSON_IsArray(own) && cJSON_GetArraySize(own) == 0) {
    um_ls_fail(c, f, "is empty (leave it out to use the templates)");
    return;
  }
  um_ls_get_string_array(c, jl, "prompts", f, &l->prompts, &l->n_prompts);
  um_ls_check_own_prompts(c, l->prompts, l->n_prompts, f);
  if (c->failed) return;
  if (!own) {
    if (ls->n_templates == 0) {
      um_ls_fail(c, field, "no prompts: give the label \"prompts\" or the set \"templates\"");
      return;
    }
    um_ls_expand(c, ls->templates, ls->n_templates, l->name, l->synonyms, l->n_synonyms,
                 &l->prompts, &l->n_prompts);
  }

  /* negatives (binary scoring only) */
  const cJSON *own_neg = cJSON_GetObjectItemCaseSensitive(jl, "negative_prompts");
  snprintf(f, sizeof f, "%s.negative_prompts", field);
  if (own_neg && ls->scoring != UNIMED_SCORING_BINARY) {
    um_ls_fail(c, f, "only used with \"scoring\": \"binary\"");
    return;
  }
  if (own_neg && cJSON_IsArray(own_neg) && cJSON_GetArraySize(own_neg) == 0) {
    um_ls_fail(c, f, "is empty (leave it out to use the negative_templates)");
    return;
  }
  um_ls_get_string_array(c, jl, "negative_prompts", f, &l->negatives, &l->n_negatives);
  um_ls_check_own_prompts(c, l->negatives, l->n_negatives, f);
  if (c->failed) return;
  if (ls->scoring == UNIMED_SCORING_BINARY && !own_neg) {
    if (n_neg_templates == 0) {
      um_ls_fail(c, field, "binary scoring needs negatives: give the label \"negative_prompts\" "
                           "or the set \"negative_templates\"");
      return;
    }
    um_ls_expand(c, neg_templates, n_neg_templates, l->name, l->synonyms, l->n_synonyms,
                 &l->negatives, &l->n_negatives);
  }
}

/* "applies_to": the three lists, kept as the file gives them. */
static void load_applies_to(um_ls_ctx *c, const cJSON *root, unimed_label_set *ls) {
  const cJSON *app = cJSON_GetObjectItemCaseSensitive(root, "applies_to");
  if (!app || c->failed) return;
  if (!cJSON_IsObject(app)) {
    um_ls_fail(c, "applies_to", "must be an object {\"modalities\", \"body_parts\", "
                                "\"sop_classes\"}");
    return;
  }
  static const char *const akeys[] = {"modalities", "body_parts", "sop_classes", NULL};
  um_ls_check_keys(c, app, "applies_to", akeys);
  um_ls_get_string_array(c, app, "modalities", "applies_to.modalities", &ls->modalities,
                         &ls->n_modalities);
  um_ls_check_applies_values(c, ls->modalities, ls->n_modalities, "applies_to.modalities", 0);
  um_ls_get_string_array(c, app, "body_parts", "applies_to.body_parts", &ls->body_parts,
                         &ls->n_body_parts);
  um_ls_check_applies_values(c, ls->body_parts, ls->n_body_parts, "applies_to.body_parts", 0);
  um_ls_get_string_array(c, app, "sop_classes", "applies_to.sop_classes", &ls->sop_classes,
                         &ls->n_sop_classes);
  um_ls_check_applies_values(c, ls->sop_classes, ls->n_sop_classes, "applies_to.sop_classes",
                             1);
}

unimed_label_set *unimed_label_set_load(const char *path, char *err, size_t errlen) {
  um_ls_ctx c = {path ? path : "(null)", err, errlen, 0};
  if (!path) {
    um_ls_fail(&c, NULL, "no label-set path given");
    return NULL;
  }
  size_t len = 0;
  char *text = read_file(&c, &len);
  if (!text) return NULL;
  unimed_label_set *ls = calloc(1, sizeof *ls);
  cJSON *root = NULL;
  char **neg_templates = NULL;
  int n_neg_templates = 0;
  if (!ls) {
    um_ls_oom(&c);
    goto done;
  }
  snprintf(ls->hash, sizeof ls->hash, "%016llx",
           (unsigned long long)um_ls_fnv1a(UM_LS_FNV_OFFSET, text, len));
  ls->path = strdup(path);
  if (!ls->path) {
    um_ls_oom(&c);
    goto done;
  }
  if (strlen(text) != len) {
    um_ls_fail(&c, NULL, "contains a NUL byte; not a JSON text file");
    goto done;
  }
  const char *end = NULL;
  root = cJSON_ParseWithOpts(text, &end, 1);
  if (!root) {
    size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
    int line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
      if (text[i] == '\n') {
        line++;
        col = 1;
      } else {
        col++;
      }
    }
    um_ls_fail(&c, NULL, "malformed JSON near line %d, column %d", line, col);
    goto done;
  }
  if (!cJSON_IsObject(root)) {
    um_ls_fail(&c, NULL, "must be a JSON object");
    goto done;
  }
  static const char *const keys[] = {"name",      "version",   "description",
                                     "applies_to", "scoring",  "templates",
                                     "negative_templates",     "labels",
                                     "orthanc_labels",         NULL};
  um_ls_check_keys(&c, root, "", keys);

  ls->name = um_ls_get_string(&c, root, "name", "name", 1, 64);
  if (ls->name && !c.failed)
    for (const char *p = ls->name; *p; p++)
      if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.')) {
        um_ls_fail(&c, "name", "'%s' must consist of letters, digits, '-', '_' and '.'",
                   ls->name);
        break;
      }
  ls->version = um_ls_get_string(&c, root, "version", "version", 1, 64);
  if (!c.failed) {
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "description");
    if (d && !cJSON_IsString(d))
      um_ls_fail(&c, "description", "must be a string");
    else
      ls->description = strdup(d ? d->valuestring : "");
    if (!c.failed && !ls->description) um_ls_oom(&c);
  }

  load_applies_to(&c, root, ls);

  ls->scoring = UNIMED_SCORING_SOFTMAX;
  const cJSON *sc = cJSON_GetObjectItemCaseSensitive(root, "scoring");
  if (sc && !c.failed) {
    if (cJSON_IsString(sc) && strcmp(sc->valuestring, "softmax") == 0)
      ls->scoring = UNIMED_SCORING_SOFTMAX;
    else if (cJSON_IsString(sc) && strcmp(sc->valuestring, "binary") == 0)
      ls->scoring = UNIMED_SCORING_BINARY;
    else if (cJSON_IsString(sc))
      um_ls_fail(&c, "scoring", "unknown scoring mode '%s' (use \"softmax\" or \"binary\")",
                 sc->valuestring);
    else
      um_ls_fail(&c, "scoring", "must be the string \"softmax\" or \"binary\"");
  }

  const cJSON *tj = cJSON_GetObjectItemCaseSensitive(root, "templates");
  if (tj && cJSON_IsArray(tj) && cJSON_GetArraySize(tj) == 0)
    um_ls_fail(&c, "templates", "is empty (leave it out when every label has its own prompts)");
  um_ls_get_string_array(&c, root, "templates", "templates", &ls->templates, &ls->n_templates);
  um_ls_check_templates(&c, ls->templates, ls->n_templates, "templates");

  const cJSON *ntj = cJSON_GetObjectItemCaseSensitive(root, "negative_templates");
  if (ntj && !c.failed && ls->scoring != UNIMED_SCORING_BINARY)
    um_ls_fail(&c, "negative_templates", "only used with \"scoring\": \"binary\"");
  if (ntj && cJSON_IsArray(ntj) && cJSON_GetArraySize(ntj) == 0)
    um_ls_fail(&c, "negative_templates", "is empty");
  um_ls_get_string_array(&c, root, "negative_templates", "negative_templates", &neg_templates,
                         &n_neg_templates);
  um_ls_check_templates(&c, neg_templates, n_neg_templates, "negative_templates");

  double ls_threshold;
  um_ls_load_orthanc_labels(&c, root, ls, &ls_threshold);

  const cJSON *labels = cJSON_GetObjectItemCaseSensitive(root, "labels");
  if (!c.failed) {
    if (!labels)
      um_ls_fail(&c, "labels", "missing (a non-empty array of labels is required)");
    else if (!cJSON_IsArray(labels))
      um_ls_fail(&c, "labels", "must be an array of label objects");
    else if (cJSON_GetArraySize(labels) == 0)
      um_ls_fail(&c, "labels", "is empty (a label set needs at least one label)");
  }
  if (!c.failed) {
    int n = cJSON_GetArraySize(labels);
    ls->labels = calloc((size_t)n, sizeof(unimed_label));
    if (!ls->labels) {
      um_ls_oom(&c);
      goto done;
    }
    int i = 0;
    for (const cJSON *jl = labels->child; jl && !c.failed; jl = jl->next, i++) {
      ls->n_labels = i + 1;
      load_label(&c, ls, jl, i, neg_templates, n_neg_templates, ls_threshold);
    }
    if (!c.failed && ls->scoring == UNIMED_SCORING_SOFTMAX && ls->n_labels < 2)
      um_ls_fail(&c, "labels", "softmax scoring needs at least 2 labels (use \"binary\" for one)");
  }

done:
  um_ls_free_strings(neg_templates, n_neg_templates);
  cJSON_Delete(root);
  free(text);
  if (c.failed) {
    unimed_label_set_free(ls);
    return NULL;
  }
  return ls;
}
