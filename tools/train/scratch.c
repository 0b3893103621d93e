/* Model directories: config and random weights from scratch (the
 * vocabulary comes from unimed_train.h's builder), the model name / version
 * in config.json. */
#include "scratch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "unimed_model.h"
#include "unimed_train.h"

/* ---- config ---- */

/* Writes root (and frees it) to path, indented, with a final newline. */
static int write_json(const char *path, cJSON *root, char *err, size_t errlen) {
  char *text = cJSON_Print(root);
  cJSON_Delete(root);
  FILE *fp = fopen(path, "w");
  if (!fp || !text) {
    unimed_set_err(err, errlen, "%s: %s", path, strerror(errno));
    free(text);
    if (fp) fclose(fp);
    return -1;
  }
  fputs(text, fp);
  fputc('\n', fp);
  free(text);
  if (fclose(fp) != 0) {
    unimed_set_err(err, errlen, "%s: write failed", path);
    return -1;
  }
  return 0;
}

static cJSON *preset(const char *name) {
  const char *small =
      "{\"embed_dim\":32,"
      "\"vision\":{\"image_size\":32,\"patch_size\":8,\"width\":128,\"layers\":2,\"heads\":2,"
      "\"mlp_ratio\":4.0},"
      "\"text\":{\"hidden_size\":64,\"layers\":2,\"heads\":2,\"intermediate_size\":128,"
      "\"max_position_embeddings\":64,\"context_length\":64}}";
  const char *tiny =
      "{\"embed_dim\":16,"
      "\"vision\":{\"image_size\":16,\"patch_size\":8,\"width\":32,\"layers\":1,\"heads\":2,"
      "\"mlp_ratio\":2.0},"
      "\"text\":{\"hidden_size\":32,\"layers\":1,\"heads\":2,\"intermediate_size\":64,"
      "\"max_position_embeddings\":32,\"context_length\":32}}";
  if (!strcmp(name, "small")) return cJSON_Parse(small);
  if (!strcmp(name, "tiny")) return cJSON_Parse(tiny);
  return NULL;
}

static void def_num(cJSON *o, const char *k, double v) {
  if (!cJSON_GetObjectItemCaseSensitive(o, k)) cJSON_AddNumberToObject(o, k, v);
}
static void def_str(cJSON *o, const char *k, const char *v) {
  if (!cJSON_GetObjectItemCaseSensitive(o, k)) cJSON_AddStringToObject(o, k, v);
}
static void set_num(cJSON *o, const char *k, double v) {
  cJSON_DeleteItemFromObjectCaseSensitive(o, k);
  cJSON_AddNumberToObject(o, k, v);
}
static void set_str(cJSON *o, const char *k, const char *v) {
  cJSON_DeleteItemFromObjectCaseSensitive(o, k);
  cJSON_AddStringToObject(o, k, v);
}
static cJSON *obj(cJSON *root, const char *k) {
  cJSON *o = cJSON_GetObjectItemCaseSensitive(root, k);
  if (!cJSON_IsObject(o)) {
    cJSON_DeleteItemFromObjectCaseSensitive(root, k);
    o = cJSON_AddObjectToObject(root, k);
  }
  return o;
}

