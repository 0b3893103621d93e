/*
 * UniMed for Orthanc — Pillow-exact 8-bit antialiased bicubic resize,
 * torchvision Resize(int)/CenterCrop, ToTensor+Normalize.  See resample.h.
 *
 * Own implementation written from the documented behaviour of Pillow's
 * separable resampler (coefficients in double, converted to 22-bit fixed
 * point, 32-bit integer accumulation with a half-unit bias, clamp to 0..255,
 * horizontal pass first into an 8-bit intermediate).
 */
#include "resample.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Fixed-point fraction bits: 32-bit accumulator minus 8 bits of pixel value
 * minus 2 bits of head-room for kernels with negative lobes. */
#define UM_FRAC_BITS 22
#define UM_ONE_HALF (INT32_C(1) << (UM_FRAC_BITS - 1))

/* Pillow passes the crop box as float; keep dimensions where float is exact. */
#define UM_MAX_DIM (1 << 24)

/* Keys cubic convolution kernel with a = -0.5 (Catmull-Rom), support 2.
 * The operation order is kept deliberately so the doubles are bit-identical
 * to the reference implementation's. */
static double cubic_kernel(double x)
{
    const double a = -0.5;
    if (x < 0.0) {
        x = -x;
    }
    if (x < 1.0) {
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    }
    if (x < 2.0) {
        return (((x - 5) * x + 8) * x - 4) * a;
    }
    return 0.0;
}

static inline uint8_t clamp_fixed(int32_t acc)
{
    if (acc < 0) {
        return 0;
    }
    acc >>= UM_FRAC_BITS;
    return acc > 255 ? (uint8_t)255 : (uint8_t)acc;
}

/* Maximum number of taps for a 1-D resample in_size -> out_size. */
static int tap_count(int in_size, int out_size)
{
    double fs = (double)in_size / out_size;
    if (fs < 1.0) {
        fs = 1.0;
    }
    return (int)ceil(2.0 * fs) * 2 + 1;
}

/* Source span [*lo, *hi) feeding output index xx of a 1-D resample. */
static void source_span(int in_size, int out_size, int xx, int *lo_out, int *hi_out)
{
    const double scale = (double)in_size / out_size;
    const double fs = scale < 1.0 ? 1.0 : scale;
    const double support = 2.0 * fs;
    const double center = (xx + 0.5) * scale;
    int lo = (int)(center - support + 0.5);
    int hi = (int)(center + support + 0.5);
    if (lo < 0) {
        lo = 0;
    }
    if (hi > in_size) {
        hi = in_size;
    }
    *lo_out = lo;
    *hi_out = hi;
}

/* Fixed-point coefficients for output indices o0 .. o0+n-1 of a 1-D resample
 * in_size -> out_size.  k has n*ksize entries; span[2i] = first source index,
 * span[2i+1] = number of taps.  tmp holds ksize doubles. */
static void make_coeffs(int in_size, int out_size, int o0, int n, int ksize, double *tmp,
                        int32_t *k, int *span)
{
    const double scale = (double)in_size / out_size;
    const double fs = scale < 1.0 ? 1.0 : scale;
    const double inv = 1.0 / fs;
    for (int i = 0; i < n; i++) {
        const int xx = o0 + i;
        const double center = (xx + 0.5) * scale;
        int lo, hi;
        source_span(in_size, out_size, xx, &lo, &hi);
        const int cnt = hi - lo;
        double sum = 0.0;
        for (int j = 0; j < cnt; j++) {
            const double wv = cubic_kernel((j + lo - center + 0.5) * inv);
            tmp[j] = wv;
            sum += wv;
        }
        int32_t *kr = k + (size_t)i * (size_t)ksize;
        for (int j = 0; j < cnt; j++) {
            double v = tmp[j];
            if (sum != 0.0) {
                v /= sum;
            }
            if (v < 0) {
                kr[j] = (int32_t)(-0.5 + v * (1 << UM_FRAC_BITS));
            } else {
                kr[j] = (int32_t)(0.5 + v * (1 << UM_FRAC_BITS));
            }
        }
        for (int j = cnt; j < ksize; j++) {
            kr[j] = 0;
        }
        span[2 * i] = lo;
        span[2 * i + 1] = cnt;
    }
}

/* Horizontal pass: nrows rows, each producing cw pixels. */
static void pass_horizontal(const uint8_t *src, size_t sstride, int ch, int nrows, int cw,
                            const int32_t *k, int ksize, const int *span, uint8_t *dst,
                            size_t dstride)
{
    for (int r = 0; r < nrows; r++) {
        const uint8_t *row = src + (size_t)r * sstride;
        uint8_t *out = dst + (size_t)r * dstride;
        if (ch == 3) {
            for (int x = 0; x < cw; x++) {
                const int32_t *kx = k + (size_t)x * (size_t)ksize;
                const uint8_t *p = row + (size_t)span[2 * x] * 3;
                const int cnt = span[2 * x + 1];
                int32_t s0 = UM_ONE_HALF, s1 = UM_ONE_HALF, s2 = UM_ONE_HALF;
                for (int j = 0; j < cnt; j++) {
                    s0 += p[3 * j + 0] * kx[j];
                    s1 += p[3 * j + 1] * kx[j];
                    s2 += p[3 * j + 2] * kx[j];
                }
                out[3 * x + 0] = clamp_fixed(s0);
                out[3 * x + 1] = clamp_fixed(s1);
                out[3 * x + 2] = clamp_fixed(s2);
            }
        } else {
            for (int x = 0; x < cw; x++) {
                const int32_t *kx = k + (size_t)x * (size_t)ksize;
                const uint8_t *p = row + span[2 * x];
                const int cnt = span[2 * x + 1];
                int32_t s0 = UM_ONE_HALF;
                for (int j = 0; j < cnt; j++) {
                    s0 += p[j] * kx[j];
                }
                out[x] = clamp_fixed(s0);
            }
        }
    }
}

