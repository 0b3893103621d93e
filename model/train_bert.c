/* Text tower for training: the forward of bert.c on packed sequences (only
 * real tokens; equal to the padded, masked computation) keeping every
 * activation, and its backward.
 *
 *   emb [N, D] = word[id] + pos[p] + type[0];   x_0 = LN_emb(emb)
 *   layer l: res1 = x_l + attn_out(attn(q(x_l), k(x_l), v(x_l)));  a = LN_1(res1)
 *            res2 = a + out(gelu(inter(a)));                       x_{l+1} = LN_2(res2)
 *   pooled [n, D] = x_L at each [CLS]
 *   mlp: out [n, E] = gelu(pooled · proj0^T) · proj2^T  (no biases)
 */
#include <string.h>

#include "internal.h"
#include "train.h"

typedef struct {
  int D, H, hd, IM, E, H2, layers;
  float eps;
} tdims;

static tdims dims(const unimed_config *c) {
  tdims d;
  d.D = c->text.hidden_size;
  d.H = c->text.heads;
  d.hd = d.D / d.H;
  d.IM = c->text.intermediate_size;
  d.E = c->embed_dim;
  d.H2 = (d.D + d.E) / 2;
  d.layers = c->text.layers;
  d.eps = c->text.layer_norm_eps;
  return d;
}

void umt_bert_forward(const umt_params *Pm, umt_workspace *w, const int *const *ids,
                      const int *lens, int n) {
  const tdims d = dims(&Pm->cfg);
  const umt_view *p = &Pm->p;
  int N = 0, L = 0;
  size_t ps = 0;
  for (int s = 0; s < n; s++) {
    w->t_start[s] = N;
    w->t_poff[s] = ps;
    for (int k = 0; k < lens[s]; k++) w->t_ids[N + k] = ids[s][k];
    N += lens[s];
    L = lens[s] > L ? lens[s] : L;
    ps += (size_t)d.H * lens[s] * lens[s];
  }
  w->t_start[n] = N;
  w->n = n;
  w->N = N;
  w->Lmax = L;
  const size_t ND = (size_t)N * d.D, NI = (size_t)N * d.IM;
  const size_t lND = (size_t)w->cap_N * d.D, lNI = (size_t)w->cap_N * d.IM; /* layer strides */

  for (int s = 0, r = 0; s < n; s++)
    for (int k = 0; k < lens[s]; k++, r++) {
      const float *we = p->word_emb + (size_t)ids[s][k] * d.D;
      const float *pe = p->tpos_emb + (size_t)k * d.D;
      float *row = w->t_emb + (size_t)r * d.D;
      for (int j = 0; j < d.D; j++) row[j] = we[j] + pe[j] + p->type_emb[j];
    }
  um_layernorm(w->t_emb, w->t_x, N, d.D, p->emb_ln_w, p->emb_ln_b, d.eps);

  for (int l = 0; l < d.layers; l++) {
    const umt_bert_layer *b = &p->tl[l];
    const float *x = w->t_x + l * lND;
    float *q = w->t_q + l * lND, *k = w->t_k + l * lND, *v = w->t_v + l * lND;
    float *ctx = w->t_ctx + l * lND, *res1 = w->t_res1 + l * lND, *a = w->t_a + l * lND;
    float *inter = w->t_inter + l * lNI, *act = w->t_act + l * lNI, *res2 = w->t_res2 + l * lND;
    float *probs = w->t_probs + l * w->t_psize;
    um_linear(x, N, d.D, b->q_w, b->q_b, d.D, q);
    um_linear(x, N, d.D, b->k_w, b->k_b, d.D, k);
    um_linear(x, N, d.D, b->v_w, b->v_b, d.D, v);
    for (int s = 0; s < n; s++) {
      size_t o = (size_t)w->t_start[s] * d.D;
      umt_attention_forward(q + o, k + o, v + o, d.D, lens[s], d.H, d.hd, ctx + o, d.D,
                            probs + w->t_poff[s]);
    }
    um_linear(ctx, N, d.D, b->attn_out_w, b->attn_out_b, d.D, res1);
    um_add(res1, x, ND);
    um_layernorm(res1, a, N, d.D, b->attn_ln_w, b->attn_ln_b, d.eps);
    um_linear(a, N, d.D, b->inter_w, b->inter_b, d.IM, inter);
    memcpy(act, inter, NI * sizeof(float));
    um_gelu(act, NI);
    um_linear(act, N, d.IM, b->out_w, b->out_b, d.D, res2);
    um_add(res2, a, ND);
    um_layernorm(res2, w->t_x + (l + 1) * lND, N, d.D, b->out_ln_w, b->out_ln_b, d.eps);
  }

  const float *xL = w->t_x + (size_t)d.layers * lND;
  for (int s = 0; s < n; s++)
    memcpy(w->t_pooled + (size_t)s * d.D, xL + (size_t)w->t_start[s] * d.D,
           (size_t)d.D * sizeof(float));
  switch (Pm->cfg.text.projection) {
  case UNIMED_PROJ_MLP:
    um_linear(w->t_pooled, n, d.D, p->proj0, NULL, d.H2, w->t_h);
    memcpy(w->t_hact, w->t_h, (size_t)n * d.H2 * sizeof(float));
    um_gelu(w->t_hact, (size_t)n * d.H2);
    um_linear(w->t_hact, n, d.H2, p->proj2, NULL, d.E, w->t_out);
    break;
  case UNIMED_PROJ_LINEAR:
    um_linear(w->t_pooled, n, d.D, p->tproj, NULL, d.E, w->t_out);
    break;
  case UNIMED_PROJ_NONE:
    memcpy(w->t_out, w->t_pooled, (size_t)n * d.D * sizeof(float));
    break;
  }
}

