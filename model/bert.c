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
 */
#include <string.h>

#include "internal.h"

typedef struct {
  float *x, *q, *k, *v, *ctx, *inter, *xc, *pooled, *hidden, *scratch;
  um_attn_seq *seqs;
  size_t scratch_per_thread;
} bert_buffers;

/* slots: threads the attention may use (each needs its own scratch). */
static size_t bert_layout(const unimed_config *c, int n, int N, int L, int slots, bert_buffers *b,
                          float *base) {
  const size_t D = (size_t)c->text.hidden_size, IM = (size_t)c->text.intermediate_size;
  const size_t H2 = ((size_t)c->text.hidden_size + (size_t)c->embed_dim) / 2;
  const size_t per = um_mha_scratch_floats(L, c->text.hidden_size / c->text.heads);
  const size_t seq_floats = ((size_t)n * sizeof(um_attn_seq) + sizeof(float) - 1) / sizeof(float);
  size_t sizes[11] = {N * D,         N * D,          N * D,        N * D,
                      N * D,         N * IM,         (size_t)n * D, (size_t)n * D,
                      (size_t)n * H2, (size_t)slots * per, seq_floats};
  float **slots_p[10] = {&b->x,   &b->q,  &b->k,      &b->v,      &b->ctx,
                         &b->inter, &b->xc, &b->pooled, &b->hidden, &b->scratch};
  size_t off = 0;
  for (int i = 0; i < 11; i++) {
    if (base) {
      if (i < 10)
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
                                int max_len) {
  bert_buffers b;
  return bert_layout(c, n_seqs, total_tokens, max_len, um_threads(), &b, NULL);
}

static void embed(const unimed_model *m, const int *const *ids, const int *lens, int n,
                  float *x) {
  const bert_weights *w = &m->bert;
  const int D = m->cfg.text.hidden_size;
  float *row = x;
  for (int s = 0; s < n; s++)
    for (int p = 0; p < lens[s]; p++, row += D) {
      const float *we = w->word_emb + (size_t)ids[s][p] * D;
      const float *pe = w->pos_emb + (size_t)p * D;
      for (int d = 0; d < D; d++) row[d] = we[d] + pe[d] + w->type_emb[d];
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
  while (slots > 1 && bert_layout(c, n, N, L, slots, &b, NULL) > m->ws_floats) slots--;
  bert_layout(c, n, N, L, slots, &b, m->ws);

  um_blas_begin();
  embed(m, ids, lens, n, b.x);
  um_layernorm(b.x, b.x, N, D, w->emb_ln_w, w->emb_ln_b, eps);

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
    um_mha(b.seqs, n, D, D, D, H, hd, b.scratch, b.scratch_per_thread, slots);
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
