/* umt_clip_loss (model/train_loss.c) against PyTorch (tests/reference/
 * loss_ref.py, float64 autograd): the loss and its gradients with respect to
 * the image and text embeddings and logit_scale, with plain CLIP targets and
 * with label-aware (grouped) targets.
 *
 *   test_loss CASES.json
 *
 * Tolerances: loss 1e-6 absolute; gradients 1e-5 relative to the largest
 * magnitude of each reference gradient (C sums in double, stores float). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"
#include "train.h"

static int failures = 0;

static void check(const char *what, int c, double v, double tol) {
  int ok = v <= tol;
  printf("%s case %d: %-34s %.3g (tolerance %.0e)\n", ok ? "ok  " : "FAIL", c, what, v, tol);
  if (!ok) failures++;
}

static float *floats(const cJSON *arr, int n) {
  if (cJSON_GetArraySize(arr) != n) return NULL;
  float *v = malloc((size_t)n * sizeof(float));
  int i = 0;
  for (const cJSON *e = arr->child; v && e; e = e->next) v[i++] = (float)e->valuedouble;
  return v;
}

/* max |a - ref| / max |ref| */
static double rel_err(const float *a, const cJSON *ref, int n) {
  double worst = 0, scale = 0;
  int i = 0;
  for (const cJSON *e = ref->child; e && i < n; e = e->next, i++) {
    worst = fmax(worst, fabs(a[i] - e->valuedouble));
    scale = fmax(scale, fabs(e->valuedouble));
  }
  return i == n ? worst / (scale > 0 ? scale : 1) : INFINITY;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_loss CASES.json\n");
    return 2;
  }
  char *text = tu_read_file(argv[1], NULL);
  cJSON *J = text ? cJSON_Parse(text) : NULL;
  free(text);
  const cJSON *cases = cJSON_GetObjectItem(J, "cases");
  if (!cJSON_IsArray(cases) || cJSON_GetArraySize(cases) == 0) {
    fprintf(stderr, "test_loss: %s: no cases (run tests/reference/loss_ref.py)\n", argv[1]);
    return 1;
  }
  int c = 0;
  for (const cJSON *k = cases->child; k; k = k->next, c++) {
    const int B = cJSON_GetObjectItem(k, "B")->valueint, E = cJSON_GetObjectItem(k, "E")->valueint;
    float *img = floats(cJSON_GetObjectItem(k, "img"), B * E);
    float *txt = floats(cJSON_GetObjectItem(k, "txt"), B * E);
    float *d_img = malloc((size_t)B * E * sizeof(float)), *d_txt = malloc((size_t)B * E * sizeof(float));
    float *img_n = malloc((size_t)B * E * sizeof(float)), *txt_n = malloc((size_t)B * E * sizeof(float));
    float *logits = malloc((size_t)B * B * sizeof(float));
    uint64_t *groups = NULL;
    const cJSON *g = cJSON_GetObjectItem(k, "groups");
    if (cJSON_IsArray(g)) {
      groups = calloc((size_t)B, sizeof(uint64_t));
      int i = 0;
      for (const cJSON *e = g->child; groups && e && i < B; e = e->next) groups[i++] = (uint64_t)e->valueint;
    }
    if (!img || !txt || !d_img || !d_txt || !img_n || !txt_n || !logits || (cJSON_IsArray(g) && !groups)) {
      fprintf(stderr, "test_loss: case %d: malformed or out of memory\n", c);
      return 1;
    }
    const float scale = (float)cJSON_GetObjectItem(k, "logit_scale")->valuedouble;
    float d_scale = 0.5f; /* the loss adds to it */
    double loss = umt_clip_loss(img, txt, B, E, groups, scale, d_img, d_txt, &d_scale, img_n,
                                txt_n, logits);
    printf("case %d: B=%d, %s, loss %.6f (torch %.6f)\n", c, B, groups ? "grouped targets" : "plain targets",
           loss, cJSON_GetObjectItem(k, "loss")->valuedouble);
    check("loss |d|", c, fabs(loss - cJSON_GetObjectItem(k, "loss")->valuedouble), 1e-6);
    check("d img, max |d| / max |ref|", c, rel_err(d_img, cJSON_GetObjectItem(k, "d_img"), B * E), 1e-5);
    check("d txt, max |d| / max |ref|", c, rel_err(d_txt, cJSON_GetObjectItem(k, "d_txt"), B * E), 1e-5);
    const double ref_ds = cJSON_GetObjectItem(k, "d_logit_scale")->valuedouble;
    check("d logit_scale |d| / max(1, |ref|)", c, fabs(d_scale - 0.5 - ref_ds) / fmax(1, fabs(ref_ds)), 1e-5);
    free(img), free(txt), free(d_img), free(d_txt), free(img_n), free(txt_n), free(logits), free(groups);
  }
  cJSON_Delete(J);
  printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
