/* INT8 GEMM for the linear layers: C[M,N] = A[M,K] · W[N,K]^T, see
 * gemm_i8.h.
 *
 * Kernel (AVX-512 VNNI). vpdpbusd adds to each of 16 int32 lanes the dot
 * product of 4 unsigned bytes of one source with 4 signed bytes of the
 * other, so K is taken in quads: a C tile of MR rows × NR = 16·NV columns
 * lives in MR·NV zmm accumulators; per K quad the kernel loads NV vectors of
 * W (16 columns × 4 k each) and, for each of the MR rows, broadcasts that
 * row's quad of A. The epilogue turns the exact int32 sums into floats
 * (zero-point correction, both scales) and adds bias / residual /
 * activation before the single store.
 *
 * Layouts (32-bit words, each 4 bytes of consecutive k):
 *   W, packed once:  [Np/NR panels][Kp/4 quads][NR columns]
 *   A, per call:     per tile of mr rows: [Kp/64 blocks][mr rows][16 quads]
 * Kp is K rounded up to 64, Np is N rounded up to NR; W's padding is zero
 * (so A's padding never counts).
 *
 * Blocking and threads as in gemm_bf16.c: no K blocking (final sums in
 * registers), row blocks of about A_BLOCK_BYTES quantized A × groups of W
 * panels, some 8 chunks per thread on the pool of threads.c; each row block
 * is quantized by the first thread that needs it. The AVX-VNNI (ymm) kernel
 * uses the same layouts, 3 rows × 32 columns at a time, with the epilogue
 * in C. */
#include "gemm_i8.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "act512.h"
#include "internal.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define I8_X86 1
#define I8_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define I8_TARGET256 __attribute__((target("avx2,fma,avxvnni")))
#define I8_INLINE __attribute__((always_inline)) inline
#else
#define I8_X86 0
#endif

#if I8_X86
/* AVX-VNNI (CPUID leaf 7, subleaf 1, EAX bit 4), asked directly: clang 14's
 * __builtin_cpu_supports does not know the name "avxvnni".  The OS's saving
 * of the YMM state is covered by the avx2 check that comes with it. */
static int has_avx_vnni(void) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
  return (a >> 4) & 1u;
}
#endif

#define NV 2             /* zmm vectors of C per tile row */
#define NR (16 * NV)     /* columns per W panel and tile */
#define MR 14            /* rows per tile */
#define KBLK 64          /* K padding: 16 quads per A block */
#define MR256 3          /* rows per step of the ymm kernel */
#define A_BLOCK_BYTES (160 * 1024)
#define OPS_PER_THREAD 8e6 /* below this much work per thread, use fewer */

enum { EPI_BIAS, EPI_ACC, EPI_QUICK_GELU, EPI_GELU };

struct um_i8_weight {
  int N, K, Np, Kp;
  uint32_t *data;  /* [Np/NR][Kp/4][NR], 4 int8 per word */
  int32_t *colsum; /* [Np]: sum_k w_q[n, k] */
  float *scale;    /* [Np]: s_w[n] (0 in the padding) */
};

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

/* ---- quantizing and packing the weights ---- */

um_i8_weight *um_i8_pack(const float *W, int N, int K) {
  if (!W || N <= 0 || K <= 0 || N > (1 << 28) || K > 65536) return NULL; /* int32 sums: 255 * 127 * K < 2^31 */
  um_i8_weight *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->N = N;
  w->K = K;
  w->Np = round_up(N, NR);
  w->Kp = round_up(K, KBLK);
  const size_t words = (size_t)w->Np * (size_t)(w->Kp / 4);
  w->data = aligned_alloc(64, words * sizeof(uint32_t));
  w->colsum = aligned_alloc(64, (size_t)w->Np * sizeof(int32_t));
  w->scale = aligned_alloc(64, (size_t)w->Np * sizeof(float));
  signed char *q = malloc((size_t)K);
  if (!w->data || !w->colsum || !w->scale || !q) {
    free(q);
    um_i8_free(w);
    return NULL;
  }
  memset(w->data, 0, words * sizeof(uint32_t));
  const int K4 = w->Kp / 4;
  for (int n = 0; n < w->Np; n++) {
    w->colsum[n] = 0;
    w->scale[n] = 0.0f;
    if (n >= N) continue;
    const float *row = W + (size_t)n * K;
    float amax = 0.0f;
    for (int k = 0; k < K; k++) amax = fabsf(row[k]) > amax ? fabsf(row[k]) : amax;
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    int32_t sum = 0;
    for (int k = 0; k < K; k++) {
      float v = nearbyintf(row[k] * inv);
      v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
      q[k] = (signed char)(v == v ? v : 0.0f); /* NaN weights quantize to 0 */
      sum += q[k];
    }
    w->colsum[n] = sum;
    w->scale[n] = amax / 127.0f;
    uint32_t *dst = w->data + (size_t)(n / NR) * K4 * NR + n % NR;
    for (int k = 0; k < K; k++)
      dst[(size_t)(k / 4) * NR] |= (uint32_t)(uint8_t)q[k] << (8 * (k % 4));
  }
  free(q);
  return w;
}

