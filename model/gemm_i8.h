/* INT8 linear layers for model/: C[M,N] = A[M,K] · W[N,K]^T (+ bias)
 * with W quantized once to int8 and A quantized per call to uint8, products
 * summed exactly in int32 (AVX-512 VNNI vpdpbusd). Internal to model/.
 *
 * Numerics. W: symmetric per output channel, s_w[n] = max_k |W[n,k]| / 127,
 * w_q = round(W / s_w) in [-127, 127]. A: asymmetric per row (dynamic),
 * range [min(0, min_k A), max(0, max_k A)] mapped onto 0..255:
 * s_a[m] = range / 255, z_m = round(-min / s_a), a_q = clamp(round(A / s_a)
 * + z_m, 0, 255); 0 is exact. Then
 *   C[m,n] = s_a[m] s_w[n] (sum_k a_q w_q - z_m sum_k w_q) + bias[n]
 * with the integer part exact, so results do not depend on the number of
 * threads, the batch a row comes in or its position in it.
 *
 * Without VNNI (um_i8_available() == 0, or UNIMED_SIMD=0) the same calls
 * work on portable C computing the same integers (slow: the model loads
 * INT8 only where um_i8_available(), else BF16 or FP32).
 *
 * Threads and memory as gemm_bf16.h: the pool of threads.c, and the calling
 * thread's GEMM scratch (um_gemm_scratch) for the quantized A (M × K bytes,
 * K rounded up to 64) and its row scales. */
#ifndef UNIMED_GEMM_I8_H
#define UNIMED_GEMM_I8_H

#include <stddef.h>

typedef struct um_i8_weight um_i8_weight;

/* 2: AVX-512 VNNI kernels (zmm); 1: AVX-VNNI only (ymm kernels);
 * 0: neither (or UNIMED_SIMD=0 in the environment): portable C. */
int um_i8_available(void);

/* Quantizes W [N, K] (nn.Linear layout, row-major FP32) per output channel
 * and packs it in the kernels' blocked layout. NULL on allocation failure
 * or bad sizes. */
um_i8_weight *um_i8_pack(const float *W, int N, int K);
void um_i8_free(um_i8_weight *w);
/* Bytes held (N×K int8 plus padding, and 8 bytes per output channel). */
size_t um_i8_bytes(const um_i8_weight *w);
int um_i8_rows(const um_i8_weight *w); /* N */
int um_i8_cols(const um_i8_weight *w); /* K */
/* The quantized weight: w_q[n, k] (int8) and s_w[n], for tests. */
int um_i8_weight_at(const um_i8_weight *w, int n, int k);
float um_i8_scale(const um_i8_weight *w, int n);

/* C = A W^T + bias          (bias [N] or NULL) */
void um_linear_i8(const float *A, int M, int K, const um_i8_weight *W, const float *bias, int N,
                  float *C);
/* C += A W^T + bias         (residual add; bias may be NULL) */
void um_linear_i8_acc(const float *A, int M, int K, const um_i8_weight *W, const float *bias,
                      int N, float *C);
/* C = quick_gelu(A W^T + bias) */
void um_linear_i8_quick_gelu(const float *A, int M, int K, const um_i8_weight *W,
                             const float *bias, int N, float *C);
/* C = gelu(A W^T + bias), exact-erf GELU */
void um_linear_i8_gelu(const float *A, int M, int K, const um_i8_weight *W, const float *bias,
                       int N, float *C);

/* C = epi(LayerNorm(X) W^T + bias): each row of X [M, K] normalised (mean
 * and variance over the row, then * ln_w + ln_b, as um_layernorm) just
 * before it is quantized, so the normalised rows are never stored.
 * K <= UM_I8_LN_MAX_K. */
#define UM_I8_LN_MAX_K 4096
enum { UM_I8_EPI_BIAS, UM_I8_EPI_QUICK_GELU, UM_I8_EPI_GELU };
void um_linear_i8_ln(const float *X, int M, int K, const float *ln_w, const float *ln_b,
                     float eps, const um_i8_weight *W, const float *bias, int N, float *C,
                     int epi);

/* Row r of A as the kernels quantize it: *scale, *zero and q[0..K). For
 * tests and reference computations. */
void um_i8_quantize_row(const float *a, int K, float *scale, int *zero, unsigned char *q);

#endif
