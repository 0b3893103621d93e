/* Kernels shared by both towers: GEMM-backed linear layers (OpenBLAS),
 * LayerNorm, activations, softmax and multi-head attention. No allocation:
 * callers pass workspace slices. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "internal.h"

void um_linear(const float *A, int M, int K, const float *W, const float *bias, int N,
               float *C) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, W, K, 0.0f, C, N);
  if (!bias) return;
  for (int i = 0; i < M; i++) {
    float *row = C + (size_t)i * N;
    for (int j = 0; j < N; j++) row[j] += bias[j];
  }
}

void um_matmul(const float *A, int M, int K, const float *B, int N, float *C) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
}

/* Two passes (mean, then centred variance) in float: as accurate as
 * PyTorch's kernel for the widths used here. */
static void layernorm_row(const float *x, float *y, int D, const float *w, const float *b,
                          float eps) {
  float mean = 0.f;
  for (int i = 0; i < D; i++) mean += x[i];
  mean /= (float)D;
  float var = 0.f;
  for (int i = 0; i < D; i++) {
    float d = x[i] - mean;
    var += d * d;
  }
  var /= (float)D;
  float inv = 1.0f / sqrtf(var + eps);
  for (int i = 0; i < D; i++) y[i] = (x[i] - mean) * inv * w[i] + b[i];
}

void um_layernorm(const float *x, float *y, int rows, int D, const float *w, const float *b,
                  float eps) {
  for (int r = 0; r < rows; r++)
    layernorm_row(x + (size_t)r * D, y + (size_t)r * D, D, w, b, eps);
}

void um_add_layernorm(float *x, const float *delta, int rows, int D, const float *w,
                      const float *b, float eps) {
  for (int r = 0; r < rows; r++) {
    float *xr = x + (size_t)r * D;
    const float *dr = delta + (size_t)r * D;
    for (int i = 0; i < D; i++) xr[i] += dr[i];
    layernorm_row(xr, xr, D, w, b, eps);
  }
}

void um_add(float *x, const float *delta, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] += delta[i];
}

void um_quick_gelu(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

void um_gelu(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void um_softmax_rows(float *x, int rows, int cols) {
  for (int r = 0; r < rows; r++) {
    float *row = x + (size_t)r * cols;
    float mx = row[0];
    for (int j = 1; j < cols; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.f;
    for (int j = 0; j < cols; j++) {
      row[j] = expf(row[j] - mx);
      sum += row[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < cols; j++) row[j] *= inv;
  }
}

void um_attention(const float *q, const float *k, const float *v, int ld, int L, int H, int hd,
                  float *out, int ldo, float *scores) {
  const float scale = 1.0f / sqrtf((float)hd);
  for (int h = 0; h < H; h++) {
    /* scores[L,L] = scale * Q_h[L,hd] · K_h[L,hd]^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, hd, scale, q + h * hd, ld,
                k + h * hd, ld, 0.0f, scores, L);
    um_softmax_rows(scores, L, L);
    /* out_h[L,hd] = scores[L,L] · V_h[L,hd] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, hd, L, 1.0f, scores, L,
                v + h * hd, ld, 0.0f, out + h * hd, ldo);
  }
}