void um_i8_free(um_i8_weight *w) {
  if (!w) return;
  free(w->data);
  free(w->colsum);
  free(w->scale);
  free(w);
}

size_t um_i8_bytes(const um_i8_weight *w) {
  return w ? (size_t)w->Np * (size_t)w->Kp + (size_t)w->Np * 8 : 0;
}
int um_i8_rows(const um_i8_weight *w) { return w ? w->N : 0; }
int um_i8_cols(const um_i8_weight *w) { return w ? w->K : 0; }

int um_i8_weight_at(const um_i8_weight *w, int n, int k) {
  const uint32_t word = w->data[(size_t)(n / NR) * (w->Kp / 4) * NR + (size_t)(k / 4) * NR + n % NR];
  return (int)(int8_t)(uint8_t)(word >> (8 * (k % 4)));
}
float um_i8_scale(const um_i8_weight *w, int n) { return w->scale[n]; }

/* ---- CPU features ---- */

static atomic_int avail_cache = -1;

int um_i8_available(void) {
  int v = atomic_load_explicit(&avail_cache, memory_order_relaxed);
  if (v >= 0) return v;
  v = 0;
#if I8_X86
  const char *env = getenv("UNIMED_SIMD");
  __builtin_cpu_init();
  if (!(env && env[0] == '0')) {
    if (!(env && env[0] == '2') && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vnni"))
      v = 2;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_avx_vnni())
      v = 1;
  }
#endif
  atomic_store_explicit(&avail_cache, v, memory_order_relaxed);
  return v;
}

/* ---- quantizing A ---- */

/* The row's range [min(0, min a), max(0, max a)] → scale, 1/scale, zero point. */
static void row_params(float lo, float hi, float *scale, float *inv, int *zero) {
  const float range = hi - lo;
  if (!(range > 0.0f) || range != range) {
    *scale = 0.0f, *inv = 0.0f, *zero = 0;
    return;
  }
  *scale = range / 255.0f;
  *inv = 255.0f / range;
  float z = nearbyintf(-lo * *inv);
  *zero = (int)(z < 0.0f ? 0.0f : z > 255.0f ? 255.0f : z);
}

static unsigned char quantize(float a, float inv, int zero) {
  float v = nearbyintf(a * inv) + (float)zero;
  v = v > 255.0f ? 255.0f : v < 0.0f ? 0.0f : v;
  return (unsigned char)(v == v ? v : 0.0f);
}

void um_i8_quantize_row(const float *a, int K, float *scale, int *zero, unsigned char *q) {
  float lo = 0.0f, hi = 0.0f, inv;
  for (int k = 0; k < K; k++) {
    lo = a[k] < lo ? a[k] : lo;
    hi = a[k] > hi ? a[k] : hi;
  }
  row_params(lo, hi, scale, &inv, zero);
  for (int k = 0; k < K; k++) q[k] = quantize(a[k], inv, *zero);
}

/* ---- the job: one GEMM call cut into chunks ---- */

enum { RB_TODO, RB_PACKING, RB_READY };

