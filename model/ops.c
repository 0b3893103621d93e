/* Kernels shared by both towers: GEMM-backed linear layers (OpenBLAS),
 * LayerNorm, activations, softmax and multi-head attention. No allocation:
 * callers pass workspace slices.
 *
 * Threads. Inside a forward pass (um_blas_begin .. um_blas_end) OpenBLAS
 * runs single-threaded and all parallel work runs on the pool of threads.c,
 * as many threads as OpenBLAS was set to (unimed_set_threads /
 * OPENBLAS_NUM_THREADS): large GEMMs split into one single-threaded OpenBLAS
 * call per thread, plus LayerNorm, activations, attention and GEMMs with few
 * rows. So only one set of threads is ever busy. Outside a forward pass the
 * linear layers call OpenBLAS with its own threads, as before.
 *
 * SIMD. The hot loops have an AVX2+FMA version (and the few-rows GEMM and the
 * attention an AVX-512F one) chosen at run time (__builtin_cpu_supports) next to the
 * portable C one; UNIMED_SIMD=0 in the environment forces the portable code,
 * UNIMED_SIMD=2 stops at AVX2. All compute the same functions (exact-erf GELU
 * included); results differ only by float rounding. */
#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define UM_X86 1
#define UM_AVX2 __attribute__((target("avx2,fma")))
#define UM_AVX512 __attribute__((target("avx512f")))
#else
#define UM_X86 0
#endif

#include "act512.h"
#include "internal.h"

/* ---- CPU features ---- */

static atomic_int simd_cache = -1;

static atomic_int avx512_cache = -1;
static int use_avx2(void);

/* 1 when the AVX-512F kernel for GEMMs with few rows may run as well. */
static int use_avx512(void) {
  int v = atomic_load_explicit(&avx512_cache, memory_order_relaxed);
  if (v >= 0) return v;
  v = 0;
#if UM_X86
  const char *env = getenv("UNIMED_SIMD");
  if (use_avx2() && !(env && env[0] == '2') && __builtin_cpu_supports("avx512f")) v = 1;
#endif
  atomic_store_explicit(&avx512_cache, v, memory_order_relaxed);
  return v;
}

