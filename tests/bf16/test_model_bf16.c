/* BF16 (or INT8) inference against FP32 (ours) on real images, sample
 * prompts and the shipped label sets.
 *
 * usage: test_model_bf16 MODEL_DIR LABELSET_DIR [options] TENSOR...
 *   --precision P   bf16 (default) or int8: the precision checked against FP32
 *   --prompts FILE  also every line of FILE: text embedding cos >= --min-cos
 *   --min-cos X     every image embedding: cos(BF16, FP32) >= X (0.999)
 *   --min-top1 X    zero-shot top-1 identical on >= X of the (image, label
 *                   set) pairs (0.99)
 *   --bf16-file DIR also load DIR (the same model stored as BF16) in BF16
 *                   mode: image embeddings within --min-cos of FP32 too
 *   --fallback      for a run with UNIMED_SIMD=0: a BF16 (INT8) request must
 *                   load as FP32 and give exactly the FP32 embeddings
 *   --json FILE     write the figures as JSON
 * TENSOR: preprocessed images (raw float32 3×S×S, `unimed preprocess`).
 *
 * Exit 77 (skipped) when the CPU has no avx512_bf16 (INT8: no VNNI), unless
 * --fallback. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unimed_model.h"

static int failures = 0;

static void check(const char *what, int ok) {
  printf("%-60s %s\n", what, ok ? "ok" : "FAIL");
  if (!ok) failures++;
}

static float *read_tensor(const char *path, size_t want) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return NULL;
  float *t = malloc(want * sizeof(float));
  size_t got = t ? fread(t, sizeof(float), want, fp) : 0;
  int extra = fgetc(fp) != EOF;
  fclose(fp);
  if (got != want || extra) {
    free(t);
    return NULL;
  }
  return t;
}

static double cosine(const float *a, const float *b, int n) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < n; i++) {
    ab += (double)a[i] * b[i];
    aa += (double)a[i] * a[i];
    bb += (double)b[i] * b[i];
  }
  return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : (aa == bb ? 1.0 : 0.0);
}

static int argmax(const float *p, int n) {
  int best = 0;
  for (int i = 1; i < n; i++)
    if (p[i] > p[best]) best = i;
  return best;
}

/* Encodes n images in batches of 8. */
static int encode(unimed_model *m, const float *pixels, int n, size_t per, float *out) {
  const int E = unimed_model_config(m)->embed_dim;
  char err[512];
  for (int i = 0; i < n; i += 8) {
    const int b = n - i < 8 ? n - i : 8;
    if (unimed_encode_images(m, pixels + (size_t)i * per, b, out + (size_t)i * E, err,
                             sizeof err) != 0) {
      fprintf(stderr, "encode_images: %s\n", err);
      return -1;
    }
  }
  return 0;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: test_model_bf16 MODEL_DIR LABELSET_DIR [--min-cos X] "
                    "[--min-top1 X] [--bf16-file DIR] [--fallback] [--json FILE] TENSOR...\n");
    return 2;
  }
  const char *model_dir = argv[1], *set_dir = argv[2], *bf16_dir = NULL, *json = NULL;
  const char *prompts = NULL;
  unimed_precision prec = UNIMED_PRECISION_BF16;
  double min_cos = 0.999, min_top1 = 0.99;
  int fallback = 0;
  const char **tensors = calloc((size_t)argc, sizeof *tensors);
  int n_img = 0;
  for (int i = 3; i < argc; i++) {
    if (!strcmp(argv[i], "--min-cos") && i + 1 < argc) min_cos = atof(argv[++i]);
    else if (!strcmp(argv[i], "--min-top1") && i + 1 < argc) min_top1 = atof(argv[++i]);
    else if (!strcmp(argv[i], "--bf16-file") && i + 1 < argc) bf16_dir = argv[++i];
    else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    else if (!strcmp(argv[i], "--fallback")) fallback = 1;
    else if (!strcmp(argv[i], "--prompts") && i + 1 < argc) prompts = argv[++i];
    else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
      if (unimed_precision_parse(argv[++i], &prec) != 0 || prec == UNIMED_PRECISION_FP32) {
        fprintf(stderr, "--precision takes bf16 or int8\n");
        return 2;
      }
    }
    else tensors[n_img++] = argv[i];
  }
  const char *pn = unimed_precision_name(prec);
  if (!fallback && prec == UNIMED_PRECISION_BF16 && !unimed_bf16_supported()) {
    printf("SKIP: this CPU has no avx512_bf16 (or UNIMED_SIMD=0): BF16 requests run as FP32\n");
    return 77;
  }
  if (!fallback && prec == UNIMED_PRECISION_INT8 && !unimed_int8_supported()) {
    printf("SKIP: this CPU has no avx512_vnni / avx_vnni (or UNIMED_SIMD=0): INT8 requests "
           "run as BF16 or FP32\n");
    return 77;
  }
  if (fallback && (unimed_bf16_supported() || unimed_int8_supported())) {
    printf("SKIP: --fallback needs UNIMED_SIMD=0 in the environment\n");
    return 77;
  }
  char err[512];
  unimed_model *f32 = unimed_model_load(model_dir, err, sizeof err);
  if (!f32) {
    fprintf(stderr, "load (fp32): %s\n", err);
    return 1;
  }
  unimed_load_options o = {.precision = prec};
  unimed_model *b16 = unimed_model_load_opts(model_dir, &o, err, sizeof err);
  if (!b16) {
    fprintf(stderr, "load (%s): %s\n", pn, err);
    return 1;
  }
  const unimed_config *c = unimed_model_config(f32);
  const int E = c->embed_dim, S = c->image_size;
  const size_t per = (size_t)3 * S * S;
  printf("model %s (%s): %s requested %s, runs %s; %.1f MB of weights held (fp32: %.1f MB)\n",
         c->name, unimed_model_hash(f32), model_dir, pn,
         unimed_precision_name(unimed_model_precision(b16)),
         unimed_model_owned_bytes(b16) / 1e6, unimed_model_owned_bytes(f32) / 1e6);
  check("requested precision is reported",
        unimed_model_precision_requested(b16) == prec);
  check(fallback ? "request runs as FP32 without the instructions"
                 : "request runs in the precision asked for",
        unimed_model_precision(b16) == (fallback ? UNIMED_PRECISION_FP32 : prec));
  check("same model hash in both precisions",
        !strcmp(unimed_model_hash(f32), unimed_model_hash(b16)));
  if (n_img == 0) {
    fprintf(stderr, "no TENSOR given\n");
    return 1;
  }

  float *pixels = malloc((size_t)n_img * per * sizeof(float));
  for (int i = 0; i < n_img; i++) {
    float *t = read_tensor(tensors[i], per);
    if (!t) {
      fprintf(stderr, "%s: missing or not a 3x%dx%d float32 tensor\n", tensors[i], S, S);
      return 1;
    }
    memcpy(pixels + (size_t)i * per, t, per * sizeof(float));
    free(t);
  }
  float *e32 = malloc((size_t)n_img * E * sizeof(float));
  float *e16 = malloc((size_t)n_img * E * sizeof(float));
  float *one = malloc((size_t)E * sizeof(float));
  if (encode(f32, pixels, n_img, per, e32) || encode(b16, pixels, n_img, per, e16)) return 1;

  /* Image embeddings. */
  double cmin = 1, csum = 0, single = 0;
  for (int i = 0; i < n_img; i++) {
    double cs = cosine(e32 + (size_t)i * E, e16 + (size_t)i * E, E);
    cmin = cs < cmin ? cs : cmin;
    csum += cs;
  }
  for (int i = 0; i < n_img && i < 4; i++) { /* batch of 8 vs one at a time */
    if (unimed_encode_images(b16, pixels + (size_t)i * per, 1, one, err, sizeof err) != 0) {
      fprintf(stderr, "encode_images: %s\n", err);
      return 1;
    }
    for (int d = 0; d < E; d++) {
      double dd = fabs((double)one[d] - e16[(size_t)i * E + d]);
      single = dd > single ? dd : single;
    }
  }
  char line[256];
  snprintf(line, sizeof line, "%d images: cos(%s, fp32) min %.6f mean %.6f", n_img, pn, cmin,
           csum / n_img);
  if (fallback) {
    int same = memcmp(e32, e16, (size_t)n_img * E * sizeof(float)) == 0;
    check(line, same);
    check("  fallback: embeddings identical to FP32", same);
  } else {
    check(line, cmin >= min_cos);
  }
  snprintf(line, sizeof line, "  %s batch of 8 vs one at a time: max|d| %.3g", pn, single);
  check(line, single <= 1e-5);

  /* A second BF16 model object from the same file shares the packed
   * weights; they outlive the first object's release. */
  {
    unimed_model *again = unimed_model_load_opts(model_dir, &o, err, sizeof err);
    if (!again) {
      fprintf(stderr, "load (%s, again): %s\n", pn, err);
      return 1;
    }
    unimed_model_free(b16);
    int same = unimed_encode_images(again, pixels, 1, one, err, sizeof err) == 0;
    /* against the first object's batch result for image 0 */
    double dd = 0;
    for (int k = 0; k < E; k++) {
      double x = fabs((double)one[k] - e16[k]);
      dd = x > dd ? x : dd;
    }
    snprintf(line, sizeof line, "  second %s load (shared weights), first freed: max|d| %.3g",
             pn, dd);
    check(line, same && dd <= 1e-5);
    b16 = again;
  }

  /* Sample prompts: text embeddings. */
  if (prompts) {
    FILE *fp = fopen(prompts, "r");
    if (!fp) {
      fprintf(stderr, "%s: cannot open\n", prompts);
      return 1;
    }
    char text[1024];
    float *t32 = malloc((size_t)E * sizeof(float)), *t16 = malloc((size_t)E * sizeof(float));
    double pmin = 1;
    int np = 0;
    while (fgets(text, sizeof text, fp)) {
      text[strcspn(text, "\r\n")] = 0;
      if (!text[0]) continue;
      const char *one_text[1] = {text};
      if (unimed_encode_texts(f32, one_text, 1, t32, err, sizeof err) != 0 ||
          unimed_encode_texts(b16, one_text, 1, t16, err, sizeof err) != 0) {
        fprintf(stderr, "encode_texts: %s\n", err);
        return 1;
      }
      const double cs = cosine(t32, t16, E);
      pmin = cs < pmin ? cs : pmin;
      np++;
    }
    fclose(fp);
    snprintf(line, sizeof line, "%d prompts of %s: text cos(%s, fp32) min %.6f", np, prompts, pn,
             pmin);
    check(line, np > 0 && (fallback ? pmin == 1.0 : pmin >= min_cos));
    free(t32);
    free(t16);
  }

  /* Label sets: class embeddings and zero-shot top-1. */
  DIR *d = opendir(set_dir);
  if (!d) {
    fprintf(stderr, "%s: cannot open\n", set_dir);
    return 1;
  }
  char **names = NULL;
  int n_sets = 0;
  for (struct dirent *de; (de = readdir(d));) {
    size_t len = strlen(de->d_name);
    if (len > 5 && !strcmp(de->d_name + len - 5, ".json")) {
      names = realloc(names, (size_t)(n_sets + 1) * sizeof *names);
      names[n_sets++] = strdup(de->d_name);
    }
  }
  closedir(d);
  qsort(names, (size_t)n_sets, sizeof *names, cmp_name);
  int pairs = 0, agree = 0, total_labels = 0, agree_img = 0, agree_txt = 0;
  double margin_max = 0;
  double tmin = 1, pmax = 0;
  FILE *js = json ? fopen(json, "w") : NULL;
  if (js)
    fprintf(js, "{\"model\": \"%s\", \"images\": %d, \"cos_min\": %.8f, \"cos_mean\": %.8f, "
                "\"label_sets\": [",
            c->name, n_img, cmin, csum / n_img);
  for (int s = 0; s < n_sets; s++) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", set_dir, names[s]);
    unimed_label_set *ls = unimed_label_set_load(path, err, sizeof err);
    if (!ls) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    unimed_label_embeddings l32, l16;
    if (unimed_label_set_embed(f32, ls, NULL, &l32, err, sizeof err) != 0 ||
        unimed_label_set_embed(b16, ls, NULL, &l16, err, sizeof err) != 0) {
      fprintf(stderr, "%s: %s\n", path, err);
      return 1;
    }
    const int L = ls->n_labels;
    total_labels += L;
    double smin = 1;
    for (int k = 0; k < L; k++) {
      double cs = cosine(l32.positive + (size_t)k * E, l16.positive + (size_t)k * E, E);
      smin = cs < smin ? cs : smin;
      if (l32.negative) {
        cs = cosine(l32.negative + (size_t)k * E, l16.negative + (size_t)k * E, E);
        smin = cs < smin ? cs : smin;
      }
    }
    tmin = smin < tmin ? smin : tmin;
    float *p32 = malloc((size_t)L * sizeof(float)), *p16 = malloc((size_t)L * sizeof(float));
    float *pm = malloc((size_t)L * sizeof(float));
    int set_agree = 0;
    double set_pmax = 0;
    for (int i = 0; i < n_img; i++) {
      unimed_label_set_score(f32, ls, &l32, e32 + (size_t)i * E, p32);
      unimed_label_set_score(b16, ls, &l16, e16 + (size_t)i * E, p16);
      const int a32 = argmax(p32, L), a16 = argmax(p16, L);
      set_agree += a32 == a16;
      /* which tower moved it: BF16 image with FP32 classes, and the reverse */
      unimed_label_set_score(f32, ls, &l32, e16 + (size_t)i * E, pm);
      agree_img += argmax(pm, L) == a32;
      unimed_label_set_score(f32, ls, &l16, e32 + (size_t)i * E, pm);
      agree_txt += argmax(pm, L) == a32;
      if (a32 != a16) {
        /* the FP32 margin between its top-1 and the label BF16 picked */
        double mg = (double)p32[a32] - p32[a16];
        margin_max = mg > margin_max ? mg : margin_max;
      }
      for (int k = 0; k < L; k++) {
        double dp = fabs((double)p32[k] - p16[k]);
        set_pmax = dp > set_pmax ? dp : set_pmax;
      }
    }
    pmax = set_pmax > pmax ? set_pmax : pmax;
    printf("  %-34s %2d labels (%s): top-1 same %d/%d, class cos min %.6f, max|dp| %.2g\n",
           names[s], L, ls->scoring == UNIMED_SCORING_BINARY ? "binary" : "softmax", set_agree,
           n_img, smin, set_pmax);
    if (js)
      fprintf(js, "%s{\"file\": \"%s\", \"labels\": %d, \"top1_same\": %d, \"images\": %d, "
                  "\"class_cos_min\": %.8f, \"prob_max_abs_diff\": %.3g}",
              s ? ", " : "", names[s], L, set_agree, n_img, smin, set_pmax);
    pairs += n_img;
    agree += set_agree;
    free(p32);
    free(p16);
    free(pm);
    unimed_label_embeddings_free(&l32);
    unimed_label_embeddings_free(&l16);
    unimed_label_set_free(ls);
    free(names[s]);
  }
  free(names);
  snprintf(line, sizeof line, "%d label sets (%d labels): class embeddings cos min %.6f",
           n_sets, total_labels, tmin);
  check(line, fallback ? tmin == 1.0 : tmin >= min_cos);
  snprintf(line, sizeof line, "zero-shot top-1 identical on %d/%d (%.2f%%), max|dp| %.3g", agree,
           pairs, 100.0 * agree / (pairs ? pairs : 1), pmax);
  check(line, pairs > 0 && agree >= min_top1 * pairs);
  printf("  %s image + FP32 classes: %d/%d same; FP32 image + %s classes: %d/%d same;\n"
         "  where top-1 differs, FP32 put the %s pick at most %.3g below its top-1\n",
         pn, agree_img, pairs, pn, agree_txt, pairs, pn, margin_max);
  if (js)
    fprintf(js, "], \"class_cos_min\": %.8f, \"top1_same\": %d, \"pairs\": %d, "
                "\"top1_same_bf16_image_only\": %d, \"top1_same_bf16_text_only\": %d, "
                "\"flip_margin_max\": %.3g}\n",
            tmin, agree, pairs, agree_img, agree_txt, margin_max);

  /* The same model stored as BF16. */
  if (bf16_dir) {
    unimed_model *bf = unimed_model_load_opts(bf16_dir, &o, err, sizeof err);
    if (!bf) {
      fprintf(stderr, "load %s (bf16): %s\n", bf16_dir, err);
      return 1;
    }
    if (encode(bf, pixels, n_img, per, e16) != 0) return 1;
    double fmin = 1;
    for (int i = 0; i < n_img; i++) {
      double cs = cosine(e32 + (size_t)i * E, e16 + (size_t)i * E, E);
      fmin = cs < fmin ? cs : fmin;
    }
    const char *texts[1] = {"a chest x-ray with a left pleural effusion"};
    float *t32 = malloc((size_t)E * sizeof(float)), *t16 = malloc((size_t)E * sizeof(float));
    if (unimed_encode_texts(f32, texts, 1, t32, err, sizeof err) != 0 ||
        unimed_encode_texts(bf, texts, 1, t16, err, sizeof err) != 0) {
      fprintf(stderr, "encode_texts: %s\n", err);
      return 1;
    }
    snprintf(line, sizeof line, "BF16 file %s: %.1f MB held; images cos min %.6f, text cos %.6f",
             bf16_dir, unimed_model_owned_bytes(bf) / 1e6, fmin, cosine(t32, t16, E));
    check(line, fmin >= min_cos && cosine(t32, t16, E) >= min_cos);
    free(t32);
    free(t16);
    unimed_model_free(bf);
  }
  if (js) fclose(js);
  free(pixels);
  free(e32);
  free(e16);
  free(one);
  free(tensors);
  unimed_model_free(f32);
  unimed_model_free(b16);
  printf("%s\n", failures ? "FAILED" : "all ok");
  return failures ? 1 : 0;
}