typedef struct {
  const float *A;
  int M, K, N;
  const um_i8_weight *W;
  const float *bias;
  float *C;
  const float *ln_w, *ln_b; /* LayerNorm of A's rows first, or NULL */
  float eps;
  int epi, isa;   /* isa: 2 zmm kernel, 1 ymm kernel */
  int tiles;      /* ceil(M / MR) row tiles of MR rows */
  int panels;     /* ceil(N / NR) W panels */
  int nrb, npg;   /* row blocks × panel groups = chunks */
  uint32_t *pa;   /* all of A quantized: tile t at pa + t*MR*Kp/4 */
  float *sa;      /* [M] row scales */
  int32_t *za;    /* [M] row zero points */
  atomic_int *rb_state;
} job;

/* y = LayerNorm(x) * w + b (mean, then centred variance, in float). */
static void layernorm_c(const float *x, int K, const float *w, const float *b, float eps,
                        float *y) {
  float mean = 0.0f, var = 0.0f;
  for (int k = 0; k < K; k++) mean += x[k];
  mean /= (float)K;
  for (int k = 0; k < K; k++) var += (x[k] - mean) * (x[k] - mean);
  var /= (float)K;
  const float inv = 1.0f / sqrtf(var + eps);
  for (int k = 0; k < K; k++) y[k] = (x[k] - mean) * inv * w[k] + b[k];
}

/* Quantizes rows [0, rows) of A (LayerNorm'd first when ln_w is set) into
 * tiles of MR rows (the last may be shorter): tile t at dst + t*MR*Kp/4,
 * laid out [Kp/64][mr][16]. Portable; the AVX-512 version below does the
 * same arithmetic. */
static void pack_a_c(const float *A, int rows, int K, int Kp, uint32_t *dst, float *sa,
                     int32_t *za, const float *ln_w, const float *ln_b, float eps) {
  unsigned char *q = malloc((size_t)Kp);
  float *normed = ln_w ? malloc((size_t)K * sizeof(float)) : NULL;
  if (!q || (ln_w && !normed)) {
    fprintf(stderr, "gemm_i8: out of memory\n");
    abort();
  }
  for (int t0 = 0; t0 < rows; t0 += MR) {
    const int mr = rows - t0 < MR ? rows - t0 : MR;
    uint32_t *tile = dst + (size_t)t0 * (Kp / 4);
    for (int i = 0; i < mr; i++) {
      int z;
      memset(q, 0, (size_t)Kp);
      const float *row = A + (size_t)(t0 + i) * K;
      if (ln_w) {
        layernorm_c(row, K, ln_w, ln_b, eps, normed);
        row = normed;
      }
      um_i8_quantize_row(row, K, &sa[t0 + i], &z, q);
      za[t0 + i] = z;
      for (int kb = 0; kb < Kp / KBLK; kb++)
        memcpy(tile + ((size_t)kb * mr + i) * 16, q + kb * KBLK, KBLK);
    }
  }
  free(normed);
  free(q);
}

#if I8_X86

/* y = LayerNorm(x) * w + b over K floats, as ops.c's LayerNorm: mean, then
 * the centred variance, both in float (four partial sums each, so that the
 * additions do not wait for one another). */
