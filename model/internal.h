/* Internal to model/: the model object, its weights and the kernels shared
 * by both towers. Shapes are given as [rows, cols], row-major. */
#ifndef UNIMED_INTERNAL_H
#define UNIMED_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "gemm_bf16.h"
#include "gemm_i8.h"
#include "safetensors.h"
#include "tokenizer.h"
#include "unimed_model.h"

/* ---- weights (pointers into the mapping, or converted copies) ---- */

typedef struct {
  const float *ln_1_w, *ln_1_b;
  const float *in_proj_w, *in_proj_b;   /* [3D, D], [3D] : q | k | v */
  const float *out_proj_w, *out_proj_b; /* [D, D], [D] */
  const float *ln_2_w, *ln_2_b;
  const float *fc_w, *fc_b;             /* [F, D], [F] */
  const float *cproj_w, *cproj_b;       /* [D, F], [D] */
} vit_block_weights;

typedef struct {
  const float *conv1_w;   /* [D, 3*P*P] (conv [D,3,P,P] flattened) */
  const float *class_emb; /* [D] */
  const float *pos_emb;   /* [T, D], T = G*G + 1 */
  const float *ln_pre_w, *ln_pre_b;
  const float *ln_post_w, *ln_post_b;
  const float *proj;      /* [D, E] */
  vit_block_weights *blocks;
} vit_weights;

typedef struct {
  const float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b;  /* [D, D], [D] */
  const float *attn_out_w, *attn_out_b;            /* [D, D], [D] */
  const float *attn_ln_w, *attn_ln_b;
  const float *inter_w, *inter_b;                  /* [I, D], [I] */
  const float *out_w, *out_b;                      /* [D, I], [D] */
  const float *out_ln_w, *out_ln_b;
} bert_layer_weights;

typedef struct {
  const float *word_emb;  /* [V, D] */
  const float *pos_emb;   /* [maxpos, D] */
  const float *type_emb;  /* [types, D] */
  const float *emb_ln_w, *emb_ln_b;
  bert_layer_weights *layers;
  const float *proj0;     /* mlp: [H2, D] */
  const float *proj2;     /* mlp: [E, H2] */
  const float *proj;      /* linear: [E, D] */
} bert_weights;

/* BF16 mode: the linear weights packed for um_linear_bf16 (the float
 * pointers of the same weights above are NULL then; biases, LayerNorms and
 * embeddings stay FP32). INT8 mode: the same, with the *8 weights quantized
 * for um_linear_i8 in place of the BF16 ones for the layers that run INT8
 * (each layer has exactly one of the two; docs/MODEL.md says which). */
typedef struct {
  um_bf16_weight *in_proj, *out_proj, *fc, *cproj;
  um_i8_weight *in_proj8, *out_proj8, *fc8, *cproj8;
} vit_block_bf16;

typedef struct {
  um_bf16_weight *conv1;  /* [D, 3*P*P] */
  um_bf16_weight *proj;   /* [E, D]: visual.proj transposed */
  vit_block_bf16 *blocks;
} vit_weights_bf16;

typedef struct {
  um_bf16_weight *qkv;    /* [3D, D]: query | key | value */
  float *qkv_b;           /* [3D] */
  um_bf16_weight *attn_out, *inter, *out;
  um_i8_weight *qkv8, *attn_out8, *inter8, *out8;
} bert_layer_bf16;

typedef struct {
  bert_layer_bf16 *layers;
  um_bf16_weight *proj0, *proj2, *proj;
} bert_weights_bf16;

/* The packed weights of one safetensors file, shared by every model object
 * loaded from it in the same mode, BF16 or INT8 (model.c keeps a registry
 * keyed by the file's identity and the mode), freed with the last of them. */
typedef struct um_bf16_set um_bf16_set;
struct um_bf16_set {
  um_bf16_set *next;      /* registry list */
  int refs, registered;
  int int8, int8_text;    /* INT8 mode's set; text tower INT8 too */
  unsigned long long dev, ino, size;
  long long mtime_s, mtime_ns;
  int vit_layers, text_layers;
  vit_weights_bf16 vit;
  bert_weights_bf16 bert;
  size_t bytes;           /* packed weights + biases */
};

