/* Image tower: OpenCLIP VisionTransformer.
 *
 *   pixels [B, 3, S, S]
 *   -> patches [B*G*G, 3*P*P] · conv1^T          (conv1 as one GEMM, no bias)
 *   -> x [B, T, D] = [class | patches] + pos      (T = G*G + 1)
 *   -> ln_pre
 *   -> layers × { x += out_proj(attn(ln_1(x))); x += c_proj(act(c_fc(ln_2(x)))) }
 *   -> ln_post(x[:, 0]) · proj                    [B, E]
 *
 * FP32: OpenBLAS and our kernels (ops.c). BF16 (m->bf16): the same steps
 * with every linear layer a um_linear_bf16 call on packed weights, its bias,
 * residual add or activation fused into the GEMM; LayerNorm and attention
 * stay FP32. INT8 (m->int8): as BF16, with the blocks' four linear layers
 * um_linear_i8 calls (um_linear_packed picks whichever weight is packed).
 */
#include <string.h>

#include "internal.h"

typedef struct {
  float *x, *ln, *qkv, *attn, *hidden, *patches, *xc, *pooled, *scratch;
  um_attn_seq *seqs;
  size_t scratch_per_thread;
} vit_buffers;

/* slots: threads the attention may use (each needs its own scratch). */
static size_t vit_layout(const unimed_config *c, int B, int slots, vit_buffers *b, float *base) {
  const int G = c->vision.image_size / c->vision.patch_size;
  const size_t T = (size_t)G * G + 1, D = (size_t)c->vision.width;
  const size_t F = (size_t)(c->vision.mlp_ratio * c->vision.width + 0.5f);
  const size_t P3 = 3 * (size_t)c->vision.patch_size * c->vision.patch_size;
  const size_t per = um_mha_scratch_floats((int)T, c->vision.width / c->vision.heads);
  const size_t seq_floats = ((size_t)B * sizeof(um_attn_seq) + sizeof(float) - 1) / sizeof(float);
  size_t sizes[10] = {B * T * D, B * T * D, B * T * 3 * D, B * T * D, B * T * F,
                      B * (T - 1) * P3, (size_t)B * D, (size_t)B * D, (size_t)slots * per,
                      seq_floats};
  float **slots_p[9] = {&b->x, &b->ln, &b->qkv, &b->attn, &b->hidden, &b->patches, &b->xc,
                        &b->pooled, &b->scratch};
  size_t off = 0;
  for (int i = 0; i < 10; i++) {
    if (base) {
      if (i < 9)
        *slots_p[i] = base + off;
      else
        b->seqs = (um_attn_seq *)(void *)(base + off);
    }
    off += (sizes[i] + 15) / 16 * 16; /* keep every slice 64-byte aligned */
  }
  b->scratch_per_thread = per;
  return off;
}