int ut_write_config(const char *dir, const char *src, int vocab_size, int pad_id,
                    const char *model_name, const char *model_version, char *err,
                    size_t errlen) {
  cJSON *root = preset(src);
  if (!root) {
    FILE *fp = fopen(src, "rb");
    if (!fp) {
      unimed_set_err(err, errlen, "--config %s: not a preset (small, tiny) nor a readable file: %s", src,
              strerror(errno));
      return -1;
    }
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = 0;
    root = cJSON_Parse(buf);
    if (!cJSON_IsObject(root)) {
      cJSON_Delete(root);
      unimed_set_err(err, errlen, "%s: not a JSON object", src);
      return -1;
    }
  }
  if (model_name) set_str(root, "model_name", model_name);
  if (model_version) set_str(root, "model_version", model_version);
  def_str(root, "model_name", "unimed-clip-trained");
  def_str(root, "model_version", "0");
  cJSON *v = obj(root, "vision"), *t = obj(root, "text"), *p = obj(root, "preprocessing");
  def_str(v, "activation", "quick_gelu");
  def_num(v, "layer_norm_eps", 1e-5);
  def_num(v, "mlp_ratio", 4.0);
  set_num(t, "vocab_size", vocab_size);
  set_num(t, "pad_token_id", pad_id);
  def_num(t, "type_vocab_size", 2);
  def_num(t, "layer_norm_eps", 1e-12);
  def_str(t, "pooler", "cls_last_hidden_state");
  def_str(t, "projection", "mlp");
  def_str(t, "hidden_act", "gelu");
  const cJSON *mp = cJSON_GetObjectItemCaseSensitive(t, "max_position_embeddings");
  if (cJSON_IsNumber(mp)) def_num(t, "context_length", mp->valuedouble);
  if (!cJSON_GetObjectItemCaseSensitive(p, "mean")) {
    const double m[3] = {0.48145466, 0.4578275, 0.40821073};
    cJSON_AddItemToObject(p, "mean", cJSON_CreateDoubleArray(m, 3));
  }
  if (!cJSON_GetObjectItemCaseSensitive(p, "std")) {
    const double s[3] = {0.26862954, 0.26130258, 0.27577711};
    cJSON_AddItemToObject(p, "std", cJSON_CreateDoubleArray(s, 3));
  }
  const cJSON *is = cJSON_GetObjectItemCaseSensitive(v, "image_size");
  if (cJSON_IsNumber(is)) set_num(p, "size", is->valuedouble);
  def_str(p, "interpolation", "bicubic");
  def_str(p, "resize", "shortest");
  def_str(p, "crop", "center");
  char path[4096];
  snprintf(path, sizeof path, "%s/config.json", dir);
  if (write_json(path, root, err, errlen) != 0) return -1;
  unimed_config c;
  return unimed_config_load(path, &c, err, errlen); /* validates */
}

int ut_patch_config(const char *dir, const char *name, const char *version) {
  if (!name && !version) return 0;
  char path[2048];
  snprintf(path, sizeof path, "%s/config.json", dir);
  FILE *fp = fopen(path, "rb");
  if (!fp) return -1;
  char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  fclose(fp);
  buf[n] = 0;
  cJSON *root = cJSON_Parse(buf);
  if (!root) return -1;
  if (name) {
    cJSON_DeleteItemFromObjectCaseSensitive(root, "model_name");
    cJSON_AddStringToObject(root, "model_name", name);
  }
  if (version) {
    cJSON_DeleteItemFromObjectCaseSensitive(root, "model_version");
    cJSON_AddStringToObject(root, "model_version", version);
  }
  return write_json(path, root, NULL, 0);
}

/* ---- random weights ---- */

typedef struct {
  uint64_t s;
  int have;
  double spare;
} rng;

static double uniform(rng *r) {
  r->s += 0x9e3779b97f4a7c15ull;
  return ut_unit(ut_hash3(r->s, 0, 0));
}

static double normal(rng *r) {
  if (r->have) {
    r->have = 0;
    return r->spare;
  }
  double u = uniform(r), v = uniform(r);
  if (u < 1e-300) u = 1e-300;
  double m = sqrt(-2.0 * log(u));
  r->spare = m * sin(2 * M_PI * v);
  r->have = 1;
  return m * cos(2 * M_PI * v);
}

typedef struct {
  unimed_named_tensor *t;
  float **data;
  int n, cap;
  rng r;
  int failed;
} wlist;

enum init_kind { I_ZERO, I_ONE, I_NORMAL, I_UNIFORM, I_CONST };

static void T(wlist *w, enum init_kind kind, double a, int ndim, int64_t d0, int64_t d1,
              int64_t d2, int64_t d3, const char *fmt, ...) {
  if (w->failed) return;
  if (w->n == w->cap) {
    int nc = w->cap ? w->cap * 2 : 64;
    unimed_named_tensor *nt = realloc(w->t, (size_t)nc * sizeof *nt);
    float **nd = nt ? realloc(w->data, (size_t)nc * sizeof *nd) : NULL;
    if (nt) w->t = nt;
    if (!nt || !nd) {
      w->failed = 1;
      return;
    }
    w->data = nd;
    w->cap = nc;
  }
  char *name = malloc(112);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, 112, fmt, ap);
  va_end(ap);
  int64_t dims[4] = {d0, d1, d2, d3};
  size_t numel = 1;
  for (int i = 0; i < ndim; i++) numel *= (size_t)dims[i];
  float *x = malloc((numel ? numel : 1) * sizeof(float));
  if (!x) {
    free(name);
    w->failed = 1;
    return;
  }
  for (size_t i = 0; i < numel; i++)
    x[i] = kind == I_ZERO ? 0.0f : kind == I_ONE ? 1.0f : kind == I_CONST ? (float)a
          : kind == I_NORMAL ? (float)(normal(&w->r) * a) : (float)((uniform(&w->r) * 2 - 1) * a);
  unimed_named_tensor *t = &w->t[w->n];
  memset(t, 0, sizeof *t);
  t->name = name;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = dims[i];
  t->data = x;
  w->data[w->n++] = x;
}

