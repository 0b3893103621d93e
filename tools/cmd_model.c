/* Model subcommands of `unimed`: info, tokenize, embed-text, embed-image
 * (tensor input), zero-shot, bench. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "unimed_model.h"
#ifdef UNIMED_HAVE_DICOM
#include "dicom_input.h"
#endif

typedef struct {
  const char *model;
  const char **tensors;
  int n_tensors;
  const char **prompts;
  int n_prompts;
  const char **classes;
  int n_classes;
  const char **args; /* positional */
  int n_args;
  int runs, threads, max_slices;
  unimed_precision precision;
} options;

/* Options a command accepts: a string of letters, m=--model t=--tensor
 * p=--prompt c=--class r=--runs j=--threads s=--max-slices a=positional.
 * --precision fp32|bf16|int8 goes with --model. */
static int parse(int argc, char **argv, const char *accepts, options *o,
                 void (*help)(FILE *)) {
  memset(o, 0, sizeof *o);
  o->tensors = calloc((size_t)argc, sizeof(char *));
  o->prompts = calloc((size_t)argc, sizeof(char *));
  o->classes = calloc((size_t)argc, sizeof(char *));
  o->args = calloc((size_t)argc, sizeof(char *));
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (cli_is_help(a)) {
      help(stdout);
      return 1;
    }
#define TAKES(letter, flag) (strchr(accepts, letter) && strcmp(a, flag) == 0)
    if (TAKES('m', "--model") && v) {
      o->model = v, i++;
    } else if (TAKES('t', "--tensor") && v) {
      o->tensors[o->n_tensors++] = v, i++;
    } else if (TAKES('p', "--prompt") && v) {
      o->prompts[o->n_prompts++] = v, i++;
    } else if (TAKES('c', "--class") && v) {
      o->classes[o->n_classes++] = v, i++;
    } else if (TAKES('r', "--runs") && v) {
      if ((o->runs = cli_parse_positive(a, v)) < 0) return 2;
      i++;
    } else if (TAKES('s', "--max-slices") && v) {
      if ((o->max_slices = cli_parse_positive(a, v)) < 0) return 2;
      i++;
    } else if (TAKES('m', "--precision") && v) {
      if (unimed_precision_parse(v, &o->precision) != 0) {
        fprintf(stderr, "unimed: --precision takes fp32, bf16 or int8, got '%s'\n", v);
        return 2;
      }
      i++;
    } else if (TAKES('j', "--threads") && v) {
      if ((o->threads = cli_parse_positive(a, v)) < 0) return 2;
      i++;
    } else if (strncmp(a, "--", 2) == 0 || !strchr(accepts, 'a')) {
      fprintf(stderr, "unimed: %s '%s'\n\n", v || strncmp(a, "--", 2) ? "unknown option" : "missing value for", a);
      help(stderr);
      return 2;
    } else {
      o->args[o->n_args++] = a;
    }
#undef TAKES
  }
  if (strchr(accepts, 'm') && !o->model) {
    fprintf(stderr, "unimed: --model DIR is required\n\n");
    help(stderr);
    return 2;
  }
  return 0;
}

static void free_options(options *o) {
  free(o->tensors);
  free(o->prompts);
  free(o->classes);
  free(o->args);
}

static unimed_model *load(const options *o) {
  char err[512];
  if (o->threads) unimed_set_threads(o->threads);
  const unimed_load_options lo = {.precision = o->precision};
  unimed_model *m = unimed_model_load_opts(o->model, &lo, err, sizeof err);
  if (!m) fprintf(stderr, "unimed: %s\n", err);
  return m;
}

