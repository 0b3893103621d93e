/*
 * UniMed for Orthanc — image preprocessing for the CLIP vision tower.
 *
 * Bit-exact re-implementation (own code) of the 8-bit path of Pillow's
 * antialiased BICUBIC resample (Image.resize(..., Image.BICUBIC) on "L" and
 * "RGB" images, Pillow 9.x), plus torchvision's Resize(int) / CenterCrop /
 * ToTensor / Normalize as used by OpenCLIP's evaluation transform.
 *
 * Algorithm (facts only; see docs/DICOM.md):
 *   - separable: horizontal pass into an 8-bit intermediate image (only the
 *     source rows the vertical pass needs), then vertical pass;
 *     a pass is skipped when that dimension does not change;
 *   - per output index i: scale = in/out, fs = max(scale, 1),
 *     support = 2*fs, centre = (i+0.5)*scale,
 *     first = max(0, (int)(centre-support+0.5)),
 *     end   = min(in, (int)(centre+support+0.5)),
 *     w_j = cubic_{a=-0.5}((j - centre + 0.5)/fs) normalised to sum 1,
 *     then fixed point: (int)(w*2^22 +/- 0.5);
 *   - accumulate 2^21 + sum(pixel*w_j) in 32-bit ints, >> 22, clamp 0..255.
 *
 * Pure C11, libc + libm.  Compile this file without floating-point
 * contraction (-ffp-contract=off, the default for -std=c11 in GCC) so the
 * coefficients match Pillow's to the last bit.
 */
#ifndef UNIMED_DICOM_RESAMPLE_H
#define UNIMED_DICOM_RESAMPLE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Resize interleaved RGB8 (row stride 3*w) to w2 x h2 (row stride 3*w2),
 * exactly as Pillow's Image.resize((w2, h2), Image.BICUBIC) on an "RGB"
 * image.  src and dst must not overlap.
 * Returns 0, or -1 on bad arguments (NULL, non-positive sizes, size
 * overflow) or when out of memory. */
int um_resize_rgb8(const uint8_t *src, int w, int h, uint8_t *dst, int w2, int h2);

/* Same for a single-channel 8-bit image (Pillow mode "L"). */
int um_resize_gray8(const uint8_t *src, int w, int h, uint8_t *dst, int w2, int h2);

/* torchvision's Resize(size) output size for a w x h image: the shorter
 * side becomes size, the longer int(size * long / short) (computed in
 * double, truncated).  Returns 0 or -1 on bad arguments. */
int um_shorter_side_size(int w, int h, int size, int *out_w, int *out_h);

/* torchvision's CenterCrop offset for one dimension:
 * int(round((in - crop) / 2.0)) with Python's round-half-to-even.
 * Requires in >= crop >= 0. */
int um_center_crop_offset(int in, int crop);

/* Resize(size, BICUBIC) + CenterCrop(size) on interleaved RGB8.
 * dst receives size*size*3 bytes.  Only the cropped window of the resized
 * image is computed (identical values: every output pixel depends only on
 * its own coefficients).  Returns 0, or -1 on bad arguments / OOM. */
int um_resize_shorter_crop_rgb8(const uint8_t *src, int w, int h, int size, uint8_t *dst);

/* Same for single-channel 8-bit. dst receives size*size bytes. */
int um_resize_shorter_crop_gray8(const uint8_t *src, int w, int h, int size, uint8_t *dst);

/* ToTensor + Normalize: dst[c*size*size + y*size + x] =
 *   ((float)src[(y*size + x)*3 + c] / 255.0f - mean[c]) / std[c],
 * every step in float32 like torch. */
void um_rgb8_to_chw_normalized(const uint8_t *src, int size, const float mean[3],
                               const float std[3], float *dst);

#ifdef __cplusplus
}
#endif

#endif /* UNIMED_DICOM_RESAMPLE_H */
