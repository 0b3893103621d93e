/* AVX-512F activation epilogues shared by the GEMM kernels of model/
 * (gemm_bf16.c, gemm_i8.c): exp, QuickGELU and exact-erf GELU on 16 floats.
 * Include only where BF_TARGET-style target attributes enable avx512f; the
 * functions carry their own target attribute. Internal to model/. */
#ifndef UNIMED_ACT512_H
#define UNIMED_ACT512_H

#if defined(__x86_64__)
#include <immintrin.h>

#define ACT512_TARGET __attribute__((target("avx512f")))
#define ACT512_INLINE __attribute__((always_inline)) inline

ACT512_TARGET static ACT512_INLINE __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.0f), x); /* NaN passes through */
  x = _mm512_max_ps(_mm512_set1_ps(-88.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440054e-4f), r);
  /* e^r on |r| <= ln2/2: Taylor to r^6, truncation < 1.3e-7 relative */
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

ACT512_TARGET static ACT512_INLINE __m512 quick_gelu512(__m512 v) {
  const __m512 e = exp512(_mm512_mul_ps(v, _mm512_set1_ps(-1.702f)));
  return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* gelu(v) = v (1 - erfc(z)/2) for v >= 0, v erfc(z)/2 below, z = |v|/sqrt2;
 * erfc(z) = t P(t) e^{-z^2}, t = 1/(1 + p z) (Abramowitz & Stegun 7.1.26,
 * absolute error < 1.5e-7), so the negative side has no cancellation. */
ACT512_TARGET static ACT512_INLINE __m512 gelu512(__m512 v) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 z = _mm512_mul_ps(_mm512_abs_ps(v), _mm512_set1_ps(0.70710678118654752f));
  const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(z, _mm512_set1_ps(0.3275911f), one));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 e = exp512(_mm512_mul_ps(_mm512_mul_ps(z, z), _mm512_set1_ps(-1.0f)));
  const __m512 h = _mm512_mul_ps(_mm512_mul_ps(p, e), _mm512_set1_ps(0.5f)); /* erfc(z)/2 */
  const __mmask16 pos = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ);
  return _mm512_mul_ps(v, _mm512_mask_blend_ps(pos, h, _mm512_sub_ps(one, h)));
}

#endif /* __x86_64__ */

#endif
