/* model/gemm_bf16: um_linear_bf16 and its fused variants against FP32
 * references.
 *
 *  1. vs cblas_sgemm on the BF16-rounded inputs: the products are then the
 *     same, only the summation order differs, so each element must agree
 *     to 1e-5 of sum_k |a_k w_k| (+ |bias|);
 *  2. vs cblas_sgemm on the unrounded inputs: within the BF16 bound
 *     (2^-7 + 2^-16) * sum_k |a_k w_k| (each factor off by at most 2^-8
 *     relative) plus the same summation slack;
 *  3. bitwise the same results with 1, 2 and 3 threads, and row by row
 *     (M = 1 calls) as in one call (AVX512-BF16 path);
 *  4. the fused epilogues (residual add, QuickGELU, GELU) against the
 *     plain call followed by the scalar operation;
 *  5. calls from two application threads at once, while a third runs
 *     other parallel regions on the same pool (model/threads.c: one caller
 *     gets the pool, the others run alone), give the same bits, and every
 *     task of those regions runs exactly once;
 *  6. um_bf16_split: its high part is um_bf16_round's value bit for bit,
 *     its low part the exact rest (NaN, infinity, subnormals, ties).
 *
 * Usage: test_gemm_bf16 [--fallback]. Without AVX512-BF16 it exits 77
 * (skipped); --fallback sets UNIMED_SIMD=0 and checks the portable path
 * (BF16 weights widened to FP32, A unrounded) the same way.
 *
 * Threads: the BF16 GEMM runs on um_threads() threads, OpenBLAS's count
 * outside a forward pass; the references set OpenBLAS to one thread while
 * they run (one fixed summation order). */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_bf16.h"
#include "internal.h"

static int failures;
static int fallback_mode;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)((rng >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

/* Random values, some of them exact BF16 rounding ties (1 + (2j+1)/256) * 2^e
 * to check round-half-even, and a few larger magnitudes. */
static void fill(float *x, size_t n, float scale) {
  for (size_t i = 0; i < n; i++) {
    float v = frand() * scale;
    if (i % 7 == 3) {
      const int j = (int)((frand() + 1.0f) * 64.0f) & 127, e = (int)((frand() + 1.0f) * 3.0f) - 3;
      v = ldexpf(1.0f + (2 * j + 1) / 256.0f, e) * (frand() < 0 ? -1.0f : 1.0f);
    } else if (i % 61 == 5) {
      v *= 40.0f;
    }
    x[i] = v;
  }
}

static float *alloc_f(size_t n) {
  float *p = malloc((n ? n : 1) * sizeof(float));
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

/* ref = A W^T + bias, mag = |A| |W|^T + |bias| (for the error scale). */
static void reference(const float *A, const float *W, const float *bias, int M, int N, int K,
                      float *ref, float *mag) {
  const int threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
  float *absA = alloc_f((size_t)M * K), *absW = alloc_f((size_t)N * K);
  for (size_t i = 0; i < (size_t)M * K; i++) absA[i] = fabsf(A[i]);
  for (size_t i = 0; i < (size_t)N * K; i++) absW[i] = fabsf(W[i]);
  for (int r = 0; r < M; r++)
    for (int c = 0; c < N; c++) {
      ref[(size_t)r * N + c] = bias ? bias[c] : 0.0f;
      mag[(size_t)r * N + c] = bias ? fabsf(bias[c]) : 0.0f;
    }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, W, K, 1.0f, ref, N);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, absA, K, absW, K, 1.0f, mag,
              N);
  free(absA);
  free(absW);
  openblas_set_num_threads(threads);
}

/* max over elements of |c - ref| / (mag + tiny); fails above tol. */
static double check(const char *what, int M, int N, int K, const float *c, const float *ref,
                    const float *mag, double tol) {
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < (size_t)M * N; i++) {
    const double e = fabs((double)c[i] - ref[i]) / ((double)mag[i] + 1e-30);
    if (!(e <= worst)) { /* catches NaN too */
      worst = isnan(e) ? INFINITY : e;
      at = i;
    }
  }
  if (!(worst <= tol)) {
    failures++;
    fprintf(stderr, "FAIL %s M=%d N=%d K=%d: error %.3g (tol %.3g) at [%zu,%zu]: %.9g vs %.9g\n",
            what, M, N, K, worst, tol, at / (size_t)N, at % (size_t)N, c[at], ref[at]);
  }
  return worst;
}

