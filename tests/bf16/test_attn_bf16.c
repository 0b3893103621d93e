/* model/attn_bf16.c: multi-head attention with BF16 products (um_mha with
 * bf16 = 1) against a double-precision reference.
 *
 *  1. vs the reference on BF16-rounded Q, K, V (the kernel's inputs):
 *     within 2^-7 relative per probability (P is rounded to BF16 before
 *     P V, the scores' FP32 sums are off by far less) plus 1e-5 slack:
 *     |out - ref| <= 2^-7 * sum_j p_j |v_j| + 1e-5 * max |v|;
 *  2. vs the reference on the unrounded inputs, the rounding of Q and K
 *     moving each score by at most 2^-7 * scale * sum_d |q_d k_d|, within
 *     the bound that follows for the softmax;
 *  3. bitwise the same with 1 and 3 threads, and with bf16 = 0 it is the
 *     FP32 kernel (different results: checks the switch does something).
 * Shapes: ViT-B/16 (197 tokens, 12 heads of 64; 1 query row, as in the last
 * block), a 16-token prompt (hd 32 too), odd key counts (17, 33).
 * Exits 77 without AVX512-BF16. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_bf16.h"
#include "internal.h"

static int failures;
static uint64_t rng = 0x6a09e667f3bcc908ull;
static float frand(void) { /* uniform in [-1, 1) */
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static void check(const char *what, int ok) {
  printf("  %-66s %s\n", what, ok ? "ok" : "FAIL");
  if (!ok) failures++;
}

static float *alloc_f(size_t n) {
  float *p = aligned_alloc(64, (n + 16) * sizeof(float));
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  memset(p, 0, (n + 16) * sizeof(float));
  return p;
}

/* out[i, h*hd + c] in double for one head; round: inputs through BF16 */
static void reference(const float *q, const float *k, const float *v, int ld, int lq, int lk,
                      int hd, int h, int round, double *out, double *pv_abs) {
  const double scale = 1.0 / sqrt((double)hd);
  double *s = malloc((size_t)lk * sizeof(double));
  for (int i = 0; i < lq; i++) {
    double mx = -INFINITY;
    for (int j = 0; j < lk; j++) {
      double acc = 0;
      for (int d = 0; d < hd; d++) {
        float a = q[(size_t)i * ld + h * hd + d], b = k[(size_t)j * ld + h * hd + d];
        if (round) a = um_bf16_round(a), b = um_bf16_round(b);
        acc += (double)a * b;
      }
      s[j] = acc * scale;
      mx = s[j] > mx ? s[j] : mx;
    }
    double sum = 0;
    for (int j = 0; j < lk; j++) sum += (s[j] = exp(s[j] - mx));
    for (int c = 0; c < hd; c++) {
      double o = 0, oa = 0;
      for (int j = 0; j < lk; j++) {
        float b = v[(size_t)j * ld + h * hd + c];
        if (round) b = um_bf16_round(b);
        o += s[j] / sum * b;
        oa += s[j] / sum * fabs(b);
      }
      out[(size_t)i * hd + c] = o;
      pv_abs[(size_t)i * hd + c] = oa;
    }
  }
  free(s);
}