/* Reads a raw float32 3×S×S tensor, checking its size. */
static float *read_tensor(const char *path, int S) {
  size_t len = 0;
  float *t = cli_read_file(path, &len);
  if (!t) return NULL;
  size_t want = (size_t)3 * S * S * sizeof(float);
  if (len != want) {
    fprintf(stderr,
            "unimed: %s: %zu bytes, but the model takes a float32 3x%dx%d tensor (%zu bytes)\n",
            path, len, S, S, want);
    free(t);
    return NULL;
  }
  for (size_t i = 0; i < want / sizeof(float); i++)
    if (!isfinite(t[i])) {
      fprintf(stderr, "unimed: %s: value %zu is not a finite number\n", path, i);
      free(t);
      return NULL;
    }
  return t;
}

/* "precision": what runs; "precision_requested", "bf16_cpu", "int8_cpu",
 * "weights_held_mb" (packed or converted weights besides the mapped file). */
static void add_precision(cJSON *j, const unimed_model *m) {
  cJSON_AddStringToObject(j, "precision", unimed_precision_name(unimed_model_precision(m)));
  cJSON_AddStringToObject(j, "precision_requested",
                          unimed_precision_name(unimed_model_precision_requested(m)));
  cJSON_AddBoolToObject(j, "bf16_cpu", unimed_bf16_supported());
  cJSON_AddBoolToObject(j, "int8_cpu", unimed_int8_supported());
  cJSON_AddNumberToObject(j, "weights_held_mb",
                          round(unimed_model_owned_bytes(m) / 1e5) / 10);
}

/* ---- info ---- */

static void help_info(FILE *out) {
  fprintf(out, "usage: unimed info --model DIR [--precision fp32|bf16|int8]\n\n"
               "Prints the model's identity, architecture and preprocessing as JSON, and\n"
               "the precision that runs (\"bf16\" needs avx512_bf16; else it runs fp32;\n"
               "\"int8\" needs avx512_vnni or avx_vnni; else it runs bf16 or fp32).\n");
}

int cmd_info(int argc, char **argv) {
  options o;
  int rc = parse(argc, argv, "mj", &o, help_info);
  if (rc) {
    free_options(&o);
    return rc == 1 ? 0 : rc;
  }
  unimed_model *m = load(&o);
  free_options(&o);
  if (!m) return 1;
  const unimed_config *c = unimed_model_config(m);
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "name", c->name);
  cJSON_AddStringToObject(j, "version", c->version);
  cJSON_AddStringToObject(j, "hash", unimed_model_hash(m));
  cJSON_AddNumberToObject(j, "embed_dim", c->embed_dim);
  cJSON_AddNumberToObject(j, "logit_scale", unimed_model_logit_scale(m));
  cJSON *v = cJSON_AddObjectToObject(j, "vision");
  cJSON_AddNumberToObject(v, "image_size", c->vision.image_size);
  cJSON_AddNumberToObject(v, "patch_size", c->vision.patch_size);
  cJSON_AddNumberToObject(v, "width", c->vision.width);
  cJSON_AddNumberToObject(v, "layers", c->vision.layers);
  cJSON_AddNumberToObject(v, "heads", c->vision.heads);
  cJSON_AddNumberToObject(v, "mlp_ratio", c->vision.mlp_ratio);
  cJSON_AddStringToObject(v, "activation",
                          c->vision.activation == UNIMED_ACT_QUICK_GELU ? "quick_gelu" : "gelu");
  cJSON *t = cJSON_AddObjectToObject(j, "text");
  cJSON_AddNumberToObject(t, "vocab_size", c->text.vocab_size);
  cJSON_AddNumberToObject(t, "hidden_size", c->text.hidden_size);
  cJSON_AddNumberToObject(t, "layers", c->text.layers);
  cJSON_AddNumberToObject(t, "heads", c->text.heads);
  cJSON_AddNumberToObject(t, "intermediate_size", c->text.intermediate_size);
  cJSON_AddNumberToObject(t, "context_length", c->text.context_length);
  static const char *const projs[] = {"mlp", "linear", "none"};
  cJSON_AddStringToObject(t, "projection", projs[c->text.projection]);
  cJSON *p = cJSON_AddObjectToObject(j, "preprocessing");
  cJSON_AddItemToObject(p, "mean", cli_float_array(c->mean, 3));
  cJSON_AddItemToObject(p, "std", cli_float_array(c->std, 3));
  cJSON_AddNumberToObject(p, "size", c->image_size);
  cJSON_AddStringToObject(j, "blas_core", unimed_blas_corename());
  add_precision(j, m);
  cli_print_json(j);
  unimed_model_free(m);
  return 0;
}

