/* BF16 GEMM for the linear layers: C[M,N] = A[M,K] · W[N,K]^T, see
 * gemm_bf16.h.
 *
 * Kernel (AVX512-BF16). vdpbf16ps adds to each of 16 FP32 lanes the dot
 * product of a pair of BF16 values from each source, so K is taken in pairs:
 * a C tile of MR rows × NR = 16·NV columns lives in MR·NV zmm accumulators;
 * per K pair the kernel loads NV vectors of W (16 columns × 2 k each) and,
 * for each of the MR rows, broadcasts that row's pair of A.
 *
 * Layouts (32-bit words, each a BF16 pair: k even in the low half):
 *   W, packed once:  [Np/NR panels][Kp/2 pairs][NR columns]
 *   A, per call:     per tile of mr rows: [Kp/32 blocks][mr rows][16 pairs]
 * so that the kernel walks one pointer through each. Kp is K rounded up to
 * 32 and Np is N rounded up to NR; the padding is zero.
 *
 * Blocking. No K blocking: a whole row of C is summed in registers in one
 * pass over K (so the fused epilogues see final sums, and the summation
 * order never depends on blocking). Rows are taken in blocks of about
 * A_BLOCK_BYTES of packed BF16 (stays in L2); for each W panel of a chunk's
 * panel group (NR × Kp BF16, <= 192 KB, in L2 while the block's tiles use
 * it) the kernel runs over the block's tiles.
 *
 * Threads. The work is cut into chunks: row blocks (the A block above) ×
 * groups of W panels, some 8 per thread, run as the tasks of one
 * um_parallel_for region (the pool of threads.c, shared with every other
 * parallel loop of model/), which hands them out in order, so a thread
 * slowed by other load on the machine just takes fewer. A is packed once
 * per call into the caller's scratch, each row block by the first thread
 * that needs it. Each C element is summed by the same code in the same
 * order wherever it falls, so results do not depend on the threads. */
#include "gemm_bf16.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "act512.h"
#include "internal.h"

/* UM_BF16_PORTABLE_ONLY: build as for other CPUs (to check that build) */
#if defined(__x86_64__) && !defined(UM_BF16_PORTABLE_ONLY)
#include <immintrin.h>
#define BF_X86 1
#define BF_TARGET __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl")))
#define BF_INLINE __attribute__((always_inline)) inline
#else
#define BF_X86 0
#endif

#define NV 2             /* zmm vectors of C per tile row */
#define NR (16 * NV)     /* columns per W panel and tile */
#define MR 14            /* rows per tile */
#define KBLK 32          /* K padding: 16 pairs per A block */
#define A_BLOCK_BYTES (320 * 1024)
#define FLOPS_PER_THREAD 8e6 /* below this much work per thread, use fewer */

enum { EPI_BIAS, EPI_ACC, EPI_QUICK_GELU, EPI_GELU };

struct um_bf16_weight {
  int N, K, Np, Kp;
  uint32_t *data; /* [Np/NR][Kp/2][NR] */
};

/* ---- rounding, packing the weights ---- */

static uint16_t f32_to_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
  if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u); /* subnormal: ±0 */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float um_bf16_round(float x) {
  uint32_t u = (uint32_t)f32_to_bf16(x) << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

#if BF_X86
/* vcvtneps2bf16 rounds as f32_to_bf16 does (nearest even, subnormals to
 * ±0, NaN stays NaN). */
BF_TARGET static void split_512(const float *a, size_t n, float *hi, float *lo) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(a + i);
    const __m512 h = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v)), 16));
    _mm512_storeu_ps(hi + i, h);
    _mm512_storeu_ps(lo + i, _mm512_sub_ps(v, h));
  }
  for (; i < n; i++) {
    hi[i] = um_bf16_round(a[i]);
    lo[i] = a[i] - hi[i];
  }
}
#endif

