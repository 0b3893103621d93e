/* Zero-shot evaluation and metrics (evaluate.h). */
#include "evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  float s;
  int pos;
} scored;

static int cmp_scored(const void *a, const void *b) {
  float x = ((const scored *)a)->s, y = ((const scored *)b)->s;
  return x < y ? -1 : x > y ? 1 : 0;
}

double ut_roc_auc(const float *scores, const int *positive, int n) {
  scored *v = malloc((size_t)(n ? n : 1) * sizeof *v);
  if (!v) return NAN;
  long np = 0, nn = 0;
  for (int i = 0; i < n; i++) {
    v[i].s = scores[i];
    v[i].pos = positive[i] != 0;
    np += v[i].pos;
  }
  nn = n - np;
  if (np == 0 || nn == 0) {
    free(v);
    return NAN;
  }
  qsort(v, (size_t)n, sizeof *v, cmp_scored);
  /* Mann-Whitney U with mid-ranks for ties */
  double rank_sum = 0;
  for (int i = 0; i < n;) {
    int j = i;
    while (j < n && v[j].s == v[i].s) j++;
    double mid = 0.5 * ((double)i + 1 + (double)j); /* ranks i+1 .. j */
    for (int k = i; k < j; k++)
      if (v[k].pos) rank_sum += mid;
    i = j;
  }
  free(v);
  return (rank_sum - (double)np * (np + 1) / 2.0) / ((double)np * (double)nn);
}

int ut_metrics_compute(const float *probs, const int *truth, const int *n_truth, int n,
                       int C, ut_metrics *m) {
  memset(m, 0, sizeof *m);
  if (C < 1 || C > 64) return -1;
  m->n = n;
  m->n_classes = C;
  m->confusion = calloc((size_t)C * C, sizeof(int));
  float *sc = malloc((size_t)(n ? n : 1) * sizeof(float));
  int *pos = malloc((size_t)(n ? n : 1) * sizeof(int));
  if (!m->confusion || !sc || !pos) {
    free(sc);
    free(pos);
    ut_metrics_free(m);
    return -1;
  }
  int right = 0;
  for (int i = 0; i < n; i++) {
    const float *p = probs + (size_t)i * C;
    int best = 0;
    for (int c = 1; c < C; c++)
      if (p[c] > p[best]) best = c;
    for (int k = 0; k < n_truth[i]; k++)
      if (truth[i * UT_MAX_LABELS + k] == best) {
        right++;
        break;
      }
    m->confusion[truth[i * UT_MAX_LABELS] * C + best]++;
  }
  m->accuracy = n ? (double)right / n : NAN;
  double rec = 0;
  int classes = 0;
  for (int c = 0; c < C; c++) {
    int tot = 0;
    for (int k = 0; k < C; k++) tot += m->confusion[c * C + k];
    if (tot) rec += (double)m->confusion[c * C + c] / tot, classes++;
  }
  m->balanced_accuracy = classes ? rec / classes : NAN;
  double auc = 0;
  int defined = 0;
  for (int c = 0; c < C; c++) {
    for (int i = 0; i < n; i++) {
      sc[i] = probs[(size_t)i * C + c];
      pos[i] = 0;
      for (int k = 0; k < n_truth[i]; k++) pos[i] |= truth[i * UT_MAX_LABELS + k] == c;
    }
    m->auc_per_class[c] = ut_roc_auc(sc, pos, n);
    if (!isnan(m->auc_per_class[c])) auc += m->auc_per_class[c], defined++;
  }
  m->auc = defined ? auc / defined : NAN;
  free(sc);
  free(pos);
  return 0;
}

void ut_metrics_free(ut_metrics *m) {
  free(m->confusion);
  m->confusion = NULL;
}

static void add_num(cJSON *o, const char *k, double v) {
  if (isnan(v)) cJSON_AddNullToObject(o, k);
  else cJSON_AddNumberToObject(o, k, round(v * 1e6) / 1e6);
}

