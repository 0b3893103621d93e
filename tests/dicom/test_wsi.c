/* Test helper for the whole-slide functions (dicom/wsi.cpp).
 *
 *   test_wsi levels MIN_SIDE SPACING_MM PATH...
 *       one line per level, then the overview and tile level choices
 *   test_wsi overview MIN_SIDE OUT.ppm PATH...
 *       the stitched overview (udcm_wsi_overview_rgb8) as binary PPM
 *   test_wsi tensor SIZE OUT.ppm PATH...
 *       the overview's size x size crop (udcm_wsi_overview_tensor rgb_out)
 *   test_wsi tiles N SIZE SPACING_MM OUT.ppm PATH...
 *       the sampled tiles stacked vertically (SIZE x N*SIZE PPM) and one
 *       line per tile
 *
 * PATH: files or folders; they must hold exactly one whole-slide series.
 * Every command ends with "decoded=N" (frames decoded, udcm_wsi_frames_decoded).
 * Exit 0, 1 on an error (message on stderr), 2 on usage.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unimed_dicom.h"

static int usage(void)
{
    fprintf(stderr,
            "usage: test_wsi levels MIN_SIDE SPACING_MM PATH... | overview MIN_SIDE OUT.ppm PATH... |\n"
            "       tensor SIZE OUT.ppm PATH... | tiles N SIZE SPACING_MM OUT.ppm PATH...\n");
    return 2;
}

static void warn(void *ctx, const char *m)
{
    (void)ctx;
    fprintf(stderr, "%s\n", m);
}

static int write_ppm(const char *path, const uint8_t *rgb, int w, int h)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fprintf(f, "P6\n%d %d\n255\n", w, h);
    size_t n = (size_t)w * (size_t)h * 3;
    int rc = fwrite(rgb, 1, n, f) == n ? 0 : -1;
    if (fclose(f) != 0) rc = -1;
    return rc;
}

static const udcm_series *one_series(udcm_collection *col, const char *const *paths, int n)
{
    char err[512];
    if (udcm_collect(paths, n, NULL, warn, NULL, col, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return NULL;
    }
    const udcm_series *s = NULL;
    for (int i = 0; i < col->n_series; i++) {
        if (!col->series[i].is_wsi) continue;
        if (s) {
            fprintf(stderr, "more than one whole-slide series\n");
            return NULL;
        }
        s = &col->series[i];
    }
    if (!s) fprintf(stderr, "no whole-slide series\n");
    return s;
}

int main(int argc, char **argv)
{
    if (argc < 3) return usage();
    const char *cmd = argv[1];
    udcm_collection col;
    memset(&col, 0, sizeof col);
    char err[1024] = "";
    int rc = 1;

    if (!strcmp(cmd, "levels")) {
        if (argc < 5) return usage();
        int min_side = atoi(argv[2]);
        double sp = atof(argv[3]);
        const udcm_series *s = one_series(&col, (const char *const *)argv + 4, argc - 4);
        if (!s) goto out;
        int n = udcm_wsi_levels(s, NULL, 0);
        udcm_wsi_level *lv = calloc((size_t)(n > 0 ? n : 1), sizeof *lv);
        udcm_wsi_levels(s, lv, n);
        for (int i = 0; i < n; i++)
            printf("level path=%s flavor=%s width=%u height=%u tile=%dx%d frames=%d org=%s spacing=%.9g\n",
                   s->instances[lv[i].instance].path, lv[i].flavor, lv[i].width, lv[i].height,
                   lv[i].tile_width, lv[i].tile_height, lv[i].frames,
                   lv[i].organization[0] ? lv[i].organization : "-", lv[i].spacing_mm);
        free(lv);
        int o = udcm_wsi_overview_level(s, min_side), t = udcm_wsi_tile_level(s, sp);
        printf("overview_level=%s\n", o >= 0 ? s->instances[o].path : "-");
        printf("tile_level=%s\n", t >= 0 ? s->instances[t].path : "-");
        rc = 0;
    } else if (!strcmp(cmd, "overview") || !strcmp(cmd, "tensor")) {
        if (argc < 5) return usage();
        int size = atoi(argv[2]);
        const char *out = argv[3];
        const udcm_series *s = one_series(&col, (const char *const *)argv + 4, argc - 4);
        if (!s) goto out;
        if (!strcmp(cmd, "overview")) {
            uint8_t *rgb = NULL;
            int w = 0, h = 0;
            if (udcm_wsi_overview_rgb8(s, NULL, size, &rgb, &w, &h, err, sizeof err) != 0) {
                fprintf(stderr, "%s\n", err);
                goto out;
            }
            int o = udcm_wsi_overview_level(s, size);
            printf("overview w=%d h=%d level=%s\n", w, h, s->instances[o].path);
            if (write_ppm(out, rgb, w, h) != 0) {
                fprintf(stderr, "cannot write %s\n", out);
                udcm_free(rgb);
                goto out;
            }
            udcm_free(rgb);
        } else {
            static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
            static const float sd[3] = {0.26862954f, 0.26130258f, 0.27577711f};
            float *t = malloc((size_t)3 * size * size * sizeof(float));
            uint8_t *crop = malloc((size_t)3 * size * size);
            if (!t || !crop ||
                udcm_wsi_overview_tensor(s, NULL, size, mean, sd, t, crop, err, sizeof err) != 0) {
                fprintf(stderr, "%s\n", t && crop ? err : "out of memory");
                free(t);
                free(crop);
                goto out;
            }
            /* the tensor must be the normalised crop */
            double maxd = 0;
            for (int c = 0; c < 3; c++)
                for (int i = 0; i < size * size; i++) {
                    double v = ((double)crop[i * 3 + c] / 255.0 - mean[c]) / sd[c];
                    double d = v - t[c * size * size + i];
                    if (d < 0) d = -d;
                    if (d > maxd) maxd = d;
                }
            printf("tensor size=%d max_norm_diff=%.3g\n", size, maxd);
            int wr = write_ppm(out, crop, size, size);
            free(t);
            free(crop);
            if (wr != 0) goto out;
        }
        rc = 0;
    } else if (!strcmp(cmd, "tiles")) {
        if (argc < 7) return usage();
        int n = atoi(argv[2]), size = atoi(argv[3]);
        double sp = atof(argv[4]);
        const char *out = argv[5];
        const udcm_series *s = one_series(&col, (const char *const *)argv + 6, argc - 6);
        if (!s) goto out;
        int cap = n > 0 ? n : UDCM_WSI_DEFAULT_TILES;
        int sz = size > 0 ? size : UDCM_WSI_DEFAULT_TILE_SIZE;
        udcm_wsi_tile *where = calloc((size_t)cap, sizeof *where);
        uint8_t *tiles = NULL;
        int k = 0;
        uint64_t d0 = udcm_wsi_frames_decoded();
        if (!where || udcm_wsi_sample_tiles(s, NULL, n, size, sp, &tiles, &k, where, err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", where ? err : "out of memory");
            free(where);
            goto out;
        }
        uint64_t d1 = udcm_wsi_frames_decoded();
        printf("tiles n=%d size=%d decoded_here=%llu\n", k, sz, (unsigned long long)(d1 - d0));
        for (int i = 0; i < k; i++)
            printf("tile %d level=%s x=%d y=%d tissue=%.4f\n", i, s->instances[where[i].instance].path,
                   where[i].x, where[i].y, (double)where[i].tissue);
        int wr = k > 0 ? write_ppm(out, tiles, sz, sz * k) : 0;
        udcm_free(tiles);
        free(where);
        if (wr != 0) goto out;
        rc = 0;
    } else {
        return usage();
    }
out:
    printf("decoded=%llu\n", (unsigned long long)udcm_wsi_frames_decoded());
    udcm_collection_free(&col);
    return rc;
}
