/* The model object: loading a model directory (config.json,
 * model.safetensors, vocab.txt), binding every tensor by its upstream name
 * with its expected shape, and the public encode / scoring API. */
#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ---- binding tensors ---- */

typedef struct {
  unimed_model *m;
  const char *file;
  char *err;
  size_t errlen;
  int failed;
} binder;

/* Returns the tensor `name` as float32 with exactly the given shape. F32
 * data that is 4-byte aligned is used in place (mmapped, not copied); other
 * dtypes are converted into an owned copy. */
static const float *bind(binder *b, const char *name, int ndim, ...) {
  if (b->failed) return NULL;
  const st_tensor *t = st_find(&b->m->st, name);
  if (!t) {
    set_err(b->err, b->errlen, "%s: missing tensor '%s'", b->file, name);
    b->failed = 1;
    return NULL;
  }
  int64_t want[ST_MAX_DIMS];
  va_list ap;
  va_start(ap, ndim);
  for (int i = 0; i < ndim; i++) want[i] = va_arg(ap, int64_t);
  va_end(ap);
  int same = t->ndim == ndim;
  for (int i = 0; same && i < ndim; i++) same = t->shape[i] == want[i];
  if (!same) {
    char got[128] = "", exp[128] = "";
    for (int i = 0; i < t->ndim; i++)
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "",
               (long long)t->shape[i]);
    for (int i = 0; i < ndim; i++)
      snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", i ? "," : "",
               (long long)want[i]);
    set_err(b->err, b->errlen,
            "%s: tensor '%s' has shape [%s] but config.json implies [%s]", b->file, name,
            got, exp);
    b->failed = 1;
    return NULL;
  }
  if (t->dtype == ST_F32 && ((uintptr_t)t->data & 3) == 0) return t->data;
  if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64) {
    set_err(b->err, b->errlen, "%s: tensor '%s' has dtype %s; a float type is needed", b->file,
            name, st_dtype_name(t->dtype));
    b->failed = 1;
    return NULL;
  }
  unimed_model *m = b->m;
  float *copy = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
  if (!copy || (m->n_owned == m->cap_owned && (m->cap_owned = m->cap_owned ? m->cap_owned * 2 : 64,
                                              !(m->owned = realloc(m->owned, (size_t)m->cap_owned * sizeof *m->owned))))) {
    free(copy);
    set_err(b->err, b->errlen, "%s: out of memory converting '%s'", b->file, name);
    b->failed = 1;
    return NULL;
  }
  st_to_f32(t, copy);
  m->owned[m->n_owned++] = copy;
  return copy;
}

#define I64(x) ((int64_t)(x))

static void bind_vision(binder *b) {
  unimed_model *m = b->m;
  const unimed_config *c = &m->cfg;
  const int64_t D = c->vision.width, P = c->vision.patch_size;
  const int64_t G = c->vision.image_size / P, F = (int64_t)(c->vision.mlp_ratio * D + 0.5f);
  vit_weights *w = &m->vit;
  w->conv1_w = bind(b, "visual.conv1.weight", 4, D, I64(3), P, P);
  w->class_emb = bind(b, "visual.class_embedding", 1, D);
  w->pos_emb = bind(b, "visual.positional_embedding", 2, G * G + 1, D);
  w->ln_pre_w = bind(b, "visual.ln_pre.weight", 1, D);
  w->ln_pre_b = bind(b, "visual.ln_pre.bias", 1, D);
  w->ln_post_w = bind(b, "visual.ln_post.weight", 1, D);
  w->ln_post_b = bind(b, "visual.ln_post.bias", 1, D);
  w->proj = bind(b, "visual.proj", 2, D, I64(c->embed_dim));
  w->blocks = calloc((size_t)c->vision.layers, sizeof *w->blocks);
  if (!w->blocks) {
    set_err(b->err, b->errlen, "out of memory");
    b->failed = 1;
    return;
  }
  char n[160];
#define VB(field, suffix, ...)                                                   \
  (snprintf(n, sizeof n, "visual.transformer.resblocks.%d.%s", l, suffix),        \
   bw->field = bind(b, n, __VA_ARGS__))
  for (int l = 0; l < c->vision.layers && !b->failed; l++) {
    vit_block_weights *bw = &w->blocks[l];
    VB(ln_1_w, "ln_1.weight", 1, D);
    VB(ln_1_b, "ln_1.bias", 1, D);
    VB(in_proj_w, "attn.in_proj_weight", 2, 3 * D, D);
    VB(in_proj_b, "attn.in_proj_bias", 1, 3 * D);
    VB(out_proj_w, "attn.out_proj.weight", 2, D, D);
    VB(out_proj_b, "attn.out_proj.bias", 1, D);
    VB(ln_2_w, "ln_2.weight", 1, D);
    VB(ln_2_b, "ln_2.bias", 1, D);
    VB(fc_w, "mlp.c_fc.weight", 2, F, D);
    VB(fc_b, "mlp.c_fc.bias", 1, F);
    VB(cproj_w, "mlp.c_proj.weight", 2, D, F);
    VB(cproj_b, "mlp.c_proj.bias", 1, D);
  }
#undef VB
  /* A checkpoint with more blocks than the config is a config mismatch. */
  snprintf(n, sizeof n, "visual.transformer.resblocks.%d.ln_1.weight", c->vision.layers);
  if (!b->failed && st_find(&m->st, n)) {
    set_err(b->err, b->errlen, "%s: tensor '%s' exists but config.json says vision.layers = %d",
            b->file, n, c->vision.layers);
    b->failed = 1;
  }
}

