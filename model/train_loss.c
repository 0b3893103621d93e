/* Symmetric CLIP (InfoNCE) loss with its backward, L2 normalisation
 * included. Sums in double: B is small and the loss is compared to 1e-4. */
#include <math.h>
#include <string.h>

#include "train.h"

/* y = x / max(||x||, 1e-12) per row of [B, E]; returns nothing, keeps y. */
static void normalize_rows(const float *x, float *y, int B, int E) {
  for (int i = 0; i < B; i++) {
    double s = 0;
    for (int k = 0; k < E; k++) s += (double)x[(size_t)i * E + k] * x[(size_t)i * E + k];
    double nrm = sqrt(s);
    if (nrm < 1e-12) nrm = 1e-12;
    for (int k = 0; k < E; k++) y[(size_t)i * E + k] = (float)(x[(size_t)i * E + k] / nrm);
  }
}

/* dy [B, E] → dx [B, E] in place, for y = x / ||x||:  dx = (dy − y (y·dy)) / ||x|| */
static void normalize_backward(const float *x, const float *y, float *d, int B, int E) {
  for (int i = 0; i < B; i++) {
    const float *xr = x + (size_t)i * E, *yr = y + (size_t)i * E;
    float *dr = d + (size_t)i * E;
    double s = 0, dot = 0;
    for (int k = 0; k < E; k++) {
      s += (double)xr[k] * xr[k];
      dot += (double)yr[k] * dr[k];
    }
    double nrm = sqrt(s);
    if (nrm < 1e-12) { /* clamped: y = x / 1e-12, a plain scaling */
      for (int k = 0; k < E; k++) dr[k] = (float)(dr[k] / 1e-12);
      continue;
    }
    for (int k = 0; k < E; k++) dr[k] = (float)((dr[k] - yr[k] * dot) / nrm);
  }
}

/* Target weight of pair (i, j): δij, or with groups, 1/n_i when i and j
 * share a non-zero group (n_i pairs of the batch have i's group). */
static double target(const uint64_t *groups, const int *group_size, int i, int j) {
  if (!groups || groups[i] == 0) return i == j ? 1.0 : 0.0;
  return groups[i] == groups[j] ? 1.0 / group_size[i] : 0.0;
}

/* img, txt [B, E] → loss; logits [B, B] = s · In · Tn^T, s = exp(logit_scale).
 *   dlogits[i][j] = (softmax_row_i(logits)[j] − t_ij + softmax_col_j(logits)[i] − t_ij) / (2B)
 *   (t_ij = δij, or soft targets over a group)
 *   dIn [B, E] = s · dlogits · Tn;   dTn [B, E] = s · dlogits^T · In
 *   d logit_scale += Σ dlogits ⊙ logits
 * then through the normalisations to d_img, d_txt. */
double umt_clip_loss(const float *img, const float *txt, int B, int E, const uint64_t *groups,
                     float logit_scale, float *d_img, float *d_txt, float *d_logit_scale,
                     float *img_n, float *txt_n, float *logits) {
  int group_size[UMT_MAX_LOSS_BATCH];
  if (groups) {
    if (B > UMT_MAX_LOSS_BATCH) groups = NULL; /* documented limit; callers check */
    for (int i = 0; groups && i < B; i++) {
      group_size[i] = 0;
      for (int j = 0; j < B; j++) group_size[i] += groups[i] != 0 && groups[j] == groups[i];
    }
  }
  normalize_rows(img, img_n, B, E);
  normalize_rows(txt, txt_n, B, E);
  const double s = exp((double)logit_scale);
  for (int i = 0; i < B; i++)
    for (int j = 0; j < B; j++) {
      double dot = 0;
      for (int k = 0; k < E; k++) dot += (double)img_n[(size_t)i * E + k] * txt_n[(size_t)j * E + k];
      logits[(size_t)i * B + j] = (float)(s * dot);
    }
  /* The loss and dlogits (stored over logits once the loss terms are read). */
  double loss = 0;
  double dls = 0;
  memset(d_img, 0, (size_t)B * E * sizeof(float));
  memset(d_txt, 0, (size_t)B * E * sizeof(float));
  /* Row softmaxes (image → text) and column softmaxes (text → image). */
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < B; i++) {
      /* pass 0: row i; pass 1: column i */
      double mx = -INFINITY, sum = 0;
      for (int j = 0; j < B; j++) {
        double v = pass ? logits[(size_t)j * B + i] : logits[(size_t)i * B + j];
        mx = v > mx ? v : mx;
      }
      for (int j = 0; j < B; j++) {
        double v = pass ? logits[(size_t)j * B + i] : logits[(size_t)i * B + j];
        sum += exp(v - mx);
      }
      double expected = 0; /* Σ_j t_ij · logit */
      for (int j = 0; j < B; j++) {
        double t = target(groups, group_size, i, j);
        if (t != 0) expected += t * (pass ? logits[(size_t)j * B + i] : logits[(size_t)i * B + j]);
      }
      loss += (mx + log(sum) - expected) / (2.0 * B);
      for (int j = 0; j < B; j++) {
        size_t ij = pass ? (size_t)j * B + i : (size_t)i * B + j; /* element of logits */
        double v = logits[ij];
        double dl = (exp(v - mx) / sum - target(groups, group_size, i, j)) / (2.0 * B);
        dls += dl * v;
        /* logits[a][b] = s · In[a] · Tn[b] */
        const int a = pass ? j : i, bb = pass ? i : j;
        for (int k = 0; k < E; k++) {
          d_img[(size_t)a * E + k] += (float)(s * dl * txt_n[(size_t)bb * E + k]);
          d_txt[(size_t)bb * E + k] += (float)(s * dl * img_n[(size_t)a * E + k]);
        }
      }
    }
  *d_logit_scale += (float)dls;
  normalize_backward(img, img_n, d_img, B, E);
  normalize_backward(txt, txt_n, d_txt, B, E);
  return loss;
}