/* ---- tokenize ---- */

static void help_tokenize(FILE *out) {
  fprintf(out, "usage: unimed tokenize --model DIR TEXT...\n\n"
               "Cleans and tokenises each TEXT as the text tower sees it (UniMed's cleaning,\n"
               "uncased WordPiece, [CLS] ... [SEP], truncated to the context length).\n"
               "Prints {\"text\": ..., \"ids\": [...]} per text.\n");
}

int cmd_tokenize(int argc, char **argv) {
  options o;
  int rc = parse(argc, argv, "ma", &o, help_tokenize);
  if (rc || o.n_args == 0) {
    if (!rc) {
      fprintf(stderr, "unimed: tokenize needs at least one TEXT\n\n");
      help_tokenize(stderr);
    }
    free_options(&o);
    return rc == 1 ? 0 : 2;
  }
  unimed_model *m = load(&o);
  if (!m) {
    free_options(&o);
    return 1;
  }
  const int ctx = unimed_model_config(m)->text.context_length;
  int *ids = malloc((size_t)ctx * sizeof(int));
  char err[512];
  for (int i = 0; i < o.n_args && rc == 0; i++) {
    int n = unimed_tokenize(m, o.args[i], ids, ctx, err, sizeof err);
    if (n < 0) {
      fprintf(stderr, "unimed: text %d: %s\n", i + 1, err);
      rc = 1;
      break;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "text", o.args[i]);
    cJSON_AddItemToObject(j, "ids", cJSON_CreateIntArray(ids, n));
    cli_print_json(j);
  }
  free(ids);
  free_options(&o);
  unimed_model_free(m);
  return rc;
}

/* ---- embed-text ---- */

static void help_embed_text(FILE *out) {
  fprintf(out, "usage: unimed embed-text --model DIR [--precision fp32|bf16|int8] [--threads N] TEXT...\n\n"
               "Prints {\"text\": ..., \"embedding\": [...]} per text (L2-normalised).\n");
}

int cmd_embed_text(int argc, char **argv) {
  options o;
  int rc = parse(argc, argv, "maj", &o, help_embed_text);
  if (rc || o.n_args == 0) {
    if (!rc) {
      fprintf(stderr, "unimed: embed-text needs at least one TEXT\n\n");
      help_embed_text(stderr);
    }
    free_options(&o);
    return rc == 1 ? 0 : 2;
  }
  unimed_model *m = load(&o);
  if (!m) {
    free_options(&o);
    return 1;
  }
  const int E = unimed_model_config(m)->embed_dim;
  float *emb = malloc((size_t)o.n_args * E * sizeof(float));
  char err[512];
  if (unimed_encode_texts(m, o.args, o.n_args, emb, err, sizeof err) != 0) {
    fprintf(stderr, "unimed: %s\n", err);
    rc = 1;
  } else {
    for (int i = 0; i < o.n_args; i++) {
      cJSON *j = cJSON_CreateObject();
      cJSON_AddStringToObject(j, "text", o.args[i]);
      cJSON_AddItemToObject(j, "embedding", cli_float_array(emb + (size_t)i * E, E));
      cli_print_json(j);
    }
  }
  free(emb);
  free_options(&o);
  unimed_model_free(m);
  return rc;
}

/* ---- embed-image (tensor input) ---- */