size_t um_vit_workspace_floats(const unimed_config *c, int batch) {
  vit_buffers b;
  return vit_layout(c, batch, um_threads(), &b, NULL);
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
  /* As many attention threads as the workspace has scratch slices for (the
   * thread count may have changed since it was sized). */
  int slots = um_threads();
  vit_buffers b;
  while (slots > 1 && vit_layout(c, B, slots, &b, NULL) > m->ws_floats) slots--;
  vit_layout(c, B, slots, &b, m->ws);

  um_blas_begin();
  const vit_weights_bf16 *w16 = m->bf16 ? &m->w16->vit : NULL;
  /* Patch embedding: one GEMM over all patches of all images. */
  for (int i = 0; i < B; i++)
    im2col(pixels + (size_t)i * 3 * S * S, S, P, b.patches + (size_t)i * (T - 1) * P3);
  if (w16)
    um_linear_bf16(b.patches, B * (T - 1), P3, w16->conv1, NULL, D, b.hidden);
  else
    um_linear(b.patches, B * (T - 1), P3, w->conv1_w, NULL, D, b.hidden);
  for (int i = 0; i < B; i++) {
    float *xi = b.x + (size_t)i * T * D;
    for (int d = 0; d < D; d++) xi[d] = w->class_emb[d] + w->pos_emb[d];
    const float *pe = b.hidden + (size_t)i * (T - 1) * D;
    for (int t = 1; t < T; t++)
      for (int d = 0; d < D; d++)
        xi[(size_t)t * D + d] = pe[(size_t)(t - 1) * D + d] + w->pos_emb[(size_t)t * D + d];
  }
  const int BT = B * T;
  um_layernorm(b.x, b.x, BT, D, w->ln_pre_w, w->ln_pre_b, eps);

  /* The residual stream x gets each block's output added by the GEMM itself
   * (accumulating into x); that GEMM's bias is added by the next LayerNorm
   * pass ("pending"; the BF16 GEMMs add it themselves). In the last block
   * only the class tokens matter after attention: they continue as xc [B, D]. */
  const float *pending = NULL;
  const int L = c->vision.layers;
  for (int l = 0; l < L; l++) {
    const vit_block_weights *bw = &w->blocks[l];
    const int last = l == L - 1;
    const vit_block_bf16 *b16 = w16 ? &w16->blocks[l] : NULL;
    /* INT8: ln_1 / ln_2 are applied by the GEMM as it quantizes its input */
    const int ln_in_gemm = b16 && b16->in_proj8 && b16->fc8 && D <= UM_I8_LN_MAX_K;
    /* INT8: a batch goes through a block (but the last) one image at a time,
     * so that its q|k|v, attention and MLP activations stay in cache (at
     * batch 8 they would be 60 MB); those GEMMs give every row the same
     * result whatever the rows around it, so the results are unchanged. (In
     * BF16 mode the BF16 GEMMs lost more than the rest gained: batched.) */
    const int group = b16 && b16->in_proj8 && !last ? 1 : B;
    for (int g = 0; g < B; g += group) {
      float *xg = b.x + (size_t)g * T * D;
      const int rg = group * T;
      /* Attention: x += out_proj(MHA(ln_1(x))) */
      if (ln_in_gemm) {
        um_linear_i8_ln(xg, rg, D, bw->ln_1_w, bw->ln_1_b, eps, b16->in_proj8, bw->in_proj_b,
                        3 * D, b.qkv, UM_I8_EPI_BIAS);
      } else {
        um_layernorm_bias(xg, pending, b.ln, rg, D, bw->ln_1_w, bw->ln_1_b, eps);
        if (b16)
          um_linear_packed(b16->in_proj, b16->in_proj8, b.ln, rg, D, bw->in_proj_b, 3 * D,
                           b.qkv, UM_EPI_BIAS);
        else
          um_linear(b.ln, rg, D, bw->in_proj_w, bw->in_proj_b, 3 * D, b.qkv);
      }
      for (int i = 0; i < group; i++) {
        const float *qkv = b.qkv + (size_t)i * T * 3 * D;
        b.seqs[i] = (um_attn_seq){qkv, qkv + D, qkv + 2 * D,
                                  b.attn + (size_t)i * (last ? 1 : T) * D, last ? 1 : T, T};
      }
      um_mha(b.seqs, group, 3 * D, 3 * D, D, H, hd, b.scratch, b.scratch_per_thread, slots,
             m->bf16);
      float *x = xg;
      int rows = rg;
      if (last) { /* group == B */
        for (int i = 0; i < B; i++)
          memcpy(b.xc + (size_t)i * D, b.x + (size_t)i * T * D, (size_t)D * sizeof(float));
        x = b.xc;
        rows = B;
      }
      if (b16) {
        um_linear_packed(b16->out_proj, b16->out_proj8, b.attn, rows, D, bw->out_proj_b, D, x,
                         UM_EPI_ACC);
        /* MLP: x += c_proj(act(c_fc(ln_2(x)))) */
        const int quick = c->vision.activation == UNIMED_ACT_QUICK_GELU;
        if (ln_in_gemm) {
          um_linear_i8_ln(x, rows, D, bw->ln_2_w, bw->ln_2_b, eps, b16->fc8, bw->fc_b, F,
                          b.hidden, quick ? UM_I8_EPI_QUICK_GELU : UM_I8_EPI_GELU);
        } else {
          um_layernorm_bias(x, NULL, b.ln, rows, D, bw->ln_2_w, bw->ln_2_b, eps);
          um_linear_packed(b16->fc, b16->fc8, b.ln, rows, D, bw->fc_b, F, b.hidden,
                           quick ? UM_EPI_QUICK_GELU : UM_EPI_GELU);
        }
        um_linear_packed(b16->cproj, b16->cproj8, b.hidden, rows, F, bw->cproj_b, D, x,
                         UM_EPI_ACC);
        continue;
      }
      um_linear_acc(b.attn, rows, D, bw->out_proj_w, D, x);
      /* MLP: x += c_proj(act(c_fc(ln_2(x)))) */
      um_layernorm_bias(x, bw->out_proj_b, b.ln, rows, D, bw->ln_2_w, bw->ln_2_b, eps);
      um_linear_act(b.ln, rows, D, bw->fc_w, bw->fc_b, F, b.hidden, c->vision.activation);
      um_linear_acc(b.hidden, rows, F, bw->cproj_w, D, x);
      pending = bw->cproj_b;
    }
  }
  if (L == 0)
    for (int i = 0; i < B; i++)
      memcpy(b.xc + (size_t)i * D, b.x + (size_t)i * T * D, (size_t)D * sizeof(float));

  /* ln_post on the class tokens, then the projection [D, E]. */
  um_layernorm_bias(b.xc, pending, b.pooled, B, D, w->ln_post_w, w->ln_post_b, eps);
  if (w16)
    um_linear_bf16(b.pooled, B, D, w16->proj, NULL, c->embed_dim, out);
  else
    um_matmul(b.pooled, B, D, w->proj, c->embed_dim, out);
  um_blas_end();
}
