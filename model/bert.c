/* Text tower: HuggingFace BertModel + CLS pooling + projection.
 *
 * Sequences are packed: only real tokens are computed, N = sum(lens). With
 * padding masked out (as UniMed does) real tokens never attend to pads, so
 * this equals the padded computation.
 *
 *   x [N, D] = LN(word[id] + pos[p] + type[0])
 *   layers × { x = LN(x + out(attn(q(x), k(x), v(x))));      (per sequence)
 *              x = LN(x + out2(gelu(inter(x)))) }
 *   pooled [n, D] = x at each sequence's [CLS]
 *   mlp:    [n, E] = gelu(pooled · proj0^T) · proj2^T     (no biases)
 *   linear: [n, E] = pooled · proj^T
 *
 * BF16 mode (m->bf16): bf16_layers / project_bf16 below, the same steps on
 * packed BF16 weights with q|k|v as one GEMM. INT8 mode (m->int8): the same
 * code, the encoder layers' weights quantized to int8 (split_linear).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
  float *x, *q, *k, *v, *ctx, *inter, *xc, *pooled, *hidden, *scratch;
  float *split_a, *split_c; /* BF16 mode: split_linear's row chunks */
  um_attn_seq *seqs;
  size_t scratch_per_thread;
} bert_buffers;

/* BF16 mode: the text tower's GEMMs take A in row chunks of SPLIT_ROWS. */
#define SPLIT_ROWS 48

/* slots: threads the attention may use (each needs its own scratch). */
/* fused: BF16 mode, q|k|v in one [N, 3D] buffer at b->q (k, v unused). */
static size_t bert_layout(const unimed_config *c, int n, int N, int L, int slots, int fused,
                          bert_buffers *b, float *base) {
  const size_t D = (size_t)c->text.hidden_size, IM = (size_t)c->text.intermediate_size;
  const size_t H2 = ((size_t)c->text.hidden_size + (size_t)c->embed_dim) / 2;
  const size_t per = um_mha_scratch_floats(L, c->text.hidden_size / c->text.heads);
  const size_t seq_floats = ((size_t)n * sizeof(um_attn_seq) + sizeof(float) - 1) / sizeof(float);
  /* split_linear: 2 x SPLIT_ROWS rows of the widest A and C */
  size_t wide = 3 * D > IM ? 3 * D : IM;
  wide = wide > H2 ? wide : H2;
  wide = wide > (size_t)c->embed_dim ? wide : (size_t)c->embed_dim;
  /* split_c: then one row of quantized A (wide bytes) */
  const size_t split = fused ? 2 * SPLIT_ROWS * wide : 0;
  size_t sizes[13] = {N * D,         (fused ? 3 : 1) * N * D, fused ? 0 : N * D, fused ? 0 : N * D,
                      N * D,         N * IM,         (size_t)n * D, (size_t)n * D,
                      (size_t)n * H2, (size_t)slots * per, split, split ? split + wide : 0,
                      seq_floats};
  float **slots_p[12] = {&b->x,     &b->q,  &b->k,      &b->v,      &b->ctx,     &b->inter,
                         &b->xc,    &b->pooled, &b->hidden, &b->scratch, &b->split_a,
                         &b->split_c};
  size_t off = 0;
  for (int i = 0; i < 13; i++) {
    if (base) {
      if (i < 12)
        *slots_p[i] = base + off;
      else
        b->seqs = (um_attn_seq *)(void *)(base + off);
    }
    off += (sizes[i] + 15) / 16 * 16;
  }
  b->scratch_per_thread = per;
  return off;
}

size_t um_bert_workspace_floats(const unimed_config *c, int n_seqs, int total_tokens,
                                int max_len, int fused_qkv) {
  bert_buffers b;
  return bert_layout(c, n_seqs, total_tokens, max_len, um_threads(), fused_qkv, &b, NULL);
}