static void run_case(int lq, int lk, int H, int hd, float qk_scale) {
  const int D = H * hd, ld = 3 * D;
  float *qkv = alloc_f((size_t)lk * ld), *out = alloc_f((size_t)lq * D);
  float *out2 = alloc_f((size_t)lq * D);
  for (size_t i = 0; i < (size_t)lk * ld; i++) qkv[i] = frand() * qk_scale;
  for (int j = 0; j < lk; j++) /* values larger than queries and keys */
    for (int c = 0; c < D; c++) qkv[(size_t)j * ld + 2 * D + c] *= 4.0f / qk_scale;
  const int slots = 3;
  const size_t per = um_mha_scratch_floats(lk, hd);
  float *scratch = alloc_f(per * slots);
  um_attn_seq seq = {qkv, qkv + D, qkv + 2 * D, out, lq, lk};
  printf("lq=%d lk=%d heads=%d hd=%d, |q|,|k| <= %.1f\n", lq, lk, H, hd, qk_scale);
  um_mha(&seq, 1, ld, ld, D, H, hd, scratch, per, slots, 1);

  double *ref = malloc((size_t)lq * hd * sizeof(double)), *mag = malloc((size_t)lq * hd * sizeof(double));
  double *ref0 = malloc((size_t)lq * hd * sizeof(double));
  int ok_r = 1, ok_u = 1;
  double worst_r = 0, worst_u = 0;
  for (int h = 0; h < H; h++) {
    reference(qkv, qkv + D, qkv + 2 * D, ld, lq, lk, hd, h, 1, ref, mag);
    reference(qkv, qkv + D, qkv + 2 * D, ld, lq, lk, hd, h, 0, ref0, mag);
    /* score error from rounding Q and K: 2^-7 relative on each product,
     * scores differ by at most that much, so p by a factor e^(2 ds) */
    double ds = 0;
    for (int i = 0; i < lq; i++)
      for (int j = 0; j < lk; j++) {
        double a = 0;
        for (int d = 0; d < hd; d++)
          a += fabs((double)qkv[(size_t)i * ld + h * hd + d] * qkv[(size_t)j * ld + D + h * hd + d]);
        a *= pow(2, -7) / sqrt((double)hd);
        ds = a > ds ? a : ds;
      }
    for (int i = 0; i < lq; i++)
      for (int c = 0; c < hd; c++) {
        const double o = out[(size_t)i * D + h * hd + c], m = mag[(size_t)i * hd + c];
        const double tol_r = pow(2, -7) * m + 1e-5 * 4.0;
        const double tol_u = (exp(2 * ds) - 1 + pow(2, -7)) * 1.01 * m + 1e-5 * 4.0;
        const double er = fabs(o - ref[(size_t)i * hd + c]), eu = fabs(o - ref0[(size_t)i * hd + c]);
        if (!(er <= tol_r)) ok_r = 0;
        if (!(eu <= tol_u)) ok_u = 0;
        worst_r = er / tol_r > worst_r ? er / tol_r : worst_r;
        worst_u = eu / tol_u > worst_u ? eu / tol_u : worst_u;
      }
  }
  char line[200];
  snprintf(line, sizeof line, "vs double on BF16-rounded inputs: worst %.2f of the bound", worst_r);
  check(line, ok_r);
  snprintf(line, sizeof line, "vs double on the inputs: worst %.2f of the bound", worst_u);
  check(line, ok_u);

  const int threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
  seq.out = out2;
  um_mha(&seq, 1, ld, ld, D, H, hd, scratch, per, slots, 1);
  int same = !memcmp(out, out2, (size_t)lq * D * sizeof(float));
  openblas_set_num_threads(3);
  um_mha(&seq, 1, ld, ld, D, H, hd, scratch, per, slots, 1);
  same = same && !memcmp(out, out2, (size_t)lq * D * sizeof(float));
  openblas_set_num_threads(threads);
  check("bitwise the same with 1 and 3 threads", same);
  um_mha(&seq, 1, ld, ld, D, H, hd, scratch, per, slots, 0);
  check("bf16 = 0 runs FP32 (results differ)", memcmp(out, out2, (size_t)lq * D * sizeof(float)) != 0);
  free(qkv), free(out), free(out2), free(scratch), free(ref), free(mag), free(ref0);
}

int main(void) {
  if (!um_bf16_available()) {
    printf("SKIP: no AVX512-BF16 on this CPU\n");
    return 77;
  }
  run_case(197, 197, 12, 64, 1.0f);
  run_case(1, 197, 12, 64, 1.0f);
  run_case(16, 16, 12, 64, 2.0f);
  run_case(17, 17, 4, 32, 1.0f);
  run_case(9, 33, 2, 64, 0.5f);
  printf("%s\n", failures ? "FAILED" : "all ok");
  return failures ? 1 : 0;
}