/* 1 when the AVX2+FMA kernels may run. */
static int use_avx2(void) {
  int v = atomic_load_explicit(&simd_cache, memory_order_relaxed);
  if (v >= 0) return v;
  v = 0;
#if UM_X86
  const char *env = getenv("UNIMED_SIMD");
  __builtin_cpu_init();
  if (!(env && env[0] == '0') && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    v = 1;
#endif
  atomic_store_explicit(&simd_cache, v, memory_order_relaxed);
  return v;
}

/* ---- parallel loops (on the pool of threads.c) ---- */

/* Splits [0, n) into tasks of about `grain` items for um_parallel_for. */
typedef struct {
  size_t n, grain;
  void (*range)(void *arg, size_t lo, size_t hi);
  void *arg;
} range_ctx;

static void range_task(void *c, int task, int thread) {
  (void)thread;
  const range_ctx *r = c;
  size_t lo = (size_t)task * r->grain, hi = lo + r->grain;
  r->range(r->arg, lo, hi < r->n ? hi : r->n);
}

static void parallel_range(size_t n, size_t grain, void (*range)(void *, size_t, size_t),
                           void *arg) {
  if (n == 0) return;
  if (grain < 1) grain = 1;
  size_t tasks = (n + grain - 1) / grain;
  if (tasks <= 1) {
    range(arg, 0, n);
    return;
  }
  range_ctx r = {n, grain, range, arg};
  um_parallel_for((int)tasks, UM_MAX_THREADS, range_task, &r);
}

/* Items per task for elementwise passes over n floats. */
static size_t grain_for(size_t n) {
  const size_t min_grain = 1 << 14; /* below this a region costs more than it saves */
  size_t g = (n + 4 * (size_t)UM_MAX_THREADS - 1) / (4 * (size_t)UM_MAX_THREADS);
  g = g < min_grain ? min_grain : g;
  return (g + 15) & ~(size_t)15;
}

/* ---- AVX2 helpers ---- */

#if UM_X86
UM_AVX2 static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

UM_AVX2 static inline float hmax256(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* e^x to about 1 ulp for x in [-87.3, 88]; clamped outside (so e^-inf is
 * 1.2e-38, not 0: callers never rely on an exact 0). x = n ln2 + r with
 * |r| <= ln2/2 (ln2 split in two for an exact n ln2), e^r by its Taylor
 * series to r^7 (truncation error < 5e-9), times 2^n built in the exponent. */
UM_AVX2 static inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.33f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

/* ---- linear layers ---- */

/* Rows of C [M, N] set to bias. */
typedef struct {
  float *C;
  const float *bias;
  int N;
} fill_ctx;

static void fill_rows(void *a, size_t lo, size_t hi) {
  const fill_ctx *f = a;
  for (size_t i = lo; i < hi; i++) {
    float *row = f->C + i * (size_t)f->N;
    if (f->bias)
      memcpy(row, f->bias, (size_t)f->N * sizeof(float));
    else
      memset(row, 0, (size_t)f->N * sizeof(float));
  }
}

static void fill_bias(float *C, int M, int N, const float *bias) {
  fill_ctx f = {C, bias, N};
  size_t g = grain_for((size_t)M * N) / (size_t)N + 1;
  parallel_range((size_t)M, g, fill_rows, &f);
}

/* GEMMs with at most this many rows (a few text tokens) are bound by reading
 * W once: our kernel streams each W row once for all rows of A, on our
 * threads, split over N. */
#define UM_SMALL_M 32
#ifndef UM_PF512_AHEAD
#define UM_PF512_AHEAD 2 /* blocks of 4 W rows */
#endif
#ifndef UM_PF512_ALL
#define UM_PF512_ALL 0
#endif
#ifndef UM_PF_AHEAD
#define UM_PF_AHEAD 2 /* blocks of 3 W rows */
#endif

typedef struct {
  const float *A, *W;
  float *C;
  int M, K, N, chunk;
} smallm_ctx;

#if UM_X86
/* C[m, n] += A[m, :] . W[n, :] for all m < M and n in [n0, n1). Blocks of 3
 * W rows x 4 A rows: 12 accumulators, 7 loads per 12 FMAs. */
UM_AVX2 static void smallm_avx2(const float *A, int M, int K, const float *W, int N, int n0,
                                int n1, float *C, int ldc) {
  int n = n0;
  for (; n + 3 <= n1; n += 3) {
    const float *w0 = W + (size_t)n * K, *w1 = w0 + K, *w2 = w1 + K;
    for (int m0 = 0; m0 < M; m0 += 4) {
      const int nr = M - m0 < 4 ? M - m0 : 4;
      const float *a[4];
      for (int r = 0; r < 4; r++) a[r] = A + (size_t)(m0 + (r < nr ? r : nr - 1)) * K;
      __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
      __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
      /* Fetch the W rows UM_PF_AHEAD blocks ahead, spread over the passes
       * over A: pass p < 3 fetches row p (all three in pass 0 when M <= 8). */
      const int pass = m0 / 4;
      const float *pf = w0;
      int npf = 0;
      if (n + 3 * UM_PF_AHEAD + 3 <= N) {
        if (M > 8 && pass < 3) {
          pf = w0 + (size_t)(3 * UM_PF_AHEAD + pass) * K;
          npf = 1;
        } else if (M <= 8 && pass == 0) {
          pf = w0 + (size_t)3 * UM_PF_AHEAD * K;
          npf = 3;
        }
      }
      const int kpf = npf ? K : 0; /* prefetch one line per 16 floats below kpf */
#define UM_SMALLM_STEP(kk)                                                                      \
  do {                                                                                         \
    const __m256 x0 = _mm256_loadu_ps(w0 + (kk)), x1 = _mm256_loadu_ps(w1 + (kk)),             \
                 x2 = _mm256_loadu_ps(w2 + (kk));                                              \
    __m256 y = _mm256_loadu_ps(a[0] + (kk));                                                   \
    c00 = _mm256_fmadd_ps(y, x0, c00);                                                         \
    c01 = _mm256_fmadd_ps(y, x1, c01);                                                         \
    c02 = _mm256_fmadd_ps(y, x2, c02);                                                         \
    y = _mm256_loadu_ps(a[1] + (kk));                                                          \
    c10 = _mm256_fmadd_ps(y, x0, c10);                                                         \
    c11 = _mm256_fmadd_ps(y, x1, c11);                                                         \
    c12 = _mm256_fmadd_ps(y, x2, c12);                                                         \
    y = _mm256_loadu_ps(a[2] + (kk));                                                          \
    c20 = _mm256_fmadd_ps(y, x0, c20);                                                         \
    c21 = _mm256_fmadd_ps(y, x1, c21);                                                         \
    c22 = _mm256_fmadd_ps(y, x2, c22);                                                         \
    y = _mm256_loadu_ps(a[3] + (kk));                                                          \
    c30 = _mm256_fmadd_ps(y, x0, c30);                                                         \
    c31 = _mm256_fmadd_ps(y, x1, c31);                                                         \
    c32 = _mm256_fmadd_ps(y, x2, c32);                                                         \
  } while (0)
      int k = 0;
      for (; k + 16 <= K; k += 16) {
        if (k < kpf) {
          _mm_prefetch((const char *)(pf + k), _MM_HINT_T0);
          if (npf == 3) {
            _mm_prefetch((const char *)(pf + K + k), _MM_HINT_T0);
            _mm_prefetch((const char *)(pf + 2 * (size_t)K + k), _MM_HINT_T0);
          }
        }
        UM_SMALLM_STEP(k);
        UM_SMALLM_STEP(k + 8);
      }
      for (; k + 8 <= K; k += 8) UM_SMALLM_STEP(k);
#undef UM_SMALLM_STEP
      float s[4][3] = {{hsum256(c00), hsum256(c01), hsum256(c02)},
                       {hsum256(c10), hsum256(c11), hsum256(c12)},
                       {hsum256(c20), hsum256(c21), hsum256(c22)},
                       {hsum256(c30), hsum256(c31), hsum256(c32)}};
      for (; k < K; k++)
        for (int r = 0; r < 4; r++) {
          s[r][0] += a[r][k] * w0[k];
          s[r][1] += a[r][k] * w1[k];
          s[r][2] += a[r][k] * w2[k];
        }
      for (int r = 0; r < nr; r++) {
        float *c = C + (size_t)(m0 + r) * ldc + n;
        c[0] += s[r][0];
        c[1] += s[r][1];
        c[2] += s[r][2];
      }
    }
  }
  for (; n < n1; n++) {
    const float *w = W + (size_t)n * K;
    for (int m = 0; m < M; m++) {
      const float *a = A + (size_t)m * K;
      __m256 acc = _mm256_setzero_ps();
      int k = 0;
      for (; k + 8 <= K; k += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(w + k), acc);
      float s = hsum256(acc);
      for (; k < K; k++) s += a[k] * w[k];
      C[(size_t)m * ldc + n] += s;
    }
  }
}

/* The same with AVX-512F: blocks of 4 W rows x 4 A rows, 16 accumulators,
 * 8 loads per 16 FMAs, 16 floats per step. */
__attribute__((target("avx512f"))) static void smallm_avx512(const float *A, int M, int K,
                                                             const float *W, int N, int n0,
                                                             int n1, float *C, int ldc) {
  int n = n0;
  for (; n + 4 <= n1; n += 4) {
    const float *w0 = W + (size_t)n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
    for (int m0 = 0; m0 < M; m0 += 4) {
      const int nr = M - m0 < 4 ? M - m0 : 4;
      const float *a[4];
      for (int r = 0; r < 4; r++) a[r] = A + (size_t)(m0 + (r < nr ? r : nr - 1)) * K;
      /* Fetch the W rows two blocks ahead during the first passes. */
      const int pass = m0 / 4;
      const float *pf = w0;
      int npf = 0;
      if (n + 4 * UM_PF512_AHEAD + 4 <= N) {
        if (M > 8 && pass < 4 && !UM_PF512_ALL) {
          pf = w0 + (size_t)(4 * UM_PF512_AHEAD + pass) * K;
          npf = 1;
        } else if (pass == 0) {
          pf = w0 + (size_t)4 * UM_PF512_AHEAD * K;
          npf = 4;
        }
      }
      __m512 c[4][4];
      for (int r = 0; r < 4; r++)
        for (int j = 0; j < 4; j++) c[r][j] = _mm512_setzero_ps();
      int k = 0;
      for (; k + 16 <= K; k += 16) {
        for (int i = 0; i < npf; i++)
          _mm_prefetch((const char *)(pf + (size_t)i * K + k), _MM_HINT_T0);
        const __m512 x0 = _mm512_loadu_ps(w0 + k), x1 = _mm512_loadu_ps(w1 + k),
                     x2 = _mm512_loadu_ps(w2 + k), x3 = _mm512_loadu_ps(w3 + k);
        for (int r = 0; r < 4; r++) {
          const __m512 y = _mm512_loadu_ps(a[r] + k);
          c[r][0] = _mm512_fmadd_ps(y, x0, c[r][0]);
          c[r][1] = _mm512_fmadd_ps(y, x1, c[r][1]);
          c[r][2] = _mm512_fmadd_ps(y, x2, c[r][2]);
          c[r][3] = _mm512_fmadd_ps(y, x3, c[r][3]);
        }
      }
      float s[4][4];
      for (int r = 0; r < 4; r++)
        for (int j = 0; j < 4; j++) s[r][j] = _mm512_reduce_add_ps(c[r][j]);
      for (; k < K; k++)
        for (int r = 0; r < 4; r++) {
          s[r][0] += a[r][k] * w0[k];
          s[r][1] += a[r][k] * w1[k];
          s[r][2] += a[r][k] * w2[k];
          s[r][3] += a[r][k] * w3[k];
        }
      for (int r = 0; r < nr; r++) {
        float *cc = C + (size_t)(m0 + r) * ldc + n;
        for (int j = 0; j < 4; j++) cc[j] += s[r][j];
      }
    }
  }
  if (n < n1) smallm_avx2(A, M, K, W, N, n, n1, C, ldc);
}

#endif

static void smallm_task(void *c, int task, int thread) {
  (void)thread;
  const smallm_ctx *s = c;
  int n0 = task * s->chunk, n1 = n0 + s->chunk < s->N ? n0 + s->chunk : s->N;
#if UM_X86
  if (use_avx512())
    smallm_avx512(s->A, s->M, s->K, s->W, s->N, n0, n1, s->C, s->N);
  else
    smallm_avx2(s->A, s->M, s->K, s->W, s->N, n0, n1, s->C, s->N);
#else
  (void)n0;
  (void)n1;
#endif
}

/* C += A W^T with our kernel; only when use_avx2(). */
static void smallm(const float *A, int M, int K, const float *W, int N, float *C) {
  smallm_ctx s = {A, W, C, M, K, N, 48};
  /* Enough tasks to balance, each a multiple of 12 columns (blocks of 3 or 4). */
  while (s.chunk > 12 && (N + s.chunk - 1) / s.chunk < 4 * um_threads()) s.chunk -= 12;
  um_parallel_for((N + s.chunk - 1) / s.chunk, UM_MAX_THREADS, smallm_task, &s);
}

/* Activations applied to GEMM outputs. */
enum { ACT_NONE, ACT_QUICK_GELU, ACT_GELU };
static void act_apply(float *x, size_t n, int act);

/* C = A W^T (+ bias, or + C when beta = 1), then the activation, split over
 * the pool: by rows of C when M > N (each part packs all of W, a share of A),
 * else by columns (a share of W, all of A). Each part is a single-threaded
 * OpenBLAS call followed by the activation on the part just computed. */
typedef struct {
  const float *A, *W, *bias;
  float *C;
  int M, K, N, parts, by_rows, act;
  float beta;
} gemm_ctx;

static void gemm_task(void *c, int t, int thread) {
  (void)thread;
  const gemm_ctx *g = c;
  const int total = g->by_rows ? g->M : g->N;
  int lo = (int)((long long)total * t / g->parts);
  int hi = (int)((long long)total * (t + 1) / g->parts);
  if (!g->by_rows) { /* column blocks of 16: whole cache lines per part */
    lo = t == 0 ? 0 : (lo + 15) & ~15;
    hi = t == g->parts - 1 ? total : (hi + 15) & ~15;
    if (hi > total) hi = total;
  }
  if (hi <= lo) return;
  const int M = g->by_rows ? hi - lo : g->M, N = g->by_rows ? g->N : hi - lo;
  const float *A = g->by_rows ? g->A + (size_t)lo * g->K : g->A;
  const float *W = g->by_rows ? g->W : g->W + (size_t)lo * g->K;
  float *C = g->by_rows ? g->C + (size_t)lo * g->N : g->C + lo;
  float beta = g->beta;
  if (g->bias) {
    for (int i = 0; i < M; i++)
      memcpy(C + (size_t)i * g->N, g->bias + (g->by_rows ? 0 : lo), (size_t)N * sizeof(float));
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, g->K, 1.0f, A, g->K, W, g->K, beta,
              C, g->N);
  if (g->act != ACT_NONE)
    for (int i = 0; i < M; i++) act_apply(C + (size_t)i * g->N, (size_t)N, g->act);
}

/* 1 when it ran split over the pool (inside a forward, several threads). */
static int gemm_split(const float *A, int M, int K, const float *W, const float *bias, int N,
                      float *C, float beta, int act) {
  const int nt = um_threads();
  if (!um_blas_in_forward() || nt <= 1 || (double)M * N * K < 4e6) return 0;
  gemm_ctx g = {A, W, bias, C, M, K, N, nt, M > N, act, beta};
  um_parallel_for(nt, nt, gemm_task, &g);
  return 1;
}

static void linear_any(const float *A, int M, int K, const float *W, const float *bias, int N,
                       float *C, float beta, int act) {
  if (M <= UM_SMALL_M && use_avx2()) {
    if (beta == 0.0f) fill_bias(C, M, N, bias);
    else if (bias) { /* not used: accumulate and bias together */
      for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) C[(size_t)i * N + j] += bias[j];
    }
    smallm(A, M, K, W, N, C);
  } else if (!gemm_split(A, M, K, W, bias, N, C, beta, ACT_NONE)) {
    if (bias && beta == 0.0f) {
      fill_bias(C, M, N, bias); /* then accumulate: saves a pass over C */
      beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, W, K, beta, C, N);
  } else {
    return; /* activation already applied per part */
  }
  if (act != ACT_NONE) {
    if (act == ACT_QUICK_GELU)
      um_quick_gelu(C, (size_t)M * N);
    else
      um_gelu(C, (size_t)M * N);
  }
}

void um_linear(const float *A, int M, int K, const float *W, const float *bias, int N,
               float *C) {
  linear_any(A, M, K, W, bias, N, C, 0.0f, ACT_NONE);
}

void um_linear_acc(const float *A, int M, int K, const float *W, int N, float *C) {
  linear_any(A, M, K, W, NULL, N, C, 1.0f, ACT_NONE);
}

void um_linear_act(const float *A, int M, int K, const float *W, const float *bias, int N,
                   float *C, enum unimed_activation act) {
  const int a = act == UNIMED_ACT_QUICK_GELU ? ACT_QUICK_GELU : ACT_GELU;
  if (!(M <= UM_SMALL_M && use_avx2()) && gemm_split(A, M, K, W, bias, N, C, 0.0f, a)) return;
  linear_any(A, M, K, W, bias, N, C, 0.0f, a);
}

void um_matmul(const float *A, int M, int K, const float *B, int N, float *C) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
}