struct unimed_model {
  char dir[1024];
  unimed_config cfg;
  char hash[17];
  st_file st;
  unimed_vocab *vocab;
  float logit_scale;
  vit_weights vit;
  bert_weights bert;
  float **owned;          /* converted copies to free */
  int n_owned, cap_owned;
  size_t owned_bytes;     /* converted copies */
  unimed_precision precision, requested;
  int bf16;               /* precision BF16 or INT8: the *_bf16 weights are used */
  int int8;               /* precision == INT8: and their *8 members */
  int int8_text;          /* INT8 mode with the text tower INT8 too */
  um_bf16_set *w16;       /* BF16 mode: the packed weights (shared) */
  const uint16_t *word_emb16; /* BF16 file in BF16 mode: [V, D] in the mapping */
  char cache_key[17];     /* hash, mixed with the precision when not FP32 */
  float *ws;              /* workspace, grown once per batch shape */
  size_t ws_floats;
};

/* The model's key in the label-set embedding cache: its hash, mixed with the
 * precision when that is not FP32. */
const char *um_model_cache_key(const unimed_model *m);

/* Ensures the workspace holds n floats (64-byte aligned). */
int um_workspace(unimed_model *m, size_t n, char *err, size_t errlen);

/* ---- kernels (ops.c) ---- */

/* C[M,N] = A[M,K] · W[N,K]^T + bias[N]  (PyTorch nn.Linear layout) */
void um_linear(const float *A, int M, int K, const float *W, const float *bias, int N,
               float *C);
/* C[M,N] = A[M,K] · B[K,N] */
void um_matmul(const float *A, int M, int K, const float *B, int N, float *C);
/* y[r,:] = LayerNorm(x[r,:]) * w + b, rows × D; y may alias x. */
void um_layernorm(const float *x, float *y, int rows, int D, const float *w, const float *b,
                  float eps);
/* x[r,:] = LayerNorm(x[r,:] + delta[r,:]) (post-LN residual, BERT). */
void um_add_layernorm(float *x, const float *delta, int rows, int D, const float *w,
                      const float *b, float eps);
/* x += delta, n floats. */
void um_add(float *x, const float *delta, size_t n);
void um_quick_gelu(float *x, size_t n);  /* x * sigmoid(1.702 x) */
void um_gelu(float *x, size_t n);        /* exact erf GELU */
/* Row-wise softmax in place, rows × cols. */
void um_softmax_rows(float *x, int rows, int cols);
/* Multi-head self-attention over one sequence of L tokens.
 * q, k, v: row r at q + r*ld (heads side by side, each hd wide).
 * out: [L, H*hd] with row stride ldo. scores: L*L floats of scratch. */
void um_attention(const float *q, const float *k, const float *v, int ld, int L, int H,
                  int hd, float *out, int ldo, float *scores);

/* ---- threads (threads.c): the one pool of model/ ---- */

#define UM_MAX_THREADS 64
/* Threads for our parallel loops: OpenBLAS's thread count (1..64). */
int um_threads(void);
/* Bracket a forward pass: OpenBLAS is set to one thread meanwhile and large
 * GEMMs are split over our threads instead (the previous count is restored
 * by the last um_blas_end; concurrent forwards share the bracket). */
void um_blas_begin(void);
void um_blas_end(void);
/* 1 between um_blas_begin and um_blas_end (of any thread). */
int um_blas_in_forward(void);
/* Runs fn(ctx, task, thread) for task in [0, n_tasks) on at most max_threads
 * threads (thread in [0, max_threads); tasks are handed out in order);
 * returns when all are done. Never call OpenBLAS from fn. While one caller
 * runs a region on the pool, a concurrent caller runs its tasks inline
 * (thread 0). */
typedef void (*um_task_fn)(void *ctx, int task, int thread);
void um_parallel_for(int n_tasks, int max_threads, um_task_fn fn, void *ctx);

/* The calling thread's GEMM scratch buffer of at least n bytes (64-byte
 * aligned, kept until the thread exits; gemm_bf16.c). One buffer per thread,
 * shared by the BF16 and INT8 GEMMs: valid until that thread's next call. */
void *um_gemm_scratch(size_t n);

