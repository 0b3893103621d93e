/* The model object: loading a model directory (config.json,
 * model.safetensors, vocab.txt), binding every tensor by its upstream name
 * with its expected shape, and the public encode / scoring API. */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* ---- binding tensors ---- */

typedef struct {
  unimed_model *m;
  const char *file;
  char *err;
  size_t errlen;
  int failed;
  int shared; /* BF16/INT8 mode, weights already packed by another model
                 object: packed tensors are only checked */
} binder;

/* Finds tensor `name` and checks it has exactly the shape want[0..ndim). */
static const st_tensor *lookup(binder *b, const char *name, int ndim, const int64_t *want) {
  if (b->failed) return NULL;
  const st_tensor *t = st_find(&b->m->st, name);
  if (!t) {
    unimed_set_err(b->err, b->errlen, "%s: missing tensor '%s'", b->file, name);
    b->failed = 1;
    return NULL;
  }
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
    unimed_set_err(b->err, b->errlen,
            "%s: tensor '%s' has shape [%s] but config.json implies [%s]", b->file, name,
            got, exp);
    b->failed = 1;
    return NULL;
  }
  if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64) {
    unimed_set_err(b->err, b->errlen, "%s: tensor '%s' has dtype %s; a float type is needed", b->file,
            name, st_dtype_name(t->dtype));
    b->failed = 1;
    return NULL;
  }
  return t;
}

static int in_place(const st_tensor *t) {
  return t->dtype == ST_F32 && ((uintptr_t)t->data & 3) == 0;
}

/* Keeps p (malloc'd, bytes long) until the model is freed. */
static int own(unimed_model *m, float *p, size_t bytes) {
  if (m->n_owned == m->cap_owned) {
    int cap = m->cap_owned ? m->cap_owned * 2 : 64;
    float **o = realloc(m->owned, (size_t)cap * sizeof *o);
    if (!o) return -1;
    m->owned = o;
    m->cap_owned = cap;
  }
  m->owned[m->n_owned++] = p;
  m->owned_bytes += bytes;
  return 0;
}

/* t as float32: in place (F32, 4-byte aligned; *tmp = NULL) or converted into
 * a malloc'd copy returned in *tmp too. NULL with the binder failed. */
static const float *f32_view(binder *b, const st_tensor *t, float **tmp) {
  *tmp = NULL;
  if (in_place(t)) return t->data;
  *tmp = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
  if (!*tmp) {
    unimed_set_err(b->err, b->errlen, "%s: out of memory converting '%s'", b->file, t->name);
    b->failed = 1;
    return NULL;
  }
  st_to_f32(t, *tmp);
  return *tmp;
}

/* Returns the tensor `name` as float32 with exactly the given shape. F32
 * data that is 4-byte aligned is used in place (mmapped, not copied); other
 * dtypes are converted into an owned copy. */
static const float *bind(binder *b, const char *name, int ndim, ...) {
  int64_t want[ST_MAX_DIMS];
  va_list ap;
  va_start(ap, ndim);
  for (int i = 0; i < ndim; i++) want[i] = va_arg(ap, int64_t);
  va_end(ap);
  const st_tensor *t = lookup(b, name, ndim, want);
  if (!t) return NULL;
  float *copy;
  const float *v = f32_view(b, t, &copy);
  if (copy && own(b->m, copy, (size_t)t->numel * sizeof(float)) != 0) {
    free(copy);
    unimed_set_err(b->err, b->errlen, "%s: out of memory converting '%s'", b->file, name);
    b->failed = 1;
    return NULL;
  }
  return v;
}

/* BF16/INT8 mode: the file's pages of a packed tensor are not needed any more.
 * Dropping them keeps them out of the resident set (the mapping is private
 * and never written: a later read would fetch them from the file again). */