void um_bf16_split(const float *a, size_t n, float *hi, float *lo) {
#if BF_X86
  if (um_bf16_available()) {
    split_512(a, n, hi, lo);
    return;
  }
#endif
  for (size_t i = 0; i < n; i++) {
    hi[i] = um_bf16_round(a[i]);
    lo[i] = a[i] - hi[i];
  }
}

um_bf16_weight *um_bf16_pack(const float *W, int N, int K) {
  if (!W || N <= 0 || K <= 0 || N > (1 << 28) || K > (1 << 28)) return NULL;
  um_bf16_weight *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->N = N;
  w->K = K;
  w->Np = round_up(N, NR);
  w->Kp = round_up(K, KBLK);
  const size_t words = (size_t)w->Np * (size_t)(w->Kp / 2);
  w->data = aligned_alloc(64, words * sizeof(uint32_t)); /* a multiple of 64 bytes */
  if (!w->data) {
    free(w);
    return NULL;
  }
  const int K2 = w->Kp / 2;
  for (int p = 0; p < w->Np / NR; p++) {
    uint32_t *dst = w->data + (size_t)p * K2 * NR;
    for (int k2 = 0; k2 < K2; k2++)
      for (int c = 0; c < NR; c++) {
        const int n = p * NR + c, k = 2 * k2;
        uint32_t lo = 0, hi = 0;
        if (n < N) {
          const float *row = W + (size_t)n * K;
          if (k < K) lo = f32_to_bf16(row[k]);
          if (k + 1 < K) hi = f32_to_bf16(row[k + 1]);
        }
        dst[(size_t)k2 * NR + c] = lo | hi << 16;
      }
  }
  return w;
}

void um_bf16_free(um_bf16_weight *w) {
  if (!w) return;
  free(w->data);
  free(w);
}

size_t um_bf16_bytes(const um_bf16_weight *w) {
  return w ? (size_t)w->Np * (size_t)w->Kp * 2 : 0;
}
int um_bf16_rows(const um_bf16_weight *w) { return w ? w->N : 0; }
int um_bf16_cols(const um_bf16_weight *w) { return w ? w->K : 0; }

/* ---- CPU features ---- */

static atomic_int avail_cache = -1;

int um_bf16_available(void) {
  int v = atomic_load_explicit(&avail_cache, memory_order_relaxed);
  if (v >= 0) return v;
  v = 0;
#if BF_X86
  const char *env = getenv("UNIMED_SIMD");
  __builtin_cpu_init();
  if (!(env && env[0] == '0') && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bf16"))
    v = 1;
#endif
  atomic_store_explicit(&avail_cache, v, memory_order_relaxed);
  return v;
}

/* ---- per-thread scratch (the packed A block), kept between calls ---- */

typedef struct {
  void *p;
  size_t n;
} scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *s) {
  free(((scratch *)s)->p);
  free(s);
}

static void scratch_init(void) {
  if (pthread_key_create(&scratch_key, scratch_free) != 0) {
    fprintf(stderr, "gemm_bf16: pthread_key_create failed\n");
    abort();
  }
}

/* The calling thread's buffer of at least n bytes, 64-byte aligned. */
static void *scratch_get(size_t n) {
  pthread_once(&scratch_once, scratch_init);
  scratch *s = pthread_getspecific(scratch_key);
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s || pthread_setspecific(scratch_key, s) != 0) goto oom;
  }
  if (s->n < n) {
    free(s->p);
    s->n = (n + 63) & ~(size_t)63;
    s->p = aligned_alloc(64, s->n);
    if (!s->p) goto oom;
  }
  return s->p;
oom:
  fprintf(stderr, "gemm_bf16: out of memory (%zu bytes of scratch)\n", n);
  abort();
}

void *um_gemm_scratch(size_t n) { return scratch_get(n); }

/* ---- the job: one GEMM call cut into chunks ---- */

enum { RB_TODO, RB_PACKING, RB_READY };

