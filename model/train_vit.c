/* Image tower for training: the forward of vit.c (same kernels, same order
 * of operations) keeping every activation, and its backward.
 *
 *   pixels [B, 3, S, S] → patches [B·G², 3P²] · conv1^T → emb [B, T, D]
 *   x_0 = ln_pre(emb)
 *   block l: xmid = x_l + out_proj(attn(ln_1(x_l)))
 *            x_{l+1} = xmid + c_proj(act(c_fc(ln_2(xmid))))
 *   out [B, E] = ln_post(x_L[:, 0]) · proj
 */
#include <cblas.h>
#include <string.h>

#include "internal.h"
#include "train.h"

typedef struct {
  int B, S, P, G, T, D, H, hd, F, P3, E, layers, quick;
  size_t BT;
  float eps;
} vdims;

static vdims dims(const unimed_config *c, int B) {
  vdims d;
  d.B = B;
  d.S = c->vision.image_size;
  d.P = c->vision.patch_size;
  d.G = d.S / d.P;
  d.T = d.G * d.G + 1;
  d.D = c->vision.width;
  d.H = c->vision.heads;
  d.hd = d.D / d.H;
  d.F = (int)(c->vision.mlp_ratio * d.D + 0.5f);
  d.P3 = 3 * d.P * d.P;
  d.E = c->embed_dim;
  d.layers = c->vision.layers;
  d.quick = c->vision.activation == UNIMED_ACT_QUICK_GELU;
  d.BT = (size_t)B * d.T;
  d.eps = c->vision.layer_norm_eps;
  return d;
}

/* patches[p, (c, ky, kx)] of one image, matching conv1.weight [D, 3, P, P]. */
static void patchify(const float *img, int S, int P, float *patches) {
  const int G = S / P;
  for (int gy = 0; gy < G; gy++)
    for (int gx = 0; gx < G; gx++) {
      float *dst = patches + ((size_t)gy * G + gx) * 3 * P * P;
      for (int ch = 0; ch < 3; ch++)
        for (int ky = 0; ky < P; ky++, dst += P)
          memcpy(dst, img + ((size_t)ch * S + (size_t)gy * P + ky) * S + (size_t)gx * P,
                 (size_t)P * sizeof(float));
    }
}