static double max_rounded = 0, max_unrounded = 0, frob_unrounded = 0;

/* One shape: checks 1-3, and 4 when epi is set. */
static void run_shape(int M, int N, int K, int with_bias, int epi) {
  float *A = alloc_f((size_t)M * K), *W = alloc_f((size_t)N * K), *bias = alloc_f((size_t)N);
  float *Ar = alloc_f((size_t)M * K), *Wr = alloc_f((size_t)N * K);
  float *C = alloc_f((size_t)M * N), *C2 = alloc_f((size_t)M * N);
  float *ref = alloc_f((size_t)M * N), *mag = alloc_f((size_t)M * N);
  fill(A, (size_t)M * K, 2.0f);
  fill(W, (size_t)N * K, 0.05f);
  fill(bias, (size_t)N, 0.5f);
  for (size_t i = 0; i < (size_t)M * K; i++) Ar[i] = um_bf16_round(A[i]);
  for (size_t i = 0; i < (size_t)N * K; i++) Wr[i] = um_bf16_round(W[i]);
  const float *b = with_bias ? bias : NULL;

  um_bf16_weight *pw = um_bf16_pack(W, N, K);
  if (!pw) {
    fprintf(stderr, "FAIL pack %dx%d\n", N, K);
    failures++;
    goto out;
  }
  if (um_bf16_rows(pw) != N || um_bf16_cols(pw) != K ||
      um_bf16_bytes(pw) < (size_t)N * K * 2 ||
      ((N % 32 == 0 && K % 32 == 0) && um_bf16_bytes(pw) != (size_t)N * K * 2)) {
    fprintf(stderr, "FAIL size of packed %dx%d: %zu bytes\n", N, K, um_bf16_bytes(pw));
    failures++;
  }

  openblas_set_num_threads(2);
  for (size_t i = 0; i < (size_t)M * N; i++) C[i] = NAN; /* every element must be written */
  um_linear_bf16(A, M, K, pw, b, N, C);

  /* 1. same products, other summation order (the fallback multiplies the
   *    unrounded A by the rounded W) */
  reference(fallback_mode ? A : Ar, Wr, b, M, N, K, ref, mag);
  double e = check("vs rounded-input sgemm", M, N, K, C, ref, mag, 1e-5);
  if (e > max_rounded) max_rounded = e;

  /* 2. vs the FP32 GEMM of the unrounded inputs */
  reference(A, W, b, M, N, K, ref, mag);
  e = check("vs fp32 sgemm", M, N, K, C, ref, mag, fallback_mode ? 0x1p-8 + 1e-5 : 0x1p-7 + 0x1p-16 + 1e-5);
  if (e > max_unrounded) max_unrounded = e;
  double num = 0, den = 0;
  for (size_t i = 0; i < (size_t)M * N; i++) {
    num += ((double)C[i] - ref[i]) * ((double)C[i] - ref[i]);
    den += (double)ref[i] * ref[i];
  }
  if (K >= 768 && den > 0 && sqrt(num / den) > frob_unrounded) frob_unrounded = sqrt(num / den);

  /* 3. thread counts and row-by-row calls give the same bits (not the
   *    fallback: it sums as multi-threaded OpenBLAS does outside a forward
   *    pass, which depends on OpenBLAS's thread count) */
  for (int nt = 1; nt <= 3 && !fallback_mode; nt += 2) {
    openblas_set_num_threads(nt);
    um_linear_bf16(A, M, K, pw, b, N, C2);
    if (memcmp(C, C2, (size_t)M * N * sizeof(float)) != 0) {
      fprintf(stderr, "FAIL M=%d N=%d K=%d: %d threads differ from 2\n", M, N, K, nt);
      failures++;
    }
  }
  openblas_set_num_threads(2);
  if (!fallback_mode && M > 1 && (size_t)M * N * K < 50000000) {
    for (int r = 0; r < M; r++)
      um_linear_bf16(A + (size_t)r * K, 1, K, pw, b, N, C2 + (size_t)r * N);
    if (memcmp(C, C2, (size_t)M * N * sizeof(float)) != 0) {
      fprintf(stderr, "FAIL M=%d N=%d K=%d: row-by-row calls differ\n", M, N, K);
      failures++;
    }
  }

  /* 4. fused epilogues */
  if (epi) {
    /* residual add: C2 = R; C2 += A W^T + b must equal fl(C + R) */
    for (size_t i = 0; i < (size_t)M * N; i++) C2[i] = ref[i] = frand();
    um_linear_bf16_acc(A, M, K, pw, b, N, C2);
    for (size_t i = 0; i < (size_t)M * N; i++)
      if (fallback_mode ? !(fabsf(C2[i] - (C[i] + ref[i])) <= 1e-5f * (mag[i] + 1.0f))
                        : C2[i] != C[i] + ref[i]) {
        fprintf(stderr, "FAIL acc M=%d N=%d K=%d at %zu: %.9g vs %.9g\n", M, N, K, i, C2[i],
                C[i] + ref[i]);
        failures++;
        break;
      }
    um_linear_bf16_quick_gelu(A, M, K, pw, b, N, C2);
    for (size_t i = 0; i < (size_t)M * N; i++) {
      const double x = C[i], want = x / (1.0 + exp(-1.702 * x));
      if (!(fabs(C2[i] - want) <= 4e-7 * fabs(want) + 1e-7 * fabs(x) + 1e-30)) {
        fprintf(stderr, "FAIL quick_gelu M=%d N=%d K=%d at x=%.9g: %.9g vs %.9g\n", M, N, K,
                x, C2[i], want);
        failures++;
        break;
      }
    }
    um_linear_bf16_gelu(A, M, K, pw, b, N, C2);
    for (size_t i = 0; i < (size_t)M * N; i++) {
      const double x = C[i], want = 0.5 * x * erfc(-x / sqrt(2.0));
      if (!(fabs(C2[i] - want) <= 4e-7 * fabs(want) + 2e-7 * fabs(x) + 1e-30)) {
        fprintf(stderr, "FAIL gelu M=%d N=%d K=%d at x=%.9g: %.9g vs %.9g\n", M, N, K, x,
                C2[i], want);
        failures++;
        break;
      }
    }
  }
out:
  um_bf16_free(pw);
  free(A);
  free(W);
  free(bias);
  free(Ar);
  free(Wr);
  free(C);
  free(C2);
  free(ref);
  free(mag);
}