/* ---- LayerNorm ---- */

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

#if UM_X86
UM_AVX2 static void layernorm_row_avx2(const float *x, float *y, int D, const float *w,
                                       const float *b, float eps) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int i = 0;
  for (; i + 16 <= D; i += 16) {
    s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + i));
    s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + i + 8));
  }
  float mean = hsum256(_mm256_add_ps(s0, s1));
  for (; i < D; i++) mean += x[i];
  mean /= (float)D;
  const __m256 mv = _mm256_set1_ps(mean);
  s0 = _mm256_setzero_ps();
  s1 = s0;
  for (i = 0; i + 16 <= D; i += 16) {
    __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), mv);
    __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), mv);
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
  }
  float var = hsum256(_mm256_add_ps(s0, s1));
  for (; i < D; i++) var += (x[i] - mean) * (x[i] - mean);
  var /= (float)D;
  const float inv = 1.0f / sqrtf(var + eps);
  const __m256 iv = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= D; i += 8) {
    __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), iv);
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(t, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
  }
  for (; i < D; i++) y[i] = (x[i] - mean) * inv * w[i] + b[i];
}
#endif

typedef struct {
  float *x;           /* rows x D; gets += add / delta when those are set */
  const float *add;   /* [D] added to every row, or NULL */
  const float *delta; /* rows x D added, or NULL */
  float *y;
  const float *w, *b;
  int D;
  float eps;
} ln_ctx;

