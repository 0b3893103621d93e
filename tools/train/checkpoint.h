/* unimed-train's checkpoints: the output model directory (OUT) and
 * OUT/trainer_state.bin, which lets --resume continue a run bit for bit.
 * Format of trainer_state.bin (native byte order): "UMTRAIN3", the run's
 * ut_hparams (options, data fingerprint), step (int32), best validation
 * score (double), parameter count n (uint64), checksum of the weights it
 * belongs to (uint64), then the AdamW moments m and v (n floats each). */
#ifndef UNIMED_TRAIN_CHECKPOINT_H
#define UNIMED_TRAIN_CHECKPOINT_H

#include <stddef.h>

#include "train_options.h"
#include "unimed_train.h"

/* mkdir -p; 0, or -1 with errno. */
int ut_mkdir_p(const char *dir);
/* 1 when both paths name the same existing directory. */
int ut_same_dir(const char *a, const char *b);

/* Writes DIR/trainer_state.bin (whole file or nothing); 0 or -1. */
int ut_state_save(const char *dir, unimed_trainer *t, const ut_hparams *h, double best);
/* Reads DIR/trainer_state.bin into the trainer (moments, step), *h and
 * *best; -1 with err when it is missing, of another version, truncated, for
 * another model, or not of DIR/model.safetensors. */
int ut_state_load(const char *dir, unimed_trainer *t, ut_hparams *h, double *best, char *err,
                  size_t errlen);
/* -1 with err naming the first option (or the data) in which the run being
 * resumed (saved) differs from this one (now). */
int ut_resume_check(const ut_hparams *saved, const ut_hparams *now, char *err, size_t errlen);
/* Keeps the lines of OUT/train_log.csv up to `step` (for --resume). */
void ut_train_log_trim(const char *path, int step);

#endif
