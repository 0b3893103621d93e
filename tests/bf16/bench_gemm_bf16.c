/* Micro-benchmark (not a test): GFLOPS of um_linear_bf16 against
 * cblas_sgemm (as um_linear calls it: C = A W^T with W [N, K]) on the
 * ViT-B/16 linear layers at batch 1 and 8, and the implied GEMM time of the
 * image tower per image.
 *
 * Usage: bench_gemm_bf16 [threads (2)] [repetitions (15)] [--cpu] [--bf16-only] [--bert]
 * Times are min and median over the repetitions, runs of the two kernels
 * and of the two batch sizes interleaved (the machine may be shared: trust
 * the minimum more; a long call cannot dodge other load the way a short one
 * can, so on a busy machine large M looks slower than it is). The last
 * column, GFLOPS per CPU-second of the whole process (median), is what
 * each busy thread achieved, whatever the other load: with several threads
 * it equals the one-thread figure when the split wastes nothing (pool
 * workers sleep when idle, so only work and spinning count). --cpu times
 * one thread by its CPU time (CLOCK_THREAD_CPUTIME_ID), which other load on
 * the machine disturbs much less than wall time: per-core figures.
 * --bert: the BERT-base shapes at 16, 77 and 256 tokens instead. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gemm_bf16.h"

static clockid_t clock_id = CLOCK_MONOTONIC;

static double now(void) {
  struct timespec t;
  clock_gettime(clock_id, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double process_cpu(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* OpenBLAS's worker threads spin for about 2^28 cycles (~75 ms here) after
 * their last GEMM, and after openblas_set_num_threads, before they sleep:
 * timed meanwhile, um_linear_bf16's pool would share the cores with them. */
static void let_openblas_sleep(int threads) {
  if (threads > 1) usleep(150000);
}

