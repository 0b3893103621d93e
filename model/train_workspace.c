/* The training workspace: every activation the backward passes need, for
 * the largest batch seen, in one allocation (plus three small index arrays).
 * Sized before the first step; the per-layer code never allocates. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

static size_t mx(size_t a, size_t b) { return a > b ? a : b; }

/* Assigns the slices (when base != NULL) and returns the floats needed. */
static size_t layout(umt_workspace *w, const unimed_config *c, size_t B, size_t n, size_t N,
                     size_t L, size_t sumsq, float *base) {
  const size_t G = (size_t)(c->vision.image_size / c->vision.patch_size), T = G * G + 1;
  const size_t D = (size_t)c->vision.width, Hv = (size_t)c->vision.heads;
  const size_t F = (size_t)(c->vision.mlp_ratio * c->vision.width + 0.5f);
  const size_t P3 = 3 * (size_t)c->vision.patch_size * c->vision.patch_size;
  const size_t Lv = (size_t)c->vision.layers, Lt = (size_t)c->text.layers;
  const size_t Dt = (size_t)c->text.hidden_size, Ht = (size_t)c->text.heads;
  const size_t IM = (size_t)c->text.intermediate_size, E = (size_t)c->embed_dim;
  const size_t H2 = (Dt + E) / 2, BT = B * T;
  const size_t psize = Ht * sumsq; /* Σ_s H·len_s² */
  struct {
    float **slot;
    size_t n;
  } s[] = {
      {&w->v_patches, B * (T - 1) * P3}, {&w->v_emb, BT * D},
      {&w->v_x, (Lv + 1) * BT * D},     {&w->v_ln1, Lv * BT * D},
      {&w->v_qkv, Lv * BT * 3 * D},     {&w->v_probs, Lv * B * Hv * T * T},
      {&w->v_ctx, Lv * BT * D},         {&w->v_xmid, Lv * BT * D},
      {&w->v_ln2, Lv * BT * D},         {&w->v_fc, Lv * BT * F},
      {&w->v_act, Lv * BT * F},         {&w->v_pooled, B * D},
      {&w->v_out, B * E},
      {&w->t_emb, N * Dt},              {&w->t_x, (Lt + 1) * N * Dt},
      {&w->t_q, Lt * N * Dt},           {&w->t_k, Lt * N * Dt},
      {&w->t_v, Lt * N * Dt},           {&w->t_probs, Lt * psize},
      {&w->t_ctx, Lt * N * Dt},         {&w->t_res1, Lt * N * Dt},
      {&w->t_a, Lt * N * Dt},           {&w->t_inter, Lt * N * IM},
      {&w->t_act, Lt * N * IM},         {&w->t_res2, Lt * N * Dt},
      {&w->t_pooled, n * Dt},           {&w->t_h, n * H2},
      {&w->t_hact, n * H2},             {&w->t_out, n * mx(E, Dt)},
      {&w->d_a, mx(BT * D, N * Dt)},    {&w->d_b, mx(BT * D, N * Dt)},
      {&w->d_c, mx(BT * D, N * Dt)},
      {&w->d_big, mx(BT * mx(3 * D, F), N * mx(3 * Dt, IM))},
      {&w->d_scores, mx(T * T, L * L)},
      {&w->img_n, B * E},               {&w->txt_n, B * E},
      {&w->logits, B * B},              {&w->d_img, B * E},
      {&w->d_txt, B * mx(E, Dt)},
  };
  size_t off = 0;
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
    if (base) *s[i].slot = base + off;
    off += (s[i].n + 15) / 16 * 16;
  }
  return off;
}

int umt_workspace_reserve(umt_workspace *w, const unimed_config *c, int B, int n, int N, int L,
                          size_t sumsq, char *err, size_t errlen) {
  if (B <= w->cap_B && n <= w->cap_n && N <= w->cap_N && L <= w->cap_L &&
      sumsq <= w->cap_sumsq && w->mem)
    return 0;
  int nB = B > w->cap_B ? B : w->cap_B, nn = n > w->cap_n ? n : w->cap_n;
  int nN = N > w->cap_N ? N : w->cap_N, nL = L > w->cap_L ? L : w->cap_L;
  size_t nS = sumsq > w->cap_sumsq ? sumsq : w->cap_sumsq;
  size_t floats = layout(w, c, (size_t)nB, (size_t)nn, (size_t)nN, (size_t)nL, nS, NULL);
  float *mem = aligned_alloc(64, floats * sizeof(float));
  int *start = malloc(((size_t)nn + 1) * sizeof(int));
  int *ids = malloc(((size_t)nN + 1) * sizeof(int));
  size_t *poff = malloc(((size_t)nn + 1) * sizeof(size_t));
  if (!mem || !start || !ids || !poff) {
    free(mem);
    free(start);
    free(ids);
    free(poff);
    snprintf(err, errlen, "out of memory for a %zu MiB training workspace",
             floats * sizeof(float) >> 20);
    return -1;
  }
  umt_workspace_free(w);
  memset(mem, 0, floats * sizeof(float));
  w->mem = mem;
  w->mem_floats = floats;
  w->t_start = start;
  w->t_ids = ids;
  w->t_poff = poff;
  w->cap_B = nB;
  w->cap_n = nn;
  w->cap_N = nN;
  w->cap_L = nL;
  w->cap_sumsq = nS;
  w->t_psize = (size_t)c->text.heads * nS;
  layout(w, c, (size_t)nB, (size_t)nn, (size_t)nN, (size_t)nL, nS, mem);
  return 0;
}

void umt_workspace_free(umt_workspace *w) {
  free(w->mem);
  free(w->t_start);
  free(w->t_ids);
  free(w->t_poff);
  memset(w, 0, sizeof *w);
}