static void ln_rows(void *a, size_t lo, size_t hi) {
  const ln_ctx *c = a;
  const int D = c->D;
  const int simd = use_avx2();
  for (size_t r = lo; r < hi; r++) {
    float *x = c->x + r * (size_t)D;
    float *y = c->y + r * (size_t)D;
    if (c->add)
      for (int i = 0; i < D; i++) x[i] += c->add[i];
    if (c->delta) {
      const float *d = c->delta + r * (size_t)D;
      for (int i = 0; i < D; i++) x[i] += d[i];
    }
#if UM_X86
    if (simd) {
      layernorm_row_avx2(x, y, D, c->w, c->b, c->eps);
      continue;
    }
#endif
    (void)simd;
    layernorm_row(x, y, D, c->w, c->b, c->eps);
  }
}

static void ln_run(ln_ctx *c, int rows) {
  size_t g = grain_for((size_t)rows * c->D) / (size_t)c->D / 4 + 1;
  parallel_range((size_t)rows, g, ln_rows, c);
}

void um_layernorm(const float *x, float *y, int rows, int D, const float *w, const float *b,
                  float eps) {
  ln_ctx c = {(float *)x, NULL, NULL, y, w, b, D, eps}; /* x is only read */
  ln_run(&c, rows);
}

void um_add_layernorm(float *x, const float *delta, int rows, int D, const float *w,
                      const float *b, float eps) {
  ln_ctx c = {x, NULL, delta, x, w, b, D, eps};
  ln_run(&c, rows);
}

