/*
 * UniMed for Orthanc — driver + unit tests for dicom/resample.c.
 *
 *   test_resample unit
 *       self-contained checks (argument validation, torchvision size and
 *       crop rules, identity/constant images, normalisation, speed).
 *   test_resample batch <manifest>
 *       runs every job of a manifest written by tests/dicom/pillow_parity.py,
 *       one per line:
 *         crop   <channels> <w> <h> <size> <in.raw> <out.raw>
 *         resize <channels> <w> <h> <w2> <h2> <in.raw> <out.raw>
 *         norm   <size> <in.raw> <out.f32>   (CLIP mean/std, float32 LE)
 */
#include "resample.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const float k_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float k_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

static int g_fail = 0;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            g_fail++;                                                                  \
        }                                                                              \
    } while (0)

static uint8_t *read_file(const char *path, size_t expect)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    uint8_t *buf = malloc(expect ? expect : 1);
    size_t got = buf ? fread(buf, 1, expect, f) : 0;
    fclose(f);
    if (!buf || got != expect) {
        fprintf(stderr, "%s: expected %zu bytes, got %zu\n", path, expect, got);
        free(buf);
        return NULL;
    }
    return buf;
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot create %s\n", path);
        return -1;
    }
    size_t put = fwrite(data, 1, n, f);
    int rc = fclose(f);
    return (put == n && rc == 0) ? 0 : -1;
}

static int run_job(char *line)
{
    char op[16], in[4096], out[4096];
    int ch, w, h, a, b;
    if (sscanf(line, "%15s", op) != 1) {
        return 0; /* blank line */
    }
    if (strcmp(op, "crop") == 0) {
        if (sscanf(line, "%*s %d %d %d %d %4095s %4095s", &ch, &w, &h, &a, in, out) != 6 ||
            (ch != 1 && ch != 3) || w <= 0 || h <= 0 || a <= 0) {
            fprintf(stderr, "bad crop job: %s\n", line);
            return -1;
        }
        uint8_t *src = read_file(in, (size_t)w * (size_t)h * (size_t)ch);
        uint8_t *dst = malloc((size_t)a * (size_t)a * (size_t)ch);
        int rc = -1;
        if (src && dst) {
            rc = ch == 3 ? um_resize_shorter_crop_rgb8(src, w, h, a, dst)
                         : um_resize_shorter_crop_gray8(src, w, h, a, dst);
            if (rc == 0) {
                rc = write_file(out, dst, (size_t)a * (size_t)a * (size_t)ch);
            }
        }
        free(src);
        free(dst);
        return rc;
    }
    if (strcmp(op, "resize") == 0) {
        if (sscanf(line, "%*s %d %d %d %d %d %4095s %4095s", &ch, &w, &h, &a, &b, in, out) != 7 ||
            (ch != 1 && ch != 3) || w <= 0 || h <= 0 || a <= 0 || b <= 0) {
            fprintf(stderr, "bad resize job: %s\n", line);
            return -1;
        }
        uint8_t *src = read_file(in, (size_t)w * (size_t)h * (size_t)ch);
        uint8_t *dst = malloc((size_t)a * (size_t)b * (size_t)ch);
        int rc = -1;
        if (src && dst) {
            rc = ch == 3 ? um_resize_rgb8(src, w, h, dst, a, b) : um_resize_gray8(src, w, h, dst, a, b);
            if (rc == 0) {
                rc = write_file(out, dst, (size_t)a * (size_t)b * (size_t)ch);
            }
        }
        free(src);
        free(dst);
        return rc;
    }
    if (strcmp(op, "norm") == 0) {
        if (sscanf(line, "%*s %d %4095s %4095s", &a, in, out) != 3 || a <= 0) {
            fprintf(stderr, "bad norm job: %s\n", line);
            return -1;
        }
        const size_t n = (size_t)a * (size_t)a * 3;
        uint8_t *src = read_file(in, n);
        float *dst = malloc(n * sizeof(float));
        int rc = -1;
        if (src && dst) {
            um_rgb8_to_chw_normalized(src, a, k_mean, k_std, dst);
            rc = write_file(out, dst, n * sizeof(float));
        }
        free(src);
        free(dst);
        return rc;
    }
    fprintf(stderr, "unknown job: %s\n", line);
    return -1;
}

static int run_batch(const char *manifest)
{
    FILE *f = fopen(manifest, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", manifest);
        return 1;
    }
    char line[10000];
    int n = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (run_job(line) != 0) {
            fprintf(stderr, "job failed: %s\n", line);
            bad++;
        }
        n++;
    }
    fclose(f);
    printf("test_resample: %d jobs, %d failed\n", n, bad);
    return bad ? 1 : 0;
}

static double now_seconds(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 24;
}