static void help_embed_image(FILE *out) {
  fprintf(out,
          "usage: unimed embed-image --model DIR [--precision fp32|bf16|int8] [--threads N]\n"
          "                          [--max-slices K] PATH...\n"
          "       unimed embed-image --model DIR [--precision fp32|bf16|int8] [--threads N]\n"
          "                          --tensor FILE [--tensor FILE]...\n\n"
          "PATH: DICOM files or folders (a folder = the studies and series under it).\n"
          "Each image series gets one line: its frames ordered along the slice normal,\n"
          "K of them (default 8) picked evenly, preprocessed, encoded as one batch, and\n"
          "the mean of their normalised embeddings renormalised:\n"
          "{\"study\": UID, \"series\": UID, \"modality\": ..., \"frames_used\": [...], \"embedding\": [...]}\n\n"
          "FILE: a preprocessed image, raw little-endian float32, 3 x S x S, channel-major,\n"
          "normalised with the model's mean and std (S = the model's image size; see\n"
          "'unimed info' and 'unimed preprocess'). Tensors are encoded as one batch;\n"
          "one line {\"input\": FILE, \"embedding\": [...]} each.\n");
}

#ifdef UNIMED_HAVE_DICOM
static int print_series(const series_embedding *s, void *ctx) {
  const unimed_model *m = ctx;
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "study", s->series->study_uid);
  cJSON_AddStringToObject(j, "series", s->series->series_uid);
  cJSON_AddStringToObject(j, "modality", s->series->modality);
  cJSON *frames = cJSON_AddArrayToObject(j, "frames_used");
  for (int i = 0; i < s->n_frames; i++) {
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "sop_instance",
                            s->series->instances[s->frames[i].instance].info.sop_instance_uid);
    cJSON_AddNumberToObject(f, "frame", s->frames[i].frame);
    cJSON_AddItemToArray(frames, f);
  }
  int E = unimed_model_config(m)->embed_dim;
  cJSON_AddItemToObject(j, "embedding", cli_float_array(s->embedding, E));
  cli_print_json(j);
  return 0;
}
#endif

int cmd_embed_image(int argc, char **argv) {
  options o;
  int rc = parse(argc, argv, "mtjsa", &o, help_embed_image);
  if (rc || (o.n_tensors == 0) == (o.n_args == 0)) {
    if (!rc) {
      fprintf(stderr, "unimed: embed-image needs DICOM PATHs or --tensor FILEs (not both)\n\n");
      help_embed_image(stderr);
    }
    free_options(&o);
    return rc == 1 ? 0 : 2;
  }
  unimed_model *m = load(&o);
  if (!m) {
    free_options(&o);
    return 1;
  }
  if (o.n_args > 0) {
#ifdef UNIMED_HAVE_DICOM
    rc = dicom_embed_series(m, o.args, o.n_args, o.max_slices ? o.max_slices : 8, print_series, m);
#else
    fprintf(stderr, "unimed: this build has no DICOM support\n");
    rc = 1;
#endif
    free_options(&o);
    unimed_model_free(m);
    return rc;
  }
  const unimed_config *c = unimed_model_config(m);
  const size_t per = (size_t)3 * c->image_size * c->image_size;
  float *pixels = malloc((size_t)o.n_tensors * per * sizeof(float));
  float *emb = malloc((size_t)o.n_tensors * c->embed_dim * sizeof(float));
  for (int i = 0; i < o.n_tensors && rc == 0; i++) {
    float *t = read_tensor(o.tensors[i], c->image_size);
    if (!t) {
      rc = 1;
      break;
    }
    memcpy(pixels + i * per, t, per * sizeof(float));
    free(t);
  }
  char err[512];
  if (rc == 0 && unimed_encode_images(m, pixels, o.n_tensors, emb, err, sizeof err) != 0) {
    fprintf(stderr, "unimed: %s\n", err);
    rc = 1;
  }
  for (int i = 0; rc == 0 && i < o.n_tensors; i++) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "input", o.tensors[i]);
    cJSON_AddItemToObject(j, "embedding", cli_float_array(emb + (size_t)i * c->embed_dim, c->embed_dim));
    cli_print_json(j);
  }
  free(pixels);
  free(emb);
  free_options(&o);
  unimed_model_free(m);
  return rc;
}

