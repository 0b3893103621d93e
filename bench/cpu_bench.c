/* CPU-time benchmark of the C implementation, for bench/run.py.
 *
 *   cpu_bench MODEL_DIR THREADS RUNS [PRECISION]
 *
 * Like `unimed bench` (same pixels, same prompt, one warm-up run each) but
 * also reports the process CPU time per image / prompt (all threads), which
 * other processes on a shared machine disturb far less than wall time. One
 * JSON line: {"ms_per_image_batch1": {...}, "cpu_ms_per_image_batch1": {...}, ...}.
 * Built by run.py against build-bench/model/libunimed_model.a. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "unimed_model.h"

static double clock_ms(clockid_t id) {
  struct timespec t;
  clock_gettime(id, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void stats(const char *name, double *v, int n, int last) {
  qsort(v, (size_t)n, sizeof *v, cmp);
  printf("\"%s\":{\"min\":%.3f,\"median\":%.3f,\"max\":%.3f}%s", name, v[0], v[n / 2], v[n - 1],
         last ? "" : ",");
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: cpu_bench MODEL_DIR THREADS RUNS [fp32|bf16|int8]\n");
    return 2;
  }
  const int threads = atoi(argv[2]), runs = atoi(argv[3]);
  if (threads < 1 || runs < 1) return 2;
  unimed_set_threads(threads);
  char err[512];
  unimed_load_options o = {.precision = UNIMED_PRECISION_FP32};
  if (argc > 4 && unimed_precision_parse(argv[4], &o.precision) != 0) return 2;
  unimed_model *m = unimed_model_load_opts(argv[1], &o, err, sizeof err);
  if (!m) {
    fprintf(stderr, "cpu_bench: %s\n", err);
    return 1;
  }
  const unimed_config *c = unimed_model_config(m);
  const size_t per = (size_t)3 * c->image_size * c->image_size;
  float *px = malloc(8 * per * sizeof(float)), *emb = malloc(8 * (size_t)c->embed_dim * 4);
  double *wall = malloc((size_t)runs * sizeof(double));
  double *cpu = malloc((size_t)runs * sizeof(double));
  if (!px || !emb || !wall || !cpu) return 1;
  unsigned s = 12345;
  for (size_t i = 0; i < 8 * per; i++) {
    s = s * 1103515245u + 12345u;
    px[i] = ((float)(s >> 8) / 16777216.0f) * 4.0f - 2.0f;
  }
  printf("{\"blas_core\":\"%s\",\"precision\":\"%s\",\"threads\":%d,\"runs\":%d,",
         unimed_blas_corename(), unimed_precision_name(unimed_model_precision(m)), threads, runs);
  for (int B = 1; B <= 8; B += 7) {
    for (int r = -1; r < runs; r++) {
      double w0 = clock_ms(CLOCK_MONOTONIC), c0 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
      if (unimed_encode_images(m, px, B, emb, err, sizeof err) != 0) {
        fprintf(stderr, "cpu_bench: %s\n", err);
        return 1;
      }
      if (r >= 0) {
        wall[r] = (clock_ms(CLOCK_MONOTONIC) - w0) / B;
        cpu[r] = (clock_ms(CLOCK_PROCESS_CPUTIME_ID) - c0) / B;
      }
    }
    stats(B == 1 ? "ms_per_image_batch1" : "ms_per_image_batch8", wall, runs, 0);
    stats(B == 1 ? "cpu_ms_per_image_batch1" : "cpu_ms_per_image_batch8", cpu, runs, 0);
  }
  int ids[16];
  const char *prompt = "a chest x-ray showing a small left pleural effusion and mild cardiomegaly";
  int n = unimed_tokenize(m, prompt, ids, 16, err, sizeof err);
  if (n < 2) {
    fprintf(stderr, "cpu_bench: %s\n", err);
    return 1;
  }
  const int *rows[1] = {ids};
  for (int r = -1; r < runs; r++) {
    double w0 = clock_ms(CLOCK_MONOTONIC), c0 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
    if (unimed_encode_token_ids(m, rows, &n, 1, emb, err, sizeof err) != 0) return 1;
    if (r >= 0) {
      wall[r] = clock_ms(CLOCK_MONOTONIC) - w0;
      cpu[r] = clock_ms(CLOCK_PROCESS_CPUTIME_ID) - c0;
    }
  }
  printf("\"prompt_tokens\":%d,", n);
  stats("ms_per_prompt", wall, runs, 0);
  stats("cpu_ms_per_prompt", cpu, runs, 1);
  printf("}\n");
  unimed_model_free(m);
  free(px);
  free(emb);
  free(wall);
  free(cpu);
  return 0;
}
