/* BF16 linear layers for model/: C[M,N] = A[M,K] · W[N,K]^T (+ bias)
 * with W packed once as BF16 and A rounded to BF16 on the fly, products
 * summed in FP32 (AVX512-BF16 vdpbf16ps). Internal to model/.
 *
 * Numerics. Inputs are rounded to BF16 (round to nearest even; BF16
 * subnormals count as zero, as vdpbf16ps does), products are exact, sums are
 * FP32. Every C element is summed in the same order whatever M, the thread
 * count or the row's position in A: results do not depend on the number of
 * threads nor on the batch a row comes in.
 *
 * Without AVX512-BF16 (um_bf16_available() == 0, or UNIMED_SIMD=0 in the
 * environment) the same calls work: the BF16 weights are widened back to
 * FP32 panel by panel and multiplied by the unrounded A with cblas_sgemm
 * (slower than keeping FP32 weights; callers should pack only when
 * um_bf16_available()); its sums are OpenBLAS's, thread-independent inside
 * a forward pass (OpenBLAS on one thread, um_blas_begin).
 *
 * Threads: a call runs on the pool of model/threads.c (um_parallel_for),
 * with um_threads() threads: the count OpenBLAS had when the forward pass
 * began (unimed_set_threads), else OpenBLAS's current count. While another
 * parallel region holds the pool, a call runs on its calling thread alone
 * (same results).
 *
 * Memory: besides the packed weights, each calling thread keeps a scratch
 * buffer holding its largest A so far as BF16 (M × K × 2 bytes, K rounded up
 * to 32), freed when the thread exits. */
#ifndef UNIMED_GEMM_BF16_H
#define UNIMED_GEMM_BF16_H

#include <stddef.h>

typedef struct um_bf16_weight um_bf16_weight;

/* 1 when the AVX512-BF16 kernels run on this CPU (and UNIMED_SIMD != 0). */
int um_bf16_available(void);

/* Packs W [N, K] (nn.Linear layout, row-major FP32) as BF16 in the
 * kernels' blocked layout. NULL on allocation failure or bad sizes. */
um_bf16_weight *um_bf16_pack(const float *W, int N, int K);
void um_bf16_free(um_bf16_weight *w);
/* Bytes held by the packed weight (N*K*2 plus padding to the block sizes;
 * no padding when N and K are multiples of 32). */
size_t um_bf16_bytes(const um_bf16_weight *w);
int um_bf16_rows(const um_bf16_weight *w); /* N */
int um_bf16_cols(const um_bf16_weight *w); /* K */

/* C = A W^T + bias          (bias [N] or NULL) */
void um_linear_bf16(const float *A, int M, int K, const um_bf16_weight *W, const float *bias,
                    int N, float *C);
/* C += A W^T + bias         (residual add; bias may be NULL) */
void um_linear_bf16_acc(const float *A, int M, int K, const um_bf16_weight *W,
                        const float *bias, int N, float *C);
/* C = quick_gelu(A W^T + bias),  quick_gelu(x) = x * sigmoid(1.702 x) */
void um_linear_bf16_quick_gelu(const float *A, int M, int K, const um_bf16_weight *W,
                               const float *bias, int N, float *C);
/* C = gelu(A W^T + bias),  exact-erf GELU (|error of erf| < 2e-7) */
void um_linear_bf16_gelu(const float *A, int M, int K, const um_bf16_weight *W,
                         const float *bias, int N, float *C);

/* x rounded to BF16 (nearest even) and widened back: the value the kernels
 * multiply. For tests and reference computations. */
float um_bf16_round(float x);

/* hi[i] = um_bf16_round(a[i]), lo[i] = a[i] - hi[i] for n floats: the two
 * BF16 parts of a in which the text tower passes its activations (bert.c).
 * AVX-512 where um_bf16_available(), else the scalar loop; same results. */
void um_bf16_split(const float *a, size_t n, float *hi, float *lo);

#endif
