/* config.json of a model directory: parsed with cJSON and checked for
 * consistency before any weight is touched. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Reads a whole small file; NULL with err on failure. */
static char *read_text_file(const char *path, char *err, size_t errlen) {
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    unimed_set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 8192;
      if (cap > (16u << 20)) {
        unimed_set_err(err, errlen, "%s: larger than 16 MiB, not a config file", path);
        free(buf);
        fclose(fp);
        return NULL;
      }
      char *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(fp);
        unimed_set_err(err, errlen, "%s: out of memory", path);
        return NULL;
      }
      buf = nb;
    }
    size_t r = fread(buf + len, 1, 4096, fp);
    len += r;
    if (r < 4096) break;
  }
  fclose(fp);
  buf[len] = 0;
  return buf;
}

typedef struct {
  const char *path;
  const char *section;
  char *err;
  size_t errlen;
  int failed;
} reader;

static const cJSON *field(reader *r, const cJSON *obj, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v && !r->failed) {
    unimed_set_err(r->err, r->errlen, "%s: missing field %s.%s", r->path, r->section, key);
    r->failed = 1;
  }
  return v;
}

static int get_int(reader *r, const cJSON *obj, const char *key, int lo, int hi) {
  const cJSON *v = field(r, obj, key);
  if (!v || r->failed) return 0;
  if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
      v->valuedouble > hi) {
    unimed_set_err(r->err, r->errlen, "%s: field %s.%s must be an integer in [%d, %d]", r->path,
            r->section, key, lo, hi);
    r->failed = 1;
    return 0;
  }
  return (int)v->valuedouble;
}

static double get_num(reader *r, const cJSON *obj, const char *key, double lo, double hi) {
  const cJSON *v = field(r, obj, key);
  if (!v || r->failed) return 0;
  if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi)) {
    unimed_set_err(r->err, r->errlen, "%s: field %s.%s must be a number in [%g, %g]", r->path,
            r->section, key, lo, hi);
    r->failed = 1;
    return 0;
  }
  return v->valuedouble;
}

/* One of `choices` (NULL-terminated); returns its index. */
static int get_choice(reader *r, const cJSON *obj, const char *key, const char *const *choices) {
  const cJSON *v = field(r, obj, key);
  if (!v || r->failed) return 0;
  if (cJSON_IsString(v))
    for (int i = 0; choices[i]; i++)
      if (strcmp(v->valuestring, choices[i]) == 0) return i;
  char list[256] = "";
  for (int i = 0; choices[i]; i++) {
    strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
    strncat(list, choices[i], sizeof list - strlen(list) - 1);
  }
  unimed_set_err(r->err, r->errlen, "%s: field %s.%s must be one of: %s", r->path, r->section, key,
          list);
  r->failed = 1;
  return 0;
}

static void get_vec3(reader *r, const cJSON *obj, const char *key, float out[3], double lo,
                     double hi) {
  const cJSON *v = field(r, obj, key);
  if (!v || r->failed) return;
  if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 3) {
    unimed_set_err(r->err, r->errlen, "%s: field %s.%s must be an array of 3 numbers", r->path,
            r->section, key);
    r->failed = 1;
    return;
  }
  for (int i = 0; i < 3; i++) {
    const cJSON *e = cJSON_GetArrayItem(v, i);
    if (!cJSON_IsNumber(e) || !(e->valuedouble >= lo && e->valuedouble <= hi)) {
      unimed_set_err(r->err, r->errlen, "%s: field %s.%s[%d] must be a number in [%g, %g]", r->path,
              r->section, key, i, lo, hi);
      r->failed = 1;
      return;
    }
    out[i] = (float)e->valuedouble;
  }
}

static const cJSON *section(reader *r, const cJSON *root, const char *key) {
  r->section = "(top)";
  const cJSON *s = field(r, root, key);
  if (s && !cJSON_IsObject(s) && !r->failed) {
    unimed_set_err(r->err, r->errlen, "%s: field %s must be an object", r->path, key);
    r->failed = 1;
  }
  r->section = key;
  return s;
}

