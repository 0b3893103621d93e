/* Writes a fixed set of float values with st_write as F32, F16 and BF16,
 * reads each file back with st_open and prints the decoded values, one per
 * line, so that test_safetensors.py can compare bits and values with
 * numpy/torch conversions.
 *
 * usage: safetensors_roundtrip OUT_DIR */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "safetensors.h"

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  /* Normal values, ties, subnormals of both formats, overflow, specials. */
  static const float base[] = {
      0.0f, -0.0f, 1.0f, -1.5f, 3.14159265f, 65504.0f, 65519.0f, 65520.0f, 1e6f,
      -1e-3f, 6.1035156e-05f, 6.0975552e-05f, 5.9604645e-08f, 2.9802322e-08f,
      2.9802326e-08f, 1e-10f, 1.00048828125f, 1.00146484375f, 1.0009765625f,
      1.00390625f, 1.01171875f, 3.3895314e38f, 1e-40f, -2.5e-39f, 0.1f, -0.3333333f};
  enum { NB = sizeof base / sizeof base[0] };
  float vals[NB + 3];
  memcpy(vals, base, sizeof base);
  vals[NB] = INFINITY;
  vals[NB + 1] = -INFINITY;
  vals[NB + 2] = NAN;
  const int n = NB + 3;
  st_write_tensor t = {"values", 1, {n}, vals};
  static const enum st_dtype types[3] = {ST_F32, ST_F16, ST_BF16};
  for (int k = 0; k < 3; k++) {
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/values_%s.safetensors", argv[1], st_dtype_name(types[k]));
    if (st_write(path, &t, 1, types[k], "{\"note\":\"roundtrip\"}", err, sizeof err) != 0) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    st_file f;
    if (st_open(&f, path, err, sizeof err) != 0) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    const st_tensor *r = st_find(&f, "values");
    float back[64];
    if (!r || r->numel != n || st_to_f32(r, back) != 0) {
      fprintf(stderr, "%s: tensor missing or wrong\n", path);
      return 1;
    }
    for (int i = 0; i < n; i++) printf("%s %d %.9g\n", st_dtype_name(types[k]), i, (double)back[i]);
    st_close(&f);
  }
  for (int i = 0; i < n; i++) printf("IN %d %.9g\n", i, (double)vals[i]);
  return 0;
}