void um_layernorm_bias(float *x, const float *bias, float *y, int rows, int D, const float *w,
                       const float *b, float eps) {
  ln_ctx c = {x, bias, NULL, y, w, b, D, eps};
  ln_run(&c, rows);
}

/* ---- elementwise ---- */

static void add_range(void *a, size_t lo, size_t hi) {
  float **p = a;
  float *x = p[0];
  const float *d = p[1];
  for (size_t i = lo; i < hi; i++) x[i] += d[i];
}

void um_add(float *x, const float *delta, size_t n) {
  float *p[2] = {x, (float *)delta};
  parallel_range(n, grain_for(n), add_range, p);
}

#if UM_X86
UM_AVX2 static void quick_gelu_avx2(float *x, size_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), k = _mm256_set1_ps(-1.702f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    __m256 e = exp256(_mm256_mul_ps(k, v));
    _mm256_storeu_ps(x + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
  }
  for (; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}
#endif

static void quick_gelu_range(void *a, size_t lo, size_t hi) {
  float *x = a;
#if UM_X86
  if (use_avx2()) {
    quick_gelu_avx2(x + lo, hi - lo);
    return;
  }
#endif
  for (size_t i = lo; i < hi; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

void um_quick_gelu(float *x, size_t n) { parallel_range(n, grain_for(n), quick_gelu_range, x); }

#if UM_X86
/* erf(z) to about 1.5e-7 absolute: for |z| < 1, z P(z^2) (degree 6); above,
 * 1 - e^(-z^2) Q((|z| - 2.5) / 1.5) with Q (degree 12) fitting
 * erfc(z) e^(z^2) on [1, 4] (least squares at Chebyshev nodes, float64);
 * |z| is clamped at 4, where 1 - erfc rounds to 1 in float. */
UM_AVX2 static inline __m256 erf256(__m256 z) {
  static const float ps[7] = {7.882496720e-05f,  -8.018855006e-04f, 5.189312156e-03f,
                              -2.685432881e-02f, 1.128359735e-01f,  -3.761262596e-01f,
                              1.128379107e+00f};
  static const float pl[13] = {1.381908896e-05f,  -3.692872269e-05f, 5.494724974e-05f,
                               -1.439485932e-04f, 4.145081039e-04f,  -1.017117756e-03f,
                               2.401701640e-03f,  -5.567332730e-03f, 1.248970348e-02f,
                               -2.700572461e-02f, 5.611047149e-02f,  -1.115210056e-01f,
                               2.108063698e-01f};
  const __m256 signbit = _mm256_set1_ps(-0.0f);
  const __m256 sign = _mm256_and_ps(z, signbit);
  const __m256 a = _mm256_andnot_ps(signbit, z);
  const __m256 t = _mm256_mul_ps(a, a);
  __m256 p = _mm256_set1_ps(ps[0]);
  for (int i = 1; i < 7; i++) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(ps[i]));
  const __m256 small = _mm256_mul_ps(p, a);
  const __m256 ac = _mm256_min_ps(a, _mm256_set1_ps(4.0f));
  const __m256 u = _mm256_mul_ps(_mm256_sub_ps(ac, _mm256_set1_ps(2.5f)),
                                 _mm256_set1_ps(1.0f / 1.5f));
  __m256 q = _mm256_set1_ps(pl[0]);
  for (int i = 1; i < 13; i++) q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(pl[i]));
  const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(ac, ac)));
  const __m256 large = _mm256_fnmadd_ps(q, e, _mm256_set1_ps(1.0f));
  const __m256 lt1 = _mm256_cmp_ps(a, _mm256_set1_ps(1.0f), _CMP_LT_OQ);
  const __m256 r = _mm256_blendv_ps(large, small, lt1);
  return _mm256_or_ps(r, sign);
}

