/* Image tower: OpenCLIP VisionTransformer.
 *
 *   pixels [B, 3, S, S]
 *   -> patches [B*G*G, 3*P*P] · conv1^T          (conv1 as one GEMM, no bias)
 *   -> x [B, T, D] = [class | patches] + pos      (T = G*G + 1)
 *   -> ln_pre
 *   -> layers × { x += out_proj(attn(ln_1(x))); x += c_proj(act(c_fc(ln_2(x)))) }
 *   -> ln_post(x[:, 0]) · proj                    [B, E]
 */
#include <string.h>

#include "internal.h"

typedef struct {
  float *x, *ln, *qkv, *attn, *hidden, *patches, *scores, *pooled;
} vit_buffers;

static size_t vit_layout(const unimed_config *c, int B, vit_buffers *b, float *base) {
  const int G = c->vision.image_size / c->vision.patch_size;
  const size_t T = (size_t)G * G + 1, D = (size_t)c->vision.width;
  const size_t F = (size_t)(c->vision.mlp_ratio * c->vision.width + 0.5f);
  const size_t P3 = 3 * (size_t)c->vision.patch_size * c->vision.patch_size;
  size_t sizes[8] = {B * T * D, B * T * D, B * T * 3 * D, B * T * D, B * T * F,
                     B * (T - 1) * P3, T * T, (size_t)B * D};
  float **slots[8] = {&b->x, &b->ln, &b->qkv, &b->attn, &b->hidden, &b->patches, &b->scores,
                      &b->pooled};
  size_t off = 0;
  for (int i = 0; i < 8; i++) {
    if (base) *slots[i] = base + off;
    off += (sizes[i] + 15) / 16 * 16; /* keep every slice 64-byte aligned */
  }
  return off;
}

size_t um_vit_workspace_floats(const unimed_config *c, int batch) {
  vit_buffers b;
  return vit_layout(c, batch, &b, NULL);
}

/* patches[p, (c, ky, kx)] for one image, matching conv1.weight's [D, 3, P, P]. */
static void im2col(const float *img, int S, int P, float *patches) {
  const int G = S / P;
  for (int gy = 0; gy < G; gy++)
    for (int gx = 0; gx < G; gx++) {
      float *dst = patches + ((size_t)gy * G + gx) * 3 * P * P;
      for (int ch = 0; ch < 3; ch++)
        for (int ky = 0; ky < P; ky++) {
          const float *src = img + ((size_t)ch * S + (size_t)gy * P + ky) * S + (size_t)gx * P;
          memcpy(dst, src, (size_t)P * sizeof(float));
          dst += P;
        }
    }
}

void um_vit_forward(unimed_model *m, const float *pixels, int B, float *out) {
  const unimed_config *c = &m->cfg;
  const vit_weights *w = &m->vit;
  const int S = c->vision.image_size, P = c->vision.patch_size, G = S / P;
  const int T = G * G + 1, D = c->vision.width, H = c->vision.heads, hd = D / H;
  const int F = (int)(c->vision.mlp_ratio * D + 0.5f), P3 = 3 * P * P;
  const float eps = c->vision.layer_norm_eps;
  vit_buffers b;
  vit_layout(c, B, &b, m->ws);

  /* Patch embedding: one GEMM over all patches of all images. */
  for (int i = 0; i < B; i++)
    im2col(pixels + (size_t)i * 3 * S * S, S, P, b.patches + (size_t)i * (T - 1) * P3);
  um_linear(b.patches, B * (T - 1), P3, w->conv1_w, NULL, D, b.hidden);
  for (int i = 0; i < B; i++) {
    float *xi = b.x + (size_t)i * T * D;
    for (int d = 0; d < D; d++) xi[d] = w->class_emb[d] + w->pos_emb[d];
    const float *pe = b.hidden + (size_t)i * (T - 1) * D;
    for (int t = 1; t < T; t++)
      for (int d = 0; d < D; d++)
        xi[(size_t)t * D + d] = pe[(size_t)(t - 1) * D + d] + w->pos_emb[(size_t)t * D + d];
  }
  const size_t BT = (size_t)B * T;
  um_layernorm(b.x, b.x, (int)BT, D, w->ln_pre_w, w->ln_pre_b, eps);

  for (int l = 0; l < c->vision.layers; l++) {
    const vit_block_weights *bw = &w->blocks[l];
    /* Attention: x += out_proj(MHA(ln_1(x))) */
    um_layernorm(b.x, b.ln, (int)BT, D, bw->ln_1_w, bw->ln_1_b, eps);
    um_linear(b.ln, (int)BT, D, bw->in_proj_w, bw->in_proj_b, 3 * D, b.qkv);
    for (int i = 0; i < B; i++) {
      const float *qkv = b.qkv + (size_t)i * T * 3 * D;
      um_attention(qkv, qkv + D, qkv + 2 * D, 3 * D, T, H, hd, b.attn + (size_t)i * T * D, D,
                   b.scores);
    }
    um_linear(b.attn, (int)BT, D, bw->out_proj_w, bw->out_proj_b, D, b.ln);
    um_add(b.x, b.ln, BT * D);
    /* MLP: x += c_proj(act(c_fc(ln_2(x)))) */
    um_layernorm(b.x, b.ln, (int)BT, D, bw->ln_2_w, bw->ln_2_b, eps);
    um_linear(b.ln, (int)BT, D, bw->fc_w, bw->fc_b, F, b.hidden);
    if (c->vision.activation == UNIMED_ACT_QUICK_GELU)
      um_quick_gelu(b.hidden, BT * F);
    else
      um_gelu(b.hidden, BT * F);
    um_linear(b.hidden, (int)BT, F, bw->cproj_w, bw->cproj_b, D, b.ln);
    um_add(b.x, b.ln, BT * D);
  }

  /* ln_post on the class token, then the projection [D, E]. */
  for (int i = 0; i < B; i++)
    um_layernorm(b.x + (size_t)i * T * D, b.pooled + (size_t)i * D, 1, D, w->ln_post_w,
                 w->ln_post_b, eps);
  um_matmul(b.pooled, B, D, w->proj, c->embed_dim, out);
}
