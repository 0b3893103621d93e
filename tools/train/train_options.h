/* unimed-train's command line: the options with their defaults, the usage
 * text, and the checks between options (docs/TRAINING.md lists them). */
#ifndef UNIMED_TRAIN_OPTIONS_H
#define UNIMED_TRAIN_OPTIONS_H

#include <stdint.h>
#include <stdio.h>

/* Everything that fixes the sequence of updates; stored in the checkpoint
 * and compared on --resume. */
typedef struct {
  int32_t epochs, batch, accumulate, warmup, world;
  int32_t mode, augment, balance, frames_per_series;
  int32_t flip;            /* mirror left-right with probability 1/2 */
  int32_t label_aware;     /* captions of the same labels are positives of each other */
  uint64_t seed;
  float lr, wd, grad_clip, beta1, beta2, eps;
  float crop_area;         /* smallest area kept by the random resized crop */
  float jitter;            /* brightness and contrast change up to +-jitter */
  int32_t n_samples, steps_per_epoch, total_steps;
  uint64_t data_fingerprint; /* ut_dataset_fingerprint: samples, labels, captions, images */
} ut_hparams;

typedef struct {
  const char **archives, **val_archives, **sets; /* argc entries each */
  int n_archives, n_val_archives, n_sets;
  const char **orthanc_labels;
  int n_orthanc_labels;
  const char *orthanc, *orthanc_credentials, *orthanc_modality, *orthanc_date, *orthanc_query;
  int include_own_sr;
  const char *labels, *val_labels, *key, *init, *config, *vocab, *out, *resume;
  const char *name, *version;
  int threads, max_steps, vocab_size, eval_frames, keep_best, quiet;
  ut_hparams h;
} ut_options;

void ut_usage(FILE *out);
/* Fills o from argv (pointers into argv). --help prints the usage and exits
 * 0; 0 when the options are usable, or -1 after printing why (exit 2). */
int ut_parse_args(int argc, char **argv, ut_options *o);

#endif
