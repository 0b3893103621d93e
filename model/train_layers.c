/* Backward passes of the layer kinds both towers use, and the one forward
 * that must keep more than its output (attention keeps its probabilities).
 * The other forwards are the inference kernels of ops.c. No allocation. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "internal.h"
#include "train.h"

/* y[M,N] = x[M,K] · W[N,K]^T + b[N]
 *   dx[M,K] = dy[M,N] · W[N,K]
 *   dW[N,K] += dy[M,N]^T · x[M,K]
 *   db[N]   += column sums of dy */
void umt_linear_backward(const float *dy, const float *x, const float *W, int M, int K, int N,
                         float *dx, float *dW, float *db) {
  if (dx)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, dy, N, W, K, 0.0f, dx,
                K);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, dy, N, x, K, 1.0f, dW, K);
  if (db)
    for (int i = 0; i < M; i++) {
      const float *r = dy + (size_t)i * N;
      for (int j = 0; j < N; j++) db[j] += r[j];
    }
}

/* y = (x - mean) · rstd · w + b per row of D; rstd = 1/sqrt(var + eps).
 *   x, dy [rows, D]; w [D]
 *   dx[rows, D] += rstd · (dxhat - mean(dxhat) - xhat · mean(dxhat ⊙ xhat)), dxhat = dy ⊙ w
 *   dw[D] += Σ_r dy ⊙ xhat;  db[D] += Σ_r dy
 * mean / var are recomputed as ops.c computes them (two passes, float). */
void umt_layernorm_backward(const float *dy, const float *x, const float *w, int rows, int D,
                            float eps, float *dx, float *dw, float *db) {
  for (int r = 0; r < rows; r++) {
    const float *xr = x + (size_t)r * D, *g = dy + (size_t)r * D;
    float *o = dx + (size_t)r * D;
    float mean = 0.f;
    for (int i = 0; i < D; i++) mean += xr[i];
    mean /= (float)D;
    float var = 0.f;
    for (int i = 0; i < D; i++) {
      float d = xr[i] - mean;
      var += d * d;
    }
    var /= (float)D;
    const float rstd = 1.0f / sqrtf(var + eps);
    float s1 = 0.f, s2 = 0.f;
    for (int i = 0; i < D; i++) {
      float xhat = (xr[i] - mean) * rstd, dxhat = g[i] * w[i];
      s1 += dxhat;
      s2 += dxhat * xhat;
      dw[i] += g[i] * xhat;
      db[i] += g[i];
    }
    s1 /= (float)D;
    s2 /= (float)D;
    for (int i = 0; i < D; i++) {
      float xhat = (xr[i] - mean) * rstd;
      o[i] += rstd * (g[i] * w[i] - s1 - xhat * s2);
    }
  }
}

/* y = x · σ(1.702 x):  dx[n] = dy[n] · (σ + 1.702 x σ (1 - σ)) */
void umt_quick_gelu_backward(const float *dy, const float *pre, float *dx, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float x = pre[i], s = 1.0f / (1.0f + expf(-1.702f * x));
    dx[i] = dy[i] * (s + 1.702f * x * s * (1.0f - s));
  }
}

/* y = ½ x (1 + erf(x/√2)):  dx[n] = dy[n] · (½ (1 + erf(x/√2)) + x φ(x)) */
void umt_gelu_backward(const float *dy, const float *pre, float *dx, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float x = pre[i];
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    dx[i] = dy[i] * (cdf + x * pdf);
  }
}

/* Per head h: P_h[L,L] = softmax(scale · Q_h[L,hd] · K_h[L,hd]^T), out_h = P_h · V_h.
 * The same GEMMs and softmax as um_attention; P kept in probs [H, L, L]. */
void umt_attention_forward(const float *q, const float *k, const float *v, int ld, int L, int H,
                           int hd, float *out, int ldo, float *probs) {
  const float scale = 1.0f / sqrtf((float)hd);
  for (int h = 0; h < H; h++) {
    float *P = probs + (size_t)h * L * L;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, hd, scale, q + h * hd, ld,
                k + h * hd, ld, 0.0f, P, L);
    um_softmax_rows(P, L, L);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, hd, L, 1.0f, P, L, v + h * hd, ld,
                0.0f, out + h * hd, ldo);
  }
}

/* Per head h, with dO_h = dout[:, h·hd : (h+1)·hd]  [L, hd]:
 *   dV_h[L,hd] = P_h^T[L,L] · dO_h
 *   dP[L,L]    = dO_h · V_h^T
 *   dS[L,L]    = P_h ⊙ (dP − rowsum(dP ⊙ P_h))
 *   dQ_h[L,hd] = scale · dS · K_h;   dK_h[L,hd] = scale · dS^T · Q_h
 * dq, dk, dv: [L, H·hd] at row stride ld (overwritten). dprobs: L·L scratch. */
void umt_attention_backward(const float *dout, int ldo, const float *q, const float *k,
                            const float *v, int ld, const float *probs, int L, int H, int hd,
                            float *dq, float *dk, float *dv, float *dprobs) {
  const float scale = 1.0f / sqrtf((float)hd);
  for (int h = 0; h < H; h++) {
    const float *P = probs + (size_t)h * L * L;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, hd, L, 1.0f, P, L, dout + h * hd,
                ldo, 0.0f, dv + h * hd, ld);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, hd, 1.0f, dout + h * hd, ldo,
                v + h * hd, ld, 0.0f, dprobs, L);
    for (int i = 0; i < L; i++) {
      const float *p = P + (size_t)i * L;
      float *d = dprobs + (size_t)i * L;
      float dot = 0.f;
      for (int j = 0; j < L; j++) dot += d[j] * p[j];
      for (int j = 0; j < L; j++) d[j] = p[j] * (d[j] - dot);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, hd, L, scale, dprobs, L,
                k + h * hd, ld, 0.0f, dq + h * hd, ld);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, hd, L, scale, dprobs, L, q + h * hd,
                ld, 0.0f, dk + h * hd, ld);
  }
}