I8_TARGET static void layernorm_512(const float *x, int K, const float *w, const float *b,
                                    float eps, float *y) {
  __m512 s = _mm512_setzero_ps(), s1 = s, s2 = s, s3 = s;
  int k = 0;
  for (; k + 64 <= K; k += 64) {
    s = _mm512_add_ps(s, _mm512_loadu_ps(x + k));
    s1 = _mm512_add_ps(s1, _mm512_loadu_ps(x + k + 16));
    s2 = _mm512_add_ps(s2, _mm512_loadu_ps(x + k + 32));
    s3 = _mm512_add_ps(s3, _mm512_loadu_ps(x + k + 48));
  }
  for (; k + 16 <= K; k += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(x + k));
  const __mmask16 tail = (__mmask16)((1u << (K - k)) - 1);
  if (k < K) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tail, x + k));
  s = _mm512_add_ps(_mm512_add_ps(s, s1), _mm512_add_ps(s2, s3));
  const float mean = _mm512_reduce_add_ps(s) / (float)K;
  const __m512 mv = _mm512_set1_ps(mean);
  s = s1 = s2 = s3 = _mm512_setzero_ps();
  for (k = 0; k + 64 <= K; k += 64) {
    const __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(x + k), mv);
    const __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(x + k + 16), mv);
    const __m512 d2 = _mm512_sub_ps(_mm512_loadu_ps(x + k + 32), mv);
    const __m512 d3 = _mm512_sub_ps(_mm512_loadu_ps(x + k + 48), mv);
    s = _mm512_fmadd_ps(d0, d0, s);
    s1 = _mm512_fmadd_ps(d1, d1, s1);
    s2 = _mm512_fmadd_ps(d2, d2, s2);
    s3 = _mm512_fmadd_ps(d3, d3, s3);
  }
  for (; k + 16 <= K; k += 16) {
    const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + k), mv);
    s = _mm512_fmadd_ps(d, d, s);
  }
  s = _mm512_add_ps(_mm512_add_ps(s, s1), _mm512_add_ps(s2, s3));
  if (k < K) {
    const __m512 d = _mm512_maskz_sub_ps(tail, _mm512_maskz_loadu_ps(tail, x + k), mv);
    s = _mm512_fmadd_ps(d, d, s);
  }
  const float var = _mm512_reduce_add_ps(s) / (float)K;
  const __m512 iv = _mm512_set1_ps(1.0f / sqrtf(var + eps));
  for (k = 0; k + 16 <= K; k += 16) {
    const __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + k), mv), iv);
    _mm512_storeu_ps(y + k, _mm512_fmadd_ps(t, _mm512_loadu_ps(w + k), _mm512_loadu_ps(b + k)));
  }
  if (k < K) {
    const __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + k), mv), iv);
    _mm512_mask_storeu_ps(y + k, tail,
                          _mm512_fmadd_ps(t, _mm512_maskz_loadu_ps(tail, w + k),
                                          _mm512_maskz_loadu_ps(tail, b + k)));
  }
}

/* ln_w set: each row is LayerNorm(row) * ln_w + ln_b first (K <= UM_I8_LN_MAX_K). */
I8_TARGET static void pack_a_512(const float *A, int rows, int K, int Kp, uint32_t *dst,
                                 float *sa, int32_t *za, const float *ln_w, const float *ln_b,
                                 float eps) {
  const int nkb = Kp / KBLK;
  float normed[UM_I8_LN_MAX_K] __attribute__((aligned(64)));
  /* packs/packus leave the 16 quads of a block as [quad % 4][part]: back to [part][quad % 4] */
  const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
  for (int t0 = 0; t0 < rows; t0 += MR) {
    const int mr = rows - t0 < MR ? rows - t0 : MR;
    uint32_t *tile = dst + (size_t)t0 * (Kp / 4);
    for (int i = 0; i < mr; i++) {
      const float *src = A + (size_t)(t0 + i) * K;
      if (ln_w) {
        layernorm_512(src, K, ln_w, ln_b, eps, normed);
        src = normed;
      }
      /* min and max in two chains each (exact, so the same whatever the order) */
      __m512 vlo = _mm512_setzero_ps(), vhi = vlo, vlo1 = vlo, vhi1 = vlo;
      int k = 0;
      for (; k + 32 <= K; k += 32) {
        const __m512 v = _mm512_loadu_ps(src + k), v1 = _mm512_loadu_ps(src + k + 16);
        vlo = _mm512_min_ps(vlo, v);
        vhi = _mm512_max_ps(vhi, v);
        vlo1 = _mm512_min_ps(vlo1, v1);
        vhi1 = _mm512_max_ps(vhi1, v1);
      }
      for (; k + 16 <= K; k += 16) {
        const __m512 v = _mm512_loadu_ps(src + k);
        vlo = _mm512_min_ps(vlo, v);
        vhi = _mm512_max_ps(vhi, v);
      }
      if (k < K) {
        const __mmask16 m = (__mmask16)((1u << (K - k)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(m, src + k);
        vlo = _mm512_min_ps(vlo, v);
        vhi = _mm512_max_ps(vhi, v);
      }
      vlo = _mm512_min_ps(vlo, vlo1);
      vhi = _mm512_max_ps(vhi, vhi1);
      float scale, inv;
      int zero;
      row_params(_mm512_reduce_min_ps(vlo), _mm512_reduce_max_ps(vhi), &scale, &inv, &zero);
      sa[t0 + i] = scale;
      za[t0 + i] = zero;
      const __m512 vinv = _mm512_set1_ps(inv);
      const __m512i vz = _mm512_set1_epi32(zero);
      unsigned char *d = (unsigned char *)(tile + (size_t)i * 16);
      for (int kb = 0; kb < nkb; kb++) {
        __m512i qi[4];
        for (int part = 0; part < 4; part++) {
          const int k0 = kb * KBLK + part * 16;
          const int left = K - k0;
          const __mmask16 m = left >= 16 ? (__mmask16)0xffff
                              : left <= 0 ? (__mmask16)0
                                          : (__mmask16)((1u << left) - 1);
          const __m512 v = _mm512_maskz_loadu_ps(m, src + (left > 0 ? k0 : 0));
          /* round to nearest even, as nearbyintf in the default mode; NaN
           * converts to INT32_MIN, which saturates to 0 below */
          qi[part] = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, vinv)), vz);
        }
        /* saturate to int16, then to 0..255: the clamp of quantize() */
        const __m512i q8 = _mm512_packus_epi16(_mm512_packs_epi32(qi[0], qi[1]),
                                               _mm512_packs_epi32(qi[2], qi[3]));
        _mm512_storeu_si512((void *)(d + (size_t)kb * mr * 64),
                            _mm512_permutexvar_epi32(order, q8));
      }
    }
  }
}

