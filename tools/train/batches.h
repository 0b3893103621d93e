/* unimed-train's batches: which sample goes where in each epoch (a
 * shuffle, or --balance's draws), and one micro-batch's augmented images,
 * tokenised captions and caption classes. */
#ifndef UNIMED_TRAIN_BATCHES_H
#define UNIMED_TRAIN_BATCHES_H

#include <stdint.h>

#include "dataset.h"
#include "train_options.h"
#include "unimed_train.h"

typedef struct {
  const ut_dataset *d;
  const ut_hparams *h;
  int *order;      /* sample (image) of each position of the current epoch */
  int epoch;       /* epoch `order` belongs to, -1 none */
  float *pixels;   /* batch x 3 x S x S */
  int **ids;
  int *lens;
  uint64_t *groups; /* class of each caption (--label-aware) */
  int ctx;         /* token budget per caption */
  float mean[3], std[3]; /* the model's normalisation, for intensity jitter */
  int B;           /* images per micro-batch */
} ut_batcher;

/* Buffers for micro-batches of B images, captions of at most ctx tokens;
 * mean / stdv: the model's normalisation. -1 when out of memory (free it
 * still). */
int ut_batcher_init(ut_batcher *b, const ut_dataset *d, const ut_hparams *h, int B, int ctx,
                    const float mean[3], const float stdv[3]);
void ut_batcher_free(ut_batcher *b);
/* Sample order of an epoch: a permutation, or (--balance) draws with
 * replacement that give the labels of each label set equal weight while
 * keeping each set's share of the epoch. 0, or -1 when out of memory. */
int ut_epoch_order(ut_batcher *b, int epoch);
/* Fills pixels / ids / lens / groups for positions [pos, pos + B) of the
 * epoch (ut_epoch_order done for it); -1 with err. */
int ut_make_batch(ut_batcher *b, const unimed_vocab *tok, int epoch, int pos, int B, char *err,
                  size_t errlen);

#endif