/* Vertical pass: src row 0 is source row `row0`; produces ch_out rows of
 * nbytes = width*channels bytes each. */
static void pass_vertical(const uint8_t *src, size_t sstride, int row0, size_t nbytes, int nout,
                          const int32_t *k, int ksize, const int *span, uint8_t *dst,
                          size_t dstride)
{
    for (int y = 0; y < nout; y++) {
        const int32_t *ky = k + (size_t)y * (size_t)ksize;
        const uint8_t *base = src + (size_t)(span[2 * y] - row0) * sstride;
        const int cnt = span[2 * y + 1];
        uint8_t *out = dst + (size_t)y * dstride;
        for (size_t i = 0; i < nbytes; i++) {
            const uint8_t *p = base + i;
            int32_t s = UM_ONE_HALF;
            for (int j = 0; j < cnt; j++) {
                s += p[(size_t)j * sstride] * ky[j];
            }
            out[i] = clamp_fixed(s);
        }
    }
}

/* Checked a*b (+c) in size_t. Returns 0 on overflow. */
static int mul_ok(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) {
        return 0;
    }
    *out = a * b;
    return 1;
}

static int add_ok(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a) {
        return 0;
    }
    *out = a + b;
    return 1;
}

static size_t align8(size_t v)
{
    return (v + 7u) & ~(size_t)7u;
}

/*
 * Resize src (w x h, nch channels interleaved) to w2 x h2 and write only the
 * window [x0, x0+cw) x [y0, y0+chh) of the result to dst (cw*nch stride).
 */
static int resize_window(const uint8_t *src, int w, int h, int nch, int w2, int h2, int x0, int y0,
                         int cw, int chh, uint8_t *dst)
{
    if (!src || !dst || w <= 0 || h <= 0 || w2 <= 0 || h2 <= 0 || w > UM_MAX_DIM ||
        h > UM_MAX_DIM || w2 > UM_MAX_DIM || h2 > UM_MAX_DIM || x0 < 0 || y0 < 0 || cw <= 0 ||
        chh <= 0 || x0 > w2 - cw || y0 > h2 - chh) {
        return -1;
    }
    const size_t sstride = (size_t)w * (size_t)nch;
    const size_t dstride = (size_t)cw * (size_t)nch;
    const int need_h = (w2 != w);
    const int need_v = (h2 != h);

    if (!need_h && !need_v) {
        for (int y = 0; y < chh; y++) {
            memcpy(dst + (size_t)y * dstride, src + (size_t)(y0 + y) * sstride + (size_t)x0 * nch,
                   dstride);
        }
        return 0;
    }

    const int ksh = need_h ? tap_count(w, w2) : 0;
    const int ksv = need_v ? tap_count(h, h2) : 0;
    const int kmax = ksh > ksv ? ksh : ksv;

    /* Scratch layout: tmp doubles | kh | kv | span_h | span_v | intermediate. */
    size_t n_tmp = (size_t)kmax * sizeof(double);
    size_t n_kh = 0, n_kv = 0, n_sh = 0, n_sv = 0, n_img = 0, t;
    if (need_h) {
        if (!mul_ok((size_t)cw, (size_t)ksh, &t) || !mul_ok(t, sizeof(int32_t), &n_kh)) {
            return -1;
        }
        n_sh = (size_t)cw * 2 * sizeof(int);
    }
    if (need_v) {
        if (!mul_ok((size_t)chh, (size_t)ksv, &t) || !mul_ok(t, sizeof(int32_t), &n_kv)) {
            return -1;
        }
        n_sv = (size_t)chh * 2 * sizeof(int);
    }

    /* Source rows the vertical pass reads (or the output rows themselves). */
    int row_first = y0, row_end = y0 + chh;
    if (need_v) {
        /* Spans are monotone in the output index. */
        int lo, hi;
        source_span(h, h2, y0, &row_first, &hi);
        source_span(h, h2, y0 + chh - 1, &lo, &row_end);
    }
    const int nrows = row_end - row_first;
    if (need_h && need_v) {
        if (!mul_ok(dstride, (size_t)nrows, &n_img)) {
            return -1;
        }
    }

    size_t total = 0;
    size_t off_kh, off_kv, off_sh, off_sv, off_img;
    if (!add_ok(align8(n_tmp), 0, &total)) {
        return -1;
    }
    off_kh = total;
    if (!add_ok(total, align8(n_kh), &total)) {
        return -1;
    }
    off_kv = total;
    if (!add_ok(total, align8(n_kv), &total)) {
        return -1;
    }
    off_sh = total;
    if (!add_ok(total, align8(n_sh), &total)) {
        return -1;
    }
    off_sv = total;
    if (!add_ok(total, align8(n_sv), &total)) {
        return -1;
    }
    off_img = total;
    if (!add_ok(total, n_img, &total)) {
        return -1;
    }
    unsigned char *scratch = malloc(total ? total : 1);
    if (!scratch) {
        return -1;
    }
    double *tmp = (double *)(void *)scratch;
    int32_t *kh = (int32_t *)(void *)(scratch + off_kh);
    int32_t *kv = (int32_t *)(void *)(scratch + off_kv);
    int *sh = (int *)(void *)(scratch + off_sh);
    int *sv = (int *)(void *)(scratch + off_sv);
    uint8_t *img = scratch + off_img;

    if (need_h) {
        make_coeffs(w, w2, x0, cw, ksh, tmp, kh, sh);
    }
    if (need_v) {
        make_coeffs(h, h2, y0, chh, ksv, tmp, kv, sv);
    }

    if (need_h && need_v) {
        pass_horizontal(src + (size_t)row_first * sstride, sstride, nch, nrows, cw, kh, ksh, sh,
                        img, dstride);
        pass_vertical(img, dstride, row_first, dstride, chh, kv, ksv, sv, dst, dstride);
    } else if (need_h) {
        /* Rows unchanged: output row y is source row y. */
        pass_horizontal(src + (size_t)y0 * sstride, sstride, nch, chh, cw, kh, ksh, sh, dst,
                        dstride);
    } else {
        /* Columns unchanged: read the window's columns straight from src. */
        pass_vertical(src + (size_t)row_first * sstride + (size_t)x0 * nch, sstride, row_first,
                      dstride, chh, kv, ksv, sv, dst, dstride);
    }
    free(scratch);
    return 0;
}