/* ---- micro-kernel (AVX-512 VNNI) ---- */

typedef struct {
  const uint32_t *a;   /* quantized A tile: [nkb][mr][16] */
  const uint32_t *b;   /* W panel from quad 0: [Kp/4][NR] */
  int nkb;             /* Kp / 64 */
  float *c;            /* C tile's top-left element */
  size_t ldc;
  int ncols;           /* valid columns in the panel, 1..NR */
  const float *bias;   /* at the panel's first column, or NULL */
  const float *ws;     /* weight scales at the panel's first column */
  const int32_t *wsum; /* weight column sums, likewise */
  const float *sa;     /* the tile's row scales */
  const int32_t *za;   /* the tile's row zero points */
  int epi;
} kargs;

I8_TARGET static I8_INLINE void kernel_body(const int mr, const kargs *k) {
  __m512i acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) acc[i][j] = _mm512_setzero_si512();
  const uint32_t *a = k->a, *b = k->b;
  for (int kb = 0; kb < k->nkb; kb++) {
#pragma GCC unroll 4
    for (int kk = 0; kk < 16; kk++) {
      __m512i bv[NV];
#pragma GCC unroll 4
      for (int j = 0; j < NV; j++) bv[j] = _mm512_load_si512((const void *)(b + kk * NR + 16 * j));
#pragma GCC unroll 16
      for (int i = 0; i < mr; i++) {
        const __m512i av = _mm512_set1_epi32((int)a[i * 16 + kk]);
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], av, bv[j]);
      }
    }
    a += mr * 16;
    b += 16 * NR;
  }

  __mmask16 mask[NV];
  __m512 bias[NV], ws[NV];
  __m512i wsum[NV];
#pragma GCC unroll 4
  for (int j = 0; j < NV; j++) {
    const int c = k->ncols - 16 * j;
    mask[j] = c >= 16 ? (__mmask16)0xffff : c <= 0 ? (__mmask16)0 : (__mmask16)((1u << c) - 1);
    bias[j] = k->bias ? _mm512_maskz_loadu_ps(mask[j], k->bias + 16 * j) : _mm512_setzero_ps();
    ws[j] = _mm512_load_ps(k->ws + 16 * j);
    wsum[j] = _mm512_load_si512((const void *)(k->wsum + 16 * j));
  }
#pragma GCC unroll 16
  for (int i = 0; i < mr; i++) {
    float *row = k->c + (size_t)i * k->ldc;
    const __m512i z = _mm512_set1_epi32(k->za[i]);
    const __m512 sa = _mm512_set1_ps(k->sa[i]);
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) {
      if (!mask[j]) continue;
      const __m512i exact = _mm512_sub_epi32(acc[i][j], _mm512_mullo_epi32(z, wsum[j]));
      __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), _mm512_mul_ps(sa, ws[j]));
      v = _mm512_add_ps(v, bias[j]);
      switch (k->epi) {
        case EPI_ACC: v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask[j], row + 16 * j)); break;
        case EPI_QUICK_GELU: v = quick_gelu512(v); break;
        case EPI_GELU: v = gelu512(v); break;
        default: break;
      }
      _mm512_mask_storeu_ps(row + 16 * j, mask[j], v);
    }
  }
}

