/* The model card: model-card.json in a model directory says what the model
 * is for and which label sets it was validated with (docs/MODEL.md, "Model
 * card"). This file reads and checks it and answers "does the card list
 * this label set?"; the engine turns the answer into warnings.
 *
 * A directory without a card is not an error (nothing is known, nothing is
 * claimed). A card that is there but unreadable or malformed is: its error
 * names the file and the field, like a bad label set. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CARD_FILE "model-card.json"
#define CARD_FORMAT "unimed-model-card/1"
#define CARD_MAX_BYTES (1u << 20) /* a card is a page of text */

typedef struct {
  const char *path;
  char *err;
  size_t errlen;
  int failed;
} card_reader;

static void card_fail(card_reader *r, const char *field, const char *why) {
  if (r->failed) return;
  r->failed = 1;
  if (field)
    unimed_set_err(r->err, r->errlen, "%s: %s: %s", r->path, field, why);
  else
    unimed_set_err(r->err, r->errlen, "%s: %s", r->path, why);
}

static char *dup_or_empty(const char *s) {
  const char *v = s ? s : "";
  size_t n = strlen(v) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, v, n);
  return d;
}

/* An optional string field: its value, "" when absent; NULL (and failed)
 * when present with another type. */
static const char *optional_string(card_reader *r, const cJSON *obj, const char *key,
                                   const char *field) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v) return "";
  if (!cJSON_IsString(v) || !v->valuestring) {
    card_fail(r, field, "must be a string");
    return NULL;
  }
  return v->valuestring;
}

/* A required, non-empty string field. */
static const char *required_string(card_reader *r, const cJSON *obj, const char *key,
                                   const char *field, const char *why_missing) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v) {
    card_fail(r, field, why_missing);
    return NULL;
  }
  if (!cJSON_IsString(v) || !v->valuestring || !v->valuestring[0]) {
    card_fail(r, field, "must be a non-empty string");
    return NULL;
  }
  return v->valuestring;
}

/* The whole file; NULL with *absent = 1 when there is none, NULL with err
 * when it cannot be read. */
static char *read_card_file(card_reader *r, int *absent) {
  *absent = 0;
  FILE *fp = fopen(r->path, "rb");
  if (!fp) {
    if (errno == ENOENT) {
      *absent = 1;
    } else {
      char why[160];
      snprintf(why, sizeof why, "cannot open: %s", strerror(errno));
      card_fail(r, NULL, why);
    }
    return NULL;
  }
  char *buf = malloc(CARD_MAX_BYTES + 1);
  size_t n = buf ? fread(buf, 1, CARD_MAX_BYTES + 1, fp) : 0;
  int read_error = buf && ferror(fp);
  fclose(fp);
  if (!buf) {
    card_fail(r, NULL, "out of memory");
    return NULL;
  }
  if (read_error) card_fail(r, NULL, "read error (is it a directory?)");
  else if (n > CARD_MAX_BYTES) card_fail(r, NULL, "larger than 1 MiB; not a model card");
  else if (memchr(buf, 0, n)) card_fail(r, NULL, "contains a NUL byte; not a JSON text file");
  if (r->failed) {
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  return buf;
}

static int parse_label_sets(card_reader *r, const cJSON *sets, unimed_model_card *c) {
  int n = cJSON_GetArraySize(sets);
  c->label_sets = calloc((size_t)(n > 0 ? n : 1), sizeof *c->label_sets);
  if (!c->label_sets) {
    card_fail(r, NULL, "out of memory");
    return -1;
  }
  int i = 0;
  const cJSON *e;
  cJSON_ArrayForEach(e, sets) {
    char field[64], key[80];
    snprintf(field, sizeof field, "label_sets[%d]", i);
    if (!cJSON_IsObject(e)) {
      card_fail(r, field, "must be an object with the label set's \"name\" and \"version\"");
      return -1;
    }
    snprintf(key, sizeof key, "%s.name", field);
    const char *name = required_string(r, e, "name", key,
                                       "missing (the \"name\" field of the label-set file)");
    snprintf(key, sizeof key, "%s.version", field);
    const char *version = name ? required_string(r, e, "version", key,
                                                 "missing (the \"version\" field of the label-set "
                                                 "file; another version is another question)")
                               : NULL;
    snprintf(key, sizeof key, "%s.question", field);
    const char *question = version ? optional_string(r, e, "question", key) : NULL;
    if (!question) return -1;
    unimed_card_label_set *ls = &c->label_sets[i];
    ls->name = dup_or_empty(name);
    ls->version = dup_or_empty(version);
    ls->question = dup_or_empty(question);
    c->n_label_sets = ++i;
    if (!ls->name || !ls->version || !ls->question) {
      card_fail(r, NULL, "out of memory");
      return -1;
    }
  }
  return 0;
}

int unimed_model_card_load(const char *model_dir, unimed_model_card **out, char *err,
                           size_t errlen) {
  *out = NULL;
  if (!model_dir) {
    unimed_set_err(err, errlen, "no model directory given");
    return -1;
  }
  size_t plen = strlen(model_dir) + sizeof CARD_FILE + 2;
  char *path = malloc(plen);
  if (!path) {
    unimed_set_err(err, errlen, "%s: out of memory", model_dir);
    return -1;
  }
  size_t dlen = strlen(model_dir);
  snprintf(path, plen, "%s%s%s", model_dir, dlen && model_dir[dlen - 1] == '/' ? "" : "/",
           CARD_FILE);
  card_reader r = {path, err, errlen, 0};
  int absent = 0;
  char *text = read_card_file(&r, &absent);
  if (!text) {
    free(path);
    return absent ? 0 : -1;
  }
  cJSON *root = cJSON_Parse(text);
  unimed_model_card *c = calloc(1, sizeof *c);
  if (!c) {
    card_fail(&r, NULL, "out of memory");
  } else if (!root) {
    const char *at = cJSON_GetErrorPtr();
    char why[160];
    snprintf(why, sizeof why, "not valid JSON (near byte %ld)",
             at && at >= text ? (long)(at - text) : 0L);
    card_fail(&r, NULL, why);
  } else if (!cJSON_IsObject(root)) {
    card_fail(&r, NULL, "must be a JSON object");
  } else {
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!fmt)
      card_fail(&r, "format", "missing (\"" CARD_FORMAT "\")");
    else if (!cJSON_IsString(fmt) || !fmt->valuestring)
      card_fail(&r, "format", "must be the string \"" CARD_FORMAT "\"");
    else if (strcmp(fmt->valuestring, CARD_FORMAT) != 0) {
      char why[200];
      snprintf(why, sizeof why, "\"%.80s\" is not a format this build reads (\"" CARD_FORMAT "\")",
               fmt->valuestring);
      card_fail(&r, "format", why);
    }
    const char *name = r.failed ? NULL : optional_string(&r, root, "name", "name");
    const char *version = r.failed ? NULL : optional_string(&r, root, "version", "version");
    const char *hash = r.failed ? NULL : optional_string(&r, root, "model_hash", "model_hash");
    const char *use = r.failed ? NULL : optional_string(&r, root, "intended_use", "intended_use");
    const cJSON *sets = cJSON_GetObjectItemCaseSensitive(root, "label_sets");
    if (!r.failed && !sets)
      card_fail(&r, "label_sets", "missing (the label sets the model was validated with; [] for none)");
    else if (!r.failed && !cJSON_IsArray(sets))
      card_fail(&r, "label_sets", "must be an array of {\"name\", \"version\", ...} objects");
    if (!r.failed) {
      c->path = path;
      path = NULL;
      c->name = dup_or_empty(name);
      c->version = dup_or_empty(version);
      c->model_hash = dup_or_empty(hash);
      c->intended_use = dup_or_empty(use);
      if (!c->name || !c->version || !c->model_hash || !c->intended_use)
        card_fail(&r, NULL, "out of memory");
      else
        parse_label_sets(&r, sets, c);
    }
  }
  cJSON_Delete(root);
  free(text);
  free(path);
  if (r.failed) {
    unimed_model_card_free(c);
    return -1;
  }
  *out = c;
  return 0;
}

