/* Parity of the C model with the PyTorch reference (tests/reference).
 *
 * usage: test_parity MODEL_DIR GOLDEN_DIR [TOLERANCE]
 *
 * GOLDEN_DIR/golden.json (written by tests/reference/golden.py) holds the
 * reference's L2-normalised image and text embeddings and zero-shot
 * probabilities. We check, each with max |Δ| <= TOLERANCE (default 1e-4):
 *   - image embeddings, the images encoded as one batch and one at a time;
 *   - text embeddings, texts tokenised by our tokenizer (the ids must equal
 *     the HuggingFace ids stored in the golden file) and encoded as a batch;
 *   - zero-shot probabilities with prompt ensembles. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "unimed_model.h"

static int failures = 0;

static double max_abs_diff(const float *a, const cJSON *ref, int n) {
  if (cJSON_GetArraySize(ref) != n) return INFINITY;
  double m = 0;
  int i = 0;
  for (const cJSON *e = ref->child; e; e = e->next, i++) {
    double d = fabs((double)a[i] - e->valuedouble);
    if (!(d <= m)) m = d;
  }
  return m;
}

static void check(const char *what, double delta, double tol) {
  int ok = delta <= tol;
  printf("%-48s max|d| = %.3g  %s\n", what, delta, ok ? "ok" : "FAIL");
  if (!ok) failures++;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: test_parity MODEL_DIR GOLDEN_DIR [TOLERANCE]\n");
    return 2;
  }
  const double tol = argc > 3 ? atof(argv[3]) : 1e-4;
  char err[512], path[2048];
  unimed_model *m = unimed_model_load(argv[1], err, sizeof err);
  if (!m) {
    fprintf(stderr, "load failed: %s\n", err);
    return 1;
  }
  const unimed_config *c = unimed_model_config(m);
  const int E = c->embed_dim, S = c->image_size;
  const size_t per = (size_t)3 * S * S;
  printf("model %s (%s), blas core %s\n", c->name, unimed_model_hash(m), unimed_blas_corename());

  snprintf(path, sizeof path, "%s/golden.json", argv[2]);
  char *text = tu_read_file(path, NULL);
  cJSON *g = text ? cJSON_Parse(text) : NULL;
  free(text);
  if (!g) {
    fprintf(stderr, "%s: missing or not JSON\n", path);
    return 1;
  }
  double ls = cJSON_GetObjectItem(g, "logit_scale")->valuedouble;
  check("logit_scale", fabs(ls - unimed_model_logit_scale(m)), 1e-6);

  /* Images: one batch, then one at a time. */
  const cJSON *images = cJSON_GetObjectItem(g, "images");
  int n_img = cJSON_GetArraySize(images);
  float *pixels = malloc((size_t)n_img * per * sizeof(float));
  float *img_emb = malloc((size_t)n_img * E * sizeof(float));
  float *one = malloc((size_t)E * sizeof(float));
  int i = 0;
  for (const cJSON *im = images->child; im; im = im->next, i++) {
    snprintf(path, sizeof path, "%s/%s", argv[2], cJSON_GetObjectItem(im, "file")->valuestring);
    size_t len = 0;
    char *raw = tu_read_file(path, &len);
    if (!raw || len != per * sizeof(float)) {
      fprintf(stderr, "%s: missing or wrong size\n", path);
      return 1;
    }
    memcpy(pixels + (size_t)i * per, raw, len);
    free(raw);
  }
  if (unimed_encode_images(m, pixels, n_img, img_emb, err, sizeof err) != 0) {
    fprintf(stderr, "encode_images: %s\n", err);
    return 1;
  }
  double worst_batch = 0, worst_single = 0;
  i = 0;
  for (const cJSON *im = images->child; im; im = im->next, i++) {
    const cJSON *ref = cJSON_GetObjectItem(im, "embedding");
    double d = max_abs_diff(img_emb + (size_t)i * E, ref, E);
    worst_batch = d > worst_batch ? d : worst_batch;
    if (unimed_encode_images(m, pixels + (size_t)i * per, 1, one, err, sizeof err) != 0) {
      fprintf(stderr, "encode_images: %s\n", err);
      return 1;
    }
    d = max_abs_diff(one, ref, E);
    worst_single = d > worst_single ? d : worst_single;
  }
  char label[128];
  snprintf(label, sizeof label, "image embeddings, batch of %d", n_img);
  check(label, worst_batch, tol);
  check("image embeddings, one at a time", worst_single, tol);

  /* Texts: our tokenizer must give HF's ids; then embeddings as a batch. */
  const cJSON *texts = cJSON_GetObjectItem(g, "texts");
  int n_txt = cJSON_GetArraySize(texts);
  const char **strs = malloc((size_t)n_txt * sizeof(char *));
  float *txt_emb = malloc((size_t)n_txt * E * sizeof(float));
  int *ids = malloc((size_t)c->text.context_length * sizeof(int));
  int id_mismatch = 0;
  i = 0;
  for (const cJSON *t = texts->child; t; t = t->next, i++) {
    strs[i] = cJSON_GetObjectItem(t, "text")->valuestring;
    const cJSON *ref_ids = cJSON_GetObjectItem(t, "ids");
    int n = unimed_tokenize(m, strs[i], ids, c->text.context_length, err, sizeof err);
    int same = n == cJSON_GetArraySize(ref_ids);
    int k = 0;
    for (const cJSON *e = ref_ids->child; same && e; e = e->next, k++) same = ids[k] == e->valueint;
    if (!same) {
      id_mismatch++;
      printf("token ids differ from HuggingFace for: %.80s\n", strs[i]);
    }
  }
  check("token ids identical to HuggingFace (mismatches)", id_mismatch, 0);
  if (unimed_encode_texts(m, strs, n_txt, txt_emb, err, sizeof err) != 0) {
    fprintf(stderr, "encode_texts: %s\n", err);
    return 1;
  }
  double worst_txt = 0;
  i = 0;
  for (const cJSON *t = texts->child; t; t = t->next, i++) {
    double d = max_abs_diff(txt_emb + (size_t)i * E, cJSON_GetObjectItem(t, "embedding"), E);
    worst_txt = d > worst_txt ? d : worst_txt;
  }
  snprintf(label, sizeof label, "text embeddings, batch of %d", n_txt);
  check(label, worst_txt, tol);

  /* Zero-shot with prompt ensembles. */
  double worst_zs = 0;
  const cJSON *zs = cJSON_GetObjectItem(g, "zero_shot");
  for (const cJSON *z = zs ? zs->child : NULL; z; z = z->next) {
    int img = cJSON_GetObjectItem(z, "image")->valueint;
    const cJSON *classes = cJSON_GetObjectItem(z, "classes");
    int K = cJSON_GetArraySize(classes);
    float *cls = malloc((size_t)K * E * sizeof(float));
    float *probs = malloc((size_t)K * sizeof(float));
    int k = 0;
    for (const cJSON *cl = classes->child; cl; cl = cl->next, k++) {
      int np = cJSON_GetArraySize(cl);
      float *pe = malloc((size_t)np * E * sizeof(float));
      int p = 0;
      for (const cJSON *ti = cl->child; ti; ti = ti->next, p++)
        memcpy(pe + (size_t)p * E, txt_emb + (size_t)ti->valueint * E, (size_t)E * sizeof(float));
      unimed_prompt_ensemble(pe, np, E, cls + (size_t)k * E);
      free(pe);
    }
    unimed_zero_shot(m, img_emb + (size_t)img * E, 1, cls, K, probs);
    double d = max_abs_diff(probs, cJSON_GetObjectItem(z, "probs"), K);
    worst_zs = d > worst_zs ? d : worst_zs;
    free(cls);
    free(probs);
  }
  check("zero-shot probabilities", worst_zs, tol);

  free(pixels);
  free(img_emb);
  free(one);
  free(strs);
  free(txt_emb);
  free(ids);
  cJSON_Delete(g);
  unimed_model_free(m);
  printf("parity: %s\n", failures ? "FAILED" : "all checks within tolerance");
  return failures ? 1 : 0;
}
