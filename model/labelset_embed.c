/* Label sets: their class embeddings for one model, and scoring an image
 * against them. Every prompt is encoded once (in batches), the prompts of a
 * label are ensembled into one vector (and, for binary scoring, its
 * negatives into another), and the result is cached on disk keyed by the
 * model hash and the label-set hash (labelset_cache.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "labelset_internal.h"

#define LS_BATCH 64 /* prompts per unimed_encode_texts call */

void unimed_label_embeddings_free(unimed_label_embeddings *e) {
  if (!e) return;
  free(e->positive);
  free(e->negative);
  e->positive = e->negative = NULL;
  e->n_labels = e->dim = 0;
}

int unimed_label_set_embed(unimed_model *m, const unimed_label_set *ls, const char *cache_dir,
                           unimed_label_embeddings *out, char *err, size_t errlen) {
  if (!out) {
    unimed_set_err(err, errlen, "label-set embeddings: no output given");
    return -1;
  }
  memset(out, 0, sizeof *out);
  if (!m || !ls || ls->n_labels <= 0) {
    unimed_set_err(err, errlen, "label-set embeddings: no model or no label set");
    return -1;
  }
  const int dim = unimed_model_config(m)->embed_dim;
  const int binary = ls->scoring == UNIMED_SCORING_BINARY;
  const int L = ls->n_labels;
  const char *mhash = um_model_cache_key(m);

  char file[4200] = "";
  if (cache_dir && *cache_dir) {
    int n = snprintf(file, sizeof file, "%s/%s-%s.emb", cache_dir, mhash, ls->hash);
    if (n < 0 || (size_t)n >= sizeof file) {
      unimed_set_err(err, errlen, "%s: cache directory path too long", cache_dir);
      return -1;
    }
    if (um_ls_cache_read(file, mhash, ls->hash, L, dim, binary, out) == 0) return 0;
  }

  /* every prompt once: label by label, positives then negatives */
  int total = 0;
  for (int i = 0; i < L; i++)
    total += ls->labels[i].n_prompts + (binary ? ls->labels[i].n_negatives : 0);
  const char **texts = malloc((size_t)total * sizeof(char *));
  float *emb = malloc((size_t)total * (size_t)dim * sizeof(float));
  out->positive = malloc((size_t)L * (size_t)dim * sizeof(float));
  out->negative = binary ? malloc((size_t)L * (size_t)dim * sizeof(float)) : NULL;
  out->n_labels = L;
  out->dim = dim;
  if (!texts || !emb || !out->positive || (binary && !out->negative)) {
    unimed_set_err(err, errlen, "%s: out of memory for %d prompt embeddings", ls->path, total);
    goto fail;
  }
  int k = 0;
  for (int i = 0; i < L; i++) {
    const unimed_label *l = &ls->labels[i];
    for (int p = 0; p < l->n_prompts; p++) texts[k++] = l->prompts[p];
    for (int p = 0; binary && p < l->n_negatives; p++) texts[k++] = l->negatives[p];
  }
  for (int b = 0; b < total; b += LS_BATCH) {
    int n = total - b < LS_BATCH ? total - b : LS_BATCH;
    char e2[512];
    if (unimed_encode_texts(m, texts + b, n, emb + (size_t)b * dim, e2, sizeof e2) != 0) {
      unimed_set_err(err, errlen, "%s: encoding prompts %d..%d: %s", ls->path, b, b + n - 1, e2);
      goto fail;
    }
  }
  k = 0;
  for (int i = 0; i < L; i++) {
    const unimed_label *l = &ls->labels[i];
    unimed_prompt_ensemble(emb + (size_t)k * dim, l->n_prompts, dim,
                           out->positive + (size_t)i * dim);
    k += l->n_prompts;
    if (binary) {
      unimed_prompt_ensemble(emb + (size_t)k * dim, l->n_negatives, dim,
                             out->negative + (size_t)i * dim);
      k += l->n_negatives;
    }
  }
  free(texts);
  free(emb);
  if (*file) um_ls_cache_write(cache_dir, file, mhash, ls->hash, out);
  return 0;
fail:
  free(texts);
  free(emb);
  unimed_label_embeddings_free(out);
  return -1;
}

void unimed_label_set_score(const unimed_model *m, const unimed_label_set *ls,
                            const unimed_label_embeddings *e, const float *image_embedding,
                            float *probs) {
  const int L = e->n_labels, dim = e->dim;
  if (ls->scoring == UNIMED_SCORING_SOFTMAX || !e->negative) {
    unimed_zero_shot(m, image_embedding, 1, e->positive, L, probs);
    return;
  }
  const double scale = exp((double)unimed_model_logit_scale(m));
  for (int i = 0; i < L; i++) {
    double pos = 0, neg = 0;
    for (int d = 0; d < dim; d++) {
      pos += (double)image_embedding[d] * e->positive[(size_t)i * dim + d];
      neg += (double)image_embedding[d] * e->negative[(size_t)i * dim + d];
    }
    /* softmax over {positive, negative}, probability of the positive */
    probs[i] = (float)(1.0 / (1.0 + exp(scale * (neg - pos))));
  }
}
