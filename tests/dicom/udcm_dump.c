/* Test helper: dump what unimed_dicom decodes.
 *
 *   udcm_dump stored FILE OUT.raw [FRAME]   stored values of every frame (or
 *                                          of FRAME), int32 little-endian,
 *                                          frame after frame, interleaved
 *   udcm_dump rgb FILE OUT.ppm [FRAME]      pipeline output as binary PPM
 *   udcm_dump mem FILE                      open from memory, decode frame 0
 *                                          stored + rgb (bad-input tests)
 *   udcm_dump sr-mem FILE OUT.dcm           write an SR whose source is FILE
 *                                          given as a buffer
 *
 * Prints one line "key=value ..." describing the result on stdout.
 * Exit 0 on success, 1 on a decoding error (message on stderr), 2 on usage.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unimed_dicom.h"

static int usage(void)
{
    fprintf(stderr, "usage: udcm_dump stored|rgb FILE OUT [FRAME] | udcm_dump mem FILE\n");
    return 2;
}

static int read_all(const char *path, uint8_t **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 1 << 16, n = 0;
    uint8_t *b = malloc(cap);
    for (;;) {
        if (!b) { fclose(f); return -1; }
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (n < cap) break;
        cap *= 2;
        uint8_t *nb = realloc(b, cap);
        if (!nb) { free(b); fclose(f); return -1; }
        b = nb;
    }
    fclose(f);
    *buf = b;
    *len = n;
    return 0;
}

int main(int argc, char **argv)
{
    char err[512];
    if (argc < 3) return usage();
    const char *mode = argv[1], *path = argv[2];
    if (strcmp(mode, "mem") == 0) {
        uint8_t *buf = NULL;
        size_t len = 0;
        if (read_all(path, &buf, &len) != 0) {
            fprintf(stderr, "%s: cannot read\n", path);
            return 1;
        }
        udcm_handle *h = udcm_open_memory(buf, len, path, NULL, err, sizeof err);
        free(buf);
        if (!h) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        size_t n = udcm_frame_samples(h);
        int32_t *v = malloc((n ? n : 1) * sizeof *v);
        int rc = udcm_decode_stored(h, 0, v, n, NULL, err, sizeof err);
        free(v);
        if (rc == 0) {
            uint8_t *rgb = NULL;
            int w = 0, hh = 0;
            rc = udcm_frame_rgb8(h, 0, NULL, &rgb, &w, &hh, err, sizeof err);
            udcm_free(rgb);
        }
        udcm_close(h);
        if (rc != 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        printf("ok\n");
        return 0;
    }
    if (strcmp(mode, "sr-mem") == 0) {
        /* a TID 1500 SR whose source is FILE given as a buffer (the
         * plugin's path: the patient and study modules come from it) */
        if (argc < 4) return usage();
        uint8_t *buf = NULL;
        size_t len = 0;
        if (read_all(path, &buf, &len) != 0) {
            fprintf(stderr, "%s: cannot read\n", path);
            return 1;
        }
        udcm_info in;
        memset(&in, 0, sizeof in);
        udcm_handle *h = udcm_open_memory(buf, len, path, NULL, err, sizeof err);
        if (h) {
            udcm_get_info(h, &in);
            udcm_close(h);
        }
        const udcm_sr_finding finding = {"finding", {"233604007", "SCT", "Pneumonia"}, 0.5};
        const udcm_sr_image_ref image = {NULL, in.series_uid, in.sop_class_uid, in.sop_instance_uid, 0};
        const udcm_sr_group group = {"test", "1", "sha256:00", in.series_uid, &finding, 1, &image, 1, NULL};
        udcm_sr_request req;
        memset(&req, 0, sizeof req);
        req.source_buffer = buf;
        req.source_len = len;
        req.model_name = "test model";
        req.model_version = "1";
        req.model_hash = "sha256:00";
        req.content_datetime = "20260101000000";
        req.groups = &group;
        req.n_groups = 1;
        req.complete = 1;
        udcm_sr_write_params to = udcm_sr_write_default_params();
        to.dcm_path = argv[3];
        int rc = udcm_sr_write(&req, &to, err, sizeof err);
        free(buf);
        if (rc != 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        printf("ok\n");
        return 0;
    }
    if (argc < 4) return usage();
    const char *out = argv[3];
    long one = argc > 4 ? atol(argv[4]) : -1;
    /* UDCM_MAX_DECODE_BYTES: a decode budget other than the default */
    udcm_limits lim;
    udcm_limits_default(&lim);
    if (getenv("UDCM_MAX_DECODE_BYTES")) lim.max_decode_bytes = strtoull(getenv("UDCM_MAX_DECODE_BYTES"), NULL, 10);
    udcm_handle *h = udcm_open_file(path, &lim, err, sizeof err);
    if (!h) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    udcm_info in;
    udcm_get_info(h, &in);
    FILE *f = fopen(out, "wb");
    if (!f) {
        fprintf(stderr, "%s: cannot write\n", out);
        udcm_close(h);
        return 1;
    }
    int rc = 0;
    if (strcmp(mode, "stored") == 0) {
        size_t n = udcm_frame_samples(h);
        int32_t *v = malloc((n ? n : 1) * sizeof *v);
        char pi[17] = "";
        int f0 = one >= 0 ? (int)one : 0, f1 = one >= 0 ? (int)one + 1 : in.frames;
        if (f1 <= f0) f1 = f0 + 1; /* surface the error of a frameless object */
        for (int fr = f0; fr < f1 && rc == 0; fr++) {
            if (udcm_decode_stored(h, (uint32_t)fr, v, n, pi, err, sizeof err) != 0) {
                fprintf(stderr, "%s\n", err);
                rc = 1;
                break;
            }
            fwrite(v, sizeof *v, n, f); /* little-endian hosts only (x86-64, arm64) */
        }
        free(v);
        if (rc == 0)
            printf("rows=%d columns=%d frames=%d spp=%d pi=%s stored_pi=%s ts=%s\n", in.rows, in.columns,
                   f1 - f0, in.samples_per_pixel, pi, in.photometric, in.transfer_syntax_uid);
    } else if (strcmp(mode, "rgb") == 0) {
        uint8_t *rgb = NULL;
        int w = 0, hh = 0;
        if (udcm_frame_rgb8(h, (uint32_t)(one >= 0 ? one : 0), NULL, &rgb, &w, &hh, err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            rc = 1;
        } else {
            fprintf(f, "P6\n%d %d\n255\n", w, hh);
            fwrite(rgb, 3, (size_t)w * (size_t)hh, f);
            printf("width=%d height=%d\n", w, hh);
        }
        udcm_free(rgb);
    } else {
        rc = 2;
        usage();
    }
    fclose(f);
    udcm_close(h);
    return rc;
}
