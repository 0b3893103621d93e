/* Micro-benchmark (not a test): the INT8 GEMM against the VNNI peak.
 *
 * Usage: bench_gemm_i8 [repetitions (7)]
 * Prints one JSON line:
 *   peak_gops_per_core: vpdpbusd (zmm) on 24 independent accumulators, the
 *     unit's own throughput (64 multiply-adds = 128 ops per instruction);
 *   per layer shape of the ViT-B/16 encoder block (q|k|v, out, fc, c_proj)
 *     at batch 1 and 8, and the BERT-base shapes at 16 tokens: GOPS per core
 *     of um_linear_i8 on one thread (quantizing A included), and the
 *     fraction of the peak;
 *   vit_block_fraction_b1 / _b8: the same for the four layers together.
 * Times are thread CPU time (CLOCK_THREAD_CPUTIME_ID), minimum over the
 * repetitions: other load on a shared machine disturbs them far less than
 * wall time. Exits 77 without AVX-512 VNNI. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "gemm_i8.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static double cpu_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#if defined(__x86_64__)
/* ops per second of back-to-back vpdpbusd on one core: 12 independent
 * accumulators (more than latency x throughput), in assembly so that the
 * compiler keeps them in registers. */
static double peak_ops(int reps) {
  double best = 1e30;
  const long iters = 4000000;
  for (int r = 0; r < reps; r++) {
    const double t0 = cpu_now();
    long n = iters;
    __asm__ volatile(
        "vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
        "vpternlogd $0xff, %%zmm14, %%zmm14, %%zmm14\n\t"
        "vpabsb %%zmm14, %%zmm15\n\t"
        "vmovdqa64 %%zmm0, %%zmm1\n\t vmovdqa64 %%zmm0, %%zmm2\n\t vmovdqa64 %%zmm0, %%zmm3\n\t"
        "vmovdqa64 %%zmm0, %%zmm4\n\t vmovdqa64 %%zmm0, %%zmm5\n\t vmovdqa64 %%zmm0, %%zmm6\n\t"
        "vmovdqa64 %%zmm0, %%zmm7\n\t vmovdqa64 %%zmm0, %%zmm8\n\t vmovdqa64 %%zmm0, %%zmm9\n\t"
        "vmovdqa64 %%zmm0, %%zmm10\n\t vmovdqa64 %%zmm0, %%zmm11\n\t"
        "1:\n\t"
        "vpdpbusd %%zmm15, %%zmm14, %%zmm0\n\t vpdpbusd %%zmm15, %%zmm14, %%zmm1\n\t"
        "vpdpbusd %%zmm15, %%zmm14, %%zmm2\n\t vpdpbusd %%zmm15, %%zmm14, %%zmm3\n\t"
        "vpdpbusd %%zmm15, %%zmm14, %%zmm4\n\t vpdpbusd %%zmm15, %%zmm14, %%zmm5\n\t"
        "vpdpbusd %%zmm15, %%zmm14, %%zmm6\n\t vpdpbusd %%zmm15, %%zmm14, %%zmm7\n\t"
        "vpdpbusd %%zmm15, %%zmm14, %%zmm8\n\t vpdpbusd %%zmm15, %%zmm14, %%zmm9\n\t"
        "vpdpbusd %%zmm15, %%zmm14, %%zmm10\n\t vpdpbusd %%zmm15, %%zmm14, %%zmm11\n\t"
        "dec %0\n\t"
        "jnz 1b\n\t"
        "vzeroupper\n\t"
        : "+r"(n)
        :
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
          "xmm10", "xmm11", "xmm14", "xmm15", "cc");
    const double t = cpu_now() - t0;
    best = t < best ? t : best;
  }
  return (double)iters * 12 * 128 / best;
}
#endif

static float *rand_f(size_t n, float scale, unsigned seed) {
  float *p = malloc(n * sizeof(float));
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    p[i] = ((float)(seed >> 8) / 16777216.0f * 2.0f - 1.0f) * scale;
  }
  return p;
}

/* seconds of thread CPU time for one um_linear_i8 call, min over reps */
static double time_linear(int M, int K, int N, int reps) {
  float *A = rand_f((size_t)M * K, 1.0f, 1), *W = rand_f((size_t)N * K, 0.05f, 2);
  float *bias = rand_f((size_t)N, 0.1f, 3), *C = malloc((size_t)M * N * sizeof(float));
  um_i8_weight *w = um_i8_pack(W, N, K);
  if (!w || !C) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  um_linear_i8(A, M, K, w, bias, N, C); /* warm-up */
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    const double t0 = cpu_now();
    um_linear_i8(A, M, K, w, bias, N, C);
    const double t = cpu_now() - t0;
    best = t < best ? t : best;
  }
  um_i8_free(w);
  free(A), free(W), free(bias), free(C);
  return best;
}

int main(int argc, char **argv) {
  const int reps = argc > 1 ? atoi(argv[1]) : 7;
  if (um_i8_available() != 2) {
    printf("SKIP: no AVX-512 VNNI\n");
    return 77;
  }
  openblas_set_num_threads(1); /* um_linear_i8 runs on um_threads() = 1 */
  double peak = 0;
#if defined(__x86_64__)
  peak = peak_ops(reps);
#endif
  printf("{\"peak_gops_per_core\":%.1f", peak / 1e9);
  static const struct {
    const char *name;
    int K, N;
  } vit[4] = {{"qkv", 768, 2304}, {"out", 768, 768}, {"fc", 768, 3072}, {"cproj", 3072, 768}};
  for (int b = 0; b < 2; b++) {
    const int M = b ? 8 * 197 : 197;
    double ops_all = 0, t_all = 0;
    for (int l = 0; l < 4; l++) {
      const double t = time_linear(M, vit[l].K, vit[l].N, reps);
      const double ops = 2.0 * M * vit[l].K * vit[l].N;
      ops_all += ops;
      t_all += t;
      printf(",\"vit_%s_b%d_gops\":%.1f,\"vit_%s_b%d_fraction\":%.3f", vit[l].name, b ? 8 : 1,
             ops / t / 1e9, vit[l].name, b ? 8 : 1, ops / t / peak);
    }
    printf(",\"vit_block_b%d_gops\":%.1f,\"vit_block_fraction_b%d\":%.3f", b ? 8 : 1,
           ops_all / t_all / 1e9, b ? 8 : 1, ops_all / t_all / peak);
  }
  static const struct {
    const char *name;
    int K, N;
  } bert[3] = {{"qkv", 768, 2304}, {"inter", 768, 3072}, {"out", 3072, 768}};
  for (int l = 0; l < 3; l++) {
    const double t = time_linear(16, bert[l].K, bert[l].N, reps);
    const double ops = 2.0 * 16 * bert[l].K * bert[l].N;
    printf(",\"bert_%s_16tok_gops\":%.1f,\"bert_%s_16tok_weight_gbs\":%.1f", bert[l].name,
           ops / t / 1e9, bert[l].name, (double)bert[l].K * bert[l].N / t / 1e9);
  }
  printf("}\n");
  return 0;
}