UM_AVX2 static void gelu_avx2(float *x, size_t n) {
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f),
               rs2 = _mm256_set1_ps(0.70710678118654752f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 e = erf256(_mm256_mul_ps(v, rs2));
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, e)));
  }
  for (; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}
#endif

static void gelu_range(void *a, size_t lo, size_t hi) {
  float *x = a;
#if UM_X86
  if (use_avx2()) {
    gelu_avx2(x + lo, hi - lo);
    return;
  }
#endif
  for (size_t i = lo; i < hi; i++)
    x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void um_gelu(float *x, size_t n) { parallel_range(n, grain_for(n), gelu_range, x); }

static void act_apply(float *x, size_t n, int act) {
  if (act == ACT_QUICK_GELU)
    quick_gelu_range(x, 0, n);
  else if (act == ACT_GELU)
    gelu_range(x, 0, n);
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

/* ---- attention ---- */

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

static int round16(int n) { return (n + 15) & ~15; }

size_t um_mha_scratch_floats(int max_lk, int hd) {
  const size_t lkp = (size_t)round16(max_lk);
  const size_t fp32 = ((size_t)hd * lkp + 8 * lkp + 15) & ~(size_t)15; /* K^T, 8 rows of scores */
  const size_t bf16 = um_attn_bf16_scratch_floats(max_lk, hd);
  return fp32 > bf16 ? fp32 : bf16;
}

/* One head of one sequence, portable: scores row by row. */
static void attn_head_c(const float *q, int ldq, const float *k, const float *v, int ldkv, int lq,
                        int lk, int hd, float scale, float *out, int ldo, float *scratch) {
  float *s = scratch;
  for (int i = 0; i < lq; i++) {
    const float *qi = q + (size_t)i * ldq;
    float mx = -INFINITY;
    for (int j = 0; j < lk; j++) {
      const float *kj = k + (size_t)j * ldkv;
      float acc = 0.f;
      for (int d = 0; d < hd; d++) acc += qi[d] * kj[d];
      s[j] = acc * scale;
      mx = s[j] > mx ? s[j] : mx;
    }
    float sum = 0.f;
    for (int j = 0; j < lk; j++) {
      s[j] = expf(s[j] - mx);
      sum += s[j];
    }
    const float inv = 1.0f / sum;
    float *o = out + (size_t)i * ldo;
    for (int d = 0; d < hd; d++) o[d] = 0.f;
    for (int j = 0; j < lk; j++) {
      const float *vj = v + (size_t)j * ldkv;
      const float p = s[j];
      for (int d = 0; d < hd; d++) o[d] += p * vj[d];
    }
    for (int d = 0; d < hd; d++) o[d] *= inv;
  }
}

#if UM_X86
/* One head of one sequence (hd a multiple of 16). K is packed transposed
 * (zero-padded to a multiple of 16 keys); blocks of 4 query rows: scores
 * [4, lk] by a 4x16 register kernel, softmax in place (the 1/sum applied to
 * the output), then out [4, hd] = P V by a 4x16 kernel per 16 columns. */
UM_AVX2 static void attn_head_avx2(const float *q, int ldq, const float *k, const float *v,
                                   int ldkv, int lq, int lk, int hd, float scale, float *out,
                                   int ldo, float *scratch) {
  const int lkp = round16(lk);
  float *kt = scratch, *s = scratch + (size_t)hd * lkp;
  for (int j = 0; j < lk; j++) {
    const float *kj = k + (size_t)j * ldkv;
    for (int d = 0; d < hd; d++) kt[(size_t)d * lkp + j] = kj[d];
  }
  for (int d = 0; d < hd; d++)
    for (int j = lk; j < lkp; j++) kt[(size_t)d * lkp + j] = 0.f;
  const __m256 sc = _mm256_set1_ps(scale);
  for (int i0 = 0; i0 < lq; i0 += 4) {
    const int nr = lq - i0 < 4 ? lq - i0 : 4;
    const float *qr[4];
    float *sr[4];
    for (int r = 0; r < 4; r++) {
      qr[r] = q + (size_t)(i0 + (r < nr ? r : nr - 1)) * ldq;
      sr[r] = s + (size_t)(r < nr ? r : nr - 1) * lkp;
    }
    for (int j = 0; j < lkp; j += 16) {
      __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
      __m256 a20 = a00, a21 = a00, a30 = a00, a31 = a00;
      const float *kp = kt + j;
      for (int d = 0; d < hd; d++, kp += lkp) {
        const __m256 k0 = _mm256_loadu_ps(kp), k1 = _mm256_loadu_ps(kp + 8);
        __m256 b = _mm256_broadcast_ss(qr[0] + d);
        a00 = _mm256_fmadd_ps(b, k0, a00);
        a01 = _mm256_fmadd_ps(b, k1, a01);
        b = _mm256_broadcast_ss(qr[1] + d);
        a10 = _mm256_fmadd_ps(b, k0, a10);
        a11 = _mm256_fmadd_ps(b, k1, a11);
        b = _mm256_broadcast_ss(qr[2] + d);
        a20 = _mm256_fmadd_ps(b, k0, a20);
        a21 = _mm256_fmadd_ps(b, k1, a21);
        b = _mm256_broadcast_ss(qr[3] + d);
        a30 = _mm256_fmadd_ps(b, k0, a30);
        a31 = _mm256_fmadd_ps(b, k1, a31);
      }
      /* rows r >= nr are duplicates of row nr-1: stored into the same row */
      _mm256_storeu_ps(sr[3] + j, _mm256_mul_ps(a30, sc));
      _mm256_storeu_ps(sr[3] + j + 8, _mm256_mul_ps(a31, sc));
      _mm256_storeu_ps(sr[2] + j, _mm256_mul_ps(a20, sc));
      _mm256_storeu_ps(sr[2] + j + 8, _mm256_mul_ps(a21, sc));
      _mm256_storeu_ps(sr[1] + j, _mm256_mul_ps(a10, sc));
      _mm256_storeu_ps(sr[1] + j + 8, _mm256_mul_ps(a11, sc));
      _mm256_storeu_ps(sr[0] + j, _mm256_mul_ps(a00, sc));
      _mm256_storeu_ps(sr[0] + j + 8, _mm256_mul_ps(a01, sc));
    }
    __m256 inv[4];
    for (int r = 0; r < nr; r++) {
      float *row = s + (size_t)r * lkp;
      int j = 0;
      __m256 m8 = _mm256_set1_ps(-INFINITY);
      for (; j + 8 <= lk; j += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(row + j));
      float mx = hmax256(m8);
      for (; j < lk; j++) mx = row[j] > mx ? row[j] : mx;
      const __m256 mv = _mm256_set1_ps(mx);
      __m256 s8 = _mm256_setzero_ps();
      for (j = 0; j + 8 <= lk; j += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(row + j), mv));
        _mm256_storeu_ps(row + j, e);
        s8 = _mm256_add_ps(s8, e);
      }
      float sum = hsum256(s8);
      for (; j < lk; j++) {
        row[j] = expf(row[j] - mx);
        sum += row[j];
      }
      inv[r] = _mm256_set1_ps(1.0f / sum);
    }
    for (int c = 0; c < hd; c += 16) {
      __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
      __m256 a20 = a00, a21 = a00, a30 = a00, a31 = a00;
      const float *vp = v + c;
      for (int j = 0; j < lk; j++, vp += ldkv) {
        const __m256 v0 = _mm256_loadu_ps(vp), v1 = _mm256_loadu_ps(vp + 8);
        __m256 b = _mm256_broadcast_ss(sr[0] + j);
        a00 = _mm256_fmadd_ps(b, v0, a00);
        a01 = _mm256_fmadd_ps(b, v1, a01);
        b = _mm256_broadcast_ss(sr[1] + j);
        a10 = _mm256_fmadd_ps(b, v0, a10);
        a11 = _mm256_fmadd_ps(b, v1, a11);
        b = _mm256_broadcast_ss(sr[2] + j);
        a20 = _mm256_fmadd_ps(b, v0, a20);
        a21 = _mm256_fmadd_ps(b, v1, a21);
        b = _mm256_broadcast_ss(sr[3] + j);
        a30 = _mm256_fmadd_ps(b, v0, a30);
        a31 = _mm256_fmadd_ps(b, v1, a31);
      }
      const __m256 acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
      for (int r = 0; r < nr; r++) {
        float *o = out + (size_t)(i0 + r) * ldo + c;
        _mm256_storeu_ps(o, _mm256_mul_ps(acc[r][0], inv[r]));
        _mm256_storeu_ps(o + 8, _mm256_mul_ps(acc[r][1], inv[r]));
      }
    }
  }
}
#endif

