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
  float *x, *q, *k, *v, *ctx, *tmp, *inter, *scores, *pooled, *hidden;
} bert_buffers;

static size_t bert_layout(const unimed_config *c, int n, int N, int L, bert_buffers *b,
                          float *base) {
  const size_t D = (size_t)c->text.hidden_size, IM = (size_t)c->text.intermediate_size;
  const size_t H2 = ((size_t)c->text.hidden_size + (size_t)c->embed_dim) / 2;
  size_t sizes[10] = {N * D, N * D, N * D, N * D, N * D, N * D, N * IM, (size_t)L * L,
                      (size_t)n * D, (size_t)n * H2};
  float **slots[10] = {&b->x,   &b->q,     &b->k,      &b->v,      &b->ctx,
                       &b->tmp, &b->inter, &b->scores, &b->pooled, &b->hidden};
  size_t off = 0;
  for (int i = 0; i < 10; i++) {
    if (base) *slots[i] = base + off;
    off += (sizes[i] + 15) / 16 * 16;
  }
  return off;
}

size_t um_bert_workspace_floats(const unimed_config *c, int n_seqs, int total_tokens,
                                int max_len) {
  bert_buffers b;
  return bert_layout(c, n_seqs, total_tokens, max_len, &b, NULL);
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
  bert_buffers b;
  bert_layout(c, n, N, L, &b, m->ws);

  embed(m, ids, lens, n, b.x);
  um_layernorm(b.x, b.x, N, D, w->emb_ln_w, w->emb_ln_b, eps);

  for (int l = 0; l < c->text.layers; l++) {
    const bert_layer_weights *lw = &w->layers[l];
    um_linear(b.x, N, D, lw->q_w, lw->q_b, D, b.q);
    um_linear(b.x, N, D, lw->k_w, lw->k_b, D, b.k);
    um_linear(b.x, N, D, lw->v_w, lw->v_b, D, b.v);
    for (int s = 0, start = 0; s < n; start += lens[s], s++) {
      size_t o = (size_t)start * D;
      um_attention(b.q + o, b.k + o, b.v + o, D, lens[s], H, hd, b.ctx + o, D, b.scores);
    }
    um_linear(b.ctx, N, D, lw->attn_out_w, lw->attn_out_b, D, b.tmp);
    um_add_layernorm(b.x, b.tmp, N, D, lw->attn_ln_w, lw->attn_ln_b, eps);
    um_linear(b.x, N, D, lw->inter_w, lw->inter_b, IM, b.inter);
    um_gelu(b.inter, (size_t)N * IM);
    um_linear(b.inter, N, IM, lw->out_w, lw->out_b, D, b.tmp);
    um_add_layernorm(b.x, b.tmp, N, D, lw->out_ln_w, lw->out_ln_b, eps);
  }

  /* CLS pooling: the first token of every sequence. */
  for (int s = 0, start = 0; s < n; start += lens[s], s++)
    memcpy(b.pooled + (size_t)s * D, b.x + (size_t)start * D, (size_t)D * sizeof(float));

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
}