typedef struct {
  const float *A;
  const um_bf16_weight *W;
  const float *bias;
  int M, N, K;
  float *C;
} call_args;

static void *call_many(void *p) {
  const call_args *a = p;
  for (int i = 0; i < 20; i++) um_linear_bf16(a->A, a->M, a->K, a->W, a->bias, a->N, a->C);
  return NULL;
}

/* Counts each task of a region: any task run twice or not at all shows. */
typedef struct {
  int n;
  int *runs;
} count_ctx;

static void count_task(void *ctx, int task, int thread) {
  (void)thread;
  const count_ctx *c = ctx;
  __atomic_fetch_add(&c->runs[task], 1, __ATOMIC_RELAXED);
}

static void *regions_many(void *p) {
  int *bad = p;
  int runs[257];
  for (int i = 0; i < 2000; i++) {
    count_ctx c = {1 + i % 257, runs};
    memset(runs, 0, sizeof runs);
    um_parallel_for(c.n, UM_MAX_THREADS, count_task, &c);
    for (int t = 0; t < c.n; t++)
      if (runs[t] != 1) *bad = 1;
  }
  return NULL;
}

/* 5. concurrent callers */
static void check_concurrent(void) {
  const int M = 197, N = 768, K = 768;
  float *A = alloc_f((size_t)M * K), *W = alloc_f((size_t)N * K), *bias = alloc_f((size_t)N);
  float *C0 = alloc_f((size_t)M * N), *C1 = alloc_f((size_t)M * N), *C2 = alloc_f((size_t)M * N);
  fill(A, (size_t)M * K, 1.0f);
  fill(W, (size_t)N * K, 0.05f);
  fill(bias, (size_t)N, 0.5f);
  um_bf16_weight *pw = um_bf16_pack(W, N, K);
  openblas_set_num_threads(2);
  um_linear_bf16(A, M, K, pw, bias, N, C0);
  call_args a1 = {A, pw, bias, M, N, K, C1}, a2 = {A, pw, bias, M, N, K, C2};
  pthread_t t1, t2, t3;
  int regions_bad = 0;
  if (pthread_create(&t1, NULL, call_many, &a1) || pthread_create(&t2, NULL, call_many, &a2) ||
      pthread_create(&t3, NULL, regions_many, &regions_bad)) {
    fprintf(stderr, "FAIL pthread_create\n");
    failures++;
  } else {
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    pthread_join(t3, NULL);
    if (regions_bad) {
      fprintf(stderr, "FAIL a concurrent parallel region ran a task twice or not at all\n");
      failures++;
    }
    if (memcmp(C0, C1, (size_t)M * N * sizeof(float)) ||
        memcmp(C0, C2, (size_t)M * N * sizeof(float))) {
      fprintf(stderr, "FAIL concurrent calls differ\n");
      failures++;
    }
  }
  um_bf16_free(pw);
  free(A);
  free(W);
  free(bias);
  free(C0);
  free(C1);
  free(C2);
}