static void drop_pages(const unimed_model *m, const void *p, size_t n) {
  if (!m->st.map || n == 0) return;
  const uintptr_t ps = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t lo = ((uintptr_t)p + ps - 1) & ~(ps - 1), hi = ((uintptr_t)p + n) & ~(ps - 1);
  if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static um_bf16_weight *pack(binder *b, const char *name, const float *W, int N, int K) {
  um_bf16_weight *w = um_bf16_pack(W, N, K);
  if (!w) {
    unimed_set_err(b->err, b->errlen, "%s: out of memory packing '%s' as BF16", b->file, name);
    b->failed = 1;
    return NULL;
  }
  b->m->w16->bytes += um_bf16_bytes(w);
  return w;
}

static um_i8_weight *pack8(binder *b, const char *name, const float *W, int N, int K) {
  um_i8_weight *w = um_i8_pack(W, N, K);
  if (!w) {
    unimed_set_err(b->err, b->errlen, "%s: out of memory quantizing '%s' as INT8", b->file, name);
    b->failed = 1;
    return NULL;
  }
  b->m->w16->bytes += um_i8_bytes(w);
  return w;
}

/* BF16/INT8 mode: the linear weight `name` of the given shape, packed into
 * *dst as [N = shape[0], K = the other dims' product] (nn.Linear / conv
 * layout), or with transposed = 1 a 2-D [K, N] tensor (visual.proj). In INT8
 * mode a layer given a dst8 is quantized into *dst8 instead. */
static void bind_packed(binder *b, um_bf16_weight **dst, um_i8_weight **dst8, const char *name,
                        int transposed, int ndim, ...) {
  int64_t want[ST_MAX_DIMS];
  va_list ap;
  va_start(ap, ndim);
  for (int i = 0; i < ndim; i++) want[i] = va_arg(ap, int64_t);
  va_end(ap);
  const st_tensor *t = lookup(b, name, ndim, want);
  if (!t || b->shared) return;
  int64_t N = want[0], K = 1;
  for (int i = 1; i < ndim; i++) K *= want[i];
  if (transposed) N = want[1], K = want[0];
  float *tmp, *tr = NULL;
  const float *W = f32_view(b, t, &tmp);
  if (!W) return;
  if (transposed) {
    tr = malloc((size_t)(N * K) * sizeof(float));
    if (!tr) {
      free(tmp);
      unimed_set_err(b->err, b->errlen, "%s: out of memory transposing '%s'", b->file, name);
      b->failed = 1;
      return;
    }
    for (int64_t k = 0; k < K; k++)
      for (int64_t n = 0; n < N; n++) tr[n * K + k] = W[k * N + n];
    W = tr;
  }
  if (dst8 && b->m->int8)
    *dst8 = pack8(b, name, W, (int)N, (int)K);
  else
    *dst = pack(b, name, W, (int)N, (int)K);
  free(tr);
  free(tmp);
  drop_pages(b->m, t->data, t->nbytes);
}

/* BF16/INT8 mode: BERT's query, key and value weights [D, D] stacked into
 * one packed [3D, D] (INT8 in INT8 mode), and their biases into one owned
 * [3D]. */
static void bind_qkv(binder *b, const char *prefix, int64_t D, bert_layer_bf16 *out) {
  static const char *const parts[3] = {"query", "key", "value"};
  char name[256];
  float *W = NULL, *bias = NULL;
  if (b->failed) return;
  if (b->shared) {
    for (int p = 0; p < 3; p++) {
      const int64_t shape[2] = {D, D};
      snprintf(name, sizeof name, "%sattention.self.%s.weight", prefix, parts[p]);
      lookup(b, name, 2, shape);
      snprintf(name, sizeof name, "%sattention.self.%s.bias", prefix, parts[p]);
      bind(b, name, 1, D);
    }
    return;
  }
  W = malloc((size_t)(3 * D * D) * sizeof(float));
  bias = malloc((size_t)(3 * D) * sizeof(float));
  if (!W || !bias) {
    unimed_set_err(b->err, b->errlen, "%s: out of memory", b->file);
    b->failed = 1;
    goto done;
  }
  for (int p = 0; p < 3 && !b->failed; p++) {
    const int64_t shape[2] = {D, D};
    snprintf(name, sizeof name, "%sattention.self.%s.weight", prefix, parts[p]);
    const st_tensor *t = lookup(b, name, 2, shape);
    float *tmp;
    const float *v = t ? f32_view(b, t, &tmp) : NULL;
    if (!v) break;
    memcpy(W + (size_t)(p * D * D), v, (size_t)(D * D) * sizeof(float));
    free(tmp);
    drop_pages(b->m, t->data, t->nbytes);
    snprintf(name, sizeof name, "%sattention.self.%s.bias", prefix, parts[p]);
    const float *bv = bind(b, name, 1, D);
    if (bv) memcpy(bias + p * D, bv, (size_t)D * sizeof(float));
  }
  if (b->failed) goto done;
  snprintf(name, sizeof name, "%sattention.self.query|key|value.weight", prefix);
  if (b->m->int8_text)
    out->qkv8 = pack8(b, name, W, (int)(3 * D), (int)D);
  else
    out->qkv = pack(b, name, W, (int)(3 * D), (int)D);
  if (b->failed) goto done;
  out->qkv_b = bias;
  b->m->w16->bytes += (size_t)(3 * D) * sizeof(float);
  bias = NULL;
done:
  free(W);
  free(bias);
}

#define I64(x) ((int64_t)(x))

static void bind_vision(binder *b) {
  unimed_model *m = b->m;
  const unimed_config *c = &m->cfg;
  const int64_t D = c->vision.width, P = c->vision.patch_size;
  const int64_t G = c->vision.image_size / P, F = (int64_t)(c->vision.mlp_ratio * D + 0.5f);
  vit_weights *w = &m->vit;
  vit_weights_bf16 *w16 = m->bf16 ? &m->w16->vit : NULL;
  if (m->bf16)
    bind_packed(b, &w16->conv1, NULL, "visual.conv1.weight", 0, 4, D, I64(3), P, P);
  else
    w->conv1_w = bind(b, "visual.conv1.weight", 4, D, I64(3), P, P);
  w->class_emb = bind(b, "visual.class_embedding", 1, D);
  w->pos_emb = bind(b, "visual.positional_embedding", 2, G * G + 1, D);
  w->ln_pre_w = bind(b, "visual.ln_pre.weight", 1, D);
  w->ln_pre_b = bind(b, "visual.ln_pre.bias", 1, D);
  w->ln_post_w = bind(b, "visual.ln_post.weight", 1, D);
  w->ln_post_b = bind(b, "visual.ln_post.bias", 1, D);
  if (m->bf16)
    bind_packed(b, &w16->proj, NULL, "visual.proj", 1, 2, D, I64(c->embed_dim));
  else
    w->proj = bind(b, "visual.proj", 2, D, I64(c->embed_dim));
  w->blocks = calloc((size_t)c->vision.layers, sizeof *w->blocks);
  if (m->bf16 && !b->shared && w->blocks) {
    w16->blocks = calloc((size_t)c->vision.layers ? (size_t)c->vision.layers : 1,
                         sizeof *w16->blocks);
    m->w16->vit_layers = c->vision.layers;
  }
  if (!w->blocks || (m->bf16 && !w16->blocks)) {
    unimed_set_err(b->err, b->errlen, "out of memory");
    b->failed = 1;
    return;
  }
  char n[160];
#define VB(field, suffix, ...)                                                   \
  (snprintf(n, sizeof n, "visual.transformer.resblocks.%d.%s", l, suffix),        \
   bw->field = bind(b, n, __VA_ARGS__))
  /* a linear weight: FP32 pointer, or packed in BF16 / INT8 mode */
#define VW(field, field16, suffix, ...)                                          \
  (snprintf(n, sizeof n, "visual.transformer.resblocks.%d.%s", l, suffix),        \
   m->bf16 ? bind_packed(b, &w16->blocks[l].field16, &w16->blocks[l].field16##8, n, 0, \
                         __VA_ARGS__)                                             \
           : (void)(bw->field = bind(b, n, __VA_ARGS__)))
  for (int l = 0; l < c->vision.layers && !b->failed; l++) {
    vit_block_weights *bw = &w->blocks[l];
    VB(ln_1_w, "ln_1.weight", 1, D);
    VB(ln_1_b, "ln_1.bias", 1, D);
    VW(in_proj_w, in_proj, "attn.in_proj_weight", 2, 3 * D, D);
    VB(in_proj_b, "attn.in_proj_bias", 1, 3 * D);
    VW(out_proj_w, out_proj, "attn.out_proj.weight", 2, D, D);
    VB(out_proj_b, "attn.out_proj.bias", 1, D);
    VB(ln_2_w, "ln_2.weight", 1, D);
    VB(ln_2_b, "ln_2.bias", 1, D);
    VW(fc_w, fc, "mlp.c_fc.weight", 2, F, D);
    VB(fc_b, "mlp.c_fc.bias", 1, F);
    VW(cproj_w, cproj, "mlp.c_proj.weight", 2, D, F);
    VB(cproj_b, "mlp.c_proj.bias", 1, D);
  }
#undef VW
#undef VB
  /* A checkpoint with more blocks than the config is a config mismatch. */
  snprintf(n, sizeof n, "visual.transformer.resblocks.%d.ln_1.weight", c->vision.layers);
  if (!b->failed && st_find(&m->st, n)) {
    unimed_set_err(b->err, b->errlen, "%s: tensor '%s' exists but config.json says vision.layers = %d",
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
  bert_weights_bf16 *w16 = m->bf16 ? &m->w16->bert : NULL;
  snprintf(n, sizeof n, "%sembeddings.word_embeddings.weight", pre);
  const st_tensor *we = m->bf16 ? st_find(&m->st, n) : NULL;
  if (we && we->dtype == ST_BF16 && ((uintptr_t)we->data & 1) == 0) {
    /* BF16 file, BF16 mode: rows are widened as they are looked up */
    const int64_t shape[2] = {I64(c->text.vocab_size), D};
    if (lookup(b, n, 2, shape)) m->word_emb16 = we->data;
  } else {
    TB(w->word_emb, "embeddings.word_embeddings.weight", 2, I64(c->text.vocab_size), D);
  }
  TB(w->pos_emb, "embeddings.position_embeddings.weight", 2,
     I64(c->text.max_position_embeddings), D);
  TB(w->type_emb, "embeddings.token_type_embeddings.weight", 2, I64(c->text.type_vocab_size), D);
  TB(w->emb_ln_w, "embeddings.LayerNorm.weight", 1, D);
  TB(w->emb_ln_b, "embeddings.LayerNorm.bias", 1, D);
#undef TB
  w->layers = calloc((size_t)c->text.layers, sizeof *w->layers);
  if (m->bf16 && !b->shared && w->layers) {
    w16->layers = calloc((size_t)c->text.layers ? (size_t)c->text.layers : 1,
                         sizeof *w16->layers);
    m->w16->text_layers = c->text.layers;
  }
  if (!w->layers || (m->bf16 && !w16->layers)) {
    unimed_set_err(b->err, b->errlen, "out of memory");
    b->failed = 1;
    return;
  }
#define LB(dst, suffix, ...)                                                        \
  (snprintf(n, sizeof n, "%sencoder.layer.%d.%s", pre, l, suffix),                  \
   lw->dst = bind(b, n, __VA_ARGS__))
#define LW(dst, dst16, suffix, ...)                                                 \
  (snprintf(n, sizeof n, "%sencoder.layer.%d.%s", pre, l, suffix),                  \
   m->bf16 ? bind_packed(b, &w16->layers[l].dst16,                                  \
                         m->int8_text ? &w16->layers[l].dst16##8 : NULL, n, 0,     \
                         __VA_ARGS__)                                               \
           : (void)(lw->dst = bind(b, n, __VA_ARGS__)))
  for (int l = 0; l < c->text.layers && !b->failed; l++) {
    bert_layer_weights *lw = &w->layers[l];
    if (m->bf16) {
      char prefix[160];
      snprintf(prefix, sizeof prefix, "%sencoder.layer.%d.", pre, l);
      bind_qkv(b, prefix, D, &w16->layers[l]);
    } else {
      LB(q_w, "attention.self.query.weight", 2, D, D);
      LB(q_b, "attention.self.query.bias", 1, D);
      LB(k_w, "attention.self.key.weight", 2, D, D);
      LB(k_b, "attention.self.key.bias", 1, D);
      LB(v_w, "attention.self.value.weight", 2, D, D);
      LB(v_b, "attention.self.value.bias", 1, D);
    }
    LW(attn_out_w, attn_out, "attention.output.dense.weight", 2, D, D);
    LB(attn_out_b, "attention.output.dense.bias", 1, D);
    LB(attn_ln_w, "attention.output.LayerNorm.weight", 1, D);
    LB(attn_ln_b, "attention.output.LayerNorm.bias", 1, D);
    LW(inter_w, inter, "intermediate.dense.weight", 2, FF, D);
    LB(inter_b, "intermediate.dense.bias", 1, FF);
    LW(out_w, out, "output.dense.weight", 2, D, FF);
    LB(out_b, "output.dense.bias", 1, D);
    LB(out_ln_w, "output.LayerNorm.weight", 1, D);
    LB(out_ln_b, "output.LayerNorm.bias", 1, D);
  }
#undef LW
#undef LB
  snprintf(n, sizeof n, "%sencoder.layer.%d.output.dense.weight", pre, c->text.layers);
  if (!b->failed && st_find(&m->st, n)) {
    unimed_set_err(b->err, b->errlen, "%s: tensor '%s' exists but config.json says text.layers = %d",
            b->file, n, c->text.layers);
    b->failed = 1;
  }
  switch (c->text.projection) {
  case UNIMED_PROJ_MLP:
    if (m->bf16) {
      bind_packed(b, &w16->proj0, NULL, "text_encoder.proj.0.weight", 0, 2, (D + E) / 2, D);
      bind_packed(b, &w16->proj2, NULL, "text_encoder.proj.2.weight", 0, 2, E, (D + E) / 2);
    } else {
      w->proj0 = bind(b, "text_encoder.proj.0.weight", 2, (D + E) / 2, D);
      w->proj2 = bind(b, "text_encoder.proj.2.weight", 2, E, (D + E) / 2);
    }
    break;
  case UNIMED_PROJ_LINEAR:
    if (m->bf16)
      bind_packed(b, &w16->proj, NULL, "text_encoder.proj.weight", 0, 2, E, D);
    else
      w->proj = bind(b, "text_encoder.proj.weight", 2, E, D);
    break;
  case UNIMED_PROJ_NONE:
    break;
  }
}

/* ---- BF16 / INT8 weight sets shared between model objects ---- */

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static um_bf16_set *registry;

static void free_set(um_bf16_set *s) {
  if (s->vit.blocks)
    for (int l = 0; l < s->vit_layers; l++) {
      vit_block_bf16 *b = &s->vit.blocks[l];
      um_bf16_free(b->in_proj);
      um_bf16_free(b->out_proj);
      um_bf16_free(b->fc);
      um_bf16_free(b->cproj);
      um_i8_free(b->in_proj8);
      um_i8_free(b->out_proj8);
      um_i8_free(b->fc8);
      um_i8_free(b->cproj8);
    }
  free(s->vit.blocks);
  um_bf16_free(s->vit.conv1);
  um_bf16_free(s->vit.proj);
  if (s->bert.layers)
    for (int l = 0; l < s->text_layers; l++) {
      bert_layer_bf16 *b = &s->bert.layers[l];
      um_bf16_free(b->qkv);
      free(b->qkv_b);
      um_bf16_free(b->attn_out);
      um_bf16_free(b->inter);
      um_bf16_free(b->out);
      um_i8_free(b->qkv8);
      um_i8_free(b->attn_out8);
      um_i8_free(b->inter8);
      um_i8_free(b->out8);
    }
  free(s->bert.layers);
  um_bf16_free(s->bert.proj0);
  um_bf16_free(s->bert.proj2);
  um_bf16_free(s->bert.proj);
  free(s);
}

/* Drops one reference (registry_mu held). */
static void release_set(um_bf16_set *s) {
  if (!s || --s->refs > 0) return;
  if (s->registered)
    for (um_bf16_set **p = &registry; *p; p = &(*p)->next)
      if (*p == s) {
        *p = s->next;
        break;
      }
  free_set(s);
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
  return unimed_model_load_opts(dir, NULL, err, errlen);
}

unimed_model *unimed_model_load_opts(const char *dir, const unimed_load_options *opts,
                                     char *err, size_t errlen) {
  const unimed_load_options defaults = {.precision = UNIMED_PRECISION_FP32};
  if (!opts) opts = &defaults;
  if (opts->precision != UNIMED_PRECISION_FP32 && opts->precision != UNIMED_PRECISION_BF16 &&
      opts->precision != UNIMED_PRECISION_INT8) {
    unimed_set_err(err, errlen, "%s: unknown precision %d", dir, (int)opts->precision);
    return NULL;
  }
  unimed_model *m = calloc(1, sizeof *m);
  if (!m) {
    unimed_set_err(err, errlen, "%s: out of memory", dir);
    return NULL;
  }
  m->requested = opts->precision;
  /* BF16 without the instructions would be slower than FP32: run FP32.
   * INT8 without VNNI runs BF16 where that is native, else FP32. INT8 mode
   * keeps some layers BF16 (on a CPU with VNNI but no avx512_bf16 those
   * run gemm_bf16's portable path). */
  m->int8 = opts->precision == UNIMED_PRECISION_INT8 && um_i8_available() > 0;
  m->bf16 = m->int8 || (opts->precision != UNIMED_PRECISION_FP32 && um_bf16_available());
  /* The text tower stays BF16 in INT8 mode (docs/MODEL.md: INT8 weights
   * there moved zero-shot rankings); UNIMED_INT8_TEXT=1 quantizes it too,
   * to measure that. */
  const char *int8_text = getenv("UNIMED_INT8_TEXT");
  m->int8_text = m->int8 && int8_text && int8_text[0] == '1';
  m->precision = m->int8   ? UNIMED_PRECISION_INT8
                 : m->bf16 ? UNIMED_PRECISION_BF16
                           : UNIMED_PRECISION_FP32;
  snprintf(m->dir, sizeof m->dir, "%s", dir);
  char path[1200];
  snprintf(path, sizeof path, "%s/config.json", dir);
  if (unimed_config_load(path, &m->cfg, err, errlen) != 0) goto fail;
  char cfg_path[1200];
  snprintf(cfg_path, sizeof cfg_path, "%s", path);

  snprintf(path, sizeof path, "%s/vocab.txt", dir);
  m->vocab = unimed_vocab_load(path, err, errlen);
  if (!m->vocab) goto fail;
  if (unimed_vocab_size(m->vocab) > m->cfg.text.vocab_size) {
    unimed_set_err(err, errlen, "%s: %d tokens but config.json says text.vocab_size = %d", path,
            unimed_vocab_size(m->vocab), m->cfg.text.vocab_size);
    goto fail;
  }

  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  if (st_open(&m->st, path, err, errlen) != 0) goto fail;
  binder b = {m, path, err, errlen, 0, 0};
  struct stat fst;
  if (m->bf16) {
    /* The packed weights of a file another model object has loaded are
     * shared (the plugin has one model per worker). The registry lock is
     * held while packing, so a file is packed once. */
    const int known = stat(path, &fst) == 0;
    pthread_mutex_lock(&registry_mu);
    for (um_bf16_set *s = registry; known && s; s = s->next)
      if (s->dev == (unsigned long long)fst.st_dev && s->ino == (unsigned long long)fst.st_ino &&
          s->size == (unsigned long long)fst.st_size &&
          s->mtime_s == (long long)fst.st_mtim.tv_sec &&
          s->mtime_ns == (long long)fst.st_mtim.tv_nsec && s->int8 == m->int8 &&
          s->int8_text == m->int8_text) {
        m->w16 = s;
        s->refs++;
        b.shared = 1;
        break;
      }
    if (!m->w16 && (m->w16 = calloc(1, sizeof *m->w16)) != NULL) {
      m->w16->refs = 1;
      m->w16->int8 = m->int8;
      m->w16->int8_text = m->int8_text;
      if (known) {
        m->w16->dev = (unsigned long long)fst.st_dev;
        m->w16->ino = (unsigned long long)fst.st_ino;
        m->w16->size = (unsigned long long)fst.st_size;
        m->w16->mtime_s = (long long)fst.st_mtim.tv_sec;
        m->w16->mtime_ns = (long long)fst.st_mtim.tv_nsec;
      }
    }
    if (!m->w16) {
      pthread_mutex_unlock(&registry_mu);
      unimed_set_err(err, errlen, "%s: out of memory", path);
      goto fail;
    }
    bind_vision(&b);
    bind_text(&b);
    if (!b.failed && !b.shared && known) {
      m->w16->next = registry;
      registry = m->w16;
      m->w16->registered = 1;
    }
    pthread_mutex_unlock(&registry_mu);
  } else {
    bind_vision(&b);
    bind_text(&b);
  }
  const float *ls = bind(&b, "logit_scale", 0);
  if (b.failed) goto fail;
  m->logit_scale = ls[0];
  compute_hash(m, cfg_path);
  if (m->bf16) {
    /* Cached label-set embeddings depend on the precision too. */
    uint64_t h = 1469598103934665603ULL;
    const char *key = m->hash, *suffix = m->int8 ? "/int8" : "/bf16";
    for (const char *p = key; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    for (const char *p = suffix; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    snprintf(m->cache_key, sizeof m->cache_key, "%016llx", (unsigned long long)h);
    /* Every file page read so far (packing, hashing) may go: what is still
     * used from the mapping (LayerNorms, biases, embeddings) comes back on
     * first use, a small fraction of the file. */
    drop_pages(m, m->st.map, m->st.map_size);
  } else {
    memcpy(m->cache_key, m->hash, sizeof m->cache_key);
  }
  return m;
fail:
  unimed_model_free(m);
  return NULL;
}

void unimed_model_free(unimed_model *m) {
  if (!m) return;
  for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
  free(m->owned);
  if (m->w16) {
    pthread_mutex_lock(&registry_mu);
    release_set(m->w16);
    pthread_mutex_unlock(&registry_mu);
  }
  free(m->vit.blocks);
  free(m->bert.layers);
  st_close(&m->st);
  unimed_vocab_free(m->vocab);
  free(m->ws);
  free(m);
}

const unimed_config *unimed_model_config(const unimed_model *m) { return &m->cfg; }
unimed_precision unimed_model_precision(const unimed_model *m) { return m->precision; }
unimed_precision unimed_model_precision_requested(const unimed_model *m) { return m->requested; }
size_t unimed_model_owned_bytes(const unimed_model *m) {
  return m->owned_bytes + (m->w16 ? m->w16->bytes : 0);
}
const char *um_model_cache_key(const unimed_model *m) { return m->cache_key; }
int unimed_bf16_supported(void) { return um_bf16_available(); }
int unimed_int8_supported(void) { return um_i8_available() > 0; }

const char *unimed_precision_name(unimed_precision p) {
  return p == UNIMED_PRECISION_INT8 ? "int8" : p == UNIMED_PRECISION_BF16 ? "bf16" : "fp32";
}

int unimed_precision_parse(const char *s, unimed_precision *out) {
  if (!s) return -1;
  if (!strcasecmp(s, "fp32") || !strcasecmp(s, "float32") || !strcasecmp(s, "f32")) {
    *out = UNIMED_PRECISION_FP32;
    return 0;
  }
  if (!strcasecmp(s, "bf16") || !strcasecmp(s, "bfloat16")) {
    *out = UNIMED_PRECISION_BF16;
    return 0;
  }
  if (!strcasecmp(s, "int8")) {
    *out = UNIMED_PRECISION_INT8;
    return 0;
  }
  return -1;
}
const char *unimed_model_hash(const unimed_model *m) { return m->hash; }
float unimed_model_logit_scale(const unimed_model *m) { return m->logit_scale; }

int um_workspace(unimed_model *m, size_t n, char *err, size_t errlen) {
  if (n <= m->ws_floats) return 0;
  free(m->ws);
  m->ws = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
  if (!m->ws) {
    m->ws_floats = 0;
    unimed_set_err(err, errlen, "out of memory for a %zu MiB workspace", n * sizeof(float) >> 20);
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
    unimed_set_err(err, errlen, "no images to encode");
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
    unimed_set_err(err, errlen, "no texts to encode");
    return -1;
  }
  int total = 0, maxlen = 0;
  for (int s = 0; s < n; s++) {
    if (lens[s] < 1 || lens[s] > m->cfg.text.max_position_embeddings) {
      unimed_set_err(err, errlen, "text %d: %d tokens (must be 1..%d)", s, lens[s],
              m->cfg.text.max_position_embeddings);
      return -1;
    }
    for (int p = 0; p < lens[s]; p++)
      if (ids[s][p] < 0 || ids[s][p] >= m->cfg.text.vocab_size) {
        unimed_set_err(err, errlen, "text %d: token id %d outside the vocabulary (0..%d)", s,
                ids[s][p], m->cfg.text.vocab_size - 1);
        return -1;
      }
    total += lens[s];
    maxlen = lens[s] > maxlen ? lens[s] : maxlen;
  }
  if (um_workspace(m, um_bert_workspace_floats(&m->cfg, n, total, maxlen, m->bf16), err,
                   errlen) != 0)
    return -1;
  um_bert_forward(m, ids, lens, n, out);
  for (int i = 0; i < n; i++) unimed_l2_normalize(out + (size_t)i * m->cfg.embed_dim, m->cfg.embed_dim);
  return 0;
}

int unimed_encode_texts(unimed_model *m, const char *const *texts, int n, float *out, char *err,
                        size_t errlen) {
  if (n <= 0) {
    unimed_set_err(err, errlen, "no texts to encode");
    return -1;
  }
  const int ctx = m->cfg.text.context_length;
  int *buf = malloc((size_t)n * ctx * sizeof(int));
  int *lens = malloc((size_t)n * sizeof(int));
  const int **rows = malloc((size_t)n * sizeof(int *));
  int rc = -1;
  if (!buf || !lens || !rows) {
    unimed_set_err(err, errlen, "out of memory");
    goto done;
  }
  for (int i = 0; i < n; i++) {
    rows[i] = buf + (size_t)i * ctx;
    lens[i] = um_tokenize(m->vocab, texts[i], ctx, buf + (size_t)i * ctx, err, errlen);
    if (lens[i] < 0) goto done;
    if (lens[i] <= 2) {
      unimed_set_err(err, errlen, "text %d is empty after cleaning; give words to embed", i);
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