#define KERNEL(R) \
  I8_TARGET static void kernel_##R(const kargs *k) { kernel_body(R, k); }
KERNEL(1)
KERNEL(2)
KERNEL(3)
KERNEL(4)
KERNEL(5)
KERNEL(6)
KERNEL(7)
KERNEL(8)
KERNEL(9)
KERNEL(10)
KERNEL(11)
KERNEL(12)
KERNEL(13)
KERNEL(14)
_Static_assert(MR == 14, "kernel table below lists MR kernels");
static void (*const kernels[MR + 1])(const kargs *) = {
    NULL,      kernel_1,  kernel_2,  kernel_3,  kernel_4,  kernel_5,  kernel_6, kernel_7,
    kernel_8,  kernel_9,  kernel_10, kernel_11, kernel_12, kernel_13, kernel_14};

/* ---- micro-kernel (AVX-VNNI, ymm): rows [r0, r0 + rows) of a tile of mr ---- */

static float epilogue_1(float v, int epi, float old) {
  switch (epi) {
    case EPI_ACC: return old + v;
    case EPI_QUICK_GELU: return v / (1.0f + expf(-1.702f * v));
    case EPI_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    default: return v;
  }
}

I8_TARGET256 static void kernel256(const kargs *k, int mr, int r0, int rows) {
  __m256i acc[MR256][4];
  for (int i = 0; i < MR256; i++)
    for (int j = 0; j < 4; j++) acc[i][j] = _mm256_setzero_si256();
  const uint32_t *a = k->a + (size_t)r0 * 16, *b = k->b;
  for (int kb = 0; kb < k->nkb; kb++) {
    for (int kk = 0; kk < 16; kk++) {
      __m256i av[MR256];
      for (int i = 0; i < MR256; i++)
        av[i] = _mm256_set1_epi32(i < rows ? (int)a[i * 16 + kk] : 0);
      for (int j = 0; j < 4; j++) {
        const __m256i bv = _mm256_load_si256((const void *)(b + kk * NR + 8 * j));
        for (int i = 0; i < MR256; i++) acc[i][j] = _mm256_dpbusd_avx_epi32(acc[i][j], av[i], bv);
      }
    }
    a += mr * 16;
    b += 16 * NR;
  }
  for (int i = 0; i < rows; i++) {
    int32_t s[NR];
    for (int j = 0; j < 4; j++) _mm256_storeu_si256((void *)(s + 8 * j), acc[i][j]);
    float *row = k->c + (size_t)(r0 + i) * k->ldc;
    const int32_t z = k->za[r0 + i];
    const float sa = k->sa[r0 + i];
    for (int c = 0; c < k->ncols; c++) {
      const float v = (float)(s[c] - z * k->wsum[c]) * (sa * k->ws[c]) + (k->bias ? k->bias[c] : 0.0f);
      row[c] = epilogue_1(v, k->epi, row[c]);
    }
  }
}

#endif /* I8_X86 */

/* Row block rb is tiles [rb_lo(rb), rb_lo(rb + 1)); rows [MR*lo, min(M, MR*hi)). */
static int rb_lo(const job *j, int rb) { return (int)((long)j->tiles * rb / j->nrb); }
static int pg_lo(const job *j, int pg) { return (int)((long)j->panels * pg / j->npg); }

static void pack_block(job *j, int rb) {
  const int t0 = rb_lo(j, rb), t1 = rb_lo(j, rb + 1);
  const int r0 = t0 * MR, r1 = t1 * MR < j->M ? t1 * MR : j->M;
  const int Kp = j->W->Kp;
  uint32_t *dst = j->pa + (size_t)t0 * MR * (Kp / 4);
#if I8_X86
  if (j->isa == 2)
    pack_a_512(j->A + (size_t)r0 * j->K, r1 - r0, j->K, Kp, dst, j->sa + r0, j->za + r0,
               j->ln_w, j->ln_b, j->eps);
  else
#endif
    pack_a_c(j->A + (size_t)r0 * j->K, r1 - r0, j->K, Kp, dst, j->sa + r0, j->za + r0,
             j->ln_w, j->ln_b, j->eps);
  atomic_store_explicit(&j->rb_state[rb], RB_READY, memory_order_release);
}

