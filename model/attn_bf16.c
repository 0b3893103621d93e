/* One attention head with BF16 products (AVX512-BF16 vdpbf16ps), for the
 * image tower in BF16 and INT8 mode (um_mha with bf16 set, ops.c).
 *
 * The two products of attention, Q K^T and P V, are about 4 % of the image
 * tower's multiply-adds but ran at the FP32 FMA rate; vdpbf16ps does twice
 * the work per instruction. Q, K, V and the probabilities P are rounded to
 * BF16 (round to nearest even), products are exact and summed in FP32; the
 * scaling, the softmax (max, exp, sum) and the 1/sum stay FP32. That is the
 * rounding the BF16 linear layers already apply to their inputs.
 *
 * vdpbf16ps adds a pair of products per FP32 lane, so both products are
 * taken in pairs along their summed index:
 *   K, per head:  kp[d/2][key]     = (k[key][d], k[key][d+1])  (32-bit words)
 *   V, per head:  vp[key/2][c]     = (v[key][c], v[key+1][c])
 *   Q, 8 rows:    qp[row][d/2]     = (q[row][d], q[row][d+1])
 *   P, 8 rows:    pp[row][key/2]   = (p[row][key], p[row][key+1])
 * Blocks of 8 query rows: scores by an 8 × 32-key register kernel (8 × 16
 * for the last 16 keys), softmax in FP32, out = P V by an 8 × 32-column
 * kernel per 32 columns, as attn_head_avx512 in ops.c does in FP32. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "act512.h"
#include "internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define AB_TARGET __attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl")))

enum { R = 8 };        /* query rows per block */
enum { PF_ROWS = 8 };  /* K and V rows fetched ahead while packing */

static size_t round16z(size_t n) { return (n + 15) & ~(size_t)15; }

size_t um_attn_bf16_scratch_floats(int max_lk, int hd) {
  const size_t lkp = round16z((size_t)max_lk), h = (size_t)hd;
  return round16z(h / 2 * lkp) + round16z(lkp / 2 * h) + round16z(R * lkp) +
         round16z(R * lkp / 2) + round16z(R * h / 2);
}

/* 16 floats → 16 BF16 (as the low halves of 16 words). */
AB_TARGET static inline __m512i bf16_words(__m512 v) {
  return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v));
}

/* 16 BF16 pairs: a vector load, and one pair broadcast */
AB_TARGET static inline __m512bh load_pairs(const uint32_t *p) {
  return (__m512bh)_mm512_loadu_si512((const void *)p);
}
AB_TARGET static inline __m512bh bcast_pair(uint32_t w) {
  return (__m512bh)_mm512_set1_epi32((int)w);
}

/* out[r, :] = inv[r] * sum_j p[r, j] v[j, :] for the block's nr rows: an
 * 8 x 32-column register kernel per 32 columns. Not inlined: on its own the
 * compiler keeps the 16 accumulators and both V vectors in registers. */
AB_TARGET __attribute__((noinline)) static void pv_block(const uint32_t *vp, int kpairs, int hd,
                                                        const uint32_t *pp, int pstride,
                                                        const float *inv, int nr, float *out,
                                                        int ldo) {
  for (int c = 0; c < hd; c += 32) {
    __m512 a[R][2];
    for (int r = 0; r < R; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
    const uint32_t *vv = vp + c;
    for (int jp = 0; jp < kpairs; jp++, vv += hd) {
      const __m512bh v0 = load_pairs(vv), v1 = load_pairs(vv + 16);
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        const __m512bh b = bcast_pair(pp[(size_t)r * pstride + jp]);
        a[r][0] = _mm512_dpbf16_ps(a[r][0], b, v0);
        a[r][1] = _mm512_dpbf16_ps(a[r][1], b, v1);
      }
    }
    for (int r = 0; r < nr; r++) {
      float *o = out + (size_t)r * ldo + c;
      const __m512 iv = _mm512_set1_ps(inv[r]);
      _mm512_storeu_ps(o, _mm512_mul_ps(a[r][0], iv));
      _mm512_storeu_ps(o + 16, _mm512_mul_ps(a[r][1], iv));
    }
  }
}