/* The activations on chosen arguments, incl. tails and large |x|. */
static void check_activations(void) {
  const int N = 64, K = 1;
  float W[64], x[1] = {1.0f}, C[64];
  const float xs[] = {-30, -12, -9, -6, -4, -3, -2, -1.5f, -1, -0.5f, -0.1f, -1e-3f, 0,
                      1e-3f, 0.1f, 0.5f, 1, 1.5f, 2, 3, 4, 6, 9, 12, 30, 100, -100};
  const int n = (int)(sizeof xs / sizeof xs[0]);
  for (int i = 0; i < N; i++) W[i] = i < n ? xs[i] : 0.25f * (float)i;
  um_bf16_weight *pw = um_bf16_pack(W, N, K);
  for (int g = 0; g < 2; g++) {
    if (g == 0) um_linear_bf16_quick_gelu(x, 1, K, pw, NULL, N, C);
    else um_linear_bf16_gelu(x, 1, K, pw, NULL, N, C);
    for (int i = 0; i < N; i++) {
      const double v = um_bf16_round(W[i]);
      const double want = g == 0 ? v / (1.0 + exp(-1.702 * v)) : 0.5 * v * erfc(-v / sqrt(2.0));
      if (!(fabs(C[i] - want) <= 4e-7 * fabs(want) + 2e-7 * fabs(v) + 1e-37)) {
        fprintf(stderr, "FAIL %s(%g) = %.9g, want %.9g\n", g ? "gelu" : "quick_gelu", v, C[i],
                want);
        failures++;
      }
    }
  }
  um_bf16_free(pw);
}