void umt_vit_forward(const umt_params *Pm, umt_workspace *w, const float *pixels, int B) {
  const vdims d = dims(&Pm->cfg, B);
  const umt_view *p = &Pm->p;
  const size_t BT = d.BT, BTD = BT * d.D;
  w->B = B;

  /* Patch embedding as one GEMM: pe [B·(T−1), D] = patches · conv1^T. */
  for (int i = 0; i < B; i++)
    patchify(pixels + (size_t)i * 3 * d.S * d.S, d.S, d.P,
             w->v_patches + (size_t)i * (d.T - 1) * d.P3);
  float *pe = w->d_a;
  um_linear(w->v_patches, B * (d.T - 1), d.P3, p->conv1_w, NULL, d.D, pe);
  /* emb [B, T, D] = [class | pe] + pos */
  for (int i = 0; i < B; i++) {
    float *e = w->v_emb + (size_t)i * d.T * d.D;
    for (int k = 0; k < d.D; k++) e[k] = p->class_emb[k] + p->pos_emb[k];
    const float *src = pe + (size_t)i * (d.T - 1) * d.D;
    for (int t = 1; t < d.T; t++)
      for (int k = 0; k < d.D; k++)
        e[(size_t)t * d.D + k] = src[(size_t)(t - 1) * d.D + k] + p->pos_emb[(size_t)t * d.D + k];
  }
  um_layernorm(w->v_emb, w->v_x, (int)BT, d.D, p->ln_pre_w, p->ln_pre_b, d.eps);

  for (int l = 0; l < d.layers; l++) {
    const umt_vit_block *b = &p->vb[l];
    const float *x = w->v_x + l * BTD;
    float *ln1 = w->v_ln1 + l * BTD, *qkv = w->v_qkv + l * BTD * 3, *ctx = w->v_ctx + l * BTD;
    float *probs = w->v_probs + (size_t)l * B * d.H * d.T * d.T;
    float *xmid = w->v_xmid + l * BTD, *ln2 = w->v_ln2 + l * BTD;
    float *fc = w->v_fc + l * BT * d.F, *act = w->v_act + l * BT * d.F;
    float *xout = w->v_x + (l + 1) * BTD;

    um_layernorm(x, ln1, (int)BT, d.D, b->ln_1_w, b->ln_1_b, d.eps);
    um_linear(ln1, (int)BT, d.D, b->in_proj_w, b->in_proj_b, 3 * d.D, qkv);
    for (int i = 0; i < B; i++) {
      const float *q = qkv + (size_t)i * d.T * 3 * d.D;
      umt_attention_forward(q, q + d.D, q + 2 * d.D, 3 * d.D, d.T, d.H, d.hd,
                            ctx + (size_t)i * d.T * d.D, d.D,
                            probs + (size_t)i * d.H * d.T * d.T);
    }
    um_linear(ctx, (int)BT, d.D, b->out_proj_w, b->out_proj_b, d.D, xmid);
    um_add(xmid, x, BTD);
    um_layernorm(xmid, ln2, (int)BT, d.D, b->ln_2_w, b->ln_2_b, d.eps);
    um_linear(ln2, (int)BT, d.D, b->fc_w, b->fc_b, d.F, fc);
    memcpy(act, fc, BT * d.F * sizeof(float));
    if (d.quick)
      um_quick_gelu(act, BT * d.F);
    else
      um_gelu(act, BT * d.F);
    um_linear(act, (int)BT, d.F, b->cproj_w, b->cproj_b, d.D, xout);
    um_add(xout, xmid, BTD);
  }

  const float *xL = w->v_x + (size_t)d.layers * BTD;
  for (int i = 0; i < B; i++)
    um_layernorm(xL + (size_t)i * d.T * d.D, w->v_pooled + (size_t)i * d.D, 1, d.D, p->ln_post_w,
                 p->ln_post_b, d.eps);
  um_matmul(w->v_pooled, B, d.D, p->vproj, d.E, w->v_out);
}

/* dout [B, E] → gradients += for every vision tensor.
 *   head:   dpooled [B, D] = dout · proj^T;  dproj [D, E] += pooled^T · dout
 *           dx [B, T, D] = ln_post backward on the class rows (others 0)
 *   block l (reverse), dx = d x_{l+1} [BT, D]:
 *           dact [BT, F] = dx · c_proj;  dfc = dact ⊙ act'(fc)
 *           dln2 [BT, D] = dfc · c_fc;   dx += ln_2 backward(dln2)      (= d xmid)
 *           dctx [BT, D] = dx · out_proj
 *           dqkv [BT, 3D] = attention backward(dctx) per image
 *           dln1 [BT, D] = dqkv · in_proj; dx += ln_1 backward(dln1)    (= d x_l)
 *   demb [BT, D] = ln_pre backward(dx)
 *           dclass [D] += Σ_i demb[i, 0];  dpos [T, D] += Σ_i demb[i, :]
 *           dconv1 [D, 3P²] += dpe^T [D, B(T−1)] · patches [B(T−1), 3P²] */