#if UM_X86
/* The AVX-512F version of attn_head_avx2: blocks of 8 query rows, scores by
 * an 8x32 register kernel (8x16 for the last 16 keys), out = P V by an 8x32
 * kernel per 32 columns (hd a multiple of 32). Each score and output element
 * sums over d (or the keys) in the same order as attn_head_avx2. */
UM_AVX512 static void attn_head_avx512(const float *q, int ldq, const float *k, const float *v,
                                       int ldkv, int lq, int lk, int hd, float scale, float *out,
                                       int ldo, float *scratch) {
  enum { R = 8 };
  const int lkp = round16(lk);
  float *kt = scratch, *s = scratch + (size_t)hd * lkp;
  for (int j = 0; j < lk; j++) {
    const float *kj = k + (size_t)j * ldkv;
    for (int d = 0; d < hd; d++) kt[(size_t)d * lkp + j] = kj[d];
  }
  for (int d = 0; d < hd; d++)
    for (int j = lk; j < lkp; j++) kt[(size_t)d * lkp + j] = 0.f;
  const __m512 sc = _mm512_set1_ps(scale);
  for (int i0 = 0; i0 < lq; i0 += R) {
    const int nr = lq - i0 < R ? lq - i0 : R;
    const float *qr[R];
    float *sr[R];
    for (int r = 0; r < R; r++) {
      qr[r] = q + (size_t)(i0 + (r < nr ? r : nr - 1)) * ldq;
      sr[r] = s + (size_t)(r < nr ? r : nr - 1) * lkp;
    }
    int j = 0;
    for (; j + 32 <= lkp; j += 32) {
      __m512 a[R][2];
      for (int r = 0; r < R; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
      const float *kp = kt + j;
      for (int d = 0; d < hd; d++, kp += lkp) {
        const __m512 k0 = _mm512_loadu_ps(kp), k1 = _mm512_loadu_ps(kp + 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
          const __m512 b = _mm512_set1_ps(qr[r][d]);
          a[r][0] = _mm512_fmadd_ps(b, k0, a[r][0]);
          a[r][1] = _mm512_fmadd_ps(b, k1, a[r][1]);
        }
      }
      /* rows r >= nr are duplicates of row nr-1: stored into the same row */
      for (int r = R - 1; r >= 0; r--) {
        _mm512_storeu_ps(sr[r] + j, _mm512_mul_ps(a[r][0], sc));
        _mm512_storeu_ps(sr[r] + j + 16, _mm512_mul_ps(a[r][1], sc));
      }
    }
    if (j < lkp) { /* the last 16 keys */
      __m512 a[R];
      for (int r = 0; r < R; r++) a[r] = _mm512_setzero_ps();
      const float *kp = kt + j;
      for (int d = 0; d < hd; d++, kp += lkp) {
        const __m512 k0 = _mm512_loadu_ps(kp);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) a[r] = _mm512_fmadd_ps(_mm512_set1_ps(qr[r][d]), k0, a[r]);
      }
      for (int r = R - 1; r >= 0; r--) _mm512_storeu_ps(sr[r] + j, _mm512_mul_ps(a[r], sc));
    }
    __m512 inv[R];
    for (int r = 0; r < nr; r++) {
      float *row = s + (size_t)r * lkp;
      const __mmask16 tail = (__mmask16)((1u << (lk % 16)) - 1);
      int jj = 0;
      __m512 m16 = _mm512_set1_ps(-INFINITY);
      for (; jj + 16 <= lk; jj += 16) m16 = _mm512_max_ps(m16, _mm512_loadu_ps(row + jj));
      if (jj < lk) m16 = _mm512_mask_max_ps(m16, tail, m16, _mm512_loadu_ps(row + jj));
      const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(m16));
      __m512 s16 = _mm512_setzero_ps();
      for (jj = 0; jj + 16 <= lk; jj += 16) {
        const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(row + jj), mv));
        _mm512_storeu_ps(row + jj, e);
        s16 = _mm512_add_ps(s16, e);
      }
      if (jj < lk) {
        const __m512 e = _mm512_maskz_mov_ps(tail, exp512(_mm512_sub_ps(_mm512_loadu_ps(row + jj), mv)));
        _mm512_storeu_ps(row + jj, e);
        s16 = _mm512_add_ps(s16, e);
      }
      inv[r] = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(s16));
    }
    for (int c = 0; c < hd; c += 32) {
      __m512 a[R][2];
      for (int r = 0; r < R; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
      const float *vp = v + c;
      for (int jv = 0; jv < lk; jv++, vp += ldkv) {
        const __m512 v0 = _mm512_loadu_ps(vp), v1 = _mm512_loadu_ps(vp + 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
          const __m512 b = _mm512_set1_ps(sr[r][jv]);
          a[r][0] = _mm512_fmadd_ps(b, v0, a[r][0]);
          a[r][1] = _mm512_fmadd_ps(b, v1, a[r][1]);
        }
      }
      for (int r = 0; r < nr; r++) {
        float *o = out + (size_t)(i0 + r) * ldo + c;
        _mm512_storeu_ps(o, _mm512_mul_ps(a[r][0], inv[r]));
        _mm512_storeu_ps(o + 16, _mm512_mul_ps(a[r][1], inv[r]));
      }
    }
  }
}
#endif

