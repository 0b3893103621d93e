/* Parity of the C trainer (model/train_*.c) with the PyTorch reference
 * (tests/reference/train_ref.py).
 *
 * usage: test_train MODEL_DIR TRAIN_REF_DIR WORK_DIR [GRAD_TOL] [LOSS_TOL]
 *
 * TRAIN_REF_DIR holds train.json, grads.safetensors and final.safetensors.
 * Checks:
 *   1. the loss of micro-batch A and every parameter's gradient: max |Δ| over
 *      a tensor / max |reference| of that tensor <= GRAD_TOL (1e-3); the worst
 *      is printed per tensor group;
 *   2. the weight-decay set equals the reference's;
 *   3. 10 training steps (two accumulated micro-batches, clipping, cosine lr,
 *      AdamW, logit_scale clamp): lr exact, loss within LOSS_TOL (1e-4);
 *   4. the final parameters (reported; max |Δ| / max |ref| <= 1e-2);
 *   5. save to WORK_DIR/model, reload with unimed_model_load: the image and
 *      text embeddings equal the trainer's forward (<= 1e-5);
 *   6. logit_scale is clamped to [0, ln 100]. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "safetensors.h"
#include "test_util.h"
#include "train.h"
#include "unimed_model.h"

static int failures = 0;

static void check(const char *what, double v, double tol) {
  int ok = v <= tol;
  printf("%-56s %.3g  %s\n", what, v, ok ? "ok" : "FAIL");
  if (!ok) failures++;
}

/* ids of a JSON array of arrays → rows (malloc'd) */
static int load_ids(const cJSON *arr, int **rows, int *lens) {
  int s = 0;
  for (const cJSON *a = arr->child; a; a = a->next, s++) {
    lens[s] = cJSON_GetArraySize(a);
    rows[s] = malloc((size_t)lens[s] * sizeof(int));
    int k = 0;
    for (const cJSON *e = a->child; e; e = e->next) rows[s][k++] = e->valueint;
  }
  return s;
}

/* Tensor groups for the report. */
static const char *group_of(const char *name) {
  if (!strncmp(name, "visual.transformer.", 19)) {
    if (strstr(name, "attn.")) return "vision attention (qkv, out_proj)";
    if (strstr(name, "mlp.")) return "vision MLP (c_fc, c_proj)";
    return "vision block LayerNorms";
  }
  if (strstr(name, "conv1")) return "vision patch embedding (conv1)";
  if (!strncmp(name, "visual.class", 12) || !strncmp(name, "visual.positional", 17))
    return "vision class + positional embedding";
  if (!strncmp(name, "visual.ln_", 10)) return "vision ln_pre / ln_post";
  if (!strcmp(name, "visual.proj")) return "vision projection";
  if (strstr(name, "embeddings.LayerNorm")) return "text embedding LayerNorm";
  if (strstr(name, "embeddings.")) return "text word/position/type embeddings";
  if (strstr(name, "attention.self")) return "text attention q/k/v";
  if (strstr(name, "LayerNorm")) return "text layer LayerNorms";
  if (strstr(name, "encoder.layer")) return "text dense (attn out, inter, out)";
  if (!strncmp(name, "text_encoder.proj", 17)) return "text projection (mlp)";
  return name;
}

#define MAX_GROUPS 32
static const char *gnames[MAX_GROUPS];
static double gworst[MAX_GROUPS];
static char gworst_name[MAX_GROUPS][112];
static int ngroups = 0;

static void note(const char *tensor, double rel) {
  const char *g = group_of(tensor);
  int i = 0;
  while (i < ngroups && strcmp(gnames[i], g)) i++;
  if (i == ngroups) {
    gnames[ngroups] = g;
    gworst[ngroups] = -1;
    ngroups++;
  }
  if (rel > gworst[i]) {
    gworst[i] = rel;
    snprintf(gworst_name[i], sizeof gworst_name[i], "%s", tensor);
  }
}