void umt_vit_backward(umt_params *Pm, umt_workspace *w, const float *dout) {
  const vdims d = dims(&Pm->cfg, w->B);
  const umt_view *p = &Pm->p, *g = &Pm->g;
  const int B = w->B;
  const size_t BT = d.BT, BTD = BT * d.D;
  float *dx = w->d_a, *db = w->d_b, *dbig = w->d_big;

  float *dpooled = w->d_c;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, d.D, d.E, 1.0f, dout, d.E, p->vproj,
              d.E, 0.0f, dpooled, d.D);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d.D, d.E, B, 1.0f, w->v_pooled, d.D, dout,
              d.E, 1.0f, g->vproj, d.E);
  memset(dx, 0, BTD * sizeof(float));
  const float *xL = w->v_x + (size_t)d.layers * BTD;
  for (int i = 0; i < B; i++)
    umt_layernorm_backward(dpooled + (size_t)i * d.D, xL + (size_t)i * d.T * d.D, p->ln_post_w, 1,
                           d.D, d.eps, dx + (size_t)i * d.T * d.D, g->ln_post_w, g->ln_post_b);

  for (int l = d.layers - 1; l >= 0; l--) {
    const umt_vit_block *b = &p->vb[l];
    const umt_vit_block *gb = &g->vb[l];
    const float *x = w->v_x + l * BTD, *ln1 = w->v_ln1 + l * BTD;
    const float *qkv = w->v_qkv + l * BTD * 3, *ctx = w->v_ctx + l * BTD;
    const float *probs = w->v_probs + (size_t)l * B * d.H * d.T * d.T;
    const float *xmid = w->v_xmid + l * BTD, *ln2 = w->v_ln2 + l * BTD;
    const float *fc = w->v_fc + l * BT * d.F, *act = w->v_act + l * BT * d.F;

    /* MLP branch */
    umt_linear_backward(dx, act, b->cproj_w, (int)BT, d.F, d.D, dbig, gb->cproj_w, gb->cproj_b);
    if (d.quick)
      umt_quick_gelu_backward(dbig, fc, dbig, BT * d.F);
    else
      umt_gelu_backward(dbig, fc, dbig, BT * d.F);
    umt_linear_backward(dbig, ln2, b->fc_w, (int)BT, d.D, d.F, db, gb->fc_w, gb->fc_b);
    umt_layernorm_backward(db, xmid, b->ln_2_w, (int)BT, d.D, d.eps, dx, gb->ln_2_w, gb->ln_2_b);

    /* attention branch */
    umt_linear_backward(dx, ctx, b->out_proj_w, (int)BT, d.D, d.D, db, gb->out_proj_w,
                        gb->out_proj_b);
    for (int i = 0; i < B; i++) {
      const size_t o3 = (size_t)i * d.T * 3 * d.D;
      const float *q = qkv + o3;
      umt_attention_backward(db + (size_t)i * d.T * d.D, d.D, q, q + d.D, q + 2 * d.D, 3 * d.D,
                             probs + (size_t)i * d.H * d.T * d.T, d.T, d.H, d.hd, dbig + o3,
                             dbig + o3 + d.D, dbig + o3 + 2 * d.D, w->d_scores);
    }
    umt_linear_backward(dbig, ln1, b->in_proj_w, (int)BT, d.D, 3 * d.D, db, gb->in_proj_w,
                        gb->in_proj_b);
    umt_layernorm_backward(db, x, b->ln_1_w, (int)BT, d.D, d.eps, dx, gb->ln_1_w, gb->ln_1_b);
  }

  memset(db, 0, BTD * sizeof(float));
  umt_layernorm_backward(dx, w->v_emb, p->ln_pre_w, (int)BT, d.D, d.eps, db, g->ln_pre_w,
                         g->ln_pre_b);
  float *dpe = w->d_c;
  for (int i = 0; i < B; i++) {
    const float *r = db + (size_t)i * d.T * d.D;
    for (int k = 0; k < d.D; k++) g->class_emb[k] += r[k];
    for (size_t k = 0; k < (size_t)d.T * d.D; k++) g->pos_emb[k] += r[k];
    memcpy(dpe + (size_t)i * (d.T - 1) * d.D, r + d.D, (size_t)(d.T - 1) * d.D * sizeof(float));
  }
  umt_linear_backward(dpe, w->v_patches, p->conv1_w, B * (d.T - 1), d.P3, d.D, NULL, g->conv1_w,
                      NULL);
}