static void bind_text(binder *b) {
  unimed_model *m = b->m;
  const unimed_config *c = &m->cfg;
  const int64_t D = c->text.hidden_size, FF = c->text.intermediate_size, E = c->embed_dim;
  bert_weights *w = &m->bert;
  const char *pre = "text_encoder.transformer.";
  char n[200];
#define TB(dst, suffix, ...) \
  (snprintf(n, sizeof n, "%s%s", pre, suffix), dst = bind(b, n, __VA_ARGS__))
  TB(w->word_emb, "embeddings.word_embeddings.weight", 2, I64(c->text.vocab_size), D);
  TB(w->pos_emb, "embeddings.position_embeddings.weight", 2,
     I64(c->text.max_position_embeddings), D);
  TB(w->type_emb, "embeddings.token_type_embeddings.weight", 2, I64(c->text.type_vocab_size), D);
  TB(w->emb_ln_w, "embeddings.LayerNorm.weight", 1, D);
  TB(w->emb_ln_b, "embeddings.LayerNorm.bias", 1, D);
#undef TB
  w->layers = calloc((size_t)c->text.layers, sizeof *w->layers);
  if (!w->layers) {
    set_err(b->err, b->errlen, "out of memory");
    b->failed = 1;
    return;
  }
#define LB(dst, suffix, ...)                                                        \
  (snprintf(n, sizeof n, "%sencoder.layer.%d.%s", pre, l, suffix),                  \
   lw->dst = bind(b, n, __VA_ARGS__))
  for (int l = 0; l < c->text.layers && !b->failed; l++) {
    bert_layer_weights *lw = &w->layers[l];
    LB(q_w, "attention.self.query.weight", 2, D, D);
    LB(q_b, "attention.self.query.bias", 1, D);
    LB(k_w, "attention.self.key.weight", 2, D, D);
    LB(k_b, "attention.self.key.bias", 1, D);
    LB(v_w, "attention.self.value.weight", 2, D, D);
    LB(v_b, "attention.self.value.bias", 1, D);
    LB(attn_out_w, "attention.output.dense.weight", 2, D, D);
    LB(attn_out_b, "attention.output.dense.bias", 1, D);
    LB(attn_ln_w, "attention.output.LayerNorm.weight", 1, D);
    LB(attn_ln_b, "attention.output.LayerNorm.bias", 1, D);
    LB(inter_w, "intermediate.dense.weight", 2, FF, D);
    LB(inter_b, "intermediate.dense.bias", 1, FF);
    LB(out_w, "output.dense.weight", 2, D, FF);
    LB(out_b, "output.dense.bias", 1, D);
    LB(out_ln_w, "output.LayerNorm.weight", 1, D);
    LB(out_ln_b, "output.LayerNorm.bias", 1, D);
  }
#undef LB
  snprintf(n, sizeof n, "%sencoder.layer.%d.output.dense.weight", pre, c->text.layers);
  if (!b->failed && st_find(&m->st, n)) {
    set_err(b->err, b->errlen, "%s: tensor '%s' exists but config.json says text.layers = %d",
            b->file, n, c->text.layers);
    b->failed = 1;
  }
  switch (c->text.projection) {
  case UNIMED_PROJ_MLP:
    w->proj0 = bind(b, "text_encoder.proj.0.weight", 2, (D + E) / 2, D);
    w->proj2 = bind(b, "text_encoder.proj.2.weight", 2, E, (D + E) / 2);
    break;
  case UNIMED_PROJ_LINEAR:
    w->proj = bind(b, "text_encoder.proj.weight", 2, E, D);
    break;
  case UNIMED_PROJ_NONE:
    break;
  }
}