static void unit_tests(void)
{
    uint8_t px[12] = {0};
    uint8_t out[3 * 224 * 224];

    /* argument validation */
    CHECK(um_resize_rgb8(NULL, 2, 2, out, 2, 2) == -1);
    CHECK(um_resize_rgb8(px, 2, 2, NULL, 2, 2) == -1);
    CHECK(um_resize_rgb8(px, 0, 2, out, 2, 2) == -1);
    CHECK(um_resize_rgb8(px, 2, -1, out, 2, 2) == -1);
    CHECK(um_resize_rgb8(px, 2, 2, out, 0, 2) == -1);
    CHECK(um_resize_gray8(px, 2, 2, out, 2, -5) == -1);
    CHECK(um_resize_shorter_crop_rgb8(px, 2, 2, 0, out) == -1);
    CHECK(um_resize_shorter_crop_rgb8(NULL, 2, 2, 4, out) == -1);
    CHECK(um_resize_shorter_crop_gray8(px, 2, 0, 4, out) == -1);

    /* torchvision Resize(int) output size: shorter side -> size, longer
     * int(size*long/short).  Hand-checked values. */
    int nw = 0, nh = 0;
    CHECK(um_shorter_side_size(512, 512, 224, &nw, &nh) == 0 && nw == 224 && nh == 224);
    CHECK(um_shorter_side_size(640, 480, 224, &nw, &nh) == 0 && nw == 298 && nh == 224);
    /* 224*640/480 = 298.67 -> 298 */
    CHECK(um_shorter_side_size(256, 1024, 224, &nw, &nh) == 0 && nw == 224 && nh == 896);
    CHECK(um_shorter_side_size(211, 169, 224, &nw, &nh) == 0 && nw == 279 && nh == 224);
    /* 224*211/169 = 279.67 -> 279 */
    CHECK(um_shorter_side_size(3, 3, 224, &nw, &nh) == 0 && nw == 224 && nh == 224);
    CHECK(um_shorter_side_size(1, 500, 224, &nw, &nh) == 0 && nw == 224 && nh == 112000);
    CHECK(um_shorter_side_size(0, 5, 224, &nw, &nh) == -1);

    /* CenterCrop offsets: int(round(d/2.0)), Python rounds half to even */
    CHECK(um_center_crop_offset(224, 224) == 0);
    CHECK(um_center_crop_offset(225, 224) == 0); /* round(0.5) = 0 */
    CHECK(um_center_crop_offset(226, 224) == 1);
    CHECK(um_center_crop_offset(227, 224) == 2); /* round(1.5) = 2 */
    CHECK(um_center_crop_offset(229, 224) == 2); /* round(2.5) = 2 */
    CHECK(um_center_crop_offset(231, 224) == 4); /* round(3.5) = 4 */
    CHECK(um_center_crop_offset(298, 224) == 37);
    CHECK(um_center_crop_offset(279, 224) == 28); /* round(27.5) = 28 */
    CHECK(um_center_crop_offset(896, 224) == 336);

    /* identity: same size returns the input unchanged */
    {
        uint8_t src[5 * 4 * 3], dst[5 * 4 * 3];
        uint32_t s = 1;
        for (size_t i = 0; i < sizeof src; i++) {
            src[i] = (uint8_t)lcg(&s);
        }
        CHECK(um_resize_rgb8(src, 5, 4, dst, 5, 4) == 0);
        CHECK(memcmp(src, dst, sizeof src) == 0);
    }

    /* constant images stay constant (coefficients sum to 1 in fixed point
     * within rounding; the half-unit bias makes the result exact) */
    {
        static uint8_t src[37 * 23 * 3];
        static uint8_t dst[300 * 11 * 3];
        memset(src, 200, sizeof src);
        CHECK(um_resize_rgb8(src, 37, 23, dst, 300, 11) == 0);
        int ok = 1;
        for (size_t i = 0; i < sizeof dst; i++) {
            ok &= dst[i] == 200;
        }
        CHECK(ok);
        memset(src, 255, sizeof src);
        CHECK(um_resize_gray8(src, 37, 23, dst, 5, 300) == 0);
        ok = 1;
        for (size_t i = 0; i < 5 * 300; i++) {
            ok &= dst[i] == 255;
        }
        CHECK(ok);
    }

    /* normalisation: hand values for 0 and 255 in channel 0 */
    {
        uint8_t src[2 * 2 * 3] = {0, 0, 0, 255, 255, 255, 128, 128, 128, 1, 2, 3};
        float dst[3 * 4];
        um_rgb8_to_chw_normalized(src, 2, k_mean, k_std, dst);
        CHECK(fabsf(dst[0] - (-0.48145466f / 0.26862954f)) < 1e-6f); /* -1.792263 */
        CHECK(fabsf(dst[1] - ((1.0f - 0.48145466f) / 0.26862954f)) < 1e-6f);
        CHECK(fabsf(dst[4 + 1] - ((1.0f - 0.4578275f) / 0.26130258f)) < 1e-6f);
        CHECK(fabsf(dst[8 + 3] - ((3.0f / 255.0f - 0.40821073f) / 0.27577711f)) < 1e-6f);
        CHECK(fabsf(dst[0] + 1.7922625f) < 1e-5f);
    }

    /* a large image resizes without error; its time is printed for
     * information only (speed belongs in benchmarks, not in tests) */
    {
        const int n = 1760;
        uint8_t *big = malloc((size_t)n * n * 3);
        CHECK(big != NULL);
        if (big) {
            uint32_t s = 7;
            for (size_t i = 0; i < (size_t)n * n * 3; i++) {
                big[i] = (uint8_t)lcg(&s);
            }
            double best = 1e9;
            for (int rep = 0; rep < 3; rep++) {
                double t0 = now_seconds();
                CHECK(um_resize_shorter_crop_rgb8(big, n, n, 224, out) == 0);
                double dt = now_seconds() - t0;
                best = dt < best ? dt : best;
            }
            printf("test_resample: 1760x1760 RGB -> 224x224 resize+crop: %.1f ms\n", best * 1e3);
            free(big);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "batch") == 0) {
        return run_batch(argv[2]);
    }
    if (argc == 2 && strcmp(argv[1], "unit") == 0) {
        unit_tests();
        printf("test_resample unit: %s (%d failures)\n", g_fail ? "FAIL" : "PASS", g_fail);
        return g_fail ? 1 : 0;
    }
    fprintf(stderr, "usage: %s unit | batch <manifest>\n", argv[0]);
    return 2;
}
