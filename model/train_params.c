/* The training parameter block: every tensor of the checkpoint as float32 in
 * one contiguous allocation, a table (upstream name, shape, offset, flags) in
 * the checkpoint's order, and a gradient block of the same layout. Loads a
 * model directory and saves one that unimed_model_load reads unchanged. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "train.h"

/* ---- building the table and the views (one walk, in checkpoint order) ---- */

typedef struct {
  umt_params *P;
  float *pbase, *gbase; /* NULL on the sizing walk */
  size_t off;
  int record;
  enum umt_decay_rule rule;
} walker;

static int is_embedding(const char *name) {
  return strstr(name, "embedding") != NULL; /* class_/positional_/word_/position_/token_type_ */
}

static int decay_flag(enum umt_decay_rule rule, const char *name, int ndim) {
  if (!strcmp(name, "logit_scale") || ndim < 2) return 0;
  if (rule == UMT_DECAY_OPENCLIP)
    return !(strstr(name, "bn") || strstr(name, "ln") || strstr(name, "bias"));
  return !is_embedding(name) && !strstr(name, "LayerNorm") && !strstr(name, "bias");
}

static void add(walker *wk, float **pslot, float **gslot, int flags, int ndim, int64_t d0,
                int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...) {
  char name[112];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  int64_t dims[4] = {d0, d1, d2, d3};
  size_t numel = 1;
  for (int i = 0; i < ndim; i++) numel *= (size_t)dims[i];
  if (wk->record) {
    umt_tensor *t = &wk->P->t[wk->P->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = dims[i];
    t->offset = wk->off;
    t->numel = numel;
    t->flags = flags | (flags & UMT_TRAIN && decay_flag(wk->rule, name, ndim) ? UMT_DECAY : 0);
    t->present = 1;
  }
  if (wk->pbase) *pslot = wk->pbase + wk->off;
  if (wk->gbase) *gslot = wk->gbase + wk->off;
  wk->off += (numel + 15) / 16 * 16;
}

#define TR UMT_TRAIN
#define A(field, flags, ndim, d0, d1, d2, d3, ...) \
  add(wk, &P->p.field, &P->g.field, flags, ndim, d0, d1, d2, d3, __VA_ARGS__)

static void walk(walker *wk) {
  umt_params *P = wk->P;
  const unimed_config *c = &P->cfg;
  const int64_t D = c->vision.width, Pp = c->vision.patch_size, G = c->vision.image_size / Pp;
  const int64_t F = (int64_t)(c->vision.mlp_ratio * c->vision.width + 0.5f), E = c->embed_dim;
  A(conv1_w, TR, 4, D, 3, Pp, Pp, "visual.conv1.weight");
  A(class_emb, TR, 1, D, 0, 0, 0, "visual.class_embedding");
  A(pos_emb, TR, 2, G * G + 1, D, 0, 0, "visual.positional_embedding");
  A(ln_pre_w, TR, 1, D, 0, 0, 0, "visual.ln_pre.weight");
  A(ln_pre_b, TR, 1, D, 0, 0, 0, "visual.ln_pre.bias");
  for (int l = 0; l < c->vision.layers; l++) {
    const char *pre = "visual.transformer.resblocks";
    A(vb[l].ln_1_w, TR, 1, D, 0, 0, 0, "%s.%d.ln_1.weight", pre, l);
    A(vb[l].ln_1_b, TR, 1, D, 0, 0, 0, "%s.%d.ln_1.bias", pre, l);
    A(vb[l].in_proj_w, TR, 2, 3 * D, D, 0, 0, "%s.%d.attn.in_proj_weight", pre, l);
    A(vb[l].in_proj_b, TR, 1, 3 * D, 0, 0, 0, "%s.%d.attn.in_proj_bias", pre, l);
    A(vb[l].out_proj_w, TR, 2, D, D, 0, 0, "%s.%d.attn.out_proj.weight", pre, l);
    A(vb[l].out_proj_b, TR, 1, D, 0, 0, 0, "%s.%d.attn.out_proj.bias", pre, l);
    A(vb[l].ln_2_w, TR, 1, D, 0, 0, 0, "%s.%d.ln_2.weight", pre, l);
    A(vb[l].ln_2_b, TR, 1, D, 0, 0, 0, "%s.%d.ln_2.bias", pre, l);
    A(vb[l].fc_w, TR, 2, F, D, 0, 0, "%s.%d.mlp.c_fc.weight", pre, l);
    A(vb[l].fc_b, TR, 1, F, 0, 0, 0, "%s.%d.mlp.c_fc.bias", pre, l);
    A(vb[l].cproj_w, TR, 2, D, F, 0, 0, "%s.%d.mlp.c_proj.weight", pre, l);
    A(vb[l].cproj_b, TR, 1, D, 0, 0, 0, "%s.%d.mlp.c_proj.bias", pre, l);
  }
  A(ln_post_w, TR, 1, D, 0, 0, 0, "visual.ln_post.weight");
  A(ln_post_b, TR, 1, D, 0, 0, 0, "visual.ln_post.bias");
  A(vproj, TR, 2, D, E, 0, 0, "visual.proj");

  const int64_t Dt = c->text.hidden_size, I = c->text.intermediate_size;
  const char *tp = "text_encoder.transformer";
  A(word_emb, TR, 2, c->text.vocab_size, Dt, 0, 0, "%s.embeddings.word_embeddings.weight", tp);
  A(tpos_emb, TR, 2, c->text.max_position_embeddings, Dt, 0, 0,
    "%s.embeddings.position_embeddings.weight", tp);
  A(type_emb, TR, 2, c->text.type_vocab_size, Dt, 0, 0,
    "%s.embeddings.token_type_embeddings.weight", tp);
  A(emb_ln_w, TR, 1, Dt, 0, 0, 0, "%s.embeddings.LayerNorm.weight", tp);
  A(emb_ln_b, TR, 1, Dt, 0, 0, 0, "%s.embeddings.LayerNorm.bias", tp);
  for (int l = 0; l < c->text.layers; l++) {
    const char *lp = "encoder.layer";
    A(tl[l].q_w, TR, 2, Dt, Dt, 0, 0, "%s.%s.%d.attention.self.query.weight", tp, lp, l);
    A(tl[l].q_b, TR, 1, Dt, 0, 0, 0, "%s.%s.%d.attention.self.query.bias", tp, lp, l);
    A(tl[l].k_w, TR, 2, Dt, Dt, 0, 0, "%s.%s.%d.attention.self.key.weight", tp, lp, l);
    A(tl[l].k_b, TR, 1, Dt, 0, 0, 0, "%s.%s.%d.attention.self.key.bias", tp, lp, l);
    A(tl[l].v_w, TR, 2, Dt, Dt, 0, 0, "%s.%s.%d.attention.self.value.weight", tp, lp, l);
    A(tl[l].v_b, TR, 1, Dt, 0, 0, 0, "%s.%s.%d.attention.self.value.bias", tp, lp, l);
    A(tl[l].attn_out_w, TR, 2, Dt, Dt, 0, 0, "%s.%s.%d.attention.output.dense.weight", tp, lp, l);
    A(tl[l].attn_out_b, TR, 1, Dt, 0, 0, 0, "%s.%s.%d.attention.output.dense.bias", tp, lp, l);
    A(tl[l].attn_ln_w, TR, 1, Dt, 0, 0, 0, "%s.%s.%d.attention.output.LayerNorm.weight", tp, lp,
      l);
    A(tl[l].attn_ln_b, TR, 1, Dt, 0, 0, 0, "%s.%s.%d.attention.output.LayerNorm.bias", tp, lp, l);
    A(tl[l].inter_w, TR, 2, I, Dt, 0, 0, "%s.%s.%d.intermediate.dense.weight", tp, lp, l);
    A(tl[l].inter_b, TR, 1, I, 0, 0, 0, "%s.%s.%d.intermediate.dense.bias", tp, lp, l);
    A(tl[l].out_w, TR, 2, Dt, I, 0, 0, "%s.%s.%d.output.dense.weight", tp, lp, l);
    A(tl[l].out_b, TR, 1, Dt, 0, 0, 0, "%s.%s.%d.output.dense.bias", tp, lp, l);
    A(tl[l].out_ln_w, TR, 1, Dt, 0, 0, 0, "%s.%s.%d.output.LayerNorm.weight", tp, lp, l);
    A(tl[l].out_ln_b, TR, 1, Dt, 0, 0, 0, "%s.%s.%d.output.LayerNorm.bias", tp, lp, l);
  }
  /* The pooler is in the published checkpoint but UniMed-CLIP pools the CLS
   * hidden state: no gradient, never updated, saved as loaded. */
  A(pooler_w, UMT_OPTIONAL, 2, Dt, Dt, 0, 0, "%s.pooler.dense.weight", tp);
  A(pooler_b, UMT_OPTIONAL, 1, Dt, 0, 0, 0, "%s.pooler.dense.bias", tp);
  const int64_t H2 = (Dt + E) / 2;
  switch (c->text.projection) {
  case UNIMED_PROJ_MLP:
    A(proj0, TR, 2, H2, Dt, 0, 0, "text_encoder.proj.0.weight");
    A(proj2, TR, 2, E, H2, 0, 0, "text_encoder.proj.2.weight");
    break;
  case UNIMED_PROJ_LINEAR:
    A(tproj, TR, 2, E, Dt, 0, 0, "text_encoder.proj.weight");
    break;
  case UNIMED_PROJ_NONE:
    break;
  }
  A(logit_scale, TR, 0, 0, 0, 0, 0, "logit_scale");
}
#undef A
#undef TR

const umt_tensor *umt_params_find(const umt_params *P, const char *name) {
  for (int i = 0; i < P->n; i++)
    if (!strcmp(P->t[i].name, name)) return &P->t[i];
  return NULL;
}

void umt_zero_grad(umt_params *P) { memset(P->grads, 0, P->total * sizeof(float)); }

void umt_params_free(umt_params *P) {
  if (!P) return;
  free(P->t);
  free(P->params);
  free(P->grads);
  free(P->p.vb);
  free(P->g.vb);
  free(P->p.tl);
  free(P->g.tl);
  memset(P, 0, sizeof *P);
}

int umt_params_load(umt_params *P, const char *dir, enum umt_decay_rule rule, char *err,
                    size_t errlen) {
  memset(P, 0, sizeof *P);
  snprintf(P->src_dir, sizeof P->src_dir, "%s", dir);
  char path[1200];
  snprintf(path, sizeof path, "%s/config.json", dir);
  if (unimed_config_load(path, &P->cfg, err, errlen) != 0) return -1;
  const unimed_config *c = &P->cfg;
  const int max_tensors = 16 + 12 * c->vision.layers + 16 * c->text.layers + 16;
  P->t = calloc((size_t)max_tensors, sizeof *P->t);
  P->p.vb = calloc((size_t)c->vision.layers, sizeof *P->p.vb);
  P->g.vb = calloc((size_t)c->vision.layers, sizeof *P->g.vb);
  P->p.tl = calloc((size_t)c->text.layers, sizeof *P->p.tl);
  P->g.tl = calloc((size_t)c->text.layers, sizeof *P->g.tl);
  if (!P->t || !P->p.vb || !P->g.vb || !P->p.tl || !P->g.tl) goto oom;
  walker wk = {P, NULL, NULL, 0, 1, rule};
  walk(&wk);
  P->total = wk.off;
  P->params = aligned_alloc(64, P->total * sizeof(float));
  P->grads = aligned_alloc(64, P->total * sizeof(float));
  if (!P->params || !P->grads) goto oom;
  memset(P->params, 0, P->total * sizeof(float));
  memset(P->grads, 0, P->total * sizeof(float));
  walker wk2 = {P, P->params, P->grads, 0, 0, rule};
  walk(&wk2);

  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  st_file st;
  if (st_open(&st, path, err, errlen) != 0) goto fail;
  for (int i = 0; i < P->n; i++) {
    umt_tensor *t = &P->t[i];
    const st_tensor *s = st_find(&st, t->name);
    if (!s) {
      if (t->flags & UMT_OPTIONAL) {
        t->present = 0;
        continue;
      }
      unimed_set_err(err, errlen, "%s: missing tensor '%s'", path, t->name);
      st_close(&st);
      goto fail;
    }
    int same = s->ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = s->shape[d] == t->shape[d];
    if (!same || st_to_f32(s, P->params + t->offset) != 0) {
      unimed_set_err(err, errlen, "%s: tensor '%s' has the wrong shape or a non-float dtype (%s)", path,
              t->name, st_dtype_name(s->dtype));
      st_close(&st);
      goto fail;
    }
  }
  st_close(&st);
  return 0;
oom:
  unimed_set_err(err, errlen, "%s: out of memory for the training parameters", dir);
fail:
  umt_params_free(P);
  return -1;
}

int unimed_copy_file(const char *from, const char *to, char *err, size_t errlen) {
  char a[PATH_MAX], b[PATH_MAX];
  if (realpath(from, a) && realpath(to, b) && !strcmp(a, b)) return 0; /* same file */
  FILE *in = fopen(from, "rb");
  if (!in) {
    unimed_set_err(err, errlen, "%s: %s", from, strerror(errno));
    return -1;
  }
  FILE *out = fopen(to, "wb");
  if (!out) {
    unimed_set_err(err, errlen, "%s: %s", to, strerror(errno));
    fclose(in);
    return -1;
  }
  char buf[65536];
  size_t r;
  int ok = 1;
  while ((r = fread(buf, 1, sizeof buf, in)) > 0)
    if (fwrite(buf, 1, r, out) != r) ok = 0;
  ok = ok && !ferror(in);
  fclose(in);
  if (fclose(out) != 0) ok = 0;
  if (!ok) unimed_set_err(err, errlen, "%s: write failed", to);
  return ok ? 0 : -1;
}

int umt_params_save(const umt_params *P, const char *dir, char *err, size_t errlen) {
  if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
    unimed_set_err(err, errlen, "%s: %s", dir, strerror(errno));
    return -1;
  }
  char from[1200], to[1200], tmp[1250];
  snprintf(from, sizeof from, "%s/config.json", P->src_dir);
  snprintf(to, sizeof to, "%s/config.json", dir);
  if (unimed_copy_file(from, to, err, errlen) != 0) return -1;
  snprintf(from, sizeof from, "%s/vocab.txt", P->src_dir);
  snprintf(to, sizeof to, "%s/vocab.txt", dir);
  if (unimed_copy_file(from, to, err, errlen) != 0) return -1;

  st_write_tensor *wt = calloc((size_t)P->n, sizeof *wt);
  if (!wt) {
    unimed_set_err(err, errlen, "out of memory");
    return -1;
  }
  int k = 0;
  for (int i = 0; i < P->n; i++) {
    const umt_tensor *t = &P->t[i];
    if (!t->present) continue;
    wt[k].name = t->name;
    wt[k].ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) wt[k].shape[d] = t->shape[d];
    wt[k].data = P->params + t->offset;
    k++;
  }
  /* Write beside, then rename: the directory always holds a whole file. */
  snprintf(to, sizeof to, "%s/model.safetensors", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", to);
  int rc = st_write(tmp, wt, k, ST_F32, "{\"format\":\"pt\",\"producer\":\"unimed-train\"}", err,
                    errlen);
  free(wt);
  if (rc != 0) return -1;
  if (rename(tmp, to) != 0) {
    unimed_set_err(err, errlen, "%s: %s", to, strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}