typedef struct {
  const float *A;
  int M, K, N;
  const um_bf16_weight *W;
  const float *bias;
  float *C;
  int epi;
  int tiles;      /* ceil(M / MR) row tiles of MR rows */
  int panels;     /* ceil(N / NR) W panels */
  int nrb, npg;   /* row blocks × panel groups = chunks */
  uint32_t *pa;   /* all of A packed: tile t at pa + t*MR*Kp/2 */
  atomic_int *rb_state; /* per row block: RB_TODO / RB_PACKING / RB_READY */
} job;

#if BF_X86

/* ---- micro-kernel ---- */

typedef struct {
  const uint32_t *a; /* packed A tile: [nkb][mr][16] */
  const uint32_t *b; /* W panel from pair 0: [Kp/2][NR] */
  int nkb;           /* Kp / 32 */
  float *c;          /* C tile's top-left element */
  size_t ldc;
  int ncols;         /* valid columns in the panel, 1..NR */
  const float *bias; /* at the panel's first column, or NULL */
  int epi;
} kargs;

BF_TARGET static BF_INLINE void kernel_body(const int mr, const kargs *k) {
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) acc[i][j] = _mm512_setzero_ps();
  const uint32_t *a = k->a, *b = k->b;
  for (int kb = 0; kb < k->nkb; kb++) {
#pragma GCC unroll 4
    for (int kk = 0; kk < 16; kk++) {
      __m512bh bv[NV];
#pragma GCC unroll 4
      for (int j = 0; j < NV; j++)
        bv[j] = (__m512bh)_mm512_load_si512((const void *)(b + kk * NR + 16 * j));
#pragma GCC unroll 16
      for (int i = 0; i < mr; i++) {
        const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[i * 16 + kk]);
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bv[j]);
      }
    }
    a += mr * 16;
    b += 16 * NR;
  }

  __mmask16 mask[NV];
  __m512 bias[NV];
#pragma GCC unroll 4
  for (int j = 0; j < NV; j++) {
    const int c = k->ncols - 16 * j;
    mask[j] = c >= 16 ? (__mmask16)0xffff : c <= 0 ? (__mmask16)0 : (__mmask16)((1u << c) - 1);
    bias[j] = k->bias ? _mm512_maskz_loadu_ps(mask[j], k->bias + 16 * j) : _mm512_setzero_ps();
  }