static void embed(const unimed_model *m, const int *const *ids, const int *lens, int n,
                  float *x) {
  const bert_weights *w = &m->bert;
  const uint16_t *we16 = m->word_emb16; /* BF16 file in BF16 mode */
  const int D = m->cfg.text.hidden_size;
  float *row = x;
  for (int s = 0; s < n; s++)
    for (int p = 0; p < lens[s]; p++, row += D) {
      const float *pe = w->pos_emb + (size_t)p * D;
      if (we16) {
        const uint16_t *we = we16 + (size_t)ids[s][p] * D;
        for (int d = 0; d < D; d++) {
          const uint32_t u = (uint32_t)we[d] << 16;
          float f;
          memcpy(&f, &u, sizeof f);
          row[d] = f + pe[d] + w->type_emb[d];
        }
        continue;
      }
      const float *we = w->word_emb + (size_t)ids[s][p] * D;
      for (int d = 0; d < D; d++) row[d] = we[d] + pe[d] + w->type_emb[d];
    }
}

/* BF16 mode. The text tower rounds its activations less than the image
 * tower: each GEMM's A is split into a BF16 high part and a BF16 low part
 * (A - high), both multiplied by the packed weights in one call (the two
 * stacked as 2 x SPLIT_ROWS rows, so the weights are read once per chunk)
 * and summed in FP32. The error left is the weights' rounding. With random
 * weights, BF16 activations in BERT moved near-tied zero-shot rankings
 * (docs/PERFORMANCE.md); text embeddings are computed once per label set and
 * cached, and a short prompt is bound by reading the weights, so the extra
 * arithmetic costs little where it matters.
 *
 * INT8 mode splits the same way with int8 parts: the high part is A on its
 * row's 8-bit grid (as um_linear_i8 quantizes it), the low part the rest,
 * quantized on a grid some 255 times finer; the error left is again mostly
 * the weights'. */
enum { T_BIAS, T_ACC, T_GELU };

/* UNIMED_BF16_SPLIT=0 in the environment: plain BF16 activations (to compare). */
static int split_enabled(void) {
  static int v = -1;
  if (v < 0) {
    const char *e = getenv("UNIMED_BF16_SPLIT");
    v = !(e && e[0] == '0');
  }
  return v;
}

static void split_linear(const bert_buffers *b, const float *A, int M, int K,
                         const um_bf16_weight *W, const um_i8_weight *W8, const float *bias,
                         int N, float *C, int epi) {
  if (!split_enabled()) {
    um_linear_packed(W, W8, A, M, K, bias, N, C,
                     epi == T_ACC ? UM_EPI_ACC : epi == T_GELU ? UM_EPI_GELU : UM_EPI_BIAS);
    return;
  }
  float *a2 = b->split_a, *c2 = b->split_c;
  unsigned char *q = (unsigned char *)(c2 + (size_t)2 * SPLIT_ROWS * N); /* K bytes */
  for (int r0 = 0; r0 < M; r0 += SPLIT_ROWS) {
    const int mr = M - r0 < SPLIT_ROWS ? M - r0 : SPLIT_ROWS;
    for (int i = 0; i < mr; i++) {
      const float *a = A + (size_t)(r0 + i) * K;
      float *hi = a2 + (size_t)i * K, *lo = a2 + (size_t)(mr + i) * K;
      if (W8) {
        float scale;
        int zero;
        um_i8_quantize_row(a, K, &scale, &zero, q);
        for (int k = 0; k < K; k++) {
          hi[k] = scale * (float)((int)q[k] - zero);
          lo[k] = a[k] - hi[k];
        }
        continue;
      }
      um_bf16_split(a, (size_t)K, hi, lo);
    }
    um_linear_packed(W, W8, a2, 2 * mr, K, NULL, N, c2, UM_EPI_BIAS);
    for (int i = 0; i < mr; i++) {
      const float *h = c2 + (size_t)i * N, *l = c2 + (size_t)(mr + i) * N;
      float *c = C + (size_t)(r0 + i) * N;
      /* separate loops per case, so that the compiler vectorises each */
      if (epi == T_ACC && bias)
        for (int n = 0; n < N; n++) c[n] += h[n] + l[n] + bias[n];
      else if (epi == T_ACC)
        for (int n = 0; n < N; n++) c[n] += h[n] + l[n] + 0.0f;
      else if (bias)
        for (int n = 0; n < N; n++) c[n] = h[n] + l[n] + bias[n];
      else
        for (int n = 0; n < N; n++) c[n] = h[n] + l[n] + 0.0f;
    }
    if (epi == T_GELU) um_gelu(C + (size_t)r0 * N, (size_t)mr * N);
  }
}

