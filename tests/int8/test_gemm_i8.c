/* model/gemm_i8: um_linear_i8 and its fused variants.
 *
 *  1. quantization: weights per output channel symmetric (|w_q| <= 127,
 *     max |w_q| = 127 on every non-zero row, |W - s_w w_q| <= s_w / 2), and
 *     activations per row (0 exact, |a - s_a (a_q - z)| <= s_a / 2);
 *  2. the GEMM equals the reference computed in double from those
 *     quantized values (the integer sums are exact: only the float
 *     epilogue rounds), to 1e-5 of the magnitude;
 *  3. against FP32 on the unquantized inputs within the quantization bound
 *     sum_k (s_w/2 |a_k| + s_a/2 |w_k| + s_a s_w / 4) (+ slack);
 *  4. bitwise the same results with 1 and 3 threads and row by row (M = 1)
 *     as in one call;
 *  5. the fused epilogues (residual add, QuickGELU, GELU) against the plain
 *     call followed by the scalar operation;
 *  6. um_linear_i8_ln (LayerNorm fused into the quantizing of A) against
 *     um_layernorm followed by um_linear_i8: equal but for rows where the two
 *     LayerNorms' float rounding puts a value on the other side of a
 *     quantization step (at most one step per value); its epilogues, and
 *     bitwise the same with 1 and 3 threads.
 *
 * Usage: test_gemm_i8 [--isa 2|1|0]: 2 the AVX-512 VNNI kernels (default;
 * exit 77, skipped, without them), 1 the AVX-VNNI ymm kernels (UNIMED_SIMD=2;
 * skipped without avx_vnni), 0 the portable C (UNIMED_SIMD=0). */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_i8.h"
#include "internal.h"

