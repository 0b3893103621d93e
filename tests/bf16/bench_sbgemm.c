/* Micro-benchmark (not a test): our AVX512-BF16 linear layers
 * (um_linear_bf16, model/gemm_bf16.c) against OpenBLAS's BF16 GEMM
 * (cblas_sbgemm, in OpenBLAS builds with BUILD_BFLOAT16, e.g. Debian 13's
 * 0.3.29; Debian 12's 0.3.21 declares it in cblas.h but does not export it,
 * so it is looked up at run time).
 *
 * Usage: bench_sbgemm [threads (2)] [repetitions (15)]
 *
 * Same shapes (the ViT-B/16 and BERT-base linear layers, C = A W^T with W
 * [N, K] as nn.Linear stores it), same thread count (OpenBLAS's, which
 * um_linear_bf16 takes over), both computing from FP32 activations: the
 * OpenBLAS column includes rounding A to BF16 (cblas_sbstobf16), as our
 * kernel does it on the fly; the weights are converted once, outside the
 * timing, for both. The two run alternately in every repetition, so that
 * other load on a shared machine hits both alike; min and median reported.
 * Also printed: the largest difference between the two results relative to
 * the largest |C| (both sum exact BF16 products in FP32: only the order of
 * the sums differs). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_DEFAULT */
#endif
#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gemm_bf16.h"

typedef void (*sbgemm_fn)(enum CBLAS_ORDER, enum CBLAS_TRANSPOSE, enum CBLAS_TRANSPOSE, blasint,
                          blasint, blasint, float, const uint16_t *, blasint, const uint16_t *,
                          blasint, float, float *, blasint);
typedef void (*sbstobf16_fn)(blasint, const float *, blasint, uint16_t *, blasint);

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

static float *rand_f(size_t n, float scale, unsigned seed) {
  float *p = xmalloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    p[i] = ((float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f) * scale;
  }
  return p;
}

/* OpenBLAS's threads spin for a while after a call; let them sleep before
 * our pool runs (bench_gemm_bf16.c says why). */
static void let_openblas_sleep(int threads) {
  if (threads > 1) usleep(150000);
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  int reps = argc > 2 ? atoi(argv[2]) : 15;
  if (threads < 1) threads = 1;
  if (reps < 1) reps = 1;
  if (reps > 64) reps = 64;
  sbgemm_fn sbgemm = (sbgemm_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "cblas_sbgemm");
  sbstobf16_fn tobf16 = (sbstobf16_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "cblas_sbstobf16");
  const char *(*config)(void) =
      (const char *(*)(void))(uintptr_t)dlsym(RTLD_DEFAULT, "openblas_get_config");
  char *(*corename)(void) = (char *(*)(void))(uintptr_t)dlsym(RTLD_DEFAULT, "openblas_get_corename");
  printf("OpenBLAS: %s, core %s\n", config ? config() : "?", corename ? corename() : "?");
  if (!sbgemm || !tobf16) {
    printf("this OpenBLAS has no cblas_sbgemm (built without BUILD_BFLOAT16): ours runs\n");
    return 0;
  }
  if (!um_bf16_available()) {
    printf("no AVX512-BF16 on this CPU: our kernels fall back to FP32 sgemm; nothing to compare\n");
    return 0;
  }
  openblas_set_num_threads(threads);
  printf("threads %d, %d repetitions, wall time; ms as min / median, ours and OpenBLAS "
         "alternating\n", threads, reps);
  static const struct { const char *tower, *name; int M, K, N; } shapes[] = {
      {"ViT", "qkv", 197, 768, 2304},      {"ViT", "out_proj", 197, 768, 768},
      {"ViT", "fc", 197, 768, 3072},       {"ViT", "c_proj", 197, 3072, 768},
      {"ViT x8", "qkv", 1576, 768, 2304},  {"ViT x8", "fc", 1576, 768, 3072},
      {"ViT x8", "c_proj", 1576, 3072, 768},
      {"BERT 77", "qkv (x3)", 77, 768, 768}, {"BERT 77", "inter", 77, 768, 3072},
      {"BERT 77", "out", 77, 3072, 768},   {"BERT 256", "inter", 256, 768, 3072},
      {"BERT 256", "out", 256, 3072, 768}};
  printf("%-9s %-9s %5s %5s %5s | %-17s | %-17s | %-17s | %8s | %s\n", "tower", "layer", "M",
         "K", "N", "ours ms", "OpenBLAS ms", "(sbgemm alone)", "faster", "max rel diff");
  for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
    const int M = shapes[si].M, K = shapes[si].K, N = shapes[si].N;
    float *A = rand_f((size_t)M * K, 1.0f, 7u + (unsigned)si);
    float *W = rand_f((size_t)N * K, 0.05f, 99u + (unsigned)si);
    float *C1 = xmalloc((size_t)M * N * sizeof(float)), *C2 = xmalloc((size_t)M * N * sizeof(float));
    uint16_t *Ab = xmalloc((size_t)M * K * 2), *Wb = xmalloc((size_t)N * K * 2);
    um_bf16_weight *pw = um_bf16_pack(W, N, K);
    if (!pw) return 2;
    tobf16(N * K, W, 1, Wb, 1);
    double t_ours[64], t_ob[64], t_sb[64];
    /* warm-up, and the results compared */
    um_linear_bf16(A, M, K, pw, NULL, N, C1);
    tobf16(M * K, A, 1, Ab, 1);
    sbgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, Ab, K, Wb, K, 0.0f, C2, N);
    double maxc = 0, maxd = 0;
    for (size_t i = 0; i < (size_t)M * N; i++) {
      if (fabs(C1[i]) > maxc) maxc = fabs(C1[i]);
      if (fabs(C1[i] - C2[i]) > maxd) maxd = fabs(C1[i] - C2[i]);
    }
    for (int r = 0; r < reps; r++) {
      let_openblas_sleep(threads);
      double t0 = now();
      um_linear_bf16(A, M, K, pw, NULL, N, C1);
      t_ours[r] = now() - t0;
      t0 = now();
      tobf16(M * K, A, 1, Ab, 1);
      double t1 = now();
      sbgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, Ab, K, Wb, K, 0.0f, C2, N);
      t_ob[r] = now() - t0;
      t_sb[r] = now() - t1;
    }
    qsort(t_ours, (size_t)reps, sizeof(double), cmp_d);
    qsort(t_ob, (size_t)reps, sizeof(double), cmp_d);
    qsort(t_sb, (size_t)reps, sizeof(double), cmp_d);
    const double ratio = t_ob[reps / 2] / t_ours[reps / 2];
    printf("%-9s %-9s %5d %5d %5d | %7.3f / %7.3f | %7.3f / %7.3f | %7.3f / %7.3f | %s %5.2fx | "
           "%.1e\n",
           shapes[si].tower, shapes[si].name, M, K, N, t_ours[0] * 1e3, t_ours[reps / 2] * 1e3,
           t_ob[0] * 1e3, t_ob[reps / 2] * 1e3, t_sb[0] * 1e3, t_sb[reps / 2] * 1e3,
           ratio >= 1 ? "ours" : "OBLAS", ratio >= 1 ? ratio : 1 / ratio,
           maxc > 0 ? maxd / maxc : 0);
    um_bf16_free(pw);
    free(A);
    free(W);
    free(C1);
    free(C2);
    free(Ab);
    free(Wb);
  }
  return 0;
}