typedef struct {
  const um_attn_seq *seqs;
  int ldq, ldkv, ldo, H, hd, bf16;
  float *scratch;
  size_t per_thread;
} mha_ctx;

static void mha_task(void *c, int task, int thread) {
  const mha_ctx *m = c;
  const um_attn_seq *sq = &m->seqs[task / m->H];
  const int h = task % m->H, hd = m->hd;
  const float scale = 1.0f / sqrtf((float)hd);
  float *scratch = m->scratch + (size_t)thread * m->per_thread;
  const float *q = sq->q + (size_t)h * hd, *k = sq->k + (size_t)h * hd,
              *v = sq->v + (size_t)h * hd;
  float *out = sq->out + (size_t)h * hd;
#if UM_X86
  if (m->bf16) {
    um_attn_head_bf16(q, m->ldq, k, v, m->ldkv, sq->lq, sq->lk, hd, scale, out, m->ldo, scratch);
    return;
  }
  if (hd % 32 == 0 && use_avx512()) {
    attn_head_avx512(q, m->ldq, k, v, m->ldkv, sq->lq, sq->lk, hd, scale, out, m->ldo, scratch);
    return;
  }
  if (hd % 16 == 0 && use_avx2()) {
    attn_head_avx2(q, m->ldq, k, v, m->ldkv, sq->lq, sq->lk, hd, scale, out, m->ldo, scratch);
    return;
  }
#endif
  attn_head_c(q, m->ldq, k, v, m->ldkv, sq->lq, sq->lk, hd, scale, out, m->ldo, scratch);
}

void um_mha(const um_attn_seq *seqs, int n, int ldq, int ldkv, int ldo, int H, int hd,
            float *scratch, size_t scratch_per_thread, int max_threads, int bf16) {
  mha_ctx m = {seqs, ldq, ldkv, ldo, H, hd,
               bf16 && UM_X86 && hd % 32 == 0 && use_avx512() && um_bf16_available(), scratch,
               scratch_per_thread};
  um_parallel_for(n * H, max_threads, mha_task, &m);
}
