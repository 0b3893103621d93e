/* The public trainer (unimed_train.h) over the internal one (train.h): an
 * opaque handle, the training modes as flags on the parameter table, and
 * what a checkpoint reads and writes. The arithmetic is all in train_*.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"
#include "unimed_train.h"

struct unimed_trainer {
  umt_trainer T;
};

static const char *const mode_names[] = {"full", "lock-image", "projections"};

unimed_trainer_params unimed_trainer_default_params(void) {
  unimed_trainer_params p;
  memset(&p, 0, sizeof p);
  p.lr = 5e-4f;
  p.beta1 = 0.9f;
  p.beta2 = 0.98f;
  p.eps = 1e-6f;
  p.weight_decay = 0.1f;
  p.grad_clip = 1.0f;
  p.warmup = 50;
  p.mode = UNIMED_TRAIN_FULL;
  p.lazy_optimizer_state = 1;
  return p;
}

const char *unimed_train_mode_name(unimed_train_mode mode) {
  return (int)mode >= 0 && (int)mode < 3 ? mode_names[mode] : NULL;
}

int unimed_train_mode_parse(const char *s, unimed_train_mode *out) {
  for (int k = 0; k < 3; k++)
    if (s && !strcmp(s, mode_names[k])) {
      *out = (unimed_train_mode)k;
      return 0;
    }
  return -1;
}

/* Freezes what the mode does not train: no gradients, no updates, no decay. */
static void apply_mode(umt_params *P, unimed_train_mode mode) {
  for (int i = 0; i < P->n; i++) {
    umt_tensor *t = &P->t[i];
    if (!(t->flags & UMT_TRAIN)) continue;
    int keep = 1;
    if (mode == UNIMED_TRAIN_LOCK_IMAGE) keep = strncmp(t->name, "visual.", 7) != 0;
    if (mode == UNIMED_TRAIN_PROJECTIONS)
      keep = !strcmp(t->name, "visual.proj") || !strncmp(t->name, "text_encoder.proj.", 18) ||
             !strcmp(t->name, "logit_scale");
    if (!keep) t->flags &= ~(UMT_TRAIN | UMT_DECAY);
  }
}

unimed_trainer *unimed_trainer_new(const char *model_dir, const unimed_trainer_params *params,
                                   char *err, size_t errlen) {
  unimed_trainer_params p = params ? *params : unimed_trainer_default_params();
  if (!unimed_train_mode_name(p.mode)) {
    unimed_set_err(err, errlen, "unknown training mode %d", (int)p.mode);
    return NULL;
  }
  unimed_trainer *t = calloc(1, sizeof *t);
  if (!t) {
    unimed_set_err(err, errlen, "out of memory");
    return NULL;
  }
  umt_opt_config oc = {0};
  oc.lr = p.lr;
  oc.beta1 = p.beta1;
  oc.beta2 = p.beta2;
  oc.eps = p.eps;
  oc.weight_decay = p.weight_decay;
  oc.grad_clip = p.grad_clip;
  oc.warmup = p.warmup;
  oc.total_steps = p.total_steps;
  oc.lazy_moments = p.lazy_optimizer_state;
  if (umt_trainer_init(&t->T, model_dir, &oc, UMT_DECAY_NO_EMBEDDINGS, err, errlen) != 0) {
    free(t);
    return NULL;
  }
  apply_mode(&t->T.P, p.mode);
  return t;
}

void unimed_trainer_free(unimed_trainer *t) {
  if (!t) return;
  umt_trainer_free(&t->T);
  free(t);
}

const unimed_config *unimed_trainer_config(const unimed_trainer *t) { return &t->T.P.cfg; }

size_t unimed_trainer_n_params(const unimed_trainer *t) { return t->T.P.total; }

size_t unimed_trainer_n_trained(const unimed_trainer *t) {
  size_t n = 0;
  for (int i = 0; i < t->T.P.n; i++)
    if (t->T.P.t[i].flags & UMT_TRAIN) n += t->T.P.t[i].numel;
  return n;
}

int unimed_trainer_steps_done(const unimed_trainer *t) { return t->T.step; }

void unimed_trainer_set_steps_done(unimed_trainer *t, int steps) { t->T.step = steps; }

void unimed_trainer_set_total_steps(unimed_trainer *t, int total_steps) {
  t->T.opt.total_steps = total_steps;
}

int unimed_trainer_accumulate(unimed_trainer *t, const float *pixels, const int *const *ids,
                              const int *lens, const uint64_t *groups, int B, double *loss,
                              char *err, size_t errlen) {
  return umt_trainer_accumulate(&t->T, pixels, ids, lens, groups, B, loss, err, errlen);
}

float *unimed_trainer_gradients(unimed_trainer *t) { return t->T.P.grads; }

double unimed_trainer_step(unimed_trainer *t, float *lr_used) {
  return umt_trainer_step(&t->T, lr_used);
}

int unimed_trainer_save(const unimed_trainer *t, const char *dir, char *err, size_t errlen) {
  return umt_params_save(&t->T.P, dir, err, errlen);
}

void unimed_trainer_set_model_dir(unimed_trainer *t, const char *dir) {
  snprintf(t->T.P.src_dir, sizeof t->T.P.src_dir, "%s", dir);
}

uint64_t unimed_trainer_params_checksum(const unimed_trainer *t) {
  const unsigned char *b = (const unsigned char *)t->T.P.params;
  const size_t n = t->T.P.total * sizeof(float);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

void unimed_trainer_optimizer_state(unimed_trainer *t, float **m, float **v) {
  *m = t->T.m;
  *v = t->T.v;
}