/* ---- zero-shot ---- */

static void help_zero_shot(FILE *out) {
  fprintf(out,
          "usage: unimed zero-shot --model DIR [--precision fp32|bf16|int8] --tensor FILE [--tensor FILE]...\n"
          "                        (--prompt TEXT | --class 'NAME=PROMPT|PROMPT...')...\n\n"
          "Scores each image against the classes: a --prompt is a class of one prompt;\n"
          "a --class averages its prompts' normalised embeddings (prompt ensemble).\n"
          "probability = softmax(exp(logit_scale) * cosine). Prints per tensor\n"
          "{\"input\": FILE, \"probabilities\": [{\"label\": ..., \"probability\": p}...]}.\n");
}

typedef struct {
  char *label;
  char **prompts;
  int n;
} zs_class;

/* "NAME=a|b|c" -> label NAME, prompts a, b, c. */
static int parse_class(const char *spec, zs_class *c) {
  const char *eq = strchr(spec, '=');
  if (!eq || eq == spec || !eq[1]) {
    fprintf(stderr, "unimed: --class '%s': expected NAME=PROMPT|PROMPT...\n", spec);
    return -1;
  }
  c->label = strndup(spec, (size_t)(eq - spec));
  c->prompts = calloc(strlen(eq) + 1, sizeof(char *));
  c->n = 0;
  const char *s = eq + 1;
  for (;;) {
    const char *bar = strchr(s, '|');
    size_t len = bar ? (size_t)(bar - s) : strlen(s);
    if (len == 0) {
      fprintf(stderr, "unimed: --class '%s': empty prompt\n", spec);
      return -1;
    }
    c->prompts[c->n++] = strndup(s, len);
    if (!bar) break;
    s = bar + 1;
  }
  return 0;
}