/* Makes row block rb quantized: quantizes it, or waits for the thread doing
 * it while quantizing other blocks nobody has started. */
static void need_block(job *j, int rb) {
  int st = atomic_load_explicit(&j->rb_state[rb], memory_order_acquire);
  if (st == RB_READY) return;
  int todo = RB_TODO;
  if (st == RB_TODO &&
      atomic_compare_exchange_strong_explicit(&j->rb_state[rb], &todo, RB_PACKING,
                                              memory_order_acq_rel, memory_order_acquire)) {
    pack_block(j, rb);
    return;
  }
  for (int o = rb + 1; o < j->nrb; o++) {
    if (atomic_load_explicit(&j->rb_state[rb], memory_order_acquire) == RB_READY) return;
    todo = RB_TODO;
    if (atomic_compare_exchange_strong_explicit(&j->rb_state[o], &todo, RB_PACKING,
                                                memory_order_acq_rel, memory_order_acquire))
      pack_block(j, o);
  }
  for (int spins = 0; atomic_load_explicit(&j->rb_state[rb], memory_order_acquire) != RB_READY;
       spins++)
    if (spins >= 4096) sched_yield();
}

static void run_chunk(void *ctx, int c, int thread) {
  (void)thread;
  job *j = ctx;
  const int rb = c / j->npg, pg = c % j->npg;
  need_block(j, rb);
#if I8_X86
  const um_i8_weight *W = j->W;
  const int K4 = W->Kp / 4;
  const int t0 = rb_lo(j, rb), t1 = rb_lo(j, rb + 1), p0 = pg_lo(j, pg), p1 = pg_lo(j, pg + 1);
  const int r1 = t1 * MR < j->M ? t1 * MR : j->M;
  for (int p = p0; p < p1; p++) {
    kargs ka = {.b = W->data + (size_t)p * K4 * NR,
                .nkb = W->Kp / KBLK,
                .ldc = (size_t)j->N,
                .ncols = j->N - p * NR < NR ? j->N - p * NR : NR,
                .bias = j->bias ? j->bias + p * NR : NULL,
                .ws = W->scale + p * NR,
                .wsum = W->colsum + p * NR,
                .epi = j->epi};
    for (int t = t0; t < t1; t++) {
      const int r = t * MR, mr = r1 - r < MR ? r1 - r : MR;
      ka.a = j->pa + (size_t)r * K4;
      ka.c = j->C + (size_t)r * j->N + (size_t)p * NR;
      ka.sa = j->sa + r;
      ka.za = j->za + r;
      if (j->isa == 2)
        kernels[mr](&ka);
      else
        for (int i = 0; i < mr; i += MR256)
          kernel256(&ka, mr, i, mr - i < MR256 ? mr - i : MR256);
    }
  }
#else
  (void)pg;
#endif
}

/* ---- portable path: the same integers in C ---- */

