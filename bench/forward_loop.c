/* A forward pass in a loop, for profilers (bench/perf_ops.py):
 *
 *   forward_loop MODEL_DIR THREADS PRECISION BATCH RUNS [prompt]
 *
 * Loads the model, then encodes RUNS batches of BATCH images (the pixels of
 * bench/cpu_bench.c), or with "prompt" RUNS times its 16-token prompt, after
 * one warm-up, and prints the wall and process CPU time per image / prompt.
 * Nothing else runs, so a sampling profiler's samples are the forward
 * pass's but for the load. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "unimed_model.h"

static double clock_ms(clockid_t id) {
  struct timespec t;
  clock_gettime(id, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: forward_loop MODEL_DIR THREADS fp32|bf16|int8 BATCH RUNS [prompt]\n");
    return 2;
  }
  unimed_set_threads(atoi(argv[2]));
  unimed_load_options o = {.precision = UNIMED_PRECISION_FP32};
  if (unimed_precision_parse(argv[3], &o.precision) != 0) return 2;
  const int B = atoi(argv[4]), runs = atoi(argv[5]), prompt = argc > 6 && !strcmp(argv[6], "prompt");
  if (B < 1 || B > 8 || runs < 1) return 2;
  char err[512];
  unimed_model *m = unimed_model_load_opts(argv[1], &o, err, sizeof err);
  if (!m) {
    fprintf(stderr, "forward_loop: %s\n", err);
    return 1;
  }
  const unimed_config *c = unimed_model_config(m);
  const size_t per = (size_t)3 * c->image_size * c->image_size;
  float *px = malloc(8 * per * sizeof(float)), *emb = malloc(8 * (size_t)c->embed_dim * 4);
  if (!px || !emb) return 1;
  unsigned s = 12345;
  for (size_t i = 0; i < 8 * per; i++) {
    s = s * 1103515245u + 12345u;
    px[i] = ((float)(s >> 8) / 16777216.0f) * 4.0f - 2.0f;
  }
  int ids[16];
  int n = unimed_tokenize(m, "a chest x-ray showing a small left pleural effusion and mild cardiomegaly",
                          ids, 16, err, sizeof err);
  const int *rows[1] = {ids};
  double w0 = 0, c0 = 0;
  for (int r = -1; r < runs; r++) {
    if (r == 0) w0 = clock_ms(CLOCK_MONOTONIC), c0 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
    const int rc = prompt ? unimed_encode_token_ids(m, rows, &n, 1, emb, err, sizeof err)
                          : unimed_encode_images(m, px, B, emb, err, sizeof err);
    if (rc != 0) {
      fprintf(stderr, "forward_loop: %s\n", err);
      return 1;
    }
  }
  const double div = prompt ? runs : (double)runs * B;
  printf("wall %.2f cpu %.2f ms per %s\n", (clock_ms(CLOCK_MONOTONIC) - w0) / div,
         (clock_ms(CLOCK_PROCESS_CPUTIME_ID) - c0) / div, prompt ? "prompt" : "image");
  unimed_model_free(m);
  free(px);
  free(emb);
  return 0;
}