int unimed_config_load(const char *path, unimed_config *cfg, char *err, size_t errlen) {
  memset(cfg, 0, sizeof *cfg);
  char *text = read_text_file(path, err, errlen);
  if (!text) return -1;
  cJSON *root = cJSON_Parse(text);
  free(text);
  if (!cJSON_IsObject(root)) {
    unimed_set_err(err, errlen, "%s: not valid JSON (a JSON object is expected)", path);
    cJSON_Delete(root);
    return -1;
  }
  reader r = {path, "(top)", err, errlen, 0};
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "model_name");
  const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "model_version");
  snprintf(cfg->name, sizeof cfg->name, "%s", cJSON_IsString(name) ? name->valuestring : "unnamed");
  snprintf(cfg->version, sizeof cfg->version, "%s", cJSON_IsString(ver) ? ver->valuestring : "0");
  cfg->embed_dim = get_int(&r, root, "embed_dim", 1, 65536);

  static const char *const acts[] = {"quick_gelu", "gelu", NULL};
  static const char *const projs[] = {"mlp", "linear", "none", NULL};
  static const char *const poolers[] = {"cls_last_hidden_state", NULL};
  static const char *const interps[] = {"bicubic", NULL};

  const cJSON *v = section(&r, root, "vision");
  unimed_vision_config *vc = &cfg->vision;
  vc->image_size = get_int(&r, v, "image_size", 1, 8192);
  vc->patch_size = get_int(&r, v, "patch_size", 1, 1024);
  vc->width = get_int(&r, v, "width", 1, 65536);
  vc->layers = get_int(&r, v, "layers", 1, 1024);
  vc->heads = get_int(&r, v, "heads", 1, 1024);
  vc->mlp_ratio = (float)get_num(&r, v, "mlp_ratio", 0.01, 64);
  vc->activation = (enum unimed_activation)get_choice(&r, v, "activation", acts);
  vc->layer_norm_eps = cJSON_GetObjectItem(v, "layer_norm_eps")
                           ? (float)get_num(&r, v, "layer_norm_eps", 0, 1)
                           : 1e-5f;

  const cJSON *t = section(&r, root, "text");
  unimed_text_config *tc = &cfg->text;
  tc->vocab_size = get_int(&r, t, "vocab_size", 1, 10000000);
  tc->hidden_size = get_int(&r, t, "hidden_size", 1, 65536);
  tc->layers = get_int(&r, t, "layers", 1, 1024);
  tc->heads = get_int(&r, t, "heads", 1, 1024);
  tc->intermediate_size = get_int(&r, t, "intermediate_size", 1, 1 << 20);
  tc->max_position_embeddings = get_int(&r, t, "max_position_embeddings", 2, 1 << 20);
  tc->type_vocab_size = get_int(&r, t, "type_vocab_size", 1, 1024);
  tc->layer_norm_eps = (float)get_num(&r, t, "layer_norm_eps", 0, 1);
  tc->pad_token_id = get_int(&r, t, "pad_token_id", 0, 10000000);
  tc->context_length = get_int(&r, t, "context_length", 2, 1 << 20);
  (void)get_choice(&r, t, "pooler", poolers);
  tc->projection = (enum unimed_projection)get_choice(&r, t, "projection", projs);
  if (cJSON_GetObjectItem(t, "hidden_act")) {
    static const char *const bert_acts[] = {"gelu", NULL};
    (void)get_choice(&r, t, "hidden_act", bert_acts);
  }

  const cJSON *p = section(&r, root, "preprocessing");
  get_vec3(&r, p, "mean", cfg->mean, -10, 10);
  get_vec3(&r, p, "std", cfg->std, 1e-6, 10);
  cfg->image_size = get_int(&r, p, "size", 1, 8192);
  if (cJSON_GetObjectItem(p, "interpolation")) (void)get_choice(&r, p, "interpolation", interps);
  cJSON_Delete(root);
  if (r.failed) return -1;

  /* Cross-field consistency. */
  if (vc->image_size % vc->patch_size != 0) {
    unimed_set_err(err, errlen, "%s: vision.image_size %d is not a multiple of vision.patch_size %d",
            path, vc->image_size, vc->patch_size);
    return -1;
  }
  if (vc->width % vc->heads != 0) {
    unimed_set_err(err, errlen, "%s: vision.width %d is not divisible by vision.heads %d", path,
            vc->width, vc->heads);
    return -1;
  }
  if (tc->hidden_size % tc->heads != 0) {
    unimed_set_err(err, errlen, "%s: text.hidden_size %d is not divisible by text.heads %d", path,
            tc->hidden_size, tc->heads);
    return -1;
  }
  if (tc->context_length > tc->max_position_embeddings) {
    unimed_set_err(err, errlen,
            "%s: text.context_length %d exceeds text.max_position_embeddings %d", path,
            tc->context_length, tc->max_position_embeddings);
    return -1;
  }
  if (cfg->image_size != vc->image_size) {
    unimed_set_err(err, errlen, "%s: preprocessing.size %d differs from vision.image_size %d", path,
            cfg->image_size, vc->image_size);
    return -1;
  }
  if (tc->projection == UNIMED_PROJ_NONE && tc->hidden_size != cfg->embed_dim) {
    unimed_set_err(err, errlen, "%s: text.projection none needs text.hidden_size == embed_dim", path);
    return -1;
  }
  return 0;
}