int ut_write_random_weights(const char *dir, uint64_t seed, char *err, size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/config.json", dir);
  unimed_config c;
  if (unimed_config_load(path, &c, err, errlen) != 0) return -1;
  wlist w = {0};
  w.r.s = ut_hash3(seed, 0x1417, 0);
  const int64_t D = c.vision.width, P = c.vision.patch_size, G = c.vision.image_size / P;
  const int64_t F = (int64_t)(c.vision.mlp_ratio * c.vision.width + 0.5f), E = c.embed_dim;
  const int L = c.vision.layers;
  const double attn_std = pow((double)D, -0.5), proj_std = attn_std * pow(2.0 * L, -0.5),
               fc_std = pow(2.0 * D, -0.5);
  T(&w, I_UNIFORM, pow(3.0 * P * P, -0.5), 4, D, 3, P, P, "visual.conv1.weight");
  T(&w, I_NORMAL, attn_std, 1, D, 0, 0, 0, "visual.class_embedding");
  T(&w, I_NORMAL, attn_std, 2, G * G + 1, D, 0, 0, "visual.positional_embedding");
  T(&w, I_ONE, 0, 1, D, 0, 0, 0, "visual.ln_pre.weight");
  T(&w, I_ZERO, 0, 1, D, 0, 0, 0, "visual.ln_pre.bias");
  for (int l = 0; l < L; l++) {
    const char *pre = "visual.transformer.resblocks";
    T(&w, I_ONE, 0, 1, D, 0, 0, 0, "%s.%d.ln_1.weight", pre, l);
    T(&w, I_ZERO, 0, 1, D, 0, 0, 0, "%s.%d.ln_1.bias", pre, l);
    T(&w, I_NORMAL, attn_std, 2, 3 * D, D, 0, 0, "%s.%d.attn.in_proj_weight", pre, l);
    T(&w, I_ZERO, 0, 1, 3 * D, 0, 0, 0, "%s.%d.attn.in_proj_bias", pre, l);
    T(&w, I_NORMAL, proj_std, 2, D, D, 0, 0, "%s.%d.attn.out_proj.weight", pre, l);
    T(&w, I_ZERO, 0, 1, D, 0, 0, 0, "%s.%d.attn.out_proj.bias", pre, l);
    T(&w, I_ONE, 0, 1, D, 0, 0, 0, "%s.%d.ln_2.weight", pre, l);
    T(&w, I_ZERO, 0, 1, D, 0, 0, 0, "%s.%d.ln_2.bias", pre, l);
    T(&w, I_NORMAL, fc_std, 2, F, D, 0, 0, "%s.%d.mlp.c_fc.weight", pre, l);
    T(&w, I_ZERO, 0, 1, F, 0, 0, 0, "%s.%d.mlp.c_fc.bias", pre, l);
    T(&w, I_NORMAL, proj_std, 2, D, F, 0, 0, "%s.%d.mlp.c_proj.weight", pre, l);
    T(&w, I_ZERO, 0, 1, D, 0, 0, 0, "%s.%d.mlp.c_proj.bias", pre, l);
  }
  T(&w, I_ONE, 0, 1, D, 0, 0, 0, "visual.ln_post.weight");
  T(&w, I_ZERO, 0, 1, D, 0, 0, 0, "visual.ln_post.bias");
  T(&w, I_NORMAL, attn_std, 2, D, E, 0, 0, "visual.proj");
  const int64_t Dt = c.text.hidden_size, I = c.text.intermediate_size;
  const char *tp = "text_encoder.transformer", *lp = "encoder.layer";
  T(&w, I_NORMAL, 0.02, 2, c.text.vocab_size, Dt, 0, 0, "%s.embeddings.word_embeddings.weight", tp);
  T(&w, I_NORMAL, 0.02, 2, c.text.max_position_embeddings, Dt, 0, 0,
    "%s.embeddings.position_embeddings.weight", tp);
  T(&w, I_NORMAL, 0.02, 2, c.text.type_vocab_size, Dt, 0, 0,
    "%s.embeddings.token_type_embeddings.weight", tp);
  T(&w, I_ONE, 0, 1, Dt, 0, 0, 0, "%s.embeddings.LayerNorm.weight", tp);
  T(&w, I_ZERO, 0, 1, Dt, 0, 0, 0, "%s.embeddings.LayerNorm.bias", tp);
  /* dense layers fan_in^-0.5: BERT's 0.02 makes a tiny text tower map every
   * text to nearly the same point at the start */
  const double sd = pow((double)Dt, -0.5), si = pow((double)I, -0.5);
  for (int l = 0; l < c.text.layers; l++) {
    static const char *const qkv[3] = {"query", "key", "value"};
    for (int k = 0; k < 3; k++) {
      T(&w, I_NORMAL, sd, 2, Dt, Dt, 0, 0, "%s.%s.%d.attention.self.%s.weight", tp, lp, l, qkv[k]);
      T(&w, I_ZERO, 0, 1, Dt, 0, 0, 0, "%s.%s.%d.attention.self.%s.bias", tp, lp, l, qkv[k]);
    }
    T(&w, I_NORMAL, sd, 2, Dt, Dt, 0, 0, "%s.%s.%d.attention.output.dense.weight", tp, lp, l);
    T(&w, I_ZERO, 0, 1, Dt, 0, 0, 0, "%s.%s.%d.attention.output.dense.bias", tp, lp, l);
    T(&w, I_ONE, 0, 1, Dt, 0, 0, 0, "%s.%s.%d.attention.output.LayerNorm.weight", tp, lp, l);
    T(&w, I_ZERO, 0, 1, Dt, 0, 0, 0, "%s.%s.%d.attention.output.LayerNorm.bias", tp, lp, l);
    T(&w, I_NORMAL, sd, 2, I, Dt, 0, 0, "%s.%s.%d.intermediate.dense.weight", tp, lp, l);
    T(&w, I_ZERO, 0, 1, I, 0, 0, 0, "%s.%s.%d.intermediate.dense.bias", tp, lp, l);
    T(&w, I_NORMAL, si, 2, Dt, I, 0, 0, "%s.%s.%d.output.dense.weight", tp, lp, l);
    T(&w, I_ZERO, 0, 1, Dt, 0, 0, 0, "%s.%s.%d.output.dense.bias", tp, lp, l);
    T(&w, I_ONE, 0, 1, Dt, 0, 0, 0, "%s.%s.%d.output.LayerNorm.weight", tp, lp, l);
    T(&w, I_ZERO, 0, 1, Dt, 0, 0, 0, "%s.%s.%d.output.LayerNorm.bias", tp, lp, l);
  }
  const int64_t H2 = (Dt + E) / 2;
  if (c.text.projection == UNIMED_PROJ_MLP) {
    T(&w, I_NORMAL, sd, 2, H2, Dt, 0, 0, "text_encoder.proj.0.weight");
    T(&w, I_NORMAL, pow((double)H2, -0.5), 2, E, H2, 0, 0, "text_encoder.proj.2.weight");
  } else if (c.text.projection == UNIMED_PROJ_LINEAR) {
    T(&w, I_NORMAL, sd, 2, E, Dt, 0, 0, "text_encoder.proj.weight");
  }
  T(&w, I_CONST, log(1 / 0.07), 0, 0, 0, 0, 0, "logit_scale");
  int rc = -1;
  if (w.failed) {
    unimed_set_err(err, errlen, "out of memory for the initial weights");
  } else {
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    rc = unimed_weights_write(path, w.t, w.n, "unimed-train init", err, errlen);
  }
  for (int i = 0; i < w.n; i++) {
    free((void *)w.t[i].name);
    free(w.data[i]);
  }
  free(w.t);
  free(w.data);
  return rc;
}
