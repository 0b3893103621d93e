/* Memory read bandwidth, for bench/run.py: what bounds a text prompt (every
 * FP32 weight of BERT is read once per prompt).
 *
 *   membw [MB]        (default 512)
 *
 * Sums a buffer much larger than the caches with 1 and 2 threads, best of 5;
 * prints {"read_gbs_1t": x, "read_gbs_2t": y}. Plain C: the compiler
 * vectorises the sum (several accumulators keep it load-bound). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static float *buf;
static volatile float sink[2];

typedef struct {
  size_t lo, hi;
  int id;
} part;

static void *sum_part(void *p) {
  const part *a = p;
  float s[16] = {0};
  for (size_t i = a->lo; i + 16 <= a->hi; i += 16)
    for (int j = 0; j < 16; j++) s[j] += buf[i + j];
  float t = 0;
  for (int j = 0; j < 16; j++) t += s[j];
  sink[a->id] = t;
  return NULL;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  size_t mb = argc > 1 ? (size_t)atol(argv[1]) : 512;
  size_t n = mb * 1024 * 1024 / sizeof(float);
  buf = aligned_alloc(64, n * sizeof(float));
  if (!buf) return 1;
  for (size_t i = 0; i < n; i++) buf[i] = 1.0f;
  double gbs[2];
  for (int th = 1; th <= 2; th++) {
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
      pthread_t t[2];
      part p[2];
      double t0 = now();
      for (int i = 0; i < th; i++) {
        p[i] = (part){n / th * i, n / th * (i + 1), i};
        pthread_create(&t[i], NULL, sum_part, &p[i]);
      }
      for (int i = 0; i < th; i++) pthread_join(t[i], NULL);
      double d = now() - t0;
      best = d < best ? d : best;
    }
    gbs[th - 1] = (double)n * sizeof(float) / best / 1e9;
  }
  printf("{\"read_gbs_1t\": %.1f, \"read_gbs_2t\": %.1f}\n", gbs[0], gbs[1]);
  free(buf);
  return 0;
}