int main(int argc, char **argv) {
  fallback_mode = argc > 1 && strcmp(argv[1], "--fallback") == 0;
  if (fallback_mode) setenv("UNIMED_SIMD", "0", 1);
  if (!fallback_mode && !um_bf16_available()) {
    printf("SKIP: this CPU lacks AVX512-BF16 (or UNIMED_SIMD=0); run with --fallback for the "
           "portable path\n");
    return 77;
  }
  if (fallback_mode && um_bf16_available()) {
    fprintf(stderr, "FAIL: UNIMED_SIMD=0 did not disable the BF16 kernels\n");
    return 1;
  }

  /* rounding */
  const struct { float in, out; } r[] = {
      {1.0f + 1.0f / 256, 1.0f},  {1.0f + 3.0f / 256, 1.0f + 4.0f / 256},
      {-1.0f - 1.0f / 256, -1.0f}, {1.0f + 1.0f / 256 + 1.0f / 65536, 1.0f + 2.0f / 256},
      {1e-39f, 0.0f},             {3.4e38f, INFINITY}};
  for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
    if (um_bf16_round(r[i].in) != r[i].out) {
      fprintf(stderr, "FAIL um_bf16_round(%.9g) = %.9g, want %.9g\n", r[i].in,
              um_bf16_round(r[i].in), r[i].out);
      failures++;
    }

  /* um_bf16_split (the text tower's two BF16 parts): hi is um_bf16_round's
   * value bit for bit, lo the exact rest, on both paths; tails too */
  {
    enum { NS = 103 };
    float a[NS], hi[NS], lo[NS];
    for (int i = 0; i < NS; i++) a[i] = (float)(frand() * pow(2.0, (i % 40) - 20));
    a[0] = 1.0f + 1.0f / 256, a[1] = -1.0f - 3.0f / 256, a[2] = 1e-39f, a[3] = -0.0f;
    a[4] = INFINITY, a[5] = 3.4e38f, a[6] = NAN, a[100] = 1.0f + 1.0f / 256;
    um_bf16_split(a, NS, hi, lo);
    int split_ok = 1;
    for (int i = 0; i < NS; i++) {
      const float h = um_bf16_round(a[i]);
      if (a[i] != a[i]) {
        if (hi[i] == hi[i]) split_ok = 0; /* NaN stays NaN */
        continue;
      }
      if (memcmp(&hi[i], &h, sizeof h) != 0) split_ok = 0;
      if (isfinite(h) && lo[i] != a[i] - h) split_ok = 0;
    }
    if (!split_ok) {
      fprintf(stderr, "FAIL um_bf16_split differs from um_bf16_round\n");
      failures++;
    }
  }

  const int Ms[] = {1, 3, 13, 14, 15, 17, 29, 197};
  const int Ns[] = {1, 3, 17, 32, 33, 100};
  const int Ks[] = {1, 2, 3, 17, 31, 32, 33, 100};
  int cases = 0;
  for (size_t i = 0; i < sizeof Ms / sizeof *Ms; i++)
    for (size_t j = 0; j < sizeof Ns / sizeof *Ns; j++)
      for (size_t k = 0; k < sizeof Ks / sizeof *Ks; k++, cases++)
        run_shape(Ms[i], Ns[j], Ks[k], (int)((i + j + k) & 1), (int)((i + j + k) % 5 == 0));
  /* the model's shapes (ViT-B/16 batch 1 and 8, BERT) and odd big ones */
  const int big[][3] = {{197, 768, 768},  {197, 2304, 768}, {197, 3072, 768}, {197, 768, 3072},
                        {1576, 768, 768}, {1576, 2304, 768}, {1576, 3072, 768}, {1576, 768, 3072},
                        {1568, 768, 768}, {77, 768, 768},   {16, 3072, 768},  {256, 768, 3072},
                        {3, 3072, 3072},  {1, 512, 768},    {61, 1000, 1001}, {199, 97, 3071}};
  for (size_t i = 0; i < sizeof big / sizeof *big; i++, cases++)
    run_shape(big[i][0], big[i][1], big[i][2], (int)(i & 1) ^ 1, (int)(i % 3 == 0));
  check_activations();
  check_concurrent();

  printf("%s: %d shapes; max error / sum|a w|: %.3g vs rounded-input sgemm, %.3g vs fp32 sgemm "
         "(relative Frobenius, K >= 768: %.3g); %d failures\n",
         fallback_mode ? "fallback" : "avx512-bf16", cases, max_rounded, max_unrounded,
         frob_unrounded, failures);
  return failures ? 1 : 0;
}