AB_TARGET void um_attn_head_bf16(const float *q, int ldq, const float *k, const float *v,
                                 int ldkv, int lq, int lk, int hd, float scale, float *out,
                                 int ldo, float *scratch) {
  const int lkp = (int)round16z((size_t)lk), hp = hd / 2, kpairs = (lk + 1) / 2;
  uint32_t *kp = (uint32_t *)(void *)scratch;
  uint32_t *vp = kp + round16z((size_t)hp * lkp);
  float *s = (float *)(void *)(vp + round16z((size_t)lkp / 2 * hd));
  uint32_t *pp = (uint32_t *)(void *)(s + round16z((size_t)R * lkp));
  uint32_t *qp = pp + round16z((size_t)R * lkp / 2);
  const int pstride = lkp / 2; /* words per row of pp */

  /* K: each key row to BF16 pairs, then transposed into kp (keys >= lk zero). */
  for (int j = 0; j < lkp; j++) {
    if (j >= lk) {
      for (int d = 0; d < hp; d++) kp[(size_t)d * lkp + j] = 0;
      continue;
    }
    const float *kj = k + (size_t)j * ldkv;
    if (j + PF_ROWS < lk) /* rows are a q|k|v row apart: fetch ahead */
      for (int d = 0; d < hd; d += 16)
        _mm_prefetch((const char *)(kj + PF_ROWS * (size_t)ldkv + d), _MM_HINT_T0);
    for (int d0 = 0; d0 < hd; d0 += 32) {
      const __m512i lo = bf16_words(_mm512_loadu_ps(kj + d0));
      const __m512i hi = bf16_words(_mm512_loadu_ps(kj + d0 + 16));
      /* words (k[d], k[d+1]) for the 16 pairs of these 32 values */
      const __m512i idx_e =
          _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
      const __m512i idx_o = _mm512_add_epi32(idx_e, _mm512_set1_epi32(1));
      const __m512i ev = _mm512_permutex2var_epi32(lo, idx_e, hi);
      const __m512i od = _mm512_permutex2var_epi32(lo, idx_o, hi);
      uint32_t w[16];
      _mm512_storeu_si512((void *)w, _mm512_or_si512(ev, _mm512_slli_epi32(od, 16)));
      for (int i = 0; i < 16; i++) kp[(size_t)(d0 / 2 + i) * lkp + j] = w[i];
    }
  }
  /* V: pairs of key rows (the odd one out with a zero row). */
  for (int jp = 0; jp < kpairs; jp++) {
    const float *v0 = v + (size_t)(2 * jp) * ldkv;
    const float *v1 = 2 * jp + 1 < lk ? v0 + ldkv : NULL;
    if (2 * jp + 1 + PF_ROWS < lk)
      for (int c = 0; c < hd; c += 16) {
        _mm_prefetch((const char *)(v0 + PF_ROWS * (size_t)ldkv + c), _MM_HINT_T0);
        _mm_prefetch((const char *)(v1 + PF_ROWS * (size_t)ldkv + c), _MM_HINT_T0);
      }
    for (int c = 0; c < hd; c += 16) {
      const __m512i a = bf16_words(_mm512_loadu_ps(v0 + c));
      const __m512i b = v1 ? bf16_words(_mm512_loadu_ps(v1 + c)) : _mm512_setzero_si512();
      _mm512_storeu_si512((void *)(vp + (size_t)jp * hd + c),
                          _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
    }
  }

  const __m512 sc = _mm512_set1_ps(scale);
  for (int i0 = 0; i0 < lq; i0 += R) {
    const int nr = lq - i0 < R ? lq - i0 : R;
    for (int r = i0 + R; r < i0 + 2 * R && r < lq; r++) /* the next block's queries */
      for (int d = 0; d < hd; d += 16)
        _mm_prefetch((const char *)(q + (size_t)r * ldq + d), _MM_HINT_T0);
    /* Q rows as BF16 pairs; rows past nr repeat the last one (computed, unused). */
    for (int r = 0; r < R; r++) {
      const float *qr = q + (size_t)(i0 + (r < nr ? r : nr - 1)) * ldq;
      for (int d0 = 0; d0 < hd; d0 += 32) {
        const __m512bh pair =
            _mm512_cvtne2ps_pbh(_mm512_loadu_ps(qr + d0 + 16), _mm512_loadu_ps(qr + d0));
        _mm512_storeu_si512((void *)(qp + (size_t)r * hp + d0 / 2), (__m512i)pair);
      }
    }
    int j = 0;
    for (; j + 32 <= lkp; j += 32) {
      __m512 a[R][2];
      for (int r = 0; r < R; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
      const uint32_t *kk = kp + j;
      for (int d = 0; d < hp; d++, kk += lkp) {
        const __m512bh k0 = load_pairs(kk), k1 = load_pairs(kk + 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
          const __m512bh b = bcast_pair(qp[(size_t)r * hp + d]);
          a[r][0] = _mm512_dpbf16_ps(a[r][0], b, k0);
          a[r][1] = _mm512_dpbf16_ps(a[r][1], b, k1);
        }
      }
      for (int r = 0; r < R; r++) {
        _mm512_storeu_ps(s + (size_t)r * lkp + j, _mm512_mul_ps(a[r][0], sc));
        _mm512_storeu_ps(s + (size_t)r * lkp + j + 16, _mm512_mul_ps(a[r][1], sc));
      }
    }
    if (j < lkp) { /* the last 16 keys */
      __m512 a[R];
      for (int r = 0; r < R; r++) a[r] = _mm512_setzero_ps();
      const uint32_t *kk = kp + j;
      for (int d = 0; d < hp; d++, kk += lkp) {
        const __m512bh k0 = load_pairs(kk);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
          a[r] = _mm512_dpbf16_ps(a[r], bcast_pair(qp[(size_t)r * hp + d]), k0);
      }
      for (int r = 0; r < R; r++)
        _mm512_storeu_ps(s + (size_t)r * lkp + j, _mm512_mul_ps(a[r], sc));
    }
    /* Softmax in FP32; P rounded to BF16 pairs (zero past lk), 1/sum kept. */
    float inv[R]; /* as floats: eight zmm live across P V would spill */
    const __mmask16 tail = (__mmask16)((1u << (lk % 16)) - 1);
    for (int r = 0; r < R; r++) {
      uint16_t *prow = (uint16_t *)(void *)(pp + (size_t)r * pstride);
      if (r >= nr) { /* unused rows: zero, so P V stays finite */
        memset(prow, 0, (size_t)pstride * sizeof(uint32_t));
        inv[r] = 0.0f;
        continue;
      }
      const float *row = s + (size_t)r * lkp;
      int jj = 0;
      __m512 m16 = _mm512_set1_ps(-INFINITY);
      for (; jj + 16 <= lk; jj += 16) m16 = _mm512_max_ps(m16, _mm512_loadu_ps(row + jj));
      if (jj < lk) m16 = _mm512_mask_max_ps(m16, tail, m16, _mm512_loadu_ps(row + jj));
      const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(m16));
      __m512 s16 = _mm512_setzero_ps();
      for (jj = 0; jj < lkp; jj += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(row + jj), mv));
        if (jj + 16 > lk) e = _mm512_maskz_mov_ps(tail, e);
        s16 = _mm512_add_ps(s16, e);
        _mm256_storeu_si256((__m256i *)(void *)(prow + jj), (__m256i)_mm512_cvtneps_pbh(e));
      }
      inv[r] = 1.0f / _mm512_reduce_add_ps(s16);
    }
    pv_block(vp, kpairs, hd, pp, pstride, inv, nr, out + (size_t)i0 * ldo, ldo);
  }
}

#else

size_t um_attn_bf16_scratch_floats(int max_lk, int hd) {
  (void)max_lk;
  (void)hd;
  return 0;
}

void um_attn_head_bf16(const float *q, int ldq, const float *k, const float *v, int ldkv, int lq,
                       int lk, int hd, float scale, float *out, int ldo, float *scratch) {
  (void)q, (void)ldq, (void)k, (void)v, (void)ldkv, (void)lq, (void)lk, (void)hd, (void)scale;
  (void)out, (void)ldo, (void)scratch;
}

#endif
