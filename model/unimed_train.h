/* UniMed training — the public header of model/'s trainer.
 *
 * Contrastive (CLIP) training of a UniMed-CLIP model directory on the CPU:
 * an opaque trainer that loads a model directory, accumulates the gradients
 * of (image, caption) batches and takes AdamW steps on a cosine schedule;
 * the vocabulary a caption is tokenised with (load, or build from texts);
 * and what a model directory made from scratch needs (random weights written
 * as safetensors). Deterministic: the same calls give the same bits.
 *
 * Errors follow unimed_model.h: 0 on success, -1 (or NULL) with one line in
 * err. A trainer is used by one thread at a time. */
#ifndef UNIMED_TRAIN_H
#define UNIMED_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "unimed_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- trainer ---- */

/* What is trained; the rest stays as loaded. The values are stable (a
 * checkpoint may store them). */
typedef enum {
  UNIMED_TRAIN_FULL = 0,        /* both towers, the projections, logit_scale */
  UNIMED_TRAIN_LOCK_IMAGE = 1,  /* everything but the image tower ("visual.*") */
  UNIMED_TRAIN_PROJECTIONS = 2, /* visual.proj, the text projection, logit_scale */
} unimed_train_mode;

typedef struct {
  float lr;               /* peak learning rate */
  float beta1, beta2, eps;
  float weight_decay;     /* on weight matrices that are not embeddings */
  float grad_clip;        /* max global L2 norm of the gradients; <= 0: none */
  int warmup;             /* linear warm-up steps, then cosine decay */
  int total_steps;        /* length of the cosine schedule */
  unimed_train_mode mode;
  /* 1: the AdamW moments are allocated zeroed on demand, so those of frozen
   * tensors (lock-image, projections) never become resident; 0: allocated
   * and cleared up front. The updates are the same either way. */
  int lazy_optimizer_state;
} unimed_trainer_params;

typedef struct unimed_trainer unimed_trainer;

/* lr 5e-4, betas 0.9 / 0.98, eps 1e-6, weight decay 0.1, clipping at 1.0,
 * warm-up 50, total_steps 0 (set it), mode full, lazy optimizer state. */
unimed_trainer_params unimed_trainer_default_params(void);
/* "full", "lock-image", "projections"; NULL for other values. */
const char *unimed_train_mode_name(unimed_train_mode mode);
/* Parses one of those names; 0, or -1 for anything else. */
int unimed_train_mode_parse(const char *s, unimed_train_mode *out);

/* Loads DIR/config.json and DIR/model.safetensors (any float dtype) for
 * training; params NULL = the defaults. */
unimed_trainer *unimed_trainer_new(const char *model_dir, const unimed_trainer_params *params,
                                   char *err, size_t errlen);
void unimed_trainer_free(unimed_trainer *t);

const unimed_config *unimed_trainer_config(const unimed_trainer *t);
/* Floats in the parameter block (also the length of the gradient block and
 * of each AdamW moment block), and how many of them the mode trains. */
size_t unimed_trainer_n_params(const unimed_trainer *t);
size_t unimed_trainer_n_trained(const unimed_trainer *t);
/* Optimiser steps taken (or restored with unimed_trainer_set_steps_done). */
int unimed_trainer_steps_done(const unimed_trainer *t);
void unimed_trainer_set_total_steps(unimed_trainer *t, int total_steps);

/* Forward and backward of B (image, caption) pairs; gradients are added up
 * until the next step. pixels: B preprocessed images [3, S, S]; ids[i]:
 * lens[i] token ids of caption i ([CLS] first, no padding); groups (NULL:
 * every pair its own) marks captions of the same class, which then count as
 * matches of each other's images (UniCL's label-aware targets). *loss: the
 * symmetric CLIP loss of the batch. */
int unimed_trainer_accumulate(unimed_trainer *t, const float *pixels, const int *const *ids,
                              const int *lens, const uint64_t *groups, int B, double *loss,
                              char *err, size_t errlen);
/* The gradient block (unimed_trainer_n_params floats, the sum of what was
 * accumulated since the last step): for data-parallel training, where each
 * process's gradients are summed and averaged before the step. */
float *unimed_trainer_gradients(unimed_trainer *t);
/* Averages the accumulated gradients over the micro-batches, clips, takes
 * one AdamW step at the scheduled learning rate (*lr_used, may be NULL),
 * clamps logit_scale to [0, ln 100], clears the gradients. Returns the
 * gradient norm before clipping. */
double unimed_trainer_step(unimed_trainer *t, float *lr_used);

/* ---- checkpoints ---- */

/* Writes DIR/model.safetensors (float32, whole file or nothing) and copies
 * config.json and vocab.txt from the trainer's model directory; DIR is
 * created if needed. The result loads with unimed_model_load. */
int unimed_trainer_save(const unimed_trainer *t, const char *dir, char *err, size_t errlen);
/* The directory unimed_trainer_save copies config.json and vocab.txt from
 * (initially the one loaded). */
void unimed_trainer_set_model_dir(unimed_trainer *t, const char *dir);
/* What a checkpoint needs to resume exactly: a 64-bit FNV-1a checksum of the
 * parameter block (to tell that saved moments belong to saved weights), the
 * AdamW moments (two blocks of unimed_trainer_n_params floats, writable: a
 * resumed run reads them back), and the step count. */
uint64_t unimed_trainer_params_checksum(const unimed_trainer *t);
void unimed_trainer_optimizer_state(unimed_trainer *t, float **m, float **v);
void unimed_trainer_set_steps_done(unimed_trainer *t, int steps);

/* ---- vocabulary ---- */

typedef struct unimed_vocab unimed_vocab;

/* A BERT vocab.txt (one token per line, id = line number). */
unimed_vocab *unimed_vocab_load(const char *path, char *err, size_t errlen);
void unimed_vocab_free(unimed_vocab *v);
int unimed_vocab_size(const unimed_vocab *v);
/* As unimed_tokenize, with a vocabulary alone (no weights loaded). */
int unimed_vocab_tokenize(const unimed_vocab *v, const char *text, int *ids, int max_ids,
                          char *err, size_t errlen);

/* A vocabulary built from texts: [PAD] [UNK] [CLS] [SEP] [MASK], every
 * character seen (and a-z, 0-9) alone and as "##x", then the whole words
 * (lower-cased, split at spaces and punctuation as BERT's basic tokenizer
 * does) by frequency, at most max_size lines in all. */
typedef struct unimed_vocab_builder unimed_vocab_builder;
unimed_vocab_builder *unimed_vocab_builder_new(void);
/* Adds a text; builder is a unimed_vocab_builder (void * so that it can be
 * passed as a callback). */
void unimed_vocab_builder_add(void *builder, const char *text);
/* Writes the vocabulary; returns the number of lines, or -1 with err. */
int unimed_vocab_builder_write(unimed_vocab_builder *b, const char *path, int max_size,
                               char *err, size_t errlen);
void unimed_vocab_builder_free(unimed_vocab_builder *b);

/* ---- model directories ---- */

/* Copies file `from` to `to` (nothing to do when both are the same file);
 * -1 with the file and the reason in err. */
int unimed_copy_file(const char *from, const char *to, char *err, size_t errlen);

/* A named float32 tensor, row-major. */
typedef struct {
  const char *name;
  int ndim;               /* 0..4 */
  int64_t shape[4];
  const float *data;
} unimed_named_tensor;

/* Writes a float32 safetensors file of n tensors, in this order, with
 * metadata {"format":"pt","producer":PRODUCER}. */
int unimed_weights_write(const char *path, const unimed_named_tensor *tensors, int n,
                         const char *producer, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