/* BF16 mode: the encoder layers with packed weights. q|k|v is one GEMM
 * into [N, 3D] (in the last layer too: the queries of non-[CLS] tokens are
 * computed and unused, 1/36 of a layer), biases, residual adds and GELU are
 * fused into the GEMMs; the [CLS] rows end up in b->xc. */
static void bf16_layers(const unimed_model *m, const int *const *ids, const int *lens, int n,
                        int N, const bert_buffers *bp, int slots) {
  (void)ids;
  const unimed_config *c = &m->cfg;
  const bert_weights *w = &m->bert;
  const bert_weights_bf16 *w16 = &m->w16->bert;
  const int D = c->text.hidden_size, H = c->text.heads, hd = D / H;
  const int IM = c->text.intermediate_size;
  const float eps = c->text.layer_norm_eps;
  const bert_buffers b = *bp;
  float *qkv = b.q;
  const int layers = c->text.layers;
  for (int l = 0; l < layers; l++) {
    const bert_layer_weights *lw = &w->layers[l];
    const bert_layer_bf16 *l16 = &w16->layers[l];
    const int last = l == layers - 1;
    split_linear(&b, b.x, N, D, l16->qkv, l16->qkv8, l16->qkv_b, 3 * D, qkv, T_BIAS);
    if (last)
      for (int s = 0, start = 0; s < n; start += lens[s], s++)
        memcpy(b.xc + (size_t)s * D, b.x + (size_t)start * D, (size_t)D * sizeof(float));
    for (int s = 0, start = 0; s < n; start += lens[s], s++) {
      const float *q = qkv + (size_t)start * 3 * D;
      b.seqs[s] = (um_attn_seq){q, q + D, q + 2 * D,
                                b.ctx + (size_t)(last ? s : start) * D, last ? 1 : lens[s],
                                lens[s]};
    }
    um_mha(b.seqs, n, 3 * D, 3 * D, D, H, hd, b.scratch, b.scratch_per_thread, slots, 0);
    float *x = last ? b.xc : b.x;
    const int rows = last ? n : N;
    split_linear(&b, b.ctx, rows, D, l16->attn_out, l16->attn_out8, lw->attn_out_b, D, x, T_ACC);
    um_layernorm_bias(x, NULL, x, rows, D, lw->attn_ln_w, lw->attn_ln_b, eps);
    split_linear(&b, x, rows, D, l16->inter, l16->inter8, lw->inter_b, IM, b.inter, T_GELU);
    split_linear(&b, b.inter, rows, IM, l16->out, l16->out8, lw->out_b, D, x, T_ACC);
    um_layernorm_bias(x, NULL, x, rows, D, lw->out_ln_w, lw->out_ln_b, eps);
  }
  if (layers == 0)
    for (int s = 0, start = 0; s < n; start += lens[s], s++)
      memcpy(b.xc + (size_t)s * D, b.x + (size_t)start * D, (size_t)D * sizeof(float));
}

/* BF16 mode: the projection of the [CLS] rows b->xc → out [n, E]. */
static void project_bf16(const unimed_model *m, const bert_buffers *b, int n, float *out) {
  const unimed_config *c = &m->cfg;
  const bert_weights_bf16 *w16 = &m->w16->bert;
  const int D = c->text.hidden_size, E = c->embed_dim, H2 = (D + E) / 2;
  switch (c->text.projection) {
  case UNIMED_PROJ_MLP:
    split_linear(b, b->xc, n, D, w16->proj0, NULL, NULL, H2, b->hidden, T_GELU);
    split_linear(b, b->hidden, n, H2, w16->proj2, NULL, NULL, E, out, T_BIAS);
    break;
  case UNIMED_PROJ_LINEAR:
    split_linear(b, b->xc, n, D, w16->proj, NULL, NULL, E, out, T_BIAS);
    break;
  case UNIMED_PROJ_NONE:
    memcpy(out, b->xc, (size_t)n * D * sizeof(float));
    break;
  }
}

