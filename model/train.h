/* Internal to model/: training UniMed-CLIP on the CPU (float32, OpenBLAS).
 *
 *   train_params.c  the parameter block (all tensors in one allocation, a
 *                   table of upstream names / shapes / offsets, a gradient
 *                   block of the same layout), load from and save to a model
 *                   directory
 *   train_layers.c  forward-with-saved-activations and backward of every
 *                   layer kind (linear, LayerNorm, attention, activations)
 *   train_vit.c     image tower forward / backward
 *   train_bert.c    text tower forward / backward (packed sequences)
 *   train_loss.c    symmetric CLIP loss (with the L2 normalisation)
 *   train_adamw.c   AdamW, cosine schedule, gradient clipping, the trainer
 *
 * Shapes are [rows, cols], row-major. Gradients always ACCUMULATE into the
 * gradient block (+=) so that several micro-batches can be summed before one
 * optimiser step; umt_zero_grad clears it. Activation gradients inside the
 * towers are overwritten unless a comment says "+=". Nothing allocates once
 * the workspace is sized (umt_workspace_reserve). Deterministic: no threads
 * other than OpenBLAS's, every reduction in a fixed order. */
#ifndef UNIMED_TRAIN_INTERNAL_H
#define UNIMED_TRAIN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "unimed_model.h"
#include "unimed_train.h" /* unimed_copy_file */

/* ---- parameter block ---- */

typedef struct {
  float *ln_1_w, *ln_1_b;
  float *in_proj_w, *in_proj_b;   /* [3D, D], [3D] : q | k | v */
  float *out_proj_w, *out_proj_b; /* [D, D], [D] */
  float *ln_2_w, *ln_2_b;
  float *fc_w, *fc_b;             /* [F, D], [F] */
  float *cproj_w, *cproj_b;       /* [D, F], [D] */
} umt_vit_block;

typedef struct {
  float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b; /* [D, D], [D] */
  float *attn_out_w, *attn_out_b;           /* [D, D], [D] */
  float *attn_ln_w, *attn_ln_b;
  float *inter_w, *inter_b;                 /* [I, D], [I] */
  float *out_w, *out_b;                     /* [D, I], [D] */
  float *out_ln_w, *out_ln_b;
} umt_bert_layer;

/* Pointers into a block (the parameters, or the gradients: same layout). */
typedef struct {
  /* vision */
  float *conv1_w;   /* [D, 3, P, P] = [D, 3*P*P] */
  float *class_emb; /* [D] */
  float *pos_emb;   /* [T, D] */
  float *ln_pre_w, *ln_pre_b, *ln_post_w, *ln_post_b;
  float *vproj;     /* [D, E] */
  umt_vit_block *vb;
  /* text */
  float *word_emb, *tpos_emb, *type_emb; /* [V, Dt], [maxpos, Dt], [types, Dt] */
  float *emb_ln_w, *emb_ln_b;
  umt_bert_layer *tl;
  float *pooler_w, *pooler_b; /* stored, unused by UniMed-CLIP: never trained */
  float *proj0, *proj2;       /* mlp: [H2, Dt], [E, H2] */
  float *tproj;               /* linear: [E, Dt] */
  float *logit_scale;         /* [] */
} umt_view;

enum {
  UMT_TRAIN = 1,    /* receives gradients and optimiser updates */
  UMT_DECAY = 2,    /* AdamW weight decay applies */
  UMT_OPTIONAL = 4, /* may be absent from a checkpoint (BERT pooler) */
};

typedef struct {
  char name[112];   /* upstream name, e.g. "visual.transformer.resblocks.0.ln_1.weight" */
  int ndim;
  int64_t shape[4];
  size_t offset;    /* floats from the block start (multiple of 16) */
  size_t numel;
  int flags;        /* UMT_* */
  int present;      /* 0: optional and absent from the source file (not saved) */
} umt_tensor;

typedef struct {
  unimed_config cfg;
  char src_dir[1024];   /* config.json and vocab.txt are copied from here */
  umt_tensor *t;
  int n;
  size_t total;         /* floats in each block */
  float *params, *grads;
  umt_view p, g;        /* views of params and grads */
} umt_params;

/* Weight-decay rule. The default follows the brief / UniMed's stated rule:
 * decay only weight matrices (>= 2-D) that are not embeddings; biases,
 * LayerNorm, class/positional/word/position/type embeddings and logit_scale
 * are not decayed. UMT_DECAY_OPENCLIP is OpenCLIP's stock rule (exclude
 * ndim < 2, names with "bn"/"ln"/"bias", logit_scale: embeddings ARE decayed). */
