/* Times the C trainer's step (model/train.h) without unimed-train's data
 * pipeline: the same calls unimed-train makes per optimiser step
 * (umt_trainer_accumulate, umt_trainer_step), on fixed pseudo-random pixels
 * and captions read from a file, with wall and process CPU time per step.
 *
 *   train_step MODEL_DIR IDS_FILE BATCH STEPS THREADS
 *
 * IDS_FILE: one caption per line, its token ids separated by spaces.
 * Prints one JSON line: {"wall_s": [...], "cpu_s": [...], "loss": [...]}.
 * Built by bench/train_speed.py against build/model/libunimed_model.a. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "train.h"
#include "unimed_model.h"

static double now(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static unsigned long long rng = 88172645463325252ull;
static unsigned long long next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: train_step MODEL_DIR IDS_FILE BATCH STEPS THREADS\n");
    return 2;
  }
  const int B = atoi(argv[3]), steps = atoi(argv[4]), threads = atoi(argv[5]);
  unimed_set_threads(threads);
  FILE *f = fopen(argv[2], "r");
  if (!f) {
    perror(argv[2]);
    return 1;
  }
  int n_caps = 0, cap = 0;
  int **caps = NULL, *cap_len = NULL;
  char line[8192];
  while (fgets(line, sizeof line, f)) {
    if (n_caps == cap) {
      cap = cap ? 2 * cap : 64;
      caps = realloc(caps, cap * sizeof *caps);
      cap_len = realloc(cap_len, cap * sizeof *cap_len);
    }
    int *ids = malloc(sizeof(int) * 1024), n = 0;
    for (char *p = strtok(line, " \n"); p && n < 1024; p = strtok(NULL, " \n")) ids[n++] = atoi(p);
    if (n == 0) {
      free(ids);
      continue;
    }
    caps[n_caps] = ids;
    cap_len[n_caps++] = n;
  }
  fclose(f);
  if (n_caps == 0) {
    fprintf(stderr, "no captions in %s\n", argv[2]);
    return 1;
  }
  umt_opt_config oc = {0};
  oc.lr = 5e-4f;
  oc.beta1 = 0.9f;
  oc.beta2 = 0.98f;
  oc.eps = 1e-6f;
  oc.weight_decay = 0.1f;
  oc.grad_clip = 1.0f;
  oc.warmup = 50;
  oc.total_steps = steps > 50 ? steps : 51;
  umt_trainer T;
  char err[512];
  if (umt_trainer_init(&T, argv[1], &oc, UMT_DECAY_NO_EMBEDDINGS, err, sizeof err) != 0) {
    fprintf(stderr, "train_step: %s\n", err);
    return 1;
  }
  const int S = T.P.cfg.vision.image_size;
  const size_t per = (size_t)3 * S * S, pool = 256;
  float *images = malloc(sizeof(float) * per * pool), *pixels = malloc(sizeof(float) * per * B);
  for (size_t i = 0; i < per * pool; i++)
    images[i] = ((double)(next() >> 11) / 9007199254740992.0 - 0.5) * 3.4f;
  const int **ids = malloc(sizeof(int *) * B);
  int *lens = malloc(sizeof(int) * B);
  double *wall = calloc(steps, sizeof(double)), *cpu = calloc(steps, sizeof(double));
  double *losses = calloc(steps, sizeof(double));
  for (int s = 0; s < steps; s++) {
    double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    for (int b = 0; b < B; b++) {
      memcpy(pixels + b * per, images + (next() % pool) * per, sizeof(float) * per);
      int k = (int)(next() % (unsigned)n_caps);
      ids[b] = caps[k];
      lens[b] = cap_len[k];
    }
    if (umt_trainer_accumulate(&T, pixels, ids, lens, NULL, B, &losses[s], err, sizeof err) != 0) {
      fprintf(stderr, "train_step: %s\n", err);
      return 1;
    }
    umt_trainer_step(&T, NULL);
    wall[s] = now(CLOCK_MONOTONIC) - w0;
    cpu[s] = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
  }
  printf("{\"wall_s\": [");
  for (int s = 0; s < steps; s++) printf("%s%.6f", s ? ", " : "", wall[s]);
  printf("], \"cpu_s\": [");
  for (int s = 0; s < steps; s++) printf("%s%.6f", s ? ", " : "", cpu[s]);
  printf("], \"loss\": [");
  for (int s = 0; s < steps; s++) printf("%s%.6f", s ? ", " : "", losses[s]);
  printf("]}\n");
  umt_trainer_free(&T);
  return 0;
}