/* max |a − ref| / max |ref| of one tensor */
static double rel_err(const float *a, const float *ref, size_t n) {
  double md = 0, mr = 0;
  for (size_t k = 0; k < n; k++) {
    double d = fabs((double)a[k] - ref[k]);
    md = d > md ? d : md;
    mr = fabs(ref[k]) > mr ? fabs(ref[k]) : mr;
  }
  return mr > 0 ? md / mr : md;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: test_train MODEL_DIR TRAIN_REF_DIR WORK_DIR [GRAD_TOL] [LOSS_TOL]\n");
    return 2;
  }
  const char *model_dir = argv[1], *ref_dir = argv[2], *work = argv[3];
  const double grad_tol = argc > 4 ? atof(argv[4]) : 1e-3;
  const double loss_tol = argc > 5 ? atof(argv[5]) : 1e-4;
  char err[512], path[2048];

  snprintf(path, sizeof path, "%s/train.json", ref_dir);
  char *text = tu_read_file(path, NULL);
  cJSON *J = text ? cJSON_Parse(text) : NULL;
  free(text);
  if (!J) {
    fprintf(stderr, "%s: missing or not JSON\n", path);
    return 1;
  }
  const cJSON *jo = cJSON_GetObjectItem(J, "opt");
  umt_opt_config opt = {
      .lr = (float)cJSON_GetObjectItem(jo, "lr")->valuedouble,
      .beta1 = (float)cJSON_GetObjectItem(jo, "beta1")->valuedouble,
      .beta2 = (float)cJSON_GetObjectItem(jo, "beta2")->valuedouble,
      .eps = (float)cJSON_GetObjectItem(jo, "eps")->valuedouble,
      .weight_decay = (float)cJSON_GetObjectItem(jo, "weight_decay")->valuedouble,
      .grad_clip = (float)cJSON_GetObjectItem(jo, "grad_clip")->valuedouble,
      .warmup = cJSON_GetObjectItem(jo, "warmup")->valueint,
      .total_steps = cJSON_GetObjectItem(jo, "total_steps")->valueint,
  };

  umt_trainer T;
  if (umt_trainer_init(&T, model_dir, &opt, UMT_DECAY_NO_EMBEDDINGS, err, sizeof err) != 0) {
    fprintf(stderr, "trainer: %s\n", err);
    return 1;
  }
  const unimed_config *c = &T.P.cfg;
  const int S = c->image_size, E = c->embed_dim;
  const size_t per = (size_t)3 * S * S;
  printf("model %s: %d tensors, %zu floats in the parameter block\n", c->name, T.P.n, T.P.total);

  /* The batch: images (A in order, B rotated) and the two text sets. */
  const cJSON *files = cJSON_GetObjectItem(J, "images");
  const int B = cJSON_GetArraySize(files);
  float *pix_a = malloc((size_t)B * per * sizeof(float));
  float *pix_b = malloc((size_t)B * per * sizeof(float));
  const char *golden = cJSON_GetObjectItem(J, "golden")->valuestring;
  int i = 0;
  for (const cJSON *f = files->child; f; f = f->next, i++) {
    snprintf(path, sizeof path, "%s/%s", golden, f->valuestring);
    size_t len = 0;
    char *raw = tu_read_file(path, &len);
    if (!raw || len != per * sizeof(float)) {
      fprintf(stderr, "%s: missing or wrong size\n", path);
      return 1;
    }
    memcpy(pix_a + (size_t)i * per, raw, len);
    free(raw);
  }
  i = 0;
  for (const cJSON *r = cJSON_GetObjectItem(J, "rotation")->child; r; r = r->next, i++)
    memcpy(pix_b + (size_t)i * per, pix_a + (size_t)r->valueint * per, per * sizeof(float));
  int *ids_a[64], *ids_b[64], lens_a[64], lens_b[64];
  load_ids(cJSON_GetObjectItem(J, "ids_a"), ids_a, lens_a);
  load_ids(cJSON_GetObjectItem(J, "ids_b"), ids_b, lens_b);

  /* 1. loss and gradients of micro-batch A */
  double loss = 0;
  if (umt_trainer_accumulate(&T, pix_a, (const int *const *)ids_a, lens_a, NULL, B, &loss, err,
                             sizeof err) != 0) {
    fprintf(stderr, "accumulate: %s\n", err);
    return 1;
  }
  char label[256];
  snprintf(label, sizeof label, "loss of batch A (C %.6f, torch %.6f) |d|", loss,
           cJSON_GetObjectItem(J, "loss0")->valuedouble);
  check(label, fabs(loss - cJSON_GetObjectItem(J, "loss0")->valuedouble), loss_tol);

  snprintf(path, sizeof path, "%s/grads.safetensors", ref_dir);
  st_file gst;
  if (st_open(&gst, path, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  double worst = 0, gmax = 0;
  char worst_name[112] = "";
  int n_checked = 0;
  for (int pass = 0; pass < 2; pass++)
  for (int t = 0; t < T.P.n; t++) {
    const umt_tensor *te = &T.P.t[t];
    if (!(te->flags & UMT_TRAIN)) continue;
    const st_tensor *r = st_find(&gst, te->name);
    if (!r || (size_t)r->numel != te->numel || r->dtype != ST_F32) {
      if (pass) {
        printf("reference gradient missing or mismatched: %s\n", te->name);
        failures++;
      }
      continue;
    }
    const float *ref = (const float *)r->data, *got = T.P.grads + te->offset;
    double rmax = 0, cmax = 0;
    for (size_t k = 0; k < te->numel; k++) {
      rmax = fmax(rmax, fabs(ref[k]));
      cmax = fmax(cmax, fabs(got[k]));
    }
    if (!pass) { /* first pass: the largest gradient of the model */
      gmax = fmax(gmax, rmax);
      continue;
    }
    if (rmax < 1e-9 * gmax) {
      /* Analytically zero (the key biases: softmax ignores a per-row
       * constant); the reference holds float64 round-off. Compare |C| with
       * the model's largest gradient instead. */
      snprintf(label, sizeof label, "analytically zero gradient, max|C| / max|any grad|: %s",
               te->name);
      check(label, cmax / gmax, 1e-6);
      n_checked++;
      continue;
    }
    double rel = rel_err(got, ref, te->numel);
    note(te->name, rel);
    if (rel > worst) {
      worst = rel;
      snprintf(worst_name, sizeof worst_name, "%s", te->name);
    }
    n_checked++;
  }
  st_close(&gst);
  printf("gradients of %d tensors, max|d| / max|ref| per group:\n", n_checked);
  for (int g = 0; g < ngroups; g++)
    printf("  %-42s %.3g  (%s)\n", gnames[g], gworst[g], gworst_name[g]);
  snprintf(label, sizeof label, "worst gradient (%s)", worst_name);
  check(label, worst, grad_tol);

  /* Determinism: the same batch again gives bit-identical gradients. */
  float *g1 = malloc(T.P.total * sizeof(float));
  memcpy(g1, T.P.grads, T.P.total * sizeof(float));
  umt_zero_grad(&T.P);
  double loss2 = 0;
  if (umt_trainer_accumulate(&T, pix_a, (const int *const *)ids_a, lens_a, NULL, B, &loss2, err,
                             sizeof err) != 0) {
    fprintf(stderr, "accumulate: %s\n", err);
    return 1;
  }
  check("rerun: gradient bytes that differ", memcmp(g1, T.P.grads, T.P.total * sizeof(float)) != 0, 0);
  check("rerun: loss |d|", fabs(loss2 - loss), 0);
  free(g1);

  /* 2. the weight-decay set */
  int decay_mismatch = 0, n_decay = 0;
  const cJSON *jd = cJSON_GetObjectItem(J, "decay");
  for (int t = 0; t < T.P.n; t++) {
    int in_ref = 0;
    for (const cJSON *e = jd->child; e; e = e->next) in_ref |= !strcmp(e->valuestring, T.P.t[t].name);
    int in_c = !!(T.P.t[t].flags & UMT_DECAY);
    n_decay += in_c;
    if (in_ref != in_c) {
      printf("decay differs: %s (C %d, torch %d)\n", T.P.t[t].name, in_c, in_ref);
      decay_mismatch++;
    }
  }
  snprintf(label, sizeof label, "weight-decay set (%d tensors) mismatches", n_decay);
  check(label, decay_mismatch, 0);

  /* 3. training steps: micro-batches A and B accumulated, then one step */
  umt_zero_grad(&T.P);
  T.micro = 0;
  const cJSON *steps = cJSON_GetObjectItem(J, "steps");
  double worst_loss = 0, worst_lr = 0;
  int s = 0;
  printf("step  lr          loss C      loss torch  |d|        |g| C     |g| torch\n");
  for (const cJSON *st = steps->child; st; st = st->next, s++) {
    double la, lb;
    if (umt_trainer_accumulate(&T, pix_a, (const int *const *)ids_a, lens_a, NULL, B, &la, err,
                               sizeof err) != 0 ||
        umt_trainer_accumulate(&T, pix_b, (const int *const *)ids_b, lens_b, NULL, B, &lb, err,
                               sizeof err) != 0) {
      fprintf(stderr, "accumulate: %s\n", err);
      return 1;
    }
    float lr;
    double norm = umt_trainer_step(&T, &lr);
    double l = (la + lb) / 2, lref = cJSON_GetObjectItem(st, "loss")->valuedouble;
    double lrref = cJSON_GetObjectItem(st, "lr")->valuedouble;
    double d = fabs(l - lref);
    worst_loss = d > worst_loss ? d : worst_loss;
    double dlr = fabs(lr - lrref) / lrref;
    worst_lr = dlr > worst_lr ? dlr : worst_lr;
    printf("%4d  %.4e  %.8f  %.8f  %.2e  %8.4f  %8.4f\n", s, lr, l, lref, d, norm,
           cJSON_GetObjectItem(st, "grad_norm")->valuedouble);
  }
  check("learning-rate schedule, max relative |d|", worst_lr, 1e-6);
  snprintf(label, sizeof label, "losses of %d steps, max |d|", s);
  check(label, worst_loss, loss_tol);

  /* 4. final parameters */
  snprintf(path, sizeof path, "%s/final.safetensors", ref_dir);
  st_file fst;
  if (st_open(&fst, path, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  double worst_p = 0;
  char worst_p_name[112] = "";
  for (int t = 0; t < T.P.n; t++) {
    const umt_tensor *te = &T.P.t[t];
    const st_tensor *r = st_find(&fst, te->name);
    if (!r || (size_t)r->numel != te->numel) continue;
    /* relative to the tensor's update scale: its largest value */
    double rel = rel_err(T.P.params + te->offset, (const float *)r->data, te->numel);
    if (rel > worst_p) {
      worst_p = rel;
      snprintf(worst_p_name, sizeof worst_p_name, "%s", te->name);
    }
  }
  st_close(&fst);
  snprintf(label, sizeof label, "final parameters, worst (%s)", worst_p_name);
  check(label, worst_p, 1e-2);

  /* 5. save, reload with the inference loader, compare embeddings */
  mkdir(work, 0777);
  char out_dir[1200];
  snprintf(out_dir, sizeof out_dir, "%s/model", work);
  if (umt_params_save(&T.P, out_dir, err, sizeof err) != 0) {
    fprintf(stderr, "save: %s\n", err);
    return 1;
  }
  unimed_model *m = unimed_model_load(out_dir, err, sizeof err);
  if (!m) {
    fprintf(stderr, "reload: %s\n", err);
    failures++;
  } else {
    float *ie = malloc((size_t)B * E * sizeof(float)), *te = malloc((size_t)B * E * sizeof(float));
    umt_vit_forward(&T.P, &T.w, pix_a, B);
    umt_bert_forward(&T.P, &T.w, (const int *const *)ids_a, lens_a, B);
    double dimg = 0, dtxt = 0;
    if (unimed_encode_images(m, pix_a, B, ie, err, sizeof err) != 0 ||
        unimed_encode_token_ids(m, (const int *const *)ids_a, lens_a, B, te, err, sizeof err) != 0) {
      fprintf(stderr, "encode: %s\n", err);
      return 1;
    }
    for (int r = 0; r < B; r++) {
      unimed_l2_normalize(T.w.v_out + (size_t)r * E, E);
      unimed_l2_normalize(T.w.t_out + (size_t)r * E, E);
    }
    for (size_t k = 0; k < (size_t)B * E; k++) {
      dimg = fmax(dimg, fabs(ie[k] - T.w.v_out[k]));
      dtxt = fmax(dtxt, fabs(te[k] - T.w.t_out[k]));
    }
    check("saved model: image embeddings vs training forward", dimg, 1e-5);
    check("saved model: text embeddings vs training forward", dtxt, 1e-5);
    check("saved model: logit_scale", fabs(unimed_model_logit_scale(m) - *T.P.p.logit_scale), 0);
    free(ie);
    free(te);
    unimed_model_free(m);
  }

  /* 6. clamp */
  umt_zero_grad(&T.P);
  *T.P.p.logit_scale = 7.0f;
  umt_adamw_update(&T.P, T.m, T.v, T.step + 1, 0.0f, &opt);
  check("logit_scale clamped to ln 100", fabs(*T.P.p.logit_scale - logf(100.0f)), 1e-7);
  *T.P.p.logit_scale = -1.0f;
  umt_adamw_update(&T.P, T.m, T.v, T.step + 2, 0.0f, &opt);
  check("logit_scale clamped to 0", fabs(*T.P.p.logit_scale), 0);

  for (int k = 0; k < B; k++) {
    free(ids_a[k]);
    free(ids_b[k]);
  }
  free(pix_a);
  free(pix_b);
  umt_trainer_free(&T);
  cJSON_Delete(J);
  printf("train parity: %s\n", failures ? "FAILED" : "all checks within tolerance");
  return failures ? 1 : 0;
}