#pragma GCC unroll 16
  for (int i = 0; i < mr; i++) {
    float *row = k->c + (size_t)i * k->ldc;
#pragma GCC unroll 4
    for (int j = 0; j < NV; j++) {
      if (!mask[j]) continue;
      __m512 v = _mm512_add_ps(acc[i][j], bias[j]);
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
  BF_TARGET static void kernel_##R(const kargs *k) { kernel_body(R, k); }
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

/* Packs rows [0, rows) of A (row stride K) as BF16 tiles of MR rows (the
 * last may be shorter): tile t at dst + t*MR*Kp/2, laid out [Kp/32][mr][16]. */
BF_TARGET static void pack_a(const float *A, int rows, int K, int Kp, uint32_t *dst) {
  const int nkb = Kp / KBLK, full = K / KBLK, rem = K % KBLK;
  const __mmask16 m0 = (__mmask16)(rem >= 16 ? 0xffff : (1u << rem) - 1);
  const __mmask16 m1 = (__mmask16)(rem > 16 ? (1u << (rem - 16)) - 1 : 0);
  for (int t0 = 0; t0 < rows; t0 += MR) {
    const int mr = rows - t0 < MR ? rows - t0 : MR;
    uint32_t *tile = dst + (size_t)t0 * (Kp / 2);
    for (int i = 0; i < mr; i++) {
      const float *src = A + (size_t)(t0 + i) * K;
      uint32_t *d = tile + (size_t)i * 16;
      int kb = 0;
      for (; kb < full; kb++) {
        const __m512 lo = _mm512_loadu_ps(src + kb * KBLK);
        const __m512 hi = _mm512_loadu_ps(src + kb * KBLK + 16);
        _mm512_store_si512((void *)(d + (size_t)kb * mr * 16), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
      }
      if (kb < nkb) { /* the K tail, zero-padded */
        const __m512 lo = _mm512_maskz_loadu_ps(m0, src + kb * KBLK);
        const __m512 hi = _mm512_maskz_loadu_ps(m1, src + kb * KBLK + 16);
        _mm512_store_si512((void *)(d + (size_t)kb * mr * 16), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
      }
    }
  }
}

/* Row block rb is tiles [rb_lo(rb), rb_lo(rb + 1)); rows [MR*lo, min(M, MR*hi)). */
static int rb_lo(const job *j, int rb) { return (int)((long)j->tiles * rb / j->nrb); }
static int pg_lo(const job *j, int pg) { return (int)((long)j->panels * pg / j->npg); }

static void pack_block(job *j, int rb) {
  const int t0 = rb_lo(j, rb), t1 = rb_lo(j, rb + 1);
  const int r0 = t0 * MR, r1 = t1 * MR < j->M ? t1 * MR : j->M;
  pack_a(j->A + (size_t)r0 * j->K, r1 - r0, j->K, j->W->Kp, j->pa + (size_t)t0 * MR * (j->W->Kp / 2));
  atomic_store_explicit(&j->rb_state[rb], RB_READY, memory_order_release);
}

/* Makes row block rb packed: packs it, or waits for the thread packing it
 * while packing other blocks nobody has started. */
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
  /* Packing a block takes tens of µs: spin that long, then yield, as the
   * packer has probably lost its core to other load on the machine. */
  for (int spins = 0; atomic_load_explicit(&j->rb_state[rb], memory_order_acquire) != RB_READY;
       spins++) {
    if (spins < 4096)
      _mm_pause();
    else
      sched_yield();
  }
}

/* Task c of the region: row block c / npg (packed on first use) × panel
 * group c % npg. */
static void run_chunk(void *ctx, int c, int thread) {
  (void)thread;
  job *j = ctx;
  const int rb = c / j->npg, pg = c % j->npg;
  need_block(j, rb);
  const um_bf16_weight *W = j->W;
  const int K2 = W->Kp / 2;
  const int t0 = rb_lo(j, rb), t1 = rb_lo(j, rb + 1), p0 = pg_lo(j, pg), p1 = pg_lo(j, pg + 1);
  const int r1 = t1 * MR < j->M ? t1 * MR : j->M;
  for (int p = p0; p < p1; p++) {
    kargs ka = {.b = W->data + (size_t)p * K2 * NR,
                .nkb = W->Kp / KBLK,
                .ldc = (size_t)j->N,
                .ncols = j->N - p * NR < NR ? j->N - p * NR : NR,
                .bias = j->bias ? j->bias + p * NR : NULL,
                .epi = j->epi};
    for (int t = t0; t < t1; t++) {
      const int r = t * MR, mr = r1 - r < MR ? r1 - r : MR;
      ka.a = j->pa + (size_t)r * K2;
      ka.c = j->C + (size_t)r * j->N + (size_t)p * NR;
      kernels[mr](&ka);
    }
  }
}

#endif /* BF_X86 */

/* ---- portable fallback: widen W to FP32 in chunks, cblas_sgemm ---- */

#define FB_COLS 256

static void fallback(const float *A, int M, int K, const um_bf16_weight *W, const float *bias,
                     int N, float *C, int epi) {
  const int K2 = W->Kp / 2;
  float *wf = scratch_get((size_t)FB_COLS * K * sizeof(float));
  for (int n0 = 0; n0 < N; n0 += FB_COLS) {
    const int nc = N - n0 < FB_COLS ? N - n0 : FB_COLS;
    for (int c = 0; c < nc; c++) {
      const int n = n0 + c;
      const uint32_t *src = W->data + (size_t)(n / NR) * K2 * NR + n % NR;
      float *dst = wf + (size_t)c * K;
      for (int k = 0; k < K; k++) {
        const uint32_t u = (k & 1 ? src[(size_t)(k / 2) * NR] >> 16 : src[(size_t)(k / 2) * NR] & 0xffffu)
                           << 16;
        memcpy(dst + k, &u, sizeof u);
      }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nc, K, 1.0f, A, K, wf, K,
                epi == EPI_ACC ? 1.0f : 0.0f, C + n0, N);
    if (!bias && (epi == EPI_BIAS || epi == EPI_ACC)) continue;
    for (int r = 0; r < M; r++) {
      float *row = C + (size_t)r * N + n0;
      for (int c = 0; c < nc; c++) {
        float v = row[c] + (bias ? bias[n0 + c] : 0.0f);
        if (epi == EPI_QUICK_GELU) v = v / (1.0f + expf(-1.702f * v));
        else if (epi == EPI_GELU) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        row[c] = v;
      }
    }
  }
}

/* ---- entry points ---- */

static void linear(const float *A, int M, int K, const um_bf16_weight *W, const float *bias, int N,
                   float *C, int epi) {
  if (!W || W->N != N || W->K != K) {
    fprintf(stderr, "gemm_bf16: weight is [%d, %d], call wants [%d, %d]\n", W ? W->N : -1,
            W ? W->K : -1, N, K);
    abort();
  }
  if (M <= 0) return;
  if (!um_bf16_available()) {
    fallback(A, M, K, W, bias, N, C, epi);
    return;
  }
#if BF_X86
  job j = {.A = A, .M = M, .K = K, .N = N, .W = W, .bias = bias, .C = C, .epi = epi};
  j.tiles = (M + MR - 1) / MR;
  j.panels = (N + NR - 1) / NR;
  int nt = um_threads();
  const double flops = 2.0 * M * N * (double)W->Kp;
  if (flops < nt * FLOPS_PER_THREAD) nt = (int)(flops / FLOPS_PER_THREAD) + 1;
  /* row blocks of about A_BLOCK_BYTES packed (in L2 while a chunk runs),
   * panel groups so that there are some 8 chunks per thread */
  int tpb = A_BLOCK_BYTES / (MR * W->Kp * 2);
  if (tpb < 1) tpb = 1;
  j.nrb = (j.tiles + tpb - 1) / tpb;
  j.npg = (8 * nt + j.nrb - 1) / j.nrb;
  if (j.npg > j.panels) j.npg = j.panels;
  /* the caller's scratch: block states, then the packed A */
  const size_t head = ((size_t)j.nrb * sizeof(atomic_int) + 63) & ~(size_t)63;
  char *buf = scratch_get(head + (size_t)j.tiles * MR * W->Kp * 2);
  j.rb_state = (atomic_int *)(void *)buf;
  for (int rb = 0; rb < j.nrb; rb++) atomic_init(&j.rb_state[rb], RB_TODO);
  j.pa = (uint32_t *)(void *)(buf + head);
  um_parallel_for(j.nrb * j.npg, nt, run_chunk, &j);
#endif
}

void um_linear_bf16(const float *A, int M, int K, const um_bf16_weight *W, const float *bias,
                    int N, float *C) {
  linear(A, M, K, W, bias, N, C, EPI_BIAS);
}

void um_linear_bf16_acc(const float *A, int M, int K, const um_bf16_weight *W,
                        const float *bias, int N, float *C) {
  linear(A, M, K, W, bias, N, C, EPI_ACC);
}

void um_linear_bf16_quick_gelu(const float *A, int M, int K, const um_bf16_weight *W,
                               const float *bias, int N, float *C) {
  linear(A, M, K, W, bias, N, C, EPI_QUICK_GELU);
}

void um_linear_bf16_gelu(const float *A, int M, int K, const um_bf16_weight *W,
                         const float *bias, int N, float *C) {
  linear(A, M, K, W, bias, N, C, EPI_GELU);
}
