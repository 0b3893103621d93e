/* unimed-train's image augmentation (augment.h): random resized crop,
 * left-right mirror, brightness and contrast jitter, each drawn from a hash
 * of the run's seed, the epoch and the position (the same at every run). */
#include "augment.h"

#include <math.h>
#include <string.h>

#include "dataset.h"

/* Random resized crop of a 3 x S x S tensor (bilinear) keeping an area in
 * [min_area, 1] and an aspect ratio in [3/4, 4/3]; mirrored left-right when
 * `flip`. min_area 1 with flip set is a plain mirror. */
static void crop_and_flip(const float *src, float *dst, int S, double min_area, int flip,
                          uint64_t h) {
  double area = min_area + (1 - min_area) * ut_unit(ut_hash3(h, 1, 0));
  double logr = log(3.0 / 4.0) + (log(4.0 / 3.0) - log(3.0 / 4.0)) * ut_unit(ut_hash3(h, 2, 0));
  double r = exp(logr);
  double cw = S * sqrt(area * r), ch = S * sqrt(area / r);
  if (cw > S) cw = S;
  if (ch > S) ch = S;
  double x0 = (S - cw) * ut_unit(ut_hash3(h, 3, 0)), y0 = (S - ch) * ut_unit(ut_hash3(h, 4, 0));
  for (int c = 0; c < 3; c++) {
    const float *s = src + (size_t)c * S * S;
    float *o = dst + (size_t)c * S * S;
    for (int y = 0; y < S; y++) {
      double sy = y0 + (y + 0.5) * ch / S - 0.5;
      if (sy < 0) sy = 0;
      if (sy > S - 1) sy = S - 1;
      int iy = (int)sy;
      int iy1 = iy + 1 < S ? iy + 1 : iy;
      double fy = sy - iy;
      for (int x = 0; x < S; x++) {
        double sx = x0 + (x + 0.5) * cw / S - 0.5;
        if (sx < 0) sx = 0;
        if (sx > S - 1) sx = S - 1;
        int ix = (int)sx;
        int ix1 = ix + 1 < S ? ix + 1 : ix;
        double fx = sx - ix;
        double v = (1 - fy) * ((1 - fx) * s[iy * S + ix] + fx * s[iy * S + ix1]) +
                   fy * ((1 - fx) * s[iy1 * S + ix] + fx * s[iy1 * S + ix1]);
        o[y * S + (flip ? S - 1 - x : x)] = (float)v;
      }
    }
  }
}

/* Brightness and contrast jitter applied in pixel space (0..1) to a
 * normalised 3 x S x S tensor: p' = c (p - 1/2) + 1/2 + b with
 * c in [1 - amount, 1 + amount] and b in [-amount, amount], the same for all
 * channels so that grey stays grey. */
static void jitter_intensity(float *img, int S, const float mean[3], const float stdv[3],
                             double amount, uint64_t h) {
  double c = 1 + amount * (2 * ut_unit(ut_hash3(h, 5, 0)) - 1);
  double b = amount * (2 * ut_unit(ut_hash3(h, 6, 0)) - 1);
  for (int ch = 0; ch < 3; ch++) {
    /* in normalised units: n' = c n + (c (m - 1/2) + 1/2 + b - m) / s */
    float scale = (float)c, shift = (float)((c * (mean[ch] - 0.5) + 0.5 + b - mean[ch]) / stdv[ch]);
    float *p = img + (size_t)ch * S * S;
    for (int i = 0; i < S * S; i++) p[i] = scale * p[i] + shift;
  }
}

void ut_augment(const float *src, float *dst, int S, const ut_hparams *hp, const float mean[3],
                const float stdv[3], uint64_t h) {
  const uint64_t ha = ut_hash3(h, 9, 9);
  const int flip = hp->flip && (ut_hash3(ha, 7, 0) & 1);
  if (hp->augment || flip)
    crop_and_flip(src, dst, S, hp->augment ? hp->crop_area : 1.0, flip, ha);
  else memcpy(dst, src, (size_t)3 * S * S * sizeof(float));
  if (hp->jitter > 0) jitter_intensity(dst, S, mean, stdv, hp->jitter, ha);
}