static void portable(job *j) {
  const um_i8_weight *W = j->W;
  const int K = j->K, N = j->N, Kp = W->Kp;
  unsigned char *q = calloc((size_t)Kp, 1);
  float *normed = j->ln_w ? malloc((size_t)K * sizeof(float)) : NULL;
  if (!q || (j->ln_w && !normed)) {
    fprintf(stderr, "gemm_i8: out of memory\n");
    abort();
  }
  for (int m = 0; m < j->M; m++) {
    float sa;
    int z;
    const float *a = j->A + (size_t)m * K;
    if (j->ln_w) {
      layernorm_c(a, K, j->ln_w, j->ln_b, j->eps, normed);
      a = normed;
    }
    um_i8_quantize_row(a, K, &sa, &z, q);
    float *row = j->C + (size_t)m * N;
    for (int n = 0; n < N; n++) {
      int32_t dot = 0;
      for (int k = 0; k < K; k++) dot += (int32_t)q[k] * um_i8_weight_at(W, n, k);
      const float v = (float)(dot - z * W->colsum[n]) * (sa * W->scale[n]) +
                      (j->bias ? j->bias[n] : 0.0f);
      row[n] = j->epi == EPI_BIAS ? v
               : j->epi == EPI_ACC ? row[n] + v
               : j->epi == EPI_QUICK_GELU ? v / (1.0f + expf(-1.702f * v))
                                          : 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
  }
  free(normed);
  free(q);
}

/* ---- entry points ---- */

static void linear_ln(const float *A, int M, int K, const float *ln_w, const float *ln_b,
                      float eps, const um_i8_weight *W, const float *bias, int N, float *C,
                      int epi) {
  if (!W || W->N != N || W->K != K) {
    fprintf(stderr, "gemm_i8: weight is [%d, %d], call wants [%d, %d]\n", W ? W->N : -1,
            W ? W->K : -1, N, K);
    abort();
  }
  if (M <= 0) return;
  if (ln_w && K > UM_I8_LN_MAX_K) {
    fprintf(stderr, "gemm_i8: LayerNorm over %d > %d columns\n", K, UM_I8_LN_MAX_K);
    abort();
  }
  job j = {.A = A, .M = M, .K = K, .N = N, .W = W, .bias = bias, .C = C, .ln_w = ln_w,
           .ln_b = ln_b, .eps = eps, .epi = epi, .isa = um_i8_available()};
  if (j.isa == 0) {
    portable(&j);
    return;
  }
  j.tiles = (M + MR - 1) / MR;
  j.panels = (N + NR - 1) / NR;
  int nt = um_threads();
  const double ops = 2.0 * M * N * (double)W->Kp;
  if (ops < nt * OPS_PER_THREAD) nt = (int)(ops / OPS_PER_THREAD) + 1;
  int tpb = A_BLOCK_BYTES / (MR * W->Kp);
  if (tpb < 1) tpb = 1;
  j.nrb = (j.tiles + tpb - 1) / tpb;
  j.npg = (8 * nt + j.nrb - 1) / j.nrb;
  if (j.npg > j.panels) j.npg = j.panels;
  /* the caller's scratch: block states, row scales and zero points, then A */
  const size_t rows = (size_t)j.tiles * MR;
  const size_t head = ((size_t)j.nrb * sizeof(atomic_int) + rows * 8 + 63) & ~(size_t)63;
  char *buf = um_gemm_scratch(head + rows * (size_t)W->Kp);
  j.rb_state = (atomic_int *)(void *)buf;
  for (int rb = 0; rb < j.nrb; rb++) atomic_init(&j.rb_state[rb], RB_TODO);
  j.sa = (float *)(void *)(buf + (size_t)j.nrb * sizeof(atomic_int));
  j.za = (int32_t *)(void *)(j.sa + rows);
  j.pa = (uint32_t *)(void *)(buf + head);
  um_parallel_for(j.nrb * j.npg, nt, run_chunk, &j);
}

static void linear(const float *A, int M, int K, const um_i8_weight *W, const float *bias, int N,
                   float *C, int epi) {
  linear_ln(A, M, K, NULL, NULL, 0.0f, W, bias, N, C, epi);
}

void um_linear_i8_ln(const float *X, int M, int K, const float *ln_w, const float *ln_b,
                     float eps, const um_i8_weight *W, const float *bias, int N, float *C,
                     int epi) {
  const int e = epi == UM_I8_EPI_QUICK_GELU ? EPI_QUICK_GELU
                : epi == UM_I8_EPI_GELU     ? EPI_GELU
                                            : EPI_BIAS;
  linear_ln(X, M, K, ln_w, ln_b, eps, W, bias, N, C, e);
}

void um_linear_i8(const float *A, int M, int K, const um_i8_weight *W, const float *bias, int N,
                  float *C) {
  linear(A, M, K, W, bias, N, C, EPI_BIAS);
}

void um_linear_i8_acc(const float *A, int M, int K, const um_i8_weight *W, const float *bias,
                      int N, float *C) {
  linear(A, M, K, W, bias, N, C, EPI_ACC);
}

void um_linear_i8_quick_gelu(const float *A, int M, int K, const um_i8_weight *W,
                             const float *bias, int N, float *C) {
  linear(A, M, K, W, bias, N, C, EPI_QUICK_GELU);
}

void um_linear_i8_gelu(const float *A, int M, int K, const um_i8_weight *W, const float *bias,
                       int N, float *C) {
  linear(A, M, K, W, bias, N, C, EPI_GELU);
}