static int failures;

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(void) { /* uniform in [-1, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)((rng >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static float *alloc_f(size_t n) {
  float *p = calloc(n ? n : 1, sizeof(float));
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

/* Activations like a transformer's: mostly small, a few outliers, some rows
 * all positive (after GELU) or all zero. */
static void fill_a(float *a, int M, int K) {
  for (int m = 0; m < M; m++)
    for (int k = 0; k < K; k++) {
      float v = frand();
      if (m % 5 == 2) v = fabsf(v) - 0.1f;
      if ((m * 31 + k) % 97 == 0) v *= 12.0f;
      if (m % 11 == 7) v = 0.0f;
      a[(size_t)m * K + k] = v;
    }
}

static void check(const char *what, int ok) {
  printf("  %-66s %s\n", what, ok ? "ok" : "FAIL");
  if (!ok) failures++;
}

static float gelu_ref(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }
static float qgelu_ref(float v) { return v / (1.0f + expf(-1.702f * v)); }

static void run_case(int M, int K, int N, int with_bias) {
  float *A = alloc_f((size_t)M * K), *W = alloc_f((size_t)N * K), *bias = alloc_f((size_t)N);
  for (size_t i = 0; i < (size_t)N * K; i++) W[i] = frand() * 0.05f;
  for (int n = 0; n < N; n += 17) W[(size_t)n * K] = 0.4f; /* an outlier per some channels */
  if (N > 3)
    for (int k = 0; k < K; k++) W[(size_t)3 * K + k] = 0.0f; /* an all-zero channel */
  for (int n = 0; n < N; n++) bias[n] = frand();
  fill_a(A, M, K);
  const float *b = with_bias ? bias : NULL;
  um_i8_weight *Wq = um_i8_pack(W, N, K);
  if (!Wq) {
    fprintf(stderr, "um_i8_pack failed\n");
    exit(2);
  }
  char line[200];
  printf("M=%d K=%d N=%d%s\n", M, K, N, with_bias ? " +bias" : "");

  /* 1. quantization */
  int wq_ok = 1;
  for (int n = 0; n < N; n++) {
    const float s = um_i8_scale(Wq, n);
    int qmax = 0;
    for (int k = 0; k < K; k++) {
      const int q = um_i8_weight_at(Wq, n, k);
      qmax = abs(q) > qmax ? abs(q) : qmax;
      if (q < -127 || q > 127 || fabsf(W[(size_t)n * K + k] - s * q) > s * 0.5f * 1.0001f + 1e-12f)
        wq_ok = 0;
    }
    float amax = 0;
    for (int k = 0; k < K; k++) amax = fmaxf(amax, fabsf(W[(size_t)n * K + k]));
    if (amax > 0 && qmax != 127) wq_ok = 0;
  }
  check("weights: symmetric per channel, |W - s q| <= s/2, max |q| = 127", wq_ok);
  float *sa = alloc_f((size_t)M);
  int *za = malloc((size_t)M * sizeof(int));
  unsigned char *qa = malloc((size_t)M * K);
  int aq_ok = 1;
  for (int m = 0; m < M; m++) {
    um_i8_quantize_row(A + (size_t)m * K, K, &sa[m], &za[m], qa + (size_t)m * K);
    for (int k = 0; k < K; k++) {
      const float a = A[(size_t)m * K + k];
      const float back = sa[m] * (qa[(size_t)m * K + k] - za[m]);
      if (fabsf(a - back) > sa[m] * 0.5f * 1.0001f + 1e-12f) aq_ok = 0;
      if (a == 0.0f && qa[(size_t)m * K + k] != za[m]) aq_ok = 0;
    }
  }
  check("activations: per row, 0 exact, |a - s (q - z)| <= s/2", aq_ok);

  /* 2. vs the quantized reference, 3. vs FP32 */
  float *C = alloc_f((size_t)M * N);
  um_linear_i8(A, M, K, Wq, b, N, C);
  double e_q = 0, e_f = 0, worst_ratio = 0;
  int q_ok = 1, f_ok = 1;
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double dq = 0, df = 0, mag = 0, bound = 0;
      const double sw = um_i8_scale(Wq, n);
      for (int k = 0; k < K; k++) {
        const double a = A[(size_t)m * K + k], w = W[(size_t)n * K + k];
        const int wq = um_i8_weight_at(Wq, n, k);
        dq += (double)sa[m] * (qa[(size_t)m * K + k] - za[m]) * sw * wq;
        df += a * w;
        mag += fabs(a * w);
        bound += sw / 2 * fabs(a) + sa[m] / 2.0 * fabs(w) + sa[m] * sw / 4;
      }
      const double bb = with_bias ? bias[n] : 0.0, c = C[(size_t)m * N + n];
      const double eq = fabs(c - (dq + bb)), ef = fabs(c - (df + bb));
      if (!(eq <= 1e-5 * (mag + fabs(bb) + bound + 1e-3))) q_ok = 0;
      if (!(ef <= bound * 1.001 + 1e-5 * (mag + fabs(bb) + 1e-3))) f_ok = 0;
      e_q = eq > e_q ? eq : e_q;
      e_f = ef > e_f ? ef : e_f;
      if (bound > 0 && ef / bound > worst_ratio) worst_ratio = ef / bound;
    }
  snprintf(line, sizeof line, "vs quantized reference: max|d| %.3g", e_q);
  check(line, q_ok);
  snprintf(line, sizeof line, "vs fp32: max|d| %.3g, worst %.2f of the bound", e_f, worst_ratio);
  check(line, f_ok);

  /* 4. threads and row by row */
  float *C2 = alloc_f((size_t)M * N);
  const int threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
  um_linear_i8(A, M, K, Wq, b, N, C2);
  int same1 = !memcmp(C, C2, (size_t)M * N * sizeof(float));
  openblas_set_num_threads(3);
  um_linear_i8(A, M, K, Wq, b, N, C2);
  int same3 = !memcmp(C, C2, (size_t)M * N * sizeof(float));
  openblas_set_num_threads(threads);
  check("bitwise the same with 1 and 3 threads", same1 && same3);
  for (int m = 0; m < M; m++) um_linear_i8(A + (size_t)m * K, 1, K, Wq, b, N, C2 + (size_t)m * N);
  check("bitwise the same row by row", !memcmp(C, C2, (size_t)M * N * sizeof(float)));

  /* 5. epilogues */
  float *base = alloc_f((size_t)M * N);
  for (size_t i = 0; i < (size_t)M * N; i++) base[i] = C2[i] = frand();
  um_linear_i8_acc(A, M, K, Wq, b, N, C2);
  int acc_ok = 1, qg_ok = 1, g_ok = 1;
  for (size_t i = 0; i < (size_t)M * N; i++)
    if (!(fabsf(C2[i] - (base[i] + C[i])) <= 1e-6f * (fabsf(base[i]) + fabsf(C[i]) + 1.0f))) acc_ok = 0;
  um_linear_i8_quick_gelu(A, M, K, Wq, b, N, C2);
  for (size_t i = 0; i < (size_t)M * N; i++)
    if (!(fabsf(C2[i] - qgelu_ref(C[i])) <= 2e-6f * (fabsf(C[i]) + 1.0f))) qg_ok = 0;
  um_linear_i8_gelu(A, M, K, Wq, b, N, C2);
  for (size_t i = 0; i < (size_t)M * N; i++)
    if (!(fabsf(C2[i] - gelu_ref(C[i])) <= 2e-6f * (fabsf(C[i]) + 1.0f))) g_ok = 0;
  check("fused residual add", acc_ok);
  check("fused QuickGELU", qg_ok);
  check("fused GELU", g_ok);

  um_i8_free(Wq);
  free(A), free(W), free(bias), free(C), free(C2), free(base), free(sa), free(za), free(qa);
}