/* ---- kernels (ops.c), continued ---- */

/* C[M,N] = act(A[M,K] · W[N,K]^T + bias[N]) */
void um_linear_act(const float *A, int M, int K, const float *W, const float *bias, int N,
                   float *C, enum unimed_activation act);
/* C[M,N] += A[M,K] · W[N,K]^T */
void um_linear_acc(const float *A, int M, int K, const float *W, int N, float *C);
/* x[r,:] += bias (when not NULL), then y[r,:] = LayerNorm(x[r,:]); y may alias x. */
void um_layernorm_bias(float *x, const float *bias, float *y, int rows, int D, const float *w,
                       const float *b, float eps);
/* Multi-head attention over several sequences at once, in parallel over
 * (sequence, head). Sequence i: lq query rows at q (row stride ldq), lk
 * key/value rows at k, v (stride ldkv), out rows at out (stride ldo); heads
 * side by side, hd wide, softmax(q k^T / sqrt(hd)) v. scratch: max_threads
 * slices of scratch_per_thread >= um_mha_scratch_floats(max lk, hd) floats. */
typedef struct {
  const float *q, *k, *v;
  float *out;
  int lq, lk;
} um_attn_seq;
size_t um_mha_scratch_floats(int max_lk, int hd);
/* bf16: Q K^T and P V with BF16 products (attn_bf16.c) where
 * um_bf16_available() and hd is a multiple of 32; FP32 otherwise. */
void um_mha(const um_attn_seq *seqs, int n, int ldq, int ldkv, int ldo, int H, int hd,
            float *scratch, size_t scratch_per_thread, int max_threads, int bf16);
/* attn_bf16.c: one head, as ops.c's FP32 kernels (scratch of
 * um_attn_bf16_scratch_floats(lk, hd) floats); AVX512-BF16 only. */
size_t um_attn_bf16_scratch_floats(int max_lk, int hd);
void um_attn_head_bf16(const float *q, int ldq, const float *k, const float *v, int ldkv, int lq,
                       int lk, int hd, float scale, float *out, int ldo, float *scratch);

/* ---- packed linear layers: BF16 or INT8, whichever the layer has ---- */

enum { UM_EPI_BIAS, UM_EPI_ACC, UM_EPI_QUICK_GELU, UM_EPI_GELU };

/* C (=, +=) epi(A W^T + bias) with W = w8 when not NULL, else w16. */
static inline void um_linear_packed(const um_bf16_weight *w16, const um_i8_weight *w8,
                                    const float *A, int M, int K, const float *bias, int N,
                                    float *C, int epi) {
  if (w8) {
    if (epi == UM_EPI_ACC) um_linear_i8_acc(A, M, K, w8, bias, N, C);
    else if (epi == UM_EPI_QUICK_GELU) um_linear_i8_quick_gelu(A, M, K, w8, bias, N, C);
    else if (epi == UM_EPI_GELU) um_linear_i8_gelu(A, M, K, w8, bias, N, C);
    else um_linear_i8(A, M, K, w8, bias, N, C);
  } else {
    if (epi == UM_EPI_ACC) um_linear_bf16_acc(A, M, K, w16, bias, N, C);
    else if (epi == UM_EPI_QUICK_GELU) um_linear_bf16_quick_gelu(A, M, K, w16, bias, N, C);
    else if (epi == UM_EPI_GELU) um_linear_bf16_gelu(A, M, K, w16, bias, N, C);
    else um_linear_bf16(A, M, K, w16, bias, N, C);
  }
}

/* ---- towers ---- */
size_t um_vit_workspace_floats(const unimed_config *c, int batch);
/* pixels: n × 3×S×S → out: n × E (not normalised). */
void um_vit_forward(unimed_model *m, const float *pixels, int n, float *out);

/* fused_qkv: BF16 mode (one [N, 3D] q|k|v buffer). */
size_t um_bert_workspace_floats(const unimed_config *c, int n_seqs, int total_tokens,
                                int max_len, int fused_qkv);
/* Packed sequences → out: n × E (not normalised). */
void um_bert_forward(unimed_model *m, const int *const *ids, const int *lens, int n,
                     float *out);

#endif
