/* `unimed inspect FILE...`: one JSON object per line per file. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "commands.h"
#include "unimed_dicom.h"

static void inspect_usage(FILE *f)
{
    fprintf(f,
            "usage: unimed inspect FILE...\n"
            "Prints one JSON object per line per DICOM file: file, modality, sop_class,\n"
            "transfer_syntax {uid, name}, rows, columns, frames, samples_per_pixel,\n"
            "photometric, bits_allocated, bits_stored, high_bit, pixel_representation,\n"
            "planar_configuration, rescale, window {center, width, function}, spacing,\n"
            "imager_spacing, image (whether pixels can be decoded, else \"not_decodable\")\n"
            "and, for whole-slide images, wsi {image_type, flavor, total_columns,\n"
            "total_rows, tiling}.\n"
            "Exit status: 0 all files read, 1 a file could not be read, 2 bad usage.\n");
}

static cJSON *pair(double a, double b)
{
    double v[2] = {a, b};
    return cJSON_CreateDoubleArray(v, 2);
}

static cJSON *describe(const char *path, const udcm_info *in, const char *not_decodable)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", path);
    cJSON_AddStringToObject(o, "modality", in->modality);
    cJSON *sc = cJSON_AddObjectToObject(o, "sop_class");
    cJSON_AddStringToObject(sc, "uid", in->sop_class_uid);
    cJSON_AddStringToObject(sc, "name", in->sop_class_name);
    cJSON *ts = cJSON_AddObjectToObject(o, "transfer_syntax");
    cJSON_AddStringToObject(ts, "uid", in->transfer_syntax_uid);
    cJSON_AddStringToObject(ts, "name", in->transfer_syntax_name);
    cJSON_AddBoolToObject(o, "image", in->is_image && !not_decodable);
    if (not_decodable) cJSON_AddStringToObject(o, "not_decodable", not_decodable);
    if (in->has_pixel_data || in->rows || in->columns) {
        cJSON_AddNumberToObject(o, "rows", in->rows);
        cJSON_AddNumberToObject(o, "columns", in->columns);
        cJSON_AddNumberToObject(o, "frames", in->frames);
        cJSON_AddNumberToObject(o, "samples_per_pixel", in->samples_per_pixel);
        cJSON_AddStringToObject(o, "photometric", in->photometric);
        cJSON_AddNumberToObject(o, "bits_allocated", in->bits_allocated);
        cJSON_AddNumberToObject(o, "bits_stored", in->bits_stored);
        cJSON_AddNumberToObject(o, "high_bit", in->high_bit);
        cJSON_AddNumberToObject(o, "pixel_representation", in->pixel_representation);
        if (in->samples_per_pixel > 1)
            cJSON_AddNumberToObject(o, "planar_configuration", in->planar_configuration);
        if (in->has_rescale) {
            cJSON *r = cJSON_AddObjectToObject(o, "rescale");
            cJSON_AddNumberToObject(r, "slope", in->rescale_slope);
            cJSON_AddNumberToObject(r, "intercept", in->rescale_intercept);
        }
        if (in->has_modality_lut_sequence) cJSON_AddBoolToObject(o, "modality_lut_sequence", 1);
        if (in->has_window) {
            cJSON *w = cJSON_AddObjectToObject(o, "window");
            cJSON_AddNumberToObject(w, "center", in->window_center);
            cJSON_AddNumberToObject(w, "width", in->window_width);
            cJSON_AddStringToObject(w, "function", in->voi_lut_function[0] ? in->voi_lut_function : "LINEAR");
        } else {
            cJSON_AddNullToObject(o, "window");
        }
        if (in->has_voi_lut_sequence) cJSON_AddBoolToObject(o, "voi_lut_sequence", 1);
    }
    if (in->has_pixel_spacing)
        cJSON_AddItemToObject(o, "spacing", pair(in->pixel_spacing[0], in->pixel_spacing[1]));
    if (in->has_imager_pixel_spacing)
        cJSON_AddItemToObject(o, "imager_spacing", pair(in->imager_pixel_spacing[0], in->imager_pixel_spacing[1]));
    if (in->is_wsi) {
        cJSON *w = cJSON_AddObjectToObject(o, "wsi");
        cJSON_AddStringToObject(w, "image_type", in->image_type);
        cJSON_AddStringToObject(w, "flavor", in->wsi_image_flavor);
        cJSON_AddNumberToObject(w, "total_columns", in->total_matrix_columns);
        cJSON_AddNumberToObject(w, "total_rows", in->total_matrix_rows);
        cJSON_AddStringToObject(w, "tiling", in->dimension_organization_type);
    }
    return o;
}

int cmd_inspect(int argc, char **argv)
{
    /* argv[0] is "inspect" */
    int nfiles = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            inspect_usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--")) {
            nfiles += argc - i - 1;
            break;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "unimed inspect: unknown option %s\n", argv[i]);
            inspect_usage(stderr);
            return 2;
        }
        nfiles++;
    }
    if (nfiles == 0) {
        inspect_usage(stderr);
        return 2;
    }
    int rc = 0, dashdash = 0;
    for (int i = 1; i < argc; i++) {
        if (!dashdash && !strcmp(argv[i], "--")) {
            dashdash = 1;
            continue;
        }
        char err[512];
        udcm_handle *h = udcm_open_file(argv[i], NULL, err, sizeof err);
        if (!h) {
            fprintf(stderr, "unimed inspect: %s\n", err);
            rc = 1;
            continue;
        }
        udcm_info in;
        udcm_get_info(h, &in);
        /* Header-only: report why pixels could not be decoded, without
         * decoding them. */
        char why[512] = "";
        const char *nd = NULL;
        if (!udcm_decodable(h, why, sizeof why)) {
            size_t k = strlen(argv[i]);
            nd = (!strncmp(why, argv[i], k) && why[k] == ':') ? why + k + 2 : why;
        }
        cJSON *o = describe(argv[i], &in, nd);
        char *line = cJSON_PrintUnformatted(o);
        if (line) {
            puts(line);
            cJSON_free(line);
        }
        cJSON_Delete(o);
        udcm_close(h);
    }
    return rc;
}
