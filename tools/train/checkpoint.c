/* unimed-train's checkpoints (checkpoint.h): the output directory,
 * OUT/trainer_state.bin (the run's options and data fingerprint, the step,
 * the AdamW moments) and what --resume checks against it. The weights are
 * saved through unimed_trainer_save. */
#include "checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the output directory ---- */

int ut_mkdir_p(const char *dir) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", dir);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(tmp, 0777) != 0 && errno != EEXIST) return -1;
      *p = '/';
    }
  return mkdir(tmp, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

int ut_same_dir(const char *a, const char *b) {
  char ra[4096], rb[4096];
  return realpath(a, ra) && realpath(b, rb) && !strcmp(ra, rb);
}

/* ---- trainer state ---- */

/* OUT/trainer_state.bin: magic, hparams, step, parameter checksum, AdamW m, v. */
#define STATE_MAGIC "UMTRAIN3"

int ut_state_save(const char *dir, unimed_trainer *t, const ut_hparams *h, double best) {
  char path[2048], tmp[4200];
  snprintf(path, sizeof path, "%s/trainer_state.bin", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *fp = fopen(tmp, "wb");
  if (!fp) return -1;
  float *m, *v;
  unimed_trainer_optimizer_state(t, &m, &v);
  uint64_t total = unimed_trainer_n_params(t), sum = unimed_trainer_params_checksum(t);
  int32_t step = unimed_trainer_steps_done(t);
  int ok = fwrite(STATE_MAGIC, 1, 8, fp) == 8 && fwrite(h, sizeof *h, 1, fp) == 1 &&
           fwrite(&step, 4, 1, fp) == 1 && fwrite(&best, 8, 1, fp) == 1 &&
           fwrite(&total, 8, 1, fp) == 1 && fwrite(&sum, 8, 1, fp) == 1 &&
           fwrite(m, sizeof(float), total, fp) == total &&
           fwrite(v, sizeof(float), total, fp) == total;
  if (fclose(fp) != 0) ok = 0;
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return -1;
  }
  return 0;
}

int ut_state_load(const char *dir, unimed_trainer *t, ut_hparams *h, double *best, char *err,
                  size_t errlen) {
  char path[2048];
  snprintf(path, sizeof path, "%s/trainer_state.bin", dir);
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    snprintf(err, errlen, "%s: %s (not a checkpoint of unimed-train?)", path, strerror(errno));
    return -1;
  }
  float *m, *v;
  unimed_trainer_optimizer_state(t, &m, &v);
  char magic[8] = {0};
  int32_t step;
  uint64_t total, sum;
  int ok = fread(magic, 1, 8, fp) == 8 && !memcmp(magic, STATE_MAGIC, 8) &&
           fread(h, sizeof *h, 1, fp) == 1 && fread(&step, 4, 1, fp) == 1 &&
           fread(best, 8, 1, fp) == 1 && fread(&total, 8, 1, fp) == 1 &&
           fread(&sum, 8, 1, fp) == 1 && total == unimed_trainer_n_params(t) &&
           fread(m, sizeof(float), total, fp) == total &&
           fread(v, sizeof(float), total, fp) == total;
  fclose(fp);
  if (!memcmp(magic, "UMTRAIN2", 8)) {
    snprintf(err, errlen, "%s: written by an older unimed-train (no data fingerprint); it cannot "
                          "be resumed by this one", path);
    return -1;
  }
  if (!ok) {
    snprintf(err, errlen, "%s: truncated, or not for this model", path);
    return -1;
  }
  if (sum != unimed_trainer_params_checksum(t)) {
    snprintf(err, errlen, "%s: does not belong to %s/model.safetensors (interrupted save?)", path,
             dir);
    return -1;
  }
  unimed_trainer_set_steps_done(t, step);
  return 0;
}

int ut_resume_check(const ut_hparams *a, const ut_hparams *b, char *err, size_t errlen) {
#define SAME(f, fmt)                                                                         \
  if (a->f != b->f) {                                                                        \
    snprintf(err, errlen, "--resume: option %s differs from the run being resumed (" fmt     \
                          " there, " fmt " now)", #f, a->f, b->f);                           \
    return -1;                                                                               \
  }
  SAME(epochs, "%d") SAME(batch, "%d") SAME(accumulate, "%d") SAME(warmup, "%d")
  SAME(world, "%d") SAME(mode, "%d") SAME(augment, "%d") SAME(balance, "%d")
  SAME(flip, "%d") SAME(crop_area, "%g") SAME(jitter, "%g") SAME(label_aware, "%d")
  SAME(frames_per_series, "%d") SAME(lr, "%g") SAME(wd, "%g")
  SAME(grad_clip, "%g") SAME(n_samples, "%d")
#undef SAME
  if (a->data_fingerprint != b->data_fingerprint) {
    snprintf(err, errlen, "--resume: the training data differ from the run being resumed (images, "
                          "labels or report text; data fingerprint %016llx there, %016llx now)",
             (unsigned long long)a->data_fingerprint, (unsigned long long)b->data_fingerprint);
    return -1;
  }
  if (a->seed != b->seed) {
    snprintf(err, errlen, "--resume: option seed differs from the run being resumed (%llu there, "
                          "%llu now)", (unsigned long long)a->seed, (unsigned long long)b->seed);
    return -1;
  }
  return 0;
}

void ut_train_log_trim(const char *path, int step) {
  FILE *fp = fopen(path, "r");
  if (!fp) return;
  char tmp[2100];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *out = fopen(tmp, "w");
  if (!out) {
    fclose(fp);
    return;
  }
  char line[1024];
  int first = 1;
  while (fgets(line, sizeof line, fp)) {
    if (!first && atoi(line) > step) continue;
    first = 0;
    fputs(line, out);
  }
  fclose(fp);
  fclose(out);
  rename(tmp, path);
}