/* dout [n, E] → gradients += for every text tensor.
 *   head (mlp): dhact [n, H2] = dout · proj2;  dproj2 [E, H2] += dout^T · hact
 *               dh = dhact ⊙ gelu'(h);  dpooled [n, D] = dh · proj0;  dproj0 [H2, D] += dh^T · pooled
 *   dx [N, D] = dpooled at each [CLS] row, 0 elsewhere
 *   layer l (reverse), dx = d x_{l+1} [N, D]:
 *     dres2 [N, D] = LN_2 backward(dx)           (da starts as dres2: residual)
 *     dact [N, I] = dres2 · out_w;  dinter = dact ⊙ gelu'(inter)
 *     da += dinter · inter_w [N, D]
 *     dres1 [N, D] = LN_1 backward(da)           (d x_l starts as dres1)
 *     dctx [N, D] = dres1 · attn_out_w
 *     dq, dk, dv [N, D] = attention backward(dctx) per sequence
 *     d x_l += dq · q_w + dk · k_w + dv · v_w
 *   demb [N, D] = LN_emb backward(dx);  word[id] += demb, pos[p] += demb, type[0] += demb */
void umt_bert_backward(umt_params *Pm, umt_workspace *w, const float *dout) {
  const tdims d = dims(&Pm->cfg);
  const umt_view *p = &Pm->p, *g = &Pm->g;
  const int n = w->n, N = w->N;
  const size_t ND = (size_t)N * d.D, NI = (size_t)N * d.IM;
  const size_t lND = (size_t)w->cap_N * d.D, lNI = (size_t)w->cap_N * d.IM;
  float *dx = w->d_a, *db = w->d_b, *dc = w->d_c, *dbig = w->d_big;

  float *dpooled = dc;
  switch (Pm->cfg.text.projection) {
  case UNIMED_PROJ_MLP:
    umt_linear_backward(dout, w->t_hact, p->proj2, n, d.H2, d.E, dbig, g->proj2, NULL);
    umt_gelu_backward(dbig, w->t_h, dbig, (size_t)n * d.H2);
    umt_linear_backward(dbig, w->t_pooled, p->proj0, n, d.D, d.H2, dpooled, g->proj0, NULL);
    break;
  case UNIMED_PROJ_LINEAR:
    umt_linear_backward(dout, w->t_pooled, p->tproj, n, d.D, d.E, dpooled, g->tproj, NULL);
    break;
  case UNIMED_PROJ_NONE:
    memcpy(dpooled, dout, (size_t)n * d.D * sizeof(float));
    break;
  }
  memset(dx, 0, ND * sizeof(float));
  for (int s = 0; s < n; s++)
    memcpy(dx + (size_t)w->t_start[s] * d.D, dpooled + (size_t)s * d.D,
           (size_t)d.D * sizeof(float));

  for (int l = d.layers - 1; l >= 0; l--) {
    const umt_bert_layer *b = &p->tl[l];
    const umt_bert_layer *gb = &g->tl[l];
    const float *x = w->t_x + l * lND;
    const float *q = w->t_q + l * lND, *k = w->t_k + l * lND, *v = w->t_v + l * lND;
    const float *ctx = w->t_ctx + l * lND, *res1 = w->t_res1 + l * lND, *a = w->t_a + l * lND;
    const float *inter = w->t_inter + l * lNI, *act = w->t_act + l * lNI;
    const float *res2 = w->t_res2 + l * lND;
    const float *probs = w->t_probs + l * w->t_psize;

    /* x_{l+1} = LN_2(res2), res2 = a + out(gelu(inter(a))) */
    memset(db, 0, ND * sizeof(float));
    umt_layernorm_backward(dx, res2, b->out_ln_w, N, d.D, d.eps, db, gb->out_ln_w, gb->out_ln_b);
    umt_linear_backward(db, act, b->out_w, N, d.IM, d.D, dbig, gb->out_w, gb->out_b);
    umt_gelu_backward(dbig, inter, dbig, NI);
    umt_linear_backward(dbig, a, b->inter_w, N, d.D, d.IM, dc, gb->inter_w, gb->inter_b);
    um_add(db, dc, ND); /* db = d a */

    /* a = LN_1(res1), res1 = x + attn_out(ctx) */
    memset(dx, 0, ND * sizeof(float));
    umt_layernorm_backward(db, res1, b->attn_ln_w, N, d.D, d.eps, dx, gb->attn_ln_w,
                           gb->attn_ln_b);
    umt_linear_backward(dx, ctx, b->attn_out_w, N, d.D, d.D, db, gb->attn_out_w, gb->attn_out_b);
    float *dq = dbig, *dk = dbig + ND, *dv = dbig + 2 * ND;
    for (int s = 0; s < n; s++) {
      size_t o = (size_t)w->t_start[s] * d.D;
      umt_attention_backward(db + o, d.D, q + o, k + o, v + o, d.D, probs + w->t_poff[s],
                             w->t_start[s + 1] - w->t_start[s], d.H, d.hd, dq + o, dk + o, dv + o,
                             w->d_scores);
    }
    umt_linear_backward(dq, x, b->q_w, N, d.D, d.D, dc, gb->q_w, gb->q_b);
    um_add(dx, dc, ND);
    umt_linear_backward(dk, x, b->k_w, N, d.D, d.D, dc, gb->k_w, gb->k_b);
    um_add(dx, dc, ND);
    umt_linear_backward(dv, x, b->v_w, N, d.D, d.D, dc, gb->v_w, gb->v_b);
    um_add(dx, dc, ND);
  }

  memset(db, 0, ND * sizeof(float));
  umt_layernorm_backward(dx, w->t_emb, p->emb_ln_w, N, d.D, d.eps, db, g->emb_ln_w, g->emb_ln_b);
  for (int s = 0; s < n; s++)
    for (int r = w->t_start[s]; r < w->t_start[s + 1]; r++) {
      const float *gr = db + (size_t)r * d.D;
      float *gw = g->word_emb + (size_t)w->t_ids[r] * d.D;
      float *gp = g->tpos_emb + (size_t)(r - w->t_start[s]) * d.D;
      for (int j = 0; j < d.D; j++) {
        gw[j] += gr[j];
        gp[j] += gr[j];
        g->type_emb[j] += gr[j];
      }
    }
}
