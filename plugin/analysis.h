/* The analysis engine: one study in, findings + a DICOM SR + per-series
 * image embeddings out. Shared by the Orthanc plugin and `unimed analyze`;
 * it joins the model core (model/) and the DICOM library (dicom/).
 *
 * An engine owns one model instance and its workspace: use one engine per
 * thread. Label-set text embeddings are computed once per model and cached
 * on disk (cache_dir), so a second engine starts quickly. */
#ifndef UNIMED_ANALYSIS_H
#define UNIMED_ANALYSIS_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "unimed_dicom.h"
#include "unimed_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct unimed_engine unimed_engine;

typedef struct {
  const char *model_dir;
  const char *const *label_sets; /* label-set files; NULL/0 = every *.json in label_set_dir */
  int n_label_sets;
  const char *label_set_dir;     /* the shipped defaults (used when n_label_sets == 0) */
  const char *cache_dir;         /* label-set embedding cache; NULL = no cache */
  int max_slices;                /* frames per series (default 8) */
  int aggregate_max;             /* 0: mean of slice embeddings (default);
                                    1: per-label maximum over slices */
  int threads;                   /* BLAS threads (0 = leave as is) */
  unimed_precision precision;    /* linear layers: FP32 (default) or BF16 (runs as
                                    FP32 on CPUs without avx512_bf16) */
  uint64_t max_frame_bytes;      /* decode budget: a frame whose decoded size (as 32-bit
                                    samples) is larger is refused from its header, before
                                    anything is allocated (0: the DICOM library's default) */
  const char *manufacturer;      /* for the SR's equipment (default "UniMed for Orthanc") */
  const char *software_version;
} unimed_engine_options;

/* Loads the model, its model card (model-card.json, when there is one) and
 * the label sets and computes (or reads from the cache) the label-set
 * embeddings. NULL with a message naming the file at fault (a malformed
 * model card included). */
unimed_engine *unimed_engine_create(const unimed_engine_options *opts, char *err, size_t errlen);
void unimed_engine_free(unimed_engine *e);

/* {"model": {"name","version","hash","embed_dim","precision"}, "model_card": null or {"file",
 *  "name","version","model_hash","matches_model","intended_use","label_sets":[{"name","version",
 *  "question"}]}, "label_sets": [{"name","version","hash","scoring","modalities","labels":[...],
 *  with a model card also "validated" and, when false, "warning"}]} — for status routes. */
cJSON *unimed_engine_describe(const unimed_engine *e);
/* The model card of the engine's model directory (NULL: none). */
const unimed_model_card *unimed_engine_model_card(const unimed_engine *e);
int unimed_engine_n_label_sets(const unimed_engine *e);
const unimed_label_set *unimed_engine_label_set(const unimed_engine *e, int set);
/* The warning that findings of label set `set` carry because the model card
 * does not list it (docs/MODEL.md, "Model card"); NULL when the card lists it
 * or the model has no card. */
const char *unimed_engine_label_set_warning(const unimed_engine *e, int set);
int unimed_engine_embed_dim(const unimed_engine *e);
/* Normalised text embedding (for search). 0 or -1 with err. */
int unimed_engine_embed_text(unimed_engine *e, const char *text, float *out, char *err,
                             size_t errlen);
/* The same for n texts in one call (out: n × dim). */
int unimed_engine_embed_texts(unimed_engine *e, const char *const *texts, int n, float *out,
                              char *err, size_t errlen);

/* One DICOM instance held in memory (e.g. fetched from Orthanc). */
typedef struct {
  const char *name;  /* for messages, e.g. the Orthanc instance id */
  const void *data;
  size_t len;
} unimed_blob;

typedef struct {
  char series_uid[65];
  char modality[17];
  int n_frames;
  float *embedding;  /* embed_dim floats, normalised */
} unimed_series_result;

typedef struct {
  cJSON *findings;        /* same shape as `unimed analyze` prints; owned */
  uint8_t *sr;            /* Part-10 SR bytes (malloc'd), NULL when none was written */
  size_t sr_len;
  char sr_sop_instance_uid[65];
  unimed_series_result *series;
  int n_series;
  int complete;           /* 1 when every image series was analysed */
  char error[512];        /* why nothing could be analysed (when the call fails) */
} unimed_study_result;

/* Analyses one study given as files/folders or as in-memory instances.
 * Series of other studies are an error. Non-image objects (SR, ...) are
 * ignored. write_sr: also build the SR (one Measurement Group per label set
 * applied to a series); xml_path (may be NULL): also write it as DCMTK SR
 * XML. Returns 0 when at least one series was analysed and the report was
 * built, -1 otherwise (reason in out->error; out->findings may still hold
 * the per-series errors). */
int unimed_engine_analyze_files(unimed_engine *e, const char *const *paths, int n_paths,
                                int write_sr, const char *xml_path, unimed_study_result *out);
int unimed_engine_analyze_blobs(unimed_engine *e, const unimed_blob *blobs, int n_blobs,
                                int write_sr, unimed_study_result *out);
void unimed_study_result_free(unimed_study_result *r);

/* The report a new one replaces (docs/REPORTS.md, "Versions"): the new SR
 * names it in its Predecessor Documents Sequence and takes instance_number. */
typedef struct {
  const char *predecessor_series_uid;       /* NULL: no predecessor */
  const char *predecessor_sop_instance_uid;
  int instance_number;                      /* 0: 1 */
} unimed_sr_version;

/* unimed_engine_analyze_blobs, with the SR as a new version of another one
 * (version may be NULL). */
int unimed_engine_analyze_blobs_version(unimed_engine *e, const unimed_blob *blobs, int n_blobs,
                                        int write_sr, const unimed_sr_version *version,
                                        unimed_study_result *out);


/* One series through a bare model (no label sets): its frames picked
 * (udcm_series_pick_frames), preprocessed, encoded as one batch; the series
 * embedding is the mean of the normalised frame embeddings, renormalised.
 * A whole-slide series gives up to max(16, max_slices) tissue tiles at
 * 0.5 um/pixel instead (or, when no tissue is found, the slide overview);
 * the slide embedding is the mean of the tile embeddings. */
typedef struct {
  udcm_frame_ref *frames;   /* the frames used, in slice order (whole-slide: one per tile) */
  int n_frames;
  udcm_wsi_tile *tiles;     /* whole-slide series: where each tile lies; else NULL */
  float *frame_embeddings;  /* n_frames x embed_dim, normalised */
  float *embedding;         /* embed_dim, normalised */
} unimed_series_embedding;

int unimed_series_embed(unimed_model *m, const udcm_series *s, int max_slices,
                        unimed_series_embedding *out, char *err, size_t errlen);
void unimed_series_embedding_free(unimed_series_embedding *w);

#ifdef __cplusplus
}
#endif

#endif