void unimed_model_card_free(unimed_model_card *c) {
  if (!c) return;
  for (int i = 0; i < c->n_label_sets; i++) {
    free(c->label_sets[i].name);
    free(c->label_sets[i].version);
    free(c->label_sets[i].question);
  }
  free(c->label_sets);
  free(c->path);
  free(c->name);
  free(c->version);
  free(c->model_hash);
  free(c->intended_use);
  free(c);
}

const unimed_card_label_set *unimed_model_card_find(const unimed_model_card *c, const char *name,
                                                    const char *version) {
  if (!c || !name || !version) return NULL;
  for (int i = 0; i < c->n_label_sets; i++)
    if (strcmp(c->label_sets[i].name, name) == 0 && strcmp(c->label_sets[i].version, version) == 0)
      return &c->label_sets[i];
  return NULL;
}

int unimed_model_card_check(const unimed_model_card *c, const char *model_hash, const char *name,
                            const char *version, char *why, size_t whylen) {
  if (why && whylen) why[0] = 0;
  if (!c) return 0;
  if (c->model_hash[0] && model_hash && strcmp(c->model_hash, model_hash) != 0) {
    unimed_set_err(why, whylen,
               "label set \"%s\" %s is not validated for this model: its model card (" CARD_FILE
               ") was written for other weights (model hash %s; these are %s)",
               name, version, c->model_hash, model_hash);
    return 1;
  }
  if (unimed_model_card_find(c, name, version)) return 0;
  /* Another version of the same set: say which ones the card lists. */
  char others[256] = "";
  size_t off = 0;
  for (int i = 0; i < c->n_label_sets; i++) {
    if (strcmp(c->label_sets[i].name, name) != 0) continue;
    int w = snprintf(others + off, sizeof others - off, "%s%s", off ? ", " : "",
                     c->label_sets[i].version);
    if (w < 0 || (size_t)w >= sizeof others - off) break;
    off += (size_t)w;
  }
  if (off)
    unimed_set_err(why, whylen,
               "label set \"%s\" %s is not validated for this model: its model card (" CARD_FILE
               ") lists \"%s\" in version %s only",
               name, version, name, others);
  else
    unimed_set_err(why, whylen,
               "label set \"%s\" %s is not validated for this model: its model card (" CARD_FILE
               ") does not list it",
               name, version);
  return 1;
}
