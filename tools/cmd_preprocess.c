/* unimed preprocess: the exact float32 tensor the model gets for one DICOM
 * frame, and optionally the 8-bit picture before normalisation (PNG). */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "unimed_dicom.h"
#include "unimed_model.h"

static void help_preprocess(FILE *out) {
  fprintf(out,
          "usage: unimed preprocess --model DIR [--frame N] FILE --out OUT.f32 [--png PREVIEW.png]\n\n"
          "Runs the DICOM pixel pipeline on frame N (0-based, default 0) of FILE: stored\n"
          "values, Modality LUT, VOI window, 8 bit, RGB, square pixels, then the shorter\n"
          "side resized to the model's size (Pillow bicubic), centre crop, normalisation.\n"
          "OUT.f32: raw little-endian float32 3 x S x S (the --tensor input of embed-image).\n"
          "PREVIEW.png: the S x S 8-bit RGB picture before normalisation.\n");
}

static int write_png(const char *path, const uint8_t *rgb, int w, int h) {
  FILE *fp = fopen(path, "wb");
  if (!fp) return -1;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    fclose(fp);
    return -1;
  }
  png_init_io(png, fp);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * w * 3));
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  return fclose(fp) == 0 ? 0 : -1;
}

int cmd_preprocess(int argc, char **argv) {
  const char *model = NULL, *out = NULL, *png = NULL, *file = NULL;
  long frame = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (cli_is_help(a)) {
      help_preprocess(stdout);
      return 0;
    } else if (strcmp(a, "--model") == 0 && v) {
      model = v, i++;
    } else if (strcmp(a, "--out") == 0 && v) {
      out = v, i++;
    } else if (strcmp(a, "--png") == 0 && v) {
      png = v, i++;
    } else if (strcmp(a, "--frame") == 0 && v) {
      char *end;
      frame = strtol(v, &end, 10);
      if (*end || frame < 0) {
        fprintf(stderr, "unimed: --frame needs a frame number from 0, got '%s'\n", v);
        return 2;
      }
      i++;
    } else if (a[0] == '-' || file) {
      fprintf(stderr, "unimed: unexpected argument '%s'\n\n", a);
      help_preprocess(stderr);
      return 2;
    } else {
      file = a;
    }
  }
  if (!model || !out || !file) {
    fprintf(stderr, "unimed: preprocess needs --model DIR, FILE and --out OUT.f32\n\n");
    help_preprocess(stderr);
    return 2;
  }
  char err[512];
  unimed_model *m = unimed_model_load(model, err, sizeof err);
  if (!m) {
    fprintf(stderr, "unimed: %s\n", err);
    return 1;
  }
  const unimed_config *c = unimed_model_config(m);
  const int S = c->image_size;
  int rc = 1;
  float *tensor = malloc((size_t)3 * S * S * sizeof(float));
  uint8_t *rgb = malloc((size_t)3 * S * S);
  udcm_handle *h = udcm_open_file(file, NULL, err, sizeof err);
  udcm_info info;
  if (!h) {
    fprintf(stderr, "unimed: %s\n", err);
  } else if (udcm_get_info(h, &info), frame >= info.frames) {
    fprintf(stderr, "unimed: %s: frame %ld requested, the object has %d\n", file, frame,
            info.frames);
  } else if (udcm_frame_tensor(h, (uint32_t)frame, NULL, S, c->mean, c->std, tensor, rgb, err,
                               sizeof err) != 0) {
    fprintf(stderr, "unimed: %s\n", err);
  } else {
    FILE *fp = fopen(out, "wb");
    int written = fp && fwrite(tensor, sizeof(float), (size_t)3 * S * S, fp) == (size_t)3 * S * S;
    if (fp && fclose(fp) != 0) written = 0;
    if (!written) {
      fprintf(stderr, "unimed: %s: cannot write\n", out);
    } else if (png && write_png(png, rgb, S, S) != 0) {
      fprintf(stderr, "unimed: %s: cannot write the PNG\n", png);
    } else {
      cJSON *j = cJSON_CreateObject();
      cJSON_AddStringToObject(j, "input", file);
      cJSON_AddNumberToObject(j, "frame", (double)frame);
      cJSON_AddStringToObject(j, "out", out);
      if (png) cJSON_AddStringToObject(j, "png", png);
      cJSON_AddNumberToObject(j, "size", S);
      cli_print_json(j);
      rc = 0;
    }
  }
  udcm_close(h);
  free(tensor);
  free(rgb);
  unimed_model_free(m);
  return rc;
}