int cmd_zero_shot(int argc, char **argv) {
  options o;
  int rc = parse(argc, argv, "mtpcj", &o, help_zero_shot);
  if (rc || o.n_tensors == 0 || o.n_prompts + o.n_classes < 1) {
    if (!rc) {
      fprintf(stderr, "unimed: zero-shot needs --tensor and at least one --prompt or --class\n\n");
      help_zero_shot(stderr);
    }
    free_options(&o);
    return rc == 1 ? 0 : 2;
  }
  int K = o.n_prompts + o.n_classes;
  zs_class *classes = calloc((size_t)K, sizeof *classes);
  for (int i = 0; i < o.n_prompts; i++) {
    classes[i].label = strdup(o.prompts[i]);
    classes[i].prompts = calloc(1, sizeof(char *));
    classes[i].prompts[0] = strdup(o.prompts[i]);
    classes[i].n = 1;
  }
  for (int i = 0; i < o.n_classes && rc == 0; i++)
    if (parse_class(o.classes[i], &classes[o.n_prompts + i]) != 0) rc = 2;
  unimed_model *m = rc ? NULL : load(&o);
  if (!rc && !m) rc = 1;
  float *class_emb = NULL, *pixels = NULL, *img = NULL, *probs = NULL;
  char err[512];
  if (!rc) {
    const unimed_config *c = unimed_model_config(m);
    const int E = c->embed_dim;
    const size_t per = (size_t)3 * c->image_size * c->image_size;
    class_emb = malloc((size_t)K * E * sizeof(float));
    for (int k = 0; k < K && !rc; k++) {
      float *pe = malloc((size_t)classes[k].n * E * sizeof(float));
      if (unimed_encode_texts(m, (const char *const *)classes[k].prompts, classes[k].n, pe, err,
                              sizeof err) != 0) {
        fprintf(stderr, "unimed: class '%s': %s\n", classes[k].label, err);
        rc = 1;
      } else {
        unimed_prompt_ensemble(pe, classes[k].n, E, class_emb + (size_t)k * E);
      }
      free(pe);
    }
    pixels = malloc((size_t)o.n_tensors * per * sizeof(float));
    for (int i = 0; i < o.n_tensors && !rc; i++) {
      float *t = read_tensor(o.tensors[i], c->image_size);
      if (!t) {
        rc = 1;
        break;
      }
      memcpy(pixels + i * per, t, per * sizeof(float));
      free(t);
    }
    img = malloc((size_t)o.n_tensors * E * sizeof(float));
    probs = malloc((size_t)o.n_tensors * K * sizeof(float));
    if (!rc && unimed_encode_images(m, pixels, o.n_tensors, img, err, sizeof err) != 0) {
      fprintf(stderr, "unimed: %s\n", err);
      rc = 1;
    }
    if (!rc) {
      unimed_zero_shot(m, img, o.n_tensors, class_emb, K, probs);
      for (int i = 0; i < o.n_tensors; i++) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "input", o.tensors[i]);
        cJSON *arr = cJSON_AddArrayToObject(j, "probabilities");
        for (int k = 0; k < K; k++) {
          cJSON *e = cJSON_CreateObject();
          cJSON_AddStringToObject(e, "label", classes[k].label);
          char buf[32];
          snprintf(buf, sizeof buf, "%.9g", (double)probs[(size_t)i * K + k]);
          cJSON_AddRawToObject(e, "probability", buf);
          cJSON_AddItemToArray(arr, e);
        }
        cli_print_json(j);
      }
    }
  }
  for (int k = 0; k < K; k++) {
    for (int p = 0; p < classes[k].n; p++) free(classes[k].prompts[p]);
    free(classes[k].prompts);
    free(classes[k].label);
  }
  free(classes);
  free(class_emb);
  free(pixels);
  free(img);
  free(probs);
  free_options(&o);
  unimed_model_free(m);
  return rc;
}

/* ---- bench ---- */