int um_resize_rgb8(const uint8_t *src, int w, int h, uint8_t *dst, int w2, int h2)
{
    return resize_window(src, w, h, 3, w2, h2, 0, 0, w2, h2, dst);
}

int um_resize_gray8(const uint8_t *src, int w, int h, uint8_t *dst, int w2, int h2)
{
    return resize_window(src, w, h, 1, w2, h2, 0, 0, w2, h2, dst);
}

int um_shorter_side_size(int w, int h, int size, int *out_w, int *out_h)
{
    if (w <= 0 || h <= 0 || size <= 0 || !out_w || !out_h) {
        return -1;
    }
    const int shorter = w <= h ? w : h;
    const int longer = w <= h ? h : w;
    /* Python: int(size * long / short) -- exact integer product, then a
     * correctly rounded true division, then truncation. */
    const double q = (double)((int64_t)size * (int64_t)longer) / (double)shorter;
    if (q >= (double)UM_MAX_DIM + 1.0) {
        return -1;
    }
    const int nl = (int)q;
    if (w <= h) {
        *out_w = size;
        *out_h = nl;
    } else {
        *out_w = nl;
        *out_h = size;
    }
    return 0;
}

int um_center_crop_offset(int in, int crop)
{
    const int d = in - crop;
    if (d <= 0) {
        return 0;
    }
    const int q = d / 2;
    if (d % 2 == 0) {
        return q;
    }
    /* d/2 = q + 0.5 exactly: Python's round() picks the even neighbour. */
    return (q % 2 == 0) ? q : q + 1;
}

static int shorter_crop(const uint8_t *src, int w, int h, int size, uint8_t *dst, int nch)
{
    int nw, nh;
    if (!src || !dst || um_shorter_side_size(w, h, size, &nw, &nh) != 0) {
        return -1;
    }
    const int left = um_center_crop_offset(nw, size);
    const int top = um_center_crop_offset(nh, size);
    return resize_window(src, w, h, nch, nw, nh, left, top, size, size, dst);
}

int um_resize_shorter_crop_rgb8(const uint8_t *src, int w, int h, int size, uint8_t *dst)
{
    return shorter_crop(src, w, h, size, dst, 3);
}

int um_resize_shorter_crop_gray8(const uint8_t *src, int w, int h, int size, uint8_t *dst)
{
    return shorter_crop(src, w, h, size, dst, 1);
}

void um_rgb8_to_chw_normalized(const uint8_t *src, int size, const float mean[3],
                               const float std[3], float *dst)
{
    if (!src || !dst || !mean || !std || size <= 0) {
        return;
    }
    const size_t plane = (size_t)size * (size_t)size;
    for (int c = 0; c < 3; c++) {
        const float m = mean[c];
        const float s = std[c];
        float *out = dst + (size_t)c * plane;
        for (size_t i = 0; i < plane; i++) {
            const float v = (float)src[i * 3 + (size_t)c] / 255.0f;
            out[i] = (v - m) / s;
        }
    }
}