enum umt_decay_rule { UMT_DECAY_NO_EMBEDDINGS, UMT_DECAY_OPENCLIP };

/* Reads DIR/config.json and DIR/model.safetensors (any float dtype) into a
 * fresh block; grads zeroed. */
int umt_params_load(umt_params *P, const char *dir, enum umt_decay_rule rule, char *err,
                    size_t errlen);
void umt_params_free(umt_params *P);
/* Writes DIR/model.safetensors (float32, the source file's tensor order),
 * copies config.json and vocab.txt from the source directory. DIR is created
 * if needed; it may be the source directory itself. */
int umt_params_save(const umt_params *P, const char *dir, char *err, size_t errlen);
const umt_tensor *umt_params_find(const umt_params *P, const char *name);
void umt_zero_grad(umt_params *P);

/* ---- layer kernels (train_layers.c) ---- */

/* y[M,N] = x[M,K] · W[N,K]^T + b[N]:
 *   dx[M,K] = dy[M,N] · W[N,K]        (skipped when dx is NULL)
 *   dW[N,K] += dy^T[N,M] · x[M,K]
 *   db[N]  += sum_m dy[m,:]            (skipped when db is NULL) */
void umt_linear_backward(const float *dy, const float *x, const float *W, int M, int K, int N,
                         float *dx, float *dW, float *db);
/* y[r,:] = LN(x[r,:]) * w + b over D, recomputing mean / rstd from x:
 *   dx[rows,D] += ...; dw[D] += sum_r dy ⊙ xhat; db[D] += sum_r dy */
void umt_layernorm_backward(const float *dy, const float *x, const float *w, int rows, int D,
                            float eps, float *dx, float *dw, float *db);
/* pre[n] → activation; dx[n] = dy[n] * act'(pre[n]) (dx may alias dy). */
void umt_quick_gelu_backward(const float *dy, const float *pre, float *dx, size_t n);
void umt_gelu_backward(const float *dy, const float *pre, float *dx, size_t n);
/* Multi-head self-attention of one sequence, as um_attention, keeping the
 * softmax probabilities: probs [H, L, L]. q/k/v rows at stride ld, out at ldo. */
void umt_attention_forward(const float *q, const float *k, const float *v, int ld, int L, int H,
                           int hd, float *out, int ldo, float *probs);
/* Backward of the above: dout [L, H*hd] (stride ldo) → dq, dk, dv [L, H*hd]
 * (stride ld, overwritten). dprobs: L*L floats of scratch. */
void umt_attention_backward(const float *dout, int ldo, const float *q, const float *k,
                            const float *v, int ld, const float *probs, int L, int H, int hd,
                            float *dq, float *dk, float *dv, float *dprobs);

/* ---- towers (train_vit.c, train_bert.c) ---- */

/* Saved activations of one training batch; sized by umt_workspace_reserve. */
typedef struct {
  int B;             /* images */
  int n, N, Lmax;    /* texts, total tokens, longest text */
  int cap_B, cap_n, cap_N, cap_L;
  size_t cap_sumsq;
  float *mem;
  size_t mem_floats;
  /* vision */
  float *v_patches, *v_emb, *v_x, *v_ln1, *v_qkv, *v_probs, *v_ctx, *v_xmid, *v_ln2, *v_fc,
      *v_act, *v_pooled, *v_out;
  /* text */
  int *t_start;      /* [n + 1] token offset of every sequence */
  int *t_ids;        /* [N] packed ids */
  float *t_emb, *t_x, *t_q, *t_k, *t_v, *t_probs, *t_ctx, *t_res1, *t_a, *t_inter, *t_act,
      *t_res2, *t_pooled, *t_h, *t_hact, *t_out;
  size_t *t_poff;    /* [n] offset of each sequence's probs inside a layer's slice */
  size_t t_psize;    /* probs floats per layer (heads · cap_sumsq) */
  /* backward scratch */
  float *d_a, *d_b, *d_c, *d_big, *d_scores;
  /* loss */
  float *img_n, *txt_n, *logits, *d_img, *d_txt;
} umt_workspace;

/* Sizes the workspace for at most B images and n texts of N tokens in all,
 * none longer than L, Σ len² <= sumsq (attention probabilities); grows,
 * never shrinks. */
int umt_workspace_reserve(umt_workspace *w, const unimed_config *c, int B, int n, int N, int L,
                          size_t sumsq, char *err, size_t errlen);
void umt_workspace_free(umt_workspace *w);

/* The forwards need a workspace reserved for the batch (umt_trainer_accumulate
 * does that); a backward uses what the last forward of its tower saved.
 * pixels [B, 3, S, S] → w->v_out [B, E] (not normalised). */