/* FNV-1a over the config text, the safetensors header and a sample of every
 * tensor's bytes: cheap, and changes whenever training changes the weights. */
static void compute_hash(unimed_model *m, const char *config_path) {
  uint64_t h = 1469598103934665603ULL;
#define FNV(ptr, len)                                              \
  for (size_t i_ = 0; i_ < (size_t)(len); i_++) {                  \
    h ^= ((const unsigned char *)(ptr))[i_];                       \
    h *= 1099511628211ULL;                                         \
  }
  FILE *fp = fopen(config_path, "rb");
  if (fp) {
    unsigned char buf[4096];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, fp)) > 0) FNV(buf, r);
    fclose(fp);
  }
  for (int i = 0; i < m->st.count; i++) {
    const st_tensor *t = &m->st.tensors[i];
    FNV(t->name, strlen(t->name));
    FNV(t->shape, sizeof(int64_t) * (size_t)t->ndim);
    size_t n = t->nbytes < 256 ? t->nbytes : 256;
    FNV(t->data, n);
    FNV((const unsigned char *)t->data + t->nbytes - n, n);
    FNV((const unsigned char *)t->data + t->nbytes / 2 - n / 2, n);
  }
#undef FNV
  snprintf(m->hash, sizeof m->hash, "%016llx", (unsigned long long)h);
}

unimed_model *unimed_model_load(const char *dir, char *err, size_t errlen) {
  unimed_model *m = calloc(1, sizeof *m);
  if (!m) {
    set_err(err, errlen, "%s: out of memory", dir);
    return NULL;
  }
  snprintf(m->dir, sizeof m->dir, "%s", dir);
  char path[1200];
  snprintf(path, sizeof path, "%s/config.json", dir);
  if (um_config_load(path, &m->cfg, err, errlen) != 0) goto fail;
  char cfg_path[1200];
  snprintf(cfg_path, sizeof cfg_path, "%s", path);

  snprintf(path, sizeof path, "%s/vocab.txt", dir);
  m->vocab = um_vocab_load(path, err, errlen);
  if (!m->vocab) goto fail;
  if (um_vocab_size(m->vocab) > m->cfg.text.vocab_size) {
    set_err(err, errlen, "%s: %d tokens but config.json says text.vocab_size = %d", path,
            um_vocab_size(m->vocab), m->cfg.text.vocab_size);
    goto fail;
  }

  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  if (st_open(&m->st, path, err, errlen) != 0) goto fail;
  binder b = {m, path, err, errlen, 0};
  bind_vision(&b);
  bind_text(&b);
  const float *ls = bind(&b, "logit_scale", 0);
  if (b.failed) goto fail;
  m->logit_scale = ls[0];
  compute_hash(m, cfg_path);
  return m;
fail:
  unimed_model_free(m);
  return NULL;
}

void unimed_model_free(unimed_model *m) {
  if (!m) return;
  for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
  free(m->owned);
  free(m->vit.blocks);
  free(m->bert.layers);
  st_close(&m->st);
  um_vocab_free(m->vocab);
  free(m->ws);
  free(m);
}

const unimed_config *unimed_model_config(const unimed_model *m) { return &m->cfg; }
const char *unimed_model_hash(const unimed_model *m) { return m->hash; }
float unimed_model_logit_scale(const unimed_model *m) { return m->logit_scale; }

int um_workspace(unimed_model *m, size_t n, char *err, size_t errlen) {
  if (n <= m->ws_floats) return 0;
  free(m->ws);
  m->ws = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
  if (!m->ws) {
    m->ws_floats = 0;
    set_err(err, errlen, "out of memory for a %zu MiB workspace", n * sizeof(float) >> 20);
    return -1;
  }
  m->ws_floats = n;
  return 0;
}

int unimed_tokenize(const unimed_model *m, const char *text, int *ids, int max_ids, char *err,
                    size_t errlen) {
  return um_tokenize(m->vocab, text, max_ids, ids, err, errlen);
}

void unimed_l2_normalize(float *v, int dim) {
  double s = 0;
  for (int i = 0; i < dim; i++) s += (double)v[i] * v[i];
  if (s <= 0) return;
  float inv = (float)(1.0 / sqrt(s));
  for (int i = 0; i < dim; i++) v[i] *= inv;
}

