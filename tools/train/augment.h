/* unimed-train's image augmentation, chosen by the options (--augment,
 * --crop-area, --flip, --jitter). */
#ifndef UNIMED_TRAIN_AUGMENT_H
#define UNIMED_TRAIN_AUGMENT_H

#include <stdint.h>

#include "train_options.h"

/* dst = src (a normalised 3 x S x S image) augmented as hp asks, drawn
 * from h: a random resized crop (area in [crop_area, 1], aspect ratio in
 * [3/4, 4/3], bilinear) when augment is set, a mirror with probability 1/2
 * when flip is set, a brightness and contrast change up to +-jitter (in
 * pixel units, undone and redone through the model's mean / stdv) when
 * jitter > 0; a plain copy otherwise. */
void ut_augment(const float *src, float *dst, int S, const ut_hparams *hp, const float mean[3],
                const float stdv[3], uint64_t h);

#endif