static void help_bench(FILE *out) {
  fprintf(out,
          "usage: unimed bench --model DIR [--precision fp32|bf16|int8] [--runs N] [--threads N]\n\n"
          "Times the image tower at batch 1 and 8 and the text tower on a 16-token\n"
          "prompt, then on 32 such prompts encoded in one call (as a label set's\n"
          "embeddings are built), after one warm-up run each. Prints min/median/max\n"
          "milliseconds per image and per prompt (ms_per_prompt_batch32: the batch's\n"
          "time / 32), the precision that ran and the OpenBLAS kernel.\n");
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static cJSON *stats(double *ms, int n) {
  qsort(ms, (size_t)n, sizeof *ms, cmp_double);
  cJSON *s = cJSON_CreateObject();
  cJSON_AddNumberToObject(s, "min", round(ms[0] * 1000) / 1000);
  cJSON_AddNumberToObject(s, "median", round(ms[n / 2] * 1000) / 1000);
  cJSON_AddNumberToObject(s, "max", round(ms[n - 1] * 1000) / 1000);
  return s;
}

int cmd_bench(int argc, char **argv) {
  options o;
  int rc = parse(argc, argv, "mrj", &o, help_bench);
  if (rc) {
    free_options(&o);
    return rc == 1 ? 0 : rc;
  }
  int runs = o.runs ? o.runs : 5;
  unimed_model *m = load(&o);
  if (!m) {
    free_options(&o);
    return 1;
  }
  const unimed_config *c = unimed_model_config(m);
  const size_t per = (size_t)3 * c->image_size * c->image_size;
  float *pixels = malloc(8 * per * sizeof(float));
  float *emb = malloc(8 * (size_t)c->embed_dim * sizeof(float));
  unsigned s = 12345;
  for (size_t i = 0; i < 8 * per; i++) {
    s = s * 1103515245u + 12345u;
    pixels[i] = ((float)(s >> 8) / 16777216.0f) * 4.0f - 2.0f;
  }
  double *ms = malloc((size_t)runs * sizeof(double));
  char err[512];
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, "model", c->name);
  cJSON_AddStringToObject(j, "blas_core", unimed_blas_corename());
  add_precision(j, m);
  cJSON_AddNumberToObject(j, "runs", runs);
  static const int batches[2] = {1, 8};
  for (int bi = 0; bi < 2 && rc == 0; bi++) {
    int B = batches[bi];
    for (int r = -1; r < runs && rc == 0; r++) {
      double t0 = cli_now_ms();
      if (unimed_encode_images(m, pixels, B, emb, err, sizeof err) != 0) rc = 1;
      if (r >= 0) ms[r] = (cli_now_ms() - t0) / B;
    }
    if (rc == 0)
      cJSON_AddItemToObject(j, B == 1 ? "ms_per_image_batch1" : "ms_per_image_batch8",
                            stats(ms, runs));
  }
  /* A 16-token prompt: [CLS] + 14 ids + [SEP], built from the vocabulary. */
  int ids[16];
  const char *prompt = "a chest x-ray showing a small left pleural effusion and mild cardiomegaly";
  int n = unimed_tokenize(m, prompt, ids, 16, err, sizeof err);
  if (rc == 0 && n < 2) {
    fprintf(stderr, "unimed: %s\n", err);
    rc = 1;
  }
  const int *rows[1] = {ids};
  for (int r = -1; r < runs && rc == 0; r++) {
    double t0 = cli_now_ms();
    if (unimed_encode_token_ids(m, rows, &n, 1, emb, err, sizeof err) != 0) rc = 1;
    if (r >= 0) ms[r] = cli_now_ms() - t0;
  }
  if (rc == 0) {
    cJSON_AddNumberToObject(j, "prompt_tokens", n);
    cJSON_AddItemToObject(j, "ms_per_prompt", stats(ms, runs));
  }
  /* 32 prompts of the same length in one call: the prompt's inner ids
   * rotated by p for prompt p, so that the rows differ. */
  enum { BATCH_PROMPTS = 32 };
  int batch_ids[BATCH_PROMPTS][16], batch_lens[BATCH_PROMPTS];
  const int *batch_rows[BATCH_PROMPTS];
  for (int p = 0; p < BATCH_PROMPTS && rc == 0; p++) {
    const int inner = n - 2;
    batch_ids[p][0] = ids[0];
    batch_ids[p][n - 1] = ids[n - 1];
    for (int t = 0; t < inner; t++) batch_ids[p][1 + t] = ids[1 + (t + p) % inner];
    batch_lens[p] = n;
    batch_rows[p] = batch_ids[p];
  }
  float *batch_emb = rc == 0 ? malloc(BATCH_PROMPTS * (size_t)c->embed_dim * sizeof(float)) : NULL;
  if (rc == 0 && !batch_emb) {
    snprintf(err, sizeof err, "out of memory");
    rc = 1;
  }
  for (int r = -1; r < runs && rc == 0; r++) {
    double t0 = cli_now_ms();
    if (unimed_encode_token_ids(m, batch_rows, batch_lens, BATCH_PROMPTS, batch_emb, err,
                                sizeof err) != 0)
      rc = 1;
    if (r >= 0) ms[r] = (cli_now_ms() - t0) / BATCH_PROMPTS;
  }
  free(batch_emb);
  if (rc == 0) {
    cJSON_AddNumberToObject(j, "batch_prompts", BATCH_PROMPTS);
    cJSON_AddItemToObject(j, "ms_per_prompt_batch32", stats(ms, runs));
    cli_print_json(j);
  } else {
    fprintf(stderr, "unimed: %s\n", err);
    cJSON_Delete(j);
  }
  free(ms);
  free(pixels);
  free(emb);
  free_options(&o);
  unimed_model_free(m);
  return rc;
}