int unimed_encode_images(unimed_model *m, const float *pixels, int n, float *out, char *err,
                         size_t errlen) {
  if (n <= 0) {
    set_err(err, errlen, "no images to encode");
    return -1;
  }
  if (um_workspace(m, um_vit_workspace_floats(&m->cfg, n), err, errlen) != 0) return -1;
  um_vit_forward(m, pixels, n, out);
  for (int i = 0; i < n; i++) unimed_l2_normalize(out + (size_t)i * m->cfg.embed_dim, m->cfg.embed_dim);
  return 0;
}

int unimed_encode_token_ids(unimed_model *m, const int *const *ids, const int *lens, int n,
                            float *out, char *err, size_t errlen) {
  if (n <= 0) {
    set_err(err, errlen, "no texts to encode");
    return -1;
  }
  int total = 0, maxlen = 0;
  for (int s = 0; s < n; s++) {
    if (lens[s] < 1 || lens[s] > m->cfg.text.max_position_embeddings) {
      set_err(err, errlen, "text %d: %d tokens (must be 1..%d)", s, lens[s],
              m->cfg.text.max_position_embeddings);
      return -1;
    }
    for (int p = 0; p < lens[s]; p++)
      if (ids[s][p] < 0 || ids[s][p] >= m->cfg.text.vocab_size) {
        set_err(err, errlen, "text %d: token id %d outside the vocabulary (0..%d)", s,
                ids[s][p], m->cfg.text.vocab_size - 1);
        return -1;
      }
    total += lens[s];
    maxlen = lens[s] > maxlen ? lens[s] : maxlen;
  }
  if (um_workspace(m, um_bert_workspace_floats(&m->cfg, n, total, maxlen), err, errlen) != 0)
    return -1;
  um_bert_forward(m, ids, lens, n, out);
  for (int i = 0; i < n; i++) unimed_l2_normalize(out + (size_t)i * m->cfg.embed_dim, m->cfg.embed_dim);
  return 0;
}

int unimed_encode_texts(unimed_model *m, const char *const *texts, int n, float *out, char *err,
                        size_t errlen) {
  if (n <= 0) {
    set_err(err, errlen, "no texts to encode");
    return -1;
  }
  const int ctx = m->cfg.text.context_length;
  int *buf = malloc((size_t)n * ctx * sizeof(int));
  int *lens = malloc((size_t)n * sizeof(int));
  const int **rows = malloc((size_t)n * sizeof(int *));
  int rc = -1;
  if (!buf || !lens || !rows) {
    set_err(err, errlen, "out of memory");
    goto done;
  }
  for (int i = 0; i < n; i++) {
    rows[i] = buf + (size_t)i * ctx;
    lens[i] = um_tokenize(m->vocab, texts[i], ctx, buf + (size_t)i * ctx, err, errlen);
    if (lens[i] < 0) goto done;
    if (lens[i] <= 2) {
      set_err(err, errlen, "text %d is empty after cleaning; give words to embed", i);
      goto done;
    }
  }
  rc = unimed_encode_token_ids(m, rows, lens, n, out, err, errlen);
done:
  free(buf);
  free(lens);
  free(rows);
  return rc;
}

void unimed_prompt_ensemble(const float *prompt_embeddings, int n_prompts, int dim, float *out) {
  memset(out, 0, (size_t)dim * sizeof(float));
  float *tmp = malloc((size_t)dim * sizeof(float));
  if (!tmp) return;
  for (int p = 0; p < n_prompts; p++) {
    memcpy(tmp, prompt_embeddings + (size_t)p * dim, (size_t)dim * sizeof(float));
    unimed_l2_normalize(tmp, dim);
    for (int i = 0; i < dim; i++) out[i] += tmp[i];
  }
  free(tmp);
  for (int i = 0; i < dim && n_prompts > 0; i++) out[i] /= (float)n_prompts;
  unimed_l2_normalize(out, dim);
}

void unimed_zero_shot(const unimed_model *m, const float *image_embeddings, int n_images,
                      const float *class_embeddings, int n_classes, float *probs) {
  const int E = m->cfg.embed_dim;
  const float scale = expf(m->logit_scale);
  for (int i = 0; i < n_images; i++) {
    float *row = probs + (size_t)i * n_classes;
    for (int c = 0; c < n_classes; c++) {
      double dot = 0;
      for (int d = 0; d < E; d++)
        dot += (double)image_embeddings[(size_t)i * E + d] * class_embeddings[(size_t)c * E + d];
      row[c] = scale * (float)dot;
    }
    um_softmax_rows(row, 1, n_classes);
  }
}

void unimed_set_threads(int n) {
  if (n > 0) openblas_set_num_threads(n);
}

const char *unimed_blas_corename(void) { return openblas_get_corename(); }
