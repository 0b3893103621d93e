/* UniMed model core — the one public header of model/.
 *
 * UniMed-CLIP: an OpenCLIP ViT image tower and a HuggingFace BERT text tower
 * with an MLP projection, run on the CPU with OpenBLAS. Reads no DICOM and
 * talks to no Orthanc: a label set names DICOM attributes and codes and
 * Orthanc labels, which the library checks and carries as data of the
 * label-set file (docs/ARCHITECTURE.md, "Label sets").
 *
 * Errors: functions that can fail return 0 on success and -1 on failure,
 * writing one line into `err` (errlen bytes) that names the file, tensor or
 * field at fault. A model object is not thread-safe (it owns a workspace);
 * use one per thread — the weights are memory-mapped and shared (in BF16,
 * the packed weights of one file are shared by its model objects). */
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

/* Reads and validates a config.json (docs/MODEL.md); errors name the file
 * and the field. */
int unimed_config_load(const char *path, unimed_config *cfg, char *err, size_t errlen);

/* The library's way of writing an error: printf-style into (err, errlen),
 * nothing when err is NULL or errlen 0. For code built on the library that
 * reports errors the same way. */
void unimed_set_err(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Loads a model directory: config.json, model.safetensors, vocab.txt, for
 * FP32 inference (unimed_model_load_opts with the default options). */
unimed_model *unimed_model_load(const char *dir, char *err, size_t errlen);
void unimed_model_free(unimed_model *m);

/* Arithmetic of the linear layers.
 *  FP32: weights used as stored (mapped in place when the file is F32).
 *  BF16: every linear weight of both towers is rounded to BF16 and packed
 *        once at load (AVX512-BF16 vdpbf16ps, FP32 accumulation; image
 *        activations rounded to BF16 on the way into each GEMM, text ones
 *        split into two BF16 parts). LayerNorm, softmax,
 *        attention, biases and embeddings stay FP32. The FP32 weights are not
 *        kept: about half the memory, and faster where the CPU has
 *        avx512_bf16. On other CPUs a BF16 request loads the model as FP32
 *        (same API and results as FP32); unimed_model_precision tells which
 *        one runs.
 *  INT8: the encoder layers' linear weights of both towers quantized once
 *        at load to int8 (symmetric, per output channel), their inputs
 *        quantized per call to uint8 (per row, asymmetric), integer products
 *        summed exactly (AVX-512 VNNI vpdpbusd, or AVX-VNNI); the patch
 *        embedding and the projection heads run BF16, the rest as in BF16
 *        (docs/MODEL.md lists the layers and the accuracy). Without VNNI an
 *        INT8 request runs BF16 where that is native, else FP32. */
typedef enum {
  UNIMED_PRECISION_FP32 = 0,
  UNIMED_PRECISION_BF16 = 1,
  UNIMED_PRECISION_INT8 = 2
} unimed_precision;

typedef struct {
  unimed_precision precision; /* requested; default (zeroed struct) FP32 */
} unimed_load_options;

/* opts NULL = defaults (FP32). */
unimed_model *unimed_model_load_opts(const char *dir, const unimed_load_options *opts,
                                     char *err, size_t errlen);
/* The precision that actually runs, and the one that was asked for. */
unimed_precision unimed_model_precision(const unimed_model *m);
unimed_precision unimed_model_precision_requested(const unimed_model *m);
/* Bytes of weights held in memory besides the mapped file: converted
 * copies, and the packed BF16 weights (shared with other model objects of
 * the same file, counted in each). */
size_t unimed_model_owned_bytes(const unimed_model *m);
/* "fp32" / "bf16" / "int8". */
const char *unimed_precision_name(unimed_precision p);
/* Parses "fp32" / "bf16" / "int8" (any case); 0, or -1 for anything else. */
int unimed_precision_parse(const char *s, unimed_precision *out);
/* 1 when BF16 runs natively on this CPU (avx512_bf16, and UNIMED_SIMD is not
 * 0 in the environment). */
int unimed_bf16_supported(void);
/* 1 when INT8 runs on this CPU (avx512_vnni or avx_vnni, and UNIMED_SIMD is
 * not 0 in the environment). */
int unimed_int8_supported(void);

const unimed_config *unimed_model_config(const unimed_model *m);
/* 16 hex digits identifying the weights and config (for caches, reports).
 * The same in both precisions; the label-set embedding cache adds the
 * precision to its key. */
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

/* ---- label sets (labelset_*.c) ----
 * A label set is a JSON file: which findings to ask about, for which images,
 * with which prompts and codes (format: docs/LABEL_SETS.md). */

enum unimed_scoring { UNIMED_SCORING_SOFTMAX, UNIMED_SCORING_BINARY };

typedef struct {
  char *value, *scheme, *meaning; /* e.g. "60046008", "SCT", "Pleural effusion" */
} unimed_code;

typedef struct {
  char *name;          /* display name, also what {} in a template becomes */
  unimed_code code;
  char **prompts;      /* the label's prompts (own, or templates x name/synonyms) */
  int n_prompts;
  char **negatives;    /* binary scoring: prompts for the label's absence */
  int n_negatives;
  char **synonyms;     /* other names (captions for training, extra prompts) */
  int n_synonyms;
  /* Orthanc label (Orthanc >= 1.12): the name without the plugin's prefix,
   * only letters, digits, '-' and '_' (NULL = this finding never becomes a
   * label), and the probability from which a study gets it. */
  char *orthanc_label;
  double orthanc_threshold;
} unimed_label;

typedef struct {
  char *path;
  char *name, *version, *description;
  char **modalities;   /* DICOM Modality values; empty = any */
  int n_modalities;
  char **body_parts;   /* BodyPartExamined values; empty = any */
  int n_body_parts;
  char **sop_classes;  /* SOP Class UIDs; empty = any */
  int n_sop_classes;
  char **templates;
  int n_templates;
  enum unimed_scoring scoring;
  unimed_label *labels;
  int n_labels;
  int orthanc_max;     /* at most this many Orthanc labels per study from this set */
  char hash[17];       /* 16 hex digits over the file's content */
} unimed_label_set;

/* Loads and validates a label set; errors name the file and the field. */
unimed_label_set *unimed_label_set_load(const char *path, char *err, size_t errlen);
void unimed_label_set_free(unimed_label_set *ls);
/* 1 when the set applies to an image with these attributes, as the caller
 * read them from DICOM (NULL/"" = unknown: a filter on an unknown attribute
 * does not exclude). Code strings compare without case and padding spaces,
 * UIDs exactly. */
int unimed_label_set_applies(const unimed_label_set *ls, const char *modality,
                             const char *body_part, const char *sop_class_uid);

/* A label set's template with its "{}" replaced by name (a template without
 * "{}" is copied as it is), as the label set's prompts are made; free() it.
 * NULL when out of memory. */
char *unimed_label_template_apply(const char *tmpl, const char *name);

/* Class embeddings of a label set for one model: per label the prompt
 * ensemble (and, for binary scoring, the ensemble of its negatives). */
typedef struct {
  int n_labels, dim;
  float *positive;     /* n_labels x dim */
  float *negative;     /* n_labels x dim, binary scoring only (else NULL) */
} unimed_label_embeddings;

/* Computes them, or reads them from cache_dir (NULL = no cache) where they
 * are stored keyed by the model hash and the label-set hash. */
int unimed_label_set_embed(unimed_model *m, const unimed_label_set *ls, const char *cache_dir,
                           unimed_label_embeddings *out, char *err, size_t errlen);
void unimed_label_embeddings_free(unimed_label_embeddings *e);
/* probs[n_labels] for one normalised image embedding: softmax over the
 * labels, or per label softmax over {positive, negative}. */
void unimed_label_set_score(const unimed_model *m, const unimed_label_set *ls,
                            const unimed_label_embeddings *e, const float *image_embedding,
                            float *probs);

/* ---- model card (model_card.c) ----
 * model-card.json in a model directory: what the model is for and the label
 * sets it was validated with (format: docs/MODEL.md, "Model card"). A label
 * set is listed when the card has an entry with its name and version (both
 * equal; the file's hash is not compared: docs/MODEL.md says why). */

typedef struct {
  char *name, *version; /* the label set's "name" and "version" */
  char *question;       /* "" when the card gives none */
} unimed_card_label_set;

typedef struct {
  char *path;           /* the card file */
  char *name, *version, *model_hash, *intended_use; /* "" when absent */
  unimed_card_label_set *label_sets;
  int n_label_sets;     /* may be 0: nothing validated */
} unimed_model_card;

/* Reads <model_dir>/model-card.json. 0 with *out = NULL when the directory
 * has no card; 0 with *out when it has a valid one; -1 when the card is
 * there but unreadable or malformed (err names the file and the field). */
int unimed_model_card_load(const char *model_dir, unimed_model_card **out, char *err,
                           size_t errlen);
void unimed_model_card_free(unimed_model_card *c);
/* The card's entry for (name, version), or NULL. */
const unimed_card_label_set *unimed_model_card_find(const unimed_model_card *c, const char *name,
                                                    const char *version);
/* 1 when a card exists and does not vouch for label set (name, version) on
 * the model with this hash (not listed, listed in other versions only, or
 * the card names other weights), with the one-line warning in why; 0 when
 * it is listed or there is no card (c NULL). */
int unimed_model_card_check(const unimed_model_card *c, const char *model_hash, const char *name,
                            const char *version, char *why, size_t whylen);

/* BLAS threads used by the GEMMs (process-wide). */
void unimed_set_threads(int n);
/* Name of the OpenBLAS kernel in use (e.g. "Haswell", "SkylakeX"). */
const char *unimed_blas_corename(void);

#ifdef __cplusplus
}
#endif

#endif
