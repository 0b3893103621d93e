/* UniMed model core — the one public header of model/.
 *
 * UniMed-CLIP: an OpenCLIP ViT image tower and a HuggingFace BERT text tower
 * with an MLP projection, run on the CPU with OpenBLAS. Knows nothing of
 * DICOM or Orthanc.
 *
 * Errors: functions that can fail return 0 on success and -1 on failure,
 * writing one line into `err` (errlen bytes) that names the file, tensor or
 * field at fault. A model object is not thread-safe (it owns a workspace);
 * use one per thread — the weights are memory-mapped and shared. */
#ifndef UNIMED_MODEL_H
#define UNIMED_MODEL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum unimed_activation { UNIMED_ACT_QUICK_GELU, UNIMED_ACT_GELU };
enum unimed_projection { UNIMED_PROJ_MLP, UNIMED_PROJ_LINEAR, UNIMED_PROJ_NONE };

typedef struct {
  int image_size, patch_size, width, layers, heads;
  float mlp_ratio;
  enum unimed_activation activation;
  float layer_norm_eps;
} unimed_vision_config;

typedef struct {
  int vocab_size, hidden_size, layers, heads, intermediate_size;
  int max_position_embeddings, type_vocab_size, pad_token_id, context_length;
  float layer_norm_eps;
  enum unimed_projection projection;
} unimed_text_config;

typedef struct {
  char name[128];
  char version[64];
  int embed_dim;
  unimed_vision_config vision;
  unimed_text_config text;
  float mean[3], std[3]; /* preprocessing, per RGB channel */
  int image_size;        /* preprocessing output side (== vision.image_size) */
} unimed_config;

typedef struct unimed_model unimed_model;

/* Loads a model directory: config.json, model.safetensors, vocab.txt. */
unimed_model *unimed_model_load(const char *dir, char *err, size_t errlen);
void unimed_model_free(unimed_model *m);

const unimed_config *unimed_model_config(const unimed_model *m);
/* 16 hex digits identifying the weights and config (for caches, reports). */
const char *unimed_model_hash(const unimed_model *m);
/* The learned temperature as stored (log scale); scores use exp() of it. */
float unimed_model_logit_scale(const unimed_model *m);

/* Text cleaning + WordPiece, [CLS] ... [SEP], at most max_ids ids.
 * Returns the number of ids, or -1 with err. */
int unimed_tokenize(const unimed_model *m, const char *text, int *ids, int max_ids,
                    char *err, size_t errlen);

/* Image tower. pixels: n preprocessed images, each float32 3×S×S (channel
 * major, normalised), S = config.image_size. out: n × embed_dim,
 * L2-normalised. */
int unimed_encode_images(unimed_model *m, const float *pixels, int n, float *out,
                         char *err, size_t errlen);

/* Text tower on n texts (cleaned and tokenised here; an empty text is an
 * error). Only the real tokens are computed: padding costs nothing.
 * out: n × embed_dim, L2-normalised. */
int unimed_encode_texts(unimed_model *m, const char *const *texts, int n, float *out,
                        char *err, size_t errlen);

/* Same on token ids: ids[i] has lens[i] ids ([CLS] first, no padding). */
int unimed_encode_token_ids(unimed_model *m, const int *const *ids, const int *lens, int n,
                            float *out, char *err, size_t errlen);

/* v /= ||v||; a zero vector stays zero. */
void unimed_l2_normalize(float *v, int dim);

/* Prompt ensemble: out = normalize(mean of the n_prompts normalised rows). */
void unimed_prompt_ensemble(const float *prompt_embeddings, int n_prompts, int dim,
                            float *out);

/* probs[i][c] = softmax_c(exp(logit_scale) * image[i] . classes[c]) for
 * normalised image and class embeddings. */
void unimed_zero_shot(const unimed_model *m, const float *image_embeddings, int n_images,
                      const float *class_embeddings, int n_classes, float *probs);

/* BLAS threads used by the GEMMs (process-wide). */
void unimed_set_threads(int n);
/* Name of the OpenBLAS kernel in use (e.g. "Haswell", "SkylakeX"). */
const char *unimed_blas_corename(void);

#ifdef __cplusplus
}
#endif

#endif