static void run_ln_case(int M, int K, int N) {
  float *X = alloc_f((size_t)M * K), *Y = alloc_f((size_t)M * K), *W = alloc_f((size_t)N * K);
  float *lw = alloc_f((size_t)K), *lb = alloc_f((size_t)K), *bias = alloc_f((size_t)N);
  float *C = alloc_f((size_t)M * N), *C2 = alloc_f((size_t)M * N), *C3 = alloc_f((size_t)M * N);
  for (size_t i = 0; i < (size_t)N * K; i++) W[i] = frand() * 0.05f;
  for (int k = 0; k < K; k++) lw[k] = 1.0f + 0.3f * frand(), lb[k] = 0.2f * frand();
  for (int n = 0; n < N; n++) bias[n] = frand();
  fill_a(X, M, K);
  for (size_t i = 0; i < (size_t)M * K; i++) X[i] = 3.0f * X[i] + 0.5f; /* off-centre rows */
  um_i8_weight *Wq = um_i8_pack(W, N, K);
  if (!Wq) {
    fprintf(stderr, "um_i8_pack failed\n");
    exit(2);
  }
  printf("LayerNorm fused: M=%d K=%d N=%d\n", M, K, N);
  const float eps = 1e-5f;
  um_layernorm(X, Y, M, K, lw, lb, eps);
  um_linear_i8(Y, M, K, Wq, bias, N, C);
  um_linear_i8_ln(X, M, K, lw, lb, eps, Wq, bias, N, C2, UM_I8_EPI_BIAS);
  int ok = 1;
  double worst = 0;
  for (int m = 0; m < M; m++) {
    float sa;
    int z;
    unsigned char *q = malloc((size_t)K);
    um_i8_quantize_row(Y + (size_t)m * K, K, &sa, &z, q);
    free(q);
    for (int n = 0; n < N; n++) {
      double wmax = 0, mag = 0;
      for (int k = 0; k < K; k++) {
        wmax = fmax(wmax, fabs(W[(size_t)n * K + k]));
        mag += fabs(Y[(size_t)m * K + k] * W[(size_t)n * K + k]);
      }
      /* a few values one step over: each moves C by at most s_a |w| */
      const double d = fabs(C[(size_t)m * N + n] - C2[(size_t)m * N + n]);
      const double tol = 4.0 * sa * wmax + 1e-5 * (mag + 1.0);
      if (!(d <= tol)) ok = 0;
      if (d / tol > worst) worst = d / tol;
    }
  }
  char line[200];
  snprintf(line, sizeof line, "vs um_layernorm + um_linear_i8: worst %.2f of the tolerance", worst);
  check(line, ok);
  um_linear_i8_ln(X, M, K, lw, lb, eps, Wq, bias, N, C3, UM_I8_EPI_GELU);
  int g_ok = 1, qg_ok = 1;
  for (size_t i = 0; i < (size_t)M * N; i++)
    if (!(fabsf(C3[i] - gelu_ref(C2[i])) <= 2e-6f * (fabsf(C2[i]) + 1.0f))) g_ok = 0;
  um_linear_i8_ln(X, M, K, lw, lb, eps, Wq, bias, N, C3, UM_I8_EPI_QUICK_GELU);
  for (size_t i = 0; i < (size_t)M * N; i++)
    if (!(fabsf(C3[i] - qgelu_ref(C2[i])) <= 2e-6f * (fabsf(C2[i]) + 1.0f))) qg_ok = 0;
  check("fused LayerNorm with GELU / QuickGELU", g_ok && qg_ok);
  const int threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
  um_linear_i8_ln(X, M, K, lw, lb, eps, Wq, bias, N, C3, UM_I8_EPI_BIAS);
  int same = !memcmp(C2, C3, (size_t)M * N * sizeof(float));
  openblas_set_num_threads(3);
  um_linear_i8_ln(X, M, K, lw, lb, eps, Wq, bias, N, C3, UM_I8_EPI_BIAS);
  same = same && !memcmp(C2, C3, (size_t)M * N * sizeof(float));
  openblas_set_num_threads(threads);
  check("fused LayerNorm: bitwise the same with 1 and 3 threads", same);
  um_i8_free(Wq);
  free(X), free(Y), free(W), free(lw), free(lb), free(bias), free(C), free(C2), free(C3);
}

int main(int argc, char **argv) {
  int isa = 2;
  if (argc > 2 && !strcmp(argv[1], "--isa")) isa = atoi(argv[2]);
  if (isa == 1) setenv("UNIMED_SIMD", "2", 1);
  if (isa == 0) setenv("UNIMED_SIMD", "0", 1);
  if (um_i8_available() != isa) {
    printf("SKIP: kernels for --isa %d not available on this CPU (have %d)\n", isa,
           um_i8_available());
    return 77;
  }
  printf("um_i8_available() = %d\n", isa);
  /* bad sizes are refused */
  float w1 = 1.0f;
  check("um_i8_pack refuses K = 0 and K > 65536",
        !um_i8_pack(&w1, 1, 0) && !um_i8_pack(&w1, 1, 65537) && !um_i8_pack(NULL, 1, 1));
  run_case(1, 768, 768, 1);
  run_case(13, 100, 37, 1);
  run_case(29, 65, 33, 0);
  if (isa != 0) {
    run_case(197, 768, 2304, 1); /* ViT-B/16 q|k|v at batch 1 */
    run_case(16, 3072, 768, 1);  /* BERT output at a 16-token prompt */
  }
  run_ln_case(29, 768, 70);
  run_ln_case(5, 100, 33); /* K not a multiple of 16 */
  printf("%s\n", failures ? "FAILED" : "all ok");
  return failures ? 1 : 0;
}