int ut_evaluate(unimed_model *model, const ut_dataset *d, int set, int batch, ut_metrics *m,
                cJSON **json, char *err, size_t errlen) {
  memset(m, 0, sizeof *m);
  if (json) *json = NULL;
  const unimed_label_set *ls = d->sets[set];
  const unimed_config *c = unimed_model_config(model);
  const int E = c->embed_dim, C = ls->n_labels;
  const size_t per = (size_t)3 * d->size * d->size;
  if (c->image_size != d->size) {
    snprintf(err, errlen, "model image size %d differs from the loaded images (%d)", c->image_size,
             d->size);
    return -1;
  }
  int n = 0;
  for (int r = 0; r < d->n_rows; r++) n += d->rows[r].set == set && d->rows[r].n_labels > 0;
  if (n == 0) {
    snprintf(err, errlen, "label set %s: no labelled rows to evaluate", ls->name);
    return -1;
  }
  if (batch < 1) batch = 32;
  unimed_label_embeddings le;
  if (unimed_label_set_embed(model, ls, NULL, &le, err, errlen) != 0) return -1;
  float *emb = malloc((size_t)batch * E * sizeof(float));
  float *pix = malloc((size_t)batch * per * sizeof(float));
  float *row_emb = malloc((size_t)E * sizeof(float));
  float *frames = NULL;
  int fcap = 0;
  float *probs = malloc((size_t)n * C * sizeof(float));
  int *truth = malloc((size_t)n * UT_MAX_LABELS * sizeof(int));
  int *nt = malloc((size_t)n * sizeof(int));
  int rc = -1, k = 0;
  if (!emb || !pix || !row_emb || !probs || !truth || !nt) {
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  for (int r = 0; r < d->n_rows; r++) {
    const ut_row *row = &d->rows[r];
    if (row->set != set || row->n_labels == 0) continue;
    if (row->n_images > fcap) {
      fcap = row->n_images;
      float *nf = realloc(frames, (size_t)fcap * E * sizeof(float));
      if (!nf) {
        snprintf(err, errlen, "out of memory");
        goto done;
      }
      frames = nf;
    }
    for (int i = 0; i < row->n_images; i += batch) {
      int b = row->n_images - i < batch ? row->n_images - i : batch;
      if (unimed_encode_images(model, d->pixels + (size_t)(row->first_image + i) * per, b,
                               frames + (size_t)i * E, err, errlen) != 0)
        goto done;
    }
    unimed_prompt_ensemble(frames, row->n_images, E, row_emb);
    unimed_label_set_score(model, ls, &le, row_emb, probs + (size_t)k * C);
    nt[k] = row->n_labels;
    for (int j = 0; j < row->n_labels; j++) truth[k * UT_MAX_LABELS + j] = row->labels[j];
    k++;
  }
  if (ut_metrics_compute(probs, truth, nt, n, C, m) != 0) {
    snprintf(err, errlen, "out of memory (or more than 64 labels)");
    goto done;
  }
  if (json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "label_set", ls->name);
    cJSON_AddNumberToObject(o, "n", n);
    add_num(o, "accuracy", m->accuracy);
    add_num(o, "balanced_accuracy", m->balanced_accuracy);
    add_num(o, "auc", m->auc);
    cJSON *labels = cJSON_AddArrayToObject(o, "labels");
    cJSON *pl = cJSON_AddObjectToObject(o, "auc_per_label");
    for (int j = 0; j < C; j++) {
      cJSON_AddItemToArray(labels, cJSON_CreateString(ls->labels[j].name));
      add_num(pl, ls->labels[j].name, m->auc_per_class[j]);
    }
    cJSON *cm = cJSON_AddArrayToObject(o, "confusion_matrix");
    for (int t = 0; t < C; t++) {
      cJSON *rowj = cJSON_CreateArray();
      for (int p = 0; p < C; p++) cJSON_AddItemToArray(rowj, cJSON_CreateNumber(m->confusion[t * C + p]));
      cJSON_AddItemToArray(cm, rowj);
    }
    cJSON_AddStringToObject(o, "confusion_matrix_rows", "true label (first label of a row)");
    cJSON_AddStringToObject(o, "confusion_matrix_columns", "predicted label (arg-max)");
    *json = o;
  }
  rc = 0;
done:
  unimed_label_embeddings_free(&le);
  free(emb);
  free(pix);
  free(row_emb);
  free(frames);
  free(probs);
  free(truth);
  free(nt);
  return rc;
}
