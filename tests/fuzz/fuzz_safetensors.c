/* libFuzzer target: the safetensors header parser and dtype conversion on
 * arbitrary bytes. Every accepted tensor must lie inside the buffer, which
 * ASan checks as the conversion reads it. */
#include <stdint.h>
#include <stdlib.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  st_file f;
  char err[256];
  if (st_parse(&f, data, size, "fuzz", err, sizeof err) != 0) return 0;
  for (int i = 0; i < f.count; i++) {
    const st_tensor *t = &f.tensors[i];
    if (t->numel > (1 << 20)) continue;
    float *dst = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    if (dst) st_to_f32(t, dst);
    free(dst);
  }
  st_close(&f);
  return 0;
}