static int cmp_d(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static float *rand_f(size_t n, float scale) {
  float *p = malloc(n * sizeof(float));
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  unsigned s = 12345;
  for (size_t i = 0; i < n; i++) {
    s = s * 1103515245u + 12345u;
    p[i] = ((float)((s >> 8) & 0xffff) / 32768.0f - 1.0f) * scale;
  }
  return p;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  const int reps = argc > 2 ? atoi(argv[2]) : 15;
  int bf16_only = 0, bert = 0;
  for (int i = 3; i < argc; i++) {
    if (strcmp(argv[i], "--bert") == 0) bert = 1;
    if (strcmp(argv[i], "--bf16-only") == 0) bf16_only = 1;
    if (strcmp(argv[i], "--cpu") == 0) {
      clock_id = CLOCK_THREAD_CPUTIME_ID;
      threads = 1;
    }
  }
  if (threads < 1) threads = 1;
  if (!um_bf16_available()) printf("note: no AVX512-BF16 here, timing the FP32 fallback\n");
  openblas_set_num_threads(threads); /* um_linear_bf16 uses as many (um_threads) */
  let_openblas_sleep(threads);
  printf("threads %d, %d repetitions, %s time; ms and GFLOPS as min / median\n", threads, reps,
         clock_id == CLOCK_MONOTONIC ? "wall" : "thread CPU");

  static const struct { const char *name; int K, N, per_layer; } layers[] = {
      {"patch_embed", 768, 768, 0}, {"qkv", 768, 2304, 1}, {"out_proj", 768, 768, 1},
      {"fc", 768, 3072, 1},         {"c_proj", 3072, 768, 1}};
  static const struct { const char *name; int K, N, per_layer; } bert_layers[] = {
      {"qkv (x3)", 768, 768, 1}, {"attn_out", 768, 768, 1}, {"inter", 768, 3072, 1},
      {"out", 3072, 768, 1}};
  const int batches[] = {1, 8}, tokens[] = {16, 77, 256};
  if (bert) {
    printf("%-12s %5s %5s %5s | %-17s %-15s | %-17s %-15s | %s\n", "layer", "M", "K", "N",
           "bf16 ms", "bf16 GFLOPS", "sgemm ms", "sgemm GFLOPS", "speed-up (min)");
    for (size_t ti = 0; ti < sizeof tokens / sizeof *tokens; ti++)
      for (size_t li = 0; li < sizeof bert_layers / sizeof *bert_layers; li++) {
        const int M = tokens[ti], K = bert_layers[li].K, N = bert_layers[li].N;
        float *A = rand_f((size_t)M * K, 1.0f), *W = rand_f((size_t)N * K, 0.05f);
        float *bias = rand_f((size_t)N, 0.1f), *C = rand_f((size_t)M * N, 1.0f);
        um_bf16_weight *pw = um_bf16_pack(W, N, K);
        if (!pw) return 2;
        double tb[64], ts[64];
        const int n = reps > 64 ? 64 : reps < 1 ? 1 : reps;
        um_linear_bf16(A, M, K, pw, bias, N, C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, W, K, 0.0f, C, N);
        for (int r = 0; r < n; r++) {
          let_openblas_sleep(threads);
          double t0 = now();
          um_linear_bf16(A, M, K, pw, bias, N, C);
          tb[r] = now() - t0;
          t0 = now();
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, W, K, 0.0f,
                      C, N);
          ts[r] = now() - t0;
        }
        qsort(tb, (size_t)n, sizeof(double), cmp_d);
        qsort(ts, (size_t)n, sizeof(double), cmp_d);
        const double fl = 2.0 * M * N * K;
        printf("%-12s %5d %5d %5d | %7.3f / %7.3f %6.0f / %6.0f | %7.3f / %7.3f %6.0f / %6.0f | "
               "%.2fx\n",
               bert_layers[li].name, M, K, N, tb[0] * 1e3, tb[n / 2] * 1e3, fl / tb[0] * 1e-9,
               fl / tb[n / 2] * 1e-9, ts[0] * 1e3, ts[n / 2] * 1e3, fl / ts[0] * 1e-9,
               fl / ts[n / 2] * 1e-9, ts[0] / tb[0]);
        um_bf16_free(pw);
        free(A);
        free(W);
        free(bias);
        free(C);
      }
    return 0;
  }
  /* Per layer, both batch sizes are timed in the same repetitions
   * (alternating), so that other load on the machine hits both alike. */
  enum { NB = sizeof batches / sizeof *batches, NL = sizeof layers / sizeof *layers };
  const int n = reps > 64 ? 64 : reps < 1 ? 1 : reps;
  static double tb[NB][NL][64], ts[NB][NL][64], cb[NB][NL][64];
  for (int li = 0; li < NL; li++) {
    const int K = layers[li].K, N = layers[li].N;
    float *A[NB], *C[NB];
    int M[NB];
    float *W = rand_f((size_t)N * K, 0.05f), *bias = rand_f((size_t)N, 0.1f);
    um_bf16_weight *pw = um_bf16_pack(W, N, K);
    if (!pw) return 2;
    for (int bi = 0; bi < NB; bi++) {
      M[bi] = layers[li].per_layer ? batches[bi] * 197 : batches[bi] * 196;
      A[bi] = rand_f((size_t)M[bi] * K, 1.0f);
      C[bi] = rand_f((size_t)M[bi] * N, 1.0f);
      um_linear_bf16(A[bi], M[bi], K, pw, bias, N, C[bi]); /* warm-up */
      if (!bf16_only)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M[bi], N, K, 1.0f, A[bi], K, W, K,
                    0.0f, C[bi], N);
    }
    for (int r = 0; r < n; r++)
      for (int bi = 0; bi < NB; bi++) {
        if (!bf16_only) let_openblas_sleep(threads);
        double t0 = now(), c0 = process_cpu();
        um_linear_bf16(A[bi], M[bi], K, pw, bias, N, C[bi]);
        tb[bi][li][r] = now() - t0;
        cb[bi][li][r] = process_cpu() - c0;
        ts[bi][li][r] = 0;
        if (!bf16_only) {
          t0 = now();
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M[bi], N, K, 1.0f, A[bi], K, W,
                      K, 0.0f, C[bi], N);
          ts[bi][li][r] = now() - t0;
        }
      }
    for (int bi = 0; bi < NB; bi++) {
      free(A[bi]);
      free(C[bi]);
    }
    um_bf16_free(pw);
    free(W);
    free(bias);
  }
  printf("%-12s %5s %5s %5s | %-17s %-15s | %-17s %-15s | %-14s | %s\n", "layer", "M", "K",
         "N", "bf16 ms", "bf16 GFLOPS", "sgemm ms", "sgemm GFLOPS", "speed-up (min)",
         "bf16 GF/CPU-s");
  for (int bi = 0; bi < NB; bi++) {
    const int B = batches[bi];
    double tower_bf16 = 0, tower_sgemm = 0, tower_flops = 0;
    for (int li = 0; li < NL; li++) {
      const int K = layers[li].K, N = layers[li].N;
      const int M = layers[li].per_layer ? B * 197 : B * 196;
      double *b = tb[bi][li], *g = ts[bi][li], *cpu = cb[bi][li];
      qsort(b, (size_t)n, sizeof(double), cmp_d);
      qsort(g, (size_t)n, sizeof(double), cmp_d);
      qsort(cpu, (size_t)n, sizeof(double), cmp_d);
      const double fl = 2.0 * M * N * K;
      printf("%-12s %5d %5d %5d | %7.3f / %7.3f %6.0f / %6.0f | %7.3f / %7.3f %6.0f / %6.0f | "
             "%13.2fx | %6.0f\n",
             layers[li].name, M, K, N, b[0] * 1e3, b[n / 2] * 1e3, fl / b[0] * 1e-9,
             fl / b[n / 2] * 1e-9, g[0] * 1e3, g[n / 2] * 1e3, g[0] > 0 ? fl / g[0] * 1e-9 : 0,
             g[n / 2] > 0 ? fl / g[n / 2] * 1e-9 : 0, b[0] > 0 ? g[0] / b[0] : 0,
             cpu[n / 2] > 0 ? fl / cpu[n / 2] * 1e-9 : 0);
      const int times = layers[li].per_layer ? 12 : 1;
      tower_bf16 += times * b[n / 2];
      tower_sgemm += times * g[n / 2];
      tower_flops += times * fl;
    }
    printf("batch %d: ViT-B/16 linear layers (12 blocks + patch embed, %.1f GFLOP/image): "
           "%.1f ms/image bf16, %.1f ms/image sgemm (medians)\n\n",
           B, tower_flops / B * 1e-9, tower_bf16 / B * 1e3, tower_sgemm / B * 1e3);
  }
  return 0;
}
