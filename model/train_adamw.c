/* AdamW (decoupled weight decay, PyTorch's update), OpenCLIP's cosine
 * schedule with linear warm-up, global gradient-norm clipping, and the
 * trainer that ties the towers, the loss and the optimiser together. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

float umt_cosine_lr(const umt_opt_config *o, int step) {
  if (step < o->warmup) return o->lr * (float)(step + 1) / (float)o->warmup;
  int e = step - o->warmup, es = o->total_steps - o->warmup;
  if (es <= 0) return o->lr;
  return (float)(0.5 * (1.0 + cos(M_PI * (double)e / (double)es)) * o->lr);
}

double umt_clip_grad_norm(umt_params *P, float max_norm) {
  double ss = 0;
  for (int i = 0; i < P->n; i++) {
    const umt_tensor *t = &P->t[i];
    if (!(t->flags & UMT_TRAIN)) continue;
    const float *g = P->grads + t->offset;
    double s = 0;
    for (size_t k = 0; k < t->numel; k++) s += (double)g[k] * g[k];
    ss += s;
  }
  double norm = sqrt(ss);
  if (max_norm > 0) {
    double coef = (double)max_norm / (norm + 1e-6);
    if (coef < 1.0) {
      const float c = (float)coef;
      for (int i = 0; i < P->n; i++) {
        const umt_tensor *t = &P->t[i];
        if (!(t->flags & UMT_TRAIN)) continue;
        float *g = P->grads + t->offset;
        for (size_t k = 0; k < t->numel; k++) g[k] *= c;
      }
    }
  }
  return norm;
}

/* PyTorch AdamW (torch.optim.AdamW, amsgrad off), per element:
 *   p ← p·(1 − lr·wd)                          (UMT_DECAY tensors only)
 *   m ← β1 m + (1 − β1) g;   v ← β2 v + (1 − β2) g²
 *   p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε) */
void umt_adamw_update(umt_params *P, float *m, float *v, int t, float lr,
                      const umt_opt_config *o) {
  const double bc1 = 1.0 - pow((double)o->beta1, t), bc2 = 1.0 - pow((double)o->beta2, t);
  const float step = (float)(lr / bc1), bc2s = (float)sqrt(bc2);
  const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
  const float decay = 1.0f - lr * o->weight_decay;
  for (int i = 0; i < P->n; i++) {
    const umt_tensor *te = &P->t[i];
    if (!(te->flags & UMT_TRAIN)) continue;
    float *p = P->params + te->offset, *g = P->grads + te->offset;
    float *mm = m + te->offset, *vv = v + te->offset;
    const int dec = (te->flags & UMT_DECAY) && o->weight_decay != 0.0f;
    for (size_t k = 0; k < te->numel; k++) {
      if (dec) p[k] *= decay;
      mm[k] = b1 * mm[k] + (1.0f - b1) * g[k];
      vv[k] = b2 * vv[k] + (1.0f - b2) * g[k] * g[k];
      p[k] -= step * mm[k] / (sqrtf(vv[k]) / bc2s + eps);
    }
  }
  /* OpenCLIP: logit_scale.clamp_(0, ln 100) after every step. */
  float *ls = P->p.logit_scale;
  const float hi = (float)log(100.0);
  if (*ls < 0.0f) *ls = 0.0f;
  if (*ls > hi) *ls = hi;
}

int umt_trainer_init(umt_trainer *T, const char *model_dir, const umt_opt_config *opt,
                     enum umt_decay_rule rule, char *err, size_t errlen) {
  memset(T, 0, sizeof *T);
  if (umt_params_load(&T->P, model_dir, rule, err, errlen) != 0) return -1;
  T->opt = *opt;
  if (opt->lazy_moments) {
    T->m = calloc(T->P.total, sizeof(float));
    T->v = calloc(T->P.total, sizeof(float));
  } else {
    T->m = aligned_alloc(64, T->P.total * sizeof(float));
    T->v = aligned_alloc(64, T->P.total * sizeof(float));
  }
  if (!T->m || !T->v) {
    snprintf(err, errlen, "out of memory for the optimiser state");
    umt_trainer_free(T);
    return -1;
  }
  if (!opt->lazy_moments) {
    memset(T->m, 0, T->P.total * sizeof(float));
    memset(T->v, 0, T->P.total * sizeof(float));
  }
  return 0;
}

void umt_trainer_free(umt_trainer *T) {
  umt_params_free(&T->P);
  umt_workspace_free(&T->w);
  free(T->m);
  free(T->v);
  memset(T, 0, sizeof *T);
}

/* Whether any image-tower tensor is trained: when none is (a locked image
 * tower), its backward pass would only make gradients nobody reads. */
static int image_tower_trained(const umt_params *P) {
  for (int i = 0; i < P->n; i++)
    if ((P->t[i].flags & UMT_TRAIN) && strncmp(P->t[i].name, "visual.", 7) == 0) return 1;
  return 0;
}

int umt_trainer_accumulate(umt_trainer *T, const float *pixels, const int *const *ids,
                           const int *lens, const uint64_t *groups, int B, double *loss,
                           char *err, size_t errlen) {
  const unimed_config *c = &T->P.cfg;
  if (B < 1) {
    snprintf(err, errlen, "empty batch");
    return -1;
  }
  if (groups && B > UMT_MAX_LOSS_BATCH) {
    snprintf(err, errlen, "batch of %d: label-aware targets take at most %d pairs", B,
             UMT_MAX_LOSS_BATCH);
    return -1;
  }
  int N = 0, L = 0;
  size_t sumsq = 0;
  for (int s = 0; s < B; s++) {
    if (lens[s] < 1 || lens[s] > c->text.max_position_embeddings) {
      snprintf(err, errlen, "text %d: %d tokens (must be 1..%d)", s, lens[s],
               c->text.max_position_embeddings);
      return -1;
    }
    for (int k = 0; k < lens[s]; k++)
      if (ids[s][k] < 0 || ids[s][k] >= c->text.vocab_size) {
        snprintf(err, errlen, "text %d: token id %d outside the vocabulary", s, ids[s][k]);
        return -1;
      }
    N += lens[s];
    L = lens[s] > L ? lens[s] : L;
    sumsq += (size_t)lens[s] * lens[s];
  }
  if (umt_workspace_reserve(&T->w, c, B, B, N, L, sumsq, err, errlen) != 0) return -1;
  umt_workspace *w = &T->w;
  umt_vit_forward(&T->P, w, pixels, B);
  umt_bert_forward(&T->P, w, ids, lens, B);
  *loss = umt_clip_loss(w->v_out, w->t_out, B, c->embed_dim, groups, *T->P.p.logit_scale,
                        w->d_img, w->d_txt, T->P.g.logit_scale, w->img_n, w->txt_n, w->logits);
  if (image_tower_trained(&T->P)) umt_vit_backward(&T->P, w, w->d_img);
  umt_bert_backward(&T->P, w, w->d_txt);
  T->micro++;
  return 0;
}

double umt_trainer_step(umt_trainer *T, float *lr_used) {
  umt_params *P = &T->P;
  if (T->micro > 1) { /* mean over the accumulated micro-batches */
    const float inv = 1.0f / (float)T->micro;
    for (size_t k = 0; k < P->total; k++) P->grads[k] *= inv;
  }
  double norm = umt_clip_grad_norm(P, T->opt.grad_clip);
  float lr = umt_cosine_lr(&T->opt, T->step);
  T->step++;
  umt_adamw_update(P, T->m, T->v, T->step, lr, &T->opt);
  umt_zero_grad(P);
  T->micro = 0;
  if (lr_used) *lr_used = lr;
  return norm;
}