void umt_vit_forward(const umt_params *P, umt_workspace *w, const float *pixels, int B);
/* dout [B, E] → parameter gradients += (uses w's saved activations). */
void umt_vit_backward(umt_params *P, umt_workspace *w, const float *dout);
/* Packed token ids ([CLS] first, no padding) → w->t_out [n, E]. */
void umt_bert_forward(const umt_params *P, umt_workspace *w, const int *const *ids,
                      const int *lens, int n);
void umt_bert_backward(umt_params *P, umt_workspace *w, const float *dout);

/* ---- loss (train_loss.c) ---- */

/* Symmetric CLIP loss over a batch of B pairs (row i of img with row i of
 * txt), img/txt [B, E] un-normalised:
 *   logits = exp(logit_scale) · norm(img) · norm(txt)^T
 *   loss = (CE(logits, T) + CE(logits^T, T)) / 2
 * with T the identity (groups NULL), or soft targets when captions repeat a
 * class (UniCL's label-aware targets): pairs i and j with
 * groups[i] == groups[j] != 0 are both positives, row i's target spread
 * evenly over its group; a group of 0 is a pair of its own. groups is used
 * only for B <= UMT_MAX_LOSS_BATCH.
 * Writes d_img, d_txt [B, E] (overwritten) and adds d(loss)/d(logit_scale)
 * to *d_logit_scale. Scratch: img_n, txt_n [B, E], logits [B, B]. */
#define UMT_MAX_LOSS_BATCH 4096
double umt_clip_loss(const float *img, const float *txt, int B, int E, const uint64_t *groups,
                     float logit_scale, float *d_img, float *d_txt, float *d_logit_scale,
                     float *img_n, float *txt_n, float *logits);

/* ---- optimiser and trainer (train_adamw.c) ---- */

typedef struct {
  float lr;            /* peak learning rate */
  float beta1, beta2, eps;
  float weight_decay;
  float grad_clip;     /* max global L2 norm; <= 0: no clipping */
  int warmup, total_steps; /* cosine schedule with linear warm-up (OpenCLIP cosine_lr) */
  int lazy_moments;    /* 1: AdamW moments calloc'd (zero pages mapped on demand, so
                          those of frozen tensors never become resident) */
} umt_opt_config;

/* OpenCLIP's cosine_lr: step < warmup: lr·(step+1)/warmup; after,
 * 0.5·(1 + cos(π·(step−warmup)/(total−warmup)))·lr. step counts from 0. */
float umt_cosine_lr(const umt_opt_config *o, int step);
/* Global L2 norm of the trainable gradients; scales them by
 * max_norm / (norm + 1e-6) when that is < 1 (torch.nn.utils.clip_grad_norm_). */
double umt_clip_grad_norm(umt_params *P, float max_norm);
/* One AdamW update (PyTorch's formula, decoupled decay on UMT_DECAY tensors)
 * at step t (1-based) with learning rate lr; m, v: moment blocks of P->total
 * floats. Then clamps logit_scale to [0, ln 100]. */
void umt_adamw_update(umt_params *P, float *m, float *v, int t, float lr,
                      const umt_opt_config *o);

typedef struct {
  umt_params P;
  umt_workspace w;
  umt_opt_config opt;
  float *m, *v;        /* AdamW moments (P.total floats each) */
  int step;            /* optimiser steps done */
  int micro;           /* micro-batches accumulated since the last step */
} umt_trainer;

int umt_trainer_init(umt_trainer *T, const char *model_dir, const umt_opt_config *opt,
                     enum umt_decay_rule rule, char *err, size_t errlen);
void umt_trainer_free(umt_trainer *T);
/* Forward + backward of one batch of B (image, text) pairs; gradients are
 * added to P.grads. pixels [B, 3, S, S]; ids[i] has lens[i] ids; groups
 * (may be NULL) as for umt_clip_loss. The image tower's backward pass is
 * skipped when none of its tensors has UMT_TRAIN. Returns 0 and the loss
 * in *loss, or -1 with err. */
int umt_trainer_accumulate(umt_trainer *T, const float *pixels, const int *const *ids,
                           const int *lens, const uint64_t *groups, int B, double *loss,
                           char *err, size_t errlen);
/* Averages the accumulated gradients over the micro-batches, clips, applies
 * AdamW at the scheduled lr, clamps logit_scale, zeroes the gradients.
 * Returns the gradient norm before clipping; *lr_used (may be NULL). */
double umt_trainer_step(umt_trainer *T, float *lr_used);

#endif