void um_bert_forward(unimed_model *m, const int *const *ids, const int *lens, int n,
                     float *out) {
  const unimed_config *c = &m->cfg;
  const bert_weights *w = &m->bert;
  const int D = c->text.hidden_size, H = c->text.heads, hd = D / H;
  const int IM = c->text.intermediate_size, E = c->embed_dim;
  const float eps = c->text.layer_norm_eps;
  int N = 0, L = 0;
  for (int s = 0; s < n; s++) {
    N += lens[s];
    L = lens[s] > L ? lens[s] : L;
  }
  int slots = um_threads();
  bert_buffers b;
  const bert_weights_bf16 *w16 = m->bf16 ? &m->w16->bert : NULL;
  while (slots > 1 && bert_layout(c, n, N, L, slots, !!w16, &b, NULL) > m->ws_floats) slots--;
  bert_layout(c, n, N, L, slots, !!w16, &b, m->ws);

  um_blas_begin();
  embed(m, ids, lens, n, b.x);
  um_layernorm(b.x, b.x, N, D, w->emb_ln_w, w->emb_ln_b, eps);
  if (w16) {
    bf16_layers(m, ids, lens, n, N, &b, slots);
    project_bf16(m, &b, n, out);
    um_blas_end();
    return;
  }

  /* Post-LN residuals: the output GEMMs accumulate into x, and the
   * LayerNorm adds their bias. The last layer needs every token's keys and
   * values but only the [CLS] rows after that: they continue as xc [n, D]. */
  const int layers = c->text.layers;
  for (int l = 0; l < layers; l++) {
    const bert_layer_weights *lw = &w->layers[l];
    const int last = l == layers - 1;
    um_linear(b.x, N, D, lw->k_w, lw->k_b, D, b.k);
    um_linear(b.x, N, D, lw->v_w, lw->v_b, D, b.v);
    if (last) {
      for (int s = 0, start = 0; s < n; start += lens[s], s++)
        memcpy(b.xc + (size_t)s * D, b.x + (size_t)start * D, (size_t)D * sizeof(float));
      um_linear(b.xc, n, D, lw->q_w, lw->q_b, D, b.q);
    } else {
      um_linear(b.x, N, D, lw->q_w, lw->q_b, D, b.q);
    }
    for (int s = 0, start = 0; s < n; start += lens[s], s++) {
      const size_t o = (size_t)start * D, oq = last ? (size_t)s * D : o;
      b.seqs[s] = (um_attn_seq){b.q + oq, b.k + o, b.v + o, b.ctx + oq, last ? 1 : lens[s],
                                lens[s]};
    }
    um_mha(b.seqs, n, D, D, D, H, hd, b.scratch, b.scratch_per_thread, slots, 0);
    float *x = last ? b.xc : b.x;
    const int rows = last ? n : N;
    um_linear_acc(b.ctx, rows, D, lw->attn_out_w, D, x);
    um_layernorm_bias(x, lw->attn_out_b, x, rows, D, lw->attn_ln_w, lw->attn_ln_b, eps);
    um_linear_act(x, rows, D, lw->inter_w, lw->inter_b, IM, b.inter, UNIMED_ACT_GELU);
    um_linear_acc(b.inter, rows, IM, lw->out_w, D, x);
    um_layernorm_bias(x, lw->out_b, x, rows, D, lw->out_ln_w, lw->out_ln_b, eps);
  }

  /* CLS pooling: the first token of every sequence. */
  if (layers == 0)
    for (int s = 0, start = 0; s < n; start += lens[s], s++)
      memcpy(b.xc + (size_t)s * D, b.x + (size_t)start * D, (size_t)D * sizeof(float));
  memcpy(b.pooled, b.xc, (size_t)n * D * sizeof(float));

  switch (c->text.projection) {
  case UNIMED_PROJ_MLP: {
    const int H2 = (D + E) / 2;
    um_linear(b.pooled, n, D, w->proj0, NULL, H2, b.hidden);
    um_gelu(b.hidden, (size_t)n * H2);
    um_linear(b.hidden, n, H2, w->proj2, NULL, E, out);
    break;
  }
  case UNIMED_PROJ_LINEAR:
    um_linear(b.pooled, n, D, w->proj, NULL, E, out);
    break;
  case UNIMED_PROJ_NONE:
    memcpy(out, b.pooled, (size_t)n * D * sizeof(float));
    break;
  }
  um_blas_end();
}
